"""Running a search: the loop, the trial store, the executors, export of the best cells, and the
early-stopping schedulers (:class:`ASHA`, :class:`Hyperband`) for a training loop of one's own."""
from cellsearch.search.schedulers import ASHA, Hyperband

__all__ = ["ASHA", "Hyperband"]
