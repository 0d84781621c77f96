"""A tabular benchmark: cells trained once, looked up instead of trained (as NAS-Bench tables are).

A table holds, for each of a few hundred cells (or genotypes of any other search space: ``space=nasrl``,
``space=hierarchical``) of one search space, the metrics that stand-alone
training measured for it (``val_accuracy``, ``params``, ``mult_adds``, ``train_seconds``), with the
child and data settings they were trained under. :class:`TableEvaluator` (``evaluator=table``)
answers a genotype from the table in microseconds, so search strategies can be compared over many
seeds in seconds.

Lookup:

- ``exact``: the genotype's canonical key (:meth:`Genotype.key`) must be in the table; any other cell
  fails with an error saying so.
- ``nearest`` (the default): the row(s) closest to the genotype in Hamming distance over the
  canonical action encoding (each block's two (input, op) pairs sorted, then the flat decisions of
  :meth:`SearchSpace.encode`; for another space, its ``encode`` of the canonical genotype); when
  several rows tie, their metrics are averaged. The distance is reported as the metric
  ``table_distance`` (0 for an exact hit). A table of a few hundred cells covers a tiny part of
  the space, so the nearest rule makes the landscape piecewise constant: see the README for how
  well the nearest row predicts a held-out cell on the shipped table.
- ``surrogate``: a ridge regression over the cell's decisions, fitted to every row
  (:mod:`cellsearch.evaluators.surrogate`, as NAS-Bench-301 fits a model to its trained cells):
  it predicts a held-out cell better than the nearest rule and gives a smooth landscape instead of
  a piecewise constant one. ``table_distance`` is still reported, and ``max_distance`` still applies.

The cell's output list is not part of the action encoding: searched cells always use the
loose-ends rule, which is what the table's cells use.

Learning curves and fidelity: a table of format 2 (the shipped ``testbed_curves``) also holds, per cell
and training seed, the validation accuracy after every epoch and the CPU seconds it took to get there.
Its evaluator then has ``max_epochs`` (the table's ``child.epochs``) and answers
``evaluate(..., fidelity=Fidelity(epochs=e))`` with the curve up to epoch ``e`` (``val_accuracy`` is the
value at ``e``), and a few bytes of ``checkpoint`` naming the cell, the run and the epoch, so that
``Fidelity(epochs=E, checkpoint=...)`` goes on along the same curve: a multi-fidelity search over the
table runs in seconds. Which curve a lookup returns is ``runs``:

- ``mean`` (the default; what format-1 tables give): the mean over the cell's training seeds (and over
  tied nearest cells), a curve smoother than any one training run.
- ``one``: one training run, as a search that trains the child once sees it: among the tied nearest
  cells and their seeds, one picked from the search seed and the trial id (the same trial gets the same
  run again; its checkpoint keeps it). Seed noise is part of what early stopping must cope with, so
  ``experiment=testbed_curves`` uses it. The truth to judge a search by stays the seed mean.

``surrogate`` lookups fit one ridge model per epoch to the mean curves (``runs`` does not apply).

File format (``.json.gz``): ``{"format": 1 or 2, "name", "space": the space's settings (``Space.settings()``;
NASNet's without its ``name``: ``{ops, num_blocks, combines}``), "child",
"data", "sampling", "columns": [...], "rows": [[...], ...]}`` with the columns ``actions`` (the
canonical encoding), ``val_accuracy`` (a list, one per training seed), ``seeds``, ``params``,
``mult_adds``, ``train_seconds`` and ``origin`` (how the cell was sampled); format 2 adds ``curves``
(per seed, the accuracy after each of the child's epochs) and ``curve_cpu_seconds`` (per seed, the CPU
seconds from the start of training to the end of each epoch).
"""
from __future__ import annotations

