"""The exact-rational route of SPEC section 1 against the float oracles (verify.symbolic).

SPEC section 1: "on tiny instances, exact rational arithmetic with sympy"; the routes must agree
(``proofs_notes/occupancy-and-flow.md``, ``proofs_notes/shadow-reward-gradient.md``).

How the tolerances are derived.  ``verify.symbolic`` reads every float64 of an instance exactly,
so it solves the instance itself.  A float record's ``error_bound`` certifies its solve relative
to the *float matrix and right side it formed*; the difference between those and the exact
ones is the rounding committed while forming them.  For ``M x = b`` with ``M = I - gamma P`` and
the float route solving ``M~ x~ = b~``::

    x~ - x = M^{-1} ((b~ - b) - (M~ - M) x~),
    ||x~ - x|| <= (||b~ - b|| + ||M~ - M|| ||x~||) / (1 - gamma)              (FORMATION)

in the inf-norm for values and the l1-norm for occupancies (``||M^{-1}|| <= 1/(1-gamma)`` in
both, SPEC section 1).  Each matrix error below is a standard summation bound: a sum of ``k``
non-negative products is computed with relative error at most ``k eps`` (Higham 2002, eq. 3.5).
The bounds are first order in ``eps``; a factor 2 on every formation term covers the second
order terms and the ``O(eps)`` departure of float-read rows from exact stochasticity (which
moves ``||M^{-1}||`` from ``1/(1-gamma)`` by a relative ``O(eps / (1-gamma))``).  Exact values
reach float64 through one rounding (``rtol = EPS`` below covers it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
import sympy
from hypothesis import example, given, settings

from reference.errors import ModelError, PolicyError
from reference.networked import (
    ConstraintPenaltyUtility,
    EntropyUtility,
    Graph,
    KLImitationUtility,
    LinearUtility,
    LocalizedSoftmaxPolicy,
    NetworkedMDP,
    QuadraticImitationUtility,
    Utility,
    solve,
)
from reference.tabular import TabularMDP, evaluate, occupancy
from verify import strategies as mst
from verify.symbolic import (
    RationalPolicy,
    exact_rational,
    rational_networked_solution,
    rational_tabular_solution,
    symbolic_gradient,
    symbolic_utility,
    to_float,
)
from verify.tolerances import EPS

SAFETY = 2.0
"""Factor on every first-order formation term (see the module docstring)."""


def _formation(rhs_error: float, matrix_error: float, x_norm: float, gamma: float) -> float:
    """(FORMATION) with the safety factor: extra error of a solve from rounded inputs."""
    return SAFETY * (rhs_error + matrix_error * x_norm) / (1.0 - gamma)


def _assert_l1_close(actual: np.ndarray, desired: np.ndarray, bound: float, what: str) -> None:
    """``||actual - desired||_1 <= bound`` plus one rounding of the exact values."""
    gap = float(np.sum(np.abs(np.asarray(actual) - np.asarray(desired))))
    allowed = bound + EPS * float(np.sum(np.abs(desired)))
    assert gap <= allowed, f"{what}: l1 gap {gap:.3g} > derived bound {allowed:.3g}"


def _random_rows(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Stochastic rows (Dirichlet(1)) along the last axis."""
    return rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])


# ------------------------------------------------------------------------------------------
# Tabular
# ------------------------------------------------------------------------------------------


