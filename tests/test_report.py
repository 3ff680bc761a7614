"""The theorem report (verify/report.py): claims, verdicts, files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import verify.report as rep
from reference.errors import ModelError
from verify.executors import SerialExecutor
from verify.report import Claim, Report, claim_seeds, run_report, write_report

FAST = ("gradient-routes", "ma-pdl", "kappa-decay-beta0", "sample-complexity", "mappo-gap")


def test_quick_claims_pass_and_are_written(tmp_path: Path) -> None:
    calls: list[tuple[int, int, str]] = []
    report = run_report(quick=True, only=FAST, progress=lambda k, n, s: calls.append((k, n, s)))
    assert [c.name for c in report.claims] == list(FAST)
    assert report.passed, [c for c in report.claims if c.verdict == "fail"]
    assert calls[0] == (0, len(FAST), FAST[0]) and calls[-1] == (len(FAST), len(FAST), "done")
    for c in report.claims:
        if c.verdict == "reported":
            assert math.isnan(c.bound)
        else:
            assert c.verdict == "pass" and c.measured <= c.bound
    files = write_report(report, tmp_path / "report")
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert data["passed"] is True and len(data["claims"]) == len(FAST)
    keys = {"name", "statement", "instance", "measured", "bound", "verdict", "seed"}
    assert all(keys <= set(c) for c in data["claims"])
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| claim | measured | bound | verdict | seconds |" in md
    assert all(f"## {name}" in md for name in FAST)
    pytest.importorskip("matplotlib")
    pngs = [f for f in files if f.suffix == ".png"]
    assert {p.name for p in pngs} == {"kappa-decay-beta0.png", "mappo-gap.png"}
    assert all(p.stat().st_size > 1000 for p in pngs)


def test_a_failing_claim_fails_the_report(monkeypatch: pytest.MonkeyPatch) -> None:
    """A claim whose measurement exceeds its bound (here the MA-PDL with a planted error of
    1e-6 in J(pi') - J(pi)) is a failure and fails the report."""
    original = rep.multi_agent_pdl

    def off(*args: Any) -> Any:
        import dataclasses

        res = original(*args)
        return dataclasses.replace(res, difference=res.difference + 1e-6)

    monkeypatch.setattr(rep, "multi_agent_pdl", off)
    # serial: the patch lives in this process (a spawned pool would not see it)
    report = run_report(quick=True, only=("ma-pdl",), executor=SerialExecutor())
    assert report.claims[0].verdict == "fail" and not report.passed


def test_report_json_has_no_nan(tmp_path: Path) -> None:
    claim = Claim("x", "s", "i", math.nan, math.inf, "reported", None, 0.0)
    write_report(Report((claim,), True, 0.0), tmp_path)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["claims"][0]["measured"] == "nan" and data["claims"][0]["bound"] == "inf"


def test_claims_draw_their_own_seeds() -> None:
    """Each claim's seed is child ``k`` of ``SeedSequence(root)`` for the ``k``-th claim:
    distinct across claims, the same whichever claims run, and recorded with the pieces'
    children (one per dataset of the pessimism-bound claim)."""
    seeds = claim_seeds(3)
    assert set(seeds) == {n for n, _ in rep.CLAIMS} and len(set(seeds.values())) == len(seeds)
    k = [n for n, _ in rep.CLAIMS].index("pessimism-bound")
    child = np.random.SeedSequence(3).spawn(len(rep.CLAIMS))[k]
    assert seeds["pessimism-bound"] == int(child.generate_state(1)[0])
    alone = run_report(quick=True, seed=3, only=("pessimism-bound",), executor=SerialExecutor())
    (claim,) = alone.claims
    assert claim.seed == seeds["pessimism-bound"] and alone.seed == 3
    assert claim.children == tuple((claim.seed, (i,)) for i in range(5))
    with pytest.raises(ModelError, match="seed = -1"):
        claim_seeds(-1)


def test_pessimism_event_without_the_event_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """If the validity event never held, nothing was checked: the claim measures ``inf`` and
    fails instead of passing vacuously."""
    never = rep._PessimismRun(False, 0.0, 1.0, -math.inf, 0.0)
    monkeypatch.setattr(rep, "_pessimism_piece", lambda _, rng: never)
    report = run_report(quick=True, only=("pessimism-event",), executor=SerialExecutor())
    assert report.claims[0].measured == math.inf and report.claims[0].verdict == "fail"
