"""Constructive Hypothesis strategies for marl-oracle's objects (public API).

Every strategy builds a *valid* object directly -- stochastic rows are normalised
non-negative weights, never filtered -- and shrinks toward small, simple instances:
fewer agents, fewer states, uniform rows, ``gamma`` toward 0.  Rows may be
deterministic (one non-zero weight), so absorbing states and deterministic
transitions are covered.  Randomness for constructions that need it (random trees)
comes from a seed drawn as data, so failures shrink and replay.

Typical use::

    from hypothesis import given
    from verify import strategies as mst

    @given(mst.tabular_mdps(), mst.seeds())
    def test_something(mdp, seed): ...
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import prod
from typing import Literal

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from reference._arrays import FloatArray
from reference.cooperative.game import CooperativeMarkovGame
from reference.cooperative.policy import ConditionalPolicy
from reference.networked.graph import Graph
from reference.networked.model import NetworkedMDP
from reference.networked.policy import LocalizedSoftmaxPolicy
from reference.networked.utilities import (
    ConstraintPenaltyUtility,
    EntropyUtility,
    KLImitationUtility,
    LinearUtility,
    QuadraticImitationUtility,
    Utility,
)
from reference.tabular import TabularMDP

__all__ = [
    "GameProblem",
    "GraphKind",
    "NetworkedProblem",
    "TabularProblem",
    "conditional_policies",
    "cooperative_games",
    "discounts",
    "distributions",
    "game_problems",
    "graphs",
    "localized_policies",
    "networked_mdps",
    "networked_problems",
    "seeds",
    "stochastic_arrays",
    "tabular_mdps",
    "tabular_policies",
    "tabular_problems",
    "utilities",
]

GraphKind = Literal["line", "ring", "grid", "star", "tree"]
_GRAPH_KINDS: tuple[GraphKind, ...] = ("line", "ring", "star", "tree", "grid")


def seeds() -> st.SearchStrategy[int]:
    """Seeds for ``np.random.default_rng``, drawn as data so failures replay."""
    return st.integers(min_value=0, max_value=2**32 - 1)


def discounts(max_gamma: float = 0.95) -> st.SearchStrategy[float]:
    """``gamma`` in ``[0, max_gamma]``, shrinking toward 0; includes 0 and ``max_gamma``."""
    return st.one_of(
        st.just(0.0),
        st.floats(min_value=0.0, max_value=max_gamma, allow_nan=False),
        st.just(max_gamma),
    )


@st.composite
def stochastic_arrays(draw: st.DrawFn, shape: tuple[int, ...]) -> FloatArray:
    """Non-negative arrays whose last axis sums to 1.

    Weights are drawn in ``[0, 1]`` and normalised; an all-zero row becomes uniform
    (this is also what a row shrinks to), and a row with one non-zero weight is
    deterministic.
    """
    weights = draw(
        hnp.arrays(
            np.float64,
            shape,
            elements=st.one_of(st.just(0.0), st.floats(min_value=1e-3, max_value=1.0)),
        )
    )
    sums = weights.sum(axis=-1, keepdims=True)
    weights = np.where(sums > 0, weights, 1.0)
    out: FloatArray = weights / weights.sum(axis=-1, keepdims=True)
    return out


def distributions(size: int) -> st.SearchStrategy[FloatArray]:
    """Probability vectors of length ``size``."""
    return stochastic_arrays((size,))


@st.composite
def tabular_mdps(
    draw: st.DrawFn, max_states: int = 4, max_actions: int = 3, max_gamma: float = 0.95
) -> TabularMDP:
    """Random :class:`TabularMDP` with rewards in ``[-1, 1]``."""
    nS = draw(st.integers(1, max_states))
    nA = draw(st.integers(1, max_actions))
    P = draw(stochastic_arrays((nS, nA, nS)))
    r = draw(hnp.arrays(np.float64, (nS, nA), elements=st.floats(-1.0, 1.0)))
    rho = draw(distributions(nS))
    return TabularMDP(P, r, rho, draw(discounts(max_gamma)))


def tabular_policies(n_states: int, n_actions: int) -> st.SearchStrategy[FloatArray]:
    """Stochastic policies ``pi[s, a]`` (deterministic rows included)."""
    return stochastic_arrays((n_states, n_actions))


@dataclass(frozen=True)
class TabularProblem:
    """A :class:`TabularMDP` with two policies and softmax logits of matching shape."""

    mdp: TabularMDP
    pi: FloatArray
    pi_other: FloatArray
    theta: FloatArray


@st.composite
def tabular_problems(
    draw: st.DrawFn, max_states: int = 4, max_actions: int = 3, max_gamma: float = 0.95
) -> TabularProblem:
    """A random MDP, two random policies on it, and logits in ``[-3, 3]``."""
    mdp = draw(tabular_mdps(max_states, max_actions, max_gamma))
    shape = (mdp.n_states, mdp.n_actions)
    theta = draw(hnp.arrays(np.float64, shape, elements=st.floats(-3.0, 3.0)))
    return TabularProblem(
        mdp, draw(tabular_policies(*shape)), draw(tabular_policies(*shape)), theta
    )


@st.composite
def graphs(
    draw: st.DrawFn,
    min_agents: int = 1,
    max_agents: int = 5,
    kinds: Sequence[GraphKind] = _GRAPH_KINDS,
) -> Graph:
    """Lines, rings, stars, random trees and grids on ``min_agents..max_agents`` agents."""
    kind = draw(st.sampled_from(list(kinds)))
    n = draw(st.integers(min_agents, max_agents))
    if kind == "line":
        return Graph.line(n)
    if kind == "ring":
        return Graph.ring(n)
    if kind == "star":
        return Graph.star(n)
    if kind == "tree":
        return Graph.random_tree(n, np.random.default_rng(draw(seeds())))
    rows = draw(st.sampled_from([d for d in range(1, n + 1) if n % d == 0]))
    return Graph.grid(rows, n // rows)


@st.composite
def networked_mdps(
    draw: st.DrawFn,
    max_agents: int = 4,
    max_local_states: int = 2,
    max_local_actions: int = 2,
    max_joint_states: int = 32,
    max_gamma: float = 0.95,
    graph: st.SearchStrategy[Graph] | None = None,
) -> NetworkedMDP:
    """Random :class:`NetworkedMDP` small enough for exact joint oracles.

    Local state counts are reduced until ``prod |S_i| <= max_joint_states``; the
    initial distribution is a product of local ones or (one time in three) a joint one.
    """
    g = draw(graph if graph is not None else graphs(max_agents=max_agents))
    n_states = [draw(st.integers(1, max_local_states)) for _ in range(g.n)]
    for i in range(g.n):  # keep the joint space within budget (deterministic, shrink-friendly)
        while prod(n_states) > max_joint_states and n_states[i] > 1:
            n_states[i] -= 1
    n_actions = [draw(st.integers(1, max_local_actions)) for _ in range(g.n)]
    kernels = []
    for i in range(g.n):
        rows = prod(n_states[j] for j in g.neighbourhood(i))
        kernels.append(draw(stochastic_arrays((rows, n_actions[i], n_states[i]))))
    gamma = draw(discounts(max_gamma))
    rho: tuple[FloatArray, ...] | FloatArray
    if draw(st.integers(0, 2)) == 2:
        rho = draw(distributions(prod(n_states)))
    else:
        rho = tuple(draw(distributions(k)) for k in n_states)
    return NetworkedMDP(g, tuple(n_states), tuple(n_actions), tuple(kernels), gamma, rho)


@st.composite
def localized_policies(
    draw: st.DrawFn, model: NetworkedMDP, beta: int | None = None, max_logit: float = 3.0
) -> LocalizedSoftmaxPolicy:
    """Localized softmax policies with logits in ``[-max_logit, max_logit]``.

    ``beta`` defaults to a draw from ``{0, 1, 2}``.  Logits shrink toward 0 (uniform).
    """
    radius = draw(st.integers(0, 2)) if beta is None else beta
    base = LocalizedSoftmaxPolicy.uniform(model, radius)
    theta = [
        draw(hnp.arrays(np.float64, t.shape, elements=st.floats(-max_logit, max_logit)))
        for t in base.theta
    ]
    return base.with_theta(theta)


@st.composite
def utilities(
    draw: st.DrawFn,
    shape: tuple[int, int],
    gamma: float,
    kinds: Sequence[str] = ("linear", "entropy", "quadratic", "kl", "penalty"),
) -> Utility:
    """One utility of shape ``shape``: linear, entropy, quadratic or KL imitation, or a
    quadratic constraint penalty around a linear constraint."""
    kind = draw(st.sampled_from(list(kinds)))
    table = hnp.arrays(np.float64, shape, elements=st.floats(-1.0, 1.0))
    if kind == "linear":
        return LinearUtility(draw(table), gamma)
    eps = draw(st.floats(min_value=1e-2, max_value=1.0))
    if kind == "entropy":
        return EntropyUtility(shape, gamma, eps)
    target = draw(stochastic_arrays((shape[0] * shape[1],))).reshape(shape)
    if kind == "quadratic":
        return QuadraticImitationUtility(target, gamma)
    if kind == "kl":
        return KLImitationUtility(target, gamma, eps)
    constraint = LinearUtility(draw(table), gamma)
    threshold = draw(st.floats(-2.0, 2.0))
    weight = draw(st.floats(min_value=0.1, max_value=5.0))
    objective = EntropyUtility(shape, gamma, eps) if draw(st.booleans()) else None
    return ConstraintPenaltyUtility(constraint, threshold, weight, objective)


@dataclass(frozen=True)
class NetworkedProblem:
    """A networked MDP with a localized policy and one utility per agent."""

    model: NetworkedMDP
    policy: LocalizedSoftmaxPolicy
    utilities: tuple[Utility, ...]


@st.composite
def networked_problems(
    draw: st.DrawFn,
    max_agents: int = 4,
    max_joint_states: int = 32,
    beta: int | None = None,
    utility_kinds: Sequence[str] = ("linear", "entropy", "quadratic", "kl", "penalty"),
    max_gamma: float = 0.95,
) -> NetworkedProblem:
    """A :class:`NetworkedProblem` small enough for every exact route."""
    model = draw(
        networked_mdps(
            max_agents=max_agents, max_joint_states=max_joint_states, max_gamma=max_gamma
        )
    )
    policy = draw(localized_policies(model, beta))
    utils = tuple(
        draw(utilities((model.n_states[i], model.n_actions[i]), model.gamma, utility_kinds))
        for i in range(model.n)
    )
    return NetworkedProblem(model, policy, utils)


@st.composite
def cooperative_games(
    draw: st.DrawFn,
    max_agents: int = 3,
    max_actions: int = 3,
    max_states: int = 3,
    max_gamma: float = 0.9,
    full_support_rho: bool = False,
) -> CooperativeMarkovGame:
    """Random :class:`CooperativeMarkovGame`: ``N <= max_agents`` agents with heterogeneous
    action counts in ``[1, max_actions]``, rewards in ``[0, 1]`` (0 and 1 included), stochastic
    rows that may be deterministic.  ``full_support_rho`` mixes ``rho`` with the uniform
    distribution so that every state is visited."""
    n = draw(st.integers(1, max_agents))
    counts = tuple(draw(st.integers(1, max_actions)) for _ in range(n))
    n_s = draw(st.integers(1, max_states))
    shape = (n_s, *counts)
    P = draw(stochastic_arrays((*shape, n_s)))
    r = draw(
        hnp.arrays(
            np.float64,
            shape,
            elements=st.one_of(st.just(0.0), st.just(1.0), st.floats(0.0, 1.0)),
        )
    )
    rho = draw(distributions(n_s))
    if full_support_rho:
        rho = 0.5 * rho + 0.5 / n_s
    return CooperativeMarkovGame(P, r, rho, draw(discounts(max_gamma)))


@st.composite
def conditional_policies(
    draw: st.DrawFn, game: CooperativeMarkovGame, min_prob: float = 0.0
) -> ConditionalPolicy:
    """Sequential conditional policies on ``game``; ``min_prob > 0`` mixes every conditional
    with the uniform one so that each action has probability at least ``min_prob``."""
    conds = []
    for m in range(game.n_agents):
        shape = (game.n_states, *game.action_counts[: m + 1])
        c = draw(stochastic_arrays(shape))
        k = game.action_counts[m]
        lam = min(1.0, min_prob * k)
        conds.append((1 - lam) * c + lam / k)
    return ConditionalPolicy(game, tuple(conds))


@dataclass(frozen=True)
class GameProblem:
    """A cooperative game with two sequential policies on it."""

    game: CooperativeMarkovGame
    pi: ConditionalPolicy
    pi_other: ConditionalPolicy


@st.composite
def game_problems(
    draw: st.DrawFn, max_agents: int = 3, max_actions: int = 3, max_states: int = 3
) -> GameProblem:
    """A random game (:func:`cooperative_games`) and two random conditional policies."""
    game = draw(cooperative_games(max_agents, max_actions, max_states))
    return GameProblem(
        game, draw(conditional_policies(game)), draw(conditional_policies(game))
    )
