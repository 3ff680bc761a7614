"""What a new user hits first: bad output paths, bad generators, unreadable files, huge
instances and undocumented defaults each get a typed error naming the argument (or the
documented behaviour), before any work is done; every file written honours the umask."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reference._io import check_output_dir, current_umask
from reference.cooperative.offline import OfflineDataset, sample_dataset
from reference.cooperative.policy import ConditionalPolicy
from reference.errors import DatasetError, MemoryLimitError, ModelError, OutputError
from reference.instances import climbing as climbing_game
from reference.instances import line_message
from reference.memory import format_bytes
from reference.networked import LocalizedSoftmaxPolicy
from verify import cli
from verify.files import (
    Estimate,
    FileFormatError,
    exact_quantity,
    load_instance,
    save_estimate,
    save_game,
    save_game_policy,
    save_networked,
    save_theta,
)


def _refuse(*_: Any, **__: Any) -> Any:
    raise AssertionError("the computation ran before the argument was checked")


# (argv, the function that must not run before the check, substrings of the error)
CLI_ERRORS: list[tuple[str, list[str], str | None, tuple[str, ...]]] = [
    ("plot-missing-dir", ["decay", "--agents", "3", "--plot", "{missing}/f.png"],
     "verify.experiments.kappa_decay_sweep", ("--plot", "does not exist")),
    ("plot-unknown-format", ["decay", "--agents", "3", "--plot", "{tmp}/f.txt"],
     "verify.experiments.kappa_decay_sweep", ("--plot", "cannot write 'txt'", "png")),
    ("plot-is-directory", ["decay", "--agents", "3", "--plot", "{tmp}"],
     "verify.experiments.kappa_decay_sweep", ("--plot", "is a directory")),
    ("gap-plot-missing-dir", ["mappo-gap", "--game", "climbing", "--K", "4", "--plot",
                              "{missing}/g.png", "--executor", "serial"],
     "verify.experiments.mappo_gap_sweep", ("--plot", "does not exist")),
    ("report-out-uncreatable", ["report", "--out", "/proc/forbidden", "--no-progress"],
     "verify.report.run_report", ("--out", "/proc/forbidden", "cannot create")),
    ("report-out-is-file", ["report", "--out", "{tmp}/afile", "--no-progress"],
     "verify.report.run_report", ("--out", "not a directory")),
    ("instance-out-missing-dir", ["instance", "save", "--instance", "line-message", "--agents",
                                  "3", "--out", "{missing}/x.npz"],
     "verify.files.save_networked", ("--out", "does not exist")),
    ("theta-out-missing-dir", ["instance", "save", "--instance", "line-message", "--agents",
                               "3", "--out", "{tmp}/x.npz", "--theta-out", "{missing}/t.npz"],
     "verify.files.save_networked", ("--theta-out", "does not exist")),
    ("agents-40-memory", ["decay", "--agents", "40"], None, ("YiB", "TiB", "memory limit")),
    ("random-bytes-file", ["check", "gradient", "--instance", "{tmp}/random.npz",
                           "--estimate", "{tmp}/random.npz"],
     None, ("random.npz", "not an .npz archive")),
    ("npy-not-npz", ["check", "gradient", "--instance", "{tmp}/single.npy",
                     "--estimate", "{tmp}/single.npy"], None, ("single .npy array",)),
]


@pytest.mark.parametrize(
    ("argv", "guard", "needles"),
    [pytest.param(a, g, n, id=name) for name, a, g, n in CLI_ERRORS],
)
def test_cli_refuses_with_the_argument_named(
    argv: list[str], guard: str | None, needles: tuple[str, ...], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "afile").write_text("x")
    (tmp_path / "random.npz").write_bytes(np.random.default_rng(0).bytes(300))
    np.save(tmp_path / "single.npy", np.zeros(3))
    if guard is not None:
        module, name = guard.rsplit(".", 1)
        monkeypatch.setattr(module + "." + name, _refuse)
    args = [a.format(tmp=tmp_path, missing=tmp_path / "no" / "such") for a in argv]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("marl-oracle: error: ")
    assert "Traceback" not in err and ".marl-oracle-" not in err
    for needle in needles:
        assert needle in err, (needle, err)


def test_huge_prediction_prints_in_binary_units() -> None:
    """(2^40)^2 entries of the dense kernel: 16 bytes * 2^80 = 16 YiB, not a 20-digit MiB
    count; every unit boundary is exact.  The dense backend's prediction for 40 agents is
    the kernel, its LU factors and the suffix products of its Kronecker build
    (``dense_memory``): about 3 * 8 bytes * 2^80 = 24 YiB."""
    assert format_bytes(2 * 8 * 2**80) == "16 YiB"
    assert format_bytes(1023) == "1023 bytes"
    assert format_bytes(1024) == "1 KiB"
    assert format_bytes(3 * 2**30) == "3 GiB"
    assert format_bytes(2**100) == "1.049e+06 YiB"
    with pytest.raises(MemoryLimitError, match="needs about 24 YiB;"):
        from reference.networked import transition_operator

        inst = line_message(40, 0.9)
        transition_operator(inst.model, LocalizedSoftmaxPolicy.uniform(inst.model, 0))


API_ERRORS: list[tuple[str, Callable[[], Any], type[ModelError], tuple[str, ...]]] = [
    ("sample_dataset-int-seed",
     lambda: sample_dataset(climbing_game(0.9), 10, 0),  # type: ignore[arg-type]
     DatasetError, ("rng = 0", "default_rng(0)")),
    ("sample_dataset-none",
     lambda: sample_dataset(climbing_game(0.9), 10, None),  # type: ignore[arg-type]
     DatasetError, ("rng = None", "Generator")),
    ("random_game-int-seed",
     lambda: __import__("reference.cooperative.game", fromlist=["random_game"]).random_game(
         3, 2, (2, 2), 0.9), ModelError, ("rng = 3",)),
    ("save-missing-dir",
     lambda: save_game("/nonexistent-marl-oracle/dir/x.npz", climbing_game(0.9)),
     OutputError, ("path", "/nonexistent-marl-oracle/dir", "does not exist")),
]


@pytest.mark.parametrize(
    ("call", "error", "needles"), [pytest.param(c, e, n, id=name) for name, c, e, n in API_ERRORS]
)
def test_api_refuses_with_the_argument_named(
    call: Callable[[], Any], error: type[ModelError], needles: tuple[str, ...]
) -> None:
    with pytest.raises(error) as info:
        call()
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_random_bytes_are_not_called_pickled(tmp_path: Path) -> None:
    path = tmp_path / "noise.npz"
    path.write_bytes(np.random.default_rng(1).bytes(64))
    for load, error in ((load_instance, FileFormatError), (OfflineDataset.load, DatasetError)):
        with pytest.raises(error, match=r"not an \.npz archive") as info:
            load(path)
        assert "pickle" not in str(info.value)


def test_check_localized_q_without_theta_says_uniform(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Documented behaviour: the uniform policy, and the output says so (an estimate made
    at the uniform policy passes; the JSON names the policy)."""
    game = climbing_game(0.9)
    save_game(tmp_path / "g.npz", game)
    exact = exact_quantity("localized-q", game, ConditionalPolicy.uniform(game))
    save_estimate(tmp_path / "e.npz", Estimate("localized-q", exact.arrays))
    argv = ["check", "localized-q", "--instance", str(tmp_path / "g.npz"),
            "--estimate", str(tmp_path / "e.npz")]
    assert cli.main(argv) == 0
    assert "at the policy uniform (no --theta given): PASS" in capsys.readouterr().out
    assert cli.main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["policy"] == "uniform (no --theta given)"
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["check"].format_help()  # type: ignore[union-attr]
    assert "default uniform" in help_text


