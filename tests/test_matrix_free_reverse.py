"""Reverse-mode factor gradients, threaded applications and BiCGSTAB of the matrix-free
operator (``proofs_notes/matrix-free.md#reverse``, ``#threads``, ``#krylov``)."""

from __future__ import annotations

import mmap
from collections.abc import Callable
from math import ceil, fsum, prod

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reference import _arrays as arrays_module
from reference._arrays import streamed_empty
from reference.errors import ModelError
from reference.instances import line_message
from reference.networked import (
    DenseOperator,
    EntropyUtility,
    Graph,
    LocalizedSoftmaxPolicy,
    MatrixFreeOperator,
    NetworkedMDP,
    contraction_plan,
    matrix_free,
    solve,
)
from verify import strategies as mst
from verify.operators import reverse_form_depth
from verify.tolerances import contraction_tolerance

_MODELS = mst.networked_mdps(
    max_agents=6, max_local_states=3, max_local_actions=3, max_joint_states=64
)


def _dirichlet_model(
    graph: Graph,
    sizes: tuple[int, ...],
    rng: np.random.Generator,
    *,
    actions: int = 2,
    dirichlet_rho: bool = False,
) -> NetworkedMDP:
    """Local state counts ``sizes`` on ``graph``, ``actions`` actions per agent, Dirichlet(1, ...)
    kernel rows drawn agent by agent, then the local initial distributions: Dirichlet draws
    with ``dirichlet_rho``, else uniform; ``gamma = 0.9``."""
    return NetworkedMDP.random(
        graph, sizes, (actions,) * graph.n, rng, rho="dirichlet" if dirichlet_rho else "uniform"
    )


def _count_factor_gradients(patch: pytest.MonkeyPatch) -> list[int]:
    """Patch :meth:`MatrixFreeOperator.factor_gradients` (for the duration of ``patch``) to
    record each call; the returned list grows by one entry per call."""
    swept: list[int] = []
    real = MatrixFreeOperator.factor_gradients

    def counted(self: MatrixFreeOperator, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, ...]:
        swept.append(1)
        return real(self, u, v)

    patch.setattr(MatrixFreeOperator, "factor_gradients", counted)
    return swept


def _reverse_depth(op: MatrixFreeOperator) -> int:
    """Roundings along one path of the reverse route (``verify.operators.reverse_form_depth``)
    plus its two sums over at most ``|S|`` terms: the pair contraction and the marginal onto
    the observation."""
    return reverse_form_depth(op) + 2 * op.plan.n_joint


@given(model=_MODELS, seed=mst.seeds(), beta=st.integers(0, 2), grouped=st.booleans())
def test_agent_forms_match_one_agent_application_each(
    model: NetworkedMDP, seed: int, beta: int, grouped: bool
) -> None:
    """T_i[o, b] = sum_{o_i(s) = o} u(s) (P^(i,b) v)(s) from one reverse-mode sweep equals the
    marginal of u * apply_agent(i, v), agent by agent (two routes through the same factors),
    within the derived rounding of both."""
    rng = np.random.default_rng(seed)
    pol = LocalizedSoftmaxPolicy.random(model, beta, rng)
    plan = contraction_plan(model, beta, max_group=8 if grouped else 1)
    op = MatrixFreeOperator(model, pol, plan=plan)
    u, v = rng.standard_normal(op.n_states), rng.standard_normal(op.n_states)
    forms = op.agent_forms(u, v)
    scale = 2.0 * float(np.sum(np.abs(u))) * float(np.max(np.abs(v)))
    tol = contraction_tolerance(_reverse_depth(op) + plan.depth + 2 * op.n_states, scale)
    for i in range(model.n):
        want = model.states.marginal(u[:, None] * op.apply_agent(i, v), pol.observed[i])
        assert forms[i].shape == want.shape
        np.testing.assert_allclose(forms[i], want, rtol=0, atol=tol)


@given(model=_MODELS, seed=mst.seeds(), beta=st.integers(0, 2), grouped=st.booleans())
def test_factor_gradients_are_the_derivatives_of_u_p_v(
    model: NetworkedMDP, seed: int, beta: int, grouped: bool
) -> None:
    """u^T P v is linear in each factor M_i, so <Y_i, H> = u^T P[M_i -> H] v for any H shaped
    like M_i: the right side by a forward contraction with the factor replaced."""
    rng = np.random.default_rng(seed)
    pol = LocalizedSoftmaxPolicy.random(model, beta, rng)
    plan = contraction_plan(model, beta, max_group=8 if grouped else 1)
    op = MatrixFreeOperator(model, pol, plan=plan)
    u, v = rng.standard_normal(op.n_states), rng.standard_normal(op.n_states)
    grads = op.factor_gradients(u, v)
    for i in range(model.n):
        h = rng.random(op.factors[i].shape)  # non-negative: row sums at most |S_i|
        factors = list(op.factors)
        factors[i] = h
        mats = [
            matrix_free._step_matrix(step, plan.supports, [factors[a] for a in step.agents],
                                     model.n_states)
            for step in plan.steps
        ]
        direct = float(u @ op._forward(v, mats))
        scale = float(np.sum(np.abs(u))) * float(np.max(np.abs(v))) * max(model.n_states)
        tol = contraction_tolerance(_reverse_depth(op) + plan.depth + op.n_states + h.size, scale)
        assert abs(float(np.sum(grads[i] * h)) - direct) <= tol


