"""Compare the matrix-free transition operator with the dense one on random vectors.


Every operation of :class:`~reference.networked.transition.TransitionOperator` that does not
solve (``apply``, ``apply_transpose`` with one and with several columns, ``apply_agent`` and
``apply_agent_transpose`` for every agent) is evaluated by both backends on the same
standard-normal inputs, and the gap is divided by a tolerance derived from the rounding of
each computation (:func:`verify.tolerances.contraction_tolerance`):

* the matrix-free contraction errs by at most ``plan.depth`` (``plan.transpose_depth`` for the
  adjoint) roundings per path;
* the dense matrix-vector product by ``|S|`` (a dot product of length ``|S|``), the dense
  agent contractions by ``sum_j |S_j|`` (one dot product per next-state axis), and their
  adjoints by ``|S|`` more (the sum over current states);
* the two float kernels differ by :func:`verify.tolerances.kernel_formation_depth` roundings;
* row sums of the kernels are at most 2 (they are ``1 + O(n eps)``), so the scale of an entry
  of ``P v`` is ``2 ||v||_inf`` and the l1 scale of ``P^T u`` is ``2 ||u||_1``.

Entries are compared in the inf-norm for forward operations and in the l1-norm for adjoint
ones (``proofs_notes/matrix-free.md#agreement``).  A ratio above 1 is a disagreement.

"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from reference._arrays import FloatArray
from reference.errors import ModelError
from reference.networked.matrix_free import MatrixFreeOperator
from reference.networked.transition import DenseOperator
from verify.tolerances import contraction_tolerance, kernel_formation_depth

__all__ = ["OperatorComparison", "compare_operators"]

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
        candidate: the matrix-free operator (its plan gives the rounding depths).
        dense: the dense operator of the same model and policy.
        rng: source of the standard-normal inputs.
        columns: width of the multi-column inputs.
    """
    model = candidate.model
    if dense.model is not model or dense.policy is not candidate.policy:
        raise ModelError("the two operators were built for different models or policies")
    n_joint = candidate.n_states
    plan = candidate.plan
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

    forward = plan.depth + n_joint + formation
    backward = plan.transpose_depth + n_joint + formation
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
        depth = plan.depth + sum_states + formation
        return candidate.apply_agent(i, v), dense.apply_agent(i, v), depth, inf(v), False

    def agent_backward(i: int) -> _Pair:
        u = rng.standard_normal((n_joint, model.n_actions[i]))
        # matrix-free: |A_i| adjoints summed; dense: the agent contraction, then |S| rows summed
        depth = (
            plan.transpose_depth + model.n_actions[i]
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
