"""Run a whole sweep: plan tasks, skip the ones already stored, run the rest on Ray, store results.

The driver writes every file (see cluster.executor for why); resume is the
default: a results dir holding the same spec only gets its missing tasks.
``out`` is a local path or a URI (file://, s3://, gs://, ...; see sweeps.store).

On a cluster (``address`` or ``$RAY_ADDRESS``) the workers, possibly on other
machines, must import ``SHIPPED_PACKAGES`` (sweeps.nodes): unless told the cluster has stoprace
installed (``ship=False``) the run passes ``runtime_env={"py_modules": [those
package dirs]}``, uploaded once per code version and cached by the cluster.
`stoprace submit` ships the same list (tests/test_shipping.py checks that a
worker's imports stay inside it). Inside a Ray Job (``stoprace submit``, a
KubeRay RayJob) nothing is added: the job's own runtime_env already applies to
every worker, and Ray refuses a driver that sets the same fields again.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cluster.connect import connect, disconnect, ray_is_up, resolve_address, token_auth_enabled
from cluster.jobs import in_ray_job, shipping_runtime_env
from cluster.nodeenv import SameVersions, installed_versions, node_problem
from core.cost import cpu_trials
from core.estimators import stream_signature
from queries.resultset.errors import StoreError, one_line
from queries.resultset.reader import Damage
from queries.resultset.storage import locate
from sweeps.errors import ClusterError
from sweeps.grid import Task, iter_tasks, plan_signature, total_cpu_trials
from sweeps.guards import (
    IN_PROCESS_CPU_S,
    RunPlan,
    check_size,
    estimated_tasks,
    planned_cpu_s,
    planned_cpu_trials,
)
from sweeps.nodes import SAME_VERSIONS, connect_problem, node_failure, package_dirs
from sweeps.search import BoundarySearch
from sweeps.shard import TaskResult, run_task
from sweeps.spec import SweepSpec, load_spec
from sweeps.store import ResultStore, is_uri
from sweeps.waves import STATS_COLUMNS, WavePlan, wave_plan_signature

if TYPE_CHECKING:
    from cluster.executor import RunStats

EXACT_TASK_COUNT_POINTS = 50_000
"""Up to this many points the start line counts tasks exactly (planning them takes < 0.5 s); above, it estimates."""


@dataclass(frozen=True)
class RunReport:
    """What one `run` call did."""

    out: Path | str
    n_tasks: int | None
    tasks_run: int
    tasks_skipped: int
    seconds: float
    cpu_trials: int
    complete: bool
    stats: RunStats | None = None
    """What cluster.executor measured (worker seconds, overhead per task, utilization); None if nothing ran on Ray."""
    search: list[dict[str, Any]] | None = None
    """A [search] spec: one row per combination of the other axes (sweeps.search.BoundarySearch.report)."""
    repaired: tuple[Damage, ...] = ()
    """Stored files found damaged or missing on resume; their tasks were run again."""
    in_process: bool = False
    """The tasks ran in this process, without Ray (a sweep below IN_PROCESS_CPU_S, or in_process=True)."""


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C/SIGTERM during a run; finished tasks are stored, the next run resumes."""

    def __init__(self, out: Path | str, kept: int, n_tasks: int | None) -> None:
        total = f" of {n_tasks}" if n_tasks is not None else ""
        super().__init__(f"interrupted: {kept}{total} tasks stored in {out}; run the same command again to resume")
        self.out, self.kept, self.n_tasks = out, kept, n_tasks


def default_out(spec: SweepSpec) -> Path:
    """Where results go without --out: ./results/<sweep name>."""
    return Path("results") / spec.name


