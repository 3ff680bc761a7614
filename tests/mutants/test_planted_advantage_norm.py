"""Planted advantage-normalisation bugs are caught, scope mismatches are diagnosed as the
scope to declare, correct routines pass (verify/checks/planted/advantage_norm.py)."""

from __future__ import annotations

import numpy as np
import pytest

from verify.checks import CheckArgumentError, Mutant, check_advantage_normalisation
from verify.checks._core import case_generator, case_size
from verify.checks.advantage_norm import _generate, normalise_advantages
from verify.checks.planted import advantage_norm as planted
from verify.checks.planted import expected_diagnosis


@pytest.mark.parametrize("mutant", planted.MUTANTS, ids=[m.name for m in planted.MUTANTS])
def test_mutant_is_caught(mutant: Mutant) -> None:
    report = mutant.run()
    assert not report.passed and report.failures >= 1, str(report)
    named = expected_diagnosis(mutant)
    assert named is not None and report.diagnosis is not None and named in report.diagnosis


@pytest.mark.parametrize("impl", planted.CORRECT, ids=[m.name for m in planted.CORRECT])
def test_correct_implementation_passes(impl: Mutant) -> None:
    assert impl.run().passed


def test_every_planted_bug_cites_its_provenance() -> None:
    for name in dir(planted):
        doc = getattr(getattr(planted, name), "__doc__", "") or ""
        if callable(getattr(planted, name)) and doc.startswith("Bug"):
            assert "provenance:" in doc, name


def test_active_entries_are_standardised_in_every_group() -> None:
    for i in range(30):
        b = _generate(case_generator("an", 0, i), case_size(i, 30))
        for scope in ("per-agent", "pooled", "minibatch"):
            z = normalise_advantages(b.advantages, b.active_masks, b.minibatch, 0.0, scope)
            if scope == "pooled":
                x = z[b.active_masks > 0]
                assert abs(x.mean()) < 1e-12 and abs(x.std() - 1) < 1e-12


def test_a_torch_std_routine_is_diagnosed_as_ddof_1() -> None:
    def torch_like(adv, masks, eps):  # type: ignore[no-untyped-def]
        out = np.zeros_like(adv)
        for i in range(adv.shape[1]):
            x = adv[masks[:, i] > 0, i]
            out[:, i] = (adv[:, i] - x.mean()) / (x.std(ddof=1) + eps)
        return out

    report = check_advantage_normalisation(torch_like, cases=20)
    assert not report.passed and report.diagnosis is not None
    assert "ddof=1" in report.diagnosis
    assert check_advantage_normalisation(torch_like, ddof=1, cases=20).passed


def test_bad_arguments_are_named() -> None:
    with pytest.raises(CheckArgumentError, match="scope"):
        check_advantage_normalisation(planted.per_agent_masked, scope="global")
    with pytest.raises(CheckArgumentError, match="ddof"):
        check_advantage_normalisation(planted.per_agent_masked, ddof=2)
