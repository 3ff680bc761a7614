"""Pinned schedules, defaults and domains of the sampled networked algorithm and the
utilities, each on an instance where a wrong constant shows (SPEC section 4;
proofs_notes/algorithm1.md, proofs_notes/certificates.md).

* TD(0)'s step ``min(1, h c_z / (N_z + c_z + t0))`` on a hand-computed buffer.
* The geometric-time gradient estimator is unbiased: on a one-agent instance whose
  estimate is a mean of two-valued samples, the Hoeffding radius at ``delta = 1e-9`` is a
  quarter of what a missing ``1/(1-gamma)`` would shift the mean by.
* Replay TD's default tolerance ``1e-10`` is met against a dense solve, and ``1e-8`` is not.
* The entropy utility's domain ``p + eps > 0`` excludes its boundary ``p = -eps``.
"""

from __future__ import annotations

import numpy as np
import pytest

from reference.errors import UtilityDomainError
from reference.networked import (
    EntropyUtility,
    Graph,
    LocalizedSoftmaxPolicy,
    NetworkedMDP,
)
from reference.networked.algorithm import (
    CriticTable,
    gradient_estimate,
    gradient_estimate_expectation,
    replay_td_critic,
    sample_transitions,
    td_critic,
)
from reference.networked.sampling import Trajectories
from reference.networked.truncation import hop_codes
from verify.bounds import hoeffding_radius
from verify.tolerances import linear_solve_tolerance


def _one_agent(gamma: float) -> NetworkedMDP:
    """One agent, two states, two actions; action ``a`` moves to state ``a`` with
    probability 0.75."""
    kernel = np.zeros((2, 2, 2))
    kernel[:, 0] = [0.75, 0.25]
    kernel[:, 1] = [0.25, 0.75]
    return NetworkedMDP(Graph.line(1), (2,), (2,), (kernel,), gamma, (np.array([0.5, 0.5]),))


# ------------------------------------------------------------------ TD(0) step schedule
def test_td_step_counts_the_current_batch() -> None:
    """Two trajectories at ``z = 0`` at ``t = 0``, one at ``z = 3``; rewards ``r(0, 0) = 1``,
    ``r(1, 1) = 2``, zero elsewhere; ``h = 1``, ``t0 = 3``, ``gamma = 0.5``; ``H = 2`` actions,
    so one update round (``t = 0``).  Entry 0 has ``N = 0``, ``c = 2``, mean TD error ``1``
    (the next entries are still 0): step ``2/(0 + 2 + 3) = 0.4``; entry 3 has ``c = 1``, TD
    error ``2``: step ``1/(0 + 1 + 3)``, so ``q(3) = 0.5``.  A step that ignored the current
    batch, ``h c/(N + t0)``, would give ``q(0) = 2/3``."""
    model = _one_agent(0.5)
    states = np.array([[[0], [0], [1]], [[0], [1], [1]], [[1], [1], [1]]])  # (B=3, H+1=3, 1)
    actions = np.array([[[0], [1]], [[0], [1]], [[1], [1]]])  # (3, 2, 1)
    traj = Trajectories(states, actions, 0.5)
    reward = np.array([[1.0, 0.0], [0.0, 2.0]])
    (critic,) = td_critic(model, traj, (reward,), 0, step_scale=1.0, step_offset=3.0)
    # z = s * 2 + a; t = 0: z = (0, 0, 3) -> next z = (0, 3, 3)
    q0 = 0.4 * 1.0
    q3 = 0.25 * 2.0
    np.testing.assert_allclose(critic.table, [q0, 0.0, 0.0, q3], rtol=1e-15)
    np.testing.assert_array_equal(critic.counts, [2.0, 0.0, 0.0, 1.0])


# ------------------------------------------------------------------ geometric estimator
def test_geometric_gradient_estimator_is_unbiased() -> None:
    """One agent, ``gamma = 0.5``, uniform policy, critic ``Q(s, a) = 1[a = 0]``.  The sum over
    observations of the estimate's ``[o, a=0]`` entries is a mean of per-trajectory samples
    ``1[a_T = 0] (1 - pi(0|s_T)) / (1 - gamma)`` in ``{0, 1}``, with mean ``0.5`` (exact
    expectation below).  Hoeffding at ``delta = 1e-9`` with ``B = 2000`` gives radius
    ``0.073``; an estimator missing its ``1/(1-gamma)`` has mean ``0.25``, and one scaled by
    ``gamma^T`` less still."""
    model = _one_agent(0.5)
    policy = LocalizedSoftmaxPolicy(model, 0, (np.zeros((2, 2)),))
    critic = CriticTable(0, 0, (0,), np.array([1.0, 0.0, 1.0, 0.0]), np.ones(4), "exact")
    expected = gradient_estimate_expectation(model, policy, (critic,), 0, None)
    mean = float(np.sum(expected[0][:, 0]))
    assert mean == pytest.approx(0.5, rel=1e-12)
    batch = 2000
    est = gradient_estimate(model, policy, (critic,), 0, batch, np.random.default_rng(3), None)
    radius = hoeffding_radius(batch, 1.0, 1e-9)
    assert radius < 0.1
    assert abs(float(np.sum(est.gradient[0][:, 0])) - mean) <= radius


