"""The one runner every conformance check is declared over (STYLE item 16).

A check is a :class:`Declaration`: its name and reference, a generator of instances
``generate(rng, size)``, the conversion of an instance to named arrays and back (for
:class:`Case` files), ``evaluate`` (which calls the user's callable through a :class:`UserIO`
and returns the entries to compare as :class:`Compared` records, or a :class:`CaseResult`
for a stochastic check), whether its oracle comes from a linear solve, the conventions it
was asked to check and the known bugs and conventions (:class:`Alternative`) its diagnosis
tries.  :func:`run_check` owns everything else:

* **Generation.**  Case ``i`` of a run is drawn by ``generate`` from a ``numpy`` generator
  seeded with ``(seed, crc32(check name), i)`` at the size ``case_size(i, cases)`` of a
  ladder that climbs from small instances to the full size limits.  A run therefore depends
  on ``(check, seed, cases, size limits)`` alone: not on the process, the modules loaded or
  the Hypothesis version (the Hypothesis strategies of :mod:`verify.strategies` stay public
  for property tests).  It does rest on numpy's ``Generator`` streams, which numpy keeps
  stable within a release series but may change between major versions.
* **Conversion.**  Inputs go to the callable in its array namespace ``xp`` (``None``: numpy)
  and dtype (``dtype=``, default float64); outputs come back through DLPack or
  ``__array__``; complex outputs fail the case.
* **Precision.**  Each compared entry carries the oracle's rounding and the callable's own
  allowance at float64; the runner scales the callable's share to the precision it judges at
  (the coarser of the declared ``dtype`` and the dtype of the output) by
  :func:`verify.tolerances.precision_factor`, or replaces it by ``atol``, and adds
  ``rtol * |oracle|``.
* **Replay.**  The worst case is kept as a :class:`Case`; passing it as ``replay=`` re-runs
  exactly that instance.
* **Diagnosis.**  When a check fails, every :class:`Alternative` of the check is evaluated on
  the failing cases; one whose output matches the user's within the case's tolerance is
  named in :attr:`CheckReport.diagnosis`.

Deterministic callables are judged with tolerances derived in :mod:`verify.tolerances`.
Stochastic callables are judged by a concentration radius at a stated false-alarm
probability for the whole check (at most ``1e-6``, split over the cases by the union bound)
and report their power against a named alternative.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

from reference.errors import ModelError
from verify.tolerances import precision_factor

__all__ = [
    "MAX_FALSE_ALARM",
    "PRECISIONS",
    "Alternative",
    "Case",
    "CaseFailure",
    "CaseResult",
    "CheckArgumentError",
    "CheckFailed",
    "CheckReport",
    "Compared",
    "Declaration",
    "KnownBug",
    "Mutant",
    "UserIO",
    "case_generator",
    "case_rng",
    "case_size",
    "guard",
    "known_alternatives",
    "ladder_count",
    "run_check",
    "stochastic_rows",
    "tolerance_argument",
]

T = TypeVar("T")

MAX_FALSE_ALARM = 1e-6
"""The largest false-alarm probability per case that a stochastic check may use."""


class CheckFailed(AssertionError):
    """Raised by :meth:`CheckReport.raise_if_failed`; the message is the report."""


class CheckArgumentError(ModelError):
    """A check was called with a bad argument; the message names the argument and value."""


class CaseFailure(Exception):
    """Raised inside a case for a fault of the user's callable (it raised, or returned the
    wrong count, shape or type); the case fails with this message as its location.  Any other
    exception inside a case is a fault of the check or its oracle and propagates."""


def guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with every exception it raises turned into a :class:`CaseFailure` naming it."""

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise CaseFailure(f"the callable raised {type(exc).__name__}: {exc}") from exc

    return guarded


