"""cellsearch: search for convolutional cells the NASNet way, train proxy children with Lightning,
and use what you find as timm models."""
from importlib.metadata import PackageNotFoundError, version

from cellsearch._timm_hook import register_when_timm_loads
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

# timm.create_model('cellnet_...') works after `import cellsearch`: the entry points are registered when timm is
# imported (at once if it is already), so that importing cellsearch alone does not load torch (cellsearch --help).
register_when_timm_loads()
