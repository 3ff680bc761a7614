"""kappa-hop truncation and spatial correlation decay (SPEC section 3).

For agent ``i`` and radius ``kappa`` write ``z = z_{N_i^kappa}`` for the local states and
actions ``(s_j, a_j)_{j in N_i^kappa}`` of a joint pair ``(s, a)``; ``z`` is indexed mixed
radix over ``N_i^kappa`` in increasing agent order, each agent contributing the digit
``s_j |A_j| + a_j`` (lowest-numbered agent most significant).

* **Decay spread** ``D_i(kappa) = max |Q_i(s,a) - Q_i(s',a')|`` over pairs with equal ``z``.
* **Bound** [derived, ``proofs_notes/decay.md``]: ``D_i(kappa) <= Delta_i gamma^t0 / (1-gamma)``
  with ``Delta_i = max r_i - min r_i`` and ``t0(kappa, beta)`` the first time at which the
  law of ``(s_i^t, a_i^t)`` can depend on anything outside ``N_i^kappa``.
* **Truncated Q** ``Qhat_i(z) = sum w_i(. | z) Q_i`` for point-mass, uniform or
  occupancy-conditional weights; any weights give ``sup |Qhat_i - Q_i| <= D_i(kappa)``.
* **Truncated gradient** ``ghat_i = sum lam(s,a) [(1/n) sum_{j in N_i^kappa} Qhat_j] score_i``
  with ``||ghat_i - grad_i F||_2 <= sqrt(2) max_j D_j(kappa) / (1-gamma)``
  (``proofs_notes/truncated-gradient.md``), via the cancellation identity, and the sharper
  ``(1/n) sum_j c_ij D_j(kappa) sum_s lam_S(s) E_{a_i ~ pi_i} ||score_i||`` of
  :func:`gradient_error_bounds` (``truncated-gradient.md#sharp``).

Everything here works on joint ``(|S|, |A|)`` tables: it is exact for instances whose joint
shadow Q tables fit in memory (``|S| |A|`` floats each, one at a time for the decay
profile), and raises :class:`~reference.errors.MemoryLimitError` beyond
(``proofs_notes/matrix-free.md#decay-spread``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from reference._arrays import FloatArray, IntArray, frozen
from reference.errors import ModelError
from reference.networked.exact import (
    NetworkedSolution,
    iter_shadow_q,
    score_contraction,
    shadow_q,
)
from reference.networked.model import NetworkedMDP
from reference.networked.policy import LocalizedSoftmaxPolicy

__all__ = [
    "WEIGHT_CHOICES",
    "DecayProfile",
    "GradientErrorBounds",
    "TruncatedQ",
    "Weights",
    "cancellation_residual",
    "decay_bound",
    "decay_profile",
    "decay_spread",
    "first_escape_time",
    "gradient_error_bounds",
    "hop_codes",
    "hop_index",
    "hop_size",
    "score_norm_mass",
    "truncated_gradient",
    "truncated_q",
]

Weights = Literal["point", "uniform", "occupancy"]
WEIGHT_CHOICES: tuple[Weights, ...] = ("point", "uniform", "occupancy")
"""Every supported choice of truncation weights."""


def _check_radius(kappa: int, name: str = "kappa") -> int:
    if isinstance(kappa, bool) or not isinstance(kappa, (int, np.integer)) or kappa < 0:
        raise ModelError(f"{name} = {kappa!r}, expected a non-negative integer")
    return int(kappa)


def first_escape_time(kappa: int, beta: int) -> int:
    """``t0(kappa, beta)``: the first time the law of ``(s_i^t, a_i^t)`` can depend on
    ``(s, a)`` outside ``N_i^kappa``.

    ``t0 = kappa + 1`` for ``beta = 0``; for ``beta >= 1``, ``t0 = 1`` if ``kappa = 0`` else
    ``floor((kappa - 1) / beta) + 1`` (= ``ceil(kappa / beta)``).  Derivation: for
    ``t >= 1`` the action ``a_i^t`` depends on ``(s, a)`` within radius ``1 + t beta``
    (``proofs_notes/decay.md``).
    """
    kappa, beta = _check_radius(kappa), _check_radius(beta, "beta")
    if beta == 0:
        return kappa + 1
    if kappa == 0:
        return 1
    return (kappa - 1) // beta + 1


def decay_bound(delta: float, gamma: float, kappa: int, beta: int) -> float:
    """``Delta gamma^t0 / (1 - gamma)`` with ``t0 = first_escape_time(kappa, beta)``."""
    return float(delta) * gamma ** first_escape_time(kappa, beta) / (1.0 - gamma)


def hop_codes(
    model: NetworkedMDP, agents: Sequence[int], states: IntArray, actions: IntArray
) -> IntArray:
    """``z_agents`` codes of local states and actions with shapes broadcasting to ``(..., n)``.

    ``agents`` increasing; each agent's digit is ``s_j |A_j| + a_j``, lowest agent most
    significant.
    """
    shape = np.broadcast_shapes(states.shape[:-1], actions.shape[:-1])
    code = np.zeros(shape, dtype=np.int64)
    for j in agents:
        code = code * (model.n_states[j] * model.n_actions[j]) + (
            states[..., j] * model.n_actions[j] + actions[..., j]
        )
    return code


def hop_size(model: NetworkedMDP, agents: Sequence[int]) -> int:
    """Number of values of ``z_agents``: ``prod_{j in agents} |S_j| |A_j|``."""
    size = 1
    for j in agents:
        size *= model.n_states[j] * model.n_actions[j]
    return size


def hop_index(model: NetworkedMDP, agents: Sequence[int]) -> tuple[IntArray, int]:
    """``(|S|, |A|)`` code of ``z_agents`` for every joint pair, and the number of values."""
    sd, ad = model.states.digits, model.actions.digits
    return hop_codes(model, agents, sd[:, None, :], ad[None, :, :]), hop_size(model, agents)


def decay_spread(model: NetworkedMDP, q: FloatArray, i: int, kappa: int) -> float:
    """``D_i(kappa) = max_z [max - min of Q_i over the joint pairs (s, a) with z(s, a) = z]``.

    The pairs of SPEC section 3 that agree on ``z = z_{N_i^kappa}`` are exactly the pairs
    inside one group, and the largest ``|Q_i(s,a) - Q_i(s',a')|`` inside a group is its
    max minus its min; so no pair is enumerated.  ``q`` of shape ``(|S|, |A|)`` is viewed as a
    tensor with one state and one action axis per agent, and the max and min are taken over
    the axes of the agents outside ``N_i^kappa`` (``O(|S| |A|)`` work, exact: max and min do
    not round).  The table itself is what limits the size: see :func:`decay_profile` and
    ``proofs_notes/matrix-free.md#decay-spread``.
    """
    agents = set(model.graph.neighbourhood(i, _check_radius(kappa)))
    shape = model.n_states + model.n_actions
    if q.shape != (model.states.size, model.actions.size):
        raise ModelError(
            f"q has shape {q.shape}, expected ({model.states.size}, {model.actions.size})"
        )
    n = model.n
    outside = tuple(j for j in range(n) if j not in agents)
    axes = outside + tuple(n + j for j in outside)
    tensor = q.reshape(shape)
    spread = np.max(tensor, axis=axes) - np.min(tensor, axis=axes)
    return float(np.max(spread))


@dataclass(frozen=True)
class TruncatedQ:
    """A truncated Q-function ``Qhat_i(z_{N_i^kappa})``.

    Attributes:
        agent: ``i``.
        kappa: the radius.
        agents: ``N_i^kappa``.
        table: ``(prod_{j in N_i^kappa} |S_j| |A_j|,)`` values ``Qhat_i(z)``.
        joint: ``(|S|, |A|)`` the table broadcast back to joint pairs, ``Qhat_i(z(s, a))``.
        weights: which weights were used.
    """

    agent: int
    kappa: int
    agents: tuple[int, ...]
    table: FloatArray
    joint: FloatArray
    weights: Weights


def truncated_q(
    model: NetworkedMDP,
    q: FloatArray,
    i: int,
    kappa: int,
    weights: Weights = "occupancy",
    lam: FloatArray | None = None,
) -> TruncatedQ:
    """``Qhat_i(z) = sum_{(s,a): z(s,a) = z} w(s, a | z) Q_i(s, a)``.

    Weights: ``"point"`` puts mass 1 on the completion with every variable outside
    ``N_i^kappa`` equal to 0; ``"uniform"`` averages over all completions;
    ``"occupancy"`` uses ``w propto lam(s, a)`` (needs ``lam``, shape ``(|S|, |A|)``) and falls
    back to uniform on groups of zero occupancy.  Any choice is a convex combination of
    values of ``Q_i`` on the group, so ``sup |Qhat_i - Q_i| <= D_i(kappa)``.
    """
    agents = model.graph.neighbourhood(i, _check_radius(kappa))
    idx, size = hop_index(model, agents)
    flat_idx, flat_q = idx.reshape(-1), q.reshape(-1)
    count = np.bincount(flat_idx, minlength=size).astype(np.float64)
    uniform = np.bincount(flat_idx, weights=flat_q, minlength=size) / np.maximum(count, 1.0)
    if weights == "uniform":
        table = uniform
    elif weights == "point":
        outside = np.ones((model.states.size, model.actions.size), dtype=bool)
        sd, ad = model.states.digits, model.actions.digits
        for j in range(model.n):
            if j not in agents:
                outside &= (sd[:, j, None] == 0) & (ad[None, :, j] == 0)
        table = np.zeros(size)
        table[idx[outside]] = q[outside]
    elif weights == "occupancy":
        if lam is None:
            raise ModelError("occupancy-conditional weights need lam of shape (|S|, |A|)")
        flat_lam = lam.reshape(-1)
        mass = np.bincount(flat_idx, weights=flat_lam, minlength=size)
        # normalise within each group before multiplying by Q: a product lam * Q of a
        # subnormal occupancy (gamma near 0) would lose digits, the ratio lam / mass does not
        safe = np.where(mass > 0, mass, 1.0)
        total = np.bincount(flat_idx, weights=(flat_lam / safe[flat_idx]) * flat_q, minlength=size)
        table = np.where(mass > 0, total, uniform)
    else:
        raise ModelError(f"weights = {weights!r}, expected 'point', 'uniform' or 'occupancy'")
    return TruncatedQ(i, int(kappa), agents, frozen(table), frozen(table[idx]), weights)


@dataclass(frozen=True)
class DecayProfile:
    """Decay spreads and their derived bound for every agent and radius.

    Attributes:
        kappa: ``(K,)`` radii ``0..diameter``.
        spread: ``(n, K)`` ``D_i(kappa)``.
        bound: ``(n, K)`` ``Delta_i gamma^t0(kappa, beta) / (1-gamma)``, and 0 once
            ``N_i^kappa`` is the whole component of ``i``.
        t0: ``(K,)`` ``first_escape_time(kappa, beta)``.
        delta: ``(n,)`` ``Delta_i = max r_i - min r_i`` of the shadow rewards.
        beta: observation radius of the policy.
    """

    kappa: IntArray
    spread: FloatArray
    bound: FloatArray
    t0: IntArray
    delta: FloatArray
    beta: int


def decay_profile(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    solution: NetworkedSolution,
    kappas: Sequence[int] | None = None,
    *,
    memory_limit: float | None = None,
) -> DecayProfile:
    """``D_i(kappa)`` of the shadow Q-functions in ``solution`` and the derived bound.

    Exact for every instance whose joint shadow Q table ``Q_i(s, a)`` fits in memory: the
    tables are built one agent at a time (:func:`~reference.networked.exact.iter_shadow_q`,
    ``3 |S| |A| + n |S|`` floats, checked against the memory limit before anything is built),
    and each spread is a grouped max-minus-min over it (:func:`decay_spread`).  Beyond that
    size :class:`~reference.errors.MemoryLimitError` is raised: ``D_i(kappa)`` maximises over
    the completions ``(s, a)`` outside ``N_i^kappa``, and the completion's actions enter
    ``Q_i`` through ``P(s'|s, a) V_i(s')`` jointly, so no method that avoids visiting every
    joint pair is known (``proofs_notes/matrix-free.md#decay-spread``); use
    :func:`decay_bound` there.
    """
    ks = list(range(model.graph.diameter + 1)) if kappas is None else [
        _check_radius(k) for k in kappas
    ]
    delta = np.array([float(np.ptp(r)) for r in solution.shadow_rewards])
    tables = iter_shadow_q(model, policy, solution, memory_limit=memory_limit)
    spread = np.array([[decay_spread(model, q, i, k) for k in ks] for i, q in enumerate(tables)])
    # the bound, and D_i itself, vanish once N_i^kappa is i's whole component
    bound = np.array(
        [
            [
                0.0 if k >= model.graph.component_radius(i)
                else decay_bound(delta[i], model.gamma, k, policy.beta)
                for k in ks
            ]
            for i in range(model.n)
        ]
    )
    t0 = np.array([first_escape_time(k, policy.beta) for k in ks], dtype=np.int64)
    return DecayProfile(
        np.array(ks, dtype=np.int64), frozen(spread), frozen(bound), t0, frozen(delta),
        policy.beta,
    )


def truncated_gradient(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    solution: NetworkedSolution,
    kappa: int,
    weights: Weights = "occupancy",
    shadow_qs: Sequence[FloatArray] | None = None,
) -> tuple[FloatArray, ...]:
    """``ghat_i = sum_{s,a} lam(s,a) [(1/n) sum_{j in N_i^kappa} Qhat_j(z_{N_j^kappa})] score_i``.

    ``||ghat_i - grad_i F||_2 <= sqrt(2) max_j D_j(kappa) / (1 - gamma)`` and ``ghat = grad F``
    once ``N_j^kappa`` covers every agent's component (``proofs_notes/truncated-gradient.md``).
    """
    qs = shadow_q(model, policy, solution) if shadow_qs is None else shadow_qs
    pi = policy.joint_matrix()
    lam = solution.lam_S[:, None] * pi
    hats = [truncated_q(model, qs[j], j, kappa, weights, lam).joint for j in range(model.n)]
    grads = []
    for i in range(model.n):
        members = model.graph.neighbourhood(i, kappa)
        local = np.sum([hats[j] for j in members], axis=0) / model.n
        grads.append(score_contraction(policy, solution.lam_S, local, i, pi))
    return tuple(grads)


def cancellation_residual(
    policy: LocalizedSoftmaxPolicy, lam_S: FloatArray, i: int, h: FloatArray
) -> FloatArray:
    """``sum_{s,a} lam(s,a) h(s,a) score_i(a_i|o_i(s))`` for a joint table ``h``.

    The cancellation identity (SPEC section 3) says this is 0 whenever ``h`` depends only
    on ``z_{N_j^kappa}`` for some ``j`` not in ``N_i^kappa`` (then ``h`` cannot depend on
    ``a_i`` and ``sum_{a_i} pi_i score_i = 0``), for every ``beta``.
    """
    return score_contraction(policy, lam_S, h, i)


def score_norm_mass(
    policy: LocalizedSoftmaxPolicy, lam_S: FloatArray, i: int, power: int = 1
) -> float:
    """``sum_s lam_S(s) E_{a_i ~ pi_i(.|o_i(s))} ||score_i(a_i | o_i(s))||_2^power``.

    ``||score_i(a|o)||_2^2 = 1 - 2 pi_i(a|o) + ||pi_i(.|o)||^2``, so ``power = 2`` gives
    ``sum_s lam_S(s) (1 - ||pi_i(.|o_i(s))||^2)``; ``power = 1`` is the factor of the sharp
    truncated-gradient bound (``proofs_notes/truncated-gradient.md#sharp``), at most
    ``sqrt(1 - 1/|A_i|) / (1 - gamma)`` by Jensen's inequality.  ``lam_S`` has shape ``(|S|,)``.
    """
    if power not in (1, 2):
        raise ModelError(f"power = {power!r}, expected 1 or 2")
    p = policy.probs[i]
    # ||e_a - p||^2 = (sum_{b != a} p_b)^2 + sum_{b != a} p_b^2, summed over the other
    # actions only: the form 1 - 2 p_a + ||p||^2 cancels to rounding (1e-16) when p_a is
    # near 1, and its square root then loses the term of the likely action (about
    # sqrt(2) (1 - p_a)) entirely once 1 - p_a < 1e-8
    others = p[:, None, :] * (1.0 - np.eye(p.shape[1]))[None, :, :]
    sq = np.sum(others, axis=2) ** 2 + np.sum(others * others, axis=2)
    per_obs = np.sum(p * (np.sqrt(sq) if power == 1 else sq), axis=1)
    return float(lam_S @ per_obs[policy.observation_index(i)])


@dataclass(frozen=True)
class GradientErrorBounds:
    """Two bounds on ``||ghat_i - grad_i F||_2`` at one radius, per agent.

    Attributes:
        kappa: the radius.
        spec: ``(n,)`` SPEC section 3's ``sqrt(2) max_j D_j(kappa) / (1 - gamma)``.
        sharp: ``(n,)`` ``(1/n) sum_j c_ij D_j(kappa) m_i`` with ``c_ij = 1`` for ``j`` in
            ``N_i^kappa``, ``1/2`` outside, and ``m_i`` = :func:`score_norm_mass`
            (``proofs_notes/truncated-gradient.md#sharp``); never larger than ``spec``.
        score_mass: ``(n,)`` the ``m_i``.
    """

    kappa: int
    spec: FloatArray
    sharp: FloatArray
    score_mass: FloatArray


def gradient_error_bounds(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    lam_S: FloatArray,
    spreads: FloatArray,
    kappa: int,
) -> GradientErrorBounds:
    """Both bounds on the truncated gradient's error at radius ``kappa``, for any weights.

    ``lam_S`` ``(|S|,)`` the state occupancy; ``spreads`` ``(n,)`` the ``D_j(kappa)``
    (:func:`decay_profile`).  The sharp bound subtracts from the error term
    ``E = (1/n) sum_j (Qhat_j - Q_j)`` its midpoint over ``a_i`` for every ``j`` outside
    ``N_i^kappa`` (which the score does not see, as in the cancellation identity), halving
    those agents' share, and weights the score by the policy instead of its worst case
    ``sqrt 2`` (``proofs_notes/truncated-gradient.md#sharp``).
    """
    kappa = _check_radius(kappa)
    D = np.asarray(spreads, dtype=np.float64)
    if D.shape != (model.n,):
        raise ModelError(f"spreads has shape {D.shape}, expected ({model.n},)")
    spec = np.full(model.n, np.sqrt(2.0) * float(D.max()) / (1.0 - model.gamma))
    mass = np.array([score_norm_mass(policy, lam_S, i) for i in range(model.n)])
    sharp = np.empty(model.n)
    for i in range(model.n):
        inside = set(model.graph.neighbourhood(i, kappa))
        c = np.array([1.0 if j in inside else 0.5 for j in range(model.n)])
        sharp[i] = float(c @ D) / model.n * mass[i]
    return GradientErrorBounds(kappa, frozen(spec), frozen(sharp), frozen(mass))
