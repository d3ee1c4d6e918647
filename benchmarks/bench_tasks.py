"""Per-task overhead: a sweep of tiny shards vs Ray's own no-op task rate, in the same Ray session.

A sweep forced into (almost) one tiny shard per task: n_cpus 2..201, 20 shards of 20 trials
each (4,000 shards), ``task_seconds = 0.00001`` (a budget of 300 CPU-trials, so from n_cpus 15
up every shard is a task of its own). The simulation is ~0.1 ms per shard, so the sweep's rate
is what a task costs beyond its work: Ray, the worker's set-up, building and shipping the rows,
the driver's store. It is run through ``sweeps.run`` (the real runner and store) on an embedded
Ray with ``--cpus`` CPUs (default 2), and compared with no-op tasks through
``cluster.executor.run_map`` on the same session (Ray's own cost per task, at the same
in-flight bound). Both are warmed first (worker processes started, modules imported).

Prints tasks/s of each and their ratio (target: sweep / no-op >= 0.5); never passes or fails
on time. ``--repeat R`` interleaves R rounds of both and reports each (medians too).

    python benchmarks/bench_tasks.py [--cpus 2] [--repeat 3] [--profile]

``--profile`` adds a breakdown of the driver's time per task (time.process_time over the
run, and the store's write_task) so the part that is the driver's is visible.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine  # noqa: E402  (benchmarks/machine.py)
from write_timer import WriteTimer  # noqa: E402  (benchmarks/write_timer.py)

from cluster.connect import session  # noqa: E402
from cluster.executor import run_map  # noqa: E402
from sweeps.grid import iter_tasks  # noqa: E402
from sweeps.runner import run  # noqa: E402
from sweeps.spec import parse_spec  # noqa: E402

SPEC = """
name = "bench-tasks"
seed = 7
trials = {trials}
shard_trials = 20
task_seconds = 0.00001

[axes]
n_cpus = {{ range = [2, 202, 1] }}
"""


def noop(x: int) -> int:
    return x


def noop_rate(n: int) -> float:
    st = run_map(noop, range(n), on_result=lambda t, r: None, progress=False)
    return st.tasks / st.seconds


def tree_cpu() -> dict[str, float]:
    """CPU seconds (user + system) so far of this process and every descendant (Ray's daemons and
    workers), summed by kind: driver, workers, raylet, gcs, other."""
    import psutil

    me = psutil.Process()
    out: dict[str, float] = {}
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            name = " ".join(p.cmdline()[:2])
        except psutil.Error:
            continue
        kind = ("driver" if p.pid == me.pid else "workers" if "default_worker" in name or name.startswith("ray::")
                else "raylet" if "raylet" in name else "gcs" if "gcs_server" in name else "other")
        out[kind] = out.get(kind, 0.0) + t.user + t.system
    return out


def sweep_rate(spec, profile: bool) -> tuple[float, int, str]:
    with tempfile.TemporaryDirectory(prefix="bench-tasks-") as tmp:
        with WriteTimer() as wt:
            c0 = time.process_time()
            k0 = tree_cpu() if profile else {}
            t0 = time.perf_counter()
            rep = run(spec, Path(tmp) / "out", progress=False)
            wall = time.perf_counter() - t0
            cpu = time.process_time() - c0
            k1 = tree_cpu() if profile else {}
    assert rep.complete and rep.stats is not None
    n = rep.stats.tasks
    note = ""
    if profile:
        note = (f"driver CPU {1e3 * cpu / n:.2f} ms/task (store write_task {1e3 * wt.seconds / max(wt.n, 1):.2f} ms), "
                f"worker time in run_task {1e3 * rep.stats.worker_seconds / n:.2f} ms/task, "
                f"run() wall incl. open/finish {wall:.2f} s vs run_map {rep.stats.seconds:.2f} s\n"
                "         CPU ms per task by process (all of this session's): "
                + ", ".join(f"{k} {1e3 * (k1[k] - k0.get(k, 0.0)) / n:.2f}" for k in sorted(k1))
                + f"; total {1e3 * (sum(k1.values()) - sum(k0.values())) / n:.2f} over {wall:.1f} s x 2 cores")
    return n / rep.stats.seconds, n, note


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--trials", type=int, default=400, help="trials per point (20 per shard; default 400: 4,000 shards)")
    ap.add_argument("--noop", type=int, default=3000, help="no-op tasks per round")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--batch-s", type=float, default=None,
                    help="override the runner's batch_s (0: one Ray call per task) to see what batching buys")
    args = ap.parse_args(argv)
    if args.batch_s is not None:
        import sweeps.runner

        sweeps.runner.BATCH_S = args.batch_s or None  # type: ignore[attr-defined]

    import ray

    spec = parse_spec(SPEC.format(trials=args.trials))
    tasks = list(iter_tasks(spec))
    shards = sum(len(it.shards) for t in tasks for it in t.items)
    print("# bench_tasks ", machine(f"Ray {ray.__version__}"))
    print(f"spec: {spec.n_points} points (n_cpus 2..201) x {spec.n_shards_per_point} shards of {spec.shard_trials} "
          f"trials = {shards:,} shards in {len(tasks):,} tasks (task_seconds = {spec.task_seconds:g})")
    with session(num_cpus=args.cpus):
        noop_rate(200)  # start the workers, import what no-op tasks need
        small = parse_spec(SPEC.format(trials=40))
        sweep_rate(small, False)  # the workers import the simulator once
        rows = []
        for r in range(args.repeat):
            nr = noop_rate(args.noop)
            sr, n, note = sweep_rate(spec, args.profile)
            rows.append((sr, nr))
            print(f"round {r + 1}: tiny-shard sweep {sr:7.0f} tasks/s ({n} tasks)   Ray no-op tasks {nr:7.0f} tasks/s"
                  f"   ratio {sr / nr:.2f}")
            if note:
                print(f"         {note}")
    if args.repeat > 1:
        med_s = statistics.median(r[0] for r in rows)
        med_n = statistics.median(r[1] for r in rows)
        print(f"median : tiny-shard sweep {med_s:7.0f} tasks/s   Ray no-op tasks {med_n:7.0f} tasks/s   "
              f"ratio {statistics.median(r[0] / r[1] for r in rows):.2f}")
    print("target: tiny-shard sweep / Ray no-op >= 0.5; per task beyond Ray's own: "
          f"{1e3 * (1 / rows[-1][0] - 1 / rows[-1][1]):.2f} ms (last round)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
