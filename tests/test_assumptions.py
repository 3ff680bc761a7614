"""verify.assumptions: spatial decay, utility constants and concentrability, measured on a
model and compared with what the theory assumes -- including planted wrong declarations
that every verdict must reject -- and the ``marl-oracle assumptions`` subcommand."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from reference.cooperative import (
    ConditionalPolicy,
    OfflineDataset,
    behaviour_policy,
    optimal_comparator,
    random_game,
    sample_dataset,
)
from reference.errors import ModelError, PolicyError
from reference.instances import climbing, line_message
from reference.networked import Graph, LocalizedSoftmaxPolicy, NetworkedMDP, shadow_q, solve
from reference.networked.exact import per_agent_values
from reference.networked.truncation import decay_bound
from reference.networked.utilities import (
    EntropyUtility,
    LinearUtility,
    QuadraticImitationUtility,
    UtilityConstants,
)
from reference.tabular import occupancy, policy_iteration
from verify import strategies as mst
from verify.assumptions import (
    check_assumptions,
    check_concentrability,
    check_decay,
    check_utility_constants,
    spread_tolerance,
)
from verify.cli import main
from verify.experiments import kappa_decay_sweep
from verify.tolerances import EPS, summation_tolerance

# --------------------------------------------------------------------------------------------
# 1. Spatial decay
# --------------------------------------------------------------------------------------------


def test_line_message_decay_holds_for_every_kappa() -> None:
    inst = line_message(4, 0.9)
    pol = LocalizedSoftmaxPolicy.uniform(inst.model, 0)
    check = check_decay(inst.model, pol, inst.utilities())
    assert check.verdict.holds
    assert check.kappa.tolist() == [0, 1, 2, 3]
    assert np.all(check.spread <= check.bound + check.tolerance)
    # second route: the kappa sweep behind ``marl-oracle decay``
    sweep = kappa_decay_sweep(inst.model, pol, inst.utilities())
    np.testing.assert_array_equal(check.max_spread, sweep.max_spread)
    np.testing.assert_array_equal(check.max_bound, sweep.bound)
    # provenance: Delta_0 = 1 (agent 0's reward ranges over [0, 1]) and t0 = kappa + 1, so the
    # worst bound is gamma^(kappa+1)/(1-gamma) = 9, 8.1, 7.29, then 0 at the diameter
    np.testing.assert_allclose(check.max_bound, [9.0, 8.1, 7.29, 0.0], rtol=8 * EPS, atol=0)
    # the measured decay is faster than the bound's rate gamma at theta = 0
    assert 0 < check.rate < check.bound_rate
    assert check.bound_rate == pytest.approx(0.9, rel=64 * EPS)
    assert check.verdict.measured == check.spread.max()


def test_decay_spread_matches_brute_force_pairs() -> None:
    """Independent route for D_i(kappa): every pair of joint (s, a) equal on N_i^kappa."""
    inst = line_message(3, 0.8)
    model = inst.model
    pol = LocalizedSoftmaxPolicy.uniform(model, 1)
    sol = solve(model, pol, inst.utilities("entropy"))
    check = check_decay(model, pol, inst.utilities("entropy"), solution=sol)
    qs = shadow_q(model, pol, sol)
    # the spreads are streamed from the local kernels, the table from the joint contraction:
    # both read the same V_i and differ only in the order of the sums in r + gamma P V
    # (|S| terms of size at most |V|_max + |r|_max), twice for a difference of two entries
    scale = float(np.max(np.abs(per_agent_values(model, pol, sol).x))) + max(
        float(np.max(np.abs(r))) for r in sol.shadow_rewards
    )
    tol = 2.0 * summation_tolerance(model.states.size, scale)
    sd, ad = model.states.digits, model.actions.digits
    pairs = list(itertools.product(range(model.states.size), range(model.actions.size)))
    for i in range(model.n):
        for col, k in enumerate(check.kappa):
            hood = list(model.graph.neighbourhood(i, int(k)))
            groups: dict[tuple[int, ...], list[float]] = {}
            for s, a in pairs:
                key = tuple(sd[s, hood]) + tuple(ad[a, hood])
                groups.setdefault(key, []).append(float(qs[i][s, a]))
            brute = max(max(v) - min(v) for v in groups.values())
            assert abs(check.spread[i, col] - brute) <= tol


def _shift_chain(n: int, gamma: float) -> tuple[NetworkedMDP, tuple[LinearUtility, ...]]:
    """Binary agents on a line with one action: ``s'_j = s_{j+1}`` (the last keeps its state),
    so ``s_0^t = s_{min(t, n-1)}^0``; agent 0 earns ``1[s_0 = 1]`` (``Delta_0 = 1``).
    Tight instance of ``proofs_notes/decay.md``: ``D_0(kappa) = gamma^(kappa+1)/(1-gamma)``
    for ``kappa < n - 1`` (states all ones vs all zeros beyond ``N_0^kappa`` reach agent 0 at
    ``t = kappa + 1`` and differ by 1 from then on)."""
    g = Graph.line(n)
    kernels = []
    for j in range(n):
        nb = g.neighbourhood(j)
        P = np.zeros((2,) * len(nb) + (1, 2))
        src = nb.index(j + 1) if j < n - 1 else nb.index(j)
        for val in (0, 1):
            index: list[int | slice] = [slice(None)] * len(nb) + [0, val]
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
def test_tight_chain_holds_with_the_derived_bound_and_fails_with_gamma_squared(
    gamma: float,
) -> None:
    model, utils = _shift_chain(5, gamma)
    pol = LocalizedSoftmaxPolicy.uniform(model)
    right = check_decay(model, pol, utils)
    assert right.verdict.holds  # the spread attains the bound: the tolerance must absorb it
    np.testing.assert_allclose(
        right.spread[0, :4], [gamma ** (k + 1) / (1 - gamma) for k in range(4)],
        rtol=0, atol=float(right.tolerance.max()),
    )

    def planted(delta: float, g: float, kappa: int, beta: int) -> float:
        return decay_bound(delta, g**2, kappa, beta)

    wrong = check_decay(model, pol, utils, bound=planted)
    assert not wrong.verdict.holds
    assert wrong.verdict.measured > wrong.verdict.assumed
    assert "kappa=" in wrong.verdict.detail


def test_line_message_rejects_a_bound_ten_times_too_small() -> None:
    """On line-message the derived bound is loose (9 against a spread of 1.79 at kappa = 0),
    so gamma -> gamma^2 (bound 4.26) still holds there; a 10x smaller bound does not."""
    inst = line_message(4, 0.9)
    pol = LocalizedSoftmaxPolicy.uniform(inst.model, 0)

    def squared(delta: float, g: float, kappa: int, beta: int) -> float:
        return decay_bound(delta, g**2, kappa, beta)

    def tenth(delta: float, g: float, kappa: int, beta: int) -> float:
        return decay_bound(delta, g, kappa, beta) / 10

    assert check_decay(inst.model, pol, inst.utilities(), bound=squared).verdict.holds
    assert not check_decay(inst.model, pol, inst.utilities(), bound=tenth).verdict.holds


def test_spread_tolerance_is_rounding_sized() -> None:
    inst = line_message(4, 0.9)
    pol = LocalizedSoftmaxPolicy.uniform(inst.model, 0)
    sol = solve(inst.model, pol, inst.utilities())
    tol = spread_tolerance(inst.model, sol)
    assert 0 < tol < 1e6 * EPS * 10.0  # |Q| <= 10 here


# --------------------------------------------------------------------------------------------
# 2. Utility constants
# --------------------------------------------------------------------------------------------


@given(data=st.data(), seed=mst.seeds())
@example(data=None, seed=0)
def test_declared_constants_of_builtin_utilities_are_never_exceeded(
    data: st.DataObject | None, seed: int
) -> None:
    """No false alarm: every built-in utility's declared gradient bound and smoothness hold
    (gamma from 0 up, any shape, faces of the simplex included)."""
    if data is None:
        utils = [EntropyUtility((2, 2), 0.9, 1e-3), *line_message(3, 0.9).utilities()]
    else:
        shape = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
        gamma = data.draw(mst.discounts())
        utils = [data.draw(mst.utilities(shape, gamma)) for _ in range(2)]
    check = check_utility_constants(utils, rng=np.random.default_rng(seed), directions=8)
    assert all(v.holds for v in check.verdicts), [v.detail for v in check.verdicts]
    assert check.quotients <= len(utils) * 8 * len(check.steps)


def test_line_message_entropy_estimates_reach_the_declared_constants() -> None:
    """The entropy utility's gradient bound ``(1-gamma)(-log eps)`` is attained where a state
    has no mass, and the estimated smoothness is within a factor 10 of the declared
    ``(1-gamma)^2 nA 2/eps = 40`` (so a 10x too small declaration is caught)."""
    inst = line_message(4, 0.9)
    check = check_utility_constants(inst.utilities("entropy"), rng=np.random.default_rng(0))
    assert all(v.holds for v in check.verdicts)
    np.testing.assert_allclose(
        check.measured_gradient_bound, 0.1 * -math.log(1e-3), rtol=0,
        atol=float(check.gradient_tolerance.max()),
    )
    assert np.all(check.measured_smoothness > check.declared_smoothness / 10)
    assert check.quotients > 0 and check.directions == 32


@given(seed=mst.seeds(), gamma=mst.discounts(), n_s=st.integers(1, 3), n_a=st.integers(1, 3))
def test_quadratic_smoothness_is_measured_exactly(
    seed: int, gamma: float, n_s: int, n_a: int
) -> None:
    """The quadratic imitation utility has Hessian ``-(1-gamma)^2 I``, so every difference
    quotient equals ``(1-gamma)^2`` up to rounding, in any direction and step."""
    rng = np.random.default_rng(seed)
    target = rng.dirichlet(np.ones(n_s * n_a)).reshape(n_s, n_a)
    f = QuadraticImitationUtility(target, gamma)
    check = check_utility_constants([f], rng=np.random.default_rng(seed), directions=4)
    if check.quotients == 0:  # one entry: a single reachable point, no segment
        assert n_s * n_a == 1
        return
    np.testing.assert_allclose(
        check.measured_smoothness, (1 - gamma) ** 2, rtol=0,
        atol=float(check.smoothness_tolerance.max()),
    )


class _TooSmoothQuadratic(QuadraticImitationUtility):
    """Planted: declares a smoothness 10x smaller than its true ``(1-gamma)^2``."""

    @property
    def constants(self) -> UtilityConstants:
        true = super().constants
        return dataclasses.replace(true, smoothness=true.smoothness / 10)


class _UnderboundedLinear(LinearUtility):
    """Planted: declares half its true gradient bound ``max |r|``."""

    @property
    def constants(self) -> UtilityConstants:
        true = super().constants
        return dataclasses.replace(true, gradient_bound=true.gradient_bound / 2)


@given(seed=mst.seeds(), gamma=mst.discounts())
def test_planted_wrong_declarations_fail(seed: int, gamma: float) -> None:
    """Both plants are caught for every seed: the quadratic's quotients all equal the true
    ``(1-gamma)^2`` and the linear gradient is the constant ``r``."""
    target = np.full((2, 2), 0.25)
    reward = np.array([[1.0, -2.0], [0.5, 0.0]])
    honest = [QuadraticImitationUtility(target, gamma), LinearUtility(reward, gamma)]
    planted = [_TooSmoothQuadratic(target, gamma), _UnderboundedLinear(reward, gamma)]
    ok = check_utility_constants(honest, rng=np.random.default_rng(seed), directions=4)
    bad = check_utility_constants(planted, rng=np.random.default_rng(seed), directions=4)
    assert [v.holds for v in ok.verdicts] == [True, True]
    assert [v.holds for v in bad.verdicts] == [False, False]
    gradient, smooth = bad.verdicts
    assert gradient.measured == 2.0 and gradient.assumed == 1.0 and "utility 1" in gradient.detail
    assert smooth.measured > smooth.assumed and "utility 0" in smooth.detail


def test_utility_check_rejects_bad_arguments() -> None:
    f = [LinearUtility(np.ones((2, 2)), 0.5)]
    with pytest.raises(ModelError, match="directions = 0"):
        check_utility_constants(f, rng=np.random.default_rng(0), directions=0)
    with pytest.raises(ModelError, match="steps"):
        check_utility_constants(f, rng=np.random.default_rng(0), steps=(0.0,))
    with pytest.raises(ModelError, match="not a Utility"):
        check_utility_constants([object()], rng=np.random.default_rng(0))  # type: ignore[list-item]


# --------------------------------------------------------------------------------------------
# 3. Concentrability
# --------------------------------------------------------------------------------------------


def test_one_state_game_hand_values() -> None:
    """One state, |A^m| = 2, 3, 4, uniform pi_k, deterministic comparator a*: nu = 1 for both,
    w*^m puts mass 1 on the context a*^{0:m-1}, w_k^m gives it prod_{j<m} 1/|A^j|, so
    (hand derivation)

        context[m] = prod_{j<m} |A^j| = 1, 2, 6,
        action[m]  = prod_{j<=m} |A^j| = 2, 6, 24   (max(pi*, pi_k) = 1 at a*^m),
        offline    = |A| = 24 under the uniform behaviour, 1/(C/24 + 1 - C) with coverage C
                     on a*."""
    game = random_game(np.random.default_rng(3), 1, (2, 3, 4), 0.9)
    rtol = summation_tolerance(game.n_agents + 2, 1.0)
    check = check_concentrability(game, behaviour=np.full((1, 24), 1 / 24))
    np.testing.assert_allclose(check.context, [1, 2, 6], rtol=rtol, atol=0)
    np.testing.assert_allclose(check.action, [2, 6, 24], rtol=rtol, atol=0)
    assert check.offline == pytest.approx(24, rel=rtol)
    assert [v.holds for v in check.verdicts] == [True, True]
    safe = policy_iteration(game.tabular).greedy
    b = behaviour_policy(game, 0.25, safe)
    partial = check_concentrability(game, behaviour=b)
    assert partial.offline == pytest.approx(1 / (0.25 / 24 + 0.75), rel=rtol)


def test_inf_where_the_sampling_law_misses_the_comparator() -> None:
    """Climbing (one state, optimum (0, 0)): a pi_k that always plays a^0 = 1 never reaches
    agent 1's context a^0 = 0; a behaviour on (1, 1) only never shows (0, 0)."""
    game = climbing()
    flat = np.zeros((1, 9))
    flat[0, 4] = 1.0  # joint action (1, 1)
    pi_k = ConditionalPolicy.from_joint(game, flat)
    check = check_concentrability(game, policy=pi_k, behaviour=flat)
    assert check.context[0] == 1.0 and math.isinf(check.context[1])
    assert math.isinf(check.action[0]) and math.isinf(check.action[1])
    assert check.offline is not None and math.isinf(check.offline)
    assert [v.holds for v in check.verdicts] == [False, False]  # inf fails even an inf cap
    assert "no mass at (s=0, a=0)" in check.verdicts[1].detail


