"""Conformance check for advantage normalisation with active masks and a declared scope
(``proofs_notes/advantage-normalisation.md``), declared over the runner of
:mod:`verify.checks._core`.

Advantages ``(S, N)``: ``S`` samples (time steps of all environments, flattened) and ``N``
agents; ``active_masks`` ``(S, N)`` is 1 where the agent was alive and acting, 0 for dead or
inactive agents (MAPPO's ``active_masks``).  Within each group of the declared scope, the
active entries are standardised::

    z = (A - mean) / (std + eps),   mean, std over the group's active entries,

``std`` with ``ddof`` (0: the population std of ``np.nanstd``; 1: ``torch.std``).  Scopes:
``"per-agent"`` (one group per agent column), ``"pooled"`` (all active entries together),
``"minibatch"`` (one group per minibatch of samples, all agents pooled).  Inactive entries'
outputs are not compared: a loss masks them.
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
from verify.tolerances import EPS

__all__ = ["SCOPES", "check_advantage_normalisation", "normalise_advantages"]

SCOPES = ("per-agent", "pooled", "minibatch")
"""Where the statistics are taken: per agent, pooled over agents, per minibatch."""


def _groups(shape: tuple[int, int], scope: str, minibatch: npt.NDArray[np.int64],
            ) -> npt.NDArray[np.int64]:
    """Group id of every entry ``(S, N)`` under ``scope``."""
    n_a = shape[1]
    if scope == "per-agent":
        return np.broadcast_to(np.arange(n_a)[None, :], shape).copy()
    if scope == "pooled":
        return np.zeros(shape, dtype=np.int64)
    return np.broadcast_to(minibatch[:, None], shape).copy()


def normalise_advantages(
    advantages: FloatArray, active_masks: FloatArray, minibatch: npt.NDArray[np.int64],
    eps: float, scope: str, ddof: int = 0,
) -> FloatArray:
    """``(A - mean) / (std + eps)`` per group of ``scope``, statistics over the active entries
    (two-pass mean and variance); inactive entries are returned as 0."""
    groups = _groups(advantages.shape, scope, minibatch)
    active = active_masks > 0
    out = np.zeros_like(advantages)
    for g in np.unique(groups):
        sel = (groups == g) & active
        x = advantages[sel]
        if x.size == 0:
            continue
        mu = x.sum() / x.size
        var = ((x - mu) ** 2).sum() / max(x.size - ddof, 1)
        out[sel] = (x - mu) / (np.sqrt(var) + eps)
    return out


@dataclass(frozen=True)
class _AdvBatch:
    advantages: FloatArray
    active_masks: FloatArray
    minibatch: npt.NDArray[np.int64]
    eps: float


def _generate(rng: np.random.Generator, size: float) -> _AdvBatch:
    """``S`` in ``4..16``, ``N`` in ``1..4``; agent ``i``'s advantages have their own mean in
    ``[-5, 5]`` and scale in ``[0.2, 5]`` (so the scopes differ); a quarter of the entries
    inactive, with at least two active entries in every group of every scope; minibatches
    of at least two samples; ``eps`` ``1e-8`` or ``1e-5``."""
    n_s = 2 * ladder_count(rng, size, 8, low=2)
    n_a = ladder_count(rng, size, 4)
    mus, scales = rng.uniform(-5, 5, n_a), rng.uniform(0.2, 5, n_a)
    adv = mus[None, :] + scales[None, :] * rng.normal(size=(n_s, n_a))
    n_mb = int(rng.integers(1, n_s // 2 + 1))
    order = rng.permutation(n_s)
    minibatch = np.empty(n_s, dtype=np.int64)
    minibatch[order] = np.arange(n_s) % n_mb
    active = (rng.random((n_s, n_a)) >= 0.25).astype(np.float64)
    for scope in SCOPES:
        groups = _groups((n_s, n_a), scope, minibatch)
        for g in np.unique(groups):
            idx = np.argwhere(groups == g)
            if int(active[groups == g].sum()) < 2:
                for s, a in idx[:2]:
                    active[s, a] = 1.0
    eps = 1e-8 if rng.random() < 0.5 else 1e-5
    return _AdvBatch(adv, active, minibatch, eps)


def _to_arrays(b: _AdvBatch) -> Mapping[str, npt.NDArray[Any]]:
    return {"advantages": b.advantages, "active_masks": b.active_masks,
            "minibatch": b.minibatch, "eps": np.array(b.eps)}


def _from_arrays(a: Mapping[str, npt.NDArray[Any]]) -> _AdvBatch:
    for k in ("advantages", "active_masks", "minibatch", "eps"):
        if k not in a:
            raise ModelError(f"an advantage-normalisation case needs the array {k!r}")
    adv = np.array(a["advantages"], dtype=np.float64)
    if adv.ndim != 2 or np.shape(a["active_masks"]) != adv.shape \
            or np.shape(a["minibatch"]) != adv.shape[:1]:
        raise ModelError("advantages and active_masks (S, N) and minibatch (S,) expected")
    return _AdvBatch(adv, np.array(a["active_masks"], dtype=np.float64),
                     np.array(a["minibatch"], dtype=np.int64), float(a["eps"]))


def check_advantage_normalisation(
    fn: Callable[..., Any],
    *,
    scope: str = "per-agent",
    ddof: int = 0,
    atol: float | None = None,
    rtol: float | None = None,
    dtype: str | None = None,
    xp: Any = None,
    cases: int = 50,
    seed: int = 0,
    replay: Case | None = None,
) -> CheckReport:
    """Check advantage normalisation in its declared ``scope`` (:data:`SCOPES`) with active
    masks (``proofs_notes/advantage-normalisation.md``)::

        z = (A - mean_g) / (std_g + eps),   over the active entries of each group g.

    Called as ``fn(advantages, active_masks, eps)`` (``scope="per-agent"`` or ``"pooled"``)
    or ``fn(advantages, active_masks, minibatch, eps)`` (``scope="minibatch"``;
    ``minibatch`` ``(S,)`` int ids), arrays ``(S, N)``; returns ``z`` ``(S, N)``, of which
    only the active entries are compared.  ``ddof`` is the std's delta degrees of freedom
    (0 for ``np.std``/``np.nanstd``, 1 for ``torch.std``).  When the output matches another
    scope or ``ddof``, the diagnosis says which to declare; statistics that include the
    inactive entries are a known bug.

    Tolerance per entry: ``2 (4 n + 16) eps (max |A_g - mean_g| / std_g + |z|)`` for a group
    of ``n`` entries (two-pass statistics), for the oracle and at the judged precision for
    the callable.

    Raises:
        CheckArgumentError: an unknown ``scope``, ``ddof`` not 0 or 1, or a bad tolerance,
            ``dtype``, ``cases`` or ``seed``.
    """
    fn = guard(fn)
    if scope not in SCOPES:
        raise CheckArgumentError(f"scope = {scope!r}, expected one of {SCOPES}")
    if ddof not in (0, 1) or isinstance(ddof, bool):
        raise CheckArgumentError(f"ddof = {ddof!r}, expected 0 or 1")

    def active_entries(b: _AdvBatch, full: FloatArray) -> FloatArray:
        out: FloatArray = full[b.active_masks > 0]
        return out

    def evaluate_case(b: _AdvBatch, index: int, io: UserIO) -> list[Compared]:
        want_full = normalise_advantages(b.advantages, b.active_masks, b.minibatch, b.eps,
                                         scope, ddof)
        args = [io.arg(b.advantages), io.arg(b.active_masks)]
        if scope == "minibatch":
            args.append(io.arg(b.minibatch))
        got_full = io.out(fn(*args, b.eps))
        if got_full.shape != b.advantages.shape:
            raise CaseFailure(f"the callable returned shape {got_full.shape}, expected "
                              f"{b.advantages.shape} (S, N)")
        groups = _groups(b.advantages.shape, scope, b.minibatch)
        tol_full = np.zeros_like(want_full)
        active = b.active_masks > 0
        for g in np.unique(groups):
            sel = (groups == g) & active
            x = b.advantages[sel]
            n = x.size
            mu = x.mean()
            sd = float(np.sqrt(((x - mu) ** 2).sum() / max(n - ddof, 1))) + b.eps
            spread = float(np.max(np.abs(x - mu)) + np.max(np.abs(x))) / sd
            tol_full[sel] = 2 * (4 * n + 16) * EPS * (spread + np.abs(want_full[sel]))
        positions = np.argwhere(active)
        want, got, tol = (active_entries(b, want_full), active_entries(b, got_full),
                          active_entries(b, tol_full))

        def label(idx: tuple[int, ...]) -> str:
            s, a = positions[idx[0]]
            return f"z[s={s}, agent={a}]"

        def context(idx: tuple[int, ...]) -> str:
            s, a = positions[idx[0]]
            n_active = int(active.sum())
            return (f" (A = {b.advantages[s, a]:.4g}; scope {scope!r}, group "
                    f"{int(groups[s, a])}; {n_active} of {active.size} entries active)")

        return [Compared(got, want, tol, tol, label=label, context=context)]

    def alternatives() -> list[Alternative]:
        from verify.checks.planted import known_bugs

        def conv(sc: str, dd: int) -> Callable[[_AdvBatch], list[FloatArray]]:
            return lambda b: [active_entries(b, normalise_advantages(
                b.advantages, b.active_masks, b.minibatch, b.eps, sc, dd))]

        res = []
        for sc in SCOPES:
            for dd in (0, 1):
                if (sc, dd) == (scope, ddof):
                    continue
                decl = (f"scope={sc!r}" if sc != scope else "") + (
                    (", " if sc != scope else "") + f"ddof={dd}" if dd != ddof else "")
                if sc == "minibatch" and scope != "minibatch":
                    continue  # the callable never saw the minibatch ids
                res.append(Alternative(f"scope-{sc}-ddof-{dd}",
                                       f"statistics {sc}, ddof {dd}", conv(sc, dd),
                                       declare=decl))
        for m in known_bugs("advantage-normalisation"):
            def outputs(b: _AdvBatch, f: Any = m.fn) -> list[FloatArray]:
                return [active_entries(b, np.asarray(
                    f(b.advantages, b.active_masks, b.minibatch, b.eps, scope, ddof),
                    dtype=np.float64))]
            res.append(Alternative(m.name, m.bug, outputs))
        return res

    conventions = ([f"scope={scope!r}"] if scope != "per-agent" else []) + (
        [f"ddof={ddof}"] if ddof else [])
    decl = Declaration(
        name="advantage-normalisation",
        reference="proofs_notes/advantage-normalisation.md: z = (A - mean_g) / (std_g + eps) "
        "over the active entries of each group of the scope",
        generate=_generate,
        to_arrays=_to_arrays,
        from_arrays=_from_arrays,
        evaluate=evaluate_case,
        alternatives=alternatives,
        convention=", ".join(conventions) or None,
    )
    return run_check(decl, cases=cases, seed=seed, replay=replay, atol=atol, rtol=rtol,
                     dtype=dtype, xp=xp)
