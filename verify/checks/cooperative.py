"""Conformance checks for cooperative-game quantities (SPEC section 5, Zhao et al. 2023):
localized Q-functions, the exact MA-PPO mirror-descent step and the joint importance ratio.

User callables take and return plain numpy arrays.  Agents are 0-based; the game is passed as
``P[s, a^0, ..., a^{N-1}, s']`` and ``r[s, a^0, ..., a^{N-1}]`` (joint actions flatten with
agent 0 most significant, C order) and a sequential policy as the tuple of its conditionals
``pi^m(a^m | s, a^{0:m-1})``, ``conditionals[m]`` of shape ``(nS, |A^0|, ..., |A^m|)`` with
its last axis a distribution.  Inputs are fresh copies, so a callable that writes to them
cannot corrupt the oracle.  Instances have heterogeneous action counts and up to three agents
(:func:`verify.strategies.cooperative_games`, :func:`verify.strategies.conditional_policies`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from reference._arrays import FloatArray, IntArray
from reference.cooperative.exact import evaluate_game
from reference.cooperative.game import CooperativeMarkovGame, random_game
from reference.cooperative.mappo import mirror_descent_step
from reference.cooperative.policy import ConditionalPolicy
from verify import strategies as vst
from verify.checks._core import (
    Case,
    CaseFailure,
    CaseResult,
    CheckReport,
    guard,
    run_check,
    user_array,
)
from verify.tolerances import EPS, linear_solve_tolerance, summation_tolerance

__all__ = [
    "BETA_RANGE",
    "FULL_SUPPORT",
    "MAX_BATCH",
    "check_joint_ratio",
    "check_localized_q",
    "check_mappo_step",
    "localized_q_tolerance",
    "ratio_relative_tolerance",
    "step_relative_tolerance",
]

FULL_SUPPORT = 0.05
"""Every action of the policies handed to the step and ratio checks has probability at least
this (the conditionals are mixed with the uniform one), so logs and ratios are finite."""

BETA_RANGE = (0.1, 10.0)
"""``beta_k`` of the step check is drawn from this interval (both ends included)."""

MAX_BATCH = 16
"""The ratio check's batches have between 1 and this many ``(s, a)`` pairs."""


# --------------------------------------------------------------------------- instances


@dataclass(frozen=True)
class _Problem:
    """A game, a policy on it and what the individual checks need besides.

    ``other`` is the second policy of the ratio check (``pi_new``), ``beta_k`` the step's
    penalty, ``states``/``actions`` the ratio check's batch; unused fields are ``None``."""

    game: CooperativeMarkovGame
    policy: ConditionalPolicy
    other: ConditionalPolicy | None = None
    beta_k: float | None = None
    states: IntArray | None = None
    actions: IntArray | None = None


@st.composite
def _plain_instances(
    draw: st.DrawFn,
    max_agents: int,
    max_actions: int,
    max_states: int,
    max_gamma: float,
    n_policies: int,
    min_prob: float,
) -> tuple[CooperativeMarkovGame, tuple[ConditionalPolicy, ...]]:
    game = draw(vst.cooperative_games(max_agents, max_actions, max_states, max_gamma))
    pols = tuple(draw(vst.conditional_policies(game, min_prob)) for _ in range(n_policies))
    return game, pols


