"""Conformance checks for networked MARL with general utilities (SPEC sections 2-4): shadow
rewards, kappa-hop truncated shadow critics, and sampled local occupancies.

Interface decision.  Unlike the tabular checks, these callables receive the project's own
objects rather than a list of plain arrays: a :class:`~reference.networked.NetworkedMDP`
``model``, a :class:`~reference.networked.LocalizedSoftmaxPolicy` ``policy`` and a tuple of
:class:`~reference.networked.Utility` ``utilities`` (one per agent).  A networked instance is
a graph, ``n`` local kernels ``P_i[s_{N_i}, a_i, s'_i]`` with a mixed-radix neighbourhood
index, an initial law that is a product or a joint vector, an observation radius ``beta``
and ``n`` localized logit tables ``theta_i[o_i, a_i]``; flattening that into positional
arrays would either hide the factored structure behind an exponentially large joint kernel
or need a dozen arrays plus a re-documented index convention.  The objects are plain
records with documented read-only numpy attributes, so a user adapts their own code through
them without calling any of our solvers:

* ``model.graph`` (``.edges``, ``.distance``, ``.neighbourhood(i, k)``), ``model.n_states``,
  ``model.n_actions``, ``model.gamma``, ``model.kernels[i]`` (shape
  ``(|S_{N_i}|, |A_i|, |S_i|)``, ``N_i`` in increasing agent order, lowest agent most
  significant), ``model.rho`` (tuple of local vectors, or a joint vector);
  ``model.joint_kernel()`` and ``model.joint_rho()`` for users who work on the joint system;
* ``policy.beta``, ``policy.observed[i]`` (``N_i^beta``), ``policy.theta[i]`` and
  ``policy.probs[i]`` (``pi_i[o_i, a_i]``, ``o_i`` mixed radix over ``N_i^beta``);
* each utility's parameters (``LinearUtility.reward``, ``EntropyUtility.eps``,
  ``QuadraticImitationUtility.target``, ``KLImitationUtility.target``/``.eps``,
  ``ConstraintPenaltyUtility.constraint``/``.threshold``/``.weight``/``.objective``; formulas
  in ``reference/networked/utilities.py``), so the user's own utility gradients are what is
  tested; ``u.gradient(lam)`` is there for users who only want to test the occupancy part.

Joint states and joint actions are indexed mixed radix with agent 0 most significant
(:class:`~reference.networked.JointSpace`).  Every call gets freshly built objects, distinct
from the oracle's.  Instances (:func:`_instances`): lines, rings, stars, trees and grids of up
to four agents, deterministic rows and unreachable states included, every utility kind of
SPEC section 2; three in four have at least two agents with two local states and actions and
``gamma >= 0.3`` (where bugs show), one in four comes from
:func:`verify.strategies.networked_problems` (one agent, one state, ``gamma = 0``, ...).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from math import prod
from typing import Any

import numpy as np
import numpy.typing as npt

from reference._arrays import FloatArray
from reference.errors import ModelError
from reference.networked.algorithm import finite_horizon_occupancy
from reference.networked.exact import NetworkedSolution, local_occupancies, shadow_q, solve
from reference.networked.graph import Graph
from reference.networked.model import NetworkedMDP
from reference.networked.policy import LocalizedSoftmaxPolicy
from reference.networked.truncation import WEIGHT_CHOICES, Weights, hop_index, truncated_q
from reference.networked.utilities import (
    ConstraintPenaltyUtility,
    EntropyUtility,
    KLImitationUtility,
    LinearUtility,
    QuadraticImitationUtility,
    Utility,
)
from verify.bounds import l1_radius, split_delta
from verify.checks._core import (
    Alternative,
    Case,
    CaseFailure,
    CaseResult,
    CheckArgumentError,
    CheckReport,
    Compared,
    Declaration,
    UserIO,
    case_rng,
    guard,
    known_alternatives,
    ladder_count,
    run_check,
    stochastic_rows,
)
from verify.tolerances import linear_solve_tolerance, summation_tolerance

__all__ = [
    "ALL_UTILITY_KINDS",
    "DEFAULT_FALSE_ALARM",
    "LocalOccupancyEstimator",
    "ShadowRewardFn",
    "TruncatedCriticFn",
    "check_local_occupancy_estimator",
    "check_shadow_reward",
    "check_truncated_critic",
]

ALL_UTILITY_KINDS: tuple[str, ...] = ("linear", "entropy", "quadratic", "kl", "penalty")
"""The utility kinds of :func:`verify.strategies.utilities` (SPEC section 2, "Utilities")."""

DEFAULT_FALSE_ALARM = 1e-6
"""False-alarm probability per case of the stochastic check."""


# ------------------------------------------------------------------------------ instances
@dataclass(frozen=True)
class _Instance:
    """A networked problem, plus the agent and radius a truncation case is about."""

    model: NetworkedMDP
    policy: LocalizedSoftmaxPolicy
    utilities: tuple[Utility, ...]
    agent: int = 0
    kappa: int = 0


_rows = stochastic_rows


def _random_utility(
    rng: np.random.Generator, shape: tuple[int, int], gamma: float, kinds: Sequence[str],
    fixed_eps: float | None = None,
) -> Utility:
    """One utility of a kind in ``kinds`` with the parameter ranges of
    :func:`verify.strategies.utilities` (the smoothing ``eps`` of the entropy and KL forms
    fixed to ``fixed_eps`` when given)."""
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "linear":
        return LinearUtility(rng.uniform(-1.0, 1.0, shape), gamma)
    eps = float(rng.uniform(1e-2, 1.0))
    if fixed_eps is not None:
        eps = fixed_eps
    if kind == "entropy":
        return EntropyUtility(shape, gamma, eps)
    target = _rows(rng, (shape[0] * shape[1],)).reshape(shape)
    if kind == "quadratic":
        return QuadraticImitationUtility(target, gamma)
    if kind == "kl":
        return KLImitationUtility(target, gamma, eps)
    objective = EntropyUtility(shape, gamma, eps) if rng.random() < 0.5 else None
    return ConstraintPenaltyUtility(
        LinearUtility(rng.uniform(-1.0, 1.0, shape), gamma),
        float(rng.uniform(-2.0, 2.0)),
        float(rng.uniform(0.1, 5.0)),
        objective,
    )


def _graph(rng: np.random.Generator, n: int) -> Graph:
    """A line, ring, star, random tree or grid on ``n`` agents."""
    kind = int(rng.integers(5))
    if kind == 0 or n < 3:
        return Graph.line(n)
    if kind == 1:
        return Graph.ring(n)
    if kind == 2:
        return Graph.star(n)
    if kind == 3:
        return Graph.random_tree(n, rng)
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    rows = divisors[int(rng.integers(len(divisors)))]
    return Graph.grid(rows, n // rows)


def _generate(
    rng: np.random.Generator,
    size: float,
    max_agents: int,
    max_joint_states: int,
    max_gamma: float,
    utility_kinds: Sequence[str],
    beta: int | None = None,
    kappa: int | None = None,
    fixed_eps: float | None = None,
) -> _Instance:
    """A networked instance at ``size`` of the limits.

    Three cases in four are rich: at least two agents, two local states and two local actions
    wherever the joint budget allows, ``gamma`` in ``[min(0.3, max_gamma), max_gamma]`` (where
    bugs show), ``kappa`` from ``0..R_i - 1`` (``R_i`` the agent's component radius, so the
    truncation is not the identity).  One in four is an edge case: one agent upwards, local
    states and actions from 1, ``gamma = 0`` one time in three, ``kappa`` from
    ``0..diameter``.  Kernel rows from :func:`stochastic_rows` (deterministic rows and
    unreachable states occur), an initial law that is joint or a product, logits in
    ``[-3, 3]``, observation radius ``beta`` from 0, 1, 2 unless fixed, utilities of the kinds
    asked."""
    rich = rng.random() < 0.75 and max_agents >= 2
    n = ladder_count(rng, size, max_agents, 2 if rich else 1)
    graph = _graph(rng, n)
    if rich:
        n_states, n_actions = [2] * n, [2] * n
        gamma = float(rng.uniform(min(0.3, max_gamma), max_gamma))
    else:
        n_states = [int(rng.integers(1, 3)) for _ in range(n)]
        n_actions = [int(rng.integers(1, 3)) for _ in range(n)]
        gamma = 0.0 if rng.random() < 1 / 3 else float(rng.uniform(0.0, max_gamma))
    for i in reversed(range(n)):  # keep prod |S_i| within the budget
        if prod(n_states) > max_joint_states:
            n_states[i] = 1
    kernels = tuple(
        _rows(rng, (prod(n_states[j] for j in graph.neighbourhood(i)), n_actions[i], n_states[i]))
        for i in range(n)
    )
    rho: tuple[FloatArray, ...] | FloatArray
    if rng.random() < 0.5:
        rho = _rows(rng, (prod(n_states),))
    else:
        rho = tuple(_rows(rng, (k,)) for k in n_states)
    model = NetworkedMDP(graph, tuple(n_states), tuple(n_actions), kernels, gamma, rho)
    radius = int(rng.integers(0, 3)) if beta is None else beta
    base = LocalizedSoftmaxPolicy.uniform(model, radius)
    policy = base.with_theta([rng.uniform(-3.0, 3.0, t.shape) for t in base.theta])
    utils = tuple(
        _random_utility(rng, (n_states[i], n_actions[i]), gamma, utility_kinds, fixed_eps)
        for i in range(n)
    )
    agent = int(rng.integers(n))
    if kappa is not None:
        k = kappa
    elif rich:
        k = int(rng.integers(0, max(graph.component_radius(agent) - 1, 0) + 1))
    else:
        k = int(rng.integers(0, graph.diameter + 1))
    return _Instance(model, policy, utils, agent, k)


def _limits(max_agents: int, max_joint_states: int, max_gamma: float, beta: int | None) -> None:
    for name, value in (("max_agents", max_agents), ("max_joint_states", max_joint_states)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CheckArgumentError(f"{name} = {value!r}, expected an integer >= 1")
    if isinstance(max_gamma, bool) or not isinstance(max_gamma, (int, float)) or not (
        0 <= max_gamma < 1
    ):
        raise CheckArgumentError(f"max_gamma = {max_gamma!r}, expected a number in [0, 1)")
    if beta is not None and (isinstance(beta, bool) or not isinstance(beta, int) or beta < 0):
        raise CheckArgumentError(f"beta = {beta!r}, expected a non-negative integer or None")


def _utility_arrays(u: Utility, prefix: str) -> dict[str, npt.NDArray[Any]]:
    """A utility as named arrays (its kind and parameters), recursively for penalties."""
    if isinstance(u, LinearUtility):
        return {f"{prefix}kind": np.array("linear"), f"{prefix}reward": u.reward}
    if isinstance(u, EntropyUtility):
        return {f"{prefix}kind": np.array("entropy"), f"{prefix}eps": np.array(u.eps),
                f"{prefix}shape": np.array(u.shape, dtype=np.int64)}
    if isinstance(u, QuadraticImitationUtility):
        return {f"{prefix}kind": np.array("quadratic"), f"{prefix}target": u.target}
    if isinstance(u, KLImitationUtility):
        return {f"{prefix}kind": np.array("kl"), f"{prefix}target": u.target,
                f"{prefix}eps": np.array(u.eps)}
    if isinstance(u, ConstraintPenaltyUtility):
        out = {f"{prefix}kind": np.array("penalty"), f"{prefix}threshold": np.array(u.threshold),
               f"{prefix}weight": np.array(u.weight)}
        out.update(_utility_arrays(u.constraint, f"{prefix}con_"))
        if u.objective is None:
            out[f"{prefix}obj_kind"] = np.array("none")
        else:
            out.update(_utility_arrays(u.objective, f"{prefix}obj_"))
        return out
    raise ModelError(f"cannot store a utility of type {type(u).__name__} in a case file")


def _utility_from(a: Mapping[str, npt.NDArray[Any]], prefix: str, gamma: float) -> Utility:
    kind = str(a[f"{prefix}kind"])
    if kind == "linear":
        return LinearUtility(np.array(a[f"{prefix}reward"]), gamma)
    if kind == "entropy":
        shape = tuple(int(x) for x in a[f"{prefix}shape"])
        return EntropyUtility((shape[0], shape[1]), gamma, float(a[f"{prefix}eps"]))
    if kind == "quadratic":
        return QuadraticImitationUtility(np.array(a[f"{prefix}target"]), gamma)
    if kind == "kl":
        return KLImitationUtility(np.array(a[f"{prefix}target"]), gamma, float(a[f"{prefix}eps"]))
    if kind == "penalty":
        objective = (
            None if str(a[f"{prefix}obj_kind"]) == "none"
            else _utility_from(a, f"{prefix}obj_", gamma)
        )
        return ConstraintPenaltyUtility(
            _utility_from(a, f"{prefix}con_", gamma),
            float(a[f"{prefix}threshold"]),
            float(a[f"{prefix}weight"]),
            objective,
        )
    raise ModelError(f"case file: unknown utility kind {kind!r} at {prefix!r}")


def _to_arrays(x: _Instance) -> Mapping[str, npt.NDArray[Any]]:
    m = x.model
    out: dict[str, npt.NDArray[Any]] = {
        "n_agents": np.array(m.n, dtype=np.int64),
        "edges": np.array(m.graph.edges, dtype=np.int64).reshape(-1, 2),
        "n_states": np.array(m.n_states, dtype=np.int64),
        "n_actions": np.array(m.n_actions, dtype=np.int64),
        "gamma": np.array(m.gamma),
        "beta": np.array(x.policy.beta, dtype=np.int64),
        "agent": np.array(x.agent, dtype=np.int64),
        "kappa": np.array(x.kappa, dtype=np.int64),
    }
    for i in range(m.n):
        out[f"P{i}"] = m.kernels[i]
        out[f"theta{i}"] = x.policy.theta[i]
        out.update(_utility_arrays(x.utilities[i], f"u{i}_"))
    if isinstance(m.rho, np.ndarray):
        out["rho_joint"] = m.rho
    else:
        for i, rho_i in enumerate(m.rho):
            out[f"rho{i}"] = rho_i
    return out


def _from_arrays(a: Mapping[str, npt.NDArray[Any]]) -> _Instance:
    n = int(a["n_agents"])
    graph = Graph(n, tuple((int(u), int(v)) for u, v in np.asarray(a["edges"]).reshape(-1, 2)))
    gamma = float(a["gamma"])
    rho: tuple[FloatArray, ...] | FloatArray
    if "rho_joint" in a:
        rho = np.array(a["rho_joint"])
    else:
        rho = tuple(np.array(a[f"rho{i}"]) for i in range(n))
    model = NetworkedMDP(
        graph,
        tuple(int(s) for s in a["n_states"]),
        tuple(int(s) for s in a["n_actions"]),
        tuple(np.array(a[f"P{i}"]) for i in range(n)),
        gamma,
        rho,
    )
    policy = LocalizedSoftmaxPolicy(
        model, int(a["beta"]), tuple(np.array(a[f"theta{i}"]) for i in range(n))
    )
    utilities = tuple(_utility_from(a, f"u{i}_", gamma) for i in range(n))
    return _Instance(model, policy, utilities, int(a["agent"]), int(a["kappa"]))


def _fresh(x: _Instance) -> _Instance:
    """Independent copies of every object, for the user's callable."""
    return _from_arrays(_to_arrays(x))


