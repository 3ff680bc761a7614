"""Choosing the transition backend of the exact oracles by predicted memory and time.

Two implementations of :class:`~reference.networked.transition.TransitionOperator` exist:

* ``"dense"`` -- :class:`~reference.networked.transition.DenseOperator`: the ``|S| x |S|``
  matrix ``P_pi`` and one LU factorisation; memory ``~ 3 |S|^2`` floats, time dominated by
  the ``(2/3) |S|^3`` factorisation and ``~ 2 |A_i| |S|^2`` per agent-marginal contraction.
* ``"matrix-free"`` -- :class:`~reference.networked.matrix_free.MatrixFreeOperator`:
  contractions of local factors and BiCGSTAB; memory linear in ``|S|``, time
  ``applications x cost of one application``.

:func:`predict_backends` predicts both for one exact gradient
(:func:`reference.networked.exact.solve`) *before* anything is allocated, and
:func:`transition_operator` picks the backend with the smaller predicted time among those
whose predicted memory fits the limit of :mod:`reference.memory` (or the one asked for).
The model and its constants: ``proofs_notes/matrix-free.md#cost-model``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from reference.errors import MemoryLimitError, ModelError
from reference.memory import format_bytes
from reference.memory import memory_limit as resolve_limit
from reference.networked.matrix_free import (
    DEFAULT_ACCURACY,
    ContractionPlan,
    MatrixFreeOperator,
    application_slabs,
    contraction_plan,
    fixed_point_iterations,
    krylov_restart,
    matrix_free_memory,
    plan_for_accuracy,
    reverse_forms_fit,
)
from reference.networked.model import NetworkedMDP
from reference.networked.policy import LocalizedSoftmaxPolicy
from reference.networked.transition import (
    DenseOperator,
    HalvesRoute,
    JointRoute,
    TransitionOperator,
    dense_memory,
    fused_route,
)

__all__ = [
    "BACKENDS",
    "BackendChoice",
    "BackendCost",
    "BackendName",
    "fused_route_for",
    "predict_backends",
    "transition_operator",
]

BackendName = Literal["dense", "matrix-free"]
BackendChoice = Literal["auto", "dense", "matrix-free"]
BACKENDS: tuple[BackendChoice, ...] = ("auto", "dense", "matrix-free")
"""Every accepted value of ``backend``."""

FACTORISATION_RATE = 2.0e10
"""Multiply-adds per second of a dense LU factorisation (BLAS-3, one core); measured
2.4e10 at ``|S| = 4096`` on the development machine
(``proofs_notes/matrix-free.md#cost-model``)."""

STREAM_RATE = 1.5e10
"""Cost units per second of the batched contractions of both backends, in the units of
:meth:`~reference.networked.matrix_free.ContractionPlan.application_cost` (one unit is a
multiply-add inside a batched matrix product); measured 1.4e10 on the development machine
for the plan of a ring of 20 binary agents (``proofs_notes/matrix-free.md#cost-model``)."""


@dataclass(frozen=True)
class BackendCost:
    """Predicted cost of one exact gradient with one backend.

    Attributes:
        backend: ``"dense"`` or ``"matrix-free"``.
        bytes: predicted peak memory (the figure :func:`reference.memory.check_memory` sees).
        seconds: predicted time (an order-of-magnitude model, for comparison only).
        fits: whether ``bytes`` is within the memory limit.
        what: what the memory is for, as in the error message.
        reachable: whether the backend can certify the requested accuracy (the matrix-free
            rounding floor, :func:`~reference.networked.matrix_free.minimum_accuracy`; the
            dense LU solve has no requested accuracy).
    """

    backend: BackendName
    bytes: int
    seconds: float
    fits: bool
    what: str
    reachable: bool = True


def _dense_cost(model: NetworkedMDP, limit: int) -> BackendCost:
    """``(2/3) |S|^3`` for the LU at :data:`FACTORISATION_RATE`, plus, streamed at
    :data:`STREAM_RATE`, ``2 |S|^2`` to form ``P_pi``, ``2 (n + 2) |S|^2`` for the solves and
    ``2 |A_i| |S|^2`` per agent for ``P^{(i,b)} Vbar`` (an upper bound since
    :meth:`~reference.networked.transition.DenseOperator.apply_agents` does all agents in
    ``O(|S|^2)``; kept so that the choice does not move towards the ``|S|^3`` LU).

    The prediction depends on the model, ``beta``, the accuracy and the limit only, and
    :func:`transition_operator` caches it on the model."""
    n_joint = float(model.states.size)
    lu = (2.0 / 3.0) * n_joint**3 / FACTORISATION_RATE
    streamed = n_joint**2 * (2.0 + 2.0 * (model.n + 2) + 2.0 * sum(model.n_actions))
    needed = dense_memory(model)
    return BackendCost(
        backend="dense",
        bytes=needed,
        seconds=lu + streamed / STREAM_RATE,
        fits=needed <= limit,
        what=f"the dense joint kernel of {model.states.size} joint states",
    )


def _matrix_free_cost(
    model: NetworkedMDP, plan: ContractionPlan, accuracy: float, limit: int, reachable: bool
) -> BackendCost:
    """``applications x plan.application_cost(slabs)`` at :data:`STREAM_RATE` (``slabs`` by
    :func:`~reference.networked.matrix_free.application_slabs`), with
    ``applications = 2 (k + 2) + f``: two solves of at most ``k`` iterations
    (:func:`fixed_point_iterations`, the a priori count of the certified fallback) and two
    residual checks each, and the agent forms: ``f = 3`` applications' worth by reverse-mode
    differentiation, or one ``P^{(i,b)}`` application per agent and action (``f = sum_i
    |A_i|``) when its stored inputs do not fit (:func:`reverse_forms_fit`).  BiCGSTAB, the
    default solver, adds about ten passes over ``|S|`` floats per two applications."""
    k = fixed_point_iterations(model.gamma, accuracy)
    forms = 3 if reverse_forms_fit(model, plan, limit) else sum(model.n_actions)
    applications = 2 * (k + 2) + forms
    restart = krylov_restart(model, plan, limit)
    slabs = application_slabs(model, plan, restart=restart, memory_limit=limit)
    vector_passes = 2 * k * 5 * plan.n_joint
    work = applications * plan.application_cost(slabs) + vector_passes
    needed = matrix_free_memory(model, plan, restart=restart, memory_limit=limit)
    return BackendCost(
        backend="matrix-free",
        bytes=needed,
        seconds=work / STREAM_RATE,
        fits=needed <= limit,
        what=f"the matrix-free operator of {plan.n_joint} joint states",
        reachable=reachable,
    )


def predict_backends(
    model: NetworkedMDP,
    beta: int,
    *,
    accuracy: float = DEFAULT_ACCURACY,
    memory_limit: float | None = None,
) -> tuple[BackendCost, BackendCost]:
    """``(dense, matrix-free)`` predicted costs of one exact gradient, before any allocation.

    Only the graph, the local sizes, ``gamma``, ``beta`` and ``accuracy`` enter; nothing of
    size ``|S|`` is allocated (the contraction plan is symbolic).
    """
    limit = resolve_limit(memory_limit)
    plan = plan_for_accuracy(model, beta, accuracy)
    reachable = plan is not None
    mf = _matrix_free_cost(
        model, plan or contraction_plan(model, beta, max_group=1), accuracy, limit, reachable
    )
    return _dense_cost(model, limit), mf


def transition_operator(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    backend: BackendChoice = "auto",
    memory_limit: float | None = None,
    *,
    accuracy: float | None = None,
) -> TransitionOperator:
    """The transition operator of ``policy`` on ``model`` with the chosen backend.

    ``"auto"`` predicts both backends (:func:`predict_backends`) and takes the faster of those
    whose predicted memory fits the limit (and, for matrix-free, whose rounding floor allows
    ``accuracy``); ``"dense"`` and ``"matrix-free"`` force one (and
    raise :class:`~reference.errors.MemoryLimitError` if it does not fit).  ``accuracy`` is
    the relative accuracy requested of matrix-free solves (default
    :data:`~reference.networked.matrix_free.DEFAULT_ACCURACY`); the dense LU solve ignores it.

    Raises:
        MemoryLimitError: no allowed backend fits the memory limit; the message gives the
            prediction of each.
        SolverError: only the matrix-free backend fits, and ``accuracy`` is below its
            rounding floor.
    """
    if backend not in BACKENDS:
        raise ModelError(f"backend = {backend!r}, expected one of {', '.join(map(repr, BACKENDS))}")
    if policy.model is not model:
        raise ModelError("policy was built for a different NetworkedMDP")
    acc = DEFAULT_ACCURACY if accuracy is None else accuracy
    if backend == "dense":
        return DenseOperator(model, policy, memory_limit)
    if backend == "matrix-free":
        return MatrixFreeOperator(model, policy, accuracy=acc, memory_limit=memory_limit)
    limit = resolve_limit(memory_limit)
    if _automatic(model, policy.beta, acc, limit) == "dense":
        return DenseOperator(model, policy, limit)
    return MatrixFreeOperator(model, policy, accuracy=acc, memory_limit=memory_limit)


def _automatic(model: NetworkedMDP, beta: int, accuracy: float, limit: int) -> BackendName:
    """The backend ``"auto"`` takes (:func:`_choose`), cached on the model: it depends on the
    model, ``beta``, the accuracy and the limit only."""
    key = ("backend-choice", beta, accuracy, limit)
    chosen: BackendName | None = model.derived.get(key)
    if chosen is None:
        chosen = model.derived[key] = _choose(
            predict_backends(model, beta, accuracy=accuracy, memory_limit=limit), limit
        )
    return chosen


def fused_route_for(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    backend: BackendChoice = "auto",
    memory_limit: float | None = None,
    accuracy: float | None = None,
) -> JointRoute | HalvesRoute | None:
    """The dense backend's fused route (:class:`~reference.networked.transition.JointRoute`
    or :class:`~reference.networked.transition.HalvesRoute`) when an exact gradient asked for
    with these arguments runs on it, else ``None``.

    It does when the model has one (:func:`~reference.networked.transition.fused_route`:
    agents of equal local sizes, up to 6 binary agents), ``policy`` was built for ``model``,
    and the dense backend is the one :func:`transition_operator` would build: asked for and
    within the memory limit, or chosen by ``"auto"``.  In every other case (including
    arguments :func:`transition_operator` refuses, whose error it then raises) the answer is
    ``None``.
    """
    if backend not in ("auto", "dense") or policy.model is not model:
        return None
    route = fused_route(model, policy.beta)
    if route is None:
        return None
    limit = resolve_limit(memory_limit)
    if backend == "auto":
        acc = DEFAULT_ACCURACY if accuracy is None else accuracy
        return route if _automatic(model, policy.beta, acc, limit) == "dense" else None
    needed = model.derived.get("dense-memory")
    if needed is None:  # a function of the model's sizes only (as in DenseOperator)
        needed = model.derived["dense-memory"] = dense_memory(model)
    return route if needed <= limit else None


def _choose(costs: tuple[BackendCost, BackendCost], limit: int) -> BackendName:
    """The backend :func:`transition_operator` takes for these predictions: the faster of
    those that fit and can certify the accuracy; matrix-free when it alone fits but cannot
    (its constructor then says why); :class:`MemoryLimitError` when neither fits."""
    dense, free = costs
    fitting = [c for c in (dense, free) if c.fits]
    if not fitting:
        parts = "; ".join(
            f"{c.what} needs about {format_bytes(c.bytes)}" for c in (dense, free)
        )
        raise MemoryLimitError(
            f"neither backend fits: {parts}, above the memory limit of "
            f"{format_bytes(limit)} (raise it with memory_limit= or "
            "MARL_ORACLE_MEMORY_LIMIT, or use a smaller instance)"
        )
    usable = [c for c in fitting if c.reachable]
    if not usable:  # only matrix-free fits, and it cannot certify acc: say so
        return "matrix-free"
    return min(usable, key=lambda c: c.seconds).backend
