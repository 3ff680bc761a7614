"""The theorem report: every claim of the two papers that this project checks, measured where
its bound is nearly attained, with a verdict and the planted defect that proves the verdict
could have gone the other way (``marl-oracle report``).

Every claim reads ``measured <= bound`` and is evaluated item by item (per agent, per
``kappa``, per ``K``, per dataset, ...).  Its **ratio** is ``max(measured / bound)`` over the
items with a positive bound; an item whose bound is 0 (a decay spread at the diameter, an
identity that holds exactly) must measure at most its derived rounding allowance, is counted
separately (``exact_items``), and makes the ratio ``inf`` when it does not.  The claim
**passes** iff ``ratio <= 1``; ``margin = 1 - ratio`` is the fraction of the bound left unused
at the worst item.  ``measured`` and ``bound`` are the two sides at that worst item.

Every claim also names a **planted defect** of its own computation (a sign-flipped mirror
step, a bound with a wrong constant, a biased estimator, ...).  The report runs it and
records its ratio as the claim's **power**; a defect must fail (ratio > 1).  A planted defect
that passes is a defect of the report: :attr:`Report.passed` is false and the command exits 1.

How to add a claim
------------------
Write a *measure* function ``(ctx: ClaimContext) -> Evaluation`` and append a
:class:`ClaimSpec` to :data:`CLAIMS`; the runner (:func:`run_report`) does the rest (seeding,
the ratio and verdict, the planted defect, the JSON and Markdown rows and the plot)::

    def _my_measure(ctx: ClaimContext) -> Evaluation:
        result = ctx.shared("my-sweep", lambda: my_sweep(..., seed=ctx.seed,
                                                        executor=ctx.executor))
        measured = result.values * (3.0 if ctx.planted else 1.0)   # the planted defect
        return Evaluation(
            instance="line-message n=5, gamma 0.9, ...",
            measured=measured, bound=result.bounds,                 # one entry per item
            labels=tuple(f"agent {i}" for i in ...),
            allowance=0.0,            # rounding allowance where a bound is exactly 0
            x=..., x_label="kappa", groups=..., gamma=0.9,          # the plot
        )

    CLAIMS += (ClaimSpec(
        name="my-claim",
        statement="what is claimed, as measured <= bound, with its source",
        provenance="derived here",    # or "as stated in the paper"
        measure=_my_measure,
        defect="what the planted defect changes",
    ),)

The measure is called twice: once with ``ctx.planted = False`` (the claim) and once with
``ctx.planted = True`` (its planted defect).  Put expensive work behind ``ctx.shared(key,
thunk)``: the result is computed once per report run and shared by both calls (and by other
claims using the same key), so a defect that only changes the cheap last step costs nothing.
A defect that is a pure transformation of the evaluation (a bound with a wrong constant,
say) can instead be given as ``ClaimSpec(plant=...)``, a function ``Evaluation ->
Evaluation``; the measure is then called once.  Randomness comes from ``ctx.seed`` only
(spawn children with :func:`verify.executors.map_seeded`) so the numbers do not depend on
the executor or on which claims run; a claim's seed is child ``k`` of the root's
``SeedSequence`` for the ``k``-th entry of :data:`CLAIMS`, so add new claims at the end to
keep the others' numbers.  A custom plot is ``ClaimSpec(plot=...)``, a function
``(matplotlib axes, Claim) -> None`` (the title, with the instance and gamma, is added for
it).  Tests: ``tests/test_report.py`` runs every claim and its defect and requires the claim
to pass and the defect to fail (``test_each_claim_passes_and_its_planted_defect_fails``,
parametrised over :func:`claim_names`), and states the least ratio of each tight claim
(``test_bounds_are_measured_where_nearly_attained``).
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import textwrap
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from reference._arrays import FloatArray
from reference.cooperative import (
    multi_agent_pdl,
    random_game,
    run_pessimistic_mappo,
    sample_dataset,
    tuned_beta,
)
from reference.cooperative.game import CooperativeMarkovGame
from reference.cooperative.mappo import mappo_bound
from reference.cooperative.pessimism import evaluate_pessimistic, tabular_critic
from reference.cooperative.policy import ConditionalPolicy
from reference.errors import ModelError
from reference.instances import (
    climbing,
    copy_chain,
    copy_chain_policy,
    equal_arms,
    line_message,
    rare_stall,
    shift_chain,
    two_armed_bandit,
    xor_pair,
)
from reference.networked.algorithm import (
    finite_horizon_occupancy,
    occupancy_estimate,
)
from reference.networked.exact import (
    NetworkedSolution,
    gradient_chain_rule,
    gradient_joint_q,
    local_occupancies,
    shadow_q,
    solve,
)
from reference.networked.policy import LocalizedSoftmaxPolicy
from reference.networked.sampling import rollout
from reference.networked.truncation import (
    DecayProfile,
    decay_profile,
    gradient_error_bounds,
    score_norm_mass,
    truncated_gradient,
)
from verify.assumptions import spread_tolerance
from verify.bounds import l1_radius, sign_test_wins, split_delta
from verify.checks.planted import PlantedVerdict, run_planted
from verify.executors import SeededResults, map_seeded
from verify.experiments import (
    COMPLEXITY_FAMILY_LEVEL,
    ComplexityConfig,
    CouplingDecay,
    coupling_decay_study,
    mappo_gap_sweep,
    pessimism_sweep,
    sample_complexity_study,
    shadow_reward_study,
)
from verify.plots import ZERO_MARKER_NOTE, log_series, pyplot
from verify.tolerances import EPS, gradient_tolerance, linear_solve_tolerance, pdl_tolerance

__all__ = [
    "CLAIMS",
    "Claim",
    "ClaimContext",
    "ClaimSpec",
    "Evaluation",
    "Judgement",
    "Power",
    "Report",
    "claim_seeds",
    "judge",
    "run_report",
    "write_report",
]

Verdict = Literal["pass", "fail"]
Provenance = Literal["derived here", "as stated in the paper"]

DELTA = 1e-9
"""Failure probability of each statistical claim."""

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# The framework: evaluations, judgements, claims, the runner
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """What a claim's measure function returns: both sides of ``measured <= bound`` per item.

    Attributes:
        instance: the instance and settings, for a reader (gamma, n, beta, seed rule, ...).
        measured: ``(m,)`` the left side per item.
        bound: ``(m,)`` the right side per item (``>= 0``).
        labels: ``m`` item names (``"agent 2, kappa 1"``).
        allowance: scalar or ``(m,)`` derived rounding allowance, used where ``bound == 0``.
        x: ``(m,)`` abscissa of each item in the claim's plot (default: the item index).
        x_label: the plot's x-axis label.
        groups: ``m`` plot-line names (``"agent 2"``); items of one group form one line.
        y_label: the plot's y-axis label.
        log_x: plot ``x`` on a log scale.
        gamma: the discount of the instance (shown in the plot's title), if any.
        series: extra named lists written to ``report.json``.
        children: ``(entropy, spawn_key)`` of every ``SeedSequence`` child the claim's
            pieces received, in task order.
    """

    instance: str
    measured: FloatArray
    bound: FloatArray
    labels: tuple[str, ...]
    allowance: float | FloatArray = 0.0
    x: FloatArray | None = None
    x_label: str = "item"
    groups: tuple[str, ...] | None = None
    y_label: str = "value"
    log_x: bool = False
    gamma: float | None = None
    series: dict[str, list[float]] = field(default_factory=dict)
    children: tuple[tuple[int, tuple[int, ...]], ...] = ()

    def __post_init__(self) -> None:
        m = np.asarray(self.measured, dtype=np.float64).reshape(-1)
        b = np.asarray(self.bound, dtype=np.float64).reshape(-1)
        if m.shape != b.shape or len(self.labels) != m.size or m.size == 0:
            raise ModelError(
                f"evaluation of {self.instance!r}: measured {m.shape}, bound {b.shape} and "
                f"{len(self.labels)} labels must have one equal, positive length"
            )
        if np.any(b < 0) or np.any(np.isnan(b)):
            raise ModelError(f"evaluation of {self.instance!r}: bounds must be >= 0, got {b}")
        object.__setattr__(self, "measured", m)
        object.__setattr__(self, "bound", b)
        a = np.broadcast_to(np.asarray(self.allowance, dtype=np.float64), m.shape)
        object.__setattr__(self, "allowance", a)
        if self.x is not None:
            object.__setattr__(self, "x", np.asarray(self.x, dtype=np.float64).reshape(-1))


@dataclass(frozen=True)
class Judgement:
    """``measured <= bound`` judged over an evaluation's items.

    Attributes:
        ratio: ``max(measured / bound)`` over the items with a positive bound; ``inf`` if an
            item with bound 0 measures more than its allowance, or a measurement is NaN.
        measured: the left side at the worst item.
        bound: the right side at the worst item.
        worst: the worst item's label.
        items: number of items.
        exact_items: items whose bound is exactly 0 (checked against their allowance).
        exact_worst: the largest measured value among them (``-inf`` if none).
        verdict: ``"pass"`` iff ``ratio <= 1``.
    """

    ratio: float
    measured: float
    bound: float
    worst: str
    items: int
    exact_items: int
    exact_worst: float
    verdict: Verdict

    @property
    def margin(self) -> float:
        """``1 - ratio``: the fraction of the bound left unused at the worst item."""
        return 1.0 - self.ratio


def judge(ev: Evaluation) -> Judgement:
    """The ratio, worst item and verdict of an :class:`Evaluation` (see the module text)."""
    m, b = ev.measured, ev.bound
    allow = np.asarray(ev.allowance)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(b > 0, m / np.where(b > 0, b, 1.0), np.where(m <= allow, -np.inf, np.inf))
    r = np.where(np.isnan(m), np.inf, r)
    exact = b == 0
    k = int(np.argmax(r))
    ratio = float(r[k])
    if ratio == -math.inf:  # only exact items, all within their allowance
        ratio = 0.0
        k = int(np.argmax(np.where(exact, m, -np.inf)))
    return Judgement(
        ratio=ratio,
        measured=float(m[k]),
        bound=float(b[k]),
        worst=ev.labels[k],
        items=int(m.size),
        exact_items=int(exact.sum()),
        exact_worst=float(np.max(m[exact])) if exact.any() else -math.inf,
        verdict="pass" if ratio <= 1.0 else "fail",
    )


@dataclass(frozen=True)
class ClaimContext:
    """What a measure function runs with.

    Attributes:
        quick: smaller instances and fewer repetitions.
        seed: the claim's own seed (:func:`claim_seeds`).
        executor: where the claim's independent pieces run
            (:func:`verify.executors.map_seeded`).
        planted: measure with the claim's planted defect.
        cache: results shared within one report run (use :meth:`shared`).
    """

    quick: bool
    seed: int
    executor: Executor
    planted: bool = False
    cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def shared(self, key: str, compute: Callable[[], T]) -> T:
        """``compute()`` once per report run and ``key`` (the claim's real and planted runs,
        and other claims asking for the same key, share the result).  The key must name
        everything the result depends on besides ``quick``; the seed is the caller's."""
        full = f"{key}|quick={self.quick}"
        if full not in self.cache:
            self.cache[full] = compute()
        out: T = self.cache[full]
        return out


Measure = Callable[[ClaimContext], Evaluation]
"""A claim's measurement: both sides of ``measured <= bound`` per item."""


@dataclass(frozen=True)
class ClaimSpec:
    """A claim as a declaration over the runner.

    Attributes:
        name: identifier (``"kappa-decay-beta0"``).
        statement: what is claimed, phrased ``measured <= bound``, with its source.
        provenance: ``"derived here"`` (the constant is derived in ``proofs_notes/``, the
            papers' bodies not being available) or ``"as stated in the paper"``.
        measure: ``ClaimContext -> Evaluation``; with ``ctx.planted`` it measures with the
            planted defect (unless ``plant`` is given).
        defect: what the planted defect changes, for a reader.
        plant: optional ``Evaluation -> Evaluation``: the defect as a transformation of the
            real evaluation (then ``measure`` runs once).
        plot: optional custom plot ``(ax, claim) -> None``; default: measured and bound per
            item against ``Evaluation.x``, one line per group, log scale, zeros marked.
    """

    name: str
    statement: str
    provenance: Provenance
    measure: Measure
    defect: str
    plant: Callable[[Evaluation], Evaluation] | None = None
    plot: Callable[[Any, Claim], None] | None = None


@dataclass(frozen=True)
class Power:
    """The planted defect of a claim and what the claim said about it.

    Attributes:
        defect: what the defect changes.
        ratio: the claim's ratio under the defect.
        verdict: ``"fail"`` (as it must) or ``"pass"`` (the claim could not see the defect).
    """

    defect: str
    ratio: float
    verdict: Verdict


@dataclass(frozen=True)
class Claim:
    """One measured claim.

    Attributes:
        name, statement, provenance: from its :class:`ClaimSpec`.
        instance: the instance and settings it was measured on.
        judgement: ratio, worst item and verdict (:func:`judge`).
        power: its planted defect's outcome.
        evaluation: the per-item measurements.
        seed: the claim's own seed (:func:`claim_seeds`).
        seconds: wall time of the claim and its defect.
        planted: the per-item measurements under the planted defect (drawn in grey in
            the claim's plot), if recorded.
    """

    name: str
    statement: str
    provenance: Provenance
    instance: str
    judgement: Judgement
    power: Power
    evaluation: Evaluation
    seed: int | None
    seconds: float
    planted: Evaluation | None = None

    @property
    def measured(self) -> float:
        """The left side at the worst item."""
        return self.judgement.measured

    @property
    def bound(self) -> float:
        """The right side at the worst item."""
        return self.judgement.bound

    @property
    def ratio(self) -> float:
        """``max(measured / bound)`` over the items."""
        return self.judgement.ratio

    @property
    def margin(self) -> float:
        """``1 - ratio``."""
        return self.judgement.margin

    @property
    def verdict(self) -> Verdict:
        """``"pass"`` iff ``ratio <= 1``."""
        return self.judgement.verdict

    @property
    def series(self) -> dict[str, list[float]]:
        """The evaluation's extra series."""
        return self.evaluation.series

    @property
    def children(self) -> tuple[tuple[int, tuple[int, ...]], ...]:
        """``SeedSequence`` children of the claim's pieces."""
        return self.evaluation.children


@dataclass(frozen=True)
class Report:
    """All claims of one run.

    Attributes:
        claims: the claims in the order of :data:`CLAIMS`.
        quick: the smaller instances were used.
        seconds: wall time of the run.
        seed: the root seed every claim's seed derives from (:func:`claim_seeds`).
        only: the claims asked for (empty: all); a non-empty ``only`` is a partial report.
        environment: package version, commit, numpy/scipy/Python versions.
    """

    claims: tuple[Claim, ...]
    quick: bool
    seconds: float
    seed: int = 0
    only: tuple[str, ...] = ()
    environment: dict[str, str] = field(default_factory=dict)

    @property
    def claims_pass(self) -> bool:
        """Every claim passes."""
        return all(c.verdict == "pass" for c in self.claims)

    @property
    def defects_fail(self) -> bool:
        """Every planted defect fails (every claim could have failed)."""
        return all(c.power.verdict == "fail" for c in self.claims)

    @property
    def passed(self) -> bool:
        """Every claim passes and every planted defect fails."""
        return self.claims_pass and self.defects_fail


def _run_claim(spec: ClaimSpec, ctx: ClaimContext) -> Claim:
    t0 = time.perf_counter()
    ev = spec.measure(ctx)
    planted = spec.plant(ev) if spec.plant is not None else spec.measure(replace(ctx, planted=True))
    jd, jp = judge(ev), judge(planted)
    return Claim(
        name=spec.name,
        statement=spec.statement,
        provenance=spec.provenance,
        instance=ev.instance,
        judgement=jd,
        power=Power(spec.defect, jp.ratio, jp.verdict),
        evaluation=ev,
        seed=ctx.seed,
        seconds=time.perf_counter() - t0,
        planted=planted,
    )


# --------------------------------------------------------------------------------------------
# Identities
# --------------------------------------------------------------------------------------------


def _gradient_routes(ctx: ClaimContext) -> Evaluation:
    n = 4 if ctx.quick else 6
    inst = line_message(n)
    m = inst.model
    policy = LocalizedSoftmaxPolicy.random(m, 0, np.random.default_rng(ctx.seed))
    us = inst.utilities("entropy")
    sol = solve(m, policy, us)
    g1 = sol.gradient
    g2 = gradient_chain_rule(m, policy, us)
    g3 = gradient_joint_q(m, policy, sol)
    if ctx.planted:  # the chain-rule route with its agents in reverse order
        g2 = g2[::-1]
    gaps = [
        max(float(np.max(np.abs(a - b))), float(np.max(np.abs(a - c))))
        for a, b, c in zip(g1, g2, g3, strict=True)
    ]
    tol = gradient_tolerance(m.states.size, m.gamma, 1.0 / (1 - m.gamma))
    return Evaluation(
        f"line-message n={n}, gamma {m.gamma}, entropy utilities, beta 0, theta ~ N(0, 1) "
        "from the claim's seed",
        np.array(gaps),
        np.full(n, tol),
        tuple(f"agent {i}" for i in range(n)),
        x=np.arange(n, dtype=np.float64),
        x_label="agent i",
        y_label="largest entry gap between routes",
        gamma=m.gamma,
    )


@dataclass(frozen=True)
class _PdlTask:
    games: int
    planted: bool


def _pdl_piece(task: _PdlTask, rng: np.random.Generator) -> list[float]:
    """``|sum of agents' terms - (J(pi') - J(pi))|`` for each of ``task.games`` random games
    (planted: the last agent's term left out of the sum)."""
    out = []
    for _ in range(task.games):
        game = random_game(rng, 3, (2, 3, 2), 0.9)
        pis = []
        for _ in range(2):
            conds = tuple(
                rng.dirichlet(np.ones(k), size=(game.n_states, *game.action_counts[:m]))
                for m, k in enumerate(game.action_counts)
            )
            pis.append(ConditionalPolicy(game, conds))
        pdl = multi_agent_pdl(game, pis[0], pis[1])
        total = pdl.total - (float(pdl.terms[-1]) if task.planted else 0.0)
        out.append(abs(total - pdl.difference))
    return out


def _ma_pdl(ctx: ClaimContext) -> Evaluation:
    pieces, per = (1, 5) if ctx.quick else (4, 25)
    task = _PdlTask(per, ctx.planted)
    done = map_seeded(_pdl_piece, [task] * pieces, executor=ctx.executor, seed=ctx.seed)
    gaps = np.array([g for piece in done.results for g in piece])
    return Evaluation(
        f"{gaps.size} random games, N = 3, |A^m| = (2, 3, 2), |S| = 3, gamma 0.9, random "
        "sequential policies pi, pi'",
        gaps,
        np.full(gaps.size, pdl_tolerance(3, 12, 3, 0.9)),
        tuple(f"game {k}" for k in range(gaps.size)),
        x=np.arange(gaps.size, dtype=np.float64),
        x_label="random game",
        y_label="|sum of terms - (J(pi') - J(pi))|",
        gamma=0.9,
        children=done.children,
    )


# --------------------------------------------------------------------------------------------
# Spatial decay and truncation (SPEC section 3)
# --------------------------------------------------------------------------------------------

_DECAY_ACTION_REWARD = 0.1
"""Action reward of the decay claims' shift chain (``reference.instances.shift_chain``)."""
_DECAY_GAMMA = 0.8
"""Discount of the decay claims: the state part alone attains ``1 / (1 + action reward)`` of
the bound, above ``gamma``, so a bound with ``t0`` one step late (``gamma`` times smaller)
fails (``proofs_notes/decay.md#tight``)."""


_COPY_LOGIT = 5.0
"""Logit of the copy chain's agent 0 (``reference.instances.copy_chain_policy``): it copies
the state ``beta`` hops away with probability ``1 - d``, ``d = 1/(1 + e^5)``, so its spread
is ``1 - 2 d = 0.987`` of the bound wherever the chain attains ``t0(kappa, beta)``."""


def _decay_scales(n: int) -> list[float]:
    """Reward scale ``1 / (i + 1)`` of the shift chain's agent ``i``: distinct ``Delta_i``, so a
    bound built with another agent's ``Delta`` fails; each agent's ratio does not depend on
    its scale (linear utilities)."""
    return [1.0 / (i + 1) for i in range(n)]


def _decay_instance(ctx: ClaimContext, beta: int) -> tuple[Any, LocalizedSoftmaxPolicy]:
    n = 5 if ctx.quick else 7
    inst = shift_chain(n, _DECAY_GAMMA, _DECAY_ACTION_REWARD, _decay_scales(n))
    policy = LocalizedSoftmaxPolicy.random(inst.model, beta, np.random.default_rng(ctx.seed))
    return inst, policy


def _profile_evaluation(
    prof: DecayProfile, sol: NetworkedSolution, model: Any, instance: str,
    agents_shown: Sequence[int] | None = None, prefix: str = "",
) -> Evaluation:
    shown = list(range(prof.spread.shape[0])) if agents_shown is None else list(agents_shown)
    K = prof.spread.shape[1]
    agents = np.repeat(np.array(shown), K)
    kappas = np.tile(prof.kappa, len(shown))
    return Evaluation(
        instance,
        prof.spread[shown].reshape(-1),
        prof.bound[shown].reshape(-1),
        tuple(f"{prefix}agent {i}, kappa {k}" for i, k in zip(agents, kappas, strict=True)),
        allowance=spread_tolerance(model, sol),
        x=kappas.astype(np.float64),
        x_label="kappa (hops)",
        groups=tuple(f"{prefix}agent {i}" for i in agents),
        y_label="D_i(kappa) (solid) and its bound (dashed)",
        gamma=model.gamma,
        series={
            "kappa": prof.kappa.astype(float).tolist(),
            "delta": prof.delta.tolist(),
        },
    )


def _concatenate(first: Evaluation, second: Evaluation, instance: str) -> Evaluation:
    """The items of two evaluations of one claim, in order."""
    def cat(a: Any, b: Any) -> Any:
        return np.concatenate([np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)])
    if first.x is None or second.x is None or first.groups is None or second.groups is None:
        raise ModelError("only evaluations with x and groups are concatenated")
    return replace(
        first,
        instance=instance,
        measured=cat(first.measured, second.measured),
        bound=cat(first.bound, second.bound),
        labels=first.labels + second.labels,
        allowance=cat(first.allowance, second.allowance),
        x=cat(first.x, second.x),
        groups=first.groups + second.groups,
    )


