"""Data modules and the on-device tensor loader, on files written here in the real formats."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cellsearch.data import (
    DataConfig,
    DatasetSpec,
    ImageArrays,
    ImageDataModule,
    RawDataset,
    TensorLoader,
    as_data_config,
    cutout,
    dataset_names,
    describe_dataset,
    load_splits,
    random_crop,
    random_flip,
    register_dataset,
)
from cellsearch.validation import ConfigError

CIFAR10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


def cifar_image(index: int) -> np.ndarray:
    """A 3 x 32 x 32 uint8 image whose pixels encode ``index`` (so loading can be checked exactly)."""
    rng = np.random.default_rng(index)
    image = rng.integers(0, 256, size=(3, 32, 32), dtype=np.uint8)
    image[0, 0, 0] = index % 256
    image[1, 0, 0] = index // 256
    return image


def write_cifar(root: Path, name: str = "cifar10", train_size: int = 100,
                test_size: int = 20) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Write tiny CIFAR python-version files (pickled dicts, as the real archives hold); return their contents."""
    if name == "cifar10":
        folder, train_files, test_files = root / "cifar-10-batches-py", CIFAR10_TRAIN, ["test_batch"]
        label_key, classes = "labels", 10
        meta_file, meta = "batches.meta", {"label_names": [f"class{i}" for i in range(10)]}
    else:
        folder, train_files, test_files = root / "cifar-100-python", ["train"], ["test"]
        label_key, classes = "fine_labels", 100
        meta_file, meta = "meta", {"fine_label_names": [f"class{i}" for i in range(100)]}
    folder.mkdir(parents=True)
    contents, index = {}, 0
    for file_name in train_files + test_files:
        per_file = test_size if file_name in test_files else train_size // len(train_files)
        images = np.stack([cifar_image(index + k) for k in range(per_file)])
        labels = [(index + k) % classes for k in range(per_file)]
        index += per_file
        entry = {"batch_label": file_name, "data": images.reshape(per_file, -1), label_key: labels,
                 "filenames": [f"{k}.png" for k in range(per_file)]}
        with (folder / file_name).open("wb") as f:
            pickle.dump(entry, f)
        contents[file_name] = (images, labels)
    with (folder / meta_file).open("wb") as f:
        pickle.dump(meta, f)
    return contents


def image_index(images: torch.Tensor) -> list[int]:
    return (images[:, 0, 0, 0].long() + 256 * images[:, 1, 0, 0].long()).tolist()


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_files_load_exactly_with_a_fixed_held_out_split(tmp_path, name):
    contents = write_cifar(tmp_path, name)
    config = DataConfig(name=name, root=str(tmp_path), download=False, val_size=30)
    splits = load_splits(config)
    assert splits.num_classes == (10 if name == "cifar10" else 100)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (70, 30, 20)
    # every training image comes back bit-exact with its label, train and val are disjoint
    train_ids, val_ids = image_index(splits.train.images), image_index(splits.val.images)
    assert sorted(train_ids + val_ids) == list(range(100))
    for images, ids, labels in ((splits.train.images, train_ids, splits.train.labels),
                                (splits.val.images, val_ids, splits.val.labels)):
        for image, i, label in zip(images[:5], ids[:5], labels[:5].tolist()):
            assert torch.equal(image, torch.from_numpy(cifar_image(i)))
            assert label == i % splits.num_classes
    test_images = torch.from_numpy(contents["test_batch" if name == "cifar10" else "test"][0])
    assert torch.equal(splits.test.images, test_images)
    # the split depends on split_seed only
    assert image_index(load_splits(config).val.images) == val_ids
    other = load_splits(DataConfig(name=name, root=str(tmp_path), download=False, val_size=30, split_seed=1))
    assert image_index(other.val.images) != val_ids


def test_cifar_through_both_loaders_gives_the_same_validation_batches(tmp_path):
    write_cifar(tmp_path)
    batches = {}
    for loader in ("tensor", "dataloader"):
        config = DataConfig(name="cifar10", root=str(tmp_path), download=False, val_size=20, loader=loader,
                            num_workers=0)
        module = ImageDataModule(config, batch_size=16)
        module.setup("fit")
        batches[loader] = list(module.val_dataloader())
        x, y = next(iter(module.train_dataloader()))
        assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert len(batches["tensor"]) == len(batches["dataloader"]) == 1
    (xt, yt), (xd, yd) = batches["tensor"][0], batches["dataloader"][0]
    assert torch.equal(yt, yd)
    torch.testing.assert_close(xt, xd, atol=1e-5, rtol=1e-5)  # same normalisation in both paths


