"""Validity and tightness of the tabular certificates (SPEC section 1;
proofs_notes/certificates.md).

Every certificate is checked where it is nearly attained: ``true error <= certificate``
with the true error from exact rational arithmetic, and ``certificate <= c * true error``
with the constant ``c`` stated for the instance.  Iterative routes are stopped early on
purpose so that the truncation, not rounding, is what the certificate has to cover.  The LU
certificates ``(residual + rounding) / (1 - gamma)`` are dominated by their rounding
allowance, a worst-case constant that cannot be tight against the true error of a
backward-stable solve; for them the test checks the derivation term by term (the documented
formula, evaluated independently) on the instance that attains ``||(I - gamma P)^{-1}|| =
1/(1-gamma)``, plus validity against exact arithmetic.  Rewards scaled by ``1e6`` (or
``1e-6``) make a value certificate and an occupancy certificate differ by orders of
magnitude, so one cannot stand in for the other.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from reference.errors import SolverError
from reference.tabular import (
    TabularMDP,
    evaluate,
    evaluate_iterative,
    evaluate_with_occupancy,
    kernel_under,
    occupancy,
    occupancy_iterative,
    policy_iteration,
    value_iteration,
)
from verify.symbolic import rational_tabular_solution

EPS = float(np.finfo(np.float64).eps)


def _fractions(matrix: object) -> list[Fraction]:
    """Entries of a sympy column as Fractions (exact)."""
    return [Fraction(int(x.p), int(x.q)) for x in matrix]  # type: ignore[attr-defined]


def _inf_error(x: np.ndarray, exact: list[Fraction]) -> Fraction:
    return max(abs(Fraction(float(a)) - b) for a, b in zip(x.ravel(), exact, strict=True))


def _l1_error(x: np.ndarray, exact: list[Fraction]) -> Fraction:
    return sum((abs(Fraction(float(a)) - b) for a, b in zip(x.ravel(), exact, strict=True)),
               Fraction(0))


def _transient_then_absorbing(gamma: float, reward: float = 10.0) -> TabularMDP:
    """State 0 (reward ``reward``) moves to the absorbing state 1 (reward 1), whatever the
    action.  The value iteration's error is ``gamma^k/(1-gamma)`` at every state while the a
    priori bound ``gamma^k ||r||/(1-gamma)`` is ``reward`` times larger: the a posteriori
    bound is the one that must be tight."""
    P = np.zeros((2, 2, 2))
    P[:, :, 1] = 1.0
    r = np.array([[reward, reward], [1.0, 1.0]])
    return TabularMDP(P, r, np.array([1.0, 0.0]), gamma)


def _ring(n: int, gamma: float, stay: float) -> TabularMDP:
    """A ring of ``n`` states, two actions: action 0 stays with probability ``stay``,
    action 1 moves on.  Near ``stay = 1`` and ``gamma`` near 1 the resolvent's norm
    ``1/(1-gamma)`` is nearly attained."""
    P = np.zeros((n, 2, n))
    for s in range(n):
        P[s, 0, s] = stay
        P[s, 0, (s + 1) % n] = 1.0 - stay
        P[s, 1, (s + 1) % n] = 1.0
    rng = np.random.default_rng(7)
    r = rng.uniform(0.0, 1.0, size=(n, 2))
    rho = np.zeros(n)
    rho[0] = 1.0
    return TabularMDP(P, r, rho, gamma)


def _near_deterministic(n: int) -> np.ndarray:
    pi = np.full((n, 2), 1e-9)
    pi[:, 0] = 1.0 - 1e-9
    return pi


# ------------------------------------------------------------------ iterative routes
def test_evaluate_iterative_certificate_is_attained() -> None:
    """Stopped early at ``tol = 0.05``: the a posteriori bound ``gamma ||V_k - V_{k-1}|| /
    (1-gamma)`` equals the true error ``gamma^k/(1-gamma)`` in exact arithmetic, so
    ``true <= certificate <= (1 + 1e-9) true`` (the excess is the rounding allowance)."""
    mdp = _transient_then_absorbing(0.5)
    pi = np.full((2, 2), 0.5)
    sol = evaluate_iterative(mdp, pi, tol=0.05)
    exact = _fractions(rational_tabular_solution(mdp, pi).V)
    true = float(_inf_error(sol.x, exact))
    assert true > 0.01  # the iteration really was stopped early
    assert true <= sol.error_bound <= (1 + 1e-9) * true


def test_evaluate_iterative_certificate_is_attained_near_gamma_one() -> None:
    """The same at ``gamma = 0.99`` with a constant reward (error ``gamma^k/(1-gamma)``
    exactly at every state); ``c = 1 + 1e-9``."""
    mdp = _ring(4, 0.99, 0.999)
    mdp = TabularMDP(mdp.P, np.ones((4, 2)), mdp.rho, mdp.gamma)
    pi = _near_deterministic(4)
    sol = evaluate_iterative(mdp, pi, tol=1.0)
    exact = _fractions(rational_tabular_solution(mdp, pi).V)
    true = float(_inf_error(sol.x, exact))
    assert true > 0.5
    assert true <= sol.error_bound <= (1 + 1e-9) * true


def test_occupancy_iterative_certificate_is_exact() -> None:
    """``||lam_S - lam_k||_1 = gamma^k / (1 - gamma)`` exactly (the occupancy iterates
    increase to their limit), and both the a priori and the a posteriori bound equal it;
    ``c = 1 + 1e-9``.  An inf-norm certificate would be ``nS`` times too small here: the
    missing mass is spread evenly over the ring."""
    mdp = _ring(4, 0.9, 0.25)
    pi = np.full((4, 2), 0.5)
    sol = occupancy_iterative(mdp, pi, tol=0.2)
    exact = _fractions(rational_tabular_solution(mdp, pi).lam_S)
    true = float(_l1_error(sol.x, exact))
    assert true > 0.1
    assert true <= sol.error_bound <= (1 + 1e-9) * true


def test_value_iteration_certificate_is_attained() -> None:
    """Stopped early at ``tol = 0.05``: with one dominant action per state and the transient
    state, ``V* - V_k = gamma^k/(1-gamma)`` at every state and the a posteriori bound equals
    it; ``c = 1 + 1e-9``.  Exact ``V*`` from the optimal (deterministic) policy in rational
    arithmetic."""
    mdp = _transient_then_absorbing(0.5)
    r = mdp.r.copy()
    r[:, 1] -= 0.5  # action 1 dominated everywhere
    mdp = TabularMDP(mdp.P, r, mdp.rho, mdp.gamma)
    sol = value_iteration(mdp, tol=0.05)
    best = np.array([[1.0, 0.0], [1.0, 0.0]])
    exact = _fractions(rational_tabular_solution(mdp, best).V)
    true = float(_inf_error(sol.V, exact))
    assert true > 0.01
    assert true <= sol.error_bound <= (1 + 1e-9) * true


def test_policy_iteration_certificate_covers_a_near_tie() -> None:
    """Policy iteration stops at a policy whose Bellman-optimality residual is just below its
    improvement threshold ``8 nS eps scale / (1 - gamma)``: state 0 (absorbing) has an
    action better by ``delta = 0.9 * threshold``, so ``V* - V_pi = delta / (1 - gamma)`` there
    (exact arithmetic).  The certificate must contain the residual term
    ``max(T* V - V) / (1 - gamma)``; on this instance it is within ``c = 2`` of the truth."""
    n, g = 8, 0.5
    P = np.zeros((n, 2, n))
    P[np.arange(n), :, np.arange(n)] = 1.0
    r = np.ones((n, 2))
    scale = 1.0 / (1.0 - g) + 1.0
    threshold = 8 * n * EPS * scale / (1.0 - g)
    r[0, 1] = 1.0 + 0.9 * threshold
    mdp = TabularMDP(P, r, np.full(n, 1.0 / n), g)
    sol = policy_iteration(mdp)
    assert sol.greedy[0] == 0  # the near-tie was not taken
    optimal = np.zeros((n, 2))
    optimal[:, 0] = 1.0
    optimal[0] = [0.0, 1.0]
    exact = _fractions(rational_tabular_solution(mdp, optimal).V)
    true = float(_inf_error(sol.V, exact))
    assert true > 0.0
    assert true <= sol.error_bound <= 2.0 * true


# ------------------------------------------------------------------ LU certificates
def _value_rounding(mdp: TabularMDP, V: np.ndarray) -> float:
    """Documented rounding of forming ``P_pi``, ``r_pi`` (``nA`` terms per entry) and
    evaluating ``(I - gamma P_pi) V - r_pi`` (``nS + 2`` roundings per entry, Higham 2002
    eq. 3.5): ``(nS + nA + 2) eps ((1 + gamma) ||V||_inf + max |r|)``."""
    n, g = mdp.n_states + mdp.n_actions, mdp.gamma
    return (n + 2) * EPS * ((1 + g) * float(np.max(np.abs(V))) + float(np.max(np.abs(mdp.r))))


def _occupancy_rounding(mdp: TabularMDP, lam_S: np.ndarray) -> float:
    """The same for ``(I - gamma P_pi^T) lam_S - rho`` in l1, with ``||rho||_1 = 1``."""
    n, g = mdp.n_states + mdp.n_actions, mdp.gamma
    return (n + 2) * EPS * ((1 + g) * float(np.sum(np.abs(lam_S))) + 1.0)


_LU_CASES = [
    pytest.param(0.99, 0.999, id="gamma-0.99-sticky"),
    pytest.param(0.5, 0.25, id="gamma-0.5-mixing"),
]


def _exact_residual(M: np.ndarray, x: np.ndarray, b: np.ndarray) -> list[Fraction]:
    """``M x - b`` for the float arrays read exactly."""
    n = M.shape[0]
    return [
        sum((Fraction(float(M[i, j])) * Fraction(float(x[j])) for j in range(n)), Fraction(0))
        - Fraction(float(b[i]))
        for i in range(n)
    ]


@pytest.mark.parametrize(("gamma", "stay"), _LU_CASES)
def test_evaluate_certificate_derivation(gamma: float, stay: float) -> None:
    """``error_bound = (||(I - gamma P_pi) V - r_pi||_inf + rounding) / (1 - gamma)``.

    Valid against exact arithmetic; at least the rounding allowance over ``1 - gamma``
    (a halved certificate, or one without the allowance, falls below it: the computed
    residual can be 0 while the exact one is not); and at most the exact residual plus twice
    the allowance (the computed residual differs from the exact one by at most one
    allowance), over ``1 - gamma``."""
    n = 6
    mdp = _ring(n, gamma, stay)
    mdp = TabularMDP(mdp.P, 1e6 * mdp.r, mdp.rho, mdp.gamma)
    pi = _near_deterministic(n)
    vals = evaluate(mdp, pi)
    P_pi, r_pi = kernel_under(mdp, pi)
    M = np.eye(n) - gamma * P_pi
    res_exact = float(max(abs(e) for e in _exact_residual(M, vals.V, r_pi)))
    rounding = _value_rounding(mdp, vals.V)
    exact = _fractions(rational_tabular_solution(mdp, pi).V)
    assert float(_inf_error(vals.V, exact)) <= vals.error_bound
    assert vals.error_bound >= rounding / (1 - gamma)
    assert vals.error_bound <= (res_exact + 2 * rounding) / (1 - gamma)


@pytest.mark.parametrize(("gamma", "stay"), _LU_CASES)
def test_occupancy_certificate_derivation(gamma: float, stay: float) -> None:
    """``error_bound = (||(I - gamma P_pi^T) lam_S - rho||_1 + rounding) / (1 - gamma)``:
    valid against exact arithmetic, at least the allowance and at most the exact residual
    plus twice the allowance, over ``1 - gamma``."""
    n = 6
    mdp = _ring(n, gamma, stay)
    rho = np.random.default_rng(3).dirichlet(np.ones(n))
    mdp = TabularMDP(mdp.P, mdp.r, rho, mdp.gamma)
    pi = _near_deterministic(n)
    occ = occupancy(mdp, pi)
    P_pi, _ = kernel_under(mdp, pi)
    M = np.eye(n) - gamma * P_pi.T
    res_exact = float(sum(abs(e) for e in _exact_residual(M, occ.lam_S, mdp.rho)))
    rounding = _occupancy_rounding(mdp, occ.lam_S)
    exact = _fractions(rational_tabular_solution(mdp, pi).lam_S)
    assert float(_l1_error(occ.lam_S, exact)) <= occ.error_bound
    assert occ.error_bound >= rounding / (1 - gamma)
    assert occ.error_bound <= (res_exact + 2 * rounding) / (1 - gamma)


@pytest.mark.parametrize(("gamma", "stay"), _LU_CASES)
def test_shared_factorisation_certificates_are_each_their_own(gamma: float, stay: float
                                                             ) -> None:
    """:func:`evaluate_with_occupancy` keeps the value certificate (inf norm, the scale of
    ``V``) and the occupancy certificate (l1, the scale ``1/(1-gamma)``) apart.  With rewards
    ``1e6`` they differ by about ``1e6``; each lies between its allowance and its exact
    residual plus twice the allowance, over ``1 - gamma``, so neither can stand in for the
    other, and the value certificate is valid against exact arithmetic."""
    n = 6
    mdp = _ring(n, gamma, stay)
    mdp = TabularMDP(mdp.P, 1e6 * mdp.r, mdp.rho, mdp.gamma)
    pi = _near_deterministic(n)
    vals, occ = evaluate_with_occupancy(mdp, pi)
    P_pi, r_pi = kernel_under(mdp, pi)
    M = np.eye(n) - gamma * P_pi
    v_res = float(max(abs(e) for e in _exact_residual(M, vals.V, r_pi)))
    o_res = float(sum(abs(e) for e in _exact_residual(M.T.copy(), occ.lam_S, mdp.rho)))
    v_round = _value_rounding(mdp, vals.V)
    o_round = _occupancy_rounding(mdp, occ.lam_S)
    assert v_round / (1 - gamma) <= vals.error_bound <= (v_res + 2 * v_round) / (1 - gamma)
    assert o_round / (1 - gamma) <= occ.error_bound <= (o_res + 2 * o_round) / (1 - gamma)
    exact = _fractions(rational_tabular_solution(mdp, pi).V)
    assert float(_inf_error(vals.V, exact)) <= vals.error_bound


def _many_actions() -> tuple[TabularMDP, np.ndarray]:
    """One state, 2117 actions, ``gamma = 0.9999``, rewards ``U[0, 1]`` and a Dirichlet(0.3)
    policy.  The LU solve is trivial; the error is in forming ``r_pi = sum_a pi r`` and
    ``P_pi = sum_a pi P``, 2117 roundings each, amplified by ``1/(1 - gamma) = 1e4``."""
    rng = np.random.default_rng(1779)
    n_actions = int(rng.integers(100, 3000))
    rng.choice([0.9, 0.99, 0.999, 0.9999])
    rng.choice([1, 1e6])
    r = rng.uniform(0.0, 1.0, (1, n_actions))
    rng.choice([0.05, 0.3, 3])
    pi = rng.dirichlet(np.full(n_actions, 0.3), size=1)
    return TabularMDP(np.ones((1, n_actions, 1)), r, np.ones(1), 0.9999), pi


def test_lu_certificates_cover_the_formation_of_the_kernel() -> None:
    """With many actions per state, forming ``P_pi`` and ``r_pi`` commits ``nA`` roundings
    per entry, which a certificate counting only the residual's ``nS + 2`` misses: on this
    instance the exact error of ``V`` (rational arithmetic, the policy read exactly) is 1.4
    times ``(residual + 3 eps ((1 + gamma)|V| + |r_pi|)) / (1 - gamma)``.  The certificates
    count ``nS + nA + 2`` roundings against ``max |r|``; the worst case of ``nA`` roundings
    adding up cannot be tight for random data (here the certificate is about 500 times the
    error), so this checks validity only.  Exact values by the one-state closed form."""
    mdp, pi = _many_actions()
    assert mdp.n_actions == 2117
    # one state: V = sum pi r / (1 - gamma sum pi), lam_S = 1 / (1 - gamma sum pi), exactly
    weights = [Fraction(float(p)) for p in pi[0]]
    total = sum(weights, Fraction(0))
    denominator = 1 - Fraction(mdp.gamma) * total
    V_exact = [sum((w * Fraction(float(x)) for w, x in zip(weights, mdp.r[0], strict=True)),
                   Fraction(0)) / denominator]
    lam_exact = [1 / denominator]
    vals = evaluate(mdp, pi)
    true = float(_inf_error(vals.V, V_exact))
    old = (vals.residual + 3 * EPS * ((1 + mdp.gamma) * abs(float(vals.V[0]))
                                      + abs(float(pi[0] @ mdp.r[0])))) / (1 - mdp.gamma)
    assert true > old  # the instance attains the missing term
    assert true <= vals.error_bound
    shared, occ = evaluate_with_occupancy(mdp, pi)
    assert float(_inf_error(shared.V, V_exact)) <= shared.error_bound
    assert float(_l1_error(occ.lam_S, lam_exact)) <= occ.error_bound
    alone = occupancy(mdp, pi)
    assert float(_l1_error(alone.lam_S, lam_exact)) <= alone.error_bound


# ------------------------------------------------------------------ default tolerances
def _slow_chain() -> tuple[TabularMDP, np.ndarray]:
    mdp = _ring(4, 0.99, 0.999)
    return mdp, _near_deterministic(4)


def test_evaluate_iterative_default_tolerance() -> None:
    """The default ``tol = 1e-10`` is met (exact arithmetic) and a tolerance 100 times looser
    does not meet it on this instance (gamma = 0.99: the certificate is nearly attained)."""
    mdp, pi = _slow_chain()
    exact = _fractions(rational_tabular_solution(mdp, pi).V)
    default = evaluate_iterative(mdp, pi)
    assert default.error_bound <= 1e-10
    assert float(_inf_error(default.x, exact)) <= 1e-10
    loose = evaluate_iterative(mdp, pi, tol=1e-8)
    assert float(_inf_error(loose.x, exact)) > 1e-10


def test_occupancy_iterative_default_tolerance() -> None:
    mdp, pi = _slow_chain()
    exact = _fractions(rational_tabular_solution(mdp, pi).lam_S)
    default = occupancy_iterative(mdp, pi)
    assert default.error_bound <= 1e-10
    assert float(_l1_error(default.x, exact)) <= 1e-10
    loose = occupancy_iterative(mdp, pi, tol=1e-8)
    assert float(_l1_error(loose.x, exact)) > 1e-10


def test_value_iteration_default_tolerance() -> None:
    mdp, _ = _slow_chain()
    mdp = TabularMDP(mdp.P, np.ones((4, 2)) - np.array([0.0, 0.5]), mdp.rho, mdp.gamma)
    best = np.array([[1.0, 0.0]] * 4)
    exact = _fractions(rational_tabular_solution(mdp, best).V)
    default = value_iteration(mdp)
    assert default.error_bound <= 1e-10
    assert float(_inf_error(default.V, exact)) <= 1e-10
    loose = value_iteration(mdp, tol=1e-8)
    assert float(_inf_error(loose.V, exact)) > 1e-10


def test_iterative_routes_refuse_what_they_cannot_certify() -> None:
    mdp, pi = _slow_chain()
    with pytest.raises(SolverError, match="max_iter"):
        evaluate_iterative(mdp, pi, tol=1e-10, max_iter=10)
