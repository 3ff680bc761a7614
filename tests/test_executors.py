"""Seeded sweeps on any executor (verify/executors.py): the numbers depend on the root seed
and the task list only, never on the executor, its worker count or the order in which the
pieces finish; every piece replays from its recorded ``SeedSequence`` child; a failure stops
the sweep.  The Dask executor is tested in tests/test_dask.py."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

import verify.executors as executors
from reference.errors import ModelError
from reference.instances import climbing, line_message, rare_stall
from reference.networked.policy import LocalizedSoftmaxPolicy
from verify.executors import SeededResults, SerialExecutor, executor_from_url, map_seeded
from verify.experiments import (
    ComplexityConfig,
    mappo_gap_sweep,
    pessimism_sweep,
    sample_complexity_study,
)
from verify.report import _occupancy_piece, run_report


def _draws(size: int, rng: np.random.Generator) -> np.ndarray[Any, np.dtype[np.float64]]:
    return rng.standard_normal(size)


def _sweep_in_worker(seed: int) -> SeededResults[Any]:
    """``map_seeded`` with the default executor, called inside a pool worker."""
    return map_seeded(_draws, [2, 3, 4], seed=seed)


def _same(a: SeededResults[Any], b: SeededResults[Any]) -> None:
    assert a.seed == b.seed and a.children == b.children
    assert len(a.results) == len(b.results)
    for x, y in zip(a.results, b.results, strict=True):
        if isinstance(x, tuple):
            for u, v in zip(x, y, strict=True):
                np.testing.assert_array_equal(u, v)
        else:
            np.testing.assert_array_equal(x, y)


EXECUTORS: dict[str, Callable[[], Executor]] = {
    "serial": SerialExecutor,
    "threads": lambda: ThreadPoolExecutor(max_workers=2),
    "processes": lambda: ProcessPoolExecutor(max_workers=2),
}


@pytest.mark.parametrize("kind", sorted(EXECUTORS))
def test_results_do_not_depend_on_the_executor(kind: str) -> None:
    """Occupancy estimates from seeded rollouts (``verify.report``'s pieces) are bitwise the
    same on every executor as on the serial reference route and on the default pool."""
    tasks = [200, 50, 400, 100, 300]
    reference = map_seeded(_occupancy_piece, tasks, executor=SerialExecutor(), seed=7)
    with EXECUTORS[kind]() as ex:
        _same(map_seeded(_occupancy_piece, tasks, executor=ex, seed=7), reference)
    _same(map_seeded(_occupancy_piece, tasks, seed=7, max_workers=2), reference)


def test_children_are_spawned_recorded_and_replay() -> None:
    """Task ``i`` gets ``SeedSequence(seed).spawn(n)[i]``; the record rebuilds it, and
    ``fn(task, results.rng(i))`` replays ``results[i]`` on its own."""
    tasks = [3, 3, 5, 0]
    res = map_seeded(_draws, tasks, executor=SerialExecutor(), seed=11)
    spawned = np.random.SeedSequence(11).spawn(len(tasks))
    assert res.seed == 11
    assert res.children == tuple((11, tuple(c.spawn_key)) for c in spawned)
    assert res.children == tuple((11, (i,)) for i in range(len(tasks)))
    for i, (task, child) in enumerate(zip(tasks, spawned, strict=True)):
        np.testing.assert_array_equal(res.results[i], _draws(task, np.random.default_rng(child)))
        np.testing.assert_array_equal(res.results[i], _draws(task, res.rng(i)))
        assert res.child(i).spawn_key == child.spawn_key
    # equal tasks get different streams, and another root seed changes every stream
    assert not np.array_equal(res.results[0], res.results[1])
    other = map_seeded(_draws, tasks, executor=SerialExecutor(), seed=12)
    assert not any(np.array_equal(a, b) for a, b in zip(res.results[:3], other.results[:3], strict=True))


def test_no_tasks() -> None:
    res = map_seeded(_draws, [], seed=0)
    assert res.results == () and res.children == ()


def _fail_on_odd(task: int, rng: np.random.Generator) -> int:
    if task % 2:
        raise ValueError(f"task {task} is odd")
    return task


@pytest.mark.parametrize("kind", ["serial", "threads"])
def test_the_first_failure_in_task_order_propagates(kind: str) -> None:
    with EXECUTORS[kind]() as ex, pytest.raises(ValueError, match="task 3 is odd"):
        map_seeded(_fail_on_odd, [0, 2, 3, 4, 5], executor=ex, seed=0)


def test_a_failure_stops_a_serial_sweep() -> None:
    """After the first failing piece a serial sweep submits nothing more, and Ctrl-C
    (``KeyboardInterrupt``) leaves at once instead of becoming the piece's result."""
    ran: list[int] = []

    def record(task: int, rng: np.random.Generator) -> int:
        ran.append(task)
        if task == 2:
            raise ValueError("stop")
        if task == 5:
            raise KeyboardInterrupt
        return task

    with pytest.raises(ValueError, match="stop"):
        map_seeded(record, [0, 1, 2, 3, 4], executor=SerialExecutor(), seed=0)
    assert ran == [0, 1, 2]
    ran.clear()
    with pytest.raises(KeyboardInterrupt):
        map_seeded(record, [5, 6, 7], executor=SerialExecutor(), seed=0)
    assert ran == [5]


def test_default_pool_inside_a_daemonic_worker_runs_in_place() -> None:
    """A ``multiprocessing.Pool`` worker is daemonic and may not start children; there the
    default executor runs the pieces in the worker, with the same numbers."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        inside = pool.apply(_sweep_in_worker, (13,))
    _same(inside, map_seeded(_draws, [2, 3, 4], executor=SerialExecutor(), seed=13))


def test_serial_executor_refuses_work_after_shutdown() -> None:
    ex = SerialExecutor()
    assert ex.submit(sum, [1, 2]).result() == 3
    ex.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(sum, [1, 2])


def test_executor_is_used_not_shut_down() -> None:
    with ThreadPoolExecutor(max_workers=1) as ex:
        map_seeded(_draws, [1], executor=ex, seed=0)
        assert ex.submit(threading.get_ident).result() > 0


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"seed": -1}, "seed = -1"),
        ({"seed": True}, "seed = True"),
        ({"seed": 1.5}, "seed = 1.5"),
        ({"seed": 0, "max_workers": 0}, "max_workers = 0"),
        ({"seed": 0, "max_workers": 2, "executor": SerialExecutor()}, "sizes the default"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ModelError, match=fragment.replace(".", r"\.")):
        map_seeded(_draws, [1], **kwargs)


def test_executor_from_url() -> None:
    for url, kind in ((None, ProcessPoolExecutor), ("local", ProcessPoolExecutor),
                      ("threads", ThreadPoolExecutor), ("serial", SerialExecutor)):
        with executor_from_url(url) as ex:
            assert isinstance(ex, kind)
    for bad in ("spark://host:1", "dask://", "dask://host", "dask://host:port", ""):
        with pytest.raises(ModelError, match="expected"):
            executor_from_url(bad)


def test_unreachable_scheduler_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(executors, "DASK_CONNECT_TIMEOUT", 0.5)
    with pytest.raises(ModelError, match=r"no Dask scheduler answered at 127\.0\.0\.1:1"):
        executor_from_url("dask://127.0.0.1:1")


def test_sweeps_do_not_depend_on_the_executor() -> None:
    """The three sweeps built on ``map_seeded`` give identical records on a serial executor
    and on a process pool."""
    with ProcessPoolExecutor(max_workers=2) as pool:
        runs = [
            sample_complexity_study([ComplexityConfig(3, 0)], [0.6, 0.4], 2, seed=3,
                                    max_iterations=40, executor=ex)[0]
            for ex in (SerialExecutor(), pool)
        ]
        gaps = [mappo_gap_sweep(climbing(), [2, 8], executor=ex) for ex in (SerialExecutor(), pool)]
        pess = [
            pessimism_sweep(rare_stall(), coverage=0.15, n_samples=2000, scales=[0.0, 0.5],
                            seeds=3, K=4, beta=0.1, seed=5, executor=ex)
            for ex in (SerialExecutor(), pool)
        ]
    np.testing.assert_array_equal(runs[0].samples, runs[1].samples)
    assert runs[0].children == runs[1].children and len(runs[0].children) == 4
    assert runs[0].samples.shape == (2, 2)
    np.testing.assert_array_equal(gaps[0].average_gap, gaps[1].average_gap)
    np.testing.assert_array_equal(pess[0].J, pess[1].J)
    np.testing.assert_array_equal(pess[0].event, pess[1].event)
    assert pess[0].children == pess[1].children


def test_report_does_not_depend_on_the_executor() -> None:
    only = ("ma-pdl", "occupancy-estimator")
    serial = run_report(quick=True, seed=4, only=only, executor=SerialExecutor())
    pooled = run_report(quick=True, seed=4, only=only)
    for a, b in zip(serial.claims, pooled.claims, strict=True):
        assert (a.name, a.measured, a.bound, a.verdict) == (b.name, b.measured, b.bound, b.verdict)
        assert a.children == b.children and a.children
        assert a.series == b.series and a.power == b.power
        np.testing.assert_array_equal(a.evaluation.measured, b.evaluation.measured)


def _arrays(obj: Any) -> list[np.ndarray[Any, Any]]:
    out: list[np.ndarray[Any, Any]] = []
    for value in vars(obj).values():
        items = value if isinstance(value, tuple) else (value,)
        out += [v for v in items if isinstance(v, np.ndarray)]
    return out


def _write_into_P(game: Any, rng: np.random.Generator) -> str:
    try:
        game.P[(0,) * game.P.ndim] = 0.5
    except ValueError as exc:
        return str(exc)
    return "written"


def test_instances_stay_read_only_through_pickling() -> None:
    """A record's arrays are read-only (STYLE item 2) also after the pickling that sends it
    to a pool or Dask worker, so a piece that writes into one fails on every executor."""
    import pickle

    from reference.cooperative.offline import sample_dataset
    from reference.cooperative.policy import ConditionalPolicy

    inst = line_message(3)
    game = rare_stall()
    records = [
        inst.model,
        LocalizedSoftmaxPolicy.uniform(inst.model, 1),
        *inst.utilities("linear"),
        game,
        ConditionalPolicy.uniform(game),
        sample_dataset(game, 50, np.random.default_rng(0), coverage=1.0),
        game.tabular,
    ]
    for record in records:
        before = _arrays(record)
        assert before and not any(a.flags.writeable for a in before), type(record)
        after = _arrays(pickle.loads(pickle.dumps(record)))
        assert len(after) == len(before) and not any(a.flags.writeable for a in after)
    serial = map_seeded(_write_into_P, [game], executor=SerialExecutor(), seed=0)
    with ProcessPoolExecutor(max_workers=1) as pool:
        pooled = map_seeded(_write_into_P, [game], executor=pool, seed=0)
    assert serial.results == pooled.results and "read-only" in serial.results[0]
