"""Networks built from a NAS-RL genotype (Zoph & Le 2017, sec. 3.3), for CIFAR-sized and ImageNet-sized inputs.

A stem, then the genotype's layers in order, each a conv (the layer's filter height x width and stride,
"same" padding) + batch norm + ReLU over its input; then the classification head of
:class:`~cellsearch.space.head.GenotypeNet`. The paper's rules:

- a layer with no input reads the stem's output (the paper's "image");
- a layer's inputs are concatenated along channels, each zero-padded (evenly on both sides) to the
  largest height and width among them;
- the layers that no later layer reads ("loose ends") are concatenated the same way into the
  classifier's input (``forward_features``).

What the shared constructor arguments mean here:

- ``channels``: a width scale. None builds each layer with the genotype's filter count; an integer F
  gives the genotype's widest layer F filters and every other layer its proportional share (at least 1).
- ``stem_channels``: the stem's output width; None: the widest layer's width (after scaling).
- ``cells_per_stage``: accepted so that one child configuration builds a network of any space, and
  ignored: a NAS-RL network's depth is its genotype's layer count.
- ``drop_path_rate``: drops whole input branches of a layer that reads several (per sample, rescaled,
  as NASNet's ScheduledDropPath drops paths), the rate growing linearly with depth to the given value at
  the last layer. A layer with a single input never drops it.
- ``auxiliary=True`` is refused: there is no auxiliary head.

Feature maps (``feature_info``, ``forward_intermediates``, ``features_only``): the stem's output, each
layer's output, and last the classifier's input (the loose ends' concatenation), except that timm wants
their reductions non-decreasing: a map that zero-padding keeps larger than an earlier map is left out
(with strides fixed to 1, as in the paper's first space, none is). See :func:`feature_maps`.
"""
# No ``from __future__ import annotations``: see cellsearch/space/network.py (torch.fx and TorchScript).
from pathlib import Path
from typing import Callable, List, Tuple

import torch
import torch.nn.functional as F
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint
from torch import nn

from cellsearch.space.cell import drop_path
from cellsearch.space.genotype import GenotypeError, load_genotype
from cellsearch.space.head import GenotypeNet
from cellsearch.space.nasrl import SPACE, Layer, NasRLGenotype, layer_reductions, parse_nasrl_genotype
from cellsearch.space.ops import BN_EPS
from cellsearch.validation import ConfigError, integer, positive_int

DEFAULT_GENOTYPE = "nasrl_baseline"  # cells/nasrl_baseline.yaml


def resolve_nasrl_genotype(genotype: "NasRLGenotype | str | Path | dict") -> NasRLGenotype:
    """A NAS-RL genotype from a genotype, a shipped name, a YAML path or plain data (``to_dict()``);
    a genotype of another space is refused in one line."""
    resolved = parse_nasrl_genotype(genotype) if isinstance(genotype, dict) else load_genotype(genotype)
    if not isinstance(resolved, NasRLGenotype):
        raise GenotypeError(f"space={SPACE}: the network builds NAS-RL layer genotypes, got a genotype of "
                            f"space={type(resolved).space}; build it with its own space's network")
    return resolved


def feature_maps(genotype: NasRLGenotype) -> List[Tuple[int, int]]:
    """The feature maps a network of ``genotype`` exposes, in order, as (layer, reduction relative to the stem):
    layer -1 is the stem, i is layer i and ``len(genotype.layers)`` the classifier's input; the reduction is
    the larger of height's and width's. A map is listed if its reduction is at least every listed map's before
    it, as timm's FeatureInfo requires."""
    reductions = layer_reductions(genotype)
    ends = genotype.loose_ends()
    final = max(min(reductions[i][0] for i in ends), min(reductions[i][1] for i in ends))
    candidates = [(i, max(r)) for i, r in enumerate(reductions)] + [(len(reductions), final)]
    listed = [(-1, 1)]
    for layer, reduction in candidates:
        if reduction >= listed[-1][1]:
            listed.append((layer, reduction))
    return listed


def join(tensors: List[torch.Tensor]) -> torch.Tensor:
    """Concatenate along channels, zero-padding each tensor evenly to the largest height and width."""
    if len(tensors) == 1:
        return tensors[0]
    height = max([t.shape[2] for t in tensors])
    width = max([t.shape[3] for t in tensors])
    padded: List[torch.Tensor] = []
    for t in tensors:
        dh, dw = height - t.shape[2], width - t.shape[3]
        padded.append(F.pad(t, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2]) if dh or dw else t)
    return torch.cat(padded, 1)