def test_cap_and_empirical_dataset() -> None:
    game = climbing()
    assert not check_concentrability(game, cap=2.0).verdicts[0].holds  # context[1] = 3
    assert check_concentrability(game, cap=3.0 + 8 * EPS).verdicts[0].holds
    data = sample_dataset(game, 90, np.random.default_rng(1), coverage=1.0, rewards="fixed")
    n00 = int(np.sum(data.joint_actions == 0))
    check = check_concentrability(game, dataset=data)
    assert check.empirical == pytest.approx(90 / n00, rel=8 * EPS)  # d*(0, (0,0)) = 1
    missing = OfflineDataset(
        states=np.zeros(3, dtype=np.int64), actions=np.ones((3, 2), dtype=np.int64),
        rewards=np.zeros(3), next_states=np.zeros(3, dtype=np.int64), n_states=1,
        action_counts=(3, 3),
    )
    gone = check_concentrability(game, dataset=missing)
    assert gone.empirical is not None and math.isinf(gone.empirical)
    assert not gone.verdicts[-1].holds


@given(data=st.data())
def test_sampling_equal_to_comparator_gives_one(data: st.DataObject) -> None:
    """If pi_k = pi* (and the behaviour is pi* with mu_S = nu_b), every ratio is 1 on the
    comparator's support."""
    game = data.draw(mst.cooperative_games(full_support_rho=True))
    pi = data.draw(mst.conditional_policies(game, min_prob=0.05))
    check = check_concentrability(game, policy=pi, comparator=pi, behaviour=pi.joint_matrix())
    # masses are at least (1-gamma) min rho * 0.05^N >= 0.1 * 0.5/3 * 0.05^3 here; each is
    # within the threshold of the truth, so a ratio of two is within 2 threshold/min of 1
    rtol = 2 * check.mass_threshold / (0.1 * 0.5 / 3 * 0.05**3)
    np.testing.assert_allclose(check.context, 1.0, rtol=rtol)
    np.testing.assert_allclose(check.action, 1.0, rtol=rtol)
    assert check.offline == pytest.approx(1.0, rel=rtol)


