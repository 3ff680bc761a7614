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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from reference.cooperative import (
    multi_agent_pdl,
    random_game,
    run_pessimistic_mappo,
    sample_dataset,
    tuned_beta,
)
from reference.cooperative.policy import ConditionalPolicy
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
from verify.experiments import (
    kappa_decay_sweep,
    mappo_gap_sweep,
    pessimism_sweep,
    sample_complexity_sweep,
)
from verify.tolerances import gradient_tolerance, linear_solve_tolerance

__all__ = ["Claim", "Report", "run_report", "write_report"]

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
        seed: the root seed of any randomness (``None`` if deterministic).
        seconds: wall time of the measurement.
        series: named lists behind the plot of this claim, if any.
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


@dataclass(frozen=True)
class Report:
    """All claims of one run, and whether every checked claim passed."""

    claims: tuple[Claim, ...]
    quick: bool
    seconds: float

    @property
    def passed(self) -> bool:
        """No claim failed."""
        return all(c.verdict != "fail" for c in self.claims)


def _verdict(measured: float, bound: float) -> Verdict:
    return "pass" if measured <= bound else "fail"


ClaimFn = Callable[[bool, int], tuple[str, str, float, float, dict[str, list[float]]]]
"""``fn(quick, seed) -> (statement, instance, measured, bound, series)``; a NaN bound marks
a reported value."""


def _gradient_routes(quick: bool, seed: int) -> tuple[str, str, float, float, dict[str, Any]]:
    n = 4 if quick else 6
    inst = line_message(n)
    m = inst.model
    policy = LocalizedSoftmaxPolicy.random(m, 0, np.random.default_rng(seed))
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
    tol = gradient_tolerance(m.states.size, m.gamma, 1.0 / (1 - m.gamma))
    return (
        "grad F by shadow-reward policy gradient, forward chain rule and joint Q agree "
        "(SPEC section 2; proofs_notes/shadow-reward-gradient.md)",
        f"line-message n={n}, entropy utilities, random theta",
        gap,
        tol,
        {},
    )


def _ma_pdl(quick: bool, seed: int) -> tuple[str, str, float, float, dict[str, Any]]:
    rng = np.random.default_rng(seed)
    worst = 0.0
    games = 5 if quick else 25
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
    return (
        "multi-agent performance difference lemma: J(pi') - J(pi) equals the sum of the "
        "agents' terms (SPEC section 5; proofs_notes/ma-pdl.md)",
        f"{games} random games, N = 3, |A^m| = (2, 3, 2), |S| = 3, gamma 0.9",
        worst,
        1e-10,
        {},
    )


def _decay(beta: int) -> ClaimFn:
    def run(quick: bool, seed: int) -> tuple[str, str, float, float, dict[str, Any]]:
        n = 5 if quick else 7
        inst = line_message(n)
        policy = LocalizedSoftmaxPolicy.uniform(inst.model, beta)
        us = inst.utilities()
        sweep = kappa_decay_sweep(inst.model, policy, us)
        tol = spread_tolerance(inst.model, solve(inst.model, policy, us))
        return (
            f"kappa-hop decay: max_i D_i(kappa) <= Delta gamma^t0 / (1 - gamma) for every kappa, "
            f"beta = {beta} (SPEC section 3; proofs_notes/decay.md); measured is the largest "
            "spread - bound, the bound the spreads' rounding allowance",
            f"line-message n={n}, theta = 0, beta = {beta}",
            float(np.max(sweep.max_spread - sweep.bound)),
            tol,
            {
                "kappa": sweep.kappa.astype(float).tolist(),
                "max_spread": sweep.max_spread.tolist(),
                "bound": sweep.bound.tolist(),
            },
        )

    return run


def _truncated_gradient(quick: bool, seed: int) -> tuple[str, str, float, float, dict[str, Any]]:
    n = 5 if quick else 7
    inst = line_message(n)
    m = inst.model
    policy = LocalizedSoftmaxPolicy.uniform(m, 1)
    sweep = kappa_decay_sweep(m, policy, inst.utilities())
    tol = gradient_tolerance(m.states.size, m.gamma, 1.0 / (1 - m.gamma))
    return (
        "truncated gradient: ||ghat - grad F|| <= sqrt(2n) max_j D_j(kappa) / (1 - gamma) "
        "for every kappa (SPEC section 3; proofs_notes/truncated-gradient.md); measured is "
        "the largest error - bound, the bound the gradients' rounding allowance",
        f"line-message n={n}, theta = 0, beta = 1, occupancy weights",
        float(np.max(sweep.truncated_gradient_error - sweep.gradient_error_bound)),
        tol,
        {
            "kappa": sweep.kappa.astype(float).tolist(),
            "error": sweep.truncated_gradient_error.tolist(),
            "bound": sweep.gradient_error_bound.tolist(),
        },
    )


