"""End to end for each search space beside NASNet (slow): a search of that space, its export, the deployment
formats of the exported genotype, retraining it, and loading each result through timm."""
from pathlib import Path

import pytest
import timm
import torch

import cellsearch  # noqa: F401  (registers the entry points)
from cellsearch.cli import run
from cellsearch.search.report import BEST_CELL_FILE, BEST_CELL_PLOT
from cellsearch.space.genotype import load_genotype
from cellsearch.space.networks import TIMM_NAMES, network_class

# A few tiny children of each space on 300 of scikit-learn's digits (8x8, one channel).
TINY = ("data=digits", "data.train_subset=300", "data.val_subset=100", "child.accelerator=cpu", "child.devices=1",
        "child.cells_per_stage=1", "child.channels=4", "child.epochs=1", "child.batch_size=100",
        "child.enable_progress_bar=false")
# Each space with the strategy its paper searched it with (issue 25: REINFORCE for NAS-RL, evolution for motifs).
SPACES = {
    "nasrl": ("space=nasrl", "space.num_layers=4", "search=reinforce"),
    "hierarchical": ("space=hierarchical", "space.motifs_per_level=[2,1]", "space.nodes_per_motif=[3,3]",
                  "search=evolution"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SPACES))
def test_search_export_deploy_retrain_and_load_through_timm(name, tmp_path, compose):
    space = SPACES[name]
    run_dir = tmp_path / "search"
    summary = run(compose(*TINY, *space, "search.budget=2", "export.name=found",
                          f"export.dir={tmp_path / 'cells'}", f"run_dir={run_dir}"))
    assert summary.num_trials == 2 and summary.best is not None
    assert (run_dir / BEST_CELL_PLOT).is_file()  # drawn by the space's diagram module
    assert any((run_dir / "tensorboard" / "trials").iterdir())  # the live view's HParams rows
    found = load_genotype(tmp_path / "cells" / "found.yaml")
    assert found == summary.best.genotype == load_genotype(run_dir / BEST_CELL_FILE)
    assert type(found).space == name

    cifar, imagenet = TIMM_NAMES[name]
    model = timm.create_model(imagenet, genotype=str(tmp_path / "cells" / "found.yaml"), cells_per_stage=1,
                              channels=4, num_classes=10)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 10)

    exported = run(compose(*TINY, "task=export", "export.format=[torchscript,torch_export,onnx,safetensors]",
                           f"export.run={run_dir}", "export.model_args={cells_per_stage: 1, channels: 4}",
                           f"export.out={tmp_path / 'deploy'}", f"run_dir={tmp_path / 'export'}"))
    assert [e.format for e in exported] == ["torchscript", "torch_export", "onnx", "safetensors"]
    assert all(e.max_abs_diff <= 1e-4 for e in exported), exported
    deployed = timm.create_model(f"local-dir:{exported[-1].paths[0]}", pretrained=True)
    assert deployed.genotype == found and deployed.pretrained_cfg["architecture"] == cifar

    retrained = run(compose(*TINY, "task=retrain", f"cell={tmp_path / 'cells' / 'found.yaml'}", "data.cutout=4",
                            f"run_dir={tmp_path / 'retrain'}"))
    weights = timm.create_model(f"local-dir:{retrained.weights}", pretrained=True).eval()
    assert type(weights) is network_class(name) and weights.genotype == found
    assert weights(torch.zeros(2, 1, 8, 8)).shape == (2, 10) and Path(retrained.weights).is_dir()
