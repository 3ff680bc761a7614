"""The theorem report: every claim of the two papers that this project checks, measured on
built-in instances, with its bound and a verdict (``marl-oracle report``).

Each :class:`Claim` records its statement, the instance, the measured value, the bound it is
compared with, the verdict and the seed.  A claim *passes* when ``measured <= bound`` (every
claim is phrased so); ``"reported"`` claims (a fitted slope, say) carry no bound and never
fail.  :func:`run_report` runs the claims in order, reporting progress through a callback,
and :func:`write_report` writes ``report.md``, ``report.json`` and PNG plots.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from reference._arrays import FloatArray
from reference.cooperative import (
    multi_agent_pdl,
    random_game,
    run_pessimistic_mappo,
    sample_dataset,
    tuned_beta,
)
from reference.cooperative.policy import ConditionalPolicy
from reference.errors import ModelError
from reference.instances import climbing, line_message, rare_stall
from reference.networked.algorithm import (
    finite_horizon_occupancy,
    occupancy_estimate,
)
from reference.networked.exact import (
    gradient_chain_rule,
    gradient_joint_q,
    local_occupancies,
    solve,
)
from reference.networked.policy import LocalizedSoftmaxPolicy
from reference.networked.sampling import rollout
from verify.assumptions import spread_tolerance
from verify.bounds import l1_radius, sign_test_wins, split_delta
from verify.checks.planted import run_planted
from verify.executors import SeededResults, map_seeded
from verify.experiments import (
    kappa_decay_sweep,
    mappo_gap_sweep,
    pessimism_sweep,
    sample_complexity_sweep,
)
from verify.tolerances import gradient_tolerance, linear_solve_tolerance, pdl_tolerance

__all__ = [
    "CLAIMS",
    "Claim",
    "ClaimContext",
    "Measurement",
    "Report",
    "claim_seeds",
    "run_report",
    "write_report",
]

Verdict = Literal["pass", "fail", "reported"]

DELTA = 1e-9
"""Failure probability of each statistical claim."""


@dataclass(frozen=True)
class Claim:
    """One checked claim.

    Attributes:
        name: identifier (``"kappa-decay-beta0"``).
        statement: what is claimed, with its source (SPEC section, proofs note).
        instance: the instance and settings it was measured on.
        measured: the measured value (the left side of ``measured <= bound``).
        bound: the bound (NaN for ``"reported"`` claims).
        verdict: ``"pass"``, ``"fail"`` or ``"reported"``.
        seed: the claim's own seed (:func:`claim_seeds` of the report's root seed); ``None``
            for a claim recorded without one.
        seconds: wall time of the measurement.
        series: named lists behind the plot of this claim, if any.
        children: ``(entropy, spawn_key)`` of the ``SeedSequence`` children its pieces
            received (``verify.executors.map_seeded``), in task order; empty if none.
    """

    name: str
    statement: str
    instance: str
    measured: float
    bound: float
    verdict: Verdict
    seed: int | None
    seconds: float
    series: dict[str, list[float]] = field(default_factory=dict)
    children: tuple[tuple[int, tuple[int, ...]], ...] = ()


@dataclass(frozen=True)
class Report:
    """All claims of one run, and whether every checked claim passed.

    Attributes:
        claims: the claims in the order of :data:`CLAIMS`.
        quick: the smaller instances were used.
        seconds: wall time of the run.
        seed: the root seed every claim's seed derives from (:func:`claim_seeds`).
    """

    claims: tuple[Claim, ...]
    quick: bool
    seconds: float
    seed: int = 0

    @property
    def passed(self) -> bool:
        """No claim failed."""
        return all(c.verdict != "fail" for c in self.claims)


def _verdict(measured: float, bound: float) -> Verdict:
    return "pass" if measured <= bound else "fail"


@dataclass(frozen=True)
class ClaimContext:
    """What every claim is measured with.

    Attributes:
        quick: smaller instances and fewer repetitions.
        seed: root seed of the claim's randomness.
        executor: where the claim's independent pieces run
            (:func:`verify.executors.map_seeded`).
    """

    quick: bool
    seed: int
    executor: Executor


@dataclass(frozen=True)
class Measurement:
    """What one claim measured; the verdict is ``measured <= bound`` (NaN bound: reported).

    Attributes:
        statement: the claim with its source.
        instance: the instance and settings.
        measured: the left side of ``measured <= bound``.
        bound: the right side (NaN for a reported value).
        series: named lists behind the claim's plot.
        children: ``(entropy, spawn_key)`` of every ``SeedSequence`` child the claim's pieces
            received, in task order (empty if the claim is deterministic or unsplit).
    """

    statement: str
    instance: str
    measured: float
    bound: float
    series: dict[str, list[float]] = field(default_factory=dict)
    children: tuple[tuple[int, tuple[int, ...]], ...] = ()


ClaimFn = Callable[[ClaimContext], Measurement]
"""A claim: measures itself in a :class:`ClaimContext`."""


def _gradient_routes(ctx: ClaimContext) -> Measurement:
    n = 4 if ctx.quick else 6
    inst = line_message(n)
    m = inst.model
    policy = LocalizedSoftmaxPolicy.random(m, 0, np.random.default_rng(ctx.seed))
    us = inst.utilities("entropy")
    sol = solve(m, policy, us)
    g1 = sol.gradient
    g2 = gradient_chain_rule(m, policy, us)
    g3 = gradient_joint_q(m, policy, sol)
    gap = max(
        float(np.max(np.abs(a - b)))
        for x, y in ((g1, g2), (g1, g3))
        for a, b in zip(x, y, strict=True)
    )
    return Measurement(
        "grad F by shadow-reward policy gradient, forward chain rule and joint Q agree "
        "(SPEC section 2; proofs_notes/shadow-reward-gradient.md)",
        f"line-message n={n}, entropy utilities, random theta",
        gap,
        gradient_tolerance(m.states.size, m.gamma, 1.0 / (1 - m.gamma)),
    )


def _pdl_piece(games: int, rng: np.random.Generator) -> float:
    """Largest ``|sum of agents' terms - (J(pi') - J(pi))|`` over ``games`` random games."""
    worst = 0.0
    for _ in range(games):
        game = random_game(rng, 3, (2, 3, 2), 0.9)
        pis = []
        for _ in range(2):
            conds = tuple(
                rng.dirichlet(np.ones(k), size=(game.n_states, *game.action_counts[:m]))
                for m, k in enumerate(game.action_counts)
            )
            pis.append(ConditionalPolicy(game, conds))
        pdl = multi_agent_pdl(game, pis[0], pis[1])
        worst = max(worst, abs(pdl.total - pdl.difference))
    return worst


def _ma_pdl(ctx: ClaimContext) -> Measurement:
    pieces, per = (1, 5) if ctx.quick else (4, 25)
    done = map_seeded(_pdl_piece, [per] * pieces, executor=ctx.executor, seed=ctx.seed)
    return Measurement(
        "multi-agent performance difference lemma: J(pi') - J(pi) equals the sum of the "
        "agents' terms (SPEC section 5; proofs_notes/ma-pdl.md); the bound is the derived "
        "rounding allowance verify.tolerances.pdl_tolerance",
        f"{pieces * per} random games, N = 3, |A^m| = (2, 3, 2), |S| = 3, gamma 0.9",
        max(done.results),
        pdl_tolerance(3, 12, 3, 0.9),
        children=done.children,
    )


def _decay(beta: int) -> ClaimFn:
    def run(ctx: ClaimContext) -> Measurement:
        n = 5 if ctx.quick else 7
        inst = line_message(n)
        policy = LocalizedSoftmaxPolicy.uniform(inst.model, beta)
        us = inst.utilities()
        sweep = kappa_decay_sweep(inst.model, policy, us)
        return Measurement(
            f"kappa-hop decay: max_i D_i(kappa) <= Delta gamma^t0 / (1 - gamma) for every "
            f"kappa, beta = {beta} (SPEC section 3; proofs_notes/decay.md); measured is the "
            "largest spread - bound, the bound the spreads' rounding allowance",
            f"line-message n={n}, theta = 0, beta = {beta}",
            float(np.max(sweep.max_spread - sweep.bound)),
            spread_tolerance(inst.model, solve(inst.model, policy, us, values="per-agent")),
            {
                "kappa": sweep.kappa.astype(float).tolist(),
                "max_spread": sweep.max_spread.tolist(),
                "bound": sweep.bound.tolist(),
            },
        )

    return run


def _truncated_gradient(ctx: ClaimContext) -> Measurement:
    n = 5 if ctx.quick else 7
    inst = line_message(n)
    m = inst.model
    policy = LocalizedSoftmaxPolicy.uniform(m, 1)
    sweep = kappa_decay_sweep(m, policy, inst.utilities())
    return Measurement(
        "truncated gradient: ||ghat - grad F|| <= sqrt(2n) max_j D_j(kappa) / (1 - gamma) "
        "for every kappa (SPEC section 3; proofs_notes/truncated-gradient.md); measured is "
        "the largest error - bound, the bound the gradients' rounding allowance",
        f"line-message n={n}, theta = 0, beta = 1, occupancy weights",
        float(np.max(sweep.truncated_gradient_error - sweep.gradient_error_bound)),
        gradient_tolerance(m.states.size, m.gamma, 1.0 / (1 - m.gamma)),
        {
            "kappa": sweep.kappa.astype(float).tolist(),
            "error": sweep.truncated_gradient_error.tolist(),
            "bound": sweep.gradient_error_bound.tolist(),
        },
    )


_OCCUPANCY_HORIZON = 30
"""Horizon ``H`` of the occupancy-estimator claim."""


def _occupancy_piece(batch: int, rng: np.random.Generator) -> tuple[FloatArray, ...]:
    """``lamtilde_i`` from ``batch`` trajectories of the occupancy claim's instance."""
    m = line_message(4).model
    policy = LocalizedSoftmaxPolicy.uniform(m, 0)
    return occupancy_estimate(m, rollout(m, policy, batch, _OCCUPANCY_HORIZON, rng))


