"""Algorithm 1 of Ying et al. (SPEC section 4): sampled shadow rewards, truncated critics,
truncated policy gradients, and the training loop -- with their exact expectations.

Each sampled estimator here has an exact counterpart computed on the joint system
(small ``n``), so tests can compare the two with a concentration radius
(``proofs_notes/algorithm1.md``):

=========================================  ==============================================
sampled                                    exact counterpart
=========================================  ==============================================
:func:`occupancy_estimate`                 :func:`finite_horizon_occupancy` (``lam^H_i``)
:func:`mc_critic`                          :func:`mc_critic_expectation`
:func:`td_critic`                          :func:`td_critic_mean_field` (see below)
:func:`replay_td_critic`                   :func:`td_critic_limit`
:func:`gradient_estimate`                  :func:`gradient_estimate_expectation`
=========================================  ==============================================

The two TD critics are compared with their counterparts by limits rather than
expectations.  :func:`td_critic_mean_field` is the deterministic recursion that the
count-indexed :func:`td_critic` follows as ``B -> inf`` at a fixed horizon ``H``; the
radius is ``verify.bounds.td_recursion_radius`` (``proofs_notes/algorithm1.md#td-radius``).
It approaches :func:`td_critic_limit`, the zero of the expected update, only as ``H``
grows.  :func:`replay_td_critic` (one transition per independent trajectory, batch TD(0)
to its fixed point) has :func:`td_critic_limit` itself as its large-batch limit, with the
radius ``verify.bounds.empirical_bellman_radius``
(``proofs_notes/algorithm1.md#replay-td``).

``z_{N_j^kappa}`` codes are those of :func:`reference.networked.truncation.hop_index`: agents in
increasing order, digit ``s_k |A_k| + a_k``, lowest agent most significant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.sparse import csr_array

from reference._arrays import FloatArray, IntArray, check_gamma, check_rng, frozen
from reference.errors import ModelError, SolverError
from reference.networked.backends import transition_operator
from reference.networked.exact import gradient_norm, score_contraction, solve
from reference.networked.model import NetworkedMDP
from reference.networked.policy import LocalizedSoftmaxPolicy
from reference.networked.sampling import Trajectories, geometric_horizons, rollout
from reference.networked.transition import contract_next_state
from reference.networked.truncation import (
    hop_codes,
    hop_index,
    hop_size,
    truncated_gradient,
)
from reference.networked.utilities import Utility

__all__ = [
    "Algorithm1Config",
    "Algorithm1History",
    "CriticTable",
    "GradientEstimate",
    "TDMeanField",
    "Transitions",
    "finite_horizon_occupancy",
    "finite_horizon_q",
    "gradient_estimate",
    "gradient_estimate_expectation",
    "mc_critic",
    "mc_critic_expectation",
    "occupancy_estimate",
    "replay_td_critic",
    "run_algorithm1",
    "sample_transitions",
    "shadow_reward_estimate",
    "td_critic",
    "td_critic_limit",
    "td_critic_mean_field",
    "truncated_geometric",
]

_EPS = float(np.finfo(np.float64).eps)


# ---------------------------------------------------------------------- occupancy
def occupancy_estimate(model: NetworkedMDP, traj: Trajectories) -> tuple[FloatArray, ...]:
    """``lamtilde_i = (1/B) sum_b sum_{t<H} gamma^t e_{(s_i^{b,t}, a_i^{b,t})}`` for every agent.

    One weighted ``bincount`` over all agents at once (per-agent offsets).  Each
    trajectory's contribution has l1 norm ``(1 - gamma^H)/(1 - gamma)`` exactly.
    """
    B, H = traj.actions.shape[0], traj.actions.shape[1]
    sizes = np.array([s * a for s, a in zip(model.n_states, model.n_actions, strict=True)])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    n_act = np.asarray(model.n_actions)
    code = offsets + traj.states[:, :H, :] * n_act + traj.actions  # (B, H, n)
    weights = np.broadcast_to((traj.gamma ** np.arange(H))[None, :, None], code.shape)
    flat = np.bincount(code.reshape(-1), weights=weights.reshape(-1), minlength=int(sizes.sum()))
    flat = flat / B
    return tuple(
        frozen(flat[o : o + sz].reshape(model.n_states[i], model.n_actions[i]))
        for i, (o, sz) in enumerate(zip(offsets, sizes, strict=True))
    )


def _state_laws(model: NetworkedMDP, policy: LocalizedSoftmaxPolicy, count: int) -> FloatArray:
    """``(count, |S|)``: row ``t`` is the joint state law ``rho^T P_pi^t``, ``t = 0..count-1``,
    one transposed operator application per step."""
    op = transition_operator(model, policy)
    laws = np.empty((count, model.states.size))
    state = model.joint_rho().astype(np.float64)
    for t in range(count):
        laws[t] = state
        if t + 1 < count:
            state = op.apply_transpose(state)
    return laws


def finite_horizon_occupancy(
    model: NetworkedMDP, policy: LocalizedSoftmaxPolicy, horizon: int
) -> tuple[FloatArray, FloatArray]:
    """Exact ``lam^H_S = sum_{t<H} gamma^t rho^T P_pi^t`` and its local marginals.

    Returns ``(lam_S^H, mu_H)`` with ``mu_H = rho^T P_pi^H`` the state law at time ``H``;
    ``local_occupancies(policy, lam_S^H)`` gives the per-agent tables.  Since
    ``lam - lam^H = sum_{t>=H} gamma^t mu_t >= 0`` with ``mu_t`` a distribution,
    ``||lam_i - lam^H_i||_1 = gamma^H / (1 - gamma)`` exactly.
    """
    if horizon < 0:
        raise ModelError(f"horizon = {horizon!r}, expected a non-negative integer")
    laws = _state_laws(model, policy, horizon + 1)
    total = model.gamma ** np.arange(horizon) @ laws[:horizon]
    return frozen(total), frozen(laws[horizon])


def shadow_reward_estimate(
    utilities: Sequence[Utility], occupancies: Sequence[FloatArray]
) -> tuple[FloatArray, ...]:
    """``rtilde_i = grad f_i(lamtilde_i)`` (SPEC section 4, step 1)."""
    return tuple(frozen(f.gradient(lam)) for f, lam in zip(utilities, occupancies, strict=True))


# ---------------------------------------------------------------------- critics
@dataclass(frozen=True)
class CriticTable:
    """A truncated critic ``Qtilde_j(z_{N_j^kappa})``.

    Attributes:
        agent: ``j``.
        kappa: truncation radius.
        agents: ``N_j^kappa``.
        table: ``(prod_{k in N_j^kappa} |S_k||A_k|,)`` values.
        counts: ``(same,)`` number of samples or updates per entry.
        method: ``"mc"``, ``"td"``, ``"replay-td"`` or ``"exact"``.
        agent_steps: agent-steps sampled to fit all critics of the call (shared).
        fixed_point_error: ``"replay-td"`` only: certified bound on
            ``max_z |table(z) - qhat(z)|``, ``qhat`` the exact fixed point of the empirical
            Bellman operator (:func:`replay_td_critic`); 0 for the other methods.
    """

    agent: int
    kappa: int
    agents: tuple[int, ...]
    table: FloatArray
    counts: FloatArray
    method: str
    agent_steps: int = 0
    fixed_point_error: float = 0.0


def truncated_geometric(
    gamma: float, horizon: int, batch: int, rng: np.random.Generator
) -> IntArray:
    """``T`` on ``{0..horizon-1}`` with ``P(T = t) propto gamma^t`` (inverse CDF, vectorised)."""
    if horizon < 1:
        raise ModelError(f"horizon = {horizon!r}, expected at least 1")
    w = gamma ** np.arange(horizon, dtype=np.float64) if gamma > 0 else np.eye(1, horizon)[0]
    cdf = np.cumsum(w / w.sum())
    cdf[-1] = 1.0
    return np.searchsorted(cdf, rng.random(batch), side="right").astype(np.int64)


def mc_critic(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    rewards: Sequence[FloatArray],
    kappa: int,
    batch: int,
    start_horizon: int,
    return_horizon: int,
    rng: np.random.Generator,
) -> tuple[CriticTable, ...]:
    """Monte-Carlo regression critics for every agent (SPEC section 4, step 2).

    Each of ``batch`` trajectories contributes one sample: a start time ``T`` with
    ``P(T = t) propto gamma^t`` on ``t < start_horizon`` (so ``(s^T, a^T)`` follows the
    normalised ``lam^{start_horizon}``), and the discounted return-to-go
    ``G_j = sum_{k < return_horizon} gamma^k r_j(s_j^{T+k}, a_j^{T+k})``.  The table entry at
    ``z`` is the average of ``G_j`` over samples with ``z_{N_j^kappa}^T = z`` (tabular
    least squares); entries without samples are 0.  Its expectation given the
    counts is :func:`mc_critic_expectation`; as both horizons grow it tends to the
    occupancy-conditional truncation of ``Q_j``.
    """
    rng = check_rng(rng)
    starts = truncated_geometric(model.gamma, start_horizon, batch, rng)
    traj = rollout(model, policy, batch, start_horizon + return_horizon, rng)
    rows = np.arange(batch)[:, None]
    times = starts[:, None] + np.arange(return_horizon)[None, :]  # (B, Hc)
    s_seg = traj.states[rows, times]  # (B, Hc, n)
    a_seg = traj.actions[rows, times]
    disc = model.gamma ** np.arange(return_horizon)
    out = []
    for j in range(model.n):
        agents = model.graph.neighbourhood(j, kappa)
        size = hop_size(model, agents)
        g = np.sum(disc[None, :] * rewards[j][s_seg[..., j], a_seg[..., j]], axis=1)
        z = hop_codes(model, agents, s_seg[:, 0, :], a_seg[:, 0, :])
        counts = np.bincount(z, minlength=size).astype(np.float64)
        sums = np.bincount(z, weights=g, minlength=size)
        table = np.where(counts > 0, sums / np.maximum(counts, 1.0), 0.0)
        # the estimator uses steps 0..T_b + Hc - 1 of trajectory b (the vectorised rollout
        # runs all to Hs + Hc, an implementation cost rather than samples it uses)
        steps = int(np.sum(starts + return_horizon)) * model.n
        out.append(CriticTable(j, kappa, agents, frozen(table), frozen(counts), "mc", steps))
    return tuple(out)


def finite_horizon_q(
    model: NetworkedMDP, policy: LocalizedSoftmaxPolicy, reward: FloatArray, j: int, horizon: int
) -> FloatArray:
    """Joint ``Q^H_j(s, a) = sum_{k<H} gamma^k E[r_j(s_j^k, a_j^k) | s^0 = s, a^0 = a]``.

    ``V^0 = 0``, ``V^{k+1} = R_j^pi + gamma P_pi V^k``; ``Q^H = R_j + gamma P V^{H-1}``
    (``Q^0 = 0``).  Shape ``(|S|, |A|)``; small ``n`` only.
    """
    op = transition_operator(model, policy)
    sd, ad = model.states.digits, model.actions.digits
    r_joint = reward[sd[:, j][:, None], ad[:, j][None, :]]
    if horizon == 0:
        return np.zeros_like(r_joint)
    r_pi = np.einsum("sa,sa->s", policy.local_action_probs(j), reward[sd[:, j]])
    v = np.zeros(model.states.size)
    for _ in range(horizon - 1):
        v = r_pi + model.gamma * op.apply(v)
    factors = [model.local_kernel_factors(k) for k in range(model.n)]
    return r_joint + model.gamma * contract_next_state(factors, v, model.n_states)


def mc_critic_expectation(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    rewards: Sequence[FloatArray],
    kappa: int,
    start_horizon: int,
    return_horizon: int,
) -> tuple[FloatArray, ...]:
    """``E[G_j | z^T = z] = sum_{(s,a) in z} lam^{Hs}(s,a) Q_j^{Hc}(s,a) / sum lam^{Hs}(s,a)``.

    Entries of ``z`` with zero ``lam^{Hs}`` mass are 0 (never sampled).
    """
    lam_S, _ = finite_horizon_occupancy(model, policy, start_horizon)
    lam = (lam_S[:, None] * policy.joint_matrix()).reshape(-1)
    out = []
    for j in range(model.n):
        idx, size = hop_index(model, model.graph.neighbourhood(j, kappa))
        q = finite_horizon_q(model, policy, rewards[j], j, return_horizon).reshape(-1)
        mass = np.bincount(idx.reshape(-1), weights=lam, minlength=size)
        tot = np.bincount(idx.reshape(-1), weights=lam * q, minlength=size)
        out.append(frozen(np.where(mass > 0, tot / np.where(mass > 0, mass, 1.0), 0.0)))
    return tuple(out)


def td_critic(
    model: NetworkedMDP,
    traj: Trajectories,
    rewards: Sequence[FloatArray],
    kappa: int,
    step_scale: float | None = None,
    step_offset: float | None = None,
) -> tuple[CriticTable, ...]:
    """Batched TD(0) critics on ``z_{N_j^kappa}`` along the trajectories (SPEC section 4).

    Transitions ``(z^t, r^t, z^{t+1})`` for ``t = 0..H-2`` are processed in time order, all
    trajectories at once.  Entry ``z`` moves by its mean TD error
    ``delta = r_j(s_j^t, a_j^t) + gamma Q(z^{t+1}) - Q(z^t)`` over the ``c_z`` trajectories
    at ``z`` at time ``t``, with step ``min(1, h c_z / (N_z + c_z + t0))``, where ``N_z``
    counts earlier updates of ``z``: the sequential schedule ``alpha = h / (N + t0)``
    indexed by the entry's own update count, applied to ``c_z`` updates at once.
    Defaults ``h = t0 = 1/(1-gamma)``: with ``h (1-gamma) >= 1`` the Robbins-Monro iterates
    converge at the ``1/sqrt(N)`` rate rather than ``N^{-h(1-gamma)}``.  The expected
    update vanishes at :func:`td_critic_limit` (same visit weights ``mu``), which the
    iterates approach as ``H`` and ``B`` grow; at a fixed horizon they stop short of it.
    As ``B -> inf`` at a fixed ``H`` the table tends to :func:`td_critic_mean_field`, with
    the finite-``B`` radius ``verify.bounds.td_recursion_radius``
    (``proofs_notes/algorithm1.md#td-radius``).

    Note: SPEC section 4 writes the step as ``h / (t + t0)``; here ``t`` is read as the
    entry's own update count, ``c_z`` simultaneous updates are applied as one step of
    weight ``c_z``, and the step is clipped at 1.  With ``t`` the time index instead, the
    total step over ``H`` times is only ``h log((H + t0)/t0)`` and the tables stay near 0.
    """
    B, H = traj.actions.shape[0], traj.actions.shape[1]
    h = 1.0 / (1.0 - traj.gamma) if step_scale is None else float(step_scale)
    t0 = h if step_offset is None else float(step_offset)
    if not (h > 0 and t0 > 0):
        raise ModelError(f"TD step h = {h!r}, t0 = {t0!r}, expected positive numbers")
    out = []
    for j in range(model.n):
        agents = model.graph.neighbourhood(j, kappa)
        size = hop_size(model, agents)
        z = hop_codes(model, agents, traj.states[:, :H, :], traj.actions)  # (B, H)
        r = rewards[j][traj.states[:, :H, j], traj.actions[:, :, j]]
        q = np.zeros(size)
        counts = np.zeros(size)
        for t in range(H - 1):
            delta = r[:, t] + traj.gamma * q[z[:, t + 1]] - q[z[:, t]]
            c = np.bincount(z[:, t], minlength=size).astype(np.float64)
            total = np.bincount(z[:, t], weights=delta, minlength=size)
            step = np.minimum(1.0, h * c / (counts + c + t0))
            q += np.where(c > 0, step * total / np.maximum(c, 1.0), 0.0)
            counts += c
        steps = B * H * model.n
        out.append(CriticTable(j, kappa, agents, frozen(q), frozen(counts), "td", steps))
    return tuple(out)


def _td_system(
    model: NetworkedMDP, policy: LocalizedSoftmaxPolicy, reward: FloatArray, j: int, kappa: int
) -> tuple[IntArray, int, FloatArray, FloatArray, FloatArray]:
    """``(z(s,a), |Z|, R, P^pi Phi, pi)`` on the joint system, flattened over ``(s, a)``.

    ``R(s, a) = r_j(s_j, a_j)``; ``(P^pi Phi)[(s,a), z] = sum_{s'} P(s'|s,a) sum_{a'}
    pi(a'|s') 1[z(s',a') = z]``, the law of the next code; ``pi`` is ``(|S|, |A|)``.
    """
    nS, nA = model.states.size, model.actions.size
    pi = policy.joint_matrix()
    idx, size = hop_index(model, model.graph.neighbourhood(j, kappa))
    flat = idx.reshape(-1)
    sd, ad = model.states.digits, model.actions.digits
    R = reward[sd[:, j][:, None], ad[:, j][None, :]].reshape(-1)
    onehot_next = np.zeros((nS, size))
    np.add.at(onehot_next, (np.repeat(np.arange(nS), nA), flat), pi.reshape(-1))
    P = model.joint_kernel()
    PPhi = np.einsum("sat,tz->saz", P, onehot_next).reshape(nS * nA, size)
    return flat, size, R, PPhi, pi


def td_critic_limit(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    reward: FloatArray,
    j: int,
    kappa: int,
    horizon: int,
) -> FloatArray:
    """Fixed point of the expected TD(0) update of :func:`td_critic` for agent ``j``.

    With ``mu(s, a) = sum_{t < H-1} P(s^t = s, a^t = a)`` (the update distribution), ``Phi``
    the one-hot map ``(s, a) -> z`` and ``P^pi[(s,a), (s',a')] = P(s'|s,a) pi(a'|s')``,
    the limit solves ``Phi^T M (R + gamma P^pi Phi q - Phi q) = 0`` on the entries ``z`` with
    ``mu`` mass; other entries stay at their initial value 0.  When every pair reachable
    in one step has ``mu`` mass (e.g. ``rho`` of full support), ``||Phi q - Q_j||_inf <=
    D_j(kappa) / (1 - gamma)`` on the support (``proofs_notes/algorithm1.md``).  It is
    the exact counterpart of :func:`replay_td_critic` (``#replay-td``); the large-batch
    limit of :func:`td_critic` at a finite horizon is :func:`td_critic_mean_field` instead.
    """
    nS, nA = model.states.size, model.actions.size
    mu_S = _state_laws(model, policy, max(horizon - 1, 0)).sum(axis=0)
    flat, size, R, PPhi, pi = _td_system(model, policy, reward, j, kappa)
    mu = (mu_S[:, None] * pi).reshape(-1)
    PhiTM = np.zeros((size, nS * nA))
    PhiTM[flat, np.arange(nS * nA)] = mu
    support = PhiTM.sum(axis=1) > 0
    A = np.diag(PhiTM.sum(axis=1)) - model.gamma * PhiTM @ PPhi
    b = PhiTM @ R
    q = np.zeros(size)
    sub = np.flatnonzero(support)
    q[sub] = np.linalg.solve(A[np.ix_(sub, sub)], b[sub])
    return frozen(q)


@dataclass(frozen=True)
class TDMeanField:
    """The large-batch limit of :func:`td_critic` at a finite horizon, with the terms of its
    finite-batch radius (``proofs_notes/algorithm1.md#td-radius``).

    Attributes:
        table: ``(|Z|,)`` ``qbar_{H-1}``, the limit of ``td_critic``'s table as ``B -> inf``.
        iterates: ``(H, |Z|)`` ``qbar_0 = 0, .., qbar_{H-1}``.
        steps: ``(H-1, |Z|)`` ``abar_t(z) = min(1, h m_t(z) / sum_{t' <= t} m_{t'}(z))``,
            0 where ``m_t(z) = 0``.
        increments: ``(H-1, |Z|)`` ``dbar_t(z) = E[r^t + gamma qbar_t(z^{t+1}) | z^t = z]
            - qbar_t(z)``, the mean TD error of the recursion, 0 where ``m_t(z) = 0``.
        mass: ``(H-1, |Z|)`` ``m_t(z) = Pr(z^t = z)``.
        gamma: the discount of the backups.
    """

    table: FloatArray
    iterates: FloatArray
    steps: FloatArray
    increments: FloatArray
    mass: FloatArray
    gamma: float


def td_critic_mean_field(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    reward: FloatArray,
    j: int,
    kappa: int,
    horizon: int,
    step_scale: float | None = None,
) -> TDMeanField:
    """The deterministic recursion that :func:`td_critic` follows as ``B -> inf`` at horizon
    ``H`` (``proofs_notes/algorithm1.md#td-radius``).

    With ``M_t = diag Pr(s^t = s, a^t = a)``, ``m_t = Phi^T M_t 1`` and the group means
    ``gbar_t(q) = Phi^T M_t (R + gamma P^pi Phi q) / m_t``, from ``qbar_0 = 0``::

        qbar_{t+1} = qbar_t + abar_t (gbar_t(qbar_t) - qbar_t),    t = 0 .. H-2,
        abar_t(z)  = min(1, h m_t(z) / sum_{t' <= t} m_{t'}(z)),

    the limits of the sampled quantities: ``c_t(z)/B -> m_t(z)`` and ``N_t(z)/B ->
    sum_{t'<t} m_{t'}(z)`` in the step ``min(1, h c / (N + c + t0))`` (``t0/B -> 0``), and the
    mean TD target at ``z`` tends to ``gbar_t``.  ``h`` defaults to ``1/(1-gamma)`` as in
    :func:`td_critic`.  It is not :func:`td_critic_limit`: at a finite ``H`` the recursion
    has not reached that fixed point (the note measures the gap).
    """
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise ModelError(f"horizon = {horizon!r}, expected an integer >= 1")
    g = model.gamma
    h = 1.0 / (1.0 - g) if step_scale is None else float(step_scale)
    if not h > 0:
        raise ModelError(f"TD step h = {h!r}, expected a positive number")
    flat, size, R, PPhi, pi = _td_system(model, policy, reward, j, kappa)
    q = np.zeros(size)
    seen = np.zeros(size)
    iterates, steps, increments, masses = [q], [], [], []
    for state in _state_laws(model, policy, horizon - 1):
        M = (state[:, None] * pi).reshape(-1)
        m = np.bincount(flat, weights=M, minlength=size)
        seen = seen + m
        live = m > 0
        target = np.bincount(flat, weights=M * (R + g * (PPhi @ q)), minlength=size)
        d = np.where(live, target / np.where(live, m, 1.0) - q, 0.0)
        a = np.where(live, np.minimum(1.0, h * m / np.where(live, seen, 1.0)), 0.0)
        q = q + a * d
        iterates.append(q)
        steps.append(a)
        increments.append(d)
        masses.append(m)
    empty = np.zeros((0, size))
    return TDMeanField(
        table=frozen(q),
        iterates=frozen(np.stack(iterates)),
        steps=frozen(np.stack(steps) if steps else empty),
        increments=frozen(np.stack(increments) if increments else empty),
        mass=frozen(np.stack(masses) if masses else empty),
        gamma=float(g),
    )


@dataclass(frozen=True)
class Transitions:
    """A replay buffer of ``B`` independent transitions, one per trajectory.

    Trajectory ``b`` is rolled out from ``rho`` under the policy and contributes only its
    transition at a time ``T_b`` drawn uniformly from ``{0, .., H-2}``, independently of
    the trajectory.  The ``B`` records are therefore i.i.d.; ``(s^T, a^T)`` has law
    ``mu / (H - 1)`` with ``mu = sum_{t < H-1} Pr(s^t = ., a^t = .)``, the visit weights of
    :func:`td_critic_limit` (``proofs_notes/algorithm1.md#replay-td``).

    Attributes:
        times: ``(B,)`` the times ``T_b``.
        states: ``(B, n)`` ``s^{T_b}``.
        actions: ``(B, n)`` ``a^{T_b}``.
        next_states: ``(B, n)`` ``s^{T_b + 1}``.
        next_actions: ``(B, n)`` ``a^{T_b + 1}``.
        horizon: ``H``.
        gamma: the discount the backups of :func:`replay_td_critic` use.
        agent_steps: ``n sum_b (T_b + 2)``, the agent-steps the buffer uses.
    """

    times: IntArray
    states: IntArray
    actions: IntArray
    next_states: IntArray
    next_actions: IntArray
    horizon: int
    gamma: float
    agent_steps: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "gamma", check_gamma(self.gamma))
        if self.horizon < 2:
            raise ModelError(f"horizon = {self.horizon!r}, expected at least 2")
        B = self.times.shape[0]
        if self.times.shape != (B,) or B < 1:
            raise ModelError(f"times has shape {self.times.shape}, expected (B,) with B >= 1")
        for name in ("states", "actions", "next_states", "next_actions"):
            arr = getattr(self, name)
            if arr.ndim != 2 or arr.shape[0] != B:
                raise ModelError(f"{name} has shape {arr.shape}, expected ({B}, n)")
        if np.any(self.times < 0) or np.any(self.times > self.horizon - 2):
            raise ModelError(f"times must lie in 0..{self.horizon - 2} (horizon {self.horizon})")


def sample_transitions(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    batch: int,
    horizon: int,
    rng: np.random.Generator,
) -> Transitions:
    """One transition ``(s^T, a^T, s^{T+1}, a^{T+1})`` from each of ``batch`` independent
    trajectories, ``T`` uniform on ``{0, .., horizon-2}``
    (``proofs_notes/algorithm1.md#replay-td``).

    Note: one transition per trajectory, not all ``H - 1`` of them, so that the records
    are independent and the per-entry Hoeffding bound of the note applies; transitions
    along one trajectory are Markov-dependent and their within-group state mix is not
    that of ``mu``.
    """
    rng = check_rng(rng)
    for name, value, least in (("batch", batch, 1), ("horizon", horizon, 2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ModelError(f"{name} = {value!r}, expected an integer >= {least}")
    times = rng.integers(0, horizon - 1, size=batch).astype(np.int64)
    # rolling every trajectory to max T + 2 steps is an implementation cost; trajectory b
    # uses T_b + 2 of them (counted in agent_steps)
    traj = rollout(model, policy, batch, int(times.max()) + 2, rng)
    rows = np.arange(batch)

    def read_only(a: IntArray) -> IntArray:
        out = np.array(a, dtype=np.int64, copy=True)
        out.setflags(write=False)
        return out

    times.setflags(write=False)
    return Transitions(
        times=times,
        states=read_only(traj.states[rows, times]),
        actions=read_only(traj.actions[rows, times]),
        next_states=read_only(traj.states[rows, times + 1]),
        next_actions=read_only(traj.actions[rows, times + 1]),
        horizon=int(horizon),
        gamma=model.gamma,
        agent_steps=int(np.sum(times + 2)) * model.n,
    )


def replay_td_critic(
    model: NetworkedMDP,
    transitions: Transitions,
    rewards: Sequence[FloatArray],
    kappa: int,
    tol: float = 1e-10,
    max_sweeps: int = 100_000,
) -> tuple[CriticTable, ...]:
    """Replay TD(0) critics: batch TD(0) on a fixed buffer, run to its fixed point.

    For agent ``j`` with codes ``z_b = z_{N_j^kappa}(s^{T_b}, a^{T_b})``,
    ``z'_b = z_{N_j^kappa}(s^{T_b+1}, a^{T_b+1})``, ``r_b = r_j(s_j^{T_b}, a_j^{T_b})`` and
    ``N_z = #{b : z_b = z}``, the table is the fixed point of the empirical Bellman operator

        (That q)(z) = (1/N_z) sum_{b : z_b = z} [ r_b + gamma q(z'_b) ]   (N_z > 0),
        (That q)(z) = 0                                                   (N_z = 0),

    i.e. ``qhat = rhat + gamma Phat qhat`` with ``Phat[z, z'] = #{b: z_b = z, z'_b = z'} / N_z``
    (``proofs_notes/algorithm1.md#replay-td``).  It is computed by synchronous sweeps
    ``q_{k+1} = That q_k`` from ``q_0 = 0`` -- TD(0) with step 1 on the whole buffer --
    until the certified error ``min(gamma^k ||rhat||_inf, gamma ||q_k - q_{k-1}||_inf) /
    (1 - gamma)`` is at most ``tol``; ``CriticTable.fixed_point_error`` adds a rounding
    allowance to it.  With ``transitions`` from :func:`sample_transitions`, the exact
    counterpart is :func:`td_critic_limit` at the same horizon, and
    ``max_{N_z > 0} |qhat(z) - q*(z)|`` has the radius
    ``verify.bounds.empirical_bellman_radius`` at any failure probability.

    Note: batch TD(0) with any constant step in ``(0, 1]`` converges to this same point
    (the certainty-equivalence estimate; Sutton and Barto 2018, section 6.3); step 1
    makes every sweep a ``gamma``-contraction in the inf-norm.  Unlike :func:`td_critic`,
    every backup uses the final table, so no step schedule enters the error.
    """
    g = float(transitions.gamma)
    if not tol > 0:
        raise ModelError(f"tol = {tol!r}, expected a positive tolerance")
    batch = transitions.times.shape[0]
    out = []
    for j in range(model.n):
        agents = model.graph.neighbourhood(j, kappa)
        size = hop_size(model, agents)
        z = hop_codes(model, agents, transitions.states, transitions.actions)
        z_next = hop_codes(model, agents, transitions.next_states, transitions.next_actions)
        r = rewards[j][transitions.states[:, j], transitions.actions[:, j]]
        counts = np.bincount(z, minlength=size).astype(np.float64)
        visited = counts > 0
        per = np.where(visited, counts, 1.0)
        r_hat = np.bincount(z, weights=r, minlength=size) / per
        # transition counts summed exactly (integers), then one division per entry
        P_hat = csr_array((np.ones(batch), (z, z_next)), shape=(size, size))
        P_hat.sum_duplicates()
        P_hat.data /= np.repeat(per, np.diff(P_hat.indptr))
        # q_1 = That q_0 = rhat; ||q_k - qhat|| <= gamma^k ||qhat|| <= gamma^k ||rhat||/(1-gamma)
        q = r_hat.copy()
        prior = g * float(np.max(np.abs(r_hat))) / (1.0 - g)
        bound, sweeps = prior, 1
        while bound > tol:
            q_new = r_hat + g * (P_hat @ q)
            sweeps += 1
            prior *= g
            post = g * float(np.max(np.abs(q_new - q))) / (1.0 - g)
            q = q_new
            bound = min(prior, post)
            if bound > tol and sweeps >= max_sweeps:
                raise SolverError(
                    f"replay TD for agent {j} reached max_sweeps = {max_sweeps} with "
                    f"certified error {bound:.3g} > tol = {tol:.3g}"
                )
        # rounding: rhat sums at most N_max terms; Phat rows carry one division each; a
        # sweep entry sums at most m = max row nonzeros products; every iterate is bounded
        # by ||r||/(1-gamma) and the contraction damps each step's error by 1/(1-gamma)
        row_nnz = int(np.max(np.diff(P_hat.indptr)))
        n_max = float(np.max(counts))
        r_abs = float(np.max(np.abs(r)))
        rounding = (n_max + row_nnz + 4) * _EPS * (r_abs + r_abs / (1.0 - g)) / (1.0 - g)
        out.append(
            CriticTable(
                j,
                kappa,
                agents,
                frozen(q),
                frozen(counts),
                "replay-td",
                transitions.agent_steps,
                bound + rounding,
            )
        )
    return tuple(out)


# ---------------------------------------------------------------------- gradient
def _critic_sum(
    model: NetworkedMDP,
    critics: Sequence[CriticTable],
    i: int,
    kappa: int,
    states: IntArray,
    actions: IntArray,
) -> FloatArray:
    """``(1/n) sum_{j in N_i^kappa} Qtilde_j(z_{N_j^kappa})`` at arrays of local states/actions."""
    total = np.zeros(states.shape[:-1])
    for j in model.graph.neighbourhood(i, kappa):
        c = critics[j]
        total += c.table[hop_codes(model, c.agents, states, actions)]
    return total / model.n


def _score_sum(
    policy: LocalizedSoftmaxPolicy, i: int, obs: IntArray, acts: IntArray, weights: FloatArray
) -> FloatArray:
    """``sum_k w_k score_i(a_k | o_k)`` as an ``(|O_i|, |A_i|)`` table (grouped sums)."""
    n_obs, n_act = policy.probs[i].shape
    probs = policy.probs[i][obs]  # (K, |A_i|)
    onehot = np.zeros_like(probs)
    onehot[np.arange(acts.size), acts] = 1.0
    contrib = weights[:, None] * (onehot - probs)
    out = np.zeros((n_obs, n_act))
    np.add.at(out, obs, contrib)
    return out


def _observations(policy: LocalizedSoftmaxPolicy, i: int, states: IntArray) -> IntArray:
    obs = np.zeros(states.shape[:-1], dtype=np.int64)
    for j in policy.observed[i]:
        obs = obs * policy.model.n_states[j] + states[..., j]
    return obs


@dataclass(frozen=True)
class GradientEstimate:
    """A sampled truncated gradient.

    Attributes:
        gradient: ``gtilde_i`` per agent, shape ``(|O_i|, |A_i|)``.
        agent_steps: agent-steps sampled.
        horizon: ``H'``, or ``None`` for the geometric variant.
    """

    gradient: tuple[FloatArray, ...]
    agent_steps: int
    horizon: int | None


def gradient_estimate(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    critics: Sequence[CriticTable],
    kappa: int,
    batch: int,
    rng: np.random.Generator,
    horizon: int | None = None,
) -> GradientEstimate:
    """Truncated policy-gradient estimate (SPEC section 4, step 3).

    Fixed horizon ``H'`` (``horizon`` given): ``gtilde_i = (1/B') sum_b sum_{t<H'} gamma^t
    [(1/n) sum_{j in N_i^kappa} Qtilde_j(z^{b,t})] score_i(a_i^{b,t} | o_i^{b,t})``, biased by
    the missing tail ``t >= H'``.  Geometric (``horizon=None``): one time
    ``T ~ Geometric`` with ``P(T = t) = (1 - gamma) gamma^t`` per trajectory and the sample
    ``(1/(1-gamma)) [...]_T score_i(. at T)``, unbiased for the infinite-horizon
    :func:`gradient_estimate_expectation`.
    """
    rng = check_rng(rng)
    if horizon is None:
        times = geometric_horizons(model.gamma, batch, rng)
        length = int(times.max()) + 1
        traj = rollout(model, policy, batch, length, rng)
        rows = np.arange(batch)
        s_t, a_t = traj.states[rows, times], traj.actions[rows, times]  # (B, n)
        scale = np.full(batch, 1.0 / (1.0 - model.gamma))
    else:
        length = horizon
        traj = rollout(model, policy, batch, horizon, rng)
        s_t = traj.states[:, :horizon, :].reshape(-1, model.n)
        a_t = traj.actions.reshape(-1, model.n)
        scale = np.tile(model.gamma ** np.arange(horizon), batch)
    grads = []
    for i in range(model.n):
        w = scale * _critic_sum(model, critics, i, kappa, s_t, a_t)
        obs = _observations(policy, i, s_t)
        grads.append(frozen(_score_sum(policy, i, obs, a_t[:, i], w) / batch))
    # the algorithm consumes T_b + 1 steps of trajectory b (the vectorised rollout runs all
    # to the longest, which is an implementation cost, not a sample the estimator uses)
    used = int(np.sum(times + 1)) * model.n if horizon is None else batch * length * model.n
    return GradientEstimate(tuple(grads), used, horizon)


def gradient_estimate_expectation(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    critics: Sequence[CriticTable],
    kappa: int,
    horizon: int | None = None,
) -> tuple[FloatArray, ...]:
    """Exact expectation of :func:`gradient_estimate` for fixed critic tables:
    ``sum_{s,a} lam^{H'}(s,a) H_i(s,a) score_i`` (``lam`` itself when ``horizon=None``)."""
    if horizon is None:
        op = transition_operator(model, policy)
        lam_S = op.solve_occupancy(model.joint_rho()).x
    else:
        lam_S, _ = finite_horizon_occupancy(model, policy, horizon)
    pi = policy.joint_matrix()
    sd, ad = model.states.digits, model.actions.digits
    states = np.broadcast_to(sd[:, None, :], (sd.shape[0], ad.shape[0], model.n))
    actions = np.broadcast_to(ad[None, :, :], (sd.shape[0], ad.shape[0], model.n))
    out = []
    for i in range(model.n):
        table = _critic_sum(model, critics, i, kappa, states, actions)
        out.append(score_contraction(policy, lam_S, table, i, pi))
    return tuple(out)


# ---------------------------------------------------------------------- training loop
@dataclass(frozen=True)
class Algorithm1Config:
    """Hyper-parameters of Algorithm 1.

    Attributes:
        kappa: truncation radius.
        step_size: ``eta`` of ``theta_i += eta gtilde_i``.
        iterations: number of policy updates.
        occupancy_batch, occupancy_horizon: ``B`` and ``H`` of step 1.
        critic: ``"mc"``, ``"td"`` or ``"replay-td"``.
        critic_batch: trajectories per critic fit.
        critic_horizon: ``H`` of TD trajectories (at least 2 for ``"replay-td"``), or the
            start and return horizons of the Monte-Carlo critic.
        gradient_batch: ``B'`` of step 3.
        gradient_horizon: ``H'``, or ``None`` for the geometric (unbiased) variant.
        td_step_scale, td_step_offset: ``h`` and ``t0`` of the TD step ``h / (N + t0)``
            (default ``1/(1-gamma)`` each, see :func:`td_critic`).
    """

    kappa: int = 1
    step_size: float = 0.1
    iterations: int = 10
    occupancy_batch: int = 256
    occupancy_horizon: int = 50
    critic: Literal["mc", "td", "replay-td"] = "mc"
    critic_batch: int = 512
    critic_horizon: int = 50
    gradient_batch: int = 512
    gradient_horizon: int | None = None
    td_step_scale: float | None = None
    td_step_offset: float | None = None


@dataclass(frozen=True)
class Algorithm1History:
    """Typed history of :func:`run_algorithm1`, one entry per iteration (before the update).

    Attributes:
        objective: exact ``F(theta_k)`` (NaN when the instance is too large).
        gradient_norm: exact ``||grad F(theta_k)||`` (NaN when too large).
        truncation_floor: exact ``||ghat - grad F||`` with occupancy weights (NaN when too large).
        estimate_norm: ``||gtilde_k||``.
        samples: cumulative agent-steps sampled so far.
        policies: the policy at each iteration, then the final one.
    """

    objective: FloatArray
    gradient_norm: FloatArray
    truncation_floor: FloatArray
    estimate_norm: FloatArray
    samples: IntArray
    policies: tuple[LocalizedSoftmaxPolicy, ...] = field(repr=False)


def run_algorithm1(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    utilities: Sequence[Utility],
    config: Algorithm1Config,
    rng: np.random.Generator,
    exact: bool = True,
) -> Algorithm1History:
    """Algorithm 1: estimate shadow rewards, fit truncated critics, step along ``gtilde``.

    With ``exact=True`` each iteration also records the exact objective, gradient norm
    and truncation floor (dense oracles; small ``n`` only).
    """
    rng = check_rng(rng)
    objs, norms, floors, est, samples = [], [], [], [], []
    used = 0
    policies = [policy]
    for _ in range(config.iterations):
        if exact:
            sol = solve(model, policy, utilities)
            objs.append(sol.objective)
            norms.append(sol.gradient_norm)
            ghat = truncated_gradient(model, policy, sol, config.kappa, "occupancy")
            floors.append(gradient_norm([a - b for a, b in zip(ghat, sol.gradient, strict=True)]))
        else:
            objs.append(np.nan)
            norms.append(np.nan)
            floors.append(np.nan)
        occ_traj = rollout(model, policy, config.occupancy_batch, config.occupancy_horizon, rng)
        used += config.occupancy_batch * config.occupancy_horizon * model.n
        rewards = shadow_reward_estimate(utilities, occupancy_estimate(model, occ_traj))
        if config.critic == "mc":
            critics = mc_critic(
                model,
                policy,
                rewards,
                config.kappa,
                config.critic_batch,
                config.critic_horizon,
                config.critic_horizon,
                rng,
            )
        elif config.critic == "replay-td":
            buffer = sample_transitions(
                model, policy, config.critic_batch, config.critic_horizon, rng
            )
            critics = replay_td_critic(model, buffer, rewards, config.kappa)
        else:
            traj = rollout(model, policy, config.critic_batch, config.critic_horizon, rng)
            critics = td_critic(
                model, traj, rewards, config.kappa, config.td_step_scale, config.td_step_offset
            )
        used += critics[0].agent_steps
        estimate = gradient_estimate(
            model,
            policy,
            critics,
            config.kappa,
            config.gradient_batch,
            rng,
            config.gradient_horizon,
        )
        used += estimate.agent_steps
        g = estimate.gradient
        est.append(gradient_norm(g))
        samples.append(used)
        policy = policy.with_theta(
            [t + config.step_size * d for t, d in zip(policy.theta, g, strict=True)]
        )
        policies.append(policy)
    return Algorithm1History(
        frozen(np.array(objs)),
        frozen(np.array(norms)),
        frozen(np.array(floors)),
        frozen(np.array(est)),
        np.array(samples, dtype=np.int64),
        tuple(policies),
    )
