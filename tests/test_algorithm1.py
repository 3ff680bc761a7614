"""Algorithm 1 (SPEC section 4): every sampled estimator against its exact expectation,
with radii from a stated concentration inequality at failure probability <= 1e-9 per check
(proofs_notes/algorithm1.md).

Suite-level false alarms: each test below makes one check per seed-drawn example, split
by the union bound (verify.bounds.split_delta) over the entries it compares, so each
example fails spuriously with probability at most 1e-9.  The planted-bug tests first check
that their instance separates the mutant from the truth by more than both radii; then
they miss the mutant with probability at most 1e-9.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference.errors import ModelError
from reference.instances import line_message
from reference.networked import (
    LocalizedSoftmaxPolicy,
    NetworkedMDP,
    gradient_norm,
    local_occupancies,
    objective,
    shadow_q,
    solve,
)
from reference.networked.algorithm import (
    Algorithm1Config,
    CriticTable,
    TDMeanField,
    finite_horizon_occupancy,
    gradient_estimate,
    gradient_estimate_expectation,
    mc_critic,
    mc_critic_expectation,
    occupancy_estimate,
    replay_td_critic,
    run_algorithm1,
    sample_transitions,
    shadow_reward_estimate,
    td_critic,
    td_critic_limit,
    td_critic_mean_field,
)
from reference.networked.sampling import Trajectories, rollout
from reference.networked.truncation import (
    decay_spread,
    hop_codes,
    hop_index,
    hop_size,
    truncated_gradient,
    truncated_q,
)
from verify import strategies as mst
from verify.bounds import (
    empirical_bellman_radius,
    hoeffding_radius,
    l1_radius,
    split_delta,
    td_recursion_radius,
)
from verify.tolerances import gradient_tolerance, linear_solve_tolerance, summation_tolerance

DELTA = 1e-9
SMOOTH_KINDS = ("linear", "entropy", "quadratic", "kl")


def _with_uniform_rho(model: NetworkedMDP) -> NetworkedMDP:
    return NetworkedMDP(
        model.graph, model.n_states, model.n_actions, model.kernels, model.gamma,
        tuple(np.full(k, 1.0 / k) for k in model.n_states),
    )


@given(problem=mst.networked_problems(max_agents=4), horizon=st.integers(0, 30))
def test_finite_horizon_gap_is_exactly_the_tail_mass(
    problem: mst.NetworkedProblem, horizon: int
) -> None:
    """||lam_i - lam^H_i||_1 = gamma^H / (1 - gamma) exactly, since lam - lam^H >= 0 has
    that mass (computed exactly, not sampled)."""
    m, pol = problem.model, problem.policy
    sol = solve(m, pol, problem.utilities)
    lam_H, _ = finite_horizon_occupancy(m, pol, horizon)
    mass = 1.0 / (1.0 - m.gamma)
    tol = sol.occupancy_error_bound + summation_tolerance(m.states.size * (horizon + 2), mass)
    for lam_i, lam_H_i in zip(sol.local_occupancy, local_occupancies(pol, lam_H), strict=True):
        assert float(np.min(lam_i - lam_H_i)) >= -tol
        gap = float(np.abs(lam_i - lam_H_i).sum())
        assert abs(gap - m.gamma**horizon / (1 - m.gamma)) <= tol


@settings(max_examples=10)
@given(problem=mst.networked_problems(max_agents=3, utility_kinds=SMOOTH_KINDS,
                                      max_gamma=0.9),
       seed=mst.seeds())
def test_occupancy_and_shadow_reward_estimators_concentrate(
    problem: mst.NetworkedProblem, seed: int
) -> None:
    """E lamtilde_i = lam^H_i; ||lamtilde_i - lam^H_i||_1 <= l1 radius with per-trajectory
    l1 norm (1 - gamma^H)/(1 - gamma) (McDiarmid, verify.bounds.l1_radius); and
    ||rtilde_i - grad f_i(lam^H_i)||_2 <= smoothness_i * that radius (||.||_2 <= ||.||_1)."""
    m, pol, utils = problem.model, problem.policy, problem.utilities
    rng = np.random.default_rng(seed)
    batch, horizon = 4000, 25
    traj = rollout(m, pol, batch, horizon, rng)
    est = occupancy_estimate(m, traj)
    lam_H = local_occupancies(pol, finite_horizon_occupancy(m, pol, horizon)[0])
    per_traj = (1 - m.gamma**horizon) / (1 - m.gamma)
    delta = split_delta(DELTA, m.n)
    rewards = shadow_reward_estimate(utils, est)
    for i in range(m.n):
        radius = l1_radius(batch, est[i].size, per_traj, delta)
        err = float(np.abs(est[i] - lam_H[i]).sum())
        assert err <= radius, (i, err, radius)
        exact_r = utils[i].gradient(lam_H[i])
        r_err = float(np.linalg.norm(rewards[i] - exact_r))
        assert r_err <= utils[i].constants.smoothness * radius + summation_tolerance(
            est[i].size, float(np.max(np.abs(exact_r))) + 1.0
        )


@settings(max_examples=8)
@given(problem=mst.networked_problems(max_agents=3, max_gamma=0.9), seed=mst.seeds(),
       kappa=st.integers(0, 1))
def test_mc_critic_concentrates_per_entry(
    problem: mst.NetworkedProblem, seed: int, kappa: int
) -> None:
    """Given the entry counts, the samples at entry z are i.i.d. with mean
    mc_critic_expectation[z] and range (max r - min r)(1 - gamma^Hc)/(1 - gamma): Hoeffding
    per entry, union bound over entries and agents."""
    m, pol, utils = problem.model, problem.policy, problem.utilities
    sol = solve(m, pol, utils)
    rewards = sol.shadow_rewards
    rng = np.random.default_rng(seed)
    batch, hs, hc = 3000, 10, 20
    critics = mc_critic(m, pol, rewards, kappa, batch, hs, hc, rng)
    expected = mc_critic_expectation(m, pol, rewards, kappa, hs, hc)
    n_entries = sum(c.table.size for c in critics)
    delta = split_delta(DELTA, n_entries)
    for j, c in enumerate(critics):
        width = float(np.ptp(rewards[j])) * (1 - m.gamma**hc) / (1 - m.gamma)
        g_max = float(np.max(np.abs(rewards[j]))) * (1 - m.gamma**hc) / (1 - m.gamma)
        for z in np.flatnonzero(c.counts > 0):
            count = int(c.counts[z])
            radius = hoeffding_radius(count, width, delta)
            # rounding: each return sums hc terms, the entry averages count returns
            rounding = summation_tolerance(hc + count, g_max + 1.0)
            assert abs(c.table[z] - expected[j][z]) <= radius + rounding


@given(problem=mst.networked_problems(max_agents=3, max_gamma=0.9), kappa=st.integers(0, 2),
       hs=st.integers(1, 60), hc=st.integers(1, 60))
def test_mc_expectation_tends_to_occupancy_conditional_truncation(
    problem: mst.NetworkedProblem, kappa: int, hs: int, hc: int
) -> None:
    """|E_MC(z) - Qhat^occ(z)| <= gamma^Hc max|r|/(1-gamma) + spread_z (m_z - m^H_z)/m_z:
    the return horizon costs the tail of the discounted sum, and the start distribution
    lam^Hs differs from lam on the group by a mixture weight (m - m^H)/m in total variation
    (proofs_notes/algorithm1.md)."""
    m, pol, utils = problem.model, problem.policy, problem.utilities
    sol = solve(m, pol, utils)
    qs = shadow_q(m, pol, sol)
    lam = sol.lam_S[:, None] * pol.joint_matrix()
    lam_hs = finite_horizon_occupancy(m, pol, hs)[0][:, None] * pol.joint_matrix()
    expected = mc_critic_expectation(m, pol, sol.shadow_rewards, kappa, hs, hc)
    for j in range(m.n):
        idx, size = hop_index(m, m.graph.neighbourhood(j, kappa))
        occ = truncated_q(m, qs[j], j, kappa, "occupancy", lam).table
        mass = np.bincount(idx.reshape(-1), weights=lam.reshape(-1), minlength=size)
        mass_h = np.bincount(idx.reshape(-1), weights=lam_hs.reshape(-1), minlength=size)
        spread = decay_spread(m, qs[j], j, kappa)
        r_max = float(np.max(np.abs(sol.shadow_rewards[j])))
        live = mass_h > 0
        bound = m.gamma**hc * r_max / (1 - m.gamma) + spread * (mass - mass_h) / np.where(
            mass > 0, mass, 1.0
        )
        tol = 2 * sol.value_error_bound + summation_tolerance(m.states.size * m.actions.size,
                                                              r_max / (1 - m.gamma) + 1)
        assert np.all(np.abs(expected[j] - occ)[live] <= bound[live] + tol)


@given(problem=mst.networked_problems(max_agents=3, max_gamma=0.9), kappa=st.integers(0, 2),
       horizon=st.integers(2, 30))
def test_td_limit_within_spread_over_one_minus_gamma(
    problem: mst.NetworkedProblem, kappa: int, horizon: int
) -> None:
    """With rho of full support every pair is updated, and the TD(0) fixed point q*
    satisfies ||Phi q* - Q_j||_inf <= D_j(kappa)/(1 - gamma) (averaging projection is an
    inf-norm non-expansion; proofs_notes/algorithm1.md)."""
    m = _with_uniform_rho(problem.model)
    pol = LocalizedSoftmaxPolicy(m, problem.policy.beta, problem.policy.theta)
    sol = solve(m, pol, problem.utilities)
    qs = shadow_q(m, pol, sol)
    for j in range(m.n):
        q_star = td_critic_limit(m, pol, sol.shadow_rewards[j], j, kappa, horizon)
        idx, _ = hop_index(m, m.graph.neighbourhood(j, kappa))
        err = float(np.max(np.abs(q_star[idx] - qs[j])))
        spread = decay_spread(m, qs[j], j, kappa)
        scale = float(np.max(np.abs(qs[j]))) + 1.0
        tol = (2 * sol.value_error_bound + summation_tolerance(
            m.states.size * m.actions.size, scale)) / (1 - m.gamma)
        assert err <= spread / (1 - m.gamma) + tol


# ---------------------------------------------------------------------- TD critics at finite B
# Instance for the fixed-instance TD tests: line_message(3, 0.5) with uniform rho (every entry
# has mass from t = 0) and a seeded random beta = 1 policy; gamma = 0.5 keeps the 1/(1-gamma)
# factors of the radii small enough for the planted-bug tests to have power at B = 20000.
TD_BATCH, TD_HORIZON = 20_000, 10


def _td_instance() -> tuple[NetworkedMDP, LocalizedSoftmaxPolicy, tuple[np.ndarray, ...]]:
    inst = line_message(3, 0.5)
    m = _with_uniform_rho(inst.model)
    pol = LocalizedSoftmaxPolicy.random(m, 1, np.random.default_rng(20230214))
    return m, pol, solve(m, pol, inst.utilities("linear")).shadow_rewards


def _with_gamma(m: NetworkedMDP, pol: LocalizedSoftmaxPolicy,
                gamma: float) -> tuple[NetworkedMDP, LocalizedSoftmaxPolicy]:
    """The same chain with another discount: the exact counterpart of a critic whose backups
    use ``gamma`` (visit laws do not depend on the discount)."""
    other = NetworkedMDP(m.graph, m.n_states, m.n_actions, m.kernels, gamma, m.rho)
    return other, LocalizedSoftmaxPolicy(other, pol.beta, pol.theta)


def _td_schedule(m: NetworkedMDP, traj: Trajectories, agents: tuple[int, ...], h: float,
                 t0: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-time counts ``c_t(z)`` and steps ``min(1, h c_t / (N_t + c_t + t0))`` of td_critic,
    recomputed here from the labels by its documented schedule (not by its code)."""
    size = hop_size(m, agents)
    H = traj.actions.shape[1]
    z = hop_codes(m, agents, traj.states[:, :H, :], traj.actions)[:, : H - 1]
    flat = (np.arange(H - 1)[None, :] * size + z).reshape(-1)
    counts = np.bincount(flat, minlength=(H - 1) * size).reshape(H - 1, size).astype(float)
    before = np.cumsum(counts, axis=0) - counts
    return counts, np.minimum(1.0, h * counts / (before + counts + t0))