@given(data=st.data())
def test_coefficients_by_a_loop_over_contexts(data: st.DataObject) -> None:
    """Second route, context by context: ``w^m(s, a^{0:m-1}) = nu(s) prod_{j<m} pi^j(a^j|...)``
    built by hand, and ``C_k^m = max_c (w*/w_k)(c) max_a pi*^m/pi_k^m`` (the ``max`` with
    ``pi_k^m`` in the note's definition never binds: some action has ``pi* >= pi_k``)."""
    game = data.draw(mst.cooperative_games(full_support_rho=True))
    pi_k = data.draw(mst.conditional_policies(game, min_prob=0.05))
    pi_star = data.draw(mst.conditional_policies(game))
    check = check_concentrability(game, policy=pi_k, comparator=pi_star)
    nu_k = (1 - game.gamma) * occupancy(game.tabular, pi_k.joint_matrix()).lam_S
    nu_s = (1 - game.gamma) * occupancy(game.tabular, pi_star.joint_matrix()).lam_S
    for m in range(game.n_agents):
        ctx, act = 0.0, 0.0
        for s in range(game.n_states):
            for prefix in itertools.product(*(range(k) for k in game.action_counts[:m])):
                w_k, w_s = nu_k[s], nu_s[s]
                for j in range(m):
                    w_k *= pi_k.conditionals[j][(s, *prefix[: j + 1])]
                    w_s *= pi_star.conditionals[j][(s, *prefix[: j + 1])]
                if w_s <= check.mass_threshold:
                    continue
                ctx = max(ctx, w_s / w_k)
                ratio = pi_star.conditionals[m][(s, *prefix)] / pi_k.conditionals[m][(s, *prefix)]
                act = max(act, w_s / w_k * float(ratio.max()))
        # both routes see every mass within the threshold; masses >= (1-gamma) 0.5/3 0.05^3
        rtol = 4 * check.mass_threshold / (0.1 * 0.5 / 3 * 0.05**3)
        assert check.context[m] == pytest.approx(ctx, rel=rtol)
        assert check.action[m] == pytest.approx(act, rel=rtol)


