"""Planted bugs and correct implementations for the TD(lambda) and n-step return checks
(``verify/checks/returns.py``).

Every implementation is plain numpy written the way a user writes it, without the check's
oracle.  The canonical signatures are ``fn(rewards, values, next_values, terminated,
truncated, gamma, lam)`` and ``fn(rewards, values, next_values, terminated, truncated,
gamma, n)``, arrays ``(B, T)``.  Each wrong one models a bug reported in a public repository,
cited in its docstring.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reference._arrays import FloatArray
from verify.checks._core import KnownBug, Mutant
from verify.checks.gae import BoolArray
from verify.checks.returns import check_nstep_returns, check_td_lambda

__all__ = ["CORRECT", "DIAGNOSABLE", "MUTANTS"]

_CASES = 30


def td_lambda_loop(
    rewards: FloatArray, values: FloatArray, next_values: FloatArray,
    terminated: BoolArray, truncated: BoolArray, gamma: float, lam: float,
) -> FloatArray:
    """Correct: one backward loop over ``t`` for all environments, blending the bootstrap
    value and the next return by ``lam`` and cutting the blend at every episode end."""
    n_steps = rewards.shape[1]
    ret = np.zeros_like(rewards)
    nxt = next_values[:, -1]
    for t in reversed(range(n_steps)):
        cut = terminated[:, t] | truncated[:, t]
        blend = next_values[:, t] if t == n_steps - 1 else np.where(
            cut, next_values[:, t], (1 - lam) * next_values[:, t] + lam * nxt)
        nxt = rewards[:, t] + gamma * (1.0 - terminated[:, t]) * blend
        ret[:, t] = nxt
    return ret


def td_lambda_via_gae(
    rewards: FloatArray, values: FloatArray, next_values: FloatArray,
    terminated: BoolArray, truncated: BoolArray, gamma: float, lam: float,
) -> FloatArray:
    """Correct: GAE advantages by their backward recursion, plus the values (``G = A + V``)."""
    delta = rewards + gamma * np.where(terminated, 0.0, next_values) - values
    keep = np.where(terminated | truncated, 0.0, gamma * lam)
    adv = np.zeros_like(delta)
    run = np.zeros(delta.shape[0])
    for t in reversed(range(delta.shape[1])):
        run = delta[:, t] + keep[:, t] * run
        adv[:, t] = run
    out: FloatArray = adv + values
    return out


def pymarl_td_lambda(
    rewards: FloatArray, target_qs: FloatArray, terminated: BoolArray, gamma: float,
    lam: float,
) -> FloatArray:
    """Correct under ``values="T+1", flags="dones", truncation="as-termination"``: pymarl's
    ``build_td_lambda_targets`` shape (batch-major, ``target_qs`` of ``T + 1`` steps), with
    the last step masked by its own flag."""
    term = terminated.astype(np.float64)
    ret = np.zeros_like(rewards)
    last = rewards.shape[1] - 1
    ret[:, last] = rewards[:, last] + gamma * (1 - term[:, last]) * target_qs[:, last + 1]
    for t in range(last - 1, -1, -1):
        ret[:, t] = rewards[:, t] + gamma * (1 - term[:, t]) * (
            lam * ret[:, t + 1] + (1 - lam) * target_qs[:, t + 1])
    return ret


def pymarl_td_lambda_sum_terminated(
    rewards: FloatArray, target_qs: FloatArray, terminated: BoolArray, gamma: float,
    lam: float,
) -> FloatArray:
    """Bug (provenance: oxwhirl/pymarl issue #109): the last step's bootstrap is masked by
    ``1 - sum_t terminated_t`` over the whole row instead of its own flag, so a rollout that
    terminated anywhere drops (or, with two terminations, flips the sign of) the last step's
    bootstrap."""
    term = terminated.astype(np.float64)
    ret = np.zeros_like(rewards)
    last = rewards.shape[1] - 1
    ret[:, last] = rewards[:, last] + gamma * (1 - term.sum(axis=1)) * target_qs[:, last + 1]
    for t in range(last - 1, -1, -1):
        ret[:, t] = rewards[:, t] + gamma * (1 - term[:, t]) * (
            lam * ret[:, t + 1] + (1 - lam) * target_qs[:, t + 1])
    return ret


def td_lambda_done_returns_next_value(
    rewards: FloatArray, values: FloatArray, next_values: FloatArray,
    terminated: BoolArray, truncated: BoolArray, gamma: float, lam: float,
) -> FloatArray:
    """Bug (provenance: JaxMARL issue #93, a VDN TD(lambda) target): at an episode end the
    target is the next value itself instead of the reward plus the discounted bootstrap."""
    n_steps = rewards.shape[1]
    ret = np.zeros_like(rewards)
    nxt = next_values[:, -1]
    for t in reversed(range(n_steps)):
        done = terminated[:, t] | truncated[:, t]
        if t == n_steps - 1:
            cont = rewards[:, t] + gamma * next_values[:, t]
        else:
            cont = rewards[:, t] + gamma * ((1 - lam) * next_values[:, t] + lam * nxt)
        nxt = np.where(done, next_values[:, t], cont)
        ret[:, t] = nxt
    return ret


def td_lambda_trace_across_episodes(
    rewards: FloatArray, values: FloatArray, next_values: FloatArray,
    terminated: BoolArray, truncated: BoolArray, gamma: float, lam: float,
) -> FloatArray:
    """Bug (provenance: Toni-SM/skrl issue #449, where a truncation that is not treated as an
    episode boundary lets one episode's advantages run on into the previous one): the
    lambda-trace is not cut at a truncation, so the next episode's return leaks into the
    previous episode's last target."""
    n_steps = rewards.shape[1]
    ret = np.zeros_like(rewards)
    nxt = next_values[:, -1]
    for t in reversed(range(n_steps)):
        blend = next_values[:, t] if t == n_steps - 1 else (
            (1 - lam) * next_values[:, t] + lam * nxt)
        nxt = rewards[:, t] + gamma * (1.0 - terminated[:, t]) * blend
        ret[:, t] = nxt
    return ret


def nstep_loop(
    rewards: FloatArray, values: FloatArray, next_values: FloatArray,
    terminated: BoolArray, truncated: BoolArray, gamma: float, n: int,
) -> FloatArray:
    """Correct: for every start, walk forward at most ``n`` steps, stop at an episode end or
    the rollout's end, and bootstrap unless the stop was a termination."""
    n_envs, n_steps = rewards.shape
    out = np.zeros_like(rewards)
    for b in range(n_envs):
        for t in range(n_steps):
            g, disc = 0.0, 1.0
            for k in range(t, min(t + n, n_steps)):
                g += disc * rewards[b, k]
                disc *= gamma
                end = k
                if terminated[b, k] or truncated[b, k]:
                    break
            if not terminated[b, end]:
                g += disc * next_values[b, end]
            out[b, t] = g
    return out


def nstep_time_major_dones(
    rewards: FloatArray, values: FloatArray, last_values: FloatArray, dones: BoolArray,
    gamma: float, n: int,
) -> FloatArray:
    """Correct under ``layout="time-major", flags="dones", values="last_values",
    truncation="as-termination"``: arrays ``(T, B)``; the value after step ``k`` is
    ``values[k + 1]`` inside the rollout and ``last_values`` after it; a window stops at a
    done without bootstrapping."""
    n_steps, n_envs = rewards.shape
    nxt = np.concatenate([values[1:], np.asarray(last_values)[None, :]], axis=0)
    out = np.zeros_like(rewards)
    for t in range(n_steps):
        for b in range(n_envs):
            g, disc = 0.0, 1.0
            for k in range(t, min(t + n, n_steps)):
                g += disc * rewards[k, b]
                disc *= gamma
                end = k
                if dones[k, b]:
                    break
            if not dones[end, b]:
                g += disc * nxt[end, b]
            out[t, b] = g
    return out


def nstep_bootstrap_through_termination(
    rewards: FloatArray, values: FloatArray, next_values: FloatArray,
    terminated: BoolArray, truncated: BoolArray, gamma: float, n: int,
) -> FloatArray:
    """Bug (provenance: the ``nstep_returns`` routine of EPyMARL-derived actor-critic
    learners, read in public code: with ``add_value_last_step`` its last step adds the
    discounted next value without the mask; like oxwhirl/pymarl issue #109, the slip sits in
    the last step's bootstrap): the window stops at an episode end but always adds the
    discounted next value, even after a termination."""
    n_envs, n_steps = rewards.shape
    out = np.zeros_like(rewards)
    for b in range(n_envs):
        for t in range(n_steps):
            g, disc = 0.0, 1.0
            for k in range(t, min(t + n, n_steps)):
                g += disc * rewards[b, k]
                disc *= gamma
                end = k
                if terminated[b, k] or truncated[b, k]:
                    break
            out[b, t] = g + disc * next_values[b, end]
    return out


def nstep_window_crosses_episodes(
    rewards: FloatArray, values: FloatArray, next_values: FloatArray,
    terminated: BoolArray, truncated: BoolArray, gamma: float, n: int,
) -> FloatArray:
    """Bug (provenance: the episode-boundary leak of Toni-SM/skrl issue #449, in an n-step
    window): the window of ``n`` rewards runs on into the next episode and only the
    bootstrap is masked by the window's last flag."""
    n_envs, n_steps = rewards.shape
    out = np.zeros_like(rewards)
    for t in range(n_steps):
        end = min(t + n, n_steps) - 1
        disc = gamma ** np.arange(end - t + 1)
        g = rewards[:, t:end + 1] @ disc
        out[:, t] = g + gamma ** (end - t + 1) * np.where(terminated[:, end], 0.0,
                                                           next_values[:, end])
    del n_envs
    return out


def nstep_full_power_at_cut(
    rewards: FloatArray, values: FloatArray, next_values: FloatArray,
    terminated: BoolArray, truncated: BoolArray, gamma: float, n: int,
) -> FloatArray:
    """Bug (provenance: no single thread; a discount-power slip common in hand-written n-step
    returns, where the last-step rule ignores where the window really ended): a window cut
    short by a truncation or the rollout's end bootstraps with ``gamma^n`` instead of
    ``gamma^m``."""
    n_envs, n_steps = rewards.shape
    out = np.zeros_like(rewards)
    for b in range(n_envs):
        for t in range(n_steps):
            g, disc = 0.0, 1.0
            for k in range(t, min(t + n, n_steps)):
                g += disc * rewards[b, k]
                disc *= gamma
                end = k
                if terminated[b, k] or truncated[b, k]:
                    break
            if not terminated[b, end]:
                g += gamma ** n * next_values[b, end]
            out[b, t] = g
    return out


_PYMARL: dict[str, Any] = {"values": "T+1", "flags": "dones", "truncation": "as-termination"}
_TM_DONES: dict[str, Any] = {"layout": "time-major", "flags": "dones",
                             "values": "last_values", "truncation": "as-termination"}

MUTANTS: tuple[Mutant, ...] = (
    Mutant("td-lambda-last-step-sum-terminated",
           "pymarl-style TD(lambda) whose last step is masked by the row's summed "
           "terminated flags (oxwhirl/pymarl #109)",
           "td-lambda", lambda: check_td_lambda(pymarl_td_lambda_sum_terminated,
                                                cases=_CASES, **_PYMARL)),
    Mutant("td-lambda-done-returns-next-value",
           "at an episode end the target is the next value, not r + gamma V (JaxMARL #93)",
           "td-lambda", lambda: check_td_lambda(td_lambda_done_returns_next_value,
                                                cases=_CASES)),
    Mutant("td-lambda-trace-across-episodes",
           "the lambda-trace is not cut at a truncation (skrl #449's class)",
           "td-lambda", lambda: check_td_lambda(td_lambda_trace_across_episodes,
                                                cases=_CASES)),
    Mutant("nstep-bootstrap-through-termination",
           "an n-step window that stops at a termination still adds gamma^m V(s') "
           "(EPyMARL-style nstep_returns)",
           "nstep-returns", lambda: check_nstep_returns(nstep_bootstrap_through_termination,
                                                        cases=_CASES)),
    Mutant("nstep-window-crosses-episodes",
           "the n rewards of a window run on into the next episode (skrl #449's class)",
           "nstep-returns", lambda: check_nstep_returns(nstep_window_crosses_episodes,
                                                        cases=_CASES)),
    Mutant("nstep-full-power-at-cut",
           "a window cut short bootstraps with gamma^n instead of gamma^m",
           "nstep-returns", lambda: check_nstep_returns(nstep_full_power_at_cut,
                                                        cases=_CASES)),
)
"""Wrong implementations, each with the check that must catch it."""

CORRECT: tuple[Mutant, ...] = (
    Mutant("td-lambda-loop", "correct implementation: backward loop blending by lam",
           "td-lambda", lambda: check_td_lambda(td_lambda_loop, cases=_CASES)),
    Mutant("td-lambda-via-gae", "correct implementation: GAE plus values",
           "td-lambda", lambda: check_td_lambda(td_lambda_via_gae, cases=_CASES)),
    Mutant("td-lambda-pymarl", "correct under its convention: pymarl-style, T + 1 target "
           "values, dones, truncation as termination",
           "td-lambda", lambda: check_td_lambda(pymarl_td_lambda, cases=_CASES, **_PYMARL)),
    Mutant("nstep-loop", "correct implementation: forward window per start",
           "nstep-returns", lambda: check_nstep_returns(nstep_loop, cases=_CASES)),
    Mutant("nstep-time-major-dones", "correct under its convention: time-major, dones, "
           "last_values, truncation as termination",
           "nstep-returns", lambda: check_nstep_returns(nstep_time_major_dones,
                                                        cases=_CASES, **_TM_DONES)),
)
"""Correct implementations, which the checks must pass."""

DIAGNOSABLE = (
    KnownBug("td-lambda-done-returns-next-value",
             "at an episode end the target is the next value", td_lambda_done_returns_next_value),
    KnownBug("td-lambda-trace-across-episodes",
             "the lambda-trace is not cut at a truncation", td_lambda_trace_across_episodes),
    KnownBug("nstep-bootstrap-through-termination",
             "a window stopped by a termination still bootstraps",
             nstep_bootstrap_through_termination),
    KnownBug("nstep-window-crosses-episodes",
             "the window's rewards run on into the next episode",
             nstep_window_crosses_episodes),
    KnownBug("nstep-full-power-at-cut",
             "a window cut short bootstraps with gamma^n", nstep_full_power_at_cut),
)
"""The planted bugs in the checks' canonical signatures, which their diagnoses try."""


# ---------------------------------------------------------------- padded episode buffers


def td_lambda_padded(
    rewards: FloatArray, values: FloatArray, next_values: FloatArray,
    terminated: BoolArray, truncated: BoolArray, filled: FloatArray, gamma: float,
    lam: float,
) -> FloatArray:
    """Correct under ``padding=True``: the flags end the episode, and the targets are zeroed
    on the padding by ``filled``."""
    return td_lambda_loop(rewards, values, next_values, terminated, truncated, gamma,
                          lam) * filled


def td_lambda_padding_as_termination(
    rewards: FloatArray, values: FloatArray, next_values: FloatArray,
    terminated: BoolArray, truncated: BoolArray, filled: FloatArray, gamma: float,
    lam: float,
) -> FloatArray:
    """Bug (provenance: oxwhirl/pymarl issue #16, where ``filled`` and ``terminated`` must
    tell a time-limit cut from a terminal last step): the episode's end is read from
    ``filled`` alone, so a last step cut by a time limit does not bootstrap."""
    n_steps = rewards.shape[1]
    ret = np.zeros_like(rewards)
    nxt = next_values[:, -1]
    for t in reversed(range(n_steps)):
        alive_after = filled[:, t + 1] if t + 1 < n_steps else np.ones(rewards.shape[0])
        blend = np.where(alive_after > 0,
                         (1 - lam) * next_values[:, t] + lam * nxt if t < n_steps - 1
                         else next_values[:, t], 0.0)
        nxt = rewards[:, t] + gamma * (1.0 - terminated[:, t]) * blend
        ret[:, t] = nxt
    out: FloatArray = ret * filled
    return out


MUTANTS = (*MUTANTS, Mutant(
    "td-lambda-padding-as-termination",
    "the end of the filled steps is read as a termination: a time-limit cut before the "
    "padding does not bootstrap (pymarl #16); undiagnosed: truncation='as-termination' "
    "reproduces it on some cases, not on every one",
    "td-lambda", lambda: check_td_lambda(td_lambda_padding_as_termination, padding=True,
                                         cases=_CASES)))

CORRECT = (*CORRECT, Mutant(
    "td-lambda-padded", "correct under padding=True: flags end the episode, filled zeroes "
    "the padding", "td-lambda",
    lambda: check_td_lambda(td_lambda_padded, padding=True, cases=_CASES)))


def nstep_padded(
    rewards: FloatArray, values: FloatArray, next_values: FloatArray,
    terminated: BoolArray, truncated: BoolArray, filled: FloatArray, gamma: float, n: int,
) -> FloatArray:
    """Correct under ``padding=True``: an episode-buffer n-step return that walks each
    window forward, stops it at the episode's last filled step (or a flag), bootstraps
    there unless the step terminates, and zeroes the padding by ``filled``."""
    n_envs = rewards.shape[0]
    out = np.zeros_like(rewards)
    for b in range(n_envs):
        length = int(filled[b].sum())
        for t in range(length):
            g, disc, k = 0.0, 1.0, t
            for k in range(t, min(t + n, length)):
                g += disc * rewards[b, k]
                disc *= gamma
                if terminated[b, k] or truncated[b, k]:
                    break
            if not terminated[b, k]:
                g += disc * next_values[b, k]
            out[b, t] = g
    return out


def nstep_bootstraps_from_padding(
    rewards: FloatArray, values: FloatArray, next_values: FloatArray,
    terminated: BoolArray, truncated: BoolArray, filled: FloatArray, gamma: float, n: int,
) -> FloatArray:
    """Bug (provenance: no single thread; a common slip in episode-buffer n-step targets):
    the rewards are masked by ``filled`` and a termination zeroes the bootstrap, but the
    window always runs ``n`` steps (to the buffer's end at most), so after a time-limit cut
    it bootstraps from the value ``n`` steps ahead, which lies in the padding."""
    n_envs, n_steps = rewards.shape
    out = np.zeros_like(rewards)
    for t in range(n_steps):
        g = np.zeros(n_envs)
        disc = np.ones(n_envs)
        alive = np.ones(n_envs)
        end = t
        for k in range(t, min(t + n, n_steps)):
            g += disc * alive * filled[:, k] * rewards[:, k]
            alive = alive * (1.0 - terminated[:, k])
            disc = disc * gamma
            end = k
        out[:, t] = g + disc * alive * next_values[:, end]
    res: FloatArray = out * filled
    return res


MUTANTS = (*MUTANTS, Mutant(
    "nstep-bootstraps-from-padding",
    "an episode-buffer n-step window runs n steps regardless of the episode's end and, after "
    "a time-limit cut, bootstraps from a value in the padding (a common slip)",
    "nstep-returns", lambda: check_nstep_returns(nstep_bootstraps_from_padding, padding=True,
                                                 cases=_CASES)))

CORRECT = (*CORRECT, Mutant(
    "nstep-padded", "correct under padding=True: each window stops at the episode's last "
    "filled step, filled zeroes the padding", "nstep-returns",
    lambda: check_nstep_returns(nstep_padded, padding=True, cases=_CASES)))


# ---------------------------------------------------------------- agents that die mid-episode


def td_lambda_active(
    rewards: FloatArray, values: FloatArray, next_values: FloatArray,
    terminated: BoolArray, truncated: BoolArray, active: FloatArray, gamma: float,
    lam: float,
) -> FloatArray:
    """Correct under ``active=True``: an agent alive at ``t`` and not at ``t + 1`` died at
    ``t``, which ends its return like a termination; the dead steps are zeroed by
    ``active``."""
    alive = active > 0
    died = np.zeros_like(alive)
    died[:, :-1] = alive[:, :-1] & ~alive[:, 1:]
    out: FloatArray = td_lambda_loop(rewards, values, next_values, terminated | died,
                                     truncated, gamma, lam) * active
    return out


def td_lambda_bootstraps_past_death(
    rewards: FloatArray, values: FloatArray, next_values: FloatArray,
    terminated: BoolArray, truncated: BoolArray, active: FloatArray, gamma: float,
    lam: float,
) -> FloatArray:
    """Bug (provenance: no single confirmed thread; a common slip in per-agent value
    targets when agents die): ``active`` only masks the targets afterwards, so at a dead
    agent's last step the target still bootstraps through the value of its slot after death
    and the trace runs on through the dead steps' rewards."""
    out: FloatArray = td_lambda_loop(rewards, values, next_values, terminated, truncated,
                                     gamma, lam) * active
    return out


MUTANTS = (*MUTANTS, Mutant(
    "td-lambda-bootstraps-past-death",
    "a dead agent's targets are masked by active afterwards, but its last step still "
    "bootstraps through its value past death (a common slip)",
    "td-lambda", lambda: check_td_lambda(td_lambda_bootstraps_past_death, active=True,
                                         cases=_CASES)))

CORRECT = (*CORRECT, Mutant(
    "td-lambda-active", "correct under active=True: a death ends the agent's return as a "
    "termination, active zeroes the dead steps", "td-lambda",
    lambda: check_td_lambda(td_lambda_active, active=True, cases=_CASES)))


def nstep_active(
    rewards: FloatArray, values: FloatArray, next_values: FloatArray,
    terminated: BoolArray, truncated: BoolArray, active: FloatArray, gamma: float, n: int,
) -> FloatArray:
    """Correct under ``active=True``: a death (alive at ``t``, not at ``t + 1``) stops the
    window like a termination; the dead steps are zeroed by ``active``."""
    alive = active > 0
    died = np.zeros_like(alive)
    died[:, :-1] = alive[:, :-1] & ~alive[:, 1:]
    out: FloatArray = nstep_loop(rewards, values, next_values, terminated | died, truncated,
                                 gamma, n) * active
    return out


def nstep_bootstraps_past_death(
    rewards: FloatArray, values: FloatArray, next_values: FloatArray,
    terminated: BoolArray, truncated: BoolArray, active: FloatArray, gamma: float, n: int,
) -> FloatArray:
    """Bug (provenance: no single confirmed thread; a common slip in per-agent value
    targets when agents die): ``active`` only masks the targets afterwards, so a window
    that reaches an agent's death runs on through its dead steps and bootstraps from the
    dead slot's value."""
    out: FloatArray = nstep_loop(rewards, values, next_values, terminated, truncated, gamma,
                                 n) * active
    return out


MUTANTS = (*MUTANTS, Mutant(
    "nstep-bootstraps-past-death",
    "a dead agent's n-step targets are masked by active afterwards, but a window reaching "
    "its death runs on and bootstraps past it (a common slip)",
    "nstep-returns", lambda: check_nstep_returns(nstep_bootstraps_past_death, active=True,
                                                 cases=_CASES)))

CORRECT = (*CORRECT, Mutant(
    "nstep-active", "correct under active=True: a death stops the window as a termination, "
    "active zeroes the dead steps", "nstep-returns",
    lambda: check_nstep_returns(nstep_active, active=True, cases=_CASES)))