def _occupancy_estimator(ctx: ClaimContext) -> Measurement:
    m = line_message(4).model
    policy = LocalizedSoftmaxPolicy.uniform(m, 0)
    H = _OCCUPANCY_HORIZON
    batches = [1000, 4000] if ctx.quick else [1000, 4000, 16000, 64000]
    lam_H, _ = finite_horizon_occupancy(m, policy, H)
    exact = local_occupancies(policy, lam_H)
    done = map_seeded(_occupancy_piece, batches, executor=ctx.executor, seed=ctx.seed)
    L = (1 - m.gamma**H) / (1 - m.gamma)
    delta = split_delta(DELTA, len(batches) * m.n)
    worst, errors, radii = 0.0, [], []
    for B, est in zip(batches, done.results, strict=True):
        errs = [float(np.abs(e - x).sum()) for e, x in zip(est, exact, strict=True)]
        rads = [l1_radius(B, x.size, L, delta) for x in exact]
        worst = max(worst, *(e / r for e, r in zip(errs, rads, strict=True)))
        errors.append(max(errs))
        radii.append(min(rads))
    return Measurement(
        "sampled local occupancies converge: ||lamtilde_i - lam^H_i||_1 within the McDiarmid "
        f"radius at delta = {DELTA:g} per check (SPEC section 4; proofs_notes/algorithm1.md); "
        "measured is the largest error / radius",
        f"line-message n=4, theta = 0, H = {H}, B in {batches}",
        worst,
        1.0,
        {"batch": [float(b) for b in batches], "error": errors, "radius": radii},
        done.children,
    )


