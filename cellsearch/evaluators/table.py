"""A tabular benchmark: cells trained once, looked up instead of trained (as NAS-Bench tables are).

A table holds, for each of a few hundred cells of one search space, the metrics that stand-alone
training measured for it (``val_accuracy``, ``params``, ``mult_adds``, ``train_seconds``), with the
child and data settings they were trained under. :class:`TableEvaluator` (``evaluator=table``)
answers a genotype from the table in microseconds, so search strategies can be compared over many
seeds in seconds.

Lookup:

- ``exact``: the genotype's canonical key (:meth:`Genotype.key`) must be in the table; any other cell
  fails with an error saying so.
- ``nearest`` (the default): the row(s) closest to the genotype in Hamming distance over the
  canonical action encoding (each block's two (input, op) pairs sorted, then the flat decisions of
  :meth:`SearchSpace.encode`); when several rows tie, their metrics are averaged. The distance is
  reported as the metric ``table_distance`` (0 for an exact hit). A table of a few hundred cells
  covers a tiny part of the space, so the nearest rule makes the landscape piecewise constant:
  see the README for how well the nearest row predicts a held-out cell on the shipped table.
- ``surrogate``: a ridge regression over the cell's decisions, fitted to every row
  (:mod:`cellsearch.evaluators.surrogate`, as NAS-Bench-301 fits a model to its trained cells):
  it predicts a held-out cell better than the nearest rule and gives a smooth landscape instead of
  a piecewise constant one. ``table_distance`` is still reported, and ``max_distance`` still applies.

The cell's output list is not part of the action encoding: searched cells always use the
loose-ends rule, which is what the table's cells use.

File format (``.json.gz``): ``{"format": 1, "name", "space": {ops, num_blocks, combines}, "child",
"data", "sampling", "columns": [...], "rows": [[...], ...]}`` with the columns ``actions`` (the
canonical encoding), ``val_accuracy`` (a list, one per training seed), ``seeds``, ``params``,
``mult_adds``, ``train_seconds`` and ``origin`` (how the cell was sampled).
"""
from __future__ import annotations

import functools
import gzip
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cellsearch.validation import ConfigError
from cellsearch.evaluators.base import EvalResult, Evaluator, failed_result
from cellsearch.evaluators.surrogate import RidgeSurrogate
from cellsearch.space.genotype import Genotype, GenotypeError, SearchSpace

__all__ = ["CellTable", "LOOKUPS", "SURROGATE_COLUMNS", "TABLE_COLUMNS", "TableEvaluator", "TableRow", "ground_truth",
           "load_table", "table_path"]

TABLES_DIR = Path(__file__).with_name("tables")
TABLE_FORMAT = 1
LOOKUPS: tuple[str, ...] = ("nearest", "exact", "surrogate")
SURROGATE_COLUMNS: tuple[str, ...] = ("val_accuracy", "params", "mult_adds", "train_seconds")
TABLE_COLUMNS: tuple[str, ...] = ("actions", "val_accuracy", "seeds", "params", "mult_adds", "train_seconds",
                                  "origin")


@dataclass(frozen=True)
class TableRow:
    """One trained cell: its canonical action encoding and what training measured."""

    actions: tuple[int, ...]
    val_accuracy: tuple[float, ...]  # one per seed
    seeds: tuple[int, ...]
    params: int
    mult_adds: int
    train_seconds: float  # mean over seeds
    origin: str = "random"

    @property
    def mean_accuracy(self) -> float:
        return float(np.mean(self.val_accuracy))

    def to_list(self) -> list[Any]:
        return [list(self.actions), [round(a, 6) for a in self.val_accuracy], list(self.seeds), self.params,
                self.mult_adds, round(self.train_seconds, 2), self.origin]


def canonical_actions(genotype: Genotype, space: SearchSpace) -> tuple[int, ...]:
    """The flat decisions of ``genotype`` in ``space`` after sorting each block's (input, op) pairs."""
    return tuple(space.encode(genotype.canonical()))


