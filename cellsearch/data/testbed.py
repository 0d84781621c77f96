"""The testbed: a small image task, generated offline from a fixed seed, on which the cell matters.

Each image is a 12x12 grayscale scene. One *target* shape is drawn once or twice, at a random
position and a random scale; the label is ``2 * shape + (copies - 1)``, so 10 classes:

- shape (5 kinds): hollow square (ring), filled square, plus, X (both diagonals), and a square with
  only its top and left edges (a corner). Ring, filled square and corner differ only inside or along
  part of the outline, so telling them apart at the larger scales needs a receptive field that
  covers the whole shape; plus and X differ in orientation.
- scale: side 3, 4 or 5 pixels, drawn independently of the class, so a cell has to recognise a
  shape at several scales.
- copies (1 or 2): counting, which needs evidence gathered across the whole image (wiring and
  pooling, not only local filters).

Distractors make local evidence insufficient: 2-4 short bars (2-3 pixels, horizontal or vertical)
and 1-3 bright dots, a random background gradient, a per-image contrast from 0.6 to 1, and
Gaussian pixel noise (std 0.18 of the intensity range). Copies of the target never touch.

Everything comes from one ``numpy`` generator seeded with ``GENERATOR_SEED``: the same arguments
give the same arrays on every machine. The train split (5,000 images, 3,000 held out for
validation by default) and the test split (2,000) come from separate streams; classes are balanced.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from cellsearch.data.arrays import ImageArrays
from cellsearch.data.datasets import RawDataset
from cellsearch.validation import ConfigError

if TYPE_CHECKING:
    from cellsearch.data.config import DataConfig

TESTBED_CLASSES = 10
TESTBED_IMAGE_SIZE = 12
SHAPES: tuple[str, ...] = ("ring", "square", "plus", "cross", "corner")
SCALES: tuple[int, ...] = (3, 4, 5)
NOISE_STD = 0.18  # pixel noise, in units of the full intensity range
GENERATOR_SEED = 0  # the task is one fixed dataset; data.split_seed only chooses the validation images
TRAIN_SIZE = 5000  # generated training images (3,000 of them are held out for validation by default)
TEST_SIZE = 2000
VAL_SIZE = 3000  # a large validation split keeps the seed-to-seed noise of one cell's reward small
_TEST_STREAM = 1  # the test split's generator stream (train uses 0)


def _shape_mask(shape: str, side: int) -> np.ndarray:
    """A side x side boolean mask of one shape."""
    mask = np.zeros((side, side), dtype=bool)
    mid = side // 2
    if shape == "ring":
        mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = True
    elif shape == "square":
        mask[:, :] = True
    elif shape == "plus":
        mask[mid, :] = mask[:, mid] = True
    elif shape == "cross":
        idx = np.arange(side)
        mask[idx, idx] = mask[idx, side - 1 - idx] = True
    elif shape == "corner":
        mask[0, :] = mask[:, 0] = True
    return mask


_MASKS = {(shape, side): _shape_mask(shape, side) for shape in SHAPES for side in SCALES}


def _place(occupied: np.ndarray, side: int, rng: np.random.Generator, tries: int = 30) -> tuple[int, int] | None:
    """A random top-left corner where a side x side box (plus a 1-pixel margin) is free, or None."""
    size = occupied.shape[0]
    for _ in range(tries):
        y, x = rng.integers(0, size - side + 1, size=2)
        y0, x0 = max(0, y - 1), max(0, x - 1)
        if not occupied[y0:y + side + 1, x0:x + side + 1].any():
            return int(y), int(x)
    return None


def _scene(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """One float image in [0, 1] of class ``label``."""
    shape, copies = SHAPES[label // 2], label % 2 + 1
    image = np.zeros((size, size), dtype=np.float32)
    occupied = np.zeros((size, size), dtype=bool)
    while True:  # both copies must fit; a large scale with two copies occasionally needs a retry
        image[:], occupied[:] = 0, False
        side = int(rng.choice(SCALES))
        spots = []
        for _ in range(copies):
            spot = _place(occupied, side, rng)
            if spot is None:
                break
            y, x = spot
            occupied[y:y + side, x:x + side] = True
            spots.append(spot)
        if len(spots) == copies:
            break
    mask = _MASKS[(shape, side)]
    for y, x in spots:
        image[y:y + side, x:x + side][mask] = 1.0
    for _ in range(int(rng.integers(2, 5))):  # distractor strokes: short bars in any direction
        length = int(rng.integers(2, 4))
        y, x = (int(v) for v in rng.integers(0, size - length + 1, size=2))
        if rng.random() < 0.5:
            image[y, x:x + length] = np.maximum(image[y, x:x + length], rng.uniform(0.5, 1.0))
        else:
            image[y:y + length, x] = np.maximum(image[y:y + length, x], rng.uniform(0.5, 1.0))
    for _ in range(int(rng.integers(1, 4))):  # bright dots
        y, x = rng.integers(0, size, size=2)
        image[y, x] = max(image[y, x], rng.uniform(0.5, 1.0))
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    gy, gx = rng.uniform(-0.15, 0.15, size=2)
    background = gy * ramp[:, None] + gx * ramp[None, :]
    contrast = rng.uniform(0.6, 1.0)
    noise = rng.normal(0.0, NOISE_STD, size=(size, size))
    return np.clip(0.2 + contrast * 0.6 * image + background + noise, 0.0, 1.0)


def _split(n: int, seed: int, stream: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng([seed, stream])
    labels = np.arange(n) % TESTBED_CLASSES  # balanced classes, then shuffled
    rng.shuffle(labels)
    images = np.stack([_scene(int(label), rng, size) for label in labels])
    pixels = np.rint(images * 255).astype(np.uint8)[:, None]
    return torch.from_numpy(pixels), torch.from_numpy(labels.astype(np.int64))


def make_testbed(train_size: int = TRAIN_SIZE, test_size: int = TEST_SIZE, seed: int = 0,
                 image_size: int = TESTBED_IMAGE_SIZE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train and test images (uint8, N x 1 x H x W) and labels (int64) of the testbed, from ``seed``."""
    if image_size < max(SCALES) * 2 + 1:
        raise ConfigError(f"testbed images must be at least {max(SCALES) * 2 + 1} pixels wide to fit two "
                         f"large shapes, got {image_size} (data.image_size)")
    train_images, train_labels = _split(train_size, seed, 0, image_size)
    test_images, test_labels = _split(test_size, seed, _TEST_STREAM, image_size)
    return train_images, train_labels, test_images, test_labels


def read_testbed(config: "DataConfig") -> RawDataset:
    """The testbed as a registered dataset (``data=testbed``), generated at ``data.image_size``."""
    train_images, train_labels, test_images, test_labels = make_testbed(
        TRAIN_SIZE, TEST_SIZE, GENERATOR_SEED, config.resolved_image_size)
    return RawDataset(ImageArrays(train_images, train_labels), ImageArrays(test_images, test_labels), TESTBED_CLASSES)