@settings(max_examples=12, deadline=None)
@example(seed=0)
@example(seed=7)
@given(seed=mst.seeds())
def test_tabular_matches_rationals(seed: int) -> None:
    """V, Q, J, lam_S and lam of ``reference.tabular`` equal the exact rational solution."""
    rng = np.random.default_rng(seed)
    nS, nA = int(rng.integers(1, 5)), int(rng.integers(1, 4))
    gamma = float(rng.choice([0.0, rng.uniform(0.0, 0.95)]))
    mdp = TabularMDP(
        _random_rows(rng, (nS, nA, nS)),
        rng.uniform(-1.0, 1.0, (nS, nA)),
        _random_rows(rng, (nS,)),
        gamma,
    )
    pi = _random_rows(rng, (nS, nA))
    exact = rational_tabular_solution(mdp, pi)

    # Exact identities, in rationals (SPEC section 1): J = rho . V = <lam, r>, and the flow
    # lam_S(t) = rho(t) + gamma sum_{s,a} P[s,a,t] lam[s,a].  They hold exactly whatever the
    # float row sums of pi are.
    r = sympy.Matrix(nS, nA, lambda s, a: exact_rational(mdp.r[s, a]))
    assert exact.J == sum(exact.lam[s, a] * r[s, a] for s in range(nS) for a in range(nA))
    g = exact_rational(gamma)
    for t in range(nS):
        inflow = sum(
            exact_rational(mdp.P[s, a, t]) * exact.lam[s, a] for s in range(nS) for a in range(nA)
        )
        assert exact.lam_S[t] == exact_rational(mdp.rho[t]) + g * inflow

    floats = exact.to_float()
    vals, occ = evaluate(mdp, pi), occupancy(mdp, pi)
    r_max = float(np.max(np.abs(mdp.r)))
    # evaluate forms M~ = I - gamma fl(P_pi): fl(P_pi) sums nA products (nA eps relative),
    # gamma * . and 1 - . add one rounding each, so ||M~ - M||_inf <= (nA + 2) eps; r_pi sums
    # nA products, ||r_pi~ - r_pi||_inf <= nA eps r_max.
    v_norm = float(np.max(np.abs(vals.V))) + vals.error_bound
    tol_v = vals.error_bound + _formation(nA * EPS * r_max, (nA + 2) * EPS, v_norm, gamma)
    np.testing.assert_allclose(vals.V, floats.V, rtol=EPS, atol=tol_v)
    # Q = r + gamma P V: |Q err| <= gamma |V err| + rounding of a sum of nS products plus two
    # more operations, (nS + 3) eps (r_max + gamma ||V||).
    tol_q = gamma * tol_v + (nS + 3) * EPS * (r_max + gamma * v_norm)
    np.testing.assert_allclose(vals.Q, floats.Q, rtol=EPS, atol=tol_q)
    # J = rho . V: |J err| <= ||V err||_inf + nS eps ||V||_inf.
    np.testing.assert_allclose(vals.J, floats.J, rtol=EPS, atol=tol_v + nS * EPS * v_norm)
    # occupancy: M~ = I - gamma fl(P_pi)^T, the same (nA + 2) eps in the l1 operator norm;
    # rho is used as stored (no right-side error).
    lam_norm = float(np.sum(np.abs(occ.lam_S))) + occ.error_bound
    tol_lam_s = occ.error_bound + _formation(0.0, (nA + 2) * EPS, lam_norm, gamma)
    _assert_l1_close(occ.lam_S, floats.lam_S, tol_lam_s, "lam_S")
    # lam = lam_S pi: rows of pi sum to 1 + O(nA eps), plus one rounding per product.
    _assert_l1_close(occ.lam, floats.lam, tol_lam_s + (nA + 1) * EPS * lam_norm, "lam")


# ------------------------------------------------------------------------------------------
# Networked: shared helpers
# ------------------------------------------------------------------------------------------


def _binary_line(n: int, gamma: float, rng: np.random.Generator, joint_rho: bool) -> NetworkedMDP:
    """``n`` agents on a line, two local states and actions, random kernels and rho."""
    graph = Graph.line(n)
    kernels = tuple(_random_rows(rng, (2 ** len(graph.neighbourhood(i)), 2, 2)) for i in range(n))
    rho: tuple[np.ndarray, ...] | np.ndarray
    if joint_rho:
        rho = _random_rows(rng, (2**n,))
    else:
        rho = tuple(_random_rows(rng, (2,)) for _ in range(n))
    return NetworkedMDP(graph, (2,) * n, (2,) * n, kernels, gamma, rho)


def _utilities(kind: str, model: NetworkedMDP, rng: np.random.Generator) -> list[Utility]:
    shapes = [(model.n_states[i], model.n_actions[i]) for i in range(model.n)]
    if kind == "linear":
        return [LinearUtility(rng.uniform(-1.0, 1.0, s), model.gamma) for s in shapes]
    return [EntropyUtility(s, model.gamma) for s in shapes]


