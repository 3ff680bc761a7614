"""Kill rate of the planted bugs of ``reference/``, per module.

What is measured
----------------
The catalogue ``tests/mutants/reference_mutants.py`` lists realistic bugs planted in
``reference/`` (a fragment of one function's source replaced; the function recompiled and
rebound in place, nothing written to disk), each with the tests that must kill it, and the
edits argued to be equivalent.

* ``--tier`` (default): each mutant against its named killing tests, in this process,
  as ``tests/mutants/test_reference_mutants.py`` does in CI.  A mutant counts as killed when
  a killer fails with an assertion (or an error of the ``reference.errors`` family); any
  other exception is reported as a machinery error.
* ``--suite PATH...``: each mutant against a whole test selection, one ``pytest -x``
  subprocess per mutant with the mutant planted for the session
  (``tests/mutants/reference_mutant_plugin.py``) and ``HYPOTHESIS_PROFILE=ci`` (without
  shrinking); killed when pytest reports failures (exit status 1), survived on status 0.
  ``--exclude`` drops test files from the selection; ``--relevant ROOT`` runs, per mutant,
  only the test modules of ``ROOT`` (a checkout, e.g. an older commit's) that exercise the
  mutated part of ``reference/`` (``RELEVANT``) plus the proofs notes' doctests.

The table gives, per module of ``reference/``: mutants planted (non-equivalent), killed,
survived, machinery errors, equivalent mutants (not planted) and the kill rate
``killed / planted``; ``--json`` prints the per-mutant rows instead.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "mutants"), str(ROOT / "tests")]

import reference_mutants as rm  # noqa: E402


def tier_rows(names: set[str] | None) -> list[dict[str, object]]:
    rows = []
    for m in rm.MUTANTS:
        if names and m.name not in names:
            continue
        start = time.perf_counter()
        results = rm.run_killers(m)
        outcomes = {o for _, o, _ in results}
        outcome = "killed" if "killed" in outcomes else (
            "error" if "error" in outcomes else "survived")
        rows.append({"name": m.name, "module": m.module, "kind": m.kind, "outcome": outcome,
                     "seconds": round(time.perf_counter() - start, 3),
                     "killers": [k for k, o, _ in results if o == "killed"]})
    return rows


RELEVANT = {
    "reference.tabular": ["tests/test_tabular.py", "tests/test_symbolic.py",
                          "tests/test_cooperative.py", "tests/mutants/test_planted_tabular.py"],
    "reference.networked": ["tests/test_networked_exact.py", "tests/test_matrix_free.py",
                            "tests/test_truncation.py", "tests/test_algorithm1.py",
                            "tests/test_utilities.py", "tests/test_sampling.py",
                            "tests/test_joint_space.py", "tests/test_symbolic.py",
                            "tests/mutants/test_planted_matrix_free.py",
                            "tests/mutants/test_planted_networked.py"],
    "reference.cooperative": ["tests/test_cooperative.py", "tests/test_mappo.py",
                              "tests/test_pessimism.py", "tests/test_experiments_pessimism.py",
                              "tests/test_offline_dataset.py",
                              "tests/mutants/test_planted_cooperative.py"],
}
"""``--relevant``: the test modules of the suite that exercise each part of ``reference/``
(plus every proofs note's doctests)."""


def _relevant(module: str, root: Path, extra: list[str]) -> list[str]:
    for prefix, files in RELEVANT.items():
        if module.startswith(prefix):
            return [*extra, *(str(root / f) for f in files if (root / f).exists()),
                    str(root / "proofs_notes")]
    raise KeyError(module)


def suite_rows(paths: list[str], exclude: list[str], names: set[str] | None,
               timeout: float, relevant_root: Path | None = None) -> list[dict[str, object]]:
    env = dict(os.environ)
    env["HYPOTHESIS_PROFILE"] = "ci"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "tests" / "mutants"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    base = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
            "-p", "reference_mutant_plugin"]
    for e in exclude:
        base += ["--ignore", e]
    rows = []
    for m in rm.MUTANTS:
        if names and m.name not in names:
            continue
        selection = paths if relevant_root is None else _relevant(m.module, relevant_root, paths)
        args = [*base, *selection]
        env["MARL_REFERENCE_MUTANT"] = m.name
        start = time.perf_counter()
        try:
            proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=timeout, check=False)
            code = proc.returncode
            tail = proc.stdout.strip().splitlines()[-1:] if proc.stdout else []
        except subprocess.TimeoutExpired:
            code, tail = -1, ["timeout"]
        outcome = {0: "survived", 1: "killed"}.get(code, "error")
        rows.append({"name": m.name, "module": m.module, "kind": m.kind, "outcome": outcome,
                     "seconds": round(time.perf_counter() - start, 1),
                     "summary": tail[0] if tail else ""})
        print(f"{m.name:48s} {outcome:9s} {rows[-1]['seconds']:>7}s  {rows[-1]['summary']}",
              file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict[str, object]]) -> str:
    per: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        per[str(r["module"])][str(r["outcome"])] += 1
    for m, _ in rm.EQUIVALENT:
        per[m.module]["equivalent"] += 1
    lines = [f"{'module':34s} {'planted':>7s} {'killed':>6s} {'surv.':>5s} {'error':>5s} "
             f"{'equiv.':>6s} {'kill rate':>9s}"]
    total = defaultdict(int)
    for module in sorted(per):
        c = per[module]
        planted = c["killed"] + c["survived"] + c["error"]
        for k in ("killed", "survived", "error", "equivalent"):
            total[k] += c[k]
        rate = f"{c['killed'] / planted:.0%}" if planted else "-"
        lines.append(f"{module:34s} {planted:7d} {c['killed']:6d} {c['survived']:5d} "
                     f"{c['error']:5d} {c['equivalent']:6d} {rate:>9s}")
    planted = total["killed"] + total["survived"] + total["error"]
    rate = f"{total['killed'] / planted:.0%}" if planted else "-"
    lines.append(f"{'all':34s} {planted:7d} {total['killed']:6d} {total['survived']:5d} "
                 f"{total['error']:5d} {total['equivalent']:6d} {rate:>9s}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", nargs="*", metavar="PATH",
                        help="run each mutant against this test selection instead of its killers")
    parser.add_argument("--exclude", nargs="*", default=[], metavar="PATH")
    parser.add_argument("--relevant", metavar="ROOT",
                        help="with --suite: per mutant, only the test modules of RELEVANT under "
                        "ROOT (a checkout), plus the PATHs given to --suite")
    parser.add_argument("--only", nargs="*", metavar="NAME", help="mutants to run")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    names = set(args.only) if args.only else None
    if args.suite is not None:
        if args.relevant:
            rows = suite_rows(args.suite, args.exclude, names, args.timeout,
                              Path(args.relevant))
        else:
            rows = suite_rows(args.suite or ["tests"], args.exclude, names, args.timeout)
    else:
        rows = tier_rows(names)
    if args.json:
        print(json.dumps({"rows": rows, "equivalent": [
            {"name": m.name, "module": m.module, "argument": why} for m, why in rm.EQUIVALENT]},
            indent=1))
    else:
        print(table(rows))
        for r in rows:
            if r["outcome"] != "killed":
                print(f"{r['outcome']}: {r['name']} ({r['module']})")
    return 0 if all(r["outcome"] == "killed" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
