"""Planted value-normalisation and PopArt bugs are caught and diagnosed; correct ones pass
(verify/checks/planted/value_norm.py, proofs_notes/value-normalisation.md)."""

from __future__ import annotations

import numpy as np
import pytest

from verify.checks import Mutant, check_popart, check_value_normalisation
from verify.checks._core import case_generator, case_size
from verify.checks.gae import gae_recursion
from verify.checks.normalisation import (
    _normed_generate,
    _popart_generate,
    normalised_targets,
    popart_update,
)
from verify.checks.planted import expected_diagnosis
from verify.checks.planted import value_norm as planted


@pytest.mark.parametrize("mutant", planted.MUTANTS, ids=[m.name for m in planted.MUTANTS])
def test_mutant_is_caught(mutant: Mutant) -> None:
    report = mutant.run()
    assert not report.passed and report.failures >= 1, str(report)
    named = expected_diagnosis(mutant)
    assert named is not None and report.diagnosis is not None and named in report.diagnosis


@pytest.mark.parametrize("impl", planted.CORRECT, ids=[m.name for m in planted.CORRECT])
def test_correct_implementation_passes(impl: Mutant) -> None:
    report = impl.run()
    assert report.passed, str(report)


def test_every_planted_bug_cites_its_provenance() -> None:
    for name in dir(planted):
        doc = getattr(getattr(planted, name), "__doc__", "") or ""
        if callable(getattr(planted, name)) and doc.startswith("Bug"):
            assert "provenance:" in doc, name


def test_normalised_targets_are_the_returns_in_the_critic_scale() -> None:
    """target * sd + m is the lambda-return of the denormalised values."""
    for i in range(30):
        c = _normed_generate(case_generator("vn", 0, i), case_size(i, 30))
        ro = c.rollout
        adv, tgt = normalised_targets(ro.rewards, ro.values, ro.next_values, ro.terminated,
                                      ro.truncated, c.mean, c.std, ro.gamma, ro.lam)
        v = c.mean + c.std * ro.values
        a2 = gae_recursion(ro.rewards, v, c.mean + c.std * ro.next_values, ro.terminated,
                           ro.truncated, ro.gamma, ro.lam)
        np.testing.assert_allclose(adv, a2, atol=1e-9, rtol=0)
        np.testing.assert_allclose(tgt * c.std + c.mean, adv + v, atol=1e-9, rtol=0)


def test_popart_preserves_outputs_and_is_its_own_inverse() -> None:
    for i in range(30):
        c = _popart_generate(case_generator("pa", 0, i), case_size(i, 30))
        w, b = popart_update(c.weights, c.bias, c.old_mean, c.old_std, c.new_mean, c.new_std)
        before = c.old_mean + c.old_std * (c.features @ c.weights + c.bias)
        after = c.new_mean + c.new_std * (c.features @ w + b)
        np.testing.assert_allclose(after, before, atol=1e-10, rtol=1e-12)
        w0, b0 = popart_update(w, b, c.new_mean, c.new_std, c.old_mean, c.old_std)
        np.testing.assert_allclose(w0, c.weights, atol=1e-12)
        np.testing.assert_allclose(b0, c.bias, atol=1e-10)


def test_float32_implementations_are_judged_at_float32() -> None:
    def vn32(*a):  # type: ignore[no-untyped-def]
        cast = [x.astype(np.float32) if isinstance(x, np.ndarray) and x.dtype.kind == "f"
                else x for x in a]
        adv, tgt = planted.normalised_ppo_targets(*cast)
        return adv.astype(np.float32), tgt.astype(np.float32)

    assert check_value_normalisation(vn32, cases=20).passed

    def pa32(*a):  # type: ignore[no-untyped-def]
        w, b = planted.popart(*(x.astype(np.float32) for x in a))
        return w, b

    assert check_popart(pa32, cases=20).passed
    assert not check_popart(lambda *a: tuple(x.astype(np.float64) for x in pa32(*a)),
                            cases=20).passed