def _user_tables(
    io: UserIO, out: object, shapes: Sequence[tuple[int, ...]], name: str
) -> list[FloatArray]:
    """The callable's per-agent arrays, checked for count and shape."""
    try:
        items = list(out)  # type: ignore[call-overload]
    except TypeError:
        raise CaseFailure(
            f"{name} returned {type(out).__name__}, expected a sequence of {len(shapes)} arrays"
        ) from None
    if len(items) != len(shapes):
        raise CaseFailure(f"{name} returned {len(items)} arrays, expected n = {len(shapes)}")
    tables = []
    for i, (item, shape) in enumerate(zip(items, shapes, strict=True)):
        arr = io.out(item, f"{name}'s array for agent {i}")
        if arr.shape != shape:
            raise CaseFailure(f"{name} returned shape {arr.shape} for agent {i}, expected {shape}")
        tables.append(arr)
    return tables


def _planted(check: str) -> list[Any]:
    from verify.checks.planted import known_bugs  # the catalogue imports this module

    return list(known_bugs(check))


def _user_failure(exc: Exception) -> CaseResult:
    """A case failed because the callable raised (also for our own ``ModelError`` family,
    which :func:`run_check` would otherwise treat as a misconfigured check)."""
    return CaseResult(math.inf, 0.0, f"the callable raised {type(exc).__name__}: {exc}")


