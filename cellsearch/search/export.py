"""Export the best cells of a search into genotype files that timm and ``task=retrain`` load.

    cellsearch task=export export.run=outputs/search/<time> export.name=my_cell export.top_k=3

writes ``my_cell.yaml`` (the best cell), ``my_cell_2.yaml`` and ``my_cell_3.yaml`` into the export's run
directory, or into ``export.dir=<folder>``; then ``timm.create_model('cellnet_imagenet',
genotype='<folder>/my_cell.yaml')`` builds a network (a genotype of another search space: that space's
entry point from ``cellsearch.space.networks.TIMM_NAMES``, e.g. ``nasrl_cifar``). Exported into ``./cells``
(``export.dir=cells``), a cell is also found by name (``genotype='my_cell'``, ``cell=my_cell``) from the
folder that holds ``cells/``.
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from cellsearch.space.genotype import save_genotype
from cellsearch.search.estimates import reward_text
from cellsearch.search.lock import lock_run_dir
from cellsearch.search.resume import RUN_CONFIG_FILE
from cellsearch.search.settings import SETTINGS_FILE
from cellsearch.search.store import TRIALS_FILE, TrialStore
from cellsearch.validation import ConfigError, positive_int

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def export_paths(name: str, top_k: int, out_dir: "str | Path", overwrite: bool = False) -> list[Path]:
    """The files an export of ``top_k`` cells under ``name`` writes; ConfigError if it cannot."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"export.name must be a file name of letters, digits, '_', '.' or '-', got {name!r}")
    positive_int(top_k, "export.top_k")
    paths = [Path(out_dir) / (f"{name}.yaml" if rank == 1 else f"{name}_{rank}.yaml") for rank in range(1, top_k + 1)]
    kept = [p.name for p in paths if p.name in (RUN_CONFIG_FILE, SETTINGS_FILE)]
    if kept:  # cells are exported into run directories, where these files are what a resume reads
        raise ConfigError(f"export.name={name} would write {kept[0]}, the name of a run directory's settings; "
                          f"choose another export.name")
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise ConfigError(f"export would overwrite {', '.join(existing)}; choose another export.name or set "
                          f"export.overwrite=true")
    return paths


def export_cells(run_dir: "str | Path", name: str, top_k: int = 1, out_dir: "str | Path | None" = None,
                 overwrite: bool = False) -> list[Path]:
    """Write the ``top_k`` best distinct cells of the search in ``run_dir`` as ``<out_dir>/<name>.yaml``,
    ``<name>_2.yaml``, ...; returns the paths. Existing files are kept unless ``overwrite``.

    Args:
        run_dir: the search's run directory (its trials.db).
        name: the file name of the best cell, without ``.yaml``.
        top_k: how many of the best distinct cells to write.
        out_dir: where the files go; by default ``run_dir`` itself.
        overwrite: replace existing files of the same names.
    """
    if run_dir is None:
        raise ConfigError("export.run is not set: give the search's run directory, export.run=outputs/search/<time>")
    out_dir = run_dir if out_dir is None else out_dir
    paths = export_paths(name, top_k, out_dir, overwrite)
    db = Path(run_dir) / TRIALS_FILE
    if not db.is_file():
        raise ConfigError(f"{run_dir} is not a search run directory: {db} does not exist")
    with TrialStore(db) as store:
        best = store.best(top_k)
    if not best:
        raise ConfigError(f"{db} holds no successful child yet; nothing to export")
    with lock_run_dir(out_dir, "export"):  # one writer per folder of cells (a search exporting: its own lock)
        for rank, (row, path) in enumerate(zip(best, paths), 1):
            source = (f"cellsearch search {Path(run_dir).resolve()}: rank {rank} of {len(best)}, "
                      f"trial {row.trial_id}, {reward_text(row)}")
            save_genotype(replace(row.genotype, name=path.stem, source=source), path)  # of any search space
    return paths[:len(best)]
