"""Time one exact MA-PPO iteration against a per-context Python-loop baseline.

What is measured
----------------
The script builds ``reference.cooperative.random_game(np.random.default_rng(--seed),
--states, (--actions,) * --agents, 0.9)`` (default 20 states, 5 agents with 3 actions each,
so 243 joint actions) and a starting policy whose conditionals ``pi^m(.|s, a^{0:m-1})`` are
independent Dirichlet(1, ..., 1) rows drawn from ``SeedSequence(--seed, spawn_key=(1,))``,
so no table is constant.  The step size is ``beta_k = tuned_beta(N, log|A|, gamma)``, the
``"sqrt-K"`` schedule's penalty for ``K = 1``.  It then times, in the same process, one
exact MA-PPO iteration, i.e. what ``run_mappo(..., step="exact")`` does per iteration:

* **fast** -- ``mirror_descent_step(policy, evaluate_game(game, policy).localized, beta_k)``:
  one LU solve for ``V`` on the joint-action MDP, one for the occupancy, ``Q = r + gamma P V``,
  the backward recursion ``Q^{0:m-1} = sum_{a^m} pi^m Q^{0:m}`` (``proofs_notes/ma-pdl.md``),
  the local advantages, and the step ``pi^m_{k+1}(.|c) ∝ pi^m_k(.|c) exp(Q^{0:m}(c, .) /
  beta_k)`` with the validation of the new :class:`ConditionalPolicy`.  ``game.tabular`` is
  built once before timing, as it is in ``run_mappo``.
* **loop** -- :func:`loop_iteration` below: the same quantities with Python loops over
  contexts.  For every state and every joint action (``itertools.product`` over the action
  ranges, agent 0 most significant) it multiplies ``pi^m(a^m | s, a^{0:m-1})`` one agent at
  a time and accumulates ``P_pi[s, s']`` and ``r_pi[s]``; ``V = numpy.linalg.solve(I - gamma
  P_pi, r_pi)`` and ``nu = (1 - gamma) numpy.linalg.solve((I - gamma P_pi)^T, rho)``;
  ``Q(s, a) = r(s, a) + gamma sum_{s'} P(s, a, s') V(s')`` by loops; then, for ``m = N-1 ..
  1``, ``Q^{0:m-1}(c, a^{m-1})`` for every context ``c = (s, a^{0:m-2})`` and action by a
  loop over ``a^m``; finally the mirror-descent step context by context with ``math.log`` /
  ``math.exp``.  It skips the local advantages, which the step does not use (this favours
  the baseline).  The game's ``P``, ``r``, ``rho`` and the joint-action tuples are converted
  to Python lists once, before timing (the game is fixed across MA-PPO iterations); the
  policy enters and leaves as one flat list per agent (C order over ``(s, a^{0:m})``), so
  an iteration's output is the next iteration's input without conversion.

Both routes are timed with ``timeit``: the number of calls per measurement comes from
``Timer.autorange`` (at least 0.2 s), and the reported time per iteration is the best of
``--repeat`` measurements.  Before timing, the new conditionals of the two routes are
compared entrywise against :func:`step_tolerance` (a derived forward-error bound; see its
docstring), and so are the visitations ``nu``; the script exits with status 1 if either
difference exceeds its tolerance.  The target is ``loop / fast >= 50``.

Run from the repository root::

    python bench/mappo.py [--agents 5] [--actions 3] [--states 20] [--repeat 15] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import sys
import timeit
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import numpy as np

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # run as a script: import reference/ from this working tree
    sys.path.insert(0, str(_ROOT))

from reference._arrays import FloatArray  # noqa: E402
from reference.cooperative import (  # noqa: E402
    ConditionalPolicy,
    CooperativeMarkovGame,
    evaluate_game,
    mirror_descent_step,
    random_game,
    tuned_beta,
)
from verify.tolerances import EPS, linear_solve_tolerance  # noqa: E402

GAMMA = 0.9
"""Discount of the game."""

RATIO_TARGET = 50.0
"""Performance target: the fast iteration at least 50 times faster than the loop."""


# ---------------------------------------------------------------------- instance
def instance(
    n_states: int, n_agents: int, n_actions: int, seed: int
) -> tuple[CooperativeMarkovGame, ConditionalPolicy]:
    """The seeded game and a policy with Dirichlet(1, ..., 1) conditionals.

    The game draws from ``default_rng(seed)``; the policy from
    ``default_rng(SeedSequence(seed, spawn_key=(1,)))``.
    """
    counts = (n_actions,) * n_agents
    game = random_game(np.random.default_rng(seed), n_states, counts, GAMMA)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
    conds = tuple(
        rng.dirichlet(np.ones(counts[m]), size=(n_states, *counts[:m])) for m in range(n_agents)
    )
    return game, ConditionalPolicy(game, conds)


def fast_iteration(
    game: CooperativeMarkovGame, policy: ConditionalPolicy, beta_k: float
) -> ConditionalPolicy:
    """One exact MA-PPO iteration with the library: evaluate, then the mirror-descent step."""
    values = evaluate_game(game, policy)
    return mirror_descent_step(policy, values.localized, beta_k)


# ---------------------------------------------------------------------- the loop baseline
@dataclass(frozen=True)
class LoopTables:
    """The game as Python lists, built once (the game does not change across iterations).

    Attributes:
        P: ``P[s][a][s']`` with ``a`` the joint-action index (C order, agent 0 first).
        r: ``r[s][a]``.
        rho: ``(nS,)`` array, the right-hand side of the occupancy solve.
        actions: the joint actions ``(a^0, ..., a^{N-1})`` in index order.
        counts: ``(|A^0|, ..., |A^{N-1}|)``.
        gamma: the discount.
    """

    P: list[list[list[float]]]
    r: list[list[float]]
    rho: FloatArray
    actions: list[tuple[int, ...]]
    counts: tuple[int, ...]
    gamma: float

    @classmethod
    def of(cls, game: CooperativeMarkovGame) -> LoopTables:
        mdp = game.tabular
        counts = game.action_counts
        return cls(
            P=mdp.P.tolist(),
            r=mdp.r.tolist(),
            rho=np.array(game.rho),
            actions=list(product(*(range(k) for k in counts))),
            counts=counts,
            gamma=game.gamma,
        )


def loop_iteration(
    tables: LoopTables, conds: list[list[float]], beta_k: float
) -> tuple[list[list[float]], FloatArray]:
    """One exact MA-PPO iteration with Python loops over contexts.

    ``conds[m]`` is ``pi^m`` flattened in C order over ``(s, a^0, ..., a^m)``, so the context
    ``c = (s, a^{0:m-1})`` has flat index ``c`` and its action ``b`` the entry ``c |A^m| + b``.

    Returns:
        the new conditionals in the same flat layout, and the visitation ``nu`` ``(nS,)``.
    """
    P, r, counts, g = tables.P, tables.r, tables.counts, tables.gamma
    n, nS = len(counts), len(P)

    # P_pi[s, s'] = sum_a pi(a|s) P(s, a, s'), r_pi[s] = sum_a pi(a|s) r(s, a), with
    # pi(a|s) = prod_m pi^m(a^m | s, a^{0:m-1}) multiplied one agent at a time.
    P_pi = []
    r_pi = []
    for s in range(nS):
        row = [0.0] * nS
        total = 0.0
        P_s, r_s = P[s], r[s]
        for ai, a in enumerate(tables.actions):
            p = 1.0
            idx = s
            for m in range(n):
                idx = idx * counts[m] + a[m]
                p *= conds[m][idx]
            P_sa = P_s[ai]
            for t in range(nS):
                row[t] += p * P_sa[t]
            total += p * r_s[ai]
        P_pi.append(row)
        r_pi.append(total)
    M = np.eye(nS) - g * np.array(P_pi)
    V = np.linalg.solve(M, np.array(r_pi)).tolist()
    nu = (1 - g) * np.linalg.solve(M.T, tables.rho)

    # Q(s, a) = r(s, a) + gamma sum_{s'} P(s, a, s') V(s'), flat over (s, a): this is
    # Q^{0:N-1} in agent N-1's layout.
    Q = []
    for s in range(nS):
        P_s, r_s = P[s], r[s]
        for ai in range(len(tables.actions)):
            P_sa = P_s[ai]
            acc = 0.0
            for t in range(nS):
                acc += P_sa[t] * V[t]
            Q.append(r_s[ai] + g * acc)

    # Q^{0:m-1}(c, b) = sum_{a^m} pi^m(a^m | c, b) Q^{0:m}(c, b, a^m) for every context c of
    # agent m-1 and action b of agent m-1; (c, b) is agent m's context.
    localized: list[list[float]] = [[] for _ in range(n)]
    localized[n - 1] = Q
    for m in range(n - 1, 0, -1):
        q_next, pi_m, k_m = localized[m], conds[m], counts[m]
        n_ctx = len(q_next) // k_m // counts[m - 1]
        q_prev = [0.0] * (n_ctx * counts[m - 1])
        for c in range(n_ctx):
            for b in range(counts[m - 1]):
                j = c * counts[m - 1] + b
                acc = 0.0
                for a_m in range(k_m):
                    acc += pi_m[j * k_m + a_m] * q_next[j * k_m + a_m]
                q_prev[j] = acc
        localized[m - 1] = q_prev

    # pi^m_{k+1}(.|c) ∝ pi^m_k(.|c) exp(Q^{0:m}(c, .) / beta_k), context by context.
    new = []
    for m in range(n):
        pi_m, q_m, k_m = conds[m], localized[m], counts[m]
        out = [0.0] * len(pi_m)
        for c in range(len(pi_m) // k_m):
            base = c * k_m
            logits = [
                (math.log(pi_m[base + b]) if pi_m[base + b] > 0 else -math.inf)
                + q_m[base + b] / beta_k
                for b in range(k_m)
            ]
            top = max(logits)
            weights = [math.exp(z - top) for z in logits]
            norm = sum(weights)
            for b in range(k_m):
                out[base + b] = weights[b] / norm
        new.append(out)
    return new, nu


# ---------------------------------------------------------------------- agreement
def step_tolerance(game: CooperativeMarkovGame, policy: ConditionalPolicy, beta_k: float) -> float:
    """Bound on ``|pi'_fast - pi'_loop|`` entrywise for the new conditionals ``pi'``.

    Per route, to first order in ``eps`` (Higham 2002 eq. 3.5 for dot products, thm 9.9 for
    the LU solve), with ``V_max = 1/(1-gamma)`` (rewards in ``[0, 1]``),
    ``kappa = (1+gamma)/(1-gamma)`` and ``|A|`` joint actions:

    * ``V``: the LU solve commits ``kappa 2 (nS+2) eps V_max``
      (:func:`linear_solve_tolerance`).  Building ``P_pi`` and ``r_pi`` sums ``|A|`` products
      of ``N + 1`` factors of total mass 1, a relative error ``(|A| + N) eps`` per entry, so
      ``||dM||_inf <= gamma (|A| + N) eps`` and ``|dr_pi| <= (|A| + N) eps``; through
      ``||(I - gamma P_pi)^{-1}||_inf <= 1/(1-gamma)`` they move ``V`` by at most
      ``(gamma V_max + 1) (|A| + N) eps / (1-gamma)``.
    * ``Q = r + gamma P V``: ``gamma e_V + (nS + 2) eps (1 + gamma V_max)``.
    * ``Q^{0:m}``: averages of ``Q`` under ``pi^{m+1..N-1}`` do not amplify ``e_Q``; each of
      the ``N - 1`` levels rounds ``(max_m |A^m| + 2) eps V_max``.
    * logits ``z = log pi + Q^{0:m} / beta_k``: ``e_z = e_loc / beta_k`` plus one rounding of
      each term, ``eps (max |log pi| + V_max / beta_k)`` (``log`` is correctly rounded to
      within one ulp in both routes).
    * softmax: ``dp_i = p_i (dz_i - sum_j p_j dz_j)``, so ``|dp| <= 2 e_z``; ``exp`` of an
      argument ``z - max z`` of size at most ``osc z`` has relative error
      ``eps (osc z + 1)``, and the normalisation adds ``(|A^m| + 1) eps``.

    The two routes are within the sum of their bounds (``verify.tolerances.certified``), so
    the result is twice the per-route bound.
    """
    n, nS, g = game.n_agents, game.n_states, game.gamma
    v_max = 1.0 / (1.0 - g)
    k_max = max(game.action_counts)
    joint = game.n_joint_actions
    e_v = linear_solve_tolerance(nS, g, v_max) + (g * v_max + 1) * (joint + n) * EPS / (1 - g)
    e_q = g * e_v + (nS + 2) * EPS * (1 + g * v_max)
    e_loc = e_q + (n - 1) * (k_max + 2) * EPS * v_max
    with np.errstate(divide="ignore"):
        log_max = max(float(np.max(-np.log(c))) for c in policy.conditionals)
    e_z = e_loc / beta_k + EPS * (log_max + v_max / beta_k)
    osc = log_max + v_max / beta_k
    e_p = 2 * e_z + EPS * (osc + 1) * 2 + (k_max + 1) * EPS
    return 2.0 * e_p


def nu_tolerance(game: CooperativeMarkovGame) -> float:
    """Bound on ``|nu_fast - nu_loop|`` entrywise: per route, the LU solve on ``nu`` (scale 1)
    plus the ``P_pi`` build's ``||dM||_inf <= gamma (|A| + N) eps`` through
    ``||(I - gamma P_pi^T)^{-1}||_1 <= 1/(1-gamma)`` on ``lam_S`` of mass ``1/(1-gamma)``,
    times ``1-gamma``; twice that for two routes."""
    g = game.gamma
    build = g * (game.n_joint_actions + game.n_agents) * EPS / (1 - g)
    return 2.0 * (linear_solve_tolerance(game.n_states, g, 1.0) + build)


# ---------------------------------------------------------------------- timing
def best_seconds(routine: Callable[[], object], repeat: int) -> float:
    """Best time per call over ``repeat`` measurements of ``Timer.autorange`` calls each."""
    timer = timeit.Timer(routine)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=repeat, number=number)) / number


@dataclass(frozen=True)
class Result:
    """One measurement.

    Attributes:
        fast_seconds, loop_seconds: best time of one iteration.
        ratio: ``loop_seconds / fast_seconds``.
        max_abs_difference, tolerance: the new conditionals of the two routes.
        nu_difference, nu_tolerance: the visitations of the two routes.
    """

    fast_seconds: float
    loop_seconds: float
    ratio: float
    max_abs_difference: float
    tolerance: float
    nu_difference: float
    nu_tolerance: float

    @property
    def agrees(self) -> bool:
        return self.max_abs_difference <= self.tolerance and self.nu_difference <= self.nu_tolerance


def measure(
    game: CooperativeMarkovGame, policy: ConditionalPolicy, beta_k: float, repeat: int
) -> Result:
    """Check that the two routes agree, then time both."""
    tables = LoopTables.of(game)  # also builds game.tabular, cached as in run_mappo
    flat = [c.reshape(-1).tolist() for c in policy.conditionals]
    fast_new = fast_iteration(game, policy, beta_k)
    fast_nu = evaluate_game(game, policy).nu
    loop_new, loop_nu = loop_iteration(tables, flat, beta_k)
    diff = max(
        float(np.max(np.abs(f - np.array(q).reshape(f.shape))))
        for f, q in zip(fast_new.conditionals, loop_new, strict=True)
    )
    fast_s = best_seconds(lambda: fast_iteration(game, policy, beta_k), repeat)
    loop_s = best_seconds(lambda: loop_iteration(tables, flat, beta_k), repeat)
    return Result(
        fast_seconds=fast_s,
        loop_seconds=loop_s,
        ratio=loop_s / fast_s,
        max_abs_difference=diff,
        tolerance=step_tolerance(game, policy, beta_k),
        nu_difference=float(np.max(np.abs(fast_nu - loop_nu))),
        nu_tolerance=nu_tolerance(game),
    )


# ---------------------------------------------------------------------- output
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="One exact MA-PPO iteration: evaluate_game + mirror_descent_step vs a "
        "per-context Python-loop implementation, timed in the same run."
    )
    parser.add_argument("--agents", type=int, default=5, help="number of agents N (>= 1)")
    parser.add_argument("--actions", type=int, default=3, help="actions per agent (>= 2)")
    parser.add_argument("--states", type=int, default=20, help="number of states (>= 1)")
    parser.add_argument("--repeat", type=int, default=15, help="timeit repeats; best is kept")
    parser.add_argument("--seed", type=int, default=0, help="root seed (>= 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 1 if the two routes disagree beyond the derived tolerances."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.agents < 1:
        parser.error(f"--agents = {args.agents}, expected at least 1")
    if args.actions < 2:
        parser.error(f"--actions = {args.actions}, expected at least 2 (a step needs a choice)")
    if args.states < 1:
        parser.error(f"--states = {args.states}, expected at least 1")
    if args.repeat < 1:
        parser.error(f"--repeat = {args.repeat}, expected at least 1")
    if args.seed < 0:
        parser.error(f"--seed = {args.seed}, expected a non-negative integer")
    game, policy = instance(args.states, args.agents, args.actions, args.seed)
    beta_k = tuned_beta(game.n_agents, game.log_action_count, game.gamma)
    res = measure(game, policy, beta_k, args.repeat)
    print(
        f"N = {game.n_agents} agents x {args.actions} actions (|A| = {game.n_joint_actions}), "
        f"|S| = {game.n_states}, gamma = {GAMMA}, beta_k = {beta_k:.4g}, seed = {args.seed}"
    )
    print(f"fast (evaluate_game + mirror_descent_step): {res.fast_seconds * 1e3:9.3f} ms")
    print(f"loop (per-context Python loops):            {res.loop_seconds * 1e3:9.3f} ms")
    print(
        f"max |diff| pi': {res.max_abs_difference:.1e} (tolerance {res.tolerance:.1e}); "
        f"nu: {res.nu_difference:.1e} (tolerance {res.nu_tolerance:.1e})"
    )
    verdict = "met" if res.ratio >= RATIO_TARGET else "NOT met"
    print(
        f"one exact MA-PPO iteration: fast {res.fast_seconds * 1e3:.3f} ms, loop "
        f"{res.loop_seconds * 1e3:.1f} ms, loop/fast = {res.ratio:.1f}x "
        f"(target >= {RATIO_TARGET:g}x: {verdict}; best of {args.repeat})"
    )
    if not res.agrees:
        print("DISAGREEMENT: the two routes differ beyond the derived tolerance")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
