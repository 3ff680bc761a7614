"""Planted bugs and correct implementations for the value-normalisation and PopArt checks
(``verify/checks/normalisation.py``).

Plain numpy, written as PPO code with a value normaliser writes it.  Signatures:
``fn(rewards, norm_values, norm_next_values, terminated, truncated, mean, std, gamma, lam) ->
(advantages, targets)`` and ``fn(weights, bias, old_mean, old_std, new_mean, new_std) ->
(weights, bias)``.  Each wrong one models a reported bug, cited in its docstring.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from reference._arrays import FloatArray
from verify.checks._core import KnownBug, Mutant
from verify.checks.normalisation import check_popart, check_value_normalisation

__all__ = ["CORRECT", "DIAGNOSABLE", "MUTANTS"]

_CASES = 30
Bools = npt.NDArray[np.bool_]


def _gae(rewards: FloatArray, values: FloatArray, next_values: FloatArray, terminated: Bools,
         truncated: Bools, gamma: float, lam: float) -> FloatArray:
    """A user's GAE loop (batch-major)."""
    adv = np.zeros_like(rewards)
    run = np.zeros(rewards.shape[0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * (1.0 - terminated[:, t]) * next_values[:, t] \
            - values[:, t]
        run = delta + gamma * lam * (1.0 - (terminated[:, t] | truncated[:, t])) * run
        adv[:, t] = run
    return adv


def normalised_ppo_targets(
    rewards: FloatArray, u: FloatArray, u_next: FloatArray, terminated: Bools,
    truncated: Bools, mean: float, std: float, gamma: float, lam: float,
) -> tuple[FloatArray, FloatArray]:
    """Correct: denormalise, GAE, returns = A + V, normalise the returns."""
    v, v_next = u * std + mean, u_next * std + mean
    adv = _gae(rewards, v, v_next, terminated, truncated, gamma, lam)
    returns = adv + v
    return adv, (returns - mean) / std


def advantages_from_normalised_values(
    rewards: FloatArray, u: FloatArray, u_next: FloatArray, terminated: Bools,
    truncated: Bools, mean: float, std: float, gamma: float, lam: float,
) -> tuple[FloatArray, FloatArray]:
    """Bug (provenance: marlbenchmark/on-policy issue #12 and its fix, PR #13: with value
    normalisation on, the advantages were taken from the normalised value predictions): GAE
    runs on the critic's normalised outputs, never denormalised; the targets are the
    normalised values plus those advantages."""
    adv = _gae(rewards, u, u_next, terminated, truncated, gamma, lam)
    return adv, adv + u


def targets_not_normalised(
    rewards: FloatArray, u: FloatArray, u_next: FloatArray, terminated: Bools,
    truncated: Bools, mean: float, std: float, gamma: float, lam: float,
) -> tuple[FloatArray, FloatArray]:
    """Bug (provenance: instadeepai/Mava issue #811 and its fix, PR #805, where denormalised
    old values met the normalised critic in the clipped value loss; the planted form puts
    the same scale mismatch on the targets): the advantages are right but the value targets
    are the unnormalised returns, while the critic predicts normalised values."""
    v, v_next = u * std + mean, u_next * std + mean
    adv = _gae(rewards, v, v_next, terminated, truncated, gamma, lam)
    return adv, adv + v


def targets_scaled_not_shifted(
    rewards: FloatArray, u: FloatArray, u_next: FloatArray, terminated: Bools,
    truncated: Bools, mean: float, std: float, gamma: float, lam: float,
) -> tuple[FloatArray, FloatArray]:
    """Bug (provenance: no single thread; a slip common in hand-written value normalisers):
    the denormalisation multiplies by the std but forgets the mean, ``V = sd u``."""
    v, v_next = u * std, u_next * std
    adv = _gae(rewards, v, v_next, terminated, truncated, gamma, lam)
    return adv, (adv + v) / std


def popart(weights: FloatArray, bias: FloatArray, old_mean: FloatArray, old_std: FloatArray,
           new_mean: FloatArray, new_std: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Correct: rescale the weights by ``sd / sd'`` and move the bias."""
    return weights * old_std / new_std, (old_std * bias + old_mean - new_mean) / new_std


def popart_bias_not_shifted(weights: FloatArray, bias: FloatArray, old_mean: FloatArray,
                            old_std: FloatArray, new_mean: FloatArray, new_std: FloatArray,
                            ) -> tuple[FloatArray, FloatArray]:
    """Bug (provenance: no single thread; a slip common in hand-written PopArt updates): the
    bias is rescaled like the weights, ``b sd / sd'``, without the shift ``(m - m') / sd'``."""
    return weights * old_std / new_std, bias * old_std / new_std


def popart_inverted_ratio(weights: FloatArray, bias: FloatArray, old_mean: FloatArray,
                          old_std: FloatArray, new_mean: FloatArray, new_std: FloatArray,
                          ) -> tuple[FloatArray, FloatArray]:
    """Bug (provenance: google-deepmind/rlax issue #111, a PopArt example that used the old
    statistics where the new ones belonged; here old and new are swapped in the ratio): the
    scale ratio is inverted, ``W sd' / sd``."""
    return (weights * new_std / old_std,
            (new_std * bias + old_mean - new_mean) / old_std)


MUTANTS = (
    Mutant("value-norm-advantages-from-normalised-values",
           "GAE on the normalised critic outputs (on-policy #12, PR #13)", "value-normalisation",
           lambda: check_value_normalisation(advantages_from_normalised_values,
                                             cases=_CASES)),
    Mutant("value-norm-targets-not-normalised",
           "value targets left unnormalised (cf. Mava #811)", "value-normalisation",
           lambda: check_value_normalisation(targets_not_normalised, cases=_CASES)),
    Mutant("value-norm-mean-forgotten", "denormalises by sd u without the mean",
           "value-normalisation",
           lambda: check_value_normalisation(targets_scaled_not_shifted, cases=_CASES)),
    Mutant("popart-bias-not-shifted", "the bias is rescaled but not shifted", "popart",
           lambda: check_popart(popart_bias_not_shifted, cases=_CASES)),
    Mutant("popart-inverted-ratio",
           "the weights scale by sd'/sd (old and new swapped, cf. rlax #111)",
           "popart", lambda: check_popart(popart_inverted_ratio, cases=_CASES)),
)
"""Wrong implementations, each with the check that must catch it."""

CORRECT = (
    Mutant("value-norm-ppo", "correct implementation: denormalise, GAE, normalise returns",
           "value-normalisation",
           lambda: check_value_normalisation(normalised_ppo_targets, cases=_CASES)),
    Mutant("popart", "correct implementation: output-preserving rescaling", "popart",
           lambda: check_popart(popart, cases=_CASES)),
)
"""Correct implementations, which the checks must pass."""

DIAGNOSABLE = (
    KnownBug("value-norm-advantages-from-normalised-values", "GAE on normalised outputs",
             advantages_from_normalised_values),
    KnownBug("value-norm-targets-not-normalised", "targets left unnormalised",
             targets_not_normalised),
    KnownBug("value-norm-mean-forgotten", "V = sd u without the mean",
             targets_scaled_not_shifted),
    KnownBug("popart-bias-not-shifted", "bias rescaled, not shifted", popart_bias_not_shifted),
    KnownBug("popart-inverted-ratio", "weights scaled by sd'/sd", popart_inverted_ratio),
)
"""The planted bugs in the checks' canonical signatures, which their diagnoses try."""
