"""Networks built from a hierarchical genotype (Liu et al. 2018, "Hierarchical Representations for
Efficient Architecture Search", sec. 2 and Fig. 2).

A cell is the genotype's top motif, compiled recursively: each edge of a motif is a primitive (level 2)
or a fresh copy of a lower-level motif (no weights are shared between copies), and a node with several
inputs concatenates them depthwise. Every motif maps C channels to C channels at stride 1; a node that
concatenates k inputs is brought back to C channels by a 1x1 conv (with BN and ReLU), so a motif's width
does not depend on its genotype (the paper leaves how widths add up open; this is cellsearch's choice).
A motif with no path from its input to its output computes zeros.

Skeletons (the paper's Fig. 2: a conv stem, then cells with a stride-2 separable conv between them):
- CIFAR: 3x3 conv stem with C0 channels, then 3 stages of ``cells_per_stage`` cells, a 3x3 separable
  conv of stride 2 before stages 2 and 3. Here each of those convs doubles the channels (C0, 2C0, 4C0),
  as NASNet's skeleton does (cellsearch's choice).
- ImageNet (cellsearch's own stem and depth, not the paper's ImageNet model): two 3x3 stride-2 convs,
  then 4 stages built the same way (C0 .. 8C0), so a 224-pixel input leaves 7x7 features.
``cells_per_stage`` is N, the cells between two reductions; ``channels`` is C0, the width of the first
stage's cells (every primitive of a stage works at that stage's width). As we read the paper (sec. 4.1),
its search model is ``cells_per_stage=1, channels=16`` and its CIFAR evaluation model
``cells_per_stage=2, channels=64`` (the defaults here). There is no auxiliary head (``auxiliary=True`` is
refused). Drop path applies to the edges of each cell's top motif that meet other edges at a node,
scaled by depth like NASNet's.

Feature maps (``feature_info``, ``forward_intermediates``): the stem and each stage's output.
"""
# No ``from __future__ import annotations``: see cellsearch/space/network.py (torch.fx and TorchScript).
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

import torch
from timm.layers import drop_path
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint
from torch import nn

from cellsearch.space.genotype import GenotypeError, load_genotype
from cellsearch.space.head import GenotypeNet
from cellsearch.space.hierarchical import NONE, PRIMITIVES, SPACE, HierarchicalGenotype, Matrix, motif_index
from cellsearch.space.spaces import genotype_from_dict
from cellsearch.validation import fail, positive_int

BN_EPS = 1e-5


def conv_bn_relu(c_in: int, c_out: int, kernel_size: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv -> BN -> ReLU: the paper's order for every convolutional primitive."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out, eps=BN_EPS),
        nn.ReLU(),
    )


def separable_conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3x3 depthwise conv then 1x1 pointwise conv, BN and ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.BatchNorm2d(c_out, eps=BN_EPS),
        nn.ReLU(),
    )


# Level-1 primitives: name -> factory(C), each C channels in and out at stride 1.
PRIMITIVE_MODULES: Dict[str, Callable[[int], nn.Module]] = {
    "conv_1x1": lambda c: conv_bn_relu(c, c, 1),
    "dw_conv_3x3": lambda c: conv_bn_relu(c, c, 3, groups=c),
    "sep_conv_3x3": lambda c: separable_conv(c, c),
    "max_pool_3x3": lambda c: nn.MaxPool2d(3, 1, 1),
    "avg_pool_3x3": lambda c: nn.AvgPool2d(3, 1, 1, count_include_pad=False),
    "identity": lambda c: nn.Identity(),
}
assert tuple(PRIMITIVE_MODULES) == PRIMITIVES  # one list of primitives (hierarchical.py); a code invariant


class MotifNode(nn.Module):
    """One node of a motif: its incoming edges, applied to earlier states and merged."""

    def __init__(self, sources: List[int], edges: List[nn.Module], channels: int):
        super().__init__()
        self.sources = sources  # positions in the motif's list of computed states
        self.edges = nn.ModuleList(edges)
        self.merge = conv_bn_relu(len(edges) * channels, channels, 1) if len(edges) > 1 else nn.Identity()
        self.drop_prob = 0.0

    def forward(self, states: List[torch.Tensor]) -> torch.Tensor:
        outs: List[torch.Tensor] = []
        for k, edge in enumerate(self.edges):
            out = edge(states[self.sources[k]])
            if self.drop_prob > 0.0 and len(self.sources) > 1:
                out = drop_path(out, self.drop_prob, self.training)
            outs.append(out)
        return outs[0] if len(outs) == 1 else self.merge(torch.cat(outs, 1))


