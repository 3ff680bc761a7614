"""Conformance check for factored (multi-discrete) categorical actions: log-probability,
entropy and KL are sums over the independent sub-actions
(``proofs_notes/multi-discrete.md``), declared over the runner of
:mod:`verify.checks._core`.

The logits are concatenated per sample, ``(B, sum(nvec))``, as a ``MultiDiscrete(nvec)``
policy head outputs them (Stable-Baselines3, RLlib, MAPPO); sub-action ``k`` owns the slice
``offsets[k]:offsets[k] + nvec[k]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from reference._arrays import FloatArray
from reference.errors import ModelError
from verify.checks._core import (
    Alternative,
    Case,
    CaseFailure,
    CheckArgumentError,
    CheckReport,
    Compared,
    Declaration,
    UserIO,
    guard,
    ladder_count,
    run_check,
)
from verify.checks.ppo_loss import log_softmax
from verify.tolerances import EPS

__all__ = ["OUTPUTS", "check_multi_discrete", "multi_discrete_exact", "multi_discrete_joint"]

OUTPUTS = ("log-prob", "entropy", "kl")
"""What the callable returns, in this order: ``log pi(a)``, ``H(pi)``, ``KL(pi_old || pi)``."""


def _split(logits: FloatArray, nvec: tuple[int, ...]) -> list[FloatArray]:
    cuts = np.cumsum(nvec)[:-1]
    return list(np.split(logits, cuts, axis=-1))


def multi_discrete_exact(
    logits: FloatArray, old_logits: FloatArray, actions: npt.NDArray[np.int64],
    nvec: tuple[int, ...],
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``(log_prob, entropy, kl)``, each ``(B,)``, of the factored categorical: sums over
    sub-actions ``k`` of ``log pi_k(a_k)``, ``H(pi_k)``, ``KL(pi_old,k || pi_k)``."""
    lp_sum = np.zeros(logits.shape[0])
    ent = np.zeros(logits.shape[0])
    kl = np.zeros(logits.shape[0])
    rows = np.arange(logits.shape[0])
    for k, (new, old) in enumerate(zip(_split(logits, nvec), _split(old_logits, nvec),
                                       strict=True)):
        lp, lpo = log_softmax(new), log_softmax(old)
        lp_sum += lp[rows, actions[:, k]]
        ent -= np.sum(np.exp(lp) * lp, axis=1)
        kl += np.sum(np.exp(lpo) * (lpo - lp), axis=1)
    return lp_sum, ent, kl