def _reward_error(f: Utility, lam: np.ndarray, e_lam: float) -> float:
    """Bound on ``||grad f(lam) - grad f(lam')||_inf`` for ``||lam' - lam||_1 <= e_lam``.

    Linear: the gradient is constant, 0.  Entropy: ``df/dlam[s, a] = (1-gamma) g(p_s)`` with
    ``p_s = (1-gamma) sum_a lam[s, a]``, so ``|dp_s| <= (1-gamma) e_lam`` and
    ``|d r[s, a]| <= (1-gamma)^2 sup |g'| e_lam``, the sup over ``|q - p_s| <= (1-gamma) e_lam``;
    ``|g'(q)| = (q + 2 eps)/(q + eps)^2`` decreases for ``q > -eps`` (utilities module
    docstring), so the sup is at ``q = p_s - (1-gamma) e_lam``.  This local constant replaces the
    declared worst case ``2/eps`` (attained only at ``p = 0``).
    """
    if isinstance(f, LinearUtility):
        return 0.0
    assert isinstance(f, EntropyUtility)
    scale = 1.0 - f.gamma
    q = scale * np.sum(lam, axis=1) - scale * e_lam
    assert np.all(q > -f.eps), "error ball leaves the utility's domain"
    slope = float(np.max((q + 2 * f.eps) / (q + f.eps) ** 2))
    return scale**2 * slope * e_lam


def _gradient_rounding(f: Utility) -> float:
    """Rounding of ``f.gradient`` at a fixed (float) ``lam``, in the inf-norm.

    Linear: a copy, 0.  Entropy: ``p = (1-gamma) sum_a lam`` is within ``(nA + 2) eps``
    relative; ``|g'(p)| p <= 2`` turns that into ``2 (nA + 2) eps`` on ``g(p)``; ``log``,
    ``p/(p+eps)``, the subtraction and the factor ``1-gamma`` add at most
    ``4 eps (|log eps| + 2)`` (``|g| <= |log eps| + 1`` on ``[0, 1]``).
    """
    if isinstance(f, LinearUtility):
        return 0.0
    assert isinstance(f, EntropyUtility)
    n_actions = f.shape[1]
    return (1.0 - f.gamma) * (2 * n_actions + 8) * EPS * (abs(math.log(f.eps)) + 2.0)


def _value_rounding(f: Utility, lam_norm: float) -> float:
    """Rounding of ``f.value`` at a fixed (float) ``lam`` of l1 mass ``lam_norm``.

    Linear: ``m`` products summed, ``m eps max|r| ||lam||_1`` (``m = nS nA``).  Entropy: each
    term ``p log(p + eps)`` is within ``eps p ((nA + 2)(|log eps| + 1) + 2 |log eps| + 1)``
    (the error of ``p`` times ``|d/dp| <= |log eps| + 1``, plus ``log`` and the product), and the
    dot product over ``nS`` terms adds ``nS eps sum p |log|``; with ``sum p = 1`` this is at most
    ``(nA + nS + 5) eps (|log eps| + 1)``.
    """
    n_states, n_actions = f.shape
    if isinstance(f, LinearUtility):
        return n_states * n_actions * EPS * float(np.max(np.abs(f.reward))) * lam_norm
    assert isinstance(f, EntropyUtility)
    return (n_actions + n_states + 5) * EPS * (abs(math.log(f.eps)) + 1.0)


