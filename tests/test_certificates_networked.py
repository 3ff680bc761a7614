"""Validity and tightness of the networked exact oracles' certificates, on both transition
backends (SPEC section 2; proofs_notes/matrix-free.md#certificate,
proofs_notes/certificates.md).

``solve`` reports two certificates: ``value_error_bound`` (inf norm, the scale of the team
value) and ``occupancy_error_bound`` (l1, the scale ``1/(1-gamma)``).  With rewards ``1e6``
they differ by six orders of magnitude, so each is checked against its own quantity: exact
rational arithmetic on a tiny instance, and a matrix-free fixed-point solve stopped early,
whose value error is nearly the certified one.  The matrix-free row-sum bound ``rho`` is
checked on 80 ring and line operators against the exact row sums of its float factors, and
``minimum_accuracy`` on both sides of its threshold.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from reference.errors import SolverError
from reference.networked import (
    DenseOperator,
    Graph,
    LinearUtility,
    LocalizedSoftmaxPolicy,
    MatrixFreeOperator,
    NetworkedMDP,
    contraction_plan,
    solve,
)
from reference.networked.matrix_free import minimum_accuracy
from verify.symbolic import rational_networked_solution

EPS = float(np.finfo(np.float64).eps)


def _binary(graph: Graph, rng: np.random.Generator, gamma: float = 0.9) -> NetworkedMDP:
    """Binary states and actions on ``graph``, Dirichlet(1, 1) kernel rows and local rho."""
    return NetworkedMDP.random(graph, (2,) * graph.n, (2,) * graph.n, rng, gamma=gamma)


def _big_rewards(model: NetworkedMDP, rng: np.random.Generator) -> tuple[LinearUtility, ...]:
    """Linear utilities with rewards in ``1e6 [1, 1.01]``: nearly constant and positive, so a
    fixed-point value iterate falls short of the truth by nearly ``||residual|| / (1-gamma)``,
    and values are ``1e6`` times the occupancy's scale."""
    return tuple(
        LinearUtility(1e6 * (1.0 + 0.01 * rng.uniform(size=(2, 2))), model.gamma)
        for _ in range(model.n)
    )


def _exact_column(matrix: object) -> list[Fraction]:
    return [Fraction(int(x.p), int(x.q)) for x in matrix]  # type: ignore[attr-defined]


def _inf(x: np.ndarray, exact: list[Fraction]) -> float:
    return float(max(abs(Fraction(float(a)) - b) for a, b in zip(x, exact, strict=True)))


def _l1(x: np.ndarray, exact: list[Fraction]) -> float:
    return float(sum((abs(Fraction(float(a)) - b) for a, b in zip(x, exact, strict=True)),
                     Fraction(0)))


@pytest.mark.parametrize("route", ["joint", "halves", "operator"])
@pytest.mark.parametrize("values", ["team", "per-agent"])
def test_dense_certificates_are_each_their_own(values: str, route: str) -> None:
    """Dense LU on a 3-agent line (8 joint states), rewards ``1e6``: each certificate covers
    its own quantity's exact error, and each is at least the rounding allowance of its own
    residual, ``(|S| + 2) eps (1 + gamma) ||x|| / (1 - gamma)`` in its own norm.  The value
    allowance is about ``1e6`` times the occupancy's, so neither certificate can stand in for
    the other.  Every dense route: the joint route ``solve`` takes on this small model, the
    halves route (the joint route switched off) and the operator route (``DenseOperator``
    passed in)."""
    rng = np.random.default_rng(11)
    model = _binary(Graph.line(3), rng)
    policy = LocalizedSoftmaxPolicy.random(model, 1, rng)
    utilities = _big_rewards(model, rng)
    operator = DenseOperator(model, policy) if route == "operator" else None
    from unittest import mock

    from reference.networked import transition

    joint_floats = -1 if route == "halves" else transition.FUSED_JOINT_FLOATS
    with mock.patch.object(transition, "FUSED_JOINT_FLOATS", joint_floats):
        model.derived.clear()
        sol = solve(model, policy, utilities, backend="dense",
                    values=values, operator=operator)  # type: ignore[arg-type]
        taken = transition.fused_route(model, 1)
    model.derived.clear()
    kinds = {"joint": transition.JointRoute, "halves": transition.HalvesRoute}
    if route in kinds:
        assert isinstance(taken, kinds[route])
    exact = rational_networked_solution(model, policy, utilities)
    n, g = model.states.size, model.gamma
    assert _inf(sol.team_value, _exact_column(exact.team_value)) <= sol.value_error_bound
    assert _l1(sol.lam_S, _exact_column(exact.lam_S)) <= sol.occupancy_error_bound
    v_norm = float(np.max(np.abs(sol.team_value if values == "team" else sol.shadow_values)))
    assert sol.value_error_bound >= (n + 2) * EPS * (1 + g) * v_norm / (1 - g)
    l_norm = float(np.sum(np.abs(sol.lam_S)))
    assert sol.occupancy_error_bound >= (n + 2) * EPS * (1 + g) * l_norm / (1 - g)
    assert sol.value_error_bound > 1e5 * sol.occupancy_error_bound


