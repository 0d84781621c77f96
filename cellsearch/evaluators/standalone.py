"""Stand-alone training: the NASNet way to judge a cell (train a proxy child, read its validation accuracy)."""
from __future__ import annotations

import time
from typing import Any, Mapping

from cellsearch.data import DataConfig, as_data_config, describe_dataset
from cellsearch.evaluators.base import EvalResult, Evaluator, Fidelity, failed_result
from cellsearch.evaluators.child import ChildConfig, as_child_config, check_config, describe_error, evaluate_child
from cellsearch.evaluators.latency import child_latency_ms, device_for, device_name
from cellsearch.evaluators.segments import train_segment
from cellsearch.space.genotype import Genotype
from cellsearch.space.networks import build_network
from cellsearch.space.profile import estimate_training_memory
from cellsearch.validation import ConfigError

__all__ = ["TrainEvaluator", "run_name"]


def run_name(trial_id: int) -> str:
    """The name of a trial's logs (``trial_00042``)."""
    return f"trial_{trial_id:05d}"


class TrainEvaluator(Evaluator):
    """Trains each child with Lightning as ``child`` says, on ``data``; metrics ``val_accuracy``,
    ``train_loss``, ``params``, ``mult_adds``, and with ``latency`` the measured ``latency_ms`` (batch 1,
    on the device the child trains on; see :mod:`cellsearch.evaluators.latency`).

    Under a :class:`~cellsearch.evaluators.base.Fidelity` it trains a child in segments that add up to the
    child trained in one go (:mod:`cellsearch.evaluators.segments`); ``max_epochs`` is ``child.epochs``."""

    name = "train"

    def __init__(self, child: "ChildConfig | Mapping[str, Any]", data: "DataConfig | Mapping[str, Any]",
                 latency: bool = False) -> None:
        self.child = as_child_config(child)
        self.data = as_data_config(data)
        if latency not in (True, False):
            raise ConfigError(f"evaluator.latency must be true or false, got {latency!r}")
        self.latency = latency

    @property
    def metrics(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("val_accuracy", "train_loss", "params", "mult_adds") + (("latency_ms",) if self.latency else ())

    def device_name(self) -> str:
        """The device children train (and latency is measured) on, in words."""
        return device_name(device_for(self.child.accelerator))

    @property
    def accelerator(self) -> str:  # type: ignore[override]
        return self.child.accelerator

    @property
    def max_epochs(self) -> int:  # type: ignore[override]
        return self.child.epochs

    def check(self) -> None:
        check_config(self.child, self.data)

    def check_single_device(self) -> None:
        if self.child.devices not in (1, "1", [0]) or self.child.strategy not in ("auto", "single_device"):
            raise ConfigError("a worker pool trains each child on one device; for one child on several devices "
                              "use the local executor with child.devices > 1 and a DDP strategy")

    def evaluate(self, genotype: Genotype, trial_id: int = 0, seed: int = 0,
                 fidelity: Fidelity | None = None) -> EvalResult:
        if fidelity is None:
            result = evaluate_child(genotype, self.child, self.data, seed, run_name=run_name(trial_id))
        else:
            result = train_segment(genotype, self.child, self.data, fidelity, seed, run_name=run_name(trial_id))
        if self.latency and result.ok:
            info = describe_dataset(self.data)
            start = time.perf_counter()
            try:
                result.metrics["latency_ms"] = child_latency_ms(
                    genotype, self.child.cells_per_stage, self.child.channels, info.num_classes, info.input_size,
                    device_for(self.child.accelerator))
            except Exception as err:  # the child trained but cannot be timed: a failed trial, not a crash
                return failed_result(f"latency: {describe_error(err)}", result.seconds, **result.metrics)
            result.seconds += time.perf_counter() - start
        return result

    def memory_estimate(self, genotype: Genotype) -> float | None:
        """Estimated from the child network: weights, gradients, momentum and the activations saved for
        backward at one micro-batch (``estimate_training_memory``); checked against ``peak_memory_mb``."""
        info = describe_dataset(self.data)
        child = self.child
        network = build_network(genotype, cells_per_stage=child.cells_per_stage, channels=child.channels,
                                num_classes=info.num_classes, in_chans=info.in_chans,
                                auxiliary=child.auxiliary_weight > 0)
        return float(estimate_training_memory(network, info.input_size, child.batch_size // child.micro_batches))

    def describe(self) -> str:
        return f"stand-alone training on {self.data.name}"
