"""Planted bugs in networked implementations (shadow rewards, truncated critics, sampled local
occupancies) are caught; correct ones pass (verify/checks/planted/networked.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from reference._arrays import FloatArray
from reference.errors import ModelError
from reference.networked import (
    ConstraintPenaltyUtility,
    EntropyUtility,
    Graph,
    KLImitationUtility,
    LinearUtility,
    LocalizedSoftmaxPolicy,
    NetworkedMDP,
    QuadraticImitationUtility,
    Utility,
)
from verify.bounds import l1_radius, split_delta
from verify.checks import Case, CheckFailed, Mutant
from verify.checks import networked as nw
from verify.checks.planted import expected_diagnosis
from verify.checks.planted import networked as planted

MIN_CASES = 10
"""A check must have run at least this many instances for a pass to count."""

N_SAMPLES = 10_000
HORIZON = 20


@pytest.mark.parametrize("mutant", planted.MUTANTS, ids=[m.name for m in planted.MUTANTS])
def test_mutant_is_caught(mutant: Mutant) -> None:
    report = mutant.run()
    named = expected_diagnosis(mutant)
    if named is not None:  # the diagnosis names the planted bug (or the convention) it matches
        assert report.diagnosis is not None and named in report.diagnosis, report.diagnosis
    assert report.check == mutant.check
    assert not report.passed, str(report)
    assert report.failures >= 1
    assert "oracle" in report.where
    assert re.search(r"= -?[0-9.e+-]+, oracle -?[0-9.e+-]+", report.where), report.where
    with pytest.raises(CheckFailed, match=mutant.check):
        report.raise_if_failed()


@pytest.mark.parametrize("impl", planted.CORRECT, ids=[m.name for m in planted.CORRECT])
def test_correct_implementation_passes(impl: Mutant) -> None:
    report = impl.run()
    assert report.check == impl.check
    assert report.passed, str(report)
    assert report.cases >= (6 if "estimator" in impl.check else MIN_CASES)


def test_catalogue_covers_every_check() -> None:
    checks = {"shadow-reward", "truncated-critic-occupancy", "local-occupancy-estimator"}
    assert checks <= {m.check for m in planted.MUTANTS}
    assert checks <= {m.check for m in planted.CORRECT}
    assert len(planted.MUTANTS) >= 4


def test_shadow_reward_worst_case_replays(tmp_path: Path) -> None:
    bug = planted._shadow(planted.Bugs(transposed_kernel=True))
    report = nw.check_shadow_reward(bug, cases=6)
    assert not report.passed and report.worst_case is not None
    path = tmp_path / "case.npz"
    report.worst_case.save(path)
    again = nw.check_shadow_reward(bug, replay=Case.load(path))
    assert again.cases == 1
    assert again.worst_error == report.worst_error
    assert again.where == report.where


def test_truncated_critic_worst_case_replays(tmp_path: Path) -> None:
    bug = planted._critic("occupancy", planted.Bugs(kappa_shift=1))
    report = nw.check_truncated_critic(bug, cases=6)
    assert not report.passed and report.worst_case is not None
    path = tmp_path / "case.npz"
    report.worst_case.save(path)
    loaded = Case.load(path)
    again = nw.check_truncated_critic(bug, replay=loaded)
    assert again.cases == 1
    assert again.worst_error == report.worst_error
    assert again.where == report.where
    with pytest.raises(ModelError, match="replay case is from check"):
        nw.check_shadow_reward(planted._shadow(planted.Bugs()), replay=loaded)


def test_stochastic_replay_sees_the_same_draws(tmp_path: Path) -> None:
    fn = planted._estimator(planted.Bugs())
    report = nw.check_local_occupancy_estimator(fn, n_trajectories=2000, cases=3, seed=4)
    assert report.worst_case is not None
    path = tmp_path / "case.npz"
    report.worst_case.save(path)
    again = nw.check_local_occupancy_estimator(fn, n_trajectories=2000,
                                               replay=Case.load(path))
    assert again.worst_error == report.worst_error


def _every_utility(
    gamma: float,
) -> tuple[tuple[NetworkedMDP, LocalizedSoftmaxPolicy], tuple[Utility, ...]]:
    """A line of 3 binary agents with one utility of each stored kind (and both penalty forms)."""
    g = Graph.line(3)
    rng = np.random.default_rng(7)
    kernels = []
    for i in range(3):
        rows = 2 ** len(g.neighbourhood(i))
        k = rng.random((rows, 2, 2))
        kernels.append(k / k.sum(axis=2, keepdims=True))
    model = NetworkedMDP(g, (2, 2, 2), (2, 2, 2), tuple(kernels), gamma, rng.dirichlet(np.ones(8)))
    policy = LocalizedSoftmaxPolicy.random(model, 1, rng)
    target = rng.dirichlet(np.ones(4)).reshape(2, 2)
    extra: tuple[Utility, ...] = (
        LinearUtility(rng.uniform(-1, 1, (2, 2)), gamma),
        EntropyUtility((2, 2), gamma, 0.1),
        QuadraticImitationUtility(target, gamma),
        KLImitationUtility(target, gamma, 0.05),
        ConstraintPenaltyUtility(LinearUtility(np.ones((2, 2)), gamma), 5.0, 2.0, None),
        ConstraintPenaltyUtility(LinearUtility(np.ones((2, 2)), gamma), 5.0, 2.0,
                                 EntropyUtility((2, 2), gamma, 0.2)),
    )
    return (model, policy), extra


def test_case_files_round_trip_every_utility() -> None:
    (model, policy), kinds = _every_utility(0.6)
    for first in range(0, len(kinds), 3):
        utils = tuple(kinds[first:first + 3])
        x = nw._Instance(model, policy, utils, 1, 0)
        arrays = nw._to_arrays(x)
        back = nw._to_arrays(nw._from_arrays(arrays))
        assert arrays.keys() == back.keys()
        for key, value in arrays.items():
            np.testing.assert_array_equal(back[key], value, err_msg=key)
        lam = np.full((2, 2), 0.6)
        for u, v in zip(utils, nw._from_arrays(arrays).utilities, strict=True):
            assert type(u) is type(v)
            np.testing.assert_array_equal(v.gradient(lam), u.gradient(lam))


def test_wrong_shapes_and_exceptions_fail_the_case_not_the_check() -> None:
    def too_few(model: Any, policy: Any, utilities: Any) -> list[FloatArray]:
        return [np.zeros((model.n_states[i], model.n_actions[i])) for i in range(model.n - 1)]

    report = nw.check_shadow_reward(too_few, cases=4)
    assert not report.passed and report.failures == report.cases
    assert "arrays, expected n =" in report.where

    def flat(model: Any, policy: Any, utilities: Any) -> list[FloatArray]:
        return [np.zeros(model.n_states[i] * model.n_actions[i]) for i in range(model.n)]

    report = nw.check_shadow_reward(flat, cases=4)
    assert not report.passed and "returned shape" in report.where and "for agent 0" in report.where

    def table_over_z(model: Any, policy: Any, utilities: Any, i: int, kappa: int) -> FloatArray:
        return np.zeros(model.n_states[i] * model.n_actions[i] + 1)

    report = nw.check_truncated_critic(table_over_z, cases=4)
    assert not report.passed and report.failures == report.cases
    assert "returned shape" in report.where

    def domain_error(model: Any, policy: Any, utilities: Any) -> list[FloatArray]:
        return [u.gradient(np.full(7, -1.0)) for u in utilities]

    report = nw.check_shadow_reward(domain_error, cases=3)
    assert not report.passed and "the callable raised UtilityDomainError" in report.where

    def boom(*args: Any) -> list[FloatArray]:
        raise RuntimeError("no sampler")

    report = nw.check_local_occupancy_estimator(boom, cases=2)
    assert not report.passed and "RuntimeError: no sampler" in report.where

    def nan(model: Any, policy: Any, utilities: Any, i: int, kappa: int) -> FloatArray:
        return np.full((model.states.size, model.actions.size), np.nan)

    report = nw.check_truncated_critic(nan, cases=2)
    assert not report.passed and "is not finite" in report.where


def test_bad_check_arguments_raise() -> None:
    fn = planted._shadow(planted.Bugs())
    with pytest.raises(ModelError, match="utility kind"):
        nw.check_shadow_reward(fn, utility_kinds=("cubic",))
    critic = planted._critic("occupancy", planted.Bugs())
    with pytest.raises(ModelError, match="weights"):
        nw.check_truncated_critic(critic, weights=cast(Any, "median"))
    with pytest.raises(ModelError, match="kappa"):
        nw.check_truncated_critic(critic, -1)
    with pytest.raises(ModelError, match="false_alarm"):
        nw.check_local_occupancy_estimator(planted._estimator(planted.Bugs()), false_alarm=0.1)


def test_fixed_kappa_is_used() -> None:
    seen: list[int] = []

    def spy(model: Any, policy: Any, utilities: Any, i: int, kappa: int) -> FloatArray:
        seen.append(kappa)
        return planted.truncated_critic(model, policy, utilities, i, kappa)

    report = nw.check_truncated_critic(spy, 2, weights="occupancy", cases=4)
    assert report.passed, str(report)
    assert seen == [2] * report.cases


def test_linear_utilities_alone_cannot_reveal_a_wrong_occupancy() -> None:
    """As the docstring warns: a linear utility's gradient is its reward whatever the
    occupancy, so the transposed kernel passes when only linear utilities are drawn."""
    bug = planted._shadow(planted.Bugs(transposed_kernel=True))
    assert nw.check_shadow_reward(bug, utility_kinds=("linear",), cases=4).passed
    assert not nw.check_shadow_reward(bug, utility_kinds=("entropy",), cases=4).passed


def _unreachable_instance() -> nw._Instance:
    """Two agents on an edge.  Agent 1 starts in state 0 and never leaves it, so the groups
    ``z = (s_1 = 1, a_1)`` of agent 1 at ``kappa = 0`` have no occupancy; from ``s_1 = 1`` agent
    1 would move according to ``s_0``, so its shadow Q varies on those groups."""
    g = Graph.line(2)
    P0 = np.zeros((2, 2, 2, 2))  # (s_0, s_1, a_0, s'_0)
    P0[:, 0, :, :] = [0.3, 0.7]
    P0[:, 1, :, :] = [0.9, 0.1]
    P0[1, :, 1, :] = [0.5, 0.5]
    P1 = np.zeros((2, 2, 2, 2))  # (s_0, s_1, a_1, s'_1)
    P1[:, 0, :, 0] = 1.0  # 0 stays 0
    P1[0, 1, :, :] = [0.8, 0.2]
    P1[1, 1, :, :] = [0.1, 0.9]
    model = NetworkedMDP(g, (2, 2), (2, 2), (P0, P1), 0.7,
                         (np.array([0.5, 0.5]), np.array([1.0, 0.0])))
    policy = LocalizedSoftmaxPolicy.random(model, 0, np.random.default_rng(3))
    utils = (LinearUtility(np.array([[1.0, -1.0], [0.5, 0.0]]), 0.7),
             LinearUtility(np.array([[0.2, 0.4], [-1.0, 1.0]]), 0.7))
    return nw._Instance(model, policy, utils, agent=1, kappa=0)


def _zero_mass_convention(shift: float) -> Any:
    """The correct occupancy-weighted critic, except that each zero-mass group of
    :func:`_unreachable_instance` gets the largest ``Q_1`` on the group plus ``shift``."""

    def fn(model: Any, policy: Any, utilities: Any, i: int, kappa: int) -> FloatArray:
        out = planted.truncated_critic(model, policy, utilities, i, kappa).copy()
        q = planted.truncated_critic(model, policy, utilities, i, model.n)  # untruncated
        dead = model.states.digits[:, 1] == 1
        for a1 in range(2):
            group = dead[:, None] & (model.actions.digits[:, 1] == a1)[None, :]
            out[group] = q[group].max() + shift
        return out

    return fn


def test_groups_without_occupancy_accept_any_value_in_their_range() -> None:
    """On a zero-mass group the conditional weights are undetermined: any convex
    combination passes (here the group's maximum, not the oracle's uniform mean), a value
    outside the group's range fails."""
    x = _unreachable_instance()
    q = planted.truncated_critic(x.model, x.policy, x.utilities, 1, 2)
    dead = x.model.states.digits[:, 1] == 1
    assert np.ptp(q[dead][:, x.model.actions.digits[:, 1] == 0]) > 0.1  # the range is wide
    case = Case("truncated-critic-occupancy", 0, 0, nw._to_arrays(x))
    assert nw.check_truncated_critic(_zero_mass_convention(0.0), replay=case).passed
    bad = nw.check_truncated_critic(_zero_mass_convention(0.5), replay=case)
    assert not bad.passed and "oracle" in bad.where


def test_estimator_tolerance_is_the_stated_radius() -> None:
    report = nw.check_local_occupancy_estimator(
        planted._estimator(planted.Bugs()), n_trajectories=N_SAMPLES, horizon=HORIZON, cases=3
    )
    assert report.false_alarm == 1e-6
    case = report.worst_case
    assert case is not None
    match = re.search(r"lamtilde_(\d+)", report.where)
    assert match is not None
    i = int(match.group(1))
    g = float(case.arrays["gamma"])
    n_agents = int(case.arrays["n_agents"])
    dim = int(case.arrays["n_states"][i] * case.arrays["n_actions"][i])
    L = (1 - g**HORIZON) / (1 - g)
    radius = l1_radius(N_SAMPLES, dim, L, split_delta(1e-6 / 3, n_agents))  # 3 cases
    assert report.worst_tolerance == pytest.approx(radius, rel=1e-12)
    assert report.power is not None and "0.99" in report.power
