"""The testbed dataset: generated offline, the same on every call, balanced, and trainable as data=testbed."""
import pytest
import torch

from cellsearch.data import DataConfig
from cellsearch.data.splits import describe_dataset, load_splits
from cellsearch.data.testbed import SHAPES, TESTBED_CLASSES, make_testbed
from cellsearch.evaluators.child import evaluate_child
from cellsearch.space.network import CellNetCifar
from cellsearch.space.profile import count_params
from cellsearch.validation import ConfigError


def test_the_generator_is_deterministic_balanced_and_sized():
    first = make_testbed(200, 50, seed=3)
    again = make_testbed(200, 50, seed=3)
    other = make_testbed(200, 50, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])
    train_images, train_labels, test_images, test_labels = first
    assert train_images.shape == (200, 1, 12, 12) and train_images.dtype == torch.uint8
    assert test_images.shape == (50, 1, 12, 12) and not torch.equal(train_images[:50], test_images)
    assert torch.bincount(train_labels, minlength=TESTBED_CLASSES).tolist() == [20] * TESTBED_CLASSES
    assert TESTBED_CLASSES == 2 * len(SHAPES)
    assert make_testbed(10, 10, image_size=16)[0].shape[-1] == 16
    with pytest.raises(ConfigError, match="at least 11 pixels"):
        make_testbed(10, 10, image_size=8)


def test_data_testbed_is_a_registered_in_memory_dataset():
    config = DataConfig(name="testbed", crop_padding=0)
    info = describe_dataset(config)
    assert (info.num_classes, info.in_chans, info.image_size, info.train_size, info.val_size) == (10, 1, 12, 2000, 3000)
    splits = load_splits(config)
    assert len(splits.test) == 2000 and not config.resolved_flip


def test_a_tiny_child_trains_on_the_testbed(tmp_path):
    child = dict(cells_per_stage=1, channels=4, epochs=1, batch_size=64, accelerator="cpu", logger=None,
                 compile=False)
    data = dict(name="testbed", crop_padding=0, train_subset=256, val_subset=256)
    result = evaluate_child("nasnet_a", child, data, seed=0)
    assert result.ok, result.error
    assert (result.metrics["val_accuracy"] * 256).is_integer()  # a share of the 256 validation images
    assert result.metrics["params"] == count_params(CellNetCifar("nasnet_a", cells_per_stage=1, channels=4,
                                                                 num_classes=TESTBED_CLASSES, in_chans=1))
