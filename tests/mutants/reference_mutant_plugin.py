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


def pytest_sessionstart(session: pytest.Session) -> None:
    """With a mutant planted, keep the loaded Hypothesis profile but skip shrinking: the
    verdict (some test fails) is the first failing example's, and shrinking only costs
    time.  Runs after the initial conftest chose the profile, before any test module is
    imported."""
    if not os.environ.get("MARL_REFERENCE_MUTANT"):
        return
    from hypothesis import Phase, settings

    settings.register_profile(
        "reference-mutant", parent=settings.default,
        phases=[Phase.explicit, Phase.reuse, Phase.generate], database=None,
    )
    settings.load_profile("reference-mutant")


def pytest_unconfigure(config: pytest.Config) -> None:
    _STACK.close()
