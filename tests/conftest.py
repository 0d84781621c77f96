"""Shared test settings: one torch thread, Hydra's compose API, and the tiny search the end-to-end tests run."""
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig

import cellsearch.config  # noqa: F401  (registers the config groups' schemas for Hydra's compose API)
from cellsearch.search.resume import resumed_config

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny tensors gain nothing from threads, and tests that start worker processes share 2 cores:
    intra-op threads only oversubscribe them (up to 25x slower on a loaded machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def compose() -> Callable[..., DictConfig]:
    """``compose(*overrides)``: the configuration ``python train.py overrides...`` runs with."""
    def compose(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return hydra_compose("config", overrides=list(overrides))
    return compose


@pytest.fixture(scope="session")
def tiny_search() -> tuple[str, ...]:
    """Overrides that shrink whatever child the task and experiment chose until it trains in about a second
    on a CPU (N=1, F=4, one epoch on 300 of scikit-learn's digits, 100 to validate) in a space of 2 blocks
    of cheap ops. They pick no child recipe, so ``task=retrain`` still retrains with its regularisers."""
    return ("data=digits", "child.accelerator=cpu", "child.cells_per_stage=1", "child.channels=4", "child.epochs=1",
            "child.batch_size=100", "data.train_subset=300", "data.val_subset=100", "space.num_blocks=2",
            "space.ops=[identity,avg_pool_3x3,max_pool_3x3,conv_1x1,conv_3x3]")


@pytest.fixture(scope="session")
def resume(compose) -> Callable[..., DictConfig]:
    """``resume(run_dir, *overrides)``: the configuration ``python train.py resume=<run_dir> overrides...`` runs."""
    def resume(run_dir, *overrides: str) -> DictConfig:
        args = [f"resume={run_dir}", *overrides]
        return resumed_config(compose(*args, "run_dir=unused"), args)
    return resume
