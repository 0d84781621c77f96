"""cellsearch: search for convolutional cells the NASNet way, train proxy children with Lightning,
and use what you find as timm models."""
from cellsearch.space.genotype import (
    NASNET_OPS,
    Block,
    Cell,
    Genotype,
    GenotypeError,
    SearchSpace,
    load_genotype,
    save_genotype,
    shipped_cells,
)

__version__ = "0.1.0"

__all__ = [
    "NASNET_OPS",
    "Block",
    "Cell",
    "Genotype",
    "GenotypeError",
    "SearchSpace",
    "load_genotype",
    "save_genotype",
    "shipped_cells",
]
from cellsearch import models  # noqa: F401  (registers the timm entry points)
