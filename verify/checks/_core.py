"""The machinery every conformance check shares: generated cases, typed reports, replay.

A check compares a user's callable with an exact oracle of ``reference`` on instances drawn
from a Hypothesis strategy under a fixed seed (so a run is reproducible).  Every case yields
an error, a tolerance and a location; the case passes when ``error <= tolerance``.  The
report keeps the case with the largest ``error / tolerance`` and its arrays, which
:meth:`Case.save` writes as an ``.npz`` file and :meth:`Case.load` reads back.  Passing the
loaded case as ``replay=`` to the same check re-runs the user's callable on exactly that
instance.

Deterministic callables are judged with tolerances derived in :mod:`verify.tolerances`
(rounding of the oracle's LU solves plus a stated allowance for the user's own rounding).
Stochastic callables are judged by a concentration radius at a stated false-alarm
probability for the whole check (at most ``1e-6``, split over the cases by the union bound)
and report their power against a named alternative.

Generation is seeded, so a run repeats given the same Hypothesis version and the same
modules loaded (Hypothesis mines constants from loaded code); a saved :class:`Case` replays
exactly regardless.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from reference.errors import ModelError

__all__ = [
    "MAX_FALSE_ALARM",
    "Case",
    "CaseFailure",
    "CaseResult",
    "CheckFailed",
    "CheckReport",
    "Mutant",
    "case_rng",
    "guard",
    "run_check",
    "user_array",
]

T = TypeVar("T")

MAX_FALSE_ALARM = 1e-6
"""The largest false-alarm probability per case that a stochastic check may use."""


class CheckFailed(AssertionError):
    """Raised by :meth:`CheckReport.raise_if_failed`; the message is the report."""


class CaseFailure(Exception):
    """Raised inside a case for a fault of the user's callable (it raised, or returned the
    wrong count, shape or type); the case fails with this message as its location.  Any other
    exception inside a case is a fault of the check or its oracle and propagates."""


def user_array(out: object, what: str = "the callable's output") -> npt.NDArray[np.float64]:
    """``out`` as a float64 array, or a :class:`CaseFailure` if it cannot be one."""
    try:
        return np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CaseFailure(f"{what} is not a float array: {exc}") from None


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
        try:
            with np.load(os.fspath(path), allow_pickle=False) as z:
                raw = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError) as exc:
            raise ModelError(f"{os.fspath(path)}: not a readable case file ({exc})") from exc
        for key in ("check", "seed", "index"):
            if key not in raw:
                raise ModelError(f"{os.fspath(path)}: missing field {key!r}")
        arrays = {k[2:]: _read_only(v) for k, v in raw.items() if k.startswith("a_")}
        return cls(str(raw["check"]), int(raw["seed"]), int(raw["index"]), arrays)


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
        distinct_cases: how many of them differ (Hypothesis may draw small instances, such as
            one-state ones, more than once).
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

    def __str__(self) -> str:
        verdict = (
            f"passed on {self.cases} of {self.cases} cases"
            if self.passed
            else f"FAILED on {self.failures} of {self.cases} cases"
        )
        lines = [
            f"{self.check}: {verdict} "
            f"({self.distinct_cases} distinct; seed {self.seed}; checks {self.reference})",
            f"  worst: error {self.worst_error:.3g} against tolerance "
            f"{self.worst_tolerance:.3g} at {self.where}",
        ]
        if not self.passed and self.false_alarm is None and math.isfinite(self.worst_error):
            lines.append(
                "  (the default tolerance allows only the rounding of a direct solve; an "
                "iterative or lower-precision method should pass atol= its certified error)"
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


def run_check(
    name: str,
    reference: str,
    strategy: st.SearchStrategy[T],
    to_arrays: Callable[[T], Mapping[str, npt.NDArray[Any]]],
    from_arrays: Callable[[Mapping[str, npt.NDArray[Any]]], T],
    evaluate: Callable[[T, int], CaseResult],
    *,
    cases: int,
    seed: int,
    replay: Case | None = None,
    false_alarm: float | None = None,
    power: str | None = None,
) -> CheckReport:
    """Run ``evaluate`` on ``cases`` instances drawn from ``strategy`` under Hypothesis seed
    ``seed`` (generation only: no shrinking, no example database), or on the single instance
    ``replay``.  ``evaluate(instance, index)`` returns the :class:`CaseResult`.  It calls the
    user's callable through :func:`guard` and raises :class:`CaseFailure` for bad output: such
    a case fails with the message as its location.  Any other exception (the oracle's or the
    check's own) propagates instead of being blamed on the user.
    """
    if isinstance(cases, bool) or not isinstance(cases, int) or cases < 1:
        raise ModelError(f"cases = {cases!r}, expected a positive integer")
    if false_alarm is not None and not 0 < false_alarm <= MAX_FALSE_ALARM:
        raise ModelError(
            f"false_alarm = {false_alarm!r}, expected a probability in (0, {MAX_FALSE_ALARM}]"
        )
    records: list[tuple[CaseResult, Mapping[str, npt.NDArray[Any]], int]] = []

    def one(instance: T, index: int) -> None:
        try:
            # underflow to 0 is benign in every oracle; under np.seterr(all="raise") it would
            # otherwise abort a correct case
            with np.errstate(under="ignore"):
                result = evaluate(instance, index)
        except CaseFailure as exc:  # the user's callable, not the check, failed on this case
            result = CaseResult(math.inf, 0.0, str(exc))
        records.append((result, to_arrays(instance), index))

    if replay is not None:
        if replay.check != name:
            raise ModelError(f"replay case is from check {replay.check!r}, not {name!r}")
        one(from_arrays(replay.arrays), replay.index)
        run_seed = replay.seed
    else:
        run_seed = int(seed)

        @settings(
            max_examples=cases,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @hypothesis_seed(run_seed)
        @given(strategy)
        def body(instance: T) -> None:
            one(instance, len(records))

        body()
    worst_result, worst_arrays, worst_index = max(records, key=lambda rec: rec[0].ratio)
    failures = sum(1 for rec in records if not rec[0].ratio <= 1.0)
    distinct = len({_fingerprint(rec[1]) for rec in records})
    return CheckReport(
        check=name,
        reference=reference,
        passed=failures == 0,
        cases=len(records),
        distinct_cases=distinct,
        failures=failures,
        worst_error=worst_result.error,
        worst_tolerance=worst_result.tolerance,
        where=worst_result.where,
        worst_case=Case(name, run_seed, worst_index, {k: _read_only(np.asarray(v))
                                                    for k, v in worst_arrays.items()}),
        seed=run_seed,
        false_alarm=false_alarm,
        power=power,
    )
