"""How the built-in datasets are read: CIFAR python-version batches, scikit-learn's digits, synthetic
images and image folders. Each reader takes the DataConfig and returns a :class:`RawDataset`.

CIFAR files: the python-version batches (``cifar-10-batches-py/data_batch_1..5``, ``test_batch``;
``cifar-100-python/train``, ``test``: pickled dicts holding ``data``, an N x 3072 uint8 array, and
``labels`` or ``fine_labels``) are read by our own reader, straight into one uint8 tensor; its
unpickler accepts plain data and numpy arrays only. When the folder is missing and ``download`` is
on, torchvision's ``CIFAR10``/``CIFAR100`` class downloads and extracts the archive, checking its md5
sums. We read the files ourselves instead of through torchvision's class, which re-checks the md5 of
every batch on each load, so that any files in the same format (such as the small ones the tests
write) go through the same code.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from cellsearch.data.arrays import ImageArrays
from cellsearch.validation import ConfigError

if TYPE_CHECKING:
    from cellsearch.data.config import DataConfig

DIGITS_TEST_SIZE = 297  # the last 297 of scikit-learn's 1,797 digits are the test split


@dataclass(frozen=True)
class RawDataset:
    """A dataset as read: train and test images (any size; resized later) and the number of classes."""

    train: ImageArrays
    test: ImageArrays
    num_classes: int


# --- CIFAR ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CifarFormat:
    """Where one CIFAR variant's python-version batches live and how their labels are keyed."""

    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    num_classes: int
    url: str

    def prepare(self, config: "DataConfig") -> None:
        """Make sure the batches are there (downloading them if allowed); raise ConfigError if not."""
        folder = config.root_path / self.folder
        missing = [f for f in self.train_files + self.test_files if not (folder / f).is_file()]
        if not missing:
            return
        hint = (f"Download {self.url} on a machine with internet access and extract it into {config.root_path} "
                f"(so that {folder / missing[0]} exists), or train offline on data=digits (ships with "
                f"scikit-learn) or data=synthetic.")
        if not config.download:
            raise ConfigError(f"{config.name} not found: {folder} lacks {missing} and data.download is off. {hint}")
        try:
            from torchvision.datasets import CIFAR10, CIFAR100

            dataset_cls = CIFAR10 if self.num_classes == 10 else CIFAR100
            dataset_cls(str(config.root_path), train=True, download=True)  # verifies the md5 sums
        except Exception as err:  # network errors come in many types
            raise ConfigError(f"{config.name} not found in {folder} and the download failed "
                              f"({type(err).__name__}: {err}). {hint}") from err

    def read(self, config: "DataConfig") -> RawDataset:
        """The training and test batches, as one uint8 tensor each."""
        folder = config.root_path / self.folder
        train = ImageArrays.concat([_read_cifar_batch(folder / f, self.label_key) for f in self.train_files])
        test = ImageArrays.concat([_read_cifar_batch(folder / f, self.label_key) for f in self.test_files])
        return RawDataset(train, test, self.num_classes)


CIFAR10 = CifarFormat("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                      "labels", 10, "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz")
CIFAR100 = CifarFormat("cifar-100-python", ("train",), ("test",), "fine_labels", 100,
                       "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz")


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


# --- digits and synthetic images ---------------------------------------------------------------------

def read_digits(config: "DataConfig") -> RawDataset:
    """scikit-learn's 8x8 digits (ship with the package): 1,500 training and 297 test images."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)  # values 0..16 -> 0..255
    images = torch.from_numpy(pixels)[:, None]  # (1797, 1, 8, 8)
    labels = torch.as_tensor(digits.target, dtype=torch.int64)
    cut = len(labels) - DIGITS_TEST_SIZE
    return RawDataset(ImageArrays(images[:cut], labels[:cut]), ImageArrays(images[cut:], labels[cut:]), 10)


def make_synthetic(config: "DataConfig") -> RawDataset:
    """Noisy copies of one smooth random pattern per class: learnable in a few steps, for tests.
    Sizes come from ``data.synthetic_*``; the images from ``data.split_seed``."""
    k, c, size = config.synthetic_classes, config.synthetic_channels, config.resolved_image_size
    generator = torch.Generator().manual_seed(1234 + config.split_seed)
    prototypes = F.interpolate(torch.rand(k, c, 4, 4, generator=generator), size=(size, size),
                               mode="bilinear", align_corners=False) * 255

    def sample(n: int) -> ImageArrays:
        labels = torch.randint(0, k, (n,), generator=generator)
        noise = torch.randn(n, c, size, size, generator=generator) * 40
        images = (prototypes[labels] + noise).round().clamp(0, 255).to(torch.uint8)
        return ImageArrays(images, labels)

    return RawDataset(sample(config.synthetic_train_size), sample(config.synthetic_test_size), k)


# --- image folders -----------------------------------------------------------------------------------

def prepare_imagefolder(config: "DataConfig") -> None:
    """Check the ``root/train/<class>/`` layout (and ``root/val`` when validation needs it)."""
    train_dir = config.root_path / "train"
    if not train_dir.is_dir():
        raise ConfigError(f"imagefolder dataset needs {train_dir} with one sub-folder of images per class "
                          f"(and {config.root_path / 'val'} for the test split)")
    if config.resolved_val_size == 0 and not (config.root_path / "val").is_dir():
        raise ConfigError(f"data.val_size is 0, so validation uses {config.root_path / 'val'}, which does not "
                          f"exist; create it or hold out training images with data.val_size > 0")


def open_image_folder(folder: Path, transform: Any = None) -> Any:
    """torchvision's ImageFolder on ``folder`` (one sub-folder per class); a ConfigError if unreadable."""
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(folder), transform=transform)
    except (FileNotFoundError, RuntimeError) as err:
        raise ConfigError(f"imagefolder dataset in {folder}: {err}") from err


def read_imagefolder(config: "DataConfig") -> RawDataset:
    """Every image of ``root/train`` (and ``root/val``, the test split, if present), resized and centre-cropped."""
    from torchvision import transforms

    size = config.resolved_image_size
    to_array = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.PILToTensor()])

    def read(folder: Path) -> tuple[ImageArrays, int]:
        dataset = open_image_folder(folder, to_array)
        images = torch.stack([dataset[i][0] for i in range(len(dataset))])
        return ImageArrays(images, torch.as_tensor(dataset.targets, dtype=torch.int64)), len(dataset.classes)

    train, num_classes = read(config.root_path / "train")
    val_dir = config.root_path / "val"
    test = read(val_dir)[0] if val_dir.is_dir() else ImageArrays.empty_like(train)
    return RawDataset(train, test, num_classes)