@dataclass(frozen=True)
class Case:
    """One generated instance, as named arrays, with the check and seed that produced it.

    Attributes:
        check: the check's name.
        seed: the seed of the run that generated it.
        index: its position among the run's cases.
        arrays: the instance's arrays (read-only); scalars are 0-d arrays.
    """

    check: str
    seed: int
    index: int
    arrays: Mapping[str, npt.NDArray[Any]] = field(repr=False)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the case to ``path`` (``.npz``, no pickled objects)."""
        fields = {f"a_{k}": np.asarray(v) for k, v in self.arrays.items()}
        fields["check"] = np.array(self.check)
        fields["seed"] = np.array(self.seed, dtype=np.int64)
        fields["index"] = np.array(self.index, dtype=np.int64)
        with open(Path(path), "wb") as handle:
            np.savez(handle, **fields)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Case:
        """Read a case written by :meth:`save`."""
        name = os.fspath(path)
        try:
            loaded = np.load(name, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ModelError(f"{name}: a bare array, not a case file (.npz)")
            with loaded as z:
                raw = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
            raise ModelError(f"{name}: not a readable case file ({exc})") from exc
        for key in ("check", "seed", "index"):
            if key not in raw:
                raise ModelError(f"{name}: missing field {key!r}")
            if raw[key].shape != ():
                raise ModelError(f"{name}: field {key!r} has shape {raw[key].shape}, expected ()")
        arrays = {k[2:]: _read_only(v) for k, v in raw.items() if k.startswith("a_")}
        if not arrays:
            raise ModelError(f"{name}: the case holds no arrays")
        try:
            seed, index = int(raw["seed"]), int(raw["index"])
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{name}: seed or index is not an integer ({exc})") from exc
        return cls(str(raw["check"]), seed, index, arrays)


def _read_only(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
    y = np.array(x, copy=True)
    y.setflags(write=False)
    return y


@dataclass(frozen=True)
class CaseResult:
    """The verdict on one case: ``error <= tolerance`` passes; ``where`` names the entry
    (``"lam[s=2, a=1] = 0.41, oracle 0.38"``)."""

    error: float
    tolerance: float
    where: str

    @property
    def ratio(self) -> float:
        """``error / tolerance`` (``inf`` for a positive error against a zero tolerance)."""
        if self.tolerance > 0:
            return self.error / self.tolerance
        return 0.0 if self.error <= 0 else math.inf


@dataclass(frozen=True)
class CheckReport:
    """What a check found.

    Attributes:
        check: the check's name.
        reference: the equation or proofs note the check rests on.
        passed: every case within its tolerance and the callable never raised.
        cases: how many instances were checked.
        distinct_cases: how many of them differ (the size ladder's smallest rungs may draw
            the same one-state instance twice).
        failures: how many of them failed.
        worst_error: the error of the worst case (largest ``error / tolerance``).
        worst_tolerance: its tolerance.
        where: the worst case's location and values, or the exception the callable raised.
        worst_case: the worst case's arrays (:meth:`Case.save` to keep them).
        seed: the run's seed.
        false_alarm: for stochastic checks, the probability that a correct callable fails the
            check, union-bounded over its cases (at most ``1e-6``); ``None`` for deterministic
            checks.  A replay re-runs one case at the radius of a run with the same ``cases``.
        power: for stochastic checks, the alternative the test is guaranteed to detect and
            with what probability; ``None`` otherwise.
        precision: the floating-point type the callable's own rounding was judged at
            (``"float64"`` or ``"float32"``: the coarser of the declared ``dtype`` and the
            output's dtype).
        solve: the oracle comes from a linear solve, so an iterative method of the user may
            legitimately need ``atol=`` its certified error.
        convention: the conventions the callable was checked against (``None``: the check's
            defaults).
        convention_cost: what the declared convention costs against the correct one on the
            same cases (the largest deviation and where), when it differs.
        diagnosis: for a failed check, the known bug or convention whose output matches the
            callable's on the failing cases, or ``None``.
    """

    check: str
    reference: str
    passed: bool
    cases: int
    distinct_cases: int
    failures: int
    worst_error: float
    worst_tolerance: float
    where: str
    worst_case: Case | None
    seed: int
    false_alarm: float | None = None
    power: str | None = None
    precision: str = "float64"
    solve: bool = False
    convention: str | None = None
    convention_cost: str | None = None
    diagnosis: str | None = None

    def __str__(self) -> str:
        verdict = (
            f"passed on {self.cases} of {self.cases} cases"
            if self.passed
            else f"FAILED on {self.failures} of {self.cases} cases"
        )
        judged = "" if self.precision == "float64" else f"; judged at {self.precision}"
        lines = [
            f"{self.check}: {verdict} "
            f"({self.distinct_cases} distinct; seed {self.seed}{judged}; checks "
            f"{self.reference})",
            f"  worst: error {self.worst_error:.3g} against tolerance "
            f"{self.worst_tolerance:.3g} at {self.where}",
        ]
        if self.convention is not None:
            lines.append(f"  convention: {self.convention}")
        if self.convention_cost is not None:
            lines.append(f"  cost of the convention: {self.convention_cost}")
        if self.diagnosis is not None:
            lines.append(f"  diagnosis: {self.diagnosis}")
        if (
            not self.passed
            and self.solve
            and self.diagnosis is None
            and self.false_alarm is None
            and math.isfinite(self.worst_error)
        ):
            lines.append(
                "  (the default tolerance allows only the rounding of a direct solve; an "
                "iterative method should pass atol= its certified error)"
            )
        if self.false_alarm is not None:
            lines.append(f"  false alarm <= {self.false_alarm:.1e}; power: {self.power}")
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        """Raise :class:`CheckFailed` with this report as the message unless it passed."""
        if not self.passed:
            raise CheckFailed(str(self))


def _fingerprint(arrays: Mapping[str, npt.NDArray[Any]]) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(key.encode())
        h.update(repr((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def case_rng(seed: int, index: int) -> np.random.Generator:
    """The generator a stochastic check hands the user's callable for case ``index`` of a run
    with seed ``seed`` (so a replayed case sees the same draws)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


@dataclass(frozen=True)
class KnownBug:
    """A planted bug as a callable in its check's canonical signature, for the diagnosis.

    Attributes:
        name: the planted bug's name (as in :class:`Mutant`).
        bug: what is wrong, in one sentence.
        fn: the wrong implementation.
    """

    name: str
    bug: str
    fn: Callable[..., Any]


@dataclass(frozen=True)
class Mutant:
    """A deliberately wrong implementation and the check meant to catch it.

    Attributes:
        name: short identifier (``"occupancy-transposed-kernel"``).
        bug: what is wrong, in one sentence.
        check: the name of the check that must catch it.
        run: runs that check on the wrong implementation and returns its report.
    """

    name: str
    bug: str
    check: str
    run: Callable[[], CheckReport]


# --------------------------------------------------------------------------- arguments


def tolerance_argument(name: str, value: object) -> float | None:
    """``value`` as a tolerance: ``None`` or a finite number ``>= 0``.

    Raises:
        CheckArgumentError: naming ``name`` for a negative, NaN, infinite or non-numeric value.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise CheckArgumentError(f"{name} = {value!r}, expected a finite number >= 0 or None")
    x = float(value)
    if not (math.isfinite(x) and x >= 0):
        raise CheckArgumentError(f"{name} = {value!r}, expected a finite number >= 0 or None")
    return x


def _count_argument(name: str, value: object, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise CheckArgumentError(f"{name} = {value!r}, expected an integer >= {low}")
    return int(value)


PRECISIONS = ("float64", "float32")
"""The floating-point types a check judges at (``dtype=``)."""


def _precision_argument(dtype: object) -> np.dtype[Any] | None:
    if dtype is None:
        return None
    dt: np.dtype[Any] | None
    try:
        dt = np.dtype(str(getattr(dtype, "__name__", dtype)))
    except TypeError:
        dt = None
    if dt is None or dt.name not in PRECISIONS:
        raise CheckArgumentError(f"dtype = {dtype!r}, expected one of {PRECISIONS} or None")
    return dt


# --------------------------------------------------------------------------- generation


def case_size(index: int, cases: int) -> float:
    """The size ladder: case ``index`` of ``cases`` is drawn at size ``min(1, (index + 1) /
    max(1, cases // 3))``, a fraction of the check's size limits.  The first third climbs from
    the smallest instances (one state, one step) to the limits; the rest are at full size."""
    ramp = max(1, cases // 3)
    return min(1.0, (index + 1) / ramp)


def case_generator(check: str, seed: int, index: int) -> np.random.Generator:
    """The generator that draws case ``index`` of check ``check`` in a run with seed ``seed``:
    ``SeedSequence([seed, crc32(check), index])`` (``crc32``, unlike ``hash``, is the same in
    every process)."""
    key = zlib.crc32(check.encode())
    return np.random.default_rng(np.random.SeedSequence([int(seed), key, int(index)]))


def stochastic_rows(rng: np.random.Generator, shape: tuple[int, ...]) -> npt.NDArray[np.float64]:
    """Random stochastic rows along the last axis: weights in ``[0, 1)``, a quarter of them
    zeroed (deterministic rows and unreachable states occur), an all-zero row made uniform."""
    w = rng.random(shape)
    w[rng.random(shape) < 0.25] = 0.0
    w = np.where(w.sum(axis=-1, keepdims=True) > 0, w, 1.0)
    out: npt.NDArray[np.float64] = w / w.sum(axis=-1, keepdims=True)
    return out


def ladder_count(rng: np.random.Generator, size: float, limit: int, low: int = 1) -> int:
    """An integer in ``low..max(low, ceil(size limit))``, uniformly."""
    top = max(low, math.ceil(size * limit))
    return int(rng.integers(low, top + 1))


# --------------------------------------------------------------------------- conversion


def _namespace_name(xp: Any) -> str:
    return str(getattr(xp, "__name__", type(xp).__name__))


class UserIO:
    """Hands arrays to the user's callable and reads its outputs back.

    ``arg`` converts a float64 numpy input to the run's ``dtype`` (float64 unless declared)
    and array namespace ``xp`` (``xp.asarray``); ``out`` reads an output back as float64
    numpy through DLPack or ``__array__``, refuses complex values and records the output's
    precision.
    """

    def __init__(self, dtype: np.dtype[Any] | None, xp: Any) -> None:
        self.dtype = dtype
        self.xp = xp
        self.seen: list[np.dtype[Any]] = []

    def arg(self, x: npt.ArrayLike) -> Any:
        """``x`` (float, bool or int array) as the callable receives it."""
        a = np.array(x, copy=True)
        if a.dtype.kind == "f":
            a = a.astype(self.dtype if self.dtype is not None else np.float64)
        if self.xp is None:
            return a
        converted = self.xp.asarray(a)
        if a.dtype == np.float64:
            got = str(getattr(converted, "dtype", ""))
            if "float64" not in got:
                raise CheckArgumentError(
                    f"xp = {_namespace_name(self.xp)} turned a float64 input into {got}: a "
                    "float64 check needs float64 arrays (for JAX, enable x64 with "
                    "jax.config.update('jax_enable_x64', True)), or declare dtype='float32'"
                )
        return converted

    def out(self, value: object, what: str = "the callable's output") -> npt.NDArray[np.float64]:
        """The output as a float64 numpy array, or a :class:`CaseFailure` naming ``what``."""
        if value is None:  # a routine that fills a buffer and forgets to return it
            raise CaseFailure(f"{what} is None, expected an array")
        arr = _to_numpy(value, what)
        if arr.dtype.kind == "c":
            raise CaseFailure(f"{what} is complex ({arr.dtype}), expected real values")
        if arr.dtype.kind == "f":
            if np.finfo(arr.dtype).eps > np.finfo(np.float32).eps:
                raise CaseFailure(
                    f"{what} has dtype {arr.dtype}, coarser than float32: the derived "
                    "rounding allowance (verify.tolerances.precision_factor) covers float32 "
                    "and float64 only"
                )
            self.seen.append(arr.dtype)
        elif arr.dtype.kind in "biu":  # every checked quantity is real-valued
            raise CaseFailure(
                f"{what} has dtype {arr.dtype}, expected a floating-point array (an integer "
                "or boolean array truncates a real-valued quantity)"
            )
        else:
            raise CaseFailure(f"{what} has dtype {arr.dtype}, expected real numbers")
        return np.array(arr, dtype=np.float64)

    def precision(self) -> np.dtype[Any]:
        """The coarser of the declared dtype and the outputs' dtypes (float64 if neither)."""
        kinds = [np.dtype(np.float64)] + ([self.dtype] if self.dtype is not None else [])
        kinds += self.seen
        return max(kinds, key=lambda d: float(np.finfo(d).eps))


def _to_numpy(value: object, what: str) -> npt.NDArray[Any]:
    if isinstance(value, np.ndarray):
        return value
    if type(value).__module__.startswith("torch"):  # a tensor that may track gradients
        value = value.detach().cpu()  # type: ignore[attr-defined]
    if hasattr(value, "__dlpack__") and not isinstance(value, (list, tuple)):
        try:
            return np.from_dlpack(value)
        except (TypeError, ValueError, RuntimeError, BufferError, AttributeError):
            pass
    try:
        return np.asarray(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CaseFailure(f"{what} is not an array: {exc}") from None


# --------------------------------------------------------------------------- declarations


@dataclass(frozen=True)
class Compared:
    """One output array of a case against the oracle's, with both rounding allowances.

    Attributes:
        got: the callable's array (float64, canonical layout).
        want: the oracle's array, same shape.
        oracle: the oracle's rounding bound, per entry or one number.
        own: the allowance for the callable's own rounding *at float64* (the runner scales
            it to the judged precision, or replaces it by ``atol``).
        label: names an entry, ``label((2, 1)) == "lam[s=2, a=1]"``.
        context: what to add after an entry's values (the step kind, gamma...).
        l1: a sampled comparison: the error is ``sum |got - want|`` and ``oracle`` is the
            concentration radius it is held to (no precision scaling, ``atol`` or ``rtol``).
    """

    got: npt.NDArray[np.float64]
    want: npt.NDArray[np.float64]
    oracle: npt.NDArray[np.float64] | float
    own: npt.NDArray[np.float64] | float
    label: Callable[[tuple[int, ...]], str]
    context: Callable[[tuple[int, ...]], str] = field(default=lambda idx: "")
    l1: bool = False


@dataclass(frozen=True)
class Alternative:
    """A known bug or a known convention, as what it outputs on an instance.

    Attributes:
        name: the planted bug's name (``"occupancy-post-step"``) or the convention's.
        description: what it computes, in one sentence.
        outputs: its outputs on an instance, in the check's canonical layout (the same order
            as the check's :class:`Compared` records).
        declare: for a convention, the argument that declares it
            (``"truncation='as-termination'"``); ``None`` for a bug.
    """

    name: str
    description: str
    outputs: Callable[[Any], Sequence[npt.NDArray[np.float64]]]
    declare: str | None = None


def known_alternatives(
    bugs: Sequence[KnownBug],
    call: Callable[[Callable[..., Any], Any], Sequence[npt.ArrayLike]],
) -> list[Alternative]:
    """The planted ``bugs`` as :class:`Alternative` records: ``call(fn, instance)`` runs one
    on an instance in the check's canonical signature and returns its outputs."""

    def outputs_for(fn: Callable[..., Any]) -> Callable[[Any], list[npt.NDArray[np.float64]]]:
        return lambda inst: [np.asarray(x, dtype=np.float64) for x in call(fn, inst)]

    return [Alternative(b.name, b.bug, outputs_for(b.fn)) for b in bugs]


Evaluation = CaseResult | Sequence[Compared]


@dataclass(frozen=True)
class Declaration(Generic[T]):
    """A check, declared: everything :func:`run_check` needs besides the run's options.

    Attributes:
        name, reference: the check's name and the equation or note it rests on.
        generate: ``generate(rng, size)`` draws an instance at ``size`` in ``(0, 1]`` of the
            size limits (:func:`case_size`).
        to_arrays, from_arrays: an instance as named arrays and back (:class:`Case`).
        evaluate: ``evaluate(instance, index, io)`` calls the user's callable through ``io``
            and returns its :class:`Compared` outputs (or a :class:`CaseResult`).
        solve: the oracle is a linear solve (an iterative user may need ``atol=``).
        alternatives: the known bugs and conventions the diagnosis tries.
        convention: the conventions checked, as a sentence.
        convention_cost: on an instance, the largest deviation of the declared convention's
            oracle from the correct one and where (``None`` when they agree).
        false_alarm, power: for stochastic checks.
    """

    name: str
    reference: str
    generate: Callable[[np.random.Generator, float], T]
    to_arrays: Callable[[T], Mapping[str, npt.NDArray[Any]]]
    from_arrays: Callable[[Mapping[str, npt.NDArray[Any]]], T]
    evaluate: Callable[[T, int, UserIO], Evaluation]
    solve: bool = False
    alternatives: Callable[[], Sequence[Alternative]] | None = None
    convention: str | None = None
    convention_cost: Callable[[T], tuple[float, str] | None] | None = None
    false_alarm: float | None = None
    power: str | None = None


# --------------------------------------------------------------------------- the runner


@dataclass(frozen=True)
class _Judged:
    result: CaseResult
    tolerances: tuple[npt.NDArray[np.float64], ...]
    got: tuple[npt.NDArray[np.float64], ...]
    l1: tuple[bool, ...]

    def matches(self, outs: Sequence[npt.NDArray[np.float64]]) -> bool:
        """``outs`` within this case's tolerances of the callable's outputs."""
        if len(outs) != len(self.got):
            return False
        for o, g, t, l1 in zip(outs, self.got, self.tolerances, self.l1, strict=True):
            if o.shape != g.shape or not np.all(np.isfinite(o)):
                return False
            diff = np.abs(o - g)
            if not (float(diff.sum()) <= float(t) if l1 else bool(np.all(diff <= t))):
                return False
        return True


def _judge(
    compared: Sequence[Compared], factor: float, atol: float | None, rtol: float
) -> _Judged:
    best: CaseResult | None = None
    tols: list[npt.NDArray[np.float64]] = []
    for c in compared:
        if c.got.shape != c.want.shape:
            raise CaseFailure(
                f"the callable returned shape {c.got.shape} for {c.label((0,) * c.want.ndim)}"
                f"..., expected {c.want.shape}"
            )
        if c.l1:
            tol = np.asarray(float(np.asarray(c.oracle)))
        else:
            own = np.asarray(c.own, dtype=np.float64) * factor if atol is None else atol
            tol = np.broadcast_to(
                np.asarray(c.oracle, dtype=np.float64) + own + rtol * np.abs(c.want),
                c.want.shape,
            )
        tols.append(tol)
        if best is not None and math.isinf(best.error):
            continue
        bad = ~np.isfinite(c.got)
        if np.any(bad):
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            best = CaseResult(
                math.inf, 0.0, f"{c.label(idx)} = {c.got[idx]!r} is not finite{c.context(idx)}"
            )
            continue
        if c.got.size == 0:
            continue
        diff = np.abs(c.got - c.want)
        if c.l1:
            idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))
            res = CaseResult(
                float(diff.sum()), float(tol),
                f"l1 error; largest entry {c.label(idx)} = {c.got[idx]:.6g}, oracle "
                f"{c.want[idx]:.6g}{c.context(idx)}",
            )
            if best is None or res.ratio > best.ratio:
                best = res
            continue
        ratio = np.where(tol > 0, diff / np.where(tol > 0, tol, 1.0),
                         np.where(diff > 0, np.inf, 0.0))
        idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(ratio)), ratio.shape))
        res = CaseResult(
            float(diff[idx]),
            float(tol[idx]),
            f"{c.label(idx)} = {c.got[idx]:.6g}, oracle {c.want[idx]:.6g}{c.context(idx)}",
        )
        if best is None or res.ratio > best.ratio:
            best = res
    if best is None:
        best = CaseResult(0.0, 0.0, "no entries to compare")
    return _Judged(best, tuple(tols), tuple(c.got for c in compared),
                   tuple(c.l1 for c in compared))


