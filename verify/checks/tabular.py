"""Conformance checks for single-agent tabular quantities (SPEC section 1): occupancy,
advantage and policy gradient, exact and sampled.

User callables take and return plain numpy arrays in SPEC section 0's layout:
``P[s, a, s']``, ``r[s, a]``, ``rho[s]``, ``pi[s, a]``, ``theta[s, a]`` (tabular softmax logits).
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
from reference.tabular import TabularMDP, evaluate, occupancy, policy_gradient
from verify import strategies as vst
from verify.bounds import empirical_bernstein_radius, l1_radius, split_delta
from verify.checks._core import (
    Case,
    CaseFailure,
    CaseResult,
    CheckReport,
    case_rng,
    guard,
    run_check,
)
from verify.tolerances import linear_solve_tolerance

__all__ = [
    "DEFAULT_FALSE_ALARM",
    "check_advantage",
    "check_occupancy",
    "check_occupancy_estimator",
    "check_policy_gradient",
    "check_policy_gradient_estimator",
    "finite_horizon_occupancy",
]

DEFAULT_FALSE_ALARM = 1e-6
"""False-alarm probability per case of the stochastic checks."""

POWER_FAILURE = 0.01
"""Stochastic checks state their power as ``1 - POWER_FAILURE`` against a named shift."""


@dataclass(frozen=True)
class _Problem:
    mdp: TabularMDP
    pi: FloatArray
    theta: FloatArray


@st.composite
def _problems(
    draw: st.DrawFn, max_states: int, max_actions: int, max_gamma: float = 0.9
) -> _Problem:
    """Half the cases from :func:`verify.strategies.tabular_problems` (edge cases: one state,
    one action, ``gamma = 0``, deterministic rows), half with at least two states and two
    actions and ``gamma >= max_gamma / 3``, where every term of the formulas matters."""
    if draw(st.booleans()) or max_states < 2 or max_actions < 2:
        p = draw(
            vst.tabular_problems(
                max_states=max_states, max_actions=max_actions, max_gamma=max_gamma
            )
        )
        mdp, pi = p.mdp, p.pi
    else:
        nS = draw(st.integers(2, max_states))
        nA = draw(st.integers(2, max_actions))
        P = draw(vst.stochastic_arrays((nS, nA, nS)))
        r = draw(hnp.arrays(np.float64, (nS, nA), elements=st.floats(-1.0, 1.0)))
        rho = draw(vst.distributions(nS))
        gamma = draw(st.floats(max_gamma / 3, max_gamma))
        mdp = TabularMDP(P, r, rho, gamma)
        pi = draw(vst.tabular_policies(nS, nA))
    theta = draw(
        hnp.arrays(np.float64, (mdp.n_states, mdp.n_actions), elements=st.floats(-2.0, 2.0))
    )
    return _Problem(mdp, pi, theta)


def _to_arrays(p: _Problem) -> Mapping[str, npt.NDArray[Any]]:
    m = p.mdp
    return {"P": m.P, "r": m.r, "rho": m.rho, "gamma": np.array(m.gamma), "pi": p.pi,
            "theta": p.theta}


def _from_arrays(a: Mapping[str, npt.NDArray[Any]]) -> _Problem:
    mdp = TabularMDP(a["P"], a["r"], a["rho"], float(a["gamma"]))
    return _Problem(mdp, np.array(a["pi"]), np.array(a["theta"]))


def _user_array(out: object, shape: tuple[int, ...], name: str) -> FloatArray:
    try:
        arr = np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CaseFailure(f"{name} returned something that is not a float array: {exc}") from None
    if arr.shape != shape:
        raise CaseFailure(f"{name} returned shape {arr.shape}, expected {shape}")
    return arr


def _worst_entry(got: FloatArray, want: FloatArray, name: str, labels: str) -> tuple[float, str]:
    diff = np.abs(got - want)
    if not np.all(np.isfinite(got)):
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(got))[0])
        return math.inf, f"{name}[{_label(idx, labels)}] = {got[idx]!r} is not finite"
    idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))
    return float(diff[idx]), (
        f"{name}[{_label(idx, labels)}] = {got[idx]:.6g}, oracle {want[idx]:.6g}"
    )


def _label(idx: tuple[int, ...], labels: str) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(labels.split(","), idx, strict=False))


def _exact_tolerance(mdp: TabularMDP, scale: float, atol: float | None) -> float:
    """Two LU solves of the same system (the oracle's and, by default, the user's) are each
    within ``linear_solve_tolerance`` of the truth; ``atol`` replaces the user's share."""
    ours = linear_solve_tolerance(mdp.n_states * mdp.n_actions, mdp.gamma, scale)
    return ours + (ours if atol is None else float(atol))


