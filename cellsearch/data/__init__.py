"""Data for child training: CIFAR-10/100, any ImageFolder, scikit-learn's digits, synthetic images.

Two loaders feed the same LightningDataModule:
- ``tensor`` (default for in-memory datasets): the whole uint8 dataset lives as one tensor on the
  training device and each batch is augmented there (random crop with zero padding, flip, cutout),
  with no DataLoader and no worker processes. This is airbench's trick: small NASNet children are
  dominated by per-step overhead, and a DataLoader adds to it.
- ``dataloader``: the standard torchvision pipeline (PIL image -> RandomCrop -> RandomHorizontalFlip
  -> ToTensor -> Normalize, in DataLoader workers); the reference the benchmark compares against.

CIFAR files: we read the python-version batches (``cifar-10-batches-py/data_batch_1..5``,
``test_batch``; ``cifar-100-python/train``, ``test``: pickled dicts holding ``data``, an N x 3072
uint8 array, and ``labels`` or ``fine_labels``) with our own reader, straight into one uint8 tensor;
its unpickler accepts plain data and numpy arrays only.
When the folder is missing and ``download`` is on, torchvision's ``CIFAR10``/``CIFAR100`` class
downloads and extracts the archive, checking its md5 sums. We read the files ourselves instead of
through torchvision's class, which re-checks the md5 of every batch on each load, so that any files
in the same format (such as the small ones the tests write) go through the same code.

Every dataset has a train and a test split; the validation split that rewards children is held out
from the training images (``val_size``, 5,000 for CIFAR as in NASNet's proxy task) with a fixed
``split_seed``, so every child is judged on the same images. ``val_size=0`` validates on the test
split instead (final retraining).
"""
from __future__ import annotations

import functools
import pickle
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset

DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "digits", "synthetic", "imagefolder")
LOADERS: tuple[str, ...] = ("tensor", "dataloader")
IN_MEMORY_DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "digits", "synthetic")
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class ConfigError(ValueError):
    """A configuration that cannot work (unknown dataset, missing files, impossible numbers).

    Raised before any child trains; a child that fails while training is recorded, not raised."""


@dataclass(frozen=True)
class _CifarFormat:
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    num_classes: int
    url: str


