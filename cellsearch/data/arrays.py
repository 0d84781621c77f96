"""Images as uint8 tensors: the form every in-memory dataset takes, with resizing and channel statistics."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ImageArrays:
    """Images as one uint8 tensor (N, C, H, W) and their int64 labels."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: torch.Tensor) -> "ImageArrays":
        return ImageArrays(self.images[index], self.labels[index])

    @staticmethod
    def concat(parts: "list[ImageArrays]") -> "ImageArrays":
        """One ImageArrays holding ``parts`` in order."""
        return ImageArrays(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))

    @staticmethod
    def empty_like(other: "ImageArrays") -> "ImageArrays":
        """No images, with the image shape of ``other`` (a dataset without a test split)."""
        return ImageArrays(torch.empty(0, *other.images.shape[1:], dtype=torch.uint8),
                           torch.empty(0, dtype=torch.int64))


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 (N, C, H, W) tensor to size x size (bilinear, antialiased)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    resized = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return resized.round().clamp(0, 255).to(torch.uint8)


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
