"""Exact scoring (verify/score.py): tables against callables against files, the objective
against Monte-Carlo returns through the environment, the optimum's certificate, and typed
errors naming the agent and the observation."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reference.cooperative.policy import ConditionalPolicy
from reference.envs import GameParallelEnv, NetworkedParallelEnv
from reference.instances import climbing, line_message, ratio
from reference.networked.policy import LocalizedSoftmaxPolicy
from verify.bounds import geometric_sum_radius
from verify.files import AgentPolicy, FileFormatError, load_agent_policy, save_agent_policy
from verify.score import Score, ScoreError, score

DELTA = 1e-9
"""False-alarm probability of each Monte-Carlo comparison."""


def random_tables(rng: np.random.Generator, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    return [rng.dirichlet(np.ones(k), size=o) for o, k in sizes]


def networked_sizes(n: int, beta: int) -> list[tuple[int, int]]:
    model = line_message(n).model
    return [
        (model.states.sub_size(obs), model.n_actions[i])
        for i, obs in enumerate(model.graph.neighbourhoods(beta))
    ]


def table_callable(tables: list[np.ndarray], sizes_of: Any) -> Any:
    """A callable reading the tables at the environment's observation (mixed radix)."""

    def fn(agent: str, observation: Any) -> np.ndarray:
        i = int(agent.split("_")[1])
        row = int(np.ravel_multi_index(tuple(np.atleast_1d(observation)), sizes_of(i)))
        return tables[i][row]

    return fn


def test_networked_table_callable_file_and_softmax_routes_agree(tmp_path: Path) -> None:
    inst = line_message(4)
    rng = np.random.default_rng(0)
    tables = random_tables(rng, networked_sizes(4, 1))
    observed = inst.model.graph.neighbourhoods(1)
    fn = table_callable(tables, lambda i: [2] * len(observed[i]))
    by_table = score(inst, tables, obs_radius=1)
    by_callable = score(inst, fn, obs_radius=1)
    assert by_table == by_callable
    path = tmp_path / "p.npz"
    save_agent_policy(path, AgentPolicy(1, tuple(tables)))
    assert score(inst, str(path)) == by_table
    # second route: the softmax policy with theta = log pi, solved independently
    softmax = LocalizedSoftmaxPolicy(inst.model, 1, tuple(np.log(t) for t in tables))
    direct = score(inst, softmax)
    np.testing.assert_allclose(
        direct.objective, by_table.objective, rtol=0, atol=2 * by_table.objective_error + 1e-12
    )
    assert by_table.gradient_norm is not None
    assert direct.gradient_norm == pytest.approx(by_table.gradient_norm, rel=1e-9)


def test_networked_optimum_is_attained_by_the_all_ones_policy() -> None:
    """line-message, linear rewards: every agent sending 1 keeps every state at 1 (the
    kernels of ``reference.instances.line_message``), so F = F* = (1 + 0.1 (n-1)) / (n (1 -
    gamma)) = 2.5 at n = 6, gamma = 0.9 (hand derivation from the instance's docstring)."""
    s = score(line_message(6), lambda agent, obs: [0.0, 1.0], obs_radius=0)
    lo, hi = s.gap_bounds
    assert lo <= 0.0 <= hi
    assert s.gradient_norm is None  # deterministic: the softmax has no finite point
    assert s.objective == pytest.approx(2.5, abs=s.objective_error + 1e-12)
    assert s.optimum <= 2.5 + 1e-12 <= s.optimum_upper + 1e-12
    uniform = score(line_message(6), lambda agent, obs: [0.5, 0.5], obs_radius=0)
    assert uniform.gap_bounds[0] > 0.5  # the uniform policy is far from optimal


def test_game_table_callable_sequential_and_joint_routes_agree() -> None:
    game = climbing()
    rng = np.random.default_rng(1)
    tables = random_tables(rng, [(1, 3), (1, 3)])
    by_table = score(game, tables, iterations=5)
    by_callable = score(game, lambda agent, s: tables[int(agent[-1])][s], iterations=5)
    assert by_table == by_callable
    # the same product policy as a sequential callable and as a joint table
    seq = score(
        game,
        lambda agent, ctx: tables[int(agent[-1])][ctx[0]],
        sequential=True,
        iterations=5,
    )
    joint = np.outer(tables[0][0], tables[1][0]).reshape(1, 9)
    by_joint = score(game, joint, iterations=5)
    for other in (seq, by_joint):
        assert other.objective == pytest.approx(by_table.objective, abs=1e-12)
    # second route: E_pi[r] / (1 - gamma) on the one-state game (climbing's docstring)
    expected = float(tables[0][0] @ game.r[0] @ tables[1][0]) / (1 - game.gamma)
    np.testing.assert_allclose(by_table.objective, expected, rtol=0, atol=1e-12)
    assert by_table.optimum == pytest.approx(10.0, abs=1e-9)  # J* = 1/(1 - gamma)
    assert by_table.mappo_iterations == 5 and by_table.mappo_objective is not None


