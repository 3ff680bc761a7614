"""PettingZoo parallel environments that *are* the named instances (SPEC sections 2, 5, 7).

``parallel_env(name, **options)`` returns a ``pettingzoo.ParallelEnv`` whose dynamics are
exactly the model's, so a training loop written for PettingZoo (MAPPO, HAPPO, independent
learners, BenchMARL, TorchRL, ...) runs on an instance whose exact answer
(:mod:`verify.score`) is known.

Networked instances (:data:`reference.instances.INSTANCES`).  Agent ``i`` observes
``o_i = s_{N_i^beta}`` (``beta = obs_radius``), the local states of the agents within
``beta`` hops in increasing agent order, as a ``MultiDiscrete`` vector; it acts in
``Discrete(|A_i|)`` and receives the local reward ``r_i(s_i, a_i)`` of the linear utility
(the instance's ``rewards``) at the state-action pair it acted from.  ``infos[agent]`` holds
``local_state`` (``s_i``) and ``state`` (the joint ``s``, agent-major) *after* the step.
One step draws every agent's next local state at once from the factored kernels,
``s'_i ~ P_i(. | s_{N_i}, a_i)``, by inverse CDF over one ``(n,)`` batch of uniforms (the
lookup of :mod:`reference.networked.sampling`); no joint kernel is formed.

Cooperative games (:data:`reference.instances.GAMES`).  Every agent observes the joint
state ``s`` (``Discrete(nS)``), acts in ``Discrete(|A^m|)`` and receives the shared reward
``r(s, a)``; ``infos[agent]["state"] = s``.

Episodes (declared in ``metadata["episode"]``):

* ``horizon=H``: ``H`` transitions, then every agent is *truncated*; the undiscounted return
  estimates ``sum_{t<H} E r_t``.
* ``horizon=None`` (default), *discount as termination*: after each transition the episode
  *terminates* with probability ``1 - gamma``, independently of everything else, so step
  ``t`` is reached with probability ``gamma^t`` and the *undiscounted* return is an unbiased
  estimate of ``V(s^0) = sum_t gamma^t E r_t``: of ``J`` for games, and of the linear
  utility value ``<r_i, lam_i>`` per agent (its mean over agents is ``F``) for networked
  instances (``proofs_notes/environments.md#discount-termination``).

Randomness: ``reset(seed=k)`` sets the environment's generator to
``numpy.random.default_rng(k)``; ``reset()`` continues the current generator.  Per step the
draws are, in this order, the next states' uniforms and then (discount episodes) the
termination uniform, so a whole trajectory is a deterministic function of the seed and the
actions (``proofs_notes/environments.md#seeding``).

The ``envs`` extra (``pettingzoo``, ``gymnasium``) is imported only when an environment is
built; without it :func:`parallel_env` raises :class:`EnvDependencyError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

from reference._arrays import FloatArray, IntArray
from reference.cooperative.game import CooperativeMarkovGame
from reference.errors import ModelError
from reference.instances import GAMES, INSTANCES, NetworkedInstance
from reference.networked.sampling import (
    _draw_initial,
    _initial_table,
    _Lookup,
    _offsets,
    _row_matrix,
    _thresholds,
)

if TYPE_CHECKING:
    from gymnasium import spaces

__all__ = [
    "ENV_NAMES",
    "EnvDependencyError",
    "GameParallelEnv",
    "NetworkedParallelEnv",
    "agent_names",
    "parallel_env",
]

Episode = Literal["horizon", "discount"]

ENV_NAMES = (*INSTANCES, *GAMES)
"""Every name :func:`parallel_env` accepts: the networked instances, then the games."""


class EnvDependencyError(ImportError):
    """The ``envs`` extra (``pettingzoo``, ``gymnasium``) is not installed."""


def _require_extra() -> tuple[Any, Any]:
    try:
        import gymnasium.spaces as gym_spaces
        import pettingzoo
    except ImportError as exc:
        raise EnvDependencyError(
            f"reference.envs needs the 'envs' extra: pip install 'marl-oracle[envs]' ({exc})"
        ) from exc
    return gym_spaces, pettingzoo.ParallelEnv


def agent_names(n: int) -> tuple[str, ...]:
    """``("agent_0", ..., "agent_{n-1}")``: agent ``i`` of the model is ``agent_i``."""
    return tuple(f"agent_{i}" for i in range(n))


def _check_horizon(horizon: Any) -> int | None:
    if horizon is None:
        return None
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise ModelError(f"horizon = {horizon!r}, expected a positive integer or None")
    return int(horizon)


class _Base:
    """The parts of the ``ParallelEnv`` protocol shared by both environments."""

    metadata: dict[str, Any]
    possible_agents: list[str]
    agents: list[str]
    horizon: int | None
    gamma: float
    max_cycles: int
    _rng: np.random.Generator
    _t: int
    _observation_spaces: dict[str, spaces.Space[Any]]
    _action_spaces: dict[str, spaces.Discrete]

    def _setup(self, name: str, n: int, gamma: float, horizon: int | None) -> None:
        self.horizon = _check_horizon(horizon)
        self.gamma = float(gamma)
        episode: Episode = "discount" if self.horizon is None else "horizon"
        self.metadata = {
            "name": name,
            "render_modes": [],
            "is_parallelizable": True,
            "episode": episode,
            "gamma": self.gamma,
            "horizon": self.horizon,
        }
        self.possible_agents = list(agent_names(n))
        self.agents = []
        self.max_cycles = 0 if self.horizon is None else self.horizon
        self._rng = np.random.default_rng()
        self._t = 0

    @property
    def episode(self) -> Episode:
        """``"horizon"`` (truncation after ``horizon`` steps) or ``"discount"``
        (termination with probability ``1 - gamma`` after every step)."""
        out: Episode = self.metadata["episode"]
        return out

    @property
    def num_agents(self) -> int:
        return len(self.agents)

    @property
    def max_num_agents(self) -> int:
        return len(self.possible_agents)

    @property
    def unwrapped(self) -> _Base:
        return self

    def observation_space(self, agent: str) -> spaces.Space[Any]:
        """Agent's observation space (the same object on every call)."""
        return self._observation_spaces[self._agent(agent)]

    def action_space(self, agent: str) -> spaces.Discrete:
        """Agent's action space ``Discrete(|A_i|)`` (the same object on every call)."""
        return self._action_spaces[self._agent(agent)]

    def _agent(self, agent: str) -> str:
        if agent not in self._action_spaces:
            raise ModelError(f"agent {agent!r} is not one of {self.possible_agents}")
        return agent

    def _seed(self, seed: int | None) -> None:
        if seed is not None:
            self._rng = np.random.default_rng(seed)

    def _read_actions(self, actions: Mapping[str, Any]) -> IntArray:
        if not self.agents:
            raise ModelError("step() called on a finished episode; call reset() first")
        out = np.empty(len(self.possible_agents), dtype=np.int64)
        for i, agent in enumerate(self.possible_agents):
            if agent not in actions:
                raise ModelError(f"actions has no entry for {agent}")
            raw = actions[agent]
            k = self._action_spaces[agent].n
            try:
                a = int(raw)
            except (TypeError, ValueError) as exc:
                raise ModelError(f"actions[{agent!r}] = {raw!r}, expected an integer") from exc
            if a != raw or not 0 <= a < k:
                raise ModelError(f"actions[{agent!r}] = {raw!r}, expected an integer in 0..{k - 1}")
            out[i] = a
        return out

    def _finish(self) -> tuple[bool, bool]:
        """Advance time; draw the discount termination; return (terminated, truncated)."""
        self._t += 1
        if self.horizon is None:
            terminated = bool(self._rng.random() >= self.gamma)
            return terminated, False
        return False, self._t >= self.horizon

    def render(self) -> None:
        """No rendering."""
        return None

    def close(self) -> None:
        """Nothing to release."""
        return None


