"""Exact scoring of a trained policy: its objective, its distance from the optimum, and (for
games) exact MA-PPO's value at the same iteration count (``marl-oracle score``).

A policy trained anywhere (for instance through :func:`reference.envs.parallel_env`) is given
as

* a file (:func:`verify.files.load_agent_policy`, ``localized-theta`` or ``game-policy``);
* per-agent probability tables: networked, ``pi_i`` of shape ``(|O_i|, |A_i|)`` with rows
  indexed by ``o_i = s_{N_i^beta}`` mixed radix (lowest agent most significant, the
  convention of :mod:`verify.files`); games, ``pi^m`` of shape ``(nS, |A^m|)`` (a product
  policy) or the sequential conditionals ``(nS, |A^0|, ..., |A^m|)``; or one joint table
  ``(nS, |A|)``;
* a callable queried on every observation, ``fn(agent, observation) -> probabilities``, with
  the environment's agent names and observations (a ``MultiDiscrete`` vector ``s_{N_i^beta}``
  for networked instances, the state ``s`` for games); for a sequential game policy
  (``sequential=True``) the observation is ``(s, (a^0, ..., a^{m-1}))``;
* an already built :class:`~reference.networked.policy.LocalizedSoftmaxPolicy`,
  :class:`~reference.cooperative.policy.ConditionalPolicy` or
  :class:`~verify.files.AgentPolicy`.

Networked instances: ``F(pi) = (1/n) sum_i f_i(lam_i^pi)`` (SPEC section 2; linear utilities
by default, whose ``f_i = <r_i, lam_i>`` is the value of the environment's rewards) by the
exact solve of :func:`reference.networked.exact.solve`, with certified error
``max_i G_i ||lam_S - lam_S^true||_1`` (``G_i`` the utility's ``gradient_bound``: ``f_i`` is
``G_i``-Lipschitz in l1 and local occupancies are marginals); ``||grad_theta F||`` at
``theta_i = log pi_i`` where the policy has full support (elsewhere the softmax
parameterisation has no finite point); and ``F*`` certified by
:func:`reference.networked.optimum.optimum` (``proofs_notes/optimum.md``).

Games: ``J(pi)`` by one LU solve (:func:`reference.cooperative.exact.evaluate_game`),
``J*`` by certified value iteration, and exact MA-PPO (SPEC section 5, mirror-descent steps
with the tuned ``beta``, last iterate) after ``iterations`` steps from the uniform policy.

Every bad input raises :class:`ScoreError`, naming the agent and the observation.  The
certified errors are derived in ``proofs_notes/environments.md#score``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt

from reference._arrays import FloatArray, stochastic_tolerance
from reference.cooperative.exact import evaluate_game
from reference.cooperative.game import CooperativeMarkovGame
from reference.cooperative.mappo import run_mappo, tuned_beta
from reference.cooperative.policy import ConditionalPolicy
from reference.errors import ModelError, PolicyError
from reference.instances import GAMES, INSTANCES, NetworkedInstance, UtilityKind
from reference.networked.exact import solve
from reference.networked.optimum import optimum
from reference.networked.policy import LocalizedSoftmaxPolicy
from verify.files import (
    AgentPolicy,
    file_kind,
    load_agent_policy,
    load_game_policy,
    load_theta,
)

__all__ = [
    "DEFAULT_MAPPO_ITERATIONS",
    "Score",
    "ScoreError",
    "agent_name",
    "policy_tables",
    "resolve_instance",
    "score",
]

DEFAULT_MAPPO_ITERATIONS = 50
"""MA-PPO iterations of the reference point when none are given."""

MIN_LOG_PROB = -1000.0
"""``theta`` entry standing for probability 0: ``exp(-1000 - log p_max)`` underflows to exactly
0 in float64 for every ``p_max >= 1/|A|`` with ``|A| < e^{255}``, so the softmax reproduces
the zero."""

Policy = (
    str
    | os.PathLike[str]
    | Sequence[npt.ArrayLike]
    | npt.ArrayLike
    | Callable[[str, Any], npt.ArrayLike]
    | LocalizedSoftmaxPolicy
    | ConditionalPolicy
    | AgentPolicy
)


class ScoreError(PolicyError):
    """A policy that cannot be scored; ``agent`` and ``observation`` name the entry."""

    def __init__(self, message: str, agent: str | None = None, observation: Any = None) -> None:
        super().__init__(message)
        self.agent = agent
        self.observation = observation


@dataclass(frozen=True)
class Score:
    """A policy's exact objective and its distance from the optimum.

    Attributes:
        instance: the instance's name.
        kind: ``"networked"`` (objective ``F``, optimum ``F*``) or ``"game"`` (``J``, ``J*``).
        objective: ``F(pi)`` or ``J(pi)``.
        objective_error: certified ``|objective - exact|``.
        gradient_norm: ``||grad_theta F||`` at ``theta = log pi`` (networked, full support
            only), else ``None``.
        optimum: ``F*`` (attained lower end of its certificate) or ``J*``.
        optimum_upper: certified upper bound on the optimum.
        gap: ``optimum - objective``.
        gap_bounds: ``(lo, hi)`` certified to contain ``optimum_true - objective_true``.
        obs_radius: ``beta`` of a networked policy, else ``None``.
        mappo_objective: exact MA-PPO's ``J(pi_K)`` (games), else ``None``.
        mappo_iterations: ``K`` of that run (games), else ``None``.
    """

    instance: str
    kind: Literal["networked", "game"]
    objective: float
    objective_error: float
    gradient_norm: float | None
    optimum: float
    optimum_upper: float
    gap: float
    gap_bounds: tuple[float, float]
    obs_radius: int | None = None
    mappo_objective: float | None = None
    mappo_iterations: int | None = None

    @property
    def mappo_gap(self) -> float | None:
        """``optimum - mappo_objective`` (games), else ``None``."""
        return None if self.mappo_objective is None else self.optimum - self.mappo_objective

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``None`` stays ``null``)."""
        return {
            "instance": self.instance,
            "kind": self.kind,
            "objective": self.objective,
            "objective_error": self.objective_error,
            "gradient_norm": self.gradient_norm,
            "optimum": self.optimum,
            "optimum_upper": self.optimum_upper,
            "gap": self.gap,
            "gap_bounds": list(self.gap_bounds),
            "obs_radius": self.obs_radius,
            "mappo_objective": self.mappo_objective,
            "mappo_iterations": self.mappo_iterations,
            "mappo_gap": self.mappo_gap,
        }


