"""F* over the occupancy polytope (SPEC section 8; proofs_notes/optimum.md).

Every route returns a certified interval around ``F*``; the tests assert the intervals
overlap (each route's lower end is at most every other route's upper end), which fails as
soon as one route's value or certificate is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings

from reference.errors import ModelError, NonConcaveError
from reference.instances import line_message
from reference.networked import (
    ConstraintPenaltyUtility,
    EntropyUtility,
    LinearUtility,
    LocalizedSoftmaxPolicy,
    Utility,
    UtilityConstants,
    objective,
)
from reference.networked.optimum import (
    flow_constrained_optimum,
    linear_maximum,
    linear_program_optimum,
    optimum,
    policy_occupancy,
    value_iteration_maximum,
)
from reference.tabular import policy_iteration, value_iteration
from verify import strategies as mst
from verify.tolerances import summation_tolerance


def _rounding(problem_size: int, scale: float) -> float:
    """Rounding allowance between two evaluations of ``F`` (or of ``<c, lam>``) on the same
    occupancy: a sum of ``problem_size`` terms of magnitude ``scale``."""
    return summation_tolerance(problem_size, scale)


def _assert_overlap(lo1: float, hi1: float, lo2: float, hi2: float, slack: float) -> None:
    assert lo1 <= hi2 + slack, (lo1, hi2)
    assert lo2 <= hi1 + slack, (lo2, hi1)


@settings(max_examples=15)
@given(problem=mst.networked_problems(max_joint_states=16, utility_kinds=("linear",)))
def test_linear_routes_agree(problem: mst.NetworkedProblem) -> None:
    """Linear utilities: Frank-Wolfe, the LP (HiGHS), explicit value iteration and policy
    iteration on the joint tabular MDP give intervals around one number."""
    m, utils = problem.model, problem.utilities
    rewards = [u.reward for u in utils if isinstance(u, LinearUtility)]
    opt = optimum(m, utils, gap=1e-9)
    lp = linear_program_optimum(m, rewards)
    mdp = m.to_tabular(rewards)
    vi = value_iteration(mdp, tol=1e-11)
    pi = policy_iteration(mdp)
    r_max = max(1.0, max(float(np.abs(r).max()) for r in rewards)) / (1 - m.gamma)
    slack = _rounding(m.states.size * m.actions.size, r_max)
    assert opt.duality_gap <= 1e-9
    for lo, hi in (
        (lp.lower, lp.upper),
        (vi.J - vi.error_bound, vi.J + vi.error_bound),
        (pi.J - pi.error_bound, pi.J + pi.error_bound),
    ):
        _assert_overlap(opt.value, opt.upper_bound, lo, hi, slack)


@settings(max_examples=10)
@given(
    problem=mst.networked_problems(
        max_agents=3,
        max_joint_states=8,
        utility_kinds=("entropy", "quadratic", "kl", "penalty"),
    )
)
def test_concave_routes_agree(problem: mst.NetworkedProblem) -> None:
    """Concave utilities: Frank-Wolfe vs SLSQP over the explicit flow constraints, the
    latter certified by explicit joint value iteration."""
    m, utils = problem.model, problem.utilities
    opt = optimum(m, utils, gap=1e-8)
    flow = flow_constrained_optimum(m, utils)
    scale = 1.0 + max(abs(opt.value), abs(flow.value))
    slack = _rounding(sum(u.shape[0] * u.shape[1] for u in utils), scale)
    _assert_overlap(opt.value, opt.upper_bound, flow.lower, flow.upper, slack)
    assert opt.duality_gap <= 1e-8


@pytest.mark.parametrize("kind", ["linear", "entropy"])
def test_line_message_routes_agree(kind: str) -> None:
    """line-message, n = 3: both Frank-Wolfe variants and both oracles, and the independent
    route, agree within their certificates."""
    inst = line_message(3)
    m, utils = inst.model, inst.utilities(kind)
    routes = [
        optimum(m, utils, gap=1e-9),
        optimum(m, utils, gap=1e-5, method="frank-wolfe"),
        optimum(m, utils, gap=1e-9, oracle="value-iteration"),
    ]
    flow = flow_constrained_optimum(m, utils)
    slack = _rounding(m.states.size * m.actions.size, 10.0)
    for r in routes:
        _assert_overlap(r.value, r.upper_bound, flow.lower, flow.upper, slack)
        for s in routes:
            _assert_overlap(r.value, r.upper_bound, s.value, s.upper_bound, slack)


def test_linear_line_message_known_value() -> None:
    """line-message n = 3 with linear rewards: keeping every state at 1 forever is optimal
    (agent 2 plays 1, agent 1 plays 1 and its right neighbour is 1, agent 0 copies it), so
    ``F* = (1/3)(1 + 0.1 + 0.1) / (1 - 0.9) = 4`` exactly (hand derivation from SPEC
    section 7's rewards)."""
    inst = line_message(3)
    opt = optimum(inst.model, inst.utilities("linear"), gap=1e-12)
    assert opt.value <= 4.0 + _rounding(64, 10.0)
    assert opt.upper_bound >= 4.0 - _rounding(64, 10.0)
    assert opt.duality_gap <= 1e-12


@settings(max_examples=10)
@given(problem=mst.networked_problems(max_joint_states=16))
def test_policy_attains_occupancy(problem: mst.NetworkedProblem) -> None:
    """The returned centralized policy, evaluated from its own kernel, has the returned local
    occupancies, and ``F`` there is the returned value."""
    m, utils = problem.model, problem.utilities
    opt = optimum(m, utils, gap=1e-7)
    occ = policy_occupancy(m, opt.policy)
    tol = occ.error_bound + opt.occupancy_error + _rounding(m.states.size, 1 / (1 - m.gamma))
    for got, want in zip(occ.local_occupancy, opt.local_occupancy, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=tol)
    np.testing.assert_allclose(occ.lam_S, opt.lam_S, rtol=0, atol=tol)
    for row in opt.policy.probs:
        assert abs(row.sum() - 1.0) <= _rounding(row.size, 1.0)
        assert (row >= 0).all()


@settings(max_examples=10)
@given(problem=mst.networked_problems(max_joint_states=16), seed=mst.seeds())
def test_optimum_bounds_every_localized_policy(problem: mst.NetworkedProblem, seed: int) -> None:
    """``F(theta) <= F*`` for random localized policies (each is a centralized policy), and
    the trace's certificate bounds the suboptimality of every iterate."""
    m, utils = problem.model, problem.utilities
    opt = optimum(m, utils, gap=1e-8)
    rng = np.random.default_rng(seed)
    slack = _rounding(m.states.size * m.actions.size, 1.0 + abs(opt.value))
    for beta in (0, 1):
        pol = LocalizedSoftmaxPolicy.random(m, beta, rng, scale=3.0)
        assert objective(m, pol, utils) <= opt.upper_bound + slack
    suboptimality = opt.value - opt.trace.objective
    assert (suboptimality <= opt.trace.gap + slack).all()


@settings(max_examples=15)
@given(
    problem=mst.networked_problems(max_joint_states=16, utility_kinds=("linear",)), seed=mst.seeds()
)
def test_oracle_bounds(problem: mst.NetworkedProblem, seed: int) -> None:
    """The linear oracle's MacQueen interval contains ``J*`` of explicit policy iteration,
    from a cold start, a random warm start and by value iteration."""
    m, utils = problem.model, problem.utilities
    rewards = [u.reward for u in utils if isinstance(u, LinearUtility)]
    pi = policy_iteration(m.to_tabular(rewards))
    rng = np.random.default_rng(seed)
    start = rng.integers(0, m.actions.size, size=m.states.size)
    slack = _rounding(m.states.size * m.actions.size, 1.0 + abs(pi.J))
    for lin in (
        linear_maximum(m, rewards),
        linear_maximum(m, rewards, start=start),
        value_iteration_maximum(m, rewards),
    ):
        _assert_overlap(lin.lower, lin.upper, pi.J - pi.error_bound, pi.J + pi.error_bound, slack)
        assert lin.lower <= lin.attained + slack
        assert lin.attained <= lin.upper + slack


def test_wrong_oracle_is_caught() -> None:
    """Planted defect: an 'oracle' that maximises the wrong reward (sign flipped) gives an
    upper bound below the true optimum, which the route comparison catches."""
    inst = line_message(3)
    m = inst.model
    wrong = linear_maximum(m, [-r for r in inst.rewards])
    truth = linear_program_optimum(m, inst.rewards)
    assert -wrong.lower < truth.lower  # the flipped maximum is the minimum, far below F*


@dataclass(frozen=True, eq=False)
class _ConvexSquare(Utility):
    """``f(lam) = ||lam||^2``: convex, declared non-concave."""

    shape: tuple[int, int]
    gamma: float

    @property
    def constants(self) -> UtilityConstants:
        return UtilityConstants(
            2.0 / (1 - self.gamma), 2.0, (0.0, 1 / (1 - self.gamma) ** 2), False
        )

    def _value(self, lam: np.ndarray) -> float:
        return float(np.sum(lam * lam))

    def _gradient(self, lam: np.ndarray) -> np.ndarray:
        return 2.0 * lam


def test_non_concave_utility_refused() -> None:
    """A constraint penalty around a non-concave g is refused with a typed error."""
    inst = line_message(2)
    m = inst.model
    g = _ConvexSquare((2, 2), m.gamma)
    penalty = ConstraintPenaltyUtility(g, threshold=50.0, weight=1.0)
    entropy = EntropyUtility((2, 2), m.gamma)
    with pytest.raises(NonConcaveError, match=r"utilities\[1\] = ConstraintPenaltyUtility"):
        optimum(m, (entropy, penalty))
    with pytest.raises(NonConcaveError):
        flow_constrained_optimum(m, (penalty, entropy))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"gap": 0.0}, "gap"),
        ({"gap": float("nan")}, "gap"),
        ({"method": "newton"}, "method"),
        ({"oracle": "lp"}, "oracle"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    inst = line_message(2)
    with pytest.raises(ModelError, match=match):
        optimum(inst.model, inst.utilities("linear"), **kwargs)  # type: ignore[arg-type]


def test_bad_rewards_and_start() -> None:
    inst = line_message(2)
    m = inst.model
    with pytest.raises(ModelError, match="expected one per agent"):
        linear_maximum(m, inst.rewards[:1])
    with pytest.raises(ModelError, match=r"rewards\[1\] has shape"):
        linear_maximum(m, [inst.rewards[0], np.zeros(3)])
    with pytest.raises(ModelError, match=r"start\[0\] = 7"):
        linear_maximum(m, inst.rewards, start=np.array([7, 0, 0, 0]))
    with pytest.raises(ModelError, match="utilities given"):
        optimum(m, inst.utilities("linear")[:1])


def test_time_limit_returns_the_gap_reached() -> None:
    """Plain Frank-Wolfe under a tiny time budget stops early with an honest gap."""
    inst = line_message(4)
    out = optimum(
        inst.model, inst.utilities("entropy"), gap=1e-12, method="frank-wolfe", time_limit=0.0
    )
    assert out.iterations == 1
    assert out.duality_gap > 1e-12
