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
from verify.checks._core import KnownBug, Mutant
from verify.checks.planted import (
    advantage_norm,
    cooperative,
    gae,
    layout,
    masks,
    multi_discrete,
    networked,
    ppo_loss,
    returns,
    tabular,
    value_norm,
    vtrace,
)
from verify.executors import map_seeded

__all__ = [
    "AREAS",
    "PlantedVerdict",
    "all_correct",
    "all_mutants",
    "expected_diagnosis",
    "known_bugs",
    "run_planted",
]

Kind = Literal["mutant", "correct"]

AREAS = {"tabular": tabular, "gae": gae, "cooperative": cooperative,
         "networked": networked, "returns": returns, "vtrace": vtrace,
         "value-norm": value_norm, "advantage-norm": advantage_norm,
         "ppo-loss": ppo_loss, "multi-discrete": multi_discrete,
         "masks": masks, "layout": layout}
"""Area name -> module with ``MUTANTS`` and ``CORRECT``."""


def all_mutants() -> tuple[Mutant, ...]:
    """Every planted bug, area by area."""
    return tuple(m for mod in AREAS.values() for m in mod.MUTANTS)


def known_bugs(check: str) -> tuple[KnownBug, ...]:
    """The planted bugs of check ``check`` that its diagnosis tries: every area's
    ``DIAGNOSABLE`` entry whose catalogue mutant of the same name belongs to ``check``."""
    out = []
    for mod in AREAS.values():
        mine = {m.name for m in mod.MUTANTS if m.check == check}
        out += [k for k in mod.DIAGNOSABLE if k.name in mine]
    return tuple(out)


DIAGNOSED_AS: dict[str, str] = {
    "gae-truncation-as-termination": "truncation='as-termination'",
    "gae-sb3-float32-ignores-last-dones": "'gae-bootstrap-through-terminal-at-batch-end'",
    "nstep-return-through-batch-end": "'gae-bootstrap-through-terminal-at-batch-end'",
    "occupancy-missing-1-minus-gamma": "normalised=False",
    "adv-norm-pooled-declared-per-agent": "scope='pooled'",
    "adv-norm-batch-declared-minibatch": "scope='pooled'",
}
"""Planted bugs that are a known convention or the float32 form of another planted bug, and
what their diagnosis names."""


def expected_diagnosis(mutant: Mutant) -> str | None:
    """What the diagnosis of ``mutant``'s failing check must name: the convention or other
    bug of :data:`DIAGNOSED_AS`, the mutant's own quoted name when it is one of its check's
    :func:`known_bugs`, else ``None`` (no known alternative reproduces it)."""
    if mutant.name in DIAGNOSED_AS:
        return DIAGNOSED_AS[mutant.name]
    if any(k.name == mutant.name for k in known_bugs(mutant.check)):
        return repr(mutant.name)
    return None


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
        diagnosis: the check's diagnosis of a failure (``None`` when it passed or found no
            known bug or convention that matches).
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
    diagnosis: str | None = None

    @property
    def verdict_ok(self) -> bool:
        """A mutant was caught, or a correct implementation passed."""
        return not self.passed if self.kind == "mutant" else self.passed

    @property
    def named(self) -> str:
        """What the diagnosis named: ``"itself"`` (the entry's own name), the other known bug
        or convention it named, or ``"-"``."""
        if self.diagnosis is None:
            return "-"
        if f"{self.name!r}" in self.diagnosis:
            return "itself"
        start = self.diagnosis.find("'")
        if "convention" in self.diagnosis.split("(", 1)[0]:
            return self.diagnosis.split("convention ", 1)[1].split(" (", 1)[0]
        end = self.diagnosis.find("'", start + 1)
        return self.diagnosis[start + 1:end] if 0 <= start < end else "other"


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
        report.passed, report.where, time.perf_counter() - start, report.diagnosis,
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
