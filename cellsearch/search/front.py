"""The accuracy-cost front of a search: its trials, their non-dominated front, and the published cells
(nasnet_a, amoebanet_a, darts_v2, pnasnet_5) measured the same way, for ``pareto.png`` and the summary.

The published cells are measured at the search's child size (N, F) on its data's image size, with
the same counter (params, mult_adds) or the same timer on the same device (latency_ms). Their
accuracy at that size is not known without training them, so the plot draws each as a vertical
line at its cost: a searched cell left of a line is cheaper than that published cell at equal size.
They are NASNet cells, and N and F mean other things in another search space, so a search of another
space draws none.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

from cellsearch.evaluators.latency import child_latency_ms
from cellsearch.search.estimates import reward_text
from cellsearch.search.objectives import pareto_front
from cellsearch.search.store import TrialRow
from cellsearch.space.genotype import load_genotype
from cellsearch.space.networks import build_network
from cellsearch.space.profile import count_mult_adds, count_params, format_count

if TYPE_CHECKING:
    from cellsearch.data import DatasetInfo
    from cellsearch.evaluators.child import ChildConfig

__all__ = ["LATENCY_WEIGHT_LIMIT", "PUBLISHED_CELLS", "front_lines", "front_rows", "published_costs"]

log = logging.getLogger(__name__)

PUBLISHED_CELLS: tuple[str, ...] = ("nasnet_a", "amoebanet_a", "darts_v2", "pnasnet_5")


def front_rows(rows: list[TrialRow], metric: str) -> list[TrialRow]:
    """The completed trials on the (val_accuracy up, ``metric`` down) front, cheapest first (a child stopped
    early is left out: its accuracy is that of fewer epochs)."""
    measured = [r for r in rows if r.ok and not r.stopped and r.val_accuracy is not None
                and r.metrics.get(metric) is not None]
    front = pareto_front([(r.val_accuracy, r.metrics[metric]) for r in measured])
    return [measured[i] for i in front]


# Above this many weight bytes a published cell is not timed (its latency would need it in memory).
LATENCY_WEIGHT_LIMIT = 2 * 2**30


def published_costs(metric: str, child: "ChildConfig", info: "DatasetInfo",
                    device: "torch.device | str" = "cpu") -> dict[str, float]:
    """``metric`` of each published cell's child network (the search's N, F and input size).

    Params and mult-adds are counted on networks built on the meta device, which hold no memory, so any
    child size is priced; latency is measured only for networks whose weights fit in
    :data:`LATENCY_WEIGHT_LIMIT` (the others are left out, with a warning)."""
    costs = {}
    for name in PUBLISHED_CELLS:
        genotype = load_genotype(name)
        with torch.device("meta"):
            model = build_network(genotype, cells_per_stage=child.cells_per_stage, channels=child.channels,
                                  num_classes=info.num_classes, in_chans=info.in_chans)
        if metric != "latency_ms":
            costs[name] = float(count_params(model) if metric == "params" else count_mult_adds(model, info.input_size))
        elif count_params(model, exclude_aux=False) * 4 <= LATENCY_WEIGHT_LIMIT:
            costs[name] = child_latency_ms(genotype, child.cells_per_stage, child.channels, info.num_classes,
                                           info.input_size, device)
        else:
            log.warning("%s is not timed at child.channels=%d: its weights alone would take over %s bytes",
                        name, child.channels, format_count(LATENCY_WEIGHT_LIMIT))
    return costs


def _format(metric: str, value: float) -> str:
    return f"{value:.2f} ms" if metric == "latency_ms" else format_count(value)


def front_lines(rows: list[TrialRow], metric: str, published: dict[str, float]) -> list[str]:
    """Summary lines: the front's trials (accuracy, cost, reward) and the published cells' costs."""
    front = front_rows(rows, metric)
    lines = [f"Pareto front over val_accuracy and {metric} ({len(front)} of {sum(r.ok for r in rows)} trials):"]
    lines += [f"  trial {r.trial_id:>4}  val_accuracy {r.val_accuracy:.4f}  "
              f"{metric} {_format(metric, r.metrics[metric])}  {reward_text(r)}" for r in front]
    if published:
        lines.append("  published cells at this child size: " + ", ".join(
            f"{name} {_format(metric, value)}" for name, value in published.items()))
    return lines