def _decay(beta: int) -> Measure:
    def run(ctx: ClaimContext) -> Evaluation:
        inst, policy = _decay_instance(ctx, beta)
        m = inst.model
        sol = solve(m, policy, inst.utilities(), values="per-agent")
        prof = decay_profile(m, policy, sol)
        text = (
            f"shift-chain n={m.n}, gamma {m.gamma}, action reward {_DECAY_ACTION_REWARD}, "
            f"reward scale 1/(i+1), beta {beta}, theta ~ N(0, 1) from the claim's seed, "
            "linear utilities"
        )
        ev = _profile_evaluation(prof, sol, m, text)
        if beta == 0:  # the copy chain's agent 0 reads only its own, constant state
            return ev
        # the copy chain attains t0(kappa, beta) itself, which the shift chain (whose
        # states move one hop per step) does not for kappa >= 1: a bound ignoring beta fails
        copy = copy_chain(m.n, _DECAY_GAMMA)
        cpol = copy_chain_policy(copy.model, beta, _COPY_LOGIT)
        csol = solve(copy.model, cpol, copy.utilities(), values="per-agent")
        cprof = decay_profile(copy.model, cpol, csol)
        cev = _profile_evaluation(cprof, csol, copy.model, "", agents_shown=[0],
                                  prefix="copy-chain ")
        return _concatenate(
            ev, cev,
            f"{text}; and copy-chain n={m.n}, gamma {m.gamma}, agent 0 copying s_beta with "
            f"logit {_COPY_LOGIT:g} (proofs_notes/decay.md#copy-chain)",
        )

    return run


