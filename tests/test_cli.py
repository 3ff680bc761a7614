"""The marl-oracle command line: exact subcommand, JSON output and errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reference.instances import line_message
from reference.networked import LocalizedSoftmaxPolicy, solve
from verify.cli import main
from verify.tolerances import gradient_tolerance, summation_tolerance

ROOT = Path(__file__).resolve().parents[1]


def test_exact_json_matches_the_oracle(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["exact", "--instance", "line-message", "--agents", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    inst = line_message(4, 0.9)
    sol = solve(inst.model, LocalizedSoftmaxPolicy.uniform(inst.model, 0), inst.utilities())
    assert out["objective"] == sol.objective
    assert out["gradient_norm"] == sol.gradient_norm
    assert (out["gamma"], out["obs_radius"], out["utility"]) == (0.9, 0, "linear")
    assert len(out["local_occupancies"]) == 4
    np.testing.assert_array_equal(np.array(out["local_occupancies"][3]), sol.local_occupancy[3])


def test_last_agent_occupancy_by_hand(capsys: pytest.CaptureFixture[str]) -> None:
    """The last agent sets s' = a, uniformly at theta = 0, and starts in state 1, so
    lam_{n-1}(1, a) = (1 + gamma/(1-gamma) * 1/2) / 2 = 2.75 for gamma = 0.9 (hand
    derivation: mass 1 at t = 0 on state 1, then half of gamma^t for t >= 1)."""
    assert main(["exact", "--agents", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    tol = out["occupancy_error_bound"] + summation_tolerance(8 * 8, 10.0)
    np.testing.assert_allclose(out["local_occupancies"][2], [[2.25, 2.25], [2.75, 2.75]],
                               rtol=0, atol=tol)


@pytest.mark.parametrize(("utility", "beta"), [("entropy", 1), ("linear", 2)])
def test_exact_options(utility: str, beta: int, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["exact", "--agents", "5", "--gamma", "0.8", "--obs-radius", str(beta),
            "--utility", utility, "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["gamma"], out["obs_radius"], out["utility"]) == (0.8, beta, utility)
    assert out["gradient_norm"] > 0


def test_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["exact", "--agents", "3"]) == 0
    text = capsys.readouterr().out
    assert "objective F" in text and "gradient norm" in text and "agent   2" in text


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["exact", "--agents", "1"], "n = 1"),
        (["exact", "--agents", "3", "--gamma", "1.0"], "gamma = 1.0"),
        (["exact", "--agents", "3", "--obs-radius", "-1"], "beta = -1"),
        (["exact", "--agents", "40"], "memory limit"),
    ],
)
def test_exact_errors(argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert fragment in capsys.readouterr().err


def test_python_dash_m_verify_from_the_repository_root() -> None:
    """``python -m verify`` works from the repository root without installation."""
    proc = subprocess.run(
        [sys.executable, "-m", "verify", "exact", "--agents", "3", "--json"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=120,
    )
    assert set(json.loads(proc.stdout)) >= {"objective", "gradient_norm"}


def test_decay_json_lists_have_equal_length(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decay", "--instance", "line-message", "--agents", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    keys = ("kappa", "max_spread", "bound", "truncated_gradient_error")
    assert len({len(out[k]) for k in keys}) == 1
    assert out["kappa"] == list(range(5))  # line of 5 agents: diameter 4
    spread, bound = np.array(out["max_spread"]), np.array(out["bound"])
    assert np.all(spread[:-1] < bound[:-1])  # the bound is loose here by orders of magnitude
    assert spread[-1] == 0.0 and bound[-1] == 0.0  # N_i^4 is every agent
    # ghat = grad F at the diameter, to the rounding of the exact routes
    assert out["truncated_gradient_error"][-1] <= gradient_tolerance(32 * 32, 0.9, 1.0)


def test_decay_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "decay.png"
    assert main(["decay", "--agents", "4", "--obs-radius", "1", "--plot", str(target)]) == 0
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "kappa" in capsys.readouterr().out


def test_mappo_gap_json(capsys: pytest.CaptureFixture[str]) -> None:
    from reference.cooperative import mappo_bound, run_mappo, tuned_beta
    from reference.instances import climbing

    assert main(["mappo-gap", "--game", "climbing", "--K", "1,4,16", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    keys = ("K", "average_gap", "last_gap", "bound")
    assert all(len(out[k]) == 3 for k in keys)
    game = climbing()
    beta = tuned_beta(2, 2 * np.log(3), 0.9)
    assert out["beta"] == pytest.approx(beta, rel=1e-15)
    for i, K in enumerate(out["K"]):
        h = run_mappo(game, K, beta, output="last")
        assert out["average_gap"][i] == h.average_gap
        assert out["last_gap"][i] == h.last_gap
        assert out["bound"][i] == mappo_bound(K, beta, 2, game.log_action_count, 0.9)
        assert out["last_gap"][i] <= out["average_gap"][i] <= out["bound"][i]


@pytest.mark.parametrize("game", ["ratio", "random"])
def test_mappo_gap_games_and_plot(game: str, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "gap.png"
    argv = ["mappo-gap", "--game", game, "--K", "2,8", "--beta", "1.5", "--plot", str(png)]
    assert main(argv) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "average gap" in text and "beta = 1.5" in text


def test_mappo_gap_bad_grid() -> None:
    with pytest.raises(SystemExit):
        main(["mappo-gap", "--game", "climbing", "--K", "0,4"])


def test_closed_pipe_is_not_an_error() -> None:
    """Writing to a pipe whose reader is gone (``marl-oracle ... | head``) exits with status 0
    and no traceback; the reader is closed before the command starts, so the write always
    fails."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "verify", "exact", "--agents", "3"],
            cwd=ROOT, stdout=write_end, stderr=subprocess.PIPE, text=True, check=False,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr
