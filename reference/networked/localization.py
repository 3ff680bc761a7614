"""The best localized policy found by exact gradient ascent (SPEC section 8).

``F_loc(beta) = sup_theta F(theta)`` over localized softmax policies of observation radius
``beta``.  ``F`` is not concave in ``theta``, so ascent from a start may stop at a stationary
point below ``F_loc(beta)``: :func:`best_localized` runs exact gradient ascent from several
seeded starts and returns the best value found, a **lower bound** on ``F_loc(beta)``, itself at
most ``F*`` (``proofs_notes/optimum.md#localized``).  ``F_loc(beta) = F*`` is proved only for
linear utilities with ``beta >= diameter`` (an optimal deterministic joint policy is a product
of local deterministic policies of the joint state); :attr:`LocalizedOptimum.equals_optimum`
records that case.  For non-linear utilities full observation is not enough: product
policies cannot correlate agents' actions at a state, and ``F_loc(diameter) < F*`` strictly
on the counterexample of ``proofs_notes/optimum.md#full-observation``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from reference._arrays import FloatArray, IntArray, frozen
from reference.errors import ModelError
from reference.networked.exact import check_utilities, objective, solve
from reference.networked.model import NetworkedMDP
from reference.networked.policy import LocalizedSoftmaxPolicy
from reference.networked.utilities import LinearUtility, Utility

__all__ = ["LocalizedOptimum", "best_localized", "gradient_ascent"]


@dataclass(frozen=True)
class AscentResult:
    """One run of :func:`gradient_ascent`.

    Attributes:
        policy: the final policy.
        value: ``F`` at it.
        gradient_norm: ``||grad F||_2`` at it (the stationarity reached).
        iterations: accepted steps.
    """

    policy: LocalizedSoftmaxPolicy = field(repr=False)
    value: float
    gradient_norm: float
    iterations: int


def gradient_ascent(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    utilities: Sequence[Utility],
    *,
    iterations: int = 200,
    tolerance: float = 1e-8,
    step: float = 1.0,
) -> AscentResult:
    """Exact gradient ascent ``theta += eta grad F(theta)`` with Armijo backtracking.

    The gradient is the shadow-reward policy gradient of
    :func:`reference.networked.exact.solve`; a step ``eta`` is accepted when
    ``F(theta + eta g) >= F(theta) + eta ||g||^2 / 2`` (halving otherwise, doubling after
    an acceptance), so ``F`` never decreases.  Stops after ``iterations`` accepted steps, when
    ``||g|| <= tolerance``, or when no step of size at least ``1e-12`` is accepted.
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ModelError(f"iterations = {iterations!r}, expected a non-negative integer")
    if not (math.isfinite(step) and step > 0):
        raise ModelError(f"step = {step!r}, expected a finite number > 0")
    sol = solve(model, policy, utilities)
    eta = float(step)
    done = 0
    while done < iterations and sol.gradient_norm > tolerance:
        g = sol.gradient
        g2 = sol.gradient_norm**2
        accepted = False
        while eta >= 1e-12:
            trial = policy.with_theta([t + eta * d for t, d in zip(policy.theta, g, strict=True)])
            if objective(model, trial, utilities) >= sol.objective + 0.5 * eta * g2:
                accepted = True
                break
            eta *= 0.5
        if not accepted:
            break
        policy = trial
        sol = solve(model, policy, utilities)
        done += 1
        eta *= 2.0
    return AscentResult(policy, sol.objective, sol.gradient_norm, done)


@dataclass(frozen=True)
class LocalizedOptimum:
    """The best localized policy found for one observation radius.

    Attributes:
        beta: observation radius.
        value: best ``F`` found over the starts, a lower bound on ``F_loc(beta)``.
        gradient_norm: ``||grad F||_2`` at the best policy (its stationarity).
        policy: the best policy.
        start_values: ``(starts,)`` final ``F`` of each start (start 0 is ``theta = 0``).
        start_gradient_norms: ``(starts,)`` final ``||grad F||`` of each start.
        iterations: ``(starts,)`` accepted ascent steps of each start.
        initial_value: ``F`` at ``theta = 0``.
        equals_optimum: whether ``F_loc(beta) = F*`` is proved for this instance (linear
            utilities and ``beta >= diameter``); the value found may still lie below it.
    """

    beta: int
    value: float
    gradient_norm: float
    policy: LocalizedSoftmaxPolicy = field(repr=False)
    start_values: FloatArray
    start_gradient_norms: FloatArray
    iterations: IntArray
    initial_value: float
    equals_optimum: bool


def best_localized(
    model: NetworkedMDP,
    utilities: Sequence[Utility],
    beta: int,
    rng: np.random.Generator,
    *,
    starts: int = 3,
    iterations: int = 200,
    scale: float = 1.0,
) -> LocalizedOptimum:
    """Best ``F`` over localized softmax policies of radius ``beta`` found by
    :func:`gradient_ascent` from ``theta = 0`` and ``starts - 1`` random starts
    (``Normal(0, scale^2)`` logits drawn from ``rng``).

    Returns a lower bound on ``F_loc(beta)``, not ``F_loc(beta)`` itself (the problem is not
    concave in ``theta``; ``proofs_notes/optimum.md#localized``).
    """
    check_utilities(model, utilities)
    if isinstance(starts, bool) or not isinstance(starts, int) or starts < 1:
        raise ModelError(f"starts = {starts!r}, expected a positive integer")
    base = LocalizedSoftmaxPolicy.uniform(model, beta)
    initial = objective(model, base, utilities)
    runs = []
    for k in range(starts):
        start = base if k == 0 else LocalizedSoftmaxPolicy.random(model, beta, rng, scale)
        runs.append(gradient_ascent(model, start, utilities, iterations=iterations))
    best = max(runs, key=lambda r: r.value)
    linear = all(isinstance(f, LinearUtility) for f in utilities)
    diameter = model.graph.diameter
    return LocalizedOptimum(
        beta=base.beta,
        value=best.value,
        gradient_norm=best.gradient_norm,
        policy=best.policy,
        start_values=frozen([r.value for r in runs]),
        start_gradient_norms=frozen([r.gradient_norm for r in runs]),
        iterations=np.array([r.iterations for r in runs], dtype=np.int64),
        initial_value=initial,
        equals_optimum=linear and model.graph.connected and base.beta >= diameter,
    )