def test_default_comparator_is_optimal_and_game_of_policy_checked() -> None:
    game = climbing()
    other = climbing()
    with pytest.raises(PolicyError, match="different game"):
        check_concentrability(game, policy=ConditionalPolicy.uniform(other))
    default = check_concentrability(game)
    explicit = check_concentrability(game, comparator=optimal_comparator(game))
    np.testing.assert_array_equal(default.context, explicit.context)
    with pytest.raises(ModelError, match="cap"):
        check_concentrability(game, cap=float("nan"))


# --------------------------------------------------------------------------------------------
# check_assumptions
# --------------------------------------------------------------------------------------------


def test_check_assumptions_dispatch() -> None:
    inst = line_message(3, 0.9)
    rep = check_assumptions(inst.model, utilities=inst.utilities(), rng=np.random.default_rng(0))
    assert [v.name for v in rep.verdicts] == [
        "spatial decay", "utility gradient bound", "utility smoothness"
    ]
    assert rep.all_hold and rep.decay is not None and rep.utilities is not None
    assert rep.concentrability is None
    game_rep = check_assumptions(climbing(), rng=np.random.default_rng(0), concentrability_cap=2)
    assert not game_rep.all_hold and game_rep.decay is None
    assert game_rep.verdicts[0].measured == pytest.approx(3.0, rel=8 * EPS)


