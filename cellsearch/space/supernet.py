"""The search network beside the final one: a supernet in which every genotype of a space is a path.

Built from the same op table (:mod:`cellsearch.space.ops`) and stage layout as
:class:`~cellsearch.space.network.CellNetCifar`, so an op means the same module in both. Each cell
holds one op per (block, input position, op, input kind); the input kind is the op's stride and
input width, which the stand-alone cell also builds its op from: stride 2 for a Reduction cell's
inputs, and 2F channels when the op reads a concat-combined block. A path is therefore exactly a
stand-alone network, and :meth:`SuperNet.load_standalone` copies a trained child into its path.

Width rule (the ENAS rule, placed where NASNet already has a 1x1 conv): a cell's output is the
concatenation of its output states, whose width depends on the genotype. Every reader of a cell
output (the next cells' ReLU-1x1 conv-BN, or factorized reduction, and the classifier) holds weight
columns for every state the previous cell could output, each as wide as that state can be, and
gathers the columns of the states on the path. A 1x1 conv of a concatenation is the sum of 1x1
convs of its parts, so the path computes what the stand-alone network computes, and every reader's
output is F channels whatever the path. The alternative, one extra 1x1 conv bringing each cell
back to F, would make paths differ from the networks they stand for.

:meth:`SuperNet.forward_relaxed` is DARTS' continuous relaxation of the same space
(:mod:`cellsearch.search.darts`): softmax weights over the input states and over the ops of every
block input, blocks combined by addition.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cellsearch.space.genotype import NUM_CELL_INPUTS, Cell, Genotype, GenotypeError, SearchSpace
from cellsearch.space.network import CellNetCifar
from cellsearch.space.skeleton import stage_plan
from cellsearch.space.ops import BN_EPS, build_op, pointwise_stride

__all__ = ["SuperCell", "SuperNet", "parameter_free_ops"]

Pieces = list[tuple[int, torch.Tensor]]  # (state index, tensor) of a cell output, in concat order


def parameter_free_ops(ops: tuple[str, ...], channels: int = 8) -> tuple[str, ...]:
    """The ops of ``ops`` that hold no weights at stride 1 (identity and pools): what DARTS collapses to."""
    return tuple(op for op in ops if not any(True for _ in build_op(op, channels, channels, 1).parameters()))


def _op_key(op: str, stride: int, width: int) -> str:
    return f"{op}__s{stride}_c{width}"


class GatheredReader(nn.Module):
    """ReLU -> 1x1 conv (or factorized reduction) -> BN over a cell output of any path.

    ``slot_widths[s]`` is the widest state ``s`` can be; the weight holds that many input columns
    for every state, and a path uses the columns of its states (the first ``width`` of each).
    ``skip_same_width``: pass the input through when it already has ``c_out`` channels, as the
    stand-alone cell does for h_{i-2}.
    """

    def __init__(self, slot_widths: list[int], c_out: int, reduce: bool = False, skip_same_width: bool = False):
        super().__init__()
        self.offsets = [sum(slot_widths[:s]) for s in range(len(slot_widths))]
        self.slot_widths = list(slot_widths)
        self.c_out, self.reduce, self.skip_same_width = c_out, reduce, skip_same_width
        total = sum(slot_widths)
        if reduce:  # two stride-2 1x1 convs, the second on the input shifted by one pixel (FactorizedReduce)
            self.weight_1 = nn.Parameter(torch.empty(c_out // 2, total))
            self.weight_2 = nn.Parameter(torch.empty(c_out - c_out // 2, total))
        else:
            self.weight = nn.Parameter(torch.empty(c_out, total))
        for p in self.parameters():
            nn.init.kaiming_uniform_(p, a=5 ** 0.5)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS)

    def columns(self, layout: list[tuple[int, int]]) -> torch.Tensor:
        """Weight columns for pieces ``layout`` = [(state, width), ...]."""
        for s, width in layout:
            if width > self.slot_widths[s]:
                raise GenotypeError(f"state {s} is {width} channels wide, the supernet holds {self.slot_widths[s]}")
        return torch.cat([torch.arange(self.offsets[s], self.offsets[s] + w) for s, w in layout])

    def forward(self, pieces: Pieces) -> torch.Tensor:
        x = pieces[0][1] if len(pieces) == 1 else torch.cat([t for _, t in pieces], dim=1)
        if self.skip_same_width and not self.reduce and x.shape[1] == self.c_out:
            return x
        idx = self.columns([(s, t.shape[1]) for s, t in pieces]).to(x.device)
        x = F.relu(x)
        if self.reduce:
            shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
            out = torch.cat([F.conv2d(pointwise_stride(x, 2), self.weight_1[:, idx, None, None]),
                             F.conv2d(pointwise_stride(shifted, 2), self.weight_2[:, idx, None, None])], dim=1)
        else:
            out = F.conv2d(x, self.weight[:, idx, None, None])
        return self.bn(out)


class SuperCell(nn.Module):
    """A Normal or Reduction cell holding every op of ``space`` for every block input.

    ``slots_prev_prev`` / ``slots_prev``: the widest each output state of the two previous layers
    can be (a reader's weight columns).
    """

    def __init__(self, space: SearchSpace, slots_prev_prev: list[int], slots_prev: list[int], channels: int,
                 reduction: bool, reduction_prev: bool):
        super().__init__()
        self.space, self.channels, self.reduction = space, channels, reduction
        self.preprocess0 = GatheredReader(slots_prev_prev, channels, reduce=reduction_prev,
                                          skip_same_width=not reduction_prev)
        self.preprocess1 = GatheredReader(slots_prev, channels)
        block_widths = sorted({2 * channels if c == "concat" else channels for c in space.combines})
        self.ops = nn.ModuleList()
        for k in range(space.num_blocks):
            kinds = {(2 if reduction else 1, channels)}
            if k > 0:
                kinds |= {(1, w) for w in block_widths}
            positions = nn.ModuleList()
            for _ in range(2):
                positions.append(nn.ModuleDict({
                    _op_key(op, stride, width): build_op(op, width, channels, stride)
                    for stride, width in sorted(kinds) for op in space.ops
                }))
            self.ops.append(positions)
        # A Reduction cell whose output names one of its inputs halves it (as CellModule does).
        self.output_reduce = nn.ModuleDict({
            str(s): build_op("identity", channels, channels, 2) for s in range(NUM_CELL_INPUTS)
        }) if reduction else nn.ModuleDict()
        self.out_slots = [channels] * NUM_CELL_INPUTS + [block_widths[-1]] * space.num_blocks

    def _stride(self, state: int) -> int:
        return 2 if self.reduction and state < NUM_CELL_INPUTS else 1

    def _outputs(self, states: list[torch.Tensor], concat: tuple[int, ...]) -> Pieces:
        return [(s, self.output_reduce[str(s)](states[s]) if str(s) in self.output_reduce else states[s])
                for s in concat]

    def forward(self, s0: Pieces, s1: Pieces, cell: Cell) -> Pieces:
        """The path ``cell``: its output states as (state, tensor) pieces, in ``cell.concat`` order."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for k, block in enumerate(cell.blocks):
            a, b = (self.ops[k][p][_op_key(op, self._stride(s), states[s].shape[1])](states[s])
                    for p, (s, op) in enumerate(block.pairs()))
            states.append(a + b if block.combine == "add" else torch.cat([a, b], dim=1))
        return self._outputs(states, cell.concat)

    def forward_relaxed(self, s0: Pieces, s1: Pieces, input_weights: list[torch.Tensor],
                        op_weights: list[torch.Tensor]) -> Pieces:
        """DARTS' mixed cell: per block input, a softmax-weighted sum of the states (grouped by the
        stride their ops use), each group through the softmax-weighted sum of all ops; blocks add up.

        ``input_weights[2k + p]`` has one weight per state block k can read, ``op_weights[2k + p]`` one per op.
        """
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for k in range(self.space.num_blocks):
            block = 0
            for p in range(2):
                w_in, w_op = input_weights[2 * k + p], op_weights[2 * k + p]
                groups: dict[int, torch.Tensor] = {}
                for s in range(len(states)):
                    stride = self._stride(s)
                    term = w_in[s] * states[s]
                    groups[stride] = groups[stride] + term if stride in groups else term
                for stride, x in groups.items():
                    for i, op in enumerate(self.space.ops):
                        block = block + w_op[i] * self.ops[k][p][_op_key(op, stride, self.channels)](x)
            states.append(block)
        return self._outputs(states, tuple(range(NUM_CELL_INPUTS, len(states))))  # DARTS: all blocks


class SuperNet(nn.Module):
    """The CIFAR skeleton of :class:`~cellsearch.space.network.CellNetCifar` (3F stem, three stages of
    N Normal cells, Reduction cells between) with :class:`SuperCell` cells; ``forward(x, genotype)``
    runs one path."""

    def __init__(self, space: SearchSpace, cells_per_stage: int = 2, channels: int = 16, num_classes: int = 10,
                 in_chans: int = 3, stem_multiplier: int = 3):
        super().__init__()
        self.space = space
        self.channels = channels
        stem_channels = stem_multiplier * channels
        self.stem = nn.Sequential(nn.Conv2d(in_chans, stem_channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(stem_channels, eps=BN_EPS))
        self.plan = stage_plan(cells_per_stage, channels)
        self.cells = nn.ModuleList()
        slots_prev_prev = slots_prev = [stem_channels]
        reduction_prev = False
        for spec in self.plan:
            cell = SuperCell(space, slots_prev_prev, slots_prev, spec.channels, spec.reduction, reduction_prev)
            self.cells.append(cell)
            slots_prev_prev, slots_prev, reduction_prev = slots_prev, cell.out_slots, spec.reduction
        self.head_slots = slots_prev
        total = sum(slots_prev)
        self.classifier_weight = nn.Parameter(torch.empty(num_classes, total))
        self.classifier_bias = nn.Parameter(torch.zeros(num_classes))
        nn.init.kaiming_uniform_(self.classifier_weight, a=5 ** 0.5)
        self._head_offsets = [sum(slots_prev[:s]) for s in range(len(slots_prev))]

    def batch_norms(self) -> list[nn.BatchNorm2d]:
        """Every batch-norm layer (cached: a supernet has hundreds of modules)."""
        if not hasattr(self, "_batch_norms"):
            self._batch_norms = [m for m in self.modules() if isinstance(m, nn.BatchNorm2d)]
        return self._batch_norms

    def check_path(self, genotype: Genotype) -> None:
        """Raise GenotypeError, in one line naming the difference, for a genotype outside this supernet's space."""
        try:
            self.space.validate(genotype)
        except GenotypeError as err:
            raise GenotypeError(f"genotype outside the supernet's space: {err}") from None

    def _head(self, pieces: Pieces) -> torch.Tensor:
        pooled = torch.cat([F.relu(t).mean(dim=(2, 3)) for _, t in pieces], dim=1)
        idx = torch.cat([torch.arange(self._head_offsets[s], self._head_offsets[s] + t.shape[1]) for s, t in pieces])
        return F.linear(pooled, self.classifier_weight[:, idx.to(pooled.device)], self.classifier_bias)

    def forward(self, x: torch.Tensor, genotype: Genotype) -> torch.Tensor:
        """Logits of the path ``genotype`` (call :meth:`check_path` first for a readable error)."""
        s0 = s1 = [(0, self.stem(x))]
        for spec, cell in zip(self.plan, self.cells):
            s0, s1 = s1, cell(s0, s1, genotype.reduce if spec.reduction else genotype.normal)
        return self._head(s1)

    def forward_relaxed(self, x: torch.Tensor, weights: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]]
                        ) -> torch.Tensor:
        """Logits of the relaxed network; ``weights[cell_type]`` = (input weights, op weights) per block input."""
        s0 = s1 = [(0, self.stem(x))]
        for spec, cell in zip(self.plan, self.cells):
            s0, s1 = s1, cell.forward_relaxed(s0, s1, *weights["reduce" if spec.reduction else "normal"])
        return self._head(s1)

    # --- a stand-alone network's weights in its path --------------------------------------------
    @torch.no_grad()
    def load_standalone(self, net: CellNetCifar) -> None:
        """Copy the weights and batch-norm statistics of ``net`` into the path of ``net.genotype``."""
        self.check_path(net.genotype)
        if len(net.cells) != len(self.cells) or net.stem[0].out_channels != self.stem[0].out_channels:
            raise ValueError("the stand-alone network's skeleton (cells per stage, channels) differs from the supernet's")
        self.stem.load_state_dict(net.stem.state_dict())
        layout_prev_prev = layout_prev = [(0, self.stem[0].out_channels)]
        for spec, cell, sa in zip(self.plan, self.cells, net.cells):
            path = net.genotype.reduce if spec.reduction else net.genotype.normal
            _load_reader(cell.preprocess0, sa.preprocess0, layout_prev_prev)
            _load_reader(cell.preprocess1, sa.preprocess1, layout_prev)
            for k, block in enumerate(path.blocks):
                for p, (s, op) in enumerate(block.pairs()):
                    module = sa.ops[2 * k + p]
                    width = _state_width(path, s, cell.channels)
                    cell.ops[k][p][_op_key(op, cell._stride(s), width)].load_state_dict(module.state_dict())
            for s, module in sa.output_reduce.items():
                cell.output_reduce[s].load_state_dict(module.state_dict())
            layout_prev_prev, layout_prev = layout_prev, [(s, _state_width(path, s, cell.channels)) for s in path.concat]
        idx = torch.cat([torch.arange(self._head_offsets[s], self._head_offsets[s] + w) for s, w in layout_prev])
        self.classifier_weight[:, idx] = net.classifier.weight
        self.classifier_bias.copy_(net.classifier.bias)


def _state_width(cell: Cell, state: int, channels: int) -> int:
    if state < NUM_CELL_INPUTS:
        return channels
    return 2 * channels if cell.blocks[state - NUM_CELL_INPUTS].combine == "concat" else channels


@torch.no_grad()
def _load_reader(reader: GatheredReader, module: nn.Module, layout: list[tuple[int, int]]) -> None:
    """Copy a stand-alone preprocess module (ReLUConvBN, FactorizedReduce or Identity) into ``reader``'s columns."""
    if isinstance(module, nn.Identity):
        return
    idx = reader.columns(layout)
    if reader.reduce:
        reader.weight_1[:, idx] = module.conv_1.weight[:, :, 0, 0]
        reader.weight_2[:, idx] = module.conv_2.weight[:, :, 0, 0]
        reader.bn.load_state_dict(module.bn.state_dict())
    else:
        reader.weight[:, idx] = module[1].weight[:, :, 0, 0]
        reader.bn.load_state_dict(module[2].state_dict())
