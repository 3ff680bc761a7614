"""The ``ci`` profile generates the same examples whichever test modules run (tests/conftest.py,
``import_project_modules``).

Hypothesis mines constants from the source of every loaded local module and sometimes draws
them instead of random values; a module imported by one test (``verify.checks.planted``, say)
then changes the examples of the others.  Each probe below is a fresh interpreter that
draws 40 derandomized examples from a project strategy and prints a digest of them:

* without the conftest's eager import, importing ``verify.checks.planted`` first changes
  the digest (the hazard is real for this strategy, so the probe can see it);
* with it, the digest is the same with or without that import.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

_PROBE = """
import hashlib, sys
sys.path.insert(0, {tests!r})
from hypothesis import given, settings
eager, extra = sys.argv[1] == "eager", sys.argv[2] == "planted"
if eager:
    from conftest import import_project_modules
    import_project_modules()
if extra:
    import verify.checks.planted  # noqa: F401
from verify import strategies as mst

digest = hashlib.sha256()

@settings(max_examples=40, derandomize=True, database=None, deadline=None)
@given(mst.tabular_problems())
def probe(problem):
    for arr in (problem.mdp.P, problem.mdp.r, problem.mdp.rho, problem.pi):
        digest.update(arr.tobytes())
    digest.update(repr(problem.mdp.gamma).encode())

probe()
print(digest.hexdigest())
"""


def _digest(eager: bool, planted: bool) -> str:
    code = _PROBE.format(tests=str(TESTS))
    out = subprocess.run(
        [sys.executable, "-c", code, "eager" if eager else "lazy",
         "planted" if planted else "plain"],
        capture_output=True, text=True, check=True, timeout=300,
    )
    return out.stdout.strip()


def test_examples_do_not_depend_on_imported_modules() -> None:
    lazy = _digest(False, False), _digest(False, True)
    assert lazy[0] != lazy[1], "the probe cannot see the mined-constant hazard"
    eager = _digest(True, False), _digest(True, True)
    assert eager[0] == eager[1]