def test_matrix_free_value_certificate_is_attained() -> None:
    """A fixed-point value solve stopped at ``accuracy = 1e-3``: ``x_k`` falls short of ``V``
    by ``sum_{t >= k} (gamma P)^t r``, nearly ``gamma^k r / (1 - gamma)`` for a nearly constant
    ``r``, which is the certificate ``||residual|| / (1 - gamma rho)``.  Checked against the
    exact rational team value: ``true <= certificate <= 1.05 true``.  The occupancy
    certificate, ``1e6`` times smaller, would not cover this error."""
    rng = np.random.default_rng(12)
    model = _binary(Graph.line(3), rng)
    policy = LocalizedSoftmaxPolicy.random(model, 1, rng)
    utilities = _big_rewards(model, rng)
    op = MatrixFreeOperator(model, policy, accuracy=1e-3, solver="fixed-point")
    sol = solve(model, policy, utilities, operator=op, values="team")
    exact = rational_networked_solution(model, policy, utilities)
    true = _inf(sol.team_value, _exact_column(exact.team_value))
    assert true > 1e-4 * 1e6  # stopped early on purpose
    assert true <= sol.value_error_bound <= 1.05 * true
    assert sol.occupancy_error_bound < 1e-3 * true
    occ_true = _l1(sol.lam_S, _exact_column(exact.lam_S))
    assert occ_true <= sol.occupancy_error_bound <= 1.05 * occ_true


def test_matrix_free_gmres_certificates_are_each_their_own() -> None:
    """GMRES to the default accuracy with rewards ``1e6``: the value and occupancy
    certificates each cover their exact errors, and the value certificate is at least the
    allowance ``(depth + 3) eps (1 + gamma rho) ||V|| / (1 - gamma rho)`` of its own
    residual (``1e6`` times the occupancy's)."""
    rng = np.random.default_rng(13)
    model = _binary(Graph.ring(3), rng)
    policy = LocalizedSoftmaxPolicy.random(model, 1, rng)
    utilities = _big_rewards(model, rng)
    # GMRES drives this 8-state residual to rounding level, so the certificate is the
    # allowance itself (BiCGSTAB, the default, stops at half the target and its residual
    # term would cover a missing allowance)
    op = MatrixFreeOperator(model, policy, solver="gmres")
    sol = solve(model, policy, utilities, operator=op, values="team")
    exact = rational_networked_solution(model, policy, utilities)
    assert _inf(sol.team_value, _exact_column(exact.team_value)) <= sol.value_error_bound
    assert _l1(sol.lam_S, _exact_column(exact.lam_S)) <= sol.occupancy_error_bound
    g, rho = model.gamma, op.row_sum_bound
    allowance = (op.plan.depth + 3) * EPS * (1 + g * rho) * float(np.max(sol.team_value))
    assert sol.value_error_bound >= allowance / (1 - g * rho)
    assert sol.value_error_bound > 1e5 * sol.occupancy_error_bound


# ------------------------------------------------------------------ the row-sum bound
def _operators() -> list[MatrixFreeOperator]:
    ops = []
    for seed in range(10):
        for n in (3, 4, 5, 6):
            for graph in (Graph.ring(n), Graph.line(n)):
                rng = np.random.default_rng(100 * seed + n)
                model = _binary(graph, rng)
                ops.append(MatrixFreeOperator(model, LocalizedSoftmaxPolicy.random(model, 1, rng)))
    return ops


