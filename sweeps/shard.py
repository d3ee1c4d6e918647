"""Run one task: every (point, shard) it holds, reduced to `points` and `events` Arrow tables.

Pure apart from the wall clock (`wall_s`, not part of determinism): this is the
function Ray workers execute, so it takes and returns plain picklable values.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from core.estimators import Chunk, ShardSummary, get_estimator
from core.outcomes import OUTCOMES
from core.params import PARAM_NAMES
from core.summary import event_mask
from core.vectorized import shard_seed
from sweeps.grid import Point, Task
from sweeps.schema import EVENTS_SCHEMA, POINTS_SCHEMA
from sweeps.tuning import tune_allocator


@dataclass(frozen=True)
class TaskResult:
    """What a worker sends back for one task.

    Pickled (to cross Ray's object store) as one Arrow IPC record batch per table, rebuilt
    against the store's schemas: Ray's own pickling of an Arrow table rebuilds each of its ~50
    columns from a payload of its own, ~2 ms to send and ~1 ms to receive per task, more than
    a tiny task's whole simulation; an IPC batch is ~0.05 ms each way. Same values, same schema.
    """

    task_id: int
    points: pa.Table
    events: pa.Table
    cpu_trials: int

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_result, (self.task_id, _to_wire(self.points, POINTS_SCHEMA),
                                  _to_wire(self.events, EVENTS_SCHEMA), self.cpu_trials))


def _to_wire(table: pa.Table, schema: pa.Schema) -> bytes | pa.Table:
    """The table as the bytes of one IPC record batch of ``schema`` (b"" if empty); another schema as is."""
    if not table.schema.equals(schema):
        return table
    if table.num_rows == 0:
        return b""
    return table.combine_chunks().to_batches()[0].serialize().to_pybytes()


def _from_wire(data: bytes | pa.Table, schema: pa.Schema) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if not data:
        return schema.empty_table()
    return pa.Table.from_batches([pa.ipc.read_record_batch(pa.py_buffer(data), schema)])


def _rebuild_result(task_id: int, points: bytes | pa.Table, events: bytes | pa.Table, cpu_trials: int) -> TaskResult:
    return TaskResult(task_id, _from_wire(points, POINTS_SCHEMA), _from_wire(events, EVENTS_SCHEMA), cpu_trials)


def _null_if_nan(x: float) -> float | None:
    return None if x != x else float(x)


def run_task(task: Task, sweep: str, estimator: str = "naive") -> TaskResult:
    """Simulate every shard of the task; one `points` row per shard, one `events` row per bad trial."""
    tune_allocator()
    est = get_estimator(estimator)
    rows: dict[str, list] = {name: [] for name in POINTS_SCHEMA.names}
    ev: dict[str, list] = {name: [] for name in EVENTS_SCHEMA.names}
    for item in task.items:
        point = item.point
        params = point.params
        for k in item.shards:
            t0 = time.perf_counter()
            acc = est.run_shard(
                params, item.shard_size(k), shard_seed(point.point_seed, k),
                lambda chunk: _collect_events(ev, sweep, point.point_id, k, chunk),  # noqa: B023 (called in run_shard)
            )
            row = _points_row(sweep, point, k, acc, time.perf_counter() - t0)
            for name, value in row.items():
                rows[name].append(value)
    return TaskResult(
        task.task_id,
        pa.table(rows, schema=POINTS_SCHEMA),
        pa.table(ev, schema=EVENTS_SCHEMA) if ev["trial"] else EVENTS_SCHEMA.empty_table(),  # most tasks: no events
        task.cpu_trials,
    )


def _points_row(sweep: str, point: Point, shard: int, acc: ShardSummary, wall_s: float) -> dict:
    """One `points` row (SCHEMA.md, plus the estimator and preflush columns)."""
    summary = acc.counts
    n = summary.trials
    early = point.params.early_flush_applies  # not on revision 2's panic path
    return {
        "sweep": sweep,
        "point_id": point.point_id,
        "shard": shard,
        **{name: point.values[name] for name in PARAM_NAMES},
        "trials": n,
        **{o: summary.count(o) for o in OUTCOMES},
        "t_done_sum_us": summary.t_done_sum_us,
        "t_done_max_us": _null_if_nan(summary.t_done_max_us),
        "t_done_hist": summary.hist.tolist(),
        "estimator": acc.estimator,
        **acc.columns(),
        "preflush_sum_us": summary.preflush_sum_us if early else None,
        "preflush_max_us": _null_if_nan(summary.preflush_max_us) if early else None,
        "preflush_hist": summary.preflush_hist.tolist() if early else None,
        "seed": point.point_seed,
        "wall_s": wall_s,
    }


def _collect_events(ev: dict[str, list], sweep: str, point_id: str, shard: int, chunk: Chunk) -> None:
    start, batch = chunk.start, chunk.batch
    idx = np.flatnonzero(event_mask(batch))
    if not idx.size:
        return
    names = np.asarray(OUTCOMES, dtype=object)
    n = idx.size
    ev["sweep"] += [sweep] * n
    ev["point_id"] += [point_id] * n
    ev["shard"] += [shard] * n
    ev["trial"] += (idx + start).tolist()
    ev["outcome"] += names[batch.outcome[idx]].tolist()
    ev["t_done_us"] += [_null_if_nan(x) for x in batch.t_done_us[idx].tolist()]
    ev["nmi_sent"] += batch.nmi_sent[idx].tolist()
    ev["racers"] += batch.racers[idx].tolist()
    ev["overlap_us"] += [_null_if_nan(x) for x in batch.overlap_us[idx].tolist()]
    ev["first_racer_cpu"] += [None if x < 0 else x for x in batch.first_racer_cpu[idx].tolist()]
