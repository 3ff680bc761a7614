"""Exchange files (verify/files.py): exact round trips, fuzzed loaders, the observation index
convention, and the ``instance`` / ``check`` subcommands end to end."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from reference.cooperative.exact import evaluate_game
from reference.cooperative.policy import ConditionalPolicy
from reference.errors import ModelError
from reference.instances import GAMES, NetworkedInstance, line_message, wireless
from reference.networked import Graph, NetworkedMDP, gradient_chain_rule, solve
from reference.networked.policy import LocalizedSoftmaxPolicy
from verify.cli import main
from verify.files import (
    SCHEMA,
    Estimate,
    FileFormatError,
    check_estimate,
    exact_quantity,
    load_estimate,
    load_game,
    load_game_policy,
    load_networked,
    load_theta,
    save_estimate,
    save_game,
    save_game_policy,
    save_networked,
    save_theta,
)
from verify.strategies import (
    conditional_policies,
    cooperative_games,
    localized_policies,
    networked_mdps,
    seeds,
)


@contextmanager
def _scratch() -> Iterator[Path]:
    """A temporary directory usable inside Hypothesis tests (no function-scoped fixture)."""
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def _same(a: Any, b: Any) -> bool:
    """Bitwise equality of two float arrays (``array_equal`` would call -0.0 == 0.0 equal)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


# --------------------------------------------------------------------------- round trips
@given(model=networked_mdps(max_agents=3, max_joint_states=16), seed=seeds(), data=st.data())
def test_networked_round_trip_is_exact(model: NetworkedMDP, seed: int, data: Any) -> None:
    rng = np.random.default_rng(seed)
    rewards = tuple(rng.random((model.n_states[i], model.n_actions[i])) for i in range(model.n))
    inst = NetworkedInstance("random", model, rewards, "hypothesis")
    policy = data.draw(localized_policies(model))
    with _scratch() as d:
        save_networked(d / "m.npz", inst)
        save_theta(d / "t.npz", policy)
        back = load_networked(d / "m.npz")
        back_policy = load_theta(d / "t.npz", back.model)
    m = back.model
    assert (back.name, back.source, m.graph, m.n_states, m.n_actions, m.gamma) == (
        inst.name, inst.source, model.graph, model.n_states, model.n_actions, model.gamma
    )
    assert all(_same(a, b) for a, b in zip(m.kernels, model.kernels, strict=True))
    assert all(_same(a, b) for a, b in zip(back.rewards, rewards, strict=True))
    assert _same(m.joint_rho(), model.joint_rho())
    assert m.is_product_initial == model.is_product_initial
    assert back_policy.beta == policy.beta
    assert all(_same(a, b) for a, b in zip(back_policy.theta, policy.theta, strict=True))
    one = solve(model, policy, inst.utilities())
    two = solve(m, back_policy, back.utilities())
    for name in ("gradient", "local_occupancy", "shadow_rewards"):
        assert all(
            _same(a, b) for a, b in zip(getattr(one, name), getattr(two, name), strict=True)
        )
    assert one.objective == two.objective