def _not_finite(got: FloatArray, name: str) -> str | None:
    if np.all(np.isfinite(got)):
        return None
    idx = tuple(int(i) for i in np.argwhere(~np.isfinite(got))[0])
    return f"{name}[{', '.join(str(k) for k in idx)}] = {got[idx]!r} is not finite"


# ------------------------------------------------------------------------------ tolerances
def _occupancy_error(model: NetworkedMDP) -> float:
    """A priori l1 error of an LU solve of ``(I - gamma P_pi^T) lam_S = rho`` (mass
    ``1/(1-gamma)``) and of its marginal sums: :func:`linear_solve_tolerance` in the l1 norm
    (the condition number of ``I - gamma P_pi^T`` in l1 is that of ``I - gamma P_pi`` in
    l-infinity) plus :func:`summation_tolerance` over ``|S|`` terms."""
    mass = 1.0 / (1.0 - model.gamma)
    n_s = model.states.size
    return linear_solve_tolerance(n_s, model.gamma, mass) + summation_tolerance(n_s, mass)


def _reward_error(u: Utility, lam_error: float) -> float:
    """Error of ``grad f(lam_hat)`` against ``grad f(lam)`` when ``||lam_hat - lam||_1 <=
    lam_error``, plus the rounding of the gradient formula.

    ``||grad f(x) - grad f(y)||_inf <= ||.||_2 <= L ||x - y||_2 <= L ||x - y||_1`` with ``L`` the
    declared smoothness.  Evaluating the formula in floating point is exact evaluation at an
    input within ``m eps ||lam||`` (the sums inside it, ``m = |S_i||A_i|``) followed by a few
    relative roundings of terms at most ``G + 1`` in size (``G`` the declared gradient
    bound; the logs and ratios of the entropy and KL forms are each within ``G + 1``):
    :func:`summation_tolerance` of ``m`` terms at the scale ``G + 1 + L / (1 - gamma)``."""
    c = u.constants
    m = u.shape[0] * u.shape[1]
    rounding = summation_tolerance(m, c.gradient_bound + 1.0 + c.smoothness / (1.0 - u.gamma))
    return c.smoothness * lam_error + rounding


