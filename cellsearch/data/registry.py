"""The datasets children train on, each described once by a :class:`DatasetSpec`.

Every fact about a dataset lives in its entry: how to read it, its default image size and held-out
validation size, whether its images may be flipped left-right, whether it fits in memory, and its
channels. ``data.name`` picks an entry; DataConfig's ``None`` settings resolve from it.

Adding a dataset is one reader function and one entry::

    from cellsearch.data import DatasetSpec, ImageArrays, RawDataset, register_dataset

    def read_testbed(config):                      # config: the DataConfig (config.root_path, ...)
        train = ImageArrays(images_uint8_nchw, labels_int64)
        test = ImageArrays(...)                    # may be empty: validation then holds out training images
        return RawDataset(train, test, num_classes=10)

    register_dataset(DatasetSpec("testbed", read_testbed, image_size=32, val_size=5000, flips=True))

then ``data=...`` with ``name: testbed`` (a conf/data/testbed.yaml of a few lines) trains on it. A
``prepare`` function, if given, checks or downloads files first and raises ConfigError with a fix.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from cellsearch.data.datasets import CIFAR10, CIFAR100, RawDataset, make_synthetic, open_image_folder, \
    prepare_imagefolder, read_digits, read_imagefolder
from cellsearch.validation import ConfigError

if TYPE_CHECKING:
    from cellsearch.data.config import DataConfig

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset's facts. ``val_size`` may be a function of the DataConfig (synthetic data's size is
    a setting); ``folder`` datasets (``root/train``, ``root/val``) can also stream from disk."""

    name: str
    read: Callable[["DataConfig"], RawDataset]  # the train and test arrays and the class count
    image_size: int  # default side in pixels (data.image_size=null)
    val_size: int | Callable[["DataConfig"], int]  # default training images held out for validation
    flips: bool  # a left-right flip keeps the class (natural images): data.flip's default
    in_chans: int | None = None  # None: set by the files or settings
    in_memory: bool = True  # default loader: tensor (whole dataset on the device), else dataloader
    prepare: Callable[["DataConfig"], None] | None = None  # check or download files; raise ConfigError
    open_folder: Callable[[Any, Any], Any] | None = None  # (split folder, transform) -> torch Dataset
    mean: tuple[float, ...] | None = None  # normalisation when streamed from disk (not measurable up front)
    std: tuple[float, ...] | None = None

    def default_val_size(self, config: "DataConfig") -> int:
        return self.val_size(config) if callable(self.val_size) else self.val_size


_REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Make ``spec`` available as ``data.name=<spec.name>``; a name is registered once."""
    if spec.name in _REGISTRY:
        raise ConfigError(f"dataset {spec.name!r} is registered already")
    _REGISTRY[spec.name] = spec
    return spec


def dataset_names() -> list[str]:
    """The registered dataset names, in registration order."""
    return list(_REGISTRY)


def dataset_spec(name: str) -> DatasetSpec:
    """The entry for ``name``; a ConfigError naming the choices if there is none."""
    if name not in _REGISTRY:
        raise ConfigError(f"data.name must be one of {dataset_names()}, got {name!r} (set data.name=...)")
    return _REGISTRY[name]


register_dataset(DatasetSpec("cifar10", CIFAR10.read, image_size=32, val_size=5000, flips=True, in_chans=3,
                             prepare=CIFAR10.prepare))
register_dataset(DatasetSpec("cifar100", CIFAR100.read, image_size=32, val_size=5000, flips=True, in_chans=3,
                             prepare=CIFAR100.prepare))
register_dataset(DatasetSpec("digits", read_digits, image_size=8, val_size=300, flips=False, in_chans=1))
register_dataset(DatasetSpec("synthetic", make_synthetic, image_size=16, flips=False,
                             val_size=lambda config: config.synthetic_train_size // 5))
register_dataset(DatasetSpec("imagefolder", read_imagefolder, image_size=32, val_size=0, flips=True, in_chans=3,
                             in_memory=False, prepare=prepare_imagefolder, open_folder=open_image_folder,
                             mean=IMAGENET_MEAN, std=IMAGENET_STD))
