"""Applications of the matrix-free operator run slab by slab over the plan's slab agent
(``proofs_notes/matrix-free.md#slabs``): the same operator within the derived tolerances,
chosen exactly when whole applications do not fit the memory limit, and the memory then
predicted is the memory used."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from reference.errors import MemoryLimitError, ModelError
from reference.networked import (
    DenseOperator,
    EntropyUtility,
    Graph,
    LinearUtility,
    LocalizedSoftmaxPolicy,
    MatrixFreeOperator,
    NetworkedMDP,
    contraction_plan,
    matrix_free,
    per_agent_values,
    solve,
)
from verify import strategies as mst
from verify.operators import compare_operators, compare_solutions, reverse_form_depth
from verify.tolerances import contraction_tolerance

_MODELS = mst.networked_mdps(
    max_agents=6, max_local_states=4, max_local_actions=3, max_joint_states=256
)


def _model(graph: Graph, sizes: tuple[int, ...], rng: np.random.Generator) -> NetworkedMDP:
    """Local state counts ``sizes`` on ``graph``, two actions each, Dirichlet(1, ...) kernel
    rows and initial distributions, ``gamma = 0.9``."""
    return NetworkedMDP.random(graph, sizes, (2,) * graph.n, rng)


def _slab_count(model: NetworkedMDP, beta: int) -> int:
    plan = contraction_plan(model, beta)
    return 1 if plan.slab_agent is None else plan.n_states[plan.slab_agent]


# graphs whose plans cover every branch: the slab agent shared by a later step with and
# without a lead, among a step's untouched axes, a first step that permutes ``v``, plans
# that end in agent order (a contiguous slab of the result) and ones that do not (a
# strided one), and a slab agent that is not agent 0
_CASES = [
    (Graph.ring(8), (2,) * 8, 1),
    (Graph.ring(6), (4, 2, 3, 2, 4, 3), 1),
    (Graph.ring(5), (4,) * 5, 2),
    (Graph.line(7), (3,) * 7, 1),
    (Graph.grid(3, 3), (2,) * 9, 1),
    (Graph.grid(2, 3), (3, 2, 2, 3, 2, 2), 0),
    (Graph.star(6), (3, 2, 2, 2, 2, 2), 1),
    (Graph.line(6), (1, 3, 2, 3, 2, 2), 1),
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    ("graph", "sizes", "beta"), _CASES,
    ids=["ring8", "ring6-mixed", "ring5-4-r2", "line7-3", "grid33", "grid23-r0", "star6",
         "line6-first-single"],
)
def test_slabbed_applications_are_the_operator(
    graph: Graph, sizes: tuple[int, ...], beta: int, threads: int
) -> None:
    """Run in ``|S_a|`` slabs, every operation (``apply``, ``apply_transpose`` with one and
    three columns, ``apply_agent`` and its adjoint for every agent) agrees with the dense
    operator within ``verify.operators``' derived tolerances (the adjoint's depth counts the
    slabs' additions), and with the whole applications written into ``out=`` (contiguous,
    and strided with several columns).  With two threads every step and copy is split
    between them, however small (these instances are below the size that splits by
    default)."""
    with pytest.MonkeyPatch.context() as patch:
        if threads > 1:
            patch.setattr(matrix_free, "_PARALLEL_WORK", 0)
        _check_slabbed_operations(graph, sizes, beta, threads)


def _check_slabbed_operations(
    graph: Graph, sizes: tuple[int, ...], beta: int, threads: int
) -> None:
    rng = np.random.default_rng(sum(sizes) + 10 * beta)
    model = _model(graph, sizes, rng)
    pol = LocalizedSoftmaxPolicy.random(model, beta, rng)
    count = _slab_count(model, beta)
    assert count > 1
    op = MatrixFreeOperator(model, pol, slabs=count, threads=threads)
    whole = MatrixFreeOperator(model, pol, slabs=1, threads=threads)
    assert op.slabs == count and whole.slabs == 1
    assert op.transpose_depth == whole.transpose_depth + count - 1
    cmp = compare_operators(op, DenseOperator(model, pol), rng)
    assert cmp.agrees, cmp
    v = rng.standard_normal((op.n_states, 2))
    out, out_t = np.empty(op.n_states), np.empty(op.n_states)
    strided, strided_t = (np.empty((op.n_states, 2), order="F") for _ in range(2))
    op._forward(v[:, 0], op._matrices, out)
    op._backward(v[:, 0], op._matrices, out_t)
    op._forward(v, op._matrices, strided)
    op._backward(v, op._matrices, strided_t)
    # both routes within depth eps rho ||v||_inf of P v in every entry, and within
    # transpose_depth eps rho ||u||_1 of P^T u in the l1 norm (verify.tolerances)
    rho = op.row_sum_bound
    tol = contraction_tolerance(op.depth + whole.depth, rho * float(np.max(np.abs(v))))
    np.testing.assert_allclose(out, whole.apply(v[:, 0]), rtol=0, atol=tol)
    np.testing.assert_allclose(strided, whole.apply(v), rtol=0, atol=tol)
    for got, u in ((out_t, v[:, :1]), (strided_t, v)):
        gap = np.sum(np.abs(got.reshape(u.shape) - whole.apply_transpose(u)), axis=0)
        bound = contraction_tolerance(
            op.transpose_depth + whole.transpose_depth, rho * float(np.max(np.sum(np.abs(u), 0)))
        )
        assert float(np.max(gap)) <= bound, (gap, bound)


@given(model=_MODELS, seed=mst.seeds(), beta=st.integers(0, 2))
def test_slabbed_applications_agree_with_the_dense_operator(
    model: NetworkedMDP, seed: int, beta: int
) -> None:
    """On random models (1 to 4 states per agent, any graph of up to six agents), whenever
    the plan has a slab agent, the slabbed operator is the dense one within the derived
    tolerances."""
    count = _slab_count(model, beta)
    assume(count > 1)
    rng = np.random.default_rng(seed)
    pol = LocalizedSoftmaxPolicy.random(model, beta, rng)
    op = MatrixFreeOperator(model, pol, slabs=count)
    cmp = compare_operators(op, DenseOperator(model, pol), rng, columns=2)
    assert cmp.agrees, cmp


def test_slabs_that_the_plan_cannot_take_are_refused() -> None:
    """``slabs`` is 1 or the slab agent's state count; a plan without a slab agent (a 3 x 4
    grid observed at radius 2) takes only 1; the message names the argument and what it
    accepts."""
    rng = np.random.default_rng(3)
    model = _model(Graph.ring(6), (3,) * 6, rng)
    pol = LocalizedSoftmaxPolicy.random(model, 1, rng)
    assert contraction_plan(model, 1).slab_agent is not None
    for bad in (2, 0, True, 3.0):
        with pytest.raises(ModelError, match=r"slabs = .*, expected 1 or 3 \(\|S_\d\|\)"):
            MatrixFreeOperator(model, pol, slabs=bad)  # type: ignore[arg-type]
    grid = _model(Graph.grid(3, 4), (2,) * 12, rng)
    assert contraction_plan(grid, 2).slab_agent is None
    with pytest.raises(ModelError, match=r"slabs = 2, expected 1 for this plan"):
        MatrixFreeOperator(grid, LocalizedSoftmaxPolicy.random(grid, 2, rng), slabs=2)
    with pytest.raises(ModelError, match="no slab agent"):
        matrix_free._slab_steps(contraction_plan(grid, 2))


def test_slabs_are_taken_exactly_when_whole_applications_do_not_fit() -> None:
    """On a ring of 4-state agents (two on every cut: intermediates of ``16 |S|`` floats,
    the two work buffers dominate) the operator runs whole applications when they fit and
    ``|S_a| = 4`` slabs below that: ``application_slabs``, ``matrix_free_memory`` and the
    operator follow one decision, and the slabbed prediction is below the whole one by
    the work buffers' ``3 / 4``."""
    rng = np.random.default_rng(8)
    model = _model(Graph.ring(6), (4,) * 6, rng)
    pol = LocalizedSoftmaxPolicy.random(model, 1, rng)
    plan = contraction_plan(model, 1)
    assert plan.slab_agent is not None and plan.max_excess == 16
    # the forms by agent applications in both (a limit of one byte): the difference is the
    # two work buffers
    whole = matrix_free.matrix_free_memory(model, plan, slabs=1, memory_limit=1)
    slabbed = matrix_free.matrix_free_memory(model, plan, slabs=4, memory_limit=1)
    assert plan.slab_buffer_floats(4) == plan.buffer_floats // 4 >= plan.n_joint
    assert whole - slabbed == 8 * 2 * (plan.buffer_floats - plan.buffer_floats // 4)
    assert matrix_free.application_slabs(model, plan, memory_limit=1 << 40) == 1
    for limit, count in ((whole, 1), (whole - 1, 4), (slabbed, 4)):
        assert matrix_free.application_slabs(model, plan, memory_limit=limit) == count
        predicted = matrix_free.matrix_free_memory(model, plan, memory_limit=limit)
        assert predicted == matrix_free.matrix_free_memory(
            model, plan, memory_limit=limit, slabs=count
        ) <= limit
        assert MatrixFreeOperator(model, pol, memory_limit=limit).slabs == count
    # the backend choice sees the slabbed prediction too
    from reference.networked.backends import predict_backends

    assert predict_backends(model, 1, memory_limit=slabbed)[1].fits


@pytest.mark.parametrize(
    ("fraction", "applications", "reverse"), [(60.0, 4, 4), (80.0, 1, 4)],
    ids=["both-in-slabs", "reverse-in-slabs"],
)
def test_exact_gradient_in_slabs_stays_within_the_memory_prediction(
    fraction: float, applications: int, reverse: int
) -> None:
    """On a ring of six 4-state agents (whole applications about 60 |S| floats, slabbed 36;
    reverse-mode forms 83 whole, 35 in slabs) under a limit of ``fraction |S|`` floats, the
    applications and the reverse-mode forms run in the predicted number of slabs (the forms
    by reverse mode, not agent applications), the tracemalloc peak of the exact gradient
    stays within ``matrix_free_memory``, and the solution is the dense one within the derived
    agreement tolerances."""
    rng = np.random.default_rng(5)
    model = _model(Graph.ring(6), (4,) * 6, rng)
    pol = LocalizedSoftmaxPolicy.random(model, 1, rng)
    utils = tuple(EntropyUtility((4, 2), model.gamma) for _ in range(6))
    plan = contraction_plan(model, 1)
    limit = int(fraction * 8 * plan.n_joint)
    assert matrix_free.application_slabs(model, plan, memory_limit=limit) == applications
    assert matrix_free.reverse_forms_slabs(model, plan, limit) == reverse
    predicted = matrix_free.matrix_free_memory(model, plan, memory_limit=limit)
    assert predicted <= limit
    swept: list[int] = []
    real = matrix_free.MatrixFreeOperator._reverse_chain

    def counted(self: MatrixFreeOperator, *args: object) -> None:
        swept.append(1)
        real(self, *args)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(matrix_free.MatrixFreeOperator, "_reverse_chain", counted)
        tracemalloc.start()
        try:
            op = MatrixFreeOperator(model, pol, memory_limit=limit)
            sol = solve(model, pol, utils, operator=op)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert op.slabs == applications
    assert len(swept) == reverse  # one reverse chain per slab, no agent applications
    assert peak <= predicted, (peak / 8 / plan.n_joint, predicted / 8 / plan.n_joint)
    # against the dense backend within verify.operators' derived agreement tolerances
    cmp = compare_solutions(solve(model, pol, utils, backend="dense"), sol, op)
    assert cmp.agrees, cmp


@pytest.mark.parametrize(
    ("graph", "sizes", "beta"), _CASES,
    ids=["ring8", "ring6-mixed", "ring5-4-r2", "line7-3", "grid33", "grid23-r0", "star6",
         "line6-first-single"],
)
def test_factor_gradients_in_slabs_are_the_whole_ones(
    graph: Graph, sizes: tuple[int, ...], beta: int
) -> None:
    """Reverse-mode differentiation in slabs (each slab's pair contractions added into its
    block of ``dL/dF_G``: rows where the slab agent is shared, columns where the first step
    introduces it, the whole matrix otherwise) gives the whole route's factor gradients and
    the agent applications' forms, within the reverse route's derived tolerance."""
    rng = np.random.default_rng(7 * sum(sizes) + beta)
    model = _model(graph, sizes, rng)
    pol = LocalizedSoftmaxPolicy.random(model, beta, rng)
    count = _slab_count(model, beta)
    op = MatrixFreeOperator(model, pol)
    u, v = rng.standard_normal(op.n_states), rng.standard_normal(op.n_states)
    whole = op.factor_gradients(u, v)
    direct = matrix_free.agent_forms_by_applications(op, u, v)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(matrix_free, "reverse_forms_slabs", lambda *args: count)
        slabbed = op.factor_gradients(u, v)
        forms = op.agent_forms(u, v)
    scale = 2.0 * float(np.sum(np.abs(u))) * float(np.max(np.abs(v)))
    tol = contraction_tolerance(
        reverse_form_depth(op) + op.plan.depth + 2 * op.n_states, scale
    )
    for a, b in zip(slabbed, whole, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=tol)
    for a, b in zip(forms, direct, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=tol)


def test_the_cost_model_counts_the_calls_and_rereads_of_slabs() -> None:
    """An application in ``|S_a|`` slabs issues every step product once per slab, a step whose
    lead holds the slab agent ``lead / |S_a|`` of them (counted on a ring of eight binary agents
    observed at radius 1, one thread: the ring's closing step), and the predicted cost grows
    by exactly ``_CALL_COST`` per extra call and ``_PASS_COST`` per extra float streamed
    (``2 (slabs - 1) |S|``: the forward's rereads of ``v``, the adjoint's additions); costs
    are integers below 2^53, so the differences are exact."""
    rng = np.random.default_rng(12)
    model = _model(Graph.ring(8), (2,) * 8, rng)
    pol = LocalizedSoftmaxPolicy.random(model, 1, rng)
    plan = contraction_plan(model, 1, max_group=1)  # one agent per step: leads 2 and 4 at the end
    op = MatrixFreeOperator(model, pol, plan=plan, slabs=2, threads=1)
    issued: list[int] = []
    real_step = matrix_free._step

    def counted(*args: np.ndarray | int) -> np.ndarray:
        issued.append(1)
        return real_step(*args)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(matrix_free, "_step", counted)
        op.apply(rng.standard_normal(op.n_states))
    per_slab = sum(step.lead for step in op._chain_steps)
    assert len(issued) == 2 * per_slab
    whole = sum(step.lead for step in plan.steps)
    assert per_slab < whole  # the closing step's lead holds the slab agent: halved per slab
    other = plan.transposes + 2  # reorderings and the calls around the steps
    extra = plan.application_cost(2) - plan.application_cost(1)
    assert extra == (
        matrix_free._CALL_COST * (2 * (per_slab + other) - (whole + other))
        + matrix_free._PASS_COST * 2 * plan.n_joint
    )


def test_reverse_mode_in_slabs_after_whole_applications_stays_within_the_prediction() -> None:
    """Whole applications and reverse-mode forms in slabs (a ring of eight 4-state agents,
    one agent per step: whole applications about ``45 |S|`` floats, the whole reverse route
    ``133 |S|``, in slabs ``34 |S|``, under a limit of ``60 |S|``): the slabs' chains run in
    slab-sized work buffers, not beside the two whole-application buffers the solves left
    (``32 |S|`` more), so the tracemalloc peak of the exact gradient stays within
    ``matrix_free_memory`` and the limit."""
    rng = np.random.default_rng(5)
    model = _model(Graph.ring(8), (4,) * 8, rng)
    pol = LocalizedSoftmaxPolicy.random(model, 1, rng)
    utils = tuple(EntropyUtility((4, 2), model.gamma) for _ in range(8))
    plan = contraction_plan(model, 1, max_group=1)
    limit = 60 * 8 * plan.n_joint
    assert matrix_free.application_slabs(model, plan, memory_limit=limit) == 1
    assert matrix_free.reverse_forms_slabs(model, plan, limit) == 4
    predicted = matrix_free.matrix_free_memory(model, plan, memory_limit=limit)
    assert predicted <= limit
    tracemalloc.start()
    try:
        op = MatrixFreeOperator(model, pol, memory_limit=limit, plan=plan)
        solve(model, pol, utils, operator=op)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert op.slabs == 1
    assert peak <= predicted, (peak / 8 / plan.n_joint, predicted / 8 / plan.n_joint)


def test_the_plan_chosen_for_an_accuracy_reaches_it_in_slabs() -> None:
    """The adjoint in slabs rounds ``|S_a| - 1`` more times, which raises its solve's
    rounding floor: for an accuracy between the whole adjoint's floor and the slabbed one
    (a ring of six 4-state agents), the plan ``plan_for_accuracy`` picks, and the backend
    prediction calls reachable, must still certify the occupancy solve when a memory limit
    of ``40 |S|`` floats makes the operator run in slabs (the merged plan is refused for the
    one-agent plan, whose depths are far lower), not refuse it in the solve."""
    rng = np.random.default_rng(8)
    model = _model(Graph.ring(6), (4,) * 6, rng)
    pol = LocalizedSoftmaxPolicy.random(model, 1, rng)
    merged = contraction_plan(model, 1)
    assert merged.slab_agent is not None
    count = merged.n_states[merged.slab_agent]
    rho = matrix_free.plan_row_sum_bound(model.n_states)
    whole = matrix_free.minimum_accuracy(
        max(merged.depth, merged.transpose_depth), model.gamma, rho
    )
    slabbed = matrix_free.minimum_accuracy(
        max(merged.depth, merged.transpose_depth + count - 1), model.gamma, rho
    )
    assert whole < slabbed
    accuracy = (whole + slabbed) / 2
    limit = 40 * 8 * merged.n_joint
    from reference.networked.backends import predict_backends

    assert predict_backends(model, 1, accuracy=accuracy, memory_limit=limit)[1].reachable
    op = MatrixFreeOperator(model, pol, accuracy=accuracy, memory_limit=limit)
    assert op.slabs > 1
    assert op.plan == matrix_free.plan_for_accuracy(model, 1, accuracy)
    assert op.plan == contraction_plan(model, 1, max_group=1)
    rho0 = model.joint_rho()
    sol = op.solve_occupancy(rho0)
    dense = DenseOperator(model, pol).solve_occupancy(rho0)
    assert float(np.abs(sol.x - dense.x).sum()) <= sol.error_bound + dense.error_bound


def test_the_memory_prediction_refuses_slabs_the_plan_cannot_take() -> None:
    """``matrix_free_memory(slabs=...)`` takes what the operator takes (1, or the slab
    agent's state count) and refuses anything else with the operator's message, rather than
    predicting an application no operator runs (or dividing by zero)."""
    rng = np.random.default_rng(3)
    model = _model(Graph.ring(6), (3,) * 6, rng)
    plan = contraction_plan(model, 1)
    assert plan.slab_agent is not None
    assert matrix_free.matrix_free_memory(model, plan, slabs=3, memory_limit=1) < (
        matrix_free.matrix_free_memory(model, plan, slabs=1, memory_limit=1)
    )
    for bad in (2, 5, -1, True, 3.0, 0):
        with pytest.raises(ModelError, match=r"slabs = .*, expected 1 or 3 \(\|S_\d\|\)"):
            matrix_free.matrix_free_memory(model, plan, slabs=bad)  # type: ignore[arg-type]
    grid = _model(Graph.grid(3, 4), (2,) * 12, rng)
    grid_plan = contraction_plan(grid, 2)
    with pytest.raises(ModelError, match=r"slabs = 2, expected 1 for this plan"):
        matrix_free.matrix_free_memory(grid, grid_plan, slabs=2)


def test_the_prediction_for_several_columns_takes_the_operators_slabs() -> None:
    """The operator decides its slabs once, for one column, when it is built; the memory
    prediction for a right-hand side of several columns follows that decision.  On a ring of
    six 4-state agents, under a limit that whole one-column applications fit and whole
    two-column ones do not, the operator runs whole, and so does the two-column prediction
    (a decision taken for two columns would predict slabs the operator never takes)."""
    rng = np.random.default_rng(8)
    model = _model(Graph.ring(6), (4,) * 6, rng)
    pol = LocalizedSoftmaxPolicy.random(model, 1, rng)
    plan = contraction_plan(model, 1)
    one = matrix_free.matrix_free_memory(model, plan, slabs=1, memory_limit=1)
    two = matrix_free.matrix_free_memory(model, plan, columns=2, slabs=1, memory_limit=1)
    assert one < two
    limit = one
    assert matrix_free.application_slabs(model, plan, memory_limit=limit) == 1
    assert matrix_free.application_slabs(model, plan, columns=2, memory_limit=limit) == 4
    assert MatrixFreeOperator(model, pol, memory_limit=limit).slabs == 1
    assert matrix_free.matrix_free_memory(model, plan, columns=2, memory_limit=limit) == (
        matrix_free.matrix_free_memory(model, plan, columns=2, slabs=1, memory_limit=limit)
    )


def test_per_agent_values_on_the_operator_are_checked_for_their_columns() -> None:
    """``values="per-agent"`` solves for ``n`` right-hand sides, one column at a time: the
    rewards, the solutions and their stacked copy are ``3 n |S|`` floats beside the
    one-column gradient the operator was checked for when it was built, and the work buffers
    stay those of one column.  On a ring of 12 binary agents the tracemalloc peak is about
    twice the one-column prediction, so under a limit that prediction fits the per-agent
    solve, and ``per_agent_values``, are refused before any value is solved for; under the
    prediction for 12 right-hand sides solved one at a time they run within it, well below
    the prediction for applications of 12 columns at once (which would refuse them)."""
    rng = np.random.default_rng(5)
    model = _model(Graph.ring(12), (2,) * 12, rng)
    pol = LocalizedSoftmaxPolicy.random(model, 1, rng)
    utils = tuple(LinearUtility(rng.random((2, 2)), model.gamma) for _ in range(12))
    plan = matrix_free.plan_for_accuracy(model, 1, matrix_free.DEFAULT_ACCURACY)
    assert plan is not None
    one = matrix_free.matrix_free_memory(model, plan, memory_limit=1 << 40)
    solves = matrix_free.matrix_free_memory(
        model, plan, columns=12, applied=1, memory_limit=1 << 40
    )
    wide = matrix_free.matrix_free_memory(model, plan, columns=12, memory_limit=1 << 40)
    team_op = MatrixFreeOperator(model, pol, memory_limit=one, threads=1)
    team = solve(model, pol, utils, operator=team_op, values="team")
    with pytest.raises(MemoryLimitError, match=r"12 right-hand sides.*values='team'"):
        solve(model, pol, utils, operator=team_op, values="per-agent")
    with pytest.raises(MemoryLimitError, match="12 right-hand sides"):
        per_agent_values(model, pol, team, memory_limit=one)
    tracemalloc.start()
    try:
        op = MatrixFreeOperator(model, pol, memory_limit=solves, threads=1)
        full = solve(model, pol, utils, operator=op, values="per-agent")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert full.shadow_values is not None and full.shadow_values.shape == (plan.n_joint, 12)
    assert one < peak <= solves < wide, (one, peak, solves, wide)
    # an application of 12 columns at once holds 12 times the work buffers: refused there
    with pytest.raises(MemoryLimitError, match="12 right-hand sides"):
        op.apply(full.shadow_values)
