"""Networks built from any genotype: the CIFAR and ImageNet skeletons of the NASNet paper.

Both are a stem followed by a plan of cells (Zoph et al. 2018, Fig. 2):
- CIFAR: 3x3 conv stem with 3F channels, then 3 stages of N Normal cells with a Reduction cell
  between stages; filters double at each reduction.
- ImageNet: 3x3 stride-2 conv stem, two Reduction "stem cells" at F/4 and F/2 filters, then the same
  3 stages (as in the paper's reference implementation). ``stem_type='darts'`` selects DARTS's
  ImageNet stem instead: three 3x3 stride-2 convs (Liu et al. 2019, reference code).
The head is a ReLU, global pooling, dropout and a linear classifier; an optional auxiliary head
reads the last cell of the second stage. ``forward`` returns logits only (timm's contract);
training code that wants the auxiliary logits calls ``forward_with_aux``.

The networks implement timm's model API (``forward_features``, ``forward_head``,
``forward_intermediates``, ``feature_info``, ``reset_classifier``, ``group_matcher``,
``set_grad_checkpointing``); ``cellsearch.models`` registers them with timm.
"""
# No ``from __future__ import annotations`` here: torch.fx copies ``forward``'s annotations into the
# code it generates, and a string annotation becomes a type name TorchScript cannot resolve there
# (timm's FX feature extraction, then ``torch.jit.script``, fails on it).
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint
from torch import nn

from cellsearch.space.cell import CellModule
from cellsearch.space.genotype import Genotype, GenotypeError, load_genotype
from cellsearch.space.head import GenotypeNet
from cellsearch.space.networks import TIMM_NAMES
from cellsearch.space.spaces import genotype_from_dict
from cellsearch.space.ops import BN_EPS
from cellsearch.space.skeleton import AuxiliaryHead, CellSpec, ConvStemCell, stage_plan
from cellsearch.validation import fail, integer, one_of, positive_int

STEM_TYPES = ("nasnet", "darts")

def resolve_genotype(genotype: "Genotype | str | Path | dict") -> Genotype:
    """A Genotype from a Genotype, a shipped name, a YAML path or plain data (``Genotype.to_dict()``); a
    genotype of another search space is refused in one line."""
    resolved = genotype_from_dict(genotype) if isinstance(genotype, dict) else load_genotype(genotype)
    if not isinstance(resolved, Genotype):
        raise GenotypeError(f"space=nasnet: the cellnet networks build NASNet cells, got a genotype of "
                            f"space={type(resolved).space}; build it with its own space's network "
                            f"({' or '.join(TIMM_NAMES[type(resolved).space])})")
    return resolved