def _td_radius(m: NetworkedMDP, traj: Trajectories, mf: TDMeanField, reward: np.ndarray,
               agents: tuple[int, ...], h: float, t0: float, delta: float) -> float:
    """td_recursion_radius with widths ``ptp r + gamma ptp qbar_t``: every sample
    ``r + gamma qbar_t(z')`` lies in that interval (proofs_notes/algorithm1.md#td-radius)."""
    counts, steps = _td_schedule(m, traj, agents, h, t0)
    widths = float(np.ptp(reward)) + mf.gamma * np.ptp(mf.iterates[:-1], axis=1)
    return td_recursion_radius(counts, steps, mf.steps, mf.increments, widths, delta)


def _td_rounding(m: NetworkedMDP, traj: Trajectories, reward: np.ndarray) -> float:
    """Both recursions sum at most B (sampled) or |S||A| (exact) terms per entry and step;
    every step is an inf-norm non-expansion, so the H steps' rounding adds up; iterates are
    bounded by max|r|/(1 - gamma)."""
    B, H = traj.actions.shape[:2]
    scale = float(np.max(np.abs(reward))) / (1 - m.gamma) + 1.0
    return summation_tolerance(H * (B + m.states.size * m.actions.size), scale)


@pytest.mark.parametrize("kappa", [0, 1])
def test_td_critic_within_radius_of_its_large_batch_recursion(kappa: int) -> None:
    """td_critic as implemented (count-indexed steps, every transition of every trajectory)
    lies within td_recursion_radius of td_critic_mean_field, its B -> inf limit at the same
    horizon (per-(t, z) Hoeffding + non-expansion; proofs_notes/algorithm1.md#td-radius);
    delta = 1e-9 split over agents, and inside the radius over times and entries."""
    m, pol, rewards = _td_instance()
    traj = rollout(m, pol, TD_BATCH, TD_HORIZON, np.random.default_rng(7))
    h = t0 = 1.0 / (1.0 - m.gamma)  # td_critic's defaults
    critics = td_critic(m, traj, rewards, kappa)
    delta = split_delta(DELTA, m.n)
    for j, c in enumerate(critics):
        mf = td_critic_mean_field(m, pol, rewards[j], j, kappa, TD_HORIZON)
        radius = _td_radius(m, traj, mf, rewards[j], c.agents, h, t0, delta)
        err = float(np.max(np.abs(c.table - mf.table)))
        assert err <= radius + _td_rounding(m, traj, rewards[j]), (j, err, radius)


