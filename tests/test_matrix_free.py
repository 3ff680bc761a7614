"""The matrix-free transition backend against the dense one, its plan, its certified solves and
the automatic backend choice (proofs_notes/matrix-free.md)."""

from __future__ import annotations

import dataclasses
import tracemalloc
from math import prod

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from reference.errors import MemoryLimitError, ModelError, SolverError
from reference.instances import line_message
from reference.networked import (
    DenseOperator,
    Graph,
    LinearUtility,
    LocalizedSoftmaxPolicy,
    MatrixFreeOperator,
    NetworkedMDP,
    contraction_plan,
    matrix_free,
    per_agent_values,
    predict_backends,
    solve,
    transition_operator,
)
from reference.networked.matrix_free import (
    DEFAULT_ACCURACY,
    minimum_accuracy,
    plan_for_accuracy,
    plan_row_sum_bound,
)
from verify import strategies as mst
from verify.operators import compare_operators, compare_solutions, reverse_form_depth
from verify.tolerances import (
    EPS,
    contraction_tolerance,
    gradient_tolerance,
    kernel_formation_depth,
    solve_agreement_tolerance,
    summation_tolerance,
)

_MODELS = mst.networked_mdps(
    max_agents=6, max_local_states=3, max_local_actions=3, max_joint_states=64
)

# Requested accuracy of the matrix-free solves compared with the dense LU solve below; above
# the rounding floor (depth + 3) eps (1 + gamma)/(1 - gamma) of these small plans at gamma <= 0.95.
_ACCURACY = 1e-11


def _binary(graph: Graph, rng: np.random.Generator, gamma: float = 0.9) -> NetworkedMDP:
    """Binary states and actions on ``graph``, Dirichlet(1, 1) kernel rows and local rho."""
    return NetworkedMDP.random(graph, (2,) * graph.n, (2,) * graph.n, rng, gamma=gamma)


# ---------------------------------------------------------------------- the plan
@given(model=_MODELS, beta=st.integers(0, 2), max_group=st.integers(1, 8))
def test_plan_contracts_every_agent_once(model: NetworkedMDP, beta: int, max_group: int) -> None:
    """Each agent's next state is contracted by exactly one step, in the plan's order; the
    supports are N_i^{max(1, beta)}; sizes, depths and the peak follow from the steps."""
    plan = contraction_plan(model, beta, max_group=max_group)
    assert sorted(plan.order) == list(range(model.n))
    assert [i for s in plan.steps for i in s.agents] == list(plan.order)
    assert all(len(s.agents) <= max_group for s in plan.steps)
    assert plan.supports == model.graph.neighbourhoods(max(1, beta))
    n_joint = model.states.size
    for step in plan.steps:
        assert step.sizes[2] == prod(model.n_states[i] for i in step.agents)
        assert set(step.shared) | set(step.introduced) == set(step.support)
        # every intermediate is |S| times the states introduced but not yet contracted
        assert step.input_floats % n_joint == 0 and step.output_floats % n_joint == 0
    assert plan.depth == sum(s.sizes[2] + len(s.agents) - 1 for s in plan.steps)
    assert plan.transpose_depth == sum(s.introduced_size + len(s.agents) - 1 for s in plan.steps)
    assert plan.peak_floats == max(s.input_floats + s.output_floats for s in plan.steps)


@pytest.mark.parametrize(
    ("graph", "beta", "excess"),
    [
        # provenance (proofs_notes/matrix-free.md#order): with w = max(1, beta), sweeping a line
        # keeps the w states ahead of the contracted prefix, |S_i|^w; a ring also keeps the w
        # states behind its start, |S_i|^(2w); a star contracts the leaves first and keeps
        # only the centre's state (beta <= 1); an r x c grid keeps one row or column per hop,
        # |S_i|^(w min(r, c)).
        (Graph.line(10), 0, 2),
        (Graph.line(10), 1, 2),
        (Graph.line(10), 2, 4),
        (Graph.ring(10), 1, 4),
        (Graph.ring(10), 2, 16),
        (Graph.star(8), 1, 2),
        (Graph.grid(3, 4), 1, 8),
        (Graph.grid(4, 3), 1, 8),
        (Graph.grid(3, 4), 2, 64),
        (Graph.grid(4, 4), 1, 16),
    ],
)
def test_intermediate_sizes_on_named_graphs(graph: Graph, beta: int, excess: int) -> None:
    """The greedy order finds the hand-derived smallest intermediate |S| * excess."""
    model = _binary(graph, np.random.default_rng(0))
    assert contraction_plan(model, beta, max_group=1).max_excess == excess


def test_star_with_radius_two_is_quadratic() -> None:
    """With beta = 2 every leaf's factor depends on every state: after the first leaf the
    intermediate holds all current states and the other next states, |S|^2 / 2 entries."""
    model = _binary(Graph.star(6), np.random.default_rng(0))
    assert contraction_plan(model, 2, max_group=1).max_excess == 2**6 // 2


