"""The genotype builder's NASNet-A Large against timm's hand-written NASNet-A Large on CUDA, with the
same weights: forward and backward agree."""
from __future__ import annotations

import itertools
import re

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU (pytest tests/gpu on a GPU machine)", allow_module_level=True)

import timm  # noqa: E402
from timm.models.nasnet import NASNetALarge  # noqa: E402

import cellsearch  # noqa: E402,F401  (registers cellnet_*)

WIDTH, STEM = 8, 16  # F and stem filters: NASNet-A "6 @ 192", small enough for a quick check


def _cell(name: str) -> str | None:
    found = re.match(r"(cells\.\d+|cell_stem_\d|cell_\d+|reduction_cell_\d)\.", name)
    return found.group(1) if found else None


def _role(name: str) -> int:
    """Inside a cell: what prepares the previous-previous input, then the previous input, then the ops
    (the order of both state dicts otherwise; timm registers the two preparations the other way round)."""
    if re.search(r"\.(preprocess0|conv_prev_1x1|path_1|path_2|final_path_bn)\.", name):
        return 0
    if re.search(r"\.(preprocess1|conv_1x1)\.", name):
        return 1
    return 2


def _aligned(keys: list[str]) -> list[str]:
    return [key for _, run in itertools.groupby(keys, key=_cell) for key in sorted(run, key=_role)]


def test_builder_matches_timm_nasnet_a_large_on_cuda_with_the_same_weights(exact_fp32):
    torch.manual_seed(0)
    theirs = NASNetALarge(num_features=24 * WIDTH, stem_size=STEM, num_classes=10, pad_type="")
    ours = timm.create_model("cellnet_nasnet_a_large", channels=WIDTH, stem_channels=STEM, num_classes=10)
    with torch.no_grad():  # random weights and batch-norm statistics, so that every parameter matters
        for p in theirs.parameters():
            p.normal_(0, 0.1)
        for name, buffer in theirs.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)
    state = theirs.state_dict()
    ours_keys, their_keys = _aligned(list(ours.state_dict())), _aligned(list(state))
    assert [ours.state_dict()[a].shape for a in ours_keys] == [state[b].shape for b in their_keys]
    ours.load_state_dict({a: state[b] for a, b in zip(ours_keys, their_keys)})
    # Batch norm on its stored statistics (eval mode): the same function on both sides.
    ours, theirs = ours.cuda().eval(), theirs.cuda().eval()
    x = torch.randn(4, 3, 224, 224, device="cuda")
    out_ours, out_theirs = ours(x), theirs(x)
    assert ((out_ours - out_theirs).norm() / out_theirs.norm()).item() < 1e-4
    out_ours.square().sum().backward()
    out_theirs.square().sum().backward()
    params_ours, params_theirs = dict(ours.named_parameters()), dict(theirs.named_parameters())
    pairs = [(a, b) for a, b in zip(ours_keys, their_keys) if b in params_theirs]
    g_ours = torch.cat([params_ours[a].grad.flatten() for a, _ in pairs])
    g_theirs = torch.cat([params_theirs[b].grad.flatten() for _, b in pairs])
    # All gradients together (single tensors with gradients near zero differ relatively more): 1e-3.
    assert ((g_ours - g_theirs).norm() / g_theirs.norm()).item() < 1e-3