def _sample_complexity(ctx: ClaimContext) -> Measurement:
    inst = line_message(3)
    policy = LocalizedSoftmaxPolicy.uniform(inst.model, 0)
    us = inst.utilities()
    g0 = solve(inst.model, policy, us).gradient_norm ** 2
    fractions = [0.2, 0.1] if ctx.quick else [0.4, 0.2, 0.1, 0.05]
    repeats = 3 if ctx.quick else 9
    res = sample_complexity_sweep(
        inst.model, policy, us, [f * g0 for f in fractions], ctx.seed, max_iterations=40,
        batch_per_inverse_epsilon=0.5, repeats=repeats, executor=ctx.executor,
    )
    return Measurement(
        "Algorithm 1's samples to reach ||grad F||^2 <= floor + epsilon grow like "
        "epsilon^-2 up to logs (SPEC section 4); reported: the fitted slope of log median "
        "samples against log(1/epsilon)",
        f"line-message n=3, kappa = 1, epsilon = {fractions} x ||grad F(theta_0)||^2, "
        f"{repeats} runs per epsilon",
        res.slope,
        math.nan,
        {"epsilon": res.epsilon.tolist(), "samples": res.samples.tolist()},
        res.seeds,
    )


def _mappo_gap(ctx: ClaimContext) -> Measurement:
    Ks = [4, 16, 64] if ctx.quick else [4, 16, 64, 256, 1024]
    sweep = mappo_gap_sweep(climbing(), Ks, executor=ctx.executor)
    return Measurement(
        "MA-PPO with exact Q: average gap <= B(K) for every K (SPEC section 5; "
        "proofs_notes/mappo-bound.md#bound); measured is the largest gap / B(K)",
        f"climbing, tuned beta, K in {Ks}",
        float(np.max(sweep.average_gap / sweep.bound)),
        1.0,
        {
            "K": [float(k) for k in Ks],
            "average_gap": sweep.average_gap.tolist(),
            "last_gap": sweep.last_gap.tolist(),
            "bound": sweep.bound.tolist(),
        },
    )