def run(
    spec: SweepSpec | str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    max_in_flight: int | None = None,
    retries: int = 3,
    progress: bool | None = None,
    force: bool = False,
    runtime_env: dict[str, Any] | None = None,
    ship: bool = True,
    announce: Callable[[RunPlan], None] | None = None,
    break_lock: bool = False,
    in_process: bool | None = None,
    on_second_interrupt: Callable[[SweepInterrupted], None] | None = None,
) -> RunReport:
    """Run (or resume) a sweep into `out`; returns once every task is stored.

    `spec` is a SweepSpec or a path to a TOML spec; `out` a directory or a URI.
    Raises a StopraceError (one line) for a bad spec or one above the size
    guards without `force` (SpecError, see sweeps.guards), a results dir holding
    another spec (StoreError), `num_cpus` with a cluster address or a cluster
    that cannot be joined, or a node that cannot run the tasks (ClusterError; a
    cluster's size is fixed: bound the work with `max_in_flight`); SweepInterrupted
    on Ctrl-C (tasks finished so far are kept). `ship` (cluster runs only, see the
    module docstring): upload the packages as `py_modules` unless `runtime_env` is
    given. `announce` gets the RunPlan (size, tasks, CPUs, ETA, where) before any
    task runs.

    Where: `in_process` None (the default) runs a sweep planned below IN_PROCESS_CPU_S
    (sweeps.guards) in this process without Ray, one task after another (same tasks,
    same run_task, same rows), unless `address`/$RAY_ADDRESS, `num_cpus` or a Ray
    session already up say otherwise; True forces this process, False forces Ray.

    `on_second_interrupt`: once a first Ctrl-C has stopped the run, a second one
    (while Ray shuts down, which takes seconds) calls it with what is stored at that
    moment instead of raising KeyboardInterrupt in the middle of Ray's teardown (which
    can end the process with a signal); it is deferred while the manifest is written.
    The CLI prints its line and exits 130 there.

    A new results dir is created only once Ray is up, so a failed connection
    leaves nothing behind; an existing one is opened first (its writer lock taken,
    every committed file verified), so a finished run returns at once without
    starting Ray and another run writing `out` is refused at once (StoreError naming
    it) unless `break_lock`. Tasks of damaged or missing files run again (`repaired`).
    """
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec, force=force)
    if in_process and (resolve_address(address) is not None or num_cpus is not None):
        raise ClusterError("in_process=True runs without Ray: it takes no cluster address and no num_cpus")
    runtime_env = None if in_process else _cluster_runtime_env(address, num_cpus, runtime_env, ship)
    check_size(spec, force)
    if out is None:
        out_path: Path | str = default_out(spec)
    else:
        out_path = str(out) if is_uri(out) else Path(out)
    plan = {**(wave_plan_signature() if spec.precision is not None else plan_signature()),
            **stream_signature(spec.estimator)}  # a late sweep records its own stream's version
    store = None
    try:
        exists = locate(out_path, None).kind() is not None
    except OSError as e:  # e.g. an object store refusing our credentials
        raise StoreError(f"{out_path}: cannot access results location: {one_line(e)}") from None
    if exists:  # opening what exists creates nothing
        with _writing(out_path):
            store = ResultStore.create_or_open(out_path, spec, plan=plan, break_lock=break_lock)
        if store.complete and not store.repaired:
            found = search_report(store) if spec.search is not None else None
            store.close()
            return RunReport(out_path, store.n_tasks, 0, len(store.done_tasks()), 0.0, 0, True, search=found)
        try:
            _check_writable(out_path)  # before starting Ray, not at the first task
        except BaseException:
            store.close()
            raise
    interrupts = _SecondInterrupt(on_second_interrupt, out_path)
    here = in_process if in_process is not None else _small_enough(spec, store, address, num_cpus)
    target = resolve_address(address)
    if here:
        started, where = False, f"in this process: under {IN_PROCESS_CPU_S:g} CPU-s of work, no Ray"
    else:
        where = "the Ray session already up" if ray_is_up() else f"the cluster at {target}" if target else "embedded Ray"
        try:
            started = _connect(address, num_cpus, runtime_env, interrupts)
        except BaseException:
            if store is not None:
                store.close()
            raise
    try:
        if store is None:
            with _writing(out_path):
                store = ResultStore.create_or_open(out_path, spec, plan=plan, break_lock=break_lock)
        interrupts.store = store
        return _run_tasks(spec, store, out_path, started, where, here=here, announce=announce,
                          max_in_flight=max_in_flight, retries=retries, progress=progress, interrupts=interrupts)
    finally:
        try:
            if store is not None:
                with interrupts.critical():
                    try:
                        store.close()  # idempotent; releases the writer lock whatever happened
                    except OSError:
                        pass
            disconnect(started)
        finally:
            interrupts.disarm()


