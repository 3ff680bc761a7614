"""Planted bugs and correct implementations for the GAE check (``verify/checks/gae.py``).

Every implementation here is written in plain numpy, independently of the check's oracle, the
way a user would write it: the signature is
``fn(rewards, values, next_values, terminated, truncated, gamma, lam) -> advantages``, arrays
``(B, T)``.  Each wrong one is one small edit of :func:`gae_vectorised`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from reference._arrays import FloatArray
from verify.checks._core import KnownBug, Mutant
from verify.checks.gae import BoolArray, check_gae

__all__ = ["CORRECT", "DIAGNOSABLE", "MUTANTS"]

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


def bootstrap_through_terminal_at_end(
    rewards: FloatArray, values: FloatArray, next_values: FloatArray,
    terminated: BoolArray, truncated: BoolArray, gamma: float, lam: float,
) -> FloatArray:
    """Bug: the rollout's last step always bootstraps through ``next_values``, even when it
    terminated (an n-step or TD(lambda) return whose tail value is added without the done
    flag of the batch's last step)."""
    term = terminated.copy()
    term[:, -1] = False
    not_done = 1.0 - (terminated | truncated).astype(np.float64)
    delta = rewards + gamma * (1.0 - term.astype(np.float64)) * next_values - values
    return _backward(delta, gamma * lam * not_done)


# ---------------------------------------------------------------- routines as real code has them
# Time-major ports in the style of public MAPPO and Stable-Baselines3 buffers, checked under
# their own declared conventions.

def mappo_masks_gae(
    rewards: FloatArray, value_preds: FloatArray, masks: FloatArray, bad_masks: FloatArray,
    gamma: float, lam: float,
) -> FloatArray:
    """Correct under ``layout="time-major", truncation="as-termination", flags="masks",
    values="T+1"``: ``rewards`` ``(T, B)``, ``value_preds`` and ``masks`` ``(T + 1, B)``; the
    mask that follows step ``t`` (``masks[t + 1]``) both drops the bootstrap and cuts the
    trace; ``bad_masks`` is not used (no proper time limits)."""
    n_steps = rewards.shape[0]
    adv = np.zeros_like(rewards)
    running = np.zeros_like(rewards[0])
    for t in range(n_steps - 1, -1, -1):
        keep = masks[t + 1]
        delta = rewards[t] + gamma * value_preds[t + 1] * keep - value_preds[t]
        running = delta + gamma * lam * keep * running
        adv[t] = running
    return adv


def mappo_proper_time_limits_gae(
    rewards: FloatArray, value_preds: FloatArray, masks: FloatArray, bad_masks: FloatArray,
    gamma: float, lam: float,
) -> FloatArray:
    """Correct under ``layout="time-major", truncation="zero-advantage", flags="masks",
    values="T+1"``: as :func:`mappo_masks_gae`, with the running advantage multiplied by
    ``bad_masks[t + 1]`` (zero after a time-limit truncation), MAPPO's proper time limits."""
    n_steps = rewards.shape[0]
    adv = np.zeros_like(rewards)
    running = np.zeros_like(rewards[0])
    for t in range(n_steps - 1, -1, -1):
        keep = masks[t + 1]
        delta = rewards[t] + gamma * value_preds[t + 1] * keep - value_preds[t]
        running = (delta + gamma * lam * keep * running) * bad_masks[t + 1]
        adv[t] = running
    return adv


def mappo_masks_gae_same_step(
    rewards: FloatArray, value_preds: FloatArray, masks: FloatArray, bad_masks: FloatArray,
    gamma: float, lam: float,
) -> FloatArray:
    """Bug: reads ``masks[t]`` (whether step ``t - 1`` ended an episode) where ``masks[t + 1]``
    belongs, so a step that ends an episode still bootstraps and the trace is cut one step
    early."""
    n_steps = rewards.shape[0]
    adv = np.zeros_like(rewards)
    running = np.zeros_like(rewards[0])
    for t in range(n_steps - 1, -1, -1):
        keep = masks[t]
        delta = rewards[t] + gamma * value_preds[t + 1] * keep - value_preds[t]
        running = delta + gamma * lam * keep * running
        adv[t] = running
    return adv


def sb3_float32_gae(
    rewards: FloatArray, values: FloatArray, last_values: FloatArray,
    episode_starts: FloatArray, last_dones: FloatArray, gamma: float, lam: float,
) -> npt.NDArray[np.float32]:
    """Correct under ``layout="time-major", truncation="as-termination",
    flags="episode_starts", values="last_values"``, computed in float32 as a float32 rollout
    buffer does: the step after ``t`` is non-terminal unless ``episode_starts[t + 1]`` (or, for
    the last step, ``last_dones``) says a new episode began."""
    r = np.asarray(rewards, dtype=np.float32)
    v = np.asarray(values, dtype=np.float32)
    starts = np.asarray(episode_starts, dtype=np.float32)
    g, lm = np.float32(gamma), np.float32(lam)
    n_steps = r.shape[0]
    adv = np.zeros_like(r)
    running = np.zeros_like(r[0])
    for t in range(n_steps - 1, -1, -1):
        if t == n_steps - 1:
            alive = np.float32(1.0) - np.asarray(last_dones, dtype=np.float32)
            nxt = np.asarray(last_values, dtype=np.float32)
        else:
            alive = np.float32(1.0) - starts[t + 1]
            nxt = v[t + 1]
        delta = r[t] + g * nxt * alive - v[t]
        running = delta + g * lm * alive * running
        adv[t] = running
    return adv


def sb3_float32_gae_ignores_last_dones(
    rewards: FloatArray, values: FloatArray, last_values: FloatArray,
    episode_starts: FloatArray, last_dones: FloatArray, gamma: float, lam: float,
) -> npt.NDArray[np.float32]:
    """Bug: as :func:`sb3_float32_gae`, but the last step always bootstraps through
    ``last_values`` (the batch-end done flag is dropped)."""
    return sb3_float32_gae(rewards, values, last_values, episode_starts,
                           np.zeros_like(np.asarray(last_dones)), gamma, lam)


def nstep_returns(
    rewards: FloatArray, values: FloatArray, last_values: FloatArray, dones: BoolArray,
    gamma: float, lam: float,
) -> FloatArray:
    """Correct under ``layout="time-major", truncation="as-termination", flags="dones",
    values="last_values", output="returns"`` with ``lam = 1``: the rollout-length n-step
    return of A2C-style code, ``R_t = r_t + gamma (1 - dones_t) R_{t+1}`` from
    ``R_T = last_values`` (``values`` and ``lam`` are not used)."""
    ret = np.zeros_like(rewards)
    running = np.asarray(last_values, dtype=np.float64)
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = rewards[t] + gamma * (1.0 - dones[t]) * running
        ret[t] = running
    return ret


def nstep_returns_through_batch_end(
    rewards: FloatArray, values: FloatArray, last_values: FloatArray, dones: BoolArray,
    gamma: float, lam: float,
) -> FloatArray:
    """Bug: as :func:`nstep_returns`, but the rollout's last step adds ``gamma last_values``
    whatever its done flag (the tail value bootstraps through a termination at the batch's
    end)."""
    ret = np.zeros_like(rewards)
    running = np.asarray(last_values, dtype=np.float64)
    n_steps = rewards.shape[0]
    for t in range(n_steps - 1, -1, -1):
        alive = 1.0 if t == n_steps - 1 else 1.0 - dones[t]
        running = rewards[t] + gamma * alive * running
        ret[t] = running
    return ret


_NSTEP: dict[str, Any] = {"layout": "time-major", "truncation": "as-termination",
                          "flags": "dones", "values": "last_values", "output": "returns",
                          "lam": 1.0}
_MAPPO: dict[str, Any] = {"layout": "time-major", "truncation": "as-termination",
                          "flags": "masks", "values": "T+1"}
_MAPPO_TIME_LIMITS: dict[str, Any] = {**_MAPPO, "truncation": "zero-advantage"}
_SB3: dict[str, Any] = {"layout": "time-major", "truncation": "as-termination",
                        "flags": "episode_starts", "values": "last_values"}


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
    Mutant("gae-bootstrap-through-terminal-at-batch-end",
           "the rollout's last step bootstraps through next_values even when it terminated "
           "(an n-step / TD(lambda) return ignoring the batch-end done flag)",
           "gae", lambda: check_gae(bootstrap_through_terminal_at_end, cases=_CASES)),
    Mutant("nstep-return-through-batch-end",
           "an A2C-style n-step return whose last step bootstraps through last_values even "
           "when it terminated",
           "gae", lambda: check_gae(nstep_returns_through_batch_end, cases=_CASES, **_NSTEP)),
    Mutant("gae-mappo-masks-same-step",
           "time-major MAPPO-style routine reading masks[t] where masks[t + 1] belongs",
           "gae", lambda: check_gae(mappo_masks_gae_same_step, cases=_CASES, **_MAPPO)),
    Mutant("gae-sb3-float32-ignores-last-dones",
           "float32 SB3-style routine whose last step bootstraps through last_values even "
           "when the batch's last step ended an episode",
           "gae", lambda: check_gae(sb3_float32_gae_ignores_last_dones, cases=_CASES, **_SB3)),
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
    Mutant("gae-mappo-masks",
           "correct under its convention: time-major, masks shifted by one, values of T + 1 "
           "steps, truncation as termination",
           "gae", lambda: check_gae(mappo_masks_gae, cases=_CASES, **_MAPPO)),
    Mutant("nstep-return",
           "correct under its convention: the rollout-length n-step return (lam = 1), "
           "time-major, single dones flag, last_values, truncation as termination",
           "gae", lambda: check_gae(nstep_returns, cases=_CASES, **_NSTEP)),
    Mutant("gae-mappo-proper-time-limits",
           "correct under its convention: time-major, masks and bad_masks shifted by one, "
           "values of T + 1 steps, a truncated step's advantage zeroed",
           "gae", lambda: check_gae(mappo_proper_time_limits_gae, cases=_CASES,
                                    **_MAPPO_TIME_LIMITS)),
    Mutant("gae-sb3-float32",
           "correct under its convention: float32, time-major, episode_starts and last_values, "
           "truncation as termination",
           "gae", lambda: check_gae(sb3_float32_gae, cases=_CASES, **_SB3)),
)
"""Correct implementations, which the check must pass."""

DIAGNOSABLE = (
    KnownBug("gae-bootstrap-through-terminal",
             "delta_t uses gamma next_values_t even when step t terminated",
             bootstrap_through_terminal),
    KnownBug("gae-bootstrap-through-terminal-at-batch-end",
             "the rollout's last step bootstraps even when it terminated",
             bootstrap_through_terminal_at_end),
    KnownBug("gae-truncation-takes-precedence",
             "a step both terminated and truncated bootstraps", truncation_takes_precedence),
    KnownBug("gae-values-left-normalised",
             "values standardised by the batch mean and std and never mapped back",
             values_left_normalised),
    KnownBug("gae-done-flags-one-step-late",
             "step t masked with the flags of step t + 1", done_flags_one_step_late),
    KnownBug("gae-trace-not-reset", "A_t = delta_t + gamma lam A_{t+1} without (1 - done_t)",
             trace_not_reset),
    KnownBug("gae-gamma-lam-swapped", "gamma and lam swapped", gamma_lam_swapped),
)
"""The planted bugs in the check's canonical signature, which its diagnosis tries."""
