"""Seeded sweeps on any :class:`concurrent.futures.Executor` (STYLE 11).

:func:`map_seeded` runs ``fn(task, rng)`` for every task of a sweep, the ``i``-th task with
``rng = np.random.default_rng(children[i])`` where

    children = np.random.SeedSequence(seed).spawn(len(tasks)),

and returns the results in task order with the root seed and each child's
``(entropy, spawn_key)``, so that any single task replays on its own.  A task's numbers
depend only on ``(fn, task, seed, i)``, never on which executor ran it, in which order, or
on how many workers it had: a local process pool (the default), a thread pool, a
:class:`SerialExecutor`, or a Dask cluster (``distributed.Client(...).get_executor()``) give
identical results.

:func:`executor_from_url` builds an executor from a short description (``"local"``,
``"threads"``, ``"serial"``, ``"dask://HOST:PORT"``).

Note: a process pool and Dask pickle ``fn`` and the tasks, so ``fn`` must be a module-level
function and the tasks picklable (frozen dataclasses of arrays are).
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar

import numpy as np

from reference.errors import ModelError

__all__ = [
    "DASK_CONNECT_TIMEOUT",
    "SeededResults",
    "SerialExecutor",
    "executor_from_url",
    "map_seeded",
]

DASK_CONNECT_TIMEOUT = 10.0
"""Seconds :func:`executor_from_url` waits for a ``dask://`` scheduler to answer."""

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")


@dataclass(frozen=True)
class SeededResults(Generic[R]):
    """Result of :func:`map_seeded`.

    Attributes:
        results: ``fn(tasks[i], rng_i)`` in task order.
        seed: the root of ``SeedSequence(seed).spawn(len(tasks))``.
        children: per task, the child ``SeedSequence``'s ``(entropy, spawn_key)``;
            ``np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=key))`` is the
            generator that task received (:meth:`rng`).
    """

    results: tuple[R, ...]
    seed: int
    children: tuple[tuple[int, tuple[int, ...]], ...]

    def child(self, i: int) -> np.random.SeedSequence:
        """The ``SeedSequence`` of task ``i``, rebuilt from its record."""
        entropy, key = self.children[i]
        return np.random.SeedSequence(entropy, spawn_key=key)

    def rng(self, i: int) -> np.random.Generator:
        """A fresh copy of the generator task ``i`` received: ``fn(tasks[i], rng(i))``
        replays ``results[i]``."""
        return np.random.default_rng(self.child(i))


class SerialExecutor(Executor):
    """An executor that runs each submitted call at once, in the caller's thread.

    The reference route for :func:`map_seeded` (no pickling, no concurrency), and a
    debugging aid: exceptions surface with their original traceback.
    """

    def __init__(self) -> None:
        self._shutdown = False

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        future: Future[R] = Future()
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # re-raised by future.result(), as in a thread pool
            future.set_exception(exc)
        # KeyboardInterrupt and SystemExit propagate at once: Ctrl-C stops a serial sweep
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True


def _run_task(
    fn: Callable[[T, np.random.Generator], R], task: T, child: np.random.SeedSequence
) -> R:
    """``fn(task, default_rng(child))``; module-level so that process pools can pickle it."""
    return fn(task, np.random.default_rng(child))


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ModelError(f"seed = {seed!r}, expected an integer >= 0")
    return int(seed)


def map_seeded(
    fn: Callable[[T, np.random.Generator], R],
    tasks: Sequence[T],
    *,
    executor: Executor | None = None,
    seed: int,
    max_workers: int | None = None,
) -> SeededResults[R]:
    """``fn(tasks[i], default_rng(children[i]))`` for every ``i`` on ``executor``, with
    ``children = SeedSequence(seed).spawn(len(tasks))``, results in task order.

    Args:
        fn: ``(task, rng) -> result``; module-level (picklable) for process pools and Dask.
        tasks: the independent pieces of the sweep.
        executor: any :class:`concurrent.futures.Executor`; it is used, not shut down.
            ``None`` runs a local :class:`~concurrent.futures.ProcessPoolExecutor` with
            ``min(max_workers or os.cpu_count(), len(tasks))`` workers, shut down on return
            (serially instead inside a daemonic process, such as a pool or Dask worker,
            which may not start children).
        seed: root entropy, an integer ``>= 0``.
        max_workers: worker count of the default pool; only with ``executor=None``.

    Raises:
        ModelError: for a bad ``seed`` or ``max_workers``, or ``max_workers`` given with an
            executor.  An exception raised by ``fn`` propagates (the first in task order),
            after the tasks not yet started are cancelled.

    Note: under a process pool or Dask the pieces run in other processes, so process-wide
    state set by the caller (``np.seterr``, warning filters, monkeypatches) reaches them
    only through ``fork``; pass :class:`SerialExecutor` where such state matters.
    """
    root = _check_seed(seed)
    if max_workers is not None:
        if executor is not None:
            raise ModelError(
                f"max_workers = {max_workers!r} with executor = {executor!r}: max_workers "
                "sizes the default process pool only"
            )
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ModelError(f"max_workers = {max_workers!r}, expected an integer >= 1")
    items = list(tasks)
    children = np.random.SeedSequence(root).spawn(len(items))
    record = tuple((root, tuple(int(k) for k in c.spawn_key)) for c in children)
    if not items:
        return SeededResults(results=(), seed=root, children=record)
    if executor is None and multiprocessing.current_process().daemon:
        # a daemonic process (a pool or Dask worker) may not start children: run here
        results = _gather(SerialExecutor(), fn, items, children)
    elif executor is None:
        workers = min(max_workers or os.cpu_count() or 1, len(items))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = _gather(pool, fn, items, children)
    else:
        results = _gather(executor, fn, items, children)
    return SeededResults(results=tuple(results), seed=root, children=record)


