"""Multi-agent PPO (Zhao et al. 2023, SPEC section 5): the exact mirror-descent step, its
log-linear parameter form, Algorithm 3 (projected SGD), the sampled ``Q^{0:m}`` estimator,
the training loop and the bound ``B(K)``.

Derivations: ``proofs_notes/mappo-bound.md`` (the bound, both normalisations, the error terms
of inexact steps) and ``proofs_notes/algorithm3.md`` (Algorithm 3's rate and the KL it
controls).

Which policies the pieces use (SPEC section 5, "all agents using Q under the old pi_k"):

* every agent's target ``Q^{0:m}_{pi_k}`` is the localized Q of the *old* joint policy ``pi_k``
  (the later agents ``m+1..N-1`` are marginalised with ``pi_k``);
* the sampling distribution of agent ``m`` is ``sigma^m_k(s, a^{0:m}) = nu_{pi_k}(s)
  pi_k^{0:m}(a^{0:m} | s)``: the state from the old policy's visitation, the earlier agents'
  actions *and* agent ``m``'s own action from the old policy.

The named alternative ``q_policy="sequential"`` evaluates agent ``m``'s target under the
partially updated policy ``(pi_{k+1}^{0:m-1}, pi_k^{m:N-1})``; the bound ``B(K)`` is derived for
``"old"`` only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.optimize

from reference._arrays import FloatArray, IntArray, check_rng, draw_rows, frozen
from reference.cooperative.exact import GameValues, context_weights, evaluate_game
from reference.cooperative.game import CooperativeMarkovGame
from reference.cooperative.policy import (
    ConditionalPolicy,
    DenseFeatures,
    IndicatorFeatures,
    LogLinearPolicy,
    project_ball,
)
from reference.errors import ModelError, PolicyError
from reference.tabular import log_softmax, policy_iteration, softmax_last_axis

__all__ = [
    "Algorithm3Result",
    "FitResult",
    "MAPPOHistory",
    "QSamples",
    "Schedule",
    "advantage_step",
    "algorithm3",
    "algorithm3_excess_bound",
    "anytime_last_iterate_bound",
    "beta_at",
    "fit_loglinear",
    "inexact_step_terms",
    "mappo_bound",
    "mirror_descent_step",
    "run_mappo",
    "sample_localized_q",
    "sigma_weights",
    "tuned_beta",
    "weighted_kl",
]

Schedule = Literal["sqrt-K", "sqrt-k"]
"""``"sqrt-K"``: ``beta_k = beta sqrt(K)`` (the bound's schedule); ``"sqrt-k"``:
``beta_k = beta sqrt(k + 1)`` (anytime)."""


def beta_at(beta: float, k: int, K: int, schedule: Schedule) -> float:
    """The penalty ``beta_k`` of iteration ``k`` (0-based) out of ``K``."""
    if not beta > 0 or not math.isfinite(beta):
        raise ModelError(f"beta = {beta!r}, expected a finite beta > 0")
    if schedule == "sqrt-K":
        return beta * math.sqrt(K)
    if schedule == "sqrt-k":
        return beta * math.sqrt(k + 1)
    raise ModelError(f"schedule = {schedule!r}, expected 'sqrt-K' or 'sqrt-k'")


def tuned_beta(n_agents: int, log_actions: float, gamma: float) -> float:
    """``beta = sqrt(N / (8 log|A|)) / (1 - gamma)``, the minimiser of :func:`mappo_bound` over
    ``beta`` (``proofs_notes/mappo-bound.md#tuned``)."""
    if not log_actions > 0:
        raise ModelError(f"log|A| = {log_actions!r}: a game with one joint action has no step")
    return math.sqrt(n_agents / (8 * log_actions)) / (1 - gamma)


def mappo_bound(
    K: int,
    beta: float,
    n_agents: int,
    log_actions: float,
    gamma: float,
    normalised: bool = False,
) -> float:
    """``B(K) = beta log|A| / ((1-gamma) sqrt K) + N / (8 beta (1-gamma)^3 sqrt K)`` (SPEC
    section 5; ``proofs_notes/mappo-bound.md#bound``), the bound on
    ``(1/K) sum_{k<K} (J* - J(pi_k))`` for exact Q, uniform ``pi_0`` and ``beta_k = beta sqrt K``.
    ``normalised=True`` multiplies by ``1 - gamma`` (values in ``[0, 1]``)."""
    if K < 1:
        raise ModelError(f"K = {K!r}, expected K >= 1")
    g = gamma
    b = beta * log_actions / ((1 - g) * math.sqrt(K)) + n_agents / (
        8 * beta * (1 - g) ** 3 * math.sqrt(K)
    )
    return b * (1 - g) if normalised else b


def anytime_last_iterate_bound(
    K: int, beta: float, n_agents: int, log_actions: float, gamma: float
) -> float:
    """Bound on ``J* - J(pi_K)`` for exact steps with ``beta_k = beta sqrt(k+1)``:
    ``beta (log|A| + N H_K / (8 beta^2 (1-gamma)^2)) / (2 (1-gamma) (sqrt(K+1) - 1))`` with
    ``H_K = sum_{j<=K} 1/j`` (``proofs_notes/mappo-bound.md#anytime``; uses monotone
    improvement, so it holds for exact steps only)."""
    if K < 1:
        raise ModelError(f"K = {K!r}, expected K >= 1")
    g = gamma
    harmonic = float(np.sum(1.0 / np.arange(1, K + 1)))
    num = beta * (log_actions + n_agents * harmonic / (8 * beta**2 * (1 - g) ** 2))
    return num / (2 * (1 - g) * (math.sqrt(K + 1) - 1))


def mirror_descent_step(
    policy: ConditionalPolicy, payoffs: tuple[FloatArray, ...], beta_k: float
) -> ConditionalPolicy:
    """``pi^m_{k+1}(.|c) ∝ pi^m_k(.|c) exp(payoff^m(c, .) / beta_k)`` for every agent and
    context (SPEC section 5, ideal step).  ``payoffs[m]`` is shaped like ``pi^m``: the
    localized ``Q^{0:m}_{pi_k}`` or the local advantage ``A^m`` (identical steps, since they
    differ by a function of the context)."""
    if not beta_k > 0:
        raise ModelError(f"beta_k = {beta_k!r}, expected > 0")
    if len(payoffs) != len(policy.conditionals):
        raise PolicyError(
            f"payoffs has {len(payoffs)} entries, expected {len(policy.conditionals)}"
        )
    new = []
    for m, (pm, q) in enumerate(zip(policy.conditionals, payoffs, strict=True)):
        if q.shape != pm.shape:
            raise PolicyError(f"payoff {m} has shape {q.shape}, expected {pm.shape}")
        with np.errstate(divide="ignore"):
            logits = np.log(pm)
        logits += q * (1.0 / beta_k)
        new.append(softmax_last_axis(logits))
    # softmax rows are stochastic by construction and keep pi^m's shape
    return ConditionalPolicy._trusted(policy.game, tuple(new))


def advantage_step(
    policy: ConditionalPolicy, values: GameValues, beta_k: float
) -> ConditionalPolicy:
    """The same step driven by the local advantages ``A^m`` (SPEC section 5)."""
    return mirror_descent_step(policy, values.advantages, beta_k)


def sigma_weights(policy: ConditionalPolicy, nu: FloatArray, m: int) -> FloatArray:
    """``sigma^m(s, a^{0:m}) = nu(s) pi^{0:m}(a^{0:m}|s)``, agent ``m``'s sampling distribution."""
    out: FloatArray = context_weights(policy, nu, m)[..., None] * policy.conditionals[m]
    return out


@dataclass(frozen=True)
class FitResult:
    """The exact ``sigma``-weighted least-squares step of one agent.

    Attributes:
        theta: ``(d_m,)`` the minimiser of ``E_sigma[(phi.(theta - theta_k) - y)^2]`` over the
            ball ``||theta|| <= R``.
        loss: the minimum value.
        constrained: whether the ball constraint is active.
    """

    theta: FloatArray
    loss: float
    constrained: bool


def _weighted_loss(
    features: IndicatorFeatures | DenseFeatures,
    m: int,
    theta: FloatArray,
    theta_k: FloatArray,
    targets: FloatArray,
    weights: FloatArray,
) -> float:
    resid = features.logits(m, theta - theta_k) - targets
    return float(np.sum(weights * resid**2))


def fit_loglinear(
    features: IndicatorFeatures | DenseFeatures,
    m: int,
    theta_k: FloatArray,
    targets: FloatArray,
    weights: FloatArray,
    radius: float = math.inf,
) -> FitResult:
    """``argmin_{||theta|| <= R} E_sigma[(phi.(theta - theta_k) - y)^2]`` exactly.

    ``targets`` (``y = Q^{0:m}/beta_k``) and ``weights`` (``sigma^m``) are shaped like agent
    ``m``'s context-action table.  Writing ``G = sum sigma phi phi^T`` and
    ``b = sum sigma phi y``, the unconstrained minimisers are ``theta_k + G^+ b + null(G)``.  We
    return ``theta_k + G^+ b`` (the data cannot see ``theta_k``'s null-space part, so it is
    kept) if it lies in the ball; otherwise the least-norm minimiser ``G^+(G theta_k + b)`` if
    that does; otherwise ``theta(lam) = (G + lam I)^{-1} (G theta_k + b)`` with
    ``||theta(lam)|| = R`` (KKT), found by root-finding on the eigenbasis of ``G``
    (``||theta(lam)||`` decreases from the least-norm minimiser's norm as ``lam`` grows).
    For one-hot features with ``sigma > 0`` and ``R = inf`` this is the ideal step
    ``theta_k + Q/beta_k`` coordinatewise.
    """
    G = features.gram(m, weights)
    b = features.pullback(m, weights * targets)
    evals, U = np.linalg.eigh(G)
    scale = max(float(evals.max()), 1.0)
    keep = evals > G.shape[0] * np.finfo(np.float64).eps * scale
    c_b = U.T @ b
    w = U[:, keep] @ (c_b[keep] / evals[keep])
    theta = theta_k + w
    constrained = False
    c = np.where(keep, U.T @ (G @ theta_k + b), 0.0)
    pos = np.where(keep, evals, 0.0)
    least_norm = U[:, keep] @ (c[keep] / pos[keep])
    if float(np.linalg.norm(theta)) > radius and float(np.linalg.norm(least_norm)) <= radius:
        theta = least_norm
    elif float(np.linalg.norm(theta)) > radius:

        def excess(lam: float) -> float:
            return float(np.sqrt(np.sum((c / (pos + lam)) ** 2))) - radius

        hi = max(float(np.linalg.norm(c)) / radius, 1.0)
        while excess(hi) > 0:
            hi *= 2
        lam = float(scipy.optimize.brentq(excess, 1e-300, hi, xtol=1e-15, rtol=1e-14))
        theta = U @ (c / (pos + lam))
        theta = project_ball(theta, radius)
        constrained = True
    return FitResult(
        theta=frozen(theta),
        loss=_weighted_loss(features, m, theta, theta_k, targets, weights),
        constrained=constrained,
    )


@dataclass(frozen=True)
class Algorithm3Result:
    """Output of Algorithm 3 for one agent.

    Attributes:
        theta: ``(d_m,)`` the averaged iterate ``(1/T) sum_{t=1}^{T} theta_t``.
        last: ``(d_m,)`` ``theta_T``.
        steps: ``T``.
        eta: the step size used.
        gradient_bound: ``G``, a bound on every stochastic gradient's norm.
    """

    theta: FloatArray
    last: FloatArray
    steps: int
    eta: float
    gradient_bound: float


def algorithm3(
    features: IndicatorFeatures | DenseFeatures,
    m: int,
    theta_k: FloatArray,
    flat: IntArray,
    targets: FloatArray,
    radius: float,
    target_bound: float,
    eta: float | None = None,
) -> Algorithm3Result:
    """Algorithm 3 of Zhao et al. (2023): projected SGD with averaging on
    ``E_sigma[(phi.(theta - theta_k) - y)^2]`` over ``||theta|| <= R``.

    From ``theta_0 = 0`` (the seed's initialisation), for ``t = 0..T-1`` with sample
    ``(c_t, a_t) = flat[t]`` and target ``y_t = targets[t]`` (``Qhat/beta_k``):

        theta_{t+1} = Proj_R( theta_t - 2 eta phi_t (phi_t.(theta_t - theta_k) - y_t) ),

    and the output is ``(1/T) sum_{t=1}^{T} theta_t``.  With ``|y_t| <= target_bound`` every
    stochastic gradient has norm at most ``G = 2 (2R + target_bound)``; the default step
    ``eta = R / (G sqrt T)`` balances the two terms of the rate
    (``proofs_notes/algorithm3.md#rate``).
    """
    T = int(flat.shape[0])
    if T < 1 or targets.shape != (T,):
        raise ModelError(f"Algorithm 3 needs T >= 1 samples with one target each, got {T}")
    if not (radius > 0 and math.isfinite(radius)):
        raise ModelError(f"radius = {radius!r}, Algorithm 3 needs a finite R > 0")
    if float(np.linalg.norm(theta_k)) > radius * (1 + 1e-12):
        raise PolicyError(f"||theta_k|| = {np.linalg.norm(theta_k)!r} exceeds R = {radius}")
    y_max = float(np.max(np.abs(targets)))
    if y_max > target_bound * (1 + 4 * np.finfo(np.float64).eps):
        raise ModelError(
            f"a target has |y| = {y_max!r} > target_bound = {target_bound!r}; the rate's "
            "gradient bound G would be invalid"
        )
    G = 2 * (2 * radius + target_bound)
    step = radius / (G * math.sqrt(T)) if eta is None else float(eta)
    if not step > 0:
        raise ModelError(f"eta = {eta!r}, expected > 0")
    theta = np.zeros_like(theta_k)
    total = np.zeros_like(theta_k)
    r2 = radius * radius
    chunk = 4096
    for start in range(0, T, chunk):
        rows = features.rows(m, flat[start : start + chunk])
        ys = targets[start : start + chunk]
        for phi, y in zip(rows, ys, strict=True):
            resid = float(phi @ (theta - theta_k)) - float(y)
            theta = theta - (2 * step * resid) * phi
            nrm2 = float(theta @ theta)
            if nrm2 > r2:
                theta = theta * (radius / math.sqrt(nrm2))
            total += theta
    return Algorithm3Result(
        theta=frozen(total / T), last=frozen(theta), steps=T, eta=step, gradient_bound=G
    )


def algorithm3_excess_bound(
    T: int, radius: float, gradient_bound: float, eta: float, delta: float
) -> float:
    """High-probability bound on ``f(theta_bar) - min_ball f`` for :func:`algorithm3`
    (``proofs_notes/algorithm3.md#rate``):

        R^2 / (2 eta T) + eta G^2 / 2 + 2 G R sqrt(2 log(1/delta) / T) + 2 G R / T,

    from online gradient descent's regret (``||theta_0 - theta*|| <= R`` since ``theta_0 = 0``),
    the one-sided Azuma-Hoeffding inequality for the martingale
    ``sum_t <grad f(theta_t) - g_t, theta_t - theta*>`` (each increment lies, given the past,
    in an interval of length ``2 G ||theta_t - theta*|| <= 4 G R``), the one-index shift of
    the average, and Jensen; failure probability ``delta``."""
    if not 0 < delta < 1:
        raise ModelError(f"delta = {delta!r}, expected 0 < delta < 1")
    R, G = radius, gradient_bound
    return (
        R * R / (2 * eta * T)
        + eta * G * G / 2
        + 2 * G * R * math.sqrt(2 * math.log(1 / delta) / T)
        + 2 * G * R / T
    )


def weighted_kl(log_p: FloatArray, log_q: FloatArray, context_weight: FloatArray) -> float:
    """``sum_c w(c) KL(p(.|c) || q(.|c))`` from log-probabilities shaped ``(..., |A^m|)``
    (log space, so probabilities that underflow to 0 do not turn the sum into NaN)."""
    p = np.exp(log_p)
    with np.errstate(invalid="ignore"):
        terms = np.where(p > 0, p * (log_p - log_q), 0.0)
    return float(np.sum(context_weight * terms.sum(axis=-1)))


@dataclass(frozen=True)
class QSamples:
    """Draws ``(s, a) ~ nu_pi x pi`` with unbiased estimates of ``Q_pi(s, a)``.

    Attributes:
        states: ``(B,)`` int64 states ``s``.
        actions: ``(B, N)`` int64 joint actions ``(a^0, ..., a^{N-1})``.
        estimates: ``(B,)`` undiscounted reward sums over a Geometric(1-gamma) continuation;
            ``E[estimates | s, a^{0:m}] = Q^{0:m}_pi(s, a^{0:m})`` for every ``m``.
        env_steps: environment steps simulated: the burn-in transitions plus every
            continuation step (each draws one reward; the last one needs no transition).
    """

    states: IntArray
    actions: IntArray
    estimates: FloatArray
    env_steps: int


def sample_localized_q(
    game: CooperativeMarkovGame,
    policy: ConditionalPolicy,
    n_samples: int,
    rng: np.random.Generator,
) -> QSamples:
    """The sampled ``Qhat^{0:m}`` of SPEC section 5, ``n_samples`` rollouts at once.

    Each rollout starts at ``s_0 ~ rho`` and runs ``pi`` for ``T`` steps with
    ``P(T = t) = (1-gamma) gamma^t``, so ``s_T ~ nu_pi``; it draws ``a ~ pi(.|s_T)`` (all agents),
    then sums the *undiscounted* rewards ``r(s_{T+j}, a_{T+j})`` for ``j = 0..L`` with
    ``P(L >= j) = gamma^j``.  Since ``E[sum_{j<=L} r_j] = sum_j gamma^j E[r_j]``, the sum is
    unbiased for ``Q_pi(s, a)`` and, the later agents' actions being drawn from ``pi``, for
    ``Q^{0:m}_pi(s, a^{0:m})`` given ``(s, a^{0:m})`` (``proofs_notes/algorithm3.md#sampled-q``).
    """
    if n_samples < 1:
        raise ModelError(f"n_samples = {n_samples!r}, expected >= 1")
    if policy.game is not game:
        raise PolicyError("the policy was built for a different game object")
    rng = check_rng(rng)
    g = game.gamma
    n_s, n_a = game.n_states, game.n_joint_actions
    pi_cum = np.cumsum(policy.joint_matrix(), axis=1)
    P_cum = np.cumsum(game.tabular.P.reshape(n_s * n_a, n_s), axis=1)
    r_flat = game.tabular.r.reshape(-1)
    B = int(n_samples)
    s = draw_rows(np.cumsum(game.rho)[None, :], np.zeros(B, dtype=np.int64), rng)
    horizon = rng.geometric(1 - g, size=B) - 1 if g > 0 else np.zeros(B, dtype=np.int64)
    steps = 0
    for t in range(int(horizon.max())):
        live = np.flatnonzero(horizon > t)
        a = draw_rows(pi_cum, s[live], rng)
        s[live] = draw_rows(P_cum, s[live] * n_a + a, rng)
        steps += live.size
    a0 = draw_rows(pi_cum, s, rng)
    start_s, start_a = s.copy(), a0.copy()
    cont = rng.geometric(1 - g, size=B) - 1 if g > 0 else np.zeros(B, dtype=np.int64)
    total = np.zeros(B)
    a = a0
    for j in range(int(cont.max()) + 1):
        live = np.flatnonzero(cont >= j)
        if j > 0:
            a = draw_rows(pi_cum, s[live], rng)
        else:
            a = a[live]
        total[live] += r_flat[s[live] * n_a + a]
        steps += live.size
        if j < int(cont.max()):
            nxt = np.flatnonzero(cont[live] > j)
            s[live[nxt]] = draw_rows(P_cum, s[live[nxt]] * n_a + a[nxt], rng)
    actions = np.stack(np.unravel_index(start_a, game.action_counts), axis=1).astype(np.int64)
    return QSamples(
        states=start_s.astype(np.int64), actions=actions, estimates=frozen(total), env_steps=steps
    )


def inexact_step_terms(
    old: ConditionalPolicy,
    logit_change: tuple[FloatArray, ...],
    localized: tuple[FloatArray, ...],
    beta_k: float,
    comparator: ConditionalPolicy,
    comparator_nu: FloatArray,
    gamma: float,
) -> FloatArray:
    """Per-agent error terms of an inexact step (``proofs_notes/mappo-bound.md#inexact``).

    ``logit_change[m]`` is ``log pi^m_{k+1} - log pi^m_k`` up to a function of the context (for
    a log-linear policy, ``phi.(theta_{k+1} - theta_k)``).  With
    ``eps^m = logit_change[m] - Q^{0:m}_{pi_k}/beta_k``, returns for each agent

        beta_k E_{c ~ w*^m} [ <pi_k^m - pi*^m, eps^m>(c) + ((e + osc_c eps^m)^2 - e^2) / 8 ],

    with ``e = 1/((1-gamma) beta_k)``,

    where ``w*^m`` is the comparator's context distribution and ``osc_c`` the range over
    actions.  Zero for the exact step.  Summed over agents, divided by ``1-gamma`` and averaged
    over ``k``, this is what inexact steps add to ``B(K)``."""
    out = np.empty(len(localized))
    eta_range = 1.0 / ((1 - gamma) * beta_k)
    for m, q in enumerate(localized):
        eps = logit_change[m] - q / beta_k
        eps = eps - eps.max(axis=-1, keepdims=True)
        w = context_weights(comparator, comparator_nu, m)
        inner = np.sum((old.conditionals[m] - comparator.conditionals[m]) * eps, axis=-1)
        osc = eps.max(axis=-1) - eps.min(axis=-1)
        extra = ((eta_range + osc) ** 2 - eta_range**2) / 8
        out[m] = beta_k * float(np.sum(w * (inner + extra)))
    return frozen(out)


Step = Literal["exact", "loglinear", "algorithm3"]
QSource = Literal["exact", "sampled"]
OutputRule = Literal["uniform", "average", "last"]


@dataclass(frozen=True)
class MAPPOHistory:
    """Record of a MA-PPO run.

    Attributes:
        J: ``(K+1,)`` exact ``J(pi_k)`` for ``k = 0..K``.
        J_star: ``J*`` by certified value iteration; ``J_star_error`` its certified error.
        comparator_J: exact ``J`` of the deterministic policy returned by policy iteration,
            the comparator of the error terms; optimal, so within ``J_star_error`` plus its
            evaluation error of ``J*``.
        betas: ``(K,)`` the ``beta_k`` used.
        average_gap: ``(1/K) sum_{k<K} (J* - J(pi_k))``.
        last_gap: ``J* - J(pi_K)``.
        bound: ``B(K)`` for the ``"sqrt-K"`` schedule, the anytime last-iterate bound for
            ``"sqrt-k"``; NaN for ``q_policy="sequential"``, for which neither is derived.
        error_terms: ``(K, N)`` :func:`inexact_step_terms` of every step, measured against
            ``Q^{0:m}_{pi_k}`` (zeros for exact steps).
        fit_kl: ``(K, N)`` per agent, ``sum_c w_k(c) KL(pi_ideal(.|c) || pi_{k+1}(.|c))`` where
            ``pi_ideal`` is the exact mirror-descent step from ``pi_k`` and ``w_k`` agent ``m``'s
            context distribution under ``sigma_k`` (zeros for exact steps).
        fit_excess: ``(K, N)`` Algorithm 3's excess ``sigma``-weighted loss over the exact fit
            :func:`fit_loglinear` (zeros unless ``step="algorithm3"``).
        sgd_gradient_bound, sgd_eta: ``(K, N)`` Algorithm 3's ``G`` and step (NaN otherwise),
            for :func:`algorithm3_excess_bound`.
        output_index: the iterate returned by the output rule (``-1`` for ``"average"``).
        output_J: its ``J`` (the mean of ``J(pi_k), k<K`` for ``"average"``).
        samples: environment transitions simulated (0 with exact Q).
        final: ``pi_K``.
    """

    J: FloatArray
    J_star: float
    J_star_error: float
    comparator_J: float
    betas: FloatArray
    average_gap: float
    last_gap: float
    bound: float
    error_terms: FloatArray
    fit_kl: FloatArray
    fit_excess: FloatArray
    sgd_gradient_bound: FloatArray
    sgd_eta: FloatArray
    output_index: int
    output_J: float
    samples: int
    final: ConditionalPolicy


def _need(rng: np.random.Generator | None) -> np.random.Generator:
    """``rng``, or a :class:`ModelError` if a sampling configuration was given none."""
    if rng is None:
        raise ModelError("this configuration samples; pass rng=np.random.Generator")
    return check_rng(rng)


def _greedy_policy(game: CooperativeMarkovGame, greedy: IntArray) -> ConditionalPolicy:
    """The deterministic joint policy ``a(s) = greedy[s]`` as a sequential policy."""
    flat = np.zeros((game.n_states, game.n_joint_actions))
    flat[np.arange(game.n_states), greedy] = 1.0
    return ConditionalPolicy.from_joint(game, flat)


def run_mappo(
    game: CooperativeMarkovGame,
    K: int,
    beta: float,
    *,
    schedule: Schedule = "sqrt-K",
    step: Step = "exact",
    features: IndicatorFeatures | DenseFeatures | None = None,
    radius: float = math.inf,
    q_source: QSource = "exact",
    q_policy: Literal["old", "sequential"] = "old",
    n_samples: int = 1000,
    sgd_steps: int = 1000,
    output: OutputRule = "uniform",
    rng: np.random.Generator | None = None,
) -> MAPPOHistory:
    """MA-PPO from the uniform policy for ``K`` iterations (SPEC section 5).

    ``step="exact"``: the mirror-descent step on probability tables.  ``"loglinear"``: the
    exact ``sigma``-weighted fit of :func:`fit_loglinear` in ``features`` (``radius`` R).
    ``"algorithm3"``: :func:`algorithm3` with ``sgd_steps`` samples per agent; the targets are
    exact ``Q^{0:m}`` at exact ``sigma``-draws (``q_source="exact"``) or the sampled estimator
    (``q_source="sampled"``, one set of ``sgd_steps`` rollouts shared by all agents).
    ``rng`` is required whenever anything is sampled (Algorithm 3, sampled Q, uniform output).
    """
    if K < 1:
        raise ModelError(f"K = {K!r}, expected K >= 1")
    if step != "exact" and features is None:
        raise ModelError(f"step = {step!r} needs a feature map")
    if step not in ("exact", "loglinear", "algorithm3"):
        raise ModelError(f"step = {step!r}, expected 'exact', 'loglinear' or 'algorithm3'")
    if q_source not in ("exact", "sampled"):
        raise ModelError(f"q_source = {q_source!r}, expected 'exact' or 'sampled'")
    if q_source == "sampled" and step != "algorithm3":
        raise ModelError("sampled Q estimates are consumed by step='algorithm3' only")
    if q_policy not in ("old", "sequential"):
        raise ModelError(f"q_policy = {q_policy!r}, expected 'old' or 'sequential'")
    if output not in ("uniform", "average", "last"):
        raise ModelError(f"output = {output!r}, expected 'uniform', 'average' or 'last'")
    needs_rng = step == "algorithm3" or output == "uniform"
    if needs_rng and rng is None:
        raise ModelError("this configuration samples; pass rng=np.random.Generator")
    opt = game.optimal()
    exact_opt = policy_iteration(game.tabular)
    comparator = _greedy_policy(game, exact_opt.greedy)
    comp_vals = evaluate_game(game, comparator)
    n = game.n_agents
    ll: LogLinearPolicy | None = None
    if features is not None and step != "exact":
        ll = LogLinearPolicy.zeros(features, radius)
        policy = ll.conditional()
    else:
        policy = ConditionalPolicy.uniform(game)
    Js = [evaluate_game(game, policy).J]
    betas = np.empty(K)
    terms = np.zeros((K, n))
    fit_kl = np.zeros((K, n))
    fit_excess = np.zeros((K, n))
    sgd_G = np.full((K, n), np.nan)
    sgd_eta = np.full((K, n), np.nan)
    samples = 0
    for k in range(K):
        bk = beta_at(beta, k, K, schedule)
        betas[k] = bk
        vals = evaluate_game(game, policy)
        if q_policy == "sequential":
            localized = _sequential_targets(game, policy, bk)
        else:
            localized = vals.localized
        if step == "exact":
            new = mirror_descent_step(policy, localized, bk)
        else:
            if ll is None or features is None:  # excluded by the checks above
                raise ModelError(f"step = {step!r} needs a feature map")
            thetas = []
            qs: QSamples | None = None
            if q_source == "sampled":
                qs = sample_localized_q(game, policy, sgd_steps, _need(rng))
                samples += qs.env_steps
            for m in range(n):
                sigma = sigma_weights(policy, vals.nu, m)
                fit = fit_loglinear(features, m, ll.thetas[m], localized[m] / bk, sigma, radius)
                if step == "loglinear":
                    thetas.append(fit.theta)
                    continue
                if qs is None:
                    p = sigma.reshape(-1)
                    flat = _need(rng).choice(p.size, size=sgd_steps, p=p / p.sum()).astype(np.int64)
                    y = localized[m].reshape(-1)[flat] / bk
                    bound_y = 1 / ((1 - game.gamma) * bk)
                else:
                    idx = (qs.states, *(qs.actions[:, j] for j in range(m + 1)))
                    flat = np.ravel_multi_index(idx, sigma.shape).astype(np.int64)
                    y = qs.estimates / bk
                    # Qhat is unbounded; the largest drawn target is used, so G and eta
                    # depend on the data (the rate of algorithm3.md#rate assumes they do not)
                    bound_y = float(np.max(y))
                res = algorithm3(features, m, ll.thetas[m], flat, y, radius, bound_y)
                thetas.append(res.theta)
                sgd_G[k, m], sgd_eta[k, m] = res.gradient_bound, res.eta
                fit_excess[k, m] = (
                    _weighted_loss(
                        features, m, res.theta, ll.thetas[m], localized[m] / bk, sigma
                    )
                    - fit.loss
                )
            change = tuple(
                features.logits(m, thetas[m] - ll.thetas[m]) for m in range(n)
            )
            for m in range(n):
                old_logits = features.logits(m, ll.thetas[m])
                w = context_weights(policy, vals.nu, m)
                fit_kl[k, m] = weighted_kl(
                    log_softmax(old_logits + localized[m] / bk),
                    log_softmax(old_logits + change[m]),
                    w,
                )
            ll = LogLinearPolicy(features, tuple(thetas), radius)
            new = ll.conditional()
            terms[k] = inexact_step_terms(
                policy, change, vals.localized, bk, comparator, comp_vals.nu, game.gamma
            )
        policy = new
        Js.append(evaluate_game(game, policy).J)
    J = np.asarray(Js)
    gaps = opt.J - J
    if q_policy == "sequential":
        bound = math.nan  # B(K) is derived for targets under pi_k only
    elif schedule == "sqrt-K":
        bound = mappo_bound(K, beta, n, game.log_action_count, game.gamma)
    else:
        bound = anytime_last_iterate_bound(K, beta, n, game.log_action_count, game.gamma)
    if output == "uniform":
        out_idx = int(_need(rng).integers(K))
        out_J = float(J[out_idx])
    elif output == "last":
        out_idx, out_J = K, float(J[K])
    else:
        out_idx, out_J = -1, float(np.mean(J[:K]))
    return MAPPOHistory(
        J=frozen(J),
        J_star=opt.J,
        J_star_error=opt.error_bound,
        comparator_J=comp_vals.J,
        betas=frozen(betas),
        average_gap=float(np.mean(gaps[:K])),
        last_gap=float(gaps[K]),
        bound=bound,
        error_terms=frozen(terms),
        fit_kl=frozen(fit_kl),
        fit_excess=frozen(fit_excess),
        sgd_gradient_bound=frozen(sgd_G),
        sgd_eta=frozen(sgd_eta),
        output_index=out_idx,
        output_J=out_J,
        samples=samples,
        final=policy,
    )


def _sequential_targets(
    game: CooperativeMarkovGame, policy: ConditionalPolicy, beta_k: float
) -> tuple[FloatArray, ...]:
    """Targets of the ``"sequential"`` variant: agent ``m``'s ``Q^{0:m}`` under
    ``(pi_{k+1}^{0:m-1}, pi_k^{m:N-1})``, agents updated in order by exact steps."""
    conds = list(policy.conditionals)
    targets = []
    for m in range(game.n_agents):
        mixed = ConditionalPolicy(game, tuple(conds))
        q = evaluate_game(game, mixed).localized[m]
        targets.append(q)
        with np.errstate(divide="ignore"):
            conds[m] = softmax_last_axis(np.log(conds[m]) + q / beta_k)
    return tuple(targets)
