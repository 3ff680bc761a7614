"""General utilities of a local occupancy (SPEC section 2, "Utilities").

A utility is a function ``f_i : R^{S_i x A_i} -> R`` of agent i's local **unnormalised**
discounted occupancy ``lam_i[s_i, a_i]`` (mass ``1/(1-gamma)``, SPEC section 0); the normalised
occupancy is ``d = (1-gamma) * lam``.  The team objective is
``F(theta) = (1/n) sum_i f_i(lam_i^theta)``.

Every utility offers

* ``value(lam)`` -- ``f(lam)``;
* ``gradient(lam)`` -- ``df/dlam``, an array shaped like ``lam``.  Evaluated at ``lam_i^theta`` it
  is the **shadow reward** ``r_i^theta(s_i, a_i)``: by the chain rule
  ``grad_theta f(lam^theta) = (d lam^theta / d theta)^T grad f(lam^theta)``, which is the ordinary
  policy gradient of the MDP whose reward is ``grad f`` frozen at theta
  (``proofs_notes/shadow-reward-gradient.md``);
* ``constants`` -- a :class:`UtilityConstants` record of the constants that the convergence and
  truncation analyses consume, each derived in the class docstring.

"Reachable occupancies" below means the set every constant is stated over: non-negative ``lam``
with total mass ``1/(1-gamma)``, i.e. ``d`` in the probability simplex on ``S_i x A_i``.  It
contains every occupancy a policy can produce, and it is convex, so a bound on the Hessian
over it is a Lipschitz constant of the gradient over it (integrate along segments).

Notation used in the derivations: ``m = nS * nA`` is the number of entries, and for a smoothing
floor ``eps > 0`` the scalar function

    phi(x) = -x log(x + eps),   phi'(x) = g(x) = -log(x + eps) - x / (x + eps),
    g'(x) = -(x + 2 eps) / (x + eps)^2  < 0   for x > -eps,

so ``g`` is decreasing, ``phi`` is concave, ``g([0, 1]) = [g(1), g(0)]`` with
``g(0) = -log(eps)`` and ``g(1) = -log(1 + eps) - 1/(1 + eps)``, and on ``[0, 1]``
``|g'(x)| <= |g'(0)| = 2/eps`` (``|g'|`` is decreasing there: its derivative is
``-(x + 3 eps)/(x + eps)^3 < 0``).
"""

from __future__ import annotations

import math
import operator
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reference._arrays import (
    FloatArray,
    FrozenArrays,
    as_float_array,
    check_gamma,
    frozen,
    stochastic_tolerance,
)
from reference.errors import ModelError, UtilityDomainError

__all__ = [
    "ConstraintPenaltyUtility",
    "EntropyUtility",
    "KLImitationUtility",
    "LinearUtility",
    "QuadraticImitationUtility",
    "Utility",
    "UtilityConstants",
    "evaluate_utilities",
    "evaluate_utilities_stacked",
]


# --------------------------------------------------------------------------------------------
# Records and the abstract base
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UtilityConstants:
    """Constants of a utility over reachable occupancies (``lam >= 0``, ``sum lam = 1/(1-gamma)``).

    Attributes:
        gradient_bound: ``sup_lam max_{s,a} |df/dlam[s, a]|``, an upper bound on the magnitude of
            the shadow reward (``proofs_notes/shadow-reward-gradient.md``).
        smoothness: a Lipschitz constant ``L`` of ``grad f`` in the l2 norm,
            ``||grad f(x) - grad f(y)||_2 <= L ||x - y||_2`` (a bound on the Hessian's operator
            norm where ``f`` is twice differentiable).
        value_range: ``(lo, hi)`` with ``lo <= f(lam) <= hi``.
        concave: whether ``f`` is concave on the reachable set.
    """

    gradient_bound: float
    smoothness: float
    value_range: tuple[float, float]
    concave: bool