_CIFAR = {
    "cifar10": _CifarFormat("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                            "labels", 10, "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    "cifar100": _CifarFormat("cifar-100-python", ("train",), ("test",), "fine_labels", 100,
                             "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
}
# Default validation images held out from the training split, per dataset.
_DEFAULT_VAL_SIZE = {"cifar10": 5000, "cifar100": 5000, "digits": 300, "imagefolder": 0}
DIGITS_TEST_SIZE = 297  # the last 297 of scikit-learn's 1,797 digits are the test split


@dataclass
class DataConfig:
    """Which images children train on and how they are loaded and augmented.

    ``None`` means "the dataset's default": val_size (CIFAR 5,000, digits 300, synthetic a fifth,
    imagefolder 0 = use ``root/val``), image_size (CIFAR 32, digits 8, synthetic 16, imagefolder 32),
    loader (tensor, except imagefolder: dataloader), crop_padding (image_size // 8) and flip (on for
    natural images: CIFAR and imagefolder).
    """

    name: str = "cifar10"
    root: str = "data"
    download: bool = True
    val_size: int | None = None
    split_seed: int = 0
    image_size: int | None = None
    loader: str | None = None
    num_workers: int = 2
    crop_padding: int | None = None
    flip: bool | None = None
    cutout: int = 0
    train_subset: int | None = None
    val_subset: int | None = None
    synthetic_train_size: int = 1000
    synthetic_test_size: int = 200
    synthetic_classes: int = 10
    synthetic_channels: int = 3

    def __post_init__(self) -> None:
        if self.name not in DATASETS:
            raise ConfigError(f"unknown dataset {self.name!r}; choose one of {list(DATASETS)}")
        if self.loader is not None and self.loader not in LOADERS:
            raise ConfigError(f"unknown loader {self.loader!r}; choose one of {list(LOADERS)}")
        _check_int("val_size", self.val_size, 0, optional=True)
        _check_int("image_size", self.image_size, 4, optional=True)
        _check_int("num_workers", self.num_workers, 0)
        _check_int("crop_padding", self.crop_padding, 0, optional=True)
        _check_int("cutout", self.cutout, 0)
        _check_int("train_subset", self.train_subset, 1, optional=True)
        _check_int("val_subset", self.val_subset, 1, optional=True)
        _check_int("synthetic_train_size", self.synthetic_train_size, 2)
        _check_int("synthetic_test_size", self.synthetic_test_size, 1)
        _check_int("synthetic_classes", self.synthetic_classes, 2)
        _check_int("synthetic_channels", self.synthetic_channels, 1)
        if self.cutout >= self.resolved_image_size:
            size = self.resolved_image_size
            raise ConfigError(f"data.cutout ({self.cutout}) must be smaller than the {size}x{size} images of "
                              f"{self.name}, or every image is blanked; try data.cutout={size // 2}")

    # --- resolved defaults ---------------------------------------------------------------------
    @property
    def resolved_loader(self) -> str:
        return self.loader or ("tensor" if self.name in IN_MEMORY_DATASETS else "dataloader")

    @property
    def resolved_image_size(self) -> int:
        default = {"cifar10": 32, "cifar100": 32, "digits": 8, "synthetic": 16, "imagefolder": 32}[self.name]
        return self.image_size or default

    @property
    def resolved_val_size(self) -> int:
        if self.val_size is not None:
            return self.val_size
        return _DEFAULT_VAL_SIZE.get(self.name, self.synthetic_train_size // 5)

    @property
    def resolved_crop_padding(self) -> int:
        return self.crop_padding if self.crop_padding is not None else self.resolved_image_size // 8

    @property
    def resolved_flip(self) -> bool:
        return self.flip if self.flip is not None else self.name in ("cifar10", "cifar100", "imagefolder")

    @property
    def root_path(self) -> Path:
        return Path(self.root).expanduser().resolve()


def _check_int(name: str, value: Any, minimum: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"data.{name} must be an integer >= {minimum}{' or null' if optional else ''}, got {value!r}")


def as_data_config(config: "DataConfig | Mapping[str, Any]") -> DataConfig:
    """Accept a DataConfig or a plain mapping of its fields (a Hydra config node)."""
    return dataclass_from_config(DataConfig, config, "data")


def dataclass_from_config(cls: type, config: Any, what: str) -> Any:
    """``config`` if it is a ``cls`` already, else ``cls(**config)`` (ignoring Hydra's ``_target_``)."""
    if isinstance(config, cls):
        return config
    if not isinstance(config, Mapping):
        raise ConfigError(f"{what} config must be a {cls.__name__} or a mapping of its fields, "
                          f"got {type(config).__name__}")
    values = {str(k): v for k, v in config.items() if k != "_target_"}
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown {what} setting(s) {unknown}; valid settings are {sorted(known)}")
    return cls(**values)


# --- datasets as uint8 tensors ----------------------------------------------------------------------

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
class ImageArrays:
    """Images as one uint8 tensor (N, C, H, W) and their int64 labels."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: torch.Tensor) -> "ImageArrays":
        return ImageArrays(self.images[index], self.labels[index])


@dataclass(frozen=True)
class DatasetSplits:
    """Train, validation and test arrays of an in-memory dataset, with normalisation statistics."""

    train: ImageArrays
    val: ImageArrays
    test: ImageArrays
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def cifar_folder(config: DataConfig) -> Path:
    """The folder holding the CIFAR python-version batches for ``config``."""
    return config.root_path / _CIFAR[config.name].folder


def prepare_dataset(config: DataConfig) -> None:
    """Make sure the dataset's files are there (downloading CIFAR if allowed); raise ConfigError if not."""
    if config.name in _CIFAR:
        fmt = _CIFAR[config.name]
        folder = cifar_folder(config)
        missing = [f for f in fmt.train_files + fmt.test_files if not (folder / f).is_file()]
        if not missing:
            return
        hint = (f"Download {fmt.url} on a machine with internet access and extract it into {config.root_path} "
                f"(so that {folder / missing[0]} exists), or train offline on data=digits (ships with "
                f"scikit-learn) or data=synthetic.")
        if not config.download:
            raise ConfigError(f"{config.name} not found: {folder} lacks {missing} and data.download is off. {hint}")
        try:
            from torchvision.datasets import CIFAR10, CIFAR100

            dataset_cls = CIFAR10 if config.name == "cifar10" else CIFAR100
            dataset_cls(str(config.root_path), train=True, download=True)  # verifies the md5 sums
        except Exception as err:  # network errors come in many types
            raise ConfigError(f"{config.name} not found in {folder} and the download failed "
                              f"({type(err).__name__}: {err}). {hint}") from err
    elif config.name == "imagefolder":
        train_dir = config.root_path / "train"
        if not train_dir.is_dir():
            raise ConfigError(f"imagefolder dataset needs {train_dir} with one sub-folder of images per class "
                              f"(and {config.root_path / 'val'} for the test split)")
        if config.resolved_val_size == 0 and not (config.root_path / "val").is_dir():
            raise ConfigError(f"data.val_size is 0, so validation uses {config.root_path / 'val'}, which does not "
                              f"exist; create it or hold out training images with data.val_size > 0")


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only: a CIFAR batch holds nothing else, and loading
    refuses to run anything a tampered file might name."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path, label_key: str) -> ImageArrays:
    try:
        with path.open("rb") as f:
            entry = _CifarUnpickler(f, encoding="latin1").load()
        data, labels = np.asarray(entry["data"], dtype=np.uint8), entry[label_key]
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"{path} is not a CIFAR python-version batch ({type(err).__name__}: {err})") from err
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise ConfigError(f"{path}: expected an N x 3072 'data' array and N labels, got {data.shape} and {len(labels)}")
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return ImageArrays(images, torch.as_tensor(labels, dtype=torch.int64))


def _concat(parts: list[ImageArrays]) -> ImageArrays:
    return ImageArrays(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))


def _read_cifar(folder: Path, fmt: _CifarFormat) -> tuple[ImageArrays, ImageArrays, int]:
    train = _concat([_read_cifar_batch(folder / f, fmt.label_key) for f in fmt.train_files])
    test = _concat([_read_cifar_batch(folder / f, fmt.label_key) for f in fmt.test_files])
    return train, test, fmt.num_classes


def _read_digits() -> tuple[ImageArrays, ImageArrays, int]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)  # values 0..16 -> 0..255
    images = torch.from_numpy(pixels)[:, None]  # (1797, 1, 8, 8)
    labels = torch.as_tensor(digits.target, dtype=torch.int64)
    cut = len(labels) - DIGITS_TEST_SIZE
    return ImageArrays(images[:cut], labels[:cut]), ImageArrays(images[cut:], labels[cut:]), 10


