"""Planted bugs in PPO-family losses and their gradients are caught and diagnosed; correct
ones pass (verify/checks/planted/ppo_loss.py).  The exact gradients agree with central
differences of the exact losses away from the clip's kinks (proofs_notes/ppo-loss.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from verify.checks import CheckArgumentError, Mutant
from verify.checks._core import case_generator, case_size
from verify.checks.planted import expected_diagnosis
from verify.checks.planted import ppo_loss as planted
from verify.checks.ppo_loss import (
    _loglinear_generate,
    _loglinear_rounding,
    _ppo_generate,
    _value_generate,
    check_ppo_loss,
    check_ppo_loss_loglinear,
    check_td_loss,
    check_value_loss,
    loglinear_loss_and_grad,
    ppo_loss_and_grad,
    value_loss_and_grad,
)
from verify.tolerances import finite_difference_step, finite_difference_tolerance

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mutant", planted.MUTANTS, ids=[m.name for m in planted.MUTANTS])
def test_mutant_is_caught(mutant: Mutant) -> None:
    report = mutant.run()
    assert report.check == mutant.check
    assert not report.passed and report.failures >= 1, str(report)
    named = expected_diagnosis(mutant)
    if named is not None:
        assert report.diagnosis is not None and named in report.diagnosis, report.diagnosis


@pytest.mark.parametrize("impl", planted.CORRECT, ids=[m.name for m in planted.CORRECT])
def test_correct_implementation_passes(impl: Mutant) -> None:
    report = impl.run()
    assert report.passed, str(report)
    assert report.cases >= 10 and report.diagnosis is None


def test_every_planted_bug_cites_its_provenance() -> None:
    for name in dir(planted):
        doc = getattr(getattr(planted, name), "__doc__", "") or ""
        if callable(getattr(planted, name)) and doc.startswith("Bug"):
            assert "provenance:" in doc, name


@pytest.mark.parametrize("ratios", ["single", "per-agent", "happo"])
def test_exact_gradient_matches_central_differences(ratios: str) -> None:
    for i in range(20):
        b = _ppo_generate(case_generator("ppo-fd", 0, i), case_size(i, 20), ratios,
                          ("surrogate", "entropy", "kl"))
        args = (b.old_logits, b.actions, b.advantages, b.factor, b.clip_eps, b.ent_coef,
                b.kl_coef)
        _, g = ppo_loss_and_grad(b.logits, *args)
        h = 1e-6
        fd = np.zeros_like(b.logits)
        for idx in np.ndindex(b.logits.shape):
            up, down = b.logits.copy(), b.logits.copy()
            up[idx] += h
            down[idx] -= h
            fd[idx] = (ppo_loss_and_grad(up, *args)[0] - ppo_loss_and_grad(down, *args)[0]) / (2 * h)
        np.testing.assert_allclose(g, fd, atol=1e-7, rtol=0)


def test_value_gradient_matches_central_differences() -> None:
    for i in range(20):
        b = _value_generate(case_generator("value-fd", 0, i), case_size(i, 20))
        _, g = value_loss_and_grad(b.values, b.old_values, b.returns, b.clip_eps, 0.5, True)
        h = 1e-7
        for j in range(b.values.size):
            up, down = b.values.copy(), b.values.copy()
            up[j] += h
            down[j] -= h
            fd = (value_loss_and_grad(up, b.old_values, b.returns, b.clip_eps, 0.5, True)[0]
                  - value_loss_and_grad(down, b.old_values, b.returns, b.clip_eps, 0.5,
                                        True)[0]) / (2 * h)
            assert abs(fd - g[j]) <= 1e-6, (i, j, fd, g[j])


def test_beyond_the_clip_the_gradient_is_zero() -> None:
    logits = np.array([[2.0, 0.0]])
    old = np.array([[0.0, 0.0]])
    _, g = ppo_loss_and_grad(logits, old, np.array([0]), np.array([1.0]), None, 0.2, 0.0, 0.0)
    assert np.all(g == 0.0)  # w = 2 * 0.88 > 1.2 with A > 0: the clipped term is smaller
    _, g = ppo_loss_and_grad(logits, old, np.array([0]), np.array([-1.0]), None, 0.2, 0.0, 0.0)
    assert np.all(g != 0.0)  # A < 0: the unclipped term is the minimum


def test_float32_loss_is_judged_at_float32() -> None:
    def loss32(*a):  # type: ignore[no-untyped-def]
        cast = [x.astype(np.float32) if isinstance(x, np.ndarray) and x.dtype.kind == "f"
                else x for x in a]
        return np.float32(planted.ppo_loss_torch_style(*cast))

    assert check_ppo_loss(loss32, cases=20).passed
    assert not check_ppo_loss(lambda *a: float(loss32(*a)), cases=20).passed


def test_bad_arguments_are_named() -> None:
    with pytest.raises(CheckArgumentError, match="ratios"):
        check_ppo_loss(planted.ppo_loss_torch_style, ratios="joint")
    with pytest.raises(CheckArgumentError, match="terms"):
        check_ppo_loss(planted.ppo_loss_torch_style, terms=("entropy", "bonus"))
    with pytest.raises(CheckArgumentError, match="coef"):
        check_value_loss(lambda *a: 0.0, coef=-1.0)


def test_unclipped_value_loss_and_td_loss_values() -> None:
    def mse(v, old, g, eps):  # type: ignore[no-untyped-def]
        return 0.5 * np.mean((v - g) ** 2)

    assert check_value_loss(mse, clip=False, cases=15).passed
    assert not check_value_loss(mse, cases=15).passed
    assert check_td_loss(planted.td_loss, cases=15).passed


_JAX_SCRIPT = """
import jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
from verify.checks import check_ppo_loss, check_ppo_loss_loglinear, check_td_loss