def agent_name(i: int) -> str:
    """The environment's name of agent ``i`` (:func:`reference.envs.agent_names`)."""
    return f"agent_{i}"


def resolve_instance(
    name: str, agents: int | None = None, gamma: float | None = None
) -> NetworkedInstance | CooperativeMarkovGame:
    """A named networked instance (``agents`` agents, default 4) or game."""
    kwargs: dict[str, Any] = {} if gamma is None else {"gamma": gamma}
    if name in INSTANCES:
        return INSTANCES[name](4 if agents is None else agents, **kwargs)
    if name in GAMES:
        if agents is not None:
            kwargs["agents"] = agents
        try:
            return GAMES[name](**kwargs)
        except TypeError as exc:
            raise ModelError(f"game {name!r} does not take these options: {exc}") from exc
    raise ModelError(
        f"instance {name!r} is unknown; expected one of {sorted(INSTANCES) + sorted(GAMES)}"
    )


# ---------------------------------------------------------------------------- policy input
def _row(value: Any, width: int, agent: str, observation: Any) -> FloatArray:
    """One probability vector, checked: finite, length ``width``, non-negative and summing to
    1 within :func:`~reference._arrays.stochastic_tolerance`; renormalised exactly."""
    where = f"{agent} at observation {observation}"
    try:
        p = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ScoreError(
            f"{where}: probabilities {value!r} are not numbers", agent, observation
        ) from exc
    if p.shape != (width,):
        raise ScoreError(
            f"{where}: {p.size} probabilities, expected {width} (one per action)",
            agent,
            observation,
        )
    if not np.isfinite(p).all():
        raise ScoreError(f"{where}: probabilities {p.tolist()} are not finite", agent, observation)
    tol = stochastic_tolerance(width)
    if (p < -tol).any() or abs(float(p.sum()) - 1.0) > tol:
        raise ScoreError(
            f"{where}: probabilities {p.tolist()} sum to {float(p.sum())!r}, expected 1 "
            "(non-negative entries)",
            agent,
            observation,
        )
    p = np.clip(p, 0.0, None)
    out: FloatArray = p / p.sum()
    return out