# ------------------------------------------------------------------ replay TD default
def _replay_instance(gamma: float) -> tuple[NetworkedMDP, object, np.ndarray, np.ndarray,
                                            np.ndarray, float]:
    """A replay buffer of 400 transitions, and the dense solve of its empirical Bellman
    equation on the visited entries (with that solve's error bound)."""
    model = _one_agent(gamma)
    policy = LocalizedSoftmaxPolicy(model, 0, (np.array([[0.3, -0.3], [-0.2, 0.2]]),))
    reward = np.array([[1.0, 0.5], [0.25, 0.75]])
    buf = sample_transitions(model, policy, 400, 30, np.random.default_rng(4))
    z = hop_codes(model, (0,), buf.states, buf.actions)
    z_next = hop_codes(model, (0,), buf.next_states, buf.next_actions)
    counts = np.bincount(z, minlength=4).astype(float)
    live = np.flatnonzero(counts > 0)
    P_hat = np.zeros((4, 4))
    np.add.at(P_hat, (z, z_next), 1.0)
    P_hat = P_hat[np.ix_(live, live)] / counts[live, None]
    r = reward[buf.states[:, 0], buf.actions[:, 0]]
    r_hat = np.bincount(z, weights=r, minlength=4)[live] / counts[live]
    dense = np.linalg.solve(np.eye(live.size) - model.gamma * P_hat, r_hat)
    solve_err = linear_solve_tolerance(live.size, model.gamma, 1.0 / (1 - model.gamma))
    return model, buf, reward, live, dense, solve_err


@pytest.mark.parametrize("gamma", [0.9, 0.99])
def test_replay_td_certificate_is_attained(gamma: float) -> None:
    """Stopped at ``tol = 0.01``: the sweeps from 0 with positive rewards fall short of the
    fixed point by nearly ``gamma ||q_k - q_{k-1}|| / (1 - gamma)`` (the empirical kernel's
    rows sum to 1), so ``true <= fixed_point_error <= (1 + 1e-4) true`` up to the dense
    solve's error."""
    model, buf, reward, live, dense, solve_err = _replay_instance(gamma)
    (critic,) = replay_td_critic(model, buf, (reward,), 0, tol=1e-2)  # type: ignore[arg-type]
    true = float(np.max(np.abs(critic.table[live] - dense)))
    assert true > 1e-3
    assert true <= critic.fixed_point_error + solve_err
    assert critic.fixed_point_error <= (1 + 1e-4) * true + solve_err


def test_replay_td_default_tolerance() -> None:
    """At ``gamma = 0.99`` with positive rewards the sweeps' certified error is nearly
    attained: the default ``tol = 1e-10`` leaves the table within ``1e-10`` of the dense
    solve of the empirical Bellman equation (plus that solve's own error), and ``1e-8``
    leaves it further than ``1e-10``."""
    model, buf, reward, live, dense, solve_err = _replay_instance(0.99)
    (default,) = replay_td_critic(model, buf, (reward,), 0)  # type: ignore[arg-type]
    gap = float(np.max(np.abs(default.table[live] - dense)))
    assert gap <= 1e-10 + solve_err
    (loose,) = replay_td_critic(model, buf, (reward,), 0, tol=1e-8)  # type: ignore[arg-type]
    assert float(np.max(np.abs(loose.table[live] - dense))) > 1e-10 + solve_err


# ------------------------------------------------------------------ entropy domain
def test_entropy_domain_excludes_its_boundary() -> None:
    """``f(lam) = -sum_s p log(p + eps)`` needs ``p + eps > 0``: at ``p = -eps`` exactly
    (``(1 - gamma) lam = -eps`` with ``gamma = 0.5``) the logarithm is ``-inf``; the value
    and gradient are refused with the entry named, and just inside the domain accepted."""
    f = EntropyUtility((2, 2), 0.5, eps=1e-3)
    lam = np.array([[-2e-3, 0.0], [1.0, 1.002]])
    with pytest.raises(UtilityDomainError, match="p"):
        f.value(lam)
    with pytest.raises(UtilityDomainError):
        f.gradient(lam)
    inside = lam.copy()
    inside[0, 0] = -1.99e-3
    assert np.isfinite(f.value(inside))
    assert np.all(np.isfinite(f.gradient(inside)))