def _small_enough(spec: SweepSpec, store: ResultStore | None, address: str | None, num_cpus: int | None) -> bool:
    """The default of `run(in_process=None)`: no cluster, no worker count, no Ray up, and little work left."""
    if resolve_address(address) is not None or num_cpus is not None or ray_is_up():
        return False
    return planned_cpu_s(_remaining(spec, store), spec.estimator) < IN_PROCESS_CPU_S


def _remaining(spec: SweepSpec, store: ResultStore | None) -> int:
    """CPU-trials not stored yet (an adaptive sweep counts every point at max_trials, a [search] every
    combination's longest bisection: sweeps.guards.planned_cpu_trials, the size guard's count)."""
    total = planned_cpu_trials(spec)
    if store is None:
        return total
    stored = store.cpu_trials_done
    return max(total - (stored if stored is not None else _stored_cpu_trials(store)), 0)


class _SecondInterrupt:
    """After a first Ctrl-C: a second SIGINT calls `act(SweepInterrupted(what is stored now))` instead of raising
    KeyboardInterrupt, which inside Ray's shutdown can kill the process with a signal (SIGSEGV was seen). Deferred
    while the manifest is written (`critical`), so what it reports is what a resume finds. Main thread only."""

    def __init__(self, act: Callable[[SweepInterrupted], None] | None, out: Path | str) -> None:
        self.act, self.out = act, out
        self.store: ResultStore | None = None
        self.n_tasks: int | None = None
        self._prev: Any = None
        self._armed = False
        self._busy = 0
        self._pending = False

    def arm(self) -> None:
        """Called at the first interrupt: from now on a SIGINT goes to `act`."""
        if self.act is None or self._armed or threading.current_thread() is not threading.main_thread():
            return
        self._prev = signal.signal(signal.SIGINT, self._handler)
        self._armed = True

    def disarm(self) -> None:
        if self._armed:
            signal.signal(signal.SIGINT, self._prev)
            self._armed = False

    @contextmanager
    def critical(self) -> Iterator[None]:
        """A second SIGINT in this block waits for its end (the manifest is being written)."""
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1
            if not self._busy and self._pending:
                self._fire()

    def _handler(self, signum: int, frame: Any) -> None:
        if self._busy:
            self._pending = True
        else:
            self._fire()

    def _fire(self) -> None:
        s = self.store
        kept, n = (len(s.done_tasks()), s.n_tasks or self.n_tasks) if s is not None else (0, self.n_tasks)
        assert self.act is not None
        self.act(SweepInterrupted(self.out, kept, n))


_HERE_WAIT = type("HereWait", (), {"__repr__": lambda self: "WAIT"})()
"""The in-process path's "nothing runnable until a result arrives" (never yielded: results arrive at once)."""


@dataclass(frozen=True)
class _HereStats:
    tasks: int
    seconds: float
    weight: float


