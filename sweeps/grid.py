"""Grid expansion (points with canonical ids and seeds) and task planning.

Everything here is lazy: points come from itertools.product over the axis
values (first axis slowest, axes in the spec's canonical order), and tasks are
packed from that stream, so planning 10^7 points never builds a list of them.

Canonical point (SCHEMA.md): ``core.params.identity_dict(canonical_dict(params))``
(every parameter, except one added after the first release while it has its
neutral value, so adding a parameter changes no id or seed) as sorted compact
JSON with floats in repr form; ``point_id`` is the first 16 hex digits
of its SHA-256; ``point_seed(seed, point_id)`` the first 8 bytes (big-endian) of
SHA-256 of ``f"{seed}:{point_id}"``. The JSON is assembled from per-value
fragments computed once per spec (equal, byte for byte, to
``canonical_point_json(canonical_dict(p))``; the
tests check that), which is what makes planning fast.

Task planning (``iter_tasks``) is deterministic from the spec and the planning
constants (``plan_signature``): walking points in order and each point's shards
in order, shards are appended to the current task until its estimated cost
(sum of ``n_cpus * shard trials``) would exceed ``task_seconds *
cpu_trials_per_s`` (or 1/MIN_TASKS of the whole sweep, whichever is smaller) or it holds ``max_shards`` shards; then the next task starts.
A shard costlier than the whole budget gets a task of its own. Task ids are
0, 1, 2, ... in that order. Resume relies on this: planning a dir again must
use the same constants (the store records them, see sweeps.store).

Points, TaskItems and Tasks are frozen dataclasses of plain values, cheap to
pickle for Ray; ``Point.params`` rebuilds the pydantic Params on demand.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from core.cost import cpu_trials
from core.params import PARAM_NAMES, Params, identity_dict, is_neutral
from core.vectorized import STREAM_VERSION
from sweeps.spec import SweepSpec

__all__ = [
    "Point",
    "TaskItem",
    "Task",
    "DEFAULT_CPU_TRIALS_PER_S",
    "MAX_SHARDS_PER_TASK",
    "PLANNER_VERSION",
    "canonical_point_json",
    "point_id_of",
    "point_seed",
    "iter_points",
    "point_at",
    "iter_tasks",
    "plan_signature",
    "total_cpu_trials",
    "total_shards",
]

DEFAULT_CPU_TRIALS_PER_S = 3e7
"""Planning estimate of simulated CPU-trials per second per core (n_cpus x trials)."""
MAX_SHARDS_PER_TASK = 10_000
PLANNER_VERSION = 2
MIN_TASKS = 64
"""A sweep smaller than MIN_TASKS x task_seconds is cut into about MIN_TASKS tasks
(never below one shard each), so small sweeps still balance across a cluster."""


@dataclass(frozen=True)
class Point:
    """One grid point: its position in the grid, canonical id, seed and every parameter value."""

    index: int
    point_id: str
    point_seed: int
    values: dict[str, Any]
    """All parameters (canonical types, PARAM_NAMES order): canonical_dict(params)."""

    @property
    def params(self) -> Params:
        """The pydantic Params (values were validated when the spec was parsed)."""
        return Params.model_construct(**self.values)

    @property
    def n_cpus(self) -> int:
        return int(self.values["n_cpus"])

    def __hash__(self) -> int:
        return hash((self.index, self.point_id))

    def __reduce__(self) -> tuple[Any, ...]:
        # compact pickles for Ray: values as a tuple in PARAM_NAMES order, no keys
        return (_rebuild_point, (self.index, self.point_id, self.point_seed, tuple(self.values[k] for k in PARAM_NAMES)))


def _rebuild_point(index: int, point_id: str, seed: int, values: tuple[Any, ...]) -> Point:
    return Point(index, point_id, seed, dict(zip(PARAM_NAMES, values)))


@dataclass(frozen=True)
class TaskItem:
    """Shards ``first .. stop-1`` of one point.

    ``trials`` is the point's total and ``shard_trials`` the spec's shard size, so
    shard k holds ``min(shard_trials, trials - k * shard_trials)`` trials.
    """

    point: Point
    first: int
    stop: int
    shard_trials: int
    trials: int

    def __reduce__(self) -> tuple[Any, ...]:
        return (TaskItem, (self.point, self.first, self.stop, self.shard_trials, self.trials))

    @property
    def shards(self) -> range:
        return range(self.first, self.stop)

    @property
    def n_shards(self) -> int:
        return self.stop - self.first

    def shard_size(self, k: int) -> int:
        if not self.first <= k < self.stop:
            raise IndexError(f"shard {k} not in this item ({self.first}..{self.stop - 1})")
        return min(self.shard_trials, self.trials - k * self.shard_trials)

    def shard_sizes(self) -> tuple[int, ...]:
        return tuple(self.shard_size(k) for k in self.shards)

    @property
    def n_trials(self) -> int:
        return min(self.trials, self.stop * self.shard_trials) - self.first * self.shard_trials

    @property
    def cpu_trials(self) -> int:
        return cpu_trials(self.point.n_cpus, self.n_trials)


@dataclass(frozen=True)
class Task:
    """A unit of work for one worker: one or more (point, shard range) items."""

    task_id: int
    items: tuple[TaskItem, ...]

    @property
    def n_shards(self) -> int:
        return sum(it.n_shards for it in self.items)

    @property
    def n_trials(self) -> int:
        return sum(it.n_trials for it in self.items)

    @property
    def cpu_trials(self) -> int:
        return sum(it.cpu_trials for it in self.items)


# ---- canonical point ------------------------------------------------------------------


def _frag(name: str, v: Any) -> str:
    """`"name":value` of the canonical point JSON, or "" where the value is left out of the identity."""
    if is_neutral(name, v):
        return ""
    return json.dumps(name) + ":" + json.dumps(v, allow_nan=False)


def canonical_point_json(values: dict[str, Any]) -> str:
    """Sorted compact JSON of a point's identity (core.params.identity_dict; floats in repr form)."""
    return json.dumps(identity_dict(values), sort_keys=True, separators=(",", ":"), allow_nan=False)


