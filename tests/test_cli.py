"""The marl-oracle command line: exact subcommand, JSON output and errors."""

from __future__ import annotations

import dataclasses
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


PESSIMISM_FAST = ["pessimism", "--seeds", "3", "--samples", "2000", "--K", "4", "--scales", "0,1"]


def test_pessimism_json(capsys: pytest.CaptureFixture[str]) -> None:
    from scipy import stats

    from reference.cooperative import run_mappo
    from reference.instances import RARE_STALL_PROBABILITY, RARE_STALL_REWARDS, rare_stall
    from reference.tabular import policy_iteration
    from verify.tolerances import certified, linear_solve_tolerance

    assert main([*PESSIMISM_FAST, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {
        "game", "gamma", "coverage", "samples", "seeds", "K", "beta", "lambda", "seed",
        "children", "J_star", "behaviour_J", "online_J", "validity_scale", "scales",
        "mean_J", "ci_half_width", "event_frequency", "J", "event",
    }
    assert (out["game"], out["gamma"], out["coverage"], out["samples"]) == (
        "rare-stall", 0.9, 0.15, 2000)
    assert (out["seeds"], out["K"], out["beta"], out["lambda"], out["seed"]) == (
        3, 4, 0.1, 1.0, 0)
    assert out["scales"] == [0.0, 1.0]
    assert [c["spawn_key"] for c in out["children"]] == [[0], [1], [2]]
    game = rare_stall(0.9)
    H = 1 / (1 - 0.9)
    opt = policy_iteration(game.tabular)
    # J* = 0.5 / (1 - gamma) (rare_stall's docstring: the safe action solves Bellman optimality)
    np.testing.assert_allclose(out["J_star"], 0.5 * H, rtol=0,
                               atol=certified(opt.error_bound, summation_tolerance(1, H)))
    # behaviour J by hand: in `ready` the safe action has mass p = 1 - C + C/|A| and pays 0.5,
    # a gamble (mass 1 - p) pays 0.7 and stalls w.p. 0.06, `stalled` pays 0, so
    # V(ready) = rbar / (1 - gamma (1 - 0.06 (1 - p))) with rbar = 0.5 p + 0.7 (1 - p)
    p = 1 - 0.15 + 0.15 / 27
    rbar = RARE_STALL_REWARDS[0] * p + RARE_STALL_REWARDS[1] * (1 - p)
    by_hand = rbar / (1 - 0.9 * (1 - RARE_STALL_PROBABILITY * (1 - p)))
    np.testing.assert_allclose(
        out["behaviour_J"], by_hand, rtol=0,
        atol=certified(linear_solve_tolerance(2, 0.9, H), summation_tolerance(8, H)),
    )
    assert out["online_J"] == run_mappo(game, 4, 0.1, output="last").J[-1]
    # every J(pi) lies in [0, J*]; each computed J is one LU solve on the 2 states, J* is
    # certified by policy iteration, and a mean of 3 adds its summation rounding
    tol = certified(linear_solve_tolerance(2, 0.9, H), opt.error_bound,
                    summation_tolerance(3, H))
    assert len(out["J"]) == len(out["event"]) == len(out["mean_J"]) == 2
    t = stats.t.ppf(0.975, 2)
    for i in range(2):
        J = np.array(out["J"][i])
        assert J.shape == (3,) and len(out["event"][i]) == 3
        assert np.all(J >= -tol) and np.all(J <= out["J_star"] + tol)
        assert -tol <= out["mean_J"][i] <= out["J_star"] + tol
        np.testing.assert_allclose(out["mean_J"][i], J.mean(), rtol=0,
                                   atol=summation_tolerance(3, H))
        np.testing.assert_allclose(out["ci_half_width"][i], t * J.std(ddof=1) / np.sqrt(3),
                                   rtol=0, atol=summation_tolerance(3, H))
        assert 0.0 <= out["event_frequency"][i] <= 1.0
        assert out["event_frequency"][i] == np.mean(out["event"][i])
    assert out["bonus_coefficient"] == [0.0, 1.0 / (1 - 0.9)]
    assert out["validity_scale"] > 0


def test_pessimism_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(PESSIMISM_FAST) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("rare-stall: gamma = 0.9, coverage = 0.15, samples = 2000")
    assert "J* = " in lines[1] and "behaviour J = " in lines[1]
    assert "online MA-PPO J_K = " in lines[1] and "validity-sufficient scale = " in lines[1]
    assert lines[2].split() == ["scale", "mean", "true", "J", "95%", "CI", "half-width",
                                "event", "frequency"]
    assert [ln.split()[0] for ln in lines[3:]] == ["0", "1"]


def test_pessimism_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "pessimism.png"
    assert main([*PESSIMISM_FAST, "--plot", str(png)]) == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert "event frequency" in capsys.readouterr().out


def test_pessimism_one_seed_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pessimism", "--seeds", "1", "--samples", "100", "--K", "1"]) == 2
    assert "seeds = 1, expected an integer >= 2" in capsys.readouterr().err


@pytest.mark.parametrize("scales", ["-1", "0,-0.5", "1,nan", "inf", "a,b"])
def test_pessimism_bad_scales(scales: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["pessimism", f"--scales={scales}"])
    assert exc.value.code == 2
    assert "argument --scales" in capsys.readouterr().err


def test_mutants_json_lists_every_planted_bug(capsys: pytest.CaptureFixture[str]) -> None:
    from verify.checks.planted import AREAS

    assert main(["mutants", "--area", "gae", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    module = AREAS["gae"]
    assert out["mutants"] == len(module.MUTANTS) and out["caught"] == out["mutants"]
    assert out["correct"] == len(module.CORRECT) == out["correct_passed"]
    assert {r["name"] for r in out["rows"]} == {m.name for m in module.MUTANTS + module.CORRECT}
    assert all(r["cases"] >= 10 for r in out["rows"])
    assert out["all_caught"] is True


def test_mutants_exit_status_reports_a_survivor(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A planted bug that its check does not catch makes the command exit with status 1."""
    from verify.checks.planted import gae

    correct = gae.CORRECT[0]
    fake = dataclasses.replace(correct, name="not-a-bug", bug="actually correct")
    monkeypatch.setattr(gae, "MUTANTS", (fake,))
    monkeypatch.setattr(gae, "CORRECT", ())
    # serial: the patch lives in this process (a spawned pool would not see it)
    assert main(["mutants", "--area", "gae", "--executor", "serial"]) == 1
    out = capsys.readouterr().out
    assert "SURVIVED" in out and "0 of 1 planted bugs caught" in out


def test_mutants_unknown_area(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mutants", "--area", "nowhere"]) == 2
    assert "matches no area" in capsys.readouterr().err


def test_assumptions_failing_verdict_exits_one(capsys: pytest.CaptureFixture[str]) -> None:
    """The climbing game's uniform sampling has concentrability 3 (hand value in
    tests/test_assumptions.py); a cap of 2 fails that verdict and the command exits 1."""
    assert main(["assumptions", "--game", "climbing", "--cap", "2"]) == 1
    assert main(["assumptions", "--game", "climbing", "--cap", "3"]) == 0
    capsys.readouterr()


def test_report_command_writes_files_and_table(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rep"
    argv = ["report", "--quick", "--out", str(out), "--only", "ma-pdl", "--only",
            "kappa-decay-beta0", "--no-progress"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "every claim passes and every planted defect fails (partial: --only)" in text
    assert "kappa-decay-beta0" in text and "defect ratio" in text
    assert (out / "report.md").exists() and (out / "report.json").exists()
    assert main(["report", "--only", "nonsense", "--out", str(out)]) == 2
    assert "no such claim" in capsys.readouterr().err
    capsys.readouterr()
