"""Validity and tightness of the cooperative-game certificates and derived bounds (SPEC
sections 5 and 6; proofs_notes/certificates.md, algorithm3.md#rate, mappo-bound.md#anytime,
pessimism.md#contraction).

* ``evaluate_game``'s ``error_bound`` is the value certificate (rewards ``1e-6`` make the
  occupancy's a million times larger).
* Algorithm 3's gradient bound ``G = 2(2R + Y)`` is attained by a two-sample run; its excess
  bound and the anytime last-iterate bound are worst-case and checked term by term against
  their derivations (each ingredient evaluated independently).
* The pessimistic critic's certificate ``(residual + rounding)/(1 - q)`` is attained by an
  early-stopped iteration on a one-cell chain; its monotonicity test is as strict as its own
  rounding; its default tolerance is pinned.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from reference.cooperative import (
    ConditionalPolicy,
    CooperativeMarkovGame,
    DenseFeatures,
    OfflineDataset,
    algorithm3,
    algorithm3_excess_bound,
    anytime_last_iterate_bound,
    evaluate_game,
    evaluate_pessimistic,
    run_pessimistic_mappo,
    solve_pessimistic,
    tabular_critic,
)
from reference.cooperative.pessimism import _finish_critic
from reference.errors import SolverError
from reference.tabular import kernel_under
from verify.symbolic import rational_tabular_solution

EPS = float(np.finfo(np.float64).eps)


def _ring_game(n_states: int, gamma: float, reward_scale: float) -> CooperativeMarkovGame:
    """Two agents with two actions each on a ring of states: joint action ``(0, 0)`` stays
    with probability 0.99, anything else moves on; rewards ``reward_scale * U[0, 1]``."""
    P = np.zeros((n_states, 2, 2, n_states))
    for s in range(n_states):
        P[s, :, :, (s + 1) % n_states] = 1.0
        P[s, 0, 0, s], P[s, 0, 0, (s + 1) % n_states] = 0.99, 0.01
    r = reward_scale * np.random.default_rng(9).uniform(size=(n_states, 2, 2))
    rho = np.zeros(n_states)
    rho[0] = 1.0
    return CooperativeMarkovGame(P, r, rho, gamma)


# ------------------------------------------------------------------ evaluate_game
@pytest.mark.parametrize("gamma", [0.5, 0.99])
def test_evaluate_game_bound_is_the_value_certificate(gamma: float) -> None:
    """Rewards ``1e-6 U[0, 1]``: the value certificate is at least the rounding allowance of
    its own system, ``(nS + |A| + 2) eps ((1 + gamma) ||V|| + max r) / (1 - gamma)``
    (forming ``P_pi``, ``r_pi`` and the residual), and at most the exact residual plus twice
    that allowance over ``1 - gamma`` (the occupancy's certificate, of scale
    ``eps / (1 - gamma)^2``, is a million times larger); it covers the exact error."""
    game = _ring_game(5, gamma, 1e-6)
    policy = ConditionalPolicy.uniform(game)
    vals = evaluate_game(game, policy)
    joint = policy.joint_matrix()
    P_pi, r_pi = kernel_under(game.tabular, joint)
    n = game.n_states
    M = np.eye(n) - gamma * P_pi
    res = max(
        abs(sum((Fraction(float(M[i, j])) * Fraction(float(vals.V[j])) for j in range(n)),
                Fraction(0)) - Fraction(float(r_pi[i])))
        for i in range(n)
    )
    n_joint = game.n_joint_actions
    allowance = (n + n_joint + 2) * EPS * ((1 + gamma) * float(np.max(np.abs(vals.V)))
                                           + float(np.max(np.abs(game.r))))
    assert allowance / (1 - gamma) <= vals.error_bound
    assert vals.error_bound <= (float(res) + 2 * allowance) / (1 - gamma)
    exact = rational_tabular_solution(game.tabular, joint).V
    error = max(abs(Fraction(float(v)) - Fraction(int(e.p), int(e.q)))
                for v, e in zip(vals.V, exact, strict=True))
    assert float(error) <= vals.error_bound


# ------------------------------------------------------------------ Algorithm 3
def test_algorithm3_gradient_bound_is_attained() -> None:
    """One constant feature (``phi = 1``), ``theta_k = R``, targets ``(-Y, +Y)`` with
    ``Y > R`` and a large step: the first step lands on ``theta_1 = -R`` (projected), and the
    second stochastic gradient is ``2 ((-R - R) - Y) = -2 (2R + Y)``, exactly ``-G``.  So the
    reported ``G`` is valid and attained (``c = 1``)."""
    game = _ring_game(2, 0.5, 1.0)
    shapes = [c.shape for c in ConditionalPolicy.uniform(game).conditionals]
    feats = DenseFeatures(game, tuple(np.ones((*sh, 1)) for sh in shapes))
    R, Y = 1.0, 3.0
    res = algorithm3(feats, 0, np.array([R]), np.zeros(2, dtype=np.int64),
                     np.array([-Y, Y]), R, Y, eta=10.0)
    theta_1 = 2 * float(res.theta[0]) - float(res.last[0])
    assert theta_1 == pytest.approx(-R, rel=1e-15)
    g_1 = abs(2.0 * ((theta_1 - R) - Y))
    assert g_1 <= res.gradient_bound * (1 + 4 * EPS)
    assert g_1 >= res.gradient_bound * (1 - 4 * EPS)


@pytest.mark.parametrize(("T", "eta", "delta"), [(1, 0.5, 0.5), (16, 0.01, 1e-9), (4096, 1e-3, 0.1)])
def test_algorithm3_excess_bound_is_its_derivation(T: int, eta: float, delta: float) -> None:
    """The excess bound is worst-case (a high-probability bound on a convex program; no
    instance attains all terms), so its derivation is checked term by term
    (proofs_notes/algorithm3.md#rate): the regret of projected gradient descent from
    ``||theta_0 - theta*|| <= R``, ``R^2/(2 eta T) + eta G^2/2``; the one-sided Azuma term
    for increments in intervals of length ``4 G R``, ``4 G R sqrt(T log(1/delta)/2) / T``;
    and the one-index shift of the average, ``G ||theta_T - theta_0|| / T`` with
    ``||theta_T - theta_0|| <= 2R``."""
    R, G = 2.0, 7.0
    regret = R**2 / (2 * eta * T) + eta * G**2 / 2
    azuma = 4 * G * R * math.sqrt(T * math.log(1 / delta) / 2) / T
    shift = G * (2 * R) / T
    got = algorithm3_excess_bound(T, R, G, eta, delta)
    assert got == pytest.approx(regret + azuma + shift, rel=1e-14)


# ------------------------------------------------------------------ anytime bound
@pytest.mark.parametrize("K", [1, 2, 3, 10, 100, 1000])
def test_anytime_bound_is_its_derivation(K: int) -> None:
    """``J* - J(pi_K) <= [log|A| + N H_K/(8 beta^2 (1-gamma)^2)] / ((1-gamma) sum_{k<K}
    1/beta_k)`` with ``beta_k = beta sqrt(k+1)`` (proofs_notes/mappo-bound.md#anytime); the
    closed form replaces the sum by its integral lower bound ``2 (sqrt(K+1) - 1)/beta``.  So
    the closed form is at least the sum form (valid) and at most ``c_K = sum_{j<=K} j^{-1/2}
    / (2 (sqrt(K+1) - 1))`` times it (``c_1 = 1.21``, falling to 1): as tight as the integral
    comparison allows."""
    beta, n, log_a, g = 0.7, 2, math.log(6), 0.9
    harmonic = sum(1.0 / j for j in range(1, K + 1))
    inv_sum = sum(1.0 / (beta * math.sqrt(k + 1)) for k in range(K))
    sum_form = (log_a + n * harmonic / (8 * beta**2 * (1 - g) ** 2)) / ((1 - g) * inv_sum)
    c_K = sum(1.0 / math.sqrt(j) for j in range(1, K + 1)) / (2 * (math.sqrt(K + 1) - 1))
    got = anytime_last_iterate_bound(K, beta, n, log_a, g)
    assert sum_form * (1 - 1e-12) <= got <= c_K * sum_form * (1 + 1e-12)
    assert c_K <= 1.21


# ------------------------------------------------------------------ pessimism
def _one_cell(gamma: float, n: int, reward: float = 0.5
              ) -> tuple[CooperativeMarkovGame, ConditionalPolicy, OfflineDataset]:
    """One state, one agent with one action, ``n`` samples of reward ``reward`` looping
    back.  Tabular critic without bonus, ``lambda = 1``: ``c = n reward/(n + 1)``,
    ``C = n/(n + 1)``, ``q = gamma n/(n + 1)`` and ``Qhat = c/(1 - q)``; from 0 the
    iteration's error is ``q^k Qhat``, exactly ``residual / (1 - q)``."""
    game = CooperativeMarkovGame(np.ones((1, 1, 1)), np.full((1, 1), reward), np.ones(1), gamma)
    zeros = np.zeros(n, dtype=np.int64)
    data = OfflineDataset(zeros, np.zeros((n, 1), dtype=np.int64), np.full(n, reward), zeros,
                          1, (1,))
    return game, ConditionalPolicy.uniform(game), data


def _exact_fixed_point(gamma: float, n: int, reward: float) -> Fraction:
    g, r = Fraction(gamma), Fraction(reward)
    c = Fraction(n) * r / (n + 1)
    q = g * n / (n + 1)
    return c / (1 - q)


@pytest.mark.parametrize("gamma", [0.5, 0.95])
def test_pessimistic_certificate_is_attained(gamma: float) -> None:
    """Stopped at ``tol = 0.05``: ``true <= certificate <= (1 + 1e-9) true``."""
    n, reward = 50, 0.5
    game, policy, data = _one_cell(gamma, n, reward)
    critic = tabular_critic(game, data, 0.0, 1.0)
    assert critic.modulus == pytest.approx(gamma * n / (n + 1), rel=1e-15)
    pv = evaluate_pessimistic(critic, policy, tol=0.05)
    true = float(abs(Fraction(float(pv.Q.reshape(-1)[0])) - _exact_fixed_point(gamma, n, reward)))
    assert true > 0.01
    assert true <= pv.error_bound <= (1 + 1e-9) * true


def test_pessimistic_default_tolerance() -> None:
    """The default ``tol = 1e-10`` is met (exact fixed point) and ``1e-8`` does not meet it:
    the stopping bound ``q ||Q_k - Q_{k-1}|| / (1 - q)`` equals the error on this chain."""
    gamma, n, reward = 0.99, 1000, 0.5
    game, policy, data = _one_cell(gamma, n, reward)
    critic = tabular_critic(game, data, 0.0, 1.0)
    exact = _exact_fixed_point(gamma, n, reward)

    def error(tol: float | None) -> float:
        pv = (evaluate_pessimistic(critic, policy) if tol is None
              else evaluate_pessimistic(critic, policy, tol=tol))
        return float(abs(Fraction(float(pv.Q.reshape(-1)[0])) - exact))

    assert error(None) <= 1e-10
    assert error(1e-8) > 1e-10


def test_monotonicity_test_is_as_strict_as_its_rounding() -> None:
    """``monotone`` claims the upper clip ``H`` cannot bind: ``c + gamma H C 1 <= H`` up to the
    rounding of evaluating it (``4 eps |S|`` relative).  With ``C = 1``, ``gamma = 0.5``
    (``H = 2``) and ``c = 1 + 64 eps`` the unclipped fixed point ``c/(1 - gamma)`` exceeds
    ``H`` by ``128 eps``, far beyond that rounding: the clip binds, the critic is not
    monotone, and the exact route (which ignores the upper clip) refuses it.  At ``c = 1``
    the clip cannot bind and the critic is monotone."""
    game, policy, _ = _one_cell(0.5, 1)
    one = np.ones((1, 1))
    for offset, monotone in ((1.0 + 64 * EPS, False), (1.0, True)):
        critic = _finish_critic(game, np.array([offset]), one, np.zeros(1), (0.0, 1.0),
                                np.ones(1), "tabular")
        assert critic.monotone is monotone
    critic = _finish_critic(game, np.array([1.0 + 64 * EPS]), 0.5 * one, np.zeros(1),
                            (0.0, 1.0), np.ones(1), "tabular")
    assert critic.monotone  # C = 1/2: c + gamma H C = 1.5 + 64 eps < H
    binding = _finish_critic(game, np.array([1.0 + 64 * EPS]), one, np.zeros(1), (0.0, 1.0),
                             np.ones(1), "tabular")
    with pytest.raises(SolverError, match="monotone"):
        solve_pessimistic(binding, policy)


def test_pessimistic_run_default_tolerance() -> None:
    """``run_pessimistic_mappo`` evaluates each iterate's critic to its default
    ``tol = 1e-10`` on the iteration route: every certified critic error is at most
    ``1e-10``, while at ``tol = 1e-8`` the certified errors exceed ``1e-10``."""
    game = CooperativeMarkovGame(np.ones((1, 2, 1)), np.full((1, 2), 0.5), np.ones(1), 0.99)
    zeros = np.zeros(1000, dtype=np.int64)
    actions = (np.arange(1000) % 2).astype(np.int64)[:, None]
    data = OfflineDataset(zeros, actions, np.full(1000, 0.5), zeros, 1, (2,))
    default = run_pessimistic_mappo(game, data, 2, 1.0, 0.0, solver="iteration")
    assert float(np.max(default.critic_error)) <= 1e-10
    loose = run_pessimistic_mappo(game, data, 2, 1.0, 0.0, solver="iteration", tol=1e-8)
    assert float(np.max(loose.critic_error)) > 1e-10


def test_game_optimal_default_tolerance() -> None:
    """``CooperativeMarkovGame.optimal`` runs value iteration to ``tol = 1e-10``: on a
    one-state game with reward 1 at ``gamma = 0.99`` (``V* = 100``, value iteration's error
    ``0.99^k * 100`` exactly) the default meets ``1e-10`` and ``1e-8`` does not."""
    game = CooperativeMarkovGame(np.ones((1, 2, 1)), np.array([[1.0, 0.5]]), np.ones(1), 0.99)
    exact = Fraction(1) / (1 - Fraction(0.99))
    default = game.optimal()
    assert float(abs(Fraction(float(default.V[0])) - exact)) <= 1e-10
    loose = game.optimal(tol=1e-8)
    assert float(abs(Fraction(float(loose.V[0])) - exact)) > 1e-10