def _make_synthetic(train_size: int, test_size: int, k: int, c: int, seed: int,
                    image_size: int) -> tuple[ImageArrays, ImageArrays, int]:
    """Noisy copies of one smooth random pattern per class: learnable in a few steps, for tests."""
    generator = torch.Generator().manual_seed(1234 + seed)
    prototypes = F.interpolate(torch.rand(k, c, 4, 4, generator=generator), size=(image_size, image_size),
                               mode="bilinear", align_corners=False) * 255

    def sample(n: int) -> ImageArrays:
        labels = torch.randint(0, k, (n,), generator=generator)
        noise = torch.randn(n, c, image_size, image_size, generator=generator) * 40
        images = (prototypes[labels] + noise).round().clamp(0, 255).to(torch.uint8)
        return ImageArrays(images, labels)

    return sample(train_size), sample(test_size), k


def _read_imagefolder_arrays(folder: Path, image_size: int) -> tuple[ImageArrays, int]:
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    to_array = transforms.Compose([transforms.Resize(image_size), transforms.CenterCrop(image_size),
                                   transforms.PILToTensor()])
    dataset = ImageFolder(str(folder), transform=to_array)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    return ImageArrays(images, torch.as_tensor(dataset.targets, dtype=torch.int64)), len(dataset.classes)


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 (N, C, H, W) tensor to size x size (bilinear, antialiased)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    resized = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return resized.round().clamp(0, 255).to(torch.uint8)


@dataclass(frozen=True)
class _Source:
    """What determines the raw train and test arrays (the cache key)."""

    name: str
    root: Path
    image_size: int
    synthetic: tuple[int, int, int, int, int]  # train size, test size, classes, channels, seed


