"""Planted bugs in GAE routines are caught; correct ones pass (verify/checks/planted/gae.py).
The oracle's two routes agree, and its rounding bound holds in exact arithmetic
(proofs_notes/gae.md)."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given

from reference._arrays import FloatArray
from reference.errors import ModelError
from verify.checks import Case, CheckFailed, Mutant
from verify.checks.gae import (
    BoolArray,
    _Rollout,
    _rollouts,
    check_gae,
    gae_finite_sum,
    gae_recursion,
    gae_rounding,
    gae_rounding_entries,
)
from verify.checks.planted import expected_diagnosis
from verify.checks.planted import gae as planted
from verify.tolerances import summation_tolerance

MIN_CASES = 10
"""A check must have run at least this many instances for a pass to count."""

WHERE = re.compile(r"^[AR]\[b=\d+, t=\d+\] = \S+, oracle \S+ \(step [a-z ,]+; B=\d+, T=\d+, ")


@pytest.mark.parametrize("mutant", planted.MUTANTS, ids=[m.name for m in planted.MUTANTS])
def test_mutant_is_caught(mutant: Mutant) -> None:
    report = mutant.run()
    named = expected_diagnosis(mutant)
    if named is not None:  # the diagnosis names the planted bug (or the convention) it matches
        assert report.diagnosis is not None and named in report.diagnosis, report.diagnosis
    assert report.check == mutant.check == "gae"
    assert not report.passed, str(report)
    assert report.failures >= 1
    assert WHERE.match(report.where), report.where
    with pytest.raises(CheckFailed, match="gae"):
        report.raise_if_failed()


@pytest.mark.parametrize("impl", planted.CORRECT, ids=[m.name for m in planted.CORRECT])
def test_correct_implementation_passes(impl: Mutant) -> None:
    report = impl.run()
    assert report.check == impl.check
    assert report.passed, str(report)
    assert report.cases >= MIN_CASES
    assert report.false_alarm is None and report.power is None


def _args(ro: _Rollout) -> tuple[FloatArray, FloatArray, FloatArray, BoolArray, BoolArray,
                                 float, float]:
    return (ro.rewards, ro.values, ro.next_values, ro.terminated, ro.truncated, ro.gamma,
            ro.lam)


@given(_rollouts(None, None))
def test_two_oracle_routes_agree(ro: _Rollout) -> None:
    """proofs_notes/gae.md#finite-sum: recursion and finite sum, each within gae_rounding."""
    bound = gae_rounding(ro.rewards, ro.values, ro.next_values, ro.terminated, ro.gamma)
    np.testing.assert_allclose(gae_recursion(*_args(ro)), gae_finite_sum(*_args(ro)),
                               rtol=0, atol=2 * bound)


def _exact(ro: _Rollout) -> list[list[Fraction]]:
    """GAE in rationals from the float inputs (which are exact rationals)."""
    g, lm = Fraction(ro.gamma), Fraction(ro.lam)
    n_envs, n_steps = ro.rewards.shape
    out = []
    for b in range(n_envs):
        row = [Fraction(0)] * n_steps
        after = Fraction(0)
        for t in range(n_steps - 1, -1, -1):
            boot = Fraction(0) if ro.terminated[b, t] else Fraction(float(ro.next_values[b, t]))
            delta = Fraction(float(ro.rewards[b, t])) + g * boot - Fraction(float(ro.values[b, t]))
            done = bool(ro.terminated[b, t] or ro.truncated[b, t])
            after = delta + (Fraction(0) if done else g * lm * after)
            row[t] = after
        out.append(row)
    return out


@given(_rollouts(None, None))
def test_rounding_bound_holds_in_exact_arithmetic(ro: _Rollout) -> None:
    """proofs_notes/gae.md#rounding: both routes within gae_rounding of the exact value."""
    exact = _exact(ro)
    bound = Fraction(gae_rounding(ro.rewards, ro.values, ro.next_values, ro.terminated,
                                  ro.gamma))
    for route in (gae_recursion, gae_finite_sum):
        got = route(*_args(ro))
        for b, row in enumerate(exact):
            for t, want in enumerate(row):
                assert abs(Fraction(float(got[b, t])) - want) <= bound, (route.__name__, b, t)


