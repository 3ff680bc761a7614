"""Property tests of the general utilities (SPEC section 2, ``reference/networked/utilities.py``).

Every utility is checked by a route independent of its own formulas:

1. its gradient against central finite differences of its value, with a Richardson error estimate;
2. its declared ``gradient_bound`` and ``value_range`` on random reachable occupancies and on every
   vertex of the simplex (and, separately, that the gradient bounds are attained at vertices);
3. its declared ``smoothness`` on random pairs of reachable occupancies;
4. its declared concavity along random segments;
5. the linear utility against a correctly rounded ``math.fsum`` of ``r * lam``;
6. the constraint penalty where the constraint holds;
7. domain and constructor errors.

Tolerances are derived next to the helpers below from a rounding model; there is no bare threshold.
(The strategies and tolerance helpers live here rather than in ``verify/`` because this test module
was written before those modules existed; they are small enough to move there unchanged.)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from reference._arrays import FloatArray
from reference.errors import ModelError, UtilityDomainError
from reference.networked.utilities import (
    ConstraintPenaltyUtility,
    EntropyUtility,
    KLImitationUtility,
    LinearUtility,
    QuadraticImitationUtility,
    Utility,
    UtilityConstants,
    evaluate_utilities,
    evaluate_utilities_stacked,
)

EPS_MACH = float(np.finfo(np.float64).eps)

# ---------------------------------------------------------------------------------------------
# Tolerances (derived)
# ---------------------------------------------------------------------------------------------

KAPPA = 16.0
"""Flops per entry in any utility's evaluation chain (a log, a division, two products, a scaling
by (1-gamma), a sum): each commits at most one unit roundoff relative to the magnitudes involved,
and KAPPA = 16 over-counts them.  Rounding of an m-entry evaluation is then at most
``KAPPA * m * EPS_MACH`` times the magnitude returned by :func:`value_scale` or
:func:`gradient_scale`."""

FD_STEP = 1e-5
"""Central-difference step in the normalised occupancy ``d``; in ``lam`` it is
``FD_STEP / (1-gamma)``.  Near ``EPS_MACH ** (1/3) ~ 6e-6``, the step that balances the
``O(h^2)`` truncation error of a central difference against its ``O(EPS_MACH / h)`` rounding."""

FD_ROUNDING = 1e3
"""Factor on ``EPS_MACH * scale / h`` for the rounding part of a central difference: the two
values differ from the exact ones by ``KAPPA * m * EPS_MACH * scale`` each (m <= 12 here, so
``2 * KAPPA * m <= 384 < 1e3``), and the difference is divided by ``2h``."""

FD_RICHARDSON = 4.0
"""Richardson estimate: with ``D(h) - f' = c h^2 + O(h^4)``, ``D(2h) - D(h) = 3 c h^2 + O(h^4)``, so
``|D(h) - f'| ~ |D(h) - D(2h)| / 3``; we allow 4 times that estimate for the ``O(h^4)`` terms and
for the ``O(h)`` error where a step crosses the kink of ``[x]_+^2`` (there ``D(2h)`` errs by more
than ``D(h)``, so the estimate still covers it)."""


def value_scale(u: Utility, lam: FloatArray) -> float:
    """Magnitude ``M`` of the terms summed when evaluating ``u`` at ``lam``.

    For the base utilities the terms are ``lam[s,a]`` times a factor of size at most
    ``|df/dlam[s,a]| + 1`` (e.g. ``|log(d + eps)| <= |g(d)| + 1``), so
    ``M = 1 + |f| + ||lam||_1 ||grad f||_inf``.  For the penalty
    ``f_0 - (mu/2) v^2`` with ``v = [c - g]_+``, an error ``delta`` in ``g`` (of size
    ``M_g`` per unit roundoff, plus ``|c|`` from the subtraction) moves ``f`` by
    ``mu v delta``, whence the recursion.
    """
    if isinstance(u, ConstraintPenaltyUtility):
        v = max(0.0, u.threshold - u.constraint.value(lam))
        objective = 0.0 if u.objective is None else value_scale(u.objective, lam)
        inner = value_scale(u.constraint, lam) + abs(u.threshold)
        return objective + u.weight * v * (inner + v)
    grad = u.gradient(lam)
    return 1.0 + abs(u.value(lam)) + float(np.abs(lam).sum()) * float(np.abs(grad).max())


def gradient_scale(u: Utility, lam: FloatArray) -> float:
    """Magnitude ``M'`` with the computed gradient within ``KAPPA * m * EPS_MACH * M'`` entrywise.

    Base utilities: output rounding ``1 + ||grad||_inf`` plus the effect of relative input
    rounding of ``lam`` (the computed ``lam`` sits off the simplex by ``~ m EPS_MACH ||lam||_1``),
    at most ``L ||lam||_1``.  Penalty: ``grad f_0 + mu v grad g`` errs by the errors of both
    gradients (the second scaled by ``mu v``) plus ``mu ||grad g||_inf`` times the error of ``v``.
    """
    if isinstance(u, ConstraintPenaltyUtility):
        g = u.constraint
        v = max(0.0, u.threshold - g.value(lam))
        objective = 0.0 if u.objective is None else gradient_scale(u.objective, lam)
        grad_g = float(np.abs(g.gradient(lam)).max())
        return (
            objective
            + u.weight * v * gradient_scale(g, lam)
            + u.weight * grad_g * (value_scale(g, lam) + abs(u.threshold))
        )
    grad = u.gradient(lam)
    return 1.0 + float(np.abs(grad).max()) + u.constants.smoothness * float(np.abs(lam).sum())


def value_rounding(u: Utility, lam: FloatArray) -> float:
    """Bound on the rounding error of ``u.value(lam)``."""
    return KAPPA * lam.size * EPS_MACH * value_scale(u, lam)


def gradient_rounding(u: Utility, lam: FloatArray) -> float:
    """Bound on the entrywise rounding error of ``u.gradient(lam)``."""
    return KAPPA * lam.size * EPS_MACH * gradient_scale(u, lam)


# ---------------------------------------------------------------------------------------------
# Strategies: valid objects built directly from a drawn seed (no filtering)
# ---------------------------------------------------------------------------------------------

BASE_KINDS = ("linear", "entropy", "quadratic", "kl")
ALL_KINDS = (*BASE_KINDS, "penalty")


def random_distribution(rng: np.random.Generator, shape: tuple[int, int]) -> FloatArray:
    """A distribution on ``shape``: a vertex, a full-support or a sparse normalised Dirichlet draw.

    Concentration ``10**U(-1, 1)`` spans near-vertex to near-uniform draws.
    """
    m = shape[0] * shape[1]
    flat = np.zeros(m)
    mode = int(rng.integers(3))
    if mode == 0:
        flat[rng.integers(m)] = 1.0
    else:
        support = np.ones(m, dtype=bool) if mode == 1 else rng.random(m) < 0.5
        support[rng.integers(m)] = True
        alpha = 10.0 ** rng.uniform(-1.0, 1.0)
        flat[support] = rng.dirichlet(np.full(int(support.sum()), alpha))
        flat /= flat.sum()
    return flat.reshape(shape)


def random_occupancy(rng: np.random.Generator, u: Utility) -> FloatArray:
    """A reachable unnormalised occupancy for ``u``: a distribution scaled by ``1/(1-gamma)``."""
    return random_distribution(rng, u.shape) / (1.0 - u.gamma)


def vertices(u: Utility) -> list[FloatArray]:
    """All mass ``1/(1-gamma)`` on one entry, for every entry."""
    m = u.shape[0] * u.shape[1]
    return [row.reshape(u.shape) / (1.0 - u.gamma) for row in np.eye(m)]


def build_utility(
    kind: str, shape: tuple[int, int], gamma: float, eps: float, rng: np.random.Generator
) -> Utility:
    """A base utility of ``kind`` with random parameters from ``rng``."""
    if kind == "linear":
        return LinearUtility(rng.normal(size=shape) * 10.0 ** rng.uniform(-1.0, 1.0), gamma)
    if kind == "entropy":
        return EntropyUtility(shape, gamma, eps=eps)
    if kind == "quadratic":
        return QuadraticImitationUtility(random_distribution(rng, shape), gamma)
    if kind == "kl":
        return KLImitationUtility(random_distribution(rng, shape), gamma, eps=eps)
    raise AssertionError(kind)  # pragma: no cover - the strategies draw only known kinds


@st.composite
def utilities(draw: st.DrawFn, kinds: tuple[str, ...] = ALL_KINDS) -> Utility:
    """A utility on shape ``1..4 x 1..3``, gamma in ``[0, 0.99]``, eps in ``[1e-2, 1]``.

    Penalties wrap a random base constraint (and a random base objective or none) with
    ``mu = 10**U(-1, 1)`` and a threshold spread over (and a little beyond) the constraint's
    value range, so both the active and the inactive branch occur.
    """
    shape = (draw(st.integers(1, 4)), draw(st.integers(1, 3)))
    gamma = draw(st.floats(0.0, 0.99))
    eps = 10.0 ** draw(st.floats(-2.0, 0.0))
    kind = draw(st.sampled_from(kinds))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind != "penalty":
        return build_utility(kind, shape, gamma, eps, rng)
    constraint = build_utility(draw(st.sampled_from(BASE_KINDS)), shape, gamma, eps, rng)
    objective_kind = draw(st.sampled_from((None, *BASE_KINDS)))
    objective = (
        None if objective_kind is None else build_utility(objective_kind, shape, gamma, eps, rng)
    )
    lo, hi = constraint.constants.value_range
    threshold = lo + rng.uniform(-0.25, 1.25) * (hi - lo)
    return ConstraintPenaltyUtility(
        constraint, threshold, 10.0 ** rng.uniform(-1.0, 1.0), objective=objective
    )


seeds = st.integers(0, 2**32 - 1)

# Pinned edge cases: one state and one action, gamma = 0 and gamma = 0.99, the default eps,
# a vertex target, and a penalty exactly at its kink on the uniform occupancy.
EDGE_CASES: list[Utility] = [
    EntropyUtility((1, 1), 0.0),
    EntropyUtility((3, 2), 0.99, eps=1e-2),
    KLImitationUtility(np.array([[1.0, 0.0, 0.0]]), 0.0, eps=1e-2),
    QuadraticImitationUtility(np.array([[0.0], [1.0]]), 0.99),
    ConstraintPenaltyUtility(
        EntropyUtility((2, 2), 0.5, eps=0.1),
        -math.log(0.5 + 0.1),
        1.0,
        objective=LinearUtility(np.array([[1.0, -1.0], [0.5, 0.0]]), 0.5),
    ),
]


def with_edge_cases(test: Callable[..., None]) -> Callable[..., None]:
    """Decorate a ``(utility, seed)`` Hypothesis test with every pinned edge case."""
    for i, u in enumerate(EDGE_CASES):
        test = example(utility=u, seed=i)(test)
    return test


# ---------------------------------------------------------------------------------------------
# 1. Gradient = central finite differences
# ---------------------------------------------------------------------------------------------


def central_difference(u: Utility, lam: FloatArray, h: float) -> FloatArray:
    """``D(h)[s,a] = (f(lam + h e_sa) - f(lam - h e_sa)) / (2h)`` for every entry."""
    m = lam.size
    basis = np.eye(m).reshape(m, *lam.shape)
    diffs = [(u.value(lam + h * e) - u.value(lam - h * e)) / (2.0 * h) for e in basis]
    return np.array(diffs).reshape(lam.shape)


@with_edge_cases
@given(utility=utilities(), seed=seeds)
@settings(deadline=None)
def test_gradient_matches_central_finite_differences(utility: Utility, seed: int) -> None:
    rng = np.random.default_rng(seed)
    lam = random_occupancy(rng, utility)
    h = FD_STEP / (1.0 - utility.gamma)
    d_h = central_difference(utility, lam, h)
    d_2h = central_difference(utility, lam, 2.0 * h)
    grad = utility.gradient(lam)
    assert grad.shape == lam.shape
    assert grad.dtype == np.float64
    allowed = (
        FD_RICHARDSON * np.abs(d_h - d_2h) / 3.0
        + FD_ROUNDING * EPS_MACH * lam.size * value_scale(utility, lam) / h
    )
    err = np.abs(d_h - grad)
    assert np.all(err <= allowed), (
        f"{utility!r}: |D(h) - grad| = {err.max():.3e} exceeds {allowed.ravel()[err.argmax()]:.3e}"
    )


# ---------------------------------------------------------------------------------------------
# 2. Declared gradient bound and value range
# ---------------------------------------------------------------------------------------------

N_RANDOM_POINTS = 8


@with_edge_cases
@given(utility=utilities(), seed=seeds)
@settings(deadline=None)
def test_gradient_bound_and_value_range_hold(utility: Utility, seed: int) -> None:
    rng = np.random.default_rng(seed)
    c = utility.constants
    assert isinstance(c, UtilityConstants)
    lo, hi = c.value_range
    assert lo <= hi
    points = [random_occupancy(rng, utility) for _ in range(N_RANDOM_POINTS)] + vertices(utility)
    for lam in points:
        grad_max = float(np.abs(utility.gradient(lam)).max())
        assert grad_max <= c.gradient_bound + gradient_rounding(utility, lam), (
            f"{utility!r} at {lam!r}: max |grad| = {grad_max!r} > bound {c.gradient_bound!r}"
        )
        f = utility.value(lam)
        slack = value_rounding(utility, lam)
        assert lo - slack <= f <= hi + slack, f"{utility!r} at {lam!r}: f = {f!r} not in {lo, hi}"


@given(utility=utilities(kinds=BASE_KINDS))
@example(utility=EntropyUtility((2, 3), 0.9))  # an entropy with two states on every run
@settings(deadline=None)
def test_base_gradient_bounds_are_attained_at_vertices(utility: Utility) -> None:
    """The base bounds are sharp: some vertex attains them (needs two entries; entropy two states).

    Derivation: linear, max |r| at the vertex of the entry; entropy, vertex gives p = e_s, so
    g(1) and (nS >= 2) g(0) both occur; quadratic, vertex at argmin t gives 1 - min t and at any
    other entry gives t there, in particular max t unless t is a vertex, when max t = 1 - min t;
    KL, vertex at argmin t gives g(1) + log(min t + eps) and one off argmax t gives
    g(0) + log(max t + eps).
    """
    n_states, n_actions = utility.shape
    if n_states * n_actions < 2 or (isinstance(utility, EntropyUtility) and n_states < 2):
        return
    bound = utility.constants.gradient_bound
    attained = max(float(np.abs(utility.gradient(v)).max()) for v in vertices(utility))
    tol = gradient_rounding(utility, vertices(utility)[0])
    assert attained >= bound - tol, f"{utility!r}: best vertex {attained!r} < bound {bound!r}"


# ---------------------------------------------------------------------------------------------
# 3. Declared smoothness
# ---------------------------------------------------------------------------------------------


@with_edge_cases
@given(utility=utilities(), seed=seeds)
@settings(deadline=None)
def test_gradient_is_lipschitz_with_declared_smoothness(utility: Utility, seed: int) -> None:
    rng = np.random.default_rng(seed)
    L = utility.constants.smoothness
    for _ in range(N_RANDOM_POINTS):
        x = random_occupancy(rng, utility)
        z = random_occupancy(rng, utility)
        # far pairs, and near pairs on a short segment where local curvature dominates
        t = 10.0 ** rng.uniform(-4.0, 0.0)
        y = (1.0 - t) * x + t * z
        lhs = float(np.linalg.norm(utility.gradient(x) - utility.gradient(y)))
        slack = math.sqrt(x.size) * (gradient_rounding(utility, x) + gradient_rounding(utility, y))
        rhs = L * float(np.linalg.norm(x - y)) + slack
        assert lhs <= rhs, f"{utility!r}: ||grad x - grad y|| = {lhs!r} > {rhs!r}"


# ---------------------------------------------------------------------------------------------
# 4. Declared concavity
# ---------------------------------------------------------------------------------------------


@with_edge_cases
@given(utility=utilities(), seed=seeds)
@settings(deadline=None)
def test_declared_concave_utilities_are_concave_on_segments(utility: Utility, seed: int) -> None:
    if not utility.constants.concave:
        return
    rng = np.random.default_rng(seed)
    bound = utility.constants.gradient_bound
    for _ in range(N_RANDOM_POINTS):
        x = random_occupancy(rng, utility)
        y = random_occupancy(rng, utility)
        theta = rng.uniform()
        mix = theta * x + (1.0 - theta) * y
        lhs = utility.value(mix)
        rhs = theta * utility.value(x) + (1.0 - theta) * utility.value(y)
        # rounding of the three values, plus the rounding of ``mix`` itself
        # (entrywise <= 2 EPS_MACH |mix|, moving f by <= bound * 2 EPS_MACH ||mix||_1)
        slack = (
            value_rounding(utility, mix)
            + value_rounding(utility, x)
            + value_rounding(utility, y)
            + 2.0 * EPS_MACH * bound * float(np.abs(mix).sum())
        )
        assert lhs >= rhs - slack, f"{utility!r}: f(mix) = {lhs!r} < {rhs!r} (theta = {theta})"


# ---------------------------------------------------------------------------------------------
# 5. Linear utility = <r, lam>
# ---------------------------------------------------------------------------------------------


@given(utility=utilities(kinds=("linear",)), seed=seeds)
@settings(deadline=None)
def test_linear_utility_is_the_inner_product(utility: Utility, seed: int) -> None:
    assert isinstance(utility, LinearUtility)
    rng = np.random.default_rng(seed)
    r = utility.reward
    for lam in [random_occupancy(rng, utility), *vertices(utility)]:
        products = (r * lam).ravel()
        exact = math.fsum(products.tolist())  # correctly rounded sum of the rounded products
        # summation error of m terms <= m EPS_MACH sum |r lam| (standard bound), plus the
        # products' own rounding EPS_MACH sum |r lam|
        tol = (lam.size + 1) * EPS_MACH * float(np.abs(products).sum())
        assert abs(utility.value(lam) - exact) <= tol
        np.testing.assert_array_equal(utility.gradient(lam), r)
    # a vertex at (s, a) gives r[s, a] / (1-gamma): the return of a policy that stays there
    s, a = np.unravel_index(int(np.argmax(r)), r.shape)
    vertex = np.zeros(utility.shape)
    vertex[s, a] = 1.0 / (1.0 - utility.gamma)
    assert utility.value(vertex) == pytest.approx(
        utility.constants.value_range[1], rel=4 * EPS_MACH, abs=0.0
    )


# ---------------------------------------------------------------------------------------------
# 6. The penalty vanishes where the constraint holds
# ---------------------------------------------------------------------------------------------


@given(
    constraint=utilities(kinds=BASE_KINDS),
    objective_kind=st.sampled_from((None, *BASE_KINDS)),
    margin=st.one_of(st.just(0.0), st.floats(0.0, 10.0)),
    weight=st.floats(1e-3, 1e3),
    seed=seeds,
)
@settings(deadline=None)
def test_penalty_vanishes_where_constraint_holds(
    constraint: Utility, objective_kind: str | None, margin: float, weight: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    eps = 0.1
    objective = (
        None
        if objective_kind is None
        else build_utility(objective_kind, constraint.shape, constraint.gamma, eps, rng)
    )
    lam = random_occupancy(rng, constraint)
    # threshold at or below g(lam): [c - g(lam)]_+ = 0 exactly (margin = 0 is the kink itself)
    penalty = ConstraintPenaltyUtility(
        constraint, constraint.value(lam) - margin, weight, objective=objective
    )
    if objective is None:
        assert penalty.value(lam) == 0.0
        np.testing.assert_array_equal(penalty.gradient(lam), np.zeros(constraint.shape))
    else:
        assert penalty.value(lam) == objective.value(lam)
        np.testing.assert_array_equal(penalty.gradient(lam), objective.gradient(lam))
    # below the lower end of g's range the constraint holds everywhere: h = 0 in the constants
    everywhere = ConstraintPenaltyUtility(
        constraint, constraint.constants.value_range[0], weight, objective=objective
    )
    c = everywhere.constants
    base = (
        UtilityConstants(0.0, 0.0, (0.0, 0.0), True) if objective is None else objective.constants
    )
    assert c.gradient_bound == base.gradient_bound
    assert c.value_range == base.value_range
    assert c.smoothness == pytest.approx(
        base.smoothness + weight * lam.size * constraint.constants.gradient_bound**2,
        rel=4 * EPS_MACH,
    )


# ---------------------------------------------------------------------------------------------
# Hand-computed values (provenance: the derivations in each comment)
# ---------------------------------------------------------------------------------------------


def test_hand_computed_values() -> None:
    gamma = 0.5
    # uniform lam on 3 x 2: p = 1/3 per state, f = -sum_s (1/3) log(1/3 + eps) = -log(1/3 + eps)
    ent = EntropyUtility((3, 2), gamma, eps=0.1)
    uniform = np.full((3, 2), 1.0 / (6 * (1 - gamma)))
    assert ent.value(uniform) == pytest.approx(-math.log(1 / 3 + 0.1), rel=8 * EPS_MACH)
    # grad = (1-gamma)(-log(1/3 + eps) - (1/3)/(1/3 + eps)) in every entry
    expected = 0.5 * (-math.log(1 / 3 + 0.1) - (1 / 3) / (1 / 3 + 0.1))
    np.testing.assert_allclose(ent.gradient(uniform), np.full((3, 2), expected), rtol=8 * EPS_MACH)
    # at d = t both imitation utilities peak at 0; the quadratic's gradient vanishes there and the
    # KL's is (1-gamma)(g(t) + log(t + eps)) = -(1-gamma) t / (t + eps)
    t = np.array([[0.5, 0.25], [0.25, 0.0]])
    lam = t / (1 - gamma)
    quad = QuadraticImitationUtility(t, gamma)
    assert quad.value(lam) == 0.0
    np.testing.assert_array_equal(quad.gradient(lam), np.zeros_like(t))
    kl = KLImitationUtility(t, gamma, eps=0.1)
    assert kl.value(lam) == 0.0
    np.testing.assert_allclose(kl.gradient(lam), -0.5 * t / (t + 0.1), rtol=8 * EPS_MACH)
    # entropy constants for eps = 0.1, gamma = 0.5, nA = 2:
    # g(0) = -log 0.1 = 2.302585..., g(1) = -log 1.1 - 1/1.1 = -1.004411..., bound = 0.5 * g(0);
    # smoothness = 0.25 * 2 * 2 / 0.1 = 10
    c = ent.constants
    assert c.gradient_bound == pytest.approx(0.5 * math.log(10.0), rel=4 * EPS_MACH)
    assert c.smoothness == pytest.approx(10.0, rel=4 * EPS_MACH)
    assert c.value_range == (-math.log1p(0.1), math.log(3.0))


def test_stored_arrays_are_read_only_copies() -> None:
    r = np.array([[1.0, 2.0]])
    lin = LinearUtility(r, 0.5)
    r[0, 0] = 100.0
    assert lin.reward[0, 0] == 1.0
    assert not lin.reward.flags.writeable
    kl = KLImitationUtility(np.array([[0.5, 0.5]]), 0.5)
    assert not kl.target.flags.writeable
    # gradients are fresh writable arrays, not views of stored state
    grad = lin.gradient(np.array([[1.0, 1.0]]))
    grad[0, 0] = -5.0
    assert lin.reward[0, 0] == 1.0


# ---------------------------------------------------------------------------------------------
# 7. Domain and constructor errors
# ---------------------------------------------------------------------------------------------

GAMMA = 0.5
TARGET = np.array([[0.25, 0.25], [0.5, 0.0]])


def _examples() -> list[Utility]:
    return [
        LinearUtility(np.ones((2, 2)), GAMMA),
        EntropyUtility((2, 2), GAMMA),
        QuadraticImitationUtility(TARGET, GAMMA),
        KLImitationUtility(TARGET, GAMMA),
        ConstraintPenaltyUtility(EntropyUtility((2, 2), GAMMA), 0.5, 1.0),
        ConstraintPenaltyUtility(
            LinearUtility(np.ones((2, 2)), GAMMA),
            1.0,
            2.0,
            objective=KLImitationUtility(TARGET, GAMMA),
        ),
    ]


@pytest.mark.parametrize("utility", _examples(), ids=lambda u: u.name)
def test_wrong_shape_raises(utility: Utility) -> None:
    for bad in (np.ones((2, 3)), np.ones(4), np.ones((2, 2, 1))):
        with pytest.raises(UtilityDomainError, match=utility.name):
            utility.value(bad)
        with pytest.raises(UtilityDomainError, match=utility.name):
            utility.gradient(bad)


@pytest.mark.parametrize("utility", _examples(), ids=lambda u: u.name)
@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_entry_raises_naming_the_entry(utility: Utility, bad_value: float) -> None:
    lam = np.full((2, 2), 0.5)
    lam[1, 0] = bad_value
    for method in (utility.value, utility.gradient, utility.check_domain):
        with pytest.raises(UtilityDomainError) as info:
            method(lam)
        message = str(info.value)
        assert utility.name in message
        assert "[1, 0]" in message
        assert repr(bad_value) in message or str(bad_value) in message


def test_entries_below_the_log_floor_raise_naming_the_entry() -> None:
    eps = 1e-3
    ent = EntropyUtility((3, 2), GAMMA, eps=eps)
    lam = np.full((3, 2), 1.0 / (6 * (1 - GAMMA)))
    lam[2] = [-1.0, 0.0]  # p[2] = (1-gamma)(-1) = -0.5 <= -eps
    with pytest.raises(UtilityDomainError) as info:
        ent.value(lam)
    assert "EntropyUtility" in str(info.value) and "p[2]" in str(info.value)
    # small negative rounding is inside the domain: p[2] = -eps/2 > -eps
    lam[2] = [-eps / (2 * (1 - GAMMA)), 0.0]
    assert math.isfinite(ent.value(lam))

    kl = KLImitationUtility(TARGET, GAMMA, eps=eps)
    lam = TARGET / (1 - GAMMA)
    lam[0, 1] = -1.0  # d[0, 1] = -0.5 <= -eps
    for method in (kl.value, kl.gradient):
        with pytest.raises(UtilityDomainError) as info:
            method(lam)
        assert "KLImitationUtility" in str(info.value) and "[0, 1]" in str(info.value)
    lam[0, 1] = -eps / (2 * (1 - GAMMA))
    assert np.all(np.isfinite(kl.gradient(lam)))

    pen = ConstraintPenaltyUtility(kl, 0.0, 1.0, objective=EntropyUtility((2, 2), GAMMA))
    with pytest.raises(UtilityDomainError) as info:
        pen.value(np.array([[0.5, -1.0], [1.0, 0.5]]))
    message = str(info.value)
    assert "ConstraintPenaltyUtility" in message and "KLImitationUtility" in message
    assert "[0, 1]" in message


@pytest.mark.parametrize("eps", [0.0, -1e-3, np.nan, np.inf])
def test_bad_eps_raises(eps: float) -> None:
    with pytest.raises(ModelError, match="eps"):
        EntropyUtility((2, 2), GAMMA, eps=eps)
    with pytest.raises(ModelError, match="eps"):
        KLImitationUtility(TARGET, GAMMA, eps=eps)


@pytest.mark.parametrize("weight", [0.0, -1.0, np.nan])
def test_bad_weight_raises(weight: float) -> None:
    with pytest.raises(ModelError, match="weight"):
        ConstraintPenaltyUtility(EntropyUtility((2, 2), GAMMA), 0.0, weight)


@pytest.mark.parametrize("cls", [QuadraticImitationUtility, KLImitationUtility])
def test_target_must_be_a_distribution(cls: type[Utility]) -> None:
    negative = np.array([[0.5, -0.25], [0.75, 0.0]])
    with pytest.raises(ModelError, match=r"target\[0, 1\] = -0\.25"):
        cls(negative, GAMMA)  # type: ignore[call-arg]
    with pytest.raises(ModelError, match="sums to"):
        cls(np.full((2, 2), 0.3), GAMMA)  # type: ignore[call-arg]
    with pytest.raises(ModelError, match=r"target\[1, 1\]"):
        cls(np.array([[0.25, 0.25], [0.5, np.nan]]), GAMMA)  # type: ignore[call-arg]
    with pytest.raises(ModelError):
        cls(np.ones(3) / 3, GAMMA)  # type: ignore[call-arg]


@pytest.mark.parametrize("gamma", [1.0, -0.1, 1.5, np.nan])
def test_bad_gamma_raises(gamma: float) -> None:
    with pytest.raises(ModelError, match="gamma"):
        LinearUtility(np.ones((2, 2)), gamma)
    with pytest.raises(ModelError, match="gamma"):
        EntropyUtility((2, 2), gamma)
    with pytest.raises(ModelError, match="gamma"):
        QuadraticImitationUtility(TARGET, gamma)
    with pytest.raises(ModelError, match="gamma"):
        KLImitationUtility(TARGET, gamma)


def test_other_bad_constructor_arguments_raise() -> None:
    with pytest.raises(ModelError, match=r"reward\[0, 1\]"):
        LinearUtility(np.array([[0.0, np.inf]]), GAMMA)
    with pytest.raises(ModelError, match="shape"):
        EntropyUtility((2, 0), GAMMA)
    with pytest.raises(ModelError, match="shape"):
        EntropyUtility((2,), GAMMA)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="threshold"):
        ConstraintPenaltyUtility(EntropyUtility((2, 2), GAMMA), np.nan, 1.0)
    with pytest.raises(ModelError, match="shape"):
        ConstraintPenaltyUtility(
            EntropyUtility((2, 2), GAMMA), 0.0, 1.0, objective=EntropyUtility((2, 3), GAMMA)
        )
    with pytest.raises(ModelError, match="gamma"):
        ConstraintPenaltyUtility(
            EntropyUtility((2, 2), GAMMA), 0.0, 1.0, objective=EntropyUtility((2, 2), 0.9)
        )
    with pytest.raises(ModelError, match="not a Utility"):
        ConstraintPenaltyUtility("entropy", 0.0, 1.0)  # type: ignore[arg-type]


class _OffsetLinear(LinearUtility):
    """A subclass with its own formula: must not be evaluated as a plain linear utility."""

    def _value(self, lam: FloatArray) -> float:
        return super()._value(lam) + 1.0


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 5))
def test_stacked_evaluation_equals_one_at_a_time(seed: int, n: int) -> None:
    """evaluate_utilities_stacked: plain linear utilities as one contraction (values within
    the rounding of a sum of |S||A| products, gradients exactly the rewards); any other mix
    one at a time through Utility.evaluate, which equals value() and gradient()."""
    rng = np.random.default_rng(seed)
    shape, gamma = (3, 2), 0.9
    lams = rng.uniform(0.0, 2.0, (n, *shape))
    linear = [LinearUtility(rng.uniform(-1, 1, shape), gamma) for _ in range(n)]
    mixed = [*linear[:-1], _OffsetLinear(linear[-1].reward, gamma)]
    for utilities in (linear, mixed, [EntropyUtility(shape, gamma, 1e-3)] * n):
        values, grads = evaluate_utilities_stacked(utilities, lams)
        assert grads.shape == (n, *shape) and not grads.flags.writeable
        for f, lam, v, g in zip(utilities, lams, values, grads, strict=True):
            assert f.evaluate(lam)[0] == f.value(lam)
            np.testing.assert_array_equal(f.evaluate(lam)[1], f.gradient(lam))
            tol = 6 * 6 * np.finfo(float).eps * float(np.abs(f.gradient(lam)).max()) * 2.0
            assert abs(v - f.value(lam)) <= tol
            np.testing.assert_array_equal(g, f.gradient(lam))
    assert evaluate_utilities_stacked(mixed, lams)[0][-1] == mixed[-1].value(lams[-1])
    values, grads_tuple = evaluate_utilities(linear, list(lams))
    assert all(not g.flags.writeable for g in grads_tuple)
    np.testing.assert_array_equal(values, [f.value(lam) for f, lam in zip(linear, lams, strict=True)])


def test_stacked_evaluation_names_a_non_finite_entry() -> None:
    """A non-finite occupancy entry is refused by the same domain check, naming the utility
    and the entry, whether the utilities could be stacked or not."""
    lams = np.ones((2, 2, 2))
    lams[1, 0, 1] = np.nan
    linear = [LinearUtility(np.ones((2, 2)), 0.5)] * 2
    with pytest.raises(UtilityDomainError, match=r"LinearUtility: lam\[0, 1\] is nan"):
        evaluate_utilities_stacked(linear, lams)
