"""Planted bugs in TD(lambda), n-step and V-trace routines are caught and diagnosed; correct
ones pass (verify/checks/planted/returns.py, vtrace.py).  The oracles' second routes agree
(proofs_notes/returns.md)."""

from __future__ import annotations

import numpy as np
import pytest

from verify.checks import CheckArgumentError, Mutant
from verify.checks._core import case_generator, case_size
from verify.checks.gae import _generate, gae_recursion
from verify.checks.planted import expected_diagnosis
from verify.checks.planted import returns as planted_returns
from verify.checks.planted import vtrace as planted_vtrace
from verify.checks.returns import (
    _vtrace_generate,
    _vtrace_rounding,
    check_nstep_returns,
    check_td_lambda,
    check_vtrace,
    nstep_returns,
    td_lambda_returns,
    vtrace_finite_sum,
    vtrace_recursion,
)

MUTANTS = planted_returns.MUTANTS + planted_vtrace.MUTANTS
CORRECT = planted_returns.CORRECT + planted_vtrace.CORRECT


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_mutant_is_caught(mutant: Mutant) -> None:
    report = mutant.run()
    assert report.check == mutant.check
    assert not report.passed and report.failures >= 1, str(report)
    named = expected_diagnosis(mutant)
    if named is not None:
        assert report.diagnosis is not None and named in report.diagnosis, report.diagnosis


@pytest.mark.parametrize("impl", CORRECT, ids=[m.name for m in CORRECT])
def test_correct_implementation_passes(impl: Mutant) -> None:
    report = impl.run()
    assert report.passed, str(report)
    assert report.cases >= 10 and report.diagnosis is None


def test_every_planted_bug_cites_its_provenance() -> None:
    for mod in (planted_returns, planted_vtrace):
        for name in dir(mod):
            obj = getattr(mod, name)
            doc = getattr(obj, "__doc__", "") or ""
            if callable(obj) and doc.startswith("Bug"):
                assert "provenance:" in doc, name


def _rollouts(n: int = 40):  # type: ignore[no-untyped-def]
    for i in range(n):
        yield _generate(case_generator("returns-test", 0, i), case_size(i, n), None, None)


def test_td_lambda_is_gae_plus_values() -> None:
    for ro in _rollouts():
        g = td_lambda_returns(ro.rewards, ro.next_values, ro.terminated, ro.truncated,
                              ro.gamma, ro.lam)
        a = gae_recursion(ro.rewards, ro.values, ro.next_values, ro.terminated, ro.truncated,
                          ro.gamma, ro.lam)
        np.testing.assert_allclose(g, a + ro.values, rtol=0, atol=1e-9)


def test_nstep_with_a_long_window_is_td_one_and_with_n_1_is_td_zero() -> None:
    for ro in _rollouts():
        args = (ro.rewards, ro.next_values, ro.terminated, ro.truncated, ro.gamma)
        np.testing.assert_allclose(nstep_returns(*args, ro.rewards.shape[1]),
                                   td_lambda_returns(*args, 1.0), atol=1e-9, rtol=0)
        np.testing.assert_allclose(nstep_returns(*args, 1), td_lambda_returns(*args, 0.0),
                                   atol=1e-9, rtol=0)


def test_vtrace_finite_sum_and_recursion_agree_within_the_bound() -> None:
    for i in range(40):
        tr = _vtrace_generate(case_generator("vtrace-test", 0, i), case_size(i, 40), 0.8)
        a = vtrace_finite_sum(tr.log_rhos, tr.discounts, tr.rewards, tr.values,
                              tr.bootstrap_value, tr.rho_bar, tr.c_bar, tr.lam)
        b = vtrace_recursion(tr.log_rhos, tr.discounts, tr.rewards, tr.values,
                             tr.bootstrap_value, tr.rho_bar, tr.c_bar, tr.lam)
        bound_vs, bound_pg = _vtrace_rounding(tr)
        assert np.all(np.abs(a[0] - b[0]) <= 2 * bound_vs)
        assert np.all(np.abs(a[1] - b[1]) <= 2 * bound_pg)


def test_vtrace_on_policy_reduces_to_td_lambda_returns() -> None:
    """With pi = mu and rho_bar, c_bar >= 1, V-trace is the TD(lambda) return with the
    discounts as terminations (proofs_notes/returns.md#on-policy)."""
    for ro in _rollouts():
        term = ro.terminated | ro.truncated  # V-trace sees only discounts: every end terminal
        tm = lambda x: np.ascontiguousarray(x.T)  # noqa: E731
        nv = np.concatenate([ro.values[:, 1:], ro.next_values[:, -1:]], axis=1)
        discounts = ro.gamma * (1.0 - term)
        vs, _ = vtrace_finite_sum(np.zeros_like(tm(ro.rewards)), tm(discounts),
                                  tm(ro.rewards), tm(ro.values), ro.next_values[:, -1],
                                  1.0, 1.5, ro.lam)
        want = td_lambda_returns(ro.rewards, nv, term, np.zeros_like(term), ro.gamma, ro.lam)
        # td_lambda_returns follows V; V-trace follows the stored next value, equal inside
        # episodes; at an end the next value is not read by either
        np.testing.assert_allclose(vs.T, want, atol=1e-8, rtol=0)


