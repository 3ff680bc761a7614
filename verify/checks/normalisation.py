"""Conformance checks for value normalisation and PopArt
(``proofs_notes/value-normalisation.md``), declared over the runner of
:mod:`verify.checks._core`.

* :func:`check_value_normalisation` -- given a value normaliser's statistics ``(m, sd)`` and
  the critic's normalised outputs ``u``, the advantages and value targets a PPO update must
  produce: GAE from the denormalised values ``V = m + sd u``, and targets ``(G - m) / sd``
  with ``G = A + V``.
* :func:`check_popart` -- PopArt's output-preserving update of the last layer: after the
  statistics move from ``(m, sd)`` to ``(m', sd')``, the weights and bias become
  ``W sd / sd'`` and ``(sd b + m - m') / sd'``, so ``m' + sd' (W' phi + b') = m + sd (W phi +
  b)`` for every feature vector ``phi`` (checked on generated features as a second route).
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
    CheckReport,
    Compared,
    Declaration,
    UserIO,
    guard,
    ladder_count,
    run_check,
)
from verify.checks.gae import (
    _from_arrays,
    _generate,
    _Rollout,
    _step_kind,
    _to_arrays,
    gae_recursion,
    gae_rounding,
)
from verify.tolerances import EPS

__all__ = ["check_popart", "check_value_normalisation", "normalised_targets",
           "popart_update"]


def normalised_targets(
    rewards: FloatArray, norm_values: FloatArray, norm_next_values: FloatArray,
    terminated: npt.NDArray[np.bool_], truncated: npt.NDArray[np.bool_], mean: float,
    std: float, gamma: float, lam: float,
) -> tuple[FloatArray, FloatArray]:
    """``(A, targets)``: GAE of the denormalised values ``V = mean + std u`` (arrays
    ``(B, T)``, flags as :func:`verify.checks.gae.gae_recursion`) and the normalised
    lambda-returns ``(A + V - mean) / std``."""
    v = mean + std * norm_values
    nv = mean + std * norm_next_values
    adv = gae_recursion(rewards, v, nv, terminated, truncated, gamma, lam)
    out: FloatArray = (adv + v - mean) / std
    return adv, out


@dataclass(frozen=True)
class _Normed:
    rollout: _Rollout
    mean: float
    std: float


def _normed_generate(rng: np.random.Generator, size: float) -> _Normed:
    """A GAE rollout (:func:`verify.checks.gae._generate`) whose values are read as the
    critic's normalised outputs ``u = (V - m) / sd``, with ``m`` in ``[-20, 20]`` and ``sd``
    in ``[0.5, 20]``: the values are rescaled to ``[-2.5, 2.5]`` so ``V = m + sd u`` is of
    the returns' size."""
    ro = _generate(rng, size, None, None)
    scale = 2.5 / 50.0
    ro = _Rollout(ro.rewards, ro.values * scale, ro.next_values * scale, ro.terminated,
                  ro.truncated, ro.gamma, ro.lam,
                  None if ro.last_values is None else ro.last_values * scale, ro.first_flags)
    return _Normed(ro, float(rng.uniform(-20, 20)), float(rng.uniform(0.5, 20.0)))


def _normed_to_arrays(c: _Normed) -> Mapping[str, npt.NDArray[Any]]:
    return {**_to_arrays(c.rollout), "mean": np.array(c.mean), "std": np.array(c.std)}


def _normed_from_arrays(a: Mapping[str, npt.NDArray[Any]]) -> _Normed:
    if "mean" not in a or "std" not in a:
        raise ModelError("a value-normalisation case needs the arrays 'mean' and 'std'")
    return _Normed(_from_arrays(a), float(a["mean"]), float(a["std"]))


