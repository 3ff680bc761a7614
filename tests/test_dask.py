"""A Dask cluster as an executor (verify/executors.py): a ``LocalCluster``'s
``client.get_executor()`` and ``marl-oracle report --executor dask://HOST:PORT`` give the
numbers of a serial run, and shutting a ``dask://`` executor down closes its client.

``distributed`` is part of the ``test`` extra, so these tests run (never skip) in CI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import distributed
import numpy as np
import pytest

from reference.instances import climbing
from verify.cli import main
from verify.executors import SerialExecutor, executor_from_url, map_seeded
from verify.experiments import mappo_gap_sweep
from verify.report import _occupancy_piece, _pdl_piece, _PdlTask


@pytest.fixture(scope="module")
def cluster() -> Iterator[distributed.LocalCluster]:
    """Two single-threaded worker processes; the pieces are pickled to them and back."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as c:
        yield c


def test_client_executor_gives_the_serial_numbers(cluster: distributed.LocalCluster) -> None:
    tasks = [200, 50, 400, 100]
    with distributed.Client(cluster) as client:
        ex = client.get_executor()
        got = map_seeded(_occupancy_piece, tasks, executor=ex, seed=9)
        pdl = map_seeded(_pdl_piece, [_PdlTask(2, False)] * 2, executor=ex, seed=1)
        gap = mappo_gap_sweep(climbing(), [2, 8], executor=ex)
    want = map_seeded(_occupancy_piece, tasks, executor=SerialExecutor(), seed=9)
    assert got.children == want.children
    for a, b in zip(got.results, want.results, strict=True):
        for u, v in zip(a, b, strict=True):
            np.testing.assert_array_equal(u, v)
    serial = map_seeded(_pdl_piece, [_PdlTask(2, False)] * 2, executor=SerialExecutor(), seed=1)
    assert pdl.results == serial.results
    np.testing.assert_array_equal(
        gap.average_gap, mappo_gap_sweep(climbing(), [2, 8], executor=SerialExecutor()).average_gap
    )


def test_url_executor_closes_its_client(cluster: distributed.LocalCluster) -> None:
    address = cluster.scheduler_address.removeprefix("tcp://")
    ex = executor_from_url(f"dask://{address}")
    with ex:
        assert map_seeded(_pdl_piece, [_PdlTask(1, False)], executor=ex, seed=2).results
    assert ex.client.status == "closed"  # type: ignore[attr-defined]


def test_report_on_a_running_scheduler(
    cluster: distributed.LocalCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``marl-oracle report --executor dask://HOST:PORT`` measures what ``--executor serial``
    measures, children included."""
    address = cluster.scheduler_address.removeprefix("tcp://")
    outputs = []
    for url in (f"dask://{address}", "serial"):
        out = tmp_path / url.replace("/", "_").replace(":", "_")
        argv = ["report", "--quick", "--only", "ma-pdl", "--only", "occupancy-estimator",
                "--no-progress", "--json", "--out", str(out), "--executor", url]
        assert main(argv) == 0
        capsys.readouterr()
        outputs.append(json.loads((out / "report.json").read_text()))
    dask_run, serial_run = outputs
    keys = ("name", "measured", "bound", "ratio", "seed", "children", "power")
    assert [tuple(str(c[k]) for k in keys) for c in dask_run["claims"]] == [
        tuple(str(c[k]) for k in keys) for c in serial_run["claims"]
    ]
