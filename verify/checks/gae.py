"""Conformance check for generalized advantage estimation (GAE, Schulman et al. 2016, eq. 16)
with separate termination and truncation flags (``proofs_notes/gae.md``).

The user's callable has the signature::

    fn(rewards, values, next_values, terminated, truncated, gamma, lam) -> advantages

with every array of shape ``(B, T)`` (``B`` parallel environments, ``T`` steps, float64
except the two ``bool`` flag arrays) and ``gamma``, ``lam`` Python floats:

* ``rewards[b, t]`` -- the reward of step ``t`` in environment ``b``;
* ``values[b, t] = V(s_t)`` -- the value of the observation step ``t`` acted on;
* ``next_values[b, t] = V(s_{t+1})`` -- the value of the observation that followed step ``t``:
  for a truncated step the final observation before the reset, for a terminated step
  anything (it must be ignored);
* ``terminated[b, t]`` -- step ``t`` ended its episode in a terminal state (no future);
* ``truncated[b, t]`` -- step ``t`` ended its episode by a time limit (the future is cut off
  but not zero); both flags at once count as terminated.

The advantages, shape ``(B, T)`` (``proofs_notes/gae.md#definition``)::

    delta_t = r_t + gamma (1 - terminated_t) next_values_t - values_t
    A_t     = delta_t + gamma lam (1 - done_t) A_{t+1},   done_t = terminated_t or truncated_t,
    A_T     = 0   (the rollout's last step bootstraps through next_values, like a truncation).

Inputs are fresh copies, so a callable that writes to them cannot corrupt the oracle.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from reference._arrays import FloatArray
from reference.errors import ModelError
from verify.checks._core import Case, CaseResult, CheckReport, guard, run_check, user_array
from verify.tolerances import summation_tolerance

__all__ = [
    "BoolArray",
    "GaeFn",
    "check_gae",
    "gae_finite_sum",
    "gae_recursion",
    "gae_rounding",
]

BoolArray = npt.NDArray[np.bool_]
"""A boolean flag array."""

GaeFn = Callable[
    [FloatArray, FloatArray, FloatArray, BoolArray, BoolArray, float, float], npt.ArrayLike
]
"""``fn(rewards, values, next_values, terminated, truncated, gamma, lam) -> advantages``."""

MAX_ENVS = 4
MAX_STEPS = 12
REWARD_RANGE = 1.0
"""Rewards are drawn in ``[-REWARD_RANGE, REWARD_RANGE]``."""
VALUE_RANGE = 50.0
"""Values are drawn in ``[-VALUE_RANGE, VALUE_RANGE]``: far from standardised, so a routine
that loses the value scale is caught."""
MAX_GAMMA = 0.99


def _bootstrap(next_values: FloatArray, terminated: BoolArray) -> FloatArray:
    """``next_values`` with terminated steps' entries replaced by an exact 0."""
    out: FloatArray = np.where(terminated, 0.0, next_values)
    return out


def _deltas(
    rewards: FloatArray,
    values: FloatArray,
    next_values: FloatArray,
    terminated: BoolArray,
    gamma: float,
) -> FloatArray:
    """``delta[b, t] = r + gamma (1 - terminated) next_values - values`` (shape ``(B, T)``)."""
    out: FloatArray = (rewards + gamma * _bootstrap(next_values, terminated)) - values
    return out


def gae_recursion(
    rewards: FloatArray,
    values: FloatArray,
    next_values: FloatArray,
    terminated: BoolArray,
    truncated: BoolArray,
    gamma: float,
    lam: float,
) -> FloatArray:
    """GAE by the backward recursion (``proofs_notes/gae.md#definition``)::

        A_t = delta_t + gamma lam (1 - done_t) A_{t+1},   A_T = 0,

    ``delta_t = r_t + gamma (1 - terminated_t) next_values_t - values_t``,
    ``done_t = terminated_t or truncated_t``.  All arrays ``(B, T)``; returns ``A[b, t]``,
    shape ``(B, T)``."""
    delta = _deltas(rewards, values, next_values, terminated, gamma)
    carry = np.where(terminated | truncated, 0.0, gamma * lam)
    adv = np.zeros_like(delta)
    after = np.zeros(delta.shape[0])
    for t in range(delta.shape[1] - 1, -1, -1):
        after = delta[:, t] + carry[:, t] * after
        adv[:, t] = after
    return adv


