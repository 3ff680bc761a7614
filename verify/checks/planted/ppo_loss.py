"""Planted bugs and correct implementations for the PPO-family loss checks
(``verify/checks/ppo_loss.py``).

Plain numpy, written as a user writes a PPO loss; the gradient functions return what an
autograd system gives for the loss beside them (derived by hand, branch by branch, the way
the loss is written).  Canonical signature for the diagnosis:
``f(logits, old_logits, actions, advantages, factor, clip_eps, ent_coef, kl_coef) ->
(loss, gradient)``, ``factor`` ``None`` outside HAPPO.  Each wrong one models a reported bug,
cited in its docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from reference._arrays import FloatArray
from verify.checks._core import KnownBug, Mutant
from verify.checks.ppo_loss import check_ppo_loss, check_td_loss, check_value_loss

__all__ = ["CORRECT", "DIAGNOSABLE", "MUTANTS"]

_CASES = 30
Canonical = Callable[..., tuple[float, FloatArray]]


def _parts(logits: FloatArray, old_logits: FloatArray, actions: npt.NDArray[np.int64],
           advantages: FloatArray, factor: FloatArray | None) -> dict[str, Any]:
    """Per-sample pieces a user's loss computes: log-softmax, probabilities, ratio."""
    def logsm(x: FloatArray) -> FloatArray:
        z = x - x.max(axis=-1, keepdims=True)
        out: FloatArray = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
        return out

    lp, lp_old = logsm(logits), logsm(old_logits)
    pick = actions[..., None]
    ratio = np.exp(np.take_along_axis(lp, pick, -1)[..., 0]
                   - np.take_along_axis(lp_old, pick, -1)[..., 0])
    m = np.ones_like(advantages) if factor is None else np.broadcast_to(
        factor.reshape((-1,) + (1,) * (advantages.ndim - 1)), advantages.shape)
    onehot = np.zeros_like(logits)
    np.put_along_axis(onehot, pick, 1.0, -1)
    pi = np.exp(lp)
    return {"lp": lp, "lp_old": lp_old, "ratio": ratio, "m": m, "onehot": onehot, "pi": pi,
            "pi_old": np.exp(lp_old), "n": advantages.size, "wt": np.ones_like(advantages)}


def _regularisers(p: dict[str, Any], ent_coef: float, kl_coef: float,
                  ) -> tuple[float, FloatArray]:
    """The entropy bonus and KL penalty terms of the loss (masked means) and their
    gradients."""
    wt = p["wt"]
    ent = -(p["pi"] * p["lp"]).sum(-1)
    kl = (p["pi_old"] * (p["lp_old"] - p["lp"])).sum(-1)
    value = (-ent_coef * (wt * ent).sum() + kl_coef * (wt * kl).sum()) / p["n"]
    g = wt[..., None] * (ent_coef * p["pi"] * (p["lp"] + ent[..., None])
                         + kl_coef * (p["pi"] - p["pi_old"])) / p["n"]
    return float(value), g


def _with_surrogate(
    surr: Callable[[dict[str, Any], FloatArray, float], tuple[FloatArray, FloatArray]],
    mask: str = "masked-mean",
) -> Canonical:
    """A canonical loss-and-gradient from a per-sample surrogate ``surr(parts, A, eps) ->
    (l, dl/dlog-ratio)``; the gradient in the logits is ``dl/dlog-ratio (e_a - pi)``.
    ``mask`` says how ``active`` enters: ``"masked-mean"`` (correct), ``"divide-by-all"``
    (masked sum over the entry count), ``"ignored"``."""
    def f(logits: FloatArray, old_logits: FloatArray, actions: npt.NDArray[np.int64],
          advantages: FloatArray, factor: FloatArray | None, clip_eps: float,
          ent_coef: float, kl_coef: float, active: FloatArray | None = None,
          ) -> tuple[float, FloatArray]:
        p = _parts(logits, old_logits, actions, advantages, factor)
        if active is not None and mask != "ignored":
            p["wt"] = active
            if mask == "masked-mean":
                p["n"] = max(float(active.sum()), 1.0)
        per, dl = surr(p, advantages, clip_eps)
        reg, g_reg = _regularisers(p, ent_coef, kl_coef)
        wt = p["wt"]
        grad = -(wt[..., None] * dl[..., None] * (p["onehot"] - p["pi"])) / p["n"] + g_reg
        return float(-(wt * per).sum() / p["n"] + reg), grad
    return f


