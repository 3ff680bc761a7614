"""The checks on code written the way real projects write it: reproducible cases, declared
GAE conventions with their cost, float32 and other precisions, array namespaces (JAX,
array-api-strict, PyTorch where installed), diagnoses that name the bug, and typed errors for
bad arguments (verify/checks/_core.py)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import array_api_strict
import numpy as np
import pytest

from reference.errors import ModelError
from verify.checks import (
    Case,
    CheckArgumentError,
    case_generator,
    case_size,
    check_agent_ratios,
    check_gae,
    check_joint_ratio,
    check_mappo_step,
    check_occupancy,
    check_occupancy_estimator,
    check_shadow_reward,
)
from verify.checks.gae import FLAGS, VALUES, gae_recursion
from verify.checks.planted import cooperative as coop
from verify.checks.planted import gae as planted
from verify.checks.planted import networked as net
from verify.checks.planted import tabular as tab
from verify.tolerances import EPS, precision_factor

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------ reproducible cases

_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
import numeric_constants_module  # noqa: F401  (loaded first: many numeric literals)
from verify.checks import check_gae
from verify.checks.planted import gae as planted
r = check_gae(planted.trace_not_reset, cases=50, seed=7)
print(json.dumps([r.failures, r.where, r.worst_case.index, r.distinct_cases]))
"""


def _constants_module(tmp: Path) -> None:
    lines = [f"C{k} = {0.1 * k + 1e-7 * k * k!r}" for k in range(400)]
    lines += [f"I{k} = {k * 37 % 1013}" for k in range(400)]
    (tmp / "numeric_constants_module.py").write_text("\n".join(lines) + "\n")


def test_cases_do_not_depend_on_the_process_or_the_modules_loaded(tmp_path: Path) -> None:
    """The same check, seed and case count give the same verdict and worst case in this
    process, under ``python -c`` and from a script file, each after importing a module full
    of numeric constants (which Hypothesis would mine)."""
    _constants_module(tmp_path)
    code = _SCRIPT.format(tests=str(tmp_path))
    script = tmp_path / "run_check.py"
    script.write_text(code)
    outs = []
    for argv in ([sys.executable, "-c", code], [sys.executable, str(script)]):
        done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        outs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    here = check_gae(planted.trace_not_reset, cases=50, seed=7)
    assert here.worst_case is not None
    mine = [here.failures, here.where, here.worst_case.index, here.distinct_cases]
    assert outs[0] == outs[1] == mine
    assert here.failures > 0


def test_a_case_depends_on_check_seed_and_index_only() -> None:
    a = case_generator("gae", 3, 5).random(4)
    assert np.array_equal(a, case_generator("gae", 3, 5).random(4))
    assert not np.array_equal(a, case_generator("gae", 3, 6).random(4))
    assert not np.array_equal(a, case_generator("occupancy", 3, 5).random(4))
    ladder = [case_size(i, 30) for i in range(30)]
    assert ladder[0] == pytest.approx(0.1) and ladder == sorted(ladder) and ladder[-1] == 1.0


def test_the_size_ladder_starts_small_and_reaches_the_limits() -> None:
    shapes: list[tuple[int, ...]] = []

    def spy(P: Any, rho: Any, gamma: float, pi: Any) -> Any:
        shapes.append(P.shape)
        return tab.occupancy(P, rho, gamma, pi)

    assert check_occupancy(spy, cases=30).passed
    assert shapes[0][:2] == (1, 1)
    assert max(s[0] for s in shapes) == 4 and max(s[1] for s in shapes) == 3


# ------------------------------------------------------------------ GAE conventions


def _dones_gae(rewards: Any, values: Any, next_values: Any, dones: Any, gamma: float,
               lam: float) -> Any:
    """Batch-major, one done flag, next_values: every end stops bootstrap and trace."""
    keep = 1.0 - dones.astype(np.float64)
    adv = np.zeros_like(rewards)
    run = np.zeros(rewards.shape[0])
    for t in range(rewards.shape[1] - 1, -1, -1):
        run = rewards[:, t] + gamma * keep[:, t] * (next_values[:, t] + lam * run) \
            - values[:, t]
        adv[:, t] = run
    return adv


