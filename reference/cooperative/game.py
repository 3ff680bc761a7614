"""Cooperative Markov games with one shared reward (SPEC section 5, Zhao et al. 2023).

Axis convention: agents are indexed ``m = 0..N-1`` in code (SPEC's agents ``1..N``);
``P[s, a^0, ..., a^{N-1}, s']`` and ``r[s, a^0, ..., a^{N-1}]``.  The joint action
``a = (a^0, ..., a^{N-1})`` is flattened in mixed radix with agent 0 most significant
(C order), so ``P.reshape(nS, |A|, nS)`` is the joint-action :class:`TabularMDP`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from reference._arrays import (
    FloatArray,
    FrozenArrays,
    as_float_array,
    check_distribution_rows,
    check_gamma,
    check_rng,
    frozen,
)
from reference.errors import ModelError
from reference.tabular import OptimalValues, TabularMDP, value_iteration

__all__ = ["CooperativeMarkovGame", "random_game"]


@dataclass(frozen=True, eq=False)
class CooperativeMarkovGame(FrozenArrays):
    """``(N, S, A^0 x ... x A^{N-1}, P, r, gamma, rho)`` with a shared reward in ``[0, 1]``.

    Attributes:
        P: ``(nS, |A^0|, ..., |A^{N-1}|, nS)`` kernel ``P[s, a^0..a^{N-1}, s']``; rows sum to 1.
        r: ``(nS, |A^0|, ..., |A^{N-1}|)`` shared reward, every entry in ``[0, 1]``.
        rho: ``(nS,)`` initial distribution.
        gamma: discount in ``[0, 1)``.
        name: a label used in reports.

    The reward range matters: the bound of ``proofs_notes/mappo-bound.md`` uses
    ``Q in [0, 1/(1-gamma)]``.
    """

    P: FloatArray
    r: FloatArray
    rho: FloatArray
    gamma: float
    name: str = "game"

    def __post_init__(self) -> None:
        P = as_float_array(self.P, "P")
        if P.ndim < 3:
            raise ModelError(
                f"P has shape {P.shape}, expected (nS, |A^0|, ..., |A^(N-1)|, nS) with N >= 1"
            )
        n_s = P.shape[0]
        if P.shape[-1] != n_s or min(P.shape) < 1:
            raise ModelError(
                f"P has shape {P.shape}: first and last axes must both be the state count, "
                "and every axis non-empty"
            )
        check_distribution_rows(
            P, "P", describe=lambda idx: f"s={idx[0]}, a={tuple(int(i) for i in idx[1:])}"
        )
        r = as_float_array(self.r, "r", shape=P.shape[:-1])
        if (r < 0).any() or (r > 1).any():
            idx = tuple(int(i) for i in np.argwhere((r < 0) | (r > 1))[0])
            raise ModelError(
                f"r[s={idx[0]}, a={idx[1:]}] = {float(r[idx])!r}, expected a reward in [0, 1]"
            )
        rho = as_float_array(self.rho, "rho", shape=(n_s,))
        check_distribution_rows(rho[None, :], "rho", describe=lambda idx: "initial")
        object.__setattr__(self, "P", frozen(P))
        object.__setattr__(self, "r", frozen(r))
        object.__setattr__(self, "rho", frozen(rho))
        object.__setattr__(self, "gamma", check_gamma(self.gamma))

    @property
    def n_states(self) -> int:
        """``nS``."""
        return int(self.P.shape[0])

    @property
    def n_agents(self) -> int:
        """``N``."""
        return int(self.P.ndim - 2)

    @property
    def action_counts(self) -> tuple[int, ...]:
        """``(|A^0|, ..., |A^{N-1}|)``."""
        return tuple(int(k) for k in self.P.shape[1:-1])

    @property
    def n_joint_actions(self) -> int:
        """``|A| = prod_m |A^m|``."""
        return math.prod(self.action_counts)

    @property
    def log_action_count(self) -> float:
        """``log|A| = sum_m log|A^m|`` (SPEC section 5)."""
        return float(sum(math.log(k) for k in self.action_counts))

    @cached_property
    def tabular(self) -> TabularMDP:
        """The joint-action MDP: ``P`` reshaped to ``(nS, |A|, nS)``, ``r`` to ``(nS, |A|)``."""
        n_s, n_a = self.n_states, self.n_joint_actions
        return TabularMDP(
            self.P.reshape(n_s, n_a, n_s), self.r.reshape(n_s, n_a), self.rho, self.gamma
        )

    def optimal(self, tol: float = 1e-10) -> OptimalValues:
        """``V*``, ``Q*``, ``J*`` by certified value iteration on :attr:`tabular`."""
        return value_iteration(self.tabular, tol=tol)

    @classmethod
    def from_joint(
        cls,
        P: npt.ArrayLike,
        r: npt.ArrayLike,
        action_counts: tuple[int, ...],
        rho: npt.ArrayLike,
        gamma: float,
        name: str = "game",
    ) -> CooperativeMarkovGame:
        """Build from a joint-action kernel ``P[s, a, s']`` and reward ``r[s, a]`` whose
        action axis is the mixed-radix flattening of ``action_counts`` (agent 0 first)."""
        counts = tuple(int(k) for k in action_counts)
        if not counts or min(counts) < 1:
            raise ModelError(f"action_counts = {action_counts!r}, expected positive counts")
        P_arr = as_float_array(P, "P", ndim=3)
        n_s = P_arr.shape[0]
        if P_arr.shape[1] != math.prod(counts):
            raise ModelError(
                f"P has {P_arr.shape[1]} joint actions, expected prod{counts} = {math.prod(counts)}"
            )
        r_arr = as_float_array(r, "r", shape=P_arr.shape[:2])
        return cls(
            P_arr.reshape((n_s, *counts, P_arr.shape[2])),
            r_arr.reshape((n_s, *counts)),
            np.asarray(rho, dtype=np.float64),
            gamma,
            name,
        )


def random_game(
    rng: np.random.Generator,
    n_states: int,
    action_counts: tuple[int, ...],
    gamma: float,
    concentration: float = 1.0,
    name: str = "random",
) -> CooperativeMarkovGame:
    """A random game: Dirichlet(``concentration``) kernel rows and initial distribution,
    rewards uniform on ``[0, 1]`` (SPEC section 7, "random instances")."""
    rng = check_rng(rng)
    if n_states < 1:
        raise ModelError(f"n_states = {n_states!r}, expected >= 1")
    counts = tuple(int(k) for k in action_counts)
    if not counts or min(counts) < 1:
        raise ModelError(f"action_counts = {action_counts!r}, expected positive counts")
    if not concentration > 0:
        raise ModelError(f"concentration = {concentration!r}, expected > 0")
    shape = (n_states, *counts)
    P = rng.dirichlet(np.full(n_states, concentration), size=shape)
    r = rng.random(shape)
    rho = rng.dirichlet(np.full(n_states, concentration))
    return CooperativeMarkovGame(P, r, rho, gamma, name)
