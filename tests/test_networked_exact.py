"""SPEC section 2 on random networked instances (proofs_notes/shadow-reward-gradient.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from reference.errors import MemoryLimitError, ModelError
from reference.instances import line_message
from reference.networked import (
    DenseOperator,
    Graph,
    LinearUtility,
    LocalizedSoftmaxPolicy,
    NetworkedMDP,
    Utility,
    UtilityConstants,
    gradient_chain_rule,
    gradient_joint_q,
    objective,
    solve,
    transition_operator,
)
from reference.networked.exact import Backend
from reference.tabular import evaluate, evaluate_iterative, occupancy, occupancy_iterative
from verify import strategies as mst
from verify.finite_differences import central_difference
from verify.tolerances import certified, gradient_tolerance, summation_tolerance

# One agent with one state and action at gamma = 0: everything degenerates to a constant.
_ONE_AGENT = NetworkedMDP(Graph.line(1), (1,), (1,), (np.ones((1, 1, 1)),), 0.0, (np.ones(1),))
_SINGLE = mst.NetworkedProblem(
    _ONE_AGENT,
    LocalizedSoftmaxPolicy.uniform(_ONE_AGENT),
    (LinearUtility(np.array([[0.5]]), 0.0),),
)
# Two states, gamma = 0.5, a subnormal reward: the value solve's right-hand side has norm
# 5e-324 (a matrix-free solve must neither divide by it nor refuse it).
_TWO_STATES = NetworkedMDP(
    Graph.line(1), (2,), (1,), (np.array([[[0.5, 0.5]], [[0.25, 0.75]]]),), 0.5, (np.ones(2) / 2,)
)
_SUBNORMAL = mst.NetworkedProblem(
    _TWO_STATES,
    LocalizedSoftmaxPolicy.uniform(_TWO_STATES),
    (LinearUtility(np.array([[5e-324], [0.0]]), 0.5),),
)


BACKENDS: tuple[Backend, ...] = ("dense", "matrix-free")


def _max_reward(sol_rewards: tuple[np.ndarray, ...]) -> float:
    return max(float(np.max(np.abs(r))) for r in sol_rewards)


def _flat(grads: tuple[np.ndarray, ...]) -> np.ndarray:
    return np.concatenate([g.reshape(-1) for g in grads])


@example(problem=_SINGLE)
@given(problem=mst.networked_problems())
def test_three_gradient_routes_agree(problem: mst.NetworkedProblem) -> None:
    """Shadow-reward PG theorem = chain rule = joint-Q PG theorem."""
    m, pol, utils = problem.model, problem.policy, problem.utilities
    sol = solve(m, pol, utils)
    chain = gradient_chain_rule(m, pol, utils)
    joint = gradient_joint_q(m, pol, sol)
    tol = gradient_tolerance(m.states.size * m.actions.size, m.gamma, _max_reward(sol.shadow_rewards))
    np.testing.assert_allclose(_flat(chain), _flat(sol.gradient), rtol=0, atol=tol)
    np.testing.assert_allclose(_flat(joint), _flat(sol.gradient), rtol=0, atol=tol)


@given(
    problem=mst.networked_problems(
        max_joint_states=16, utility_kinds=("linear", "entropy", "quadratic", "kl")
    )
)
def test_gradient_matches_finite_differences(problem: mst.NetworkedProblem) -> None:
    """PG theorem vs central differences of F (route 3).

    The quadratic constraint penalty is left out here: it is only once continuously
    differentiable at the constraint boundary, while the Richardson error bound of the
    central difference assumes three derivatives; the other two routes cover it.
    """
    m, pol, utils = problem.model, problem.policy, problem.utilities
    sol = solve(m, pol, utils)
    # one evaluation of F errs by at most max_i |r_i| * ||d lam||_1 plus the rounding of
    # the utility evaluation (a sum over |S_i||A_i| terms of magnitude |f_i|)
    g_max = _max_reward(sol.shadow_rewards)
    value_error = g_max * sol.occupancy_error_bound + summation_tolerance(
        max(u.shape[0] * u.shape[1] for u in utils), 1.0 + abs(sol.objective)
    )

    def F(x: np.ndarray) -> float:
        return objective(m, pol.from_vector(x), utils)

    fd = central_difference(F, pol.to_vector(), value_error=value_error)
    np.testing.assert_array_less(np.abs(fd.gradient - _flat(sol.gradient)), fd.tolerance)


@given(problem=mst.networked_problems(utility_kinds=("linear",)))
def test_linear_utility_reduces_to_standard_rl(problem: mst.NetworkedProblem) -> None:
    """With f_i = <r_i, lam_i>, F = J of the joint MDP with team reward (1/n) sum_i r_i,
    local occupancies are marginals of the joint one, and grad F is the joint PG theorem
    computed by the tabular core."""
    m, pol, utils = problem.model, problem.policy, problem.utilities
    rewards = [u.reward for u in utils if isinstance(u, LinearUtility)]
    mdp = m.to_tabular(rewards)
    pi = pol.joint_matrix()
    vals, occ = evaluate(mdp, pi), occupancy(mdp, pi)
    sol = solve(m, pol, utils)
    r_max = max(1.0, float(np.max(np.abs(mdp.r))))
    tol_J = certified(vals.error_bound, sol.occupancy_error_bound * r_max) + summation_tolerance(
        mdp.r.size, r_max / (1 - m.gamma)
    )
    assert abs(sol.objective - vals.J) <= tol_J
    lam_joint = occ.lam.reshape((m.states.size, *m.n_actions))
    sdig = m.states.digits
    for i in range(m.n):
        axes = tuple(1 + j for j in range(m.n) if j != i)
        per_state = lam_joint.sum(axis=axes)  # (|S|, |A_i|)
        marginal = np.zeros((m.n_states[i], m.n_actions[i]))
        np.add.at(marginal, sdig[:, i], per_state)
        tol = certified(occ.error_bound, sol.occupancy_error_bound) + summation_tolerance(
            m.states.size * m.actions.size, 1 / (1 - m.gamma)
        )
        np.testing.assert_allclose(sol.local_occupancy[i], marginal, rtol=0, atol=tol)
    # joint PG theorem: grad_i[o, b] = sum_{s,a} lam(s,a) Q(s,a) (1[a_i=b] - pi_i(b|o)) 1[o_i(s)=o]
    w = (occ.lam * vals.Q).reshape((m.states.size, *m.n_actions))
    total = w.reshape(m.states.size, -1).sum(axis=1)
    tol_g = gradient_tolerance(m.states.size * m.actions.size, m.gamma, r_max)
    for i in range(m.n):
        axes = tuple(1 + j for j in range(m.n) if j != i)
        terms = w.sum(axis=axes) - pol.local_action_probs(i) * total[:, None]
        expected = np.zeros(pol.theta[i].shape)
        np.add.at(expected, pol.observation_index(i), terms)
        np.testing.assert_allclose(sol.gradient[i], expected, rtol=0, atol=tol_g)


@pytest.mark.parametrize("backend", BACKENDS)
@example(problem=_SINGLE)
@example(problem=_SUBNORMAL)
@given(problem=mst.networked_problems())
def test_local_marginals_have_mass(problem: mst.NetworkedProblem, backend: Backend) -> None:
    """Each lam_i sums to 1/(1-gamma); lam_S sums to 1/(1-gamma) (both backends)."""
    sol = solve(problem.model, problem.policy, problem.utilities, backend=backend)
    mass = 1.0 / (1.0 - problem.model.gamma)
    tol = sol.occupancy_error_bound + summation_tolerance(sol.lam_S.size, mass)
    assert abs(float(sol.lam_S.sum()) - mass) <= tol
    for lam_i in sol.local_occupancy:
        assert abs(float(lam_i.sum()) - mass) <= tol
        assert float(lam_i.min()) >= -tol


@dataclass(frozen=True, eq=False)
class _Shifted(Utility):
    """f(lam) + c sum(lam): the shadow reward of f shifted by the constant c."""

    inner: Utility
    c: float
    shape: tuple[int, int] = field(init=False)
    gamma: float = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", self.inner.shape)
        object.__setattr__(self, "gamma", self.inner.gamma)

    @property
    def constants(self) -> UtilityConstants:
        return self.inner.constants

    def _value(self, lam: np.ndarray) -> float:
        return self.inner.value(lam) + self.c * float(lam.sum())

    def _gradient(self, lam: np.ndarray) -> np.ndarray:
        return self.inner.gradient(lam) + self.c


@given(problem=mst.networked_problems(), shift=st.floats(-5.0, 5.0))
def test_constant_shadow_reward_shift_leaves_gradient(
    problem: mst.NetworkedProblem, shift: float
) -> None:
    """r_i -> r_i + c changes F by c/(1-gamma) and leaves grad F unchanged, because the
    total occupancy mass does not depend on theta."""
    m, pol, utils = problem.model, problem.policy, problem.utilities
    base = solve(m, pol, utils)
    shifted = solve(m, pol, tuple(_Shifted(u, shift) for u in utils))
    g = _max_reward(shifted.shadow_rewards) + _max_reward(base.shadow_rewards)
    tol = gradient_tolerance(m.states.size * m.actions.size, m.gamma, g)
    np.testing.assert_allclose(_flat(shifted.gradient), _flat(base.gradient), rtol=0, atol=tol)
    mass = 1.0 / (1.0 - m.gamma)
    tol_F = abs(shift) * (base.occupancy_error_bound + summation_tolerance(base.lam_S.size, mass))
    assert abs(shifted.objective - base.objective - shift * mass) <= tol_F + tol


@pytest.mark.parametrize("backend", BACKENDS)
@given(model=mst.networked_mdps(), seed=mst.seeds(), beta=st.integers(0, 2))
def test_joint_kernel_is_stochastic_and_factorises(
    model: NetworkedMDP, seed: int, beta: int, backend: Backend
) -> None:
    """P(s'|s,a) = prod_i P_i(s'_i | s_{N_i}, a_i), rows sum to 1, and
    P_pi = sum_a pi(a|s) P(.|s,a) equals the operator applied to the identity (both
    backends)."""
    rng = np.random.default_rng(seed)
    P = model.joint_kernel()
    width = model.states.size
    np.testing.assert_allclose(P.sum(axis=2), 1.0, rtol=0, atol=summation_tolerance(width, 1.0))
    s, a, t = (rng.integers(0, k, size=20) for k in (width, model.actions.size, width))
    sd, ad, td = model.states.digits[s], model.actions.digits[a], model.states.digits[t]
    expected = np.ones(20)
    for i in range(model.n):
        rows = model.neighbourhood_index(i)[s]
        expected *= model.kernels[i][rows, ad[:, i], td[:, i]]
    del sd
    np.testing.assert_allclose(P[s, a, t], expected, rtol=0, atol=summation_tolerance(model.n, 1.0))
    pol = LocalizedSoftmaxPolicy.random(model, beta, rng)
    op = transition_operator(model, pol, backend)
    P_pi = np.einsum("sa,sat->st", pol.joint_matrix(), P)
    tol = summation_tolerance(model.actions.size * model.n, 1.0)
    np.testing.assert_allclose(op.apply(np.eye(width)), P_pi, rtol=0, atol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
@given(model=mst.networked_mdps(), seed=mst.seeds(), beta=st.integers(0, 2))
def test_operator_adjoints_and_agent_marginals(
    model: NetworkedMDP, seed: int, beta: int, backend: Backend
) -> None:
    """<u, P v> = <P^T u, v>; <u, P^(i) v> = <P^(i)T u, v>; sum_b pi_i(b|o_i) P^(i,b) = P_pi
    (both backends)."""
    rng = np.random.default_rng(seed)
    pol = LocalizedSoftmaxPolicy.random(model, beta, rng)
    op = transition_operator(model, pol, backend)
    width = model.states.size
    u, v = rng.standard_normal(width), rng.standard_normal(width)
    tol = summation_tolerance(width * width, float(np.abs(u).sum() * np.abs(v).max()))
    assert abs(u @ op.apply(v) - op.apply_transpose(u) @ v) <= tol
    for i in range(model.n):
        q = op.apply_agent(i, v)
        np.testing.assert_allclose(
            np.sum(pol.local_action_probs(i) * q, axis=1),
            op.apply(v),
            rtol=0,
            atol=summation_tolerance(width * model.n_actions[i], float(np.abs(v).max())),
        )
        w = rng.standard_normal((width, model.n_actions[i]))
        tol_i = summation_tolerance(
            width * width * model.n_actions[i], float(np.abs(w).sum() * np.abs(v).max())
        )
        assert abs(float(np.sum(w * q)) - float(op.apply_agent_transpose(i, w) @ v)) <= tol_i


@given(model=mst.networked_mdps(), seed=mst.seeds(), beta=st.integers(0, 2))
def test_dense_leave_one_out_sweep_matches_per_agent_contractions(
    model: NetworkedMDP, seed: int, beta: int
) -> None:
    """DenseOperator.apply_agents (suffix products and leading contractions,
    proofs_notes/occupancy-and-flow.md#leave-one-out) equals apply_agent (sequential
    contraction of every next-state axis), agent by agent, on arbitrary local sizes."""
    rng = np.random.default_rng(seed)
    pol = LocalizedSoftmaxPolicy.random(model, beta, rng)
    op = DenseOperator(model, pol)
    v = rng.standard_normal(model.states.size)
    swept = op.apply_agents(v)
    assert len(swept) == model.n
    width = model.states.size
    tol = summation_tolerance(width * model.n, float(np.abs(v).max()))
    for i in range(model.n):
        np.testing.assert_allclose(swept[i], op.apply_agent(i, v), rtol=0, atol=tol)
    if op.layout.stacked:  # equal local sizes: the same values as one (|S|, n, |A|) array
        np.testing.assert_allclose(
            op.apply_agents_stacked(v), np.stack(swept, axis=1), rtol=0, atol=tol
        )
    else:
        with pytest.raises(ModelError, match="equal local sizes"):
            op.apply_agents_stacked(v)


def test_dense_layout_is_cached_on_the_model_and_not_pickled() -> None:
    """The model-only tables of the dense backend are built once per radius, shared by
    policies of that radius, independent of theta, and left out of a pickle."""
    import pickle

    inst = line_message(4)
    a = LocalizedSoftmaxPolicy.random(inst.model, 1, np.random.default_rng(0))
    b = LocalizedSoftmaxPolicy.random(inst.model, 1, np.random.default_rng(1))
    op_a, op_b = DenseOperator(inst.model, a), DenseOperator(inst.model, b)
    assert op_a.layout is op_b.layout
    assert DenseOperator(inst.model, LocalizedSoftmaxPolicy.uniform(inst.model, 0)).layout \
        is not op_a.layout
    assert not np.array_equal(op_a.matrix, op_b.matrix)
    clone = pickle.loads(pickle.dumps(inst.model))
    assert "derived" not in vars(clone)
    sol = solve(clone, LocalizedSoftmaxPolicy(clone, 1, a.theta), inst.utilities())
    ref = solve(inst.model, a, inst.utilities())
    np.testing.assert_array_equal(sol.objective, ref.objective)


@pytest.mark.parametrize("backend", BACKENDS)
@given(model=mst.networked_mdps(max_gamma=0.9), seed=mst.seeds(), beta=st.integers(0, 2))
def test_occupancy_and_values_match_certified_iteration(
    model: NetworkedMDP, seed: int, beta: int, backend: Backend
) -> None:
    """The operator's solves (dense LU or matrix-free GMRES) agree with the tabular core's
    certified fixed-point iteration on the assembled joint MDP, within the sum of the two
    certified bounds."""
    rng = np.random.default_rng(seed)
    pol = LocalizedSoftmaxPolicy.random(model, beta, rng)
    rewards = [rng.uniform(-1, 1, (model.n_states[i], model.n_actions[i])) for i in range(model.n)]
    mdp = model.to_tabular(rewards)
    op = transition_operator(model, pol, backend)
    occ = op.solve_occupancy(model.joint_rho())
    it_occ = occupancy_iterative(mdp, pol.joint_matrix(), tol=1e-10)
    assert float(np.abs(occ.x - it_occ.x).sum()) <= certified(occ.error_bound, it_occ.error_bound)
    r_pi = np.einsum("sa,sa->s", pol.joint_matrix(), mdp.r)
    val = op.solve_values(r_pi)
    it_val = evaluate_iterative(mdp, pol.joint_matrix(), tol=1e-10)
    assert float(np.abs(val.x - it_val.x).max()) <= certified(val.error_bound, it_val.error_bound)


def test_memory_limit_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """MARL_ORACLE_MEMORY_LIMIT applies when no argument is given; a bad value is an error."""
    inst = line_message(8)
    pol = LocalizedSoftmaxPolicy.uniform(inst.model)
    # 50 kB: below the dense kernel (about 1 MiB) and the matrix-free operator's
    # Krylov and path vectors (at least 33 vectors of 256 floats, about 66 kB)
    monkeypatch.setenv("MARL_ORACLE_MEMORY_LIMIT", "5e4")
    with pytest.raises(MemoryLimitError, match="256 joint states"):
        solve(inst.model, pol, inst.utilities())
    monkeypatch.setenv("MARL_ORACLE_MEMORY_LIMIT", "lots")
    with pytest.raises(ModelError, match="'lots'"):
        solve(inst.model, pol, inst.utilities())
    # the estimate scales with the instance: a tiny one fits a 10 MB limit
    monkeypatch.setenv("MARL_ORACLE_MEMORY_LIMIT", "1e7")
    tiny = line_message(2)
    assert solve(tiny.model, LocalizedSoftmaxPolicy.uniform(tiny.model), tiny.utilities()).objective
    monkeypatch.delenv("MARL_ORACLE_MEMORY_LIMIT")
    assert solve(inst.model, pol, inst.utilities()).gradient_norm > 0


@given(problem=mst.networked_problems(), beta=st.integers(0, 2))
def test_dense_block_routes_and_kronecker_route_agree(
    problem: mst.NetworkedProblem, beta: int
) -> None:
    """Small stacked models read P_pi and pi_i(b|o_i) P^(i,b) v off block kernels
    (proofs_notes/occupancy-and-flow.md#joint-route): one block of all agents, or two halves;
    with the block route switched off the same model takes the Kronecker build and the
    leave-one-out sweep.  All three give the same P_pi, the same weighted agent marginals
    (also equal to the sequential contraction of apply_agent) and the same exact gradient;
    clearing the model's cache rebuilds the layout."""
    from unittest import mock

    from reference.networked import transition

    m = problem.model
    pol = LocalizedSoftmaxPolicy.random(m, beta, np.random.default_rng(0))
    routes = {"one block": (transition.JOINT_ROUTE_FLOATS, 0),
              "two blocks": (-1, 1 << 40), "kronecker": (-1, -1)}
    ops, sols = {}, {}
    for name, (joint_floats, block_floats) in routes.items():
        m.derived.clear()
        with mock.patch.multiple(transition, JOINT_ROUTE_FLOATS=joint_floats,
                                 BLOCK_ROUTE_FLOATS=block_floats):
            ops[name] = DenseOperator(m, pol)
            sols[name] = solve(m, pol, problem.utilities, operator=ops[name])
    stacked = ops["kronecker"].layout.stacked
    assert not ops["kronecker"].layout.blocks
    assert len(ops["one block"].layout.blocks) == (1 if stacked else 0)  # all drawn are small
    assert len(ops["two blocks"].layout.blocks) == (2 if stacked and m.n > 1 else 0)
    m.derived.clear()
    nS = m.states.size
    kron = ops["kronecker"]
    v = np.random.default_rng(1).standard_normal(nS)
    sweep = [pol.local_action_probs(i) * kron.apply_agent(i, v) for i in range(m.n)]
    tol_v = summation_tolerance(nS * m.actions.size * m.n, float(np.abs(v).max()))
    tol_g = gradient_tolerance(
        m.states.size * m.actions.size, m.gamma, _max_reward(sols["kronecker"].shadow_rewards)
    )
    for name, op in ops.items():
        np.testing.assert_allclose(op.matrix, kron.matrix, rtol=0,
                                   atol=summation_tolerance(m.actions.size * m.n, 1.0))
        if stacked:
            np.testing.assert_allclose(op.apply_agents_weighted(v), np.stack(sweep, axis=1),
                                       rtol=0, atol=tol_v)
        else:
            with pytest.raises(ModelError, match="equal local sizes"):
                op.apply_agents_weighted(v)
        sol, ref = sols[name], sols["kronecker"]
        np.testing.assert_allclose(_flat(sol.gradient), _flat(ref.gradient), rtol=0, atol=tol_g)
        gap = float(np.abs(sol.lam_S - ref.lam_S).sum())
        assert gap <= certified(sol.occupancy_error_bound, ref.occupancy_error_bound), name


def test_dense_kronecker_tables_are_built_only_when_asked() -> None:
    """On the block route the Kronecker factors and suffix products are built on the first
    call that needs them (apply_agent, apply_agents), once; the block route's P_pi and the
    Kronecker product agree."""
    inst = line_message(4)
    pol = LocalizedSoftmaxPolicy.random(inst.model, 1, np.random.default_rng(3))
    op = DenseOperator(inst.model, pol)
    assert op.layout.blocks and op._kron is None
    solve(inst.model, pol, inst.utilities(), operator=op)
    assert op._kron is None  # the gradient did not need them
    v = np.linspace(-1.0, 1.0, inst.model.states.size)
    swept = op.apply_agents(v)
    built = op._kron
    assert built is not None
    np.testing.assert_allclose(built[2], op.matrix, rtol=0, atol=summation_tolerance(64, 1.0))
    np.testing.assert_allclose(swept[2], op.apply_agent(2, v), rtol=0,
                               atol=summation_tolerance(64, 1.0))
    assert op._kron is built


def test_backend_choice_is_cached_per_radius_accuracy_and_limit() -> None:
    """The automatic backend choice is cached on the model per (radius, accuracy, memory
    limit): a limit below the dense kernel's prediction is a new key and gives matrix-free
    even after dense was chosen; two policies of one radius share the entry; a pickled model
    starts without it and chooses the same."""
    import pickle

    inst = line_message(6)
    m = inst.model
    a = LocalizedSoftmaxPolicy.random(m, 1, np.random.default_rng(0))
    b = LocalizedSoftmaxPolicy.random(m, 1, np.random.default_rng(1))
    assert transition_operator(m, a).backend == "dense"
    keys = [k for k in m.derived if k[0] == "backend-choice"]
    assert len(keys) == 1
    assert transition_operator(m, b).backend == "dense"
    assert [k for k in m.derived if k[0] == "backend-choice"] == keys
    small = transition_operator(m, a, memory_limit=2e5)  # dense needs about 0.4 MiB here
    assert small.backend == "matrix-free"
    assert len([k for k in m.derived if k[0] == "backend-choice"]) == 2
    assert transition_operator(m, a).backend == "dense"
    clone = pickle.loads(pickle.dumps(m))
    assert "derived" not in vars(clone)
    assert transition_operator(clone, LocalizedSoftmaxPolicy(clone, 1, a.theta)).backend == "dense"


@pytest.mark.parametrize("n", [2, 4, 5, 6])
def test_dense_block_routes_on_line_message(n: int) -> None:
    """The same comparison as above on line-message, where every agent has two states and two
    actions, so that the two-block route runs with halves of equal (n = 2, 4, 6) and unequal
    (n = 5) sizes: its P_pi, weighted agent marginals and gradient against the Kronecker
    route and apply_agent."""
    from unittest import mock

    from reference.networked import transition

    inst = line_message(n)
    m = inst.model
    pol = LocalizedSoftmaxPolicy.random(m, 1, np.random.default_rng(n))
    v = np.random.default_rng(n + 1).standard_normal(m.states.size)
    results = {}
    for name, (joint_floats, block_floats) in {
        "one block": (1 << 40, 0), "two blocks": (-1, 1 << 40), "kronecker": (-1, -1)
    }.items():
        m.derived.clear()
        with mock.patch.multiple(transition, JOINT_ROUTE_FLOATS=joint_floats,
                                 BLOCK_ROUTE_FLOATS=block_floats):
            op = DenseOperator(m, pol)
            assert len(op.layout.blocks) == {"one block": 1, "two blocks": 2, "kronecker": 0}[name]
            sol = solve(m, pol, inst.utilities(), operator=op)
            results[name] = (op.matrix, op.apply_agents_weighted(v), sol)
    m.derived.clear()
    nS = m.states.size
    kron = DenseOperator(m, pol)
    sweep = np.stack([pol.local_action_probs(i) * kron.apply_agent(i, v) for i in range(n)],
                     axis=1)
    ref = results["kronecker"][2]
    tol_g = gradient_tolerance(nS * m.actions.size, m.gamma, _max_reward(ref.shadow_rewards))
    for matrix, weighted, sol in results.values():
        np.testing.assert_allclose(matrix, results["kronecker"][0], rtol=0,
                                   atol=summation_tolerance(m.actions.size * n, 1.0))
        np.testing.assert_allclose(
            weighted, sweep, rtol=0,
            atol=summation_tolerance(nS * m.actions.size * n, float(np.abs(v).max())),
        )
        np.testing.assert_allclose(_flat(sol.gradient), _flat(ref.gradient), rtol=0, atol=tol_g)


@st.composite
def _joint_route_problems(draw: st.DrawFn) -> tuple[NetworkedMDP, int, tuple[Utility, ...]]:
    """A model whose agents have equal local sizes (half the time; otherwise the local sizes
    are drawn per agent, mostly unequal), a radius and utilities of every kind."""
    if draw(st.booleans()):
        g = draw(mst.graphs(max_agents=4))
        size, acts = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        while size > 1 and size**g.n > 32:
            size -= 1
        kernels = tuple(
            draw(mst.stochastic_arrays((size ** len(g.neighbourhood(i)), acts, size)))
            for i in range(g.n)
        )
        m = NetworkedMDP(g, (size,) * g.n, (acts,) * g.n, kernels, draw(mst.discounts()),
                         tuple(draw(mst.distributions(size)) for _ in range(g.n)))
    else:
        m = draw(mst.networked_mdps())
    utils = tuple(
        draw(mst.utilities((m.n_states[i], m.n_actions[i]), m.gamma,
                           ("linear",) if draw(st.booleans()) else ("linear", "entropy", "kl")))
        for i in range(m.n)
    )
    return m, draw(st.integers(0, 2)), utils


# two equal halves on every run (the halves route's contractions then have matching shapes)
@example(problem=(line_message(4).model, 1, tuple(line_message(4).utilities("linear"))), seed=0)
@given(problem=_joint_route_problems(), seed=mst.seeds())
def test_fused_routes_agree_with_the_operator_route(
    problem: tuple[NetworkedMDP, int, tuple[Utility, ...]], seed: int
) -> None:
    """The dense backend's fused routes (proofs_notes/occupancy-and-flow.md#fused-joint-route
    and #fused-halves-route) are what solve takes exactly for models with equal local sizes
    and a joint kernel of at most FUSED_JOINT_FLOATS entries (joint route) or, failing that,
    two halves' block-diagonal kernel of at most FUSED_HALVES_FLOATS entries (halves route;
    forced here on every drawn model of two agents or more by switching the joint route
    off); there they give the quantities of the operator route (DenseOperator, the Kronecker
    or block route, whose gradient the chain rule checks) within their certificates and
    rounding, for per-agent and team values, linear utilities (stacked) and others (one at a
    time).  Other models fall back to the operator route."""
    from unittest import mock

    from reference.networked import transition

    m, beta, utils = problem
    pol = LocalizedSoftmaxPolicy.random(m, beta, np.random.default_rng(seed))
    nS, nA = m.states.size, m.actions.size
    equal = len(set(m.n_states)) == 1 and len(set(m.n_actions)) == 1
    h = (m.n + 1) // 2
    X, B = m.n_states[0], m.n_actions[0]
    halves_floats = nS * (B**h + B ** (m.n - h)) * (X**h + X ** (m.n - h))
    for joint_floats in (transition.FUSED_JOINT_FLOATS, -1):
        m.derived.clear()
        with mock.patch.object(transition, "FUSED_JOINT_FLOATS", joint_floats):
            route = transition.fused_route(m, beta)
            if equal and nS * nA * nS <= joint_floats:
                assert isinstance(route, transition.JointRoute)
            elif equal and m.n >= 2 and halves_floats <= transition.FUSED_HALVES_FLOATS:
                assert isinstance(route, transition.HalvesRoute)
            else:
                assert route is None
            _assert_solve_matches_the_operator_route(m, pol, utils)
    m.derived.clear()


def _assert_solve_matches_the_operator_route(
    m: NetworkedMDP, pol: LocalizedSoftmaxPolicy, utils: tuple[Utility, ...]
) -> None:
    nS, nA = m.states.size, m.actions.size
    for values in ("per-agent", "team"):
        sol = solve(m, pol, utils, values=values)  # type: ignore[arg-type]
        ref = solve(m, pol, utils, values=values,  # type: ignore[arg-type]
                    operator=DenseOperator(m, pol))
        assert sol.backend == ref.backend == "dense"
        reward = max(_max_reward(ref.shadow_rewards), 1.0)
        tol_g = gradient_tolerance(nS * nA, m.gamma, reward)
        np.testing.assert_allclose(_flat(sol.gradient), _flat(ref.gradient), rtol=0, atol=tol_g)
        assert float(np.abs(sol.lam_S - ref.lam_S).sum()) <= certified(
            sol.occupancy_error_bound, ref.occupancy_error_bound)
        assert float(np.abs(sol.team_value - ref.team_value).max()) <= certified(
            sol.value_error_bound, ref.value_error_bound)
        if values == "per-agent":
            assert sol.shadow_values is not None and ref.shadow_values is not None
            assert float(np.abs(sol.shadow_values - ref.shadow_values).max()) <= certified(
                sol.value_error_bound, ref.value_error_bound)
        else:
            assert sol.shadow_values is None
        tol_occ = summation_tolerance(nS * nA, 1.0 / (1.0 - m.gamma)) + certified(
            sol.occupancy_error_bound, ref.occupancy_error_bound)
        np.testing.assert_allclose(_flat(sol.local_occupancy), _flat(ref.local_occupancy),
                                   rtol=0, atol=tol_occ)
        assert abs(sol.gradient_norm - float(np.linalg.norm(_flat(sol.gradient)))) <= tol_g
        for a in (sol.lam_S, sol.team_value, *sol.gradient, *sol.local_occupancy,
                  *sol.shadow_rewards, sol.local_utility):
            assert not a.flags.writeable


def test_fused_routes_follow_the_backend_choice_and_the_memory_limit() -> None:
    """solve takes a fused route only where the dense backend would be built: asked for
    ('dense', within the limit) or chosen ('auto'); a limit between the two backends'
    predictions sends 'auto' to matrix-free and makes 'dense' refuse; 'matrix-free', an
    operator, or a policy of another model never take it (the last is refused as before)."""
    from reference.networked.backends import fused_route_for, predict_backends

    inst = line_message(4)
    m = inst.model
    pol = LocalizedSoftmaxPolicy.random(m, 1, np.random.default_rng(7))
    utils = inst.utilities()
    assert fused_route_for(m, pol) is not None
    assert fused_route_for(m, pol, "dense") is not None
    assert fused_route_for(m, pol, "matrix-free") is None
    dense, free = predict_backends(m, 1)
    assert free.bytes < dense.bytes
    between = (free.bytes + dense.bytes) / 2
    assert fused_route_for(m, pol, "auto", between) is None
    assert fused_route_for(m, pol, "dense", between) is None
    assert solve(m, pol, utils, memory_limit=between).backend == "matrix-free"
    with pytest.raises(MemoryLimitError, match="16 joint states"):
        solve(m, pol, utils, backend="dense", memory_limit=between)
    other = line_message(4).model
    assert fused_route_for(other, pol) is None
    with pytest.raises(ModelError, match="different NetworkedMDP"):
        solve(other, pol, utils)
    for n, kind in ((5, "HalvesRoute"), (6, "HalvesRoute"), (7, None)):
        big = line_message(n).model
        route = fused_route_for(big, LocalizedSoftmaxPolicy.uniform(big, 1))
        assert (None if route is None else type(route).__name__) == kind


def test_joint_route_names_a_non_finite_occupancy() -> None:
    """A NaN in the initial distribution of an equal-sized model makes lam_S non-finite;
    the joint route then evaluates the utilities one at a time, whose domain check names the
    utility and the entry (as the operator route does)."""
    from reference.errors import UtilityDomainError

    inst = line_message(3)
    m = inst.model
    pol = LocalizedSoftmaxPolicy.random(m, 0, np.random.default_rng(2))
    utils = inst.utilities()
    m.derived.clear()
    solve(m, pol, utils)
    route = m.derived[("fused-route", 0)]
    rho = np.array(route.rho)
    rho[3] = np.nan
    rho.setflags(write=False)
    from dataclasses import replace as _replace

    m.derived[("fused-route", 0)] = _replace(route, rho=rho)
    try:
        with pytest.raises(UtilityDomainError, match=r"LinearUtility"):
            solve(m, pol, utils)
    finally:
        m.derived.clear()


@given(model=mst.networked_mdps(max_local_actions=3), beta=st.integers(0, 2), seed=mst.seeds())
def test_policy_softmax_of_all_agents_at_once_equals_agent_by_agent(
    model: NetworkedMDP, beta: int, seed: int
) -> None:
    """A policy whose agents have equal action counts takes one row-wise softmax over the
    stacked parameters; each agent's table equals tabular.softmax of its own theta_i, bit
    for bit (the same computation per row), sums to one per row, and the stored parameters
    are read-only copies: changing the caller's arrays afterwards changes nothing.  A
    non-finite entry is still named by agent and index."""
    from reference.errors import PolicyError
    from reference.tabular import softmax

    rng = np.random.default_rng(seed)
    base = LocalizedSoftmaxPolicy.uniform(model, beta)
    theta = [3.0 * rng.standard_normal(t.shape) for t in base.theta]
    pol = LocalizedSoftmaxPolicy(model, beta, tuple(theta))
    for i, t in enumerate(theta):
        np.testing.assert_array_equal(pol.theta[i], t)
        np.testing.assert_array_equal(pol.probs[i], softmax(t))
        assert pol.probs[i].shape == t.shape
        assert not pol.theta[i].flags.writeable and not pol.probs[i].flags.writeable
        t += 1.0
        assert not np.array_equal(pol.theta[i], t)
    theta[-1][0, -1] = np.inf
    with pytest.raises(PolicyError, match=rf"theta_{model.n - 1}\[0, {theta[-1].shape[1] - 1}\]"):
        LocalizedSoftmaxPolicy(model, beta, tuple(theta))


def test_lapack_solves_in_place_into_the_joint_route_buffers() -> None:
    """The joint route reads each solution from the buffer row it handed to getrs with
    overwrite_b: getrs returns that very array for the route's layouts (a contiguous row, and
    the transposed rows of a C-ordered block), and a solution returned elsewhere would be
    copied into the buffer."""
    from reference.networked.exact import _getrf, _getrs, _solved_into

    a = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 4.0]])
    lu, piv, info = _getrf(a.T)
    assert info == 0
    rows = np.empty((3, 2, 3))
    b = rows[1].T
    b[...] = [[1.0, 0.0], [2.0, 1.0], [3.0, 5.0]]
    x = _getrs(lu, piv, b, trans=1, overwrite_b=True)[0]
    assert x is b
    np.testing.assert_allclose(a @ rows[1].T, [[1.0, 0.0], [2.0, 1.0], [3.0, 5.0]], atol=1e-14)
    row = np.empty((2, 3))[1]
    row[...] = [1.0, 2.0, 3.0]
    assert _getrs(lu, piv, row, trans=0, overwrite_b=True)[0] is row
    np.testing.assert_allclose(a.T @ row, [1.0, 2.0, 3.0], atol=1e-14)
    place = np.zeros(3)
    _solved_into(np.arange(3.0), place)
    np.testing.assert_array_equal(place, [0.0, 1.0, 2.0])


