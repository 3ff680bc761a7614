"""Conformance checks for value targets: TD(lambda) returns, n-step returns and V-trace
(``proofs_notes/returns.md``), declared over the runner of :mod:`verify.checks._core`.

``check_td_lambda`` and ``check_nstep_returns`` take the conventions of :func:`check_gae`
(``layout``, ``truncation``, ``flags``, ``values``) and generate the same rollouts: episodes
that end by termination, by truncation or both, and rollouts cut in mid-episode.  Their
oracles are computed by routes of their own (the return recursion of SPEC section 9 and the
explicit n-step sum), which the tests tie to GAE (``G = A + V``).

``check_vtrace`` checks V-trace (Espeholt et al. 2018, eq. 1) with ``rho_bar`` and
``c_bar``, in the signature of the IMPALA reference code: time-major ``log_rhos``,
``discounts``, ``rewards``, ``values`` ``(T, B)`` and a ``bootstrap_value`` ``(B,)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

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
    ladder_count,
    run_check,
)
from verify.checks.gae import (
    BoolArray,
    _Convention,
    _convention,
    _from_arrays,
    _generate,
    _Rollout,
    _step_kind,
    _to_arrays,
    _unit_interval,
    gae_rounding,
    gae_zero_advantage,
)
from verify.tolerances import EPS

__all__ = [
    "check_nstep_returns",
    "check_td_lambda",
    "check_vtrace",
    "nstep_returns",
    "td_lambda_returns",
    "vtrace_finite_sum",
    "vtrace_recursion",
]


# --------------------------------------------------------------------------- oracles


def td_lambda_returns(
    rewards: FloatArray,
    next_values: FloatArray,
    terminated: BoolArray,
    truncated: BoolArray,
    gamma: float,
    lam: float,
) -> FloatArray:
    """TD(lambda) returns by the return recursion (SPEC section 9,
    ``proofs_notes/returns.md#td-lambda``), all arrays ``(B, T)``::

        G_t = r_t + gamma (1 - terminated_t) [(1 - l_t) next_values_t + l_t G_{t+1}],
        l_t = lam if step t neither ended its episode nor is the rollout's last, else 0.

    A truncated step bootstraps through ``next_values_t`` (the final observation's value); the
    rollout's last step likewise."""
    n_envs, n_steps = rewards.shape
    done = terminated | truncated
    out = np.zeros((n_envs, n_steps))
    after = np.zeros(n_envs)
    for t in range(n_steps - 1, -1, -1):
        trace = np.where(done[:, t] | (t == n_steps - 1), 0.0, lam)
        future = (1.0 - trace) * next_values[:, t] + trace * after
        after = rewards[:, t] + gamma * np.where(terminated[:, t], 0.0, future)
        out[:, t] = after
    return out


def nstep_returns(
    rewards: FloatArray,
    next_values: FloatArray,
    terminated: BoolArray,
    truncated: BoolArray,
    gamma: float,
    n: int,
) -> FloatArray:
    """n-step returns by the explicit sum (``proofs_notes/returns.md#n-step``), arrays
    ``(B, T)``::

        G_t = sum_{k<m} gamma^k r_{t+k} + gamma^m (1 - terminated_{t+m-1}) next_values_{t+m-1},

    ``m = min(n, L_t + 1)`` with ``t + L_t`` the last step of ``t``'s episode segment in the
    rollout (its end, or the rollout's last step)."""
    n_envs, n_steps = rewards.shape
    done = terminated | truncated
    out = np.zeros((n_envs, n_steps))
    for b in range(n_envs):
        for t in range(n_steps):
            total, weight, k = 0.0, 1.0, t
            while True:
                total += weight * rewards[b, k]
                weight *= gamma
                if k - t + 1 == n or done[b, k] or k == n_steps - 1:
                    break
                k += 1
            if not terminated[b, k]:
                total += weight * next_values[b, k]
            out[b, t] = total
    return out


def vtrace_finite_sum(
    log_rhos: FloatArray,
    discounts: FloatArray,
    rewards: FloatArray,
    values: FloatArray,
    bootstrap_value: FloatArray,
    rho_bar: float,
    c_bar: float,
    lam: float = 1.0,
) -> tuple[FloatArray, FloatArray]:
    """V-trace targets and policy-gradient advantages by eq. 1 of Espeholt et al. (2018),
    time-major ``(T, B)`` (``proofs_notes/returns.md#v-trace``)::

        v_s = V_s + sum_{t>=s} (prod_{i=s}^{t-1} d_i c_i) rho_t delta_t,
        delta_t = r_t + d_t V_{t+1} - V_t,   V_T = bootstrap_value,
        rho_t = min(rho_bar, exp(log_rhos_t)),  c_i = lam min(c_bar, exp(log_rhos_i)),
        pg_s = rho_s (r_s + d_s v_{s+1} - V_s),  v_T = bootstrap_value,

    with ``d_t = discounts_t`` (``gamma``, or 0 after a termination).  Returns ``(vs, pg)``."""
    n_steps = rewards.shape[0]
    ratio = np.exp(log_rhos)
    rho = np.minimum(rho_bar, ratio)
    c = lam * np.minimum(c_bar, ratio)
    nxt = np.concatenate([values[1:], bootstrap_value[None, :]], axis=0)
    delta = rho * (rewards + discounts * nxt - values)
    vs = values.copy()
    for s in range(n_steps):
        weight = np.ones(rewards.shape[1])
        for t in range(s, n_steps):
            vs[s] += weight * delta[t]
            weight = weight * discounts[t] * c[t]
    vs_next = np.concatenate([vs[1:], bootstrap_value[None, :]], axis=0)
    pg = rho * (rewards + discounts * vs_next - values)
    return vs, pg


def vtrace_recursion(
    log_rhos: FloatArray,
    discounts: FloatArray,
    rewards: FloatArray,
    values: FloatArray,
    bootstrap_value: FloatArray,
    rho_bar: float,
    c_bar: float,
    lam: float = 1.0,
) -> tuple[FloatArray, FloatArray]:
    """The same as :func:`vtrace_finite_sum` by the backward recursion
    ``v_s - V_s = rho_s delta_s + d_s c_s (v_{s+1} - V_{s+1})``, ``v_T - V_T = 0``."""
    ratio = np.exp(log_rhos)
    rho = np.minimum(rho_bar, ratio)
    c = lam * np.minimum(c_bar, ratio)
    nxt = np.concatenate([values[1:], bootstrap_value[None, :]], axis=0)
    delta = rho * (rewards + discounts * nxt - values)
    diff = np.zeros_like(values)
    after = np.zeros(values.shape[1])
    for s in range(values.shape[0] - 1, -1, -1):
        after = delta[s] + discounts[s] * c[s] * after
        diff[s] = after
    vs = values + diff
    vs_next = np.concatenate([vs[1:], bootstrap_value[None, :]], axis=0)
    return vs, rho * (rewards + discounts * vs_next - values)


# --------------------------------------------------------------------------- td / n-step


def _return_convention(layout: str, truncation: str, flags: str, values: str) -> _Convention:
    return _convention(layout, truncation, flags, values, "returns")


def _seen(ro: _Rollout, conv: _Convention) -> tuple[FloatArray, BoolArray, BoolArray]:
    """``(next_values, terminated, truncated)`` as the declared convention's oracle reads
    them."""
    term, trunc = conv.flags_seen(ro)
    return conv.next_seen(ro), term, trunc


def _td_oracle(ro: _Rollout, conv: _Convention) -> FloatArray:
    if conv.truncation == "zero-advantage":
        adv = gae_zero_advantage(ro.rewards, ro.values, conv.next_seen(ro), ro.terminated,
                                 ro.truncated, ro.gamma, ro.lam)
        out: FloatArray = adv + ro.values
        return out
    nv, term, trunc = _seen(ro, conv)
    return td_lambda_returns(ro.rewards, nv, term, trunc, ro.gamma, ro.lam)


def _returns_rounding(ro: _Rollout, conv: _Convention, want: FloatArray) -> float:
    """:func:`verify.checks.gae.gae_rounding` plus one addition at the scale of the returns
    and values (``proofs_notes/returns.md#rounding``)."""
    ours = gae_rounding(ro.rewards, ro.values, conv.next_seen(ro), ro.terminated, ro.gamma)
    scale = float(np.max(np.abs(want) + np.abs(ro.values), initial=0.0))
    return ours + EPS * scale


def _known(area: str, check: str) -> list[Any]:
    from verify.checks.planted import known_bugs  # the catalogue imports this module

    del area
    return list(known_bugs(check))


def _bound(oracle: Callable[[Any, _Convention], FloatArray], conv: _Convention,
           ) -> Callable[[Any], list[FloatArray]]:
    """``instance -> [oracle(instance, conv)]``."""
    return lambda inst: [oracle(inst, conv)]


def _convention_alternatives(
    conv: _Convention, oracle: Callable[[_Rollout, _Convention], FloatArray],
    truncations: tuple[str, ...],
) -> list[Alternative]:
    meaning = {
        "bootstrap": "a truncated step bootstraps through the final observation's value",
        "as-termination": "a truncated step does not bootstrap, like a termination",
        "zero-advantage": "a truncated step's return is its own value",
    }
    out: list[Alternative] = []
    for other in truncations:
        if other == conv.truncation:
            continue
        try:
            alt = _return_convention(conv.layout, other, conv.flags, conv.values)
        except CheckArgumentError:
            continue
        out.append(Alternative(f"truncation-{other}", meaning[other],
                               _bound(oracle, alt), declare=f"truncation={other!r}"))
    return out


def _cost(conv: _Convention, oracle: Callable[[Any, _Convention], FloatArray],
          rollout_of: Callable[[Any], _Rollout] = lambda x: x,
          ) -> Callable[[Any], tuple[float, str] | None]:
    right_conv = _Convention("batch-major", "bootstrap", "terminated-truncated",
                             "next_values", "returns")

    def cost(inst: Any) -> tuple[float, str] | None:
        if conv.truncation == "bootstrap":
            return None
        ro = rollout_of(inst)
        ours, right = oracle(inst, conv), oracle(inst, right_conv)
        diff = np.abs(ours - right)
        if diff.size == 0 or float(np.max(diff)) == 0.0:
            return None
        b, t = (int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))
        return float(diff[b, t]), (
            f"G[b={b}, t={t}] = {ours[b, t]:.6g} under the convention, {right[b, t]:.6g} "
            f"bootstrapping the truncation ({_step_kind(ro, b, t)})"
        )

    return cost


def _compare_returns(ro: _Rollout, conv: _Convention, want: FloatArray, got: FloatArray,
                     extra: str = "") -> list[Compared]:
    time_major = conv.layout == "time-major"
    shape = want.T.shape if time_major else want.shape
    if got.shape != shape:
        raise CaseFailure(f"the callable returned shape {got.shape}, expected {shape} "
                          f"{'(T, B)' if time_major else '(B, T)'}")
    if time_major:
        got = got.T
    ours = _returns_rounding(ro, conv, want)
    return [Compared(
        got, want, ours, ours,
        label=lambda idx: f"G[b={idx[0]}, t={idx[1]}]",
        context=lambda idx: f" ({_step_kind(ro, idx[0], idx[1])}{extra})",
    )]


@dataclass(frozen=True)
class _Padded:
    """A rollout whose rows are single episodes padded to ``T`` steps: ``filled[b, t]`` is
    True on the episode's steps, False on the padding after it."""

    rollout: _Rollout
    filled: BoolArray


def _pad(ro: _Rollout, rng: np.random.Generator) -> _Padded:
    """Make each row one episode of ``L`` steps, ``L`` uniform in ``1..T``, padded to ``T``:
    no episode end before step ``L - 1``; for ``L < T`` step ``L - 1`` terminates,
    truncates or both (a third each) and is followed by padding (garbage rewards and values,
    both flags ``False``, as a zero-filled episode buffer holds them); for ``L = T`` the row
    keeps its last step as generated (it may be cut by the rollout's end)."""
    n_envs, n_steps = ro.rewards.shape
    rewards, values = ro.rewards.copy(), ro.values.copy()
    next_values = ro.next_values.copy()
    term, trunc = ro.terminated.copy(), ro.truncated.copy()
    filled = np.ones((n_envs, n_steps), dtype=np.bool_)
    for b in range(n_envs):
        length = int(rng.integers(1, n_steps + 1))
        term[b, :length - 1] = False
        trunc[b, :length - 1] = False
        next_values[b, :length - 1] = values[b, 1:length]
        if length == n_steps:
            continue
        kind = int(rng.integers(3))
        term[b, length - 1] = kind in (0, 2)
        trunc[b, length - 1] = kind in (1, 2)
        next_values[b, length - 1] = rng.uniform(-50.0, 50.0)
        filled[b, length:] = False
        pad = n_steps - length
        rewards[b, length:] = rng.uniform(-1.0, 1.0, pad)
        values[b, length:] = rng.uniform(-50.0, 50.0, pad)
        next_values[b, length:] = rng.uniform(-50.0, 50.0, pad)
        term[b, length:] = False
        trunc[b, length:] = False
    padded = _Rollout(rewards, values, next_values, term, trunc, ro.gamma, ro.lam,
                      ro.last_values, ro.first_flags)
    return _Padded(padded, filled)


def _mask_from_arrays(a: Mapping[str, npt.NDArray[Any]], key: str,
                      ) -> tuple[_Rollout, BoolArray]:
    if key not in a:
        raise ModelError(f"a {'padded' if key == 'filled' else 'per-agent'} return case "
                         f"needs the array {key!r}, which is missing")
    ro = _from_arrays(a)
    mask = np.array(a[key], dtype=np.bool_)
    if mask.shape != ro.rewards.shape:
        raise ModelError(f"{key} has shape {mask.shape}, expected {ro.rewards.shape}")
    return ro, mask


def _padded_from_arrays(a: Mapping[str, npt.NDArray[Any]]) -> _Padded:
    return _Padded(*_mask_from_arrays(a, "filled"))


def _dead_from_arrays(a: Mapping[str, npt.NDArray[Any]]) -> _Dead:
    return _Dead(*_mask_from_arrays(a, "active"))


def _only_filled(ro: _Rollout, compared: list[Compared], filled: BoolArray,
                 extra: str = "", kind: str = "filled") -> list[Compared]:
    """The comparison of :func:`_compare_returns` restricted to the entries where ``filled``
    holds: the filled steps of a padded episode buffer (``proofs_notes/returns.md#padding``)
    or an agent's active steps (``kind="active"``, ``proofs_notes/returns.md#active``)."""
    c = compared[0]
    where = np.argwhere(filled)
    own = np.broadcast_to(np.asarray(c.own), filled.shape)[filled]
    what = "episode step" if kind == "filled" else "active step"
    return [Compared(
        c.got[filled], c.want[filled], own, own,
        label=lambda idx: f"G[b={where[idx[0]][0]}, t={where[idx[0]][1]}]",
        context=lambda idx: (f" ({what}, {int(filled[where[idx[0]][0]].sum())} of "
                             f"{filled.shape[1]} {kind}; "
                             f"{_step_kind(ro, *(int(i) for i in where[idx[0]]))}{extra})"),
    )]


@dataclass(frozen=True)
class _Dead:
    """A rollout of per-agent rows in which an agent may die: ``active[b, t]`` is False from
    the step after its death to its episode's end (``proofs_notes/returns.md#active``)."""

    rollout: _Rollout
    active: BoolArray

    def deaths(self) -> BoolArray:
        """``(B, T)``: True at an agent's last active step before it dies, i.e. ``active_t``
        and not ``active_{t+1}``."""
        out = np.zeros_like(self.active)
        out[:, :-1] = self.active[:, :-1] & ~self.active[:, 1:]
        return out

    def as_terminated(self) -> _Rollout:
        """The rollout whose oracle the active entries follow: each death terminates."""
        ro = self.rollout
        return _Rollout(ro.rewards, ro.values, ro.next_values, ro.terminated | self.deaths(),
                        ro.truncated, ro.gamma, ro.lam, ro.last_values, ro.first_flags)


def _kill(ro: _Rollout, rng: np.random.Generator) -> _Dead:
    """In each row, with probability 1/2, let the agent die at a step ``d`` drawn uniformly
    among those that end no episode and are not the rollout's last: ``active`` is False on
    ``d + 1 .. e``, ``e`` the end of ``d``'s episode segment (its done step or ``T - 1``).
    The inactive steps hold garbage rewards and values (consistent with ``next_values``
    inside the episode, as a buffer stores whatever the dead agent's slot holds); the
    flags are unchanged."""
    n_envs, n_steps = ro.rewards.shape
    rewards, values = ro.rewards.copy(), ro.values.copy()
    next_values = ro.next_values.copy()
    done = ro.terminated | ro.truncated
    active = np.ones((n_envs, n_steps), dtype=np.bool_)
    for b in range(n_envs):
        candidates = [t for t in range(n_steps - 1) if not done[b, t]]
        if not candidates or rng.random() < 0.5:
            continue
        d = candidates[int(rng.integers(len(candidates)))]
        ends = [t for t in range(d + 1, n_steps) if done[b, t]]
        e = ends[0] if ends else n_steps - 1
        active[b, d + 1:e + 1] = False
        rewards[b, d + 1:e + 1] = rng.uniform(-1.0, 1.0, e - d)
        values[b, d + 1:e + 1] = rng.uniform(-50.0, 50.0, e - d)
        next_values[b, d:e] = values[b, d + 1:e + 1]
    dead = _Rollout(rewards, values, next_values, ro.terminated, ro.truncated, ro.gamma,
                    ro.lam, ro.last_values, ro.first_flags)
    return _Dead(dead, active)


def check_td_lambda(
    fn: Callable[..., npt.ArrayLike],
    *,
    layout: str = "batch-major",
    truncation: str = "bootstrap",
    flags: str = "terminated-truncated",
    values: str = "next_values",
    padding: bool = False,
    active: bool = False,
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
    """Check a TD(lambda) return routine (value targets) against the return recursion of
    SPEC section 9 (``proofs_notes/returns.md#td-lambda``)::

        G_t = r_t + gamma (1 - terminated_t) [(1 - lam) V(s_{t+1}) + lam G_{t+1}],

    with the trace cut (``lam`` replaced by 0) at ``done_t = terminated_t or truncated_t`` and
    at the rollout's last step; a truncation and the rollout's end bootstrap through the value
    of the observation that followed.  ``lam = 0`` gives one-step targets, ``lam = 1``
    Monte-Carlo returns bootstrapped at the cuts; ``G_t - V(s_t)`` is GAE.

    The callable is called exactly as under :func:`verify.checks.check_gae` with the same
    ``layout``, ``truncation``, ``flags`` and ``values``:
    ``fn(rewards, *value_arrays, *flag_arrays, gamma, lam)`` returning ``G`` in the declared
    layout.  The rollouts are those of ``check_gae`` (``B`` in ``1..4``, ``T`` in ``1..12``,
    both kinds of end, ends at the last step); ``gamma`` in ``[0, 0.99]`` and ``lam`` in
    ``[0, 1]`` unless fixed.  A declared ``truncation="as-termination"`` (or
    ``"zero-advantage"``) is checked exactly, and ``report.convention_cost`` states how far it
    is from the bootstrap targets.

    With ``padding=True`` each row is one episode padded to ``T`` steps, as in an episode
    buffer (pymarl, EPyMARL): the episode's last step terminates or truncates, the padded
    steps hold garbage rewards and values with both flags ``False``, and the callable also
    receives ``filled`` (float, 1 on the episode's steps, 0 on the padding) after the flag
    arrays.  Only the filled entries are compared.

    With ``active=True`` each row is one agent's trajectory in which the agent may die
    mid-episode (``proofs_notes/returns.md#active``): after its last active step ``d`` its
    rewards and values are garbage until its episode's end, and the callable also receives
    ``active`` (float, 1 while the agent is alive) after the flag arrays.  The death ends the
    agent's return as a termination, ``G_d = r_d``, and only the active entries are
    compared.  ``padding`` and ``active`` are not combined.

    Tolerance per entry: :func:`verify.checks.gae.gae_rounding` plus one rounding at the
    returns' scale, for the oracle and again (at the judged precision) for the callable, or
    ``atol``; plus ``rtol |G|``.

    Raises:
        CheckArgumentError: an unknown convention, a combination that cannot express the
            declared truncation, or a bad tolerance, ``dtype``, ``cases`` or ``seed``.
    """
    fn = guard(fn)
    conv = _return_convention(layout, truncation, flags, values)
    fixed_gamma = _unit_interval("gamma", gamma)
    fixed_lam = _unit_interval("lam", lam)
    if padding and active:
        raise CheckArgumentError("padding = True and active = True are not combined; "
                                 "check each on its own")

    def split(inst: Any) -> tuple[_Rollout, BoolArray | None]:
        if padding:
            return inst.rollout, inst.filled
        if active:
            return inst.rollout, inst.active
        return inst, None

    def judged(inst: Any) -> _Rollout:
        """The rollout the oracle reads: an agent's death terminates its return."""
        return inst.as_terminated() if active else split(inst)[0]

    def restrict(inst: Any, full: FloatArray) -> FloatArray:
        filled = split(inst)[1]
        if filled is None:
            return full
        out: FloatArray = full[filled]
        return out

    def oracle(inst: Any, cv: _Convention) -> FloatArray:
        return restrict(inst, _td_oracle(judged(inst), cv))

    def evaluate_case(inst: Any, index: int, io: UserIO) -> list[Compared]:
        ro, filled = split(inst)
        want = _td_oracle(judged(inst), conv)
        arrays = conv.args(ro)
        if filled is not None:
            fill = filled.astype(np.float64)
            arrays.append(fill.T if conv.layout == "time-major" else fill)
        args = [io.arg(x) for x in arrays]
        compared = _compare_returns(ro, conv, want, io.out(fn(*args, ro.gamma, ro.lam)))
        if filled is None:
            return compared
        return _only_filled(ro, compared, filled, kind="active" if active else "filled")

    def alternatives() -> list[Alternative]:
        out = _convention_alternatives(conv, oracle, ("bootstrap", "as-termination",
                                                      "zero-advantage"))
        for m in _known("returns", "td-lambda"):
            def outputs(inst: Any, f: Any = m.fn) -> list[FloatArray]:
                ro = split(inst)[0]
                nv, term, trunc = _seen(ro, conv)
                return [restrict(inst, np.asarray(
                    f(ro.rewards, ro.values, nv, term, trunc, ro.gamma, ro.lam),
                    dtype=np.float64))]
            out.append(Alternative(m.name, m.bug, outputs))
        return out

    def generate(rng: np.random.Generator, size: float) -> Any:
        ro = _generate(rng, size, fixed_gamma, fixed_lam)
        if active:
            return _kill(ro, rng)
        return _pad(ro, rng) if padding else ro

    default = conv == _Convention("batch-major", "bootstrap", "terminated-truncated",
                                  "next_values", "returns")
    decl = Declaration(
        name="td-lambda",
        reference="proofs_notes/returns.md#td-lambda: G_t = r_t + gamma (1 - terminated_t) "
        "[(1 - lam) V(s_{t+1}) + lam G_{t+1}], trace cut at done_t and the rollout's end",
        generate=generate,
        to_arrays=(lambda c: {**_to_arrays(c.rollout), "filled": c.filled}) if padding
        else (lambda c: {**_to_arrays(c.rollout), "active": c.active}) if active
        else _to_arrays,
        from_arrays=_padded_from_arrays if padding else _dead_from_arrays if active
        else _from_arrays,
        evaluate=evaluate_case,
        alternatives=alternatives,
        convention=None if default and not (padding or active) else ", ".join(
            ([] if default else [conv.describe().replace(", output='returns'", "")])
            + (["padding=True"] if padding else []) + (["active=True"] if active else [])),
        convention_cost=None if padding or active else _cost(conv, _td_oracle),
    )
    return run_check(decl, cases=cases, seed=seed, replay=replay, atol=atol, rtol=rtol,
                     dtype=dtype, xp=xp)


MAX_N = 6
"""n is drawn in ``1..MAX_N`` (beyond the rollout's length as often as within it)."""


@dataclass(frozen=True)
class _NStep:
    """An n-step case; ``filled`` is the episode buffer's mask under ``padding=True``,
    ``active`` the agent's under ``active=True``."""

    rollout: _Rollout
    n: int
    filled: BoolArray | None = None
    active: BoolArray | None = None

    def mask(self) -> BoolArray | None:
        """The entries compared, or ``None`` for all."""
        return self.filled if self.filled is not None else self.active

    def judged(self) -> _Rollout:
        """The rollout the oracle reads: an agent's death terminates its return."""
        if self.active is None:
            return self.rollout
        return _Dead(self.rollout, self.active).as_terminated()


def _nstep_to_arrays(c: _NStep) -> Mapping[str, npt.NDArray[Any]]:
    out = {**_to_arrays(c.rollout), "n": np.array(c.n, dtype=np.int64)}
    if c.active is not None:
        return {**out, "active": c.active}
    return out if c.filled is None else {**out, "filled": c.filled}


def _nstep_from_arrays(a: Mapping[str, npt.NDArray[Any]]) -> _NStep:
    if "n" not in a:
        raise ModelError("an n-step case needs the array 'n', which is missing")
    if "active" in a:
        ro, active = _mask_from_arrays(a, "active")
        return _NStep(ro, int(a["n"]), active=active)
    if "filled" not in a:
        return _NStep(_from_arrays(a), int(a["n"]))
    p = _padded_from_arrays(a)
    return _NStep(p.rollout, int(a["n"]), p.filled)


def _nstep_full(c: _NStep, conv: _Convention) -> FloatArray:
    ro = c.judged()
    nv, term, trunc = _seen(ro, conv)
    return nstep_returns(ro.rewards, nv, term, trunc, ro.gamma, c.n)


def _nstep_oracle(c: _NStep, conv: _Convention) -> FloatArray:
    """The explicit sum, on the filled (or active) entries only under ``padding=True``
    (``active=True``)."""
    full = _nstep_full(c, conv)
    mask = c.mask()
    if mask is None:
        return full
    out: FloatArray = full[mask]
    return out


def check_nstep_returns(
    fn: Callable[..., npt.ArrayLike],
    *,
    n: int | None = None,
    layout: str = "batch-major",
    truncation: str = "bootstrap",
    flags: str = "terminated-truncated",
    values: str = "next_values",
    padding: bool = False,
    active: bool = False,
    gamma: float | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    dtype: str | None = None,
    xp: Any = None,
    cases: int = 50,
    seed: int = 0,
    replay: Case | None = None,
) -> CheckReport:
    """Check an n-step return routine against the explicit sum
    (``proofs_notes/returns.md#n-step``)::

        G_t = sum_{k<m} gamma^k r_{t+k} + gamma^m (1 - terminated_{t+m-1}) V(s_{t+m}),

    ``m = min(n, steps left in t's episode segment within the rollout)``: the window stops
    at a termination (no bootstrap), at a truncation and at the rollout's end (bootstrap
    through the value of the observation that followed).

    The callable is called as ``fn(rewards, *value_arrays, *flag_arrays, gamma, n)``, with the
    arrays of :func:`verify.checks.check_gae` under the same ``layout``, ``truncation``
    (``"bootstrap"`` or ``"as-termination"``), ``flags`` and ``values``, and ``n`` a Python
    int (drawn in ``1..6`` per case unless fixed here), returning ``G`` in the declared
    layout.  Rollouts and tolerances as :func:`check_td_lambda`.

    With ``padding=True`` the cases are the padded episode buffers of
    ``check_td_lambda(padding=True)`` (``proofs_notes/returns.md#padding``): each row is one
    episode whose last step terminates, truncates or both, followed by garbage padding; the
    callable receives ``filled`` (float, 1 on the episode's steps) after the flag arrays,
    ``fn(rewards, *value_arrays, *flag_arrays, filled, gamma, n)``, and only the filled
    entries are compared.  A window therefore never reaches the padding: it stops at the
    episode's last step and bootstraps there unless that step terminates.

    With ``active=True`` the cases are the per-agent rows of ``check_td_lambda(active=True)``
    (``proofs_notes/returns.md#active``), the callable receives ``active`` in the place of
    ``filled``, a death ends the window as a termination, and only the active entries are
    compared.

    Raises:
        CheckArgumentError: an unknown or unsupported convention, ``n < 1``, or a bad
            tolerance, ``dtype``, ``cases`` or ``seed``.
    """
    fn = guard(fn)
    if truncation == "zero-advantage":
        raise CheckArgumentError(
            "truncation = 'zero-advantage' is a GAE convention; an n-step return takes "
            "'bootstrap' or 'as-termination'"
        )
    conv = _return_convention(layout, truncation, flags, values)
    fixed_gamma = _unit_interval("gamma", gamma)
    if padding and active:
        raise CheckArgumentError("padding = True and active = True are not combined; "
                                 "check each on its own")
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer))
                          or n < 1):
        raise CheckArgumentError(f"n = {n!r}, expected an integer >= 1 or None")

    def generate(rng: np.random.Generator, size: float) -> _NStep:
        ro = _generate(rng, size, fixed_gamma, 1.0)
        steps = int(n) if n is not None else ladder_count(rng, 1.0, MAX_N)
        if active:
            dead = _kill(ro, rng)
            return _NStep(dead.rollout, steps, active=dead.active)
        if not padding:
            return _NStep(ro, steps)
        p = _pad(ro, rng)
        return _NStep(p.rollout, steps, p.filled)

    def evaluate_case(c: _NStep, index: int, io: UserIO) -> list[Compared]:
        want = _nstep_full(c, conv)
        arrays = conv.args(c.rollout)
        mask = c.mask()
        if mask is not None:
            fill = mask.astype(np.float64)
            arrays.append(fill.T if conv.layout == "time-major" else fill)
        args = [io.arg(x) for x in arrays]
        got = io.out(fn(*args, c.rollout.gamma, c.n))
        compared = _compare_returns(c.rollout, conv, want, got, f", n={c.n}")
        if mask is None:
            return compared
        return _only_filled(c.rollout, compared, mask, f", n={c.n}",
                            kind="active" if active else "filled")

    def alternatives() -> list[Alternative]:
        out: list[Alternative] = []
        truncs = [t for t in ("bootstrap", "as-termination") if t != conv.truncation]
        for other in truncs:
            try:
                alt = _return_convention(conv.layout, other, conv.flags, conv.values)
            except CheckArgumentError:
                continue
            out.append(Alternative(f"truncation-{other}", f"truncation={other!r}",
                                   _bound(_nstep_oracle, alt),
                                   declare=f"truncation={other!r}"))
        for m in _known("returns", "nstep-returns"):
            def outputs(c: _NStep, f: Any = m.fn) -> list[FloatArray]:
                nv, term, trunc = _seen(c.rollout, conv)
                full = np.asarray(f(c.rollout.rewards, c.rollout.values, nv, term, trunc,
                                    c.rollout.gamma, c.n), dtype=np.float64)
                mask = c.mask()
                return [full if mask is None else full[mask]]
            out.append(Alternative(m.name, m.bug, outputs))
        return out

    default = conv == _Convention("batch-major", "bootstrap", "terminated-truncated",
                                  "next_values", "returns")
    decl = Declaration(
        name="nstep-returns",
        reference="proofs_notes/returns.md#n-step: G_t = sum_{k<m} gamma^k r_{t+k} + "
        "gamma^m (1 - terminated_{t+m-1}) V(s_{t+m}), m = min(n, steps left in the segment)",
        generate=generate,
        to_arrays=_nstep_to_arrays,
        from_arrays=_nstep_from_arrays,
        evaluate=evaluate_case,
        alternatives=alternatives,
        convention=None if default and not (padding or active) else ", ".join(
            ([] if default else [conv.describe().replace(", output='returns'", "")])
            + (["padding=True"] if padding else []) + (["active=True"] if active else [])),
        convention_cost=None if padding or active
        else _cost(conv, _nstep_oracle, lambda c: c.rollout),
    )
    return run_check(decl, cases=cases, seed=seed, replay=replay, atol=atol, rtol=rtol,
                     dtype=dtype, xp=xp)