def _clipped(p: dict[str, Any], adv: FloatArray, eps: float) -> tuple[FloatArray, FloatArray]:
    """Correct: ``min(w M A, clip(w) M A)``; autograd passes through the smaller term (torch
    and jax send a tie's gradient to the unclipped one, as the clip is the identity there)."""
    w, m = p["ratio"], p["m"]
    s1, s2 = w * m * adv, np.clip(w, 1 - eps, 1 + eps) * m * adv
    return np.minimum(s1, s2), np.where(s1 <= s2, s1, 0.0)


def _min_before_advantage(p: dict[str, Any], adv: FloatArray, eps: float,
                          ) -> tuple[FloatArray, FloatArray]:
    w, m = p["ratio"], p["m"]
    cw = np.clip(w, 1 - eps, 1 + eps)
    return np.minimum(w, cw) * m * adv, np.where(w <= cw, w * m * adv, 0.0)


def _clip_the_product(p: dict[str, Any], adv: FloatArray, eps: float,
                      ) -> tuple[FloatArray, FloatArray]:
    w, m = p["ratio"], p["m"]
    s1 = w * m * adv
    s2 = np.clip(s1, 1 - eps, 1 + eps)
    return np.minimum(s1, s2), np.where(s1 <= 1 + eps, s1, 0.0)


def _ratio_without_grad(p: dict[str, Any], adv: FloatArray, eps: float,
                        ) -> tuple[FloatArray, FloatArray]:
    per, _ = _clipped(p, adv, eps)
    return per, np.zeros_like(per)


def _mean_advantage(p: dict[str, Any], adv: FloatArray, eps: float,
                    ) -> tuple[FloatArray, FloatArray]:
    return _clipped(p, np.full_like(adv, adv.mean()), eps)


ppo_canonical = _with_surrogate(_clipped)
ppo_min_before_advantage = _with_surrogate(_min_before_advantage)
ppo_min_before_advantage.__doc__ = (
    "Bug (provenance: takuseno/ppo issue #3): the minimum is taken between the ratio and the "
    "clipped ratio before multiplying by the advantage, so a negative advantage is never "
    "clipped.")
ppo_clip_the_product = _with_surrogate(_clip_the_product)
ppo_clip_the_product.__doc__ = (
    "Bug (provenance: alexis-jacq/Pytorch-DPPO issue #3): the product w A is clamped to "
    "[1 - eps, 1 + eps] instead of the ratio.")
ppo_ratio_without_grad = _with_surrogate(_ratio_without_grad)
ppo_ratio_without_grad.__doc__ = (
    "Bug (provenance: thu-ml/tianshou issue #742): the ratio is computed without gradient "
    "tracking (a stop-gradient in the wrong place), so the loss value is right and its "
    "gradient through the surrogate is 0.")
ppo_mean_advantage = _with_surrogate(_mean_advantage)
ppo_mean_advantage.__doc__ = (
    "Bug (provenance: Omegastick/pytorch-cpp-rl issue #14): the surrogates multiply the "
    "ratio by the batch mean of the advantages instead of each sample's advantage.")


def _user_masked(f: Canonical, part: int) -> Callable[..., Any]:
    """``f`` in the user signature with ``active_masks`` (MAPPO's masked losses)."""
    def g(logits: FloatArray, old_logits: FloatArray, actions: npt.NDArray[np.int64],
          advantages: FloatArray, active_masks: FloatArray, clip_eps: float, ent_coef: float,
          kl_coef: float) -> Any:
        return f(logits, old_logits, actions, advantages, None, clip_eps, ent_coef,
                 kl_coef, active_masks)[part]
    return g