def test_float32_vtrace_returned_as_float64_fails() -> None:
    def as64(*args):  # type: ignore[no-untyped-def]
        vs, pg = planted_vtrace.vtrace_float32(*args)
        return vs.astype(np.float64), pg.astype(np.float64)

    assert not check_vtrace(as64, cases=20).passed
    assert check_vtrace(as64, cases=20, dtype="float32").passed


def test_declared_conventions_and_their_cost() -> None:
    report = check_td_lambda(planted_returns.pymarl_td_lambda, values="T+1", flags="dones",
                             truncation="as-termination", cases=20)
    assert report.passed and report.convention is not None
    assert report.convention_cost is not None and "G[b=" in report.convention_cost
    wrong = check_td_lambda(planted_returns.pymarl_td_lambda, values="T+1", flags="dones",
                            truncation="as-termination", cases=20, layout="time-major")
    assert not wrong.passed


def test_truncation_as_termination_is_diagnosed_as_a_convention() -> None:
    def as_termination(r, v, nv, term, trunc, gamma, lam):  # type: ignore[no-untyped-def]
        return planted_returns.td_lambda_loop(r, v, nv, term | trunc, trunc, gamma, lam)

    report = check_td_lambda(as_termination, cases=30)
    assert not report.passed
    assert report.diagnosis is not None and "truncation='as-termination'" in report.diagnosis


def test_bad_arguments_are_named() -> None:
    with pytest.raises(CheckArgumentError, match="n = 0"):
        check_nstep_returns(planted_returns.nstep_loop, n=0)
    with pytest.raises(CheckArgumentError, match="zero-advantage"):
        check_nstep_returns(planted_returns.nstep_loop, truncation="zero-advantage",
                            flags="masks", values="T+1")
    with pytest.raises(CheckArgumentError, match="output"):
        check_vtrace(planted_vtrace.vtrace_scan, output="pg")
    with pytest.raises(CheckArgumentError, match="lam"):
        check_vtrace(planted_vtrace.vtrace_scan, lam=2.0)


def test_vs_only_and_batch_major() -> None:
    def vs_only(*a):  # type: ignore[no-untyped-def]
        return planted_vtrace.vtrace_scan(*a)[0]

    assert check_vtrace(vs_only, output="vs", cases=15).passed

    def batch_major(lr, d, r, v, boot, rho_bar, c_bar):  # type: ignore[no-untyped-def]
        vs, pg = planted_vtrace.vtrace_scan(lr.T, d.T, r.T, v.T, boot, rho_bar, c_bar)
        return vs.T, pg.T

    assert check_vtrace(batch_major, layout="batch-major", cases=15).passed
    assert not check_vtrace(batch_major, cases=15).passed


def test_padding_is_never_compared_and_each_row_is_one_episode() -> None:
    def ignores_filled(r, v, nv, term, trunc, filled, gamma, lam):  # type: ignore[no-untyped-def]
        return planted_returns.td_lambda_loop(r, v, nv, term, trunc, gamma, lam)

    assert check_td_lambda(ignores_filled, padding=True, cases=20).passed

    def garbage_on_padding(r, v, nv, term, trunc, filled, gamma, lam):  # type: ignore[no-untyped-def]
        out = planted_returns.td_lambda_loop(r, v, nv, term, trunc, gamma, lam)
        return np.where(filled > 0, out, 1e9)

    assert check_td_lambda(garbage_on_padding, padding=True, cases=20).passed
    from verify.checks.returns import _pad

    for i in range(20):
        ro = _generate(case_generator("pad", 0, i), case_size(i, 20), None, None)
        p = _pad(ro, case_generator("pad-rng", 0, i))
        done = p.rollout.terminated | p.rollout.truncated
        for b in range(done.shape[0]):
            n = int(p.filled[b].sum())
            assert not done[b, : n - 1].any()
            assert not done[b, n:].any()
            if n < done.shape[1]:
                assert done[b, n - 1]