# ------------------------------------------------------------------------------------------
# Networked: solution
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["linear", "entropy"])
@pytest.mark.parametrize("beta", [0, 1])
@pytest.mark.parametrize("n", [2, 3])
def test_networked_matches_rationals(n: int, beta: int, kind: str) -> None:
    """lam_S, lam_i, shadow rewards, F and shadow values of ``solve`` equal the exact ones."""
    rng = np.random.default_rng([n, beta, kind == "entropy"])
    gamma = 0.9
    model = _binary_line(n, gamma, rng, joint_rho=(n == 2))
    policy = LocalizedSoftmaxPolicy.random(model, beta, rng)
    utilities = _utilities(kind, model, rng)
    sol = solve(model, policy, utilities)
    exact = rational_networked_solution(model, policy, utilities).to_float()
    nS = model.states.size

    # Formation of the float P_pi (DenseOperator): agent j's factor sums |A_j| products, the
    # joint entry multiplies n factors, so each entry is within c_P eps relative with
    # c_P = sum_j |A_j| + n; the certificate uses that float matrix, ||M~ - M|| <= gamma c_P eps.
    # A product rho is a float outer product, (n - 1) eps relative, (n - 1) eps in l1.
    c_p = sum(model.n_actions) + n
    rho_error = 0.0 if n == 2 else (n - 1) * EPS
    lam_norm = float(np.sum(np.abs(sol.lam_S))) + sol.occupancy_error_bound
    e_lam_s = sol.occupancy_error_bound + _formation(rho_error, gamma * c_p * EPS, lam_norm, gamma)
    _assert_l1_close(sol.lam_S, exact.lam_S, e_lam_s, "lam_S")

    e_rewards = []
    for i, f in enumerate(utilities):
        # lam_i = marginal of lam_S pi_i: the lam_S error plus one product and a sum of at
        # most nS terms per entry, (nS + 1) eps ||lam_S||_1.
        e_lam_i = e_lam_s + (nS + 1) * EPS * lam_norm
        _assert_l1_close(sol.local_occupancy[i], exact.local_occupancy[i], e_lam_i, f"lam_{i}")
        # shadow reward r_i = grad f_i(lam_i): the change of the gradient over the error ball
        # around the float lam_i, plus the rounding of evaluating it.
        e_r = _reward_error(f, sol.local_occupancy[i], e_lam_i) + _gradient_rounding(f)
        np.testing.assert_allclose(
            sol.shadow_rewards[i], exact.shadow_rewards[i], rtol=EPS, atol=e_r
        )
        e_rewards.append(e_r)
        # f_i(lam_i): |f(x) - f(y)| <= G ||x - y||_1 (G = declared sup-norm gradient bound;
        # the safety factor covers lam~ lying O(eps) outside the reachable set).
        e_f = SAFETY * f.constants.gradient_bound * e_lam_i + _value_rounding(f, lam_norm)
        np.testing.assert_allclose(sol.local_utility[i], exact.local_utility[i], rtol=EPS, atol=e_f)
    # F = mean of the f_i: the mean error plus n eps max |f_i| for the float mean.
    e_objective = float(
        np.mean(
            [
                SAFETY * f.constants.gradient_bound * (e_lam_s + (nS + 1) * EPS * lam_norm)
                + _value_rounding(f, lam_norm)
                for f in utilities
            ]
        )
    ) + n * EPS * float(np.max(np.abs(sol.local_utility)))
    np.testing.assert_allclose(sol.objective, exact.objective, rtol=EPS, atol=e_objective)

    # Shadow values V_i = (I - gamma P_pi)^{-1} R_i^pi: the float R_i^pi sums |A_i| products of
    # float rewards, ||dR_i||_inf <= e_r_i + |A_i| eps max|r_i|; the matrix as above.
    r_max = max(float(np.max(np.abs(r))) for r in sol.shadow_rewards)
    e_big_r = max(e_rewards) + max(model.n_actions) * EPS * r_max
    v_norm = float(np.max(np.abs(sol.require_shadow_values()))) + sol.value_error_bound
    e_v = sol.value_error_bound + _formation(e_big_r, gamma * c_p * EPS, v_norm, gamma)
    np.testing.assert_allclose(sol.require_shadow_values(), exact.shadow_values, rtol=EPS, atol=e_v)
    np.testing.assert_allclose(
        sol.team_value, exact.team_value, rtol=EPS, atol=e_v + n * EPS * v_norm
    )


# ------------------------------------------------------------------------------------------
# Networked: gradient by symbolic differentiation
# ------------------------------------------------------------------------------------------


