"""Named instances, each with its source (SPEC section 7)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from reference._arrays import FloatArray, frozen
from reference.cooperative.game import CooperativeMarkovGame
from reference.errors import ModelError
from reference.networked.graph import Graph
from reference.networked.model import NetworkedMDP
from reference.networked.policy import LocalizedSoftmaxPolicy
from reference.networked.utilities import (
    ConstraintPenaltyUtility,
    EntropyUtility,
    LinearUtility,
    Utility,
)

__all__ = [
    "CONSTRAINT_WEIGHT",
    "GAMES",
    "INSTANCES",
    "RARE_STALL_PROBABILITY",
    "RARE_STALL_REWARDS",
    "RATIO_R",
    "RATIO_S",
    "NetworkedInstance",
    "climbing",
    "copy_chain",
    "copy_chain_policy",
    "coupled_line",
    "equal_arms",
    "line_message",
    "line_message_mixed",
    "mixed_roles",
    "rare_stall",
    "ratio",
    "shift_chain",
    "two_armed_bandit",
    "wireless",
    "wireless_mixed",
    "xor_pair",
]

UtilityKind = Literal["linear", "entropy", "mixed"]

Role = Literal["worker", "explorer", "constrained"]
"""Utility roles of heterogeneous instances: a worker maximises its reward ``<r_i, lam_i>``,
an explorer the entropy of its state marginal, a constrained agent explores subject to the
penalty form of ``<r_i, lam_i> >= level max r_i / (1 - gamma)`` (the instance's
``constraint_level``)."""

CONSTRAINT_WEIGHT = 10.0
"""Penalty weight ``mu`` of a constrained agent."""

ENTROPY_EPS = 1e-3
"""Smoothing floor of the entropy utility used by named instances."""


@dataclass(frozen=True)
class NetworkedInstance:
    """A named networked MDP with its local rewards.

    Attributes:
        name: registry name (``"line-message"``).
        model: the networked MDP.
        rewards: local rewards ``r_i`` with shape ``(|S_i|, |A_i|)``, the linear utility's.
        source: where the instance comes from and how it departs from the source.
        roles: each agent's :data:`Role` (heterogeneous instances), else empty.
        constraint_level: ``level`` of a constrained agent (:data:`Role`).
    """

    name: str
    model: NetworkedMDP
    rewards: tuple[FloatArray, ...]
    source: str
    roles: tuple[Role, ...] = ()
    constraint_level: float = 0.7

    def utilities(self, kind: UtilityKind = "linear") -> tuple[Utility, ...]:
        """One utility per agent: ``"linear"`` (``<r_i, lam_i>``), ``"entropy"``, or
        ``"mixed"`` (each agent's :data:`Role`; heterogeneous instances only)."""
        m = self.model
        if kind == "linear":
            return tuple(LinearUtility(r, m.gamma) for r in self.rewards)
        if kind == "entropy":
            return tuple(
                EntropyUtility((m.n_states[i], m.n_actions[i]), m.gamma, ENTROPY_EPS)
                for i in range(m.n)
            )
        if kind == "mixed":
            if not self.roles:
                raise ModelError(
                    f"instance {self.name!r} has no agent roles; 'mixed' utilities need a "
                    "heterogeneous instance (for example line-message-mixed)"
                )
            return tuple(self._role_utility(i, role) for i, role in enumerate(self.roles))
        raise ModelError(f"utility kind = {kind!r}, expected 'linear', 'entropy' or 'mixed'")

    def _role_utility(self, i: int, role: Role) -> Utility:
        m = self.model
        shape = (m.n_states[i], m.n_actions[i])
        entropy = EntropyUtility(shape, m.gamma, ENTROPY_EPS)
        if role == "worker":
            return LinearUtility(self.rewards[i], m.gamma)
        if role == "explorer":
            return entropy
        level = self.constraint_level * float(self.rewards[i].max()) / (1.0 - m.gamma)
        return ConstraintPenaltyUtility(
            LinearUtility(self.rewards[i], m.gamma), level, CONSTRAINT_WEIGHT, entropy
        )


_LINE_MESSAGE_SOURCE = (
    "Binary message passing on a line, adapted from Ying et al.'s NeurIPS 2023 follow-up on "
    "networked MARL with general utilities, appendix H.1 (SPEC section 7). Departure: the "
    "original rewards the next local state; here r_i depends on the current local state, "
    "so that it is a function of the local occupancy."
)


def line_message(n: int, gamma: float = 0.9) -> NetworkedInstance:
    """Line "binary message passing" (SPEC section 7), agents ``0..n-1``, ``n >= 2``.

    ``s_i, a_i in {0, 1}``.  Agent 0 copies its right neighbour (``s'_0 = s_1``, action
    ignored); the last agent sets ``s'_{n-1} = a_{n-1}``; a middle agent with ``a_i = 0``
    sets ``s'_i = 0`` and with ``a_i = 1`` sets ``s'_i = 1`` with probability 1 if
    ``s_{i+1} = 1`` and 0.8 otherwise.  Initial state all ones.  Reward
    ``r_i(s_i, a_i) = 0.1 * 1[s_i = 1]``, times 10 for agent 0.

    Note: the source rewards the *next* state; SPEC section 7 moves it to the current
    state so that ``f_i`` is a linear function of ``lam_i``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ModelError(f"line-message needs n >= 2 agents, got n = {n!r}")
    graph = Graph.line(int(n))
    kernels = []
    for i in range(n):
        nb = graph.neighbourhood(i)  # (i-1, i, i+1) clipped to the line
        shape = (2,) * len(nb) + (2, 2)
        P = np.zeros(shape)
        if i == 0:
            # s_N = (s_0, s_1); s'_0 = s_1 whatever a_0
            for s1 in (0, 1):
                P[:, s1, :, s1] = 1.0
        elif i == n - 1:
            # s'_{n-1} = a_{n-1}
            for a in (0, 1):
                P[..., a, a] = 1.0
        else:
            # s_N = (s_{i-1}, s_i, s_{i+1})
            P[..., 0, 0] = 1.0
            P[:, :, 1, 1, 1] = 1.0
            P[:, :, 0, 1, 1] = 0.8
            P[:, :, 0, 1, 0] = 0.2
        kernels.append(P)
    rho = tuple(np.array([0.0, 1.0]) for _ in range(n))
    model = NetworkedMDP(graph, (2,) * n, (2,) * n, tuple(kernels), gamma, rho)
    rewards = []
    for i in range(n):
        r = np.zeros((2, 2))
        r[1, :] = 1.0 if i == 0 else 0.1
        rewards.append(frozen(r))
    return NetworkedInstance("line-message", model, tuple(rewards), _LINE_MESSAGE_SOURCE)


_WIRELESS_SOURCE = (
    "Wireless access grid in the style of Qu et al. (2020), used by Ying et al. 2023 "
    "(appendix H.3; SPEC section 7): users on a grid, access points at the corners of each "
    "user's cell, packets with deadline bits, success probability 0.8, arrival probability "
    "0.5, collisions between users sending to one access point. Departures, forced by local "
    "kernels P_i(s'_i | s_{N_i}, a_i) that see neighbours' states but not their actions: "
    "a neighbour with a queued packet contends for each of its access points with "
    "probability 1/(|Y_j| + 1), the rate of its uniform policy; and the reward of a success "
    "is paid one step later, through a success bit in the local state, so that r_i is a "
    "function of (s_i, a_i)."
)


def wireless(
    rows: int,
    cols: int,
    gamma: float = 0.9,
    deadline: int = 2,
    success: float = 0.8,
    arrival: float = 0.5,
) -> NetworkedInstance:
    """Wireless access grid (SPEC section 7) on ``rows x cols`` users.

    User ``(r, c)`` (agent ``r cols + c``) reaches the access points at the four corners of
    its cell, ``Y_i`` (an ``(rows+1) x (cols+1)`` grid of points); users sharing a point are
    neighbours (a king's-move graph).  Local state ``(q_1, ..., q_D, f)``: ``q_k = 1`` if a
    packet with ``k`` steps left is queued, ``f = 1`` if the last transmission succeeded
    (digits in that order, ``q_1`` most significant).  Action 0 idles; action ``y >= 1``
    sends the earliest-deadline packet to the ``y``-th point of ``Y_i`` (row-major order).
    A send succeeds with probability ``success * prod_j (1 - 1[queue_j non-empty] /
    (|Y_j| + 1))`` over neighbours ``j`` that reach the same point; the sent packet leaves the
    queue on success.  Then deadlines shift (``q_1`` expires), a packet arrives at ``q_D``
    with probability ``arrival``, and ``f'`` records the success.  Reward
    ``r_i(s_i, a_i) = f``.  Initial queues empty, ``f = 0``.

    Note: see ``source`` for the two departures from the original model.
    """
    for name, value in (("rows", rows), ("cols", cols), ("deadline", deadline)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ModelError(f"wireless {name} = {value!r}, expected a positive integer")
    for name, prob in (("success", success), ("arrival", arrival)):
        if not 0.0 <= prob <= 1.0:
            raise ModelError(f"wireless {name} = {prob!r}, expected a probability")
    n = rows * cols
    points = [
        tuple((r + dr) * (cols + 1) + (c + dc) for dr in (0, 1) for dc in (0, 1))
        for r in range(rows)
        for c in range(cols)
    ]
    edges = [(i, j) for i in range(n) for j in range(i + 1, n) if set(points[i]) & set(points[j])]
    graph = Graph.from_edges(n, edges)
    width = deadline + 1
    local = np.indices((2,) * width).reshape(width, -1).T  # (|S_i|, D + 1) digits
    queue = local[:, :deadline]
    nonempty: npt.NDArray[np.bool_] = np.asarray(queue.any(axis=1), dtype=bool)
    first = np.where(nonempty, np.argmax(queue, axis=1), -1)  # earliest-deadline slot
    n_states, n_actions = 2**width, 5
    kernels = []
    for i in range(n):
        nb = graph.neighbourhood(i)
        configs = np.indices((n_states,) * len(nb)).reshape(len(nb), -1).T  # (rows, |N_i|)
        own = configs[:, nb.index(i)]
        P = np.zeros((configs.shape[0], n_actions, n_states))
        for y in range(n_actions):
            p_send = np.zeros(configs.shape[0])
            if y >= 1:
                point = points[i][y - 1]
                clear = np.ones(configs.shape[0])
                for pos, j in enumerate(nb):
                    if j != i and point in points[j]:
                        clear *= 1.0 - nonempty[configs[:, pos]] / (len(points[j]) + 1)
                p_send = success * clear * nonempty[own]
            for sent, p_sent in ((True, p_send), (False, 1.0 - p_send)):
                q = queue[own].copy()
                if sent:
                    rows_sent = np.flatnonzero(nonempty[own])
                    q[rows_sent, first[own][rows_sent]] = 0
                shifted = np.concatenate([q[:, 1:], np.zeros((q.shape[0], 1), int)], axis=1)
                for arrived, p_arr in ((1, arrival), (0, 1.0 - arrival)):
                    nxt = shifted.copy()
                    nxt[:, -1] = arrived
                    digits = np.concatenate([nxt, np.full((q.shape[0], 1), int(sent))], axis=1)
                    code = digits @ (2 ** np.arange(width - 1, -1, -1))
                    np.add.at(P[:, y, :], (np.arange(configs.shape[0]), code), p_sent * p_arr)
        kernels.append(P)
    rho_local = np.zeros(n_states)
    rho_local[0] = 1.0  # empty queue, f = 0
    model = NetworkedMDP(
        graph,
        (n_states,) * n,
        (n_actions,) * n,
        tuple(kernels),
        gamma,
        tuple(rho_local.copy() for _ in range(n)),
    )
    reward = np.repeat(local[:, -1:].astype(np.float64), n_actions, axis=1)
    return NetworkedInstance(
        "wireless", model, tuple(frozen(reward) for _ in range(n)), _WIRELESS_SOURCE
    )


def _wireless_row(n: int, gamma: float = 0.9) -> NetworkedInstance:
    """``wireless(1, n, gamma)``: ``n`` users in a row (the registry's ``(n, gamma)`` form)."""
    return wireless(1, n, gamma)


def mixed_roles(n: int) -> tuple[Role, ...]:
    """Roles of a heterogeneous instance with ``n >= 2`` agents: agent 0 a worker, then
    explorers and workers alternating, and the last agent constrained."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ModelError(f"a heterogeneous instance needs n >= 2 agents, got n = {n!r}")
    middle: list[Role] = ["explorer" if i % 2 else "worker" for i in range(1, n - 1)]
    return ("worker", *middle, "constrained")


_MIXED_SOURCE = (
    " Heterogeneous utilities (built for this project after the seed's open question on "
    "agents with different local utilities): agent 0 and every even middle agent are workers "
    "(linear reward), odd middle agents explorers (state-marginal entropy), the last agent "
    "explores subject to keeping a fraction of its best discounted reward (quadratic "
    "penalty, weight 10): 70% on line-message, 20% on wireless (whose success bit is set at "
    "most 40% of the time: arrivals 0.5 times success 0.8)."
)


def line_message_mixed(n: int, gamma: float = 0.9) -> NetworkedInstance:
    """:func:`line_message` with heterogeneous agents (:func:`mixed_roles`); its ``"mixed"``
    utilities are ``utilities("mixed")``."""
    base = line_message(n, gamma)
    return NetworkedInstance(
        "line-message-mixed",
        base.model,
        base.rewards,
        base.source + _MIXED_SOURCE,
        mixed_roles(n),
    )


def wireless_mixed(n: int, gamma: float = 0.9) -> NetworkedInstance:
    """A row of ``n`` wireless users (:func:`wireless`) with heterogeneous agents
    (:func:`mixed_roles`)."""
    base = wireless(1, n, gamma)
    return NetworkedInstance(
        "wireless-mixed",
        base.model,
        base.rewards,
        base.source + _MIXED_SOURCE,
        mixed_roles(n),
        constraint_level=0.2,
    )


_SHIFT_CHAIN_SOURCE = (
    "Constructed for this project (proofs_notes/decay.md#tight): a line on which every "
    "agent copies its right neighbour's state and the last agent keeps its own, so the "
    "state of agent i at time t is s_{min(i+t, n-1)} at time 0 and the kappa-hop decay "
    "bound's state part is attained exactly; a small reward for action 1 lets the "
    "observation radius beta move the spreads."
)


def shift_chain(
    n: int,
    gamma: float = 0.9,
    action_reward: float = 0.1,
    reward_scales: Sequence[float] | None = None,
) -> NetworkedInstance:
    """Shift chain on a line of ``n >= 2`` agents, ``s_i, a_i in {0, 1}``.

    ``s'_i = s_{i+1}`` for ``i < n-1`` and ``s'_{n-1} = s_{n-1}``, whatever the actions;
    uniform initial states.  Reward ``r_i(s_i, a_i) = w_i (1[s_i = 1] + action_reward
    1[a_i = 1])`` with ``w_i = reward_scales[i]`` (default 1), so ``Delta_i = w_i (1 +
    action_reward)``.  The utilities are linear, so ``Q_i``, ``D_i`` and the bound all scale
    with ``w_i`` and each agent's ratio does not depend on it; distinct scales make a bound
    that uses another agent's ``Delta`` fail.

    Two joint pairs equal on ``N_i^kappa`` but with every agent beyond ``i + kappa`` in state
    1 in one and 0 in the other give agent ``i`` states that differ from time ``kappa + 1``
    on, forever (the last agent holds its state), so the state part of ``Q_i`` alone spreads
    by ``gamma^(kappa+1) / (1 - gamma)``: the bound ``Delta_i gamma^t0 / (1 - gamma)`` of SPEC
    section 3 is attained up to the factor ``1 / (1 + action_reward)`` at ``beta = 0`` (and at
    ``kappa = 0`` for every ``beta``) by the state part (``proofs_notes/decay.md#tight``).  The
    action reward makes the spreads depend on the policy and its observation radius.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ModelError(f"shift-chain needs n >= 2 agents, got n = {n!r}")
    c = float(action_reward)
    if not (np.isfinite(c) and c >= 0):
        raise ModelError(f"action_reward = {action_reward!r}, expected a finite value >= 0")
    w = np.ones(int(n)) if reward_scales is None else np.asarray(reward_scales, dtype=float)
    if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ModelError(
            f"reward_scales = {reward_scales!r}, expected {n} finite positive values"
        )
    graph = Graph.line(int(n))
    kernels = []
    for i in range(n):
        nb = graph.neighbourhood(i)
        src = nb.index(i + 1) if i < n - 1 else nb.index(i)
        P = np.zeros((2,) * len(nb) + (2, 2))
        for idx in np.ndindex(*((2,) * len(nb) + (2,))):
            P[(*idx, idx[src])] = 1.0
        kernels.append(P)
    rho = tuple(np.full(2, 0.5) for _ in range(n))
    model = NetworkedMDP(graph, (2,) * n, (2,) * n, tuple(kernels), gamma, rho)
    r = np.zeros((2, 2))
    r[1, :] += 1.0
    r[:, 1] += c
    rewards = tuple(frozen(w[i] * r) for i in range(n))
    return NetworkedInstance("shift-chain", model, rewards, _SHIFT_CHAIN_SOURCE)


_COPY_CHAIN_SOURCE = (
    "Constructed for this project (proofs_notes/decay.md#copy-chain): a line whose middle "
    "agents copy their right neighbour's state while the ends keep theirs, and only agent 0 "
    "acts, copying the state beta hops away, so its action at time t reads the initial "
    "state beta + t hops away and the decay bound's t0(kappa, beta) is attained."
)


def copy_chain(n: int, gamma: float = 0.8) -> NetworkedInstance:
    """Copy chain on a line of ``n >= 2`` binary agents: ``s'_j = s_{j+1}`` for
    ``0 < j < n-1``, the ends keep their state; agent 0 has two actions, the others one;
    uniform initial states; reward ``r_0 = 1[a_0 = 1]`` (``Delta_0 = 1``), ``r_j = 0``.

    With :func:`copy_chain_policy` agent 0 plays ``a_0 = s_beta`` (its farthest observed
    state) with probability ``1 - d``, so ``a_0^t`` copies the initial state of agent
    ``min(beta + t, n - 1)`` and, for ``beta >= 1``, ``D_0(kappa) = (1 - 2 d) sum_{t >=
    max(1, kappa - beta + 1)} gamma^t``: ``(1 - 2 d)`` times the bound at every ``kappa < n -
    1`` for ``beta = 1``, and at ``kappa <= beta + 1`` for ``beta >= 2``
    (``proofs_notes/decay.md#copy-chain``).  At ``beta = 0`` agent 0 reads its own state,
    which it keeps, and every spread is 0.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ModelError(f"copy-chain needs n >= 2 agents, got n = {n!r}")
    graph = Graph.line(int(n))
    acts = (2,) + (1,) * (n - 1)
    kernels = []
    for j in range(n):
        nb = graph.neighbourhood(j)
        src = nb.index(j + 1) if 0 < j < n - 1 else nb.index(j)
        P = np.zeros((2,) * len(nb) + (acts[j], 2))
        for idx in np.ndindex(*((2,) * len(nb) + (acts[j],))):
            P[(*idx, idx[src])] = 1.0
        kernels.append(P)
    rho = tuple(np.full(2, 0.5) for _ in range(n))
    model = NetworkedMDP(graph, (2,) * n, acts, tuple(kernels), gamma, rho)
    rewards = [np.zeros((2, a)) for a in acts]
    rewards[0][:, 1] = 1.0
    return NetworkedInstance(
        "copy-chain", model, tuple(frozen(r) for r in rewards), _COPY_CHAIN_SOURCE
    )


def copy_chain_policy(model: NetworkedMDP, beta: int, logit: float) -> LocalizedSoftmaxPolicy:
    """Agent 0 of :func:`copy_chain` with observation radius ``beta``: logit ``logit`` on
    the action equal to ``s_beta`` (the last digit of its observation), 0 on the other, so
    it copies ``s_beta`` with probability ``1 - d``, ``d = 1 / (1 + e^logit)``."""
    pol = LocalizedSoftmaxPolicy.uniform(model, beta)
    theta = [np.array(t, dtype=float) for t in pol.theta]
    for o in range(theta[0].shape[0]):
        theta[0][o, o % 2] = float(logit)
    return pol.with_theta(theta)


_XOR_PAIR_SOURCE = (
    "Constructed for this project (proofs_notes/truncated-gradient.md#tight): two agents "
    "where agent 0's next state is its action XOR agent 1's state, the instance on which "
    "the truncated-gradient error comes closest to its bounds at kappa = 0."
)


def xor_pair(gamma: float = 0.1) -> NetworkedInstance:
    """Two agents on a line, ``s_i, a_i in {0, 1}``: ``s'_0 = a_0 XOR s_1``, ``s'_1 = s_1``;
    initial state ``(1, 1)``; rewards ``r_0(s_0, a_0) = 1[s_0 = 1]``, ``r_1 = 0``.

    At ``kappa = 0`` the truncated ``Q_0`` with point weights (``s_1 = 0, a_1 = 0``) differs
    from ``Q_0`` by ``+-D_0(0)`` with a sign that flips with ``a_0`` wherever ``s_1 = 1``, which
    is every reachable state: the error of the truncated gradient meets the sharpened bound
    of ``proofs_notes/truncated-gradient.md#sharp`` up to the mass that the later
    observations spread over two coordinates (all of it as ``gamma -> 0``).
    """
    g = Graph.line(2)
    P0 = np.zeros((2, 2, 2, 2))
    P1 = np.zeros((2, 2, 2, 2))
    for s0, s1, a in np.ndindex(2, 2, 2):
        P0[s0, s1, a, a ^ s1] = 1.0
        P1[s0, s1, a, s1] = 1.0
    rho = (np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    model = NetworkedMDP(g, (2, 2), (2, 2), (P0, P1), gamma, rho)
    r0 = np.zeros((2, 2))
    r0[1, :] = 1.0
    return NetworkedInstance(
        "xor-pair", model, (frozen(r0), frozen(np.zeros((2, 2)))), _XOR_PAIR_SOURCE
    )


def two_armed_bandit(gamma: float = 0.0) -> CooperativeMarkovGame:
    """One agent, one state, two actions with rewards 1 and 0 (built for this project,
    ``proofs_notes/mappo-bound.md#tight``).

    With ``gamma = 0`` the exact MA-PPO step is Hedge with learning rate ``1/beta_k``; from the
    uniform policy its average regret is ``(1/K) sum_k 1/(1 + exp(k / beta_k))``, which tends
    to ``beta log 2 / sqrt K``, the first term of ``B(K)``.  For large ``beta`` the second
    term ``N / (8 beta sqrt K)`` is small and ``B(K)`` is nearly attained.
    """
    P = np.ones((1, 2, 1))
    r = np.array([[1.0, 0.0]])
    return CooperativeMarkovGame(P, r, np.ones(1), gamma, "two-armed bandit")


def equal_arms(actions: int = 8, mean: float = 0.5) -> CooperativeMarkovGame:
    """One agent, one state, ``actions`` arms of equal mean reward ``mean``, ``gamma = 0``
    (built for this project, ``proofs_notes/pessimism.md#event``).

    Datasets draw ``Bernoulli(mean)`` rewards, so the empirical means differ between arms and
    an actor that follows them moves to the arm whose estimate is largest: its estimate is
    above ``mean`` unless every arm's is (about ``2^-actions`` of the datasets), so a critic
    without a pessimism bonus overestimates ``J = mean`` there, while the pessimistic one
    must not on the validity event.
    """
    if isinstance(actions, bool) or not isinstance(actions, (int, np.integer)) or actions < 2:
        raise ModelError(f"equal-arms needs actions >= 2, got {actions!r}")
    if not 0.0 <= float(mean) <= 1.0:
        raise ModelError(f"mean = {mean!r}, expected a reward in [0, 1]")
    P = np.ones((1, int(actions), 1))
    r = np.full((1, int(actions)), float(mean))
    return CooperativeMarkovGame(P, r, np.ones(1), 0.0, "equal arms")


INSTANCES = {
    "line-message": line_message,
    "line-message-mixed": line_message_mixed,
    "shift-chain": shift_chain,
    "wireless": _wireless_row,
    "wireless-mixed": wireless_mixed,
}
"""Registry of networked instances by name: ``name -> constructor(n, gamma)``.

``wireless`` in the registry is a single row of ``n`` users; call :func:`wireless` for grids.
"""


_COUPLED_LINE_SOURCE = (
    "Built for this project to vary the strength of spatial coupling (SPEC section 3): a "
    "line of binary agents in which each agent copies its right neighbour's state with "
    "probability `coupling` and otherwise sets its state to its own action. Coupling 0 "
    "decouples the agents; coupling 1 is the shift chain, on which the derived decay bound "
    "is attained as gamma^n -> 0 (proofs_notes/decay.md#coupling)."
)


def coupled_line(n: int, coupling: float, gamma: float = 0.9) -> NetworkedInstance:
    """A line of ``n >= 2`` binary agents whose coupling to the right neighbour is a parameter.

    ``s_i, a_i in {0, 1}``.  Agent ``i < n - 1`` moves to its right neighbour's current state
    with probability ``c`` (the coupling) and to its own action otherwise::

        P_i(s'_i = 1 | s_{N_i}, a_i) = c 1[s_{i+1} = 1] + (1 - c) 1[a_i = 1],

    and the last agent sets ``s'_{n-1} = a_{n-1}``.  The left neighbour is in ``N_i`` (the
    graph is the line) but does not move ``s_i``.  Initial states are independent and
    uniform on ``{0, 1}``; reward ``r_i(s_i, a_i) = 1[s_i = 1]``, so ``Delta_i = 1`` for the
    linear utility.

    For ``beta = 0`` the influence of the agents outside ``N_i^kappa`` reaches ``s_i`` only
    through a chain of ``kappa + 1`` copies, so ``D_i(kappa)`` decays per hop like
    ``gamma c`` against the bound's ``gamma``; ``c = 0`` gives ``D_i(kappa) = 0`` for every
    ``kappa``, and ``D_i(kappa) = 0`` as soon as ``N_i^kappa`` reaches the right end
    (``proofs_notes/decay.md#coupling``).

    Raises:
        ModelError: ``n < 2``, or ``coupling`` not a number in ``[0, 1]``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ModelError(f"coupled-line needs n >= 2 agents, got n = {n!r}")
    if isinstance(coupling, bool) or not isinstance(coupling, (int, float, np.integer,
                                                                 np.floating)):
        raise ModelError(f"coupling = {coupling!r}, expected a number in [0, 1]")
    c = float(coupling)
    if not 0.0 <= c <= 1.0:
        raise ModelError(f"coupling = {coupling!r}, expected a number in [0, 1]")
    graph = Graph.line(int(n))
    kernels = []
    for i in range(n):
        nb = graph.neighbourhood(i)
        P = np.zeros((2,) * len(nb) + (2, 2))
        if i == n - 1:
            for a in (0, 1):
                P[..., a, a] = 1.0
        else:
            grid = np.indices((2,) * len(nb) + (2,))  # s_N digits, then a_i
            one = c * grid[nb.index(i + 1)] + (1.0 - c) * grid[-1]  # P(s'_i = 1)
            P[..., 1] = one
            P[..., 0] = 1.0 - one
        kernels.append(P)
    rho = tuple(np.full(2, 0.5) for _ in range(n))
    model = NetworkedMDP(graph, (2,) * n, (2,) * n, tuple(kernels), gamma, rho)
    reward = np.zeros((2, 2))
    reward[1, :] = 1.0
    return NetworkedInstance(
        "coupled-line", model, tuple(frozen(reward) for _ in range(n)), _COUPLED_LINE_SOURCE
    )


_CLIMBING_PAYOFF = ((11.0, -30.0, 0.0), (-30.0, 7.0, 6.0), (0.0, 0.0, 5.0))
"""Claus and Boutilier (1998), table 3: the climbing game's payoff, row player agent 0."""


def climbing(gamma: float = 0.9) -> CooperativeMarkovGame:
    """The climbing game (Claus and Boutilier 1998; SPEC section 7) as a one-state game.

    Two agents with three actions each; payoff ``[[11, -30, 0], [-30, 7, 6], [0, 0, 5]]``
    rescaled affinely to ``[0, 1]`` by ``r = (x + 30) / 41``; one state with a self-loop, so
    a stationary policy's value is ``E_pi[r] / (1 - gamma)``.  The optimum is the joint
    action ``(0, 0)`` with ``r = 1`` and ``J* = 1/(1 - gamma)``.
    """
    x = np.asarray(_CLIMBING_PAYOFF)
    r = ((x + 30.0) / 41.0)[None]
    P = np.ones((1, 3, 3, 1))
    return CooperativeMarkovGame(P, r, np.ones(1), gamma, "climbing")


RATIO_R = ((1.0, 0.5), (-0.5, 0.0))
"""Reward matrix of the von Neumann ratio game as used in Zhao et al. appendix E (SPEC §7)."""
RATIO_S = ((1.0, 1.0), (0.1, 0.1))
"""Stop probabilities of the same game (SPEC section 7)."""


def ratio(gamma: float = 0.9) -> CooperativeMarkovGame:
    """The von Neumann ratio game (SPEC section 7, after Zhao et al. appendix E) embedded
    exactly in a discounted cooperative game with rewards in ``[0, 1]``.

    States ``play`` (0) and ``stopped`` (1, absorbing).  In ``play`` the joint action
    ``(a^0, a^1)`` pays ``r = (2 R + 1)/3`` and stays in ``play`` with probability
    ``(1 - S)/gamma``; ``stopped`` pays ``u = 1/3`` forever.  Solving
    ``V = r + gamma((1-S)/gamma V + (1 - (1-S)/gamma) u/(1-gamma))`` gives, for any stationary
    product policy ``(x, y)``,

        V(play) = (2/3) x^T R y / x^T S y + (1/3) / (1 - gamma),

    an increasing affine image of the ratio value; so the optimum is ``(0, 0)`` with ratio 1
    (``proofs_notes/mappo-bound.md#ratio``).

    Note: the source's rewards lie in ``[-0.5, 1]`` and its value is undiscounted; the affine
    map and the stay probability ``(1-S)/gamma`` (a distribution only for
    ``gamma >= 1 - min S = 0.9``) make the game satisfy SPEC section 5's ``r in [0, 1]``,
    ``gamma < 1`` while preserving the ratio value's order exactly.
    """
    g = float(gamma)
    S = np.asarray(RATIO_S)
    if not (1 - S.min() <= g < 1):
        raise ModelError(
            f"gamma = {gamma!r}: the ratio game's stay probability (1 - S)/gamma needs "
            f"{1 - S.min():g} <= gamma < 1"
        )
    R = np.asarray(RATIO_R)
    stay = (1 - S) / g
    P = np.zeros((2, 2, 2, 2))
    P[0, :, :, 0] = stay
    P[0, :, :, 1] = 1 - stay
    P[1, :, :, 1] = 1.0
    r = np.empty((2, 2, 2))
    r[0] = (2 * R + 1) / 3
    r[1] = 1.0 / 3
    return CooperativeMarkovGame(P, r, np.array([1.0, 0.0]), g, "ratio")


RARE_STALL_REWARDS = (0.5, 0.7)
"""Mean rewards of the rare-stall game: the safe joint action, every other joint action."""
RARE_STALL_PROBABILITY = 0.06
"""Probability that a gamble stalls the rare-stall game."""


def rare_stall(gamma: float = 0.9, agents: int = 3, actions: int = 3) -> CooperativeMarkovGame:
    """A poor-coverage trap for offline MA-PPO (SPEC section 6), built for this project after
    the coverage examples of pessimistic offline RL (Jin, Yang and Wang 2021; Rashidinejad
    et al. 2021).

    States ``ready`` (0, initial) and ``stalled`` (1, absorbing, reward 0).  In ``ready`` the
    safe joint action ``(0, ..., 0)`` pays ``0.5`` and stays; every other joint action (a
    *gamble*) pays ``0.7`` but stalls with probability ``p = 0.06``.  Rewards are means:
    datasets draw ``Bernoulli(r)``.

    ``J* = 0.5 / (1 - gamma)`` (``5`` at the default ``gamma = 0.9``) by the safe action:
    with ``V*(ready) = 0.5/(1-gamma)`` and ``V*(stalled) = 0`` the Bellman optimality equation
    holds, since a gamble's ``Q*(ready, g) = 0.7 + gamma (1 - p) 0.5/(1-gamma)`` is below
    ``V*(ready)`` exactly when ``0.2 (1 - gamma) < 0.5 gamma p`` (``pessimism.md#rare-stall``;
    true for ``gamma >= 0.9``).  A behaviour policy that mostly plays the safe action sees
    each gamble a few dozen times; a gamble whose samples happen to show no stall looks
    better than the safe action, which pessimism corrects.
    """
    g = float(gamma)
    r_safe, r_gamble = RARE_STALL_REWARDS
    p = RARE_STALL_PROBABILITY
    if not (0 <= g < 1) or not (r_gamble - r_safe) * (1 - g) < r_safe * g * p:
        raise ModelError(
            f"gamma = {gamma!r}: the safe action is optimal in the rare-stall game only for "
            f"{(r_gamble - r_safe) / (r_gamble - r_safe + r_safe * p):.4f} < gamma < 1"
        )
    if agents < 1 or actions < 2:
        raise ModelError(
            f"agents = {agents!r}, actions = {actions!r}: expected >= 1 agent, >= 2 actions"
        )
    shape = (actions,) * agents
    safe = (0,) * agents
    P = np.zeros((2, *shape, 2))
    r = np.zeros((2, *shape))
    r[0] = r_gamble
    P[0, ..., 0] = 1 - p
    P[0, ..., 1] = p
    r[(0, *safe)] = r_safe
    P[(0, *safe)] = (1.0, 0.0)
    P[1, ..., 1] = 1.0
    return CooperativeMarkovGame(P, r, np.array([1.0, 0.0]), g, "rare-stall")


GAMES = {"climbing": climbing, "ratio": ratio, "rare-stall": rare_stall}
"""Named cooperative games (SPEC section 7)."""