def test_factor_gradients_reject_bad_shapes_and_respect_the_memory_limit() -> None:
    inst = line_message(4)
    pol = LocalizedSoftmaxPolicy.uniform(inst.model)
    op = MatrixFreeOperator(inst.model, pol)
    ok = np.ones(op.n_states)
    with pytest.raises(ModelError, match=r"u has shape \(3,\)"):
        op.factor_gradients(np.ones(3), ok)
    with pytest.raises(ModelError, match=r"v has shape \(16, 1\)"):
        op.factor_gradients(ok, np.ones((16, 1)))
    small = MatrixFreeOperator(inst.model, pol, memory_limit=64 * 1024)
    small._memory_limit = 64  # the operator fits; the stored inputs of 16 states do not
    with pytest.raises(ModelError, match="factor gradients"):
        small.factor_gradients(ok, ok)


def test_threaded_applications_equal_the_single_threaded_ones() -> None:
    """Two and three threads (:func:`_check_threads`), on the real pool and on one that runs
    a job only when its result is awaited (so a slab nobody waits for is missing, not just
    possibly late)."""
    for threads in (2, 3):
        for lazy in (False, True):
            with pytest.MonkeyPatch.context() as monkeypatch:
                _check_threads(monkeypatch, threads, lazy)


class _Deferred:
    """A job of :class:`_LazyPool`: runs at ``result()``."""

    def __init__(self, call: Callable[..., object], args: tuple[object, ...]) -> None:
        self.call, self.args = call, args

    def result(self) -> object:
        return self.call(*self.args)


class _LazyPool:
    """Stands in for the thread pool: ``submit`` defers the call to ``result()``."""

    def submit(self, call: Callable[..., object], *args: object) -> _Deferred:
        return _Deferred(call, args)


def _check_threads(monkeypatch: pytest.MonkeyPatch, threads: int, lazy: bool = False) -> None:
    """With the splitting threshold forced to zero every step and copy of a small instance is
    split into slabs (along x, or y when x is too short).  The slabs are disjoint, but BLAS
    may block a slab's products differently, so entries agree within the rounding of both
    evaluations (and the solves within both certificates)."""
    monkeypatch.setattr(matrix_free, "_PARALLEL_WORK", 0)
    monkeypatch.setattr(matrix_free, "_CHUNK", 7)  # vector updates in many pieces per slab
    monkeypatch.setattr(matrix_free, "_CHUNK_THREADED", 7)
    submitted: list[int] = []
    real_pool = matrix_free._pool

    def spy(count: int) -> object:
        submitted.append(count)
        return _LazyPool() if lazy else real_pool(count)

    monkeypatch.setattr(matrix_free, "_pool", spy)
    rng = np.random.default_rng(threads)
    model = _dirichlet_model(Graph.ring(6), (3, 2, 2, 3, 2, 2), rng)
    pol = LocalizedSoftmaxPolicy.random(model, 1, rng)
    for max_group in (1, 8):
        plan = contraction_plan(model, 1, max_group=max_group)
        one = MatrixFreeOperator(model, pol, plan=plan, threads=1)
        many = MatrixFreeOperator(model, pol, plan=plan, threads=threads)
        v = rng.standard_normal(one.n_states)
        cols = rng.standard_normal((one.n_states, 3))
        # entries of P v: scale rho ||v||_inf (rho <= 1 + slack); of P^T u: the column's l1 norm
        tol = contraction_tolerance(2 * plan.depth, 2.0 * float(np.max(np.abs(v))))
        np.testing.assert_allclose(many.apply(v), one.apply(v), rtol=0, atol=tol)
        t_tol = contraction_tolerance(2 * plan.transpose_depth, 2.0 * float(np.sum(np.abs(cols))))
        np.testing.assert_allclose(
            many.apply_transpose(cols), one.apply_transpose(cols), rtol=0, atol=t_tol
        )
        f_tol = contraction_tolerance(
            2 * _reverse_depth(one), 2.0 * float(np.sum(np.abs(v))) * float(np.max(np.abs(v)))
        )
        for a, b in zip(many.agent_forms(v, v), one.agent_forms(v, v), strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=f_tol)
        x1, x2 = one.solve_values(v), many.solve_values(v)
        assert float(np.max(np.abs(x1.x - x2.x))) <= x1.error_bound + x2.error_bound
        # and the slabs were really cut and run on the pool
        assert submitted and set(submitted) == {threads}