def test_batched_products_of_older_numpy_equal_the_gufuncs() -> None:
    """The fused routes call numpy's vecmat, matvec and vecdot where they exist (numpy >= 2.2
    / 2.0) and matmul or einsum formulations otherwise; both give the same numbers."""
    from reference.networked.exact import _matvec_matmul, _vecdot_einsum, _vecmat_matmul
    from reference.networked.utilities import _row_dots_einsum

    rng = np.random.default_rng(5)
    x, m, y = rng.random((7, 3)), rng.random((7, 3, 4)), rng.random((7, 4))
    np.testing.assert_allclose(_vecmat_matmul(x, m), np.einsum("sk,skl->sl", x, m),
                               rtol=1e-14, atol=0)
    np.testing.assert_allclose(_matvec_matmul(m, y), np.einsum("skl,sl->sk", m, y),
                               rtol=1e-14, atol=0)
    np.testing.assert_allclose(_vecdot_einsum(x, x), (x * x).sum(axis=-1), rtol=1e-14, atol=0)
    np.testing.assert_allclose(_row_dots_einsum(x, x), (x * x).sum(axis=1), rtol=1e-14, atol=0)
    if hasattr(np, "vecmat"):
        np.testing.assert_allclose(np.vecmat(x, m), _vecmat_matmul(x, m), rtol=1e-14, atol=0)
        np.testing.assert_allclose(np.matvec(m, y), _matvec_matmul(m, y), rtol=1e-14, atol=0)
        np.testing.assert_allclose(np.vecdot(x, x), _vecdot_einsum(x, x), rtol=1e-14, atol=0)


