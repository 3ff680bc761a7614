"""The ``optimum`` and ``kappa-tradeoff`` subcommands of ``marl-oracle`` (SPEC section 8).

``optimum``
    The certified global optimum ``F*`` over centralized policies of a named networked
    instance (Frank--Wolfe with a certified duality gap), ``F`` at ``theta = 0`` and, for each
    observation radius, the best localized ``F`` found by exact gradient ascent from
    ``--starts`` seeded starts (a lower bound on ``F_loc(beta)``) with its stationarity::

        marl-oracle optimum --instance line-message --agents N [--gamma 0.9]
                            [--utility linear|entropy|mixed] [--obs-radius 0,1,2]
                            [--gap 1e-6] [--starts 3] [--iterations 100] [--seed 0]
                            [--json] [--executor URL]

``kappa-tradeoff``
    Algorithm 1 (sampled, and with exact components) for ``kappa = 0..diameter`` after a
    fixed sample budget: ``F``, the gap to ``F*``, ``||grad F||^2``, the truncation error and
    the communication cost per step and per iteration::

        marl-oracle kappa-tradeoff --instance line-message --agents N [--gamma 0.9]
                                   [--utility ...] [--obs-radius 0] [--iterations 20]
                                   [--step-size 1] [--batch 128] [--horizon 40]
                                   [--repeats 2] [--seed 0] [--json] [--plot FILE.png]
                                   [--executor URL]

``mixed`` utilities need a heterogeneous instance (``line-message-mixed``,
``wireless-mixed``).  Plots are drawn by :func:`plot_tradeoff`, shared with the report.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from reference.errors import ModelError
from reference.instances import INSTANCES

__all__ = ["COMMANDS", "add_parsers", "plot_tradeoff"]


def _radii(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected non-negative integers")
    return values


def _instance_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--instance", choices=sorted(INSTANCES), default="line-message")
    parser.add_argument("--agents", type=int, required=True, help="number of agents n")
    parser.add_argument("--gamma", type=float, default=0.9, help="discount (default 0.9)")
    parser.add_argument(
        "--utility",
        choices=("linear", "entropy", "mixed"),
        default="linear",
        help="linear (the rewards), entropy, or mixed (heterogeneous instances' roles)",
    )
    parser.add_argument("--seed", type=int, default=0, help="root seed (default 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--executor",
        default="local",
        metavar="URL",
        help="where independent pieces run: local, threads, serial or dask://HOST:PORT",
    )


def add_parsers(sub: Any) -> None:
    """Register ``optimum`` and ``kappa-tradeoff`` on the ``marl-oracle`` subparsers."""
    opt = sub.add_parser(
        "optimum",
        help="certified F* over centralized policies and the best localized F per beta",
        description=(
            "F* by Frank-Wolfe with a certified duality gap, F at theta = 0, and the best "
            "localized F found by exact gradient ascent for each observation radius (a lower "
            "bound on F_loc(beta))."
        ),
    )
    _instance_arguments(opt)
    opt.add_argument(
        "--obs-radius", type=_radii, default=[0, 1, 2], help="comma-separated radii beta"
    )
    opt.add_argument("--gap", type=float, default=1e-6, help="duality gap (default 1e-6)")
    opt.add_argument("--starts", type=int, default=3, help="ascent starts per radius")
    opt.add_argument("--iterations", type=int, default=100, help="ascent steps per start")
    trade = sub.add_parser(
        "kappa-tradeoff",
        help="Algorithm 1's gap to F* and communication cost for every kappa",
        description=(
            "Algorithm 1, sampled and with exact components, for kappa = 0..diameter after a "
            "fixed sample budget: F, F* - F, ||grad F||^2, truncation error, communication."
        ),
    )
    _instance_arguments(trade)
    trade.add_argument("--obs-radius", type=int, default=0, help="observation radius beta")
    trade.add_argument("--iterations", type=int, default=20, help="policy updates")
    trade.add_argument("--step-size", type=float, default=1.0, help="eta (default 1)")
    trade.add_argument("--batch", type=int, default=128, help="trajectories per estimate")
    trade.add_argument("--horizon", type=int, default=40, help="trajectory horizon")
    trade.add_argument("--repeats", type=int, default=2, help="seeded sampled runs per kappa")
    trade.add_argument("--plot", metavar="FILE.png", help="write the trade-off curves")


def _instance(args: argparse.Namespace) -> Any:
    instance = INSTANCES[args.instance](args.agents, args.gamma)
    return instance, instance.utilities(args.utility)


def _executor(url: str) -> Any:
    from verify.executors import executor_from_url

    try:
        return executor_from_url(url)
    except ImportError as exc:
        raise ModelError(str(exc)) from None


def run_optimum(args: argparse.Namespace) -> dict[str, Any]:
    """The ``optimum`` record (JSON-ready)."""
    from verify.experiments import price_of_localization

    instance, utilities = _instance(args)
    start = time.perf_counter()
    executor = _executor(args.executor)
    try:
        out = price_of_localization(
            instance.model,
            utilities,
            args.obs_radius,
            args.seed,
            starts=args.starts,
            iterations=args.iterations,
            gap=args.gap,
            executor=executor,
        )
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return {
        "instance": instance.name,
        "agents": instance.model.n,
        "gamma": instance.model.gamma,
        "utility": args.utility,
        "utilities": [type(u).__name__ for u in utilities],
        "F_star": out.F_star,
        "duality_gap": out.duality_gap,
        "F_star_upper_bound": out.F_star + out.duality_gap,
        "F_initial": out.F_initial,
        "F_localized": [
            {
                "beta": int(b),
                "F_localized": float(v),
                "price_upper_bound": float(p),
                "gradient_norm": float(g),
                "equals_F_star_proved": bool(e),
            }
            for b, v, p, g, e in zip(
                out.beta,
                out.F_localized,
                out.price,
                out.gradient_norm,
                out.equals_optimum,
                strict=True,
            )
        ],
        "F_localized_is": "a lower bound on F_loc(beta) (best of the ascent starts)",
        "starts": out.starts,
        "iterations": out.iterations,
        "seed": args.seed,
        "seconds": time.perf_counter() - start,
    }


def print_optimum(result: dict[str, Any]) -> None:
    print(
        f"{result['instance']}: n = {result['agents']}, gamma = {result['gamma']}, "
        f"utility = {result['utility']}"
    )
    print(
        f"  F_star       {result['F_star']:.12g}  (certified F* <= "
        f"{result['F_star_upper_bound']:.12g})"
    )
    print(f"  duality_gap  {result['duality_gap']:.3e}")
    print(f"  F_initial    {result['F_initial']:.12g}  (theta = 0)")
    print(f"  F_localized  best of {result['starts']} ascent starts: a lower bound on F_loc")
    print(f"  {'beta':>6}  {'F_localized':>16}  {'F* - F_loc <=':>14}  {'||grad F||':>11}")
    for row in result["F_localized"]:
        proved = "  (F_loc = F* proved)" if row["equals_F_star_proved"] else ""
        print(
            f"  {row['beta']:>6}  {row['F_localized']:>16.12g}  "
            f"{row['price_upper_bound']:>14.4e}  {row['gradient_norm']:>11.3e}{proved}"
        )


def run_tradeoff(args: argparse.Namespace) -> dict[str, Any]:
    """The ``kappa-tradeoff`` record (JSON-ready)."""
    from verify.experiments import kappa_tradeoff_sweep

    instance, utilities = _instance(args)
    start = time.perf_counter()
    executor = _executor(args.executor)
    try:
        out = kappa_tradeoff_sweep(
            instance.model,
            utilities,
            args.seed,
            beta=args.obs_radius,
            iterations=args.iterations,
            step_size=args.step_size,
            batch=args.batch,
            horizon=args.horizon,
            repeats=args.repeats,
            executor=executor,
        )
    finally:
        executor.shutdown(wait=True, cancel_futures=True)

    def floats(x: Any) -> list[float]:
        return [float(v) for v in x]

    return {
        "instance": instance.name,
        "agents": instance.model.n,
        "gamma": instance.model.gamma,
        "utility": args.utility,
        "obs_radius": out.beta,
        "F_star": out.F_star,
        "duality_gap": out.duality_gap,
        "F_initial": out.F_initial,
        "kappa": [int(k) for k in out.kappa],
        "exact_objective": floats(out.exact_objective),
        "exact_gap": floats(out.exact_gap),
        "exact_gradient_norm_sq": floats(out.exact_gradient_norm_sq),
        "exact_truncation_error": floats(out.exact_truncation_error),
        "sampled_objective": floats(out.sampled_objective),
        "sampled_gap": floats(out.sampled_gap),
        "sampled_gap_se": floats(out.sampled_gap_se),
        "sampled_gradient_norm_sq": floats(out.sampled_gradient_norm_sq),
        "sampled_truncation_error": floats(out.sampled_truncation_error),
        "messages_per_step": [int(m) for m in out.messages_per_step],
        "floats_per_step": [int(f) for f in out.floats_per_step],
        "messages_per_iteration": floats(out.messages_per_iteration),
        "floats_per_iteration": floats(out.floats_per_iteration),
        "samples": out.samples,
        "iterations": out.iterations,
        "step_size": out.step_size,
        "repeats": args.repeats,
        "seed": args.seed,
        "seconds": time.perf_counter() - start,
    }


def print_tradeoff(result: dict[str, Any]) -> None:
    print(
        f"{result['instance']}: n = {result['agents']}, gamma = {result['gamma']}, "
        f"utility = {result['utility']}, beta = {result['obs_radius']}, "
        f"{result['iterations']} iterations, {result['samples']} agent-steps per run"
    )
    print(
        f"  F* = {result['F_star']:.10g} (gap {result['duality_gap']:.1e}), "
        f"F(theta=0) = {result['F_initial']:.10g}"
    )
    head = (
        f"  {'kappa':>5}  {'F*-F exact':>11}  {'F*-F sampled':>13}  {'+-se':>9}  "
        f"{'|grad|^2':>10}  {'trunc err':>10}  {'msgs/step':>9}  {'floats/iter':>11}"
    )
    print(head)
    for k in range(len(result["kappa"])):
        print(
            f"  {result['kappa'][k]:>5}  {result['exact_gap'][k]:>11.4e}  "
            f"{result['sampled_gap'][k]:>13.4e}  {result['sampled_gap_se'][k]:>9.2e}  "
            f"{result['sampled_gradient_norm_sq'][k]:>10.3e}  "
            f"{result['sampled_truncation_error'][k]:>10.3e}  "
            f"{result['messages_per_step'][k]:>9}  {result['floats_per_iteration'][k]:>11.4g}"
        )


def plot_tradeoff(result: dict[str, Any], path: str) -> None:
    """Gap to ``F*`` (exact components and sampled, with standard errors) and truncation
    error against ``kappa`` on a log scale, with the floats per iteration on a second axis."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ModelError("--plot needs matplotlib: pip install 'marl-oracle[plot]'") from None
    floor = np.finfo(np.float64).tiny
    k = np.array(result["kappa"])
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.semilogy(k, np.maximum(result["exact_gap"], floor), "o-", label="F* - F (exact comps.)")
    ax.errorbar(
        k,
        np.maximum(result["sampled_gap"], floor),
        yerr=result["sampled_gap_se"],
        fmt="s--",
        label="F* - F (sampled)",
    )
    ax.semilogy(
        k,
        np.maximum(result["exact_truncation_error"], floor),
        "^:",
        label="||ghat - grad F|| (exact comps.)",
    )
    ax.set_yscale("log")
    ax.set_xlabel("kappa (hops)")
    ax.set_ylabel("value (log scale)")
    twin = ax.twinx()
    twin.plot(k, result["floats_per_iteration"], "k.-", alpha=0.5, label="floats / iteration")
    twin.set_ylabel("floats communicated per iteration")
    lines = ax.get_legend_handles_labels()
    extra = twin.get_legend_handles_labels()
    ax.legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=8)
    ax.set_title(
        f"{result['instance']}, n = {result['agents']}, {result['utility']}, "
        f"{result['samples']} agent-steps"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


COMMANDS: dict[
    str,
    tuple[
        Callable[[argparse.Namespace], dict[str, Any]],
        Callable[[dict[str, Any], str], None] | None,
        Callable[[dict[str, Any]], None],
    ],
] = {
    "optimum": (run_optimum, None, print_optimum),
    "kappa-tradeoff": (run_tradeoff, plot_tradeoff, print_tradeoff),
}
"""Each subcommand: compute, plot (``None``: no ``--plot``), print."""