import functools
import gzip
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cellsearch.validation import ConfigError
from cellsearch.evaluators.base import EpochPoint, EvalResult, Evaluator, Fidelity, failed_result
from cellsearch.evaluators.lookup_checkpoint import checked_epochs, read_checkpoint, write_checkpoint
from cellsearch.evaluators.surrogate import RidgeSurrogate
from cellsearch.space.genotype import Genotype, GenotypeError
from cellsearch.space.spaces import DEFAULT_SPACE, Space, space_from_settings

__all__ = ["CellTable", "LOOKUPS", "RUNS", "SURROGATE_COLUMNS", "TABLE_COLUMNS", "TableEvaluator", "TableRow",
           "ground_truth", "load_table", "table_path"]

TABLES_DIR = Path(__file__).with_name("tables")
TABLE_FORMATS = (1, 2)  # 2: with learning curves
LOOKUPS: tuple[str, ...] = ("nearest", "exact", "surrogate")
RUNS: tuple[str, ...] = ("mean", "one")
SURROGATE_COLUMNS: tuple[str, ...] = ("val_accuracy", "params", "mult_adds", "train_seconds")
TABLE_COLUMNS: tuple[str, ...] = ("actions", "val_accuracy", "seeds", "params", "mult_adds", "train_seconds",
                                  "origin")
CURVE_COLUMNS: tuple[str, ...] = ("curves", "curve_cpu_seconds")


@dataclass(frozen=True)
class TableRow:
    """One trained cell: its canonical action encoding and what training measured (per seed where it varies)."""

    actions: tuple[int, ...]
    val_accuracy: tuple[float, ...]  # one per seed
    seeds: tuple[int, ...]
    params: int
    mult_adds: int
    train_seconds: float  # mean over seeds
    origin: str = "random"
    curves: tuple[tuple[float, ...], ...] = ()  # per seed, the accuracy after each epoch (format 2)
    curve_cpu_seconds: tuple[tuple[float, ...], ...] = ()  # per seed, CPU seconds to the end of each epoch

    @property
    def mean_accuracy(self) -> float:
        return float(np.mean(self.val_accuracy))

    @property
    def mean_curve(self) -> np.ndarray:
        """The accuracy after each epoch, averaged over seeds (format 2 only)."""
        return np.mean(np.array(self.curves, dtype=float), axis=0)

    def to_list(self) -> list[Any]:
        values = [list(self.actions), [round(a, 6) for a in self.val_accuracy], list(self.seeds), self.params,
                  self.mult_adds, round(self.train_seconds, 2), self.origin]
        if self.curves:
            values += [[[round(a, 6) for a in c] for c in self.curves],
                       [[round(t, 2) for t in c] for c in self.curve_cpu_seconds]]
        return values


def canonical_actions(genotype: Genotype, space: Space) -> tuple[int, ...]:
    """The flat decisions of ``genotype``'s canonical form in ``space`` (NASNet: each block's (input, op)
    pairs sorted)."""
    return tuple(space.encode(genotype.canonical()))


def space_data(space: Space) -> dict[str, Any]:
    """A table's ``space`` entry: the space's settings; NASNet's without its name (the tables before the
    other spaces had none, and a table without a space name is a NASNet table)."""
    settings = dict(space.settings())
    if settings["name"] == DEFAULT_SPACE:
        del settings["name"]
    return settings


def describe_space(space: Space) -> str:
    """The space a table covers, in words, for error lines."""
    settings = space_data(space)
    if space.name == DEFAULT_SPACE:
        return f"ops {settings['ops']}, {settings['num_blocks']} blocks, combines {settings['combines']}"
    return f"space={space.name} " + ", ".join(f"{k} {v}" for k, v in settings.items() if k != "name")