class LooseEnds(nn.Module):
    """The classifier's input: the layers no later layer reads, joined (a module so that a hook sees it)."""

    def forward(self, tensors: List[torch.Tensor]) -> torch.Tensor:
        return join(tensors)


class NasRLLayer(nn.Module):
    """One layer: conv (filter height x width, stride, "same" padding) + batch norm + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, layer: Layer):
        super().__init__()
        kernel = (layer.filter_height, layer.filter_width)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride=(layer.stride_height, layer.stride_width),
                              padding=(kernel[0] // 2, kernel[1] // 2), bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS)
        self.act = nn.ReLU()
        self.out_channels = out_channels
        self.drop_prob = 0.0  # of each input branch; set by set_drop_path_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> List[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels, eps=BN_EPS), nn.ReLU()]


class NasRLNet(GenotypeNet):
    """A stem, the genotype's layers wired by their inputs, and a classification head (see the module doc)."""

    # Declared here for TorchScript (an empty list's element type cannot be inferred).
    _inputs: List[List[int]]  # per layer, the earlier layers it reads ([]: the stem)
    _final: List[int]  # the layers joined into the classifier's input
    _feature_layers: List[int]  # the layer of each feature map (see feature_maps)

    def __init__(
        self,
        genotype: NasRLGenotype,
        stem_factory: Callable[[int, int], List[nn.Module]],
        stem_reduction: int,
        channels: "int | None",
        stem_channels: "int | None",
        cells_per_stage: "int | None",
        num_classes: int,
        in_chans: int,
        auxiliary: bool,
        drop_rate: float,
        drop_path_rate: float,
        global_pool: str,
    ):
        super().__init__()
        if auxiliary:
            raise ConfigError("auxiliary: a NAS-RL network has no auxiliary head; build it with auxiliary=False "
                              "(child.auxiliary_weight=0)")
        positive_int(cells_per_stage, "cells_per_stage", optional=True)  # ignored: the genotype fixes the depth
        positive_int(in_chans, "in_chans")
        integer(num_classes, "num_classes", 0)
        self.genotype = genotype
        widest = max(layer.filters for layer in genotype.layers)
        width = widest if channels is None else positive_int(channels, "channels")
        widths = [max(1, round(layer.filters * width / widest)) for layer in genotype.layers]
        stem_width = width if stem_channels is None else positive_int(stem_channels, "stem_channels")

        self.stem = nn.Sequential(*stem_factory(in_chans, stem_width))
        self.layers = nn.ModuleList()
        self._inputs = [list(layer.inputs) for layer in genotype.layers]
        for i, layer in enumerate(genotype.layers):
            in_channels = sum(widths[j] for j in layer.inputs) if layer.inputs else stem_width
            self.layers.append(NasRLLayer(in_channels, widths[i], layer))
        self._final = list(genotype.loose_ends())
        self.loose_ends = LooseEnds()
        num_features = sum(widths[i] for i in self._final)
        self._init_feature_info(stem_width, stem_reduction, widths, num_features)
        self.grad_checkpointing = False
        self._init_head(num_features, num_classes, in_chans, drop_rate, global_pool)
        self.set_drop_path_rate(drop_path_rate)
        self._architecture = dict(channels=channels, stem_channels=stem_channels)

    def _init_feature_info(self, stem_width: int, stem_reduction: int, widths: List[int], num_features: int) -> None:
        """``feature_info`` for the maps of :func:`feature_maps`, each with its hookable module."""
        maps = feature_maps(self.genotype)
        self._feature_layers = [layer for layer, _ in maps]
        self.feature_info = []
        for layer, reduction in maps:
            if layer < 0:
                channels, module = stem_width, "stem"
            elif layer == len(widths):
                channels, module = num_features, "loose_ends"
            else:
                channels, module = widths[layer], f"layers.{layer}"
            self.feature_info.append(dict(num_chs=channels, reduction=stem_reduction * reduction, module=module))

    # --- training helpers ----------------------------------------------------------------------
    def drop_path_groups(self) -> List[List[nn.Module]]:
        """Each layer drops its input branches (``set_drop_path_rate``: the last layer's rate, scaled by depth)."""
        return [[layer] for layer in self.layers]

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups for layer-wise learning-rate decay: the stem, then one group per layer
        (``coarse``: the same, a NAS-RL network has no stages); the classifier comes last."""
        return dict(stem=r"^stem", blocks=r"^layers\.(\d+)")

    # --- forward -------------------------------------------------------------------------------
    def _run_layers(self, x: torch.Tensor, last: int) -> List[torch.Tensor]:
        """The stem's output and the outputs of layers 0..``last``, in that order."""
        stem = self.stem(x)
        maps: List[torch.Tensor] = [stem]
        for i, layer in enumerate(self.layers):
            if i <= last:  # (no ``break``: TorchScript unrolls loops over a ModuleList)
                sources = self._inputs[i]
                if len(sources) == 0:
                    joined = stem
                elif len(sources) == 1:
                    joined = maps[1 + sources[0]]
                else:
                    joined = join([drop_path(maps[1 + j], layer.drop_prob, self.training) for j in sources])
                if self.grad_checkpointing and not torch.jit.is_scripting():
                    maps.append(checkpoint(layer, joined))
                else:
                    maps.append(layer(joined))
        return maps

    def _features(self, maps: List[torch.Tensor]) -> torch.Tensor:
        """The classifier's input: the loose ends joined (after pruning: the last map kept)."""
        if len(self._final) == 0:
            return maps[-1]
        return self.loose_ends([maps[1 + i] for i in self._final])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Unpooled features: the loose ends' concatenation."""
        return self._features(self._run_layers(x, len(self.layers) - 1))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: "int | List[int] | None" = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> "List[torch.Tensor] | tuple[torch.Tensor, List[torch.Tensor]]":
        """Final features and the feature maps of ``feature_info`` (timm's API).

        Args:
            indices: the last n feature maps if an int, all if None, else these indices.
            norm: unused (no final norm layer).
            stop_early: stop after the last requested feature map (which is then also the final one).
            output_fmt: only 'NCHW'.
            intermediates_only: return only the feature maps.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        final_layer = len(self.layers)  # the classifier's input
        last = self._feature_layers[max_index] if stop_early else final_layer
        maps = self._run_layers(x, min(last, final_layer - 1))
        final = self._features(maps) if last == final_layer else maps[1 + last]
        intermediates = [final if self._feature_layers[i] == final_layer else maps[1 + self._feature_layers[i]]
                         for i in take_indices]
        if intermediates_only:
            return intermediates
        return final, intermediates

    def prune_intermediate_layers(
        self,
        indices: "int | List[int]" = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> List[int]:
        """Drop the layers after the last feature map in ``indices`` (and the head); returns the
        absolute indices kept, as timm's feature extraction expects."""
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        last = self._feature_layers[max_index]
        if last < len(self.layers):  # the stem's or a layer's map: the classifier's input is gone
            self.layers = self.layers[:last + 1]
            self._inputs = self._inputs[:last + 1]
            self._final = []
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
            self.reset_classifier(0, "")
        elif prune_head:
            self.reset_classifier(0, "")
        return take_indices


