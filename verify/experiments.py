"""Experiment sweeps over the exact oracles (SPEC sections 3 and 4).

* :func:`kappa_decay_sweep` -- ``max_i D_i(kappa)``, the derived bound and the truncated
  gradient error ``||ghat - grad F||`` for every radius, with the fitted per-hop rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from reference._arrays import FloatArray, IntArray, frozen
from reference.networked.exact import gradient_norm, shadow_q, solve
from reference.networked.model import NetworkedMDP
from reference.networked.policy import LocalizedSoftmaxPolicy
from reference.networked.truncation import Weights, decay_profile, truncated_gradient
from reference.networked.utilities import Utility

__all__ = ["DecaySweep", "fit_rate", "kappa_decay_sweep"]


@dataclass(frozen=True)
class DecaySweep:
    """Result of :func:`kappa_decay_sweep`.

    Attributes:
        kappa: ``(K,)`` radii ``0..diameter``.
        max_spread: ``(K,)`` ``max_i D_i(kappa)`` of the shadow Q-functions.
        bound: ``(K,)`` ``max_i Delta_i gamma^t0(kappa, beta) / (1 - gamma)``.
        truncated_gradient_error: ``(K,)`` ``||ghat - grad F||_2`` (all agents).
        gradient_error_bound: ``(K,)`` ``sqrt(2 n) max_j D_j(kappa) / (1 - gamma)``, the
            per-agent bound of SPEC section 3 summed in squares over the ``n`` agents.
        rate: fitted per-hop decay rate ``exp(slope)`` of ``log max_spread`` against
            ``kappa`` (least squares over radii with positive spread); NaN if fewer than 2.
        beta: observation radius.
        weights: truncation weights used for ``ghat``.
    """

    kappa: IntArray
    max_spread: FloatArray
    bound: FloatArray
    truncated_gradient_error: FloatArray
    gradient_error_bound: FloatArray
    rate: float
    beta: int
    weights: str


def fit_rate(kappa: Sequence[int] | IntArray, values: Sequence[float] | FloatArray) -> float:
    """``exp(slope)`` of the least-squares line through ``(kappa, log value)`` for
    positive values above 1e-300; NaN with fewer than two such points."""
    k = np.asarray(kappa, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    keep = v > 1e-300
    if keep.sum() < 2:
        return float("nan")
    slope = np.polyfit(k[keep], np.log(v[keep]), 1)[0]
    return float(np.exp(slope))


def kappa_decay_sweep(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    utilities: Sequence[Utility],
    weights: Weights = "occupancy",
) -> DecaySweep:
    """Decay spreads, bound and truncated-gradient error for ``kappa = 0..diameter``."""
    sol = solve(model, policy, utilities)
    prof = decay_profile(model, policy, sol)
    qs = shadow_q(model, policy, sol)
    errors = []
    for k in prof.kappa:
        g = truncated_gradient(model, policy, sol, int(k), weights, qs)
        errors.append(gradient_norm([a - b for a, b in zip(g, sol.gradient, strict=True)]))
    max_spread = prof.spread.max(axis=0)
    grad_bound = np.sqrt(2.0 * model.n) * max_spread / (1.0 - model.gamma)
    # the truncation is exact at the diameter: leave the rounding-level spread out of the fit
    fit_k = prof.kappa[max_spread > 1e-12 * max(float(max_spread.max()), 1e-300)]
    fit_v = max_spread[max_spread > 1e-12 * max(float(max_spread.max()), 1e-300)]
    return DecaySweep(
        kappa=prof.kappa,
        max_spread=frozen(max_spread),
        bound=frozen(prof.bound.max(axis=0)),
        truncated_gradient_error=frozen(np.array(errors)),
        gradient_error_bound=frozen(grad_bound),
        rate=fit_rate(fit_k, fit_v),
        beta=policy.beta,
        weights=weights,
    )
