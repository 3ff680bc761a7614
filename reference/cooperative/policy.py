"""Sequential conditional policies and log-linear parametrisations (SPEC section 5).

A sequential policy factorises as ``pi(a|s) = prod_m pi^m(a^m | s, a^{0:m-1})`` with a fixed
agent order ``0, 1, ..., N-1``.  Agent ``m``'s *context* is ``c = (s, a^{0:m-1})``; its
conditional is stored as an array of shape ``(nS, |A^0|, ..., |A^m|)`` whose last axis is a
distribution.  Product (independent) policies are the special case whose conditionals do not
vary along the earlier agents' axes.

Log-linear policies (Zhao et al. 2023, eq. (2)):
``pi^m_theta(a^m | c) ∝ exp(phi^m(c, a^m) . theta^m)`` with ``||phi|| <= 1`` and ``theta^m`` in the
ball of radius ``R``.  Features are either *indicator* features (each context-action pair
switches on exactly one coordinate: one-hot tabular, or product features that ignore the
earlier agents' actions) or *dense* user-supplied arrays (random features included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from reference._arrays import (
    FloatArray,
    FrozenArrays,
    IntArray,
    as_float_array,
    check_distribution_rows,
    frozen,
)
from reference.cooperative.game import CooperativeMarkovGame
from reference.errors import PolicyError
from reference.tabular import softmax_last_axis

__all__ = [
    "ConditionalPolicy",
    "DenseFeatures",
    "FeatureMap",
    "IndicatorFeatures",
    "LogLinearPolicy",
    "project_ball",
]


@dataclass(frozen=True, eq=False)
class ConditionalPolicy(FrozenArrays):
    """``pi^m(a^m | s, a^{0:m-1})`` for ``m = 0..N-1``, validated against its game.

    Attributes:
        game: the cooperative Markov game.
        conditionals: ``conditionals[m]`` has shape ``(nS, |A^0|, ..., |A^m|)``; its last
            axis sums to 1.
    """

    game: CooperativeMarkovGame
    conditionals: tuple[FloatArray, ...]

    @classmethod
    def _trusted(
        cls, game: CooperativeMarkovGame, conditionals: tuple[FloatArray, ...]
    ) -> ConditionalPolicy:
        """Wrap freshly computed conditionals from this package's own softmax (row-stochastic
        by construction, right shapes, owned by nobody else) without re-validating or
        copying them; they are made read-only in place."""
        out = object.__new__(cls)
        for c in conditionals:
            c.setflags(write=False)
        object.__setattr__(out, "game", game)
        object.__setattr__(out, "conditionals", tuple(conditionals))
        return out

    def __post_init__(self) -> None:
        g = self.game
        conds = tuple(self.conditionals)
        if len(conds) != g.n_agents:
            raise PolicyError(
                f"conditionals has {len(conds)} entries, expected one per agent ({g.n_agents})"
            )
        out = []
        for m, c in enumerate(conds):
            shape = (g.n_states, *g.action_counts[: m + 1])
            arr = as_float_array(c, f"pi^{m}", shape=shape, error=PolicyError)
            check_distribution_rows(
                arr,
                f"pi^{m}",
                describe=lambda idx: f"s={idx[0]}, a^(0:m-1)={tuple(int(i) for i in idx[1:])}",
                error=PolicyError,
            )
            out.append(frozen(arr))
        object.__setattr__(self, "conditionals", tuple(out))

    @classmethod
    def uniform(cls, game: CooperativeMarkovGame) -> ConditionalPolicy:
        """``pi^m(.|c)`` uniform on ``A^m`` for every context (SPEC's ``pi_0``)."""
        conds = []
        for m in range(game.n_agents):
            shape = (game.n_states, *game.action_counts[: m + 1])
            conds.append(np.full(shape, 1.0 / game.action_counts[m]))
        return cls(game, tuple(conds))

    @classmethod
    def from_product(
        cls, game: CooperativeMarkovGame, marginals: tuple[npt.ArrayLike, ...]
    ) -> ConditionalPolicy:
        """A product policy from per-agent ``(nS, |A^m|)`` tables, broadcast over contexts."""
        if len(marginals) != game.n_agents:
            raise PolicyError(
                f"marginals has {len(marginals)} entries, expected {game.n_agents}"
            )
        conds = []
        for m, pm in enumerate(marginals):
            k = game.action_counts[m]
            arr = as_float_array(pm, f"pi^{m}", shape=(game.n_states, k), error=PolicyError)
            shape = (game.n_states, *game.action_counts[:m], k)
            conds.append(np.broadcast_to(arr.reshape((game.n_states,) + (1,) * m + (k,)), shape))
        return cls(game, tuple(conds))

    @classmethod
    def from_joint(cls, game: CooperativeMarkovGame, joint: npt.ArrayLike) -> ConditionalPolicy:
        """The sequential factorisation of a joint policy ``(nS, |A|)`` (flat joint actions,
        agent 0 most significant): ``pi^m(a^m | s, a^{0:m-1}) = pi(a^{0:m}|s) / pi(a^{0:m-1}|s)``
        from its marginals, uniform on contexts the joint policy never reaches.  Any joint
        policy has one, so sequential policies lose nothing (``ma-pdl.md``)."""
        flat = as_float_array(
            joint, "joint", shape=(game.n_states, game.n_joint_actions), error=PolicyError
        )
        check_distribution_rows(flat, "joint", error=PolicyError)
        full = flat.reshape((game.n_states, *game.action_counts))
        conds = []
        for m in range(game.n_agents):
            marg = full.sum(axis=tuple(range(m + 2, game.n_agents + 1)))
            denom = marg.sum(axis=-1, keepdims=True)
            k = game.action_counts[m]
            safe = np.where(denom > 0, denom, 1.0)
            conds.append(np.where(denom > 0, marg / safe, 1.0 / k))
        return cls(game, tuple(conds))

    def prefix(self, m: int) -> FloatArray:
        """``pi^{0:m-1}(a^{0:m-1} | s)``, shape ``(nS, |A^0|, ..., |A^{m-1}|)``; ones for ``m = 0``.

        Built forward: ``prefix(m+1) = prefix(m)[..., None] * pi^m``.
        """
        out: FloatArray = np.ones(self.game.n_states)
        for j in range(m):
            out = out[..., None] * self.conditionals[j]
        return out

    def joint(self) -> FloatArray:
        """``pi(a|s) = prod_m pi^m``, shape ``(nS, |A^0|, ..., |A^{N-1}|)``."""
        return self.prefix(self.game.n_agents)

    def joint_matrix(self) -> FloatArray:
        """The joint policy as an ``(nS, |A|)`` matrix for :class:`TabularMDP` routines."""
        return self.joint().reshape(self.game.n_states, self.game.n_joint_actions)


def project_ball(theta: FloatArray, radius: float) -> FloatArray:
    """Euclidean projection onto ``{||theta||_2 <= radius}``: ``theta * min(1, R/||theta||)``."""
    if not radius > 0:
        raise PolicyError(f"radius = {radius!r}, expected R > 0")
    norm = float(np.linalg.norm(theta))
    if norm <= radius:
        return theta
    out: FloatArray = theta * (radius / norm)
    return out


class FeatureMap(Protocol):
    """``phi^m(s, a^{0:m-1}, a^m) in R^{d_m}`` with ``||phi|| <= 1``, for every agent."""

    @property
    def dims(self) -> tuple[int, ...]:
        """``(d_0, ..., d_{N-1})``."""
        ...

    def logits(self, m: int, theta: FloatArray) -> FloatArray:
        """``phi^m . theta`` on every context and action, shape ``(nS, |A^0|, ..., |A^m|)``."""
        ...

    def rows(self, m: int, flat: IntArray) -> FloatArray:
        """Feature vectors at flat context-action indices, shape ``(len(flat), d_m)``."""
        ...

    def gram(self, m: int, weights: FloatArray) -> FloatArray:
        """``sum_{c,a} w(c,a) phi phi^T``, shape ``(d_m, d_m)``; ``weights`` is shaped like
        :meth:`logits`."""
        ...

    def pullback(self, m: int, values: FloatArray) -> FloatArray:
        """``sum_{c,a} values(c,a) phi^m(c,a)``, shape ``(d_m,)``."""
        ...


def _context_shape(game: CooperativeMarkovGame, m: int) -> tuple[int, ...]:
    return (game.n_states, *game.action_counts[: m + 1])


@dataclass(frozen=True, eq=False)
class IndicatorFeatures(FrozenArrays):
    """Features that switch on one coordinate per context-action pair (``||phi|| = 1``).

    Attributes:
        game: the game.
        index: ``index[m]`` int64, shaped like agent ``m``'s context-action table, values in
            ``[0, d_m)``: ``phi^m(c, a) = e_{index[m][c, a]}``.
        dims: ``(d_0, ..., d_{N-1})``.
        kind: ``"one-hot"`` or ``"product"`` (or a user label).
    """

    game: CooperativeMarkovGame
    index: tuple[IntArray, ...]
    dims: tuple[int, ...]
    kind: str = "indicator"

    def __post_init__(self) -> None:
        g = self.game
        if len(self.index) != g.n_agents or len(self.dims) != g.n_agents:
            raise PolicyError(f"indicator features need one index and dim per agent ({g.n_agents})")
        for m, (idx, d) in enumerate(zip(self.index, self.dims, strict=True)):
            if tuple(idx.shape) != _context_shape(g, m):
                raise PolicyError(
                    f"index[{m}] has shape {idx.shape}, expected {_context_shape(g, m)}"
                )
            if idx.min() < 0 or idx.max() >= d:
                raise PolicyError(f"index[{m}] has entries outside [0, d_{m} = {d})")

    @classmethod
    def one_hot(cls, game: CooperativeMarkovGame) -> IndicatorFeatures:
        """Tabular features: one coordinate per ``(s, a^{0:m-1}, a^m)``."""
        index, dims = [], []
        for m in range(game.n_agents):
            shape = _context_shape(game, m)
            index.append(np.arange(math.prod(shape), dtype=np.int64).reshape(shape))
            dims.append(math.prod(shape))
        return cls(game, tuple(index), tuple(dims), "one-hot")

    @classmethod
    def product(cls, game: CooperativeMarkovGame) -> IndicatorFeatures:
        """Product features: one coordinate per ``(s, a^m)``, ignoring ``a^{0:m-1}``, so the
        policy class is the independent (product) policies."""
        index, dims = [], []
        for m in range(game.n_agents):
            k = game.action_counts[m]
            base = np.arange(game.n_states * k, dtype=np.int64).reshape(
                (game.n_states,) + (1,) * m + (k,)
            )
            index.append(np.broadcast_to(base, _context_shape(game, m)).copy())
            dims.append(game.n_states * k)
        return cls(game, tuple(index), tuple(dims), "product")

    def logits(self, m: int, theta: FloatArray) -> FloatArray:
        out: FloatArray = theta[self.index[m]]
        return out

    def rows(self, m: int, flat: IntArray) -> FloatArray:
        out = np.zeros((flat.shape[0], self.dims[m]))
        out[np.arange(flat.shape[0]), self.index[m].reshape(-1)[flat]] = 1.0
        return out

    def gram(self, m: int, weights: FloatArray) -> FloatArray:
        diag = np.bincount(
            self.index[m].reshape(-1), weights=weights.reshape(-1), minlength=self.dims[m]
        )
        return np.diag(diag)

    def gram_diagonal(self, m: int, weights: FloatArray) -> FloatArray:
        """The Gram matrix is diagonal for indicator features; its diagonal, shape ``(d_m,)``."""
        out: FloatArray = np.bincount(
            self.index[m].reshape(-1), weights=weights.reshape(-1), minlength=self.dims[m]
        ).astype(np.float64)
        return out

    def pullback(self, m: int, values: FloatArray) -> FloatArray:
        return self.gram_diagonal(m, values)


@dataclass(frozen=True, eq=False)
class DenseFeatures(FrozenArrays):
    """User-supplied (or random) features, ``arrays[m]`` of shape
    ``(nS, |A^0|, ..., |A^m|, d_m)`` with every ``||phi^m(c, a)||_2 <= 1``."""

    game: CooperativeMarkovGame
    arrays: tuple[FloatArray, ...]
    kind: str = "dense"

    def __post_init__(self) -> None:
        g = self.game
        if len(self.arrays) != g.n_agents:
            raise PolicyError(f"features has {len(self.arrays)} arrays, expected {g.n_agents}")
        out = []
        for m, a in enumerate(self.arrays):
            arr = as_float_array(a, f"phi^{m}", error=PolicyError)
            want = _context_shape(g, m)
            if arr.ndim != len(want) + 1 or tuple(arr.shape[:-1]) != want or arr.shape[-1] < 1:
                raise PolicyError(f"phi^{m} has shape {arr.shape}, expected {(*want, 'd')}")
            norms = np.linalg.norm(arr, axis=-1)
            bad = norms > 1 + 4 * arr.shape[-1] * np.finfo(np.float64).eps
            if bad.any():
                idx = tuple(int(i) for i in np.argwhere(bad)[0])
                raise PolicyError(
                    f"||phi^{m}[s={idx[0]}, a={idx[1:]}]|| = {float(norms[idx])!r}, expected <= 1"
                )
            out.append(frozen(arr))
        object.__setattr__(self, "arrays", tuple(out))

    @classmethod
    def random(
        cls, game: CooperativeMarkovGame, dims: tuple[int, ...], rng: np.random.Generator
    ) -> DenseFeatures:
        """Gaussian directions scaled by a uniform radius in ``[1/2, 1]``, so ``||phi|| <= 1``."""
        if len(dims) != game.n_agents or min(dims) < 1:
            raise PolicyError(f"dims = {dims!r}, expected one positive dimension per agent")
        arrays = []
        for m, d in enumerate(dims):
            shape = _context_shape(game, m)
            x = rng.standard_normal((*shape, d))
            x /= np.linalg.norm(x, axis=-1, keepdims=True)
            x *= rng.uniform(0.5, 1.0, size=(*shape, 1))
            arrays.append(x)
        return cls(game, tuple(arrays), "random")

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(int(a.shape[-1]) for a in self.arrays)

    def logits(self, m: int, theta: FloatArray) -> FloatArray:
        out: FloatArray = self.arrays[m] @ theta
        return out

    def rows(self, m: int, flat: IntArray) -> FloatArray:
        out: FloatArray = self.arrays[m].reshape(-1, self.dims[m])[flat]
        return out

    def gram(self, m: int, weights: FloatArray) -> FloatArray:
        phi = self.arrays[m].reshape(-1, self.dims[m])
        out: FloatArray = phi.T @ (weights.reshape(-1, 1) * phi)
        return out

    def pullback(self, m: int, values: FloatArray) -> FloatArray:
        phi = self.arrays[m].reshape(-1, self.dims[m])
        out: FloatArray = phi.T @ values.reshape(-1)
        return out


@dataclass(frozen=True, eq=False)
class LogLinearPolicy(FrozenArrays):
    """``pi^m_theta(a^m|c) ∝ exp(phi^m(c, a^m) . theta^m)`` (Zhao et al. 2023, eq. (2)).

    Attributes:
        features: the feature map.
        thetas: ``thetas[m]`` has shape ``(d_m,)``.
        radius: ``R``; every ``||theta^m||_2 <= R`` (``inf`` for an unconstrained class).
    """

    features: IndicatorFeatures | DenseFeatures
    thetas: tuple[FloatArray, ...]
    radius: float = math.inf

    def __post_init__(self) -> None:
        dims = self.features.dims
        if len(self.thetas) != len(dims):
            raise PolicyError(f"thetas has {len(self.thetas)} entries, expected {len(dims)}")
        if not self.radius > 0:
            raise PolicyError(f"radius = {self.radius!r}, expected R > 0")
        out = []
        for m, (t, d) in enumerate(zip(self.thetas, dims, strict=True)):
            arr = as_float_array(t, f"theta^{m}", shape=(d,), error=PolicyError)
            norm = float(np.linalg.norm(arr))
            if norm > self.radius * (1 + 4 * d * np.finfo(np.float64).eps):
                raise PolicyError(f"||theta^{m}|| = {norm!r} exceeds the radius R = {self.radius}")
            out.append(frozen(arr))
        object.__setattr__(self, "thetas", tuple(out))

    @classmethod
    def zeros(
        cls, features: IndicatorFeatures | DenseFeatures, radius: float = math.inf
    ) -> LogLinearPolicy:
        """``theta = 0``: the uniform policy."""
        return cls(features, tuple(np.zeros(d) for d in features.dims), radius)

    def conditional(self) -> ConditionalPolicy:
        """The induced :class:`ConditionalPolicy` (softmax of the logits)."""
        game = self.features.game
        return ConditionalPolicy(
            game,
            tuple(
                softmax_last_axis(self.features.logits(m, t)) for m, t in enumerate(self.thetas)
            ),
        )
