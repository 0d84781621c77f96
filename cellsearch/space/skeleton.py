"""The parts of a network besides its cells: where each cell sits (the stage plan), DARTS's stem
conv that stands in the cell list, and the auxiliary head."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cellsearch.space.ops import BN_EPS, ReLUConvBN


@dataclass(frozen=True)
class CellSpec:
    """Where a cell sits in a network: its type, width and stage.

    ``preprocess_prev_prev=False``: read h_{i-2} as it is (NASNet's first ImageNet stem cell).
    ``always_preprocess``: map h_{i-2} through a 1x1 conv even when its width is already F (DARTS).
    ``conv_stem``: not a genotype cell but DARTS's second stem conv (see :class:`ConvStemCell`).
    """

    reduction: bool
    channels: int
    stage: int
    preprocess_prev_prev: bool = True
    always_preprocess: bool = False
    conv_stem: bool = False


class ConvStemCell(nn.Module):
    """DARTS's second ImageNet stem (ReLU, 3x3 stride-2 conv, BN) applied to h_{i-1}.

    It sits in the network's cell list so the first genotype cell reads the two stem outputs as
    (h_{i-2}, h_{i-1}), exactly as in DARTS's ``NetworkImageNet``.
    """

    reduction = True

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.drop_prob = 0.0  # set by set_drop_path_rate like every cell; a stem conv never drops
        self.conv = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.out_channels = c_out

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        return self.conv(s1)


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
        self.reset_classifier(num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = nn.Linear(768, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def stage_plan(cells_per_stage: int, channels: int, reduction_in_stage: bool = False,
               first_stage: int = 0, always_preprocess: bool = False) -> list[CellSpec]:
    """Three stages of ``cells_per_stage`` Normal cells, a Reduction cell before stages 2 and 3,
    filters doubling at each reduction. With ``reduction_in_stage`` the Reduction cell counts as
    the stage's first cell (PNASNet's layout: 3N cells in all) instead of coming on top (NASNet's)."""
    plan = []
    for stage in range(3):
        width, normal_cells = channels * 2 ** stage, cells_per_stage
        if stage > 0:
            plan.append(CellSpec(reduction=True, channels=width, stage=first_stage + stage,
                                 always_preprocess=always_preprocess))
            normal_cells -= int(reduction_in_stage)
        plan += [CellSpec(reduction=False, channels=width, stage=first_stage + stage,
                          always_preprocess=always_preprocess) for _ in range(normal_cells)]
    return plan