# --------------------------------------------------------------------------- V-trace

VTRACE_MAX_ENVS = 4
VTRACE_MAX_STEPS = 10
LOG_RHO_RANGE = 1.5
"""``log_rhos`` are drawn in ``[-1.5, 1.5]`` (ratios from 0.22 to 4.5, on both sides of
every threshold), one in five exactly 0 (on-policy steps)."""


@dataclass(frozen=True)
class _Trace:
    log_rhos: FloatArray
    discounts: FloatArray
    rewards: FloatArray
    values: FloatArray
    bootstrap_value: FloatArray
    rho_bar: float
    c_bar: float
    lam: float


def _vtrace_generate(rng: np.random.Generator, size: float, lam: float) -> _Trace:
    n_envs = ladder_count(rng, size, VTRACE_MAX_ENVS)
    n_steps = ladder_count(rng, size, VTRACE_MAX_STEPS)
    shape = (n_steps, n_envs)
    log_rhos = rng.uniform(-LOG_RHO_RANGE, LOG_RHO_RANGE, shape)
    log_rhos[rng.random(shape) < 0.2] = 0.0
    gamma = 0.0 if rng.random() < 0.1 else float(rng.uniform(0.0, 0.99))
    discounts = np.where(rng.random(shape) < 0.15, 0.0, gamma)
    rewards = rng.uniform(-1.0, 1.0, shape)
    values = rng.uniform(-50.0, 50.0, shape)
    boot = rng.uniform(-50.0, 50.0, n_envs)
    u = rng.random()
    rho_bar = 1.0 if u < 0.4 else float(rng.uniform(0.5, 3.0))
    c_bar = 1.0 if rng.random() < 0.4 else float(rng.uniform(0.3, 1.0)) * rho_bar
    return _Trace(log_rhos, discounts, rewards, values, boot, rho_bar, c_bar, lam)


