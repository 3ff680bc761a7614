"""Exact localized Q-functions, local advantages, visitation and the multi-agent performance
difference lemma (SPEC section 5; derivations in ``proofs_notes/ma-pdl.md``).

Agent ``m`` (0-based) has localized Q ``Q^{0:m}(s, a^{0:m})`` of shape ``(nS, |A^0|, ..., |A^m|)``;
``Q^{0:N-1} = Q`` and ``Q^{0:-1} = V``.  The recursion runs backwards:

    Q^{0:m-1}(s, a^{0:m-1}) = sum_{a^m} pi^m(a^m | s, a^{0:m-1}) Q^{0:m}(s, a^{0:m}).

Local advantages ``A^m = Q^{0:m} - Q^{0:m-1}`` sum to the joint advantage pointwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reference._arrays import FloatArray, frozen, read_only
from reference.cooperative.game import CooperativeMarkovGame
from reference.cooperative.policy import ConditionalPolicy
from reference.errors import PolicyError
from reference.tabular import evaluate_with_occupancy, last_axis_sum

__all__ = [
    "GameValues",
    "MultiAgentPDL",
    "context_weights",
    "evaluate_game",
    "joint_advantage_sum",
    "localized_marginals",
    "localized_q_forward",
    "multi_agent_pdl",
]


@dataclass(frozen=True)
class GameValues:
    """Exact values of a sequential policy in a cooperative game.

    Attributes:
        V: ``(nS,)`` ``V_pi``.
        Q: ``(nS, |A^0|, ..., |A^{N-1}|)`` joint ``Q_pi``.
        J: ``rho . V``.
        localized: ``localized[m] = Q^{0:m}``, shape ``(nS, |A^0|, ..., |A^m|)``.
        advantages: ``advantages[m] = A^m = Q^{0:m} - Q^{0:m-1}``, same shape as ``localized[m]``.
        nu: ``(nS,)`` visitation ``(1 - gamma) lam_S``, a distribution.
        error_bound: certified ``||V - V_true||_inf`` of the LU solve (SPEC section 1); every
            ``Q^{0:m}`` is an average of ``r + gamma P V`` and inherits ``gamma`` times it.
    """

    V: FloatArray
    Q: FloatArray
    J: float
    localized: tuple[FloatArray, ...]
    advantages: tuple[FloatArray, ...]
    nu: FloatArray
    error_bound: float


def _check_same_game(game: CooperativeMarkovGame, policy: ConditionalPolicy) -> None:
    if policy.game is not game:
        raise PolicyError("the policy was built for a different game object")


def evaluate_game(game: CooperativeMarkovGame, policy: ConditionalPolicy) -> GameValues:
    """``V, Q`` by one LU solve on the joint-action MDP, then ``Q^{0:m}`` by the backward
    recursion (``proofs_notes/ma-pdl.md#localized-q``) and ``nu = (1-gamma) lam_S``."""
    _check_same_game(game, policy)
    mdp = game.tabular
    # a ConditionalPolicy is validated at construction, so its joint matrix is row-stochastic
    vals, occ = evaluate_with_occupancy(mdp, policy.joint_matrix(), validate=False)
    Q = vals.Q.reshape(game.P.shape[:-1])
    localized = localized_marginals(policy, Q)
    V_back = last_axis_sum(policy.conditionals[0] * localized[0])
    advantages = []
    prev = V_back
    for m in range(game.n_agents):
        advantages.append(read_only(localized[m] - prev[..., None]))
        prev = localized[m]
    return GameValues(
        V=vals.V,
        Q=Q,
        J=vals.J,
        localized=localized,
        advantages=tuple(advantages),
        nu=frozen((1 - game.gamma) * occ.lam_S),
        error_bound=vals.error_bound,
    )


def localized_marginals(policy: ConditionalPolicy, Q: FloatArray) -> tuple[FloatArray, ...]:
    """``Q^{0:m}`` of any joint function ``Q`` ``(nS, |A^0|, ..., |A^{N-1}|)`` by the backward
    recursion ``Q^{0:m-1} = sum_{a^m} pi^m Q^{0:m}`` from ``Q^{0:N-1} = Q``
    (``proofs_notes/ma-pdl.md#localized-q``); read-only results.  With ``Q = Q_pi`` these are the
    localized Q-functions; with a critic's ``Qhat`` they are its localized critics (SPEC
    section 6)."""
    n = policy.game.n_agents
    if Q.shape != policy.conditionals[-1].shape:
        raise PolicyError(f"Q has shape {Q.shape}, expected {policy.conditionals[-1].shape}")
    # a read-only float64 Q (the solver's) is shared, anything else copied
    top = Q if (Q.dtype == np.float64 and not Q.flags.writeable) else frozen(Q)
    out: list[FloatArray] = [top] * n
    for m in range(n - 1, 0, -1):
        out[m - 1] = read_only(last_axis_sum(policy.conditionals[m] * out[m]))
    return tuple(out)


def localized_q_forward(
    game: CooperativeMarkovGame, policy: ConditionalPolicy, Q: FloatArray
) -> tuple[FloatArray, ...]:
    """A second route to ``Q^{0:m}``: ``Q^{0:m}(s, a^{0:m}) = sum_{a^{m+1:N-1}}
    pi^{m+1:N-1}(a^{m+1:N-1} | s, a^{0:m}) Q(s, a)`` with the tail probability built forward
    as one product array (no recursion through ``Q^{0:m+1}``).  ``Q`` is the joint
    ``(nS, |A^0|, ..., |A^{N-1}|)`` Q-function."""
    _check_same_game(game, policy)
    n = game.n_agents
    out = []
    for m in range(n):
        tail = np.ones(policy.conditionals[m].shape)
        for j in range(m + 1, n):
            tail = tail[..., None] * policy.conditionals[j]
        axes = tuple(range(m + 2, n + 1))
        out.append(frozen(np.sum(tail * Q, axis=axes)))
    return tuple(out)


def joint_advantage_sum(values: GameValues) -> FloatArray:
    """``sum_m A^m(s, a^{0:m})`` broadcast to the joint shape; equals ``Q - V`` pointwise
    (``proofs_notes/ma-pdl.md#decomposition``)."""
    total = np.zeros(values.Q.shape)
    n = len(values.advantages)
    for m, adv in enumerate(values.advantages):
        total = total + adv.reshape(adv.shape + (1,) * (n - 1 - m))
    return total


def context_weights(policy: ConditionalPolicy, nu: FloatArray, m: int) -> FloatArray:
    """``w^m(s, a^{0:m-1}) = nu(s) pi^{0:m-1}(a^{0:m-1} | s)``, the distribution of agent
    ``m``'s context when ``s ~ nu`` and the earlier agents act by ``policy``; shape
    ``(nS, |A^0|, ..., |A^{m-1}|)``."""
    prefix = policy.prefix(m)
    out: FloatArray = nu.reshape((-1,) + (1,) * (prefix.ndim - 1)) * prefix
    return out


@dataclass(frozen=True)
class MultiAgentPDL:
    """Both sides of the multi-agent performance difference lemma (SPEC section 5).

    Attributes:
        terms: ``(N,)``; ``terms[m] = 1/(1-gamma) E_{s~nu'} E_{a^{0:m-1}~pi'}
            < Q^{0:m}_pi(s, a^{0:m-1}, .), pi'^m(.|s, a^{0:m-1}) - pi^m(.|s, a^{0:m-1}) >``.
        total: ``sum_m terms[m]``.
        joint: the single-agent route on the joint action,
            ``1/(1-gamma) E_{s~nu'} < Q_pi(s, .), pi'(.|s) - pi(.|s) >``.
        difference: ``J(pi') - J(pi)`` from two LU solves.
    """

    terms: FloatArray
    total: float
    joint: float
    difference: float


def multi_agent_pdl(
    game: CooperativeMarkovGame, pi: ConditionalPolicy, pi_new: ConditionalPolicy
) -> MultiAgentPDL:
    """Evaluate the terms of the multi-agent PDL for ``pi`` (old) and ``pi_new``
    (``proofs_notes/ma-pdl.md#lemma``)."""
    _check_same_game(game, pi)
    _check_same_game(game, pi_new)
    old = evaluate_game(game, pi)
    new = evaluate_game(game, pi_new)
    g = game.gamma
    terms = np.empty(game.n_agents)
    for m in range(game.n_agents):
        w = context_weights(pi_new, new.nu, m)
        diff = pi_new.conditionals[m] - pi.conditionals[m]
        terms[m] = float(np.sum(w[..., None] * old.localized[m] * diff)) / (1 - g)
    joint_diff = pi_new.joint() - pi.joint()
    joint = float(np.sum(new.nu.reshape((-1,) + (1,) * game.n_agents) * old.Q * joint_diff))
    return MultiAgentPDL(
        terms=frozen(terms),
        total=float(terms.sum()),
        joint=joint / (1 - g),
        difference=new.J - old.J,
    )