def _late_escape(ev: Evaluation) -> Evaluation:
    """The decay bound with ``t0`` one step late: ``Delta gamma^(t0+1) / (1 - gamma)``."""
    gamma = ev.gamma if ev.gamma is not None else 1.0
    return replace(ev, bound=ev.bound * gamma)


_TRUNCATION_GAMMA = 0.1
"""Discount of the truncated-gradient claims' XOR pair: small, so that the initial state's
occupancy dominates (``proofs_notes/truncated-gradient.md#tight``)."""


@dataclass(frozen=True)
class _TruncationData:
    kappa: list[int]
    error: FloatArray  # (n, K) ||ghat_i - grad_i F||
    planted_error: FloatArray  # (n, K) with ghat multiplied by n
    spec: FloatArray  # (n, K) sqrt(2) max_j D_j / (1 - gamma)
    sharp: FloatArray  # (n, K) the bound of truncated-gradient.md#sharp
    sharp_squared: FloatArray  # (n, K) the same with E||score_i||^2 for E||score_i||
    allowance: FloatArray  # (n,)
    n: int
    gamma: float


def _truncation_data() -> _TruncationData:
    inst = xor_pair(_TRUNCATION_GAMMA)
    m = inst.model
    policy = LocalizedSoftmaxPolicy.uniform(m, 1)
    sol = solve(m, policy, inst.utilities(), values="per-agent")
    prof = decay_profile(m, policy, sol)
    qs = shadow_q(m, policy, sol)
    ks = [int(k) for k in prof.kappa]
    shape = (m.n, len(ks))
    err, bad, spec, sharp = (np.zeros(shape) for _ in range(4))
    masses = np.array([score_norm_mass(policy, sol.lam_S, i) for i in range(m.n)])
    squared = np.array([score_norm_mass(policy, sol.lam_S, i, 2) for i in range(m.n)])
    for c, k in enumerate(ks):
        g = truncated_gradient(m, policy, sol, k, "point", qs)
        bounds = gradient_error_bounds(m, policy, sol.lam_S, prof.spread[:, c], k)
        spec[:, c], sharp[:, c] = bounds.spec, bounds.sharp
        for i in range(m.n):
            err[i, c] = float(np.linalg.norm(g[i] - sol.gradient[i]))
            bad[i, c] = float(np.linalg.norm(m.n * g[i] - sol.gradient[i]))
    tol = gradient_tolerance(m.states.size, m.gamma, 1.0 / (1 - m.gamma))
    allowance = np.array([tol * math.sqrt(t.size) for t in policy.theta])
    return _TruncationData(
        ks, err, bad, spec, sharp, sharp * (squared / masses)[:, None], allowance, m.n,
        m.gamma,
    )


def _truncation_evaluation(
    data: _TruncationData, measured: FloatArray, bound: FloatArray, what: str
) -> Evaluation:
    n, K = measured.shape
    agents = np.repeat(np.arange(n), K)
    kappas = np.tile(np.array(data.kappa), n)
    return Evaluation(
        f"xor-pair n=2, gamma {data.gamma}, beta 1, theta = 0, point weights; {what}",
        measured.reshape(-1),
        bound.reshape(-1),
        tuple(f"agent {i}, kappa {k}" for i, k in zip(agents, kappas, strict=True)),
        allowance=np.repeat(data.allowance, K),
        x=kappas.astype(np.float64),
        x_label="kappa (hops)",
        groups=tuple(f"agent {i}" for i in agents),
        y_label="||ghat_i - grad_i F|| (solid) and bound (dashed)",
        gamma=data.gamma,
        series={"kappa": [float(k) for k in data.kappa]},
    )


def _truncated_gradient(ctx: ClaimContext) -> Evaluation:
    data = ctx.shared("truncation-xor-pair", _truncation_data)
    err = data.planted_error if ctx.planted else data.error
    return _truncation_evaluation(data, err, data.spec, "bound sqrt(2) max_j D_j / (1 - gamma)")


def _truncated_gradient_sharp(ctx: ClaimContext) -> Evaluation:
    data = ctx.shared("truncation-xor-pair", _truncation_data)
    return _truncation_evaluation(
        data, data.error, data.sharp_squared if ctx.planted else data.sharp,
        "bound (1/n) sum_j c_ij D_j sum_s lam_S E||score_i||",
    )


# --------------------------------------------------------------------------------------------
# Estimators (SPEC section 4)
# --------------------------------------------------------------------------------------------

_OCCUPANCY_HORIZON = 30
"""Horizon ``H`` of the occupancy-estimator claim."""


def _occupancy_piece(batch: int, rng: np.random.Generator) -> tuple[FloatArray, ...]:
    """``lamtilde_i`` from ``batch`` trajectories of the occupancy claim's instance."""
    m = line_message(4).model
    policy = LocalizedSoftmaxPolicy.uniform(m, 0)
    return occupancy_estimate(m, rollout(m, policy, batch, _OCCUPANCY_HORIZON, rng))


def _occupancy_estimator(ctx: ClaimContext) -> Evaluation:
    m = line_message(4).model
    policy = LocalizedSoftmaxPolicy.uniform(m, 0)
    H = _OCCUPANCY_HORIZON
    # the same batches when quick (1 s of CPU): the radius at B = 64000 is 0.33, so an
    # estimate biased by 5% (an l1 error of 0.48) fails, where B <= 4000 let 10% pass
    batches = [1000, 4000, 16000, 64000]
    lam_H, _ = finite_horizon_occupancy(m, policy, H)
    exact = local_occupancies(policy, lam_H)
    done = ctx.shared(
        f"occupancy-{ctx.seed}",
        lambda: map_seeded(_occupancy_piece, batches, executor=ctx.executor, seed=ctx.seed),
    )
    # planted: the estimate normalised like d = (1 - gamma) lam, a biased estimator of lam
    scale = (1 - m.gamma) if ctx.planted else 1.0
    L = (1 - m.gamma**H) / (1 - m.gamma)
    delta = split_delta(DELTA, len(batches) * m.n)
    errs, rads, labels, xs, groups = [], [], [], [], []
    for B, est in zip(batches, done.results, strict=True):
        for i, (e, x) in enumerate(zip(est, exact, strict=True)):
            errs.append(float(np.abs(scale * e - x).sum()))
            rads.append(l1_radius(B, x.size, L, delta))
            labels.append(f"B {B}, agent {i}")
            xs.append(float(B))
            groups.append(f"agent {i}")
    return Evaluation(
        f"line-message n=4, gamma {m.gamma}, theta = 0, H = {H}, B in {batches}",
        np.array(errs),
        np.array(rads),
        tuple(labels),
        x=np.array(xs),
        x_label="trajectories B",
        groups=tuple(groups),
        y_label="||lamtilde_i - lam^H_i||_1 (solid), McDiarmid radius (dashed)",
        log_x=True,
        gamma=m.gamma,
        children=done.children,
    )


# --------------------------------------------------------------------------------------------
# MA-PPO (SPEC section 5)
# --------------------------------------------------------------------------------------------


def _flipped(game: CooperativeMarkovGame) -> CooperativeMarkovGame:
    """The game with reward ``1 - r``: its exact mirror step ``pi exp(Q'/beta_k)`` is the
    original game's step with the sign of ``Q`` flipped, since ``Q' = 1/(1-gamma) - Q`` and
    a constant per context cancels in the normalisation."""
    return CooperativeMarkovGame(game.P, 1.0 - game.r, game.rho, game.gamma, game.name)