def _cleanrl_gae(rewards: Any, values: Any, last_values: Any, starts: Any, last_dones: Any,
                 gamma: float, lam: float) -> Any:
    """Time-major, CleanRL style: ``dones[t]`` marks observation t as a new episode's first."""
    n_steps = rewards.shape[0]
    adv = np.zeros_like(rewards)
    last = 0.0
    for t in reversed(range(n_steps)):
        if t == n_steps - 1:
            nonterminal, nxt = 1.0 - last_dones, last_values
        else:
            nonterminal, nxt = 1.0 - starts[t + 1], values[t + 1]
        delta = rewards[t] + gamma * nxt * nonterminal - values[t]
        last = delta + gamma * lam * nonterminal * last
        adv[t] = last
    return adv


def test_real_routines_pass_under_their_declared_conventions() -> None:
    mappo = check_gae(planted.mappo_masks_gae, layout="time-major",
                      truncation="as-termination", flags="masks", values="T+1")
    assert mappo.passed, str(mappo)
    sb3 = check_gae(planted.sb3_float32_gae, layout="time-major", truncation="as-termination",
                    flags="episode_starts", values="last_values")
    assert sb3.passed and sb3.precision == "float32", str(sb3)
    clean = check_gae(_cleanrl_gae, layout="time-major", truncation="as-termination",
                      flags="episode_starts", values="last_values")
    assert clean.passed, str(clean)
    dones = check_gae(_dones_gae, truncation="as-termination", flags="dones")
    assert dones.passed, str(dones)
    for report in (mappo, sb3, clean, dones):
        assert report.convention is not None and "as-termination" in report.convention
        assert report.convention_cost is not None
        assert "largest deviation from the correct convention" in report.convention_cost
        assert "bootstrapping the truncation" in report.convention_cost


def test_the_convention_cost_is_the_largest_gap_to_the_correct_advantages() -> None:
    """Recomputed from the rollouts the callable saw: max |A_as-termination - A_correct|."""
    seen: list[tuple[Any, ...]] = []

    def spy(r: Any, v: Any, nv: Any, te: Any, tr: Any, g: float, lm: float) -> Any:
        seen.append((r, v, nv, te, tr, g, lm))
        return planted.truncation_as_termination(r, v, nv, te, tr, g, lm)

    report = check_gae(spy, truncation="as-termination", cases=20)
    assert report.passed and report.convention_cost is not None
    gap = max(float(np.max(np.abs(
        gae_recursion(r, v, nv, te | tr, np.zeros_like(tr), g, lm)
        - gae_recursion(r, v, nv, te, tr, g, lm)), initial=0.0))
        for r, v, nv, te, tr, g, lm in seen)
    assert f"{gap:.3g}" in report.convention_cost
    assert check_gae(planted.gae_vectorised, cases=20).convention_cost is None


def test_wrong_code_fails_under_its_convention() -> None:
    bad = check_gae(planted.mappo_masks_gae_same_step, layout="time-major",
                    truncation="as-termination", flags="masks", values="T+1")
    assert not bad.passed
    late = check_gae(planted.sb3_float32_gae_ignores_last_dones, layout="time-major",
                     truncation="as-termination", flags="episode_starts", values="last_values")
    assert not late.passed
    assert late.diagnosis is not None
    assert "gae-bootstrap-through-terminal-at-batch-end" in late.diagnosis
    # a correct bootstrap routine declared as-termination is a failure, not a pass
    assert not check_gae(planted.gae_vectorised, truncation="as-termination").passed


@pytest.mark.parametrize("flags", FLAGS)
@pytest.mark.parametrize("values", VALUES)
def test_a_truncation_convention_needs_the_information_to_compute_it(flags: str,
                                                                     values: str) -> None:
    """bootstrap needs next_values and flags that tell truncations apart; zero-advantage
    needs such flags; as-termination works with every input convention."""
    distinguishes = flags in ("terminated-truncated", "masks")
    if not (values == "next_values" and distinguishes):
        with pytest.raises(CheckArgumentError, match="truncation="):
            check_gae(planted.gae_vectorised, flags=flags, values=values)
    if not distinguishes:
        with pytest.raises(CheckArgumentError, match="truncation='zero-advantage'"):
            check_gae(planted.gae_vectorised, flags=flags, values=values,
                      truncation="zero-advantage")
    # as-termination is always expressible: a routine built for it passes
    report = check_gae(_any_convention(flags, values), flags=flags, values=values,
                       truncation="as-termination", cases=20)
    assert report.passed, str(report)


