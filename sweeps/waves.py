"""Adaptive sweeps (`trials = "auto"`): per-point waves of shards and the tasks that run them.

A point's shards are the fixed spec's (shard k has the trials and the seed it would
have with trials = max_trials), run in waves whose cumulative shard counts grow
geometrically: ``wave_bounds`` = b_0 = ceil(min_trials / shard_trials), b_{j+1} =
min(M, GROWTH x b_j), ..., M = ceil(max_trials / shard_trials). Once every shard of
wave j (shards 0 .. b_j - 1) is stored, the stop rule (core.precision) is applied to
exactly those shards: a decided point stops, an open one gets wave j + 1. Each wave is one
look; there are len(wave_bounds) <= core.precision.max_looks(rule) of them, and the rule
reads its target decisions at core.precision.look_conf(rule), the 5% error rate spent over
that many looks (Bonferroni), so a point's "below target" / "above target" holds at 95%
overall, whichever wave decides it.

Why the stored rows are a deterministic function of the spec: a decision reads only
the shards of complete waves, pooled in shard order, never "whatever has arrived";
shard rows depend only on (point, shard). So completion order, a resume after a
kill at any instant, or another cluster give the same decisions and the same rows.
Waves are per point (no global barrier): a point's next wave is queued as soon as
its own previous wave is complete, so the CPUs stay busy while slow points finish.

Tasks: wave 0 of every point is packed across points like a fixed sweep with
trials = b_0 (sweeps.grid.iter_tasks); later waves are tasks of one point, cut by
the same cost budget. A task's id is ``point index x M + its first shard``: unique
(items never overlap) and the same on every run. Which tasks are done is read from
the stored rows (a task is stored whole or not at all), so this module needs from
the store only the rows of its committed tasks.

``WavePlan`` is the pure state machine (no Ray, no I/O): feed it stored rows
(``add_rows``), take the runnable tasks (``take``), and after each task's rows
(``task_done``) take again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pyarrow as pa

from core.estimators import ESTIMATE_COLUMNS
from core.precision import DECIDED, OPEN, PointTally, ShardStats
from sweeps.grid import (
    DEFAULT_CPU_TRIALS_PER_S,
    MAX_SHARDS_PER_TASK,
    Point,
    Task,
    TaskItem,
    iter_points,
    iter_tasks,
    plan_signature,
)
from sweeps.spec import SweepSpec

__all__ = ["GROWTH", "STATS_COLUMNS", "WAVES_VERSION", "WavePlan", "task_id_of", "wave_bounds", "wave_plan_signature"]

GROWTH = 2
"""Cumulative shards per point grow by this factor per wave."""
WAVES_VERSION = 1
"""Recorded in the store's plan: another wave layout would change which tasks exist."""
STATS_COLUMNS: tuple[str, ...] = (
    "point_id", "shard", "trials", "race", "hang", "timeout",
    "estimator", *ESTIMATE_COLUMNS,
)
"""The `points` columns the stop rule reads."""


