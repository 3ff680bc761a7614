"""Planted bugs in cooperative-game implementations (localized Q, MA-PPO step, joint ratio) are
caught; correct ones pass (verify/checks/planted/cooperative.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reference.cooperative import (
    ConditionalPolicy,
    CooperativeMarkovGame,
    evaluate_game,
    mirror_descent_step,
)
from verify.checks import Case, CheckFailed, CheckReport, Mutant
from verify.checks.cooperative import (
    BETA_RANGE,
    FULL_SUPPORT,
    check_joint_ratio,
    check_localized_q,
    check_mappo_step,
    localized_q_tolerance,
    ratio_relative_tolerance,
    step_relative_tolerance,
)
from verify.checks.planted import cooperative as planted
from verify.checks.planted import expected_diagnosis

MIN_CASES = 10
"""A check must have run at least this many instances for a pass to count."""


def _game_and_policy(case: Case, prefix: str = "pi") -> tuple[CooperativeMarkovGame,
                                                                ConditionalPolicy]:
    a = case.arrays
    game = CooperativeMarkovGame(a["P"], a["r"], a["rho"], float(a["gamma"]))
    conds = tuple(np.array(a[f"{prefix}{m}"]) for m in range(game.n_agents))
    return game, ConditionalPolicy(game, conds)


@pytest.mark.parametrize("mutant", planted.MUTANTS, ids=[m.name for m in planted.MUTANTS])
def test_mutant_is_caught(mutant: Mutant) -> None:
    report = mutant.run()
    named = expected_diagnosis(mutant)
    if named is not None:  # the diagnosis names the planted bug (or the convention) it matches
        assert report.diagnosis is not None and named in report.diagnosis, report.diagnosis
    assert report.check == mutant.check
    assert not report.passed, str(report)
    assert report.failures >= 1
    assert "oracle" in report.where and "[" in report.where, report.where
    with pytest.raises(CheckFailed, match=mutant.check):
        report.raise_if_failed()


@pytest.mark.parametrize("impl", planted.CORRECT, ids=[m.name for m in planted.CORRECT])
def test_correct_implementation_passes(impl: Mutant) -> None:
    report = impl.run()
    assert report.check == impl.check
    assert report.passed, str(report)
    assert report.cases >= MIN_CASES
    assert report.false_alarm is None and report.power is None


def test_catalogue_covers_every_check() -> None:
    checks = {"localized-q", "mappo-step", "joint-ratio", "agent-ratios"}
    assert {m.check for m in planted.MUTANTS} == checks
    assert {m.check for m in planted.CORRECT} == checks
    assert all(m.bug.startswith("correct implementation") for m in planted.CORRECT)
    assert len({m.name for m in planted.MUTANTS + planted.CORRECT}) == len(
        planted.MUTANTS + planted.CORRECT
    )


_REPLAYABLE: list[tuple[Callable[..., CheckReport], Callable[..., object]]] = [
    (check_localized_q, planted.localized_q_agent_last_first),
    (check_mappo_step, planted.mappo_step_updated_later_agents),
    (check_joint_ratio, planted.joint_ratio_mean_of_agents),
]


@pytest.mark.parametrize("check, fn", _REPLAYABLE, ids=["localized-q", "mappo-step",
                                                         "joint-ratio"])
def test_worst_case_replays(
    check: Callable[..., CheckReport], fn: Callable[..., object], tmp_path: Path
) -> None:
    report = check(fn, cases=15)
    assert not report.passed
    assert report.worst_case is not None
    path = tmp_path / "case.npz"
    report.worst_case.save(path)
    again = check(fn, replay=Case.load(path))
    assert again.cases == 1 and not again.passed
    assert again.worst_error == report.worst_error
    assert again.worst_tolerance == report.worst_tolerance
    assert again.where == report.where


def test_wrong_count_and_shape_fail_the_case_not_the_check() -> None:
    def too_few(P: Any, r: Any, g: float, conds: Any) -> Any:
        return planted.localized_q(P, r, g, conds)[1:]

    report = check_localized_q(too_few, cases=8)
    assert not report.passed and report.failures >= 1
    assert "arrays, expected" in report.where and "one per agent" in report.where

    def bare_array(P: Any, r: Any, g: float, conds: Any) -> Any:
        return planted.localized_q(P, r, g, conds)[-1]

    report = check_localized_q(bare_array, cases=5)
    assert report.failures == report.cases
    assert "returned ndarray, expected a tuple" in report.where

    def transposed(conds: Any, q: Any, beta: float) -> Any:
        return tuple(np.swapaxes(c, 0, -1) for c in planted.mappo_step(conds, q, beta))

    report = check_mappo_step(transposed, cases=12)
    assert not report.passed
    assert "has shape" in report.where and "expected" in report.where

    report = check_joint_ratio(lambda new, old, s, a: np.ones((s.shape[0], 1)), cases=5)
    assert report.failures == report.cases
    assert "returned shape" in report.where and ", 1)" in report.where

    def boom(*args: object) -> Any:
        raise RuntimeError("no solver")

    report = check_localized_q(boom, cases=3)
    assert report.failures == report.cases and "RuntimeError: no solver" in report.where

    report = check_joint_ratio(lambda new, old, s, a: np.full(s.shape[0], np.nan), cases=3)
    assert report.failures == report.cases and "is not finite" in report.where


def test_callables_get_copies() -> None:
    """A callable that scribbles over its inputs after answering cannot corrupt the oracle."""

    def vandal(P: np.ndarray, r: np.ndarray, g: float, conds: Any) -> Any:
        out = planted.localized_q(P, r, g, conds)
        P[...] = 0.0
        for c in conds:
            c[...] = 0.0
        return tuple(x.copy() for x in out)

    assert check_localized_q(vandal, cases=12).passed

    def vandal_ratio(new: tuple[np.ndarray, ...], old: tuple[np.ndarray, ...],
                     s: np.ndarray, a: np.ndarray) -> Any:
        out = planted.joint_ratio(new, old, s, a)
        a[...] = 0
        return out

    assert check_joint_ratio(vandal_ratio, cases=12).passed


def test_instances_cover_the_edge_cases_and_interacting_agents() -> None:
    """The localized-Q check sees one agent, three agents, heterogeneous action counts,
    ``gamma = 0`` and ``gamma > 0``; the step check sees both ends of ``BETA_RANGE`` and
    policies of full support."""
    seen: list[tuple[int, tuple[int, ...], float]] = []

    def spy(P: np.ndarray, r: np.ndarray, g: float, conds: Any) -> Any:
        seen.append((len(conds), tuple(P.shape[1:-1]), g))
        return planted.localized_q(P, r, g, conds)

    assert check_localized_q(spy, cases=40).passed
    agents = {n for n, _, _ in seen}
    assert {1, 3} <= agents
    assert any(len(set(k)) > 1 for _, k, _ in seen)
    assert any(g == 0.0 for _, _, g in seen) and any(g >= 0.45 for _, _, g in seen)

    betas: list[float] = []
    smallest: list[float] = []

    def spy_step(conds: Any, q: Any, beta: float) -> Any:
        betas.append(beta)
        smallest.append(min(float(c.min()) for c in conds))
        return planted.mappo_step(conds, q, beta)

    assert check_mappo_step(spy_step, cases=40).passed
    assert min(betas) == BETA_RANGE[0] and max(betas) == BETA_RANGE[1]
    assert min(smallest) >= FULL_SUPPORT * (1 - 1e-12)


def test_localized_q_tolerance_is_the_derived_one() -> None:
    """Default: the oracle's LU-plus-marginalisation rounding, twice; with ``atol`` the
    oracle's share plus ``atol``."""
    report = check_localized_q(planted.localized_q, cases=10)
    assert report.worst_case is not None
    game, _ = _game_and_policy(report.worst_case)
    assert report.worst_tolerance == pytest.approx(2 * localized_q_tolerance(game), rel=1e-12)
    loose = check_localized_q(planted.localized_q, atol=1e-9, cases=10)
    assert loose.worst_case is not None
    game, _ = _game_and_policy(loose.worst_case)
    assert loose.worst_tolerance == pytest.approx(localized_q_tolerance(game) + 1e-9, rel=1e-12)
    # an error well above the derived tolerance but within a stated atol passes
    def off(P: np.ndarray, r: np.ndarray, g: float, conds: Any) -> Any:
        return tuple(x + 1e-10 for x in planted.localized_q(P, r, g, conds))

    assert not check_localized_q(off, cases=10).passed
    assert check_localized_q(off, atol=2e-10, cases=10).passed


