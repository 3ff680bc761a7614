"""The benchmark of exact oracles at ``2^24`` joint states runs in no test (it takes a minute);
its code path — a seeded ring, one matrix-free operator with its default threads, one
application against a plain copy, one exact gradient with reverse-mode forms and BiCGSTAB,
each size in a fresh process — runs here at ``2^8`` and ``2^10`` joint states."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from reference.networked.matrix_free import DEFAULT_ACCURACY

ROOT = Path(__file__).resolve().parents[1]


def test_operator_bandwidth_bench_runs_its_code_path_at_small_sizes() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "operator_bandwidth.py"), "--n", "8,10",
         "--gradient-max", "10", "--repeats", "1", "--json"],
        capture_output=True, text=True, check=False, cwd=ROOT, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    assert [row["n"] for row in rows] == [8, 10]
    for row in rows:
        assert row["joint_states"] == 2 ** row["n"]
        # the plan moves at least the floor (read v, write P v), and both rates are positive
        assert row["bytes"] >= row["floor_bytes"] == 16 * row["joint_states"]
        assert row["achieved_bytes_per_s"] > 0 and row["copy_bytes_per_s"] > 0
        assert row["peak_rss_bytes"] > 0
        # two certified solves, each within the default accuracy of its a priori scale
        # (||rho||_1 / (1 - gamma) = 10 for the occupancy; the entropy rewards are bounded)
        assert row["applications"] > 0
        assert 0 < row["occupancy_error_bound"] <= DEFAULT_ACCURACY * 10.0
        assert 0 <= row["value_error_bound"]


def test_operator_bandwidth_bench_runs_a_line_of_four_state_agents() -> None:
    """The 12-agent line of 4-state agents (``--local 4 --graph line``) at 4 agents: 256
    joint states, a gradient with certified solves."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "operator_bandwidth.py"), "--n", "4",
         "--local", "4", "--graph", "line", "--gradient-max", "4", "--repeats", "1", "--json"],
        capture_output=True, text=True, check=False, cwd=ROOT, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout.strip().splitlines()[-1])
    assert row["joint_states"] == 4 ** 4 and row["local_states"] == 4 and row["graph"] == "line"
    assert row["bytes"] >= row["floor_bytes"]
    assert 0 < row["occupancy_error_bound"] <= DEFAULT_ACCURACY * 10.0
