"""Graphs: k-hop neighbourhoods, diameters and symmetry (SPEC section 2)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reference.networked import Graph
from verify import strategies as mst


@pytest.mark.parametrize(
    ("graph", "diameter"),
    [
        # provenance: path on n nodes has diameter n-1, cycle floor(n/2), star 2,
        # r x c grid (Manhattan distance) r + c - 2
        (Graph.line(1), 0),
        (Graph.line(5), 4),
        (Graph.ring(6), 3),
        (Graph.ring(7), 3),
        (Graph.star(5), 2),
        (Graph.grid(2, 3), 3),
        (Graph.grid(3, 3), 4),
    ],
)
def test_named_graph_diameters(graph: Graph, diameter: int) -> None:
    assert graph.diameter == diameter
    assert graph.connected


def test_line_neighbourhoods() -> None:
    g = Graph.line(5)
    assert g.neighbourhood(0, 0) == (0,)
    assert g.neighbourhood(0, 1) == (0, 1)
    assert g.neighbourhood(2, 1) == (1, 2, 3)
    assert g.neighbourhood(2, 2) == (0, 1, 2, 3, 4)


@given(graph=mst.graphs(max_agents=8), k=st.integers(0, 8))
def test_neighbourhoods_are_balls_of_a_metric(graph: Graph, k: int) -> None:
    """Hop distance is symmetric with zero diagonal; N_i^k grows with k, contains i, and
    equals the component of i once k reaches the component radius."""
    d = graph.distance
    np.testing.assert_array_equal(d, d.T)
    np.testing.assert_array_equal(np.diag(d), 0)
    for i in range(graph.n):
        ball = graph.neighbourhood(i, k)
        assert i in ball
        assert list(ball) == sorted(ball)
        assert set(graph.neighbourhood(i, max(k - 1, 0))) <= set(ball)
        for j in range(graph.n):
            assert (j in ball) == (0 <= d[i, j] <= k)
        assert set(graph.neighbourhood(i, graph.component_radius(i))) == {
            j for j in range(graph.n) if d[i, j] >= 0
        }


@given(n=st.integers(1, 12), seed=mst.seeds())
def test_random_tree_is_a_spanning_tree(n: int, seed: int) -> None:
    g = Graph.random_tree(n, np.random.default_rng(seed))
    assert len(g.edges) == n - 1
    assert g.connected


def test_disconnected_graph() -> None:
    g = Graph.from_edges(4, [(0, 1), (2, 3)])
    assert not g.connected
    assert g.diameter == 1
    assert g.neighbourhood(0, 5) == (0, 1)
