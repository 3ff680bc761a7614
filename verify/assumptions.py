"""Assumption checks for a user's own model (SPEC sections 2, 3, 5 and 6).

The results this project verifies rest on assumptions about the model, not only on the
algebra.  This module measures each assumption on a concrete model and compares the
measurement with what the theory assumes or declares, in one typed
:class:`AssumptionVerdict` per assumption:

1. **Spatial decay** (SPEC section 3, ``proofs_notes/decay.md``).  For every agent ``i`` and
   radius ``kappa`` the decay spread of the shadow Q-function,
   ``D_i(kappa) = max |Q_i(s,a) - Q_i(s',a')|`` over pairs equal on ``N_i^kappa``, against the
   assumed bound, by default the derived ``Delta_i gamma^t0(kappa, beta) / (1 - gamma)`` (0 once
   ``N_i^kappa`` is ``i``'s whole component).  Also the fitted per-hop decay rate of
   ``max_i D_i(kappa)`` next to ``gamma``.  :func:`check_decay`.
2. **Utility constants** (SPEC section 2, :class:`~reference.networked.utilities.UtilityConstants`).
   Lower estimates of each utility's gradient bound ``sup max |grad f|`` and smoothness
   ``L`` over the reachable occupancies ``{lam >= 0, sum lam = 1/(1-gamma)}``, against the
   declared constants.  :func:`check_utility_constants`.
3. **Concentrability** (SPEC section 5, ``proofs_notes/mappo-bound.md#inexact``; SPEC section 6).
   For a sampling policy ``pi_k`` and a comparator ``pi*`` the per-agent context ratios
   ``max_c w*^m(c) / w_k^m(c)`` with ``w^m(s, a^{0:m-1}) = nu(s) pi^{0:m-1}(a^{0:m-1}|s)``; and,
   for offline data drawn from a behaviour law ``mu(s, a) = mu_S(s) b(a|s)``,
   ``max_{s,a} d*(s,a) / mu(s,a)`` with ``d*(s,a) = nu*(s) pi*(a|s)``; ``inf`` where the
   sampling law has no mass where the comparator does.  :func:`check_concentrability`.

Every measurement is a **lower** estimate of the true supremum (a maximum over the points
actually visited), so a verdict that fails is a proof that the assumption is violated on
this model, while a verdict that holds is evidence, not proof (except for the decay and
concentrability checks, which are exact maxima over the whole finite space).
:func:`check_assumptions` runs the checks that apply to a networked model or a game and
collects them in an :class:`AssumptionReport`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from reference._arrays import (
    FloatArray,
    IntArray,
    as_float_array,
    check_distribution_rows,
    frozen,
)
from reference.cooperative.exact import context_weights, evaluate_game
from reference.cooperative.game import CooperativeMarkovGame
from reference.cooperative.mappo import sigma_weights
from reference.cooperative.offline import OfflineDataset
from reference.cooperative.pessimism import optimal_comparator
from reference.cooperative.policy import ConditionalPolicy
from reference.errors import DatasetError, ModelError, PolicyError
from reference.networked.exact import NetworkedSolution, check_utilities, solve
from reference.networked.model import NetworkedMDP
from reference.networked.policy import LocalizedSoftmaxPolicy
from reference.networked.truncation import decay_bound, decay_profile, first_escape_time
from reference.networked.utilities import Utility
from reference.tabular import occupancy
from verify.experiments import fit_rate
from verify.tolerances import (
    EPS,
    finite_difference_tolerance,
    linear_solve_tolerance,
    summation_tolerance,
)

__all__ = [
    "DEFAULT_STEPS",
    "AssumptionReport",
    "AssumptionVerdict",
    "ConcentrabilityCheck",
    "DecayBound",
    "DecayCheck",
    "UtilityConstantsCheck",
    "check_assumptions",
    "check_concentrability",
    "check_decay",
    "check_utility_constants",
    "spread_tolerance",
]

DecayBound = Callable[[float, float, int, int], float]
"""An assumed decay bound ``(Delta_i, gamma, kappa, beta) -> bound on D_i(kappa)``."""

DEFAULT_STEPS: tuple[float, ...] = (1.0, 1e-2, 1e-4, 1e-6)
"""Fractions ``t`` of a segment ``[x, y]`` at which :func:`check_utility_constants` takes
difference quotients: ``t = 1`` measures the secant over the whole segment, small ``t`` the
local curvature at ``x`` (which may lie on a face of the simplex)."""

_DECAY_REFERENCE = "SPEC section 3; proofs_notes/decay.md"
_UTILITY_REFERENCE = "SPEC section 2; reference/networked/utilities.py UtilityConstants"
_MAPPO_REFERENCE = "SPEC section 5; proofs_notes/mappo-bound.md#inexact"
_OFFLINE_REFERENCE = "SPEC section 6; proofs_notes/pessimism.md#bound"


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AssumptionVerdict:
    """One assumption, measured on one model.

    Attributes:
        name: which assumption (``"spatial decay"``, ``"utility smoothness"``, ...).
        assumed: the value the theory assumes or the model declares, at the worst case.
        measured: the measured value at the same case.
        holds: whether ``measured <= assumed`` up to the stated tolerance.
        detail: where the worst case is, the tolerance, and the per-case values.
        reference: the SPEC section and proofs note that state the assumption.
    """

    name: str
    assumed: float
    measured: float
    holds: bool
    detail: str
    reference: str


@dataclass(frozen=True)
class DecayCheck:
    """Result of :func:`check_decay`.

    Attributes:
        kappa: ``(K,)`` radii.
        spread: ``(n, K)`` ``D_i(kappa)`` of the shadow Q-functions.
        bound: ``(n, K)`` the assumed bound on ``D_i(kappa)`` (0 once ``N_i^kappa`` is ``i``'s
            whole component, where ``D_i`` vanishes exactly).
        max_spread: ``(K,)`` ``max_i D_i(kappa)``.
        max_bound: ``(K,)`` ``max_i bound[i, kappa]``.
        tolerance: ``(n, K)`` rounding allowance of ``spread - bound``
            (:func:`spread_tolerance` plus the rounding of the bound).
        rate: fitted per-hop rate ``exp(slope)`` of ``log max_spread`` against ``kappa``, over
            the radii whose spread exceeds its rounding (NaN with fewer than two).
        bound_rate: the same fit of ``max_bound`` over the same radii (``gamma`` for the
            default bound with ``beta = 0``).
        gamma: discount factor.
        beta: observation radius of the policy.
        verdict: holds iff ``spread <= bound + tolerance`` for every agent and radius.
    """

    kappa: IntArray
    spread: FloatArray
    bound: FloatArray
    max_spread: FloatArray
    max_bound: FloatArray
    tolerance: FloatArray
    rate: float
    bound_rate: float
    gamma: float
    beta: int
    verdict: AssumptionVerdict


@dataclass(frozen=True)
class UtilityConstantsCheck:
    """Result of :func:`check_utility_constants`, one entry per utility.

    Attributes:
        names: class name of each utility.
        declared_gradient_bound: ``(n,)`` ``constants.gradient_bound``.
        measured_gradient_bound: ``(n,)`` ``max |grad f|`` over the evaluated occupancies.
        gradient_tolerance: ``(n,)`` rounding allowance of one gradient entry.
        declared_smoothness: ``(n,)`` ``constants.smoothness``.
        measured_smoothness: ``(n,)`` the difference quotient
            ``||grad f(z) - grad f(x)||_2 / ||z - x||_2`` with the largest excess over its
            tolerance; each quotient is a lower bound of any Lipschitz constant of
            ``grad f`` on the segment (no truncation error).
        smoothness_tolerance: ``(n,)`` the rounding allowance of that quotient.
        directions: random segments per utility.
        steps: fractions of each segment used (:data:`DEFAULT_STEPS`).
        quotients: difference quotients evaluated in all (the count of cases checked).
        verdicts: ``(gradient bound, smoothness)``, each over all utilities.
    """

    names: tuple[str, ...]
    declared_gradient_bound: FloatArray
    measured_gradient_bound: FloatArray
    gradient_tolerance: FloatArray
    declared_smoothness: FloatArray
    measured_smoothness: FloatArray
    smoothness_tolerance: FloatArray
    directions: int
    steps: tuple[float, ...]
    quotients: int
    verdicts: tuple[AssumptionVerdict, AssumptionVerdict]


@dataclass(frozen=True)
class ConcentrabilityCheck:
    """Result of :func:`check_concentrability`.

    Attributes:
        context: ``(N,)`` ``max_c w*^m(c) / w_k^m(c)`` over agent ``m``'s contexts
            ``c = (s, a^{0:m-1})``; ``inf`` where ``w_k^m(c) = 0 < w*^m(c)``.
        action: ``(N,)`` ``C_k^m = max_{c,a} w*^m(c) max(pi*^m, pi_k^m)(a|c) / sigma_k^m(c, a)``
            with ``sigma_k^m(c, a) = w_k^m(c) pi_k^m(a|c)``, the coefficient of the
            Cauchy-Schwarz step in ``mappo-bound.md#inexact``.
        offline: ``max_{s,a} d*(s,a) / mu(s,a)`` under the behaviour law, or ``None`` when no
            behaviour policy was given.
        empirical: the same against a dataset's empirical law ``n(s,a)/n``, or ``None``.
        cap: the largest acceptable coefficient (``inf``: any finite value).
        mass_threshold: weights at or below this count as zero mass (the certified error of
            the visitation solves plus the rounding of the prefix products).
        verdicts: one per coefficient family computed.
    """

    context: FloatArray
    action: FloatArray
    offline: float | None
    empirical: float | None
    cap: float
    mass_threshold: float
    verdicts: tuple[AssumptionVerdict, ...]


@dataclass(frozen=True)
class AssumptionReport:
    """Every verdict of :func:`check_assumptions`, with the records behind them.

    Attributes:
        verdicts: one per assumption checked.
        decay: the spatial-decay record (networked models), else ``None``.
        utilities: the utility-constants record (networked models), else ``None``.
        concentrability: the concentrability record (games), else ``None``.
    """

    verdicts: tuple[AssumptionVerdict, ...]
    decay: DecayCheck | None = None
    utilities: UtilityConstantsCheck | None = None
    concentrability: ConcentrabilityCheck | None = None

    @property
    def all_hold(self) -> bool:
        """Whether every verdict holds."""
        return all(v.holds for v in self.verdicts)


# --------------------------------------------------------------------------------------------
# 1. Spatial decay
# --------------------------------------------------------------------------------------------


def spread_tolerance(model: NetworkedMDP, solution: NetworkedSolution) -> float:
    """Rounding allowance of a computed decay spread.

    A shadow Q entry is ``r_i + gamma sum_{s'} P V_i(s')``: it inherits at most the certified
    ``||V_i - V_i^true||_inf`` (``solution.value_error_bound``) and the rounding of a sum of
    ``|S|`` terms of size at most ``max |V| + 1`` (:func:`~verify.tolerances.summation_tolerance`);
    a spread is a difference of two entries, hence twice that.
    """
    v_max = float(np.max(np.abs(solution.require_shadow_values())))
    return 2.0 * (
        solution.value_error_bound + summation_tolerance(model.states.size, v_max + 1.0)
    )


def check_decay(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    utilities: Sequence[Utility],
    *,
    kappas: Sequence[int] | None = None,
    bound: DecayBound = decay_bound,
    solution: NetworkedSolution | None = None,
) -> DecayCheck:
    """Measured ``D_i(kappa)`` against an assumed bound, for every agent and radius.

    ``D_i(kappa) <= bound(Delta_i, gamma, kappa, beta)`` for ``kappa`` below ``i``'s component
    radius and ``D_i(kappa) = 0`` from there on (SPEC section 3).  The default ``bound`` is the
    derived ``Delta_i gamma^t0 / (1 - gamma)``
    (:func:`~reference.networked.truncation.decay_bound`); pass another to test a different
    (c, rho) assumption, e.g.
    ``lambda delta, gamma, k, beta: c * rho ** (k + 1)``.

    Args:
        model: the networked MDP.
        policy: a localized softmax policy on ``model``.
        utilities: one utility per agent; the shadow rewards are their gradients at the
            policy's local occupancies, and ``Delta_i = max r_i - min r_i``.
        kappas: radii to check (default ``0..diameter``).
        bound: the assumed bound.
        solution: ``solve(model, policy, utilities, values="per-agent")`` if already
            computed (the spread's tolerance uses the per-agent values).
    """
    if policy.model is not model:
        raise PolicyError("the policy was built for a different model object")
    check_utilities(model, utilities)
    sol = solve(model, policy, utilities, values="per-agent") if solution is None else solution
    prof = decay_profile(model, policy, sol, kappas)
    ks = [int(k) for k in prof.kappa]
    table = np.array(
        [
            [
                0.0 if k >= model.graph.component_radius(i)
                else float(bound(float(prof.delta[i]), model.gamma, k, policy.beta))
                for k in ks
            ]
            for i in range(model.n)
        ]
    )
    # the bound's own rounding: gamma**t0 and two products, (t0 + 4) eps relative
    t0 = np.array([first_escape_time(k, policy.beta) for k in ks], dtype=np.float64)
    tol = spread_tolerance(model, sol) + (t0[None, :] + 4.0) * EPS * np.abs(table)
    excess = prof.spread - table - tol
    holds = bool(np.all(excess <= 0.0))
    max_spread = prof.spread.max(axis=0)
    max_bound = table.max(axis=0)
    above = max_spread > tol.max(axis=0)
    rate = fit_rate(prof.kappa[above], max_spread[above])
    bound_rate = fit_rate(prof.kappa[above], max_bound[above])
    if holds:
        # the tightest case: the largest spread relative to a positive bound
        ratio = np.where(table > 0, prof.spread / np.where(table > 0, table, 1.0), -np.inf)
        i, k = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    else:
        i, k = np.unravel_index(int(np.argmax(excess)), excess.shape)
    rows = ", ".join(
        f"kappa={kk}: {d:.3e} <= {b:.3e}" if d <= b + float(t.max()) else
        f"kappa={kk}: {d:.3e} > {b:.3e}"
        for kk, d, b, t in zip(ks, max_spread, max_bound, tol.T, strict=True)
    )
    where = "tightest" if holds else "violated"
    detail = (
        f"{where} at agent {int(i)}, kappa={ks[int(k)]} ({model.n} agents x {len(ks)} radii "
        f"checked); max_i D_i(kappa) vs bound: {rows}; "
        f"tolerance {float(tol.max()):.1e}; fitted per-hop rate {_fmt(rate)} "
        f"(bound's {_fmt(bound_rate)}, gamma {model.gamma:g}, beta {policy.beta})"
    )
    verdict = AssumptionVerdict(
        name="spatial decay",
        assumed=float(table[i, k]),
        measured=float(prof.spread[i, k]),
        holds=holds,
        detail=detail,
        reference=_DECAY_REFERENCE,
    )
    return DecayCheck(
        kappa=prof.kappa,
        spread=prof.spread,
        bound=frozen(table),
        max_spread=frozen(max_spread),
        max_bound=frozen(max_bound),
        tolerance=frozen(tol),
        rate=rate,
        bound_rate=bound_rate,
        gamma=model.gamma,
        beta=policy.beta,
        verdict=verdict,
    )


# --------------------------------------------------------------------------------------------
# 2. Utility constants
# --------------------------------------------------------------------------------------------


def _random_occupancy(
    shape: tuple[int, int], gamma: float, rng: np.random.Generator
) -> FloatArray:
    """A reachable occupancy ``lam = d / (1-gamma)`` on a random face of the simplex.

    Each entry is kept with probability 1/2 (at least one is), and ``d`` is uniform
    (Dirichlet(1)) on the kept entries, so faces and vertices -- where the smoothed log
    utilities attain their constants -- are visited as well as the interior.
    """
    m = shape[0] * shape[1]
    keep = rng.random(m) < 0.5
    if not keep.any():
        keep[int(rng.integers(m))] = True
    d = np.zeros(m)
    d[keep] = rng.dirichlet(np.ones(int(keep.sum())))
    out: FloatArray = d.reshape(shape) / (1.0 - gamma)
    return out


def _entry_tolerance(m: int, scale: float) -> float:
    """Rounding of one gradient entry of an ``m``-entry utility: at most that of a sum of
    ``m`` terms of size ``scale + 1`` (:func:`~verify.tolerances.summation_tolerance`), which
    covers the marginal sums and the log of the built-in utilities."""
    return summation_tolerance(m, scale + 1.0)


@dataclass(frozen=True)
class _OneUtility:
    gradient_bound: float
    gradient_tolerance: float
    smoothness: float
    smoothness_tolerance: float
    quotients: int


def _measure_utility(
    f: Utility, rng: np.random.Generator, directions: int, steps: Sequence[float]
) -> _OneUtility:
    shape, gamma = f.shape, f.gamma
    m = shape[0] * shape[1]
    declared = float(f.constants.smoothness)
    grad_max, grad_tol = 0.0, 0.0
    best_key, best_q, best_tol = -math.inf, 0.0, 0.0
    count = 0
    for _ in range(directions):
        x = _random_occupancy(shape, gamma, rng)
        y = _random_occupancy(shape, gamma, rng)
        gx = f.gradient(x)
        scale_x = float(np.max(np.abs(gx)))
        grad_max = max(grad_max, scale_x)
        grad_tol = max(grad_tol, _entry_tolerance(m, scale_x))
        for t in steps:
            z = x + t * (y - x)  # on the segment, so reachable (the set is convex)
            h = float(np.linalg.norm(z - x))
            if h == 0.0:
                continue
            gz = f.gradient(z)
            scale = max(scale_x, float(np.max(np.abs(gz))))
            grad_max = max(grad_max, float(np.max(np.abs(gz))))
            grad_tol = max(grad_tol, _entry_tolerance(m, scale))
            q = float(np.linalg.norm(gz - gx)) / h
            # forward quotient: each gradient is off by at most delta = sqrt(m) * entry
            # rounding in l2, so the quotient by 2 delta / h, which
            # finite_difference_tolerance(0, h, 2 delta) = 3 delta / h + eps covers; plus the
            # relative rounding of the two norms (m terms each)
            delta = math.sqrt(m) * _entry_tolerance(m, scale)
            tol = float(finite_difference_tolerance(np.zeros(()), h, 2.0 * delta))
            tol += q * summation_tolerance(m, 1.0)
            key = q - tol - declared
            if key > best_key:
                best_key, best_q, best_tol = key, q, tol
            count += 1
    return _OneUtility(grad_max, grad_tol, best_q, best_tol, count)


def _worst(measured: FloatArray, declared: FloatArray, tol: FloatArray) -> int:
    """Index of the case with the largest relative excess ``(measured - tol)/declared``
    (``+inf`` when a zero declaration is exceeded)."""
    key = np.where(
        declared > 0,
        (measured - tol) / np.where(declared > 0, declared, 1.0),
        np.where(measured > tol, np.inf, -np.inf),
    )
    return int(np.argmax(key))


def check_utility_constants(
    utilities: Sequence[Utility],
    *,
    rng: np.random.Generator,
    directions: int = 32,
    steps: Sequence[float] = DEFAULT_STEPS,
) -> UtilityConstantsCheck:
    """Estimate each utility's gradient bound and smoothness and compare with its declaration.

    For ``directions`` random segments ``[x, y]`` of reachable occupancies
    (``lam >= 0``, ``sum lam = 1/(1-gamma)``; points on random faces, see
    :func:`_random_occupancy`) and each ``t`` in ``steps``, with ``z = x + t (y - x)``:

        measured L      = max ||grad f(z) - grad f(x)||_2 / ||z - x||_2,
        measured bound  = max max_{s,a} |grad f(.)[s, a]|  over every evaluated point.

    ``z`` stays in the (convex) reachable set, so every quotient is a lower bound of any
    Lipschitz constant of ``grad f`` there: there is no truncation error, only rounding, and
    the verdict "smoothness" holds iff every quotient is at most
    ``declared + finite_difference_tolerance(0, h, 2 delta) + q m eps`` (``delta`` the
    rounding of one gradient in l2).  Both are lower estimates of the suprema, so a failing
    verdict proves the declaration wrong; a holding one is evidence only.

    Args:
        utilities: the utilities (one per agent, or any collection).
        rng: the only source of randomness; one child generator per utility
            (``rng.spawn``), so adding a utility does not change the others' points.
        directions: random segments per utility (at least 1).
        steps: fractions ``t`` in ``(0, 1]`` of each segment.
    """
    if isinstance(directions, bool) or not isinstance(directions, int) or directions < 1:
        raise ModelError(f"directions = {directions!r}, expected a positive integer")
    fractions = tuple(float(t) for t in steps)
    if not fractions or not all(0.0 < t <= 1.0 for t in fractions):
        raise ModelError(f"steps = {steps!r}, expected fractions in (0, 1]")
    fs = tuple(utilities)
    if not fs:
        raise ModelError("no utilities given")
    for j, f in enumerate(fs):
        if not isinstance(f, Utility):
            raise ModelError(f"utilities[{j}] = {f!r} is not a Utility")
    results = [
        _measure_utility(f, child, directions, fractions)
        for f, child in zip(fs, rng.spawn(len(fs)), strict=True)
    ]
    names = tuple(f.name for f in fs)
    g_dec = np.array([float(f.constants.gradient_bound) for f in fs])
    g_mes = np.array([r.gradient_bound for r in results])
    g_tol = np.array([r.gradient_tolerance for r in results])
    l_dec = np.array([float(f.constants.smoothness) for f in fs])
    l_mes = np.array([r.smoothness for r in results])
    l_tol = np.array([r.smoothness_tolerance for r in results])
    count = sum(r.quotients for r in results)
    verdicts = (
        _constant_verdict("utility gradient bound", names, g_dec, g_mes, g_tol,
                          f"max |grad f| over {count + len(fs) * directions} occupancies"),
        _constant_verdict("utility smoothness", names, l_dec, l_mes, l_tol,
                          f"{count} difference quotients ({directions} segments x "
                          f"{len(fractions)} steps per utility)"),
    )
    return UtilityConstantsCheck(
        names=names,
        declared_gradient_bound=frozen(g_dec),
        measured_gradient_bound=frozen(g_mes),
        gradient_tolerance=frozen(g_tol),
        declared_smoothness=frozen(l_dec),
        measured_smoothness=frozen(l_mes),
        smoothness_tolerance=frozen(l_tol),
        directions=directions,
        steps=fractions,
        quotients=count,
        verdicts=verdicts,
    )


def _constant_verdict(
    name: str,
    names: tuple[str, ...],
    declared: FloatArray,
    measured: FloatArray,
    tol: FloatArray,
    how: str,
) -> AssumptionVerdict:
    holds = bool(np.all(measured <= declared + tol))
    w = _worst(measured, declared, tol)
    per = ", ".join(f"{m:.4g}/{d:.4g}" for m, d in zip(measured, declared, strict=True))
    detail = (
        f"worst utility {w} ({names[w]}): measured {measured[w]:.6g} vs declared "
        f"{declared[w]:.6g} + tolerance {tol[w]:.1e}; measured/declared per utility: {per}; "
        f"{how}"
    )
    return AssumptionVerdict(
        name=name,
        assumed=float(declared[w]),
        measured=float(measured[w]),
        holds=holds,
        detail=detail,
        reference=_UTILITY_REFERENCE,
    )


# --------------------------------------------------------------------------------------------
# 3. Concentrability
# --------------------------------------------------------------------------------------------


def _max_ratio(numerator: FloatArray, denominator: FloatArray, threshold: float) -> float:
    """``max numerator / denominator`` over entries with ``numerator > threshold``; ``inf`` if
    any of them has ``denominator <= threshold`` (no mass where the comparator has some);
    0 if the numerator has no mass above the threshold."""
    support = numerator > threshold
    if not support.any():
        return 0.0
    if np.any(denominator[support] <= threshold):
        return math.inf
    return float(np.max(numerator[support] / denominator[support]))


def _mass_threshold(game: CooperativeMarkovGame) -> float:
    """Weights at or below this count as zero: ``nu = (1-gamma) lam_S`` from one LU solve is
    within ``linear_solve_tolerance(nS, gamma, 1)`` of the truth (``||nu||_inf <= 1``), and the
    prefix products add at most ``N + 1`` roundings of numbers in ``[0, 1]``."""
    return linear_solve_tolerance(game.n_states, game.gamma, 1.0) + summation_tolerance(
        game.n_agents + 1, 1.0
    )


def check_concentrability(
    game: CooperativeMarkovGame,
    *,
    policy: ConditionalPolicy | None = None,
    comparator: ConditionalPolicy | None = None,
    behaviour: npt.ArrayLike | None = None,
    state_distribution: npt.ArrayLike | None = None,
    dataset: OfflineDataset | None = None,
    cap: float = math.inf,
) -> ConcentrabilityCheck:
    """Concentrability coefficients of a sampling distribution against a comparator.

    With ``nu_pi = (1-gamma) lam_S^pi`` and agent ``m``'s context weights
    ``w^m_pi(s, a^{0:m-1}) = nu_pi(s) pi^{0:m-1}(a^{0:m-1}|s)``
    (:func:`~reference.cooperative.exact.context_weights`):

        context[m] = max_c w*^m(c) / w_k^m(c),
        action[m]  = max_{c,a} w*^m(c) max(pi*^m, pi_k^m)(a|c) / sigma_k^m(c, a)
                     (``C_k^m`` of ``proofs_notes/mappo-bound.md#inexact``),
        offline    = max_{s,a} d*(s,a) / mu(s,a),   d* = nu* pi*,  mu = mu_S b,

    each ``inf`` where the sampling law has no mass where the comparator has some.  The
    MA-PPO verdict holds iff every ``context[m]`` is finite and ``<= cap``; the offline
    verdicts iff ``offline`` (and ``empirical``) is finite and ``<= cap``.

    Args:
        game: the cooperative Markov game.
        policy: the sampling policy ``pi_k`` (default uniform, SPEC's ``pi_0``).
        comparator: ``pi*`` (default an optimal deterministic policy,
            :func:`~reference.cooperative.pessimism.optimal_comparator`).
        behaviour: ``(nS, |A|)`` joint behaviour policy ``b(a|s)`` of offline data (flat joint
            actions, agent 0 most significant), e.g.
            :func:`~reference.cooperative.offline.behaviour_policy`.
        state_distribution: ``(nS,)`` law ``mu_S`` of the data's states (default the
            behaviour's visitation ``nu_b``, as in
            :func:`~reference.cooperative.offline.sample_dataset`).
        dataset: offline data, compared through its empirical law ``n(s,a)/n``.
        cap: the largest acceptable coefficient (default ``inf``: any finite value passes).
    """
    try:
        cap = float(cap)
    except (TypeError, ValueError):
        raise ModelError(f"cap = {cap!r} is not a number") from None
    if math.isnan(cap) or cap < 0:
        raise ModelError(f"cap = {cap!r}, expected a number >= 0 (inf for 'any finite')")
    pi_k = ConditionalPolicy.uniform(game) if policy is None else policy
    pi_star = optimal_comparator(game) if comparator is None else comparator
    for label, p in (("policy", pi_k), ("comparator", pi_star)):
        if p.game is not game:
            raise PolicyError(f"the {label} was built for a different game object")
    threshold = _mass_threshold(game)
    nu_k = evaluate_game(game, pi_k).nu
    nu_star = evaluate_game(game, pi_star).nu
    ctx = np.empty(game.n_agents)
    act = np.empty(game.n_agents)
    for m in range(game.n_agents):
        w_star = context_weights(pi_star, nu_star, m)
        ctx[m] = _max_ratio(w_star, context_weights(pi_k, nu_k, m), threshold)
        top = w_star[..., None] * np.maximum(pi_star.conditionals[m], pi_k.conditionals[m])
        act[m] = _max_ratio(top, sigma_weights(pi_k, nu_k, m), threshold)
    worst = int(np.argmax(ctx))
    per = ", ".join(_fmt(float(c)) for c in ctx)
    per_act = ", ".join(_fmt(float(c)) for c in act)
    verdicts = [
        AssumptionVerdict(
            name="concentrability (MA-PPO sampling)",
            assumed=cap,
            measured=float(ctx[worst]),
            holds=bool(np.all(np.isfinite(ctx) & (ctx <= cap))),
            detail=(
                f"max_c w*^m(c)/w_k^m(c) per agent: [{per}] (worst agent {worst}); with "
                f"actions C_k^m: [{per_act}]; masses <= {threshold:.1e} count as zero"
            ),
            reference=_MAPPO_REFERENCE,
        )
    ]
    d_star = nu_star[:, None] * pi_star.joint_matrix()
    offline: float | None = None
    empirical: float | None = None
    if behaviour is not None:
        b = as_float_array(
            behaviour, "behaviour", shape=(game.n_states, game.n_joint_actions),
            error=PolicyError,
        )
        check_distribution_rows(b, "behaviour", error=PolicyError)
        if state_distribution is None:
            mu_s = (1.0 - game.gamma) * occupancy(game.tabular, b).lam_S
            where = "mu_S = nu_b"
        else:
            mu_s = as_float_array(
                state_distribution, "state_distribution", shape=(game.n_states,),
                error=DatasetError,
            )
            check_distribution_rows(mu_s[None, :], "state_distribution", error=DatasetError)
            where = "given mu_S"
        offline = _max_ratio(d_star, mu_s[:, None] * b, threshold)
        verdicts.append(_offline_verdict("concentrability (offline behaviour)", offline, cap,
                                         d_star, mu_s[:, None] * b, threshold, where))
    if dataset is not None:
        dataset.check_game(game)
        counts = np.bincount(
            dataset.states * game.n_joint_actions + dataset.joint_actions,
            minlength=game.n_states * game.n_joint_actions,
        ).astype(np.float64)
        mu_hat = (counts / dataset.n_samples).reshape(game.n_states, game.n_joint_actions)
        empirical = _max_ratio(d_star, mu_hat, threshold)
        verdicts.append(_offline_verdict(
            "concentrability (offline dataset)", empirical, cap, d_star, mu_hat, threshold,
            f"empirical law of {dataset.n_samples} samples",
        ))
    return ConcentrabilityCheck(
        context=frozen(ctx),
        action=frozen(act),
        offline=offline,
        empirical=empirical,
        cap=cap,
        mass_threshold=threshold,
        verdicts=tuple(verdicts),
    )


def _offline_verdict(
    name: str,
    value: float,
    cap: float,
    d_star: FloatArray,
    mu: FloatArray,
    threshold: float,
    where: str,
) -> AssumptionVerdict:
    missed = (d_star > threshold) & (mu <= threshold)
    if missed.any():
        s, a = (int(x) for x in np.argwhere(missed)[0])
        at = f"mu has no mass at (s={s}, a={a}) where d* = {d_star[s, a]:.4g}"
    else:
        ratio = np.where(d_star > threshold, d_star / np.where(mu > threshold, mu, 1.0), 0.0)
        s, a = (int(x) for x in np.unravel_index(int(np.argmax(ratio)), ratio.shape))
        at = f"attained at (s={s}, a={a}): d* = {d_star[s, a]:.4g}, mu = {mu[s, a]:.4g}"
    return AssumptionVerdict(
        name=name,
        assumed=cap,
        measured=value,
        holds=math.isfinite(value) and value <= cap,
        detail=f"max_(s,a) d*(s,a)/mu(s,a) = {_fmt(value)} ({where}); {at}",
        reference=_OFFLINE_REFERENCE,
    )


# --------------------------------------------------------------------------------------------
# All of them
# --------------------------------------------------------------------------------------------


def check_assumptions(
    model_or_game: NetworkedMDP | CooperativeMarkovGame,
    *,
    policy: LocalizedSoftmaxPolicy | ConditionalPolicy | None = None,
    utilities: Sequence[Utility] | None = None,
    kappas: Sequence[int] | None = None,
    rng: np.random.Generator,
    directions: int = 32,
    concentrability_cap: float = math.inf,
    bound: DecayBound = decay_bound,
    comparator: ConditionalPolicy | None = None,
    behaviour: npt.ArrayLike | None = None,
    state_distribution: npt.ArrayLike | None = None,
    dataset: OfflineDataset | None = None,
) -> AssumptionReport:
    """Every assumption that applies to a networked model or to a cooperative game.

    * :class:`~reference.networked.model.NetworkedMDP`: spatial decay (:func:`check_decay`,
      with ``kappas`` and ``bound``) and the utility constants
      (:func:`check_utility_constants`, with ``rng`` and ``directions``).  ``utilities`` is
      required; ``policy`` is a :class:`LocalizedSoftmaxPolicy` (default uniform, ``beta = 0``).
    * :class:`~reference.cooperative.game.CooperativeMarkovGame`: concentrability
      (:func:`check_concentrability`, with ``policy`` a :class:`ConditionalPolicy`,
      ``comparator``, ``behaviour``, ``state_distribution``, ``dataset`` and
      ``concentrability_cap``).  ``rng`` is not used (every quantity is exact).

    Options that do not apply to the given kind of model raise :class:`ModelError`.
    """
    if isinstance(model_or_game, NetworkedMDP):
        game_only = {
            "comparator": comparator, "behaviour": behaviour,
            "state_distribution": state_distribution, "dataset": dataset,
        }
        extra = [k for k, v in game_only.items() if v is not None]
        if extra:
            raise ModelError(f"{', '.join(extra)} apply to cooperative games only")
        model = model_or_game
        if utilities is None:
            raise ModelError("a networked model needs utilities, one per agent")
        if policy is None:
            pol = LocalizedSoftmaxPolicy.uniform(model, 0)
        elif isinstance(policy, LocalizedSoftmaxPolicy):
            pol = policy
        else:
            raise PolicyError(
                f"policy is a {type(policy).__name__}, expected a LocalizedSoftmaxPolicy"
            )
        decay = check_decay(model, pol, utilities, kappas=kappas, bound=bound)
        consts = check_utility_constants(utilities, rng=rng, directions=directions)
        return AssumptionReport(
            verdicts=(decay.verdict, *consts.verdicts), decay=decay, utilities=consts
        )
    if isinstance(model_or_game, CooperativeMarkovGame):
        if utilities is not None or kappas is not None:
            raise ModelError("utilities and kappas apply to networked models only")
        if policy is not None and not isinstance(policy, ConditionalPolicy):
            raise PolicyError(
                f"policy is a {type(policy).__name__}, expected a ConditionalPolicy"
            )
        conc = check_concentrability(
            model_or_game, policy=policy, comparator=comparator, behaviour=behaviour,
            state_distribution=state_distribution, dataset=dataset, cap=concentrability_cap,
        )
        return AssumptionReport(verdicts=conc.verdicts, concentrability=conc)
    raise ModelError(
        f"model_or_game is a {type(model_or_game).__name__}, expected a NetworkedMDP or a "
        "CooperativeMarkovGame"
    )


def _fmt(x: float) -> str:
    return "inf" if math.isinf(x) else "nan" if math.isnan(x) else f"{x:.4g}"
