"""The vectorised sampler (reference.networked.sampling; SPEC sections 2 and 4) against the
exact law of the joint chain.

Every statistical check compares an empirical distribution ``p_hat`` of ``B`` i.i.d. draws
on a finite set with the exact ``p`` computed on the joint system (``rho``,
``policy.joint_matrix()``, ``model.joint_kernel()``) or from local factors, with the l1
radius of ``verify.bounds.l1_radius`` (``L = 1``, one-hot draws)::

    P( ||p_hat - p||_1 >= sqrt(m / B) + t ) <= exp(-B t^2 / 2)

``E||p_hat - p||_1 <= sum_k sqrt(p_k (1 - p_k) / B) <= sqrt(m / B)`` by Cauchy-Schwarz, and
replacing one draw moves ``||p_hat - p||_1`` by at most ``2 / B``, so McDiarmid's
(bounded-differences) inequality gives the tail; ``t = sqrt(2 log(1/delta) / B)``.  ``m``
is the number of outcomes with positive exact probability: a correct sampler puts no mass
elsewhere, so the sum runs over the support only (an incorrect one that does put mass
elsewhere only makes ``||p_hat - p||_1`` larger).

False alarms: each statistical test example uses ``delta = 1e-9`` in total, split by the
union bound (``verify.bounds.split_delta``) over the checks it makes; with Hypothesis'
``ci`` profile (40 examples) and the fixed-instance tests the whole file raises a false
alarm with probability below ``5 * 40 * 1e-9 + 3e-9 < 3e-7``.  The planted-bug test shows
the one-step check has power against a wrong agent order.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from reference.errors import ModelError
from reference.networked.graph import Graph
from reference.networked.model import NetworkedMDP
from reference.networked.policy import LocalizedSoftmaxPolicy
from reference.networked.sampling import (
    Sampler,
    Trajectories,
    _thresholds,
    geometric_horizons,
    rollout,
    sample_initial,
)
from verify import strategies as mst
from verify.bounds import l1_radius, split_delta

DELTA = 1e-9  # failure probability per test example (STYLE item 10)


# ---------------------------------------------------------------------------- helpers
def joint_codes(values: np.ndarray, sizes: tuple[int, ...]) -> np.ndarray:
    """Joint index of the rows of ``values`` (..., n), agent 0 most significant (SPEC 0)."""
    return np.asarray(np.ravel_multi_index(tuple(np.moveaxis(values, -1, 0)), sizes))


def l1_error(codes: np.ndarray, exact: np.ndarray) -> float:
    """``||p_hat - p||_1`` for the empirical law of integer ``codes`` in ``0..exact.size-1``."""
    counts = np.bincount(codes.reshape(-1), minlength=exact.size)
    assert counts.size == exact.size, "a sampled code lies outside the outcome space"
    return float(np.abs(counts / codes.size - exact.reshape(-1)).sum())


def support(p: np.ndarray) -> int:
    return int(np.count_nonzero(p))


def ring_model(
    n: int,
    rng: np.random.Generator,
    states: tuple[int, ...] = (2,),
    actions: tuple[int, ...] = (2,),
) -> NetworkedMDP:
    """A ring with local sizes drawn from ``states``/``actions``, Dirichlet(1) rows and a
    product ``rho`` with Dirichlet(1) factors."""
    g = Graph.ring(n)
    n_states = tuple(int(x) for x in rng.choice(states, size=n))
    n_actions = tuple(int(x) for x in rng.choice(actions, size=n))
    return NetworkedMDP.random(g, n_states, n_actions, rng)


def one_step_law(model: NetworkedMDP, policy: LocalizedSoftmaxPolicy) -> np.ndarray:
    """Exact ``L[s, a, s'] = rho(s) pi(a|s) P(s'|s, a)`` on the joint system."""
    return (
        model.joint_rho()[:, None, None] * policy.joint_matrix()[:, :, None] * model.joint_kernel()
    )


def one_step_codes(model: NetworkedMDP, traj: Trajectories) -> np.ndarray:
    nS, nA = model.states.size, model.actions.size
    s0 = joint_codes(traj.states[:, 0], model.n_states)
    a0 = joint_codes(traj.actions[:, 0], model.n_actions)
    s1 = joint_codes(traj.states[:, 1], model.n_states)
    return np.asarray((s0 * nA + a0) * nS + s1)


# ---------------------------------------------------------------------------- exact laws
@given(
    model=mst.networked_mdps(max_agents=3, max_joint_states=8),
    data=st.data(),
    seed=mst.seeds(),
)
def test_one_step_joint_law(model: NetworkedMDP, data: st.DataObject, seed: int) -> None:
    """(s^0, a^0, s^1) ~ rho(s) pi(a|s) P(s'|s, a) (SPEC sections 1-2), joint law in l1."""
    policy = data.draw(mst.localized_policies(model))
    batch = 200_000
    traj = rollout(model, policy, batch, 1, np.random.default_rng(seed))
    exact = one_step_law(model, policy)
    err = l1_error(one_step_codes(model, traj), exact)
    radius = l1_radius(batch, support(exact), 1.0, DELTA)
    assert err <= radius, (err, radius)


def test_one_step_check_catches_wrong_agent_order() -> None:
    """Planted bug (STYLE item 13): a sampler that reads s_{N_i} in reversed agent order,
    emulated by sampling a model whose kernels have their neighbourhood axes reversed.
    The exact law of that mutant is more than 2 radii from the true one, so with
    probability >= 1 - 1e-9 the check above rejects it."""
    rng = np.random.default_rng(20230207)
    g = Graph.line(3)
    kernels = [
        rng.dirichlet(np.full(2, 0.3), size=(2 ** len(g.neighbourhood(i)), 2)) for i in range(3)
    ]
    rho = tuple(rng.dirichlet(np.ones(2)) for _ in range(3))
    model = NetworkedMDP(g, (2, 2, 2), (2, 2, 2), tuple(kernels), 0.9, rho)

    def reversed_order(i: int, k: np.ndarray) -> np.ndarray:
        width = len(g.neighbourhood(i))
        shaped = k.reshape((2,) * width + (2, 2))
        axes = (*reversed(range(width)), width, width + 1)
        return shaped.transpose(axes).reshape(k.shape)

    mutant = NetworkedMDP(
        g,
        (2, 2, 2),
        (2, 2, 2),
        tuple(reversed_order(i, k) for i, k in enumerate(kernels)),
        0.9,
        rho,
    )
    policy = LocalizedSoftmaxPolicy.random(model, 1, rng)
    mutant_policy = LocalizedSoftmaxPolicy(mutant, 1, policy.theta)
    batch = 200_000
    exact = one_step_law(model, policy)
    radius = l1_radius(batch, exact.size, 1.0, DELTA)  # full outcome count: any m is valid
    gap = float(np.abs(one_step_law(mutant, mutant_policy) - exact).sum())
    assert gap > 2 * radius, (gap, radius)  # the instance is a fair test of the check
    traj = rollout(mutant, mutant_policy, batch, 1, rng)
    assert l1_error(one_step_codes(model, traj), exact) > radius


@given(
    model=mst.networked_mdps(max_agents=4, max_joint_states=32),
    data=st.data(),
    seed=mst.seeds(),
)
def test_t_step_state_marginal(model: NetworkedMDP, data: st.DataObject, seed: int) -> None:
    """s^t ~ rho^T P_pi^t for t = 0..H (SPEC section 1), ``P_pi = sum_a pi P`` dense."""
    policy = data.draw(mst.localized_policies(model))
    batch, horizon = 20_000, 4
    traj = rollout(model, policy, batch, horizon, np.random.default_rng(seed))
    P_pi = np.einsum("sa,sat->st", policy.joint_matrix(), model.joint_kernel())
    mu = model.joint_rho()
    delta = split_delta(DELTA, horizon + 1)
    for t in range(horizon + 1):
        err = l1_error(joint_codes(traj.states[:, t], model.n_states), mu)
        radius = l1_radius(batch, support(mu), 1.0, delta)
        assert err <= radius, (t, err, radius)
        mu = mu @ P_pi


@pytest.mark.parametrize("beta", [0, 1])
def test_local_laws_on_a_large_heterogeneous_ring(beta: int) -> None:
    """For every agent of a ring of 60 agents with 2-3 states and actions each, the law of
    ``(s^0_{N_i}, a^0_i, s^1_i)`` is ``prod_{j in N_i} rho_j(s_j) pi_i(a_i|o_i) P_i(s'_i|s_{N_i}, a_i)``
    (product rho, ``N_i^beta`` inside ``N_i`` for beta <= 1).  Codes are formed here with
    ``numpy.ravel_multi_index``, independently of the sampler's radix matrices; agent 0's
    neighbourhood ``(0, 1, 59)`` exercises the wrap-around order."""
    rng = np.random.default_rng(4 + beta)
    n, batch = 60, 40_000
    model = ring_model(n, rng, states=(2, 3), actions=(2, 3))
    policy = LocalizedSoftmaxPolicy.random(model, beta, rng)
    traj = rollout(model, policy, batch, 1, rng)
    delta = split_delta(DELTA, n)
    for i in range(n):
        nb = model.neighbourhoods[i]
        dims = tuple(model.n_states[j] for j in nb)
        grid = np.indices(dims).reshape(len(nb), -1)  # (|N_i|, |S_{N_i}|) in C order
        rho_nb = np.ones(grid.shape[1])
        for row, j in zip(grid, nb, strict=True):
            rho_nb = rho_nb * model.rho[j][row]
        obs = policy.observed[i]
        obs_idx = np.ravel_multi_index(
            tuple(grid[nb.index(j)] for j in obs), tuple(model.n_states[j] for j in obs)
        )
        exact = rho_nb[:, None, None] * policy.probs[i][obs_idx][:, :, None] * model.kernels[i]
        s_nb = np.ravel_multi_index(tuple(traj.states[:, 0, j] for j in nb), dims)
        codes = (s_nb * model.n_actions[i] + traj.actions[:, 0, i]) * model.n_states[
            i
        ] + traj.states[:, 1, i]
        err = l1_error(codes, exact)
        radius = l1_radius(batch, support(exact), 1.0, delta)
        assert err <= radius, (i, err, radius)


@given(model=mst.networked_mdps(max_agents=3, max_joint_states=8), seed=mst.seeds())
def test_initial_law(model: NetworkedMDP, seed: int) -> None:
    """sample_initial draws rho (product or joint, SPEC section 2)."""
    batch = 50_000
    s0 = sample_initial(model, batch, np.random.default_rng(seed))
    assert s0.shape == (batch, model.n) and s0.dtype == np.int64
    rho = model.joint_rho()
    err = l1_error(joint_codes(s0, model.n_states), rho)
    assert err <= l1_radius(batch, support(rho), 1.0, DELTA)


# ---------------------------------------------------------------------------- fixed (s, a)
@given(
    model=mst.networked_mdps(max_agents=3, max_joint_states=8),
    data=st.data(),
    seed=mst.seeds(),
)
def test_fixed_initial_states_and_first_actions(
    model: NetworkedMDP, data: st.DataObject, seed: int
) -> None:
    """With s^0 = s and a^0 = a fixed, they are recorded as given and (s^1, a^1) has law
    P(s^1|s, a) pi(a^1|s^1): only a^0 is fixed, later actions follow the policy."""
    policy = data.draw(mst.localized_policies(model))
    rng = np.random.default_rng(seed)
    s = data.draw(st.integers(0, model.states.size - 1))
    a = data.draw(st.integers(0, model.actions.size - 1))
    batch = 50_000
    s_init = np.tile(model.states.digits[s], (batch, 1))
    a_init = np.tile(model.actions.digits[a], (batch, 1))
    traj = rollout(model, policy, batch, 2, rng, initial_states=s_init, first_actions=a_init)
    np.testing.assert_array_equal(traj.states[:, 0], s_init)
    np.testing.assert_array_equal(traj.actions[:, 0], a_init)
    exact = model.joint_kernel()[s, a][:, None] * policy.joint_matrix()
    codes = joint_codes(traj.states[:, 1], model.n_states) * model.actions.size + joint_codes(
        traj.actions[:, 1], model.n_actions
    )
    assert l1_error(codes, exact) <= l1_radius(batch, support(exact), 1.0, DELTA)


def test_varied_fixed_initial_states_are_kept() -> None:
    rng = np.random.default_rng(7)
    model = ring_model(12, rng, states=(2, 3), actions=(2, 3))
    policy = LocalizedSoftmaxPolicy.random(model, 2, rng)
    s0 = sample_initial(model, 500, rng)
    a0 = np.stack([rng.integers(0, k, size=500) for k in model.n_actions], axis=1)
    traj = Sampler(model, policy).rollout(500, 3, rng, initial_states=s0, first_actions=a0)
    np.testing.assert_array_equal(traj.states[:, 0], s0)
    np.testing.assert_array_equal(traj.actions[:, 0], a0)


# ---------------------------------------------------------------------------- geometric times
@given(gamma=mst.discounts(0.95), seed=mst.seeds())
@example(gamma=0.0, seed=0)
def test_geometric_horizons_law(gamma: float, seed: int) -> None:
    """min(T, c) has the exact pmf (1 - gamma) gamma^t for t < c and gamma^c at c, i.e.
    P(T = t) = (1 - gamma) gamma^t on t = 0, 1, ... (so E[T] = gamma / (1 - gamma))."""
    batch, cap = 50_000, 30
    times = geometric_horizons(gamma, batch, np.random.default_rng(seed))
    assert times.shape == (batch,) and times.dtype == np.int64 and times.min() >= 0
    pmf = np.append((1.0 - gamma) * gamma ** np.arange(cap), gamma**cap)
    err = l1_error(np.minimum(times, cap), pmf)
    assert err <= l1_radius(batch, support(pmf), 1.0, DELTA)
    if gamma == 0.0:
        assert not times.any()


# ---------------------------------------------------------------------------- structure
def test_large_ring_smoke_and_determinism() -> None:
    """n = 300 binary agents on a ring (no joint object could be formed: |S| = 2^300)."""
    rng = np.random.default_rng(300)
    model = ring_model(300, rng)
    policy = LocalizedSoftmaxPolicy.random(model, 1, rng)
    batch, horizon = 64, 10
    traj = rollout(model, policy, batch, horizon, np.random.default_rng(11))
    assert traj.states.shape == (batch, horizon + 1, 300)
    assert traj.actions.shape == (batch, horizon, 300)
    assert traj.states.dtype == np.int64 and traj.actions.dtype == np.int64
    assert traj.batch == batch and traj.horizon == horizon and traj.n == 300
    for arr in (traj.states, traj.actions):
        assert arr.min() >= 0 and arr.max() <= 1
        assert not arr.flags.writeable
    again = Sampler(model, policy).rollout(batch, horizon, np.random.default_rng(11))
    np.testing.assert_array_equal(again.states, traj.states)
    np.testing.assert_array_equal(again.actions, traj.actions)


def test_ranges_with_heterogeneous_sizes_and_single_choices() -> None:
    rng = np.random.default_rng(3)
    model = ring_model(40, rng, states=(1, 2, 4), actions=(1, 3))
    policy = LocalizedSoftmaxPolicy.random(model, 2, rng)
    traj = rollout(model, policy, 200, 6, rng)
    assert (traj.states < np.array(model.n_states)).all() and traj.states.min() >= 0
    assert (traj.actions < np.array(model.n_actions)).all() and traj.actions.min() >= 0


def test_zero_probability_outcomes_are_never_drawn() -> None:
    """Deterministic kernels and policies: the chain is a fixed map, sampled exactly."""
    g = Graph.line(3)
    # P_i puts all mass on s'_i = a_i; pi_i all on a_i = 1 - s_i (exp(-800) underflows to 0)
    kernels = tuple(
        np.tile(np.eye(2)[None], (2 ** len(g.neighbourhood(i)), 1, 1)) for i in range(3)
    )
    model = NetworkedMDP(g, (2, 2, 2), (2, 2, 2), kernels, 0.5, tuple([np.array([1.0, 0.0])] * 3))
    policy = LocalizedSoftmaxPolicy(
        model, 0, tuple(np.array([[-400.0, 400.0], [400.0, -400.0]]) for _ in range(3))
    )
    traj = rollout(model, policy, 1000, 5, np.random.default_rng(0))
    expected = np.arange(6) % 2  # s^t = t mod 2 for every agent
    np.testing.assert_array_equal(
        traj.states, np.broadcast_to(expected[None, :, None], (1000, 6, 3))
    )


def test_threshold_rounding_guard() -> None:
    """Ten entries 0.1 sum to 0.9999999999999999 in float64; the cumulative value at the
    last positive entry is stored as exactly 1, so the zero-probability eleventh outcome
    cannot be drawn even by the largest uniform 1 - 2^-53."""
    p = np.append(np.full(10, 0.1), 0.0)
    assert np.cumsum(p)[9] < 1.0  # the rounding the guard exists for
    table = _thresholds([p[None, :]], 12)  # padded to width 12
    assert table.shape == (11, 1)
    assert table[9, 0] == 1.0 and table[10, 0] == 1.0
    u = 1.0 - 2.0**-53
    assert int((table[:, 0] <= u).sum()) == 9


def test_horizon_zero_and_discounts() -> None:
    rng = np.random.default_rng(1)
    model = ring_model(5, rng)
    policy = LocalizedSoftmaxPolicy.uniform(model, 1)
    traj = rollout(model, policy, 3, 0, rng)
    assert traj.states.shape == (3, 1, 5) and traj.actions.shape == (3, 0, 5)
    assert traj.discounts().shape == (0,)
    traj = rollout(model, policy, 3, 4, rng)
    np.testing.assert_array_equal(traj.discounts(), 0.9 ** np.arange(4))


# ---------------------------------------------------------------------------- bad inputs
@pytest.fixture
def small() -> tuple[NetworkedMDP, LocalizedSoftmaxPolicy]:
    rng = np.random.default_rng(2)
    model = ring_model(4, rng)
    return model, LocalizedSoftmaxPolicy.random(model, 1, rng)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch": 0}, r"batch = 0"),
        ({"batch": True}, r"batch = True"),
        ({"batch": 2.0}, r"batch = 2\.0"),
        ({"horizon": -1}, r"horizon = -1"),
        ({"rng": 0}, r"rng = 0"),
        ({"initial_states": np.zeros((3, 4), dtype=int)}, r"initial_states has shape \(3, 4\)"),
        ({"initial_states": np.zeros((2, 4))}, r"initial_states has dtype float64"),
        ({"initial_states": np.full((2, 4), 2)}, r"initial_states\[0, 0\] = 2"),
        ({"initial_states": np.full((2, 4), -1)}, r"initial_states\[0, 0\] = -1"),
        ({"first_actions": np.zeros((2, 5), dtype=int)}, r"first_actions has shape \(2, 5\)"),
        ({"first_actions": np.full((2, 4), 2)}, r"first_actions\[0, 0\] = 2"),
        ({"first_actions": np.zeros((2, 4), dtype=bool)}, r"first_actions has dtype bool"),
        ({"first_actions": np.zeros((2, 4), dtype=int), "horizon": 0}, r"horizon = 0"),
    ],
)
def test_rollout_rejects_bad_arguments(
    small: tuple[NetworkedMDP, LocalizedSoftmaxPolicy], kwargs: dict[str, object], match: str
) -> None:
    model, policy = small
    args: dict[str, object] = {"batch": 2, "horizon": 3, "rng": np.random.default_rng(0)}
    args.update(kwargs)
    with pytest.raises(ModelError, match=match):
        rollout(model, policy, **args)  # type: ignore[arg-type]