def test_game_conditional_policy_reaches_joint_state_dependence() -> None:
    """A sequential policy on the ratio game: agent 1 copies agent 0's action."""
    game = ratio()

    def fn(agent: str, ctx: Any) -> list[float]:
        _, prev = ctx
        if agent == "agent_0":
            return [0.5, 0.5]
        return [1.0, 0.0] if prev[0] == 0 else [0.0, 1.0]

    s = score(game, fn, sequential=True, iterations=3)
    cond = ConditionalPolicy(
        game, (np.full((2, 2), 0.5), np.array([[[1.0, 0.0], [0.0, 1.0]]] * 2))
    )
    assert score(game, cond, iterations=3).objective == pytest.approx(s.objective, abs=1e-12)


def discounted_returns(env: Any, policy: Any, episodes: int, seed: int) -> np.ndarray:
    """Undiscounted returns (mean reward over agents per step) of discount-as-termination
    episodes; their mean estimates the objective (``reference/envs.py``)."""
    rng = np.random.default_rng(seed + 1)
    obs, _ = env.reset(seed=seed)
    out = np.empty(episodes)
    for e in range(episodes):
        obs, _ = env.reset()
        total = 0.0
        while env.agents:
            acts = {}
            for agent in env.agents:
                p = np.asarray(policy(agent, obs[agent]))
                acts[agent] = int(rng.choice(p.size, p=p))
            obs, rew, _, _, _ = env.step(acts)
            total += float(np.mean(list(rew.values())))
        out[e] = total
    return out


@pytest.mark.parametrize("which", ["climbing", "line-message"])
def test_objective_matches_monte_carlo_through_the_env(which: str) -> None:
    """Two routes: the exact objective and the mean return of episodes through the
    environment, within ``geometric_sum_radius`` (Bernstein with a capped geometric length,
    per-step rewards in [0, 1]) at ``DELTA``.  Planted defect: the objective at a mis-declared
    discount (0.7 for the environment's 0.5) falls outside the radius."""
    rng = np.random.default_rng(3)
    env: Any
    if which == "climbing":
        game = climbing(gamma=0.5)
        tables = random_tables(rng, [(1, 3), (1, 3)])
        env = GameParallelEnv(game)

        def policy(agent: str, obs: Any) -> np.ndarray:
            return tables[int(agent[-1])][int(obs)]

        exact = score(game, tables, iterations=1)
        wrong = score(climbing(gamma=0.7), tables, iterations=1)
    else:
        inst = line_message(3, gamma=0.5)
        tables = random_tables(rng, networked_sizes(3, 0))
        env = NetworkedParallelEnv(inst, 0)

        def policy(agent: str, obs: Any) -> np.ndarray:
            return tables[int(agent[-1])][int(obs[0])]

        exact = score(inst, tables, obs_radius=0)
        wrong = score(line_message(3, gamma=0.7), tables, obs_radius=0)
    episodes = 6000
    # the radius is for per-step rewards in [0, 1]: climbing's lie there by construction,
    # line-message's team reward (1/n) sum_i r_i in [0, (1 + 0.1 (n - 1))/n] = [0, 0.4] at
    # n = 3, so its radius is scaled by 0.4
    scale = 1.0 if which == "climbing" else 0.4
    returns = discounted_returns(env, policy, episodes, seed=7)
    radius = scale * geometric_sum_radius(episodes, 0.5, DELTA)
    assert abs(returns.mean() - exact.objective) <= radius + exact.objective_error
    assert abs(returns.mean() - wrong.objective) > radius


def test_bad_policies_are_typed_errors_naming_agent_and_observation() -> None:
    inst = line_message(3)
    with pytest.raises(ScoreError, match=r"agent_1 at observation \(0, 1, 0\).*sum to"):
        score(
            inst,
            lambda agent, obs: [0.5, 0.6] if agent == "agent_1" and obs.tolist() == [0, 1, 0]
            else [0.5, 0.5],
        )
    with pytest.raises(ScoreError, match=r"agent_2 at observation \(1,\).*not finite"):
        score(
            inst,
            lambda agent, obs: [np.nan, 1.0] if agent == "agent_2" and obs[0] == 1 else [1, 0],
            obs_radius=0,
        )
    with pytest.raises(ScoreError, match=r"raised KeyError for agent_0 at observation \[0 0\]"):
        score(inst, lambda agent, obs: {}[agent])
    with pytest.raises(ScoreError, match=r"agent_0: table has shape \(2, 2\), expected \(4, 2\)"):
        score(inst, [np.full((2, 2), 0.5)] * 3, obs_radius=1)
    with pytest.raises(ScoreError, match="3 probabilities, expected 2"):
        score(inst, lambda agent, obs: [1 / 3] * 3, obs_radius=0)
    with pytest.raises(ScoreError, match="expected one per agent"):
        score(inst, [np.full((2, 2), 0.5)] * 2, obs_radius=0)
    with pytest.raises(ScoreError) as info:
        score(climbing(), [np.array([[0.2, 0.2, 0.2]]), np.full((1, 3), 1 / 3)])
    assert info.value.agent == "agent_0" and info.value.observation == 0


