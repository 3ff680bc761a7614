"""SPEC section 3: decay spreads, the derived bound, truncated Q and the truncated gradient
(proofs_notes/decay.md, proofs_notes/truncated-gradient.md)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from reference.errors import ModelError
from reference.instances import copy_chain, copy_chain_policy, xor_pair
from reference.networked import (
    Graph,
    LinearUtility,
    LocalizedSoftmaxPolicy,
    NetworkedMDP,
    NetworkedSolution,
    gradient_norm,
    shadow_q,
    solve,
)
from reference.networked.truncation import (
    WEIGHT_CHOICES,
    cancellation_residual,
    decay_profile,
    decay_spread,
    first_escape_time,
    gradient_error_bounds,
    hop_index,
    score_norm_mass,
    truncated_gradient,
    truncated_q,
)
from verify import strategies as mst
from verify.tolerances import EPS, gradient_tolerance, summation_tolerance


def _q_tolerance(sol: NetworkedSolution, model: NetworkedMDP) -> float:
    """Error of a computed shadow Q entry: gamma times the certified V error plus the
    rounding of r + gamma P V (a sum over |S| terms of size |V|_max); a spread is a
    difference of two entries, so twice that."""
    v_max = float(np.max(np.abs(sol.require_shadow_values())))
    return 2.0 * (sol.value_error_bound + summation_tolerance(model.states.size, v_max + 1.0))


def test_first_escape_time_table() -> None:
    # provenance: proofs_notes/decay.md -- t0 = k + 1 (beta = 0); 1 if k = 0 else
    # floor((k - 1)/beta) + 1 (beta >= 1)
    assert [first_escape_time(k, 0) for k in range(5)] == [1, 2, 3, 4, 5]
    assert [first_escape_time(k, 1) for k in range(5)] == [1, 1, 2, 3, 4]
    assert [first_escape_time(k, 2) for k in range(6)] == [1, 1, 1, 2, 2, 3]


def _copy_chain(
    n: int, gamma: float, beta: int, logit: float = 40.0
) -> tuple[NetworkedMDP, LocalizedSoftmaxPolicy, tuple[LinearUtility, ...]]:
    """Line of ``n`` binary agents: middle agents copy their right neighbour
    (``s'_j = s_{j+1}``), the ends keep their state; only agent 0 acts, and with
    observation radius ``beta`` it plays ``a_0 = s_beta`` up to probability
    ``1/(1 + e^logit)``; agent 0 earns ``1[a_0 = 1]`` (``Delta = 1``).  So ``a_0^t`` copies
    ``s_{beta + t}^0`` (the chain's last agent once ``beta + t >= n - 1``)."""
    g = Graph.line(n)
    acts = (2,) + (1,) * (n - 1)
    kernels = []
    for j in range(n):
        nb = g.neighbourhood(j)
        P = np.zeros((2,) * len(nb) + (acts[j], 2))
        src = nb.index(j + 1) if 0 < j < n - 1 else nb.index(j)
        for val in (0, 1):
            index: list[int | slice] = [slice(None)] * len(nb) + [slice(None), val]
            index[src] = val
            P[tuple(index)] = 1.0
        kernels.append(P)
    model = NetworkedMDP(g, (2,) * n, acts, tuple(kernels), gamma,
                         tuple(np.array([0.5, 0.5]) for _ in range(n)))
    pol = LocalizedSoftmaxPolicy.uniform(model, beta)
    theta = [t.copy() for t in pol.theta]
    for o in range(theta[0].shape[0]):  # o indexes (s_0..s_beta); s_beta is the last digit
        theta[0][o, o % 2] = logit
    rewards = [np.zeros((2, a)) for a in acts]
    rewards[0][:, 1] = 1.0
    return model, pol.with_theta(theta), tuple(LinearUtility(r, gamma) for r in rewards)


def _policy_slack(gamma: float, logit: float = 40.0) -> float:
    """How far the near-deterministic policy can move a spread: each step's action law is
    off by at most 2/(1 + e^logit) in total variation, over sum_t gamma^t = 1/(1-gamma)
    steps and a propagation factor 1/(1-gamma)."""
    return 4.0 / (1.0 + np.exp(logit)) / (1.0 - gamma) ** 2


def test_beta_one_chain_attains_the_bound() -> None:
    """beta = 1: D_0(kappa) = gamma^t0(kappa, 1)/(1-gamma) with t0 = 1, 1, 2, 3 for kappa < 4:
    a_0^t copies s_{1+t}^0, first outside N_0^kappa at t = max(1, kappa)."""
    model, pol, utils = _copy_chain(5, 0.8, 1)
    sol = solve(model, pol, utils)
    prof = decay_profile(model, pol, sol)
    tol = _q_tolerance(sol, model) + _policy_slack(0.8)
    assert prof.t0.tolist() == [1, 1, 2, 3, 4]
    np.testing.assert_allclose(prof.spread[0, :4], prof.bound[0, :4], rtol=0, atol=tol)


@pytest.mark.parametrize("beta", [1, 2, 3])
def test_copy_chain_spreads_in_closed_form(beta: int) -> None:
    """reference.instances.copy_chain: D_0(kappa) = (1 - 2d) sum_{t >= max(1, kappa - beta
    + 1)} gamma^t for kappa < n - 1, d = 1/(1 + e^logit), which is (1 - 2d) times the bound
    where max(1, kappa - beta + 1) = t0(kappa, beta) (proofs_notes/decay.md#copy-chain)."""
    n, gamma, logit = 6, 0.8, 5.0
    inst = copy_chain(n, gamma)
    pol = copy_chain_policy(inst.model, beta, logit)
    sol = solve(inst.model, pol, inst.utilities(), values="per-agent")
    prof = decay_profile(inst.model, pol, sol)
    d = 1.0 / (1.0 + np.exp(logit))
    tol = _q_tolerance(sol, inst.model)
    for kappa in range(n - 1):
        first = max(1, kappa - beta + 1)
        closed = (1 - 2 * d) * gamma**first / (1 - gamma)
        assert abs(prof.spread[0, kappa] - closed) <= tol
        attained = first == first_escape_time(kappa, beta)
        assert attained == (beta == 1 or kappa <= beta + 1)
        if attained:
            assert prof.spread[0, kappa] / prof.bound[0, kappa] == pytest.approx(1 - 2 * d)
    assert np.all(prof.spread[1:] == 0.0)


def test_growing_observation_radius_has_no_decay() -> None:
    """beta = kappa: agent 0 reads s_kappa, which holds s_{kappa+1}^0 after one step, so
    D_0(kappa) = gamma/(1-gamma) for every kappa below the diameter -- no decay in kappa."""
    n, gamma = 6, 0.8
    spreads = []
    for kappa in range(1, n - 1):
        model, pol, utils = _copy_chain(n, gamma, kappa)
        sol = solve(model, pol, utils)
        prof = decay_profile(model, pol, sol, kappas=[kappa])
        assert prof.t0.tolist() == [1]
        spreads.append(prof.spread[0, 0])
        tol = _q_tolerance(sol, model) + _policy_slack(gamma)
        assert abs(prof.spread[0, 0] - gamma / (1 - gamma)) <= tol
        assert abs(prof.bound[0, 0] - gamma / (1 - gamma)) <= 4 * EPS * prof.bound[0, 0]
    assert len(spreads) == n - 2


@given(problem=mst.networked_problems(max_agents=4, beta=None))
def test_decay_bound_holds(problem: mst.NetworkedProblem) -> None:
    """D_i(kappa) <= Delta_i gamma^t0 / (1 - gamma) for beta in {0, 1, 2}, every i, kappa."""
    m, pol = problem.model, problem.policy
    sol = solve(m, pol, problem.utilities)
    prof = decay_profile(m, pol, sol)
    assert np.all(prof.spread <= prof.bound + _q_tolerance(sol, m))


@given(problem=mst.networked_problems(max_agents=4))
def test_spread_vanishes_at_the_component_radius(problem: mst.NetworkedProblem) -> None:
    """D_i(kappa) = 0 once N_i^kappa is i's whole component, and ghat = grad F once kappa
    reaches the diameter, whatever the weights."""
    m, pol = problem.model, problem.policy
    sol = solve(m, pol, problem.utilities)
    qs = shadow_q(m, pol, sol)
    for i in range(m.n):
        assert decay_spread(m, qs[i], i, m.graph.component_radius(i)) <= _q_tolerance(sol, m)
    tol = gradient_tolerance(
        m.states.size * m.actions.size,
        m.gamma,
        max(float(np.max(np.abs(r))) for r in sol.shadow_rewards),
    )
    for weights in WEIGHT_CHOICES:
        g = truncated_gradient(m, pol, sol, m.graph.diameter, weights, qs)
        assert gradient_norm(
            [a - b for a, b in zip(g, sol.gradient, strict=True)]
        ) <= tol * np.sqrt(pol.n_parameters)


def _subnormal_discount_problem() -> mst.NetworkedProblem:
    """gamma = 1e-313 (subnormal) and rho_2 = (1, 0): the occupancy of s_2 = 1 is subnormal,
    and a weighted sum lam * Q there would lose digits (found by Hypothesis)."""
    g = 2.2250738585e-313
    model = NetworkedMDP(
        Graph.line(3), (1, 1, 2), (1, 1, 1),
        (np.ones((1, 1, 1)), np.ones((2, 1, 1)), np.full((2, 1, 2), 0.5)), g,
        (np.ones(1), np.ones(1), np.array([1.0, 0.0])),
    )
    from reference.networked import EntropyUtility

    utils = (
        LinearUtility(np.zeros((1, 1)), g), LinearUtility(np.zeros((1, 1)), g),
        EntropyUtility((2, 1), g, 0.5),
    )
    return mst.NetworkedProblem(model, LocalizedSoftmaxPolicy.uniform(model), utils)


@example(problem=_subnormal_discount_problem(), kappa=0)
@given(problem=mst.networked_problems(max_agents=4), kappa=st.integers(0, 3))
def test_truncated_q_within_spread_for_every_weight(
    problem: mst.NetworkedProblem, kappa: int
) -> None:
    """sup |Qhat_i - Q_i| <= D_i(kappa) for point-mass, uniform and occupancy weights."""
    m, pol = problem.model, problem.policy
    sol = solve(m, pol, problem.utilities)
    qs = shadow_q(m, pol, sol)
    lam = sol.lam_S[:, None] * pol.joint_matrix()
    for i in range(m.n):
        spread = decay_spread(m, qs[i], i, kappa)
        for weights in WEIGHT_CHOICES:
            hat = truncated_q(m, qs[i], i, kappa, weights, lam)
            err = float(np.max(np.abs(hat.joint - qs[i])))
            assert err <= spread + summation_tolerance(
                m.states.size * m.actions.size, float(np.max(np.abs(qs[i]))) + 1.0
            )


@given(problem=mst.networked_problems(max_agents=4), kappa=st.integers(0, 2))
def test_truncated_gradient_error_bound(problem: mst.NetworkedProblem, kappa: int) -> None:
    """||ghat_i - grad_i F||_2 <= sqrt(2) max_j D_j(kappa) / (1 - gamma) (SPEC section 3)."""
    m, pol = problem.model, problem.policy
    sol = solve(m, pol, problem.utilities)
    qs = shadow_q(m, pol, sol)
    worst = max(decay_spread(m, qs[j], j, kappa) for j in range(m.n))
    tol = gradient_tolerance(
        m.states.size * m.actions.size,
        m.gamma,
        max(float(np.max(np.abs(r))) for r in sol.shadow_rewards),
    )
    for weights in WEIGHT_CHOICES:
        g = truncated_gradient(m, pol, sol, kappa, weights, qs)
        for i in range(m.n):
            err = float(np.linalg.norm(g[i] - sol.gradient[i]))
            assert err <= np.sqrt(2.0) * (worst + _q_tolerance(sol, m)) / (1 - m.gamma) + tol


@given(problem=mst.networked_problems(max_agents=4, beta=None), kappa=st.integers(0, 2))
def test_sharp_truncated_gradient_bound(problem: mst.NetworkedProblem, kappa: int) -> None:
    """||ghat_i - grad_i F||_2 <= (1/n) sum_j c_ij D_j(kappa) m_i for every weight, and the
    sharp bound is never above SPEC's (proofs_notes/truncated-gradient.md#sharp)."""
    m, pol = problem.model, problem.policy
    sol = solve(m, pol, problem.utilities)
    qs = shadow_q(m, pol, sol)
    spreads = np.array([decay_spread(m, qs[j], j, kappa) for j in range(m.n)])
    slack = _q_tolerance(sol, m)
    bounds = gradient_error_bounds(m, pol, sol.lam_S, spreads + slack, kappa)
    assert np.all(bounds.sharp <= bounds.spec * (1 + 8 * EPS))
    for i in range(m.n):
        top = np.sqrt(1.0 - 1.0 / m.n_actions[i]) / (1 - m.gamma)
        assert bounds.score_mass[i] <= top * (1 + 8 * EPS) + summation_tolerance(
            m.states.size, 1 / (1 - m.gamma)
        )
    tol = gradient_tolerance(
        m.states.size * m.actions.size,
        m.gamma,
        max(float(np.max(np.abs(r))) for r in sol.shadow_rewards),
    )
    for weights in WEIGHT_CHOICES:
        g = truncated_gradient(m, pol, sol, kappa, weights, qs)
        for i in range(m.n):
            err = float(np.linalg.norm(g[i] - sol.gradient[i]))
            assert err <= bounds.sharp[i] + tol


@pytest.mark.parametrize("gamma", [0.01, 0.1, 0.5])
def test_xor_pair_ratios(gamma: float) -> None:
    """The XOR pair at kappa = 0, point weights, uniform policy: D_0 = gamma, D_1 = 0 and
    ||ghat_0 - grad_0 F|| / bound = sqrt((1 - gamma/2)^2 + (gamma/2)^2) for the sharp bound
    and a quarter of that for SPEC's (proofs_notes/truncated-gradient.md#tight)."""
    inst = xor_pair(gamma)
    m = inst.model
    pol = LocalizedSoftmaxPolicy.uniform(m, 1)
    sol = solve(m, pol, inst.utilities())
    qs = shadow_q(m, pol, sol)
    spreads = np.array([decay_spread(m, qs[j], j, 0) for j in range(2)])
    tol = _q_tolerance(sol, m)
    assert abs(spreads[0] - gamma) <= tol and spreads[1] <= tol
    g = truncated_gradient(m, pol, sol, 0, "point", qs)
    err = float(np.linalg.norm(g[0] - sol.gradient[0]))
    bounds = gradient_error_bounds(m, pol, sol.lam_S, spreads, 0)
    closed = np.hypot(1 - gamma / 2, gamma / 2)
    assert err / bounds.sharp[0] == pytest.approx(closed, rel=1e-9)
    assert err / bounds.spec[0] == pytest.approx(closed / 4, rel=1e-9)
    assert score_norm_mass(pol, sol.lam_S, 0) == pytest.approx(
        1 / (np.sqrt(2) * (1 - gamma)), rel=1e-12
    )
    assert score_norm_mass(pol, sol.lam_S, 0, 2) == pytest.approx(0.5 / (1 - gamma), rel=1e-12)
    with pytest.raises(ModelError, match="power"):
        score_norm_mass(pol, sol.lam_S, 0, 3)
    with pytest.raises(ModelError, match="spreads has shape"):
        gradient_error_bounds(m, pol, sol.lam_S, spreads[:1], 0)


@pytest.mark.parametrize("logit", [5.0, 20.0, 30.0, 40.0])
def test_score_norm_mass_of_a_near_deterministic_policy(logit: float) -> None:
    """Binary actions with p = (1 - d, d): ||score(a_0)|| = sqrt(2) d and ||score(a_1)|| =
    sqrt(2) (1 - d), so E||score|| = 2 sqrt(2) d (1 - d) and E||score||^2 = 2 d (1 - d) per
    unit of occupancy, to relative rounding however small d is (the form 1 - 2 p_a + ||p||^2
    loses the likely action's half once d < 1e-8)."""
    inst = xor_pair(0.5)
    m = inst.model
    base = LocalizedSoftmaxPolicy.uniform(m, 0)
    pol = base.with_theta([np.tile([logit / 2, -logit / 2], (t.shape[0], 1)) for t in base.theta])
    lam_S = solve(m, pol, inst.utilities()).lam_S
    d = 1.0 / (1.0 + np.exp(logit))
    mass = float(lam_S.sum())
    for i in range(2):
        assert score_norm_mass(pol, lam_S, i) == pytest.approx(
            2 * np.sqrt(2) * d * (1 - d) * mass, rel=1e-12, abs=0.0
        )
        assert score_norm_mass(pol, lam_S, i, 2) == pytest.approx(
            2 * d * (1 - d) * mass, rel=1e-12, abs=0.0
        )


@pytest.mark.parametrize("logit", [20.0, 24.0])
def test_sharp_bound_holds_and_is_nearly_attained_at_a_near_deterministic_policy(
    logit: float,
) -> None:
    """The XOR pair (kappa 0, point weights) at p = (1 - d, d) in every observation, d about
    2e-9 and 4e-11: the error meets about 0.9 of the sharp bound and stays below it (a score
    mass that loses the likely action's term halves the bound, and the ratio is then 1.8;
    proofs_notes/truncated-gradient.md#sharp)."""
    inst = xor_pair(0.1)
    m = inst.model
    base = LocalizedSoftmaxPolicy.uniform(m, 1)
    pol = base.with_theta([np.tile([logit / 2, -logit / 2], (t.shape[0], 1)) for t in base.theta])
    sol = solve(m, pol, inst.utilities())
    qs = shadow_q(m, pol, sol)
    spreads = np.array([decay_spread(m, qs[j], j, 0) for j in range(2)])
    bounds = gradient_error_bounds(m, pol, sol.lam_S, spreads, 0)
    g = truncated_gradient(m, pol, sol, 0, "point", qs)
    ratio = float(np.linalg.norm(g[0] - sol.gradient[0])) / bounds.sharp[0]
    assert 0.85 <= ratio <= 1.0


@given(
    model=mst.networked_mdps(max_agents=5),
    seed=mst.seeds(),
    beta=st.integers(0, 2),
    kappa=st.integers(0, 2),
)
def test_cancellation_identity(model: NetworkedMDP, seed: int, beta: int, kappa: int) -> None:
    """sum lam h(z_{N_j^kappa}) score_i = 0 for j outside N_i^kappa, to rounding, any beta."""
    rng = np.random.default_rng(seed)
    pol = LocalizedSoftmaxPolicy.random(model, beta, rng)
    sol = solve(
        model,
        pol,
        tuple(
            LinearUtility(np.zeros((model.n_states[i], model.n_actions[i])), model.gamma)
            for i in range(model.n)
        ),
    )
    mass = 1.0 / (1.0 - model.gamma)
    for i in range(model.n):
        inside = set(model.graph.neighbourhood(i, kappa))
        for j in range(model.n):
            if j in inside:
                continue
            idx, size = hop_index(model, model.graph.neighbourhood(j, kappa))
            h = rng.uniform(-1, 1, size)[idx]
            res = cancellation_residual(pol, sol.lam_S, i, h)
            tol = summation_tolerance(model.states.size * model.actions.size, mass)
            assert float(np.max(np.abs(res))) <= tol


def test_cancellation_identity_can_fail() -> None:
    """The identity is not vacuous: h depending on a_i gives a non-zero residual."""
    model = NetworkedMDP(
        Graph.line(2), (1, 1), (2, 2), (np.ones((1, 2, 1)),) * 2, 0.5, (np.ones(1), np.ones(1))
    )
    pol = LocalizedSoftmaxPolicy.uniform(model)
    lam_S = np.array([2.0])
    h = model.actions.digits[:, 0].astype(np.float64)[None, :]  # h = a_0
    # by hand: lam(a) = 2 * 1/4; sum_a lam h (1[a_0 = b] - 1/2) = 1/2 * (+-1/2) * 2 = +-1/2
    np.testing.assert_allclose(
        cancellation_residual(pol, lam_S, 0, h), [[-0.5, 0.5]], rtol=0,
        atol=summation_tolerance(4, 2.0),
    )


def _shift_chain(n: int, gamma: float) -> tuple[NetworkedMDP, tuple[LinearUtility, ...]]:
    """Agents 0..n-1 on a line, binary states, one action: s'_j = s_{j+1} for j < n-1 and
    the last agent keeps its state, so s_0^t = s_{min(t, n-1)}^0; agent 0 earns 1[s_0 = 1]."""
    g = Graph.line(n)
    kernels = []
    for j in range(n):
        nb = g.neighbourhood(j)
        P = np.zeros((2,) * len(nb) + (1, 2))
        src = nb.index(j + 1) if j < n - 1 else nb.index(j)
        for val in (0, 1):
            index = [slice(None)] * len(nb) + [0, val]
            index[src] = val
            P[tuple(index)] = 1.0
        kernels.append(P)
    model = NetworkedMDP(
        g, (2,) * n, (1,) * n, tuple(kernels), gamma, tuple(np.array([0.5, 0.5]) for _ in range(n))
    )
    rewards = [np.zeros((2, 1)) for _ in range(n)]
    rewards[0][1, 0] = 1.0
    return model, tuple(LinearUtility(r, gamma) for r in rewards)


@pytest.mark.parametrize("gamma", [0.5, 0.9])
def test_shift_chain_attains_the_bound(gamma: float) -> None:
    """D_0(kappa) = gamma^(kappa+1)/(1-gamma) exactly for kappa < n - 1 (beta = 0, Delta = 1):
    states equal on agents 0..kappa and all ones vs all zeros beyond reach agent 0 at
    times t >= kappa + 1 and differ there by 1 (proofs_notes/decay.md, tight instance)."""
    model, utils = _shift_chain(5, gamma)
    pol = LocalizedSoftmaxPolicy.uniform(model)
    sol = solve(model, pol, utils)
    prof = decay_profile(model, pol, sol)
    tol = _q_tolerance(sol, model)
    for k in range(4):
        assert prof.bound[0, k] == pytest.approx(gamma ** (k + 1) / (1 - gamma), rel=(k + 4) * EPS)
        assert abs(prof.spread[0, k] - prof.bound[0, k]) <= tol
    assert prof.spread[0, 4] <= tol


def test_decay_profile_needs_one_joint_table_at_a_time() -> None:
    """decay_profile builds the joint shadow Q tables one agent at a time: a memory limit that
    holds one table (3 |S||A| + n |S| floats) but not all of them (shadow_q's (n + 2) |S||A|)
    still gives the same spreads; below one table the error names the table's size
    (proofs_notes/matrix-free.md#decay-spread)."""
    from reference.errors import MemoryLimitError
    from reference.instances import line_message

    inst = line_message(6)
    model = inst.model
    pol = LocalizedSoftmaxPolicy.uniform(model, 1)
    sol = solve(model, pol, inst.utilities("entropy"))
    n_pairs = model.states.size * model.actions.size
    one_table = 8 * (3 * n_pairs + model.n * model.states.size)
    limit = 1.5 * one_table
    assert limit < 8 * (model.n + 2) * n_pairs
    with pytest.raises(MemoryLimitError, match="6 joint shadow Q tables"):
        shadow_q(model, pol, sol, memory_limit=limit)
    streamed = decay_profile(model, pol, sol, memory_limit=limit)
    qs = shadow_q(model, pol, sol)
    for i in range(model.n):
        for col, k in enumerate(streamed.kappa):
            assert streamed.spread[i, col] == decay_spread(model, qs[i], i, int(k))
    with pytest.raises(MemoryLimitError, match=r"joint shadow Q table \(64 joint states x 64"):
        decay_profile(model, pol, sol, memory_limit=0.5 * one_table)


def test_decay_spread_is_a_grouped_max_minus_min() -> None:
    """By hand: two agents with one state and two actions each, Q(a_0, a_1) = [[0, 1], [3, 7]].
    Radius 0 around agent 0 groups by a_0: spreads 1 and 4, so D_0(0) = 4; around agent 1
    groups by a_1: spreads 3 and 6, D_1(0) = 6; radius 1 covers both agents: 0."""
    model = NetworkedMDP(
        Graph.line(2), (1, 1), (2, 2), (np.ones((1, 2, 1)),) * 2, 0.5, (np.ones(1), np.ones(1))
    )
    q = np.array([[0.0, 1.0, 3.0, 7.0]])  # joint actions mixed radix, agent 0 most significant
    assert decay_spread(model, q, 0, 0) == 4.0
    assert decay_spread(model, q, 1, 0) == 6.0
    assert decay_spread(model, q, 0, 1) == 0.0
    with pytest.raises(ModelError, match=r"q has shape \(4,\), expected \(1, 4\)"):
        decay_spread(model, q[0], 0, 0)
