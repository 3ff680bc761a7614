"""Localized softmax policies ``pi(a|s) = prod_i pi_i(a_i | o_i)`` (SPEC section 2).

Agent ``i`` observes ``o_i = s_{N_i^beta}``, the local states of the agents within hop
distance ``beta`` (the observation radius), indexed mixed radix in increasing agent
order with the lowest-numbered agent most significant.  Its tabular softmax
parameter is ``theta_i[o_i, a_i]``.  The score of the joint policy with respect to
``theta_i`` is the score of factor ``i`` alone::

    d/dtheta_i[o, b] log pi(a|s) = 1[o_i(s) = o] (1[a_i = b] - pi_i(b | o)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import pairwise

import numpy as np

from reference._arrays import FloatArray, FrozenArrays, IntArray, as_float_array, frozen
from reference.errors import PolicyError
from reference.memory import check_memory
from reference.networked.model import NetworkedMDP
from reference.tabular import softmax, softmax_last_axis

__all__ = ["LocalizedSoftmaxPolicy"]


_Structure = tuple[
    tuple[tuple[int, ...], ...], tuple[tuple[int, int], ...], tuple[slice, ...] | None
]


def _structure(model: NetworkedMDP, beta: int) -> _Structure:
    """``(N_i^beta)_i``, the shapes ``(|O_i|, |A_i|)`` of the parameters at radius ``beta``
    and, when every agent has the same number of actions, each agent's rows in the stacked
    ``(sum_i |O_i|, |A_i|)`` parameters (else ``None``): a function of the model and ``beta``
    only, cached in ``model.derived``."""
    key = ("policy-structure", beta)
    cached: _Structure | None = model.derived.get(key)
    if cached is None:
        observed = model.graph.neighbourhoods(beta)
        shapes = tuple(
            (model.states.sub_size(observed[i]), model.n_actions[i]) for i in range(model.n)
        )
        rows = [0, *np.cumsum([r for r, _ in shapes]).tolist()]
        blocks = (
            tuple(slice(lo, hi) for lo, hi in pairwise(rows))
            if len(set(model.n_actions)) == 1 else None
        )
        cached = model.derived[key] = (observed, shapes, blocks)
    return cached


def _stacked_softmax(
    theta: Sequence[object], shapes: Sequence[tuple[int, int]], blocks: Sequence[slice]
) -> tuple[tuple[FloatArray, ...], tuple[FloatArray, ...]] | None:
    """Read-only ``(theta_i)_i`` and ``(softmax(theta_i))_i`` as the row ``blocks`` of two
    stacked arrays (agents of equal action counts), by one copy, one finiteness check and
    one row-wise softmax for all agents (each row's softmax is the same computation as agent
    by agent); ``None`` when any ``theta_i`` is not a finite float array of its shape, so
    that the caller's agent-by-agent validation names the entry."""
    try:
        arrays = [np.asarray(t, dtype=np.float64) for t in theta]
    except (TypeError, ValueError):
        return None
    for arr, shape in zip(arrays, shapes, strict=True):
        if arr.shape != shape:
            return None
    params = np.concatenate(arrays)
    if not np.isfinite(params).all():
        return None
    probs = softmax_last_axis(params)
    params.setflags(write=False)
    probs.setflags(write=False)
    return tuple(params[b] for b in blocks), tuple(probs[b] for b in blocks)