def test_three_correct_routines_agree_with_the_worked_example() -> None:
    """proofs_notes/gae.md#example, through the planted correct routines."""
    r = np.array([[1.0, 0.0, 1.0, 0.0, 1.0]])
    v = np.array([[1.0, 2.0, 0.0, 2.0, 4.0]])
    nv = np.array([[2.0, 8.0, 2.0, 100.0, 6.0]])
    term = np.array([[False, False, False, True, False]])
    trunc = np.array([[False, True, False, False, False]])
    for fn in (planted.gae_vectorised, planted.gae_per_env, planted.gae_discount_matrix):
        assert fn(r, v, nv, term, trunc, 0.5, 0.5).tolist() == [[1.5, 2.0, 1.5, -2.0, 0.0]]


def test_instances_cover_every_kind_of_episode_end() -> None:
    """The default run sees terminations, truncations, both flags at once, ends at the last
    step, and rollouts whose next_values continue values inside an episode."""
    seen: list[tuple[FloatArray, FloatArray, FloatArray, BoolArray, BoolArray, float, float]]
    seen = []

    def spy(r: FloatArray, v: FloatArray, nv: FloatArray, term: BoolArray, trunc: BoolArray,
            gamma: float, lam: float) -> FloatArray:
        seen.append((r, v, nv, term, trunc, gamma, lam))
        return planted.gae_vectorised(r, v, nv, term, trunc, gamma, lam)

    report = check_gae(spy, cases=50)
    assert report.passed and report.cases == len(seen) == 50
    term = [x[3] for x in seen]
    trunc = [x[4] for x in seen]
    assert any(np.any(a & ~b) for a, b in zip(term, trunc, strict=True))
    assert any(np.any(b & ~a) for a, b in zip(term, trunc, strict=True))
    assert any(np.any(a & b) for a, b in zip(term, trunc, strict=True))
    assert any(np.any(a[:, -1] | b[:, -1]) for a, b in zip(term, trunc, strict=True))
    assert any(np.any(a[:, :-1] | b[:, :-1]) for a, b in zip(term, trunc, strict=True))
    assert max(x[0].shape[0] for x in seen) >= 3 and max(x[0].shape[1] for x in seen) >= 8
    assert max(float(np.max(np.abs(x[1]))) for x in seen) > 10.0
    for _, v, nv, te, tr, gamma, lam in seen:
        assert 0.0 <= gamma <= 0.99 and 0.0 <= lam <= 1.0
        inside = ~(te | tr)[:, :-1]
        np.testing.assert_array_equal(nv[:, :-1][inside], v[:, 1:][inside])


def test_tolerance_is_the_derived_rounding() -> None:
    """Tolerance = gae_rounding twice (oracle and user), or gae_rounding + atol."""
    report = check_gae(planted.gae_per_env, cases=20, seed=5)
    case = report.worst_case
    assert case is not None
    a = case.arrays
    m = (np.abs(a["rewards"]) + float(a["gamma"]) * np.abs(np.where(a["terminated"], 0.0,
         a["next_values"])) + np.abs(a["values"]))
    ours = summation_tolerance(a["rewards"].shape[1], 2 * max(float(m.max()), 2.0**-1022))
    assert report.worst_tolerance == pytest.approx(2 * ours, rel=1e-12)
    again = check_gae(planted.gae_per_env, atol=1e-3, replay=case)
    assert again.worst_tolerance == pytest.approx(ours + 1e-3, rel=1e-12)


def test_tolerance_is_tight() -> None:
    """A correct routine off by 1e-9 in one entry fails; the same within atol passes."""

    def nudged(*args: object) -> FloatArray:
        out = planted.gae_vectorised(*args)  # type: ignore[arg-type]
        out[0, -1] += 1e-9
        return out

    assert not check_gae(nudged, cases=10).passed
    assert check_gae(nudged, atol=2e-9, cases=10).passed


