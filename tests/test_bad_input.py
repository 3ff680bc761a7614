"""Bad input, table-driven: each case raises a documented error whose message names the
offending entry and its value (STYLE item 2)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from reference import errors
from reference.instances import line_message
from reference.networked import (
    ConstraintPenaltyUtility,
    EntropyUtility,
    Graph,
    KLImitationUtility,
    LinearUtility,
    LocalizedSoftmaxPolicy,
    NetworkedMDP,
    QuadraticImitationUtility,
    solve,
    transition_operator,
)
from reference.networked.exact import Backend
from reference.tabular import TabularMDP, evaluate, evaluate_iterative


def _kernels(n: int = 2) -> list[np.ndarray]:
    g = Graph.line(n)
    return [np.full((2 ** len(g.neighbourhood(i)), 2, 2), 0.5) for i in range(n)]


def _rho(n: int = 2) -> tuple[np.ndarray, ...]:
    return tuple(np.array([0.5, 0.5]) for _ in range(n))


def _model(
    kernels: tuple[np.ndarray, ...] | None = None,
    gamma: float = 0.9,
    rho: tuple[np.ndarray, ...] | np.ndarray | None = None,
) -> NetworkedMDP:
    return NetworkedMDP(
        Graph.line(2),
        (2, 2),
        (2, 2),
        tuple(_kernels()) if kernels is None else kernels,
        gamma,
        _rho() if rho is None else rho,
    )


def _with_entry(index: tuple[int, ...], value: float, agent: int = 1) -> tuple[np.ndarray, ...]:
    ks = _kernels()
    ks[agent] = ks[agent].copy()
    ks[agent][index] = value
    return tuple(ks)


def _tabular(P: np.ndarray | None = None, r: np.ndarray | None = None,
             rho: np.ndarray | None = None, gamma: float = 0.9) -> TabularMDP:
    return TabularMDP(
        np.full((2, 2, 2), 0.5) if P is None else P,
        np.zeros((2, 2)) if r is None else r,
        np.array([1.0, 0.0]) if rho is None else rho,
        gamma,
    )


def _solve_line_message(n: int, memory_limit: float, backend: Backend = "auto") -> object:
    inst = line_message(n)
    policy = LocalizedSoftmaxPolicy.uniform(inst.model)
    return solve(inst.model, policy, inst.utilities(), memory_limit=memory_limit, backend=backend)


def _solve_with_foreign_operator() -> object:
    inst = line_message(3)
    pol = LocalizedSoftmaxPolicy.uniform(inst.model)
    other = LocalizedSoftmaxPolicy.uniform(inst.model, 1)
    op = transition_operator(inst.model, other)
    return solve(inst.model, pol, inst.utilities(), operator=op)


@dataclass(frozen=True)
class Case:
    name: str
    call: Callable[[], object]
    error: type[errors.ModelError]
    mentions: tuple[str, ...]


_non_stochastic = np.full((2, 2, 2), 0.5)
_non_stochastic[1, 0] = [0.5, 0.47]
_negative = np.full((2, 2, 2), 0.5)
_negative[0, 1] = [1.5, -0.5]
_nan = np.full((2, 2, 2), 0.5)
_nan[1, 1, 0] = np.nan

CASES = [
    Case("tabular kernel row sum", lambda: _tabular(P=_non_stochastic), errors.ModelError,
         ("P[s=1, a=0]", "0.97")),
    Case("tabular kernel negative", lambda: _tabular(P=_negative), errors.ModelError,
         ("P[s=0, a=1, 1]", "-0.5")),
    Case("tabular kernel NaN", lambda: _tabular(P=_nan), errors.ModelError, ("P[1, 1, 0]", "nan")),
    Case("tabular kernel shape", lambda: _tabular(P=np.full((2, 2, 3), 1 / 3)), errors.ModelError,
         ("P", "(2, 2, 3)")),
    Case("tabular reward shape", lambda: _tabular(r=np.zeros((3, 2))), errors.ModelError,
         ("r", "(3, 2)")),
    Case("tabular rho sum", lambda: _tabular(rho=np.array([0.5, 0.4])), errors.ModelError,
         ("rho", "0.9")),
    Case("gamma = 1", lambda: _tabular(gamma=1.0), errors.ModelError, ("gamma", "1.0")),
    Case("gamma negative", lambda: _model(gamma=-0.1), errors.ModelError, ("gamma", "-0.1")),
    Case("gamma NaN", lambda: _model(gamma=float("nan")), errors.ModelError, ("gamma", "nan")),
    Case("policy not stochastic",
         lambda: evaluate(_tabular(), np.array([[0.5, 0.6], [1.0, 0.0]])), errors.PolicyError,
         ("pi[s=0]", "1.1")),
    Case("local kernel row sum", lambda: _model(kernels=_with_entry((3, 1, 1), 0.47)),
         errors.ModelError, ("P_1[s_N=(1, 1), a=1]", "0.97")),
    Case("local kernel negative", lambda: _model(kernels=_with_entry((0, 0, 0), -0.25)),
         errors.ModelError, ("P_1[s_N=(0, 0), a=0, 0]", "-0.25")),
    Case("local kernel NaN", lambda: _model(kernels=_with_entry((2, 0, 1), np.nan, agent=0)),
         errors.ModelError, ("P_0[2, 0, 1]", "nan")),
    Case("local kernel wrong shape",
         lambda: _model(kernels=(np.full((2, 2, 2), 0.5), _kernels()[1])), errors.ModelError,
         ("P_0", "(2, 2, 2)", "(4, 2, 2)")),
    Case("wrong number of kernels", lambda: _model(kernels=tuple(_kernels()[:1])),
         errors.ModelError, ("kernels", "1 entries")),
    Case("local rho negative",
         lambda: _model(rho=(np.array([1.5, -0.5]), np.array([0.5, 0.5]))), errors.ModelError,
         ("rho_0", "-0.5")),
    Case("joint rho wrong size", lambda: _model(rho=np.full(3, 1 / 3)), errors.ModelError,
         ("rho", "(3,)", "(4,)")),
    Case("graph self-loop", lambda: Graph.from_edges(3, [(0, 1), (2, 2)]), errors.GraphError,
         ("edges[1]", "(2, 2)", "self-loop")),
    Case("graph out-of-range node", lambda: Graph.from_edges(3, [(0, 3)]), errors.GraphError,
         ("edges[0]", "node 3", "0..2")),
    Case("graph repeated edge", lambda: Graph.from_edges(3, [(0, 1), (1, 0)]), errors.GraphError,
         ("edges[1]", "(1, 0)")),
    Case("graph negative radius", lambda: Graph.line(3).neighbourhood(0, -1), errors.GraphError,
         ("k", "-1")),
    Case("negative beta", lambda: LocalizedSoftmaxPolicy.uniform(_model(), -1), errors.PolicyError,
         ("beta", "-1")),
    Case("theta wrong shape",
         lambda: LocalizedSoftmaxPolicy(_model(), 0, (np.zeros((2, 2)), np.zeros((4, 2)))),
         errors.PolicyError, ("theta_1", "(4, 2)", "(2, 2)")),
    Case("too large for the memory limit",
         lambda: _solve_line_message(16, memory_limit=1e8, backend="dense"),
         errors.MemoryLimitError, ("65536 joint states", "MiB", "memory limit")),
    Case("neither backend fits the memory limit", lambda: _solve_line_message(16, memory_limit=1e6),
         errors.MemoryLimitError,
         ("neither backend", "dense joint kernel of 65536", "matrix-free operator of 65536",
          "memory limit")),
    Case("unknown backend", lambda: _solve_line_message(3, memory_limit=1e8, backend="sparse"),  # type: ignore[arg-type]
         errors.ModelError, ("backend", "'sparse'", "'matrix-free'")),
    Case("entropy outside its domain",
         lambda: EntropyUtility((2, 2), 0.9, 0.01).value(np.array([[-5.0, 0.0], [1.0, 1.0]])),
         errors.UtilityDomainError, ("EntropyUtility", "p[0]")),
    Case("utility NaN occupancy",
         lambda: LinearUtility(np.zeros((2, 2)), 0.9).gradient(np.array([[np.nan, 0], [0, 0]])),
         errors.UtilityDomainError, ("LinearUtility", "[0, 0]", "nan")),
    Case("utility wrong shape",
         lambda: QuadraticImitationUtility(np.full((2, 2), 0.25), 0.9).value(np.zeros((3, 2))),
         errors.UtilityDomainError, ("QuadraticImitationUtility", "(3, 2)")),
    Case("KL target not a distribution",
         lambda: KLImitationUtility(np.full((2, 2), 0.3), 0.9), errors.ModelError, ("target",)),
    Case("penalty weight not positive",
         lambda: ConstraintPenaltyUtility(LinearUtility(np.zeros((2, 2)), 0.9), 0.0, -1.0),
         errors.ModelError, ("weight", "-1")),
    Case("iteration cannot certify",
         lambda: evaluate_iterative(_tabular(r=np.ones((2, 2)), gamma=0.99), np.full((2, 2), 0.5),
                                    tol=1e-12, max_iter=10),
         errors.SolverError, ("max_iter = 10", "1e-12")),
    Case("line-message with one agent", lambda: line_message(1), errors.ModelError, ("n = 1",)),
    Case("operator of another policy", lambda: _solve_with_foreign_operator(), errors.ModelError,
         ("operator", "different")),
    Case("random model from a seed", lambda: NetworkedMDP.random(Graph.ring(3), (2,) * 3, (2,) * 3,
                                                                  0),  # type: ignore[arg-type]
         errors.ModelError, ("rng = 0", "np.random.default_rng(0)")),
    Case("random model rho", lambda: NetworkedMDP.random(Graph.ring(3), (2,) * 3, (2,) * 3,
                                                          np.random.default_rng(0), rho="flat"),
         errors.ModelError, ("rho = 'flat'", "'uniform'")),
    Case("random model state count", lambda: NetworkedMDP.random(
        Graph.ring(3), (2, 0, 2), (2,) * 3, np.random.default_rng(0)),
         errors.ModelError, ("n_states[1] = 0",)),
    Case("random model agent count", lambda: NetworkedMDP.random(
        Graph.ring(3), (2,) * 2, (2,) * 3, np.random.default_rng(0)),
         errors.ModelError, ("2 state counts", "3 agents")),
]


def test_there_are_at_least_twenty_cases() -> None:
    assert len(CASES) >= 20


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_raises_named_error(case: Case) -> None:
    with pytest.raises(case.error) as info:
        case.call()
    message = str(info.value)
    for fragment in case.mentions:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert isinstance(info.value, ValueError)  # one family: ModelError(ValueError)