@st.composite
def _interacting_instances(
    draw: st.DrawFn,
    max_agents: int,
    max_actions: int,
    max_states: int,
    max_gamma: float,
    n_policies: int,
    min_prob: float,
) -> tuple[CooperativeMarkovGame, tuple[ConditionalPolicy, ...]]:
    """Instances in which the agents interact: ``N >= 2`` agents with ``>= 2`` actions each,
    ``gamma`` in ``[max_gamma / 2, max_gamma]``, Dirichlet kernel rows, rewards and
    conditionals (:func:`reference.cooperative.random_game`, concentration drawn in
    ``[0.3, 1]``) from a seed drawn as data, so that neither the joint solve (vacuous at
    ``gamma = 0``) nor the agents' order and conditioning (invisible with one agent, single
    actions or uniform conditionals) drop out.  Conditionals are mixed with the uniform one
    so that every probability is at least ``min_prob``."""
    n = draw(st.integers(2, max_agents))
    counts = tuple(draw(st.integers(2, max_actions)) for _ in range(n))
    n_s = draw(st.integers(1, max_states))
    gamma = draw(st.floats(max_gamma / 2, max_gamma))
    concentration = draw(st.floats(0.3, 1.0))
    rng = np.random.default_rng(draw(vst.seeds()))
    game = random_game(rng, n_s, counts, gamma, concentration, name="interacting")
    pols = []
    for _ in range(n_policies):
        conds = []
        for m, k in enumerate(counts):
            c = rng.dirichlet(np.full(k, concentration), size=(n_s, *counts[:m]))
            mix = min(1.0, min_prob * k)
            conds.append((1 - mix) * c + mix / k)
        pols.append(ConditionalPolicy(game, tuple(conds)))
    return game, tuple(pols)


def _instances(
    max_agents: int,
    max_actions: int,
    max_states: int,
    max_gamma: float,
    n_policies: int,
    min_prob: float,
) -> st.SearchStrategy[tuple[CooperativeMarkovGame, tuple[ConditionalPolicy, ...]]]:
    """A game and ``n_policies`` conditional policies on it: from
    :func:`verify.strategies.cooperative_games` and :func:`verify.strategies.conditional_policies`
    (edge cases: one agent, one action, ``gamma = 0``, deterministic rows) or, about half the
    time, from :func:`_interacting_instances`."""
    args = (max_agents, max_actions, max_states, max_gamma, n_policies, min_prob)
    plain = _plain_instances(*args)
    if max_agents < 2 or max_actions < 2:
        return plain
    return st.one_of(plain, _interacting_instances(*args))


@st.composite
def _q_problems(
    draw: st.DrawFn, max_agents: int, max_actions: int, max_states: int, max_gamma: float
) -> _Problem:
    game, (policy,) = draw(_instances(max_agents, max_actions, max_states, max_gamma, 1, 0.0))
    return _Problem(game, policy)


@st.composite
def _step_problems(
    draw: st.DrawFn, max_agents: int, max_actions: int, max_states: int, max_gamma: float
) -> _Problem:
    game, (policy,) = draw(
        _instances(max_agents, max_actions, max_states, max_gamma, 1, FULL_SUPPORT)
    )
    beta_k = draw(
        st.one_of(
            st.just(BETA_RANGE[0]),
            st.floats(*BETA_RANGE, allow_nan=False),
            st.just(BETA_RANGE[1]),
        )
    )
    return _Problem(game, policy, beta_k=beta_k)


@st.composite
def _ratio_problems(
    draw: st.DrawFn, max_agents: int, max_actions: int, max_states: int
) -> _Problem:
    game, (old, new) = draw(_instances(max_agents, max_actions, max_states, 0.9, 2, FULL_SUPPORT))
    b = draw(st.integers(1, MAX_BATCH))
    states = draw(hnp.arrays(np.int64, (b,), elements=st.integers(0, game.n_states - 1)))
    columns = [
        draw(hnp.arrays(np.int64, (b,), elements=st.integers(0, k - 1)))
        for k in game.action_counts
    ]
    actions = np.stack(columns, axis=1).astype(np.int64)
    return _Problem(game, old, other=new, states=states, actions=actions)


def _to_arrays(p: _Problem) -> Mapping[str, npt.NDArray[Any]]:
    g = p.game
    out: dict[str, npt.NDArray[Any]] = {
        "P": g.P, "r": g.r, "rho": g.rho, "gamma": np.array(g.gamma)
    }
    for m, c in enumerate(p.policy.conditionals):
        out[f"pi{m}"] = c
    if p.other is not None:
        for m, c in enumerate(p.other.conditionals):
            out[f"new{m}"] = c
    if p.beta_k is not None:
        out["beta_k"] = np.array(p.beta_k)
    if p.states is not None and p.actions is not None:
        out["states"] = p.states
        out["actions"] = p.actions
    return out


