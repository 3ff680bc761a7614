"""Exact rational arithmetic: the third route to every exact quantity (SPEC section 1).

SPEC section 1 asks for "at least two independent routes for every exact quantity: a direct
linear solve; an iteration with a certified stopping bound; on tiny instances, exact rational
arithmetic with sympy".  This module is that last route.  It shares no numerical code with
``reference`` (only index bookkeeping: joint-state digits, neighbourhood and observation
indices, which the tests of ``reference.networked`` check on their own).  It reads an
instance's float64 arrays, converts every entry *exactly* to a rational (every finite float64
is a dyadic rational ``m 2^e``; :func:`exact_rational` uses ``float.as_integer_ratio``, never
``nsimplify``), and solves the same equations in exact arithmetic.  The rational instance
therefore **is** the float instance, and the float routes must agree with it up to their
certified error bounds plus the rounding committed while forming their matrices.

Equations (``proofs_notes/occupancy-and-flow.md``)::

    V     = (I - gamma P_pi)^{-1} r_pi,        Q = r + gamma P V,        J = rho . V
    lam_S = (I - gamma P_pi^T)^{-1} rho,       lam[s, a] = lam_S[s] pi[s, a]

solved exactly by fraction-free Gaussian elimination (Bareiss 1968) after scaling each row to
integers, in sympy's exact ``QQ``/``ZZ`` arithmetic (an exact LU solve without a gcd per
operation; about four times faster than sympy's LU over ``QQ`` on these dyadic rationals).  On
a networked model ``P_pi`` is formed exactly from the local kernels, ``P_pi[s, s'] = prod_j
sum_{a_j} pi_j(a_j | o_j(s)) P_j(s'_j | s_{N_j}, a_j)``, never from a float joint kernel, and a
product initial distribution is the exact product of the local ``rho_i``.

Policies.  A float :class:`~reference.networked.LocalizedSoftmaxPolicy` enters through its
probability table ``policy.probs`` read exactly: the float oracles never see ``theta`` except
through that table, so this is exactly the policy they evaluate.  For instances whose policy
should itself be a simple rational, :class:`RationalPolicy` specifies agent ``i``'s factor by
positive rational weights ``w_i[o, a]``::

    pi_i(a | o) = w_i[o, a] / sum_b w_i[o, b],     i.e. the softmax of  theta_i = log w_i,

and :meth:`RationalPolicy.to_float` returns the float policy with ``theta_i = log w_i``
(rounded once) for the float routes.  ``w = 1`` is the uniform policy (``theta = 0``).

Gradient (``proofs_notes/shadow-reward-gradient.md``).  :func:`symbolic_gradient` is a route
independent of the shadow-reward policy-gradient theorem and of the chain-rule Jacobian: for
each parameter ``theta_i[o, b]`` it replaces the weight ``w_i[o, b] = exp(theta_i[o, b])`` by
a symbol ``x``, solves the flow equation exactly as rational functions of ``x``, writes
``F(x) = (1/n) sum_j f_j(lam_j(x))`` as a sympy expression, differentiates it with
``sympy.diff`` and evaluates ``dF/dtheta = x dF/dx`` at ``x = w_i[o, b]``.

Utilities are written again here as sympy expressions of ``lam`` (:func:`symbolic_utility`,
matching ``reference/networked/utilities.py`` formula by formula); shadow rewards are their
``sympy.diff`` with respect to symbols standing for ``lam``, not the float ``gradient`` code.
Linear and quadratic utilities give exact rationals; entropy and KL give exact expressions
with logarithms of rationals, evaluated with ``evalf`` at :data:`EVALF_DIGITS` digits.

Size limits.  Exact arithmetic on float data grows fast: every float is a 53-bit dyadic, a
joint kernel entry is a product of ``n`` of them, and the solution's denominators are the
determinant of the flow matrix (about ``|S|`` times the entries' bit length).  These routines
are for tiny instances; with random float data (pure-Python integers, no gmpy2) they take:

* :func:`rational_tabular_solution`: at most :data:`MAX_EXACT_STATES` ``= 32`` states and
  :data:`MAX_EXACT_STATE_ACTIONS` ``= 256`` state-action pairs (32 states x 4 actions: < 1 s);
* :func:`rational_networked_solution`: at most :data:`MAX_NETWORKED_STATES` ``= 16`` joint
  states (4 binary agents: 0.4 s linear, 1 s quadratic, 2 s entropy, 5 s KL; at 32 joint
  states the logarithmic utilities' exact shadow values take minutes);
* :func:`symbolic_gradient`: at most :data:`MAX_GRADIENT_STATES` ``= 8`` joint states and
  :data:`MAX_GRADIENT_PARAMETERS` ``= 32`` parameters (a 2-agent binary line at ``beta = 0``,
  8 parameters: 0.1-0.4 s; a 3-agent binary line at ``beta = 1``, 32 parameters: 1-2.5 s).

Anything larger raises :class:`~reference.errors.ModelError` before any exact arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import sympy
from sympy.polys.domains import QQ, ZZ
from sympy.polys.rings import PolyRing

from reference._arrays import FloatArray, IntArray, stochastic_tolerance
from reference.errors import ModelError, PolicyError
from reference.networked.exact import check_utilities
from reference.networked.model import NetworkedMDP
from reference.networked.policy import LocalizedSoftmaxPolicy
from reference.networked.utilities import (
    EntropyUtility,
    KLImitationUtility,
    LinearUtility,
    QuadraticImitationUtility,
    Utility,
)
from reference.tabular import TabularMDP

__all__ = [
    "EVALF_DIGITS",
    "MAX_EXACT_STATES",
    "MAX_EXACT_STATE_ACTIONS",
    "MAX_GRADIENT_PARAMETERS",
    "MAX_GRADIENT_STATES",
    "MAX_NETWORKED_STATES",
    "SUPPORTED_UTILITIES",
    "NetworkedFloats",
    "RationalNetworkedSolution",
    "RationalPolicy",
    "RationalTabularSolution",
    "SymbolicGradient",
    "TabularFloats",
    "exact_rational",
    "rational_networked_solution",
    "rational_tabular_solution",
    "symbolic_gradient",
    "symbolic_utility",
    "to_float",
]

EVALF_DIGITS = 40
"""Decimal digits of ``evalf`` before the single rounding to float64 in :func:`to_float`."""

MAX_EXACT_STATES = 32
"""Largest number of states accepted by :func:`rational_tabular_solution`."""

MAX_EXACT_STATE_ACTIONS = 256
"""Largest ``nS * nA`` accepted by :func:`rational_tabular_solution`."""

MAX_NETWORKED_STATES = 16
"""Largest number of joint states accepted by :func:`rational_networked_solution`."""

MAX_GRADIENT_STATES = 8
"""Largest number of joint states accepted by :func:`symbolic_gradient`."""

MAX_GRADIENT_PARAMETERS = 32
"""Largest number of policy parameters ``sum_i |O_i| |A_i|`` for :func:`symbolic_gradient`."""

SUPPORTED_UTILITIES = (LinearUtility, EntropyUtility, QuadraticImitationUtility, KLImitationUtility)
"""The utility classes with an exact sympy form (:func:`symbolic_utility`); exact types only."""

_X = sympy.Symbol("x")  # the weight exp(theta_i[o, b]) being varied; no assumptions (speed)

_Table = list[list[Any]]
"""A nested-list table of exact elements (``QQ`` rationals or ``QQ[x]`` polynomials)."""


# --------------------------------------------------------------------------------------------
# Exact conversion and evaluation
# --------------------------------------------------------------------------------------------


def exact_rational(value: Any, name: str = "value") -> Any:
    """The exact sympy ``Rational`` equal to ``value``.

    A float (or numpy float) is read exactly as the dyadic rational it is
    (``float.as_integer_ratio``); integers, :class:`fractions.Fraction` and sympy rationals are
    kept; strings such as ``"1/3"`` are parsed.  Booleans, non-finite floats and anything
    irrational raise :class:`~reference.errors.ModelError` naming ``name``.
    """
    if isinstance(value, (bool, np.bool_)):
        raise ModelError(f"{name} = {value!r} is a boolean, expected a number")
    if isinstance(value, (float, np.floating)):
        x = float(value)
        if not math.isfinite(x):
            raise ModelError(f"{name} = {x!r}, expected a finite number")
        num, den = x.as_integer_ratio()
        return sympy.Rational(num, den)
    if isinstance(value, (int, np.integer)):
        return sympy.Integer(int(value))
    if isinstance(value, Fraction):
        return sympy.Rational(value.numerator, value.denominator)
    try:
        out = sympy.sympify(value, rational=True)
    except (sympy.SympifyError, TypeError, ValueError):
        raise ModelError(f"{name} = {value!r} cannot be read as an exact rational") from None
    if not getattr(out, "is_Rational", False):
        raise ModelError(f"{name} = {value!r} is not a rational number")
    return out


def _qq(value: Any) -> Any:
    """A ``QQ`` element equal to a float64 (exactly)."""
    num, den = float(value).as_integer_ratio()
    return QQ(num, den)


def _float_scalar(expr: Any) -> float:
    return float(sympy.N(expr, EVALF_DIGITS))


def to_float(value: Any) -> FloatArray:
    """A float64 array of a sympy expression or matrix.

    Each entry is evaluated with ``evalf`` to :data:`EVALF_DIGITS` significant digits and then
    rounded once to float64, so the result is within ``eps/2`` relative (plus ``10^-40``) of
    the exact value.  A scalar gives a 0-d array; a matrix keeps its ``(rows, cols)`` shape.
    """
    if isinstance(value, sympy.MatrixBase):
        out = np.array(
            [[_float_scalar(value[r, c]) for c in range(value.cols)] for r in range(value.rows)],
            dtype=np.float64,
        ).reshape(value.rows, value.cols)
        return out
    return np.array(_float_scalar(value), dtype=np.float64)


def _column(value: Any) -> FloatArray:
    """``(k,)`` float64 of a ``(k, 1)`` sympy column."""
    return to_float(value).reshape(-1)


def _qq_matrix(rows: _Table) -> Any:
    """A sympy Matrix of the ``QQ`` table ``rows``."""
    return sympy.Matrix([[QQ.to_sympy(e) for e in row] for row in rows])


def _bareiss_solve(
    lhs: Sequence[Sequence[Any]], rhs: Sequence[Sequence[Any]], divide: Callable[[Any, Any], Any]
) -> tuple[list[list[Any]], Any]:
    """Fraction-free solve of ``lhs X = rhs`` over an integral domain (Bareiss 1968).

    Returns ``(Y, d)`` with ``X = Y / d``: forward elimination keeps every entry a minor of
    ``[lhs | rhs]`` (each division by the previous pivot is exact), so ``d`` is the last pivot,
    ``+-det(lhs)``; then ``Y = d X = +-adj(lhs) rhs`` lies in the domain (Cramer's rule) and
    back substitution ``Y_k = (d rhs'_k - sum_{j>k} U_kj Y_j) / U_kk`` divides exactly too.
    ``divide(a, b)`` is exact division in the domain.  No gcd is ever computed, which is what
    makes this much faster than LU over the fraction field.
    """
    n, m = len(lhs), len(rhs[0])
    M = [[*row, *extra] for row, extra in zip(lhs, rhs, strict=True)]
    previous: Any = None
    for k in range(n):
        if M[k][k] == 0:
            swap = next((i for i in range(k + 1, n) if M[i][k] != 0), None)
            if swap is None:
                raise ModelError(
                    "singular flow matrix I - gamma P_pi (cannot happen for gamma < 1)"
                )
            M[k], M[swap] = M[swap], M[k]
        pivot, top = M[k][k], M[k]
        for i in range(k + 1, n):
            row, lead = M[i], M[i][k]
            for j in range(k + 1, n + m):
                value = row[j] * pivot - lead * top[j]
                row[j] = value if previous is None else divide(value, previous)
            row[k] = lead - lead
        previous = pivot
    d = M[n - 1][n - 1]
    Y: list[list[Any]] = [[None] * m for _ in range(n)]
    for c in range(m):
        for k in range(n - 1, -1, -1):
            acc = d * M[k][n + c]
            for j in range(k + 1, n):
                acc = acc - M[k][j] * Y[j][c]
            Y[k][c] = divide(acc, M[k][k])
    return Y, d


def _exact_division(a: Any, b: int) -> Any:
    """Exact division by an integer: of an integer (checked) or of a ``QQ`` element."""
    if isinstance(a, int):
        q, r = divmod(a, b)
        if r:
            raise ArithmeticError("inexact division in fraction-free elimination")
        return q
    return a / b


def _solve_rational(lhs: _Table, rhs: _Table) -> _Table:
    """``lhs^{-1} rhs`` for ``QQ`` tables by :func:`_bareiss_solve`.

    Each row of ``lhs`` is scaled to integers by the lcm of its denominators (the right side's
    row by the same factor, kept rational: its denominators may be far larger than the
    matrix's, and folding them into the row scale would inflate every integer of the
    elimination).  Integer entries of the elimination divide exactly; rational right-side
    entries divide as rationals.
    """
    rows, right = [], []
    for row, extra in zip(lhs, rhs, strict=True):
        scale = math.lcm(*[int(e.denominator) for e in row])
        rows.append([int(e.numerator) * (scale // int(e.denominator)) for e in row])
        right.append([e * scale for e in extra])
    Y, d = _bareiss_solve(rows, right, _exact_division)
    return [[QQ.convert(y) / d for y in row] for row in Y]


def _flow_matrix(P: _Table, gamma: Any, transpose: bool) -> _Table:
    """``I - gamma P`` (or ``I - gamma P^T``) over ``QQ``; ``gamma`` is a ``QQ`` element."""
    n = len(P)
    return [
        [
            (QQ.one if s == t else QQ.zero) - gamma * (P[t][s] if transpose else P[s][t])
            for t in range(n)
        ]
        for s in range(n)
    ]


def _check_rows(table: Sequence[Sequence[Any]], name: str) -> None:
    """Non-negative exact rows whose sums are 1 up to float64 rounding (as the float checks)."""
    for r, row in enumerate(table):
        for c, entry in enumerate(row):
            if entry < 0:
                raise PolicyError(f"{name}[{r}, {c}] = {entry} is negative, expected a probability")
        total = sympy.Add(*row)
        if abs(float(total) - 1.0) > stochastic_tolerance(len(row)):
            raise PolicyError(f"{name}[{r}] sums to {float(total)!r}, expected 1")


def _exact_table(
    value: Any, name: str, shape: tuple[int, int], error: type[ModelError] = PolicyError
) -> list[list[Any]]:
    """A ``shape`` table of exact sympy rationals from an array-like or a sympy Matrix."""
    if isinstance(value, sympy.MatrixBase):
        raw = np.empty(value.shape, dtype=object)
        for r in range(value.rows):
            for c in range(value.cols):
                raw[r, c] = value[r, c]
    else:
        try:
            raw = np.asarray(value, dtype=object)
        except (TypeError, ValueError) as exc:
            raise error(f"{name} cannot be read as an array: {exc}") from None
    if raw.shape != shape:
        raise error(f"{name} has shape {raw.shape}, expected {shape}")
    return [
        [exact_rational(raw[r, c], f"{name}[{r}, {c}]") for c in range(shape[1])]
        for r in range(shape[0])
    ]


# --------------------------------------------------------------------------------------------
# Tabular MDPs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TabularFloats:
    """Float64 views of a :class:`RationalTabularSolution` (each entry rounded once).

    Attributes:
        V: ``(nS,)`` values.
        Q: ``(nS, nA)`` action values.
        lam_S: ``(nS,)`` state occupancy (unnormalised, mass ``1/(1-gamma)``).
        lam: ``(nS, nA)`` state-action occupancy (unnormalised).
        J: ``rho . V``.
    """

    V: FloatArray
    Q: FloatArray
    lam_S: FloatArray
    lam: FloatArray
    J: float


@dataclass(frozen=True)
class RationalTabularSolution:
    """Exact values and occupancy of one policy on a :class:`TabularMDP` (SPEC section 1).

    Every entry is a sympy ``Rational``; vectors are ``(k, 1)`` sympy column matrices.

    Attributes:
        V: ``(nS, 1)`` ``V = (I - gamma P_pi)^{-1} r_pi``.
        Q: ``(nS, nA)`` ``Q = r + gamma P V``.
        lam_S: ``(nS, 1)`` ``lam_S = (I - gamma P_pi^T)^{-1} rho``.
        lam: ``(nS, nA)`` ``lam[s, a] = lam_S[s] pi[s, a]`` (unnormalised occupancy).
        J: ``rho . V``; equals ``<lam, r>`` exactly (``proofs_notes/occupancy-and-flow.md``).
    """

    V: Any
    Q: Any
    lam_S: Any
    lam: Any
    J: Any

    def to_float(self) -> TabularFloats:
        """Every field rounded once to float64 (:func:`to_float`)."""
        return TabularFloats(
            V=_column(self.V),
            Q=to_float(self.Q),
            lam_S=_column(self.lam_S),
            lam=to_float(self.lam),
            J=_float_scalar(self.J),
        )


def _check_tabular_size(n_states: int, n_actions: int) -> None:
    if n_states > MAX_EXACT_STATES:
        raise ModelError(
            f"exact rational tabular solution refused: nS = {n_states} > MAX_EXACT_STATES = "
            f"{MAX_EXACT_STATES} (verify.symbolic is for tiny instances)"
        )
    if n_states * n_actions > MAX_EXACT_STATE_ACTIONS:
        raise ModelError(
            f"exact rational tabular solution refused: nS * nA = {n_states * n_actions} > "
            f"MAX_EXACT_STATE_ACTIONS = {MAX_EXACT_STATE_ACTIONS} (verify.symbolic is for tiny "
            "instances)"
        )


def rational_tabular_solution(mdp: TabularMDP, pi: Any) -> RationalTabularSolution:
    """Exact ``V, Q, lam_S, lam, J`` of ``pi`` on ``mdp`` in rational arithmetic.

    The exact-rational route of SPEC section 1 ("at least two independent routes for every
    exact quantity"; ``proofs_notes/occupancy-and-flow.md``)::

        V = (I - gamma P_pi)^{-1} r_pi,   Q = r + gamma P V,   J = rho . V,
        lam_S = (I - gamma P_pi^T)^{-1} rho,   lam[s, a] = lam_S[s] pi[s, a].

    ``mdp``'s float64 arrays are read exactly, so this is the exact solution of the very
    instance the float routes solve.

    Args:
        mdp: the MDP; at most :data:`MAX_EXACT_STATES` states and
            :data:`MAX_EXACT_STATE_ACTIONS` state-action pairs.
        pi: ``(nS, nA)`` policy.  Floats are read exactly and used as they are (rows that sum
            to 1 only up to float rounding are accepted, as by ``reference.tabular``); exact
            numbers (ints, Fractions, sympy Rationals, strings ``"1/3"``) are kept.

    Raises:
        ModelError: the instance is above the size limits.
        PolicyError: ``pi`` has the wrong shape, a negative entry or a row not summing to 1.
    """
    nS, nA = mdp.n_states, mdp.n_actions
    _check_tabular_size(nS, nA)
    exact_pi = _exact_table(pi, "pi", (nS, nA))
    _check_rows(exact_pi, "pi")
    pi_q = [[QQ.from_sympy(e) for e in row] for row in exact_pi]
    P = [[[_qq(mdp.P[s, a, t]) for t in range(nS)] for a in range(nA)] for s in range(nS)]
    r = [[_qq(mdp.r[s, a]) for a in range(nA)] for s in range(nS)]
    rho = [_qq(x) for x in mdp.rho]
    g = _qq(mdp.gamma)
    P_pi = [
        [QQ.sum([pi_q[s][a] * P[s][a][t] for a in range(nA)]) for t in range(nS)] for s in range(nS)
    ]
    r_pi = [[QQ.sum([pi_q[s][a] * r[s][a] for a in range(nA)])] for s in range(nS)]
    V = [row[0] for row in _solve_rational(_flow_matrix(P_pi, g, False), r_pi)]
    occ = _solve_rational(_flow_matrix(P_pi, g, True), [[x] for x in rho])
    lam_S = [row[0] for row in occ]
    Q = [
        [r[s][a] + g * QQ.sum([P[s][a][t] * V[t] for t in range(nS)]) for a in range(nA)]
        for s in range(nS)
    ]
    lam = [[lam_S[s] * pi_q[s][a] for a in range(nA)] for s in range(nS)]
    J = QQ.sum([rho[s] * V[s] for s in range(nS)])
    return RationalTabularSolution(
        V=_qq_matrix([[v] for v in V]),
        Q=_qq_matrix(Q),
        lam_S=_qq_matrix([[x] for x in lam_S]),
        lam=_qq_matrix(lam),
        J=QQ.to_sympy(J),
    )


# --------------------------------------------------------------------------------------------
# Utilities as sympy expressions
# --------------------------------------------------------------------------------------------


def _check_utilities(model: NetworkedMDP, utilities: Sequence[Utility]) -> None:
    check_utilities(model, utilities)
    for i, f in enumerate(utilities):
        if type(f) not in SUPPORTED_UTILITIES:
            names = ", ".join(cls.__name__ for cls in SUPPORTED_UTILITIES)
            raise ModelError(
                f"utilities[{i}] is a {type(f).__name__}, which has no exact symbolic form "
                f"here; supported: {names}"
            )


def symbolic_utility(f: Utility, lam: Any) -> Any:
    """``f(lam)`` as an exact sympy expression (SPEC section 2, "Utilities").

    The formulas of ``reference/networked/utilities.py`` written again in sympy, with every
    float64 constant (rewards, targets, ``gamma``, ``eps``) read exactly; ``d = (1-gamma) lam``:

    * :class:`~reference.networked.LinearUtility`: ``sum_{s,a} r[s,a] lam[s,a]``;
    * :class:`~reference.networked.EntropyUtility`: ``-sum_s p[s] log(p[s] + eps)`` with
      ``p[s] = (1-gamma) sum_a lam[s,a]``;
    * :class:`~reference.networked.QuadraticImitationUtility`: ``-1/2 sum (d - t)^2``;
    * :class:`~reference.networked.KLImitationUtility`:
      ``-sum d (log(d + eps) - log(t + eps))``.

    Args:
        f: one of the supported utilities (exact type; subclasses are refused because they may
            change the formula).
        lam: ``(nS_i, nA_i)`` sympy Matrix of expressions (rationals, rational functions of a
            symbol, or symbols).

    Raises:
        ModelError: an unsupported utility type or a ``lam`` of the wrong shape.
    """
    if tuple(lam.shape) != tuple(f.shape):
        raise ModelError(f"lam has shape {tuple(lam.shape)}, expected {tuple(f.shape)}")
    n_s, n_a = f.shape
    entries = [(s, a) for s in range(n_s) for a in range(n_a)]
    scale = 1 - exact_rational(f.gamma, "gamma")
    if type(f) is LinearUtility:
        r = f.reward
        return sympy.Add(*[exact_rational(r[s, a]) * lam[s, a] for s, a in entries])
    if type(f) is EntropyUtility:
        eps = exact_rational(f.eps, "eps")
        p = [scale * sympy.Add(*[lam[s, a] for a in range(n_a)]) for s in range(n_s)]
        return -sympy.Add(*[p_s * sympy.log(p_s + eps) for p_s in p])
    if type(f) is QuadraticImitationUtility:
        t = f.target
        return -sympy.Rational(1, 2) * sympy.Add(
            *[(scale * lam[s, a] - exact_rational(t[s, a])) ** 2 for s, a in entries]
        )
    if type(f) is KLImitationUtility:
        eps = exact_rational(f.eps, "eps")
        t = f.target
        terms = []
        for s, a in entries:
            d = scale * lam[s, a]
            terms.append(d * (sympy.log(d + eps) - sympy.log(exact_rational(t[s, a]) + eps)))
        return -sympy.Add(*terms)
    names = ", ".join(cls.__name__ for cls in SUPPORTED_UTILITIES)
    raise ModelError(f"{type(f).__name__} has no exact symbolic form here; supported: {names}")


def _shadow_reward(f: Utility, lam: Any) -> Any:
    """``df/dlam`` at ``lam`` by ``sympy.diff`` with respect to symbols standing for ``lam``."""
    n_s, n_a = f.shape
    L = sympy.Matrix(n_s, n_a, lambda s, a: sympy.Symbol(f"lam_{s}_{a}", real=True))
    expr = symbolic_utility(f, L)
    at = {L[s, a]: lam[s, a] for s in range(n_s) for a in range(n_a)}
    return sympy.Matrix(n_s, n_a, lambda s, a: sympy.diff(expr, L[s, a]).xreplace(at))


# --------------------------------------------------------------------------------------------
# Rational localized policies
# --------------------------------------------------------------------------------------------


def _check_beta(beta: Any) -> int:
    if isinstance(beta, bool) or not isinstance(beta, (int, np.integer)) or beta < 0:
        raise PolicyError(f"beta = {beta!r}, expected a non-negative integer radius")
    return int(beta)


@dataclass(frozen=True, eq=False)
class RationalPolicy:
    """A localized policy with exactly rational probabilities, given by positive weights.

    Agent ``i`` observes ``o_i = s_{N_i^beta}`` (as :class:`LocalizedSoftmaxPolicy`) and acts
    with::

        pi_i(a | o) = w_i[o, a] / sum_b w_i[o, b]  =  softmax(theta_i)[o, a],  theta_i = log w_i.

    The softmax parameter is defined up to a constant per row; ``log w`` is the representative
    this class uses (:attr:`theta`, :meth:`to_float`).  ``w = 1`` is the uniform policy
    (``theta = 0``).

    Attributes:
        model: the networked MDP.
        beta: observation radius.
        weights: one ``(|O_i|, |A_i|)`` sympy Matrix of positive rationals per agent; the
            constructor accepts array-likes of ints, Fractions, sympy Rationals, strings such
            as ``"1/3"`` or floats (read exactly).
        observed: ``N_i^beta`` per agent (derived).
        probs: ``pi_i[o, a]`` per agent, sympy Matrices of rationals, rows summing to 1
            exactly (derived).
    """

    model: NetworkedMDP = field(repr=False)
    beta: int
    weights: tuple[Any, ...]
    observed: tuple[tuple[int, ...], ...] = field(init=False, repr=False)
    probs: tuple[Any, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        beta = _check_beta(self.beta)
        object.__setattr__(self, "beta", beta)
        model = self.model
        observed = model.graph.neighbourhoods(beta)
        object.__setattr__(self, "observed", observed)
        if len(self.weights) != model.n:
            raise PolicyError(f"weights has {len(self.weights)} entries, expected n = {model.n}")
        weights, probs = [], []
        for i, raw in enumerate(self.weights):
            shape = (model.states.sub_size(observed[i]), model.n_actions[i])
            table = _exact_table(raw, f"w_{i}", shape)
            for o, row in enumerate(table):
                for a, w in enumerate(row):
                    if not w > 0:
                        raise PolicyError(
                            f"w_{i}[o={o}, a={a}] = {w}, expected a positive rational weight"
                        )
            weights.append(sympy.ImmutableMatrix(table))
            probs.append(
                sympy.ImmutableMatrix([[w / sympy.Add(*row) for w in row] for row in table])
            )
        object.__setattr__(self, "weights", tuple(weights))
        object.__setattr__(self, "probs", tuple(probs))

    @classmethod
    def uniform(cls, model: NetworkedMDP, beta: int = 0) -> RationalPolicy:
        """All weights 1: every agent uniform over its actions (``theta = 0``)."""
        observed = model.graph.neighbourhoods(_check_beta(beta))
        weights = tuple(
            np.ones((model.states.sub_size(observed[i]), model.n_actions[i]), dtype=np.int64)
            for i in range(model.n)
        )
        return cls(model, int(beta), weights)

    @property
    def theta(self) -> tuple[Any, ...]:
        """``theta_i = log w_i`` per agent, sympy Matrices of exact logarithms."""
        return tuple(w.applyfunc(sympy.log) for w in self.weights)

    @property
    def n_parameters(self) -> int:
        """``sum_i |O_i| |A_i|``."""
        return sum(w.rows * w.cols for w in self.weights)

    def observation_index(self, i: int) -> IntArray:
        """``(|S|,)``: ``o_i(s)`` for every joint state ``s`` (as the float policy's)."""
        return self.model.states.sub_index(self.observed[i])

    def to_float(self) -> LocalizedSoftmaxPolicy:
        """The float policy with ``theta_i = log w_i``, each entry rounded once to float64.

        Its float ``probs`` equal :attr:`probs` up to the rounding of ``log`` and of the float
        softmax (a few ulps relative per entry).
        """
        return LocalizedSoftmaxPolicy(self.model, self.beta, tuple(to_float(t) for t in self.theta))


# --------------------------------------------------------------------------------------------
# Exact tables of a networked model under a policy
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PolicyTables:
    """Exact ``QQ`` tables of a policy: weights (softmax numerators), probabilities, o_i(s)."""

    weights: tuple[_Table, ...]
    probs: tuple[_Table, ...]
    obs: tuple[IntArray, ...]


def _policy_tables(
    model: NetworkedMDP, policy: LocalizedSoftmaxPolicy | RationalPolicy
) -> _PolicyTables:
    if policy.model is not model:
        raise ModelError("policy was built for a different NetworkedMDP")
    obs = tuple(policy.observation_index(i) for i in range(model.n))
    if isinstance(policy, RationalPolicy):
        weights = tuple(
            [[QQ.from_sympy(w[o, a]) for a in range(w.cols)] for o in range(w.rows)]
            for w in policy.weights
        )
        probs = tuple(
            [[QQ.from_sympy(p[o, a]) for a in range(p.cols)] for o in range(p.rows)]
            for p in policy.probs
        )
        return _PolicyTables(weights, probs, obs)
    if isinstance(policy, LocalizedSoftmaxPolicy):
        table = tuple([[_qq(x) for x in row] for row in p] for p in policy.probs)
        return _PolicyTables(table, table, obs)
    raise ModelError(
        f"policy is a {type(policy).__name__}, expected a LocalizedSoftmaxPolicy or RationalPolicy"
    )


def _kernel_tables(model: NetworkedMDP) -> tuple[list[_Table], ...]:
    """``P_i[row][a][s'_i]`` per agent, read exactly into ``QQ``."""
    return tuple([[[_qq(v) for v in row_a] for row_a in row] for row in k] for k in model.kernels)


def _joint_kernel_under(
    model: NetworkedMDP,
    kernels: Sequence[list[_Table]],
    probs: Sequence[_Table],
    obs: Sequence[IntArray],
    one: Any,
) -> _Table:
    """``P_pi[s][s'] = prod_j sum_{a_j} pi_j(a_j | o_j(s)) P_j(s'_j | s_{N_j}, a_j)`` exactly.

    ``probs`` may hold ``QQ`` elements or polynomials (then the result holds polynomials);
    ``one`` is the multiplicative identity of that ring.
    """
    nS = model.states.size
    digits = model.states.digits
    factors = []
    for j in range(model.n):
        nb = model.neighbourhood_index(j)
        K_j, p_j, o_j = kernels[j], probs[j], obs[j]
        factors.append(
            [
                [
                    sum(
                        (p_j[o_j[s]][a] * K_j[nb[s]][a][t] for a in range(model.n_actions[j])),
                        one - one,
                    )
                    for t in range(model.n_states[j])
                ]
                for s in range(nS)
            ]
        )
    out: _Table = []
    for s in range(nS):
        row = []
        for t in range(nS):
            entry = one
            for j in range(model.n):
                entry = entry * factors[j][s][digits[t, j]]
            row.append(entry)
        out.append(row)
    return out


def _local_occupancies(
    model: NetworkedMDP,
    probs: Sequence[_Table],
    obs: Sequence[IntArray],
    mass: Sequence[Sequence[Any]],
    zero: Any,
) -> list[_Table]:
    """``lam_j[s_j][a_j] = sum_{s: s_j(s) = s_j} mass_j(s) probs_j[o_j(s)][a_j]`` per agent.

    With ``mass_j = lam_S`` for every ``j`` this is the marginal of ``lam_S(s) pi(a|s)``.
    """
    digits = model.states.digits
    out = []
    for j in range(model.n):
        table = [[zero] * model.n_actions[j] for _ in range(model.n_states[j])]
        for s, m_s in enumerate(mass[j]):
            row = table[int(digits[s, j])]
            for a in range(model.n_actions[j]):
                row[a] = row[a] + m_s * probs[j][obs[j][s]][a]
        out.append(table)
    return out


def _joint_rho(model: NetworkedMDP) -> list[Any]:
    """The joint initial distribution in ``QQ``: a joint vector read exactly, or the exact
    product ``prod_i rho_i(s_i)`` of the local vectors (not their float outer product)."""
    if isinstance(model.rho, np.ndarray):
        return [_qq(v) for v in model.rho]
    local = [[_qq(v) for v in rho_i] for rho_i in model.rho]
    digits = model.states.digits
    out = []
    for s in range(model.states.size):
        value = QQ.one
        for i in range(model.n):
            value = value * local[i][int(digits[s, i])]
        out.append(value)
    return out


def _flow_solution(model: NetworkedMDP, P: _Table) -> list[Any]:
    """``lam_S = (I - gamma P_pi^T)^{-1} rho`` in ``QQ``."""
    rho = [[v] for v in _joint_rho(model)]
    solved = _solve_rational(_flow_matrix(P, _qq(model.gamma), True), rho)
    return [row[0] for row in solved]


def _solve_linear_in_atoms(lhs: _Table, rhs: Any) -> Any:
    """``lhs^{-1} rhs`` for a rational ``lhs`` and a right side whose entries are rational
    linear combinations of atoms (``1`` and logarithms of rationals).

    Every entry of ``rhs`` is split as ``sum_k c_k atom_k``; the coefficient vectors of each
    (column, atom) pair become the columns of one rational right side, solved by a single exact
    LU factorisation; the solution is reassembled as ``sum_k x_k atom_k``.
    """
    n_rows, n_cols = rhs.shape
    keys: dict[tuple[int, Any], int] = {}
    coefficients: list[dict[int, Any]] = [{} for _ in range(n_rows)]
    for s in range(n_rows):
        for c in range(n_cols):
            for term in sympy.Add.make_args(sympy.expand_mul(rhs[s, c])):
                coeff, atom = term.as_coeff_Mul()
                if not coeff.is_Rational:
                    raise ModelError(f"right side entry [{s}, {c}] has a non-rational coefficient")
                column = keys.setdefault((c, atom), len(keys))
                coefficients[s][column] = coefficients[s].get(column, QQ.zero) + QQ.from_sympy(
                    coeff
                )
    if not keys:
        return sympy.zeros(n_rows, n_cols)
    table = [[coefficients[s].get(k, QQ.zero) for k in range(len(keys))] for s in range(n_rows)]
    solved = _solve_rational(lhs, table)
    out = sympy.zeros(n_rows, n_cols)
    for (c, atom), k in keys.items():
        for s in range(n_rows):
            out[s, c] += QQ.to_sympy(solved[s][k]) * atom
    return out


# --------------------------------------------------------------------------------------------
# Networked solution
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkedFloats:
    """Float64 views of a :class:`RationalNetworkedSolution` (each entry rounded once).

    Attributes mirror :class:`~reference.networked.NetworkedSolution`:
        lam_S: ``(|S|,)``.
        local_occupancy: ``(|S_i|, |A_i|)`` per agent.
        local_utility: ``(n,)``.
        objective: ``F``.
        shadow_rewards: ``(|S_i|, |A_i|)`` per agent.
        shadow_values: ``(|S|, n)``.
        team_value: ``(|S|,)``.
    """

    lam_S: FloatArray
    local_occupancy: tuple[FloatArray, ...]
    local_utility: FloatArray
    objective: float
    shadow_rewards: tuple[FloatArray, ...]
    shadow_values: FloatArray
    team_value: FloatArray


@dataclass(frozen=True)
class RationalNetworkedSolution:
    """Exact quantities of SPEC section 2 at one policy (sympy objects).

    Occupancies are rationals.  Utilities, the objective, shadow rewards and shadow values are
    exact sympy expressions: rationals for linear and quadratic utilities, rational
    combinations of logarithms of rationals for entropy and KL utilities.

    Attributes:
        lam_S: ``(|S|, 1)`` ``(I - gamma P_pi^T)^{-1} rho``.
        local_occupancy: ``lam_i``, ``(|S_i|, |A_i|)`` per agent.
        local_utility: ``f_i(lam_i)`` per agent.
        objective: ``F = (1/n) sum_i f_i(lam_i)``.
        shadow_rewards: ``r_i = df_i/dlam_i`` at ``lam_i`` (by ``sympy.diff``), per agent.
        shadow_values: ``(|S|, n)``, column ``i`` is ``(I - gamma P_pi)^{-1} R_i^pi`` with
            ``R_i^pi(s) = sum_{a_i} pi_i(a_i | o_i(s)) r_i(s_i, a_i)``.
        team_value: ``(|S|, 1)`` row mean of ``shadow_values``.
    """

    lam_S: Any
    local_occupancy: tuple[Any, ...]
    local_utility: tuple[Any, ...]
    objective: Any
    shadow_rewards: tuple[Any, ...]
    shadow_values: Any
    team_value: Any

    def to_float(self) -> NetworkedFloats:
        """Every field evaluated at :data:`EVALF_DIGITS` digits and rounded once to float64."""
        return NetworkedFloats(
            lam_S=_column(self.lam_S),
            local_occupancy=tuple(to_float(x) for x in self.local_occupancy),
            local_utility=np.array([_float_scalar(u) for u in self.local_utility]),
            objective=_float_scalar(self.objective),
            shadow_rewards=tuple(to_float(x) for x in self.shadow_rewards),
            shadow_values=to_float(self.shadow_values),
            team_value=_column(self.team_value),
        )


def rational_networked_solution(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy | RationalPolicy,
    utilities: Sequence[Utility],
) -> RationalNetworkedSolution:
    """Exact occupancies, objective, shadow rewards and shadow values (SPEC section 2).

    The exact-rational route of SPEC section 1 on the joint system of a networked model
    (``proofs_notes/occupancy-and-flow.md``, ``proofs_notes/shadow-reward-gradient.md``)::

        lam_S = (I - gamma P_pi^T)^{-1} rho,   lam_i = marginal of lam_S pi,
        F = (1/n) sum_i f_i(lam_i),   r_i = grad f_i(lam_i),   V_i = (I - gamma P_pi)^{-1} R_i^pi,

    with ``P_pi`` formed exactly from the local kernels and the policy's exact probabilities
    (a float policy's ``probs`` read exactly; a :class:`RationalPolicy`'s ``w / sum w``).

    Args:
        model: at most :data:`MAX_NETWORKED_STATES` joint states.
        policy: a :class:`LocalizedSoftmaxPolicy` or :class:`RationalPolicy` on ``model``.
        utilities: one supported utility per agent (see :func:`symbolic_utility`).

    Raises:
        ModelError: above the size limits, an unsupported utility, or mismatched inputs.
    """
    nS = model.states.size
    if nS > MAX_NETWORKED_STATES:
        raise ModelError(
            f"exact rational networked solution refused: {nS} joint states > "
            f"MAX_NETWORKED_STATES = {MAX_NETWORKED_STATES} (verify.symbolic is for tiny "
            "instances)"
        )
    _check_utilities(model, utilities)
    tables = _policy_tables(model, policy)
    P = _joint_kernel_under(model, _kernel_tables(model), tables.probs, tables.obs, QQ.one)
    lam_S = _flow_solution(model, P)
    mass = [lam_S] * model.n
    occupancies = [
        _qq_matrix(t) for t in _local_occupancies(model, tables.probs, tables.obs, mass, QQ.zero)
    ]
    values = [symbolic_utility(f, lam) for f, lam in zip(utilities, occupancies, strict=True)]
    rewards = [_shadow_reward(f, lam) for f, lam in zip(utilities, occupancies, strict=True)]
    digits = model.states.digits
    R_pi = sympy.Matrix(
        nS,
        model.n,
        lambda s, i: sympy.Add(
            *[
                QQ.to_sympy(tables.probs[i][tables.obs[i][s]][a]) * rewards[i][int(digits[s, i]), a]
                for a in range(model.n_actions[i])
            ]
        ),
    )
    V = _solve_linear_in_atoms(_flow_matrix(P, _qq(model.gamma), False), R_pi)
    n = sympy.Integer(model.n)
    team = sympy.Matrix(nS, 1, lambda s, _: sympy.Add(*[V[s, i] for i in range(model.n)]) / n)
    return RationalNetworkedSolution(
        lam_S=_qq_matrix([[x] for x in lam_S]),
        local_occupancy=tuple(sympy.ImmutableMatrix(x) for x in occupancies),
        local_utility=tuple(values),
        objective=sympy.Add(*values) / n,
        shadow_rewards=tuple(sympy.ImmutableMatrix(r) for r in rewards),
        shadow_values=sympy.ImmutableMatrix(V),
        team_value=sympy.ImmutableMatrix(team),
    )


# --------------------------------------------------------------------------------------------
# Gradient by symbolic differentiation
# --------------------------------------------------------------------------------------------


def _integer_row(row: Sequence[Any], int_ring: Any) -> list[Any]:
    """A ``QQ[x]`` row times the lcm of its coefficient denominators, as ``ZZ[x]`` polynomials."""
    scale = math.lcm(*[int(c.denominator) for p in row for c in p.coeffs()])
    return [
        int_ring({m: int(c.numerator) * (scale // int(c.denominator)) for m, c in p.items()})
        for p in row
    ]


def _occupancy_rational_functions(
    model: NetworkedMDP,
    kernels: Sequence[list[_Table]],
    tables: _PolicyTables,
    parameter: tuple[int, int, int],
    ring: Any,
) -> tuple[list[_Table], Any]:
    """``lam_j(x) = N_j(x) / d(x)`` when the weight ``w_i[o, b]`` is replaced by ``x``.

    With ``D(x) = sum_c w'_c`` the varied row's normaliser and ``delta(s) = D`` where
    ``o_i(s) = o`` (else 1), ``delta(s) P_pi(x)[s, :]`` is polynomial; substituting
    ``lam_S(s) = delta(s) y(s)`` turns the flow equation into the polynomial system::

        sum_s ([t = s] delta(s) - gamma delta(s) P_pi(x)[s, t]) y(s) = rho(t),

    solved fraction-free over ``ZZ[x]`` (:func:`_bareiss_solve`) as ``y = Y / d``.  Then
    ``lam_j = sum_s delta(s) Y(s) pi_j / d`` and, for ``j = i``, ``delta(s) pi_i`` is the
    numerator row itself, so every ``lam_j`` has the common denominator ``d``.

    Args:
        ring: ``QQ[x]`` (a sympy ``PolyRing``); numerators and ``d`` are returned in it.
    """
    i, o, b = parameter
    x = ring.gens[0]
    nS = model.states.size
    weights = tables.weights[i][o]
    varied = [x if a == b else ring(weights[a]) for a in range(len(weights))]
    normaliser = sum(varied, ring.zero)
    # numerators of pi_j(a | o'): the exact probabilities, except the varied row (over D)
    numerators = [[[ring(p) for p in row] for row in table] for table in tables.probs]
    numerators[i][o] = varied
    delta = [normaliser if tables.obs[i][s] == o else ring.one for s in range(nS)]
    scaled = _joint_kernel_under(model, kernels, numerators, tables.obs, ring.one)
    g = _qq(model.gamma)
    lhs = [
        [(delta[s] if s == t else ring.zero) - scaled[s][t] * g for s in range(nS)]
        for t in range(nS)
    ]
    rho = [ring(v) for v in _joint_rho(model)]
    int_ring = PolyRing(ring.symbols, ZZ, ring.order)
    rows, right = [], []
    for row, rho_t in zip(lhs, rho, strict=True):
        converted = _integer_row([*row, rho_t], int_ring)
        rows.append(converted[:-1])
        right.append(converted[-1:])
    Y_int, d_int = _bareiss_solve(rows, right, lambda p, q: p.exquo(q))

    def to_ring(p: Any) -> Any:
        return ring({m: QQ(int(c)) for m, c in p.items()})

    Y = [to_ring(row[0]) for row in Y_int]
    mass = [[Y[s] if j == i else delta[s] * Y[s] for s in range(nS)] for j in range(model.n)]
    return _local_occupancies(model, numerators, tables.obs, mass, ring.zero), to_ring(d_int)


@dataclass(frozen=True)
class SymbolicGradient:
    """``grad F`` by symbolic differentiation (:func:`symbolic_gradient`).

    Attributes:
        gradient: ``dF/dtheta_i[o, b]`` per agent, ``(|O_i|, |A_i|)`` sympy Matrices of exact
            expressions (rationals for linear and quadratic utilities).
        objective: ``F`` at the policy, exact.
    """

    gradient: tuple[Any, ...]
    objective: Any

    def to_float(self) -> tuple[FloatArray, ...]:
        """The gradient per agent as float64 arrays (evaluated at :data:`EVALF_DIGITS` digits)."""
        return tuple(to_float(g) for g in self.gradient)


def symbolic_gradient(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy | RationalPolicy,
    utilities: Sequence[Utility],
) -> SymbolicGradient:
    """``grad_theta F`` by ``sympy.diff`` of ``F`` as a function of one parameter at a time.

    A route independent of the shadow-reward policy-gradient theorem and of the chain-rule
    Jacobian of ``reference.networked.exact`` (SPEC section 2, "three routes";
    ``proofs_notes/shadow-reward-gradient.md``).  For each parameter ``theta_i[o, b]``:

    1. replace the softmax weight ``w_i[o, b] = exp(theta_i[o, b])`` by a symbol ``x``, so
       ``pi_i(a | o) = w'_a / sum_c w'_c`` with ``w'_b = x`` (other rows and agents at their
       exact values);
    2. form ``P_pi(x)`` exactly and solve ``(I - gamma P_pi(x)^T) lam_S(x) = rho`` as rational
       functions of ``x`` (fraction-free elimination over ``ZZ[x]``); marginalise to
       ``lam_j(x) = N_j(x) / d(x)``;
    3. ``F(x) = (1/n) sum_j f_j(lam_j(x))`` with :func:`symbolic_utility`;
    4. ``dF/dtheta_i[o, b] = x dF/dx`` at ``x = w_i[o, b]`` (chain rule through
       ``x = exp(theta)``), by ``sympy.diff`` and exact substitution.

    Note: to keep expression sizes small, step 3 writes ``F`` once with each occupancy entry
    as an undefined sympy function ``lam_{j,s,a}(x)``; ``sympy.diff`` then produces
    ``dF/dx = sum_k (d f / d lam_k) lam_k'(x)`` symbolically, and for each parameter the
    values ``lam_k(w)`` and ``lam_k'(w) = (N_k' d - N_k d') / d^2`` (exact polynomial
    derivatives of step 2's rational functions) are substituted.  This is the derivative of
    the fully expanded ``F(x)``, without building that expression.

    The point is ``pi_i = w_i / sum w_i``: a :class:`RationalPolicy`'s weights, or a float
    policy's ``probs`` read exactly (the softmax Jacobian depends on ``pi`` only, so
    ``theta = log(probs)`` is an equivalent parameter; the exact renormalisation of the float
    table moves it by at most the float row-sum rounding, ``|A_i| eps`` relative).

    Args:
        model: at most :data:`MAX_GRADIENT_STATES` joint states.
        policy: at most :data:`MAX_GRADIENT_PARAMETERS` parameters.
        utilities: one supported utility per agent (see :func:`symbolic_utility`).

    Raises:
        ModelError: above the size limits, an unsupported utility, or mismatched inputs.
    """
    nS = model.states.size
    if nS > MAX_GRADIENT_STATES:
        raise ModelError(
            f"symbolic gradient refused: {nS} joint states > MAX_GRADIENT_STATES = "
            f"{MAX_GRADIENT_STATES} (symbolic differentiation is for tiny instances)"
        )
    _check_utilities(model, utilities)
    raw = _policy_tables(model, policy)
    # every row at the softmax point w / sum w (a float table's rows renormalised exactly)
    normalised = tuple(
        [[w / QQ.sum(row) for w in row] for row in weights] for weights in raw.weights
    )
    tables = _PolicyTables(raw.weights, normalised, raw.obs)
    n_parameters = sum(len(w) * len(w[0]) for w in tables.weights)
    if n_parameters > MAX_GRADIENT_PARAMETERS:
        raise ModelError(
            f"symbolic gradient refused: {n_parameters} parameters > MAX_GRADIENT_PARAMETERS = "
            f"{MAX_GRADIENT_PARAMETERS} (symbolic differentiation is for tiny instances)"
        )
    # F(x) with the occupancy entries as functions of x, and its derivative, built once.
    placeholders = [
        sympy.Matrix(
            model.n_states[j],
            model.n_actions[j],
            lambda s, a, j=j: sympy.Function(f"lam_{j}_{s}_{a}")(_X),
        )
        for j in range(model.n)
    ]
    n = sympy.Integer(model.n)
    F = sympy.Add(*[symbolic_utility(f, L) for f, L in zip(utilities, placeholders, strict=True)])
    F = F / n
    dF = sympy.diff(F, _X)

    ring = PolyRing((_X,), QQ, "lex")
    x = ring.gens[0]
    kernels = _kernel_tables(model)
    gradients = []
    objective: Any = None
    for i in range(model.n):
        n_obs, n_act = len(tables.weights[i]), len(tables.weights[i][0])
        entries = []
        for o in range(n_obs):
            for b in range(n_act):
                w = tables.weights[i][o][b]
                numerators, d = _occupancy_rational_functions(
                    model, kernels, tables, (i, o, b), ring
                )
                d_w, d_slope = d.evaluate(x, w), d.diff(x).evaluate(x, w)
                values: dict[Any, Any] = {}
                slopes: dict[Any, Any] = {}
                for L, table in zip(placeholders, numerators, strict=True):
                    for s, row in enumerate(table):
                        for a, N in enumerate(row):
                            N_w, N_slope = N.evaluate(x, w), N.diff(x).evaluate(x, w)
                            values[L[s, a]] = QQ.to_sympy(N_w / d_w)
                            slopes[sympy.Derivative(L[s, a], _X)] = QQ.to_sympy(
                                (N_slope * d_w - N_w * d_slope) / (d_w * d_w)
                            )
                if objective is None:
                    objective = F.xreplace(values)
                # Derivative nodes are replaced before their lam(x) arguments.
                entries.append(QQ.to_sympy(w) * dF.xreplace(slopes).xreplace(values))
        gradients.append(sympy.ImmutableMatrix(n_obs, n_act, entries))
    return SymbolicGradient(gradient=tuple(gradients), objective=objective)