def test_row_sum_bound_on_80_ring_and_line_operators() -> None:
    """``rho >= prod_i max_row sum_{s'_i} M_i[row, s'_i]`` in exact arithmetic (the bound's
    derivation: the joint row sum is the product of the factors' row sums), and ``rho`` is
    above every row sum of the operator as the contractions evaluate it.  On these operators
    the float row sums fall below the exact ones by up to ``|S_i| eps`` per factor, so the
    product of the float maxima misses the exact product on most of them (the slack is
    needed); and ``rho`` exceeds the exact product by at most three times the slack
    ``(sum |S_i| + n) eps`` (the slack doubled plus the float sums' own shortfall), so it is
    not inflated."""
    misses = 0
    ops = _operators()
    assert len(ops) == 80
    for op in ops:
        exact = Fraction(1)
        for f in op.factors:
            rows = f.reshape(-1, f.shape[-1])
            exact *= max(sum((Fraction(float(x)) for x in row), Fraction(0)) for row in rows)
        rho = Fraction(op.row_sum_bound)
        assert rho >= exact
        slack = (sum(op.model.n_states) + op.model.n) * EPS
        assert rho <= exact * (1 + Fraction(3 * slack))
        free = Fraction(float(np.prod([float(np.max(f.sum(axis=-1))) for f in op.factors])))
        misses += free < exact
        applied = op.apply(np.eye(op.n_states)).sum(axis=1)
        assert float(np.max(applied)) <= op.row_sum_bound
    assert misses >= 40  # the slack-free product is invalid on most of these operators


# ------------------------------------------------------------------ minimum accuracy
def test_minimum_accuracy_derivation_and_both_sides() -> None:
    """``minimum_accuracy = 2 (1 - gamma) floor / c`` with ``c = 1 - gamma rho`` and
    ``floor = (depth + 3) eps ((2 + gamma rho) + (1 + gamma rho) / c)``, the smallest
    certificate any iterate's residual evaluation allows, with a factor 2 of room.  A solve
    asking for less than twice the floor (here 1.5 times) is refused; one asking for just
    above the minimum (1.05 times) is certified at the requested accuracy, so the floor is
    not inflated."""
    rng = np.random.default_rng(5)
    model = _binary(Graph.ring(4), rng, gamma=0.99)
    policy = LocalizedSoftmaxPolicy.random(model, 1, rng)
    plan = contraction_plan(model, 1)
    probe = MatrixFreeOperator(model, policy, plan=plan, accuracy=1e-6)
    g, rho = model.gamma, probe.row_sum_bound
    depth = plan.transpose_depth
    c = 1.0 - g * rho
    floor = (depth + 3) * EPS * ((2.0 + g * rho) + (1.0 + g * rho) / c)
    least = minimum_accuracy(depth, g, rho)
    assert least == pytest.approx(2.0 * (1.0 - g) * floor / c, rel=1e-12)
    b = model.joint_rho()
    tight = MatrixFreeOperator(model, policy, plan=plan, accuracy=1.5 * (1.0 - g) * floor / c)
    with pytest.raises(SolverError, match="twice the rounding floor"):
        tight.solve_occupancy(b)
    ok = MatrixFreeOperator(model, policy, plan=plan, accuracy=1.05 * least)
    sol = ok.solve_occupancy(b)
    assert sol.error_bound <= 1.05 * least / (1.0 - g)


def test_matrix_free_default_accuracy() -> None:
    """``DEFAULT_ACCURACY = 1e-10``: the fixed-point route stops once its certificate, nearly
    the true l1 error ``gamma^k/(1-gamma)`` of the occupancy's Neumann series, is at most
    ``1e-10/(1 - gamma)``; the exact error (rational arithmetic) meets it, and at ``1e-8``
    it does not."""
    rng = np.random.default_rng(14)
    model = _binary(Graph.line(3), rng)
    policy = LocalizedSoftmaxPolicy.random(model, 1, rng)
    exact = _exact_column(rational_networked_solution(
        model, policy, tuple(LinearUtility(np.zeros((2, 2)), model.gamma) for _ in range(3))
    ).lam_S)
    limit = 1e-10 / (1 - model.gamma)
    default = MatrixFreeOperator(model, policy, solver="fixed-point")
    assert _l1(default.solve_occupancy(model.joint_rho()).x, exact) <= limit
    loose = MatrixFreeOperator(model, policy, solver="fixed-point", accuracy=1e-8)
    assert _l1(loose.solve_occupancy(model.joint_rho()).x, exact) > limit
