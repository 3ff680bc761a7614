"""The matrix-free transition operator: ``P_pi`` applied by contractions along the graph.

Under a localized policy the joint kernel is a product of local factors
(``proofs_notes/occupancy-and-flow.md``, Result 4)::

    P_pi(s' | s) = prod_i M_i[s_{D_i}, s'_i],        D_i = N_i^{max(1, beta)},
    M_i[s_{D_i}, s'_i] = sum_{a_i} pi_i(a_i | s_{N_i^beta}) P_i(s'_i | s_{N_i}, a_i).

Each ``M_i`` is a small tensor over the local states of ``D_i`` (it needs neither ``|S|``
rows nor a joint index table).  :class:`MatrixFreeOperator` applies ``P_pi``, ``P_pi^T``
and the agent-marginal kernels ``P^{(i,b)}`` (``M_i`` replaced by
``K_i^b[s_{D_i}, s'_i] = P_i(s'_i | s_{N_i}, b)``) to vectors by contracting one group of
next-state axes at a time, in an order chosen once per graph and observation radius
(:func:`contraction_plan`).  Each step is one batched matrix product::

    out[x, b, e, y] = sum_c F_G[b, e, c] t[x, b, c, y]

where ``c`` runs over the next states of the step's agents ``G``, ``b`` over the current
states the intermediate already carries and ``F_G = prod_{i in G} M_i`` depends on, ``e`` over
the current states ``F_G`` introduces, ``x`` and ``y`` over everything else.  The adjoint
(``P_pi^T``) runs the same steps backwards with ``F_G`` transposed.  The intermediate has
``|S| * excess`` entries, ``excess`` being the product of ``|S_j|`` over the agents whose
current state is already introduced and whose next state is not yet contracted: ``|S_i|^w``
on a line and ``|S_i|^(2w)`` on a ring with ``w = max(1, beta)``, never ``|S|^2``.

All agents' occupancy-weighted agent-marginal forms come from one reverse-mode
differentiation of ``u^T P_pi v`` (:meth:`MatrixFreeOperator.agent_forms`,
``proofs_notes/matrix-free.md#reverse``); steps and vector updates are split over threads
(``#threads``).

Solves use BiCGSTAB (or GMRES) on ``I - gamma P_pi`` (or its transpose) with the certificate of
``proofs_notes/occupancy-and-flow.md`` (Result 3), here with the rounding term of the
contraction: an application errs by at most ``depth * eps`` times ``|P_pi| |x|``, where
``depth`` is the number of roundings along one path of the contraction tree (a few per
agent), not ``|S|``.  Derivations, the cost formula and the tests that check each claim:
``proofs_notes/matrix-free.md``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from math import ceil, frexp, ldexp, log, prod
from typing import Literal

import numpy as np
import numpy.typing as npt
import scipy.sparse.linalg as spla
from numpy.lib.stride_tricks import as_strided

from reference._arrays import EPS_F64, FloatArray, read_only, streamed_empty
from reference.errors import ModelError, SolverError
from reference.memory import check_memory, predicted_bytes
from reference.memory import memory_limit as resolve_limit
from reference.networked.model import NetworkedMDP
from reference.networked.policy import LocalizedSoftmaxPolicy
from reference.networked.transition import LinearSolve, TransitionOperator

__all__ = [
    "DEFAULT_ACCURACY",
    "ContractionPlan",
    "ContractionStep",
    "MatrixFreeOperator",
    "agent_forms_by_applications",
    "application_slabs",
    "contraction_plan",
    "fixed_point_iterations",
    "krylov_restart",
    "matrix_free_memory",
    "minimum_accuracy",
    "plan_for_accuracy",
    "plan_row_sum_bound",
    "reverse_forms_fit",
    "reverse_forms_slabs",
]

DEFAULT_ACCURACY = 1e-10
"""Default requested accuracy of a matrix-free solve, relative to the a priori solution scale
``||b|| / (1 - gamma)``: the certified error bound is at most this times that scale."""

_RESTART = 30
"""GMRES restart length (Krylov vectors kept); lowered, down to :data:`_MIN_RESTART`, when the
memory limit is tight."""

_MIN_RESTART = 5

_BICGSTAB_ITERATIONS = 30
"""BiCGSTAB iterations (two applications each) per call; after each call the residual is
recomputed and checked."""

_BICGSTAB_VECTORS = 7
"""Vectors of ``|S|`` floats BiCGSTAB keeps (iterate, residual, shadow residual, search
direction and three products)."""

_GMRES_CYCLES = 2
"""Restart cycles per GMRES call; after each call the residual is recomputed and checked."""

_GMRES_PROGRESS = 0.5
"""A GMRES call must at least halve the certified residual norm; otherwise the solve keeps
the better iterate and continues by the fixed-point iteration, which contracts by
``gamma rho`` per step whatever the spectrum."""

_TINY_RHS = 2.0**-1000
"""Below this norm a right-hand side is answered by ``x = 0`` and the a priori bound
``||b|| / (1 - gamma rho)`` (scaling it to unit norm would lose the subnormal digits)."""

_SUBNORMAL = 2.0**-1074
"""The smallest positive float64: the rounding of scaling a subnormal entry by a power of
two."""

_GROUP_ENTRIES = 1 << 12
"""Largest merged step factor ``F_G`` (entries) the grouping may form; one agent's own factor
is always allowed whatever its size."""

_GROUP_AGENTS = 8
"""Most agents merged into one step."""

_PASS_COST = 16.0
"""Cost, in multiply-adds, of streaming one float of an intermediate through memory (the
contractions are memory-bound); used only to compare candidate plans."""

_CALL_COST = 2.0e5
"""Fixed cost, in multiply-adds, of one numpy call (a step or a transpose); used only to
compare candidate plans."""

_GREEDY_STARTS = 24
"""Graphs with more agents try only this many start agents (the smallest supports first)."""

_BLAS_PRODUCT = 1 << 18
"""Largest ``m n k`` of one BLAS matrix product a contraction step issues.  OpenBLAS runs a
product of at most ``4 * 65536`` multiply-adds on the calling thread (its
``GEMM_MULTITHREAD_THRESHOLD``); larger ones are handed to worker threads, which on a loaded
machine stalls each call for milliseconds (measured: one step's batch of
``(32 x 32)(32 x 2048)`` products 50 times slower with two contended threads).  The
contractions are memory-bound, so splitting costs nothing measurable
(``proofs_notes/matrix-free.md#plan``)."""

_OLD, _NEW = 0, 1  # axis kinds: current state s_j, next state s'_j


# ---------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class ContractionStep:
    """One step ``out[x, b, e, y] = sum_c F_G[b, e, c] t[x, b, c, y]`` of a plan.

    Attributes:
        agents: ``G``, the agents whose next-state axes the step contracts (consecutive in
            the plan's order, at least one).
        support: ``D_G``, the union of their dependency sets, increasing.
        shared: agents of ``D_G`` whose current-state axes the intermediate already carries
            (``b``), in the intermediate's axis order.
        introduced: agents of ``D_G`` whose current-state axes the step introduces (``e``).
        permutation: axis permutation applied to the intermediate before the step, ``None``
            when it is already in order (axes of size 1 are not materialised).
        lead: ``L``, the product of the local state counts of the shared axes that lead the
            intermediate (its first axes, before ``x``); the intermediate is then laid out
            ``(L, X, B / L, C, Y)`` and the step is ``L`` steps on contiguous slabs, with
            the rows ``l B / L .. (l + 1) B / L`` of ``F_G`` (``shared`` lists the leading
            agents first).  1 when all shared axes directly precede ``C``.
        layout: axis sizes of the intermediate before the permutation (without the column
            axis of a multi-column input).
        sizes: ``(X, B, C, Y)``, the products of the local state counts over the four axis
            groups (``C`` = next states of ``G``, ``Y`` = next states still to contract).
        introduced_size: ``E = prod_{j in introduced} |S_j|``.
    """

    agents: tuple[int, ...]
    support: tuple[int, ...]
    shared: tuple[int, ...]
    introduced: tuple[int, ...]
    permutation: tuple[int, ...] | None
    layout: tuple[int, ...]
    sizes: tuple[int, int, int, int]
    introduced_size: int
    lead: int = 1

    @property
    def matrix_floats(self) -> int:
        """Entries of the merged step matrix ``F_G`` (``B E C``)."""
        return self.sizes[1] * self.introduced_size * self.sizes[2]

    @property
    def input_floats(self) -> int:
        """Entries of the intermediate before the step (per column)."""
        x, b, c, y = self.sizes
        return x * b * c * y

    @property
    def output_floats(self) -> int:
        """Entries of the intermediate after the step (per column)."""
        x, b, _, y = self.sizes
        return x * b * self.introduced_size * y


@dataclass(frozen=True)
class ContractionPlan:
    """How :class:`MatrixFreeOperator` contracts ``P_pi`` against a vector.

    Attributes:
        n_states: ``(|S_0|, ..., |S_{n-1}|)``.
        supports: ``D_i = N_i^{max(1, beta)}`` per agent, increasing.
        order: agents in contraction order (greedy, ``proofs_notes/matrix-free.md#order``).
        steps: the grouped steps.
        final_permutation: axis permutation from the last intermediate to agents ``0..n-1``.
        final_layout: axis sizes of the last intermediate.
        peak_floats: largest ``input + output`` of a step, per column: the working memory of
            one application besides its input and result.
        flops: multiply-adds of one application, per column (``sum_k output_k * C_k``).
        depth: rounding depth of ``P_pi v``: ``sum_k (C_k + |G_k| - 1)``, the roundings along
            one path (a dot product of length ``C_k`` per step and the ``|G_k| - 1``
            products that formed ``F_G``).
        transpose_depth: the same for ``P_pi^T u``: ``sum_k (E_k + |G_k| - 1)``.
        slab_agent: the agent ``a`` whose current-state axis leads every intermediate from
            the first step's output to the last (``None`` if no agent does): fixing
            ``s_a`` then cuts every intermediate into ``|S_a|`` contiguous slabs that the
            steps never mix, so an application can run slab by slab in ``1 / |S_a|`` of
            the work memory (:attr:`MatrixFreeOperator.slabs`,
            ``proofs_notes/matrix-free.md#slabs``).
    """

    n_states: tuple[int, ...]
    supports: tuple[tuple[int, ...], ...]
    order: tuple[int, ...]
    steps: tuple[ContractionStep, ...]
    final_permutation: tuple[int, ...]
    final_layout: tuple[int, ...]
    peak_floats: int
    flops: int
    depth: int
    transpose_depth: int
    slab_agent: int | None = None

    @property
    def n_joint(self) -> int:
        """``|S|``."""
        return prod(self.n_states)

    @property
    def max_excess(self) -> int:
        """Largest intermediate divided by ``|S|`` (the product of ``|S_j|`` over agents whose
        current state is introduced and next state not yet contracted)."""
        return max(max(s.input_floats, s.output_floats) for s in self.steps) // self.n_joint

    @property
    def buffer_floats(self) -> int:
        """Entries of each of the two work buffers of an application, per column: the
        largest intermediate (input or output) of any step."""
        return max(max(s.input_floats, s.output_floats) for s in self.steps)

    def slab_buffer_floats(self, slabs: int) -> int:
        """Entries of each work buffer of an application run in ``slabs`` slabs over
        :attr:`slab_agent` (per column): the largest intermediate of one slab, and at least
        ``|S|`` (the adjoint's last step writes a whole ``P_pi^T u`` term per slab before
        adding it up).  ``slabs = 1`` is :attr:`buffer_floats`."""
        if slabs == 1:
            return self.buffer_floats
        return max(-(-self.buffer_floats // slabs), self.n_joint)

    def reverse_floats(self, slabs: int = 1) -> int:
        """Floats reverse-mode differentiation of one application holds
        (:meth:`MatrixFreeOperator.factor_gradients`): every step's input (the first is
        ``v``), two work buffers and the steps' ``(B, E, C)`` derivative sums; in ``slabs``
        slabs of :attr:`slab_agent` one slab's inputs of the later steps (``1 / slabs`` of
        theirs) and two slab buffers (:meth:`slab_buffer_floats`)."""
        sums = sum(s.matrix_floats for s in self.steps)
        if slabs == 1:
            return self.stored_floats + 2 * self.buffer_floats + sums
        later = sum(s.input_floats for s in self.steps[1:]) // slabs
        return self.steps[0].input_floats + later + 2 * self.slab_buffer_floats(slabs) + sums

    @property
    def stored_floats(self) -> int:
        """Entries kept by reverse-mode differentiation of one application
        (:meth:`MatrixFreeOperator.factor_gradients`): every step's input."""
        return sum(s.input_floats for s in self.steps)

    @property
    def transposes(self) -> int:
        """Steps that copy the intermediate into a new axis order."""
        return sum(s.permutation is not None for s in self.steps)

    @property
    def in_agent_order(self) -> bool:
        """Whether the last intermediate is already ``P_pi v`` in agent order (no final
        reordering copy; the adjoint then reads ``u`` as it is)."""
        return self.final_permutation == tuple(range(len(self.final_permutation)))

    def application_cost(self, slabs: int = 1) -> float:
        """Predicted cost of one application, in multiply-adds (``proofs_notes/matrix-free.md``):
        ``flops`` plus :data:`_PASS_COST` per float streamed and :data:`_CALL_COST` per call.
        In ``slabs`` slabs (``#slabs``) every call is issued once per slab (a step whose lead
        holds the slab agent has ``lead / slabs`` products per slab), and an application
        streams ``2 (slabs - 1) |S|`` floats more on average over the two directions (the
        forward rereads ``v``, the adjoint adds each further slab's term)."""
        streamed = sum(
            s.input_floats * (2 if s.permutation is not None else 1) + s.output_floats
            for s in self.steps
        )
        if not self.in_agent_order:
            streamed += 2 * self.n_joint  # the final reordering copy
        streamed += 2 * (slabs - 1) * self.n_joint
        steps = self.steps if slabs == 1 else _slab_steps(self)
        calls = slabs * (sum(s.lead for s in steps) + self.transposes + 2)
        return float(self.flops) + _PASS_COST * streamed + _CALL_COST * calls


def _excess(sizes: Sequence[int], introduced: set[int], contracted: set[int]) -> int:
    return prod(sizes[j] for j in introduced - contracted)


def _greedy_order(sizes: Sequence[int], supports: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
    """Agents in contraction order: from each start agent, repeatedly take the agent whose
    contraction leaves the smallest excess (then the fewest new current-state axes, then the
    lowest index); keep the start with the smallest ``(max excess, sum of excesses)``."""
    n = len(sizes)
    starts = sorted(range(n), key=lambda i: (prod(sizes[j] for j in supports[i]), i))
    best: tuple[tuple[int, int], tuple[int, ...]] | None = None
    for start in starts[:_GREEDY_STARTS]:
        order = [start]
        contracted = {start}
        introduced = set(supports[start])
        peak = total = _excess(sizes, introduced, contracted)
        while len(order) < n:
            candidates = [
                (
                    _excess(sizes, introduced | set(supports[i]), contracted | {i}),
                    prod(sizes[j] for j in set(supports[i]) - introduced),
                    i,
                )
                for i in range(n)
                if i not in contracted
            ]
            nxt = min(candidates)[2]
            order.append(nxt)
            contracted.add(nxt)
            introduced |= set(supports[nxt])
            ex = _excess(sizes, introduced, contracted)
            peak, total = max(peak, ex), total + ex
        score = (peak, total)
        if best is None or score < best[0]:
            best = (score, tuple(order))
    if best is None:  # n >= 1, so at least one start was tried
        raise ModelError("contraction order of an empty model")
    return best[1]


def _group(
    sizes: Sequence[int],
    supports: Sequence[tuple[int, ...]],
    order: Sequence[int],
    max_group: int,
) -> list[tuple[int, ...]]:
    """Split ``order`` into consecutive groups minimising the predicted cost
    ``sum_k [output_k (C_k + PASS) + input_k PASS + CALL]`` (dynamic programming), with merged
    factors of at most :data:`_GROUP_ENTRIES` entries."""
    n = len(order)
    n_joint = prod(sizes)
    # excess after the first k agents of the order
    excess = [1] * (n + 1)
    introduced: set[int] = set()
    for k, i in enumerate(order):
        introduced |= set(supports[i])
        excess[k + 1] = _excess(sizes, introduced, set(order[: k + 1]))
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        for start in range(max(0, end - max_group), end):
            members = order[start:end]
            support = set().union(*(supports[i] for i in members))
            c = prod(sizes[i] for i in members)
            entries = prod(sizes[j] for j in support) * c
            if end - start > 1 and entries > _GROUP_ENTRIES:
                continue
            out = n_joint * excess[end]
            cost = out * (c + _PASS_COST) + n_joint * excess[start] * _PASS_COST + _CALL_COST
            if best[start] + cost < best[end]:
                best[end], cut[end] = best[start] + cost, start
    groups: list[tuple[int, ...]] = []
    end = n
    while end > 0:
        groups.append(tuple(order[cut[end] : end]))
        end = cut[end]
    return groups[::-1]


def _layout_key(
    next_use: dict[int, int | None], following: int
) -> Callable[[int], tuple[int, int, int]]:
    """Sort key for current-state axes: used again after step ``following`` first, latest
    first (so that an axis a late step shares, such as the one closing a ring, leads the
    intermediate, where that step runs on slabs without reordering it); then never used
    again; then the axes step ``following`` shares, which so end up last."""

    def key(j: int) -> tuple[int, int, int]:
        nxt = next_use[j]
        if nxt is None:
            return (1, 0, j)
        return (2, 0, j) if nxt == following else (0, -nxt, j)

    return key


def contraction_plan(
    model: NetworkedMDP, beta: int, *, max_group: int = _GROUP_AGENTS
) -> ContractionPlan:
    """The contraction plan of ``P_pi`` for ``model`` and observation radius ``beta``.

    Depends only on the graph, the local state counts and ``beta`` (through
    ``D_i = N_i^{max(1, beta)}``), not on the policy parameters.  ``max_group`` caps the
    agents merged into one step (1: one step per agent).  See
    ``proofs_notes/matrix-free.md#plan`` for the order, the grouping and the layout rule.
    """
    if isinstance(beta, bool) or not isinstance(beta, (int, np.integer)) or beta < 0:
        raise ModelError(f"beta = {beta!r}, expected a non-negative integer radius")
    if isinstance(max_group, bool) or not isinstance(max_group, int) or max_group < 1:
        raise ModelError(f"max_group = {max_group!r}, expected a positive integer")
    return _plan(model.n_states, model.graph.neighbourhoods(max(1, int(beta))), max_group)


@lru_cache(maxsize=64)
def _plan(
    sizes: tuple[int, ...], supports: tuple[tuple[int, ...], ...], max_group: int
) -> ContractionPlan:
    """:func:`contraction_plan` from the state counts and the dependency sets (cached)."""
    order = _greedy_order(sizes, supports)
    n = len(sizes)
    groups = _group(sizes, supports, order, max_group)
    group_supports = [tuple(sorted(set().union(*(supports[i] for i in g)))) for g in groups]

    def size_of(label: tuple[int, int]) -> int:
        return sizes[label[1]]

    def materialised(labels: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        return [lab for lab in labels if size_of(lab) > 1]

    labels: list[tuple[int, int]] = [(_NEW, j) for j in range(n)]
    steps: list[ContractionStep] = []
    leaders: list[tuple[int, int]] = []  # the first axis of every intermediate after step 0
    present: set[int] = set()
    peak = flops = depth = tdepth = 0
    for k, (group, support) in enumerate(zip(groups, group_supports, strict=True)):
        later = {j: next((m for m in range(k + 1, len(groups)) if j in group_supports[m]), None)
                 for j in range(n)}
        key = _layout_key(later, k + 1)
        old = [lab[1] for lab in labels if lab[0] == _OLD]
        remaining = {lab[1] for lab in labels if lab[0] == _NEW}
        pending = [i for i in order if i in remaining]
        shared = [j for j in old if j in support]
        head: list[int] = []
        if old[len(old) - len(shared):] == shared:
            x_part = old[: len(old) - len(shared)]
        else:
            # shared axes that lead the intermediate stay there (the step runs on its
            # contiguous slabs) when the rest of the shared axes end it
            while len(head) < len(old) and old[len(head)] in support:
                head.append(old[len(head)])
            tail = [j for j in shared if j not in head]
            if head and old[len(old) - len(tail):] == tail:
                x_part = old[len(head): len(old) - len(tail)]
                shared = head + tail
            else:
                head = []
                x_part = sorted((j for j in old if j not in support), key=key)
                shared = sorted(shared, key=key)
        introduced = sorted((j for j in support if j not in present), key=key)
        rest = [i for i in pending if i not in group]
        required = (
            [(_OLD, j) for j in head + x_part + shared[len(head):]]
            + [(_NEW, i) for i in group]
            + [(_NEW, i) for i in rest]
        )
        before, after = materialised(labels), materialised(required)
        perm = tuple(before.index(lab) for lab in after)
        if k > 0:
            leaders += [lab[0] for lab in (before, after) if lab]
        step = ContractionStep(
            agents=tuple(group),
            support=support,
            shared=tuple(shared),
            introduced=tuple(introduced),
            permutation=None if perm == tuple(range(len(perm))) else perm,
            layout=tuple(size_of(lab) for lab in before),
            sizes=(
                prod(sizes[j] for j in x_part),
                prod(sizes[j] for j in shared),
                prod(sizes[i] for i in group),
                prod(sizes[i] for i in rest),
            ),
            introduced_size=prod(sizes[j] for j in introduced),
            lead=prod(sizes[j] for j in head),
        )
        steps.append(step)
        peak = max(peak, step.input_floats + step.output_floats)
        flops += step.output_floats * step.sizes[2]
        depth += step.sizes[2] + len(group) - 1
        tdepth += step.introduced_size + len(group) - 1
        present |= set(introduced)
        labels = (
            [(_OLD, j) for j in head + x_part + shared[len(head):] + introduced]
            + [(_NEW, i) for i in rest]
        )
    last = materialised(labels)
    final = tuple(last.index((_OLD, j)) for j in range(n) if sizes[j] > 1)
    # the slab agent: the first axis of step 0's output, if it leads every later layout
    opening = [j for j in steps[0].introduced if sizes[j] > 1] if steps else []
    slab_agent = opening[0] if opening else None
    if slab_agent is not None and any(
        lab != (_OLD, slab_agent) for lab in [*leaders, *last[:1]]
    ):
        slab_agent = None
    return ContractionPlan(
        n_states=tuple(sizes),
        supports=tuple(supports),
        order=tuple(order),
        steps=tuple(steps),
        final_permutation=final,
        final_layout=tuple(size_of(lab) for lab in last),
        peak_floats=peak,
        flops=flops,
        depth=depth,
        transpose_depth=tdepth,
        slab_agent=slab_agent,
    )


# ---------------------------------------------------------------------- memory and iterations
def minimum_accuracy(depth: int, gamma: float, rho: float, *, subnormal: float = 0.0) -> float:
    """The smallest relative accuracy a solve of rounding depth ``depth`` accepts.

    With ``c = 1 - gamma rho`` and ``||b|| = 1``, the residual of any iterate is evaluated
    with error ``(depth + 3) eps ((1 + gamma rho) ||x|| + 1)`` and ``||x|| <= 1/c`` near the
    solution, so no certificate can fall below ``floor / c`` with
    ``floor = (depth + 3) eps ((2 + gamma rho) + (1 + gamma rho) / c)`` (plus ``subnormal``,
    the rounding of scaling ``b``).  A solve aims at the error ``accuracy / (1 - gamma)`` and
    needs twice the floor of room: ``accuracy > 2 (1 - gamma) floor / c``
    (``proofs_notes/matrix-free.md#certificate``).
    """
    c = 1.0 - gamma * rho
    floor = (depth + 3) * EPS_F64 * ((2.0 + gamma * rho) + (1.0 + gamma * rho) / c) + subnormal
    return 2.0 * (1.0 - gamma) * floor / c


def plan_row_sum_bound(sizes: Sequence[int]) -> float:
    """An estimate, before any factor exists, of the operator's certified row-sum bound
    ``rho`` (:attr:`MatrixFreeOperator.row_sum_bound`) for choosing a plan: each float
    factor's row sums exceed 1 by about ``|S_i| eps``, and the product carries the slack
    ``1 + 2 (sum |S_i| + n) eps`` (doubled here).  The solve checks its own floor with the
    operator's actual ``rho``."""
    slack = (sum(sizes) + len(sizes)) * EPS_F64
    return float(np.prod([1.0 + k * EPS_F64 for k in sizes])) * (1.0 + 4.0 * slack)


def plan_for_accuracy(model: NetworkedMDP, beta: int, accuracy: float) -> ContractionPlan | None:
    """The default :func:`contraction_plan`, or, if its rounding depth puts ``accuracy``
    below :func:`minimum_accuracy` (merged steps contract longer dot products), the plan of
    one agent per step; ``None`` if neither can reach ``accuracy``.  The depth is the larger
    of the two solves', the adjoint's with the additions of slabs (:func:`_solve_depth`), so
    the plan reaches ``accuracy`` whether or not the memory limit makes it run in slabs."""
    rho = plan_row_sum_bound(model.n_states)
    for max_group in (_GROUP_AGENTS, 1):
        plan = contraction_plan(model, beta, max_group=max_group)
        if accuracy > minimum_accuracy(_solve_depth(plan), model.gamma, rho):
            return plan
    return None


def _solve_depth(plan: ContractionPlan) -> int:
    """The larger rounding depth of the two certified solves on ``plan``: ``depth``, and
    ``transpose_depth`` plus the ``|S_a| - 1`` additions of an adjoint in slabs of the
    :attr:`~ContractionPlan.slab_agent` ``a`` (counted whether or not the memory limit
    makes the operator take slabs, which is decided after the plan:
    ``proofs_notes/matrix-free.md#slabs``)."""
    extra = 0 if plan.slab_agent is None else plan.n_states[plan.slab_agent] - 1
    return max(plan.depth, plan.transpose_depth + extra)


def fixed_point_iterations(gamma: float, accuracy: float) -> int:
    """``k = ceil(log(accuracy) / log(gamma))``: the fixed-point iteration from 0 is within
    ``gamma^k ||b|| / (1 - gamma) <= accuracy ||b|| / (1 - gamma)`` after ``k`` steps.

    The a priori iteration count of the certified fallback of a matrix-free solve, and the
    count the backend cost model assumes (``proofs_notes/matrix-free.md#cost-model``).
    """
    if gamma <= 0.0:
        return 1
    return max(1, ceil(log(accuracy) / log(gamma)))


def matrix_free_memory(
    model: NetworkedMDP,
    plan: ContractionPlan,
    *,
    restart: int = _RESTART,
    columns: int = 1,
    solver: str = "bicgstab",
    memory_limit: float | None = None,
    slabs: int | None = None,
    applied: int | None = None,
) -> int:
    """Predicted peak bytes of an exact gradient with :class:`MatrixFreeOperator`.

    The larger of the solve phase and the gradient phase, plus what both hold.  Solves:
    ``2 applied buffer_floats`` for the two work buffers of an application of ``applied``
    columns at once (default ``columns``; a solve of ``columns`` right-hand sides takes them
    one at a time, ``applied = 1``: :meth:`MatrixFreeOperator.check_columns`),
    ``applied |S|`` for its result, and the Krylov vectors of ``|S|`` floats
    (``restart + 5`` for GMRES, ``7 + 5`` for BiCGSTAB, ``5`` for the fixed point).
    Gradient: :meth:`ContractionPlan.reverse_floats` for the reverse-mode differentiation of
    one application (:meth:`MatrixFreeOperator.factor_gradients`), whole or in slabs, when it
    fits beside what a gradient holds and the factors (:func:`reverse_forms_slabs`, the route
    :meth:`MatrixFreeOperator.agent_forms` takes; the solves' vectors are released before
    it); otherwise the forms come from agent applications (:func:`agent_forms_by_applications`:
    two work buffers, the ``(|A_i|, |S|)`` results of one agent and one product vector, the
    solves' vectors released as well).  Both phases: ``8 + 3 columns`` vectors of ``|S|`` for
    the occupancy, values, rewards and multi-column right-hand sides, and the local factors.
    Linear in ``|S|``.  The work buffers are :meth:`ContractionPlan.slab_buffer_floats` of
    ``slabs`` (default: :func:`application_slabs` for one column, the choice the operator
    makes when it is built, before any right-hand side is seen, and keeps for every column
    count; given, it must be 1 or the slab agent's ``|S_a|``, as for the operator, else
    :class:`ModelError`).
    """
    if slabs is None:
        slabs = application_slabs(
            model, plan, restart=restart, solver=solver, memory_limit=memory_limit
        )
    else:
        _check_slabs(plan, slabs)
    n_joint = plan.n_joint
    factors = _factor_floats(model, plan)
    krylov = {"gmres": restart + 5, "fixed-point": 5}.get(solver, _BICGSTAB_VECTORS + 5)
    buffer = plan.slab_buffer_floats(slabs)
    width = columns if applied is None else applied
    solving = 2 * width * buffer + width * n_joint + krylov * n_joint
    held = _held_floats(columns) * n_joint
    reverse = reverse_forms_slabs(model, plan, memory_limit)
    if reverse:
        forms = plan.reverse_floats(reverse)
    else:
        forms = _application_forms_floats(model, plan, slabs)
    return predicted_bytes(max(solving, forms), held, factors)


def _check_slabs(plan: ContractionPlan, slabs: int) -> None:
    """``slabs`` must be 1 or ``|S_a|`` for the plan's slab agent ``a``
    (:attr:`ContractionPlan.slab_agent`); anything else is refused, naming what is allowed."""
    a = plan.slab_agent
    if isinstance(slabs, bool) or not isinstance(slabs, int) or (
        slabs != 1 and (a is None or slabs != plan.n_states[a])
    ):
        allowed = "1" if a is None else f"1 or {plan.n_states[a]} (|S_{a}|)"
        raise ModelError(f"slabs = {slabs!r}, expected {allowed} for this plan")


def application_slabs(
    model: NetworkedMDP,
    plan: ContractionPlan,
    *,
    restart: int = _RESTART,
    columns: int = 1,
    solver: str = "bicgstab",
    memory_limit: float | None = None,
) -> int:
    """Slabs an application of ``plan`` runs in: 1 when :func:`matrix_free_memory` of whole
    applications fits the memory limit (or the plan has no :attr:`~ContractionPlan.slab_agent`,
    or slabs would not hold less), else ``|S_a|`` for the slab agent ``a``: the same sums,
    each slab's intermediates ``1 / |S_a|`` of the whole (``proofs_notes/matrix-free.md#slabs``).
    The one decision :class:`MatrixFreeOperator` and :func:`matrix_free_memory` both follow,
    taken for one column (``columns``, default 1, asks what whole applications of that many
    columns would need; the operator decides once, when it is built, and keeps its slabs for
    applications of any width)."""
    if plan.slab_agent is None:
        return 1
    count = plan.n_states[plan.slab_agent]
    if plan.slab_buffer_floats(count) >= plan.buffer_floats:
        return 1
    whole = matrix_free_memory(
        model, plan, restart=restart, columns=columns, solver=solver,
        memory_limit=memory_limit, slabs=1,
    )
    return 1 if whole <= resolve_limit(memory_limit) else count


def _held_floats(columns: int = 1) -> int:
    """Joint vectors (in units of ``|S|``) an exact gradient holds through both phases: the
    occupancy, values, rewards and their temporaries (8), and ``3 columns`` for a
    multi-column right-hand side."""
    return 8 + 3 * columns


def _application_forms_floats(
    model: NetworkedMDP, plan: ContractionPlan, slabs: int = 1
) -> int:
    """Floats :func:`agent_forms_by_applications` holds on a :class:`MatrixFreeOperator`: its
    two work buffers (of ``slabs`` slabs), one agent's ``(|A_i|, |S|)`` results and one
    product vector, and that agent's ``|A_i|`` cached step matrices."""
    matrices = max(
        model.n_actions[i] * step.matrix_floats
        for step in plan.steps
        for i in step.agents
    )
    return (
        2 * plan.slab_buffer_floats(slabs) + (max(model.n_actions) + 1) * plan.n_joint
        + matrices
    )


def reverse_forms_slabs(
    model: NetworkedMDP, plan: ContractionPlan, memory_limit: float | None = None
) -> int:
    """Slabs of :meth:`MatrixFreeOperator.factor_gradients`: 1 when its stored inputs
    (:meth:`ContractionPlan.reverse_floats`) fit whole beside what a gradient holds and the
    local factors, else ``|S_a|`` when they fit in slabs of the plan's slab agent ``a``, else
    0 (:meth:`MatrixFreeOperator.agent_forms` then takes one agent application per agent and
    action).  The one decision :func:`matrix_free_memory` also follows, so its prediction
    counts the route taken (``proofs_notes/matrix-free.md#slabs``)."""
    held = _held_floats() * plan.n_joint
    factors = _factor_floats(model, plan)
    limit = resolve_limit(memory_limit)
    if predicted_bytes(plan.reverse_floats(1), held, factors) <= limit:
        return 1
    if plan.slab_agent is not None:
        count = plan.n_states[plan.slab_agent]
        slabbed = plan.reverse_floats(count)
        if slabbed < plan.reverse_floats(1) and predicted_bytes(slabbed, held, factors) <= limit:
            return count
    return 0


def reverse_forms_fit(
    model: NetworkedMDP, plan: ContractionPlan, memory_limit: float | None = None
) -> bool:
    """Whether :meth:`MatrixFreeOperator.agent_forms` takes the reverse-mode route, whole or
    in slabs (:func:`reverse_forms_slabs`), rather than one agent application per agent and
    action."""
    return reverse_forms_slabs(model, plan, memory_limit) > 0


def _factor_floats(model: NetworkedMDP, plan: ContractionPlan) -> int:
    """Floats of the local factors, the action factors and the step matrices."""
    return sum(
        prod(plan.n_states[j] for j in d) * plan.n_states[i] * (1 + model.n_actions[i])
        for i, d in enumerate(plan.supports)
    ) + sum(s.matrix_floats for s in plan.steps)


def krylov_restart(
    model: NetworkedMDP, plan: ContractionPlan, memory_limit: float | None = None
) -> int:
    """The GMRES restart length: :data:`_RESTART`, lowered in steps of 5 (not below
    :data:`_MIN_RESTART`) while :func:`matrix_free_memory` with GMRES exceeds the memory
    limit."""
    limit = resolve_limit(memory_limit)
    restart = _RESTART
    while restart > _MIN_RESTART and matrix_free_memory(
        model, plan, restart=restart, solver="gmres", memory_limit=limit
    ) > limit:
        restart -= 5
    return restart


# ---------------------------------------------------------------------- the operator
def _step_product(mat: FloatArray, t: FloatArray, out: FloatArray) -> FloatArray:
    """``out[x, b, e, y] = sum_c mat[b, e, c] t[x, b, c, y]`` as batched BLAS products of at
    most :data:`_BLAS_PRODUCT` multiply-adds each (``y`` split into chunks; same sums).

    ``t`` and ``out`` are C-contiguous; ``out`` (shape ``(x, b, e, y)``) is written in place
    and returned."""
    x, b, c, y = t.shape
    e = mat.shape[1]
    chunk = max(1, _BLAS_PRODUCT // (e * c))
    if y == 1 and x >= _ROW_PRODUCT_MIN:
        return _row_products(mat, t, out)
    if chunk >= y:
        np.matmul(mat, t, out=out)
        return out
    pieces = y // chunk
    whole = pieces * chunk

    def pieces_of(a: FloatArray, rows: int) -> FloatArray:
        # (x, b, rows, y) viewed as (x, b, pieces, rows, chunk): a strided view, no copy
        s0, s1, s2, s3 = a.strides
        view: FloatArray = as_strided(
            a, shape=(x, b, pieces, rows, chunk), strides=(s0, s1, chunk * s3, s2, s3)
        )
        return view

    np.matmul(mat[None, :, None], pieces_of(t, c), out=pieces_of(out, e))
    if whole < y:
        np.matmul(mat, t[..., whole:], out=out[..., whole:])
    return out


_ROW_PRODUCT_MIN = 64
"""Least ``x`` for which a step with ``y = 1`` is done as row-block products
(:func:`_row_products`) rather than one batched matrix-vector product per ``(x, b)``: the
batched route costs about 50 ns per ``(x, b)``, a BLAS call about 2 us per ``b`` and slab, so
the slabs win from about 40 rows on."""

_SLAB_FLOATS = 1 << 18
"""Input floats of one slab of :func:`_row_products` (2 MiB, within a core's L2 cache)."""


def _row_products(mat: FloatArray, t: FloatArray, out: FloatArray) -> FloatArray:
    """:func:`_step_product` for ``y = 1``: ``out[x, b, e] = sum_c t[x, b, c] mat[b, e, c]``.

    One batched product would be ``x b`` matrix-vector products of ``E x C`` each (about
    50 ns of overhead apiece, and no BLAS).  Here the rows ``x`` are cut into slabs of
    ``t`` of :data:`_SLAB_FLOATS` floats (contiguous, cache-resident), and within a slab each
    ``b`` is one BLAS product ``t[rows, b, :] @ mat[b]^T`` of at most :data:`_BLAS_PRODUCT`
    multiply-adds, with ``mat[b]^T`` made contiguous once (``B E C`` floats): the same sums,
    2.5 times faster at ``x = 8192, b = 16, c = 32, e = 8``."""
    x, b, c, _ = t.shape
    e = mat.shape[1]
    flipped = np.ascontiguousarray(np.swapaxes(mat, 1, 2))  # (b, c, e)
    rows = max(1, min(_BLAS_PRODUCT // (e * c), _SLAB_FLOATS // (b * c)))
    t3 = t.reshape(x, b, c)
    o3 = out.reshape(x, b, e)
    for lo in range(0, x, rows):
        hi = min(lo + rows, x)
        for k in range(b):
            np.matmul(t3[lo:hi, k], flipped[k], out=o3[lo:hi, k])
    return out


def default_threads() -> int:
    """Threads an application splits its contraction steps over: ``MARL_ORACLE_THREADS`` if
    set (a positive integer), else ``min(2, os.cpu_count())``.  Each thread issues BLAS
    products below OpenBLAS's own threading threshold (:data:`_BLAS_PRODUCT`), so the two
    never oversubscribe the cores."""
    raw = os.environ.get("MARL_ORACLE_THREADS")
    if raw is not None:
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            raise ModelError(f"MARL_ORACLE_THREADS = {raw!r}, expected a positive integer")
        return value
    return max(1, min(2, os.cpu_count() or 1))


_PARALLEL_WORK = 1 << 19
"""Smallest step (multiply-adds plus floats copied) worth splitting over threads."""

_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(threads: int) -> ThreadPoolExecutor:
    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(max_workers=threads)
    return _POOLS[threads]


def _halves(size: int, parts: int) -> list[slice]:
    bounds = [size * k // parts for k in range(parts + 1)]
    return [slice(lo, hi) for lo, hi in pairwise(bounds) if hi > lo]


def _split_axis(shape: Sequence[int], threads: int) -> int | None:
    """The axis to split work over: the first whose size reaches ``threads``, else none."""
    if not shape:
        return None
    order: list[int] = [0, len(shape) - 1, *range(1, len(shape) - 1)]
    for axis in order:
        if int(shape[axis]) >= threads:
            return axis
    return None


def _parallel(
    call: Callable[..., object], arrays: Sequence[FloatArray], work: int, threads: int
) -> None:
    """``call(*arrays)`` with the arrays (all of one shape along the split axis) cut into
    ``threads`` slabs along one axis and the slabs run on a thread pool (numpy releases the
    GIL in products and copies); the slabs are disjoint, so the result is the same."""
    axis = _split_axis(arrays[-1].shape, threads) if threads > 1 else None
    if axis is None or work < _PARALLEL_WORK:
        call(*arrays)
        return
    index = [slice(None)] * arrays[-1].ndim
    jobs = []
    for part in _halves(arrays[-1].shape[axis], threads):
        index[axis] = part
        jobs.append(_pool(threads).submit(call, *(a[tuple(index)] for a in arrays)))
    for job in jobs:
        job.result()


def _step(mat: FloatArray, t: FloatArray, out: FloatArray, threads: int) -> FloatArray:
    """:func:`_step_product` split over ``threads`` along ``x`` or ``y`` (never ``b``, which
    the matrix is indexed by)."""
    x, _, c, y = t.shape
    big = out.size * c >= _PARALLEL_WORK
    if threads > 1 and big and x < threads and y >= threads:
        jobs = []
        for part in _halves(y, threads):
            jobs.append(
                _pool(threads).submit(_step_product, mat, t[..., part], out[..., part])
            )
        for job in jobs:
            job.result()
        return out
    if threads > 1 and big and x >= threads:
        jobs = [
            _pool(threads).submit(_step_product, mat, t[part], out[part])
            for part in _halves(x, threads)
        ]
        for job in jobs:
            job.result()
        return out
    return _step_product(mat, t, out)


def _lead_step(
    mat: FloatArray, t: FloatArray, out: FloatArray, lead: int, threads: int
) -> FloatArray:
    """:func:`_step` for a step whose shared axes lead the intermediate
    (:attr:`ContractionStep.lead`): ``t`` and ``out`` are shaped ``(X, B, C, Y)`` and
    ``(X, B, E, Y)`` by the step's sizes but laid out ``(L, X, B / L, ., Y)`` in memory, so
    each of the ``L`` contiguous slabs is one step with its ``B / L`` rows of ``mat``.
    ``lead = 1`` is :func:`_step` itself."""
    if lead == 1:
        return _step(mat, t, out, threads)
    x, b, c, y = t.shape
    e = out.shape[2]
    part = b // lead
    t5 = t.reshape(lead, x, part, c, y)
    o5 = out.reshape(lead, x, part, e, y)
    for slab in range(lead):
        _step(mat[slab * part:(slab + 1) * part], t5[slab], o5[slab], threads)
    return out


def _copy(dst: FloatArray, src: FloatArray, threads: int) -> None:
    """``np.copyto(dst, src)`` split over threads along the first axis."""
    _parallel(np.copyto, (dst, src), dst.size, threads)


def _accumulate(dst: FloatArray, src: FloatArray, threads: int) -> None:
    """``dst += src`` split over threads like :func:`_copy`."""

    def add(d: FloatArray, s: FloatArray) -> None:
        np.add(d, s, out=d)

    _parallel(add, (dst, src), dst.size, threads)


@dataclass(frozen=True)
class _SlabStep:
    """A :class:`ContractionStep` on one slab ``s_a = k`` of its intermediates
    (:attr:`ContractionPlan.slab_agent`): ``sizes``, ``introduced_size``, ``lead``,
    ``layout`` and ``permutation`` of the slab, and which block of the step matrix the slab
    takes: ``block = "rows"`` (``a`` is shared: rows ``k B' .. (k + 1) B'`` of ``F_G``),
    ``"introduced"`` (the first step introduces ``a``: columns ``k E' .. (k + 1) E'``) or
    ``"all"`` (``a`` is among the step's ``x`` axes)."""

    sizes: tuple[int, int, int, int]
    introduced_size: int
    lead: int
    layout: tuple[int, ...]
    permutation: tuple[int, ...] | None
    block: Literal["rows", "introduced", "all"]

    def matrix(self, mat: FloatArray, slab: int, count: int) -> FloatArray:
        """The block of the step matrix ``mat`` (``(B, E, C)``) that slab ``slab`` of
        ``count`` uses."""
        if self.block == "rows":
            part = mat.shape[0] // count
            return mat[slab * part:(slab + 1) * part]
        if self.block == "introduced":
            part = mat.shape[1] // count
            return mat[:, slab * part:(slab + 1) * part]
        return mat


def _whole_steps(plan: ContractionPlan) -> tuple[_SlabStep, ...]:
    """The steps of ``plan`` as one slab of one (every matrix whole)."""
    return tuple(
        _SlabStep(s.sizes, s.introduced_size, s.lead, s.layout, s.permutation, "all")
        for s in plan.steps
    )


def _slab_steps(plan: ContractionPlan) -> tuple[_SlabStep, ...]:
    """The steps of ``plan`` on one slab of its :attr:`~ContractionPlan.slab_agent` ``a``:
    ``a`` is the first axis of every intermediate after the first step, so fixing it drops
    that axis from each layout, divides ``x`` (``a`` among the untouched axes) or ``B`` and
    the lead (``a`` shared, leading) or, in the first step, ``E`` by ``|S_a|``."""
    a = plan.slab_agent
    if a is None:
        raise ModelError("the plan has no slab agent")
    count = plan.n_states[a]
    out = []
    for k, step in enumerate(plan.steps):
        x, b, c, y = step.sizes
        layout, perm = step.layout, step.permutation
        block: Literal["rows", "introduced", "all"]
        if k == 0:
            sizes, lead, block = (x, b, c, y), step.lead, "introduced"
            introduced = step.introduced_size // count
        else:
            introduced = step.introduced_size
            if a in step.shared:
                sizes, lead, block = (x, b // count, c, y), max(1, step.lead // count), "rows"
            else:
                sizes, lead, block = (x // count, b, c, y), step.lead, "all"
            layout = layout[1:]
            if perm is not None:
                perm = tuple(p - 1 for p in perm[1:])
                perm = None if perm == tuple(range(len(perm))) else perm
        out.append(_SlabStep(sizes, introduced, lead, layout, perm, block))
    return tuple(out)


_CHUNK = 1 << 15
"""Floats per fused piece of a vector update on one thread (256 KiB): the pieces of all
operands of one update stay in cache between its numpy calls, so an update of several
vectors streams each through memory once (``proofs_notes/matrix-free.md#krylov``)."""

_CHUNK_THREADED = 1 << 17
"""Floats per fused piece when the update is split over threads (1 MiB): the threads take
turns at the interpreter for every numpy call of a piece, so fewer, longer pieces pay less
of it (measured, BiCGSTAB's vector work per application with two threads: 5.8 against
8.0 ms at ``2^20`` floats, 88 against 124 ms at ``2^24``)."""


def _chunked(
    kernel: Callable[[slice, FloatArray], tuple[float, ...]],
    size: int,
    threads: int,
    width: int = 0,
    maxima: int = 0,
) -> tuple[float, ...]:
    """``kernel(piece, scratch)`` over consecutive pieces of at most :data:`_CHUNK` entries
    (:data:`_CHUNK_THREADED` when split over threads) of ``range(size)``, the range cut into
    ``threads`` slabs run on the pool; returns the ``width`` partial results combined over
    the pieces: by sums (dot products, l1 norms), except the last ``maxima`` of them, by
    maxima (inf-norms).  ``scratch`` is a private buffer of one piece's floats per slab."""
    summed = width - maxima
    split = threads >= 2 and size >= _PARALLEL_WORK
    chunk = _CHUNK_THREADED if split else _CHUNK

    def combine(total: npt.NDArray[np.float64], part: Sequence[float]) -> None:
        total[:summed] += part[:summed]
        total[summed:] = np.maximum(total[summed:], part[summed:])

    def run(slab: slice) -> npt.NDArray[np.float64]:
        scratch = np.empty(min(chunk, max(1, slab.stop - slab.start)))
        total = np.zeros(width)
        for lo in range(slab.start, slab.stop, chunk):
            piece = slice(lo, min(lo + chunk, slab.stop))
            part = kernel(piece, scratch[: piece.stop - piece.start])
            if width:
                combine(total, part)
        return total

    if not split:
        return tuple(float(v) for v in run(slice(0, size)))
    jobs = [_pool(threads).submit(run, slab) for slab in _halves(size, threads)]
    totals = np.zeros(width)
    for job in jobs:
        combine(totals, tuple(job.result()))
    return tuple(float(v) for v in totals)


def _dot(a: FloatArray, b: FloatArray, threads: int = 1) -> float:
    """``<a, b>`` by numpy's own sum-of-products loop over pieces: no BLAS call, so no BLAS
    worker threads wake up to compete with the contraction threads
    (``proofs_notes/matrix-free.md#threads``)."""

    def kernel(piece: slice, scratch: FloatArray) -> tuple[float, ...]:
        return (float(np.einsum("i,i->", a[piece], b[piece])),)

    return _chunked(kernel, a.size, threads, 1)[0]


_GOLDEN = 0.6180339887498949
"""The golden ratio's fractional part: ``frac(k * _GOLDEN)`` is the Weyl sequence that
perturbs BiCGSTAB's shadow residual."""


def _sup(x: FloatArray) -> float:
    """``||x||_inf`` without a temporary array."""
    return max(float(np.max(x)), -float(np.min(x))) if x.size else 0.0


def _l1(x: FloatArray, threads: int = 1) -> float:
    """``||x||_1``: numpy's pairwise summation of ``|x|`` over pieces of :data:`_CHUNK`
    entries, the pieces' sums added in order (no temporary of ``x``'s size, whose first touch
    costs more than the sum at ``2^24`` entries)."""
    if not x.size:
        return 0.0
    flat = x.reshape(-1)

    def kernel(piece: slice, scratch: FloatArray) -> tuple[float, ...]:
        np.abs(flat[piece], out=scratch)
        return (float(np.add.reduce(scratch)),)

    return _chunked(kernel, flat.size, threads, 1)[0]


Fused = Callable[[FloatArray, FloatArray, Sequence[FloatArray]], tuple[float, ...]]
"""``fused(y, out, against)``: write ``A y`` into ``out`` and return ``<A y, a>`` for every
``a`` in ``against`` (which may include ``out`` itself), computed in the pass that finishes
``A y`` (:meth:`MatrixFreeOperator._solve_unit`)."""


def _bicgstab(
    matvec: Callable[[FloatArray, FloatArray], FloatArray],
    b: FloatArray,
    atol: float,
    maxiter: int,
    *,
    threads: int = 1,
    work: Sequence[FloatArray] | None = None,
    norm: Literal["l2", "l1", "inf"] = "l2",
    fused: Fused | None = None,
    perturb: bool = True,
) -> FloatArray:
    """BiCGSTAB (van der Vorst 1992) for ``A d = b`` from ``d = 0``, stopped when the
    recursively updated residual has ``norm`` below ``atol`` (computed in the same fused
    passes), after ``maxiter`` iterations (two products with ``A`` each) or at a breakdown;
    returns the last iterate (a view of ``work[0]`` when ``work``, six vectors shaped like
    ``b``, is given, with the recursive residual in ``work[1]``).  ``matvec(y, out)`` writes
    ``A y`` into ``out``; ``fused`` (optional, :data:`Fused`) does the same and returns the
    dot products an iteration needs from the pass that finishes the product.  ``perturb``
    (default) perturbs the shadow residual away from ``b`` (below); ``False`` takes ``b``
    itself, the textbook choice.

    Short recurrences: six vectors besides ``b`` (one the shadow residual ``r^``), updated
    in place by fused piecewise kernels (:func:`_chunked`), against GMRES's growing
    orthogonalisation (``j`` dot products and updates of ``|S|`` floats at its ``j``-th
    iteration), which dominates at ``2^20`` joint states and more.  An iteration streams
    four passes: ``v = A p`` with ``<r^, v>``; ``s = r - alpha v`` with ``||s||`` and
    ``<r^, s>``; ``t = A s`` with ``<t, s>``, ``<t, t>``, ``<r^, t>``; and one pass for
    ``x += alpha p + omega s``, ``r = s - omega t``, ``||r||`` and the next direction
    ``p = r + beta (p - omega v)``, whose ``beta`` needs ``<r^, r> = <r^, s> - omega <r^, t>``
    (known before the pass, by linearity).  Nothing here is trusted: the caller recomputes
    the residual of the returned iterate and certifies it
    (``proofs_notes/matrix-free.md#krylov``)."""
    if work is None:
        work = [np.empty_like(b) for _ in range(6)]
    x, r, p, v, t, shadow = work
    size = b.size

    def apply(y: FloatArray, out: FloatArray, against: Sequence[FloatArray]) -> tuple[float, ...]:
        if fused is not None:
            return fused(y, out, against)
        matvec(y, out)
        return tuple(_dot(out, a, threads) for a in against)

    # the shadow residual: b plus a deterministic mixed-sign perturbation of b's scale (a
    # Weyl sequence of the golden ratio).  With the shadow b itself a uniform b breaks down:
    # the residuals of the occupancy system become orthogonal to the constant vector (their
    # mass converges first, 1^T (I - gamma P^T) = (1 - gamma) 1^T), so <shadow, r> -> 0
    spread = _sup(b) if perturb else 0.0
    # the residual's size in the stopping norm: squared 2-norm, l1 norm or inf-norm pieces
    maxima = 1 if norm == "inf" else 0
    limit = atol * atol if norm == "l2" else atol

    def size_of(piece: FloatArray, scratch: FloatArray) -> float:
        if norm == "l2":
            return float(np.einsum("i,i->", piece, piece))
        np.abs(piece, out=scratch)
        return float(np.max(scratch)) if norm == "inf" else float(np.sum(scratch))

    def start(piece: slice, scratch: FloatArray) -> tuple[float, ...]:
        x[piece] = 0.0
        r[piece] = b[piece]
        p[piece] = b[piece]  # the first direction is the residual
        np.multiply(np.arange(piece.start, piece.stop, dtype=np.float64), _GOLDEN, out=scratch)
        np.remainder(scratch, 1.0, out=scratch)
        scratch -= 0.5
        scratch *= spread
        np.add(b[piece], scratch, out=shadow[piece])
        return (float(np.einsum("i,i->", shadow[piece], b[piece])),)

    def advance(alpha: float) -> None:
        """``x += alpha p`` (a stop after the half step)."""

        def kernel(piece: slice, scratch: FloatArray) -> tuple[float, ...]:
            np.multiply(p[piece], alpha, out=scratch)
            x[piece] += scratch
            return ()

        _chunked(kernel, size, threads)

    rho = _chunked(start, size, threads, 1)[0]
    for _ in range(maxiter):
        if rho == 0.0 or not np.isfinite(rho):
            break
        (denominator,) = apply(p, v, (shadow,))
        if denominator == 0.0 or not np.isfinite(denominator):
            break
        alpha = rho / denominator

        def half_step(piece: slice, scratch: FloatArray, alpha: float = alpha
                      ) -> tuple[float, ...]:
            np.multiply(v[piece], alpha, out=scratch)
            r[piece] -= scratch  # now s = r - alpha v
            return (float(np.einsum("i,i->", shadow[piece], r[piece])),
                    size_of(r[piece], scratch))

        shadow_s, s_size = _chunked(half_step, size, threads, 2, maxima)
        if s_size < limit:
            advance(alpha)
            break
        ts, tt, shadow_t = apply(r, t, (r, t, shadow))
        if tt == 0.0 or not np.isfinite(tt):
            advance(alpha)
            break
        omega = ts / tt
        rho_next = shadow_s - omega * shadow_t
        beta = (rho_next / rho) * (alpha / omega) if omega != 0.0 else 0.0

        def full_step(piece: slice, scratch: FloatArray, alpha: float = alpha,
                      omega: float = omega, beta: float = beta) -> tuple[float, ...]:
            np.multiply(p[piece], alpha, out=scratch)
            x[piece] += scratch
            np.multiply(r[piece], omega, out=scratch)
            x[piece] += scratch
            np.multiply(t[piece], omega, out=scratch)
            r[piece] -= scratch  # now the residual r = s - omega t
            np.multiply(v[piece], omega, out=scratch)
            p[piece] -= scratch
            p[piece] *= beta
            p[piece] += r[piece]  # the next direction
            return (size_of(r[piece], scratch),)

        (r_size,) = _chunked(full_step, size, threads, 1, maxima)
        rho = rho_next
        if r_size < limit or omega == 0.0:
            break
    return x


def _factor_tensor(
    model: NetworkedMDP, support: tuple[int, ...], table: FloatArray, over: Sequence[int]
) -> FloatArray:
    """``table`` (first axis: the states of ``over`` mixed radix, then trailing axes) as a
    tensor with one axis per agent of ``support`` (size 1 for agents not in ``over``)."""
    members = set(over)
    shape = [model.n_states[j] if j in members else 1 for j in support]
    out: FloatArray = table.reshape(shape + list(table.shape[1:]))
    return out


def _local_factor(
    model: NetworkedMDP, policy: LocalizedSoftmaxPolicy, support: tuple[int, ...], i: int
) -> FloatArray:
    """``M_i[s_{D_i}, s'_i] = sum_a pi_i(a | s_{N_i^beta}) P_i(s'_i | s_{N_i}, a)`` as a tensor
    with one axis per agent of ``D_i`` and a last axis ``s'_i``."""
    kernel = _factor_tensor(model, support, model.kernels[i], model.neighbourhoods[i])
    probs = _factor_tensor(model, support, policy.probs[i], policy.observed[i])
    mixed: FloatArray = np.einsum("...a,...at->...t", probs, kernel)
    full = [model.n_states[j] for j in support] + [model.n_states[i]]
    return np.ascontiguousarray(np.broadcast_to(mixed, full))


def _action_factor(model: NetworkedMDP, support: tuple[int, ...], i: int, b: int) -> FloatArray:
    """``K_i^b[s_{D_i}, s'_i] = P_i(s'_i | s_{N_i}, b)`` on the axes of ``D_i``."""
    kernel = _factor_tensor(model, support, model.kernels[i][:, b, :], model.neighbourhoods[i])
    full = [model.n_states[j] for j in support] + [model.n_states[i]]
    return np.ascontiguousarray(np.broadcast_to(kernel, full))


def _step_matrix(
    step: ContractionStep,
    supports: Sequence[tuple[int, ...]],
    factors: Sequence[FloatArray],
    sizes: Sequence[int],
) -> FloatArray:
    """``F_G[b, e, c] = prod_{i in G} F_i[s_{D_i}, s'_i]`` as a ``(B, E, C)`` array in the step's
    axis order (``|G| - 1`` products per entry, by broadcasting)."""
    d = step.support
    group = step.agents
    merged: FloatArray = np.ones([1] * (len(d) + len(group)))
    for pos, (i, f) in enumerate(zip(group, factors, strict=True)):
        members = set(supports[i])
        shape = [sizes[j] if j in members else 1 for j in d]
        shape += [sizes[i] if g == pos else 1 for g in range(len(group))]
        term = f.reshape(shape)
        merged = term if pos == 0 else merged * term
    merged = np.broadcast_to(merged, [sizes[j] for j in d] + [sizes[i] for i in group])
    axes = [d.index(j) for j in step.shared + step.introduced]
    axes += [len(d) + g for g in range(len(group))]
    b, c = step.sizes[1], step.sizes[2]
    return np.ascontiguousarray(merged.transpose(axes)).reshape(b, step.introduced_size, c)


def _pair_contraction(g: FloatArray, t: FloatArray, threads: int) -> FloatArray:
    """``out[b, e, c] = sum_{x, y} g[x, b, e, y] t[x, b, c, y]``: the derivative of
    ``<g, F t>`` in the step matrix ``F``.

    For each ``b`` the sum is cut into BLAS products of at most :data:`_BLAS_PRODUCT`
    multiply-adds (so OpenBLAS keeps each on the calling thread): along ``y`` on the
    contiguous ``(E, y)`` rows of each ``x`` when ``y`` is long, along ``x`` on strided
    ``(x, E)`` views when ``y = 1``, and otherwise on slabs of ``x`` copied into ``(E, x y)``
    order (a copy the size of the cache, not of ``g``).  The pieces are spread over
    ``threads``: whole rows ``b`` per thread, summed in place in the result, when there are
    at least as many rows as threads (no partial sums: one ``(B, E, C)`` array in all);
    otherwise each thread sums into a partial of the rows its pieces touch.  The pieces are
    numbered, not listed (``b`` can be ``|S|``, as at a star's centre, and one tuple per
    piece would cost more than the ``(B, E, C)`` result)."""
    x, b, e, y = g.shape
    c = t.shape[2]
    chunk = max(1, _BLAS_PRODUCT // (e * c))
    if y >= chunk or x == 1:
        cuts = -(-y // chunk)
        per_row = x * cuts

        def piece(p: int) -> tuple[int, int, int, int]:
            k, rem = divmod(p, per_row)
            xx, cut = divmod(rem, cuts)
            return k, xx, cut * chunk, min((cut + 1) * chunk, y)
    else:
        width = chunk if y == 1 else max(1, chunk // y)
        per_row = -(-x // width)

        def piece(p: int) -> tuple[int, int, int, int]:
            k, cut = divmod(p, per_row)
            return k, cut * width, min((cut + 1) * width, x), 0

    n_pieces = b * per_row

    def piece_sum(k: int, first: int, second: int, third: int) -> FloatArray:
        if y >= chunk or x == 1:
            result: FloatArray = g[first, k, :, second:third] @ t[first, k, :, second:third].T
        elif y == 1:
            result = g[first:second, k, :, 0].T @ t[first:second, k, :, 0]
        else:
            left = np.ascontiguousarray(g[first:second, k].transpose(1, 0, 2)).reshape(e, -1)
            right = np.ascontiguousarray(t[first:second, k].transpose(1, 0, 2)).reshape(c, -1)
            result = left @ right.T
        return result

    out = np.zeros((b, e, c))

    def run(mine: slice, acc: FloatArray, first_row: int) -> FloatArray:
        for p in range(mine.start, mine.stop):
            k, first, second, third = piece(p)
            acc[k - first_row] += piece_sum(k, first, second, third)
        return acc

    if threads < 2 or n_pieces < 2 or g.size + t.size < _PARALLEL_WORK:
        return run(slice(0, n_pieces), out, 0)
    pool = _pool(threads)
    if b >= threads:
        # whole rows per thread, each summed in place in its own rows of the result
        for job in [pool.submit(run, slice(rows.start * per_row, rows.stop * per_row),
                                out[rows], rows.start) for rows in _halves(b, threads)]:
            job.result()
        return out
    # fewer rows than threads: the pieces of a row are split, each thread summing into a
    # partial of its own rows (at most b + threads - 1 rows over all threads)
    jobs = []
    for part in _halves(n_pieces, threads):
        first_row, last_row = part.start // per_row, (part.stop - 1) // per_row
        partial = np.zeros((last_row - first_row + 1, e, c))
        jobs.append((first_row, last_row, pool.submit(run, part, partial, first_row)))
    for first_row, last_row, job in jobs:
        out[first_row:last_row + 1] += job.result()
    return out


def _lead_pair_contraction(g: FloatArray, t: FloatArray, lead: int, threads: int) -> FloatArray:
    """:func:`_pair_contraction` of step ``k``'s output adjoint ``g`` and its input ``t``
    (shaped by the step's sizes, laid out by its :attr:`ContractionStep.lead`): the ``L``
    slabs' ``(B / L, E, C)`` derivatives stacked into the rows of ``(B, E, C)``."""
    if lead == 1:
        return _pair_contraction(g, t, threads)
    x, b, e, y = g.shape
    c = t.shape[2]
    part = b // lead
    g5 = g.reshape(lead, x, part, e, y)
    t5 = t.reshape(lead, x, part, c, y)
    return np.concatenate(
        [_pair_contraction(g5[slab], t5[slab], threads) for slab in range(lead)], axis=0
    )


def _step_factor_gradients(
    step: ContractionStep,
    supports: Sequence[tuple[int, ...]],
    factors: Sequence[FloatArray],
    sizes: Sequence[int],
    d_step: FloatArray,
) -> list[FloatArray]:
    """``dL/dF_i`` for every agent ``i`` of ``step`` from ``dL/dF_G`` (``(B, E, C)``), by the
    product rule on ``F_G = prod_{i in G} F_i`` (the inverse of :func:`_step_matrix`'s
    layout): ``dL/dF_i[s_{D_i}, s'_i] = sum dL/dF_G prod_{j in G, j != i} F_j`` over the
    axes of ``F_G`` outside ``D_i`` and ``s'_i``."""
    d = step.support
    group = step.agents
    axes = [d.index(j) for j in step.shared + step.introduced]
    axes += [len(d) + g for g in range(len(group))]
    full = [sizes[j] for j in d] + [sizes[i] for i in group]
    merged = d_step.reshape([full[a] for a in axes]).transpose(np.argsort(axes))
    terms = []
    for pos, (i, f) in enumerate(zip(group, factors, strict=True)):
        members = set(supports[i])
        shape = [sizes[j] if j in members else 1 for j in d]
        shape += [sizes[i] if g == pos else 1 for g in range(len(group))]
        terms.append(f.reshape(shape))
    out = []
    for pos, i in enumerate(group):
        weighted = merged
        for other, term in enumerate(terms):
            if other != pos:
                weighted = weighted * term
        members = set(supports[i])
        drop = tuple(a for a, j in enumerate(d) if j not in members)
        drop += tuple(len(d) + g for g in range(len(group)) if g != pos)
        out.append(np.ascontiguousarray(np.sum(weighted, axis=drop)))
    return out


def agent_forms_by_applications(
    op: TransitionOperator, u: FloatArray, v: FloatArray
) -> tuple[FloatArray, ...]:
    """``T_i[o, b] = sum_{s: o_i(s) = o} u(s) (P^{(i,b)} v)(s)`` from one
    :meth:`~reference.networked.transition.TransitionOperator.apply_agent` per agent (``|A_i|``
    applications each): the route of any transition operator, and of
    :meth:`MatrixFreeOperator.agent_forms` when its reverse-mode route does not fit."""
    u_arr = np.asarray(u, dtype=np.float64)
    states = op.model.states
    if u_arr.shape != (states.size,):
        raise ModelError(f"u has shape {u_arr.shape}, expected ({states.size},)")
    product = streamed_empty(states.size)
    out = []
    for i, obs in enumerate(op.policy.observed):
        applied = op.apply_agent(i, v)  # (|S|, |A_i|)
        columns = []
        for b in range(applied.shape[1]):
            np.multiply(u_arr, applied[:, b], out=product)
            columns.append(states.marginal(product, obs))
        del applied
        out.append(read_only(np.stack(columns, axis=1)))
    return tuple(out)


class MatrixFreeOperator:
    """:class:`~reference.networked.transition.TransitionOperator` by contractions of local
    factors: no ``|S| x |S|`` array is ever formed (``proofs_notes/matrix-free.md``).

    Memory: :func:`matrix_free_memory`, linear in ``|S|``, checked before anything large is
    allocated.  Solves are BiCGSTAB (or GMRES) on ``I - gamma P_pi`` (``P_pi^T`` for
    occupancies) refined on the exactly recomputed residual until the certified bound
    ``(||res|| + rounding) / (1 - gamma rho)`` is at most ``accuracy * ||b|| / (1 - gamma)``,
    with a fixed-point fallback that always gets there (see :meth:`solve_values`).

    Attributes:
        model, policy: the instance.
        plan: the :class:`ContractionPlan`.
        accuracy: requested relative accuracy of solves.
        row_sum_bound: ``rho >= max_s sum_{s'} P~(s'|s)`` for the float factors, a certified
            upper bound (``proofs_notes/matrix-free.md#certificate``).
        restart: GMRES restart length used.
        solver: ``"bicgstab"`` (default: short recurrences, seven vectors), ``"gmres"``
            (restarted, ``restart + 1`` vectors), or ``"fixed-point"`` for the certified
            fixed-point iteration alone (the a priori route: at most
            ``fixed_point_iterations`` steps).  Every Krylov call is followed by the exact
            residual and the certificate; one that does not halve the residual hands over
            to the fixed point.

        threads: threads each contraction step and copy is split over (disjoint slabs, so
            the same sums): :func:`default_threads` unless given.
        depth, transpose_depth: rounding depths of ``P_pi v`` and ``P_pi^T u``: the plan's,
            plus ``slabs - 1`` for the adjoint in slabs (the additions of the slabs' terms).
        slabs: how many slabs ``s_a = k`` of the plan's
            :attr:`~ContractionPlan.slab_agent` ``a`` an application runs in, one after
            another: 1 (whole intermediates), or ``|S_a|`` when whole ones do not fit the
            memory limit (:func:`application_slabs`, unless given).  The same sums; each
            slab reads all of ``v`` (``P_pi v``), and each adds its term to ``P_pi^T u``.

    Applications reuse two work buffers held by the operator, so one operator must not be
    applied from two threads at once.
    """

    backend = "matrix-free"

    def __init__(
        self,
        model: NetworkedMDP,
        policy: LocalizedSoftmaxPolicy,
        *,
        accuracy: float = DEFAULT_ACCURACY,
        memory_limit: float | None = None,
        plan: ContractionPlan | None = None,
        solver: Literal["bicgstab", "gmres", "fixed-point"] = "bicgstab",
        threads: int | None = None,
        slabs: int | None = None,
    ) -> None:
        if policy.model is not model:
            raise ModelError("policy was built for a different NetworkedMDP")
        if solver not in ("bicgstab", "gmres", "fixed-point"):
            raise ModelError(
                f"solver = {solver!r}, expected 'bicgstab', 'gmres' or 'fixed-point'"
            )
        self.solver = solver
        if not (isinstance(accuracy, (int, float)) and 0.0 < float(accuracy) < 1.0):
            raise ModelError(f"accuracy = {accuracy!r}, expected a number in (0, 1)")
        if plan is None:
            chosen = plan_for_accuracy(model, policy.beta, float(accuracy))
            if chosen is None:
                one = contraction_plan(model, policy.beta, max_group=1)
                least = minimum_accuracy(
                    _solve_depth(one), model.gamma,
                    plan_row_sum_bound(model.n_states),
                )
                raise SolverError(
                    f"requested accuracy {accuracy:g} is at or below {least:.3e}, twice the "
                    f"rounding floor of the matrix-free operator at gamma = {model.gamma} "
                    "(ask for a larger accuracy or use backend='dense')"
                )
            plan = chosen
        elif plan.n_states != model.n_states or plan.supports != model.graph.neighbourhoods(
            max(1, policy.beta)
        ):
            raise ModelError("plan was built for another graph, state counts or radius")
        self._memory_limit = memory_limit
        if threads is None:
            threads = default_threads()
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ModelError(f"threads = {threads!r}, expected a positive integer")
        self.threads = threads
        self.restart = krylov_restart(model, plan, memory_limit)
        if slabs is None:
            slabs = application_slabs(
                model, plan, restart=self.restart, solver=solver, memory_limit=memory_limit
            )
        else:
            _check_slabs(plan, slabs)
        self.slabs = slabs
        # the steps an application runs, on one slab (whole applications: one slab of one)
        self._chain_steps = _slab_steps(plan) if slabs > 1 else _whole_steps(plan)
        # rounding depths of P_pi v and P_pi^T u: the plan's, and for the adjoint in slabs
        # the slabs - 1 additions of the slabs' terms
        self.depth = plan.depth
        self.transpose_depth = plan.transpose_depth + slabs - 1
        check_memory(
            matrix_free_memory(
                model, plan, restart=self.restart, solver=solver, memory_limit=memory_limit,
                slabs=slabs,
            ),
            f"the matrix-free operator of {plan.n_joint} joint states",
            memory_limit,
        )
        self.model = model
        self.policy = policy
        self.plan = plan
        self.accuracy = float(accuracy)
        self.gamma = model.gamma
        self.factors = tuple(
            read_only(_local_factor(model, policy, d, i)) for i, d in enumerate(plan.supports)
        )
        self._matrices = tuple(
            read_only(self._matrix(step, self.factors)) for step in plan.steps
        )
        self._agent_step = {i: k for k, s in enumerate(plan.steps) for i in s.agents}
        self._agent_cache: dict[tuple[int, int], FloatArray] = {}
        self._work: tuple[FloatArray, FloatArray] | None = None
        self._krylov: list[FloatArray] | None = None
        self._solves: list[FloatArray] | None = None
        # (columns, solve) pairs that fit the limit (check_columns)
        self._columns_checked: set[tuple[int, bool]] = set()
        # rho: product of the largest float row sums, each within (|S_i| - 1) eps of the true
        # sum of the float entries, plus n roundings of the product
        row_max = [float(np.max(f.sum(axis=-1))) for f in self.factors]
        slack = (sum(model.n_states) + model.n) * EPS_F64
        self.row_sum_bound = float(np.prod(row_max)) * (1.0 + 2.0 * slack)
        if not self.gamma * self.row_sum_bound < 1.0:
            raise SolverError(
                f"gamma * rho = {self.gamma * self.row_sum_bound!r} is not below 1; the "
                "certificate needs a contraction"
            )

    def _matrix(self, step: ContractionStep, factors: Sequence[FloatArray]) -> FloatArray:
        members = [factors[i] for i in step.agents]
        return _step_matrix(step, self.plan.supports, members, self.model.n_states)

    @property
    def n_states(self) -> int:
        """``|S|``."""
        return self.plan.n_joint

    def check_columns(self, columns: int, *, solve: bool = False) -> None:
        """Raise :class:`~reference.errors.MemoryLimitError` when work on ``columns``
        columns does not fit the memory limit: :func:`matrix_free_memory` for ``columns``
        right-hand sides, with this operator's restart, solver and slabs (its construction
        checked one).  An application of ``columns`` columns at once holds ``columns`` times
        the work buffers; a solve (``solve=True``; ``values="per-agent"``: ``n`` columns)
        takes its columns one at a time (``applied = 1``) and holds the right-hand sides, the
        solutions and their stacked copy.  Called by every multi-column application and
        solve before it allocates anything."""
        key = (columns, solve)
        if columns <= 1 or key in self._columns_checked:
            return
        check_memory(
            matrix_free_memory(
                self.model, self.plan, restart=self.restart, columns=columns,
                solver=self.solver, memory_limit=self._memory_limit, slabs=self.slabs,
                applied=1 if solve else columns,
            ),
            f"{columns} right-hand sides on the matrix-free operator of {self.n_states} joint "
            f"states ({'solved one at a time' if solve else 'applied at once'})",
            self._memory_limit,
        )
        self._columns_checked.add(key)

    # ------------------------------------------------------------------ applications
    def _columns(self, v: FloatArray, name: str) -> tuple[FloatArray, int]:
        arr = np.asarray(v, dtype=np.float64)
        if arr.ndim not in (1, 2) or arr.shape[0] != self.n_states:
            raise ModelError(
                f"{name} has shape {arr.shape}, expected ({self.n_states},) or "
                f"({self.n_states}, m)"
            )
        return arr, 1 if arr.ndim == 1 else int(arr.shape[1])

    def _workspace(self, floats: int) -> tuple[FloatArray, FloatArray]:
        """Two buffers of at least ``floats`` entries for the intermediates of one
        application, kept between applications: reusing them spares the page faults (and
        the kernel's zeroing) of fresh large allocations, about a third of an application
        at ``2^20`` joint states (``proofs_notes/matrix-free.md#workspace``)."""
        if self._work is None or self._work[0].size < floats:
            self._work = (np.empty(floats), np.empty(floats))
        return self._work

    def _solve_work(self, size: int) -> list[FloatArray]:
        """The four vectors of a certified solve (:meth:`_solve_unit`), kept between solves."""
        if self._solves is None or self._solves[0].size != size:
            self._solves = [streamed_empty(size) for _ in range(4)]
        return self._solves

    def _krylov_work(self, size: int) -> list[FloatArray]:
        """BiCGSTAB's six vectors, kept between solves (no page faults of fresh
        ``|S|``-float arrays at every call)."""
        if self._krylov is None or self._krylov[0].size != size:
            self._krylov = [streamed_empty(size) for _ in range(6)]
        return self._krylov

    def _forward(
        self, v: FloatArray, matrices: Sequence[FloatArray], out: FloatArray | None = None
    ) -> FloatArray:
        """``sum_{s'} prod_i F_i[s_{D_i}, s'_i] v(s')`` for the factors behind ``matrices``
        (written into ``out``, of ``v``'s shape, when given)."""
        arr, cols = self._columns(v, "v")
        self.check_columns(cols)
        result = np.empty((self.n_states, cols)) if out is None else out.reshape(-1, cols)
        self._contiguous(self._forward_chain, arr, cols, matrices, result)
        return result[:, 0] if arr.ndim == 1 else result

    def _backward(
        self, u: FloatArray, matrices: Sequence[FloatArray], out: FloatArray | None = None
    ) -> FloatArray:
        """The adjoint of :meth:`_forward`: the steps reversed with ``F_G`` transposed
        (written into ``out``, of ``u``'s shape, when given)."""
        arr, cols = self._columns(u, "u")
        self.check_columns(cols)
        result = np.empty((self.n_states, cols)) if out is None else out.reshape(-1, cols)
        self._contiguous(self._backward_chain, arr, cols, matrices, result)
        return result[:, 0] if arr.ndim == 1 else result

    def _slab_axes(self, count: int) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
        """``(p, final, inverse)`` for ``count`` slabs: the slab agent's position among the
        materialised agent axes (-1 for one slab, the whole), and the permutations between
        the last intermediate of one slab and the slab's agent order (``final``: agent-order
        position to layout axis; ``inverse``: layout axis to agent-order position), the slab
        agent's axis left out."""
        plan = self.plan
        final = plan.final_permutation
        inverse = tuple(int(q) for q in np.argsort(final))
        if count == 1:
            return -1, final, inverse
        a = plan.slab_agent
        if a is None:
            raise ModelError("the plan has no slab agent")
        pos = sum(1 for j in range(a) if plan.n_states[j] > 1)
        return (
            pos,
            tuple(final[p] - 1 for p in range(len(final)) if p != pos),
            tuple(q - (q > pos) for q in inverse[1:]),
        )

    def _contiguous(
        self,
        run: Callable[[FloatArray, int, Sequence[FloatArray], FloatArray], None],
        arr: FloatArray,
        cols: int,
        matrices: Sequence[FloatArray],
        result: FloatArray,
    ) -> None:
        """``run`` (:meth:`_forward_chain` or :meth:`_backward_chain`) into ``result``,
        through a contiguous copy when ``result`` is a strided view (the chains write its
        blocks through reshaped views)."""
        if result.flags.c_contiguous:
            run(arr, cols, matrices, result)
            return
        whole = np.empty((self.n_states, cols))
        run(arr, cols, matrices, whole)
        np.copyto(result, whole)

    def _forward_chain(
        self, arr: FloatArray, cols: int, matrices: Sequence[FloatArray], result: FloatArray
    ) -> None:
        """:meth:`_forward` into the contiguous ``result``, one slab ``s_a = k`` at a time
        (``proofs_notes/matrix-free.md#slabs``; whole applications are one slab of one):
        each slab runs every step on its block of the intermediates, from the whole ``v``,
        and writes the rows ``s_a = k`` of the result.  A plan that ends in agent order
        writes its last step there (no copy; its slab agent is then the first axis)."""
        plan = self.plan
        count = self.slabs
        pos, final, _ = self._slab_axes(count)
        layout = plan.final_layout if count == 1 else plan.final_layout[1:]
        sizes = tuple(s for s in plan.n_states if s > 1)
        work = self._workspace(plan.slab_buffer_floats(count) * cols)
        canonical = np.ascontiguousarray(arr).reshape((*sizes, cols))
        agents = result.reshape((*sizes, cols))
        last = len(plan.steps) - 1
        for slab in range(count):
            rows = agents if count == 1 else np.moveaxis(agents, pos, 0)[slab]
            t: FloatArray = canonical
            held = -1  # the buffer that holds t (-1: the caller's array)
            for k, (step, mat) in enumerate(zip(self._chain_steps, matrices, strict=True)):
                x, b, c, y = step.sizes
                if step.permutation is not None:
                    src = t.reshape((*step.layout, cols)).transpose(
                        (*step.permutation, len(step.layout))
                    )
                    held = 0 if held != 0 else 1
                    dst = work[held][: src.size].reshape(src.shape)
                    _copy(dst, src, self.threads)
                    t = dst
                shape = (x, b, step.introduced_size, y * cols)
                if plan.in_agent_order and k == last:
                    dest = rows.reshape(shape)
                else:
                    held = 0 if held != 0 else 1
                    dest = work[held][: prod(shape)].reshape(shape)
                t = _lead_step(
                    step.matrix(mat, slab, count), t.reshape(x, b, c, y * cols), dest,
                    step.lead, self.threads,
                )
            if not plan.in_agent_order:
                _copy(
                    rows,
                    t.reshape((*layout, cols)).transpose((*final, len(final))),
                    self.threads,
                )

    def _backward_chain(
        self, arr: FloatArray, cols: int, matrices: Sequence[FloatArray], result: FloatArray
    ) -> None:
        """:meth:`_backward` into the contiguous ``result``, one slab ``s_a = k`` of ``u`` at
        a time: each slab runs the adjoint steps on its block and adds its term
        ``P_pi^T (u 1[s_a = k])`` to the result (the first slab writes it; whole
        applications are one slab of one).  A plan in agent order reads ``u`` as it is."""
        plan = self.plan
        count = self.slabs
        pos, _, inverse = self._slab_axes(count)
        sizes = tuple(s for s in plan.n_states if s > 1)
        work = self._workspace(plan.slab_buffer_floats(count) * cols)
        canonical = np.ascontiguousarray(arr).reshape((*sizes, cols))
        for slab in range(count):
            part = canonical if count == 1 else np.moveaxis(canonical, pos, 0)[slab]
            t: FloatArray
            if plan.in_agent_order:
                held, t = -1, part  # a contiguous block of u (pos = 0)
            else:
                src = part.transpose((*inverse, len(inverse)))
                held = 0
                t = work[held][: src.size].reshape(src.shape)
                _copy(t, src, self.threads)
            for k in range(len(plan.steps) - 1, -1, -1):
                step, mat = self._chain_steps[k], matrices[k]
                x, b, c, y = step.sizes
                held = 0 if held != 0 else 1
                if k == 0 and slab == 0 and step.permutation is None:
                    # the adjoint of the first step leaves agent order: written in place
                    dest = result.reshape(x, b, c, y * cols)
                else:
                    dest = work[held][: x * b * c * y * cols].reshape(x, b, c, y * cols)
                t = _lead_step(
                    np.swapaxes(step.matrix(mat, slab, count), 1, 2),
                    t.reshape(x, b, step.introduced_size, y * cols), dest, step.lead,
                    self.threads,
                )
                if step.permutation is not None:
                    permuted = (*(step.layout[p] for p in step.permutation), cols)
                    back = (*np.argsort(step.permutation), len(permuted) - 1)
                    src = t.reshape(permuted).transpose(back)
                    if k == 0:
                        t = src  # copied or added to the result below, read through the view
                    else:
                        held = 0 if held != 0 else 1
                        dst = work[held][: src.size].reshape(src.shape)
                        _copy(dst, src, self.threads)
                        t = dst
            if slab == 0 and plan.steps[0].permutation is None:
                continue  # written in place
            target = result.reshape(t.shape)
            if slab == 0:
                _copy(target, t, self.threads)
            else:
                _accumulate(target, t, self.threads)

    def apply(self, v: FloatArray) -> FloatArray:
        """``(P_pi v)(s) = sum_{s'} prod_i M_i[s_{D_i}, s'_i] v(s')``; ``v`` is ``(|S|,)`` or
        ``(|S|, m)``."""
        return self._forward(v, self._matrices)

    def apply_transpose(self, u: FloatArray) -> FloatArray:
        """``(P_pi^T u)(s') = sum_s u(s) prod_i M_i[s_{D_i}, s'_i]``; ``u`` is ``(|S|,)`` or
        ``(|S|, m)``."""
        return self._backward(u, self._matrices)

    def _check_agent(self, i: int) -> int:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < self.model.n:
            raise ModelError(f"agent {i!r} outside 0..{self.model.n - 1}")
        return int(i)

    def _agent_matrices(self, i: int, b: int) -> list[FloatArray]:
        """Step matrices with ``M_i`` replaced by ``K_i^b`` (the changed one cached, for one
        agent at a time: :func:`matrix_free_memory` counts ``|A_i|`` step matrices)."""
        k = self._agent_step[self._check_agent(i)]
        key = (int(i), int(b))
        if any(cached != key[0] for cached, _ in self._agent_cache):
            self._agent_cache.clear()
        if key not in self._agent_cache:
            factors = list(self.factors)
            factors[i] = _action_factor(self.model, self.plan.supports[i], i, b)
            self._agent_cache[key] = read_only(self._matrix(self.plan.steps[k], factors))
        mats = list(self._matrices)
        mats[k] = self._agent_cache[key]
        return mats

    def apply_agent(self, i: int, v: FloatArray) -> FloatArray:
        """``(|S|, |A_i|)``: ``(P^{(i,b)} v)(s) = sum_{s'} K_i^b[s_{N_i}, s'_i]
        prod_{j != i} M_j[s_{D_j}, s'_j] v(s')`` for every ``s`` and ``b``; ``v`` is ``(|S|,)``."""
        arr = np.asarray(v, dtype=np.float64)
        if arr.shape != (self.n_states,):
            raise ModelError(f"v has shape {arr.shape}, expected ({self.n_states},)")
        n_act = self.model.n_actions[self._check_agent(i)]
        # one row per action, each written in place by its application (no stacking copy)
        rows = streamed_empty((n_act, self.n_states))
        for b in range(n_act):
            self._forward(arr, self._agent_matrices(i, b), rows[b])
        return rows.T

    def apply_agent_transpose(self, i: int, u: FloatArray) -> FloatArray:
        """``(|S|,)``: ``s' -> sum_{s,b} u[s, b] P^{(i,b)}(s'|s)``; ``u`` is ``(|S|, |A_i|)``."""
        arr = np.asarray(u, dtype=np.float64)
        n_act = self.model.n_actions[self._check_agent(i)]
        if arr.shape != (self.n_states, n_act):
            raise ModelError(f"u has shape {arr.shape}, expected ({self.n_states}, {n_act})")
        total = np.zeros(self.n_states)
        for b in range(n_act):
            total += self._backward(arr[:, b], self._agent_matrices(i, b))
        return total

    def factor_gradients(self, u: FloatArray, v: FloatArray) -> tuple[FloatArray, ...]:
        """``dL/dM_i`` for ``L = u^T P_pi v``, every agent, shaped like :attr:`factors`::

            Y_i[s_{D_i}, y] = sum_{s: s_{D_i}} u(s) sum_{s': s'_i = y} prod_{j != i} M_j v(s')

        by reverse-mode differentiation of one application: the forward contraction of
        ``v`` (keeping each step's input), then the adjoint contraction of ``u`` with, at
        every step, the pair contraction that gives ``dL/dF_G``, and the product rule on the
        step's merged factor.  About three applications for all agents, where ``n`` agent
        applications would be needed otherwise (``proofs_notes/matrix-free.md#reverse``).
        When the stored inputs fit only in slabs of the plan's slab agent
        (:func:`reverse_forms_slabs`), each slab ``s_a = k`` runs both chains on its blocks,
        and ``dL/dF_G`` is the sum of the slabs' pair contractions (``L`` is a sum over
        ``k``; ``#slabs``).  ``u`` and ``v`` are ``(|S|,)``; memory:
        :meth:`ContractionPlan.reverse_floats` more floats (checked against the memory limit).
        """
        plan = self.plan
        u_arr = np.asarray(u, dtype=np.float64)
        v_arr = np.asarray(v, dtype=np.float64)
        for name, arr in (("u", u_arr), ("v", v_arr)):
            if arr.shape != (self.n_states,):
                raise ModelError(f"{name} has shape {arr.shape}, expected ({self.n_states},)")
        count = max(1, reverse_forms_slabs(self.model, plan, self._memory_limit))
        check_memory(
            predicted_bytes(plan.reverse_floats(count)),
            f"the factor gradients of {plan.n_joint} joint states",
            self._memory_limit,
        )
        # the solves' vectors are not held through this phase (matrix_free_memory counts
        # the solve phase and this one apart)
        self._krylov = self._solves = None
        if self._work is not None and self._work[0].size > plan.slab_buffer_floats(count):
            # larger buffers left by whole (or multi-column) applications: the chains run in
            # the buffers reverse_floats counts, so these are released, not kept beside them
            self._work = None
        steps = _slab_steps(plan) if count > 1 else _whole_steps(plan)
        sums = [np.zeros((s.sizes[1], s.introduced_size, s.sizes[2])) for s in plan.steps]
        for slab in range(count):
            self._reverse_chain(u_arr, v_arr, steps, slab, count, sums)
        grads: list[FloatArray] = [np.empty(0)] * self.model.n
        for step, d_step in zip(plan.steps, sums, strict=True):
            members = [self.factors[i] for i in step.agents]
            for i, d_i in zip(
                step.agents,
                _step_factor_gradients(
                    step, plan.supports, members, self.model.n_states, d_step
                ),
                strict=True,
            ):
                grads[i] = read_only(d_i)
        return tuple(grads)

    def _reverse_chain(
        self,
        u: FloatArray,
        v: FloatArray,
        steps: Sequence[_SlabStep],
        slab: int,
        count: int,
        sums: list[FloatArray],
    ) -> None:
        """One slab ``s_a = slab`` of ``count`` of :meth:`factor_gradients` (the whole chain
        when ``count = 1``): the forward chain of ``v`` keeping each step's input, then the
        adjoint chain of ``u``'s block, adding each step's pair contraction into its block
        of ``sums[k]`` (``dL/dF_G``)."""
        plan = self.plan
        work = self._workspace(plan.slab_buffer_floats(count))
        shape = tuple(s for s in plan.n_states if s > 1)
        t: FloatArray = np.ascontiguousarray(v).reshape(shape)
        inputs: list[FloatArray] = []
        for k, (step, mat) in enumerate(zip(steps, self._matrices, strict=True)):
            x, b, c, y = step.sizes
            if step.permutation is not None:
                src = t.reshape(step.layout).transpose(step.permutation)
                t = streamed_empty(src.shape)
                _copy(t, src, self.threads)
            t4 = t.reshape(x, b, c, y)
            inputs.append(t4)
            out_shape = (x, b, step.introduced_size, y)
            if k + 1 == len(steps) or steps[k + 1].permutation is not None:
                # not kept (the next step's input is a permuted copy, or there is none): the
                # output goes into a work buffer, so the chain holds stored_floats beside them
                dest = work[0][: prod(out_shape)].reshape(out_shape)
            else:
                dest = streamed_empty(out_shape)
            t = _lead_step(step.matrix(mat, slab, count), t4, dest, step.lead, self.threads)
        # the adjoint chain of u's block runs in the operator's two work buffers
        held = 0
        canonical = np.ascontiguousarray(u).reshape(shape)
        pos, _, inverse = self._slab_axes(count)
        part = canonical if count == 1 else np.moveaxis(canonical, pos, 0)[slab]
        src = part.transpose(inverse)
        g: FloatArray = work[held][: src.size].reshape(src.shape)
        _copy(g, src, self.threads)
        for k in range(len(steps) - 1, -1, -1):
            step = steps[k]
            mat = step.matrix(self._matrices[k], slab, count)
            x, b, c, y = step.sizes
            g4 = g.reshape(x, b, step.introduced_size, y)
            part = _lead_pair_contraction(g4, inputs.pop(), step.lead, self.threads)
            total = sums[k]
            if step.block == "rows":
                rows = part.shape[0]
                total[slab * rows:(slab + 1) * rows] += part
            elif step.block == "introduced":
                cols = part.shape[1]
                total[:, slab * cols:(slab + 1) * cols] += part
            else:
                total += part
            if k > 0:
                held = 1 - held
                out = work[held][: x * b * c * y].reshape(x, b, c, y)
                g = _lead_step(np.swapaxes(mat, 1, 2), g4, out, step.lead, self.threads)
                if step.permutation is not None:
                    permuted = tuple(step.layout[p] for p in step.permutation)
                    back = g.reshape(permuted).transpose(np.argsort(step.permutation))
                    held = 1 - held
                    g = work[held][: back.size].reshape(back.shape)
                    _copy(g, back, self.threads)

    def agent_forms(self, u: FloatArray, v: FloatArray) -> tuple[FloatArray, ...]:
        """``T_i[o, b] = sum_{s: o_i(s) = o} u(s) (P^{(i,b)} v)(s)`` for every agent, each
        ``(|O_i|, |A_i|)`` over agent ``i``'s observation ``N_i^beta`` (mixed radix, lowest
        agent most significant), from :meth:`factor_gradients` (or, when its stored inputs do
        not fit the memory limit, :func:`reverse_forms_fit`, from one :meth:`apply_agent` per
        agent): ``P^{(i,b)}`` is ``P_pi``
        with ``M_i`` replaced by ``K_i^b``, and ``P_pi`` is linear in ``M_i``, so
        ``T_i[o, b] = sum_{d: o(d) = o} sum_y K_i^b[d, y] Y_i[d, y]`` (``N_i^beta`` and
        ``N_i`` lie in ``D_i``; ``proofs_notes/matrix-free.md#reverse``)."""
        model, plan = self.model, self.plan
        if not reverse_forms_fit(model, plan, self._memory_limit):
            # the stored inputs do not fit: one agent application per agent and action (the
            # solves' vectors are not held through this phase either)
            self._krylov = self._solves = None
            return agent_forms_by_applications(self, u, v)
        ys = self.factor_gradients(u, v)
        out = []
        for i, (support, y_i) in enumerate(zip(plan.supports, ys, strict=True)):
            kernel = _factor_tensor(model, support, model.kernels[i], model.neighbourhoods[i])
            forms = np.einsum("...ay,...y->...a", kernel, y_i)
            observed = set(self.policy.observed[i])
            drop = tuple(a for a, j in enumerate(support) if j not in observed)
            table = np.sum(forms, axis=drop) if drop else forms
            out.append(read_only(np.ascontiguousarray(table).reshape(-1, model.n_actions[i])))
        return tuple(out)

    # ------------------------------------------------------------------ solves
    def solve_values(self, r: FloatArray) -> LinearSolve:
        """``(I - gamma P_pi)^{-1} r``, ``r`` of shape ``(|S|,)`` or ``(|S|, m)``, certified in
        the inf-norm (``proofs_notes/matrix-free.md#certificate``)."""
        return self._solve(r, transpose=False)

    def solve_occupancy(self, rho: FloatArray) -> LinearSolve:
        """``(I - gamma P_pi^T)^{-1} rho``, ``rho`` of shape ``(|S|,)`` or ``(|S|, m)``,
        certified in the l1-norm (``proofs_notes/matrix-free.md#certificate``)."""
        return self._solve(rho, transpose=True)

    def _solve(self, b: FloatArray, *, transpose: bool) -> LinearSolve:
        arr, cols = self._columns(b, "the right-hand side")
        self.check_columns(cols, solve=True)
        flat = np.ascontiguousarray(arr).reshape(-1)

        def bad(piece: slice, scratch: FloatArray) -> tuple[float, ...]:
            return (0.0 if np.isfinite(flat[piece]).all() else 1.0,)

        if _chunked(bad, flat.size, self.threads, 1)[0]:
            raise ModelError("the right-hand side has a non-finite entry")
        columns = arr.reshape(self.n_states, cols)
        results = [self._solve_column(columns[:, k], transpose) for k in range(cols)]
        x = results[0][0] if arr.ndim == 1 else np.stack([res[0] for res in results], axis=1)
        return LinearSolve(
            x=x,
            residual=max(res[1] for res in results),
            error_bound=max(res[2] for res in results),
            norm="l1" if transpose else "inf",
            iterations=sum(res[3] for res in results),
        )

    def _solve_column(
        self, b: FloatArray, transpose: bool
    ) -> tuple[FloatArray, float, float, int]:
        """One certified solve: ``(x, residual, error bound, operator applications)``.

        The system is linear, so it is solved for ``b`` scaled by a power of two to norm in
        ``[1/2, 1)`` (exact in floating point), and ``x``, the residual and the bound are
        scaled back; the norms of the iteration then neither overflow nor underflow.  A
        right-hand side of norm below :data:`_TINY_RHS` is answered by ``x = 0`` with the
        a priori bound ``||b|| / (1 - gamma rho)``.
        """
        g, rho = self.gamma, self.row_sum_bound
        contraction = 1.0 - g * rho

        def norm(x: FloatArray) -> float:
            return _l1(x, self.threads) if transpose else _sup(x)

        with np.errstate(over="ignore"):  # an l1 norm past the float range: refused below
            b_norm = norm(b)
        if g == 0.0 or b_norm == 0.0:  # x = b solves x - 0 P x = b; x = 0 solves it for b = 0
            return read_only(b.copy()), 0.0, 0.0, 0
        if not np.isfinite(b_norm):
            raise SolverError(
                f"the right-hand side's {'l1' if transpose else 'inf'}-norm overflows float64"
            )
        if b_norm < _TINY_RHS:
            # ||x*|| <= ||b|| / (1 - gamma rho); one ulp up covers the rounding of the quotient
            bound = float(np.nextafter(b_norm / contraction, np.inf))
            return read_only(np.zeros_like(b)), b_norm, bound, 0
        exponent = frexp(b_norm)[1]  # up to 1024, where 2^exponent itself is not a float
        unit = np.multiply(b, ldexp(1.0, -exponent), out=streamed_empty(b.shape))
        x, res, bound, applications = self._solve_unit(unit, transpose)
        del unit
        with np.errstate(over="ignore"):
            scaled = np.ldexp(x, exponent, out=streamed_empty(x.shape))
            res, bound = float(np.ldexp(res, exponent)), float(np.ldexp(bound, exponent))
        if not np.all(np.isfinite(scaled)):
            raise SolverError(
                "the solution overflows float64 (scale the right-hand side down and the "
                "solution up)"
            )
        return read_only(scaled), res, bound, applications

    def _solve_unit(
        self, b: FloatArray, transpose: bool
    ) -> tuple[FloatArray, float, float, int]:
        """:meth:`_solve_column` for ``||b||`` in ``[1/2, 1)``."""
        g, rho = self.gamma, self.row_sum_bound
        contraction = 1.0 - g * rho
        depth = self.transpose_depth if transpose else self.depth
        step = self._backward if transpose else self._forward

        def norm(x: FloatArray) -> float:
            return _l1(x, self.threads) if transpose else _sup(x)

        b_norm = norm(b)
        target = self.accuracy * b_norm / (1.0 - g)

        def allowance(x: FloatArray) -> float:
            # rounding of res = b - (x - gamma P~ x): depth eps |P~||x| for the contraction,
            # three more roundings for gamma *, the two subtractions; plus the subnormal
            # rounding of the power-of-two scaling of b (2^-1074 per entry)
            entries = b.size if transpose else 1
            return (depth + 3) * EPS_F64 * (
                (1.0 + g * rho) * norm(x) + b_norm
            ) + entries * _SUBNORMAL

        least = minimum_accuracy(depth, g, rho, subnormal=b.size * _SUBNORMAL / b_norm)
        if self.accuracy <= least:
            raise SolverError(
                f"requested accuracy {self.accuracy:g} is at or below {least:.3e}, twice the "
                f"rounding floor of this operator (depth {depth}, gamma = {g})"
            )
        # four vectors kept by the operator between solves: the iterate, its residual, and a
        # candidate and its residual (swapped in on acceptance); no fresh |S|-float arrays
        x, residual, spare_x, spare_r = self._solve_work(b.size)
        x.fill(0.0)
        np.copyto(residual, b)
        applications = 0
        # the fixed-point route alone needs at most fixed_point_iterations steps; the budget
        # allows that four times over plus eight GMRES cycles of restart + 1 applications
        budget = 4 * fixed_point_iterations(g * rho, self.accuracy) + 8 * self.restart + 8

        def matvec(y: FloatArray, out: FloatArray | None = None) -> FloatArray:
            nonlocal applications
            applications += 1
            flat = np.asarray(y, dtype=np.float64).reshape(-1)
            result = step(flat, self._matrices, out)

            def finish(piece: slice, scratch: FloatArray) -> tuple[float, ...]:
                result[piece] *= -g
                result[piece] += flat[piece]
                return ()

            _chunked(finish, result.size, self.threads)
            return result

        def fused(
            y: FloatArray, out: FloatArray, against: Sequence[FloatArray]
        ) -> tuple[float, ...]:
            """``out = y - gamma P~ y`` and its dot products with ``against``, in one pass."""
            nonlocal applications
            applications += 1
            result = step(y.reshape(-1), self._matrices, out)
            flat = y.reshape(-1)

            def finish(piece: slice, scratch: FloatArray) -> tuple[float, ...]:
                result[piece] *= -g
                result[piece] += flat[piece]
                return tuple(float(np.einsum("i,i->", result[piece], a[piece])) for a in against)

            return _chunked(finish, result.size, self.threads, len(against))

        def residual_of(y: FloatArray, out: FloatArray) -> FloatArray:
            """``out = b - (y - gamma P y)``."""
            matvec(y, out)
            np.subtract(b, out, out=out)
            return out

        shape = (self.n_states, self.n_states)
        system = spla.LinearOperator(shape, matvec=matvec, dtype=np.float64)
        use_krylov = self.solver != "fixed-point"
        res = norm(residual)
        while True:
            bound = (res + allowance(x)) / contraction
            if bound <= target:
                return x, res, bound, applications
            if applications >= budget:
                raise SolverError(
                    f"matrix-free solve stopped after {applications} operator applications "
                    f"with certified error {bound:.3e} above the requested {target:.3e}"
                )
            if use_krylov:
                # aim at half the residual the certificate can still afford (at least a
                # quarter of the target: the allowance is below half of it, see the floor);
                # Krylov methods stop on the 2-norm: scale the goal by the norm ratio
                goal = max(0.5 * (target * contraction - allowance(x)), 0.25 * target * contraction)
                if self.solver == "gmres":
                    ratio = (
                        float(np.sqrt(_dot(residual, residual, self.threads))) / res
                        if res > 0.0 else 1.0
                    )
                    d, _ = spla.gmres(
                        system, residual, rtol=0.0, atol=goal * ratio, restart=self.restart,
                        maxiter=_GMRES_CYCLES,
                    )
                else:
                    # BiCGSTAB stops on its recursive residual in the certificate's own norm
                    # (l1 for occupancies, inf for values), computed in its fused passes
                    d = _bicgstab(
                        matvec, residual, goal, _BICGSTAB_ITERATIONS,
                        threads=self.threads, work=self._krylov_work(residual.size),
                        norm="l1" if transpose else "inf", fused=fused,
                    )
                np.add(x, d, out=spare_x)
                # a non-finite entry makes the sum non-finite (finite iterates are far below
                # overflow: ||x|| <= ||b|| / (1 - gamma rho) near the solution)
                if np.isfinite(float(np.add.reduce(spare_x))):
                    cand_res = norm(residual_of(spare_x, spare_r))
                else:
                    cand_res = np.inf
                if cand_res < res:
                    x, spare_x = spare_x, x
                    residual, spare_r = spare_r, residual
                if not cand_res <= _GMRES_PROGRESS * res:
                    # stagnation or garbage: keep the better iterate, go on by fixed point
                    use_krylov = False
                res = min(res, cand_res)
            else:
                # fixed point x <- b + gamma P x, i.e. x + residual: the residual contracts by
                # gamma rho per step in this norm (proofs_notes/matrix-free.md#certificate)
                np.add(x, residual, out=spare_x)
                x, spare_x = spare_x, x
                res = norm(residual_of(x, residual))