def _gap_evaluation(
    game: CooperativeMarkovGame, Ks: list[int], gaps: FloatArray, bound: FloatArray,
    instance: str,
) -> Evaluation:
    return Evaluation(
        instance,
        gaps,
        bound,
        tuple(f"K {k}" for k in Ks),
        x=np.array(Ks, dtype=np.float64),
        x_label="K (iterations)",
        y_label="average gap (1/K) sum_k (J* - J(pi_k)) (solid), B(K) (dashed)",
        log_x=True,
        gamma=game.gamma,
        series={"K": [float(k) for k in Ks]},
    )


def _mappo_gap(ctx: ClaimContext) -> Evaluation:
    # up to K = 2048 even when quick: the uniform policy's gap (1 - mean r)/(1 - gamma) = 3.52
    # exceeds B(K) only from K = 1771 on, so a no-op step passes a grid that stops at 1024
    Ks = [16, 64, 256, 2048] if ctx.quick else [16, 64, 256, 1024, 4096]
    game = climbing()
    if ctx.planted:
        flip = mappo_gap_sweep(_flipped(game), Ks, executor=ctx.executor)
        H = 1.0 / (1 - game.gamma)
        # the flipped run's J'_k = H - J_k, so the original gap is J* - H + (J'* - gap')
        gaps = game.optimal().J - H + flip.J_star - flip.average_gap
        bound = flip.bound
    else:
        sweep = ctx.shared(
            "mappo-climbing", lambda: mappo_gap_sweep(game, Ks, executor=ctx.executor)
        )
        gaps, bound = sweep.average_gap, sweep.bound
    beta = tuned_beta(game.n_agents, game.log_action_count, game.gamma)
    return _gap_evaluation(
        game, Ks, np.asarray(gaps), np.asarray(bound),
        f"climbing, gamma {game.gamma}, exact Q, uniform pi_0, tuned beta = {beta:.4g}, "
        f"K in {Ks}",
    )


_TIGHT_BETA = 2.0
"""``beta`` of the tight MA-PPO claim: large enough that ``B(K)``'s first term dominates."""


def _mappo_gap_tight(ctx: ClaimContext) -> Evaluation:
    Ks = [16, 64, 256] if ctx.quick else [16, 64, 256, 1024, 4096]
    game = two_armed_bandit(0.0)
    sweep = ctx.shared(
        "mappo-bandit",
        lambda: mappo_gap_sweep(game, Ks, beta=_TIGHT_BETA, executor=ctx.executor),
    )
    if ctx.planted:  # B(K) with log|A| halved
        bound = np.array([
            mappo_bound(k, _TIGHT_BETA, 1, game.log_action_count / 2, game.gamma) for k in Ks
        ])
    else:
        bound = np.asarray(sweep.bound)
    return _gap_evaluation(
        game, Ks, np.asarray(sweep.average_gap), bound,
        f"two-armed bandit (one state, rewards 1 and 0), gamma 0, exact Q, uniform pi_0, "
        f"beta = {_TIGHT_BETA}, K in {Ks}",
    )


# --------------------------------------------------------------------------------------------
# Pessimistic offline MA-PPO (SPEC section 6)
# --------------------------------------------------------------------------------------------


