"""Child training: rewards, sizes, failures recorded, configuration errors raised, retraining features."""
from __future__ import annotations

import time
from dataclasses import replace

import pytest
import torch

from cellsearch.evaluators.child import (
    ChildConfig,
    ChildModule,
    ConfigError,
    as_child_config,
    build_training,
    evaluate_child,
)
from cellsearch.data import DataConfig
from cellsearch.evaluators.base import EpochPoint
from cellsearch.evaluators.curve import mean_curve
from cellsearch.space.genotype import Block, Cell, Genotype, load_genotype
from cellsearch.space.network import CellNetCifar
from cellsearch.space.profile import count_mult_adds, count_params

TINY_DATA = DataConfig(name="synthetic", synthetic_train_size=192, synthetic_test_size=32, image_size=8, val_size=64)
TINY_CHILD = dict(cells_per_stage=1, channels=4, epochs=2, batch_size=32, logger=None)


def unknown_op_genotype() -> Genotype:
    """A genotype that passes the dataclass constructor but names an op no registry has."""
    nasnet = load_genotype("nasnet_a")
    normal = Cell(blocks=(Block(inputs=(0, 1), ops=("no_such_op", "identity")),), concat=(2,))
    return Genotype(normal, nasnet.reduce)


def test_child_reports_reward_size_time_and_curve_and_logs_csv(tmp_path):
    child = ChildConfig(**{**TINY_CHILD, "logger": "csv", "log_dir": str(tmp_path), "val_every_n_epochs": 1})
    result = evaluate_child("nasnet_a", child, TINY_DATA, seed=0, run_name="trial_00007")
    assert result.status == "ok" and result.error == ""
    assert [p.epoch for p in result.curve] == [1, 2]  # one point per validated epoch
    assert result.curve[-1].val_accuracy == result.metrics["val_accuracy"]
    assert result.curve[-1].train_loss == result.metrics["train_loss"]
    assert all((p.val_accuracy * 64).is_integer() and p.train_loss > 0 for p in result.curve)
    assert 0 < result.curve[0].seconds < result.curve[1].seconds <= result.seconds
    assert 0 < result.curve[0].cpu_seconds < result.curve[1].cpu_seconds
    assert (result.metrics["val_accuracy"] * 64).is_integer()  # a share of the 64 validation images
    assert result.metrics["train_loss"] > 0
    reference = CellNetCifar("nasnet_a", cells_per_stage=1, channels=4, num_classes=10, in_chans=3)
    assert result.metrics["params"] == count_params(reference)
    assert result.metrics["mult_adds"] == count_mult_adds(reference, input_size=(3, 8, 8))
    assert result.seconds > 0
    metrics = list((tmp_path / "trial_00007").glob("version_*/metrics.csv"))
    assert len(metrics) == 1 and "val_acc" in metrics[0].read_text()


def test_same_seed_same_reward():
    child = ChildConfig(**TINY_CHILD)
    assert evaluate_child("nasnet_a", child, TINY_DATA, seed=3).metrics == evaluate_child(
        "nasnet_a", child, TINY_DATA, seed=3).metrics


def test_repeats_report_the_mean_and_spread_of_consecutive_seeds():
    single = ChildConfig(**{**TINY_CHILD, "val_every_n_epochs": 1})
    runs = [evaluate_child("nasnet_a", single, TINY_DATA, seed=s) for s in (3, 4)]
    repeated = evaluate_child("nasnet_a", replace(single, repeats=2), TINY_DATA, seed=3)
    for epoch, point in enumerate(repeated.curve, start=1):  # the per-epoch mean of the two runs' curves
        assert point.epoch == epoch
        assert point.val_accuracy == pytest.approx(sum(r.curve[epoch - 1].val_accuracy for r in runs) / 2, abs=1e-12)
        assert point.train_loss == pytest.approx(sum(r.curve[epoch - 1].train_loss for r in runs) / 2, abs=1e-12)
    assert len(repeated.curve) == 2 and repeated.curve[-1].val_accuracy == pytest.approx(
        repeated.metrics["val_accuracy"], abs=1e-12)
    accuracies = torch.tensor([r.metrics["val_accuracy"] for r in runs], dtype=torch.float64)
    assert repeated.ok and repeated.metrics["repeats"] == 2
    assert repeated.metrics["val_accuracy"] == pytest.approx(float(accuracies.mean()), abs=1e-12)
    assert repeated.metrics["val_accuracy_std"] == pytest.approx(float(accuracies.std()), abs=1e-12)
    assert repeated.metrics["params"] == runs[0].metrics["params"]