@pytest.mark.parametrize(("command", "option", "names"), [
    ("report", "--only", lambda: __import__("verify.report", fromlist=["claim_names"]).claim_names()),
    ("mutants", "--area", lambda: sorted(__import__("verify.checks.planted", fromlist=["AREAS"]).AREAS)),
])
def test_help_lists_the_choices(
    command: str, option: str, names: Callable[[], list[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    section = text[text.index(option + " "):]
    for name in names():
        assert name in section.replace("- ", "-"), name


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _writers(tmp: Path) -> list[tuple[str, Callable[[], Any], Path]]:
    inst = line_message(3, 0.9)
    game = climbing_game(0.9)
    return [
        ("networked", lambda: save_networked(tmp / "n.npz", inst), tmp / "n.npz"),
        ("game", lambda: save_game(tmp / "g.npz", game), tmp / "g.npz"),
        ("theta", lambda: save_theta(tmp / "t.npz",
                                     LocalizedSoftmaxPolicy.uniform(inst.model, 0)),
         tmp / "t.npz"),
        ("game-policy", lambda: save_game_policy(tmp / "p.npz", ConditionalPolicy.uniform(game)),
         tmp / "p.npz"),
        ("estimate", lambda: save_estimate(tmp / "e.npz",
                                           Estimate("gradient", (np.zeros((2, 2)),))),
         tmp / "e.npz"),
        ("dataset", lambda: sample_dataset(game, 5, np.random.default_rng(0)).save(tmp / "d.npz"),
         tmp / "d.npz"),
        ("cli-decay-plot", lambda: cli.main(["decay", "--agents", "3", "--plot",
                                             str(tmp / "plot.png")]), tmp / "plot.png"),
        ("report-dir", lambda: check_output_dir(tmp / "report", "--out"), tmp / "report"),
    ]


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
@pytest.mark.parametrize("which", range(8))
def test_files_honour_the_umask(mask: int, which: int, tmp_path: Path) -> None:
    name, write, path = _writers(tmp_path)[which]
    with _umask(mask):
        assert current_umask() == mask
        write()
    mode = stat.S_IMODE(path.stat().st_mode)
    expected = (0o777 if path.is_dir() else 0o666) & ~mask
    assert mode == expected, (name, oct(mode), oct(expected))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".marl-oracle-")]
