"""Run-size guards: what a run will cost, said before it starts, and the bounds past which it needs --force.

A spec inside every parameter's domain can still ask for years of CPU time (``trials = 1e15``
plans ~2e13 shards); a command that starts such a run silently looks hung. So every run first
says what it is about to do (points, CPU-trials, tasks, CPUs, an ETA), and one above
``MAX_CPU_TRIALS`` or ``MAX_TASKS`` is refused unless forced. The same bound applies to
``stoprace simulate``. Pure functions of the spec and a CPU count: no Ray, no I/O.

A ``[search]`` spec has no n_cpus axis: its probes are points at n_cpus between the search
limits, and how many a combination gets depends on the answers. It is sized at its most
(``search_probe_bound``: the longest bisection the limits allow, every probe at max_trials),
never at the base n_cpus its grid carries.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache

from core.cost import cpu_trials as _cpu_trials
from sweeps.grid import DEFAULT_CPU_TRIALS_PER_S, MAX_SHARDS_PER_TASK, MIN_TASKS, total_cpu_trials
from sweeps.spec import SpecError, SweepSpec

__all__ = [
    "MAX_CPU_TRIALS",
    "MAX_TASKS",
    "ESTIMATOR_COST",
    "IN_PROCESS_CPU_S",
    "planned_cpu_s",
    "RunPlan",
    "estimated_tasks",
    "planned_cpu_trials",
    "search_probe_bound",
    "check_size",
    "size_problem",
    "simulate_eta_s",
    "machine_cpus",
    "format_seconds",
    "approx",
]

MAX_CPU_TRIALS = 10**13
"""More CPU-trials (n_cpus x trials summed over points) than this needs --force: ~90 CPU-hours
at the naive estimator's ~3e7 CPU-trials/s per CPU (benchmarks/RESULTS.md), days on a laptop."""
MAX_TASKS = 10**6
"""More tasks than this needs --force: one driver stores ~150-250 tasks/s (README, "Scale"),
so 1e6 tasks are over an hour of driver time whatever the CPUs."""
ESTIMATOR_COST = {"naive": 1.0, "cmc": 6.0, "late": 0.03}
"""CPU time of a trial relative to naive, for the ETA only (RESULTS.md: a cmc trial costs ~5.7x;
a late one 1/30 at 64 CPUs, less at more, more where many CPUs miss the 1 s wait)."""
IN_PROCESS_CPU_S = 2.0
"""A sweep planned below this many CPU-seconds (`planned_cpu_s`) runs in the driver's own process without
starting Ray (sweeps.runner), unless an address, a worker count or a Ray session up says where: Ray's
start-up (several seconds) would dwarf it."""


def planned_cpu_s(cpu_trials: float, estimator: str = "naive") -> float:
    """CPU-seconds `cpu_trials` take at the planner's calibrated rate per CPU (the ETA's rate)."""
    return cpu_trials / (DEFAULT_CPU_TRIALS_PER_S / ESTIMATOR_COST.get(estimator, 1.0))


@dataclass(frozen=True)
class RunPlan:
    """What a run is about to do, for the line printed when it starts."""

    name: str
    n_points: int
    cpu_trials: int
    """n_cpus x trials over the whole sweep."""
    remaining_cpu_trials: int
    """Of those, the ones not stored yet."""
    n_tasks: int
    tasks_exact: bool
    """False: n_tasks is the planner's estimate (counting exactly would walk every point)."""
    tasks_stored: int
    cpus: int
    where: str
    """'embedded Ray' or 'the cluster at HEAD:PORT' (plus a note on token auth)."""
    estimator: str = "naive"
    adaptive: bool = False
    """trials = "auto": the sizes are the most it may run (every point at max_trials)."""

    @property
    def eta_s(self) -> float:
        """Seconds at the planner's rate per CPU (an estimate: the real rate depends on the parameters)."""
        return planned_cpu_s(self.remaining_cpu_trials, self.estimator) / max(self.cpus, 1)

    def line(self) -> str:
        """One line: size, tasks, where, ETA."""
        tasks = f"{self.n_tasks:,}" if self.tasks_exact else f"~{approx(self.n_tasks)}"
        stored = f" ({self.tasks_stored:,} stored)" if self.tasks_stored else ""
        most = "up to " if self.adaptive else ""
        return (
            f"{self.name}: {self.n_points:,} points, {most}{approx(self.cpu_trials)} CPU-trials, {most}{tasks} tasks"
            f"{stored}; running {most}{approx(self.remaining_cpu_trials)} CPU-trials on {self.cpus} CPU{'s' if self.cpus != 1 else ''} ({self.where}), "
            f"ETA {format_seconds(self.eta_s, about=True)}"
        )