def _policy_rounding(policy: LocalizedSoftmaxPolicy) -> float:
    """Relative error (in units of eps) of the float ``probs`` of ``RationalPolicy.to_float``.

    ``theta = fl(log w)`` is within ``eps |theta| / 2``; the float softmax forms
    ``z = theta - max theta`` (``|dz| <= eps (|z| + 2 max|theta|) <= 4 eps max|theta|``),
    ``exp(z)`` (``|dz| + eps`` relative), a sum of ``|A|`` terms (``|A| eps`` more) and one
    division.  A ratio of a term to the sum doubles the terms' relative error:
    ``2 (4 max|theta| + 1) + |A| + 1``.
    """
    theta_max = max(float(np.max(np.abs(t))) for t in policy.theta)
    n_actions = max(int(p.shape[1]) for p in policy.probs)
    return 2.0 * (4.0 * theta_max + 1.0) + n_actions + 1.0


@pytest.mark.parametrize("kind", ["linear", "entropy"])
def test_gradient_matches_symbolic_differentiation(kind: str) -> None:
    """``solve(...).gradient`` (shadow-reward PG theorem) equals ``sympy.diff`` of F."""
    rng = np.random.default_rng([2, 0, kind == "entropy", 17])
    gamma = 0.9
    model = _binary_line(2, gamma, rng, joint_rho=False)
    exact_policy = RationalPolicy(model, 0, ([[1, 2], [3, 1]], [[2, 1], ["1/2", 4]]))
    policy = exact_policy.to_float()
    utilities = _utilities(kind, model, rng)
    symbolic = symbolic_gradient(model, exact_policy, utilities)
    sol = solve(model, policy, utilities)

    # Exact checks.  Softmax shift invariance: sum_b dF/dtheta_i[o, b] = 0 for every row.
    for grad in symbolic.gradient:
        for o in range(grad.rows):
            row_sum = sympy.Add(*[grad[o, b] for b in range(grad.cols)])
            assert abs(sympy.N(row_sum, 60)) < sympy.Float(10) ** -50
    # Two exact routes to F (QQ flow solve vs the ZZ[x] solve at x = w) agree to 50 digits.
    objective = rational_networked_solution(model, exact_policy, utilities).objective
    assert abs(sympy.N(symbolic.objective - objective, 60)) < sympy.Float(10) ** -50

    # Tolerance, propagated from the float record's certified bounds through the route-1
    # formula grad_i[o, b] = sum_{s: o_i(s) = o} lam_S(s) pi_i(b|o) A_i(s, b) with
    # A_i = (1/n)(r_i - R_i) + Rbar + gamma P^{(i,b)} Vbar - Vbar.
    n, nS = model.n, model.states.size
    c_pi = _policy_rounding(policy)  # float probs vs w / sum w, relative, in eps
    c_p = sum(model.n_actions) + n + n * c_pi  # float P_pi vs exact P_pi, relative, in eps
    lam_norm = float(np.sum(np.abs(sol.lam_S))) + sol.occupancy_error_bound
    e_lam_s = sol.occupancy_error_bound + _formation(
        (n - 1) * EPS, gamma * c_p * EPS, lam_norm, gamma
    )
    e_lam = e_lam_s + (nS + 1 + c_pi) * EPS * lam_norm  # marginals use the float pi_i
    r_max = max(float(np.max(np.abs(r))) for r in sol.shadow_rewards)
    e_r = max(
        _reward_error(f, lam, e_lam) + _gradient_rounding(f)
        for f, lam in zip(utilities, sol.local_occupancy, strict=True)
    )
    e_big_r = e_r + (max(model.n_actions) + c_pi) * EPS * r_max  # R_i^pi = sum_a pi_i r_i
    v_norm = float(np.max(np.abs(sol.require_shadow_values()))) + sol.value_error_bound
    e_v = sol.value_error_bound + _formation(e_big_r, gamma * c_p * EPS, v_norm, gamma)
    # A_i: (1/n)(e_r + e_R) + e_R <= 2 e_R for n >= 2; gamma (e_V + formation of P^{(i,b)},
    # relative c_p eps of ||Vbar||); e_V for Vbar; 8 roundings of terms <= r_max + ||V||.
    e_adv = 2 * e_big_r + (1 + gamma) * e_v + gamma * c_p * EPS * v_norm
    e_adv += 8 * EPS * (r_max + v_norm)
    adv_max = 2 * r_max / (1 - gamma)  # |Qbar^{(i)}|, |Vbar| <= r_max / (1 - gamma)
    # sum_s lam_S pi A: d(lam_S) in l1 times max|pi A|, ||lam_S||_1 times (dA + A d(pi)), and
    # the rounding of nS + 3 products and sums.
    tol = e_lam_s * adv_max + lam_norm * (e_adv + c_pi * EPS * adv_max)
    tol += (nS + 3) * EPS * lam_norm * adv_max
    for float_grad, exact_grad in zip(sol.gradient, symbolic.to_float(), strict=True):
        np.testing.assert_allclose(float_grad, exact_grad, rtol=EPS, atol=tol)
    # The float policy itself, read exactly (its table renormalised exactly: |A| + 1 eps
    # relative, inside c_pi), gives the same gradient within the same derived tolerance.
    at_float_table = symbolic_gradient(model, policy, utilities).to_float()
    for float_grad, exact_grad in zip(sol.gradient, at_float_table, strict=True):
        np.testing.assert_allclose(float_grad, exact_grad, rtol=EPS, atol=tol)


