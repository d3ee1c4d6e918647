"""Generic Ray map with bounded in-flight work, retries, progress and clean Ctrl-C.

``run_map(fn, tasks, on_result=...)`` runs ``fn(task)`` as Ray tasks over a
possibly huge, lazy iterable and hands each result to ``on_result(task,
result)`` in the driver as it arrives. This module imports only ray, the
standard library and rich; it knows nothing about what the tasks mean.

Design choices and why:

- **Results are written by the driver** (in ``on_result``), not by workers.
  The results directory may be local to the driver (a laptop driving a
  remote cluster, or a dir that is not on a shared filesystem), and results
  are small Arrow tables, so shipping them back through the object store is
  cheap. It also makes delivery exactly-once: Ray may run a task twice (a
  worker dies after finishing the work but before reporting), but each
  ObjectRef resolves once and is handed to ``on_result`` once, so a retried
  task can never write a file twice or race with its own retry.
- **Bounded, lazy submission**: at most ``max_in_flight`` tasks (default 2 x
  the cluster's CPUs: enough queued work to hide the driver's per-result
  time, little enough that the driver never holds much) are submitted but
  not yet handed to ``on_result`` (with ``batch_s``: Ray calls, each of at most
  ``MAX_BATCH`` tasks). ``tasks`` is pulled one item at a time
  only when a slot frees, so a generator of 10^6 descriptors is never
  materialised.
- **Batching tiny tasks** (opt-in, ``batch_s``): a Ray task costs ~1-2 ms of
  scheduling, transfer and driver time whatever it does, so tasks of about a
  millisecond (adaptive waves, boundary searches, tiny shards) would spend most
  of their time in Ray. With ``batch_s`` set, consecutive tasks are packed into
  one Ray call until their expected time (a running mean of the time ``fn``
  has taken per task, measured by the workers) reaches ``batch_s`` seconds, at
  most ``MAX_BATCH`` tasks (``BATCH_S`` is a good value: Ray's ~1-2 ms per call
  becomes a few per cent). The task stays the unit of everything else: each result
  is handed to ``on_result`` on its own, counted and weighted on its own. A batch
  starts only from tasks the iterator has ready: it never waits for more (a
  ``WAIT`` or the end of ``tasks`` closes it), so results that decide the next
  tasks arrive as soon as without batching. Tasks that take ``batch_s`` or more
  (a sweep's normal ~2 s tasks) are never batched.
- **Retries**: ``fn`` is wrapped once with ``ray.remote(max_retries=retries,
  retry_exceptions=False)``: a worker or node dying is retried by Ray; an
  exception raised by ``fn`` itself is a bug and is re-raised in the driver
  (as Ray's ``RayTaskError``, an instance of the original exception type,
  whose message carries the remote traceback) after cancelling the rest.
- **Ctrl-C / SIGTERM** (and an exception from ``fn`` or ``on_result``):
  in-flight work is stopped, Ray is shut down if ``run_map`` started it,
  and ``RunInterrupted`` (a ``KeyboardInterrupt`` carrying the ``RunStats``
  so far) is raised. Results already passed to ``on_result`` belong to the
  caller and are kept. How in-flight work is stopped depends on who owns
  the session: if ``run_map`` started it, ``ray.shutdown()`` alone does it
  (the embedded cluster dies with its workers; on a remote cluster the
  driver's job ends and Ray kills its tasks). Only in a session we do not
  own are tasks force-cancelled one by one with ``ray.cancel``, because in
  Ray 2.x cancelling a task that is completing at that moment can abort
  the driver (``Check failed: it != submissible_tasks_.end()``, see
  ray-project/ray#54846 and PR #54798); we saw it ~1 in 4 Ctrl-Cs with
  50 ms tasks, so we avoid ``ray.cancel`` whenever shutdown does the job.
- **Ray session ownership**: if Ray is already initialised, ``run_map`` uses
  that session and leaves it running (tests, benchmarks and multi-sweep
  callers keep one session, e.g. with ``cluster.connect.session``);
  otherwise it connects (see ``cluster.connect``) and shuts down at the end.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass
from typing import Any, TypeVar

import ray

from cluster.connect import connect, disconnect, session
from cluster.progress import make_display

__all__ = ["RunStats", "RunInterrupted", "run_map", "connect", "disconnect", "session", "WAIT", "BATCH_S"]

WAIT = type("Wait", (), {"__repr__": lambda self: "WAIT"})()
"""Yielded by a task iterator that has nothing runnable until a result arrives (more may follow)."""

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class RunStats:
    """What a ``run_map`` call did.

    ``overhead_s_per_task`` is the CPU time per task that was *not* spent
    inside ``fn``: (wall x slots - sum of worker time) / tasks, where slots =
    min(cluster CPUs, max_in_flight, tasks). It lumps together Ray
    scheduling, (de)serialisation, the driver's ``on_result`` and the
    ramp-up/tail idle time, so it is an upper bound on per-task Ray overhead;
    it is cheap because the worker only reports how long ``fn`` took.
    """

    tasks: int
    seconds: float
    weight: float
    worker_seconds: float
    cpus: int
    max_in_flight: int
    calls: int = 0
    """Ray calls made for the delivered tasks: fewer than ``tasks`` when tiny tasks were batched (``batch_s``)."""

    @property
    def slots(self) -> int:
        """How many tasks could run at once."""
        return max(1, min(self.cpus, self.max_in_flight, self.tasks or 1))

    @property
    def overhead_s_per_task(self) -> float | None:
        """Upper bound on per-task overhead in seconds (None if no task finished)."""
        if self.tasks == 0:
            return None
        return max(0.0, self.seconds * self.slots - self.worker_seconds) / self.tasks

    @property
    def utilization(self) -> float | None:
        """Fraction of the slots' wall time spent inside ``fn``."""
        if self.seconds <= 0 or self.tasks == 0:
            return None
        return min(1.0, self.worker_seconds / (self.seconds * self.slots))

    @property
    def rate(self) -> float:
        """Weight units per wall second (tasks per second when unweighted)."""
        return self.weight / self.seconds if self.seconds > 0 else 0.0


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during ``run_map``; ``stats`` counts the tasks already delivered."""

    def __init__(self, stats: RunStats) -> None:
        super().__init__(f"interrupted after {stats.tasks} tasks")
        self.stats = stats


def _timed(fn: Callable[[T], R]) -> Callable[[T], tuple[R, float]]:
    """Wrap ``fn`` so the worker also reports how long ``fn`` itself took."""

    def timed_call(task: T) -> tuple[R, float]:
        t0 = time.perf_counter()
        result = fn(task)
        return result, time.perf_counter() - t0

    # Ray's logs name a task by its function: show the caller's, not ours.
    name = str(getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", "task"))
    timed_call.__name__ = timed_call.__qualname__ = name
    return timed_call


def _timed_batch(fn: Callable[[T], R]) -> Callable[[list[T]], list[tuple[R, float]]]:
    """Wrap ``fn`` to run a list of tasks in one Ray call, each timed as by ``_timed``."""
    one = _timed(fn)

    def timed_batch(tasks: list[T]) -> list[tuple[R, float]]:
        return [one(t) for t in tasks]

    timed_batch.__name__ = timed_batch.__qualname__ = one.__name__
    return timed_batch


BATCH_S = 0.05
"""A ``batch_s`` for callers with tasks of any size: batches of ~50 ms of work (a millisecond task goes
50 to a Ray call), short enough that the last batches do not leave CPUs idle at the end of a run."""
MAX_BATCH = 256
"""Most tasks one Ray call carries with ``batch_s`` (bounds the driver's memory per call and a retry's work)."""


BATCH_EMA = 0.2
"""Weight of the newest task in the running mean of a task's time that sizes batches: tasks whose
cost changes along the stream (a grid walked from small n_cpus to large) resize batches within a few."""


def batch_size(batch_s: float | None, task_s: float | None) -> int:
    """How many tasks the next Ray call carries: ``batch_s`` seconds of tasks at ``task_s`` seconds
    each (the running mean of the tasks timed so far), 1 while no task is timed or batching is off."""
    if batch_s is None or task_s is None:
        return 1
    if task_s <= 0:
        return MAX_BATCH
    return max(1, min(MAX_BATCH, int(batch_s / task_s)))


class _SigtermAsInterrupt:
    """While active, SIGTERM raises KeyboardInterrupt in the main thread (one cleanup path)."""

    def __init__(self) -> None:
        self._prev: Any = None
        self._installed = False

    def __enter__(self) -> "_SigtermAsInterrupt":
        if threading.current_thread() is threading.main_thread():
            self._prev = signal.signal(signal.SIGTERM, self._handler)
            self._installed = True
        return self

    @staticmethod
    def _handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._prev)


CANCEL_PASSES = 4
CANCEL_RECHECK_S = 0.5


def _cancel_all(refs: Iterable[ray.ObjectRef]) -> None:
    """Best-effort force-cancel of submitted tasks (pending ones are dropped, running ones killed).

    A task that is being handed to a worker at the moment of a cancel can miss it and run on
    (seen ~1 in 12 interrupts with a queue deeper than the CPUs: a 60 s task kept its CPU), so
    tasks still unfinished CANCEL_RECHECK_S after a pass are cancelled again, up to CANCEL_PASSES.
    """
    left = list(refs)
    for _ in range(CANCEL_PASSES):
        for ref in left:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # already finished, or Ray going away: nothing to do
                pass
        try:
            _, left = ray.wait(left, num_returns=len(left), timeout=CANCEL_RECHECK_S) if left else ([], [])
        except Exception:  # Ray going away
            return
        if not left:
            return


def run_map(
    fn: Callable[[T], R],
    tasks: Iterable[T],
    *,
    on_result: Callable[[T, R], None],
    address: str | None = None,
    num_cpus: int | None = None,
    max_in_flight: int | None = None,
    retries: int = 3,
    weight: Callable[[T], float] | None = None,
    total_weight: float | None = None,
    total: int | None = None,
    description: str = "tasks",
    describe: Callable[[], str] | None = None,
    unit: str = "units",
    progress: bool | None = None,
    runtime_env: dict[str, Any] | None = None,
    poll_s: float = 1.0,
    shutdown_follows: bool | None = None,
    batch_s: float | None = None,
) -> RunStats:
    """Run ``fn(task)`` on Ray for every task; call ``on_result(task, result)`` in the driver.

    ``fn`` must be picklable (a top-level function, or a functools.partial
    of one), raise only on bugs, and return something small. Results arrive in
    completion order, each exactly once. ``tasks`` is consumed lazily with at
    most ``max_in_flight`` (default 2 x cluster CPUs) submitted but not yet
    delivered. ``weight(task)`` (e.g. trials in the task) drives the rate
    shown as ``unit``/s and, with ``total_weight``, the bar and ETA; ``total``
    is the task count if ``tasks`` has no ``len``. ``progress``: None = a rich
    bar iff stderr is a TTY, False = print nothing, True = always.
    ``describe()``, if given, replaces the description after each result (e.g.
    how many points are still open). ``tasks`` may yield ``WAIT`` when nothing is
    runnable until a result arrives (work that depends on results); it is pulled
    again after the next result.
    ``address``/``num_cpus``/``runtime_env`` are for ``connect`` and are
    ignored when Ray is already initialised. ``poll_s`` bounds how long the
    driver blocks in ``ray.wait`` between checks. ``shutdown_follows``: the
    session is shut down as soon as this returns or raises (True when the
    caller connected with ``cluster.connect`` just for this call), so a stop
    leaves in-flight tasks to that shutdown instead of cancelling them one by
    one (see the module docstring); default: iff ``run_map`` started Ray itself.
    ``batch_s``: pack tasks shorter than this many seconds into shared Ray calls
    (see the module docstring; None: one Ray call per task).

    Raises the task's exception (after stopping the rest, see the module
    docstring) if ``fn`` raises, and ``RunInterrupted`` (a KeyboardInterrupt
    carrying ``stats``) on Ctrl-C/SIGTERM, also during Ray startup.
    """
    if max_in_flight is not None and max_in_flight < 1:
        raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if batch_s is not None and not batch_s > 0:
        raise ValueError(f"batch_s must be > 0, got {batch_s}")
    if total is None and isinstance(tasks, Sized):
        total = len(tasks)

    was_up = ray.is_initialized()
    try:
        started = connect(address, num_cpus, runtime_env=runtime_env)
        cancel_on_stop = not (started or shutdown_follows)
    except KeyboardInterrupt:  # Ctrl-C while Ray starts: leave nothing half-up
        if not was_up and ray.is_initialized():
            ray.shutdown()
        raise RunInterrupted(RunStats(0, 0.0, 0.0, 0.0, 0, max_in_flight or 0)) from None
    try:
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        limit = max_in_flight if max_in_flight is not None else 2 * cpus
        remote_fn = ray.remote(max_retries=retries, retry_exceptions=False)(_timed(fn))
        remote_batch = ray.remote(max_retries=retries, retry_exceptions=False)(_timed_batch(fn)) if batch_s else None

        display = make_display(
            progress,
            description=description,
            total_tasks=total,
            total_weight=total_weight,
            weighted=weight is not None,
            unit=unit if weight is not None else "tasks",
        )
        it = iter(tasks)
        in_flight: dict[ray.ObjectRef, list[T]] = {}  # each Ray call and the tasks it carries
        exhausted = False
        done = 0
        calls = 0
        weight_done = 0.0
        worker_s = 0.0
        task_s: float | None = None  # running mean of fn's seconds per task (sizes batches)
        t0 = time.perf_counter()

        def stats() -> RunStats:
            return RunStats(
                tasks=done,
                seconds=time.perf_counter() - t0,
                weight=weight_done,
                worker_seconds=worker_s,
                cpus=cpus,
                max_in_flight=limit,
                calls=calls,
            )

        with _SigtermAsInterrupt():
            display.start()
            try:
                while True:
                    # Refill: pull from the iterator only when a slot is free.
                    waiting = False
                    while not exhausted and not waiting and len(in_flight) < limit:
                        batch: list[T] = []
                        for _ in range(batch_size(batch_s, task_s)):
                            try:
                                task = next(it)
                            except StopIteration:
                                exhausted = True
                                break
                            if task is WAIT:  # nothing runnable until a result arrives
                                waiting = True
                                break
                            batch.append(task)
                        if len(batch) == 1:
                            in_flight[remote_fn.remote(batch[0])] = batch
                        elif batch:
                            assert remote_batch is not None
                            in_flight[remote_batch.remote(batch)] = batch
                    if not in_flight:
                        if waiting:
                            raise RuntimeError("the task iterator waits for results, but nothing is in flight")
                        break
                    refs = list(in_flight)
                    ready, _ = ray.wait(refs, num_returns=1, timeout=poll_s)
                    if not ready:
                        continue
                    if len(refs) > 1:  # sweep up everything else already done
                        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
                    for ref in ready:
                        carried = in_flight.pop(ref)
                        got = ray.get(ref)  # re-raises fn's exception
                        calls += 1
                        for task, (result, secs) in zip(carried, [got] if len(carried) == 1 else got):
                            on_result(task, result)
                            w = float(weight(task)) if weight is not None else 1.0
                            done += 1
                            weight_done += w
                            worker_s += secs
                            task_s = secs if task_s is None else task_s + BATCH_EMA * (secs - task_s)
                            display.advance(1, w, describe() if describe is not None else None)
            except KeyboardInterrupt:
                if cancel_on_stop:
                    _cancel_all(in_flight)
                raise RunInterrupted(stats()) from None
            except BaseException:
                if cancel_on_stop:
                    _cancel_all(in_flight)
                raise
            finally:
                display.stop()
        return stats()
    finally:
        disconnect(started)