_EnvT = TypeVar("_EnvT", bound=_Base)


class NetworkedParallelEnv(_Base):
    """A networked instance as a parallel environment (module docstring).

    Args:
        instance: the networked instance (its model and local rewards).
        obs_radius: ``beta``, agent ``i`` observes ``s_{N_i^beta}``.
        horizon: episode length, or ``None`` for discount-as-termination.
    """

    def __init__(
        self, instance: NetworkedInstance, obs_radius: int = 1, horizon: int | None = None
    ) -> None:
        gym_spaces, _ = _require_extra()
        if isinstance(obs_radius, bool) or not isinstance(obs_radius, (int, np.integer)):
            raise ModelError(f"obs_radius = {obs_radius!r}, expected a non-negative integer")
        if obs_radius < 0:
            raise ModelError(f"obs_radius = {obs_radius!r}, expected a non-negative integer")
        model = instance.model
        self.instance = instance
        self.model = model
        self.obs_radius = int(obs_radius)
        self.observed = model.graph.neighbourhoods(self.obs_radius)
        self._setup(instance.name, model.n, model.gamma, horizon)
        self._observation_spaces = {
            agent: gym_spaces.MultiDiscrete(
                np.array([model.n_states[j] for j in self.observed[i]], dtype=np.int64)
            )
            for i, agent in enumerate(self.possible_agents)
        }
        self._action_spaces = {
            agent: gym_spaces.Discrete(model.n_actions[i])
            for i, agent in enumerate(self.possible_agents)
        }
        self.state_space = gym_spaces.MultiDiscrete(np.array(model.n_states, dtype=np.int64))
        n = model.n
        self._kernel = _Lookup(
            _row_matrix(
                model.neighbourhoods,
                model.n_states,
                model.n_actions,
                _offsets([k.shape[0] * k.shape[1] for k in model.kernels]),
                with_action=True,
            ),
            _thresholds(model.kernels, max(model.n_states)),
        )
        self._initial = _initial_table(model)
        self._z = np.ones((2 * n + 1, 1), dtype=np.int64)
        self._s: IntArray = np.zeros(n, dtype=np.int64)
        self._rewards = instance.rewards

    def observation_index(self, agent: str, observation: Any) -> int:
        """Mixed-radix index of ``o_i`` (lowest agent most significant, SPEC section 0): the
        row of a policy table ``(|O_i|, |A_i|)`` for this observation."""
        i = self.possible_agents.index(self._agent(agent))
        sizes = [self.model.n_states[j] for j in self.observed[i]]
        return int(np.ravel_multi_index(tuple(int(x) for x in observation), sizes))

    def state(self) -> IntArray:
        """The joint state ``s`` (agent-major)."""
        return self._s.copy()

    def _observations(self) -> dict[str, IntArray]:
        return {
            agent: self._s[list(self.observed[i])].copy()
            for i, agent in enumerate(self.possible_agents)
        }

    def _infos(self) -> dict[str, dict[str, Any]]:
        return {
            agent: {"local_state": int(self._s[i]), "state": self._s.copy()}
            for i, agent in enumerate(self.possible_agents)
        }

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, IntArray], dict[str, dict[str, Any]]]:
        """``s^0 ~ rho``; returns observations and infos of every agent."""
        self._seed(seed)
        self._s = _draw_initial(self.model, self._initial, 1, self._rng)[:, 0].copy()
        self._t = 0
        self.agents = list(self.possible_agents)
        return self._observations(), self._infos()

    def step(self, actions: Mapping[str, Any]) -> tuple[
        dict[str, IntArray],
        dict[str, float],
        dict[str, bool],
        dict[str, bool],
        dict[str, dict[str, Any]],
    ]:
        """One transition ``s'_i ~ P_i(. | s_{N_i}, a_i)`` for every agent at once."""
        a = self._read_actions(actions)
        n = self.model.n
        rewards = {
            agent: float(self._rewards[i][self._s[i], a[i]])
            for i, agent in enumerate(self.possible_agents)
        }
        self._z[:n, 0] = self._s
        self._z[n : 2 * n, 0] = a
        u = self._rng.random((n, 1))
        nxt = np.empty((n, 1), dtype=np.int64)
        self._kernel.draw(self._z, u, nxt)
        self._s = nxt[:, 0].copy()
        terminated, truncated = self._finish()
        agents = list(self.agents)
        if terminated or truncated:
            self.agents = []
        return (
            self._observations(),
            rewards,
            dict.fromkeys(agents, terminated),
            dict.fromkeys(agents, truncated),
            self._infos(),
        )


