"""kappa-hop truncation and spatial correlation decay (SPEC section 3).

For agent ``i`` and radius ``kappa`` write ``z = z_{N_i^kappa}`` for the local states and
actions ``(s_j, a_j)_{j in N_i^kappa}`` of a joint pair ``(s, a)``; ``z`` is indexed mixed
radix over ``N_i^kappa`` in increasing agent order, each agent contributing the digit
``s_j |A_j| + a_j`` (lowest-numbered agent most significant).

* **Decay spread** ``D_i(kappa) = max |Q_i(s,a) - Q_i(s',a')|`` over pairs with equal ``z``.
* **Bound** [derived, ``proofs_notes/decay.md``]: ``D_i(kappa) <= Delta_i gamma^t0 / (1-gamma)``
  with ``Delta_i = max r_i - min r_i`` and ``t0(kappa, beta)`` the first time at which the
  law of ``(s_i^t, a_i^t)`` can depend on anything outside ``N_i^kappa``.
* **Truncated Q** ``Qhat_i(z) = sum w_i(. | z) Q_i`` for point-mass, uniform or
  occupancy-conditional weights; any weights give ``sup |Qhat_i - Q_i| <= D_i(kappa)``.
* **Truncated gradient** ``ghat_i = sum lam(s,a) [(1/n) sum_{j in N_i^kappa} Qhat_j] score_i``
  with ``||ghat_i - grad_i F||_2 <= sqrt(2) max_j D_j(kappa) / (1-gamma)``
  (``proofs_notes/truncated-gradient.md``), via the cancellation identity, and the sharper
  ``(1/n) sum_j c_ij D_j(kappa) sum_s lam_S(s) E_{a_i ~ pi_i} ||score_i||`` of
  :func:`gradient_error_bounds` (``truncated-gradient.md#sharp``).

:func:`decay_profile` streams the shadow Q-functions chunk by chunk from the local kernels
and never forms a joint table; its memory is predicted before any work
(``proofs_notes/decay.md#streamed-spreads``).  :func:`occupancy_truncated_gradient` gives the
occupancy-weighted ``ghat`` from per-agent gradient contributions where its identity holds
(``proofs_notes/truncated-gradient.md#occupancy-identity``).  :func:`decay_spread`,
:func:`truncated_q` and :func:`truncated_gradient` work on joint ``(|S|, |A|)`` tables (the
definitions, for small instances and as the second route).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import product
from math import prod
from typing import Any, Literal

import numpy as np

from reference._arrays import FloatArray, IntArray, frozen
from reference.errors import MemoryLimitError, ModelError
from reference.memory import format_bytes
from reference.memory import memory_limit as resolve_limit
from reference.networked.exact import (
    NetworkedSolution,
    gradient_contributions,
    per_agent_values,
    score_contraction,
    shadow_q,
)
from reference.networked.model import NetworkedMDP
from reference.networked.policy import LocalizedSoftmaxPolicy

__all__ = [
    "WEIGHT_CHOICES",
    "DecayProfile",
    "GradientErrorBounds",
    "TruncatedQ",
    "Weights",
    "cancellation_residual",
    "decay_bound",
    "decay_profile",
    "decay_spread",
    "first_escape_time",
    "gradient_error_bounds",
    "hop_codes",
    "hop_index",
    "hop_size",
    "occupancy_identity_holds",
    "occupancy_truncated_gradient",
    "score_norm_mass",
    "truncated_gradient",
    "truncated_q",
]

Weights = Literal["point", "uniform", "occupancy"]
WEIGHT_CHOICES: tuple[Weights, ...] = ("point", "uniform", "occupancy")
"""Every supported choice of truncation weights."""


def _check_radius(kappa: int, name: str = "kappa") -> int:
    if isinstance(kappa, bool) or not isinstance(kappa, (int, np.integer)) or kappa < 0:
        raise ModelError(f"{name} = {kappa!r}, expected a non-negative integer")
    return int(kappa)


def first_escape_time(kappa: int, beta: int) -> int:
    """``t0(kappa, beta)``: the first time the law of ``(s_i^t, a_i^t)`` can depend on
    ``(s, a)`` outside ``N_i^kappa``.

    ``t0 = kappa + 1`` for ``beta = 0``; for ``beta >= 1``, ``t0 = 1`` if ``kappa = 0`` else
    ``floor((kappa - 1) / beta) + 1`` (= ``ceil(kappa / beta)``).  Derivation: for
    ``t >= 1`` the action ``a_i^t`` depends on ``(s, a)`` within radius ``1 + t beta``
    (``proofs_notes/decay.md``).
    """
    kappa, beta = _check_radius(kappa), _check_radius(beta, "beta")
    if beta == 0:
        return kappa + 1
    if kappa == 0:
        return 1
    return (kappa - 1) // beta + 1


def decay_bound(delta: float, gamma: float, kappa: int, beta: int) -> float:
    """``Delta gamma^t0 / (1 - gamma)`` with ``t0 = first_escape_time(kappa, beta)``."""
    return float(delta) * gamma ** first_escape_time(kappa, beta) / (1.0 - gamma)


def hop_codes(
    model: NetworkedMDP, agents: Sequence[int], states: IntArray, actions: IntArray
) -> IntArray:
    """``z_agents`` codes of local states and actions with shapes broadcasting to ``(..., n)``.

    ``agents`` increasing; each agent's digit is ``s_j |A_j| + a_j``, lowest agent most
    significant.
    """
    shape = np.broadcast_shapes(states.shape[:-1], actions.shape[:-1])
    code = np.zeros(shape, dtype=np.int64)
    for j in agents:
        code = code * (model.n_states[j] * model.n_actions[j]) + (
            states[..., j] * model.n_actions[j] + actions[..., j]
        )
    return code


def hop_size(model: NetworkedMDP, agents: Sequence[int]) -> int:
    """Number of values of ``z_agents``: ``prod_{j in agents} |S_j| |A_j|``."""
    size = 1
    for j in agents:
        size *= model.n_states[j] * model.n_actions[j]
    return size


def hop_index(model: NetworkedMDP, agents: Sequence[int]) -> tuple[IntArray, int]:
    """``(|S|, |A|)`` code of ``z_agents`` for every joint pair, and the number of values."""
    sd, ad = model.states.digits, model.actions.digits
    return hop_codes(model, agents, sd[:, None, :], ad[None, :, :]), hop_size(model, agents)


def decay_spread(model: NetworkedMDP, q: FloatArray, i: int, kappa: int) -> float:
    """``D_i(kappa) = max_z [max - min of Q_i over the joint pairs (s, a) with z(s, a) = z]``.

    The pairs of SPEC section 3 that agree on ``z = z_{N_i^kappa}`` are exactly the pairs
    inside one group, and the largest ``|Q_i(s,a) - Q_i(s',a')|`` inside a group is its
    max minus its min; so no pair is enumerated.  ``q`` of shape ``(|S|, |A|)`` is viewed as a
    tensor with one state and one action axis per agent, and the max and min are taken over
    the axes of the agents outside ``N_i^kappa`` (``O(|S| |A|)`` work, exact: max and min do
    not round).  :func:`decay_profile` computes the same spreads without the table
    (``proofs_notes/decay.md#streamed-spreads``).
    """
    agents = set(model.graph.neighbourhood(i, _check_radius(kappa)))
    shape = model.n_states + model.n_actions
    if q.shape != (model.states.size, model.actions.size):
        raise ModelError(
            f"q has shape {q.shape}, expected ({model.states.size}, {model.actions.size})"
        )
    n = model.n
    outside = tuple(j for j in range(n) if j not in agents)
    axes = outside + tuple(n + j for j in outside)
    tensor = q.reshape(shape)
    spread = np.max(tensor, axis=axes) - np.min(tensor, axis=axes)
    return float(np.max(spread))


@dataclass(frozen=True)
class TruncatedQ:
    """A truncated Q-function ``Qhat_i(z_{N_i^kappa})``.

    Attributes:
        agent: ``i``.
        kappa: the radius.
        agents: ``N_i^kappa``.
        table: ``(prod_{j in N_i^kappa} |S_j| |A_j|,)`` values ``Qhat_i(z)``.
        joint: ``(|S|, |A|)`` the table broadcast back to joint pairs, ``Qhat_i(z(s, a))``.
        weights: which weights were used.
    """

    agent: int
    kappa: int
    agents: tuple[int, ...]
    table: FloatArray
    joint: FloatArray
    weights: Weights


def truncated_q(
    model: NetworkedMDP,
    q: FloatArray,
    i: int,
    kappa: int,
    weights: Weights = "occupancy",
    lam: FloatArray | None = None,
) -> TruncatedQ:
    """``Qhat_i(z) = sum_{(s,a): z(s,a) = z} w(s, a | z) Q_i(s, a)``.

    Weights: ``"point"`` puts mass 1 on the completion with every variable outside
    ``N_i^kappa`` equal to 0; ``"uniform"`` averages over all completions;
    ``"occupancy"`` uses ``w propto lam(s, a)`` (needs ``lam``, shape ``(|S|, |A|)``) and falls
    back to uniform on groups of zero occupancy.  Any choice is a convex combination of
    values of ``Q_i`` on the group, so ``sup |Qhat_i - Q_i| <= D_i(kappa)``.
    """
    agents = model.graph.neighbourhood(i, _check_radius(kappa))
    idx, size = hop_index(model, agents)
    flat_idx, flat_q = idx.reshape(-1), q.reshape(-1)
    count = np.bincount(flat_idx, minlength=size).astype(np.float64)
    uniform = np.bincount(flat_idx, weights=flat_q, minlength=size) / np.maximum(count, 1.0)
    if weights == "uniform":
        table = uniform
    elif weights == "point":
        outside = np.ones((model.states.size, model.actions.size), dtype=bool)
        sd, ad = model.states.digits, model.actions.digits
        for j in range(model.n):
            if j not in agents:
                outside &= (sd[:, j, None] == 0) & (ad[None, :, j] == 0)
        table = np.zeros(size)
        table[idx[outside]] = q[outside]
    elif weights == "occupancy":
        if lam is None:
            raise ModelError("occupancy-conditional weights need lam of shape (|S|, |A|)")
        flat_lam = lam.reshape(-1)
        mass = np.bincount(flat_idx, weights=flat_lam, minlength=size)
        # normalise within each group before multiplying by Q: a product lam * Q of a
        # subnormal occupancy (gamma near 0) would lose digits, the ratio lam / mass does not
        safe = np.where(mass > 0, mass, 1.0)
        total = np.bincount(flat_idx, weights=(flat_lam / safe[flat_idx]) * flat_q, minlength=size)
        table = np.where(mass > 0, total, uniform)
    else:
        raise ModelError(f"weights = {weights!r}, expected 'point', 'uniform' or 'occupancy'")
    return TruncatedQ(i, int(kappa), agents, frozen(table), frozen(table[idx]), weights)


# ------------------------------------------------------------------ decay spreads, streamed
_CHUNK_TARGET_FLOATS = 1 << 19
"""Preferred number of joint pairs ``(s, a)`` per chunk of a streamed spread computation
(4 MiB of float64: small enough that a contraction step's operands stay near the cache,
large enough that the per-chunk Python overhead stays small)."""


def _action_classes(model: NetworkedMDP, j: int) -> tuple[int, ...]:
    """Representatives of agent ``j``'s actions up to identical kernel slices: actions ``b``
    and ``c`` with ``P_j(. | s_{N_j}, b) = P_j(. | s_{N_j}, c)`` for every ``s_{N_j}`` are
    interchangeable in every ``Q_i`` with ``i != j``
    (``proofs_notes/decay.md#streamed-spreads``)."""
    kernel = model.kernels[j]
    reps: list[int] = []
    for b in range(model.n_actions[j]):
        if not any(np.array_equal(kernel[:, b, :], kernel[:, c, :]) for c in reps):
            reps.append(b)
    return tuple(reps)


@dataclass(frozen=True)
class _SpreadPlan:
    """How one agent's spreads are streamed (shapes only, nothing of joint size).

    Attributes:
        agent: ``i``.
        layout: every agent in order of hop distance from ``i`` (ties by index; agents of
            other components last).  A chunk tensor has the state axes of ``layout`` first
            (axis ``r`` the state of ``layout[r]``), then their action axes in the reverse
            order (axis ``2n - 1 - r``), so the agents outside ``N_i^kappa`` occupy one
            contiguous middle block of axes.
        chunk: how many leading agents of ``layout`` have their state and action fixed per
            chunk.
        actions: the kept actions of every agent (:func:`_action_classes`; all for ``i``).
        order: the contraction order of the next-state axes (:func:`_contraction_order`).
        widest: largest intermediate of a contraction step, in floats.
        chunk_pairs: joint pairs per chunk; chunks: number of chunks.
        peak_floats: predicted peak float64 count.
    """

    agent: int
    layout: tuple[int, ...]
    chunk: int
    actions: tuple[tuple[int, ...], ...]
    order: tuple[int, ...]
    widest: int
    chunk_pairs: int
    chunks: int
    peak_floats: int


def _contraction_order(
    model: NetworkedMDP,
    layout: Sequence[int],
    actions: Sequence[Sequence[int]],
    fixed: set[int],
) -> tuple[tuple[int, ...], int]:
    """The order of the next-state contractions and the largest intermediate (floats).

    Greedy on the size of each step's result (the states of the kernels contracted so far,
    fixed ones of size 1, times the actions of those agents, times the next states of the
    others): the fixed agents come first (their actions are fixed, so each step shrinks the
    tensor), then at each step the agent whose contraction leaves the smallest tensor, ties
    to the agent nearest ``i`` (earliest in ``layout``), so the largest, last steps act on
    the outermost action axes of the chunk tensor."""
    rank = {m: r for r, m in enumerate(layout)}
    present: set[int] = set()
    done: set[int] = set()

    def size_after(j: int) -> int:
        states = present | set(model.neighbourhoods[j])
        width = prod(model.n_states[m] for m in states if m not in fixed)
        width *= prod(len(actions[m]) for m in done | {j} if m not in fixed)
        return width * prod(model.n_states[m] for m in layout if m not in done and m != j)

    order: list[int] = []
    widest = model.states.size
    while len(order) < len(layout):
        left = [m for m in layout if m not in done]
        pinned = [m for m in left if m in fixed]
        j = pinned[0] if pinned else min(left, key=lambda m: (size_after(m), rank[m]))
        widest = max(widest, size_after(j))
        present |= set(model.neighbourhoods[j])
        done.add(j)
        order.append(j)
    return tuple(order), widest


def _spread_plan(
    model: NetworkedMDP, i: int, kappas: Sequence[int], limit: int
) -> _SpreadPlan:
    """The streamed plan for agent ``i``: the fewest fixed leading agents such that a chunk
    holds at most :data:`_CHUNK_TARGET_FLOATS` pairs and the predicted peak fits ``limit``
    bytes.  Raises :class:`~reference.errors.MemoryLimitError` when even fixing every agent
    does not fit."""
    n = model.n
    actions = tuple(
        tuple(range(model.n_actions[j])) if j == i else _action_classes(model, j)
        for j in range(n)
    )
    distance = model.graph.distance[i]
    layout = tuple(sorted(range(n), key=lambda j: (distance[j] < 0, abs(int(distance[j])), j)))
    sizes = [model.n_states[j] * len(actions[j]) for j in range(n)]
    total = prod(sizes)
    plan: _SpreadPlan | None = None
    for c in range(n + 1):
        fixed = set(layout[:c])
        chunk = total // prod(sizes[j] for j in fixed)
        order, widest = _contraction_order(model, layout, actions, fixed)
        # running max and min per z_{N_i^kappa} where N_i^kappa misses a fixed agent
        running = sum(
            2 * prod(sizes[m] for m in model.graph.neighbourhood(i, k))
            for k in kappas
            if not fixed <= set(model.graph.neighbourhood(i, k))
        )
        # three step buffers (operand, result, product); the reductions' max, min and their
        # difference; the running tables; the per-agent values
        peak = 3 * widest + 2 * chunk + running + model.states.size * (n + 1)
        plan = _SpreadPlan(i, layout, c, actions, order, widest, chunk, total // chunk, peak)
        if 8 * peak <= limit and chunk <= _CHUNK_TARGET_FLOATS:
            return plan
    assert plan is not None  # n + 1 >= 1 candidates
    raise MemoryLimitError(
        f"the streamed decay spreads of agent {i} need about "
        f"{format_bytes(8 * plan.peak_floats)} even with every agent fixed per chunk, above "
        f"the memory limit of {format_bytes(limit)}"
    )


def _kernel_block(
    model: NetworkedMDP,
    plan: _SpreadPlan,
    j: int,
    fixed: dict[int, tuple[int, int]],
    cache: dict[tuple[Any, ...], FloatArray] | None = None,
) -> FloatArray:
    """``P_j(s'_j | s_{N_j}, a_j)`` as an array of rank ``2n + 1`` for broadcasting against
    a chunk tensor of ``plan``: the state axes of ``N_j`` (size 1 where fixed), the action
    axis of ``j`` (its kept actions, or the fixed one), the last axis ``s'_j``."""
    hood = model.neighbourhoods[j]
    if cache is not None:
        key = (j, fixed.get(j, (0, -1))[1], *(fixed.get(m, (-1, 0))[0] for m in hood))
        if key not in cache:
            cache[key] = _kernel_block(model, plan, j, fixed)
        return cache[key]
    n = model.n
    rank = {m: r for r, m in enumerate(plan.layout)}
    kernel = model.kernels[j].reshape(
        *[model.n_states[m] for m in hood], model.n_actions[j], model.n_states[j]
    )
    index: list[Any] = [
        slice(fixed[m][0], fixed[m][0] + 1) if m in fixed else slice(None) for m in hood
    ]
    kept = [fixed[j][1]] if j in fixed else list(plan.actions[j])
    block = kernel[(*index, kept, slice(None))]
    # the state axes of N_j sorted by their tensor positions; the action axis after them
    perm = sorted(range(len(hood)), key=lambda p: rank[hood[p]])
    block = block.transpose([*perm, len(hood), len(hood) + 1])
    shape = [1] * (2 * n) + [model.n_states[j]]
    for p in perm:
        shape[rank[hood[p]]] = block.shape[perm.index(p)]
    shape[2 * n - 1 - rank[j]] = len(kept)
    return np.ascontiguousarray(block.reshape(shape))


class _Buffers:
    """Three reusable flat float64 buffers of ``size`` floats for the contraction steps: a
    fresh array per step would be zero-filled by the kernel page by page."""

    def __init__(self, size: int) -> None:
        self.pool = [np.empty(size) for _ in range(3)]

    def view(self, avoid: FloatArray | None, shape: Sequence[int]) -> FloatArray:
        """A ``shape`` view of a buffer that holds neither ``avoid`` nor the last view."""
        count = prod(shape)
        for k, buffer in enumerate(self.pool):
            if avoid is not None and np.shares_memory(buffer, avoid):
                continue
            if getattr(self, "last", -1) == k:
                continue
            self.last = k
            return buffer[:count].reshape(shape)
        raise AssertionError("three buffers cannot all be busy")  # pragma: no cover


def _chunk_future(
    model: NetworkedMDP,
    plan: _SpreadPlan,
    values: FloatArray,
    fixed: dict[int, tuple[int, int]],
    buffers: _Buffers,
    cache: dict[tuple[Any, ...], FloatArray],
) -> FloatArray:
    """``W_i(s, a) = gamma sum_{s'} prod_j P_j(s'_j | s_{N_j}, a_j) V_i(s')`` on one chunk,
    C-contiguous with the axes of ``plan.layout`` (states in layout order, then actions in
    reverse layout order; size 1 where fixed).  The result lives in ``buffers``.

    ``Q_i = r_i(s_i, a_i) + W_i`` and ``(s_i, a_i)`` is part of every ``z_{N_i^kappa}``, so
    the reward is constant on each group and ``D_i(kappa)`` is the grouped max-minus-min of
    ``W_i`` alone (``proofs_notes/decay.md#streamed-spreads``).

    The next-state axes are summed one agent at a time in ``plan.order``: the axis that
    holds ``s'_j`` holds ``a_j`` once ``P_j`` is contracted, and ``P_j`` adds only the state
    axes of ``N_j`` (``proofs_notes/decay.md#streamed-spreads``)."""
    n = model.n
    rank = {m: r for r, m in enumerate(plan.layout)}
    shape = [1] * n + [model.n_states[m] for m in reversed(plan.layout)]
    table: FloatArray = (
        values.reshape(model.n_states).transpose(list(reversed(plan.layout))).reshape(shape)
        * model.gamma  # |S| floats: cheaper here than on the chunk
    )
    for j in plan.order:
        block = _kernel_block(model, plan, j, fixed, cache)
        axis = 2 * n - 1 - rank[j]
        lead = (slice(None),) * axis
        first = table[(*lead, slice(0, 1))]
        out_shape = np.broadcast_shapes(block.shape[:-1], first.shape)
        out = buffers.view(table, out_shape)
        if model.n_states[j] == 2:
            # rows sum to one: P(0) T_0 + P(1) T_1 = T_1 + P(0) (T_0 - T_1), two passes over
            # the result instead of three, the difference on the smaller operand
            second = table[(*lead, slice(1, 2))]
            gap = buffers.view(table, first.shape)
            np.subtract(first, second, out=gap)
            np.multiply(block[..., 0], gap, out=out)
            out += second
            buffers.last = next(
                k for k, b in enumerate(buffers.pool) if np.shares_memory(b, out)
            )
        else:
            np.multiply(block[..., 0], first, out=out)
            if model.n_states[j] > 1:
                term = buffers.view(table, out_shape)
                for x in range(1, model.n_states[j]):
                    np.multiply(block[..., x], table[(*lead, slice(x, x + 1))], out=term)
                    out += term
                buffers.last = next(
                    k for k, b in enumerate(buffers.pool) if np.shares_memory(b, out)
                )
        table = out
    return table


def _fold(ufunc: np.ufunc, table: FloatArray, axis: int) -> FloatArray:
    """``ufunc.reduce`` over ``axis`` of a C-contiguous 3-D table, folded slice by slice (one
    vectorised pass per slice) when the axis is short, which is several times faster than
    numpy's reduction over a short axis."""
    if table.shape[axis] == 1:
        return table.reshape(table.shape[:axis] + table.shape[axis + 1 :])
    if table.shape[axis] > 16:
        out: FloatArray = ufunc.reduce(table, axis=axis)
        return out
    lead: tuple[Any, ...] = (slice(None),) * axis
    out = ufunc(table[(*lead, 0)], table[(*lead, 1)])
    for col in range(2, table.shape[axis]):
        ufunc(out, table[(*lead, col)], out=out)
    return out


def _reduce_outside(ufunc: np.ufunc, table: FloatArray, inside: int, outside: int) -> FloatArray:
    """``table`` viewed as ``(S_in, S_out A_out, A_in)`` (``inside = S_in``, ``outside =
    S_out A_out``: the agents outside ``N_i^kappa`` are one contiguous middle block)
    reduced over the middle axis."""
    return _fold(ufunc, table.reshape(inside, outside, -1), 1).reshape(-1)


def _streamed_spreads(
    model: NetworkedMDP,
    plan: _SpreadPlan,
    values: FloatArray,
    kappas: Sequence[int],
    tick: Callable[[], None],
) -> list[float]:
    """``D_i(kappa)`` for every ``kappa`` of ``kappas`` by streaming ``Q_i`` chunk by chunk.

    The agents outside ``N_i^kappa`` own one contiguous middle block of axes (the last state
    axes and the first action axes), so within a chunk the max and min over them fold one
    middle axis; they are taken for the largest radius first and refined from there.  Where
    a fixed agent lies outside ``N_i^kappa`` the chunk contributes its overall max and min
    to a running table over ``z_{N_i^kappa}`` (whose agents are then all fixed).  Max and min do not
    round, so the result is the grouped max-minus-min of :func:`decay_spread` up to the
    rounding of the table itself."""
    layout, c = plan.layout, plan.chunk
    hood_len = {k: len(model.graph.neighbourhood(plan.agent, k)) for k in kappas}
    descending = sorted(set(kappas), reverse=True)
    spread = dict.fromkeys(descending, 0.0)
    running: dict[int, tuple[FloatArray, FloatArray]] = {}
    for k in descending:
        if hood_len[k] < c:
            shape = tuple(
                model.n_states[m] * len(plan.actions[m]) for m in layout[: hood_len[k]]
            )
            running[k] = (np.full(shape, -np.inf), np.full(shape, np.inf))
    grids = [
        [(s, a) for s in range(model.n_states[m]) for a in plan.actions[m]]
        for m in layout[:c]
    ]
    cells = [{sa: p for p, sa in enumerate(grid)} for grid in grids]
    state_sizes = [model.n_states[m] for m in layout]
    action_sizes = [len(plan.actions[m]) for m in layout]
    buffers = _Buffers(max(plan.widest, plan.chunk_pairs))
    cache: dict[tuple[Any, ...], FloatArray] = {}
    for combo in product(*grids):
        fixed = dict(zip(layout[:c], combo, strict=True))
        q = _chunk_future(model, plan, values, fixed, buffers, cache)
        hi: FloatArray = q.reshape(-1)
        lo: FloatArray = hi
        kept = len(layout)  # agents of the layout whose axes hi and lo still carry
        overall: tuple[float, float] | None = None
        for k in descending:
            if hood_len[k] >= c:
                if hood_len[k] < kept:
                    inside = prod(state_sizes[c : hood_len[k]])
                    outside = prod(state_sizes[hood_len[k] : kept]) * prod(
                        action_sizes[hood_len[k] : kept]
                    )
                    hi = _reduce_outside(np.maximum, hi, inside, outside)
                    lo = _reduce_outside(np.minimum, lo, inside, outside)
                    kept = hood_len[k]
                if hi is not lo:  # before any reduction every group is one pair
                    spread[k] = max(spread[k], float(np.max(hi - lo)))
            else:
                if overall is None:
                    overall = (float(hi.max()), float(lo.min()))
                top, bottom = running[k]
                cell = tuple(cells[r][combo[r]] for r in range(hood_len[k]))
                top[cell] = max(top[cell], overall[0])
                bottom[cell] = min(bottom[cell], overall[1])
        del q, hi, lo
        tick()
    for k, (top, bottom) in running.items():
        spread[k] = float(np.max(top - bottom))
    return [spread[k] for k in kappas]


@dataclass(frozen=True)
class DecayProfile:
    """Decay spreads and their derived bound for every agent and radius.

    Attributes:
        kappa: ``(K,)`` radii ``0..diameter``.
        spread: ``(n, K)`` ``D_i(kappa)``.
        bound: ``(n, K)`` ``Delta_i gamma^t0(kappa, beta) / (1-gamma)``, and 0 once
            ``N_i^kappa`` is the whole component of ``i``.
        t0: ``(K,)`` ``first_escape_time(kappa, beta)``.
        delta: ``(n,)`` ``Delta_i = max r_i - min r_i`` of the shadow rewards.
        beta: observation radius of the policy.
    """

    kappa: IntArray
    spread: FloatArray
    bound: FloatArray
    t0: IntArray
    delta: FloatArray
    beta: int


def decay_profile(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    solution: NetworkedSolution,
    kappas: Sequence[int] | None = None,
    *,
    memory_limit: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DecayProfile:
    """``D_i(kappa)`` of the shadow Q-functions in ``solution`` and the derived bound.

    Exact, and streamed: no joint ``(|S|, |A|)`` table is formed.  For each agent ``i`` the
    joint pairs are split into chunks that fix the local states and actions of the agents
    nearest ``i``; on each chunk ``Q_i = r_i + gamma P V_i`` is contracted from the local
    kernels one next-state axis at a time, and the max and min over the agents outside
    ``N_i^kappa`` are taken for every ``kappa`` at once, largest radius first
    (``proofs_notes/decay.md#streamed-spreads``).  Actions with identical kernel slices are visited
    once (they give equal ``Q_i`` for ``i`` other than their agent).  The chunk size is
    chosen so that the predicted peak memory fits the limit, and every plan is made, and
    checked, before anything of joint size is allocated.

    Args:
        model, policy, solution: the instance and its exact solution (per-agent values are
            solved here if ``solution`` holds only the team value).
        kappas: radii (default ``0..diameter``).
        memory_limit: override of the memory limit (bytes).
        progress: called as ``progress(done, total)`` after each chunk.

    Raises:
        MemoryLimitError: before any work, when even the smallest chunks do not fit.
    """
    ks = list(range(model.graph.diameter + 1)) if kappas is None else [
        _check_radius(k) for k in kappas
    ]
    limit = resolve_limit(memory_limit)
    plans = [_spread_plan(model, i, ks, limit) for i in range(model.n)]
    delta = np.array([float(np.ptp(r)) for r in solution.shadow_rewards])
    values = per_agent_values(model, policy, solution, memory_limit=memory_limit).x
    total = sum(p.chunks for p in plans)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    spread = np.array(
        [
            _streamed_spreads(
                model, plans[i], np.ascontiguousarray(values[:, i]), ks, tick,
            )
            for i in range(model.n)
        ]
    ).reshape(model.n, len(ks))
    # the bound, and D_i itself, vanish once N_i^kappa is i's whole component
    bound = np.array(
        [
            [
                0.0 if k >= model.graph.component_radius(i)
                else decay_bound(delta[i], model.gamma, k, policy.beta)
                for k in ks
            ]
            for i in range(model.n)
        ]
    )
    t0 = np.array([first_escape_time(k, policy.beta) for k in ks], dtype=np.int64)
    return DecayProfile(
        np.array(ks, dtype=np.int64), frozen(spread), frozen(bound), t0, frozen(delta),
        policy.beta,
    )


def truncated_gradient(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    solution: NetworkedSolution,
    kappa: int,
    weights: Weights = "occupancy",
    shadow_qs: Sequence[FloatArray] | None = None,
) -> tuple[FloatArray, ...]:
    """``ghat_i = sum_{s,a} lam(s,a) [(1/n) sum_{j in N_i^kappa} Qhat_j(z_{N_j^kappa})] score_i``.

    ``||ghat_i - grad_i F||_2 <= sqrt(2) max_j D_j(kappa) / (1 - gamma)`` and ``ghat = grad F``
    once ``N_j^kappa`` covers every agent's component (``proofs_notes/truncated-gradient.md``).
    """
    qs = shadow_q(model, policy, solution) if shadow_qs is None else shadow_qs
    pi = policy.joint_matrix()
    lam = solution.lam_S[:, None] * pi
    hats = [truncated_q(model, qs[j], j, kappa, weights, lam).joint for j in range(model.n)]
    grads = []
    for i in range(model.n):
        members = model.graph.neighbourhood(i, kappa)
        local = np.sum([hats[j] for j in members], axis=0) / model.n
        grads.append(score_contraction(policy, solution.lam_S, local, i, pi))
    return tuple(grads)


def occupancy_identity_holds(model: NetworkedMDP, beta: int, kappa: int) -> bool:
    """Whether ``N_i^beta`` lies in ``N_j^kappa`` for every ``i`` and every ``j`` in
    ``N_i^kappa``: then agent ``i``'s score is a function of ``z_{N_j^kappa}`` and the
    occupancy-conditional truncation of ``Q_j`` keeps its contribution to ``grad_i F`` exactly
    (:func:`occupancy_truncated_gradient`).  Always true for ``beta = 0``."""
    graph = model.graph
    kappa, beta = _check_radius(kappa), _check_radius(beta, "beta")
    return all(
        set(graph.neighbourhood(i, beta)) <= set(graph.neighbourhood(j, kappa))
        for i in range(model.n)
        for j in graph.neighbourhood(i, kappa)
    )


def occupancy_truncated_gradient(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    solution: NetworkedSolution,
    kappa: int,
    *,
    contributions: Sequence[Sequence[FloatArray]] | None = None,
    memory_limit: float | None = None,
) -> tuple[FloatArray, ...]:
    """``ghat_i`` with occupancy-conditional weights, without joint tables:
    ``ghat_i = (1/n) sum_{j in N_i^kappa} G[i][j]``, ``G`` from
    :func:`~reference.networked.exact.gradient_contributions`.

    Identity (``proofs_notes/truncated-gradient.md#occupancy-identity``): when agent ``i``'s
    score is a function of ``z = z_{N_j^kappa}`` (:func:`occupancy_identity_holds`),
    ``sum_{s,a} lam Qhat_j score_i = sum_z score_i(z) sum_{(s,a) in z} lam Q_j = G[i][j]``,
    because ``Qhat_j(z)`` is the ``lam``-weighted mean of ``Q_j`` over the group ``z``.  So the
    truncation error is ``ghat_i - grad_i F = -(1/n) sum_{j not in N_i^kappa} G[i][j]``.
    :func:`truncated_gradient` with ``weights="occupancy"`` is the independent route on joint
    tables.

    Raises:
        ModelError: the identity does not hold at this ``kappa`` and ``policy.beta``.
    """
    if not occupancy_identity_holds(model, policy.beta, kappa):
        raise ModelError(
            f"kappa = {kappa}, beta = {policy.beta}: some N_i^beta is not inside N_j^kappa "
            "for a j in N_i^kappa; use truncated_gradient on joint tables"
        )
    g = (
        gradient_contributions(model, policy, solution, memory_limit=memory_limit)
        if contributions is None else contributions
    )
    out = []
    for i in range(model.n):
        members = model.graph.neighbourhood(i, kappa)
        out.append(frozen(np.sum([g[i][j] for j in members], axis=0) / model.n))
    return tuple(out)


def cancellation_residual(
    policy: LocalizedSoftmaxPolicy, lam_S: FloatArray, i: int, h: FloatArray
) -> FloatArray:
    """``sum_{s,a} lam(s,a) h(s,a) score_i(a_i|o_i(s))`` for a joint table ``h``.

    The cancellation identity (SPEC section 3) says this is 0 whenever ``h`` depends only
    on ``z_{N_j^kappa}`` for some ``j`` not in ``N_i^kappa`` (then ``h`` cannot depend on
    ``a_i`` and ``sum_{a_i} pi_i score_i = 0``), for every ``beta``.
    """
    return score_contraction(policy, lam_S, h, i)


def score_norm_mass(
    policy: LocalizedSoftmaxPolicy, lam_S: FloatArray, i: int, power: int = 1
) -> float:
    """``sum_s lam_S(s) E_{a_i ~ pi_i(.|o_i(s))} ||score_i(a_i | o_i(s))||_2^power``.

    ``||score_i(a|o)||_2^2 = 1 - 2 pi_i(a|o) + ||pi_i(.|o)||^2``, so ``power = 2`` gives
    ``sum_s lam_S(s) (1 - ||pi_i(.|o_i(s))||^2)``; ``power = 1`` is the factor of the sharp
    truncated-gradient bound (``proofs_notes/truncated-gradient.md#sharp``), at most
    ``sqrt(1 - 1/|A_i|) / (1 - gamma)`` by Jensen's inequality.  ``lam_S`` has shape ``(|S|,)``.
    """
    if power not in (1, 2):
        raise ModelError(f"power = {power!r}, expected 1 or 2")
    p = policy.probs[i]
    # ||e_a - p||^2 = (sum_{b != a} p_b)^2 + sum_{b != a} p_b^2, summed over the other
    # actions only: the form 1 - 2 p_a + ||p||^2 cancels to rounding (1e-16) when p_a is
    # near 1, and its square root then loses the term of the likely action (about
    # sqrt(2) (1 - p_a)) entirely once 1 - p_a < 1e-8
    others = p[:, None, :] * (1.0 - np.eye(p.shape[1]))[None, :, :]
    sq = np.sum(others, axis=2) ** 2 + np.sum(others * others, axis=2)
    per_obs = np.sum(p * (np.sqrt(sq) if power == 1 else sq), axis=1)
    return float(lam_S @ per_obs[policy.observation_index(i)])


@dataclass(frozen=True)
class GradientErrorBounds:
    """Two bounds on ``||ghat_i - grad_i F||_2`` at one radius, per agent.

    Attributes:
        kappa: the radius.
        spec: ``(n,)`` SPEC section 3's ``sqrt(2) max_j D_j(kappa) / (1 - gamma)``.
        sharp: ``(n,)`` ``(1/n) sum_j c_ij D_j(kappa) m_i`` with ``c_ij = 1`` for ``j`` in
            ``N_i^kappa``, ``1/2`` outside, and ``m_i`` = :func:`score_norm_mass`
            (``proofs_notes/truncated-gradient.md#sharp``); never larger than ``spec``.
        score_mass: ``(n,)`` the ``m_i``.
    """

    kappa: int
    spec: FloatArray
    sharp: FloatArray
    score_mass: FloatArray


def gradient_error_bounds(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    lam_S: FloatArray,
    spreads: FloatArray,
    kappa: int,
) -> GradientErrorBounds:
    """Both bounds on the truncated gradient's error at radius ``kappa``, for any weights.

    ``lam_S`` ``(|S|,)`` the state occupancy; ``spreads`` ``(n,)`` the ``D_j(kappa)``
    (:func:`decay_profile`).  The sharp bound subtracts from the error term
    ``E = (1/n) sum_j (Qhat_j - Q_j)`` its midpoint over ``a_i`` for every ``j`` outside
    ``N_i^kappa`` (which the score does not see, as in the cancellation identity), halving
    those agents' share, and weights the score by the policy instead of its worst case
    ``sqrt 2`` (``proofs_notes/truncated-gradient.md#sharp``).
    """
    kappa = _check_radius(kappa)
    D = np.asarray(spreads, dtype=np.float64)
    if D.shape != (model.n,):
        raise ModelError(f"spreads has shape {D.shape}, expected ({model.n},)")
    spec = np.full(model.n, np.sqrt(2.0) * float(D.max()) / (1.0 - model.gamma))
    mass = np.array([score_norm_mass(policy, lam_S, i) for i in range(model.n)])
    sharp = np.empty(model.n)
    for i in range(model.n):
        inside = set(model.graph.neighbourhood(i, kappa))
        c = np.array([1.0 if j in inside else 0.5 for j in range(model.n)])
        sharp[i] = float(c @ D) / model.n * mass[i]
    return GradientErrorBounds(kappa, frozen(spec), frozen(sharp), frozen(mass))