class Utility(FrozenArrays, ABC):
    """A utility ``f : R^{S_i x A_i} -> R`` of an unnormalised local occupancy ``lam``.

    Concrete utilities are frozen dataclasses validated completely at construction.  ``value``
    and ``gradient`` first pass ``lam`` through :meth:`check_domain`, then call the private
    ``_value`` / ``_gradient`` that hold the formula.

    Attributes:
        shape: ``(nS_i, nA_i)``, the shape of ``lam``.
        gamma: discount factor ``0 <= gamma < 1``; ``d = (1-gamma) * lam`` is a distribution.
    """

    shape: tuple[int, int]
    gamma: float

    @property
    def name(self) -> str:
        """The utility's class name, used in error messages."""
        return type(self).__name__

    def check_domain(self, lam: Any) -> FloatArray:
        """Return ``lam`` as a float64 array after checking it lies in the utility's domain.

        Args:
            lam: ``(nS_i, nA_i)`` unnormalised local occupancy.

        Raises:
            UtilityDomainError: wrong shape, a non-finite entry, or an entry outside the domain
                of a log term; the message names the utility, the entry index and its value.
        """
        arr = as_float_array(lam, f"{self.name}: lam", shape=self.shape, error=UtilityDomainError)
        self._check_floor(arr)
        return arr

    def _check_floor(self, lam: FloatArray) -> None:
        """Hook: raise UtilityDomainError if a log argument of ``f`` is not positive at ``lam``."""

    def value(self, lam: Any) -> float:
        """``f(lam)`` for a ``(nS_i, nA_i)`` unnormalised occupancy ``lam``."""
        return self._value(self.check_domain(lam))

    def gradient(self, lam: Any) -> FloatArray:
        """``df/dlam[s, a]``, shape ``(nS_i, nA_i)``: the shadow reward at ``lam``.

        See ``proofs_notes/shadow-reward-gradient.md`` for why this array plays the role of
        the reward in the policy gradient of ``f(lam^theta)``.
        """
        return self._gradient(self.check_domain(lam))

    def evaluate(self, lam: Any) -> tuple[float, FloatArray]:
        """``(f(lam), grad f(lam))`` with one :meth:`check_domain` for both: the same
        numbers as :meth:`value` and :meth:`gradient`."""
        arr = self.check_domain(lam)
        return self._value(arr), self._gradient(arr)

    @property
    @abstractmethod
    def constants(self) -> UtilityConstants:
        """The declared :class:`UtilityConstants` over reachable occupancies."""

    @abstractmethod
    def _value(self, lam: FloatArray) -> float:
        """``f(lam)`` for an already checked ``lam``."""

    @abstractmethod
    def _gradient(self, lam: FloatArray) -> FloatArray:
        """``grad f(lam)`` for an already checked ``lam`` (a fresh, writable array)."""


# --------------------------------------------------------------------------------------------
# Validation helpers (constructor inputs raise ModelError naming the entry and value)
# --------------------------------------------------------------------------------------------


def _check_gamma(gamma: Any, owner: str) -> float:
    try:
        return check_gamma(gamma)
    except ModelError as exc:
        raise ModelError(f"{owner}: {exc}") from None


