"""Planning figures of the example sweeps quoted in RESULTS.md ("Scaling to 1000 CPUs").

No Ray, no simulation: the planner (sweeps.grid.iter_tasks) at its default rate, for
`examples/tdx-kexec-cluster.toml` at its own task_seconds and at 10 s, and the results
rate one driver would have to take on 1000 CPUs. Cost unit: core.cost (trials x n_cpus).

    python benchmarks/bench_plan.py [--cpus 1000] [--task-seconds 10]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.cost import UNIT  # noqa: E402
from sweeps.grid import DEFAULT_CPU_TRIALS_PER_S, iter_tasks  # noqa: E402
from sweeps.spec import load_spec  # noqa: E402


def plan(spec) -> tuple[int, int, int]:
    """(tasks, shards, CPU-trials) of the spec's plan."""
    tasks = shards = work = 0
    for t in iter_tasks(spec):
        tasks += 1
        shards += t.n_shards
        work += t.cpu_trials
    return tasks, shards, work


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpus", type=int, default=1000)
    ap.add_argument("--task-seconds", type=float, default=10.0)
    a = ap.parse_args(argv)
    path = ROOT / "examples" / "tdx-kexec-cluster.toml"
    spec = load_spec(path)
    print(f"planner rate {DEFAULT_CPU_TRIALS_PER_S:.3g} {UNIT}/s per core")
    for ts in (spec.task_seconds, a.task_seconds):
        s = spec.model_copy(update={"task_seconds": ts})
        tasks, shards, work = plan(s)
        mean_s = work / DEFAULT_CPU_TRIALS_PER_S / tasks
        print(f"{path.name} task_seconds={ts:g}: {tasks:,} tasks, {shards / tasks:.2f} shards per task, "
              f"mean task {mean_s:.1f} s -> {a.cpus / mean_s:.0f} results/s on {a.cpus} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