class GameParallelEnv(_Base):
    """A cooperative Markov game as a parallel environment (module docstring).

    Args:
        game: the game.
        horizon: episode length, or ``None`` for discount-as-termination.
    """

    def __init__(self, game: CooperativeMarkovGame, horizon: int | None = None) -> None:
        gym_spaces, _ = _require_extra()
        self.game = game
        self._setup(game.name, game.n_agents, game.gamma, horizon)
        shared = gym_spaces.Discrete(game.n_states)
        self._observation_spaces = dict.fromkeys(self.possible_agents, shared)
        self._action_spaces = {
            agent: gym_spaces.Discrete(k)
            for agent, k in zip(self.possible_agents, game.action_counts, strict=True)
        }
        self.state_space = shared
        n_s = game.n_states
        flat = game.P.reshape(n_s * game.n_joint_actions, n_s)
        self._cum: FloatArray = np.cumsum(flat, axis=1)
        self._cum[:, -1] = 1.0
        self._rho_cum: FloatArray = np.cumsum(game.rho)
        self._rho_cum[-1] = 1.0
        self._r = game.r
        self._s = 0

    def state(self) -> IntArray:
        """The joint state ``s`` as a one-entry array."""
        return np.array([self._s], dtype=np.int64)

    def _observations(self) -> dict[str, int]:
        return dict.fromkeys(self.agents or self.possible_agents, self._s)

    def _infos(self) -> dict[str, dict[str, Any]]:
        return {agent: {"state": self._s} for agent in self.possible_agents}

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, int], dict[str, dict[str, Any]]]:
        """``s^0 ~ rho``."""
        self._seed(seed)
        self._s = int(np.searchsorted(self._rho_cum, self._rng.random(), side="right"))
        self._t = 0
        self.agents = list(self.possible_agents)
        return self._observations(), self._infos()

    def step(self, actions: Mapping[str, Any]) -> tuple[
        dict[str, int],
        dict[str, float],
        dict[str, bool],
        dict[str, bool],
        dict[str, dict[str, Any]],
    ]:
        """``s' ~ P(. | s, a)`` with the shared reward ``r(s, a)`` for every agent."""
        a = self._read_actions(actions)
        reward = float(self._r[(self._s, *a.tolist())])
        joint = int(np.ravel_multi_index(tuple(a.tolist()), self.game.action_counts))
        row = self._s * self.game.n_joint_actions + joint
        self._s = int(np.searchsorted(self._cum[row], self._rng.random(), side="right"))
        terminated, truncated = self._finish()
        agents = list(self.agents)
        if terminated or truncated:
            self.agents = []
        obs = dict.fromkeys(self.possible_agents, self._s)
        return (
            obs,
            dict.fromkeys(agents, reward),
            dict.fromkeys(agents, terminated),
            dict.fromkeys(agents, truncated),
            self._infos(),
        )


