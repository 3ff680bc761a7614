"""Time ``F*`` (``reference.networked.optimum``) against plain Frank--Wolfe with a dense
value-iteration oracle, measured in the same run.

What is measured
----------------
line-message with ``n`` agents (``|S| = |A| = 2^n``), entropy utilities on every agent,
``gamma = 0.9``, requested certified duality gap ``--gap`` (default ``1e-6``).

* **fast** -- :func:`reference.networked.optimum.optimum` as shipped: simplicial decomposition
  (fully corrective Frank--Wolfe on the local marginals) whose linear oracle is warm-started
  policy evaluation with MacQueen's certified bounds, the backup contracted agent by agent
  (``proofs_notes/optimum.md``).
* **plain** -- textbook Frank--Wolfe written out below on the joint occupancy ``lam[s, a]``:
  exact line search (bisection on the directional derivative), and as linear oracle value
  iteration from ``V = 0`` on the **dense** joint kernel ``P[s, a, s']`` (one
  ``(|S||A|, |S|)`` matrix-vector product per backup) until MacQueen's bounds are within
  ``gap / 10``; the vertex's occupancy by a dense LU solve.  The dense kernel has
  ``|S|^2 |A|`` entries, ``8.6 GB`` at ``n = 10``, so this baseline runs for
  ``n <= --dense-max`` (default 8).
* **plain-factored** -- the same plain Frank--Wolfe with value iteration from 0, but with the
  factored backup of the fast route (:func:`optimum` with ``method="frank-wolfe",
  oracle="value-iteration"``), which fits at every ``n``: the baseline at ``n = 10``.

Plain Frank--Wolfe converges like ``1/k``; both baselines stop at ``--budget`` seconds and
report the certified gap they reached.  ``ratio`` compares times to the same certified gap:
the baseline's time to its final gap over the fast route's time to reach that gap (read from
its trace).  Since the baseline had not reached ``--gap`` when it stopped, the ratio at
``--gap`` itself is larger; the printed ratio is a lower bound on it.  The script exits with
status 1 if the routes' certified intervals ``[F, F + gap]`` do not overlap.

Run from the repository root (``OPENBLAS_NUM_THREADS=1`` for one core)::

    python bench/optimum.py [--n 8,10] [--gap 1e-6] [--budget 60] [--dense-max 8] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.linalg

from reference.instances import line_message
from reference.networked import NetworkedMDP, Utility, optimum


def _marginal_maps(model: NetworkedMDP) -> list[np.ndarray]:
    """Per agent, the flat index ``s_i |A_i| + a_i`` of every joint ``(s, a)`` pair."""
    out = []
    for i in range(model.n):
        s_i = model.states.digits[:, i]
        a_i = model.actions.digits[:, i]
        out.append((s_i[:, None] * model.n_actions[i] + a_i[None, :]).reshape(-1))
    return out


def plain_dense_frank_wolfe(
    model: NetworkedMDP, utilities: Sequence[Utility], gap: float, budget: float
) -> dict[str, Any]:
    """Plain Frank--Wolfe on ``lam[s, a]`` with dense value iteration as the linear oracle."""
    start = time.perf_counter()
    g = model.gamma
    nS, nA = model.states.size, model.actions.size
    P = model.joint_kernel().reshape(nS * nA, nS)
    rho = model.joint_rho()
    maps = _marginal_maps(model)
    sizes = [model.n_states[i] * model.n_actions[i] for i in range(model.n)]
    rows = np.arange(nS)

    def marginals(lam: np.ndarray) -> list[np.ndarray]:
        flat = lam.reshape(-1)
        return [
            np.bincount(m, weights=flat, minlength=k).reshape(u.shape)
            for m, k, u in zip(maps, sizes, utilities, strict=True)
        ]

    def value(lam: np.ndarray) -> float:
        return float(np.mean([u.value(z) for u, z in zip(utilities, marginals(lam), strict=True)]))

    def reward(lam: np.ndarray) -> np.ndarray:
        zs = marginals(lam)
        c = np.zeros(nS * nA)
        for u, z, m in zip(utilities, zs, maps, strict=True):
            c += u.gradient(z).reshape(-1)[m]
        return c.reshape(nS, nA) / model.n

    def vertex(act: np.ndarray) -> np.ndarray:
        P_pi = P.reshape(nS, nA, nS)[rows, act]
        lam_S = scipy.linalg.solve(np.eye(nS) - g * P_pi.T, rho)
        lam = np.zeros((nS, nA))
        lam[rows, act] = lam_S
        return lam

    lam = vertex(np.zeros(nS, dtype=np.int64))
    best_upper = math.inf
    trace_gap, trace_time = [], []
    backups = 0
    it = 0
    while True:
        it += 1
        c = reward(lam)
        V = np.zeros(nS)
        while True:
            Q = c + g * (P @ V).reshape(nS, nA)
            backups += 1
            TV = Q.max(axis=1)
            diff = TV - V
            upper = float(rho @ TV) + g * float(diff.max()) / (1 - g)
            lower = float(rho @ TV) + g * float(diff.min()) / (1 - g)
            V = TV
            if upper - lower <= gap / 10:
                break
        F = value(lam)
        best_upper = min(best_upper, F + upper - float(np.sum(c * lam)))
        trace_gap.append(best_upper - F)
        trace_time.append(time.perf_counter() - start)
        if trace_gap[-1] <= gap or trace_time[-1] >= budget:
            break
        d = vertex(np.argmax(Q, axis=1)) - lam
        lo, hi = 0.0, 1.0
        if float(np.sum(reward(lam + d) * d)) >= 0:
            t = 1.0
        else:
            for _ in range(50):
                mid = 0.5 * (lo + hi)
                if float(np.sum(reward(lam + mid * d) * d)) > 0:
                    lo = mid
                else:
                    hi = mid
            t = lo
        lam = lam + t * d
    return {
        "value": value(lam),
        "gap": trace_gap[-1],
        "iterations": it,
        "backups": backups,
        "trace_gap": trace_gap,
        "trace_time": trace_time,
        "seconds": trace_time[-1],
    }


def _time_to(trace_gap: Sequence[float], trace_time: Sequence[float], target: float) -> float:
    for gp, t in zip(trace_gap, trace_time, strict=True):
        if gp <= target:
            return float(t)
    return math.inf


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", default="8,10", help="comma-separated agent counts")
    parser.add_argument("--gap", type=float, default=1e-6)
    parser.add_argument("--budget", type=float, default=60.0, help="baseline seconds")
    parser.add_argument("--dense-max", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    ok = True
    for n in [int(x) for x in args.n.split(",")]:
        inst = line_message(n)
        m, utils = inst.model, inst.utilities("entropy")
        fast = optimum(m, utils, gap=args.gap)
        fast_row = {
            "n": n,
            "route": "fast",
            "seconds": float(fast.trace.seconds[-1]),
            "value": fast.value,
            "gap": fast.duality_gap,
            "iterations": fast.iterations,
            "backups": fast.backups,
        }
        rows.append(fast_row)
        baselines = []
        if n <= args.dense_max:
            dense = plain_dense_frank_wolfe(m, utils, args.gap, args.budget)
            baselines.append(("plain-dense", dense))
        fw = optimum(
            m,
            utils,
            gap=args.gap,
            method="frank-wolfe",
            oracle="value-iteration",
            time_limit=args.budget,
        )
        baselines.append(
            (
                "plain-factored",
                {
                    "value": fw.value,
                    "gap": fw.duality_gap,
                    "iterations": fw.iterations,
                    "backups": fw.backups,
                    "trace_gap": list(fw.trace.gap),
                    "trace_time": list(fw.trace.seconds),
                    "seconds": float(fw.trace.seconds[-1]),
                },
            )
        )
        for name, res in baselines:
            reached = float(res["gap"])
            t_fast = _time_to(fast.trace.gap, fast.trace.seconds, reached)
            ratio = float(res["seconds"]) / t_fast if t_fast > 0 else math.inf
            overlap = (
                res["value"] <= fast.value + fast.duality_gap + 1e-12
                and fast.value <= res["value"] + reached + 1e-12
            )
            ok = ok and overlap
            rows.append(
                {
                    "n": n,
                    "route": name,
                    "seconds": float(res["seconds"]),
                    "value": res["value"],
                    "gap": reached,
                    "iterations": res["iterations"],
                    "backups": res["backups"],
                    "fast_seconds_to_same_gap": t_fast,
                    "ratio": ratio,
                    "reached_requested_gap": reached <= args.gap,
                    "intervals_overlap": overlap,
                }
            )
    if args.json:
        print(json.dumps(rows))
    else:
        print(
            f"line-message, entropy utilities, gamma 0.9, requested gap {args.gap:g}, "
            f"baseline budget {args.budget:g} s"
        )
        print(
            f"{'n':>3} {'route':>15} {'seconds':>9} {'F':>16} {'cert. gap':>10} "
            f"{'oracle':>7} {'backups':>8} {'fast to gap':>11} {'ratio':>8}"
        )
        for r in rows:
            extra = (
                f"{r['fast_seconds_to_same_gap']:>11.3f} {r['ratio']:>8.1f}"
                if "ratio" in r
                else f"{'':>11} {'':>8}"
            )
            print(
                f"{r['n']:>3} {r['route']:>15} {r['seconds']:>9.3f} {r['value']:>16.12f} "
                f"{r['gap']:>10.2e} {r['iterations']:>7} {r['backups']:>8} {extra}"
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