def test_child_learns_synthetic_data():
    child = ChildConfig(**{**TINY_CHILD, "epochs": 6, "batch_size": 16})
    result = evaluate_child("nasnet_a", child, TINY_DATA)
    assert result.status == "ok" and result.metrics["val_accuracy"] > 0.5, result  # chance is 0.1


@pytest.mark.slow
def test_nasnet_proxy_child_learns_digits_on_cpu():
    """NASNet-A proxy child (N=2) on scikit-learn's digits: far above chance (its time is printed, not
    asserted: timings belong in benchmarks/)."""
    child = ChildConfig(cells_per_stage=2, channels=8, epochs=3, batch_size=32, lr=0.05, logger=None)
    start = time.perf_counter()
    result = evaluate_child("nasnet_a", child, DataConfig(name="digits"), seed=0)
    seconds = time.perf_counter() - start
    print(f"digits: val accuracy {result.metrics['val_accuracy']:.3f} in {seconds:.1f} s, "
          f"{result.metrics['params']} params, {result.metrics['mult_adds']} mult-adds")
    assert result.status == "ok", result.error
    assert result.metrics["val_accuracy"] > 0.7


def test_diverging_child_is_recorded_as_failed():
    child = ChildConfig(**{**TINY_CHILD, "lr": 1e30, "grad_clip": 0.0})
    result = evaluate_child("nasnet_a", child, TINY_DATA)
    assert result.status == "failed" and result.metric("val_accuracy") is None
    assert "ChildDiverged" in result.error and "NaN" in result.error
    reference = CellNetCifar("nasnet_a", cells_per_stage=1, channels=4, num_classes=10, in_chans=3)
    assert result.metric("params") == count_params(reference)  # measured before training


def test_child_that_raises_is_recorded_as_failed():
    result = evaluate_child(unknown_op_genotype(), ChildConfig(**TINY_CHILD), TINY_DATA)
    assert result.status == "failed" and result.metric("val_accuracy") is None
    assert "no_such_op" in result.error


@pytest.mark.parametrize("child, data, match", [
    (dict(accelerator="nonsense"), {}, "invalid trainer settings"),
    (dict(strategy="no_such_strategy"), {}, "invalid trainer settings"),
    ({}, dict(name="cifar10", root="/nonexistent/cellsearch-data", download=False), "cifar-10-batches-py"),
])
def test_configuration_errors_raise_instead_of_failing_the_child(child, data, match):
    data_config = DataConfig(**data) if data else TINY_DATA
    with pytest.raises(ConfigError, match=match):
        evaluate_child("nasnet_a", ChildConfig(**{**TINY_CHILD, **child}), data_config)