def test_an_exception_in_a_slab_reaches_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    """A step product that fails on a pool thread fails the application (not a silently
    unwritten slab)."""
    monkeypatch.setattr(matrix_free, "_PARALLEL_WORK", 0)
    inst = line_message(6)
    pol = LocalizedSoftmaxPolicy.uniform(inst.model)
    op = MatrixFreeOperator(inst.model, pol, threads=2)

    def broken(mat: np.ndarray, t: np.ndarray, out: np.ndarray) -> np.ndarray:
        raise FloatingPointError("slab failed")

    monkeypatch.setattr(matrix_free, "_step_product", broken)
    with pytest.raises(FloatingPointError, match="slab failed"):
        op.apply(np.ones(op.n_states))


def test_fused_vector_kernels_cover_every_piece_of_every_slab() -> None:
    """``_chunked`` and ``_dot`` with pieces of 7 entries and the splitting threshold at zero:
    every entry of 1001 is visited once, in pieces no longer than 7 with scratch to match,
    the partial results of every piece and slab are summed, and the dot product equals the
    exactly rounded sum of the products (``math.fsum``) within ``(n + 1) eps sum |a b|``
    (contraction_tolerance: one product and at most n additions per term)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(matrix_free, "_CHUNK", 7)
        monkeypatch.setattr(matrix_free, "_CHUNK_THREADED", 7)
        monkeypatch.setattr(matrix_free, "_PARALLEL_WORK", 0)
        _check_fused_kernels()


def _check_fused_kernels() -> None:
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal(1001), rng.standard_normal(1001)
    exact = fsum(float(p) for p in a * b)
    tol = contraction_tolerance(a.size + 1, float(np.sum(np.abs(a * b))))
    for threads in (1, 2, 3):
        assert abs(matrix_free._dot(a, b, threads) - exact) <= tol
        hits = np.zeros(a.size)

        def kernel(piece: slice, scratch: np.ndarray, hits: np.ndarray = hits
                   ) -> tuple[float, ...]:
            assert scratch.size == piece.stop - piece.start <= 7
            hits[piece] += 1.0
            return (float(piece.stop - piece.start), 1.0)

        entries, pieces = matrix_free._chunked(kernel, a.size, threads, 2)
        slabs = matrix_free._halves(a.size, threads) if threads > 1 else [slice(0, a.size)]
        assert np.all(hits == 1.0) and entries == a.size
        assert pieces == sum(ceil((s.stop - s.start) / 7) for s in slabs)


def test_bicgstab_stops_when_its_residual_is_below_the_tolerance() -> None:
    """``_bicgstab`` on a dense ``A = I - 0.95 P``: it returns its iterate (a view of the
    first work vector), stops once the recursively updated residual (left in the second work
    vector) has 2-norm below ``atol`` and not an iteration later (one iteration fewer leaves
    it at or above ``atol``), and that residual is the true one ``b - A x`` up to rounding
    (the drift, a few eps ||A|| ||x|| per iteration, is below 1e-11 here, far below the
    tolerances asked)."""
    rng = np.random.default_rng(3)
    n = 40
    a = np.eye(n) - 0.95 * rng.dirichlet(np.ones(n), size=n)
    b = rng.standard_normal(n)
    products: list[int] = []

    def matvec(y: np.ndarray, out: np.ndarray) -> np.ndarray:
        products.append(1)
        np.matmul(a, y, out=out)
        return out

    work = [np.empty(n) for _ in range(6)]
    for atol in (1e-3, 1e-6, 1e-9):
        products.clear()
        x = matrix_free._bicgstab(matvec, b, atol, 500, work=work)
        assert np.shares_memory(x, work[0])
        assert float(np.linalg.norm(work[1])) < atol
        assert float(np.linalg.norm(b - a @ x - work[1])) <= 1e-11
        iterations = ceil(len(products) / 2)  # two products per iteration, one at a half stop
        assert iterations >= 2
        matrix_free._bicgstab(matvec, b, atol, iterations - 1, work=work)
        assert float(np.linalg.norm(work[1])) >= atol


@pytest.mark.parametrize(
    ("entries", "rhs", "x_true"),
    [
        # <r^, A p> = 0 at once: x = 0, r = b
        ((-1.0, -1.0, 0.0, 2.0), (1.0, 1.0), (0.0, 0.0)),
        # t = A s = 0 after the half step: x = alpha p = (-1, -1), r = s = (-1, 1)
        ((-1.0, -1.0, 0.0, 0.0), (1.0, 1.0), (-1.0, -1.0)),
        # omega = <t, s> / <t, t> = 0: x = alpha p = (-1, 0), r = s = (0, -1)
        ((-1.0, -1.0, -1.0, 0.0), (1.0, 0.0), (-1.0, 0.0)),
    ],
)
def test_bicgstab_breakdowns_return_the_iterate_of_the_residual_left(
    entries: tuple[float, ...], rhs: tuple[float, ...], x_true: tuple[float, ...]
) -> None:
    """At each of BiCGSTAB's breakdown exits (zero ``<r^, A p>``, zero ``A s``, zero
    ``omega``), reached in one iteration on a singular 2 x 2 ``A`` from the textbook shadow
    ``r^ = b``, the returned iterate is the one whose residual ``b - A x`` the second work
    vector holds: after the half step ``x`` includes ``alpha p``.  Every quantity is a small
    integer, so the comparison is exact."""
    a = np.array(entries).reshape(2, 2)
    b = np.array(rhs)

    def matvec(y: np.ndarray, out: np.ndarray) -> np.ndarray:
        np.matmul(a, y, out=out)
        return out

    work = [np.empty(2) for _ in range(6)]
    x = matrix_free._bicgstab(matvec, b, 1e-12, 10, work=work, perturb=False)
    np.testing.assert_array_equal(x, np.array(x_true))
    np.testing.assert_array_equal(b - a @ x, work[1])


def test_threads_argument_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    inst = line_message(3)
    pol = LocalizedSoftmaxPolicy.uniform(inst.model)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ModelError, match="threads = "):
            MatrixFreeOperator(inst.model, pol, threads=bad)  # type: ignore[arg-type]
    monkeypatch.setenv("MARL_ORACLE_THREADS", "3")
    assert matrix_free.default_threads() == 3
    assert MatrixFreeOperator(inst.model, pol).threads == 3
    for bad_env in ("0", "two", ""):
        monkeypatch.setenv("MARL_ORACLE_THREADS", bad_env)
        with pytest.raises(ModelError, match="MARL_ORACLE_THREADS"):
            matrix_free.default_threads()
    monkeypatch.delenv("MARL_ORACLE_THREADS")
    assert 1 <= matrix_free.default_threads() <= 2


@pytest.mark.parametrize("solver", ["bicgstab", "gmres"])
def test_krylov_solves_beat_the_fixed_point_count(solver: str) -> None:
    """On a coupled ring the Krylov solves certify 1e-10 in well under a quarter of the
    fixed-point iteration's a priori count k = ceil(log(acc) / log(gamma rho)) (the fixed
    point itself contracts the slow mode along the constant vector by exactly gamma per step,
    so a Krylov route that silently fell back to it would need about k)."""
    rng = np.random.default_rng(5)
    model = _dirichlet_model(Graph.ring(8), (2,) * 8, rng)
    pol = LocalizedSoftmaxPolicy.random(model, 1, rng)
    op = MatrixFreeOperator(model, pol, solver=solver)  # type: ignore[arg-type]
    k = matrix_free.fixed_point_iterations(model.gamma * op.row_sum_bound, op.accuracy)
    r = rng.random(op.n_states)
    fixed = MatrixFreeOperator(model, pol, solver="fixed-point").solve_values(r)
    assert fixed.iterations > k // 2  # the fallback really is slow here
    for got in (op.solve_values(r), op.solve_occupancy(model.joint_rho())):
        assert got.iterations < k // 4


def test_matrix_free_gradient_with_reverse_forms_matches_dense_at_scale() -> None:
    """The whole matrix-free gradient (reverse-mode forms, BiCGSTAB, threads with the
    splitting threshold at its default) against the dense route on a 2^10-state ring, the
    largest size the dense LU checks quickly: within the gradient's derived agreement."""
    from verify.operators import compare_solutions

    rng = np.random.default_rng(12)
    model = _dirichlet_model(Graph.ring(10), (2,) * 10, rng)
    pol = LocalizedSoftmaxPolicy.random(model, 1, rng)
    utils = [EntropyUtility((2, 2), 0.9, 1e-3) for _ in range(10)]
    op = MatrixFreeOperator(model, pol)
    mf = solve(model, pol, utils, operator=op)
    dense = solve(model, pol, utils, operator=DenseOperator(model, pol))
    cmp = compare_solutions(dense, mf, op)
    assert cmp.agrees, cmp


