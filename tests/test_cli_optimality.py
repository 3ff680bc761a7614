"""The ``optimum`` and ``kappa-tradeoff`` subcommands (verify/cli_optimality.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reference.instances import line_message
from reference.networked import LocalizedSoftmaxPolicy, objective, optimum
from verify.cli import main
from verify.tolerances import gradient_tolerance, summation_tolerance


def test_optimum_json_matches_the_oracle(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "optimum",
        "--agents",
        "3",
        "--utility",
        "entropy",
        "--obs-radius",
        "0,2",
        "--iterations",
        "10",
        "--starts",
        "2",
        "--executor",
        "serial",
        "--json",
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    inst = line_message(3)
    utils = inst.utilities("entropy")
    opt = optimum(inst.model, utils, gap=1e-6)
    assert out["F_star"] == opt.value
    assert out["duality_gap"] == opt.duality_gap
    assert 0 <= out["duality_gap"] <= 1e-6
    assert out["F_initial"] == objective(
        inst.model, LocalizedSoftmaxPolicy.uniform(inst.model), utils
    )
    slack = summation_tolerance(64, 1.0)
    assert [row["beta"] for row in out["F_localized"]] == [0, 2]
    for row in out["F_localized"]:
        assert row["F_localized"] <= out["F_star_upper_bound"] + slack
        assert row["F_localized"] >= out["F_initial"] - slack
        assert row["price_upper_bound"] >= -slack
        assert row["equals_F_star_proved"] is False  # entropy utilities: not proved
    assert "lower bound" in out["F_localized_is"]


def test_optimum_text_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "optimum",
                "--agents",
                "2",
                "--obs-radius",
                "1",
                "--iterations",
                "5",
                "--starts",
                "1",
                "--executor",
                "serial",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "F_star" in text and "duality_gap" in text and "F_initial" in text
    assert "(F_loc = F* proved)" in text  # linear utilities, beta = diameter = 1
    assert main(["optimum", "--agents", "3", "--utility", "mixed", "--executor", "serial"]) == 2
    assert "no agent roles" in capsys.readouterr().err


def test_kappa_tradeoff_json_and_plot(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    plot = tmp_path / "trade.png"
    argv = [
        "kappa-tradeoff",
        "--instance",
        "line-message-mixed",
        "--agents",
        "3",
        "--utility",
        "mixed",
        "--iterations",
        "2",
        "--batch",
        "8",
        "--horizon",
        "5",
        "--repeats",
        "2",
        "--executor",
        "serial",
        "--json",
        "--plot",
        str(plot),
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kappa"] == [0, 1, 2]
    # a line of 3: |N_i^1| = 2, 3, 2 and |N_i^2| = 3 each (hand count)
    assert out["messages_per_step"] == [0, 4, 6]
    assert out["floats_per_step"] == [0, 12, 18]
    assert out["floats_per_iteration"][0] == 0.0
    steps = out["samples"] / out["iterations"] / 3  # joint steps per iteration
    assert out["messages_per_iteration"] == [m * steps for m in out["messages_per_step"]]
    # kappa = diameter: the truncated gradient is the gradient (SPEC section 3)
    tol = gradient_tolerance(64, 0.9, 10.0)
    assert out["exact_truncation_error"][-1] <= tol
    assert out["sampled_truncation_error"][-1] <= tol
    for gap in out["exact_gap"] + out["sampled_gap"]:
        assert gap >= -summation_tolerance(64, 10.0)
    assert np.all(np.isfinite(out["sampled_gradient_norm_sq"]))
    assert plot.stat().st_size > 0
