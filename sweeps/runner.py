"""Run a whole sweep: plan tasks, skip the ones already stored, run the rest on Ray, store results.

The driver writes every file (see cluster.executor for why); resume is the
default: a results dir holding the same spec only gets its missing tasks.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from cluster.executor import RunInterrupted, run_map
from sweeps.grid import Task, iter_tasks, plan_signature, total_cpu_trials
from sweeps.shard import TaskResult, run_task
from sweeps.spec import SweepSpec, load_spec
from sweeps.store import ResultStore


@dataclass(frozen=True)
class RunReport:
    """What one `run` call did."""

    out: Path
    n_tasks: int | None
    tasks_run: int
    tasks_skipped: int
    seconds: float
    cpu_trials: int
    complete: bool


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C/SIGTERM during a run; finished tasks are stored, the next run resumes."""

    def __init__(self, out: Path, kept: int, n_tasks: int | None) -> None:
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
) -> RunReport:
    """Run (or resume) a sweep into `out`; returns once every task is stored.

    `spec` is a SweepSpec or a path to a TOML spec. Raises ValueError (one line)
    for a bad spec or a results dir holding another spec, SweepInterrupted on
    Ctrl-C (tasks finished so far are kept).
    """
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec, force=force)
    out_path = Path(out) if out is not None else default_out(spec)
    store = ResultStore.create_or_open(out_path, spec, plan=plan_signature())
    done = store.done_tasks()
    if store.complete:
        store.close()
        return RunReport(out_path, store.n_tasks, 0, len(done), 0.0, 0, True)
    counter = _Counter()
    todo = _pending(iter_tasks(spec), done, counter)
    total = total_cpu_trials(spec)
    remaining = max(total - _stored_cpu_trials(store), 0)

    def on_result(task: Task, result: TaskResult) -> None:
        events = result.events if result.events.num_rows else None
        store.write_task(task.task_id, result.points, events)

    try:
        stats = run_map(
            functools.partial(run_task, sweep=spec.name, estimator=spec.estimator),
            todo,
            on_result=on_result,
            address=address,
            num_cpus=num_cpus,
            max_in_flight=max_in_flight,
            retries=retries,
            weight=lambda t: t.cpu_trials,
            total_weight=remaining,
            description=spec.name,
            unit="CPU-trials",
            progress=progress,
            runtime_env=runtime_env,
        )
    except RunInterrupted:
        store.flush()
        raise SweepInterrupted(out_path, len(store.done_tasks()), store.n_tasks) from None
    finally:
        store.flush()
    store.finish(counter.seen)
    store.close()
    return RunReport(
        out=out_path,
        n_tasks=counter.seen,
        tasks_run=stats.tasks,
        tasks_skipped=counter.skipped,
        seconds=stats.seconds,
        cpu_trials=int(stats.weight),
        complete=store.complete,
    )


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


def _stored_cpu_trials(store: ResultStore) -> int:
    """n_cpus x trials already stored (for the progress total on resume)."""
    total = 0
    for tid in store.done_tasks():
        t = pq.read_table(store.points_path(tid), columns=["n_cpus", "trials"])
        total += sum(a * b for a, b in zip(t["n_cpus"].to_pylist(), t["trials"].to_pylist()))
    return total