@dataclass
class _Record:
    result: CaseResult
    arrays: Mapping[str, npt.NDArray[Any]]
    index: int
    instance: Any
    judged: _Judged | None
    precision: np.dtype[Any]
    float32_ok: bool = False
    """A failed case judged at float64 that the float32 allowance would pass."""


MAX_DIAGNOSED = 5
"""The diagnosis compares an alternative with the user's output on at most this many failing
cases (the worst first), and then on at most this many of the other cases (the largest
first, passing or failing); it must match on all of them."""


def _diagnose(
    decl: Declaration[Any], records: Sequence[_Record], worst: _Record
) -> str | None:
    if decl.alternatives is None:
        return None
    failing = [r for r in records if not r.result.ratio <= 1.0 and r.judged is not None]
    failing.sort(key=lambda r: (r is not worst, -min(r.result.ratio, 1e300)))
    failing, rest = failing[:MAX_DIAGNOSED], failing[MAX_DIAGNOSED:]
    if not failing:
        return None
    # a bug that agrees with the callable on the worst cases may still disagree where the
    # callable passes (two GAE bugs coincide on rollouts without an interior termination):
    # it must also reproduce the other cases, the largest first
    rest += [r for r in records if r.result.ratio <= 1.0 and r.judged is not None]
    rest.sort(key=lambda r: -r.index)
    confirm = rest[:MAX_DIAGNOSED]
    zero = all(
        rec.judged is not None
        and rec.judged.matches([np.zeros_like(g) for g in rec.judged.got])
        for rec in [*failing, *confirm]
    )
    where = f"on the {len(failing)} failing case{'s' if len(failing) > 1 else ''} tried"
    if confirm:
        where += f" and {len(confirm)} other{'s' if len(confirm) > 1 else ''}"
    # an output that vanishes (a stub, a result never written) matches any bug whose output
    # vanishes too: say that first
    zero_text = f"your output is 0 within tolerance {where}" if zero else None
    for alt in decl.alternatives():
        matched = True
        for rec in [*failing, *confirm]:
            assert rec.judged is not None
            try:
                with np.errstate(all="ignore"):
                    outs = [np.asarray(o, dtype=np.float64) for o in alt.outputs(rec.instance)]
            except Exception:  # an alternative that cannot run on this case does not match
                matched = False
                break
            if not rec.judged.matches(outs):
                matched = False
                break
        if not matched:
            continue
        what = (f"the convention {alt.declare}" if alt.declare is not None
                else f"the known bug {alt.name!r}")
        declare = "" if alt.declare is None else f": declare {alt.declare} to check against it"
        if zero_text is not None:
            return f"{zero_text}, as is the output of {what} ({alt.description}){declare}"
        return f"your output matches {what} ({alt.description}) {where}{declare}"
    return zero_text


