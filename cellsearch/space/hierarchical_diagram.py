"""A hierarchical genotype in words and as a picture: what its cell computes, motif by motif.

Both show the genotype's canonical form (``HierarchicalGenotype.canonical``): edges that reach no output
and motifs the cell does not use are left out and counted.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cellsearch.space.hierarchical import NONE, HierarchicalGenotype, Matrix, motif_name  # noqa: E402

_COLORS = {"conv": "#3b6fb6", "pool": "#d9822b", "identity": "#777777", "motif": "#6a3d9a"}


def _used_motifs(canonical: HierarchicalGenotype) -> list[tuple[int, int, Matrix]]:
    """(level, index, matrix) of the top motif and every motif it uses, top level first."""
    out = []
    for level in range(len(canonical.levels) + 1, 1, -1):
        for k, matrix in enumerate(canonical.levels[level - 2]):
            if any(entry != NONE for row in matrix for entry in row) or level == len(canonical.levels) + 1:
                out.append((level, k, matrix))
    return out


def _title(level: int, index: int, top_level: int, num_nodes: int) -> str:
    what = "the cell" if level == top_level else f"motif {motif_name(index)}"
    return f"Level {level}, {what} ({num_nodes} nodes; node 0 reads the input, node {num_nodes - 1} is the output)"


def _node_lines(matrix: Matrix) -> list[str]:
    n = len(matrix)
    lines = []
    for j in range(1, n):
        inputs = [f"{matrix[i][j]}(node{i})" for i in range(j) if matrix[i][j] != NONE]
        if inputs:
            lines.append(f"  node{j} = {' ++ '.join(inputs)}")
    return lines or ["  computes nothing: no path from node 0 to the output (the cell outputs zeros)"]


def describe(genotype: HierarchicalGenotype) -> str:
    """What the genotype computes, one line per node of each motif the cell uses ('++' concatenates)."""
    canonical = genotype.canonical()
    top_level = len(genotype.levels) + 1
    shape = ", ".join(f"{len(m) if len(m) > 1 else 'one'} level-{level} motif{'s' if len(m) > 1 else ''} of "
                      f"{len(m[0])} nodes" for level, m in enumerate(genotype.levels, start=2))
    lines = [f"{genotype.name or 'genotype'}" + (f": {genotype.source}" if genotype.source else ""),
             f"{top_level} levels (level 1: the primitives): {shape}"]
    for level, k, matrix in _used_motifs(canonical):
        lines.append(_title(level, k, top_level, len(matrix)))
        lines += _node_lines(matrix)
    dropped = _count_edges(genotype) - _count_edges(canonical)
    unused = [motif_name(k) for level, motifs in enumerate(canonical.levels[:-1], start=2)
              for k, m in enumerate(motifs) if all(e == NONE for row in m for e in row)]
    if unused or dropped:
        lines.append(f"Left out: {dropped} edge(s) that reach no output" +
                     (f"; motifs the cell does not use: {', '.join(unused)}" if unused else ""))
    return "\n".join(lines)


def _count_edges(genotype: HierarchicalGenotype) -> int:
    return sum(entry != NONE for motifs in genotype.levels for m in motifs for row in m for entry in row)


def _edge_color(entry: str) -> str:
    if "pool" in entry:
        return _COLORS["pool"]
    if entry == "identity":
        return _COLORS["identity"]
    return _COLORS["conv"] if "conv" in entry else _COLORS["motif"]


def figure(genotype: HierarchicalGenotype, title: str = "") -> Figure:
    """One row per motif the cell uses (the cell first): nodes left to right, each edge an arc labelled with
    its primitive or lower-level motif. The caller saves and closes the figure."""
    canonical = genotype.canonical()
    top_level = len(genotype.levels) + 1
    motifs = _used_motifs(canonical)
    widest = max(len(m) for _, _, m in motifs)
    fig, axes = plt.subplots(len(motifs), 1, figsize=(max(6.0, 1.3 * widest), 0.6 + 0.45 * widest * len(motifs)),
                             layout="constrained", squeeze=False)
    for ax, (level, k, matrix) in zip(axes[:, 0], motifs):
        n = len(matrix)
        touched = {k for i in range(n) for j in range(n) if matrix[i][j] != NONE for k in (i, j)}
        for i in range(n):
            color = "#b7e1a1" if i == 0 else "#d9b8f0" if i == n - 1 else "#fff3a0" if i in touched else "#eeeeee"
            ax.text(i, 0, str(i), ha="center", va="center", fontsize=8, zorder=3,
                    bbox=dict(boxstyle="circle,pad=0.3", fc=color, ec="#444444", lw=0.8))
        for i in range(n):
            for j in range(i + 1, n):
                entry = matrix[i][j]
                if entry == NONE:
                    continue
                # alternate sides so labels do not collide; an arc3 curve of rad r peaks at r/2 of its length
                height = 0.2 * (j - i) * (1 if (i + j) % 2 else -1)
                ax.annotate("", xy=(j, 0), xytext=(i, 0), zorder=2,
                            arrowprops=dict(arrowstyle="-|>", color=_edge_color(entry), lw=1.0, shrinkA=7, shrinkB=7,
                                            connectionstyle=f"arc3,rad={-0.4 if height > 0 else 0.4}"))
                ax.text((i + j) / 2, height, entry, ha="center", va="center", fontsize=7, color=_edge_color(entry),
                        bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.8), zorder=4)
        ax.set_xlim(-0.6, n - 0.4)
        ax.set_ylim(-0.2 * (n - 1) - 0.3, 0.2 * (n - 1) + 0.3)
        ax.set_axis_off()
        ax.set_title(_title(level, k, top_level, n), fontsize=9)
    if title or genotype.name:
        fig.suptitle(title or genotype.name, fontsize=11)
    return fig