def _from_arrays(a: Mapping[str, npt.NDArray[Any]]) -> _Problem:
    game = CooperativeMarkovGame(a["P"], a["r"], a["rho"], float(a["gamma"]))
    n = game.n_agents
    policy = ConditionalPolicy(game, tuple(np.array(a[f"pi{m}"]) for m in range(n)))
    other = (
        ConditionalPolicy(game, tuple(np.array(a[f"new{m}"]) for m in range(n)))
        if "new0" in a
        else None
    )
    beta_k = float(a["beta_k"]) if "beta_k" in a else None
    states = np.array(a["states"], dtype=np.int64) if "states" in a else None
    actions = np.array(a["actions"], dtype=np.int64) if "actions" in a else None
    return _Problem(game, policy, other, beta_k, states, actions)


# --------------------------------------------------------------------------- helpers


class _BadOutput(CaseFailure):
    """The callable returned something of the wrong kind or shape (fails the case)."""


def _copies(arrays: Sequence[FloatArray]) -> tuple[FloatArray, ...]:
    return tuple(np.array(c, dtype=np.float64, copy=True) for c in arrays)


def _user_arrays(
    out: object, shapes: Sequence[tuple[int, ...]], what: str
) -> tuple[FloatArray, ...]:
    """Validate a per-agent tuple of arrays: one per agent, agent ``m``'s of ``shapes[m]``."""
    n = len(shapes)
    if isinstance(out, np.ndarray) or not isinstance(out, Sequence):
        raise _BadOutput(
            f"the callable returned {type(out).__name__}, expected a tuple of {n} arrays "
            f"({what}, one per agent)"
        )
    if len(out) != n:
        raise _BadOutput(
            f"the callable returned {len(out)} arrays, expected {n} ({what}, one per agent)"
        )
    arrays = []
    for m, (x, shape) in enumerate(zip(out, shapes, strict=True)):
        arr = user_array(x)
        if arr.shape != shape:
            raise _BadOutput(
                f"the callable's array {m} ({what} of agent {m}) has shape {arr.shape}, "
                f"expected {shape}"
            )
        arrays.append(arr)
    return tuple(arrays)


def _label(idx: tuple[int, ...]) -> str:
    """``(s, a^0, ..., a^m)`` as ``"s=1, a0=0, a1=2"``."""
    return ", ".join([f"s={idx[0]}", *(f"a{j}={v}" for j, v in enumerate(idx[1:]))])


def _not_finite(got: FloatArray, name: str) -> CaseResult | None:
    if np.all(np.isfinite(got)):
        return None
    idx = tuple(int(i) for i in np.argwhere(~np.isfinite(got))[0])
    return CaseResult(math.inf, 0.0, f"{name}[{_label(idx)}] = {got[idx]!r} is not finite")


def _worst_relative(
    got: Sequence[FloatArray],
    want: Sequence[FloatArray],
    tol: Sequence[FloatArray],
    names: Sequence[str],
) -> CaseResult:
    """The entry with the largest ``|got - want| / tol`` over every agent's array."""
    best: CaseResult | None = None
    for g, w, t, name in zip(got, want, tol, names, strict=True):
        bad = _not_finite(g, name)
        if bad is not None:
            return bad
        diff = np.abs(g - w)
        ratio = np.where(t > 0, diff / np.where(t > 0, t, 1.0), np.where(diff > 0, np.inf, 0.0))
        idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(ratio)), ratio.shape))
        res = CaseResult(
            float(diff[idx]),
            float(t[idx]),
            f"{name}[{_label(idx)}] = {g[idx]:.6g}, oracle {w[idx]:.6g}",
        )
        if best is None or res.ratio > best.ratio:
            best = res
    assert best is not None  # a game has at least one agent
    return best


def _guarded(evaluate: Callable[[_Problem], CaseResult]) -> Callable[[_Problem, int], CaseResult]:
    """Turn a :class:`_BadOutput` into a failed case whose location is its message."""

    def run(p: _Problem, index: int) -> CaseResult:
        try:
            return evaluate(p)
        except _BadOutput as exc:
            return CaseResult(math.inf, 0.0, str(exc))

    return run


