"""Ways of training one child that must not change its result: micro-batches (and the retry of a child
that ran out of memory with them), and the device-resident data path against torchvision's loader."""
from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from cellsearch.data import DataConfig
from cellsearch.evaluators.child import ChildConfig, ChildModule, build_training, evaluate_child, quiet_lightning
from cellsearch.evaluators.memory import OOM_ERROR_PREFIX, micro_batches_after_oom

DATA = DataConfig(name="synthetic", synthetic_train_size=256, synthetic_test_size=16, image_size=16, val_size=32)


class FirstStepGradients(pl.Callback):
    """Keeps the gradients the optimizer is about to apply (after accumulation), and can freeze the
    batch-norm statistics (eval mode) so that every micro-batch is normalised alike."""

    def __init__(self, freeze_batch_norm: bool):
        self.freeze_batch_norm = freeze_batch_norm
        self.gradients: torch.Tensor | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch, batch_idx: int) -> None:
        if self.freeze_batch_norm:
            for layer in module.modules():
                if isinstance(layer, torch.nn.BatchNorm2d):
                    layer.eval()

    def on_before_optimizer_step(self, trainer: pl.Trainer, module: pl.LightningModule, optimizer) -> None:
        if self.gradients is None:
            self.gradients = torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None])


def first_step_gradients(micro_batches: int, freeze_batch_norm: bool) -> torch.Tensor:
    child = ChildConfig(cells_per_stage=1, channels=8, epochs=1, batch_size=64, micro_batches=micro_batches,
                        grad_clip=0.0, limit_train_batches=1, limit_val_batches=1, logger=None)
    grab = FirstStepGradients(freeze_batch_norm)
    with quiet_lightning():
        trainer, module, datamodule = build_training("nasnet_a", child, DATA, seed=0, checkpointing=False,
                                                     callbacks=[grab])
        trainer.fit(module, datamodule=datamodule)
    return grab.gradients


def test_micro_batches_accumulate_the_gradient_of_the_whole_batch():
    # With batch-norm statistics frozen, the accumulated gradient is the whole batch's (float32 sums in
    # another order: 1e-5 relative).
    whole = first_step_gradients(1, freeze_batch_norm=True)
    for micro_batches in (2, 4):
        split = first_step_gradients(micro_batches, freeze_batch_norm=True)
        assert ((split - whole).norm() / whole.norm()).item() < 1e-5
    # Training normally, each micro-batch is normalised by its own statistics: the one difference, and
    # a small one (cosine 0.92 measured for batch 64 in two micro-batches of 32).
    whole, split = first_step_gradients(1, False), first_step_gradients(2, False)
    assert torch.nn.functional.cosine_similarity(whole, split, dim=0).item() > 0.8


def test_micro_batches_must_divide_the_batch():
    with pytest.raises(Exception, match="must divide child.batch_size"):
        ChildConfig(batch_size=64, micro_batches=3)
    assert micro_batches_after_oom(128, 1) == 4 and micro_batches_after_oom(6, 1) == 2
    assert micro_batches_after_oom(7, 1) is None


@pytest.fixture
def memory_limit(monkeypatch):
    """Makes a training step run out of GPU memory when its batch holds more than ``limit[0]`` images
    (what a child beside others on a full GPU meets), counting the steps that did."""
    limit, failures = [10 ** 9], []
    step = ChildModule.training_step

    def limited_step(self, batch, batch_idx):
        if len(batch[0]) > limit[0]:
            failures.append(len(batch[0]))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return step(self, batch, batch_idx)

    monkeypatch.setattr(ChildModule, "training_step", limited_step)
    return limit, failures


def test_a_child_out_of_memory_is_retried_once_with_micro_batches(memory_limit):
    limit, failures = memory_limit
    child = ChildConfig(cells_per_stage=1, channels=4, epochs=1, batch_size=32, logger=None)
    limit[0] = 8  # the whole batch of 32 does not fit, micro-batches of 8 do
    result = evaluate_child("nasnet_a", child, DATA)
    assert result.ok, result.error
    assert result.metrics["micro_batches"] == 4 and result.metrics["oom_retried"] == 1
    assert failures == [32]
    limit[0] = 4  # does not fit even then: recorded as failed after one retry
    result = evaluate_child("nasnet_a", child, DATA)
    assert not result.ok and result.error.startswith(OOM_ERROR_PREFIX) and "Tried to allocate" in result.error
    assert failures == [32, 32, 8]


@pytest.mark.slow
def test_device_resident_data_path_reaches_the_accuracy_of_the_dataloader_path():
    """The tensor loader (uint8 data on the device, augmented there in batches) against torchvision's
    DataLoader pipeline, same child and seed, on scikit-learn's digits. Over seeds 0-2 both gave
    0.95-0.99 (the largest gap between any two runs: 0.033), so a gap of 0.05 is beyond noise."""
    child = ChildConfig(cells_per_stage=1, channels=8, epochs=4, batch_size=64, lr=0.05, logger=None)
    accuracy = {loader: evaluate_child("nasnet_a", child, DataConfig(name="digits", loader=loader, num_workers=0),
                                       seed=0).metrics["val_accuracy"]
                for loader in ("tensor", "dataloader")}
    assert min(accuracy.values()) > 0.9, accuracy  # both learn (chance: 0.1)
    assert abs(accuracy["tensor"] - accuracy["dataloader"]) < 0.05, accuracy