def wave_bounds(spec: SweepSpec) -> list[int]:
    """Cumulative shard counts after each wave: b_0 < b_1 < ... = shards at max_trials."""
    rule = spec.precision
    if rule is None:
        raise ValueError("wave_bounds needs a spec with trials = \"auto\"")
    m = spec.n_shards_per_point
    b = min(m, max(1, -(-rule.min_trials // spec.shard_trials)))
    out = [b]
    while b < m:
        b = min(m, b * GROWTH)
        out.append(b)
    return out


def wave_plan_signature() -> dict[str, Any]:
    """plan_signature() plus the wave layout: what fixes an adaptive sweep's task ids (recorded by the store)."""
    return {**plan_signature(), "waves": WAVES_VERSION, "growth": GROWTH}


def task_id_of(spec: SweepSpec, point_index: int, first_shard: int) -> int:
    """The id of the task whose first item starts at (point, shard)."""
    return point_index * spec.n_shards_per_point + first_shard


class WavePlan:
    """Per-point wave state of one adaptive sweep (see the module docstring).

    Grid mode (default): the spec's grid points, wave 0 packed across points.
    Dynamic mode (``dynamic=True``, used by sweeps.search): no points until
    ``add_point``; each point's wave 0 is its own tasks; stored rows of points
    not added yet are kept until they are; ``on_decided(point, status)`` is
    called once per point when it is decided (it may add points).
    """

    def __init__(
        self,
        spec: SweepSpec,
        cpu_trials_per_s: float = DEFAULT_CPU_TRIALS_PER_S,
        max_shards: int = MAX_SHARDS_PER_TASK,
        *,
        dynamic: bool = False,
        on_decided: Callable[[Point, str], None] | None = None,
    ) -> None:
        if spec.precision is None:
            raise ValueError("WavePlan needs a spec with trials = \"auto\"")
        self.spec = spec
        self.rule = spec.precision
        self.bounds = wave_bounds(spec)
        self.budget = spec.task_seconds * cpu_trials_per_s
        self.cpu_trials_per_s = cpu_trials_per_s
        self.max_shards = max_shards
        self.dynamic = dynamic
        self.on_decided = on_decided
        self.points: dict[int, Point] = {}
        self._by_id: dict[str, int] = {}
        self.tallies: dict[int, PointTally] = {}
        self.wave: dict[int, int] = {}
        """Index of the wave each point is in (its shards 0 .. bounds[wave] - 1 are scheduled)."""
        self.status: dict[int, str] = {}
        self._orphans: dict[str, list[dict]] = {}
        self._queue: deque[Task] = deque()
        self._started = False
        self.open_points = 0
        if not dynamic:
            for p in iter_points(spec):
                self._register(p)

    # ---- feeding -------------------------------------------------------------------------
    def _register(self, p: Point) -> None:
        if p.index in self.points:
            raise ValueError(f"point index {p.index} added twice")
        self.points[p.index] = p
        self._by_id[p.point_id] = p.index
        self.tallies[p.index] = PointTally.for_params(p.values)
        self.wave[p.index] = 0
        self.status[p.index] = OPEN
        self.open_points += 1

    def add_point(self, p: Point) -> None:
        """Dynamic mode: a new point to run adaptively (its stored rows, if any, count at once)."""
        if not self.dynamic:
            raise ValueError("add_point is for a dynamic WavePlan")
        self._register(p)
        for row in self._orphans.pop(p.point_id, ()):
            self.tallies[p.index].add(int(row["shard"]), ShardStats.from_row(row))
        if self._started:
            self._queue_unstored(self._wave_tasks(p.index, 0))
            self._advance(p.index)

    def add_rows(self, table: pa.Table) -> set[int]:
        """Record stored `points` rows; returns the indices of the points they touch."""
        cols = [c for c in STATS_COLUMNS if c in table.column_names]
        touched: set[int] = set()
        for row in table.select(cols).to_pylist():
            i = self._by_id.get(row["point_id"])
            if i is None:
                if not self.dynamic:
                    raise ValueError(f"stored row of point {row['point_id']} is not a point of this spec")
                self._orphans.setdefault(row["point_id"], []).append(row)
                continue
            self.tallies[i].add(int(row["shard"]), ShardStats.from_row(row))
            touched.add(i)
        return touched

    def start(self) -> None:
        """Queue every task not stored yet: wave-0 tasks and, for points already past wave 0, theirs."""
        self._started = True
        if self.dynamic:
            for i in sorted(self.points):
                self._queue_unstored(self._wave_tasks(i, 0))
        else:
            self._queue_unstored(self._wave0_tasks())
        for i in sorted(self.points):
            self._advance(i)

    def task_done(self, table: pa.Table) -> None:
        """A task's rows were stored: record them and queue the next waves of points that completed one."""
        for i in sorted(self.add_rows(table)):
            self._advance(i)

    # ---- taking --------------------------------------------------------------------------
    def take(self) -> Task | None:
        """The next runnable task, or None if none is runnable now."""
        if not self._started:
            self.start()
        return self._queue.popleft() if self._queue else None

    @property
    def finished(self) -> bool:
        """Every point is decided (and so every task it needs is stored)."""
        return self.open_points == 0

    def iter_tasks(self, wait: Any) -> Iterator[Any]:
        """Tasks for cluster.executor.run_map: `wait` when none is runnable until a result arrives."""
        while True:
            t = self.take()
            if t is not None:
                yield t
            elif self.finished:
                return
            else:
                yield wait

    # ---- internals -----------------------------------------------------------------------
    def _stored(self, task: Task) -> bool:
        return all(k in self.tallies[it.point.index].shards for it in task.items for k in it.shards)

    def _queue_unstored(self, tasks: Iterable[Task]) -> None:
        self._queue.extend(t for t in tasks if not self._stored(t))

    def _wave0_tasks(self) -> Iterator[Task]:
        spec = self.spec
        b0 = self.bounds[0]
        first = spec.model_copy(update={"trials": min(spec.trials, b0 * spec.shard_trials), "precision": None})
        for t in iter_tasks(first, self.cpu_trials_per_s, self.max_shards):
            items = tuple(TaskItem(it.point, it.first, it.stop, spec.shard_trials, spec.trials) for it in t.items)
            yield Task(task_id_of(spec, items[0].point.index, items[0].first), items)

    def _wave_tasks(self, i: int, j: int) -> list[Task]:
        """Tasks of wave j of point i (its shards bounds[j-1] .. bounds[j]-1), cut by the cost budget."""
        spec = self.spec
        p = self.points[i]
        a, b = (self.bounds[j - 1] if j else 0), self.bounds[j]
        per = max(1, min(self.max_shards, int(self.budget // max(p.n_cpus * spec.shard_trials, 1))))
        out = []
        for k in range(a, b, per):
            stop = min(b, k + per)
            out.append(Task(task_id_of(spec, i, k), (TaskItem(p, k, stop, spec.shard_trials, spec.trials),)))
        return out

    def _advance(self, i: int) -> None:
        """Decide point i on every complete wave; queue the next wave's unstored tasks if it stays open."""
        if self.status[i] in DECIDED:
            return
        tally = self.tallies[i]
        while tally.has_all(self.bounds[self.wave[i]]):
            j = self.wave[i]
            status = tally.status(self.rule, upto=self.bounds[j])
            if status in DECIDED:
                self.status[i] = status
                self.open_points -= 1
                if self.on_decided is not None:
                    self.on_decided(self.points[i], status)
                return
            if j + 1 >= len(self.bounds):  # pragma: no cover - the last bound is max_trials: exhausted
                raise AssertionError("open point at max_trials")
            self.wave[i] = j + 1
            self._queue_unstored(self._wave_tasks(i, j + 1))

    def summary(self) -> dict[str, int]:
        """How many points have each status now."""
        out: dict[str, int] = {}
        for s in self.status.values():
            out[s] = out.get(s, 0) + 1
        return out