@dataclass(frozen=True, eq=False)
class LocalizedSoftmaxPolicy(FrozenArrays):
    """A localized tabular softmax policy on a :class:`NetworkedMDP`.

    Attributes:
        model: the networked MDP whose graph defines the observations.
        beta: observation radius (non-negative integer).
        theta: one ``(|O_i|, |A_i|)`` array per agent, ``|O_i| = prod_{j in N_i^beta} |S_j|``.
        observed: ``N_i^beta`` per agent (derived).
        probs: ``pi_i[o, a]`` per agent, shape ``(|O_i|, |A_i|)`` (derived, read-only).
    """

    model: NetworkedMDP = field(repr=False)
    beta: int
    theta: tuple[FloatArray, ...]
    observed: tuple[tuple[int, ...], ...] = field(init=False, repr=False)
    probs: tuple[FloatArray, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        beta = self.beta
        if isinstance(beta, bool) or not isinstance(beta, (int, np.integer)) or beta < 0:
            raise PolicyError(f"beta = {beta!r}, expected a non-negative integer radius")
        object.__setattr__(self, "beta", int(beta))
        model = self.model
        observed, shapes, blocks = _structure(model, int(beta))
        object.__setattr__(self, "observed", observed)
        if len(self.theta) != model.n:
            raise PolicyError(f"theta has {len(self.theta)} entries, expected n = {model.n}")
        stacked = None if blocks is None else _stacked_softmax(self.theta, shapes, blocks)
        if stacked is not None:  # every agent valid, equal action counts: one softmax
            object.__setattr__(self, "theta", stacked[0])
            object.__setattr__(self, "probs", stacked[1])
            return
        thetas, probs = [], []
        for i, raw in enumerate(self.theta):
            arr = frozen(as_float_array(raw, f"theta_{i}", shape=shapes[i], error=PolicyError))
            thetas.append(arr)
            probs.append(frozen(softmax(arr)))
        object.__setattr__(self, "theta", tuple(thetas))
        object.__setattr__(self, "probs", tuple(probs))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def uniform(cls, model: NetworkedMDP, beta: int = 0) -> LocalizedSoftmaxPolicy:
        """``theta = 0``: every agent uniform over its actions."""
        if isinstance(beta, bool) or not isinstance(beta, (int, np.integer)) or beta < 0:
            raise PolicyError(f"beta = {beta!r}, expected a non-negative integer radius")
        observed = model.graph.neighbourhoods(int(beta))
        theta = tuple(
            np.zeros((model.states.sub_size(observed[i]), model.n_actions[i]))
            for i in range(model.n)
        )
        return cls(model, int(beta), theta)

    @classmethod
    def random(
        cls, model: NetworkedMDP, beta: int, rng: np.random.Generator, scale: float = 1.0
    ) -> LocalizedSoftmaxPolicy:
        """``theta_i`` with i.i.d. ``Normal(0, scale^2)`` entries drawn from ``rng``."""
        base = cls.uniform(model, beta)
        return base.with_theta([scale * rng.standard_normal(t.shape) for t in base.theta])

    def with_theta(self, theta: Sequence[FloatArray]) -> LocalizedSoftmaxPolicy:
        """The same structure with new parameters."""
        return LocalizedSoftmaxPolicy(self.model, self.beta, tuple(theta))

    # ------------------------------------------------------------------ flat parameters
    @property
    def n_parameters(self) -> int:
        """Total number of entries ``sum_i |O_i| |A_i|``."""
        return sum(t.size for t in self.theta)

    def to_vector(self) -> FloatArray:
        """All ``theta_i`` flattened (C order) and concatenated in agent order."""
        return np.concatenate([t.reshape(-1) for t in self.theta])

    def split(self, vector: FloatArray) -> tuple[FloatArray, ...]:
        """Inverse of :meth:`to_vector` for any vector of per-parameter values."""
        vector = np.asarray(vector, dtype=np.float64)
        if vector.shape != (self.n_parameters,):
            raise PolicyError(
                f"parameter vector has shape {vector.shape}, expected ({self.n_parameters},)"
            )
        out, start = [], 0
        for t in self.theta:
            out.append(vector[start : start + t.size].reshape(t.shape))
            start += t.size
        return tuple(out)

    def from_vector(self, vector: FloatArray) -> LocalizedSoftmaxPolicy:
        """The policy with parameters ``split(vector)``."""
        return self.with_theta(self.split(vector))

    # ------------------------------------------------------------------ joint-space views
    def observation_index(self, i: int) -> IntArray:
        """``(|S|,)``: ``o_i(s)`` for every joint state ``s``."""
        return self._observation_indices[i]

    @cached_property
    def _observation_indices(self) -> tuple[IntArray, ...]:
        return tuple(self.model.states.sub_index(obs) for obs in self.observed)

    def local_action_probs(self, i: int) -> FloatArray:
        """``(|S|, |A_i|)``: ``pi_i(a_i | o_i(s))`` for every joint state.

        A fresh array lifted from the ``(|O_i|, |A_i|)`` table (:meth:`JointSpace.lift`);
        no joint index table is built or cached.
        """
        out: FloatArray = self.model.states.lift(self.probs[i], self.observed[i])
        return out

    def joint_matrix(self, memory_limit: float | None = None) -> FloatArray:
        """``(|S|, |A|)`` joint policy ``pi(a|s) = prod_i pi_i(a_i|o_i(s))`` (small ``n`` only)."""
        nS, nA = self.model.states.size, self.model.actions.size
        check_memory(8 * 2 * nS * nA, "the joint policy matrix", memory_limit)
        out = np.ones((nS, 1))
        for i in range(self.model.n):
            out = (out[:, :, None] * self.local_action_probs(i)[:, None, :]).reshape(nS, -1)
        return out