def _call(fn: Callable[[str, Any], npt.ArrayLike], agent: str, observation: Any) -> Any:
    try:
        return fn(agent, observation)
    except Exception as exc:
        raise ScoreError(
            f"the policy raised {type(exc).__name__} for {agent} at observation "
            f"{observation}: {exc}",
            agent,
            observation,
        ) from exc


def _observations(sizes: Sequence[int]) -> list[tuple[int, ...]]:
    return [tuple(int(x) for x in o) for o in np.ndindex(*sizes)]


def policy_tables(
    instance: NetworkedInstance, policy: Any, obs_radius: int
) -> tuple[FloatArray, ...]:
    """Checked tables ``pi_i[o_i, a_i]``, shape ``(|O_i|, |A_i|)``, from per-agent arrays or a
    callable (module docstring)."""
    model = instance.model
    observed = model.graph.neighbourhoods(obs_radius)
    names = [agent_name(i) for i in range(model.n)]
    out = []
    if callable(policy):
        for i, agent in enumerate(names):
            sizes = [model.n_states[j] for j in observed[i]]
            rows = []
            for o in _observations(sizes):
                obs = np.asarray(o, dtype=np.int64)
                rows.append(_row(_call(policy, agent, obs), model.n_actions[i], agent, o))
            out.append(np.stack(rows))
        return tuple(out)
    if isinstance(policy, np.ndarray) or not isinstance(policy, Sequence):
        raise ScoreError(
            f"policy is a {type(policy).__name__}, expected one table per agent, a callable "
            "or a file"
        )
    if len(policy) != model.n:
        raise ScoreError(f"policy has {len(policy)} tables, expected one per agent ({model.n})")
    for i, (agent, table) in enumerate(zip(names, policy, strict=True)):
        sizes = [model.n_states[j] for j in observed[i]]
        arr = np.asarray(table, dtype=np.float64)
        n_obs = math.prod(sizes)
        if arr.ndim != 2 or arr.shape[0] != n_obs:
            raise ScoreError(
                f"{agent}: table has shape {arr.shape}, expected ({n_obs}, {model.n_actions[i]}) "
                f"(one row per observation of s_N^{obs_radius} = agents {observed[i]})",
                agent,
            )
        out.append(
            np.stack(
                [
                    _row(arr[k], model.n_actions[i], agent, o)
                    for k, o in enumerate(_observations(sizes))
                ]
            )
        )
    return tuple(out)


def _localized(
    instance: NetworkedInstance, tables: Sequence[FloatArray], obs_radius: int
) -> LocalizedSoftmaxPolicy:
    """``theta_i = log pi_i`` (``MIN_LOG_PROB`` for zeros): the softmax gives back ``pi_i``."""
    theta = tuple(np.where(t > 0, np.log(np.where(t > 0, t, 1.0)), MIN_LOG_PROB) for t in tables)
    return LocalizedSoftmaxPolicy(instance.model, obs_radius, theta)


