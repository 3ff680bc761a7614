"""The coupled-line instances and the three studies behind the report's ``decay-coupling``,
``shadow-reward-bound`` and ``sample-complexity`` claims: values by hand, the bounds they
are compared with, and each study's planted defect failing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reference.errors import ModelError
from reference.instances import coupled_line
from reference.networked import (
    ConstraintPenaltyUtility,
    LocalizedSoftmaxPolicy,
    decay_profile,
    solve,
)
from verify.assumptions import spread_tolerance
from verify.executors import SerialExecutor
from verify.experiments import (
    UTILITY_KINDS,
    ComplexityConfig,
    _run_piece,
    _RunTask,
    complexity_schedule,
    coupling_decay_study,
    horizon_bias_constant,
    sample_complexity_study,
    shadow_reward_study,
    study_utilities,
)

# --------------------------------------------------------------------------- coupled line


@pytest.mark.parametrize(
    ("n", "coupling", "match"),
    [(1, 0.5, "n >= 2"), (True, 0.5, "n >= 2"), (3, -0.1, "coupling"), (3, 1.5, "coupling"),
     (3, "0.5", "coupling"), (3, True, "coupling"), (3, math.nan, "coupling")],
)
def test_coupled_line_rejects_bad_arguments(n: object, coupling: object, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        coupled_line(n, coupling)  # type: ignore[arg-type]


def test_coupled_line_kernel_by_hand() -> None:
    """``P_i(s'_i = 1 | s_N, a_i) = c 1[s_{i+1} = 1] + (1 - c) 1[a_i = 1]`` for ``i < n - 1``
    (the left neighbour has no effect) and ``s'_{n-1} = a_{n-1}``."""
    c = 0.3
    m = coupled_line(3, c).model
    mid = m.kernels[1].reshape(2, 2, 2, 2, 2)  # (s_0, s_1, s_2, a_1, s'_1)
    for s0, s1, s2, a in np.ndindex(2, 2, 2, 2):
        assert mid[s0, s1, s2, a, 1] == pytest.approx(c * s2 + (1 - c) * a, abs=1e-15)
    first = m.kernels[0].reshape(2, 2, 2, 2)  # (s_0, s_1, a_0, s'_0)
    for s0, s1, a in np.ndindex(2, 2, 2):
        assert first[s0, s1, a, 1] == pytest.approx(c * s1 + (1 - c) * a, abs=1e-15)
    last = m.kernels[2].reshape(2, 2, 2, 2)  # (s_1, s_2, a_2, s'_2)
    np.testing.assert_array_equal(last[..., 0, 1], 0.0)
    np.testing.assert_array_equal(last[..., 1, 1], 1.0)


def _profile(n: int, c: float, gamma: float, theta_seed: int | None) -> tuple[np.ndarray, float]:
    inst = coupled_line(n, c, gamma)
    pol = LocalizedSoftmaxPolicy.uniform(inst.model, 0)
    if theta_seed is not None:
        pol = LocalizedSoftmaxPolicy.random(inst.model, 0, np.random.default_rng(theta_seed))
    sol = solve(inst.model, pol, inst.utilities(), values="per-agent")
    return decay_profile(inst.model, pol, sol).spread, spread_tolerance(inst.model, sol)


def test_uncoupled_agents_have_zero_spreads() -> None:
    """``c = 0``: ``s'_i = a_i`` and ``a_i`` depends on ``s_i`` only, so ``Q_i`` depends on
    ``(s_i, a_i)`` alone and every ``D_i(kappa)`` is 0 (to rounding)."""
    spread, tol = _profile(5, 0.0, 0.8, theta_seed=2)
    assert np.all(spread <= tol)


@pytest.mark.parametrize(("n", "gamma"), [(4, 0.5), (6, 0.9)])
def test_shift_chain_spreads_by_hand(n: int, gamma: float) -> None:
    """``c = 1`` at ``theta = 0``: ``s_i^t = s_{i+t}^0`` for ``t <= n - 1 - i``, then the last
    agent's first action, then uniform draws.  Completions outside ``N_i^kappa`` move
    ``r_i(s_i^t)`` by 1 for ``t = kappa+1 .. n-i`` and not at all otherwise, so
    ``D_i(kappa) = sum_{t=kappa+1}^{n-i} gamma^t`` for ``kappa < n - 1 - i`` and 0 after
    (``proofs_notes/decay.md#coupling``): the ratio to the bound is ``1 - gamma^(n-i-kappa)``."""
    spread, tol = _profile(n, 1.0, gamma, theta_seed=None)
    expected = np.array([
        [gamma ** (k + 1) * (1 - gamma ** (n - i - k)) / (1 - gamma) if k < n - 1 - i else 0.0
         for k in range(n)]
        for i in range(n)
    ])
    np.testing.assert_allclose(spread, expected, rtol=0, atol=tol)


def test_coupling_study_rates_grow_with_coupling_and_stay_under_gamma() -> None:
    """The per-hop rate is 0 for ``c = 0`` (exact zeros), increases with ``c`` and stays
    below the bound's rate ``gamma``; every spread is within its bound and exact zeros
    where the bound is 0; with ``t0`` one step late the bound fails."""
    d = coupling_decay_study(5, [0.0, 0.3, 0.6, 1.0], [0.5, 0.9], seed=4)
    assert d.spread.shape == (2, 4, 5, 5)
    for a, g in enumerate(d.gammas):
        assert d.rate[a, 0] == 0.0
        assert np.all(np.diff(d.rate[a]) > 0) and np.all(d.rate[a] < g)
    allow = d.allowance[:, :, None, None]
    positive = d.bound > 0
    assert np.all(np.where(positive, d.spread <= d.bound, d.spread <= allow))
    assert np.max(d.spread[positive] / d.bound[positive]) > 0.9
    late = d.bound * d.gammas[:, None, None, None]
    assert np.max(d.spread[positive] / late[positive]) > 1.0
    # the family's bound Delta rho^(kappa+1) / (1 - gamma): holds, nearly attained at c = 1
    assert np.all(d.spread <= d.coupling_bound + allow)
    sharp = d.coupling_bound > 0  # rho = 0 at c = 0, where every spread is an exact zero
    assert np.max(d.spread[sharp] / d.coupling_bound[sharp]) > 0.9
    np.testing.assert_allclose(
        d.coupling_rate,
        d.gammas[:, None] * d.couplings[None, :]
        / (1 - d.gammas[:, None] * (1 - d.couplings[None, :]) * d.nu),
        rtol=1e-15,
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coupling_bound_holds_at_random_policies(seed: int) -> None:
    """``D_i(kappa) <= Delta_i rho^(kappa+1) / (1 - gamma)``,
    ``rho = gamma c / (1 - gamma (1 - c) nu)`` (``proofs_notes/decay.md#coupling``), for
    sharp policies (``theta ~ N(0, 4)``, ``nu`` near 1) and every coupling."""
    rng = np.random.default_rng(seed)
    for c in (0.1, 0.5, 0.9):
        inst = coupled_line(5, c, 0.8)
        pol = LocalizedSoftmaxPolicy.random(inst.model, 0, rng, scale=2.0)
        nu = max(abs(p[1, 1] - p[0, 1]) for p in pol.probs)
        rho = 0.8 * c / (1 - 0.8 * (1 - c) * nu)
        sol = solve(inst.model, pol, inst.utilities(), values="per-agent")
        prof = decay_profile(inst.model, pol, sol)
        bound = prof.delta[:, None] * rho ** (prof.kappa[None, :] + 1) / 0.2
        assert np.all(prof.spread <= bound + spread_tolerance(inst.model, sol))


# --------------------------------------------------------------------------- shadow rewards


def test_unclamped_penalty_differs_only_where_the_constraint_holds() -> None:
    """The planted penalty equals the real one where ``g < c`` and not where ``g > c``."""
    real = study_utilities("penalty", 1, 0.5)[0]
    bad = study_utilities("penalty", 1, 0.5, defect="unclamped-penalty")[0]
    assert isinstance(real, ConstraintPenaltyUtility)
    # g = <r, lam> = mass on s = 1: 0.1 < c = 0.2 (violated) and 1.5 > c (holds)
    violated = np.array([[0.95, 0.95], [0.05, 0.05]])
    holds = np.array([[0.25, 0.0], [0.75, 1.0]])
    np.testing.assert_array_equal(bad.gradient(violated), real.gradient(violated))
    assert np.max(np.abs(bad.gradient(holds) - real.gradient(holds))) > 1.0


def test_shadow_rewards_stay_within_declared_bounds_and_defects_fail() -> None:
    st = shadow_reward_study(3, 0.5, 4, seed=1, executor=SerialExecutor())
    assert st.kinds == UTILITY_KINDS and st.exact.shape == (5, 3, 4)
    ratio = np.stack([st.exact, st.sampled]) / st.bound[None, :, :, None]
    assert np.all(ratio <= 1.0)
    # the linear utility's shadow reward is its reward: the bound max|r| is attained
    np.testing.assert_array_equal(ratio[:, 0], 1.0)
    # a declared constant too small by a factor 2 fails
    assert np.max(ratio * 2.0) > 1.0
    bad = shadow_reward_study(3, 0.5, 4, seed=1, kinds=("penalty",),
                              defect="unclamped-penalty", executor=SerialExecutor())
    assert np.max(bad.exact / bad.bound[:, :, None]) > 1.0


def test_shadow_study_replays_and_validates() -> None:
    a = shadow_reward_study(2, 0.5, 2, seed=3, kinds=("kl",), executor=SerialExecutor())
    b = shadow_reward_study(2, 0.5, 2, seed=3, kinds=("kl",), executor=SerialExecutor())
    np.testing.assert_array_equal(a.sampled, b.sampled)
    assert a.children == ((3, (0,)),)
    with pytest.raises(ModelError, match="defect"):
        shadow_reward_study(2, 0.5, 2, seed=3, defect="nope")  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="utility kind"):
        study_utilities("cubic", 2, 0.5)


# --------------------------------------------------------------------------- sample complexity


def test_schedule_by_hand() -> None:
    """``B = ceil(2 sigma^2 / eps)``, ``H = ceil(log(4 C_H / sqrt(eps)) / log(1/gamma))``,
    ``m = (3 + o) n B H``: with ``sigma^2 = 0.5``, ``eps = 0.01``, ``C_H = 2``, ``gamma = 1/2``,
    ``B = 100`` and ``H = ceil(log2 80) = 7``."""
    s = complexity_schedule(3, 0.5, 0.01, 0.5, 2.0)
    assert (s.batch, s.horizon, s.samples_per_iteration) == (100, 7, 4 * 3 * 100 * 7)
    assert complexity_schedule(3, 0.5, 0.01, 0.5, 2.0, occupancy=False).samples_per_iteration \
        == 3 * 3 * 100 * 7
    assert horizon_bias_constant(2, 0.5, 1.0) == pytest.approx(2 * 2 * 4)
    for bad in ({"epsilon": 0.0}, {"variance": -1.0}, {"bias_constant": math.inf}):
        args = {"epsilon": 0.01, "variance": 0.5, "bias_constant": 2.0} | bad
        with pytest.raises(ModelError):
            complexity_schedule(3, 0.5, **args)
    with pytest.raises(ModelError, match="gamma"):
        complexity_schedule(3, 0.0, 0.01, 0.5, 2.0)


CONFIGS = (ComplexityConfig(3, 0), ComplexityConfig(3, 1))
FRACTIONS = (0.5, 0.25)


def test_sample_complexity_passes_and_the_squared_batch_fails() -> None:
    """Under the derived schedule the lower end of the total exponent's interval is at most
    noise-free ascent's iteration exponent plus the schedule's; with the batch sized for
    the standard deviation (``B ~ 1/eps^2``) it is above it."""
    good = sample_complexity_study(CONFIGS, FRACTIONS, 4, seed=0, executor=SerialExecutor())
    bad = sample_complexity_study(CONFIGS, FRACTIONS, 4, seed=0, defect="batch-for-norm",
                                  executor=SerialExecutor())
    for g in good:
        assert g.ratio <= 1.0 and g.floor <= g.epsilon[-1] / 16
        # the schedule's samples: T iterations of (3 n B H) agent-steps (linear utilities)
        m = np.array([s.samples_per_iteration for s in g.schedule])
        np.testing.assert_array_equal(g.samples, g.iterations * m[None, :])
        assert g.schedule_exponent == pytest.approx(
            math.log(m[1] / m[0]) / math.log(2.0), rel=1e-12)
        assert g.asymptotic_total_exponent == g.schedule_exponent + 1.0
    assert max(b.ratio for b in bad) > 1.0


def test_sample_complexity_runs_replay_from_their_records() -> None:
    """Run ``(seed s, target e)`` is piece ``s E + e`` and replays from its recorded child; the
    recorded ``T`` is the first iteration count whose running average of the exact
    ``||grad F||^2`` is at most the target."""
    (res,) = sample_complexity_study(CONFIGS[:1], FRACTIONS, 2, seed=5,
                                     executor=SerialExecutor())
    inst = coupled_line(3, res.coupling, res.gamma)
    from reference.networked.algorithm import Algorithm1Config

    for s in range(2):
        for e, sc in enumerate(res.schedule):
            entropy, key = res.children[s * 2 + e]
            cfg = Algorithm1Config(kappa=0, step_size=10.0, iterations=1,
                                   occupancy_batch=sc.batch, occupancy_horizon=sc.horizon,
                                   critic_batch=sc.batch, critic_horizon=sc.horizon,
                                   gradient_batch=sc.batch, gradient_horizon=sc.horizon)
            task = _RunTask(inst.model, inst.utilities(), cfg, sc.epsilon, 400, "dense")
            rng = np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=key))
            T, samples = _run_piece(task, rng)
            assert (T, samples) == (res.iterations[s, e], res.samples[s, e])


