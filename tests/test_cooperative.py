"""Cooperative Markov games: validation, J* by two routes, localized Q by two routes, the
advantage decomposition and the multi-agent performance difference lemma
(SPEC section 5; proofs_notes/ma-pdl.md)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reference.cooperative import (
    ConditionalPolicy,
    CooperativeMarkovGame,
    evaluate_game,
    joint_advantage_sum,
    localized_q_forward,
    multi_agent_pdl,
    random_game,
)
from reference.errors import ModelError, PolicyError
from reference.instances import RATIO_R, RATIO_S, climbing, ratio
from reference.tabular import policy_iteration, value_iteration
from verify import strategies as mst
from verify.tolerances import certified, summation_tolerance

PDL_TOLERANCE = 1e-10
"""The issue's stated agreement for the multi-agent PDL (well above the derived rounding of
two LU solves on these sizes, ``linear_solve_tolerance(27, 0.9, 10) ~ 2e-12``)."""


@given(mst.cooperative_games())
def test_value_iteration_and_policy_iteration_agree(game: CooperativeMarkovGame) -> None:
    vi = value_iteration(game.tabular, tol=1e-9)
    pi = policy_iteration(game.tabular)
    assert vi.error_bound <= 1e-9
    assert abs(vi.J - pi.J) <= certified(vi.error_bound, pi.error_bound)
    np.testing.assert_array_less(
        np.abs(vi.V - pi.V), certified(vi.error_bound, pi.error_bound) + 1e-300
    )


@given(mst.game_problems())
def test_localized_q_backward_equals_forward(problem: mst.GameProblem) -> None:
    game, pi = problem.game, problem.pi
    vals = evaluate_game(game, pi)
    forward = localized_q_forward(game, pi, vals.Q)
    scale = 1.0 / (1 - game.gamma)
    for m, (back, fwd) in enumerate(zip(vals.localized, forward, strict=True)):
        tol = summation_tolerance(game.n_joint_actions, scale)
        np.testing.assert_allclose(back, fwd, rtol=0, atol=tol, err_msg=f"agent {m}")
    # Q^{0:-1} = V closes the recursion
    v_back = np.sum(pi.conditionals[0] * vals.localized[0], axis=-1)
    np.testing.assert_allclose(
        v_back, vals.V, rtol=0, atol=summation_tolerance(game.n_joint_actions, scale)
        + vals.error_bound * (1 + game.gamma)
    )


@given(mst.game_problems())
def test_advantage_decomposition_pointwise(problem: mst.GameProblem) -> None:
    vals = evaluate_game(problem.game, problem.pi)
    joint_adv = vals.Q - vals.V.reshape((-1,) + (1,) * problem.game.n_agents)
    scale = 1.0 / (1 - problem.game.gamma)
    tol = summation_tolerance(problem.game.n_joint_actions, scale) + 2 * vals.error_bound
    np.testing.assert_allclose(joint_advantage_sum(vals), joint_adv, rtol=0, atol=tol)


@given(mst.game_problems())
def test_multi_agent_pdl(problem: mst.GameProblem) -> None:
    pdl = multi_agent_pdl(problem.game, problem.pi, problem.pi_other)
    assert abs(pdl.total - pdl.difference) <= PDL_TOLERANCE
    assert abs(pdl.joint - pdl.difference) <= PDL_TOLERANCE
    assert pdl.terms.shape == (problem.game.n_agents,)


def test_pdl_catches_a_wrong_agent_order() -> None:
    """Planted bug: weighting agent 1's term by the *old* policy's earlier actions (instead
    of the new one's) breaks the identity on a game where agent 0's change matters."""
    game = random_game(np.random.default_rng(3), 2, (2, 2), 0.8)
    rng = np.random.default_rng(4)
    pi = ConditionalPolicy(
        game, tuple(rng.dirichlet(np.ones(2), size=c.shape[:-1]) for c in
                    ConditionalPolicy.uniform(game).conditionals)
    )
    pi_new = ConditionalPolicy(
        game, tuple(rng.dirichlet(np.ones(2), size=c.shape[:-1]) for c in pi.conditionals)
    )
    pdl = multi_agent_pdl(game, pi, pi_new)
    old, new = evaluate_game(game, pi), evaluate_game(game, pi_new)
    w_wrong = new.nu[:, None] * pi.conditionals[0]
    wrong_term1 = float(
        np.sum(w_wrong[..., None] * old.localized[1] * (pi_new.conditionals[1] - pi.conditionals[1]))
    ) / (1 - game.gamma)
    wrong_total = pdl.terms[0] + wrong_term1
    assert abs(pdl.total - pdl.difference) <= PDL_TOLERANCE
    assert abs(wrong_total - pdl.difference) > 100 * PDL_TOLERANCE


def test_climbing_game_values() -> None:
    # payoff (11 at (0,0)) rescaled by (x + 30)/41 to r = 1, J* = 1/(1 - gamma)
    game = climbing()
    opt = game.optimal()
    assert abs(opt.J - 10.0) <= opt.error_bound
    assert int(opt.greedy[0]) == 0  # joint action (0, 0)
    assert game.r.min() == 0.0 and game.r.max() == 1.0


@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.sampled_from([0.9, 0.95, 0.99]))
def test_ratio_game_value_is_affine_in_the_ratio(x0: float, y0: float, gamma: float) -> None:
    """For any product policy ``(x, y)``: ``V(play) = (2/3) x^T R y / x^T S y + (1/3)/(1-gamma)``
    (proofs_notes/mappo-bound.md#ratio)."""
    game = ratio(gamma)
    x, y = np.array([x0, 1 - x0]), np.array([y0, 1 - y0])
    pi = ConditionalPolicy.from_product(game, (np.tile(x, (2, 1)), np.tile(y, (2, 1))))
    vals = evaluate_game(game, pi)
    R, S = np.asarray(RATIO_R), np.asarray(RATIO_S)
    expected = (2 / 3) * (x @ R @ y) / (x @ S @ y) + (1 / 3) / (1 - gamma)
    assert abs(vals.V[0] - expected) <= vals.error_bound + summation_tolerance(4, 1 / (1 - gamma))


def test_ratio_game_pure_action_values() -> None:
    # R/S for the stationary pure policies: (0,0) 1, (0,1) 0.5, (1,0) -5, (1,1) 0 (SPEC §7)
    game = ratio()
    expected = {(0, 0): 1.0, (0, 1): 0.5, (1, 0): -5.0, (1, 1): 0.0}
    for (i, j), value in expected.items():
        x, y = np.eye(2)[i], np.eye(2)[j]
        pi = ConditionalPolicy.from_product(game, (np.tile(x, (2, 1)), np.tile(y, (2, 1))))
        vals = evaluate_game(game, pi)
        ratio_value = (vals.V[0] - (1 / 3) / (1 - game.gamma)) * 3 / 2
        assert abs(ratio_value - value) <= 1.5 * vals.error_bound + summation_tolerance(4, 10)
    opt = game.optimal()
    assert int(opt.greedy[0]) == 0
    assert abs(opt.J - 4.0) <= opt.error_bound  # (2/3) * 1 + (1/3) * 10


def test_ratio_game_needs_gamma_at_least_point_nine() -> None:
    with pytest.raises(ModelError, match=r"gamma = 0\.5"):
        ratio(0.5)


@pytest.mark.parametrize(
    ("P", "r", "message"),
    [
        (np.full((1, 2, 1), 1.0), np.array([[0.5, 1.5]]), r"r\[s=0, a=\(1,\)\] = 1.5"),
        (np.full((1, 2, 1), 0.9), np.array([[0.5, 0.5]]), r"P\[s=0, a=\(0,\)\] sums to 0.9"),
        (np.full((2, 2, 1), 1.0), np.zeros((2, 2)), "first and last axes"),
        (np.full((1, 2, 1), 1.0), np.zeros((1, 3)), r"r has shape \(1, 3\)"),
    ],
)
def test_bad_games_name_the_entry(P: np.ndarray, r: np.ndarray, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        CooperativeMarkovGame(P, r, np.ones(P.shape[0]) / P.shape[0], 0.9)


def test_bad_conditional_names_the_agent_and_context() -> None:
    game = random_game(np.random.default_rng(0), 2, (2, 3), 0.5)
    conds = list(ConditionalPolicy.uniform(game).conditionals)
    bad = conds[1].copy()
    bad[1, 0] = [0.5, 0.5, 0.5]
    with pytest.raises(PolicyError, match=r"pi\^1\[s=1, a\^\(0:m-1\)=\(0,\)\] sums to 1.5"):
        ConditionalPolicy(game, (conds[0], bad))


def test_joint_action_order_is_agent_zero_major() -> None:
    game = random_game(np.random.default_rng(1), 2, (2, 3), 0.5)
    flat = game.tabular
    np.testing.assert_array_equal(flat.r[1, 1 * 3 + 2], game.r[1, 1, 2])
    np.testing.assert_array_equal(flat.P[0, 1 * 3 + 0], game.P[0, 1, 0])


def test_bad_features_and_parameters_name_the_entry() -> None:
    from reference.cooperative import DenseFeatures, IndicatorFeatures, LogLinearPolicy

    game = random_game(np.random.default_rng(2), 2, (2, 2), 0.5)
    arrays = [np.full((2, 2, 1), 0.5), np.full((2, 2, 2, 3), 0.1)]
    arrays[1][1, 0, 1] = [1.0, 1.0, 0.0]
    with pytest.raises(PolicyError, match=r"\|\|phi\^1\[s=1, a=\(0, 1\)\]\|\| = 1.414"):
        DenseFeatures(game, tuple(arrays))
    with pytest.raises(PolicyError, match=r"\|\|theta\^0\|\| = 5.0 exceeds the radius R = 1"):
        LogLinearPolicy(IndicatorFeatures.one_hot(game), (np.array([3.0, 4, 0, 0]), np.zeros(8)),
                        radius=1.0)
    with pytest.raises(PolicyError, match="expected one per agent"):
        ConditionalPolicy(game, ConditionalPolicy.uniform(game).conditionals[:1])
