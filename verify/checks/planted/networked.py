"""Planted bugs and correct implementations for the networked checks (shadow rewards,
truncated critics, sampled local occupancies; SPEC sections 2-4).

Every implementation here is plain numpy written from the SPEC, independently of
``reference/``'s solvers: it reads only the instance's public attributes (graph edges, local
kernels, ``rho``, logits' softmax tables, utility parameters) and builds its own joint
kernel, joint policy, occupancy, utility gradients, Q-functions, hop neighbourhoods (breadth
first search over the edges) and sampler.  Each wrong implementation is one small edit of a
correct one, switched on by a flag.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from reference._arrays import FloatArray, IntArray
from reference.networked.model import NetworkedMDP
from reference.networked.policy import LocalizedSoftmaxPolicy
from reference.networked.truncation import Weights
from reference.networked.utilities import (
    ConstraintPenaltyUtility,
    EntropyUtility,
    KLImitationUtility,
    LinearUtility,
    QuadraticImitationUtility,
    Utility,
)
from verify.checks._core import CheckReport, KnownBug, Mutant
from verify.checks.networked import (
    check_local_occupancy_estimator,
    check_shadow_reward,
    check_truncated_critic,
)

__all__ = [
    "CORRECT",
    "DIAGNOSABLE",
    "MUTANTS",
    "Bugs",
]

_CASES = 10
"""Cases per mutant run of an exact check (each bug shows on most rich instances)."""
_CORRECT_CASES = 12
_ESTIMATOR_CASES = 6
_HARD_EPS = 1e-8
"""The smoothing constant a routine that writes ``log(p + 1e-8)`` hard-codes."""
_TRAJECTORIES = 10_000


@dataclass(frozen=True)
class Bugs:
    """Which planted bug is switched on (all off: a correct implementation)."""

    sign: bool = False  # returns -grad f (the gradient of a loss -f)
    no_chain_factor: bool = False  # d f/d d instead of d f/d lam: drops (1 - gamma)
    normalised_occupancy: bool = False  # feeds d = (1 - gamma) lam to a utility taking lam
    transposed_kernel: bool = False  # solves (I - gamma P_pi) x = rho
    reversed_agents: bool = False  # marginalises with agent 0 least significant
    kappa_shift: int = 0  # truncates over N_i^{kappa + shift}
    uniform_weights: bool = False  # plain average where occupancy weights are asked for
    state_weights: bool = False  # weights by lam_S(s) only, ignoring pi(a|s)
    undiscounted: bool = False  # sampled counts without gamma^t
    skip_first: bool = False  # records steps 1..H instead of 0..H-1
    eps: float | None = None  # hard-coded smoothing eps in place of the utility's own


# ------------------------------------------------------------------------------ structure
def _digits(sizes: Sequence[int], reverse: bool = False) -> IntArray:
    """``(prod sizes, n)``: local components of every joint index, agent 0 most significant
    (or, with ``reverse``, least significant: the planted agent-order bug)."""
    n = len(sizes)
    if reverse:
        out: IntArray = np.indices(tuple(sizes[::-1])).reshape(n, -1).T[:, ::-1]
    else:
        out = np.indices(tuple(sizes)).reshape(n, -1).T
    return np.ascontiguousarray(out, dtype=np.int64)


def _mixed_radix(digits: IntArray, sizes: Sequence[int], agents: Sequence[int]) -> IntArray:
    """Index of ``x_agents`` (increasing agents, lowest most significant) per row."""
    idx = np.zeros(digits.shape[0], dtype=np.int64)
    for j in agents:
        idx = idx * sizes[j] + digits[:, j]
    return idx


def _hops(n: int, edges: Sequence[tuple[int, int]]) -> IntArray:
    """``(n, n)`` hop distances by breadth-first search (``n + 1`` marks unreachable)."""
    adjacent: list[list[int]] = [[] for _ in range(n)]
    for u, v in edges:
        adjacent[u].append(v)
        adjacent[v].append(u)
    dist = np.full((n, n), n + 1, dtype=np.int64)
    for root in range(n):
        dist[root, root] = 0
        frontier = [root]
        while frontier:
            nxt = []
            for u in frontier:
                for v in adjacent[u]:
                    if dist[root, v] > dist[root, u] + 1:
                        dist[root, v] = dist[root, u] + 1
                        nxt.append(v)
            frontier = nxt
    return dist


def _within(dist: IntArray, i: int, k: int) -> list[int]:
    return [j for j in range(dist.shape[0]) if dist[i, j] <= k]


@dataclass(frozen=True)
class _Joint:
    """The joint system of an instance: ``P[s, a, s']``, ``pi[s, a]``, ``rho[s]`` and the
    digit tables of joint states and actions."""

    P: FloatArray
    pi: FloatArray
    rho: FloatArray
    sd: IntArray
    ad: IntArray
    dist: IntArray


def _joint(model: NetworkedMDP, policy: LocalizedSoftmaxPolicy, bugs: Bugs) -> _Joint:
    n = model.n
    ns, na = list(model.n_states), list(model.n_actions)
    sd = _digits(ns)
    ad = _digits(na)
    dist = _hops(n, model.graph.edges)
    P = np.ones((sd.shape[0], ad.shape[0], sd.shape[0]))
    pi = np.ones((sd.shape[0], ad.shape[0]))
    for i in range(n):
        rows = _mixed_radix(sd, ns, _within(dist, i, 1))
        P *= model.kernels[i][rows][:, ad[:, i], :][:, :, sd[:, i]]
        obs = _mixed_radix(sd, ns, _within(dist, i, policy.beta))
        pi *= policy.probs[i][obs][:, ad[:, i]]
    if isinstance(model.rho, np.ndarray):
        rho = np.array(model.rho, dtype=np.float64)
    else:
        rho = np.ones(sd.shape[0])
        for i, rho_i in enumerate(model.rho):
            rho = rho * rho_i[sd[:, i]]
    return _Joint(P, pi, rho, sd, ad, dist)


def _occupancy(j: _Joint, gamma: float, bugs: Bugs) -> FloatArray:
    """``lam[s, a] = lam_S[s] pi[s, a]``, ``lam_S = (I - gamma P_pi^T)^{-1} rho``."""
    P_pi = np.einsum("sa,sat->st", j.pi, j.P)
    system = P_pi if bugs.transposed_kernel else P_pi.T
    lam_S = np.linalg.solve(np.eye(P_pi.shape[0]) - gamma * system, j.rho)
    out: FloatArray = lam_S[:, None] * j.pi
    return out


def _marginal(
    lam: FloatArray, model: NetworkedMDP, i: int, bugs: Bugs
) -> FloatArray:
    """``lam_i[s_i, a_i]``: ``lam`` summed over joint pairs with those local components."""
    sd = _digits(model.n_states, bugs.reversed_agents)
    ad = _digits(model.n_actions, bugs.reversed_agents)
    out = np.zeros((model.n_states[i], model.n_actions[i]))
    np.add.at(out, (sd[:, i][:, None], ad[:, i][None, :]), lam)
    return out


# ------------------------------------------------------------------------------ utilities
def _slope(x: FloatArray, eps: float) -> FloatArray:
    """``d/dx [-x log(x + eps)]``."""
    out: FloatArray = -np.log(x + eps) - x / (x + eps)
    return out


def _value(u: Utility, lam: FloatArray) -> float:
    g = u.gamma
    if isinstance(u, LinearUtility):
        return float(np.sum(u.reward * lam))
    if isinstance(u, EntropyUtility):
        p = (1 - g) * lam.sum(axis=1)
        return float(-np.sum(p * np.log(p + u.eps)))
    if isinstance(u, QuadraticImitationUtility):
        return float(-0.5 * np.sum(((1 - g) * lam - u.target) ** 2))
    if isinstance(u, KLImitationUtility):
        d = (1 - g) * lam
        return float(-np.sum(d * (np.log(d + u.eps) - np.log(u.target + u.eps))))
    if isinstance(u, ConstraintPenaltyUtility):
        base = 0.0 if u.objective is None else _value(u.objective, lam)
        return base - 0.5 * u.weight * max(0.0, u.threshold - _value(u.constraint, lam)) ** 2
    raise TypeError(f"no formula for {type(u).__name__}")


def _gradient(u: Utility, lam: FloatArray, bugs: Bugs) -> FloatArray:
    """``d f / d lam`` (with ``no_chain_factor``, ``d f / d d`` for the utilities written in
    ``d = (1 - gamma) lam``)."""
    g = u.gamma
    chain = 1.0 if bugs.no_chain_factor else 1 - g
    out: FloatArray
    if isinstance(u, LinearUtility):
        out = np.array(u.reward, dtype=np.float64)
    elif isinstance(u, EntropyUtility):
        p = (1 - g) * lam.sum(axis=1)
        e = u.eps if bugs.eps is None else bugs.eps
        out = np.repeat((chain * _slope(p, e))[:, None], lam.shape[1], axis=1)
    elif isinstance(u, QuadraticImitationUtility):
        out = -chain * ((1 - g) * lam - u.target)
    elif isinstance(u, KLImitationUtility):
        e = u.eps if bugs.eps is None else bugs.eps
        out = chain * (_slope((1 - g) * lam, e) + np.log(u.target + e))
    elif isinstance(u, ConstraintPenaltyUtility):
        out = np.zeros(lam.shape) if u.objective is None else _gradient(u.objective, lam, bugs)
        violation = max(0.0, u.threshold - _value(u.constraint, lam))
        out = out + u.weight * violation * _gradient(u.constraint, lam, bugs)
    else:
        raise TypeError(f"no formula for {type(u).__name__}")
    return out


def _rewards(
    model: NetworkedMDP, utilities: Sequence[Utility], lam: FloatArray, bugs: Bugs
) -> list[FloatArray]:
    out = []
    for i, u in enumerate(utilities):
        lam_i = _marginal(lam, model, i, bugs)
        if bugs.normalised_occupancy:
            lam_i = (1 - model.gamma) * lam_i
        r = _gradient(u, lam_i, bugs)
        out.append(-r if bugs.sign else r)
    return out


def shadow_rewards(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    utilities: tuple[Utility, ...],
    bugs: Bugs = Bugs(),
) -> list[FloatArray]:
    """``r_i = grad f_i(lam_i)`` at the unnormalised local occupancy (correct unless ``bugs``)."""
    j = _joint(model, policy, bugs)
    return _rewards(model, utilities, _occupancy(j, model.gamma, bugs), bugs)


def _shadow(bugs: Bugs) -> Callable[..., list[FloatArray]]:
    def fn(
        model: NetworkedMDP, policy: LocalizedSoftmaxPolicy, utilities: tuple[Utility, ...]
    ) -> list[FloatArray]:
        return shadow_rewards(model, policy, utilities, bugs)

    return fn


# ------------------------------------------------------------------------------ truncated critic
def truncated_critic(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    utilities: tuple[Utility, ...],
    i: int,
    kappa: int,
    weights: Weights = "occupancy",
    bugs: Bugs = Bugs(),
) -> FloatArray:
    """``Qhat_i(z(s, a))`` on joint pairs: ``Q_i = R_i + gamma P V_i``, then grouped by
    ``z = (s_j, a_j)_{j in N_i^kappa}`` and averaged with ``weights``."""
    j = _joint(model, policy, bugs)
    g = model.gamma
    lam = _occupancy(j, g, bugs)
    r = _rewards(model, utilities, lam, bugs)[i]
    R = r[j.sd[:, i][:, None], j.ad[:, i][None, :]]
    P_pi = np.einsum("sa,sat->st", j.pi, j.P)
    V = np.linalg.solve(np.eye(P_pi.shape[0]) - g * P_pi, np.sum(j.pi * R, axis=1))
    Q = R + g * np.einsum("sat,t->sa", j.P, V)
    members = _within(j.dist, i, kappa + bugs.kappa_shift)
    cols = [np.broadcast_to(j.sd[:, m][:, None], Q.shape) for m in members]
    cols += [np.broadcast_to(j.ad[:, m][None, :], Q.shape) for m in members]
    if members:
        keys = np.stack([c.reshape(-1) for c in cols], axis=1)
        _, group = np.unique(keys, axis=0, return_inverse=True)
        group = group.reshape(-1).astype(np.int64)
    else:  # N_i^{-1} = {}: one group
        group = np.zeros(Q.size, dtype=np.int64)
    size = int(group.max()) + 1
    q = Q.reshape(-1)
    if weights == "point":
        outside = [m for m in range(model.n) if m not in members]
        at_zero = np.ones(Q.shape, dtype=bool)
        for m in outside:
            at_zero &= (j.sd[:, m][:, None] == 0) & (j.ad[:, m][None, :] == 0)
        table = np.zeros(size)
        table[group[at_zero.reshape(-1)]] = q[at_zero.reshape(-1)]
        out: FloatArray = table[group].reshape(Q.shape)
        return out
    if weights == "occupancy" and not bugs.uniform_weights:
        w = np.maximum(lam, 0.0)
        if bugs.state_weights:
            w = np.broadcast_to(w.sum(axis=1, keepdims=True), Q.shape)
        w = w.reshape(-1)
    else:
        w = np.zeros(q.shape)
    mass = np.bincount(group, weights=w, minlength=size)
    count = np.bincount(group, minlength=size).astype(np.float64)
    uniform = np.bincount(group, weights=q, minlength=size) / count
    weighted = np.bincount(group, weights=w * q, minlength=size) / np.where(mass > 0, mass, 1.0)
    table = np.where(mass > 0, weighted, uniform)
    out = table[group].reshape(Q.shape)
    return out


def _critic(weights: Weights, bugs: Bugs) -> Callable[..., FloatArray]:
    def fn(
        model: NetworkedMDP,
        policy: LocalizedSoftmaxPolicy,
        utilities: tuple[Utility, ...],
        i: int,
        kappa: int,
    ) -> FloatArray:
        return truncated_critic(model, policy, utilities, i, kappa, weights, bugs)

    return fn


# ------------------------------------------------------------------------------ sampler
def _draw(cum: FloatArray, rng: np.random.Generator) -> IntArray:
    """One index per row of the cumulative table ``cum`` (rows end at 1)."""
    u: FloatArray = rng.random(size=int(cum.shape[0]))
    out: IntArray = np.minimum((cum < u[:, None]).sum(axis=1), cum.shape[1] - 1)
    return out.astype(np.int64)


def local_occupancy_estimate(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    n: int,
    H: int,
    rng: np.random.Generator,
    bugs: Bugs = Bugs(),
) -> list[FloatArray]:
    """``lamtilde_i = (1/n) sum_b sum_{t<H} gamma^t e_(s_i^{b,t}, a_i^{b,t})`` from ``n``
    rollouts: each agent draws ``a_i ~ pi_i(. | o_i)``, then ``s'_i ~ P_i(. | s_{N_i}, a_i)``."""
    agents = model.n
    ns = list(model.n_states)
    dist = _hops(agents, model.graph.edges)
    if isinstance(model.rho, np.ndarray):
        joint = _draw(np.cumsum(model.rho)[None, :].repeat(n, axis=0), rng)
        states = np.stack(np.unravel_index(joint, tuple(ns)), axis=1).astype(np.int64)
    else:
        states = np.stack(
            [_draw(np.cumsum(r)[None, :].repeat(n, axis=0), rng) for r in model.rho], axis=1
        )
    na = list(model.n_actions)
    counts = [np.zeros(ns[i] * na[i]) for i in range(agents)]
    nbhd = [_within(dist, i, 1) for i in range(agents)]
    observed = [_within(dist, i, policy.beta) for i in range(agents)]
    pi_cum = [np.cumsum(p, axis=1) for p in policy.probs]
    P_cum = [np.cumsum(k, axis=2) for k in model.kernels]
    w = 1.0
    for t in range(H + int(bugs.skip_first)):
        actions = np.stack(
            [_draw(pi_cum[i][_mixed_radix(states, ns, observed[i])], rng) for i in range(agents)],
            axis=1,
        )
        if t >= int(bugs.skip_first):
            for i in range(agents):
                code = states[:, i] * na[i] + actions[:, i]
                counts[i] += np.bincount(code, minlength=ns[i] * na[i]) * (w / n)
            w *= 1.0 if bugs.undiscounted else model.gamma
        states = np.stack(
            [_draw(P_cum[i][_mixed_radix(states, ns, nbhd[i]), actions[:, i]], rng)
             for i in range(agents)],
            axis=1,
        )
    return [c.reshape(ns[i], na[i]) for i, c in enumerate(counts)]


def local_occupancy_mean(
    model: NetworkedMDP, policy: LocalizedSoftmaxPolicy, H: int, bugs: Bugs = Bugs()
) -> list[FloatArray]:
    """The exact mean of :func:`local_occupancy_estimate` with ``bugs``: the marginals of
    ``sum_{t<H} w_t Pr(s_{t+k}, a_{t+k})``, ``w_t = gamma^t`` (1 when ``undiscounted``),
    ``k = 1`` when ``skip_first`` (the post-step estimator), else 0; computed on the joint
    system by ``H + k`` steps of the state law."""
    j = _joint(model, policy, bugs)
    P_pi = np.einsum("sa,sat->st", j.pi, j.P)
    mu = j.rho.copy()
    for _ in range(int(bugs.skip_first)):
        mu = P_pi.T @ mu
    lam_S, w = np.zeros_like(mu), 1.0
    for _ in range(H):
        lam_S = lam_S + w * mu
        mu = P_pi.T @ mu
        w *= 1.0 if bugs.undiscounted else model.gamma
    lam = lam_S[:, None] * j.pi
    return [_marginal(lam, model, i, bugs) for i in range(model.n)]


def _mean(bugs: Bugs) -> Callable[..., list[FloatArray]]:
    def fn(model: NetworkedMDP, policy: LocalizedSoftmaxPolicy, H: int) -> list[FloatArray]:
        return local_occupancy_mean(model, policy, H, bugs)

    return fn


def _estimator(bugs: Bugs) -> Callable[..., list[FloatArray]]:
    def fn(
        model: NetworkedMDP,
        policy: LocalizedSoftmaxPolicy,
        n: int,
        H: int,
        rng: np.random.Generator,
    ) -> list[FloatArray]:
        return local_occupancy_estimate(model, policy, n, H, rng, bugs)

    return fn


# ------------------------------------------------------------------------------ catalogue
def _cases(bugs: Bugs) -> int:
    return _CORRECT_CASES if bugs == Bugs() else _CASES


def _shadow_run(bugs: Bugs) -> Callable[[], CheckReport]:
    return lambda: check_shadow_reward(_shadow(bugs), cases=_cases(bugs))


def _critic_run(weights: Weights, bugs: Bugs) -> Callable[[], CheckReport]:
    return lambda: check_truncated_critic(
        _critic(weights, bugs), weights=weights, cases=_cases(bugs)
    )


def _estimator_run(bugs: Bugs) -> Callable[[], CheckReport]:
    return lambda: check_local_occupancy_estimator(
        _estimator(bugs), n_trajectories=_TRAJECTORIES, cases=_ESTIMATOR_CASES
    )


MUTANTS = (
    Mutant("shadow-reward-wrong-sign",
           "returns -grad f_i (the gradient of the loss -f_i) as the shadow reward",
           "shadow-reward", _shadow_run(Bugs(sign=True))),
    Mutant("shadow-reward-missing-chain-factor",
           "differentiates the utilities written in d = (1 - gamma) lam with respect to d, "
           "dropping the chain-rule factor (1 - gamma)",
           "shadow-reward", _shadow_run(Bugs(no_chain_factor=True))),
    Mutant("shadow-reward-normalised-occupancy",
           "feeds the normalised d = (1 - gamma) lam_i to utilities that take lam_i",
           "shadow-reward", _shadow_run(Bugs(normalised_occupancy=True))),
    Mutant("shadow-reward-transposed-kernel",
           "computes the occupancy from (I - gamma P_pi) lam_S = rho instead of P_pi^T",
           "shadow-reward", _shadow_run(Bugs(transposed_kernel=True))),
    Mutant("shadow-reward-reversed-agent-order",
           "builds the joint system in the model's order (agent 0 most significant) but "
           "marginalises it to lam_i decoding joint indices with agent 0 least significant",
           "shadow-reward", _shadow_run(Bugs(reversed_agents=True))),
    Mutant("shadow-reward-mismatched-eps",
           "hard-codes the smoothing eps = 1e-8 of the entropy and KL utilities (log(p + 1e-8)) "
           "instead of the utility's own eps",
           "shadow-reward", _shadow_run(Bugs(eps=_HARD_EPS))),
    Mutant("truncated-critic-kappa-plus-one",
           "averages over N_i^{kappa+1} instead of N_i^kappa (one hop too many)",
           "truncated-critic-occupancy", _critic_run("occupancy", Bugs(kappa_shift=1))),
    Mutant("truncated-critic-uniform-weights",
           "averages each group uniformly where occupancy-conditional weights are asked for",
           "truncated-critic-occupancy", _critic_run("occupancy", Bugs(uniform_weights=True))),
    Mutant("truncated-critic-state-weights",
           "weights by the state occupancy lam_S(s) alone, ignoring pi(a|s) of the outside "
           "agents' actions",
           "truncated-critic-occupancy", _critic_run("occupancy", Bugs(state_weights=True))),
    Mutant("truncated-critic-uniform-kappa-minus-one",
           "uniform truncation over N_i^{kappa-1} (one hop too few; N_i^{-1} taken as empty)",
           "truncated-critic-uniform", _critic_run("uniform", Bugs(kappa_shift=-1))),
    Mutant("local-occupancy-estimator-gamma-t-dropped",
           "sums the sampled visit counts without the gamma^t weights",
           "local-occupancy-estimator", _estimator_run(Bugs(undiscounted=True))),
    Mutant("local-occupancy-estimator-off-by-one-horizon",
           "records steps 1..H instead of 0..H-1 (the post-step estimator "
           "sum_{t<H} gamma^t e(s_{t+1}, a_{t+1}); the initial state is never counted)",
           "local-occupancy-estimator", _estimator_run(Bugs(skip_first=True))),
)
"""Wrong implementations, each with the check that must catch it."""

CORRECT = (
    Mutant("shadow-reward",
           "correct implementation: own joint kernel and LU occupancy, marginals, gradients",
           "shadow-reward", _shadow_run(Bugs())),
    Mutant("shadow-reward-declared-eps",
           "correct under its declared parameter: hard-codes eps = 1e-8, checked with eps=1e-8",
           "shadow-reward",
           lambda: check_shadow_reward(_shadow(Bugs(eps=_HARD_EPS)), eps=_HARD_EPS,
                                       cases=_CORRECT_CASES)),
    Mutant("truncated-critic-occupancy",
           "correct implementation: LU shadow Q, groups by z, lam-weighted means",
           "truncated-critic-occupancy", _critic_run("occupancy", Bugs())),
    Mutant("truncated-critic-uniform",
           "correct implementation: LU shadow Q, groups by z, plain means",
           "truncated-critic-uniform", _critic_run("uniform", Bugs())),
    Mutant("truncated-critic-point",
           "correct implementation: LU shadow Q at the all-zero completion",
           "truncated-critic-point", _critic_run("point", Bugs())),
    Mutant("local-occupancy-estimator",
           "correct implementation: vectorised local rollouts with gamma^t-weighted counts",
           "local-occupancy-estimator", _estimator_run(Bugs())),
)
"""Correct implementations, which every check must pass."""

DIAGNOSABLE = (
    KnownBug("shadow-reward-wrong-sign", "returns -grad f_i", _shadow(Bugs(sign=True))),
    KnownBug("shadow-reward-missing-chain-factor", "drops the chain-rule factor (1 - gamma)",
             _shadow(Bugs(no_chain_factor=True))),
    KnownBug("shadow-reward-normalised-occupancy", "feeds d = (1 - gamma) lam_i to f_i",
             _shadow(Bugs(normalised_occupancy=True))),
    KnownBug("shadow-reward-transposed-kernel", "solves with P_pi instead of P_pi^T",
             _shadow(Bugs(transposed_kernel=True))),
    KnownBug("shadow-reward-reversed-agent-order",
             "marginalises with agent 0 least significant", _shadow(Bugs(reversed_agents=True))),
    KnownBug("shadow-reward-mismatched-eps",
             "a hard-coded eps = 1e-8 in place of the utility's eps: declare eps= to check it "
             "with your constant", _shadow(Bugs(eps=_HARD_EPS))),
    KnownBug("truncated-critic-kappa-plus-one", "averages over N_i^{kappa+1}",
             _critic("occupancy", Bugs(kappa_shift=1))),
    KnownBug("truncated-critic-uniform-weights",
             "plain averages where occupancy weights are asked for",
             _critic("occupancy", Bugs(uniform_weights=True))),
    KnownBug("truncated-critic-state-weights", "weights by lam_S(s) alone",
             _critic("occupancy", Bugs(state_weights=True))),
    KnownBug("truncated-critic-uniform-kappa-minus-one", "uniform over N_i^{kappa-1}",
             _critic("uniform", Bugs(kappa_shift=-1))),
    KnownBug("local-occupancy-estimator-gamma-t-dropped",
             "visit counts summed without the gamma^t weights", _mean(Bugs(undiscounted=True))),
    KnownBug("local-occupancy-estimator-off-by-one-horizon",
             "records s_{t+1} instead of s_t, i.e. sum_{t<H} gamma^t e(s_{t+1}, a_{t+1}): "
             "shifted by one step", _mean(Bugs(skip_first=True))),
)
"""The planted bugs in their checks' canonical signatures (for a sampled estimator, its
exact mean as ``fn(model, policy, H)``), which the diagnoses try."""
