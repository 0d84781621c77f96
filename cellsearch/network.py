"""Networks built from any genotype: the CIFAR and ImageNet skeletons of the NASNet paper.

Both are a stem followed by a plan of cells (Zoph et al. 2018, Fig. 2):
- CIFAR: 3x3 conv stem with 3F channels, then 3 stages of N Normal cells with a Reduction cell
  between stages; filters double at each reduction.
- ImageNet: 3x3 stride-2 conv stem, two Reduction "stem cells" at F/4 and F/2 filters, then the same
  3 stages (as in the paper's reference implementation).
The head is a ReLU, global pooling, dropout and a linear classifier; an optional auxiliary head
reads the last cell of the second stage. ``forward`` returns logits only (timm's contract);
training code that wants the auxiliary logits calls ``forward_with_aux``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from timm.layers import create_classifier
from torch import nn

from cellsearch.cell import CellModule
from cellsearch.genotype import Genotype, load_genotype
from cellsearch.ops import BN_EPS


@dataclass(frozen=True)
class CellSpec:
    """Where a cell sits in a network: its type, width and stage."""

    reduction: bool
    channels: int
    stage: int
    preprocess_prev_prev: bool = True


class AuxiliaryHead(nn.Module):
    """Auxiliary classifier (NASNet/Inception style), independent of the input resolution."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Conv2d(in_channels, 128, 1, bias=False),
            nn.BatchNorm2d(128, eps=BN_EPS),
            nn.ReLU(),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768, eps=BN_EPS),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def stage_plan(cells_per_stage: int, channels: int, reduction_in_stage: bool = False,
               first_stage: int = 0) -> list[CellSpec]:
    """Three stages of ``cells_per_stage`` Normal cells, a Reduction cell before stages 2 and 3,
    filters doubling at each reduction. With ``reduction_in_stage`` the Reduction cell counts as
    the stage's first cell (PNASNet's layout: 3N cells in all) instead of coming on top (NASNet's)."""
    plan = []
    for stage in range(3):
        width, normal_cells = channels * 2 ** stage, cells_per_stage
        if stage > 0:
            plan.append(CellSpec(reduction=True, channels=width, stage=first_stage + stage))
            normal_cells -= int(reduction_in_stage)
        plan += [CellSpec(reduction=False, channels=width, stage=first_stage + stage) for _ in range(normal_cells)]
    return plan


def _positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


