"""The planted-bug catalogue: deliberately wrong implementations, each paired with the check
meant to catch it, and correct implementations that every check must pass.

The implementations live here, inside the installed package, so that ``marl-oracle mutants``
can run them anywhere; the test tier ``tests/mutants/`` asserts every verdict.  One module
per area; each exports ``MUTANTS`` and ``CORRECT`` (tuples of :class:`~verify.checks.Mutant`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Literal

import numpy as np

from reference.errors import ModelError
from verify.checks._core import Mutant
from verify.checks.planted import cooperative, gae, networked, tabular
from verify.executors import map_seeded

__all__ = ["AREAS", "PlantedVerdict", "all_correct", "all_mutants", "run_planted"]

Kind = Literal["mutant", "correct"]

AREAS = {"tabular": tabular, "gae": gae, "cooperative": cooperative,
         "networked": networked}
"""Area name -> module with ``MUTANTS`` and ``CORRECT``."""


def all_mutants() -> tuple[Mutant, ...]:
    """Every planted bug, area by area."""
    return tuple(m for mod in AREAS.values() for m in mod.MUTANTS)


def all_correct() -> tuple[Mutant, ...]:
    """Every correct implementation, area by area."""
    return tuple(m for mod in AREAS.values() for m in mod.CORRECT)


@dataclass(frozen=True)
class PlantedVerdict:
    """What the check meant for one catalogue entry said about it.

    Attributes:
        area: the catalogue area (``"gae"``).
        kind: ``"mutant"`` (must be caught) or ``"correct"`` (must pass).
        name, bug, check: the entry's name, what is wrong with it, and its check's name.
        cases: how many instances the check ran.
        failures: how many of them failed.
        passed: the check's verdict.
        where: the check's worst case.
        seconds: wall time of the check.
    """

    area: str
    kind: Kind
    name: str
    bug: str
    check: str
    cases: int
    failures: int
    passed: bool
    where: str
    seconds: float

    @property
    def verdict_ok(self) -> bool:
        """A mutant was caught, or a correct implementation passed."""
        return not self.passed if self.kind == "mutant" else self.passed


def _entries(area: str, kind: Kind) -> tuple[Mutant, ...]:
    module = AREAS[area]
    entries: tuple[Mutant, ...] = module.MUTANTS if kind == "mutant" else module.CORRECT
    return entries


def _run_entry(key: tuple[str, Kind, int], rng: np.random.Generator) -> PlantedVerdict:
    """Run one entry through its check (the checks are seeded; ``rng`` is unused)."""
    area, kind, index = key
    entry = _entries(area, kind)[index]
    start = time.perf_counter()
    report = entry.run()
    return PlantedVerdict(
        area, kind, entry.name, entry.bug, entry.check, report.cases, report.failures,
        report.passed, report.where, time.perf_counter() - start,
    )


def run_planted(
    areas: Sequence[str] | None = None, *, executor: Executor | None = None
) -> tuple[PlantedVerdict, ...]:
    """Every mutant and correct implementation of ``areas`` (default all) through its check,
    area by area in catalogue order, mutants first; the entries run as independent pieces
    on ``executor`` (:func:`verify.executors.map_seeded`, default a local process pool).

    Raises:
        ModelError: an area that is not in :data:`AREAS`.
    """
    asked = list(AREAS) if areas is None else list(areas)
    unknown = [a for a in asked if a not in AREAS]
    if unknown or not asked:
        raise ModelError(f"areas = {asked!r}: expected names from {sorted(AREAS)}")
    chosen = [a for a in AREAS if a in asked]  # catalogue order, each area once
    kinds: tuple[Kind, Kind] = ("mutant", "correct")
    keys = [
        (area, kind, index)
        for area in chosen
        for kind in kinds
        for index in range(len(_entries(area, kind)))
    ]
    return map_seeded(_run_entry, keys, executor=executor, seed=0).results