def loss(logits, old_logits, actions, adv, eps, ent_coef, kl_coef):
    lp, lpo = jax.nn.log_softmax(logits), jax.nn.log_softmax(old_logits)
    pick = lambda x: jnp.take_along_axis(x, actions[..., None], -1)[..., 0]
    w = jnp.exp(pick(lp) - pick(lpo))
    surr = jnp.minimum(w * adv, jnp.clip(w, 1 - eps, 1 + eps) * adv)
    ent = -(jnp.exp(lp) * lp).sum(-1)
    kl = (jnp.exp(lpo) * (lpo - lp)).sum(-1)
    return -surr.mean() - ent_coef * ent.mean() + kl_coef * kl.mean()

r = check_ppo_loss(loss, grad=jax.grad(loss), terms=("surrogate", "entropy", "kl"), xp=jnp,
                   cases=4)
assert r.passed, str(r)

def td(v, nv, r, term, gamma):
    return 0.5 * jnp.mean((v - (r + gamma * (1 - term) * nv)) ** 2)

bad = check_td_loss(td, grad=jax.grad(td, argnums=(0, 1)), xp=jnp, cases=3)
assert not bad.passed and "dloss/dnext_values" in bad.where, str(bad)

def td_ok(v, nv, r, term, gamma):
    y = jax.lax.stop_gradient(r + gamma * (1 - term) * nv)
    return 0.5 * jnp.mean((v - y) ** 2)

assert check_td_loss(td_ok, grad=jax.grad(td_ok, argnums=(0, 1)), xp=jnp, cases=3).passed

def ll(theta, old_theta, features, obs, actions, adv, eps, ent_coef, kl_coef):
    phi = features[obs]
    return loss(phi @ theta, phi @ old_theta, actions, adv, eps, ent_coef, kl_coef)

r = check_ppo_loss_loglinear(ll, grad=jax.grad(ll), terms=("surrogate", "entropy", "kl"),
                             xp=jnp, cases=3)
assert r.passed, str(r)
print("ok")
"""


def test_jax_loss_and_its_grad() -> None:
    """A JAX loss and jax.grad, in their own interpreter (as tests/test_checks_real_code.py
    does); few cases, since JAX compiles anew for every shape."""
    done = subprocess.run([sys.executable, "-c", _JAX_SCRIPT], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


# ---------------------------------------------------------------- log-linear policies


def _user_loglinear_loss(theta, old_theta, features, obs, actions, adv, eps,  # type: ignore[no-untyped-def]
                         ent_coef, kl_coef):
    """A user's loss of ``pi(a|o) ∝ exp(phi(o, a) . theta)``, written without the oracle."""
    phi = features[obs]
    z, z_old = phi @ theta, phi @ old_theta
    lp = z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) \
        - z.max(1, keepdims=True)
    lpo = z_old - np.log(np.exp(z_old - z_old.max(1, keepdims=True)).sum(1, keepdims=True)) \
        - z_old.max(1, keepdims=True)
    rows = np.arange(len(actions))
    w = np.exp(lp[rows, actions] - lpo[rows, actions])
    surr = np.minimum(w * adv, np.clip(w, 1 - eps, 1 + eps) * adv)
    ent = -(np.exp(lp) * lp).sum(1)
    kl = (np.exp(lpo) * (lpo - lp)).sum(1)
    return -surr.mean() - ent_coef * ent.mean() + kl_coef * kl.mean()


