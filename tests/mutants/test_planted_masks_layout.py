"""Dead and inactive agents' masks in PPO losses, and the metamorphic batching check:
planted bugs are caught, correct routines pass (verify/checks/planted/masks.py,
layout.py; proofs_notes/ppo-loss.md#masks, proofs_notes/layout.md)."""

from __future__ import annotations

import numpy as np
import pytest

from verify.checks import CheckArgumentError, Mutant, check_batching
from verify.checks._core import case_generator, case_size
from verify.checks.planted import expected_diagnosis
from verify.checks.planted import layout as planted_layout
from verify.checks.planted import masks as planted_masks
from verify.checks.ppo_loss import _ppo_generate, ppo_loss_and_grad

MUTANTS = planted_masks.MUTANTS + planted_layout.MUTANTS
CORRECT = planted_masks.CORRECT + planted_layout.CORRECT


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_mutant_is_caught(mutant: Mutant) -> None:
    report = mutant.run()
    assert not report.passed and report.failures >= 1, str(report)
    named = expected_diagnosis(mutant)
    if named is not None:
        assert report.diagnosis is not None and named in report.diagnosis, report.diagnosis


@pytest.mark.parametrize("impl", CORRECT, ids=[m.name for m in CORRECT])
def test_correct_implementation_passes(impl: Mutant) -> None:
    assert impl.run().passed


def test_every_planted_bug_cites_its_provenance() -> None:
    from verify.checks.planted import ppo_loss

    for mod in (planted_layout, ppo_loss):
        for name in dir(mod):
            doc = getattr(getattr(mod, name), "__doc__", "") or ""
            if callable(getattr(mod, name)) and doc.startswith("Bug"):
                assert "provenance:" in doc, name


def test_a_dead_agent_changes_neither_loss_nor_gradient() -> None:
    """Masked entries contribute nothing: changing a dead agent's advantage or logits
    leaves the loss and the other entries' gradients unchanged, and its own gradient is 0."""
    for i in range(20):
        b = _ppo_generate(case_generator("mask", 0, i), case_size(i, 20), "per-agent",
                          ("surrogate", "entropy", "kl"), masks=True)
        assert b.active is not None
        dead = np.argwhere(b.active == 0)
        if len(dead) == 0:
            continue
        s, a = dead[0]
        args = (b.old_logits, b.actions, b.advantages, None, b.clip_eps, b.ent_coef,
                b.kl_coef, b.active)
        loss, g = ppo_loss_and_grad(b.logits, *args)
        assert np.all(g[s, a] == 0.0)
        logits2 = b.logits.copy()
        logits2[s, a] += 3.0
        loss2, g2 = ppo_loss_and_grad(logits2, *args)
        assert loss2 == pytest.approx(loss, abs=1e-12)
        np.testing.assert_allclose(g2, g, atol=1e-15)


def test_batching_axes_are_declared() -> None:
    def time_last(x):  # type: ignore[no-untyped-def]
        # (E, N, T, F) in, (E, N, T) out
        y = planted_layout.batched_env_major(np.transpose(x, (2, 0, 1, 3)))
        return np.transpose(y, (1, 2, 0))

    assert check_batching(time_last, axes="ENT", cases=10).passed
    with pytest.raises(CheckArgumentError, match="axes"):
        check_batching(time_last, axes="TTE")