# ------------------------------------------------------------------------------ shadow reward
ShadowRewardFn = Callable[
    [NetworkedMDP, LocalizedSoftmaxPolicy, tuple[Utility, ...]], Sequence[npt.ArrayLike]
]
"""``fn(model, policy, utilities) -> (r_0, ..., r_{n-1})``, ``r_i`` of shape
``(|S_i|, |A_i|)``."""


def check_shadow_reward(
    fn: ShadowRewardFn,
    *,
    utility_kinds: Sequence[str] = ALL_UTILITY_KINDS,
    eps: float | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    dtype: str | None = None,
    cases: int = 40,
    seed: int = 0,
    max_agents: int = 4,
    max_joint_states: int = 16,
    max_gamma: float = 0.9,
    beta: int | None = None,
    replay: Case | None = None,
) -> CheckReport:
    """Check ``fn(model, policy, utilities) -> (r_0, ..., r_{n-1})``, every agent's shadow
    reward (SPEC section 2; ``proofs_notes/shadow-reward-gradient.md``)::

        r_i(s_i, a_i) = d f_i / d lam_i (s_i, a_i)   at   lam_i = lam_i^theta,
        lam_i[s_i, a_i] = sum_s lam_S(s) 1[s_i(s) = s_i] pi_i(a_i | o_i(s)),
        lam_S = (I - gamma P_pi^T)^{-1} rho,

    the **unnormalised** local occupancy (mass ``1/(1-gamma)``, SPEC section 0): the utilities
    take ``lam`` and apply ``d = (1-gamma) lam`` inside, so their gradients carry the
    chain-rule factor ``(1-gamma)`` (e.g. entropy: ``(1-gamma) g(p[s_i])``).  This is exactly
    ``reference.networked.solve(...).shadow_rewards``, the oracle.

    Args:
        fn: the callable; ``model``, ``policy``, ``utilities`` as in the module docstring; it
            returns a sequence of ``n`` arrays, ``r_i`` of shape ``(|S_i|, |A_i|)``.
        utility_kinds: which utilities to draw (``ALL_UTILITY_KINDS`` by default; restrict
            it to those your code implements).  Linear utilities alone cannot reveal a wrong
            occupancy (their gradient does not depend on it).
        eps: your utilities' smoothing parameter: the entropy and KL utilities are drawn
            with this ``eps`` (``EntropyUtility.eps``, ``KLImitationUtility.eps``) instead of
            one from ``[0.01, 1]``, for a routine that hard-codes it.  A routine that ignores
            the utility's ``eps`` fails with a diagnosis naming the mismatch.
        atol: the allowance for your own error in ``r``; by default the same as the
            oracle's (below), scaled to your output's precision.
        rtol, dtype: as in every check (:func:`verify.checks.run_check`).
        cases, seed, replay: as in every check (:func:`verify.checks.run_check`).
        max_agents, max_joint_states, max_gamma, beta: instance sizes (module docstring;
            ``beta=None`` draws the observation radius from 0, 1, 2).

    Tolerance, per agent: each route's ``lam_i`` is within ``E`` in l1 (the oracle's certified
    occupancy bound, or an LU solve's a priori bound for the user; plus the marginal sums'
    rounding), so its ``r_i`` is within ``L_i E`` plus the rounding of the gradient formula,
    ``L_i`` the utility's declared smoothness (:func:`_reward_error`); the tolerance is the
    sum of the two routes' errors (or the oracle's plus ``atol``).
    """
    fn = guard(fn)
    kinds = _check_kinds(utility_kinds)
    _limits(max_agents, max_joint_states, max_gamma, beta)
    if eps is not None and (
        isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (
            math.isfinite(eps) and eps > 0)
    ):
        raise CheckArgumentError(f"eps = {eps!r}, expected a finite number > 0 or None")

    def evaluate_case(x: _Instance, index: int, io: UserIO) -> CaseResult | list[Compared]:
        m = x.model
        sol = solve(m, x.policy, x.utilities, backend="dense")
        want = sol.shadow_rewards
        shapes = [(m.n_states[i], m.n_actions[i]) for i in range(m.n)]
        user = _fresh(x)
        try:
            raw = fn(user.model, user.policy, user.utilities)
        except ModelError as exc:
            return _user_failure(exc)
        got = _user_tables(io, raw, shapes, "the callable")
        ours_lam = sol.occupancy_error_bound + summation_tolerance(
            m.states.size, 1.0 / (1.0 - m.gamma)
        )
        out = []
        for i, u in enumerate(x.utilities):
            note = f" ({type(u).__name__}{_eps_of(u)}, gamma = {m.gamma:.4g}, {m.n} agents)"
            out.append(Compared(
                got[i], np.asarray(want[i]), _reward_error(u, ours_lam),
                _reward_error(u, _occupancy_error(m)), _local_label("r", i), _fixed(note),
            ))
        return out

    def alternatives() -> list[Alternative]:
        return known_alternatives(_planted("shadow-reward"),
                                  lambda f, x: list(f(*_fresh_args(x))))

    decl = Declaration(
        name="shadow-reward",
        reference="SPEC section 2: r_i = d f_i / d lam_i at the unnormalised local occupancy "
        "lam_i^theta; proofs_notes/shadow-reward-gradient.md",
        generate=lambda rng, size: _generate(rng, size, max_agents, max_joint_states,
                                             max_gamma, kinds, beta, fixed_eps=eps),
        to_arrays=_to_arrays,
        from_arrays=_from_arrays,
        evaluate=evaluate_case,
        solve=True,
        alternatives=alternatives,
        convention=None if eps is None else f"eps={eps!r}",
    )
    return run_check(decl, cases=cases, seed=seed, replay=replay, atol=atol, rtol=rtol,
                     dtype=dtype)