def _user_loglinear_grad(theta, old_theta, features, obs, actions, adv, eps,  # type: ignore[no-untyped-def]
                         ent_coef, kl_coef, baseline=True):
    """Its hand-derived gradient in theta: the score ``phi(o, a) - E_pi[phi(o, .)]``
    (without the ``E_pi`` term when ``baseline`` is False: the planted bug)."""
    phi = features[obs]
    z = phi @ theta
    pi = np.exp(z - z.max(1, keepdims=True))
    pi /= pi.sum(1, keepdims=True)
    zo = phi @ old_theta
    po = np.exp(zo - zo.max(1, keepdims=True))
    po /= po.sum(1, keepdims=True)
    rows = np.arange(len(actions))
    w = pi[rows, actions] / po[rows, actions]
    mean_phi = np.einsum("ba,bad->bd", pi, phi)
    score = phi[rows, actions] - (mean_phi if baseline else 0.0)
    active = w * adv <= np.clip(w, 1 - eps, 1 + eps) * adv
    g = -np.einsum("b,bd->d", np.where(active, w * adv, 0.0), score)
    lp = np.log(pi)
    ent = -(pi * lp).sum(1)
    g += ent_coef * np.einsum("ba,bad->d", pi * (lp + ent[:, None]), phi)
    g += kl_coef * np.einsum("ba,bad->d", pi - po, phi)
    return g / len(actions)


def _loglinear_loss_axes_swapped(theta, old_theta, features, obs, actions, adv, eps,  # type: ignore[no-untyped-def]
                                 ent_coef, kl_coef):
    """Modelled bug: the ``(O, A, d)`` feature table read as ``(A, O, d)`` (a reshape
    where a transpose of the observation and action axes was meant)."""
    n_o, n_a, n_d = features.shape
    wrong = features.reshape(n_a, n_o, n_d).transpose(1, 0, 2)
    return _user_loglinear_loss(theta, old_theta, wrong, obs, actions, adv, eps, ent_coef,
                                kl_coef)


ALL_TERMS = ("surrogate", "entropy", "kl")


def test_loglinear_correct_user_loss_and_gradient_pass() -> None:
    r = check_ppo_loss_loglinear(_user_loglinear_loss, grad=_user_loglinear_grad,
                                 terms=ALL_TERMS)
    assert r.passed and r.cases == 50, str(r)
    assert check_ppo_loss_loglinear(_user_loglinear_loss, cases=20).passed


def test_loglinear_score_without_baseline_is_caught() -> None:
    def bad(*a):  # type: ignore[no-untyped-def]
        return _user_loglinear_grad(*a, baseline=False)

    r = check_ppo_loss_loglinear(_user_loglinear_loss, grad=bad, terms=ALL_TERMS, cases=20)
    assert not r.passed and "dloss/dtheta" in r.where, str(r)


def test_loglinear_swapped_feature_axes_is_caught() -> None:
    r = check_ppo_loss_loglinear(_loglinear_loss_axes_swapped, cases=30)
    assert not r.passed and "loss" in r.where, str(r)


def _central(f, theta: np.ndarray, h: float) -> np.ndarray:  # type: ignore[no-untyped-def]
    out = np.zeros_like(theta)
    for k in range(theta.size):
        e = np.zeros_like(theta)
        e[k] = h
        out[k] = (f(theta + e) - f(theta - e)) / (2 * h)
    return out


@pytest.mark.parametrize(("terms", "sequential"), [(("surrogate",), False),
                                                   (ALL_TERMS, False), (ALL_TERMS, True)])