def _gather(
    executor: Executor,
    fn: Callable[[T, np.random.Generator], R],
    items: list[T],
    children: list[np.random.SeedSequence],
) -> list[R]:
    """Submit every piece, then collect in task order; on the first failure cancel what has
    not started and re-raise.  An executor that runs pieces inside ``submit`` (serial) stops
    submitting at the first piece that failed."""
    futures: list[Future[R]] = []
    try:
        for task, child in zip(items, children, strict=True):
            future = executor.submit(_run_task, fn, task, child)
            futures.append(future)
            if future.done() and future.exception() is not None:
                break
        return [f.result() for f in futures]
    except BaseException:
        for f in futures:
            f.cancel()
        raise


class _DaskExecutor(Executor):
    """``client.get_executor()`` that also closes the client it was built from on shutdown."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._inner: Executor = client.get_executor()

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` behind this executor."""
        return self._client

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        return self._inner.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Wait for the submitted pieces (unless ``cancel_futures``, which abandons them,
        running ones included), then close the client."""
        self._inner.shutdown(wait=wait and not cancel_futures)
        self._client.close()


def executor_from_url(url: str | None) -> Executor:
    """An executor for ``url``; the caller owns it (``with executor_from_url(...) as ex:``).

    * ``None`` or ``"local"`` -- a :class:`~concurrent.futures.ProcessPoolExecutor` with
      ``os.cpu_count()`` workers;
    * ``"threads"`` -- a :class:`~concurrent.futures.ThreadPoolExecutor`;
    * ``"serial"`` -- a :class:`SerialExecutor`;
    * ``"dask://HOST:PORT"`` -- ``distributed.Client("HOST:PORT").get_executor()``, connected
      to a running Dask scheduler (install the ``dask`` extra; the workers need
      marl-oracle installed too); shutting the executor down also closes the client.

    Raises:
        ModelError: an unknown scheme, a ``dask://`` URL without ``HOST:PORT``, or no
            scheduler answering there within :data:`DASK_CONNECT_TIMEOUT` seconds.
        ImportError: ``dask://`` when ``distributed`` is not installed.
    """
    if url is None or url == "local":
        return ProcessPoolExecutor()
    if url == "threads":
        return ThreadPoolExecutor()
    if url == "serial":
        return SerialExecutor()
    if isinstance(url, str) and url.startswith("dask://"):
        address = url.removeprefix("dask://")
        host, sep, port = address.rpartition(":")
        if not (host and sep and port.isdigit()):
            raise ModelError(f"executor url = {url!r}, expected 'dask://HOST:PORT'")
        try:
            distributed = importlib.import_module("distributed")
        except ImportError as exc:
            raise ImportError(
                f"executor url = {url!r} needs Dask's distributed scheduler, which is not "
                "installed: pip install 'marl-oracle[dask]'"
            ) from exc
        try:
            client = distributed.Client(address, timeout=DASK_CONNECT_TIMEOUT)
        except OSError as exc:
            raise ModelError(
                f"executor url = {url!r}: no Dask scheduler answered at {address} within "
                f"{DASK_CONNECT_TIMEOUT:g} s ({exc})"
            ) from None
        return _DaskExecutor(client)
    raise ModelError(
        f"executor url = {url!r}, expected None, 'local', 'threads', 'serial' or "
        "'dask://HOST:PORT'"
    )