def test_the_occupancy_jacobian_is_checked_before_its_right_hand_sides() -> None:
    """``local_occupancy_jacobian`` holds ``m = |O_i| |A_i|`` joint right-hand sides and
    solutions.  Under a limit below :func:`occupancy_jacobian_bytes` it is refused before
    anything of their size is allocated (the tracemalloc peak of the refused call stays below
    one of them).  Above it, with the solve replaced by its known solution (a fresh copy, as a
    solve returns; the solve's own work is the operator's to check), the measured peak of the
    call's own arrays is within the prediction (and numpy's constant operand buffers) and above
    90 % of it, so a term left out of the prediction, or an array held longer than it says, is
    seen (line of 12 binary agents, ``|S| = 4096``, so that the ``|S|``-sized arrays dominate
    the measurement)."""
    import tracemalloc
    from types import SimpleNamespace

    from reference.networked import (
        MatrixFreeOperator,
        local_occupancy_jacobian,
        occupancy_jacobian_bytes,
    )

    rng = np.random.default_rng(3)
    inst = line_message(12)
    model = inst.model
    pol = LocalizedSoftmaxPolicy.random(model, 1, rng)
    op = MatrixFreeOperator(model, pol)
    lam_S = op.solve_occupancy(model.joint_rho()).x
    i = 5
    need = occupancy_jacobian_bytes(pol, i)
    columns = pol.probs[i].size
    size = model.states.size
    assert need >= 8 * 2 * columns * size
    solutions: list[np.ndarray] = []
    real_solve = op.solve_occupancy

    def recording(rhs: np.ndarray) -> object:
        sol = real_solve(rhs)
        solutions.append(np.array(sol.x))
        return sol

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(op, "solve_occupancy", recording)
        want = local_occupancy_jacobian(op, lam_S, i)  # also builds what op and pol keep
    tracemalloc.start()
    try:
        held = tracemalloc.get_traced_memory()[0]
        with pytest.raises(MemoryLimitError, match=f"occupancy Jacobian of agent {i}"):
            local_occupancy_jacobian(op, lam_S, i, memory_limit=need - 1)
        refused = tracemalloc.get_traced_memory()[1] - held
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(op, "solve_occupancy", lambda rhs: SimpleNamespace(x=solutions[0].copy()))
            tracemalloc.reset_peak()
            held = tracemalloc.get_traced_memory()[0]
            jac = local_occupancy_jacobian(op, lam_S, i, memory_limit=need)
            peak = tracemalloc.get_traced_memory()[1] - held
    finally:
        tracemalloc.stop()
    assert refused < 8 * columns * size
    # numpy's broadcasting products buffer their operands: a constant of np.getbufsize()
    # elements per operand (two inputs and the output), whatever |S| (measured: 132.6 KiB at
    # |S| = 4096 and at 65536)
    buffers = 3 * 8 * np.getbufsize()
    assert 0.9 * need <= peak <= need + buffers, (peak, need, buffers)
    for got, expected in zip(jac, want, strict=True):
        np.testing.assert_array_equal(got, expected)
    # the chain-rule gradient passes its own limit down to every agent's Jacobian
    from reference.networked import exact

    limits: list[float | None] = []
    real = exact.local_occupancy_jacobian

    def recorded(*args: object, memory_limit: float | None = None) -> object:
        limits.append(memory_limit)
        return real(*args, memory_limit=memory_limit)  # type: ignore[arg-type]

    small = line_message(5)
    small_pol = LocalizedSoftmaxPolicy.random(small.model, 1, rng)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(exact, "local_occupancy_jacobian", recorded)
        gradient_chain_rule(small.model, small_pol, small.utilities(), memory_limit=1 << 30)
    assert limits == [1 << 30] * small.model.n