@dataclass
class CellTable:
    """The rows of a table with the space and settings they were trained under."""

    name: str
    space: Space
    rows: list[TableRow]
    child: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    sampling: str = ""

    def __post_init__(self) -> None:
        self._matrix = np.array([r.actions for r in self.rows], dtype=np.int16).reshape(len(self.rows), -1)
        self._by_key = {self.space.decode(r.actions).key(): i for i, r in enumerate(self.rows)}
        with_curves = sum(bool(r.curves) for r in self.rows)
        if with_curves and with_curves < len(self.rows):
            raise ValueError(f"{len(self.rows) - with_curves} of {len(self.rows)} rows have no learning curves "
                             f"(a table has curves for every row or for none)")
        if with_curves:
            epochs = self.child.get("epochs")
            for row in self.rows:
                lengths = {len(c) for c in (*row.curves, *row.curve_cpu_seconds)}
                if len(row.curves) != len(row.seeds) or len(row.curve_cpu_seconds) != len(row.seeds) \
                        or lengths != {epochs}:
                    raise ValueError(f"row {list(row.actions)}: one curve of child.epochs={epochs} accuracies and "
                                     f"one of CPU seconds per seed {list(row.seeds)} expected")

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def curve_epochs(self) -> int | None:
        """Epochs of the table's learning curves (its ``child.epochs``); None for a table without curves."""
        return int(self.child["epochs"]) if self.rows and self.rows[0].curves else None

    def encode(self, genotype: Genotype) -> tuple[int, ...]:
        """The canonical encoding; GenotypeError names what lies outside the table's space."""
        try:
            return canonical_actions(genotype, self.space)
        except GenotypeError as err:
            preset = "testbed_table" if self.space.name == DEFAULT_SPACE else f"testbed_{self.space.name}"
            raise GenotypeError(f"{err} (table {self.name!r} covers {describe_space(self.space)}; "
                                f"search that space, e.g. experiment={preset})") from None

    def exact(self, genotype: Genotype) -> TableRow | None:
        """The row of ``genotype`` itself, or None."""
        self.encode(genotype)  # outside the space: an error, not a miss
        index = self._by_key.get(genotype.key())
        return None if index is None else self.rows[index]

    def nearest(self, genotype: Genotype) -> tuple[list[TableRow], int]:
        """The rows at the smallest Hamming distance from ``genotype``'s encoding, and that distance."""
        row = self.exact(genotype)
        if row is not None:
            return [row], 0
        query = np.array(self.encode(genotype), dtype=np.int16)
        distances = (self._matrix != query).sum(axis=1)
        best = int(distances.min())
        return [self.rows[i] for i in np.flatnonzero(distances == best)], best

    def index(self, row: TableRow) -> int:
        """The position of ``row`` in the table."""
        return self._by_key[self.space.decode(row.actions).key()]

    @functools.cached_property
    def surrogate(self) -> RidgeSurrogate:
        """The ridge model of SURROGATE_COLUMNS, fitted to every row (once, on first use)."""
        targets = np.array([[r.mean_accuracy, r.params, r.mult_adds, r.train_seconds] for r in self.rows])
        return RidgeSurrogate.fit(self._matrix, targets, tuple(self.space.layout.num_choices_list))

    @functools.cached_property
    def curve_surrogate(self) -> RidgeSurrogate:
        """One ridge model per epoch of the mean curves (format 2 only; once, on first use)."""
        targets = np.array([r.mean_curve for r in self.rows])
        return RidgeSurrogate.fit(self._matrix, targets, tuple(self.space.layout.num_choices_list))

    def predict(self, genotype: Genotype) -> dict[str, float]:
        """The surrogate's metrics for ``genotype`` (GenotypeError outside the table's space)."""
        values = self.surrogate.predict(self.encode(genotype))[0]
        return dict(zip(SURROGATE_COLUMNS, (float(v) for v in values)))

    def to_dict(self) -> dict[str, Any]:
        curves = self.curve_epochs is not None
        return {"format": 2 if curves else 1, "name": self.name, "space": space_data(self.space), "child": self.child,
                "data": self.data, "sampling": self.sampling,
                "columns": list(TABLE_COLUMNS + (CURVE_COLUMNS if curves else ())),
                "rows": [r.to_list() for r in self.rows]}

    def save(self, path: "str | Path") -> Path:
        """Write the table as gzipped JSON (``mtime=0``: the same rows give the same bytes)."""
        path = Path(path)
        text = json.dumps(self.to_dict(), separators=(",", ":")).encode()
        path.write_bytes(gzip.compress(text, mtime=0))
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CellTable":
        version = data.get("format")
        columns = {1: TABLE_COLUMNS, 2: TABLE_COLUMNS + CURVE_COLUMNS}.get(version)
        if columns is None or list(data.get("columns", [])) != list(columns):
            raise ConfigError(f"not a cellsearch table of format 1 (columns {list(TABLE_COLUMNS)}) or 2 (those "
                              f"and {list(CURVE_COLUMNS)})")
        space = space_from_settings(data["space"])
        rows = []
        for values in data["rows"]:
            a, acc, seeds, p, m, s, o = values[:7]
            curves = tuple(tuple(map(tuple, c)) for c in values[7:9]) if version == 2 else ((), ())
            rows.append(TableRow(tuple(a), tuple(acc), tuple(seeds), int(p), int(m), float(s), str(o), *curves))
        return cls(data["name"], space, rows, data.get("child", {}), data.get("data", {}), data.get("sampling", ""))


