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

from reference._arrays import FloatArray
from reference.tabular import TabularMDP, evaluate, occupancy, policy_gradient
from verify.bounds import empirical_bernstein_radius, l1_radius, split_delta
from verify.checks._core import (
    Alternative,
    Case,
    CaseFailure,
    CaseResult,
    CheckArgumentError,
    CheckReport,
    Compared,
    Declaration,
    UserIO,
    case_rng,
    guard,
    known_alternatives,
    ladder_count,
    run_check,
    stochastic_rows,
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


def _generate(
    rng: np.random.Generator, size: float, max_states: int, max_actions: int,
    max_gamma: float = 0.9,
) -> _Problem:
    """An MDP and a policy at ``size`` of the limits: ``nS`` in ``1..ceil(size max_states)``,
    ``nA`` likewise, kernel, initial law and policy rows from :func:`stochastic_rows`
    (deterministic rows and unreachable states occur), rewards in ``[-1, 1]``, logits in
    ``[-2, 2]``; ``gamma = 0`` one time in ten, else uniform in ``[max_gamma / 3,
    max_gamma]`` (where every term of the formulas matters)."""
    nS = ladder_count(rng, size, max_states)
    nA = ladder_count(rng, size, max_actions)
    P = stochastic_rows(rng, (nS, nA, nS))
    r = rng.uniform(-1.0, 1.0, (nS, nA))
    rho = stochastic_rows(rng, (nS,))
    gamma = 0.0 if rng.random() < 0.1 else float(rng.uniform(max_gamma / 3, max_gamma))
    pi = stochastic_rows(rng, (nS, nA))
    theta = rng.uniform(-2.0, 2.0, (nS, nA))
    return _Problem(TabularMDP(P, r, rho, gamma), pi, theta)


def _limits(max_states: int, max_actions: int) -> None:
    for name, value in (("max_states", max_states), ("max_actions", max_actions)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CheckArgumentError(f"{name} = {value!r}, expected an integer >= 1")


def _to_arrays(p: _Problem) -> Mapping[str, npt.NDArray[Any]]:
    m = p.mdp
    return {"P": m.P, "r": m.r, "rho": m.rho, "gamma": np.array(m.gamma), "pi": p.pi,
            "theta": p.theta}


def _from_arrays(a: Mapping[str, npt.NDArray[Any]]) -> _Problem:
    mdp = TabularMDP(a["P"], a["r"], a["rho"], float(a["gamma"]))
    return _Problem(mdp, np.array(a["pi"]), np.array(a["theta"]))


def _user_array(io: UserIO, out: object, shape: tuple[int, ...], name: str) -> FloatArray:
    arr = io.out(out, f"{name}'s output")
    if arr.shape != shape:
        raise CaseFailure(f"{name} returned shape {arr.shape}, expected {shape}")
    return arr


def _label(idx: tuple[int, ...], labels: str) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(labels.split(","), idx, strict=False))


def _entry(name: str, labels: str) -> Callable[[tuple[int, ...]], str]:
    return lambda idx: f"{name}[{_label(idx, labels)}]"


def _solve_rounding(mdp: TabularMDP, scale: float) -> float:
    """One LU solve of the system (:func:`verify.tolerances.linear_solve_tolerance`): the
    oracle's rounding, and the default allowance for the callable's own at float64."""
    return linear_solve_tolerance(mdp.n_states * mdp.n_actions, mdp.gamma, scale)


def _mass_context(got: FloatArray, m: TabularMDP, normalised: bool) -> str:
    expected = "1" if normalised else f"1/(1 - gamma) = {1.0 / (1.0 - m.gamma):.6g}"
    return f" (gamma = {m.gamma:.6g}; total mass {float(np.sum(got)):.6g}, expected {expected})"


OccupancyFn = Callable[[FloatArray, FloatArray, float, FloatArray], npt.ArrayLike]


def _planted(check: str) -> list[Any]:
    from verify.checks.planted import known_bugs  # the catalogue imports this module

    return list(known_bugs(check))


def check_occupancy(
    fn: OccupancyFn,
    *,
    normalised: bool = False,
    states_only: bool = False,
    atol: float | None = None,
    rtol: float | None = None,
    dtype: str | None = None,
    xp: Any = None,
    cases: int = 50,
    seed: int = 0,
    max_states: int = 4,
    max_actions: int = 3,
    replay: Case | None = None,
) -> CheckReport:
    """Check ``fn(P, rho, gamma, pi) -> lam`` against the exact discounted occupancy.

    ``lam[s, a] = sum_t gamma^t Pr(s_t = s, a_t = a)`` (SPEC section 1, total mass
    ``1/(1-gamma)``), or ``d = (1 - gamma) lam`` (mass 1) with ``normalised=True``; with
    ``states_only=True`` the state occupancy ``lam_S[s] = sum_a lam[s, a]`` (or ``d(s)``),
    shape ``(nS,)``.  Messages give gamma and the returned total mass next to the expected
    one.  Tolerance: the rounding of two LU solves
    (:func:`verify.tolerances.linear_solve_tolerance`; the callable's share scaled to its
    precision, or ``atol``), plus ``rtol |lam|``."""
    fn = guard(fn)
    _limits(max_states, max_actions)
    name = ("d" if normalised else "lam") + ("_S" if states_only else "")
    labels = "s" if states_only else "s,a"

    def want_of(p: _Problem) -> FloatArray:
        m = p.mdp
        lam = occupancy(m, p.pi).lam
        out: FloatArray = (1 - m.gamma) * lam if normalised else lam
        return out.sum(axis=1) if states_only else out

    def evaluate_case(p: _Problem, index: int, io: UserIO) -> list[Compared]:
        m = p.mdp
        want = want_of(p)
        got = _user_array(io, fn(io.arg(m.P), io.arg(m.rho), m.gamma, io.arg(p.pi)),
                          want.shape, "the callable")
        tol = _solve_rounding(m, float(np.max(want)) + 1.0)
        context = _mass_context(got, m, normalised)
        return [Compared(got, want, tol, tol, _entry(name, labels), lambda idx: context)]

    def shaped(f: Callable[..., Any], p: _Problem) -> list[FloatArray]:
        x = np.asarray(f(p.mdp.P, p.mdp.rho, p.mdp.gamma, p.pi), dtype=np.float64)
        x = (1 - p.mdp.gamma) * x if normalised else x
        return [x.sum(axis=1) if states_only else x]

    def other_normalisation(p: _Problem) -> list[FloatArray]:
        lam = occupancy(p.mdp, p.pi).lam
        x = lam if normalised else (1 - p.mdp.gamma) * lam
        return [x.sum(axis=1) if states_only else x]

    def alternatives() -> list[Alternative]:
        other = Alternative(
            "occupancy-other-normalisation",
            "the unnormalised occupancy lam, mass 1/(1 - gamma)" if normalised
            else "the normalised occupancy d = (1 - gamma) lam, mass 1",
            other_normalisation,
            declare=f"normalised={not normalised}",
        )
        return [other, *known_alternatives(_planted("occupancy"), shaped)]

    decl = Declaration(
        name="occupancy",
        reference="SPEC section 1: lam_S = (I - gamma P_pi^T)^{-1} rho; "
        "proofs_notes/occupancy-and-flow.md",
        generate=lambda rng, size: _generate(rng, size, max_states, max_actions),
        to_arrays=_to_arrays,
        from_arrays=_from_arrays,
        evaluate=evaluate_case,
        solve=True,
        alternatives=alternatives,
        convention=None if not (normalised or states_only)
        else f"normalised={normalised}, states_only={states_only}",
    )
    return run_check(decl, cases=cases, seed=seed, replay=replay, atol=atol, rtol=rtol,
                     dtype=dtype, xp=xp)


AdvantageFn = Callable[[FloatArray, FloatArray, float, FloatArray], npt.ArrayLike]


def check_advantage(
    fn: AdvantageFn,
    *,
    atol: float | None = None,
    rtol: float | None = None,
    dtype: str | None = None,
    xp: Any = None,
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
    _limits(max_states, max_actions)

    def evaluate_case(p: _Problem, index: int, io: UserIO) -> list[Compared]:
        m = p.mdp
        want = evaluate(m, p.pi).A
        got = _user_array(io, fn(io.arg(m.P), io.arg(m.r), m.gamma, io.arg(p.pi)),
                          want.shape, "the callable")
        scale = 2 * (float(np.max(np.abs(m.r))) + 1.0) / (1 - m.gamma)
        tol = _solve_rounding(m, scale)
        return [Compared(got, want, tol, tol, _entry("A", "s,a"),
                         lambda idx: f" (gamma = {m.gamma:.6g})")]

    def alternatives() -> list[Alternative]:
        return known_alternatives(_planted("advantage"),
                                  lambda f, p: [f(p.mdp.P, p.mdp.r, p.mdp.gamma, p.pi)])

    decl = Declaration(
        name="advantage",
        reference="SPEC section 1: A = Q - V with V = (I - gamma P_pi)^{-1} r_pi, "
        "Q = r + gamma P V",
        generate=lambda rng, size: _generate(rng, size, max_states, max_actions),
        to_arrays=_to_arrays,
        from_arrays=_from_arrays,
        evaluate=evaluate_case,
        solve=True,
        alternatives=alternatives,
    )
    return run_check(decl, cases=cases, seed=seed, replay=replay, atol=atol, rtol=rtol,
                     dtype=dtype, xp=xp)


GradientFn = Callable[[FloatArray, FloatArray, FloatArray, float, FloatArray], npt.ArrayLike]


def check_policy_gradient(
    fn: GradientFn,
    *,
    atol: float | None = None,
    rtol: float | None = None,
    dtype: str | None = None,
    xp: Any = None,
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
    ``2 max|r| / (1 - gamma)^2``, twice (the callable's share at its precision, or ``atol``),
    plus ``rtol |grad|``."""
    fn = guard(fn)
    _limits(max_states, max_actions)

    def evaluate_case(p: _Problem, index: int, io: UserIO) -> list[Compared]:
        m = p.mdp
        want = policy_gradient(m, p.theta)
        got = _user_array(
            io, fn(io.arg(m.P), io.arg(m.r), io.arg(m.rho), m.gamma, io.arg(p.theta)),
            want.shape, "the callable",
        )
        scale = 2 * (float(np.max(np.abs(m.r))) + 1.0) / (1 - m.gamma) ** 2
        tol = _solve_rounding(m, scale)
        return [Compared(got, want, tol, tol, _entry("grad", "s,a"),
                         lambda idx: f" (gamma = {m.gamma:.6g})")]

    def alternatives() -> list[Alternative]:
        return known_alternatives(
            _planted("policy-gradient"),
            lambda f, p: [f(p.mdp.P, p.mdp.r, p.mdp.rho, p.mdp.gamma, p.theta)],
        )

    decl = Declaration(
        name="policy-gradient",
        reference="SPEC section 1: grad J = sum lam Q score; tabular softmax: lam_S pi A",
        generate=lambda rng, size: _generate(rng, size, max_states, max_actions),
        to_arrays=_to_arrays,
        from_arrays=_from_arrays,
        evaluate=evaluate_case,
        solve=True,
        alternatives=alternatives,
    )
    return run_check(decl, cases=cases, seed=seed, replay=replay, atol=atol, rtol=rtol,
                     dtype=dtype, xp=xp)


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


def _false_alarm(false_alarm: float) -> None:
    if isinstance(false_alarm, bool) or not isinstance(false_alarm, (int, float)) or not (
        0 < false_alarm <= DEFAULT_FALSE_ALARM
    ):
        raise CheckArgumentError(
            f"false_alarm = {false_alarm!r}, expected a probability in (0, {DEFAULT_FALSE_ALARM}]"
        )


def _counts(**values: object) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CheckArgumentError(f"{name} = {value!r}, expected an integer >= 1")


OccupancyEstimator = Callable[
    [FloatArray, FloatArray, float, FloatArray, int, int, np.random.Generator], npt.ArrayLike
]


def check_occupancy_estimator(
    fn: OccupancyEstimator,
    *,
    n_trajectories: int = 20_000,
    horizon: int = 20,
    false_alarm: float = DEFAULT_FALSE_ALARM,
    xp: Any = None,
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
    _limits(max_states, max_actions)
    _false_alarm(false_alarm)
    _counts(n_trajectories=n_trajectories, horizon=horizon, cases=cases)
    per_case = split_delta(false_alarm, cases)  # the whole check fails wrongly w.p. <= false_alarm

    def radius(m: TabularMDP, delta: float) -> float:
        L = (1 - m.gamma**horizon) / (1 - m.gamma) if m.gamma < 1 else float(horizon)
        return l1_radius(n_trajectories, m.n_states * m.n_actions, L, delta)

    def evaluate_case(p: _Problem, index: int, io: UserIO) -> list[Compared]:
        m = p.mdp
        want = finite_horizon_occupancy(m, p.pi, horizon)
        rng = case_rng(seed if replay is None else replay.seed, index)
        got = _user_array(
            io, fn(io.arg(m.P), io.arg(m.rho), m.gamma, io.arg(p.pi), n_trajectories, horizon,
                   rng),
            want.shape, "the callable",
        )
        context = (
            f" (gamma = {m.gamma:.6g}, H = {horizon}; total mass {float(np.sum(got)):.6g}, "
            f"expected (1 - gamma^H)/(1 - gamma) = {float(np.sum(want)):.6g})"
        )
        return [Compared(got, want, radius(m, per_case), 0.0, _entry("lam_hat", "s,a"),
                         lambda idx: context, l1=True)]

    def alternatives() -> list[Alternative]:
        return known_alternatives(
            _planted("occupancy-estimator"),
            lambda f, p: [f(p.mdp.P, p.mdp.rho, p.mdp.gamma, p.pi, horizon)],
        )

    worst_L = 1 / (1 - 0.9)
    shift = l1_radius(n_trajectories, max_states * max_actions, worst_L, per_case) + l1_radius(
        n_trajectories, max_states * max_actions, worst_L, 0.01
    )
    decl = Declaration(
        name="occupancy-estimator",
        reference="SPEC section 1 occupancy, H-step: lam^H = sum_{t<H} gamma^t Pr(s_t, a_t); "
        "verify.bounds.l1_radius",
        generate=lambda rng, size: _generate(rng, size, max_states, max_actions),
        to_arrays=_to_arrays,
        from_arrays=_from_arrays,
        evaluate=evaluate_case,
        alternatives=alternatives,
        false_alarm=false_alarm,
        power=f"0.99 against a mean off by >= r(false_alarm / cases) + r(0.01) in l1 "
        f"(<= {shift:.3g} on these instances)",
    )
    return run_check(decl, cases=cases, seed=seed, replay=replay, xp=xp)


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
    xp: Any = None,
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
    _limits(max_states, max_actions)
    _false_alarm(false_alarm)
    _counts(n_samples=n_samples, cases=cases)
    per_case = split_delta(false_alarm, cases)  # the whole check fails wrongly w.p. <= false_alarm

    def bound_at(m: TabularMDP) -> float:
        b = float(bound(m.r, m.gamma)) if callable(bound) else float(bound)
        if not (math.isfinite(b) and b > 0):
            raise CheckArgumentError(f"bound = {b!r}, expected a finite bound > 0")
        return b

    def evaluate_case(p: _Problem, index: int, io: UserIO) -> CaseResult | list[Compared]:
        m = p.mdp
        want = policy_gradient(m, p.theta)
        rng = case_rng(seed if replay is None else replay.seed, index)
        samples = _user_array(
            io, fn(io.arg(m.P), io.arg(m.r), io.arg(m.rho), m.gamma, io.arg(p.theta),
                   n_samples, rng),
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
        # each entry against its own radius: a sampled comparison, not scaled by precision
        return [Compared(got, want, radii, 0.0, _entry("mean g_hat", "s,a"),
                         lambda idx: f" (gamma = {m.gamma:.6g})")]

    def alternatives() -> list[Alternative]:
        return known_alternatives(
            _planted("policy-gradient-estimator"),
            lambda f, p: [f(p.mdp.P, p.mdp.r, p.mdp.rho, p.mdp.gamma, p.theta)],
        )

    decl = Declaration(
        name="policy-gradient-estimator",
        reference="SPEC section 1 policy gradient theorem; "
        "verify.bounds.empirical_bernstein_radius per entry",
        generate=lambda rng, size: _generate(rng, size, max_states, max_actions, max_gamma),
        to_arrays=_to_arrays,
        from_arrays=_from_arrays,
        evaluate=evaluate_case,
        alternatives=alternatives,
        false_alarm=false_alarm,
        power="0.99 against a mean off by >= r(false_alarm / cases / entries) + r(0.01) in "
        "one entry (r the empirical Bernstein radius)",
    )
    return run_check(decl, cases=cases, seed=seed, replay=replay, xp=xp)
