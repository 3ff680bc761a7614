"""Streamed decay spreads and the occupancy identity of the truncated gradient
(proofs_notes/decay.md#streamed-spreads, proofs_notes/truncated-gradient.md#occupancy-identity):
each against the independent route on joint tables, the memory prediction made before any
work and honoured in a subprocess, and the progress callback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference.networked.truncation as truncation
from reference.errors import MemoryLimitError, ModelError
from reference.instances import line_message
from reference.networked import LocalizedSoftmaxPolicy, NetworkedMDP, NetworkedSolution, solve
from reference.networked.exact import gradient_contributions, iter_shadow_q
from reference.networked.truncation import (
    decay_profile,
    decay_spread,
    occupancy_identity_holds,
    occupancy_truncated_gradient,
    truncated_gradient,
)
from verify import strategies as mst
from verify.experiments import kappa_decay_sweep
from verify.tolerances import summation_tolerance

ROOT = Path(__file__).resolve().parents[1]


def _table_tolerance(sol: NetworkedSolution, model: NetworkedMDP) -> float:
    """The two routes share V_i and differ only in the order of the sums in r + gamma P V
    (|S| terms of size at most |V|_max + |r|_max); a spread is a difference of two entries,
    so twice that."""
    scale = float(np.max(np.abs(sol.require_shadow_values()))) + max(
        float(np.max(np.abs(r))) for r in sol.shadow_rewards
    )
    return 2.0 * summation_tolerance(model.states.size, scale)


def _table_spreads(model: NetworkedMDP, policy: LocalizedSoftmaxPolicy,
                   sol: NetworkedSolution, ks: list[int]) -> np.ndarray:
    tables = iter_shadow_q(model, policy, sol)
    return np.array([[decay_spread(model, q, i, k) for k in ks] for i, q in enumerate(tables)])


@settings(max_examples=25, deadline=None)
@given(
    problem=mst.networked_problems(max_agents=5, max_joint_states=32, utility_kinds=("entropy",)),
    target=st.sampled_from([1, 4, 64, 1 << 18]),
)
def test_streamed_spreads_match_the_joint_tables(
    problem: mst.NetworkedProblem, target: int
) -> None:
    """Every graph kind, beta in {0, 1, 2}, one to several local states and actions; small
    chunk targets fix several agents per chunk, so the cross-chunk running tables and the
    fixed-agent contractions are exercised as well as the single-chunk case."""
    model, policy = problem.model, problem.policy
    sol = solve(model, policy, problem.utilities, values="per-agent")
    ks = list(range(model.graph.diameter + 2))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(truncation, "_CHUNK_TARGET_FLOATS", target)
        streamed = decay_profile(model, policy, sol, kappas=ks).spread
    np.testing.assert_allclose(
        streamed, _table_spreads(model, policy, sol, ks), rtol=0,
        atol=_table_tolerance(sol, model),
    )


def test_duplicate_actions_are_visited_once_and_still_exact() -> None:
    """line-message's agent 0 ignores its action (proofs_notes/decay.md#streamed-spreads): it keeps
    one action class for every other agent's table, both for agent 0 itself; the spreads
    still equal the table route."""
    inst = line_message(7)
    model = inst.model
    assert truncation._action_classes(model, 0) == (0,)
    assert truncation._action_classes(model, 3) == (0, 1)
    plan = truncation._spread_plan(model, 3, [0, 1], 1 << 30)
    assert plan.actions[0] == (0,) and plan.actions[3] == (0, 1)
    assert truncation._spread_plan(model, 0, [0], 1 << 30).actions[0] == (0, 1)
    policy = LocalizedSoftmaxPolicy.random(model, 0, np.random.default_rng(3))
    sol = solve(model, policy, inst.utilities("entropy"), values="per-agent")
    ks = list(range(model.n))
    np.testing.assert_allclose(
        decay_profile(model, policy, sol).spread, _table_spreads(model, policy, sol, ks),
        rtol=0, atol=_table_tolerance(sol, model),
    )


def test_prediction_refuses_before_any_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """A limit below the smallest chunk raises MemoryLimitError naming the streamed spreads,
    before the per-agent values are even solved for."""
    inst = line_message(8)
    policy = LocalizedSoftmaxPolicy.uniform(inst.model, 0)
    sol = solve(inst.model, policy, inst.utilities())

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("work started before the memory check")

    monkeypatch.setattr(truncation, "per_agent_values", refuse)
    with pytest.raises(MemoryLimitError, match="streamed decay spreads of agent 0"):
        decay_profile(inst.model, policy, sol, memory_limit=4096)


def test_progress_reaches_the_total() -> None:
    inst = line_message(6)
    policy = LocalizedSoftmaxPolicy.uniform(inst.model, 0)
    sol = solve(inst.model, policy, inst.utilities())
    seen: list[tuple[int, int]] = []
    decay_profile(inst.model, policy, sol, progress=lambda d, t: seen.append((d, t)))
    total = seen[-1][1]
    assert [d for d, _ in seen] == list(range(1, total + 1))
    assert all(t == total for _, t in seen)


_CHILD = """
import json, os, sys
from reference.instances import line_message
from reference.networked import LocalizedSoftmaxPolicy, solve
from verify.experiments import kappa_decay_sweep
n = int(sys.argv[1])
inst = line_message(n)
policy = LocalizedSoftmaxPolicy.uniform(inst.model, 0)
solve(inst.model, policy, inst.utilities(), values="per-agent")  # warm every import
page = os.sysconf("SC_PAGE_SIZE")
with open("/proc/self/statm") as f:
    before = int(f.read().split()[1]) * page