def point_id_of(canonical_json: str) -> str:
    """First 16 hex digits of the SHA-256 of a canonical point JSON."""
    return hashlib.sha256(canonical_json.encode()).hexdigest()[:16]


def point_seed(seed: int, point_id: str) -> int:
    """uint64 seed of a point: first 8 bytes, big-endian, of SHA-256(f"{seed}:{point_id}")."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{point_id}".encode()).digest()[:8], "big")


class _Expander:
    """Precomputed per-value JSON fragments so each point costs a join and a hash."""

    def __init__(self, spec: SweepSpec) -> None:
        self.spec = spec
        self.axis_names = [a.name for a in spec.axes]
        self.axis_values = [a.values for a in spec.axes]
        self.axis_frags = [[_frag(a.name, v) for v in a.values] for a in spec.axes]
        order = sorted(PARAM_NAMES)
        # template of JSON fragments in sorted key order; axis slots are filled per point
        self.parts = [_frag(k, spec.base[k]) if k in spec.base else "" for k in order]  # "" = not in the JSON
        self.slots = [order.index(n) for n in self.axis_names]
        self.template = {k: spec.base.get(k) for k in PARAM_NAMES}
        self.seed_prefix = f"{spec.seed}:".encode()

    def make(self, index: int, combo: tuple[int, ...]) -> Point:
        parts = self.parts
        values = dict(self.template)
        for j, i in enumerate(combo):
            parts[self.slots[j]] = self.axis_frags[j][i]
            values[self.axis_names[j]] = self.axis_values[j][i]
        pid = hashlib.sha256(("{" + ",".join(filter(None, parts)) + "}").encode()).hexdigest()[:16]
        pseed = int.from_bytes(hashlib.sha256(self.seed_prefix + pid.encode()).digest()[:8], "big")
        return Point(index, pid, pseed, values)


def iter_points(spec: SweepSpec) -> Iterator[Point]:
    """Every point of the grid, lazily, in order (first axis slowest); index = 0, 1, 2, ..."""
    ex = _Expander(spec)
    combos = itertools.product(*(range(len(v)) for v in ex.axis_values))
    for index, combo in enumerate(combos):
        yield ex.make(index, combo)


def point_at(spec: SweepSpec, index: int) -> Point:
    """The point with this grid index, without iterating (mixed-radix decoding)."""
    n = spec.n_points
    if not 0 <= index < n:
        raise IndexError(f"point index {index} out of range 0..{n - 1}")
    combo = []
    rest = index
    for vals in reversed([a.values for a in spec.axes]):
        rest, i = divmod(rest, len(vals))
        combo.append(i)
    return _Expander(spec).make(index, tuple(reversed(combo)))


# ---- totals ----------------------------------------------------------------------------


def total_cpu_trials(spec: SweepSpec) -> int:
    """Sum over points of core.cost.cpu_trials (n_cpus x trials), from the axes alone (no iteration)."""
    sizes = {a.name: len(a.values) for a in spec.axes}
    if "n_cpus" in sizes:
        cpu_sum = sum(next(a.values for a in spec.axes if a.name == "n_cpus"))
        others = math.prod(v for k, v in sizes.items() if k != "n_cpus")
    else:
        cpu_sum = int(spec.base["n_cpus"])
        others = math.prod(sizes.values())
    return cpu_trials(cpu_sum, spec.trials) * others


def total_shards(spec: SweepSpec) -> int:
    return spec.n_points * spec.n_shards_per_point


# ---- tasks -----------------------------------------------------------------------------


def plan_signature(
    cpu_trials_per_s: float = DEFAULT_CPU_TRIALS_PER_S, max_shards: int = MAX_SHARDS_PER_TASK, min_tasks: int = MIN_TASKS
) -> dict[str, Any]:
    """The planning constants that, with the spec, fix the task ids (recorded by the store)."""
    return {
        "planner": PLANNER_VERSION,
        "streams": STREAM_VERSION,
        "cpu_trials_per_s": float(cpu_trials_per_s),
        "max_shards": int(max_shards),
        "min_tasks": int(min_tasks),
    }


def iter_tasks(
    spec: SweepSpec,
    cpu_trials_per_s: float = DEFAULT_CPU_TRIALS_PER_S,
    max_shards: int = MAX_SHARDS_PER_TASK,
    min_tasks: int = MIN_TASKS,
) -> Iterator[Task]:
    """Tasks covering every (point, shard) exactly once, lazily, ids 0, 1, 2, ...

    Each task is sized to about ``spec.task_seconds`` at ``cpu_trials_per_s``
    (estimated cost n_cpus x trials), holds at most ``max_shards`` shards, and
    a big point is split across tasks by whole shards (see the module docstring).
    """
    if not (cpu_trials_per_s > 0 and math.isfinite(cpu_trials_per_s)):
        raise ValueError(f"cpu_trials_per_s = {cpu_trials_per_s!r} must be a finite number > 0")
    if max_shards < 1:
        raise ValueError(f"max_shards = {max_shards!r} must be >= 1")
    budget = min(spec.task_seconds * cpu_trials_per_s, total_cpu_trials(spec) / max(min_tasks, 1))
    st, trials = spec.shard_trials, spec.trials
    n_sh = spec.n_shards_per_point
    last_size = trials - (n_sh - 1) * st

    task_id = 0
    items: list[TaskItem] = []
    cost = 0.0  # estimated cpu-trials in `items`
    count = 0  # shards in `items`

    for p in iter_points(spec):
        c_full = cpu_trials(p.n_cpus, st)
        c_last = cpu_trials(p.n_cpus, last_size)
        k = 0
        while k < n_sh:
            # how many whole shards k.. fit into the current task (at least one if it is empty)
            room_sh = max_shards - count
            room = budget - cost
            full_left = n_sh - 1 - k  # full-size shards before the last one
            take = min(full_left, int(room // c_full) if c_full > 0 else full_left, room_sh)
            take = max(take, 0)
            if take == full_left and take < room_sh and cost + take * c_full + c_last <= budget:
                take += 1  # the last (possibly smaller) shard fits too
            if take == 0:
                if count:
                    yield Task(task_id, tuple(items))
                    task_id += 1
                    items, cost, count = [], 0.0, 0
                    continue
                take = 1  # an empty task takes one shard whatever it costs
            stop = k + take
            items.append(TaskItem(p, k, stop, st, trials))
            cost += (take - (stop == n_sh)) * c_full + (c_last if stop == n_sh else 0)
            count += take
            k = stop
    if count:
        yield Task(task_id, tuple(items))