def _vtrace_to_arrays(tr: _Trace) -> Mapping[str, npt.NDArray[Any]]:
    return {"log_rhos": tr.log_rhos, "discounts": tr.discounts, "rewards": tr.rewards,
            "values": tr.values, "bootstrap_value": tr.bootstrap_value,
            "rho_bar": np.array(tr.rho_bar), "c_bar": np.array(tr.c_bar),
            "lam": np.array(tr.lam)}


def _vtrace_from_arrays(a: Mapping[str, npt.NDArray[Any]]) -> _Trace:
    names = ("log_rhos", "discounts", "rewards", "values", "bootstrap_value", "rho_bar",
             "c_bar", "lam")
    missing = [k for k in names if k not in a]
    if missing:
        raise ModelError(f"a vtrace case needs arrays {missing}, which are missing")
    shape = np.shape(a["rewards"])
    if len(shape) != 2:
        raise ModelError(f"rewards has shape {shape}, expected (T, B)")
    for k in names[:4]:
        if np.shape(a[k]) != shape:
            raise ModelError(f"{k} has shape {np.shape(a[k])}, expected {shape}")
    if np.shape(a["bootstrap_value"]) != shape[1:]:
        raise ModelError(f"bootstrap_value has shape {np.shape(a['bootstrap_value'])}, "
                         f"expected {shape[1:]}")
    f = [np.array(a[k], dtype=np.float64) for k in names[:5]]
    return _Trace(f[0], f[1], f[2], f[3], f[4], float(a["rho_bar"]), float(a["c_bar"]),
                  float(a["lam"]))