def _local_label(name: str, i: int) -> Callable[[tuple[int, ...]], str]:
    return lambda idx: f"{name}_{i}[s_{i}={idx[0]}, a_{i}={idx[1]}]"


def _fixed(text: str) -> Callable[[tuple[int, ...]], str]:
    return lambda idx: text


def _eps_of(u: Utility) -> str:
    e = getattr(u, "eps", None)
    return "" if e is None else f" eps = {float(e):.4g}"


def _fresh_args(x: _Instance) -> tuple[NetworkedMDP, LocalizedSoftmaxPolicy, tuple[Utility, ...]]:
    y = _fresh(x)
    return y.model, y.policy, y.utilities


def _check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    out = tuple(kinds)
    if not out:
        raise ModelError("utility_kinds is empty, expected at least one of "
                         f"{ALL_UTILITY_KINDS}")
    for k in out:
        if k not in ALL_UTILITY_KINDS:
            raise ModelError(f"utility kind {k!r}, expected one of {ALL_UTILITY_KINDS}")
    return out


# ------------------------------------------------------------------------------ truncated critic
TruncatedCriticFn = Callable[
    [NetworkedMDP, LocalizedSoftmaxPolicy, tuple[Utility, ...], int, int], npt.ArrayLike
]
"""``fn(model, policy, utilities, i, kappa) -> Qhat_i``, shape ``(|S|, |A|)``."""


