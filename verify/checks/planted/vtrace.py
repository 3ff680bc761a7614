"""Planted bugs and correct implementations for the V-trace check (``check_vtrace`` in
``verify/checks/returns.py``).

Plain numpy, written as a user writes V-trace from the IMPALA paper, in the reference
signature ``fn(log_rhos, discounts, rewards, values, bootstrap_value, rho_bar, c_bar)``
(time-major ``(T, B)``) returning ``(vs, pg_advantages)``; the canonical form the diagnosis
uses appends ``lam``.  Each wrong one models a reported bug, cited in its docstring.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from reference._arrays import FloatArray
from verify.checks._core import KnownBug, Mutant
from verify.checks.returns import check_vtrace

__all__ = ["CORRECT", "DIAGNOSABLE", "MUTANTS"]

_CASES = 30


def _scan(
    log_rhos: FloatArray, discounts: FloatArray, rewards: FloatArray, values: FloatArray,
    bootstrap_value: FloatArray, rho_bar: float, c_bar: float, lam: float = 1.0, *,
    rho_sign: float = 1.0, clip_c: bool = True, pg_next: str = "vs", clip_pg: bool = True,
) -> tuple[FloatArray, FloatArray]:
    """A backward scan of ``vs - V`` (the IMPALA reference's form); the keywords plant the
    bugs."""
    rhos = np.exp(rho_sign * log_rhos)
    clipped_rhos = np.minimum(rho_bar, rhos)
    cs = lam * (np.minimum(c_bar, rhos) if clip_c else rhos)
    values_tp1 = np.concatenate([values[1:], bootstrap_value[None]], axis=0)
    deltas = clipped_rhos * (rewards + discounts * values_tp1 - values)
    acc = np.zeros_like(bootstrap_value)
    diffs = np.zeros_like(values)
    for t in reversed(range(values.shape[0])):
        acc = deltas[t] + discounts[t] * cs[t] * acc
        diffs[t] = acc
    vs = values + diffs
    vs_tp1 = np.concatenate([vs[1:], bootstrap_value[None]], axis=0)
    nxt = vs_tp1 if pg_next == "vs" else values_tp1
    pg_rhos = clipped_rhos if clip_pg else rhos
    return vs, pg_rhos * (rewards + discounts * nxt - values)


def vtrace_scan(
    log_rhos: FloatArray, discounts: FloatArray, rewards: FloatArray, values: FloatArray,
    bootstrap_value: FloatArray, rho_bar: float, c_bar: float,
) -> tuple[FloatArray, FloatArray]:
    """Correct: the backward scan over time."""
    return _scan(log_rhos, discounts, rewards, values, bootstrap_value, rho_bar, c_bar)


def vtrace_float32(
    log_rhos: FloatArray, discounts: FloatArray, rewards: FloatArray, values: FloatArray,
    bootstrap_value: FloatArray, rho_bar: float, c_bar: float,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Correct: the same scan in float32, as a float32 learner computes it."""
    f = np.float32
    vs, pg = _scan(log_rhos.astype(f), discounts.astype(f), rewards.astype(f),
                   values.astype(f), bootstrap_value.astype(f), rho_bar, c_bar, 1.0)
    return vs.astype(f), pg.astype(f)


def vtrace_lambda_loops(
    log_rhos: FloatArray, discounts: FloatArray, rewards: FloatArray, values: FloatArray,
    bootstrap_value: FloatArray, rho_bar: float, c_bar: float, lam: float,
) -> tuple[FloatArray, FloatArray]:
    """Correct (with ``lam``): eq. 1 written out with Python loops per environment."""
    n_steps, n_envs = values.shape
    vs = np.zeros_like(values)
    pg = np.zeros_like(values)
    for b in range(n_envs):
        nxt_v = [*values[1:, b], bootstrap_value[b]]
        for s in range(n_steps):
            total, weight = float(values[s, b]), 1.0
            for t in range(s, n_steps):
                ratio = float(np.exp(log_rhos[t, b]))
                rho = min(rho_bar, ratio)
                total += weight * rho * (rewards[t, b] + discounts[t, b] * nxt_v[t]
                                         - values[t, b])
                weight *= discounts[t, b] * lam * min(c_bar, ratio)
            vs[s, b] = total
        for s in range(n_steps):
            v_next = vs[s + 1, b] if s + 1 < n_steps else bootstrap_value[b]
            rho = min(rho_bar, float(np.exp(log_rhos[s, b])))
            pg[s, b] = rho * (rewards[s, b] + discounts[s, b] * v_next - values[s, b])
    return vs, pg


def vtrace_log_rhos_sign(
    log_rhos: FloatArray, discounts: FloatArray, rewards: FloatArray, values: FloatArray,
    bootstrap_value: FloatArray, rho_bar: float, c_bar: float, lam: float = 1.0,
) -> tuple[FloatArray, FloatArray]:
    """Bug (provenance: ray-project/ray PR #4338, which fixed RLlib's V-trace ``log_rhos``
    computed as behaviour minus target log-probabilities): the ratio is ``mu / pi``
    (behaviour and target log-probabilities subtracted the wrong way)."""
    return _scan(log_rhos, discounts, rewards, values, bootstrap_value, rho_bar, c_bar, lam,
                 rho_sign=-1.0)


def vtrace_c_not_clipped(
    log_rhos: FloatArray, discounts: FloatArray, rewards: FloatArray, values: FloatArray,
    bootstrap_value: FloatArray, rho_bar: float, c_bar: float, lam: float = 1.0,
) -> tuple[FloatArray, FloatArray]:
    """Bug (provenance: PufferAI/PufferLib PR #598 fixed a slip in the importance weighting
    of its V-trace kernels, a missing pair of parentheses; this is another slip in the same
    weights, not that one): the trace coefficients ``c_i`` are the raw ratios, not
    ``min(c_bar, .)``."""
    return _scan(log_rhos, discounts, rewards, values, bootstrap_value, rho_bar, c_bar, lam,
                 clip_c=False)


def vtrace_pg_next_value(
    log_rhos: FloatArray, discounts: FloatArray, rewards: FloatArray, values: FloatArray,
    bootstrap_value: FloatArray, rho_bar: float, c_bar: float, lam: float = 1.0,
) -> tuple[FloatArray, FloatArray]:
    """Bug (provenance: pytorch/rl issue #4209, a V-trace advantage whose ``v_{s+1}`` came
    from the wrong place, there the next trajectory's target at an in-batch truncation; the
    planted form takes the other wrong source): the policy-gradient advantage bootstraps
    through ``V(x_{s+1})`` instead of the V-trace target ``v_{s+1}``."""
    return _scan(log_rhos, discounts, rewards, values, bootstrap_value, rho_bar, c_bar, lam,
                 pg_next="values")


def vtrace_pg_unclipped_rho(
    log_rhos: FloatArray, discounts: FloatArray, rewards: FloatArray, values: FloatArray,
    bootstrap_value: FloatArray, rho_bar: float, c_bar: float, lam: float = 1.0,
) -> tuple[FloatArray, FloatArray]:
    """Bug (provenance: PufferAI/PufferLib issue #306, which notes that with very large clip
    thresholds the raw importance ratio weights the advantage, and the surrogate again): the
    policy-gradient advantage is weighted by the raw ratio."""
    return _scan(log_rhos, discounts, rewards, values, bootstrap_value, rho_bar, c_bar, lam,
                 clip_pg=False)


MUTANTS = (
    Mutant("vtrace-log-rhos-sign", "the ratio is mu/pi: log_rhos with the wrong sign "
           "(ray PR #4338)", "vtrace", lambda: check_vtrace(vtrace_log_rhos_sign,
                                                            cases=_CASES)),
    Mutant("vtrace-c-not-clipped", "trace coefficients c_i are the raw ratios "
           "(cf. PufferLib PR #598)", "vtrace", lambda: check_vtrace(vtrace_c_not_clipped,
                                                                cases=_CASES)),
    Mutant("vtrace-pg-next-value", "the pg advantage bootstraps through V(x_{s+1}), not "
           "v_{s+1} (pytorch/rl #4209)", "vtrace",
           lambda: check_vtrace(vtrace_pg_next_value, cases=_CASES)),
    Mutant("vtrace-pg-unclipped-rho", "the pg advantage uses the unclipped ratio "
           "(PufferLib #306)", "vtrace", lambda: check_vtrace(vtrace_pg_unclipped_rho,
                                                              cases=_CASES)),
)
"""Wrong implementations, each with the check that must catch it."""

CORRECT = (
    Mutant("vtrace-scan", "correct implementation: backward scan of vs - V",
           "vtrace", lambda: check_vtrace(vtrace_scan, cases=_CASES)),
    Mutant("vtrace-float32", "correct implementation: the scan in float32",
           "vtrace", lambda: check_vtrace(vtrace_float32, cases=_CASES)),
    Mutant("vtrace-lambda-loops", "correct implementation: eq. 1 with lam, Python loops",
           "vtrace", lambda: check_vtrace(vtrace_lambda_loops, lam=0.9,
                                          cases=_CASES)),
)
"""Correct implementations, which the check must pass."""

DIAGNOSABLE = (
    KnownBug("vtrace-log-rhos-sign", "the ratio is mu/pi", vtrace_log_rhos_sign),
    KnownBug("vtrace-c-not-clipped", "c_i not clipped at c_bar", vtrace_c_not_clipped),
    KnownBug("vtrace-pg-next-value", "the pg advantage uses V(x_{s+1})",
             vtrace_pg_next_value),
    KnownBug("vtrace-pg-unclipped-rho", "the pg advantage uses the raw ratio",
             vtrace_pg_unclipped_rho),
)
"""The planted bugs in the check's canonical signature, which its diagnosis tries."""