def _run_here(
    fn: Callable[[Task], TaskResult],
    todo: Iterator[Any],
    *,
    on_result: Callable[[Task, TaskResult], None],
    total_weight: int | None,
    description: str,
    describe: Callable[[], str] | None,
    progress: bool | None,
) -> _HereStats:
    """Every task in this process, one after another, each stored as it finishes (the in-process path)."""
    from cluster.progress import make_display

    display = make_display(progress, description=description, total_tasks=None, total_weight=total_weight,
                           weighted=True, unit="CPU-trials")
    n, weight, t0 = 0, 0.0, time.perf_counter()
    prev_term = None
    if threading.current_thread() is threading.main_thread():  # SIGTERM stops it as Ctrl-C does (as on Ray)
        prev_term = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    display.start()
    try:
        for task in todo:
            if task is _HERE_WAIT:
                raise RuntimeError("the task iterator waits for results, but every task has been delivered")
            on_result(task, fn(task))
            n += 1
            weight += task.cpu_trials
            display.advance(1, task.cpu_trials, describe() if describe is not None else None)
    finally:
        display.stop()
        if prev_term is not None:
            signal.signal(signal.SIGTERM, prev_term)
    return _HereStats(n, time.perf_counter() - t0, weight)


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _run_tasks(
    spec: SweepSpec,
    store: ResultStore,
    out_path: Path | str,
    started: bool,
    where: str,
    *,
    here: bool,
    announce: Callable[[RunPlan], None] | None,
    max_in_flight: int | None,
    retries: int,
    progress: bool | None,
    interrupts: _SecondInterrupt,
) -> RunReport:
    """The tasks `store` lacks, in this process (`here`) or on the Ray session that is up; stores every result
    as it arrives."""
    if not here:
        from cluster.executor import WAIT
    adaptive = spec.precision is not None
    done = store.done_tasks()
    counter = _Counter()
    waves: WavePlan | None = None
    search: BoundarySearch | None = None
    describe: Callable[[], str] | None = None
    if adaptive:  # trials = "auto": per-point waves decided from the stored rows (sweeps.waves)
        search = BoundarySearch(spec) if spec.search is not None else None
        waves = search.plan if search is not None else WavePlan(spec)
        for table in _stored_rows(store, done):
            waves.add_rows(table)
        todo: Iterator[Any] = waves.iter_tasks(_HERE_WAIT if here else WAIT)
        counter.skipped = len(done)
        remaining = None
        describe = functools.partial(_open_points, spec.name, waves)
    else:
        todo = _pending(iter_tasks(spec), done, counter)
        remaining = _remaining(spec, store)
    n_planned = store.n_tasks  # known once a run finished; else the start line's exact count, if it has one
    if announce is not None:
        run_plan = _plan(spec, store, remaining, len(done), where, here=here)
        if n_planned is None and run_plan.tasks_exact:
            n_planned = run_plan.n_tasks
        announce(run_plan)
    interrupts.n_tasks = n_planned

    def on_result(task: Task, result: TaskResult) -> None:
        events = result.events if result.events.num_rows else None
        with _writing(out_path):
            store.write_task(task.task_id, result.points, events)
        if waves is not None:
            waves.task_done(result.points)

    task_fn = functools.partial(run_task, sweep=spec.name, estimator=spec.estimator)
    stats: Any
    try:
        if here:
            stats = _run_here(task_fn, todo, on_result=on_result, total_weight=remaining,
                              description=spec.name if describe is None else describe(), describe=describe,
                              progress=progress)
        else:
            from cluster.executor import BATCH_S, run_map

            stats = run_map(
                SameVersions(task_fn, installed_versions(SAME_VERSIONS)),  # a worker with other numpy/pyarrow refuses
                todo,
                on_result=on_result,
                max_in_flight=max_in_flight,
                retries=retries,
                weight=lambda t: t.cpu_trials,
                total_weight=remaining,
                description=spec.name if describe is None else describe(),
                describe=describe,
                unit="CPU-trials",
                progress=progress,
                shutdown_follows=started,
                batch_s=BATCH_S,  # tiny tasks (waves, searches, tiny shards) share Ray calls
            )
    except KeyboardInterrupt:  # cluster.executor's RunInterrupted, or Ctrl-C in this process
        interrupts.arm()  # a second Ctrl-C while we store and Ray shuts down: exit at once, said in one line
        with interrupts.critical(), _writing(out_path):
            store.flush()
        raise SweepInterrupted(out_path, len(store.done_tasks()), n_planned) from None
    except Exception as e:  # a node that cannot run the task (module missing, other versions): one line, exit 2
        problem = None if here else node_problem(e)
        if problem is None:
            raise  # a bug: keeps its traceback
        with _writing(out_path):
            store.flush()
        raise node_failure(problem, out=out_path, kept=len(store.done_tasks()), n_tasks=n_planned) from None
    finally:
        with interrupts.critical(), _writing(out_path):
            store.flush()
    n_tasks = counter.seen if waves is None else len(store.done_tasks())
    with interrupts.critical(), _writing(out_path):
        store.finish(n_tasks)
        store.close()
    return RunReport(
        out=out_path,
        n_tasks=n_tasks,
        tasks_run=stats.tasks,
        tasks_skipped=counter.skipped,
        seconds=stats.seconds,
        cpu_trials=int(stats.weight),
        complete=store.complete,
        stats=None if here else stats,
        search=search.report() if waves is not None and search is not None else None,
        repaired=tuple(store.repaired),
        in_process=here,
    )


