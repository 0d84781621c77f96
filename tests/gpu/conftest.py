"""Shared settings of the GPU smoke suite (skipped, module by module, where there is no CUDA)."""
import pytest
import torch


@pytest.fixture
def exact_fp32():
    """fp32 without TF32 (Ampere and later use TF32 for fp32 matmuls and convolutions by default)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
