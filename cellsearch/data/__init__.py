"""Data for child training: CIFAR-10/100, any ImageFolder, scikit-learn's digits, synthetic images.

One module per concern:

- :mod:`~cellsearch.data.registry`: the datasets, each one's facts in one :class:`DatasetSpec` entry
  (and how to add one); :mod:`~cellsearch.data.datasets`: the built-in readers.
- :mod:`~cellsearch.data.config`: :class:`DataConfig`, the ``data`` settings and their checks.
- :mod:`~cellsearch.data.splits`: the held-out validation split and :func:`describe_dataset`.
- :mod:`~cellsearch.data.augment`: crop, flip and cutout, on batches or as torchvision transforms.
- :mod:`~cellsearch.data.loaders`: the on-device :class:`TensorLoader` and :class:`ImageDataModule`.
"""
from __future__ import annotations

from cellsearch._lazy import lazy_attributes
from cellsearch.validation import ConfigError, dataclass_from_config

# Imported when first used: importing DataConfig (the ``data`` schema that the ``cellsearch`` command
# composes) must not load torch and Lightning.
_SUBMODULES = {
    "arrays": ["ImageArrays", "channel_stats", "resize_images"],
    "augment": ["Cutout", "cutout", "random_crop", "random_flip", "torchvision_transforms"],
    "config": ["LOADERS", "DataConfig", "as_data_config"],
    "datasets": ["RawDataset"],
    "loaders": ["ArrayImageDataset", "ImageDataModule", "TensorLoader"],
    "registry": ["IMAGENET_MEAN", "IMAGENET_STD", "DatasetSpec", "dataset_names", "dataset_spec", "register_dataset"],
    "splits": ["DatasetInfo", "DatasetSplits", "describe_dataset", "load_splits", "prepare_dataset", "split_indices"],
}
__getattr__, __dir__ = lazy_attributes(__name__, _SUBMODULES)
__all__ = sorted(["ConfigError", "dataclass_from_config", *(name for names in _SUBMODULES.values() for name in names)])
