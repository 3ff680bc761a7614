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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from reference._arrays import FloatArray, IntArray, frozen
from reference.errors import ModelError
from reference.memory import check_memory
from reference.networked.model import NetworkedMDP
from reference.networked.policy import LocalizedSoftmaxPolicy
from reference.networked.transition import (
    TransitionOperator,
    contract_next_state,
    transition_operator,
)
from reference.networked.utilities import Utility

__all__ = [
    "NetworkedSolution",
    "check_utilities",
    "gradient_chain_rule",
    "gradient_joint_q",
    "gradient_norm",
    "local_occupancies",
    "local_occupancy_jacobian",
    "objective",
    "score_contraction",
    "shadow_q",
    "solve",
    "team_q",
]

Backend = Literal["auto", "dense"]


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
        shadow_values: ``(|S|, n)``, column ``i`` is ``V_i = (I - gamma P_pi)^{-1} R_i^pi``.
        team_value: ``(|S|,)`` ``Vbar`` = row mean of ``shadow_values``.
        gradient: ``grad_{theta_i} F`` per agent, shape ``(|O_i|, |A_i|)``.
        gradient_norm: Euclidean norm of the concatenated gradient.
        occupancy_error_bound: certified l1 error of ``lam_S``.
        value_error_bound: certified inf-norm error of ``shadow_values``.
        backend: name of the transition backend used.
    """

    lam_S: FloatArray
    local_occupancy: tuple[FloatArray, ...]
    local_utility: FloatArray
    objective: float
    shadow_rewards: tuple[FloatArray, ...]
    shadow_values: FloatArray
    team_value: FloatArray
    gradient: tuple[FloatArray, ...]
    gradient_norm: float
    occupancy_error_bound: float
    value_error_bound: float
    backend: str


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


def _scatter(index: IntArray, values: FloatArray, n_rows: int) -> FloatArray:
    """``out[k, c] = sum_{s: index[s] = k} values[s, c]`` (grouped sums by bincount)."""
    cols = [
        np.bincount(index, weights=values[:, c], minlength=n_rows) for c in range(values.shape[1])
    ]
    return np.stack(cols, axis=1)


def local_occupancies(policy: LocalizedSoftmaxPolicy, lam_S: FloatArray) -> tuple[FloatArray, ...]:
    """``lam_i[s_i, a_i] = sum_s lam_S(s) 1[s_i(s) = s_i] pi_i(a_i | o_i(s))`` for every agent.

    Args:
        policy: the localized policy.
        lam_S: ``(|S|,)`` global state occupancy (unnormalised or normalised; linear).
    """
    model = policy.model
    digits = model.states.digits
    return tuple(
        frozen(
            _scatter(digits[:, i], lam_S[:, None] * policy.local_action_probs(i), model.n_states[i])
        )
        for i in range(model.n)
    )


def _policy_rewards(policy: LocalizedSoftmaxPolicy, rewards: Sequence[FloatArray]) -> FloatArray:
    """``(|S|, n)``: ``R_i^pi(s) = sum_{a_i} pi_i(a_i|o_i(s)) r_i(s_i, a_i)``."""
    digits = policy.model.states.digits
    cols = [
        np.einsum("sa,sa->s", policy.local_action_probs(i), rewards[i][digits[:, i]])
        for i in range(policy.model.n)
    ]
    return np.stack(cols, axis=1)


def objective(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    utilities: Sequence[Utility],
    *,
    backend: Backend = "auto",
    memory_limit: float | None = None,
) -> float:
    """``F(theta) = (1/n) sum_i f_i(lam_i^theta)`` (one occupancy solve)."""
    check_utilities(model, utilities)
    op = transition_operator(model, policy, backend, memory_limit)
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
) -> NetworkedSolution:
    """Occupancies, objective, shadow rewards and values, and ``grad F`` (route 1).

    Cost: one LU factorisation of ``I - gamma P_pi``, one occupancy solve, one value
    solve with ``n`` right-hand sides, and one :meth:`TransitionOperator.apply_agent`
    per agent.  See ``proofs_notes/shadow-reward-gradient.md#route-1``.
    """
    check_utilities(model, utilities)
    if operator is not None and (operator.model is not model or operator.policy is not policy):
        raise ModelError("operator was built for a different model or policy")
    op = (
        operator
        if operator is not None
        else transition_operator(model, policy, backend, memory_limit)
    )
    n = model.n
    occ_solve = op.solve_occupancy(model.joint_rho())
    lam_S = occ_solve.x
    occ = local_occupancies(policy, lam_S)
    values = np.array([f.value(lam) for f, lam in zip(utilities, occ, strict=True)])
    rewards = tuple(frozen(f.gradient(lam)) for f, lam in zip(utilities, occ, strict=True))
    R_pi = _policy_rewards(policy, rewards)
    val_solve = op.solve_values(R_pi)
    V = val_solve.x
    Vbar = V.mean(axis=1)
    Rbar = R_pi.mean(axis=1)
    digits = model.states.digits
    grads = []
    for i in range(n):
        # Qbar^{(i)}(s, b) = (1/n)(r_i(s_i, b) - R_i^pi(s)) + Rbar(s) + gamma (P^{(i,b)} Vbar)(s)
        q_i = (rewards[i][digits[:, i]] - R_pi[:, i : i + 1]) / n + Rbar[:, None]
        q_i = q_i + model.gamma * op.apply_agent(i, Vbar)
        pi_i = policy.local_action_probs(i)
        weights = lam_S[:, None] * pi_i * (q_i - Vbar[:, None])
        grads.append(
            frozen(_scatter(policy.observation_index(i), weights, policy.probs[i].shape[0]))
        )
    return NetworkedSolution(
        lam_S=frozen(lam_S),
        local_occupancy=occ,
        local_utility=frozen(values),
        objective=float(values.mean()),
        shadow_rewards=rewards,
        shadow_values=frozen(V),
        team_value=frozen(Vbar),
        gradient=tuple(grads),
        gradient_norm=gradient_norm(grads),
        occupancy_error_bound=occ_solve.error_bound,
        value_error_bound=val_solve.error_bound,
        backend=op.backend,
    )


def gradient_norm(gradient: Sequence[FloatArray]) -> float:
    """Euclidean norm over all agents' ``theta_i[o_i, a_i]`` entries."""
    return float(np.sqrt(sum(float(np.sum(np.square(g))) for g in gradient)))


