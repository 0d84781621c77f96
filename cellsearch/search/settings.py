"""The settings that define a search, and the check that a resumed search keeps them.

A run directory records, in ``search_settings.yaml``, the settings that define what its rewards
mean: the seed, the space, the strategy (``search.*`` but the loop's own options), the evaluator,
the objective, the pre-judge, the scheduler (early stopping), and the data and child settings except where things run and are
logged. Every start compares the settings it was given with the recorded ones and refuses a change
(:class:`ResumeError`).

Settings added to cellsearch after a run was started are missing from its file: they take the
values in :data:`ADDED_SETTINGS`, the ones that reproduce what the code did before they existed,
and such a value does not count as a change. Every setting that defines a search and is not in the
oldest supported run directory must be listed there; tests/test_added_settings.py checks it.

A run directory also records the newest cellsearch version that wrote it (``cellsearch_version.txt``,
not a setting): a release refuses one written by a newer release, whose files it may not read.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from cellsearch import __version__
from cellsearch.search.atomic import atomic_write

__all__ = ["ADDED_OPTION_SETTINGS", "ADDED_SETTINGS", "RESUMABLE_CHANGES", "RUN_OPTIONS", "SETTINGS_FILE",
           "VERSION_FILE", "ResumeError", "check_settings", "check_version", "fill_added_settings", "flatten",
           "record_version", "search_settings"]

SETTINGS_FILE = "search_settings.yaml"
# The newest cellsearch version that wrote to a run directory (absent: one from before 0.2.0).
VERSION_FILE = "cellsearch_version.txt"
# search.* keys for the loop, not the strategy (and free to change on resume).
RUN_OPTIONS = ("budget", "epoch_budget", "rebuild_state")
# Settings that may change when a search resumes: where things run and are logged, not what a reward means.
RESUMABLE_CHANGES = {
    "data": ("root", "download", "num_workers", "loader"),
    "child": ("accelerator", "devices", "strategy", "logger", "log_dir", "log_every_n_steps", "enable_progress_bar"),
}

# Flat settings keys added after the first release, with the value that reproduces the behaviour from
# before they existed. A run directory without a key reads as if it held this value.
# A key of a group chosen by ``_target_`` applies to the option named by that group's ``_target_`` here.
# tests/test_added_settings.py fails when a setting that defines a search has neither a value here nor one
# in the oldest fixture run directory.
ADDED_SETTINGS: dict[str, Any] = {
    "evaluator._target_": "cellsearch.evaluators.TrainEvaluator",  # since a23a6ba: the evaluator seam
    "evaluator.latency": False,
    "objective._target_": "cellsearch.search.objectives.AccuracyObjective",
    "data.synthetic_train_size": 1000,  # since 8df1797: data=synthetic, the only reader
    "data.synthetic_test_size": 200,
    "data.synthetic_classes": 10,
    "data.synthetic_channels": 3,
    "child.micro_batches": 1,  # since 48eaee9: one batch, one step
    "prejudge": None,  # since dfc1a47: no pre-judging
    "child.repeats": 1,  # since 5699765: one training per child
    "child.ema_decay": 0.0,  # since 5699765: the raw weights are validated
    "scheduler.name": "none",  # since fidelity-loop: every child trained in full
    "space.name": "nasnet",  # since issue 25: the NASNet cell space was the only one
}

# Settings added to one option of a group, by that option's ``_target_``: filled only in a run whose group
# is set to that option. The values reproduce what the option did before the settings existed.
ADDED_OPTION_SETTINGS: dict[str, dict[str, Any]] = {
    "cellsearch.strategies.PPO": {  # since 0e5142d: no advantage scaling, no imitation of the best cells
        "search.normalize_advantages": False,
        "search.imitation_weight": 0.0,
        "search.imitation_topk": 5,
    },
    "cellsearch.strategies.ProgressiveSearch": {"search.history": 2**31 - 1},  # since 0e5142d: every told trial
    # since issue 25: null is the space's paper, for NASNet (the only space then) aging and a random start
    "cellsearch.strategies.RegularizedEvolution": {"search.aging": None, "search.init_mutations": None},
    "cellsearch.search.prejudge.PreJudger": {"prejudge.beat_params": False},  # never compared with params before
    "cellsearch.evaluators.OneShotEvaluator": {  # since issue 22: paths scored as the shared weights left them
        "evaluator.finetune_steps": 0,
        "evaluator.finetune_lr": 0.02,
        "evaluator.estimate": "accuracy",
        "evaluator.finetune_schedule": "constant",  # since the cosine fine-tune option
    },
    "cellsearch.evaluators.table.TableEvaluator": {"evaluator.runs": "mean"},  # since issue 21: seed means
    "cellsearch.evaluators.LandscapeEvaluator": {"evaluator.curve": "saturating",  # since issue 21: no curves
                                                 "evaluator.epochs": None},
}


class ResumeError(ValueError):
    """A run directory that cannot be resumed with the given settings."""


def search_settings(cfg: DictConfig) -> dict[str, Any]:
    """The settings that define what a search's rewards mean (checked when it resumes)."""
    settings = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    chosen: dict[str, Any] = {"seed": settings["seed"], "space": settings["space"]}
    for group in ("evaluator", "objective", "prejudge", "scheduler"):  # run dirs from before them: see ADDED_SETTINGS
        chosen[group] = settings.get(group)
    chosen["search"] = {k: v for k, v in settings["search"].items() if k not in RUN_OPTIONS}
    for group, free in RESUMABLE_CHANGES.items():
        chosen[group] = {k: v for k, v in settings[group].items() if k not in free}
    return chosen


