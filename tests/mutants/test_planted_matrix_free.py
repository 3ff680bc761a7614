"""Planted bugs in the matrix-free backend are caught by the agreement checks that pass the
real one (verify/operators.py, tests/test_matrix_free.py; proofs_notes/matrix-free.md).

Each mutant is a subclass of :class:`MatrixFreeOperator` with one plausible slip: a local
factor with its current and next state swapped, a next-state axis contracted against the
wrong agent's factor, the adjoint replaced by the forward map, the agent kernel not
substituted, an agent dropped from a merged step factor, and the team value solved with the
transposed kernel."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest

from reference._arrays import FloatArray
from reference.networked import (
    DenseOperator,
    EntropyUtility,
    Graph,
    LocalizedSoftmaxPolicy,
    MatrixFreeOperator,
    NetworkedMDP,
    contraction_plan,
    solve,
)
from reference.networked.transition import LinearSolve
from verify.operators import compare_operators, compare_solutions


class TransposedFactor(MatrixFreeOperator):
    """``M_0[s, s'_0]`` with agent 0's current and next state swapped."""

    def __init__(self, model: NetworkedMDP, policy: LocalizedSoftmaxPolicy, **kw: object) -> None:
        super().__init__(model, policy, **kw)  # type: ignore[arg-type]
        support = self.plan.supports[0]
        own = support.index(0)
        factors = list(self.factors)
        factors[0] = np.ascontiguousarray(np.swapaxes(factors[0], own, len(support)))
        self.factors = tuple(factors)
        self._matrices = tuple(self._matrix(s, self.factors) for s in self.plan.steps)


class WrongAxis(MatrixFreeOperator):
    """Agents 0 and 1 exchange next-state axes before the contraction."""

    def _forward(
        self, v: FloatArray, matrices: Sequence[FloatArray], out: FloatArray | None = None
    ) -> FloatArray:
        t = np.asarray(v).reshape(*self.model.n_states, -1)
        swapped = np.swapaxes(t, 0, 1).reshape(v.shape)
        return super()._forward(swapped, matrices, out)


class ForgottenAdjoint(MatrixFreeOperator):
    """``apply_transpose`` applies ``P_pi`` instead of ``P_pi^T``."""

    def apply_transpose(self, u: FloatArray) -> FloatArray:
        return self.apply(u)


class UnsubstitutedAgent(MatrixFreeOperator):
    """``apply_agent`` keeps the policy-averaged ``M_i`` for every action ``b``."""

    def _agent_matrices(self, i: int, b: int) -> list[FloatArray]:
        del i, b
        return list(self._matrices)


class DroppedGroupMember(MatrixFreeOperator):
    """The merged factor of a multi-agent step omits its last agent (its next state summed
    with weight 1 instead of ``M_i``)."""

    def _matrix(self, step: object, factors: Sequence[FloatArray]) -> FloatArray:
        from reference.networked.matrix_free import ContractionStep

        assert isinstance(step, ContractionStep)
        if len(step.agents) > 1:
            factors = list(factors)
            last = step.agents[-1]
            factors[last] = np.ones_like(factors[last])
        return super()._matrix(step, factors)


class TransposedValueSolve(MatrixFreeOperator):
    """``solve_values`` solves ``(I - gamma P_pi^T) x = r`` (the occupancy system)."""

    def solve_values(self, r: FloatArray) -> LinearSolve:
        return self.solve_occupancy(r)


def _instance(seed: int) -> tuple[NetworkedMDP, LocalizedSoftmaxPolicy]:
    """Ring of 5 binary agents, Dirichlet(1, 1) kernel rows, beta = 1."""
    rng = np.random.default_rng(seed)
    graph = Graph.ring(5)
    model = NetworkedMDP.random(graph, (2,) * 5, (2,) * 5, rng)
    return model, LocalizedSoftmaxPolicy.random(model, 1, rng)


OPERATOR_MUTANTS: list[tuple[str, Callable[..., MatrixFreeOperator], int]] = [
    ("transposed-local-factor", TransposedFactor, 1),
    ("wrong-contraction-axis", WrongAxis, 1),
    ("forgotten-adjoint", ForgottenAdjoint, 1),
    ("agent-kernel-not-substituted", UnsubstitutedAgent, 1),
    ("dropped-group-member", DroppedGroupMember, 8),
]


@pytest.mark.parametrize(("cls", "max_group"), [(c, g) for _, c, g in OPERATOR_MUTANTS],
                         ids=[name for name, _, _ in OPERATOR_MUTANTS])
def test_operator_mutant_is_caught(cls: Callable[..., MatrixFreeOperator], max_group: int) -> None:
    """On each of three seeded rings the comparison with the dense operator fails."""
    for seed in range(3):
        model, pol = _instance(seed)
        plan = contraction_plan(model, 1, max_group=max_group)
        bug = cls(model, pol, plan=plan)
        cmp = compare_operators(bug, DenseOperator(model, pol), np.random.default_rng(seed))
        assert not cmp.agrees, (seed, cmp)


@pytest.mark.parametrize("max_group", [1, 8])
def test_correct_operator_passes_the_same_comparison(max_group: int) -> None:
    for seed in range(3):
        model, pol = _instance(seed)
        op = MatrixFreeOperator(model, pol, plan=contraction_plan(model, 1, max_group=max_group))
        cmp = compare_operators(op, DenseOperator(model, pol), np.random.default_rng(seed))
        assert cmp.agrees, (seed, cmp)


def test_value_solve_mutant_is_caught_by_the_solution_comparison() -> None:
    """The transposed value solve fails the dense/matrix-free gradient agreement that the
    correct operator passes (verify.operators.compare_solutions)."""
    model, pol = _instance(0)
    utils = tuple(EntropyUtility((2, 2), model.gamma) for _ in range(model.n))
    dense = solve(model, pol, utils, backend="dense")
    good_op, bug_op = MatrixFreeOperator(model, pol), TransposedValueSolve(model, pol)
    good = compare_solutions(dense, solve(model, pol, utils, operator=good_op), good_op)
    bug = compare_solutions(dense, solve(model, pol, utils, operator=bug_op), bug_op)
    assert good.agrees, good
    assert not bug.agrees and bug.team_value[0] > bug.team_value[1], bug