@pytest.mark.parametrize("mutant_gamma", ["squared", "zero"])
def test_td_radius_catches_a_wrong_discount(mutant_gamma: str) -> None:
    """Planted bug (STYLE item 13): td_critic whose backup uses gamma^2, or 0 (the bootstrap
    term dropped), with the correct step schedule.  Rewards are shifted by +1: a constant
    leaves every width (a ptp) unchanged but moves the discounted sums, which separates the
    discounts.  Fair-instance check: for some agent the two exact recursions differ by more
    than R + R_mut, R_mut the mutant's own radius on the same counts; then, with probability
    >= 1 - 1e-9, the mutant's table is more than R from the true recursion."""
    m, pol, base = _td_instance()
    rewards = tuple(r + 1.0 for r in base)
    g_mut = m.gamma**2 if mutant_gamma == "squared" else 0.0
    mutant, mutant_pol = _with_gamma(m, pol, g_mut)
    traj = rollout(m, pol, TD_BATCH, TD_HORIZON, np.random.default_rng(8))
    h = t0 = 1.0 / (1.0 - m.gamma)
    wrong = td_critic(m, dataclasses.replace(traj, gamma=g_mut), rewards, 0, h, t0)
    delta = split_delta(DELTA, m.n)
    fair = caught = False
    for j, c in enumerate(wrong):
        tol = _td_rounding(m, traj, rewards[j])
        mf = td_critic_mean_field(m, pol, rewards[j], j, 0, TD_HORIZON)
        mf_mut = td_critic_mean_field(mutant, mutant_pol, rewards[j], j, 0, TD_HORIZON, h)
        radius = _td_radius(m, traj, mf, rewards[j], c.agents, h, t0, delta)
        radius_mut = _td_radius(m, traj, mf_mut, rewards[j], c.agents, h, t0, delta)
        gap = float(np.max(np.abs(mf_mut.table - mf.table)))
        fair = fair or gap > radius + radius_mut + 2 * tol
        caught = caught or float(np.max(np.abs(c.table - mf.table))) > radius + tol
    assert fair, "the instance cannot separate the discounts at this batch"
    assert caught


