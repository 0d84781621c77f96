"""task=retrain: train a cell's full-size network, test it, and export the weights for timm.

Defaults (conf/child/retrain.yaml, conf/task/retrain.yaml): NASNet's CIFAR network N=6, F=32, 600
epochs, cutout, auxiliary head and ScheduledDropPath, on every visible GPU through Lightning (DDP
when there are several). A rerun in the same run directory resumes from ``last.ckpt``.

``cell`` may be a genotype of any search space (``cell=<a nasrl or hierarchical YAML>``): its space's
CIFAR network is trained with the same recipe, less the auxiliary head where that network has none
(one log line says so).
"""
from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from cellsearch.evaluators.child import ChildConfig, as_child_config, build_training
from cellsearch.validation import ConfigError
from cellsearch.search.lock import is_main_rank, lock_run_dir
from cellsearch.space.genotype import load_genotype
from cellsearch.space.networks import has_auxiliary_head, space_of
from cellsearch.weights import export_weights

log = logging.getLogger("cellsearch")

WEIGHTS_DIR = "weights"


@dataclass(frozen=True)
class RetrainResult:
    """Where the trained weights went, and the network's accuracy on the test split."""

    weights: Path
    test_accuracy: float | None  # None when the dataset has no test split


def run_retrain(cfg: DictConfig) -> RetrainResult:
    """Train ``cfg.cell`` with the ``child`` settings (resuming from the last checkpoint in the run
    directory, if any), test it, and export the weights for timm."""
    if cfg.cell is None:
        raise ConfigError("task=retrain needs a cell: cell=<shipped name, e.g. nasnet_a, or a YAML path>")
    genotype = load_genotype(cfg.cell)
    run_dir = Path(cfg.run_dir)
    if not is_main_rank():  # DDP's other processes write nothing of their own here; the main one holds the lock
        return _retrain(cfg, genotype, run_dir)
    with lock_run_dir(run_dir, "retrain"):
        return _retrain(cfg, genotype, run_dir)


def retrain_child(genotype: Any, child: Any) -> ChildConfig:
    """The child settings to retrain ``genotype`` with: the recipe's auxiliary head only where its network has one."""
    child = as_child_config(child)
    if child.auxiliary_weight > 0 and not has_auxiliary_head(genotype):
        log.info("retrain: space=%s's network has no auxiliary head, so child.auxiliary_weight=%g is not used",
                 space_of(genotype), child.auxiliary_weight)
        child = replace(child, auxiliary_weight=0.0)
    return child


def _retrain(cfg: DictConfig, genotype: Any, run_dir: Path) -> Path:
    child = retrain_child(genotype, cfg.child)
    trainer, module, datamodule = build_training(genotype, child, cfg.data, seed=cfg.seed, run_name="retrain")
    log.info("retrain: %s as N=%d, F=%d for %d epochs on %s; run dir %s", genotype.name or cfg.cell,
             cfg.child.cells_per_stage, cfg.child.channels, cfg.child.epochs, cfg.data.name, run_dir)
    last = sorted(run_dir.glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if last:
        log.info("resuming from %s", last[-1])
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last[-1]) if last else None)
    except pickle.UnpicklingError as err:  # weights-only loading refused what the checkpoint holds
        raise ConfigError(f"cannot resume from {last[-1]}: it holds objects other than tensors and plain data, "
                          f"which are not unpickled for safety ({str(err).splitlines()[0]}); remove it to start "
                          f"over") from None
    tested = trainer.test(module, datamodule=datamodule)
    out = run_dir / WEIGHTS_DIR
    if trainer.is_global_zero:
        splits = datamodule.splits  # in-memory data: record its image size and statistics for timm
        stats = {} if splits is None else dict(input_size=tuple(splits.train.images.shape[1:]),
                                               mean=splits.mean, std=splits.std)
        export_weights(module.final_model, out, **stats)
        log.info("weights for timm: %s (timm.create_model('local-dir:%s', pretrained=True))", out, out)
    accuracy = tested[0].get("test_acc") if tested else None
    return RetrainResult(out, None if accuracy is None else float(accuracy))