@lru_cache(maxsize=256)
def search_probe_bound(lo: int, hi: int) -> tuple[int, int]:
    """(most probes, most n_cpus summed over them) of one combination's bisection on [lo, hi].

    The two ends, then midpoints (sweeps.search.midpoint) until the bracket is resolved; which
    half is kept depends on the answers, so this takes the worse half at every step.
    """
    from sweeps.search import midpoint, resolved  # the search's own rules; sweeps.search loads pyarrow

    @lru_cache(maxsize=None)
    def worst(a: int, b: int) -> tuple[int, int]:
        if resolved(a, b):
            return 0, 0
        m = midpoint(a, b)
        left, right = worst(a, m), worst(m, b)
        return 1 + max(left[0], right[0]), m + max(left[1], right[1])

    probes, cpus = worst(lo, hi)
    return 2 + probes, lo + hi + cpus


def planned_cpu_trials(spec: SweepSpec) -> int:
    """CPU-trials a run of ``spec`` may take at most: the grid's (sweeps.grid.total_cpu_trials),
    or for a [search] spec every combination's longest bisection with each probe at max_trials."""
    if spec.search is None:
        return total_cpu_trials(spec)
    _, cpus = search_probe_bound(spec.search.lo, spec.search.hi)
    return spec.n_points * _cpu_trials(cpus, spec.trials)


def estimated_tasks(spec: SweepSpec) -> int:
    """About how many tasks sweeps.grid.iter_tasks plans, without walking the points.

    The planner packs shards into tasks up to a CPU-trials budget (at most MAX_SHARDS_PER_TASK
    each) and gives a shard costlier than the budget a task of its own; this follows that per
    n_cpus value. Packing across point boundaries makes the real count differ by a few percent.
    A [search] spec counts its most probes per combination, each sized at the upper limit.
    """
    total = planned_cpu_trials(spec)
    budget = min(spec.task_seconds * DEFAULT_CPU_TRIALS_PER_S, total / MIN_TASKS)
    axis = next((a for a in spec.axes if a.name == "n_cpus"), None)
    values = [int(v) for v in axis.values] if axis is not None else [int(spec.base["n_cpus"])]
    per_value = spec.n_points // len(values)  # points with each n_cpus value
    if spec.search is not None:
        probes, _ = search_probe_bound(spec.search.lo, spec.search.hi)
        values, per_value = [spec.search.hi], spec.n_points * probes
    shards = per_value * len(values) * spec.n_shards_per_point
    tasks = 0.0
    for v in values:
        shards_per_task = max(1, min(int(budget // (v * spec.shard_trials)), MAX_SHARDS_PER_TASK))
        tasks += per_value * spec.n_shards_per_point / shards_per_task  # tasks hold whole shards
    return int(min(shards, max(math.ceil(tasks), math.ceil(shards / MAX_SHARDS_PER_TASK), 1)))


def size_problem(cpu_trials: int, tasks: int | None = None) -> str | None:
    """Why a run of this size needs --force (one clause), or None if it is within the guards."""
    if cpu_trials > MAX_CPU_TRIALS:
        return (
            f"{approx(cpu_trials)} CPU-trials (n_cpus x trials) is above {approx(MAX_CPU_TRIALS)}, "
            f"{format_seconds(cpu_trials / DEFAULT_CPU_TRIALS_PER_S, about=True)} of CPU time"
        )
    if tasks is not None and tasks > MAX_TASKS:
        return f"~{approx(tasks)} tasks is above {approx(MAX_TASKS)} (one driver stores ~200 tasks/s)"
    return None


def check_size(spec: SweepSpec, force: bool = False) -> None:
    """SpecError (one line) if the sweep is above MAX_CPU_TRIALS or MAX_TASKS and not forced."""
    if force:
        return
    why = size_problem(planned_cpu_trials(spec), estimated_tasks(spec))
    if why:
        raise SpecError(
            f"{spec.name}: {why}; lower trials or the axes (or raise task_seconds/shard_trials for tasks), "
            f"or pass --force"
        )


def simulate_eta_s(cpu_trials: int, estimator: str = "naive") -> float:
    """Seconds `stoprace simulate` (one process) takes for this many CPU-trials, estimated."""
    return cpu_trials * ESTIMATOR_COST.get(estimator, 1.0) / DEFAULT_CPU_TRIALS_PER_S


def machine_cpus() -> int:
    """CPUs this process may use (its affinity mask: a container's or taskset's limit, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def approx(x: float) -> str:
    """A count for people: 123,456 below a million, else 3 digits and a power of ten (1.04e9)."""
    if x < 1e6:
        return f"{int(x):,}"
    mant, exp = f"{x:.2e}".split("e")
    return f"{float(mant):g}e{int(exp)}"


def format_seconds(s: float, about: bool = False) -> str:
    """'12 s', '35 min', '21 h', '4.2 days', '3.1e+03 years': the largest unit that reads well ("~" first if about)."""
    if not math.isfinite(s):
        return "forever"
    if s < 1:
        return "< 1 s"
    if about:
        return "~" + format_seconds(s)
    if s < 100:
        return f"{s:.2g} s" if s < 10 else f"{s:.0f} s"
    for unit, size, below in (("min", 60, 7200), ("h", 3600, 2 * 86400), ("days", 86400, 2 * 365.25 * 86400)):
        if s < below:
            return f"{s / size:.3g} {unit}"
    years = s / (365.25 * 86400)
    return f"{years:.3g} years" if years < 1e4 else f"{years:.1e} years"
