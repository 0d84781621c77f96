"""One-shot evaluation: score a cell by the validation accuracy of its path in a shared-weight supernet.

The evaluator trains one :class:`~cellsearch.space.supernet.SuperNet` in phases and keeps it between
evaluations, so a cell costs a few forward passes instead of a training run. Every strategy works
against it unchanged:

- PPO / REINFORCE on it is ENAS: ``path_sampler: proposals`` trains the shared weights on the cells
  the controller proposed since the last phase (one per minibatch), and a phase runs every
  ``train_every`` evaluations, so controller steps and shared-weight training alternate.
- random on it is random search with weight sharing, evolution on it after uniform path training
  (``path_sampler: uniform``, ``train_every: null``) is single-path one-shot (SPOS).

Before a path is scored its batch-norm statistics are recomputed on ``bn_batches`` training batches
(as SPOS does): the running statistics of a shared BN layer mix every path trained through it and
misjudge any single one. With ``finetune_steps`` (default 20) the path is first fine-tuned alone for that
many SGD steps on fixed training batches, on a copy of its weights (:mod:`cellsearch.evaluators.path_tuning`),
and with ``estimate: likelihood`` (the default) its score is exp(-validation cross-entropy) rather than its
accuracy. On the testbed (100 cells x 3 seeds, 9 epochs) the defaults (a 1-epoch warm-up, these two) rank
cells at Kendall tau 0.59 against stand-alone accuracy (the mean of 6 supernet seeds, 0.53-0.63) for the CPU
of about 8 stand-alone children, where the parameter count reaches 0.20 and the supernet scored as trained
0.10-0.15 (benchmarks/bench_oneshot.py estimators). Keep the warm-up short when paths are fine-tuned: with
a warm-up of a child's 9 epochs the same scores ranked at 0.43. ``finetune_schedule: cosine`` lets the
fine-tune's rate fall to 0 over its steps: steadier scores, but after the short warm-up it ranks no better
than the constant rate (0.55 against 0.59).

The supernet, its optimiser and the sampler state are saved atomically to ``run_dir/supernet.pt`` at the
end of every phase; a run resumes from there, and refuses a file written with other supernet settings.
:meth:`OneShotEvaluator.report_phases` hands each phase's training loss and accuracy to the live view
(``<run dir>/tensorboard/supernet``).

The supernet lives in this process: one-shot searches use ``executor=local``.
"""
from __future__ import annotations

import gc
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.nn.functional as F

from cellsearch.data import DataConfig, ImageDataModule, as_data_config, dataclass_from_config, describe_dataset
from cellsearch.evaluators.base import EvalResult, Evaluator, failed_result
from cellsearch.evaluators.child import ChildConfig, as_child_config, check_config, describe_error
from cellsearch.evaluators.path_tuning import FINETUNE_SCHEDULES, finetuned_path
from cellsearch.progress import track
from cellsearch.search.estimates import SUPERNET_STEPS  # marks the reward as an estimate
from cellsearch.space.genotype import Genotype, GenotypeError, SearchSpace
from cellsearch.space.supernet import SuperNet
from cellsearch.space.support import require_nasnet
from cellsearch.strategies.base import as_search_space
from cellsearch.validation import ConfigError

__all__ = ["OneShotConfig", "OneShotEvaluator", "SupernetTrainer", "UnscoredPath", "endless_batches",
           "score_path"]

SUPERNET_FILE = "supernet.pt"
PATH_SAMPLERS = ("uniform", "proposals")
ESTIMATES = ("accuracy", "likelihood")


@dataclass
class SupernetTraining:
    """SGD with a cosine schedule for a supernet's shared weights (one-shot evaluator and DARTS), and how
    its cells are read at the end."""

    batch_size: int = 64
    lr: float = 0.05
    lr_min: float = 0.0005
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    eval_batch_size: int = 256
    final_candidates: int = 8        # best cells by supernet estimate trained stand-alone at the end
    final_top_k: int = 3             # top-k precision of the supernet's ranking over them