def _vtrace_rounding(tr: _Trace) -> tuple[FloatArray, FloatArray]:
    """Per-entry bounds on the rounding of :func:`vtrace_finite_sum` (and of any routine
    that evaluates eq. 1 by the recursion), ``proofs_notes/returns.md#rounding``: entry
    ``s`` of ``vs`` is off by at most ``(2T + 6) eps S_s`` (allowed twice) with
    ``S_s = |V_s| + sum_t |w_{s,t}| rho_t m_t``, ``m_t = |r_t| + d_t |V_{t+1}| + |V_t|``,
    ``w`` the trace weights; the advantages by
    ``(2T + 10) eps (rho_s (|r_s| + |V_s| + d_s S_{s+1}))``."""
    n_steps = tr.rewards.shape[0]
    ratio = np.exp(tr.log_rhos)
    rho = np.minimum(tr.rho_bar, ratio)
    c = tr.lam * np.minimum(tr.c_bar, ratio)
    nxt = np.concatenate([tr.values[1:], tr.bootstrap_value[None, :]], axis=0)
    m = rho * (np.abs(tr.rewards) + tr.discounts * np.abs(nxt) + np.abs(tr.values))
    tail = np.zeros(tr.rewards.shape[1])
    scale = np.zeros_like(m)
    for s in range(n_steps - 1, -1, -1):
        tail = m[s] + tr.discounts[s] * c[s] * tail
        scale[s] = tail + np.abs(tr.values[s])
    k = 2.0 * (2 * n_steps + 6) * EPS
    nxt_scale = np.concatenate([scale[1:], np.abs(tr.bootstrap_value)[None, :]], axis=0)
    adv_scale = rho * (np.abs(tr.rewards) + np.abs(tr.values) + tr.discounts * nxt_scale)
    tiny = float(np.finfo(np.float64).tiny)
    k_pg = 2.0 * (2 * n_steps + 10) * EPS
    return k * scale + tiny, k_pg * adv_scale + tiny


