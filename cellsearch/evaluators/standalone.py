"""Stand-alone training: the NASNet way to judge a cell (train a proxy child, read its validation accuracy)."""
from __future__ import annotations

from typing import Any, Mapping

from cellsearch.data import ConfigError, DataConfig, as_data_config, describe_dataset
from cellsearch.evaluators.base import EvalResult, Evaluator
from cellsearch.evaluators.child import ChildConfig, as_child_config, check_config, evaluate_child
from cellsearch.space.genotype import Genotype
from cellsearch.space.network import CellNetCifar
from cellsearch.space.profile import estimate_training_memory

__all__ = ["TrainEvaluator", "run_name"]


def run_name(trial_id: int) -> str:
    """The name of a trial's logs (``trial_00042``)."""
    return f"trial_{trial_id:05d}"


class TrainEvaluator(Evaluator):
    """Trains each child with Lightning as ``child`` says, on ``data``; metrics ``val_accuracy``,
    ``train_loss``, ``params`` and ``mult_adds``."""

    name = "train"
    metrics = ("val_accuracy", "train_loss", "params", "mult_adds")

    def __init__(self, child: "ChildConfig | Mapping[str, Any]", data: "DataConfig | Mapping[str, Any]") -> None:
        self.child = as_child_config(child)
        self.data = as_data_config(data)

    @property
    def accelerator(self) -> str:  # type: ignore[override]
        return self.child.accelerator

    def check(self) -> None:
        check_config(self.child, self.data)

    def check_single_device(self) -> None:
        if self.child.devices not in (1, "1", [0]) or self.child.strategy not in ("auto", "single_device"):
            raise ConfigError("a worker pool trains each child on one device; for one child on several devices "
                              "use the local executor with child.devices > 1 and a DDP strategy")

    def evaluate(self, genotype: Genotype, trial_id: int = 0, seed: int = 0) -> EvalResult:
        return evaluate_child(genotype, self.child, self.data, seed, run_name=run_name(trial_id))

    def memory_estimate(self, genotype: Genotype) -> float | None:
        """Estimated from the child network: weights, gradients, momentum and the activations saved for
        backward at one micro-batch (``estimate_training_memory``); checked against ``peak_memory_mb``."""
        info = describe_dataset(self.data)
        child = self.child
        network = CellNetCifar(genotype, cells_per_stage=child.cells_per_stage, channels=child.channels,
                               num_classes=info.num_classes, in_chans=info.in_chans,
                               auxiliary=child.auxiliary_weight > 0)
        return float(estimate_training_memory(network, info.input_size, child.batch_size // child.micro_batches))

    def describe(self) -> str:
        return f"stand-alone training on {self.data.name}"
