"""One-shot search: what a supernet step costs, and whether the supernet ranks cells.

    python benchmarks/bench_oneshot.py step       # memory and time of one step at proxy size
    python benchmarks/bench_oneshot.py ranking    # Kendall tau / Spearman over stand-alone trained cells
    OMP_NUM_THREADS=1 python benchmarks/bench_oneshot.py estimators --table testbed_curves --seeds 0 1 2
                                                  # issue 22: one-shot recipes against the testbed truth

``step``: NASNet's proxy size (N=2, F=16, CIFAR-sized 32x32 images, batch 64, the full 13-op space
with add and concat). A single-path step (one path of the supernet), a first-order DARTS step (an
architecture step and a weight step through the relaxed supernet, at F=16 and at F=8, the documented
way down) and, as the reference measured in the same run, the stand-alone child of the same cell.
Activation memory is the bytes autograd saves for the backward pass (the part that grows with the
supernet), counted with saved-tensor hooks; weights are the parameter bytes.

``ranking``: ``--cells`` random cells of the space are trained stand-alone as the child says
(the reference), and scored on supernets trained for 1x, 3x and 10x ``--base-epochs`` epochs with
uniform paths; Kendall tau and Spearman rho between the one-shot estimates and stand-alone
accuracy, top-k precision, and the cost of each.

``estimators``: the one-shot rows of the estimator table (:func:`oneshot_rows`, which
``bench_estimators.py`` calls too): every recipe of :data:`RECIPES` trains a supernet (an ensemble recipe:
several, each with its own seed) at the table's child size on the table's data, scores every truth cell, and is ranked against the table's mean
accuracy (Kendall tau, Spearman, top-10% recall, junk-filter rate, each with a bootstrap interval), with
its cost in CPU seconds of one torch thread (supernet training and every cell's score, data loading
included) and that cost in stand-alone children: the median CPU seconds of ``--reference-children``
children trained in the same run (0: the table's median ``train_seconds``). The recipe "the evaluator's
defaults" is the evaluator as it ships (its own warm-up in epochs, every setting from ``OneShotConfig``).
A table with learning curves adds the reference at equal compute: each cell's accuracy after its first
one and two epochs of stand-alone training, read from the table.
"""
from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cellsearch.evaluators.child import evaluate_child
from cellsearch.evaluators.oneshot import OneShotConfig, OneShotEvaluator, SupernetTrainer, UnscoredPath
from cellsearch.evaluators.ranking import Interval, rank_report
from cellsearch.evaluators.table import ground_truth, load_table
from cellsearch.progress import INTERVAL, StepProgress, progress_to_stderr, track
from cellsearch.search.darts import ArchitectureWeights
from cellsearch.search.final import rank_agreement
from cellsearch.space.genotype import Genotype, SearchSpace
from cellsearch.space.network import CellNetCifar
from cellsearch.space.supernet import SuperNet

QUICK_OPS = ("identity", "conv_1x3_3x1", "dil_conv_3x3", "avg_pool_3x3", "max_pool_3x3", "conv_1x1", "conv_3x3")