def _user(f: Canonical, part: int) -> Callable[..., Any]:
    """``f`` in the user signature without ``factor`` (``part`` 0: the loss, 1: the
    gradient)."""
    def g(logits: FloatArray, old_logits: FloatArray, actions: npt.NDArray[np.int64],
          advantages: FloatArray, clip_eps: float, ent_coef: float, kl_coef: float) -> Any:
        return f(logits, old_logits, actions, advantages, None, clip_eps, ent_coef,
                 kl_coef)[part]
    return g


masked_divide_by_all = _with_surrogate(_clipped, "divide-by-all")
masked_divide_by_all.__doc__ = (
    "Bug (provenance: marlbenchmark/on-policy issues #1 and #34, which describe where MAPPO "
    "applies its active masks: policy loss, advantage normalisation, entropy; this slip "
    "applies the mask but keeps the unmasked count): the masked sum is divided by the "
    "number of all entries, dead agents' included, instead of the number of active ones.")
masks_ignored = _with_surrogate(_clipped, "ignored")
masks_ignored.__doc__ = (
    "Bug (provenance: instadeepai/Mava issue #628, dead agents' values left unmasked in a "
    "PPO critic loss; the same omission here in the policy loss): the active masks are "
    "not applied; dead and inactive agents' terms enter the mean.")


def _user_happo(f: Canonical, part: int) -> Callable[..., Any]:
    def g(logits: FloatArray, old_logits: FloatArray, actions: npt.NDArray[np.int64],
          advantages: FloatArray, factor: FloatArray, clip_eps: float, ent_coef: float,
          kl_coef: float) -> Any:
        return f(logits, old_logits, actions, advantages, factor, clip_eps, ent_coef,
                 kl_coef)[part]
    return g


def ppo_loss_torch_style(
    logits: FloatArray, old_logits: FloatArray, actions: npt.NDArray[np.int64],
    advantages: FloatArray, clip_eps: float, ent_coef: float, kl_coef: float,
) -> float:
    """Correct: the loss as a CleanRL-style script writes it (log-ratio, exp, two surrogates,
    max of the negated ones, entropy bonus, KL penalty)."""
    def logsm(x: FloatArray) -> FloatArray:
        out: FloatArray = x - np.log(np.exp(x).sum(-1, keepdims=True))
        return out

    new, old = logsm(logits), logsm(old_logits)
    idx = actions[..., None]
    logratio = (np.take_along_axis(new, idx, -1) - np.take_along_axis(old, idx, -1))[..., 0]
    ratio = np.exp(logratio)
    pg1 = -advantages * ratio
    pg2 = -advantages * np.clip(ratio, 1 - clip_eps, 1 + clip_eps)
    entropy = -(np.exp(new) * new).sum(-1)
    kl = (np.exp(old) * (old - new)).sum(-1)
    return float(np.maximum(pg1, pg2).mean() - ent_coef * entropy.mean()
                 + kl_coef * kl.mean())


def td_loss(values: FloatArray, next_values: FloatArray, rewards: FloatArray,
            terminated: npt.NDArray[np.bool_], gamma: float) -> float:
    """Correct: ``0.5 mean (V - y)^2`` with ``y`` computed as a constant."""
    y = rewards + gamma * (1.0 - terminated) * next_values
    return float(0.5 * np.mean((values - y) ** 2))


def td_loss_grad(values: FloatArray, next_values: FloatArray, rewards: FloatArray,
                 terminated: npt.NDArray[np.bool_], gamma: float,
                 ) -> tuple[FloatArray, FloatArray]:
    """Correct: what autograd returns when the target is detached."""
    y = rewards + gamma * (1.0 - terminated) * next_values
    return (values - y) / values.size, np.zeros_like(next_values)


def td_loss_grad_no_stop_gradient(
    values: FloatArray, next_values: FloatArray, rewards: FloatArray,
    terminated: npt.NDArray[np.bool_], gamma: float,
) -> tuple[FloatArray, FloatArray]:
    """Bug (provenance: Farama-Foundation/Gymnasium issue #1494, a tutorial's A2C critic loss
    that back-propagated through its bootstrapped target): the gradient flows into the
    target's next value too, ``-gamma (1 - terminated)(V - y) / B``."""
    y = rewards + gamma * (1.0 - terminated) * next_values
    d = (values - y) / values.size
    return d, -gamma * (1.0 - terminated) * d