# ---------------------------------------------------------------------- operations
@example(model=line_message(3).model, seed=0, beta=1, grouped=False)
@given(model=_MODELS, seed=mst.seeds(), beta=st.integers(0, 2), grouped=st.booleans())
def test_operations_match_the_dense_matrix(
    model: NetworkedMDP, seed: int, beta: int, grouped: bool
) -> None:
    """apply, apply_transpose (one and three columns), apply_agent and apply_agent_transpose
    agree with the dense operator within their derived rounding (verify.operators)."""
    rng = np.random.default_rng(seed)
    pol = LocalizedSoftmaxPolicy.random(model, beta, rng)
    plan = contraction_plan(model, beta, max_group=8 if grouped else 1)
    cmp = compare_operators(MatrixFreeOperator(model, pol, plan=plan), DenseOperator(model, pol), rng)
    assert cmp.checked == 4 + 2 * model.n
    assert cmp.agrees, cmp


@given(model=_MODELS, seed=mst.seeds(), beta=st.integers(0, 2))
def test_adjoint_and_agent_marginals_without_the_dense_matrix(
    model: NetworkedMDP, seed: int, beta: int
) -> None:
    """<u, P v> = <P^T u, v> and sum_b pi_i(b|o_i) P^(i,b) v = P v, on the matrix-free
    operator alone (two routes through the same factors)."""
    rng = np.random.default_rng(seed)
    pol = LocalizedSoftmaxPolicy.random(model, beta, rng)
    op = MatrixFreeOperator(model, pol)
    n_joint = model.states.size
    u, v = rng.standard_normal(n_joint), rng.standard_normal(n_joint)
    scale = 2.0 * float(np.sum(np.abs(u))) * float(np.max(np.abs(v)))
    depth = op.plan.depth + op.plan.transpose_depth + 2 * n_joint
    assert abs(u @ op.apply(v) - op.apply_transpose(u) @ v) <= contraction_tolerance(depth, scale)
    direct = op.apply(v)
    for i in range(model.n):
        mixed = np.sum(pol.local_action_probs(i) * op.apply_agent(i, v), axis=1)
        # M_i = sum_b pi_i K_i^b is formed once more in float: |A_i| + 1 extra roundings
        tol = contraction_tolerance(2 * op.plan.depth + 2 * model.n_actions[i] + 1, 2.0 * float(np.max(np.abs(v))))
        np.testing.assert_allclose(mixed, direct, rtol=0, atol=tol)


