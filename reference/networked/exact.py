"""Exact oracles for networked MARL with general utilities (SPEC section 2).

Given a :class:`NetworkedMDP`, a :class:`LocalizedSoftmaxPolicy` and one utility
``f_i`` per agent, this module computes, on the joint system:

* the global state occupancy ``lam_S = (I - gamma P_pi^T)^{-1} rho`` and the local
  marginals ``lam_i[s_i, a_i] = sum_s lam_S(s) 1[s_i(s) = s_i] pi_i(a_i | o_i(s))``;
* the objective ``F(theta) = (1/n) sum_i f_i(lam_i)``;
* the shadow rewards ``r_i = grad f_i(lam_i)``, shadow values ``V_i`` and shadow
  Q-functions ``Q_i(s, a)`` of the reward ``R_i(s, a) = r_i(s_i, a_i)``, and the team
  average ``Qbar = (1/n) sum_j Q_j``;
* ``grad F`` by three independent routes (``proofs_notes/shadow-reward-gradient.md``):

  1. :func:`solve` -- the shadow-reward policy-gradient theorem contracted with the
     softmax score, which needs only agent-marginal Q-values
     ``Qbar^{(i)}(s, b) = sum_{a_-i} pi_{-i}(a_-i|s) Qbar(s, (b, a_-i))``::

         grad_{theta_i}[o, b] = sum_{s: o_i(s) = o} lam_S(s) pi_i(b|o) (Qbar^{(i)}(s, b) - Vbar(s))

  2. :func:`gradient_chain_rule` -- ``(1/n) sum_j (d lam_j / d theta_i)^T r_j`` with the
     occupancy Jacobian from differentiating the flow equation (forward mode);
  3. :func:`gradient_joint_q` -- the theorem written literally with the joint
     ``lam(s, a)`` and ``Qbar(s, a)`` tables (small ``n``).

No routine loops over joint states; joint arrays are guarded by :mod:`reference.memory`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from math import prod
from typing import Literal, cast

import numpy as np
import scipy.linalg

from reference._arrays import EPS_F64, FloatArray, IntArray, frozen, read_only, streamed_empty
from reference.errors import MemoryLimitError, ModelError, SolverError
from reference.memory import check_memory
from reference.networked.backends import BackendChoice, fused_route_for, transition_operator
from reference.networked.matrix_free import MatrixFreeOperator, agent_forms_by_applications
from reference.networked.model import NetworkedMDP
from reference.networked.policy import LocalizedSoftmaxPolicy
from reference.networked.transition import (
    DenseOperator,
    HalvesRoute,
    JointRoute,
    LinearSolve,
    TransitionOperator,
    contract_next_state,
    group_sum,
)
from reference.networked.utilities import (
    Utility,
    evaluate_utilities,
    evaluate_utilities_stacked,
)

__all__ = [
    "NetworkedSolution",
    "check_utilities",
    "gradient_chain_rule",
    "gradient_contributions",
    "gradient_joint_q",
    "gradient_norm",
    "iter_shadow_q",
    "local_occupancies",
    "local_occupancy_jacobian",
    "objective",
    "occupancy_jacobian_bytes",
    "per_agent_values",
    "policy_reward_tables",
    "score_contraction",
    "shadow_q",
    "solve",
    "team_q",
]

# LAPACK's LU factorisation and solve, fetched once: the joint route solves systems of at most
# a few dozen unknowns, where scipy.linalg's argument checks would cost as much as the solves.
_getrf, _getrs = scipy.linalg.get_lapack_funcs(("getrf", "getrs"), dtype=np.float64)


def _vecmat_matmul(x: FloatArray, m: FloatArray) -> FloatArray:
    """``out[..., l] = sum_k x[..., k] m[..., k, l]`` (``np.vecmat`` before numpy 2.2)."""
    out: FloatArray = np.matmul(x[..., None, :], m)[..., 0, :]
    return out


def _vecdot_einsum(x: FloatArray, y: FloatArray) -> FloatArray:
    """``out[...] = sum_k x[..., k] y[..., k]`` (``np.vecdot`` before numpy 2.0)."""
    out: FloatArray = np.einsum("...k,...k->...", x, y)
    return out


def _matvec_matmul(m: FloatArray, x: FloatArray) -> FloatArray:
    """``out[..., k] = sum_l m[..., k, l] x[..., l]`` (``np.matvec`` before numpy 2.2)."""
    out: FloatArray = np.matmul(m, x[..., :, None])[..., 0]
    return out


_vecmat: Callable[[FloatArray, FloatArray], FloatArray] = getattr(np, "vecmat", _vecmat_matmul)
_matvec: Callable[[FloatArray, FloatArray], FloatArray] = getattr(np, "matvec", _matvec_matmul)
_vecdot: Callable[[FloatArray, FloatArray], FloatArray] = getattr(np, "vecdot", _vecdot_einsum)

Backend = BackendChoice
"""``"auto"``, ``"dense"`` or ``"matrix-free"`` (:mod:`reference.networked.backends`)."""

Values = Literal["auto", "per-agent", "team"]
"""Which shadow values :func:`solve` computes: every ``V_i`` (``"per-agent"``), only
``Vbar`` (``"team"``), or ``"auto"``: per-agent on the dense backend, team on the
matrix-free one (``proofs_notes/matrix-free.md#team-value``)."""


@dataclass(frozen=True)
class NetworkedSolution:
    """Every exact quantity of SPEC section 2 at one policy.

    Attributes:
        lam_S: ``(|S|,)`` global state occupancy, mass ``1/(1-gamma)``; the state-action
            occupancy is ``lam_S[s] pi(a|s)``.
        local_occupancy: ``lam_i`` with shape ``(|S_i|, |A_i|)`` per agent, mass ``1/(1-gamma)``.
        local_utility: ``f_i(lam_i)`` per agent, shape ``(n,)``.
        objective: ``F = mean(local_utility)``.
        shadow_rewards: ``r_i = grad f_i(lam_i)``, shape ``(|S_i|, |A_i|)`` per agent.
        shadow_values: ``(|S|, n)``, column ``i`` is ``V_i = (I - gamma P_pi)^{-1} R_i^pi``;
            ``None`` when only the team value was solved for (``values="team"``, the
            matrix-free default: ``grad F`` needs only ``Vbar``, and ``n`` value solves would
            multiply the cost of the value solve by ``n``;
            ``proofs_notes/matrix-free.md#team-value``).  :func:`per_agent_values` returns
            them either way.
        team_value: ``(|S|,)`` ``Vbar = (1/n) sum_i V_i``, solved for directly as
            ``(I - gamma P_pi)^{-1} Rbar^pi`` when ``shadow_values`` is ``None``.
        gradient: ``grad_{theta_i} F`` per agent, shape ``(|O_i|, |A_i|)``.
        gradient_norm: Euclidean norm of the concatenated gradient.
        occupancy_error_bound: certified l1 error of ``lam_S``.
        value_error_bound: certified inf-norm error of ``team_value`` and, when present, of
            every column of ``shadow_values``.
        iterations: operator applications of the iterative solves (0 for direct solves).
        backend: name of the transition backend used.
    """

    lam_S: FloatArray
    local_occupancy: tuple[FloatArray, ...]
    local_utility: FloatArray
    objective: float
    shadow_rewards: tuple[FloatArray, ...]
    shadow_values: FloatArray | None
    team_value: FloatArray
    gradient: tuple[FloatArray, ...]
    gradient_norm: float
    occupancy_error_bound: float
    value_error_bound: float
    backend: str
    iterations: int = 0

    def require_shadow_values(self) -> FloatArray:
        """``shadow_values``, or a :class:`~reference.errors.ModelError` naming the fix when
        only the team value was solved for (for callers whose error analysis uses
        ``value_error_bound`` as the error of each ``V_i``)."""
        if self.shadow_values is None:
            raise ModelError(
                f"this solution ({self.backend} backend) holds only the team value Vbar; "
                "solve with values='per-agent' for the per-agent shadow values V_i"
            )
        return self.shadow_values


def check_utilities(model: NetworkedMDP, utilities: Sequence[Utility]) -> None:
    """One utility per agent, of shape ``(|S_i|, |A_i|)`` and the model's ``gamma``."""
    if len(utilities) != model.n:
        raise ModelError(
            f"{len(utilities)} utilities given, expected one per agent (n = {model.n})"
        )
    for i, f in enumerate(utilities):
        expected = (model.n_states[i], model.n_actions[i])
        if tuple(f.shape) != expected:
            raise ModelError(f"utilities[{i}] has shape {tuple(f.shape)}, expected {expected}")
        if f.gamma != model.gamma:
            raise ModelError(f"utilities[{i}] has gamma = {f.gamma}, the model has {model.gamma}")


def local_occupancies(policy: LocalizedSoftmaxPolicy, lam_S: FloatArray) -> tuple[FloatArray, ...]:
    """``lam_i[s_i, a_i] = sum_s lam_S(s) 1[s_i(s) = s_i] pi_i(a_i | o_i(s))`` for every agent.

    Computed as the marginal ``m_i(o) = sum_{s: o_i(s) = o} lam_S(s)`` on agent ``i``'s
    observation ``N_i^beta`` (which contains ``i``), then ``lam_i[s_i, a] = sum_{o: o_i = s_i}
    m_i(o) pi_i(a|o)`` on the small observation table: the marginals of all agents in one
    pass over ``lam_S`` per block of observations, no joint index table
    (:meth:`JointSpace.marginals`).

    Args:
        policy: the localized policy.
        lam_S: ``(|S|,)`` global state occupancy (unnormalised or normalised; linear).
    """
    return _local_occupancies(policy, policy.model.states.marginals(lam_S, policy.observed))


def _local_occupancies(
    policy: LocalizedSoftmaxPolicy, masses: Sequence[FloatArray]
) -> tuple[FloatArray, ...]:
    """:func:`local_occupancies` from the observation marginals ``m_i`` of ``lam_S``."""
    model = policy.model
    out = []
    for i in range(model.n):
        weighted = masses[i][:, None] * policy.probs[i]  # (|O_i|, |A_i|)
        out.append(frozen(_own_marginal(model, policy.observed[i], i, weighted)))
    return tuple(out)


def _own_digit(model: NetworkedMDP, agents: Sequence[int], i: int) -> np.ndarray:
    """``(prod_{j in agents} |S_j|,)``: agent ``i``'s local state in each joint value of
    ``s_agents`` (mixed radix, lowest agent most significant)."""
    position = list(agents).index(i)
    stride = prod(model.n_states[j] for j in agents[position + 1 :])
    size = prod(model.n_states[j] for j in agents)
    return (np.arange(size) // stride) % model.n_states[i]


def _own_marginal(
    model: NetworkedMDP, agents: Sequence[int], i: int, table: FloatArray
) -> FloatArray:
    """``out[s_i, ...] = sum_{y: y_i = s_i} table[y, ...]`` for a table over ``s_agents``."""
    digit = _own_digit(model, agents, i)
    out = np.zeros((model.n_states[i], *table.shape[1:]))
    np.add.at(out, digit, table)
    return out


def policy_reward_tables(
    policy: LocalizedSoftmaxPolicy, rewards: Sequence[FloatArray]
) -> tuple[FloatArray, ...]:
    """``T_i[o] = sum_{a_i} pi_i(a_i | o) r_i(s_i(o), a_i)`` on agent ``i``'s observation table.

    ``R_i^pi(s) = T_i[o_i(s)]`` (``i`` observes its own state, ``i in N_i^beta``), so the
    joint ``R_i^pi`` is ``states.lift(T_i, policy.observed[i])``.

    Args:
        policy: the localized policy.
        rewards: ``r_i`` of shape ``(|S_i|, |A_i|)`` per agent.

    Returns:
        one ``(|O_i|,)`` array per agent.
    """
    model = policy.model
    out = []
    for i in range(model.n):
        own = rewards[i][_own_digit(model, policy.observed[i], i)]  # (|O_i|, |A_i|)
        out.append(frozen(np.einsum("oa,oa->o", policy.probs[i], own)))
    return tuple(out)


def _policy_rewards(policy: LocalizedSoftmaxPolicy, tables: Sequence[FloatArray]) -> FloatArray:
    """``(|S|, n)``: ``R_i^pi(s) = T_i[o_i(s)]`` (:func:`policy_reward_tables`)."""
    states = policy.model.states
    cols = [states.lift(t, policy.observed[i]) for i, t in enumerate(tables)]
    return np.stack(cols, axis=1)


def _kept(x: FloatArray) -> FloatArray:
    """``x`` itself when it is already a read-only float64 array (a solve's result, which no
    caller holds writable), else a read-only copy (:func:`frozen`): at ``2^24`` joint states a
    copy is 128 MiB of fresh memory."""
    if x.dtype == np.float64 and not x.flags.writeable:
        return x
    return frozen(x)


def _team_policy_reward(policy: LocalizedSoftmaxPolicy, tables: Sequence[FloatArray]) -> FloatArray:
    """``(|S|,)``: ``Rbar^pi(s) = (1/n) sum_i T_i[o_i(s)]``, one joint vector: the tables
    added up per block of observations, one broadcast pass per block
    (:meth:`JointSpace.add_lifts`; no lifted vector is formed)."""
    states = policy.model.states
    total = streamed_empty(states.size)
    total.fill(0.0)
    states.add_lifts(total, tables, policy.observed)
    total /= policy.model.n
    return total


def objective(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    utilities: Sequence[Utility],
    *,
    backend: Backend = "auto",
    memory_limit: float | None = None,
    accuracy: float | None = None,
) -> float:
    """``F(theta) = (1/n) sum_i f_i(lam_i^theta)`` (one occupancy solve)."""
    check_utilities(model, utilities)
    op = transition_operator(model, policy, backend, memory_limit, accuracy=accuracy)
    lam_S = op.solve_occupancy(model.joint_rho()).x
    occ = local_occupancies(policy, lam_S)
    return float(np.mean([f.value(lam) for f, lam in zip(utilities, occ, strict=True)]))


def solve(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    utilities: Sequence[Utility],
    *,
    backend: Backend = "auto",
    memory_limit: float | None = None,
    operator: TransitionOperator | None = None,
    values: Values = "auto",
    accuracy: float | None = None,
) -> NetworkedSolution:
    """Occupancies, objective, shadow rewards and values, and ``grad F`` (route 1).

    Needs one occupancy solve, one value solve (``Vbar`` only, or all ``V_i`` with
    ``values="per-agent"``) and one :meth:`TransitionOperator.apply_agent` per agent::

        grad_{theta_i}[o, b] = sum_{s: o_i(s) = o} lam_S(s) pi_i(b|o) (Qbar^{(i)}(s, b) - Vbar(s))
        Qbar^{(i)}(s, b) = (1/n)(r_i(s_i, b) - R_i^pi(s)) + Rbar^pi(s) + gamma (P^{(i,b)} Vbar)(s)

    Small models whose agents have equal local sizes (up to 6 binary agents) take one of the
    dense backend's fused routes when no ``operator`` is given: the same equations over the
    joint state-action table, or over the two halves' action tables, in a fixed number of
    array operations, with the same certificates
    (:class:`~reference.networked.transition.JointRoute`,
    :class:`~reference.networked.transition.HalvesRoute`,
    ``proofs_notes/occupancy-and-flow.md#fused-joint-route``).
    No joint Q table and nothing quadratic in ``|S|`` is formed on the matrix-free backend,
    where the ``P^{(i,b)} Vbar`` terms of all agents come weighted by ``lam_S`` from one
    reverse-mode differentiation of ``lam_S^T P_pi Vbar``
    (:meth:`~reference.networked.matrix_free.MatrixFreeOperator.agent_forms`;
    ``proofs_notes/shadow-reward-gradient.md#route-1``, ``proofs_notes/matrix-free.md#reverse``).

    Args:
        model, policy, utilities: the instance.
        backend: ``"auto"`` (by predicted cost,
            :func:`~reference.networked.backends.transition_operator`), ``"dense"`` or
            ``"matrix-free"``.
        memory_limit: override of the memory limit (bytes).
        operator: a transition operator already built for ``model`` and ``policy``.
        values: ``"per-agent"``, ``"team"`` or ``"auto"`` (see :data:`Values`).
            ``"per-agent"`` on the matrix-free backend solves ``n`` right-hand sides, checked
            against the memory limit for ``n`` columns before the occupancy solve
            (:meth:`~reference.networked.matrix_free.MatrixFreeOperator.check_columns`).
        accuracy: requested relative accuracy of matrix-free solves.
    """
    check_utilities(model, utilities)
    if operator is not None and (operator.model is not model or operator.policy is not policy):
        raise ModelError("operator was built for a different model or policy")
    if values not in ("auto", "per-agent", "team"):
        raise ModelError(f"values = {values!r}, expected 'auto', 'per-agent' or 'team'")
    if operator is None:  # small models: the dense backend's fused routes, no operator object
        route = fused_route_for(model, policy, backend, memory_limit, accuracy)
        if isinstance(route, JointRoute):
            return _solve_joint(route, policy, utilities, values != "team")
        if route is not None:
            return _solve_halves(route, policy, utilities, values != "team")
    op = (
        operator
        if operator is not None
        else transition_operator(model, policy, backend, memory_limit, accuracy=accuracy)
    )
    per_agent = values == "per-agent" or (values == "auto" and op.backend == "dense")
    if isinstance(op, DenseOperator):
        return _solve_dense(op, utilities, per_agent)
    n = model.n
    if per_agent and isinstance(op, MatrixFreeOperator):
        try:  # before the occupancy solve, not at the value solve
            op.check_columns(n, solve=True)
        except MemoryLimitError as err:
            raise MemoryLimitError(
                f"values='per-agent': {err}; values='team' solves one column"
            ) from None
    states = model.states
    occ_solve = op.solve_occupancy(model.joint_rho())
    lam_S = occ_solve.x
    masses = states.marginals(lam_S, policy.observed)  # m_i(o), kept for the gradient
    occ = _local_occupancies(policy, masses)
    utility_values = np.array([f.value(lam) for f, lam in zip(utilities, occ, strict=True)])
    rewards = tuple(frozen(f.gradient(lam)) for f, lam in zip(utilities, occ, strict=True))
    tables = policy_reward_tables(policy, rewards)
    V: FloatArray | None
    if per_agent:
        R_pi = _policy_rewards(policy, tables)
        val_solve = op.solve_values(R_pi)
        V = val_solve.x
        Vbar = V.mean(axis=1)
        Rbar = R_pi.mean(axis=1)
        del R_pi
    else:
        Rbar = _team_policy_reward(policy, tables)
        val_solve = op.solve_values(Rbar)
        V, Vbar = None, val_solve.x
    # sum_{s: o_i(s) = o} lam_S(s) (P^{(i,b)} Vbar)(s) for every agent at once, by reverse-mode
    # differentiation of lam_S^T P_pi Vbar (proofs_notes/matrix-free.md#reverse)
    if isinstance(op, MatrixFreeOperator):
        forms = op.agent_forms(lam_S, Vbar)
    else:  # any other TransitionOperator: one apply_agent per agent
        forms = agent_forms_by_applications(op, lam_S, Vbar)
    weighted = np.subtract(Rbar, Vbar, out=streamed_empty(Rbar.shape))
    weighted *= lam_S
    advantages = states.marginals(weighted, policy.observed)
    grads = []
    for i in range(n):
        obs = policy.observed[i]
        # the other terms of Qbar^{(i)}(s, b) - Vbar(s) are functions of o_i(s) (i in N_i^beta)
        mass, advantage = masses[i], advantages[i]
        own = rewards[i][_own_digit(model, obs, i)]  # r_i(s_i(o), b)
        q_i = (own - tables[i][:, None]) * (mass / n)[:, None]
        q_i += advantage[:, None]
        q_i += model.gamma * forms[i]
        grads.append(frozen(q_i * policy.probs[i]))
    return NetworkedSolution(
        lam_S=_kept(lam_S),
        local_occupancy=occ,
        local_utility=frozen(utility_values),
        objective=float(utility_values.mean()),
        shadow_rewards=rewards,
        shadow_values=None if V is None else frozen(V),
        team_value=_kept(Vbar),
        gradient=tuple(grads),
        gradient_norm=gradient_norm(grads),
        occupancy_error_bound=occ_solve.error_bound,
        value_error_bound=val_solve.error_bound,
        backend=op.backend,
        iterations=occ_solve.iterations + val_solve.iterations,
    )


def _solve_dense(
    op: DenseOperator, utilities: Sequence[Utility], per_agent: bool
) -> NetworkedSolution:
    """:func:`solve` on the dense backend: the same equations, read through the operator's
    gathered tables (:class:`~reference.networked.transition.DenseLayout`) and with every
    ``P^{(i,b)} Vbar`` from one :meth:`DenseOperator.apply_agents` sweep."""
    model, layout = op.model, op.layout
    n, gamma = model.n, model.gamma
    if op.probs_stack is not None:
        return _solve_dense_stacked(op, op.probs_stack, utilities, per_agent)
    probs = op.local_probs  # pi_i(a_i | o_i(s)), (|S|, |A_i|)
    occ_solve = op.solve_occupancy(layout.rho)
    lam_S = read_only(occ_solve.x)
    occ = tuple(
        read_only(group_sum(lam_S[:, None] * p, g))
        for p, g in zip(probs, layout.own_groups, strict=True)
    )
    utility_values, rewards = evaluate_utilities(utilities, occ)
    own_rewards = [r[idx] for r, idx in zip(rewards, layout.own_index, strict=True)]
    # R_i^pi(s) = sum_{a_i} pi_i(a_i | o_i(s)) r_i(s_i, a_i), column i of (|S|, n)
    R_pi = np.stack(
        [np.einsum("sa,sa->s", p, r) for p, r in zip(probs, own_rewards, strict=True)], axis=1
    )
    Rbar = R_pi.mean(axis=1)
    V: FloatArray | None
    if per_agent:
        val_solve = op.solve_values(R_pi)
        V = read_only(val_solve.x)
        Vbar = V.mean(axis=1)
    else:
        val_solve = op.solve_values(Rbar)
        V, Vbar = None, val_solve.x
    read_only(Vbar)
    agent_values = op.apply_agents(Vbar)
    gap = (Rbar - Vbar)[:, None]
    grads = []
    for i in range(n):
        # Qbar^{(i)}(s, b) - Vbar(s), times lam_S(s) pi_i(b | o_i(s))
        q_i = own_rewards[i] - R_pi[:, i, None]
        q_i /= n
        q_i += gap
        q_i += gamma * agent_values[i]
        q_i *= lam_S[:, None] * probs[i]
        grads.append(read_only(group_sum(q_i, layout.obs_groups[i])))
    return NetworkedSolution(
        lam_S=lam_S,
        local_occupancy=occ,
        local_utility=read_only(utility_values),
        objective=float(utility_values.mean()),
        shadow_rewards=rewards,
        shadow_values=V,
        team_value=Vbar,
        gradient=tuple(grads),
        gradient_norm=gradient_norm(grads),
        occupancy_error_bound=occ_solve.error_bound,
        value_error_bound=val_solve.error_bound,
        backend=op.backend,
        iterations=0,
    )


def _solve_dense_stacked(
    op: DenseOperator, probs: FloatArray, utilities: Sequence[Utility], per_agent: bool
) -> NetworkedSolution:
    """:func:`_solve_dense` when every agent has the same local sizes: the same equations
    with the agents as one array axis (``probs`` is ``pi_i(a | o_i(s))``, ``(|S|, n, |A|)``),
    so that the work per call is a fixed number of array operations, not a few per agent."""
    model, layout = op.model, op.layout
    n = model.n
    lam_S, _, occupancy_bound = op.solve_certified(layout.rho, transpose=True)
    lam_S.setflags(write=False)
    weighted = lam_S[:, None, None] * probs  # (|S|, n, |A|)
    # lam_i[x, a] = sum_s 1[s_i(s) = x] lam_S(s) pi_i(a | o_i(s)), (n, |S_i|, |A|)
    occ_stack = read_only(
        np.matmul(cast(FloatArray, layout.own_onehot), weighted.transpose(1, 0, 2))
    )
    utility_values, reward_stack = evaluate_utilities_stacked(utilities, occ_stack)
    # r_i(s_i(s), a), (|S|, n, |A|), and R_i^pi(s) = sum_a pi_i(a | o_i(s)) r_i(s_i(s), a)
    n_actions = model.n_actions[0]
    own_rewards = reward_stack.reshape(-1, n_actions)[cast(IntArray, layout.own_flat)]
    R_pi = np.einsum("sia,sia->si", probs, own_rewards)
    Rbar = R_pi.sum(axis=1)
    Rbar /= n
    V: FloatArray | None
    if per_agent:
        V, _, value_bound = op.solve_certified(R_pi, transpose=False)
        V.setflags(write=False)
        Vbar = V.sum(axis=1)
        Vbar /= n
    else:
        Vbar, _, value_bound = op.solve_certified(Rbar, transpose=False)
        V = None
    Vbar.setflags(write=False)
    # (Qbar^{(i)}(s, b) - Vbar(s)) lam_S(s) pi_i(b | o_i(s)), the discounted term from
    # pi_i(b | o_i(s)) (P^{(i,b)} Vbar)(s)
    q = own_rewards - R_pi[:, :, None]
    q /= n
    q += (Rbar - Vbar)[:, None, None]
    q *= weighted
    q += (model.gamma * lam_S)[:, None, None] * op.apply_agents_weighted(Vbar)
    # grad_i[o, b] = sum_{s: o_i(s) = o} q[s, i, b], every agent and action in one bincount
    offsets = layout.obs_offsets
    summed = cast(FloatArray, np.bincount(
        cast(IntArray, layout.obs_action_flat),
        weights=q.reshape(-1),
        minlength=offsets[-1] * n_actions,
    )).reshape(offsets[-1], n_actions)
    summed.setflags(write=False)
    return NetworkedSolution(
        lam_S=lam_S,
        local_occupancy=tuple(occ_stack),
        local_utility=read_only(utility_values),
        objective=float(utility_values.sum()) / n,
        shadow_rewards=tuple(reward_stack),
        shadow_values=V,
        team_value=Vbar,
        gradient=tuple([summed[offsets[i] : offsets[i + 1]] for i in range(n)]),
        gradient_norm=float(np.sqrt(np.vdot(summed, summed))),
        occupancy_error_bound=occupancy_bound,
        value_error_bound=value_bound,
        backend=op.backend,
        iterations=0,
    )


def _fused_solution(
    lam_S: FloatArray,
    occ_stack: FloatArray,
    utility_values: FloatArray,
    reward_stack: FloatArray,
    V: FloatArray | None,
    Vbar: FloatArray,
    summed: FloatArray,
    obs_slices: Sequence[slice],
    occupancy_bound: float,
    value_bound: float,
) -> NetworkedSolution:
    """The solution record of a fused dense route from its stacked ``(n, |S_i|, |A_i|)``
    occupancies and rewards: ``summed`` holds every agent's gradient rows (``obs_slices``),
    made read-only here; the objective is the mean utility."""
    summed.setflags(write=False)
    return NetworkedSolution(
        lam_S=lam_S,
        local_occupancy=tuple(occ_stack),
        local_utility=read_only(utility_values),
        objective=sum(utility_values.tolist()) / len(occ_stack),
        shadow_rewards=tuple(reward_stack),
        shadow_values=V,
        team_value=Vbar,
        gradient=tuple([summed[rows] for rows in obs_slices]),
        gradient_norm=math.sqrt(float(np.dot(summed.reshape(-1), summed.reshape(-1)))),
        occupancy_error_bound=occupancy_bound,
        value_error_bound=value_bound,
        backend="dense",
        iterations=0,
    )


def _solve_joint(
    route: JointRoute,
    policy: LocalizedSoftmaxPolicy,
    utilities: Sequence[Utility],
    per_agent: bool,
) -> NetworkedSolution:
    """:func:`solve` on the dense backend's joint route (:class:`JointRoute`: small models
    whose agents have equal local sizes), in a fixed number of array operations.

    The same equations as :func:`_solve_dense`, written over the joint state-action table
    (``proofs_notes/occupancy-and-flow.md#fused-joint-route``)::

        pi(a | s) = prod_i pi_i(a_i | o_i(s)),   I - gamma P_pi = I - gamma sum_a pi(a|s) P(.|s, a)
        W(s, a) = lam_S(s) pi(a | s) (Qbar(s, a) - Vbar(s)),
        Qbar(s, a) - Vbar(s) = (1/n) sum_i r_i(s_i, a_i) + gamma (P(.|s, a) Vbar) - Vbar(s)
        lam_i[x, b] = sum_s sum_{a: a_i = b} 1[s_i = x] lam_S(s) pi(a | s)
        grad_{theta_i}[o, b] = sum_{s: o_i(s) = o} sum_{a: a_i = b} W(s, a)

    The last line is route 1's ``sum_s lam_S(s) pi_i(b|o) (Qbar^{(i)}(s, b) - Vbar(s))`` with
    ``pi_i(b|o) Qbar^{(i)}(s, b) = sum_{a: a_i = b} pi(a | s) Qbar(s, a)``.  Both systems share
    one LU factorisation of ``(I - gamma P_pi)^T``; each solve is certified from its residual
    ``(I - gamma P_pi) x - b`` evaluated with the matrix that was factored, exactly as
    :meth:`DenseOperator.solve_certified` does.  The inputs were validated by :func:`solve`
    and the policy's constructor; the utilities' domain check runs on the occupancies.
    """
    n = route.local_shape[0]
    g = route.gamma
    probs = np.concatenate(policy.probs)  # the agents' pi_i(b | o) stacked, (sum_i |O_i|, B)
    pi = np.multiply.reduce(probs.take(route.policy_index), axis=0)  # pi(a | s), (|S|, |A|)
    system = _vecmat(pi, route.system_kernel)  # -gamma P_pi
    system += route.identity
    lu, piv, info = _getrf(system.T)  # (I - gamma P_pi)^T, column-major: factored as it stands
    if info != 0:
        raise SolverError(
            f"the LU factorisation of I - gamma P_pi failed (LAPACK getrf info = {info})"
        )
    n_joint = system.shape[0]
    rounding = (n_joint + 2) * EPS_F64
    # occupancy: rows [residual, lam_S] of one buffer, so that one pass gives both l1 norms
    occ_rows = np.empty((2, n_joint))
    lam_S = occ_rows[1]
    lam_S[...] = route.rho
    _solved_into(_getrs(lu, piv, lam_S, trans=0, overwrite_b=True)[0], lam_S)
    np.matmul(lam_S, system, out=occ_rows[0])  # (I - gamma P_pi)^T lam_S
    occ_rows[0] -= route.rho
    res, x_norm = np.add.reduce(np.abs(occ_rows), axis=1).tolist()
    occupancy_bound = (res + rounding * ((1 + g) * x_norm + route.rho_l1)) / (1 - g)
    lam_S.setflags(write=False)
    # a finite l1 norm makes every lam_S(s) finite, hence every lam_i: lam_i sums products
    # of lam_S(s) and probabilities, at most 1/(1-gamma) in total
    finite = math.isfinite(x_norm)
    lam_pi = lam_S[:, None] * pi  # lam(s, a)
    occ_stack = (route.occupancy_map @ lam_pi.reshape(-1)).reshape(route.local_shape)
    occ_stack.setflags(write=False)
    utility_values, reward_stack = evaluate_utilities_stacked(
        utilities, occ_stack, finite=finite
    )
    # R_i^pi(s) = T_i[o_i(s)], T_i[o] = sum_b pi_i(b | o) r_i(s_i(o), b)
    table = _vecdot(probs, reward_stack.take(route.own_of_obs))
    columns = n if per_agent else 1
    # value system: rows [residual, V, R^pi] of one buffer, columns laid out (column, s)
    val_rows = np.empty((3, columns, n_joint))
    if per_agent:
        table.take(route.obs_rows, out=val_rows[2])
    else:
        np.matmul(route.team_weights, table.take(route.obs_rows), out=val_rows[2, 0])
    values = val_rows[1].T  # (|S|, columns)
    values[...] = val_rows[2].T
    _solved_into(_getrs(lu, piv, values, trans=1, overwrite_b=True)[0], values)
    np.matmul(val_rows[1], system.T, out=val_rows[0])  # ((I - gamma P_pi) x)^T
    val_rows[0] -= val_rows[2]
    res, x_norm, b_norm = np.maximum.reduce(
        np.abs(val_rows).reshape(3, -1), axis=1
    ).tolist()
    value_bound = (res + rounding * ((1 + g) * x_norm + b_norm)) / (1 - g)
    V: FloatArray | None
    if per_agent:
        V = read_only(values)
        Vbar = route.team_weights @ val_rows[1]
    else:
        V, Vbar = None, val_rows[1, 0]
    Vbar.setflags(write=False)
    # W(s, a) = lam(s, a) (Qbar(s, a) - Vbar(s)); its (s, i, b) marginals; grouped onto (o, b)
    advantage = route.q_kernel @ np.concatenate((Vbar, reward_stack.reshape(-1)))
    advantage *= lam_pi.reshape(-1)
    marginals = advantage.reshape(lam_pi.shape) @ route.action_onehot
    summed = cast(FloatArray, np.bincount(
        route.obs_action_flat,
        weights=marginals.reshape(-1),
        minlength=probs.size,
    )).reshape(probs.shape)
    return _fused_solution(
        lam_S, occ_stack, utility_values, reward_stack, V, Vbar, summed, route.obs_slices,
        occupancy_bound, value_bound,
    )


def _solve_halves(
    route: HalvesRoute,
    policy: LocalizedSoftmaxPolicy,
    utilities: Sequence[Utility],
    per_agent: bool,
) -> NetworkedSolution:
    """:func:`solve` on the dense backend's halves route (:class:`HalvesRoute`: models of 5
    and 6 binary agents, or the like), in a fixed number of array operations over the two
    halves' concatenated action tables (``proofs_notes/occupancy-and-flow.md#fused-halves-route``)::

        gamma P_pi(s' | s) = (gamma M_H1)(s'_H1 | s) M_H2(s'_H2 | s),
        M_H(x | s) = sum_{a_H} pi_H(a_H | s) P_H(x | s, a_H)
        W_H(s, a_H) = lam_S(s) pi_H(a_H | s) (Qbar^{(H)}(s, a_H) - Vbar(s)),
        Qbar^{(H)}(s, a_H) - Vbar(s) = (1/n) sum_{i in H} r_i(s_i, a_i)
            + (1/n) sum_{j not in H} R_j^pi(s) + gamma sum_x P_H(x | s, a_H) u_H(s, x) - Vbar(s)
        u_H1(s, x_1) = sum_{x_2} M_H2(x_2 | s) Vbar(x_1, x_2) (and symmetrically)
        grad_{theta_i}[o, b] = sum_{s: o_i(s) = o} sum_{a_H: a_i = b} W_H(s, a_H)    (i in H)

    ``Qbar^{(H)}`` is ``Qbar`` averaged over the other half's actions under its policy, so the
    last line is the joint route's grouped sum of ``W`` taken in two steps.  Solves and
    certificates as in :func:`_solve_joint`.
    """
    n = route.local_shape[0]
    g = route.gamma
    # the agents' pi_i(b | o) stacked, with a row of ones for the shorter half's padding
    probs = np.concatenate((*policy.probs, route.ones))
    pi = np.multiply.reduce(probs.take(route.policy_index), axis=0)  # [pi_H1 | pi_H2]
    factors = _vecmat(pi, route.kernel)  # [gamma M_H1 | M_H2], (|S|, Y)
    split = route.split
    n_joint = pi.shape[0]
    system = (factors[:, :split, None] * factors[:, None, split:]).reshape(n_joint, n_joint)
    np.subtract(route.identity, system, out=system)  # I - gamma P_pi
    lu, piv, info = _getrf(system.T)
    if info != 0:
        raise SolverError(
            f"the LU factorisation of I - gamma P_pi failed (LAPACK getrf info = {info})"
        )
    rounding = (n_joint + 2) * EPS_F64
    occ_rows = np.empty((2, n_joint))
    lam_S = occ_rows[1]
    lam_S[...] = route.rho
    _solved_into(_getrs(lu, piv, lam_S, trans=0, overwrite_b=True)[0], lam_S)
    np.matmul(lam_S, system, out=occ_rows[0])
    occ_rows[0] -= route.rho
    res, x_norm = np.add.reduce(np.abs(occ_rows), axis=1).tolist()
    occupancy_bound = (res + rounding * ((1 + g) * x_norm + route.rho_l1)) / (1 - g)
    lam_S.setflags(write=False)
    finite = math.isfinite(x_norm)  # as in _solve_joint
    lam_pi = lam_S[:, None] * pi  # lam_S(s) pi_H(a_H | s)
    occ_stack = (route.occupancy_map @ lam_pi.reshape(-1)).reshape(route.local_shape)
    occ_stack.setflags(write=False)
    utility_values, reward_stack = evaluate_utilities_stacked(
        utilities, occ_stack, finite=finite
    )
    table = _vecdot(probs[:-1], reward_stack.take(route.own_of_obs))
    # rows R_0^pi .. R_{n-1}^pi, Vbar of the other half's terms
    other = np.empty((n + 1, n_joint))
    table.take(route.obs_rows, out=other[:n])
    columns = n if per_agent else 1
    val_rows = np.empty((3, columns, n_joint))
    if per_agent:
        val_rows[2] = other[:n]
    else:
        np.matmul(route.team_weights, other[:n], out=val_rows[2, 0])
    values = val_rows[1].T  # (|S|, columns)
    values[...] = val_rows[2].T
    _solved_into(_getrs(lu, piv, values, trans=1, overwrite_b=True)[0], values)
    np.matmul(val_rows[1], system.T, out=val_rows[0])
    val_rows[0] -= val_rows[2]
    res, x_norm, b_norm = np.maximum.reduce(
        np.abs(val_rows).reshape(3, -1), axis=1
    ).tolist()
    value_bound = (res + rounding * ((1 + g) * x_norm + b_norm)) / (1 - g)
    V: FloatArray | None = read_only(values) if per_agent else None
    Vbar = other[n]
    if per_agent:
        np.matmul(route.team_weights, val_rows[1], out=Vbar)
    else:
        Vbar[...] = val_rows[1, 0]
    Vbar.setflags(write=False)
    grid = Vbar.reshape(split, -1)  # Vbar(x_1, x_2)
    u = np.empty(factors.shape)  # [u_H1 | u_H2]
    np.matmul(factors[:, split:], grid.T, out=u[:, :split])
    np.matmul(factors[:, :split], grid, out=u[:, split:])
    advantage = _matvec(route.kernel, u)  # gamma sum_x P_H(x | s, a_H) u_H(s, x)
    advantage += (route.reward_map @ reward_stack.reshape(-1)).reshape(advantage.shape)
    advantage += other.T @ route.other_weights
    advantage *= lam_pi
    marginals = advantage @ route.action_onehot
    n_actions = probs.shape[1]
    summed = cast(FloatArray, np.bincount(
        route.obs_action_flat,
        weights=marginals.reshape(-1),
        minlength=probs.size - n_actions,
    )).reshape(-1, n_actions)
    return _fused_solution(
        lam_S, occ_stack, utility_values, reward_stack, V, Vbar, summed, route.obs_slices,
        occupancy_bound, value_bound,
    )


def _solved_into(x: FloatArray, place: FloatArray) -> None:
    """Make ``place`` hold LAPACK's solution ``x``: ``getrs`` with ``overwrite_b`` solves in
    place and returns its argument itself when the right-hand side is a column-major float64
    array, as every caller's is; otherwise the solution is copied there (the certificates
    read it from ``place``)."""
    if x is not place:
        place[...] = x


def per_agent_values(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    solution: NetworkedSolution,
    *,
    memory_limit: float | None = None,
) -> LinearSolve:
    """``(|S|, n)`` shadow values ``V_i = (I - gamma P_pi)^{-1} R_i^pi`` with their
    certified inf-norm error.

    ``solution.shadow_values`` (error ``solution.value_error_bound``) when :func:`solve`
    computed them; otherwise one value solve with ``n`` right-hand sides on an automatically
    chosen backend, whose own certificate is returned.
    """
    if solution.shadow_values is not None:
        return LinearSolve(
            x=solution.shadow_values,
            residual=math.nan,  # solve() keeps only the bound
            error_bound=solution.value_error_bound,
            norm="inf",
        )
    op = transition_operator(model, policy, "auto", memory_limit)
    tables = policy_reward_tables(policy, solution.shadow_rewards)
    solved = op.solve_values(_policy_rewards(policy, tables))
    return replace(solved, x=frozen(solved.x))


def gradient_contributions(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    solution: NetworkedSolution,
    *,
    memory_limit: float | None = None,
) -> tuple[tuple[FloatArray, ...], ...]:
    """``G[i][j] = sum_{s,a} lam(s,a) Q_j(s,a) score_i(a_i | o_i(s))``, shape
    ``(|O_i|, |A_i|)``: agent ``j``'s shadow Q against agent ``i``'s score, so that
    ``grad_{theta_i} F = (1/n) sum_j G[i][j]``.

    Route 1 of :func:`solve` applied to each ``V_j`` instead of ``Vbar``::

        G[i][j][o, b] = sum_{s: o_i(s) = o} lam_S(s) pi_i(b|o) (Q_j^{(i)}(s, b) - V_j(s))
        Q_j^{(i)}(s, b) = r_j^{(i)}(s, b) + gamma (P^{(i,b)} V_j)(s)

    with ``r_i^{(i)}(s, b) = r_i(s_i, b)`` and ``r_j^{(i)} = R_j^pi(s)`` for ``j != i`` (agent
    ``j``'s reward does not see ``a_i``).  ``n^2`` applications of
    :meth:`TransitionOperator.apply_agent`, no joint Q table
    (``proofs_notes/truncated-gradient.md#occupancy-identity``).
    """
    values = per_agent_values(model, policy, solution, memory_limit=memory_limit).x
    op = transition_operator(model, policy, "auto", memory_limit)
    states = model.states
    tables = policy_reward_tables(policy, solution.shadow_rewards)
    out = []
    for i in range(model.n):
        obs = policy.observed[i]
        weight = solution.lam_S[:, None] * states.lift(policy.probs[i], obs)
        own = states.lift(solution.shadow_rewards[i], (i,))
        row = []
        for j in range(model.n):
            v_j = np.ascontiguousarray(values[:, j])
            q = model.gamma * op.apply_agent(i, v_j)
            q += own if j == i else states.lift(tables[j], policy.observed[j])[:, None]
            q -= v_j[:, None]
            q *= weight
            row.append(frozen(states.marginal(q, obs)))
        out.append(tuple(row))
    return tuple(out)


def gradient_norm(gradient: Sequence[FloatArray]) -> float:
    """Euclidean norm over all agents' ``theta_i[o_i, a_i]`` entries."""
    return float(np.sqrt(sum(float(np.sum(np.square(g))) for g in gradient)))


def occupancy_jacobian_bytes(policy: LocalizedSoftmaxPolicy, i: int) -> int:
    """Predicted peak bytes of :func:`local_occupancy_jacobian` for agent ``i``, besides the
    occupancy solve's own work (which the operator checks itself) and the cached observation
    index.  With ``m = |O_i| |A_i|`` right-hand sides, ``a = |A_i|`` and ``|S|`` joint states,
    in floats of ``|S|``: building the right-hand sides holds them (``m``), ``pi_i`` (``a``),
    the mask and its float copy of the indicator (2), one ``u_{ob}`` with its two
    temporaries (``3a``) and an agent application's result and its scaled copy (2); the
    solve holds the right-hand sides and the solutions (``2m``); then, the right-hand sides
    released, the solutions, ``pi_j`` and the weighted columns ``d lam_S pi_j``
    (``m + a_j (m + 1)``), one agent ``j`` at a time."""
    model = policy.model
    n_obs, n_act = (int(k) for k in policy.probs[i].shape)
    m = n_obs * n_act
    widest = max(model.n_actions)
    floats = max(m + 4 * n_act + 4, 2 * m, m + widest * (m + 1))
    return 8 * floats * model.states.size


def local_occupancy_jacobian(
    op: TransitionOperator,
    lam_S: FloatArray,
    i: int,
    *,
    memory_limit: float | None = None,
) -> tuple[FloatArray, ...]:
    """``d lam_j / d theta_i`` for every agent ``j``, shape ``(|S_j|, |A_j|, |O_i|, |A_i|)``.

    Differentiating the flow equation ``(I - gamma P_pi^T) lam_S = rho`` gives
    ``(I - gamma P_pi^T) d lam_S = gamma (d P_pi)^T lam_S`` with
    ``(d P_pi / d theta_i[o, b])^T lam_S = sum_{s, c} u_{ob}(s, c) P^{(i,c)}(. | s)`` and
    ``u_{ob}(s, c) = lam_S(s) 1[o_i(s) = o] pi_i(c|o) (1[c = b] - pi_i(b|o))``; then
    ``d lam_j = scatter_j(d lam_S pi_j) + 1[j = i] scatter_i(u_{ob})``
    (``proofs_notes/shadow-reward-gradient.md#route-2``).

    Its ``|O_i| |A_i|`` joint right-hand sides and solutions are checked against the memory
    limit (:func:`occupancy_jacobian_bytes`) before anything of their size is allocated.
    """
    policy, model = op.policy, op.model
    states = model.states
    check_memory(
        occupancy_jacobian_bytes(policy, i),
        f"the occupancy Jacobian of agent {i} ({policy.probs[i].size} right-hand sides of "
        f"{states.size} joint states)",
        memory_limit,
    )
    n_obs, n_act = policy.probs[i].shape
    obs = policy.observation_index(i)
    pi_i = policy.local_action_probs(i)
    nS = states.size
    rhs = np.empty((nS, n_obs * n_act))
    direct = np.empty((model.n_states[i], n_act, n_obs * n_act))
    for o in range(n_obs):
        mask = (obs == o).astype(np.float64) * lam_S
        for b in range(n_act):
            u = mask[:, None] * pi_i * ((np.arange(n_act) == b) - pi_i[:, b : b + 1])
            rhs[:, o * n_act + b] = model.gamma * op.apply_agent_transpose(i, u)
            direct[:, :, o * n_act + b] = states.marginal(u, (i,))
    del pi_i, mask, u  # not held through the solve
    d_lam_S = op.solve_occupancy(rhs).x
    del rhs  # not held beside the weighted columns below
    out = []
    for j in range(model.n):
        pi_j = policy.local_action_probs(j)
        n_sj, n_aj = model.n_states[j], model.n_actions[j]
        # d lam_S(s) pi_j(a | s) by one broadcast product (no temporary beside it)
        cols = (d_lam_S[:, None, :] * pi_j[:, :, None]).reshape(nS, n_aj * n_obs * n_act)
        jac = states.marginal(cols, (j,)).reshape(n_sj, n_aj, n_obs * n_act)
        del pi_j, cols
        if j == i:
            jac = jac + direct
        out.append(jac.reshape(n_sj, n_aj, n_obs, n_act))
    return tuple(out)


def gradient_chain_rule(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    utilities: Sequence[Utility],
    *,
    backend: Backend = "auto",
    memory_limit: float | None = None,
    accuracy: float | None = None,
) -> tuple[FloatArray, ...]:
    """``grad_{theta_i} F = (1/n) sum_j (d lam_j / d theta_i)^T r_j`` (route 2).

    Uses :func:`local_occupancy_jacobian`, one occupancy solve per agent with
    ``|O_i| |A_i|`` right-hand sides; independent of shadow values and Q-functions.
    """
    check_utilities(model, utilities)
    op = transition_operator(model, policy, backend, memory_limit, accuracy=accuracy)
    lam_S = op.solve_occupancy(model.joint_rho()).x
    occ = local_occupancies(policy, lam_S)
    rewards = [f.gradient(lam) for f, lam in zip(utilities, occ, strict=True)]
    grads = []
    for i in range(model.n):
        jac = local_occupancy_jacobian(op, lam_S, i, memory_limit=memory_limit)
        total = sum(
            np.einsum("ja,jaob->ob", r_j, J_j) for r_j, J_j in zip(rewards, jac, strict=True)
        )
        grads.append(frozen(np.asarray(total) / model.n))
    return tuple(grads)


def shadow_q(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    solution: NetworkedSolution,
    *,
    memory_limit: float | None = None,
) -> tuple[FloatArray, ...]:
    """Joint shadow Q-functions ``Q_i(s, a) = r_i(s_i, a_i) + gamma sum_{s'} P(s'|s,a) V_i(s')``.

    One ``(|S|, |A|)`` table per agent (joint actions mixed radix, agent 0 most
    significant); the predicted ``(n + 2) |S| |A|`` floats are checked against the memory
    limit.  The values are :func:`per_agent_values` (solved here if ``solution`` holds only
    the team value).  :func:`iter_shadow_q` yields the same tables one at a time.
    """
    nS, nA, n = model.states.size, model.actions.size, model.n
    check_memory(8 * (n + 2) * nS * nA, f"{n} joint shadow Q tables", memory_limit)
    return tuple(iter_shadow_q(model, policy, solution, memory_limit=memory_limit))


def iter_shadow_q(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    solution: NetworkedSolution,
    *,
    memory_limit: float | None = None,
) -> Iterator[FloatArray]:
    """``Q_0, Q_1, ...`` of :func:`shadow_q`, one ``(|S|, |A|)`` table at a time.

    Memory: one table, the reward broadcast and the contraction's output, ``3 |S| |A|``
    floats (checked before the first table), plus the ``(|S|, n)`` per-agent values.
    """
    nS, nA, n = model.states.size, model.actions.size, model.n
    what = f"a joint shadow Q table ({nS} joint states x {nA} joint actions)"
    check_memory(8 * (3 * nS * nA + nS * n), what, memory_limit)
    values = per_agent_values(model, policy, solution, memory_limit=memory_limit).x
    factors = [model.local_kernel_factors(j) for j in range(n)]
    states, actions = model.states, model.actions
    for i in range(n):
        future = contract_next_state(factors, values[:, i], model.n_states)
        future *= model.gamma
        # r_i(s_i, a_i) read at every (s, a): the state lift of the action lift
        reward = states.lift(actions.lift(solution.shadow_rewards[i].T, (i,)).T, (i,))
        future += reward
        del reward
        yield read_only(future)


def team_q(shadow_qs: Sequence[FloatArray]) -> FloatArray:
    """``Qbar(s, a) = (1/n) sum_j Q_j(s, a)``, shape ``(|S|, |A|)``."""
    return frozen(np.mean(np.stack(list(shadow_qs)), axis=0))


def score_contraction(
    policy: LocalizedSoftmaxPolicy,
    lam_S: FloatArray,
    table: FloatArray,
    i: int,
    joint_policy: FloatArray | None = None,
) -> FloatArray:
    """``sum_{s,a} lam_S(s) pi(a|s) table(s, a) score_i(a_i | o_i(s))``, shape ``(|O_i|, |A_i|)``.

    With the softmax score ``1[o_i(s) = o] (1[a_i = b] - pi_i(b|o))`` this is the grouped
    sum over ``o_i(s) = o`` of ``W_i(s, b) - pi_i(b|o) W(s)``, where ``W(s, a) =
    lam_S(s) pi(a|s) table(s, a)``, ``W_i`` sums ``W`` over ``a_-i`` with ``a_i = b`` and
    ``W(s)`` over all ``a``.  ``table`` is a joint ``(|S|, |A|)`` array (small ``n``).
    """
    model = policy.model
    pi = policy.joint_matrix() if joint_policy is None else joint_policy
    weighted = lam_S[:, None] * pi * table
    per_agent = weighted.reshape((model.states.size, *model.n_actions))
    axes = tuple(1 + j for j in range(model.n) if j != i)
    marginal = per_agent.sum(axis=axes)  # (|S|, |A_i|)
    terms = marginal - policy.local_action_probs(i) * weighted.sum(axis=1)[:, None]
    return frozen(model.states.marginal(terms, policy.observed[i]))


def gradient_joint_q(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    solution: NetworkedSolution,
    *,
    memory_limit: float | None = None,
) -> tuple[FloatArray, ...]:
    """Route 3: ``grad_i F = sum_{s,a} lam(s,a) Qbar(s,a) score_i(a_i|o_i(s))`` on joint tables.

    ``lam(s, a) = lam_S(s) pi(a|s)`` and ``Qbar`` come from the joint policy matrix and
    :func:`shadow_q`; the contraction with the score is :func:`score_contraction`.
    """
    qbar = team_q(shadow_q(model, policy, solution, memory_limit=memory_limit))
    pi = policy.joint_matrix(memory_limit)
    return tuple(score_contraction(policy, solution.lam_S, qbar, i, pi) for i in range(model.n))
