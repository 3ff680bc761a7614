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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from reference._arrays import FloatArray, IntArray
from reference.cooperative.exact import evaluate_game
from reference.cooperative.game import CooperativeMarkovGame, random_game
from reference.cooperative.mappo import mirror_descent_step
from reference.cooperative.policy import ConditionalPolicy
from verify.checks._core import (
    Alternative,
    Case,
    CaseFailure,
    CheckArgumentError,
    CheckReport,
    Compared,
    Declaration,
    UserIO,
    guard,
    known_alternatives,
    ladder_count,
    run_check,
)
from verify.tolerances import EPS, linear_solve_tolerance, summation_tolerance

__all__ = [
    "BETA_RANGE",
    "FULL_SUPPORT",
    "MAX_BATCH",
    "RATIO_INPUTS",
    "check_agent_ratios",
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


def _limits(**values: object) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CheckArgumentError(f"{name} = {value!r}, expected an integer >= 1")


def _instance(
    rng: np.random.Generator,
    size: float,
    max_agents: int,
    max_actions: int,
    max_states: int,
    max_gamma: float,
    n_policies: int,
    min_prob: float,
) -> tuple[CooperativeMarkovGame, tuple[ConditionalPolicy, ...]]:
    """A game and ``n_policies`` conditional policies on it, at ``size`` of the limits.

    One case in four is an edge case drawn on the whole ladder (``N``, action counts and
    ``nS`` from 1, ``gamma = 0`` one time in three, Dirichlet concentration down to 0.05 so
    near-deterministic rows occur); the others have ``N >= 2`` agents with ``>= 2`` actions
    each (where the agents' order and conditioning matter), ``gamma`` in ``[max_gamma / 2,
    max_gamma]`` and concentration in ``[0.3, 1]``.  Kernels, rewards (in ``[0, 1]``) and
    conditionals come from :func:`reference.cooperative.random_game` and Dirichlet rows;
    conditionals are mixed with the uniform one so that every probability is at least
    ``min_prob``."""
    edge = rng.random() < 0.25 or max_agents < 2 or max_actions < 2
    low = 1 if edge else 2
    n = ladder_count(rng, size, max_agents, min(low, max_agents))
    counts = tuple(ladder_count(rng, size, max_actions, min(low, max_actions))
                   for _ in range(n))
    n_s = ladder_count(rng, size, max_states)
    if edge:
        gamma = 0.0 if rng.random() < 1 / 3 else float(rng.uniform(0.0, max_gamma))
        concentration = float(rng.uniform(0.05, 1.0))
    else:
        gamma = float(rng.uniform(max_gamma / 2, max_gamma))
        concentration = float(rng.uniform(0.3, 1.0))
    game = random_game(rng, n_s, counts, gamma, concentration, name="generated")
    pols = []
    for _ in range(n_policies):
        conds = []
        for m, k in enumerate(counts):
            c = rng.dirichlet(np.full(k, concentration), size=(n_s, *counts[:m]))
            mix = min(1.0, min_prob * k)
            conds.append((1 - mix) * c + mix / k)
        pols.append(ConditionalPolicy(game, tuple(conds)))
    return game, tuple(pols)


def _q_problem(rng: np.random.Generator, size: float, max_agents: int, max_actions: int,
               max_states: int, max_gamma: float) -> _Problem:
    game, (policy,) = _instance(rng, size, max_agents, max_actions, max_states, max_gamma,
                                1, 0.0)
    return _Problem(game, policy)


def _step_problem(rng: np.random.Generator, size: float, max_agents: int, max_actions: int,
                  max_states: int, max_gamma: float) -> _Problem:
    game, (policy,) = _instance(rng, size, max_agents, max_actions, max_states, max_gamma,
                                1, FULL_SUPPORT)
    u = rng.random()
    beta_k = BETA_RANGE[0] if u < 0.1 else BETA_RANGE[1] if u < 0.2 else float(
        rng.uniform(*BETA_RANGE))
    return _Problem(game, policy, beta_k=beta_k)


def _ratio_problem(rng: np.random.Generator, size: float, max_agents: int, max_actions: int,
                   max_states: int) -> _Problem:
    game, (old, new) = _instance(rng, size, max_agents, max_actions, max_states, 0.9, 2,
                                 FULL_SUPPORT)
    b = ladder_count(rng, size, MAX_BATCH)
    states = rng.integers(0, game.n_states, b).astype(np.int64)
    actions = np.stack([rng.integers(0, k, b) for k in game.action_counts],
                       axis=1).astype(np.int64)
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


def _copies(io: UserIO, arrays: Sequence[FloatArray]) -> tuple[Any, ...]:
    return tuple(io.arg(c) for c in arrays)


def _user_arrays(
    io: UserIO, out: object, shapes: Sequence[tuple[int, ...]], what: str
) -> tuple[FloatArray, ...]:
    """Validate a per-agent tuple of arrays: one per agent, agent ``m``'s of ``shapes[m]``."""
    n = len(shapes)
    if isinstance(out, np.ndarray) or not isinstance(out, Sequence):
        raise CaseFailure(
            f"the callable returned {type(out).__name__}, expected a tuple of {n} arrays "
            f"({what}, one per agent)"
        )
    if len(out) != n:
        raise CaseFailure(
            f"the callable returned {len(out)} arrays, expected {n} ({what}, one per agent)"
        )
    arrays = []
    for m, (x, shape) in enumerate(zip(out, shapes, strict=True)):
        arr = io.out(x, f"the callable's array {m}")
        if arr.shape != shape:
            raise CaseFailure(
                f"the callable's array {m} ({what} of agent {m}) has shape {arr.shape}, "
                f"expected {shape}"
            )
        arrays.append(arr)
    return tuple(arrays)


def _label(idx: tuple[int, ...]) -> str:
    """``(s, a^0, ..., a^m)`` as ``"s=1, a0=0, a1=2"``."""
    return ", ".join([f"s={idx[0]}", *(f"a{j}={v}" for j, v in enumerate(idx[1:]))])


def _entry(name: str) -> Callable[[tuple[int, ...]], str]:
    return lambda idx: f"{name}[{_label(idx)}]"


def _planted(check: str) -> list[Any]:
    from verify.checks.planted import known_bugs  # the catalogue imports this module

    return list(known_bugs(check))


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
    rtol: float | None = None,
    dtype: str | None = None,
    xp: Any = None,
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
    _limits(max_agents=max_agents, max_actions=max_actions, max_states=max_states)

    def evaluate_case(p: _Problem, index: int, io: UserIO) -> list[Compared]:
        g = p.game
        want = evaluate_game(g, p.policy).localized
        out = fn(io.arg(g.P), io.arg(g.r), g.gamma, _copies(io, p.policy.conditionals))
        got = _user_arrays(io, out, [c.shape for c in p.policy.conditionals], "Q^{0:m}")
        tol = localized_q_tolerance(g)
        context = f" (gamma = {g.gamma:.6g}, {g.n_agents} agents)"
        return [Compared(got[m], want[m], tol, tol, _entry(f"Q^{{0:{m}}}"),
                         lambda idx: context) for m in range(g.n_agents)]

    def alternatives() -> list[Alternative]:
        return known_alternatives(
            _planted("localized-q"),
            lambda f, p: list(f(p.game.P, p.game.r, p.game.gamma, p.policy.conditionals)),
        )

    decl = Declaration(
        name="localized-q",
        reference="SPEC section 5 localized Q: Q^{0:m-1} = sum_{a^m} pi^m Q^{0:m}, "
        "Q^{0:N-1} = Q_pi; proofs_notes/ma-pdl.md#localized-q",
        generate=lambda rng, size: _q_problem(rng, size, max_agents, max_actions, max_states,
                                              max_gamma),
        to_arrays=_to_arrays,
        from_arrays=_from_arrays,
        evaluate=evaluate_case,
        solve=True,
        alternatives=alternatives,
    )
    return run_check(decl, cases=cases, seed=seed, replay=replay, atol=atol, rtol=rtol,
                     dtype=dtype, xp=xp)


# --------------------------------------------------------------------------- MA-PPO step


MappoStepFn = Callable[
    [tuple[FloatArray, ...], tuple[FloatArray, ...], float], Sequence[npt.ArrayLike]
]


def check_mappo_step(
    fn: MappoStepFn,
    *,
    atol: float | None = None,
    rtol: float | None = None,
    dtype: str | None = None,
    xp: Any = None,
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
    _limits(max_agents=max_agents, max_actions=max_actions, max_states=max_states)

    def evaluate_case(p: _Problem, index: int, io: UserIO) -> list[Compared]:
        g, pol = p.game, p.policy
        if p.beta_k is None:
            raise CheckArgumentError("a mappo-step case needs beta_k")
        beta_k = p.beta_k
        q = evaluate_game(g, pol).localized
        want = mirror_descent_step(pol, q, beta_k).conditionals
        out = fn(_copies(io, pol.conditionals), _copies(io, q), beta_k)
        got = _user_arrays(io, out, [c.shape for c in pol.conditionals], "pi^m_{k+1}")
        logit_scale = max(float(np.max(np.abs(np.log(c)))) for c in pol.conditionals) + max(
            float(np.max(np.abs(x))) for x in q
        ) / beta_k
        rel = step_relative_tolerance(max(g.action_counts), logit_scale)
        context = f" (beta_k = {beta_k:.6g}, {g.n_agents} agents)"
        # own share: relative, plus rel on the row's total mass 1 for a routine that forms
        # one entry as 1 - (sum of the others) (absolute error <= the others' relative ones)
        return [Compared(got[m], w, rel * w, rel * w + rel, _entry(f"pi^{m}_{{k+1}}"),
                         lambda idx: context) for m, w in enumerate(want)]

    def stepped(f: Callable[..., Any], p: _Problem) -> list[Any]:
        q = evaluate_game(p.game, p.policy).localized
        return list(f(p.policy.conditionals, q, p.beta_k))

    def alternatives() -> list[Alternative]:
        return known_alternatives(_planted("mappo-step"), stepped)

    decl = Declaration(
        name="mappo-step",
        reference="SPEC section 5 MA-PPO ideal step: pi^m_{k+1} ∝ pi^m_k exp(Q^{0:m}_{pi_k} / "
        "beta_k)",
        generate=lambda rng, size: _step_problem(rng, size, max_agents, max_actions,
                                                 max_states, max_gamma),
        to_arrays=_to_arrays,
        from_arrays=_from_arrays,
        evaluate=evaluate_case,
        alternatives=alternatives,
    )
    return run_check(decl, cases=cases, seed=seed, replay=replay, atol=atol, rtol=rtol,
                     dtype=dtype, xp=xp)


# --------------------------------------------------------------------------- joint ratio


JointRatioFn = Callable[
    [tuple[FloatArray, ...], tuple[FloatArray, ...], IntArray, IntArray], npt.ArrayLike
]


RATIO_INPUTS = ("tables", "log-probs")
"""What the ratio checks hand the callable: the conditional tables with the batch's states
and actions, or (as a neural actor produces them) each agent's log-probability of its
action, gathered: ``log_probs[b, m] = log pi^m(a_b^m | s_b, a_b^{0:m-1})``, shape ``(B, N)``."""


def _gathered_logs(policy: ConditionalPolicy, states: IntArray, actions: IntArray) -> FloatArray:
    """``(B, N)``: ``log pi^m(a_b^m | s_b, a_b^{0:m-1})``."""
    cols = [np.log(c[(states, *(actions[:, j] for j in range(m + 1)))])
            for m, c in enumerate(policy.conditionals)]
    return np.stack(cols, axis=1)


def _ratio_decl(
    name: str,
    reference: str,
    fn: Callable[..., Any],
    want_of: Callable[[_Problem], FloatArray],
    tol_of: Callable[[_Problem], float],
    label: Callable[[_Problem], Callable[[tuple[int, ...]], str]],
    limits: tuple[int, int, int],
    inputs: str,
) -> Declaration[_Problem]:
    """The joint and the per-agent ratio checks differ only in their oracle and labels."""
    if inputs not in RATIO_INPUTS:
        raise CheckArgumentError(f"inputs = {inputs!r}, expected one of {RATIO_INPUTS}")

    def evaluate_case(p: _Problem, index: int, io: UserIO) -> list[Compared]:
        if p.other is None or p.states is None or p.actions is None:
            raise CheckArgumentError(f"a {name} case needs new0.., states and actions")
        want = want_of(p)
        if inputs == "log-probs":
            out = fn(io.arg(_gathered_logs(p.other, p.states, p.actions)),
                     io.arg(_gathered_logs(p.policy, p.states, p.actions)))
        else:
            out = fn(_copies(io, p.other.conditionals), _copies(io, p.policy.conditionals),
                     io.arg(p.states), io.arg(p.actions))
        got = io.out(out)
        if got.shape != want.shape:
            per_agent = got.shape == (want.shape[0], p.game.n_agents) and want.ndim == 1
            hint = (": per-agent ratios, as MAPPO clips them, are checked by "
                    "check_agent_ratios" if per_agent else "")
            raise CaseFailure(f"the callable returned shape {got.shape}, expected "
                              f"{want.shape}{hint}")
        rel = tol_of(p)
        return [Compared(got, want, rel * want, rel * want, label(p))]

    def gathered(f: Callable[..., Any], p: _Problem) -> list[Any]:
        assert p.other is not None
        return [f(p.other.conditionals, p.policy.conditionals, p.states, p.actions)]

    def alternatives() -> list[Alternative]:
        return known_alternatives(_planted(name), gathered)

    return Declaration(
        name=name,
        reference=reference,
        convention=None if inputs == "tables" else f"inputs={inputs!r}",
        generate=lambda rng, size: _ratio_problem(rng, size, *limits),
        to_arrays=_to_arrays,
        from_arrays=_from_arrays,
        evaluate=evaluate_case,
        alternatives=alternatives,
    )


def _log_scale(p: _Problem) -> float:
    assert p.other is not None
    return max(float(np.max(np.abs(np.log(c))))
               for c in (*p.policy.conditionals, *p.other.conditionals))


def _at(p: _Problem, b: int) -> str:
    assert p.states is not None and p.actions is not None
    return f"s={int(p.states[b])}, a={tuple(int(x) for x in p.actions[b])}"


def check_joint_ratio(
    fn: JointRatioFn,
    *,
    inputs: str = "tables",
    atol: float | None = None,
    rtol: float | None = None,
    dtype: str | None = None,
    xp: Any = None,
    cases: int = 50,
    seed: int = 0,
    max_agents: int = 3,
    max_actions: int = 3,
    max_states: int = 3,
    replay: Case | None = None,
) -> CheckReport:
    """Check ``fn(new_conditionals, old_conditionals, states, actions) -> ratios``, the joint
    importance ratio of SPEC section 5's sequential factorisation
    ``pi(a|s) = prod_m pi^m(a^m | s, a^{0:m-1})``::

        ratio[b] = pi_new(a_b | s_b) / pi_old(a_b | s_b)
                 = prod_m pi_new^m(a_b^m | s_b, a_b^{0:m-1}) / pi_old^m(a_b^m | s_b, a_b^{0:m-1}).

    Which algorithms need it: the joint ratio is what the exact MA-PPO analysis of Zhao et al.
    (2023) and HAPPO/HATRPO use (HAPPO's factor ``M`` for agent ``i_m`` is this product over
    the agents already updated in the sequence, times their advantage; HATRPO's KL terms are
    of the same policies).  MAPPO (Yu et al. 2022) clips each agent's own ratio
    ``pi_new^m / pi_old^m`` separately: check that with :func:`check_agent_ratios`; a MAPPO
    implementation is not expected to pass this check.

    Arguments of ``fn``: ``new_conditionals`` and ``old_conditionals`` tuples of ``N`` arrays,
    the ``m``-th of shape ``(nS, |A^0|, ..., |A^m|)``, every probability at least
    :data:`FULL_SUPPORT`; ``states`` int64 ``(B,)``;
    ``actions`` int64 ``(B, N)``, ``actions[b, m]`` agent ``m``'s action.  It returns ``(B,)``.
    With ``inputs="log-probs"`` (:data:`RATIO_INPUTS`) it is called as ``fn(new_log_probs,
    old_log_probs)`` instead, each ``(B, N)``: every agent's log-probability of its action,
    as a neural actor's ``log_prob`` gives them.

    Oracle: the joint policies ``pi(s, a^0, ..., a^{N-1})``
    (:meth:`reference.cooperative.ConditionalPolicy.joint`) indexed at ``(s_b, a_b)`` and
    divided.  Entrywise tolerance, relative to the oracle's ratio:
    :func:`ratio_relative_tolerance` at the case's largest ``|log pi^m|`` for the oracle and the
    same again for the callable at its precision (a float32 routine: scaled by
    :func:`verify.tolerances.precision_factor`, still relative), or the oracle's plus
    ``atol``; plus ``rtol`` times the ratio."""
    fn = guard(fn)
    _limits(max_agents=max_agents, max_actions=max_actions, max_states=max_states)

    def want_of(p: _Problem) -> FloatArray:
        assert p.other is not None and p.states is not None and p.actions is not None
        index = (p.states, *(p.actions[:, m] for m in range(p.game.n_agents)))
        out: FloatArray = p.other.joint()[index] / p.policy.joint()[index]
        return out

    decl = _ratio_decl(
        "joint-ratio",
        "SPEC section 5 sequential policy: pi(a|s) = prod_m pi^m(a^m | s, a^{0:m-1}); "
        "ratio = pi_new(a|s) / pi_old(a|s)",
        fn, want_of,
        lambda p: ratio_relative_tolerance(p.game.n_agents, _log_scale(p)),
        lambda p: lambda idx: f"ratio[b={idx[0]}] ({_at(p, idx[0])})",
        (max_agents, max_actions, max_states),
        inputs,
    )
    return run_check(decl, cases=cases, seed=seed, replay=replay, atol=atol, rtol=rtol,
                     dtype=dtype, xp=xp)


def check_agent_ratios(
    fn: JointRatioFn,
    *,
    inputs: str = "tables",
    atol: float | None = None,
    rtol: float | None = None,
    dtype: str | None = None,
    xp: Any = None,
    cases: int = 50,
    seed: int = 0,
    max_agents: int = 3,
    max_actions: int = 3,
    max_states: int = 3,
    replay: Case | None = None,
) -> CheckReport:
    """Check ``fn(new_conditionals, old_conditionals, states, actions) -> ratios``, every
    agent's own importance ratio, as MAPPO's clipped objective uses them (one clip per agent;
    Yu et al. 2022)::

        ratios[b, m] = pi_new^m(a_b^m | s_b, a_b^{0:m-1}) / pi_old^m(a_b^m | s_b, a_b^{0:m-1}).

    For MAPPO's independent actors the conditionals do not depend on ``a^{0:m-1}``; the
    generated conditionals do, so a routine that indexes the wrong predecessor's action is
    caught.  Arguments (tables, or ``inputs="log-probs"``) as in :func:`check_joint_ratio`;
    ``fn`` returns ``(B, N)``.  The
    product over ``m`` of these ratios is :func:`check_joint_ratio`'s quantity.

    Tolerance, relative per entry: :func:`ratio_relative_tolerance` for one agent at the
    case's largest ``|log pi^m|``, for the oracle and the callable (at its precision), or
    ``atol`` for the callable; plus ``rtol`` times the ratio."""
    fn = guard(fn)
    _limits(max_agents=max_agents, max_actions=max_actions, max_states=max_states)

    def want_of(p: _Problem) -> FloatArray:
        assert p.other is not None and p.states is not None and p.actions is not None
        cols = []
        for m in range(p.game.n_agents):
            index = (p.states, *(p.actions[:, j] for j in range(m + 1)))
            cols.append(p.other.conditionals[m][index] / p.policy.conditionals[m][index])
        return np.stack(cols, axis=1)

    decl = _ratio_decl(
        "agent-ratios",
        "MAPPO per-agent ratios: pi_new^m(a^m | s, a^{0:m-1}) / pi_old^m(a^m | s, a^{0:m-1})",
        fn, want_of,
        lambda p: ratio_relative_tolerance(1, _log_scale(p)),
        lambda p: lambda idx: f"ratios[b={idx[0]}, m={idx[1]}] ({_at(p, idx[0])})",
        (max_agents, max_actions, max_states),
        inputs,
    )
    return run_check(decl, cases=cases, seed=seed, replay=replay, atol=atol, rtol=rtol,
                     dtype=dtype, xp=xp)
