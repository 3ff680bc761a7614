"""Named instances, each with its source (SPEC section 7)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from reference._arrays import FloatArray, frozen
from reference.errors import ModelError
from reference.networked.graph import Graph
from reference.networked.model import NetworkedMDP
from reference.networked.utilities import EntropyUtility, LinearUtility, Utility

__all__ = ["INSTANCES", "NetworkedInstance", "line_message"]

UtilityKind = Literal["linear", "entropy"]

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
    """

    name: str
    model: NetworkedMDP
    rewards: tuple[FloatArray, ...]
    source: str

    def utilities(self, kind: UtilityKind = "linear") -> tuple[Utility, ...]:
        """One utility per agent: ``"linear"`` (``<r_i, lam_i>``) or ``"entropy"``."""
        m = self.model
        if kind == "linear":
            return tuple(LinearUtility(r, m.gamma) for r in self.rewards)
        if kind == "entropy":
            return tuple(
                EntropyUtility((m.n_states[i], m.n_actions[i]), m.gamma, ENTROPY_EPS)
                for i in range(m.n)
            )
        raise ModelError(f"utility kind = {kind!r}, expected 'linear' or 'entropy'")


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


INSTANCES = {"line-message": line_message}
"""Registry of networked instances by name: ``name -> constructor(n, gamma)``."""