def _pessimism(ctx: ClaimContext) -> Measurement:
    seeds = 32 if ctx.quick else 40
    scales = [0.0, 0.5] if ctx.quick else [0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
    sweep = pessimism_sweep(
        rare_stall(), coverage=0.15, n_samples=10_000, scales=scales, seeds=seeds, K=32,
        beta=0.1, seed=ctx.seed, executor=ctx.executor,
    )
    i = scales.index(0.5)
    wins = int(np.sum(sweep.J[i] > sweep.J[0]))
    need = sign_test_wins(seeds, DELTA)
    return Measurement(
        "under poor coverage, pessimism raises the learned policy's true J: scale 0.5 beats "
        f"scale 0 on at least {need} of {seeds} paired datasets (one-sided sign test, "
        f"delta = {DELTA:g}; proofs_notes/pessimism.md#rare-stall); measured is "
        "need - wins (<= 0 passes)",
        f"rare-stall, coverage 0.15, 10000 samples, K = 32, beta = 0.1, scales {scales}",
        float(need - wins),
        0.0,
        {
            "scale": [float(s) for s in scales],
            "mean_J": sweep.mean_J.tolist(),
            "ci_half_width": sweep.ci_half_width.tolist(),
            "event_frequency": sweep.event_frequency.tolist(),
            "J_star": [sweep.J_star],
            "online_J": [sweep.online_J],
            "behaviour_J": [sweep.behaviour_J],
        },
        sweep.children,
    )


@dataclass(frozen=True)
class _PessimismRun:
    """What the event and bound claims need of one pessimistic MA-PPO run."""

    event_all: bool
    average_gap: float
    bound: float
    optimism: float
    critic_error: float


def _pessimism_piece(_: None, rng: np.random.Generator) -> _PessimismRun:
    """Pessimistic MA-PPO (K = 16, tuned beta, scale 1) on one rare-stall dataset."""
    game = rare_stall()
    beta = tuned_beta(game.n_agents, game.log_action_count, game.gamma)
    ds = sample_dataset(game, 10_000, rng, coverage=0.15, safe_actions=np.array([0, 0]))
    h = run_pessimistic_mappo(game, ds, 16, beta, 1.0 / (1 - game.gamma))
    optimism = float(np.max(h.J_hat[h.event] - h.J[h.event])) if h.event.any() else -math.inf
    return _PessimismRun(
        bool(h.event_all), float(h.average_gap), float(h.bound.total), optimism,
        float(np.max(h.critic_error)),
    )


def _pessimism_runs(ctx: ClaimContext) -> SeededResults[_PessimismRun]:
    runs = 5 if ctx.quick else 40
    return map_seeded(_pessimism_piece, [None] * runs, executor=ctx.executor, seed=ctx.seed)


def _pessimism_bound(ctx: ClaimContext) -> Measurement:
    done = _pessimism_runs(ctx)
    held = [r for r in done.results if r.event_all]
    worst = max((r.average_gap / r.bound for r in held), default=math.inf)
    return Measurement(
        "on the validity event the average gap is under B(K) + (2/(1-gamma)) E_{d*}[Gamma] "
        f"(SPEC section 6; proofs_notes/pessimism.md#bound); the event held on {len(held)} "
        f"of {len(done.results)} datasets; measured is the largest gap / bound over them "
        "(inf if none)",
        "rare-stall, coverage 0.15, 10000 samples, K = 16, tuned beta, scale 1",
        worst,
        1.0,
        children=done.children,
    )


def _pessimism_event(ctx: ClaimContext) -> Measurement:
    done = _pessimism_runs(ctx)
    worst = max((r.optimism for r in done.results), default=-math.inf)
    if not math.isfinite(worst):  # the event never held: nothing was checked
        worst = math.inf
    errors = max(r.critic_error for r in done.results)
    game = rare_stall()
    return Measurement(
        "on the validity event the critic is pessimistic: J_hat(pi_k) <= J(pi_k) (SPEC "
        "section 6; proofs_notes/pessimism.md#event); measured is the largest J_hat - J over "
        "iterates on the event, the bound the critic's certified error / (1 - gamma) plus the "
        "LU rounding of J",
        "rare-stall, coverage 0.15, 10000 samples, K = 16, tuned beta, scale 1, "
        f"{len(done.results)} datasets",
        worst,
        errors / (1 - game.gamma)
        + linear_solve_tolerance(game.n_states, game.gamma, 1 / (1 - game.gamma)),
        children=done.children,
    )


def _checks(ctx: ClaimContext) -> Measurement:
    areas = ("tabular", "gae") if ctx.quick else None
    verdicts = run_planted(areas, executor=ctx.executor)
    wrong = sum(not v.verdict_ok for v in verdicts)
    return Measurement(
        "every planted bug is caught by the check meant for it and every correct "
        "implementation passes (verify.checks.planted); measured is the number of wrong "
        "verdicts",
        f"areas {sorted({v.area for v in verdicts})}, {len(verdicts)} implementations, "
        f"{sum(v.cases for v in verdicts)} cases",
        float(wrong),
        0.0,
    )


CLAIMS: tuple[tuple[str, ClaimFn], ...] = (
    ("gradient-routes", _gradient_routes),
    ("ma-pdl", _ma_pdl),
    ("kappa-decay-beta0", _decay(0)),
    ("kappa-decay-beta1", _decay(1)),
    ("truncated-gradient", _truncated_gradient),
    ("occupancy-estimator", _occupancy_estimator),
    ("sample-complexity", _sample_complexity),
    ("mappo-gap", _mappo_gap),
    ("pessimism-scale", _pessimism),
    ("pessimism-event", _pessimism_event),
    ("pessimism-bound", _pessimism_bound),
    ("checks-and-mutants", _checks),
)
"""Every claim of the report, in order."""


def run_report(
    *,
    quick: bool = False,
    seed: int = 0,
    only: tuple[str, ...] = (),
    progress: Callable[[int, int, str], None] | None = None,
    executor: Executor | None = None,
) -> Report:
    """Measure every claim (or those named in ``only``); ``progress(done, total, name)`` is
    called before each claim and once at the end.

    The claims run one after another; each splits its independent pieces (datasets, runs,
    ``K`` values, planted bugs) over ``executor`` with :func:`verify.executors.map_seeded`.
    ``None`` runs them on one local process pool, shut down on return.  Each claim draws
    from its own seed (:func:`claim_seeds` of ``seed``), so the numbers depend on ``seed``
    only, not on the executor or on which claims run.
    """
    unknown = [n for n in only if n not in dict(CLAIMS)]
    if unknown:
        raise ModelError(f"only = {unknown!r}: no such claim; claims are {[n for n, _ in CLAIMS]}")
    chosen = [(n, f) for n, f in CLAIMS if not only or n in only]
    if executor is None:
        with ProcessPoolExecutor() as pool:
            return run_report(quick=quick, seed=seed, only=only, progress=progress,
                              executor=pool)
    seeds = claim_seeds(seed)
    start = time.perf_counter()
    claims = []
    for k, (name, fn) in enumerate(chosen):
        if progress is not None:
            progress(k, len(chosen), name)
        t0 = time.perf_counter()
        got = fn(ClaimContext(quick, seeds[name], executor))
        verdict: Verdict = (
            "reported" if math.isnan(got.bound) else _verdict(got.measured, got.bound)
        )
        claims.append(
            Claim(name, got.statement, got.instance, float(got.measured), float(got.bound),
                  verdict, seeds[name], time.perf_counter() - t0, got.series, got.children)
        )
    if progress is not None:
        progress(len(chosen), len(chosen), "done")
    return Report(tuple(claims), quick, time.perf_counter() - start, seed)


def claim_seeds(seed: int) -> dict[str, int]:
    """Each claim's own seed: the first 32-bit word of child ``k`` of
    ``SeedSequence(seed).spawn(len(CLAIMS))`` for the ``k``-th claim of :data:`CLAIMS`, so
    the claims draw independent streams and a claim's seed does not depend on which others
    run (``--only``)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ModelError(f"seed = {seed!r}, expected an integer >= 0")
    children = np.random.SeedSequence(seed).spawn(len(CLAIMS))
    return {
        name: int(child.generate_state(1)[0])
        for (name, _), child in zip(CLAIMS, children, strict=True)
    }


def _number(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)


def write_report(report: Report, out: str | os.PathLike[str]) -> list[Path]:
    """Write ``report.md``, ``report.json`` and the plots into directory ``out``; returns the
    files written."""
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    files = [root / "report.json", root / "report.md"]
    data = {
        "passed": report.passed,
        "quick": report.quick,
        "seconds": report.seconds,
        "seed": report.seed,
        "claims": [
            {**asdict(c), "measured": _number(c.measured), "bound": _number(c.bound)}
            for c in report.claims
        ],
    }
    files[0].write_text(json.dumps(data, indent=2, allow_nan=False))
    lines = [
        "# marl-oracle theorem report",
        "",
        f"{'All checked claims pass' if report.passed else 'SOME CLAIMS FAIL'} "
        f"({'quick' if report.quick else 'full'} run, {report.seconds:.1f} s).",
        "",
        "| claim | measured | bound | verdict | seconds |",
        "|---|---|---|---|---|",
    ]
    for c in report.claims:
        lines.append(
            f"| {c.name} | {c.measured:.4g} | {c.bound:.4g} | {c.verdict} | {c.seconds:.1f} |"
        )
    lines.append("")
    for c in report.claims:
        lines += [f"## {c.name}", "", c.statement, ""]
        lines += [f"Instance: {c.instance}. Seed: {c.seed} (root seed {report.seed}).", ""]
    files[1].write_text("\n".join(lines))
    files += _plots(report, root)
    return files


def _plots(report: Report, root: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are optional; the tables are complete without them
        return []
    written = []
    by = {c.name: c for c in report.claims}
    for name in ("kappa-decay-beta0", "kappa-decay-beta1"):
        if name in by and by[name].series:
            s = by[name].series
            fig, ax = plt.subplots(figsize=(5, 3.5))
            ax.semilogy(s["kappa"], np.maximum(s["max_spread"], 1e-18), "o-", label="max_i D_i")
            ax.semilogy(s["kappa"], np.maximum(s["bound"], 1e-18), "s--", label="bound")
            ax.set_xlabel("kappa")
            ax.set_ylabel("spread")
            ax.set_title(name)
            ax.legend()
            path = root / f"{name}.png"
            fig.tight_layout()
            fig.savefig(path, dpi=100)
            plt.close(fig)
            written.append(path)
    if "mappo-gap" in by:
        s = by["mappo-gap"].series
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.loglog(s["K"], s["average_gap"], "o-", label="average gap")
        ax.loglog(s["K"], s["last_gap"], "^-", label="last gap")
        ax.loglog(s["K"], s["bound"], "s--", label="B(K)")
        ax.set_xlabel("K")
        ax.legend()
        path = root / "mappo-gap.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    if "pessimism-scale" in by:
        s = by["pessimism-scale"].series
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.errorbar(s["scale"], s["mean_J"], yerr=s["ci_half_width"], fmt="o-", label="true J")
        ax.axhline(s["J_star"][0], color="k", ls=":", label="J*")
        ax.axhline(s["online_J"][0], color="g", ls="--", label="online MA-PPO")
        ax.set_xlabel("pessimism scale")
        ax.set_ylabel("J of the learned policy")
        ax.legend()
        path = root / "pessimism-scale.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