def check_value_normalisation(
    fn: Callable[..., Any],
    *,
    atol: float | None = None,
    rtol: float | None = None,
    dtype: str | None = None,
    xp: Any = None,
    cases: int = 50,
    seed: int = 0,
    replay: Case | None = None,
) -> CheckReport:
    """Check the advantages and value targets of a PPO update with a value normaliser
    (``proofs_notes/value-normalisation.md``)::

        V = m + sd u,  V' = m + sd u'             (denormalise the critic's outputs)
        A = GAE(r, V, V', terminated, truncated)   (``verify.checks.gae.gae_recursion``)
        target = (A + V - m) / sd                  (normalise the lambda-return)

    The callable is called as ``fn(rewards, norm_values, norm_next_values, terminated,
    truncated, mean, std, gamma, lam)``, arrays ``(B, T)`` as in :func:`check_gae`, ``mean``
    and ``std`` the normaliser's current statistics (Python floats), and returns
    ``(advantages, targets)``, both ``(B, T)``.

    Tolerance: :func:`verify.checks.gae.gae_rounding` on the denormalised values, plus 4
    roundings of the denormalisation at the scale ``|m| + sd |u|``, for ``A``; the same over
    ``sd`` plus two roundings at ``|target|`` for the targets; for the oracle and at the
    judged precision for the callable.
    """
    fn = guard(fn)

    def evaluate_case(c: _Normed, index: int, io: UserIO) -> list[Compared]:
        ro = c.rollout
        adv, tgt = normalised_targets(ro.rewards, ro.values, ro.next_values, ro.terminated,
                                      ro.truncated, c.mean, c.std, ro.gamma, ro.lam)
        v = c.mean + c.std * ro.values
        nv = c.mean + c.std * ro.next_values
        denorm = abs(c.mean) + c.std * float(np.max(np.abs(ro.values) + np.abs(
            ro.next_values), initial=0.0))
        n_steps = ro.rewards.shape[1]
        t_adv = gae_rounding(ro.rewards, v, nv, ro.terminated, ro.gamma) + (
            4 * (n_steps + 1) * EPS * denorm)
        t_tgt = (t_adv + 2 * EPS * float(np.max(np.abs(adv) + np.abs(v), initial=0.0))
                 + EPS * abs(c.mean)) / c.std + 2 * EPS * np.abs(tgt)
        args = [io.arg(x) for x in (ro.rewards, ro.values, ro.next_values, ro.terminated,
                                    ro.truncated)]
        out = fn(*args, c.mean, c.std, ro.gamma, ro.lam)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise CaseFailure("the callable must return (advantages, targets)")
        got = [io.out(out[0], "advantages"), io.out(out[1], "targets")]

        def context(idx: tuple[int, ...]) -> str:
            return (f" (mean={c.mean:.4g}, std={c.std:.4g}; "
                    f"{_step_kind(ro, idx[0], idx[1])})")

        return [
            Compared(got[0], adv, t_adv, t_adv,
                     label=lambda idx: f"A[b={idx[0]}, t={idx[1]}]", context=context),
            Compared(got[1], tgt, t_tgt, t_tgt,
                     label=lambda idx: f"target[b={idx[0]}, t={idx[1]}]", context=context),
        ]

    def alternatives() -> list[Alternative]:
        from verify.checks.planted import known_bugs

        res = []
        for m in known_bugs("value-normalisation"):
            def outputs(c: _Normed, f: Any = m.fn) -> list[FloatArray]:
                ro = c.rollout
                a, t = f(ro.rewards, ro.values, ro.next_values, ro.terminated, ro.truncated,
                         c.mean, c.std, ro.gamma, ro.lam)
                return [np.asarray(a), np.asarray(t)]
            res.append(Alternative(m.name, m.bug, outputs))
        return res

    decl = Declaration(
        name="value-normalisation",
        reference="proofs_notes/value-normalisation.md: A = GAE(r, m + sd u, m + sd u'), "
        "target = (A + m + sd u - m) / sd",
        generate=_normed_generate,
        to_arrays=_normed_to_arrays,
        from_arrays=_normed_from_arrays,
        evaluate=evaluate_case,
        alternatives=alternatives,
    )
    return run_check(decl, cases=cases, seed=seed, replay=replay, atol=atol, rtol=rtol,
                     dtype=dtype, xp=xp)


# --------------------------------------------------------------------------- PopArt