class CellNet(GenotypeNet):
    """A stem followed by cells compiled from one genotype, and a classification head.

    Feature maps (``feature_info``, ``forward_intermediates``, ``features_only``): one per stage,
    the stem output and the last cell of each resolution, each taken after the ReLU with which
    the next cell reads it; the last one is ``forward_features``' output.
    """

    def __init__(
        self,
        genotype: Genotype,
        stem: nn.Module,
        stem_channels: int,
        stem_reduction: int,
        plan: list[CellSpec],
        num_classes: int,
        in_chans: int,
        auxiliary: bool,
        drop_rate: float,
        drop_path_rate: float,
        global_pool: str,
    ):
        super().__init__()
        integer(num_classes, "num_classes", 0)  # 0: no classifier (timm convention)
        self.genotype = genotype
        self.drop_path_rate = drop_path_rate
        self.grad_checkpointing = False
        self.stem = stem

        self.cells = nn.ModuleList()
        c_prev_prev, c_prev, reduction_prev = stem_channels, stem_channels, False
        for spec in plan:
            if spec.conv_stem:
                cell: nn.Module = ConvStemCell(c_prev, spec.channels)
            else:
                cell_genotype = genotype.reduce if spec.reduction else genotype.normal
                cell = CellModule(cell_genotype, c_prev_prev, c_prev, spec.channels, spec.reduction,
                                  reduction_prev, spec.preprocess_prev_prev, spec.always_preprocess)
            self.cells.append(cell)
            c_prev_prev, c_prev, reduction_prev = c_prev, cell.out_channels, spec.reduction
        self._cell_stages = [spec.stage for spec in plan]
        self.num_features = c_prev
        self._init_feature_info(stem_channels, stem_reduction)

        # The auxiliary head reads the last cell before the final reduction (2/3 of the depth).
        reduction_indices = [i for i, spec in enumerate(plan) if spec.reduction]
        self.aux_index = reduction_indices[-1] - 1 if auxiliary and reduction_indices else None
        self.aux_head = AuxiliaryHead(self.cells[self.aux_index].out_channels, num_classes) \
            if self.aux_index is not None else None

        self.final_act = nn.ReLU()
        self._init_head(self.num_features, num_classes, in_chans, drop_rate, global_pool)
        self.set_drop_path_rate(drop_path_rate)

    def _init_feature_info(self, stem_channels: int, stem_reduction: int) -> None:
        """A feature map per stage: the stem, the last cell before each reduction, and the last cell.

        ``_feature_layers`` holds the layer of each feature (-1 = stem, i = cell i). The hookable
        module that sees the same tensor is the ReLU of the next layer that reads it as h_{i-1}.
        """
        layers = [-1] + [i for i in range(len(self.cells))
                         if i == len(self.cells) - 1 or self.cells[i + 1].reduction]
        self._feature_layers = layers
        self.feature_info = []
        for layer in layers:
            reduction = stem_reduction * 2 ** sum(int(c.reduction) for c in self.cells[: layer + 1])
            channels = stem_channels if layer < 0 else self.cells[layer].out_channels
            self.feature_info.append(dict(num_chs=channels, reduction=reduction, module=self._reader_act(layer)))

    def _reader_act(self, layer: int) -> str:
        """Name of the ReLU that applies to layer ``layer``'s output as the next layer reads it."""
        if layer == len(self.cells) - 1:
            return "final_act"
        reader = self.cells[layer + 1]
        return f"cells.{layer + 1}." + ("conv.0" if isinstance(reader, ConvStemCell) else "preprocess1.0")

    # --- training helpers ----------------------------------------------------------------------
    def drop_path_groups(self) -> list[list[nn.Module]]:
        """Each cell drops paths on its own (``set_drop_path_rate``: the last cell's rate, scaled by depth)."""
        return [[cell] for cell in self.cells]

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups for layer-wise learning-rate decay: the stem, then one group per cell
        (per stage when ``coarse``); the auxiliary and classifier heads come last."""
        if coarse:
            stages = enumerate(self._cell_stages)
            return dict(stem=r"^stem", blocks=[(rf"^cells\.{i}\.", (stage,)) for i, stage in stages])
        return dict(stem=r"^stem", blocks=r"^cells\.(\d+)")

    # --- forward -------------------------------------------------------------------------------
    def _run_cells(self, x: torch.Tensor, aux_index: int = -1) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Final features and the output of cell ``aux_index`` (None for -1, the default)."""
        s0 = s1 = self.stem(x)
        aux_input: torch.Tensor | None = None
        for i, cell in enumerate(self.cells):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                s0, s1 = s1, checkpoint(cell, s0, s1)
            else:
                s0, s1 = s1, cell(s0, s1)
            if i == aux_index:
                aux_input = s1
        return self.final_act(s1), aux_input

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Unpooled features of the last cell, after the final ReLU."""
        return self._run_cells(x)[0]

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits and, in training mode with an auxiliary head, the auxiliary logits (else None)."""
        features, aux_input = self._run_cells(x, -1 if self.aux_index is None else self.aux_index)
        aux_logits = self.aux_head(aux_input) if self.aux_head is not None and self.training else None
        return self.forward_head(features), aux_logits

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
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
        take_layers = {self._feature_layers[i] for i in take_indices}
        last_layer = self._feature_layers[max_index] if stop_early else len(self.cells) - 1

        intermediates = []
        s0 = s1 = self.stem(x)
        if -1 in take_layers:
            intermediates.append(F.relu(s1))
        for i, cell in enumerate(self.cells[: last_layer + 1]):
            s0, s1 = s1, checkpoint(cell, s0, s1) if self.grad_checkpointing else cell(s0, s1)
            if i in take_layers:
                intermediates.append(F.relu(s1))
        if intermediates_only:
            return intermediates
        return self.final_act(s1), intermediates

    def prune_intermediate_layers(
        self,
        indices: int | list[int] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drop the cells after the last feature map in ``indices`` (and the head); returns the
        absolute indices kept, as timm's feature extraction expects."""
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        num_cells = self._feature_layers[max_index] + 1
        prune_end = num_cells < len(self.cells)
        self.cells = self.cells[:num_cells]
        self._cell_stages = self._cell_stages[:num_cells]
        if self.aux_index is not None and self.aux_index >= num_cells:
            self.aux_index, self.aux_head = None, None
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take_indices

    # --- classifier ----------------------------------------------------------------------------
    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier and the auxiliary head's (``num_classes=0`` removes them; ``global_pool=''``
        removes pooling)."""
        super().reset_classifier(num_classes, global_pool)
        if self.aux_head is not None:  # the auxiliary head predicts the same classes
            reference = next(self.parameters())
            self.aux_head.reset_classifier(num_classes)
            self.aux_head.classifier.to(device=reference.device, dtype=reference.dtype)


class CellNetCifar(CellNet):
    """CIFAR skeleton: 3x3 conv stem (3F channels), 3 stages of N Normal cells, Reduction between.

    ``cells_per_stage=6, channels=32`` is NASNet's "6 @ 768" CIFAR network. ``reduction_in_stage``
    selects PNASNet's layout (see :func:`stage_plan`).
    """

    def __init__(
        self,
        genotype: "Genotype | str | Path | dict" = "nasnet_a",
        cells_per_stage: int = 6,
        channels: int = 32,
        num_classes: int = 10,
        in_chans: int = 3,
        stem_multiplier: int = 3,
        auxiliary: bool = False,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
        reduction_in_stage: bool = False,
    ):
        n = positive_int(cells_per_stage, "cells_per_stage")
        f = positive_int(channels, "channels")
        stem_channels = positive_int(stem_multiplier, "stem_multiplier") * f
        stem = nn.Sequential(
            nn.Conv2d(positive_int(in_chans, "in_chans"), stem_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(stem_channels, eps=BN_EPS),
        )
        plan = stage_plan(n, f, reduction_in_stage)
        super().__init__(resolve_genotype(genotype), stem, stem_channels, 1, plan, num_classes, in_chans,
                         auxiliary, drop_rate, drop_path_rate, global_pool)
        self._architecture = dict(cells_per_stage=n, channels=f, stem_multiplier=stem_multiplier,
                                  auxiliary=auxiliary, reduction_in_stage=reduction_in_stage)


class CellNetImageNet(CellNet):
    """ImageNet skeleton of NASNet's reference implementation: 3x3 stride-2 conv stem, two Reduction
    stem cells (F/4 and F/2 filters), then 3 stages of N Normal cells with Reduction cells between.

    NASNet-A Mobile is ``cells_per_stage=4, channels=44, stem_channels=32``; Large is
    ``cells_per_stage=6, channels=168, stem_channels=96``. PNASNet-5 Large is
    ``cells_per_stage=4, channels=216, stem_channels=96, reduction_in_stage=True``.

    ``stem_type='darts'``: DARTS's stem instead, 3x3 stride-2 convs to S/2 and S channels, then a
    ReLU-conv-BN stride-2 conv to S (S = ``stem_channels``, default F), and every cell maps h_{i-2}
    through a 1x1 conv as DARTS does. DARTS V2 ImageNet is ``genotype='darts_v2', cells_per_stage=4,
    channels=48, stem_type='darts'``.
    """

    def __init__(
        self,
        genotype: "Genotype | str | Path | dict" = "nasnet_a",
        cells_per_stage: int = 4,
        channels: int = 44,
        num_classes: int = 1000,
        in_chans: int = 3,
        stem_channels: int | None = None,
        auxiliary: bool = False,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
        reduction_in_stage: bool = False,
        stem_type: str = "nasnet",
    ):
        n = positive_int(cells_per_stage, "cells_per_stage")
        f = positive_int(channels, "channels")
        positive_int(in_chans, "in_chans")
        one_of(stem_type, "stem_type", STEM_TYPES)
        if stem_type == "nasnet":
            if f < 4:
                fail("channels", "at least 4 for the NASNet ImageNet stem (stem cells use F/4)", f)
            s = positive_int(32 if stem_channels is None else stem_channels, "stem_channels")
            stem = nn.Sequential(
                nn.Conv2d(in_chans, s, 3, stride=2, padding=0, bias=False),
                nn.BatchNorm2d(s, eps=BN_EPS),
            )
            # The first stem cell has no h_{i-2}: it reads the raw stem output there (reference code).
            plan = [
                CellSpec(reduction=True, channels=f // 4, stage=0, preprocess_prev_prev=False),
                CellSpec(reduction=True, channels=f // 2, stage=0),
            ]
            plan += stage_plan(n, f, reduction_in_stage, first_stage=1)
            stem_reduction = 2
        else:  # darts
            s = integer(f if stem_channels is None else stem_channels, "stem_channels", 2)
            stem = nn.Sequential(
                nn.Conv2d(in_chans, s // 2, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(s // 2, eps=BN_EPS),
                nn.ReLU(),
                nn.Conv2d(s // 2, s, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(s, eps=BN_EPS),
            )
            plan = [CellSpec(reduction=True, channels=s, stage=0, conv_stem=True)]
            plan += stage_plan(n, f, reduction_in_stage, first_stage=1, always_preprocess=True)
            stem_reduction = 4
        super().__init__(resolve_genotype(genotype), stem, s, stem_reduction, plan, num_classes, in_chans,
                         auxiliary, drop_rate, drop_path_rate, global_pool)
        self._architecture = dict(cells_per_stage=n, channels=f, stem_channels=s, auxiliary=auxiliary,
                                  reduction_in_stage=reduction_in_stage, stem_type=stem_type)
