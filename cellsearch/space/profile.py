"""Model size: parameter counts and mult-adds (conv and linear layers, as the papers count them)."""
from __future__ import annotations

import torch
from torch import nn


def format_count(n: float | None) -> str:
    """Short human form of a count: 3.35M, 563.64M, 24.94B ('-' for None)."""
    if n is None:
        return "-"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def count_params(model: nn.Module, exclude_aux: bool = True) -> int:
    """Number of parameters; the auxiliary head is left out by default, as published counts do."""
    return sum(
        p.numel() for name, p in model.named_parameters() if not (exclude_aux and name.startswith("aux_head."))
    )


@torch.no_grad()
def count_mult_adds(model: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32)) -> int:
    """Multiply-accumulates of one forward pass of one image through convs and linear layers."""
    total = 0

    def conv_hook(module: nn.Conv2d, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output[0].numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += module.in_features * module.out_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        model(torch.zeros(1, *input_size, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total


def estimate_training_memory(model: nn.Module, input_size: tuple[int, int, int], batch_size: int,
                             optimizer_buffers: int = 1) -> int:
    """Bytes one training step of ``model`` holds at its peak, estimated: the weights, their gradients
    and ``optimizer_buffers`` copies (SGD momentum: 1), plus the activations autograd saves for the
    backward pass, counted on a forward of two images and scaled to ``batch_size``."""
    params = {id(p) for p in model.parameters()}
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if id(tensor) not in params:  # a parameter saved for backward is counted with the weights
            saved[id(tensor)] = tensor.numel() * tensor.element_size()
        return tensor

    probe = 2  # batch-norm statistics need more than one image; activations grow linearly with the batch
    was_training = model.training
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}  # BN statistics stay as they were
    model.train()
    try:
        device = next(model.parameters()).device
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(torch.zeros(probe, *input_size, device=device))
    finally:
        model.train(was_training)
        model.load_state_dict(buffers, strict=False)
    return int(weights * (2 + optimizer_buffers) + sum(saved.values()) * batch_size / probe)
