"""Hypothesis profiles for the suite, selected with ``HYPOTHESIS_PROFILE``.

* ``dev`` (default): few examples, fast feedback.
* ``ci``: derandomized (fixed examples from a fixed seed), more examples, no deadline;
  this is what ``.ci/run`` uses.
* ``thorough``: many examples, for occasional deep runs.
"""

from __future__ import annotations

import importlib
import os
import pkgutil

from hypothesis import HealthCheck, settings

import reference
import verify


def import_project_modules() -> list[str]:
    """Import every module of ``reference`` and ``verify`` (not ``__main__``), so that the
    examples a test generates do not depend on which other modules the session happened to
    import.

    Since 6.131.1 Hypothesis sometimes draws, instead of a random value, a constant mined
    from the source of every *local* module in ``sys.modules`` (its changelog; in 6.170 the
    pool is ``hypothesis.internal.conjecture.providers._get_local_constants``, rebuilt when
    ``sys.modules`` grows).  No setting turns this off (an opt-out is still an open request
    upstream), so a derandomized profile alone does not fix the examples: importing, say,
    ``verify.checks.planted`` for one test changes the examples of every later test.  With
    the whole project imported before the first example is drawn, the pool is the same
    whichever tests run (test modules themselves are never mined: Hypothesis skips paths
    under ``tests/``).  ``tests/test_example_independence.py`` checks this.
    """
    names = []
    for package in (reference, verify):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.rsplit(".", 1)[-1] == "__main__":
                continue
            importlib.import_module(info.name)
            names.append(info.name)
    return names


import_project_modules()

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]

settings.register_profile("dev", max_examples=15, deadline=None, suppress_health_check=_SLOW_OK)
settings.register_profile(
    "ci",
    max_examples=40,
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=_SLOW_OK,
)
settings.register_profile(
    "thorough", max_examples=400, deadline=None, suppress_health_check=_SLOW_OK
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

pytest_plugins = ["pytester"]
"""``pytester`` runs user-style test files through the ``marl-oracle`` plugin
(tests/test_pytest_plugin.py)."""