@pytest.mark.parametrize("settings, message", [
    (dict(epochs=0), "child.epochs must be an integer >= 1, got 0 (set child.epochs=...)"),
    (dict(repeats=0), "child.repeats must be an integer >= 1, got 0 (set child.repeats=...)"),
    (dict(batch_size=True), "child.batch_size must be an integer >= 1, got True (set child.batch_size=...)"),
    (dict(lr=-0.1), "child.lr must be a number > 0, got -0.1 (set child.lr=...)"),
    (dict(lr=0), "child.lr must be a number > 0, got 0 (set child.lr=...)"),
    (dict(lr=0.01, lr_min=0.1), "child.lr_min must be at most child.lr (0.01), got 0.1 (set child.lr_min=...)"),
    (dict(drop_path_rate=1.0), "child.drop_path_rate must be a number >= 0 and < 1, got 1.0"),
    (dict(ema_decay=1.0), "child.ema_decay must be a number >= 0 and < 1, got 1.0"),
    (dict(epochs=10, val_every_n_epochs=3), "child.val_every_n_epochs must be a divisor of child.epochs (10)"),
    (dict(limit_train_batches=1.5), "child.limit_train_batches must be a fraction in (0, 1] or a number of "
                                    "batches >= 1, got 1.5"),
    (dict(logger="wandb"), "child.logger must be one of ['csv', 'tensorboard'] or null, got 'wandb'"),
    (dict(compile="yes"), "child.compile must be true, false or null (automatic), got 'yes'"),
])
def test_bad_child_settings_are_refused_in_one_line_naming_the_key(settings, message):
    with pytest.raises(ConfigError) as info:
        ChildConfig(**settings)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_weight_average_is_what_is_validated_and_only_the_trained_weights_are_optimised():
    child = ChildConfig(**{**TINY_CHILD, "ema_decay": 0.5})
    trainer, module, datamodule = build_training("nasnet_a", child, TINY_DATA, seed=0, checkpointing=False)
    trainer.fit(module, datamodule=datamodule)
    optimised = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimised == {id(p) for p in module.model.parameters()}
    averaged, trained = module.final_model.state_dict(), module.model.state_dict()
    assert averaged.keys() == trained.keys()
    assert not all(torch.equal(averaged[k], trained[k]) for k in trained)  # an average, not a copy
    module.final_model.eval()
    correct = seen = 0
    with torch.no_grad():
        for x, y in datamodule.val_dataloader():
            correct += int((module.final_model(x).argmax(1) == y).sum())
            seen += len(y)
    assert module.val_accuracy == correct / seen
    plain = evaluate_child("nasnet_a", ChildConfig(**TINY_CHILD), TINY_DATA, seed=0).metrics
    assert evaluate_child("nasnet_a", child, TINY_DATA, seed=0).metrics["params"] == plain["params"]


def test_child_config_from_a_mapping():
    assert as_child_config({"_target_": "cellsearch.evaluators.child.ChildConfig", "epochs": 3}) == ChildConfig(epochs=3)
    with pytest.raises(ConfigError, match="unknown child setting"):
        as_child_config({"epoch": 3})


def test_retraining_with_regularisers_checkpoints_and_rebuilds(tmp_path):
    """Aux head, scheduled drop path, label smoothing, cutout, bf16, tensorboard, checkpoint -> model."""
    child = ChildConfig(**{**TINY_CHILD, "epochs": 2, "auxiliary_weight": 0.4, "drop_path_rate": 0.3,
                           "label_smoothing": 0.1, "precision": "bf16-mixed", "logger": "tensorboard",
                           "log_dir": str(tmp_path), "val_every_n_epochs": 1, "channels_last": True})
    data = DataConfig(**{**TINY_DATA.__dict__, "val_size": 0, "cutout": 4})
    trainer, module, datamodule = build_training("darts_v2", child, data, seed=0)
    assert module.model.aux_head is not None
    trainer.fit(module, datamodule=datamodule)
    # drop path ramps linearly: the last epoch (1 of 2) trains at half the final rate in the last cell
    assert module.model.cells[-1].drop_prob == pytest.approx(0.3 * 1 / 2)
    assert "val_acc" in trainer.callback_metrics
    test_metrics = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    assert (test_metrics["test_acc"] * 32).is_integer()  # a share of the 32 test images
    assert list(tmp_path.glob("retrain/version_0/events.out.tfevents.*"))
    checkpoints = tmp_path / "retrain" / "version_0" / "checkpoints"
    checkpoint = checkpoints / "last.ckpt"
    assert checkpoint.is_file() and len(list(checkpoints.glob("best-epoch*.ckpt"))) == 1
    assert torch.load(checkpoint, weights_only=False)["global_step"] == trainer.global_step
    restored = ChildModule.load_from_checkpoint(checkpoint, map_location="cpu")
    assert restored.model.genotype == load_genotype("darts_v2")
    assert restored.hparams.genotype == load_genotype("darts_v2").to_dict()
    for (name, a), b in zip(module.model.state_dict().items(), restored.model.state_dict().values()):
        assert torch.equal(a.cpu(), b), name


def test_the_mean_curve_averages_the_epochs_every_run_validated():
    first = [EpochPoint(1, 0.25, 2.0, 1.0, 2.0), EpochPoint(2, 0.5, 1.0, 2.0, 4.0)]
    second = [EpochPoint(2, 0.75, None, 4.0, 6.0)]  # validated at epoch 2 only, no loss logged
    assert mean_curve([first, first]) == first
    assert mean_curve([first, second]) == [EpochPoint(2, 0.625, None, 3.0, 5.0)]
