"""Train one child network with Lightning and report its reward (validation accuracy).

A child is the CIFAR-sized network of its genotype's search space
(:func:`~cellsearch.space.networks.build_network`; NASNet's is :class:`~cellsearch.space.network.CellNetCifar`)
built with N cells per stage and F filters. NASNet's proxy task trains it on CIFAR-10 with 5,000 training images
held out, briefly, with a cosine learning-rate schedule and momentum (Zoph et al. 2018): the defaults
of :class:`ChildConfig` and :class:`~cellsearch.data.DataConfig` (``child=nasnet_proxy``: the paper's
schedule). The same LightningModule serves final retraining: auxiliary head loss, scheduled drop
path, label smoothing, weight decay, gradient clipping and cutout are all settings.

:func:`evaluate_child` never raises for a failure of the child itself (a diverging loss, running out
of memory, any exception while building or training it): it returns a ``ChildResult`` with
``status='failed'``. Configuration errors (unknown dataset, missing files, impossible numbers or
trainer settings) raise :class:`~cellsearch.validation.ConfigError`, before anything trains.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import time
import traceback
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from pytorch_lightning.utilities.exceptions import MisconfigurationException
from pytorch_lightning.utilities.warnings import PossibleUserWarning

from cellsearch.data import DataConfig, DatasetInfo, ImageDataModule, as_data_config, describe_dataset
from cellsearch.evaluators.base import EvalResult, failed_result
from cellsearch.evaluators.child_config import ChildConfig, as_child_config
from cellsearch.evaluators.curve import CurveRecorder, mean_curve
from cellsearch.evaluators.memory import OOM_ERROR_PREFIX, PeakMemory, micro_batches_after_oom
from cellsearch.space.genotype import Genotype, load_genotype
from cellsearch.space.networks import build_network
from cellsearch.space.spaces import genotype_from_dict
from cellsearch.space.profile import count_mult_adds, count_params
from cellsearch.evaluators.compile_guard import ProbeVerdict, guarded_compile
from cellsearch.evaluators.speed import use_channels_last, use_compile
from cellsearch.progress import TrainingProgress
from cellsearch.validation import ConfigError

if TYPE_CHECKING:
    from cellsearch.evaluators.segments import Segment
    from cellsearch.space.head import GenotypeNet  # importing it before timm would loop through timm's import hook

__all__ = [
    "ChildConfig", "ChildDiverged", "ChildModule", "ConfigError", "as_child_config",
    "build_trainer", "build_training", "check_config", "evaluate_child",
]

_NONFINITE_CHECK_EVERY = 20  # steps between checks for a diverged loss (each check syncs the device)



class ChildDiverged(RuntimeError):
    """The training loss (or the validation loss) became NaN or infinite."""


class ChildModule(pl.LightningModule):
    """Trains ``self.model`` (the CIFAR network of any space's genotype) with SGD + cosine schedule; logs
    ``val_acc`` and ``test_acc``.

    Constructor arguments are plain values, saved with ``save_hyperparameters`` (the genotype as a
    dict), so ``ChildModule.load_from_checkpoint(path).final_model`` rebuilds the trained network.
    """

    def __init__(
        self,
        genotype: "Genotype | Mapping[str, Any] | str" = "nasnet_a",
        cells_per_stage: int = 2,
        channels: int = 16,
        num_classes: int = 10,
        in_chans: int = 3,
        auxiliary_weight: float = 0.0,
        drop_path_rate: float = 0.0,
        label_smoothing: float = 0.0,
        lr: float = 0.05,
        lr_min: float = 0.0,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 3e-4,
        channels_last: bool = False,
        compile_training: bool = False,
        compile_backend: str = "inductor",
        ema_decay: float = 0.0,
    ):
        super().__init__()
        genotype = genotype_from_dict(dict(genotype)) if isinstance(genotype, Mapping) else load_genotype(genotype)
        self.save_hyperparameters(ignore=["genotype"])
        self.hparams["genotype"] = genotype.to_dict()
        self.model = build_network(genotype, cells_per_stage=cells_per_stage, channels=channels,
                                   num_classes=num_classes, in_chans=in_chans, auxiliary=auxiliary_weight > 0)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # Weight averaging: a short child's last weights depend on the last few batches it saw; their
        # moving average (parameters and batch-norm statistics) is a steadier thing to validate.
        self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True) \
            if ema_decay > 0 else None
        if self.ema is not None:
            self.ema.requires_grad_(False)
        # Compiled on the first training step, once a probe on that batch has matched eager (compile_guard);
        # evaluation stays eager. train_path says which way the child trained.
        self._compile_pending = compile_training
        self.train_path = "eager"
        self.probe: ProbeVerdict | None = None
        self._nonfinite = torch.zeros((), dtype=torch.bool)
        self._eval_sums: torch.Tensor | None = None  # correct, seen, loss sum
        self.val_accuracy: float | None = None  # of the latest validation, exact (the logged copy is float32)

    @classmethod
    def from_config(cls, genotype: "Genotype | str", child: ChildConfig, info: DatasetInfo,
                    device: "torch.device | str" = "cpu") -> "ChildModule":
        """The module for ``genotype`` trained as ``child`` says on data described by ``info``, on ``device``
        (which settles the automatic speed settings)."""
        batches = max(1, info.train_size // child.batch_size)
        limit = child.limit_train_batches
        batches = min(batches, limit) if isinstance(limit, int) else max(1, int(batches * limit))
        return cls(genotype, cells_per_stage=child.cells_per_stage, channels=child.channels,
                   num_classes=info.num_classes, in_chans=info.in_chans, auxiliary_weight=child.auxiliary_weight,
                   drop_path_rate=child.drop_path_rate, label_smoothing=child.label_smoothing, lr=child.lr,
                   lr_min=child.lr_min, momentum=child.momentum, nesterov=child.nesterov,
                   weight_decay=child.weight_decay, ema_decay=child.ema_decay,
                   channels_last=use_channels_last(child.channels_last, device),
                   compile_training=use_compile(child.compile, device, child.epochs * batches))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @property
    def final_model(self) -> GenotypeNet:
        """The network that is validated, tested and exported: the weight average where ``ema_decay`` > 0,
        else the trained weights themselves."""
        return self.model if self.ema is None else self.ema.module

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    # --- training ------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        # ScheduledDropPath: the rate ramps linearly from 0 to drop_path_rate over training.
        progress = self.current_epoch / max(1, self.trainer.max_epochs or 1)
        self.model.set_drop_path_rate(self.hparams.drop_path_rate * progress)

    def _training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits, aux_logits = self.model.forward_with_aux(x)
        smoothing = self.hparams.label_smoothing
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
        if aux_logits is not None:
            loss = loss + self.hparams.auxiliary_weight * F.cross_entropy(aux_logits, y, label_smoothing=smoothing)
        return loss

    def _compile_if_it_matches_eager(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self._compile_pending = False
        key = genotype_from_dict(self.hparams.genotype).key()
        self.probe = guarded_compile(self.model, x, y, self._training_loss, key, backend=self.hparams.compile_backend)
        self.train_path = "compiled" if self.probe.ok else "compiled->eager fallback"

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        x = self._prepare(x)
        if self._compile_pending:
            self._compile_if_it_matches_eager(x, y)
        loss = self._training_loss(x, y)
        self._nonfinite = self._nonfinite.to(loss.device) | ~torch.isfinite(loss.detach())
        if batch_idx % _NONFINITE_CHECK_EVERY == 0:
            self._raise_if_diverged()
        self.log("train_loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None and (batch_idx + 1) % self.trainer.accumulate_grad_batches == 0:
            self.ema.update_parameters(self.model)

    def _raise_if_diverged(self) -> None:
        if bool(self._nonfinite):
            raise ChildDiverged(f"training loss became NaN or infinite by epoch {self.current_epoch}, "
                                f"step {self.global_step}: the child diverged (lower child.lr or set child.grad_clip)")

    def on_train_epoch_end(self) -> None:
        self._raise_if_diverged()

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = torch.optim.SGD(self.model.parameters(), lr=hp.lr, momentum=hp.momentum,
                                    nesterov=hp.nesterov and hp.momentum > 0, weight_decay=hp.weight_decay)
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=hp.lr_min)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # --- evaluation ----------------------------------------------------------------------------
    def _eval_start(self) -> None:
        self._eval_sums = torch.zeros(3, dtype=torch.float64, device=self.device)

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        x, y = batch
        logits = self.final_model(self._prepare(x))
        loss = F.cross_entropy(logits.float(), y, reduction="sum")
        correct = (logits.argmax(dim=1) == y).sum()
        self._eval_sums += torch.stack([correct.double(), y.new_tensor(len(y), dtype=torch.float64), loss.double()])

    def _eval_end(self, prefix: str) -> None:
        sums = self.trainer.strategy.reduce(self._eval_sums, reduce_op="sum")
        correct, seen, loss_sum = sums.tolist()
        if seen == 0:
            return
        if prefix == "val" and self.trainer.state.fn == "fit" and not torch.isfinite(torch.tensor(loss_sum)):
            raise ChildDiverged(f"validation loss is NaN or infinite after epoch {self.current_epoch}: "
                                f"the child diverged (lower child.lr or set child.grad_clip)")
        if prefix == "val":
            self.val_accuracy = correct / seen
        self.log(f"{prefix}_acc", correct / seen, prog_bar=True)
        self.log(f"{prefix}_loss", loss_sum / seen)

    def on_validation_epoch_start(self) -> None:
        if self.trainer.state.fn == "fit":
            self._raise_if_diverged()
        self._eval_start()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def on_test_epoch_start(self) -> None:
        self._eval_start()

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")


# --- trainer -----------------------------------------------------------------------------------------

@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence Lightning's informational console messages and its advice warnings (for search children)."""
    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning_fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=PossibleUserWarning)
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _make_logger(child: ChildConfig, run_name: str) -> Any:
    if child.logger is None:
        return False
    if child.logger == "csv":
        return pl.loggers.CSVLogger(save_dir=child.log_dir, name=run_name)
    try:
        return pl.loggers.TensorBoardLogger(save_dir=child.log_dir, name=run_name)
    except ModuleNotFoundError as err:
        raise ConfigError("child.logger=tensorboard needs the tensorboard package: "
                          "pip install 'cellsearch[tensorboard]' (or use child.logger=csv)") from err