def saved_bytes(step) -> tuple[float, int]:
    """Seconds of ``step()`` and the bytes autograd saved for its backward passes."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return time.perf_counter() - start, total


def weight_mib(module: torch.nn.Module) -> float:
    return sum(p.numel() * p.element_size() for p in module.parameters()) / 2 ** 20


def bench_step(repeats: int, darts_batch: int) -> None:
    space = SearchSpace()
    rng = random.Random(0)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    rows = []

    genotypes = [space.sample(rng) for _ in range(repeats)]
    progress = StepProgress("bench_oneshot step", 4, units="step kinds", heartbeat=INTERVAL)  # DARTS: tens of s
    times, mems = [], []
    for g in genotypes:
        net = CellNetCifar(g, cells_per_stage=2, channels=16)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

        def child_step() -> None:
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        child_step()  # warm-up
        t, m = saved_bytes(child_step)
        times.append(t)
        mems.append(m)
    rows.append(("stand-alone child (reference)", sum(times) / repeats, sum(mems) / repeats, weight_mib(net)))
    progress.update(note=rows[-1][0])

    start = time.perf_counter()
    supernet = SuperNet(space, cells_per_stage=2, channels=16)
    build = time.perf_counter() - start
    trainer = SupernetTrainer(supernet, OneShotConfig(), 1000)
    trainer.train_step(x, y, genotypes[0])
    times, mems = [], []
    for g in genotypes:
        t, m = saved_bytes(lambda: trainer.train_step(x, y, g))
        times.append(t)
        mems.append(m)
    rows.append((f"single-path supernet step (built in {build:.1f} s)", sum(times) / repeats, sum(mems) / repeats,
                 weight_mib(supernet)))
    progress.update(note="single-path supernet step")
    del supernet, trainer

    # The relaxed supernet runs every op of every block input: measured at a small batch (memory and time
    # grow linearly with it) and scaled to 64 in the table.
    xd, yd = x[:darts_batch], y[:darts_batch]
    scale = 64 / darts_batch
    for channels in (16, 8):
        supernet = SuperNet(space, cells_per_stage=2, channels=channels)
        alphas = ArchitectureWeights(space)
        w_opt = torch.optim.SGD(supernet.parameters(), lr=0.025, momentum=0.9)
        a_opt = torch.optim.Adam(alphas.parameters(), lr=3e-4)

        def darts_step() -> None:
            for opt, params in ((a_opt, list(alphas.parameters())), (w_opt, list(supernet.parameters()))):
                loss = F.cross_entropy(supernet.forward_relaxed(xd, alphas.softmaxes()), yd)
                opt.zero_grad()
                loss.backward(inputs=params)
                opt.step()
        t, m = saved_bytes(darts_step)  # one step: each is tens of seconds on a CPU
        rows.append((f"DARTS 1st-order step, F={channels} (batch {darts_batch} x{scale:g})", t * scale, m * scale,
                     weight_mib(supernet)))
        progress.update(note=rows[-1][0])
        del supernet

    print(f"supernet steps at proxy size: N=2, F=16, 32x32, batch 64, 13 ops, add+concat; "
          f"{torch.get_num_threads()} thread(s)")
    print(f"{'step':<48} {'seconds':>8} {'x ref':>6} {'activations MiB':>16} {'x ref':>6} {'weights MiB':>12}")
    ref_t, ref_m = rows[0][1], rows[0][2]
    for name, t, m, w in rows:
        print(f"{name:<48} {t:>8.3f} {t / ref_t:>6.1f} {m / 2 ** 20:>16.1f} {m / ref_m:>6.1f} {w:>12.1f}")


def bench_ranking(cells: int, base_epochs: float, seed: int) -> None:
    space = SearchSpace(ops=QUICK_OPS, num_blocks=3)
    child = dict(cells_per_stage=1, channels=8, epochs=3, batch_size=64, accelerator="cpu", logger=None)
    data = dict(name="digits")
    rng = random.Random(seed)
    genotypes, keys = [], set()
    while len(genotypes) < cells:
        g = space.sample(rng)
        if g.key() not in keys:
            keys.add(g.key())
            genotypes.append(g)
    start = time.perf_counter()
    truths = []
    for g in track(genotypes, "stand-alone truths", units="cells", heartbeat=INTERVAL):
        truths.append(evaluate_child(g, child, data, seed=seed).metric("val_accuracy"))
    standalone_s = time.perf_counter() - start
    print(f"{cells} random cells of the quick space (7 ops, 3 blocks, add+concat) on digits; stand-alone: "
          f"tiny child (N=1, F=8, 3 epochs), accuracy {min(truths):.3f}..{max(truths):.3f}, {standalone_s:.0f} s")
    print(f"{'supernet training':<22} {'train s':>8} {'score ms/cell':>14} {'Kendall tau':>12} {'Spearman':>9} "
          f"{'top-5 prec':>11}")
    for multiple in (1, 3, 10):
        ev = OneShotEvaluator(child, data, space, batch_size=64, warmup_epochs=base_epochs * multiple,
                              bn_batches=2, val_batches=2, eval_batch_size=150)
        start = time.perf_counter()
        ev.train_until(1, seed)
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        estimates = [ev.score(g, seed) for g in track(genotypes, f"scoring paths ({multiple}x)", units="cells")]
        score_ms = 1000 * (time.perf_counter() - start) / cells
        a = rank_agreement(estimates, truths, top_k=5)
        print(f"{f'{multiple}x ({base_epochs * multiple:g} epochs)':<22} {train_s:>8.0f} {score_ms:>14.0f} "
              f"{a['kendall_tau']:>12.3f} {a['spearman_rho']:>9.3f} {a['top_k_precision']:>11.2f}")


@dataclass(frozen=True)
class Recipe:
    """A one-shot estimator: OneShotEvaluator settings, with ``warmup_epochs`` as a multiple of the child's
    (``child_epochs``; None: the evaluator's own ``warmup_epochs``, in epochs), and how many supernets (each
    trained and scoring every cell; an ensemble's estimate of a cell is the mean of its members'
    log-estimates, so the geometric mean of their likelihoods)."""

    name: str
    child_epochs: float | None           # supernet training per supernet, in epochs of the stand-alone child
    settings: dict[str, Any] = field(default_factory=dict)
    supernets: int = 1


# Scores on 2 fixed validation batches of 256 images, BN recomputed on 2 training batches; the plain
# recipes score the shared weights as they are, by accuracy (the evaluator before issue 22), and a fine-tune
# keeps its rate constant unless a recipe says otherwise.
BASE_SETTINGS = {"batch_size": 64, "eval_batch_size": 256, "val_batches": 2, "bn_batches": 2, "finetune_steps": 0,
                 "estimate": "accuracy", "finetune_schedule": "constant"}
FINETUNE_5 = {"finetune_steps": 5, "finetune_lr": 0.01}
FINETUNE_20 = {"finetune_steps": 20, "finetune_lr": 0.05}
COSINE = {**FINETUNE_20, "finetune_schedule": "cosine", "estimate": "likelihood"}
COSINE_10 = {**COSINE, "finetune_steps": 10}
# The evaluator as it ships (conf/evaluator/oneshot.yaml): its own warm-up length in epochs, its settings.
EVALUATOR_DEFAULTS = {key: value for key, value in asdict(OneShotConfig()).items()
                      if key not in ("cells_per_stage", "channels")}  # the child's size, as every recipe
THE_DEFAULTS = "the evaluator's defaults"
RECIPES = (
    Recipe("1x", 1), Recipe("3x", 3), Recipe("10x", 10),
    Recipe("3x + path fine-tune 5 steps", 3, FINETUNE_5),
    Recipe("3x + path fine-tune 5 steps, likelihood", 3, {**FINETUNE_5, "estimate": "likelihood"}),
    Recipe("1x + path fine-tune 20 steps", 1, FINETUNE_20),
    Recipe("1x + path fine-tune 20 steps, likelihood", 1, {**FINETUNE_20, "estimate": "likelihood"}),
    Recipe("1x + path fine-tune 20 steps cosine, likelihood", 1, COSINE),
    Recipe("1x + path fine-tune 30 steps cosine, likelihood", 1, {**COSINE, "finetune_steps": 30}),
    Recipe("0.5x + path fine-tune 10 steps cosine, likelihood", 0.5, COSINE_10),
    Recipe("2 supernets at 0.5x + path fine-tune 10 steps cosine, likelihood", 0.5, COSINE_10, supernets=2),
    Recipe("2 supernets at 0.5x + path fine-tune 8 steps cosine, likelihood", 0.5,
           {**COSINE, "finetune_steps": 8}, supernets=2),
    Recipe("3 supernets at 0.25x + path fine-tune 5 steps cosine, likelihood", 0.25,
           {**COSINE, "finetune_steps": 5}, supernets=3),
    # Third round: the warm-up's length (longer ranks worse) and the evaluator as it ships.
    Recipe("3x + path fine-tune 10 steps cosine, likelihood", 3, COSINE_10),
    Recipe("2x + path fine-tune 10 steps cosine, likelihood", 2, COSINE_10),
    Recipe("0.25x + path fine-tune 10 steps cosine, likelihood", 0.25, COSINE_10),
    Recipe("0.1x + path fine-tune 10 steps cosine, likelihood", 0.1, COSINE_10),
    Recipe("0.01x + path fine-tune 10 steps cosine, likelihood", 0.01, COSINE_10),
    Recipe("0.25x + path fine-tune 20 steps cosine, likelihood", 0.25, COSINE),
    Recipe("0.25x + path fine-tune 20 steps, likelihood", 0.25, {**FINETUNE_20, "estimate": "likelihood"}),
    Recipe(THE_DEFAULTS, None, EVALUATOR_DEFAULTS),
)


def oneshot_estimates(cells: Sequence[Genotype], child: dict[str, Any], data: dict[str, Any], space: SearchSpace,
                      recipe: Recipe, seed: int = 0) -> tuple[list[float], float]:
    """Train the supernets ``recipe`` asks for (seeds ``seed * supernets`` onwards) and score every cell on each.

    Returns:
        The estimates (a cell whose path cannot be scored ranks last, at -inf) and the CPU seconds of this
        process that it all took, data loading included.
    """
    start = time.process_time()
    settings = {**BASE_SETTINGS, **recipe.settings}
    if recipe.child_epochs is not None:
        settings["warmup_epochs"] = recipe.child_epochs * child["epochs"]
    members = []
    for member in range(seed * recipe.supernets, (seed + 1) * recipe.supernets):
        evaluator = OneShotEvaluator(child, {**data, "num_workers": 0}, space, **settings)  # loading counts too
        evaluator.train_until(1, member)
        values = []
        for genotype in track(cells, f"one-shot {recipe.name}: scoring", units="cells", heartbeat=INTERVAL):
            try:
                values.append(evaluator.score(genotype, member))
            except UnscoredPath:
                values.append(float("-inf"))
        evaluator.release()
        members.append(values)
    if len(members) == 1:
        return members[0], time.process_time() - start
    with np.errstate(divide="ignore", invalid="ignore"):  # log 0 and log -inf: the cell ranks last
        logs = np.log(np.array(members)).mean(axis=0)
    return [float(v) if np.isfinite(v) else float("-inf") for v in np.exp(logs)], time.process_time() - start


def recipes_named(names: Sequence[str], option: str) -> list[Recipe]:
    """The recipes of :data:`RECIPES` called ``names``, in that order; an unknown name ends the benchmark in one
    line that lists the recipes (``option``: the command-line option that named them)."""
    known = {recipe.name: recipe for recipe in RECIPES}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"{option}: no recipe {unknown}; the recipes are {list(known)}")
    return [known[name] for name in names]


def ranked_row(estimator: str, seed: int, estimates: Sequence[float], truth: Sequence[float], resamples: int,
               cpu_seconds: float, child_seconds: float | None) -> dict[str, Any]:
    """A row of the estimator table: every statistic of ``estimates`` against ``truth`` with its bootstrap
    interval, the cost in CPU seconds and in stand-alone children (None without ``child_seconds``)."""
    report: dict[str, Interval] = rank_report(estimates, truth, resamples, seed)
    return {"estimator": estimator, "seed": seed, **report, "cpu_seconds": cpu_seconds,
            "children": cpu_seconds / child_seconds if child_seconds else None, "estimates": list(estimates)}


def reference_child_seconds(cells: Sequence[Genotype], child: dict[str, Any], data: dict[str, Any],
                            count: int = 3) -> float:
    """The median CPU seconds of this process to train ``count`` of ``cells`` stand-alone as ``child`` says
    (data loading in this process, as the one-shot recipes count it): the cost unit "children" measured in the
    same run as the recipes, on the same machine and load."""
    seconds = []
    for genotype in track(list(cells)[:count], "reference children", units="children", heartbeat=INTERVAL):
        start = time.process_time()
        result = evaluate_child(genotype, child, {**data, "num_workers": 0}, seed=0)
        if result.status != "ok":
            raise RuntimeError(f"the reference child failed: {result.error}")
        seconds.append(time.process_time() - start)
    return statistics.median(seconds)


def short_training_rows(truth_cells: Sequence[tuple[Genotype, Any]], epochs: Sequence[int], resamples: int,
                        child_seconds: float | None) -> list[dict[str, Any]]:
    """The reference a one-shot recipe must beat at equal compute: each cell trained stand-alone for its first
    ``epochs`` epochs, read from the table's own learning curves (epoch k of a training run of the child's full
    length), one row per training seed. Optimistic for these rows: the truth averages the same seeds' final
    accuracy, so a seed's early accuracy shares that seed's noise with the truth."""
    truth = [row.mean_accuracy for _, row in truth_cells]
    rows = []
    for epoch in epochs:
        for seed in range(len(truth_cells[0][1].curves)):
            estimates = [row.curves[seed][epoch - 1] for _, row in truth_cells]
            seconds = sum(row.curve_cpu_seconds[seed][epoch - 1] for _, row in truth_cells)
            rows.append(ranked_row(f"stand-alone, first {epoch} epoch(s) of the child's training run", seed, estimates,
                                   truth, resamples, seconds, child_seconds))
    return rows


def decision_features(genotype: Genotype, space: SearchSpace) -> list[float]:
    """One-hot of every decision of the cell, then per cell type how many of its block inputs use each op."""
    actions = space.encode(genotype)
    features = [float(a == choice) for a, n in zip(actions, space.layout.num_choices_list) for choice in range(n)]
    for cell in (genotype.normal, genotype.reduce):
        used = [op for block in cell.blocks for op in block.ops]
        features += [float(used.count(op)) for op in space.ops]
    return features


def decision_smoothed(values: Sequence[float], cells: Sequence[Genotype], space: SearchSpace,
                      penalty: float = 30.0) -> list[float]:
    """The estimates as a ridge regression on the cells' decisions (:func:`decision_features`) fits them: a
    cell's estimate pooled with those of the cells that share its choices, which averages out the noise of
    one path's score. Uses the estimates only (no truth); unscored cells (-inf) are left out of the fit."""
    x = np.array([decision_features(g, space) for g in cells])
    y = np.asarray(values, dtype=float)
    scored = np.isfinite(y)
    mean_x, mean_y = x[scored].mean(axis=0), y[scored].mean()
    xc = x[scored] - mean_x
    weights = np.linalg.solve(xc.T @ xc + penalty * np.eye(x.shape[1]), xc.T @ (y[scored] - mean_y))
    return list((x - mean_x) @ weights + mean_y)