def _any_convention(flags: str, values: str) -> Any:
    """A routine for truncation='as-termination' under any flags/values convention (batch
    major): it reconstructs done and the next values from its inputs."""

    def fn(rewards: Any, *rest: Any) -> Any:
        *arrays, gamma, lam = rest
        if values == "next_values":
            vals, nxt = arrays[0], arrays[1]
            flag_args = arrays[2:]
        elif values == "T+1":
            vals, nxt = arrays[0][:, :-1], arrays[0][:, 1:]
            flag_args = arrays[1:]
        else:
            vals = arrays[0]
            nxt = np.concatenate([vals[:, 1:], np.asarray(arrays[1])[:, None]], axis=1)
            flag_args = arrays[2:]
        if flags == "terminated-truncated":
            done = flag_args[0] | flag_args[1]
        elif flags == "dones":
            done = flag_args[0]
        elif flags == "episode_starts":
            done = np.concatenate([flag_args[0][:, 1:], flag_args[1][:, None]], axis=1) > 0
        else:
            done = flag_args[0][:, 1:] == 0
        return _dones_gae(rewards, vals, nxt, done, gamma, lam)

    return fn


def test_mappo_proper_time_limits_is_the_zero_advantage_convention() -> None:
    zero = check_gae(planted.mappo_proper_time_limits_gae, layout="time-major",
                     truncation="zero-advantage", flags="masks", values="T+1")
    assert zero.passed and zero.convention_cost is not None, str(zero)
    wrong = check_gae(planted.mappo_proper_time_limits_gae, layout="time-major",
                      truncation="as-termination", flags="masks", values="T+1")
    assert not wrong.passed and wrong.diagnosis is not None
    assert "declare truncation='zero-advantage'" in wrong.diagnosis


def test_unknown_conventions_are_typed_errors_naming_the_argument() -> None:
    for kwargs, name in (({"layout": "env-major"}, "layout"),
                         ({"truncation": "ignore"}, "truncation"),
                         ({"flags": "terminals"}, "flags"), ({"values": "T"}, "values")):
        with pytest.raises(CheckArgumentError, match=f"^{name} = "):
            check_gae(planted.gae_vectorised, **kwargs)


# ------------------------------------------------------------------ precision


def test_the_float32_factor_is_derived_from_the_epsilons() -> None:
    assert precision_factor(np.float64) == 1.0
    assert precision_factor(np.float32) == 2.0 * float(np.finfo(np.float32).eps) / EPS
    with pytest.raises(ModelError):
        precision_factor(np.int32)


def _occupancy32(P: Any, rho: Any, gamma: float, pi: Any) -> Any:
    P32, rho32, pi32 = (np.asarray(x, dtype=np.float32) for x in (P, rho, pi))
    P_pi = np.einsum("sa,sat->st", pi32, P32)
    lam = np.linalg.solve(np.eye(P.shape[0], dtype=np.float32) - np.float32(gamma) * P_pi.T,
                          rho32)
    return lam[:, None] * pi32


def test_float32_routines_are_judged_at_float32_and_float64_ones_at_float64() -> None:
    r32 = check_occupancy(_occupancy32)
    assert r32.passed and r32.precision == "float32", str(r32)
    happo = check_joint_ratio(coop.happo_factor_float32)
    assert happo.passed and happo.precision == "float32"
    # the same float32 error in a float64 output is a failure at float64
    as64 = check_occupancy(lambda *a: np.asarray(_occupancy32(*a), dtype=np.float64))
    assert not as64.passed and as64.precision == "float64"
    # a float32 routine with a real bug still fails
    bug32 = check_occupancy(lambda *a: np.asarray(tab.occupancy_transposed(*a), np.float32))
    assert not bug32.passed and bug32.precision == "float32"


