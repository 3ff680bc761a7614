"""One MDP on an explicit (joint) state space: values, occupancy, policy gradient (SPEC section 1).

Conventions (SPEC section 0): ``P[s, a, s']``, ``r[s, a]``, ``rho[s]``, ``pi[s, a]``;
``lam`` is the *unnormalised* discounted occupancy (mass ``1/(1-gamma)``) and
``d = (1-gamma) lam`` the normalised one.  Derivations: ``proofs_notes/occupancy-and-flow.md``.

Every exact quantity has two routes here: a direct LU solve (:func:`evaluate`,
:func:`occupancy`) and a certified fixed-point iteration (:func:`evaluate_iterative`,
:func:`occupancy_iterative`); ``verify.symbolic`` adds exact rational arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.linalg

from reference._arrays import (
    EPS_F64,
    FloatArray,
    FrozenArrays,
    as_float_array,
    check_distribution_rows,
    check_gamma,
    frozen,
    read_only,
)
from reference.errors import ModelError, PolicyError, SolverError

__all__ = [
    "CertifiedSolution",
    "Occupancy",
    "OptimalValues",
    "PolicyValues",
    "TabularMDP",
    "evaluate",
    "evaluate_iterative",
    "evaluate_with_occupancy",
    "kernel_under",
    "last_axis_max",
    "last_axis_sum",
    "log_softmax",
    "occupancy",
    "occupancy_iterative",
    "performance_difference",
    "policy_gradient",
    "policy_iteration",
    "softmax",
    "softmax_last_axis",
    "softmax_score",
    "validate_policy",
    "value_iteration",
]

_EPS = EPS_F64
_UNDERFLOW = float(np.finfo(np.float64).smallest_subnormal)


@dataclass(frozen=True, eq=False)
class TabularMDP(FrozenArrays):
    """A finite discounted MDP ``(P, r, rho, gamma)``, validated at construction.

    Attributes:
        P: ``(nS, nA, nS)`` transition kernel ``P[s, a, s']``; rows sum to 1.
        r: ``(nS, nA)`` reward ``r[s, a]``, finite.
        rho: ``(nS,)`` initial distribution.
        gamma: discount in [0, 1).
    """

    P: FloatArray
    r: FloatArray
    rho: FloatArray
    gamma: float

    def __post_init__(self) -> None:
        P = as_float_array(self.P, "P", ndim=3)
        nS, nA, nS2 = P.shape
        if nS2 != nS or nS < 1 or nA < 1:
            raise ModelError(f"P has shape {P.shape}, expected (nS, nA, nS) with nS, nA >= 1")
        check_distribution_rows(P, "P", describe=lambda idx: f"s={idx[0]}, a={idx[1]}")
        r = as_float_array(self.r, "r", shape=(nS, nA))
        rho = as_float_array(self.rho, "rho", shape=(nS,))
        check_distribution_rows(rho[None, :], "rho", describe=lambda idx: "initial")
        object.__setattr__(self, "P", frozen(P))
        object.__setattr__(self, "r", frozen(r))
        object.__setattr__(self, "rho", frozen(rho))
        object.__setattr__(self, "gamma", check_gamma(self.gamma))

    @property
    def n_states(self) -> int:
        """``nS``."""
        return int(self.P.shape[0])

    @property
    def n_actions(self) -> int:
        """``nA``."""
        return int(self.P.shape[1])


@dataclass(frozen=True)
class PolicyValues:
    """Exact values of a policy by one LU solve (SPEC section 1).

    Attributes:
        V: ``(nS,)`` ``V = (I - gamma P_pi)^{-1} r_pi``.
        Q: ``(nS, nA)`` ``Q = r + gamma P V``.
        A: ``(nS, nA)`` advantage ``Q - V``.
        J: ``rho . V``.
        residual: ``||(I - gamma P_pi) V - r_pi||_inf`` of the computed ``V``.
        error_bound: certified ``||V - V_true||_inf <= residual / (1 - gamma)`` (the
            inverse of ``I - gamma P_pi`` has inf-norm at most ``1/(1-gamma)``), plus the
            rounding committed when forming ``P_pi``, ``r_pi`` and evaluating the residual,
            ``(nS + nA + 2) eps ((1 + gamma) ||V||_inf + max |r|) / (1 - gamma)``.
    """

    V: FloatArray
    Q: FloatArray
    A: FloatArray
    J: float
    residual: float
    error_bound: float


@dataclass(frozen=True)
class Occupancy:
    """Exact discounted occupancy of a policy (SPEC section 1).

    Attributes:
        lam_S: ``(nS,)`` ``(I - gamma P_pi^T)^{-1} rho``, mass ``1/(1-gamma)``.
        lam: ``(nS, nA)`` unnormalised ``lam[s, a] = lam_S[s] pi[s, a]``.
        d: ``(nS, nA)`` normalised ``(1 - gamma) lam``.
        flow_residual: ``max_s' |sum_a lam[s',a] - rho[s'] - gamma sum_{s,a} P[s,a,s'] lam[s,a]|``.
        error_bound: certified ``||lam_S - lam_S_true||_1 <= ||residual||_1 / (1-gamma)`` plus
            the rounding of forming ``P_pi`` and evaluating the residual,
            ``(nS + nA + 2) eps ((1 + gamma) ||lam_S||_1 + 1) / (1 - gamma)``.
    """

    lam_S: FloatArray
    lam: FloatArray
    d: FloatArray
    flow_residual: float
    error_bound: float


@dataclass(frozen=True)
class CertifiedSolution:
    """A fixed point ``x = b + gamma M x`` found by iteration, with a certified error.

    Attributes:
        x: the final iterate.
        iterations: index ``k`` of the returned iterate
            ``x_k = sum_{t<k} gamma^t M^t b`` (``x_1 = b``).
        error_bound: certified bound on ``||x - x_true||`` in the norm named by ``norm``:
            ``min(a priori, a posteriori)`` where the a priori bound is
            ``gamma^k ||b|| / (1 - gamma)`` and the a posteriori one is
            ``gamma ||x_k - x_{k-1}|| / (1 - gamma)``, plus a rounding allowance
            ``(nS + 2) eps (||b|| + ||b|| / (1 - gamma)) / (1 - gamma)`` (per-step rounding
            with every iterate bounded by ``||b|| / (1 - gamma)``, damped geometrically by
            the contraction).
        norm: ``"inf"`` for values, ``"l1"`` for occupancies.
    """

    x: FloatArray
    iterations: int
    error_bound: float
    norm: str


def validate_policy(pi: object, n_states: int, n_actions: int, name: str = "pi") -> FloatArray:
    """Check that ``pi`` is an ``(nS, nA)`` row-stochastic array; return it as float64."""
    arr = as_float_array(pi, name, shape=(n_states, n_actions), error=PolicyError)
    check_distribution_rows(arr, name, describe=lambda idx: f"s={idx[0]}", error=PolicyError)
    return arr


def kernel_under(mdp: TabularMDP, pi: FloatArray) -> tuple[FloatArray, FloatArray]:
    """``(P_pi, r_pi)`` with ``P_pi[s, s'] = sum_a pi[s, a] P[s, a, s']``, ``r_pi = sum_a pi r``."""
    pi = validate_policy(pi, mdp.n_states, mdp.n_actions)
    return np.einsum("sa,sat->st", pi, mdp.P), np.einsum("sa,sa->s", pi, mdp.r)


def _residual_rounding(matrix_abs_row_sum: float, x_norm: float, b_norm: float, n: int) -> float:
    # Evaluating A x - b in float64 commits at most (n + 2) eps (|A| |x| + |b|) per entry
    # (standard dot-product error bound, Higham 2002 eq. 3.5).  Callers pass n = nS + nA:
    # forming P_pi and r_pi sums nA nonnegative-weighted terms per entry, so the computed
    # system differs from the exact one by at most nA eps (gamma |P_pi| |x| + max |r|)
    # (proofs_notes/certificates.md#formation), and b_norm is then a bound on max |r|.
    # With gradual underflow each product also commits an absolute error of at most half
    # the smallest subnormal (Higham 2002, eq. 2.8), so (n + 2) of them add _UNDERFLOW.
    relative = (n + 2) * _EPS * (matrix_abs_row_sum * x_norm + b_norm)
    return relative + (n + 2) * _UNDERFLOW


def evaluate(mdp: TabularMDP, pi: FloatArray) -> PolicyValues:
    """Exact ``V, Q, A, J`` of ``pi`` by an LU solve of ``(I - gamma P_pi) V = r_pi``."""
    P_pi, r_pi = kernel_under(mdp, pi)
    g = mdp.gamma
    M = np.eye(mdp.n_states) - g * P_pi
    V = scipy.linalg.solve(M, r_pi)
    res = float(np.max(np.abs(M @ V - r_pi)))
    rounding = _residual_rounding(
        1 + g, float(np.max(np.abs(V))), float(np.max(np.abs(mdp.r))),
        mdp.n_states + mdp.n_actions,
    )
    Q = mdp.r + g * np.einsum("sat,t->sa", mdp.P, V)
    return PolicyValues(
        V=frozen(V),
        Q=frozen(Q),
        A=frozen(Q - V[:, None]),
        J=float(mdp.rho @ V),
        residual=res,
        error_bound=(res + rounding) / (1 - g),
    )


def occupancy(mdp: TabularMDP, pi: FloatArray) -> Occupancy:
    """Exact occupancy ``lam_S = (I - gamma P_pi^T)^{-1} rho`` and ``lam = lam_S pi`` (LU solve)."""
    pi = validate_policy(pi, mdp.n_states, mdp.n_actions)
    P_pi, _ = kernel_under(mdp, pi)
    g = mdp.gamma
    M = np.eye(mdp.n_states) - g * P_pi.T
    lam_S = scipy.linalg.solve(M, mdp.rho)
    res_vec = M @ lam_S - mdp.rho
    rounding = _residual_rounding(
        1 + g, float(np.sum(np.abs(lam_S))), 1.0, mdp.n_states + mdp.n_actions
    )
    lam = lam_S[:, None] * pi
    flow = lam.sum(axis=1) - mdp.rho - g * np.einsum("sat,sa->t", mdp.P, lam)
    return Occupancy(
        lam_S=frozen(lam_S),
        lam=frozen(lam),
        d=frozen((1 - g) * lam),
        flow_residual=float(np.max(np.abs(flow))),
        error_bound=(float(np.sum(np.abs(res_vec))) + rounding) / (1 - g),
    )


def evaluate_with_occupancy(
    mdp: TabularMDP, pi: FloatArray, *, validate: bool = True
) -> tuple[PolicyValues, Occupancy]:
    """:func:`evaluate` and :func:`occupancy` from one LU factorisation of
    ``I - gamma P_pi`` (the occupancy solves the transposed system), for callers that need
    both on every iteration.  Same certified bounds; the occupancy's ``flow_residual`` is the
    residual of the transposed system, which equals the Bellman-flow residual
    (``proofs_notes/occupancy-and-flow.md``) in exact arithmetic.  ``validate=False`` skips
    the policy check for a policy already known to be row-stochastic.
    """
    if validate:
        pi = validate_policy(pi, mdp.n_states, mdp.n_actions)
    n_s = mdp.n_states
    g = mdp.gamma
    P_pi = np.matmul(pi[:, None, :], mdp.P)[:, 0, :]
    r_pi = np.sum(pi * mdp.r, axis=1)
    M = -g * P_pi
    M[np.diag_indices(n_s)] += 1.0
    # LAPACK getrf/getrs directly: one factorisation, two solves (the second transposed)
    lu, piv, info = scipy.linalg.lapack.dgetrf(M)
    if info != 0:
        raise SolverError(f"I - gamma P_pi is singular (getrf info = {info})")
    V, _ = scipy.linalg.lapack.dgetrs(lu, piv, r_pi)
    lam_S, _ = scipy.linalg.lapack.dgetrs(lu, piv, mdp.rho, trans=1)
    res = float(np.max(np.abs(M @ V - r_pi)))
    v_round = _residual_rounding(
        1 + g, float(np.max(np.abs(V))), float(np.max(np.abs(mdp.r))), n_s + mdp.n_actions
    )
    flow_vec = M.T @ lam_S - mdp.rho
    l_round = _residual_rounding(1 + g, float(np.sum(np.abs(lam_S))), 1.0, n_s + mdp.n_actions)
    Q = mdp.r + g * (mdp.P.reshape(-1, n_s) @ V).reshape(n_s, mdp.n_actions)
    lam = lam_S[:, None] * pi
    values = PolicyValues(
        V=read_only(V),
        Q=read_only(Q),
        A=read_only(Q - V[:, None]),
        J=float(mdp.rho @ V),
        residual=res,
        error_bound=(res + v_round) / (1 - g),
    )
    occ = Occupancy(
        lam_S=read_only(lam_S),
        lam=read_only(lam),
        d=read_only((1 - g) * lam),
        flow_residual=float(np.max(np.abs(flow_vec))),
        error_bound=(float(np.sum(np.abs(flow_vec))) + l_round) / (1 - g),
    )
    return values, occ


def _certified_fixed_point(
    M: FloatArray, b: FloatArray, gamma: float, tol: float, max_iter: int, norm: str
) -> CertifiedSolution:
    if not tol > 0:
        raise ModelError(f"tol = {tol!r}, expected a positive tolerance")

    def size(v: FloatArray) -> float:
        return float(np.max(np.abs(v))) if norm == "inf" else float(np.sum(np.abs(v)))

    b_norm = size(b)
    x = b.copy()
    k = 1  # x = b after one step from x_0 = 0
    prior = gamma * b_norm / (1 - gamma)
    while True:
        x_new = b + gamma * (M @ x)
        k += 1
        prior *= gamma
        post = gamma * size(x_new - x) / (1 - gamma)
        x = x_new
        # each step commits at most (nS + 2) eps (||b|| + ||x_k||) of rounding, every iterate
        # from x_0 = 0 has ||x_k|| <= ||b|| / (1 - gamma), and the gamma-contraction damps
        # earlier steps' rounding geometrically: 1/(1-gamma) in all
        rounding = (M.shape[0] + 2) * _EPS * (b_norm + b_norm / (1 - gamma)) / (1 - gamma)
        bound = min(prior, post) + rounding
        if bound <= tol or gamma == 0.0:
            return CertifiedSolution(x=frozen(x), iterations=k, error_bound=bound, norm=norm)
        if k >= max_iter:
            raise SolverError(
                f"fixed-point iteration reached max_iter = {max_iter} with certified error "
                f"{bound:.3g} > tol = {tol:.3g}"
            )


def evaluate_iterative(
    mdp: TabularMDP, pi: FloatArray, tol: float = 1e-10, max_iter: int = 100_000
) -> CertifiedSolution:
    """``V`` by iterating ``V_{k+1} = r_pi + gamma P_pi V_k`` from 0 until the certified bound
    ``min(gamma^k ||r_pi||_inf / (1-gamma), gamma ||V_k - V_{k-1}||_inf / (1-gamma))`` is below
    ``tol`` (SPEC section 1).  Raises :class:`SolverError` if ``max_iter`` is reached first.
    """
    P_pi, r_pi = kernel_under(mdp, pi)
    return _certified_fixed_point(P_pi, r_pi, mdp.gamma, tol, max_iter, "inf")


def occupancy_iterative(
    mdp: TabularMDP, pi: FloatArray, tol: float = 1e-10, max_iter: int = 100_000
) -> CertifiedSolution:
    """``lam_S`` by iterating ``lam_{k+1} = rho + gamma P_pi^T lam_k``, certified in l1.

    The a priori bound is exact here: ``||lam_S - lam_k||_1 = gamma^k / (1 - gamma)``.
    """
    P_pi, _ = kernel_under(mdp, pi)
    return _certified_fixed_point(
        np.ascontiguousarray(P_pi.T), mdp.rho.copy(), mdp.gamma, tol, max_iter, "l1"
    )


def last_axis_sum(x: FloatArray) -> FloatArray:
    """``x.sum(axis=-1)`` by adding the slices ``x[..., i]`` in order.

    Action axes are short (a handful of entries) and the leading axes long; numpy's reduction
    over a short trailing axis is several times slower than ``|A|`` whole-array additions.
    """
    out: FloatArray = x[..., 0].copy()
    for i in range(1, x.shape[-1]):
        out += x[..., i]
    return out


def last_axis_max(x: FloatArray) -> FloatArray:
    """``x.max(axis=-1)`` by a running maximum over the slices (see :func:`last_axis_sum`)."""
    out: FloatArray = x[..., 0].copy()
    for i in range(1, x.shape[-1]):
        np.maximum(out, x[..., i], out=out)
    return out


def softmax_last_axis(logits: FloatArray) -> FloatArray:
    """Softmax along the last axis of any float64 array, shifted by the row maximum for
    stability; no validation (callers pass arrays they built).  ``-inf`` logits are allowed
    as long as no whole row is ``-inf``."""
    out: FloatArray = logits - last_axis_max(logits)[..., None]
    np.exp(out, out=out)
    out /= last_axis_sum(out)[..., None]
    return out


def log_softmax(logits: FloatArray) -> FloatArray:
    """``log`` of :func:`softmax_last_axis`, computed in log space (no underflow to ``-inf``
    for finite logits)."""
    z = logits - last_axis_max(logits)[..., None]
    out: FloatArray = z - np.log(last_axis_sum(np.exp(z)))[..., None]
    return out


def softmax(theta: FloatArray) -> FloatArray:
    """Row-wise softmax ``pi[o, a] = exp(theta[o, a]) / sum_b exp(theta[o, b])`` (stable),
    for a validated ``(nO, nA)`` array of finite logits."""
    theta = as_float_array(theta, "theta", ndim=2, error=PolicyError)
    return softmax_last_axis(theta)


def softmax_score(pi: FloatArray, o: int, a: int) -> FloatArray:
    """``d/dtheta[o', b] log pi(a|o) = 1[o'=o] (1[b=a] - pi(b|o))``; shape of ``pi``.

    Its Euclidean norm is at most ``sqrt(2)`` (SPEC section 1).
    """
    out = np.zeros_like(pi)
    out[o] = -pi[o]
    out[o, a] += 1.0
    return out


def policy_gradient(mdp: TabularMDP, theta: FloatArray) -> FloatArray:
    """Exact gradient of ``J`` for the tabular softmax ``pi = softmax(theta)``, shape ``(nS, nA)``.

    Policy gradient theorem ``grad J = sum_{s,a} lam[s,a] Q[s,a] score(a|s)``; with the
    softmax score this contracts to ``grad[s, b] = lam_S[s] pi[s, b] A[s, b]`` because
    ``sum_a pi[s,a] Q[s,a] = V[s]``.
    """
    theta = as_float_array(theta, "theta", shape=(mdp.n_states, mdp.n_actions), error=PolicyError)
    pi = softmax(theta)
    vals = evaluate(mdp, pi)
    occ = occupancy(mdp, pi)
    grad: FloatArray = occ.lam_S[:, None] * pi * vals.A
    return grad


def performance_difference(mdp: TabularMDP, pi: FloatArray, pi_new: FloatArray) -> float:
    """Right side of the performance difference lemma, ``sum_{s,a} lam^{pi_new}[s,a] A^pi[s,a]``.

    Equals ``J(pi_new) - J(pi)`` (Kakade and Langford 2002, lemma 6.1, unnormalised occupancy).
    """
    return float(np.sum(occupancy(mdp, pi_new).lam * evaluate(mdp, pi).A))


@dataclass(frozen=True)
class OptimalValues:
    """Optimal values ``V*``, ``Q*``, ``J*`` with a certified error and a greedy policy.

    Attributes:
        V: ``(nS,)`` approximation of ``V* = max_pi V_pi``.
        Q: ``(nS, nA)`` ``r + gamma P V``.
        J: ``rho . V``.
        greedy: ``(nS,)`` int64, an action maximising ``Q[s, .]``.
        iterations: Bellman backups performed (policy-improvement rounds for
            :func:`policy_iteration`).
        error_bound: certified ``||V - V*||_inf`` (hence also ``|J - J*|``).
    """

    V: FloatArray
    Q: FloatArray
    J: float
    greedy: npt.NDArray[np.int64]
    iterations: int
    error_bound: float


def value_iteration(mdp: TabularMDP, tol: float = 1e-10, max_iter: int = 100_000) -> OptimalValues:
    """``V*`` by value iteration ``V_{k+1} = max_a (r + gamma P V_k)`` from ``V_0 = 0``.

    Certified stop (SPEC section 5, "J* by value iteration with a certified tolerance"):
    the Bellman optimality operator is a ``gamma``-contraction in the sup norm, so
    ``||V* - V_k||_inf <= gamma ||V_k - V_{k-1}||_inf / (1 - gamma)``; to this we add the
    rounding of one backup, ``(nS + 2) eps (||r||_inf + gamma ||V_k||_inf)``, damped by the
    contraction, ``1/(1-gamma)`` in all.  Raises :class:`SolverError` past ``max_iter``.
    """
    if not tol > 0:
        raise ModelError(f"tol = {tol!r}, expected a positive tolerance")
    g = mdp.gamma
    r_norm = float(np.max(np.abs(mdp.r)))
    V = np.zeros(mdp.n_states)
    k = 0
    while True:
        Q = mdp.r + g * np.einsum("sat,t->sa", mdp.P, V)
        V_new = Q.max(axis=1)
        k += 1
        step = float(np.max(np.abs(V_new - V)))
        V = V_new
        rounding = (mdp.n_states + 2) * _EPS * (r_norm + g * float(np.max(np.abs(V)))) / (1 - g)
        bound = g * step / (1 - g) + rounding
        if bound <= tol or g == 0.0:
            Q = mdp.r + g * np.einsum("sat,t->sa", mdp.P, V)
            return OptimalValues(
                V=frozen(V),
                Q=frozen(Q),
                J=float(mdp.rho @ V),
                greedy=np.argmax(Q, axis=1).astype(np.int64),
                iterations=k,
                error_bound=bound,
            )
        if k >= max_iter:
            raise SolverError(
                f"value iteration reached max_iter = {max_iter} with certified error "
                f"{bound:.3g} > tol = {tol:.3g}"
            )


def policy_iteration(mdp: TabularMDP, max_iter: int = 10_000) -> OptimalValues:
    """``V*`` by Howard's policy iteration with exact LU evaluation (a second route to
    :func:`value_iteration`).

    Policy iteration stops at a policy that is greedy with respect to its own values;
    such a policy is optimal.  The returned bound is that of the last LU evaluation
    (:func:`evaluate`) plus ``||T* V - V||_inf / (1 - gamma)``, the Bellman-optimality
    residual ``max_s (max_a Q[s, a] - V[s])`` inflated by the evaluation and rounding
    errors of ``Q`` and ``V`` (zero up to rounding at termination).  Ties are broken
    towards the current action so the loop terminates.
    """
    n_s, n_a = mdp.n_states, mdp.n_actions
    act = np.zeros(n_s, dtype=np.int64)
    rows = np.arange(n_s)
    for k in range(1, max_iter + 1):
        pi = np.zeros((n_s, n_a))
        pi[rows, act] = 1.0
        vals = evaluate(mdp, pi)
        Q = vals.Q
        best = Q.max(axis=1)
        scale = float(np.max(np.abs(Q))) + 1.0
        improve = best > Q[rows, act] + 8 * n_s * _EPS * scale / (1 - mdp.gamma)
        if not improve.any():
            # ||V* - V_pi|| <= ||T* V_pi - V_pi|| / (1 - gamma); the computed Q, V differ from
            # the true ones by at most gamma e + rounding and e respectively
            g, e = mdp.gamma, vals.error_bound
            q_round = (n_s + 2) * _EPS * scale
            residual = float(np.max(best - vals.V))
            return OptimalValues(
                V=vals.V,
                Q=frozen(Q),
                J=vals.J,
                greedy=act,
                iterations=k,
                error_bound=e + (max(residual, 0.0) + (1 + g) * e + q_round) / (1 - g),
            )
        act = np.where(improve, np.argmax(Q, axis=1), act).astype(np.int64)
    raise SolverError(f"policy iteration did not stabilise within max_iter = {max_iter}")