def localized_q_tolerance(game: CooperativeMarkovGame) -> float:
    """The oracle's rounding on ``Q^{0:m}``: one LU solve of the joint system
    (:func:`verify.tolerances.linear_solve_tolerance` at ``n = nS |A|`` and the scale
    ``||Q||_inf <= 1/(1-gamma)``, rewards being in ``[0, 1]``) plus the marginalisation, a sum
    of at most ``|A|`` weighted terms of that scale
    (:func:`verify.tolerances.summation_tolerance`)."""
    scale = 1.0 / (1.0 - game.gamma)
    n = game.n_states * game.n_joint_actions
    return linear_solve_tolerance(n, game.gamma, scale) + summation_tolerance(
        game.n_joint_actions, scale
    )


def step_relative_tolerance(n_actions: int, logit_scale: float) -> float:
    """Relative rounding of one softmax ``p e^{q/beta} / Z`` over ``n_actions`` entries whose
    logits ``log p + q/beta`` are at most ``logit_scale`` in magnitude, by any of the usual
    routes (log-sum-exp or direct products): forming and shifting a logit commits an absolute
    error of a few ``eps |logit|``, which ``exp`` turns into a relative one; the normaliser is a
    sum of ``n_actions`` positive terms (relative ``n_actions eps``); the products and the
    division one ``eps`` each.  Bound: ``(2 n_actions + 4) eps (1 + logit_scale)``."""
    return (2 * max(int(n_actions), 1) + 4) * EPS * (1.0 + float(logit_scale))


def ratio_relative_tolerance(n_agents: int, log_scale: float) -> float:
    """Relative rounding of the joint ratio, a product of ``2N`` factors (each conditional at
    least ``exp(-log_scale)``): ``2N`` roundings of ``eps`` by direct products and divisions,
    or, through logs, an absolute error of at most ``2N eps`` times the sum of ``2N`` logs of
    magnitude ``<= log_scale`` in the exponent.  Bound: ``(2N + 2) eps (1 + 2N log_scale)``."""
    n = max(int(n_agents), 1)
    return (2 * n + 2) * EPS * (1.0 + 2 * n * float(log_scale))


# --------------------------------------------------------------------------- localized Q


LocalizedQFn = Callable[
    [FloatArray, FloatArray, float, tuple[FloatArray, ...]], Sequence[npt.ArrayLike]
]


def check_localized_q(
    fn: LocalizedQFn,
    *,
    atol: float | None = None,
    cases: int = 50,
    seed: int = 0,
    max_agents: int = 3,
    max_actions: int = 3,
    max_states: int = 3,
    max_gamma: float = 0.9,
    replay: Case | None = None,
) -> CheckReport:
    """Check ``fn(P, r, gamma, conditionals) -> (Q^{0:0}, ..., Q^{0:N-1})`` against the exact
    localized Q-functions of the sequential policy (SPEC section 5;
    ``proofs_notes/ma-pdl.md#localized-q``)::

        Q^{0:N-1} = Q_pi = r + gamma P V_pi,
        Q^{0:m-1}(s, a^{0:m-1}) = sum_{a^m} pi^m(a^m | s, a^{0:m-1}) Q^{0:m}(s, a^{0:m}).

    Arguments of ``fn``: ``P`` ``(nS, |A^0|, ..., |A^{N-1}|, nS)``, ``r`` ``(nS, |A^0|, ...,
    |A^{N-1}|)`` in ``[0, 1]``, ``gamma`` a float, ``conditionals`` a tuple of ``N`` arrays,
    ``conditionals[m]`` of shape ``(nS, |A^0|, ..., |A^m|)``.  It returns a sequence of ``N``
    arrays, the ``m``-th shaped like ``conditionals[m]``; another count or shape fails the case.

    Oracle: :func:`reference.cooperative.evaluate_game` (one LU solve, backward recursion).
    Tolerance: :func:`localized_q_tolerance` for the oracle plus, for the callable, the same
    again, or ``atol`` when given."""
    fn = guard(fn)

    def evaluate_case(p: _Problem) -> CaseResult:
        g = p.game
        want = evaluate_game(g, p.policy).localized
        out = fn(g.P.copy(), g.r.copy(), g.gamma, _copies(p.policy.conditionals))
        got = _user_arrays(out, [c.shape for c in p.policy.conditionals], "Q^{0:m}")
        ours = localized_q_tolerance(g)
        tol = ours + (ours if atol is None else float(atol))
        return _worst_relative(
            got,
            want,
            [np.full(w.shape, tol) for w in want],
            [f"Q^{{0:{m}}}" for m in range(g.n_agents)],
        )

    return run_check(
        "localized-q",
        "SPEC section 5 localized Q: Q^{0:m-1} = sum_{a^m} pi^m Q^{0:m}, Q^{0:N-1} = Q_pi; "
        "proofs_notes/ma-pdl.md#localized-q",
        _q_problems(max_agents, max_actions, max_states, max_gamma),
        _to_arrays,
        _from_arrays,
        _guarded(evaluate_case),
        cases=cases,
        seed=seed,
        replay=replay,
    )


