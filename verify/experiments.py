"""Experiment sweeps over the exact oracles (SPEC sections 3 and 4).

* :func:`kappa_decay_sweep` -- ``max_i D_i(kappa)``, the derived bound and the truncated
  gradient error ``||ghat - grad F||`` for every radius, with the fitted per-hop rate.
* :func:`sample_complexity_sweep` -- agent-steps for Algorithm 1 to reach
  ``||grad F||^2 <= floor + epsilon`` for a range of ``epsilon``, with the log-log slope.
* :func:`mappo_gap_sweep` -- MA-PPO's average and last-iterate gaps against ``B(K)`` over a
  grid of ``K`` (SPEC section 5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from reference._arrays import FloatArray, IntArray, frozen
from reference.cooperative.game import CooperativeMarkovGame
from reference.cooperative.mappo import run_mappo, tuned_beta
from reference.cooperative.policy import IndicatorFeatures
from reference.errors import ModelError
from reference.networked.algorithm import Algorithm1Config, run_algorithm1
from reference.networked.exact import gradient_norm, shadow_q, solve
from reference.networked.model import NetworkedMDP
from reference.networked.policy import LocalizedSoftmaxPolicy
from reference.networked.truncation import Weights, decay_profile, truncated_gradient
from reference.networked.utilities import Utility

__all__ = [
    "DecaySweep",
    "GapSweep",
    "SampleComplexity",
    "fit_rate",
    "kappa_decay_sweep",
    "mappo_gap_sweep",
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
) -> DecaySweep:
    """Decay spreads, bound and truncated-gradient error for ``kappa = 0..diameter``."""
    sol = solve(model, policy, utilities)
    prof = decay_profile(model, policy, sol)
    qs = shadow_q(model, policy, sol)
    errors = []
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
        samples: ``(E,)`` agent-steps used when ``||grad F(theta_k)||^2 <= floor + epsilon``
            first held (NaN if never within the run).
        floor: the truncation floor ``max_k ||ghat - grad F||^2`` over the runs.
        slope: fitted ``d log(samples) / d log(1/epsilon)`` (least squares over reached
            targets); theory predicts 2 up to logarithms (SPEC section 4).
        seeds: the ``SeedSequence`` entropy and spawn keys used, one per target.
    """

    epsilon: FloatArray
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
) -> SampleComplexity:
    """Samples for Algorithm 1 to reach ``||grad F||^2 <= floor + epsilon``, per ``epsilon``.

    For each target the batch sizes scale like ``1/epsilon`` (the variance of the
    gradient estimate must fall below ``epsilon``) and the run stops at the first iterate
    that meets the target; the exact ``||grad F||`` is recorded by the dense oracle.  The
    floor is the squared truncation error at ``kappa``.  Children are seeded with
    ``SeedSequence(seed).spawn``.
    """
    children = np.random.SeedSequence(seed).spawn(len(epsilons))
    floor = 0.0
    reached = []
    for eps, child in zip(epsilons, children, strict=True):
        batch = max(16, int(np.ceil(batch_per_inverse_epsilon / eps)))
        # horizons with gamma^H <= eps: the truncation bias is below the target
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
        used, floors = _run_until(model, policy, utilities, cfg, np.random.default_rng(child), eps)
        floor = max(floor, float(np.max(floors**2)) if floors.size else 0.0)
        reached.append(used)
    eps_arr = np.asarray(epsilons, dtype=np.float64)
    samples = np.array(reached, dtype=np.float64)
    ok = np.isfinite(samples)
    slope = (
        float(np.polyfit(np.log(1.0 / eps_arr[ok]), np.log(samples[ok]), 1)[0])
        if ok.sum() >= 2
        else float("nan")
    )
    seeds = tuple((int(seed), tuple(int(k) for k in c.spawn_key)) for c in children)
    return SampleComplexity(frozen(eps_arr), frozen(samples), floor, slope, seeds)


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
) -> GapSweep:
    """Run exact-Q MA-PPO from the uniform policy once per ``K`` (its schedule
    ``beta_k = beta sqrt(K)`` depends on ``K``) and record the gaps next to ``B(K)``.

    ``beta`` defaults to the tuned ``sqrt(N / (8 log|A|)) / (1 - gamma)``.  One-hot features
    use the exact mirror-descent step (identical to the one-hot log-linear step, see
    ``tests/test_mappo.py``); ``"product"`` uses the exact least-squares log-linear step in
    product features, i.e. independent policies.
    """
    ks = [int(k) for k in K_grid]
    if not ks or min(ks) < 1:
        raise ModelError(f"K grid = {list(K_grid)!r}, expected positive iteration counts")
    if features not in ("one-hot", "product"):
        raise ModelError(f"features = {features!r}, expected 'one-hot' or 'product'")
    b = tuned_beta(game.n_agents, game.log_action_count, game.gamma) if beta is None else beta
    avg, last, bound = [], [], []
    j_star = float("nan")
    for K in ks:
        if features == "one-hot":
            h = run_mappo(game, K, b, output="last")
        else:
            h = run_mappo(
                game,
                K,
                b,
                step="loglinear",
                features=IndicatorFeatures.product(game),
                output="last",
            )
        avg.append(h.average_gap)
        last.append(h.last_gap)
        # zero error terms for exact steps; the plug-in bound of mappo-bound.md#inexact else
        bound.append(h.bound + float(h.error_terms.sum()) / (K * (1 - game.gamma)))
        j_star = h.J_star
    return GapSweep(
        K=np.asarray(ks, dtype=np.int64),
        average_gap=frozen(avg),
        last_gap=frozen(last),
        bound=frozen(bound),
        beta=float(b),
        J_star=j_star,
        features=features,
        game=game.name,
    )