@dataclass
class CellTable:
    """The rows of a table with the space and settings they were trained under."""

    name: str
    space: SearchSpace
    rows: list[TableRow]
    child: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    sampling: str = ""

    def __post_init__(self) -> None:
        self._matrix = np.array([r.actions for r in self.rows], dtype=np.int16).reshape(len(self.rows), -1)
        self._by_key = {self.space.decode(r.actions).key(): i for i, r in enumerate(self.rows)}

    def __len__(self) -> int:
        return len(self.rows)

    def encode(self, genotype: Genotype) -> tuple[int, ...]:
        """The canonical encoding; GenotypeError names what lies outside the table's space."""
        try:
            return canonical_actions(genotype, self.space)
        except GenotypeError as err:
            raise GenotypeError(f"{err} (table {self.name!r} covers ops {list(self.space.ops)}, "
                                f"{self.space.num_blocks} blocks, combines {list(self.space.combines)}; "
                                f"search that space, e.g. experiment=testbed_table)") from None

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

    @functools.cached_property
    def surrogate(self) -> RidgeSurrogate:
        """The ridge model of SURROGATE_COLUMNS, fitted to every row (once, on first use)."""
        targets = np.array([[r.mean_accuracy, r.params, r.mult_adds, r.train_seconds] for r in self.rows])
        return RidgeSurrogate.fit(self._matrix, targets, tuple(self.space.layout.num_choices_list))

    def predict(self, genotype: Genotype) -> dict[str, float]:
        """The surrogate's metrics for ``genotype`` (GenotypeError outside the table's space)."""
        values = self.surrogate.predict(self.encode(genotype))[0]
        return dict(zip(SURROGATE_COLUMNS, (float(v) for v in values)))

    def to_dict(self) -> dict[str, Any]:
        space = {"ops": list(self.space.ops), "num_blocks": self.space.num_blocks,
                 "combines": list(self.space.combines)}
        return {"format": TABLE_FORMAT, "name": self.name, "space": space, "child": self.child, "data": self.data,
                "sampling": self.sampling, "columns": list(TABLE_COLUMNS), "rows": [r.to_list() for r in self.rows]}

    def save(self, path: "str | Path") -> Path:
        """Write the table as gzipped JSON (``mtime=0``: the same rows give the same bytes)."""
        path = Path(path)
        text = json.dumps(self.to_dict(), separators=(",", ":")).encode()
        path.write_bytes(gzip.compress(text, mtime=0))
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CellTable":
        if data.get("format") != TABLE_FORMAT or list(data.get("columns", [])) != list(TABLE_COLUMNS):
            raise ConfigError(f"not a cellsearch table of format {TABLE_FORMAT} with columns {list(TABLE_COLUMNS)}")
        space = SearchSpace(**data["space"])
        rows = [TableRow(tuple(a), tuple(acc), tuple(seeds), int(p), int(m), float(s), str(o))
                for a, acc, seeds, p, m, s, o in data["rows"]]
        return cls(data["name"], space, rows, data.get("child", {}), data.get("data", {}), data.get("sampling", ""))


def table_path(name_or_path: "str | Path") -> Path:
    """A shipped table's file (``testbed`` -> tables/testbed.json.gz) or a path to one."""
    path = Path(name_or_path)
    if path.suffix or path.parent != Path("."):
        return path.expanduser()
    return TABLES_DIR / f"{name_or_path}.json.gz"


@functools.lru_cache(maxsize=4)
def _load(path: Path) -> CellTable:
    try:
        data = json.loads(gzip.decompress(path.read_bytes()))
    except (OSError, ValueError, EOFError) as err:
        raise ConfigError(f"cannot read the table {path}: {err}") from None
    try:
        return CellTable.from_dict(data)
    except (KeyError, TypeError, ValueError, GenotypeError) as err:
        raise ConfigError(f"{path} is not a valid cellsearch table: {err}") from None


def load_table(name_or_path: "str | Path" = "testbed") -> CellTable:
    """Load a table by shipped name or path (cached); ConfigError if it is missing or malformed."""
    path = table_path(name_or_path)
    if not path.is_file():
        shipped = sorted(p.name.removesuffix(".json.gz") for p in TABLES_DIR.glob("*.json.gz"))
        raise ConfigError(f"table {str(name_or_path)!r} not found ({path}); shipped tables: {shipped}")
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


class TableEvaluator(Evaluator):
    """Looks each genotype up in a table (``lookup``: ``nearest``, ``exact`` or ``surrogate``); metrics
    ``val_accuracy``, ``params``, ``mult_adds``, ``train_seconds`` (what training it took) and
    ``table_distance``."""

    name = "table"
    metrics = ("val_accuracy", "params", "mult_adds", "train_seconds", "table_distance")

    def __init__(self, table: str = "testbed", lookup: str = "nearest", max_distance: int | None = None) -> None:
        if lookup not in LOOKUPS:
            raise ConfigError(f"unknown evaluator.lookup {lookup!r}; choose one of {list(LOOKUPS)}")
        if max_distance is not None and (isinstance(max_distance, bool) or not isinstance(max_distance, int)
                                         or max_distance < 0):
            raise ConfigError(f"evaluator.max_distance must be an integer >= 0 or null, got {max_distance!r}")
        self.table, self.lookup, self.max_distance = str(table), lookup, max_distance

    def check(self) -> None:
        load_table(self.table)

    def evaluate(self, genotype: Genotype, trial_id: int = 0, seed: int = 0) -> EvalResult:
        start = time.perf_counter()
        table = load_table(self.table)
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
            return EvalResult("ok", metrics, time.perf_counter() - start)
        metrics = {
            "val_accuracy": _mean([r.mean_accuracy for r in rows]),
            "params": _mean([r.params for r in rows]),
            "mult_adds": _mean([r.mult_adds for r in rows]),
            "train_seconds": _mean([r.train_seconds for r in rows]),
            "table_distance": float(distance),
        }
        return EvalResult("ok", metrics, time.perf_counter() - start)

    def describe(self) -> str:
        return f"{self.lookup} lookup in table {self.table}"