class CellNet(nn.Module):
    """A stem followed by cells compiled from one genotype, and a classification head."""

    def __init__(
        self,
        genotype: Genotype,
        stem: nn.Module,
        stem_channels: int,
        stem_reduction: int,
        plan: list[CellSpec],
        num_classes: int,
        auxiliary: bool,
        drop_rate: float,
        drop_path_rate: float,
        global_pool: str,
    ):
        super().__init__()
        _positive_int("num_classes", num_classes, minimum=0)  # 0: no classifier (timm convention)
        self.genotype = genotype
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.drop_path_rate = drop_path_rate
        self.stem = stem

        self.cells = nn.ModuleList()
        self.feature_info = [dict(num_chs=stem_channels, reduction=stem_reduction, module="stem")]
        c_prev_prev, c_prev, reduction_prev, reduction = stem_channels, stem_channels, False, stem_reduction
        for spec in plan:
            cell_genotype = genotype.reduce if spec.reduction else genotype.normal
            cell = CellModule(cell_genotype, c_prev_prev, c_prev, spec.channels, spec.reduction,
                              reduction_prev, spec.preprocess_prev_prev)
            self.cells.append(cell)
            reduction *= 2 if spec.reduction else 1
            c_prev_prev, c_prev, reduction_prev = c_prev, cell.out_channels, spec.reduction
        # A feature map per stage: the last cell before each change of resolution, and the last cell.
        for i, cell in enumerate(self.cells):
            is_last = i == len(self.cells) - 1
            if is_last or self.cells[i + 1].reduction:
                stride = stem_reduction * 2 ** sum(c.reduction for c in self.cells[: i + 1])
                self.feature_info.append(dict(num_chs=cell.out_channels, reduction=stride, module=f"cells.{i}"))
        self.num_features = self.head_hidden_size = c_prev

        # The auxiliary head reads the last cell before the final reduction (2/3 of the depth).
        reduction_indices = [i for i, spec in enumerate(plan) if spec.reduction]
        self.aux_index = reduction_indices[-1] - 1 if auxiliary and reduction_indices else None
        self.aux_head = AuxiliaryHead(self.cells[self.aux_index].out_channels, num_classes) \
            if self.aux_index is not None else None

        self.final_act = nn.ReLU()
        self.global_pool, self.classifier = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        self.head_drop = nn.Dropout(drop_rate)
        self.set_drop_path_rate(drop_path_rate)

    # --- training helpers ----------------------------------------------------------------------
    def set_drop_path_rate(self, rate: float) -> None:
        """Set the drop-path probability of the last cell; earlier cells get it scaled by depth
        (NASNet's ScheduledDropPath). Trainers ramp ``rate`` linearly from 0 over training."""
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"drop path rate must be in [0, 1), got {rate}")
        for i, cell in enumerate(self.cells):
            cell.drop_prob = rate * (i + 1) / len(self.cells)

    # --- forward -------------------------------------------------------------------------------
    def _run_cells(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        s0 = s1 = self.stem(x)
        aux_input = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1)
            if i == self.aux_index:
                aux_input = s1
        return self.final_act(s1), aux_input

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._run_cells(x)[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits and, in training mode with an auxiliary head, the auxiliary logits (else None)."""
        features, aux_input = self._run_cells(x)
        aux_logits = self.aux_head(aux_input) if self.aux_head is not None and self.training else None
        return self.forward_head(features), aux_logits

    # --- classifier ----------------------------------------------------------------------------
    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        pool_type = global_pool if global_pool is not None else self.global_pool.pool_type
        self.global_pool, self.classifier = create_classifier(self.num_features, num_classes, pool_type=pool_type)


class CellNetCifar(CellNet):
    """CIFAR skeleton: 3x3 conv stem (3F channels), 3 stages of N Normal cells, Reduction between.

    ``cells_per_stage=6, channels=32`` is NASNet's "6 @ 768" CIFAR network. ``reduction_in_stage``
    selects PNASNet's layout (see :func:`stage_plan`).
    """

    def __init__(
        self,
        genotype: "Genotype | str | Path" = "nasnet_a",
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
        n = _positive_int("cells_per_stage", cells_per_stage)
        f = _positive_int("channels", channels)
        stem_channels = _positive_int("stem_multiplier", stem_multiplier) * f
        stem = nn.Sequential(
            nn.Conv2d(_positive_int("in_chans", in_chans), stem_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(stem_channels, eps=BN_EPS),
        )
        plan = stage_plan(n, f, reduction_in_stage)
        super().__init__(load_genotype(genotype), stem, stem_channels, 1, plan, num_classes, auxiliary,
                         drop_rate, drop_path_rate, global_pool)


class CellNetImageNet(CellNet):
    """ImageNet skeleton of NASNet's reference implementation: 3x3 stride-2 conv stem, two Reduction
    stem cells (F/4 and F/2 filters), then 3 stages of N Normal cells with Reduction cells between.

    NASNet-A Mobile is ``cells_per_stage=4, channels=44, stem_channels=32``; Large is
    ``cells_per_stage=6, channels=168, stem_channels=96``. PNASNet-5 Large is
    ``cells_per_stage=4, channels=216, stem_channels=96, reduction_in_stage=True``.
    """

    def __init__(
        self,
        genotype: "Genotype | str | Path" = "nasnet_a",
        cells_per_stage: int = 4,
        channels: int = 44,
        num_classes: int = 1000,
        in_chans: int = 3,
        stem_channels: int = 32,
        auxiliary: bool = False,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
        reduction_in_stage: bool = False,
    ):
        n = _positive_int("cells_per_stage", cells_per_stage)
        f = _positive_int("channels", channels)
        if f < 4:
            raise ValueError(f"channels must be at least 4 for the ImageNet skeleton (stem cells use F/4), got {f}")
        stem_channels = _positive_int("stem_channels", stem_channels)
        stem = nn.Sequential(
            nn.Conv2d(_positive_int("in_chans", in_chans), stem_channels, 3, stride=2, padding=0, bias=False),
            nn.BatchNorm2d(stem_channels, eps=BN_EPS),
        )
        # The first stem cell has no h_{i-2}: it reads the raw stem output there (reference code).
        plan = [
            CellSpec(reduction=True, channels=f // 4, stage=0, preprocess_prev_prev=False),
            CellSpec(reduction=True, channels=f // 2, stage=0),
        ]
        plan += stage_plan(n, f, reduction_in_stage, first_stage=1)
        super().__init__(load_genotype(genotype), stem, stem_channels, 2, plan, num_classes, auxiliary,
                         drop_rate, drop_path_rate, global_pool)
