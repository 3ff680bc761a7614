"""How close one matrix-free application of ``P_pi`` comes to the memory bandwidth limit.

What is measured
----------------
For every ``n`` the instance is a seeded random ring (``--graph line``: a line; ``--local``
states and actions per agent, default 2, so ``|S| = local^n``; Dirichlet(1, ..., 1) kernel
rows) with a random localized softmax policy of observation radius ``--beta`` (as in
``bench/exact_networked.py``), and its
:class:`reference.networked.MatrixFreeOperator` with its default threads
(``MARL_ORACLE_THREADS``, else two).  Every ``n`` runs in a fresh process, so each row's peak
memory and first-touch costs are its own.

* **apply**: one ``P_pi v`` (:meth:`MatrixFreeOperator.apply`), best of ``--repeats``.
* **bytes**: what one application must move through memory by its plan: every contraction
  step reads its input and writes its output (``8 (input + output)`` bytes per step, and the
  input twice more for a step that permutes axes first: the copy reads it and writes it), plus
  the final reordering to agent order where the plan does not end in it, plus ``8 |S|`` per
  slab beyond the first when the operator runs in slabs (each reads all of ``v``;
  ``slabs``, :attr:`reference.networked.MatrixFreeOperator.slabs`, chosen by the memory
  limit).  ``floor`` is the least any application can move: read ``v`` and write
  ``P_pi v``, ``16 |S|`` bytes.
* **copy**: a plain ``numpy.copyto`` of an ``|S|``-float array (``16 |S|`` bytes moved), best
  of ``--repeats`` on one thread and split over the operator's threads, the faster of the two,
  measured in the same run: the physical limit of a memory-bound contraction on this
  machine.
* ``achieved`` is ``bytes / apply``, ``copy bw`` is ``16 |S| / copy``, and ``ratio`` their
  quotient (1 would be an application streaming at copy speed).  ``apps x copy`` is
  ``apply / copy``: how many plain copies one application costs.
* **gradient** (``n <= --gradient-max``): one exact ``grad F`` with that operator
  (:func:`reference.networked.solve`, entropy utilities, team value only), the operator
  applications of its two certified solves (the reverse-mode agent forms add about three
  more), and the process's peak resident memory (``VmHWM``) at the end.

Run from the repository root (``OPENBLAS_NUM_THREADS=1`` on a shared machine)::

    python bench/operator_bandwidth.py [--n 16,18,20,22,24] [--local 2] [--graph ring]
                                       [--gradient-max 20]
                                       [--beta 1] [--repeats 5] [--seed 0]
                                       [--memory-limit 6e9] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
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
from reference.networked.matrix_free import _copy


def instance(n: int, seed: int, local: int = 2, graph_name: str = "ring") -> NetworkedMDP:
    """The seeded random ring (or line) of ``n`` agents with ``local`` states and actions each
    (``SeedSequence(seed, spawn_key=(n,))`` for ``local = 2``, ``(n, local)`` otherwise)."""
    key = (n,) if local == 2 else (n, local)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))
    graph = Graph.ring(n) if graph_name == "ring" else Graph.line(n)
    return NetworkedMDP.random(graph, (local,) * n, (local,) * n, rng)


def plan_bytes(op: MatrixFreeOperator) -> int:
    """Bytes one application moves by its plan (module docstring)."""
    floats = 0
    for step in op.plan.steps:
        # a permuted input is read and written by the copy, then read by the step
        floats += step.input_floats * (3 if step.permutation is not None else 1)
        floats += step.output_floats
    if not op.plan.in_agent_order:
        floats += 2 * op.plan.n_joint  # the final reordering to agent order
    # in slabs every slab's first step reads all of v (the steps' own floats are divided
    # among the slabs)
    floats += (op.slabs - 1) * op.plan.n_joint
    return 8 * floats


def best(call: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def peak_rss() -> int:
    """Peak resident set of this process in bytes (``VmHWM``; 0 where unavailable)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """One row, in this process (the parent runs each ``n`` in a fresh one)."""
    model = instance(n, args.seed, args.local, args.graph)
    key = (n, 1) if args.local == 2 else (n, args.local, 1)
    rng = np.random.default_rng(np.random.SeedSequence(args.seed, spawn_key=key))
    policy = LocalizedSoftmaxPolicy.random(model, args.beta, rng)
    op = MatrixFreeOperator(model, policy, memory_limit=args.memory_limit)
    v = rng.random(op.n_states)
    op.apply(v)  # warm the buffers
    apply_s = best(lambda: op.apply(v), args.repeats)
    dst = np.empty_like(v)
    copy_one = best(lambda: np.copyto(dst, v), args.repeats)
    copy_threads = best(lambda: _copy(dst, v, op.threads), args.repeats)
    copy_s = min(copy_one, copy_threads)
    moved = plan_bytes(op)
    floor = 16 * op.n_states
    row: dict[str, Any] = {
        "n": n, "graph": args.graph, "local_states": args.local, "joint_states": op.n_states,
        "threads": op.threads, "slabs": op.slabs, "apply_s": apply_s, "bytes": moved,
        "floor_bytes": floor,
        "achieved_bytes_per_s": moved / apply_s, "copy_s": copy_s,
        "copy_bytes_per_s": floor / copy_s, "ratio": (moved / apply_s) / (floor / copy_s),
        "applications_per_copy": apply_s / copy_s,
    }
    if n <= args.gradient_max:
        k = args.local
        utils = [EntropyUtility((k, k), model.gamma, 1e-3) for _ in range(n)]
        start = time.perf_counter()
        sol = solve(model, policy, utils, operator=op)
        row["gradient_s"] = time.perf_counter() - start
        row["applications"] = sol.iterations
        row["occupancy_error_bound"] = sol.occupancy_error_bound
        row["value_error_bound"] = sol.value_error_bound
    row["peak_rss_bytes"] = peak_rss()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="16,18,20,22,24")
    parser.add_argument("--local", type=int, default=2,
                        help="local states (and actions) per agent (default 2)")
    parser.add_argument("--graph", choices=("ring", "line"), default="ring",
                        help="interaction graph (default ring)")
    parser.add_argument("--gradient-max", type=int, default=20)
    parser.add_argument("--beta", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-limit", type=float, default=6 * 2**30,
                        help="memory limit for the operator (bytes, default 6 GiB)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.one, args)))
        return 0
    rows = []
    print(f"{'n':>3} {'|S|':>9} {'thr':>3} {'slabs':>5} {'apply ms':>9} {'MiB moved':>10} "
          f"{'floor MiB':>10} "
          f"{'achieved GB/s':>14} {'copy ms':>8} {'copy GB/s':>10} {'ratio':>6} "
          f"{'apps x copy':>11} {'grad s':>7} {'applic.':>8} {'peak GiB':>9}", flush=True)
    for n in (int(x) for x in args.n.split(",")):
        child = [sys.executable, __file__, "--one", str(n)] + [
            arg for arg in sys.argv[1:] if arg != "--json"
        ]
        done = subprocess.run(child, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{n:>3} failed: {done.stderr.strip().splitlines()[-1]}", flush=True)
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        grad = f"{row['gradient_s']:.2f}" if "gradient_s" in row else "-"
        apps = str(row["applications"]) if "applications" in row else "-"
        print(f"{n:>3} {row['joint_states']:>9} {row['threads']:>3} {row['slabs']:>5} "
              f"{row['apply_s'] * 1e3:>9.1f} "
              f"{row['bytes'] / 2**20:>10.0f} {row['floor_bytes'] / 2**20:>10.0f} "
              f"{row['achieved_bytes_per_s'] / 1e9:>14.2f} {row['copy_s'] * 1e3:>8.1f} "
              f"{row['copy_bytes_per_s'] / 1e9:>10.2f} {row['ratio']:>6.2f} "
              f"{row['applications_per_copy']:>11.1f} {grad:>7} {apps:>8} "
              f"{row['peak_rss_bytes'] / 2**30:>9.2f}", flush=True)
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