def test_declared_dtype_hands_over_float32_inputs() -> None:
    dtypes: set[str] = set()

    def spy(P: Any, rho: Any, gamma: float, pi: Any) -> Any:
        dtypes.update({str(P.dtype), str(rho.dtype), str(pi.dtype)})
        return _occupancy32(P, rho, gamma, pi)

    assert check_occupancy(spy, dtype="float32", cases=10).passed
    assert dtypes == {"float32"}


def test_a_one_minus_p_softmax_passes_and_rtol_adds_relative_room() -> None:
    def one_minus(conds: Any, q: Any, beta: float) -> Any:
        out = []
        for p in coop.mappo_step(conds, q, beta):
            p = np.array(p)
            p[..., -1] = 1.0 - p[..., :-1].sum(axis=-1)
            out.append(p)
        return tuple(out)

    assert check_mappo_step(one_minus).passed
    scaled = check_agent_ratios(lambda *a: coop.agent_ratios(*a) * (1 + 1e-9))
    assert not scaled.passed
    assert check_agent_ratios(lambda *a: coop.agent_ratios(*a) * (1 + 1e-9), rtol=2e-9).passed


# ------------------------------------------------------------------ array namespaces


_JAX_SCRIPT = """
import jax, jax.numpy as jnp
from verify.checks import CheckArgumentError, check_gae, check_occupancy

def jax_occupancy(P, rho, gamma, pi):
    P_pi = jnp.einsum("sa,sat->st", pi, P)
    lam_s = jnp.linalg.solve(jnp.eye(P.shape[0], dtype=P.dtype) - gamma * P_pi.T, rho)
    return lam_s[:, None] * pi

def jax_transposed(P, rho, gamma, pi):
    P_pi = jnp.einsum("sa,sat->st", pi, P)
    lam_s = jnp.linalg.solve(jnp.eye(P.shape[0], dtype=P.dtype) - gamma * P_pi, rho)
    return lam_s[:, None] * pi

def jax_gae(rewards, values, next_values, terminated, truncated, gamma, lam):
    delta = rewards + gamma * jnp.where(terminated, 0.0, next_values) - values
    carry = jnp.where(terminated | truncated, 0.0, gamma * lam)
    after, out = jnp.zeros(rewards.shape[0], rewards.dtype), []
    for d, c in zip(reversed(list(delta.T)), reversed(list(carry.T))):
        after = d + c * after
        out.append(after)
    return jnp.stack(out[::-1], axis=1)

with jax.enable_x64(True):
    report = check_occupancy(jax_occupancy, xp=jnp, cases=5)
    assert report.passed and report.precision == "float64", str(report)
    bad = check_occupancy(jax_transposed, xp=jnp, cases=5)
    assert not bad.passed and "occupancy-transposed-kernel" in bad.diagnosis, str(bad)
    gae = check_gae(jax_gae, xp=jnp, cases=3)
    assert gae.passed, str(gae)
with jax.enable_x64(False):
    try:
        check_gae(jax_gae, xp=jnp, cases=2)
    except CheckArgumentError as exc:
        assert "jax_enable_x64" in str(exc), str(exc)
    else:
        raise AssertionError("a float64 check ran on JAX without x64")
    low = check_occupancy(jax_occupancy, xp=jnp, dtype="float32", cases=5)
    assert low.passed and low.precision == "float32", str(low)
print("ok")
"""


