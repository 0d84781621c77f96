"""Train a child in segments (to epoch 1, on to 3, on to 9) that add up to the child trained in one go.

An early-stopping scheduler (:mod:`cellsearch.search.schedulers`) trains every child a little, stops most,
and lets the promising ones go on: :func:`train_segment` trains one child up to ``Fidelity.epochs`` epochs in
all, from scratch or from the checkpoint its previous segment returned, and returns the checkpoint to go on
from (None once the child has trained all ``child.epochs``). A stopped child has cost the epochs it trained;
a child that goes on loses nothing.

Every segment trains the full child: its trainer runs to ``child.epochs`` (so the cosine learning-rate
schedule and scheduled drop path are the full child's) and :class:`SegmentControl` stops it after the
segment's last epoch. The checkpoint is Lightning's own checkpoint of that trainer, which holds

- the network and its weight average (``child.ema_decay``), the optimizer's momentum, the learning-rate
  scheduler, and Lightning's loops (the epoch and step counters);
- where the training data stands (``ImageDataModule.state_dict``: the tensor loader's pass number, whose
  shuffle and augmentation follow from it and the seed);
- the global random number generators (:class:`SegmentControl`'s state) and the learning curve so far
  with its wall and CPU clocks (``CurveRecorder``'s),

compressed (zlib: the archive's padding around hundreds of small tensors halves) and wrapped in a small
envelope (one Lightning checkpoint per run where ``child.repeats`` > 1): a format version, the settings the
child trains with (genotype, child, data, seed), the epochs trained and checksums, so that a checkpoint of
another cell, other settings or another format is refused in one line. On the CPU the segments give the
child trained in one go bit for bit (tests/test_segments.py); validating after every epoch changes nothing
in the training.
"""
from __future__ import annotations

import hashlib
import io
import random
import tempfile
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pytorch_lightning as pl
import torch

import cellsearch
from cellsearch.data import DataConfig, as_data_config
from cellsearch.evaluators.base import EvalResult, Fidelity
from cellsearch.evaluators.child import evaluate_child
from cellsearch.evaluators.child_config import ChildConfig, as_child_config
from cellsearch.space.genotype import Genotype, load_genotype
from cellsearch.validation import ConfigError

__all__ = ["SEGMENT_FORMAT", "Segment", "SegmentControl", "train_segment"]

#: The checkpoint envelope's version: bumped whenever what a checkpoint holds or means changes.
SEGMENT_FORMAT = 1
_MAGIC = "cellsearch child segment"
# Settings that do not change what a child learns (logging, memory), left out of the comparison; the
# validation frequency is every epoch under a Fidelity, whatever the setting.
_CHILD_AS_IS = ("logger", "log_dir", "log_every_n_steps", "enable_progress_bar", "val_every_n_epochs",
                "micro_batches")
_DATA_AS_IS = ("root", "download", "num_workers")


def segment_settings(genotype: Genotype, child: ChildConfig, data: DataConfig, seed: int) -> dict[str, Any]:
    """What a checkpoint must have been trained with to go on under these settings (plain data)."""
    return {"genotype": genotype.to_dict(), "seed": seed,
            "child": {k: v for k, v in asdict(child).items() if k not in _CHILD_AS_IS},
            "data": {k: v for k, v in asdict(data).items() if k not in _DATA_AS_IS}}


# --- the checkpoint envelope --------------------------------------------------------------------------------

def pack_checkpoint(runs: list[bytes], epochs: int, settings: Mapping[str, Any]) -> bytes:
    """The envelope around the Lightning checkpoints of a child's runs (one per repeat) after ``epochs``."""
    # As uint8 tensors: torch.save stores tensors raw (bytes would be pickled as text, half again larger).
    compressed = [torch.frombuffer(bytearray(zlib.compress(run, 1)), dtype=torch.uint8) for run in runs]
    buffer = io.BytesIO()
    torch.save({"format": _MAGIC, "version": SEGMENT_FORMAT, "cellsearch": cellsearch.__version__,
                "settings": dict(settings), "epochs": epochs,
                "sha256": [hashlib.sha256(run).hexdigest() for run in runs], "lightning": compressed}, buffer)
    return buffer.getvalue()


def read_checkpoint(blob: bytes, settings: Mapping[str, Any]) -> tuple[int, list[bytes]]:
    """The epochs trained and the Lightning checkpoints (one per run) in ``blob``; ConfigError (one line) when it is not
    an intact checkpoint of this format trained with ``settings``."""
    try:
        envelope = torch.load(io.BytesIO(blob), weights_only=True)
        if not isinstance(envelope, dict) or envelope.get("format") != _MAGIC:
            raise ValueError("no cellsearch segment envelope")
        runs = [zlib.decompress(run.numpy().tobytes()) for run in envelope["lightning"]]
    except Exception as err:  # pickle, zip and type errors alike: the bytes are not a checkpoint
        raise ConfigError(f"the Fidelity's checkpoint is not a cellsearch child checkpoint (corrupted or "
                          f"truncated: {type(err).__name__}); train the child again from scratch "
                          f"(Fidelity without a checkpoint)") from err
    if envelope["version"] != SEGMENT_FORMAT:
        raise ConfigError(f"the Fidelity's checkpoint has format {envelope['version']} (cellsearch "
                          f"{envelope['cellsearch']}), this cellsearch reads format {SEGMENT_FORMAT}: "
                          f"train the child again from scratch (Fidelity without a checkpoint)")
    if [hashlib.sha256(run).hexdigest() for run in runs] != envelope["sha256"]:
        raise ConfigError("the Fidelity's checkpoint is corrupted (its checksum does not match): train the "
                          "child again from scratch (Fidelity without a checkpoint)")
    differences = _differences(envelope["settings"], settings)
    if differences:
        raise ConfigError(f"the Fidelity's checkpoint was trained with other settings ({'; '.join(differences)}):"
                          f" continue a child with the settings it started with, or train it from scratch")
    return envelope["epochs"], runs


