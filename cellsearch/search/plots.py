"""Pictures of a search: reward against children, accuracy against cost, and a diagram of a genotype (drawn by
its search space's diagram module, :mod:`cellsearch.space.support`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cellsearch.search.atomic import atomic_write  # noqa: E402
from cellsearch.space.networks import space_of  # noqa: E402
from cellsearch.space.support import diagram_module  # noqa: E402
from cellsearch.search.store import TrialRow  # noqa: E402


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


def plot_genotype(genotype: Any, path: "str | Path", title: str = "") -> Path:
    """Diagram of a genotype of any space (NASNet: the Normal cell above the Reduction cell), saved as an image
    (png, svg, pdf)."""
    path = Path(path)
    fig = genotype_figure(genotype, title)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format=path.suffix.lstrip(".") or "png"))
    plt.close(fig)
    return path


def genotype_figure(genotype: Any, title: str = "") -> Figure:
    """The figure of :func:`plot_genotype`, drawn by the genotype's space's diagram module (the caller closes it).

    Raises:
        ConfigError: the genotype's space has no diagram module yet.
    """
    return diagram_module(space_of(genotype)).figure(genotype, title)
