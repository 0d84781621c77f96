"""Build the testbed's tabular benchmarks (cellsearch/evaluators/tables/testbed*.json.gz).

Trains cells (or genotypes of another space) of the table's search space (``--experiment``, by default
``experiment=testbed_table``: its ``space``, ``child`` and ``data``) with real Lightning training, one
thread per worker process, and appends each finished child to a JSON-lines file as it finishes, so a
crash or a kill loses nothing: a rerun with the same arguments skips what is there.
``--pack`` writes the table from that file.

How cells are sampled, so that the table covers the space and local search has structure to follow:
1. ``--random`` cells drawn uniformly from the space (seeded, duplicates by canonical key skipped);
2. ``--rounds`` rounds of mutation neighbourhoods: each round takes the ``--top`` best cells so far
   and adds ``--mutants`` new one-decision mutants of each (regularized evolution's mutation: one
   input, one op or one combine changed).
3. ``--reseed-top``: the best cells by seed-0 accuracy are trained again with seeds 1 and 2 (rows of
   origin ``reseed``), and the table stores their mean. Of a few hundred cells measured once with ~2
   points of seed noise, the top ones are mostly the luckiest draws (the winner's curse); more seeds
   where the search's "best" is decided keep the table's top honest.

Usage (the shipped table)::

    OMP_NUM_THREADS=1 python benchmarks/build_testbed_table.py --rows testbed_rows.jsonl --workers 2
    python benchmarks/build_testbed_table.py --rows testbed_rows.jsonl --pack

The table with learning curves (``testbed_curves``: 100 of the same uniform cells, 3 seeds, 9 epochs,
validated after each)::

    OMP_NUM_THREADS=1 python benchmarks/build_testbed_table.py --rows curves_rows.jsonl --random 100 \\
        --rounds 0 --seeds 0,1,2 --epochs 9 --name testbed_curves --workers 2
    python benchmarks/build_testbed_table.py --rows curves_rows.jsonl --random 100 --rounds 0 --seeds 0,1,2 \\
        --epochs 9 --name testbed_curves --pack

The tables of the other spaces (``testbed_nasrl``, ``testbed_hierarchical``: uniform random genotypes of the
space the preset ``experiment=testbed_<space>`` sets, several seeds each; the table is named after the preset)::

    OMP_NUM_THREADS=1 python benchmarks/build_testbed_table.py --experiment testbed_nasrl --rows nasrl_rows.jsonl \\
        --random 50 --rounds 0 --seeds 0,1 --workers 2
    python benchmarks/build_testbed_table.py --experiment testbed_nasrl --rows nasrl_rows.jsonl --random 50 \\
        --rounds 0 --seeds 0,1 --pack
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from cellsearch.evaluators.table import TABLES_DIR, CellTable, TableRow, canonical_actions
from cellsearch.progress import INTERVAL, StepProgress, progress_to_stderr
from cellsearch.space.genotype import Genotype
from cellsearch.space.spaces import Space, space_from_settings
from cellsearch.strategies.evolution import mutate

EXPERIMENT = "testbed_table"
TABLE_NAMES = {"testbed_table": "testbed"}  # preset -> its table's default name (else the preset's name)


def table_settings(experiment: str = EXPERIMENT) -> tuple[Space, dict[str, Any], dict[str, Any]]:
    """The table's space, child and data settings, from the ``experiment=<experiment>`` preset."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import cellsearch.config  # noqa: F401  (registers the data and child schemas the presets extend)

    conf_dir = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf_dir), version_base=None):
        cfg = compose("config", overrides=[f"experiment={experiment}", "run_dir=.", "child.logger=null"])
    settings = OmegaConf.to_container(cfg, resolve=True)
    return space_from_settings(settings["space"]), settings["child"], settings["data"]


