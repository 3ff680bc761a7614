"""Planted multi-discrete bugs are caught and diagnosed, correct heads pass; the factored
oracle equals the joint product-space route (proofs_notes/multi-discrete.md)."""

from __future__ import annotations

import numpy as np
import pytest

from verify.checks import CheckArgumentError, Mutant, check_multi_discrete
from verify.checks._core import case_generator, case_size
from verify.checks.multi_discrete import _generate, multi_discrete_exact, multi_discrete_joint
from verify.checks.planted import expected_diagnosis
from verify.checks.planted import multi_discrete as planted


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


def test_factored_sums_equal_the_joint_distribution() -> None:
    for i in range(30):
        c = _generate(case_generator("md", 0, i), case_size(i, 30))
        a = multi_discrete_exact(c.logits, c.old_logits, c.actions, c.nvec)
        b = multi_discrete_joint(c.logits, c.old_logits, c.actions, c.nvec)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_allclose(x, y, atol=1e-11, rtol=1e-11)


def test_single_output_and_bad_outputs() -> None:
    def entropy_only(logits, old, actions, nvec):  # type: ignore[no-untyped-def]
        return planted.multi_categorical(logits, old, actions, nvec)[1]

    assert check_multi_discrete(entropy_only, outputs=("entropy",), cases=15).passed
    with pytest.raises(CheckArgumentError, match="outputs"):
        check_multi_discrete(entropy_only, outputs=("entropy", "entropy"))


def test_an_unsummed_entropy_fails_on_its_shape() -> None:
    def per_head(logits, old, actions, nvec):  # type: ignore[no-untyped-def]
        lp, ent, kl = planted._per_head(logits, old, actions, nvec)
        return lp.sum(axis=1), ent, kl.sum(axis=1)

    report = check_multi_discrete(per_head, cases=15)
    assert not report.passed