@pytest.mark.parametrize("rho", ["dirichlet", "uniform"])
def test_random_models_draw_in_the_documented_order(rho: str) -> None:
    """``NetworkedMDP.random`` against the draws written out: one Dirichlet(1, ..., 1) call per
    agent for its kernel rows, then the local initial distributions (Dirichlet draws, or
    uniform with nothing drawn, so the generator is left where the kernels left it); mixed
    local sizes on a star, whose centre's kernel has the most rows."""
    graph = Graph.star(4)
    states, actions = (3, 2, 1, 2), (2, 3, 1, 2)
    model = NetworkedMDP.random(
        graph, states, actions, np.random.default_rng(11), gamma=0.8, rho=rho
    )
    rng = np.random.default_rng(11)
    for i in range(4):
        rows = int(np.prod([states[j] for j in graph.neighbourhood(i)]))
        np.testing.assert_array_equal(
            model.kernels[i], rng.dirichlet(np.ones(states[i]), size=(rows, actions[i]))
        )
    for k, r in zip(states, model.rho, strict=True):
        want = rng.dirichlet(np.ones(k)) if rho == "dirichlet" else np.ones(k) / k
        np.testing.assert_array_equal(r, want)
    assert model.gamma == 0.8 and model.n_states == states and model.n_actions == actions
    # the generator is left exactly where the written-out draws leave it
    used = np.random.default_rng(11)
    NetworkedMDP.random(graph, states, actions, used, rho=rho)
    assert used.random() == rng.random()
