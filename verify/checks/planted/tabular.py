"""Planted bugs and correct implementations for the single-agent tabular checks.

Every implementation here is written in plain numpy, independently of ``reference/``, the
way a user would write it; each wrong one is one small edit of a correct one.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from reference._arrays import FloatArray, IntArray
from verify.checks._core import CheckReport, KnownBug, Mutant
from verify.checks.tabular import (
    check_advantage,
    check_occupancy,
    check_occupancy_estimator,
    check_policy_gradient,
    check_policy_gradient_estimator,
)

__all__ = ["CORRECT", "DIAGNOSABLE", "MUTANTS"]

_CASES = 30
_ESTIMATOR_CASES = 12


def _state_occupancy(P: FloatArray, rho: FloatArray, gamma: float, pi: FloatArray) -> FloatArray:
    P_pi = np.einsum("sa,sat->st", pi, P)
    out: FloatArray = np.linalg.solve(np.eye(P.shape[0]) - gamma * P_pi.T, rho)
    return out


def occupancy(P: FloatArray, rho: FloatArray, gamma: float, pi: FloatArray) -> FloatArray:
    """Correct: ``lam = (I - gamma P_pi^T)^{-1} rho`` times ``pi``."""
    out: FloatArray = _state_occupancy(P, rho, gamma, pi)[:, None] * pi
    return out


def occupancy_transposed(
    P: FloatArray, rho: FloatArray, gamma: float, pi: FloatArray
) -> FloatArray:
    """Bug: solves with ``P_pi`` instead of ``P_pi^T`` (a transposed kernel)."""
    P_pi = np.einsum("sa,sat->st", pi, P)
    lam = np.linalg.solve(np.eye(P.shape[0]) - gamma * P_pi, rho)
    out: FloatArray = lam[:, None] * pi
    return out


def occupancy_overwritten(
    P: FloatArray, rho: FloatArray, gamma: float, pi: FloatArray
) -> FloatArray:
    """Bug: a power iteration ``mu_{t+1} = P_pi^T mu_t`` whose running sum is overwritten
    (``lam = gamma^t mu_t``) instead of accumulated (``lam += gamma^t mu_t``), so only the last
    term survives."""
    P_pi = np.einsum("sa,sat->st", pi, P)
    mu, weight = rho.copy(), 1.0
    lam = np.zeros_like(rho)
    for _ in range(_ITERATIONS):
        lam = weight * mu
        mu = P_pi.T @ mu
        weight *= gamma
    out: FloatArray = lam[:, None] * pi
    return out


_ITERATIONS = 400
"""Power-iteration steps of :func:`occupancy_overwritten` (``0.9^400 < 1e-18``)."""


def _occupancy_mean(
    P: FloatArray, rho: FloatArray, gamma: float, pi: FloatArray, H: int, discount: bool,
    shift: int,
) -> FloatArray:
    """The exact mean ``sum_{t<H} w_t Pr(s_{t+shift} = s, a_{t+shift} = a)`` of a sampled
    estimator, ``w_t = gamma^t`` (or 1 without ``discount``)."""
    P_pi = np.einsum("sa,sat->st", pi, P)
    mu = rho.copy()
    for _ in range(shift):
        mu = P_pi.T @ mu
    lam, weight = np.zeros_like(rho), 1.0
    for _ in range(H):
        lam = lam + weight * mu
        mu = P_pi.T @ mu
        weight *= gamma if discount else 1.0
    out: FloatArray = lam[:, None] * pi
    return out


def normalised_occupancy(
    P: FloatArray, rho: FloatArray, gamma: float, pi: FloatArray
) -> FloatArray:
    """Correct: ``d = (1 - gamma) lam``."""
    return (1 - gamma) * occupancy(P, rho, gamma, pi)


def normalised_missing_factor(
    P: FloatArray, rho: FloatArray, gamma: float, pi: FloatArray
) -> FloatArray:
    """Bug: the normalised occupancy without its ``(1 - gamma)``."""
    return occupancy(P, rho, gamma, pi)


def _values(
    P: FloatArray, r: FloatArray, gamma: float, pi: FloatArray
) -> tuple[FloatArray, FloatArray]:
    P_pi = np.einsum("sa,sat->st", pi, P)
    V = np.linalg.solve(np.eye(P.shape[0]) - gamma * P_pi, np.sum(pi * r, axis=1))
    Q = r + gamma * np.einsum("sat,t->sa", P, V)
    return V, Q


def advantage(P: FloatArray, r: FloatArray, gamma: float, pi: FloatArray) -> FloatArray:
    """Correct: ``A = Q - V``."""
    V, Q = _values(P, r, gamma, pi)
    out: FloatArray = Q - V[:, None]
    return out


def advantage_uniform_baseline(
    P: FloatArray, r: FloatArray, gamma: float, pi: FloatArray
) -> FloatArray:
    """Bug: subtracts the unweighted mean of ``Q`` over actions instead of ``V = pi . Q``."""
    _, Q = _values(P, r, gamma, pi)
    out: FloatArray = Q - Q.mean(axis=1, keepdims=True)
    return out


def _softmax(theta: FloatArray) -> FloatArray:
    z = np.exp(theta - theta.max(axis=1, keepdims=True))
    out: FloatArray = z / z.sum(axis=1, keepdims=True)
    return out


def policy_gradient(
    P: FloatArray, r: FloatArray, rho: FloatArray, gamma: float, theta: FloatArray
) -> FloatArray:
    """Correct: ``grad[s, b] = lam_S[s] pi[s, b] A[s, b]``."""
    pi = _softmax(theta)
    out: FloatArray = _state_occupancy(P, rho, gamma, pi)[:, None] * pi * advantage(P, r, gamma, pi)
    return out


def policy_gradient_normalised(
    P: FloatArray, r: FloatArray, rho: FloatArray, gamma: float, theta: FloatArray
) -> FloatArray:
    """Bug: weights by the normalised occupancy ``d`` (a spurious factor ``1 - gamma``)."""
    return (1 - gamma) * policy_gradient(P, r, rho, gamma, theta)


def _draw(cum: FloatArray, rows: IntArray, rng: np.random.Generator) -> IntArray:
    u: FloatArray = rng.random(size=int(rows.shape[0]))
    c: FloatArray = cum[rows]
    out: IntArray = np.minimum((c < u[:, None]).sum(axis=1), cum.shape[1] - 1).astype(np.int64)
    return out


def _occupancy_sampler(
    discount: bool, skip_first: bool, leak: float
) -> Callable[..., FloatArray]:
    def estimate(
        P: FloatArray,
        rho: FloatArray,
        gamma: float,
        pi: FloatArray,
        n: int,
        H: int,
        rng: np.random.Generator,
    ) -> FloatArray:
        nS, nA = pi.shape
        behaviour = (1 - leak) * pi + leak / nA
        pi_cum = np.cumsum(behaviour, axis=1)
        P_cum = np.cumsum(P.reshape(nS * nA, nS), axis=1)
        s = _draw(np.cumsum(rho)[None, :], np.zeros(n, dtype=np.int64), rng)
        lam = np.zeros(nS * nA)
        w = 1.0
        for t in range(H + int(skip_first)):
            a = _draw(pi_cum, s, rng)
            if t >= int(skip_first):
                lam += np.bincount(s * nA + a, minlength=nS * nA) * (w / n)
                w *= gamma if discount else 1.0
            s = _draw(P_cum, s * nA + a, rng)
        out: FloatArray = lam.reshape(nS, nA)
        return out

    return estimate


occupancy_estimator = _occupancy_sampler(discount=True, skip_first=False, leak=0.0)
"""Correct: ``n`` rollouts of length ``H`` with ``gamma^t``-weighted visit counts."""


def _pg_estimator(scale: float, from_rho: bool = False) -> Callable[..., FloatArray]:
    def estimate(
        P: FloatArray,
        r: FloatArray,
        rho: FloatArray,
        gamma: float,
        theta: FloatArray,
        n: int,
        rng: np.random.Generator,
    ) -> FloatArray:
        """Per-sample estimates, shape ``(n, nS, nA)``: ``(s, a) ~ d_pi`` by a geometric stop,
        then ``(1/(1-gamma)) A(s,a) score(a|s)`` with exact ``A``; each entry within
        ``2 max|r| / (1 - gamma)^2``."""
        nS, nA = theta.shape
        pi = _softmax(theta)
        A = advantage(P, r, gamma, pi)
        pi_cum = np.cumsum(pi, axis=1)
        P_cum = np.cumsum(P.reshape(nS * nA, nS), axis=1)
        s = _draw(np.cumsum(rho)[None, :], np.zeros(n, dtype=np.int64), rng)
        stop = rng.geometric(1 - gamma, size=n) - 1 if gamma > 0 else np.zeros(n, dtype=np.int64)
        if from_rho:
            stop[:] = 0
        for t in range(int(stop.max(initial=0))):
            live = np.flatnonzero(stop > t)
            a = _draw(pi_cum, s[live], rng)
            s[live] = _draw(P_cum, s[live] * nA + a, rng)
        a = _draw(pi_cum, s, rng)
        g = np.zeros((n, nS, nA))
        weight = A[s, a] * scale
        rows = np.arange(n)
        g[rows, s, :] = -weight[:, None] * pi[s]
        g[rows, s, a] += weight
        return g

    return estimate


def pg_bound(r: FloatArray, gamma: float) -> float:
    """Per-sample range of the estimators here: ``|A| <= 2 max|r| / (1 - gamma)``, score entries
    in ``[-1, 1]``, times ``1/(1 - gamma)``."""
    return 2 * max(float(np.max(np.abs(r))), 1e-12) / (1 - gamma) ** 2


def _run_pg_estimator(fn: Callable[..., FloatArray], n: int) -> CheckReport:
    return check_policy_gradient_estimator(
        fn, bound=pg_bound, n_samples=n, cases=_ESTIMATOR_CASES, max_gamma=0.8
    )


def _pg_unnormalised(
    P: FloatArray, r: FloatArray, rho: FloatArray, gamma: float, theta: FloatArray,
    n: int, rng: np.random.Generator,
) -> FloatArray:
    """Bug: the estimator without the ``1/(1-gamma)`` that turns ``d_pi`` into ``lam``."""
    return _pg_estimator(1.0)(P, r, rho, gamma, theta, n, rng)


def _pg_initial_states(
    P: FloatArray, r: FloatArray, rho: FloatArray, gamma: float, theta: FloatArray,
    n: int, rng: np.random.Generator,
) -> FloatArray:
    """Bug: states drawn from ``rho`` instead of the discounted visitation ``d_pi``."""
    return _pg_estimator(1.0 / (1.0 - gamma), from_rho=True)(P, r, rho, gamma, theta, n, rng)


def _pg_correct(
    P: FloatArray, r: FloatArray, rho: FloatArray, gamma: float, theta: FloatArray,
    n: int, rng: np.random.Generator,
) -> FloatArray:
    return _pg_estimator(1.0 / (1.0 - gamma))(P, r, rho, gamma, theta, n, rng)


MUTANTS = (
    Mutant(
        "occupancy-transposed-kernel",
        "solves (I - gamma P_pi) lam = rho instead of (I - gamma P_pi^T) lam = rho",
        "occupancy",
        lambda: check_occupancy(occupancy_transposed, cases=_CASES),
    ),
    Mutant(
        "occupancy-missing-1-minus-gamma",
        "returns lam where the normalised occupancy d = (1 - gamma) lam is asked for",
        "occupancy",
        lambda: check_occupancy(normalised_missing_factor, normalised=True, cases=_CASES),
    ),
    Mutant(
        "occupancy-estimator-gamma-t-dropped",
        "sums visit counts without the gamma^t weights",
        "occupancy-estimator",
        lambda: check_occupancy_estimator(
            _occupancy_sampler(discount=False, skip_first=False, leak=0.0),
            cases=_ESTIMATOR_CASES,
        ),
    ),
    Mutant(
        "occupancy-overwritten-sum",
        "overwrites the running sum of a power iteration (lam = gamma^t mu_t) instead of "
        "accumulating it",
        "occupancy",
        lambda: check_occupancy(occupancy_overwritten, cases=_CASES),
    ),
    Mutant(
        "occupancy-estimator-post-step",
        "records s_{t+1} instead of s_t: sum_{t<H} gamma^t e(s_{t+1}, a_{t+1}) (steps 1..H; "
        "the initial state is never counted)",
        "occupancy-estimator",
        lambda: check_occupancy_estimator(
            _occupancy_sampler(discount=True, skip_first=True, leak=0.0),
            cases=_ESTIMATOR_CASES,
        ),
    ),
    Mutant(
        "occupancy-estimator-small-bias",
        "draws actions from 0.95 pi + 0.05 uniform (a small exploration leak: biased by at "
        "most 0.1 (1 - gamma^H)/(1 - gamma) in l1)",
        "occupancy-estimator",
        lambda: check_occupancy_estimator(
            _occupancy_sampler(discount=True, skip_first=False, leak=0.05),
            n_trajectories=100_000,
            cases=_ESTIMATOR_CASES,
        ),
    ),
    Mutant(
        "policy-gradient-estimator-initial-states",
        "draws the state from rho instead of the discounted visitation d_pi",
        "policy-gradient-estimator",
        lambda: _run_pg_estimator(_pg_initial_states, 100_000),
    ),
    Mutant(
        "advantage-uniform-baseline",
        "subtracts the unweighted mean of Q over actions instead of V = sum_a pi Q",
        "advantage",
        lambda: check_advantage(advantage_uniform_baseline, cases=_CASES),
    ),
    Mutant(
        "policy-gradient-normalised-occupancy",
        "weights the gradient by d = (1 - gamma) lam instead of lam",
        "policy-gradient",
        lambda: check_policy_gradient(policy_gradient_normalised, cases=_CASES),
    ),
    Mutant(
        "policy-gradient-estimator-missing-normalisation",
        "samples (s, a) from d_pi but omits the 1/(1 - gamma) that turns d_pi into lam",
        "policy-gradient-estimator",
        lambda: _run_pg_estimator(_pg_unnormalised, 100_000),
    ),
)
"""Wrong implementations, each with the check that must catch it."""

CORRECT = (
    Mutant("occupancy", "correct implementation: LU solve with P_pi^T", "occupancy",
           lambda: check_occupancy(occupancy, cases=_CASES)),
    Mutant("occupancy-normalised", "correct implementation: (1 - gamma) lam", "occupancy",
           lambda: check_occupancy(normalised_occupancy, normalised=True, cases=_CASES)),
    Mutant("occupancy-estimator", "correct implementation: gamma^t-weighted rollouts",
           "occupancy-estimator",
           lambda: check_occupancy_estimator(occupancy_estimator, cases=_ESTIMATOR_CASES)),
    Mutant("advantage", "correct implementation: Q - V by one LU solve", "advantage",
           lambda: check_advantage(advantage, cases=_CASES)),
    Mutant("policy-gradient", "correct implementation: lam_S pi A", "policy-gradient",
           lambda: check_policy_gradient(policy_gradient, cases=_CASES)),
    Mutant("policy-gradient-estimator",
           "correct implementation: (1/(1-gamma)) A score at (s, a) ~ d_pi",
           "policy-gradient-estimator", lambda: _run_pg_estimator(_pg_correct, 100_000)),
)
"""Correct implementations, which every check must pass."""

def _pg_mean(from_rho: bool, normalised: bool) -> Callable[..., FloatArray]:
    """The exact mean of :func:`_pg_estimator`'s samples: with ``(s, a)`` from ``d_pi`` and the
    factor ``1/(1-gamma)`` it is ``lam_S pi A``; drawn from ``rho`` it is
    ``rho pi A / (1-gamma)``; without the factor it is ``(1-gamma) lam_S pi A``
    (``E_a[A score] = pi A`` for the softmax, since ``sum_a pi A = 0``)."""

    def mean(P: FloatArray, r: FloatArray, rho: FloatArray, gamma: float,
             theta: FloatArray) -> FloatArray:
        pi = _softmax(theta)
        A = advantage(P, r, gamma, pi)
        weight = rho / (1 - gamma) if from_rho else _state_occupancy(P, rho, gamma, pi)
        out: FloatArray = weight[:, None] * pi * A
        return out if normalised else (1 - gamma) * out

    return mean


DIAGNOSABLE = (
    KnownBug("occupancy-transposed-kernel",
             "solves (I - gamma P_pi) lam = rho instead of (I - gamma P_pi^T) lam = rho",
             occupancy_transposed),
    KnownBug("occupancy-overwritten-sum",
             "the running sum is overwritten instead of accumulated", occupancy_overwritten),
    KnownBug("occupancy-estimator-post-step",
             "records s_{t+1} instead of s_t, i.e. sum_{t<H} gamma^t e(s_{t+1}, a_{t+1}): "
             "shifted by one step",
             lambda P, rho, gamma, pi, H: _occupancy_mean(P, rho, gamma, pi, H, True, 1)),
    KnownBug("occupancy-estimator-gamma-t-dropped",
             "visit counts summed without the gamma^t weights",
             lambda P, rho, gamma, pi, H: _occupancy_mean(P, rho, gamma, pi, H, False, 0)),
    KnownBug("policy-gradient-estimator-initial-states",
             "draws the state from rho instead of d_pi", _pg_mean(True, True)),
    KnownBug("policy-gradient-estimator-missing-normalisation",
             "omits the 1/(1 - gamma) that turns d_pi into lam", _pg_mean(False, False)),
    KnownBug("advantage-uniform-baseline",
             "subtracts the unweighted mean of Q over actions instead of V",
             advantage_uniform_baseline),
    KnownBug("policy-gradient-normalised-occupancy",
             "weights the gradient by d = (1 - gamma) lam instead of lam",
             policy_gradient_normalised),
)
"""The planted bugs in their checks' canonical signatures (for a sampled estimator, its exact
mean: ``fn(P, rho, gamma, pi, H)`` for the occupancy, ``fn(P, r, rho, gamma, theta)`` for the
gradient), which the diagnoses try."""
