"""Training augmentation: random crop from a zero-padded image, left-right flip, cutout.

The batch functions work on (N, C, H, W) tensors on any device (the tensor loader's path);
:func:`torchvision_transforms` builds the equivalent PIL pipeline for DataLoader workers.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from cellsearch.data.config import DataConfig


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


class Cutout:
    """torchvision-style transform: cutout on one (C, H, W) tensor."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return cutout(image[None], self.size)[0]


def torchvision_transforms(config: DataConfig, mean: tuple[float, ...], std: tuple[float, ...], train: bool,
                           resize: bool = False) -> Any:
    """The standard PIL pipeline: [resize and centre crop,] random crop, flip, ToTensor, Normalize, [cutout]."""
    from torchvision import transforms

    size = config.resolved_image_size
    steps: list[Any] = []
    if resize:
        steps += [transforms.Resize(size), transforms.CenterCrop(size)]
    if train and config.resolved_crop_padding > 0:
        steps.append(transforms.RandomCrop(size, padding=config.resolved_crop_padding))
    if train and config.resolved_flip:
        steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize(mean, std)]
    if train and config.cutout > 0:
        steps.append(Cutout(config.cutout))
    return transforms.Compose(steps)
