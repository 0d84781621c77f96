"""timm entry points for networks built from genotypes: published cells at their published sizes,
and two generic skeletons that take any genotype, searched or published.

Papers:
- NASNet-A: Zoph et al., Learning Transferable Architectures for Scalable Image Recognition, 2018.
- PNASNet-5: Liu et al., Progressive Neural Architecture Search, 2018.
- AmoebaNet-A: Real et al., Regularized Evolution for Image Classifier Architecture Search, 2019.
- DARTS V2: Liu, Simonyan, Yang, DARTS: Differentiable Architecture Search, 2019.
- NAS-RL: Zoph & Le, Neural Architecture Search with Reinforcement Learning, 2017 (``nasrl_*``: its
  layer-by-layer space, see ``cellsearch.space.nasrl_network``).
- Hierarchical representations: Liu et al., Hierarchical Representations for Efficient Architecture
  Search, 2018 (``hierarchical_cifar``, ``hierarchical_imagenet``: any genotype of ``space=hierarchical``).

``import cellsearch`` registers every ``cellnet_*`` name, after which
``timm.create_model('cellnet_cifar', genotype='cells/my_cell.yaml')`` or
``timm.create_model('cellnet_nasnet_a_mobile')`` work anywhere a timm model name does. The
generic entry points take ``genotype=`` (a shipped name, a YAML path, a Genotype, or the plain
dict of ``Genotype.to_dict()``; default ``'nasnet_a'``) plus any skeleton argument
(``cells_per_stage``, ``channels``, ...); the published ones take the same arguments as overrides.
No pretrained weights are hosted: load exported ones with ``pretrained_cfg_overlay=dict(file=...)``
or ``'local-dir:<folder>'`` with ``pretrained=True`` (see ``cellsearch.weights``).
"""
from __future__ import annotations

from contextlib import nullcontext
from functools import partial
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

# The module, not its classes: importing timm imports this module (cellsearch._timm_hook), possibly while
# cellsearch.space.network, which imports timm, is itself still being imported.
from cellsearch.space import hierarchical_network, nasrl_network, network

__all__ = ["CIFAR_MEAN", "CIFAR_STD"]

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def _build(skeleton: type[torch.nn.Module], device: Any = None, dtype: torch.dtype | None = None,
           **kwargs: Any) -> torch.nn.Module:
    """Construct on ``device`` (e.g. 'meta' to inspect sizes for free) and cast to ``dtype``."""
    with torch.device(device) if device is not None else nullcontext():
        model = skeleton(**kwargs)
    return model.to(dtype=dtype) if dtype is not None else model


def _num_feature_maps(skeleton: type[network.CellNet], kwargs: dict[str, Any]) -> int:
    """Feature maps of ``features_only``: the stem and the three stages, plus the stem cells'
    output for NASNet's ImageNet stem (see ``CellNet._init_feature_info``)."""
    return 5 if skeleton is network.CellNetImageNet and kwargs.get("stem_type", "nasnet") == "nasnet" else 4


def _create_cellnet(variant: str, skeleton: type[network.CellNet], pretrained: bool = False,
                    **kwargs: Any) -> torch.nn.Module:
    out_indices = tuple(range(_num_feature_maps(skeleton, kwargs)))
    return build_model_with_cfg(
        partial(_build, skeleton),
        variant,
        pretrained,
        # Cells take two inputs, so the network cannot be re-written as a sequence: features come from
        # forward_intermediates, which also prunes the cells after the last requested feature map.
        feature_cfg=dict(feature_cls="getter", out_indices=out_indices),
        **kwargs,
    )


def _cellnet(variant: str, skeleton: type[network.CellNet], pretrained: bool, defaults: dict,
             kwargs: dict) -> network.CellNet:
    """Build ``variant`` with its published arguments, any of which ``kwargs`` overrides."""
    return _create_cellnet(variant, skeleton, pretrained, **{**defaults, **kwargs})


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7), "crop_pct": 0.875,
        "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.0", "classifier": "classifier", "license": "apache-2.0", **kwargs,
    }


def _cifar_cfg(**kwargs: Any) -> dict[str, Any]:
    return _cfg(**{"num_classes": 10, "input_size": (3, 32, 32), "pool_size": (8, 8), "crop_pct": 1.0,
                   "interpolation": "bilinear", "mean": CIFAR_MEAN, "std": CIFAR_STD, **kwargs})


# Google's NASNet, PNASNet and AmoebaNet code scales inputs to [-1, 1] (Inception preprocessing).
_tf_mobile = dict(mean=IMAGENET_INCEPTION_MEAN, std=IMAGENET_INCEPTION_STD)
_tf_large = dict(input_size=(3, 331, 331), pool_size=(11, 11), crop_pct=0.911, **_tf_mobile)
_NASNET, _PNASNET, _AMOEBANET, _DARTS = "arXiv:1707.07012", "arXiv:1712.00559", "arXiv:1802.01548", "arXiv:1806.09055"
_NASRL = "arXiv:1611.01578"
_HIERARCHICAL = "arXiv:1711.00436"