def _occupancy_estimator(quick: bool, seed: int) -> tuple[str, str, float, float, dict[str, Any]]:
    inst = line_message(4)
    m = inst.model
    policy = LocalizedSoftmaxPolicy.uniform(m, 0)
    H = 30
    batches = [1000, 4000] if quick else [1000, 4000, 16000, 64000]
    lam_H, _ = finite_horizon_occupancy(m, policy, H)
    exact = local_occupancies(policy, lam_H)
    children = np.random.SeedSequence(seed).spawn(len(batches))
    L = (1 - m.gamma**H) / (1 - m.gamma)
    delta = split_delta(DELTA, len(batches) * m.n)
    worst, errors, radii = 0.0, [], []
    for B, child in zip(batches, children, strict=True):
        traj = rollout(m, policy, B, H, np.random.default_rng(child))
        est = occupancy_estimate(m, traj)
        for i in range(m.n):
            err = float(np.abs(est[i] - exact[i]).sum())
            rad = l1_radius(B, exact[i].size, L, delta)
            worst = max(worst, err / rad)
        errors.append(max(float(np.abs(e - x).sum()) for e, x in zip(est, exact, strict=True)))
        radii.append(l1_radius(B, exact[0].size, L, delta))
    return (
        "sampled local occupancies converge: ||lamtilde_i - lam^H_i||_1 within the McDiarmid "
        f"radius at delta = {DELTA:g} per check (SPEC section 4; proofs_notes/algorithm1.md); "
        "measured is the largest error / radius",
        f"line-message n=4, theta = 0, H = {H}, B in {batches}",
        worst,
        1.0,
        {"batch": [float(b) for b in batches], "error": errors, "radius": radii},
    )


def _sample_complexity(quick: bool, seed: int) -> tuple[str, str, float, float, dict[str, Any]]:
    inst = line_message(3)
    policy = LocalizedSoftmaxPolicy.uniform(inst.model, 0)
    us = inst.utilities()
    g0 = solve(inst.model, policy, us).gradient_norm ** 2
    fractions = [0.2, 0.1] if quick else [0.4, 0.2, 0.1, 0.05]
    eps = [f * g0 for f in fractions]
    res = sample_complexity_sweep(inst.model, policy, us, eps, seed, max_iterations=40,
                                  batch_per_inverse_epsilon=0.5)
    return (
        "Algorithm 1's samples to reach ||grad F||^2 <= floor + epsilon grow like "
        "epsilon^-2 up to logs (SPEC section 4); reported: the fitted slope of log samples "
        "against log(1/epsilon)",
        f"line-message n=3, kappa = 1, epsilon = {fractions} x ||grad F(theta_0)||^2",
        res.slope,
        math.nan,
        {"epsilon": res.epsilon.tolist(), "samples": res.samples.tolist()},
    )


def _mappo_gap(quick: bool, seed: int) -> tuple[str, str, float, float, dict[str, Any]]:
    Ks = [4, 16, 64] if quick else [4, 16, 64, 256]
    sweep = mappo_gap_sweep(climbing(), Ks)
    ratio = float(np.max(sweep.average_gap / sweep.bound))
    return (
        "MA-PPO with exact Q: average gap <= B(K) for every K (SPEC section 5; "
        "proofs_notes/mappo-bound.md#bound); measured is the largest gap / B(K)",
        f"climbing, tuned beta, K in {Ks}",
        ratio,
        1.0,
        {
            "K": [float(k) for k in Ks],
            "average_gap": sweep.average_gap.tolist(),
            "last_gap": sweep.last_gap.tolist(),
            "bound": sweep.bound.tolist(),
        },
    )