@functools.lru_cache(maxsize=2)
def _load_train_test(source: _Source) -> tuple[ImageArrays, ImageArrays, int]:
    """Cached: a process that trains many children reads the files once."""
    if source.name in _CIFAR:
        train, test, num_classes = _read_cifar(source.root / _CIFAR[source.name].folder, _CIFAR[source.name])
    elif source.name == "digits":
        train, test, num_classes = _read_digits()
    elif source.name == "synthetic":
        train, test, num_classes = _make_synthetic(*source.synthetic, image_size=source.image_size)
    else:
        train, num_classes = _read_imagefolder_arrays(source.root / "train", source.image_size)
        val_dir = source.root / "val"
        test = _read_imagefolder_arrays(val_dir, source.image_size)[0] if val_dir.is_dir() else ImageArrays(
            torch.empty(0, *train.images.shape[1:], dtype=torch.uint8), torch.empty(0, dtype=torch.int64))
    for split, arrays in (("training", train), ("test", test)):
        if len(arrays) and not 0 <= int(arrays.labels.min()) <= int(arrays.labels.max()) < num_classes:
            raise ConfigError(f"{source.name} in {source.root}: {split} labels outside 0..{num_classes - 1}")
    if len(train) == 0:
        raise ConfigError(f"{source.name} in {source.root}: the training split is empty")
    return (ImageArrays(resize_images(train.images, source.image_size), train.labels),
            ImageArrays(resize_images(test.images, source.image_size), test.labels), num_classes)


