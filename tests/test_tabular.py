"""SPEC section 1 identities on random tabular MDPs (proofs_notes/occupancy-and-flow.md)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from hypothesis import example, given

from reference.tabular import (
    TabularMDP,
    evaluate,
    evaluate_iterative,
    evaluate_with_occupancy,
    occupancy,
    occupancy_iterative,
    performance_difference,
    policy_gradient,
    softmax,
)
from verify import strategies as mst
from verify.finite_differences import central_difference
from verify.tolerances import certified, summation_tolerance

# Edge cases pinned for every identity: one state and one action with gamma = 0, an
# absorbing two-state chain at the largest gamma, and near-deterministic logits.
_ONE_STATE = mst.TabularProblem(
    TabularMDP(np.ones((1, 1, 1)), np.array([[0.5]]), np.ones(1), 0.0),
    np.ones((1, 1)),
    np.ones((1, 1)),
    np.zeros((1, 1)),
)
_ABSORBING = mst.TabularProblem(
    TabularMDP(
        np.array([[[0.0, 1.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]]),
        np.array([[1.0, -1.0], [0.25, 0.0]]),
        np.array([1.0, 0.0]),
        0.95,
    ),
    np.array([[1.0, 0.0], [0.5, 0.5]]),
    np.array([[0.0, 1.0], [1.0, 0.0]]),
    np.array([[3.0, -3.0], [0.0, 0.0]]),
)


def _edge_cases(test: Callable[..., None]) -> Callable[..., None]:
    return example(problem=_ONE_STATE)(example(problem=_ABSORBING)(test))


@_edge_cases
@given(problem=mst.tabular_problems())
def test_occupancy_mass(problem: mst.TabularProblem) -> None:
    """sum lam = 1/(1-gamma), and d is a distribution."""
    mdp, occ = problem.mdp, occupancy(problem.mdp, problem.pi)
    mass = 1.0 / (1.0 - mdp.gamma)
    tol = certified(occ.error_bound) + summation_tolerance(occ.lam.size, mass)
    assert abs(occ.lam.sum() - mass) <= tol
    assert abs(occ.d.sum() - 1.0) <= tol * (1.0 - mdp.gamma)


@_edge_cases
@given(problem=mst.tabular_problems())
def test_bellman_flow(problem: mst.TabularProblem) -> None:
    """sum_a lam[s',a] = rho[s'] + gamma sum_{s,a} P[s,a,s'] lam[s,a] to rounding.

    The true occupancy satisfies the flow exactly, so the residual of the computed one is
    at most ||I - gamma P_pi^T||_1 ||lam_err||_1 <= (1 + gamma) error_bound, plus the
    rounding of evaluating the flow.
    """
    mdp, occ = problem.mdp, occupancy(problem.mdp, problem.pi)
    tol = (1 + mdp.gamma) * occ.error_bound + summation_tolerance(
        occ.lam.size, 1.0 / (1.0 - mdp.gamma)
    )
    assert occ.flow_residual <= tol


@_edge_cases
@given(problem=mst.tabular_problems())
def test_return_equals_occupancy_inner_product(problem: mst.TabularProblem) -> None:
    """J = rho . V = <lam, r>."""
    mdp = problem.mdp
    vals, occ = evaluate(mdp, problem.pi), occupancy(mdp, problem.pi)
    r_max = float(np.max(np.abs(mdp.r)))
    tol = certified(vals.error_bound, r_max * occ.error_bound) + summation_tolerance(
        occ.lam.size, r_max / (1.0 - mdp.gamma)
    )
    assert abs(vals.J - float(np.sum(occ.lam * mdp.r))) <= tol


@_edge_cases
@given(problem=mst.tabular_problems())
def test_bellman_consistency_and_zero_mean_advantage(problem: mst.TabularProblem) -> None:
    """V = sum_a pi Q (Bellman consistency) and sum_a pi A = 0 at every state.

    sum_a pi Q = r_pi + gamma P_pi V, which differs from V by the solve's residual.
    """
    mdp, pi = problem.mdp, problem.pi
    vals = evaluate(mdp, pi)
    scale = float(np.max(np.abs(vals.Q))) + float(np.max(np.abs(mdp.r)))
    tol = vals.residual + summation_tolerance(mdp.n_states * mdp.n_actions, scale)
    np.testing.assert_allclose(np.sum(pi * vals.Q, axis=1), vals.V, rtol=0, atol=tol)
    np.testing.assert_allclose(np.sum(pi * vals.A, axis=1), 0.0, rtol=0, atol=tol)


@_edge_cases
@given(problem=mst.tabular_problems())
def test_performance_difference(problem: mst.TabularProblem) -> None:
    """J(pi') - J(pi) = sum_{s,a} lam^{pi'}[s,a] A^pi[s,a] (Kakade-Langford)."""
    mdp = problem.mdp
    v_old, v_new = evaluate(mdp, problem.pi), evaluate(mdp, problem.pi_other)
    occ_new = occupancy(mdp, problem.pi_other)
    a_max = float(np.max(np.abs(v_old.A)))
    mass = 1.0 / (1.0 - mdp.gamma)
    # A^pi carries at most (1 + gamma) times the V error; lam^{pi'} its l1 error.
    tol = certified(
        v_old.error_bound,
        v_new.error_bound,
        a_max * occ_new.error_bound,
        mass * (1 + mdp.gamma) * v_old.error_bound,
    ) + summation_tolerance(occ_new.lam.size, a_max * mass)
    lhs = v_new.J - v_old.J
    assert abs(lhs - performance_difference(mdp, problem.pi, problem.pi_other)) <= tol


@_edge_cases
@given(problem=mst.tabular_problems(max_states=3, max_actions=3))
def test_policy_gradient_matches_finite_differences(problem: mst.TabularProblem) -> None:
    """PG theorem (closed form lam_S pi A) equals central differences of J(softmax(theta))."""
    mdp, theta = problem.mdp, problem.theta
    grad = policy_gradient(mdp, theta)
    vals = evaluate(mdp, softmax(theta))

    def J(x: np.ndarray) -> float:
        return evaluate(mdp, softmax(x.reshape(theta.shape))).J

    fd = central_difference(J, theta.reshape(-1), value_error=2 * vals.error_bound)
    np.testing.assert_array_less(np.abs(fd.gradient - grad.reshape(-1)), fd.tolerance)


@_edge_cases
@given(problem=mst.tabular_problems())
def test_linear_solve_matches_certified_iteration(problem: mst.TabularProblem) -> None:
    """The LU route and the certified fixed-point route agree within their two bounds."""
    mdp = problem.mdp
    vals, occ = evaluate(mdp, problem.pi), occupancy(mdp, problem.pi)
    it_v = evaluate_iterative(mdp, problem.pi, tol=1e-11)
    it_o = occupancy_iterative(mdp, problem.pi, tol=1e-11)
    assert it_v.error_bound <= 1e-11 or mdp.gamma == 0.0
    assert float(np.max(np.abs(it_v.x - vals.V))) <= certified(it_v.error_bound, vals.error_bound)
    assert float(np.sum(np.abs(it_o.x - occ.lam_S))) <= certified(it_o.error_bound, occ.error_bound)


@given(problem=mst.tabular_problems(max_gamma=0.9))
def test_certified_bound_is_not_vacuous(problem: mst.TabularProblem) -> None:
    """After k steps the occupancy iterate misses exactly gamma^k/(1-gamma) of mass.

    This pins the a priori bound as tight: lam_k has mass (1 - gamma^k)/(1 - gamma).
    """
    mdp = problem.mdp
    it = occupancy_iterative(mdp, problem.pi, tol=1e-6)
    k, g = it.iterations, mdp.gamma
    expected = (1 - g**k) / (1 - g)
    assert abs(float(it.x.sum()) - expected) <= summation_tolerance(k * mdp.n_states, 1 / (1 - g))


@_edge_cases
@given(problem=mst.tabular_problems())
def test_shared_factorisation_matches_separate_solves(problem: mst.TabularProblem) -> None:
    """evaluate_with_occupancy (one LU, a transposed solve) against evaluate and occupancy
    (two separate solves), each within its certified bound."""
    mdp, pi = problem.mdp, problem.pi
    vals, occ = evaluate_with_occupancy(mdp, pi)
    ref_v, ref_o = evaluate(mdp, pi), occupancy(mdp, pi)
    np.testing.assert_array_less(
        np.abs(vals.V - ref_v.V), certified(vals.error_bound, ref_v.error_bound) + 1e-300
    )
    assert float(np.sum(np.abs(occ.lam_S - ref_o.lam_S))) <= certified(
        occ.error_bound, ref_o.error_bound
    ) + summation_tolerance(mdp.n_states, 1 / (1 - mdp.gamma))
    assert abs(vals.J - ref_v.J) <= certified(vals.error_bound, ref_v.error_bound)


def test_certificates_cover_underflow_of_subnormal_rewards() -> None:
    """Rewards of 2.2e-313 (subnormal): products round by up to half the smallest subnormal
    in absolute terms, which a purely relative allowance (a multiple of eps * 2.2e-313, itself
    below the smallest subnormal) rounds to 0.  This instance made J = rho . V and <lam, r>
    differ by two smallest subnormals while the allowance was 0."""
    P = np.full((2, 2, 2), 0.5)
    r = np.full((2, 2), 2.2250738585e-313)
    mdp = TabularMDP(P=P, r=r, rho=np.array([0.5, 0.5]), gamma=0.0)
    pi = np.full((2, 2), 0.5)
    vals, occ = evaluate(mdp, pi), occupancy(mdp, pi)
    r_max = float(np.max(np.abs(mdp.r)))
    tol = certified(vals.error_bound, r_max * occ.error_bound) + summation_tolerance(
        occ.lam.size, r_max / (1.0 - mdp.gamma)
    )
    assert vals.error_bound > 0.0
    assert abs(vals.J - float(np.sum(occ.lam * mdp.r))) <= tol