def _game_policy(game: CooperativeMarkovGame, policy: Any, sequential: bool) -> ConditionalPolicy:
    n, n_s, counts = game.n_agents, game.n_states, game.action_counts
    names = [agent_name(m) for m in range(n)]
    if callable(policy):
        conds = []
        for m, agent in enumerate(names):
            if sequential:
                table = np.empty((n_s, *counts[:m], counts[m]))
                for s in range(n_s):
                    for prev in np.ndindex(*counts[:m]):
                        context = (s, tuple(int(x) for x in prev))
                        table[(s, *prev)] = _row(
                            _call(policy, agent, context), counts[m], agent, context
                        )
            else:
                rows = [_row(_call(policy, agent, s), counts[m], agent, s) for s in range(n_s)]
                flat = np.stack(rows)
                table = np.broadcast_to(
                    flat.reshape((n_s,) + (1,) * m + (counts[m],)), (n_s, *counts[: m + 1])
                ).copy()
            conds.append(table)
        return ConditionalPolicy(game, tuple(conds))
    if isinstance(policy, np.ndarray) and policy.ndim == 2 and policy.shape == (
        n_s,
        game.n_joint_actions,
    ) and n > 1:
        rows = [_row(policy[s], game.n_joint_actions, "joint", s) for s in range(n_s)]
        return ConditionalPolicy.from_joint(game, np.stack(rows))
    if isinstance(policy, np.ndarray) or not isinstance(policy, Sequence):
        raise ScoreError(
            f"policy is a {type(policy).__name__}, expected one table per agent, a joint "
            f"({n_s}, {game.n_joint_actions}) table, a callable or a file"
        )
    if len(policy) != n:
        raise ScoreError(f"policy has {len(policy)} tables, expected one per agent ({n})")
    conds = []
    for m, (agent, table) in enumerate(zip(names, policy, strict=True)):
        arr = np.asarray(table, dtype=np.float64)
        product, conditional = (n_s, counts[m]), (n_s, *counts[: m + 1])
        if arr.shape not in (product, conditional):
            raise ScoreError(
                f"{agent}: table has shape {arr.shape}, expected {product} (per state) or "
                f"{conditional} (per state and earlier actions)",
                agent,
            )
        checked = np.empty(arr.shape)
        for idx in np.ndindex(*arr.shape[:-1]):
            obs: Any = idx[0] if len(idx) == 1 else (idx[0], tuple(idx[1:]))
            checked[idx] = _row(arr[idx], counts[m], agent, obs)
        if arr.shape != conditional:
            checked = np.broadcast_to(
                checked.reshape((n_s,) + (1,) * m + (counts[m],)), conditional
            ).copy()
        conds.append(checked)
    return ConditionalPolicy(game, tuple(conds))


def _from_file(instance: NetworkedInstance | CooperativeMarkovGame, path: Any) -> Any:
    kind = file_kind(path)
    if kind == "agent-policy":
        loaded: AgentPolicy = load_agent_policy(path)
        return loaded
    if kind == "localized-theta" and isinstance(instance, NetworkedInstance):
        return load_theta(path, instance.model)
    if kind == "game-policy" and isinstance(instance, CooperativeMarkovGame):
        return load_game_policy(path, instance)
    raise ScoreError(f"{os.fspath(path)}: a {kind!r} file is not a policy of {_name(instance)}")


def _name(instance: NetworkedInstance | CooperativeMarkovGame) -> str:
    return instance.name