@pytest.mark.parametrize("inst", [line_message(3), wireless(1, 2)], ids=["line", "wireless"])
def test_named_networked_instances_round_trip(tmp_path: Path, inst: NetworkedInstance) -> None:
    save_networked(tmp_path / "i.npz", inst)
    back = load_networked(tmp_path / "i.npz")
    assert back.name == inst.name and back.source == inst.source
    pol = LocalizedSoftmaxPolicy.random(inst.model, 1, np.random.default_rng(5))
    g1 = solve(inst.model, pol, inst.utilities("entropy")).gradient
    g2 = solve(
        back.model, LocalizedSoftmaxPolicy(back.model, 1, pol.theta), back.utilities("entropy")
    ).gradient
    assert all(_same(a, b) for a, b in zip(g1, g2, strict=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i.npz"]  # no temporary left


@given(game=cooperative_games(), data=st.data())
def test_game_and_policy_round_trip_is_exact(game: Any, data: Any) -> None:
    policy = data.draw(conditional_policies(game))
    with _scratch() as d:
        save_game(d / "g.npz", game)
        back = load_game(d / "g.npz")
        save_game_policy(d / "p.npz", policy)
        back_policy = load_game_policy(d / "p.npz", back)
    assert (back.name, back.gamma) == (game.name, game.gamma)
    assert _same(back.P, game.P) and _same(back.r, game.r) and _same(back.rho, game.rho)
    assert all(
        _same(a, b)
        for a, b in zip(back_policy.conditionals, policy.conditionals, strict=True)
    )
    one = evaluate_game(game, policy).localized
    two = evaluate_game(back, back_policy).localized
    assert all(_same(a, b) for a, b in zip(one, two, strict=True))


@pytest.mark.parametrize("name", sorted(GAMES))
def test_named_games_round_trip(tmp_path: Path, name: str) -> None:
    game = GAMES[name](0.9)
    save_game(tmp_path / "g.npz", game)
    back = load_game(tmp_path / "g.npz")
    assert back.name == name and _same(back.P, game.P) and _same(back.r, game.r)


def test_estimate_round_trip(tmp_path: Path) -> None:
    arrays = (np.array([[0.1, -0.0], [np.nan, 1e300]]), np.arange(3.0))
    save_estimate(tmp_path / "e.npz", Estimate("occupancy", arrays, "from somewhere"))
    back = load_estimate(tmp_path / "e.npz")
    assert (back.quantity, back.description) == ("occupancy", "from somewhere")
    assert all(_same(a, b) for a, b in zip(back.arrays, arrays, strict=True))
    assert not back.arrays[0].flags.writeable
    with np.load(tmp_path / "e.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["estimate_0", "estimate_1", "meta"]
        assert json.loads(str(z["meta"][()])) == {
            "schema": SCHEMA, "schema_version": 1, "kind": "estimate",
            "quantity": "occupancy", "count": 2, "description": "from somewhere",
        }


# ---------------------------------------------------------------- the theta index convention
def test_observation_index_is_the_documented_mixed_radix() -> None:
    """The worked example of the module docstring: a line 0 - 1 - 2 with |S| = (2, 3, 2),
    beta = 1; s = (1, 2, 0) is row 10 of theta_1 and row 5 of theta_0."""
    model = NetworkedMDP(
        Graph.line(3),
        (2, 3, 2),
        (2, 2, 2),
        tuple(
            np.full((rows, 2, k), 1.0 / k)
            for rows, k in ((2 * 3, 2), (2 * 3 * 2, 3), (3 * 2, 2))
        ),
        0.9,
        tuple(np.full(k, 1.0 / k) for k in (2, 3, 2)),
    )
    policy = LocalizedSoftmaxPolicy.uniform(model, 1)
    assert [t.shape for t in policy.theta] == [(6, 2), (12, 2), (6, 2)]
    s = model.states.encode((1, 2, 0))
    assert int(policy.observation_index(1)[s]) == 10  # (1 * 3 + 2) * 2 + 0
    assert int(policy.observation_index(0)[s]) == 5  # 1 * 3 + 2
    assert int(policy.observation_index(2)[s]) == 4  # s_1 * 2 + s_2 = 2 * 2 + 0
    zero = LocalizedSoftmaxPolicy.uniform(model, 0)
    assert [int(zero.observation_index(i)[s]) for i in range(3)] == [1, 2, 0]


# -------------------------------------------------------------------------- fuzzed loaders
def _networked_file(d: Path) -> Path:
    path = d / "m.npz"
    save_networked(path, line_message(3))
    return path


def _fields(path: Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _meta(fields: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads(str(fields["meta"][()]))
    return meta


def _rewrite(path: Path, fields: dict[str, Any]) -> None:
    np.savez(path, **fields)


Edit = Callable[[dict[str, Any], str], str]
"""Edit the fields in place for the chosen field name; return a needle of the error."""


def _drop(fields: dict[str, Any], name: str) -> str:
    del fields[name]
    return f"'{name}'" if name == "meta" else f"missing fields ['{name}']"


def _float32(fields: dict[str, Any], name: str) -> str:
    fields[name] = np.asarray(fields[name]).astype(np.float32)
    return f"'{name}'"


def _complex(fields: dict[str, Any], name: str) -> str:
    fields[name] = np.asarray(fields[name]).astype(np.complex128)
    return f"'{name}'"


def _reshape(fields: dict[str, Any], name: str) -> str:
    fields[name] = np.asarray(fields[name])[..., :1]
    return name


def _objects(fields: dict[str, Any], name: str) -> str:
    fields[name] = np.array([{"x": 1}], dtype=object)
    return f"'{name}'"


def _extra(fields: dict[str, Any], name: str) -> str:
    fields[f"{name}_extra"] = np.ones(2)
    return f"unexpected fields ['{name}_extra']"


FIELD_EDITS: list[Edit] = [_drop, _float32, _complex, _reshape, _objects, _extra]
FLOAT_FIELDS = ["P_0", "P_1", "P_2", "rho_0", "rho_2", "r_1"]


@given(edit=st.sampled_from(FIELD_EDITS), name=st.sampled_from(FLOAT_FIELDS))
@example(edit=_reshape, name="P_1")
def test_array_field_edits_are_refused(edit: Edit, name: str) -> None:
    with _scratch() as d:
        path = _networked_file(d)
        fields = _fields(path)
        needle = edit(fields, name)
        _rewrite(path, fields)
        with pytest.raises(FileFormatError) as info:
            load_networked(path)
    message = str(info.value)
    assert str(path) in message and needle in message, message


def _edges_float(fields: dict[str, Any]) -> str:
    fields["edges"] = fields["edges"].astype(np.float64)
    return "'edges' has dtype float64"


def _edges_shape(fields: dict[str, Any]) -> str:
    fields["edges"] = fields["edges"].reshape(-1)
    return "'edges' has shape"


def _edges_loop(fields: dict[str, Any]) -> str:
    fields["edges"] = np.array([[0, 0], [1, 2]])
    return "self-loop"


def _bad_row(fields: dict[str, Any]) -> str:
    p = fields["P_1"].copy()
    p[3, 1, 0] += 0.25
    fields["P_1"] = p
    return "P_1[s_N=(0, 1, 1), a=1] sums to 1.25"


def _negative_reward_ok(fields: dict[str, Any]) -> str:
    r = fields["r_2"].copy()
    r[0, 0] = np.inf
    fields["r_2"] = r
    return "r_2[0, 0] is inf"


def _meta_set(key: str, value: Any, needle: str) -> Callable[[dict[str, Any]], str]:
    def edit(fields: dict[str, Any]) -> str:
        meta = _meta(fields)
        meta[key] = value
        fields["meta"] = np.array(json.dumps(meta))
        return needle

    return edit


def _meta_drop(key: str) -> Callable[[dict[str, Any]], str]:
    def edit(fields: dict[str, Any]) -> str:
        meta = _meta(fields)
        del meta[key]
        fields["meta"] = np.array(json.dumps(meta))
        return f"missing keys ['{key}']"

    return edit


def _meta_raw(value: Any, needle: str) -> Callable[[dict[str, Any]], str]:
    def edit(fields: dict[str, Any]) -> str:
        fields["meta"] = value
        return needle

    return edit


WHOLE_EDITS = [
    _edges_float,
    _edges_shape,
    _edges_loop,
    _bad_row,
    _negative_reward_ok,
    _meta_set("schema", "someone/else", "'schema' = 'someone/else'"),
    _meta_set("schema_version", 2, "newer marl-oracle"),
    _meta_set("schema_version", 0, "'schema_version' = 0"),
    _meta_set("schema_version", True, "'schema_version' = True"),
    _meta_set("kind", "cooperative-game", "expected a 'networked-instance' file"),
    _meta_set("kind", "mystery", "'kind' = 'mystery'"),
    _meta_set("gamma", 1.0, "gamma = 1.0"),
    _meta_set("gamma", "0.9", "'gamma' = '0.9'"),
    _meta_set("n_agents", 4, "'n_states' has 3 entries, expected 4"),
    _meta_set("n_states", [2, 2, 3], "P_1 has shape (8, 2, 2), expected (12, 2, 2)"),
    _meta_set("n_actions", [2, 0, 2], "'n_actions' = [2, 0, 2]"),
    _meta_set("rho", "joint", "missing fields ['rho']"),
    _meta_set("extra", 1, "unexpected keys ['extra']"),
    _meta_drop("source"),
    _meta_raw(np.array("{not json"), "'meta' is not valid JSON"),
    _meta_raw(np.array('{"gamma": NaN}'), "'meta' is not valid JSON"),
    _meta_raw(np.array("[1, 2]"), "'meta' is not a JSON object"),
    _meta_raw(np.array([1.0]), "'meta' is not a JSON string scalar"),
]


@given(edit=st.sampled_from(WHOLE_EDITS))
def test_whole_file_edits_are_refused(edit: Callable[[dict[str, Any]], str]) -> None:
    with _scratch() as d:
        path = _networked_file(d)
        fields = _fields(path)
        needle = edit(fields)
        _rewrite(path, fields)
        with pytest.raises(FileFormatError) as info:
            load_networked(path)
    message = str(info.value)
    assert str(path) in message and needle in message, message


@given(cut=st.floats(0.0, 0.999))
@example(cut=0.0)
def test_truncated_files_are_refused(cut: float) -> None:
    with _scratch() as d:
        path = _networked_file(d)
        raw = path.read_bytes()
        path.write_bytes(raw[: int(len(raw) * cut)])
        with pytest.raises(FileFormatError, match=r"not a readable marl-oracle file|unreadable"):
            load_networked(path)


@given(position=st.floats(0.0, 0.999), byte=st.integers(0, 255))
def test_byte_flips_raise_only_file_errors(position: float, byte: int) -> None:
    """Any single corrupted byte: the loader returns a valid instance or raises FileFormatError
    (never another exception, never an unvalidated object)."""
    with _scratch() as d:
        path = _networked_file(d)
        raw = bytearray(path.read_bytes())
        k = int(len(raw) * position)
        raw[k] = byte
        path.write_bytes(bytes(raw))
        try:
            back = load_networked(path)
        except FileFormatError as exc:
            assert str(path) in str(exc)
        else:
            solve(back.model, LocalizedSoftmaxPolicy.uniform(back.model), back.utilities())


def test_other_kinds_and_misuse(tmp_path: Path) -> None:
    inst = line_message(3)
    save_networked(tmp_path / "m.npz", inst)
    save_theta(tmp_path / "t.npz", LocalizedSoftmaxPolicy.uniform(inst.model, 1))
    save_game(tmp_path / "g.npz", GAMES["climbing"](0.9))
    with pytest.raises(FileFormatError, match="is a 'localized-theta' file"):
        load_networked(tmp_path / "t.npz")
    with pytest.raises(FileFormatError, match="is a 'networked-instance' file"):
        load_game(tmp_path / "m.npz")
    wide = NetworkedMDP(
        Graph.line(3),
        (4, 2, 2),
        (2, 2, 2),
        tuple(np.full((r, 2, k), 1.0 / k) for r, k in ((8, 4), (16, 2), (4, 2))),
        0.9,
        tuple(np.full(k, 1.0 / k) for k in (4, 2, 2)),
    )
    # theta_0 of line-message at beta = 1 observes (s_0, s_1): 2 * 2 rows; here 4 * 2
    with pytest.raises(FileFormatError, match=r"theta_0 has shape \(4, 2\), expected \(8, 2\)"):
        load_theta(tmp_path / "t.npz", wide)
    with pytest.raises(FileFormatError, match="'n_agents' = 3, the instance has n = 4"):
        load_theta(tmp_path / "t.npz", line_message(4).model)
    with pytest.raises(FileFormatError, match=r"a single \.npy array"):
        np.save(tmp_path / "a.npy", np.ones(3))
        load_networked(tmp_path / "a.npy")
    with pytest.raises(FileFormatError, match="not a readable"):
        load_networked(tmp_path / "absent.npz")
    with pytest.raises(FileFormatError, match="missing field 'meta'"):
        np.savez(tmp_path / "plain.npz", x=np.ones(2))
        load_networked(tmp_path / "plain.npz")
    game = GAMES["climbing"](0.9)
    save_game_policy(tmp_path / "p.npz", ConditionalPolicy.uniform(game))
    with pytest.raises(FileFormatError, match="the game has N = 3"):
        load_game_policy(tmp_path / "p.npz", GAMES["rare-stall"](0.9))
    fields = _fields(tmp_path / "p.npz")
    fields["pi_1"] = np.full((1, 3, 3), 0.5)
    np.savez(tmp_path / "p.npz", **fields)
    with pytest.raises(FileFormatError, match=r"pi\^1\[s=0, a\^\(0:m-1\)=\(0,\)\] sums to 1.5"):
        load_game_policy(tmp_path / "p.npz", game)


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "g.npz"
    save_game(path, GAMES["ratio"](0.9))
    before = path.read_bytes()

    def broken(handle: Any, **fields: Any) -> None:
        handle.write(b"PK half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        save_game(path, GAMES["climbing"](0.9))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.npz"]


# ------------------------------------------------------------------------------ checking
def test_check_estimate_counts_and_names_the_worst_entry() -> None:
    inst = line_message(3)
    policy = LocalizedSoftmaxPolicy.random(inst.model, 0, np.random.default_rng(1))
    exact = exact_quantity("occupancy", inst, policy)
    assert exact.tolerance > 0
    est = [np.array(a) for a in exact.arrays]
    est[1][1, 0] = np.nan
    est[2][0, 1] += 1.0
    verdict = check_estimate(Estimate("occupancy", tuple(est)), exact)
    assert not verdict.passed and verdict.failures == 2 and verdict.entries == 12
    assert (verdict.agent, verdict.index, verdict.error) == (1, (1, 0), np.inf)
    assert check_estimate(Estimate("occupancy", exact.arrays), exact).passed
    with pytest.raises(FileFormatError, match=r"estimate_2 has shape \(2,\), expected \(2, 2\)"):
        check_estimate(Estimate("occupancy", (est[0], est[1], np.zeros(2))), exact)
    with pytest.raises(ModelError, match="needs a cooperative game"):
        exact_quantity("localized-q", inst, policy)


def test_gradient_and_shadow_reward_tolerances_are_met_by_a_second_route() -> None:
    """Route 2 (chain rule) of the gradient passes the derived gradient tolerance; the linear
    utility's shadow reward is the reward itself."""
    inst = line_message(4)
    policy = LocalizedSoftmaxPolicy.random(inst.model, 1, np.random.default_rng(2))
    exact = exact_quantity("gradient", inst, policy)
    other = gradient_chain_rule(inst.model, policy, inst.utilities())
    assert check_estimate(Estimate("gradient", other), exact).passed
    shadow = exact_quantity("shadow-reward", inst, policy)
    assert check_estimate(Estimate("shadow-reward", inst.rewards), shadow).passed


# --------------------------------------------------------------------------- CLI end to end
def test_cli_gradient_check_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inst_f, theta_f = str(tmp_path / "inst.npz"), str(tmp_path / "theta.npz")
    argv = ["instance", "save", "--instance", "line-message", "--agents", "4",
            "--obs-radius", "1", "--out", inst_f, "--theta-out", theta_f, "--theta-seed", "3"]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    inst = load_networked(inst_f)
    policy = load_theta(theta_f, inst.model)
    assert policy.beta == 1 and any(np.any(t != 0) for t in policy.theta)
    grad = solve(inst.model, policy, inst.utilities()).gradient
    est_f = str(tmp_path / "est.npz")
    save_estimate(est_f, Estimate("gradient", grad, "python"))
    check = ["check", "gradient", "--instance", inst_f, "--theta", theta_f, "--estimate", est_f]
    assert main(check) == 0
    assert "PASS" in capsys.readouterr().out
    bad = [np.array(g) for g in grad]
    bad[2][3, 1] += 1e-6
    save_estimate(est_f, Estimate("gradient", tuple(bad)))
    assert main(check) == 1
    text = capsys.readouterr().out
    assert "FAIL" in text and "agent 2, index (3, 1)" in text
    assert main([*check, "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["worst"]["agent"] == 2 and out["worst"]["index"] == [3, 1]
    assert out["worst"]["exact"] == float(grad[2][3, 1])
    assert out["failures"] == 1 and out["entries"] == sum(g.size for g in grad)
    assert main([*check, "--atol", "2e-6"]) == 0  # the user's extra tolerance absorbs it
    capsys.readouterr()
    assert main(["check", "occupancy", "--instance", inst_f, "--theta", theta_f,
                 "--estimate", est_f]) == 2
    assert "holds the quantity 'gradient'" in capsys.readouterr().err
    assert main(["check", "gradient", "--instance", theta_f, "--estimate", est_f]) == 2
    assert main(["check", "gradient", "--instance", inst_f, "--estimate", est_f]) == 2


def test_cli_zero_theta_and_occupancy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inst_f, theta_f = str(tmp_path / "w.npz"), str(tmp_path / "t.npz")
    assert main(["instance", "save", "--instance", "wireless", "--agents", "2",
                 "--out", inst_f, "--theta-out", theta_f, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["theta"] == "zero" and out["theta_shapes"] == [[8, 5], [8, 5]]  # beta = 0: o_i = s_i, 2^3 states
    inst = load_networked(inst_f)
    policy = load_theta(theta_f, inst.model)
    assert all(np.all(t == 0) for t in policy.theta)
    occ = solve(inst.model, policy, inst.utilities()).local_occupancy
    save_estimate(tmp_path / "o.npz", Estimate("occupancy", occ))
    assert main(["check", "occupancy", "--instance", inst_f, "--theta", theta_f,
                 "--estimate", str(tmp_path / "o.npz"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["passed"] is True


def test_cli_localized_q_on_a_game(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    g_f, p_f, e_f = (str(tmp_path / n) for n in ("g.npz", "p.npz", "e.npz"))
    assert main(["instance", "save", "--game", "rare-stall", "--out", g_f,
                 "--theta-out", p_f, "--theta-seed", "0"]) == 0
    capsys.readouterr()
    game = load_game(g_f)
    policy = load_game_policy(p_f, game)
    save_estimate(e_f, Estimate("localized-q", evaluate_game(game, policy).localized))
    base = ["check", "localized-q", "--instance", g_f, "--estimate", e_f]
    assert main([*base, "--theta", p_f]) == 0
    assert main(base) == 1  # uniform policy by default: another policy's Q fails
    capsys.readouterr()
    assert main(["instance", "save", "--game", "climbing", "--agents", "3", "--out", g_f]) == 2
    assert "--agents applies to --instance" in capsys.readouterr().err