def _pessimism(quick: bool, seed: int) -> tuple[str, str, float, float, dict[str, Any]]:
    seeds = 32 if quick else 40
    scales = [0.0, 0.5] if quick else [0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
    sweep = pessimism_sweep(
        rare_stall(), coverage=0.15, n_samples=10_000, scales=scales, seeds=seeds, K=32,
        beta=0.1, seed=seed,
    )
    i = scales.index(0.5)
    wins = int(np.sum(sweep.J[i] > sweep.J[0]))
    need = sign_test_wins(seeds, DELTA)
    return (
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
    )


def _pessimism_runs(seed: int, runs: int) -> list[Any]:
    game = rare_stall()
    beta = tuned_beta(game.n_agents, game.log_action_count, game.gamma)
    out = []
    for child in np.random.SeedSequence(seed).spawn(runs):
        ds = sample_dataset(game, 10_000, np.random.default_rng(child), coverage=0.15,
                            safe_actions=np.array([0, 0]))
        out.append(run_pessimistic_mappo(game, ds, 16, beta, 1.0 / (1 - game.gamma)))
    return out


def _pessimism_bound(quick: bool, seed: int) -> tuple[str, str, float, float, dict[str, Any]]:
    runs = 5 if quick else 20
    hists = [h for h in _pessimism_runs(seed, runs) if h.event_all]
    worst = max((h.average_gap / h.bound.total for h in hists), default=math.inf)
    return (
        "on the validity event the average gap is under B(K) + (2/(1-gamma)) E_{d*}[Gamma] "
        f"(SPEC section 6; proofs_notes/pessimism.md#bound); the event held on {len(hists)} "
        f"of {runs} datasets; measured is the largest gap / bound over them (inf if none)",
        "rare-stall, coverage 0.15, 10000 samples, K = 16, tuned beta, scale 1",
        worst,
        1.0,
        {},
    )


def _pessimism_event(quick: bool, seed: int) -> tuple[str, str, float, float, dict[str, Any]]:
    runs = 5 if quick else 20
    hists = _pessimism_runs(seed, runs)
    worst = max(
        (float(np.max(h.J_hat[h.event] - h.J[h.event])) for h in hists if h.event.any()),
        default=math.inf,
    )
    errors = max(float(np.max(h.critic_error)) for h in hists)
    game = rare_stall()
    return (
        "on the validity event the critic is pessimistic: J_hat(pi_k) <= J(pi_k) (SPEC "
        "section 6; proofs_notes/pessimism.md#event); measured is the largest J_hat - J over "
        "iterates on the event, the bound the critic's certified error / (1 - gamma) plus the "
        "LU rounding of J",
        "rare-stall, coverage 0.15, 10000 samples, K = 16, tuned beta, scale 1",
        worst,
        errors / (1 - game.gamma)
        + linear_solve_tolerance(game.n_states, game.gamma, 1 / (1 - game.gamma)),
        {},
    )


def _checks(quick: bool, seed: int) -> tuple[str, str, float, float, dict[str, Any]]:
    from verify.checks.planted import AREAS

    areas = ("tabular", "gae") if quick else tuple(AREAS)
    wrong = 0
    total = 0
    for area in areas:
        mod = AREAS[area]
        for entry in mod.MUTANTS:
            total += 1
            wrong += entry.run().passed
        for entry in mod.CORRECT:
            total += 1
            wrong += not entry.run().passed
    return (
        "every planted bug is caught by the check meant for it and every correct "
        "implementation passes (verify.checks.planted); measured is the number of wrong "
        "verdicts",
        f"areas {list(areas)}, {total} implementations",
        float(wrong),
        0.0,
        {},
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
) -> Report:
    """Measure every claim (or those named in ``only``); ``progress(done, total, name)`` is
    called before each claim and once at the end."""
    chosen = [(n, f) for n, f in CLAIMS if not only or n in only]
    start = time.perf_counter()
    claims = []
    for k, (name, fn) in enumerate(chosen):
        if progress is not None:
            progress(k, len(chosen), name)
        t0 = time.perf_counter()
        statement, instance, measured, bound, series = fn(quick, seed)
        verdict: Verdict = "reported" if math.isnan(bound) else _verdict(measured, bound)
        claims.append(
            Claim(name, statement, instance, float(measured), float(bound), verdict, seed,
                  time.perf_counter() - t0, series)
        )
    if progress is not None:
        progress(len(chosen), len(chosen), "done")
    return Report(tuple(claims), quick, time.perf_counter() - start)


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
        lines += [f"Instance: {c.instance}. Seed: {c.seed}.", ""]
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