class MotifModule(nn.Module):
    """A motif compiled once: the nodes that have inputs, in order, each reading the states computed
    before it. Give it a canonical genotype (``genotype.canonical()``), whose edges all lead to the output."""

    def __init__(self, genotype: HierarchicalGenotype, level: int, motif: int, channels: int):
        super().__init__()
        matrix: Matrix = genotype.levels[level - 2][motif]
        n = len(matrix)
        position = {0: 0}  # node -> index in the list of computed states
        nodes = []
        for j in range(1, n):
            incoming = [(i, matrix[i][j]) for i in range(j) if matrix[i][j] != NONE and i in position]
            if not incoming:
                continue
            edges = [PRIMITIVE_MODULES[entry](channels) if level == 2
                     else MotifModule(genotype, level - 1, _below(entry), channels) for _, entry in incoming]
            nodes.append(MotifNode([position[i] for i, _ in incoming], edges, channels))
            position[j] = len(position)
        self.empty = n - 1 not in position  # no path from input to output: the motif computes zeros
        self.nodes = nn.ModuleList(nodes if not self.empty else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.empty:
            return torch.zeros_like(x)
        states = [x]
        for node in self.nodes:
            states.append(node(states))
        return states[-1]


def _below(entry: str) -> int:
    index = motif_index(entry)
    if index is None:  # parse_hierarchical refuses such an entry; reaching here is a bug
        raise RuntimeError(f"entry {entry!r} names no motif")
    return index


def resolve_hierarchical(genotype: Union[HierarchicalGenotype, str, Path, dict]) -> HierarchicalGenotype:
    """A HierarchicalGenotype from itself, a shipped name, a YAML path or plain data; another space's
    genotype is refused in one line."""
    resolved = genotype_from_dict(genotype) if isinstance(genotype, dict) else load_genotype(genotype)
    if getattr(type(resolved), "space", None) != SPACE:
        raise GenotypeError(f"hierarchical networks build genotypes of space={SPACE}, got one of "
                            f"space={type(resolved).space}; use that space's network (cellsearch.space.networks)")
    return resolved


class HierarchicalNet(GenotypeNet):
    """A stem, then stages of cells (each the genotype's top motif), a stride-2 separable conv doubling
    the channels before every stage but the first, and a classification head."""

    def __init__(self, genotype: HierarchicalGenotype, stem: nn.Module, stem_reduction: int,
                 num_stages: int, cells_per_stage: int, channels: int, num_classes: int, in_chans: int,
                 auxiliary: bool, drop_rate: float, drop_path_rate: float, global_pool: str):
        super().__init__()
        if auxiliary:
            fail("auxiliary", "false (hierarchical networks have no auxiliary head)", auxiliary)
        self.genotype = genotype
        self.grad_checkpointing = False
        self.stem = stem
        compiled = genotype.canonical()  # only what reaches a motif's output becomes modules
        top_level = len(genotype.levels) + 1
        stages = []
        # the stem outputs ``channels`` channels, the first stage's width
        self.feature_info = [dict(num_chs=channels, reduction=stem_reduction, module="stem")]
        width, c_prev = channels, channels
        for s in range(num_stages):
            layers: List[nn.Module] = [separable_conv(c_prev, width, stride=2)] if s > 0 else []
            layers += [MotifModule(compiled, top_level, 0, width) for _ in range(cells_per_stage)]
            stages.append(nn.Sequential(*layers))
            self.feature_info.append(dict(num_chs=width, reduction=stem_reduction * 2 ** s, module=f"stages.{s}"))
            c_prev, width = width, 2 * width
        self.stages = nn.ModuleList(stages)
        self._init_head(c_prev, num_classes, in_chans, drop_rate, global_pool)
        self.set_drop_path_rate(drop_path_rate)

    def cells(self) -> List[MotifModule]:
        """The cells in depth order."""
        return [m for stage in self.stages for m in stage if isinstance(m, MotifModule)]

    # --- training helpers ----------------------------------------------------------------------
    def drop_path_groups(self) -> List[List[nn.Module]]:
        """Per cell, the nodes of its own motif: drop path on the cell's edges, not on those inside
        lower-level motifs (``set_drop_path_rate``: the last cell's rate, scaled by depth)."""
        return [list(cell.nodes) for cell in self.cells()]

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter groups for layer-wise learning-rate decay: the stem, then one group per layer of a
        stage (per stage when ``coarse``); the classifier comes last."""
        return dict(stem=r"^stem", blocks=r"^stages\.(\d+)" if coarse else r"^stages\.(\d+)\.(\d+)")

    # --- forward -------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Unpooled features of the last stage."""
        x = self.stem(x)
        for stage in self.stages:
            x = checkpoint(stage, x) if self.grad_checkpointing and not torch.jit.is_scripting() else stage(x)
        return x

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], tuple]:
        """Final features and the feature maps of ``feature_info`` (timm's API).

        Args:
            indices: the last n feature maps if an int, all if None, else these indices.
            norm: unused (no final norm layer).
            stop_early: stop after the last requested feature map.
            output_fmt: only 'NCHW'.
            intermediates_only: return only the feature maps.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        last_stage = max_index if stop_early else len(self.stages)  # feature i > 0 is stage i - 1's output
        intermediates = []
        x = self.stem(x)
        if 0 in take_indices:
            intermediates.append(x)
        for i, stage in enumerate(self.stages[:last_stage]):
            x = checkpoint(stage, x) if self.grad_checkpointing and not torch.jit.is_scripting() else stage(x)
            if i + 1 in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the stages after the last feature map in ``indices`` (and the head); returns the absolute
        indices kept, as timm's feature extraction expects."""
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        prune_end = max_index < len(self.stages)
        self.stages = self.stages[:max_index]
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take_indices


