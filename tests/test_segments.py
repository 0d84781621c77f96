"""A child trained in segments (early stopping's fidelity) is the child trained in one go, bit for bit on the
CPU; bad fidelities and checkpoints are refused in one line; a child failing in a later segment is recorded."""
from __future__ import annotations

import io
import zlib
from dataclasses import replace

import pytest
import torch

from cellsearch.data import DataConfig
from cellsearch.evaluators.base import Fidelity
from cellsearch.evaluators.child import ChildConfig, evaluate_child
from cellsearch.evaluators.segments import SEGMENT_FORMAT, pack_checkpoint, segment_settings, train_segment
from cellsearch.evaluators.standalone import TrainEvaluator
from cellsearch.space.genotype import load_genotype
from cellsearch.validation import ConfigError

# Everything that draws on a random number generator or carries state across epochs is on: random crops and
# cutout (the loader's pass number), scheduled drop path (the global RNG), the weight average, momentum and
# the cosine schedule.
DATA = DataConfig(name="synthetic", synthetic_train_size=128, synthetic_test_size=32, image_size=8, val_size=32,
                  crop_padding=1, flip=True, cutout=2)
CHILD = ChildConfig(cells_per_stage=1, channels=4, epochs=3, batch_size=32, logger=None, accelerator="cpu",
                    ema_decay=0.9, drop_path_rate=0.3)
GENOTYPE = load_genotype("nasnet_a")


def lightning_state(checkpoint: bytes) -> dict:
    envelope = torch.load(io.BytesIO(checkpoint), weights_only=True)
    return torch.load(io.BytesIO(zlib.decompress(envelope["lightning"][0].numpy().tobytes())), weights_only=False)


def assert_same_training_state(a: dict, b: dict) -> None:
    for key in ("state_dict", "optimizer_states", "lr_schedulers", "callbacks", "ImageDataModule", "epoch",
                "global_step"):
        assert_identical(a[key], b[key], key)