# --------------------------------------------------------------------------- MA-PPO step


MappoStepFn = Callable[
    [tuple[FloatArray, ...], tuple[FloatArray, ...], float], Sequence[npt.ArrayLike]
]


def check_mappo_step(
    fn: MappoStepFn,
    *,
    atol: float | None = None,
    cases: int = 50,
    seed: int = 0,
    max_agents: int = 3,
    max_actions: int = 3,
    max_states: int = 3,
    max_gamma: float = 0.9,
    replay: Case | None = None,
) -> CheckReport:
    """Check ``fn(conditionals, localized_q, beta_k) -> new conditionals`` against the ideal
    MA-PPO step (SPEC section 5, KL-regularised mirror descent per agent, every agent using the
    localized Q of the *old* policy ``pi_k``)::

        pi^m_{k+1}(a^m | c) ∝ pi^m_k(a^m | c) exp(Q^{0:m}_{pi_k}(c, a^m) / beta_k),
        c = (s, a^{0:m-1}).

    Arguments of ``fn``: ``conditionals`` the tuple of ``N`` arrays of ``pi_k``,
    ``conditionals[m]`` of shape ``(nS, |A^0|, ..., |A^m|)``, every probability at least
    :data:`FULL_SUPPORT` (mixed with the uniform conditional, so every log is finite);
    ``localized_q`` the tuple of the exact ``Q^{0:m}_{pi_k}``, shaped like ``conditionals``
    (computed by the check with :func:`reference.cooperative.evaluate_game`); ``beta_k`` a
    float in :data:`BETA_RANGE`.  It returns ``N`` arrays shaped like ``conditionals``.

    Oracle: :func:`reference.cooperative.mirror_descent_step`.  Entrywise tolerance, relative
    to the oracle's probability: :func:`step_relative_tolerance` at the case's largest action
    count and logit scale ``max |log pi_k| + max |Q| / beta_k`` for the oracle and the same
    again for the callable, or the oracle's plus ``atol`` when given."""
    fn = guard(fn)

    def evaluate_case(p: _Problem) -> CaseResult:
        g, pol = p.game, p.policy
        assert p.beta_k is not None  # built by _step_problems
        beta_k = p.beta_k
        q = evaluate_game(g, pol).localized
        want = mirror_descent_step(pol, q, beta_k).conditionals
        out = fn(_copies(pol.conditionals), _copies(q), beta_k)
        got = _user_arrays(out, [c.shape for c in pol.conditionals], "pi^m_{k+1}")
        logit_scale = max(float(np.max(np.abs(np.log(c)))) for c in pol.conditionals) + max(
            float(np.max(np.abs(x))) for x in q
        ) / beta_k
        rel = step_relative_tolerance(max(g.action_counts), logit_scale)
        tol = [
            rel * w + (rel * w if atol is None else float(atol)) for w in want
        ]
        return _worst_relative(
            got, want, tol, [f"pi^{m}_{{k+1}}" for m in range(g.n_agents)]
        )

    return run_check(
        "mappo-step",
        "SPEC section 5 MA-PPO ideal step: pi^m_{k+1} ∝ pi^m_k exp(Q^{0:m}_{pi_k} / beta_k)",
        _step_problems(max_agents, max_actions, max_states, max_gamma),
        _to_arrays,
        _from_arrays,
        _guarded(evaluate_case),
        cases=cases,
        seed=seed,
        replay=replay,
    )