def test_agent_forms_on_rings_whose_adjoint_reorders_axes() -> None:
    """Rings contracted one agent per step permute the intermediate at later steps by
    permutations that are not their own inverses (ring(5), beta 1: (2, 1, 3, 4, 0, ...)), so
    the adjoint chain must undo each with its inverse; checked on rings of 4 to 6 agents with
    mixed local sizes, beta 0 to 2, both groupings."""
    rng = np.random.default_rng(21)
    for n in (4, 5, 6):
        sizes = tuple(int(k) for k in rng.integers(2, 4, size=n))
        model = _dirichlet_model(Graph.ring(n), sizes, rng)
        for beta in (0, 1, 2):
            pol = LocalizedSoftmaxPolicy.random(model, beta, rng)
            for max_group in (1, 8):
                plan = contraction_plan(model, beta, max_group=max_group)
                op = MatrixFreeOperator(model, pol, plan=plan)
                u, v = rng.standard_normal(op.n_states), rng.standard_normal(op.n_states)
                forms = op.agent_forms(u, v)
                scale = 2.0 * float(np.sum(np.abs(u))) * float(np.max(np.abs(v)))
                tol = contraction_tolerance(_reverse_depth(op) + plan.depth + 2 * op.n_states, scale)
                for i in range(n):
                    want = model.states.marginal(u[:, None] * op.apply_agent(i, v), pol.observed[i])
                    np.testing.assert_allclose(forms[i], want, rtol=0, atol=tol)