def td_loss_bootstrap_through_termination(
    values: FloatArray, next_values: FloatArray, rewards: FloatArray,
    terminated: npt.NDArray[np.bool_], gamma: float,
) -> float:
    """Bug (provenance: a done-flag slip in a TD target; JaxMARL issue #93 reports another
    form of it): ``y = r + gamma V'`` even after a termination."""
    return float(0.5 * np.mean((values - rewards - gamma * next_values) ** 2))


def value_clip(values: FloatArray, old_values: FloatArray, returns: FloatArray,
               clip_eps: float) -> tuple[float, FloatArray]:
    """Correct: ``0.5 mean max(unclipped^2, clipped^2)`` and its autograd gradient."""
    vc = old_values + np.clip(values - old_values, -clip_eps, clip_eps)
    u, c = (values - returns) ** 2, (vc - returns) ** 2
    inside = np.abs(values - old_values) <= clip_eps
    g = np.where((u >= c) | inside, values - returns, 0.0) / values.size
    return float(0.5 * np.maximum(u, c).mean()), g


def value_clip_min(values: FloatArray, old_values: FloatArray, returns: FloatArray,
                   clip_eps: float) -> tuple[float, FloatArray]:
    """Bug (provenance: implementation-matters/code-for-paper issue #1 and
    Jiankai-Sun/Proximal-Policy-Optimization-Pytorch issue #1, which ask whether the value
    clip should take the min, as for the policy, or the max the code takes): the smaller of
    the two squared errors is taken, like the policy surrogate's min."""
    vc = old_values + np.clip(values - old_values, -clip_eps, clip_eps)
    u, c = (values - returns) ** 2, (vc - returns) ** 2
    inside = np.abs(values - old_values) <= clip_eps
    g = np.where((u <= c) | inside, values - returns, 0.0) / values.size
    return float(0.5 * np.minimum(u, c).mean()), g


def value_clip_max_before_square(values: FloatArray, old_values: FloatArray,
                                 returns: FloatArray, clip_eps: float,
                                 ) -> tuple[float, FloatArray]:
    """Bug (provenance: implementation-matters/code-for-paper issue #1, where a comment
    notes that code's max is taken before squaring, unlike OpenAI baselines):
    ``0.5 mean max(V - G, V_clipped - G)^2``, which depends on the sign of the errors."""
    vc = old_values + np.clip(values - old_values, -clip_eps, clip_eps)
    d1, d2 = values - returns, vc - returns
    inside = np.abs(values - old_values) <= clip_eps
    g = np.where((d1 >= d2) | inside, d1, 0.0) / values.size
    return float(0.5 * (np.maximum(d1, d2) ** 2).mean()), g


def _first(f: Callable[..., tuple[float, FloatArray]]) -> Callable[..., float]:
    return lambda *a: f(*a)[0]


def _second(f: Callable[..., tuple[float, FloatArray]]) -> Callable[..., FloatArray]:
    return lambda *a: f(*a)[1]


_ALL = ("surrogate", "entropy", "kl")