@pytest.mark.slow
@settings(max_examples=10)
@given(problem=mst.networked_problems(max_agents=3, max_gamma=0.9), seed=mst.seeds(),
       kappa=st.integers(0, 1), horizon=st.integers(2, 15))
def test_td_critic_concentrates_on_random_problems(
    problem: mst.NetworkedProblem, seed: int, kappa: int, horizon: int
) -> None:
    """As test_td_critic_within_radius_of_its_large_batch_recursion, on Hypothesis
    instances (any rho, gamma in [0, 0.9], all utility kinds)."""
    m, pol = problem.model, problem.policy
    rewards = solve(m, pol, problem.utilities).shadow_rewards
    traj = rollout(m, pol, 5000, horizon, np.random.default_rng(seed))
    h = t0 = 1.0 / (1.0 - m.gamma)
    delta = split_delta(DELTA, m.n)
    for j, c in enumerate(td_critic(m, traj, rewards, kappa)):
        mf = td_critic_mean_field(m, pol, rewards[j], j, kappa, horizon)
        radius = _td_radius(m, traj, mf, rewards[j], c.agents, h, t0, delta)
        err = float(np.max(np.abs(c.table - mf.table)))
        assert err <= radius + _td_rounding(m, traj, rewards[j]), (j, err, radius)


