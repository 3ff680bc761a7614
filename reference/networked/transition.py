"""The joint transition operator under a localized policy, behind one interface.

Under a localized policy the joint kernel factorises over agents::

    P_pi(s' | s) = prod_i M_i[s, s'_i]
    M_i[s, s'_i] = sum_{a_i} pi_i(a_i|o_i(s)) P_i(s'_i|s_{N_i}, a_i)

Everything the exact oracles need is one of five operations on this kernel:

* ``apply(v)``            ``(P_pi v)(s) = sum_{s'} P_pi(s'|s) v(s')``
* ``apply_transpose(u)``  ``(P_pi^T u)(s') = sum_s u(s) P_pi(s'|s)``
* ``apply_agent(i, v)``   ``(s, b) -> sum_{s'} P^{(i,b)}(s'|s) v(s')`` where ``P^{(i,b)}``
  is the kernel when agent ``i`` plays ``b`` and every other agent follows its policy
* ``apply_agent_transpose(i, u)``  ``s' -> sum_{s,b} u(s, b) P^{(i,b)}(s'|s)``
* ``solve_values(r)`` / ``solve_occupancy(rho)``: ``(I - gamma P_pi)^{-1} r`` and
  ``(I - gamma P_pi^T)^{-1} rho`` with a certified error bound.

:class:`TransitionOperator` is that interface; :class:`DenseOperator` implements it with
the dense ``|S| x |S|`` matrix and one LU factorisation
(:class:`~reference.networked.matrix_free.MatrixFreeOperator` is the backend that never forms
it, and :func:`~reference.networked.backends.transition_operator` chooses between the two).
The dense per-agent operations use
sequential contractions over next-state axes (:func:`contract_next_state`,
:func:`expand_next_state`) whose cost is ``O(|S|^2)`` per call and which never form a
joint ``(s, a, s')`` array.  Derivations: ``proofs_notes/occupancy-and-flow.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from math import prod
from typing import Literal, Protocol, cast, runtime_checkable

import numpy as np
import scipy.linalg

from reference._arrays import FloatArray, IntArray, frozen, read_only
from reference.errors import ModelError, SolverError
from reference.memory import check_memory
from reference.memory import memory_limit as resolve_limit
from reference.networked.model import NetworkedMDP
from reference.networked.policy import LocalizedSoftmaxPolicy

__all__ = [
    "BLOCK_ROUTE_FLOATS",
    "FUSED_HALVES_FLOATS",
    "FUSED_JOINT_FLOATS",
    "JOINT_ROUTE_FLOATS",
    "AgentBlock",
    "DenseLayout",
    "DenseOperator",
    "GroupLayout",
    "HalvesRoute",
    "JointRoute",
    "LinearSolve",
    "TransitionOperator",
    "contract_next_state",
    "dense_layout",
    "dense_memory",
    "expand_next_state",
    "fused_route",
    "group_sum",
]

_EPS = float(np.finfo(np.float64).eps)
# LAPACK's LU factorisation and solve, called directly: the dense backend solves small
# systems, where the argument checks of scipy.linalg.lu_factor / lu_solve cost as much as
# the factorisation itself.
_getrf, _getrs = scipy.linalg.get_lapack_funcs(("getrf", "getrs"), dtype=np.float64)
_CHUNK_FLOATS = 1 << 23  # 64 MiB of float64 per contraction intermediate
JOINT_ROUTE_FLOATS = 1 << 15
"""Largest joint kernel ``(|S|, |A|, |S|)`` (in floats) that :class:`DenseLayout` keeps for
the block route of :class:`DenseOperator` with one block, all agents (agents of equal local
sizes): below it, reading ``P_pi`` and every agent-marginal kernel off the joint kernel
takes fewer array operations than two blocks or the Kronecker build and the leave-one-out
sweep (measured faster up to 5 binary agents)."""

FUSED_JOINT_FLOATS = 1 << 14
"""Largest joint kernel ``(|S|, |A|, |S|)`` (in floats) of a model (agents of equal local
sizes) whose exact gradient :func:`reference.networked.exact.solve` computes on the joint
route (:class:`JointRoute`; up to 4 binary agents, measured faster than the halves route
there)."""

FUSED_HALVES_FLOATS = 1 << 14
"""Largest block-diagonal kernel ``(|S|, |A_H1| + |A_H2|, |S_H1| + |S_H2|)`` (in floats) of a
model (agents of equal local sizes, at least two) whose exact gradient
:func:`reference.networked.exact.solve` computes on the halves route (:class:`HalvesRoute`)
when it has no joint route (5 and 6 binary agents; at 7 and 8 it measured no faster than
the operator's block route)."""

BLOCK_ROUTE_FLOATS = 1 << 17
"""Largest total size ``sum_H |S| |A_H| |S_H|`` (in floats) of the two block kernels of the
block route with two blocks (the first and second half of the agents); above it the dense
backend takes the Kronecker build and the leave-one-out sweep (measured: two blocks faster
for 6 to 8 binary agents)."""


@dataclass(frozen=True)
class LinearSolve:
    """Solution of ``(I - gamma P_pi) x = b`` or ``(I - gamma P_pi^T) x = b``.

    Attributes:
        x: ``(|S|,)`` or ``(|S|, m)`` solution.
        residual: max over columns of the residual norm (``inf`` for values, ``l1`` for
            occupancies); NaN when not recorded.
        error_bound: certified ``||x - x_true|| <= (residual + rounding) / (1 - gamma rho)``
            where ``rho`` bounds the row sums of the operator as evaluated in floating point:
            ``||(I - gamma P~)^{-1}||_inf`` and ``||(I - gamma P~^T)^{-1}||_1`` are at most
            ``1 / (1 - gamma rho)``.  The dense backend takes ``rho = 1`` (its LU residual
            rounding term, ``|S|`` roundings per entry, dominates the row-sum excess of a
            few ``eps``); the matrix-free backend certifies its own ``rho``
            (``proofs_notes/matrix-free.md#certificate``).
        norm: ``"inf"`` or ``"l1"``.
        iterations: operator applications an iterative solve used (0 for a direct solve).
    """

    x: FloatArray
    residual: float
    error_bound: float
    norm: Literal["inf", "l1"]
    iterations: int = 0


@runtime_checkable
class TransitionOperator(Protocol):
    """What the exact oracles need of ``P_pi`` (see the module docstring)."""

    model: NetworkedMDP
    policy: LocalizedSoftmaxPolicy
    backend: str

    def apply(self, v: FloatArray) -> FloatArray: ...

    def apply_transpose(self, u: FloatArray) -> FloatArray: ...

    def apply_agent(self, i: int, v: FloatArray) -> FloatArray: ...

    def apply_agent_transpose(self, i: int, u: FloatArray) -> FloatArray: ...

    def solve_values(self, r: FloatArray) -> LinearSolve: ...

    def solve_occupancy(self, rho: FloatArray) -> LinearSolve: ...


# ---------------------------------------------------------------------- contractions
def _chunk_rows(n_rows: int, floats_per_row: int) -> int:
    return max(1, min(n_rows, _CHUNK_FLOATS // max(floats_per_row, 1)))


def contract_next_state(
    factors: Sequence[FloatArray], v: FloatArray, next_sizes: Sequence[int]
) -> FloatArray:
    """``out[s, x] = sum_{s'} prod_j F_j[s, x_j, s'_j] v[s']`` by sequential contraction.

    Args:
        factors: ``F_j`` of shape ``(|S|, X_j, |S'_j|)``, one per agent.
        v: ``(prod_j |S'_j|,)`` a function of the next joint state.
        next_sizes: ``(|S'_0|, ..., |S'_{n-1}|)``.

    Returns:
        ``(|S|, prod_j X_j)`` with ``x = (x_0, ..., x_{n-1})`` mixed radix, agent 0 most
        significant.  Each step contracts one next-state axis, so the cost is
        ``sum_j |S| (prod_{l<=j} X_l) (prod_{l>=j} |S'_l|)`` and no joint kernel is formed.
    """
    n_rows = factors[0].shape[0]
    xs = [f.shape[1] for f in factors]
    widest = max(prod(xs[: j + 1]) * prod(next_sizes[j:]) for j in range(len(factors)))
    step = _chunk_rows(n_rows, widest)
    out = np.empty((n_rows, prod(xs)))
    for lo in range(0, n_rows, step):
        hi = min(lo + step, n_rows)
        rest = prod(next_sizes[1:])
        # t[s, x, r] = sum_a F_0[s, x, a] v[a, r]
        t: FloatArray = np.matmul(factors[0][lo:hi], v.reshape(next_sizes[0], rest))
        width = xs[0]
        for j in range(1, len(factors)):
            rest //= next_sizes[j]
            t = t.reshape(hi - lo, width, next_sizes[j], rest)
            # out[s, p, x, r] = sum_a F[s, x, a] t[s, p, a, r], batched over (s, p)
            t = np.matmul(factors[j][lo:hi, None, :, :], t)
            width *= xs[j]
        out[lo:hi] = t.reshape(hi - lo, width)
    return out


def expand_next_state(
    factors: Sequence[FloatArray], u: FloatArray, *, sum_rows: bool
) -> FloatArray:
    """``out[s, s'] = sum_x u[s, x] prod_j F_j[s, x_j, s'_j]`` (summed over ``s`` if asked).

    Args:
        factors: ``F_j`` of shape ``(|S|, X_j, |S'_j|)``.
        u: ``(|S|, prod_j X_j)`` weights, ``x`` mixed radix with agent 0 most significant.
        sum_rows: return ``sum_s out[s, :]`` (shape ``(prod |S'_j|,)``) instead of the
            ``(|S|, prod |S'_j|)`` array.
    """
    n_rows = factors[0].shape[0]
    xs = [f.shape[1] for f in factors]
    nexts = [f.shape[2] for f in factors]
    widest = max(prod(nexts[: j + 1]) * prod(xs[j:]) for j in range(len(factors)))
    step = _chunk_rows(n_rows, widest)
    total = np.zeros(prod(nexts)) if sum_rows else np.empty((n_rows, prod(nexts)))
    for lo in range(0, n_rows, step):
        hi = min(lo + step, n_rows)
        width, rest = 1, prod(xs)
        t: FloatArray = u[lo:hi].reshape(hi - lo, 1, rest)
        for j, f in enumerate(factors):
            rest //= xs[j]
            t = t.reshape(hi - lo, width, xs[j], rest)
            # out[s, p, b, r] = sum_x F[s, x, b] t[s, p, x, r], batched over (s, p)
            t = np.matmul(np.swapaxes(f[lo:hi], 1, 2)[:, None, :, :], t)
            width *= nexts[j]
        block = t.reshape(hi - lo, width)
        if sum_rows:
            total += block.sum(axis=0)
        else:
            total[lo:hi] = block
    return total


# ---------------------------------------------------------------------- dense backend
def dense_memory(model: NetworkedMDP) -> int:
    """Predicted peak bytes of :class:`DenseOperator` and an exact gradient with it.

    The ``|S| x |S|`` matrix and its LU factors, the partial Kronecker products
    ``prod_{j>=k} M_j`` kept for :meth:`DenseOperator.apply_agents` (``sum_{0<k<n} |S|
    prod_{j>=k} |S_j|`` floats), the gathered local kernels, policy rows and factors of
    :class:`DenseLayout` (``|S| sum_i (|A_i| |S_i| + 2 |A_i| + |S_i| + 3)``), contraction
    intermediates of at most ``min(chunk, |S|^2 max|A_i|)`` floats (two alive at a time) and
    ``n + 4`` vectors of ``|S|`` (the per-agent values and the occupancy); on the block route
    (:data:`JOINT_ROUTE_FLOATS`, :data:`BLOCK_ROUTE_FLOATS`) also each block's kernel, joint
    policy and action tables, ``(|S| + 1) |A_H| (|S_H| + sum_i |A_i|)`` floats per block,
    and when the model has a :class:`JointRoute`, its tables and the three ``(|S|, |A|)``
    arrays of a call on it.
    """
    nS = model.states.size
    intermediate = min(_CHUNK_FLOATS, nS * nS * max(model.n_actions))
    suffixes = sum(nS * prod(model.n_states[k:]) for k in range(1, model.n))
    local = nS * sum(
        a * x + 2 * a + x + 3 for a, x in zip(model.n_actions, model.n_states, strict=True)
    )
    for start, stop in _agent_blocks(model):  # the block route's tables and policies
        actions = prod(model.n_actions[start:stop])
        local += (nS + 1) * actions * (prod(model.n_states[start:stop]) + sum(model.n_actions))
    fused = _fused_route_floats(model)
    if fused:
        local += fused + 3 * nS * prod(model.n_actions)
    return 8 * (2 * nS * nS + suffixes + local + 2 * intermediate + nS * (model.n + 4))


@dataclass(frozen=True)
class DenseLayout:
    """What the dense backend reads of a model at one observation radius, built once.

    Depends on the model and ``beta`` only (never on ``theta``), so it is cached on the
    model (:attr:`NetworkedMDP.derived`) and shared by every policy of that radius.

    Attributes:
        kernels: ``K_i[s, a_i, s'_i] = P_i(s'_i | s_{N_i}, a_i)``, shape
            ``(|S|, |A_i|, |S_i|)`` per agent (:meth:`NetworkedMDP.local_kernel_factors`).
        own_index: ``(|S|,)`` agent ``i``'s local state ``s_i(s)`` per agent.
        obs_index: ``(|S|,)`` agent ``i``'s observation ``o_i(s)`` per agent.
        own_groups: grouped-sum layout onto ``s_i`` per agent (:func:`group_sum`).
        obs_groups: grouped-sum layout onto ``o_i`` per agent.
        rho: ``(|S|,)`` the joint initial distribution.
        stacked: whether every agent has the same ``|S_i|`` and ``|A_i|``; then the per-agent
            tables are also held as one array each, so that the per-call work is a fixed
            number of array operations rather than a few per agent:
        kernel_stack: ``(|S|, n, |A_i|, |S_i|)``, ``kernels[i]`` is ``kernel_stack[:, i]``
            (``None`` unless ``stacked``).
        own_stack: ``(|S|, n)`` int, column ``i`` is ``own_index[i]``.
        own_onehot: ``(n, |S_i|, |S|)``, ``1[s_i(s) = x]``.
        obs_flat: ``(|S|, n)`` int, ``o_i(s)`` offset by ``sum_{j<i} |O_j|``: the row of
            agent ``i``'s observation in the agents' stacked ``(sum_j |O_j|, |A_i|)`` tables.
        obs_offsets: ``(sum_{j<i} |O_j|)_{i <= n}``.
        own_flat: ``(|S|, n)`` int, ``i |S_i| + s_i(s)``: the row of ``r_i(s_i(s), .)`` in
            the agents' stacked ``(n |S_i|, |A_i|)`` tables.
        obs_action_flat: ``(|S| n |A_i|,)`` int, ``obs_flat[s, i] |A_i| + b`` in the order of
            an ``(|S|, n, |A_i|)`` array: the entry of ``theta_i[o_i(s), b]`` in the agents'
            stacked parameters, so that one ``bincount`` sums a joint ``(|S|, n, |A_i|)``
            table onto every agent's observation table.
        blocks: the :class:`AgentBlock` tables of the block route of :class:`DenseOperator`
            (small stacked models: one block of all agents, or two halves; see
            :data:`JOINT_ROUTE_FLOATS` and :data:`BLOCK_ROUTE_FLOATS`); empty otherwise.
    """

    kernels: tuple[FloatArray, ...]
    own_index: tuple[IntArray, ...]
    obs_index: tuple[IntArray, ...]
    own_groups: tuple[GroupLayout, ...]
    obs_groups: tuple[GroupLayout, ...]
    rho: FloatArray
    stacked: bool = False
    kernel_stack: FloatArray | None = None
    own_stack: IntArray | None = None
    own_onehot: FloatArray | None = None
    obs_flat: IntArray | None = None
    obs_offsets: tuple[int, ...] = ()
    own_flat: IntArray | None = None
    obs_action_flat: IntArray | None = None
    blocks: tuple[AgentBlock, ...] = ()


@dataclass(frozen=True)
class AgentBlock:
    """The agents ``start <= j < stop`` as one block of the dense block route.

    Attributes:
        start, stop: the block's agents (consecutive; joint indices of the block are mixed
            radix over them, the lowest agent most significant, as everywhere).
        kernel: ``(|S|, |A_H|, |S_H|)``, ``P_H(x | s, a_H) = prod_{j in H} P_j(x_j | s_{N_j},
            a_j)``, the block's joint kernel read at every joint state.
        action_index: ``(|H|, |A_H|)`` int, ``j |A_j| + a_j(a_H)``: the entry of
            ``pi_j(a_j | o_j(s))`` in a row of the stacked ``(|S|, n |A_j|)`` policy rows.
        action_onehot: ``(|A_H|, |H| |A_j|)``, ``1[a_j(a_H) = b]`` in column
            ``(j - start) |A_j| + b``.
    """

    start: int
    stop: int
    kernel: FloatArray
    action_index: IntArray
    action_onehot: FloatArray


def _agent_blocks(model: NetworkedMDP) -> tuple[tuple[int, int], ...]:
    """The blocks of the block route for ``model``: ``((0, n),)`` when the joint kernel has at
    most :data:`JOINT_ROUTE_FLOATS` entries, the two halves when their kernels have at most
    :data:`BLOCK_ROUTE_FLOATS` together, else none (also when local sizes differ)."""
    n, nS = model.n, model.states.size
    if len(set(model.n_states)) != 1 or len(set(model.n_actions)) != 1:
        return ()
    if nS * prod(model.n_actions) * nS <= JOINT_ROUTE_FLOATS:
        return ((0, n),)
    if n < 2:
        return ()
    half = (n + 1) // 2
    halves = ((0, half), (half, n))
    size = sum(
        nS * prod(model.n_actions[a:b]) * prod(model.n_states[a:b]) for a, b in halves
    )
    return halves if size <= BLOCK_ROUTE_FLOATS else ()


def _agent_block(
    model: NetworkedMDP, kernel_stack: FloatArray, start: int, stop: int
) -> AgentBlock:
    nS, n_actions = model.states.size, model.n_actions[0]
    kernel = np.ones((nS, 1, 1))
    for j in range(start, stop):  # outer products over the block, first agent most significant
        k = kernel_stack[:, j]
        a, x = kernel.shape[1], kernel.shape[2]
        kernel = (kernel[:, :, None, :, None] * k[:, None, :, None, :]).reshape(
            nS, a * k.shape[1], x * k.shape[2]
        )
    size = stop - start
    digits = np.indices((n_actions,) * size).reshape(size, -1)  # (|H|, |A_H|)
    action_index = digits + n_actions * np.arange(start, stop)[:, None]
    onehot = np.zeros((digits.shape[1], size * n_actions))
    for t in range(size):
        onehot[np.arange(digits.shape[1]), t * n_actions + digits[t]] = 1.0
    for table in (kernel, action_index, onehot):
        table.setflags(write=False)
    return AgentBlock(start, stop, kernel, action_index, onehot)


GroupLayout = tuple[tuple[int, ...], tuple[int, ...], int]
"""``(tensor shape, summed axes, groups)`` of a grouped sum over joint states
(:func:`group_sum`)."""


def _group_layout(model: NetworkedMDP, agents: Sequence[int]) -> GroupLayout:
    full = tuple(s for s in model.n_states if s > 1)
    members = set(agents)
    keep = tuple(
        size if j in members else 1 for j, size in enumerate(model.n_states) if size > 1
    )
    drop = tuple(axis for axis, (s, k) in enumerate(zip(full, keep, strict=True)) if s != k)
    return full, drop, model.states.sub_size(agents)


def group_sum(values: FloatArray, layout: GroupLayout) -> FloatArray:
    """``out[y, ...] = sum_{s: y(s) = y} values[s, ...]`` with a layout from
    :class:`DenseLayout`: the same grouped sum as :meth:`JointSpace.marginal`, whose
    arguments were validated once when the layout was built."""
    full, drop, groups = layout
    rest = values.shape[1:]
    out: FloatArray = values.reshape(full + rest).sum(axis=drop)
    return out.reshape((groups, *rest))


def dense_layout(model: NetworkedMDP, beta: int) -> DenseLayout:
    """The :class:`DenseLayout` of ``model`` at observation radius ``beta``, built on first
    use and cached on the model."""
    key = ("dense-layout", beta)
    cached = model.derived.get(key)
    if isinstance(cached, DenseLayout):
        return cached
    observed = model.graph.neighbourhoods(beta)
    nS, n = model.states.size, model.n
    stacked = len(set(model.n_states)) == 1 and len(set(model.n_actions)) == 1
    own = tuple(model.states.sub_index((i,)) for i in range(n))
    obs = tuple(model.states.sub_index(o) for o in observed)
    sizes = [model.states.sub_size(o) for o in observed]
    offsets = tuple(int(x) for x in np.cumsum([0, *sizes]))
    kernel_stack: FloatArray | None = None
    own_stack: IntArray | None = None
    onehot: FloatArray | None = None
    obs_flat: IntArray | None = None
    own_flat: IntArray | None = None
    obs_action: IntArray | None = None
    blocks: tuple[AgentBlock, ...] = ()
    if stacked:
        kernel_stack = np.stack([model.local_kernel_factors(i) for i in range(n)], axis=1)
        kernels = tuple(kernel_stack[:, i] for i in range(n))
        own_stack = np.stack(own, axis=1)
        onehot = np.zeros((n, model.n_states[0], nS))
        for i in range(n):
            onehot[i, own[i], np.arange(nS)] = 1.0
        obs_flat = np.stack(obs, axis=1) + np.asarray(offsets[:-1], dtype=np.int64)
        n_local, n_actions = model.n_states[0], model.n_actions[0]
        own_flat = own_stack + n_local * np.arange(n, dtype=np.int64)
        obs_action = (obs_flat[:, :, None] * n_actions + np.arange(n_actions)).reshape(-1)
        for table in (kernel_stack, own_stack, onehot, obs_flat, own_flat, obs_action):
            table.setflags(write=False)
        blocks = tuple(_agent_block(model, kernel_stack, a, b) for a, b in _agent_blocks(model))
    else:
        kernels = tuple(model.local_kernel_factors(i) for i in range(n))
    for k in kernels:
        k.setflags(write=False)
    for index in (*own, *obs):
        index.setflags(write=False)
    layout = DenseLayout(
        kernels=kernels,
        own_index=own,
        obs_index=obs,
        own_groups=tuple(_group_layout(model, (i,)) for i in range(n)),
        obs_groups=tuple(_group_layout(model, o) for o in observed),
        rho=frozen(model.joint_rho()),
        stacked=stacked,
        obs_offsets=offsets,
        kernel_stack=kernel_stack,
        own_stack=own_stack,
        own_onehot=onehot,
        obs_flat=obs_flat,
        own_flat=own_flat,
        obs_action_flat=obs_action,
        blocks=blocks,
    )
    model.derived[key] = layout
    return layout


@dataclass(frozen=True)
class JointRoute:
    """What the joint route of the dense backend reads of a small model at one observation
    radius (``proofs_notes/occupancy-and-flow.md#fused-joint-route``), built once.

    On this route one exact gradient is a fixed handful of array operations over the joint
    state-action table: the joint policy in one gather, ``I - gamma P_pi`` in one batched
    product with the joint kernel, one LU factorisation serving both systems, and the
    gradient as one product with :attr:`q_kernel` followed by one grouped sum.  Depends on
    the model and ``beta`` only (cached in :attr:`NetworkedMDP.derived`); models whose agents
    have equal local sizes and whose joint kernel has at most :data:`FUSED_JOINT_FLOATS`
    entries have one (:func:`fused_route`).  Local sizes ``X = |S_i|``, ``B = |A_i|``;
    joint sizes ``|S|``, ``|A| = B^n``; ``O = sum_i |O_i|`` rows of the agents' stacked
    observation tables.

    Attributes:
        gamma: the discount.
        system_kernel: ``(|S|, |A|, |S|)``, ``-gamma P(s' | s, a)``: its product with the
            joint policy is ``-gamma P_pi``.
        identity: ``(|S|, |S|)`` identity.
        rho: ``(|S|,)`` the joint initial distribution; ``rho_l1`` its l1 norm.
        policy_index: ``(n, |S|, |A|)`` int, the entry of ``pi_i(a_i | o_i(s))`` in the
            agents' stacked ``(O, B)`` probabilities read row-major, so that
            ``pi(a | s) = prod_i stacked.flat[policy_index[i, s, a]]``.
        action_onehot: ``(|A|, n B)``, ``1[a_i = b]`` in column ``i B + b``: a product with
            it sums a joint ``(s, a)`` table onto ``(s, i, b)``.
        occupancy_map: ``(n X B, |S| |A|)``, ``L^T``: ``1[s_i = x, a_i = b]`` in row
            ``(i, x, b)``, column ``(s, a)``; its product with ``lam_S(s) pi(a | s)`` is the
            stacked ``(n, X, B)`` local occupancies.
        obs_action_flat: ``(|S| n B,)`` int, ``(obs row of o_i(s)) B + b``: one ``bincount``
            sums an ``(|S|, n, B)`` table onto the stacked ``(O, B)`` parameters.
        obs_rows: ``(n, |S|)`` int, the stacked observation row of ``o_i(s)``.
        own_of_obs: ``(O, B)`` int, ``(i X + s_i(o)) B + b``: the entry of ``r_i(s_i(o), b)``
            in the stacked ``(n, X, B)`` rewards read row-major, for each observation row
            ``o`` of agent ``i``.
        q_kernel: ``(|S| |A|, |S| + n X B)``, ``[gamma P - E | L / n]`` with
            ``E[(s, a), x] = 1[x = s]`` and ``L[(s, a), (i, x, b)] = 1[s_i = x, a_i = b]``: its
            product with ``(Vbar, r_0, ..., r_{n-1})`` (rewards flattened) is
            ``Qbar(s, a) - Vbar(s)``.
        team_weights: ``(n,)``, every entry ``1/n``.
        obs_slices: agent ``i``'s rows of the stacked ``(O, B)`` parameters.
        local_shape: ``(n, X, B)``.
    """

    gamma: float
    system_kernel: FloatArray
    identity: FloatArray
    rho: FloatArray
    rho_l1: float
    policy_index: IntArray
    action_onehot: FloatArray
    occupancy_map: FloatArray
    obs_action_flat: IntArray
    obs_rows: IntArray
    own_of_obs: IntArray
    q_kernel: FloatArray
    team_weights: FloatArray
    obs_slices: tuple[slice, ...]
    local_shape: tuple[int, int, int]


def _fused_kind(model: NetworkedMDP) -> str | None:
    """``"joint"``, ``"halves"`` or ``None``: the fused route of ``model`` (agents of equal
    local sizes; :data:`FUSED_JOINT_FLOATS`, :data:`FUSED_HALVES_FLOATS`)."""
    if len(set(model.n_states)) != 1 or len(set(model.n_actions)) != 1:
        return None
    n, nS = model.n, model.states.size
    X, B = model.n_states[0], model.n_actions[0]
    if nS * B**n * nS <= FUSED_JOINT_FLOATS:
        return "joint"
    h = (n + 1) // 2
    if n >= 2 and nS * (B**h + B ** (n - h)) * (X**h + X ** (n - h)) <= FUSED_HALVES_FLOATS:
        return "halves"
    return None


def _fused_route_floats(model: NetworkedMDP) -> int:
    """Floats of the tables of the model's fused route (0 when it has none)."""
    kind = _fused_kind(model)
    if kind is None:
        return 0
    n, nS = model.n, model.states.size
    X, B = model.n_states[0], model.n_actions[0]
    params = n * X * B
    if kind == "joint":
        columns, rows = nS, B**n
    else:
        h = (n + 1) // 2
        columns, rows = X**h + X ** (n - h), B**h + B ** (n - h)
    # the kernels (columns + params), the two indicator maps (params), the policy index (n,
    # int64 counted as floats); the smaller index tables; the identity
    return int(nS * rows * (2 * columns + 2 * params + n) + 3 * nS * params + nS * nS)


def fused_route(model: NetworkedMDP, beta: int) -> JointRoute | HalvesRoute | None:
    """The fused route of ``model`` at observation radius ``beta``: a :class:`JointRoute`
    (joint kernel of at most :data:`FUSED_JOINT_FLOATS` entries), else a
    :class:`HalvesRoute` (block kernels of at most :data:`FUSED_HALVES_FLOATS` entries), or
    ``None`` (local sizes differ, or the model is larger); built on first use and cached on
    the model."""
    key = ("fused-route", beta)
    derived = model.derived
    if key in derived:
        cached: JointRoute | HalvesRoute | None = derived[key]
        return cached
    kind = _fused_kind(model)
    route: JointRoute | HalvesRoute | None = None
    if kind == "joint":
        route = _build_joint_route(model, beta)
    elif kind == "halves":
        route = _build_halves_route(model, beta)
    derived[key] = route
    return route


def _build_joint_route(model: NetworkedMDP, beta: int) -> JointRoute:
    """The tables of :class:`JointRoute`, from the model's :class:`DenseLayout` and its
    joint kernel (the block of all agents)."""
    layout = dense_layout(model, beta)
    n, nS = model.n, model.states.size
    X, B = model.n_states[0], model.n_actions[0]
    block = _agent_block(model, cast(FloatArray, layout.kernel_stack), 0, n)
    kernel = block.kernel  # P(s' | s, a), (|S|, |A|, |S|)
    nA = kernel.shape[1]
    gamma = model.gamma
    obs_flat = cast(IntArray, layout.obs_flat)  # (|S|, n)
    own_flat = cast(IntArray, layout.own_flat)  # (|S|, n), i X + s_i(s)
    action_digits = np.indices((B,) * n).reshape(n, nA)  # a_i(a)
    policy_index = obs_flat.T[:, :, None] * B + action_digits[:, None, :]
    rows = layout.obs_offsets[-1]
    own_of_obs = np.empty(rows, dtype=np.int64)
    own_of_obs[obs_flat.reshape(-1)] = own_flat.reshape(-1)  # i observes its own state
    own_of_obs = own_of_obs[:, None] * B + np.arange(B)
    # L[(s, a), (i, x, b)] = 1[s_i = x, a_i = b], and q_kernel = [gamma P - E | L / n]
    marginal_map = np.zeros((nS, nA, n * X * B))
    s_idx, a_idx = np.arange(nS)[:, None], np.arange(nA)[None, :]
    for i in range(n):
        marginal_map[s_idx, a_idx, own_flat[:, i, None] * B + action_digits[i][None, :]] = 1.0
    q_kernel = np.zeros((nS, nA, nS + n * X * B))
    q_kernel[:, :, :nS] = gamma * kernel
    q_kernel[np.arange(nS), :, np.arange(nS)] -= 1.0
    q_kernel[:, :, nS:] = marginal_map / n
    onehot = block.action_onehot
    offsets = layout.obs_offsets
    tables: list[np.ndarray] = [
        -gamma * kernel, np.eye(nS), policy_index, marginal_map.reshape(nS * nA, -1).T.copy(),
        own_of_obs,
        np.ascontiguousarray(obs_flat.T), q_kernel.reshape(nS * nA, -1), np.full(n, 1.0 / n),
    ]
    for table in tables:
        table.setflags(write=False)
    system_kernel, identity, policy_index, occupancy_map, own_of_obs, obs_rows, q_flat, weights = (
        tables
    )
    return JointRoute(
        gamma=gamma,
        system_kernel=system_kernel,
        identity=identity,
        rho=layout.rho,
        rho_l1=float(np.abs(layout.rho).sum()),
        policy_index=policy_index,
        action_onehot=onehot,
        occupancy_map=occupancy_map,
        obs_action_flat=cast(IntArray, layout.obs_action_flat),
        obs_rows=obs_rows,
        own_of_obs=own_of_obs,
        q_kernel=q_flat,
        team_weights=weights,
        obs_slices=tuple(slice(offsets[i], offsets[i + 1]) for i in range(n)),
        local_shape=(n, X, B),
    )


@dataclass(frozen=True)
class HalvesRoute:
    """What the halves route of the dense backend reads of a model at one observation
    radius (``proofs_notes/occupancy-and-flow.md#fused-halves-route``), built once: the
    agents split into the halves ``H1 = [0, h)`` and ``H2 = [h, n)``, ``h = ceil(n/2)``, and
    every per-call table laid out on the two halves' concatenated action axis
    ``c in A_H1 + A_H2`` (``C`` columns) and next-state axis (``Y = |S_H1| + |S_H2|``).

    Depends on the model and ``beta`` only (cached in :attr:`NetworkedMDP.derived`).
    Notation as in :class:`JointRoute`.

    Attributes:
        gamma: the discount.
        kernel: ``(|S|, C, Y)`` block diagonal, ``gamma P_H1(x_1 | s, a_1)`` and
            ``P_H2(x_2 | s, a_2)``: its product with ``[pi_H1 | pi_H2]`` is
            ``[gamma M_H1 | M_H2]``, whose row-wise outer product is ``gamma P_pi``.
        split: ``|S_H1|``, the first half's columns of ``Y``.
        identity, rho, rho_l1: as in :class:`JointRoute`.
        policy_index: ``(h, |S|, C)`` int, the entries whose product is
            ``pi_H(a_H | s)`` in the agents' stacked ``(O + 1, B)`` probabilities with a last
            row of ones (the padding of the second half, which may have one agent fewer).
        action_onehot: ``(C, n B)``, ``1[i in H(c), a_i(c) = b]`` in column ``i B + b``.
        occupancy_map: ``(n X B, |S| C)``, ``1[i in H(c), s_i = x, a_i(c) = b]``: its product
            with ``lam_S(s) pi_H(c)(a_c | s)`` is the stacked local occupancies.
        reward_map: ``(|S| C, n X B)``, ``occupancy_map^T / n``: its product with the
            flattened shadow rewards is ``(1/n) sum_{i in H(c)} r_i(s_i, a_i(c))``.
        other_weights: ``(n + 1, C)``: ``1/n`` in row ``j`` for the columns of the half
            without ``j``, ``-1`` in row ``n``: the product of ``(R_0^pi, ..., R_{n-1}^pi,
            Vbar)(s)`` with it is ``(1/n) sum_{j not in H(c)} R_j^pi(s) - Vbar(s)``.
        ones: ``(1, B)`` ones, the padding row.
        obs_action_flat, obs_rows, own_of_obs, team_weights, obs_slices, local_shape: as in
            :class:`JointRoute`.
    """

    gamma: float
    kernel: FloatArray
    split: int
    identity: FloatArray
    rho: FloatArray
    rho_l1: float
    policy_index: IntArray
    action_onehot: FloatArray
    occupancy_map: FloatArray
    reward_map: FloatArray
    other_weights: FloatArray
    ones: FloatArray
    obs_action_flat: IntArray
    obs_rows: IntArray
    own_of_obs: IntArray
    team_weights: FloatArray
    obs_slices: tuple[slice, ...]
    local_shape: tuple[int, int, int]


def _build_halves_route(model: NetworkedMDP, beta: int) -> HalvesRoute:
    """The tables of :class:`HalvesRoute`, from the model's :class:`DenseLayout` and the two
    halves' block kernels."""
    layout = dense_layout(model, beta)
    n, nS = model.n, model.states.size
    X, B = model.n_states[0], model.n_actions[0]
    h = (n + 1) // 2
    stack = cast(FloatArray, layout.kernel_stack)
    first, second = _agent_block(model, stack, 0, h).kernel, _agent_block(model, stack, h, n).kernel
    a1, x1 = first.shape[1:]
    a2, x2 = second.shape[1:]
    kernel = np.zeros((nS, a1 + a2, x1 + x2))
    kernel[:, :a1, :x1] = model.gamma * first
    kernel[:, a1:, x1:] = second
    obs_flat = cast(IntArray, layout.obs_flat)
    own_flat = cast(IntArray, layout.own_flat)
    rows = layout.obs_offsets[-1]
    halves = ((0, h, 0, np.indices((B,) * h).reshape(h, a1)),
              (h, n, a1, np.indices((B,) * (n - h)).reshape(n - h, a2)))
    policy_index = np.full((h, nS, a1 + a2), rows * B, dtype=np.int64)  # the ones row
    onehot = np.zeros((a1 + a2, n * B))
    occupancy = np.zeros((n * X * B, nS, a1 + a2))
    s_idx = np.arange(nS)[:, None]
    other = np.zeros((n + 1, a1 + a2))
    other[n] = -1.0
    for start, stop, col, digits in halves:
        cols = col + np.arange(digits.shape[1])
        other[:start, cols] = other[stop:n, cols] = 1.0 / n
        for t, i in enumerate(range(start, stop)):
            policy_index[t, :, cols] = (obs_flat[:, i, None] * B + digits[t][None, :]).T
            onehot[cols, i * B + digits[t]] = 1.0
            occupancy[own_flat[:, i, None] * B + digits[t][None, :], s_idx, cols[None, :]] = 1.0
    occupancy_map = occupancy.reshape(n * X * B, nS * (a1 + a2))
    own_of_obs = np.empty(rows, dtype=np.int64)
    own_of_obs[obs_flat.reshape(-1)] = own_flat.reshape(-1)  # i observes its own state
    own_of_obs = own_of_obs[:, None] * B + np.arange(B)
    offsets = layout.obs_offsets
    tables: list[np.ndarray] = [
        kernel, np.eye(nS), policy_index, onehot, occupancy_map,
        np.ascontiguousarray(occupancy_map.T) / n, other, np.ones((1, B)), own_of_obs,
        np.ascontiguousarray(obs_flat.T), np.full(n, 1.0 / n),
    ]
    for table in tables:
        table.setflags(write=False)
    (kernel, identity, policy_index, onehot, occupancy_map, reward_map, other, ones,
     own_of_obs, obs_rows, weights) = tables
    return HalvesRoute(
        gamma=model.gamma,
        kernel=kernel,
        split=int(x1),
        identity=identity,
        rho=layout.rho,
        rho_l1=float(np.abs(layout.rho).sum()),
        policy_index=policy_index,
        action_onehot=onehot,
        occupancy_map=occupancy_map,
        reward_map=reward_map,
        other_weights=other,
        ones=ones,
        obs_action_flat=cast(IntArray, layout.obs_action_flat),
        obs_rows=obs_rows,
        own_of_obs=own_of_obs,
        team_weights=weights,
        obs_slices=tuple(slice(offsets[i], offsets[i + 1]) for i in range(n)),
        local_shape=(n, X, B),
    )


class DenseOperator:
    """:class:`TransitionOperator` with the dense ``P_pi`` and one LU factorisation.

    ``P_pi`` is built as the row-wise Kronecker product of the policy-averaged local factors
    ``M_i[s, s'_i]`` (module docstring), keeping the suffix products for
    :meth:`apply_agents`; or, for small models whose agents have equal local sizes, on the
    block route (:attr:`DenseLayout.blocks`): from the joint policy and joint kernel of one
    block of all agents or of two halves, which also give every weighted agent marginal
    (:meth:`apply_agents_weighted`) in a fixed number of array operations; the Kronecker
    tables are then built only if a per-agent method asks for them.  What depends on the
    model alone (gathered kernels, index tables, block kernels) comes from the model's cached
    :class:`DenseLayout`, so a call builds only what depends on ``theta``.  One LU
    factorisation of ``(I - gamma P_pi)^T`` serves both systems.  Memory:
    :func:`dense_memory` (the matrix, its LU factors and the suffix products, about
    ``3 |S|^2`` floats), checked against the limit of :mod:`reference.memory` before
    anything is allocated.
    """

    backend = "dense"

    def __init__(
        self,
        model: NetworkedMDP,
        policy: LocalizedSoftmaxPolicy,
        memory_limit: float | None = None,
    ) -> None:
        if policy.model is not model:
            raise ModelError("policy was built for a different NetworkedMDP")
        nS = model.states.size
        needed = model.derived.get("dense-memory")
        if needed is None:  # a function of the model's sizes only
            needed = model.derived["dense-memory"] = dense_memory(model)
        if needed > resolve_limit(memory_limit):
            check_memory(needed, f"the dense joint kernel of {nS} joint states", memory_limit)
        self.model = model
        self._n_joint = nS
        self.policy = policy
        self.gamma = model.gamma
        self.next_sizes = model.n_states
        self.layout = layout = dense_layout(model, policy.beta)
        self.action_factors = layout.kernels
        self.probs_stack: FloatArray | None = None
        self._block_policies: list[FloatArray] = []
        self._block_factors: list[FloatArray] = []
        self._kron: tuple[list[FloatArray], list[FloatArray], FloatArray] | None = None
        if layout.stacked:
            # pi_i(a | o_i(s)) for every s and i, (|S|, n, |A_i|)
            stack = np.concatenate(policy.probs)[cast(IntArray, layout.obs_flat)]
            stack.setflags(write=False)
            self.probs_stack = stack
        if layout.blocks:
            # block route: pi_H(a_H | s) = prod_{j in H} pi_j(a_j | o_j(s)), (|S|, |A_H|), and
            # M_H(x | s) = sum_{a_H} pi_H(a_H | s) P_H(x | s, a_H); P_pi is their product
            rows = cast(FloatArray, self.probs_stack).reshape(nS, -1)
            for block in layout.blocks:
                joint = rows[:, block.action_index].prod(axis=1)
                joint.setflags(write=False)
                self._block_policies.append(joint)
                self._block_factors.append(np.matmul(joint[:, None, :], block.kernel)[:, 0])
            if len(layout.blocks) == 1:
                self.matrix = read_only(self._block_factors[0])
            else:
                first, second = self._block_factors
                self.matrix = read_only((first[:, :, None] * second[:, None, :]).reshape(nS, nS))
        else:
            self.matrix = self._kronecker()[2]
        # LU factors of (I - gamma P_pi)^T, on first use (_factor)
        self._lu: tuple[FloatArray, FloatArray] | None = None

    def _kronecker(self) -> tuple[list[FloatArray], list[FloatArray], FloatArray]:
        """The factors ``M_i[s, s'_i] = sum_a pi_i(a | o_i(s)) K_i[s, a, s'_i]``, the suffix
        products ``prod_{j>=k} M_j`` for ``0 < k < n`` and their product ``P_pi`` (the
        row-wise Kronecker product, built from the last agent: long inner axis); built once."""
        if self._kron is None:
            nS, layout = self._n_joint, self.layout
            factors: list[FloatArray]
            if self.probs_stack is not None:
                kernel_stack = cast(FloatArray, layout.kernel_stack)
                m_stack = np.einsum("sia,siax->six", self.probs_stack, kernel_stack)
                m_stack.setflags(write=False)
                factors = list(m_stack.transpose(1, 0, 2))
            else:
                factors = [
                    np.einsum("sa,sax->sx", p, k)
                    for p, k in zip(self.local_probs, self.action_factors, strict=True)
                ]
                for m in factors:
                    m.setflags(write=False)
            last = factors[-1]
            suffixes = [last]
            for m in factors[-2::-1]:
                last = (m[:, :, None] * last[:, None, :]).reshape(nS, -1)
                suffixes.append(last)
            matrix = read_only(suffixes.pop() if len(factors) > 1 else np.array(last))
            suffixes.reverse()
            self._kron = (factors, suffixes, matrix)
        return self._kron

    @property
    def _factors(self) -> list[FloatArray]:
        return self._kronecker()[0]

    @property
    def _suffixes(self) -> list[FloatArray]:
        return self._kronecker()[1]

    @cached_property
    def local_probs(self) -> tuple[FloatArray, ...]:
        """``pi_i(a_i | o_i(s))`` gathered over joint states, ``(|S|, |A_i|)`` per agent."""
        if self.probs_stack is not None:
            return tuple(self.probs_stack.transpose(1, 0, 2))
        return tuple(
            read_only(p[idx])
            for p, idx in zip(self.policy.probs, self.layout.obs_index, strict=True)
        )

    @cached_property
    def policy_factors(self) -> tuple[FloatArray, ...]:
        """``M_i`` as ``(|S|, 1, |S_i|)`` contraction factors of :func:`contract_next_state`
        (one pseudo-action: the policy average)."""
        return tuple(m[:, None, :] for m in self._factors)

    @property
    def n_states(self) -> int:
        """``|S|``."""
        return self._n_joint

    def apply(self, v: FloatArray) -> FloatArray:
        """``P_pi v``; ``v`` of shape ``(|S|,)`` or ``(|S|, m)``."""
        out: FloatArray = self.matrix @ v
        return out

    def apply_transpose(self, u: FloatArray) -> FloatArray:
        """``P_pi^T u``; ``u`` of shape ``(|S|,)`` or ``(|S|, m)``."""
        out: FloatArray = self.matrix.T @ u
        return out

    def _agent_factors(self, i: int) -> list[FloatArray]:
        factors = list(self.policy_factors)
        factors[i] = self.action_factors[i]
        return factors

    def apply_agent(self, i: int, v: FloatArray) -> FloatArray:
        """``(|S|, |A_i|)``: ``sum_{s'} P^{(i,b)}(s'|s) v(s')`` for every ``s`` and ``b``."""
        return contract_next_state(self._agent_factors(i), v, self.next_sizes)

    def apply_agent_transpose(self, i: int, u: FloatArray) -> FloatArray:
        """``(|S|,)``: ``s' -> sum_{s,b} u[s,b] P^{(i,b)}(s'|s)``; ``u`` is ``(|S|, |A_i|)``."""
        return expand_next_state(self._agent_factors(i), u, sum_rows=True)

    def apply_agents(self, v: FloatArray) -> tuple[FloatArray, ...]:
        """:meth:`apply_agent` for every agent at once: ``(|S|, |A_i|)`` per agent.

        With the suffix products ``T_k[s, q] = prod_{j>=k} M_j[s, q_j]`` (kept from building
        ``P_pi``, ``T_n = 1``) and the leading contractions
        ``C_i[s, (x_i, q)] = sum_{x_<i} prod_{j<i} M_j[s, x_j] v[x_<i, x_i, q]``
        (``C_0 = v``, ``C_{i+1}[s, q] = sum_x M_i[s, x] C_i[s, (x, q)]``)::

            W_i[s, x] = sum_q C_i[s, (x, q)] T_{i+1}[s, q]
            (P^{(i,b)} v)(s) = sum_x K_i[s, b, x] W_i[s, x]

        ``O(|S|^2)`` for all agents together (``proofs_notes/occupancy-and-flow.md#leave-one-out``),
        against ``O(n |S|^2)`` for ``n`` calls of :meth:`apply_agent`.  ``v`` is ``(|S|,)``.
        """
        w = self._leave_one_out(v)
        return tuple(
            np.einsum("sbx,sx->sb", k, w_i)
            for k, w_i in zip(self.action_factors, w, strict=True)
        )

    def apply_agents_stacked(self, v: FloatArray) -> FloatArray:
        """:meth:`apply_agents` as one ``(|S|, n, |A_i|)`` array, for models whose agents
        all have the same local sizes (:attr:`DenseLayout.stacked`): one batched contraction
        with the stacked kernels instead of one per agent."""
        if self.layout.kernel_stack is None:
            raise ModelError("apply_agents_stacked needs agents of equal local sizes")
        w = np.empty((self._n_joint, self.model.n, self.next_sizes[0]))  # W_i = w[:, i]
        self._leave_one_out(v, list(w.transpose(1, 0, 2)))
        out: FloatArray = np.einsum("sibx,six->sib", self.layout.kernel_stack, w)
        return out

    def apply_agents_weighted(self, v: FloatArray) -> FloatArray:
        """``(|S|, n, |A_i|)``: ``pi_i(b | o_i(s)) (P^{(i,b)} v)(s)``, agents of equal local
        sizes (:attr:`DenseLayout.stacked`).

        On the block route (small models, :attr:`DenseLayout.blocks`) it is read off the
        block kernels: for agent ``i`` in block ``H``,
        ``pi_i(b | o_i(s)) (P^{(i,b)} v)(s) = sum_{a_H: a_i = b} pi_H(a_H | s) Q_H(s, a_H)`` with
        ``Q_H(s, a_H) = sum_x P_H(x | s, a_H) u_H(s, x)`` and ``u_H`` the contraction of ``v``
        with the other block's ``M`` (``v`` itself for one block), then a product with
        :attr:`AgentBlock.action_onehot` (``proofs_notes/occupancy-and-flow.md#joint-route``);
        otherwise it is :meth:`apply_agents_stacked` times the policy rows.
        """
        if self.probs_stack is None:
            raise ModelError("apply_agents_weighted needs agents of equal local sizes")
        blocks = self.layout.blocks
        if not blocks:
            out: FloatArray = self.apply_agents_stacked(v)
            out *= self.probs_stack
            return out
        nS = self._n_joint
        v = np.asarray(v, dtype=np.float64)
        if len(blocks) == 1:
            q = (blocks[0].kernel.reshape(-1, nS) @ v).reshape(nS, -1)  # Q_v(s, a)
            q *= self._block_policies[0]
            summed: FloatArray = q @ blocks[0].action_onehot
            return summed.reshape(self.probs_stack.shape)
        first, second = self._block_factors
        grid = v.reshape(first.shape[1], second.shape[1])  # v(x_H1, x_H2)
        parts = []
        for block, joint, u in zip(
            blocks, self._block_policies, (second @ grid.T, first @ grid), strict=True
        ):
            q = np.matmul(block.kernel, u[:, :, None])[:, :, 0]  # Q_H(s, a_H)
            q *= joint
            parts.append(q @ block.action_onehot)
        return np.concatenate(parts, axis=1).reshape(self.probs_stack.shape)

    def _leave_one_out(
        self, v: FloatArray, out: list[FloatArray] | None = None
    ) -> list[FloatArray]:
        """``W_i[s, x] = sum_{s': s'_i = x} prod_{j != i} M_j[s, s'_j] v(s')`` per agent,
        ``(|S|, |S_i|)`` (:meth:`apply_agents`), written into ``out[i]`` when given."""
        n, nS = self.model.n, self._n_joint
        sizes = self.next_sizes
        w = [np.empty((nS, x)) for x in sizes] if out is None else out
        v = np.asarray(v, dtype=np.float64)
        if n == 1:
            w[0][...] = v[None, :]
            return w
        lead = v.reshape(sizes[0], -1)  # C_0 = v, (x_0, q)
        np.matmul(self._suffixes[0], lead.T, out=w[0])  # W_0 = sum_q T_1[s, q] v[x, q]
        contracted = self._factors[0] @ lead  # C_1, (|S|, prod_{j>=1} |S_j|)
        for i in range(1, n - 1):
            c = contracted.reshape(nS, sizes[i], -1)
            np.einsum("sxq,sq->sx", c, self._suffixes[i], out=w[i])
            contracted = np.einsum("sx,sxq->sq", self._factors[i], c)
        w[n - 1][...] = contracted  # T_n = 1
        return w

    def apply_joint(self, v: FloatArray, memory_limit: float | None = None) -> FloatArray:
        """``(|S|, |A|)``: ``sum_{s'} P(s'|s, a) v(s')`` for every joint action (small ``n``)."""
        nS, nA = self.n_states, self.model.actions.size
        check_memory(8 * 2 * nS * nA, "a joint state-action table", memory_limit)
        return contract_next_state(self.action_factors, v, self.next_sizes)

    def _factor(self) -> tuple[FloatArray, FloatArray]:
        """LU factors of ``(I - gamma P_pi)^T`` (LAPACK ``getrf``), computed once.

        ``I - gamma P_pi`` is formed in row-major order, so its transpose is a column-major
        array that LAPACK factors in place, without the transposing copy a row-major
        argument costs.  The same factors serve both systems: ``getrs`` solves the
        occupancy system ``(I - gamma P_pi)^T x = rho`` as it stands and the value system
        ``(I - gamma P_pi) x = r`` transposed."""
        if self._lu is None:
            system = self.matrix * -self.gamma
            system.flat[:: self._n_joint + 1] += 1.0  # I - gamma P_pi
            lu, piv, info = _getrf(system.T, overwrite_a=True)
            if info != 0:
                raise SolverError(
                    f"the LU factorisation of I - gamma P_pi failed (LAPACK getrf info = {info})"
                )
            self._lu = (lu, piv)
        return self._lu

    def _certify(self, x: FloatArray, b: FloatArray, transpose: bool) -> tuple[float, float]:
        g = self.gamma
        res: FloatArray = (self.matrix.T if transpose else self.matrix) @ x
        res *= -g
        res += x
        res -= b  # x - gamma P x - b, or with P^T
        mags = np.abs(np.array((res, x, b)))  # |residual|, |x|, |b|: (3, |S|, ...)
        if transpose:  # l1 norms per column, the largest over columns
            norms = mags.sum(axis=1)
            if norms.ndim > 1:
                norms = norms.max(axis=1)
        else:
            norms = mags.max(axis=(1, 2) if mags.ndim == 3 else 1)
        r, scale, b_scale = norms.tolist()
        # rounding of the residual evaluation: (|S| + 2) eps (||I - gamma P|| ||x|| + ||b||)
        rounding = (self._n_joint + 2) * _EPS * ((1 + g) * scale + b_scale)
        return r, (r + rounding) / (1 - g)

    def solve_certified(
        self, b: FloatArray, transpose: bool
    ) -> tuple[FloatArray, float, float]:
        """``(x, residual, error bound)`` of the occupancy system ``(I - gamma P_pi^T) x = b``
        (``transpose``, l1 norms) or the value system ``(I - gamma P_pi) x = b`` (inf norms):
        :meth:`solve_occupancy` and :meth:`solve_values` without the record."""
        lu, piv = self._lu if self._lu is not None else self._factor()
        x: FloatArray = _getrs(lu, piv, b, trans=0 if transpose else 1)[0]
        res, bound = self._certify(x, b, transpose)
        return x, res, bound

    def solve_values(self, r: FloatArray) -> LinearSolve:
        """``(I - gamma P_pi)^{-1} r`` for ``r`` of shape ``(|S|,)`` or ``(|S|, m)``."""
        x, res, bound = self.solve_certified(np.asarray(r, dtype=np.float64), False)
        return LinearSolve(x=x, residual=res, error_bound=bound, norm="inf")

    def solve_occupancy(self, rho: FloatArray) -> LinearSolve:
        """``(I - gamma P_pi^T)^{-1} rho`` for ``rho`` of shape ``(|S|,)`` or ``(|S|, m)``."""
        x, res, bound = self.solve_certified(np.asarray(rho, dtype=np.float64), True)
        return LinearSolve(x=x, residual=res, error_bound=bound, norm="l1")
