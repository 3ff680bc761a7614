"""Derived tolerances, all in one place (STYLE item 9).

No test in this project uses a bare threshold: every deterministic comparison uses
one of the functions below, each of which states the error analysis it rests on.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "EPS",
    "certified",
    "finite_difference_step",
    "finite_difference_tolerance",
    "gradient_tolerance",
    "linear_solve_tolerance",
    "pdl_tolerance",
    "summation_tolerance",
]

EPS = float(np.finfo(np.float64).eps)
"""Machine epsilon of float64, ``2^-52``."""


def summation_tolerance(n_terms: int, scale: float) -> float:
    """Rounding of a sum of ``n_terms`` numbers of magnitude at most ``scale``.

    Recursive summation commits at most ``(n - 1) eps sum |x_k|`` (Higham 2002,
    eq. 4.4); we use ``n_terms * eps * n_terms * scale`` to also cover the
    products that formed the terms (one rounding each).
    """
    n = max(int(n_terms), 1)
    return (n + 1) * EPS * n * float(scale)


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
