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
from verify.checks._core import (
    Alternative,
    Case,
    CaseFailure,
    CheckArgumentError,
    CheckReport,
    Compared,
    Declaration,
    UserIO,
    guard,
    run_check,
)
from verify.tolerances import EPS, summation_tolerance

__all__ = [
    "FLAGS",
    "LAYOUTS",
    "OUTPUTS",
    "TRUNCATIONS",
    "VALUES",
    "BoolArray",
    "GaeFn",
    "check_gae",
    "gae_finite_sum",
    "gae_recursion",
    "gae_rounding",
    "gae_rounding_entries",
    "gae_zero_advantage",
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


def gae_rounding_entries(
    rewards: FloatArray,
    values: FloatArray,
    next_values: FloatArray,
    terminated: BoolArray,
    truncated: BoolArray,
    gamma: float,
    lam: float,
) -> FloatArray:
    """Entrywise bound on the rounding error of :func:`gae_recursion` and of
    :func:`gae_finite_sum` (``proofs_notes/gae.md#rounding-entrywise``)::

        |fl(A_t) - A_t| <= max(eps sum_{l=0}^{L_t} (gamma lam)^l (3l + T + 4) m_{t+l},
                               2 (T + 1) T eps tiny),

    ``m_t`` as in :func:`gae_rounding`, ``L_t`` the steps left in ``t``'s episode segment
    within the rollout.  It keeps the damping ``(gamma lam)^l`` and the segment length that
    :func:`gae_rounding` bounds by 1 and ``T``, so it is smaller wherever ``gamma lam < 1`` or
    episodes end inside the rollout.  Arrays ``(B, T)``; returns the bound, ``(B, T)``."""
    tiny = float(np.finfo(np.float64).tiny)
    m = np.maximum(
        np.abs(rewards) + gamma * np.abs(_bootstrap(next_values, terminated)) + np.abs(values),
        tiny,
    )
    n_envs, n_steps = m.shape
    carry = np.where(terminated | truncated, 0.0, gamma * lam)
    weight = np.zeros((n_envs, n_steps))  # sum_l (gamma lam)^l m_{t+l}
    lagged = np.zeros((n_envs, n_steps))  # sum_l l (gamma lam)^l m_{t+l}
    s_after, u_after = np.zeros(n_envs), np.zeros(n_envs)
    for t in range(n_steps - 1, -1, -1):
        u_after = carry[:, t] * (u_after + s_after)
        s_after = m[:, t] + carry[:, t] * s_after
        weight[:, t], lagged[:, t] = s_after, u_after
    floor = summation_tolerance(n_steps, 2.0 * tiny)  # underflow, as in gae_rounding
    out: FloatArray = np.maximum(EPS * (3.0 * lagged + (n_steps + 4.0) * weight), floor)
    return out


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
    last_values: FloatArray | None = None
    """``(B,)``: the value of the observation the rollout stopped at, as a buffer stores it
    (after a reset when the last step ended an episode); ``None``: ``next_values[:, -1]``."""
    first_flags: BoolArray | None = None
    """``(B,)``: whether the step before the rollout ended an episode (the first entry of
    ``episode_starts`` and of ``1 - masks``, which a correct routine ignores)."""

    def stored_last(self) -> FloatArray:
        """:attr:`last_values`, or ``next_values[:, -1]`` when absent."""
        if self.last_values is None:
            out: FloatArray = self.next_values[:, -1].copy()
            return out
        return self.last_values

    def stored_first(self) -> BoolArray:
        """:attr:`first_flags`, or all ``False`` when absent."""
        if self.first_flags is None:
            return np.zeros(self.rewards.shape[0], dtype=np.bool_)
        return self.first_flags


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


def _generate(rng: np.random.Generator, size: float, gamma: float | None,
              lam: float | None) -> _Rollout:
    """A rollout at ``size`` of the limits: ``B`` in ``1..ceil(size MAX_ENVS)``, ``T`` in
    ``1..ceil(size MAX_STEPS)``; each step continues with probability 5/8 and otherwise
    terminates, truncates or both (1/8 each); ``next_values`` continues ``values`` inside an
    episode, is a fresh value (the final observation's) after an end and at the last step;
    ``last_values`` is that fresh value when the last step continues and the value of the
    observation after the reset otherwise; ``gamma`` is 0 one time in ten, else uniform in
    ``[0, 0.99]``; ``lam`` is 0 or 1 one time in ten each, else uniform in ``[0, 1]``."""
    n_envs = int(rng.integers(1, max(1, math.ceil(size * MAX_ENVS)) + 1))
    n_steps = int(rng.integers(1, max(1, math.ceil(size * MAX_STEPS)) + 1))
    shape = (n_envs, n_steps)
    rewards = rng.uniform(-REWARD_RANGE, REWARD_RANGE, shape)
    values = rng.uniform(-VALUE_RANGE, VALUE_RANGE, shape)
    final = rng.uniform(-VALUE_RANGE, VALUE_RANGE, shape)
    after_reset = rng.uniform(-VALUE_RANGE, VALUE_RANGE, n_envs)
    kind = rng.integers(0, _END_KINDS, shape)
    terminated = (kind == 5) | (kind == 7)
    truncated = kind >= 6
    continues = ~(terminated | truncated)
    next_values = final.copy()
    next_values[:, :-1] = np.where(continues[:, :-1], values[:, 1:], final[:, :-1])
    last_values = np.where(continues[:, -1], final[:, -1], after_reset)
    first = rng.random(n_envs) < 0.5
    u = rng.random()
    g = (0.0 if u < 0.1 else float(rng.uniform(0.0, MAX_GAMMA))) if gamma is None else gamma
    v = rng.random()
    lm = (0.0 if v < 0.1 else 1.0 if v < 0.2 else float(rng.uniform(0.0, 1.0))) \
        if lam is None else lam
    return _Rollout(rewards, values, next_values, terminated, truncated, g, lm,
                    last_values, first)


def _to_arrays(ro: _Rollout) -> Mapping[str, npt.NDArray[Any]]:
    return {
        "rewards": ro.rewards,
        "values": ro.values,
        "next_values": ro.next_values,
        "terminated": ro.terminated,
        "truncated": ro.truncated,
        "gamma": np.array(ro.gamma),
        "lam": np.array(ro.lam),
        "last_values": ro.stored_last(),
        "first_flags": ro.stored_first(),
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
    for k in ("last_values", "first_flags"):
        if k in a and np.shape(a[k]) != shape[:1]:
            raise ModelError(f"{k} has shape {np.shape(a[k])}, expected {shape[:1]} (B,)")
    return _Rollout(
        np.array(a["rewards"], dtype=np.float64),
        np.array(a["values"], dtype=np.float64),
        np.array(a["next_values"], dtype=np.float64),
        np.array(a["terminated"], dtype=np.bool_),
        np.array(a["truncated"], dtype=np.bool_),
        float(a["gamma"]),
        float(a["lam"]),
        np.array(a["last_values"], dtype=np.float64) if "last_values" in a else None,
        np.array(a["first_flags"], dtype=np.bool_) if "first_flags" in a else None,
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


def _unit_interval(name: str, x: float | None) -> float | None:
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0.0 <= float(x) <= 1.0:
        raise CheckArgumentError(f"{name} = {x!r}, expected a number in [0, 1] or None")
    return float(x)


# --------------------------------------------------------------------------- conventions

LAYOUTS = ("batch-major", "time-major")
"""``"batch-major"``: arrays ``(B, T)``; ``"time-major"``: ``(T, B)`` (MAPPO, SB3, CleanRL)."""

TRUNCATIONS = ("bootstrap", "as-termination", "zero-advantage")
"""``"bootstrap"``: a truncated step bootstraps through the final observation's value (the
correct estimator); ``"as-termination"``: a truncated step is treated as terminal (no
bootstrap), the convention of code that never stores the final observation's value;
``"zero-advantage"``: a truncated (not terminated) step gets advantage 0 and passes 0 to the
step before it (its return target is its own value), the "proper time limits" option of
MAPPO-style buffers (``gae *= bad_masks[t + 1]``)."""

FLAGS = ("terminated-truncated", "dones", "episode_starts", "masks")
"""How episode ends reach the callable (``t`` a step, shapes batch-major):

* ``"terminated-truncated"``: ``terminated[b, t]``, ``truncated[b, t]`` (bool), step ``t``
  ended its episode in a terminal state / by a time limit;
* ``"dones"``: ``dones[b, t] = terminated or truncated`` (bool);
* ``"episode_starts"`` (Stable-Baselines3): ``episode_starts[b, t]`` (float 0/1), observation
  ``t`` is the first of an episode, i.e. step ``t - 1`` ended one (entry ``t = 0`` is about
  the previous rollout and must be ignored), and ``last_dones[b]`` (float 0/1), the last step
  ended an episode;
* ``"masks"`` (MAPPO, pytorch-a2c-ppo-acktr): ``masks[b, t + 1] = 0`` if step ``t`` ended
  its episode, else 1, and ``bad_masks[b, t + 1] = 0`` if step ``t`` was truncated and not
  terminated, else 1, both float ``(B, T + 1)`` (entry 0 is about the previous rollout).
"""

VALUES = ("next_values", "T+1", "last_values")
"""How bootstrap values reach the callable:

* ``"next_values"``: ``values[b, t] = V(s_t)`` and ``next_values[b, t] = V(s_{t+1})``, the
  final observation's value after a truncation;
* ``"T+1"`` (MAPPO's ``value_preds``): ``values`` of shape ``(B, T + 1)``, ``values[b, t]`` the
  value of observation ``t`` as stored (after a reset, the new episode's first) and
  ``values[b, T]`` that of the observation the rollout stopped at;
* ``"last_values"`` (SB3): ``values`` ``(B, T)`` and ``last_values[b]`` ``(B,)``, the value of
  the observation the rollout stopped at.

Only ``"next_values"`` carries a truncated step's final-observation value, so the other two
need ``truncation="as-termination"``.
"""


OUTPUTS = ("advantages", "returns")
"""What the callable returns: the advantages ``A_t``, or the lambda-returns ``R_t = A_t +
values_t`` (the value targets of PPO-style code, an n-step/TD(lambda) return)."""


@dataclass(frozen=True)
class _Convention:
    layout: str
    truncation: str
    flags: str
    values: str
    output: str = "advantages"

    def finish(self, ro: _Rollout, adv: FloatArray) -> FloatArray:
        """``adv``, or ``adv + values`` when the callable returns lambda-returns."""
        if self.output == "returns":
            out: FloatArray = adv + ro.values
            return out
        return adv

    def args(self, ro: _Rollout) -> list[npt.NDArray[Any]]:
        """The array arguments of the callable in this convention, batch-major."""
        done = ro.terminated | ro.truncated
        n_envs = ro.rewards.shape[0]
        out: list[npt.NDArray[Any]] = [ro.rewards]
        if self.values == "next_values":
            out += [ro.values, ro.next_values]
        elif self.values == "T+1":
            out.append(np.concatenate([ro.values, ro.stored_last()[:, None]], axis=1))
        else:
            out += [ro.values, ro.stored_last()]
        if self.flags == "terminated-truncated":
            out += [ro.terminated, ro.truncated]
        elif self.flags == "dones":
            out.append(done)
        elif self.flags == "episode_starts":
            starts = np.concatenate([ro.stored_first()[:, None], done[:, :-1]], axis=1)
            out += [starts.astype(np.float64), done[:, -1].astype(np.float64)]
        else:
            first = ro.stored_first()[:, None]
            masks = 1.0 - np.concatenate([first, done], axis=1).astype(np.float64)
            bad = ro.truncated & ~ro.terminated
            bad_masks = 1.0 - np.concatenate(
                [np.zeros((n_envs, 1), dtype=np.bool_), bad], axis=1
            ).astype(np.float64)
            out += [masks, bad_masks]
        if self.layout == "time-major":
            out = [x.T if x.ndim == 2 else x for x in out]
        return out

    def next_seen(self, ro: _Rollout) -> FloatArray:
        """``next_values`` as this convention's arguments carry them: the stored value of
        the following observation (after a reset, the new episode's first) unless the
        callable receives ``next_values`` itself.  Both agree wherever the declared
        truncation reads them."""
        if self.values == "next_values":
            return ro.next_values
        out: FloatArray = np.concatenate([ro.values[:, 1:], ro.stored_last()[:, None]], axis=1)
        return out

    def flags_seen(self, ro: _Rollout) -> tuple[BoolArray, BoolArray]:
        """``(terminated, truncated)`` as this convention's oracle reads them."""
        if self.truncation != "bootstrap":
            return ro.terminated | ro.truncated, np.zeros_like(ro.truncated)
        return ro.terminated, ro.truncated

    def describe(self) -> str:
        return (f"layout={self.layout!r}, truncation={self.truncation!r}, "
                f"flags={self.flags!r}, values={self.values!r}, output={self.output!r}")


def _convention(layout: str, truncation: str, flags: str, values: str,
                output: str = "advantages") -> _Convention:
    for name, value, allowed in (("layout", layout, LAYOUTS), ("truncation", truncation,
                                 TRUNCATIONS), ("flags", flags, FLAGS),
                                 ("values", values, VALUES), ("output", output, OUTPUTS)):
        if value not in allowed:
            raise CheckArgumentError(f"{name} = {value!r}, expected one of {allowed}")
    if truncation == "zero-advantage" and flags in ("dones", "episode_starts"):
        raise CheckArgumentError(
            f"flags = {flags!r} does not tell a truncation from a termination, so "
            "truncation='zero-advantage' cannot be computed from it: pass "
            "flags='terminated-truncated' or flags='masks' (with bad_masks)"
        )
    if truncation == "bootstrap":
        if values != "next_values":
            raise CheckArgumentError(
                f"values = {values!r} carries no final-observation value for a truncated "
                "step, so truncation='bootstrap' cannot be computed from it: declare "
                "truncation='as-termination' (the report then states what it costs)"
            )
        if flags in ("dones", "episode_starts"):
            raise CheckArgumentError(
                f"flags = {flags!r} does not tell a truncation from a termination, so "
                "truncation='bootstrap' cannot be computed from it: declare "
                "truncation='as-termination' or pass flags='terminated-truncated'"
            )
    return _Convention(layout, truncation, flags, values, output)


def gae_zero_advantage(
    rewards: FloatArray,
    values: FloatArray,
    next_values: FloatArray,
    terminated: BoolArray,
    truncated: BoolArray,
    gamma: float,
    lam: float,
) -> FloatArray:
    """GAE under ``truncation="zero-advantage"``: the recursion of :func:`gae_recursion` with
    every end treated as terminal, and then ``A_t = 0`` at a step truncated and not
    terminated, which is the value carried to step ``t - 1``::

        A_t = 0                                       if truncated_t and not terminated_t,
        A_t = delta_t + gamma lam (1 - done_t) A_{t+1}  otherwise,  delta_t without bootstrap
                                                        at any end.

    Arrays ``(B, T)``; returns ``A``, ``(B, T)``."""
    done = terminated | truncated
    delta = rewards + gamma * np.where(done, 0.0, next_values) - values
    keep = np.where(done, 0.0, gamma * lam)
    zero = truncated & ~terminated
    adv = np.zeros_like(delta)
    after = np.zeros(delta.shape[0])
    for t in range(delta.shape[1] - 1, -1, -1):
        after = np.where(zero[:, t], 0.0, delta[:, t] + keep[:, t] * after)
        adv[:, t] = after
    return adv


def _oracle(ro: _Rollout, conv: _Convention) -> FloatArray:
    """The declared convention's advantages (or returns), batch-major."""
    if conv.truncation == "zero-advantage":
        adv = gae_zero_advantage(ro.rewards, ro.values, conv.next_seen(ro), ro.terminated,
                                 ro.truncated, ro.gamma, ro.lam)
    else:
        term, trunc = conv.flags_seen(ro)
        adv = gae_recursion(ro.rewards, ro.values, conv.next_seen(ro), term, trunc, ro.gamma,
                            ro.lam)
    return conv.finish(ro, adv)


def _oracle_of(conv: _Convention) -> Callable[[_Rollout], list[FloatArray]]:
    return lambda ro: [_oracle(ro, conv)]


def _planted_alternatives(conv: _Convention) -> list[Alternative]:
    """The other truncation conventions the declared inputs can express, and the planted GAE
    bugs, each applied to the rollout as the declared convention reads it."""
    from verify.checks.planted import known_bugs  # the catalogue imports this module

    out: list[Alternative] = []
    meaning = {
        "bootstrap": "a truncated step bootstraps through the final observation's value",
        "as-termination": "a truncated step does not bootstrap, like a termination",
        "zero-advantage": "a truncated step's advantage is 0",
    }
    for other in TRUNCATIONS:
        if other == conv.truncation:
            continue
        try:
            alt = _convention(conv.layout, other, conv.flags, conv.values, conv.output)
        except CheckArgumentError:  # the declared inputs cannot express that convention
            continue
        out.append(Alternative(f"truncation-{other}", meaning[other], _oracle_of(alt),
                               declare=f"truncation={other!r}"))
    for m in known_bugs("gae"):
        def outputs(ro: _Rollout, fn: Any = m.fn) -> list[FloatArray]:
            term, trunc = conv.flags_seen(ro)
            adv = np.asarray(fn(ro.rewards, ro.values, conv.next_seen(ro), term, trunc,
                                ro.gamma, ro.lam), dtype=np.float64)
            return [conv.finish(ro, adv)]
        out.append(Alternative(m.name, m.bug, outputs))
    return out


def check_gae(
    fn: GaeFn | Callable[..., npt.ArrayLike],
    *,
    layout: str = "batch-major",
    truncation: str = "bootstrap",
    flags: str = "terminated-truncated",
    values: str = "next_values",
    output: str = "advantages",
    gamma: float | None = None,
    lam: float | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    dtype: str | None = None,
    xp: Any = None,
    cases: int = 50,
    seed: int = 0,
    replay: Case | None = None,
) -> CheckReport:
    """Check a GAE routine against generalized advantage estimation
    (``proofs_notes/gae.md#definition``) in the routine's own conventions::

        delta_t = r_t + gamma (1 - terminated_t) next_values_t - values_t
        A_t     = delta_t + gamma lam (1 - done_t) A_{t+1},  done_t = terminated_t or truncated_t,
        A_T     = 0.

    A terminated step does not bootstrap; a truncated step bootstraps through the final
    observation's value ``next_values_t`` but cuts the ``lam``-trace, since step ``t + 1``
    belongs to the next episode; both flags at once count as terminated; the rollout's last
    step bootstraps through the value of the observation it stopped at.  Under
    ``truncation="as-termination"`` every truncation counts as a termination, and the report's
    :attr:`~verify.checks.CheckReport.convention_cost` states how far that convention's
    advantages are from the correct ones on the same cases (worst entry); likewise under
    ``truncation="zero-advantage"`` (:func:`gae_zero_advantage`), where a truncated step's
    advantage is 0.

    The callable is called as ``fn(rewards, *value_arrays, *flag_arrays, gamma, lam)``:

    * ``rewards`` ``(B, T)`` (``(T, B)`` under ``layout="time-major"``; so for every array);
    * value arrays by ``values`` (:data:`VALUES`): ``values, next_values`` (default), or
      ``values`` of ``T + 1`` steps, or ``values, last_values``;
    * flag arrays by ``flags`` (:data:`FLAGS`): ``terminated, truncated`` (default, bool), or
      ``dones`` (bool), or ``episode_starts, last_dones`` (float), or ``masks, bad_masks``
      (float, ``T + 1`` steps);
    * ``gamma``, ``lam`` Python floats.

    It returns the advantages ``A`` in the declared layout, or with ``output="returns"``
    the lambda-returns ``R_t = A_t + values_t`` (:data:`OUTPUTS`).

    For example the default is ``fn(rewards, values, next_values, terminated, truncated,
    gamma, lam)``, SB3's ``fn(rewards, values, last_values, episode_starts, last_dones, gamma,
    lam)`` with ``layout="time-major", truncation="as-termination", flags="episode_starts",
    values="last_values"``, MAPPO's ``fn(rewards, value_preds, masks, bad_masks, gamma, lam)``
    with ``layout="time-major", truncation="as-termination", flags="masks", values="T+1"``.

    Instances (:func:`_generate`): ``B`` in ``1..4``, ``T`` in ``1..12`` (a size ladder from
    one step up), rewards in ``[-1, 1]``, values in ``[-50, 50]``, episode ends of both kinds,
    both flags together and ends at the last step; ``gamma`` in ``[0, 0.99]`` and ``lam`` in
    ``[0, 1]`` unless fixed here (a replayed case keeps its own).

    Tolerance per entry: the oracle's rounding, the smaller of :func:`gae_rounding` and
    :func:`gae_rounding_entries` at that entry, plus the same for the
    callable's own rounding at the judged precision (``dtype=`` or the output's dtype,
    :func:`verify.tolerances.precision_factor`), or ``atol`` in its place; plus ``rtol |A|``.
    ``xp`` hands the callable arrays of that namespace (``jax.numpy``, ``torch``...).

    Raises:
        CheckArgumentError: an unknown convention, a combination that cannot express the
            declared truncation, or a bad tolerance, ``dtype``, ``cases`` or ``seed``.
    """
    fn = guard(fn)
    conv = _convention(layout, truncation, flags, values, output)
    fixed_gamma = _unit_interval("gamma", gamma)
    fixed_lam = _unit_interval("lam", lam)
    time_major = conv.layout == "time-major"

    def evaluate_case(ro: _Rollout, index: int, io: UserIO) -> list[Compared]:
        want = _oracle(ro, conv)
        args = [io.arg(x) for x in conv.args(ro)]
        got = io.out(fn(*args, ro.gamma, ro.lam))
        shape = want.T.shape if time_major else want.shape
        if got.shape != shape:
            raise CaseFailure(f"the callable returned shape {got.shape}, expected {shape} "
                              f"{'(T, B)' if time_major else '(B, T)'}")
        if time_major:
            got = got.T
        seen = conv.next_seen(ro)
        ours = np.minimum(
            gae_rounding(ro.rewards, ro.values, seen, ro.terminated, ro.gamma),
            gae_rounding_entries(ro.rewards, ro.values, seen, ro.terminated, ro.truncated,
                                 ro.gamma, ro.lam),
        )
        if conv.output == "returns":  # one more addition, A_t + values_t
            ours += EPS * float(np.max(np.abs(want - ro.values) + np.abs(ro.values),
                                       initial=0.0))
        name = "R" if conv.output == "returns" else "A"
        return [Compared(
            got, want, ours, ours,
            label=lambda idx: f"{name}[b={idx[0]}, t={idx[1]}]",
            context=lambda idx: f" ({_step_kind(ro, idx[0], idx[1])})",
        )]

    def cost(ro: _Rollout) -> tuple[float, str] | None:
        if conv.truncation == "bootstrap":
            return None
        ours = _oracle(ro, conv)
        right = conv.finish(ro, gae_recursion(ro.rewards, ro.values, ro.next_values,
                                              ro.terminated, ro.truncated, ro.gamma, ro.lam))
        diff = np.abs(ours - right)
        if diff.size == 0 or float(np.max(diff)) == 0.0:
            return None
        b, t = (int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))
        return float(diff[b, t]), (
            f"{'R' if conv.output == 'returns' else 'A'}[b={b}, t={t}] = {ours[b, t]:.6g} "
            f"under the convention, {right[b, t]:.6g} "
            f"bootstrapping the truncation ({_step_kind(ro, b, t)})"
        )

    default = conv == _Convention("batch-major", "bootstrap", "terminated-truncated",
                                  "next_values", "advantages")
    decl = Declaration(
        name="gae",
        reference="proofs_notes/gae.md#definition: delta_t = r_t + gamma (1 - terminated_t) "
        "V(s_{t+1}) - V(s_t); A_t = delta_t + gamma lam (1 - done_t) A_{t+1}, A_T = 0",
        generate=lambda rng, size: _generate(rng, size, fixed_gamma, fixed_lam),
        to_arrays=_to_arrays,
        from_arrays=_from_arrays,
        evaluate=evaluate_case,
        alternatives=lambda: _planted_alternatives(conv),
        convention=None if default else conv.describe(),
        convention_cost=cost,
    )
    return run_check(decl, cases=cases, seed=seed, replay=replay, atol=atol, rtol=rtol,
                     dtype=dtype, xp=xp)