MUTANTS = (
    Mutant("ppo-min-before-advantage", "min(w, clip(w)) A instead of min(w A, clip(w) A) "
           "(takuseno/ppo #3)", "ppo-loss",
           lambda: check_ppo_loss(_user(ppo_min_before_advantage, 0), cases=_CASES)),
    Mutant("ppo-clip-the-product", "clamps w A instead of w (alexis-jacq/Pytorch-DPPO #3)",
           "ppo-loss", lambda: check_ppo_loss(_user(ppo_clip_the_product, 0), cases=_CASES)),
    Mutant("ppo-ratio-without-grad", "the ratio carries no gradient: right loss, zero "
           "surrogate gradient (thu-ml/tianshou #742)", "ppo-loss",
           lambda: check_ppo_loss(_user(ppo_ratio_without_grad, 0),
                                  grad=_user(ppo_ratio_without_grad, 1), terms=_ALL,
                                  cases=_CASES)),
    Mutant("ppo-mean-advantage", "the surrogates use the batch-mean advantage "
           "(Omegastick/pytorch-cpp-rl #14)", "ppo-loss",
           lambda: check_ppo_loss(_user(ppo_mean_advantage, 0), cases=_CASES)),
    Mutant("value-clip-min", "the smaller squared error is taken (implementation-matters "
           "#1)", "value-loss",
           lambda: check_value_loss(_first(value_clip_min), grad=_second(value_clip_min),
                                    cases=_CASES)),
    Mutant("value-clip-max-before-square", "max(V - G, V_clipped - G)^2 (implementation-"
           "matters #1)", "value-loss",
           lambda: check_value_loss(_first(value_clip_max_before_square),
                                    grad=_second(value_clip_max_before_square),
                                    cases=_CASES)),
    Mutant("td-loss-missing-stop-gradient", "the TD target is not detached: the gradient "
           "reaches V' (Gymnasium #1494)", "td-loss",
           lambda: check_td_loss(td_loss, grad=td_loss_grad_no_stop_gradient, cases=_CASES)),
    Mutant("td-loss-bootstrap-through-termination", "y = r + gamma V' after a termination "
           "(a done-flag slip, cf. JaxMARL #93)", "td-loss",
           lambda: check_td_loss(td_loss_bootstrap_through_termination, cases=_CASES)),
)
"""Wrong implementations, each with the check that must catch it."""

CORRECT = (
    Mutant("ppo-loss-torch-style", "correct implementation: CleanRL-style loss with entropy "
           "and KL", "ppo-loss",
           lambda: check_ppo_loss(ppo_loss_torch_style, terms=_ALL, cases=_CASES)),
    Mutant("ppo-loss-with-gradient", "correct implementation: loss and its autograd "
           "gradient, all terms", "ppo-loss",
           lambda: check_ppo_loss(_user(ppo_canonical, 0), grad=_user(ppo_canonical, 1),
                                  terms=_ALL, cases=_CASES)),
    Mutant("mappo-per-agent-loss", "correct implementation: MAPPO's per-agent ratios, "
           "(B, N, A) logits, with gradient", "ppo-loss",
           lambda: check_ppo_loss(_user(ppo_canonical, 0), grad=_user(ppo_canonical, 1),
                                  ratios="per-agent", cases=_CASES)),
    Mutant("happo-factor-loss", "correct implementation: HAPPO's factor times the clipped "
           "ratio, with gradient", "ppo-loss",
           lambda: check_ppo_loss(_user_happo(ppo_canonical, 0),
                                  grad=_user_happo(ppo_canonical, 1), ratios="happo",
                                  cases=_CASES)),
    Mutant("value-clip", "correct implementation: clipped value loss and gradient",
           "value-loss", lambda: check_value_loss(_first(value_clip), grad=_second(value_clip),
                                                  cases=_CASES)),
    Mutant("td-loss-detached", "correct implementation: detached TD target", "td-loss",
           lambda: check_td_loss(td_loss, grad=td_loss_grad, cases=_CASES)),
)
"""Correct implementations, which the checks must pass."""

DIAGNOSABLE = (
    KnownBug("ppo-min-before-advantage", "min(w, clip(w)) A", ppo_min_before_advantage),
    KnownBug("ppo-clip-the-product", "clamps w A instead of w", ppo_clip_the_product),
    KnownBug("ppo-ratio-without-grad", "the ratio carries no gradient",
             ppo_ratio_without_grad),
    KnownBug("ppo-mean-advantage", "the surrogates use the batch-mean advantage",
             ppo_mean_advantage),
    KnownBug("value-clip-min", "the smaller squared error is taken", value_clip_min),
    KnownBug("value-clip-max-before-square", "max(V - G, V_clipped - G)^2",
             value_clip_max_before_square),
)
"""The planted bugs in the checks' canonical signatures, which their diagnoses try."""
