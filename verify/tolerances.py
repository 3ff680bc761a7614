"""Derived tolerances, all in one place (STYLE item 9).

No test in this project uses a bare threshold: every deterministic comparison uses
one of the functions below, each of which states the error analysis it rests on.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from reference.errors import ModelError

__all__ = [
    "EPS",
    "UNDERFLOW",
    "certified",
    "contraction_tolerance",
    "finite_difference_step",
    "finite_difference_tolerance",
    "gradient_agreement_tolerance",
    "gradient_tolerance",
    "kernel_formation_depth",
    "linear_solve_tolerance",
    "pdl_tolerance",
    "precision_factor",
    "solve_agreement_tolerance",
    "summation_tolerance",
]

EPS = float(np.finfo(np.float64).eps)
"""Machine epsilon of float64, ``2^-52``."""
UNDERFLOW = float(np.finfo(np.float64).smallest_subnormal)
"""The smallest positive subnormal float64, ``2^-1074``."""


def summation_tolerance(n_terms: int, scale: float) -> float:
    """Rounding of a sum of ``n_terms`` numbers of magnitude at most ``scale``.

    Recursive summation commits at most ``(n - 1) eps sum |x_k|`` (Higham 2002,
    eq. 4.4); we use ``n_terms * eps * n_terms * scale`` to also cover the
    products that formed the terms (one rounding each).  With gradual underflow each of those
    products may also err by half the smallest subnormal in absolute terms (Higham 2002,
    eq. 2.8), which the relative term cannot cover when ``scale`` is itself subnormal; two
    routes of ``n`` products each add ``n`` smallest subnormals.
    """
    n = max(int(n_terms), 1)
    return (n + 1) * EPS * n * float(scale) + n * UNDERFLOW


def precision_factor(dtype: npt.DTypeLike) -> float:
    """How much a float64 rounding allowance grows when the computation runs in ``dtype``:
    ``2 eps_dtype / eps_float64`` (``2^30`` for float32, 1 for float64).

    Derivation (``proofs_notes/float32-allowance.md``).  Every allowance for a user's own
    rounding in :mod:`verify.checks` is a first-order bound of the standard model
    ``fl(x op y) = (x op y)(1 + d)``, ``|d| <= u``: it has the form ``c u S`` with ``c`` a count
    of roundings along a path and ``S`` a magnitude fixed by the inputs (a sum of absolute
    terms, or the quantity itself for products and exponentials, where the bound is
    relative).  Replacing ``u = eps_64 / 2`` by ``u_d = eps_d / 2`` gives the same bound at
    precision ``d``; the terms of order ``(c u_d)^2`` that the first-order form drops are
    below ``c u_d`` times itself, at most ``10^-3`` of the bound for ``c <= 10^4`` at float32.
    A float32 routine also receives (or makes) float32 copies of float64 inputs: one more
    relative rounding of ``u_d`` per input, which perturbs every term of ``S`` by at most
    ``u_d |x|`` and so adds at most one rounding to each path, never more than ``c``
    (every path of ``c`` roundings starts at an input).  Hence the factor 2: the allowance at
    ``d`` is ``2 c u_d S = (2 eps_d / eps_64) c u S``.  Relative allowances (ratios,
    softmax probabilities) stay relative, as the factor multiplies them.
    """
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise ModelError(f"dtype = {dt}, expected a floating-point type")
    return 2.0 * float(np.finfo(dt).eps) / EPS if dt != np.float64 else 1.0


def linear_solve_tolerance(n: int, gamma: float, scale: float) -> float:
    """Forward error of an LU solve of ``(I - gamma P) x = b`` with ``P`` row-stochastic.

    ``kappa_inf(I - gamma P) <= (1 + gamma) / (1 - gamma)``; a backward-stable solve
    has relative backward error ``<= c n eps`` with ``c = 2`` for the diagonally
    dominant ``I - gamma P`` (growth factor at most 2, Higham 2002 thm 9.9), hence the
    forward error ``<= kappa * 2 n eps * ||x||``.  ``scale`` is ``||x||`` (or a bound).
    """
    kappa = (1.0 + gamma) / (1.0 - gamma)
    return kappa * 2.0 * (max(int(n), 1) + 2) * EPS * float(scale)


def certified(*bounds: float) -> float:
    """Sum of certified error bounds of the two routes being compared.

    If route 1 is within ``e1`` of the truth and route 2 within ``e2``, the two are
    within ``e1 + e2`` of each other (triangle inequality).
    """
    return float(sum(bounds))


def finite_difference_step(x_scale: float = 1.0) -> float:
    """Central-difference step ``h = eps^(1/3) max(1, |x|)``.

    Minimises ``c h^2 + delta / h`` (truncation plus rounding) up to constants when
    the function's third derivative and value are of order one.
    """
    return float(np.cbrt(EPS)) * max(1.0, abs(float(x_scale)))


def finite_difference_tolerance(
    richardson_gap: np.ndarray, step: float, value_error: float
) -> np.ndarray:
    """Bound on ``|D(h) - f'|`` for the central difference ``D(h)``.

    With ``D(h) = f' + c h^2 + e_1 + O(h^4)`` and ``D(2h) = f' + 4 c h^2 + e_2 + O(h^4)``
    where ``|e_1| <= delta / h`` and ``|e_2| <= delta / (2 h)`` are the rounding of the
    two differences (``delta`` = ``value_error``, the error of one evaluation of ``f``)::

        |D(h) - f'| <= |D(2h) - D(h)| / 3 + (|e_1| + |e_2|) / 3 + |e_1| + O(h^4)
                    <= |D(2h) - D(h)| / 3 + 1.5 delta / h + O(h^4).

    The ``O(h^4)`` remainder is covered by doubling the Richardson term: it is
    below the ``h^2`` term whenever ``h^2 |f^(5)| / 20 <= |f'''| / 6``, which holds at
    ``h ~ 6e-6`` for the smooth (analytic in theta) objectives of this project.
    """
    gap = np.abs(np.asarray(richardson_gap, dtype=np.float64))
    return 2.0 * gap / 3.0 + 1.5 * float(value_error) / float(step) + EPS


def gradient_tolerance(n_states: int, gamma: float, reward_bound: float) -> float:
    """Forward error of an exact policy gradient computed from LU solves.

    Entries of ``grad F`` are sums ``sum_s lam_S(s) pi (Q - V)``.  A perturbation
    ``d lam`` (l1) and ``dV`` (inf) of the solves changes them by at most
    ``||d lam||_1 2 Q_max + (1/(1-gamma)) 2 (1 + gamma) ||dV||_inf``; with
    ``||d lam||_1 <= kappa 2 (n+2) eps / (1-gamma)`` and
    ``||dV||_inf <= kappa 2 (n+2) eps Q_max`` (:func:`linear_solve_tolerance`,
    ``Q_max = reward_bound / (1 - gamma)``) this is at most
    ``8 kappa (n+2) eps Q_max / (1 - gamma)``.  Comparing two routes doubles it.
    """
    kappa = (1.0 + gamma) / (1.0 - gamma)
    q_max = max(float(reward_bound), 1.0) / (1.0 - gamma)
    return 2.0 * 8.0 * kappa * (max(int(n_states), 1) + 2) * EPS * q_max / (1.0 - gamma)


def pdl_tolerance(n_states: int, n_joint_actions: int, n_agents: int, gamma: float) -> float:
    """Rounding allowance between the two sides of the multi-agent performance difference
    lemma (SPEC section 5) for rewards in ``[0, 1]``.

    ``J(pi') - J(pi)``: two LU-solved values of size ``<= 1/(1-gamma)``, so
    ``e_V = linear_solve_tolerance(nS, gamma, 1/(1-gamma))`` each.  Agent ``m``'s term is
    ``1/(1-gamma) sum_s nu'(s) sum_a pi'^{0:m-1} Q^{0:m} (pi'^m - pi^m)``: ``nu'`` carries the
    l1 error ``e_nu = linear_solve_tolerance(nS, gamma, 1)``, ``Q^{0:m}`` (an average of
    ``r + gamma P V``) the sup error ``e_V``, and the weights ``|pi'^m - pi^m|`` sum to at
    most 2, so the term moves by at most ``(2 e_nu / (1-gamma) + 2 e_V) / (1-gamma)``, plus
    the rounding of its ``nS |A|`` products of size ``<= 2/(1-gamma)^2``
    (:func:`summation_tolerance`).  The bound adds the two values and the ``N`` terms.
    """
    h = 1.0 / (1.0 - gamma)
    e_v = linear_solve_tolerance(n_states, gamma, h)
    e_nu = linear_solve_tolerance(n_states, gamma, 1.0)
    term = (2.0 * e_nu * h + 2.0 * e_v) * h + summation_tolerance(
        n_states * n_joint_actions, 2.0 * h * h
    )
    return 2.0 * e_v + n_agents * term


# ---------------------------------------------------------------------- transition backends
def contraction_tolerance(depth: int, scale: float) -> float:
    """Rounding of a sum of products evaluated as nested dot products.

    If every term of ``y = sum_k prod_l a_kl`` passes through floating-point operations whose
    count along its path is at most ``depth`` (a dot product of length ``L`` counts ``L``: one
    product and ``L - 1`` additions, in any order, blocked or fused; forming a product of
    ``g`` factors counts ``g - 1``), then ``fl(y) = sum_k (prod_l a_kl)(1 + theta_k)`` with
    ``|theta_k| <= gamma_depth = depth u / (1 - depth u) <= depth eps`` (Higham 2002, lemma 3.1
    and section 3.1, applied level by level; ``u = eps / 2``, ``depth u <= 1/2``).  Hence
    ``|fl(y) - y| <= depth eps sum_k |prod_l a_kl| <= depth eps scale``.

    For ``P v`` with ``P >= 0`` of row sums at most ``rho`` the scale of each entry is
    ``rho ||v||_inf``; for ``P^T u`` the l1 norm of the error is at most ``depth eps rho ||u||_1``
    (``proofs_notes/matrix-free.md#certificate``).
    """
    d = max(int(depth), 1)
    if d * EPS / 2.0 > 0.5:
        raise ModelError(f"depth = {d} is too large for the first-order rounding bound")
    return d * EPS * float(scale)


def kernel_formation_depth(n_actions: tuple[int, ...]) -> int:
    """``2 sum_i |A_i| + n``: relative gap, in units of eps, between the entries of the dense
    backend's float ``P_pi`` and the product of the matrix-free backend's float factors.

    Each backend forms ``M_i = sum_a pi_i P_i`` as a sum of ``|A_i|`` non-negative products
    (relative error ``gamma_{|A_i|}`` against the float inputs), and the dense backend also
    rounds the product of the ``n`` factors of each entry; so each float operator is within
    ``gamma_{sum |A_i| + n}`` of the exact product and the two are within
    ``gamma_{2 sum |A_i| + n}`` of each other, entrywise and relatively
    (``proofs_notes/matrix-free.md#agreement``).
    """
    return 2 * sum(int(a) for a in n_actions) + len(n_actions)


def solve_agreement_tolerance(
    dense_bound: float,
    matrix_free_bound: float,
    gamma: float,
    row_sum_bound: float,
    formation_depth: int,
    solution_norm: float,
) -> float:
    """Largest possible gap between the dense and the matrix-free solution of one system.

    Each backend certifies its answer for its own float operator: the matrix-free bound
    holds as reported; the dense certificate assumes rows of sum 1, while its float rows sum
    to at most ``r = rho (1 + delta)`` (``delta = formation_depth * eps``, see
    :func:`kernel_formation_depth`), so its bound is scaled by ``(1 - gamma)/(1 - gamma r)``.
    The two exact float solutions differ by ``(I - gamma P_d)^{-1} gamma (P_d - P_f) x_f``
    with ``||P_d - P_f|| <= delta rho`` (inf-norm, or l1 of the transpose), at most
    ``gamma delta rho ||x_f|| / (1 - gamma r)``; ``solution_norm`` bounds ``||x_f||``.  The
    triangle inequality adds the three (``proofs_notes/matrix-free.md#agreement``).
    """
    delta = formation_depth * EPS
    r = float(row_sum_bound) * (1.0 + delta)
    if not gamma * r < 1.0:
        raise ModelError(f"gamma * rho = {gamma * r} is not below 1")
    dense = float(dense_bound) * (1.0 - gamma) / (1.0 - gamma * r)
    gap = gamma * delta * float(row_sum_bound) * float(solution_norm) / (1.0 - gamma * r)
    return dense + float(matrix_free_bound) + gap


def gradient_agreement_tolerance(
    *,
    gamma: float,
    n_agents: int,
    n_states: int,
    occupancy_gap: float,
    value_gap: float,
    reward_gap: float,
    reward_bound: float,
    agent_apply_depth: int,
) -> float:
    """Largest possible gap between two computations of ``grad F`` by route 1.

    Route 1 computes ``grad_i[o, b] = sum_{s: o_i(s) = o} lam_S(s) pi_i(b|o) G_i(s, b)`` with
    ``G_i = (1/n)(r_i - R_i^pi) + Rbar^pi - Vbar + gamma P^{(i,b)} Vbar``.  With
    ``mass = 1/(1-gamma)``, ``v = reward_bound * mass`` (so ``|G_i| <= 2 v``) and the inputs of
    the two computations differing by ``occupancy_gap`` (l1, ``lam_S``), ``reward_gap`` (inf,
    each ``r_i``) and ``value_gap`` (inf, ``Vbar`` for equal rewards):

    * ``Vbar`` differs by ``dV = value_gap + reward_gap mass + (n + 2) eps v`` (the reward
      change passes through ``(I - gamma P_pi)^{-1}``, of norm ``mass``; the team reward is
      averaged in a different order);
    * ``G_i`` by ``dG = (1 + 2/n) reward_gap + (1 + 2 gamma) dV + gamma agent_apply_depth eps
      (2 v) + 16 eps v``: the two ``P^{(i,b)}`` applications round differently
      (:func:`contraction_tolerance`, row sums at most 2), and forming ``G_i`` takes at most
      eight roundings of terms of size ``2 v`` in each computation;
    * the sum by ``occupancy_gap 2 v + (mass + occupancy_gap) dG``, plus the rounding of two
      sums of ``|S|`` terms of total size ``mass 2 v`` with three products each,
      ``2 (|S| + 3) eps mass 2 v`` (Higham 2002, eq. 4.4).

    See ``proofs_notes/matrix-free.md#agreement``.
    """
    mass = 1.0 / (1.0 - gamma)
    v = float(reward_bound) * mass
    n = max(int(n_agents), 1)
    d_v = float(value_gap) + float(reward_gap) * mass + (n + 2) * EPS * v
    d_g = (
        (1.0 + 2.0 / n) * float(reward_gap)
        + (1.0 + 2.0 * gamma) * d_v
        + gamma * contraction_tolerance(agent_apply_depth, 2.0 * v)
        + 16.0 * EPS * v
    )
    rounding = 2.0 * (int(n_states) + 3) * EPS * mass * 2.0 * v
    return float(occupancy_gap) * 2.0 * v + (mass + float(occupancy_gap)) * d_g + rounding