def test_missing_cifar_is_a_config_error_naming_the_folder_and_offline_alternative(tmp_path):
    config = DataConfig(name="cifar10", root=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(ConfigError) as info:
        describe_dataset(config)
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in message
    assert "digits" in message and "cifar-10-python.tar.gz" in message


class Tampered:
    """Unpickling this would call os.system: the CIFAR reader must refuse it."""

    def __reduce__(self):
        import os

        return os.system, ("echo pwned",)


@pytest.mark.parametrize("content", [b"not a pickle", pickle.dumps({"data": Tampered(), "labels": [0]})])
def test_corrupt_or_tampered_cifar_batch_is_a_config_error(tmp_path, content):
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(content)
    with pytest.raises(ConfigError, match="data_batch_3"):
        load_splits(DataConfig(name="cifar10", root=str(tmp_path), download=False, val_size=10))


@pytest.mark.parametrize("settings, message", [
    (dict(name="mnist"), "data.name must be one of ['cifar10', 'cifar100', 'digits', 'synthetic', 'testbed', 'imagefolder'], "
                         "got 'mnist' (set data.name=...)"),
    (dict(loader="fast"), "data.loader must be one of ['tensor', 'dataloader'] or null, got 'fast' (set data.loader=...)"),
    (dict(val_size=-1), "data.val_size must be an integer >= 0 or null, got -1 (set data.val_size=...)"),
    (dict(cutout=2.5), "data.cutout must be an integer >= 0, got 2.5 (set data.cutout=...)"),
    (dict(image_size=2), "data.image_size must be an integer >= 4 or null, got 2 (set data.image_size=...)"),
    (dict(flip="maybe"), "data.flip must be true, false or null (automatic), got 'maybe' (set data.flip=...)"),
    (dict(split_seed=-1), "data.split_seed must be an integer >= 0, got -1 (set data.split_seed=...)"),
    (dict(name="digits", cutout=8), "data.cutout (8) must be smaller than the 8x8 images of digits"),
])
def test_bad_data_settings_are_refused_in_one_line_naming_the_key(settings, message):
    with pytest.raises(ConfigError) as info:
        DataConfig(**settings)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_data_config_from_a_mapping():
    config = as_data_config({"_target_": "cellsearch.data.DataConfig", "name": "digits", "val_size": 100})
    assert config == DataConfig(name="digits", val_size=100)
    with pytest.raises(ConfigError, match="unknown data setting"):
        as_data_config({"name": "digits", "batchsize": 3})


def test_val_size_too_large_is_a_config_error():
    with pytest.raises(ConfigError, match="leaves no training images"):
        describe_dataset(DataConfig(name="synthetic", synthetic_train_size=50, val_size=50))


def test_digits_ships_offline():
    info = describe_dataset(DataConfig(name="digits"))
    assert (info.num_classes, info.in_chans, info.image_size) == (10, 1, 8)
    assert (info.train_size, info.val_size) == (1500 - 300, 300)
    bigger = load_splits(DataConfig(name="digits", image_size=16, train_subset=100, val_subset=50))
    assert bigger.train.images.shape == (100, 1, 16, 16) and len(bigger.val) == 50


def test_imagefolder_through_both_loaders(tmp_path):
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 2)):
        for cls in ("cat", "dog"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for k in range(count):
                Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / f"{k}.png")
    for loader in ("dataloader", "tensor"):
        config = DataConfig(name="imagefolder", root=str(tmp_path), image_size=16, val_size=0, loader=loader,
                            num_workers=0)
        info = describe_dataset(config)
        assert (info.num_classes, info.in_chans, info.image_size, info.train_size, info.val_size) == (2, 3, 16, 12, 4)
        module = ImageDataModule(config, batch_size=4)
        module.setup("fit")
        x, y = next(iter(module.train_dataloader()))
        assert x.shape == (4, 3, 16, 16)
        assert sum(len(b[1]) for b in module.val_dataloader()) == 4
    with pytest.raises(ConfigError, match="train"):
        describe_dataset(DataConfig(name="imagefolder", root=str(tmp_path / "val")))


# --- augmentation and the tensor loader ------------------------------------------------------------

def numbered_images(n: int, size: int = 8) -> torch.Tensor:
    """uint8 images whose pixel (i, j) holds i * size + j + 1 (never 0, so padding is recognisable)."""
    grid = torch.arange(size * size).view(size, size) + 1
    return grid.to(torch.uint8).expand(n, 1, size, size).clone()


def test_random_crop_translates_each_image_within_the_padding():
    size, pad = 8, 2
    images = numbered_images(64, size)
    out = random_crop(images, pad, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    shifts = set()
    for image in out[:, 0]:
        i, j = map(int, (image > 0).nonzero()[0])
        value = int(image[i, j]) - 1
        dy, dx = value // size - i, value % size - j  # the window's offset in the original image
        assert -pad <= dy <= pad and -pad <= dx <= pad
        rows = torch.arange(size)[:, None] + dy
        cols = torch.arange(size)[None, :] + dx
        inside = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)
        expected = torch.where(inside, rows * size + cols + 1, torch.zeros(()))
        assert torch.equal(image.long(), expected.long())
        shifts.add((dy, dx))
    assert len(shifts) > 5  # offsets differ per image