# --------------------------------------------------------------------------- joint ratio


JointRatioFn = Callable[
    [tuple[FloatArray, ...], tuple[FloatArray, ...], IntArray, IntArray], npt.ArrayLike
]


def check_joint_ratio(
    fn: JointRatioFn,
    *,
    atol: float | None = None,
    cases: int = 50,
    seed: int = 0,
    max_agents: int = 3,
    max_actions: int = 3,
    max_states: int = 3,
    replay: Case | None = None,
) -> CheckReport:
    """Check ``fn(new_conditionals, old_conditionals, states, actions) -> ratios``, the joint
    importance ratio of the clipped MAPPO/HAPPO objectives (SPEC section 5's sequential
    factorisation ``pi(a|s) = prod_m pi^m(a^m | s, a^{0:m-1})``)::

        ratio[b] = pi_new(a_b | s_b) / pi_old(a_b | s_b)
                 = prod_m pi_new^m(a_b^m | s_b, a_b^{0:m-1}) / pi_old^m(a_b^m | s_b, a_b^{0:m-1}).

    Arguments of ``fn``: ``new_conditionals`` and ``old_conditionals`` tuples of ``N`` arrays,
    the ``m``-th of shape ``(nS, |A^0|, ..., |A^m|)``, every probability at least
    :data:`FULL_SUPPORT`; ``states`` int64 ``(B,)``;
    ``actions`` int64 ``(B, N)``, ``actions[b, m]`` agent ``m``'s action.  It returns ``(B,)``.

    Oracle: the joint policies ``pi(s, a^0, ..., a^{N-1})``
    (:meth:`reference.cooperative.ConditionalPolicy.joint`) indexed at ``(s_b, a_b)`` and
    divided.  Entrywise tolerance, relative to the oracle's ratio:
    :func:`ratio_relative_tolerance` at the case's largest ``|log pi^m|`` for the oracle and the
    same again for the callable, or the oracle's plus ``atol`` when given."""
    fn = guard(fn)

    def evaluate_case(p: _Problem) -> CaseResult:
        g, old, new = p.game, p.policy, p.other
        states, actions = p.states, p.actions
        assert new is not None and states is not None and actions is not None
        index = (states, *(actions[:, m] for m in range(g.n_agents)))
        want = new.joint()[index] / old.joint()[index]
        out = fn(
            _copies(new.conditionals), _copies(old.conditionals), states.copy(), actions.copy()
        )
        got = user_array(out)
        if got.shape != want.shape:
            raise _BadOutput(f"the callable returned shape {got.shape}, expected {want.shape}")
        log_scale = max(
            float(np.max(np.abs(np.log(c)))) for c in (*old.conditionals, *new.conditionals)
        )
        rel = ratio_relative_tolerance(g.n_agents, log_scale)
        tol = rel * want + (rel * want if atol is None else float(atol))
        if not np.all(np.isfinite(got)):
            b = int(np.argwhere(~np.isfinite(got))[0][0])
            return CaseResult(math.inf, 0.0, f"ratio[b={b}] = {got[b]!r} is not finite")
        diff = np.abs(got - want)
        b = int(np.argmax(diff / tol))
        at = f"s={int(states[b])}, a={tuple(int(x) for x in actions[b])}"
        return CaseResult(
            float(diff[b]),
            float(tol[b]),
            f"ratio[b={b}] ({at}) = {got[b]:.6g}, oracle {want[b]:.6g}",
        )

    return run_check(
        "joint-ratio",
        "SPEC section 5 sequential policy: pi(a|s) = prod_m pi^m(a^m | s, a^{0:m-1}); "
        "ratio = pi_new(a|s) / pi_old(a|s)",
        _ratio_problems(max_agents, max_actions, max_states),
        _to_arrays,
        _from_arrays,
        _guarded(evaluate_case),
        cases=cases,
        seed=seed,
        replay=replay,
    )