def _replay_radius(c: CriticTable, q_star: np.ndarray, reward: np.ndarray, gamma: float,
                   delta: float) -> float:
    """empirical_bellman_radius with width ``ptp r + gamma ptp q*`` (every sample
    ``r + gamma q*(z')`` lies there) and ``max |q*|`` over unvisited entries
    (proofs_notes/algorithm1.md#replay-td)."""
    visited = c.counts > 0
    width = float(np.ptp(reward)) + gamma * float(np.ptp(q_star))
    unvisited = float(np.max(np.abs(q_star[~visited]), initial=0.0))
    return empirical_bellman_radius(c.counts, width, gamma, delta, unvisited)


def _limit_tolerance(mf: TDMeanField, q_star: np.ndarray) -> float:
    """Forward error of td_critic_limit's solve of D (I - gamma Pbar) q = D rbar with
    D = diag(mu_z): linear_solve_tolerance with the condition number enlarged by
    max mu / min mu over the support (mu_z = sum_t m_t(z))."""
    mu = mf.mass.sum(axis=0)
    live = mu[mu > 0]
    scale = float(np.max(np.abs(q_star))) + 1.0
    return linear_solve_tolerance(live.size, mf.gamma, scale) * float(live.max() / live.min())


@pytest.mark.parametrize("kappa", [0, 1])
def test_replay_td_within_radius_of_td_limit(kappa: int) -> None:
    """replay_td_critic (one transition per independent trajectory, batch TD(0) to its fixed
    point) lies within empirical_bellman_radius of td_critic_limit at the same horizon on
    every visited entry (Hoeffding per entry + simulation identity;
    proofs_notes/algorithm1.md#replay-td); delta = 1e-9 split over agents and entries."""
    m, pol, rewards = _td_instance()
    buf = sample_transitions(m, pol, TD_BATCH, TD_HORIZON, np.random.default_rng(11))
    delta = split_delta(DELTA, m.n)
    for j, c in enumerate(replay_td_critic(m, buf, rewards, kappa)):
        q_star = td_critic_limit(m, pol, rewards[j], j, kappa, TD_HORIZON)
        mf = td_critic_mean_field(m, pol, rewards[j], j, kappa, TD_HORIZON)
        radius = _replay_radius(c, q_star, rewards[j], m.gamma, delta)
        err = float(np.max(np.abs(c.table - q_star)[c.counts > 0]))
        assert err <= radius + c.fixed_point_error + _limit_tolerance(mf, q_star), (j, err,
                                                                                   radius)