def assert_identical(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        if "CurveRecorder" in where:
            return  # clocks differ from run to run
        assert a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_segments_add_up_to_the_child_trained_in_one_go():
    whole = evaluate_child(GENOTYPE, CHILD, DATA, seed=3)  # validated once, at the end: as a search without fidelity
    evaluator = TrainEvaluator(CHILD, DATA)
    assert evaluator.max_epochs == 3
    segments, checkpoint = [], None
    for epochs in (1, 2, 3):
        segments.append(evaluator.evaluate(GENOTYPE, trial_id=1, seed=3, fidelity=Fidelity(epochs, checkpoint)))
        assert segments[-1].ok, segments[-1].error
        checkpoint = segments[-1].checkpoint
    first, second, last = segments
    assert first.checkpoint and second.checkpoint and last.checkpoint is None  # none once all epochs are trained
    assert [p.epoch for p in first.curve] == [1] and [p.epoch for p in last.curve] == [1, 2, 3]
    assert last.curve[:2] == second.curve  # the earlier segments' points come back as they were
    assert 0 < last.curve[0].cpu_seconds < last.curve[1].cpu_seconds < last.curve[2].cpu_seconds
    assert last.metrics["train_loss"] == whole.metrics["train_loss"]  # float32 means of the last epoch: bit for bit
    assert last.metrics["val_accuracy"] == whole.metrics["val_accuracy"]

    # Every piece of state after epoch 2: two segments (0 -> 1 -> 2) against one (0 -> 2).
    straight = evaluator.evaluate(GENOTYPE, trial_id=1, seed=3, fidelity=Fidelity(2))
    assert_same_training_state(lightning_state(second.checkpoint), lightning_state(straight.checkpoint))
    assert [p.train_loss for p in second.curve] == [p.train_loss for p in straight.curve]


def test_repeated_children_go_on_run_by_run():
    child = replace(CHILD, epochs=2, repeats=2, ema_decay=0.0)
    whole = evaluate_child(GENOTYPE, child, DATA, seed=5)
    first = train_segment(GENOTYPE, child, DATA, Fidelity(1), seed=5)
    last = train_segment(GENOTYPE, child, DATA, Fidelity(2, first.checkpoint), seed=5)
    assert first.ok and last.ok and last.checkpoint is None, (first.error, last.error)
    for key in ("val_accuracy", "val_accuracy_std", "train_loss", "repeats"):
        assert last.metrics[key] == whole.metrics[key], key
    assert [p.epoch for p in last.curve] == [1, 2]  # the mean of the runs' curves


@pytest.fixture(scope="module")
def after_one_epoch() -> bytes:
    result = train_segment(GENOTYPE, CHILD, DATA, Fidelity(1), seed=0)
    assert result.ok, result.error
    return result.checkpoint


def _repacked(checkpoint: bytes, **changes) -> bytes:
    envelope = torch.load(io.BytesIO(checkpoint), weights_only=True)
    envelope.update(changes)
    buffer = io.BytesIO()
    torch.save(envelope, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("change, message", [
    (dict(fidelity=Fidelity(4)), r"Fidelity\(epochs=4\) is outside the child's 1 to 3 epochs \(child.epochs\)"),
    (dict(fidelity=Fidelity(0)), r"Fidelity\(epochs=0\) is outside"),
    (dict(epochs=1), r"Fidelity\(epochs=1\) is not above the 1 epochs its checkpoint has trained: ask for 2 to 3"),
    (dict(child=replace(CHILD, repeats=2)), r"other settings \(child.repeats=1, now 2\)"),
    (dict(child=replace(CHILD, lr=0.1)), r"other settings \(child.lr=0.05, now 0.1\)"),
    (dict(data=replace(DATA, cutout=0)), r"other settings \(data.cutout=2, now 0\)"),
    (dict(seed=1), r"other settings \(seed 0, now 1\)"),
    (dict(genotype=load_genotype("darts_v2")), r"it is of another cell"),
    (dict(corrupt=lambda blob: blob[: len(blob) // 2]), r"not a cellsearch child checkpoint \(corrupted or truncated"),
    (dict(corrupt=lambda blob: b"not a checkpoint"), r"not a cellsearch child checkpoint"),
    (dict(corrupt=lambda blob: _repacked(blob, version=SEGMENT_FORMAT + 1)),
     rf"has format {SEGMENT_FORMAT + 1} \(cellsearch .*\), this cellsearch reads format {SEGMENT_FORMAT}"),
    (dict(corrupt=lambda blob: _repacked(blob, sha256=["0" * 64])), r"corrupted \(its checksum does not match\)"),
])
def test_bad_fidelities_and_checkpoints_are_refused_in_one_line(after_one_epoch, change, message):
    checkpoint = change.get("corrupt", lambda blob: blob)(after_one_epoch)
    fidelity = change.get("fidelity", Fidelity(change.get("epochs", 2), checkpoint))
    with pytest.raises(ConfigError, match=message) as error:
        train_segment(change.get("genotype", GENOTYPE), change.get("child", CHILD), change.get("data", DATA), fidelity,
                      seed=change.get("seed", 0))
    assert "\n" not in str(error.value)


def test_a_child_failing_in_a_later_segment_is_recorded_as_failed(after_one_epoch):
    # The child's weights went bad after its first segment (NaN): the next segment diverges and says so.
    state = lightning_state(after_one_epoch)
    weight = next(key for key in state["state_dict"] if key.endswith("weight"))
    state["state_dict"][weight].fill_(float("nan"))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    poisoned = pack_checkpoint([buffer.getvalue()], 1, segment_settings(GENOTYPE, CHILD, DATA, 0))
    result = train_segment(GENOTYPE, CHILD, DATA, Fidelity(2, poisoned), seed=0)
    assert result.status == "failed" and "diverged" in result.error and result.checkpoint is None
