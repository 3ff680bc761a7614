"""A pytest plugin that plants one mutant of ``reference/`` for a whole session.

``MARL_REFERENCE_MUTANT=<name> python -m pytest -p reference_mutant_plugin ...`` (with
``tests/mutants`` on ``PYTHONPATH``) runs any selection of the suite against the named
mutant of ``reference_mutants.MUTANTS`` (or of ``EQUIVALENT``); ``bench/mutants.py --suite``
uses it to measure which mutants the suite as a whole kills.  Without the variable it does
nothing.
"""

from __future__ import annotations

import contextlib
import os

import pytest

_STACK = contextlib.ExitStack()


def pytest_configure(config: pytest.Config) -> None:
    name = os.environ.get("MARL_REFERENCE_MUTANT")
    if not name:
        return
    import reference_mutants as rm

    known = {m.name: m for m in rm.MUTANTS} | {m.name: m for m, _ in rm.EQUIVALENT}
    if name not in known:
        raise pytest.UsageError(f"unknown reference mutant {name!r}")
    _STACK.enter_context(rm.planted(known[name]))


def pytest_unconfigure(config: pytest.Config) -> None:
    _STACK.close()
