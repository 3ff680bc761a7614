"""The ``marl-oracle`` command line (also ``python -m verify``).

Subcommands (``--json`` prints one JSON object):

``exact``
    Exact objective, gradient norm and local occupancies of a named networked
    instance at ``theta = 0`` (SPEC sections 2 and 7)::

        marl-oracle exact --instance line-message --agents 6 [--gamma 0.9]
                          [--obs-radius 0] [--utility linear|entropy] [--json]

``decay``
    kappa-hop decay at ``theta = 0`` (SPEC section 3): ``max_i D_i(kappa)``, the derived
    bound and ``||ghat - grad F||`` with occupancy-conditional weights, per ``kappa``::

        marl-oracle decay --instance line-message --agents 6 [--obs-radius 0] [--json]
                          [--plot FILE.png]

``mappo-gap``
    Exact-Q MA-PPO from the uniform policy on a cooperative game (SPEC section 5): the
    average gap ``(1/K) sum_{k<K} (J* - J(pi_k))``, the last gap ``J* - J(pi_K)`` and the bound
    ``B(K)`` per ``K`` (with ``--features product``, ``B(K)`` plus the measured error terms of
    the inexact steps); default ``beta`` the tuned ``sqrt(N / (8 log|A|)) / (1 - gamma)``::

        marl-oracle mappo-gap --game climbing|ratio|random --K 4,16,64,256 [--beta B]
                              [--features one-hot|product] [--seed 0] [--json]
                              [--plot FILE.png] [--executor URL]

``pessimism``
    Pessimistic offline MA-PPO against the size of its bonus (SPEC section 6).  Each of
    ``--seeds`` datasets of ``--samples`` transitions is drawn under the behaviour
    ``b(a|s) = C/|A| + (1 - C) 1[a = a*(s)]``: ``--coverage C`` is the mass spread uniformly
    over all joint actions, the rest sits on the optimal (safe) joint action ``a*(s)``, so a
    small ``C`` is poor coverage.  Every dataset is reused for every scale of ``--scales``;
    a scale sets the bonus coefficient ``beta_G = scale / (1 - gamma)``, i.e. in the tabular
    case ``Gamma(s,a) = scale H / sqrt(n(s,a) + lambda)`` with ``H = 1/(1 - gamma)``.  Per
    scale: the mean true ``J`` of the learned ``pi_K`` with a 95% Student-t half-width over
    the datasets, and the fraction of datasets on which the validity event held at every
    iterate; next to ``J*``, the behaviour policy's ``J``, online exact-Q MA-PPO's
    ``J(pi_K)`` (same ``K``, ``beta``) and the scale that suffices for the validity event
    with probability ``1 - 1e-9`` (mean over the datasets)::

        marl-oracle pessimism [--game rare-stall] [--gamma 0.9] [--coverage 0.15]
                              [--samples 10000] [--scales 0,0.5,1,2] [--seeds 20] [--K 32]
                              [--beta 0.1] [--lambda 1.0] [--seed 0] [--json]
                              [--plot FILE.png] [--executor URL]

``assumptions``
    The assumptions behind the theory, measured on a named model (``verify/assumptions.py``).
    For a networked instance at ``theta = 0``: the decay spreads ``D_i(kappa)`` against the
    derived bound ``Delta_i gamma^t0 / (1 - gamma)`` for every agent and ``kappa``, with the
    fitted per-hop rate next to ``gamma`` (SPEC section 3), and each utility's declared
    gradient bound and smoothness against estimates on ``--directions`` random segments of
    reachable occupancies drawn from ``--seed`` (SPEC section 2).  For a game: the
    concentrability coefficients ``max_c w*^m(c) / w_k^m(c)`` of the uniform policy against
    an optimal comparator, finite or not and against ``--cap`` (SPEC section 5), and with
    ``--coverage C`` also ``max_{s,a} d*(s,a) / mu(s,a)`` for the pessimism subcommand's
    behaviour law (SPEC section 6).  One line per verdict (assumed, measured, holds), then
    the details; infinite values print, and are written to JSON, as ``"inf"``::

        marl-oracle assumptions --instance line-message|wireless --agents N [--gamma 0.9]
                                [--obs-radius 0] [--utility linear|entropy] [--seed 0]
                                [--directions 32] [--json]
        marl-oracle assumptions --game climbing|ratio|rare-stall [--gamma 0.9] [--cap C]
                                [--coverage C] [--json]

``report``
    The main job: every checked claim (identities, kappa decay, truncated gradient,
    estimator convergence, MA-PPO gap, pessimism, the planted-bug catalogue) measured per
    agent and per kappa/K on instances where its bound is nearly attained, each with its
    ratio ``max(measured / bound)``, margin, verdict and the planted defect that must make it
    fail (``verify/report.py``), with a progress bar; writes ``report.md``, ``report.json``
    and one plot per claim to ``--out`` and exits 1 if a claim fails or a planted defect
    passes; ``--only`` (repeatable) makes a partial report::

        marl-oracle report [--quick] [--out report] [--seed 0] [--only CLAIM] [--json]
                           [--executor local|threads|serial|dask://HOST:PORT]

``--executor``
    ``report``, ``mutants``, ``mappo-gap`` and ``pessimism`` split their independent pieces
    over ``--executor``: ``local`` (a process pool, the default), ``threads``, ``serial`` or
    ``dask://HOST:PORT`` (a running Dask scheduler; ``pip install 'marl-oracle[dask]'``).
    Every piece is seeded by ``SeedSequence.spawn`` (:mod:`verify.executors`), so the output
    does not depend on the executor.

``mutants``
    Every planted bug of :mod:`verify.checks.planted` through the check meant to catch it,
    and every correct implementation through its check; exit status 1 unless every bug is
    caught and every correct implementation passes::

        marl-oracle mutants [--area tabular] [--json] [--executor URL]

``instance``
    Write a named instance to an exchange file (``verify/files.py``), so that an
    implementation elsewhere can load exactly the model the oracle uses; with
    ``--theta-out`` also its parameters: for a networked instance ``theta = 0`` (or
    ``Normal(0, 1)`` entries from ``--theta-seed S``) at radius ``--obs-radius``, for a game
    the uniform policy (or a random joint policy from ``--theta-seed S``, Dirichlet(1) rows)
    as conditionals ``pi_m``::

        marl-oracle instance save --instance line-message|wireless --agents N [--gamma 0.9]
                                  [--obs-radius 0] --out F.npz [--theta-out T.npz]
                                  [--theta-seed S] [--json]
        marl-oracle instance save --game climbing|ratio|rare-stall [--gamma 0.9] --out F.npz
                                  [--theta-out T.npz] [--theta-seed S] [--json]

``check``
    Compare an estimate file with the exact quantity at the policy of the ``--theta`` file:
    ``gradient`` (``grad_{theta_i} F``), ``occupancy`` (``lam_i``) and ``shadow-reward``
    (``r_i``) on a networked instance (``--theta`` required, ``--utility`` of the instance's
    rewards, default linear), ``localized-q`` (``Q^{0:m}``) on a game (``--theta`` a
    ``game-policy`` file of conditionals, uniform policy if omitted).  Prints the verdict, the
    worst entry (agent, index, estimate, exact) and the tolerance (derived, see
    ``verify.files.estimate_tolerance``, plus ``--atol``); exit status 0 on pass, 1 on
    fail, 2 on bad input::

        marl-oracle check gradient|occupancy|shadow-reward|localized-q --instance F.npz
                          [--theta T.npz] --estimate E.npz [--utility linear|entropy]
                          [--atol 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from typing import Any

import numpy as np

from reference.errors import ModelError
from reference.instances import GAMES, INSTANCES
from reference.networked.exact import solve
from reference.networked.policy import LocalizedSoftmaxPolicy
from verify.files import QUANTITIES

__all__ = ["build_parser", "main"]


def _add_instance_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by subcommands that evaluate a named instance at theta = 0."""
    parser.add_argument("--instance", choices=sorted(INSTANCES), default="line-message")
    parser.add_argument("--agents", type=int, required=True, help="number of agents n")
    parser.add_argument("--gamma", type=float, default=0.9, help="discount (default 0.9)")
    parser.add_argument(
        "--obs-radius", type=int, default=0, help="observation radius beta (default 0)"
    )
    parser.add_argument("--utility", choices=("linear", "entropy"), default="linear")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _add_executor_argument(parser: argparse.ArgumentParser) -> None:
    """``--executor URL``: where the command's independent pieces run."""
    parser.add_argument(
        "--executor",
        default="local",
        metavar="URL",
        help=(
            "where independent pieces run: local (a process pool, the default), threads, "
            "serial, or dask://HOST:PORT (a running Dask scheduler; extra 'dask'); the "
            "numbers do not depend on it"
        ),
    )