def build_trainer(child: ChildConfig, run_name: str = "child", checkpointing: bool = False,
                  callbacks: Sequence[pl.Callback] = (), quiet: bool = False) -> pl.Trainer:
    """A Lightning Trainer for ``child``; invalid trainer settings raise ConfigError.

    ``checkpointing`` keeps ``checkpoints/best-*.ckpt`` (highest ``val_acc``) and ``checkpoints/last.ckpt``
    (the latest epoch, to resume from) in the logger's version folder (retraining); search children run
    without checkpoints and, with ``quiet``, without a model summary. Without ``quiet`` and with the
    progress bar off, :class:`~cellsearch.progress.TrainingProgress` logs a line at least every 10 s.
    """
    child = as_child_config(child)
    if child.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"child.accelerator={child.accelerator} but no CUDA GPU is visible; use "
                          f"child.accelerator=auto (a GPU when there is one) or child.accelerator=cpu")
    callbacks = list(callbacks)
    if not child.enable_progress_bar and not quiet:  # no bar: a progress line at least every 10 s instead
        callbacks.append(TrainingProgress(run_name))
    limit = child.limit_train_batches  # counted in whole batches: a batch is micro_batches loader batches
    limit = limit * child.micro_batches if isinstance(limit, int) else limit
    if checkpointing:  # the best epoch by val_acc, and last.ckpt (overwritten every epoch) to resume from
        callbacks.append(pl.callbacks.ModelCheckpoint(monitor="val_acc", mode="max", save_top_k=1,
                                                      filename="best-epoch{epoch:03d}-val_acc{val_acc:.4f}",
                                                      auto_insert_metric_name=False))
        callbacks.append(pl.callbacks.ModelCheckpoint(filename="last", save_top_k=1))
    try:
        return pl.Trainer(
            accelerator=child.accelerator,
            devices=child.devices,
            strategy=child.strategy,
            precision=child.precision,
            max_epochs=child.epochs,
            gradient_clip_val=child.grad_clip or None,
            gradient_clip_algorithm="norm",
            check_val_every_n_epoch=child.check_val_every_n_epoch,
            limit_train_batches=limit,
            accumulate_grad_batches=child.micro_batches,
            limit_val_batches=child.limit_val_batches,
            num_sanity_val_steps=0 if quiet else 2,
            logger=_make_logger(child, run_name),
            log_every_n_steps=child.log_every_n_steps,
            enable_checkpointing=checkpointing,
            enable_progress_bar=child.enable_progress_bar,
            enable_model_summary=not quiet,
            default_root_dir=child.log_dir,
            callbacks=callbacks,
        )
    except (MisconfigurationException, ValueError, TypeError, RuntimeError, ImportError) as err:
        # ImportError: an accelerator whose package is missing (tpu without torch_xla)
        raise ConfigError(f"invalid trainer settings (accelerator={child.accelerator!r}, devices={child.devices!r}, "
                          f"strategy={child.strategy!r}, precision={child.precision!r}): {err}") from err