def popart_update(
    weights: FloatArray, bias: FloatArray, old_mean: FloatArray, old_std: FloatArray,
    new_mean: FloatArray, new_std: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """PopArt's output-preserving rescaling (van Hasselt et al. 2016, Algorithm 1):
    ``W' = W sd / sd'`` column by column, ``b' = (sd b + m - m') / sd'``.  ``weights``
    ``(H, K)``, the rest ``(K,)``."""
    w: FloatArray = weights * (old_std / new_std)[None, :]
    b: FloatArray = (old_std * bias + old_mean - new_mean) / new_std
    return w, b


@dataclass(frozen=True)
class _PopArt:
    weights: FloatArray
    bias: FloatArray
    old_mean: FloatArray
    old_std: FloatArray
    new_mean: FloatArray
    new_std: FloatArray
    features: FloatArray


def _popart_generate(rng: np.random.Generator, size: float) -> _PopArt:
    """``H`` in ``1..8`` features, ``K`` in ``1..3`` heads, weights and bias in ``[-1, 1]``,
    means in ``[-20, 20]``, stds in ``[0.1, 20]`` (one head in five unchanged), features
    ``(5, H)`` in ``[-3, 3]``."""
    h = ladder_count(rng, size, 8)
    k = ladder_count(rng, size, 3)
    mean = rng.uniform(-20, 20, k)
    std = rng.uniform(0.1, 20, k)
    same = rng.random(k) < 0.2
    new_mean = np.where(same, mean, rng.uniform(-20, 20, k))
    new_std = np.where(same, std, rng.uniform(0.1, 20, k))
    return _PopArt(rng.uniform(-1, 1, (h, k)), rng.uniform(-1, 1, k), mean, std, new_mean,
                   new_std, rng.uniform(-3, 3, (5, h)))


_POPART_NAMES = ("weights", "bias", "old_mean", "old_std", "new_mean", "new_std", "features")


def check_popart(
    fn: Callable[..., Any],
    *,
    atol: float | None = None,
    rtol: float | None = None,
    dtype: str | None = None,
    xp: Any = None,
    cases: int = 50,
    seed: int = 0,
    replay: Case | None = None,
) -> CheckReport:
    """Check PopArt's output-preserving update of a value head's last layer
    (``proofs_notes/value-normalisation.md#popart``)::

        W' = W sd / sd',   b' = (sd b + m - m') / sd',

    so that the unnormalised outputs ``m + sd (phi W + b)`` are unchanged when the statistics
    move from ``(m, sd)`` to ``(m', sd')``.  Called as ``fn(weights, bias, old_mean, old_std,
    new_mean, new_std)`` with ``weights`` ``(H, K)`` (``K`` heads) and the rest ``(K,)``;
    returns ``(new_weights, new_bias)``.  Besides ``W'`` and ``b'``, the unnormalised outputs
    on generated features ``phi`` ``(5, H)`` are compared before and after (the second
    route: preservation itself).

    Tolerance: a few relative roundings of each entry (``4 eps |W'|``, ``6 eps (sd |b| + |m|
    + |m'|) / sd'``), and ``(H + 8) eps`` times the outputs' absolute scale for the preserved
    outputs.
    """
    fn = guard(fn)

    def evaluate_case(c: _PopArt, index: int, io: UserIO) -> list[Compared]:
        w_want, b_want = popart_update(c.weights, c.bias, c.old_mean, c.old_std, c.new_mean,
                                       c.new_std)
        out = fn(*(io.arg(x) for x in (c.weights, c.bias, c.old_mean, c.old_std, c.new_mean,
                                       c.new_std)))
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise CaseFailure("the callable must return (new_weights, new_bias)")
        w_got, b_got = io.out(out[0], "new_weights"), io.out(out[1], "new_bias")
        if w_got.shape != w_want.shape or b_got.shape != b_want.shape:
            raise CaseFailure(f"returned shapes {w_got.shape}, {b_got.shape}; expected "
                              f"{w_want.shape}, {b_want.shape}")
        before = c.old_mean + c.old_std * (c.features @ c.weights + c.bias)
        after = c.new_mean + c.new_std * (c.features @ w_got + b_got)
        h = c.weights.shape[0]
        scale = (np.abs(c.old_mean) + np.abs(c.new_mean) + c.old_std * (
            np.abs(c.features) @ np.abs(c.weights) + np.abs(c.bias))) * 2
        t_out = (h + 8) * EPS * scale
        t_w = 4 * EPS * np.abs(w_want)
        t_b = 6 * EPS * (c.old_std * np.abs(c.bias) + np.abs(c.old_mean)
                         + np.abs(c.new_mean)) / c.new_std

        def ctx(idx: tuple[int, ...]) -> str:
            k = idx[-1]
            return (f" (head {k}: mean {c.old_mean[k]:.4g} -> {c.new_mean[k]:.4g}, std "
                    f"{c.old_std[k]:.4g} -> {c.new_std[k]:.4g})")

        return [
            Compared(w_got, w_want, t_w, t_w,
                     label=lambda idx: f"W'[{idx[0]}, {idx[1]}]", context=ctx),
            Compared(b_got, b_want, t_b, t_b, label=lambda idx: f"b'[{idx[0]}]", context=ctx),
            Compared(after, before, t_out, t_out,
                     label=lambda idx: f"output[phi={idx[0]}, head={idx[1]}] after the "
                     "update", context=ctx),
        ]

    def alternatives() -> list[Alternative]:
        from verify.checks.planted import known_bugs

        res = []
        for m in known_bugs("popart"):
            def outputs(c: _PopArt, f: Any = m.fn) -> list[FloatArray]:
                w, b = f(c.weights, c.bias, c.old_mean, c.old_std, c.new_mean, c.new_std)
                w, b = np.asarray(w), np.asarray(b)
                return [w, b, c.new_mean + c.new_std * (c.features @ w + b)]
            res.append(Alternative(m.name, m.bug, outputs))
        return res

    def from_arrays(a: Mapping[str, npt.NDArray[Any]]) -> _PopArt:
        missing = [k for k in _POPART_NAMES if k not in a]
        if missing:
            raise ModelError(f"a popart case needs arrays {missing}, which are missing")
        f = [np.array(a[k], dtype=np.float64) for k in _POPART_NAMES]
        if f[0].ndim != 2 or any(x.shape != f[0].shape[1:] for x in f[1:6]):
            raise ModelError("popart case: weights (H, K) and (K,) statistics expected")
        return _PopArt(*f)

    decl = Declaration(
        name="popart",
        reference="proofs_notes/value-normalisation.md#popart: W' = W sd / sd', "
        "b' = (sd b + m - m') / sd'; outputs preserved",
        generate=_popart_generate,
        to_arrays=lambda c: {k: getattr(c, k) for k in _POPART_NAMES},
        from_arrays=from_arrays,
        evaluate=evaluate_case,
        alternatives=alternatives,
    )
    return run_check(decl, cases=cases, seed=seed, replay=replay, atol=atol, rtol=rtol,
                     dtype=dtype, xp=xp)