_SUBCLASSES: dict[type[Any], type[Any]] = {}


def _with_base(cls: type[_EnvT]) -> type[_EnvT]:
    """``cls`` with ``pettingzoo.ParallelEnv`` as a second base, built once (so frameworks
    that test ``isinstance(env, ParallelEnv)`` accept it); our methods come first."""
    if cls not in _SUBCLASSES:
        _, parallel = _require_extra()
        _SUBCLASSES[cls] = type(cls.__name__, (cls, parallel), {"__module__": __name__})
    out: type[_EnvT] = _SUBCLASSES[cls]
    return out


def parallel_env(name: str, **options: Any) -> NetworkedParallelEnv | GameParallelEnv:
    """The named instance as a ``pettingzoo.ParallelEnv`` (module docstring).

    Networked names (:data:`reference.instances.INSTANCES`): options ``agents`` (``n``,
    default 4), ``gamma`` (the instance's default), ``obs_radius`` (``beta``, default 1),
    ``horizon`` (default ``None``: discount as termination).  Game names
    (:data:`reference.instances.GAMES`): ``horizon`` and the game's own options (``gamma``;
    ``agents``, ``actions`` for ``rare-stall``).

    Examples: ``parallel_env("line-message", agents=4, obs_radius=1)``,
    ``parallel_env("climbing", horizon=20)``.
    """
    opts = dict(options)
    horizon = opts.pop("horizon", None)
    if name in INSTANCES:
        n = opts.pop("agents", 4)
        beta = opts.pop("obs_radius", 1)
        ctor: Callable[..., NetworkedInstance] = INSTANCES[name]
        try:
            instance = ctor(n, **opts)
        except TypeError as exc:
            raise ModelError(f"{name}: unknown option in {sorted(options)} ({exc})") from exc
        return _with_base(NetworkedParallelEnv)(instance, beta, horizon)
    if name in GAMES:
        make: Callable[..., CooperativeMarkovGame] = GAMES[name]
        try:
            game = make(**opts)
        except TypeError as exc:
            raise ModelError(f"{name}: unknown option in {sorted(options)} ({exc})") from exc
        return _with_base(GameParallelEnv)(game, horizon)
    raise ModelError(f"environment {name!r} is unknown; expected one of {list(ENV_NAMES)}")
