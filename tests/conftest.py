"""Hypothesis profiles for the suite, selected with ``HYPOTHESIS_PROFILE``.

* ``dev`` (default): few examples, fast feedback.
* ``ci``: derandomized (fixed examples from a fixed seed), more examples, no deadline;
  this is what ``.ci/run`` uses.
* ``thorough``: many examples, for occasional deep runs.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

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