default_cfgs = generate_default_cfgs({
    "cellnet_cifar": _cifar_cfg(),
    "cellnet_imagenet": _cfg(),
    "cellnet_nasnet_a_cifar": _cifar_cfg(paper_ids=_NASNET),
    "cellnet_amoebanet_a_cifar": _cifar_cfg(paper_ids=_AMOEBANET),
    "cellnet_darts_v2_cifar": _cifar_cfg(paper_ids=_DARTS),
    "cellnet_nasnet_a_mobile": _cfg(paper_ids=_NASNET, **_tf_mobile),
    "cellnet_nasnet_a_large": _cfg(paper_ids=_NASNET, **_tf_large),
    "cellnet_pnasnet_5_mobile": _cfg(paper_ids=_PNASNET, **_tf_mobile),
    "cellnet_pnasnet_5_large": _cfg(paper_ids=_PNASNET, **_tf_large),
    "cellnet_amoebanet_a_mobile": _cfg(paper_ids=_AMOEBANET, **_tf_mobile),
    "cellnet_darts_v2_imagenet": _cfg(paper_ids=_DARTS, interpolation="bilinear"),
    # NAS-RL networks keep the stem's resolution (strides fixed to 1 in the default genotype)
    "nasrl_cifar": _cifar_cfg(pool_size=(32, 32), paper_ids=_NASRL),
    "nasrl_imagenet": _cfg(pool_size=(28, 28), paper_ids=_NASRL),
    "hierarchical_cifar": _cifar_cfg(paper_ids=_HIERARCHICAL),
    "hierarchical_imagenet": _cfg(paper_ids=_HIERARCHICAL, first_conv="stem.0.0"),
})


@register_model
def cellnet_cifar(pretrained: bool = False, **kwargs: Any) -> network.CellNetCifar:
    """CIFAR skeleton for any genotype (``genotype=``, default nasnet_a; N=6, F=32 unless given)."""
    return _cellnet("cellnet_cifar", network.CellNetCifar, pretrained, {}, kwargs)


@register_model
def cellnet_imagenet(pretrained: bool = False, **kwargs: Any) -> network.CellNetImageNet:
    """ImageNet skeleton for any genotype (``genotype=``, default nasnet_a; N=4, F=44 unless given)."""
    return _cellnet("cellnet_imagenet", network.CellNetImageNet, pretrained, {}, kwargs)


@register_model
def cellnet_nasnet_a_cifar(pretrained: bool = False, **kwargs: Any) -> network.CellNetCifar:
    """NASNet-A "6 @ 768" CIFAR network, 3.3M parameters; ``auxiliary=True`` adds the auxiliary head."""
    defaults = dict(genotype="nasnet_a", cells_per_stage=6, channels=32)
    return _cellnet("cellnet_nasnet_a_cifar", network.CellNetCifar, pretrained, defaults, kwargs)


@register_model
def cellnet_amoebanet_a_cifar(pretrained: bool = False, **kwargs: Any) -> network.CellNetCifar:
    """AmoebaNet-A CIFAR network, N=6, F=36 (3.2M parameters published)."""
    defaults = dict(genotype="amoebanet_a", cells_per_stage=6, channels=36)
    return _cellnet("cellnet_amoebanet_a_cifar", network.CellNetCifar, pretrained, defaults, kwargs)


@register_model
def cellnet_darts_v2_cifar(pretrained: bool = False, **kwargs: Any) -> network.CellNetCifar:
    """DARTS V2 CIFAR network, N=6, F=36 (3.3M parameters)."""
    defaults = dict(genotype="darts_v2", cells_per_stage=6, channels=36)
    return _cellnet("cellnet_darts_v2_cifar", network.CellNetCifar, pretrained, defaults, kwargs)


@register_model
def cellnet_nasnet_a_mobile(pretrained: bool = False, **kwargs: Any) -> network.CellNetImageNet:
    """NASNet-A Mobile, "4 @ 1056" (N=4, F=44): 5.3M parameters, 564M mult-adds at 224."""
    defaults = dict(genotype="nasnet_a", cells_per_stage=4, channels=44, stem_channels=32)
    return _cellnet("cellnet_nasnet_a_mobile", network.CellNetImageNet, pretrained, defaults, kwargs)


@register_model
def cellnet_nasnet_a_large(pretrained: bool = False, **kwargs: Any) -> network.CellNetImageNet:
    """NASNet-A Large, "6 @ 4032" (N=6, F=168): 88.9M parameters, 23.8B mult-adds at 331."""
    defaults = dict(genotype="nasnet_a", cells_per_stage=6, channels=168, stem_channels=96)
    return _cellnet("cellnet_nasnet_a_large", network.CellNetImageNet, pretrained, defaults, kwargs)


