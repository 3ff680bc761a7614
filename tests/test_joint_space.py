"""Grouped sums and lifts over the joint state space without index tables
(``JointSpace.lift`` and ``JointSpace.marginal``; proofs_notes/matrix-free.md#joint-tables)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
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