def _pessimism(ctx: ClaimContext) -> Evaluation:
    seeds = 32 if ctx.quick else 40
    scales = [0.0, 0.5] if ctx.quick else [0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
    sweep = ctx.shared(
        f"pessimism-sweep-{ctx.seed}",
        lambda: pessimism_sweep(
            rare_stall(), coverage=0.15, n_samples=10_000, scales=scales, seeds=seeds, K=32,
            beta=0.1, seed=ctx.seed, executor=ctx.executor,
        ),
    )
    i = 0 if ctx.planted else scales.index(0.5)  # planted: scale 0 compared with itself
    wins = int(np.sum(sweep.J[i] > sweep.J[0]))
    need = sign_test_wins(seeds, DELTA)
    return Evaluation(
        f"rare-stall, gamma 0.9, coverage 0.15, 10000 samples, K = 32, beta = 0.1, "
        f"scales {scales}, {seeds} datasets",
        np.array([float(need)]),
        np.array([float(wins)]),
        ("scale 0.5 vs 0",),
        x=np.array([0.5]),
        x_label="pessimism scale",
        y_label="wins needed (solid) and observed (dashed)",
        gamma=0.9,
        series={
            "scale": [float(s) for s in scales],
            "mean_J": sweep.mean_J.tolist(),
            "ci_half_width": sweep.ci_half_width.tolist(),
            "event_frequency": sweep.event_frequency.tolist(),
            "J_star": [sweep.J_star],
            "online_J": [sweep.online_J],
            "behaviour_J": [sweep.behaviour_J],
        },
        children=sweep.children,
    )


@dataclass(frozen=True)
class _PessimismRun:
    """What the event claim needs of one pessimistic MA-PPO run.

    Attributes:
        instance: ``"rare-stall"`` or ``"equal-arms"``.
        iterates: ``(E,)`` the iterates ``k`` at which the validity event held.
        J_hat: ``(E,)`` the pessimistic estimates ``J_hat(pi_k)`` there.
        J: ``(E,)`` the exact ``J(pi_k)`` there.
        J_plain: ``(E,)`` ``J_hat(pi_k)`` from the same critic without its bonus (the planted
            defect).
        allowance: the critic's certified error / (1 - gamma) plus the LU rounding of ``J``.
    """

    instance: str
    iterates: FloatArray
    J_hat: FloatArray
    J: FloatArray
    J_plain: FloatArray
    allowance: float


def _event_run(
    name: str, game: CooperativeMarkovGame, ds: Any, beta: float, coefficient: float
) -> _PessimismRun:
    """Pessimistic MA-PPO (K = 16, scale 1) on one dataset, judged on the validity event."""
    h = run_pessimistic_mappo(game, ds, 16, beta, coefficient)
    on = np.flatnonzero(h.event)
    critic = tabular_critic(game, ds, coefficient)
    plain = replace(critic, bonus=0.0 * critic.bonus)
    J_plain = np.array([evaluate_pessimistic(plain, h.iterates[k]).J for k in on])
    lu = linear_solve_tolerance(game.n_states, game.gamma, 1 / (1 - game.gamma))
    return _PessimismRun(
        name, on.astype(np.float64), h.J_hat[on], h.J[on], J_plain,
        float(np.max(h.critic_error)) / (1 - game.gamma) + lu,
    )


_ARMS_SAMPLES = 4000
"""Samples per dataset of the equal-arms game (500 per arm)."""
_ARMS_BETA = 0.01
"""``beta`` of MA-PPO on the equal arms: small, so the iterates move to the arm whose
estimate is largest and a critic without its bonus overestimates ``J`` there."""


def _pessimism_piece(_: None, rng: np.random.Generator) -> tuple[_PessimismRun, ...]:
    """One rare-stall dataset (tuned beta) and two equal-arms datasets
    (:data:`_ARMS_BETA`), each through pessimistic MA-PPO with scale 1."""
    stall = rare_stall()
    ds = sample_dataset(stall, 10_000, rng, coverage=0.15, safe_actions=np.array([0, 0]))
    beta = tuned_beta(stall.n_agents, stall.log_action_count, stall.gamma)
    runs = [_event_run("rare-stall", stall, ds, beta, 1.0 / (1 - stall.gamma))]
    arms = equal_arms()
    for _copy in range(2):
        ds = sample_dataset(arms, _ARMS_SAMPLES, rng, coverage=1.0)
        runs.append(_event_run("equal-arms", arms, ds, _ARMS_BETA, 1.0))
    return tuple(runs)


def _pessimism_runs(ctx: ClaimContext) -> SeededResults[tuple[_PessimismRun, ...]]:
    runs = 5 if ctx.quick else 40
    return ctx.shared(
        f"pessimism-runs-{ctx.seed}",
        lambda: map_seeded(_pessimism_piece, [None] * runs, executor=ctx.executor, seed=ctx.seed),
    )


_BOUND_SAMPLES = 100_000
"""Transitions per dataset of the pessimism-bound claim."""
_BOUND_K = 64
"""MA-PPO iterations of the pessimism-bound claim."""


@dataclass(frozen=True)
class _BoundRun:
    event_all: bool
    average_gap: float
    bound: float
    model: float


def _bound_piece(_: None, rng: np.random.Generator) -> _BoundRun:
    """Pessimistic MA-PPO (``beta`` = :data:`_TIGHT_BETA`, scale 1) on one uniform-coverage
    dataset of the two-armed bandit with ``gamma = 0``."""
    game = two_armed_bandit(0.0)
    ds = sample_dataset(game, _BOUND_SAMPLES, rng, coverage=1.0)
    h = run_pessimistic_mappo(game, ds, _BOUND_K, _TIGHT_BETA, 1.0)
    return _BoundRun(bool(h.event_all), float(h.average_gap), float(h.bound.total),
                     float(h.bound.model))


def _pessimism_bound(ctx: ClaimContext) -> Evaluation:
    runs = 5 if ctx.quick else 40
    done = ctx.shared(
        f"pessimism-bound-{ctx.seed}",
        lambda: map_seeded(_bound_piece, [None] * runs, executor=ctx.executor, seed=ctx.seed),
    )
    game = two_armed_bandit(0.0)
    held = [(k, r) for k, r in enumerate(done.results) if r.event_all]
    if held:
        gaps = np.array([r.average_gap for _, r in held])
        half = mappo_bound(_BOUND_K, _TIGHT_BETA, 1, game.log_action_count / 2, game.gamma)
        # planted: B(K) with log|A| halved, plus the model term
        bounds = np.array([half + r.model if ctx.planted else r.bound for _, r in held])
        labels = tuple(f"dataset {k}" for k, _ in held)
    else:  # the event never held: nothing was checked, which fails
        gaps, bounds, labels = np.array([math.inf]), np.array([1.0]), ("no dataset",)
    return Evaluation(
        f"two-armed bandit (rewards 1 and 0), gamma 0, {_BOUND_SAMPLES} uniform-coverage "
        f"samples, K = {_BOUND_K}, beta = {_TIGHT_BETA}, scale 1; the event held on "
        f"{len(held)} of {len(done.results)} datasets",
        gaps,
        bounds,
        labels,
        x=np.array([float(k) for k, _ in held]) if held else None,
        x_label="dataset",
        y_label="average gap (solid) and B(K) + (2/(1-gamma)) E_{d*}[Gamma] (dashed)",
        gamma=game.gamma,
        children=done.children,
    )


def _pessimism_event(ctx: ClaimContext) -> Evaluation:
    done = _pessimism_runs(ctx)
    measured: list[float] = []
    bound: list[float] = []
    labels: list[str] = []
    xs: list[float] = []
    groups: list[str] = []
    for d, piece in enumerate(done.results):
        for r in piece:
            est = r.J_plain if ctx.planted else r.J_hat
            for k, jh, j in zip(r.iterates, est, r.J, strict=True):
                measured.append(float(jh))
                bound.append(float(j) + r.allowance)
                labels.append(f"{r.instance} dataset {d}, k {int(k)}")
                xs.append(float(k))
                groups.append(r.instance)
    if not measured:  # the event never held: nothing was checked, which fails
        measured, bound, labels, xs, groups = [math.inf], [0.0], ["no iterate"], [0.0], [""]
    return Evaluation(
        "rare-stall, gamma 0.9, coverage 0.15, 10000 samples, tuned beta; and equal-arms "
        f"(8 arms of mean 0.5, Bernoulli rewards), gamma 0, {_ARMS_SAMPLES} uniform samples, "
        f"beta {_ARMS_BETA}; K = 16, scale 1, {len(done.results)} rare-stall and "
        f"{2 * len(done.results)} equal-arms datasets; every iterate on the validity event",
        np.array(measured),
        np.array(bound),
        tuple(labels),
        x=np.array(xs),
        x_label="iteration k",
        groups=tuple(groups),
        y_label="J_hat(pi_k) (solid), J(pi_k) + allowance (dashed)",
        children=done.children,
    )


# --------------------------------------------------------------------------------------------
# Sample complexity, decay against coupling, bounded shadow rewards (SPEC sections 3 and 4)
# --------------------------------------------------------------------------------------------

_COMPLEXITY_FRACTIONS = (0.5, 0.25)
"""Targets ``epsilon = fraction ||grad F(theta_0)||^2`` of the sample-complexity claim."""


def _complexity_configs(quick: bool) -> tuple[ComplexityConfig, ...]:
    sizes = (3,) if quick else (3, 5, 8)
    return tuple(ComplexityConfig(n, k) for n in sizes for k in (0, 1))


def _sample_complexity(ctx: ClaimContext) -> Evaluation:
    seeds = 4 if ctx.quick else 6
    if ctx.planted:  # the batch sized for the standard deviation: B ~ 1/epsilon^2
        configs = _complexity_configs(True)
        studies = sample_complexity_study(
            configs, _COMPLEXITY_FRACTIONS, 5, ctx.seed, defect="batch-for-norm",
            executor=ctx.executor,
        )
    else:
        configs = _complexity_configs(ctx.quick)
        studies = sample_complexity_study(
            configs, _COMPLEXITY_FRACTIONS, seeds, ctx.seed, executor=ctx.executor
        )
    first = studies[0]
    return Evaluation(
        f"coupled-line, coupling {first.coupling}, gamma {first.gamma}, linear utilities, "
        f"beta 0, theta_0 = 0, eta 10, MC critics; (n, kappa) in "
        f"{[(c.n, c.kappa) for c in configs]}; epsilon = {list(_COMPLEXITY_FRACTIONS)} x "
        f"||grad F(theta_0)||^2; {studies[0].iterations.shape[0]} seeds; Student-t "
        f"intervals at level {first.level:.4f} each (family-wise "
        f"{COMPLEXITY_FAMILY_LEVEL:g})",
        np.array([s.total_interval[0] for s in studies]),
        np.array([s.derived_total_exponent for s in studies]),
        tuple(f"n={s.n}, kappa={s.kappa}" for s in studies),
        x=np.array([float(s.n) for s in studies]),
        x_label="agents n",
        groups=tuple(f"kappa {s.kappa}" for s in studies),
        y_label="total exponent: interval lower end (solid) and derived (dashed)",
        gamma=first.gamma,
        series={
            "n": [float(s.n) for s in studies],
            "kappa": [float(s.kappa) for s in studies],
            "total_exponent": [s.total_exponent for s in studies],
            "total_lo": [s.total_interval[0] for s in studies],
            "total_hi": [s.total_interval[1] for s in studies],
            "iteration_exponent": [s.iteration_exponent for s in studies],
            "iteration_lo": [s.iteration_interval[0] for s in studies],
            "iteration_hi": [s.iteration_interval[1] for s in studies],
            "reference_exponent": [s.reference_exponent for s in studies],
            "schedule_exponent": [s.schedule_exponent for s in studies],
            "derived_total_exponent": [s.derived_total_exponent for s in studies],
            "asymptotic_total_exponent": [s.asymptotic_total_exponent for s in studies],
            "floor": [s.floor for s in studies],
        },
        children=tuple(ch for s in studies for ch in s.children),
    )


def _plot_sample_complexity(ax: Any, claim: Claim) -> None:
    s = claim.series
    pos = np.arange(len(s["n"]), dtype=np.float64)
    labels = [f"n={int(n)}\nkappa={int(k)}" for n, k in zip(s["n"], s["kappa"], strict=True)]
    for key, shift, fmt, name in (("total", 0.0, "o", "samples"),
                                  ("iteration", 0.15, "s", "iterations")):
        mid = np.array(s[f"{key}_exponent"])
        lo, hi = np.array(s[f"{key}_lo"]), np.array(s[f"{key}_hi"])
        ax.errorbar(pos + shift, mid, yerr=[mid - lo, hi - mid], fmt=fmt, capsize=3,
                    label=f"{name}: mean slope and interval")
    ax.plot(pos, s["derived_total_exponent"], "k_", ms=14, mew=2,
            label="bound: noise-free iterations + schedule")
    ax.plot(pos, s["asymptotic_total_exponent"], "r_", ms=14, label="1 + schedule (eps -> 0)")
    ax.plot(pos + 0.15, s["reference_exponent"], "kx", label="noise-free iterations")
    if claim.planted is not None:  # the planted defect's sample exponents, in grey
        bad = claim.planted.series
        where = {(n, k): p for p, n, k in zip(pos, s["n"], s["kappa"], strict=True)}
        for i, (n, k) in enumerate(zip(bad["n"], bad["kappa"], strict=True)):
            if (n, k) not in where:
                continue
            b_mid, b_lo, b_hi = (bad[key][i] for key in ("total_exponent", "total_lo",
                                                         "total_hi"))
            ax.errorbar([where[n, k] - 0.15], [b_mid], yerr=[[b_mid - b_lo], [b_hi - b_mid]],
                        fmt="x",
                        color="0.5", capsize=3,
                        label=None if i else
                        f"planted defect, samples (ratio {_fmt(claim.power.ratio)})")
    ax.set_xticks(pos)
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_xlabel("network (agents n, truncation radius kappa)")
    ax.set_ylabel("exponent of 1/epsilon (least-squares slope)")


_COUPLINGS = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Couplings of the decay-coupling claim."""


def _coupling_study(ctx: ClaimContext) -> CouplingDecay:
    n, gammas = (5, (0.5, 0.9)) if ctx.quick else (6, (0.5, 0.8, 0.9))
    return ctx.shared(
        f"coupling-decay-{ctx.seed}",
        lambda: coupling_decay_study(n, _COUPLINGS, gammas, seed=ctx.seed),
    )


def _decay_coupling(ctx: ClaimContext) -> Evaluation:
    d = _coupling_study(ctx)
    G, C, n, K = d.spread.shape
    grid = np.indices((G, C, n, K)).reshape(4, -1)
    gam = d.gammas[grid[0]]
    spec = d.bound.reshape(-1) * (gam if ctx.planted else 1.0)  # planted: t0 one step late
    items = tuple(
        f"gamma {d.gammas[a]:g}, c {d.couplings[b]:g}, agent {i}, kappa {k}"
        for a, b, i, k in grid.T
    )
    allowance = np.repeat(d.allowance.reshape(-1), n * K)
    return Evaluation(
        f"coupled-line n={n}, couplings {list(_COUPLINGS)}, gammas "
        f"{[float(g) for g in d.gammas]}, beta {d.beta}, theta ~ N(0, 1) from the claim's "
        f"seed (nu = {d.nu:.3f}), linear utilities r_i = 1[s_i = 1]; items against SPEC's "
        "bound and against the family's bound Delta_i rho^(kappa+1) / (1 - gamma)",
        np.concatenate([d.spread.reshape(-1)] * 2),
        np.concatenate([spec, d.coupling_bound.reshape(-1)]),
        tuple(f"{x}, SPEC bound" for x in items) + tuple(f"{x}, coupling bound" for x in items),
        allowance=np.concatenate([allowance, allowance]),
        x=np.concatenate([d.couplings[grid[1]]] * 2),
        x_label="coupling c",
        y_label="D_i(kappa) and its bounds",
        series={
            "couplings": d.couplings.tolist(),
            "gammas": d.gammas.tolist(),
            **{f"rate_gamma_{g:g}": d.rate[a].tolist() for a, g in enumerate(d.gammas)},
            **{f"rho_gamma_{g:g}": d.coupling_rate[a].tolist()
               for a, g in enumerate(d.gammas)},
        },
    )


def _plot_decay_coupling(ax: Any, claim: Claim) -> None:
    s = claim.series
    cs = np.array(s["couplings"])
    for g in s["gammas"]:
        rate = np.array(s[f"rate_gamma_{g:g}"])
        zero = rate == 0
        (line,) = ax.plot(cs[~zero], rate[~zero], "o-", label=f"measured, gamma {g:g}")
        ax.plot(cs, s[f"rho_gamma_{g:g}"], "--", color=line.get_color(),
                label=f"rho = gamma c / (1 - gamma (1 - c) nu), gamma {g:g}")
        ax.axhline(g, color=line.get_color(), ls=":", lw=0.8, label=f"SPEC's rate {g:g}")
        if zero.any():
            ax.plot(cs[zero], rate[zero], "v", mfc="none", ms=9, color=line.get_color(),
                    label="every D_i exactly 0")
    ax.set_xlabel("coupling c (probability of copying the right neighbour's state)")
    ax.set_ylabel("per-hop decay rate of D_0(kappa)")
    ax.set_ylim(bottom=0.0)


_SHADOW_GAMMA = 0.5
"""Discount of the shadow-reward claim."""


def _shadow_rewards(ctx: ClaimContext) -> Evaluation:
    iterations = 5 if ctx.quick else 10
    if ctx.planted:  # the constraint penalty's gradient without its clamp
        st = shadow_reward_study(3, _SHADOW_GAMMA, iterations, ctx.seed, kinds=("penalty",),
                                 defect="unclamped-penalty", executor=ctx.executor)
    else:
        st = ctx.shared(
            f"shadow-rewards-{ctx.seed}",
            lambda: shadow_reward_study(3, _SHADOW_GAMMA, iterations, ctx.seed,
                                        executor=ctx.executor),
        )
    U, n, K = st.exact.shape
    grid = np.indices((2, U, n, K)).reshape(4, -1)
    measured = np.stack([st.exact, st.sampled]).reshape(-1)
    bound = np.broadcast_to(st.bound[None, :, :, None], (2, U, n, K)).reshape(-1)
    which = ("exact", "sampled")
    ratio = np.stack([st.exact, st.sampled]) / st.bound[None, :, :, None]
    return Evaluation(
        st.instance + "; every utility of verify.experiments.study_utilities",
        measured,
        bound,
        tuple(f"{st.kinds[u]}, agent {i}, iterate {k}, {which[w]}" for w, u, i, k in grid.T),
        x=grid[3].astype(np.float64),
        x_label="iterate k",
        y_label="||shadow reward||_inf",
        gamma=st.gamma,
        series={
            "kinds": [float(u) for u in range(U)],
            **{f"exact_{kind}": ratio[0, u].max(axis=0).tolist()
               for u, kind in enumerate(st.kinds)},
            **{f"sampled_{kind}": ratio[1, u].max(axis=0).tolist()
               for u, kind in enumerate(st.kinds)},
        },
        children=st.children,
    )


def _plot_shadow_rewards(ax: Any, claim: Claim) -> None:
    s = claim.series
    for key in s:
        if not key.startswith("exact_"):
            continue
        kind = key.removeprefix("exact_")
        (line,) = ax.plot(s[key], "o-", label=f"{kind}, exact")
        ax.plot(s[f"sampled_{kind}"], "x--", color=line.get_color(), label=f"{kind}, sampled")
    if claim.planted is not None:  # the planted defect, in grey
        bad = claim.planted.series
        for key in bad:
            if key.startswith("exact_"):
                ax.plot(bad[key], "x:", color="0.5",
                        label=f"planted defect, {key.removeprefix('exact_')} "
                        f"(ratio {_fmt(claim.power.ratio)})")
    ax.axhline(1.0, color="k", lw=0.8, label="declared bound")
    ax.set_xlabel("iterate k of Algorithm 1")
    ax.set_ylabel("max_i ||r_i||_inf / declared gradient bound")
    ax.set_ylim(bottom=0.0)


# --------------------------------------------------------------------------------------------
# The verifier's own planted bugs
# --------------------------------------------------------------------------------------------


def _checks(ctx: ClaimContext) -> Evaluation:
    areas = ("tabular", "gae") if ctx.quick else None
    verdicts: tuple[PlantedVerdict, ...] = ctx.shared(
        f"planted-{areas}", lambda: run_planted(areas, executor=ctx.executor)
    )
    # planted: a check that passes everything (every mutant reported as passing)
    wrong = [
        float(v.kind == "mutant") if ctx.planted else float(not v.verdict_ok) for v in verdicts
    ]
    return Evaluation(
        f"areas {sorted({v.area for v in verdicts})}, {len(verdicts)} implementations, "
        f"{sum(v.cases for v in verdicts)} cases",
        np.array(wrong),
        np.zeros(len(verdicts)),
        tuple(f"{v.area}/{v.kind}/{v.name}" for v in verdicts),
        x=np.arange(len(verdicts), dtype=np.float64),
        x_label="implementation",
        y_label="wrong verdict (1) or right (0)",
        series={
            "failing_fraction": [v.failures / max(v.cases, 1) for v in verdicts],
            "mutant": [float(v.kind == "mutant") for v in verdicts],
            "wrong": wrong,
        },
    )


def _plot_checks(ax: Any, claim: Claim) -> None:
    """Per catalogue entry, the fraction of the check's cases that failed: above 0 for
    every mutant, 0 for every correct implementation; a wrong verdict is marked."""
    s = claim.series
    frac = np.array(s["failing_fraction"])
    mutant = np.array(s["mutant"]) > 0
    x = np.arange(frac.size)
    ax.bar(x[mutant], frac[mutant], color="C3", label="planted bug: fraction of cases failed")
    ax.plot(x[~mutant], frac[~mutant], "o", color="C2",
            label="correct implementation: fraction failed (must be 0)")
    wrong = np.array(s["wrong"]) > 0
    if wrong.any():
        ax.plot(x[wrong], np.full(int(wrong.sum()), 1.05), "x", color="k",
                label="wrong verdict")
    ax.set_ylim(-0.05, 1.1)
    ax.set_xlabel("catalogue entry (verify.checks.planted, in catalogue order)")
    ax.set_ylabel("fraction of the check's cases that failed")


def _plot_pessimism_scale(ax: Any, claim: Claim) -> None:
    s = claim.series
    ax.errorbar(s["scale"], s["mean_J"], yerr=s["ci_half_width"], fmt="o-", label="true J")
    ax.axhline(s["J_star"][0], color="k", ls=":", label="J*")
    ax.axhline(s["online_J"][0], color="g", ls="--", label="online MA-PPO")
    ax.axhline(s["behaviour_J"][0], color="grey", ls="-.", label="behaviour")
    ax.set_xlabel("pessimism scale")
    ax.set_ylabel("J of the learned policy (mean, 95% t interval)")


# --------------------------------------------------------------------------------------------
# Optimality (SPEC section 8)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RouteInterval:
    """One route's certified interval ``[lower, upper]`` around ``F*``."""

    label: str
    lower: float
    upper: float


def _optimum_instances(quick: bool) -> list[tuple[str, Any, tuple[Any, ...]]]:
    from reference.instances import line_message_mixed

    n = 3 if quick else 4
    out = []
    for kind in ("linear", "entropy"):
        inst = line_message(n)
        out.append((f"line-message n={n} {kind}", inst, inst.utilities(kind)))
    mixed = line_message_mixed(n)
    out.append((f"line-message-mixed n={n}", mixed, mixed.utilities("mixed")))
    return out


def _frank_wolfe_intervals(quick: bool, gamma_power: int) -> list[_RouteInterval]:
    """Frank-Wolfe's interval per instance, on the flow constraints with
    ``gamma ** gamma_power`` (1: the real computation; 2: the planted defect)."""
    from reference.networked.model import NetworkedMDP
    from reference.networked.optimum import optimum

    out = []
    for name, inst, utils in _optimum_instances(quick):
        m = inst.model
        if gamma_power != 1:
            g = m.gamma**gamma_power
            m = NetworkedMDP(m.graph, m.n_states, m.n_actions, m.kernels, g, m.rho)
            utils = type(inst)(
                inst.name, m, inst.rewards, inst.source, inst.roles, inst.constraint_level
            ).utilities(_kind_of(name))
        fw = optimum(m, utils, gap=1e-9)
        out.append(_RouteInterval("Frank-Wolfe", fw.value, fw.upper_bound))
    return out


def _second_route_intervals(quick: bool) -> list[tuple[str, list[_RouteInterval]]]:
    """Every second route's interval per instance (proofs_notes/optimum.md#routes)."""
    from reference.networked.optimum import (
        flow_constrained_optimum,
        linear_program_optimum,
        optimum,
    )
    from reference.networked.utilities import LinearUtility
    from reference.tabular import value_iteration

    out = []
    for name, inst, utils in _optimum_instances(quick):
        m = inst.model
        plain = optimum(
            m,
            utils,
            gap=1e-7,
            method="frank-wolfe",
            oracle="value-iteration",
            max_iterations=300,
            time_limit=60.0,
        )
        others = [
            _RouteInterval(
                "plain Frank-Wolfe, value-iteration oracle", plain.value, plain.upper_bound
            )
        ]
        flow = flow_constrained_optimum(m, utils)
        others.append(_RouteInterval("SLSQP on the flow constraints", flow.lower, flow.upper))
        if all(isinstance(u, LinearUtility) for u in utils):
            rewards = [u.reward for u in utils if isinstance(u, LinearUtility)]
            lp = linear_program_optimum(m, rewards)
            others.append(_RouteInterval("LP (HiGHS)", lp.lower, lp.upper))
            vi = value_iteration(m.to_tabular(rewards), tol=1e-11)
            others.append(
                _RouteInterval(
                    "joint value iteration", vi.J - vi.error_bound, vi.J + vi.error_bound
                )
            )
        out.append((name, others))
    return out


def _kind_of(name: str) -> Any:
    return "mixed" if "mixed" in name else name.rsplit(" ", 1)[-1]


def _optimum_routes(ctx: ClaimContext) -> Evaluation:
    power = 2 if ctx.planted else 1
    fws = ctx.shared(
        f"optimum-routes|frank-wolfe|gamma^{power}",
        lambda: _frank_wolfe_intervals(ctx.quick, power),
    )
    routes = ctx.shared("optimum-routes|second", lambda: _second_route_intervals(ctx.quick))
    measured, bound, labels, xs, groups = [], [], [], [], []
    for k, (fw, (name, others)) in enumerate(zip(fws, routes, strict=True)):
        scale = 1.0 + max(abs(fw.lower), *(abs(o.lower) for o in others))
        rounding = 64 * EPS * scale  # F evaluated twice on equal occupancies (a sum of D terms)
        for o in (fw, *others):
            # a certified interval is not empty: an upper end below the attained value is a
            # wrong certificate, and fails here instead of making a bound below negative
            measured.append(o.lower - o.upper)
            bound.append(rounding)
            labels.append(f"{name}: {o.label} lower - its upper <= 0")
            xs.append(k)
            groups.append(o.label)
        for o in others:
            # the intervals overlap iff o.lower <= fw.upper and fw.lower <= o.upper
            measured += [o.lower - fw.lower, fw.lower - o.lower]
            bound += [
                max(fw.upper - fw.lower, 0.0) + rounding,
                max(o.upper - o.lower, 0.0) + rounding,
            ]
            labels += [
                f"{name}: {o.label} lower - Frank-Wolfe lower <= FW gap",
                f"{name}: Frank-Wolfe lower - {o.label} lower <= its width",
            ]
            xs += [k, k]
            groups += [o.label, o.label]
    return Evaluation(
        instance=(
            f"line-message and line-message-mixed, n = {3 if ctx.quick else 4}, gamma 0.9; "
            "Frank-Wolfe to a certified gap of 1e-9"
        ),
        measured=np.array(measured),
        bound=np.array(bound),
        labels=tuple(labels),
        x=np.array(xs, dtype=np.float64),
        x_label="instance (linear, entropy, mixed)",
        groups=tuple(groups),
        y_label="difference of attained values vs interval width",
        gamma=0.9,
    )


def _localization_runs(
    quick: bool, seed: int
) -> list[tuple[str, float, float, float, list[float], list[float]]]:
    from reference.networked.localization import best_localized
    from reference.networked.optimum import optimum

    out = []
    rng = np.random.default_rng(seed)
    for name, inst, utils in _optimum_instances(quick):
        m = inst.model
        opt = optimum(m, utils, gap=1e-9)
        first = float(opt.trace.objective[0])
        vals, norms = [], []
        initial = math.nan
        for beta in range(m.graph.diameter + 1):
            loc = best_localized(m, utils, beta, rng, starts=2, iterations=25 if quick else 60)
            vals.append(loc.value)
            norms.append(loc.gradient_norm)
            initial = loc.initial_value
        out.append((name, opt.upper_bound, first, initial, vals, norms))
    return out


def _price_of_localization(ctx: ClaimContext) -> Evaluation:
    runs = ctx.shared("price-of-localization", lambda: _localization_runs(ctx.quick, ctx.seed))
    measured, bound, labels, xs, groups = [], [], [], [], []
    prices: list[float] = []
    for name, upper, first, initial, vals, _ in runs:
        # planted defect: F* read off Frank-Wolfe's first iterate, without its certificate
        star = first if ctx.planted else upper
        rounding = 64 * EPS * (1.0 + abs(upper))
        for beta, v in enumerate(vals):
            measured.append(v - initial)
            bound.append(max(0.0, star - initial) + rounding)
            labels.append(f"{name}, beta = {beta}")
            xs.append(beta)
            groups.append(name)
            prices.append(upper - v)
    return Evaluation(
        instance=(
            f"line-message (linear, entropy) and line-message-mixed, n = "
            f"{3 if ctx.quick else 4}, gamma 0.9; best of 2 exact gradient-ascent starts per beta"
        ),
        measured=np.array(measured),
        bound=np.array(bound),
        labels=tuple(labels),
        x=np.array(xs, dtype=np.float64),
        x_label="observation radius beta",
        groups=tuple(groups),
        y_label="F_loc - F(theta=0) vs F* - F(theta=0)",
        gamma=0.9,
        series={"price_upper_bound": prices},
    )


CLAIMS: tuple[ClaimSpec, ...] = (
    ClaimSpec(
        "gradient-routes",
        "per agent, the largest entry gap between grad F by the shadow-reward policy gradient, "
        "the forward chain rule and the joint Q <= the gradients' derived rounding allowance "
        "(SPEC section 2; proofs_notes/shadow-reward-gradient.md)",
        "as stated in the paper",
        _gradient_routes,
        "the chain-rule route returns the agents' gradients in reverse order",
    ),
    ClaimSpec(
        "ma-pdl",
        "per random game, |sum of the agents' terms - (J(pi') - J(pi))| <= the derived "
        "rounding allowance verify.tolerances.pdl_tolerance (multi-agent performance "
        "difference lemma, SPEC section 5; proofs_notes/ma-pdl.md)",
        "as stated in the paper",
        _ma_pdl,
        "the last agent's term is left out of the sum",
    ),
    *(
        ClaimSpec(
            f"kappa-decay-beta{b}",
            "per agent i and kappa, D_i(kappa) <= Delta_i gamma^t0(kappa, beta) / (1 - gamma), "
            "and D_i(kappa) = 0 (to rounding) once N_i^kappa is i's component "
            f"(beta = {b}; SPEC section 3; proofs_notes/decay.md)",
            "derived here",
            _decay(b),
            "t0 one step late in the bound: Delta_i gamma^(t0+1) / (1 - gamma)",
            plant=_late_escape,
        )
        for b in (0, 1, 2)
    ),
    ClaimSpec(
        "truncated-gradient",
        "per agent i and kappa, ||ghat_i - grad_i F||_2 <= sqrt(2) max_j D_j(kappa) / "
        "(1 - gamma), and ghat = grad F (to rounding) at the diameter (SPEC section 3; "
        "proofs_notes/truncated-gradient.md)",
        "derived here",
        _truncated_gradient,
        "the truncated gradient without the 1/n of the team average",
    ),
    ClaimSpec(
        "truncated-gradient-sharp",
        "per agent i and kappa, ||ghat_i - grad_i F||_2 <= (1/n) sum_j c_ij D_j(kappa) "
        "sum_s lam_S(s) E_{a_i ~ pi_i} ||score_i(a_i|o_i)||, c_ij = 1 for j in N_i^kappa and "
        "1/2 outside (proofs_notes/truncated-gradient.md#sharp)",
        "derived here",
        _truncated_gradient_sharp,
        "the bound with E||score_i||^2 in place of E||score_i||",
    ),
    ClaimSpec(
        "occupancy-estimator",
        "per batch size B and agent, ||lamtilde_i - lam^H_i||_1 <= the McDiarmid radius at "
        f"delta = {DELTA:g} per check (SPEC section 4; proofs_notes/algorithm1.md)",
        "derived here",
        _occupancy_estimator,
        "the estimate multiplied by (1 - gamma), normalised like d instead of lam",
    ),
    ClaimSpec(
        "mappo-gap",
        "per K, MA-PPO's average gap (1/K) sum_{k<K} (J* - J(pi_k)) <= B(K) = beta log|A| / "
        "((1-gamma) sqrt K) + N / (8 beta (1-gamma)^3 sqrt K) with exact Q (SPEC section 5; "
        "proofs_notes/mappo-bound.md#bound)",
        "derived here",
        _mappo_gap,
        "sign-flipped mirror step pi exp(-Q/beta_k) (run as the exact step on reward 1 - r)",
    ),
    ClaimSpec(
        "mappo-gap-tight",
        "the same bound where it is nearly attained: Hedge on a two-armed bandit with "
        "gamma = 0 and a large beta, whose average regret tends to beta log 2 / sqrt K "
        "(proofs_notes/mappo-bound.md#tight)",
        "derived here",
        _mappo_gap_tight,
        "B(K) with log|A| halved",
    ),
    ClaimSpec(
        "pessimism-scale",
        "under poor coverage pessimism raises the learned policy's true J: the wins a "
        f"one-sided sign test at delta = {DELTA:g} needs <= the datasets on which scale 0.5 "
        "beats scale 0 (proofs_notes/pessimism.md#rare-stall)",
        "derived here",
        _pessimism,
        "scale 0 compared with itself",
        plot=_plot_pessimism_scale,
    ),
    ClaimSpec(
        "pessimism-event",
        "per dataset and iterate on the validity event the critic is pessimistic: "
        "J_hat(pi_k) <= J(pi_k) + the critic's certified error / (1 - gamma) + the LU "
        "rounding of J (SPEC section 6; proofs_notes/pessimism.md#event)",
        "derived here",
        _pessimism_event,
        "the bonus dropped (the plain ridge-regression critic), same iterates",
    ),
    ClaimSpec(
        "pessimism-bound",
        "per dataset on which the validity event held, the average gap <= B(K) + "
        "(2/(1-gamma)) E_{d*}[Gamma], measured where B(K) is nearly attained (SPEC section 6; "
        "proofs_notes/pessimism.md#bound, proofs_notes/mappo-bound.md#tight)",
        "derived here",
        _pessimism_bound,
        "B(K) with log|A| halved",
    ),
    ClaimSpec(
        "checks-and-mutants",
        "per catalogue entry, wrong verdicts <= 0: every planted bug is caught by the check "
        "meant for it and every correct implementation passes (verify.checks.planted)",
        "derived here",
        _checks,
        "a check that passes everything",
        plot=_plot_checks,
    ),
    ClaimSpec(
        "sample-complexity",
        "per network (n, kappa), the lower end of the interval on the exponent of 1/epsilon "
        "in Algorithm 1's samples to reach average-iterate stationarity (||grad F||^2 <= "
        "epsilon on average) under the derived batch and horizon schedule <= noise-free "
        "ascent's iteration exponent on the same targets + the schedule's exponent (1 + 1 "
        "up to logs as epsilon -> 0; SPEC section 4; proofs_notes/algorithm1.md#schedule)",
        "derived here",
        _sample_complexity,
        "the batch sized for the estimator's standard deviation: B ~ 1/epsilon^2 (n = 3)",
        plot=_plot_sample_complexity,
    ),
    ClaimSpec(
        "decay-coupling",
        "per gamma, coupling c, agent i and kappa on coupled-line instances, D_i(kappa) <= "
        "Delta_i gamma^t0 / (1 - gamma) (and = 0 to rounding once N_i^kappa covers i's "
        "component), and D_i(kappa) <= Delta_i rho^(kappa+1) / (1 - gamma) with the family's "
        "rate rho = gamma c / (1 - gamma (1 - c) nu) (SPEC section 3; "
        "proofs_notes/decay.md#coupling)",
        "derived here",
        _decay_coupling,
        "t0 one step late in the bound: Delta_i gamma^(t0+1) / (1 - gamma)",
        plot=_plot_decay_coupling,
    ),
    ClaimSpec(
        "shadow-reward-bound",
        "per utility, agent and iterate of Algorithm 1, the exact shadow reward "
        "||grad f_i(lam_i^theta_k)||_inf and the sampled ||grad f_i(lamtilde_i)||_inf <= the "
        "utility's declared gradient bound (SPEC section 2; reference/networked/utilities.py; "
        "proofs_notes/shadow-reward-gradient.md#bounded)",
        "derived here",
        _shadow_rewards,
        "the constraint penalty's gradient without its clamp [c - g]_+",
        plot=_plot_shadow_rewards,
    ),
    ClaimSpec(
        "optimum-routes",
        "per instance and second route, the certified intervals [F, F + gap] around F* of "
        "Frank-Wolfe and of the route overlap: route lower - FW lower <= FW gap and FW lower "
        "- route lower <= route width (routes: plain Frank-Wolfe with a value-iteration "
        "oracle, SLSQP on the flow constraints, and for linear utilities the LP and joint "
        "value iteration; SPEC section 8; proofs_notes/optimum.md#routes)",
        "derived here",
        _optimum_routes,
        "Frank-Wolfe on the flow constraints with gamma^2 (a discount applied twice)",
    ),
    ClaimSpec(
        "price-of-localization",
        "per instance and observation radius beta, F_loc(beta) - F(0) <= F* - F(0), F_loc the "
        "best localized F found by exact gradient ascent (a lower bound on the localized "
        "optimum) and F* Frank-Wolfe's certified upper bound; the price F* - F_loc is in the "
        "series (SPEC section 8; proofs_notes/optimum.md#localized)",
        "derived here",
        _price_of_localization,
        "F* read off Frank-Wolfe's first iterate, without its certificate",
    ),
)
"""Every claim of the report, in order."""


def claim_names() -> list[str]:
    """The names of :data:`CLAIMS`, in order."""
    return [c.name for c in CLAIMS]


def _environment() -> dict[str, str]:
    """Package version, commit (when run from a git checkout), numpy, scipy, Python."""
    import importlib.metadata

    import scipy

    try:
        version = importlib.metadata.version("marl-oracle")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    commit = "not a git checkout"
    root = Path(__file__).resolve().parent.parent
    if (root / ".git").exists():
        try:
            out = subprocess.run(
                ["git", "-C", str(root), "rev-parse", "HEAD"],
                capture_output=True, text=True, timeout=10, check=True,
            ).stdout.strip()
            dirty = subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True, text=True, timeout=10, check=True,
            ).stdout.strip()
            commit = out + (" (with uncommitted changes)" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            commit = "unknown (git not available)"
    return {
        "marl-oracle": version,
        "commit": commit,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
    }


def run_report(
    *,
    quick: bool = False,
    seed: int = 0,
    only: Sequence[str] = (),
    progress: Callable[[int, int, str], None] | None = None,
    executor: Executor | None = None,
) -> Report:
    """Measure every claim (or those named in ``only``) and its planted defect;
    ``progress(done, total, name)`` is called before each claim and once at the end.

    The claims run one after another; each splits its independent pieces (datasets, runs,
    ``K`` values, planted bugs) over ``executor`` with :func:`verify.executors.map_seeded`.
    ``None`` runs them on one local process pool, shut down on return.  Each claim draws
    from its own seed (:func:`claim_seeds` of ``seed``), so the numbers depend on ``seed``
    only, not on the executor or on which claims run.
    """
    names = claim_names()
    unknown = [n for n in only if n not in names]
    if unknown:
        raise ModelError(f"only = {unknown!r}: no such claim; claims are {names}")
    chosen = [c for c in CLAIMS if not only or c.name in only]
    if executor is None:
        with ProcessPoolExecutor() as pool:
            return run_report(quick=quick, seed=seed, only=only, progress=progress,
                              executor=pool)
    seeds = claim_seeds(seed)
    start = time.perf_counter()
    cache: dict[str, Any] = {}
    claims = []
    for k, spec in enumerate(chosen):
        if progress is not None:
            progress(k, len(chosen), spec.name)
        claims.append(_run_claim(spec, ClaimContext(quick, seeds[spec.name], executor,
                                                    cache=cache)))
    if progress is not None:
        progress(len(chosen), len(chosen), "done")
    return Report(tuple(claims), quick, time.perf_counter() - start, seed,
                  tuple(n for n in names if n in only), _environment())


def claim_seeds(seed: int) -> dict[str, int]:
    """Each claim's own seed: the first 32-bit word of child ``k`` of
    ``SeedSequence(seed).spawn(len(CLAIMS))`` for the ``k``-th claim of :data:`CLAIMS`, so
    the claims draw independent streams and a claim's seed does not depend on which others
    run (``--only``)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ModelError(f"seed = {seed!r}, expected an integer >= 0")
    children = np.random.SeedSequence(seed).spawn(len(CLAIMS))
    return {
        spec.name: int(child.generate_state(1)[0])
        for spec, child in zip(CLAIMS, children, strict=True)
    }


# --------------------------------------------------------------------------------------------
# Files: report.json, report.md, plots
# --------------------------------------------------------------------------------------------


def _number(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)


def claim_record(c: Claim) -> dict[str, Any]:
    """A claim as the JSON object of ``report.json``."""
    ev, jd = c.evaluation, c.judgement
    return {
        "name": c.name,
        "statement": c.statement,
        "instance": c.instance,
        "measured": _number(jd.measured),
        "bound": _number(jd.bound),
        "ratio": _number(jd.ratio),
        "margin": _number(jd.margin),
        "verdict": jd.verdict,
        "worst": jd.worst,
        "items": jd.items,
        "exact_items": jd.exact_items,
        "exact_worst": _number(jd.exact_worst),
        "provenance": c.provenance,
        "power": {
            "defect": c.power.defect,
            "ratio": _number(c.power.ratio),
            "verdict": c.power.verdict,
        },
        "seed": c.seed,
        "seconds": c.seconds,
        "per_item": [
            {"item": lab, "measured": _number(float(m)), "bound": _number(float(b))}
            for lab, m, b in zip(ev.labels, ev.measured, ev.bound, strict=True)
        ],
        "series": ev.series,
        "children": [[e, list(k)] for e, k in ev.children],
    }


def _fmt(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else str(x)


def write_report(report: Report, out: str | os.PathLike[str]) -> list[Path]:
    """Write ``report.md``, ``report.json`` and one plot per claim into directory ``out``;
    returns the files written.  A partial report (``only``) removes the plots in ``out`` of
    the claims it did not run, so no stale figure sits next to it."""
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    files = [root / "report.json", root / "report.md"]
    data = {
        "passed": report.passed,
        "claims_pass": report.claims_pass,
        "defects_fail": report.defects_fail,
        "quick": report.quick,
        "partial": bool(report.only),
        "seconds": report.seconds,
        "seed": report.seed,
        "environment": report.environment,
        "claims": [claim_record(c) for c in report.claims],
    }
    files[0].write_text(json.dumps(data, indent=2, allow_nan=False))
    plots = _plots(report, root)
    made = {p.name for p in plots}
    for name in claim_names():
        stale = root / f"{name}.png"
        if stale.name not in made and stale.exists():
            stale.unlink()
    if report.passed:
        headline = "Every claim passes and every planted defect fails"
    else:
        bad = [c.name for c in report.claims if c.verdict == "fail"]
        blind = [c.name for c in report.claims if c.power.verdict == "pass"]
        headline = "REPORT FAILS: " + "; ".join(
            part for part in (
                f"claims failing: {', '.join(bad)}" if bad else "",
                f"planted defects passing: {', '.join(blind)}" if blind else "",
            ) if part
        )
    lines = ["# marl-oracle theorem report", ""]
    if report.only:
        lines += [
            f"**Partial report**: only {', '.join(report.only)} (`--only`); the other "
            f"{len(CLAIMS) - len(report.claims)} claims were not run.",
            "",
        ]
    env = report.environment
    lines += [
        f"{headline} ({'quick' if report.quick else 'full'} run, {report.seconds:.1f} s, "
        f"root seed {report.seed}).",
        "",
        "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()) + ".",
        "",
        "Each claim reads `measured <= bound` per item; ratio = max(measured / bound) over the "
        "items (items with bound 0 must measure within their rounding allowance), margin = "
        "1 - ratio; pass iff ratio <= 1. Power: the claim's planted defect and its ratio, "
        "which must exceed 1.",
        "",
        "| claim | ratio | margin | verdict | power: defect | defect ratio | defect verdict "
        "| provenance | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report.claims:
        defect = c.power.defect.replace("|", "\\|")  # a pipe would end the table cell
        lines.append(
            f"| [{c.name}](#{c.name}) | {_fmt(c.ratio)} | {_fmt(c.margin)} | {c.verdict} | "
            f"{defect} | {_fmt(c.power.ratio)} | {c.power.verdict} | {c.provenance} "
            f"| {c.seconds:.1f} |"
        )
    lines.append("")
    for c in report.claims:
        jd = c.judgement
        lines += [f"## {c.name}", "", c.statement + ".", ""]
        lines += [f"Instance: {c.instance}. Seed: {c.seed} (root seed {report.seed}).", ""]
        exact = (
            f"{jd.exact_items} of them with bound 0 (largest measured there "
            f"{_fmt(jd.exact_worst)}, within the rounding allowance or the ratio is inf)"
            if jd.exact_items else "none with bound 0"
        )
        lines += [
            f"Ratio {_fmt(jd.ratio)} at {jd.worst} (measured {_fmt(jd.measured)}, bound "
            f"{_fmt(jd.bound)}) over {jd.items} items, {exact}; verdict {jd.verdict}. "
            f"Provenance: {c.provenance}.",
            "",
            f"Planted defect: {c.power.defect}; ratio {_fmt(c.power.ratio)}, verdict "
            f"{c.power.verdict}.",
            "",
        ]
        if f"{c.name}.png" in made:
            lines += [f"![{c.name}]({c.name}.png)", ""]
    files[1].write_text("\n".join(lines))
    return files + plots


def _default_plot(ax: Any, claim: Claim) -> None:
    """Measured (solid, circles) and bound (dashed, squares) per item against ``x``, one
    colour per group, log ``y``; exact zeros as open triangles on the x axis."""
    from matplotlib.lines import Line2D

    ev = claim.evaluation
    x = ev.x if ev.x is not None else np.arange(ev.measured.size, dtype=np.float64)
    groups = ev.groups if ev.groups is not None else ("",) * ev.measured.size
    order = list(dict.fromkeys(groups))
    for k, g in enumerate(order):
        color = f"C{k % 10}"
        sel = np.array([h == g for h in groups])
        label = g if g and len(order) <= 8 else None
        log_series(ax, x[sel], ev.measured[sel], "o-", label, "_nolegend_", color=color)
        log_series(ax, x[sel], ev.bound[sel], "s--", None, color=color, alpha=0.6)
    style = [
        Line2D([], [], color="k", marker="o", ls="-", label="measured"),
        Line2D([], [], color="k", marker="s", ls="--", alpha=0.6, label="bound"),
        Line2D([], [], color="k", marker="v", ls="", mfc="none", label=ZERO_MARKER_NOTE),
    ]
    bad = claim.planted
    if bad is not None and bad.measured.shape == ev.measured.shape:
        # the planted defect, in grey: whichever side it changed
        side = bad.measured if not np.array_equal(bad.measured, ev.measured) else bad.bound
        if not np.array_equal(side, ev.bound):
            for g in order:
                sel = np.array([h == g for h in groups])
                log_series(ax, x[sel], side[sel], "x:", None, color="0.5")
            style.append(Line2D([], [], color="0.5", marker="x", ls=":",
                                label=f"planted defect (ratio {_fmt(claim.power.ratio)})"))
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=handles + style, fontsize=6, ncol=2 if len(handles) > 6 else 1)
    if ev.log_x:
        ax.set_xscale("log")
    ax.set_xlabel(ev.x_label)
    ax.set_ylabel(ev.y_label)


def _plots(report: Report, root: Path) -> list[Path]:
    plt = pyplot()
    if plt is None:  # plots are optional; the tables are complete without them
        return []
    written = []
    for c in report.claims:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        spec = next((s for s in CLAIMS if s.name == c.name), None)
        custom = spec.plot if spec is not None else None
        (custom or _default_plot)(ax, c)
        gamma = f", gamma = {c.evaluation.gamma:g}" if c.evaluation.gamma is not None else ""
        instance = "\n".join(textwrap.wrap(c.instance, 110))
        ax.set_title(f"{c.name}: ratio {_fmt(c.ratio)}, {c.verdict}{gamma}\n{instance}",
                     fontsize=7)
        if custom is not None:
            ax.legend(fontsize=6)
        path = root / f"{c.name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
