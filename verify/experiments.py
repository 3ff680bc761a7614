"""Experiment sweeps over the exact oracles (SPEC sections 3 and 4).

* :func:`kappa_decay_sweep` -- ``max_i D_i(kappa)``, the derived bound and the truncated
  gradient error ``||ghat - grad F||`` for every radius, with the fitted per-hop rate.
* :func:`sample_complexity_sweep` -- agent-steps for Algorithm 1 to reach
  ``||grad F||^2 <= floor + epsilon`` for a range of ``epsilon``, with the log-log slope.
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
from dataclasses import dataclass, replace

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
from reference.memory import check_memory
from reference.networked.algorithm import Algorithm1Config, run_algorithm1
from reference.networked.exact import gradient_contributions, gradient_norm, shadow_q, solve
from reference.networked.model import NetworkedMDP
from reference.networked.policy import LocalizedSoftmaxPolicy
from reference.networked.truncation import (
    Weights,
    decay_profile,
    occupancy_identity_holds,
    occupancy_truncated_gradient,
    truncated_gradient,
)
from reference.networked.utilities import Utility
from reference.tabular import policy_iteration
from verify.executors import map_seeded

__all__ = [
    "DecaySweep",
    "GapSweep",
    "KappaTradeoff",
    "PessimismSweep",
    "PriceOfLocalization",
    "SampleComplexity",
    "censored_median",
    "communication_cost",
    "fit_rate",
    "kappa_decay_sweep",
    "kappa_tradeoff_sweep",
    "mappo_gap_sweep",
    "pessimism_sweep",
    "price_of_localization",
    "sample_complexity_sweep",
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


@dataclass(frozen=True)
class SampleComplexity:
    """Result of :func:`sample_complexity_sweep`.

    Attributes:
        epsilon: ``(E,)`` targets for ``||grad F||^2`` above the floor.
        runs: ``(E, R)`` agent-steps each independent run used before
            ``||grad F(theta_k)||^2 <= floor + epsilon`` first held (``inf`` if it never did
            within the run: a right-censored count).
        samples: ``(E,)`` the median of each row of ``runs`` (:func:`censored_median`): NaN
            where half or more of the row's runs are censored.
        floor: the truncation floor ``max_k ||ghat - grad F||^2`` over the runs.
        slope: fitted ``d log(samples) / d log(1/epsilon)`` (least squares over the targets
            with a finite median); theory predicts 2 up to logarithms (SPEC section 4).
        seeds: the ``SeedSequence`` entropy and spawn key of every run, target-major (run
            ``r`` of target ``e`` is child ``e R + r`` of ``SeedSequence(seed)``, so a run's
            stream depends on ``(seed, e, r, R)``).
    """

    epsilon: FloatArray
    runs: FloatArray
    samples: FloatArray
    floor: float
    slope: float
    seeds: tuple[tuple[int, tuple[int, ...]], ...]


def sample_complexity_sweep(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    utilities: Sequence[Utility],
    epsilons: Sequence[float],
    seed: int,
    kappa: int = 1,
    step_size: float = 0.5,
    batch_per_inverse_epsilon: float = 2.0,
    max_iterations: int = 200,
    *,
    repeats: int = 1,
    executor: Executor | None = None,
) -> SampleComplexity:
    """Samples for Algorithm 1 to reach ``||grad F||^2 <= floor + epsilon``, per ``epsilon``.

    For each target the batch sizes scale like ``1/epsilon`` (the variance of the
    gradient estimate must fall below ``epsilon``) and the run stops at the first iterate
    that meets the target; the exact ``||grad F||`` is recorded by the dense oracle.  The
    floor is the squared truncation error at ``kappa``.  Each target is run ``repeats``
    times from independent generators and summarised by the median count, which a single
    slow or censored run cannot move far.  The ``len(epsilons) * repeats`` runs are seeded
    with ``SeedSequence(seed).spawn`` and run as independent pieces on ``executor``
    (:func:`verify.executors.map_seeded`, default a local process pool).
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ModelError(f"repeats = {repeats!r}, expected an integer >= 1")
    eps_arr = np.asarray(epsilons, dtype=np.float64)
    if eps_arr.ndim != 1 or eps_arr.size == 0 or not np.all(eps_arr > 0):
        raise ModelError(f"epsilons = {list(epsilons)!r}, expected positive targets")
    tasks = []
    for eps in eps_arr:
        task = _complexity_task(
            model,
            policy,
            utilities,
            float(eps),
            kappa,
            step_size,
            batch_per_inverse_epsilon,
            max_iterations,
        )
        tasks += [task] * repeats
    done = map_seeded(_complexity_piece, tasks, executor=executor, seed=seed)
    floor = max([0.0, *(f for _, f in done.results)])
    runs = np.array([used for used, _ in done.results], dtype=np.float64)
    runs = np.where(np.isnan(runs), np.inf, runs).reshape(eps_arr.size, repeats)
    samples = censored_median(runs)
    ok = np.isfinite(samples)
    slope = (
        float(np.polyfit(np.log(1.0 / eps_arr[ok]), np.log(samples[ok]), 1)[0])
        if ok.sum() >= 2
        else float("nan")
    )
    return SampleComplexity(
        frozen(eps_arr), frozen(runs), frozen(samples), floor, slope, done.children
    )