# ---------------------------------------------------------------------------- scoring
def score(
    instance: NetworkedInstance | CooperativeMarkovGame,
    policy: Policy,
    *,
    obs_radius: int | None = None,
    utilities: UtilityKind = "linear",
    sequential: bool = False,
    iterations: int | None = None,
    gap: float = 1e-9,
) -> Score:
    """Score ``policy`` on ``instance`` exactly (module docstring).

    Args:
        instance: a networked instance or a cooperative game.
        policy: see the module docstring.
        obs_radius: ``beta`` of a networked policy given as tables or a callable (default 1,
            the environment's default); a file or a ``LocalizedSoftmaxPolicy`` carries its own.
        utilities: the networked utilities (``"linear"``: the environment's rewards).
        sequential: a game callable is queried with ``(s, earlier actions)``.
        iterations: ``K`` of the MA-PPO reference point (games).
        gap: requested certified duality gap of ``F*`` (networked).
    """
    if not isinstance(cast(object, instance), (NetworkedInstance, CooperativeMarkovGame)):
        raise ModelError(
            f"instance is a {type(instance).__name__}, expected a NetworkedInstance or a "
            "CooperativeMarkovGame"
        )
    if isinstance(policy, (str, os.PathLike)):
        policy = _from_file(instance, policy)
    if isinstance(policy, AgentPolicy):
        if isinstance(instance, CooperativeMarkovGame) and policy.obs_radius != 0:
            raise ScoreError(
                f"policy file has obs_radius {policy.obs_radius}; game agents observe the state, "
                "expected obs_radius 0"
            )
        obs_radius = policy.obs_radius
        policy = list(policy.tables)
    if isinstance(instance, NetworkedInstance):
        return _score_networked(instance, policy, obs_radius, utilities, gap)
    return _score_game(instance, policy, sequential, iterations)


def _score_networked(
    instance: NetworkedInstance,
    policy: Any,
    obs_radius: int | None,
    kind: UtilityKind,
    gap: float,
) -> Score:
    model = instance.model
    if isinstance(policy, LocalizedSoftmaxPolicy):
        if policy.model is not model and policy.model.n_states != model.n_states:
            raise ScoreError("the policy was built for a different model")
        beta = policy.beta
        localized = LocalizedSoftmaxPolicy(model, beta, policy.theta)
        full_support = True
    else:
        beta = 1 if obs_radius is None else obs_radius
        if isinstance(beta, bool) or not isinstance(beta, (int, np.integer)) or beta < 0:
            raise ScoreError(f"obs_radius = {beta!r}, expected a non-negative integer")
        beta = int(beta)
        tables = policy_tables(instance, policy, beta)
        localized = _localized(instance, tables, beta)
        full_support = all(bool((t > 0).all()) for t in tables)
    utils = instance.utilities(kind)
    sol = solve(model, localized, utils)
    lipschitz = max(f.constants.gradient_bound for f in utils)
    f_err = lipschitz * sol.occupancy_error_bound
    opt = optimum(model, utils, gap=gap)
    lo = opt.value - sol.objective - f_err
    hi = opt.upper_bound - sol.objective + f_err
    return Score(
        instance=instance.name,
        kind="networked",
        objective=sol.objective,
        objective_error=f_err,
        gradient_norm=sol.gradient_norm if full_support else None,
        optimum=opt.value,
        optimum_upper=opt.upper_bound,
        gap=opt.value - sol.objective,
        gap_bounds=(lo, hi),
        obs_radius=beta,
    )


def _score_game(
    game: CooperativeMarkovGame, policy: Any, sequential: bool, iterations: int | None
) -> Score:
    if isinstance(policy, ConditionalPolicy):
        cond = policy if policy.game is game else ConditionalPolicy(game, policy.conditionals)
    else:
        cond = _game_policy(game, policy, sequential)
    values = evaluate_game(game, cond)
    star = game.optimal()
    K = DEFAULT_MAPPO_ITERATIONS if iterations is None else iterations
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 1:
        raise ModelError(f"iterations = {K!r}, expected a positive integer")
    mappo = run_mappo(
        game, int(K), tuned_beta(game.n_agents, game.log_action_count, game.gamma), output="last"
    )
    err = values.error_bound
    return Score(
        instance=game.name,
        kind="game",
        objective=values.J,
        objective_error=err,
        gradient_norm=None,
        optimum=star.J,
        optimum_upper=star.J + star.error_bound,
        gap=star.J - values.J,
        gap_bounds=(
            star.J - star.error_bound - values.J - err,
            star.J + star.error_bound - values.J + err,
        ),
        mappo_objective=float(mappo.J[-1]),
        mappo_iterations=int(K),
    )