def test_loglinear_gradient_matches_central_differences(terms: tuple[str, ...],
                                                        sequential: bool) -> None:
    """Second route: central differences of the exact loss in theta, step
    ``finite_difference_step`` and the Richardson bound ``finite_difference_tolerance`` with
    the loss's rounding bound as the evaluation error.  The ratios stay ``MARGIN`` away from
    the clip edges, farther than a step moves them, so the loss is smooth on the stencil.
    The planted score-without-baseline gradient fails the same comparison."""
    missed = 0
    for i in range(30):
        b = _loglinear_generate(case_generator("ppo-ll-fd", 0, i), case_size(i, 30), terms,
                                sequential)

        def f(th: np.ndarray, b: object = b) -> float:
            return loglinear_loss_and_grad(th, b.old_theta, b.features, b.obs,  # type: ignore[attr-defined]
                                           b.actions, b.advantages, b.clip_eps,  # type: ignore[attr-defined]
                                           b.ent_coef, b.kl_coef, b.prev_actions,  # type: ignore[attr-defined]
                                           b.factor)[0]  # type: ignore[attr-defined]

        _, g = loglinear_loss_and_grad(b.theta, b.old_theta, b.features, b.obs, b.actions,
                                       b.advantages, b.clip_eps, b.ent_coef, b.kl_coef,
                                       b.prev_actions, b.factor)
        h = finite_difference_step(float(np.max(np.abs(b.theta))))
        d1, d2 = _central(f, b.theta, h), _central(f, b.theta, 2 * h)
        value_error, _ = _loglinear_rounding(b)
        tol = finite_difference_tolerance(d2 - d1, h, value_error)
        assert np.all(np.abs(d1 - g) <= tol), (i, d1, g, tol)
        m = np.ones_like(b.advantages) if b.factor is None else b.factor
        bad = _user_loglinear_grad(b.theta, b.old_theta, b.phi(), np.arange(b.obs.size),
                                   b.actions, m * b.advantages, b.clip_eps, b.ent_coef,
                                   b.kl_coef, baseline=False)
        missed += bool(np.all(np.abs(d1 - bad) <= tol))
    assert missed <= 3  # only cases where every score term happens to vanish


# ------------------------------------------- sequential (HAPPO) log-linear policies


def _user_sequential_loss(theta, old_theta, features, obs, prev, factor, actions, adv,  # type: ignore[no-untyped-def]
                          eps, ent_coef, kl_coef, clip_product=False):
    """A user's HAPPO loss for agent m: features ``phi(o, a_{<m}, a_m)`` (``prev`` indexes the
    earlier agents' joint action) and the factor ``M`` outside the clip (inside it when
    ``clip_product``: the planted bug)."""
    phi = features[obs, prev]
    z, z_old = phi @ theta, phi @ old_theta
    lp = z - np.log(np.exp(z).sum(1, keepdims=True))
    lpo = z_old - np.log(np.exp(z_old).sum(1, keepdims=True))
    rows = np.arange(len(actions))
    w = np.exp(lp[rows, actions] - lpo[rows, actions])
    if clip_product:
        surr = np.minimum(w * factor * adv, np.clip(w * factor, 1 - eps, 1 + eps) * adv)
    else:
        surr = factor * np.minimum(w * adv, np.clip(w, 1 - eps, 1 + eps) * adv)
    ent = -(np.exp(lp) * lp).sum(1)
    kl = (np.exp(lpo) * (lpo - lp)).sum(1)
    return -surr.mean() - ent_coef * ent.mean() + kl_coef * kl.mean()


def _user_sequential_grad(theta, old_theta, features, obs, prev, factor, actions, adv,  # type: ignore[no-untyped-def]
                          eps, ent_coef, kl_coef):
    """Its gradient: ``_user_loglinear_grad`` on the conditioned features, advantages
    scaled by ``M > 0``."""
    n_b = len(actions)
    phi = features[obs, prev]
    return _user_loglinear_grad(theta, old_theta, phi, np.arange(n_b), actions, factor * adv,
                                eps, ent_coef, kl_coef)


def _sequential_loss_ignores_earlier_actions(theta, old_theta, features, obs, prev,  # type: ignore[no-untyped-def]
                                             factor, actions, adv, eps, ent_coef, kl_coef):
    """Modelled bug: agent m's features taken at a fixed earlier joint action (the
    conditioning on ``a_{<m}`` dropped)."""
    return _user_sequential_loss(theta, old_theta, features, obs, np.zeros_like(prev), factor,
                                 actions, adv, eps, ent_coef, kl_coef)


def test_sequential_correct_user_loss_and_gradient_pass() -> None:
    r = check_ppo_loss_loglinear(_user_sequential_loss, grad=_user_sequential_grad,
                                 terms=ALL_TERMS, sequential=True)
    assert r.passed and r.cases == 50, str(r)


def test_sequential_planted_bugs_are_caught() -> None:
    def clip_product(*a):  # type: ignore[no-untyped-def]
        return _user_sequential_loss(*a, clip_product=True)

    for bad in (clip_product, _sequential_loss_ignores_earlier_actions):
        r = check_ppo_loss_loglinear(bad, sequential=True, cases=30)
        assert not r.passed and "loss" in r.where, str(r)
    r = check_ppo_loss_loglinear(_user_loglinear_loss, sequential=True, cases=5)
    assert not r.passed  # the plain signature does not fit the sequential one
