"""Published parameter counts and mult-adds are reproduced by the generic genotype builder.

Anchors (counts exclude the auxiliary head): the papers' tables (NASNet, Zoph et al. 2018; DARTS,
Liu et al. 2019; AmoebaNet, Real et al. 2019) and timm's hand-written nasnetalarge and pnasnet5large.
"""
import pytest
import torch

from cellsearch.space.network import CellNetCifar, CellNetImageNet
from cellsearch.space.profile import count_mult_adds, count_params


def _params_on_meta(cls, **kwargs) -> int:
    with torch.device("meta"):  # no memory, no init time: only shapes matter for counting
        return count_params(cls(**kwargs))


@pytest.mark.parametrize("cls, kwargs, published, tolerance", [
    (CellNetCifar, dict(genotype="nasnet_a", cells_per_stage=6, channels=32), 3.3e6, 0.02),
    (CellNetCifar, dict(genotype="darts_v2", cells_per_stage=6, channels=36), 3_349_342, 0.0),
    (CellNetCifar, dict(genotype="amoebanet_a", cells_per_stage=6, channels=36), 3.2e6, 0.02),
    (CellNetImageNet, dict(genotype="nasnet_a", cells_per_stage=4, channels=44, stem_channels=32), 5_289_978, 0.0),
    # timm's hand-written nasnetalarge: 88,753,150
    (CellNetImageNet, dict(genotype="nasnet_a", cells_per_stage=6, channels=168, stem_channels=96), 88_753_150, 0.0),
    # timm's pnasnet5large: 86,057,668
    (CellNetImageNet, dict(genotype="pnasnet_5", cells_per_stage=4, channels=216, stem_channels=96,
                           reduction_in_stage=True), 86_057_668, 0.0),
], ids=["nasnet_a_cifar_6@768", "darts_v2_cifar", "amoebanet_a_cifar", "nasnet_a_mobile", "nasnet_a_large",
        "pnasnet_5_large"])
def test_parameter_counts_match_published(cls, kwargs, published, tolerance):
    params = _params_on_meta(cls, **kwargs)
    assert abs(params - published) <= tolerance * published, f"{params:,} vs published {published:,.0f}"


def test_auxiliary_head_is_excluded_from_counts():
    with torch.device("meta"):
        model = CellNetCifar("nasnet_a", cells_per_stage=6, channels=32, auxiliary=True)
    assert count_params(model) == _params_on_meta(CellNetCifar, genotype="nasnet_a", cells_per_stage=6, channels=32)
    assert count_params(model, exclude_aux=False) > count_params(model)


def test_nasnet_a_mobile_mult_adds_at_224():
    model = CellNetImageNet("nasnet_a", cells_per_stage=4, channels=44, stem_channels=32)
    mult_adds = count_mult_adds(model, (3, 224, 224))
    assert abs(mult_adds - 564e6) <= 0.05 * 564e6, f"{mult_adds:,}"
