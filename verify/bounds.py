"""Concentration radii for sampled estimators, each with an explicit failure probability.

Every function returns a radius ``r`` such that the stated event has probability at least
``1 - delta``; ``delta`` is always an explicit argument.  The suite uses
``delta <= 1e-9`` per check (STYLE item 10) and :func:`split_delta` to share a budget
between several simultaneous checks by the union bound.
"""

from __future__ import annotations

import math

from reference.errors import ModelError

__all__ = [
    "bernstein_radius",
    "empirical_bernstein_radius",
    "geometric_sum_radius",
    "hoeffding_radius",
    "l1_radius",
    "split_delta",
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
