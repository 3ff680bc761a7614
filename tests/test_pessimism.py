"""Pessimistic evaluation and pessimistic MA-PPO (SPEC section 6; proofs_notes/pessimism.md).

Exact routes: the tabular critic from counts against the general feature critic with one-hot
features; certified iteration against the exact active-set solve; the localized critics
against the forward marginalisation.  The bound: the decomposition identity at every
iterate, each of its terms on the validity event, a tight instance for the model term's
constant 2, and a planted optimistic critic that the pessimism check must catch.
Statistics: the validity event at the derived coefficient, the rise of the learned
policy's true J with the pessimism scale under poor coverage (sign test), and the approach
to online MA-PPO with full coverage.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reference.cooperative import (
    ConditionalPolicy,
    CooperativeMarkovGame,
    CriticFeatures,
    OfflineDataset,
    PessimisticCritic,
    PessimisticHistory,
    evaluate_game,
    evaluate_pessimistic,
    feature_critic,
    localized_q_forward,
    mirror_descent_step,
    random_game,
    run_mappo,
    run_pessimistic_mappo,
    sample_dataset,
    solve_pessimistic,
    tabular_critic,
    tabular_validity_coefficient,
    tuned_beta,
    validity_event,
)
from reference.errors import ModelError, SolverError
from reference.instances import rare_stall
from verify import strategies as mst
from verify.bounds import sign_test_wins
from verify.tolerances import EPS, linear_solve_tolerance, summation_tolerance

DELTA = 1e-9
"""Failure probability of each statistical check."""


@st.composite
def offline_problems(draw: st.DrawFn) -> tuple[CooperativeMarkovGame, OfflineDataset, float]:
    """A random game (full-support ``rho``), a dataset of 1..400 transitions from a behaviour
    policy of random coverage, and a ridge ``lambda``."""
    game = draw(mst.cooperative_games(max_agents=2, max_actions=3, full_support_rho=True))
    rng = np.random.default_rng(draw(mst.seeds()))
    coverage = draw(st.sampled_from([1.0, 0.5, 0.1]))
    safe = rng.integers(game.n_joint_actions, size=game.n_states)
    n = draw(st.integers(1, 400))
    ds = sample_dataset(game, n, rng, coverage=coverage, safe_actions=safe)
    return game, ds, draw(st.sampled_from([1.0, 0.1, 3.0]))


def _value_tol(game: CooperativeMarkovGame) -> float:
    """One LU-computed value (``linear_solve_tolerance``) plus a sum over the joint cells."""
    H = 1 / (1 - game.gamma)
    cells = game.n_states * game.n_joint_actions
    return linear_solve_tolerance(game.n_states, game.gamma, H) + summation_tolerance(cells, H)


@given(problem=offline_problems(), bonus=st.sampled_from([0.0, 0.3, 2.0]))
def test_one_hot_features_build_the_tabular_critic(problem: Any, bonus: float) -> None:
    """Counts route against per-sample feature rows with one-hot ``phi``: ``Lambda`` is
    diagonal, the sums of 0/1 rewards and of indicator rows are exact integers, so each entry
    differs only by the Cholesky solve's rounding, a few ``eps`` relative (``n_samples``
    terms allowed for non-integer rewards)."""
    game, ds, lam = problem
    a = tabular_critic(game, ds, bonus, lam)
    b = feature_critic(game, ds, CriticFeatures.one_hot(game), bonus, lam)
    tol = summation_tolerance(ds.n_samples, max(1.0, bonus / math.sqrt(lam)))
    np.testing.assert_allclose(b.offset, a.offset, rtol=0, atol=tol)
    np.testing.assert_allclose(b.transition, a.transition, rtol=0, atol=tol)
    np.testing.assert_allclose(b.bonus, a.bonus, rtol=0, atol=tol)
    assert a.monotone and b.monotone
    # C >= 0 with rows summing to n/(n + lambda): the modulus is below gamma
    assert a.modulus <= game.gamma * float(np.max(a.counts / (a.counts + lam))) * (1 + 4 * EPS)


@given(problem=offline_problems(), bonus=st.sampled_from([0.0, 0.3, 2.0]), data=st.data())
def test_map_is_a_contraction_and_routes_agree(problem: Any, bonus: float, data: Any) -> None:
    """(a) ``||T Q1 - T Q2|| <= q ||Q1 - Q2||`` with ``q <= gamma`` on random pairs;
    (b) certified iteration (one-hot feature critic) and the exact active-set solve
    (tabular critic) agree within the sum of their certified errors; (c) the localized
    critics are the forward marginals of the joint critic."""
    game, ds, lam = problem
    tab = tabular_critic(game, ds, bonus, lam)
    gen = feature_critic(game, ds, CriticFeatures.one_hot(game), bonus, lam)
    policy = data.draw(mst.conditional_policies(game))
    pi = policy.joint_matrix()
    rng = np.random.default_rng(data.draw(mst.seeds()))
    H = tab.horizon
    Q1, Q2 = rng.uniform(0, H, size=(2, tab.offset.size))
    lhs = float(np.max(np.abs(tab.apply(pi, Q1) - tab.apply(pi, Q2))))
    rounding = 2 * summation_tolerance(game.n_states + game.n_joint_actions, H)
    assert lhs <= tab.modulus * float(np.max(np.abs(Q1 - Q2))) + rounding
    assert tab.modulus <= game.gamma
    tol = 1e-10
    it = evaluate_pessimistic(gen, policy, tol=tol)
    ex = solve_pessimistic(tab, policy)
    assert it.method == "iteration" and ex.method == "active-set"
    # the iteration stops within its requested certified error, and the active-set solution
    # is exact up to the rounding of its LU solves: ||Q - Qhat|| <= residual / (1 - gamma)
    assert it.error_bound <= tol
    exact_tol = 4 * _value_tol(game)
    assert ex.residual <= exact_tol
    np.testing.assert_allclose(it.Q, ex.Q, rtol=0, atol=tol + exact_tol / (1 - game.gamma))
    np.testing.assert_array_less(-EPS, ex.Q.reshape(-1))  # clipped below at 0
    assert float(np.max(ex.Q)) <= H
    forward = localized_q_forward(game, policy, np.array(ex.Q))
    for got, want in zip(ex.localized, forward, strict=True):
        np.testing.assert_allclose(
            got, want, rtol=0, atol=summation_tolerance(game.n_joint_actions, H)
        )


def test_aggregation_features_routes_agree() -> None:
    """Aggregation (``d = 4 < 54`` cells: safe vs gamble per state) is a monotone critic:
    iteration and the active set agree on it as well."""
    game = rare_stall()
    ds = sample_dataset(
        game, 3000, np.random.default_rng(1), coverage=0.3, safe_actions=np.array([0, 0])
    )
    labels = np.zeros(game.r.shape, dtype=np.int64)
    labels[0], labels[1] = 1, 3
    labels[(0, 0, 0, 0)], labels[(1, 0, 0, 0)] = 0, 2
    critic = feature_critic(game, ds, CriticFeatures.aggregation(game, labels), 0.5)
    assert critic.monotone and critic.modulus < game.gamma
    policy = ConditionalPolicy.uniform(game)
    tol = 1e-10
    it = evaluate_pessimistic(critic, policy, tol=tol)
    ex = solve_pessimistic(critic, policy)
    exact_tol = 4 * _value_tol(game)
    assert it.error_bound <= tol and ex.residual <= exact_tol
    np.testing.assert_allclose(it.Q, ex.Q, rtol=0, atol=tol + exact_tol / (1 - game.gamma))
    # the same loop through the feature route with the certified iteration
    h_it = run_pessimistic_mappo(
        game, ds, 4, 1.0, 0.5, features=CriticFeatures.aggregation(game, labels),
        solver="iteration",
    )
    h_ex = run_pessimistic_mappo(
        game, ds, 4, 1.0, 0.5, features=CriticFeatures.aggregation(game, labels),
        solver="active-set",
    )
    np.testing.assert_allclose(h_it.J_hat, h_ex.J_hat, rtol=0,
                               atol=tol + exact_tol / (1 - game.gamma))


def _extrapolating_problem() -> tuple[CooperativeMarkovGame, OfflineDataset, CriticFeatures]:
    """One state, one agent, two actions; ``phi = (1, 0.1)``; 100 samples of action 1 only.
    ``Lambda = 100 * 0.01 + 1 = 2`` and ``C[action 0] = 1 * (100 * 0.1) / 2 = 5``: the fit
    extrapolates to the unseen action with gain 5, so ``q = 0.9 * 5 = 4.5``
    (``pessimism.md#contraction``)."""
    game = CooperativeMarkovGame(np.ones((1, 2, 1)), np.full((1, 2), 0.5), np.ones(1), 0.9)
    n = 100
    ds = OfflineDataset(
        np.zeros(n, dtype=np.int64),
        np.ones((n, 1), dtype=np.int64),
        np.full(n, 0.5),
        np.zeros(n, dtype=np.int64),
        1,
        (2,),
    )
    return game, ds, CriticFeatures(np.array([[[1.0], [0.1]]]), "extrapolating")


def test_general_features_can_expand() -> None:
    """SPEC calls the map a gamma-contraction; with general features it is not.  On the
    counterexample the measured expansion is 4.5 and the iteration refuses to certify."""
    game, ds, feats = _extrapolating_problem()
    critic = feature_critic(game, ds, feats, 0.0)
    assert critic.modulus == pytest.approx(4.5, rel=1e-12)
    assert not critic.monotone
    pi = ConditionalPolicy.uniform(game).joint_matrix()
    Q1, Q2 = np.zeros(2), np.full(2, 0.1)
    ratio = float(np.max(np.abs(critic.apply(pi, Q1) - critic.apply(pi, Q2)))) / 0.1
    assert ratio == pytest.approx(4.5, rel=1e-12)
    policy = ConditionalPolicy.uniform(game)
    with pytest.raises(SolverError, match=r"modulus gamma \|\|C\|\|_inf = 4\.5"):
        evaluate_pessimistic(critic, policy)
    with pytest.raises(SolverError, match="monotone"):
        solve_pessimistic(critic, policy)


def _history_tol(game: CooperativeMarkovGame, h: PessimisticHistory) -> float:
    """Values from LU solves, the critic's certified error, and sums over cells."""
    return 4 * _value_tol(game) + float(np.max(h.critic_error)) / (1 - game.gamma)


def _check_history(game: CooperativeMarkovGame, h: PessimisticHistory, K: int) -> None:
    """Everything ``pessimism.md`` proves about one run.

    Always: the decomposition identity per iterate and the optimisation term's average under
    ``B(K)``.  On the validity event at ``Vhat_k``: pessimism ``J_hat_k <= J(pi_k)`` and
    ``model_k <= (2/(1-gamma)) E_{d*}[Gamma]``; on the event for every ``k < K``: the average
    gap under the bound."""
    tol = _history_tol(game, h)
    assert h.event_all == bool(np.all(h.event[:K]))
    np.testing.assert_allclose(h.betas, np.full(K, h.betas[0]), rtol=0, atol=0)
    assert h.average_gap == pytest.approx(float(np.mean(h.J_star - h.J[:K])), abs=tol)
    assert h.last_gap == pytest.approx(h.J_star - h.J[K], abs=tol)
    gaps = h.J_star - h.J[:K]
    np.testing.assert_allclose(
        gaps, h.optimisation_terms + h.model_terms - h.pessimism_terms, rtol=0, atol=tol
    )
    assert float(np.mean(h.optimisation_terms)) <= h.bound.optimisation + tol
    on = h.event[:K]
    assert np.all(h.pessimism_terms[on] >= -tol), "a critic above the true J on the event"
    assert np.all(h.J_hat[h.event] <= h.J[h.event] + tol)
    assert np.all(h.model_terms[on] <= h.bound.model + tol)
    if h.event_all:
        assert h.average_gap <= h.bound.total + tol


@given(problem=offline_problems(), scale=st.sampled_from([0.0, 0.25, 1.0, 3.0]))
def test_decomposition_and_bound_on_random_games(problem: Any, scale: float) -> None:
    game, ds, lam = problem
    K = 8
    beta = tuned_beta(game.n_agents, max(game.log_action_count, 0.5), game.gamma)
    h = run_pessimistic_mappo(game, ds, K, beta, scale / (1 - game.gamma), lambda_reg=lam)
    _check_history(game, h, K)


def test_bound_on_the_rare_stall_game() -> None:
    """Twenty datasets of the poor-coverage game at three scales, tuned beta.  Reports the
    event's frequency per scale; the checks on the event must not be vacuous."""
    game = rare_stall()
    K = 16
    beta = tuned_beta(game.n_agents, game.log_action_count, game.gamma)
    seqs = np.random.SeedSequence(11).spawn(20)
    frequency = {}
    for scale in (0.25, 0.5, 1.0):
        held = 0
        for seq in seqs:
            rng = np.random.default_rng(seq)
            ds = sample_dataset(game, 10_000, rng, coverage=0.15, safe_actions=np.array([0, 0]))
            h = run_pessimistic_mappo(game, ds, K, beta, scale / (1 - game.gamma))
            _check_history(game, h, K)
            held += h.event_all
        frequency[scale] = held / len(seqs)
    print(f"validity event frequency per scale: {frequency}")
    assert frequency[1.0] > 0, f"the event never held: {frequency}"


def test_iterates_are_mirror_descent_on_the_critics() -> None:
    """Each iterate is the exact MA-PPO step of section 5 on the pessimistic critics of the
    previous one, recomputed here from a fresh critic (so the loop cannot silently use the
    true Q or an unclipped critic), with ``beta_k = beta sqrt(K)``; the one-hot feature route
    in the loop gives the tabular run."""
    game = rare_stall()
    ds = sample_dataset(
        game, 3000, np.random.default_rng(4), coverage=0.2, safe_actions=np.array([0, 0])
    )
    K, beta, bonus = 6, 0.3, 0.5 / (1 - game.gamma)
    h = run_pessimistic_mappo(game, ds, K, beta, bonus)
    np.testing.assert_allclose(h.betas, np.full(K, beta * math.sqrt(K)), rtol=1e-15)
    critic = tabular_critic(game, ds, bonus)
    for k in range(K):
        pv = solve_pessimistic(critic, h.iterates[k])
        step = mirror_descent_step(h.iterates[k], pv.localized, float(h.betas[k]))
        for got, want in zip(h.iterates[k + 1].conditionals, step.conditionals, strict=True):
            np.testing.assert_array_equal(got, want)
    one_hot = run_pessimistic_mappo(
        game, ds, K, beta, bonus, features=CriticFeatures.one_hot(game), solver="iteration"
    )
    tol = 1e-10 + 4 * _value_tol(game) / (1 - game.gamma)
    np.testing.assert_allclose(one_hot.J_hat, h.J_hat, rtol=0, atol=tol)
    np.testing.assert_allclose(one_hot.J, h.J, rtol=0, atol=K * tol)


def test_feature_modulus_is_the_row_sum_norm() -> None:
    """``q = gamma max_row sum |C|`` recomputed from an explicit ``Lambda^{-1}`` (inv, not the
    Cholesky solve) for random features, where ``C`` has entries of both signs."""
    game = random_game(np.random.default_rng(3), 3, (2, 2), 0.9)
    ds = sample_dataset(game, 60, np.random.default_rng(4))
    feats = CriticFeatures.random(game, 3, np.random.default_rng(5))
    critic = feature_critic(game, ds, feats, 0.0)
    Phi = feats.matrix
    cells = ds.states * game.n_joint_actions + ds.joint_actions
    Lam_inv = np.linalg.inv(Phi[cells].T @ Phi[cells] + np.eye(feats.dim))
    E = np.zeros((ds.n_samples, game.n_states))
    E[np.arange(ds.n_samples), ds.next_states] = 1.0
    C = Phi @ Lam_inv @ Phi[cells].T @ E
    assert (C < 0).any()
    q = game.gamma * float(np.max(np.abs(C).sum(axis=1)))
    assert critic.modulus == pytest.approx(q, rel=1e-9)


def test_validity_event_margins_by_hand() -> None:
    """(a) On the tight instance the margin at the optimal action is exactly 0 and the event
    fails for a slightly smaller coefficient.  (b) An unseen cell (``n = 0``): one state,
    ``r = 1``, ``gamma = 0.5`` (``H = 2``), ``lambda = 100``, ``V = H``: the deviation is
    ``B V = 2`` and ``Gamma = beta_G / 10``, so the event needs ``beta_G >= 20``; the derived
    coefficient ``H (sqrt(log(2 * 2 * M / delta) / 2) + sqrt(100) + 0.5)`` with
    ``M = ceil(sqrt(3 + 100)) = 11`` meets it, and without its ``sqrt(lambda)`` it would not."""
    game = CooperativeMarkovGame(
        np.ones((1, 2, 1)), np.array([[0.5, 0.25]]), np.ones(1), 0.0, "tight"
    )
    acts = np.array([[0]] * 3 + [[1]] * 15, dtype=np.int64)
    zeros = np.zeros(18, dtype=np.int64)
    ds = OfflineDataset(zeros, acts, np.where(acts[:, 0] == 0, 0.5, 0.25), zeros, 1, (2,))
    V = np.array([0.0])
    assert validity_event(tabular_critic(game, ds, 0.25), V).margin == 0.0
    assert not validity_event(tabular_critic(game, ds, 0.25 - 2.0**-8), V).holds
    g2 = CooperativeMarkovGame(np.ones((1, 2, 1)), np.ones((1, 2)), np.ones(1), 0.5, "unseen")
    seen = OfflineDataset(
        np.zeros(3, dtype=np.int64), np.zeros((3, 1), dtype=np.int64), np.ones(3),
        np.zeros(3, dtype=np.int64), 1, (2,),
    )
    critic = tabular_critic(g2, seen, 0.0, lambda_reg=100.0)
    coeff = tabular_validity_coefficient(critic, DELTA)
    M = math.ceil(math.sqrt(3 + 100))
    by_hand = 2 * (math.sqrt(math.log(2 * 2 * M / DELTA) / 2) + 10 + 0.5)
    assert coeff == pytest.approx(by_hand, rel=1e-14)
    assert by_hand - 2 * 10 < 20 <= coeff  # the sqrt(lambda) term is what makes it hold
    H = critic.horizon
    valid = dataclasses.replace(critic, bonus=coeff / np.sqrt(critic.counts + 100.0))
    assert validity_event(valid, np.array([H])).holds
    short = dataclasses.replace(critic, bonus=(coeff - 20) / np.sqrt(critic.counts + 100.0))
    assert not validity_event(short, np.array([H])).holds


def test_expected_bonus_uses_the_normalised_occupancy() -> None:
    """``E_{d*}[Gamma]`` with ``d* = (1 - gamma) lam*`` of the optimal policy, recomputed from
    the tabular occupancy of the greedy policy (mass 1, not ``1/(1-gamma)``)."""
    from reference.cooperative import optimal_comparator, pessimism_bound
    from reference.tabular import occupancy, policy_iteration

    game = rare_stall()
    ds = sample_dataset(game, 2000, np.random.default_rng(9), coverage=0.5,
                        safe_actions=np.array([0, 0]))
    critic = tabular_critic(game, ds, 3.0)
    greedy = policy_iteration(game.tabular).greedy
    pi = np.zeros((game.n_states, game.n_joint_actions))
    pi[np.arange(game.n_states), greedy] = 1.0
    d = (1 - game.gamma) * occupancy(game.tabular, pi).lam
    assert d.sum() == pytest.approx(1.0, rel=1e-12)
    b = pessimism_bound(critic, 8, 1.0, optimal_comparator(game))
    assert b.expected_bonus == pytest.approx(float(np.sum(d.reshape(-1) * critic.bonus)), rel=1e-12)
    assert b.model == pytest.approx(2 * b.expected_bonus / (1 - game.gamma), rel=1e-15)


def test_model_term_constant_is_tight() -> None:
    """A one-state bandit with ``gamma = 0`` where the data's ridge shrinkage is exactly
    ``Gamma`` at the optimal action: ``n = 3``, ``lambda = 1``, ``r = 0.5`` give
    ``c = 0.375``, ``B V = 0.5``, deviation ``0.125 = Gamma`` with ``beta_G = 0.25``; then
    ``B V - Qhat = 0.5 - (0.375 - 0.125) = 0.25 = 2 Gamma`` (all exact in binary).  The model
    term equals ``(2/(1-gamma)) E_{d*}[Gamma]``: a constant below 2 would fail."""
    game = CooperativeMarkovGame(
        np.ones((1, 2, 1)), np.array([[0.5, 0.25]]), np.ones(1), 0.0, "tight"
    )
    acts = np.array([[0]] * 3 + [[1]] * 15, dtype=np.int64)
    rewards = np.where(acts[:, 0] == 0, 0.5, 0.25)
    zeros = np.zeros(18, dtype=np.int64)
    ds = OfflineDataset(zeros, acts, rewards, zeros, 1, (2,))
    h = run_pessimistic_mappo(game, ds, 4, 1.0, 0.25)
    assert bool(np.all(h.event))
    assert h.bound.model == 0.25
    np.testing.assert_array_equal(h.model_terms, np.full(4, 0.25))
    _check_history(game, h, 4)


def _optimistic(critic: PessimisticCritic) -> PessimisticCritic:
    """Planted bug: the bonus added instead of subtracted."""
    return dataclasses.replace(critic, bonus=-critic.bonus)


def test_pessimism_check_catches_an_optimistic_critic() -> None:
    """With the bonus sign flipped, the value at ``pi`` exceeds the true ``J`` while the
    validity event (evaluated with the correct bonus) holds: the pessimism check fails."""
    game = rare_stall()
    ds = sample_dataset(
        game, 10_000, np.random.default_rng(5), coverage=0.15, safe_actions=np.array([0, 0])
    )
    critic = tabular_critic(game, ds, 1.0 / (1 - game.gamma))
    policy = ConditionalPolicy.uniform(game)
    true_J = evaluate_game(game, policy).J
    good = solve_pessimistic(critic, policy)
    assert validity_event(critic, good.V).holds and good.J <= true_J
    bad = evaluate_pessimistic(_optimistic(critic), policy)
    assert validity_event(critic, bad.V).holds
    assert bad.J > true_J + _value_tol(game) + bad.error_bound


def test_validity_coefficient_event_holds() -> None:
    """At ``tabular_validity_coefficient(delta)`` the event holds at every ``V`` in
    ``[0, H]^S`` with probability ``1 - delta``: checked at the run's critics and at 50
    random values on 10 datasets, each a check at ``delta = 1e-9``."""
    game = random_game(np.random.default_rng(7), 2, (2, 2), 0.5)
    for seq in np.random.SeedSequence(3).spawn(10):
        rng = np.random.default_rng(seq)
        ds = sample_dataset(game, 20_000, rng, coverage=1.0)
        critic = tabular_critic(game, ds, 1.0)
        coeff = tabular_validity_coefficient(critic, DELTA)
        valid = dataclasses.replace(critic, bonus=coeff / np.sqrt(critic.counts + 1.0))
        for V in rng.uniform(0, critic.horizon, size=(50, game.n_states)):
            ev = validity_event(valid, V)
            assert ev.holds, f"event failed at {ev.worst} by {ev.margin:.3g}"


def test_poor_coverage_pessimism_raises_true_J() -> None:
    """Under poor coverage (coverage 0.15 on the rare-stall game, 10 000 samples) the true J
    of the learned policy rises from scale 0 to scale 0.25 and from scale 0 to scale 1
    (paired datasets, 40 seeds), then falls back to the uniform policy's J once the bonus
    exceeds every data backup.

    One-sided sign tests, ``delta = 1e-9`` split over the two: under the null (a rise with
    probability at most 1/2, ties counted as losses) ``sign_test_wins(40, 5e-10)`` or more
    rises have probability at most ``5e-10``.  The fall is deterministic: with
    ``beta_G >= sqrt(n_max + lambda)`` every cell has ``Gamma >= 1 > c``, so ``Qhat = 0`` is
    the fixed point, every step is flat and ``pi_K`` is uniform."""
    game = rare_stall()
    K, beta = 32, 0.1
    H = 1 / (1 - game.gamma)
    seeds = np.random.SeedSequence(2026).spawn(40)
    need = sign_test_wins(len(seeds), DELTA / 2)
    uniform_J = evaluate_game(game, ConditionalPolicy.uniform(game)).J
    rises = {0.25: 0, 1.0: 0}
    for seq in seeds:
        rng = np.random.default_rng(seq)
        ds = sample_dataset(game, 10_000, rng, coverage=0.15, safe_actions=np.array([0, 0]))
        low = run_pessimistic_mappo(game, ds, K, beta, 0.0)
        for scale in rises:
            high = run_pessimistic_mappo(game, ds, K, beta, scale * H)
            rises[scale] += high.J[-1] > low.J[-1]
        flat_coeff = math.sqrt(float(np.max(tabular_critic(game, ds, 0.0).counts)) + 1.0)
        flat = run_pessimistic_mappo(game, ds, K, beta, flat_coeff)
        assert float(np.max(flat.J_hat)) == 0.0
        assert flat.J[-1] == pytest.approx(uniform_J, abs=_value_tol(game))
    assert min(rises.values()) >= need, f"rises {rises} of {len(seeds)}, need {need}"


def test_full_coverage_approaches_online_mappo() -> None:
    """Full coverage, 200 000 samples, no bonus, on a random game with ``gamma = 0.5``.

    (a) Per iterate, ``||Qhat_k - Q_{pi_k}|| <= max dev_k / (1 - gamma)`` with ``dev_k`` the
    data-backup deviation at ``Vhat_k`` (deterministic, ``pessimism.md#full-coverage``), and
    ``dev_k <= beta_valid / sqrt(n + lambda)`` (the validity coefficient at 1e-9).
    (b) Per step, the pessimistic step and the online step from the same ``pi_k`` give values
    within ``N e_k H^2 / (2 beta_k)``, ``e_k = ||Qhat_k - Q_{pi_k}||``."""
    game = random_game(np.random.default_rng(7), 2, (2, 2), 0.5)
    ds = sample_dataset(game, 200_000, np.random.default_rng(8), coverage=1.0)
    K = 8
    beta = tuned_beta(game.n_agents, game.log_action_count, game.gamma)
    h = run_pessimistic_mappo(game, ds, K, beta, 0.0)
    critic = tabular_critic(game, ds, 0.0)
    H = critic.horizon
    coeff = tabular_validity_coefficient(critic, DELTA)
    radius = float(np.max(coeff / np.sqrt(critic.counts + 1.0)))
    tol = _history_tol(game, h)
    online = run_mappo(game, K, beta, output="last")
    for k in range(K + 1):
        pv = solve_pessimistic(critic, h.iterates[k])
        dev = float(np.max(validity_event(critic, pv.V).deviation))
        assert dev <= radius
        assert h.critic_gap[k] <= dev / (1 - game.gamma) + tol
        if k == K:
            break
        exact = evaluate_game(game, h.iterates[k])
        step = mirror_descent_step(h.iterates[k], exact.localized, float(h.betas[k]))
        lip = game.n_agents * h.critic_gap[k] * H**2 / (2 * h.betas[k])
        assert abs(h.J[k + 1] - evaluate_game(game, step).J) <= lip + tol
    drift = float(np.max(np.abs(h.J - online.J)))
    print(f"max_k |J_offline - J_online| = {drift:.3g}, critic gaps {np.max(h.critic_gap):.3g}")


def test_run_rejects_bad_options() -> None:
    game = rare_stall()
    ds = sample_dataset(game, 100, np.random.default_rng(0))
    with pytest.raises(ModelError, match="K = 0"):
        run_pessimistic_mappo(game, ds, 0, 1.0, 0.0)
    with pytest.raises(ModelError, match="bonus_coefficient = -1"):
        run_pessimistic_mappo(game, ds, 2, 1.0, -1.0)
    with pytest.raises(ModelError, match="lambda_reg = 0"):
        run_pessimistic_mappo(game, ds, 2, 1.0, 0.0, lambda_reg=0.0)
    with pytest.raises(ModelError, match="solver = 'newton'"):
        run_pessimistic_mappo(game, ds, 2, 1.0, 0.0, solver="newton")  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="cell shape"):
        feature_critic(game, ds, CriticFeatures.one_hot(random_game(
            np.random.default_rng(0), 2, (3, 3), 0.9)), 0.0)


def test_bound_is_not_reported_for_the_anytime_schedule() -> None:
    game = rare_stall()
    ds = sample_dataset(game, 500, np.random.default_rng(0))
    h = run_pessimistic_mappo(game, ds, 4, 1.0, 1.0, schedule="sqrt-k")
    assert math.isnan(h.bound.total) and math.isnan(h.bound.optimisation)
    assert h.bound.model > 0
    np.testing.assert_allclose(h.betas, np.sqrt(np.arange(1, 5)), rtol=1e-15)
