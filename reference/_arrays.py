"""Array aliases and validation helpers shared by every module (SPEC section 0)."""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from math import prod
from typing import Any

import numpy as np
import numpy.typing as npt

from reference.errors import ModelError

__all__ = [
    "EPS_F64",
    "FloatArray",
    "FrozenArrays",
    "IntArray",
    "as_float_array",
    "check_distribution_rows",
    "check_gamma",
    "check_rng",
    "draw_rows",
    "frozen",
    "read_only",
    "stochastic_tolerance",
    "streamed_empty",
]

FloatArray = npt.NDArray[np.float64]
"""A float64 array; every docstring states its shape and meaning."""

IntArray = npt.NDArray[np.int64]
"""An int64 index array."""

EPS_F64 = float(np.finfo(np.float64).eps)
"""Machine epsilon of float64, ``2^-52``, for rounding allowances inside ``reference``."""


def stochastic_tolerance(width: int) -> float:
    """Tolerance on a row sum of ``width`` float64 probabilities.

    Summing ``width`` numbers in [0, 1] commits at most ``width * eps`` rounding
    error (standard summation bound); a factor 8 covers values that were
    themselves normalised by one division.
    """
    return 8.0 * max(width, 1) * float(np.finfo(np.float64).eps)


def frozen(array: npt.ArrayLike) -> FloatArray:
    """A read-only float64 copy of ``array``."""
    out = np.array(array, dtype=np.float64, copy=True)
    out.setflags(write=False)
    return out


def read_only(x: FloatArray) -> FloatArray:
    """Mark a freshly computed float64 array read-only in place and return it (no copy).

    Only for arrays no caller holds a writable reference to; otherwise use :func:`frozen`.
    """
    x.setflags(write=False)
    return x


def as_float_array(
    value: Any,
    name: str,
    *,
    shape: Sequence[int] | None = None,
    ndim: int | None = None,
    error: type[ModelError] = ModelError,
) -> FloatArray:
    """Convert ``value`` to a finite float64 array, checking shape and finiteness.

    Raises ``error`` naming ``name`` and the first offending index.
    """
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise error(f"{name} cannot be read as a float64 array: {exc}") from None
    if ndim is not None and arr.ndim != ndim:
        raise error(f"{name} has {arr.ndim} dimensions {arr.shape}, expected {ndim}")
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise error(f"{name} has shape {arr.shape}, expected {tuple(shape)}")
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise error(
            f"{name}[{', '.join(map(str, idx))}] is {float(arr[idx])!r}, expected a finite number"
        )
    return arr


def check_gamma(gamma: float, name: str = "gamma") -> float:
    """Validate a discount factor in [0, 1)."""
    try:
        g = float(gamma)
    except (TypeError, ValueError):
        raise ModelError(f"{name} = {gamma!r} is not a number") from None
    if not (0.0 <= g < 1.0):
        raise ModelError(f"{name} = {g!r}, expected 0 <= {name} < 1")
    return g


def check_distribution_rows(
    arr: FloatArray,
    name: str,
    *,
    describe: Any = None,
    error: type[ModelError] = ModelError,
) -> None:
    """Check that ``arr`` is non-negative and sums to 1 along its last axis.

    ``describe(index_tuple) -> str`` renders the leading index of a bad row for
    the message (default: the plain index tuple).
    """
    render = describe if describe is not None else (lambda idx: ", ".join(map(str, idx)))
    neg = arr < 0
    if neg.any():
        idx = tuple(int(i) for i in np.argwhere(neg)[0])
        raise error(
            f"{name}[{render(idx[:-1])}, {idx[-1]}] = {float(arr[idx])!r} is negative, "
            "expected a probability"
        )
    sums = arr.sum(axis=-1)
    tol = stochastic_tolerance(arr.shape[-1])
    off = np.abs(sums - 1.0) > tol
    if off.any():
        idx = tuple(int(i) for i in np.argwhere(off)[0])
        raise error(f"{name}[{render(idx)}] sums to {float(sums[idx])!r}, expected 1")


def draw_rows(cum: FloatArray, rows: IntArray, rng: np.random.Generator) -> IntArray:
    """Inverse-CDF draws, one per entry of ``rows``, from the rows ``cum[rows]`` of a
    cumulative table ``cum`` (each row a cumulative distribution); one uniform per draw.
    Indices past the last column (a row summing to ``1 - eps``) are clipped to it."""
    u: FloatArray = rng.random(int(rows.shape[0]))
    c: FloatArray = cum[rows]
    idx: IntArray = (c < u[:, None]).sum(axis=1).astype(np.int64)
    out: IntArray = np.minimum(idx, cum.shape[1] - 1)
    return out


def _refreeze(value: Any) -> Any:
    """``value`` with every numpy array in it (also inside tuples) marked read-only."""
    if isinstance(value, np.ndarray):
        value.setflags(write=False)
        return value
    if isinstance(value, tuple):
        return tuple(_refreeze(v) for v in value)
    return value


class FrozenArrays:
    """Mixin for frozen records whose arrays are read-only (STYLE item 2).

    Pickling does not keep numpy's ``writeable`` flag, so a record sent to a process pool or
    a Dask worker would arrive with writable arrays, and code that writes into them would
    fail under a serial executor but not under a parallel one.  Restoring the flag on
    unpickling keeps the record the same wherever it runs.
    """

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, _refreeze(value))


def check_rng(
    rng: Any, name: str = "rng", error: type[ModelError] = ModelError
) -> np.random.Generator:
    """``rng`` itself if it is a :class:`numpy.random.Generator`, else ``error`` naming the
    argument (an integer seed is refused: randomness enters only through an explicit
    generator, e.g. ``np.random.default_rng(0)``)."""
    if not isinstance(rng, np.random.Generator):
        hint = (
            f"; pass np.random.default_rng({rng!r})"
            if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) else ""
        )
        raise error(f"{name} = {rng!r}, expected a numpy.random.Generator{hint}")
    return rng


_STREAMED_BYTES = 1 << 26
"""Arrays of at least this many bytes that are only streamed through (solver vectors, the
stored inputs of the factor gradients) are mapped without huge-page advice
(:func:`streamed_empty`)."""


def streamed_empty(shape: int | tuple[int, ...]) -> FloatArray:
    """A fresh float array for sequential streaming: at :data:`_STREAMED_BYTES` and more an
    anonymous mapping advised ``MADV_NOHUGEPAGE`` where the platform has it, else
    ``numpy.empty``.  numpy advises its own large arrays to use transparent huge pages; where
    the kernel then compacts memory synchronously the first touch is several times slower
    (measured: 2.4–2.9 s per GiB against 0.37–0.52 s), while streaming gains nothing from
    huge pages.  The work buffers of the contractions, whose strided permutations do gain,
    keep numpy's advice (``proofs_notes/matrix-free.md#krylov``)."""
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    count = prod(dims)
    advice = getattr(mmap, "MADV_NOHUGEPAGE", None)
    if 8 * count < _STREAMED_BYTES or advice is None:
        return np.empty(dims)
    mapping = mmap.mmap(-1, 8 * count)
    mapping.madvise(advice)
    out: FloatArray = np.frombuffer(mapping, dtype=np.float64, count=count).reshape(dims)
    return out