def table_path(name_or_path: "str | Path") -> Path:
    """A shipped table's file (``testbed`` -> tables/testbed.json.gz) or a path to one."""
    path = Path(name_or_path)
    if path.suffix or path.parent != Path("."):
        return path.expanduser()
    return TABLES_DIR / f"{name_or_path}.json.gz"


def shipped_tables() -> list[str]:
    """The names of the tables under tables/."""
    return sorted(p.name.removesuffix(".json.gz") for p in TABLES_DIR.glob("*.json.gz"))


@functools.lru_cache(maxsize=4)
def _load(path: Path) -> CellTable:
    try:
        data = json.loads(gzip.decompress(path.read_bytes()))
    except (OSError, ValueError, EOFError) as err:
        raise ConfigError(f"cannot read the table {path}: {err}") from None
    try:
        return CellTable.from_dict(data)
    except (KeyError, TypeError, ValueError, GenotypeError) as err:
        if isinstance(err, ConfigError):
            raise ConfigError(f"{path}: {err}") from None
        raise ConfigError(f"{path} is not a valid cellsearch table: {err}") from None


def load_table(name_or_path: "str | Path" = "testbed") -> CellTable:
    """Load a table by shipped name or path (cached); ConfigError if it is missing or malformed."""
    path = table_path(name_or_path)
    if not path.is_file():
        raise ConfigError(f"table {str(name_or_path)!r} not found ({path}); shipped tables: {shipped_tables()}")
    return _load(path.resolve())


def ground_truth(name_or_path: "str | Path" = "testbed", min_seeds: int = 3) -> list[tuple[Genotype, TableRow]]:
    """The table's cells trained with at least ``min_seeds`` seeds, each with its row (``mean_accuracy`` is
    the truth to rank estimators against), in table order. On the shipped testbed table: 60 cells (the 30
    best by seed 0 and the first 30 uniform random ones) with mean accuracy 0.333 to 0.612 of the table's
    0.283 to 0.612; by the table's quartiles 10, 16, 4 and 30 of them, 21 in its top tenth."""
    if isinstance(min_seeds, bool) or not isinstance(min_seeds, int) or min_seeds < 1:
        raise ConfigError(f"min_seeds must be an integer >= 1, got {min_seeds!r}")
    table = load_table(name_or_path)
    return [(table.space.decode(r.actions), r) for r in table.rows if len(r.val_accuracy) >= min_seeds]


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values))


@dataclass(frozen=True)
class _Place:
    """Where a lookup is on the table's curves: the rows it reads (an index each) and which seed of each
    (None: the mean over seeds); what a checkpoint holds."""

    rows: tuple[int, ...]
    seed_index: int | None

    def encode(self, table: str, genotype: Genotype, epoch: int) -> bytes:
        return write_checkpoint(genotype, epoch, table=table, rows=list(self.rows), seed_index=self.seed_index)