def test_other_bad_inputs(small: tuple[NetworkedMDP, LocalizedSoftmaxPolicy]) -> None:
    model, policy = small
    rng = np.random.default_rng(0)
    with pytest.raises(ModelError, match=r"gamma = 1\.0"):
        geometric_horizons(1.0, 5, rng)
    with pytest.raises(ModelError, match=r"gamma = -0\.5"):
        geometric_horizons(-0.5, 5, rng)
    with pytest.raises(ModelError, match=r"batch = 0"):
        geometric_horizons(0.5, 0, rng)
    with pytest.raises(ModelError, match=r"rng = "):
        geometric_horizons(0.5, 3, np.random.RandomState(0))  # type: ignore[arg-type]
    with pytest.raises(ModelError, match=r"batch = -3"):
        sample_initial(model, -3, rng)
    other = ring_model(5, np.random.default_rng(9))
    with pytest.raises(ModelError, match=r"different model"):
        Sampler(other, policy)
    with pytest.raises(ModelError, match=r"expected a LocalizedSoftmaxPolicy"):
        Sampler(model, "policy")  # type: ignore[arg-type]
    with pytest.raises(ModelError, match=r"actions has shape"):
        Trajectories(np.zeros((2, 3, 4), dtype=np.int64), np.zeros((2, 3, 4), dtype=np.int64), 0.5)