def check_config(child: "ChildConfig | Mapping[str, Any]", data: "DataConfig | Mapping[str, Any]") -> DatasetInfo:
    """Validate both configs and the dataset (downloading it if allowed) before any child trains."""
    child, data = as_child_config(child), as_data_config(data)
    info = describe_dataset(data)
    if child.batch_size > info.train_size:
        logging.getLogger(__name__).warning(
            "child.batch_size=%d is larger than the %d training images of %s: every step sees the whole set, once "
            "an epoch; set child.batch_size=%d or less", child.batch_size, info.train_size, data.name,
            info.train_size)
    with quiet_lightning():
        build_trainer(ChildConfig(**{**asdict(child), "logger": None}), quiet=True)
    return info


def build_training(genotype: "Genotype | str", child: "ChildConfig | Mapping[str, Any]",
                   data: "DataConfig | Mapping[str, Any]", seed: int = 0, run_name: str = "retrain",
                   checkpointing: bool = True,
                   callbacks: Sequence[pl.Callback] = ()) -> tuple[pl.Trainer, ChildModule, ImageDataModule]:
    """Trainer, module and datamodule for training ``genotype`` (final retraining: ``trainer.fit(module,
    datamodule=dm, ckpt_path=...)`` then ``trainer.test``); checkpoints go under ``child.log_dir``."""
    child, data = as_child_config(child), as_data_config(data)
    info = describe_dataset(data)
    pl.seed_everything(seed, workers=True, verbose=False)
    trainer = build_trainer(child, run_name=run_name, checkpointing=checkpointing, callbacks=callbacks)
    module = ChildModule.from_config(load_genotype(genotype), child, info, trainer.strategy.root_device)
    datamodule = ImageDataModule(data, batch_size=child.batch_size, seed=seed, micro_batches=child.micro_batches)
    return trainer, module, datamodule


