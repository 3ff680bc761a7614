"""Named instances (SPEC section 7) against values derived by hand."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from reference.errors import ModelError
from reference.instances import line_message, wireless
from reference.networked import LocalizedSoftmaxPolicy, decay_profile, solve
from verify.tolerances import summation_tolerance


def test_wireless_single_user_by_hand() -> None:
    """One user, deadline 1: the queue at t >= 1 holds the last arrival (prob 1/2), the
    uniform policy sends with prob 4/5, success 0.8, and the reward f_t = 1 records a success
    at t - 1; so F = sum_{t>=2} gamma^t 0.5 * 0.8 * 0.8 = 0.32 gamma^2 / (1 - gamma)."""
    inst = wireless(1, 1, deadline=1)
    sol = solve(inst.model, LocalizedSoftmaxPolicy.uniform(inst.model), inst.utilities())
    expected = 0.32 * 0.9**2 / 0.1
    assert abs(sol.objective - expected) <= sol.occupancy_error_bound + summation_tolerance(
        16, 10.0
    )


def test_wireless_collisions_by_hand() -> None:
    """Two users in a row share two of their four access points; a neighbour with a packet
    (prob 1/2) contends for each of its points with prob 1/5.  A send succeeds with prob
    (1/4)(2 * 0.8 + 2 * 0.8 * (1 - 0.5/5)) = 0.76, so per user
    F_i = 0.5 * (4/5) * 0.76 * gamma^2/(1 - gamma) = 0.304 * 8.1 = 2.4624."""
    inst = wireless(1, 2, deadline=1)
    sol = solve(inst.model, LocalizedSoftmaxPolicy.uniform(inst.model), inst.utilities())
    assert inst.model.graph.edges == ((0, 1),)
    tol = sol.occupancy_error_bound + summation_tolerance(16 * 25, 10.0)
    np.testing.assert_allclose(sol.local_utility, [2.4624, 2.4624], rtol=0, atol=tol)


def test_wireless_graph_is_kings_move() -> None:
    """Users sharing a corner access point are neighbours: diagonal users included."""
    assert wireless(2, 2).model.graph.edges == ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
    assert wireless(1, 3).model.graph.diameter == 2


def test_wireless_decay_bound_holds() -> None:
    inst = wireless(1, 3)
    pol = LocalizedSoftmaxPolicy.random(inst.model, 1, np.random.default_rng(7))
    sol = solve(inst.model, pol, inst.utilities("entropy"))
    prof = decay_profile(inst.model, pol, sol)
    assert np.all(prof.spread <= prof.bound + 4 * sol.value_error_bound)


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: wireless(0, 2), "rows = 0"),
        (lambda: wireless(1, 2, deadline=0), "deadline = 0"),
        (lambda: wireless(1, 2, success=1.5), "success = 1.5"),
        (lambda: line_message(1), "n = 1"),
    ],
)
def test_instance_arguments(call: Callable[[], object], fragment: str) -> None:
    with pytest.raises(ModelError, match=fragment):
        call()