def oneshot_rows(cells: Sequence[Genotype], truth: Sequence[float], child: dict[str, Any], data: dict[str, Any],
                 space: SearchSpace, seeds: Sequence[int] = (0,), recipes: Sequence[Recipe] = RECIPES,
                 resamples: int = 1000, child_seconds: float | None = None) -> list[dict[str, Any]]:
    """The one-shot rows of the estimator table: per recipe and supernet seed, each statistic of
    :data:`cellsearch.evaluators.ranking.RANK_STATISTICS` against ``truth`` with its 95% bootstrap interval.

    Args:
        cells: the truth's cells, scored in this order.
        truth: their stand-alone accuracy (the mean over training seeds).
        child, data, space: the stand-alone child, data and space the truth was trained with.
        seeds: supernet seeds (weights, path order, fixed batches); one row each.
        recipes: the estimators to measure.
        resamples: bootstrap resamples of the cells.
        child_seconds: CPU seconds of one stand-alone child, to state each cost in children (None: left out).

    Returns:
        Two dicts per (recipe, seed), the raw estimates and them smoothed (:func:`decision_smoothed`, which
        costs nothing more): ``estimator``, ``seed``, the statistics (:class:`Interval`), ``cpu_seconds``,
        ``children`` (the cost in stand-alone children, or None) and ``estimates`` (per cell, for plots).
    """
    rows = []
    for recipe in recipes:
        for seed in seeds:
            values, seconds = oneshot_estimates(cells, child, data, space, recipe, seed)
            for name, estimates in ((recipe.name, values),
                                    (f"{recipe.name} + decision smoothing", decision_smoothed(values, cells, space))):
                rows.append(ranked_row(f"one-shot {name}", seed, estimates, truth, resamples, seconds, child_seconds))
    return rows


