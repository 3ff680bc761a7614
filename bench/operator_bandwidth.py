"""How close one matrix-free application of ``P_pi`` comes to the memory bandwidth limit.

What is measured
----------------
For every ``n`` the instance is a seeded random binary ring (two local states and actions per
agent, ``|S| = 2^n``, Dirichlet(1, 1) kernel rows) with a random localized softmax policy of
observation radius ``--beta`` (as in ``bench/exact_networked.py``), and its
:class:`reference.networked.MatrixFreeOperator`.

* **apply**: one ``P_pi v`` (:meth:`MatrixFreeOperator.apply`), best of ``--repeats``.
* **bytes**: what one application must move through memory by its plan: every contraction
  step reads its input and writes its output (``8 (input + output)`` bytes per step, and the
  input once more for a step that permutes axes first), plus the final reordering to agent
  order.  ``floor`` is the least any application can move: read ``v`` and write ``P_pi v``,
  ``16 |S|`` bytes.
* **copy**: a plain ``numpy.copyto`` of an ``|S|``-float array (``16 |S|`` bytes moved), best
  of ``--repeats``, measured in the same run: the physical limit of a memory-bound
  contraction on this machine.
* ``achieved`` is ``bytes / apply``, ``copy bw`` is ``16 |S| / copy``, and ``ratio`` their
  quotient (1 would be an application streaming at copy speed).  ``apps x copy`` is
  ``apply / copy``: how many plain copies one application costs.
* **gradient** (``n <= --gradient-max``): one exact ``grad F`` with that operator
  (:func:`reference.networked.solve`, entropy utilities, team value only) and its operator
  applications.

Run from the repository root (``OPENBLAS_NUM_THREADS=1`` on a shared machine)::

    python bench/operator_bandwidth.py [--n 16,18,20,22,24] [--gradient-max 20] [--beta 1]
                                       [--repeats 5] [--seed 0] [--memory-limit 6e9] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

from reference.networked import (
    EntropyUtility,
    Graph,
    LocalizedSoftmaxPolicy,
    MatrixFreeOperator,
    NetworkedMDP,
    solve,
)


def ring(n: int, seed: int) -> NetworkedMDP:
    """The seeded random binary ring of ``n`` agents (``SeedSequence(seed, spawn_key=(n,))``)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(n,)))
    graph = Graph.ring(n)
    kernels = tuple(
        rng.dirichlet(np.ones(2), size=(2 ** len(graph.neighbourhood(i)), 2)) for i in range(n)
    )
    rho = tuple(rng.dirichlet(np.ones(2)) for _ in range(n))
    return NetworkedMDP(graph, (2,) * n, (2,) * n, kernels, 0.9, rho)


def plan_bytes(op: MatrixFreeOperator) -> int:
    """Bytes one application moves by its plan (module docstring)."""
    floats = 0
    for step in op.plan.steps:
        floats += step.input_floats * (2 if step.permutation is not None else 1)
        floats += step.output_floats
    floats += 2 * op.plan.n_joint  # the final reordering to agent order
    return 8 * floats


def best(call: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="16,18,20,22,24")
    parser.add_argument("--gradient-max", type=int, default=20)
    parser.add_argument("--beta", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-limit", type=float, default=6 * 2**30,
                        help="memory limit for the operator (bytes, default 6 GiB)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    print(f"{'n':>3} {'|S|':>9} {'apply ms':>9} {'MiB moved':>10} {'floor MiB':>10} "
          f"{'achieved GB/s':>14} {'copy ms':>8} {'copy GB/s':>10} {'ratio':>6} "
          f"{'apps x copy':>11} {'grad s':>7} {'applic.':>8}", flush=True)
    for n in (int(x) for x in args.n.split(",")):
        model = ring(n, args.seed)
        rng = np.random.default_rng(np.random.SeedSequence(args.seed, spawn_key=(n, 1)))
        policy = LocalizedSoftmaxPolicy.random(model, args.beta, rng)
        op = MatrixFreeOperator(model, policy, memory_limit=args.memory_limit)
        v = rng.random(op.n_states)
        op.apply(v)  # warm the buffers
        apply_s = best(lambda o=op, x=v: o.apply(x), args.repeats)
        dst = np.empty_like(v)
        copy_s = best(lambda d=dst, x=v: np.copyto(d, x), args.repeats)
        moved = plan_bytes(op)
        floor = 16 * op.n_states
        achieved = moved / apply_s
        copy_bw = floor / copy_s
        row: dict[str, Any] = {
            "n": n, "joint_states": op.n_states, "apply_s": apply_s, "bytes": moved,
            "floor_bytes": floor, "achieved_bytes_per_s": achieved, "copy_s": copy_s,
            "copy_bytes_per_s": copy_bw, "ratio": achieved / copy_bw,
            "applications_per_copy": apply_s / copy_s,
        }
        grad = "-"
        apps = "-"
        if n <= args.gradient_max:
            utils = [EntropyUtility((2, 2), model.gamma, 1e-3) for _ in range(n)]
            start = time.perf_counter()
            sol = solve(model, policy, utils, operator=op)
            row["gradient_s"] = time.perf_counter() - start
            row["applications"] = sol.iterations
            grad, apps = f"{row['gradient_s']:.2f}", str(sol.iterations)
        rows.append(row)
        print(f"{n:>3} {op.n_states:>9} {apply_s * 1e3:>9.1f} {moved / 2**20:>10.0f} "
              f"{floor / 2**20:>10.0f} {achieved / 1e9:>14.2f} {copy_s * 1e3:>8.1f} "
              f"{copy_bw / 1e9:>10.2f} {achieved / copy_bw:>6.2f} {apply_s / copy_s:>11.1f} "
              f"{grad:>7} {apps:>8}", flush=True)
        del op, v, dst
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