def _differences(then: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    if then["genotype"] != now["genotype"]:
        return ["it is of another cell (genotype)"]
    if then["seed"] != now["seed"]:
        return [f"seed {then['seed']}, now {now['seed']}"]
    return [f"{group}.{key}={then[group].get(key)!r}, now {now[group].get(key)!r}"
            for group in ("child", "data") for key in sorted(set(then[group]) | set(now[group]))
            if then[group].get(key) != now[group].get(key)][:3]


# --- training one segment -----------------------------------------------------------------------------------

class SegmentControl(pl.Callback):
    """Stops the full child's trainer after epoch ``stop_epochs``, and keeps the global random number
    generators (torch, CUDA, numpy, Python) in the trainer's checkpoint, restoring them when it resumes."""

    def __init__(self, stop_epochs: int) -> None:
        self.stop_epochs = stop_epochs

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch + 1 >= self.stop_epochs:  # current_epoch counts from 0 until this epoch ends
            trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        kind, keys, position, has_gauss, gauss = np.random.get_state()
        state = {"torch": torch.get_rng_state(), "numpy": (kind, keys.tolist(), position, has_gauss, gauss),
                 "python": random.getstate()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores callbacks after building the data and before the first batch is drawn.
        torch.set_rng_state(state_dict["torch"])
        kind, keys, position, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, gauss))
        version, internal, gauss_next = state_dict["python"]
        random.setstate((version, tuple(internal), gauss_next))
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


@dataclass
class Segment:
    """One segment of one run of a child, as :func:`~cellsearch.evaluators.child.evaluate_child` trains it:
    its callback, the Lightning checkpoint to resume from, and (once trained) the one to go on from."""

    stop_epochs: int
    max_epochs: int
    workdir: Path  # a private scratch folder: Lightning reads and writes checkpoints as files
    resume: bytes | None = None
    saved: bytes | None = None  # set by save(): the Lightning checkpoint to go on from (None once all epochs ran)

    def callbacks(self) -> list[pl.Callback]:
        return [SegmentControl(self.stop_epochs)]

    @property
    def resume_path(self) -> str | None:
        """The Lightning checkpoint to resume from, as a file (written on first use)."""
        if self.resume is None:
            return None
        path = self.workdir / "resume.ckpt"
        if not path.exists():
            path.write_bytes(self.resume)
        return str(path)

    def save(self, trainer: pl.Trainer) -> None:
        """After fitting: keep the Lightning checkpoint to go on from in ``saved`` (None once all epochs ran)."""
        if trainer.current_epoch != self.stop_epochs:
            raise RuntimeError(f"training stopped after epoch {trainer.current_epoch}, before epoch {self.stop_epochs}")
        if self.stop_epochs >= self.max_epochs:
            self.saved = None
            return
        path = self.workdir / "segment.ckpt"
        trainer.save_checkpoint(path)
        self.saved = path.read_bytes()


def train_segment(genotype: "Genotype | str", child: "ChildConfig | Mapping[str, Any]",
                  data: "DataConfig | Mapping[str, Any]", fidelity: Fidelity, seed: int = 0,
                  run_name: str = "child") -> EvalResult:
    """Train ``genotype``'s child up to ``fidelity.epochs`` epochs in all, going on from
    ``fidelity.checkpoint`` (None: from scratch), validating after every epoch.

    Returns:
        :func:`~cellsearch.evaluators.child.evaluate_child`'s result after that epoch (with ``child.repeats``
        > 1 the mean of the runs, each going on from its own state): its ``curve`` from epoch 1 on (seconds
        counted across segments), its ``seconds`` this segment's, and its ``checkpoint`` the state to go on
        from (None once ``child.epochs`` are trained). A child that fails in any segment comes back
        ``status='failed'`` with the reason.

    Raises:
        ConfigError: a fidelity beyond ``child.epochs`` or not above the checkpoint's epochs, or a checkpoint
            that is corrupted, of another format, cell or settings.
    """
    child, data, genotype = as_child_config(child), as_data_config(data), load_genotype(genotype)
    epochs = fidelity.epochs
    if isinstance(epochs, bool) or not isinstance(epochs, int) or not 1 <= epochs <= child.epochs:
        raise ConfigError(f"Fidelity(epochs={epochs!r}) is outside the child's 1 to {child.epochs} epochs "
                          f"(child.epochs)")
    settings = segment_settings(genotype, child, data, seed)
    trained, states = read_checkpoint(fidelity.checkpoint, settings) if fidelity.checkpoint \
        else (0, [None] * child.repeats)
    if epochs <= trained:
        raise ConfigError(f"Fidelity(epochs={epochs}) is not above the {trained} epochs its checkpoint has "
                          f"trained: ask for {trained + 1} to {child.epochs}")
    with tempfile.TemporaryDirectory(prefix="cellsearch-segment-") as workdir:
        segments = []
        for repeat, state in enumerate(states):  # one segment per run, each going on from its own state
            folder = Path(workdir) / f"run{repeat}"
            folder.mkdir()
            segments.append(Segment(epochs, child.epochs, folder, state))
        result = evaluate_child(genotype, replace(child, val_every_n_epochs=1), data, seed, run_name, segments)
    result.checkpoint = pack_checkpoint([s.saved for s in segments], epochs, settings) \
        if result.ok and epochs < child.epochs else None
    return result