def gae_finite_sum(
    rewards: FloatArray,
    values: FloatArray,
    next_values: FloatArray,
    terminated: BoolArray,
    truncated: BoolArray,
    gamma: float,
    lam: float,
) -> FloatArray:
    """GAE by the explicit finite sum (``proofs_notes/gae.md#finite-sum``)::

        A_t = sum_{l=0}^{L_t} (gamma lam)^l delta_{t+l},

    ``L_t = min{l >= 0 : done_{t+l} or t + l = T - 1}`` (the sum stops at the end of ``t``'s
    episode segment within the rollout).  Same arrays and result as :func:`gae_recursion`;
    computed forward, term by term, without the recursion."""
    delta = _deltas(rewards, values, next_values, terminated, gamma)
    done = terminated | truncated
    n_envs, n_steps = delta.shape
    decay = gamma * lam
    adv = np.zeros_like(delta)
    for b in range(n_envs):
        for t in range(n_steps):
            weight, total = 1.0, 0.0
            for k in range(t, n_steps):
                total += weight * delta[b, k]
                if done[b, k]:
                    break
                weight *= decay
            adv[b, t] = total
    return adv


def gae_rounding(
    rewards: FloatArray,
    values: FloatArray,
    next_values: FloatArray,
    terminated: BoolArray,
    gamma: float,
) -> float:
    """Bound on the rounding error of :func:`gae_recursion` (and of :func:`gae_finite_sum`) in
    every entry (``proofs_notes/gae.md#rounding``).

    Each ``delta_t`` is off by at most ``3u m_t`` with ``m_t = |r_t| + gamma (1 - terminated_t)
    |next_values_t| + |values_t|`` (three roundings, relative to the inputs: ``delta`` itself
    can cancel), and the recursion adds two roundings per step, so entry ``t`` is off by at
    most ``sum_{l<T} (3l + 4) u M <= (T + 1) T eps M``, ``M = max_t m_t`` and ``u = eps/2``:
    :func:`verify.tolerances.summation_tolerance` with ``T`` terms at scale ``M``.  We use the
    scale ``2 max(M, tiny)``: the factor 2 covers the second-order terms and the finite-sum
    route's powers, the floor at the smallest normal number ``tiny`` covers underflow (an
    absolute error of half a subnormal per product)."""
    m = np.abs(rewards) + gamma * np.abs(_bootstrap(next_values, terminated)) + np.abs(values)
    scale = max(float(np.max(m, initial=0.0)), float(np.finfo(np.float64).tiny))
    return summation_tolerance(int(np.shape(rewards)[1]), 2.0 * scale)


@dataclass(frozen=True)
class _Rollout:
    """One generated batch: arrays ``(B, T)`` and the two coefficients."""

    rewards: FloatArray
    values: FloatArray
    next_values: FloatArray
    terminated: BoolArray
    truncated: BoolArray
    gamma: float
    lam: float


_END_KINDS = 8
"""Per-step end kind drawn in ``0..7``: ``0..4`` the episode continues, ``5`` terminated,
``6`` truncated, ``7`` both."""


