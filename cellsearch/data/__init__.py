"""Data for child training: CIFAR-10/100, any ImageFolder, scikit-learn's digits, synthetic images.

One module per concern:

- :mod:`~cellsearch.data.registry`: the datasets, each one's facts in one :class:`DatasetSpec` entry
  (and how to add one); :mod:`~cellsearch.data.datasets`: the built-in readers.
- :mod:`~cellsearch.data.config`: :class:`DataConfig`, the ``data`` settings and their checks.
- :mod:`~cellsearch.data.splits`: the held-out validation split and :func:`describe_dataset`.
- :mod:`~cellsearch.data.augment`: crop, flip and cutout, on batches or as torchvision transforms.
- :mod:`~cellsearch.data.loaders`: the on-device :class:`TensorLoader` and :class:`ImageDataModule`.
"""
from cellsearch.data.arrays import ImageArrays, channel_stats, resize_images
from cellsearch.data.augment import Cutout, cutout, random_crop, random_flip, torchvision_transforms
from cellsearch.data.config import LOADERS, DataConfig, as_data_config
from cellsearch.data.datasets import RawDataset
from cellsearch.data.loaders import ArrayImageDataset, ImageDataModule, TensorLoader
from cellsearch.data.registry import IMAGENET_MEAN, IMAGENET_STD, DatasetSpec, dataset_names, dataset_spec, \
    register_dataset
from cellsearch.data.splits import DatasetInfo, DatasetSplits, describe_dataset, load_splits, prepare_dataset, \
    split_indices
from cellsearch.validation import ConfigError, dataclass_from_config

__all__ = [
    "ArrayImageDataset", "ConfigError", "Cutout", "DataConfig", "DatasetInfo", "DatasetSpec", "DatasetSplits",
    "IMAGENET_MEAN", "IMAGENET_STD", "ImageArrays", "ImageDataModule", "LOADERS", "RawDataset", "TensorLoader",
    "as_data_config", "channel_stats", "cutout", "dataclass_from_config", "dataset_names", "dataset_spec",
    "describe_dataset", "load_splits", "prepare_dataset", "random_crop", "random_flip", "register_dataset",
    "resize_images", "split_indices", "torchvision_transforms",
]
