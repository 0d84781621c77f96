"""cellsearch: search for convolutional cells the NASNet way, train proxy children with Lightning,
and use what you find as timm models."""
from importlib.metadata import PackageNotFoundError, version

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

try:  # one source: pyproject.toml's version, as installed
    __version__ = version("cellsearch")
except PackageNotFoundError:  # a source checkout on sys.path, not installed: it cannot say which release it is
    __version__ = "unknown"

__all__ = [
    "__version__",
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