def test_pair_contraction_pieces_for_every_product_cap() -> None:
    """``_pair_contraction`` against ``einsum`` with the product cap forced down, so that
    every branch (long rows cut along y, strided columns cut along x when y = 1, copied
    slabs of x otherwise) and every remainder occurs; one, two and three threads, so that
    rows are split between threads (fewer rows than threads) and whole rows are summed in
    place (at least as many, evenly or not)."""
    rng = np.random.default_rng(31)
    shapes = [(1, 2, 3, 7), (5, 2, 3, 1), (4, 3, 2, 5), (3, 1, 2, 9), (2, 5, 2, 3)]
    for x, b, e, y in shapes:
        c = 4
        g = rng.standard_normal((x, b, e, y))
        t = rng.standard_normal((x, b, c, y))
        want = np.einsum("xbey,xbcy->bec", g, t)
        scale = float(np.max(np.abs(g))) * float(np.max(np.abs(t)))
        tol = contraction_tolerance(x * y + 2, x * y * scale)
        for cap in (1, 8, 40, 1 << 18):
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(matrix_free, "_BLAS_PRODUCT", cap)
                patch.setattr(matrix_free, "_PARALLEL_WORK", 0)
                for threads in (1, 2, 3):
                    got = matrix_free._pair_contraction(g, t, threads)
                    np.testing.assert_allclose(got, want, rtol=0, atol=tol)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_pair_contraction_holds_one_result_when_every_row_is_its_own_piece(threads: int) -> None:
    """With ``B`` rows of one piece each (``x = y = 1``, a star's centre) the pair contraction
    allocates its ``(B, E, C)`` result and little else on any number of threads: no
    per-thread partial sums of the whole result and no list of ``B`` pieces (either costs a
    multiple of the result; tracemalloc peak within 1.25 results)."""
    import tracemalloc

    rng = np.random.default_rng(8)
    b, e, c = 1 << 14, 1, 3
    g = rng.standard_normal((1, b, e, 1))
    t = rng.standard_normal((1, b, c, 1))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(matrix_free, "_PARALLEL_WORK", 0)
        matrix_free._pair_contraction(g[:, :8], t[:, :8], threads)  # the pool exists
        tracemalloc.start()
        try:
            got = matrix_free._pair_contraction(g, t, threads)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    np.testing.assert_array_equal(got, np.einsum("xbey,xbcy->bec", g, t))
    assert peak <= 1.25 * 8 * b * e * c, peak / (8 * b * e * c)


