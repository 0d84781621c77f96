"""NASNet genotypes drawn and described: a diagram of the Normal and the Reduction cell, and their blocks as text.

Drawn with matplotlib alone (no graphviz): a cell diagram has a node per cell input, per op and per
block, and one for the cell output, laid out left to right by depth so every edge points right.
This is the NASNet space's diagram module (see :mod:`cellsearch.space.support`).
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cellsearch.space.genotype import NUM_CELL_INPUTS, Cell, Genotype  # noqa: E402

__all__ = ["describe", "describe_cell", "draw_cell", "figure"]

_COLORS = {"input": "#b7e1a1", "conv": "#a9c8f0", "pool": "#f7c98b", "identity": "#dddddd", "none": "#ffffff",
           "block": "#fff3a0", "output": "#d9b8f0"}


def _op_color(op: str) -> str:
    if op == "none":
        return _COLORS["none"]
    if op in ("identity", "skip_connect"):
        return _COLORS["identity"]
    return _COLORS["pool"] if "pool" in op else _COLORS["conv"]


def _state_label(index: int) -> str:
    return ("h[i-2]", "h[i-1]")[index] if index < NUM_CELL_INPUTS else f"block {index - NUM_CELL_INPUTS}"


def draw_cell(cell: Cell, ax: Axes, title: str = "") -> None:
    """Draw one cell on ``ax``: inputs, an op node per (input, op) pair, block nodes, output."""
    depth = _depths(cell)
    last_column = 2 * max(depth) + 1
    rows = max(len(cell.blocks), 2)
    # Blocks one per row, top to bottom; the two cell inputs spread over the same height.
    pos = {0: (0.0, -(rows - 1) * 0.25), 1: (0.0, -(rows - 1) * 0.75)}
    for k in range(len(cell.blocks)):
        pos[NUM_CELL_INPUTS + k] = (2.0 * depth[NUM_CELL_INPUTS + k], -float(k))
    box = dict(boxstyle="round,pad=0.3", ec="#444444", lw=0.8)

    def node(x: float, y: float, text: str, color: str):
        return ax.text(x, y, text, ha="center", va="center", fontsize=8, bbox={**box, "fc": color}, zorder=3)

    def edge(src, dst, style: str = "arc3,rad=0.0") -> None:
        ax.annotate("", xy=(0.0, 0.5), xycoords=dst, xytext=(1.0, 0.5), textcoords=src, zorder=2,
                    arrowprops=dict(arrowstyle="-|>", color="#555555", lw=0.8, shrinkA=1, shrinkB=1,
                                    connectionstyle=style))

    artists = {i: node(*pos[i], _state_label(i), _COLORS["input"]) for i in range(NUM_CELL_INPUTS)}
    for k, block in enumerate(cell.blocks):
        s = NUM_CELL_INPUTS + k
        x, y = pos[s]
        label = f"block {k}\n{'add' if block.combine == 'add' else 'concat'}"
        artists[s] = node(x, y, label, _COLORS["block"])
        for slot, (inp, op) in enumerate(block.pairs()):
            op_node = node(x - 1.0, y + (0.22 if slot == 0 else -0.22), op, _op_color(op))
            edge(artists[inp], op_node, "arc3,rad=0.05" if inp < NUM_CELL_INPUTS else "arc3,rad=0.0")
            edge(op_node, artists[s])
    out = node(float(last_column), -(rows - 1) / 2.0, "output\nconcat", _COLORS["output"])
    top, bottom = 0.75, -(rows - 1) - 0.75  # lanes above and below the blocks
    for s in cell.concat:
        if s >= NUM_CELL_INPUTS:
            edge(artists[s], out, "arc3,rad=-0.05")
        else:  # a cell input in the output list runs in a dashed lane around the blocks
            x0, y0 = pos[s]
            lane = top if s == 0 else bottom
            ax.plot([x0, x0, last_column], [y0, lane, lane], ls="--", lw=0.8, color="#555555", zorder=1)
            ax.annotate("", xy=(0.5, 1.0 if s == 0 else 0.0), xycoords=out, xytext=(last_column, lane),
                        textcoords="data", zorder=2,
                        arrowprops=dict(arrowstyle="-|>", color="#555555", lw=0.8, ls="--", shrinkA=0, shrinkB=1))
    ax.set_xlim(-0.8, last_column + 0.8)
    ax.set_ylim(bottom - 0.2, top + 0.2)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)


def figure(genotype: Genotype, title: str = "") -> Figure:
    """The Normal cell above the Reduction cell (the caller saves and closes the figure)."""
    columns = max(2 * max(_depths(c)) + 2 for c in (genotype.normal, genotype.reduce))
    height = sum(max(len(c.blocks), 2) for c in (genotype.normal, genotype.reduce))
    fig, axes = plt.subplots(2, 1, figsize=(max(6.0, 1.5 * columns), 1.0 + 0.9 * height),
                             height_ratios=[max(len(c.blocks), 2) for c in (genotype.normal, genotype.reduce)],
                             layout="constrained")
    draw_cell(genotype.normal, axes[0], "Normal cell")
    draw_cell(genotype.reduce, axes[1], "Reduction cell (ops on h[i-2], h[i-1] use stride 2)")
    if title or genotype.name:
        fig.suptitle(title or genotype.name, fontsize=11)
    return fig


def _depths(cell: Cell) -> list[int]:
    depth = [0] * NUM_CELL_INPUTS
    for block in cell.blocks:
        depth.append(1 + max(depth[i] for i in block.inputs))
    return depth


# --- as text ---------------------------------------------------------------------------------
def state_name(index: int) -> str:
    """Readable name of hidden state ``index`` inside a cell."""
    return ("h[i-2]", "h[i-1]")[index] if index < NUM_CELL_INPUTS else f"block{index - NUM_CELL_INPUTS}"


def describe_cell(cell: Cell) -> list[str]:
    """One line per block, then the output list."""
    lines = []
    for k, block in enumerate(cell.blocks):
        (ia, oa), (ib, ob) = block.pairs()
        joiner = " + " if block.combine == "add" else " ++ "
        lines.append(f"  block{k} = {oa}({state_name(ia)}){joiner}{ob}({state_name(ib)})"
                     + ("   [concat: 2F channels]" if block.combine == "concat" else ""))
    lines.append(f"  output = concat({', '.join(state_name(s) for s in cell.concat)})")
    return lines


def describe(genotype: Genotype) -> str:
    """The genotype's name and source, then each cell's blocks, one a line."""
    lines = [f"{genotype.name or 'genotype'}" + (f": {genotype.source}" if genotype.source else "")]
    for title, cell in (("Normal cell", genotype.normal), ("Reduction cell", genotype.reduce)):
        lines.append(f"{title} ({len(cell.blocks)} blocks; '+' adds, '++' concatenates)")
        lines += describe_cell(cell)
    return "\n".join(lines)
