"""Planted bugs and correct implementations for the GAE check (``verify/checks/gae.py``).

Every implementation here is written in plain numpy, independently of the check's oracle, the
way a user would write it: the signature is
``fn(rewards, values, next_values, terminated, truncated, gamma, lam) -> advantages``, arrays
``(B, T)``.  Each wrong one is one small edit of :func:`gae_vectorised`.
"""

from __future__ import annotations

import numpy as np

from reference._arrays import FloatArray
from verify.checks._core import Mutant
from verify.checks.gae import BoolArray, check_gae

__all__ = ["CORRECT", "MUTANTS"]

_CASES = 30


def _backward(delta: FloatArray, carry: FloatArray) -> FloatArray:
    """``A[:, t] = delta[:, t] + carry[:, t] A[:, t + 1]`` for ``t = T - 1, ..., 0``, with
    ``A[:, T] = 0``."""
    adv = np.zeros_like(delta)
    last = np.zeros(delta.shape[0])
    for t in reversed(range(delta.shape[1])):
        last = delta[:, t] + carry[:, t] * last
        adv[:, t] = last
    return adv


def gae_vectorised(
    rewards: FloatArray, values: FloatArray, next_values: FloatArray,
    terminated: BoolArray, truncated: BoolArray, gamma: float, lam: float,
) -> FloatArray:
    """Correct: masks as floats, one backward loop over ``t`` for all environments at once."""
    not_terminal = 1.0 - terminated.astype(np.float64)
    not_done = 1.0 - (terminated | truncated).astype(np.float64)
    delta = rewards + gamma * not_terminal * next_values - values
    return _backward(delta, gamma * lam * not_done)


def gae_per_env(
    rewards: FloatArray, values: FloatArray, next_values: FloatArray,
    terminated: BoolArray, truncated: BoolArray, gamma: float, lam: float,
) -> FloatArray:
    """Correct: a Python loop per environment, with branches instead of masks."""
    n_envs, n_steps = rewards.shape
    out = np.zeros((n_envs, n_steps))
    for b in range(n_envs):
        running = 0.0
        for t in range(n_steps - 1, -1, -1):
            bootstrap = 0.0 if terminated[b, t] else float(next_values[b, t])
            delta = float(rewards[b, t]) + gamma * bootstrap - float(values[b, t])
            if terminated[b, t] or truncated[b, t]:
                running = 0.0
            running = delta + gamma * lam * running
            out[b, t] = running
    return out


def gae_discount_matrix(
    rewards: FloatArray, values: FloatArray, next_values: FloatArray,
    terminated: BoolArray, truncated: BoolArray, gamma: float, lam: float,
) -> FloatArray:
    """Correct: ``A = W delta`` per environment with ``W[t, k] = (gamma lam)^(k - t)`` for
    ``k >= t`` in the same episode segment (segment ids from a cumulative sum of the ends)."""
    delta = rewards + gamma * np.where(terminated, 0.0, next_values) - values
    done = (terminated | truncated).astype(np.int64)
    segment = np.cumsum(done, axis=1) - done  # a step belongs to the episode it ends
    n_steps = rewards.shape[1]
    lag = np.arange(n_steps)[None, :] - np.arange(n_steps)[:, None]
    out = np.zeros_like(delta)
    for b in range(rewards.shape[0]):
        same = segment[b][:, None] == segment[b][None, :]
        W = np.where((lag >= 0) & same, np.power(gamma * lam, np.maximum(lag, 0)), 0.0)
        out[b] = W @ delta[b]
    return out


def bootstrap_through_terminal(
    rewards: FloatArray, values: FloatArray, next_values: FloatArray,
    terminated: BoolArray, truncated: BoolArray, gamma: float, lam: float,
) -> FloatArray:
    """Bug: ``delta`` bootstraps through ``next_values`` even at terminated steps."""
    not_done = 1.0 - (terminated | truncated).astype(np.float64)
    delta = rewards + gamma * next_values - values
    return _backward(delta, gamma * lam * not_done)


def truncation_as_termination(
    rewards: FloatArray, values: FloatArray, next_values: FloatArray,
    terminated: BoolArray, truncated: BoolArray, gamma: float, lam: float,
) -> FloatArray:
    """Bug: masks the bootstrap with ``done`` instead of ``terminated`` (a time limit is treated
    as a terminal state: no bootstrap at truncation)."""
    not_done = 1.0 - (terminated | truncated).astype(np.float64)
    delta = rewards + gamma * not_done * next_values - values
    return _backward(delta, gamma * lam * not_done)


def truncation_takes_precedence(
    rewards: FloatArray, values: FloatArray, next_values: FloatArray,
    terminated: BoolArray, truncated: BoolArray, gamma: float, lam: float,
) -> FloatArray:
    """Bug: a step flagged both terminated and truncated bootstraps (truncation wins)."""
    not_terminal = 1.0 - (terminated & ~truncated).astype(np.float64)
    not_done = 1.0 - (terminated | truncated).astype(np.float64)
    delta = rewards + gamma * not_terminal * next_values - values
    return _backward(delta, gamma * lam * not_done)


