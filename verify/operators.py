"""Compare the matrix-free transition backend with the dense one.

:func:`compare_operators` checks the operator itself on random vectors;
:func:`compare_solutions` checks two exact gradients (:func:`reference.networked.solve`), one
from each backend, with tolerances built from their certified bounds.

Operators
---------

Every operation of :class:`~reference.networked.transition.TransitionOperator` that does not
solve (``apply``, ``apply_transpose`` with one and with several columns, ``apply_agent`` and
``apply_agent_transpose`` for every agent) is evaluated by both backends on the same
standard-normal inputs, and the gap is divided by a tolerance derived from the rounding of
each computation (:func:`verify.tolerances.contraction_tolerance`):

* the matrix-free contraction errs by at most the operator's ``depth`` (``transpose_depth``
  for the adjoint: the plan's, plus one per added slab) roundings per path;
* the dense matrix-vector product by ``|S|`` (a dot product of length ``|S|``), the dense
  agent contractions by ``sum_j |S_j|`` (one dot product per next-state axis), and their
  adjoints by ``|S|`` more (the sum over current states);
* the two float kernels differ by :func:`verify.tolerances.kernel_formation_depth` roundings;
* row sums of the kernels are at most 2 (they are ``1 + O(n eps)``), so the scale of an entry
  of ``P v`` is ``2 ||v||_inf`` and the l1 scale of ``P^T u`` is ``2 ||u||_1``.

Entries are compared in the inf-norm for forward operations and in the l1-norm for adjoint
ones (``proofs_notes/matrix-free.md#agreement``).  A ratio above 1 is a disagreement.

Solutions
---------
``lam_S`` (l1) within :func:`verify.tolerances.solve_agreement_tolerance` of the two
occupancy certificates; each ``lam_i`` within that plus the rounding of the two grouped sums;
``Vbar`` (inf) within the value certificates plus the measured shadow-reward gap passed
through ``(I - gamma P_pi)^{-1}``; ``grad F`` (entrywise) within
:func:`verify.tolerances.gradient_agreement_tolerance`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from reference._arrays import FloatArray
from reference.errors import ModelError
from reference.networked.exact import NetworkedSolution
from reference.networked.matrix_free import MatrixFreeOperator
from reference.networked.transition import DenseOperator
from verify.tolerances import (
    EPS,
    contraction_tolerance,
    gradient_agreement_tolerance,
    kernel_formation_depth,
    solve_agreement_tolerance,
    summation_tolerance,
)

__all__ = [
    "OperatorComparison",
    "SolutionComparison",
    "compare_operators",
    "compare_solutions",
    "reverse_form_depth",
]


def _ratio(gap: float, tolerance: float) -> float:
    """``gap / tolerance``, with ``0 / 0 = 0`` (an exact zero on both sides agrees)."""
    if tolerance > 0.0:
        return gap / tolerance
    return 0.0 if gap == 0.0 else float("inf")


_Pair = tuple[FloatArray, FloatArray, int, float, bool]
"""``(candidate result, dense result, rounding depth, input scale, compare in l1)``."""


@dataclass(frozen=True)
class OperatorComparison:
    """Outcome of :func:`compare_operators`.

    Attributes:
        worst_ratio: largest ``gap / tolerance`` over every operation compared.
        worst_operation: the operation where it occurred, e.g. ``"apply_agent(2)"``.
        checked: number of operations compared.
    """

    worst_ratio: float
    worst_operation: str
    checked: int

    @property
    def agrees(self) -> bool:
        """Whether every gap is within its tolerance."""
        return self.worst_ratio <= 1.0


def compare_operators(
    candidate: MatrixFreeOperator,
    dense: DenseOperator,
    rng: np.random.Generator,
    columns: int = 3,
) -> OperatorComparison:
    """Evaluate every non-solving operation of both operators on random inputs.

    Args:
        candidate: the matrix-free operator (its ``depth`` and ``transpose_depth`` give the
            rounding depths).
        dense: the dense operator of the same model and policy.
        rng: source of the standard-normal inputs.
        columns: width of the multi-column inputs.
    """
    model = candidate.model
    if dense.model is not model or dense.policy is not candidate.policy:
        raise ModelError("the two operators were built for different models or policies")
    n_joint = candidate.n_states
    formation = kernel_formation_depth(model.n_actions)
    sum_states = sum(model.n_states)
    results: list[tuple[float, str]] = []

    def record(
        name: str, got: FloatArray, want: FloatArray, depth: int, scale: float, l1: bool
    ) -> None:
        diff = np.abs(np.asarray(got) - np.asarray(want))
        gap = float(np.max(np.sum(diff, axis=0))) if l1 else float(np.max(diff))
        results.append((_ratio(gap, contraction_tolerance(depth, 2.0 * scale)), name))

    def inf(x: FloatArray) -> float:
        return float(np.max(np.abs(x)))

    def l1(x: FloatArray) -> float:
        return float(np.max(np.sum(np.abs(x), axis=0)))

    forward = candidate.depth + n_joint + formation
    backward = candidate.transpose_depth + n_joint + formation
    for width in (None, columns):
        shape = (n_joint,) if width is None else (n_joint, width)
        v = rng.standard_normal(shape)
        u = rng.standard_normal(shape)
        tag = "" if width is None else f"[{width} columns]"
        record(f"apply{tag}", candidate.apply(v), dense.apply(v), forward, inf(v), False)
        record(
            f"apply_transpose{tag}",
            candidate.apply_transpose(u),
            dense.apply_transpose(u),
            backward,
            l1(u),
            True,
        )

    def agent_forward(i: int) -> _Pair:
        v = rng.standard_normal(n_joint)
        depth = candidate.depth + sum_states + formation
        return candidate.apply_agent(i, v), dense.apply_agent(i, v), depth, inf(v), False

    def agent_backward(i: int) -> _Pair:
        u = rng.standard_normal((n_joint, model.n_actions[i]))
        # matrix-free: |A_i| adjoints summed; dense: the agent contraction, then |S| rows summed
        depth = (
            candidate.transpose_depth + model.n_actions[i]
            + sum_states + model.n + n_joint + formation
        )
        got, want = candidate.apply_agent_transpose(i, u), dense.apply_agent_transpose(i, u)
        return got[:, None], want[:, None], depth, float(np.sum(np.abs(u))), True

    agent_checks: tuple[tuple[str, Callable[[int], _Pair]], ...] = (
        ("apply_agent", agent_forward),
        ("apply_agent_transpose", agent_backward),
    )
    for i in range(model.n):
        for name, check in agent_checks:
            got, want, depth, scale, is_l1 = check(i)
            record(f"{name}({i})", got, want, depth, scale, is_l1)
    ratio, name = max(results)
    return OperatorComparison(ratio, name, len(results))


@dataclass(frozen=True)
class SolutionComparison:
    """Outcome of :func:`compare_solutions`: each gap next to its derived tolerance.

    Attributes:
        occupancy: ``(||lam_S^mf - lam_S^dense||_1, tolerance)``.
        local_occupancy: ``(max_i ||lam_i^mf - lam_i^dense||_1, tolerance)``.
        team_value: ``(||Vbar^mf - Vbar^dense||_inf, tolerance)``.
        gradient: ``(max |grad^mf - grad^dense|, tolerance)`` over every entry.
        reward_gap: the measured ``max_i ||r_i^mf - r_i^dense||_inf`` the tolerances use.
    """

    occupancy: tuple[float, float]
    local_occupancy: tuple[float, float]
    team_value: tuple[float, float]
    gradient: tuple[float, float]
    reward_gap: float

    @property
    def worst_ratio(self) -> float:
        """Largest ``gap / tolerance``."""
        pairs = (self.occupancy, self.local_occupancy, self.team_value, self.gradient)
        return max(_ratio(gap, tol) for gap, tol in pairs)

    @property
    def agrees(self) -> bool:
        """Whether every gap is within its tolerance."""
        return self.worst_ratio <= 1.0


def reverse_form_depth(operator: MatrixFreeOperator) -> int:
    """Roundings along one path of the matrix-free ``P^{(i,b)} Vbar`` terms, which come
    weighted by ``lam_S`` from reverse-mode differentiation
    (``proofs_notes/matrix-free.md#reverse``): the forward chain of ``Vbar``, the adjoint chain
    of ``lam_S``, the product rule inside a merged step (at most its matrix's entries, twice),
    and the contraction with ``K_i^b`` (``|S_i|`` terms); the pair contraction's sum over
    ``|S|`` terms is the ``|S|`` summation the gradient tolerance already carries.  In slabs of
    the plan's slab agent ``a`` (``#slabs``) the derivative sums add ``|S_a| - 1`` terms, counted
    whenever the plan has one (the memory limit decides the slabs at the call)."""
    plan = operator.plan
    entries = max(s.matrix_floats for s in plan.steps)
    slabs = 0 if plan.slab_agent is None else plan.n_states[plan.slab_agent] - 1
    return (
        plan.depth + operator.transpose_depth + 2 * entries + max(plan.n_states) + 4 + slabs
    )


def compare_solutions(
    dense: NetworkedSolution, matrix_free: NetworkedSolution, operator: MatrixFreeOperator
) -> SolutionComparison:
    """Compare :func:`~reference.networked.solve` on the two backends (same instance).

    Args:
        dense: the solution on the dense backend (per-agent values, whose mean is ``Vbar``).
        matrix_free: the solution computed with ``operator``.
        operator: the matrix-free operator (its row-sum bound and plan depth enter the
            tolerances).
    """
    if dense.backend != "dense" or matrix_free.backend != "matrix-free":
        raise ModelError(
            f"expected a dense and a matrix-free solution, got {dense.backend!r} and "
            f"{matrix_free.backend!r}"
        )
    model = operator.model
    g, n_joint = model.gamma, model.states.size
    mass = 1.0 / (1.0 - g)
    formation = kernel_formation_depth(model.n_actions)
    occ_tol = solve_agreement_tolerance(
        dense.occupancy_error_bound, matrix_free.occupancy_error_bound, g,
        operator.row_sum_bound, formation, mass + matrix_free.occupancy_error_bound,
    )
    occ_gap = float(np.sum(np.abs(matrix_free.lam_S - dense.lam_S)))
    # lam_i: the same grouped sums of |S| terms of total mass 1/(1-gamma) in both
    local_tol = occ_tol + 2.0 * summation_tolerance(n_joint, mass)
    local_gap = max(
        float(np.sum(np.abs(a - b)))
        for a, b in zip(matrix_free.local_occupancy, dense.local_occupancy, strict=True)
    )
    reward_gap = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(matrix_free.shadow_rewards, dense.shadow_rewards, strict=True)
    )
    reward_bound = max(float(np.max(np.abs(r))) for r in dense.shadow_rewards)
    v_scale = reward_bound * mass
    # the dense Vbar is the mean of n certified columns: its rounding adds n eps |V|
    value_gap = solve_agreement_tolerance(
        dense.value_error_bound + model.n * EPS * v_scale, matrix_free.value_error_bound, g,
        operator.row_sum_bound, formation, v_scale + matrix_free.value_error_bound,
    )
    team_tol = value_gap + reward_gap * mass + (model.n + 2) * EPS * v_scale
    team_gap = float(np.max(np.abs(matrix_free.team_value - dense.team_value)))
    grad_tol = gradient_agreement_tolerance(
        gamma=g, n_agents=model.n, n_states=n_joint, occupancy_gap=occ_tol,
        value_gap=value_gap, reward_gap=reward_gap, reward_bound=reward_bound,
        agent_apply_depth=reverse_form_depth(operator) + sum(model.n_states) + formation,
    )
    grad_gap = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(matrix_free.gradient, dense.gradient, strict=True)
    )
    return SolutionComparison(
        occupancy=(occ_gap, occ_tol),
        local_occupancy=(local_gap, local_tol),
        team_value=(team_gap, team_tol),
        gradient=(grad_gap, grad_tol),
        reward_gap=reward_gap,
    )