def test_replay_td_table_is_the_empirical_bellman_fixed_point() -> None:
    """Two routes to the fixed point of the empirical Bellman operator: the certified sweeps
    of replay_td_critic and a dense solve of (I - gamma Phat) q = rhat on the visited entries,
    built here from the buffer; unvisited entries are 0; the buffer's times lie in
    0..H-2 and its cost is n sum_b (T_b + 2)."""
    m, pol, rewards = _td_instance()
    buf = sample_transitions(m, pol, 3000, TD_HORIZON, np.random.default_rng(12))
    assert buf.times.min() >= 0 and buf.times.max() <= TD_HORIZON - 2
    assert buf.agent_steps == m.n * int(np.sum(buf.times + 2))
    for j, c in enumerate(replay_td_critic(m, buf, rewards, 1)):
        size = c.table.size
        z = hop_codes(m, c.agents, buf.states, buf.actions)
        z_next = hop_codes(m, c.agents, buf.next_states, buf.next_actions)
        counts = np.bincount(z, minlength=size).astype(float)
        np.testing.assert_array_equal(c.counts, counts)
        live = np.flatnonzero(counts > 0)
        P_hat = np.zeros((size, size))
        np.add.at(P_hat, (z, z_next), 1.0)
        P_hat = P_hat[np.ix_(live, live)] / counts[live, None]  # sub-stochastic rows
        r = rewards[j][buf.states[:, j], buf.actions[:, j]]
        r_hat = np.bincount(z, weights=r, minlength=size)[live] / counts[live]
        dense = np.linalg.solve(np.eye(live.size) - m.gamma * P_hat, r_hat)
        scale = float(np.max(np.abs(r))) / (1 - m.gamma) + 1.0
        tol = c.fixed_point_error + linear_solve_tolerance(live.size, m.gamma, scale)
        np.testing.assert_allclose(c.table[live], dense, rtol=0, atol=tol)
        assert np.all(c.table[counts == 0] == 0.0)


def test_replay_td_inputs_are_checked() -> None:
    m, pol, rewards = _td_instance()
    rng = np.random.default_rng(0)
    with pytest.raises(ModelError, match="horizon"):
        sample_transitions(m, pol, 10, 1, rng)
    with pytest.raises(ModelError, match="batch"):
        sample_transitions(m, pol, 0, 5, rng)
    buf = sample_transitions(m, pol, 10, 5, rng)
    with pytest.raises(ModelError, match="gamma"):
        dataclasses.replace(buf, gamma=1.0)
    with pytest.raises(ModelError, match="times"):
        dataclasses.replace(buf, horizon=2, times=np.full(10, 3))
    with pytest.raises(ModelError, match="tol"):
        replay_td_critic(m, buf, rewards, 0, tol=0.0)

@pytest.mark.parametrize("mutant_gamma", ["squared", "zero"])
def test_replay_radius_catches_a_wrong_discount(mutant_gamma: str) -> None:
    """Planted bug (STYLE item 13): replay TD whose backup uses gamma^2, or 0 (bootstrap term
    dropped).  Its exact counterpart is td_critic_limit at that discount (same visit law).
    Rewards shifted by +1 as in test_td_radius_catches_a_wrong_discount.  Fair-instance
    check: for some agent the two limits differ on a visited entry by more than R + R_mut;
    then with probability >= 1 - 1e-9 the mutant is more than R from the true limit."""
    m, pol, base = _td_instance()
    rewards = tuple(r + 1.0 for r in base)
    g_mut = m.gamma**2 if mutant_gamma == "squared" else 0.0
    mutant, mutant_pol = _with_gamma(m, pol, g_mut)
    buf = sample_transitions(m, pol, TD_BATCH, TD_HORIZON, np.random.default_rng(13))
    wrong = replay_td_critic(m, dataclasses.replace(buf, gamma=g_mut), rewards, 0)
    delta = split_delta(DELTA, m.n)
    fair = caught = False
    for j, c in enumerate(wrong):
        q_star = td_critic_limit(m, pol, rewards[j], j, 0, TD_HORIZON)
        q_mut = td_critic_limit(mutant, mutant_pol, rewards[j], j, 0, TD_HORIZON)
        tol = _limit_tolerance(td_critic_mean_field(m, pol, rewards[j], j, 0, TD_HORIZON),
                               q_star) + c.fixed_point_error
        radius = _replay_radius(c, q_star, rewards[j], m.gamma, delta)
        radius_mut = _replay_radius(c, q_mut, rewards[j], g_mut, delta)
        visited = c.counts > 0
        gap = float(np.max(np.abs(q_mut - q_star)[visited]))
        fair = fair or gap > radius + radius_mut + 2 * tol
        caught = caught or float(np.max(np.abs(c.table - q_star)[visited])) > radius + tol
    assert fair, "the instance cannot separate the discounts at this batch"
    assert caught


@pytest.mark.slow
@settings(max_examples=10)
@given(problem=mst.networked_problems(max_agents=3, max_gamma=0.9), seed=mst.seeds(),
       kappa=st.integers(0, 1), horizon=st.integers(2, 15))