def test_one_estimate_counts_the_rollouts_it_draws() -> None:
    """Linear utilities skip step 1 (``3 n B H`` agent-steps); others draw the occupancy
    rollout too (``4 n B H``), as ``complexity_schedule`` counts."""
    from reference.networked.algorithm import Algorithm1Config
    from verify.experiments import _one_estimate

    inst = coupled_line(3, 0.5, 0.5)
    pol = LocalizedSoftmaxPolicy.uniform(inst.model, 0)
    cfg = Algorithm1Config(kappa=1, iterations=1, occupancy_batch=8, occupancy_horizon=5,
                           critic_batch=8, critic_horizon=5, gradient_batch=8,
                           gradient_horizon=5)
    rng = np.random.default_rng(0)
    for kind, per in (("linear", 3), ("entropy", 4)):
        grad, drawn = _one_estimate(inst.model, pol, inst.utilities(kind), cfg, rng)
        assert drawn == per * 3 * 8 * 5 and len(grad) == 3


def test_sample_complexity_validates_its_arguments() -> None:
    with pytest.raises(ModelError, match="seeds"):
        sample_complexity_study(CONFIGS, FRACTIONS, 1, seed=0)
    with pytest.raises(ModelError, match="fractions"):
        sample_complexity_study(CONFIGS, (0.5,), 2, seed=0)
    with pytest.raises(ModelError, match="fractions"):
        sample_complexity_study(CONFIGS, (0.5, 1.5), 2, seed=0)
    with pytest.raises(ModelError, match="configs"):
        sample_complexity_study((), FRACTIONS, 2, seed=0)
    with pytest.raises(ModelError, match="defect"):
        sample_complexity_study(CONFIGS, FRACTIONS, 2, seed=0,
                                defect="fixed-batch")  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="max_iterations"):
        sample_complexity_study(CONFIGS[:1], FRACTIONS, 2, seed=0, max_iterations=3,
                                executor=SerialExecutor())