class TableEvaluator(Evaluator):
    """Looks each genotype up in a table (``lookup``: ``nearest``, ``exact`` or ``surrogate``); metrics
    ``val_accuracy``, ``params``, ``mult_adds``, ``train_seconds`` (what training it took) and
    ``table_distance``. On a table with learning curves it returns the curve too, and honours a
    :class:`Fidelity` (``runs``: ``mean`` or ``one``, see the module docstring)."""

    name = "table"
    metrics = ("val_accuracy", "params", "mult_adds", "train_seconds", "table_distance")

    def __init__(self, table: str = "testbed", lookup: str = "nearest", max_distance: int | None = None,
                 runs: str = "mean", space: "Space | dict[str, Any] | None" = None) -> None:
        if lookup not in LOOKUPS:
            raise ConfigError(f"unknown evaluator.lookup {lookup!r}; choose one of {list(LOOKUPS)}")
        if max_distance is not None and (isinstance(max_distance, bool) or not isinstance(max_distance, int)
                                         or max_distance < 0):
            raise ConfigError(f"evaluator.max_distance must be an integer >= 0 or null, got {max_distance!r}")
        if runs not in RUNS:
            raise ConfigError(f"unknown evaluator.runs {runs!r}; choose one of {list(RUNS)}")
        self.table, self.lookup, self.max_distance, self.runs = str(table), lookup, max_distance, runs
        # The search's space (the loop passes it), to refuse a table of another space before any lookup.
        self.space_name = None if space is None else space_from_settings(space).name

    @property
    def max_epochs(self) -> int | None:  # type: ignore[override]
        """The table's child epochs when it has learning curves (fidelity supported); None otherwise."""
        return load_table(self.table).curve_epochs

    def check(self) -> None:
        table = load_table(self.table)
        if self.space_name is not None and table.space.name != self.space_name:
            fitting = [n for n in shipped_tables() if load_table(n).space.name == self.space_name]
            raise ConfigError(f"evaluator.table {self.table!r} holds genotypes of space={table.space.name}, this "
                              f"search's space is space={self.space_name}; use a table of that space (shipped: "
                              f"{fitting or 'none'})")

    def evaluate(self, genotype: Genotype, trial_id: int = 0, seed: int = 0,
                 fidelity: Fidelity | None = None) -> EvalResult:
        """The table's metrics of ``genotype``; with ``fidelity``, those after ``fidelity.epochs`` epochs.

        Raises:
            ConfigError: a fidelity asked of a table without curves, beyond the table's epochs, or with a
                checkpoint that is not this table's for this cell.
        """
        start = time.perf_counter()
        table = load_table(self.table)
        epoch = self._check_fidelity(table, fidelity)
        try:
            if self.lookup == "exact":
                row = table.exact(genotype)
                if row is None:
                    return failed_result(f"cell not in table {table.name!r} ({len(table)} cells); use "
                                         f"evaluator.lookup=nearest to score it by its nearest cells",
                                         time.perf_counter() - start)
                rows, distance = [row], 0
            else:
                rows, distance = table.nearest(genotype)
        except GenotypeError as err:
            return failed_result(str(err), time.perf_counter() - start)
        if self.max_distance is not None and distance > self.max_distance:
            return failed_result(f"the nearest cell of table {table.name!r} is {distance} decisions away, more "
                                 f"than evaluator.max_distance={self.max_distance}", time.perf_counter() - start,
                                 table_distance=float(distance))
        if self.lookup == "surrogate":
            metrics = {**table.predict(genotype), "table_distance": float(distance)}
            if table.curve_epochs is None:
                return EvalResult("ok", metrics, time.perf_counter() - start)
            curve = table.curve_surrogate.predict(table.encode(genotype))[0]
            seconds = metrics["train_seconds"] * np.arange(1, len(curve) + 1) / len(curve)
            place = _Place((), None)
        else:
            place = self._place(table, genotype, rows, fidelity, trial_id, seed)
            picked = [table.rows[i] for i in place.rows]
            metrics = {
                "val_accuracy": _mean([self._final(r, place.seed_index) for r in picked]),
                "params": _mean([r.params for r in picked]),
                "mult_adds": _mean([r.mult_adds for r in picked]),
                "train_seconds": _mean([r.train_seconds for r in picked]),  # a whole child's (mean over seeds)
                "table_distance": float(distance),
            }
            if table.curve_epochs is None:
                return EvalResult("ok", metrics, time.perf_counter() - start)
            curve = np.mean([self._curve(r.curves, place.seed_index) for r in picked], axis=0)
            seconds = np.mean([self._curve(r.curve_cpu_seconds, place.seed_index) for r in picked], axis=0)
        if epoch is None:
            epoch = len(curve)
        else:  # the child after ``epoch`` epochs: its accuracy then, and the CPU seconds it has cost so far
            metrics.update(val_accuracy=float(curve[epoch - 1]), train_seconds=float(seconds[epoch - 1]))
        points = [EpochPoint(k + 1, float(curve[k]), None, float(seconds[k]), float(seconds[k])) for k in range(epoch)]
        checkpoint = place.encode(table.name, genotype, epoch) if epoch < len(curve) else None
        return EvalResult("ok", metrics, time.perf_counter() - start, curve=points, checkpoint=checkpoint)

    # --- helpers --------------------------------------------------------------------------------
    def _check_fidelity(self, table: CellTable, fidelity: Fidelity | None) -> int | None:
        """The epoch a fidelity asks for (None: the whole child), checked against the table."""
        if fidelity is None:
            return None
        if table.curve_epochs is None:
            with_curves = [n for n in shipped_tables() if load_table(n).curve_epochs is not None]
            raise ConfigError(f"table {table.name!r} has no learning curves, so it cannot be evaluated at a "
                              f"fidelity (early stopping); use a table with curves: {with_curves}")
        return checked_epochs(fidelity, table.curve_epochs, f"table {table.name!r}'s curves", "its child.epochs")

    def _place(self, table: CellTable, genotype: Genotype, rows: list[TableRow], fidelity: Fidelity | None,
               trial_id: int, seed: int) -> _Place:
        """Which rows and seed to read: the checkpoint's, else by ``runs`` (one run picked from seed and trial)."""
        if fidelity is not None and fidelity.checkpoint is not None:
            return self._resume(table, genotype, fidelity)
        if self.runs == "mean":
            return _Place(tuple(table.index(r) for r in rows), None)
        pick = random.Random(f"table-run:{table.name}:{seed}:{trial_id}")
        row = rows[pick.randrange(len(rows))]
        return _Place((table.index(row),), pick.randrange(len(row.seeds)))

    def _resume(self, table: CellTable, genotype: Genotype, fidelity: Fidelity) -> _Place:
        def belongs(state: dict[str, Any]) -> bool:  # this table's, reading rows it has
            return state["table"] == table.name and "seed_index" in state \
                and all(0 <= int(i) < len(table) for i in state["rows"])

        state = read_checkpoint(fidelity, genotype, f"table {table.name!r}", belongs)
        return _Place(tuple(int(i) for i in state["rows"]), state["seed_index"])

    @staticmethod
    def _final(row: TableRow, seed_index: int | None) -> float:
        return row.mean_accuracy if seed_index is None else row.val_accuracy[seed_index]

    @staticmethod
    def _curve(per_seed: tuple[tuple[float, ...], ...], seed_index: int | None) -> np.ndarray:
        values = np.array(per_seed, dtype=float)
        return values.mean(axis=0) if seed_index is None else values[seed_index]

    def describe(self) -> str:
        return f"{self.lookup} lookup in table {self.table}" + (", one training run per trial" if self.runs == "one"
                                                               else "")