def censored_median(runs: FloatArray) -> FloatArray:
    """Row medians of right-censored counts: ``runs`` is ``(E, R)`` with ``inf`` for a run
    that never reached its target.

    A censored run is larger than every finite one, so it takes its place at the top of the
    order; the median (the middle value, or the mean of the two middle values for even
    ``R``) is then finite exactly when fewer than half of the runs are censored, and the
    returned row value is NaN otherwise (the median is only known to exceed the largest
    finite count).
    """
    med = np.median(np.asarray(runs, dtype=np.float64), axis=1)
    out: FloatArray = np.where(np.isfinite(med), med, np.nan)
    return out


@dataclass(frozen=True)
class _ComplexityTask:
    """One target of :func:`sample_complexity_sweep`."""

    model: NetworkedMDP
    policy: LocalizedSoftmaxPolicy
    utilities: tuple[Utility, ...]
    cfg: Algorithm1Config
    eps: float


def _complexity_task(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    utilities: Sequence[Utility],
    eps: float,
    kappa: int,
    step_size: float,
    batch_per_inverse_epsilon: float,
    max_iterations: int,
) -> _ComplexityTask:
    """Target ``eps``: batches ``~ 1/eps`` (the gradient estimate's variance must fall below
    ``eps``) and horizons with ``gamma^H <= eps`` (the truncation bias is below the target)."""
    batch = max(16, int(np.ceil(batch_per_inverse_epsilon / eps)))
    horizon = int(np.ceil(np.log(eps) / np.log(model.gamma))) + 1 if model.gamma > 0 else 1
    cfg = Algorithm1Config(
        kappa=kappa,
        step_size=step_size,
        iterations=max_iterations,
        occupancy_batch=batch,
        critic_batch=batch,
        gradient_batch=batch,
        occupancy_horizon=horizon,
        critic_horizon=horizon,
    )
    return _ComplexityTask(model, policy, tuple(utilities), cfg, eps)


def _complexity_piece(task: _ComplexityTask, rng: np.random.Generator) -> tuple[float, float]:
    """Agent-steps to reach the target and the largest squared truncation floor seen."""
    used, floors = _run_until(task.model, task.policy, task.utilities, task.cfg, rng, task.eps)
    return used, float(np.max(floors**2)) if floors.size else 0.0


def _run_until(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    utilities: Sequence[Utility],
    cfg: Algorithm1Config,
    rng: np.random.Generator,
    eps: float,
) -> tuple[float, FloatArray]:
    """Run Algorithm 1 in chunks of 5 iterations until ``||grad F||^2 <= floor^2 + eps``.

    Returns the agent-steps used before the first iterate meeting the target (NaN if none
    within ``cfg.iterations``) and the truncation floors seen.
    """
    used = 0
    floors: list[float] = []
    remaining = cfg.iterations
    while remaining > 0:
        chunk = replace(cfg, iterations=min(5, remaining))
        hist = run_algorithm1(model, policy, utilities, chunk, rng)
        floors.extend(hist.truncation_floor.tolist())
        floor2 = max(floors) ** 2
        hit = np.flatnonzero(hist.gradient_norm**2 <= floor2 + eps)
        if hit.size:
            k = int(hit[0])
            return float(used + (int(hist.samples[k - 1]) if k > 0 else 0)), np.array(floors)
        used += int(hist.samples[-1])
        policy = hist.policies[-1]
        remaining -= chunk.iterations
    return float("nan"), np.array(floors)


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
