"""The ``score`` subcommand of ``marl-oracle``: a trained policy's exact objective and its
distance from the optimum (:func:`verify.score.score`).

::

    marl-oracle score --instance NAME [--agents N] [--gamma G] --policy FILE.npz
                      [--utility linear|entropy|mixed] [--json]
    marl-oracle score --game NAME [--agents N] [--gamma G] --policy FILE.npz
                      [--iterations K] [--json]

The policy file is an ``agent-policy`` file (per-agent probability tables,
:func:`verify.files.save_agent_policy`), a ``localized-theta`` file (networked) or a
``game-policy`` file (games); see :mod:`verify.files`.  Networked instances report ``F``,
its certified error, ``||grad F||`` (full-support policies), ``F*`` and the gap; games
report ``J``, ``J*``, the gap and exact MA-PPO's ``J`` after ``--iterations`` steps.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from reference.instances import GAMES, INSTANCES
from verify.score import DEFAULT_MAPPO_ITERATIONS, resolve_instance, score

__all__ = ["COMMANDS", "add_parsers"]


def add_parsers(sub: Any) -> None:
    """Register ``score`` on the ``marl-oracle`` subparsers."""
    p = sub.add_parser(
        "score",
        help="exact objective of a trained policy, its gap to F* or J*, MA-PPO for reference",
        description=(
            "Score a policy file exactly: F (networked) or J (games) with its certified "
            "error, the certified optimum and the gap; for games also exact MA-PPO's J after "
            "the same number of iterations."
        ),
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--instance", choices=sorted(INSTANCES), help="a networked instance")
    which.add_argument("--game", choices=sorted(GAMES), help="a cooperative game")
    p.add_argument("--agents", type=int, default=None, help="number of agents (default 4)")
    p.add_argument("--gamma", type=float, default=None, help="discount (instance default)")
    p.add_argument("--policy", required=True, metavar="FILE.npz", help="the policy file")
    p.add_argument(
        "--utility",
        choices=("linear", "entropy", "mixed"),
        default="linear",
        help="networked utilities (default linear: the environment's rewards)",
    )
    p.add_argument(
        "--iterations",
        type=int,
        default=DEFAULT_MAPPO_ITERATIONS,
        help=f"K of the MA-PPO reference point (games; default {DEFAULT_MAPPO_ITERATIONS})",
    )
    p.add_argument("--gap", type=float, default=1e-9, help="certified gap of F* (networked)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run_score(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~verify.score.Score` of ``--policy`` as a dict."""
    name = args.instance if args.instance is not None else args.game
    instance = resolve_instance(name, args.agents, args.gamma)
    result = score(
        instance, args.policy, utilities=args.utility, iterations=args.iterations, gap=args.gap
    )
    return result.as_dict()


def print_score(result: dict[str, Any]) -> None:
    """A person's summary."""
    f = "F" if result["kind"] == "networked" else "J"
    lo, hi = result["gap_bounds"]
    print(f"{result['instance']} ({result['kind']})")
    err = result["objective_error"]
    print(f"  {f}            {result['objective']:.12g}  (certified error {err:.2e})")
    if result["gradient_norm"] is not None:
        print(f"  ||grad F||   {result['gradient_norm']:.6e}")
    print(f"  {f}*           {result['optimum']:.12g}  (<= {result['optimum_upper']:.12g})")
    print(f"  gap          {result['gap']:.6e}  in [{lo:.6e}, {hi:.6e}]")
    if result["mappo_objective"] is not None:
        print(
            f"  MA-PPO J     {result['mappo_objective']:.12g} after K = "
            f"{result['mappo_iterations']} (gap {result['mappo_gap']:.6e})"
        )


COMMANDS: dict[
    str,
    tuple[
        Callable[[argparse.Namespace], dict[str, Any]],
        Callable[[dict[str, Any], str], None] | None,
        Callable[[dict[str, Any]], None],
    ],
] = {"score": (run_score, None, print_score)}
"""The subcommand: compute, plot (none), print."""