def run_check(
    decl: Declaration[T],
    *,
    cases: int,
    seed: int,
    replay: Case | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    dtype: object = None,
    xp: Any = None,
) -> CheckReport:
    """Run the check ``decl`` on ``cases`` generated instances (or on the single instance
    ``replay``) and report.

    Args:
        decl: the check's declaration.
        cases: how many instances (a positive integer).
        seed: the run's seed (a non-negative integer); with ``cases`` and the check's size
            limits it fixes every instance (:func:`case_generator`, :func:`case_size`).
        replay: a saved :class:`Case` of this check, re-run instead of generating.
        atol: replaces the allowance for the callable's own rounding (a finite number
            ``>= 0``).
        rtol: adds ``rtol |oracle|`` to every entry's tolerance (a finite number ``>= 0``).
        dtype: ``"float32"`` or ``"float64"``: the precision the callable computes in (its
            float inputs are handed over in it); ``None`` detects it from the outputs.
        xp: the callable's array namespace (``jax.numpy``, ``torch``, ``array_api_strict``...):
            inputs are converted with ``xp.asarray`` and outputs read back through DLPack or
            ``__array__``; ``None`` hands it numpy arrays.

    Raises:
        CheckArgumentError: a bad ``cases``, ``seed``, ``atol``, ``rtol``, ``dtype``, a replay
            case of another check, or a namespace that cannot hold float64 arrays on a
            float64 check.
    """
    n_cases = _count_argument("cases", cases)
    run_seed = _count_argument("seed", seed, 0) if replay is None else int(replay.seed)
    atol_v = tolerance_argument("atol", atol)
    rtol_v = tolerance_argument("rtol", rtol) or 0.0
    dt = _precision_argument(dtype)
    if decl.false_alarm is not None and not 0 < decl.false_alarm <= MAX_FALSE_ALARM:
        raise CheckArgumentError(
            f"false_alarm = {decl.false_alarm!r}, expected a probability in "
            f"(0, {MAX_FALSE_ALARM}]"
        )
    records: list[_Record] = []

    def one(instance: T, index: int) -> None:
        io = UserIO(dt, xp)
        judged: _Judged | None = None
        float32_ok = False
        try:
            # underflow to 0 is benign in every oracle; under np.seterr(all="raise") it would
            # otherwise abort a correct case
            with np.errstate(under="ignore"):
                out = decl.evaluate(instance, index, io)
                if isinstance(out, CaseResult):
                    result = out
                else:
                    factor = precision_factor(io.precision())
                    judged = _judge(out, factor, atol_v, rtol_v)
                    result = judged.result
                    if not result.ratio <= 1.0 and atol_v is None and factor == 1.0:
                        coarse = _judge(out, precision_factor(np.float32), None, rtol_v)
                        float32_ok = coarse.result.ratio <= 1.0
        except CaseFailure as exc:  # the user's callable, not the check, failed on this case
            result = CaseResult(math.inf, 0.0, str(exc))
        records.append(_Record(result, decl.to_arrays(instance), index, instance, judged,
                               io.precision(), float32_ok))

    if replay is not None:
        if replay.check != decl.name:
            raise CheckArgumentError(
                f"replay case is from check {replay.check!r}, not {decl.name!r}"
            )
        one(decl.from_arrays(replay.arrays), replay.index)
    else:
        for index in range(n_cases):
            rng = case_generator(decl.name, run_seed, index)
            one(decl.generate(rng, case_size(index, n_cases)), index)
    worst = max(records, key=lambda rec: rec.result.ratio)
    failures = sum(1 for rec in records if not rec.result.ratio <= 1.0)
    distinct = len({_fingerprint(rec.arrays) for rec in records})
    cost: str | None = None
    if decl.convention_cost is not None:
        costs = [(c, rec) for rec in records if (c := decl.convention_cost(rec.instance))]
        if costs:
            (size, where), rec = max(costs, key=lambda item: item[0][0])
            cost = (
                f"largest deviation from the correct convention {size:.3g} "
                f"(case {rec.index}: {where})"
            )
    precision = max((rec.precision for rec in records), key=lambda d: float(np.finfo(d).eps))
    diagnosis = None if failures == 0 else _diagnose(decl, records, worst)
    if diagnosis is None and failures and all(
        rec.float32_ok for rec in records if not rec.result.ratio <= 1.0
    ):
        diagnosis = (
            "every failing case is within the float32 rounding allowance: if your routine "
            "computes in float32 and returns float64, declare dtype='float32'"
            + ("; if it is an iterative method, pass atol= its certified error"
               if decl.solve else "")
        )
    return CheckReport(
        check=decl.name,
        reference=decl.reference,
        passed=failures == 0,
        cases=len(records),
        distinct_cases=distinct,
        failures=failures,
        worst_error=worst.result.error,
        worst_tolerance=worst.result.tolerance,
        where=worst.result.where,
        worst_case=Case(decl.name, run_seed, worst.index,
                        {k: _read_only(np.asarray(v)) for k, v in worst.arrays.items()}),
        seed=run_seed,
        false_alarm=decl.false_alarm,
        power=decl.power,
        precision=precision.name,
        solve=decl.solve,
        convention=decl.convention,
        convention_cost=cost,
        diagnosis=diagnosis,
    )
