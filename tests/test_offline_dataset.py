"""Offline datasets (SPEC section 6): the behaviour policy, the sampler against its exact law,
and the ``.npz`` file format with its failure modes."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given

from reference.cooperative import (
    FILE_FIELDS,
    SCHEMA,
    SCHEMA_VERSION,
    CooperativeMarkovGame,
    OfflineDataset,
    behaviour_policy,
    game_digest,
    random_game,
    sample_dataset,
)
from reference.errors import DatasetError
from reference.instances import climbing, rare_stall
from reference.tabular import occupancy
from verify.bounds import hoeffding_radius, l1_radius, split_delta
from verify.strategies import cooperative_games, seeds

DELTA = 1e-9
"""Failure probability of each statistical check."""


def _small_dataset() -> OfflineDataset:
    game = rare_stall()
    return sample_dataset(
        game, 500, np.random.default_rng(3), coverage=0.3, safe_actions=np.array([0, 0])
    )


def test_behaviour_policy_puts_coverage_on_every_action() -> None:
    game = rare_stall()
    b = behaviour_policy(game, 0.2, np.array([0, 5]))
    n_a = game.n_joint_actions
    np.testing.assert_allclose(b.sum(axis=1), 1.0, rtol=0, atol=n_a * 4e-16)
    assert b.min() == pytest.approx(0.2 / n_a)
    assert b[0, 0] == pytest.approx(0.8 + 0.2 / n_a)
    assert b[1, 5] == pytest.approx(0.8 + 0.2 / n_a)


@given(game=cooperative_games(max_states=3, max_agents=2, max_actions=3), seed=seeds())
def test_sampled_cells_follow_mu_times_behaviour(game: Any, seed: int) -> None:
    """Cell frequencies of ``(s, a)`` against ``nu_b(s) b(a|s)`` (l1 radius), next states
    per cell against ``P`` (l1 radius given the counts), Bernoulli rewards per cell against
    ``r`` (Hoeffding), all at ``DELTA`` split over the checks."""
    rng = np.random.default_rng(seed)
    n_a = game.n_joint_actions
    safe = rng.integers(n_a, size=game.n_states)
    b = behaviour_policy(game, 0.5, safe)
    n = 4000
    ds = sample_dataset(game, n, rng, coverage=0.5, safe_actions=safe)
    ds.check_game(game)
    cells = game.n_states * n_a
    delta = split_delta(DELTA, 1 + 2 * cells)
    mu = (1 - game.gamma) * occupancy(game.tabular, b).lam_S
    law = (mu[:, None] * b).reshape(-1)
    cell = ds.states * n_a + ds.joint_actions
    freq = np.bincount(cell, minlength=cells) / n
    assert np.abs(freq - law).sum() <= l1_radius(n, cells, 2.0, delta)
    P = game.tabular.P.reshape(cells, game.n_states)
    r = game.tabular.r.reshape(-1)
    for c in np.flatnonzero(np.bincount(cell, minlength=cells)):
        mask = cell == c
        m = int(mask.sum())
        nxt = np.bincount(ds.next_states[mask], minlength=game.n_states) / m
        assert np.abs(nxt - P[c]).sum() <= l1_radius(m, game.n_states, 2.0, delta)
        assert abs(ds.rewards[mask].mean() - r[c]) <= hoeffding_radius(m, 1.0, delta)


def test_fixed_rewards_are_the_means() -> None:
    game = climbing()
    ds = sample_dataset(game, 300, np.random.default_rng(0), rewards="fixed")
    expected = game.tabular.r.reshape(-1)[ds.states * game.n_joint_actions + ds.joint_actions]
    np.testing.assert_array_equal(ds.rewards, expected)


def test_round_trip(tmp_path: Path) -> None:
    ds = _small_dataset()
    path = tmp_path / "data.npz"
    ds.save(path)
    back = OfflineDataset.load(path)
    for name in ("states", "actions", "rewards", "next_states"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ds, name))
    assert back.n_states == ds.n_states
    assert back.action_counts == ds.action_counts
    assert back.game_digest == ds.game_digest == game_digest(rare_stall())
    assert back.description == ds.description
    back.check_game(rare_stall())
    assert not back.states.flags.writeable
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz"]  # no temporary left


def _fields(ds: OfflineDataset) -> dict[str, Any]:
    return {
        "schema": np.array(SCHEMA),
        "schema_version": np.array(SCHEMA_VERSION, dtype=np.int64),
        "n_states": np.array(ds.n_states, dtype=np.int64),
        "action_counts": np.array(ds.action_counts, dtype=np.int64),
        "states": np.array(ds.states),
        "actions": np.array(ds.actions),
        "rewards": np.array(ds.rewards),
        "next_states": np.array(ds.next_states),
        "game_digest": np.array(ds.game_digest),
        "description": np.array(ds.description),
    }


def _set(key: str, value: Any) -> Any:
    def edit(fields: dict[str, Any]) -> None:
        fields[key] = value

    return edit


def _drop(key: str) -> Any:
    def edit(fields: dict[str, Any]) -> None:
        del fields[key]

    return edit


def _late_bad_reward(fields: dict[str, Any]) -> None:
    rewards = fields["rewards"].copy()
    rewards[-1] = 1.5
    fields["rewards"] = rewards


def _bad_action(fields: dict[str, Any]) -> None:
    actions = fields["actions"].copy()
    actions[7, 1] = 3
    fields["actions"] = actions


EDITS = [
    ("schema", _set("schema", np.array("someone-else/data")), "schema = 'someone-else/data'"),
    ("newer version", _set("schema_version", np.array(2)), "newer marl-oracle"),
    ("version type", _set("schema_version", np.array(1.0)), "'schema_version'"),
    *[(f"missing {f}", _drop(f), f"missing fields ['{f}']") for f in FILE_FIELDS],
    ("older version", _set("schema_version", np.array(0)), "schema_version = 0"),
    ("extra field", _set("weights", np.ones(3)), "unexpected fields ['weights']"),
    ("float states", _set("states", np.zeros(500)), "states has dtype float64"),
    ("int rewards", _set("rewards", np.zeros(500, dtype=np.int64)), "'rewards' has dtype"),
    ("short next", _set("next_states", np.zeros(499, dtype=np.int64)), "next_states has shape"),
    ("state range", _set("states", np.full(500, 2)), "states[0] = 2"),
    ("late reward", _late_bad_reward, "rewards[499] = 1.5"),
    ("action range", _bad_action, "actions[7, 1] = 3"),
    ("counts", _set("action_counts", np.array([3, 3])), "actions has shape (500, 3)"),
    ("digest type", _set("game_digest", np.array(5)), "'game_digest'"),
]


@pytest.mark.parametrize(("label", "edit", "needle"), EDITS, ids=[e[0] for e in EDITS])
def test_bad_files_are_rejected(
    tmp_path: Path, label: str, edit: Any, needle: str
) -> None:
    fields = _fields(_small_dataset())
    edit(fields)
    path = tmp_path / "bad.npz"
    np.savez(path, **fields)
    with pytest.raises(DatasetError) as info:
        OfflineDataset.load(path)
    assert needle in str(info.value)
    assert str(path) in str(info.value)


def test_pickled_object_arrays_are_refused(tmp_path: Path) -> None:
    fields = _fields(_small_dataset())
    fields["description"] = np.array([{"a": 1}], dtype=object)
    path = tmp_path / "pickle.npz"
    np.savez(path, **fields)
    with pytest.raises(DatasetError, match="not a readable dataset file"):
        OfflineDataset.load(path)


@pytest.mark.parametrize("cut", [0.3, 0.7, 0.95])
def test_truncated_files_are_rejected(tmp_path: Path, cut: float) -> None:
    path = tmp_path / "data.npz"
    _small_dataset().save(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * cut)])
    with pytest.raises(DatasetError, match="not a readable dataset file"):
        OfflineDataset.load(path)


def test_corrupted_member_is_rejected(tmp_path: Path) -> None:
    """Flip bytes inside the stored ``rewards`` member: the zip CRC check must refuse it."""
    path = tmp_path / "data.npz"
    _small_dataset().save(path)
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("rewards.npy")
    raw = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
    raw[start : start + 8] = b"\xff" * 8
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="not a readable dataset file"):
        OfflineDataset.load(path)


def test_missing_and_non_zip_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a readable dataset file"):
        OfflineDataset.load(tmp_path / "absent.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all" * 10)
    with pytest.raises(DatasetError, match="not a readable dataset file"):
        OfflineDataset.load(junk)


def test_mismatched_game_is_rejected() -> None:
    ds = _small_dataset()
    with pytest.raises(DatasetError, match="action_counts"):
        ds.check_game(climbing())
    other = rare_stall(gamma=0.95)  # same dynamics: gamma is not part of the digest
    ds.check_game(other)
    shifted = random_game(np.random.default_rng(0), 2, (3, 3, 3), 0.9)
    with pytest.raises(DatasetError, match="different P or r"):
        ds.check_game(shifted)
    game = rare_stall()
    other_r = CooperativeMarkovGame(game.P, game.r * 0.5, game.rho, game.gamma, "half-r")
    with pytest.raises(DatasetError, match="different P or r"):
        ds.check_game(other_r)  # same P, different rewards
    anonymous = OfflineDataset(
        ds.states, ds.actions, ds.rewards, ds.next_states, ds.n_states, ds.action_counts
    )
    anonymous.check_game(shifted)  # data from elsewhere carry no digest to compare


def test_constructor_names_the_entry() -> None:
    ds = _small_dataset()
    with pytest.raises(DatasetError, match=r"next_states\[0\] = -1"):
        OfflineDataset(
            ds.states, ds.actions, ds.rewards, np.full(500, -1), ds.n_states, ds.action_counts
        )
    with pytest.raises(DatasetError, match="expected at least one transition"):
        OfflineDataset(
            np.zeros(0, dtype=np.int64),
            np.zeros((0, 3), dtype=np.int64),
            np.zeros(0),
            np.zeros(0, dtype=np.int64),
            2,
            (3, 3, 3),
        )
    with pytest.raises(DatasetError, match=r"coverage = 1\.2"):
        sample_dataset(rare_stall(), 10, np.random.default_rng(0), coverage=1.2)
    with pytest.raises(DatasetError, match="needs safe_actions"):
        sample_dataset(rare_stall(), 10, np.random.default_rng(0), coverage=0.5)


def test_file_fields_are_the_saved_fields(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    _small_dataset().save(path)
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == sorted(FILE_FIELDS)


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A save that fails midway leaves the previous file intact and no temporary behind."""
    path = tmp_path / "data.npz"
    ds = _small_dataset()
    ds.save(path)
    before = path.read_bytes()

    def broken(handle: Any, **fields: Any) -> None:
        handle.write(b"PK half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        ds.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz"]