OccupancyFn = Callable[[FloatArray, FloatArray, float, FloatArray], npt.ArrayLike]


def check_occupancy(
    fn: OccupancyFn,
    *,
    normalised: bool = False,
    atol: float | None = None,
    cases: int = 50,
    seed: int = 0,
    max_states: int = 4,
    max_actions: int = 3,
    replay: Case | None = None,
) -> CheckReport:
    """Check ``fn(P, rho, gamma, pi) -> lam`` against the exact discounted occupancy.

    ``lam[s, a] = sum_t gamma^t Pr(s_t = s, a_t = a)`` (SPEC section 1, mass ``1/(1-gamma)``), or
    ``d = (1 - gamma) lam`` with ``normalised=True``.  Tolerance: the rounding of two LU solves
    (:func:`verify.tolerances.linear_solve_tolerance`), or the oracle's plus ``atol``."""
    fn = guard(fn)

    def evaluate_case(p: _Problem, index: int) -> CaseResult:
        m = p.mdp
        lam = occupancy(m, p.pi).lam
        want = (1 - m.gamma) * lam if normalised else lam
        got = _user_array(
            fn(m.P.copy(), m.rho.copy(), m.gamma, p.pi.copy()), want.shape, "the callable"
        )
        err, where = _worst_entry(got, want, "d" if normalised else "lam", "s,a")
        return CaseResult(err, _exact_tolerance(m, float(np.max(want)) + 1.0, atol), where)

    return run_check(
        "occupancy",
        "SPEC section 1: lam_S = (I - gamma P_pi^T)^{-1} rho; proofs_notes/occupancy-and-flow.md",
        _problems(max_states, max_actions),
        _to_arrays,
        _from_arrays,
        evaluate_case,
        cases=cases,
        seed=seed,
        replay=replay,
    )


AdvantageFn = Callable[[FloatArray, FloatArray, float, FloatArray], npt.ArrayLike]


def check_advantage(
    fn: AdvantageFn,
    *,
    atol: float | None = None,
    cases: int = 50,
    seed: int = 0,
    max_states: int = 4,
    max_actions: int = 3,
    replay: Case | None = None,
) -> CheckReport:
    """Check ``fn(P, r, gamma, pi) -> A`` against ``A^pi = Q^pi - V^pi`` (SPEC section 1):
    ``V = (I - gamma P_pi)^{-1} r_pi``, ``Q = r + gamma P V``.  Rewards are in ``[-1, 1]``;
    tolerance as in :func:`check_occupancy` at the scale ``2 max|r| / (1 - gamma)``."""
    fn = guard(fn)

    def evaluate_case(p: _Problem, index: int) -> CaseResult:
        m = p.mdp
        want = evaluate(m, p.pi).A
        got = _user_array(fn(m.P.copy(), m.r.copy(), m.gamma, p.pi.copy()), want.shape,
                          "the callable")
        err, where = _worst_entry(got, want, "A", "s,a")
        scale = 2 * (float(np.max(np.abs(m.r))) + 1.0) / (1 - m.gamma)
        return CaseResult(err, _exact_tolerance(m, scale, atol), where)

    return run_check(
        "advantage",
        "SPEC section 1: A = Q - V with V = (I - gamma P_pi)^{-1} r_pi, Q = r + gamma P V",
        _problems(max_states, max_actions),
        _to_arrays,
        _from_arrays,
        evaluate_case,
        cases=cases,
        seed=seed,
        replay=replay,
    )


GradientFn = Callable[[FloatArray, FloatArray, FloatArray, float, FloatArray], npt.ArrayLike]


def check_policy_gradient(
    fn: GradientFn,
    *,
    atol: float | None = None,
    cases: int = 50,
    seed: int = 0,
    max_states: int = 4,
    max_actions: int = 3,
    replay: Case | None = None,
) -> CheckReport:
    """Check ``fn(P, r, rho, gamma, theta) -> grad J`` for the tabular softmax
    ``pi = softmax(theta)`` against the policy gradient theorem
    ``grad[s, b] = lam_S[s] pi[s, b] A[s, b]`` (SPEC section 1; unnormalised occupancy, so no
    ``1/(1-gamma)`` factor).  Tolerance: the oracle's LU rounding at the scale
    ``2 max|r| / (1 - gamma)^2``, twice (or plus ``atol``)."""
    fn = guard(fn)

    def evaluate_case(p: _Problem, index: int) -> CaseResult:
        m = p.mdp
        want = policy_gradient(m, p.theta)
        got = _user_array(
            fn(m.P.copy(), m.r.copy(), m.rho.copy(), m.gamma, p.theta.copy()),
            want.shape,
            "the callable",
        )
        err, where = _worst_entry(got, want, "grad", "s,a")
        scale = 2 * (float(np.max(np.abs(m.r))) + 1.0) / (1 - m.gamma) ** 2
        return CaseResult(err, _exact_tolerance(m, scale, atol), where)

    return run_check(
        "policy-gradient",
        "SPEC section 1: grad J = sum lam Q score; tabular softmax: lam_S pi A",
        _problems(max_states, max_actions),
        _to_arrays,
        _from_arrays,
        evaluate_case,
        cases=cases,
        seed=seed,
        replay=replay,
    )


def finite_horizon_occupancy(mdp: TabularMDP, pi: FloatArray, horizon: int) -> FloatArray:
    """``lam^H[s, a] = sum_{t<H} gamma^t Pr(s_t = s, a_t = a)``, exact, by ``H`` matrix-vector
    steps of the state law ``mu_{t+1} = P_pi^T mu_t`` from ``mu_0 = rho``."""
    P_pi = np.einsum("sa,sat->st", pi, mdp.P)
    mu = mdp.rho.copy()
    lam = np.zeros(mdp.n_states)
    w = 1.0
    for _ in range(horizon):
        lam += w * mu
        mu = P_pi.T @ mu
        w *= mdp.gamma
    out: FloatArray = lam[:, None] * pi
    return out


OccupancyEstimator = Callable[
    [FloatArray, FloatArray, float, FloatArray, int, int, np.random.Generator], npt.ArrayLike
]


def check_occupancy_estimator(
    fn: OccupancyEstimator,
    *,
    n_trajectories: int = 20_000,
    horizon: int = 20,
    false_alarm: float = DEFAULT_FALSE_ALARM,
    cases: int = 20,
    seed: int = 0,
    max_states: int = 4,
    max_actions: int = 3,
    replay: Case | None = None,
) -> CheckReport:
    """Check a sampled estimator ``fn(P, rho, gamma, pi, n, H, rng) -> lam_hat`` of the
    ``H``-step occupancy ``lam^H`` from ``n`` trajectories of length ``H``.

    Test: ``||lam_hat - lam^H||_1 <= r(false_alarm / cases)`` with ``r`` the McDiarmid radius of
    :func:`verify.bounds.l1_radius` for vectors of l1 norm ``L = (1 - gamma^H)/(1 - gamma)`` (one
    trajectory's discounted visit counts).  A correct estimator (a mean of ``n`` i.i.d. such
    vectors) fails the check (any of its ``cases``) with probability at most ``false_alarm``.
    Power: an estimator whose mean is at l1 distance at least ``r(false_alarm / cases) + r(0.01)``
    from ``lam^H`` (and that is
    itself a mean of ``n`` i.i.d. vectors of norm ``<= L``) fails with probability at least
    0.99."""
    fn = guard(fn)
    if not 0 < false_alarm <= DEFAULT_FALSE_ALARM:
        raise ValueError(f"false_alarm = {false_alarm!r}, expected (0, 1e-6]")
    per_case = split_delta(false_alarm, cases)  # the whole check fails wrongly w.p. <= false_alarm

    def radius(m: TabularMDP, delta: float) -> float:
        L = (1 - m.gamma**horizon) / (1 - m.gamma) if m.gamma < 1 else float(horizon)
        return l1_radius(n_trajectories, m.n_states * m.n_actions, L, delta)

    def evaluate_case(p: _Problem, index: int) -> CaseResult:
        m = p.mdp
        want = finite_horizon_occupancy(m, p.pi, horizon)
        rng = case_rng(seed if replay is None else replay.seed, index)
        got = _user_array(
            fn(m.P.copy(), m.rho.copy(), m.gamma, p.pi.copy(), n_trajectories, horizon, rng),
            want.shape,
            "the callable",
        )
        if not np.all(np.isfinite(got)):
            return CaseResult(math.inf, 0.0, "the estimate is not finite")
        err = float(np.abs(got - want).sum())
        _, where = _worst_entry(got, want, "lam_hat", "s,a")
        return CaseResult(err, radius(m, per_case), f"l1 error; largest entry {where}")

    worst_L = 1 / (1 - 0.9)
    shift = l1_radius(n_trajectories, max_states * max_actions, worst_L, per_case) + l1_radius(
        n_trajectories, max_states * max_actions, worst_L, 0.01
    )
    return run_check(
        "occupancy-estimator",
        "SPEC section 1 occupancy, H-step: lam^H = sum_{t<H} gamma^t Pr(s_t, a_t); "
        "verify.bounds.l1_radius",
        _problems(max_states, max_actions),
        _to_arrays,
        _from_arrays,
        evaluate_case,
        cases=cases,
        seed=seed,
        replay=replay,
        false_alarm=false_alarm,
        power=f"0.99 against a mean off by >= r(false_alarm / cases) + r(0.01) in l1 "
        f"(<= {shift:.3g} on these instances)",
    )


