"""marl-oracle's verifiers: what users run against their own implementations.

* :mod:`verify.strategies` -- public Hypothesis strategies for kernels, graphs, networked
  MDPs, policies and utilities.
* :mod:`verify.symbolic` -- exact rational solutions of tiny instances (sympy).
* :mod:`verify.tolerances` -- every deterministic tolerance, with its derivation.
* :mod:`verify.bounds` -- concentration radii and a sign test, each with an explicit failure
  probability.
* :mod:`verify.finite_differences` -- central differences with a Richardson error bound.
* :mod:`verify.experiments` -- sweeps (kappa decay, sample complexity, the MA-PPO gap,
  the pessimism scale).
* :mod:`verify.checks` -- conformance checks for users' callables, with planted bugs
  (:mod:`verify.checks.planted`) that each check must catch.
* :mod:`verify.assumptions` -- the assumptions of the theorems, measured on a user's model.
* :mod:`verify.executors` -- seeded sweeps on any ``concurrent.futures.Executor`` (local
  processes, threads, a Dask cluster).
* :mod:`verify.report` -- the theorem report (``marl-oracle report``).
* :mod:`verify.files` -- exchange files for instances, parameters and estimates.
* :mod:`verify.pytest_plugin` -- the ``pytest11`` plugin: oracles and checks as fixtures.
* :mod:`verify.cli` -- the ``marl-oracle`` command (also ``python -m verify``).

Submodules are imported on demand (``from verify import strategies``), so that using one
does not pay for the others (sympy, Hypothesis).
"""

__all__ = [
    "assumptions",
    "bounds",
    "checks",
    "cli",
    "executors",
    "experiments",
    "files",
    "finite_differences",
    "pytest_plugin",
    "report",
    "strategies",
    "symbolic",
    "tolerances",
]
