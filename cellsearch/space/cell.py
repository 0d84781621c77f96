"""One cell module compiled from a genotype cell.

The cell maps its two inputs to F channels (a 1x1 ReLU-Conv-BN; a factorized reduction for h_{i-2}
when it is twice the size of h_{i-1}), then runs the blocks in order and concatenates the states in
the genotype's output list. Channel counts are tracked per state: a concat-combined block has 2F.
"""
from __future__ import annotations

import torch
from torch import nn

from cellsearch.space.genotype import NUM_CELL_INPUTS, Cell
from cellsearch.space.ops import FactorizedReduce, ReLUConvBN, build_op, is_parameter_free_identity


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Zero whole samples with probability ``drop_prob`` and rescale the rest (ScheduledDropPath)."""
    if drop_prob <= 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0], 1, 1, 1)).bernoulli_(keep_prob)
    return x * mask / keep_prob


class CellModule(nn.Module):
    """A Normal or Reduction cell built once from ``genotype_cell``; forward is a loop over blocks.

    Args:
        genotype_cell: blocks and output list.
        c_prev_prev, c_prev: channels of h_{i-2} and h_{i-1}.
        channels: F, the width of every op's output.
        reduction: stride 2 for ops that read the cell inputs.
        reduction_prev: h_{i-2} has twice the spatial size of h_{i-1} (the previous cell reduced).
        preprocess_prev_prev: map h_{i-2} to F channels. NASNet's first ImageNet stem cell has no
            h_{i-2} and reads the raw stem output there instead: pass False for it.
        always_preprocess: apply the 1x1 ReLU-Conv-BN to h_{i-2} even when it already has F channels
            (DARTS does; NASNet's reference code skips it).
    """

    def __init__(
        self,
        genotype_cell: Cell,
        c_prev_prev: int,
        c_prev: int,
        channels: int,
        reduction: bool,
        reduction_prev: bool,
        preprocess_prev_prev: bool = True,
        always_preprocess: bool = False,
    ):
        super().__init__()
        self.reduction = reduction
        self.drop_prob = 0.0
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(c_prev_prev, channels)
        elif preprocess_prev_prev and (always_preprocess or c_prev_prev != channels):
            self.preprocess0 = ReLUConvBN(c_prev_prev, channels, 1)
        else:
            self.preprocess0 = nn.Identity()
        self.preprocess1 = ReLUConvBN(c_prev, channels, 1)
        state_channels = [channels if not isinstance(self.preprocess0, nn.Identity) else c_prev_prev, channels]

        # Flat per-op tables (op j reads state op_inputs[j]; ops 2k and 2k+1 form block k) so that
        # forward iterates the ModuleList directly, which TorchScript can compile.
        self.op_inputs: list[int] = []
        self.op_drops: list[bool] = []
        self.block_adds: list[bool] = []
        self.ops = nn.ModuleList()
        for block in genotype_cell.blocks:
            for state, op_name in block.pairs():
                stride = 2 if reduction and state < NUM_CELL_INPUTS else 1
                op = build_op(op_name, state_channels[state], channels, stride)
                self.ops.append(op)
                self.op_inputs.append(state)
                self.op_drops.append(not is_parameter_free_identity(op))
            self.block_adds.append(block.combine == "add")
            state_channels.append(2 * channels if block.combine == "concat" else channels)

        self.concat = list(genotype_cell.concat)
        # A reduction cell whose output list names one of its inputs must halve that input too.
        self.output_reduce = nn.ModuleDict({
            str(s): FactorizedReduce(state_channels[s], state_channels[s])
            for s in self.concat if reduction and s < NUM_CELL_INPUTS
        })
        self.out_channels = sum(state_channels[s] for s in self.concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        first = states[0]  # the block's first operand, held until its second op has run
        for j, op in enumerate(self.ops):
            y = op(states[self.op_inputs[j]])
            if self.op_drops[j]:
                y = drop_path(y, self.drop_prob, self.training)
            if j % 2 == 0:
                first = y
            elif self.block_adds[j // 2]:
                states.append(first + y)
            else:
                states.append(torch.cat([first, y], dim=1))
        reduced: dict[int, torch.Tensor] = {}
        for key, module in self.output_reduce.items():
            reduced[int(key)] = module(states[int(key)])
        outputs: list[torch.Tensor] = []
        for s in self.concat:
            outputs.append(reduced[s] if s in reduced else states[s])
        return torch.cat(outputs, dim=1)