def values_left_normalised(
    rewards: FloatArray, values: FloatArray, next_values: FloatArray,
    terminated: BoolArray, truncated: BoolArray, gamma: float, lam: float,
) -> FloatArray:
    """Bug: the values are used in a value head's standardised scale (batch mean and standard
    deviation of ``values`` removed, never mapped back), as when the denormalisation of a
    normalised value head is forgotten."""
    mean, std = values.mean(), values.std() + 1e-8
    return gae_vectorised(rewards, (values - mean) / std, (next_values - mean) / std,
                          terminated, truncated, gamma, lam)


def done_flags_one_step_late(
    rewards: FloatArray, values: FloatArray, next_values: FloatArray,
    terminated: BoolArray, truncated: BoolArray, gamma: float, lam: float,
) -> FloatArray:
    """Bug (off by one): step ``t`` is masked with the flags of step ``t + 1`` (CleanRL's
    ``1 - dones[t + 1]``, written for flags that mark an observation as the first of a new
    episode, applied to flags that mark that step ``t`` ended one); the last step keeps its
    own flags (the ``next_done`` of such a loop)."""
    term = np.concatenate([terminated[:, 1:], terminated[:, -1:]], axis=1)
    trunc = np.concatenate([truncated[:, 1:], truncated[:, -1:]], axis=1)
    return gae_vectorised(rewards, values, next_values, term, trunc, gamma, lam)


def trace_not_reset(
    rewards: FloatArray, values: FloatArray, next_values: FloatArray,
    terminated: BoolArray, truncated: BoolArray, gamma: float, lam: float,
) -> FloatArray:
    """Bug: the ``A_{t+1}`` term ignores ``done_t``: the trace runs on into the next episode."""
    not_terminal = 1.0 - terminated.astype(np.float64)
    delta = rewards + gamma * not_terminal * next_values - values
    return _backward(delta, np.full_like(delta, gamma * lam))


def gamma_lam_swapped(
    rewards: FloatArray, values: FloatArray, next_values: FloatArray,
    terminated: BoolArray, truncated: BoolArray, gamma: float, lam: float,
) -> FloatArray:
    """Bug: ``gamma`` and ``lam`` swapped (the TD error discounts by ``lam``)."""
    return gae_vectorised(rewards, values, next_values, terminated, truncated, lam, gamma)


MUTANTS = (
    Mutant("gae-bootstrap-through-terminal",
           "delta_t uses gamma next_values_t even when step t terminated",
           "gae", lambda: check_gae(bootstrap_through_terminal, cases=_CASES)),
    Mutant("gae-truncation-as-termination",
           "masks the bootstrap with done = terminated or truncated, so a truncated step does "
           "not bootstrap through the final observation's value",
           "gae", lambda: check_gae(truncation_as_termination, cases=_CASES)),
    Mutant("gae-truncation-takes-precedence",
           "a step both terminated and truncated bootstraps through next_values",
           "gae", lambda: check_gae(truncation_takes_precedence, cases=_CASES)),
    Mutant("gae-values-left-normalised",
           "standardises values and next_values by the batch mean and std of values and never "
           "maps them back (missing value denormalisation)",
           "gae", lambda: check_gae(values_left_normalised, cases=_CASES)),
    Mutant("gae-done-flags-one-step-late",
           "masks step t with the flags of step t + 1 (CleanRL's dones[t + 1] index applied to "
           "flags that mark the end of step t)",
           "gae", lambda: check_gae(done_flags_one_step_late, cases=_CASES)),
    Mutant("gae-trace-not-reset",
           "A_t = delta_t + gamma lam A_{t+1} without the (1 - done_t) factor",
           "gae", lambda: check_gae(trace_not_reset, cases=_CASES)),
    Mutant("gae-gamma-lam-swapped",
           "calls the correct routine with gamma and lam swapped (delta discounts by lam)",
           "gae", lambda: check_gae(gamma_lam_swapped, cases=_CASES)),
)
"""Wrong implementations, each with the check that must catch it."""

CORRECT = (
    Mutant("gae-vectorised",
           "correct implementation: float masks, one backward loop over t for all envs",
           "gae", lambda: check_gae(gae_vectorised, cases=_CASES)),
    Mutant("gae-per-env",
           "correct implementation: Python loops per environment with branches",
           "gae", lambda: check_gae(gae_per_env, cases=_CASES)),
    Mutant("gae-discount-matrix",
           "correct implementation: A = W delta with W[t, k] = (gamma lam)^(k - t) within a "
           "segment",
           "gae", lambda: check_gae(gae_discount_matrix, cases=_CASES)),
)
"""Correct implementations, which the check must pass."""
