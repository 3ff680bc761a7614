"""Planted bugs and correct implementations for dead and inactive agents' masks in PPO
losses (``check_ppo_loss(masks=True)`` in ``verify/checks/ppo_loss.py``).

The losses are those of :mod:`verify.checks.planted.ppo_loss` with MAPPO's ``active_masks``:
``fn(logits, old_logits, actions, advantages, active_masks, clip_eps, ent_coef, kl_coef)``,
logits ``(B, N, A)``.  Each wrong one models a reported bug, cited in its docstring.
"""

from __future__ import annotations

from verify.checks._core import KnownBug, Mutant
from verify.checks.planted.ppo_loss import (
    _user_masked,
    masked_divide_by_all,
    masks_ignored,
    ppo_canonical,
)
from verify.checks.ppo_loss import check_ppo_loss

__all__ = ["CORRECT", "DIAGNOSABLE", "MUTANTS"]

_CASES = 30
_ALL = ("surrogate", "entropy", "kl")

MUTANTS = (
    Mutant("masks-divide-by-all-entries", "masked sums divided by every entry's count, not "
           "the active ones' (on-policy #1/#34)", "ppo-loss",
           lambda: check_ppo_loss(_user_masked(masked_divide_by_all, 0),
                                  grad=_user_masked(masked_divide_by_all, 1),
                                  ratios="per-agent", terms=_ALL, masks=True, cases=_CASES)),
    Mutant("masks-ignored", "active masks not applied: dead agents' terms in the loss "
           "(cf. Mava #628)", "ppo-loss",
           lambda: check_ppo_loss(_user_masked(masks_ignored, 0),
                                  grad=_user_masked(masks_ignored, 1),
                                  ratios="per-agent", terms=_ALL, masks=True, cases=_CASES)),
)
"""Wrong implementations, each with the check that must catch it."""

CORRECT = (
    Mutant("masks-mappo-masked-mean", "correct implementation: MAPPO's masked means, per-agent "
           "ratios, entropy and KL, with gradient", "ppo-loss",
           lambda: check_ppo_loss(_user_masked(ppo_canonical, 0),
                                  grad=_user_masked(ppo_canonical, 1), ratios="per-agent",
                                  terms=_ALL, masks=True, cases=_CASES)),
)
"""Correct implementations, which the check must pass."""

DIAGNOSABLE = (
    KnownBug("masks-divide-by-all-entries", "masked sums over the count of all entries",
             masked_divide_by_all),
    KnownBug("masks-ignored", "active masks not applied", masks_ignored),
)
"""The planted bugs in the check's canonical signature, which its diagnosis tries."""
