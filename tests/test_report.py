"""The theorem report (verify/report.py): judgements, claims, planted defects, files."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import verify.report as rep
from reference.errors import ModelError
from reference.instances import climbing
from reference.networked.truncation import first_escape_time
from verify.cli import main
from verify.executors import SerialExecutor
from verify.report import (
    CLAIMS,
    ClaimSpec,
    Evaluation,
    Report,
    claim_names,
    claim_seeds,
    judge,
    run_report,
    write_report,
)


@pytest.fixture(scope="module")
def quick_report() -> Report:
    """Every claim of the quick report and its planted defect, run once for the module."""
    return run_report(quick=True)


def _ev(measured: list[float], bound: list[float], allowance: Any = 0.0) -> Evaluation:
    return Evaluation("toy", np.array(measured), np.array(bound),
                      tuple(f"item {k}" for k in range(len(measured))), allowance=allowance)


# ------------------------------------------------------------------------------ judgements


def test_ratio_is_the_largest_measured_over_bound() -> None:
    jd = judge(_ev([1.0, 3.0, 0.5], [2.0, 4.0, 0.25]))
    assert jd.ratio == 2.0 and jd.worst == "item 2" and jd.verdict == "fail"
    assert (jd.measured, jd.bound, jd.margin) == (0.5, 0.25, -1.0)
    jd = judge(_ev([1.0, 3.0], [2.0, 4.0]))
    assert jd.ratio == 0.75 and jd.verdict == "pass" and jd.margin == 0.25
    assert jd.items == 2 and jd.exact_items == 0 and jd.exact_worst == -math.inf


def test_zero_bounds_are_judged_against_their_allowance_and_counted_apart() -> None:
    """An item with bound 0 passes within its rounding allowance and does not enter the
    ratio; beyond it the ratio is inf (a positive value where 0 is claimed)."""
    jd = judge(_ev([0.5, 1e-17], [1.0, 0.0], allowance=1e-15))
    assert jd.ratio == 0.5 and jd.exact_items == 1 and jd.exact_worst == 1e-17
    jd = judge(_ev([0.5, 1e-14], [1.0, 0.0], allowance=1e-15))
    assert jd.ratio == math.inf and jd.worst == "item 1" and jd.verdict == "fail"
    jd = judge(_ev([0.0, 1e-16], [0.0, 0.0], allowance=np.array([0.0, 1e-15])))
    assert jd.ratio == 0.0 and jd.verdict == "pass" and jd.worst == "item 1"


def test_nan_measurements_fail() -> None:
    assert judge(_ev([math.nan, 0.1], [1.0, 1.0])).ratio == math.inf


def test_evaluations_are_validated() -> None:
    with pytest.raises(ModelError, match="one equal, positive length"):
        _ev([1.0, 2.0], [1.0])
    with pytest.raises(ModelError, match="bounds must be >= 0"):
        _ev([1.0], [-1.0])


# ------------------------------------------------------------------- claims and defects


def test_claim_names_are_the_contract() -> None:
    names = claim_names()
    assert len(set(names)) == len(names)
    for required in ("kappa-decay-beta0", "kappa-decay-beta1", "kappa-decay-beta2",
                     "truncated-gradient", "mappo-gap", "mappo-gap-tight", "optimum-routes",
                     "price-of-localization"):
        assert required in names
    for required in ("sample-complexity", "decay-coupling", "shadow-reward-bound"):
        assert required in names  # judged as measured <= bound, none merely "reported"
    assert all(c.provenance in ("derived here", "as stated in the paper") for c in CLAIMS)


@pytest.mark.parametrize("name", claim_names())
def test_each_claim_passes_and_its_planted_defect_fails(quick_report: Report, name: str) -> None:
    (claim,) = [c for c in quick_report.claims if c.name == name]
    assert claim.verdict == "pass" and claim.ratio <= 1.0, claim.judgement
    assert claim.power.verdict == "fail" and claim.power.ratio > 1.0, claim.power


@pytest.mark.parametrize(
    ("name", "least"),
    [
        # decay at a random theta for every beta: the state part alone attains
        # 1/(1 + action reward) of the bound (proofs_notes/decay.md#tight)
        ("kappa-decay-beta0", 0.9), ("kappa-decay-beta1", 0.9), ("kappa-decay-beta2", 0.9),
        # Hedge on the two-armed bandit (proofs_notes/mappo-bound.md#tight)
        ("mappo-gap-tight", 0.5), ("pessimism-bound", 0.5),
        # the XOR pair (proofs_notes/truncated-gradient.md#tight)
        ("truncated-gradient", 0.2), ("truncated-gradient-sharp", 0.9),
        # the pessimistic critic on the equal arms (proofs_notes/pessimism.md#event)
        ("pessimism-event", 0.9),
        # the shift chain inside the coupled-line family (proofs_notes/decay.md#coupling);
        # the linear utility's shadow reward is its reward (shadow-reward-gradient.md#bounded)
        ("decay-coupling", 0.9), ("shadow-reward-bound", 1.0),
        # linear utilities with full observation: F_loc = F* (proofs_notes/optimum.md#localized)
        ("price-of-localization", 0.9),
    ],
)
def test_bounds_are_measured_where_nearly_attained(
    quick_report: Report, name: str, least: float
) -> None:
    (claim,) = [c for c in quick_report.claims if c.name == name]
    assert claim.ratio >= least


def test_decay_claims_exercise_beta(quick_report: Report) -> None:
    """At a random theta the spreads depend on the observation radius (at theta = 0 they
    would not)."""
    spreads = []
    for b in (0, 1, 2):
        ev = next(c for c in quick_report.claims if c.name == f"kappa-decay-beta{b}").evaluation
        assert ev.groups is not None
        spreads.append(ev.measured[[g.startswith("agent ") for g in ev.groups]])
    assert not np.allclose(spreads[0], spreads[1]) and not np.allclose(spreads[1], spreads[2])


@pytest.mark.parametrize("beta", [0, 1, 2])
def test_decay_is_nearly_attained_for_every_agent_but_the_last(
    quick_report: Report, beta: int
) -> None:
    """Per agent i < n - 1, the largest D_i(kappa) / bound is at least (1 - c)/(1 + c) with
    c = 0.1 the action reward, whatever theta (proofs_notes/decay.md#tight); the last agent
    keeps its state, so only actions move its spread."""
    claim = next(c for c in quick_report.claims if c.name == f"kappa-decay-beta{beta}")
    ev = claim.evaluation
    assert ev.groups is not None
    agents = sorted({g for g in ev.groups if g.startswith("agent ")},
                    key=lambda g: int(g.split()[1]))
    ratios = []
    for g in agents:
        sel = np.array([h == g for h in ev.groups]) & (ev.bound > 0)
        ratios.append(float(np.max(ev.measured[sel] / ev.bound[sel])))
    assert min(ratios[:-1]) >= 0.9 / 1.1


def test_mappo_gap_sees_a_no_op_step(quick_report: Report) -> None:
    """A step that never moves the uniform policy keeps the gap at (1 - mean r)/(1 - gamma)
    = 3.52 on the climbing game (one state with a self-loop, so J(pi) = E_pi[r]/(1 - gamma),
    reference.instances.climbing); the climbing claim's grid reaches a K with B(K) below it."""
    claim = next(c for c in quick_report.claims if c.name == "mappo-gap")
    game = climbing()
    no_op = (1.0 - float(np.mean(game.r))) / (1.0 - game.gamma)
    ev = claim.evaluation
    frozen_gap = dataclasses.replace(ev, measured=np.full(ev.measured.size, no_op))
    assert judge(frozen_gap).verdict == "fail"


@pytest.mark.parametrize("beta", [1, 2])
def test_decay_claims_see_a_bound_that_ignores_beta(quick_report: Report, beta: int) -> None:
    """The bound with beta 0's escape time t0 = kappa + 1 in place of t0(kappa, beta) is
    gamma^(t0(kappa, 0) - t0(kappa, beta)) times smaller; the copy chain attains
    t0(kappa, beta) (proofs_notes/decay.md#copy-chain), so the claim fails with it."""
    claim = next(c for c in quick_report.claims if c.name == f"kappa-decay-beta{beta}")
    ev = claim.evaluation
    assert ev.x is not None and ev.gamma is not None
    gap = np.array([first_escape_time(int(k), 0) - first_escape_time(int(k), beta)
                    for k in ev.x])
    assert np.any(gap > 0)
    assert judge(dataclasses.replace(ev, bound=ev.bound * ev.gamma**gap)).verdict == "fail"


@pytest.mark.parametrize("beta", [0, 1, 2])
def test_decay_claims_see_another_agents_delta(quick_report: Report, beta: int) -> None:
    """Per agent, not max over agents: the shift chain's agents have distinct Delta_i, so a
    bound built with the next agent's Delta_{i+1} (cyclically) fails."""
    claim = next(c for c in quick_report.claims if c.name == f"kappa-decay-beta{beta}")
    ev = claim.evaluation
    assert ev.groups is not None
    delta = np.array(ev.series["delta"])
    n = delta.size
    factor = np.array([
        delta[(int(g.split()[1]) + 1) % n] / delta[int(g.split()[1])]
        if g.startswith("agent ") else 1.0 for g in ev.groups
    ])
    assert judge(dataclasses.replace(ev, bound=ev.bound * factor)).verdict == "fail"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_decay_defect_fails_at_other_seeds(seed: int) -> None:
    """The late-escape defect fails whatever random theta the root seed draws."""
    names = ("kappa-decay-beta0", "kappa-decay-beta1", "kappa-decay-beta2")
    report = run_report(quick=True, seed=seed, only=names, executor=SerialExecutor())
    assert report.passed, [(c.name, c.ratio, c.power.ratio) for c in report.claims]


def test_a_failing_claim_fails_the_report(monkeypatch: pytest.MonkeyPatch) -> None:
    """A claim whose measurement exceeds its bound (here the MA-PDL with a planted error of
    1e-6 in J(pi') - J(pi)) is a failure and fails the report."""
    original = rep.multi_agent_pdl

    def off(*args: Any) -> Any:
        res = original(*args)
        return dataclasses.replace(res, difference=res.difference + 1e-6)

    monkeypatch.setattr(rep, "multi_agent_pdl", off)
    # serial: the patch lives in this process (a spawned pool would not see it)
    report = run_report(quick=True, only=("ma-pdl",), executor=SerialExecutor())
    assert report.claims[0].verdict == "fail" and not report.passed


def test_a_planted_defect_that_passes_fails_the_report(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A claim that cannot see its own defect is a defect of the report: the report fails
    and the command exits 1."""
    blind = tuple(
        dataclasses.replace(c, plant=lambda ev: ev) if c.name == "mappo-gap-tight" else c
        for c in CLAIMS
    )
    monkeypatch.setattr(rep, "CLAIMS", blind)
    report = run_report(quick=True, only=("mappo-gap-tight",), executor=SerialExecutor())
    (claim,) = report.claims
    assert claim.verdict == "pass" and claim.power.verdict == "pass"
    assert report.claims_pass and not report.defects_fail and not report.passed
    code = main(["report", "--quick", "--only", "mappo-gap-tight", "--out", str(tmp_path),
                 "--executor", "serial", "--no-progress"])
    assert code == 1
    md = (tmp_path / "report.md").read_text()
    assert "planted defects passing: mappo-gap-tight" in md


def test_claims_draw_their_own_seeds() -> None:
    """Each claim's seed is child ``k`` of ``SeedSequence(root)`` for the ``k``-th claim:
    distinct across claims, the same whichever claims run, and recorded with the pieces'
    children (one per dataset of the pessimism-event claim)."""
    seeds = claim_seeds(3)
    assert list(seeds) == claim_names() and len(set(seeds.values())) == len(seeds)
    k = claim_names().index("pessimism-event")
    child = np.random.SeedSequence(3).spawn(len(CLAIMS))[k]
    assert seeds["pessimism-event"] == int(child.generate_state(1)[0])
    alone = run_report(quick=True, seed=3, only=("pessimism-event",), executor=SerialExecutor())
    (claim,) = alone.claims
    assert claim.seed == seeds["pessimism-event"] and alone.seed == 3
    assert claim.children == tuple((claim.seed, (i,)) for i in range(5))
    with pytest.raises(ModelError, match="seed = -1"):
        claim_seeds(-1)
    with pytest.raises(ModelError, match="no such claim"):
        run_report(quick=True, only=("sample-complexity-old",), executor=SerialExecutor())


def test_pessimism_event_sees_a_critic_without_its_bonus(quick_report: Report) -> None:
    """On rare-stall the ridge critic is below J even without a bonus; on the equal arms the
    iterates follow the largest estimate, so dropping the bonus overestimates J and the claim
    fails (proofs_notes/pessimism.md#event)."""
    claim = next(c for c in quick_report.claims if c.name == "pessimism-event")
    assert claim.power.defect.startswith("the bonus dropped")
    assert claim.power.verdict == "fail"
    groups = claim.evaluation.groups
    assert groups is not None and {"rare-stall", "equal-arms"} <= set(groups)


def test_occupancy_claim_sees_an_estimator_biased_by_five_percent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """lamtilde_i multiplied by 1.05 is off by 0.05 ||lam^H_i||_1 = 0.48 in l1, above the
    McDiarmid radius at the largest batch, even in the quick run."""
    original = rep.occupancy_estimate
    monkeypatch.setattr(rep, "occupancy_estimate",
                        lambda *a: tuple(1.05 * e for e in original(*a)))
    # serial: the patch lives in this process (a spawned pool would not see it)
    report = run_report(quick=True, only=("occupancy-estimator",), executor=SerialExecutor())
    assert report.claims[0].verdict == "fail"


def test_pessimism_event_without_the_event_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """If the validity event never held, nothing was checked: the claim measures ``inf`` and
    fails instead of passing vacuously."""
    empty = np.zeros(0)
    never = rep._PessimismRun("rare-stall", empty, empty, empty, empty, 0.0)
    monkeypatch.setattr(rep, "_pessimism_piece", lambda _, rng: (never, never, never))
    report = run_report(quick=True, only=("pessimism-event",), executor=SerialExecutor())
    assert report.claims[0].measured == math.inf and report.claims[0].verdict == "fail"


def test_a_certificate_below_its_attained_value_fails_optimum_routes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Frank-Wolfe's upper end below its own attained value (a negative duality gap, as a
    sign error in the gap gives) is a failing item, not an error of the report."""
    real = rep._frank_wolfe_intervals

    def inverted(quick: bool, power: int) -> list[rep._RouteInterval]:
        return [
            rep._RouteInterval(i.label, i.lower, i.lower - 1e-3) for i in real(quick, power)
        ]

    monkeypatch.setattr(rep, "_frank_wolfe_intervals", inverted)
    report = run_report(quick=True, only=("optimum-routes",), executor=SerialExecutor())
    assert report.claims[0].verdict == "fail"


def test_the_runner_shares_expensive_work_between_a_claim_and_its_defect() -> None:
    calls: list[int] = []

    def measure(ctx: rep.ClaimContext) -> Evaluation:
        value = ctx.shared("toy", lambda: calls.append(1) or 0.5)
        return _ev([value * (4.0 if ctx.planted else 1.0)], [1.0])

    spec = ClaimSpec("toy", "toy <= 1", "derived here", measure, "times 4")
    claim = rep._run_claim(spec, rep.ClaimContext(True, 0, SerialExecutor()))
    assert calls == [1] and claim.ratio == 0.5 and claim.power.ratio == 2.0


# ------------------------------------------------------------------------------ files


def test_files_keep_the_contract(quick_report: Report, tmp_path: Path) -> None:
    files = write_report(quick_report, tmp_path)
    data = json.loads((tmp_path / "report.json").read_text())
    assert {"passed", "quick", "seconds", "seed", "claims"} <= set(data)
    assert data["passed"] is True and data["quick"] is True and data["partial"] is False
    assert [c["name"] for c in data["claims"]] == claim_names()
    keys = {"name", "statement", "instance", "measured", "bound", "verdict", "seed", "ratio",
            "provenance", "power"}
    for c in data["claims"]:
        assert keys <= set(c)
        assert c["verdict"] in ("pass", "fail")
        assert c["provenance"] in ("derived here", "as stated in the paper")
        assert set(c["power"]) == {"defect", "ratio", "verdict"}
        assert c["power"]["verdict"] == "fail"
        ratio = c["ratio"]
        assert isinstance(ratio, float) and ratio <= 1.0
        if c["bound"] > 0:  # the ratio is measured / bound at the worst item
            assert math.isclose(ratio, c["measured"] / c["bound"], rel_tol=1e-12)
    env = data["environment"]
    assert set(env) == {"marl-oracle", "commit", "numpy", "scipy", "python"}
    assert env["numpy"] == np.__version__
    md = (tmp_path / "report.md").read_text()
    assert "| claim | ratio | margin | verdict | power: defect |" in md
    assert all(f"## {name}" in md for name in claim_names())
    assert f"numpy {np.__version__}" in md and "commit" in md
    pytest.importorskip("matplotlib")
    pngs = {f.name for f in files if f.suffix == ".png"}
    assert pngs == {f"{name}.png" for name in claim_names()}
    assert all(f"![{name}]({name}.png)" in md for name in claim_names())


def test_a_partial_report_says_so_and_removes_stale_plots(
    quick_report: Report, tmp_path: Path
) -> None:
    pytest.importorskip("matplotlib")
    write_report(quick_report, tmp_path)
    part = run_report(quick=True, only=("mappo-gap-tight",), executor=SerialExecutor())
    files = write_report(part, tmp_path)
    assert {f.name for f in files if f.suffix == ".png"} == {"mappo-gap-tight.png"}
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["mappo-gap-tight.png"]
    md = (tmp_path / "report.md").read_text()
    assert "**Partial report**: only mappo-gap-tight" in md
    assert json.loads((tmp_path / "report.json").read_text())["partial"] is True


def test_report_json_has_no_nan(tmp_path: Path) -> None:
    ev = _ev([math.nan], [1.0])
    jd = judge(ev)
    claim = rep.Claim("x", "s", "derived here", "i", jd, rep.Power("d", math.inf, "fail"), ev,
                      None, 0.0)
    write_report(Report((claim,), True, 0.0), tmp_path)
    data = json.loads((tmp_path / "report.json").read_text())
    c = data["claims"][0]
    assert c["measured"] == "nan" and c["ratio"] == "inf" and c["power"]["ratio"] == "inf"


def test_exact_zeros_are_marked_not_floored(tmp_path: Path) -> None:
    """A zero on a log axis is a marker on the x axis, not a point at 1e-308: the axis
    spans the positive values only."""
    plt = pytest.importorskip("matplotlib.pyplot")
    from verify.plots import log_series

    fig, ax = plt.subplots()
    log_series(ax, [0, 1, 2], [1.0, 1e-3, 0.0], "o-", "spread")
    fig.canvas.draw()
    low, _ = ax.get_ylim()
    assert 1e-6 < low < 1e-3
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["spread", "spread = 0 (exact)"]
    plt.close(fig)
