"""The planted-bug catalogue: deliberately wrong implementations, each paired with the check
meant to catch it, and correct implementations that every check must pass.

The implementations live here, inside the installed package, so that ``marl-oracle mutants``
can run them anywhere; the test tier ``tests/mutants/`` asserts every verdict.  One module
per area; each exports ``MUTANTS`` and ``CORRECT`` (tuples of :class:`~verify.checks.Mutant`).
"""

from __future__ import annotations

from verify.checks._core import Mutant
from verify.checks.planted import cooperative, gae, networked, tabular

__all__ = ["AREAS", "all_correct", "all_mutants"]

AREAS = {"tabular": tabular, "gae": gae, "cooperative": cooperative,
         "networked": networked}
"""Area name -> module with ``MUTANTS`` and ``CORRECT``."""


def all_mutants() -> tuple[Mutant, ...]:
    """Every planted bug, area by area."""
    return tuple(m for mod in AREAS.values() for m in mod.MUTANTS)


def all_correct() -> tuple[Mutant, ...]:
    """Every correct implementation, area by area."""
    return tuple(m for mod in AREAS.values() for m in mod.CORRECT)
