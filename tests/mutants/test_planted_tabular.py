"""Planted bugs in single-agent tabular implementations are caught; correct ones pass
(verify/checks/planted/tabular.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from verify.bounds import empirical_bernstein_radius, l1_radius, split_delta
from verify.checks import (
    Case,
    CheckFailed,
    Mutant,
    check_occupancy,
    check_occupancy_estimator,
    check_policy_gradient_estimator,
    finite_horizon_occupancy,
)
from verify.checks.planted import expected_diagnosis
from verify.checks.planted import tabular as planted

MIN_CASES = 10
"""A check must have run at least this many instances for a pass to count."""


@pytest.mark.parametrize("mutant", planted.MUTANTS, ids=[m.name for m in planted.MUTANTS])
def test_mutant_is_caught(mutant: Mutant) -> None:
    report = mutant.run()
    named = expected_diagnosis(mutant)
    if named is not None:  # the diagnosis names the planted bug (or the convention) it matches
        assert report.diagnosis is not None and named in report.diagnosis, report.diagnosis
    assert report.check == mutant.check
    assert not report.passed, str(report)
    assert report.failures >= 1
    assert "oracle" in report.where or "outside" in report.where
    with pytest.raises(CheckFailed, match=mutant.check):
        report.raise_if_failed()


@pytest.mark.parametrize("impl", planted.CORRECT, ids=[m.name for m in planted.CORRECT])
def test_correct_implementation_passes(impl: Mutant) -> None:
    report = impl.run()
    assert report.check == impl.check
    assert report.passed, str(report)
    assert report.cases >= MIN_CASES


def test_worst_case_replays(tmp_path: Path) -> None:
    report = check_occupancy(planted.occupancy_transposed, cases=30)
    assert report.worst_case is not None
    path = tmp_path / "case.npz"
    report.worst_case.save(path)
    again = check_occupancy(planted.occupancy_transposed, replay=Case.load(path))
    assert again.cases == 1
    assert again.worst_error == report.worst_error
    assert again.where == report.where


def test_stochastic_replay_sees_the_same_draws(tmp_path: Path) -> None:
    report = check_occupancy_estimator(planted.occupancy_estimator, cases=5, seed=3)
    assert report.worst_case is not None
    path = tmp_path / "case.npz"
    report.worst_case.save(path)
    again = check_occupancy_estimator(planted.occupancy_estimator, replay=Case.load(path))
    assert again.worst_error == report.worst_error


def test_wrong_shape_and_exceptions_fail_the_case_not_the_check() -> None:
    report = check_occupancy(lambda P, rho, g, pi: np.zeros(3), cases=5)
    assert not report.passed and report.failures == report.cases
    assert "returned shape (3,)" in report.where

    def boom(P: object, rho: object, g: float, pi: object) -> object:
        raise RuntimeError("no solver")

    report = check_occupancy(boom, cases=3)
    assert not report.passed and "RuntimeError: no solver" in report.where


def test_stochastic_tolerances_are_the_stated_radii() -> None:
    """The occupancy estimator's tolerance is ``l1_radius`` at the case's ``L``; the gradient
    estimator's is the empirical Bernstein radius of the worst entry."""
    n, H = 20_000, 20
    report = check_occupancy_estimator(planted.occupancy_estimator, cases=4)
    case = report.worst_case
    assert case is not None
    g = float(case.arrays["gamma"])
    nS, nA = case.arrays["pi"].shape
    L = (1 - g**H) / (1 - g)
    # 1e-6 split over the 4 cases
    assert report.worst_tolerance == pytest.approx(l1_radius(n, nS * nA, L, 1e-6 / 4), rel=1e-12)
    assert report.false_alarm == 1e-6
    rep = check_policy_gradient_estimator(
        planted._pg_correct, bound=planted.pg_bound, n_samples=5000, cases=3
    )
    worst = rep.worst_case
    assert worst is not None
    nS, nA = worst.arrays["theta"].shape
    bound = planted.pg_bound(worst.arrays["r"], float(worst.arrays["gamma"]))
    delta = split_delta(1e-6 / 3, nS * nA)  # 3 cases
    # the radius at zero variance is the smallest the check can use; at the range's maximal
    # variance (width^2 / 4) the largest
    lo = empirical_bernstein_radius(5000, 0.0, 2 * bound, delta)
    hi = empirical_bernstein_radius(5000, bound**2, 2 * bound, delta)
    assert lo <= rep.worst_tolerance <= hi


def test_finite_horizon_occupancy_has_the_truncated_mass() -> None:
    """``sum lam^H = (1 - gamma^H)/(1 - gamma)`` exactly (a second route to its mass)."""
    report_case = check_occupancy_estimator(planted.occupancy_estimator, cases=3).worst_case
    assert report_case is not None
    from reference.tabular import TabularMDP

    a = report_case.arrays
    mdp = TabularMDP(a["P"], a["r"], a["rho"], float(a["gamma"]))
    lam = finite_horizon_occupancy(mdp, np.array(a["pi"]), 20)
    g = mdp.gamma
    assert lam.sum() == pytest.approx((1 - g**20) / (1 - g), rel=1e-12)


def test_oracle_errors_are_not_blamed_on_the_callable(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception inside the oracle propagates; only the user's callable can fail a case."""
    import verify.checks.tabular as tab

    def broken(*args: object) -> object:
        raise FloatingPointError("oracle blew up")

    monkeypatch.setattr(tab, "occupancy", broken)
    with pytest.raises(FloatingPointError, match="oracle blew up"):
        check_occupancy(planted.occupancy, cases=3)


def test_checks_run_under_numpy_errors_raised() -> None:
    """Underflow inside an oracle is benign: under ``np.seterr(all="raise")`` (a common test
    setting) every correct implementation of two areas still passes."""
    import subprocess
    import sys

    code = (
        "import numpy as np; np.seterr(all='raise'); from verify.cli import main; "
        # serial: the error state set here must reach the checks (a spawned pool would not
        # inherit it)
        "raise SystemExit(main(['mutants', '--area', 'gae', '--area', 'tabular', '--json', "
        "'--executor', 'serial']))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_report_counts_distinct_cases_and_hints_atol() -> None:
    """A solve's near miss gets the atol hint; a failure diagnosed as a known bug names the
    bug instead."""
    report = check_occupancy(planted.occupancy_transposed, cases=40)
    assert 1 <= report.distinct_cases <= report.cases
    assert "atol=" not in str(report)
    assert report.diagnosis is not None and "occupancy-transposed-kernel" in report.diagnosis
    rounded = check_occupancy(
        lambda P, rho, g, pi: planted.occupancy(P, rho, g, pi) * (1 + 1e-9), cases=20
    )
    assert not rounded.passed and "atol=" in str(rounded)
    loose = check_occupancy(
        lambda P, rho, g, pi: planted.occupancy(P, rho, g, pi) * (1 + 1e-9), atol=1e-7, cases=20
    )
    assert loose.passed