def bench_estimators(table_name: str, seeds: Sequence[int], resamples: int, names: Sequence[str],
                     reference_children: int) -> None:
    table = load_table(table_name)
    truth_cells = ground_truth(table_name, 3)
    cells, truth = [g for g, _ in truth_cells], [r.mean_accuracy for _, r in truth_cells]
    child = {**table.child, "accelerator": "cpu", "logger": None, "enable_progress_bar": False}
    table_child_seconds = statistics.median(r.train_seconds for _, r in truth_cells) or None  # mean over seeds
    recipes = recipes_named(names, "--recipes") if names else list(RECIPES)
    child_seconds = table_child_seconds
    if reference_children:
        child_seconds = reference_child_seconds(cells, child, dict(table.data), reference_children)
    rows = oneshot_rows(cells, truth, child, dict(table.data), table.space, seeds, recipes, resamples, child_seconds)
    if table.curve_epochs:  # the table's own timings, so in the table's children
        rows += short_training_rows(truth_cells, (1, 2), resamples, table_child_seconds)
    unit = (f"{child_seconds:.1f} CPU s, the median of {reference_children} trained in this run (the table's "
            f"median: {table_child_seconds or float('nan'):.1f} s)" if reference_children
            else f"{child_seconds or float('nan'):.1f} CPU s (the table's median)")
    print(f"{len(cells)} cells of table {table.name!r} with 3 seeds (mean accuracy {min(truth):.3f}..{max(truth):.3f}); "
          f"one-shot at the child's size (N={child['cells_per_stage']}, F={child['channels']}); {resamples} bootstrap "
          f"resamples, 95% intervals; a stand-alone child: {unit}; {torch.get_num_threads()} thread")
    print("| estimator | seed | Kendall tau | Spearman | top-10% recall | junk filter | CPU s | children |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        children = "-" if row["children"] is None else f"{row['children']:.1f}"
        print(f"| {row['estimator']} | {row['seed']} | {row['kendall_tau']} | {row['spearman_rho']} | "
              f"{row['top10_recall']} | {row['junk_filter']} | {row['cpu_seconds']:.0f} | {children} |")
    for recipe in recipes:  # the mean over supernet seeds: a recipe is judged over seeds, not on one
        taus = [row["kendall_tau"].value for row in rows if row["estimator"] == f"one-shot {recipe.name}"]
        print(f"mean Kendall tau over {len(taus)} supernet seed(s), {recipe.name}: {statistics.mean(taus):.3f} "
              f"(min {min(taus):.3f}, max {max(taus):.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("step", "ranking", "estimators"))
    parser.add_argument("--repeats", type=int, default=3, help="paths timed per step kind")
    parser.add_argument("--darts-batch", type=int, default=8, help="batch of the measured DARTS step")
    parser.add_argument("--cells", type=int, default=30)
    parser.add_argument("--base-epochs", type=float, default=2.0, help="supernet epochs of the 1x length")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", default="testbed_curves", help="estimators: the truth's table")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="estimators: supernet seeds")
    parser.add_argument("--resamples", type=int, default=1000, help="estimators: bootstrap resamples")
    parser.add_argument("--recipes", nargs="*", default=[], help="estimators: recipe names (default: all)")
    parser.add_argument("--reference-children", type=int, default=3,
                        help="estimators: stand-alone children trained in this run as the cost unit (0: the table's "
                             "median train_seconds)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.part == "step":
        bench_step(args.repeats, args.darts_batch)
    elif args.part == "estimators":
        bench_estimators(args.table, args.seeds, args.resamples, args.recipes, args.reference_children)
    else:
        bench_ranking(args.cells, args.base_epochs, args.seed)


if __name__ == "__main__":
    progress_to_stderr()  # progress lines on stderr: the tables on stdout stay clean
    main()