def test_fixed_gamma_and_lam_are_used() -> None:
    seen: set[tuple[float, float]] = set()

    def spy(r: FloatArray, v: FloatArray, nv: FloatArray, term: BoolArray, trunc: BoolArray,
            gamma: float, lam: float) -> FloatArray:
        seen.add((gamma, lam))
        return planted.gae_per_env(r, v, nv, term, trunc, gamma, lam)

    assert check_gae(spy, gamma=0.97, lam=0.95, cases=10).passed
    assert seen == {(0.97, 0.95)}
    # at lam = 0, A = delta: the trace bug is invisible, the terminal-bootstrap bug is not
    assert check_gae(planted.trace_not_reset, lam=0.0, cases=20).passed
    assert not check_gae(planted.bootstrap_through_terminal, lam=0.0, cases=20).passed


@pytest.mark.parametrize("kwargs", [{"gamma": 1.5}, {"lam": -0.1}, {"gamma": True},
                                    {"atol": -1.0}, {"cases": 0}])
def test_bad_arguments_raise(kwargs: dict[str, object]) -> None:
    with pytest.raises(ModelError):
        check_gae(planted.gae_vectorised, **kwargs)  # type: ignore[arg-type]


def test_worst_case_replays(tmp_path: Path) -> None:
    report = check_gae(planted.done_flags_one_step_late, cases=30)
    assert not report.passed and report.worst_case is not None
    path = tmp_path / "case.npz"
    report.worst_case.save(path)
    loaded = Case.load(path)
    assert loaded.arrays["terminated"].dtype == np.bool_
    again = check_gae(planted.done_flags_one_step_late, replay=loaded)
    assert again.cases == 1 and not again.passed
    assert again.worst_error == report.worst_error
    assert again.where == report.where
    # the correct routine passes the same case
    assert check_gae(planted.gae_vectorised, replay=loaded).passed


def test_replay_of_a_malformed_case_raises(tmp_path: Path) -> None:
    report = check_gae(planted.gae_vectorised, cases=3)
    assert report.worst_case is not None
    arrays = dict(report.worst_case.arrays)
    arrays["truncated"] = np.asarray(arrays["truncated"], dtype=np.float64)
    bad = Case("gae", 0, 0, arrays)
    with pytest.raises(ModelError, match="truncated has dtype float64"):
        check_gae(planted.gae_vectorised, replay=bad)


def test_wrong_shape_and_exceptions_fail_the_case_not_the_check() -> None:
    report = check_gae(lambda r, v, nv, te, tr, g, lm: np.zeros(r.shape[1]), cases=5)
    assert not report.passed and report.failures == report.cases == 5
    assert "the callable returned shape (" in report.where and "(B, T)" in report.where

    report = check_gae(lambda r, v, nv, te, tr, g, lm: planted.gae_vectorised(
        r, v, nv, te, tr, g, lm).T, cases=10)
    assert not report.passed and "returned shape" in report.where

    def boom(*args: object) -> object:
        raise RuntimeError("no trace")

    report = check_gae(boom, cases=3)  # type: ignore[arg-type]
    assert not report.passed and "RuntimeError: no trace" in report.where

    def nan_at_terminal(r: FloatArray, v: FloatArray, nv: FloatArray, te: BoolArray,
                        tr: BoolArray, g: float, lm: float) -> FloatArray:
        out = planted.gae_vectorised(r, v, nv, te, tr, g, lm)
        out[te] = np.nan
        return out

    report = check_gae(nan_at_terminal, cases=20)
    assert not report.passed and "is not finite (step terminated" in report.where


@given(_rollouts(None, None))
def test_entrywise_rounding_bound_holds_in_exact_arithmetic(ro: _Rollout) -> None:
    """proofs_notes/gae.md#rounding-entrywise: both oracle routes and the planted correct
    routines (vectorised, per environment, discount matrix) within gae_rounding_entries of the
    exact value, entry by entry."""
    exact = _exact(ro)
    bound = gae_rounding_entries(*_args(ro))
    routes = (gae_recursion, gae_finite_sum, planted.gae_vectorised, planted.gae_per_env,
              planted.gae_discount_matrix)
    for route in routes:
        got = route(*_args(ro))
        for b, row in enumerate(exact):
            for t, want in enumerate(row):
                assert abs(Fraction(float(got[b, t])) - want) <= Fraction(float(bound[b, t])), (
                    route.__name__, b, t)
