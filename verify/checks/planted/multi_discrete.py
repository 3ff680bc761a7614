"""Planted bugs and correct implementations for the multi-discrete check
(``verify/checks/multi_discrete.py``).

Plain numpy, written as a ``MultiDiscrete`` policy head's distribution is written:
``fn(logits, old_logits, actions, nvec) -> (log_prob, entropy, kl)``.  Each wrong one models
a reported bug, cited in its docstring.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from reference._arrays import FloatArray
from verify.checks._core import KnownBug, Mutant
from verify.checks.multi_discrete import check_multi_discrete

__all__ = ["CORRECT", "DIAGNOSABLE", "MUTANTS"]

_CASES = 30
Ints = npt.NDArray[np.int64]
Triple = tuple[FloatArray, FloatArray, FloatArray]


def _heads(logits: FloatArray, nvec: tuple[int, ...]) -> list[FloatArray]:
    """Per sub-action log-probabilities, as ``torch.split`` then ``log_softmax``."""
    out, start = [], 0
    for n in nvec:
        z = logits[:, start:start + n]
        z = z - z.max(axis=1, keepdims=True)
        out.append(z - np.log(np.exp(z).sum(axis=1, keepdims=True)))
        start += n
    return out


def _per_head(logits: FloatArray, old_logits: FloatArray, actions: Ints,
              nvec: tuple[int, ...]) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``(B, K)`` arrays: each sub-action's log-prob, entropy and KL."""
    rows = np.arange(len(logits))
    new, old = _heads(logits, nvec), _heads(old_logits, nvec)
    lp = np.stack([h[rows, actions[:, k]] for k, h in enumerate(new)], axis=1)
    ent = np.stack([-(np.exp(h) * h).sum(axis=1) for h in new], axis=1)
    kl = np.stack([(np.exp(o) * (o - h)).sum(axis=1) for h, o in zip(new, old, strict=True)],
                  axis=1)
    return lp, ent, kl


def multi_categorical(logits: FloatArray, old_logits: FloatArray, actions: Ints,
                      nvec: tuple[int, ...]) -> Triple:
    """Correct: one categorical per slice, each quantity summed over the sub-actions."""
    lp, ent, kl = _per_head(logits, old_logits, actions, nvec)
    return lp.sum(axis=1), ent.sum(axis=1), kl.sum(axis=1)


def multi_categorical_float32(logits: FloatArray, old_logits: FloatArray, actions: Ints,
                              nvec: tuple[int, ...]) -> Triple:
    """Correct: the same in float32."""
    lp, ent, kl = _per_head(logits.astype(np.float32), old_logits.astype(np.float32),
                            actions, nvec)
    return lp.sum(axis=1), ent.sum(axis=1), kl.sum(axis=1)


def logprob_summed_over_batch(logits: FloatArray, old_logits: FloatArray, actions: Ints,
                              nvec: tuple[int, ...]) -> Triple:
    """Bug (provenance: pytorch/tensordict PR #1054, a composite distribution's log-prob
    aggregated over more than the sample's own dimensions): each sample's log-prob is the
    batch total."""
    lp, ent, kl = _per_head(logits, old_logits, actions, nvec)
    return np.full(len(lp), lp.sum()), ent.sum(axis=1), kl.sum(axis=1)


def entropy_of_sampled_action(logits: FloatArray, old_logits: FloatArray, actions: Ints,
                              nvec: tuple[int, ...]) -> Triple:
    """Bug (provenance: Unity-Technologies/ml-agents PR #3607, the multi-categorical
    entropy computed from the sampled action rather than the log-probabilities): the
    "entropy" is ``-log pi(a)``."""
    lp, _, kl = _per_head(logits, old_logits, actions, nvec)
    return lp.sum(axis=1), -lp.sum(axis=1), kl.sum(axis=1)


def kl_mean_over_subactions(logits: FloatArray, old_logits: FloatArray, actions: Ints,
                            nvec: tuple[int, ...]) -> Triple:
    """Bug (provenance: ray-project/ray issue #7009, where ``MultiCategorical.kl`` reduced
    the sub-action KLs over the wrong axis; the planted form is another wrong reduction of
    them): the sub-actions' KLs are averaged, not summed."""
    lp, ent, kl = _per_head(logits, old_logits, actions, nvec)
    return lp.sum(axis=1), ent.sum(axis=1), kl.mean(axis=1)


MUTANTS = (
    Mutant("md-logprob-summed-over-batch", "each sample's log-prob is the batch total "
           "(tensordict PR #1054)", "multi-discrete",
           lambda: check_multi_discrete(logprob_summed_over_batch, cases=_CASES)),
    Mutant("md-entropy-of-sampled-action", "entropy = -log pi(a) of the sampled action "
           "(ml-agents PR #3607)", "multi-discrete",
           lambda: check_multi_discrete(entropy_of_sampled_action, cases=_CASES)),
    Mutant("md-kl-mean-over-subactions", "sub-action KLs averaged, not summed (cf. ray #7009)",
           "multi-discrete",
           lambda: check_multi_discrete(kl_mean_over_subactions, cases=_CASES)),
)
"""Wrong implementations, each with the check that must catch it."""

CORRECT = (
    Mutant("md-multi-categorical", "correct implementation: split, log-softmax, sum",
           "multi-discrete", lambda: check_multi_discrete(multi_categorical, cases=_CASES)),
    Mutant("md-multi-categorical-float32", "correct implementation in float32",
           "multi-discrete",
           lambda: check_multi_discrete(multi_categorical_float32, cases=_CASES)),
)
"""Correct implementations, which the check must pass."""

DIAGNOSABLE = (
    KnownBug("md-logprob-summed-over-batch", "log-prob summed over the batch",
             logprob_summed_over_batch),
    KnownBug("md-entropy-of-sampled-action", "entropy = -log pi(a)",
             entropy_of_sampled_action),
    KnownBug("md-kl-mean-over-subactions", "sub-action KLs averaged",
             kl_mean_over_subactions),
)
"""The planted bugs in the check's canonical signature, which its diagnosis tries."""
