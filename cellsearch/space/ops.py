"""The op registry: op name -> factory ``(c_in, c_out, stride) -> nn.Module``.

Every op maps ``c_in`` channels to ``c_out`` channels and divides the spatial size by ``stride``
(1 or 2). ``c_in`` differs from ``c_out`` when an op reads a concat-combined block (2F channels) or
the raw stem output of NASNet's first ImageNet stem cell; each op then adapts the channels the way
NASNet's reference implementation does, so published parameter counts are reproduced.

Op details follow the NASNet paper and its reference code: ReLU-Conv-BN order, separable convs
applied twice (stride only in the first), a 1x1 conv + BN after a pool whose input width differs.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3  # NASNet's reference implementation uses TF's batch-norm epsilon of 0.001


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


def pointwise_stride(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Keep every ``stride``-th pixel: what a strided 1x1 conv reads. A 1x1 conv with stride 2 is run as
    this slice followed by a stride-1 conv (the same numbers) because oneDNN's strided 1x1 kernel
    writes out of bounds in channels_last on AVX2 CPUs (torch 2.14: heap corruption, or silently wrong
    weight gradients; ``tests/test_cells.py`` checks the equivalence)."""
    return x[:, :, ::stride, ::stride] if stride > 1 else x


class ReLUConvBN(nn.Sequential):
    """ReLU -> conv -> BN, the unit of every convolutional op."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, dilation: int = 1):
        padding = dilation * (kernel_size - 1) // 2
        conv_stride = 1 if kernel_size == 1 else stride
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(c_in, c_out, kernel_size, conv_stride, padding, dilation=dilation, bias=False),
            _bn(c_out),
        )
        self.pointwise_stride = stride if kernel_size == 1 else 1  # see pointwise_stride()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        relu, conv, bn = self[0], self[1], self[2]
        return bn(conv(pointwise_stride(relu(x), self.pointwise_stride)))


class FactorizedConvPair(nn.Sequential):
    """ReLU -> 1xk conv -> kx1 conv -> BN (or kx1 first when ``vertical_first``)."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, vertical_first: bool = False):
        horizontal = dict(kernel_size=(1, k), stride=(1, stride), padding=(0, k // 2))
        vertical = dict(kernel_size=(k, 1), stride=(stride, 1), padding=(k // 2, 0))
        first, second = (vertical, horizontal) if vertical_first else (horizontal, vertical)
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(c_in, c_out, bias=False, **first),
            nn.Conv2d(c_out, c_out, bias=False, **second),
            _bn(c_out),
        )


class SeparableConv(nn.Sequential):
    """ReLU -> depthwise kxk -> pointwise 1x1 -> BN."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, dilation: int = 1):
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(c_in, c_in, kernel_size, stride, padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            _bn(c_out),
        )


class StackedSeparableConv(nn.Sequential):
    """NASNet's separable conv op: a separable conv applied twice, stride only in the first."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1):
        super().__init__(
            SeparableConv(c_in, c_out, kernel_size, stride),
            SeparableConv(c_out, c_out, kernel_size, 1),
        )


class FactorizedReduce(nn.Module):
    """Halve the spatial size without discarding pixels: two stride-2 1x1 convs, the second on the
    input shifted by one pixel, concatenated (NASNet's ``factorized_reduction``)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        half = c_out // 2
        self.act = nn.ReLU()
        # Stride-2 1x1 convs, run as a slice and a stride-1 conv (see pointwise_stride()).
        self.conv_1 = nn.Conv2d(c_in, half, 1, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out - half, 1, bias=False)
        self.bn = _bn(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(x)
        # Shift by one pixel, padding at the far edge so odd sizes give the same shape as path 1.
        shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
        return self.bn(torch.cat([self.conv_1(pointwise_stride(x, 2)), self.conv_2(pointwise_stride(shifted, 2))],
                                 dim=1))


class Pool(nn.Sequential):
    """Max or average pool; a 1x1 conv + BN follows when the channel count must change."""

    def __init__(self, kind: str, c_in: int, c_out: int, kernel_size: int, stride: int):
        padding = kernel_size // 2
        if kind == "avg":
            layers: list[nn.Module] = [nn.AvgPool2d(kernel_size, stride, padding, count_include_pad=False)]
        else:
            layers = [nn.MaxPool2d(kernel_size, stride, padding)]
        if c_in != c_out:
            layers += [nn.Conv2d(c_in, c_out, 1, bias=False), _bn(c_out)]
        super().__init__(*layers)


class Zero(nn.Module):
    """The 'none' op of DARTS-style spaces: outputs zeros of the right shape."""

    def __init__(self, c_out: int, stride: int):
        super().__init__()
        self.c_out = c_out
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        h, w = -(-h // self.stride), -(-w // self.stride)
        return x.new_zeros(n, self.c_out, h, w)


def identity(c_in: int, c_out: int, stride: int) -> nn.Module:
    """Identity; a factorized reduction when striding, a ReLU-1x1 conv-BN when widths differ."""
    if stride > 1:
        return FactorizedReduce(c_in, c_out)
    if c_in != c_out:
        return ReLUConvBN(c_in, c_out, 1)
    return nn.Identity()


OpFactory = Callable[[int, int, int], nn.Module]

OPS: dict[str, OpFactory] = {
    # The 13 NASNet ops (Zoph et al. 2018, sec. 3).
    "identity": identity,
    "conv_1x3_3x1": lambda c_in, c_out, stride: FactorizedConvPair(c_in, c_out, 3, stride),
    "conv_1x7_7x1": lambda c_in, c_out, stride: FactorizedConvPair(c_in, c_out, 7, stride),
    "dil_conv_3x3": lambda c_in, c_out, stride: ReLUConvBN(c_in, c_out, 3, stride, dilation=2),
    "avg_pool_3x3": lambda c_in, c_out, stride: Pool("avg", c_in, c_out, 3, stride),
    "max_pool_3x3": lambda c_in, c_out, stride: Pool("max", c_in, c_out, 3, stride),
    "max_pool_5x5": lambda c_in, c_out, stride: Pool("max", c_in, c_out, 5, stride),
    "max_pool_7x7": lambda c_in, c_out, stride: Pool("max", c_in, c_out, 7, stride),
    "conv_1x1": lambda c_in, c_out, stride: ReLUConvBN(c_in, c_out, 1, stride),
    "conv_3x3": lambda c_in, c_out, stride: ReLUConvBN(c_in, c_out, 3, stride),
    "sep_conv_3x3": lambda c_in, c_out, stride: StackedSeparableConv(c_in, c_out, 3, stride),
    "sep_conv_5x5": lambda c_in, c_out, stride: StackedSeparableConv(c_in, c_out, 5, stride),
    "sep_conv_7x7": lambda c_in, c_out, stride: StackedSeparableConv(c_in, c_out, 7, stride),
    # Ops of other published spaces (DARTS, AmoebaNet) used by cells in cells/.
    "none": lambda c_in, c_out, stride: Zero(c_out, stride),
    "conv_7x1_1x7": lambda c_in, c_out, stride: FactorizedConvPair(c_in, c_out, 7, stride, vertical_first=True),
    "dil_sep_conv_3x3": lambda c_in, c_out, stride: SeparableConv(c_in, c_out, 3, stride, dilation=2),
    "dil_sep_conv_5x5": lambda c_in, c_out, stride: SeparableConv(c_in, c_out, 5, stride, dilation=2),
}


def build_op(name: str, c_in: int, c_out: int, stride: int) -> nn.Module:
    """Instantiate op ``name``; unknown names raise ValueError listing the registered ops."""
    try:
        factory = OPS[name]
    except KeyError:
        raise ValueError(f"unknown op {name!r}; registered ops are {sorted(OPS)}") from None
    return factory(c_in, c_out, stride)


def is_parameter_free_identity(module: nn.Module) -> bool:
    """True for a plain identity, which drop path leaves alone (as NASNet and DARTS do)."""
    return isinstance(module, nn.Identity)