def check_truncated_critic(
    fn: TruncatedCriticFn,
    kappa: int | None = None,
    *,
    weights: Weights = "occupancy",
    utility_kinds: Sequence[str] = ALL_UTILITY_KINDS,
    atol: float | None = None,
    rtol: float | None = None,
    dtype: str | None = None,
    cases: int = 40,
    seed: int = 0,
    max_agents: int = 4,
    max_joint_states: int = 16,
    max_gamma: float = 0.9,
    beta: int | None = None,
    replay: Case | None = None,
) -> CheckReport:
    """Check ``fn(model, policy, utilities, i, kappa) -> Qhat_i``, agent ``i``'s exact
    ``kappa``-hop truncated shadow Q-function (SPEC section 3;
    ``proofs_notes/truncated-gradient.md``)::

        Q_i(s, a) = r_i(s_i, a_i) + gamma sum_{s'} P(s'|s, a) V_i(s'),
        Qhat_i(z) = sum_{(s,a): z(s,a) = z} w(s, a | z) Q_i(s, a),

    with ``r_i`` the shadow reward (:func:`check_shadow_reward`), ``V_i`` its value under
    ``pi``, ``z(s, a) = (s_j, a_j)_{j in N_i^kappa}`` (agents within hop distance ``kappa``) and
    the weights ``weights``:

    * ``"occupancy"`` (default; the analysis' choice, and the limit of Algorithm 1's
      Monte-Carlo critic, SPEC section 4): ``w propto lam(s, a) = lam_S(s) pi(a|s)``;
    * ``"uniform"``: the plain average over the group;
    * ``"point"``: the single completion with every variable outside ``N_i^kappa`` equal to 0.

    ``fn`` returns the table broadcast back to joint pairs, ``Qhat[s, a] = Qhat_i(z(s, a))``, of
    shape ``(|S|, |A|)`` (joint indices mixed radix, agent 0 most significant); from a table
    ``t`` over ``z`` in :func:`reference.networked.truncation.hop_index` order that is
    ``t[hop_index(model, N_i^kappa)[0]]``.  Returning joint pairs keeps the check independent
    of any indexing of ``z``, and a wrong neighbourhood shows up as wrong values.

    Args:
        fn: the callable.
        kappa: the truncation radius; ``None`` (default) draws it per case, in three cases
            of four from ``0..R_i - 1`` (``R_i`` agent ``i``'s component radius, so the
            truncation is not the identity), otherwise from ``0..diameter``; ``i`` is drawn
            per case.
        weights: the weights your callable implements.
        utility_kinds, atol, cases, seed, replay, max_agents, max_joint_states, max_gamma,
            beta: as in :func:`check_shadow_reward`.

    Oracle: :func:`reference.networked.truncation.truncated_q` on
    :func:`reference.networked.exact.shadow_q`.  Tolerance, per joint pair: each route's
    ``Q_i`` is within ``e_r / (1 - gamma) + gamma e_V`` plus the rounding of ``gamma P V``
    (``e_r`` its shadow-reward error as in :func:`check_shadow_reward`, ``e_V`` the value
    solve's error: certified for the oracle, an LU bound for the user); a convex combination
    adds only its summation rounding.  With occupancy weights, a route whose ``lam`` is within
    ``E_x`` in l1 of the truth has conditional weights on a group of true mass ``m`` within
    ``2 E_x / (m - E_x)`` in l1 of the true ones; with ``E`` the sum of both routes' errors
    and ``m_g`` the oracle's computed mass (``>= m - E``), the two routes' weights differ by
    at most ``2 E / (m_g - 2 E)``, which moves ``Qhat_i`` by at most that times the group's
    spread of ``Q_i``, and never by more than the spread (both are convex combinations on the
    group).  So on groups whose mass is within ``2 E`` of zero (in particular unreachable
    ones) the conditional weights are not determined by the data and any value in the
    group's range of ``Q_i`` (plus the above) passes.
    """
    fn = guard(fn)
    if weights not in WEIGHT_CHOICES:
        raise ModelError(f"weights = {weights!r}, expected one of {WEIGHT_CHOICES}")
    if kappa is not None and (
        isinstance(kappa, bool) or not isinstance(kappa, (int, np.integer)) or kappa < 0
    ):
        raise ModelError(f"kappa = {kappa!r}, expected a non-negative integer or None")
    kinds = _check_kinds(utility_kinds)
    _limits(max_agents, max_joint_states, max_gamma, beta)

    def evaluate_case(x: _Instance, index: int, io: UserIO) -> CaseResult | list[Compared]:
        m, i, k = x.model, x.agent, x.kappa
        sol = solve(m, x.policy, x.utilities, backend="dense")
        q = shadow_q(m, x.policy, sol)[i]
        lam = np.maximum(sol.lam_S, 0.0)[:, None] * x.policy.joint_matrix()
        want = truncated_q(m, q, i, k, weights, lam).joint
        user = _fresh(x)
        try:
            raw = fn(user.model, user.policy, user.utilities, i, k)
        except ModelError as exc:
            return _user_failure(exc)
        got = io.out(raw)
        if got.shape != want.shape:
            raise CaseFailure(f"the callable returned shape {got.shape}, expected {want.shape}")
        ours, own = _critic_tolerance(x, sol, q, lam, weights)
        members = m.graph.neighbourhood(i, k)

        def label(idx: tuple[int, ...]) -> str:
            sd, ad = m.states.digits[idx[0]], m.actions.digits[idx[1]]
            return (f"Qhat_{i}[s={tuple(int(v) for v in sd)}, "
                    f"a={tuple(int(v) for v in ad)}]")

        context = (f" (kappa = {k}, N_{i}^kappa = {members}, {weights} weights, "
                   f"gamma = {m.gamma:.4g})")
        return [Compared(got, want, ours, own, label, lambda idx: context)]

    def alternatives() -> list[Alternative]:
        return known_alternatives(_planted(f"truncated-critic-{weights}"),
                                  lambda f, x: [f(*_fresh_args(x), x.agent, x.kappa)])

    decl = Declaration(
        name=f"truncated-critic-{weights}",
        reference="SPEC section 3: Qhat_i(z_{N_i^kappa}) = sum w_i Q_i of the shadow Q; "
        "proofs_notes/truncated-gradient.md#result-1",
        generate=lambda rng, size: _generate(rng, size, max_agents, max_joint_states,
                                             max_gamma, kinds, beta, kappa),
        to_arrays=_to_arrays,
        from_arrays=_from_arrays,
        evaluate=evaluate_case,
        solve=True,
        alternatives=alternatives,
    )
    return run_check(decl, cases=cases, seed=seed, replay=replay, atol=atol, rtol=rtol,
                     dtype=dtype)


