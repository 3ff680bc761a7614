"""Planted bugs in ``reference/`` itself, and the machinery that plants them.

A :class:`SourceMutant` names one function (or method, or property) of a ``reference``
module, a fragment of its source and the fragment that replaces it.  :func:`planted`
recompiles the edited function from its source in the namespace of its module and rebinds
every reference to the original (the module attribute, the class attribute, and every name
another loaded module imported it under); leaving the context restores all of them.  Nothing
is written to disk and no module is reloaded, so one mutant costs the time of its killing
tests and the rest of the suite never sees it.

Each mutant lists the tests that must kill it (``"module::function"`` under ``tests/``);
:func:`run_killers` calls them with the mutant planted.  A killing test "kills" when it fails
with an assertion (including Hypothesis's shrunk assertion) or with an error of the
``reference.errors`` family raised by the mutated code; any other exception (a ``NameError``
from a broken recompilation, say) is reported as a machinery error, never counted as a kill.

``EQUIVALENT`` lists edits that cannot change any result, with the argument for each; they
are not planted.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from reference.errors import ModelError

TESTS = Path(__file__).resolve().parents[1]

Kind = Literal["formula", "bound", "tolerance"]


@dataclass(frozen=True)
class SourceMutant:
    """One planted bug.

    Attributes:
        name: identifier used in test ids and the kill-rate table.
        module: dotted module, e.g. ``"reference.tabular"``.
        target: ``"function"``, ``"Class.method"`` or ``"Class.property"`` in ``module``.
        old: a fragment occurring exactly once in the target's source.
        new: its replacement.
        kind: ``"formula"`` (a wrong quantity), ``"bound"`` (a certificate or derived
            bound made invalid or loose) or ``"tolerance"`` (a default accuracy loosened).
        killers: tests that must fail with the mutant planted, ``"test_module::test_name"``.
        note: what the edit means, in words.
    """

    name: str
    module: str
    target: str
    old: str
    new: str
    kind: Kind
    killers: tuple[str, ...]
    note: str = ""
    extra: tuple[tuple[str, str], ...] = field(default=())


def _unwrap(obj: Any) -> tuple[Callable[..., Any], str]:
    if isinstance(obj, property):
        assert obj.fget is not None
        return obj.fget, "property"
    if isinstance(obj, staticmethod):
        return obj.__func__, "staticmethod"
    if isinstance(obj, classmethod):
        return obj.__func__, "classmethod"
    return obj, "function"


def _compile(mutant: SourceMutant, func: Callable[..., Any], module: types.ModuleType
             ) -> Callable[..., Any]:
    source = textwrap.dedent(inspect.getsource(func))
    count = source.count(mutant.old)
    if count != 1:
        raise LookupError(
            f"mutant {mutant.name}: fragment {mutant.old!r} occurs {count} times in "
            f"{mutant.module}.{mutant.target}, expected once"
        )
    edited = source.replace(mutant.old, mutant.new)
    lines = edited.splitlines(keepends=True)
    # drop decorators: the wrapper (property, staticmethod) is re-applied by the caller
    while lines and lines[0].lstrip().startswith("@"):
        lines.pop(0)
    namespace: dict[str, Any] = dict(vars(module))
    code = compile("".join(lines), f"<mutant {mutant.name}>", "exec")
    exec(code, namespace)
    new = namespace[func.__name__]
    if not isinstance(new, types.FunctionType):
        raise TypeError(f"mutant {mutant.name}: {mutant.target} did not compile to a function")
    # globals must be the module's own (helpers patched later, monkeypatching by tests)
    fresh = types.FunctionType(
        new.__code__, vars(module), new.__name__, func.__defaults__, func.__closure__
    )
    fresh.__kwdefaults__ = new.__kwdefaults__
    fresh.__defaults__ = new.__defaults__
    fresh.__qualname__ = func.__qualname__
    fresh.__doc__ = func.__doc__
    fresh.__annotations__ = dict(getattr(func, "__annotations__", {}))
    return fresh


@contextlib.contextmanager
def planted(mutant: SourceMutant) -> Iterator[None]:
    """Plant ``mutant`` for the duration of the context."""
    module = importlib.import_module(mutant.module)
    owner: Any = module
    parts = mutant.target.split(".")
    for part in parts[:-1]:
        owner = getattr(owner, part)
    name = parts[-1]
    original = inspect.getattr_static(owner, name)
    func, wrapper = _unwrap(original)
    if func.__code__.co_freevars:
        raise TypeError(f"mutant {mutant.name}: {mutant.target} uses a closure (super()?)")
    fresh = _compile(mutant, func, module)
    replacement: Any = {
        "property": lambda f: property(f, original.fset if wrapper == "property" else None),
        "staticmethod": staticmethod,
        "classmethod": classmethod,
        "function": lambda f: f,
    }[wrapper](fresh)
    restore: list[tuple[Any, str, Any]] = [(owner, name, original)]
    if owner is module:
        # every module that imported the function by name (re-exports, from-imports)
        for other in list(sys.modules.values()):
            if other is module or not isinstance(other, types.ModuleType):
                continue
            try:
                items = list(vars(other).items())
            except TypeError:  # pragma: no cover - exotic module objects
                continue
            for key, value in items:
                if value is original:
                    restore.append((other, key, value))
    try:
        for obj, key, _ in restore:
            setattr(obj, key, replacement)
        yield
    finally:
        for obj, key, value in reversed(restore):
            setattr(obj, key, value)
        # a module imported while the mutant was planted may have bound it by name
        for other in list(sys.modules.values()):
            if not isinstance(other, types.ModuleType):
                continue
            try:
                items = list(vars(other).items())
            except TypeError:  # pragma: no cover
                continue
            for key, value in items:
                if value is replacement:
                    setattr(other, key, original)


def resolve(killer: str) -> Callable[[], None]:
    """The test function named ``"test_module::test_name"`` (``test_module`` under
    ``tests/`` or ``tests/mutants/``)."""
    for path in (str(TESTS), str(TESTS / "mutants")):
        if path not in sys.path:
            sys.path.insert(0, path)
    mod_name, test_name = killer.split("::")
    test: Callable[[], None] = getattr(importlib.import_module(mod_name), test_name)
    return test


@contextlib.contextmanager
def _no_database(test: Callable[[], None]) -> Iterator[None]:
    """Run a Hypothesis test without its example database, so a mutant's failing examples
    are not saved and replayed into later runs of the real code."""
    inner: Any = test
    key = "_hypothesis_internal_use_settings"
    current = getattr(inner, key, None)
    if current is None:
        yield
        return
    from hypothesis import settings

    setattr(inner, key, settings(current, database=None))
    try:
        yield
    finally:
        setattr(inner, key, current)


Outcome = Literal["killed", "survived", "error"]


def _calls(test: Callable[..., None]) -> list[dict[str, Any]]:
    """Keyword arguments of every case of a ``pytest.mark.parametrize``-d test (one empty
    call for a plain one); stacked parametrize marks give their product."""
    calls: list[dict[str, Any]] = [{}]
    for mark in getattr(test, "pytestmark", []):
        if mark.name != "parametrize":
            continue
        names, values = mark.args[0], mark.args[1]
        keys = [k.strip() for k in names.split(",")] if isinstance(names, str) else list(names)
        cases = []
        for value in values:
            vals = value.values if hasattr(value, "values") and hasattr(value, "marks") else value
            row = dict(zip(keys, vals if len(keys) > 1 else (vals[0] if isinstance(vals, tuple)
                                                                  and hasattr(value, "marks")
                                                                  else vals,),
                           strict=True))
            cases.append(row)
        calls = [{**c, **row} for c in calls for row in cases]
    return calls


def run_killer(killer: str) -> tuple[Outcome, str]:
    """Run one killing test, every parametrized case, with whatever is currently planted;
    stops at the first failing case."""
    test = resolve(killer)
    try:
        with _no_database(test):
            for kwargs in _calls(test):
                test(**kwargs)
    except AssertionError as exc:
        return "killed", f"{type(exc).__name__}: {str(exc)[:200]}"
    except ModelError as exc:  # the whole reference.errors family derives from it
        return "killed", f"{type(exc).__name__}: {str(exc)[:200]}"
    except BaseExceptionGroup as group:  # several Hypothesis failures at once
        if all(isinstance(e, (AssertionError, ModelError)) for e in group.exceptions):
            return "killed", f"{len(group.exceptions)} failures"
        return "error", repr(group)[:300]
    except Exception as exc:
        if type(exc).__name__ == "Failed":  # pytest.fail
            return "killed", str(exc)[:200]
        return "error", f"{type(exc).__name__}: {exc}"[:300]
    return "survived", ""


def run_killers(mutant: SourceMutant, killers: tuple[str, ...] | None = None
                ) -> list[tuple[str, Outcome, str]]:
    """Plant ``mutant`` and run its killing tests (or ``killers``)."""
    out = []
    chosen = mutant.killers if killers is None else killers
    for killer in chosen:
        resolve(killer)  # import the test modules before anything is planted
    with planted(mutant):
        for killer in chosen:
            outcome, detail = run_killer(killer)
            out.append((killer, outcome, detail))
    return out


# ====================================================================== the catalogue
_TAB = "test_certificates_tabular"

MUTANTS: tuple[SourceMutant, ...] = (
    # ---------------------------------------------------------------- reference.tabular
    SourceMutant(
        "evaluate-bound-halved", "reference.tabular", "evaluate",
        "error_bound=(res + rounding) / (1 - g),",
        "error_bound=(res + rounding) / (2 * (1 - g)),",
        "bound", (f"{_TAB}::test_evaluate_certificate_derivation",),
        "the certified V error bound halved",
    ),
    SourceMutant(
        "evaluate-bound-no-rounding", "reference.tabular", "evaluate",
        "error_bound=(res + rounding) / (1 - g),", "error_bound=res / (1 - g),",
        "bound", (f"{_TAB}::test_evaluate_certificate_derivation",),
        "the rounding of the residual evaluation left out of the V certificate",
    ),
    SourceMutant(
        "occupancy-bound-halved", "reference.tabular", "occupancy",
        "error_bound=(float(np.sum(np.abs(res_vec))) + rounding) / (1 - g),",
        "error_bound=(float(np.sum(np.abs(res_vec))) + rounding) * (1 - g),",
        "bound", (f"{_TAB}::test_occupancy_certificate_derivation",),
        "the occupancy certificate multiplied by 1 - gamma instead of divided",
    ),
    SourceMutant(
        "shared-lu-value-bound-is-occupancy", "reference.tabular", "evaluate_with_occupancy",
        "error_bound=(res + v_round) / (1 - g),",
        "error_bound=(float(np.sum(np.abs(flow_vec))) + l_round) / (1 - g),",
        "bound", (f"{_TAB}::test_shared_factorisation_certificates_are_each_their_own",),
        "the value certificate of the shared factorisation replaced by the occupancy one",
    ),
    SourceMutant(
        "fixed-point-post-without-gamma", "reference.tabular", "_certified_fixed_point",
        "post = gamma * size(x_new - x) / (1 - gamma)", "post = size(x_new - x) / (1 - gamma)",
        "bound", (f"{_TAB}::test_evaluate_iterative_certificate_is_attained",),
        "the a posteriori bound without its factor gamma (valid, 1/gamma too loose)",
    ),
    SourceMutant(
        "fixed-point-post-without-contraction", "reference.tabular", "_certified_fixed_point",
        "post = gamma * size(x_new - x) / (1 - gamma)", "post = gamma * size(x_new - x)",
        "bound", (f"{_TAB}::test_evaluate_iterative_certificate_is_attained",
                  f"{_TAB}::test_occupancy_iterative_certificate_is_exact"),
        "the a posteriori bound without the 1/(1 - gamma) of the geometric tail",
    ),
    SourceMutant(
        "fixed-point-prior-one-step-ahead", "reference.tabular", "_certified_fixed_point",
        "prior = gamma * b_norm / (1 - gamma)", "prior = gamma * gamma * b_norm / (1 - gamma)",
        "bound", (f"{_TAB}::test_evaluate_iterative_certificate_is_attained_near_gamma_one",),
        "the a priori bound gamma^(k+1) instead of gamma^k",
    ),
    SourceMutant(
        "evaluate-iterative-default-tol", "reference.tabular", "evaluate_iterative",
        "tol: float = 1e-10", "tol: float = 1e-8",
        "tolerance", (f"{_TAB}::test_evaluate_iterative_default_tolerance",),
        "the default tolerance 100 times looser",
    ),
    SourceMutant(
        "occupancy-iterative-default-tol", "reference.tabular", "occupancy_iterative",
        "tol: float = 1e-10", "tol: float = 1e-8",
        "tolerance", (f"{_TAB}::test_occupancy_iterative_default_tolerance",),
        "the default tolerance 100 times looser",
    ),
    SourceMutant(
        "value-iteration-default-tol", "reference.tabular", "value_iteration",
        "tol: float = 1e-10", "tol: float = 1e-8",
        "tolerance", (f"{_TAB}::test_value_iteration_default_tolerance",),
        "the default tolerance 100 times looser",
    ),
    SourceMutant(
        "value-iteration-bound-without-gamma", "reference.tabular", "value_iteration",
        "bound = g * step / (1 - g) + rounding", "bound = step / (1 - g) + rounding",
        "bound", (f"{_TAB}::test_value_iteration_certificate_is_attained",),
        "the value-iteration bound without its factor gamma (valid, 1/gamma too loose)",
    ),
    SourceMutant(
        "value-iteration-bound-one-step", "reference.tabular", "value_iteration",
        "bound = g * step / (1 - g) + rounding", "bound = g * step + rounding",
        "bound", (f"{_TAB}::test_value_iteration_certificate_is_attained",),
        "the value-iteration bound without the geometric tail",
    ),
    SourceMutant(
        "policy-iteration-no-residual", "reference.tabular", "policy_iteration",
        "(max(residual, 0.0) + (1 + g) * e + q_round)", "((1 + g) * e + q_round)",
        "bound", (f"{_TAB}::test_policy_iteration_certificate_covers_a_near_tie",),
        "the Bellman-optimality residual term dropped from the bound",
    ),
    SourceMutant(
        "policy-iteration-bound-inflated", "reference.tabular", "policy_iteration",
        "error_bound=e + (max(residual, 0.0)", "error_bound=e + (2 * max(residual, 0.0)",
        "bound", (f"{_TAB}::test_policy_iteration_certificate_covers_a_near_tie",),
        "the residual term doubled (valid, loose)",
    ),
)

_LU_NORM_ARGUMENT = (
    "an LU solve is backward stable, so every entry of its residual is of the order of the "
    "rounding committed in evaluating that entry; the l1 and inf norms of the residual then "
    "differ by less than the rounding allowance (n + 2) eps ((1 + gamma)||x||_1 + 1) that "
    "the certificate adds, and no computable true error can separate the two certificates. "
    "Pinning the norm would need the residual's float bits, which depend on BLAS summation "
    "order (memory alignment). Equivalent up to rounding; the iterative l1 certificates, "
    "where the residual is large, are pinned by test_occupancy_iterative_certificate_is_exact."
)

EQUIVALENT: tuple[tuple[SourceMutant, str], ...] = (
    (
        SourceMutant(
            "occupancy-bound-inf-norm", "reference.tabular", "occupancy",
            "error_bound=(float(np.sum(np.abs(res_vec))) + rounding) / (1 - g),",
            "error_bound=(float(np.max(np.abs(res_vec))) + rounding) / (1 - g),",
            "bound", (), "the l1 certificate computed from the inf-norm of the residual",
        ),
        _LU_NORM_ARGUMENT,
    ),
    (
        SourceMutant(
            "shared-lu-occupancy-bound-inf-norm", "reference.tabular",
            "evaluate_with_occupancy",
            "error_bound=(float(np.sum(np.abs(flow_vec))) + l_round) / (1 - g),",
            "error_bound=(float(np.max(np.abs(flow_vec))) + l_round) / (1 - g),",
            "bound", (), "the shared factorisation's l1 certificate from the inf-norm residual",
        ),
        _LU_NORM_ARGUMENT,
    ),
)
