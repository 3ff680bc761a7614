"""A metamorphic check of how a routine batches (time, environment, agent) data
(``proofs_notes/layout.md``), declared over the runner of :mod:`verify.checks._core`.

Code that feeds several agents and environments through one network or one scan reshapes
``(T, E, N, ...)`` arrays into batches and back.  A reshape that interleaves agents and
environments inconsistently (batchify agent-major, unbatchify environment-major) or a scan
over a flattened ``(T E)`` axis mixes data of different agents or environments silently:
every shape is right.  Whatever the routine computes per (environment, agent) sequence, two
relations must hold, and they need no oracle:

* **equivariance** -- permuting the environments (or the agents) of the input permutes the
  output the same way;
* **locality** -- changing the input of one (environment, agent) pair changes no other
  pair's output.
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

__all__ = ["AXES", "check_batching"]

AXES = ("TEN", "TNE", "ETN", "NTE", "ENT", "NET")
"""The order of the time (T), environment (E) and agent (N) axes of the routine's input and
output."""


@dataclass(frozen=True)
class _Batch:
    x: FloatArray
    """``(T, E, N, F)``, canonical order."""
    env_perm: npt.NDArray[np.int64]
    agent_perm: npt.NDArray[np.int64]
    site: tuple[int, int]
    delta: FloatArray
    """``(T, F)``: added to the input of the pair ``site``."""


def _generate(rng: np.random.Generator, size: float) -> _Batch:
    """``T`` in ``1..6``, ``E`` and ``N`` in ``1..4``, ``F`` in ``1..3`` features in
    ``[-1, 1]``; random permutations of the environments and agents; a random pair and a
    perturbation in ``[0.5, 1.5]`` of either sign."""
    t = ladder_count(rng, size, 6)
    e = ladder_count(rng, size, 4, low=2 if size >= 0.5 else 1)
    n = ladder_count(rng, size, 4, low=2 if size >= 0.5 else 1)
    f = ladder_count(rng, size, 3)
    x = rng.uniform(-1, 1, (t, e, n, f))
    delta = rng.uniform(0.5, 1.5, (t, f)) * rng.choice([-1.0, 1.0], (t, f))
    return _Batch(x, rng.permutation(e), rng.permutation(n),
                  (int(rng.integers(e)), int(rng.integers(n))), delta)


def _to_arrays(b: _Batch) -> Mapping[str, npt.NDArray[Any]]:
    return {"x": b.x, "env_perm": b.env_perm, "agent_perm": b.agent_perm,
            "site": np.array(b.site, dtype=np.int64), "delta": b.delta}


def _from_arrays(a: Mapping[str, npt.NDArray[Any]]) -> _Batch:
    for k in ("x", "env_perm", "agent_perm", "site", "delta"):
        if k not in a:
            raise ModelError(f"a batching case needs the array {k!r}, which is missing")
    x = np.array(a["x"], dtype=np.float64)
    if x.ndim != 4:
        raise ModelError(f"x has shape {x.shape}, expected (T, E, N, F)")
    site = np.asarray(a["site"]).reshape(-1)
    return _Batch(x, np.array(a["env_perm"], dtype=np.int64),
                  np.array(a["agent_perm"], dtype=np.int64), (int(site[0]), int(site[1])),
                  np.array(a["delta"], dtype=np.float64))


def check_batching(
    fn: Callable[..., Any],
    *,
    axes: str = "TEN",
    atol: float | None = None,
    rtol: float | None = None,
    dtype: str | None = None,
    xp: Any = None,
    cases: int = 50,
    seed: int = 0,
    replay: Case | None = None,
) -> CheckReport:
    """Check that a routine treats every (environment, agent) sequence separately, by two
    metamorphic relations (``proofs_notes/layout.md``): permuting environments or agents
    permutes the output, and perturbing one pair's input changes only that pair's output.

    Called as ``fn(x)`` with ``x`` of shape ``(T, E, N, F)`` (axes in the order ``axes``,
    :data:`AXES`, then ``F`` features); returns an array whose first three axes are the
    same ``T, E, N`` in the same order (any trailing axes are compared too).  The routine
    may do anything along time within one sequence (a scan, a GAE, an RNN) and anything
    per entry (a shared network); it must not mix sequences.

    Each case compares ``fn(permuted x)`` with the permuted ``fn(x)`` for environments and
    agents, and ``fn(x + delta at one pair)`` with ``fn(x)`` at every other pair.  The
    same computation on the same numbers may round differently in a batch of another
    order, so the tolerance is ``64 eps`` times the output's largest magnitude (at the
    judged precision), or ``atol``.

    Raises:
        CheckArgumentError: an unknown ``axes``, or a bad tolerance, ``dtype``, ``cases`` or
            ``seed``.
    """
    fn = guard(fn)
    if axes not in AXES:
        raise CheckArgumentError(f"axes = {axes!r}, expected one of {AXES}")
    order = ["TEN".index(c) for c in axes]
    back = [axes.index(c) for c in "TEN"]

    def run(io: UserIO, x: FloatArray) -> FloatArray:
        arg = io.arg(np.transpose(x, (*order, 3)))
        out = io.out(fn(arg))
        want = tuple(x.shape[i] for i in order)
        if out.shape[:3] != want:
            raise CaseFailure(f"the callable returned shape {out.shape}, expected "
                              f"{want} + trailing axes (axes {axes!r})")
        out = np.transpose(out, (*back, *range(3, out.ndim)))
        return out

    def evaluate_case(b: _Batch, index: int, io: UserIO) -> list[Compared]:
        base = run(io, b.x)
        scale = float(np.max(np.abs(base), initial=0.0)) + float(np.finfo(np.float64).tiny)
        tol = 64 * EPS * scale
        by_env = run(io, b.x[:, b.env_perm])
        by_agent = run(io, b.x[:, :, b.agent_perm])
        bumped = b.x.copy()
        bumped[:, b.site[0], b.site[1]] += b.delta
        moved = run(io, bumped)
        others = np.ones(base.shape[1:3], dtype=bool)
        others[b.site] = False
        pairs = np.argwhere(others)
        t_len = base.shape[0]

        def at(arr: FloatArray) -> FloatArray:
            out: FloatArray = arr[:, others].reshape(t_len, len(pairs), -1)
            return out

        def rest(idx: tuple[int, ...]) -> str:
            return "" if len(idx) <= 3 else ", " + ", ".join(str(i) for i in idx[3:])

        shape = f"T={b.x.shape[0]}, E={b.x.shape[1]}, N={b.x.shape[2]}"
        local = [] if len(pairs) == 0 else [
            Compared(at(moved), at(base), 0.0, tol,
                     label=lambda idx: (f"out[t={idx[0]}, e={int(pairs[idx[1]][0])}, "
                                        f"n={int(pairs[idx[1]][1])}] after changing only "
                                        f"the input of e={b.site[0]}, n={b.site[1]}"),
                     context=lambda idx: f" (a pair's output moved: sequences mix; {shape})")]
        return [
            Compared(by_env, base[:, b.env_perm], 0.0, tol,
                     label=lambda idx: f"out[t={idx[0]}, e={idx[1]}, n={idx[2]}{rest(idx)}]"
                     " with environments permuted",
                     context=lambda idx: (f" (that environment was {int(b.env_perm[idx[1]])}"
                                          f" before the permutation {b.env_perm.tolist()}; "
                                          f"{shape})")),
            Compared(by_agent, base[:, :, b.agent_perm], 0.0, tol,
                     label=lambda idx: f"out[t={idx[0]}, e={idx[1]}, n={idx[2]}{rest(idx)}]"
                     " with agents permuted",
                     context=lambda idx: (f" (that agent was {int(b.agent_perm[idx[2]])} "
                                          f"before the permutation {b.agent_perm.tolist()}; "
                                          f"{shape})")),
            *local,
        ]

    decl = Declaration(
        name="batching",
        reference="proofs_notes/layout.md: permuting environments or agents permutes the "
        "output; perturbing one (environment, agent) pair changes no other pair",
        generate=_generate,
        to_arrays=_to_arrays,
        from_arrays=_from_arrays,
        evaluate=evaluate_case,
        convention=None if axes == "TEN" else f"axes={axes!r}",
    )
    return run_check(decl, cases=cases, seed=seed, replay=replay, atol=atol, rtol=rtol,
                     dtype=dtype, xp=xp)