def _critic_tolerance(
    x: _Instance,
    sol: NetworkedSolution,
    q: FloatArray,
    lam: FloatArray,
    weights: Weights,
) -> tuple[FloatArray, FloatArray]:
    """Per-joint-pair tolerance of :func:`check_truncated_critic` (derivation there): the
    oracle's share (with the occupancy weights' spread term) and the callable's own at
    float64."""
    m, i = x.model, x.agent
    g = m.gamma
    u = x.utilities[i]
    n_s, n_a = m.states.size, m.actions.size
    v_max = float(np.max(np.abs(sol.require_shadow_values()[:, i]))) + 1.0
    q_max = float(np.max(np.abs(q))) + 1.0
    mass = 1.0 / (1.0 - g)
    lam_ours = sol.occupancy_error_bound + summation_tolerance(n_s, mass)
    lam_user = _occupancy_error(m)
    rounding = summation_tolerance(n_s, v_max) + 2.0 * summation_tolerance(n_s * n_a, q_max)
    ours = (_reward_error(u, lam_ours) / (1.0 - g) + g * sol.value_error_bound + rounding)
    user = (
        _reward_error(u, lam_user) / (1.0 - g) + g * linear_solve_tolerance(n_s, g, v_max)
        + rounding
    )
    own = np.full(q.shape, user)
    if weights != "occupancy":
        return np.full(q.shape, ours), own
    idx, size = hop_index(m, m.graph.neighbourhood(i, x.kappa))
    flat = idx.reshape(-1)
    hi = np.full(size, -np.inf)
    lo = np.full(size, np.inf)
    np.maximum.at(hi, flat, q.reshape(-1))
    np.minimum.at(lo, flat, q.reshape(-1))
    spread = np.where(np.isfinite(hi), hi - lo, 0.0)
    group_mass = np.bincount(flat, weights=lam.reshape(-1), minlength=size)
    err = 2.0 * (lam_ours + lam_user)  # l1 error of either route's lam, plus the computed mass's
    room = group_mass - err
    cond = np.where(room > 0, np.minimum(1.0, err / np.where(room > 0, room, 1.0)), 1.0)
    out: FloatArray = ours + (spread * cond)[idx]
    return out, own


# ------------------------------------------------------------------------------ sampled occupancy
LocalOccupancyEstimator = Callable[
    [NetworkedMDP, LocalizedSoftmaxPolicy, int, int, np.random.Generator],
    Sequence[npt.ArrayLike],
]
"""``fn(model, policy, n, H, rng) -> (lamtilde_0, ..., lamtilde_{n_agents-1})``."""


