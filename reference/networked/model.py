"""The networked MDP of Ying et al. (SPEC section 2) and its joint state space.

Agent ``i`` has local states ``S_i`` and actions ``A_i``.  Transitions factorise with
local coupling::

    P(s' | s, a) = prod_i P_i(s'_i | s_{N_i}, a_i)

``P_i`` is stored with shape ``(|S_{N_i}|, |A_i|, |S_i|)``: its first axis indexes the
states of the closed neighbourhood ``N_i`` in increasing agent order, mixed radix
with the *lowest-numbered agent most significant* (C order).  Joint states and joint
actions use the same convention over all agents (agent 0 most significant), see
:class:`JointSpace`.  See ``proofs_notes/occupancy-and-flow.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from math import prod
from typing import Any

import numpy as np
import numpy.typing as npt

from reference._arrays import (
    FloatArray,
    FrozenArrays,
    IntArray,
    as_float_array,
    check_distribution_rows,
    check_gamma,
    check_rng,
    frozen,
    streamed_empty,
)
from reference.errors import ModelError
from reference.memory import check_memory
from reference.networked.graph import Graph
from reference.tabular import TabularMDP

__all__ = ["JointSpace", "NetworkedMDP"]


@dataclass(frozen=True)
class JointSpace:
    """The product space ``X_0 x ... x X_{n-1}`` indexed mixed radix, agent 0 most significant.

    Attributes:
        sizes: ``(|X_0|, ..., |X_{n-1}|)``.
    """

    sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        for i, size in enumerate(self.sizes):
            if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
                raise ModelError(f"sizes[{i}] = {size!r}, expected a positive integer")
        object.__setattr__(self, "sizes", tuple(int(x) for x in self.sizes))

    @property
    def size(self) -> int:
        """Number of joint elements ``prod_i |X_i|``."""
        return prod(self.sizes)

    @cached_property
    def digits(self) -> IntArray:
        """``(size, n)`` int64: row ``s`` holds the local components ``(x_0, ..., x_{n-1})``."""
        check_memory(8 * self.size * len(self.sizes), "the joint index table")
        grids = np.indices(self.sizes, dtype=np.int64).reshape(len(self.sizes), -1).T
        out = np.ascontiguousarray(grids)
        out.setflags(write=False)
        return out

    def sub_index(self, agents: Sequence[int]) -> IntArray:
        """``(size,)`` int64: the mixed-radix index of ``x_agents`` for every joint element.

        ``agents`` must be increasing; the result indexes ``prod_{j in agents} |X_j|``
        values with the lowest-numbered agent most significant.  Built by :meth:`lift` of
        ``arange``, so it needs ``size`` integers and not the ``(size, n)`` :attr:`digits`.
        """
        local = np.arange(self.sub_size(self._check_agents(agents)), dtype=np.int64)
        out: IntArray = self.lift(local, agents)
        return out

    def _check_agents(self, agents: Sequence[int]) -> tuple[int, ...]:
        out = tuple(int(j) for j in agents)
        for pos, j in enumerate(out):
            if not 0 <= j < len(self.sizes):
                raise ModelError(f"agents[{pos}] = {j} outside 0..{len(self.sizes) - 1}")
            if pos and j <= out[pos - 1]:
                raise ModelError(f"agents = {out} is not strictly increasing at position {pos}")
        return out

    def _check_sets(self, agent_sets: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
        """:meth:`_check_agents` of every set, a bad one named by its position in
        ``agent_sets``."""
        sets = []
        for k, agents in enumerate(agent_sets):
            try:
                sets.append(self._check_agents(agents))
            except ModelError as err:
                raise ModelError(f"agent_sets[{k}]: {err}") from None
            except (TypeError, ValueError):
                raise ModelError(
                    f"agent_sets[{k}] = {agents!r}, expected a sequence of agent indices"
                ) from None
        return sets

    def _tensor_shape(self, agents: Sequence[int]) -> tuple[int, ...]:
        """Broadcast shape of a table over ``x_agents``: ``|X_j|`` on agent ``j``'s axis if
        ``j`` is in ``agents``, else 1; axes of size-1 components are dropped throughout."""
        members = set(agents)
        return tuple(
            (size if j in members else 1) for j, size in enumerate(self.sizes) if size > 1
        )

    def lift(self, table: npt.NDArray[Any], agents: Sequence[int]) -> npt.NDArray[Any]:
        """``out[x, ...] = table[x_agents(x), ...]``: a table over ``x_agents`` read at every
        joint element.

        Args:
            table: ``(prod_{j in agents} |X_j|, ...)`` indexed mixed radix over ``agents``
                (increasing, lowest agent most significant), any trailing axes.
            agents: increasing agent indices.

        Returns:
            ``(size, ...)``, a fresh array (a broadcast, no index table; ``O(size)`` work;
            ``proofs_notes/matrix-free.md#joint-tables``).
        """
        agents = self._check_agents(agents)
        rest = tuple(table.shape[1:])
        if table.shape[:1] != (self.sub_size(agents),):
            raise ModelError(
                f"table has shape {table.shape}, expected ({self.sub_size(agents)}, ...) over "
                f"agents {agents}"
            )
        full = tuple(s for s in self.sizes if s > 1)
        out = np.empty(full + rest, dtype=table.dtype)
        out[...] = table.reshape(self._tensor_shape(agents) + rest)
        return out.reshape((self.size, *rest))

    def add_lift(
        self, out: npt.NDArray[Any], table: npt.NDArray[Any], agents: Sequence[int]
    ) -> None:
        """``out[x] += table[x_agents(x)]`` in place: :meth:`lift` added into a joint vector
        ``out`` of shape ``(size,)`` without forming the lifted vector (a broadcast add)."""
        agents = self._check_agents(agents)
        if table.shape != (self.sub_size(agents),):
            raise ModelError(
                f"table has shape {table.shape}, expected ({self.sub_size(agents)},) over "
                f"agents {agents}"
            )
        if out.shape != (self.size,):
            raise ModelError(f"out has shape {out.shape}, expected ({self.size},)")
        full = tuple(s for s in self.sizes if s > 1)
        view = out.reshape(full)
        view += table.reshape(self._tensor_shape(agents))

    def marginal(self, values: FloatArray, agents: Sequence[int]) -> FloatArray:
        """``out[y, ...] = sum_{x: x_agents(x) = y} values[x, ...]``: the grouped sum over joint
        elements that agree on ``agents`` (the adjoint of :meth:`lift`).

        Args:
            values: ``(size, ...)`` a function of the joint element, any trailing axes.
            agents: increasing agent indices.

        Returns:
            ``(prod_{j in agents} |X_j|, ...)`` indexed mixed radix over ``agents``; a reshape
            and one ``sum`` over the other agents' axes (no index table;
            ``proofs_notes/matrix-free.md#joint-tables``).
        """
        agents = self._check_agents(agents)
        rest = tuple(values.shape[1:])
        if values.shape[:1] != (self.size,):
            raise ModelError(f"values has shape {values.shape}, expected ({self.size}, ...)")
        full = tuple(s for s in self.sizes if s > 1)
        keep = self._tensor_shape(agents)
        # adjacent axes of the same kind (kept or summed) merged into one: fewer, longer axes
        # for numpy's reduction (same sums, in the same order within each merged axis)
        shape: list[int] = []
        kept: list[bool] = []
        for s, k in zip(full, keep, strict=True):
            if kept and kept[-1] == (s == k):
                shape[-1] *= s
            else:
                shape.append(s)
                kept.append(s == k)
        drop = tuple(axis for axis, flag in enumerate(kept) if not flag)
        out: FloatArray
        if not rest and drop and len(shape) <= 52 and values.dtype.kind in "fc":
            # one vector: numpy's einsum sums it in one pass whatever the axis layout, where
            # ndarray.sum over an outer axis with a short inner one takes several (floats
            # only: einsum or-s booleans and sums integers in their own width, where sum
            # counts and widens them)
            letters = [chr(ord("a") + k) if k < 26 else chr(ord("A") + k - 26)
                       for k in range(len(shape))]
            kept_letters = "".join(c for c, flag in zip(letters, kept, strict=True) if flag)
            out = np.einsum(f"{''.join(letters)}->{kept_letters}", values.reshape(shape))
        else:
            out = values.reshape((*shape, *rest)).sum(axis=drop)
        return out.reshape((self.sub_size(agents), *rest))

    def marginals(
        self, values: FloatArray, agent_sets: Sequence[Sequence[int]]
    ) -> tuple[FloatArray, ...]:
        """:meth:`marginal` of ``values`` on every set of ``agent_sets``, in one pass over
        ``values`` per block rather than per set.

        The sets are gathered, in their order, into blocks ``U`` whose tables stay small
        (:func:`_blocks`); each block's marginal is one pass over the joint vector, and each
        set's marginal is summed from its block's table:
        ``m_K(y) = sum_{z in X_U: z_K = y} m_U(z)`` for ``K`` within ``U``.  The same terms
        summed in another grouping: on a ring of ``n`` binary agents with radius-1
        observations, two passes instead of ``n`` (``proofs_notes/matrix-free.md#joint-tables``).

        Args:
            values: ``(size, ...)`` a function of the joint element, any trailing axes.
            agent_sets: increasing agent indices per set.

        Returns:
            one ``(prod_{j in K} |X_j|, ...)`` array per set ``K``, as :meth:`marginal`.

        Raises:
            ModelError: a set that is not increasing agent indices, named ``agent_sets[k]``;
                ``values`` not of ``size`` rows.
        """
        sets = self._check_sets(agent_sets)
        if values.shape[:1] != (self.size,):
            raise ModelError(f"values has shape {values.shape}, expected ({self.size}, ...)")
        out: list[FloatArray | None] = [None] * len(sets)
        for union, members in _blocks(self.sizes, tuple(sets), _block_entries(self.size)):
            table = self.marginal(values, union)
            for k in members:
                out[k] = _table_marginal(self.sizes, table, union, sets[k])
        return tuple(t for t in out if t is not None)

    def add_lifts(
        self,
        out: npt.NDArray[Any],
        tables: Sequence[npt.NDArray[Any]],
        agent_sets: Sequence[Sequence[int]],
    ) -> None:
        """``out[x] += sum_k tables[k][x_{K_k}(x)]`` in place: :meth:`add_lift` of every table,
        in one pass over ``out`` per block rather than per table.

        The sets are gathered into blocks ``U`` as in :meth:`marginals`; the tables of one
        block are first added up on the block's own table (``T_U(z) = sum_k T_k(z_{K_k})``,
        small), which is then added into ``out`` by one broadcast; a block of one set (a set
        whose own table exceeds the cap always is one) adds its table as it stands
        (``proofs_notes/matrix-free.md#joint-tables``).

        Args:
            out: ``(size,)`` the joint vector added into.
            tables: ``(prod_{j in K_k} |X_j|,)`` per set, indexed mixed radix over ``K_k``.
            agent_sets: increasing agent indices per table.

        Raises:
            ModelError: a set that is not increasing agent indices (``agent_sets[k]``), a
                table of the wrong shape (``tables[k]``), or ``out`` not ``(size,)``.
        """
        sets = self._check_sets(agent_sets)
        if len(tables) != len(sets):
            raise ModelError(f"{len(tables)} tables for {len(sets)} agent sets")
        for k, (table, agents) in enumerate(zip(tables, sets, strict=True)):
            if table.shape != (self.sub_size(agents),):
                raise ModelError(
                    f"tables[{k}] has shape {table.shape}, expected ({self.sub_size(agents)},) "
                    f"over agents {agents}"
                )
        if out.shape != (self.size,):
            raise ModelError(f"out has shape {out.shape}, expected ({self.size},)")
        for union, members in _blocks(self.sizes, tuple(sets), _block_entries(self.size)):
            if len(members) == 1:  # alone (a set beyond the cap always is): added as it stands
                self.add_lift(out, tables[members[0]], sets[members[0]])
                continue
            shape = tuple(self.sizes[j] for j in union)
            total = np.zeros(shape, dtype=np.result_type(out, *(tables[k] for k in members)))
            for k in members:
                total += tables[k].reshape(
                    tuple(self.sizes[j] if j in sets[k] else 1 for j in union)
                )
            self.add_lift(out, total.reshape(-1), union)

    def sub_size(self, agents: Sequence[int]) -> int:
        """``prod_{j in agents} |X_j|``."""
        return prod(self.sizes[j] for j in agents)

    def encode(self, components: Sequence[int]) -> int:
        """Joint index of the tuple ``(x_0, ..., x_{n-1})``."""
        if len(components) != len(self.sizes):
            raise ModelError(f"{len(components)} components, expected {len(self.sizes)}")
        out = 0
        for i, (x, size) in enumerate(zip(components, self.sizes, strict=True)):
            if not 0 <= int(x) < size:
                raise ModelError(f"component {i} = {x!r} outside 0..{size - 1}")
            out = out * size + int(x)
        return out


_BLOCK_ENTRIES = 1 << 16
"""Most entries of a block's table in :meth:`JointSpace.marginals` and
:meth:`JointSpace.add_lifts` (512 KiB of floats: within a core's L2 cache)."""


def _block_entries(size: int) -> int:
    """Block table cap for a joint space of ``size`` elements: :data:`_BLOCK_ENTRIES`, and at
    most ``size / 16``, so a block's table stays small beside the joint vector."""
    return max(1, min(_BLOCK_ENTRIES, size // 16))


def _blocks(
    sizes: tuple[int, ...], sets: tuple[tuple[int, ...], ...], cap: int
) -> list[tuple[tuple[int, ...], list[int]]]:
    """``sets`` gathered, in their order, into blocks ``(U, members)``: a set joins the open
    block while the product of ``|X_j|`` over the union stays at most ``cap``, else it opens
    a new block (alone, whatever its own size).  ``U`` is increasing."""
    blocks: list[tuple[set[int], list[int]]] = []
    for k, agents in enumerate(sets):
        if blocks:
            union = blocks[-1][0] | set(agents)
            if prod(sizes[j] for j in union) <= cap:
                blocks[-1][0].update(agents)
                blocks[-1][1].append(k)
                continue
        blocks.append((set(agents), [k]))
    return [(tuple(sorted(union)), members) for union, members in blocks]


def _table_marginal(
    sizes: Sequence[int], table: FloatArray, union: Sequence[int], agents: Sequence[int]
) -> FloatArray:
    """``out[y, ...] = sum_{z: z_agents = y} table[z, ...]`` for a table over ``x_union``
    (mixed radix, lowest agent most significant) and ``agents`` within ``union``."""
    rest = tuple(table.shape[1:])
    shape = tuple(sizes[j] for j in union)
    drop = tuple(pos for pos, j in enumerate(union) if j not in agents)
    summed: FloatArray = table.reshape((*shape, *rest)).sum(axis=drop) if drop else table
    return summed.reshape((prod(sizes[j] for j in agents), *rest))


def _sub_tuple_renderer(sizes: Sequence[int]) -> Any:
    def render(idx: tuple[int, ...]) -> str:
        (flat, *rest) = idx
        digits = np.unravel_index(flat, tuple(sizes)) if sizes else ()
        head = f"s_N=({', '.join(str(int(d)) for d in digits)}{',' if len(digits) == 1 else ''})"
        return ", ".join([head] + [f"a={r}" for r in rest])

    return render


@dataclass(frozen=True, eq=False)
class NetworkedMDP(FrozenArrays):
    """A networked MDP with local kernels ``P_i(s'_i | s_{N_i}, a_i)`` (SPEC section 2).

    Attributes:
        graph: the interaction graph; ``N_i = graph.neighbourhood(i, 1)``.
        n_states: ``(|S_0|, ..., |S_{n-1}|)``.
        n_actions: ``(|A_0|, ..., |A_{n-1}|)``.
        kernels: ``P_i`` with shape ``(|S_{N_i}|, |A_i|, |S_i|)``; the constructor also
            accepts the unflattened shape ``(|S_j| for j in N_i) + (|A_i|, |S_i|)``.
        gamma: discount in [0, 1).
        rho: initial distribution, either a sequence of ``n`` local vectors ``rho_i``
            (shape ``(|S_i|,)``; the joint one is their product) or one joint vector of
            shape ``(prod |S_i|,)``.
    """

    graph: Graph
    n_states: tuple[int, ...]
    n_actions: tuple[int, ...]
    kernels: tuple[FloatArray, ...]
    gamma: float
    rho: tuple[FloatArray, ...] | FloatArray
    neighbourhoods: tuple[tuple[int, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = self.graph.n
        for name in ("n_states", "n_actions"):
            sizes = tuple(getattr(self, name))
            if len(sizes) != n:
                raise ModelError(f"{name} has {len(sizes)} entries, expected n = {n}")
            for i, size in enumerate(sizes):
                if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
                    raise ModelError(f"{name}[{i}] = {size!r}, expected a positive integer")
            object.__setattr__(self, name, tuple(int(x) for x in sizes))
        object.__setattr__(self, "gamma", check_gamma(self.gamma))
        nbhds = self.graph.neighbourhoods(1)
        object.__setattr__(self, "neighbourhoods", nbhds)
        if len(self.kernels) != n:
            raise ModelError(f"kernels has {len(self.kernels)} entries, expected n = {n}")
        kernels = []
        for i, raw in enumerate(self.kernels):
            nb_sizes = [self.n_states[j] for j in nbhds[i]]
            flat_shape = (prod(nb_sizes), self.n_actions[i], self.n_states[i])
            arr = as_float_array(raw, f"P_{i}")
            if arr.shape == tuple(nb_sizes) + flat_shape[1:]:
                arr = arr.reshape(flat_shape)
            arr = as_float_array(arr, f"P_{i}", shape=flat_shape)
            check_distribution_rows(arr, f"P_{i}", describe=_sub_tuple_renderer(nb_sizes))
            kernels.append(frozen(arr))
        object.__setattr__(self, "kernels", tuple(kernels))
        object.__setattr__(self, "rho", self._validated_rho(self.rho))

    def _validated_rho(self, rho: Any) -> tuple[FloatArray, ...] | FloatArray:
        n = self.graph.n
        if isinstance(rho, np.ndarray):
            arr = as_float_array(rho, "rho", shape=(prod(self.n_states),))
            check_distribution_rows(arr[None, :], "rho", describe=lambda idx: "joint")
            return frozen(arr)
        if not isinstance(rho, Sequence) or len(rho) != n:
            raise ModelError(
                "rho must be a joint numpy vector or a sequence of n = "
                f"{n} local vectors, got {type(rho).__name__}"
            )
        out = []
        for i, rho_i in enumerate(rho):
            arr = as_float_array(rho_i, f"rho_{i}", shape=(self.n_states[i],))
            check_distribution_rows(arr[None, :], f"rho_{i}", describe=lambda idx: "local")
            out.append(frozen(arr))
        return tuple(out)

    # ------------------------------------------------------------------ structure
    @property
    def n(self) -> int:
        """Number of agents."""
        return self.graph.n

    @cached_property
    def states(self) -> JointSpace:
        """The joint state space ``S = S_0 x ... x S_{n-1}``."""
        return JointSpace(self.n_states)

    @cached_property
    def derived(self) -> dict[Any, Any]:
        """Tables that depend only on the model, built once by the routines that read them
        (the dense backend's gathered kernels and index tables, backend predictions).

        A cache: dropped on pickling and rebuilt on first use; nothing stored here may
        depend on a policy's parameters.
        """
        return {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("derived", None)
        return state

    @classmethod
    def random(
        cls,
        graph: Graph,
        n_states: Sequence[int],
        n_actions: Sequence[int],
        rng: np.random.Generator,
        *,
        gamma: float = 0.9,
        rho: str = "dirichlet",
    ) -> NetworkedMDP:
        """A random instance on ``graph``: every kernel row ``P_i(. | s_{N_i}, a_i)`` drawn
        from Dirichlet(1, ..., 1), agent by agent (one ``rng.dirichlet`` call each, rows in the
        kernel's own order), then the local initial distributions, Dirichlet(1, ..., 1) draws
        (``rho="dirichlet"``) or uniform (``rho="uniform"``, nothing drawn).  The same ``rng``
        state gives the same instance.

        Raises:
            ModelError: ``rng`` not a :class:`numpy.random.Generator`, ``rho`` not one of the
                two names, a count that is not a positive integer, or counts that do not
                match ``graph``.
        """
        rng = check_rng(rng)
        if rho not in ("dirichlet", "uniform"):
            raise ModelError(f"rho = {rho!r}, expected 'dirichlet' or 'uniform'")
        states = tuple(n_states)
        actions = tuple(n_actions)
        for name, counts in (("n_states", states), ("n_actions", actions)):
            for i, k in enumerate(counts):
                if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
                    raise ModelError(f"{name}[{i}] = {k!r}, expected a positive integer")
        if len(states) != graph.n or len(actions) != graph.n:
            raise ModelError(
                f"{len(states)} state counts and {len(actions)} action counts for "
                f"{graph.n} agents"
            )
        kernels = tuple(
            rng.dirichlet(
                np.ones(states[i]),
                size=(prod(states[j] for j in graph.neighbourhood(i)), actions[i]),
            )
            for i in range(graph.n)
        )
        initial = tuple(
            rng.dirichlet(np.ones(k)) if rho == "dirichlet" else np.ones(k) / k for k in states
        )
        return cls(graph, states, actions, kernels, gamma, initial)

    @cached_property
    def actions(self) -> JointSpace:
        """The joint action space ``A = A_0 x ... x A_{n-1}``."""
        return JointSpace(self.n_actions)

    @property
    def is_product_initial(self) -> bool:
        """Whether ``rho`` is given as a product of local distributions."""
        return isinstance(self.rho, tuple)

    def joint_rho(self) -> FloatArray:
        """``(|S|,)`` the joint initial distribution (outer product of the ``rho_i``)."""
        if isinstance(self.rho, np.ndarray):
            return self.rho
        check_memory(8 * self.states.size, "the joint initial distribution")
        out = np.ones(1)
        for rho_i in self.rho[:-1]:
            out = np.multiply.outer(out, rho_i).reshape(-1)
        # the last (largest) product straight into a streamed joint vector
        last = self.rho[-1]
        joint = streamed_empty(out.size * last.size)
        np.multiply.outer(out, last, out=joint.reshape(out.size, last.size))
        return joint

    def neighbourhood_index(self, i: int) -> IntArray:
        """``(|S|,)``: for every joint state, the row of ``P_i`` it uses (index of ``s_{N_i}``)."""
        return self.states.sub_index(self.neighbourhoods[i])

    def local_kernel_factors(self, i: int) -> FloatArray:
        """``K_i[s, a_i, s'_i] = P_i(s'_i | s_{N_i}, a_i)`` gathered over joint states ``s``.

        Shape ``(|S|, |A_i|, |S_i|)``.
        """
        return self.kernels[i][self.neighbourhood_index(i)]

    def joint_kernel(self, memory_limit: float | None = None) -> FloatArray:
        """``(|S|, |A|, |S|)`` joint kernel ``P(s'|s,a) = prod_i P_i(s'_i | s_{N_i}, a_i)``.

        Built by outer products over agents (agent 0 most significant on both the
        action and next-state axes).  The predicted ``|S|^2 |A|`` floats are checked
        against the memory limit before allocation (small ``n`` only).
        """
        nS, nA = self.states.size, self.actions.size
        check_memory(8 * 2 * nS * nA * nS, f"the joint kernel ({nS} x {nA} x {nS})", memory_limit)
        out = np.ones((nS, 1, 1))
        for i in range(self.n):
            k = self.local_kernel_factors(i)
            p, q = out.shape[1], out.shape[2]
            out = (out[:, :, None, :, None] * k[:, None, :, None, :]).reshape(
                nS, p * k.shape[1], q * k.shape[2]
            )
        return out

    def to_tabular(
        self, local_rewards: Sequence[FloatArray], memory_limit: float | None = None
    ) -> TabularMDP:
        """The joint :class:`TabularMDP` with team reward ``R(s,a) = (1/n) sum_i r_i(s_i, a_i)``.

        Args:
            local_rewards: ``r_i`` with shape ``(|S_i|, |A_i|)`` per agent.
            memory_limit: override of the memory limit (bytes).
        """
        if len(local_rewards) != self.n:
            raise ModelError(f"{len(local_rewards)} local rewards given, expected n = {self.n}")
        rewards = [
            as_float_array(r, f"r_{i}", shape=(self.n_states[i], self.n_actions[i]))
            for i, r in enumerate(local_rewards)
        ]
        P = self.joint_kernel(memory_limit)
        sd, ad = self.states.digits, self.actions.digits
        R = np.zeros((self.states.size, self.actions.size))
        for i, r in enumerate(rewards):
            R += r[sd[:, i][:, None], ad[:, i][None, :]]
        return TabularMDP(P, R / self.n, self.joint_rho(), self.gamma)
