"""How one child is built and trained: the ``child`` config group's fields, types, defaults and checks,
written once (Hydra's ConfigStore registers this dataclass as the group's schema)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from cellsearch.data import dataclass_from_config
from cellsearch.validation import ConfigError, bool_or_none, boolean, fail, number_in, one_of, positive_int

__all__ = ["LOGGERS", "ChildConfig", "as_child_config"]

LOGGERS: tuple[str, ...] = ("csv", "tensorboard")


@dataclass
class ChildConfig:
    """How one child is built and trained: the ``child`` config group. The defaults are a search child,
    NASNet's proxy network trained briefly with SGD, Nesterov momentum and a cosine schedule, validated
    once at the end; conf/child/ holds the presets (retrain: the full-size network)."""

    cells_per_stage: int = 2  # N: Normal cells per stage
    channels: int = 16  # F: filters of the first stage
    epochs: int = 10
    repeats: int = 1  # train this many times (seeds seed, seed + 1, ...); the reward is their mean accuracy
    batch_size: int = 128
    micro_batches: int = 1  # each batch as this many micro-batches, gradients accumulated (less memory)
    lr: float = 0.05
    lr_min: float = 0.0  # the cosine schedule's floor
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 3e-4
    label_smoothing: float = 0.0
    auxiliary_weight: float = 0.0  # > 0 adds the auxiliary head and its loss
    drop_path_rate: float = 0.0  # ScheduledDropPath: ramps linearly from 0 to this over training
    grad_clip: float = 5.0  # 0: off
    ema_decay: float = 0.0  # > 0: validate an exponential moving average of the weights (and BN statistics)
    val_every_n_epochs: int | None = None  # None: validate once, after the last epoch (the reward)
    accelerator: str = "auto"  # Lightning Trainer settings, passed through
    devices: Any = 1  # a count, "auto" or a list of device indices
    strategy: str = "auto"
    precision: str = "32-true"
    channels_last: bool | None = None  # None: automatic, per device (cellsearch.evaluators.speed)
    compile: bool | None = None  # torch.compile the training step; None: automatic, per device and length
    limit_train_batches: int | float = 1.0  # a fraction of the batches, or a number of them
    limit_val_batches: int | float = 1.0
    logger: str | None = None  # csv | tensorboard | None (children are many: no logs by default)
    log_dir: str = "logs"
    log_every_n_steps: int = 50
    enable_progress_bar: bool = False

    def __post_init__(self) -> None:
        for key in ("cells_per_stage", "channels", "epochs", "repeats", "batch_size", "micro_batches",
                    "log_every_n_steps"):
            positive_int(getattr(self, key), f"child.{key}")
        number_in(self.lr, "child.lr", 0, low_open=True)
        for key in ("lr_min", "momentum", "weight_decay", "auxiliary_weight", "grad_clip"):
            number_in(getattr(self, key), f"child.{key}", 0)
        for key in ("label_smoothing", "drop_path_rate", "ema_decay"):
            number_in(getattr(self, key), f"child.{key}", 0, 1, high_open=True)
        if self.batch_size % self.micro_batches:
            raise ConfigError(f"child.micro_batches ({self.micro_batches}) must divide child.batch_size "
                              f"({self.batch_size}) so that every micro-batch weighs the same")
        if self.lr_min > self.lr:
            fail("child.lr_min", f"at most child.lr ({self.lr})", self.lr_min)
        if positive_int(self.val_every_n_epochs, "child.val_every_n_epochs", optional=True) and \
                self.epochs % self.val_every_n_epochs:
            fail("child.val_every_n_epochs", f"a divisor of child.epochs ({self.epochs}) so that the last epoch "
                 f"is validated", self.val_every_n_epochs)
        for key in ("limit_train_batches", "limit_val_batches"):
            value = getattr(self, key)
            fraction = isinstance(value, float) and 0 < value <= 1
            count = isinstance(value, int) and not isinstance(value, bool) and value >= 1
            if not (fraction or count):
                fail(f"child.{key}", "a fraction in (0, 1] or a number of batches >= 1", value)
        for key in ("nesterov", "enable_progress_bar"):
            boolean(getattr(self, key), f"child.{key}")
        for key in ("channels_last", "compile"):
            bool_or_none(getattr(self, key), f"child.{key}")
        one_of(self.logger, "child.logger", LOGGERS, optional=True)

    @property
    def check_val_every_n_epoch(self) -> int:
        return self.val_every_n_epochs or self.epochs


def as_child_config(config: "ChildConfig | Mapping[str, Any]") -> ChildConfig:
    """Accept a ChildConfig or a plain mapping of its fields (a Hydra config node)."""
    return dataclass_from_config(ChildConfig, config, "child")