# ------------------------------------------------------------------------------------------
# Utilities, validation and size limits
# ------------------------------------------------------------------------------------------


def _utility_of_kind(kind: str, rng: np.random.Generator, gamma: float) -> Utility:
    shape = (3, 2)
    target = _random_rows(rng, (6,)).reshape(shape)
    if kind == "linear":
        return LinearUtility(rng.uniform(-1.0, 1.0, shape), gamma)
    if kind == "entropy":
        return EntropyUtility(shape, gamma)
    if kind == "quadratic":
        return QuadraticImitationUtility(target, gamma)
    return KLImitationUtility(target, gamma)


def _term_rounding(f: Utility) -> tuple[float, float]:
    """``(value, gradient)`` rounding of the float utility at a reachable ``lam`` (l1 mass
    ``1/(1-gamma)``), ``m = nS nA`` entries.

    Each float formula evaluates ``m`` (or ``nS``) terms with at most 8 roundings each and sums
    them (``m eps`` relative to the sum of magnitudes, Higham eq. 3.5): value rounding
    ``<= (m + 8) eps T`` with ``T`` a bound on the sum of the terms' magnitudes: linear
    ``max|r| / (1-gamma)``; entropy ``|log eps| + 1`` (``sum p = 1``); quadratic 6
    (``sum (|d| + |t|)^2 + sum |d| (|d| + |t|)`` with ``d, t`` distributions); KL
    ``2 |log eps| + 2``.  Gradient rounding ``<= (1-gamma)(2 nA + 8) eps U`` with ``U`` the
    analogous bound on one entry's magnitude before the factor ``1-gamma``.
    """
    n_states, n_actions = f.shape
    m = n_states * n_actions
    scale = 1.0 - f.gamma
    if isinstance(f, LinearUtility):
        return (m + 8) * EPS * float(np.max(np.abs(f.reward))) / scale, 0.0
    if isinstance(f, QuadraticImitationUtility):
        return (m + 8) * EPS * 6.0, scale * (2 * n_actions + 8) * EPS * 2.0
    assert isinstance(f, (EntropyUtility, KLImitationUtility))
    log_eps = abs(math.log(f.eps))
    if isinstance(f, EntropyUtility):
        return (m + 8) * EPS * (log_eps + 1.0), scale * (2 * n_actions + 8) * EPS * (log_eps + 2.0)
    return (m + 8) * EPS * (2 * log_eps + 2.0), scale * (2 * n_actions + 8) * EPS * (
        2 * log_eps + 2.0
    )