def _check_writable(out: Path | str) -> None:
    """StoreError (one line) if a local results dir, or a subdirectory of it, may not be written
    by this process (``os.access`` follows its real permissions and capabilities)."""
    if not isinstance(out, Path):
        return  # a URI: the object store says so at the first write (also one line, see _writing)
    for d in (out, *(p for p in out.iterdir() if p.is_dir())):
        if not os.access(d, os.W_OK | os.X_OK):
            raise StoreError(f"{out}: cannot write results: Permission denied ({d} is not writable)")


@contextmanager
def _writing(out: Path | str) -> Iterator[None]:
    """An OSError while writing the results dir (permissions, a full disk, a lost mount) as one
    StoreError line; every task stored before it stays committed, and the same command resumes."""
    try:
        yield
    except OSError as e:
        raise StoreError(f"{out}: cannot write results: {one_line(e)}") from None


def _connect(address: str | None, num_cpus: int | None, runtime_env: dict[str, Any] | None,
             interrupts: _SecondInterrupt | None = None) -> bool:
    """Ray up (embedded, or the cluster's session); a cluster that cannot be joined is a ClusterError."""
    target = None if ray_is_up() else resolve_address(address)
    try:
        return connect(address, num_cpus, runtime_env=runtime_env)
    except KeyboardInterrupt:  # Ctrl-C while Ray starts: leave nothing half-up (nothing is stored yet)
        if interrupts is not None:
            interrupts.arm()
        try:
            if ray_is_up():
                import ray

                ray.shutdown()
        finally:
            if interrupts is not None:
                interrupts.disarm()
        raise
    except Exception as e:  # ray.init could not join the cluster (auth, version, ...)
        if target is None:
            raise  # the embedded Ray failed to start: not the user's input, keep the traceback
        raise ClusterError(connect_problem(e) or connection_problem(target, e)) from None


def connection_problem(target: str | None, e: BaseException) -> str:
    """One line for a failed ray.init: the token-auth case gets its fix spelled out."""
    chain, seen = [], set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        chain.append(" ".join(str(cur).split()))
        cur = cur.__cause__ or cur.__context__
    text = " ".join(chain)
    if "Authentication" in text or "AuthToken" in text or "Unauthenticated" in text:
        return (
            f"the Ray cluster at {target} requires its auth token: export RAY_AUTH_MODE=token and provide the "
            f"cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN"
        )
    return f"cannot connect to the Ray cluster at {target}: {chain[0] if chain else 'connection failed'}"