def _split_indices(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[val_size:], order[:val_size]


def load_splits(config: DataConfig) -> DatasetSplits:
    """Train / validation / test arrays of an in-memory dataset (any dataset with the tensor loader)."""
    prepare_dataset(config)
    return _load_splits(astuple(config))


@functools.lru_cache(maxsize=2)
def _load_splits(values: tuple) -> DatasetSplits:
    """Cached on every setting: the children of a search share one split of one dataset."""
    config = DataConfig(*values)
    synthetic = (config.synthetic_train_size, config.synthetic_test_size, config.synthetic_classes,
                 config.synthetic_channels, config.split_seed)
    source = _Source(config.name, config.root_path, config.resolved_image_size, synthetic)
    train, test, num_classes = _load_train_test(source)
    val_size = config.resolved_val_size
    if val_size >= len(train):
        raise ConfigError(f"data.val_size={val_size} leaves no training images: the {config.name} training split "
                          f"has {len(train)}")
    if val_size > 0:
        train_idx, val_idx = _split_indices(len(train), val_size, config.split_seed)
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
    return DatasetSplits(train, val, test, num_classes, mean, std)


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 (N, C, H, W) images, scaled to [0, 1]."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(images), chunk):
        pixels = images[start:start + chunk].double().div_(255)
        total += pixels.sum(dim=(0, 2, 3))
        squares += pixels.square_().sum(dim=(0, 2, 3))
    count = images.numel() / images.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(1e-6).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def describe_dataset(config: DataConfig) -> DatasetInfo:
    """Check that the dataset is usable with these settings and describe it; raises ConfigError."""
    if config.name == "imagefolder" and config.resolved_loader == "dataloader":
        prepare_dataset(config)
        from torchvision.datasets import ImageFolder

        train_dir = config.root_path / "train"
        try:
            dataset = ImageFolder(str(train_dir))
        except (FileNotFoundError, RuntimeError) as err:
            raise ConfigError(f"imagefolder dataset in {train_dir}: {err}") from err
        val_size = config.resolved_val_size
        if val_size >= len(dataset):
            raise ConfigError(f"data.val_size={val_size} leaves no training images: {train_dir} has {len(dataset)}")
        train_size = len(dataset) - val_size
        if val_size == 0:
            val_size = len(ImageFolder(str(config.root_path / "val")))
        return DatasetInfo(config.name, len(dataset.classes), 3, config.resolved_image_size,
                           min(train_size, config.train_subset or train_size),
                           min(val_size, config.val_subset or val_size))
    splits = load_splits(config)
    return DatasetInfo(config.name, splits.num_classes, splits.train.images.shape[1], config.resolved_image_size,
                       len(splits.train), len(splits.val))


# --- augmentation on the device --------------------------------------------------------------------

def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image random crop of a (N, C, H, W) batch from its zero-padded copy (same size out)."""
    if padding <= 0:
        return images
    n, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    device = images.device
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
    rows = (dy[:, None] + torch.arange(h, device=device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=device))[:, None, None, :]
    batch = torch.arange(n, device=device)[:, None, None, None]
    channel = torch.arange(c, device=device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def random_flip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each image of a (N, C, H, W) batch left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], generator=generator, device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def cutout(images: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero a size x size square (clipped at the border) at a random centre of each image (DeVries & Taylor)."""
    if size <= 0:
        return images
    n, _, h, w = images.shape
    device = images.device
    top = torch.randint(0, h, (n, 1), generator=generator, device=device) - size // 2
    left = torch.randint(0, w, (n, 1), generator=generator, device=device) - size // 2
    ys, xs = torch.arange(h, device=device), torch.arange(w, device=device)
    in_rows = (ys >= top) & (ys < top + size)
    in_cols = (xs >= left) & (xs < left + size)
    mask = in_rows[:, :, None] & in_cols[:, None, :]
    return images.masked_fill(mask[:, None], 0.0)


class TensorLoader:
    """Batches of a uint8 dataset kept as one tensor on ``device``, augmented there (no DataLoader).

    Each pass shuffles with a generator seeded from ``seed`` and the pass number. Under data-parallel
    training each rank takes an equal, disjoint share of every shuffled pass (evaluation: every
    image exactly once across ranks).
    """

    def __init__(
        self,
        data: ImageArrays,
        batch_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        train: bool,
        crop_padding: int = 0,
        flip: bool = False,
        cutout_size: int = 0,
        seed: int = 0,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
    ):
        self.device = torch.device(device)
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self.batch_size = batch_size
        self.train = train
        self.crop_padding, self.flip, self.cutout_size = crop_padding, flip, cutout_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        shape = (1, -1, 1, 1)
        std_t = torch.tensor(std, device=self.device).view(shape)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -torch.tensor(mean, device=self.device).view(shape) / std_t
        self.drop_last = train and self._shard_size() > batch_size

    def _shard_size(self) -> int:
        n = len(self.labels)
        if self.train:
            return n // self.world_size
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        n = self._shard_size()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order(self, generator: torch.Generator) -> torch.Tensor:
        n = len(self.labels)
        if not self.train:
            return torch.arange(self.rank, n, self.world_size, device=self.device)
        order = torch.randperm(n, generator=generator, device=self.device)
        share = n // self.world_size
        return order[self.rank * share:(self.rank + 1) * share]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator(device=self.device)
        generator.manual_seed(self.seed * 1_000_003 + self.epoch)
        self.epoch += 1
        order = self._order(generator)
        for k in range(len(self)):
            index = order[k * self.batch_size:(k + 1) * self.batch_size]
            images, labels = self.images[index], self.labels[index]
            if self.train:
                images = random_crop(images, self.crop_padding, generator)
                if self.flip:
                    images = random_flip(images, generator)
            images = torch.addcmul(self.shift, images.float(), self.scale)  # (x / 255 - mean) / std
            if self.train:
                images = cutout(images, self.cutout_size, generator)
            yield images, labels


class MicroBatches:
    """Each batch of ``loader`` as ``micro_batches`` equal consecutive slices (for gradient accumulation:
    the micro-batches of one batch hold exactly its images, augmented as they would have been)."""

    def __init__(self, loader: Any, micro_batches: int):
        self.loader, self.micro_batches = loader, micro_batches

    def __len__(self) -> int:
        return len(self.loader) * self.micro_batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in self.loader:
            yield from zip(images.chunk(self.micro_batches), labels.chunk(self.micro_batches))


# --- the standard torchvision path -----------------------------------------------------------------

class ArrayImageDataset(Dataset):
    """uint8 arrays served as PIL images through torchvision transforms (as torchvision's CIFAR10 does)."""

    def __init__(self, data: ImageArrays, transform: Any):
        self.images = data.images.permute(0, 2, 3, 1).contiguous().numpy()  # N, H, W, C
        self.labels = data.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        array = self.images[index]
        image = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
        return self.transform(image), self.labels[index]


class Cutout:
    """torchvision-style transform: cutout on one (C, H, W) tensor."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return cutout(image[None], self.size)[0]


def torchvision_transforms(config: DataConfig, mean: tuple[float, ...], std: tuple[float, ...], train: bool) -> Any:
    """The standard PIL pipeline: [resize,] random crop, flip, ToTensor, Normalize, [cutout]."""
    from torchvision import transforms

    size = config.resolved_image_size
    steps: list[Any] = []
    if config.name == "imagefolder":
        steps += [transforms.Resize(size), transforms.CenterCrop(size)]
    if train and config.resolved_crop_padding > 0:
        steps.append(transforms.RandomCrop(size, padding=config.resolved_crop_padding))
    if train and config.resolved_flip:
        steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize(mean, std)]
    if train and config.cutout > 0:
        steps.append(Cutout(config.cutout))
    return transforms.Compose(steps)


class ImageDataModule(pl.LightningDataModule):
    """Train / validation / test loaders for one DataConfig; the tensor loader or torchvision's path.
    With ``micro_batches`` > 1 each training batch comes as that many slices (see MicroBatches)."""

    def __init__(self, config: "DataConfig | Mapping[str, Any]", batch_size: int = 128, seed: int = 0,
                 eval_batch_size: int | None = None, micro_batches: int = 1):
        super().__init__()
        self.config = as_data_config(config)
        self.batch_size = batch_size
        self.micro_batches = micro_batches
        self.eval_batch_size = eval_batch_size or 2 * batch_size // micro_batches
        self.seed = seed
        self.splits: DatasetSplits | None = None
        self._folder_sets: dict[str, Dataset] = {}

    def prepare_data(self) -> None:
        prepare_dataset(self.config)

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None or self._folder_sets:
            return
        if self.config.resolved_loader == "tensor" or self.config.name != "imagefolder":
            self.splits = load_splits(self.config)
        else:
            self._folder_sets = self._imagefolder_sets()

    def _imagefolder_sets(self) -> dict[str, Dataset]:
        from torchvision.datasets import ImageFolder

        cfg, root = self.config, self.config.root_path
        train_tf = torchvision_transforms(cfg, IMAGENET_MEAN, IMAGENET_STD, train=True)
        eval_tf = torchvision_transforms(cfg, IMAGENET_MEAN, IMAGENET_STD, train=False)
        train_set: Dataset = ImageFolder(str(root / "train"), transform=train_tf)
        has_val_dir = (root / "val").is_dir()
        test_set: Dataset | None = ImageFolder(str(root / "val"), transform=eval_tf) if has_val_dir else None
        val_size = cfg.resolved_val_size
        if val_size > 0:
            train_idx, val_idx = _split_indices(len(train_set), val_size, cfg.split_seed)
            val_set: Dataset = Subset(ImageFolder(str(root / "train"), transform=eval_tf), val_idx.tolist())
            train_set = Subset(train_set, train_idx.tolist())
        else:
            val_set = test_set
        if cfg.train_subset:
            train_set = Subset(train_set, range(min(cfg.train_subset, len(train_set))))
        if cfg.val_subset:
            val_set = Subset(val_set, range(min(cfg.val_subset, len(val_set))))
        sets = {"train": train_set, "val": val_set}
        if test_set is not None:
            sets["test"] = test_set
        return sets

    # --- loaders -------------------------------------------------------------------------------
    def _device_and_ranks(self) -> tuple[torch.device, int, int]:
        if self.trainer is None:
            return torch.device("cpu"), 0, 1
        return self.trainer.strategy.root_device, self.trainer.global_rank, self.trainer.world_size

    def _loader(self, split: str) -> Any:
        self.setup()
        train = split == "train"
        batch_size = self.batch_size if train else self.eval_batch_size
        if self.splits is None:  # an image folder read from disk by DataLoader workers
            if split not in self._folder_sets:
                missing = self.config.root_path / "val"
                raise ConfigError(f"imagefolder dataset has no {split} split ({missing} is missing)")
            return self._dataloader(self._folder_sets[split], batch_size, train)
        data = getattr(self.splits, split)
        if self.config.resolved_loader == "tensor":
            device, rank, world_size = self._device_and_ranks()
            cfg = self.config
            return TensorLoader(data, batch_size, self.splits.mean, self.splits.std, train=train,
                                crop_padding=cfg.resolved_crop_padding, flip=cfg.resolved_flip,
                                cutout_size=cfg.cutout, seed=self.seed, device=device, rank=rank,
                                world_size=world_size)
        transform = torchvision_transforms(self.config, self.splits.mean, self.splits.std, train=train)
        return self._dataloader(ArrayImageDataset(data, transform), batch_size, train)

    def _dataloader(self, dataset: Dataset, batch_size: int, train: bool) -> DataLoader:
        workers = self.config.num_workers
        return DataLoader(dataset, batch_size=batch_size, shuffle=train, drop_last=train and len(dataset) > batch_size,
                          num_workers=workers, persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
                          generator=torch.Generator().manual_seed(self.seed))

    def train_dataloader(self) -> Any:
        loader = self._loader("train")
        return MicroBatches(loader, self.micro_batches) if self.micro_batches > 1 else loader

    def val_dataloader(self) -> Any:
        return self._loader("val")

    def test_dataloader(self) -> Any:
        return self._loader("test")