def multi_discrete_joint(
    logits: FloatArray, old_logits: FloatArray, actions: npt.NDArray[np.int64],
    nvec: tuple[int, ...],
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The same three quantities from the joint distribution over the product space
    ``prod_k nvec[k]`` (the second route, ``proofs_notes/multi-discrete.md#joint``)."""
    n_b = logits.shape[0]
    out_lp, out_h, out_kl = np.zeros(n_b), np.zeros(n_b), np.zeros(n_b)
    for b in range(n_b):
        joint = np.ones(())
        joint_old = np.ones(())
        for new, old in zip(_split(logits[b:b + 1], nvec), _split(old_logits[b:b + 1], nvec),
                            strict=True):
            joint = np.multiply.outer(joint, np.exp(log_softmax(new[0])))
            joint_old = np.multiply.outer(joint_old, np.exp(log_softmax(old[0])))
        out_lp[b] = np.log(joint[tuple(actions[b])])
        pos = joint > 0
        out_h[b] = -np.sum(joint[pos] * np.log(joint[pos]))
        pos_old = joint_old > 0
        out_kl[b] = np.sum(joint_old[pos_old] * (np.log(joint_old[pos_old])
                                                 - np.log(joint[pos_old])))
    return out_lp, out_h, out_kl


@dataclass(frozen=True)
class _MD:
    logits: FloatArray
    old_logits: FloatArray
    actions: npt.NDArray[np.int64]
    nvec: tuple[int, ...]


def _generate(rng: np.random.Generator, size: float) -> _MD:
    """``B`` in ``1..6``, ``K`` in ``1..4`` sub-actions of ``2..5`` choices each, logits in
    ``[-4, 4]``, old logits the new ones plus noise of scale 0.5 (one batch in five
    identical), actions uniform."""
    n_b = ladder_count(rng, size, 6)
    n_k = ladder_count(rng, size, 4)
    nvec = tuple(int(rng.integers(2, 6)) for _ in range(n_k))
    width = sum(nvec)
    logits = rng.uniform(-4, 4, (n_b, width))
    old = logits if rng.random() < 0.2 else logits + rng.normal(0, 0.5, (n_b, width))
    actions = np.stack([rng.integers(0, n, n_b) for n in nvec], axis=1)
    return _MD(logits, np.array(old), actions, nvec)


def _to_arrays(c: _MD) -> Mapping[str, npt.NDArray[Any]]:
    return {"logits": c.logits, "old_logits": c.old_logits, "actions": c.actions,
            "nvec": np.array(c.nvec, dtype=np.int64)}


def _from_arrays(a: Mapping[str, npt.NDArray[Any]]) -> _MD:
    for k in ("logits", "old_logits", "actions", "nvec"):
        if k not in a:
            raise ModelError(f"a multi-discrete case needs the array {k!r}, which is missing")
    nvec = tuple(int(x) for x in np.asarray(a["nvec"]).reshape(-1))
    logits = np.array(a["logits"], dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] != sum(nvec) \
            or np.shape(a["actions"]) != (logits.shape[0], len(nvec)):
        raise ModelError("multi-discrete case: logits (B, sum(nvec)) and actions (B, K)")
    return _MD(logits, np.array(a["old_logits"], dtype=np.float64),
               np.array(a["actions"], dtype=np.int64), nvec)


def check_multi_discrete(
    fn: Callable[..., Any],
    *,
    outputs: tuple[str, ...] = OUTPUTS,
    atol: float | None = None,
    rtol: float | None = None,
    dtype: str | None = None,
    xp: Any = None,
    cases: int = 50,
    seed: int = 0,
    replay: Case | None = None,
) -> CheckReport:
    """Check the log-probability, entropy and KL of a factored categorical
    (``MultiDiscrete``) policy (``proofs_notes/multi-discrete.md``)::

        log pi(a) = sum_k log pi_k(a_k),   H(pi) = sum_k H(pi_k),
        KL(pi_old || pi) = sum_k KL(pi_old,k || pi_k),   pi_k = softmax(logits slice k).

    Called as ``fn(logits, old_logits, actions, nvec)``: ``logits`` and ``old_logits``
    ``(B, sum(nvec))``, ``actions`` ``(B, K)`` int, ``nvec`` a tuple of ``K`` ints; returns
    the declared ``outputs`` (:data:`OUTPUTS`, in that order; one array when one is
    declared), each ``(B,)``.

    Tolerance per entry: ``2 (n + 8) eps`` times ``(|logit range| + log n + 1)`` summed over
    the sub-actions, ``n`` the widest sub-action, for the oracle and at the judged precision
    for the callable.

    Raises:
        CheckArgumentError: unknown or empty ``outputs``, or a bad tolerance, ``dtype``,
            ``cases`` or ``seed``.
    """
    fn = guard(fn)
    outputs = tuple(outputs)
    if not outputs or any(o not in OUTPUTS for o in outputs) or len(set(outputs)) != len(
            outputs):
        raise CheckArgumentError(f"outputs = {outputs!r}, expected distinct names from "
                                 f"{OUTPUTS}")
    picked = [OUTPUTS.index(o) for o in outputs]

    def tolerance(c: _MD) -> FloatArray:
        total = np.zeros(c.logits.shape[0])
        for new, old in zip(_split(c.logits, c.nvec), _split(c.old_logits, c.nvec),
                            strict=True):
            n = new.shape[1]
            total += (n + 8) * (np.ptp(new, axis=1) + np.ptp(old, axis=1) + np.log(n) + 1)
        out: FloatArray = 2 * EPS * (total + len(c.nvec))
        return out

    def evaluate_case(c: _MD, index: int, io: UserIO) -> list[Compared]:
        want = multi_discrete_exact(c.logits, c.old_logits, c.actions, c.nvec)
        raw = fn(io.arg(c.logits), io.arg(c.old_logits), io.arg(c.actions), c.nvec)
        if len(outputs) == 1:
            raw = (raw,)
        if not isinstance(raw, (tuple, list)) or len(raw) != len(outputs):
            raise CaseFailure(f"the callable must return {len(outputs)} arrays "
                              f"({', '.join(outputs)})")
        tol = tolerance(c)
        res = []
        for name, pos, got in zip(outputs, picked, raw, strict=True):
            arr = io.out(got, name)
            if arr.shape != want[pos].shape:
                raise CaseFailure(f"{name} has shape {arr.shape}, expected "
                                  f"{want[pos].shape} (one value per sample, summed over "
                                  "the sub-actions)")
            res.append(Compared(arr, want[pos], tol, tol, label=_label(name),
                                context=_context(c)))
        return res

    def alternatives() -> list[Alternative]:
        from verify.checks.planted import known_bugs

        res = []
        for m in known_bugs("multi-discrete"):
            def outs(c: _MD, f: Any = m.fn) -> list[FloatArray]:
                full = f(c.logits, c.old_logits, c.actions, c.nvec)
                return [np.asarray(full[p], dtype=np.float64) for p in picked]
            res.append(Alternative(m.name, m.bug, outs))
        return res

    decl = Declaration(
        name="multi-discrete",
        reference="proofs_notes/multi-discrete.md: log pi(a) = sum_k log pi_k(a_k), "
        "H = sum_k H_k, KL = sum_k KL_k",
        generate=_generate,
        to_arrays=_to_arrays,
        from_arrays=_from_arrays,
        evaluate=evaluate_case,
        alternatives=alternatives,
        convention=None if outputs == OUTPUTS else f"outputs={outputs!r}",
    )
    return run_check(decl, cases=cases, seed=seed, replay=replay, atol=atol, rtol=rtol,
                     dtype=dtype, xp=xp)


def _label(name: str) -> Callable[[tuple[int, ...]], str]:
    return lambda idx: f"{name}[b={idx[0]}]"


def _context(c: _MD) -> Callable[[tuple[int, ...]], str]:
    return lambda idx: (f" (nvec={c.nvec}, action {tuple(int(x) for x in c.actions[idx[0]])})")