@st.composite
def _rollouts(draw: st.DrawFn, gamma: float | None, lam: float | None) -> _Rollout:
    """Batches shaped like real rollouts: ``next_values[b, t] = values[b, t + 1]`` whenever step
    ``t`` neither ended an episode nor is the last step; after a truncation and at the last
    step ``next_values`` is a fresh value (the final observation's), after a termination an
    arbitrary one that a correct routine ignores.  Shrinks toward one environment, one step,
    no episode ends, zero arrays, ``gamma = lam = 0``."""
    n_envs = draw(st.integers(1, MAX_ENVS))
    n_steps = draw(st.integers(1, MAX_STEPS))
    shape = (n_envs, n_steps)
    rewards = draw(
        hnp.arrays(np.float64, shape, elements=st.floats(-REWARD_RANGE, REWARD_RANGE))
    )
    values = draw(hnp.arrays(np.float64, shape, elements=st.floats(-VALUE_RANGE, VALUE_RANGE)))
    final = draw(hnp.arrays(np.float64, shape, elements=st.floats(-VALUE_RANGE, VALUE_RANGE)))
    kind = draw(hnp.arrays(np.int64, shape, elements=st.integers(0, _END_KINDS - 1)))
    terminated = (kind == 5) | (kind == 7)
    truncated = kind >= 6
    continues = ~(terminated | truncated)
    continues[:, -1] = False
    next_values = final.copy()
    next_values[:, :-1] = np.where(continues[:, :-1], values[:, 1:], final[:, :-1])
    g = draw(st.floats(0.0, MAX_GAMMA)) if gamma is None else gamma
    lm = draw(st.floats(0.0, 1.0)) if lam is None else lam
    return _Rollout(rewards, values, next_values, terminated, truncated, float(g), float(lm))


def _to_arrays(ro: _Rollout) -> Mapping[str, npt.NDArray[Any]]:
    return {
        "rewards": ro.rewards,
        "values": ro.values,
        "next_values": ro.next_values,
        "terminated": ro.terminated,
        "truncated": ro.truncated,
        "gamma": np.array(ro.gamma),
        "lam": np.array(ro.lam),
    }


def _from_arrays(a: Mapping[str, npt.NDArray[Any]]) -> _Rollout:
    names = ("rewards", "values", "next_values", "terminated", "truncated", "gamma", "lam")
    missing = [k for k in names if k not in a]
    if missing:
        raise ModelError(f"a gae case needs arrays {missing}, which are missing")
    shape = np.shape(a["rewards"])
    if len(shape) != 2:
        raise ModelError(f"rewards has shape {shape}, expected (B, T)")
    for k in names[1:5]:
        if np.shape(a[k]) != shape:
            raise ModelError(f"{k} has shape {np.shape(a[k])}, expected {shape} like rewards")
    for k in ("terminated", "truncated"):
        if np.asarray(a[k]).dtype != np.bool_:
            raise ModelError(f"{k} has dtype {np.asarray(a[k]).dtype}, expected bool")
    return _Rollout(
        np.array(a["rewards"], dtype=np.float64),
        np.array(a["values"], dtype=np.float64),
        np.array(a["next_values"], dtype=np.float64),
        np.array(a["terminated"], dtype=np.bool_),
        np.array(a["truncated"], dtype=np.bool_),
        float(a["gamma"]),
        float(a["lam"]),
    )


def _step_kind(ro: _Rollout, b: int, t: int) -> str:
    term, trunc = bool(ro.terminated[b, t]), bool(ro.truncated[b, t])
    if term and trunc:
        kind = "terminated and truncated"
    elif term:
        kind = "terminated"
    elif trunc:
        kind = "truncated"
    elif t == ro.rewards.shape[1] - 1:
        kind = "last of the rollout, continuing"
    else:
        kind = "continuing"
    n_envs, n_steps = ro.rewards.shape
    return f"step {kind}; B={n_envs}, T={n_steps}, gamma={ro.gamma:.6g}, lam={ro.lam:.6g}"


def _compare(got: FloatArray, want: FloatArray, ro: _Rollout) -> tuple[float, str]:
    if not np.all(np.isfinite(got)):
        b, t = (int(i) for i in np.argwhere(~np.isfinite(got))[0])
        return math.inf, f"A[b={b}, t={t}] = {got[b, t]!r} is not finite ({_step_kind(ro, b, t)})"
    diff = np.abs(got - want)
    b, t = (int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))
    return float(diff[b, t]), (
        f"A[b={b}, t={t}] = {got[b, t]:.6g}, oracle {want[b, t]:.6g} ({_step_kind(ro, b, t)})"
    )


