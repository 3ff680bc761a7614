"""Time the exact ``grad F`` on binary rings: dense vs matrix-free backend, and a naive baseline.

What is measured
----------------
For every ``n`` the script builds a random networked MDP on the ring of ``n`` agents with two
local states and two local actions per agent (``|S| = 2^n`` joint states), a random localized
softmax policy of observation radius ``--beta`` and the smoothed entropy utility
``f_i(lam_i) = -sum_s p_i[s] log(p_i[s] + 1e-3)`` for every agent (``gamma = 0.9``).

**Backends** (``n`` in ``--n-min .. --n-max``), both timed in the same process:

* **dense** -- :func:`reference.networked.solve` with ``backend="dense"``: the ``|S| x |S|``
  kernel ``P_pi``, one LU factorisation, ``n`` value solves and the ``O(|S|^2)`` agent
  contractions (``proofs_notes/shadow-reward-gradient.md#route-1``).  Run while
  ``n <= --dense-max`` and its predicted memory fits.
* **matrix-free** -- :class:`reference.networked.MatrixFreeOperator` built and passed to
  ``solve``: contractions of local factors, BiCGSTAB to the default accuracy ``1e-10`` with a
  certified bound, only the team value ``Vbar`` (``proofs_notes/matrix-free.md``).  The
  contraction plan is symbolic and cached per graph (about 20 ms at ``n = 20``), so repeats
  after the first reuse it.

Each is timed as the best of ``--repeats`` calls, each on a freshly built copy of the instance;
the spread column is ``(slowest - best) / best`` over those calls (the machine may be shared).
Peak memory is the ``tracemalloc`` peak of one further, untimed call: every numpy allocation,
not BLAS-internal buffers.  ``dense / mf`` is the ratio of the two best times, measured in the
same run.  ``max |diff|`` is the largest entrywise difference of the two gradients and
``tolerance`` its derived bound, :func:`verify.operators.compare_solutions` (built from both
certified error bounds, the measured shadow-reward gap and the rounding of the shared
formulas); the script exits with status 1 if any compared quantity (occupancy, local
occupancies, team value, gradient) exceeds its tolerance.  ``auto`` is the backend
``transition_operator(backend="auto")`` would choose from its cost model.

**Naive baseline** (``n`` in ``3 .. --naive-max``, off by default): :func:`naive_gradient`
below, the textbook route written out with Python loops: the joint kernel
``P[s, a, s'] = prod_i P_i(s'_i | s_{N_i}, a_i)`` entry by entry, the joint policy
``pi(a|s) = prod_i pi_i(a_i | o_i(s))`` entry by entry, ``M = numpy.linalg.inv(I - gamma P_pi)``,
the occupancy ``lam_S = M^T rho``, the local occupancies and shadow rewards
``r_i = grad f_i(lam_i)``, the team reward ``Rbar(s, a) = (1/n) sum_j r_j(s_j, a_j)`` (by
linearity ``Qbar = (1/n) sum_j Q_j`` is the Q-function of ``Rbar``), ``Vbar = M Rbar_pi``,
``Qbar = Rbar + gamma P Vbar`` and finally::

    grad_{theta_i}[o, b] = sum_{s, a} lam_S(s) pi(a|s) Qbar(s, a)
                           1[o_i(s) = o] (1[a_i = b] - pi_i(b | o))

It is compared with the dense backend (``fast``).  It does ``O(n |S|^2 |A|)`` Python-level
work (8x per binary agent), so it runs only while the time spent on it plus its predicted time
stays within ``--naive-budget`` seconds; the prediction extrapolates the last measured naive
time by the ratio of ``n |S|^2 |A|`` (the first from a calibration run on the ring of 3
agents).  Beyond the budget the row says ``skipped (predicted X s)``.  The differences are
checked against ``verify.tolerances.gradient_tolerance`` (the derived forward error of an exact
gradient from linear solves).

Instances are reproducible per row: the instance with ``n`` agents draws from
``numpy.random.default_rng(SeedSequence(seed, spawn_key=(n,)))``, independent of the range;
the key is recorded in the ``--json`` rows.  Local kernels have Dirichlet(1, 1) rows, each
``rho_i`` is Dirichlet(1, 1), and ``theta_i`` has standard normal entries.

Run from the repository root (``OPENBLAS_NUM_THREADS=1`` to measure without BLAS threads)::

    python bench/exact_networked.py [--n-min 8] [--n-max 20] [--dense-max 12] [--beta 1]
                                    [--repeats 3] [--seed 0] [--naive-max 0]
                                    [--naive-budget 60] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
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
    MatrixFreeOperator,
    NetworkedMDP,
    NetworkedSolution,
    Utility,
    predict_backends,
    solve,
)
from verify.operators import compare_solutions  # noqa: E402
from verify.tolerances import gradient_tolerance  # noqa: E402

GAMMA = 0.9
"""Discount of every instance."""

ENTROPY_FLOOR = 1e-3
"""Smoothing floor ``eps`` of the entropy utility (its documented default)."""

LOCAL_STATES = 2
LOCAL_ACTIONS = 2
"""Binary rings: two local states and two local actions per agent."""

REPEATS = 3
"""Timed calls per backend and ring size (best reported, spread shown)."""

CALIBRATION_AGENTS = 3
"""Ring size of the naive run that seeds the first time prediction."""

RATIO_AGENTS, RATIO_TARGET = 12, 10.0
"""Target: the matrix-free exact gradient at least 10x faster than the dense one at n = 12."""

SECONDS_TARGETS = ((16, 10.0), (20, 60.0))
"""Targets: the matrix-free exact gradient at n = 16 in under 10 s and at n = 20 in under 60 s."""

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
    model = NetworkedMDP.random(
        graph, (LOCAL_STATES,) * n, (LOCAL_ACTIONS,) * n, rng, gamma=GAMMA
    )
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
class Timing:
    """Best-of-k wall time, its spread, and the tracemalloc peak of one more call.

    Attributes:
        best: fastest of the timed calls, seconds.
        spread: ``(slowest - best) / best`` over the timed calls.
        peak_mib: ``tracemalloc`` peak of one untimed call, MiB.
    """

    best: float
    spread: float
    peak_mib: float


def _timed(call: Callable[[], NetworkedSolution], repeats: int) -> tuple[Timing, NetworkedSolution]:
    """Time ``call`` ``repeats`` times, then once more under tracemalloc."""
    times = []
    sol = None
    for _ in range(repeats):
        start = time.perf_counter()
        sol = call()
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    if sol is None:
        raise ValueError("repeats must be at least 1")
    best = min(times)
    return Timing(best, (max(times) - best) / best, peak / _MIB), sol


def _dense_call(n: int, beta: int, seed: int) -> Callable[[], NetworkedSolution]:
    def call() -> NetworkedSolution:
        inst = ring_instance(n, beta, seed)
        return solve(inst.model, inst.policy, inst.utilities, backend="dense")

    return call


def _matrix_free_call(n: int, beta: int, seed: int) -> Callable[[], NetworkedSolution]:
    def call() -> NetworkedSolution:
        inst = ring_instance(n, beta, seed)
        op = MatrixFreeOperator(inst.model, inst.policy)
        return solve(inst.model, inst.policy, inst.utilities, operator=op)

    return call


@dataclass(frozen=True)
class BackendRow:
    """One line of the backend table (``None`` where the dense backend did not run).

    Attributes:
        n: number of agents.
        joint_states: ``|S| = 2^n``.
        dense: dense timing, or ``None``.
        matrix_free: matrix-free timing.
        ratio: ``dense.best / matrix_free.best``.
        applications: operator applications of the matrix-free occupancy and value solves.
        gradient_gap: ``max |grad_mf - grad_dense|``.
        gradient_tolerance: its derived bound (:func:`verify.operators.compare_solutions`).
        worst_ratio: largest gap / tolerance over occupancy, local occupancies, team value
            and gradient (above 1 is a disagreement).
        auto: the backend the automatic choice picks.
        predicted_dense_seconds: the cost model's dense prediction.
        predicted_matrix_free_seconds: the cost model's matrix-free prediction.
        occupancy_error_bound: certified l1 error of the matrix-free ``lam_S``.
        value_error_bound: certified inf error of the matrix-free ``Vbar``.
        gradient_norm: Euclidean norm of the matrix-free gradient.
        beta: observation radius.
        seed: root seed.
        spawn_key: ``SeedSequence`` spawn key of the instance.
    """

    n: int
    joint_states: int
    dense: Timing | None
    matrix_free: Timing
    ratio: float | None
    applications: int
    gradient_gap: float | None
    gradient_tolerance: float | None
    worst_ratio: float | None
    auto: str
    predicted_dense_seconds: float
    predicted_matrix_free_seconds: float
    occupancy_error_bound: float
    value_error_bound: float
    gradient_norm: float
    beta: int
    seed: int
    spawn_key: tuple[int, ...]


def run_backends(
    n_min: int, n_max: int, dense_max: int, beta: int, seed: int, repeats: int, stream: bool
) -> list[BackendRow]:
    """Dense vs matrix-free exact gradient for every ring size; rows printed as they finish."""
    rows: list[BackendRow] = []
    if stream:
        print(_header(_BACKEND_COLUMNS), flush=True)
    for n in range(n_min, n_max + 1):
        inst = ring_instance(n, beta, seed)
        dense_cost, mf_cost = predict_backends(inst.model, beta)
        fitting = [c for c in (dense_cost, mf_cost) if c.fits]
        auto = min(fitting, key=lambda c: c.seconds).backend if fitting else "neither"
        try:
            mf_time, mf_sol = _timed(_matrix_free_call(n, beta, seed), repeats)
        except MemoryLimitError as err:
            if stream:
                print(f"n = {n}: matrix-free backend stopped by the memory guard: {err}")
            break
        dense_time: Timing | None = None
        gap = tol = worst = None
        if n <= dense_max and dense_cost.fits:
            dense_time, dense_sol = _timed(_dense_call(n, beta, seed), repeats)
            op = MatrixFreeOperator(inst.model, inst.policy)
            cmp = compare_solutions(dense_sol, mf_sol, op)
            gap, tol = cmp.gradient
            worst = cmp.worst_ratio
        row = BackendRow(
            n=n,
            joint_states=inst.model.states.size,
            dense=dense_time,
            matrix_free=mf_time,
            ratio=None if dense_time is None else dense_time.best / mf_time.best,
            applications=mf_sol.iterations,
            gradient_gap=gap,
            gradient_tolerance=tol,
            worst_ratio=worst,
            auto=auto,
            predicted_dense_seconds=dense_cost.seconds,
            predicted_matrix_free_seconds=mf_cost.seconds,
            occupancy_error_bound=mf_sol.occupancy_error_bound,
            value_error_bound=mf_sol.value_error_bound,
            gradient_norm=mf_sol.gradient_norm,
            beta=beta,
            seed=seed,
            spawn_key=inst.spawn_key,
        )
        rows.append(row)
        if stream:
            print(_format_backend(row), flush=True)
    return rows


@dataclass(frozen=True)
class NaiveRow:
    """One line of the naive-baseline table (``None`` where the naive route was skipped).

    Attributes:
        n: number of agents.
        joint_states: ``|S| = 2^n``.
        fast_seconds: best of the timed dense ``solve`` calls.
        naive_seconds: time of :func:`naive_gradient`, or ``None`` if skipped.
        naive_predicted_seconds: the prediction the skip decision used (``None`` for the
            calibration-free case where nothing was predicted).
        naive_skip_reason: ``None``, ``"budget"`` or ``"memory"``.
        speedup: ``naive_seconds / fast_seconds``.
        max_abs_difference: ``max |grad_fast - grad_naive|`` over all entries.
        tolerance: derived bound on that difference (``gradient_tolerance``).
        beta: observation radius.
        seed: root seed.
        spawn_key: ``SeedSequence`` spawn key of the instance.
    """

    n: int
    joint_states: int
    fast_seconds: float
    naive_seconds: float | None
    naive_predicted_seconds: float | None
    naive_skip_reason: str | None
    speedup: float | None
    max_abs_difference: float | None
    tolerance: float
    beta: int
    seed: int
    spawn_key: tuple[int, ...]


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


def run_naive(
    n_max: int, beta: int, seed: int, budget: float, repeats: int, stream: bool
) -> list[NaiveRow]:
    """Dense backend vs the naive loops for rings of 3..n_max agents, within the budget."""
    rows: list[NaiveRow] = []
    spent = 0.0
    last_n: int | None = None
    last_seconds = 0.0
    if stream:
        print(_header(_NAIVE_COLUMNS), flush=True)
    for n in range(CALIBRATION_AGENTS, n_max + 1):
        try:
            fast, sol = _timed(_dense_call(n, beta, seed), repeats)
        except MemoryLimitError as err:
            if stream:
                print(f"n = {n}: dense backend stopped by the memory guard: {err}", flush=True)
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
        row = NaiveRow(
            n=n,
            joint_states=inst.model.states.size,
            fast_seconds=fast.best,
            naive_seconds=naive_s,
            naive_predicted_seconds=predicted,
            naive_skip_reason=reason,
            speedup=None if naive_s is None else naive_s / fast.best,
            max_abs_difference=diff,
            tolerance=tol,
            beta=beta,
            seed=seed,
            spawn_key=inst.spawn_key,
        )
        rows.append(row)
        if stream:
            print(_format_naive(row), flush=True)
    return rows


# ---------------------------------------------------------------------- output
_BACKEND_COLUMNS = (
    ("n", 3),
    ("|S|", 8),
    ("dense s", 8),
    ("spread", 6),
    ("mf s", 8),
    ("spread", 6),
    ("dense/mf", 8),
    ("applic.", 7),
    ("max |diff|", 10),
    ("tolerance", 9),
    ("dense MiB", 9),
    ("mf MiB", 8),
    ("auto", 11),
)

_NAIVE_COLUMNS = (
    ("n", 3),
    ("|S|", 6),
    ("fast (s)", 9),
    ("naive (s)", 30),
    ("speed-up", 9),
    ("max |diff|", 10),
    ("tolerance", 9),
)


def _header(columns: Sequence[tuple[str, int]]) -> str:
    names = "  ".join(f"{name:>{width}}" for name, width in columns)
    return names + "\n" + "  ".join("-" * width for _, width in columns)


def _row(cells: Sequence[str], columns: Sequence[tuple[str, int]]) -> str:
    return "  ".join(f"{c:>{w}}" for c, (_, w) in zip(cells, columns, strict=True))


def _seconds(value: float | None) -> str:
    """Three significant digits below 100 s, whole seconds above."""
    if value is None:
        return "?"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _format_backend(row: BackendRow) -> str:
    dense = row.dense
    cells = (
        str(row.n),
        str(row.joint_states),
        "-" if dense is None else f"{dense.best:.4f}",
        "-" if dense is None else f"{100 * dense.spread:.0f}%",
        f"{row.matrix_free.best:.4f}",
        f"{100 * row.matrix_free.spread:.0f}%",
        "-" if row.ratio is None else f"{row.ratio:.1f}x",
        str(row.applications),
        "-" if row.gradient_gap is None else f"{row.gradient_gap:.1e}",
        "-" if row.gradient_tolerance is None else f"{row.gradient_tolerance:.1e}",
        "-" if dense is None else f"{dense.peak_mib:.1f}",
        f"{row.matrix_free.peak_mib:.1f}",
        row.auto,
    )
    return _row(cells, _BACKEND_COLUMNS)


def _format_naive(row: NaiveRow) -> str:
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
    )
    return _row(cells, _NAIVE_COLUMNS)


def _backend_disagrees(row: BackendRow) -> bool:
    return row.worst_ratio is not None and row.worst_ratio > 1.0


def _naive_disagrees(row: NaiveRow) -> bool:
    return row.max_abs_difference is not None and row.max_abs_difference > row.tolerance


def _summary(rows: Sequence[BackendRow], naive: Sequence[NaiveRow], repeats: int) -> list[str]:
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "unset")
    lines = [
        f"gamma = {GAMMA}, entropy utilities (eps = {ENTROPY_FLOOR}); best of {repeats} calls per "
        f"backend, spread = (slowest - best) / best; peak = tracemalloc (numpy allocations); "
        f"OPENBLAS_NUM_THREADS = {threads}."
    ]
    by_n = {row.n: row for row in rows}
    ratio_row = by_n.get(RATIO_AGENTS)
    if ratio_row is not None and ratio_row.ratio is not None:
        verdict = "met" if ratio_row.ratio >= RATIO_TARGET else "NOT met"
        lines.append(
            f"target: matrix-free at least {RATIO_TARGET:g}x faster than dense at n = "
            f"{RATIO_AGENTS} -> {ratio_row.ratio:.1f}x ({verdict})"
        )
    for n, seconds in SECONDS_TARGETS:
        row = by_n.get(n)
        if row is not None:
            verdict = "met" if row.matrix_free.best < seconds else "NOT met"
            lines.append(
                f"target: matrix-free at n = {n} in under {seconds:g} s -> "
                f"{row.matrix_free.best:.2f} s ({verdict})"
            )
    bad = [r.n for r in rows if _backend_disagrees(r)]
    if bad:
        lines.append(f"DISAGREEMENT: dense and matrix-free differ beyond tolerance at n = {bad}")
    bad = [r.n for r in naive if _naive_disagrees(r)]
    if bad:
        lines.append(f"DISAGREEMENT: dense and naive differ beyond tolerance at n = {bad}")
    return lines


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Exact grad F on binary rings: dense vs matrix-free backend (and optionally "
        "a naive joint-table implementation), timed in the same run."
    )
    parser.add_argument("--n-min", type=int, default=8, help="smallest ring (>= 3)")
    parser.add_argument("--n-max", type=int, default=20, help="largest ring")
    parser.add_argument("--dense-max", type=int, default=12, help="largest ring for dense")
    parser.add_argument("--beta", type=int, default=1, help="observation radius (>= 0)")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="timed calls (>= 1)")
    parser.add_argument("--seed", type=int, default=0, help="root seed (>= 0)")
    parser.add_argument(
        "--naive-max", type=int, default=0, help="largest ring for the naive baseline (0: none)"
    )
    parser.add_argument(
        "--naive-budget",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="total seconds the naive route may take, predicted before each run",
    )
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 1 if two routes disagree beyond their derived tolerance."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.n_min < 3:
        parser.error(f"--n-min = {args.n_min}, expected at least 3 (a ring)")
    if args.n_max < args.n_min:
        parser.error(f"--n-max = {args.n_max} is below --n-min = {args.n_min}")
    if args.beta < 0:
        parser.error(f"--beta = {args.beta}, expected a non-negative radius")
    if args.repeats < 1:
        parser.error(f"--repeats = {args.repeats}, expected at least 1")
    if args.seed < 0:
        parser.error(f"--seed = {args.seed}, expected a non-negative integer")
    if not args.naive_budget >= 0:
        parser.error(f"--naive-budget = {args.naive_budget}, expected non-negative seconds")
    stream = not args.json
    rows = run_backends(
        args.n_min, args.n_max, args.dense_max, args.beta, args.seed, args.repeats, stream
    )
    naive: list[NaiveRow] = []
    if args.naive_max >= CALIBRATION_AGENTS:
        if stream:
            print()
        naive = run_naive(
            args.naive_max, args.beta, args.seed, args.naive_budget, args.repeats, stream
        )
    if args.json:
        print(json.dumps({"backends": [asdict(r) for r in rows],
                          "naive": [asdict(r) for r in naive]}, indent=2))
    else:
        print("\n".join(_summary(rows, naive, args.repeats)))
    bad = any(_backend_disagrees(r) for r in rows) or any(_naive_disagrees(r) for r in naive)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
