"""Shared test settings."""
import pytest
import torch

import cellsearch.config  # noqa: F401  (registers the config groups' schemas for Hydra's compose API)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny tensors gain nothing from threads, and tests that start worker processes share 2 cores:
    intra-op threads only oversubscribe them (up to 25x slower on a loaded machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
