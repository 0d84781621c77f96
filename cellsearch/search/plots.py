"""Pictures of a search: reward against children, and diagrams of a genotype's two cells.

Drawn with matplotlib alone (no graphviz): a cell diagram has a node per cell input, per op and per
block, and one for the cell output, laid out left to right by depth so every edge points right.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cellsearch.search.atomic import atomic_write  # noqa: E402
from cellsearch.space.genotype import NUM_CELL_INPUTS, Cell, Genotype  # noqa: E402
from cellsearch.search.store import TrialRow  # noqa: E402

_COLORS = {"input": "#b7e1a1", "conv": "#a9c8f0", "pool": "#f7c98b", "identity": "#dddddd", "none": "#ffffff",
           "block": "#fff3a0", "output": "#d9b8f0"}


def plot_rewards(rows: Sequence[TrialRow], path: "str | Path", title: str = "") -> Path:
    """Reward of every child in the order they finished, the best so far, and failed children."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    xs_ok = [i + 1 for i, r in enumerate(rows) if r.ok and r.reward is not None]
    ys_ok = [r.reward for r in rows if r.ok and r.reward is not None]
    ax.scatter(xs_ok, ys_ok, s=14, color="tab:blue", alpha=0.6, label="child reward")
    best, best_curve = None, []
    for r in rows:
        if r.ok and r.reward is not None and (best is None or r.reward > best):
            best = r.reward
        best_curve.append(best)
    ax.step(range(1, len(rows) + 1), [float("nan") if b is None else b for b in best_curve], where="post",
            color="tab:green", label="best so far")
    failed = [i + 1 for i, r in enumerate(rows) if not r.ok]
    if failed:
        floor = min(ys_ok, default=0.0)
        ax.scatter(failed, [floor] * len(failed), marker="x", color="tab:red", label="failed child")
    ax.set_xlabel("children evaluated")
    ax.set_ylabel("reward (validation accuracy)")
    ax.set_title(title or f"{len(rows)} children")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format=path.suffix.lstrip(".") or "png"))
    plt.close(fig)
    return path


def plot_pareto(rows: Sequence[TrialRow], front: Sequence[TrialRow], metric: str, published: dict[str, float],
                path: "str | Path", title: str = "") -> Path:
    """Accuracy against ``metric`` (log scale): every trial, the front, published cells as vertical lines."""
    path = Path(path)
    fig = pareto_figure(rows, front, metric, published, title)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def pareto_figure(rows: Sequence[TrialRow], front: Sequence[TrialRow], metric: str, published: dict[str, float],
                  title: str = "") -> Figure:
    """The figure of :func:`plot_pareto` (the caller closes it)."""
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    measured = [r for r in rows if r.ok and r.val_accuracy is not None and r.metrics.get(metric) is not None]
    for role, color in (("search", "tab:blue"), ("audit", "tab:orange")):
        chosen = [r for r in measured if r.role == role]
        if chosen:
            ax.scatter([r.metrics[metric] for r in chosen], [r.val_accuracy for r in chosen], s=16, alpha=0.6,
                       color=color, label="trial" if role == "search" else "audited candidate")
    if front:
        ax.plot([r.metrics[metric] for r in front], [r.val_accuracy for r in front], "-o", color="tab:red",
                markersize=5, lw=1.2, label=f"front ({len(front)} trials)")
    for i, (name, value) in enumerate(published.items()):
        ax.axvline(value, ls="--", lw=0.9, color=f"C{i + 4}", label=f"{name} (accuracy not trained)")
    ax.set_xscale("log")
    ax.set_xlabel(f"{metric} (child network, this search's size)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title or f"{len(measured)} trials: accuracy and {metric}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize=8)
    return fig


def weights_figure(weights: Sequence[Sequence[float]], rows: Sequence[str], columns: Sequence[str],
                   title: str = "") -> Figure:
    """A heatmap of ``weights``, one row per ``rows`` label and one column per ``columns`` label: DARTS'
    op weights per block input (the caller closes it)."""
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(columns), 1.2 + 0.3 * len(rows)), layout="constrained")
    image = ax.imshow(weights, cmap="viridis", aspect="auto", vmin=0.0)
    ax.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    fig.colorbar(image, ax=ax, shrink=0.8)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


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


def plot_genotype(genotype: Genotype, path: "str | Path", title: str = "") -> Path:
    """Diagram of the Normal cell above the Reduction cell, saved as an image (png, svg, pdf)."""
    path = Path(path)
    fig = genotype_figure(genotype, title)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format=path.suffix.lstrip(".") or "png"))
    plt.close(fig)
    return path


def genotype_figure(genotype: Genotype, title: str = "") -> Figure:
    """The figure of :func:`plot_genotype` (the caller closes it)."""
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