def check_local_occupancy_estimator(
    fn: LocalOccupancyEstimator,
    *,
    n_trajectories: int = 20_000,
    horizon: int = 20,
    false_alarm: float = DEFAULT_FALSE_ALARM,
    cases: int = 12,
    seed: int = 0,
    max_agents: int = 4,
    max_joint_states: int = 16,
    max_gamma: float = 0.9,
    beta: int | None = None,
    replay: Case | None = None,
) -> CheckReport:
    """Check the sampled local occupancies of Algorithm 1's shadow-reward step (SPEC section 4,
    step 1): ``fn(model, policy, n, H, rng)`` rolls out ``n`` trajectories of length ``H`` from
    ``rho`` with ``rng`` and returns, for every agent ``i``, the ``(|S_i|, |A_i|)`` array::

        lamtilde_i = (1/n) sum_b sum_{t<H} gamma^t e_{(s_i^{b,t}, a_i^{b,t})},

    an unbiased estimate of the ``H``-step local occupancy ``lam_i^H`` (the marginal of
    ``sum_{t<H} gamma^t Pr(s_t, a_t)``; oracle
    :func:`reference.networked.algorithm.finite_horizon_occupancy`).  The shadow reward
    estimate is then ``grad f_i(lamtilde_i)`` (checked exactly by :func:`check_shadow_reward`).

    Test, per agent: ``||lamtilde_i - lam_i^H||_1 <= r_i``, ``r_i`` the McDiarmid radius
    :func:`verify.bounds.l1_radius` for vectors of l1 norm ``L = (1 - gamma^H)/(1 - gamma)``
    (one trajectory's discounted visit counts of agent ``i``) in dimension ``|S_i||A_i|`` at
    ``false_alarm / n_agents``: by the union bound a correct estimator fails a case with
    probability at most ``false_alarm``.  Power: an estimator whose mean for some agent is at
    l1 distance at least ``r_i + r'_i`` from ``lam_i^H`` (``r'_i`` the same radius at 0.01),
    and which is itself a mean of ``n`` i.i.d. vectors of norm ``<= L``, fails with
    probability at least 0.99.
    """
    fn = guard(fn)
    if not 0 < false_alarm <= DEFAULT_FALSE_ALARM:
        raise ModelError(f"false_alarm = {false_alarm!r}, expected (0, {DEFAULT_FALSE_ALARM}]")
    if isinstance(cases, bool) or not isinstance(cases, int) or cases < 1:
        raise ModelError(f"cases = {cases!r}, expected a positive integer")
    per_case = false_alarm / cases  # the whole check fails wrongly w.p. <= false_alarm
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ModelError(f"horizon = {horizon!r}, expected a positive integer")

    def radius(m: NetworkedMDP, i: int, delta: float) -> float:
        g = m.gamma
        L = (1.0 - g**horizon) / (1.0 - g)
        return l1_radius(n_trajectories, m.n_states[i] * m.n_actions[i], L,
                         split_delta(delta, m.n))

    def evaluate_case(x: _Instance, index: int, io: UserIO) -> CaseResult | list[Compared]:
        m = x.model
        lam_S, _ = finite_horizon_occupancy(m, x.policy, horizon)
        want = local_occupancies(x.policy, lam_S)
        rng = case_rng(seed if replay is None else replay.seed, index)
        user = _fresh(x)
        try:
            raw = fn(user.model, user.policy, n_trajectories, horizon, rng)
        except ModelError as exc:
            return _user_failure(exc)
        shapes = [(m.n_states[i], m.n_actions[i]) for i in range(m.n)]
        got = _user_tables(io, raw, shapes, "the callable")
        mass = float(np.sum(want[0]))
        return [Compared(
            got[i], np.asarray(want[i]), radius(m, i, per_case), 0.0,
            _local_label("lamtilde", i),
            _fixed(f" (gamma = {m.gamma:.4g}, H = {horizon}; total mass "
                   f"{float(np.sum(got[i])):.6g}, expected {mass:.6g})"),
            l1=True,
        ) for i in range(m.n)]

    worst_L = 1.0 / (1.0 - max_gamma)
    dim = 4  # networked_mdps draws at most 2 local states and 2 local actions
    shift = l1_radius(
        n_trajectories, dim, worst_L, split_delta(per_case, max_agents)
    ) + l1_radius(n_trajectories, dim, worst_L, 0.01)
    _limits(max_agents, max_joint_states, max_gamma, beta)

    def alternatives() -> list[Alternative]:
        return known_alternatives(_planted("local-occupancy-estimator"),
                                  lambda f, x: list(f(*_fresh_args(x)[:2], horizon)))

    decl = Declaration(
        name="local-occupancy-estimator",
        alternatives=alternatives,
        reference="SPEC section 4 step 1: lamtilde_i = (1/B) sum_b sum_{t<H} gamma^t "
        "e_(s_i, a_i); verify.bounds.l1_radius per agent",
        generate=lambda rng, size: _generate(rng, size, max_agents, max_joint_states,
                                             max_gamma, ("linear",), beta),
        to_arrays=_to_arrays,
        from_arrays=_from_arrays,
        evaluate=evaluate_case,
        false_alarm=false_alarm,
        power=f"0.99 against an agent's mean off by >= r(false_alarm / n) + r(0.01) in l1 "
        f"(<= {shift:.3g} on these instances)",
    )
    return run_check(decl, cases=cases, seed=seed, replay=replay)
