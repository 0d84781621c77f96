"""``python train.py space=nasrl search=reinforce``: NAS-RL's own search (Zoph & Le 2017) runs end to end on tiny
synthetic images, keeps NAS-RL genotypes, and resumes with its controller."""
import pytest

from cellsearch.cli import run
from cellsearch.search.report import BEST_CELL_FILE
from cellsearch.search.run import run_search
from cellsearch.search.store import TrialStore
from cellsearch.space.genotype import load_genotype
from cellsearch.space.nasrl import NasRLGenotype, NasRLSpace

# Three-layer children, 4 filters at the widest, one epoch on 64 synthetic 32x32 images.
TINY = ("space=nasrl", "space.num_layers=3", "data=synthetic", "data.synthetic_train_size=64",
        "data.synthetic_test_size=16", "data.val_size=32", "child.accelerator=cpu", "child.devices=1",
        "child.channels=4", "child.epochs=1", "child.batch_size=32", "child.enable_progress_bar=false")


def _search(run_dir, compose) -> list:
    """``python train.py space=nasrl search=reinforce search.budget=2`` (tiny); the stored genotypes."""
    summary = run(compose(*TINY, "search=reinforce", "search.budget=2", f"run_dir={run_dir}"))
    assert summary.num_trials == 2 and summary.best is not None
    assert load_genotype(run_dir / BEST_CELL_FILE) == summary.best.genotype
    with TrialStore(run_dir / "trials.db") as store:
        rows = store.rows()
    assert all(row.ok for row in rows)
    return [row.genotype for row in rows]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_reinforce_searches_nasrl(tmp_path, compose):
    genotypes = _search(tmp_path / "run", compose)
    space = NasRLSpace(num_layers=3)
    for genotype in genotypes:
        assert isinstance(genotype, NasRLGenotype)
        space.validate(genotype)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_nasrl_search_resumes(tmp_path, compose, resume):
    run_dir = tmp_path / "run"
    genotypes = _search(run_dir, compose)
    resumed = run_search(resume(run_dir, "search.budget=3"))  # python train.py resume=<run_dir> search.budget=3
    assert resumed.num_trials == 3 and resumed.num_trained == 1
    with TrialStore(run_dir / "trials.db") as store:
        assert [row.genotype for row in store.rows()][:2] == genotypes