@contextmanager
def _executor(args: argparse.Namespace) -> Iterator[Executor]:
    """The executor of ``--executor``, shut down when the command is done."""
    from verify.executors import executor_from_url

    try:
        executor = executor_from_url(args.executor)
    except ImportError as exc:  # dask:// without the extra: a usage error, not a crash
        raise ModelError(str(exc)) from None
    try:
        yield executor
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``marl-oracle``."""
    parser = argparse.ArgumentParser(
        prog="marl-oracle",
        description=(
            "Exact oracles for networked MARL with general utilities and for cooperative "
            "Markov games with multi-agent PPO."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    exact = sub.add_parser(
        "exact",
        help="exact objective, gradient norm and local occupancies at theta = 0",
        description="Exact F, ||grad F|| and local occupancies of a named instance at theta = 0.",
    )
    _add_instance_arguments(exact)
    decay = sub.add_parser(
        "decay",
        help="decay spreads, their bound and the truncated-gradient error per kappa",
        description="max_i D_i(kappa), its derived bound and ||ghat - grad F|| at theta = 0.",
    )
    _add_instance_arguments(decay)
    decay.add_argument("--plot", metavar="FILE.png", help="write a log-scale plot (matplotlib)")
    gap = sub.add_parser(
        "mappo-gap",
        help="MA-PPO's average and last-iterate gaps against the bound B(K)",
        description="Exact-Q MA-PPO from uniform pi_0: gaps and B(K) for each K.",
    )
    gap.add_argument("--game", choices=(*sorted(GAMES), "random"), required=True)
    gap.add_argument(
        "--K", type=_positive_ints, default=[4, 16, 64, 256], help="comma-separated K grid"
    )
    gap.add_argument("--beta", type=float, default=None, help="beta (default: tuned)")
    gap.add_argument("--features", choices=("one-hot", "product"), default="one-hot")
    gap.add_argument("--gamma", type=float, default=0.9, help="discount (default 0.9)")
    gap.add_argument("--seed", type=int, default=0, help="seed of the random game")
    gap.add_argument("--states", type=int, default=4, help="states of the random game")
    gap.add_argument(
        "--actions", type=_positive_ints, default=[2, 3, 2],
        help="comma-separated action counts of the random game (one per agent)",
    )
    gap.add_argument("--json", action="store_true", help="print one JSON object")
    _add_executor_argument(gap)
    gap.add_argument("--plot", metavar="FILE.png", help="write a log-log plot (matplotlib)")
    pess = sub.add_parser(
        "pessimism",
        help="pessimistic offline MA-PPO's true J against the bonus scale",
        description=(
            "Pessimistic offline MA-PPO on seeded datasets (each reused for every scale): "
            "mean true J of pi_K with a 95% t-interval and the validity-event frequency per "
            "bonus scale, next to J*, the behaviour policy and online exact-Q MA-PPO."
        ),
    )
    pess.add_argument(
        "--game", choices=sorted(GAMES), default="rare-stall",
        help="cooperative game (default rare-stall)",
    )
    pess.add_argument("--gamma", type=float, default=0.9, help="discount (default 0.9)")
    pess.add_argument(
        "--coverage", type=float, default=0.15,
        help="behaviour mass C spread uniformly over all joint actions, the rest on the "
        "optimal (safe) joint action; small C = poor coverage (default 0.15)",
    )
    pess.add_argument(
        "--samples", type=int, default=10000, help="transitions per dataset (default 10000)"
    )
    pess.add_argument(
        "--scales", type=_nonnegative_floats, default=[0.0, 0.5, 1.0, 2.0],
        help="comma-separated bonus scales: beta_G = scale / (1 - gamma), i.e. "
        "Gamma(s,a) = scale H / sqrt(n(s,a) + lambda) with H = 1/(1 - gamma) "
        "(default 0,0.5,1,2)",
    )
    pess.add_argument(
        "--seeds", type=int, default=20, help="datasets, at least 2 (default 20)"
    )
    pess.add_argument("--K", type=int, default=32, help="MA-PPO iterations (default 32)")
    pess.add_argument(
        "--beta", type=float, default=0.1, help="beta of beta_k = beta sqrt(K) (default 0.1)"
    )
    pess.add_argument(
        "--lambda", dest="lambda_reg", metavar="LAMBDA", type=float, default=1.0,
        help="ridge lambda of the critic (default 1.0)",
    )
    pess.add_argument("--seed", type=int, default=0, help="root of the dataset seeds")
    pess.add_argument("--json", action="store_true", help="print one JSON object")
    _add_executor_argument(pess)
    pess.add_argument("--plot", metavar="FILE.png", help="write a plot of J against the scale")
    # assumptions: the shared instance options, with --instance re-declared (conflict
    # handler "resolve") so that it and --game form one required, mutually exclusive choice
    asm = sub.add_parser(
        "assumptions",
        help="measure a model's assumptions: decay, utility constants, concentrability",
        description=(
            "Measured decay spreads against the derived bound and estimated utility constants "
            "against their declarations (--instance), or concentrability coefficients "
            "(--game); one verdict per assumption."
        ),
        conflict_handler="resolve",
    )
    _add_instance_arguments(asm)
    which = asm.add_mutually_exclusive_group(required=True)
    which.add_argument("--instance", choices=sorted(INSTANCES), help="networked instance")
    which.add_argument("--game", choices=sorted(GAMES), help="cooperative game")
    asm.add_argument("--agents", type=int, default=None, help="number of agents n (--instance)")
    # None marks "not given", so that instance-only options are refused with --game
    asm.set_defaults(obs_radius=None, utility=None)
    asm.add_argument(
        "--seed", type=int, default=0, help="seed of the random directions (default 0)"
    )
    asm.add_argument(
        "--directions", type=int, default=None,
        help="random segments per utility (--instance, default 32)",
    )
    asm.add_argument(
        "--cap", type=float, default=None,
        help="largest acceptable concentrability coefficient (--game, default inf)",
    )
    asm.add_argument(
        "--coverage", type=float, default=None,
        help="also check offline data drawn with behaviour coverage C (--game)",
    )
    mutants = sub.add_parser(
        "mutants",
        help="run every planted bug through the check meant to catch it",
        description=(
            "Run every deliberately wrong implementation in verify.checks.planted through its "
            "check (each must be caught) and every correct one (each must pass)."
        ),
    )
    mutants.add_argument(
        "--area", action="append", metavar="AREA",
        help="only this area (repeatable), e.g. tabular, gae",
    )
    mutants.add_argument("--json", action="store_true", help="print one JSON object")
    _add_executor_argument(mutants)
    inst = sub.add_parser(
        "instance",
        help="write a named instance (and its parameters) to an exchange file",
        description=(
            "Write a named networked instance or cooperative game to a .npz exchange file "
            "(verify/files.py), optionally with theta = 0, random theta or a game policy."
        ),
    )
    inst.add_argument("action", choices=("save",), help="what to do (save)")
    inst_which = inst.add_mutually_exclusive_group(required=True)
    inst_which.add_argument("--instance", choices=sorted(INSTANCES), help="networked instance")
    inst_which.add_argument("--game", choices=sorted(GAMES), help="cooperative game")
    inst.add_argument("--agents", type=int, default=None, help="number of agents n (--instance)")
    inst.add_argument("--gamma", type=float, default=0.9, help="discount (default 0.9)")
    inst.add_argument(
        "--obs-radius", type=int, default=None,
        help="observation radius beta of the theta file (--instance, default 0)",
    )
    inst.add_argument("--out", required=True, metavar="F.npz", help="instance file to write")
    inst.add_argument("--theta-out", metavar="T.npz", help="also write the parameters here")
    inst.add_argument(
        "--theta-seed", type=int, default=None,
        help="random parameters from this seed instead of theta = 0 / the uniform policy",
    )
    inst.add_argument("--json", action="store_true", help="print one JSON object")
    chk = sub.add_parser(
        "check",
        help="compare an estimate file with the exact quantity",
        description=(
            "Load an instance, a parameter and an estimate file, compute the exact quantity "
            "and compare entrywise under the derived tolerance plus --atol."
        ),
    )
    chk.add_argument("quantity", choices=QUANTITIES, help="the estimated quantity")
    chk.add_argument("--instance", required=True, metavar="F.npz", help="instance file")
    chk.add_argument(
        "--theta", metavar="T.npz", default=None,
        help="parameter file (localized-theta; for a game a game-policy, default uniform)",
    )
    chk.add_argument("--estimate", required=True, metavar="E.npz", help="estimate file")
    chk.add_argument(
        "--utility", choices=("linear", "entropy"), default="linear",
        help="utility of a networked instance (default linear: its rewards)",
    )
    chk.add_argument(
        "--atol", type=float, default=0.0, help="extra absolute tolerance (default 0)"
    )
    chk.add_argument("--json", action="store_true", help="print one JSON object")
    from verify.report import claim_names

    names = claim_names()
    report = sub.add_parser(
        "report",
        help="the theorem report: every claim on built-in instances (the main job)",
        description=(
            "Measure every checked claim of the two papers where its bound is nearly "
            "attained, per agent and per kappa/K, and run each claim's planted defect; write "
            "report.md, report.json and one plot per claim; exit status 1 if a claim fails "
            "or a planted defect passes."
        ),
    )
    report.add_argument("--quick", action="store_true", help="smaller instances (< 30 s)")
    report.add_argument("--out", default="report", help="output directory (default report/)")
    report.add_argument("--seed", type=int, default=0, help="root seed (default 0)")
    report.add_argument(
        "--only", action="append", metavar="CLAIM",
        help="only this claim (repeatable; the report says it is partial and removes the "
        "plots of the claims it did not run); one of: " + ", ".join(names),
    )
    report.add_argument("--no-progress", action="store_true", help="no progress bar")
    report.add_argument("--json", action="store_true", help="print one JSON object")
    _add_executor_argument(report)
    return parser


def _positive_ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers")
    return values


def _nonnegative_floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list") from None
    if not values or not all(np.isfinite(v) and v >= 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected finite numbers >= 0")
    return values


def _run_gap(args: argparse.Namespace) -> dict[str, Any]:
    from reference.cooperative.game import random_game
    from verify.experiments import mappo_gap_sweep

    if args.game == "random":
        rng = np.random.default_rng(args.seed)
        game = random_game(rng, args.states, tuple(args.actions), args.gamma)
    else:
        game = GAMES[args.game](args.gamma)
    with _executor(args) as executor:
        sweep = mappo_gap_sweep(game, args.K, args.beta, args.features, executor=executor)
    return {
        "game": game.name,
        "agents": game.n_agents,
        "action_counts": list(game.action_counts),
        "states": game.n_states,
        "gamma": game.gamma,
        "seed": args.seed if args.game == "random" else None,
        "beta": sweep.beta,
        "features": sweep.features,
        "J_star": sweep.J_star,
        "K": [int(k) for k in sweep.K],
        "average_gap": [float(x) for x in sweep.average_gap],
        "last_gap": [float(x) for x in sweep.last_gap],
        "bound": [float(x) for x in sweep.bound],
    }


def _plot_gap(result: dict[str, Any], path: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    floor = np.finfo(np.float64).tiny
    K = np.array(result["K"])
    ax.loglog(K, np.maximum(result["average_gap"], floor), "o-", label="average gap")
    ax.loglog(K, np.maximum(result["last_gap"], floor), "^:", label="last-iterate gap")
    ax.loglog(K, result["bound"], "s--", label="B(K)")
    ax.set_xlabel("K (iterations)")
    ax.set_ylabel("J* - J (log scale)")
    ax.set_title(f"{result['game']}, {result['features']}, beta = {result['beta']:.3g}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _print_gap(result: dict[str, Any]) -> None:
    print(
        f"{result['game']}: N = {result['agents']}, |A^m| = {result['action_counts']}, "
        f"|S| = {result['states']}, gamma = {result['gamma']}, beta = {result['beta']:.6g}, "
        f"{result['features']} features, J* = {result['J_star']:.10g}"
    )
    label = "B(K)" if result["features"] == "one-hot" else "B(K)+errors"
    print(f"  {'K':>6}  {'average gap':>12}  {'last gap':>12}  {label:>12}")
    for k, a, last, b in zip(
        result["K"], result["average_gap"], result["last_gap"], result["bound"], strict=True
    ):
        print(f"  {k:>6}  {a:>12.6g}  {last:>12.6g}  {b:>12.6g}")


def _run_pessimism(args: argparse.Namespace) -> dict[str, Any]:
    from verify.experiments import VALIDITY_DELTA, pessimism_sweep

    game = GAMES[args.game](args.gamma)
    with _executor(args) as executor:
        sweep = pessimism_sweep(
            game,
            coverage=args.coverage,
            n_samples=args.samples,
            scales=args.scales,
            seeds=args.seeds,
            K=args.K,
            beta=args.beta,
            lambda_reg=args.lambda_reg,
            seed=args.seed,
            executor=executor,
        )
    return {
        "game": sweep.game,
        "agents": game.n_agents,
        "action_counts": list(game.action_counts),
        "states": game.n_states,
        "gamma": sweep.gamma,
        "coverage": sweep.coverage,
        "samples": sweep.n_samples,
        "seeds": len(sweep.children),
        "K": sweep.K,
        "beta": sweep.beta,
        "lambda": sweep.lambda_reg,
        "seed": sweep.seed,
        "children": [{"entropy": e, "spawn_key": list(k)} for e, k in sweep.children],
        "safe_actions": [int(a) for a in sweep.safe_actions],
        "J_star": sweep.J_star,
        "behaviour_J": sweep.behaviour_J,
        "online_J": sweep.online_J,
        "validity_delta": VALIDITY_DELTA,
        "validity_scale": sweep.validity_scale,
        "validity_scales": [float(x) for x in sweep.validity_scales],
        "scales": [float(x) for x in sweep.scales],
        "bonus_coefficient": [float(x) / (1 - sweep.gamma) for x in sweep.scales],
        "mean_J": [float(x) for x in sweep.mean_J],
        "ci_half_width": [float(x) for x in sweep.ci_half_width],
        "event_frequency": [float(x) for x in sweep.event_frequency],
        "J": [[float(x) for x in row] for row in sweep.J],
        "event": [[bool(x) for x in row] for row in sweep.event],
    }


def _plot_pessimism(result: dict[str, Any], path: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(
        result["scales"], result["mean_J"], yerr=result["ci_half_width"], fmt="o-",
        capsize=3, label="pessimistic MA-PPO, mean J(pi_K) (95% CI)",
    )
    ax.axhline(result["J_star"], color="k", linestyle="--", label="J*")
    ax.axhline(result["behaviour_J"], color="tab:green", linestyle=":", label="behaviour J")
    ax.axhline(result["online_J"], color="tab:red", linestyle="-.",
               label="online MA-PPO J(pi_K)")
    ax.set_xlabel("bonus scale (beta_G = scale / (1 - gamma))")
    ax.set_ylabel("true J")
    ax.set_title(
        f"{result['game']}, C = {result['coverage']:g}, n = {result['samples']}, "
        f"{result['seeds']} seeds, K = {result['K']}"
    )
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _print_pessimism(result: dict[str, Any]) -> None:
    print(
        f"{result['game']}: gamma = {result['gamma']}, coverage = {result['coverage']:g}, "
        f"samples = {result['samples']}, seeds = {result['seeds']}, K = {result['K']}, "
        f"beta = {result['beta']:g}, lambda = {result['lambda']:g}, seed = {result['seed']}"
    )
    print(
        f"  J* = {result['J_star']:.10g}, behaviour J = {result['behaviour_J']:.10g}, "
        f"online MA-PPO J_K = {result['online_J']:.10g}, "
        f"validity-sufficient scale = {result['validity_scale']:.4g}"
    )
    print(f"  {'scale':>8}  {'mean true J':>12}  {'95% CI half-width':>17}  "
          f"{'event frequency':>15}")
    for sc, m, h, f in zip(
        result["scales"], result["mean_J"], result["ci_half_width"],
        result["event_frequency"], strict=True,
    ):
        print(f"  {sc:>8.4g}  {m:>12.6f}  {h:>17.3g}  {f:>15.3f}")


def _run_decay(args: argparse.Namespace) -> dict[str, Any]:
    from verify.experiments import kappa_decay_sweep

    instance = INSTANCES[args.instance](args.agents, args.gamma)
    policy = LocalizedSoftmaxPolicy.uniform(instance.model, args.obs_radius)
    sweep = kappa_decay_sweep(instance.model, policy, instance.utilities(args.utility))
    return {
        "instance": instance.name,
        "agents": instance.model.n,
        "gamma": instance.model.gamma,
        "obs_radius": policy.beta,
        "utility": args.utility,
        "kappa": [int(k) for k in sweep.kappa],
        "max_spread": [float(x) for x in sweep.max_spread],
        "bound": [float(x) for x in sweep.bound],
        "truncated_gradient_error": [float(x) for x in sweep.truncated_gradient_error],
        "truncated_gradient_error_bound": [float(x) for x in sweep.gradient_error_bound],
        "fitted_rate": None if np.isnan(sweep.rate) else sweep.rate,
        "weights": sweep.weights,
    }


def _pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, or a :class:`ModelError` naming the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ModelError(
            "--plot needs matplotlib: pip install 'marl-oracle[plot]'"
        ) from None
    return plt


def _plot_decay(result: dict[str, Any], path: str) -> None:
    from verify.plots import ZERO_MARKER_NOTE, log_series

    plt = _pyplot()
    kappa = np.array(result["kappa"])
    fig, ax = plt.subplots(figsize=(6, 4))
    # exact zeros (the spread and the bound at the diameter) are marked on the x axis
    log_series(ax, kappa, result["max_spread"], "o-", "max_i D_i(kappa)")
    log_series(ax, kappa, result["bound"], "s--", "derived bound")
    log_series(ax, kappa, result["truncated_gradient_error"], "^:", "||ghat - grad F||")
    ax.set_xlabel("kappa (hops)")
    ax.set_ylabel("value (log scale)")
    ax.set_title(
        f"{result['instance']}, n = {result['agents']}, beta = {result['obs_radius']}, "
        f"gamma = {result['gamma']}, theta = 0\n({ZERO_MARKER_NOTE})",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _print_decay(result: dict[str, Any]) -> None:
    print(
        f"{result['instance']}: n = {result['agents']}, gamma = {result['gamma']}, "
        f"beta = {result['obs_radius']}, utility = {result['utility']}, theta = 0"
    )
    print(f"  {'kappa':>5}  {'max D_i':>12}  {'bound':>12}  {'||ghat-grad||':>14}")
    for k, d, b, e in zip(
        result["kappa"], result["max_spread"], result["bound"],
        result["truncated_gradient_error"], strict=True,
    ):
        print(f"  {k:>5}  {d:>12.4e}  {b:>12.4e}  {e:>14.4e}")
    rate = result["fitted_rate"]
    print(f"  fitted per-hop rate of max D_i: {rate:.4f}" if rate is not None else "")


def _run_exact(args: argparse.Namespace) -> dict[str, Any]:
    instance = INSTANCES[args.instance](args.agents, args.gamma)
    model = instance.model
    policy = LocalizedSoftmaxPolicy.uniform(model, args.obs_radius)
    start = time.perf_counter()
    sol = solve(model, policy, instance.utilities(args.utility))
    seconds = time.perf_counter() - start
    return {
        "instance": instance.name,
        "agents": model.n,
        "gamma": model.gamma,
        "obs_radius": policy.beta,
        "utility": args.utility,
        "objective": sol.objective,
        "gradient_norm": sol.gradient_norm,
        "local_utilities": [float(v) for v in sol.local_utility],
        "local_occupancies": [occ.tolist() for occ in sol.local_occupancy],
        "occupancy_error_bound": sol.occupancy_error_bound,
        "value_error_bound": sol.value_error_bound,
        "joint_states": model.states.size,
        "backend": sol.backend,
        "seconds": seconds,
        "source": instance.source,
    }


def _print_exact(result: dict[str, Any]) -> None:
    print(
        f"{result['instance']}: n = {result['agents']}, gamma = {result['gamma']}, "
        f"beta = {result['obs_radius']}, utility = {result['utility']}, theta = 0"
    )
    print(f"  objective F           {result['objective']:.12g}")
    print(f"  gradient norm         {result['gradient_norm']:.12g}")
    print(
        f"  certified errors      occupancy (l1) {result['occupancy_error_bound']:.2e}, "
        f"values (inf; {'team value Vbar' if result['backend'] == 'matrix-free' else 'every V_i'}) "
        f"{result['value_error_bound']:.2e}"
    )
    print(
        f"  joint states          {result['joint_states']} "
        f"({result['backend']} backend, {result['seconds']:.3f} s)"
    )
    print("  local occupancies lam_i[s_i, a_i] (unnormalised, mass 1/(1-gamma)):")
    for i, occ in enumerate(result["local_occupancies"]):
        rows = "; ".join(" ".join(f"{x:.6f}" for x in row) for row in occ)
        print(f"    agent {i:>3}  f_i = {result['local_utilities'][i]:.6f}  [{rows}]")


def _json_number(x: float) -> float | str | None:
    """A float for JSON: ``"inf"``/``"-inf"`` for infinities, ``None`` for NaN."""
    if np.isnan(x):
        return None
    if np.isinf(x):
        return "inf" if x > 0 else "-inf"
    return float(x)


def _run_assumptions(args: argparse.Namespace) -> dict[str, Any]:
    from reference.cooperative.offline import behaviour_policy
    from reference.tabular import policy_iteration
    from verify.assumptions import check_assumptions

    rng = np.random.default_rng(args.seed)
    head: dict[str, Any]
    if args.game is not None:
        for flag, value in (
            ("--agents", args.agents), ("--obs-radius", args.obs_radius),
            ("--utility", args.utility), ("--directions", args.directions),
        ):
            if value is not None:
                raise ModelError(f"{flag} applies to --instance, not to --game")
        game = GAMES[args.game](args.gamma)
        behaviour = None
        if args.coverage is not None:
            safe = policy_iteration(game.tabular).greedy
            behaviour = behaviour_policy(game, args.coverage, safe)
        cap = np.inf if args.cap is None else args.cap
        report = check_assumptions(
            game, rng=rng, concentrability_cap=cap, behaviour=behaviour
        )
        head = {
            "kind": "game",
            "game": game.name,
            "agents": game.n_agents,
            "action_counts": list(game.action_counts),
            "states": game.n_states,
            "gamma": game.gamma,
            "coverage": args.coverage,
        }
    else:
        if args.agents is None:
            raise ModelError("--instance needs --agents N")
        for flag, value in (("--cap", args.cap), ("--coverage", args.coverage)):
            if value is not None:
                raise ModelError(f"{flag} applies to --game, not to --instance")
        # the effective defaults of the options left as None by the parser
        if args.utility is None:
            args.utility = "linear"
        instance = INSTANCES[args.instance](args.agents, args.gamma)
        policy = LocalizedSoftmaxPolicy.uniform(
            instance.model, 0 if args.obs_radius is None else args.obs_radius
        )
        directions = 32 if args.directions is None else args.directions
        report = check_assumptions(
            instance.model, policy=policy, utilities=instance.utilities(args.utility),
            rng=rng, directions=directions,
        )
        head = {
            "kind": "networked",
            "instance": instance.name,
            "agents": instance.model.n,
            "gamma": instance.model.gamma,
            "obs_radius": policy.beta,
            "utility": args.utility,
            "seed": args.seed,
        }
    decay = report.decay
    consts = report.utilities
    conc = report.concentrability
    return {
        **head,
        "all_hold": report.all_hold,
        "verdicts": [
            {
                "name": v.name,
                "assumed": _json_number(v.assumed),
                "measured": _json_number(v.measured),
                "holds": v.holds,
                "detail": v.detail,
                "reference": v.reference,
            }
            for v in report.verdicts
        ],
        "decay": None if decay is None else {
            "kappa": [int(k) for k in decay.kappa],
            "max_spread": [float(x) for x in decay.max_spread],
            "max_bound": [float(x) for x in decay.max_bound],
            "tolerance": float(decay.tolerance.max()),
            "fitted_rate": _json_number(decay.rate),
            "bound_rate": _json_number(decay.bound_rate),
        },
        "utilities": None if consts is None else {
            "names": list(consts.names),
            "declared_gradient_bound": [float(x) for x in consts.declared_gradient_bound],
            "measured_gradient_bound": [float(x) for x in consts.measured_gradient_bound],
            "declared_smoothness": [float(x) for x in consts.declared_smoothness],
            "measured_smoothness": [float(x) for x in consts.measured_smoothness],
            "directions": consts.directions,
            "steps": list(consts.steps),
            "quotients": consts.quotients,
        },
        "concentrability": None if conc is None else {
            "context": [_json_number(float(x)) for x in conc.context],
            "action": [_json_number(float(x)) for x in conc.action],
            "offline": None if conc.offline is None else _json_number(conc.offline),
            "cap": _json_number(conc.cap),
        },
    }


def _print_assumptions(result: dict[str, Any]) -> None:
    if result["kind"] == "game":
        coverage = "" if result["coverage"] is None else f", coverage = {result['coverage']:g}"
        print(
            f"{result['game']}: N = {result['agents']}, |A^m| = {result['action_counts']}, "
            f"|S| = {result['states']}, gamma = {result['gamma']}{coverage}, "
            "pi_k uniform, comparator optimal"
        )
    else:
        print(
            f"{result['instance']}: n = {result['agents']}, gamma = {result['gamma']}, "
            f"beta = {result['obs_radius']}, utility = {result['utility']}, theta = 0, "
            f"seed = {result['seed']}"
        )

    def number(x: float | str | None) -> str:
        return "nan" if x is None else x if isinstance(x, str) else f"{x:.6g}"

    width = max(len(v["name"]) for v in result["verdicts"])
    print(f"  {'assumption':<{width}}  {'assumed':>12}  {'measured':>12}  holds")
    for v in result["verdicts"]:
        print(
            f"  {v['name']:<{width}}  {number(v['assumed']):>12}  "
            f"{number(v['measured']):>12}  {'yes' if v['holds'] else 'NO'}"
        )
    failing = sum(not v["holds"] for v in result["verdicts"])
    total = len(result["verdicts"])
    print("  all assumptions hold" if failing == 0 else f"  {failing} of {total} fail")
    for v in result["verdicts"]:
        print(f"  - {v['name']}: {v['detail']} [{v['reference']}]")


def _run_report(args: argparse.Namespace) -> dict[str, Any]:
    from verify.report import claim_names, claim_record, run_report, write_report

    unknown = [n for n in args.only or () if n not in claim_names()]
    if unknown:
        raise ModelError(f"--only {unknown}: no such claim; claims are {claim_names()}")

    def progress(done: int, total: int, name: str) -> None:
        width = 24
        filled = width * done // max(total, 1)
        label = "done" if done == total else name
        print(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label:<24}",
            end="\n" if done == total else "",
            file=sys.stderr,
            flush=True,
        )

    with _executor(args) as executor:
        report = run_report(quick=args.quick, seed=args.seed, only=tuple(args.only or ()),
                            progress=None if args.no_progress else progress,
                            executor=executor)
    files = write_report(report, args.out)
    return {
        "passed": report.passed,
        "all_hold": report.passed,
        "claims_pass": report.claims_pass,
        "defects_fail": report.defects_fail,
        "quick": report.quick,
        "partial": bool(report.only),
        "seconds": report.seconds,
        "out": str(args.out),
        "files": [str(f) for f in files],
        "claims": [
            {
                k: v for k, v in claim_record(c).items()
                if k not in ("per_item", "series", "children", "statement")
            }
            for c in report.claims
        ],
    }


def _print_report(result: dict[str, Any]) -> None:
    def num(x: float | str) -> str:
        return f"{x:10.3g}" if isinstance(x, float) else f"{x:>10}"

    print(f"{'claim':<26} {'ratio':>10} {'margin':>10}  verdict  {'defect ratio':>12}  defect")
    for c in result["claims"]:
        p = c["power"]
        print(
            f"{c['name']:<26} {num(c['ratio'])} {num(c['margin'])}  {c['verdict']:<7}  "
            f"{num(p['ratio']):>12}  {p['verdict']}: {p['defect']}"
        )
    if result["passed"]:
        verdict = "every claim passes and every planted defect fails"
    else:
        parts = []
        if not result["claims_pass"]:
            parts.append("SOME CLAIMS FAIL")
        if not result["defects_fail"]:
            parts.append("SOME PLANTED DEFECTS PASS")
        verdict = " and ".join(parts)
    partial = " (partial: --only)" if result["partial"] else ""
    print(f"{verdict}{partial}; {result['seconds']:.1f} s; wrote {result['out']}/report.md, "
          "report.json")


def _run_mutants(args: argparse.Namespace) -> dict[str, Any]:
    from verify.checks.planted import AREAS, run_planted

    unknown = [a for a in args.area or () if a not in AREAS]
    if unknown:
        raise ModelError(f"--area {unknown!r} matches no area of {sorted(AREAS)}")
    with _executor(args) as executor:
        verdicts = run_planted(args.area, executor=executor)
    rows = [
        {
            "area": v.area,
            "kind": v.kind,
            "name": v.name,
            "bug": v.bug,
            "check": v.check,
            "cases": v.cases,
            "failures": v.failures,
            "passed": v.passed,
            "verdict_ok": v.verdict_ok,
            "where": v.where,
            "seconds": v.seconds,
        }
        for v in verdicts
    ]
    return {
        "rows": rows,
        "mutants": sum(r["kind"] == "mutant" for r in rows),
        "caught": sum(r["kind"] == "mutant" and r["verdict_ok"] for r in rows),
        "correct": sum(r["kind"] == "correct" for r in rows),
        "correct_passed": sum(r["kind"] == "correct" and r["verdict_ok"] for r in rows),
        "all_caught": all(r["verdict_ok"] for r in rows),
    }


def _print_mutants(result: dict[str, Any]) -> None:
    print(f"{'kind':<8} {'name':<52} {'check':<27} {'cases':>5} {'fail':>5}  verdict")
    for r in result["rows"]:
        if r["kind"] == "mutant":
            verdict = "caught" if r["verdict_ok"] else "SURVIVED"
        else:
            verdict = "passes" if r["verdict_ok"] else "FAILS"
        print(
            f"{r['kind']:<8} {r['name']:<52} {r['check']:<27} {r['cases']:>5} "
            f"{r['failures']:>5}  {verdict}"
        )
    print(
        f"{result['caught']} of {result['mutants']} planted bugs caught; "
        f"{result['correct_passed']} of {result['correct']} correct implementations pass"
    )


def _run_instance(args: argparse.Namespace) -> dict[str, Any]:
    from reference.cooperative.policy import ConditionalPolicy
    from verify.files import save_game, save_game_policy, save_networked, save_theta

    rng = None if args.theta_seed is None else np.random.default_rng(args.theta_seed)
    if args.theta_seed is not None and args.theta_out is None:
        raise ModelError("--theta-seed needs --theta-out")
    if args.game is not None:
        for flag, value in (("--agents", args.agents), ("--obs-radius", args.obs_radius)):
            if value is not None:
                raise ModelError(f"{flag} applies to --instance, not to --game")
        game = GAMES[args.game](args.gamma)
        save_game(args.out, game)
        if args.theta_out is not None:
            if rng is None:
                policy = ConditionalPolicy.uniform(game)
            else:
                joint = rng.dirichlet(np.ones(game.n_joint_actions), size=game.n_states)
                policy = ConditionalPolicy.from_joint(game, joint)
            save_game_policy(args.theta_out, policy)
        return {
            "kind": "cooperative-game", "name": game.name, "agents": game.n_agents,
            "states": game.n_states, "action_counts": list(game.action_counts),
            "gamma": game.gamma, "out": args.out, "theta_out": args.theta_out,
            "theta": None if args.theta_out is None else (
                "uniform" if rng is None else f"random joint, seed {args.theta_seed}"
            ),
        }
    if args.agents is None:
        raise ModelError("--instance needs --agents N")
    instance = INSTANCES[args.instance](args.agents, args.gamma)
    beta = 0 if args.obs_radius is None else args.obs_radius
    policy_n = LocalizedSoftmaxPolicy.uniform(instance.model, beta)
    if rng is not None:
        policy_n = LocalizedSoftmaxPolicy.random(instance.model, beta, rng)
    save_networked(args.out, instance)
    if args.theta_out is not None:
        save_theta(args.theta_out, policy_n)
    return {
        "kind": "networked-instance", "name": instance.name, "agents": instance.model.n,
        "joint_states": instance.model.states.size, "gamma": instance.model.gamma,
        "obs_radius": beta, "out": args.out, "theta_out": args.theta_out,
        "theta": None if args.theta_out is None else (
            "zero" if rng is None else f"Normal(0, 1), seed {args.theta_seed}"
        ),
        "theta_shapes": [list(t.shape) for t in policy_n.theta],
    }


def _print_instance(result: dict[str, Any]) -> None:
    if result["kind"] == "cooperative-game":
        print(
            f"wrote {result['out']}: game {result['name']}, N = {result['agents']}, "
            f"|A^m| = {result['action_counts']}, |S| = {result['states']}, "
            f"gamma = {result['gamma']}"
        )
    else:
        print(
            f"wrote {result['out']}: {result['name']}, n = {result['agents']}, "
            f"|S| = {result['joint_states']}, gamma = {result['gamma']}"
        )
    if result["theta_out"] is not None:
        shapes = result.get("theta_shapes")
        detail = f", beta = {result['obs_radius']}, shapes {shapes}" if shapes else ""
        print(f"wrote {result['theta_out']}: {result['theta']} parameters{detail}")


def _run_check(args: argparse.Namespace) -> dict[str, Any]:
    from reference.cooperative.game import CooperativeMarkovGame
    from reference.cooperative.policy import ConditionalPolicy
    from reference.networked.policy import LocalizedSoftmaxPolicy as Localized
    from verify.files import (
        check_estimate,
        exact_quantity,
        load_estimate,
        load_game_policy,
        load_instance,
        load_theta,
    )

    instance = load_instance(args.instance)
    estimate = load_estimate(args.estimate)
    if estimate.quantity != args.quantity:
        raise ModelError(
            f"{args.estimate}: holds the quantity {estimate.quantity!r}, "
            f"the command checks {args.quantity!r}"
        )
    policy: Localized | ConditionalPolicy
    if isinstance(instance, CooperativeMarkovGame):
        policy = (
            ConditionalPolicy.uniform(instance) if args.theta is None
            else load_game_policy(args.theta, instance)
        )
        head = {"kind": "cooperative-game", "name": instance.name, "agents": instance.n_agents}
    else:
        if args.theta is None:
            raise ModelError(f"checking {args.quantity} on a networked instance needs --theta")
        policy = load_theta(args.theta, instance.model)
        head = {
            "kind": "networked-instance", "name": instance.name, "agents": instance.model.n,
            "obs_radius": policy.beta, "utility": args.utility,
        }
    exact = exact_quantity(args.quantity, instance, policy, args.utility)
    verdict = check_estimate(estimate, exact, args.atol)
    return {
        **head,
        "quantity": verdict.quantity,
        "instance_file": args.instance,
        "theta_file": args.theta,
        "estimate_file": args.estimate,
        "passed": verdict.passed,
        "all_hold": verdict.passed,
        "entries": verdict.entries,
        "failures": verdict.failures,
        "tolerance": verdict.tolerance,
        "atol": verdict.atol,
        "worst": {
            "agent": verdict.agent,
            "index": list(verdict.index),
            "estimate": _json_number(verdict.estimate),
            "exact": verdict.exact,
            "error": _json_number(verdict.error),
        },
    }


def _print_check(result: dict[str, Any]) -> None:
    w = result["worst"]

    def number(x: float | str | None) -> str:
        return "nan" if x is None else x if isinstance(x, str) else f"{x:.17g}"

    print(
        f"{result['quantity']} on {result['name']} ({result['instance_file']}): "
        f"{'PASS' if result['passed'] else 'FAIL'}, {result['failures']} of "
        f"{result['entries']} entries outside the tolerance"
    )
    print(
        f"  worst entry: agent {w['agent']}, index {tuple(w['index'])}, estimate "
        f"{number(w['estimate'])}, exact {number(w['exact'])}, |error| {number(w['error'])}"
    )
    print(
        f"  tolerance {result['tolerance']:.3e} (derived) + atol {result['atol']:.3e}"
    )


_COMMANDS: dict[
    str,
    tuple[
        Callable[[argparse.Namespace], dict[str, Any]],
        Callable[[dict[str, Any], str], None] | None,
        Callable[[dict[str, Any]], None],
    ],
] = {
    "exact": (_run_exact, None, _print_exact),
    "decay": (_run_decay, _plot_decay, _print_decay),
    "mappo-gap": (_run_gap, _plot_gap, _print_gap),
    "pessimism": (_run_pessimism, _plot_pessimism, _print_pessimism),
    "assumptions": (_run_assumptions, None, _print_assumptions),
    "mutants": (_run_mutants, None, _print_mutants),
    "report": (_run_report, None, _print_report),
    "instance": (_run_instance, None, _print_instance),
    "check": (_run_check, None, _print_check),
}
"""Each subcommand: how to compute its result, plot it (``None``: no ``--plot``), and print
it for a person."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code: 0, 1 when a reported verdict fails
    (``assumptions``: an assumption does not hold; ``mutants``: a planted bug survived or a
    correct implementation failed), 2 for invalid input."""
    args = build_parser().parse_args(argv)
    run, plot, show = _COMMANDS[args.command]
    try:
        result = run(args)
        if plot is not None and args.plot:
            plot(result, args.plot)
        if args.json:
            print(json.dumps(result, allow_nan=False))
        else:
            show(result)
        sys.stdout.flush()  # a closed pipe surfaces here, inside the try
        # a verdict that fails (an assumption, a mutant not caught) is exit status 1
        return 1 if result.get("all_hold") is False or result.get("all_caught") is False else 0
    except ModelError as exc:
        print(f"marl-oracle: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader closed the pipe (``marl-oracle ... | head``): stop quietly, and point
        # stdout at /dev/null so the interpreter's final flush does not raise again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    np.seterr(all="raise")
    sys.exit(main())