def test_check_assumptions_rejects_mismatched_options() -> None:
    inst = line_message(3, 0.9)
    rng = np.random.default_rng(0)
    with pytest.raises(ModelError, match="needs utilities"):
        check_assumptions(inst.model, rng=rng)
    with pytest.raises(PolicyError, match="LocalizedSoftmaxPolicy"):
        check_assumptions(inst.model, policy=ConditionalPolicy.uniform(climbing()),
                          utilities=inst.utilities(), rng=rng)
    with pytest.raises(ModelError, match="behaviour apply to cooperative games"):
        check_assumptions(inst.model, utilities=inst.utilities(), rng=rng,
                          behaviour=np.ones((1, 9)) / 9)
    with pytest.raises(ModelError, match="networked models only"):
        check_assumptions(climbing(), utilities=inst.utilities(), rng=rng)
    with pytest.raises(ModelError, match="expected a NetworkedMDP"):
        check_assumptions("climbing", rng=rng)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def test_cli_instance_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["assumptions", "--instance", "line-message", "--agents", "4", "--utility",
            "entropy", "--seed", "3", "--directions", "4", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["kind"], out["agents"], out["utility"], out["seed"]) == (
        "networked", 4, "entropy", 3
    )
    assert out["all_hold"] is True
    assert [v["name"] for v in out["verdicts"]] == [
        "spatial decay", "utility gradient bound", "utility smoothness"
    ]
    assert set(out["verdicts"][0]) == {
        "name", "assumed", "measured", "holds", "detail", "reference"
    }
    assert out["decay"]["kappa"] == [0, 1, 2, 3] and out["concentrability"] is None
    assert out["utilities"]["directions"] == 4
    inst = line_message(4, 0.9)
    rep = check_assumptions(inst.model, utilities=inst.utilities("entropy"),
                            rng=np.random.default_rng(3), directions=4)
    assert [v["measured"] for v in out["verdicts"]] == [v.measured for v in rep.verdicts]