def train_row(genotype: Genotype, seed: int, child: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """Train one cell with one torch thread (in a worker process); its metrics, with ``train_seconds``
    the CPU time of that thread (what the child costs on an idle core, whatever else the machine runs)."""
    import torch

    from cellsearch.evaluators.child import evaluate_child

    torch.set_num_threads(1)
    cpu = time.process_time()
    result = evaluate_child(genotype, child, data, seed)
    row = {"seed": seed, "status": result.status, "val_accuracy": result.metric("val_accuracy"),
           "params": result.metric("params"), "mult_adds": result.metric("mult_adds"),
           "train_seconds": round(time.process_time() - cpu, 2), "wall_seconds": round(result.seconds, 2),
           "error": result.error}
    if child.get("val_every_n_epochs") == 1:  # a table with learning curves: every epoch's accuracy and CPU time
        row["curve"] = [round(p.val_accuracy, 6) for p in result.curve]
        row["curve_cpu_seconds"] = [round(p.cpu_seconds, 2) for p in result.curve]
    return row


def _train(space: Space, actions: list[int], seed: int, child: dict[str, Any], data: dict[str, Any],
           origin: str) -> dict[str, Any]:
    return {"actions": actions, "origin": origin, **train_row(space.decode(actions), seed, child, data)}


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows appended so far (a partly written last line, from a kill, is ignored)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _append(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def random_cells(space: Space, count: int, seed: int) -> list[list[int]]:
    """``count`` distinct cells drawn uniformly, as canonical action lists."""
    rng, seen, cells = random.Random(seed), set(), []
    while len(cells) < count:
        actions = list(canonical_actions(space.sample(rng), space))
        if tuple(actions) not in seen:
            seen.add(tuple(actions))
            cells.append(actions)
    return cells


def mutant_cells(space: Space, rows: list[dict[str, Any]], top: int, per_parent: int, seed: int,
                 taken: set[tuple[int, ...]]) -> list[list[int]]:
    """``per_parent`` new one-decision mutants of each of the ``top`` best cells in ``rows``."""
    ok = [r for r in rows if r["status"] == "ok"]
    parents = sorted(ok, key=lambda r: -r["val_accuracy"])[:top]
    rng, cells = random.Random(seed), []
    # A space with its own mutation (hierarchical: one motif edge) uses it; NASNet's cells mutate as evolution does.
    step = space.mutate if hasattr(space, "mutate") else (lambda actions, r: mutate(actions, space, r))
    for parent in parents:
        made = 0
        for _ in range(50 * per_parent):
            if made == per_parent:
                break
            child = canonical_actions(space.decode(step(parent["actions"], rng)), space)
            if child not in taken:
                taken.add(child)
                cells.append(list(child))
                made += 1
    return cells


def run_jobs(space: Space, cells: Iterable[list[int]], origin: str, rows: Path, seeds: list[int],
             workers: int, child: dict[str, Any], data: dict[str, Any]) -> None:
    """Train every (cell, seed) not yet in the ``rows`` file, ``workers`` at a time, appending each."""
    done = {(tuple(r["actions"]), r["seed"]) for r in read_rows(rows)}
    jobs = [(c, s) for c in cells for s in seeds if (tuple(c), s) not in done]
    print(f"{origin}: {len(jobs)} children to train", flush=True)
    progress = StepProgress(origin, len(jobs), units="children", heartbeat=INTERVAL)
    with ProcessPoolExecutor(max_workers=workers) as pool, progress:
        pending = set()
        for actions, seed in jobs:
            pending.add(pool.submit(_train, space, actions, seed, child, data, origin))
            if len(pending) >= 2 * workers:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    _report(rows, future.result())
                    progress.update()
        for future in wait(pending).done:
            _report(rows, future.result())
            progress.update()


def reseed_best(space: Space, rows: Path, top: int, workers: int, child: dict[str, Any],
                data: dict[str, Any]) -> None:
    """Train the ``top`` best cells by seed-0 accuracy with seeds 1 and 2 as well."""
    first = [r for r in read_rows(rows) if r["seed"] == 0 and r["status"] == "ok"]
    best = sorted(first, key=lambda r: r["val_accuracy"], reverse=True)[:top]
    # Their own origin keeps these rows out of the mutation rounds' parents, so a rerun with the same
    # arguments proposes the same mutants (the table keeps each cell's seed-0 origin).
    run_jobs(space, [r["actions"] for r in best], "reseed", rows, [1, 2], workers, child, data)


def _report(path: Path, row: dict[str, Any]) -> None:
    _append(path, row)
    acc = row["val_accuracy"]
    print(f"{row['origin']:>8} seed {row['seed']} acc {acc if acc is None else round(acc, 4)} "
          f"cpu {row['train_seconds']}s wall {row['wall_seconds']}s {row['error'][:80]}", flush=True)


def pack(rows_path: Path, out: Path, space: Space, child: dict[str, Any], data: dict[str, Any],
         sampling: str, name: str = "testbed") -> CellTable:
    """Group the rows by cell (one accuracy per seed; and one learning curve per seed where the rows have
    them: a table of format 2) and write the table."""
    cells: dict[tuple[int, ...], list[dict[str, Any]]] = {}
    for row in read_rows(rows_path):
        if row["status"] == "ok":
            cells.setdefault(tuple(row["actions"]), []).append(row)
    table_rows = []
    for actions, runs in cells.items():
        runs = sorted({r["seed"]: r for r in runs}.values(), key=lambda r: r["seed"])
        curves = (tuple(tuple(r["curve"]) for r in runs), tuple(tuple(r["curve_cpu_seconds"]) for r in runs)) \
            if "curve" in runs[0] else ((), ())
        table_rows.append(TableRow(actions, tuple(r["val_accuracy"] for r in runs), tuple(r["seed"] for r in runs),
                                   int(runs[0]["params"]), int(runs[0]["mult_adds"]),
                                   sum(r["train_seconds"] for r in runs) / len(runs), runs[0]["origin"], *curves))
    table = CellTable(name, space, table_rows, child, data, sampling)
    table.save(out)
    return table


def summarise(table: CellTable) -> str:
    """The table's spread (range and 10th-90th percentile of the seed-mean accuracy), its seed noise (the
    standard deviation over seeds, averaged over genotypes with several) and the CPU seconds per child."""
    means = np.array([r.mean_accuracy for r in table.rows])
    noise = [float(np.std(r.val_accuracy, ddof=1)) for r in table.rows if len(r.val_accuracy) > 1]
    seconds = np.array([r.train_seconds for r in table.rows])
    lines = [f"{len(table)} genotypes of space={table.space.name}; seed-mean val accuracy {means.min():.3f} to "
             f"{means.max():.3f} (10th-90th percentile {np.percentile(means, 10):.3f}-{np.percentile(means, 90):.3f}, "
             f"median {np.median(means):.3f})",
             f"CPU seconds per child (one thread): median {np.median(seconds):.1f}, "
             f"10th-90th percentile {np.percentile(seconds, 10):.1f}-{np.percentile(seconds, 90):.1f}"]
    if noise:
        lines.append(f"seed noise: std over seeds {np.mean(noise):.3f} (mean over {len(noise)} genotypes)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=Path, required=True, help="JSON-lines checkpoint (appended, resumable)")
    parser.add_argument("--random", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--mutants", type=int, default=5)
    parser.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sample-seed", type=int, default=0)
    parser.add_argument("--reseed-top", type=int, default=0,
                        help="train the N best cells (seed-0 accuracy) again with seeds 1 and 2")
    parser.add_argument("--pack", action="store_true", help="only write the table from --rows")
    parser.add_argument("--epochs", type=int, default=None,
                        help="train each child this many epochs, validating after each (a table with learning "
                             "curves, e.g. --epochs 9 --name testbed_curves); default: the preset's child")
    parser.add_argument("--experiment", default=EXPERIMENT,
                        help="the preset whose space, child and data the table is trained with (testbed_table: "
                             "NASNet cells; testbed_nasrl, testbed_hierarchical: the other spaces)")
    parser.add_argument("--name", default=None, help="the table's name (and file name under --out's default); "
                                                     "default: testbed for testbed_table, else the preset's name")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.name = args.name or TABLE_NAMES.get(args.experiment, args.experiment)
    args.out = args.out or TABLES_DIR / f"{args.name}.json.gz"
    space, child, data = table_settings(args.experiment)
    if args.rounds and space.name != "nasnet" and not hasattr(space, "mutate"):
        parser.error(f"--rounds: space={space.name} has no one-decision mutation to make neighbourhoods with; "
                     f"use --rounds 0")
    if args.epochs is not None:
        child = {**child, "epochs": args.epochs, "val_every_n_epochs": 1}
    unit = "cells" if space.name == "nasnet" else "genotypes"  # the shipped NASNet tables' wording
    sampling = (f"{args.random} uniform random {unit} (seed {args.sample_seed}), then {args.rounds} rounds of "
                f"{args.mutants} one-decision mutants of each of the {args.top} best {unit} so far; "
                f"training seeds {args.seeds}" + (f"; seeds 1 and 2 too for the {args.reseed_top} best {unit}"
                                                  if args.reseed_top else ""))
    if not args.pack:
        run_jobs(space, random_cells(space, args.random, args.sample_seed), "random", args.rows, args.seeds,
                 args.workers, child, data)
        origins = ["random"] + [f"mutant{k + 1}" for k in range(args.rounds)]
        for k in range(1, len(origins)):
            # Parents come from the earlier phases only, so a resumed round proposes the same mutants.
            rows = [r for r in read_rows(args.rows) if r["origin"] in origins[:k]]
            taken = {tuple(r["actions"]) for r in rows} | {tuple(c) for c in random_cells(space, args.random,
                                                                                          args.sample_seed)}
            mutants = mutant_cells(space, rows, args.top, args.mutants, args.sample_seed + k, taken)
            run_jobs(space, mutants, origins[k], args.rows, args.seeds, args.workers, child, data)
        if args.reseed_top:
            reseed_best(space, args.rows, args.reseed_top, args.workers, child, data)
    table = pack(args.rows, args.out, space, child, data, sampling, args.name)
    print(f"wrote {args.out}: {len(table)} cells")
    print(summarise(table))


if __name__ == "__main__":
    progress_to_stderr()  # progress lines on stderr: the tables on stdout stay clean
    main()
