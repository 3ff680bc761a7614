"""The PettingZoo environments are the models: API, seeding over whole trajectories, and
empirical transition frequencies against the kernels (``reference/envs.py``)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test
from pettingzoo.utils.env import ParallelEnv

from reference.cooperative.game import CooperativeMarkovGame
from reference.envs import (
    ENV_NAMES,
    GameParallelEnv,
    NetworkedParallelEnv,
    parallel_env,
)
from reference.errors import ModelError
from reference.instances import climbing, line_message, ratio
from reference.networked.model import NetworkedMDP
from verify.bounds import l1_radius, split_delta

SMALL: dict[str, dict[str, Any]] = {
    "line-message": {"agents": 4, "obs_radius": 1},
    "line-message-mixed": {"agents": 3, "obs_radius": 0},
    "shift-chain": {"agents": 3},
    "wireless": {"agents": 2},
    "wireless-mixed": {"agents": 2},
    "climbing": {},
    "ratio": {},
    "rare-stall": {},
}


def test_every_name_is_covered() -> None:
    assert set(SMALL) == set(ENV_NAMES)


@pytest.mark.parametrize("horizon", [None, 7])
@pytest.mark.parametrize("name", sorted(SMALL))
def test_pettingzoo_api_and_seed_tests(name: str, horizon: int | None) -> None:
    env = parallel_env(name, horizon=horizon, **SMALL[name])
    assert isinstance(env, ParallelEnv)
    assert env.metadata["episode"] == ("discount" if horizon is None else "horizon")
    parallel_api_test(env, num_cycles=200)
    parallel_seed_test(lambda: parallel_env(name, horizon=horizon, **SMALL[name]))


def trajectory(env: Any, seed: int, steps: int) -> list[Any]:
    """``steps`` transitions over as many episodes as they take: reset with ``seed`` once,
    then unseeded resets; actions from a generator seeded independently of the env."""
    actions_rng = np.random.default_rng(12345)
    record: list[Any] = []
    obs, _ = env.reset(seed=seed)
    record.append(("reset", {k: np.asarray(v).tolist() for k, v in obs.items()}))
    for _ in range(steps):
        if not env.agents:
            obs, _ = env.reset()
            record.append(("reset", {k: np.asarray(v).tolist() for k, v in obs.items()}))
        acts = {a: int(actions_rng.integers(env.action_space(a).n)) for a in env.agents}
        obs, rew, term, trunc, _ = env.step(acts)
        record.append(
            (
                {k: np.asarray(v).tolist() for k, v in obs.items()},
                rew,
                term,
                trunc,
                env.state().tolist(),
            )
        )
    return record


@pytest.mark.parametrize("name", sorted(SMALL))
def test_whole_trajectories_repeat_under_a_seed(name: str) -> None:
    first = trajectory(parallel_env(name, **SMALL[name]), 7, 300)
    again = trajectory(parallel_env(name, **SMALL[name]), 7, 300)
    other = trajectory(parallel_env(name, **SMALL[name]), 8, 300)
    assert first == again
    # 300 steps of discount-as-termination episodes: the episode ends alone differ between
    # two seeds except with probability far below 1e-9 (every game and instance here has
    # gamma in (0, 1)), so this comparison can fail
    assert first != other


class _SeededOnlyOnce(NetworkedParallelEnv):
    """Planted defect: after the first transition of an episode the environment draws
    from fresh entropy, so one seeded step repeats but a trajectory does not."""

    def _finish(self) -> tuple[bool, bool]:
        out = super()._finish()
        if self._t == 1:
            self._rng = np.random.default_rng()
        return out


def test_planted_unseeded_later_steps_caught() -> None:
    make = lambda: _SeededOnlyOnce(line_message(4), 1)  # noqa: E731
    one_step_a, one_step_b = trajectory(make(), 3, 1), trajectory(make(), 3, 1)
    assert one_step_a == one_step_b  # a one-step check passes the defect
    assert trajectory(make(), 3, 300) != trajectory(make(), 3, 300)


# ---------------------------------------------------------------- transition frequencies
DELTA = 1e-9
"""False-alarm probability of each frequency test (union bound over its rows)."""
PER_ROW = 1200
"""Draws used per kernel row, fixed in advance."""


def _frequency_violations(
    rows: list[tuple[int, int]], kernel_rows: dict[int, np.ndarray], n_rows: int
) -> tuple[list[int], list[int]]:
    """Compare the first ``PER_ROW`` next-state draws of every visited row with its kernel row.

    Given the row, each draw is an independent sample of the row's distribution (the
    environment uses a fresh uniform per draw), so the first ``PER_ROW`` draws of a row are
    i.i.d. whatever the visiting order; ``l1_radius`` (McDiarmid, ``verify/bounds.py``) with
    ``delta / n_rows`` per row bounds the false-alarm probability of the whole test by
    ``DELTA``.  Returns (rows tested, rows failing).
    """
    draws: dict[int, list[int]] = {}
    for row, nxt in rows:
        draws.setdefault(row, []).append(nxt)
    per_row = split_delta(DELTA, n_rows)
    tested: list[int] = []
    failing: list[int] = []
    for row, xs in draws.items():
        if len(xs) < PER_ROW:
            continue
        tested.append(row)
        p = kernel_rows[row]
        freq = np.bincount(np.asarray(xs[:PER_ROW]), minlength=p.size) / PER_ROW
        if np.abs(freq - p).sum() > l1_radius(PER_ROW, p.size, 1.0, per_row):
            failing.append(row)
    return tested, failing


def _networked_transitions(env: NetworkedParallelEnv, steps: int) -> list[tuple[int, int]]:
    """(flat row of agent i's kernel, next local state) for every agent and step, with
    uniformly random actions; row ``= offset_i + |A_i| index(s_{N_i}) + a_i``."""
    model = env.model
    offsets = np.cumsum([0] + [k.shape[0] * k.shape[1] for k in model.kernels])
    rng = np.random.default_rng(2024)
    env.reset(seed=11)
    out = []
    for _ in range(steps):
        if not env.agents:
            env.reset()
        s = env.state()
        acts = {a: int(rng.integers(env.action_space(a).n)) for a in env.agents}
        env.step(acts)
        nxt = env.state()
        for i, agent in enumerate(env.possible_agents):
            nb = model.neighbourhoods[i]
            idx = int(np.ravel_multi_index(tuple(s[list(nb)]), [model.n_states[j] for j in nb]))
            row = int(offsets[i] + idx * model.n_actions[i] + acts[agent])
            out.append((row, int(nxt[i])))
    return out


def _networked_rows(model: NetworkedMDP) -> dict[int, np.ndarray]:
    flat = np.concatenate([k.reshape(-1, k.shape[-1]) for k in model.kernels])
    return dict(enumerate(flat))


def _planted_line_message() -> tuple[NetworkedMDP, int]:
    """line-message n = 3 with agent 1's row ``s_N = (1, 1, 0), a_1 = 1`` changed from
    ``(0.2, 0.8)`` to ``(0.45, 0.55)``: an l1 error of 0.5.  Returns the model and the flat
    row."""
    model = line_message(3).model
    kernels = [np.array(k) for k in model.kernels]
    idx = int(np.ravel_multi_index((1, 1, 0), (2, 2, 2)))
    kernels[1][idx, 1] = (0.45, 0.55)
    row = model.kernels[0].shape[0] * 2 + idx * 2 + 1
    return dataclasses.replace(model, kernels=tuple(kernels)), row


def test_networked_frequencies_match_the_kernels() -> None:
    instance = line_message(3)
    env = NetworkedParallelEnv(instance, 1, horizon=30)
    rows = _networked_rows(instance.model)
    tested, failing = _frequency_violations(_networked_transitions(env, 30000), rows, len(rows))
    assert _planted_line_message()[1] in tested  # the row the planted defect changes
    assert len(tested) >= 8
    assert failing == []


def test_networked_frequency_test_catches_a_wrong_row() -> None:
    instance = line_message(3)
    wrong, row = _planted_line_message()
    env = NetworkedParallelEnv(dataclasses.replace(instance, model=wrong), 1, horizon=30)
    rows = _networked_rows(instance.model)
    _, failing = _frequency_violations(_networked_transitions(env, 30000), rows, len(rows))
    assert failing == [row]


def _game_transitions(env: GameParallelEnv, steps: int) -> list[tuple[int, int]]:
    game = env.game
    rng = np.random.default_rng(99)
    env.reset(seed=5)
    out = []
    for _ in range(steps):
        if not env.agents:
            env.reset()
        s = int(env.state()[0])
        acts = {a: int(rng.integers(env.action_space(a).n)) for a in env.agents}
        joint = int(np.ravel_multi_index(tuple(acts.values()), game.action_counts))
        env.step(acts)
        out.append((s * game.n_joint_actions + joint, int(env.state()[0])))
    return out


def test_game_frequencies_match_the_kernel_and_catch_a_wrong_row() -> None:
    game = ratio()
    flat = game.P.reshape(-1, game.n_states)
    rows = dict(enumerate(flat))
    env = GameParallelEnv(game, horizon=2)
    tested, failing = _frequency_violations(_game_transitions(env, 12000), rows, len(rows))
    assert set(range(game.n_joint_actions)) <= set(tested)  # every row of the play state
    assert failing == []
    # planted defect: the stay probability of (a0, a1) = (1, 1) read from the row of (1, 0)
    P = np.array(game.P)
    P[0, 1, 1] = (0.55, 0.45)
    wrong = CooperativeMarkovGame(P, game.r, game.rho, game.gamma, "ratio")
    env = GameParallelEnv(wrong, horizon=2)
    _, failing = _frequency_violations(_game_transitions(env, 12000), rows, len(rows))
    assert failing == [3]


def test_discount_termination_has_the_geometric_law() -> None:
    """Discount as termination: an episode survives its first step with probability gamma
    (``P(T > t) = gamma^t`` at ``t = 1``), within a Hoeffding radius at ``DELTA``."""
    from verify.bounds import hoeffding_radius

    env = parallel_env("climbing", gamma=0.5)
    env.reset(seed=0)
    episodes, long = 4000, 0
    for _ in range(episodes):
        env.reset()
        env.step({a: 0 for a in env.agents})
        long += bool(env.agents)
    assert abs(long / episodes - 0.5) <= hoeffding_radius(episodes, 1.0, DELTA)


def test_bad_actions_and_names_are_typed_errors() -> None:
    env = parallel_env("climbing")
    env.reset(seed=0)
    with pytest.raises(ModelError, match="agent_1"):
        env.step({"agent_0": 0})
    with pytest.raises(ModelError, match=r"actions\['agent_0'\] = 3"):
        env.step({"agent_0": 3, "agent_1": 0})
    with pytest.raises(ModelError, match="unknown"):
        parallel_env("no-such-instance")
    with pytest.raises(ModelError, match="horizon"):
        parallel_env("climbing", horizon=0)
    with pytest.raises(ModelError, match="obs_radius"):
        parallel_env("line-message", obs_radius=-1)
    assert isinstance(climbing(), CooperativeMarkovGame)


def test_networked_observation_is_the_neighbourhood_state() -> None:
    env = parallel_env("line-message", agents=5, obs_radius=1)
    obs, infos = env.reset(seed=1)
    for _ in range(20):
        if not env.agents:
            obs, infos = env.reset()
        s = env.state()
        for i, agent in enumerate(env.possible_agents):
            nb = [j for j in range(5) if abs(j - i) <= 1]
            assert obs[agent].tolist() == s[nb].tolist()
            assert infos[agent]["local_state"] == s[i]
            assert env.observation_space(agent).contains(obs[agent])
        obs, _, _, _, infos = env.step({a: 1 for a in env.agents})


def test_missing_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without pettingzoo, importing reference.envs still works and building an environment
    raises EnvDependencyError naming the extra."""
    import sys

    from reference.envs import EnvDependencyError

    monkeypatch.setitem(sys.modules, "pettingzoo", None)
    with pytest.raises(EnvDependencyError, match=r"marl-oracle\[envs\]"):
        NetworkedParallelEnv(line_message(3))
    with pytest.raises(EnvDependencyError, match=r"marl-oracle\[envs\]"):
        GameParallelEnv(climbing())


def test_reference_imports_without_the_extra() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['pettingzoo'] = None; sys.modules['gymnasium'] = None\n"
        "import reference, reference.envs, verify.score\n"
        "assert 'climbing' in reference.envs.ENV_NAMES"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
