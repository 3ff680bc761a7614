"""Central finite differences with a derived error bound (SPEC section 2, route 3).

The numerical route for ``grad F``: ``D_k(h) = (F(x + h e_k) - F(x - h e_k)) / (2 h)``,
reported together with ``D_k(2h)`` so that :func:`verify.tolerances.finite_difference_tolerance`
can bound its error by Richardson's argument.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from reference._arrays import FloatArray, as_float_array, frozen
from reference.errors import ModelError
from verify.tolerances import finite_difference_step, finite_difference_tolerance

__all__ = ["FiniteDifferenceGradient", "central_difference"]


@dataclass(frozen=True)
class FiniteDifferenceGradient:
    """A central-difference gradient with its error bound.

    Attributes:
        gradient: ``(m,)`` ``D(h)`` per coordinate.
        coarse: ``(m,)`` ``D(2h)`` per coordinate.
        step: ``h``.
        tolerance: ``(m,)`` bound on ``|D(h) - true gradient|`` (see
            :func:`verify.tolerances.finite_difference_tolerance`).
        evaluations: number of calls of the function (``4 m``).
    """

    gradient: FloatArray
    coarse: FloatArray
    step: float
    tolerance: FloatArray
    evaluations: int


def central_difference(
    f: Callable[[FloatArray], float],
    x: FloatArray,
    *,
    step: float | None = None,
    value_error: float = 0.0,
) -> FiniteDifferenceGradient:
    """Central differences of ``f`` at ``x`` along every coordinate, at ``h`` and ``2h``.

    Args:
        f: scalar function of a flat parameter vector.
        x: ``(m,)`` point.
        step: ``h``; default :func:`verify.tolerances.finite_difference_step` of ``max |x|``.
        value_error: bound on the error of one evaluation of ``f`` (e.g. from the
            certified error of the linear solves inside ``f``).
    """
    x = as_float_array(x, "x", ndim=1)
    h = finite_difference_step(float(np.max(np.abs(x), initial=0.0))) if step is None else step
    if not h > 0:
        raise ModelError(f"step = {h!r}, expected a positive finite-difference step")
    if not value_error >= 0:
        raise ModelError(f"value_error = {value_error!r}, expected a non-negative bound")
    fine = np.empty(x.size)
    coarse = np.empty(x.size)
    for k in range(x.size):  # one loop over parameters, each a full evaluation of f
        e = np.zeros(x.size)
        e[k] = 1.0
        fine[k] = (f(x + h * e) - f(x - h * e)) / (2 * h)
        coarse[k] = (f(x + 2 * h * e) - f(x - 2 * h * e)) / (4 * h)
    tol = finite_difference_tolerance(coarse - fine, h, value_error)
    return FiniteDifferenceGradient(
        gradient=frozen(fine),
        coarse=frozen(coarse),
        step=float(h),
        tolerance=frozen(tol),
        evaluations=4 * x.size,
    )
