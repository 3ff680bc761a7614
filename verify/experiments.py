"""Experiment sweeps over the exact oracles (SPEC sections 3 and 4).

* :func:`kappa_decay_sweep` -- ``max_i D_i(kappa)``, the derived bound and the truncated
  gradient error ``||ghat - grad F||`` for every radius, with the fitted per-hop rate.
* :func:`sample_complexity_study` -- iterations and agent-steps for Algorithm 1 under the
  derived batch and horizon schedule to reach ``epsilon``-stationarity of the average
  iterate, per network size and radius, with a confidence interval on the exponent.
* :func:`mappo_gap_sweep` -- MA-PPO's average and last-iterate gaps against ``B(K)`` over a
  grid of ``K`` (SPEC section 5).
* :func:`price_of_localization` -- the certified ``F*`` next to the best localized ``F``
  found by exact gradient ascent for each observation radius (SPEC section 8).
* :func:`kappa_tradeoff_sweep` -- Algorithm 1's optimality gap ``F* - F`` after a fixed
  sample budget, ``||grad F||^2``, the truncation error and the communication cost, for every
  ``kappa`` (SPEC section 8).
* :func:`pessimism_sweep` -- the true ``J`` of pessimistic offline MA-PPO's learned policy
  against the bonus scale, over seeded datasets, next to ``J*``, the behaviour policy and
  online MA-PPO (SPEC section 6).

The sweeps' independent pieces (one per target, per ``K``, per dataset) run through
:func:`verify.executors.map_seeded` on ``executor`` (default: a local process pool); the
numbers do not depend on the executor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import scipy.stats

from reference._arrays import FloatArray, IntArray, frozen
from reference.cooperative.exact import evaluate_game
from reference.cooperative.game import CooperativeMarkovGame
from reference.cooperative.mappo import run_mappo, tuned_beta
from reference.cooperative.offline import behaviour_policy, sample_dataset
from reference.cooperative.pessimism import (
    run_pessimistic_mappo,
    tabular_critic,
    tabular_validity_coefficient,
)
from reference.cooperative.policy import ConditionalPolicy, IndicatorFeatures
from reference.errors import ModelError
from reference.instances import coupled_line
from reference.memory import check_memory
from reference.networked.algorithm import (
    Algorithm1Config,
    gradient_estimate,
    mc_critic,
    occupancy_estimate,
    run_algorithm1,
    shadow_reward_estimate,
)
from reference.networked.exact import gradient_contributions, gradient_norm, shadow_q, solve
from reference.networked.model import NetworkedMDP
from reference.networked.policy import LocalizedSoftmaxPolicy
from reference.networked.sampling import rollout
from reference.networked.truncation import (
    Weights,
    decay_profile,
    occupancy_identity_holds,
    occupancy_truncated_gradient,
    truncated_gradient,
)
from reference.networked.utilities import (
    ConstraintPenaltyUtility,
    EntropyUtility,
    KLImitationUtility,
    LinearUtility,
    QuadraticImitationUtility,
    Utility,
)
from reference.tabular import policy_iteration
from verify.executors import map_seeded

__all__ = [
    "COMPLEXITY_FAMILY_LEVEL",
    "UTILITY_KINDS",
    "ComplexityConfig",
    "ComplexityDefect",
    "ComplexitySchedule",
    "CouplingDecay",
    "DecaySweep",
    "GapSweep",
    "KappaTradeoff",
    "PessimismSweep",
    "PriceOfLocalization",
    "SampleComplexity",
    "ShadowDefect",
    "ShadowRewards",
    "communication_cost",
    "complexity_schedule",
    "coupling_decay_study",
    "fit_rate",
    "horizon_bias_constant",
    "kappa_decay_sweep",
    "kappa_tradeoff_sweep",
    "mappo_gap_sweep",
    "pessimism_sweep",
    "price_of_localization",
    "sample_complexity_study",
    "shadow_reward_study",
    "study_utilities",
]


@dataclass(frozen=True)
class DecaySweep:
    """Result of :func:`kappa_decay_sweep`.

    Attributes:
        kappa: ``(K,)`` radii ``0..diameter``.
        max_spread: ``(K,)`` ``max_i D_i(kappa)`` of the shadow Q-functions.
        bound: ``(K,)`` ``max_i Delta_i gamma^t0(kappa, beta) / (1 - gamma)``.
        truncated_gradient_error: ``(K,)`` ``||ghat - grad F||_2`` (all agents).
        gradient_error_bound: ``(K,)`` ``sqrt(2 n) max_j D_j(kappa) / (1 - gamma)``, the
            per-agent bound of SPEC section 3 summed in squares over the ``n`` agents.
        rate: fitted per-hop decay rate ``exp(slope)`` of ``log max_spread`` against
            ``kappa`` (least squares over radii with positive spread); NaN if fewer than 2.
        beta: observation radius.
        weights: truncation weights used for ``ghat``.
    """

    kappa: IntArray
    max_spread: FloatArray
    bound: FloatArray
    truncated_gradient_error: FloatArray
    gradient_error_bound: FloatArray
    rate: float
    beta: int
    weights: str


def fit_rate(kappa: Sequence[int] | IntArray, values: Sequence[float] | FloatArray) -> float:
    """``exp(slope)`` of the least-squares line through ``(kappa, log value)`` for
    positive values above 1e-300; NaN with fewer than two such points."""
    k = np.asarray(kappa, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    keep = v > 1e-300
    if keep.sum() < 2:
        return float("nan")
    slope = np.polyfit(k[keep], np.log(v[keep]), 1)[0]
    return float(np.exp(slope))


def kappa_decay_sweep(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    utilities: Sequence[Utility],
    weights: Weights = "occupancy",
    *,
    memory_limit: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DecaySweep:
    """Decay spreads, bound and truncated-gradient error for ``kappa = 0..diameter``.

    One exact solve with every agent's shadow values (``values="per-agent"``).  The spreads
    are streamed (:func:`~reference.networked.truncation.decay_profile`, ``progress`` is
    called per chunk).  The truncated gradient with occupancy weights, wherever the identity
    of :func:`~reference.networked.truncation.occupancy_truncated_gradient` holds (always
    for ``beta = 0``), comes from the per-agent contributions ``G[i][j]`` without joint
    tables; otherwise from :func:`~reference.networked.truncation.truncated_gradient` on
    the joint shadow Q tables, whose memory is checked before anything is solved."""
    ks = list(range(model.graph.diameter + 1))
    by_identity = weights == "occupancy" and all(
        occupancy_identity_holds(model, policy.beta, k) for k in ks
    )
    if not by_identity:
        nS, nA = model.states.size, model.actions.size
        check_memory(8 * (model.n + 2) * nS * nA, f"{model.n} joint shadow Q tables",
                     memory_limit)
    sol = solve(model, policy, utilities, values="per-agent", memory_limit=memory_limit)
    prof = decay_profile(model, policy, sol, memory_limit=memory_limit, progress=progress)
    errors = []
    if by_identity:
        contributions = gradient_contributions(model, policy, sol, memory_limit=memory_limit)
        for k in prof.kappa:
            g = occupancy_truncated_gradient(
                model, policy, sol, int(k), contributions=contributions
            )
            errors.append(gradient_norm([a - b for a, b in zip(g, sol.gradient, strict=True)]))
    else:
        qs = shadow_q(model, policy, sol, memory_limit=memory_limit)
        for k in prof.kappa:
            g = truncated_gradient(model, policy, sol, int(k), weights, qs)
            errors.append(gradient_norm([a - b for a, b in zip(g, sol.gradient, strict=True)]))
    max_spread = prof.spread.max(axis=0)
    grad_bound = np.sqrt(2.0 * model.n) * max_spread / (1.0 - model.gamma)
    # the truncation is exact at the diameter: leave the rounding-level spread out of the fit
    fit_k = prof.kappa[max_spread > 1e-12 * max(float(max_spread.max()), 1e-300)]
    fit_v = max_spread[max_spread > 1e-12 * max(float(max_spread.max()), 1e-300)]
    return DecaySweep(
        kappa=prof.kappa,
        max_spread=frozen(max_spread),
        bound=frozen(prof.bound.max(axis=0)),
        truncated_gradient_error=frozen(np.array(errors)),
        gradient_error_bound=frozen(grad_bound),
        rate=fit_rate(fit_k, fit_v),
        beta=policy.beta,
        weights=weights,
    )


COMPLEXITY_FAMILY_LEVEL = 0.99
"""Family-wise level of the exponent intervals of :func:`sample_complexity_study`: each of the
``C`` configurations gets a two-sided Student-t interval at level ``1 - 0.01 / C``
(Bonferroni), so all ``C`` cover their exponents together with probability >= 0.99 (if the
per-seed slopes are normal)."""


@dataclass(frozen=True)
class ComplexitySchedule:
    """The batch and horizon of Algorithm 1 for one target ``epsilon``
    (``proofs_notes/algorithm1.md#schedule``).

    Attributes:
        epsilon: the target for the average of ``||grad F(theta_k)||^2`` over the iterates.
        batch: ``B = ceil(2 sigma^2 / epsilon)`` trajectories for each of the three
            estimators (occupancy, critic, gradient).
        horizon: ``H = ceil(log(4 C_H / sqrt(epsilon)) / log(1 / gamma))``, the horizon of the
            occupancy and gradient rollouts and both horizons of the Monte-Carlo critic.
        samples_per_iteration: agent-steps drawn per iteration, ``n B H (2 + 1 + o)``: ``2 B H``
            for the critic's start and return segments, ``B H`` for the gradient, and ``B H``
            for the occupancy (``o = 1``) unless every utility is linear (``o = 0``: the
            shadow reward is then ``r_i`` whatever the occupancy).
    """

    epsilon: float
    batch: int
    horizon: int
    samples_per_iteration: int


def complexity_schedule(
    n: int,
    gamma: float,
    epsilon: float,
    variance: float,
    bias_constant: float,
    *,
    occupancy: bool = True,
) -> ComplexitySchedule:
    """``B(epsilon)`` and ``H(epsilon)`` of ``proofs_notes/algorithm1.md#schedule``: the
    variance term ``sigma^2 / B <= epsilon / 2`` and the horizon bias
    ``C_H gamma^H <= sqrt(epsilon) / 4``.

    Args:
        n: number of agents.
        gamma: discount, ``0 < gamma < 1``.
        epsilon: target, ``> 0``.
        variance: ``sigma^2``, the variance of one trajectory's contribution to the gradient
            estimate (``> 0``).
        bias_constant: ``C_H`` of the horizon bias ``C_H gamma^H`` (``> 0``).
        occupancy: whether step 1 (the occupancy estimate) draws samples.
    """
    for name, value in (("epsilon", epsilon), ("variance", variance),
                        ("bias_constant", bias_constant)):
        if not (math.isfinite(value) and value > 0):
            raise ModelError(f"{name} = {value!r}, expected a finite number > 0")
    if not 0.0 < gamma < 1.0:
        raise ModelError(f"gamma = {gamma!r}, expected 0 < gamma < 1 for a horizon schedule")
    batch = max(1, math.ceil(2.0 * variance / epsilon))
    horizon = max(1, math.ceil(math.log(4.0 * bias_constant / math.sqrt(epsilon))
                               / math.log(1.0 / gamma)))
    return ComplexitySchedule(
        float(epsilon), batch, horizon, (3 + int(occupancy)) * n * batch * horizon
    )


def horizon_bias_constant(n: int, gamma: float, reward_bound: float) -> float:
    """``C_H = 2 sqrt(2 n) G / (1 - gamma)^2``: the two horizon tails of
    ``proofs_notes/algorithm1.md#schedule`` (the fixed-horizon gradient's and the critic
    return's), each at most ``sqrt(2 n) gamma^H G / (1 - gamma)^2`` for shadow rewards bounded
    by ``G``."""
    return 2.0 * math.sqrt(2.0 * n) * reward_bound / (1.0 - gamma) ** 2


ComplexityDefect = Literal["none", "batch-for-norm"]
"""Planted defect of :func:`sample_complexity_study`: ``"batch-for-norm"`` sizes the batch so
that the estimator's standard deviation, rather than its variance, falls below ``epsilon``
(``B`` proportional to ``1/epsilon^2``, equal to the derived batch at the largest target), a
schedule whose samples grow one power of ``1/epsilon`` faster than the derived one."""


@dataclass(frozen=True)
class ComplexityConfig:
    """One network of :func:`sample_complexity_study`.

    Attributes:
        n: number of agents of ``coupled_line(n, coupling, gamma)``.
        kappa: truncation radius of the critics and the gradient.
    """

    n: int
    kappa: int


@dataclass(frozen=True)
class SampleComplexity:
    """Iterations and samples for Algorithm 1 to reach average stationarity, one network.

    The target is fixed before any run: ``epsilon = fraction ||grad F(theta_0)||^2``, and
    ``T(epsilon)`` is the first ``T`` with ``(1/T) sum_{k<T} ||grad F(theta_k)||^2 <= epsilon``
    (exact gradients of the iterates the run has produced so far: the expected squared
    gradient norm of the output iterate drawn uniformly from ``theta_0..theta_{T-1}``).  The
    run's samples are ``T m(epsilon)``, ``m`` the schedule's per-iteration count.

    Attributes:
        n, kappa: the network and the truncation radius.
        coupling, gamma: of the instance ``coupled_line(n, coupling, gamma)``.
        epsilon: ``(E,)`` targets, decreasing.
        gradient0: ``||grad F(theta_0)||^2``.
        schedule: the :class:`ComplexitySchedule` of each target.
        variance: ``sigma^2`` of the schedule (the pilot estimate at ``theta_0``).
        iterations: ``(S, E)`` ``T`` per seed and target; ``inf`` if the run stopped at
            ``max_iterations`` first (right-censored).
        samples: ``(S, E)`` agent-steps the run drew in its ``T`` iterations.
        iteration_slopes: ``(S,)`` per seed, the least-squares slope of ``log T`` against
            ``log(1/epsilon)``; ``inf`` if a run of the seed was censored.
        iteration_exponent: mean of ``iteration_slopes``.
        iteration_interval: ``(lo, hi)``, the Student-t interval ``mean +- t sd / sqrt(S)``
            at ``level`` (``sd`` with ``ddof = 1``); ``(inf, inf)`` if a run was censored.
        reference_iterations: ``(E,)`` ``T`` of noise-free ascent ``theta += eta grad F``
            from ``theta_0`` with the same criterion.
        reference_exponent: the slope of ``log`` of ``reference_iterations``: the
            algorithm's own iteration exponent on these targets (1 as ``epsilon -> 0``; above
            1 on a finite grid while ``sum_k ||grad F||^2`` is still growing).
        schedule_exponent: the least-squares slope of ``log m(epsilon)`` against
            ``log(1/epsilon)``: the schedule's own contribution (deterministic).
        sample_slopes: ``(S,)`` per seed, the slope of ``log samples``.
        total_exponent, total_interval: mean and Student-t interval of ``sample_slopes``;
            with the derived schedule a run draws ``T m(epsilon)`` samples, so this is the
            iteration exponent plus the schedule's (least squares is linear in the response).
        derived_total_exponent: ``reference_exponent + schedule_exponent``, the bound of the
            claim (``proofs_notes/algorithm1.md#schedule``).
        asymptotic_total_exponent: ``1 + schedule_exponent``: 2 up to the logarithm of ``H``.
        floor: the largest squared truncation error ``||ghat - grad F||^2`` along the
            noise-free ascent, which the schedule's analysis needs below ``epsilon / 16``.
        level: the confidence level of each interval.
        defect: the planted defect, ``"none"`` for the derived schedule.
        children: ``(entropy, spawn_key)`` of the run pieces, seed-major then target.
    """

    n: int
    kappa: int
    coupling: float
    gamma: float
    epsilon: FloatArray
    gradient0: float
    schedule: tuple[ComplexitySchedule, ...]
    variance: float
    iterations: FloatArray
    samples: FloatArray
    iteration_slopes: FloatArray
    sample_slopes: FloatArray
    iteration_exponent: float
    iteration_interval: tuple[float, float]
    reference_iterations: FloatArray
    reference_exponent: float
    schedule_exponent: float
    total_exponent: float
    total_interval: tuple[float, float]
    derived_total_exponent: float
    asymptotic_total_exponent: float
    floor: float
    level: float
    defect: str
    children: tuple[tuple[int, tuple[int, ...]], ...]

    @property
    def ratio(self) -> float:
        """``lo / derived`` of the total exponent: above 1 when the interval puts the
        sampled algorithm's exponent above noise-free ascent's plus the schedule's."""
        return self.total_interval[0] / self.derived_total_exponent

    @property
    def covers(self) -> bool:
        """Whether the total exponent's interval contains ``derived_total_exponent``."""
        lo, hi = self.total_interval
        return lo <= self.derived_total_exponent <= hi


@dataclass(frozen=True)
class _PilotTask:
    model: NetworkedMDP
    utilities: tuple[Utility, ...]
    kappa: int
    batch: int
    horizon: int
    repeats: int
    fractions: FloatArray
    max_iterations: int
    backend: Literal["dense", "matrix-free"]
    step_size: float


@dataclass(frozen=True)
class _Pilot:
    """What :func:`sample_complexity_study` fixes before any run."""

    variance: float
    floor: float
    g0: float
    reference: FloatArray


def _pilot_piece(task: _PilotTask, rng: np.random.Generator) -> _Pilot:
    """Everything fixed before the runs, from ``theta_0 = 0``:

    * ``sigma^2``: ``batch`` times the mean squared deviation of ``repeats`` gradient
      estimates at ``theta_0`` from their mean (``repeats - 1`` in the denominator);
    * ``g0 = ||grad F(theta_0)||^2``, which scales the targets ``epsilon = fraction g0``;
    * the reference ``T_exact(epsilon)`` of noise-free ascent ``theta += eta grad F`` with the
      same criterion (running average of ``||grad F||^2`` at most ``epsilon``);
    * the squared truncation floor ``||ghat - grad F||^2`` at radius ``kappa``, largest over
      every fifth iterate of that ascent up to the largest ``T_exact``.
    """
    m, us = task.model, task.utilities
    policy = LocalizedSoftmaxPolicy.uniform(m, 0)
    cfg = Algorithm1Config(
        kappa=task.kappa, step_size=0.0, iterations=1, occupancy_batch=task.batch,
        occupancy_horizon=task.horizon, critic_batch=task.batch, critic_horizon=task.horizon,
        gradient_batch=task.batch, gradient_horizon=task.horizon,
    )
    flats = []
    for _ in range(task.repeats):
        est, _ = _one_estimate(m, policy, us, cfg, rng)
        flats.append(np.concatenate([g.reshape(-1) for g in est]))
    arr = np.array(flats)
    variance = task.batch * float(np.sum((arr - arr.mean(axis=0)) ** 2)) / (task.repeats - 1)
    g0 = solve(m, policy, us, backend=task.backend, values="team").gradient_norm ** 2
    eps = task.fractions * g0
    reference = np.full(task.fractions.size, np.inf)
    floor, total = 0.0, 0.0
    for k in range(task.max_iterations):
        sol = solve(m, policy, us, backend=task.backend, values="team")
        total += sol.gradient_norm**2
        reference = np.where(np.isinf(reference) & (total <= eps * (k + 1)), k + 1, reference)
        if k % 5 == 0:
            exact = solve(m, policy, us, values="per-agent")
            ghat = truncated_gradient(m, policy, exact, task.kappa, "occupancy")
            err = gradient_norm([a - b for a, b in zip(ghat, exact.gradient, strict=True)])
            floor = max(floor, err**2)
        if np.all(np.isfinite(reference)):
            break
        policy = policy.with_theta(
            [t + task.step_size * d for t, d in zip(policy.theta, sol.gradient, strict=True)]
        )
    return _Pilot(variance, floor, float(g0), frozen(reference))


_PILOT_TARGET = 0.01
"""Target whose horizon the pilot uses (the horizon enters ``sigma^2`` only weakly)."""


def _one_estimate(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    utilities: Sequence[Utility],
    cfg: Algorithm1Config,
    rng: np.random.Generator,
) -> tuple[tuple[FloatArray, ...], int]:
    """Steps 1-3 of Algorithm 1 at ``policy``: the sampled truncated gradient ``gtilde`` and
    the agent-steps of the rollouts drawn for it.

    When every utility is linear the shadow reward is ``r_i`` whatever the occupancy
    estimate, so step 1 is skipped (it draws nothing the later steps use)."""
    n = model.n
    drawn = 0
    if all(isinstance(u, LinearUtility) for u in utilities):
        rewards = tuple(u.gradient(np.zeros(u.shape)) for u in utilities)
    else:
        occ = occupancy_estimate(model, rollout(model, policy, cfg.occupancy_batch,
                                                cfg.occupancy_horizon, rng))
        rewards = shadow_reward_estimate(utilities, occ)
        drawn += n * cfg.occupancy_batch * cfg.occupancy_horizon
    critics = mc_critic(model, policy, rewards, cfg.kappa, cfg.critic_batch,
                        cfg.critic_horizon, cfg.critic_horizon, rng)
    drawn += n * cfg.critic_batch * 2 * cfg.critic_horizon
    horizon = cfg.gradient_horizon
    if horizon is None:
        raise ModelError("the sample-complexity study needs a fixed gradient horizon")
    est = gradient_estimate(model, policy, critics, cfg.kappa, cfg.gradient_batch, rng, horizon)
    drawn += n * cfg.gradient_batch * horizon
    return est.gradient, drawn


@dataclass(frozen=True)
class _RunTask:
    model: NetworkedMDP
    utilities: tuple[Utility, ...]
    cfg: Algorithm1Config
    epsilon: float
    max_iterations: int
    backend: Literal["dense", "matrix-free"]


def _run_piece(task: _RunTask, rng: np.random.Generator) -> tuple[float, float]:
    """``(T, samples)``: Algorithm 1 from ``theta = 0``; iteration ``k`` reads the exact
    ``||grad F(theta_k)||^2``, draws ``gtilde_k`` and steps; the run stops after the first
    iteration ``T - 1`` at which the running average over ``theta_0..theta_{T-1}`` is at most
    ``epsilon``.  ``samples`` counts the agent-steps drawn in those ``T`` iterations; both
    are ``inf`` if ``max_iterations`` pass first."""
    m, us, cfg = task.model, task.utilities, task.cfg
    policy = LocalizedSoftmaxPolicy.uniform(m, 0)
    total, drawn = 0.0, 0
    for k in range(task.max_iterations):
        total += solve(m, policy, us, backend=task.backend, values="team").gradient_norm ** 2
        g, used = _one_estimate(m, policy, us, cfg, rng)
        drawn += used
        if total <= task.epsilon * (k + 1):
            return float(k + 1), float(drawn)
        policy = policy.with_theta(
            [t + cfg.step_size * d for t, d in zip(policy.theta, g, strict=True)]
        )
    return math.inf, math.inf


def _t_interval(values: FloatArray, t_q: float) -> tuple[float, tuple[float, float]]:
    """Mean and ``mean +- t_q sd / sqrt(len)`` (``sd`` with ``ddof = 1``); ``inf`` if any value
    is infinite (a censored run)."""
    if not np.all(np.isfinite(values)):
        return math.inf, (math.inf, math.inf)
    mean = float(values.mean())
    half = t_q * float(values.std(ddof=1)) / math.sqrt(values.size)
    return mean, (mean - half, mean + half)


def _slope(x: FloatArray, y: FloatArray) -> float:
    """Least-squares slope of ``y`` on ``x`` (``inf`` if any ``y`` is infinite)."""
    if not np.all(np.isfinite(y)):
        return math.inf
    return float(np.polyfit(x, y, 1)[0])


def sample_complexity_study(
    configs: Sequence[ComplexityConfig],
    fractions: Sequence[float],
    seeds: int,
    seed: int,
    *,
    coupling: float = 0.1,
    gamma: float = 0.5,
    step_size: float = 10.0,
    max_iterations: int = 400,
    pilot_batch: int = 32,
    pilot_repeats: int = 16,
    defect: ComplexityDefect = "none",
    executor: Executor | None = None,
) -> tuple[SampleComplexity, ...]:
    """Samples for Algorithm 1 to reach ``epsilon``-stationarity of the average iterate under
    the derived schedule, per network, with an interval on the exponent
    (``proofs_notes/algorithm1.md#schedule``).

    For each configuration ``(n, kappa)`` on ``coupled_line(n, coupling, gamma)`` (linear
    utilities, ``beta = 0``, ``theta_0 = 0``, step ``eta = step_size``):

    1. a pilot (one piece per configuration) estimates ``sigma^2`` from ``pilot_repeats``
       gradient estimates at ``theta_0`` with batch ``pilot_batch``, and measures the
       truncation floor along the noise-free ascent;
    2. for every target ``epsilon`` the schedule ``B(epsilon), H(epsilon)`` of
       :func:`complexity_schedule` is fixed, and ``seeds`` independent runs record
       ``T(epsilon)`` (one piece per seed and target);
    3. per seed, the slope of ``log T`` (and of ``log samples``) on ``log(1/epsilon)``;
       across seeds, a Student-t interval at level
       ``1 - (1 - COMPLEXITY_FAMILY_LEVEL) / len(configs)``.

    The pilot and the runs are seeded by ``map_seeded`` from the two children of
    ``SeedSequence(seed)``.  ``defect`` plants a wrong schedule (:data:`ComplexityDefect`)
    to show the comparison can fail.

    Raises:
        ModelError: invalid arguments, or noise-free ascent does not reach a target within
            ``max_iterations`` (the bound of the comparison would be infinite).
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 2:
        raise ModelError(f"seeds = {seeds!r}, expected an integer >= 2 (an interval needs "
                         "the spread of at least two per-seed slopes)")
    frac = np.sort(np.asarray(fractions, dtype=np.float64))[::-1]
    if (frac.ndim != 1 or frac.size < 2 or not np.all((frac > 0) & (frac < 1))
            or np.unique(frac).size != frac.size):
        raise ModelError(f"fractions = {list(fractions)!r}, expected at least two distinct "
                         "targets in (0, 1)")
    if not configs:
        raise ModelError("configs is empty, expected at least one (n, kappa)")
    if defect not in ("none", "batch-for-norm"):
        raise ModelError(f"defect = {defect!r}, expected 'none' or 'batch-for-norm'")
    pilot_seed, run_seed = (int(c.generate_state(1)[0])
                            for c in np.random.SeedSequence(seed).spawn(2))
    instances = [coupled_line(c.n, coupling, gamma) for c in configs]
    backends: list[Literal["dense", "matrix-free"]] = [
        "matrix-free" if c.n >= 7 else "dense" for c in configs
    ]
    pilots = map_seeded(
        _pilot_piece,
        [_PilotTask(inst.model, inst.utilities(), c.kappa, pilot_batch,
                    complexity_schedule(c.n, gamma, _PILOT_TARGET, 1.0,
                                        horizon_bias_constant(c.n, gamma, 1.0)).horizon,
                    pilot_repeats, frozen(frac), max_iterations, backend, step_size)
         for c, inst, backend in zip(configs, instances, backends, strict=True)],
        executor=executor, seed=pilot_seed,
    ).results
    for c, pilot in zip(configs, pilots, strict=True):
        if not np.all(np.isfinite(pilot.reference)):
            raise ModelError(
                f"noise-free ascent on n = {c.n}, kappa = {c.kappa} did not reach the targets "
                f"{list(frac)} x ||grad F(theta_0)||^2 within max_iterations = "
                f"{max_iterations}; raise max_iterations or the targets"
            )
    tasks: list[_RunTask] = []
    schedules = []
    for c, inst, pilot, backend in zip(configs, instances, pilots, backends, strict=True):
        reward_bound = max(u.constants.gradient_bound for u in inst.utilities())
        c_h = horizon_bias_constant(c.n, gamma, reward_bound)
        linear = all(isinstance(u, LinearUtility) for u in inst.utilities())
        sched = tuple(complexity_schedule(c.n, gamma, float(f * pilot.g0), pilot.variance, c_h,
                                          occupancy=not linear)
                      for f in frac)
        schedules.append(sched)
        for _ in range(seeds):
            for sc in sched:
                batch = sc.batch
                if defect == "batch-for-norm":
                    batch = math.ceil(sched[0].batch * (sched[0].epsilon / sc.epsilon) ** 2)
                cfg = Algorithm1Config(
                    kappa=c.kappa, step_size=step_size, iterations=1, occupancy_batch=batch,
                    occupancy_horizon=sc.horizon, critic_batch=batch,
                    critic_horizon=sc.horizon, gradient_batch=batch,
                    gradient_horizon=sc.horizon,
                )
                tasks.append(_RunTask(inst.model, inst.utilities(), cfg, sc.epsilon,
                                      max_iterations, backend))
    done = map_seeded(_run_piece, tasks, executor=executor, seed=run_seed)
    level = 1.0 - (1.0 - COMPLEXITY_FAMILY_LEVEL) / len(configs)
    t_q = float(scipy.stats.t.ppf(0.5 + level / 2, seeds - 1))
    x = np.log(1.0 / frac)
    out = []
    per = seeds * frac.size
    for k, (c, sched, pilot) in enumerate(zip(configs, schedules, pilots, strict=True)):
        rows = np.array(done.results[k * per:(k + 1) * per]).reshape(seeds, frac.size, 2)
        its, samples = rows[..., 0], rows[..., 1]
        m_eps = np.array([float(sc.samples_per_iteration) for sc in sched])
        slopes = np.array([_slope(x, np.log(row)) for row in its])
        sample_slopes = np.array([_slope(x, np.log(row)) for row in samples])
        sched_exp = _slope(x, np.log(m_eps))
        ref_exp = _slope(x, np.log(pilot.reference))
        mean, interval = _t_interval(slopes, t_q)
        total, total_interval = _t_interval(sample_slopes, t_q)
        out.append(SampleComplexity(
            n=c.n, kappa=c.kappa, coupling=float(coupling), gamma=float(gamma),
            epsilon=frozen(frac * pilot.g0), gradient0=pilot.g0, schedule=sched,
            variance=pilot.variance, iterations=frozen(its),
            samples=frozen(samples), iteration_slopes=frozen(slopes),
            sample_slopes=frozen(sample_slopes),
            iteration_exponent=mean, iteration_interval=interval,
            reference_iterations=pilot.reference, reference_exponent=ref_exp,
            schedule_exponent=sched_exp, total_exponent=total, total_interval=total_interval,
            derived_total_exponent=ref_exp + sched_exp,
            asymptotic_total_exponent=1.0 + sched_exp,
            floor=pilot.floor, level=level, defect=defect,
            children=done.children[k * per:(k + 1) * per],
        ))
    return tuple(out)


@dataclass(frozen=True)
class CouplingDecay:
    """Decay spreads on ``coupled_line(n, c, gamma)`` against the coupling ``c`` and
    ``gamma`` (:func:`coupling_decay_study`).

    Attributes:
        n: number of agents.
        beta: observation radius of the policy (0).
        couplings: ``(C,)`` couplings ``c``.
        gammas: ``(G,)`` discounts.
        kappa: ``(K,)`` radii ``0..n-1``.
        spread: ``(G, C, n, K)`` ``D_i(kappa)``.
        bound: ``(G, C, n, K)`` ``Delta_i gamma^t0 / (1 - gamma)``, 0 once ``N_i^kappa`` is
            every agent (SPEC section 3).
        allowance: ``(G, C)`` the spreads' rounding allowance
            (:func:`verify.assumptions.spread_tolerance`); a spread at most this is an exact
            zero.
        nu: ``max_j |pi_j(1 | s_j = 1) - pi_j(1 | s_j = 0)|``, how strongly an action follows
            its agent's own state (``beta = 0``).
        coupling_rate: ``(G, C)`` ``rho = gamma c / (1 - gamma (1 - c) nu)``, the per-hop rate of
            the family's bound (``proofs_notes/decay.md#coupling``).
        coupling_bound: ``(G, C, n, K)`` ``Delta_i rho^(kappa+1) / (1 - gamma)``.
        rate: ``(G, C)`` the per-hop decay rate of agent 0 (whose chain of copies is the
            longest): ``exp`` of the least-squares slope of ``log D_0(kappa)`` on ``kappa``
            over the radii with ``D_0(kappa)`` above the allowance; 0 when every spread is an
            exact zero (``c = 0``).
        seed: the seed of the policy's ``theta ~ N(0, 1)``.
    """

    n: int
    beta: int
    couplings: FloatArray
    gammas: FloatArray
    kappa: IntArray
    spread: FloatArray
    bound: FloatArray
    allowance: FloatArray
    nu: float
    coupling_rate: FloatArray
    coupling_bound: FloatArray
    rate: FloatArray
    seed: int


def coupling_decay_study(
    n: int,
    couplings: Sequence[float],
    gammas: Sequence[float],
    seed: int,
) -> CouplingDecay:
    """``D_i(kappa)`` of the linear utilities' shadow Q on ``coupled_line(n, c, gamma)`` for
    every coupling ``c`` and discount ``gamma``, at one random policy, with SPEC's bound and
    the family's bound ``Delta_i rho^(kappa+1) / (1 - gamma)``,
    ``rho = gamma c / (1 - gamma (1 - c) nu)`` (``proofs_notes/decay.md#coupling``), at
    observation radius ``beta = 0``.

    ``theta`` is drawn once, ``N(0, 1)`` entries from ``default_rng(seed)`` (the policy's
    shape does not depend on ``c`` or ``gamma``), and every instance is solved exactly.
    """
    from verify.assumptions import spread_tolerance  # verify.assumptions imports fit_rate

    cs = np.asarray(couplings, dtype=np.float64)
    gs = np.asarray(gammas, dtype=np.float64)
    if cs.ndim != 1 or cs.size == 0 or gs.ndim != 1 or gs.size == 0:
        raise ModelError(f"couplings = {list(couplings)!r}, gammas = {list(gammas)!r}: "
                         "expected non-empty sequences")
    rng = np.random.default_rng(seed)
    base = LocalizedSoftmaxPolicy.random(coupled_line(n, 0.0).model, 0, rng)
    theta = base.theta
    # binary actions, beta = 0: the total variation between pi_j(.|s_j = 0) and pi_j(.|s_j = 1)
    nu = max(float(abs(p[1, 1] - p[0, 1])) for p in base.probs)
    spread = np.empty((gs.size, cs.size, n, n))
    sharp = np.empty_like(spread)
    sharp_rate = np.empty((gs.size, cs.size))
    bound = np.empty_like(spread)
    allowance = np.empty((gs.size, cs.size))
    rate = np.empty((gs.size, cs.size))
    for a, g in enumerate(gs):
        for b, c in enumerate(cs):
            inst = coupled_line(n, float(c), float(g))
            policy = LocalizedSoftmaxPolicy(inst.model, 0, theta)
            sol = solve(inst.model, policy, inst.utilities(), values="per-agent")
            prof = decay_profile(inst.model, policy, sol)
            spread[a, b], bound[a, b] = prof.spread, prof.bound
            sharp_rate[a, b] = g * c / (1.0 - g * (1.0 - c) * nu)
            sharp[a, b] = (prof.delta[:, None] * sharp_rate[a, b] ** (prof.kappa[None, :] + 1)
                           / (1.0 - g))
            allowance[a, b] = spread_tolerance(inst.model, sol)
            above = prof.spread[0] > allowance[a, b]
            rate[a, b] = (
                fit_rate(prof.kappa[above], prof.spread[0][above]) if above.sum() >= 2
                else 0.0
            )
    return CouplingDecay(
        n=int(n), beta=0, couplings=frozen(cs), gammas=frozen(gs),
        kappa=np.arange(n, dtype=np.int64), spread=frozen(spread), bound=frozen(bound),
        allowance=frozen(allowance), nu=nu, coupling_rate=frozen(sharp_rate),
        coupling_bound=frozen(sharp), rate=frozen(rate), seed=int(seed),
    )


UTILITY_KINDS = ("linear", "entropy", "quadratic", "kl", "penalty")
"""The utilities of :func:`shadow_reward_study`, one of each class of
``reference/networked/utilities.py``."""

ShadowDefect = Literal["none", "unclamped-penalty"]
"""Planted defect of :func:`shadow_reward_study`: ``"unclamped-penalty"`` drops the
``[.]_+`` of the constraint penalty's gradient, ``mu (c - g) grad g`` also where the
constraint holds."""


class _UnclampedPenalty(ConstraintPenaltyUtility):
    """A constraint penalty whose gradient lost its clamp (a planted defect)."""

    def _gradient(self, lam: FloatArray) -> FloatArray:
        grad: FloatArray = (
            np.zeros(self.shape) if self.objective is None else self.objective._gradient(lam)
        )
        slack = self.threshold - self.constraint._value(lam)
        out: FloatArray = grad + (self.weight * slack) * self.constraint._gradient(lam)
        return out


def study_utilities(
    kind: str, n: int, gamma: float, defect: ShadowDefect = "none"
) -> tuple[Utility, ...]:
    """The utilities of :func:`shadow_reward_study` on ``n`` binary agents (``|S_i| = |A_i| =
    2``).

    * ``"linear"``: ``r_i = 1[s_i = 1]``;
    * ``"entropy"``: smoothed state entropy, ``eps = 1e-3``;
    * ``"quadratic"``: quadratic imitation of the uniform target;
    * ``"kl"``: smoothed KL imitation of ``t = (0.1, 0.1; 0.1, 0.7)`` (rows ``s_i``);
    * ``"penalty"``: the entropy objective minus ``(mu/2) [c - g]_+^2`` around the linear
      ``g = <r_i, lam_i>`` with ``c = 0.2``, ``mu = 10`` (a visit constraint on ``s_i = 1``;
      ``defect="unclamped-penalty"``: without the clamp, whose gradient
      ``mu (c - g) r_i`` then exceeds the declared ``G_H + mu c`` once ``g > c`` by more
      than ``c + G_H / mu``).
    """
    shape = (2, 2)
    r = np.array([[0.0, 0.0], [1.0, 1.0]])
    if kind == "linear":
        return tuple(LinearUtility(r, gamma) for _ in range(n))
    if kind == "entropy":
        return tuple(EntropyUtility(shape, gamma, 1e-3) for _ in range(n))
    if kind == "quadratic":
        return tuple(QuadraticImitationUtility(np.full(shape, 0.25), gamma) for _ in range(n))
    if kind == "kl":
        t = np.array([[0.1, 0.1], [0.1, 0.7]])
        return tuple(KLImitationUtility(t, gamma, 1e-3) for _ in range(n))
    if kind == "penalty":
        cls = _UnclampedPenalty if defect == "unclamped-penalty" else ConstraintPenaltyUtility
        return tuple(
            cls(LinearUtility(r, gamma), 0.2, 10.0, EntropyUtility(shape, gamma, 1e-3))
            for _ in range(n)
        )
    raise ModelError(f"utility kind = {kind!r}, expected one of {UTILITY_KINDS}")


@dataclass(frozen=True)
class ShadowRewards:
    """Sup norms of the shadow rewards along Algorithm 1's iterates, against each utility's
    declared gradient bound (:func:`shadow_reward_study`).

    Attributes:
        kinds: ``(U,)`` utility kinds (:data:`UTILITY_KINDS`).
        exact: ``(U, n, K)`` ``||r_i^{theta_k}||_inf`` with ``r_i^theta = grad f_i(lam_i^theta)``
            at the exact local occupancy of iterate ``k``.
        sampled: ``(U, n, K)`` ``||grad f_i(lamtilde_i)||_inf`` at Algorithm 1's occupancy
            estimate of iterate ``k`` (the shadow reward the algorithm uses).
        bound: ``(U, n)`` the declared ``constants.gradient_bound`` of each utility.
        instance: the networked instance's description.
        gamma: its discount.
        defect: the planted defect, ``"none"`` for the utilities as declared.
        children: ``(entropy, spawn_key)`` of each utility's run, in ``kinds`` order.
    """

    kinds: tuple[str, ...]
    exact: FloatArray
    sampled: FloatArray
    bound: FloatArray
    instance: str
    gamma: float
    defect: str
    children: tuple[tuple[int, tuple[int, ...]], ...]


@dataclass(frozen=True)
class _ShadowTask:
    model: NetworkedMDP
    utilities: tuple[Utility, ...]
    cfg: Algorithm1Config


def _shadow_piece(task: _ShadowTask, rng: np.random.Generator) -> tuple[FloatArray, FloatArray]:
    """``(n, K)`` exact and sampled shadow-reward sup norms along one run of Algorithm 1."""
    m, us, cfg = task.model, task.utilities, task.cfg
    policy = LocalizedSoftmaxPolicy.uniform(m, 0)
    exact = np.empty((m.n, cfg.iterations))
    sampled = np.empty((m.n, cfg.iterations))
    for k in range(cfg.iterations):
        sol = solve(m, policy, us)
        exact[:, k] = [float(np.max(np.abs(r))) for r in sol.shadow_rewards]
        occ = occupancy_estimate(m, rollout(m, policy, cfg.occupancy_batch,
                                            cfg.occupancy_horizon, rng))
        rewards = shadow_reward_estimate(us, occ)
        sampled[:, k] = [float(np.max(np.abs(r))) for r in rewards]
        critics = mc_critic(m, policy, rewards, cfg.kappa, cfg.critic_batch,
                            cfg.critic_horizon, cfg.critic_horizon, rng)
        g = gradient_estimate(m, policy, critics, cfg.kappa, cfg.gradient_batch, rng,
                              cfg.gradient_horizon).gradient
        policy = policy.with_theta(
            [t + cfg.step_size * d for t, d in zip(policy.theta, g, strict=True)]
        )
    return exact, sampled


def shadow_reward_study(
    n: int,
    gamma: float,
    iterations: int,
    seed: int,
    *,
    coupling: float = 0.5,
    kappa: int = 1,
    batch: int = 64,
    horizon: int = 20,
    step_size: float = 5.0,
    kinds: Sequence[str] = UTILITY_KINDS,
    defect: ShadowDefect = "none",
    executor: Executor | None = None,
) -> ShadowRewards:
    """The shadow reward's sup norm along Algorithm 1's iterates, for every utility of
    :func:`study_utilities`, against the utility's declared gradient bound
    (``proofs_notes/shadow-reward-gradient.md#bounded``).

    Each utility gets one run of Algorithm 1 on ``coupled_line(n, coupling, gamma)`` from
    ``theta = 0`` (``beta = 0``, Monte-Carlo critics at radius ``kappa``, ``batch``
    trajectories of ``horizon`` steps for each estimator, step ``step_size``); at every
    iterate it records the exact shadow reward ``grad f_i(lam_i^theta)`` and the sampled
    one ``grad f_i(lamtilde_i)`` the algorithm steps with.  ``kinds`` selects utilities of
    :data:`UTILITY_KINDS`.  The runs are pieces of
    :func:`verify.executors.map_seeded` on ``executor``.
    """
    if defect not in ("none", "unclamped-penalty"):
        raise ModelError(f"defect = {defect!r}, expected 'none' or 'unclamped-penalty'")
    inst = coupled_line(n, coupling, gamma)
    cfg = Algorithm1Config(
        kappa=kappa, step_size=step_size, iterations=iterations, occupancy_batch=batch,
        occupancy_horizon=horizon, critic_batch=batch, critic_horizon=horizon,
        gradient_batch=batch, gradient_horizon=horizon,
    )
    per_kind = [study_utilities(kind, n, gamma, defect) for kind in kinds]
    done = map_seeded(
        _shadow_piece, [_ShadowTask(inst.model, us, cfg) for us in per_kind],
        executor=executor, seed=seed,
    )
    return ShadowRewards(
        kinds=tuple(kinds),
        exact=frozen(np.array([e for e, _ in done.results])),
        sampled=frozen(np.array([s for _, s in done.results])),
        bound=frozen(np.array([[u.constants.gradient_bound for u in us] for us in per_kind])),
        instance=(f"coupled-line n={n}, coupling {coupling}, gamma {gamma}, beta 0, "
                  f"theta_0 = 0, Algorithm 1 with MC critics at kappa {kappa}, B = {batch}, "
                  f"H = {horizon}, eta = {step_size}, {iterations} iterates"),
        gamma=float(gamma),
        defect=defect,
        children=done.children,
    )


@dataclass(frozen=True)
class GapSweep:
    """Result of :func:`mappo_gap_sweep`; lists are indexed like ``K``.

    Attributes:
        K: ``(G,)`` iteration counts.
        average_gap: ``(G,)`` ``(1/K) sum_{k<K} (J* - J(pi_k))``.
        last_gap: ``(G,)`` ``J* - J(pi_K)``.
        bound: ``(G,)`` ``B(K)`` (unnormalised values); for product features, whose steps are
            inexact, ``B(K)`` plus the measured error terms
            (``proofs_notes/mappo-bound.md#inexact``), which is what bounds their gap.
        beta: the ``beta`` of ``beta_k = beta sqrt(K)``.
        J_star: ``J*``.
        features: ``"one-hot"`` (conditional policies) or ``"product"``.
        game: the game's name.
    """

    K: IntArray
    average_gap: FloatArray
    last_gap: FloatArray
    bound: FloatArray
    beta: float
    J_star: float
    features: str
    game: str


def mappo_gap_sweep(
    game: CooperativeMarkovGame,
    K_grid: Sequence[int],
    beta: float | None = None,
    features: str = "one-hot",
    *,
    executor: Executor | None = None,
) -> GapSweep:
    """Run exact-Q MA-PPO from the uniform policy once per ``K`` (its schedule
    ``beta_k = beta sqrt(K)`` depends on ``K``) and record the gaps next to ``B(K)``.

    ``beta`` defaults to the tuned ``sqrt(N / (8 log|A|)) / (1 - gamma)``.  One-hot features
    use the exact mirror-descent step (identical to the one-hot log-linear step, see
    ``tests/test_mappo.py``); ``"product"`` uses the exact least-squares log-linear step in
    product features, i.e. independent policies.  The runs (deterministic: the generator
    :func:`~verify.executors.map_seeded` hands them is unused) are independent pieces on
    ``executor``, default a local process pool.
    """
    ks = [int(k) for k in K_grid]
    if not ks or min(ks) < 1:
        raise ModelError(f"K grid = {list(K_grid)!r}, expected positive iteration counts")
    if features not in ("one-hot", "product"):
        raise ModelError(f"features = {features!r}, expected 'one-hot' or 'product'")
    b = tuned_beta(game.n_agents, game.log_action_count, game.gamma) if beta is None else beta
    tasks = [_GapTask(game, K, float(b), features) for K in ks]
    rows = map_seeded(_gap_piece, tasks, executor=executor, seed=0).results
    return GapSweep(
        K=np.asarray(ks, dtype=np.int64),
        average_gap=frozen([r[0] for r in rows]),
        last_gap=frozen([r[1] for r in rows]),
        bound=frozen([r[2] for r in rows]),
        beta=float(b),
        J_star=rows[-1][3],
        features=features,
        game=game.name,
    )


@dataclass(frozen=True)
class _GapTask:
    """One ``K`` of :func:`mappo_gap_sweep`."""

    game: CooperativeMarkovGame
    K: int
    beta: float
    features: str


def _gap_piece(task: _GapTask, rng: np.random.Generator) -> tuple[float, float, float, float]:
    """``(average gap, last gap, bound, J*)`` of one exact-Q MA-PPO run; ``rng`` is unused."""
    game, K = task.game, task.K
    if task.features == "one-hot":
        h = run_mappo(game, K, task.beta, output="last")
    else:
        h = run_mappo(
            game,
            K,
            task.beta,
            step="loglinear",
            features=IndicatorFeatures.product(game),
            output="last",
        )
    # zero error terms for exact steps; the plug-in bound of mappo-bound.md#inexact else
    bound = h.bound + float(h.error_terms.sum()) / (K * (1 - game.gamma))
    return float(h.average_gap), float(h.last_gap), float(bound), float(h.J_star)


VALIDITY_DELTA = 1e-9
"""Failure probability of the validity event behind :attr:`PessimismSweep.validity_scale`."""


@dataclass(frozen=True)
class PessimismSweep:
    """Result of :func:`pessimism_sweep`; rows are indexed like ``scales``, columns like the
    seeded datasets.

    Attributes:
        scales: ``(S,)`` bonus scales; the bonus coefficient is ``beta_G = scale / (1 - gamma)``.
        J: ``(S, seeds)`` exact ``J(pi_K)`` of the learned policy, per scale and dataset.
        event: ``(S, seeds)`` whether the validity event held at every ``Vhat_k``, ``k < K``
            (:attr:`~reference.cooperative.pessimism.PessimisticHistory.event_all`).
        mean_J: ``(S,)`` mean of ``J`` over the datasets.
        ci_half_width: ``(S,)`` 95% Student-t half-width ``t_{0.975, seeds-1} sd / sqrt(seeds)``
            (``sd`` with ``ddof = 1``) of ``mean_J``.
        event_frequency: ``(S,)`` fraction of datasets on which the event held throughout.
        validity_scales: ``(seeds,)`` per dataset, the tabular validity coefficient at
            ``delta`` = :data:`VALIDITY_DELTA` times ``1 - gamma`` (a scale in the units of
            ``scales`` at which the event holds for every ``V`` with probability
            ``>= 1 - delta``; ``tabular_validity_coefficient``).
        validity_scale: mean of ``validity_scales``.
        J_star: ``J*`` (policy iteration).
        behaviour_J: exact ``J`` of the behaviour policy that drew the data.
        online_J: exact ``J(pi_K)`` of online exact-Q MA-PPO with the same ``K`` and ``beta``.
        safe_actions: ``(nS,)`` the optimal greedy joint action (flat) per state, on which the
            behaviour policy puts mass ``1 - coverage``.
        coverage: ``C``, the behaviour's mass spread uniformly over the joint actions.
        n_samples: transitions per dataset.
        K: MA-PPO iterations.
        beta: the ``beta`` of ``beta_k = beta sqrt(K)``.
        lambda_reg: ridge ``lambda`` of the critic.
        game: the game's name.
        gamma: its discount.
        seed: the root of ``SeedSequence(seed).spawn(seeds)``.
        children: per dataset, the child ``SeedSequence``'s ``(entropy, spawn_key)``;
            ``np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=key))`` replays
            its draw.
    """

    scales: FloatArray
    J: FloatArray
    event: npt.NDArray[np.bool_]
    mean_J: FloatArray
    ci_half_width: FloatArray
    event_frequency: FloatArray
    validity_scales: FloatArray
    validity_scale: float
    J_star: float
    behaviour_J: float
    online_J: float
    safe_actions: IntArray
    coverage: float
    n_samples: int
    K: int
    beta: float
    lambda_reg: float
    game: str
    gamma: float
    seed: int
    children: tuple[tuple[int, tuple[int, ...]], ...]


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _real(value: object, name: str) -> float:
    """``value`` as a float, or a :class:`ModelError` naming ``name`` if it is not a real."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ModelError(f"{name} = {value!r}, expected a real number")
    return float(value)


def _check_pessimism_arguments(
    scales: Sequence[float],
    coverage: float,
    n_samples: int,
    seeds: int,
    K: int,
    beta: float,
    lambda_reg: float,
    seed: int,
) -> FloatArray:
    """Raise :class:`ModelError` naming the first invalid argument; return the scales."""
    try:
        sc = np.asarray(scales, dtype=np.float64)
    except (TypeError, ValueError):
        raise ModelError(f"scales = {scales!r}, expected a sequence of numbers") from None
    if sc.ndim != 1 or sc.size == 0:
        raise ModelError(f"scales = {scales!r}, expected a non-empty sequence of numbers")
    bad = ~(np.isfinite(sc) & (sc >= 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ModelError(f"scales[{i}] = {float(sc[i])!r}, expected a finite scale >= 0")
    if not 0.0 <= _real(coverage, "coverage") <= 1.0:
        raise ModelError(f"coverage = {coverage!r}, expected a probability in [0, 1]")
    if not (_is_int(n_samples) and n_samples >= 1):
        raise ModelError(f"n_samples = {n_samples!r}, expected an integer >= 1")
    if not (_is_int(seeds) and seeds >= 2):
        raise ModelError(
            f"seeds = {seeds!r}, expected an integer >= 2 (a confidence interval needs the "
            "sample standard deviation of at least two datasets)"
        )
    if not (_is_int(K) and K >= 1):
        raise ModelError(f"K = {K!r}, expected an integer >= 1")
    b = _real(beta, "beta")
    if not (math.isfinite(b) and b > 0):
        raise ModelError(f"beta = {beta!r}, expected a finite beta > 0")
    lam = _real(lambda_reg, "lambda_reg")
    if not (math.isfinite(lam) and lam > 0):
        raise ModelError(f"lambda_reg = {lambda_reg!r}, expected a finite lambda > 0")
    if not (_is_int(seed) and seed >= 0):
        raise ModelError(f"seed = {seed!r}, expected an integer >= 0")
    return sc


def pessimism_sweep(
    game: CooperativeMarkovGame,
    *,
    coverage: float,
    n_samples: int,
    scales: Sequence[float],
    seeds: int,
    K: int,
    beta: float,
    lambda_reg: float = 1.0,
    seed: int = 0,
    executor: Executor | None = None,
) -> PessimismSweep:
    """True ``J`` of pessimistic MA-PPO's learned policy ``pi_K`` against the bonus scale
    (SPEC section 6).

    For each of ``seeds`` children of ``SeedSequence(seed)`` one dataset of ``n_samples``
    transitions is drawn under the behaviour ``b(a|s) = C/|A| + (1 - C) 1[a = a*(s)]``
    (``C`` = ``coverage``, ``a*`` the optimal greedy joint action of policy iteration) and
    reused for every scale (a paired design: differences between scales are not sampling
    noise between datasets).  Each scale runs :func:`run_pessimistic_mappo` on the tabular
    critic with

        beta_G = scale / (1 - gamma),  i.e.  Gamma(s, a) = scale H / sqrt(n(s, a) + lambda),

    ``H = 1/(1 - gamma)``, from the uniform policy for ``K`` iterations with
    ``beta_k = beta sqrt(K)``.  Per scale the mean of ``J(pi_K)`` over the datasets carries the
    Student-t 95% half-width ``t_{0.975, seeds-1} sd / sqrt(seeds)``; it describes the spread
    over datasets and is not a certified bound.  The datasets are independent pieces on
    ``executor`` (:func:`verify.executors.map_seeded`, default a local process pool).
    """
    sc = _check_pessimism_arguments(scales, coverage, n_samples, seeds, K, beta, lambda_reg, seed)
    g = game.gamma
    optimal = policy_iteration(game.tabular)
    safe = optimal.greedy
    b = behaviour_policy(game, coverage, safe)
    behaviour_J = evaluate_game(game, ConditionalPolicy.from_joint(game, b)).J
    online_J = float(run_mappo(game, K, beta, output="last").J[-1])
    task = _PessimismTask(game, n_samples, coverage, safe, sc, K, beta, lambda_reg)
    runs = map_seeded(_pessimism_piece, [task] * seeds, executor=executor, seed=seed)
    J = np.empty((sc.size, seeds))
    event = np.empty((sc.size, seeds), dtype=bool)
    validity = np.empty(seeds)
    for j, (column, held, valid) in enumerate(runs.results):
        J[:, j] = column
        event[:, j] = held
        validity[j] = valid
    sd = np.std(J, axis=1, ddof=1)
    half = float(scipy.stats.t.ppf(0.975, seeds - 1)) * sd / math.sqrt(seeds)
    event.setflags(write=False)
    safe_out = np.array(safe, dtype=np.int64)
    safe_out.setflags(write=False)
    return PessimismSweep(
        scales=frozen(sc),
        J=frozen(J),
        event=event,
        mean_J=frozen(J.mean(axis=1)),
        ci_half_width=frozen(half),
        event_frequency=frozen(event.mean(axis=1)),
        validity_scales=frozen(validity),
        validity_scale=float(validity.mean()),
        J_star=float(optimal.J),
        behaviour_J=float(behaviour_J),
        online_J=online_J,
        safe_actions=safe_out,
        coverage=float(coverage),
        n_samples=int(n_samples),
        K=int(K),
        beta=float(beta),
        lambda_reg=float(lambda_reg),
        game=game.name,
        gamma=float(g),
        seed=int(seed),
        # a child of SeedSequence(seed) keeps the root's entropy, seed
        children=runs.children,
    )


@dataclass(frozen=True)
class _PessimismTask:
    """The arguments every dataset of :func:`pessimism_sweep` shares."""

    game: CooperativeMarkovGame
    n_samples: int
    coverage: float
    safe_actions: IntArray
    scales: FloatArray
    K: int
    beta: float
    lambda_reg: float


def _pessimism_piece(
    task: _PessimismTask, rng: np.random.Generator
) -> tuple[FloatArray, npt.NDArray[np.bool_], float]:
    """One dataset drawn with ``rng``: ``J(pi_K)`` and the event per scale, and the dataset's
    validity scale."""
    game, g = task.game, task.game.gamma
    ds = sample_dataset(
        game, task.n_samples, rng, coverage=task.coverage, safe_actions=task.safe_actions
    )
    critic = tabular_critic(game, ds, 0.0, task.lambda_reg)
    validity = tabular_validity_coefficient(critic, VALIDITY_DELTA) * (1 - g)
    J = np.empty(task.scales.size)
    event = np.empty(task.scales.size, dtype=bool)
    for i, scale in enumerate(task.scales):
        hist = run_pessimistic_mappo(
            game,
            ds,
            task.K,
            task.beta,
            bonus_coefficient=float(scale) / (1 - g),
            lambda_reg=task.lambda_reg,
        )
        J[i] = hist.J[-1]
        event[i] = hist.event_all
    return J, event, float(validity)


# --------------------------------------------------------------------------------------------
# Optimality: F*, the price of localization and the kappa trade-off (SPEC section 8)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PriceOfLocalization:
    """Result of :func:`price_of_localization`; arrays are indexed like ``beta``.

    Attributes:
        F_star: ``F`` at the optimal occupancy (attained, ``<= F*``).
        duality_gap: certified ``F* - F_star`` bound, so ``F* <= F_star + duality_gap``.
        F_initial: ``F`` at ``theta = 0`` (every agent uniform).
        beta: ``(B,)`` observation radii.
        F_localized: ``(B,)`` best ``F`` found by exact gradient ascent, a lower bound on
            ``F_loc(beta)`` (``proofs_notes/optimum.md#localized``).
        price: ``(B,)`` ``F_star + duality_gap - F_localized``, an upper bound on the price of
            localization ``F* - F_loc(beta)``.
        gradient_norm: ``(B,)`` ``||grad F||`` at the best localized policy (stationarity).
        equals_optimum: ``(B,)`` whether ``F_loc(beta) = F*`` is proved (linear utilities and
            ``beta >= diameter``).
        starts, iterations: ascent starts per radius and the cap on accepted steps per start.
        seeds: ``SeedSequence`` entropy and spawn key of each radius's starts.
    """

    F_star: float
    duality_gap: float
    F_initial: float
    beta: IntArray
    F_localized: FloatArray
    price: FloatArray
    gradient_norm: FloatArray
    equals_optimum: npt.NDArray[np.bool_]
    starts: int
    iterations: int
    seeds: tuple[tuple[int, tuple[int, ...]], ...]


@dataclass(frozen=True)
class _LocalizationTask:
    model: NetworkedMDP
    utilities: tuple[Utility, ...]
    beta: int
    starts: int
    iterations: int


def _localization_piece(
    task: _LocalizationTask, rng: np.random.Generator
) -> tuple[float, float, bool]:
    from reference.networked.localization import best_localized

    loc = best_localized(
        task.model, task.utilities, task.beta, rng, starts=task.starts, iterations=task.iterations
    )
    return loc.value, loc.gradient_norm, loc.equals_optimum


def price_of_localization(
    model: NetworkedMDP,
    utilities: Sequence[Utility],
    betas: Sequence[int],
    seed: int,
    *,
    starts: int = 3,
    iterations: int = 100,
    gap: float = 1e-6,
    executor: Executor | None = None,
) -> PriceOfLocalization:
    """``F*`` (certified, :func:`reference.networked.optimum.optimum`) and the best localized
    ``F`` found for each observation radius (:func:`reference.networked.localization.
    best_localized`, one seeded piece per radius on ``executor``)."""
    from reference.networked.exact import objective
    from reference.networked.optimum import optimum

    beta_arr = np.asarray(list(betas), dtype=np.int64)
    if beta_arr.ndim != 1 or beta_arr.size == 0 or (beta_arr < 0).any():
        raise ModelError(f"betas = {list(betas)!r}, expected non-negative radii")
    opt = optimum(model, utilities, gap=gap)
    initial = objective(model, LocalizedSoftmaxPolicy.uniform(model), utilities)
    tasks = [
        _LocalizationTask(model, tuple(utilities), int(b), starts, iterations) for b in beta_arr
    ]
    done = map_seeded(_localization_piece, tasks, executor=executor, seed=seed)
    values = np.array([v for v, _, _ in done.results])
    return PriceOfLocalization(
        F_star=opt.value,
        duality_gap=opt.duality_gap,
        F_initial=initial,
        beta=beta_arr,
        F_localized=frozen(values),
        price=frozen(opt.upper_bound - values),
        gradient_norm=frozen([g for _, g, _ in done.results]),
        equals_optimum=np.array([e for _, _, e in done.results], dtype=bool),
        starts=starts,
        iterations=iterations,
        seeds=done.children,
    )


def communication_cost(model: NetworkedMDP, kappa: int) -> tuple[int, int]:
    """``(messages, floats)`` per sampled step of Algorithm 1 at radius ``kappa``
    (``proofs_notes/optimum.md#communication``): every agent receives the local state, local
    action and critic value of each other member of ``N_i^kappa``, so
    ``messages = sum_i |N_i^kappa| - n`` and ``floats = 3 messages``."""
    messages = sum(len(nb) for nb in model.graph.neighbourhoods(kappa)) - model.n
    return messages, 3 * messages


@dataclass(frozen=True)
class KappaTradeoff:
    """Result of :func:`kappa_tradeoff_sweep`; arrays are indexed like ``kappa``.

    ``exact_*`` describe Algorithm 1 with exact components (exact occupancy, exact shadow
    rewards and the exact occupancy-weighted truncated gradient ``ghat``, so only the
    truncation remains); ``sampled_*`` the sampled Algorithm 1 with the same step size and
    iterations, averaged over ``repeats`` seeded runs (``sampled_*_se`` their standard errors,
    0 with one run).  Every quantity is measured exactly at the final policy.

    Attributes:
        kappa: ``(K,)`` radii ``0..diameter``.
        F_star, duality_gap, F_initial: as in :class:`PriceOfLocalization`.
        exact_objective, exact_gap, exact_gradient_norm_sq, exact_truncation_error: ``F``,
            ``F_star + duality_gap - F`` (an upper bound on ``F* - F``), ``||grad F||^2`` and
            ``||ghat - grad F||`` at the final policy.
        sampled_objective, sampled_gap, sampled_gradient_norm_sq,
        sampled_truncation_error: the same for the sampled runs (means).
        sampled_objective_se, sampled_gap_se: standard errors of the two means.
        messages_per_step, floats_per_step: :func:`communication_cost`.
        messages_per_iteration, floats_per_iteration: the per-step counts times the joint
            steps sampled per iteration (agent-steps per iteration over ``n``).
        samples: agent-steps one sampled run used (the fixed budget, equal for every kappa).
        iterations, step_size, beta: the run's settings.
        seeds: ``SeedSequence`` entropy and spawn key of every sampled run, kappa-major.
    """

    kappa: IntArray
    F_star: float
    duality_gap: float
    F_initial: float
    exact_objective: FloatArray
    exact_gap: FloatArray
    exact_gradient_norm_sq: FloatArray
    exact_truncation_error: FloatArray
    sampled_objective: FloatArray
    sampled_gap: FloatArray
    sampled_gradient_norm_sq: FloatArray
    sampled_truncation_error: FloatArray
    sampled_objective_se: FloatArray
    sampled_gap_se: FloatArray
    messages_per_step: IntArray
    floats_per_step: IntArray
    messages_per_iteration: FloatArray
    floats_per_iteration: FloatArray
    samples: int
    iterations: int
    step_size: float
    beta: int
    seeds: tuple[tuple[int, tuple[int, ...]], ...]


def _final_measures(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    utilities: Sequence[Utility],
    kappa: int,
) -> tuple[float, float, float]:
    """``(F, ||grad F||^2, ||ghat - grad F||)`` at ``policy`` (exact)."""
    sol = solve(model, policy, utilities, values="per-agent")
    ghat = truncated_gradient(model, policy, sol, kappa, "occupancy")
    err = gradient_norm([a - b for a, b in zip(ghat, sol.gradient, strict=True)])
    return sol.objective, sol.gradient_norm**2, err


def _exact_components_run(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    utilities: Sequence[Utility],
    kappa: int,
    step_size: float,
    iterations: int,
) -> LocalizedSoftmaxPolicy:
    """``theta += eta ghat(theta)`` with the exact occupancy-weighted truncated gradient."""
    for _ in range(iterations):
        sol = solve(model, policy, utilities, values="per-agent")
        g = truncated_gradient(model, policy, sol, kappa, "occupancy")
        policy = policy.with_theta(
            [t + step_size * d for t, d in zip(policy.theta, g, strict=True)]
        )
    return policy


@dataclass(frozen=True)
class _TradeoffTask:
    model: NetworkedMDP
    policy: LocalizedSoftmaxPolicy
    utilities: tuple[Utility, ...]
    config: Algorithm1Config


def _tradeoff_piece(
    task: _TradeoffTask, rng: np.random.Generator
) -> tuple[float, float, float, int]:
    hist = run_algorithm1(task.model, task.policy, task.utilities, task.config, rng, exact=False)
    F, g2, err = _final_measures(task.model, hist.policies[-1], task.utilities, task.config.kappa)
    return F, g2, err, int(hist.samples[-1])


def kappa_tradeoff_sweep(
    model: NetworkedMDP,
    utilities: Sequence[Utility],
    seed: int,
    *,
    beta: int = 0,
    iterations: int = 20,
    step_size: float = 1.0,
    batch: int = 128,
    horizon: int = 40,
    repeats: int = 2,
    gap: float = 1e-6,
    executor: Executor | None = None,
) -> KappaTradeoff:
    """Algorithm 1's optimality gap against ``F*`` and its communication cost for
    ``kappa = 0..diameter`` from ``theta = 0`` at radius ``beta`` (SPEC section 8).

    Every sampled run uses the same configuration apart from ``kappa`` (``batch``
    trajectories of ``horizon`` steps for the occupancy, the Monte-Carlo critic and the
    gradient, ``iterations`` updates of size ``step_size``), hence the same sample budget.
    The exact-components runs follow the exact truncated gradient for the same iterations.
    """
    from reference.networked.exact import objective
    from reference.networked.optimum import optimum

    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ModelError(f"repeats = {repeats!r}, expected an integer >= 1")
    opt = optimum(model, utilities, gap=gap)
    start = LocalizedSoftmaxPolicy.uniform(model, beta)
    initial = objective(model, start, utilities)
    kappas = np.arange(model.graph.diameter + 1, dtype=np.int64)
    exact = []
    for k in kappas:
        final = _exact_components_run(model, start, utilities, int(k), step_size, iterations)
        exact.append(_final_measures(model, final, utilities, int(k)))
    tasks = []
    for k in kappas:
        cfg = Algorithm1Config(
            kappa=int(k),
            step_size=step_size,
            iterations=iterations,
            occupancy_batch=batch,
            occupancy_horizon=horizon,
            critic="mc",
            critic_batch=batch,
            critic_horizon=horizon,
            gradient_batch=batch,
        )
        tasks += [_TradeoffTask(model, start, tuple(utilities), cfg)] * repeats
    done = map_seeded(_tradeoff_piece, tasks, executor=executor, seed=seed)
    res = np.array([r[:3] for r in done.results]).reshape(kappas.size, repeats, 3)
    used = np.array([r[3] for r in done.results])
    se_scale = 1.0 / math.sqrt(repeats) if repeats > 1 else 0.0
    std = res.std(axis=1, ddof=1) if repeats > 1 else np.zeros((kappas.size, 3))
    costs = [communication_cost(model, int(k)) for k in kappas]
    ex = np.array(exact)
    floats = np.array([f for _, f in costs], dtype=np.int64)
    messages = np.array([m for m, _ in costs], dtype=np.int64)
    steps = float(used.max()) / iterations / model.n
    return KappaTradeoff(
        kappa=kappas,
        F_star=opt.value,
        duality_gap=opt.duality_gap,
        F_initial=initial,
        exact_objective=frozen(ex[:, 0]),
        exact_gap=frozen(opt.upper_bound - ex[:, 0]),
        exact_gradient_norm_sq=frozen(ex[:, 1]),
        exact_truncation_error=frozen(ex[:, 2]),
        sampled_objective=frozen(res[:, :, 0].mean(axis=1)),
        sampled_gap=frozen(opt.upper_bound - res[:, :, 0].mean(axis=1)),
        sampled_gradient_norm_sq=frozen(res[:, :, 1].mean(axis=1)),
        sampled_truncation_error=frozen(res[:, :, 2].mean(axis=1)),
        sampled_objective_se=frozen(std[:, 0] * se_scale),
        sampled_gap_se=frozen(std[:, 0] * se_scale),
        messages_per_step=messages,
        floats_per_step=floats,
        messages_per_iteration=frozen(messages * steps),
        floats_per_iteration=frozen(floats * steps),
        samples=int(used.max()),
        iterations=iterations,
        step_size=step_size,
        beta=start.beta,
        seeds=done.children,
    )