def test_replay_td_concentrates_on_random_problems(
    problem: mst.NetworkedProblem, seed: int, kappa: int, horizon: int
) -> None:
    """As test_replay_td_within_radius_of_td_limit, on Hypothesis instances (any rho, so
    unvisited entries and their unvisited_value term occur)."""
    m, pol = problem.model, problem.policy
    rewards = solve(m, pol, problem.utilities).shadow_rewards
    buf = sample_transitions(m, pol, 5000, horizon, np.random.default_rng(seed))
    delta = split_delta(DELTA, m.n)
    for j, c in enumerate(replay_td_critic(m, buf, rewards, kappa)):
        q_star = td_critic_limit(m, pol, rewards[j], j, kappa, horizon)
        mf = td_critic_mean_field(m, pol, rewards[j], j, kappa, horizon)
        radius = _replay_radius(c, q_star, rewards[j], m.gamma, delta)
        err = float(np.max(np.abs(c.table - q_star)[c.counts > 0]))
        assert err <= radius + c.fixed_point_error + _limit_tolerance(mf, q_star), (j, err,
                                                                                   radius)


def _exact_critics(m: NetworkedMDP, pol: LocalizedSoftmaxPolicy, kappa: int,
                   problem: mst.NetworkedProblem) -> tuple[CriticTable, ...]:
    sol = solve(m, pol, problem.utilities)
    qs = shadow_q(m, pol, sol)
    lam = sol.lam_S[:, None] * pol.joint_matrix()
    out = []
    for j in range(m.n):
        hat = truncated_q(m, qs[j], j, kappa, "occupancy", lam)
        out.append(CriticTable(j, kappa, hat.agents, hat.table, np.zeros(hat.table.size),
                               "exact"))
    return tuple(out)


@given(problem=mst.networked_problems(max_agents=3, max_gamma=0.9), kappa=st.integers(0, 2))
def test_geometric_gradient_expectation_is_the_truncated_gradient(
    problem: mst.NetworkedProblem, kappa: int
) -> None:
    """With exact occupancy-conditional critics, E[geometric estimate] = ghat exactly."""
    m, pol = problem.model, problem.policy
    critics = _exact_critics(m, pol, kappa, problem)
    sol = solve(m, pol, problem.utilities)
    expected = gradient_estimate_expectation(m, pol, critics, kappa, None)
    ghat = truncated_gradient(m, pol, sol, kappa, "occupancy")
    tol = gradient_tolerance(m.states.size * m.actions.size, m.gamma,
                             max(float(np.max(np.abs(r))) for r in sol.shadow_rewards))
    for a, b in zip(expected, ghat, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=tol)


@settings(max_examples=8)
@given(problem=mst.networked_problems(max_agents=3, max_gamma=0.9), seed=mst.seeds(),
       kappa=st.integers(0, 1), geometric=st.booleans())
def test_gradient_estimator_concentrates(
    problem: mst.NetworkedProblem, seed: int, kappa: int, geometric: bool
) -> None:
    """Each coordinate of one trajectory's contribution lies in [-C, C] (score entries in
    [-1, 1]): C = Hmax (1 - gamma^H')/(1 - gamma) for the fixed horizon, Hmax/(1 - gamma)
    for the geometric variant, Hmax = max |(1/n) sum_j Qtilde_j|; Hoeffding per coordinate,
    union bound over all coordinates."""
    m, pol = problem.model, problem.policy
    critics = _exact_critics(m, pol, kappa, problem)
    horizon = None if geometric else 20
    rng = np.random.default_rng(seed)
    batch = 4000
    est = gradient_estimate(m, pol, critics, kappa, batch, rng, horizon)
    expected = gradient_estimate_expectation(m, pol, critics, kappa, horizon)
    h_max = sum(float(np.max(np.abs(c.table))) for c in critics) / m.n
    c_bound = h_max / (1 - m.gamma) if geometric else h_max * (1 - m.gamma**20) / (1 - m.gamma)
    delta = split_delta(DELTA, pol.n_parameters)
    radius = hoeffding_radius(batch, 2 * c_bound, delta)
    for a, b in zip(est.gradient, expected, strict=True):
        assert float(np.max(np.abs(a - b))) <= radius + summation_tolerance(batch * 20, c_bound)