def check_vtrace(
    fn: Callable[..., Any],
    *,
    output: str = "both",
    lam: float | None = None,
    layout: str = "time-major",
    atol: float | None = None,
    rtol: float | None = None,
    dtype: str | None = None,
    xp: Any = None,
    cases: int = 50,
    seed: int = 0,
    replay: Case | None = None,
) -> CheckReport:
    """Check a V-trace routine against eq. 1 of Espeholt et al. (2018)
    (``proofs_notes/returns.md#v-trace``)::

        v_s = V(x_s) + sum_{t>=s} (prod_{i=s}^{t-1} d_i c_i) rho_t (r_t + d_t V(x_{t+1}) - V(x_t)),
        rho_t = min(rho_bar, pi_t / mu_t),   c_i = lam min(c_bar, pi_i / mu_i),
        pg_s = rho_s (r_s + d_s v_{s+1} - V(x_s)),   v_T = V(x_T) = bootstrap_value,

    ``d_t`` the per-step discount (``gamma``, 0 after a termination).  The oracle is the
    finite sum; with ``log_rhos = 0`` and ``rho_bar, c_bar >= 1`` it reduces to the
    TD(lambda) returns of :func:`td_lambda_returns` (the second route, tested).

    The callable is called as ``fn(log_rhos, discounts, rewards, values, bootstrap_value,
    rho_bar, c_bar)`` (with ``lam`` appended when ``lam=`` is given here; otherwise
    ``lam = 1``, the IMPALA reference signature): ``log_rhos = log pi - log mu`` of the taken
    actions, all ``(T, B)`` (``(B, T)`` under ``layout="batch-major"``) and
    ``bootstrap_value`` ``(B,)``.  It returns ``(vs, pg_advantages)`` (``output="both"``)
    or ``vs`` alone (``output="vs"``).

    Instances: ``T`` in ``1..10``, ``B`` in ``1..4``, ratios in ``[0.22, 4.5]`` (one in five
    exactly 1), terminations in 15 % of the steps, ``rho_bar`` 1 or in ``[0.5, 3]``, ``c_bar``
    1 or in ``[0.3, 1] rho_bar``.

    Raises:
        CheckArgumentError: an unknown ``output`` or ``layout``, ``lam`` outside ``[0, 1]``,
            or a bad tolerance, ``dtype``, ``cases`` or ``seed``.
    """
    fn = guard(fn)
    if output not in ("both", "vs"):
        raise CheckArgumentError(f"output = {output!r}, expected 'both' or 'vs'")
    if layout not in ("time-major", "batch-major"):
        raise CheckArgumentError(f"layout = {layout!r}, expected 'time-major' or "
                                 "'batch-major'")
    fixed_lam = _unit_interval("lam", lam)
    batch_major = layout == "batch-major"

    def call(f: Callable[..., Any], tr: _Trace, io: UserIO | None) -> list[Any]:
        arrays = [tr.log_rhos, tr.discounts, tr.rewards, tr.values]
        if batch_major:
            arrays = [a.T for a in arrays]
        conv: Callable[[Any], Any] = (lambda x: x) if io is None else io.arg
        args = [conv(a) for a in arrays] + [conv(tr.bootstrap_value), tr.rho_bar, tr.c_bar]
        if fixed_lam is not None:
            args.append(tr.lam)
        out = f(*args)
        if output == "vs":
            return [out]
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise CaseFailure("the callable returned one value; output='both' expects "
                              "(vs, pg_advantages) (declare output='vs' to check vs alone)")
        return list(out)

    def canonical(outs: list[Any], io: UserIO | None, shape: tuple[int, ...]) -> list[FloatArray]:
        res = []
        for o, what in zip(outs, ("vs", "pg_advantages"), strict=False):
            a = io.out(o, what) if io is not None else np.asarray(o, dtype=np.float64)
            want_shape = shape[::-1] if batch_major else shape
            if a.shape != want_shape:
                raise CaseFailure(f"{what} has shape {a.shape}, expected {want_shape}")
            res.append(a.T if batch_major else a)
        return res

    def evaluate_case(tr: _Trace, index: int, io: UserIO) -> list[Compared]:
        vs, pg = vtrace_finite_sum(tr.log_rhos, tr.discounts, tr.rewards, tr.values,
                                   tr.bootstrap_value, tr.rho_bar, tr.c_bar, tr.lam)
        got = canonical(call(fn, tr, io), io, tr.rewards.shape)
        r_vs, r_pg = _vtrace_rounding(tr)

        def context(idx: tuple[int, ...]) -> str:
            s, b = idx
            return (f" (ratio {math.exp(tr.log_rhos[s, b]):.4g}, discount "
                    f"{tr.discounts[s, b]:.4g}; T={tr.rewards.shape[0]}, B="
                    f"{tr.rewards.shape[1]}, rho_bar={tr.rho_bar:.4g}, c_bar={tr.c_bar:.4g}, "
                    f"lam={tr.lam:.4g})")

        out = [Compared(got[0], vs, r_vs, r_vs,
                        label=lambda idx: f"vs[t={idx[0]}, b={idx[1]}]", context=context)]
        if output == "both":
            out.append(Compared(got[1], pg, r_pg, r_pg,
                                label=lambda idx: f"pg_advantages[t={idx[0]}, b={idx[1]}]",
                                context=context))
        return out

    def alternatives() -> list[Alternative]:
        res = []
        for m in _known("vtrace", "vtrace"):
            def outputs(tr: _Trace, f: Any = m.fn) -> list[FloatArray]:
                vs, pg = f(tr.log_rhos, tr.discounts, tr.rewards, tr.values,
                           tr.bootstrap_value, tr.rho_bar, tr.c_bar, tr.lam)
                return [np.asarray(vs)] if output == "vs" else [np.asarray(vs),
                                                               np.asarray(pg)]
            res.append(Alternative(m.name, m.bug, outputs))
        return res

    conventions = []
    if output != "both":
        conventions.append(f"output={output!r}")
    if layout != "time-major":
        conventions.append(f"layout={layout!r}")
    decl = Declaration(
        name="vtrace",
        reference="proofs_notes/returns.md#v-trace (Espeholt et al. 2018, eq. 1): v_s = V_s + "
        "sum_t (prod_{i<t} d_i c_i) rho_t delta_t, rho = min(rho_bar, pi/mu), c = lam "
        "min(c_bar, pi/mu)",
        generate=lambda rng, size: _vtrace_generate(
            rng, size, 1.0 if fixed_lam is None else fixed_lam),
        to_arrays=_vtrace_to_arrays,
        from_arrays=_vtrace_from_arrays,
        evaluate=evaluate_case,
        alternatives=alternatives,
        convention=", ".join(conventions) or None,
    )
    return run_check(decl, cases=cases, seed=seed, replay=replay, atol=atol, rtol=rtol,
                     dtype=dtype, xp=xp)
