"""Grouped sums and lifts over the joint state space without index tables
(``JointSpace.lift`` and ``JointSpace.marginal``; proofs_notes/matrix-free.md#joint-tables)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from reference.errors import ModelError
from reference.networked import JointSpace
from verify import strategies as mst
from verify.tolerances import summation_tolerance


@st.composite
def _spaces_and_agents(draw: st.DrawFn) -> tuple[JointSpace, tuple[int, ...]]:
    n = draw(st.integers(1, 5))
    sizes = tuple(draw(st.integers(1, 3)) for _ in range(n))
    agents = tuple(j for j in range(n) if draw(st.booleans()))
    return JointSpace(sizes), agents


def _index_by_digits(space: JointSpace, agents: tuple[int, ...]) -> np.ndarray:
    """Second route: the mixed-radix code of ``x_agents`` from the ``(size, n)`` digit table."""
    idx = np.zeros(space.size, dtype=np.int64)
    for j in agents:
        idx = idx * space.sizes[j] + space.digits[:, j]
    return idx


@given(case=_spaces_and_agents(), seed=mst.seeds())
def test_lift_and_marginal_match_the_digit_table(
    case: tuple[JointSpace, tuple[int, ...]], seed: int
) -> None:
    """lift(t) = t[code(x)] exactly; marginal(v) = grouped sums by code; they are adjoint."""
    space, agents = case
    rng = np.random.default_rng(seed)
    idx = _index_by_digits(space, agents)
    np.testing.assert_array_equal(space.sub_index(agents), idx)
    table = rng.standard_normal((space.sub_size(agents), 2))
    np.testing.assert_array_equal(space.lift(table, agents), table[idx])
    values = rng.standard_normal((space.size, 2))
    expected = np.zeros_like(table)
    np.add.at(expected, idx, values)
    tol = summation_tolerance(space.size, float(np.max(np.abs(values))))
    np.testing.assert_allclose(space.marginal(values, agents), expected, rtol=0, atol=tol)
    # one joint vector takes the one-pass einsum route: the same grouped sums
    vector = values[:, 0]
    np.testing.assert_allclose(
        space.marginal(vector, agents), expected_vector := np.bincount(
            idx, weights=vector, minlength=space.sub_size(agents)
        ), rtol=0, atol=tol,
    )
    assert space.marginal(vector, agents).shape == expected_vector.shape
    # add_lift adds the lifted table in place: one rounding per entry, so exactly out + t[code]
    out = rng.standard_normal(space.size)
    want = out + table[idx, 0]
    space.add_lift(out, np.ascontiguousarray(table[:, 0]), agents)
    np.testing.assert_array_equal(out, want)
    # <lift(t), v> = <t, marginal(v)>: both are sum_x t[code(x)] v[x]
    left = float(np.sum(space.lift(table, agents) * values))
    right = float(np.sum(table * space.marginal(values, agents)))
    scale = float(np.max(np.abs(table))) * float(np.sum(np.abs(values)))
    assert abs(left - right) <= 2 * summation_tolerance(space.size * 2, scale)


@pytest.mark.parametrize(
    ("agents", "fragment"),
    [((1, 0), "not strictly increasing at position 1"), ((0, 3), "agents[1] = 3 outside 0..2")],
)
def test_bad_agent_lists_are_named(agents: tuple[int, ...], fragment: str) -> None:
    space = JointSpace((2, 2, 2))
    with pytest.raises(ModelError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        space.marginal(np.zeros(8), agents)


def test_wrong_table_shape_is_named() -> None:
    space = JointSpace((2, 3))
    with pytest.raises(ModelError, match=r"table has shape \(2,\), expected \(3, \.\.\.\)"):
        space.lift(np.zeros(2), (1,))
    with pytest.raises(ModelError, match=r"values has shape \(5,\), expected \(6, \.\.\.\)"):
        space.marginal(np.zeros(5), (1,))
    with pytest.raises(ModelError, match=r"table has shape \(2,\), expected \(3,\)"):
        space.add_lift(np.zeros(6), np.zeros(2), (1,))
    with pytest.raises(ModelError, match=r"out has shape \(5,\), expected \(6,\)"):
        space.add_lift(np.zeros(5), np.zeros(3), (1,))


@st.composite
def _spaces_and_sets(
    draw: st.DrawFn,
) -> tuple[JointSpace, tuple[tuple[int, ...], ...]]:
    # small sets on up to 8 agents: blocks of several sets form once a union's table is
    # at most |X| / 16
    n = draw(st.integers(1, 8))
    sizes = tuple(draw(st.integers(1, 3)) for _ in range(n))
    count = draw(st.integers(0, 6))
    sets = tuple(
        tuple(sorted(draw(st.lists(st.integers(0, n - 1), max_size=3, unique=True))))
        for _ in range(count)
    )
    return JointSpace(sizes), sets


@given(case=_spaces_and_sets(), seed=mst.seeds())
@example(  # one block (0, 1, 2, 3) of sizes (3, 2, 2, 3) holding two sets of mixed sizes
    case=(JointSpace((3, 2, 2, 3, 2, 2, 2, 3)), ((0, 2), (1, 3), (4, 5), (6, 7))), seed=0
)
def test_grouped_marginals_and_lifts_are_the_per_set_ones(
    case: tuple[JointSpace, tuple[tuple[int, ...], ...]], seed: int
) -> None:
    """``marginals`` and ``add_lifts`` (blocks of sets, one pass per block) against one
    ``marginal`` / ``add_lift`` per set: bit for bit on integer values (every partial sum is
    an integer below 2^53, so exact in any grouping), and within the summation bound of the
    ``size / |X_K|`` terms of each entry on real values (both routes sum the same terms)."""
    space, sets = case
    rng = np.random.default_rng(seed)
    for trailing in ((), (2,)):
        whole = rng.integers(-50, 50, size=(space.size, *trailing)).astype(np.float64)
        for got, agents in zip(space.marginals(whole, sets), sets, strict=True):
            np.testing.assert_array_equal(got, space.marginal(whole, agents))
        real = rng.standard_normal((space.size, *trailing))
        scale = float(np.max(np.abs(real), initial=0.0))
        for got, agents in zip(space.marginals(real, sets), sets, strict=True):
            # each entry sums size / |X_K| terms of magnitude at most scale, on either route
            tol = summation_tolerance(space.size // space.sub_size(agents), scale)
            np.testing.assert_allclose(got, space.marginal(real, agents), rtol=0, atol=2 * tol)
    tables = [rng.integers(-50, 50, size=space.sub_size(k)).astype(np.float64) for k in sets]
    start = rng.integers(-50, 50, size=space.size).astype(np.float64)
    grouped, single = start.copy(), start.copy()
    space.add_lifts(grouped, tables, sets)
    for table, agents in zip(tables, sets, strict=True):
        space.add_lift(single, table, agents)
    np.testing.assert_array_equal(grouped, single)


def test_radius_one_observations_of_a_ring_take_two_passes() -> None:
    """On a ring of 16 binary agents the 16 windows ``{i - 1, i, i + 1}`` gather into two
    blocks (tables of at most 2^12 = |S| / 16 entries), so the joint vector is read twice,
    not 16 times, for the marginals and written twice for the lifts."""
    n = 16
    space = JointSpace((2,) * n)
    sets = tuple(tuple(sorted({(i - 1) % n, i, (i + 1) % n})) for i in range(n))
    passes: list[tuple[int, ...]] = []
    real_marginal, real_lift = JointSpace.marginal, JointSpace.add_lift

    def marginal(self: JointSpace, values: np.ndarray, agents: tuple[int, ...]) -> np.ndarray:
        passes.append(tuple(agents))
        return real_marginal(self, values, agents)

    def add_lift(self: JointSpace, out: np.ndarray, table: np.ndarray,
                 agents: tuple[int, ...]) -> None:
        passes.append(tuple(agents))
        real_lift(self, out, table, agents)

    values = np.random.default_rng(0).standard_normal(space.size)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(JointSpace, "marginal", marginal)
        patch.setattr(JointSpace, "add_lift", add_lift)
        space.marginals(values, sets)
        assert len(passes) == 2 and all(space.sub_size(u) <= space.size // 16 for u in passes)
        passes.clear()
        space.add_lifts(np.zeros(space.size), [np.ones(8)] * n, sets)
        assert len(passes) == 2


def test_grouped_routes_name_bad_input() -> None:
    space = JointSpace((2, 3))
    with pytest.raises(ModelError, match=r"not strictly increasing at position 1"):
        space.marginals(np.zeros(6), [(0,), (1, 0)])
    with pytest.raises(ModelError, match=r"values has shape \(5,\), expected \(6, \.\.\.\)"):
        space.marginals(np.zeros(5), [(1,)])
    with pytest.raises(ModelError, match=r"1 tables for 2 agent sets"):
        space.add_lifts(np.zeros(6), [np.zeros(3)], [(1,), (0,)])
    with pytest.raises(ModelError, match=r"tables\[1\] has shape \(3,\), expected \(2,\)"):
        space.add_lifts(np.zeros(6), [np.zeros(3), np.zeros(3)], [(1,), (0,)])
    with pytest.raises(ModelError, match=r"out has shape \(5,\), expected \(6,\)"):
        space.add_lifts(np.zeros(5), [np.zeros(3)], [(1,)])


@pytest.mark.parametrize(
    ("sets", "fragment"),
    [
        ([(0,), (1, 0)], "agent_sets[1]: agents = (1, 0) is not strictly increasing at position 1"),
        ([(1,), (), (0, 2)], "agent_sets[2]: agents[1] = 2 outside 0..1"),
        ([(0,), 1], "agent_sets[1] = 1, expected a sequence of agent indices"),
    ],
)
def test_grouped_routes_name_the_bad_set(sets: list[object], fragment: str) -> None:
    """A bad set among several is named by its position in ``agent_sets`` (the per-set message
    alone does not say which of the sets it was)."""
    space = JointSpace((2, 3))
    pattern = "^" + "".join("\\" + c if c in "[]()." else c for c in fragment) + "$"
    with pytest.raises(ModelError, match=pattern):
        space.marginals(np.zeros(6), sets)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match=pattern):
        space.add_lifts(np.zeros(6), [np.zeros(1)] * len(sets), sets)  # type: ignore[arg-type]


def test_a_set_beyond_the_block_cap_is_lifted_without_a_joint_table() -> None:
    """A set whose own table exceeds the block cap (a star's centre observing every agent)
    forms a block alone: its table is added into ``out`` as it stands, as ``add_lift`` does,
    not first copied onto a zeroed block table of ``|S|`` entries (one pass, not three, and
    no joint-sized temporary).  The other blocks' tables have at most ``|S| / 16`` entries,
    and numpy's broadcast additions buffer 8192 entries at a time, so at ``2^18`` joint
    states the tracemalloc peak stays below half a joint vector."""
    import tracemalloc

    n = 18
    space = JointSpace((2,) * n)
    sets = (tuple(range(n)), *((i, i + 1) for i in range(n - 1)))
    rng = np.random.default_rng(2)
    tables = [rng.standard_normal(space.sub_size(k)) for k in sets]
    out = rng.standard_normal(space.size)
    want = out.copy()
    for table, agents in zip(tables, sets, strict=True):
        space.add_lift(want, table, agents)
    tracemalloc.start()
    try:
        space.add_lifts(out, tables, sets)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * space.size // 2, peak / (8 * space.size)
    # the whole set's table is added first on both routes, then the pairs' block on one
    tol = summation_tolerance(n, max(float(np.max(np.abs(t))) for t in (*tables, want)))
    np.testing.assert_allclose(out, want, rtol=0, atol=2 * tol)


@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.int32, np.int64])
def test_marginals_of_integer_and_boolean_values_are_counts(dtype: type) -> None:
    """A marginal sums, whatever the dtype: boolean values are counted (not or-ed) and small
    integers are summed in numpy's default integer (not wrapped in their own width), on the
    one-vector route as with trailing axes, and grouped (``marginals``) as per set."""
    space = JointSpace((2, 3, 2, 2, 2, 2))
    rng = np.random.default_rng(4)
    values = (rng.integers(0, 2, size=space.size) * 100).astype(dtype)
    sets = [(0,), (1, 2), (0, 2), ()]
    wide = values.astype(np.int64)
    for agents, grouped in zip(sets, space.marginals(values, sets), strict=True):
        want = np.bincount(
            space.sub_index(agents), weights=wide, minlength=space.sub_size(agents)
        ).astype(np.int64)
        np.testing.assert_array_equal(space.marginal(values, agents), want)
        np.testing.assert_array_equal(space.marginal(values[:, None], agents)[:, 0], want)
        np.testing.assert_array_equal(grouped, want)
