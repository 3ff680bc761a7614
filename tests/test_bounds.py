"""The concentration radii: formulas by hand, monotonicity, and coverage on exact laws."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from reference.errors import ModelError
from verify.bounds import (
    bernstein_radius,
    empirical_bellman_radius,
    empirical_bernstein_radius,
    hoeffding_radius,
    l1_radius,
    split_delta,
    td_recursion_radius,
)
from verify.tolerances import EPS


def test_hoeffding_by_hand() -> None:
    # width 1, n = 2, delta = 2 e^{-1}: r = sqrt(1 / 4) = 0.5
    assert hoeffding_radius(2, 1.0, 2 * math.exp(-1)) == pytest.approx(0.5, rel=4 * EPS)


@given(n=st.integers(1, 10**6), delta=st.floats(1e-12, 0.5))
def test_radii_shrink_with_n_and_grow_as_delta_falls(n: int, delta: float) -> None:
    assert hoeffding_radius(n + 1, 1.0, delta) < hoeffding_radius(n, 1.0, delta)
    assert hoeffding_radius(n, 1.0, delta / 2) > hoeffding_radius(n, 1.0, delta)
    assert l1_radius(n + 1, 3, 1.0, delta) < l1_radius(n, 3, 1.0, delta)
    assert bernstein_radius(n, 0.1, 1.0, delta) <= hoeffding_radius(n, 2.0, delta) * 3


def test_hoeffding_is_valid_for_the_worst_bernoulli() -> None:
    """Exact binomial tail at p = 1/2 (variance maximal) is below delta at the radius."""
    n, delta = 400, 1e-3
    r = hoeffding_radius(n, 1.0, delta)
    k_hi = math.ceil(n * (0.5 + r))
    tail = 2 * stats.binom.sf(k_hi - 1, n, 0.5)
    assert tail <= delta


def test_bernstein_beats_hoeffding_at_small_variance() -> None:
    assert bernstein_radius(10_000, 1e-4, 1.0, 1e-9) < hoeffding_radius(10_000, 1.0, 1e-9)


def test_empirical_bernstein_needs_two_samples() -> None:
    with pytest.raises(ModelError, match="n >= 2"):
        empirical_bernstein_radius(1, 0.0, 1.0, 1e-9)


@pytest.mark.parametrize("delta", [0.0, 1.0, -1.0, float("nan")])
def test_bad_delta(delta: float) -> None:
    with pytest.raises(ModelError, match="delta"):
        hoeffding_radius(10, 1.0, delta)


def test_l1_radius_covers_multinomial() -> None:
    """A seeded multinomial sample lies within the l1 radius at delta = 1e-9 (one check)."""
    rng = np.random.default_rng(20261121)
    p = np.array([0.5, 0.25, 0.125, 0.125])
    n = 5000
    counts = rng.multinomial(n, p)
    assert np.abs(counts / n - p).sum() <= l1_radius(n, 4, 1.0, 1e-9)


def test_split_delta() -> None:
    assert split_delta(1e-9, 4) == pytest.approx(2.5e-10)
    with pytest.raises(ModelError):
        split_delta(1e-9, 0)


def test_empirical_bellman_radius_by_hand() -> None:
    # two entries, delta = 4 e^{-1}: each gets 2 e^{-1}, so eps = hoeffding(2, 1, 2/e) = 0.5;
    # the unvisited entry has |q| <= 0.25: (0.5 + 0.5 * 0.25) / (1 - 0.5) = 1.25
    r = empirical_bellman_radius([2, 0], 1.0, 0.5, 4 * math.exp(-1), unvisited_value=0.25)
    assert r == pytest.approx(1.25, rel=8 * EPS)


@given(n=st.integers(1, 10**6), gamma=st.floats(0.0, 0.99), delta=st.floats(1e-12, 0.5))
def test_one_entry_bellman_radius_is_hoeffding_over_one_minus_gamma(
    n: int, gamma: float, delta: float
) -> None:
    """One entry with a self-loop: qhat - q = (rhat - rbar) / (1 - gamma) exactly, and the
    radius reduces to the Hoeffding radius of the rewards divided by 1 - gamma."""
    r = empirical_bellman_radius([n], 1.0, gamma, delta)
    assert r == pytest.approx(hoeffding_radius(n, 1.0, delta) / (1 - gamma), rel=8 * EPS)


def test_td_recursion_radius_by_hand() -> None:
    # K = 2 pairs, delta = 4 e^{-1}: eps_0 = hoeffding(2, 1, 2/e) = 0.5 with step 1, and at
    # t = 1 no sample (step 0) against a mean step 0.5 with mean TD error 2: 0.5 + 0.5 * 2
    r = td_recursion_radius([[2], [0]], [[1.0], [0.0]], [[1.0], [0.5]], [[3.0], [2.0]],
                            [1.0, 1.0], 4 * math.exp(-1))
    assert r == pytest.approx(1.5, rel=8 * EPS)


@given(n=st.integers(1, 10**6), width=st.floats(0.0, 10.0), delta=st.floats(1e-12, 0.5))
def test_one_step_td_recursion_radius_is_hoeffding(n: int, width: float, delta: float) -> None:
    """One step of size 1 from q_0 = qbar_0 = 0 is the sample mean: plain Hoeffding."""
    r = td_recursion_radius([[n]], [[1.0]], [[1.0]], [[0.0]], [width], delta)
    assert r == pytest.approx(hoeffding_radius(n, width, delta), rel=8 * EPS, abs=0)
    assert td_recursion_radius(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)),
                               np.zeros((0, 3)), np.zeros(0), delta) == 0.0


@pytest.mark.parametrize(
    ("counts", "steps", "match"),
    [
        ([[1.5]], [[1.0]], "count"),
        ([[-1]], [[0.0]], "count"),
        ([[0]], [[0.5]], "vanish"),
        ([[3]], [[1.5]], r"\[0, 1\]"),
        ([[3, 1]], [[1.0]], "shape"),
    ],
)
def test_td_recursion_radius_rejects(counts: list[list[float]], steps: list[list[float]],
                                     match: str) -> None:
    with pytest.raises(ModelError, match=match):
        td_recursion_radius(counts, steps, steps, steps, [1.0], 1e-9)


def test_empirical_bellman_radius_rejects() -> None:
    with pytest.raises(ModelError, match="all 0"):
        empirical_bellman_radius([0, 0], 1.0, 0.5, 1e-9)
    with pytest.raises(ModelError, match="gamma"):
        empirical_bellman_radius([3], 1.0, 1.0, 1e-9)
    with pytest.raises(ModelError, match="count"):
        empirical_bellman_radius([2.5], 1.0, 0.5, 1e-9)
    with pytest.raises(ModelError, match="delta"):
        empirical_bellman_radius([3], 1.0, 0.5, 0.0)