@dataclass
class OneShotConfig(SupernetTraining):
    """How the supernet is built, trained and read. ``None`` sizes mean "as the stand-alone child"."""

    cells_per_stage: int | None = None
    channels: int | None = None
    warmup_epochs: float = 1.0       # uniform-path training before the first score
    phase_epochs: float = 1.0        # shared-weight training per phase (ENAS: one pass over the data)
    train_every: int | None = None   # evaluations between phases (None: train only the warm-up)
    max_phases: int = 0              # phases after the warm-up (the cosine schedule spans all of them)
    path_sampler: str = "uniform"    # uniform | proposals (the cells the strategy proposed: ENAS)
    bn_batches: int = 2              # training batches that recompute BN statistics for a path (0: batch stats)
    val_batches: int = 1             # validation batches per score (ENAS: one minibatch)
    finetune_steps: int = 20         # SGD steps on the path alone before it is scored, on a copy (0: none)
    finetune_lr: float = 0.05        # their learning rate (the first step's under a cosine schedule)
    finetune_schedule: str = "constant"  # constant | cosine (falls to 0 over the steps: steadier scores)
    estimate: str = "likelihood"     # accuracy | likelihood (exp(-cross-entropy): ranks cells better, issue 22)

    def __post_init__(self) -> None:
        for name in ("warmup_epochs", "phase_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"evaluator.{name} must be a positive number of epochs, got {value!r}")
        for name in ("cells_per_stage", "channels", "train_every"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"evaluator.{name} must be a positive integer or null, got {value!r}")
        for name in ("batch_size", "eval_batch_size", "val_batches", "final_candidates", "final_top_k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"evaluator.{name} must be a positive integer, got {value!r}")
        for name in ("max_phases", "bn_batches", "finetune_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"evaluator.{name} must be an integer >= 0, got {value!r}")
        if self.finetune_schedule not in FINETUNE_SCHEDULES:
            raise ConfigError(f"evaluator.finetune_schedule must be one of {list(FINETUNE_SCHEDULES)}, "
                              f"got {self.finetune_schedule!r}")
        if self.estimate not in ESTIMATES:
            raise ConfigError(f"evaluator.estimate must be one of {list(ESTIMATES)}, got {self.estimate!r}")
        if self.path_sampler not in PATH_SAMPLERS:
            raise ConfigError(f"evaluator.path_sampler must be one of {list(PATH_SAMPLERS)}, got {self.path_sampler!r}")
        if isinstance(self.finetune_lr, bool) or not isinstance(self.finetune_lr, (int, float)) or self.finetune_lr <= 0:
            raise ConfigError(f"evaluator.finetune_lr must be a positive number, got {self.finetune_lr!r}")
        if self.lr <= 0 or self.lr_min < 0 or self.lr_min > self.lr:
            raise ConfigError(f"evaluator.lr must be positive and lr_min in [0, lr]; got {self.lr}, {self.lr_min}")
        if self.final_top_k > self.final_candidates:
            raise ConfigError(f"evaluator.final_top_k ({self.final_top_k}) must not exceed final_candidates "
                              f"({self.final_candidates})")


def evaluation_device(child: ChildConfig) -> torch.device:
    """The GPU when the child may use one and one is visible, else the CPU."""
    wants_gpu = child.accelerator in ("auto", "gpu", "cuda")
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")


def endless_batches(loader: Any, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of ``loader`` forever, pass after pass, on ``device``."""
    while True:
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


class UnscoredPath(ArithmeticError):
    """A path whose logits came out NaN or infinite: the supernet cannot score that cell."""


@torch.no_grad()
def score_path(supernet: SuperNet, genotype: Genotype, bn_batches: list[torch.Tensor],
               val_batches: list[tuple[torch.Tensor, torch.Tensor]], measure: str = "accuracy") -> float:
    """Validation accuracy of the path ``genotype`` (``measure="likelihood"``: exp of minus its mean
    cross-entropy, the geometric mean of the probability it gives the true class), with its BN statistics
    recomputed on the training images ``bn_batches`` first (none: each validation batch normalised by its
    own statistics). The same images for every cell, so scores compare. The supernet stays in training mode."""
    bns = supernet.batch_norms()
    if bn_batches:
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # a cumulative average over the recalibration batches
        for x in bn_batches:
            supernet(x, genotype)
        for bn in bns:  # only batch norm behaves differently in evaluation: toggling it alone is cheaper
            bn.train(False)
    correct = seen = 0
    loss, finite = 0.0, True
    try:
        for x, y in val_batches:
            logits = supernet(x, genotype)
            finite = finite and bool(torch.isfinite(logits).all())
            correct += int((logits.argmax(dim=1) == y).sum())
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            seen += len(y)
    finally:
        for bn in bns:
            bn.momentum = 0.1
            bn.train(True)
    if not finite:  # argmax of NaN logits would pass for a (poor) accuracy
        raise UnscoredPath("the path's logits are NaN or infinite on the validation images")
    if measure == "likelihood":
        return math.exp(-loss / max(1, seen))
    return correct / max(1, seen)


class SupernetTrainer:
    """Shared-weight training of a supernet: SGD with Nesterov momentum and a cosine schedule over
    ``total_steps``, one path per minibatch."""

    def __init__(self, supernet: SuperNet, config: OneShotConfig, total_steps: int):
        self.supernet, self.config = supernet.train(), config
        self.parameters = list(supernet.parameters())  # listed once: a supernet has thousands of tensors
        self.total_steps = max(1, total_steps)
        self.step = 0
        self.optimizer = torch.optim.SGD(self.parameters, lr=config.lr, momentum=config.momentum,
                                         nesterov=config.momentum > 0, weight_decay=config.weight_decay)

    def lr(self) -> float:
        c = self.config
        progress = min(1.0, self.step / self.total_steps)
        return c.lr_min + 0.5 * (c.lr - c.lr_min) * (1 + math.cos(math.pi * progress))

    def train_step(self, x: torch.Tensor, y: torch.Tensor, genotype: Genotype) -> tuple[float, float]:
        """One SGD step on the path ``genotype``; returns the loss and the batch's accuracy. Ops off the
        path get no gradient (and no weight decay or momentum update)."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr()
        logits = self.supernet(x, genotype)
        loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip > 0:  # over the path's weights: the others have no gradient
            torch.nn.utils.clip_grad_norm_([p for p in self.parameters if p.grad is not None], self.config.grad_clip)
        self.optimizer.step()
        self.step += 1
        accuracy = (logits.detach().argmax(dim=1) == y).float().mean()
        loss_value, accuracy_value = torch.stack([loss.detach(), accuracy]).tolist()  # one device sync for both
        return loss_value, accuracy_value

    def state_dict(self) -> dict[str, Any]:
        return {"supernet": self.supernet.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.supernet.load_state_dict(state["supernet"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])


def _with_added_settings(saved: dict[str, Any]) -> dict[str, Any]:
    """The settings a ``supernet.pt`` recorded, with those added since at the values that reproduce what it
    did before them (the run's search_settings.yaml reads them the same way: ADDED_OPTION_SETTINGS)."""
    from cellsearch.search.settings import ADDED_OPTION_SETTINGS  # the one list of them

    added = ADDED_OPTION_SETTINGS[f"{OneShotEvaluator.__module__.rsplit('.', 1)[0]}.{OneShotEvaluator.__name__}"]
    config = {key.split(".", 1)[1]: value for key, value in added.items()}
    return {**saved, "config": {**config, **saved["config"]}}


class OneShotEvaluator(Evaluator):
    """Scores each genotype by its path's validation accuracy in a supernet trained in phases
    (metric ``val_accuracy``, the one-shot estimate; with ``estimate: likelihood``, the default, it holds
    exp(-validation cross-entropy) of the path instead, which ranks cells better than its accuracy).
    ``child`` is the stand-alone child that the final step trains; ``space`` the search space the supernet covers."""

    name = "oneshot"
    metrics = ("val_accuracy", SUPERNET_STEPS)
    needs_in_process_executor = True  # the supernet lives in this process
    trains_finalists = True

    def __init__(self, child: "ChildConfig | Mapping[str, Any]", data: "DataConfig | Mapping[str, Any]",
                 space: "SearchSpace | Mapping[str, Any]", run_dir: "str | Path | None" = None,
                 **settings: Any) -> None:
        self.child = as_child_config(child)
        self.data = as_data_config(data)
        self.space = as_search_space(space)
        require_nasnet(self.space.name, "the one-shot evaluator shares weights through a supernet of NASNet cells",
                       "supernet", "use space=nasnet, or evaluator=train (stand-alone training) for this space")
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.config = dataclass_from_config(OneShotConfig, settings, "evaluator")
        self._runtime: dict[str, Any] | None = None  # built lazily in the evaluating process
        self._report_phase: Callable[[dict[str, float], int], None] | None = None

    @property
    def accelerator(self) -> str:  # type: ignore[override]
        return self.child.accelerator

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_runtime": None, "_report_phase": None}

    def report_phases(self, report: Callable[[dict[str, float], int], None] | None) -> None:
        """Call ``report(values, phase)`` after every training phase (0 = the warm-up) is saved, with the
        phase's mean training loss and accuracy, the learning rate and the SGD steps so far (the live view
        in TensorBoard: :class:`cellsearch.search.live.CurveWriter`); None stops it."""
        self._report_phase = report

    def check(self) -> None:
        check_config(self.child, self.data)

    def check_single_device(self) -> None:
        raise ConfigError("the one-shot evaluator keeps its supernet in this process: use executor=local")

    def describe(self) -> str:
        return f"one-shot ({self.config.path_sampler} paths) on {self.data.name}"

    def settings(self) -> dict[str, Any]:
        """What the saved supernet must match on resume."""
        return {"config": asdict(self.config), "space": asdict(self.space), "child": {
            k: getattr(self.child, k) for k in ("cells_per_stage", "channels")}, "data": asdict(self.data)}

    # --- the supernet, built once per process --------------------------------------------------
    def build_supernet(self) -> SuperNet:
        """A fresh supernet at the configured size for this dataset."""
        info = describe_dataset(self.data)
        c = self.config
        return SuperNet(self.space, cells_per_stage=c.cells_per_stage or self.child.cells_per_stage,
                        channels=c.channels or self.child.channels, num_classes=info.num_classes,
                        in_chans=info.in_chans)

    def _setup(self, seed: int) -> dict[str, Any]:
        if self._runtime is not None:
            return self._runtime
        c = self.config
        device = evaluation_device(self.child)
        torch.manual_seed(seed)
        supernet = self.build_supernet().to(device)
        datamodule = ImageDataModule(self.data, batch_size=c.batch_size, seed=seed, eval_batch_size=c.eval_batch_size)
        train_loader = datamodule.train_dataloader()
        epoch = max(1, len(train_loader))
        warmup, phase = max(1, round(c.warmup_epochs * epoch)), max(1, round(c.phase_epochs * epoch))
        trainer = SupernetTrainer(supernet, c, warmup + c.max_phases * phase)
        val = []
        for x, y in datamodule.val_dataloader():  # fixed batches: every cell is judged on the same images
            val.append((x.to(device), y.to(device)))
            if len(val) == c.val_batches:
                break
        train = endless_batches(train_loader, device)
        bn = [next(train)[0] for _ in range(c.bn_batches)]
        finetune = [next(train) for _ in range(c.finetune_steps)]  # fixed too: every path tunes on the same images
        runtime = {"trainer": trainer, "train": train, "bn": bn, "val": val, "finetune": finetune, "warmup": warmup,
                   "phase": phase, "phases_done": -1, "recent": [], "rng": random.Random(seed)}
        self._runtime = runtime
        self._load(runtime)
        return runtime

    @property
    def state_path(self) -> Path | None:
        return self.run_dir / SUPERNET_FILE if self.run_dir is not None else None

    def _save(self, runtime: dict[str, Any]) -> None:
        if self.state_path is None:
            return
        state = {"settings": self.settings(), "trainer": runtime["trainer"].state_dict(),
                 "phases_done": runtime["phases_done"], "recent": [g.to_json() for g in runtime["recent"]],
                 "rng": runtime["rng"].getstate()}
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(f".{SUPERNET_FILE}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.state_path)

    def _load(self, runtime: dict[str, Any]) -> None:
        if self.state_path is None or not self.state_path.exists():
            return
        state = torch.load(self.state_path, map_location=runtime["trainer"].supernet.classifier_bias.device,
                           weights_only=True)
        if _with_added_settings(state["settings"]) != self.settings():
            raise ConfigError(f"{self.state_path} holds a supernet trained with other settings; resume with those "
                              f"settings or start a new run directory")
        runtime["trainer"].load_state_dict(state["trainer"])
        runtime["phases_done"] = state["phases_done"]
        runtime["recent"] = [Genotype.from_json(text) for text in state["recent"]]
        runtime["rng"].setstate(state["rng"])

    # --- training phases -----------------------------------------------------------------------
    def phases_due(self, trial_id: int) -> int:
        """Phases (the warm-up is phase 0) that must be done before trial ``trial_id`` is scored."""
        every = self.config.train_every
        return 1 + (min(self.config.max_phases, trial_id // every) if every else 0)

    def _sample_path(self, runtime: dict[str, Any]) -> Genotype:
        if self.config.path_sampler == "proposals" and runtime["recent"]:
            return runtime["rng"].choice(runtime["recent"])
        return self.space.sample(runtime["rng"])

    def _train_phase(self, runtime: dict[str, Any]) -> None:
        warmup = runtime["phases_done"] < 0
        steps = runtime["warmup"] if warmup else runtime["phase"]
        label = "supernet warm-up" if warmup else \
            f"supernet phase {runtime['phases_done'] + 1}/{self.config.max_phases}"
        trainer, loss_sum, accuracy_sum = runtime["trainer"], 0.0, 0.0
        for _ in track(range(steps), label):
            x, y = next(runtime["train"])
            loss, accuracy = trainer.train_step(x, y, self._sample_path(runtime))
            if not math.isfinite(loss):
                raise FloatingPointError("the supernet's training loss became NaN or infinite: lower evaluator.lr")
            loss_sum, accuracy_sum = loss_sum + loss, accuracy_sum + accuracy
        runtime["phases_done"] += 1
        runtime["recent"] = []  # ENAS: the next phase trains on the controller's newer samples
        self._save(runtime)
        if self._report_phase is not None:
            self._report_phase({"supernet/loss": loss_sum / steps, "supernet/train_accuracy": accuracy_sum / steps,
                                "supernet/lr": trainer.optimizer.param_groups[0]["lr"],
                                "supernet/steps": float(trainer.step)}, runtime["phases_done"])

    def train_until(self, phases: int, seed: int = 0) -> None:
        """Train the supernet until ``phases`` phases (warm-up included) are done."""
        runtime = self._setup(seed)
        while runtime["phases_done"] + 1 < phases:
            self._train_phase(runtime)

    def score(self, genotype: Genotype, seed: int = 0) -> float:
        """The one-shot estimate of ``genotype`` with the supernet as it is now (its path fine-tuned first on
        a copy when ``finetune_steps`` asks for it)."""
        runtime, c = self._setup(seed), self.config
        with finetuned_path(runtime["trainer"].supernet, genotype, runtime["finetune"], c.finetune_lr, c.momentum,
                            c.weight_decay, c.grad_clip, c.finetune_schedule) as supernet:
            return score_path(supernet, genotype, runtime["bn"], runtime["val"], c.estimate)

    def release(self) -> None:
        """Drop the supernet, its optimiser and data from memory (it is saved at every phase end)."""
        self._runtime = None
        gc.collect()

    def evaluate(self, genotype: Genotype, trial_id: int = 0, seed: int = 0) -> EvalResult:
        """The one-shot estimate of ``genotype`` (training the supernet first when a phase is due). A path that
        fails or scores NaN leaves the cell unscored: a failed result with the reason in one line, and the
        search goes on."""
        start = time.perf_counter()
        try:
            runtime = self._setup(seed)
            runtime["trainer"].supernet.check_path(genotype)
            self.train_until(self.phases_due(trial_id), seed)
            runtime["recent"].append(genotype)
            accuracy = self.score(genotype, seed)
        except (ConfigError, GenotypeError):
            raise
        except Exception as err:  # the path failed (out of memory, NaN logits, a diverged supernet): record it
            steps = float(self._runtime["trainer"].step) if self._runtime is not None else 0.0
            return failed_result(describe_error(err), time.perf_counter() - start, **{SUPERNET_STEPS: steps})
        return EvalResult("ok", {"val_accuracy": accuracy, SUPERNET_STEPS: float(runtime["trainer"].step)},
                          time.perf_counter() - start)
