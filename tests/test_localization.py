"""The best localized policy and the price of localization (proofs_notes/optimum.md#localized)."""

from __future__ import annotations

import numpy as np
import pytest

from reference.errors import ModelError
from reference.instances import INSTANCES, line_message, line_message_mixed, mixed_roles
from reference.networked import (
    ConstraintPenaltyUtility,
    EntropyUtility,
    Graph,
    LinearUtility,
    LocalizedSoftmaxPolicy,
    NetworkedMDP,
    Utility,
    objective,
    optimum,
)
from reference.networked.localization import best_localized, gradient_ascent
from verify.tolerances import summation_tolerance


@pytest.mark.parametrize("kind", ["linear", "entropy"])
def test_localized_value_below_optimum(kind: str) -> None:
    """``F(theta) <= F_loc(beta) <= F*`` for every beta; ascent never lowers ``F``."""
    inst = line_message(3)
    m, utils = inst.model, inst.utilities(kind)
    opt = optimum(m, utils, gap=1e-9)
    slack = summation_tolerance(m.states.size * m.actions.size, 10.0)
    rng = np.random.default_rng(0)
    for beta in range(m.graph.diameter + 1):
        loc = best_localized(m, utils, beta, rng, starts=2, iterations=15)
        assert loc.value <= opt.upper_bound + slack
        assert loc.value >= loc.initial_value - slack
        assert (loc.start_values <= loc.value + slack).all()
        assert loc.equals_optimum == (kind == "linear" and beta >= m.graph.diameter)
        assert loc.gradient_norm >= 0


def test_ascent_reaches_linear_optimum_with_full_observation() -> None:
    """Linear utilities, beta = diameter: F_loc = F* (proofs_notes/optimum.md#localized); the
    ascent's value approaches it, and stationarity shrinks along the way."""
    inst = line_message(2)
    m, utils = inst.model, inst.utilities("linear")
    opt = optimum(m, utils, gap=1e-12)
    start = LocalizedSoftmaxPolicy.uniform(m, m.graph.diameter)
    short = gradient_ascent(m, start, utils, iterations=5)
    long = gradient_ascent(m, start, utils, iterations=60)
    assert opt.value - long.value < opt.value - short.value
    assert long.value <= opt.upper_bound
    assert long.gradient_norm < short.gradient_norm


def test_ascent_bad_arguments() -> None:
    inst = line_message(2)
    pol = LocalizedSoftmaxPolicy.uniform(inst.model)
    utils = inst.utilities("linear")
    with pytest.raises(ModelError, match="iterations"):
        gradient_ascent(inst.model, pol, utils, iterations=-1)
    with pytest.raises(ModelError, match="step"):
        gradient_ascent(inst.model, pol, utils, step=0.0)
    with pytest.raises(ModelError, match="starts"):
        best_localized(inst.model, utils, 0, np.random.default_rng(0), starts=0)


def test_mixed_instance_roles() -> None:
    """Heterogeneous instances give each agent its role's utility."""
    inst = line_message_mixed(5)
    utils = inst.utilities("mixed")
    assert mixed_roles(5) == ("worker", "explorer", "worker", "explorer", "constrained")
    assert [type(u) for u in utils] == [
        LinearUtility,
        EntropyUtility,
        LinearUtility,
        EntropyUtility,
        ConstraintPenaltyUtility,
    ]
    assert all(u.constants.concave for u in utils)
    pol = LocalizedSoftmaxPolicy.uniform(inst.model)
    assert np.isfinite(objective(inst.model, pol, utils))
    assert INSTANCES["wireless-mixed"](3).utilities("mixed")[1].name == "EntropyUtility"
    with pytest.raises(ModelError, match="no agent roles"):
        line_message(3).utilities("mixed")
    with pytest.raises(ModelError, match="n >= 2"):
        mixed_roles(1)


