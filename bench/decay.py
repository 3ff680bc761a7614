"""Time the kappa-decay oracles on the binary line: streamed spreads against the joint tables.

What is measured
----------------
For every ``n`` the instance is ``line-message`` (SPEC section 7: binary agents on a line,
``gamma = 0.9``, linear utilities) at ``theta = 0``, observation radius 0, and every radius
``kappa = 0..n-1``.  Two computations, each run by two routes in the same run:

* **spreads** ``D_i(kappa)`` for every agent and radius.  *tables*: the route before the
  streamed one, one joint ``(|S|, |A|)`` shadow Q table per agent
  (:func:`reference.networked.exact.iter_shadow_q`) reduced by
  :func:`reference.networked.truncation.decay_spread`.  *streamed*:
  :func:`reference.networked.truncation.decay_profile` (chunks of joint pairs contracted
  from the local kernels, ``proofs_notes/decay.md#streamed-spreads``).
* **sweep**, what ``marl-oracle decay`` computes: the spreads and ``||ghat - grad F||`` with
  occupancy weights per radius.  *tables*: the spreads above plus all ``n`` joint shadow Q
  tables (:func:`~reference.networked.exact.shadow_q`) and
  :func:`~reference.networked.truncation.truncated_gradient` per radius.  *streamed*:
  :func:`verify.experiments.kappa_decay_sweep` (streamed spreads; the truncated gradient
  from the per-agent contributions, ``proofs_notes/truncated-gradient.md#occupancy-identity``).

Every timing runs in a fresh subprocess (``OPENBLAS_NUM_THREADS=1``), after the shared exact
solve, and reports its wall time, its CPU time (``time.process_time``: on a shared machine
the wall time also counts the time the process waited for a core) and its peak resident
memory (``VmHWM`` of ``/proc/self/status``); the streamed
routes are the best of ``--repeats`` subprocesses, the table routes one run each (they take
minutes at ``n = 12``).  ``max |diff|`` compares the spreads (and gradient errors) of both
routes; a table route whose predicted memory exceeds the limit, or whose predicted time
exceeds ``--budget`` seconds (extrapolated by ``n 4^n`` from the last measured run), is
skipped and says so.

Run from the repository root::

    python bench/decay.py [--n 8,10,12,13,14] [--tables-max 12] [--sweep-tables-max 11]
                          [--repeats 3] [--budget 900] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, sys, time
import numpy as np
from reference.instances import line_message
from reference.networked import LocalizedSoftmaxPolicy, solve
from reference.networked.exact import gradient_norm, iter_shadow_q, shadow_q
from reference.networked.truncation import decay_profile, decay_spread, truncated_gradient
from verify.experiments import kappa_decay_sweep

def peak_bytes():
    # VmHWM: the high-water mark of this process's own address space (ru_maxrss would
    # also carry the parent's RSS at fork, which survives execve on Linux)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

n, what, route = int(sys.argv[1]), sys.argv[2], sys.argv[3]
inst = line_message(n)
model, utils = inst.model, inst.utilities()
policy = LocalizedSoftmaxPolicy.uniform(model, 0)
sol = solve(model, policy, utils, values="per-agent")
ks = list(range(model.graph.diameter + 1))
start, cpu = time.perf_counter(), time.process_time()
errors = []
if route == "streamed":
    if what == "spreads":
        spread = decay_profile(model, policy, sol).spread
    else:
        sweep = kappa_decay_sweep(model, policy, utils)
        spread, errors = None, [float(x) for x in sweep.truncated_gradient_error]
        spread_max = [float(x) for x in sweep.max_spread]
else:
    spread = np.array([[decay_spread(model, q, i, k) for k in ks]
                       for i, q in enumerate(iter_shadow_q(model, policy, sol))])
    if what == "sweep":
        qs = shadow_q(model, policy, sol)
        for k in ks:
            g = truncated_gradient(model, policy, sol, k, "occupancy", qs)
            errors.append(gradient_norm([a - b for a, b in zip(g, sol.gradient, strict=True)]))
seconds = time.perf_counter() - start
cpu = time.process_time() - cpu
if spread is not None:
    spread_max = [float(x) for x in spread.max(axis=0)]
    full = [[float(x) for x in row] for row in spread]
else:
    full = None
print(json.dumps({
    "seconds": seconds, "cpu": cpu,
    "peak_bytes": peak_bytes(),
    "max_spread": spread_max, "spread": full, "errors": errors,
}))
"""