def _plan(spec: SweepSpec, store: ResultStore, remaining: int | None, n_stored: int, where: str, *,
          here: bool = False) -> RunPlan:
    """What the run is about to do (sweeps.guards.RunPlan), on the session that is up.

    An adaptive run (trials = "auto") is sized at its most: every point at max_trials.
    """
    total = total_cpu_trials(spec)
    if remaining is None:  # adaptive: what is stored counts against the most it may run
        remaining = _remaining(spec, store)
    n_tasks, exact = store.n_tasks, True
    if spec.precision is not None:
        n_tasks, exact = estimated_tasks(spec), False
    elif n_tasks is None:
        if spec.n_points <= EXACT_TASK_COUNT_POINTS:
            n_tasks = sum(1 for _ in iter_tasks(spec))
        else:
            n_tasks, exact = estimated_tasks(spec), False
    if here:
        cpus = 1
    else:
        import ray

        if token_auth_enabled():
            where += "; token auth: only holders of ~/.ray/auth_token or $RAY_AUTH_TOKEN may join"
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    return RunPlan(spec.name, spec.n_points, total, remaining, n_tasks, exact, n_stored, cpus, where, spec.estimator,
                   adaptive=spec.precision is not None)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """ClusterError (one line) unless something listens at a HOST:PORT cluster address.

    ``ray.init`` on an unreachable address retries for minutes; this answers in
    at most ``timeout`` seconds, before anything is written. ``auto``/``local``
    are left to Ray; an http(s) URL is the dashboard, i.e. ``stoprace submit``.
    """
    if address in ("auto", "local"):
        return
    scheme, sep, rest = address.partition("://")
    if sep and scheme in ("http", "https"):
        raise ClusterError(
            f"{address} is a dashboard (Ray Jobs) URL: use `stoprace submit`, or the head's GCS address HOST:6379 here"
        )
    hostport = rest if sep else address
    host, colon, port = hostport.rpartition(":")
    if not colon or not host or not port.isdigit():
        raise ClusterError(f"{address}: not a Ray cluster address (HOST:PORT, e.g. head:6379)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {why} (is the head up, and is this its GCS port?)") from None


def _cluster_runtime_env(
    address: str | None, num_cpus: int | None, runtime_env: dict[str, Any] | None, ship: bool
) -> dict[str, Any] | None:
    """Checks and the runtime_env for a run that will connect to a cluster (before anything is written)."""
    if ray_is_up():  # an existing session is used as is (see cluster.executor)
        return runtime_env
    target = resolve_address(address)
    if target is None:
        return runtime_env
    if num_cpus is not None:
        raise ClusterError(
            f"workers/num_cpus={num_cpus} sizes the embedded Ray only; the cluster at {target} "
            f"has the CPUs it was started with (bound the work with max_in_flight / --max-in-flight)"
        )
    check_reachable(target)
    if runtime_env is not None or not ship or in_ray_job():
        return runtime_env
    return shipping_runtime_env(package_dirs())


class _Counter:
    seen = 0
    skipped = 0


def _pending(tasks: Iterator[Task], done: set[int], counter: _Counter) -> Iterator[Task]:
    """The tasks not stored yet, counting all of them on the way (lazily)."""
    for t in tasks:
        counter.seen += 1
        if t.task_id in done:
            counter.skipped += 1
            continue
        yield t


def _open_points(name: str, waves: WavePlan) -> str:
    """Progress description of an adaptive run: how many points still need shards."""
    return f"{name}: {waves.open_points}/{len(waves.points)} points open"


def search_report(store: ResultStore) -> list[dict[str, Any]]:
    """The boundary search of a [search] results dir, replayed from its stored rows (no simulation)."""
    search = BoundarySearch(store.spec)
    for table in _stored_rows(store, store.done_tasks()):
        search.plan.add_rows(table)
    search.plan.start()
    return search.report()


def _stored_rows(store: ResultStore, done: set[int]) -> Iterator[Any]:
    """The stop rule's columns of every committed points row (what an adaptive resume decides on)."""
    if done:
        yield store.read_points(columns=list(STATS_COLUMNS))


def _stored_cpu_trials(store: ResultStore) -> int:
    """n_cpus x trials already stored, read from the files (manifests without cpu_trials_done)."""
    t = store.read_points(columns=["n_cpus", "trials"])
    return sum(cpu_trials(a, b) for a, b in zip(t["n_cpus"].to_pylist(), t["trials"].to_pylist()))
