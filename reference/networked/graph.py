"""Interaction graphs of networked MARL and their k-hop neighbourhoods (SPEC section 2).

Agents ``0..n-1`` sit on an undirected simple graph.  ``N_i`` is the *closed*
neighbourhood of ``i`` (``i`` and its neighbours) and ``N_i^k`` the set of agents
within hop distance ``k`` of ``i``: ``N_i^0 = {i}``, ``N_i^1 = N_i``.  Hop distance is
symmetric, which is what makes the cancellation identity of SPEC section 3 work.
Neighbourhoods are always returned as tuples in increasing agent order, the order in
which local kernels and observations are indexed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import shortest_path

from reference._arrays import IntArray
from reference.errors import GraphError

__all__ = ["Graph"]

_UNREACHABLE = -1


@dataclass(frozen=True)
class Graph:
    """An undirected simple graph on agents ``0..n-1``.

    Attributes:
        n: number of agents (at least 1).
        edges: sorted tuple of edges ``(u, v)`` with ``u < v``; no self-loops, no repeats.
        distance: ``(n, n)`` int64 hop distances, ``-1`` between disconnected agents
            (read-only; computed at construction).
    """

    n: int
    edges: tuple[tuple[int, int], ...]
    distance: IntArray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, (int, np.integer)):
            raise GraphError(f"n = {self.n!r} is not an integer")
        if self.n < 1:
            raise GraphError(f"n = {self.n}, expected at least one agent")
        seen: set[tuple[int, int]] = set()
        for pos, edge in enumerate(self.edges):
            if len(edge) != 2:
                raise GraphError(f"edges[{pos}] = {edge!r} is not a pair of agents")
            u, v = edge
            for node in (u, v):
                if isinstance(node, bool) or not isinstance(node, (int, np.integer)):
                    raise GraphError(f"edges[{pos}] = {edge!r} has non-integer node {node!r}")
                if not 0 <= node < self.n:
                    raise GraphError(
                        f"edges[{pos}] = {edge!r} has node {node} outside 0..{self.n - 1}"
                    )
            if u == v:
                raise GraphError(f"edges[{pos}] = {edge!r} is a self-loop")
            key = (min(u, v), max(u, v))
            if key in seen:
                raise GraphError(f"edges[{pos}] = {edge!r} repeats an earlier edge")
            seen.add(key)
        canonical = tuple(sorted((int(min(u, v)), int(max(u, v))) for u, v in self.edges))
        object.__setattr__(self, "n", int(self.n))
        object.__setattr__(self, "edges", canonical)
        if canonical:
            rows = np.array([e[0] for e in canonical] + [e[1] for e in canonical])
            cols = np.array([e[1] for e in canonical] + [e[0] for e in canonical])
            adj = csr_matrix((np.ones(rows.size), (rows, cols)), shape=(self.n, self.n))
            dist = shortest_path(adj, method="D", unweighted=True, directed=False)
        else:
            dist = np.where(np.eye(self.n, dtype=bool), 0.0, np.inf)
        out = np.where(np.isfinite(dist), dist, _UNREACHABLE).astype(np.int64)
        out.setflags(write=False)
        object.__setattr__(self, "distance", out)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_edges(cls, n: int, edges: Iterable[tuple[int, int]]) -> Graph:
        """The graph on ``n`` agents with the given undirected edges."""
        pairs: list[tuple[int, int]] = []
        for pos, edge in enumerate(edges):
            items = tuple(edge)
            if len(items) != 2:
                raise GraphError(f"edges[{pos}] = {edge!r} is not a pair of agents")
            pairs.append((items[0], items[1]))
        return cls(n, tuple(pairs))

    @classmethod
    def line(cls, n: int) -> Graph:
        """Path ``0 - 1 - ... - (n-1)``; diameter ``n - 1``."""
        return cls(n, tuple((i, i + 1) for i in range(max(n - 1, 0))))

    @classmethod
    def ring(cls, n: int) -> Graph:
        """Cycle on ``n`` agents (a line for ``n <= 2``); diameter ``floor(n / 2)``."""
        if n <= 2:
            return cls.line(n)
        return cls(n, tuple((i, (i + 1) % n) for i in range(n)))

    @classmethod
    def grid(cls, rows: int, cols: int) -> Graph:
        """``rows x cols`` grid, agent ``r * cols + c``; diameter ``rows + cols - 2``."""
        if rows < 1 or cols < 1:
            raise GraphError(f"grid shape ({rows}, {cols}), expected positive sides")
        edges = [(r * cols + c, r * cols + c + 1) for r in range(rows) for c in range(cols - 1)]
        edges += [(r * cols + c, (r + 1) * cols + c) for r in range(rows - 1) for c in range(cols)]
        return cls(rows * cols, tuple(edges))

    @classmethod
    def star(cls, n: int) -> Graph:
        """Agent 0 joined to every other agent; diameter 2 (1 for ``n = 2``)."""
        return cls(n, tuple((0, i) for i in range(1, n)))

    @classmethod
    def random_tree(cls, n: int, rng: np.random.Generator) -> Graph:
        """A random labelled tree: agent ``i >= 1`` attaches to a uniform earlier agent."""
        parents = [int(rng.integers(0, i)) for i in range(1, n)]
        return cls(n, tuple((p, i) for i, p in zip(range(1, n), parents, strict=True)))

    # ------------------------------------------------------------------ queries
    def neighbourhood(self, i: int, k: int = 1) -> tuple[int, ...]:
        """``N_i^k``: agents within hop distance ``k`` of ``i``, in increasing order."""
        self._check_agent(i)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise GraphError(f"hop radius k = {k!r}, expected a non-negative integer")
        row = self.distance[i]
        return tuple(int(j) for j in np.flatnonzero((row >= 0) & (row <= k)))

    def neighbourhoods(self, k: int = 1) -> tuple[tuple[int, ...], ...]:
        """``(N_0^k, ..., N_{n-1}^k)``."""
        return tuple(self.neighbourhood(i, k) for i in range(self.n))

    @property
    def diameter(self) -> int:
        """Largest finite hop distance (per component when the graph is disconnected)."""
        return int(self.distance.max())

    @property
    def connected(self) -> bool:
        """Whether every pair of agents is joined by a path."""
        return bool((self.distance >= 0).all())

    def component_radius(self, i: int) -> int:
        """Smallest ``k`` with ``N_i^k`` equal to the whole component of ``i``."""
        self._check_agent(i)
        return int(self.distance[i].max())

    def _check_agent(self, i: int) -> None:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < self.n:
            raise GraphError(f"agent {i!r} outside 0..{self.n - 1}")