def test_random_flip_mirrors_about_half_the_images():
    images = numbered_images(200)
    out = random_flip(images, torch.Generator().manual_seed(0))
    flipped = [bool(torch.equal(o, i.flip(2))) for o, i in zip(out, images)]
    assert all(f or torch.equal(o, i) for f, o, i in zip(flipped, out, images))
    assert 60 < sum(flipped) < 140


def test_cutout_zeroes_one_clipped_square_per_image():
    images = torch.ones(100, 3, 16, 16)
    out = cutout(images, 6, torch.Generator().manual_seed(0))
    for image in out:
        zero = image[0] == 0
        assert torch.equal(zero, image[1] == 0)
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        assert 1 <= len(rows) <= 6 and 1 <= len(cols) <= 6
        assert int(zero.sum()) == len(rows) * len(cols)  # a rectangle (the square clipped at the border)
    assert cutout(images, 0) is images


def test_tensor_loader_epochs_batches_and_shards():
    data = ImageArrays(numbered_images(100), torch.arange(100))
    loader = TensorLoader(data, batch_size=32, mean=(0.5,), std=(0.25,), train=True, crop_padding=1, seed=3)
    assert len(loader) == 3  # the last partial batch is dropped in training
    epoch0, epoch1 = [y for _, y in loader], [y for _, y in loader]
    assert all(len(y) == 32 for y in epoch0)
    assert len(set(torch.cat(epoch0).tolist())) == 96 and not torch.equal(torch.cat(epoch0), torch.cat(epoch1))
    again = TensorLoader(data, batch_size=32, mean=(0.5,), std=(0.25,), train=True, crop_padding=1, seed=3)
    assert torch.equal(torch.cat([y for _, y in again]), torch.cat(epoch0))  # reproducible from the seed
    # evaluation: no augmentation, every image once, exact normalisation
    evaluation = TensorLoader(data, batch_size=32, mean=(0.5,), std=(0.25,), train=False)
    assert len(evaluation) == 4
    x = torch.cat([x for x, _ in evaluation])
    torch.testing.assert_close(x, (numbered_images(100).float() / 255 - 0.5) / 0.25)
    # two data-parallel ranks see disjoint shares of each pass
    shares = [torch.cat([y for _, y in TensorLoader(data, 10, (0.5,), (0.25,), train=True, seed=3, rank=r,
                                                    world_size=2)]) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == 50 and not set(shares[0].tolist()) & set(shares[1].tolist())
    val_shares = [torch.cat([y for _, y in TensorLoader(data, 16, (0.5,), (0.25,), train=False, rank=r,
                                                        world_size=2)]) for r in (0, 1)]
    assert sorted(torch.cat(val_shares).tolist()) == list(range(100))


def test_synthetic_data_is_reproducible():
    a = load_splits(DataConfig(name="synthetic", synthetic_train_size=40, synthetic_test_size=10, image_size=8))
    b = load_splits(DataConfig(name="synthetic", synthetic_train_size=40, synthetic_test_size=10, image_size=8))
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.val.labels, b.val.labels)
    assert a.train.images.shape == (32, 3, 8, 8) and len(a.val) == 8


def read_stripes(config):
    """A two-class dataset of horizontal or vertical stripes, written the way a new dataset registers."""
    size = 12
    stripes = (torch.arange(size) % 2 * 255).to(torch.uint8)
    horizontal = stripes[:, None].expand(size, size)
    images = torch.stack([horizontal, horizontal.T] * 30)[:, None]
    labels = torch.tensor([0, 1] * 30)
    return RawDataset(ImageArrays(images[:40], labels[:40]), ImageArrays(images[40:], labels[40:]), num_classes=2)


def test_a_registered_dataset_trains_like_a_built_in_one():
    register_dataset(DatasetSpec("stripes", read_stripes, image_size=12, val_size=10, flips=False, in_chans=1))
    assert "stripes" in dataset_names()
    config = DataConfig(name="stripes")
    info = describe_dataset(config)
    assert (info.num_classes, info.in_chans, info.image_size, info.train_size, info.val_size) == (2, 1, 12, 30, 10)
    assert not config.resolved_flip and config.resolved_loader == "tensor"  # the entry's defaults
    module = ImageDataModule(config, batch_size=8)
    x, y = next(iter(module.train_dataloader()))
    assert x.shape == (8, 1, 12, 12) and set(y.tolist()) <= {0, 1}
    with pytest.raises(ConfigError, match="registered already"):
        register_dataset(DatasetSpec("stripes", read_stripes, image_size=12, val_size=10, flips=False))