def test_agent_policy_file_loader_refuses_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "p.npz"
    save_agent_policy(path, AgentPolicy(0, (np.full((2, 2), 0.5),)))
    assert load_agent_policy(path).tables[0].shape == (2, 2)
    np.savez(tmp_path / "bad.npz", meta=np.array("{}"), pi_0=np.ones((2, 2)))
    with pytest.raises(FileFormatError):
        load_agent_policy(tmp_path / "bad.npz")
    with pytest.raises(ScoreError, match="obs_radius 0"):
        save_agent_policy(path, AgentPolicy(1, (np.full((1, 3), 1 / 3),) * 2))
        score(climbing(), str(path))
    assert isinstance(score(climbing(), [np.full((1, 3), 1 / 3)] * 2, iterations=1), Score)


# ------------------------------------------------------------- fuzzed agent-policy loader
AGENT_FIELDS = ["pi_0", "pi_1", "pi_2"]


def _policy_file(d: Path) -> Path:
    path = d / "policy.npz"
    tables = random_tables(np.random.default_rng(5), networked_sizes(3, 1))
    save_agent_policy(path, AgentPolicy(1, tuple(tables)))
    return path


def _load_fields(path: Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _edit_drop(fields: dict[str, Any], name: str) -> str:
    del fields[name]
    return f"missing fields ['{name}']"


def _edit_float32(fields: dict[str, Any], name: str) -> str:
    fields[name] = fields[name].astype(np.float32)
    return f"field '{name}' has dtype float32"


def _edit_complex(fields: dict[str, Any], name: str) -> str:
    fields[name] = fields[name].astype(np.complex128)
    return f"field '{name}' has dtype complex128"


def _edit_extra(fields: dict[str, Any], name: str) -> str:
    fields[f"{name}_extra"] = np.ones(2)
    return f"unexpected fields ['{name}_extra']"


def _edit_meta(key: str, value: Any, needle: str) -> Any:
    def edit(fields: dict[str, Any], name: str) -> str:
        meta = json.loads(str(fields["meta"][()]))
        meta[key] = value
        fields["meta"] = np.array(json.dumps(meta))
        return needle

    return edit


LOADER_EDITS = [
    _edit_drop,
    _edit_float32,
    _edit_complex,
    _edit_extra,
    _edit_meta("obs_radius", -1, "'obs_radius' = -1"),
    _edit_meta("obs_radius", True, "'obs_radius' = True"),
    _edit_meta("n_agents", 4, "missing fields ['pi_3']"),
    _edit_meta("kind", "game-policy", "expected a 'agent-policy' file"),
    _edit_meta("extra", 1, "unexpected keys ['extra']"),
]


@given(edit=st.sampled_from(LOADER_EDITS), name=st.sampled_from(AGENT_FIELDS))
def test_agent_policy_file_edits_are_refused(edit: Any, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = _policy_file(Path(tmp))
        fields = _load_fields(path)
        needle = edit(fields, name)
        np.savez(path, **fields)
        with pytest.raises(FileFormatError) as info:
            load_agent_policy(path)
    message = str(info.value)
    assert str(path) in message and needle in message, message


@given(name=st.sampled_from(AGENT_FIELDS), scale=st.sampled_from([0.0, 0.9, 1.1, np.nan]))
def test_agent_policy_file_with_bad_rows_fails_when_scored(name: str, scale: float) -> None:
    """Rows are checked against the instance: a table that loads but is no policy gives a
    ScoreError naming the agent and the observation (row 0)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = _policy_file(Path(tmp))
        fields = _load_fields(path)
        fields[name] = fields[name].copy()
        fields[name][0] *= scale
        np.savez(path, **fields)
        with pytest.raises(ScoreError, match=f"agent_{name[-1]} at observation \\(0, "):
            score(line_message(3), str(path))


@given(position=st.floats(0.0, 0.999), byte=st.integers(0, 255))
def test_agent_policy_byte_flips_raise_only_typed_errors(position: float, byte: int) -> None:
    """Any single corrupted byte: load and score succeed, or raise FileFormatError from the
    loader or ScoreError from the row checks (never another exception)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = _policy_file(Path(tmp))
        raw = bytearray(path.read_bytes())
        raw[int(len(raw) * position)] = byte
        path.write_bytes(bytes(raw))
        try:
            s = score(line_message(3), str(path))
        except (FileFormatError, ScoreError):
            return
        assert isinstance(s, Score) and np.isfinite(s.objective)