def test_exact_gradient_step_increases_f() -> None:
    """With exact components (kappa = diameter, exact critics), an Algorithm 1 step is a
    gradient-ascent step: F(theta + eta g) - F(theta) = eta ||g||^2 + O(eta^2) > 0."""
    inst = line_message(4)
    m = inst.model
    utils = inst.utilities("entropy")
    pol = LocalizedSoftmaxPolicy.random(m, 1, np.random.default_rng(3))
    sol = solve(m, pol, utils)
    g = truncated_gradient(m, pol, sol, m.graph.diameter, "occupancy")
    # F(theta + eta g) >= F + eta ||g||^2 - (L/2) eta^2 ||g||^2 for an L-smooth F, so the
    # gain is at least half the first-order term whenever eta <= 1/L, i.e. L <= 1000 here
    eta = 1e-3
    new = pol.with_theta([t + eta * d for t, d in zip(pol.theta, g, strict=True)])
    gain = objective(m, new, utils) - sol.objective
    assert gain >= 0.5 * eta * sol.gradient_norm**2 > 0


def test_stationarity_floor_shrinks_with_kappa() -> None:
    """Where ascent on the exact truncated gradient stops (ghat ~ 0), ||grad F|| is at most
    ||ghat|| + ||ghat - grad F|| <= ||ghat|| + sqrt(2n) max_j D_j(kappa)/(1 - gamma); the
    truncation floor ||ghat - grad F|| itself shrinks with kappa and vanishes at the
    diameter."""
    inst = line_message(5, 0.8)
    m = inst.model
    utils = inst.utilities("linear")
    floors = []
    for kappa in (0, 1, 2, 4):
        pol = LocalizedSoftmaxPolicy.uniform(m, 0)
        for _ in range(400):
            sol = solve(m, pol, utils)
            g = truncated_gradient(m, pol, sol, kappa, "occupancy")
            if gradient_norm(g) <= 1e-3 * sol.gradient_norm + 1e-12:
                break
            pol = pol.with_theta([t + 2.0 * d for t, d in zip(pol.theta, g, strict=True)])
        sol = solve(m, pol, utils)
        g = truncated_gradient(m, pol, sol, kappa, "occupancy")
        qs = shadow_q(m, pol, sol)
        worst = max(decay_spread(m, qs[j], j, kappa) for j in range(m.n))
        bound = np.sqrt(2 * m.n) * worst / (1 - m.gamma)
        floor = gradient_norm([a - b for a, b in zip(g, sol.gradient, strict=True)])
        tol = gradient_tolerance(m.states.size * m.actions.size, m.gamma, 1.0) * np.sqrt(
            pol.n_parameters
        )
        assert sol.gradient_norm <= gradient_norm(g) + bound + tol
        assert floor <= bound + tol
        floors.append(floor)
    assert floors[0] > floors[1] > floors[2] and floors[3] <= floors[2]


def test_run_algorithm1_history() -> None:
    inst = line_message(3)
    m = inst.model
    pol = LocalizedSoftmaxPolicy.uniform(m, 0)
    cfg = Algorithm1Config(kappa=1, iterations=3, occupancy_batch=64, critic_batch=64,
                           gradient_batch=64, critic_horizon=20, occupancy_horizon=20)
    hist = run_algorithm1(m, pol, inst.utilities(), cfg, np.random.default_rng(0))
    assert hist.objective.shape == hist.samples.shape == (3,)
    assert np.all(np.diff(hist.samples) > 0)
    assert len(hist.policies) == 4
    assert np.all(np.isfinite(hist.gradient_norm)) and np.all(np.isfinite(hist.truncation_floor))
    assert hist.policies[0] is pol and hist.policies[1] is not pol
    td = run_algorithm1(m, pol, inst.utilities(), Algorithm1Config(
        critic="td", iterations=2, occupancy_batch=32, critic_batch=32, gradient_batch=32,
        gradient_horizon=15), np.random.default_rng(1))
    assert td.estimate_norm.shape == (2,)
    replay = run_algorithm1(m, pol, inst.utilities(), Algorithm1Config(
        critic="replay-td", iterations=2, occupancy_batch=32, critic_batch=32,
        gradient_batch=32, critic_horizon=15), np.random.default_rng(2))
    assert replay.estimate_norm.shape == (2,) and np.all(np.diff(replay.samples) > 0)
