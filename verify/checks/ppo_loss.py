"""Conformance checks for PPO-family losses and their exact gradients
(``proofs_notes/ppo-loss.md``), declared over the runner of :mod:`verify.checks._core`.

* :func:`check_ppo_loss` -- the clipped surrogate (per sample, MAPPO's per-agent ratios or
  HAPPO's factor), the entropy bonus and the KL penalty of softmax policies, as a scalar
  loss to minimise, and optionally the gradient of that loss with respect to the logits that
  the user's autograd (JAX, PyTorch, numpy) returns.
* :func:`check_ppo_loss_loglinear` -- the same loss for log-linear policies
  ``pi(a|o) ∝ exp(phi(o, a) . theta)`` and its gradient in ``theta`` (optionally HAPPO's
  sequential update, features conditioned on the earlier agents' actions).
* :func:`check_value_loss` -- the (clipped) value loss and its gradient in the values.
* :func:`check_td_loss` -- a squared TD-error loss whose target must be a constant: its
  gradient in the next values is exactly 0 (a missing stop-gradient is caught).

The policies of :func:`check_ppo_loss` are tabular softmax policies: each sample has its own
row of logits, so the gradient with respect to the logits is the exact per-row gradient; the
log-linear check carries it through the features by the chain rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from reference._arrays import FloatArray
from reference.errors import ModelError
from verify.checks._core import (
    Alternative,
    Case,
    CaseFailure,
    CheckArgumentError,
    CheckReport,
    Compared,
    Declaration,
    UserIO,
    guard,
    ladder_count,
    run_check,
)
from verify.tolerances import EPS

__all__ = [
    "RATIOS",
    "TERMS",
    "check_ppo_loss",
    "check_ppo_loss_loglinear",
    "check_td_loss",
    "check_value_loss",
    "log_softmax",
    "loglinear_loss_and_grad",
    "ppo_loss_and_grad",
    "td_loss_and_grad",
    "value_loss_and_grad",
]

RATIOS = ("single", "per-agent", "happo")
"""``"single"``: one policy, logits ``(B, A)``; ``"per-agent"``: MAPPO, logits ``(B, N, A)``
and one ratio per agent; ``"happo"``: the agent being updated, logits ``(B, A)``, its ratio
times the factor ``M`` of the agents updated before it."""

TERMS = ("surrogate", "entropy", "kl")
"""The terms a PPO loss may include: the clipped surrogate, the entropy bonus, the KL
penalty ``KL(old || new)``."""

MAX_BATCH = 6
MAX_AGENTS = 3
MAX_ACTIONS = 4
MARGIN = 1e-3
"""Generated ratios stay at least this far (relatively) from ``1 - eps`` and ``1 + eps``, and
clipped and unclipped value terms this far apart, so the active branch is unambiguous even
at float32."""


def log_softmax(x: FloatArray) -> FloatArray:
    """``x - logsumexp(x)`` along the last axis."""
    m = np.max(x, axis=-1, keepdims=True)
    out: FloatArray = x - m - np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))
    return out


def ppo_loss_and_grad(
    logits: FloatArray, old_logits: FloatArray, actions: npt.NDArray[np.int64],
    advantages: FloatArray, factor: FloatArray | None, clip_eps: float, ent_coef: float,
    kl_coef: float, active: FloatArray | None = None,
) -> tuple[float, FloatArray]:
    """The PPO loss and its exact gradient in ``logits`` (``proofs_notes/ppo-loss.md``)::

        w = pi(a|.) / pi_old(a|.),   l = min(w M A, clip(w, 1 - eps, 1 + eps) M A),
        loss = -mean l - ent_coef mean H(pi) + kl_coef mean KL(pi_old || pi),
        d l / d logits = [w M A <= clip(w) M A] M A w (e_a - pi),
        d H / d logits = -pi (log pi + H),   d KL / d logits = pi - pi_old,

    the means over every sample (and agent); ``M = factor`` (1 when ``None``).  With
    ``active`` (0/1, the shape of ``advantages``) the means are masked means,
    ``sum(active x) / sum(active)`` (``proofs_notes/ppo-loss.md#masks``).  Shapes:
    ``logits`` ``(..., A)``, ``actions``, ``advantages`` ``(...)``, ``factor`` ``(B,)``."""
    n_act = logits.shape[-1]
    lp = log_softmax(logits).reshape(-1, n_act)
    lp_old = log_softmax(old_logits).reshape(-1, n_act)
    a = actions.reshape(-1)
    adv = advantages.reshape(-1)
    m = np.ones_like(adv) if factor is None else np.broadcast_to(
        factor.reshape((-1,) + (1,) * (advantages.ndim - 1)), advantages.shape).reshape(-1)
    rows = np.arange(a.size)
    pi, pi_old = np.exp(lp), np.exp(lp_old)
    w = np.exp(lp[rows, a] - lp_old[rows, a])
    cw = np.clip(w, 1 - clip_eps, 1 + clip_eps)
    unc, clp = w * m * adv, cw * m * adv
    surrogate = np.minimum(unc, clp)
    unclipped_min = unc <= clp
    onehot = np.zeros_like(pi)
    onehot[rows, a] = 1.0
    g_sur = np.where(unclipped_min, m * adv * w, 0.0)[:, None] * (onehot - pi)
    ent = -np.sum(pi * lp, axis=1)
    g_ent = -pi * (lp + ent[:, None])
    kl = np.sum(pi_old * (lp_old - lp), axis=1)
    g_kl = pi - pi_old
    wt = np.ones(a.size) if active is None else active.reshape(-1).astype(np.float64)
    n = float(wt.sum()) if active is not None else float(a.size)
    if n == 0:
        return 0.0, np.zeros(logits.shape)
    loss = float(-(wt * surrogate).sum() / n - ent_coef * (wt * ent).sum() / n
                 + kl_coef * (wt * kl).sum() / n)
    grad = wt[:, None] * (-g_sur - ent_coef * g_ent + kl_coef * g_kl) / n
    return loss, grad.reshape(logits.shape)


@dataclass(frozen=True)
class _PPOBatch:
    logits: FloatArray
    old_logits: FloatArray
    actions: npt.NDArray[np.int64]
    advantages: FloatArray
    factor: FloatArray | None
    clip_eps: float
    ent_coef: float
    kl_coef: float
    active: FloatArray | None = None


def _ppo_generate(rng: np.random.Generator, size: float, ratios: str,
                  terms: tuple[str, ...], masks: bool = False) -> _PPOBatch:
    """Logits in ``[-3, 3]``; the old logits are the new ones plus noise of scale 0.3 (one
    batch in five: equal, every ratio 1), resampled per row until the taken action's ratio is
    ``MARGIN`` away from both clip edges; advantages in ``[-2, 2]``; ``eps`` 0.2 or in
    ``[0.05, 0.4]``; HAPPO factors in ``[0.5, 1.5]``; coefficients drawn for declared terms
    and 0 otherwise."""
    n_b = ladder_count(rng, size, MAX_BATCH)
    n_a = ladder_count(rng, size, MAX_ACTIONS, low=2)
    lead = (n_b, ladder_count(rng, size, MAX_AGENTS)) if ratios == "per-agent" else (n_b,)
    logits = rng.uniform(-3.0, 3.0, (*lead, n_a))
    actions = rng.integers(0, n_a, lead)
    eps = 0.2 if rng.random() < 0.4 else float(rng.uniform(0.05, 0.4))
    same = rng.random() < 0.2
    old = logits.copy()
    flat_new, flat_old = logits.reshape(-1, n_a), old.reshape(-1, n_a)
    flat_a = actions.reshape(-1)
    for i in range(flat_a.size):
        if same:
            continue
        for _ in range(50):
            cand = flat_new[i] + rng.normal(0.0, 0.3, n_a)
            lw = log_softmax(flat_new[i])[flat_a[i]] - log_softmax(cand)[flat_a[i]]
            w = math.exp(lw)
            if min(abs(w - (1 - eps)), abs(w - (1 + eps))) > MARGIN * w:
                flat_old[i] = cand
                break
    advantages = rng.uniform(-2.0, 2.0, lead)
    factor = rng.uniform(0.5, 1.5, n_b) if ratios == "happo" else None
    ent = float(rng.uniform(0.0, 0.1)) if "entropy" in terms else 0.0
    kl = float(rng.uniform(0.0, 1.0)) if "kl" in terms else 0.0
    active = None
    if masks:
        active = (rng.random(lead) >= 0.3).astype(np.float64)
        active.reshape(-1)[int(rng.integers(active.size))] = 1.0
    return _PPOBatch(logits, flat_old.reshape(logits.shape), actions, advantages, factor, eps,
                     ent, kl, active)


def _ppo_to_arrays(b: _PPOBatch) -> Mapping[str, npt.NDArray[Any]]:
    out = {"logits": b.logits, "old_logits": b.old_logits, "actions": b.actions,
           "advantages": b.advantages, "clip_eps": np.array(b.clip_eps),
           "ent_coef": np.array(b.ent_coef), "kl_coef": np.array(b.kl_coef)}
    if b.factor is not None:
        out["factor"] = b.factor
    if b.active is not None:
        out["active_masks"] = b.active
    return out


def _ppo_from_arrays(a: Mapping[str, npt.NDArray[Any]]) -> _PPOBatch:
    names = ("logits", "old_logits", "actions", "advantages", "clip_eps", "ent_coef",
             "kl_coef")
    missing = [k for k in names if k not in a]
    if missing:
        raise ModelError(f"a ppo-loss case needs arrays {missing}, which are missing")
    shape = np.shape(a["logits"])
    if np.shape(a["old_logits"]) != shape or np.shape(a["actions"]) != shape[:-1] \
            or np.shape(a["advantages"]) != shape[:-1]:
        raise ModelError(f"ppo-loss case arrays disagree with logits of shape {shape}")
    return _PPOBatch(np.array(a["logits"], dtype=np.float64),
                     np.array(a["old_logits"], dtype=np.float64),
                     np.array(a["actions"], dtype=np.int64),
                     np.array(a["advantages"], dtype=np.float64),
                     np.array(a["factor"], dtype=np.float64) if "factor" in a else None,
                     float(a["clip_eps"]), float(a["ent_coef"]), float(a["kl_coef"]),
                     np.array(a["active_masks"], dtype=np.float64) if "active_masks" in a
                     else None)


def _ppo_rounding(b: _PPOBatch) -> tuple[float, FloatArray]:
    """Rounding bounds for the loss and each gradient entry (``proofs_notes/ppo-loss.md#
    rounding``): with ``L`` a row's logit ranges plus ``log A + 1`` and ``S`` the sample
    count, the loss within ``2 ((A + 8) L + S + 8) eps`` times the mean absolute term size
    and each gradient entry within ``2 ((A + 8) L + 8) eps`` times its row's term size
    over ``S``."""
    n_a = b.logits.shape[-1]
    new = b.logits.reshape(-1, n_a)
    old = b.old_logits.reshape(-1, n_a)
    spread = (np.ptp(new, axis=1) + np.ptp(old, axis=1) + math.log(n_a) + 1.0)
    lp, lp_old = log_softmax(new), log_softmax(old)
    rows = np.arange(new.shape[0])
    a = b.actions.reshape(-1)
    w = np.exp(lp[rows, a] - lp_old[rows, a])
    m = np.ones(a.size) if b.factor is None else np.broadcast_to(
        b.factor.reshape((-1,) + (1,) * (b.advantages.ndim - 1)),
        b.advantages.shape).reshape(-1)
    size = np.abs(m * b.advantages.reshape(-1)) * np.maximum(w, 1 + b.clip_eps)
    row_value = size + b.ent_coef * spread + b.kl_coef * 2 * spread
    row_grad = size * 2 + b.ent_coef * (spread + 1) + b.kl_coef * 2
    n = a.size if b.active is None else max(float(b.active.sum()), 1.0)
    c = (n_a + 8) * spread + 8
    loss_tol = 2.0 * EPS * float(np.sum(c * row_value) + n * np.sum(row_value)) / n
    grad_tol = 2.0 * EPS * (c * row_grad)[:, None] / n * np.ones((1, n_a))
    return loss_tol, grad_tol.reshape(b.logits.shape)


def _scalar(io: UserIO, value: object, what: str) -> FloatArray:
    arr = io.out(value, what)
    if arr.size != 1:
        raise CaseFailure(f"{what} has shape {arr.shape}, expected a scalar")
    out: FloatArray = arr.reshape(1)
    return out


def _ppo_args(b: _PPOBatch, ratios: str, conv: Callable[[Any], Any]) -> list[Any]:
    args = [conv(b.logits), conv(b.old_logits), conv(b.actions), conv(b.advantages)]
    if ratios == "happo":
        assert b.factor is not None
        args.append(conv(b.factor))
    if b.active is not None:
        args.append(conv(b.active))
    return [*args, b.clip_eps, b.ent_coef, b.kl_coef]


def check_ppo_loss(
    fn: Callable[..., Any],
    *,
    grad: Callable[..., Any] | None = None,
    ratios: str = "single",
    terms: tuple[str, ...] = ("surrogate",),
    masks: bool = False,
    atol: float | None = None,
    rtol: float | None = None,
    dtype: str | None = None,
    xp: Any = None,
    cases: int = 50,
    seed: int = 0,
    replay: Case | None = None,
) -> CheckReport:
    """Check a PPO loss (and the gradient your autograd gives for it) against the exact
    clipped surrogate of softmax policies (``proofs_notes/ppo-loss.md``)::

        w = pi(a|.) / pi_old(a|.),   l = min(w M A, clip(w, 1 - eps, 1 + eps) M A),
        loss = -mean l - ent_coef mean H(pi) + kl_coef mean KL(pi_old || pi),

    ``pi = softmax(logits)`` per row, ``M`` the HAPPO factor (1 otherwise), means over all
    samples (and agents).  The exact gradient in the logits is
    ``[w M A <= clip(w) M A] M A w (e_a - pi)`` per sample for the surrogate -- zero beyond
    the clip, where the clipped term is strictly smaller -- ``-pi (log pi + H)`` for the
    entropy and ``pi - pi_old`` for the KL, each divided by the sample count.

    The loss is called as ``fn(logits, old_logits, actions, advantages, clip_eps, ent_coef,
    kl_coef)`` (with ``factor`` ``(B,)`` after ``advantages`` under ``ratios="happo"``) and
    returns a scalar; ``grad``, with the same arguments, returns the gradient of the loss
    in ``logits`` (``jax.grad(fn)``, or a wrapper around ``torch.autograd.grad``).  Shapes:
    ``logits`` ``(B, A)`` (``(B, N, A)`` under ``ratios="per-agent"``), ``actions`` (int)
    and ``advantages`` the leading dimensions.  ``terms`` (:data:`TERMS`) says which terms
    the loss has; the coefficients of the others are passed as 0.  With ``masks=True`` the
    callable also receives ``active_masks`` (0/1, the shape of ``advantages``; after
    ``factor`` under HAPPO, before ``clip_eps``) and every mean is the masked mean
    ``sum(active x) / sum(active)`` of MAPPO's losses: dead or inactive agents' entries
    contribute nothing to the loss or its gradient.

    Instances: ``B`` up to 6, ``N`` up to 3, ``A`` in ``2..4``; ratios on both sides of the
    clip and at least ``MARGIN`` (relative) from its edges; one batch in five on-policy
    (every ratio 1).  Tolerance: :func:`_ppo_rounding` for the oracle and, at the judged
    precision, for the callable, or ``atol``; plus ``rtol |oracle|``.

    Raises:
        CheckArgumentError: an unknown ``ratios`` or term, or a bad tolerance, ``dtype``,
            ``cases`` or ``seed``.
    """
    fn = guard(fn)
    grad_fn = guard(grad) if grad is not None else None
    if ratios not in RATIOS:
        raise CheckArgumentError(f"ratios = {ratios!r}, expected one of {RATIOS}")
    terms = tuple(terms)
    bad = [t for t in terms if t not in TERMS]
    if bad or not terms:
        raise CheckArgumentError(f"terms = {terms!r}, expected a non-empty subset of {TERMS}")

    def evaluate_case(b: _PPOBatch, index: int, io: UserIO) -> list[Compared]:
        adv = b.advantages if "surrogate" in terms else np.zeros_like(b.advantages)
        loss, g = ppo_loss_and_grad(b.logits, b.old_logits, b.actions, adv, b.factor,
                                    b.clip_eps, b.ent_coef, b.kl_coef, b.active)
        t_loss, t_grad = _ppo_rounding(b)
        got = _scalar(io, fn(*_ppo_args(b, ratios, io.arg)), "the loss")

        def context(idx: tuple[int, ...]) -> str:
            return (f" (eps={b.clip_eps:.4g}, ent_coef={b.ent_coef:.4g}, "
                    f"kl_coef={b.kl_coef:.4g}, samples {b.actions.size})")

        out = [Compared(got, np.array([loss]), t_loss, t_loss, label=lambda idx: "loss",
                        context=context)]
        if grad_fn is not None:
            gg = io.out(grad_fn(*_ppo_args(b, ratios, io.arg)), "the gradient")
            if gg.shape != g.shape:
                raise CaseFailure(f"the gradient has shape {gg.shape}, expected {g.shape} "
                                  "(that of logits)")
            n_a = b.logits.shape[-1]
            lp = log_softmax(b.logits).reshape(-1, n_a)
            lpo = log_softmax(b.old_logits).reshape(-1, n_a)
            flat_a = b.actions.reshape(-1)
            ratio = np.exp(lp[np.arange(flat_a.size), flat_a] - lpo[np.arange(flat_a.size),
                                                                    flat_a])

            def gcontext(idx: tuple[int, ...]) -> str:
                row = int(np.ravel_multi_index(idx[:-1], b.actions.shape))
                w = float(ratio[row])
                where = "inside the clip" if abs(w - 1) <= b.clip_eps else "beyond the clip"
                return (f" (ratio {w:.4g} {where}, advantage "
                        f"{float(b.advantages.reshape(-1)[row]):.4g}, action "
                        f"{int(flat_a[row])}, {context(idx)[2:]}")

            out.append(Compared(gg, g, t_grad, t_grad,
                                label=lambda idx: "dloss/dlogits[" + ", ".join(
                                    str(i) for i in idx) + "]",
                                context=gcontext))
        return out

    def alternatives() -> list[Alternative]:
        from verify.checks.planted import known_bugs

        res = []
        for m in known_bugs("ppo-loss"):
            def outputs(b: _PPOBatch, f: Any = m.fn) -> list[FloatArray]:
                loss, g = f(b.logits, b.old_logits, b.actions,
                            b.advantages if "surrogate" in terms
                            else np.zeros_like(b.advantages),
                            b.factor, b.clip_eps, b.ent_coef, b.kl_coef, active=b.active)
                outs = [np.array([float(loss)])]
                if grad_fn is not None:
                    outs.append(np.asarray(g, dtype=np.float64))
                return outs
            res.append(Alternative(m.name, m.bug, outputs))
        return res

    conventions = []
    if ratios != "single":
        conventions.append(f"ratios={ratios!r}")
    if terms != ("surrogate",):
        conventions.append(f"terms={terms!r}")
    if masks:
        conventions.append("masks=True")
    if grad is not None:
        conventions.append("gradient checked")
    decl = Declaration(
        name="ppo-loss",
        reference="proofs_notes/ppo-loss.md: loss = -mean min(w M A, clip(w, 1-eps, 1+eps) "
        "M A) - ent_coef mean H + kl_coef mean KL(old || new); exact gradient in the logits",
        generate=lambda rng, size: _ppo_generate(rng, size, ratios, terms, masks),
        to_arrays=_ppo_to_arrays,
        from_arrays=_ppo_from_arrays,
        evaluate=evaluate_case,
        alternatives=alternatives,
        convention=", ".join(conventions) or None,
    )
    return run_check(decl, cases=cases, seed=seed, replay=replay, atol=atol, rtol=rtol,
                     dtype=dtype, xp=xp)


# --------------------------------------------------------------------------- value losses


def value_loss_and_grad(
    values: FloatArray, old_values: FloatArray, returns: FloatArray, clip_eps: float,
    coef: float, clip: bool,
) -> tuple[float, FloatArray]:
    """``coef mean max((V - G)^2, (V_old + clip(V - V_old, -eps, eps) - G)^2)`` (or ``coef
    mean (V - G)^2`` without clipping) and its gradient in ``V``: ``2 coef (V - G) / B`` where
    the unclipped term is the larger or they tie (``V`` inside the clip), else 0."""
    n = values.size
    unc = (values - returns) ** 2
    if not clip:
        return float(coef * unc.sum() / n), 2 * coef * (values - returns) / n
    vc = old_values + np.clip(values - old_values, -clip_eps, clip_eps)
    clp = (vc - returns) ** 2
    active = unc >= clp
    loss = float(coef * np.maximum(unc, clp).sum() / n)
    return loss, np.where(active, 2 * coef * (values - returns) / n, 0.0)


@dataclass(frozen=True)
class _ValueBatch:
    values: FloatArray
    old_values: FloatArray
    returns: FloatArray
    clip_eps: float


def _value_generate(rng: np.random.Generator, size: float) -> _ValueBatch:
    """Returns in ``[-10, 10]``, old values within 3 of them, values within ``2 eps`` of the
    old values; a sample is redrawn until ``|V - V_old|`` is ``MARGIN`` away from ``eps``
    and the two squared errors are ``MARGIN`` apart (relatively) when they differ."""
    n = ladder_count(rng, size, 8)
    eps = 0.2 if rng.random() < 0.4 else float(rng.uniform(0.05, 1.0))
    g = rng.uniform(-10, 10, n)
    old = g + rng.uniform(-3, 3, n)
    v = old.copy()
    for i in range(n):
        for _ in range(50):
            cand = old[i] + rng.uniform(-2 * eps, 2 * eps)
            d = abs(cand - old[i])
            vc = old[i] + max(-eps, min(eps, cand - old[i]))
            u, c = (cand - g[i]) ** 2, (vc - g[i]) ** 2
            if abs(d - eps) > MARGIN * eps and (d < eps or abs(u - c) > MARGIN * max(u, c)):
                v[i] = cand
                break
    return _ValueBatch(v, old, g, eps)


def _value_to_arrays(b: _ValueBatch) -> Mapping[str, npt.NDArray[Any]]:
    return {"values": b.values, "old_values": b.old_values, "returns": b.returns,
            "clip_eps": np.array(b.clip_eps)}


def _value_from_arrays(a: Mapping[str, npt.NDArray[Any]]) -> _ValueBatch:
    for k in ("values", "old_values", "returns", "clip_eps"):
        if k not in a:
            raise ModelError(f"a value-loss case needs the array {k!r}, which is missing")
    return _ValueBatch(np.array(a["values"], dtype=np.float64),
                       np.array(a["old_values"], dtype=np.float64),
                       np.array(a["returns"], dtype=np.float64), float(a["clip_eps"]))


def check_value_loss(
    fn: Callable[..., Any],
    *,
    grad: Callable[..., Any] | None = None,
    clip: bool = True,
    coef: float = 0.5,
    atol: float | None = None,
    rtol: float | None = None,
    dtype: str | None = None,
    xp: Any = None,
    cases: int = 50,
    seed: int = 0,
    replay: Case | None = None,
) -> CheckReport:
    """Check a PPO value loss ``coef mean max((V - G)^2, (V_old + clip(V - V_old, -eps, eps)
    - G)^2)`` (``clip=False``: ``coef mean (V - G)^2``) and, with ``grad=``, its gradient in
    the values: ``2 coef (V - G) / B`` where the unclipped error is the larger (or they tie,
    inside the clip) and 0 where the clipped one is strictly larger
    (``proofs_notes/ppo-loss.md#value-clip``).

    Called as ``fn(values, old_values, returns, clip_eps)``, arrays ``(B,)``, returning a
    scalar; ``grad`` with the same arguments returns ``(B,)``.  Tolerances: a sum of ``B``
    squares, ``2 (B + 8) eps`` times the mean square (loss) and ``16 eps`` times each
    entry's error (gradient), for the oracle and at the judged precision for the callable.

    Raises:
        CheckArgumentError: ``coef`` not positive and finite, or a bad tolerance, ``dtype``,
            ``cases`` or ``seed``.
    """
    fn = guard(fn)
    grad_fn = guard(grad) if grad is not None else None
    if isinstance(coef, bool) or not isinstance(coef, (int, float)) or not (
            math.isfinite(coef) and coef > 0):
        raise CheckArgumentError(f"coef = {coef!r}, expected a positive finite number")

    def evaluate_case(b: _ValueBatch, index: int, io: UserIO) -> list[Compared]:
        loss, g = value_loss_and_grad(b.values, b.old_values, b.returns, b.clip_eps, coef,
                                      clip)
        args = [io.arg(b.values), io.arg(b.old_values), io.arg(b.returns), b.clip_eps]
        n = b.values.size
        big = np.maximum(np.abs(b.values - b.returns), np.abs(b.old_values - b.returns)
                         + b.clip_eps)
        scale = np.abs(b.values) + np.abs(b.old_values) + np.abs(b.returns) + b.clip_eps
        t_loss = 2 * (n + 8) * EPS * coef * float(np.sum(big * scale)) / n * 2
        t_grad = 16 * EPS * coef * scale / n
        out = [Compared(_scalar(io, fn(*args), "the loss"), np.array([loss]), t_loss, t_loss,
                        label=lambda idx: "loss",
                        context=lambda idx: f" (eps={b.clip_eps:.4g}, B={n})")]
        if grad_fn is not None:
            gg = io.out(grad_fn(*args), "the gradient")
            if gg.shape != g.shape:
                raise CaseFailure(f"the gradient has shape {gg.shape}, expected {g.shape}")

            def context(idx: tuple[int, ...]) -> str:
                i = idx[0]
                d = b.values[i] - b.old_values[i]
                where = "inside" if abs(d) < b.clip_eps else "beyond"
                return (f" (V - V_old = {d:.4g} {where} the clip eps={b.clip_eps:.4g}, "
                        f"V - G = {b.values[i] - b.returns[i]:.4g})")

            out.append(Compared(gg, g, t_grad, t_grad,
                                label=lambda idx: f"dloss/dvalues[{idx[0]}]", context=context))
        return out

    def alternatives() -> list[Alternative]:
        from verify.checks.planted import known_bugs

        res = []
        for m in known_bugs("value-loss"):
            def outputs(b: _ValueBatch, f: Any = m.fn) -> list[FloatArray]:
                loss, g = f(b.values, b.old_values, b.returns, b.clip_eps)
                outs = [np.array([float(loss)])]
                if grad_fn is not None:
                    outs.append(np.asarray(g, dtype=np.float64))
                return outs
            res.append(Alternative(m.name, m.bug, outputs))
        return res if clip and coef == 0.5 else []

    conventions = [f"clip={clip}" if not clip else "", f"coef={coef}" if coef != 0.5 else "",
                   "gradient checked" if grad is not None else ""]
    decl = Declaration(
        name="value-loss",
        reference="proofs_notes/ppo-loss.md#value-clip: coef mean max((V - G)^2, "
        "(V_old + clip(V - V_old, -eps, eps) - G)^2)",
        generate=_value_generate,
        to_arrays=_value_to_arrays,
        from_arrays=_value_from_arrays,
        evaluate=evaluate_case,
        alternatives=alternatives,
        convention=", ".join(c for c in conventions if c) or None,
    )
    return run_check(decl, cases=cases, seed=seed, replay=replay, atol=atol, rtol=rtol,
                     dtype=dtype, xp=xp)


def td_loss_and_grad(
    values: FloatArray, next_values: FloatArray, rewards: FloatArray,
    terminated: npt.NDArray[np.bool_], gamma: float,
) -> tuple[float, FloatArray, FloatArray]:
    """``0.5 mean (V - y)^2`` with the constant target ``y = r + gamma (1 - terminated) V'``,
    and its gradients in ``V`` (``(V - y) / B``) and in ``V'`` (exactly 0: the target is
    held fixed)."""
    y = rewards + gamma * np.where(terminated, 0.0, next_values)
    n = values.size
    return float(0.5 * np.sum((values - y) ** 2) / n), (values - y) / n, np.zeros(n)


def _td_label(name: str) -> Callable[[tuple[int, ...]], str]:
    return lambda idx: f"dloss/d{name}[{idx[0]}]"


def _td_context(name: str, terminated: npt.NDArray[np.bool_],
                ) -> Callable[[tuple[int, ...]], str]:
    if name == "next_values":
        return lambda idx: (" (the target r + gamma (1 - terminated) V' must be held fixed: "
                            "is a stop-gradient missing?)")
    return lambda idx: f" (terminated={bool(terminated[idx[0]])})"


@dataclass(frozen=True)
class _TDBatch:
    values: FloatArray
    next_values: FloatArray
    rewards: FloatArray
    terminated: npt.NDArray[np.bool_]
    gamma: float


def check_td_loss(
    fn: Callable[..., Any],
    *,
    grad: Callable[..., Any] | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    dtype: str | None = None,
    xp: Any = None,
    cases: int = 50,
    seed: int = 0,
    replay: Case | None = None,
) -> CheckReport:
    """Check a squared TD-error critic loss whose target is a constant
    (``proofs_notes/ppo-loss.md#stop-gradient``)::

        loss = 0.5 mean (V - y)^2,   y = r + gamma (1 - terminated) V'   (held fixed),

    and, with ``grad=``, its gradients in ``V`` and ``V'``: ``(V - y) / B`` and exactly 0.
    Both values come from the same critic in real code, so a loss without a stop-gradient
    on ``y`` has the right value and a wrong gradient ``-gamma (1 - terminated)(V - y) / B``
    in ``V'``, which this check reports.

    Called as ``fn(values, next_values, rewards, terminated, gamma)``, arrays ``(B,)``
    (``terminated`` bool), returning a scalar; ``grad`` with the same arguments returns the
    pair ``(d loss / d values, d loss / d next_values)`` (``jax.grad(fn, argnums=(0, 1))``).
    """
    fn = guard(fn)
    grad_fn = guard(grad) if grad is not None else None

    def generate(rng: np.random.Generator, size: float) -> _TDBatch:
        n = ladder_count(rng, size, 8)
        return _TDBatch(rng.uniform(-10, 10, n), rng.uniform(-10, 10, n),
                        rng.uniform(-1, 1, n), rng.random(n) < 0.25,
                        float(rng.uniform(0.5, 0.99)))

    def to_arrays(b: _TDBatch) -> Mapping[str, npt.NDArray[Any]]:
        return {"values": b.values, "next_values": b.next_values, "rewards": b.rewards,
                "terminated": b.terminated, "gamma": np.array(b.gamma)}

    def from_arrays(a: Mapping[str, npt.NDArray[Any]]) -> _TDBatch:
        for k in ("values", "next_values", "rewards", "terminated", "gamma"):
            if k not in a:
                raise ModelError(f"a td-loss case needs the array {k!r}, which is missing")
        return _TDBatch(np.array(a["values"], dtype=np.float64),
                        np.array(a["next_values"], dtype=np.float64),
                        np.array(a["rewards"], dtype=np.float64),
                        np.array(a["terminated"], dtype=np.bool_), float(a["gamma"]))

    def evaluate_case(b: _TDBatch, index: int, io: UserIO) -> list[Compared]:
        loss, gv, gn = td_loss_and_grad(b.values, b.next_values, b.rewards, b.terminated,
                                        b.gamma)
        args = [io.arg(b.values), io.arg(b.next_values), io.arg(b.rewards),
                io.arg(b.terminated), b.gamma]
        n = b.values.size
        scale = np.abs(b.values) + np.abs(b.rewards) + np.abs(b.next_values)
        t_loss = 2 * (n + 8) * EPS * float(np.sum(scale ** 2)) / n
        t_grad = 16 * EPS * scale / n
        out = [Compared(_scalar(io, fn(*args), "the loss"), np.array([loss]), t_loss,
                        t_loss, label=lambda idx: "loss")]
        if grad_fn is not None:
            pair = grad_fn(*args)
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise CaseFailure("grad returned one array; expected the pair (d loss / d "
                                  "values, d loss / d next_values)")
            for got, want, name in ((pair[0], gv, "values"), (pair[1], gn, "next_values")):
                arr = io.out(got, f"d loss / d {name}")
                if arr.shape != want.shape:
                    raise CaseFailure(f"d loss / d {name} has shape {arr.shape}, expected "
                                      f"{want.shape}")
                out.append(Compared(arr, want, t_grad, t_grad, label=_td_label(name),
                                    context=_td_context(name, b.terminated)))
        return out

    decl = Declaration(
        name="td-loss",
        reference="proofs_notes/ppo-loss.md#stop-gradient: 0.5 mean (V - sg(r + gamma "
        "(1 - terminated) V'))^2; d/dV' = 0",
        generate=generate,
        to_arrays=to_arrays,
        from_arrays=from_arrays,
        evaluate=evaluate_case,
        convention="gradient checked" if grad is not None else None,
    )
    return run_check(decl, cases=cases, seed=seed, replay=replay, atol=atol, rtol=rtol,
                     dtype=dtype, xp=xp)


# --------------------------------------------------------------------- log-linear policies

MAX_OBS = 3
MAX_FEATURES = 4


def loglinear_loss_and_grad(
    theta: FloatArray, old_theta: FloatArray, features: FloatArray,
    obs: npt.NDArray[np.int64], actions: npt.NDArray[np.int64], advantages: FloatArray,
    clip_eps: float, ent_coef: float, kl_coef: float,
    prev_actions: npt.NDArray[np.int64] | None = None, factor: FloatArray | None = None,
) -> tuple[float, FloatArray]:
    """The PPO loss of the log-linear policy ``pi(a|o) ∝ exp(phi(o, a) . theta)`` and its
    exact gradient in ``theta`` (``proofs_notes/ppo-loss.md#log-linear-policies``)::

        logits[b, a] = phi(o_b, a) . theta,
        d loss / d theta = sum_{b, a} d loss / d logits[b, a] phi(o_b, a),

    the chain rule through the features of :func:`ppo_loss_and_grad`'s logit gradient.
    Shapes: ``theta`` ``(d,)``, ``features`` ``(O, A, d)``, ``obs``, ``actions``,
    ``advantages`` ``(B,)``.  Sequential (HAPPO) form: ``features`` ``(O, P, A, d)`` indexed
    by ``prev_actions`` ``(B,)`` (the joint action of the agents updated earlier, ``0..P-1``),
    and the surrogate carries HAPPO's ``factor`` ``(B,)``
    (``proofs_notes/ppo-loss.md#sequential``)."""
    phi = features[obs] if prev_actions is None else features[obs, prev_actions]
    loss, g = ppo_loss_and_grad(phi @ theta, phi @ old_theta, actions, advantages, factor,
                                clip_eps, ent_coef, kl_coef)
    grad: FloatArray = np.einsum("ba,bad->d", g, phi)
    return loss, grad


@dataclass(frozen=True)
class _LogLinearBatch:
    theta: FloatArray
    old_theta: FloatArray
    features: FloatArray
    obs: npt.NDArray[np.int64]
    actions: npt.NDArray[np.int64]
    advantages: FloatArray
    clip_eps: float
    ent_coef: float
    kl_coef: float
    prev_actions: npt.NDArray[np.int64] | None = None
    factor: FloatArray | None = None

    def phi(self) -> FloatArray:
        out: FloatArray = self.features[self.obs] if self.prev_actions is None \
            else self.features[self.obs, self.prev_actions]
        return out

    def logit_batch(self) -> _PPOBatch:
        phi = self.phi()
        return _PPOBatch(phi @ self.theta, phi @ self.old_theta, self.actions,
                         self.advantages, self.factor, self.clip_eps, self.ent_coef,
                         self.kl_coef)


def _loglinear_generate(rng: np.random.Generator, size: float, terms: tuple[str, ...],
                        sequential: bool = False) -> _LogLinearBatch:
    """``O`` up to 3 observations, ``A`` in ``2..4``, ``d`` up to 4 features in ``[-1, 1]``,
    ``theta`` in ``[-1.5, 1.5]``; ``old_theta = theta`` plus noise of scale 0.2 (one batch in
    five: equal), redrawn until every sample's ratio is ``MARGIN`` (relative) away from both
    clip edges (after 50 draws: equal); the rest as :func:`_ppo_generate`.  Sequential: ``P``
    in ``1..4`` earlier joint actions, features ``(O, P, A, d)``, HAPPO factors in
    ``[0.5, 1.5]``."""
    n_b = ladder_count(rng, size, MAX_BATCH)
    n_a = ladder_count(rng, size, MAX_ACTIONS, low=2)
    n_o = ladder_count(rng, size, MAX_OBS)
    n_d = ladder_count(rng, size, MAX_FEATURES)
    n_p = ladder_count(rng, size, MAX_ACTIONS) if sequential else 0
    lead = (n_o, n_p) if sequential else (n_o,)
    features = rng.uniform(-1.0, 1.0, (*lead, n_a, n_d))
    theta = rng.uniform(-1.5, 1.5, n_d)
    obs = rng.integers(0, n_o, n_b)
    prev = rng.integers(0, n_p, n_b) if sequential else None
    actions = rng.integers(0, n_a, n_b)
    eps = 0.2 if rng.random() < 0.4 else float(rng.uniform(0.05, 0.4))
    old = theta.copy()
    if rng.random() >= 0.2:
        phi = features[obs] if prev is None else features[obs, prev]
        rows = np.arange(n_b)
        for _ in range(50):
            cand = theta + rng.normal(0.0, 0.2, n_d)
            w = np.exp(log_softmax(phi @ theta)[rows, actions]
                       - log_softmax(phi @ cand)[rows, actions])
            if np.all(np.minimum(np.abs(w - (1 - eps)), np.abs(w - (1 + eps))) > MARGIN * w):
                old = cand
                break
    advantages = rng.uniform(-2.0, 2.0, n_b)
    ent = float(rng.uniform(0.0, 0.1)) if "entropy" in terms else 0.0
    kl = float(rng.uniform(0.0, 1.0)) if "kl" in terms else 0.0
    factor = rng.uniform(0.5, 1.5, n_b) if sequential else None
    return _LogLinearBatch(theta, old, features, obs, actions, advantages, eps, ent, kl,
                           prev, factor)


def _loglinear_to_arrays(b: _LogLinearBatch) -> Mapping[str, npt.NDArray[Any]]:
    out = {"theta": b.theta, "old_theta": b.old_theta, "features": b.features, "obs": b.obs,
           "actions": b.actions, "advantages": b.advantages,
           "clip_eps": np.array(b.clip_eps), "ent_coef": np.array(b.ent_coef),
           "kl_coef": np.array(b.kl_coef)}
    if b.prev_actions is not None and b.factor is not None:
        out["prev_actions"] = b.prev_actions
        out["factor"] = b.factor
    return out


def _loglinear_from_arrays(a: Mapping[str, npt.NDArray[Any]]) -> _LogLinearBatch:
    names = ("theta", "old_theta", "features", "obs", "actions", "advantages", "clip_eps",
             "ent_coef", "kl_coef")
    missing = [k for k in names if k not in a]
    if missing:
        raise ModelError(f"a log-linear ppo-loss case needs arrays {missing}, which are "
                         "missing")
    shape = np.shape(a["features"])
    seq = "prev_actions" in a
    if len(shape) != (4 if seq else 3) or np.shape(a["theta"]) != shape[-1:] \
            or np.shape(a["old_theta"]) != shape[-1:] \
            or (seq and ("factor" not in a or np.shape(a["prev_actions"]) != np.shape(a["obs"])
                         or np.shape(a["factor"]) != np.shape(a["obs"]))) \
            or np.shape(a["actions"]) != np.shape(a["obs"]) \
            or np.shape(a["advantages"]) != np.shape(a["obs"]):
        raise ModelError(f"log-linear ppo-loss case arrays disagree with features of shape "
                         f"{shape}")
    return _LogLinearBatch(np.array(a["theta"], dtype=np.float64),
                           np.array(a["old_theta"], dtype=np.float64),
                           np.array(a["features"], dtype=np.float64),
                           np.array(a["obs"], dtype=np.int64),
                           np.array(a["actions"], dtype=np.int64),
                           np.array(a["advantages"], dtype=np.float64),
                           float(a["clip_eps"]), float(a["ent_coef"]), float(a["kl_coef"]),
                           np.array(a["prev_actions"], dtype=np.int64) if seq else None,
                           np.array(a["factor"], dtype=np.float64) if seq else None)


def _loglinear_rounding(b: _LogLinearBatch) -> tuple[float, FloatArray]:
    """Rounding bounds (``proofs_notes/ppo-loss.md#log-linear-policies``): the logits
    ``phi . theta`` carry at most ``delta = d eps max_{b,a} sum_k |phi theta|`` each (both
    ``theta`` and ``old_theta``), which moves the loss by at most ``2 delta sum |g|`` and
    each logit-gradient entry by at most ``4 delta`` times its row's term size over ``S``
    (the second derivatives of the row's terms are bounded by twice its gradient size);
    the gradient in ``theta`` then adds the logit-gradient bound carried through
    ``|phi|`` and the rounding of the ``B A``-term contraction."""
    lb = b.logit_batch()
    t_loss, t_grad = _ppo_rounding(lb)
    _, g = ppo_loss_and_grad(lb.logits, lb.old_logits, lb.actions, lb.advantages, lb.factor,
                             lb.clip_eps, lb.ent_coef, lb.kl_coef)
    phi = np.abs(b.phi())
    m = np.ones(lb.advantages.size) if lb.factor is None else np.abs(lb.factor)
    n_d = b.theta.size
    mag = max(float(np.max(phi @ np.abs(b.theta))), float(np.max(phi @ np.abs(b.old_theta))))
    delta = (n_d + 1) * EPS * max(mag, 1.0)
    n_b, n_a = lb.logits.shape
    rows = lb.advantages.size
    w_max = float(np.max(np.exp(log_softmax(lb.logits)[np.arange(n_b), lb.actions]
                                - log_softmax(lb.old_logits)[np.arange(n_b), lb.actions])))
    row_size = (m * np.abs(lb.advantages) * max(w_max, 1 + lb.clip_eps) * 2 + lb.ent_coef
                * (float(np.max(np.ptp(lb.logits, axis=1))) + math.log(n_a) + 2)
                + 2 * lb.kl_coef)
    logit_grad = t_grad + 4 * delta * (row_size / rows)[:, None] * np.ones((1, n_a))
    loss_tol = t_loss + 2 * delta * float(np.sum(np.abs(g)))
    grad_tol = np.einsum("ba,bad->d", logit_grad, phi) + 2 * (n_b * n_a + 1) * EPS \
        * np.einsum("ba,bad->d", np.abs(g), phi)
    return loss_tol, grad_tol


def check_ppo_loss_loglinear(
    fn: Callable[..., Any],
    *,
    grad: Callable[..., Any] | None = None,
    terms: tuple[str, ...] = ("surrogate",),
    sequential: bool = False,
    atol: float | None = None,
    rtol: float | None = None,
    dtype: str | None = None,
    xp: Any = None,
    cases: int = 50,
    seed: int = 0,
    replay: Case | None = None,
) -> CheckReport:
    """Check a PPO loss of a log-linear policy ``pi(a|o) ∝ exp(phi(o, a) . theta)`` (SPEC
    section 5), and the gradient in ``theta`` your autograd gives for it, against the exact
    values (``proofs_notes/ppo-loss.md#log-linear-policies``)::

        logits[b, a] = phi(o_b, a) . theta,   loss as in :func:`check_ppo_loss`,
        d loss / d theta = sum_{b, a} d loss / d logits[b, a] phi(o_b, a).

    The loss is called as ``fn(theta, old_theta, features, obs, actions, advantages,
    clip_eps, ent_coef, kl_coef)`` with ``theta``, ``old_theta`` ``(d,)``, ``features``
    ``(O, A, d)``, ``obs``, ``actions`` (int) and ``advantages`` ``(B,)``, and returns a
    scalar; ``grad``, with the same arguments, returns the gradient in ``theta``, shape
    ``(d,)`` (``jax.grad(fn)``).  Instances: ``O`` up to 3, ``A`` in ``2..4``, ``d`` up to
    4, ``B`` up to 6; ratios on both sides of the clip and ``MARGIN`` away from its edges.

    ``sequential=True`` is HAPPO's sequential update of agent ``m`` whose features depend on
    the actions of the agents updated before it (``proofs_notes/ppo-loss.md#sequential``):
    ``features`` ``(O, P, A, d)``, ``phi(o_b, p_b, a)`` with ``prev_actions`` ``p_b`` in
    ``0..P-1`` (the earlier agents' joint action, ``P`` up to 4) and the surrogate
    ``min(w M A, clip(w) M A)`` with HAPPO's factor ``M`` ``(B,)`` held fixed; the callables
    take ``prev_actions, factor`` after ``obs``.

    Tolerance: :func:`_loglinear_rounding`, or ``atol``; plus ``rtol |oracle|``.

    Raises:
        CheckArgumentError: an unknown term, or a bad tolerance, ``dtype``, ``cases`` or
            ``seed``.
    """
    fn = guard(fn)
    grad_fn = guard(grad) if grad is not None else None
    terms = tuple(terms)
    bad = [t for t in terms if t not in TERMS]
    if bad or not terms:
        raise CheckArgumentError(f"terms = {terms!r}, expected a non-empty subset of {TERMS}")

    def args(b: _LogLinearBatch, conv: Callable[[Any], Any]) -> list[Any]:
        seq = [] if b.prev_actions is None or b.factor is None \
            else [conv(b.prev_actions), conv(b.factor)]
        return [conv(b.theta), conv(b.old_theta), conv(b.features), conv(b.obs), *seq,
                conv(b.actions), conv(b.advantages), b.clip_eps, b.ent_coef, b.kl_coef]

    def evaluate_case(b: _LogLinearBatch, index: int, io: UserIO) -> list[Compared]:
        adv = b.advantages if "surrogate" in terms else np.zeros_like(b.advantages)
        loss, g = loglinear_loss_and_grad(b.theta, b.old_theta, b.features, b.obs,
                                          b.actions, adv, b.clip_eps, b.ent_coef, b.kl_coef,
                                          b.prev_actions, b.factor)
        t_loss, t_grad = _loglinear_rounding(b)
        got = _scalar(io, fn(*args(b, io.arg)), "the loss")

        def context(idx: tuple[int, ...]) -> str:
            return (f" (eps={b.clip_eps:.4g}, ent_coef={b.ent_coef:.4g}, "
                    f"kl_coef={b.kl_coef:.4g}, samples {b.actions.size}, features "
                    f"{b.theta.size})")

        out = [Compared(got, np.array([loss]), t_loss, t_loss, label=lambda idx: "loss",
                        context=context)]
        if grad_fn is not None:
            gg = io.out(grad_fn(*args(b, io.arg)), "the gradient")
            if gg.shape != g.shape:
                raise CaseFailure(f"the gradient has shape {gg.shape}, expected {g.shape} "
                                  "(that of theta)")
            out.append(Compared(gg, g, t_grad, t_grad,
                                label=lambda idx: f"dloss/dtheta[{idx[0]}]",
                                context=context))
        return out

    decl = Declaration(
        name="ppo-loss-loglinear",
        reference="proofs_notes/ppo-loss.md#log-linear-policies: logits = phi(o, a) . theta; "
        "exact gradient sum_{b,a} dloss/dlogits[b, a] phi(o_b, a)",
        generate=lambda rng, size: _loglinear_generate(rng, size, terms, sequential),
        to_arrays=_loglinear_to_arrays,
        from_arrays=_loglinear_from_arrays,
        evaluate=evaluate_case,
        alternatives=None,
        convention=", ".join(
            (["sequential=True"] if sequential else [])
            + ([f"terms={terms!r}"] if terms != ("surrogate",) else [])
            + (["gradient checked"] if grad is not None else [])) or None,
    )
    return run_check(decl, cases=cases, seed=seed, replay=replay, atol=atol, rtol=rtol,
                     dtype=dtype, xp=xp)