def check_settings(run_dir: Path, settings: dict[str, Any]) -> None:
    """Record ``settings`` in a new run directory, or check that a resumed run uses the same ones; refuse a
    run directory from a newer release first, and record this release in one that passes."""
    check_version(run_dir)
    path = run_dir / SETTINGS_FILE
    if not path.exists():
        atomic_write(path, lambda tmp: tmp.write_text(yaml.safe_dump(settings, sort_keys=True)))
        record_version(run_dir)
        return
    try:
        saved = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:  # damaged, or not written by cellsearch (safe_load runs no tags)
        raise ResumeError(f"{path} is not a settings file cellsearch wrote ({str(err).splitlines()[0]}); restore it "
                          f"or start a new run directory") from None
    if not isinstance(saved, dict):
        raise ResumeError(f"{path} is not a settings file cellsearch wrote; restore it or start a new run directory")
    old, new = fill_added_settings(flatten(saved)), fill_added_settings(flatten(settings))
    changed = [f"{k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}"
               for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if changed:
        raise ResumeError(
            f"{run_dir} holds a search with other settings ({'; '.join(changed)}); resume it with the "
            f"settings in {path}, or start a new run directory"
        )
    record_version(run_dir)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``tree`` (nested mappings) as one mapping from dotted keys (``child.epochs``) to leaf values."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}{key}." if isinstance(value, dict) else f"{prefix}{key}"))
    return flat


def fill_added_settings(flat: dict[str, Any]) -> dict[str, Any]:
    """``flat`` (flattened settings) with the keys of :data:`ADDED_SETTINGS` it lacks at their old values:
    in a group it lacks entirely, or in a group set to the option those keys belong to; and those of
    :data:`ADDED_OPTION_SETTINGS` for the options ``flat`` names."""
    filled = dict(flat)
    for key, value in ADDED_SETTINGS.items():
        group = key.split(".")[0]
        has_group = any(k == group or k.startswith(group + ".") for k in flat)
        same_option = flat.get(f"{group}._target_") == ADDED_SETTINGS.get(f"{group}._target_")
        if key not in flat and (not has_group or same_option):
            filled[key] = value
    for target, added in ADDED_OPTION_SETTINGS.items():
        for key, value in added.items():
            if flat.get(f"{key.split('.')[0]}._target_") == target:
                filled.setdefault(key, value)
    return filled


def _release(version: str) -> tuple[int, ...] | None:
    """``1.2.3`` -> (1, 2, 3); None for a version that does not start with numbers (``unknown``)."""
    match = re.match(r"\d+(\.\d+)*", version)
    return tuple(int(part) for part in match.group(0).split(".")) if match else None


def _written_version(run_dir: Path) -> str:
    path = run_dir / VERSION_FILE
    return path.read_text(errors="replace").strip() if path.is_file() else ""


def check_version(run_dir: Path, version: str = __version__) -> None:
    """Refuse a run directory written by a newer cellsearch than ``version`` (its files may be in a format
    this one cannot read)."""
    written = _written_version(run_dir)
    ours, theirs = _release(version), _release(written)
    if ours is not None and theirs is not None and theirs > ours:
        raise ResumeError(f"{run_dir} was written by cellsearch {written}, newer than this cellsearch {version}: "
                          f"upgrade cellsearch to resume it, or start a new run directory")


def record_version(run_dir: Path, version: str = __version__) -> None:
    """Record ``version`` in ``run_dir`` unless it holds a newer one (what :func:`check_version` reads)."""
    ours, theirs = _release(version), _release(_written_version(run_dir))
    if ours is not None and (theirs is None or ours > theirs):
        atomic_write(run_dir / VERSION_FILE, lambda tmp: tmp.write_text(version + "\n"))
