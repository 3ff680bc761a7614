"""The ``score`` subcommand (verify/cli_score.py) against verify.score."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reference.cooperative.policy import ConditionalPolicy
from reference.instances import climbing, line_message
from verify.cli import main
from verify.files import AgentPolicy, save_agent_policy, save_game_policy
from verify.score import score


def test_score_json_matches_the_library(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    tables = tuple(rng.dirichlet(np.ones(2), size=2) for _ in range(5))
    path = tmp_path / "p.npz"
    save_agent_policy(path, AgentPolicy(0, tables))
    argv = ["score", "--instance", "line-message", "--agents", "5", "--policy", str(path)]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = score(line_message(5), list(tables), obs_radius=0)
    assert out == json.loads(json.dumps(expected.as_dict()))
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "F*" in text and "gap" in text


def test_score_game_file_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    game = climbing()
    path = tmp_path / "g.npz"
    save_game_policy(path, ConditionalPolicy.uniform(game))
    assert main(["score", "--game", "climbing", "--policy", str(path), "--iterations", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["objective"] == pytest.approx(score(game, ConditionalPolicy.uniform(game)).objective)
    assert out["mappo_iterations"] == 3 and out["mappo_objective"] > out["objective"]
    bad = tmp_path / "bad.npz"
    save_agent_policy(bad, AgentPolicy(0, (np.array([[0.5, 0.6, 0.0]]), np.full((1, 3), 1 / 3))))
    assert main(["score", "--game", "climbing", "--policy", str(bad)]) == 2
    assert "agent_0 at observation 0" in capsys.readouterr().err
    assert main(["score", "--instance", "line-message", "--policy", str(path)]) == 2
    assert "not a policy of line-message" in capsys.readouterr().err