def describe_error(err: BaseException) -> str:
    """One line: the exception and the innermost place it came from."""
    text = "".join(traceback.format_exception_only(type(err), err)).strip()
    frames = traceback.extract_tb(err.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {Path(last.filename).name}:{last.lineno} in {last.name})"
    return text


def train_path_metrics(module: ChildModule) -> dict[str, float]:
    """How the child trained, as metrics (floats): ``compiled`` 1 or 0; where compiling was asked for,
    ``compile_fallback`` (1: the probe found a mismatch, trained eagerly) and ``compile_probe_s``."""
    metrics = {"compiled": float(module.train_path == "compiled")}
    if module.probe is not None:
        metrics["compile_fallback"] = float(not module.probe.ok)
        metrics["compile_probe_s"] = module.probe.seconds
    return metrics


def evaluate_child(genotype: "Genotype | str", child: "ChildConfig | Mapping[str, Any]",
                   data: "DataConfig | Mapping[str, Any]", seed: int = 0, run_name: str = "child",
                   segments: "Sequence[Segment] | None" = None) -> EvalResult:
    """Train one child; its metrics are ``val_accuracy``, ``train_loss``, ``params`` and ``mult_adds``
    (and ``peak_memory_mb`` on a GPU), and its ``curve`` the validation after each epoch
    (:class:`~cellsearch.evaluators.curve.CurveRecorder`; a failed child has none). A failing child gives
    ``status='failed'``, never an exception; one that runs out of GPU memory is retried once with
    micro-batches (cellsearch.evaluators.memory).

    With ``child.repeats`` = k > 1 the child trains k times, with seeds ``seed`` to ``seed + k - 1``:
    ``val_accuracy`` and ``train_loss`` are the means, ``val_accuracy_std`` the standard deviation over
    the k runs, and ``seconds`` their sum; the curve is the per-epoch mean of the k runs' curves
    (:func:`~cellsearch.evaluators.curve.mean_curve`). One failed run fails the child.

    With ``segments`` (one per run: :func:`~cellsearch.evaluators.segments.train_segment` makes them) each
    run trains only its segment, and keeps the state to go on from in it.

    Raises ConfigError for configuration problems (checked before training starts).
    """
    child = as_child_config(child)
    if segments is not None and len(segments) != child.repeats:
        raise ValueError(f"{len(segments)} segments for child.repeats={child.repeats} runs: one segment per run")
    runs: list[EvalResult] = []
    for repeat in range(child.repeats):
        runs.append(_train_child_once(genotype, child, data, seed + repeat,
                                      run_name if repeat == 0 else f"{run_name}_repeat{repeat}",
                                      segments[repeat] if segments is not None else None))
        if not runs[-1].ok:
            break
    return runs[0] if len(runs) == 1 else _mean_of_repeats(runs)


