"""The ``cellsearch`` command: its help and one-line errors come before torch is imported, ``import cellsearch``
still registers the timm models, exports land in run directories, and the wheel works outside any clone."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cellsearch.search.export import export_cells
from cellsearch.search.lock import lock_run_dir
from cellsearch.search.store import TrialStore
from cellsearch.space.genotype import load_genotype
from test_live import session

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
FIXTURE_RUN = Path(__file__).parent / "fixtures" / "schema1_run"


def installed_command(python: Path) -> Path:
    """The ``cellsearch`` console script that pip installed beside ``python``."""
    return python.parent / "cellsearch"


def run_command(command: Path, *args: str, cwd: Path, timeout: float = 300):
    """``cellsearch args`` as installed: the CPU only, one thread (the tests share two cores), Hydra's errors as
    the user sees them."""
    env = {**_without_pythonpath(), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([str(command), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def config_groups() -> dict[str, list[str]]:
    """The config groups in conf/ and their options (Hydra's own settings, conf/hydra, aside)."""
    return {d.name: sorted(p.stem for p in d.glob("*.yaml")) for d in sorted(CONF.iterdir())
            if d.is_dir() and any(d.glob("*.yaml")) and d.name != "hydra"}


COMMAND = installed_command(Path(sys.executable))


def test_help_lists_every_group_and_writes_nothing(tmp_path):
    result = run_command(COMMAND, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    listed = dict(line.split(": ", 1) for line in result.stdout.split("== Configuration groups ==")[1]
                  .split("== Config ==")[0].splitlines() if ": " in line)
    for group, options in config_groups().items():
        assert set(options) <= set(listed[group].split(", ")), (group, listed.get(group))
    assert "cellsearch experiment=quick_cpu" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_the_command_module_imports_no_torch():
    """What makes ``cellsearch --help`` quick: composing a config needs Hydra and the schemas, not torch."""
    code = ("import sys, cellsearch, cellsearch.cli; "
            "print(sorted(m for m in ('torch', 'timm', 'torchvision', 'pytorch_lightning') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_import_cellsearch_registers_the_timm_models_when_timm_loads():
    """In either order, and when cellsearch's own network module is what first imports timm."""
    code = ("import sys, cellsearch\n"
            "from cellsearch.space.network import CellNetCifar  # imports timm while itself being imported\n"
            "import timm\n"
            "model = timm.create_model('cellnet_cifar', cells_per_stage=1, channels=4)\n"
            "print(type(model).__name__, len(timm.list_models('cellnet_*')), type(timm.__loader__).__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "CellNetCifar" and int(out[1]) >= 11 and out[2] == "SourceFileLoader"


@pytest.mark.slow  # a fresh interpreter (4 s); the import order it guards changes rarely
def test_the_network_base_imports_before_timm():
    """GenotypeNet's module first: importing timm then imports the entry points, whose networks subclass it."""
    code = ("import cellsearch.space.head, timm\n"
            "print(*(type(timm.create_model(name)).__name__ for name in ('nasrl_cifar', 'hierarchical_cifar')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["NasRLNetCifar", "HierarchicalNetCifar"]


@pytest.mark.parametrize("args, message", [
    (["search=foo"], "error: unknown option search=foo; choose one of: darts, evolution, ppo"),
    (["foo=bar"], "error: unknown config key 'foo'"),
    (["seed=[1"], "error: cannot read the override 'seed=[1'"),
    (["hydra.run.dir={tmp}/file/run"], "error: cannot create or write {tmp}/file/run (Not a directory)"),
])
def test_bad_input_is_one_line_and_exit_status_2(tmp_path, args, message):
    (tmp_path / "file").write_text("not a folder")
    result = run_command(COMMAND, *(a.format(tmp=tmp_path) for a in args), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(message.format(tmp=tmp_path)), result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no outputs/ left behind


def test_a_search_exports_into_its_own_run_directory(tmp_path):
    """export.dir's default is the run directory, which the search holds locked when it exports."""
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURE_RUN, run_dir)
    with TrialStore(run_dir / "trials.db") as store:
        best = store.best(1)[0].genotype
    with lock_run_dir(run_dir, "search"):
        paths = export_cells(run_dir, "found", top_k=2)
    assert paths == [run_dir / "found.yaml", run_dir / "found_2.yaml"]
    assert load_genotype(paths[0]) == best and load_genotype(paths[0]).name == "found"
    with pytest.raises(ValueError, match="search_settings.yaml, the name of a run directory's settings"):
        export_cells(run_dir, "search_settings", overwrite=True)


def test_the_config_exports_into_the_run_directory(tmp_path, compose):
    cfg = compose(f"run_dir={tmp_path}")
    assert cfg.export.dir == str(tmp_path) and cfg.export.out == str(tmp_path)


@pytest.mark.slow
def test_the_wheel_runs_a_search_outside_the_clone(tmp_path):
    """Build the wheel, install it into a new environment that sees the dependencies but no cellsearch, load a
    shipped cell by name and run ``cellsearch experiment=quick_cpu`` (two children) from a folder outside the
    clone to a finished run directory."""
    source = tmp_path / "source"  # a copy, so that the build leaves nothing in the clone
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("cellsearch", "cells", "conf"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", *_build_isolation(),
                    "--wheel-dir", str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    wheel, = (tmp_path / "dist").glob("cellsearch-*.whl")

    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # The dependencies through a path line: the folders it names join sys.path as they are, and the .pth
    # files in them (this environment's editable cellsearch) are not read.
    dependencies = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    Path(site, "dependencies.pth").write_text("\n".join(dependencies) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    str(wheel)], check=True, capture_output=True)
    code = "import cellsearch; print(cellsearch.__file__); print(cellsearch.load_genotype('pnasnet_5').name)"
    where, shipped = subprocess.run([str(python), "-c", code], cwd=tmp_path, env=_without_pythonpath(), check=True,
                                    capture_output=True, text=True).stdout.split()
    package = Path(where).parent
    assert package.is_relative_to(env_dir) and shipped == "pnasnet_5"  # a shipped cell, by name

    run_dir = tmp_path / "run"
    result = run_command(installed_command(python), "experiment=quick_cpu", "search.budget=2", "child.epochs=1",
                         "export.name=found", f"hydra.run.dir={run_dir}", cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in ("best_cell.yaml", "trials.db", "train.log", "found.yaml"):
        assert (run_dir / name).is_file(), name
    with TrialStore(run_dir / "trials.db") as store:
        rows = store.rows()
    assert len(rows) == 2
    for row in rows:  # the live view: one HParams session per child, with its stored reward
        hparams, _, metrics = session(run_dir, row.trial_id)
        assert hparams["trial_id"] == row.trial_id and metrics["trial/reward"] == pytest.approx(row.reward)
    assert load_genotype(run_dir / "found.yaml").cells() == load_genotype(run_dir / "best_cell.yaml").cells()
    assert sorted(p.name for p in (package / "cells").iterdir()) == sorted(p.name for p in (ROOT / "cells").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist", "env", "run", "source"]  # nothing else written


def _build_isolation() -> list[str]:
    """``--no-build-isolation`` where this environment builds wheels itself (setuptools >= 70.1, or the wheel
    package); otherwise pip fetches the build requirements from PyPI."""
    from importlib.metadata import version
    from importlib.util import find_spec

    major, minor = (int(part) for part in version("setuptools").split(".")[:2])
    return ["--no-build-isolation"] if (major, minor) >= (70, 1) or find_spec("wheel") else []


def _without_pythonpath() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
