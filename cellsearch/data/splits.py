"""Train / validation / test splits of a dataset, and the facts a model needs about them.

Every dataset has a train and a test split; the validation split that rewards children is held out
from the training images (``data.val_size``) with a fixed ``data.split_seed``, so every child is judged
on the same images. ``val_size=0`` validates on the test split instead (final retraining).
"""
from __future__ import annotations

import functools
from dataclasses import astuple, dataclass, replace

import torch

from cellsearch.data.arrays import ImageArrays, channel_stats, resize_images
from cellsearch.data.config import DataConfig
from cellsearch.data.datasets import RawDataset
from cellsearch.validation import ConfigError

# Settings that only choose among the images read, or how they are fed: reading ignores them.
_NOT_READ = ("val_size", "loader", "num_workers", "crop_padding", "flip", "cutout", "train_subset", "val_subset")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about the data: classes, channels, image size, split sizes."""

    name: str
    num_classes: int
    in_chans: int
    image_size: int
    train_size: int
    val_size: int

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (self.in_chans, self.image_size, self.image_size)


@dataclass(frozen=True)
class DatasetSplits:
    """Train, validation and test arrays of an in-memory dataset, with normalisation statistics."""

    train: ImageArrays
    val: ImageArrays
    test: ImageArrays
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def prepare_dataset(config: DataConfig) -> None:
    """Make sure the dataset's files are there (downloading them if allowed); raise ConfigError if not."""
    if config.spec.prepare is not None:
        config.spec.prepare(config)


def split_indices(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training and validation indices of ``n`` images: a random ``val_size`` held out, fixed by ``seed``."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[val_size:], order[:val_size]


@functools.lru_cache(maxsize=2)
def _read(values: tuple) -> RawDataset:
    """Cached: a process that trains many children reads the files once."""
    config = DataConfig(*values)
    raw = config.spec.read(config)
    for split, arrays in (("training", raw.train), ("test", raw.test)):
        if len(arrays) and not 0 <= int(arrays.labels.min()) <= int(arrays.labels.max()) < raw.num_classes:
            raise ConfigError(f"{config.name} in {config.root_path}: {split} labels outside 0..{raw.num_classes - 1}")
    if len(raw.train) == 0:
        raise ConfigError(f"{config.name} in {config.root_path}: the training split is empty")
    size = config.resolved_image_size
    return RawDataset(ImageArrays(resize_images(raw.train.images, size), raw.train.labels),
                      ImageArrays(resize_images(raw.test.images, size), raw.test.labels), raw.num_classes)


def load_splits(config: DataConfig) -> DatasetSplits:
    """Train / validation / test arrays of an in-memory dataset (any dataset with the tensor loader)."""
    prepare_dataset(config)
    return _load_splits(astuple(config))


@functools.lru_cache(maxsize=2)
def _load_splits(values: tuple) -> DatasetSplits:
    """Cached on every setting: the children of a search share one split of one dataset."""
    config = DataConfig(*values)
    defaults = DataConfig(name=config.name)
    raw = _read(astuple(replace(config, **{key: getattr(defaults, key) for key in _NOT_READ})))
    train, test = raw.train, raw.test
    val_size = config.resolved_val_size
    if val_size >= len(train):
        raise ConfigError(f"data.val_size={val_size} leaves no training images: the {config.name} training split "
                          f"has {len(train)}")
    if val_size > 0:
        train_idx, val_idx = split_indices(len(train), val_size, config.split_seed)
        train, val = train.take(train_idx), train.take(val_idx)
    else:
        if len(test) == 0:
            raise ConfigError(f"data.val_size is 0 but {config.name} has no test split to validate on")
        val = test
    if config.train_subset:
        train = train.take(torch.arange(min(config.train_subset, len(train))))
    if config.val_subset:
        val = val.take(torch.arange(min(config.val_subset, len(val))))
    mean, std = channel_stats(train.images)
    return DatasetSplits(train, val, test, raw.num_classes, mean, std)


def describe_dataset(config: DataConfig) -> DatasetInfo:
    """Check that the dataset is usable with these settings and describe it; raises ConfigError."""
    if config.streams_from_disk:
        prepare_dataset(config)
        spec, root = config.spec, config.root_path
        dataset = spec.open_folder(root / "train", None)
        val_size = config.resolved_val_size
        if val_size >= len(dataset):
            raise ConfigError(f"data.val_size={val_size} leaves no training images: {root / 'train'} "
                              f"has {len(dataset)}")
        train_size = len(dataset) - val_size
        if val_size == 0:
            val_size = len(spec.open_folder(root / "val", None))
        in_chans = spec.in_chans or 3  # torchvision's image loader converts every image to RGB
        return DatasetInfo(config.name, len(dataset.classes), in_chans, config.resolved_image_size,
                           min(train_size, config.train_subset or train_size),
                           min(val_size, config.val_subset or val_size))
    splits = load_splits(config)
    return DatasetInfo(config.name, splits.num_classes, splits.train.images.shape[1], config.resolved_image_size,
                       len(splits.train), len(splits.val))