def test_cli_game_json_writes_inf_as_a_string(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["assumptions", "--game", "climbing", "--coverage", "0.5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "game" and out["all_hold"] is True
    assert [v["name"] for v in out["verdicts"]] == [
        "concentrability (MA-PPO sampling)", "concentrability (offline behaviour)"
    ]
    assert out["verdicts"][0]["assumed"] == "inf" and out["concentrability"]["cap"] == "inf"
    # hand values: context 1, 3; offline 1/(0.5/9 + 0.5) = 1.8
    assert out["concentrability"]["context"] == pytest.approx([1.0, 3.0], rel=8 * EPS)
    assert out["concentrability"]["offline"] == pytest.approx(1.8, rel=8 * EPS)


def test_cli_failing_verdict_is_reported_with_status_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["assumptions", "--game", "climbing", "--cap", "2"]) == 1
    text = capsys.readouterr().out
    assert "concentrability (MA-PPO sampling)" in text and "NO" in text
    assert "1 of 1 fail" in text


def test_cli_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["assumptions", "--instance", "line-message", "--agents", "3",
                 "--directions", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("line-message: n = 3")
    rows = [ln for ln in lines if ln.rstrip().endswith(("yes", "NO"))]
    assert len(rows) == 3 and all(r.rstrip().endswith("yes") for r in rows)
    assert "  all assumptions hold" in lines


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["assumptions", "--game", "climbing", "--agents", "3"], "--agents applies to --instance"),
        (["assumptions", "--game", "ratio", "--utility", "entropy"], "--utility applies"),
        (["assumptions", "--instance", "line-message"], "needs --agents"),
        (["assumptions", "--instance", "line-message", "--agents", "3", "--cap", "2"],
         "--cap applies to --game"),
        (["assumptions", "--game", "climbing", "--coverage", "2"], "coverage"),
    ],
)
def test_cli_errors(argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert fragment in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["assumptions", "--instance", "line-message", "--agents", "3", "--game", "climbing"],
        ["assumptions", "--agents", "3"],
    ],
)
def test_cli_instance_and_game_are_one_required_choice(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "--instance" in capsys.readouterr().err
