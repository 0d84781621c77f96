"""Fidelity for evaluators that look a learning curve up instead of training it (the table with curves,
the reward landscapes): the check of the epochs a :class:`~cellsearch.evaluators.base.Fidelity` asks for,
and their checkpoints, a few bytes of JSON that say which cell, how far, and what was read for it.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Callable

from cellsearch.evaluators.base import Fidelity
from cellsearch.space.genotype import Genotype
from cellsearch.validation import ConfigError

__all__ = ["cell_digest", "checked_epochs", "read_checkpoint", "write_checkpoint"]


def cell_digest(genotype: Genotype) -> str:
    """A short name of the cell, for checkpoints."""
    return hashlib.sha1(genotype.key().encode()).hexdigest()[:16]


def checked_epochs(fidelity: Fidelity, max_epochs: int, curves: str, setting: str) -> int:
    """``fidelity.epochs``; ConfigError unless it is a whole number of epochs within the curves.

    Args:
        fidelity: what a search asks for.
        max_epochs: the length of the curves.
        curves: what the curves are, for the message (e.g. ``"the landscape's curves"``).
        setting: where their length comes from, for the message (e.g. ``"evaluator.epochs"``).
    """
    epochs = fidelity.epochs
    if isinstance(epochs, bool) or not isinstance(epochs, int) or not 1 <= epochs <= max_epochs:
        raise ConfigError(f"Fidelity(epochs={epochs!r}) is outside {curves} of 1..{max_epochs} epochs ({setting})")
    return epochs


def write_checkpoint(genotype: Genotype, epoch: int, **read: Any) -> bytes:
    """The checkpoint of ``genotype`` looked up to ``epoch``, with what was ``read`` for it (JSON values)."""
    return json.dumps({"cell": cell_digest(genotype), "epoch": epoch, **read}, separators=(",", ":")).encode()


def read_checkpoint(fidelity: Fidelity, genotype: Genotype, owner: str,
                    belongs: Callable[[dict[str, Any]], bool] = lambda state: True) -> dict[str, Any]:
    """The state :func:`write_checkpoint` wrote into ``fidelity.checkpoint``.

    Args:
        fidelity: a Fidelity with a checkpoint.
        genotype: the cell it must be a checkpoint of.
        owner: who must have written it, for the message (e.g. ``"table 'testbed_curves'"``).
        belongs: whether the rest of the state is the owner's (may raise KeyError, TypeError, ValueError).

    Raises:
        ConfigError: a checkpoint of another cell or owner, one that cannot be read, or a fidelity that does
            not go past the checkpoint's epoch.
    """
    try:
        state = json.loads(fidelity.checkpoint)  # type: ignore[arg-type]
        mine = state["cell"] == cell_digest(genotype) and belongs(state)
        epoch = int(state["epoch"])
    except (ValueError, KeyError, TypeError):
        mine, epoch = False, 0
    if not mine:
        raise ConfigError(f"the checkpoint given with Fidelity(epochs={fidelity.epochs}) is not one {owner} returned "
                          f"for this cell; pass the EvalResult.checkpoint of its last segment, or None to start the "
                          f"child again")
    if fidelity.epochs <= epoch:
        raise ConfigError(f"Fidelity(epochs={fidelity.epochs}) does not go past its checkpoint's epoch {epoch}")
    return state
