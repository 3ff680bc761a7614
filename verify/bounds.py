"""Concentration radii for sampled estimators, each with an explicit failure probability.

Every function returns a radius ``r`` such that the stated event has probability at least
``1 - delta``; ``delta`` is always an explicit argument.  The suite uses
``delta <= 1e-9`` per check (STYLE item 10) and :func:`split_delta` to share a budget
between several simultaneous checks by the union bound.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from reference._arrays import FloatArray
from reference.errors import ModelError

__all__ = [
    "bernstein_radius",
    "empirical_bellman_radius",
    "empirical_bernstein_radius",
    "geometric_sum_radius",
    "hoeffding_radius",
    "l1_radius",
    "sign_test_wins",
    "split_delta",
    "td_recursion_radius",
]


def _check(n: int, delta: float) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ModelError(f"sample count n = {n!r}, expected a positive integer")
    if not 0.0 < delta < 1.0:
        raise ModelError(f"delta = {delta!r}, expected a failure probability in (0, 1)")


def split_delta(delta: float, checks: int) -> float:
    """``delta / checks``: by the union bound, ``checks`` events each failing with
    probability at most this fail together with probability at most ``delta``."""
    if checks < 1:
        raise ModelError(f"checks = {checks!r}, expected at least one")
    return delta / checks


def hoeffding_radius(n: int, width: float, delta: float) -> float:
    """Two-sided Hoeffding radius for the mean of ``n`` i.i.d. variables in an interval of
    length ``width``.

    Hoeffding (1963), thm 2: ``P(|mean - mu| >= r) <= 2 exp(-2 n r^2 / width^2)``, so
    ``r = width sqrt(log(2/delta) / (2 n))``.
    """
    _check(n, delta)
    return float(width) * math.sqrt(math.log(2.0 / delta) / (2.0 * n))


def bernstein_radius(n: int, variance: float, bound: float, delta: float) -> float:
    """Two-sided Bernstein radius for the mean of ``n`` i.i.d. variables with variance at
    most ``variance`` and ``|X - mu| <= bound``.

    Bernstein's inequality (Boucheron, Lugosi, Massart 2013, cor. 2.11, both tails):
    ``P(|mean - mu| >= sqrt(2 v L / n) + 2 b L / (3 n)) <= delta`` with ``L = log(2/delta)``.
    """
    _check(n, delta)
    log_term = math.log(2.0 / delta)
    return math.sqrt(2.0 * variance * log_term / n) + 2.0 * bound * log_term / (3.0 * n)


def empirical_bernstein_radius(n: int, sample_variance: float, width: float, delta: float) -> float:
    """Two-sided empirical Bernstein radius (Maurer and Pontil 2009, thm 4, both tails).

    For ``n >= 2`` i.i.d. variables in an interval of length ``width`` with unbiased sample
    variance ``V``: ``P(|mean - mu| >= sqrt(2 V L / n) + 7 width L / (3 (n - 1))) <= delta``
    with ``L = log(4/delta)``.
    """
    _check(n, delta)
    if n < 2:
        raise ModelError("the empirical Bernstein bound needs n >= 2 samples")
    log_term = math.log(4.0 / delta)
    return math.sqrt(2.0 * sample_variance * log_term / n) + 7.0 * width * log_term / (
        3.0 * (n - 1)
    )


def l1_radius(n: int, dimension: int, l1_bound: float, delta: float) -> float:
    """Radius for ``||mean - mu||_1`` of ``n`` i.i.d. vectors ``X`` in ``R^m`` with
    ``||X||_1 <= l1_bound`` (e.g. one trajectory's discounted visit counts).

    ``E ||mean - mu||_1 <= sum_k sqrt(Var X_k / n) <= sqrt(m E||X||_2^2 / n) <= L sqrt(m / n)``
    (Cauchy-Schwarz, ``||X||_2 <= ||X||_1``); replacing one sample moves ``||mean - mu||_1`` by
    at most ``2 L / n``, so McDiarmid's inequality gives
    ``P(||mean - mu||_1 >= L sqrt(m/n) + L sqrt(2 log(1/delta) / n)) <= delta``.
    """
    _check(n, delta)
    if dimension < 1:
        raise ModelError(f"dimension = {dimension!r}, expected at least 1")
    return float(l1_bound) * (math.sqrt(dimension / n) + math.sqrt(2.0 * math.log(1.0 / delta) / n))


def geometric_sum_radius(n: int, gamma: float, delta: float) -> float:
    """Two-sided radius for the mean of ``n`` i.i.d. sums ``X = sum_{j=0}^{L} x_j`` with
    ``x_j in [0, 1]`` and an independent ``L``, ``P(L >= j) = gamma^j`` (the sampled
    ``Q^{1:m}`` of SPEC section 5; ``proofs_notes/algorithm3.md#sampled-q``).

    ``X <= L + 1`` is unbounded, so cap it: with ``c = ceil(log(2n/delta) / log(1/gamma))``,
    ``P(some L_i >= c) <= n gamma^c <= delta/2``, and ``Y = min(X, c)`` satisfies
    ``0 <= E X - E Y <= E (L + 1 - c)_+ = gamma^c / (1 - gamma)``.  ``Y`` lies in ``[0, c]`` with
    ``Var Y <= E (L+1)^2 = (1 + gamma) / (1 - gamma)^2``; Bernstein's inequality at ``delta/2``
    (:func:`bernstein_radius`) plus the cap's bias gives the radius, failure probability
    ``delta`` in all.
    """
    _check(n, delta)
    if not 0.0 <= gamma < 1.0:
        raise ModelError(f"gamma = {gamma!r}, expected 0 <= gamma < 1")
    if gamma == 0.0:
        return hoeffding_radius(n, 1.0, delta)
    cap = math.ceil(math.log(2.0 * n / delta) / math.log(1.0 / gamma))
    variance = (1.0 + gamma) / (1.0 - gamma) ** 2
    return bernstein_radius(n, variance, float(cap), delta / 2.0) + gamma**cap / (1.0 - gamma)


def _counts(counts: npt.ArrayLike, name: str = "counts") -> FloatArray:
    arr = np.asarray(counts, dtype=np.float64)
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ModelError(f"{name} must be a non-empty finite array, got shape {arr.shape}")
    bad = np.flatnonzero((arr < 0) | (arr != np.round(arr)))
    if bad.size:
        k = int(bad[0])
        raise ModelError(f"{name}[{k}] = {arr.reshape(-1)[k]!r}, expected a count >= 0")
    return arr


def empirical_bellman_radius(
    counts: npt.ArrayLike,
    width: float,
    gamma: float,
    delta: float,
    unvisited_value: float = 0.0,
) -> float:
    """Radius for ``max_{z : N_z > 0} |qhat(z) - q(z)|`` when ``qhat`` is the fixed point of
    an empirical Bellman operator built from independent samples
    (``proofs_notes/algorithm1.md#replay-td``).

    Setting: ``qhat(z) = (1/N_z) sum_{b : z_b = z} [r_b + gamma qhat(z'_b)]`` where
    ``N_z > 0`` and ``qhat(z) = 0`` elsewhere; ``q`` is the exact fixed point, with
    ``q(z) = E[r + gamma q(z') | z]``; given the labels ``z_1..z_B`` the samples at each
    entry are i.i.d. and ``Y = r + gamma q(z')`` lies in an interval of length ``width``;
    ``unvisited_value >= max_{N_z = 0} |q(z)|``.  Hoeffding (1963, thm 2) at each of the
    ``m = len(counts)`` entries with ``delta / m`` and the union bound give, with
    probability at least ``1 - delta``, ``|mean_z Y - q(z)| <= eps_z =
    width sqrt(log(2m/delta) / (2 N_z))`` for every visited ``z``; the simulation identity
    ``qhat - q = (I - gamma Phat)^{-1} [(Ybar - q) + gamma Phat (qhat - q) on unvisited]``
    with ``Phat`` sub-stochastic then gives the radius
    ``(max_{N_z > 0} eps_z + gamma * unvisited_value) / (1 - gamma)``.

    Args:
        counts: ``(m,)`` samples per entry ``N_z`` (zeros allowed, at least one positive).
        width: length of an interval holding every ``Y``.
        gamma: the discount of the backups, ``0 <= gamma < 1``.
        delta: failure probability for the whole table.
        unvisited_value: a bound on ``|q|`` at entries with ``N_z = 0``.
    """
    arr = _counts(counts)
    if not 0.0 <= gamma < 1.0:
        raise ModelError(f"gamma = {gamma!r}, expected 0 <= gamma < 1")
    if not (width >= 0.0 and unvisited_value >= 0.0):
        raise ModelError(
            f"width = {width!r}, unvisited_value = {unvisited_value!r}, expected >= 0"
        )
    visited = arr[arr > 0]
    if visited.size == 0:
        raise ModelError("counts are all 0: no entry was sampled")
    eps = hoeffding_radius(int(visited.min()), width, split_delta(delta, arr.size))
    return (eps + gamma * float(unvisited_value)) / (1.0 - gamma)


def td_recursion_radius(
    counts: npt.ArrayLike,
    steps: npt.ArrayLike,
    mean_steps: npt.ArrayLike,
    mean_increments: npt.ArrayLike,
    widths: npt.ArrayLike,
    delta: float,
) -> float:
    """Radius for ``||q_T - qbar_T||_inf`` between a sampled TD(0) averaging recursion and
    its large-batch recursion (``proofs_notes/algorithm1.md#td-radius``).

    Setting: ``q_{t+1}(z) = q_t(z) + a_t(z) [mean_{c_t(z)} (r + gamma q_t(z')) - q_t(z)]``
    with steps ``0 <= a_t <= 1``, and ``qbar_{t+1} = qbar_t + abar_t dbar_t``, ``dbar_t`` the
    mean TD error of the deterministic ``qbar_t``; at each ``t``, given the time-``t``
    labels, the ``c_t(z)`` samples of ``Y = r + gamma qbar_t(z')`` at ``z`` are i.i.d. in an
    interval of length ``widths[t]``.  Hoeffding (1963, thm 2) at each of the
    ``K = T m`` pairs ``(t, z)`` with ``delta / K`` and the union bound give
    ``|xi_t(z)| <= eps_t(z) = widths[t] sqrt(log(2K/delta) / (2 c_t(z)))``; each sampled
    step is an inf-norm non-expansion of the error, so with probability at least
    ``1 - delta``

        ||q_T - qbar_T||_inf <= sum_t max_z [ a_t(z) eps_t(z) + |a_t(z) - abar_t(z)| |dbar_t(z)| ]

    (pairs with ``c_t(z) = 0`` have ``a_t(z) = 0`` and contribute only the step term).

    Args:
        counts: ``(T, m)`` samples ``c_t(z)`` at each time and entry.
        steps: ``(T, m)`` the sampled steps ``a_t(z)`` in ``[0, 1]``.
        mean_steps: ``(T, m)`` the steps ``abar_t(z)`` of the deterministic recursion.
        mean_increments: ``(T, m)`` its mean TD errors ``dbar_t(z)``.
        widths: ``(T,)`` interval lengths of ``Y`` at each time.
        delta: failure probability for the whole recursion.
    """
    c = _counts(counts) if np.size(counts) else np.asarray(counts, dtype=np.float64)
    a = np.asarray(steps, dtype=np.float64)
    a_bar = np.asarray(mean_steps, dtype=np.float64)
    d_bar = np.asarray(mean_increments, dtype=np.float64)
    w = np.asarray(widths, dtype=np.float64)
    if c.ndim != 2 or a.shape != c.shape or a_bar.shape != c.shape or d_bar.shape != c.shape:
        raise ModelError(
            f"counts {c.shape}, steps {a.shape}, mean_steps {a_bar.shape} and "
            f"mean_increments {d_bar.shape} must share one (T, m) shape"
        )
    if w.shape != (c.shape[0],) or not np.all(w >= 0):
        raise ModelError(f"widths {w.shape} must be ({c.shape[0]},) and non-negative")
    if np.any((a < 0) | (a > 1)) or np.any((c == 0) & (a != 0)):
        raise ModelError("steps must lie in [0, 1] and vanish where counts are 0")
    if c.size == 0:
        return 0.0
    unit = hoeffding_radius(1, 1.0, split_delta(delta, c.size))  # sqrt(log(2K/delta)/2)
    eps = np.where(c > 0, w[:, None] * unit / np.sqrt(np.maximum(c, 1.0)), 0.0)
    per_step = np.max(a * eps + np.abs(a - a_bar) * np.abs(d_bar), axis=1)
    return float(np.sum(per_step))


def sign_test_wins(n: int, delta: float) -> int:
    """Smallest ``k`` with ``P(Binomial(n, 1/2) >= k) <= delta``: the one-sided sign test.

    If each of ``n`` independent paired comparisons is a win with probability at most
    ``1/2`` (the null hypothesis: no systematic improvement; ties count as losses), then
    ``k`` or more wins occur with probability at most ``delta``.  Returns ``n + 1`` when even
    ``n`` wins would not reach that confidence (``2^-n > delta``)."""
    _check(n, delta)
    tail = 0.0
    for k in range(n, -1, -1):
        tail += math.comb(n, k) / 2.0**n
        if tail > delta:
            return k + 1
    return 0