@register_model
def cellnet_pnasnet_5_mobile(pretrained: bool = False, **kwargs: Any) -> network.CellNetImageNet:
    """PNASNet-5 Mobile (N=3, F=54): 5.1M parameters, 588M mult-adds at 224."""
    defaults = dict(genotype="pnasnet_5", cells_per_stage=3, channels=54, stem_channels=32, reduction_in_stage=True)
    return _cellnet("cellnet_pnasnet_5_mobile", network.CellNetImageNet, pretrained, defaults, kwargs)


@register_model
def cellnet_pnasnet_5_large(pretrained: bool = False, **kwargs: Any) -> network.CellNetImageNet:
    """PNASNet-5 Large (N=4, F=216): 86.1M parameters, 25.0B mult-adds at 331."""
    defaults = dict(genotype="pnasnet_5", cells_per_stage=4, channels=216, stem_channels=96, reduction_in_stage=True)
    return _cellnet("cellnet_pnasnet_5_large", network.CellNetImageNet, pretrained, defaults, kwargs)


@register_model
def cellnet_amoebanet_a_mobile(pretrained: bool = False, **kwargs: Any) -> network.CellNetImageNet:
    """AmoebaNet-A mobile (N=4, F=50; 5.1M parameters, 555M mult-adds published)."""
    defaults = dict(genotype="amoebanet_a", cells_per_stage=4, channels=50, stem_channels=32)
    return _cellnet("cellnet_amoebanet_a_mobile", network.CellNetImageNet, pretrained, defaults, kwargs)


@register_model
def cellnet_darts_v2_imagenet(pretrained: bool = False, **kwargs: Any) -> network.CellNetImageNet:
    """DARTS V2 ImageNet network with DARTS's stem (N=4, F=48): 4.7M parameters."""
    defaults = dict(genotype="darts_v2", cells_per_stage=4, channels=48, stem_type="darts")
    return _cellnet("cellnet_darts_v2_imagenet", network.CellNetImageNet, pretrained, defaults, kwargs)


def _create_nasrl(variant: str, skeleton: type[nasrl_network.NasRLNet], pretrained: bool,
                  kwargs: dict) -> nasrl_network.NasRLNet:
    """Build a NAS-RL network; ``features_only`` gives every feature map (``nasrl_network.feature_maps``)."""
    genotype = nasrl_network.resolve_nasrl_genotype(kwargs.pop("genotype", nasrl_network.DEFAULT_GENOTYPE))
    return build_model_with_cfg(
        partial(_build, skeleton),
        variant,
        pretrained,
        # Layers read any earlier layers, so features come from forward_intermediates (as for cells).
        feature_cfg=dict(feature_cls="getter", out_indices=tuple(range(len(nasrl_network.feature_maps(genotype))))),
        genotype=genotype,
        **kwargs,
    )


@register_model
def nasrl_cifar(pretrained: bool = False, **kwargs: Any) -> nasrl_network.NasRLNetCifar:
    """CIFAR network for any NAS-RL genotype (``genotype=``, default the hand-written nasrl_baseline chain)."""
    return _create_nasrl("nasrl_cifar", nasrl_network.NasRLNetCifar, pretrained, kwargs)


@register_model
def nasrl_imagenet(pretrained: bool = False, **kwargs: Any) -> nasrl_network.NasRLNetImageNet:
    """ImageNet network (stride-8 stem) for any NAS-RL genotype (``genotype=``, default nasrl_baseline)."""
    return _create_nasrl("nasrl_imagenet", nasrl_network.NasRLNetImageNet, pretrained, kwargs)


# --- hierarchical representations (Liu et al. 2018) ------------------------------------------------

def _create_hierarchical(variant: str, skeleton: type, pretrained: bool = False,
                         **kwargs: Any) -> hierarchical_network.HierarchicalNet:
    # feature maps: the stem and each stage (3 on CIFAR, 4 on ImageNet)
    num_maps = 5 if skeleton is hierarchical_network.HierarchicalNetImageNet else 4
    return build_model_with_cfg(partial(_build, skeleton), variant, pretrained,
                                feature_cfg=dict(feature_cls="getter", out_indices=tuple(range(num_maps))), **kwargs)


@register_model
def hierarchical_cifar(pretrained: bool = False, **kwargs: Any) -> hierarchical_network.HierarchicalNetCifar:
    """CIFAR skeleton for any hierarchical genotype (``genotype=``, default the hierarchical_random baseline;
    the paper's evaluation size N=2, C0=64 unless given)."""
    return _create_hierarchical("hierarchical_cifar", hierarchical_network.HierarchicalNetCifar, pretrained, **kwargs)


@register_model
def hierarchical_imagenet(pretrained: bool = False, **kwargs: Any) -> hierarchical_network.HierarchicalNetImageNet:
    """ImageNet skeleton for any hierarchical genotype (``genotype=``, default the hierarchical_random baseline;
    N=2, C0=64 unless given)."""
    return _create_hierarchical("hierarchical_imagenet", hierarchical_network.HierarchicalNetImageNet, pretrained,
                                **kwargs)
