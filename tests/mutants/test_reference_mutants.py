"""The suite kills every planted bug of ``reference/`` (tests/mutants/reference_mutants.py).

Each mutant is planted for the duration of its test only (a recompiled function rebound in
place, restored afterwards), and the tests it names must fail.  ``bench/mutants.py`` prints
the kill rate per module."""

from __future__ import annotations

import importlib

import pytest
import reference_mutants as rm


@pytest.mark.parametrize("mutant", rm.MUTANTS, ids=[m.name for m in rm.MUTANTS])
def test_reference_mutant_is_killed(mutant: rm.SourceMutant) -> None:
    results = rm.run_killers(mutant)
    errors = [r for r in results if r[1] == "error"]
    assert not errors, f"machinery error, not a kill: {errors}"
    assert any(outcome == "killed" for _, outcome, _ in results), (
        f"{mutant.name} ({mutant.note}) survived {[k for k, _, _ in results]}"
    )


def test_names_are_unique_and_killers_exist() -> None:
    names = [m.name for m in rm.MUTANTS]
    assert len(names) == len(set(names))
    for m in rm.MUTANTS:
        assert m.killers
        for killer in m.killers:
            assert callable(rm.resolve(killer)), killer


def test_planting_is_undone() -> None:
    """After a mutant's context the original function is back everywhere it was bound."""
    mutant = rm.MUTANTS[0]
    module = importlib.import_module(mutant.module)
    before = getattr(module, mutant.target)
    with rm.planted(mutant):
        assert getattr(module, mutant.target) is not before
        assert getattr(importlib.import_module("reference.tabular"), mutant.target) is not before
    assert getattr(module, mutant.target) is before


def test_unmutated_recompilation_passes_the_killers() -> None:
    """The machinery itself changes nothing: a 'mutant' whose edit is the identity passes
    every killing test of the catalogue's first mutant of each target."""
    seen: set[tuple[str, str]] = set()
    for m in rm.MUTANTS:
        if (m.module, m.target) in seen:
            continue
        seen.add((m.module, m.target))
        identity = rm.SourceMutant(f"identity-{m.name}", m.module, m.target, m.old, m.old,
                                   m.kind, m.killers)
        results = rm.run_killers(identity)
        assert all(outcome == "survived" for _, outcome, _ in results), results


@pytest.mark.parametrize("mutant", [m for m, _ in rm.EQUIVALENT],
                         ids=[m.name for m, _ in rm.EQUIVALENT])
def test_equivalent_mutants_apply_and_are_argued(mutant: rm.SourceMutant) -> None:
    """Each equivalent edit still applies to the current source (so its argument is about the
    code as it is) and carries its argument."""
    argument = dict((m.name, why) for m, why in rm.EQUIVALENT)[mutant.name]
    assert len(argument) > 80
    with rm.planted(mutant):
        pass
