"""DataConfig: which images children train on and how they are loaded and augmented (the ``data`` group)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from cellsearch.validation import ConfigError, bool_or_none, boolean, dataclass_from_config, integer, one_of

if TYPE_CHECKING:
    from cellsearch.data.registry import DatasetSpec

LOADERS: tuple[str, ...] = ("tensor", "dataloader")


def _dataset_spec(name: str) -> DatasetSpec:
    # Imported when needed: the registry's readers load torch, which composing the ``data`` schema does not need.
    from cellsearch.data.registry import dataset_spec

    return dataset_spec(name)


@dataclass
class DataConfig:
    """Which images children train on and how they are loaded and augmented.

    ``None`` means "the dataset's default", from its registry entry (:mod:`cellsearch.data.registry`):
    val_size, image_size, loader (tensor for in-memory datasets, else dataloader), flip (on for
    natural images); crop_padding defaults to image_size // 8. ``val_size=0`` validates on the test
    split (final retraining). The ``synthetic_*`` settings size ``name=synthetic``.
    """

    name: str = "cifar10"
    root: str = "data"  # where dataset files are (or are downloaded to)
    download: bool = True  # fetch missing CIFAR archives
    val_size: int | None = None  # training images held out for validation (the reward)
    split_seed: int = 0  # fixed split, so every child is judged on the same images
    image_size: int | None = None
    loader: str | None = None  # tensor (dataset on the device, augmented there) | dataloader (torchvision)
    num_workers: int = 2  # DataLoader workers (dataloader only)
    crop_padding: int | None = None  # random crop from a zero-padded image
    flip: bool | None = None  # random horizontal flip
    cutout: int = 0  # cutout square side in pixels (0: off)
    train_subset: int | None = None  # use only the first N training / validation images (quick runs)
    val_subset: int | None = None
    synthetic_train_size: int = 1000
    synthetic_test_size: int = 200
    synthetic_classes: int = 10
    synthetic_channels: int = 3

    def __post_init__(self) -> None:
        _dataset_spec(self.name)  # a ConfigError naming the registered datasets
        one_of(self.loader, "data.loader", LOADERS, optional=True)
        boolean(self.download, "data.download")
        bool_or_none(self.flip, "data.flip")
        integer(self.split_seed, "data.split_seed", 0)
        for key, minimum, optional in (("val_size", 0, True), ("image_size", 4, True), ("num_workers", 0, False),
                                       ("crop_padding", 0, True), ("cutout", 0, False), ("train_subset", 1, True),
                                       ("val_subset", 1, True), ("synthetic_train_size", 2, False),
                                       ("synthetic_test_size", 1, False), ("synthetic_classes", 2, False),
                                       ("synthetic_channels", 1, False)):
            integer(getattr(self, key), f"data.{key}", minimum, optional)
        if self.cutout >= self.resolved_image_size:
            size = self.resolved_image_size
            raise ConfigError(f"data.cutout ({self.cutout}) must be smaller than the {size}x{size} images of "
                              f"{self.name}, or every image is blanked; try data.cutout={size // 2}")

    # --- resolved defaults ---------------------------------------------------------------------
    @property
    def spec(self) -> DatasetSpec:
        """The dataset's registry entry."""
        return _dataset_spec(self.name)

    @property
    def resolved_loader(self) -> str:
        return self.loader or ("tensor" if self.spec.in_memory else "dataloader")

    @property
    def resolved_image_size(self) -> int:
        return self.image_size or self.spec.image_size

    @property
    def resolved_val_size(self) -> int:
        return self.val_size if self.val_size is not None else self.spec.default_val_size(self)

    @property
    def resolved_crop_padding(self) -> int:
        return self.crop_padding if self.crop_padding is not None else self.resolved_image_size // 8

    @property
    def resolved_flip(self) -> bool:
        return self.flip if self.flip is not None else self.spec.flips

    @property
    def streams_from_disk(self) -> bool:
        """Images read by DataLoader workers from the dataset's folders instead of held in memory."""
        return self.spec.open_folder is not None and self.resolved_loader == "dataloader"

    @property
    def root_path(self) -> Path:
        return Path(self.root).expanduser().resolve()


def as_data_config(config: "DataConfig | Mapping[str, Any]") -> DataConfig:
    """Accept a DataConfig or a plain mapping of its fields (a Hydra config node)."""
    return dataclass_from_config(DataConfig, config, "data")