def test_jax_arrays_in_and_out() -> None:
    """JAX on CPU, in its own interpreter (JAX's threads must not live in the test process,
    whose later tests fork process pools): float64 with x64, a typed error without it,
    float32 when declared; a JAX bug fails with its diagnosis.  Few cases: JAX compiles each
    operation anew for every shape the size ladder draws."""
    done = subprocess.run([sys.executable, "-c", _JAX_SCRIPT], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_array_api_strict_arrays_in_and_out() -> None:
    xp = array_api_strict

    def occupancy(P: Any, rho: Any, gamma: float, pi: Any) -> Any:
        n = P.shape[0]
        P_pi = xp.sum(pi[:, :, None] * P, axis=1)
        lam_s = xp.linalg.solve(xp.eye(n, dtype=P.dtype) - gamma * xp.matrix_transpose(P_pi),
                                rho)
        return lam_s[:, None] * pi

    assert check_occupancy(occupancy, xp=xp, cases=20).passed


def test_torch_tensors_in_and_out() -> None:
    torch = pytest.importorskip("torch")

    def occupancy(P: Any, rho: Any, gamma: float, pi: Any) -> Any:
        P_pi = torch.einsum("sa,sat->st", pi, P)
        lam = torch.linalg.solve(torch.eye(P.shape[0], dtype=P.dtype) - gamma * P_pi.T, rho)
        return lam[:, None] * pi

    assert check_occupancy(occupancy, xp=torch, cases=10).passed


# ------------------------------------------------------------------ diagnosis and messages


def test_diagnosis_names_the_convention_to_declare() -> None:
    report = check_gae(planted.truncation_as_termination)
    assert not report.passed and report.diagnosis is not None
    assert "truncation='as-termination'" in report.diagnosis
    assert "declare" in report.diagnosis and "diagnosis:" in str(report)
    assert "atol=" not in str(report)  # no solve behind the GAE oracle


def test_diagnosis_names_the_occupancy_bugs_and_messages_carry_the_mass() -> None:
    over = check_occupancy(tab.occupancy_overwritten)
    assert over.diagnosis is not None and "occupancy-overwritten-sum" in over.diagnosis
    assert "gamma = " in over.where and "total mass" in over.where
    assert "expected 1/(1 - gamma) = " in over.where
    post = check_occupancy_estimator(
        tab._occupancy_sampler(discount=True, skip_first=True, leak=0.0), cases=6)
    assert not post.passed and post.diagnosis is not None
    assert "occupancy-estimator-post-step" in post.diagnosis and "s_{t+1}" in post.diagnosis


def test_shadow_reward_takes_the_users_eps() -> None:
    hard = net._shadow(net.Bugs(eps=1e-8))
    wrong = check_shadow_reward(hard, cases=8)
    assert not wrong.passed and wrong.diagnosis is not None
    assert "shadow-reward-mismatched-eps" in wrong.diagnosis
    assert check_shadow_reward(hard, eps=1e-8, cases=8).passed
    with pytest.raises(CheckArgumentError, match=r"^eps = "):
        check_shadow_reward(hard, eps=-1.0)


def test_state_only_occupancy() -> None:
    def d_s(P: Any, rho: Any, gamma: float, pi: Any) -> Any:
        return (1 - gamma) * tab.occupancy(P, rho, gamma, pi).sum(axis=1)

    assert check_occupancy(d_s, normalised=True, states_only=True).passed
    wrong = check_occupancy(d_s, states_only=True)
    assert not wrong.passed and "lam_S[s=" in wrong.where


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("name,value", [("atol", -1.0), ("atol", math.nan), ("atol", math.inf),
                                        ("rtol", -1e-3), ("rtol", math.nan)])
def test_bad_tolerances_are_rejected_naming_the_argument(name: str, value: float) -> None:
    with pytest.raises(CheckArgumentError, match=f"^{name} = "):
        check_occupancy(tab.occupancy, **{name: value})
    with pytest.raises(CheckArgumentError, match=f"^{name} = "):
        check_gae(planted.gae_vectorised, **{name: value})


@pytest.mark.parametrize("kwargs,name", [({"cases": 0}, "cases"), ({"seed": -1}, "seed"),
                                         ({"max_states": 0}, "max_states"),
                                         ({"dtype": "int8"}, "dtype")])
def test_bad_run_arguments_are_rejected(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(CheckArgumentError, match=f"^{name} = "):
        check_occupancy(tab.occupancy, **kwargs)


def test_complex_output_fails_the_case() -> None:
    report = check_occupancy(lambda *a: tab.occupancy(*a) + 0j, cases=3)
    assert not report.passed and "complex" in report.where


def test_case_load_of_bad_files_raises_model_error(tmp_path: Path) -> None:
    good = check_occupancy(tab.occupancy_transposed, cases=10).worst_case
    assert good is not None
    path = tmp_path / "case.npz"
    good.save(path)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelError, match="not a readable case file"):
        Case.load(truncated)
    empty = tmp_path / "fieldless.npz"
    np.savez(empty, x=np.zeros(2))
    with pytest.raises(ModelError, match="missing field"):
        Case.load(empty)
    bare = tmp_path / "bare.npy"
    np.save(bare, np.zeros(3))
    with pytest.raises(ModelError):
        Case.load(bare)
    assert Case.load(path).check == "occupancy"


def test_the_module_docstring_example_replays(tmp_path: Path) -> None:
    code = textwrap.dedent("""
        from verify.checks import Case, check_gae
        from verify.checks.planted import gae as planted
        r = check_gae(planted.trace_not_reset, cases=10)
        r.worst_case.save("w.npz")
        again = check_gae(planted.trace_not_reset, replay=Case.load("w.npz"))
        assert again.where == r.where, (again.where, r.where)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


# ------------------------------------------------------------------ log-probabilities, returns


def test_ratio_checks_take_gathered_log_probabilities() -> None:
    """What a neural actor hands its loss: log pi^m(a^m | ...) per agent, (B, N)."""
    happo = check_joint_ratio(
        lambda new, old: np.exp(np.sum(new.astype(np.float32) - old.astype(np.float32),
                                       axis=1)),
        inputs="log-probs",
    )
    assert happo.passed and happo.precision == "float32", str(happo)
    assert happo.convention == "inputs='log-probs'"
    mappo = check_agent_ratios(lambda new, old: np.exp(new - old), inputs="log-probs")
    assert mappo.passed
    # a MAPPO per-agent ratio is not the joint one: the diagnosis says which known bug it is
    last = check_joint_ratio(lambda new, old: np.exp(new - old)[:, -1], inputs="log-probs")
    assert not last.passed and last.diagnosis is not None
    assert "joint-ratio-last-agent-only" in last.diagnosis
    with pytest.raises(CheckArgumentError, match=r"^inputs = "):
        check_joint_ratio(coop.joint_ratio, inputs="logits")
    per_agent = check_joint_ratio(lambda new, old: np.exp(new - old), inputs="log-probs")
    assert not per_agent.passed and "check_agent_ratios" in per_agent.where


def test_gae_returns_and_nstep_returns() -> None:
    """output='returns' checks R_t = A_t + values_t; with lam = 1 and a single done flag it
    is the rollout-length n-step return of A2C-style code."""
    returns = check_gae(lambda *a: planted.gae_vectorised(*a) + a[1], output="returns")
    assert returns.passed and "R[b=" in returns.where
    assert not check_gae(planted.gae_vectorised, output="returns").passed
    nstep = check_gae(planted.nstep_returns, lam=1.0, layout="time-major",
                      truncation="as-termination", flags="dones", values="last_values",
                      output="returns")
    assert nstep.passed, str(nstep)
    late = check_gae(planted.nstep_returns_through_batch_end, lam=1.0, layout="time-major",
                     truncation="as-termination", flags="dones", values="last_values",
                     output="returns")
    assert not late.passed and late.diagnosis is not None
    assert "gae-bootstrap-through-terminal-at-batch-end" in late.diagnosis
    with pytest.raises(CheckArgumentError, match=r"^output = "):
        check_gae(planted.gae_vectorised, output="values")


def test_mutants_command_reports_what_each_diagnosis_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from verify.checks.planted import AREAS, expected_diagnosis
    from verify.cli import main

    assert main(["mutants", "--area", "gae", "--json", "--executor", "serial"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in out["rows"]}
    for mutant in AREAS["gae"].MUTANTS:
        named = expected_diagnosis(mutant)
        row = rows[mutant.name]
        if named is not None:
            assert row["diagnosis"] is not None and named in row["diagnosis"]
            expected = "itself" if named == repr(mutant.name) else named
            assert row["named"] in (expected, expected.strip("'"))
    assert out["diagnosed"] == sum(r["named"] != "-" for r in out["rows"] if r["kind"] == "mutant")
    assert all(r["named"] == "-" for r in out["rows"] if r["kind"] == "correct")
    assert main(["mutants", "--area", "gae", "--executor", "serial"]) == 0
    text = capsys.readouterr().out
    assert "diagnosis names" in text and "itself" in text and "diagnosed)" in text