@pytest.mark.parametrize("kind", ["linear", "entropy", "quadratic", "kl"])
def test_symbolic_utilities_match_float_formulas(kind: str) -> None:
    """``symbolic_utility`` and its ``sympy.diff`` agree with ``value`` and ``gradient``."""
    rng = np.random.default_rng([5, len(kind)])
    gamma = 0.75
    f = _utility_of_kind(kind, rng, gamma)
    lam = _random_rows(rng, (6,)).reshape(f.shape) / (1.0 - gamma)
    lam[0, 0] = 0.0  # a vanishing entry exercises the smoothing floor
    exact_lam = sympy.Matrix(*f.shape, lambda s, a: exact_rational(lam[s, a]))
    symbols = sympy.Matrix(*f.shape, lambda s, a: sympy.Symbol(f"l_{s}_{a}"))
    expr = symbolic_utility(f, symbols)
    at = {symbols[k]: exact_lam[k] for k in range(len(symbols))}
    exact_value = float(to_float(expr.xreplace(at)))
    exact_gradient = to_float(symbols.applyfunc(lambda v: sympy.diff(expr, v).xreplace(at)))
    value_tol, gradient_tol = _term_rounding(f)
    np.testing.assert_allclose(f.value(lam), exact_value, rtol=EPS, atol=value_tol)
    np.testing.assert_allclose(f.gradient(lam), exact_gradient, rtol=EPS, atol=gradient_tol)


def test_exact_inputs_are_validated() -> None:
    """Exact conversion is exact; bad weights, policies and utilities are refused by name."""
    assert exact_rational(0.1) == sympy.Rational(3602879701896397, 36028797018963968)
    assert exact_rational("1/3") == sympy.Rational(1, 3)
    with pytest.raises(ModelError, match="finite"):
        exact_rational(float("nan"))
    model = _binary_line(2, 0.5, np.random.default_rng(3), joint_rho=False)
    uniform = RationalPolicy.uniform(model)
    assert all(p == sympy.ones(2, 2) / 2 for p in uniform.probs)
    np.testing.assert_array_equal(uniform.to_float().theta[0], np.zeros((2, 2)))
    with pytest.raises(PolicyError, match=r"w_1\[o=0, a=1\] = 0"):
        RationalPolicy(model, 0, ([[1, 1], [1, 1]], [[1, 0], [1, 1]]))
    with pytest.raises(PolicyError, match="shape"):
        RationalPolicy(model, 1, ([[1, 1], [1, 1]], [[1, 1], [1, 1]]))
    penalty = ConstraintPenaltyUtility(EntropyUtility((2, 2), 0.5), threshold=0.1, weight=1.0)
    with pytest.raises(ModelError, match="no exact symbolic form"):
        rational_networked_solution(model, uniform, [penalty, penalty])
    with pytest.raises(PolicyError, match="negative"):
        rational_tabular_solution(
            TabularMDP(np.full((1, 2, 1), 1.0), np.zeros((1, 2)), np.ones(1), 0.5),
            np.array([[1.5, -0.5]]),
        )


def _uniform_line(n: int) -> NetworkedMDP:
    graph = Graph.line(n)
    kernels = tuple(np.full((2 ** len(graph.neighbourhood(i)), 2, 2), 0.5) for i in range(n))
    return NetworkedMDP(
        graph, (2,) * n, (2,) * n, kernels, 0.5, tuple(np.full(2, 0.5) for _ in range(n))
    )


def _linear(model: NetworkedMDP) -> Sequence[Utility]:
    return [LinearUtility(np.ones((2, 2)), model.gamma) for _ in range(model.n)]


def test_symbolic_refuses_instances_above_the_size_limits() -> None:
    """Each exact routine raises ModelError naming its documented limit, before any work."""
    big = TabularMDP(np.full((33, 1, 33), 1.0 / 33), np.zeros((33, 1)), np.full(33, 1.0 / 33), 0.5)
    with pytest.raises(ModelError, match="MAX_EXACT_STATES = 32"):
        rational_tabular_solution(big, np.ones((33, 1)))
    five = _uniform_line(5)  # 32 joint states
    with pytest.raises(ModelError, match="MAX_NETWORKED_STATES = 16"):
        rational_networked_solution(five, RationalPolicy.uniform(five), _linear(five))
    four = _uniform_line(4)  # 16 joint states
    with pytest.raises(ModelError, match="MAX_GRADIENT_STATES = 8"):
        symbolic_gradient(four, RationalPolicy.uniform(four), _linear(four))
