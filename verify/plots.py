"""One home for the project's plots, used by the command line and the report alike.

Values on a log axis that are exactly zero (a decay spread at the diameter, a gap of an
optimal policy) have no place on that axis; drawing them at a floor such as ``2.2e-308``
stretches the axis over three hundred decades and hides everything else.  :func:`log_series`
draws the positive values as a line and marks each exact zero with an open triangle on the
bottom edge of the axes, labelled ``"= 0"`` in the legend.  Everything needs matplotlib
(``pip install 'marl-oracle[plot]'``); :func:`pyplot` returns it on the Agg backend or
``None``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["ZERO_MARKER_NOTE", "log_series", "pyplot"]

ZERO_MARKER_NOTE = "open triangle on the x axis: exactly 0"
"""Legend text for the zero markers of :func:`log_series`."""


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, or ``None`` if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def log_series(
    ax: Any,
    x: Sequence[float] | np.ndarray[Any, Any],
    y: Sequence[float] | np.ndarray[Any, Any],
    fmt: str,
    label: str | None,
    zero_label: str | None = None,
    **kwargs: Any,
) -> None:
    """Plot ``y`` against ``x`` on ``ax`` (log ``y`` axis): positive values as ``fmt``,
    exact zeros as open triangles on the bottom edge (not at a floor value), negative and
    non-finite values left out.  ``label`` names the line in the legend (``None``: no
    entry); ``zero_label`` names the zero markers (default ``"<label> = 0 (exact)"``, no
    entry if ``label`` is ``None``).

    The line is broken at the zeros, so it never joins a value to a point that is not on
    the axis.
    """
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    ax.set_yscale("log")
    positive = np.isfinite(ys) & (ys > 0)
    shown = np.where(positive, ys, np.nan)
    (line,) = ax.plot(xs, shown, fmt, label=label, **kwargs)
    zeros = ys == 0
    if zeros.any():
        ax.plot(
            xs[zeros],
            np.zeros(int(zeros.sum())),
            "v",
            mfc="none",
            color=line.get_color(),
            transform=ax.get_xaxis_transform(),
            clip_on=False,
            label=zero_label if zero_label is not None else (
                f"{label} = 0 (exact)" if label is not None else None
            ),
        )