def test_step_and_ratio_tolerances_are_relative_to_the_oracle_entry() -> None:
    """The worst entry's tolerance is ``2 rel * oracle`` with ``rel`` recomputed from the saved
    case (step: largest action count and logit scale, plus ``rel`` on the row's mass 1 for
    the callable; ratio: agent count and log scale)."""
    report = check_mappo_step(planted.mappo_step_beta_multiplied, cases=15)
    case = report.worst_case
    assert case is not None
    game, pol = _game_and_policy(case)
    beta = float(case.arrays["beta_k"])
    q = evaluate_game(game, pol).localized
    scale = max(float(np.max(np.abs(np.log(c)))) for c in pol.conditionals) + max(
        float(np.max(np.abs(x))) for x in q
    ) / beta
    rel = step_relative_tolerance(max(game.action_counts), scale)
    new = mirror_descent_step(pol, q, beta).conditionals
    entries = np.concatenate([c.ravel() for c in new])
    assert np.any(np.isclose(rel * (2 * entries + 1), report.worst_tolerance, rtol=1e-12,
                             atol=0))

    rep = check_joint_ratio(planted.joint_ratio_last_agent_only, cases=15)
    case = rep.worst_case
    assert case is not None
    game, old = _game_and_policy(case)
    _, new_pol = _game_and_policy(case, "new")
    s, a = case.arrays["states"], case.arrays["actions"]
    idx = (s, *(a[:, m] for m in range(game.n_agents)))
    want = new_pol.joint()[idx] / old.joint()[idx]
    log_scale = max(
        float(np.max(np.abs(np.log(c)))) for c in (*old.conditionals, *new_pol.conditionals)
    )
    rel = ratio_relative_tolerance(game.n_agents, log_scale)
    assert np.any(np.isclose(2 * rel * want, rep.worst_tolerance, rtol=1e-12, atol=0))
