"""Time the exact ``grad F`` on binary rings against a naive joint-table baseline.

What is measured
----------------
For every ``n`` in ``--n-min .. --n-max`` the script builds a random networked MDP on the
ring of ``n`` agents with two local states and two local actions per agent
(``|S| = 2^n`` joint states, ``|A| = 2^n`` joint actions), a random localized softmax
policy of observation radius ``--beta`` and the smoothed entropy utility
``f_i(lam_i) = -sum_s p_i[s] log(p_i[s] + 1e-3)`` for every agent (``gamma = 0.9``).  It then
times, in the same process:

* **fast** -- :func:`reference.networked.solve`: the shadow-reward policy-gradient theorem
  contracted with the softmax score, on the dense ``|S| x |S|`` kernel ``P_pi`` with one LU
  factorisation and next-state contractions that never form a joint ``(s, a, s')`` array
  (``proofs_notes/shadow-reward-gradient.md#route-1``).  Best of 3 repeats, each on a freshly
  built copy of the same instance so that lazily cached index tables are paid every time.
  Its peak memory is the ``tracemalloc`` peak of one further, untimed call.
* **naive** -- :func:`naive_gradient` below, the textbook route written out with Python
  loops: the joint kernel ``P[s, a, s'] = prod_i P_i(s'_i | s_{N_i}, a_i)`` entry by entry,
  the joint policy ``pi(a|s) = prod_i pi_i(a_i | o_i(s))`` entry by entry,
  ``M = numpy.linalg.inv(I - gamma P_pi)``, the occupancy ``lam_S = M^T rho``, the local
  occupancies and shadow rewards ``r_i = grad f_i(lam_i)``, the team reward
  ``Rbar(s, a) = (1/n) sum_j r_j(s_j, a_j)`` (by linearity ``Qbar = (1/n) sum_j Q_j`` is the
  Q-function of ``Rbar``), ``Vbar = M Rbar_pi``, ``Qbar = Rbar + gamma P Vbar`` and finally::

      grad_{theta_i}[o, b] = sum_{s, a} lam_S(s) pi(a|s) Qbar(s, a)
                             1[o_i(s) = o] (1[a_i = b] - pi_i(b | o))

  It does ``O(n |S|^2 |A|)`` Python-level work (8x per binary agent), so it runs only while
  the time spent on it plus its predicted time stays within ``--naive-budget`` seconds.  The
  prediction extrapolates the last measured naive time by the ratio of ``n |S|^2 |A|``
  (``8 n / (n - 1)`` per added binary agent); the first prediction extrapolates from a
  calibration run on the ring of 3 agents.  Beyond the budget the row says
  ``skipped (predicted X s)``.  The naive route is one repeat and is deliberately naive in
  its algorithm only: local tables are converted to Python lists once so that its loops are
  not slowed further by numpy scalar indexing.

Both routes compute the same gradient; the table shows their largest absolute difference
next to ``verify.tolerances.gradient_tolerance`` (the derived forward error of an exact
gradient from linear solves, as in ``tests/test_networked_exact.py``), and the script exits
with status 1 if any difference exceeds it.

Instances are reproducible per row: the instance with ``n`` agents draws from
``numpy.random.default_rng(SeedSequence(seed).spawn(...)[n])``, i.e. the child with
``spawn_key = (n,)``, independent of ``--n-min`` and ``--n-max``; the key is recorded in the
``--json`` rows.  Local kernels have Dirichlet(1, 1) rows, each ``rho_i`` is Dirichlet(1, 1),
and ``theta_i`` has standard normal entries.

Run from the repository root::

    python bench/exact_networked.py [--n-min 4] [--n-max 12] [--beta 1] [--seed 0]
                                    [--naive-budget 60] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import product
from pathlib import Path

import numpy as np

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # run as a script: import reference/ from this working tree
    sys.path.insert(0, str(_ROOT))

from reference._arrays import FloatArray  # noqa: E402
from reference.errors import MemoryLimitError  # noqa: E402
from reference.memory import check_memory  # noqa: E402
from reference.networked import (  # noqa: E402
    EntropyUtility,
    Graph,
    LocalizedSoftmaxPolicy,
    NetworkedMDP,
    NetworkedSolution,
    Utility,
    solve,
)
from verify.tolerances import gradient_tolerance  # noqa: E402

GAMMA = 0.9
"""Discount of every instance."""

ENTROPY_FLOOR = 1e-3
"""Smoothing floor ``eps`` of the entropy utility (its documented default)."""

LOCAL_STATES = 2
LOCAL_ACTIONS = 2
"""Binary rings: two local states and two local actions per agent."""

FAST_REPEATS = 3
"""The fast route reports the best of this many timed calls."""

CALIBRATION_AGENTS = 3
"""Ring size of the naive run that seeds the first time prediction."""

TARGET_AGENTS = 10
TARGET_SECONDS = 2.0
"""Performance target: the fast route on the ring of 10 agents in under 2 s."""

_MIB = 1024.0**2


# ---------------------------------------------------------------------- instances
@dataclass(frozen=True)
class RingInstance:
    """One seeded binary-ring problem.

    Attributes:
        model: networked MDP on ``Graph.ring(n)`` with binary local states and actions.
        policy: localized softmax policy of observation radius ``beta``.
        utilities: one :class:`EntropyUtility` per agent.
        spawn_key: the ``SeedSequence`` spawn key the instance was drawn from.
    """

    model: NetworkedMDP
    policy: LocalizedSoftmaxPolicy
    utilities: tuple[Utility, ...]
    spawn_key: tuple[int, ...]


def ring_instance(n: int, beta: int, seed: int) -> RingInstance:
    """The binary ring of ``n`` agents drawn from the child ``spawn_key = (n,)`` of ``seed``.

    ``P_i`` has shape ``(2^{|N_i|}, 2, 2)`` (closed neighbourhood in increasing agent order,
    lowest agent most significant) with Dirichlet(1, 1) rows; ``rho_i`` ~ Dirichlet(1, 1);
    ``theta_i`` i.i.d. standard normal (:meth:`LocalizedSoftmaxPolicy.random`).
    """
    child = np.random.SeedSequence(seed, spawn_key=(n,))
    rng = np.random.default_rng(child)
    graph = Graph.ring(n)
    kernels = tuple(
        rng.dirichlet(
            np.ones(LOCAL_STATES),
            size=(LOCAL_STATES ** len(graph.neighbourhood(i, 1)), LOCAL_ACTIONS),
        )
        for i in range(n)
    )
    rho = tuple(rng.dirichlet(np.ones(LOCAL_STATES)) for _ in range(n))
    model = NetworkedMDP(graph, (LOCAL_STATES,) * n, (LOCAL_ACTIONS,) * n, kernels, GAMMA, rho)
    policy = LocalizedSoftmaxPolicy.random(model, beta, rng)
    utilities = tuple(
        EntropyUtility((LOCAL_STATES, LOCAL_ACTIONS), GAMMA, ENTROPY_FLOOR) for _ in range(n)
    )
    return RingInstance(model, policy, utilities, tuple(int(k) for k in child.spawn_key))


# ---------------------------------------------------------------------- the naive baseline
def _mixed_radix(digits: Sequence[int], agents: Sequence[int], sizes: Sequence[int]) -> int:
    """Index of ``(digits[j] for j in agents)``, lowest agent most significant."""
    index = 0
    for j in agents:
        index = index * sizes[j] + digits[j]
    return index


def naive_gradient(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    utilities: Sequence[Utility],
) -> tuple[FloatArray, ...]:
    """``grad_{theta_i} F`` from explicit joint tables built with Python loops.

    ``grad_{theta_i} F = sum_{s,a} lam_S(s) pi(a|s) Qbar(s,a) score_i(a_i | o_i(s))`` with
    ``score_i = 1[o_i(s) = o] (1[a_i = b] - pi_i(b|o))`` and ``Qbar`` the Q-function of the
    team shadow reward ``(1/n) sum_j r_j(s_j, a_j)``, ``r_j = grad f_j(lam_j)``
    (``proofs_notes/shadow-reward-gradient.md``, the theorem on joint tables).  Shares no
    code with :func:`reference.networked.solve` beyond the instance, ``pi_i = softmax(theta_i)``
    and ``grad f_j``.

    Returns:
        one ``(|O_i|, |A_i|)`` array per agent.
    """
    n, gamma = model.n, model.gamma
    s_sizes, a_sizes = model.n_states, model.n_actions
    states = list(product(*(range(k) for k in s_sizes)))  # agent 0 most significant
    actions = list(product(*(range(k) for k in a_sizes)))
    nS, nA = len(states), len(actions)
    check_memory(8 * 2 * nS * nA * nS, f"the naive joint kernel ({nS} x {nA} x {nS})")

    kernels = [k.tolist() for k in model.kernels]  # P_i[s_{N_i}][a_i][s'_i]
    probs = [p.tolist() for p in policy.probs]  # pi_i[o_i][a_i]
    rows = [[_mixed_radix(s, model.neighbourhoods[i], s_sizes) for i in range(n)] for s in states]
    obs = [[_mixed_radix(s, policy.observed[i], s_sizes) for i in range(n)] for s in states]

    # P[s, a, s'] = prod_i P_i(s'_i | s_{N_i}, a_i)
    P = np.empty((nS, nA, nS))
    for si in range(nS):
        for ai, a in enumerate(actions):
            local = [kernels[i][rows[si][i]][a[i]] for i in range(n)]
            row = []
            for sp in states:
                p = 1.0
                for i in range(n):
                    p *= local[i][sp[i]]
                row.append(p)
            P[si, ai, :] = row

    # pi(a|s) = prod_i pi_i(a_i | o_i(s))
    pi = np.empty((nS, nA))
    for si in range(nS):
        for ai, a in enumerate(actions):
            p = 1.0
            for i in range(n):
                p *= probs[i][obs[si][i]][a[i]]
            pi[si, ai] = p

    # rho(s) = prod_i rho_i(s_i), unless the model carries a joint rho
    if isinstance(model.rho, tuple):
        rho_local = [r.tolist() for r in model.rho]
        rho = np.empty(nS)
        for si, s in enumerate(states):
            p = 1.0
            for i in range(n):
                p *= rho_local[i][s[i]]
            rho[si] = p
    else:
        rho = np.array(model.rho, dtype=np.float64)

    P_pi = np.einsum("sa,sat->st", pi, P)
    M = np.linalg.inv(np.eye(nS) - gamma * P_pi)
    lam_S = M.T @ rho  # (I - gamma P_pi^T)^{-1} rho

    # lam_i[s_i, a_i] = sum_{s,a} lam_S(s) pi(a|s) 1[s_i(s) = s_i, a_i(a) = a_i]
    lam_local = [np.zeros((s_sizes[i], a_sizes[i])) for i in range(n)]
    for si, s in enumerate(states):
        for ai, a in enumerate(actions):
            mass = lam_S[si] * pi[si, ai]
            for i in range(n):
                lam_local[i][s[i], a[i]] += mass
    rewards = [f.gradient(lam).tolist() for f, lam in zip(utilities, lam_local, strict=True)]

    # Rbar(s, a) = (1/n) sum_j r_j(s_j, a_j); Vbar = (I - gamma P_pi)^{-1} Rbar_pi
    R = np.empty((nS, nA))
    for si, s in enumerate(states):
        for ai, a in enumerate(actions):
            total = 0.0
            for j in range(n):
                total += rewards[j][s[j]][a[j]]
            R[si, ai] = total / n
    V = M @ np.einsum("sa,sa->s", pi, R)
    Q = R + gamma * np.einsum("sat,t->sa", P, V)

    weights = (lam_S[:, None] * pi * Q).tolist()
    grads = [np.zeros_like(p) for p in policy.probs]
    for si in range(nS):
        for ai, a in enumerate(actions):
            w = weights[si][ai]
            for i in range(n):
                o = obs[si][i]
                pi_o = probs[i][o]
                for b in range(a_sizes[i]):
                    grads[i][o, b] += w * ((1.0 if b == a[i] else 0.0) - pi_o[b])
    return tuple(grads)


# ---------------------------------------------------------------------- measurements
@dataclass(frozen=True)
class Row:
    """One line of the report (``None`` where the naive route was skipped).

    Attributes:
        n: number of agents.
        joint_states: ``|S| = 2^n``.
        fast_seconds: best of :data:`FAST_REPEATS` calls of ``solve``.
        fast_peak_mib: ``tracemalloc`` peak of one ``solve`` call, MiB.
        naive_seconds: time of :func:`naive_gradient`, or ``None`` if skipped.
        naive_predicted_seconds: the prediction the skip decision used (``None`` for the
            calibration-free case where nothing was predicted).
        naive_skip_reason: ``None``, ``"budget"`` or ``"memory"``.
        speedup: ``naive_seconds / fast_seconds``.
        max_abs_difference: ``max |grad_fast - grad_naive|`` over all entries.
        tolerance: derived bound on that difference (``gradient_tolerance``).
        gradient_norm: Euclidean norm of the fast gradient.
        objective: ``F`` at the instance's policy.
        beta: observation radius.
        seed: root seed.
        spawn_key: ``SeedSequence`` spawn key of the instance.
    """

    n: int
    joint_states: int
    fast_seconds: float
    fast_peak_mib: float
    naive_seconds: float | None
    naive_predicted_seconds: float | None
    naive_skip_reason: str | None
    speedup: float | None
    max_abs_difference: float | None
    tolerance: float
    gradient_norm: float
    objective: float
    beta: int
    seed: int
    spawn_key: tuple[int, ...]


def time_fast(n: int, beta: int, seed: int) -> tuple[float, float, NetworkedSolution]:
    """``(best seconds, peak MiB, solution)`` of :func:`solve` on fresh copies of the instance."""
    times = []
    solutions = []
    for _ in range(FAST_REPEATS):
        inst = ring_instance(n, beta, seed)
        start = time.perf_counter()
        solutions.append(solve(inst.model, inst.policy, inst.utilities))
        times.append(time.perf_counter() - start)
    inst = ring_instance(n, beta, seed)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        solve(inst.model, inst.policy, inst.utilities)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return min(times), peak / _MIB, solutions[-1]


def time_naive(n: int, beta: int, seed: int) -> tuple[float, tuple[FloatArray, ...]]:
    """``(seconds, gradient)`` of one :func:`naive_gradient` call."""
    inst = ring_instance(n, beta, seed)
    start = time.perf_counter()
    grads = naive_gradient(inst.model, inst.policy, inst.utilities)
    return time.perf_counter() - start, grads


def naive_work(n: int) -> float:
    """``n |S|^2 |A|``: the innermost-loop count of the naive joint kernel."""
    joint_states = float(LOCAL_STATES**n)
    return n * joint_states**2 * float(LOCAL_ACTIONS**n)


def run(n_min: int, n_max: int, beta: int, seed: int, budget: float, stream: bool) -> list[Row]:
    """Measure every ring size; print table rows as they finish when ``stream`` is set."""
    rows: list[Row] = []
    spent = 0.0
    last_n: int | None = None
    last_seconds = 0.0
    if n_min > CALIBRATION_AGENTS:
        last_seconds, _ = time_naive(CALIBRATION_AGENTS, beta, seed)
        last_n = CALIBRATION_AGENTS
        spent += last_seconds
    if stream:
        print(_header(), flush=True)
    for n in range(n_min, n_max + 1):
        try:
            fast_s, peak_mib, sol = time_fast(n, beta, seed)
        except MemoryLimitError as err:
            if stream:
                print(f"n = {n}: fast route stopped by the memory guard: {err}", flush=True)
            break
        predicted = None if last_n is None else last_seconds * naive_work(n) / naive_work(last_n)
        naive_s: float | None = None
        diff: float | None = None
        reason: str | None = None
        if predicted is None or spent + predicted <= budget:
            try:
                naive_s, naive = time_naive(n, beta, seed)
            except MemoryLimitError:
                reason = "memory"
            else:
                spent += naive_s
                last_n, last_seconds = n, naive_s
                diff = max(
                    float(np.max(np.abs(f - g))) for f, g in zip(sol.gradient, naive, strict=True)
                )
        else:
            reason = "budget"
        inst = ring_instance(n, beta, seed)
        r_max = max(float(np.max(np.abs(r))) for r in sol.shadow_rewards)
        tol = gradient_tolerance(inst.model.states.size * inst.model.actions.size, GAMMA, r_max)
        row = Row(
            n=n,
            joint_states=inst.model.states.size,
            fast_seconds=fast_s,
            fast_peak_mib=peak_mib,
            naive_seconds=naive_s,
            naive_predicted_seconds=predicted,
            naive_skip_reason=reason,
            speedup=None if naive_s is None else naive_s / fast_s,
            max_abs_difference=diff,
            tolerance=tol,
            gradient_norm=sol.gradient_norm,
            objective=sol.objective,
            beta=beta,
            seed=seed,
            spawn_key=inst.spawn_key,
        )
        rows.append(row)
        if stream:
            print(_format(row), flush=True)
    return rows


# ---------------------------------------------------------------------- output
_COLUMNS = (
    ("n", 3),
    ("|S|", 6),
    ("fast (s)", 9),
    ("naive (s)", 30),
    ("speed-up", 9),
    ("max |diff|", 10),
    ("tolerance", 9),
    ("|grad F|", 10),
    ("fast peak MiB", 13),
)


def _header() -> str:
    names = "  ".join(f"{name:>{width}}" for name, width in _COLUMNS)
    return names + "\n" + "  ".join("-" * width for _, width in _COLUMNS)


def _seconds(value: float | None) -> str:
    """Three significant digits below 100 s, whole seconds above."""
    if value is None:
        return "?"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _format(row: Row) -> str:
    if row.naive_seconds is not None:
        naive = f"{row.naive_seconds:.3f}"
        speedup = f"{row.speedup:.1f}x"
        diff = f"{row.max_abs_difference:.1e}"
    else:
        if row.naive_skip_reason == "memory":
            naive = "skipped (memory limit)"
        else:
            naive = f"skipped (predicted {_seconds(row.naive_predicted_seconds)} s)"
        speedup = diff = "-"
    cells = (
        str(row.n),
        str(row.joint_states),
        f"{row.fast_seconds:.4f}",
        naive,
        speedup,
        diff,
        f"{row.tolerance:.1e}",
        f"{row.gradient_norm:.4e}",
        f"{row.fast_peak_mib:.2f}",
    )
    return "  ".join(f"{c:>{w}}" for c, (_, w) in zip(cells, _COLUMNS, strict=True))


def _disagrees(row: Row) -> bool:
    return row.max_abs_difference is not None and row.max_abs_difference > row.tolerance


def _summary(rows: Sequence[Row], budget: float) -> list[str]:
    calibrated = bool(rows) and rows[0].n > CALIBRATION_AGENTS
    lines = [
        f"gamma = {GAMMA}, entropy utilities (eps = {ENTROPY_FLOOR}); fast = best of "
        f"{FAST_REPEATS}, naive = 1 run within a {budget:g} s budget"
        + (f" (calibrated on n = {CALIBRATION_AGENTS})." if calibrated else ".")
    ]
    for row in rows:
        if row.n == TARGET_AGENTS:
            verdict = "met" if row.fast_seconds < TARGET_SECONDS else "NOT met"
            lines.append(
                f"target: n = {TARGET_AGENTS} in under {TARGET_SECONDS:g} s -> "
                f"{row.fast_seconds:.3f} s ({verdict})"
            )
    bad = [r.n for r in rows if _disagrees(r)]
    if bad:
        lines.append(f"DISAGREEMENT: the two routes differ beyond the tolerance at n = {bad}")
    return lines


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Exact grad F on binary rings: reference.networked.solve vs a naive "
        "joint-table implementation, timed in the same run."
    )
    parser.add_argument("--n-min", type=int, default=4, help="smallest ring (>= 3)")
    parser.add_argument("--n-max", type=int, default=12, help="largest ring")
    parser.add_argument("--beta", type=int, default=1, help="observation radius (>= 0)")
    parser.add_argument("--seed", type=int, default=0, help="root seed (>= 0)")
    parser.add_argument(
        "--naive-budget",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="total seconds the naive route may take, predicted before each run",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list of rows")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 1 if the two routes disagree beyond the derived tolerance."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.n_min < 3:
        parser.error(f"--n-min = {args.n_min}, expected at least 3 (a ring)")
    if args.n_max < args.n_min:
        parser.error(f"--n-max = {args.n_max} is below --n-min = {args.n_min}")
    if args.beta < 0:
        parser.error(f"--beta = {args.beta}, expected a non-negative radius")
    if args.seed < 0:
        parser.error(f"--seed = {args.seed}, expected a non-negative integer")
    if not args.naive_budget >= 0:
        parser.error(f"--naive-budget = {args.naive_budget}, expected non-negative seconds")
    rows = run(args.n_min, args.n_max, args.beta, args.seed, args.naive_budget, not args.json)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print("\n".join(_summary(rows, args.naive_budget)))
    return 1 if any(_disagrees(r) for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