def _run(n: int, what: str, route: str) -> dict[str, Any]:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(n), what, route],
        env=env, cwd=ROOT, capture_output=True, text=True,
    )
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["failed"])[-1]
        return {"error": last}
    record: dict[str, Any] = json.loads(out.stdout)
    return record


def _diff(a: dict[str, Any], b: dict[str, Any]) -> float:
    pairs = []
    if a.get("spread") is not None and b.get("spread") is not None:
        pairs += [(x, y) for ra, rb in zip(a["spread"], b["spread"], strict=True)
                  for x, y in zip(ra, rb, strict=True)]
    pairs += list(zip(a["max_spread"], b["max_spread"], strict=True))
    pairs += list(zip(a["errors"], b["errors"], strict=True))
    return max(abs(x - y) for x, y in pairs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="8,10,12,13,14", help="comma-separated agent counts")
    parser.add_argument("--tables-max", type=int, default=12,
                        help="largest n for the spreads on joint tables")
    parser.add_argument("--sweep-tables-max", type=int, default=11,
                        help="largest n for the sweep on joint tables")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=float, default=900.0,
                        help="skip a table route predicted to take longer (seconds)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    ns = [int(x) for x in args.n.split(",")]
    rows = []
    last_table: dict[str, tuple[int, float]] = {}
    print(f"{'n':>3} {'what':<8} {'tables s':>10} {'streamed s':>11} {'ratio':>7} "
          f"{'tables cpu':>11} {'streamed cpu':>13} {'cpu ratio':>9} "
          f"{'tables MiB':>11} {'streamed MiB':>13} {'max |diff|':>11}", flush=True)
    for n in ns:
        for what, cap in (("spreads", args.tables_max), ("sweep", args.sweep_tables_max)):
            runs = [_run(n, what, "streamed") for _ in range(args.repeats)]
            good = [r for r in runs if "error" not in r]
            new = min(good, key=lambda r: r["seconds"]) if good else runs[0]
            old: dict[str, Any]
            predicted = None
            if what in last_table:
                m, sec = last_table[what]
                predicted = sec * (n * 4**n) / (m * 4**m)
            if n > cap:
                old = {"error": f"not run (n > {cap})"}
            elif predicted is not None and predicted > args.budget:
                old = {"error": f"skipped (predicted {predicted:.0f} s)"}
            else:
                old = _run(n, what, "tables")
                if "error" not in old:
                    last_table[what] = (n, old["seconds"])
            row = {"n": n, "what": what, "streamed": new, "tables": old}
            rows.append(row)
            ns_ = f"{new['seconds']:.3f}" if "seconds" in new else new["error"]
            os_ = f"{old['seconds']:.3f}" if "seconds" in old else old["error"]
            both = "seconds" in old and "seconds" in new
            ratio = f"{old['seconds'] / new['seconds']:.1f}" if both else "-"
            oc = f"{old['cpu']:.3f}" if "cpu" in old else "-"
            nc = f"{new['cpu']:.3f}" if "cpu" in new else "-"
            cratio = f"{old['cpu'] / new['cpu']:.1f}" if both else "-"
            diff = f"{_diff(old, new):.1e}" if both else "-"
            om = f"{old['peak_bytes'] / 2**20:.0f}" if "peak_bytes" in old else "-"
            nm = f"{new['peak_bytes'] / 2**20:.0f}" if "peak_bytes" in new else "-"
            print(f"{n:>3} {what:<8} {os_:>10} {ns_:>11} {ratio:>7} {oc:>11} {nc:>13} "
                  f"{cratio:>9} {om:>11} {nm:>13} {diff:>11}", flush=True)
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
