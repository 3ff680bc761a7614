"""Planted bugs and correct implementations for the cooperative-game checks (localized Q,
MA-PPO step, joint importance ratio).

Every implementation here is written in plain numpy, independently of ``reference/``, the
way a user would write it; each wrong one is one small edit of a correct one.  Conditionals
are tuples ``conds[m]`` of shape ``(nS, |A^0|, ..., |A^m|)``; ``P`` is
``(nS, |A^0|, ..., |A^{N-1}|, nS)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from reference._arrays import FloatArray, IntArray
from verify.checks._core import KnownBug, Mutant
from verify.checks.cooperative import (
    check_agent_ratios,
    check_joint_ratio,
    check_localized_q,
    check_mappo_step,
)

__all__ = ["CORRECT", "DIAGNOSABLE", "MUTANTS"]

_CASES = 20

Conditionals = Sequence[FloatArray]


# --------------------------------------------------------------------------- localized Q


def _joint(conds: Conditionals) -> FloatArray:
    """``pi(s, a^0, ..., a^{N-1}) = prod_m pi^m``, built by outer products along new axes."""
    joint = conds[0]
    for c in conds[1:]:
        joint = joint[..., None] * c
    return joint


def _joint_q(
    P: FloatArray, r: FloatArray, gamma: float, joint: FloatArray, order: Literal["C", "F"] = "C"
) -> FloatArray:
    """``Q = r + gamma P V`` with ``V = (I - gamma P_pi)^{-1} r_pi`` on the flat joint action.
    ``order`` is how the joint policy is flattened; ``"C"`` (agent 0 most significant) matches
    ``P.reshape``."""
    nS = P.shape[0]
    P_flat = P.reshape(nS, -1, nS)
    r_flat = r.reshape(nS, -1)
    pi_flat = joint.reshape(nS, -1, order=order)
    P_pi = np.einsum("sa,sat->st", pi_flat, P_flat)
    r_pi = np.einsum("sa,sa->s", pi_flat, r_flat)
    V = np.linalg.solve(np.eye(nS) - gamma * P_pi, r_pi)
    out: FloatArray = r + gamma * np.einsum("...t,t->...", P, V)
    return out


def _backward(Q: FloatArray, conds: Conditionals, weighted: bool = True) -> tuple[FloatArray, ...]:
    """``Q^{0:m-1} = sum_{a^m} pi^m Q^{0:m}`` from ``Q^{0:N-1} = Q`` (``weighted=False``: the
    plain sum over ``a^m``)."""
    out = [Q]
    for m in range(len(conds) - 1, 0, -1):
        w = conds[m] if weighted else np.ones_like(conds[m])
        out.insert(0, np.einsum("...a,...a->...", w, out[0]))
    return tuple(out)


def localized_q(
    P: FloatArray, r: FloatArray, gamma: float, conds: Conditionals
) -> tuple[FloatArray, ...]:
    """Correct: joint ``Q`` by one solve on the state space, then the backward recursion."""
    return _backward(_joint_q(P, r, gamma, _joint(conds)), conds)


def localized_q_action_space(
    P: FloatArray, r: FloatArray, gamma: float, conds: Conditionals
) -> tuple[FloatArray, ...]:
    """Correct, second route: ``Q = (I - gamma P Pi)^{-1} r`` solved on state-action pairs
    (``(P Pi)[(s,a), (s',a')] = P[s,a,s'] pi(a'|s')``), then each ``Q^{0:m}`` as the forward
    expectation over the later agents, ``sum_{a^{m+1:}} prod_{j>m} pi^j Q``."""
    nS = P.shape[0]
    joint = _joint(conds)
    n_sa = joint.size
    P_Pi = np.einsum("sat,tb->satb", P.reshape(nS, -1, nS), joint.reshape(nS, -1))
    Q = np.linalg.solve(np.eye(n_sa) - gamma * P_Pi.reshape(n_sa, n_sa), r.reshape(-1))
    Q = Q.reshape(r.shape)
    n = len(conds)
    out = []
    for m in range(n):
        tail = np.ones(conds[m].shape)
        for j in range(m + 1, n):
            tail = tail[..., None] * conds[j]
        out.append(np.sum(tail * Q, axis=tuple(range(m + 2, n + 1))))
    return tuple(out)


def localized_q_agent_last_first(
    P: FloatArray, r: FloatArray, gamma: float, conds: Conditionals
) -> tuple[FloatArray, ...]:
    """Bug: flattens the joint policy with ``order="F"`` (agent ``N-1`` most significant) while
    ``P`` and ``r`` are flattened agent 0 first, so ``V`` is that of a scrambled policy."""
    return _backward(_joint_q(P, r, gamma, _joint(conds), order="F"), conds)


def _product_conditionals(conds: Conditionals) -> tuple[FloatArray, ...]:
    """Each ``pi^m`` replaced by its marginal ``pi^m(a^m|s) = sum_{a^{0:m-1}}
    pi^{0:m-1}(a^{0:m-1}|s) pi^m(a^m|s, a^{0:m-1})``, broadcast back over the earlier agents'
    actions (an independent-learner's view of a sequential policy)."""
    nS = conds[0].shape[0]
    prefix: FloatArray = np.ones(nS)
    out = []
    for c in conds:
        w = prefix[..., None] * c
        marg = w.reshape(nS, -1, c.shape[-1]).sum(axis=1)
        out.append(np.broadcast_to(marg.reshape((nS,) + (1,) * (c.ndim - 2) + marg.shape[-1:]),
                                   c.shape).copy())
        prefix = w
    return tuple(out)


def localized_q_product_policy(
    P: FloatArray, r: FloatArray, gamma: float, conds: Conditionals
) -> tuple[FloatArray, ...]:
    """Bug: treats the policy as a product of per-agent marginals ``pi^m(a^m|s)`` (each
    conditional averaged over the earlier agents' actions), ignoring ``a^{0:m-1}``."""
    prod = _product_conditionals(conds)
    return _backward(_joint_q(P, r, gamma, _joint(prod)), prod)


def localized_q_unweighted(
    P: FloatArray, r: FloatArray, gamma: float, conds: Conditionals
) -> tuple[FloatArray, ...]:
    """Bug: ``Q^{0:m-1} = sum_{a^m} Q^{0:m}``, the later agents' actions summed without their
    probabilities ``pi^m``."""
    return _backward(_joint_q(P, r, gamma, _joint(conds)), conds, weighted=False)


# --------------------------------------------------------------------------- MA-PPO step


def _softmax_logits(logits: FloatArray) -> FloatArray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    out: FloatArray = z / z.sum(axis=-1, keepdims=True)
    return out


def mappo_step(
    conds: Conditionals, q: Sequence[FloatArray], beta_k: float
) -> tuple[FloatArray, ...]:
    """Correct: ``softmax(log pi^m + Q^{0:m} / beta_k)`` per context (log-sum-exp)."""
    return tuple(_softmax_logits(np.log(c) + qm / beta_k) for c, qm in zip(conds, q, strict=True))


def mappo_step_advantage(
    conds: Conditionals, q: Sequence[FloatArray], beta_k: float
) -> tuple[FloatArray, ...]:
    """Correct, second route: ``pi^m exp(A^m / beta_k)`` normalised, with the local advantage
    ``A^m = Q^{0:m} - sum_{a^m} pi^m Q^{0:m}`` (the same step, SPEC section 5)."""
    out = []
    for c, qm in zip(conds, q, strict=True):
        adv = qm - np.sum(c * qm, axis=-1, keepdims=True)
        w = c * np.exp(adv / beta_k)
        out.append(w / w.sum(axis=-1, keepdims=True))
    return tuple(out)


def mappo_step_beta_multiplied(
    conds: Conditionals, q: Sequence[FloatArray], beta_k: float
) -> tuple[FloatArray, ...]:
    """Bug: ``exp(beta_k Q)`` instead of ``exp(Q / beta_k)`` (beta read as an inverse
    temperature)."""
    return tuple(_softmax_logits(np.log(c) + beta_k * qm) for c, qm in zip(conds, q, strict=True))


def mappo_step_updated_later_agents(
    conds: Conditionals, q: Sequence[FloatArray], beta_k: float
) -> tuple[FloatArray, ...]:
    """Bug: a backward sweep that updates agent ``N-1`` from ``Q`` and then re-marginalises
    ``Q^{0:m-1} = sum_{a^m} pi^m_{k+1} Q^{0:m}`` with the *updated* conditional, so agents
    ``m < N-1`` step on a Q of ``(pi_k^{0:m}, pi_{k+1}^{m+1:N-1})`` instead of ``pi_k``'s."""
    n = len(conds)
    out: list[FloatArray] = [np.empty(0)] * n
    top = q[n - 1]
    for m in range(n - 1, -1, -1):
        out[m] = _softmax_logits(np.log(conds[m]) + top / beta_k)
        top = np.sum(out[m] * top, axis=-1)
    return tuple(out)


def mappo_step_product_policy(
    conds: Conditionals, q: Sequence[FloatArray], beta_k: float
) -> tuple[FloatArray, ...]:
    """Bug: independent-learner step.  Each agent's conditional and localized Q are averaged
    over the earlier agents' actions (weights ``pi^{0:m-1}(a^{0:m-1}|s)``), stepped as
    ``pi^m(a^m|s) exp(Qbar^m(s, a^m) / beta_k)`` and broadcast back over ``a^{0:m-1}``."""
    nS = conds[0].shape[0]
    prefix: FloatArray = np.ones(nS)
    out = []
    for c, qm in zip(conds, q, strict=True):
        k = c.shape[-1]
        w = prefix[..., None] * c
        p_bar = w.reshape(nS, -1, k).sum(axis=1)
        pre = np.broadcast_to(prefix[..., None], c.shape).reshape(nS, -1, k)
        q_bar = np.sum(pre * qm.reshape(nS, -1, k), axis=1) / pre.sum(axis=1)
        new = _softmax_logits(np.log(p_bar) + q_bar / beta_k)
        out.append(np.broadcast_to(new.reshape((nS,) + (1,) * (c.ndim - 2) + (k,)), c.shape)
                   .copy())
        prefix = w
    return tuple(out)


# --------------------------------------------------------------------------- joint ratio


def _per_agent_ratios(
    new: Conditionals, old: Conditionals, states: IntArray, actions: IntArray
) -> FloatArray:
    """``(B, N)``: ``pi_new^m / pi_old^m`` at ``(s_b, a_b^{0:m})``, gathered per agent."""
    cols = []
    for m in range(len(new)):
        idx = (states, *(actions[:, j] for j in range(m + 1)))
        cols.append(new[m][idx] / old[m][idx])
    out: FloatArray = np.stack(cols, axis=1)
    return out


def joint_ratio(
    new: Conditionals, old: Conditionals, states: IntArray, actions: IntArray
) -> FloatArray:
    """Correct: the product over agents of the gathered per-agent ratios."""
    out: FloatArray = np.prod(_per_agent_ratios(new, old, states, actions), axis=1)
    return out


def joint_ratio_logs(
    new: Conditionals, old: Conditionals, states: IntArray, actions: IntArray
) -> FloatArray:
    """Correct, second route: ``exp(sum_m log pi_new^m - log pi_old^m)`` (how a PPO
    implementation working with log-probabilities forms it)."""
    logs = np.zeros(states.shape[0])
    for m in range(len(new)):
        idx = (states, *(actions[:, j] for j in range(m + 1)))
        logs += np.log(new[m][idx]) - np.log(old[m][idx])
    out: FloatArray = np.exp(logs)
    return out


def joint_ratio_mean_of_agents(
    new: Conditionals, old: Conditionals, states: IntArray, actions: IntArray
) -> FloatArray:
    """Bug: the mean over agents of the per-agent ratios instead of their product."""
    out: FloatArray = np.mean(_per_agent_ratios(new, old, states, actions), axis=1)
    return out


def joint_ratio_last_agent_only(
    new: Conditionals, old: Conditionals, states: IntArray, actions: IntArray
) -> FloatArray:
    """Bug: only agent ``N-1``'s own ratio (HAPPO's per-agent ratio without the factor
    ``M = prod_{j<N-1}`` of the earlier agents' ratios)."""
    out: FloatArray = _per_agent_ratios(new, old, states, actions)[:, -1]
    return out


def happo_factor_float32(
    new: Conditionals, old: Conditionals, states: IntArray, actions: IntArray
) -> npt.NDArray[np.float32]:
    """Correct, in float32 as a HAPPO implementation computes its factor: per-agent log
    probabilities gathered in float32, the factor ``M = exp(sum_m (log pi_new^m - log
    pi_old^m))`` accumulated agent by agent (each agent's update multiplies the running
    factor by its own ratio)."""
    factor = np.ones(states.shape[0], dtype=np.float32)
    for m in range(len(new)):
        idx = (states, *(actions[:, j] for j in range(m + 1)))
        new_logp = np.log(np.asarray(new[m], dtype=np.float32)[idx])
        old_logp = np.log(np.asarray(old[m], dtype=np.float32)[idx])
        factor = factor * np.exp(new_logp - old_logp)
    return factor


def agent_ratios(
    new: Conditionals, old: Conditionals, states: IntArray, actions: IntArray
) -> FloatArray:
    """Correct: MAPPO's per-agent ratios, ``exp(log pi_new^m - log pi_old^m)`` per agent."""
    cols = []
    for m in range(len(new)):
        idx = (states, *(actions[:, j] for j in range(m + 1)))
        cols.append(np.exp(np.log(new[m][idx]) - np.log(old[m][idx])))
    out: FloatArray = np.stack(cols, axis=1)
    return out


def agent_ratios_cumulative(
    new: Conditionals, old: Conditionals, states: IntArray, actions: IntArray
) -> FloatArray:
    """Bug: slot ``m`` holds the running product of the ratios of agents ``0..m`` (HAPPO's
    factor times agent ``m``'s ratio) instead of agent ``m``'s own ratio."""
    out: FloatArray = np.cumprod(agent_ratios(new, old, states, actions), axis=1).astype(
        np.float64)
    return out


def agent_ratios_inverted(
    new: Conditionals, old: Conditionals, states: IntArray, actions: IntArray
) -> FloatArray:
    """Bug: ``pi_old^m / pi_new^m`` (the ratio upside down)."""
    return 1.0 / agent_ratios(new, old, states, actions)


MUTANTS = (
    Mutant(
        "localized-q-joint-flattened-agent-last-first",
        "flattens the joint policy with order='F' (agent N-1 most significant) while P and r "
        "are flattened agent 0 first, so V and Q belong to a policy with the agents' actions "
        "permuted",
        "localized-q",
        lambda: check_localized_q(localized_q_agent_last_first, cases=_CASES),
    ),
    Mutant(
        "localized-q-product-policy",
        "replaces every conditional pi^m(a^m|s, a^{0:m-1}) by its marginal pi^m(a^m|s) (averaged "
        "over the earlier agents' actions) for both V and the marginalisation",
        "localized-q",
        lambda: check_localized_q(localized_q_product_policy, cases=_CASES),
    ),
    Mutant(
        "localized-q-later-agents-summed",
        "Q^{0:m-1} = sum_{a^m} Q^{0:m} without the weights pi^m(a^m|s, a^{0:m-1})",
        "localized-q",
        lambda: check_localized_q(localized_q_unweighted, cases=_CASES),
    ),
    Mutant(
        "mappo-step-beta-multiplied",
        "pi^m_k exp(beta_k Q^{0:m}) instead of pi^m_k exp(Q^{0:m} / beta_k)",
        "mappo-step",
        lambda: check_mappo_step(mappo_step_beta_multiplied, cases=_CASES),
    ),
    Mutant(
        "mappo-step-updated-later-agents",
        "backward sweep that re-marginalises Q^{0:m-1} with the already updated pi^m_{k+1}, so "
        "agents m < N-1 step on the Q of a partially updated policy instead of pi_k's",
        "mappo-step",
        lambda: check_mappo_step(mappo_step_updated_later_agents, cases=_CASES),
    ),
    Mutant(
        "mappo-step-product-policy",
        "independent-learner step: conditional and Q^{0:m} averaged over a^{0:m-1} (weights "
        "pi^{0:m-1}), stepped per state and broadcast back, ignoring the earlier agents' actions",
        "mappo-step",
        lambda: check_mappo_step(mappo_step_product_policy, cases=_CASES),
    ),
    Mutant(
        "joint-ratio-mean-of-agents",
        "the mean over agents of pi_new^m / pi_old^m instead of their product",
        "joint-ratio",
        lambda: check_joint_ratio(joint_ratio_mean_of_agents, cases=_CASES),
    ),
    Mutant(
        "joint-ratio-last-agent-only",
        "only agent N-1's own ratio pi_new^{N-1} / pi_old^{N-1}, without the product of the "
        "earlier agents' ratios",
        "joint-ratio",
        lambda: check_joint_ratio(joint_ratio_last_agent_only, cases=_CASES),
    ),
    Mutant(
        "agent-ratios-inverted",
        "pi_old^m / pi_new^m instead of pi_new^m / pi_old^m",
        "agent-ratios",
        lambda: check_agent_ratios(agent_ratios_inverted, cases=_CASES),
    ),
    Mutant(
        "agent-ratios-cumulative",
        "slot m holds the product of the ratios of agents 0..m (a HAPPO factor) instead of "
        "agent m's own ratio",
        "agent-ratios",
        lambda: check_agent_ratios(agent_ratios_cumulative, cases=_CASES),
    ),
)
"""Wrong implementations, each with the check that must catch it."""

CORRECT = (
    Mutant("localized-q", "correct implementation: state-space LU solve on the joint action, "
           "backward recursion with einsum", "localized-q",
           lambda: check_localized_q(localized_q, cases=_CASES)),
    Mutant("localized-q-action-space", "correct implementation: Q = (I - gamma P Pi)^{-1} r on "
           "state-action pairs, forward expectation over the later agents", "localized-q",
           lambda: check_localized_q(localized_q_action_space, cases=_CASES)),
    Mutant("mappo-step", "correct implementation: log-sum-exp softmax of log pi^m + Q^{0:m} / "
           "beta_k", "mappo-step", lambda: check_mappo_step(mappo_step, cases=_CASES)),
    Mutant("mappo-step-advantage", "correct implementation: pi^m exp(A^m / beta_k) normalised, "
           "with the local advantage", "mappo-step",
           lambda: check_mappo_step(mappo_step_advantage, cases=_CASES)),
    Mutant("joint-ratio", "correct implementation: product of gathered per-agent ratios",
           "joint-ratio", lambda: check_joint_ratio(joint_ratio, cases=_CASES)),
    Mutant("joint-ratio-logs", "correct implementation: exp of the summed log-ratio",
           "joint-ratio", lambda: check_joint_ratio(joint_ratio_logs, cases=_CASES)),
    Mutant("joint-ratio-happo-float32", "correct implementation in float32: HAPPO's factor "
           "accumulated agent by agent from float32 log-probabilities (judged at float32)",
           "joint-ratio", lambda: check_joint_ratio(happo_factor_float32, cases=_CASES)),
    Mutant("agent-ratios", "correct implementation: exp of each agent's log-ratio",
           "agent-ratios", lambda: check_agent_ratios(agent_ratios, cases=_CASES)),
)
"""Correct implementations, which every check must pass."""

DIAGNOSABLE = (
    KnownBug("localized-q-joint-flattened-agent-last-first",
             "the joint policy flattened agent N-1 first", localized_q_agent_last_first),
    KnownBug("localized-q-product-policy",
             "conditionals replaced by their marginals", localized_q_product_policy),
    KnownBug("localized-q-later-agents-summed",
             "Q^{0:m-1} = sum_{a^m} Q^{0:m} without the weights pi^m", localized_q_unweighted),
    KnownBug("mappo-step-beta-multiplied",
             "pi^m_k exp(beta_k Q^{0:m}) instead of exp(Q^{0:m} / beta_k)",
             mappo_step_beta_multiplied),
    KnownBug("mappo-step-updated-later-agents",
             "earlier agents step on the Q of a partially updated policy",
             mappo_step_updated_later_agents),
    KnownBug("mappo-step-product-policy",
             "independent-learner step ignoring the earlier agents' actions",
             mappo_step_product_policy),
    KnownBug("joint-ratio-mean-of-agents",
             "the mean over agents of the per-agent ratios instead of their product",
             joint_ratio_mean_of_agents),
    KnownBug("joint-ratio-last-agent-only",
             "only the last agent's own ratio (a per-agent MAPPO ratio, not the joint one)",
             joint_ratio_last_agent_only),
    KnownBug("agent-ratios-inverted", "pi_old^m / pi_new^m", agent_ratios_inverted),
    KnownBug("agent-ratios-cumulative",
             "the running product of the ratios of agents 0..m (a HAPPO factor)",
             agent_ratios_cumulative),
)
"""The planted bugs in their checks' canonical signatures, which the diagnoses try."""