sweep = kappa_decay_sweep(inst.model, policy, inst.utilities())
with open("/proc/self/status") as f:
    peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
print(json.dumps({"before": before, "peak": peak, "spread": list(sweep.max_spread)}))
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc (Linux)")
def test_memory_limit_is_honoured_in_a_subprocess() -> None:
    """n = 11 binary agents: one joint shadow Q table is 4^11 floats = 32 MiB, the route on
    joint tables needs (n + 2) of them (416 MiB).  Under MARL_ORACLE_MEMORY_LIMIT = 48 MiB the
    streamed sweep completes, and the child's peak RSS rises by at most the limit above its
    resident size just before the sweep.  The peak is VmHWM of /proc/self/status, the high
    -water mark of the child's own address space: getrusage's ru_maxrss would also carry the
    RSS of the parent at fork (it survives execve on Linux)."""
    limit = 48 * 1024**2
    env = {**os.environ, "MARL_ORACLE_MEMORY_LIMIT": str(limit), "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, "11"], env=env, capture_output=True, text=True,
        check=True, cwd=ROOT, timeout=600,
    )
    record = json.loads(out.stdout)
    assert 8 * 3 * 4**11 > limit  # even the old one-table-at-a-time route would not fit
    assert record["peak"] - record["before"] <= limit, record
    assert record["spread"][0] > record["spread"][-1] == 0.0


@settings(max_examples=25, deadline=None)
@given(problem=mst.networked_problems(max_agents=5, max_joint_states=32))
def test_occupancy_identity_matches_the_table_route(problem: mst.NetworkedProblem) -> None:
    """Route 1: the definition on joint tables (truncated_q with occupancy weights, then the
    score contraction); route 2: (1/n) sum_{j in N_i^kappa} G[i][j].  Equal wherever the
    identity's condition holds; the contributions sum to grad F."""
    model, policy = problem.model, problem.policy
    sol = solve(model, policy, problem.utilities, values="per-agent")
    g = gradient_contributions(model, policy, sol)
    # every term is lam_S(s) pi (Q^{(i)} - V) with lam_S summing to 1/(1-gamma) and
    # |Q^{(i)} - V| <= max|r| + 2 max|V|
    v_max = float(np.max(np.abs(sol.require_shadow_values())))
    r_max = max(float(np.max(np.abs(r))) for r in sol.shadow_rewards)
    scale = (r_max + 2.0 * v_max) / (1.0 - model.gamma)
    tol = 4.0 * summation_tolerance(model.states.size * model.actions.size, scale) * model.n
    for i in range(model.n):
        np.testing.assert_allclose(
            np.sum(g[i], axis=0) / model.n, sol.gradient[i], rtol=0, atol=tol
        )
    for k in range(model.graph.diameter + 1):
        if not occupancy_identity_holds(model, policy.beta, k):
            with pytest.raises(ModelError, match="not inside"):
                occupancy_truncated_gradient(model, policy, sol, k, contributions=g)
            continue
        fast = occupancy_truncated_gradient(model, policy, sol, k, contributions=g)
        slow = truncated_gradient(model, policy, sol, k, "occupancy")
        for a, b in zip(fast, slow, strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=tol)


def test_identity_condition_by_hand() -> None:
    """Line of 5: beta = 0 always holds; beta = 1 needs N_i^1 inside N_j^kappa for j at
    distance kappa from i, i.e. kappa + 1 <= kappa: never, unless N_j^kappa is the whole
    line (kappa >= 4 for every j)."""
    model = line_message(5).model
    assert all(occupancy_identity_holds(model, 0, k) for k in range(5))
    assert [occupancy_identity_holds(model, 1, k) for k in range(6)] == [
        False, False, False, False, True, True,
    ]


def test_sweep_uses_the_identity_and_agrees_with_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """kappa_decay_sweep at beta = 0 builds no joint table (shadow_q refused), and its
    truncated-gradient errors equal those of the table route."""
    inst = line_message(6)
    policy = LocalizedSoftmaxPolicy.random(inst.model, 0, np.random.default_rng(5))
    utils = inst.utilities("entropy")
    sol = solve(inst.model, policy, utils, values="per-agent")
    expected = []
    for k in range(inst.model.graph.diameter + 1):
        g = truncated_gradient(inst.model, policy, sol, k, "occupancy")
        expected.append(np.sqrt(sum(float(np.sum((a - b) ** 2))
                                    for a, b in zip(g, sol.gradient, strict=True))))

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("a joint shadow Q table was built")

    import verify.experiments as experiments

    monkeypatch.setattr(experiments, "shadow_q", refuse)
    sweep = kappa_decay_sweep(inst.model, policy, utils)
    np.testing.assert_allclose(sweep.truncated_gradient_error, expected, rtol=1e-9,
                               atol=1e-15)


def test_cli_progress_line(capsys: pytest.CaptureFixture[str]) -> None:
    """marl-oracle decay's progress callback: silent for short runs, then
    ``label: done/total chunks`` on stderr, ending with a newline at the total."""
    from verify.cli import _progress

    quiet = _progress("decay", after=3600.0)
    quiet(1, 2)
    quiet(2, 2)
    assert capsys.readouterr().err == ""
    loud = _progress("decay", after=0.0)
    loud(2, 2)
    err = capsys.readouterr().err
    assert err.startswith("\rdecay: 2/2 chunks") and err.endswith("\n")