def test_forms_fall_back_to_agent_applications_when_the_stored_inputs_do_not_fit(
) -> None:
    """When the reverse route's stored inputs would pass the memory limit, agent_forms uses
    one agent application per agent and action instead (the same forms within both
    roundings), and the operator's memory prediction drops the stored inputs."""
    inst = line_message(6)
    model = inst.model
    pol = LocalizedSoftmaxPolicy.random(model, 1, np.random.default_rng(4))
    plan = contraction_plan(model, 1)
    assert matrix_free.reverse_forms_fit(model, plan, 1 << 40)
    assert not matrix_free.reverse_forms_fit(model, plan, 1 << 10)
    small = matrix_free.matrix_free_memory(model, plan, memory_limit=1 << 10, slabs=1)
    large = matrix_free.matrix_free_memory(model, plan, memory_limit=1 << 40, slabs=1)
    # the prediction keeps max(solve phase, forms phase): BiCGSTAB's 7 + 5 vectors and one
    # result beside the two buffers, against the stored inputs beside them and the steps'
    # derivative sums (reverse route) or one agent's results, a product vector and its
    # cached step matrices (applications); whole applications in both (slabs = 1)
    n_joint = model.states.size
    solving = 2 * plan.buffer_floats + n_joint + 12 * n_joint
    reverse = plan.stored_floats + 2 * plan.buffer_floats + sum(
        s.matrix_floats for s in plan.steps
    )
    step_matrices = max(
        model.n_actions[i] * s.matrix_floats
        for s in plan.steps for i in s.agents
    )
    applications = 2 * plan.buffer_floats + (max(model.n_actions) + 1) * n_joint + step_matrices
    assert large - small == 8 * (max(solving, reverse) - max(solving, applications))
    op = MatrixFreeOperator(model, pol)
    rng = np.random.default_rng(5)
    u, v = rng.standard_normal(op.n_states), rng.standard_normal(op.n_states)
    # the route taken is the one decided: factor gradients exactly when the inputs fit
    with pytest.MonkeyPatch.context() as patch:
        swept = _count_factor_gradients(patch)
        reverse = op.agent_forms(u, v)
        assert swept == [1]
        patch.setattr(matrix_free, "reverse_forms_fit", lambda *args: False)
        direct = op.agent_forms(u, v)
        assert swept == [1]
        with pytest.raises(ModelError, match=r"u has shape \(3,\)"):
            op.agent_forms(np.ones(3), v)
    scale = 2.0 * float(np.sum(np.abs(u))) * float(np.max(np.abs(v)))
    tol = contraction_tolerance(_reverse_depth(op) + op.plan.depth + 2 * op.n_states, scale)
    for a, b in zip(reverse, direct, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=tol)


def test_exact_gradient_with_reverse_forms_stays_within_the_memory_prediction() -> None:
    """On a ring with observation radius 2 the reverse route's stored inputs dominate
    (stored_floats = 37 |S| beside two work buffers of 16 |S| here), so the gradient phase sets
    the peak: the tracemalloc peak of the whole exact gradient stays within
    ``matrix_free_memory`` (the solves' vectors kept by the operator are not held through
    the gradient phase, and the forward chain's unstored outputs live in the work
    buffers)."""
    import tracemalloc

    from reference.networked.backends import predict_backends

    rng = np.random.default_rng(21)
    model = _dirichlet_model(Graph.ring(12), (2,) * 12, rng)
    pol = LocalizedSoftmaxPolicy.random(model, 2, rng)
    utils = tuple(EntropyUtility((2, 2), model.gamma) for _ in range(12))
    _, predicted = predict_backends(model, 2)
    plan = contraction_plan(model, 2)
    assert matrix_free.reverse_forms_fit(model, plan)
    assert plan.stored_floats > 12 * plan.n_joint + plan.buffer_floats  # the gradient phase dominates
    tracemalloc.start()
    try:
        op = MatrixFreeOperator(model, pol)
        sol = solve(model, pol, utils, operator=op)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.isfinite(sol.gradient_norm)
    assert peak <= predicted.bytes, (peak / 8 / plan.n_joint, predicted.bytes / 8 / plan.n_joint)
    # the prediction counts the two phases apart: the solves' kept vectors (10 |S| floats) are
    # released before the stored inputs are allocated, not held beside them
    assert op._krylov is None and op._solves is None


def test_exact_gradient_by_agent_applications_stays_within_the_memory_prediction() -> None:
    """On a line of 4-state agents (four actions each, so one agent's applications are 4 |S|
    floats) with observation radius 2 (stored inputs 49 |S| beside two work buffers of
    16 |S|) under a memory limit between the two routes' predictions, the forms come from
    agent applications (factor_gradients is never called), the tracemalloc peak of the whole
    exact gradient stays within ``matrix_free_memory``, and the solves' kept vectors were
    released before the applications (the prediction counts the two phases apart)."""
    import tracemalloc

    rng = np.random.default_rng(31)
    model = _dirichlet_model(Graph.line(6), (4,) * 6, rng, actions=4, dirichlet_rho=True)
    pol = LocalizedSoftmaxPolicy.random(model, 2, rng)
    utils = tuple(EntropyUtility((4, 4), model.gamma) for _ in range(6))
    plan = contraction_plan(model, 2)
    # whole applications (slabs = 1): the operator under the limit below runs them whole;
    # the reverse route is held to whole stored inputs (in slabs of agent 0 they would fit
    # here, tests/test_matrix_free_slabs.py), so that the agent applications are what runs
    fallback = matrix_free.matrix_free_memory(model, plan, memory_limit=1, slabs=1)
    reverse = matrix_free.matrix_free_memory(model, plan, memory_limit=1 << 40)
    assert fallback < reverse
    limit = (fallback + reverse) // 2
    whole_only = matrix_free.reverse_forms_slabs

    def whole_or_none(*args: object) -> int:
        return 1 if whole_only(*args) == 1 else 0  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(matrix_free, "reverse_forms_slabs", whole_or_none)
        assert not matrix_free.reverse_forms_fit(model, plan, limit)
        assert matrix_free.matrix_free_memory(model, plan, memory_limit=limit) == fallback
        swept = _count_factor_gradients(patch)
        tracemalloc.start()
        try:
            op = MatrixFreeOperator(model, pol, memory_limit=limit)
            sol = solve(model, pol, utils, operator=op)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert swept == []
    assert peak <= fallback, (peak / 8 / plan.n_joint, fallback / 8 / plan.n_joint)
    assert op._krylov is None and op._solves is None
    reference = solve(model, pol, utils, backend="dense")
    bound = 1e-8 * max(1.0, reference.gradient_norm)
    for a, b in zip(sol.gradient, reference.gradient, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=bound)


