"""The global optimum ``F*`` over every centralized stationary policy (SPEC section 8).

For concave utilities ``f_i`` the team objective is a concave function of the occupancy::

    F* = max_{lam in L} F(lam),   F(lam) = (1/n) sum_i f_i(M_i lam),
    L  = { lam >= 0 : sum_a lam[s', a] = rho[s'] + gamma sum_{s,a} P[s, a, s'] lam[s, a] },

``M_i`` the marginal onto ``(s_i, a_i)``.  ``F`` depends on ``lam`` only through the local
marginals ``z = (M_0 lam, ..., M_{n-1} lam)``, a vector of ``D = sum_i |S_i| |A_i|`` numbers,
so the program is the maximum of a concave function over the polytope ``M(L)`` of dimension at
most ``D``, whose vertices are the marginals of deterministic joint policies.

* :func:`linear_maximum` -- the linear oracle ``max_{lam in L} <c, lam>`` for a team reward
  ``c(s, a) = (1/n) sum_i r_i(s_i, a_i)``: Bellman-optimality iteration on the joint MDP whose
  steps are exact policy evaluations (Howard's improvement), stopped by the certified bounds
  ``T V + gamma/(1-gamma) min(T V - V) <= V* <= T V + gamma/(1-gamma) max(T V - V)``
  (MacQueen 1966; ``proofs_notes/optimum.md#oracle``); :func:`value_iteration_maximum` is the
  plain value-iteration route from ``V = 0``.
* :func:`optimum` -- ``F*`` by simplicial decomposition (fully corrective Frank--Wolfe:
  the iterate is re-optimised over the convex hull of the vertices found so far) or by plain
  Frank--Wolfe with exact line search; each outer step calls the linear oracle on the shadow
  reward ``r_i = grad f_i(z_i)`` and the certified duality gap
  ``U(grad F(z)) - <grad F(z), z> >= F* - F(z)`` (``U`` the oracle's certified upper bound)
  stops it (``proofs_notes/optimum.md#certificate``).  The returned record holds the optimal
  local occupancies, the joint state occupancy and a centralized policy attaining them.
* :func:`linear_program_optimum` -- for linear utilities, the LP over ``L`` (HiGHS).
* :func:`flow_constrained_optimum` -- on tiny instances, SLSQP over the flow constraints of
  the joint occupancy, certified afterwards by value iteration on the explicit joint MDP.
* :func:`policy_occupancy` -- the occupancy of a :class:`CentralizedPolicy`, solved from its
  own kernel (how tests check that the returned policy attains the returned occupancy).

No routine loops over joint states: the Bellman backup contracts the local kernels one agent
at a time over the ``(|S|, |A|)`` table of joint state-action pairs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from math import prod
from typing import Literal

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.sparse

from reference._arrays import EPS_F64, FloatArray, IntArray, frozen, read_only
from reference.errors import ModelError, NonConcaveError, SolverError
from reference.memory import check_memory
from reference.networked.exact import check_utilities
from reference.networked.model import NetworkedMDP
from reference.networked.utilities import Utility

__all__ = [
    "CentralizedPolicy",
    "LinearMaximum",
    "Optimum",
    "OptimumTrace",
    "check_concave",
    "flow_constrained_optimum",
    "linear_maximum",
    "linear_program_optimum",
    "optimum",
    "policy_occupancy",
    "team_reward_table",
    "value_iteration_maximum",
]

Method = Literal["simplicial", "frank-wolfe"]
"""``"simplicial"``: fully corrective Frank--Wolfe; ``"frank-wolfe"``: plain, exact line search."""

Oracle = Literal["policy-evaluation", "value-iteration"]
"""Linear oracle: :func:`linear_maximum` (warm-started, exact evaluations) or
:func:`value_iteration_maximum` (value iteration from ``V = 0``)."""


# --------------------------------------------------------------------------------------------
# Joint-space machinery for centralized policies
# --------------------------------------------------------------------------------------------


def check_concave(utilities: Sequence[Utility]) -> None:
    """Raise :class:`~reference.errors.NonConcaveError` naming the first agent whose utility
    does not declare ``constants.concave`` (``proofs_notes/optimum.md#scope``)."""
    for i, f in enumerate(utilities):
        if not f.constants.concave:
            raise NonConcaveError(
                f"utilities[{i}] = {f.name} is not concave: F* over the occupancy polytope is "
                "then not a concave program, and Frank-Wolfe would only certify a local optimum"
            )


def _action_digits(model: NetworkedMDP, actions: IntArray, i: int) -> IntArray:
    """``a_i`` of every joint action index in ``actions`` (mixed radix, agent 0 first)."""
    stride = prod(model.n_actions[i + 1 :])
    out: IntArray = (actions // stride) % model.n_actions[i]
    return out


def team_reward_table(model: NetworkedMDP, rewards: Sequence[FloatArray]) -> FloatArray:
    """``(|S|, |A|)`` ``c(s, a) = (1/n) sum_i r_i(s_i, a_i)``, built by broadcasting.

    Args:
        model: the networked MDP.
        rewards: ``r_i`` of shape ``(|S_i|, |A_i|)`` per agent.
    """
    n = model.n
    nS, nA = model.states.size, model.actions.size
    check_memory(8 * 2 * nS * nA, "the joint state-action table")
    out = np.zeros((nS, *model.n_actions))
    for i, r in enumerate(rewards):
        lifted = model.states.lift(np.asarray(r, dtype=np.float64), (i,))  # (|S|, |A_i|)
        shape = [nS] + [1] * n
        shape[1 + i] = model.n_actions[i]
        out += lifted.reshape(shape)
    out /= n
    return out.reshape(nS, nA)


class _JointBellman:
    """The joint MDP of a networked model for centralized policies (kernels gathered once)."""

    def __init__(self, model: NetworkedMDP) -> None:
        nS, nA = model.states.size, model.actions.size
        check_memory(8 * 3 * nS * nA, f"the joint Q table ({nS} x {nA})")
        self.model = model
        self.kernels = tuple(model.local_kernel_factors(i) for i in range(model.n))
        self.rho = model.joint_rho()
        self.backups = 0
        # rounding of one backup: n contraction steps, each a convex combination of |S_i|
        # terms ((|S_i| + 1) eps relative, Higham 2002 eq. 3.5), then the reward addition
        self.backup_rounding_factor = (sum(s + 1 for s in model.n_states) + 2) * EPS_F64

    def expected_next(self, V: FloatArray) -> FloatArray:
        """``(|S|, |A|)`` ``E[V(s') | s, a] = sum_{s'} prod_i P_i(s'_i | s_{N_i}, a_i) V(s')``.

        Contracts the next state of agent ``n-1``, then ``n-2``, ..., each step a weighted
        sum over ``|S_i|`` slices; the action axes accumulate in agent order.
        """
        model = self.model
        sizes = model.n_states
        nS = model.states.size
        X = V.reshape(1, prod(sizes[:-1]), sizes[-1], 1)
        for i in reversed(range(model.n)):
            X = X.reshape(X.shape[0], prod(sizes[:i]), sizes[i], -1)
            K = self.kernels[i]  # (|S|, |A_i|, |S_i|)
            out = np.zeros((nS, X.shape[1], model.n_actions[i], X.shape[3]))
            for a in range(model.n_actions[i]):
                for x in range(sizes[i]):
                    out[:, :, a, :] += X[:, :, x, :] * K[:, a, x][:, None, None]
            X = out
        self.backups += 1
        return X.reshape(nS, model.actions.size)

    def policy_kernel(self, support: IntArray, probs: FloatArray) -> FloatArray:
        """``(|S|, |S|)`` ``P_pi[s, s'] = sum_m probs[s, m] prod_i P_i(s'_i | s_{N_i},
        a_i(support[s, m]))`` for a centralized policy in support form."""
        model = self.model
        nS = model.states.size
        check_memory(8 * 3 * nS * nS, f"the joint policy kernel ({nS} x {nS})")
        rows = np.arange(nS)
        total = np.zeros((nS, nS))
        for m in range(support.shape[1]):
            out = np.ones((nS, 1))
            for i in range(model.n):
                a_i = _action_digits(model, support[:, m], i)
                k = self.kernels[i][rows, a_i, :]  # (|S|, |S_i|)
                out = (out[:, :, None] * k[:, None, :]).reshape(nS, -1)
            total += probs[:, m : m + 1] * out
        return total

    def evaluate(
        self, c: FloatArray, support: IntArray, probs: FloatArray
    ) -> tuple[FloatArray, FloatArray, float, float]:
        """Values and state occupancy of a centralized policy from one LU factorisation.

        Returns:
            ``(V, lam_S, value_error, occupancy_error)``: ``V = (I - gamma P_pi)^{-1} c_pi``
            with certified inf-norm error, ``lam_S = (I - gamma P_pi^T)^{-1} rho`` with
            certified l1 error (residual over ``1 - gamma`` plus the rounding of the
            residual, as in :func:`reference.tabular.evaluate`).
        """
        model = self.model
        g = model.gamma
        nS = model.states.size
        P_pi = self.policy_kernel(support, probs)
        c_pi = np.einsum("sm,sm->s", probs, np.take_along_axis(c, support, axis=1))
        M = -g * P_pi
        M[np.diag_indices(nS)] += 1.0
        lu = scipy.linalg.lu_factor(M, check_finite=False)
        V = scipy.linalg.lu_solve(lu, c_pi, check_finite=False)
        lam_S = scipy.linalg.lu_solve(lu, self.rho, trans=1, check_finite=False)
        v_res = float(np.max(np.abs(M @ V - c_pi)))
        l_res = float(np.sum(np.abs(M.T @ lam_S - self.rho)))
        v_round = (nS + 2) * EPS_F64 * ((1 + g) * float(np.max(np.abs(V))) + _sup(c_pi))
        l_round = (nS + 2) * EPS_F64 * ((1 + g) * float(np.sum(np.abs(lam_S))) + 1.0)
        return V, lam_S, (v_res + v_round) / (1 - g), (l_res + l_round) / (1 - g)

    def bounds(self, c: FloatArray, V: FloatArray) -> tuple[FloatArray, FloatArray, float, float]:
        """One backup and MacQueen's bounds on ``rho . V*`` for the reward ``c``.

        Returns:
            ``(Q, TV, lower, upper)`` with ``Q = c + gamma E[V(s')]``, ``TV = max_a Q`` and
            ``rho.TV + gamma/(1-gamma) min(TV - V) <= rho.V* <= rho.TV + gamma/(1-gamma)
            max(TV - V)``, each widened by the backup's rounding
            (``proofs_notes/optimum.md#oracle``).
        """
        g = self.model.gamma
        Q = c + g * self.expected_next(V)
        TV = Q.max(axis=1)
        diff = TV - V
        rounding = self.backup_rounding_factor * (_sup(c) + g * _sup(V))
        centre = float(self.rho @ TV)
        # the rounding of rho . TV (a dot product of |S| terms against a distribution,
        # Higham 2002 eq. 3.5), of each TV - V (one subtraction) and of the final sums
        tv_sup, diff_sup = _sup(TV), _sup(diff)
        evaluation = (self.rho.size + 2) * EPS_F64 * tv_sup + g / (1 - g) * EPS_F64 * (
            tv_sup + _sup(V)
        )
        evaluation += 3 * EPS_F64 * (abs(centre) + (g * diff_sup + rounding) / (1 - g))
        upper = centre + g * float(diff.max()) / (1 - g) + rounding / (1 - g) + evaluation
        lower = centre + g * float(diff.min()) / (1 - g) - rounding / (1 - g) - evaluation
        return Q, TV, lower, upper


def _frozen_int(x: IntArray) -> IntArray:
    """A read-only int64 copy."""
    out: IntArray = np.array(x, dtype=np.int64, copy=True)
    out.setflags(write=False)
    return out


def _sup(x: FloatArray) -> float:
    return float(np.max(np.abs(x))) if x.size else 0.0


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CentralizedPolicy:
    """A stationary centralized policy in support form.

    ``pi(a | s) = sum_m probs[s, m] 1[a = support[s, m]]``: each state mixes at most ``m``
    joint actions (joint indices mixed radix, agent 0 most significant).

    Attributes:
        support: ``(|S|, m)`` int64 joint action indices.
        probs: ``(|S|, m)`` non-negative, rows sum to 1.
    """

    support: IntArray
    probs: FloatArray

    def joint_matrix(self, n_actions: int) -> FloatArray:
        """``(|S|, |A|)`` dense ``pi[s, a]`` (small instances)."""
        nS = self.support.shape[0]
        check_memory(8 * nS * n_actions, "the joint policy matrix")
        out = np.zeros((nS, n_actions))
        rows = np.repeat(np.arange(nS), self.support.shape[1])
        np.add.at(out, (rows, self.support.reshape(-1)), self.probs.reshape(-1))
        return out


@dataclass(frozen=True)
class LinearMaximum:
    """Certified ``max_{lam in L} <c, lam> = rho . V*`` for a team reward ``c``.

    Attributes:
        upper: certified upper bound on ``rho . V*``.
        lower: certified lower bound on ``rho . V*``.
        attained: ``<c, lam^pi>`` of the returned greedy policy (``rho . V_pi``).
        greedy: ``(|S|,)`` int64 joint action of a deterministic policy, greedy with respect
            to the last value vector; ``attained`` is its value.
        lam_S: ``(|S|,)`` its state occupancy (mass ``1/(1-gamma)``).
        occupancy_error: certified l1 error of ``lam_S``.
        values: ``(|S|,)`` the last value vector ``V``.
        backups: Bellman backups used (each a pass over the ``(|S|, |A|)`` table).
        evaluations: exact policy evaluations used.
    """

    upper: float
    lower: float
    attained: float
    greedy: IntArray
    lam_S: FloatArray
    occupancy_error: float
    values: FloatArray
    backups: int
    evaluations: int


def _greedy(Q: FloatArray, TV: FloatArray, current: IntArray | None, tie: float) -> IntArray:
    best: IntArray = np.argmax(Q, axis=1).astype(np.int64)
    if current is None:
        return best
    keep = Q[np.arange(Q.shape[0]), current] >= TV - tie
    out: IntArray = np.where(keep, current, best).astype(np.int64)
    return out


def _check_rewards(model: NetworkedMDP, rewards: Sequence[FloatArray]) -> FloatArray:
    if len(rewards) != model.n:
        raise ModelError(f"{len(rewards)} rewards given, expected one per agent (n = {model.n})")
    for i, r in enumerate(rewards):
        shape = (model.n_states[i], model.n_actions[i])
        arr = np.asarray(r, dtype=np.float64)
        if arr.shape != shape:
            raise ModelError(f"rewards[{i}] has shape {arr.shape}, expected {shape}")
        if not np.isfinite(arr).all():
            raise ModelError(f"rewards[{i}] has a non-finite entry")
    return team_reward_table(model, rewards)


def _linear_maximum(
    bell: _JointBellman,
    c: FloatArray,
    start: IntArray | None,
    tol: float,
    max_rounds: int,
) -> LinearMaximum:
    model = bell.model
    g = model.gamma
    nS = model.states.size
    one = np.ones((nS, 1))
    act = np.argmax(c, axis=1).astype(np.int64) if start is None else start
    backups0 = bell.backups
    tie = 8 * bell.backup_rounding_factor * (_sup(c) / (1 - g) + 1.0)
    for rounds in range(1, max_rounds + 1):
        V, lam_S, v_err, l_err = bell.evaluate(c, act[:, None], one)
        Q, TV, lower, upper = bell.bounds(c, V)
        attained = float(bell.rho @ V)
        new = _greedy(Q, TV, act, tie)
        stable = bool(np.array_equal(new, act))
        if stable or upper - (attained - v_err) <= tol:
            return LinearMaximum(
                upper=upper,
                lower=max(lower, attained - v_err),
                attained=attained,
                greedy=_frozen_int(act),
                lam_S=read_only(lam_S),
                occupancy_error=l_err,
                values=read_only(V),
                backups=bell.backups - backups0,
                evaluations=rounds,
            )
        act = new
    raise SolverError(f"policy improvement did not stabilise within max_rounds = {max_rounds}")


def linear_maximum(
    model: NetworkedMDP,
    rewards: Sequence[FloatArray],
    *,
    start: IntArray | None = None,
    tol: float = 1e-12,
    max_rounds: int = 1000,
) -> LinearMaximum:
    """``max_{lam in L} <c, lam>`` with ``c(s, a) = (1/n) sum_i r_i(s_i, a_i)``, certified.

    Alternates an exact evaluation of a deterministic joint policy (one LU factorisation of
    ``I - gamma P_pi``) with one Bellman backup ``T V = max_a (c + gamma E V)``, which yields
    the greedy policy and MacQueen's bounds ``rho.TV + gamma/(1-gamma) [min, max](TV - V)``
    on ``rho . V*``.  Stops when the greedy policy is stable (then ``max(TV - V)`` is rounding)
    or the bounds are within ``tol`` (``proofs_notes/optimum.md#oracle``).

    Args:
        model: the networked MDP (its joint ``(|S|, |A|)`` table must fit in memory).
        rewards: ``r_i`` with shape ``(|S_i|, |A_i|)`` per agent.
        start: ``(|S|,)`` joint actions of a warm-start policy (default: greedy in ``c``).
        tol: stop once ``upper - attained <= tol``.
        max_rounds: cap on evaluations; :class:`SolverError` past it.
    """
    c = _check_rewards(model, rewards)
    bell = _JointBellman(model)
    if start is not None:
        start = _check_actions(model, start)
    return _linear_maximum(bell, c, start, _positive(tol, "tol"), max_rounds)


def _check_actions(model: NetworkedMDP, actions: IntArray) -> IntArray:
    arr = np.asarray(actions)
    if arr.shape != (model.states.size,) or not np.issubdtype(arr.dtype, np.integer):
        raise ModelError(
            f"start has shape {arr.shape} and dtype {arr.dtype}, expected "
            f"({model.states.size},) integer joint actions"
        )
    bad = (arr < 0) | (arr >= model.actions.size)
    if bad.any():
        s = int(np.argmax(bad))
        raise ModelError(f"start[{s}] = {int(arr[s])} outside 0..{model.actions.size - 1}")
    return arr.astype(np.int64)


def _positive(value: float, name: str) -> float:
    x = float(value)
    if not (math.isfinite(x) and x > 0):
        raise ModelError(f"{name} = {value!r}, expected a finite number > 0")
    return x


def _value_iteration(
    bell: _JointBellman, c: FloatArray, tol: float, max_iter: int
) -> LinearMaximum:
    model = bell.model
    nS = model.states.size
    V = np.zeros(nS)
    backups0 = bell.backups
    for _ in range(max_iter):
        Q, TV, lower, upper = bell.bounds(c, V)
        if upper - lower <= tol:
            act: IntArray = np.argmax(Q, axis=1).astype(np.int64)
            Vp, lam_S, v_err, l_err = bell.evaluate(c, act[:, None], np.ones((nS, 1)))
            attained = float(bell.rho @ Vp)
            return LinearMaximum(
                upper=upper,
                lower=max(lower, attained - v_err),
                attained=attained,
                greedy=_frozen_int(act),
                lam_S=read_only(lam_S),
                occupancy_error=l_err,
                values=read_only(TV),
                backups=bell.backups - backups0,
                evaluations=1,
            )
        V = TV
    raise SolverError(f"value iteration reached max_iter = {max_iter} before tol = {tol:.3g}")


def value_iteration_maximum(
    model: NetworkedMDP,
    rewards: Sequence[FloatArray],
    *,
    tol: float = 1e-10,
    max_iter: int = 100_000,
) -> LinearMaximum:
    """The same maximum by value iteration ``V_{k+1} = T V_k`` from ``V_0 = 0``, stopped
    once MacQueen's bounds on ``rho . V*`` are within ``tol`` (no policy evaluation inside
    the loop; the greedy policy of the last backup is evaluated once at the end).

    A second route to :func:`linear_maximum`, and the oracle of plain Frank--Wolfe.
    """
    c = _check_rewards(model, rewards)
    return _value_iteration(_JointBellman(model), c, _positive(tol, "tol"), max_iter)


# --------------------------------------------------------------------------------------------
# Frank--Wolfe over the marginal polytope
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OptimumTrace:
    """Per outer iteration of :func:`optimum`.

    Attributes:
        objective: ``F(z_k)``.
        gap: certified ``min_{j<=k} (F(z_j) + U_j - <grad F(z_j), z_j>) - F(z_k)``.
        seconds: wall-clock time since the start (``time.perf_counter``).
        vertices: number of vertices carrying weight.
    """

    objective: FloatArray
    gap: FloatArray
    seconds: FloatArray
    vertices: IntArray


@dataclass(frozen=True)
class Optimum:
    """``F*`` with its certificate, the optimal occupancy and a policy attaining it.

    Attributes:
        value: ``F`` at the returned occupancy (attained, so ``value <= F*``).
        upper_bound: certified ``F* <= upper_bound``.
        duality_gap: ``upper_bound - value``.
        local_occupancy: ``z_i = M_i lam`` per agent, shape ``(|S_i|, |A_i|)``, mass
            ``1/(1-gamma)``.
        lam_S: ``(|S|,)`` joint state occupancy of the optimal mixture.
        policy: a centralized policy whose occupancy is ``lam`` (``pi = lam / lam_S``).
        weights: ``(m,)`` convex weights of the vertex occupancies.
        occupancy_error: certified l1 error of ``lam_S`` (weighted vertex errors).
        iterations: outer iterations (linear-oracle calls).
        backups: Bellman backups over the joint ``(|S|, |A|)`` table.
        evaluations: exact policy evaluations inside the oracle.
        method, oracle: as requested.
        trace: per-iteration objective, gap and time.
    """

    value: float
    upper_bound: float
    duality_gap: float
    local_occupancy: tuple[FloatArray, ...]
    lam_S: FloatArray
    policy: CentralizedPolicy = field(repr=False)
    weights: FloatArray
    occupancy_error: float
    iterations: int
    backups: int
    evaluations: int
    method: str
    oracle: str
    trace: OptimumTrace = field(repr=False)


class _Marginals:
    """``F``, ``grad F`` and the vertex marginals on the stacked local-occupancy vector."""

    def __init__(self, model: NetworkedMDP, utilities: Sequence[Utility] = ()) -> None:
        self.model = model
        self.utilities = tuple(utilities)
        self.shapes = [(model.n_states[i], model.n_actions[i]) for i in range(model.n)]
        sizes = [a * b for a, b in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.own_state = tuple(model.states.sub_index((i,)) for i in range(model.n))

    def split(self, z: FloatArray) -> list[FloatArray]:
        return [
            z[self.offsets[i] : self.offsets[i + 1]].reshape(self.shapes[i])
            for i in range(self.model.n)
        ]

    def value(self, z: FloatArray) -> float:
        parts = self.split(z)
        return float(np.mean([f.value(p) for f, p in zip(self.utilities, parts, strict=True)]))

    def gradient(self, z: FloatArray) -> FloatArray:
        """Stacked ``(1/n) grad f_i(z_i)``: the gradient of ``F`` in ``z``."""
        parts = self.split(z)
        n = self.model.n
        return np.concatenate(
            [f.gradient(p).reshape(-1) / n for f, p in zip(self.utilities, parts, strict=True)]
        )

    def rewards(self, z: FloatArray) -> list[FloatArray]:
        """Shadow rewards ``r_i = grad f_i(z_i)`` (unscaled)."""
        return [f.gradient(p) for f, p in zip(self.utilities, self.split(z), strict=True)]

    def of_policy(self, lam_S: FloatArray, support: IntArray, probs: FloatArray) -> FloatArray:
        """Stacked ``M_i lam`` for ``lam[s, a] = lam_S(s) pi(a|s)`` in support form."""
        model = self.model
        out = []
        for i in range(model.n):
            nA_i = model.n_actions[i]
            z_i = np.zeros(self.shapes[i][0] * nA_i)
            for m in range(support.shape[1]):
                a_i = _action_digits(model, support[:, m], i)
                idx = self.own_state[i] * nA_i + a_i
                z_i += np.bincount(idx, weights=lam_S * probs[:, m], minlength=z_i.size)
            out.append(z_i)
        return np.concatenate(out)


def _line_search(
    marg: _Marginals, z: FloatArray, d: FloatArray, t_max: float, slope0: float
) -> float:
    """``argmax_{0 <= t <= t_max} F(z + t d)`` for concave ``F`` (``slope0 = phi'(0) > 0``):
    ``t_max`` if ``phi'(t_max) >= 0``, else the root of the decreasing ``phi'`` by the
    Illinois variant of regula falsi (bracket kept, at most 60 steps)."""
    if t_max <= 0.0:
        return 0.0
    hi_slope = float(marg.gradient(z + t_max * d) @ d)
    if hi_slope >= 0.0:
        return t_max
    lo, hi, f_lo, f_hi = 0.0, t_max, slope0, hi_slope
    side = 0
    t = lo
    for _ in range(60):
        t = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
        if not lo < t < hi:
            t = 0.5 * (lo + hi)
        s = float(marg.gradient(z + t * d) @ d)
        if abs(s) <= 1e-15 * (abs(slope0) + 1.0) or hi - lo <= 1e-15 * t_max:
            return t
        if s > 0:
            lo, f_lo = t, s
            if side == 1:
                f_hi *= 0.5
            side = 1
        else:
            hi, f_hi = t, s
            if side == -1:
                f_lo *= 0.5
            side = -1
    return t


def _restricted_optimum(
    marg: _Marginals, Z: FloatArray, w: FloatArray, tol: float, max_steps: int
) -> FloatArray:
    """Maximise ``F(Z^T w)`` over the simplex: SLSQP on the ``m`` weights (``m`` is small,
    at most the number of vertices kept), then pairwise Frank--Wolfe steps with exact line
    search until the pairwise gap ``max_j <g, Z_j> - min_{w_j > 0} <g, Z_j>`` is below ``tol``
    or ``max_steps`` is reached.  Only the outer certificate matters for correctness: a loose
    inner solve costs outer iterations, never validity."""
    m = w.size
    if m > 1:
        res = scipy.optimize.minimize(
            lambda x: -marg.value(np.maximum(x, 0.0) @ Z),
            w,
            jac=lambda x: -(Z @ marg.gradient(np.maximum(x, 0.0) @ Z)),
            method="SLSQP",
            bounds=[(0.0, 1.0)] * m,
            constraints=[
                {"type": "eq", "fun": lambda x: x.sum() - 1.0, "jac": lambda x: np.ones(m)}
            ],
            options={"ftol": 1e-16, "maxiter": 200},
        )
        cand = np.maximum(res.x, 0.0)
        if cand.sum() > 0 and np.isfinite(cand).all():
            cand /= cand.sum()
            if marg.value(cand @ Z) >= marg.value(w @ Z):
                w = cand
    w = w.copy()
    for _ in range(max_steps):
        z = w @ Z
        g = marg.gradient(z)
        scores = Z @ g
        up = int(np.argmax(scores))
        active = np.flatnonzero(w > 0)
        down = int(active[np.argmin(scores[active])])
        pair_gap = float(scores[up] - scores[down])
        if pair_gap <= tol or up == down:
            break
        d = Z[up] - Z[down]
        t = _line_search(marg, z, d, float(w[down]), pair_gap)
        if t <= 0.0:
            break
        w[up] += t
        w[down] = 0.0 if t >= w[down] else w[down] - t
    return w


def optimum(
    model: NetworkedMDP,
    utilities: Sequence[Utility],
    *,
    gap: float = 1e-6,
    method: Method = "simplicial",
    oracle: Oracle = "policy-evaluation",
    max_iterations: int = 10_000,
    time_limit: float | None = None,
) -> Optimum:
    """``F* = max_{lam in L} (1/n) sum_i f_i(M_i lam)`` for concave utilities, certified.

    Each outer step ``k`` evaluates the shadow rewards ``r_i = grad f_i(z_i^k)`` at the current
    local occupancies, calls the linear oracle on the team reward ``(1/n) sum_i r_i`` and gets
    a vertex (a deterministic joint policy's occupancy) and a certified upper bound ``U_k`` on
    ``max_{lam in L} <grad F(z^k), lam>``.  Concavity gives
    ``F* <= F(z^k) + U_k - <grad F(z^k), z^k>``; the smallest such bound so far minus the
    current ``F`` is the reported gap (``proofs_notes/optimum.md#certificate``).  The update
    is fully corrective (``"simplicial"``: re-optimise over the hull of the vertices found,
    keep those with weight) or plain (``"frank-wolfe"``: exact line search towards the new
    vertex).  Stops once the gap is at most ``gap``.

    Args:
        model: the networked MDP (its joint ``(|S|, |A|)`` table must fit in memory).
        utilities: one concave utility per agent; a non-concave one raises
            :class:`~reference.errors.NonConcaveError`.
        gap: requested certified duality gap.
        method: ``"simplicial"`` or ``"frank-wolfe"``.
        oracle: ``"policy-evaluation"`` (:func:`linear_maximum`, warm-started from the last
            vertex) or ``"value-iteration"`` (:func:`value_iteration_maximum` from 0, to a
            tolerance of ``gap / 10``).
        max_iterations: cap on outer steps; with ``time_limit`` (seconds) the loop may stop
            early, and the record then carries the gap reached (no error).

    Raises:
        SolverError: ``max_iterations`` reached with the gap still above ``gap`` and no
            ``time_limit`` given.
    """
    check_utilities(model, utilities)
    check_concave(utilities)
    gap = _positive(gap, "gap")
    if method not in ("simplicial", "frank-wolfe"):
        raise ModelError(f"method = {method!r}, expected 'simplicial' or 'frank-wolfe'")
    if oracle not in ("policy-evaluation", "value-iteration"):
        raise ModelError(f"oracle = {oracle!r}, expected 'policy-evaluation' or 'value-iteration'")
    start_time = time.perf_counter()
    bell = _JointBellman(model)
    marg = _Marginals(model, utilities)
    nS = model.states.size
    one = np.ones((nS, 1))

    # first vertex: the joint action 0 everywhere
    act0 = np.zeros(nS, dtype=np.int64)
    _, lam0, _, err0 = bell.evaluate(np.zeros((nS, model.actions.size)), act0[:, None], one)
    acts: list[IntArray] = [act0]
    lams: list[FloatArray] = [lam0]
    errs: list[float] = [err0]
    Z = marg.of_policy(lam0, act0[:, None], one)[None, :]
    w = np.ones(1)
    keys = {act0.tobytes(): 0}
    best_upper = math.inf
    last_greedy: IntArray | None = None
    evaluations = 0
    objs, gaps, secs, counts = [], [], [], []
    inner_tol = math.inf
    current_gap = math.inf
    iterations = 0
    for _ in range(max_iterations):
        iterations += 1
        z = w @ Z
        F = marg.value(z)
        grad = marg.gradient(z)
        c = team_reward_table(model, marg.rewards(z))
        if oracle == "policy-evaluation":
            lin = _linear_maximum(bell, c, last_greedy, 0.1 * gap, 1000)
        else:
            lin = _value_iteration(bell, c, 0.1 * gap, 100_000)
        evaluations += lin.evaluations
        last_greedy = lin.greedy
        # <c, lam> of the iterate from its marginals, and the rounding of that dot product
        inner = float(grad @ z)
        slack = (z.size + 2) * EPS_F64 * float(np.abs(grad) @ np.abs(z))
        best_upper = min(best_upper, F + lin.upper - inner + slack)
        current_gap = best_upper - F
        objs.append(F)
        gaps.append(current_gap)
        secs.append(time.perf_counter() - start_time)
        counts.append(int(np.count_nonzero(w)))
        if current_gap <= gap:
            break
        if time_limit is not None and secs[-1] >= time_limit:
            break
        key = lin.greedy.tobytes()
        if key in keys:
            j = keys[key]
        else:
            j = len(acts)
            keys[key] = j
            acts.append(np.array(lin.greedy))
            lams.append(np.array(lin.lam_S))
            errs.append(lin.occupancy_error)
            Z = np.vstack([Z, marg.of_policy(lin.lam_S, lin.greedy[:, None], one)[None, :]])
            w = np.append(w, 0.0)
        if method == "frank-wolfe":
            d = Z[j] - z
            t = _line_search(marg, z, d, 1.0, float(grad @ d))
            w = (1.0 - t) * w
            w[j] += t
        else:
            inner_tol = min(inner_tol, 0.25 * current_gap)
            w = _restricted_optimum(marg, Z, w, max(inner_tol, 0.05 * gap), 1000)
            keep = np.flatnonzero(w > 0)
            if keep.size < w.size:
                acts = [acts[k] for k in keep]
                lams = [lams[k] for k in keep]
                errs = [errs[k] for k in keep]
                Z, w = Z[keep], w[keep]
                keys = {a.tobytes(): k for k, a in enumerate(acts)}
    else:
        if time_limit is None:
            raise SolverError(
                f"Frank-Wolfe reached max_iterations = {max_iterations} with certified gap "
                f"{current_gap:.3g} > {gap:.3g}"
            )
    z = w @ Z
    F = marg.value(z)
    mix = np.stack(lams, axis=1) * w[None, :]  # (|S|, m): w_j lam_S_j(s)
    lam_S = mix.sum(axis=1)
    safe = np.where(lam_S > 0, lam_S, 1.0)
    probs = np.where(lam_S[:, None] > 0, mix / safe[:, None], 0.0)
    probs[lam_S <= 0, 0] = 1.0  # unreachable states: the first vertex's action
    policy = CentralizedPolicy(support=_frozen_int(np.stack(acts, axis=1)), probs=read_only(probs))
    return Optimum(
        value=F,
        upper_bound=best_upper,
        duality_gap=best_upper - F,
        local_occupancy=tuple(frozen(p) for p in marg.split(z)),
        lam_S=read_only(lam_S),
        policy=policy,
        weights=frozen(w),
        occupancy_error=float(np.dot(w, errs)),
        iterations=iterations,
        backups=bell.backups,
        evaluations=evaluations,
        method=method,
        oracle=oracle,
        trace=OptimumTrace(
            objective=frozen(objs),
            gap=frozen(gaps),
            seconds=frozen(secs),
            vertices=np.array(counts, dtype=np.int64),
        ),
    )


# --------------------------------------------------------------------------------------------
# Independent routes and checks
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyOccupancy:
    """Occupancy of a :class:`CentralizedPolicy` from its own kernel.

    Attributes:
        lam_S: ``(|S|,)`` state occupancy.
        local_occupancy: ``M_i lam`` per agent.
        error_bound: certified l1 error of ``lam_S``.
    """

    lam_S: FloatArray
    local_occupancy: tuple[FloatArray, ...]
    error_bound: float


def policy_occupancy(model: NetworkedMDP, policy: CentralizedPolicy) -> PolicyOccupancy:
    """``lam_S = (I - gamma P_pi^T)^{-1} rho`` for the centralized ``policy`` and its local
    marginals ``M_i lam`` (one LU solve of the policy's own joint kernel)."""
    nS = model.states.size
    if policy.support.shape[0] != nS or policy.probs.shape != policy.support.shape:
        raise ModelError(
            f"policy support {policy.support.shape} / probs {policy.probs.shape}, expected "
            f"({nS}, m) each"
        )
    bell = _JointBellman(model)
    c = np.zeros((nS, model.actions.size))
    _, lam_S, _, err = bell.evaluate(c, policy.support, policy.probs)
    marg = _Marginals(model)
    z = marg.of_policy(lam_S, policy.support, policy.probs)
    return PolicyOccupancy(
        lam_S=read_only(lam_S),
        local_occupancy=tuple(frozen(p) for p in marg.split(z)),
        error_bound=err,
    )


@dataclass(frozen=True)
class RouteResult:
    """A second route's answer as a certified interval ``[lower, upper]`` around ``F*``.

    Attributes:
        value: the route's objective value at its solution.
        lower: certified ``lower <= F*``.
        upper: certified ``F* <= upper``.
        lam: ``(|S|, |A|)`` the route's joint occupancy.
    """

    value: float
    lower: float
    upper: float
    lam: FloatArray


def _flow_matrix(model: NetworkedMDP, memory_limit: float | None) -> FloatArray:
    """``(|S|, |S| |A|)`` ``A[s', (s, a)] = 1[s = s'] - gamma P[s, a, s']``."""
    P = model.joint_kernel(memory_limit)
    nS, nA = model.states.size, model.actions.size
    A = -model.gamma * P.reshape(nS * nA, nS).T
    A[np.repeat(np.arange(nS), nA), np.arange(nS * nA)] += 1.0
    return A


def _explicit_maximum(model: NetworkedMDP, c: FloatArray) -> tuple[float, float]:
    """Certified ``[lower, upper]`` on ``max_{lam in L} <c, lam>`` from explicit joint
    value iteration (:func:`reference.tabular.value_iteration`) on the tabular joint MDP,
    independent of the factored backup."""
    from reference.tabular import TabularMDP, value_iteration

    mdp = TabularMDP(model.joint_kernel(), c, model.joint_rho(), model.gamma)
    sol = value_iteration(mdp, tol=1e-12 * max(1.0, _sup(c)) / (1 - model.gamma))
    return sol.J - sol.error_bound, sol.J + sol.error_bound


def linear_program_optimum(
    model: NetworkedMDP,
    rewards: Sequence[FloatArray],
    *,
    memory_limit: float | None = None,
) -> RouteResult:
    """``max_{lam in L} <c, lam>`` by the LP over the flow constraints (HiGHS), for linear
    utilities ``f_i = <r_i, lam_i>`` (then ``F = <c, lam>``, ``c = (1/n) sum_i r_i``).

    The interval: ``lower`` is the exact value (LU evaluation) of the policy
    ``pi = lam / sum_a lam`` read from the LP's solution, minus its certified error;
    ``upper`` is MacQueen's bound at the LP's dual values ``V`` (the equality marginals),
    so the LP solver's tolerances never enter the certificate.
    """
    c = _check_rewards(model, rewards)
    nS, nA = model.states.size, model.actions.size
    A = _flow_matrix(model, memory_limit)
    res = scipy.optimize.linprog(
        -c.reshape(-1),
        A_eq=scipy.sparse.csr_matrix(A),
        b_eq=model.joint_rho(),
        bounds=(0, None),
        method="highs",
    )
    if res.status != 0:
        raise SolverError(f"HiGHS did not solve the occupancy LP: {res.message}")
    lam = np.maximum(res.x.reshape(nS, nA), 0.0)
    mass = lam.sum(axis=1)
    pi = np.where(mass[:, None] > 0, lam / np.where(mass > 0, mass, 1.0)[:, None], 1.0 / nA)
    bell = _JointBellman(model)
    support = np.tile(np.arange(nA, dtype=np.int64), (nS, 1))
    Vp, _, v_err, _ = bell.evaluate(c, support, pi)
    lower = float(bell.rho @ Vp) - v_err
    V_dual = -np.asarray(res.eqlin.marginals, dtype=np.float64)
    _, _, _, upper = bell.bounds(c, V_dual)
    return RouteResult(value=-float(res.fun), lower=lower, upper=upper, lam=frozen(lam))


def flow_constrained_optimum(
    model: NetworkedMDP,
    utilities: Sequence[Utility],
    *,
    memory_limit: float | None = None,
) -> RouteResult:
    """An independent solver for tiny instances: SLSQP on ``max F(M lam)`` subject to the
    flow equalities ``A lam = rho`` and ``lam >= 0`` over the explicit joint occupancy.

    Certified afterwards without Frank--Wolfe's machinery: the solution's policy
    ``pi = lam / sum_a lam`` is evaluated exactly (its occupancy ``lam'`` lies in ``L``, so
    ``F(lam') - rounding <= F*``), and concavity at ``lam'`` with the explicit joint value
    iteration of :func:`reference.tabular.value_iteration` on the shadow reward gives
    ``F* <= F(lam') + max_L <grad F(lam'), .> - <grad F(lam'), lam'>``.
    """
    check_utilities(model, utilities)
    check_concave(utilities)
    nS, nA = model.states.size, model.actions.size
    A = _flow_matrix(model, memory_limit)
    rho = model.joint_rho()
    marg = _Marginals(model, utilities)
    # M: (D, |S||A|) stacked marginal map
    cols = []
    for i in range(model.n):
        own_s = model.states.sub_index((i,))
        own_a = _action_digits(model, np.arange(nA, dtype=np.int64), i)
        idx = (own_s[:, None] * model.n_actions[i] + own_a[None, :]).reshape(-1)
        block = np.zeros((model.n_states[i] * model.n_actions[i], nS * nA))
        block[idx, np.arange(nS * nA)] = 1.0
        cols.append(block)
    M = np.vstack(cols)

    def neg_f(x: FloatArray) -> float:
        return -marg.value(M @ x)

    def neg_grad(x: FloatArray) -> FloatArray:
        out: FloatArray = -(M.T @ marg.gradient(M @ x))
        return out

    x0 = np.full(nS * nA, 1.0 / ((1 - model.gamma) * nS * nA))
    res = scipy.optimize.minimize(
        neg_f,
        x0,
        jac=neg_grad,
        method="SLSQP",
        bounds=[(0.0, None)] * (nS * nA),
        constraints=[{"type": "eq", "fun": lambda x: A @ x - rho, "jac": lambda x: A}],
        options={"ftol": 1e-14, "maxiter": 2000},
    )
    lam = np.maximum(res.x.reshape(nS, nA), 0.0)
    mass = lam.sum(axis=1)
    pi = np.where(mass[:, None] > 0, lam / np.where(mass > 0, mass, 1.0)[:, None], 1.0 / nA)
    support = np.tile(np.arange(nA, dtype=np.int64), (nS, 1))
    occ = policy_occupancy(model, CentralizedPolicy(support, pi))
    z = np.concatenate([p.reshape(-1) for p in occ.local_occupancy])
    F = marg.value(z)
    grad = marg.gradient(z)
    c = team_reward_table(model, marg.rewards(z))
    _, up_lin = _explicit_maximum(model, c)
    # |F(z) - F(z_true)| <= (1/n) sum_i G_i ||z_i - z_i_true||_1 <= max_i G_i ||lam - lam_true||_1
    # (G_i the declared sup-norm gradient bound; the policy is fixed, so the l1 error of lam
    # is that of lam_S)
    occ_slack = max(f.constants.gradient_bound for f in utilities) * occ.error_bound
    inner = float(grad @ z)
    slack = (z.size + 2) * EPS_F64 * float(np.abs(grad) @ np.abs(z))
    lam_joint = occ.lam_S[:, None] * pi
    return RouteResult(
        value=F,
        lower=F - occ_slack,
        upper=F + up_lin - inner + slack + occ_slack,
        lam=frozen(lam_joint),
    )