def _cifar_stem(in_chans: int, width: int) -> List[nn.Module]:
    return _conv_bn_relu(in_chans, width, 1)


def _imagenet_stem(in_chans: int, width: int) -> List[nn.Module]:
    return _conv_bn_relu(in_chans, max(1, width // 2), 2) + _conv_bn_relu(max(1, width // 2), width, 2) \
        + _conv_bn_relu(width, width, 2)


class NasRLNetCifar(NasRLNet):
    """CIFAR skeleton: a 3x3 conv + BN + ReLU stem at full resolution, then the genotype's layers."""

    def __init__(
        self,
        genotype: "NasRLGenotype | str | Path | dict" = DEFAULT_GENOTYPE,
        cells_per_stage: "int | None" = None,
        channels: "int | None" = None,
        num_classes: int = 10,
        in_chans: int = 3,
        stem_channels: "int | None" = None,
        auxiliary: bool = False,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
    ):
        super().__init__(resolve_nasrl_genotype(genotype), _cifar_stem, 1, channels, stem_channels, cells_per_stage,
                         num_classes, in_chans, auxiliary, drop_rate, drop_path_rate, global_pool)


class NasRLNetImageNet(NasRLNet):
    """ImageNet skeleton: three 3x3 stride-2 conv + BN + ReLU stem layers (S/2, S, S channels; 224 -> 28),
    then the genotype's layers."""

    def __init__(
        self,
        genotype: "NasRLGenotype | str | Path | dict" = DEFAULT_GENOTYPE,
        cells_per_stage: "int | None" = None,
        channels: "int | None" = None,
        num_classes: int = 1000,
        in_chans: int = 3,
        stem_channels: "int | None" = None,
        auxiliary: bool = False,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
    ):
        super().__init__(resolve_nasrl_genotype(genotype), _imagenet_stem, 8, channels, stem_channels,
                         cells_per_stage, num_classes, in_chans, auxiliary, drop_rate, drop_path_rate, global_pool)
