"""Planted bugs and correct implementations for the advantage-normalisation check
(``verify/checks/advantage_norm.py``).

Plain numpy, written as MARL PPO code writes it: ``fn(advantages, active_masks, eps)`` (or
with ``minibatch`` before ``eps``), arrays ``(S, N)``.  The canonical form the diagnosis uses
is ``f(advantages, active_masks, minibatch, eps, scope, ddof)``.  Each wrong one models a
reported bug, cited in its docstring.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from reference._arrays import FloatArray
from verify.checks._core import KnownBug, Mutant
from verify.checks.advantage_norm import check_advantage_normalisation, normalise_advantages

__all__ = ["CORRECT", "DIAGNOSABLE", "MUTANTS"]

_CASES = 30
Ints = npt.NDArray[np.int64]


def mappo_pooled(advantages: FloatArray, active_masks: FloatArray, eps: float) -> FloatArray:
    """Correct under ``scope="pooled"``: MAPPO's buffer-wide normalisation, inactive entries
    set to NaN and skipped by ``nanmean``/``nanstd``."""
    copy = advantages.copy()
    copy[active_masks == 0.0] = np.nan
    out: FloatArray = (advantages - np.nanmean(copy)) / (np.nanstd(copy) + eps)
    return out


def per_agent_masked(advantages: FloatArray, active_masks: FloatArray, eps: float,
                     ) -> FloatArray:
    """Correct: a loop over agents, statistics of each agent's active entries."""
    out = np.zeros_like(advantages)
    for i in range(advantages.shape[1]):
        alive = active_masks[:, i] > 0
        x = advantages[alive, i]
        out[:, i] = (advantages[:, i] - x.mean()) / (x.std() + eps)
    return out


def minibatch_torch_std(advantages: FloatArray, active_masks: FloatArray, minibatch: Ints,
                        eps: float) -> FloatArray:
    """Correct under ``scope="minibatch", ddof=1``: each minibatch normalised as it is
    sampled, with ``torch.std``'s unbiased estimate."""
    out = np.zeros_like(advantages)
    for mb in np.unique(minibatch):
        rows = minibatch == mb
        x = advantages[rows][active_masks[rows] > 0]
        out[rows] = (advantages[rows] - x.mean()) / (x.std(ddof=1) + eps)
    return out


def stats_include_inactive(advantages: FloatArray, active_masks: FloatArray,
                           minibatch: Ints, eps: float, scope: str, ddof: int) -> FloatArray:
    """Bug (provenance: marlbenchmark/on-policy issue #1, where the maintainers list the
    advantage normalisation among the places MAPPO applies the active mask; this leaves it
    out): the mean and std are taken over every entry, dead and inactive agents'
    included."""
    ones = np.ones_like(active_masks)
    return normalise_advantages(advantages, ones, minibatch, eps, scope, ddof)


def stats_include_zeroed_inactive(advantages: FloatArray, active_masks: FloatArray,
                                  minibatch: Ints, eps: float, scope: str, ddof: int,
                                  ) -> FloatArray:
    """Bug (provenance: MarcoMeter/recurrent-ppo-truncated-bptt issue #10, advantages
    normalised with a plain mean over padded entries instead of a masked one): inactive
    entries are zeroed by the mask and then counted in the statistics as zeros."""
    ones = np.ones_like(active_masks)
    z = normalise_advantages(advantages * active_masks, ones, minibatch, eps, scope, ddof)
    return np.where(active_masks > 0, z, 0.0)


def per_agent_all_entries(advantages: FloatArray, active_masks: FloatArray, eps: float,
                          ) -> FloatArray:
    """The user-signature form of :func:`stats_include_inactive` (per agent)."""
    return stats_include_inactive(advantages, active_masks, np.zeros(len(advantages),
                                  dtype=np.int64), eps, "per-agent", 0)


def per_agent_zeroed(advantages: FloatArray, active_masks: FloatArray, eps: float,
                     ) -> FloatArray:
    """The user-signature form of :func:`stats_include_zeroed_inactive` (per agent)."""
    return stats_include_zeroed_inactive(advantages, active_masks, np.zeros(
        len(advantages), dtype=np.int64), eps, "per-agent", 0)


def pooled_declared_per_agent(advantages: FloatArray, active_masks: FloatArray, eps: float,
                              ) -> FloatArray:
    """Bug (provenance: facebookresearch/BenchMARL issue #255 and PR #256, advantages
    normalised over all agents where each agent's own statistics were meant): MAPPO's pooled
    routine used where per-agent normalisation is declared."""
    return mappo_pooled(advantages, active_masks, eps)


def whole_batch_declared_minibatch(advantages: FloatArray, active_masks: FloatArray,
                                   minibatch: Ints, eps: float) -> FloatArray:
    """Bug (provenance: the minibatch-versus-rollout scope split, real in public code:
    HorizonRobotics/alf PR #1642 moved its advantage normalisation from the minibatch to the
    whole rollout): the whole batch is normalised once where each minibatch was meant to
    be."""
    return mappo_pooled(advantages, active_masks, eps)


MUTANTS = (
    Mutant("adv-norm-stats-include-inactive", "mean and std over inactive agents' entries "
           "too (on-policy #1)", "advantage-normalisation",
           lambda: check_advantage_normalisation(per_agent_all_entries, cases=_CASES)),
    Mutant("adv-norm-zeroed-inactive-in-stats", "inactive entries zeroed and counted "
           "(recurrent-ppo-truncated-bptt #10)", "advantage-normalisation",
           lambda: check_advantage_normalisation(per_agent_zeroed, cases=_CASES)),
    Mutant("adv-norm-pooled-declared-per-agent", "pooled statistics where per-agent is "
           "declared (BenchMARL #255, PR #256)", "advantage-normalisation",
           lambda: check_advantage_normalisation(pooled_declared_per_agent, cases=_CASES)),
    Mutant("adv-norm-batch-declared-minibatch", "whole-batch statistics where per-minibatch "
           "is declared (cf. alf PR #1642)", "advantage-normalisation",
           lambda: check_advantage_normalisation(whole_batch_declared_minibatch,
                                                 scope="minibatch", cases=_CASES)),
)
"""Wrong implementations, each with the check that must catch it."""

CORRECT = (
    Mutant("adv-norm-mappo-pooled", "correct under scope='pooled': nanmean/nanstd",
           "advantage-normalisation",
           lambda: check_advantage_normalisation(mappo_pooled, scope="pooled", cases=_CASES)),
    Mutant("adv-norm-per-agent", "correct implementation: per-agent loop over active entries",
           "advantage-normalisation",
           lambda: check_advantage_normalisation(per_agent_masked, cases=_CASES)),
    Mutant("adv-norm-minibatch-torch-std", "correct under scope='minibatch', ddof=1",
           "advantage-normalisation",
           lambda: check_advantage_normalisation(minibatch_torch_std, scope="minibatch",
                                                 ddof=1, cases=_CASES)),
)
"""Correct implementations, which the check must pass."""

DIAGNOSABLE = (
    KnownBug("adv-norm-stats-include-inactive", "statistics over inactive entries too",
             stats_include_inactive),
    KnownBug("adv-norm-zeroed-inactive-in-stats", "inactive entries zeroed and counted",
             stats_include_zeroed_inactive),
)
"""The planted bugs in the check's canonical signature, which its diagnosis tries."""