class HierarchicalNetCifar(HierarchicalNet):
    """The paper's CIFAR skeleton: 3x3 conv stem (C0 channels), 3 stages of ``cells_per_stage`` cells at
    C0, 2C0 and 4C0 channels, a stride-2 separable conv before stages 2 and 3. Defaults: the paper's
    CIFAR evaluation model (N=2, C0=64); its search model is ``cells_per_stage=1, channels=16``."""

    def __init__(
        self,
        genotype: Union[HierarchicalGenotype, str, Path, dict] = "hierarchical_random",
        cells_per_stage: int = 2,
        channels: int = 64,
        num_classes: int = 10,
        in_chans: int = 3,
        auxiliary: bool = False,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
    ):
        n = positive_int(cells_per_stage, "cells_per_stage")
        c = positive_int(channels, "channels")
        stem = conv_bn_relu(positive_int(in_chans, "in_chans"), c, 3)
        super().__init__(resolve_hierarchical(genotype), stem, 1, 3, n, c, num_classes, in_chans, auxiliary,
                         drop_rate, drop_path_rate, global_pool)
        self._architecture = dict(cells_per_stage=n, channels=c, auxiliary=auxiliary)


class HierarchicalNetImageNet(HierarchicalNet):
    """ImageNet skeleton: two 3x3 stride-2 convs (to ``stem_channels``, default C0, then C0), then 4 stages
    of ``cells_per_stage`` cells at C0 .. 8C0 channels, a stride-2 separable conv before stages 2-4."""

    def __init__(
        self,
        genotype: Union[HierarchicalGenotype, str, Path, dict] = "hierarchical_random",
        cells_per_stage: int = 2,
        channels: int = 64,
        num_classes: int = 1000,
        in_chans: int = 3,
        stem_channels: Optional[int] = None,
        auxiliary: bool = False,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
    ):
        n = positive_int(cells_per_stage, "cells_per_stage")
        c = positive_int(channels, "channels")
        s = positive_int(c if stem_channels is None else stem_channels, "stem_channels")
        stem = nn.Sequential(conv_bn_relu(positive_int(in_chans, "in_chans"), s, 3, stride=2),
                             conv_bn_relu(s, c, 3, stride=2))
        super().__init__(resolve_hierarchical(genotype), stem, 4, 4, n, c, num_classes, in_chans, auxiliary,
                         drop_rate, drop_path_rate, global_pool)
        self._architecture = dict(cells_per_stage=n, channels=c, stem_channels=s, auxiliary=auxiliary)
