"""Which network class builds a genotype of each search space, for CIFAR-sized and ImageNet-sized inputs.

Every class here is a :class:`~cellsearch.space.head.GenotypeNet` whose constructor takes the genotype
first and then ``cells_per_stage``, ``channels``, ``num_classes``, ``in_chans``, ``auxiliary``,
``drop_rate``, ``drop_path_rate`` and ``global_pool`` (what a child or a retrain sets); ``TIMM_NAMES``
gives the timm entry point that builds each (``cellsearch.models``).
"""
from __future__ import annotations

import importlib
from typing import Any

import torch

from cellsearch.space.spaces import SPACE_CLASSES

# space -> ("module:class" for CIFAR, "module:class" for ImageNet)
NETWORK_CLASSES: dict[str, tuple[str, str]] = {
    "nasnet": ("cellsearch.space.network:CellNetCifar", "cellsearch.space.network:CellNetImageNet"),
    "nasrl": ("cellsearch.space.nasrl_network:NasRLNetCifar", "cellsearch.space.nasrl_network:NasRLNetImageNet"),
    "hierarchical": ("cellsearch.space.hierarchical_network:HierarchicalNetCifar",
                     "cellsearch.space.hierarchical_network:HierarchicalNetImageNet"),
}
# space -> (CIFAR entry point, ImageNet entry point) registered with timm
TIMM_NAMES: dict[str, tuple[str, str]] = {
    "nasnet": ("cellnet_cifar", "cellnet_imagenet"),
    "nasrl": ("nasrl_cifar", "nasrl_imagenet"),
    "hierarchical": ("hierarchical_cifar", "hierarchical_imagenet"),
}
assert set(NETWORK_CLASSES) == set(TIMM_NAMES) == set(SPACE_CLASSES)  # one entry per space (a code invariant)


def space_of(genotype: Any) -> str:
    """The search space a genotype object belongs to."""
    return type(genotype).space


def network_class(space: str, imagenet: bool = False) -> type:
    """The network class that builds genotypes of ``space`` (CIFAR skeleton unless ``imagenet``)."""
    module_name, class_name = NETWORK_CLASSES[space][int(imagenet)].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def build_network(genotype: Any, imagenet: bool = False, **kwargs: Any) -> Any:
    """The network for ``genotype`` of any space, with the skeleton arguments ``kwargs``."""
    return network_class(space_of(genotype), imagenet)(genotype, **kwargs)


def has_auxiliary_head(genotype: Any) -> bool:
    """Whether the network of ``genotype``'s space builds an auxiliary head (NASNet's does; a network without
    one refuses ``auxiliary=True``). Probed on the meta device, which allocates nothing."""
    with torch.device("meta"):
        build_network(genotype)  # a genotype it cannot build fails here, as it would when training
        try:
            build_network(genotype, auxiliary=True)
        except ValueError:  # ConfigError or GenotypeError: the head is what it refuses, the rest built above
            return False
    return True
