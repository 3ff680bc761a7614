"""Planted bugs and correct implementations for the batching check
(``verify/checks/layout.py``).

Each routine takes ``x`` ``(T, E, N, F)`` and returns ``(T, E, N)``: a shared network applied
to every (time, environment, agent) entry and a discounted reverse scan along time, as an
actor-critic pipeline batches them.  Each wrong one models a reported bug, cited in its
docstring.
"""

from __future__ import annotations

import numpy as np

from reference._arrays import FloatArray
from verify.checks._core import Mutant
from verify.checks.layout import check_batching

__all__ = ["CORRECT", "DIAGNOSABLE", "MUTANTS"]

_CASES = 20
_W = np.linspace(-1.0, 1.0, 3)


def _network(rows: FloatArray) -> FloatArray:
    """A fixed shared "network" applied row by row: ``tanh(rows @ w)``, ``w`` the first
    ``F`` entries of a fixed vector."""
    out: FloatArray = np.tanh(rows @ _W[: rows.shape[-1]] + 0.1)
    return out


def _scan(v: FloatArray, gamma: float = 0.9) -> FloatArray:
    """Discounted reverse cumulative sum along axis 0."""
    out = np.zeros_like(v)
    run = np.zeros(v.shape[1:])
    for t in reversed(range(v.shape[0])):
        run = v[t] + gamma * run
        out[t] = run
    return out


def batched_env_major(x: FloatArray) -> FloatArray:
    """Correct: flatten ``(E, N)`` into one batch axis, apply the network, reshape back the
    same way, scan along time."""
    t, e, n, f = x.shape
    values = _network(x.reshape(t, e * n, f)).reshape(t, e, n)
    return _scan(values)


def batched_agent_major(x: FloatArray) -> FloatArray:
    """Correct: batchify agent-major (JaxMARL's ``batchify`` stacks agents first) and
    unbatchify with the inverse transpose."""
    t, e, n, f = x.shape
    rows = x.transpose(0, 2, 1, 3).reshape(t, n * e, f)
    values = _network(rows).reshape(t, n, e).transpose(0, 2, 1)
    return _scan(values)


def unbatchify_wrong_order(x: FloatArray) -> FloatArray:
    """Bug (provenance: JaxMARL issue #169, github.com/bold-lab-ai/JaxMARL, formerly
    FLAIROx/JaxMARL: the MAPPO critic's inputs were stacked environment-major while the done
    mask used ``batchify``'s agent-major order): rows are stacked agent-major but unstacked
    environment-major, so agents and environments are interleaved."""
    t, e, n, f = x.shape
    rows = x.transpose(0, 2, 1, 3).reshape(t, n * e, f)
    values = _network(rows).reshape(t, e, n)
    return _scan(values)


def scan_over_flattened_time_env(x: FloatArray) -> FloatArray:
    """Bug (provenance: instadeepai/Mava PR #846, which fixed a trainer that shuffled over
    the batch and sequence axes together and so broke its bootstrapped value estimates; here
    the axes are merged before a scan): the scan runs along a flattened ``(T E)`` axis, so
    one environment's returns flow into another's."""
    t, e, n, f = x.shape
    values = _network(x.reshape(t * e, n, f))
    return _scan(values).reshape(t, e, n)


MUTANTS = (
    Mutant("layout-unbatchify-wrong-order", "agent-major batchify, environment-major "
           "unbatchify (JaxMARL #169)", "batching",
           lambda: check_batching(unbatchify_wrong_order, cases=_CASES)),
    Mutant("layout-scan-over-flattened-time-env", "a scan along the flattened (T E) axis "
           "(cf. Mava PR #846)", "batching",
           lambda: check_batching(scan_over_flattened_time_env, cases=_CASES)),
)
"""Wrong implementations, each with the check that must catch it."""

CORRECT = (
    Mutant("layout-env-major", "correct implementation: environment-major batch and back",
           "batching", lambda: check_batching(batched_env_major, cases=_CASES)),
    Mutant("layout-agent-major", "correct implementation: agent-major batch, inverse "
           "transpose", "batching", lambda: check_batching(batched_agent_major, cases=_CASES)),
)
"""Correct implementations, which the check must pass."""

DIAGNOSABLE = ()
"""The batching check is metamorphic: it has no oracle output to diagnose against."""