GradientEstimator = Callable[
    [FloatArray, FloatArray, FloatArray, float, FloatArray, int, np.random.Generator],
    npt.ArrayLike,
]


def check_policy_gradient_estimator(
    fn: GradientEstimator,
    *,
    bound: float | Callable[[FloatArray, float], float],
    n_samples: int = 20_000,
    false_alarm: float = DEFAULT_FALSE_ALARM,
    cases: int = 10,
    seed: int = 0,
    max_states: int = 3,
    max_actions: int = 3,
    max_gamma: float = 0.9,
    replay: Case | None = None,
) -> CheckReport:
    """Check an unbiased per-sample estimator of the exact softmax policy gradient.

    ``fn(P, r, rho, gamma, theta, n, rng)`` returns the ``n`` i.i.d. per-sample estimates,
    shape ``(n, nS, nA)``, each entry in ``[-bound, bound]`` (not their mean: the check uses
    their spread).  The user states ``bound``, a number or a function ``bound(r, gamma)`` of
    the instance that the per-sample estimates provably respect, e.g. ``2 max|r|/(1-gamma)^2``
    for ``(1/(1-gamma)) A(s,a) score(a|s)`` with exact ``A`` at ``(s, a)`` drawn from ``d_pi``.

    Test: every entry of the mean within the empirical Bernstein radius (Maurer and Pontil
    2009; :func:`verify.bounds.empirical_bernstein_radius`) at ``false_alarm`` split over the
    ``cases`` and the ``nS nA`` entries, so a correct estimator fails the check with probability
    at most ``false_alarm``.  Power: by Bernstein's inequality for the alternative's own samples, a
    mean off by at least ``r + r'`` in some entry is caught with probability at least 0.99,
    ``r'`` the same radius at failure 0.01."""
    fn = guard(fn)
    if not 0 < false_alarm <= DEFAULT_FALSE_ALARM:
        raise ValueError(f"false_alarm = {false_alarm!r}, expected (0, 1e-6]")
    per_case = split_delta(false_alarm, cases)  # the whole check fails wrongly w.p. <= false_alarm

    def bound_at(m: TabularMDP) -> float:
        b = float(bound(m.r, m.gamma)) if callable(bound) else float(bound)
        if not (math.isfinite(b) and b > 0):
            raise ValueError(f"bound = {b!r}, expected a finite bound > 0")
        return b

    def evaluate_case(p: _Problem, index: int) -> CaseResult:
        m = p.mdp
        want = policy_gradient(m, p.theta)
        rng = case_rng(seed if replay is None else replay.seed, index)
        samples = _user_array(
            fn(m.P.copy(), m.r.copy(), m.rho.copy(), m.gamma, p.theta.copy(), n_samples, rng),
            (n_samples, *want.shape),
            "the callable",
        )
        b = bound_at(m)
        if np.any(np.abs(samples) > b):
            idx = np.unravel_index(int(np.argmax(np.abs(samples))), samples.shape)
            return CaseResult(
                math.inf, 0.0,
                f"sample {idx[0]} entry (s={idx[1]}, a={idx[2]}) = {samples[idx]:.6g} is "
                f"outside the stated bound {b:.6g}",
            )
        got = samples.mean(axis=0)
        var = samples.var(axis=0, ddof=1)
        delta = split_delta(per_case, want.size)
        radii = np.array(
            [empirical_bernstein_radius(n_samples, float(v), 2 * b, delta) for v in var.ravel()]
        ).reshape(want.shape)
        ratio = np.abs(got - want) / radii
        idx2 = tuple(int(i) for i in np.unravel_index(int(np.argmax(ratio)), ratio.shape))
        return CaseResult(
            float(abs(got[idx2] - want[idx2])),
            float(radii[idx2]),
            f"mean g_hat[s={idx2[0]}, a={idx2[1]}] = {got[idx2]:.6g}, oracle {want[idx2]:.6g}",
        )

    return run_check(
        "policy-gradient-estimator",
        "SPEC section 1 policy gradient theorem; verify.bounds.empirical_bernstein_radius "
        "per entry",
        _problems(max_states, max_actions, max_gamma),
        _to_arrays,
        _from_arrays,
        evaluate_case,
        cases=cases,
        seed=seed,
        replay=replay,
        false_alarm=false_alarm,
        power="0.99 against a mean off by >= r(false_alarm / cases / entries) + r(0.01) in "
        "one entry (r the empirical Bernstein radius)",
    )