def _check_positive(value: Any, name: str, owner: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ModelError(f"{owner}: {name} = {value!r} is not a number") from None
    if not (math.isfinite(x) and x > 0.0):
        raise ModelError(f"{owner}: {name} = {x!r}, expected a finite number > 0")
    return x


def _check_finite(value: Any, name: str, owner: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ModelError(f"{owner}: {name} = {value!r} is not a number") from None
    if not math.isfinite(x):
        raise ModelError(f"{owner}: {name} = {x!r}, expected a finite number")
    return x


def _check_shape(shape: Any, owner: str) -> tuple[int, int]:
    try:
        dims = tuple(operator.index(n) for n in shape)
    except TypeError:
        raise ModelError(f"{owner}: shape = {shape!r}, expected two positive integers") from None
    if len(dims) != 2 or min(dims) < 1:
        raise ModelError(f"{owner}: shape = {dims!r}, expected (nS, nA) with nS, nA >= 1")
    return dims[0], dims[1]


def _read_table(value: Any, name: str, owner: str) -> FloatArray:
    """A finite, non-empty ``(nS, nA)`` float64 array."""
    arr = as_float_array(value, f"{owner}: {name}", ndim=2)
    if arr.size == 0:
        raise ModelError(f"{owner}: {name} has shape {arr.shape}, expected nS, nA >= 1")
    return arr


def _read_target(value: Any, owner: str) -> FloatArray:
    """A ``(nS, nA)`` distribution: non-negative entries summing to 1 (up to rounding)."""
    t = _read_table(value, "target", owner)
    negative = t < 0.0
    if negative.any():
        s, a = (int(i) for i in np.argwhere(negative)[0])
        raise ModelError(
            f"{owner}: target[{s}, {a}] = {float(t[s, a])!r} is negative, expected a distribution"
        )
    total = float(t.sum())
    if abs(total - 1.0) > stochastic_tolerance(t.size):
        raise ModelError(f"{owner}: target sums to {total!r}, expected 1")
    return t


def _shape_of(arr: FloatArray) -> tuple[int, int]:
    return int(arr.shape[0]), int(arr.shape[1])


# --------------------------------------------------------------------------------------------
# The smoothed -x log(x + eps) family shared by the entropy and KL utilities
# --------------------------------------------------------------------------------------------


def _slope(x: FloatArray, eps: float) -> FloatArray:
    """``g(x) = d/dx [-x log(x + eps)] = -log(x + eps) - x / (x + eps)`` (elementwise)."""
    shifted = x + eps
    out: FloatArray = -np.log(shifted) - x / shifted
    return out


def _slope_range(eps: float) -> tuple[float, float]:
    """``(g(1), g(0))``: the range of the decreasing ``g`` on ``[0, 1]``."""
    return -math.log1p(eps) - 1.0 / (1.0 + eps), -math.log(eps)


# --------------------------------------------------------------------------------------------
# Concrete utilities
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LinearUtility(Utility):
    """Linear utility ``f(lam) = <r, lam> = sum_{s,a} r[s, a] lam[s, a]`` (standard RL).

    With ``lam = lam^theta`` this is the discounted return ``J(theta)`` (SPEC section 1,
    ``J = <lam, r>``), and the shadow reward is ``r`` itself
    (``proofs_notes/shadow-reward-gradient.md``).  Domain: all of ``R^{S x A}``.

    Args:
        reward: ``(nS, nA)`` finite reward ``r[s, a]``.
        gamma: discount factor in ``[0, 1)`` (used for the value range).

    Constants (over ``lam >= 0``, ``sum lam = 1/(1-gamma)``):

    * gradient_bound ``= max |r|``: the gradient is the constant ``r``.
    * smoothness ``= 0``: the gradient does not change.
    * value_range ``= (min r, max r) / (1-gamma)``: ``<r, lam>`` is a ``lam``-weighted sum of
      entries of ``r`` with total weight ``1/(1-gamma)``; the ends are attained at vertices.
    * concave ``= True`` (linear).
    """

    reward: FloatArray
    gamma: float
    shape: tuple[int, int] = field(init=False)

    def __post_init__(self) -> None:
        r = _read_table(self.reward, "reward", self.name)
        object.__setattr__(self, "reward", frozen(r))
        object.__setattr__(self, "gamma", _check_gamma(self.gamma, self.name))
        object.__setattr__(self, "shape", _shape_of(r))

    @property
    def constants(self) -> UtilityConstants:
        scale = 1.0 / (1.0 - self.gamma)
        return UtilityConstants(
            gradient_bound=float(np.max(np.abs(self.reward))),
            smoothness=0.0,
            value_range=(float(self.reward.min()) * scale, float(self.reward.max()) * scale),
            concave=True,
        )

    def _value(self, lam: FloatArray) -> float:
        return float(np.einsum("sa,sa->", self.reward, lam))

    def _gradient(self, lam: FloatArray) -> FloatArray:
        return np.array(self.reward, dtype=np.float64, copy=True)


@dataclass(frozen=True, eq=False)
class EntropyUtility(Utility):
    """Smoothed entropy of the normalised state marginal (exploration utility).

    With the state marginal ``p[s] = (1-gamma) sum_a lam[s, a]`` and a smoothing floor
    ``eps > 0``::

        f(lam) = -sum_s p[s] log(p[s] + eps)
        df/dlam[s, a] = (1-gamma) g(p[s]),   g(p) = -log(p + eps) - p / (p + eps).

    The floor keeps the gradient bounded at ``p[s] = 0`` (the unsmoothed entropy has an
    infinite slope there).  Domain: ``p[s] + eps > 0`` for every ``s``, so a small negative
    rounding error in ``lam`` is accepted.

    Args:
        shape: ``(nS, nA)``.
        gamma: discount factor in ``[0, 1)``.
        eps: smoothing floor, ``eps > 0`` (default ``1e-3``).

    Constants (over ``lam >= 0``, ``sum lam = 1/(1-gamma)``, hence ``p`` in the simplex):

    * gradient_bound ``= (1-gamma) max(|g(0)|, |g(1)|)`` with ``g(0) = -log eps`` and
      ``g(1) = -log(1+eps) - 1/(1+eps)``: ``g`` is decreasing (module docstring) and
      ``p[s]`` lies in ``[0, 1]``, so ``g(p[s])`` lies in ``[g(1), g(0)]``.
    * smoothness ``= (1-gamma)^2 nA 2/eps``: the Hessian is block diagonal over ``s``; block
      ``s`` is ``(1-gamma)^2 g'(p[s]) 1 1^T`` with ``1 1^T`` the all-ones ``nA x nA`` matrix of
      operator norm ``nA``, and ``|g'(p)| = (p + 2 eps)/(p + eps)^2 <= 2/eps`` on ``[0, 1]``.
    * value_range ``= (-log(1+eps), log nS)``: since ``p + eps <= 1 + eps``,
      ``f >= -sum_s p[s] log(1+eps) = -log(1+eps)``; since ``log(p + eps) >= log p``,
      ``f <= -sum_s p[s] log p[s] <= log nS`` (Shannon entropy bound).
    * concave ``= True``: ``f`` is a sum of ``phi(p[s])`` with ``phi'' = g' < 0``, composed with
      the linear map ``lam -> p``.
    """

    shape: tuple[int, int]
    gamma: float
    eps: float = 1e-3

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", _check_shape(self.shape, self.name))
        object.__setattr__(self, "gamma", _check_gamma(self.gamma, self.name))
        object.__setattr__(self, "eps", _check_positive(self.eps, "eps", self.name))

    @property
    def constants(self) -> UtilityConstants:
        g_one, g_zero = _slope_range(self.eps)
        scale = 1.0 - self.gamma
        n_states, n_actions = self.shape
        return UtilityConstants(
            gradient_bound=scale * max(abs(g_zero), abs(g_one)),
            smoothness=scale**2 * n_actions * 2.0 / self.eps,
            value_range=(-math.log1p(self.eps), math.log(n_states)),
            concave=True,
        )

    def _marginal(self, lam: FloatArray) -> FloatArray:
        """``p[s] = (1-gamma) sum_a lam[s, a]``, shape ``(nS,)``."""
        out: FloatArray = (1.0 - self.gamma) * np.einsum("sa->s", lam)
        return out

    def _check_floor(self, lam: FloatArray) -> None:
        p = self._marginal(lam)
        bad = p + self.eps <= 0.0
        if bad.any():
            s = int(np.argmax(bad))
            p_s = float(p[s])
            raise UtilityDomainError(
                f"{self.name}: state marginal p[{s}] = (1-gamma) * sum_a lam[{s}, :] = {p_s!r} "
                f"is at or below -eps = {-self.eps!r}, outside the domain of log(p + eps)"
            )

    def _value(self, lam: FloatArray) -> float:
        p = self._marginal(lam)
        return float(-np.dot(p, np.log(p + self.eps)))

    def _gradient(self, lam: FloatArray) -> FloatArray:
        per_state = (1.0 - self.gamma) * _slope(self._marginal(lam), self.eps)
        return np.repeat(per_state[:, np.newaxis], self.shape[1], axis=1)


@dataclass(frozen=True, eq=False)
class QuadraticImitationUtility(Utility):
    """Quadratic imitation of a target occupancy.

    With ``d = (1-gamma) lam`` and a target distribution ``t`` on ``S x A``::

        f(lam) = -1/2 ||d - t||_2^2
        df/dlam = -(1-gamma) (d - t).

    Domain: all of ``R^{S x A}``.

    Args:
        target: ``(nS, nA)`` distribution ``t`` (non-negative, sums to 1).
        gamma: discount factor in ``[0, 1)``.

    Constants (over ``d`` in the simplex):

    * gradient_bound ``= (1-gamma) max(max t, 1 - min t)``: each ``d[s,a] - t[s,a]`` lies in
      ``[-t[s,a], 1 - t[s,a]]``, so its magnitude is at most ``max(max t, 1 - min t)``.
    * smoothness ``= (1-gamma)^2``: the Hessian is ``-(1-gamma)^2 I``.
    * value_range ``= (-1/2 (||t||^2 + 1 - 2 min t), 0)``:
      ``||d - t||^2 = ||d||^2 - 2 <d, t> + ||t||^2`` with ``||d||^2 <= sum d = 1`` and
      ``<d, t> >= min t``; the upper end 0 is attained at ``d = t``.
    * concave ``= True`` (negative semidefinite Hessian).
    """

    target: FloatArray
    gamma: float
    shape: tuple[int, int] = field(init=False)

    def __post_init__(self) -> None:
        t = _read_target(self.target, self.name)
        object.__setattr__(self, "target", frozen(t))
        object.__setattr__(self, "gamma", _check_gamma(self.gamma, self.name))
        object.__setattr__(self, "shape", _shape_of(t))

    @property
    def constants(self) -> UtilityConstants:
        t = self.target
        t_min, t_max = float(t.min()), float(t.max())
        scale = 1.0 - self.gamma
        return UtilityConstants(
            gradient_bound=scale * max(t_max, 1.0 - t_min),
            smoothness=scale**2,
            value_range=(-0.5 * (float(np.einsum("sa,sa->", t, t)) + 1.0 - 2.0 * t_min), 0.0),
            concave=True,
        )

    def _residual(self, lam: FloatArray) -> FloatArray:
        """``d - t = (1-gamma) lam - t``, shape ``(nS, nA)``."""
        out: FloatArray = (1.0 - self.gamma) * lam - self.target
        return out

    def _value(self, lam: FloatArray) -> float:
        diff = self._residual(lam)
        return -0.5 * float(np.einsum("sa,sa->", diff, diff))

    def _gradient(self, lam: FloatArray) -> FloatArray:
        out: FloatArray = -(1.0 - self.gamma) * self._residual(lam)
        return out


@dataclass(frozen=True, eq=False)
class KLImitationUtility(Utility):
    """Smoothed KL imitation of a target occupancy.

    With ``d = (1-gamma) lam``, a target distribution ``t`` and a smoothing floor ``eps > 0``::

        f(lam) = -sum_{s,a} d log((d + eps) / (t + eps))
        df/dlam = (1-gamma) (g(d) + log(t + eps)),   g(x) = -log(x + eps) - x / (x + eps).

    For ``eps -> 0`` this is ``-KL(d || t)``; the floor keeps the gradient bounded where ``d``
    or ``t`` vanish.  Domain: ``d[s, a] + eps > 0`` for every entry, so a small negative
    rounding error in ``lam`` is accepted.

    Args:
        target: ``(nS, nA)`` distribution ``t`` (non-negative, sums to 1).
        gamma: discount factor in ``[0, 1)``.
        eps: smoothing floor, ``eps > 0`` (default ``1e-3``).

    Constants (over ``d`` in the simplex; ``m = nS nA``):

    * gradient_bound ``= (1-gamma) max(|g(1) + log(min t + eps)|, |g(0) + log(max t + eps)|)``:
      ``g`` is decreasing (module docstring), so ``g(d) in [g(1), g(0)]`` and
      ``log(t + eps) in [log(min t + eps), log(max t + eps)]``; their sum lies in the interval
      between the two quoted ends.
    * smoothness ``= (1-gamma)^2 2/eps``: the Hessian is diagonal, ``(1-gamma)^2 g'(d[s,a])``,
      and ``|g'| <= 2/eps`` on ``[0, 1]``.
    * value_range ``= (-log((1+eps)/(min t + eps)), log(1 + m eps))``.  Lower:
      ``-sum d log(d + eps) >= -log(1+eps)`` and ``sum d log(t + eps) >= log(min t + eps)``.
      Upper: dropping ``eps`` in ``d + eps`` only increases ``f``, so
      ``f <= sum_{d>0} d log((t + eps)/d) <= log sum_{d>0} (t + eps) <= log(1 + m eps)``
      by Jensen's inequality (concavity of log, weights ``d``).
    * concave ``= True``: a sum of ``phi(d)`` (``phi'' = g' < 0``) plus a linear term.
    """

    target: FloatArray
    gamma: float
    eps: float = 1e-3
    shape: tuple[int, int] = field(init=False)
    _log_target: FloatArray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        t = _read_target(self.target, self.name)
        eps = _check_positive(self.eps, "eps", self.name)
        object.__setattr__(self, "target", frozen(t))
        object.__setattr__(self, "gamma", _check_gamma(self.gamma, self.name))
        object.__setattr__(self, "eps", eps)
        object.__setattr__(self, "shape", _shape_of(t))
        object.__setattr__(self, "_log_target", frozen(np.log(t + eps)))

    @property
    def constants(self) -> UtilityConstants:
        g_one, g_zero = _slope_range(self.eps)
        t_min, t_max = float(self.target.min()), float(self.target.max())
        low = g_one + math.log(t_min + self.eps)
        high = g_zero + math.log(t_max + self.eps)
        scale = 1.0 - self.gamma
        m = self.shape[0] * self.shape[1]
        return UtilityConstants(
            gradient_bound=scale * max(abs(low), abs(high)),
            smoothness=scale**2 * 2.0 / self.eps,
            value_range=(
                -math.log((1.0 + self.eps) / (t_min + self.eps)),
                math.log1p(m * self.eps),
            ),
            concave=True,
        )

    def _normalised(self, lam: FloatArray) -> FloatArray:
        """``d = (1-gamma) lam``, shape ``(nS, nA)``."""
        out: FloatArray = (1.0 - self.gamma) * lam
        return out

    def _check_floor(self, lam: FloatArray) -> None:
        d = self._normalised(lam)
        bad = d + self.eps <= 0.0
        if bad.any():
            s, a = (int(i) for i in np.argwhere(bad)[0])
            d_sa = float(d[s, a])
            raise UtilityDomainError(
                f"{self.name}: d[{s}, {a}] = (1-gamma) * lam[{s}, {a}] = {d_sa!r} is at or "
                f"below -eps = {-self.eps!r}, outside the domain of log(d + eps)"
            )

    def _value(self, lam: FloatArray) -> float:
        d = self._normalised(lam)
        return float(-np.einsum("sa,sa->", d, np.log(d + self.eps) - self._log_target))

    def _gradient(self, lam: FloatArray) -> FloatArray:
        out: FloatArray = (1.0 - self.gamma) * (
            _slope(self._normalised(lam), self.eps) + self._log_target
        )
        return out


@dataclass(frozen=True, eq=False)
class ConstraintPenaltyUtility(Utility):
    """Quadratic penalty form of a safety constraint ``g(lam) >= c``, around any utility ``g``.

    With the constraint utility ``g``, threshold ``c``, weight ``mu > 0`` and an optional
    objective utility ``f_0`` (taken as 0 when absent)::

        f(lam) = f_0(lam) - (mu/2) [c - g(lam)]_+^2
        df/dlam = grad f_0(lam) + mu [c - g(lam)]_+ grad g(lam).

    ``[x]_+^2`` is continuously differentiable, so ``f`` is too.  The penalty and its gradient
    vanish exactly where the constraint holds.  Domain: the intersection of the domains of
    ``g`` and ``f_0``.

    Args:
        constraint: the utility ``g`` (any :class:`Utility`).
        threshold: ``c``, finite.
        weight: ``mu > 0``, finite.
        objective: ``f_0``, or ``None``; its ``shape`` and ``gamma`` must equal the constraint's.

    Constants, with ``G, L_g, (g_lo, g_hi)`` the constraint's gradient bound, smoothness and
    value range, ``G_0, L_0, (lo_0, hi_0)`` the objective's (``0, 0, (0, 0)`` when absent),
    ``m = nS nA`` and ``h = max(0, c - g_lo)`` (so ``0 <= [c - g]_+ <= h`` on the reachable set):

    * gradient_bound ``= G_0 + mu h G``: triangle inequality on the gradient formula.
    * smoothness ``= L_0 + mu (h L_g + m G^2)``: where ``c > g`` the penalty's Hessian is
      ``mu [c - g]_+ Hess g - mu grad g grad g^T``, of norm at most
      ``mu (h L_g + ||grad g||_2^2)`` with ``||grad g||_2^2 <= m G^2``; where ``c < g`` it is 0.
      The penalty's gradient is continuous and piecewise smooth along any segment, so the
      piecewise bound is a Lipschitz constant on the convex reachable set.
    * value_range ``= (lo_0 - (mu/2) h^2, hi_0)``: the penalty lies in ``[-(mu/2) h^2, 0]``.
    * concave ``= (f_0 concave or absent) and g concave``: for concave ``g``, ``c - g`` is
      convex, ``x -> [x]_+^2`` is convex and non-decreasing, so the penalty term is concave.
    """

    constraint: Utility
    threshold: float
    weight: float
    objective: Utility | None = None
    shape: tuple[int, int] = field(init=False)
    gamma: float = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.constraint, Utility):
            raise ModelError(f"{self.name}: constraint = {self.constraint!r} is not a Utility")
        object.__setattr__(self, "threshold", _check_finite(self.threshold, "threshold", self.name))
        object.__setattr__(self, "weight", _check_positive(self.weight, "weight", self.name))
        objective = self.objective
        if objective is not None:
            if not isinstance(objective, Utility):
                raise ModelError(f"{self.name}: objective = {objective!r} is not a Utility")
            if objective.shape != self.constraint.shape:
                raise ModelError(
                    f"{self.name}: objective shape {objective.shape} differs from "
                    f"constraint shape {self.constraint.shape}"
                )
            if objective.gamma != self.constraint.gamma:
                raise ModelError(
                    f"{self.name}: objective gamma = {objective.gamma!r} differs from "
                    f"constraint gamma = {self.constraint.gamma!r}"
                )
        object.__setattr__(self, "shape", self.constraint.shape)
        object.__setattr__(self, "gamma", self.constraint.gamma)

    @property
    def constants(self) -> UtilityConstants:
        con = self.constraint.constants
        if self.objective is None:
            obj = UtilityConstants(0.0, 0.0, (0.0, 0.0), True)
        else:
            obj = self.objective.constants
        mu = self.weight
        h = max(0.0, self.threshold - con.value_range[0])
        m = self.shape[0] * self.shape[1]
        return UtilityConstants(
            gradient_bound=obj.gradient_bound + mu * h * con.gradient_bound,
            smoothness=obj.smoothness + mu * (h * con.smoothness + m * con.gradient_bound**2),
            value_range=(obj.value_range[0] - 0.5 * mu * h**2, obj.value_range[1]),
            concave=obj.concave and con.concave,
        )

    def _check_floor(self, lam: FloatArray) -> None:
        parts = [("constraint", self.constraint), ("objective", self.objective)]
        for role, inner in parts:
            if inner is None:
                continue
            try:
                inner._check_floor(lam)
            except UtilityDomainError as exc:
                raise UtilityDomainError(f"{self.name} ({role}): {exc}") from None

    def _violation(self, lam: FloatArray) -> float:
        """``[c - g(lam)]_+``."""
        return max(0.0, self.threshold - self.constraint._value(lam))

    def _value(self, lam: FloatArray) -> float:
        base = 0.0 if self.objective is None else self.objective._value(lam)
        violation = self._violation(lam)
        return base - 0.5 * self.weight * violation**2

    def _gradient(self, lam: FloatArray) -> FloatArray:
        if self.objective is None:
            grad: FloatArray = np.zeros(self.shape, dtype=np.float64)
        else:
            grad = self.objective._gradient(lam)
        violation = self._violation(lam)
        if violation > 0.0:
            grad = grad + (self.weight * violation) * self.constraint._gradient(lam)
        return grad


def evaluate_utilities(
    utilities: Sequence[Utility], lams: Sequence[FloatArray]
) -> tuple[FloatArray, tuple[FloatArray, ...]]:
    """``(f_i(lam_i))_i`` as an ``(n,)`` array and ``(grad f_i(lam_i))_i`` as read-only
    copies: :meth:`Utility.evaluate` utility by utility (one domain check each)."""
    pairs = [f.evaluate(lam) for f, lam in zip(utilities, lams, strict=True)]
    values = np.array([v for v, _ in pairs], dtype=np.float64)
    return values, tuple(frozen(g) for _, g in pairs)


def _row_dots_einsum(x: FloatArray, y: FloatArray) -> FloatArray:
    """``out[i] = sum_k x[i, k] y[i, k]`` (``np.vecdot`` before numpy 2.0)."""
    out: FloatArray = np.einsum("ik,ik->i", x, y)
    return out


_row_dots: Callable[[FloatArray, FloatArray], FloatArray] = getattr(
    np, "vecdot", _row_dots_einsum
)


def evaluate_utilities_stacked(
    utilities: Sequence[Utility], lams: FloatArray, *, finite: bool = False
) -> tuple[FloatArray, FloatArray]:
    """:func:`evaluate_utilities` for occupancies of one shape stacked as ``(n, nS, nA)``;
    the gradients are returned stacked the same way (read-only).

    When every utility is a :class:`LinearUtility` (exactly that class) of that shape, the
    ``n`` evaluations are one contraction, ``f_i(lam_i) = sum_{s,a} r_i[s, a] lam_i[s, a]``
    for all ``i`` at once, the gradients are the stacked rewards, and the domain check (every
    entry finite) is one pass over the stack, or none when the caller passes ``finite=True``
    because it has established that every entry is finite; a non-finite entry, or any other
    utility, takes the one-at-a-time route, whose error names the utility and the entry.
    """
    shape = lams.shape[1:]
    n = len(utilities)
    values: FloatArray | None = None
    linear = [
        f.reward for f in utilities if type(f) is LinearUtility and f.shape == shape
    ]
    if lams.ndim == 3 and n == lams.shape[0] and n > 0 and len(linear) == n:
        rewards = np.array(linear)
        if finite or np.isfinite(lams).all():  # the linear utilities' domain check
            values = _row_dots(rewards.reshape(n, -1), lams.reshape(n, -1))
    if values is None:
        values, grads = evaluate_utilities(utilities, list(lams))
        rewards = np.array(grads)
    rewards.setflags(write=False)
    return values, rewards