def test_the_memory_prediction_counts_the_reverse_route_whenever_agent_forms_takes_it() -> None:
    """For every memory limit, ``matrix_free_memory`` and ``agent_forms`` agree on the route
    (:func:`reverse_forms_fit`): when the forms come by reverse mode the prediction counts
    its stored inputs beside the work buffers, and it never undercuts the prediction of the
    other route.  The limits swept include the window between the reverse phase alone and
    the reverse phase plus the local factors, where the two decisions once differed."""
    rng = np.random.default_rng(14)
    model = _dirichlet_model(Graph.ring(14), (2,) * 14, rng)
    plan = contraction_plan(model, 2)
    n_joint = plan.n_joint
    reverse = 8 * (plan.stored_floats + 2 * plan.buffer_floats)
    held = 8 * (8 + 3) * n_joint  # what every gradient holds: occupancy, values, rewards
    # whole applications throughout (slabs = 1): the route decision is what is checked
    fallback = matrix_free.matrix_free_memory(model, plan, memory_limit=1, slabs=1)
    limits = sorted({int(f * 8 * n_joint) for f in np.arange(50.0, 120.0, 0.25)})
    taken = 0
    for limit in limits:
        predicted = matrix_free.matrix_free_memory(model, plan, memory_limit=limit, slabs=1)
        if matrix_free.reverse_forms_fit(model, plan, limit):
            taken += 1
            assert predicted >= reverse + held, limit
            assert predicted >= fallback
        else:
            assert predicted == fallback
    assert 0 < taken < len(limits)


def test_occupancy_solve_with_a_uniform_start_needs_one_bicgstab_call() -> None:
    """With a uniform initial distribution and the shadow residual equal to b, BiCGSTAB
    broke down: the occupancy system's residuals lose their mass first
    (``1^T (I - gamma P^T) = (1 - gamma) 1^T``), so ``<shadow, r> -> 0``, the call stalled
    near ``1e-9`` and a second call was needed (32 and 30 applications on two of these four
    rings).  With the perturbed shadow residual one call certifies, on each ring, within
    the applications of one call and its check."""
    calls: list[int] = []
    real = matrix_free._bicgstab

    def counting(*args: object, **kwargs: object) -> np.ndarray:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(matrix_free, "_bicgstab", counting)
        for seed in range(4):
            rng = np.random.default_rng(seed)
            model = _dirichlet_model(Graph.ring(8), (2,) * 8, rng)
            pol = LocalizedSoftmaxPolicy.random(model, 1, rng)
            calls.clear()
            got = MatrixFreeOperator(model, pol).solve_occupancy(model.joint_rho())
            assert calls == [1], (seed, got.iterations)
            want = DenseOperator(model, pol).solve_occupancy(model.joint_rho())
            assert float(np.sum(np.abs(got.x - want.x))) <= got.error_bound + want.error_bound