def test_communication_cost_by_hand() -> None:
    """Star of n agents: at kappa = 1 the centre hears n - 1 leaves and each leaf the centre,
    ``2 (n - 1)`` messages; at kappa = 2 everyone hears everyone, ``n (n - 1)``."""
    from verify.experiments import communication_cost

    n = 5
    graph = Graph.star(n)
    kernels = [np.full((2,) * len(graph.neighbourhood(i)) + (1, 2), 0.5) for i in range(n)]
    model = NetworkedMDP(
        graph,
        (2,) * n,
        (1,) * n,
        tuple(kernels),
        0.9,
        tuple(np.array([1.0, 0.0]) for _ in range(n)),
    )
    assert communication_cost(model, 0) == (0, 0)
    assert communication_cost(model, 1) == (2 * (n - 1), 6 * (n - 1))
    assert communication_cost(model, 2) == (n * (n - 1), 3 * n * (n - 1))


def _copy_pair() -> tuple[NetworkedMDP, tuple[Utility, ...]]:
    """proofs_notes/optimum.md#full-observation: agents 0 and 1 copy their actions into their
    states, agent 2 (joined to both) records whether they agree; explorers 0 and 1, worker 2."""
    g = 0.9
    graph = Graph.from_edges(3, [(0, 2), (1, 2)])
    P0 = np.zeros((2, 2, 2, 2))
    P1 = np.zeros((2, 2, 2, 2))
    for a in (0, 1):
        P0[:, :, a, a] = 1.0
        P1[:, :, a, a] = 1.0
    P2 = np.zeros((2, 2, 2, 1, 2))
    for s0 in (0, 1):
        for s1 in (0, 1):
            P2[s0, s1, :, 0, int(s0 == s1)] = 1.0
    model = NetworkedMDP(
        graph, (2, 2, 2), (2, 2, 1), (P0, P1, P2), g, tuple(np.array([0.0, 1.0]) for _ in range(3))
    )
    utils = (
        EntropyUtility((2, 2), g),
        EntropyUtility((2, 2), g),
        LinearUtility(np.array([[0.0], [1.0]]), g),
    )
    return model, utils


def test_full_observation_does_not_reach_f_star_for_entropy() -> None:
    """The counterexample of proofs_notes/optimum.md#full-observation: F* = (2 H* + 1/(1-gamma))/3
    (every agent at its own maximum, H* = -log(1/2 + eps)), attained only by a policy that
    correlates agents 0 and 1 (the optimum mixes joint actions (0, 0) and (1, 1) at one
    state); product policies observing everything stay strictly below, and so does the ascent.
    The gap is small: the radius-0 policy a_i = 1 - s_i keeps agents 0 and 1 in step and puts
    1/(1+gamma) of the discounted mass on state 1, within 9.24e-4 of F*."""
    import math

    model, utils = _copy_pair()
    opt = optimum(model, utils, gap=1e-10)
    hand = (2 * -math.log(0.5 + 1e-3) + 1 / (1 - 0.9)) / 3
    slack = summation_tolerance(64, 10.0)
    assert opt.value - slack <= hand <= opt.upper_bound + slack
    mixed_states = [
        s
        for s in range(8)
        if np.count_nonzero(opt.policy.probs[s] > 1e-9) >= 2
        and len(set(opt.policy.support[s][opt.policy.probs[s] > 1e-9].tolist())) >= 2
    ]
    assert mixed_states  # a correlated mixture over joint actions is needed
    for s in mixed_states:
        acts = set(opt.policy.support[s][opt.policy.probs[s] > 1e-9].tolist())
        assert acts <= {0, 3}  # joint actions (0, 0) and (1, 1): agreeing, never independent
    loc = best_localized(
        model,
        utils,
        model.graph.diameter,
        np.random.default_rng(0),
        starts=2,
        iterations=100,
    )
    assert not loc.equals_optimum
    assert loc.value < opt.value - 1e3 * opt.duality_gap
    # the alternating witness, at radius 0 (so F_loc(beta) >= its value for every beta)
    big = 40.0  # exp(-80) is far below float64 rounding of a probability
    flip = np.array([[-big, big], [big, -big]])
    witness = objective(
        model, LocalizedSoftmaxPolicy(model, 0, (flip, flip, np.zeros((2, 1)))), utils
    )
    p1 = 1 / (1 + 0.9)
    h = -(p1 * math.log(p1 + 1e-3) + (1 - p1) * math.log(1 - p1 + 1e-3))
    assert witness == pytest.approx((2 * h + 1 / (1 - 0.9)) / 3, rel=0, abs=slack)
    assert opt.upper_bound - 9.24e-4 < witness < opt.value - 1e3 * opt.duality_gap