def _mean_of_repeats(runs: list[EvalResult]) -> EvalResult:
    seconds = sum(run.seconds for run in runs)
    if not runs[-1].ok:
        return replace(runs[-1], error=f"repeat {len(runs) - 1} (seed + {len(runs) - 1}): {runs[-1].error}",
                       seconds=seconds)
    accuracies = torch.tensor([run.metrics["val_accuracy"] for run in runs], dtype=torch.float64)
    metrics = {**runs[0].metrics, "val_accuracy": float(accuracies.mean()),
               "val_accuracy_std": float(accuracies.std()), "repeats": float(len(runs))}
    if all("train_loss" in run.metrics for run in runs):
        metrics["train_loss"] = sum(run.metrics["train_loss"] for run in runs) / len(runs)
    return EvalResult("ok", metrics, seconds, curve=mean_curve([run.curve for run in runs]))


def _train_child_once(genotype: "Genotype | str", child: ChildConfig, data: "DataConfig | Mapping[str, Any]",
                      seed: int, run_name: str, segment: "Segment | None") -> EvalResult:
    result = _train_child(genotype, child, data, seed, run_name, segment)
    split = micro_batches_after_oom(child.batch_size, child.micro_batches)
    if not result.error.startswith(OOM_ERROR_PREFIX) or split is None:
        return result
    retried = _train_child(genotype, replace(child, micro_batches=split), data, seed, run_name, segment)
    retried.seconds += result.seconds
    retried.metrics["oom_retried"] = 1.0
    return retried


def _train_child(genotype: "Genotype | str", child: ChildConfig, data: "DataConfig | Mapping[str, Any]",
                 seed: int, run_name: str, segment: "Segment | None" = None) -> EvalResult:
    start = time.perf_counter()
    data = as_data_config(data)
    info = describe_dataset(data)
    sizes: dict[str, float] = {}
    trainer = module = datamodule = None
    try:
        with quiet_lightning():
            curve = CurveRecorder()
            callbacks = [curve, *(segment.callbacks() if segment else ())]
            trainer = build_trainer(child, run_name=run_name, checkpointing=False, callbacks=callbacks, quiet=True)
            pl.seed_everything(seed, workers=True, verbose=False)
            module = ChildModule.from_config(genotype, child, info, trainer.strategy.root_device)
            sizes["params"] = count_params(module.model)
            sizes["mult_adds"] = count_mult_adds(module.model, input_size=info.input_size)
            datamodule = ImageDataModule(data, batch_size=child.batch_size, seed=seed,
                                         micro_batches=child.micro_batches)
            peak = PeakMemory(trainer.strategy.root_device)
            trainer.fit(module, datamodule=datamodule, ckpt_path=segment.resume_path if segment else None)
            if segment is not None:
                segment.save(trainer)
        metric = trainer.callback_metrics.get("val_acc")  # set in this process under spawn-based strategies too
        if metric is None:
            raise RuntimeError("training ended without a validation accuracy")
        accuracy = module.val_accuracy if module.val_accuracy is not None else float(metric)
        metrics = {"val_accuracy": accuracy, **sizes, **train_path_metrics(module), **peak.metrics()}
        if child.micro_batches > 1:
            metrics["micro_batches"] = float(child.micro_batches)
        train_loss = trainer.callback_metrics.get("train_loss_epoch")
        if train_loss is not None:
            metrics["train_loss"] = float(train_loss)
        return EvalResult("ok", metrics, time.perf_counter() - start, curve=curve.points)
    except ConfigError:
        raise
    except Exception as err:  # the child failed: record it, the search goes on
        prefix = OOM_ERROR_PREFIX if isinstance(err, torch.cuda.OutOfMemoryError) else ""
        return failed_result(prefix + describe_error(err), time.perf_counter() - start, **sizes)
    finally:
        del trainer, module, datamodule
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
