"""What every network built from a genotype shares, whatever its search space: the classification head
and the bookkeeping timm and cellsearch's exports need.

A subclass builds its body, sets ``self.genotype``, ``self.num_features`` and ``self._architecture``
(its constructor's arguments other than the genotype and the head's, as plain data), calls
:meth:`GenotypeNet._init_head`, and implements ``forward_features`` (unpooled features of the last
layer); ``forward``, ``forward_head``, ``forward_with_aux``, ``get_classifier``, ``reset_classifier``
and ``architecture_args`` come from here.
"""
# No ``from __future__ import annotations``: see cellsearch/space/network.py (torch.fx and TorchScript).
from typing import Any

import torch
from torch import nn

from cellsearch.validation import integer


def _timm_create_classifier() -> Any:
    """timm's ``create_classifier``, imported when a head is built: importing timm registers cellsearch's entry
    points (cellsearch._timm_hook), whose networks subclass GenotypeNet, so this module must not import timm
    while it is itself being imported."""
    from timm.layers import create_classifier

    return create_classifier


class GenotypeNet(nn.Module):
    """Base of the networks built from a genotype: global pooling, dropout, a linear classifier."""

    # Plain-data bookkeeping for timm's export helpers, never needed by a scripted forward.
    __jit_unused_properties__ = ["_model_args"]

    def _init_head(self, num_features: int, num_classes: int, in_chans: int, drop_rate: float,
                   global_pool: str) -> None:
        """The head over ``num_features`` channels (``num_classes=0``: none, timm's convention)."""
        create_classifier = _timm_create_classifier()
        integer(num_classes, "num_classes", 0)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.num_features = num_features
        self.global_pool, self.classifier = create_classifier(num_features, num_classes, pool_type=global_pool)
        self.head_hidden_size = num_features * self.global_pool.feat_mult()
        self.head_drop = nn.Dropout(drop_rate)
        self._recorded_model_args: dict[str, Any] = {}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # --- training helpers ----------------------------------------------------------------------
    def drop_path_groups(self) -> list[list[nn.Module]]:
        """The modules that drop paths, grouped by depth (a cell, a layer), shallowest first; each module
        has a ``drop_prob`` attribute."""
        raise NotImplementedError

    def set_drop_path_rate(self, rate: float) -> None:
        """Set the drop-path probability of the deepest group (cell, layer); earlier groups get it scaled
        by depth (NASNet's ScheduledDropPath). Trainers ramp ``rate`` linearly from 0 over training."""
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"drop path rate must be in [0, 1), got {rate}")
        self.drop_path_rate = rate
        groups = self.drop_path_groups()
        for i, group in enumerate(groups):
            for module in group:
                module.drop_prob = rate * (i + 1) / len(groups)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each cell's (layer's, stage's) activations in the backward pass instead of storing them."""
        self.grad_checkpointing = enable

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits and auxiliary logits (None: this network has no auxiliary head). Training calls this."""
        return self.forward(x), None

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier (``num_classes=0`` removes it; ``global_pool=''`` removes pooling)."""
        create_classifier = _timm_create_classifier()
        integer(num_classes, "num_classes", 0)
        self.num_classes = num_classes
        pool_type = global_pool if global_pool is not None else self.global_pool.pool_type
        reference = next(self.parameters())
        self.global_pool, self.classifier = create_classifier(
            self.num_features, num_classes, pool_type=pool_type, device=reference.device, dtype=reference.dtype)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self.global_pool.train(self.training)
        self.classifier.train(self.training)

    # --- reconstruction ------------------------------------------------------------------------
    def architecture_args(self) -> dict[str, Any]:
        """Constructor arguments as plain data (genotype as a dict): enough to rebuild this model."""
        args = dict(self._architecture)
        args.update(genotype=self.genotype.to_dict(), num_classes=self.num_classes, in_chans=self.in_chans,
                    global_pool=self.global_pool.pool_type)
        return args

    # timm's create_model records the caller's keyword arguments in ``_model_args`` and its
    # export helpers (save_for_hf, push_to_hf_hub) write them to config.json. A genotype object
    # or a path to a local file would not survive that trip, so the arguments are reported with
    # the architecture as plain data.
    @property
    def _model_args(self) -> dict[str, Any]:
        return {**self._recorded_model_args, **self.architecture_args()}

    @_model_args.setter
    def _model_args(self, args: dict[str, Any]) -> None:
        self._recorded_model_args = dict(args)