def test_the_perturbed_shadow_residual_is_what_makes_a_uniform_start_converge_fast() -> None:
    """On the same four rings, BiCGSTAB for the occupancy system ``(I - gamma P^T) x = b``
    with a uniform ``b`` reaches an l1 residual of ``1e-10`` in fewer products with ``A`` from
    the perturbed shadow residual than from ``b`` itself, whose inner products with the
    residuals vanish with their mass (measured: 13-17 against 15-38 products)."""
    for seed in range(4):
        rng = np.random.default_rng(seed)
        model = _dirichlet_model(Graph.ring(8), (2,) * 8, rng)
        pol = LocalizedSoftmaxPolicy.random(model, 1, rng)
        op = MatrixFreeOperator(model, pol)
        b = (1.0 - model.gamma) * model.joint_rho()
        counts = []
        for perturb in (True, False):
            products: list[int] = []

            def matvec(y: np.ndarray, out: np.ndarray, products: list[int] = products,
                       op: MatrixFreeOperator = op, gamma: float = model.gamma) -> np.ndarray:
                products.append(1)
                np.subtract(y, gamma * op.apply_transpose(y), out=out)
                return out

            x = matrix_free._bicgstab(matvec, b, 1e-10, 200, norm="l1", perturb=perturb)
            residual = b - (x - model.gamma * op.apply_transpose(x))
            # the recursive residual is below 1e-10; it drifts from the true one by the
            # rounding of each product with A (l1 error at most depth eps (1 + gamma) ||x||_1,
            # contraction_tolerance) and of the updates, per product
            x_l1 = float(np.sum(np.abs(x)))
            drift = len(products) * contraction_tolerance(
                op.plan.transpose_depth + 8, (1.0 + model.gamma) * x_l1
            )
            assert float(np.sum(np.abs(residual))) <= 1e-10 + drift
            counts.append(len(products))
        assert counts[0] < counts[1], (seed, counts)


def test_streamed_arrays_are_writable_float_arrays_of_the_asked_shape() -> None:
    """Solver vectors and stored inputs come from :func:`streamed_empty`: below the threshold a
    plain array, above it a mapping without huge-page advice (forced here with the threshold
    at zero); either way a writable float64 array, and the solves and forms built on them
    equal those on plain arrays."""
    small = streamed_empty((3, 4))
    assert small.shape == (3, 4) and small.dtype == np.float64 and small.flags.writeable
    inst = line_message(6)
    pol = LocalizedSoftmaxPolicy.random(inst.model, 1, np.random.default_rng(8))
    rng = np.random.default_rng(9)
    u, v = rng.standard_normal(64), rng.standard_normal(64)
    plain_op = MatrixFreeOperator(inst.model, pol, threads=1)
    plain = (plain_op.solve_values(v).x, plain_op.agent_forms(u, v))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(arrays_module, "_STREAMED_BYTES", 0)
        mapped = streamed_empty((5, 7))
        assert mapped.shape == (5, 7) and mapped.dtype == np.float64
        assert mapped.flags.writeable
        # a mapping where the platform can advise against huge pages (Linux), else numpy.empty
        assert (mapped.base is not None) == hasattr(mmap, "MADV_NOHUGEPAGE")
        mapped[...] = 1.5
        assert float(mapped.sum()) == 52.5
        op = MatrixFreeOperator(inst.model, pol, threads=1)
        got = (op.solve_values(v).x, op.agent_forms(u, v))
    np.testing.assert_array_equal(got[0], plain[0])
    for a, b in zip(got[1], plain[1], strict=True):
        np.testing.assert_array_equal(a, b)


def test_exact_gradient_on_a_star_stays_within_the_memory_prediction() -> None:
    """A star's centre sees every agent at radius 0, so its last step shares all axes
    (``B = |S|`` rows of ``F_G``, ``x = y = 1``): the pair contraction of that step must
    not hold per-row bookkeeping beside its ``(B, E, C)`` result.  The tracemalloc peak of the
    whole exact gradient on one thread stays within ``matrix_free_memory`` on the reverse
    route (it went 16 % above it with one Python tuple per row of ``F_G``)."""
    import tracemalloc

    from reference.networked import LinearUtility

    sizes = (3, 2, 4, 2, 3, 2, 2, 4, 2, 2, 2, 2, 2)
    actions = (1, 2, 2, 3, 3, 1, 3, 3, 2, 2, 2, 2, 2)
    n = len(sizes)
    graph = Graph.from_edges(n, [(0, i) for i in range(1, n)])
    rng = np.random.default_rng(3)
    kernels = tuple(
        rng.dirichlet(
            np.ones(sizes[i]),
            size=(prod(sizes[j] for j in graph.neighbourhood(i)), actions[i]),
        )
        for i in range(n)
    )
    model = NetworkedMDP(graph, sizes, actions, kernels, 0.9, tuple(np.ones(k) / k for k in sizes))
    pol = LocalizedSoftmaxPolicy.random(model, 0, rng)
    utils = tuple(LinearUtility(rng.random((sizes[i], actions[i])), 0.9) for i in range(n))
    tracemalloc.start()
    try:
        op = MatrixFreeOperator(model, pol, threads=1)
        sol = solve(model, pol, utils, operator=op)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    plan = op.plan
    assert matrix_free.reverse_forms_fit(model, plan)
    assert plan.steps[-1].sizes == (1, plan.n_joint, sizes[0], 1)
    predicted = matrix_free.matrix_free_memory(model, plan, restart=op.restart)
    assert np.isfinite(sol.gradient_norm)
    assert peak <= predicted, (peak / 8 / plan.n_joint, predicted / 8 / plan.n_joint)
