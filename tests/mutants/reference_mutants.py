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
import warnings
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
        extra: further ``(old, new)`` edits of the same target, applied after the first, each
            fragment occurring exactly once (a bug that spans two places).
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
    edited = textwrap.dedent(inspect.getsource(func))
    for old, new in ((mutant.old, mutant.new), *mutant.extra):
        count = edited.count(old)
        if count != 1:
            raise LookupError(
                f"mutant {mutant.name}: fragment {old!r} occurs {count} times in "
                f"{mutant.module}.{mutant.target}, expected once"
            )
        edited = edited.replace(old, new)
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
    are not saved and replayed into later runs of the real code, and without shrinking."""
    inner: Any = test
    key = "_hypothesis_internal_use_settings"
    current = getattr(inner, key, None)
    if current is None:
        yield
        return
    from hypothesis import Phase, settings

    # no shrinking or explaining: the first failing example is enough to kill a mutant
    fast = settings(current, database=None,
                    phases=[Phase.explicit, Phase.reuse, Phase.generate])
    setattr(inner, key, fast)
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
        return "error", f"{type(exc).__name__}: {exc}"[:300]
    except BaseException as exc:
        # pytest.fail and pytest.raises' "DID NOT RAISE" raise Failed, a BaseException
        if type(exc).__name__ == "Failed":
            return "killed", str(exc)[:200]
        raise
    return "survived", ""


def run_killers(mutant: SourceMutant, killers: tuple[str, ...] | None = None
                ) -> list[tuple[str, Outcome, str]]:
    """Plant ``mutant`` and run its killing tests (or ``killers``)."""
    out = []
    chosen = mutant.killers if killers is None else killers
    for killer in chosen:
        resolve(killer)  # import the test modules before anything is planted
    with planted(mutant), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a mutant's overflow or log(0) is not the point
        for killer in chosen:
            outcome, detail = run_killer(killer)
            out.append((killer, outcome, detail))
    return out


# ====================================================================== the catalogue
_TAB = "test_certificates_tabular"
_NET = "test_certificates_networked"
_ALG = "test_certificates_algorithm1"
_COOP = "test_certificates_cooperative"

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
        "evaluate-bound-without-formation", "reference.tabular", "evaluate",
        "float(np.max(np.abs(mdp.r))),\n        mdp.n_states + mdp.n_actions,",
        "float(np.max(np.abs(r_pi))),\n        mdp.n_states,",
        "bound", (f"{_TAB}::test_lu_certificates_cover_the_formation_of_the_kernel",),
        "the V certificate without the rounding of forming P_pi and r_pi (nA terms each)",
    ),
    SourceMutant(
        "shared-lu-value-bound-without-formation", "reference.tabular",
        "evaluate_with_occupancy",
        "float(np.max(np.abs(mdp.r))), n_s + mdp.n_actions", "float(np.max(np.abs(r_pi))), n_s",
        "bound", (f"{_TAB}::test_lu_certificates_cover_the_formation_of_the_kernel",
                  f"{_TAB}::test_shared_factorisation_certificates_are_each_their_own"),
        "the shared factorisation's V certificate without the formation rounding",
    ),
    SourceMutant(
        "occupancy-bound-without-formation", "reference.tabular", "occupancy",
        "1.0, mdp.n_states + mdp.n_actions", "1.0, mdp.n_states",
        "bound", (f"{_TAB}::test_lu_certificates_cover_the_formation_of_the_kernel",),
        "the occupancy certificate without the rounding of forming P_pi",
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
    # ---------------------------------------------------------------- reference.networked
    SourceMutant(
        "solve-value-bound-is-occupancy", "reference.networked.exact", "solve",
        "value_error_bound=val_solve.error_bound,", "value_error_bound=occ_solve.error_bound,",
        "bound", (f"{_NET}::test_dense_certificates_are_each_their_own",
                  f"{_NET}::test_matrix_free_value_certificate_is_attained",
                  f"{_NET}::test_matrix_free_gmres_certificates_are_each_their_own"),
        "solve() reports the occupancy solve's certificate as value_error_bound",
    ),
    SourceMutant(
        "dense-certificate-halved", "reference.networked.transition", "DenseOperator._certify",
        "return r, (r + rounding) / (1 - g)", "return r, (r + rounding) / (2 * (1 - g))",
        "bound", (f"{_NET}::test_dense_certificates_are_each_their_own",),
        "the dense LU certificate halved",
    ),
    SourceMutant(
        "dense-certificate-rounding-of-b-only", "reference.networked.transition",
        "DenseOperator._certify",
        "((1 + g) * scale + b_scale)", "(b_scale)",
        "bound", (f"{_NET}::test_dense_certificates_are_each_their_own",),
        "the residual's rounding without the (1 + gamma)||x|| term",
    ),
    SourceMutant(
        "matrix-free-row-sum-without-slack", "reference.networked.matrix_free",
        "MatrixFreeOperator.__init__",
        "float(np.prod(row_max)) * (1.0 + 2.0 * slack)", "float(np.prod(row_max))",
        "bound", (f"{_NET}::test_row_sum_bound_on_80_ring_and_line_operators",),
        "row_sum_bound without its rounding slack",
    ),
    SourceMutant(
        "matrix-free-row-sum-slack-x10", "reference.networked.matrix_free",
        "MatrixFreeOperator.__init__",
        "(1.0 + 2.0 * slack)", "(1.0 + 20.0 * slack)",
        "bound", (f"{_NET}::test_row_sum_bound_on_80_ring_and_line_operators",),
        "row_sum_bound with ten times its slack (valid, loose)",
    ),
    SourceMutant(
        "matrix-free-default-accuracy", "reference.networked.matrix_free",
        "MatrixFreeOperator.__init__",
        "accuracy: float = DEFAULT_ACCURACY", "accuracy: float = 100 * DEFAULT_ACCURACY",
        "tolerance", (f"{_NET}::test_matrix_free_default_accuracy",),
        "the default accuracy 100 times looser",
    ),
    SourceMutant(
        "minimum-accuracy-without-room", "reference.networked.matrix_free", "minimum_accuracy",
        "return 2.0 * (1.0 - gamma) * floor / c", "return (1.0 - gamma) * floor / c",
        "bound", (f"{_NET}::test_minimum_accuracy_derivation_and_both_sides",),
        "minimum_accuracy() with its factor 2 of room dropped",
    ),
    SourceMutant(
        "minimum-accuracy-inflated", "reference.networked.matrix_free", "minimum_accuracy",
        "return 2.0 * (1.0 - gamma) * floor / c", "return 4.0 * (1.0 - gamma) * floor / c",
        "bound", (f"{_NET}::test_minimum_accuracy_derivation_and_both_sides",),
        "minimum_accuracy() twice too cautious: reachable accuracies refused",
    ),
    SourceMutant(
        "matrix-free-certificate-halved", "reference.networked.matrix_free",
        "MatrixFreeOperator._solve_unit",
        "bound = (res + allowance(x)) / contraction",
        "bound = (res + allowance(x)) / (2 * contraction)",
        "bound", (f"{_NET}::test_matrix_free_value_certificate_is_attained",),
        "the matrix-free certificate halved",
    ),
    SourceMutant(
        "matrix-free-certificate-inflated", "reference.networked.matrix_free",
        "MatrixFreeOperator._solve_unit",
        "bound = (res + allowance(x)) / contraction",
        "bound = (res + allowance(x)) * (1.0 + g) / contraction",
        "bound", (f"{_NET}::test_matrix_free_value_certificate_is_attained",),
        "the matrix-free certificate times 1 + gamma (valid, loose)",
    ),
    SourceMutant(
        "matrix-free-allowance-of-b-only", "reference.networked.matrix_free",
        "MatrixFreeOperator._solve_unit",
        "(1.0 + g * rho) * norm(x) + b_norm", "b_norm",
        "bound", (f"{_NET}::test_matrix_free_gmres_certificates_are_each_their_own",),
        "the residual's rounding allowance without the (1 + gamma rho)||x|| term",
    ),
    SourceMutant(
        "td-step-ignores-current-batch", "reference.networked.algorithm", "td_critic",
        "h * c / (counts + c + t0)", "h * c / (counts + t0)",
        "formula", (f"{_ALG}::test_td_step_counts_the_current_batch",),
        "td_critic()'s step size ignoring the current batch",
    ),
    SourceMutant(
        "geometric-estimator-biased", "reference.networked.algorithm", "gradient_estimate",
        "scale = np.full(batch, 1.0 / (1.0 - model.gamma))", "scale = np.full(batch, 1.0)",
        "formula", (f"{_ALG}::test_geometric_gradient_estimator_is_unbiased",),
        "the geometric estimator biased by a factor 1 - gamma",
    ),
    SourceMutant(
        "replay-td-default-tol", "reference.networked.algorithm", "replay_td_critic",
        "tol: float = 1e-10", "tol: float = 1e-8",
        "tolerance", (f"{_ALG}::test_replay_td_default_tolerance",),
        "the default tolerance 100 times looser",
    ),
    SourceMutant(
        "replay-td-post-without-gamma", "reference.networked.algorithm", "replay_td_critic",
        "post = g * float(np.max(np.abs(q_new - q))) / (1.0 - g)",
        "post = float(np.max(np.abs(q_new - q))) / (1.0 - g)",
        "bound", (f"{_ALG}::test_replay_td_certificate_is_attained",),
        "replay TD's a posteriori bound without its factor gamma (valid, loose)",
    ),
    SourceMutant(
        "replay-td-post-one-step", "reference.networked.algorithm", "replay_td_critic",
        "post = g * float(np.max(np.abs(q_new - q))) / (1.0 - g)",
        "post = g * float(np.max(np.abs(q_new - q)))",
        "bound", (f"{_ALG}::test_replay_td_certificate_is_attained",),
        "replay TD's a posteriori bound without the geometric tail",
    ),
    SourceMutant(
        "entropy-domain-accepts-boundary", "reference.networked.utilities",
        "EntropyUtility._check_floor",
        "bad = p + self.eps <= 0.0", "bad = p + self.eps < 0.0",
        "formula", (f"{_ALG}::test_entropy_domain_excludes_its_boundary",),
        "EntropyUtility's domain check accepting its boundary p = -eps",
    ),
    # ---------------------------------------------------------------- reference.cooperative
    SourceMutant(
        "evaluate-game-bound-is-occupancy", "reference.cooperative.exact", "evaluate_game",
        "error_bound=vals.error_bound,", "error_bound=occ.error_bound,",
        "bound", (f"{_COOP}::test_evaluate_game_bound_is_the_value_certificate",),
        "evaluate_game()'s error_bound is the occupancy's l1 bound",
    ),
    SourceMutant(
        "algorithm3-gradient-bound-too-small", "reference.cooperative.mappo", "algorithm3",
        "G = 2 * (2 * radius + target_bound)", "G = 2 * (radius + target_bound)",
        "bound", (f"{_COOP}::test_algorithm3_gradient_bound_is_attained",),
        "the gradient bound G = 2(R + |y|) instead of 2(2R + |y|)",
    ),
    SourceMutant(
        "algorithm3-gradient-bound-inflated", "reference.cooperative.mappo", "algorithm3",
        "G = 2 * (2 * radius + target_bound)", "G = 2 * (2 * radius + 2 * target_bound)",
        "bound", (f"{_COOP}::test_algorithm3_gradient_bound_is_attained",),
        "the gradient bound with |y| doubled (valid, loose)",
    ),
    SourceMutant(
        "algorithm3-excess-without-shift", "reference.cooperative.mappo",
        "algorithm3_excess_bound",
        "        + 2 * G * R / T\n", "\n",
        "bound", (f"{_COOP}::test_algorithm3_excess_bound_is_its_derivation",),
        "algorithm3_excess_bound() with its last term 2GR/T dropped",
    ),
    SourceMutant(
        "algorithm3-excess-azuma-halved", "reference.cooperative.mappo",
        "algorithm3_excess_bound",
        "2 * G * R * math.sqrt(2 * math.log(1 / delta) / T)",
        "G * R * math.sqrt(2 * math.log(1 / delta) / T)",
        "bound", (f"{_COOP}::test_algorithm3_excess_bound_is_its_derivation",),
        "the Azuma term for increments in intervals of length 2GR instead of 4GR",
    ),
    SourceMutant(
        "anytime-without-minus-one", "reference.cooperative.mappo",
        "anytime_last_iterate_bound",
        "(math.sqrt(K + 1) - 1)", "math.sqrt(K + 1)",
        "bound", (f"{_COOP}::test_anytime_bound_is_its_derivation",),
        "anytime_last_iterate_bound() with sqrt(K+1) in place of sqrt(K+1) - 1",
    ),
    SourceMutant(
        "anytime-harmonic-one-short", "reference.cooperative.mappo",
        "anytime_last_iterate_bound",
        "np.arange(1, K + 1)", "np.arange(1, K)",
        "bound", (f"{_COOP}::test_anytime_bound_is_its_derivation",),
        "the harmonic number H_{K-1} in place of H_K",
    ),
    SourceMutant(
        "pessimistic-certificate-one-plus-q", "reference.cooperative.pessimism", "_values",
        "bound = (residual + _rounding(critic)) / (1 - q)",
        "bound = (residual + _rounding(critic)) / (1 + q)",
        "bound", (f"{_COOP}::test_pessimistic_certificate_is_attained",),
        "the pessimistic critic's certificate dividing by 1 + q instead of 1 - q",
    ),
    SourceMutant(
        "pessimistic-certificate-inflated", "reference.cooperative.pessimism", "_values",
        "bound = (residual + _rounding(critic)) / (1 - q)",
        "bound = (residual + _rounding(critic)) / (1 - q) ** 2",
        "bound", (f"{_COOP}::test_pessimistic_certificate_is_attained",),
        "the pessimistic certificate over (1 - q)^2 (valid, loose)",
    ),
    SourceMutant(
        "monotone-slack-x100", "reference.cooperative.pessimism", "_finish_critic",
        "4 * EPS_F64 * transition.shape[1]", "400 * EPS_F64 * transition.shape[1]",
        "bound", (f"{_COOP}::test_monotonicity_test_is_as_strict_as_its_rounding",),
        "the monotonicity test's slack times 100",
    ),
    SourceMutant(
        "evaluate-pessimistic-default-tol", "reference.cooperative.pessimism",
        "evaluate_pessimistic",
        "tol: float = 1e-10", "tol: float = 1e-8",
        "tolerance", (f"{_COOP}::test_pessimistic_default_tolerance",),
        "the default tolerance 100 times looser",
    ),
    SourceMutant(
        "evaluate-pessimistic-stop-without-contraction", "reference.cooperative.pessimism",
        "evaluate_pessimistic",
        "bound = (q * float(np.max(np.abs(Q_new - Q))) + rho_step) / (1 - q)",
        "bound = q * float(np.max(np.abs(Q_new - Q))) + rho_step",
        "tolerance", (f"{_COOP}::test_pessimistic_default_tolerance",),
        "the stopping rule without the 1/(1 - q) of the geometric tail",
    ),
    SourceMutant(
        "run-pessimistic-default-tol", "reference.cooperative.pessimism",
        "run_pessimistic_mappo",
        "tol: float = 1e-10", "tol: float = 1e-8",
        "tolerance", (f"{_COOP}::test_pessimistic_run_default_tolerance",),
        "the default critic tolerance of the training loop 100 times looser",
    ),
    SourceMutant(
        "game-optimal-default-tol", "reference.cooperative.game",
        "CooperativeMarkovGame.optimal",
        "tol: float = 1e-10", "tol: float = 1e-8",
        "tolerance", (f"{_COOP}::test_game_optimal_default_tolerance",),
        "the default tolerance of J* 100 times looser",
    ),
    # ---------------------------------------------------------------- formula bugs
    SourceMutant(
        "q-without-discount", "reference.tabular", "evaluate",
        'Q = mdp.r + g * np.einsum("sat,t->sa", mdp.P, V)',
        'Q = mdp.r + np.einsum("sat,t->sa", mdp.P, V)',
        "formula", ("test_tabular::test_bellman_consistency_and_zero_mean_advantage",),
        "Q = r + P V without the discount",
    ),
    SourceMutant(
        "occupancy-normalised-twice", "reference.tabular", "occupancy",
        "lam = lam_S[:, None] * pi\n", "lam = (1 - g) * lam_S[:, None] * pi\n",
        "formula", ("test_tabular::test_occupancy_mass",),
        "lam returned normalised (mass 1 instead of 1/(1-gamma))",
    ),
    SourceMutant(
        "policy-gradient-with-q", "reference.tabular", "policy_gradient",
        "occ.lam_S[:, None] * pi * vals.A", "occ.lam_S[:, None] * pi * vals.Q",
        "formula", ("test_tabular::test_policy_gradient_matches_finite_differences",),
        "the softmax policy gradient with Q in place of the advantage",
    ),
    SourceMutant(
        "value-iteration-mean-backup", "reference.tabular", "value_iteration",
        "V_new = Q.max(axis=1)", "V_new = Q.mean(axis=1)",
        "formula", ("test_cooperative::test_value_iteration_and_policy_iteration_agree",
                    f"{_TAB}::test_value_iteration_certificate_is_attained"),
        "value iteration backing up the mean instead of the max",
    ),
    SourceMutant(
        "networked-gradient-without-1-over-n", "reference.networked.exact", "solve",
        "* (mass / n)[:, None]", "* mass[:, None]",
        "formula", ("test_matrix_free::test_exact_gradient_agrees_across_backends",
                    "test_matrix_free::test_gradient_with_action_dependent_rewards_on_every_route"),
        "the agent's own shadow-reward term without its 1/n (matrix-free route)",
    ),
    SourceMutant(
        "networked-gradient-advantage-for-mass", "reference.networked.exact", "solve",
        "mass, advantage = masses[i], advantages[i]",
        "mass, advantage = masses[i], masses[i]",
        "formula", ("test_matrix_free::test_exact_gradient_agrees_across_backends",),
        "the advantage term marginalises the occupancy instead of lam_S (Rbar - Vbar)",
    ),
    SourceMutant(
        "team-reward-lifts-skip-a-table", "reference.networked.model", "JointSpace.add_lifts",
        "for k in members:", "for k in members[1:]:",
        "formula", ("test_joint_space::test_grouped_marginals_and_lifts_are_the_per_set_ones",
                    "test_matrix_free::test_exact_gradient_agrees_across_backends"),
        "each block's summed table leaves out its first set's table",
    ),
    SourceMutant(
        "lone-set-lifted-through-a-block-table", "reference.networked.model",
        "JointSpace.add_lifts", "if len(members) == 1:", "if False:",
        "bound", ("test_joint_space::test_a_set_beyond_the_block_cap_is_lifted_without_a_joint_"
                  "table",),
        "a set alone in its block (one beyond the cap: a joint-sized table) is copied onto a "
        "zeroed block table before it is lifted (a temporary of |S| floats, same sums)",
    ),
    SourceMutant(
        "marginal-einsum-for-every-dtype", "reference.networked.model", "JointSpace.marginal",
        'if not rest and drop and len(shape) <= 52 and values.dtype.kind in "fc":',
        "if not rest and drop and len(shape) <= 52:",
        "formula", ("test_joint_space::test_marginals_of_integer_and_boolean_values_are_counts",),
        "a marginal of one boolean or small-integer vector or-s the booleans and sums the "
        "integers in their own width (wrapping), unlike the same marginal with trailing axes",
    ),
    SourceMutant(
        "block-table-axes-out-of-order", "reference.networked.model", "_table_marginal",
        "shape = tuple(sizes[j] for j in union)", "shape = tuple(sorted(sizes[j] for j in union))",
        "formula", ("test_joint_space::test_grouped_marginals_and_lifts_are_the_per_set_ones",),
        "a block's table is read with its axis sizes out of agent order",
    ),
    SourceMutant(
        "joint-blocks-without-a-cap", "reference.networked.model", "_blocks",
        "if prod(sizes[j] for j in union) <= cap:", "if True:",
        "bound", ("test_joint_space::test_radius_one_observations_of_a_ring_take_two_passes",),
        "every set joins one block, whose table may be as large as the joint vector (the "
        "grouped marginals then cost a table of |S| per block; same sums)",
    ),
    SourceMutant(
        "occupancy-jacobian-unchecked", "reference.networked.exact", "local_occupancy_jacobian",
        "        occupancy_jacobian_bytes(policy, i),\n", "        0,\n",
        "bound", ("test_networked_exact::test_the_occupancy_jacobian_is_checked_before_its_"
                  "right_hand_sides",),
        "the occupancy Jacobian's joint right-hand sides allocated without a memory check",
    ),
    SourceMutant(
        "occupancy-jacobian-keeps-its-right-hand-sides", "reference.networked.exact",
        "local_occupancy_jacobian", "    del rhs  # not held", "    pass  # not held",
        "bound", ("test_networked_exact::test_the_occupancy_jacobian_is_checked_before_its_"
                  "right_hand_sides",),
        "the right-hand sides held beside the weighted columns (more than predicted)",
    ),
    SourceMutant(
        "occupancy-jacobian-bytes-without-the-solutions", "reference.networked.exact",
        "occupancy_jacobian_bytes", "m + widest * (m + 1))", "widest * (m + 1))",
        "bound", ("test_networked_exact::test_the_occupancy_jacobian_is_checked_before_its_"
                  "right_hand_sides",),
        "the prediction leaves out the solutions held beside the weighted columns",
    ),
    SourceMutant(
        "random-model-draws-a-uniform-rho", "reference.networked.model", "NetworkedMDP.random",
        'rng.dirichlet(np.ones(k)) if rho == "dirichlet" else np.ones(k) / k',
        '(rng.dirichlet(np.ones(k)), np.ones(k) / k)[rho != "dirichlet"]',
        "formula", ("test_networked_exact::test_random_models_draw_in_the_documented_order",),
        "a uniform rho still consumes Dirichlet draws, moving every later draw of the generator",
    ),
    SourceMutant(
        "networked-gradient-without-discount", "reference.networked.exact", "solve",
        "q_i += model.gamma * forms[i]", "q_i += forms[i]",
        "formula", ("test_matrix_free::test_exact_gradient_agrees_on_named_graphs",),
        "Qbar^(i) = ... + P^(i,b) Vbar without the discount (matrix-free route)",
    ),
    SourceMutant(
        "dense-gradient-without-1-over-n", "reference.networked.exact", "_solve_dense",
        "q_i /= n\n", "\n",
        "formula", ("test_networked_exact::test_three_gradient_routes_agree",),
        "the agent's own shadow-reward term without its 1/n (dense route, agent by agent)",
    ),
    SourceMutant(
        "dense-gradient-without-discount", "reference.networked.exact", "_solve_dense",
        "q_i += gamma * agent_values[i]", "q_i += agent_values[i]",
        "formula", ("test_networked_exact::test_three_gradient_routes_agree",),
        "Qbar^(i) without the discount (dense route, agent by agent)",
    ),
    SourceMutant(
        "stacked-gradient-without-1-over-n", "reference.networked.exact",
        "_solve_dense_stacked", "q /= n\n", "\n",
        "formula", ("test_networked_exact::test_three_gradient_routes_agree",
                    "test_matrix_free::test_gradient_with_action_dependent_rewards_on_every_route",
                    "test_networked_exact::test_fused_routes_agree_with_the_operator_route"),
        "the agents' own shadow-reward terms without 1/n (dense route, agents stacked)",
    ),
    SourceMutant(
        "stacked-gradient-without-discount", "reference.networked.exact",
        "_solve_dense_stacked",
        "q += (model.gamma * lam_S)[:, None, None] * op.apply_agents_weighted(Vbar)",
        "q += lam_S[:, None, None] * op.apply_agents_weighted(Vbar)",
        "formula", ("test_networked_exact::test_three_gradient_routes_agree",
                    "test_matrix_free::test_gradient_with_action_dependent_rewards_on_every_route",
                    "test_networked_exact::test_fused_routes_agree_with_the_operator_route"),
        "Qbar^(i) without the discount (dense route, agents stacked)",
    ),
    SourceMutant(
        "reverse-product-rule-without-other-factors", "reference.networked.matrix_free",
        "_step_factor_gradients", "            if other != pos:\n",
        "            if False:\n",
        "formula", ("test_matrix_free_reverse::test_agent_forms_match_one_agent_application_each",
                    "test_matrix_free_reverse::test_factor_gradients_are_the_derivatives_of_u_p_v"),
        "dL/dF_i from a merged step without multiplying by the other agents' factors",
    ),
    SourceMutant(
        "reverse-adjoint-permutation-not-inverted", "reference.networked.matrix_free",
        "MatrixFreeOperator._reverse_chain",
        "back = g.reshape(permuted).transpose(np.argsort(step.permutation))",
        "back = g.reshape(permuted).transpose(step.permutation)",
        "formula", ("test_matrix_free_reverse::test_agent_forms_on_rings_whose_adjoint_reorders_axes",),
        "the adjoint chain reorders axes by the step's permutation instead of its inverse",
    ),
    SourceMutant(
        "reverse-forms-with-actions-reversed", "reference.networked.matrix_free",
        "MatrixFreeOperator.agent_forms", "model.kernels[i], model.neighbourhoods[i]",
        "model.kernels[i][:, ::-1], model.neighbourhoods[i]",
        "formula", ("test_matrix_free_reverse::test_agent_forms_match_one_agent_application_each",),
        "the forms built with the actions' kernels in reverse order (K_i^{|A|-1-b} for b)",
    ),
    SourceMutant(
        "bicgstab-omega-step-reversed", "reference.networked.matrix_free", "_bicgstab",
        "np.multiply(r[piece], omega, out=scratch)\n            x[piece] += scratch",
        "np.multiply(r[piece], omega, out=scratch)\n            x[piece] -= scratch",
        "formula", ("test_matrix_free_reverse::test_krylov_solves_beat_the_fixed_point_count",),
        "BiCGSTAB's stabilising step applied with the wrong sign (the solve falls back to the "
        "fixed point: still certified, an order of magnitude slower)",
    ),
    SourceMutant(
        "threads-slab-misses-the-last-rows", "reference.networked.matrix_free", "_halves",
        "return [slice(lo, hi)", "return [slice(lo, hi - (hi == size))",
        "formula", ("test_matrix_free_reverse::test_threaded_applications_equal_the_single_threaded_ones",),
        "the last slab of a split step stops one row short (its rows keep stale buffer values)",
    ),
    SourceMutant(
        "stacked-value-bound-is-occupancy", "reference.networked.exact",
        "_solve_dense_stacked",
        "value_error_bound=value_bound,", "value_error_bound=occupancy_bound,",
        "bound", (f"{_NET}::test_dense_certificates_are_each_their_own",),
        "the stacked dense route reports the occupancy certificate as value_error_bound",
    ),
    SourceMutant(
        "dense-lu-systems-swapped", "reference.networked.transition",
        "DenseOperator.solve_certified",
        "trans=0 if transpose else 1", "trans=1 if transpose else 0",
        "formula", ("test_networked_exact::test_three_gradient_routes_agree",
                    "test_networked_exact::test_occupancy_and_values_match_certified_iteration"),
        "the transposed LU's getrs solving the value system for the occupancy and back",
    ),
    SourceMutant(
        "one-block-agents-unweighted", "reference.networked.transition",
        "DenseOperator.apply_agents_weighted",
        "q *= self._block_policies[0]\n", "\n",
        "formula", ("test_networked_exact::test_three_gradient_routes_agree",
                    "test_networked_exact::test_dense_block_routes_on_line_message"),
        "the one-block route's agent marginals without the joint policy weights",
    ),
    SourceMutant(
        "two-block-other-half-swapped", "reference.networked.transition",
        "DenseOperator.apply_agents_weighted",
        "(second @ grid.T, first @ grid)", "(first @ grid, second @ grid.T)",
        "formula", ("test_networked_exact::test_dense_block_routes_on_line_message",),
        "the two-block route contracting v with a block's own M instead of the other half's",
    ),
    SourceMutant(
        "stacked-softmax-over-observations", "reference.networked.policy", "_stacked_softmax",
        "probs = softmax_last_axis(params)", "probs = softmax_last_axis(params.T).T",
        "formula", ("test_networked_exact::test_policy_softmax_of_all_agents_at_once_equals_"
                    "agent_by_agent",),
        "the stacked softmax normalising each action's column over observations",
    ),
    SourceMutant(
        "halves-route-other-half-swapped", "reference.networked.exact", "_solve_halves",
        "np.matmul(factors[:, split:], grid.T, out=u[:, :split])",
        "np.matmul(factors[:, :split], grid, out=u[:, :split])",
        "formula", ("test_networked_exact::test_fused_routes_agree_with_the_operator_route",),
        "the halves route contracting Vbar with the first half's own M instead of the other's",
    ),
    SourceMutant(
        "halves-route-without-other-agents-rewards", "reference.networked.transition",
        "_build_halves_route",
        "other[:start, cols] = other[stop:n, cols] = 1.0 / n",
        "other[:start, cols] = other[stop:n, cols] = 0.0",
        "formula", ("test_networked_exact::test_fused_routes_agree_with_the_operator_route",),
        "Qbar^(H) without the other half's policy rewards (1/n) sum_{j not in H} R_j^pi",
    ),
    SourceMutant(
        "halves-route-value-bound-is-occupancy", "reference.networked.exact", "_solve_halves",
        "occupancy_bound, value_bound,\n", "occupancy_bound, occupancy_bound,\n",
        "bound", (f"{_NET}::test_dense_certificates_are_each_their_own",),
        "the halves route reports the occupancy certificate as value_error_bound",
    ),
    SourceMutant(
        "joint-route-value-bound-is-occupancy", "reference.networked.exact", "_solve_joint",
        "occupancy_bound, value_bound,\n", "occupancy_bound, occupancy_bound,\n",
        "bound", (f"{_NET}::test_dense_certificates_are_each_their_own",),
        "the joint route reports the occupancy certificate as value_error_bound",
    ),
    SourceMutant(
        "joint-route-value-rounding-of-b-only", "reference.networked.exact", "_solve_joint",
        "((1 + g) * x_norm + b_norm)", "(b_norm)",
        "bound", (f"{_NET}::test_dense_certificates_are_each_their_own",),
        "the joint route's value residual rounding without the (1 + gamma)||V|| term",
    ),
    SourceMutant(
        "joint-route-advantage-without-occupancy", "reference.networked.exact", "_solve_joint",
        "advantage *= lam_pi.reshape(-1)", "advantage *= pi.reshape(-1)",
        "formula", ("test_networked_exact::test_three_gradient_routes_agree",
                    "test_networked_exact::test_fused_routes_agree_with_the_operator_route"),
        "the joint route weighting Qbar - Vbar by pi(a|s) instead of lam(s, a)",
    ),
    SourceMutant(
        "joint-route-q-kernel-without-baseline", "reference.networked.transition",
        "_build_joint_route",
        "q_kernel[np.arange(nS), :, np.arange(nS)] -= 1.0",
        "q_kernel[np.arange(nS), :, np.arange(nS)] -= 0.0",
        "formula", ("test_networked_exact::test_three_gradient_routes_agree",
                    "test_networked_exact::test_fused_routes_agree_with_the_operator_route"),
        "the joint route's Qbar(s, a) without - Vbar(s) (the score's pi_i(b|o) term dropped)",
    ),
    SourceMutant(
        "joint-route-reward-rows-of-agent-zero", "reference.networked.transition",
        "_build_joint_route",
        "own_of_obs[obs_flat.reshape(-1)] = own_flat.reshape(-1)",
        "own_of_obs[obs_flat.reshape(-1)] = (own_flat % X).reshape(-1)",
        "formula", ("test_networked_exact::test_fused_routes_agree_with_the_operator_route",),
        "R_i^pi read from agent 0's reward table for every agent (per-agent values wrong)",
    ),
    SourceMutant(
        "threads-dot-keeps-the-last-piece", "reference.networked.matrix_free", "_chunked",
        "total[:summed] += part[:summed]", "total[:summed] = part[:summed]",
        "formula", ("test_matrix_free_reverse::test_fused_vector_kernels_cover_every_piece_of_every_slab",),
        "a fused kernel's partial sums: only the last piece of each slab kept (BiCGSTAB's dot "
        "products wrong above 2^15 entries)",
    ),
    SourceMutant(
        "bicgstab-shadow-residual-is-b", "reference.networked.matrix_free", "_bicgstab",
        "np.add(b[piece], scratch, out=shadow[piece])", "np.copyto(shadow[piece], b[piece])",
        "formula", ("test_matrix_free_reverse::test_the_perturbed_shadow_residual_is_what_"
                    "makes_a_uniform_start_converge_fast",),
        "BiCGSTAB's shadow residual b itself: a uniform start converges slowly (still "
        "certified, slower)",
    ),
    SourceMutant(
        "threads-slab-not-awaited", "reference.networked.matrix_free", "_parallel",
        "for job in jobs:\n        job.result()", "jobs[0].result()",
        "formula", ("test_matrix_free_reverse::test_threaded_applications_equal_the_single_threaded_ones",),
        "a split copy returns after its first slab (the others may not have run yet)",
    ),
    SourceMutant(
        "reverse-route-inverted", "reference.networked.matrix_free",
        "MatrixFreeOperator.agent_forms", "if not reverse_forms_fit(", "if reverse_forms_fit(",
        "bound", ("test_matrix_free_reverse::test_forms_fall_back_to_agent_applications_when_the_"
                  "stored_inputs_do_not_fit",),
        "agent_forms takes the reverse route exactly when its stored inputs do not fit",
    ),
    SourceMutant(
        "slab-takes-the-first-rows", "reference.networked.matrix_free", "_SlabStep.matrix",
        "return mat[slab * part:(slab + 1) * part]", "return mat[:part]",
        "formula", ("test_matrix_free_slabs::test_slabbed_applications_are_the_operator",),
        "every slab of a step that shares the slab agent uses the rows of s_a = 0",
    ),
    SourceMutant(
        "slab-adjoint-terms-overwrite", "reference.networked.matrix_free",
        "MatrixFreeOperator._backward_chain", "_accumulate(target, t, self.threads)",
        "_copy(target, t, self.threads)",
        "formula", ("test_matrix_free_slabs::test_slabbed_applications_are_the_operator",),
        "the adjoint in slabs keeps the last slab's term instead of adding them up",
    ),
    SourceMutant(
        "slab-result-rows-unshifted", "reference.networked.matrix_free",
        "MatrixFreeOperator._slab_axes",
        "tuple(final[p] - 1 for p in range(len(final)) if p != pos)",
        "tuple(sorted(final[p] - 1 for p in range(len(final)) if p != pos))",
        "formula", ("test_matrix_free_slabs::test_slabbed_applications_are_the_operator",),
        "a slab's closing copy ignores the last intermediate's axis order",
    ),
    SourceMutant(
        "slab-adjoint-depth-without-additions", "reference.networked.matrix_free",
        "MatrixFreeOperator.__init__", "plan.transpose_depth + slabs - 1",
        "plan.transpose_depth",
        "bound", ("test_matrix_free_slabs::test_slabbed_applications_are_the_operator",),
        "the certificate's rounding depth of the adjoint omits the additions of the slabs' "
        "terms",
    ),
    SourceMutant(
        "reverse-slab-rows-into-the-first-block", "reference.networked.matrix_free",
        "MatrixFreeOperator._reverse_chain",
        "total[slab * rows:(slab + 1) * rows] += part", "total[:rows] += part",
        "formula", ("test_matrix_free_slabs::test_factor_gradients_in_slabs_are_the_whole_ones",),
        "reverse mode in slabs adds every slab's derivative into the rows of s_a = 0",
    ),
    SourceMutant(
        "reverse-slab-columns-into-the-first-block", "reference.networked.matrix_free",
        "MatrixFreeOperator._reverse_chain",
        "total[:, slab * cols:(slab + 1) * cols] += part", "total[:, :cols] += part",
        "formula", ("test_matrix_free_slabs::test_factor_gradients_in_slabs_are_the_whole_ones",),
        "reverse mode in slabs adds the first step's derivative of every slab into the "
        "columns of s_a = 0",
    ),
    SourceMutant(
        "reverse-slabs-never-taken", "reference.networked.matrix_free", "reverse_forms_slabs",
        "            return count\n", "            return 0\n",
        "bound", ("test_matrix_free_slabs::test_exact_gradient_in_slabs_stays_within_the_"
                  "memory_prediction",),
        "reverse-mode forms never in slabs: agent applications where slabs would fit",
    ),
    SourceMutant(
        "slab-cost-counts-whole-leads", "reference.networked.matrix_free",
        "ContractionPlan.application_cost",
        "steps = self.steps if slabs == 1 else _slab_steps(self)", "steps = self.steps",
        "formula", ("test_matrix_free_slabs::test_the_cost_model_counts_the_calls_and_rereads_"
                    "of_slabs",),
        "the cost model counts a lead step's whole lead in every slab",
    ),
    SourceMutant(
        "reverse-slabs-beside-whole-buffers", "reference.networked.matrix_free",
        "MatrixFreeOperator.factor_gradients", "self._work = None", "pass",
        "bound", ("test_matrix_free_slabs::test_reverse_mode_in_slabs_after_whole_"
                  "applications_stays_within_the_prediction",),
        "reverse mode in slabs keeps the whole applications' work buffers beside the slabs' "
        "stored inputs (more memory than predicted)",
    ),
    SourceMutant(
        "prediction-decides-slabs-per-column-count", "reference.networked.matrix_free",
        "matrix_free_memory",
        "model, plan, restart=restart, solver=solver, memory_limit=memory_limit\n",
        "model, plan, restart=restart, columns=columns, solver=solver,\n"
        "            memory_limit=memory_limit,\n",
        "bound", ("test_matrix_free_slabs::test_the_prediction_for_several_columns_takes_the_"
                  "operators_slabs",),
        "the memory prediction for several columns decides slabs for that column count, "
        "which the operator (deciding once, for one column) never takes",
    ),
    SourceMutant(
        "multi-column-work-unchecked", "reference.networked.matrix_free",
        "MatrixFreeOperator.check_columns",
        "if columns <= 1 or key in self._columns_checked:", "if True:",
        "bound", ("test_matrix_free_slabs::test_per_agent_values_on_the_operator_are_checked_"
                  "for_their_columns",),
        "work on several columns at once (per-agent value solves, multi-column applications) "
        "is not checked against the memory limit, which the operator checked for one column",
    ),
    SourceMutant(
        "solves-counted-as-wide-applications", "reference.networked.matrix_free",
        "MatrixFreeOperator.check_columns", "applied=1 if solve else columns,", "applied=columns,",
        "bound", ("test_matrix_free_slabs::test_per_agent_values_on_the_operator_are_checked_"
                  "for_their_columns",),
        "a solve of several right-hand sides is checked as one application of all its columns "
        "(it takes them one at a time): per-agent values refused under limits they fit",
    ),
    SourceMutant(
        "wide-applications-counted-as-solves", "reference.networked.matrix_free",
        "MatrixFreeOperator.check_columns", "applied=1 if solve else columns,", "applied=1,",
        "bound", ("test_matrix_free_slabs::test_per_agent_values_on_the_operator_are_checked_"
                  "for_their_columns",),
        "an application of several columns at once is checked with one column's work "
        "buffers, which it holds as many times as it has columns",
    ),
    SourceMutant(
        "plan-floor-without-slab-additions", "reference.networked.matrix_free", "_solve_depth",
        "plan.transpose_depth + extra", "plan.transpose_depth",
        "bound", ("test_matrix_free_slabs::test_the_plan_chosen_for_an_accuracy_reaches_it_in_"
                  "slabs",),
        "the plan is chosen for an accuracy by the whole adjoint's rounding floor, which the "
        "adjoint in slabs does not reach",
    ),
    SourceMutant(
        "slabbed-strided-out-through-views", "reference.networked.matrix_free",
        "MatrixFreeOperator._contiguous", "if result.flags.c_contiguous:", "if True:",
        "formula", ("test_matrix_free_slabs::test_slabbed_applications_are_the_operator",),
        "slabs write a strided out= through reshaped views, which are copies for the "
        "adjoint's merged axes (the result is never written)",
    ),
    SourceMutant(
        "threads-split-keeps-one-part", "reference.networked.matrix_free", "_parallel",
        "for part in _halves(arrays[-1].shape[axis], threads):",
        "for part in _halves(arrays[-1].shape[axis], threads)[:1]:",
        "formula", ("test_matrix_free_slabs::test_slabbed_applications_are_the_operator",),
        "a copy or step split over threads runs only the first thread's part",
    ),
    SourceMutant(
        "memory-takes-any-slab-count", "reference.networked.matrix_free", "matrix_free_memory",
        "    else:\n        _check_slabs(plan, slabs)\n", "",
        "formula", ("test_matrix_free_slabs::test_the_memory_prediction_refuses_slabs_the_plan_"
                    "cannot_take",),
        "the memory prediction accepts slab counts no operator runs (0 divides by zero)",
    ),
    SourceMutant(
        "slabs-never-taken", "reference.networked.matrix_free", "application_slabs",
        "return 1 if whole <= resolve_limit(memory_limit) else count", "return 1",
        "bound", ("test_matrix_free_slabs::test_slabs_are_taken_exactly_when_whole_"
                  "applications_do_not_fit",),
        "whole applications even when they do not fit the memory limit (the operator "
        "refuses instances it can run)",
    ),
    SourceMutant(
        "bicgstab-stop-on-the-squared-norm", "reference.networked.matrix_free", "_bicgstab",
        'limit = atol * atol if norm == "l2" else atol', 'limit = atol if norm == "l2" else atol',
        "formula", ("test_matrix_free_reverse::test_bicgstab_stops_when_its_residual_is_below_the_tolerance",),
        "BiCGSTAB compares the squared residual norm with atol instead of atol^2 (stops early: "
        "still certified, more calls)",
    ),
    SourceMutant(
        "reverse-solve-vectors-held", "reference.networked.matrix_free",
        "MatrixFreeOperator.factor_gradients", "self._krylov = self._solves = None\n", "\n",
        "bound", ("test_matrix_free_reverse::test_exact_gradient_with_reverse_forms_stays_within_"
                  "the_memory_prediction",),
        "the solves' kept vectors held through the gradient phase, which the memory prediction "
        "counts apart",
    ),
    SourceMutant(
        "reverse-unkept-outputs-fresh", "reference.networked.matrix_free",
        "MatrixFreeOperator._reverse_chain",
        "if k + 1 == len(steps) or steps[k + 1].permutation is not None:", "if False:",
        "bound", ("test_matrix_free_reverse::test_exact_gradient_with_reverse_forms_stays_within_"
                  "the_memory_prediction",),
        "the forward chain's outputs that are not kept allocated fresh beside the work buffers",
    ),
    SourceMutant(
        "reverse-memory-decides-its-own-route", "reference.networked.matrix_free",
        "matrix_free_memory", "reverse = reverse_forms_slabs(model, plan, memory_limit)",
        "reverse = int(predicted_bytes(max(solving, plan.reverse_floats(1)), held)"
        " <= resolve_limit(memory_limit))",
        "bound", ("test_matrix_free_reverse::test_the_memory_prediction_counts_the_reverse_route_"
                  "whenever_agent_forms_takes_it",),
        "the memory prediction decides the forms' route by its own rule, which differs from "
        "agent_forms' near the limit",
    ),
    SourceMutant(
        "application-forms-solve-vectors-held", "reference.networked.matrix_free",
        "MatrixFreeOperator.agent_forms", "self._krylov = self._solves = None\n", "\n",
        "bound", ("test_matrix_free_reverse::test_exact_gradient_by_agent_applications_stays_"
                  "within_the_memory_prediction",),
        "the solves' kept vectors held while the forms come from agent applications, which "
        "the memory prediction counts apart",
    ),
    SourceMutant(
        "agent-step-matrices-cached-for-every-agent", "reference.networked.matrix_free",
        "MatrixFreeOperator._agent_matrices",
        "if any(cached != key[0] for cached, _ in self._agent_cache):", "if False:",
        "bound", ("test_matrix_free_reverse::test_exact_gradient_by_agent_applications_stays_"
                  "within_the_memory_prediction",),
        "every agent's and action's step matrix kept at once, beyond the |A_i| the memory "
        "prediction counts",
    ),
    SourceMutant(
        "cost-model-one-call-per-leading-step", "reference.networked.matrix_free",
        "ContractionPlan.application_cost", "sum(s.lead for s in steps)", "len(steps)",
        "formula", ("test_matrix_free::test_the_cost_model_counts_one_call_per_slab_issued",),
        "a step on L slabs counted as one numpy call in the predicted cost, though it issues L",
    ),
    SourceMutant(
        "lead-slabs-share-the-first-rows", "reference.networked.matrix_free", "_lead_step",
        "mat[slab * part:(slab + 1) * part]", "mat[:part]",
        "formula", ("test_matrix_free::test_leading_shared_axes_close_a_ring_without_a_copy",),
        "every slab of a step with leading shared axes uses the first slab's rows of F_G",
    ),
    SourceMutant(
        "lead-pair-derivatives-stacked-backwards", "reference.networked.matrix_free",
        "_lead_pair_contraction", "for slab in range(lead)]", "for slab in reversed(range(lead))]",
        "formula", ("test_matrix_free::test_leading_shared_axes_close_a_ring_without_a_copy",),
        "the slabs' derivatives of a leading step stacked into the wrong rows of dL/dF_G",
    ),
    SourceMutant(
        "row-products-one-matrix", "reference.networked.matrix_free", "_row_products",
        "flipped[k], out=", "flipped[0], out=",
        "formula", ("test_matrix_free::test_row_products_for_every_slab_and_cap",),
        "the row-slab products of a last step use the first shared state's matrix for all",
    ),
    SourceMutant(
        "row-products-slab-remainder-dropped", "reference.networked.matrix_free", "_row_products",
        "hi = min(lo + rows, x)", "hi = lo + rows if lo + rows <= x else lo",
        "formula", ("test_matrix_free::test_row_products_for_every_slab_and_cap",),
        "the last, partial slab of rows is skipped",
    ),
    SourceMutant(
        "bicgstab-next-rho-sign", "reference.networked.matrix_free", "_bicgstab",
        "rho_next = shadow_s - omega * shadow_t", "rho_next = shadow_s + omega * shadow_t",
        "formula", ("test_matrix_free_reverse::test_krylov_solves_beat_the_fixed_point_count",
                    "test_matrix_free_reverse::test_bicgstab_stops_when_its_residual_is_below_"
                    "the_tolerance"),
        "the next <r^, r> from <r^, s> and <r^, t> with the wrong sign (a wrong direction "
        "update: slow or stalled, still certified)",
    ),
    SourceMutant(
        "bicgstab-half-stop-without-the-step", "reference.networked.matrix_free", "_bicgstab",
        "        if s_size < limit:\n            advance(alpha)\n",
        "        if s_size < limit:\n",
        "formula", ("test_matrix_free_reverse::test_bicgstab_stops_when_its_residual_is_below_"
                    "the_tolerance",),
        "a stop after the half step returns x without its last alpha p",
    ),
    SourceMutant(
        "bicgstab-zero-product-stop-without-the-step", "reference.networked.matrix_free",
        "_bicgstab", "        if tt == 0.0 or not np.isfinite(tt):\n            advance(alpha)\n",
        "        if tt == 0.0 or not np.isfinite(tt):\n",
        "formula", ("test_matrix_free_reverse::test_bicgstab_breakdowns_return_the_iterate_of_"
                    "the_residual_left",),
        "a breakdown on A s = 0 returns x without its last alpha p, though the residual left "
        "is s",
    ),
    SourceMutant(
        "bicgstab-fused-dot-against-the-wrong-vector", "reference.networked.matrix_free",
        "_bicgstab", "ts, tt, shadow_t = apply(r, t, (r, t, shadow))",
        "ts, tt, shadow_t = apply(r, t, (r, t, r))",
        "formula", ("test_matrix_free_reverse::test_krylov_solves_beat_the_fixed_point_count",),
        "the fused product's <r^, t> taken against s instead of the shadow residual",
    ),
    SourceMutant(
        "adjoint-result-not-written", "reference.networked.matrix_free",
        "MatrixFreeOperator._backward_chain", "dest = result.reshape(x, b, c, y * cols)",
        "dest = np.empty((x, b, c, y * cols))",
        "formula", ("test_matrix_free::test_operations_match_the_dense_matrix",),
        "the first step's adjoint, meant to write the result in place, writes elsewhere",
    ),
    SourceMutant(
        "forward-written-in-place-out-of-order", "reference.networked.matrix_free",
        "MatrixFreeOperator._forward_chain",
        "if plan.in_agent_order and k == last:", "if k == last:",
        "formula", ("test_matrix_free::test_plans_that_end_in_agent_order_copy_nothing_at_"
                    "either_end",),
        "the last step written into the result without the reordering a plan not in agent "
        "order needs",
        extra=(("if not plan.in_agent_order:\n", "if False:\n"),),
    ),
    SourceMutant(
        "adjoint-reads-u-out-of-order", "reference.networked.matrix_free",
        "MatrixFreeOperator._backward_chain", "if plan.in_agent_order:", "if True:",
        "formula", ("test_matrix_free::test_plans_that_end_in_agent_order_copy_nothing_at_"
                    "either_end",),
        "the adjoint reads u as it is although the plan's last intermediate is not in agent "
        "order",
    ),
    SourceMutant(
        "entropy-gradient-bound-unscaled", "reference.networked.utilities",
        "EntropyUtility.constants",
        "gradient_bound=scale * max(abs(g_zero), abs(g_one)),",
        "gradient_bound=max(abs(g_zero), abs(g_one)),",
        "bound", ("test_utilities::test_base_gradient_bounds_are_attained_at_vertices",),
        "the entropy's gradient bound without the (1 - gamma) of p = (1 - gamma) sum_a lam",
    ),
    SourceMutant(
        "game-visitation-unnormalised", "reference.cooperative.exact", "evaluate_game",
        "nu=frozen((1 - game.gamma) * occ.lam_S),", "nu=frozen(occ.lam_S),",
        "formula", ("test_cooperative::test_multi_agent_pdl",),
        "the visitation nu returned unnormalised",
    ),
    SourceMutant(
        "tuned-beta-constant", "reference.cooperative.mappo", "tuned_beta",
        "math.sqrt(n_agents / (8 * log_actions))", "math.sqrt(n_agents / (4 * log_actions))",
        "formula", ("test_mappo::test_bound_tuned_value_and_normalisation",),
        "the tuned beta with 4 in place of 8",
    ),
    SourceMutant(
        "mappo-bound-power", "reference.cooperative.mappo", "mappo_bound",
        "8 * beta * (1 - g) ** 3 * math.sqrt(K)", "8 * beta * (1 - g) ** 2 * math.sqrt(K)",
        "bound", ("test_mappo::test_bound_tuned_value_and_normalisation",),
        "B(K)'s second term over (1 - gamma)^2 instead of (1 - gamma)^3",
    ),
    SourceMutant(
        "mirror-descent-sign", "reference.cooperative.mappo", "mirror_descent_step",
        "logits += q * (1.0 / beta_k)", "logits -= q * (1.0 / beta_k)",
        "formula", ("test_mappo::test_average_gap_below_bound",),
        "the MA-PPO step descending instead of ascending",
    ),
    SourceMutant(
        "pessimism-model-term-halved", "reference.cooperative.pessimism", "pessimism_bound",
        "model = 2.0 * eb / (1.0 - game.gamma)", "model = eb / (1.0 - game.gamma)",
        "bound", ("test_pessimism::test_model_term_constant_is_tight",
                  "test_pessimism::test_expected_bonus_uses_the_normalised_occupancy"),
        "the model term (2/(1-gamma)) E[Gamma] halved",
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
    (
        SourceMutant(
            "fixed-point-prior-inflated", "reference.tabular", "_certified_fixed_point",
            "prior = gamma * b_norm / (1 - gamma)", "prior = b_norm / (1 - gamma)",
            "bound", (), "the a priori term of the fixed-point stop without its factor gamma",
        ),
        "the a posteriori term gamma ||x_k - x_{k-1}|| / (1 - gamma) = gamma^k ||M^{k-1} b|| / "
        "(1 - gamma) is at most the a priori gamma^k ||b|| / (1 - gamma) because ||M|| <= 1 in "
        "the norm used (P_pi rows, P_pi^T columns sum to 1), so min(prior, post) = post in "
        "exact arithmetic and a larger prior changes nothing (proofs_notes/certificates.md)",
    ),
    (
        SourceMutant(
            "active-set-nonnegative", "reference.cooperative.pessimism", "solve_pessimistic",
            "new_active = cont > 0", "new_active = cont >= 0",
            "formula", (), "the active set's cont > 0 changed to >= 0",
        ),
        "the sets differ only on cells with cont = 0 exactly; such a cell's Q is 0 whether it "
        "stops or continues, and continuing adds pi * cont = 0 to the system for V, so Q is "
        "unchanged; at most the reported iteration count moves",
    ),
)