def _unit_interval(name: str, x: float | None) -> float | None:
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0.0 <= float(x) <= 1.0:
        raise ModelError(f"{name} = {x!r}, expected a number in [0, 1] or None")
    return float(x)


def check_gae(
    fn: GaeFn,
    *,
    gamma: float | None = None,
    lam: float | None = None,
    atol: float | None = None,
    cases: int = 50,
    seed: int = 0,
    replay: Case | None = None,
) -> CheckReport:
    """Check ``fn(rewards, values, next_values, terminated, truncated, gamma, lam) -> A``
    against generalized advantage estimation with separate termination and truncation flags
    (``proofs_notes/gae.md#definition``)::

        delta_t = r_t + gamma (1 - terminated_t) next_values_t - values_t
        A_t     = delta_t + gamma lam (1 - done_t) A_{t+1},  done_t = terminated_t or truncated_t,
        A_T     = 0.

    A terminated step does not bootstrap; a truncated step bootstraps through the final
    observation's value ``next_values_t`` but cuts the ``lam``-trace, since step ``t + 1``
    belongs to the next episode; both flags at once count as terminated; the rollout's last
    step bootstraps through ``next_values`` and cuts the trace, like a truncation.

    Arguments of ``fn`` (fresh copies): ``rewards``, ``values``, ``next_values``, float64
    arrays ``(B, T)``; ``terminated``, ``truncated``, bool arrays ``(B, T)``; ``gamma``,
    ``lam``, floats.  It returns ``A``, array-like ``(B, T)``; ``values[b, t] = V(s_t)`` and
    ``next_values[b, t] = V(s_{t+1})`` as in the module docstring.

    Instances: ``B`` in ``1..4``, ``T`` in ``1..12``, rewards in ``[-1, 1]``, values in
    ``[-50, 50]``, episode ends of both kinds, both flags together and ends at the last step,
    ``next_values`` consistent with ``values`` inside an episode (a real rollout);
    ``gamma`` in ``[0, 0.99]`` and ``lam`` in ``[0, 1]`` unless fixed here (a replayed case
    keeps its own).

    Tolerance per case: the oracle's rounding :func:`gae_rounding`
    (:func:`verify.tolerances.summation_tolerance` with ``T`` terms at twice the largest input
    magnitude of a ``delta``), plus the same again for the user's rounding, or plus ``atol``
    in its place."""
    fn = guard(fn)
    fixed_gamma = _unit_interval("gamma", gamma)
    fixed_lam = _unit_interval("lam", lam)
    if atol is not None and not (math.isfinite(float(atol)) and float(atol) >= 0):
        raise ModelError(f"atol = {atol!r}, expected a finite number >= 0 or None")

    def evaluate_case(ro: _Rollout, index: int) -> CaseResult:
        want = gae_recursion(ro.rewards, ro.values, ro.next_values, ro.terminated,
                             ro.truncated, ro.gamma, ro.lam)
        out = fn(ro.rewards.copy(), ro.values.copy(), ro.next_values.copy(),
                 ro.terminated.copy(), ro.truncated.copy(), ro.gamma, ro.lam)
        got = user_array(out)
        if got.shape != want.shape:
            return CaseResult(
                math.inf, 0.0,
                f"the callable returned shape {got.shape}, expected {want.shape} (B, T)",
            )
        err, where = _compare(got, want, ro)
        ours = gae_rounding(ro.rewards, ro.values, ro.next_values, ro.terminated, ro.gamma)
        return CaseResult(err, ours + (ours if atol is None else float(atol)), where)

    return run_check(
        "gae",
        "proofs_notes/gae.md#definition: delta_t = r_t + gamma (1 - terminated_t) V(s_{t+1}) - "
        "V(s_t); A_t = delta_t + gamma lam (1 - done_t) A_{t+1}, A_T = 0",
        _rollouts(fixed_gamma, fixed_lam),
        _to_arrays,
        _from_arrays,
        evaluate_case,
        cases=cases,
        seed=seed,
        replay=replay,
    )