def local_occupancy_jacobian(
    op: TransitionOperator, lam_S: FloatArray, i: int
) -> tuple[FloatArray, ...]:
    """``d lam_j / d theta_i`` for every agent ``j``, shape ``(|S_j|, |A_j|, |O_i|, |A_i|)``.

    Differentiating the flow equation ``(I - gamma P_pi^T) lam_S = rho`` gives
    ``(I - gamma P_pi^T) d lam_S = gamma (d P_pi)^T lam_S`` with
    ``(d P_pi / d theta_i[o, b])^T lam_S = sum_{s, c} u_{ob}(s, c) P^{(i,c)}(. | s)`` and
    ``u_{ob}(s, c) = lam_S(s) 1[o_i(s) = o] pi_i(c|o) (1[c = b] - pi_i(b|o))``; then
    ``d lam_j = scatter_j(d lam_S pi_j) + 1[j = i] scatter_i(u_{ob})``
    (``proofs_notes/shadow-reward-gradient.md#route-2``).
    """
    policy, model = op.policy, op.model
    n_obs, n_act = policy.probs[i].shape
    obs = policy.observation_index(i)
    pi_i = policy.local_action_probs(i)
    digits = model.states.digits
    nS = model.states.size
    rhs = np.empty((nS, n_obs * n_act))
    direct = np.empty((model.n_states[i], n_act, n_obs * n_act))
    for o in range(n_obs):
        mask = (obs == o).astype(np.float64) * lam_S
        for b in range(n_act):
            u = mask[:, None] * pi_i * ((np.arange(n_act) == b) - pi_i[:, b : b + 1])
            rhs[:, o * n_act + b] = model.gamma * op.apply_agent_transpose(i, u)
            direct[:, :, o * n_act + b] = _scatter(digits[:, i], u, model.n_states[i])
    d_lam_S = op.solve_occupancy(rhs).x
    out = []
    for j in range(model.n):
        pi_j = policy.local_action_probs(j)
        n_sj, n_aj = model.n_states[j], model.n_actions[j]
        cols = np.einsum("sm,sa->sam", d_lam_S, pi_j).reshape(nS, n_aj * n_obs * n_act)
        jac = _scatter(digits[:, j], cols, n_sj).reshape(n_sj, n_aj, n_obs * n_act)
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
) -> tuple[FloatArray, ...]:
    """``grad_{theta_i} F = (1/n) sum_j (d lam_j / d theta_i)^T r_j`` (route 2).

    Uses :func:`local_occupancy_jacobian`, one occupancy solve per agent with
    ``|O_i| |A_i|`` right-hand sides; independent of shadow values and Q-functions.
    """
    check_utilities(model, utilities)
    op = transition_operator(model, policy, backend, memory_limit)
    lam_S = op.solve_occupancy(model.joint_rho()).x
    occ = local_occupancies(policy, lam_S)
    rewards = [f.gradient(lam) for f, lam in zip(utilities, occ, strict=True)]
    grads = []
    for i in range(model.n):
        jac = local_occupancy_jacobian(op, lam_S, i)
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
    significant); the predicted ``n |S| |A|`` floats are checked against the memory limit.
    """
    nS, nA, n = model.states.size, model.actions.size, model.n
    check_memory(8 * (n + 2) * nS * nA, f"{n} joint shadow Q tables", memory_limit)
    factors = [model.local_kernel_factors(j) for j in range(n)]
    adigits = model.actions.digits
    sdigits = model.states.digits
    out = []
    for i in range(n):
        future = contract_next_state(factors, solution.shadow_values[:, i], model.n_states)
        reward = solution.shadow_rewards[i][sdigits[:, i][:, None], adigits[:, i][None, :]]
        out.append(frozen(reward + model.gamma * future))
    return tuple(out)


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
    return frozen(_scatter(policy.observation_index(i), terms, policy.probs[i].shape[0]))


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