def test_padded_nstep_never_compares_the_padding_and_replays() -> None:
    def garbage_on_padding(r, v, nv, term, trunc, filled, gamma, n):  # type: ignore[no-untyped-def]
        out = planted_returns.nstep_padded(r, v, nv, term, trunc, filled, gamma, n)
        return np.where(filled > 0, out, 1e9)

    assert check_nstep_returns(garbage_on_padding, padding=True, cases=20).passed
    # A padding-unaware routine is right on filled steps, since each episode's last filled
    # step carries its end (proofs_notes/returns.md#padding).
    assert check_nstep_returns(
        lambda r, v, nv, term, trunc, filled, gamma, n: planted_returns.nstep_loop(
            r, v, nv, term, trunc, gamma, n), padding=True, cases=20).passed
    report = check_nstep_returns(planted_returns.nstep_bootstraps_from_padding,
                                 padding=True, cases=20)
    assert not report.passed and report.worst_case is not None
    again = check_nstep_returns(planted_returns.nstep_bootstraps_from_padding,
                                padding=True, replay=report.worst_case)
    assert not again.passed
    assert check_nstep_returns(planted_returns.nstep_padded, padding=True,
                               replay=report.worst_case).passed
    # Time-major and fixed n route filled through the same convention.
    def tm(r, v, nv, term, trunc, filled, gamma, n):  # type: ignore[no-untyped-def]
        return planted_returns.nstep_padded(r.T, v.T, nv.T, term.T, trunc.T, filled.T,
                                            gamma, n).T

    assert check_nstep_returns(tm, padding=True, layout="time-major", n=3, cases=15).passed


def test_dead_agents_are_not_compared_after_death_and_deaths_terminate() -> None:
    def garbage_after_death(r, v, nv, term, trunc, active, gamma, lam):  # type: ignore[no-untyped-def]
        out = planted_returns.td_lambda_active(r, v, nv, term, trunc, active, gamma, lam)
        return np.where(active > 0, out, -1e9)

    assert check_td_lambda(garbage_after_death, active=True, cases=20).passed
    report = check_td_lambda(planted_returns.td_lambda_bootstraps_past_death, active=True,
                             cases=20)
    assert not report.passed and report.worst_case is not None
    assert not check_td_lambda(planted_returns.td_lambda_bootstraps_past_death, active=True,
                               replay=report.worst_case).passed
    assert check_td_lambda(planted_returns.td_lambda_active, active=True,
                           replay=report.worst_case).passed
    with pytest.raises(CheckArgumentError, match="not combined"):
        check_td_lambda(planted_returns.td_lambda_active, active=True, padding=True)
    from verify.checks.returns import _kill

    deaths = 0
    for i in range(30):
        ro = _generate(case_generator("kill", 0, i), case_size(i, 30), None, None)
        dead = _kill(ro, case_generator("kill-rng", 0, i))
        done = ro.terminated | ro.truncated
        died = dead.deaths()
        deaths += int(died.sum())
        assert not (died & done).any()
        assert not died[:, -1].any()
        for b, t in np.argwhere(~dead.active):
            # an agent stays dead until its episode's end, and is alive after it
            assert t == 0 or not dead.active[b, t - 1] or died[b, t - 1]
            if t + 1 < done.shape[1] and done[b, t]:
                assert dead.active[b, t + 1]
        # the oracle is the TD(lambda) recursion with each death read as a termination
        want = td_lambda_returns(ro.rewards, ro.next_values, ro.terminated | died,
                                 ro.truncated, ro.gamma, ro.lam)
        got = td_lambda_returns(dead.rollout.rewards, dead.rollout.next_values,
                                dead.as_terminated().terminated, ro.truncated, ro.gamma,
                                ro.lam)
        np.testing.assert_array_equal(got[dead.active], want[dead.active])
    assert deaths >= 10


def test_nstep_with_dead_agents_replays_and_ignores_the_dead_steps() -> None:
    def garbage_after_death(r, v, nv, term, trunc, active, gamma, n):  # type: ignore[no-untyped-def]
        out = planted_returns.nstep_active(r, v, nv, term, trunc, active, gamma, n)
        return np.where(active > 0, out, 1e9)

    assert check_nstep_returns(garbage_after_death, active=True, cases=20).passed
    report = check_nstep_returns(planted_returns.nstep_bootstraps_past_death, active=True,
                                 cases=20)
    assert not report.passed and report.worst_case is not None
    assert check_nstep_returns(planted_returns.nstep_active, active=True,
                               replay=report.worst_case).passed
    with pytest.raises(CheckArgumentError, match="not combined"):
        check_nstep_returns(planted_returns.nstep_active, active=True, padding=True)

    # with n = 1 the n-step target is the one-step TD(lambda = 0) target, dead agents too
    def one_step(r, v, nv, term, trunc, active, gamma, lam):  # type: ignore[no-untyped-def]
        return planted_returns.nstep_active(r, v, nv, term, trunc, active, gamma, 1)

    assert check_td_lambda(one_step, active=True, lam=0.0, cases=20).passed