@pytest.mark.parametrize("limit", [1, 8, 40])
def test_split_blas_products_give_the_same_operator(
    monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    """With the per-product size cap forced down, every step is split into chunks (with a
    remainder when 3-state agents make the chunk size not divide the axis) and the operator
    still agrees with the dense one."""
    from reference.networked import matrix_free

    monkeypatch.setattr(matrix_free, "_BLAS_PRODUCT", limit)
    rng = np.random.default_rng(limit)
    graph = Graph.ring(5)
    sizes = (3, 2, 3, 2, 3)
    model = NetworkedMDP.random(graph, sizes, (2,) * 5, rng, rho="uniform")
    pol = LocalizedSoftmaxPolicy.random(model, 1, rng)
    for max_group in (1, 8):
        op = MatrixFreeOperator(model, pol, plan=contraction_plan(model, 1, max_group=max_group))
        cmp = compare_operators(op, DenseOperator(model, pol), rng)
        assert cmp.agrees, cmp


def test_step_product_for_every_chunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """``_step_product`` against ``einsum`` for every cap from one product per column to no
    split: every chunk size and every remainder of the split axis occurs."""
    from reference.networked import matrix_free

    rng = np.random.default_rng(11)
    x, b, c, e, y = 2, 3, 4, 5, 7
    mat = rng.standard_normal((b, e, c))
    t = rng.standard_normal((x, b, c, y))
    want = np.einsum("bec,xbcy->xbey", mat, t)
    for limit in range(1, e * c * y + 2):
        monkeypatch.setattr(matrix_free, "_BLAS_PRODUCT", limit)
        got = matrix_free._step_product(mat, t, np.empty((x, b, e, y)))
        np.testing.assert_allclose(got, want, rtol=0, atol=summation_tolerance(c, 16.0))


@pytest.mark.parametrize("transposed", [False, True])
def test_row_products_for_every_slab_and_cap(transposed: bool) -> None:
    """A step with no next states left (``y = 1``) from ``x = _ROW_PRODUCT_MIN`` rows on is
    cut into row slabs of BLAS products (``_row_products``): against ``einsum`` for slab
    sizes from one row to all of them (with remainders), and for the adjoint's matrix, a
    transposed view, as well."""
    rng = np.random.default_rng(12)
    x, b, c, e = 70, 3, 4, 5
    base = rng.standard_normal((b, c, e) if transposed else (b, e, c))
    mat = np.swapaxes(base, 1, 2) if transposed else base  # (b, e, c) either way
    t = rng.standard_normal((x, b, c, 1))
    want = np.einsum("bec,xbc->xbe", mat, t[..., 0])[..., None]
    assert x >= matrix_free._ROW_PRODUCT_MIN
    for slab in (1, b * c, 7 * b * c, 1 << 18):
        for cap in (1, 3 * e * c, 1 << 18):
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(matrix_free, "_SLAB_FLOATS", slab)
                patch.setattr(matrix_free, "_BLAS_PRODUCT", cap)
                got = matrix_free._step_product(mat, t, np.full((x, b, e, 1), np.nan))
            np.testing.assert_allclose(got, want, rtol=0, atol=summation_tolerance(c, 16.0))


@pytest.mark.parametrize("max_group", [1, 4])
def test_leading_shared_axes_close_a_ring_without_a_copy(max_group: int) -> None:
    """On a ring of 10 binary agents the axis of agent 0's current state, introduced by the
    first step and shared by the last, leads the intermediate: the last step runs on slabs
    (``lead > 1``) and no step copies the intermediate into a new order.  The operator, its
    adjoint, the agent applications and the reverse-mode forms agree with the dense
    operator and with the agent applications (``proofs_notes/matrix-free.md#plan``)."""
    rng = np.random.default_rng(10 + max_group)
    model = _binary(Graph.ring(10), rng)
    pol = LocalizedSoftmaxPolicy.random(model, 1, rng)
    plan = contraction_plan(model, 1, max_group=max_group)
    assert plan.transposes == 0
    assert any(step.lead > 1 for step in plan.steps)
    op = MatrixFreeOperator(model, pol, plan=plan)
    cmp = compare_operators(op, DenseOperator(model, pol), rng)
    assert cmp.agrees, cmp
    u, v = rng.standard_normal(op.n_states), rng.standard_normal(op.n_states)
    reverse = op.agent_forms(u, v)
    direct = matrix_free.agent_forms_by_applications(op, u, v)
    scale = 2.0 * float(np.sum(np.abs(u))) * float(np.max(np.abs(v)))
    tol = contraction_tolerance(
        reverse_form_depth(op) + op.plan.depth + 4 * op.n_states, scale
    )
    for a, b in zip(reverse, direct, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=tol)


@pytest.mark.parametrize(
    ("graph", "beta", "in_order"),
    [(Graph.line(9), 1, True), (Graph.line(9), 2, True), (Graph.ring(9), 1, False),
     (Graph.star(6), 1, True), (Graph.grid(3, 3), 1, False), (Graph.grid(3, 3), 2, True)],
    ids=["line-1", "line-2", "ring-1", "star-1", "grid-1", "grid-2"],
)
def test_plans_that_end_in_agent_order_copy_nothing_at_either_end(
    graph: Graph, beta: int, in_order: bool
) -> None:
    """When the last intermediate is already in agent order (``in_agent_order``) the
    application writes its last step into the result and the adjoint reads ``u`` as it is;
    otherwise one reordering copy closes the application and opens the adjoint.  Both
    routes agree with the dense operator, and results written into ``out`` with fresh ones."""
    rng = np.random.default_rng(graph.n + beta)
    model = _binary(graph, rng)
    pol = LocalizedSoftmaxPolicy.random(model, beta, rng)
    op = MatrixFreeOperator(model, pol)
    assert op.plan.in_agent_order is in_order
    copies: list[int] = []
    real_copy = matrix_free._copy

    def counted(dst: np.ndarray, src: np.ndarray, threads: int) -> None:
        copies.append(dst.size)
        real_copy(dst, src, threads)

    v = rng.standard_normal(op.n_states)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(matrix_free, "_copy", counted)
        forward = op.apply(v)
        backward = op.apply_transpose(v)
    expected_copies = op.plan.transposes * 2 + (0 if in_order else 2)
    assert len(copies) == expected_copies, copies
    # both routes against the dense operator within verify.operators' derived tolerances
    cmp = compare_operators(op, DenseOperator(model, pol), rng)
    assert cmp.agrees, cmp
    # results written into out= are the same sums as fresh ones
    out, out_t = np.empty(op.n_states), np.empty(op.n_states)
    op._forward(v, op._matrices, out)
    op._backward(v, op._matrices, out_t)
    np.testing.assert_array_equal(out, forward)
    np.testing.assert_array_equal(out_t, backward)


def test_the_cost_model_counts_one_call_per_slab_issued() -> None:
    """A step whose shared axes lead the intermediate issues one step product per slab
    (``lead`` of them), and the plan's predicted cost counts each as a numpy call: against
    the same plan with every lead taken as 1, the cost differs by exactly ``_CALL_COST``
    times the products one application issues beyond one per step (counted on a ring of 10
    binary agents, one thread; costs are integers below 2^53, so the difference is exact)."""
    rng = np.random.default_rng(12)
    model = _binary(Graph.ring(10), rng)
    pol = LocalizedSoftmaxPolicy.random(model, 1, rng)
    plan = contraction_plan(model, 1, max_group=1)
    op = MatrixFreeOperator(model, pol, plan=plan, threads=1)
    issued: list[int] = []
    real_step = matrix_free._step

    def counted(*args: np.ndarray | int) -> np.ndarray:
        issued.append(1)
        return real_step(*args)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(matrix_free, "_step", counted)
        op.apply(rng.standard_normal(op.n_states))
    assert len(issued) == sum(step.lead for step in plan.steps) > len(plan.steps)
    unled = dataclasses.replace(
        plan, steps=tuple(dataclasses.replace(step, lead=1) for step in plan.steps)
    )
    extra = plan.application_cost() - unled.application_cost()
    assert extra == matrix_free._CALL_COST * (len(issued) - len(plan.steps))


def test_bad_inputs_are_named() -> None:
    inst = line_message(3)
    pol = LocalizedSoftmaxPolicy.uniform(inst.model)
    op = MatrixFreeOperator(inst.model, pol)
    with pytest.raises(ModelError, match=r"v has shape \(7,\), expected \(8,\)"):
        op.apply(np.zeros(7))
    with pytest.raises(ModelError, match=r"agent 3 outside 0\.\.2"):
        op.apply_agent(3, np.zeros(8))
    with pytest.raises(ModelError, match=r"u has shape \(8,\), expected \(8, 2\)"):
        op.apply_agent_transpose(0, np.zeros(8))
    with pytest.raises(ModelError, match=r"accuracy = 2\.0"):
        MatrixFreeOperator(inst.model, pol, accuracy=2.0)
    with pytest.raises(ModelError, match="max_group = 0"):
        contraction_plan(inst.model, 0, max_group=0)
    other = line_message(4)
    with pytest.raises(ModelError, match="plan was built for another graph"):
        MatrixFreeOperator(inst.model, pol, plan=contraction_plan(other.model, 0))


# ---------------------------------------------------------------------- certified solves
def _solve_gap(
    dense_bound: float, mf_bound: float, op: MatrixFreeOperator, x: np.ndarray, l1: bool
) -> float:
    norm = float(np.max(np.sum(np.abs(x), axis=0))) if l1 else float(np.max(np.abs(x)))
    return solve_agreement_tolerance(
        dense_bound,
        mf_bound,
        op.gamma,
        op.row_sum_bound,
        kernel_formation_depth(op.model.n_actions),
        norm + mf_bound,
    )


@given(model=mst.networked_mdps(max_agents=6, max_local_states=3, max_local_actions=3,
                                max_joint_states=64, max_gamma=0.95),
       seed=mst.seeds(), beta=st.integers(0, 2))
def test_solves_agree_with_the_dense_lu_within_both_certificates(
    model: NetworkedMDP, seed: int, beta: int
) -> None:
    """Values (two columns) and the occupancy: the gap to the dense LU answer is within the
    sum of the two certified bounds and the kernel formation gap, and the matrix-free bound
    meets the requested accuracy."""
    rng = np.random.default_rng(seed)
    pol = LocalizedSoftmaxPolicy.random(model, beta, rng)
    dense = DenseOperator(model, pol)
    op = MatrixFreeOperator(model, pol, accuracy=_ACCURACY)
    r = rng.uniform(-1.0, 1.0, (model.states.size, 2))
    got, want = op.solve_values(r), dense.solve_values(r)
    gap = float(np.max(np.abs(got.x - want.x)))
    assert gap <= _solve_gap(want.error_bound, got.error_bound, op, got.x, l1=False)
    assert got.error_bound <= _ACCURACY * float(np.max(np.abs(r))) / (1 - model.gamma)
    rho = model.joint_rho()
    occ, occ_dense = op.solve_occupancy(rho), dense.solve_occupancy(rho)
    gap = float(np.sum(np.abs(occ.x - occ_dense.x)))
    assert gap <= _solve_gap(occ_dense.error_bound, occ.error_bound, op, occ.x, l1=True)
    assert occ.error_bound <= _ACCURACY / (1 - model.gamma)
    assert occ.norm == "l1" and got.norm == "inf"


def test_certificate_is_not_vacuous() -> None:
    """The certified bound covers the true error and overstates it by at most the derived
    factor ``(1 + gamma rho) / (1 - gamma rho)``: the l1 error ``e`` of an occupancy iterate
    satisfies ``residual <= ||I - gamma P~^T||_1 e <= (1 + gamma rho) e``, and the bound is
    ``(residual + rounding) / (1 - gamma rho)``."""
    model = _binary(Graph.ring(6), np.random.default_rng(3))
    pol = LocalizedSoftmaxPolicy.random(model, 1, np.random.default_rng(4))
    exact = DenseOperator(model, pol).solve_occupancy(model.joint_rho())
    op = MatrixFreeOperator(model, pol, accuracy=1e-4)
    coarse = op.solve_occupancy(model.joint_rho())
    error = float(np.sum(np.abs(coarse.x - exact.x)))
    assert error <= coarse.error_bound + exact.error_bound
    assert coarse.error_bound <= 1e-4 / (1 - model.gamma)
    g, rho = model.gamma, op.row_sum_bound
    rounding = (op.plan.transpose_depth + 3) * EPS * ((1 + g * rho) * float(np.sum(coarse.x)) + 1)
    worst = ((1 + g * rho) * (error + exact.error_bound) + rounding) / (1 - g * rho)
    assert coarse.error_bound <= worst


def test_certificate_is_built_from_the_residual_the_rounding_and_rho() -> None:
    """Structure of every certificate: ``(1 - gamma rho) bound >= residual + (depth + 3) eps
    (1 + gamma rho) ||x||`` (the rounding of the residual is inside it), and ``rho`` bounds
    the row sums of the operator actually applied (its columns on the unit vectors)."""
    model = _binary(Graph.ring(6), np.random.default_rng(3))
    pol = LocalizedSoftmaxPolicy.random(model, 1, np.random.default_rng(4))
    op = MatrixFreeOperator(model, pol)
    g, rho = model.gamma, op.row_sum_bound
    applied = op.apply(np.eye(op.n_states))  # P~ as the contractions evaluate it
    assert float(np.max(applied.sum(axis=1))) <= rho
    assert rho > 1.0  # strictly: the slack for the rounding of the float row sums
    for sol, depth, norm in (
        (op.solve_values(np.ones(op.n_states)), op.plan.depth, np.max),
        (op.solve_occupancy(model.joint_rho()), op.plan.transpose_depth, np.sum),
    ):
        rounding = (depth + 3) * EPS * (1 + g * rho) * float(norm(np.abs(sol.x)))
        assert (1 - g * rho) * sol.error_bound >= sol.residual + rounding


@pytest.mark.parametrize("gamma", [0.5, 0.9])
def test_fixed_point_route_is_the_neumann_series(gamma: float) -> None:
    """The fixed-point route from 0 is the truncated Neumann series: its occupancy iterate
    falls short of the mass 1/(1-gamma) by exactly gamma^k/(1-gamma) (occupancy note,
    Result 3), so its certified bound is within rounding of the true l1 error; it stops within
    the a priori count, and agrees with the GMRES route within both certificates."""
    from reference.networked.matrix_free import fixed_point_iterations

    model = _binary(Graph.ring(5), np.random.default_rng(7), gamma=gamma)
    pol = LocalizedSoftmaxPolicy.random(model, 1, np.random.default_rng(8))
    rho = model.joint_rho()
    op = MatrixFreeOperator(model, pol, solver="fixed-point")
    slow = op.solve_occupancy(rho)
    fast = MatrixFreeOperator(model, pol).solve_occupancy(rho)
    k = slow.iterations  # x_k = sum_{t<k} (gamma P^T)^t rho after k applications
    assert k <= fixed_point_iterations(gamma * op.row_sum_bound, 1e-10) + 1
    mass = float(np.sum(slow.x))
    # the t-th term passed through t applications of (depth + 3) roundings each, all terms
    # add up to mass 1/(1-gamma); the final sum of 32 entries adds 32
    tol = contraction_tolerance(k * (op.plan.transpose_depth + 3) + 32, 1.0 / (1.0 - gamma))
    assert abs((1.0 / (1.0 - gamma) - mass) - gamma**k / (1.0 - gamma)) <= tol
    # one step fewer would be off by far more than the tolerance: the check pins k
    assert gamma ** (k - 1) > 2 * tol  # = gamma^(k-1)/(1-gamma) - gamma^k/(1-gamma)
    gap = float(np.sum(np.abs(slow.x - fast.x)))
    assert gap <= slow.error_bound + fast.error_bound
    assert slow.error_bound <= 1e-10 / (1.0 - gamma)
    # the bound is tight: the true error is gamma^k/(1-gamma) and the bound
    # (gamma^k + rounding)/(1 - gamma rho) exceeds it only by rounding
    assert slow.error_bound <= 1.01 * gamma**k / (1.0 - gamma)
    with pytest.raises(ModelError, match="solver = 'cg'"):
        MatrixFreeOperator(model, pol, solver="cg")  # type: ignore[arg-type]


def test_accuracy_below_the_rounding_floor_is_refused() -> None:
    """An accuracy no certificate can reach is refused when the operator is built (default
    plan) or, for a plan given by hand, when it solves."""
    inst = line_message(4)
    pol = LocalizedSoftmaxPolicy.uniform(inst.model)
    with pytest.raises(SolverError, match="twice the rounding floor"):
        MatrixFreeOperator(inst.model, pol, accuracy=1e-17)
    plan = contraction_plan(inst.model, 0)
    op = MatrixFreeOperator(inst.model, pol, accuracy=1e-17, plan=plan)
    with pytest.raises(SolverError, match="twice the rounding floor"):
        op.solve_occupancy(inst.model.joint_rho())


def test_a_deep_plan_gives_way_to_one_agent_steps_near_gamma_one() -> None:
    """At gamma = 0.9995 the merged steps of a ring of 12 put the default accuracy below the
    rounding floor (their dot products are longer); the operator then contracts one agent
    per step, and its certified solves agree with the dense LU within both bounds."""
    m = _binary(Graph.ring(12), np.random.default_rng(3), gamma=0.9995)
    pol = LocalizedSoftmaxPolicy.random(m, 1, np.random.default_rng(4))
    merged = contraction_plan(m, 1)
    rho = plan_row_sum_bound(m.n_states)
    assert DEFAULT_ACCURACY <= minimum_accuracy(
        max(merged.depth, merged.transpose_depth), m.gamma, rho
    )
    op = MatrixFreeOperator(m, pol)
    assert op.plan == contraction_plan(m, 1, max_group=1) == plan_for_accuracy(m, 1, 1e-10)
    dense = DenseOperator(m, pol)
    rho0 = m.joint_rho()
    a, b = op.solve_occupancy(rho0), dense.solve_occupancy(rho0)
    assert float(np.abs(a.x - b.x).sum()) <= a.error_bound + b.error_bound
    assert plan_for_accuracy(m, 1, 1e-16) is None


@pytest.mark.parametrize("exponent", [-1074, -1030, -700, -40, 0, 40, 700, 1000])
def test_solves_scale_with_the_right_hand_side(exponent: int) -> None:
    """The system is linear: for ``b`` scaled by ``2^k`` the solve returns exactly ``2^k``
    times the unit solve, with the same number of applications, from the subnormal range to
    near overflow; below 2^-1000 it answers 0 with the a priori bound, which still covers
    the exact solution."""
    m = _binary(Graph.ring(5), np.random.default_rng(6))
    pol = LocalizedSoftmaxPolicy.random(m, 1, np.random.default_rng(7))
    op = MatrixFreeOperator(m, pol)
    b = np.random.default_rng(8).random(32)
    b /= b.max() * 1.5  # inf-norm 2/3, in [1/2, 1)
    unit = op.solve_values(b)
    scaled = op.solve_values(np.ldexp(b, exponent))
    if exponent >= -1000:
        np.testing.assert_array_equal(scaled.x, np.ldexp(unit.x, exponent))
        assert scaled.error_bound == np.ldexp(unit.error_bound, exponent)
        assert scaled.iterations == unit.iterations
    else:
        assert not np.any(scaled.x) and scaled.iterations == 0
        # ||x*||_inf <= ||b||_inf / (1 - gamma rho): here with the unit solve's exact scaling
        exact_norm = np.ldexp(float(np.max(np.abs(unit.x))) + unit.error_bound, exponent)
        assert scaled.error_bound >= exact_norm > 0.0


def test_right_hand_sides_at_the_top_of_the_float_range() -> None:
    """A right-hand side of norm in ``[2^1023, 2^1024)`` is solved at norm ``[1/2, 1)`` and
    scaled back by ``2^1024`` (a factor that is itself not a float): with gamma = 0.1 the
    values stay below ``||b|| (1 + gamma / (1 - gamma)) < 2^1024`` and come back exactly
    scaled.  A solution or an l1 norm beyond the float range is refused with a SolverError,
    not returned as infinities."""
    m = _binary(Graph.ring(5), np.random.default_rng(6), gamma=0.1)
    pol = LocalizedSoftmaxPolicy.random(m, 1, np.random.default_rng(7))
    op = MatrixFreeOperator(m, pol)
    b = np.random.default_rng(8).random(32)
    b /= b.max() * 1.5  # inf-norm 2/3
    b[0] = -2.0 / 3.0
    unit = op.solve_values(b)
    top = op.solve_values(np.ldexp(b, 1024))
    np.testing.assert_array_equal(top.x, np.ldexp(unit.x, 1024))
    assert top.error_bound == np.ldexp(unit.error_bound, 1024)
    occ_unit = op.solve_occupancy(b / 64)  # l1 norm below 1/2: scaled up to [1/2, 1)
    occ_top = op.solve_occupancy(np.ldexp(b / 64, 1024))
    np.testing.assert_array_equal(occ_top.x, np.ldexp(occ_unit.x, 1024))
    slow = _binary(Graph.ring(5), np.random.default_rng(6), gamma=0.9)
    near = MatrixFreeOperator(slow, LocalizedSoftmaxPolicy.random(slow, 1, np.random.default_rng(7)))
    with pytest.raises(SolverError, match="overflow"):
        near.solve_values(np.full(32, 1.5 * 2.0**1023))  # the values reach 2^1023 * 15
    with pytest.raises(SolverError, match="overflow"):
        op.solve_occupancy(np.full(32, 2.0**1023))  # its l1 norm is not a float


@pytest.mark.parametrize("solver", ["bicgstab", "gmres"])
@pytest.mark.parametrize("failure", ["stagnation", "nan", "huge"])
def test_krylov_failures_fall_back_to_the_fixed_point(
    monkeypatch: pytest.MonkeyPatch, failure: str, solver: str
) -> None:
    """A Krylov call (BiCGSTAB or GMRES) that stagnates, returns NaN or returns a huge update
    is caught after one call: the solve keeps its best iterate, finishes by the fixed-point
    iteration within its a priori count, and its certificate still covers the dense
    solution."""
    from reference.networked import matrix_free

    calls = []

    def update(rhs: np.ndarray) -> np.ndarray:
        calls.append(1)
        out: np.ndarray = {"stagnation": 0.0 * rhs, "nan": np.full_like(rhs, np.nan),
                           "huge": np.full_like(rhs, 1e30)}[failure]
        return out

    def broken_gmres(system: object, rhs: np.ndarray, **kwargs: object) -> tuple[np.ndarray, int]:
        return update(rhs), 1

    def broken_bicgstab(
        matvec: object, rhs: np.ndarray, atol: float, maxiter: int, **kwargs: object
    ) -> np.ndarray:
        return update(rhs)

    monkeypatch.setattr(matrix_free.spla, "gmres", broken_gmres)
    monkeypatch.setattr(matrix_free, "_bicgstab", broken_bicgstab)
    m = _binary(Graph.ring(5), np.random.default_rng(9))
    pol = LocalizedSoftmaxPolicy.random(m, 1, np.random.default_rng(10))
    op = MatrixFreeOperator(m, pol, solver=solver)  # type: ignore[arg-type]
    got = op.solve_occupancy(m.joint_rho())
    want = DenseOperator(m, pol).solve_occupancy(m.joint_rho())
    assert calls == [1]  # the broken Krylov call was made once, then handed over
    assert np.all(np.isfinite(got.x))
    assert float(np.abs(got.x - want.x).sum()) <= got.error_bound + want.error_bound
    k = matrix_free.fixed_point_iterations(m.gamma * op.row_sum_bound, op.accuracy)
    assert got.iterations <= k + 2  # one Krylov check, then at most k fixed-point steps


@given(model=_MODELS, seed=mst.seeds(), beta=st.integers(0, 2))
def test_bicgstab_and_gmres_solves_meet_their_certificates(
    model: NetworkedMDP, seed: int, beta: int
) -> None:
    """Both Krylov routes and the fixed point solve the same systems within their
    certificates, against the dense LU (values in the inf-norm, occupancies in l1)."""
    rng = np.random.default_rng(seed)
    pol = LocalizedSoftmaxPolicy.random(model, beta, rng)
    dense = DenseOperator(model, pol)
    r = rng.standard_normal(model.states.size)
    want_v = dense.solve_values(r)
    want_o = dense.solve_occupancy(model.joint_rho())
    for solver in ("bicgstab", "gmres", "fixed-point"):
        op = MatrixFreeOperator(model, pol, solver=solver)  # type: ignore[arg-type]
        got_v = op.solve_values(r)
        got_o = op.solve_occupancy(model.joint_rho())
        assert float(np.max(np.abs(got_v.x - want_v.x))) <= got_v.error_bound + want_v.error_bound
        assert float(np.sum(np.abs(got_o.x - want_o.x))) <= got_o.error_bound + want_o.error_bound


def test_zero_right_hand_side_and_discount_zero() -> None:
    """b = 0 gives x = 0 and gamma = 0 gives x = b, exactly, with bound 0 and no iteration."""
    model = _binary(Graph.line(3), np.random.default_rng(1), gamma=0.0)
    pol = LocalizedSoftmaxPolicy.random(model, 0, np.random.default_rng(2))
    op = MatrixFreeOperator(model, pol)
    zero = op.solve_values(np.zeros(8))
    assert zero.error_bound == 0.0 and not np.any(zero.x)
    b = np.random.default_rng(5).standard_normal(8)
    np.testing.assert_array_equal(op.solve_values(b).x, b)


# ---------------------------------------------------------------------- the exact gradient
@given(problem=mst.networked_problems(max_agents=5, max_joint_states=48))
def test_exact_gradient_agrees_across_backends(problem: mst.NetworkedProblem) -> None:
    """solve() on both backends: occupancies, team values and grad F agree within tolerances
    built from the two certified bounds, the measured shadow-reward gap and the rounding of
    the shared formulas (proofs_notes/matrix-free.md#agreement)."""
    m, pol, utils = problem.model, problem.policy, problem.utilities
    op = MatrixFreeOperator(m, pol, accuracy=_ACCURACY)
    mf = solve(m, pol, utils, operator=op)
    dense = solve(m, pol, utils, backend="dense")
    assert mf.backend == "matrix-free" and mf.shadow_values is None
    assert dense.backend == "dense" and dense.shadow_values is not None
    cmp = compare_solutions(dense, mf, op)
    assert cmp.agrees, cmp


@pytest.mark.parametrize(
    ("graph", "beta"),
    [
        (Graph.line(6), 2),
        (Graph.ring(7), 1),
        (Graph.grid(2, 4), 1),
        (Graph.star(6), 0),
        (Graph.random_tree(7, np.random.default_rng(11)), 2),
    ],
    ids=["line-beta2", "ring-beta1", "grid-beta1", "star-beta0", "tree-beta2"],
)
def test_exact_gradient_agrees_on_named_graphs(graph: Graph, beta: int) -> None:
    """The same agreement on larger binary instances of every graph family (64-128 states),
    with the entropy utility and the default grouped plan."""
    from reference.networked import EntropyUtility

    rng = np.random.default_rng(graph.n + 10 * beta)
    model = _binary(graph, rng)
    pol = LocalizedSoftmaxPolicy.random(model, beta, rng)
    utils = tuple(EntropyUtility((2, 2), model.gamma) for _ in range(model.n))
    op = MatrixFreeOperator(model, pol, accuracy=_ACCURACY)
    cmp = compare_solutions(
        solve(model, pol, utils, backend="dense"), solve(model, pol, utils, operator=op), op
    )
    assert cmp.agrees, cmp
    assert cmp.reward_gap > 0.0  # the entropy's shadow reward moves with lam_i


def test_value_modes_and_the_team_value() -> None:
    """values='per-agent' on the matrix-free backend gives every V_i (their mean is Vbar);
    'team' gives None, and per_agent_values / require_shadow_values say what to do."""
    inst = line_message(5)
    pol = LocalizedSoftmaxPolicy.random(inst.model, 1, np.random.default_rng(0))
    utils = inst.utilities("entropy")
    full = solve(inst.model, pol, utils, backend="matrix-free", values="per-agent")
    # same backend, so the same occupancy and shadow rewards (a dense occupancy differs within
    # the two certificates, and so do the rewards the values are solved for)
    team = solve(inst.model, pol, utils, backend="matrix-free", values="team")
    np.testing.assert_array_equal(team.lam_S, full.lam_S)
    assert full.shadow_values is not None and team.shadow_values is None
    v_scale = float(np.max(np.abs(full.shadow_values)))
    tol = full.value_error_bound + inst.model.n * EPS * v_scale
    np.testing.assert_allclose(full.shadow_values.mean(axis=1), full.team_value, rtol=0, atol=tol)
    with pytest.raises(ModelError, match="values='per-agent'"):
        team.require_shadow_values()
    again = per_agent_values(inst.model, pol, team)
    assert again.norm == "inf" and again.x.shape == full.shadow_values.shape
    gap = float(np.max(np.abs(again.x - full.shadow_values)))
    # both are certified solves of the same system with the same rewards
    assert gap <= again.error_bound + full.value_error_bound + 4 * EPS * v_scale
    kept = per_agent_values(inst.model, pol, full)  # no new solve: the solution's own bound
    assert kept.x is full.shadow_values and kept.error_bound == full.value_error_bound
    with pytest.raises(ModelError, match="values = 'some'"):
        solve(inst.model, pol, utils, values="some")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- backend choice
def test_automatic_choice_and_override() -> None:
    """Tiny instances go dense, instances whose dense kernel does not fit go matrix-free,
    the override is obeyed, and neither fitting is a MemoryLimitError naming both."""
    small = line_message(3)
    pol = LocalizedSoftmaxPolicy.uniform(small.model)
    assert transition_operator(small.model, pol).backend == "dense"
    assert transition_operator(small.model, pol, "matrix-free").backend == "matrix-free"
    big = line_message(12)
    pol_big = LocalizedSoftmaxPolicy.uniform(big.model)
    dense_cost, mf_cost = predict_backends(big.model, 0, memory_limit=1e8)
    assert not dense_cost.fits and mf_cost.fits
    assert transition_operator(big.model, pol_big, memory_limit=1e8).backend == "matrix-free"
    with pytest.raises(MemoryLimitError, match="dense joint kernel of 4096"):
        transition_operator(big.model, pol_big, "dense", memory_limit=1e8)
    with pytest.raises(MemoryLimitError, match="neither backend fits"):
        transition_operator(big.model, pol_big, memory_limit=1e5)


def test_predictions_allocate_nothing_of_joint_size() -> None:
    """Predicting both backends for a ring of 30 binary agents (|S| = 2^30) allocates no
    more than a few kilobytes: the plan is symbolic."""
    graph = Graph.ring(30)
    kernels = tuple(np.full((8, 2, 2), 0.5) for _ in range(30))
    model = NetworkedMDP(graph, (2,) * 30, (2,) * 30, kernels, 0.9, tuple(np.full(2, 0.5) for _ in range(30)))
    tracemalloc.start()
    try:
        dense, mf = predict_backends(model, 1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert dense.bytes > 2 * 8 * 4**30 and mf.bytes < 100 * 8 * 2**30
    assert not dense.fits and not mf.fits


def test_exact_gradient_memory_is_linear_in_the_joint_states() -> None:
    """The matrix-free exact gradient on a ring of 14 binary agents (|S| = 16384) stays
    within its linear prediction (tracemalloc peak), far below one dense |S| x |S| array."""
    from reference.networked import EntropyUtility

    rng = np.random.default_rng(14)
    model = _binary(Graph.ring(14), rng)
    pol = LocalizedSoftmaxPolicy.random(model, 1, rng)
    utils = tuple(EntropyUtility((2, 2), model.gamma) for _ in range(model.n))
    _, predicted = predict_backends(model, 1)
    tracemalloc.start()
    try:
        sol = solve(model, pol, utils, backend="matrix-free")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    n_joint = model.states.size
    assert peak <= predicted.bytes < 8 * n_joint * n_joint
    assert sol.shadow_values is None and np.isfinite(sol.gradient_norm)
    # neither the (|S|, n) digit table nor the per-agent joint index tables were built
    assert "digits" not in vars(model.states)
    assert "_observation_indices" not in vars(pol)
    assert sol.occupancy_error_bound <= 1e-10 / (1 - model.gamma)


def test_linear_utility_gradient_is_exact_rl_on_the_matrix_free_backend() -> None:
    """With linear utilities F = J of the joint MDP: the matrix-free objective matches the
    tabular evaluation within the certified occupancy bound."""
    from reference.tabular import evaluate

    inst = line_message(4)
    pol = LocalizedSoftmaxPolicy.random(inst.model, 1, np.random.default_rng(2))
    utils = tuple(LinearUtility(r, inst.model.gamma) for r in inst.rewards)
    sol = solve(inst.model, pol, utils, backend="matrix-free")
    vals = evaluate(inst.model.to_tabular(inst.rewards), pol.joint_matrix())
    r_max = max(float(np.max(np.abs(r))) for r in inst.rewards)
    tol = vals.error_bound + r_max * sol.occupancy_error_bound + summation_tolerance(
        inst.model.states.size * 4, r_max / (1 - inst.model.gamma)
    )
    assert abs(sol.objective - vals.J) <= tol


@pytest.mark.parametrize("graph", [Graph.line(4), Graph.ring(5)], ids=["line4", "ring5"])
def test_gradient_with_action_dependent_rewards_on_every_route(graph: Graph) -> None:
    """Rewards that depend on the action make the agent's own term
    ``(r_i(s_i, b) - R_i^pi(s)) / n`` of ``Qbar^{(i)} - Vbar`` non-zero (a state-only shadow
    reward, such as the entropy's, cancels it), so the dense route (agents stacked), the
    matrix-free route and the chain rule must agree with it present (SPEC section 2)."""
    from reference.networked import gradient_chain_rule

    rng = np.random.default_rng(graph.n)
    model = _binary(graph, rng)
    pol = LocalizedSoftmaxPolicy.random(model, 1, rng)
    utils = tuple(LinearUtility(rng.normal(size=(2, 2)), model.gamma) for _ in range(model.n))
    op = MatrixFreeOperator(model, pol, accuracy=_ACCURACY)
    dense = solve(model, pol, utils, backend="dense")
    cmp = compare_solutions(dense, solve(model, pol, utils, operator=op), op)
    assert cmp.agrees, cmp
    chain = gradient_chain_rule(model, pol, utils)
    r_max = max(float(np.max(np.abs(f.gradient(lam))))
                for f, lam in zip(utils, dense.local_occupancy, strict=True))
    tol = gradient_tolerance(model.states.size * model.actions.size, model.gamma, r_max)
    for g_dense, g_chain in zip(dense.gradient, chain, strict=True):
        np.testing.assert_allclose(g_dense, g_chain, rtol=0, atol=tol)
