"""How many task results per second does the result store take, and how many files does it leave?

A no-op simulation: each task's `points` rows (real schema, one row per shard, histograms
like real shards) are built from the task itself without simulating, so only storing is
measured. Two figures:

- store: `ResultStore.write_task` in a loop in this process (the driver's whole share of
  a result: conform, buffer, segment writes, commits, merges), then `finish`;
- ray: the same no-op tasks through `cluster.executor.run_map` on an embedded Ray
  (workers build the tables, the driver stores them), i.e. the driver's full loop.

Prints results/s, committed files, bytes, and the peak RSS growth of this process during
the store phase (the driver memory the store needs). Results per driver CPU-second is the
figure that holds on a loaded machine (wall time there measures the neighbours). Never
passes or fails on time.

    python benchmarks/bench_store.py [--tasks 20000] [--shards-per-task 2] [--ray] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
from machine import machine  # noqa: E402  (benchmarks/machine.py)

from core.histogram import N_BINS  # noqa: E402
from core.outcomes import OUTCOMES  # noqa: E402
from core.params import DEFAULTS, PARAM_NAMES  # noqa: E402
from queries.resultset.reader import ResultSet  # noqa: E402
from queries.resultset.schema import EVENTS_SCHEMA, POINTS_SCHEMA  # noqa: E402
from queries.resultset.writer import BUFFER_BYTES, ROW_GROUP_ROWS  # noqa: E402
from sweeps.spec import parse_spec  # noqa: E402
from sweeps.store import ResultStore  # noqa: E402


def noop_result(task_id: int, shards: int) -> tuple[int, pa.Table, pa.Table]:
    """A task's points rows as a real shard would give (counts, ~6-bin histograms), built without simulating."""
    rng = np.random.default_rng(task_id)
    n = shards
    cols: dict[str, object] = {
        "sweep": ["bench"] * n,
        "point_id": [f"{task_id // 5:016x}"] * n,
        "shard": list(range((task_id % 5) * n, (task_id % 5) * n + n)),
    }
    for name in PARAM_NAMES:
        cols[name] = [DEFAULTS[name]] * n
    cols["n_cpus"] = [int(2 ** (1 + task_id % 10))] * n
    trials = np.full(n, 100_000, np.int64)
    race = rng.poisson(2.0, n)
    cols["trials"] = trials
    for o in OUTCOMES:
        cols[o] = np.zeros(n, np.int64)
    cols["race"] = race
    cols["clean"] = trials - race
    hist = np.zeros((n, N_BINS), np.int64)
    hist[:, 48:54] = (trials[:, None] - race[:, None]) // 6
    hist[:, 48] += trials - race - hist.sum(axis=1)
    cols["t_done_hist"] = list(hist)
    cols["t_done_sum_us"] = (hist * 1000.0).sum(axis=1)
    cols["t_done_max_us"] = np.full(n, 2000.0)
    cols["estimator"] = ["naive"] * n
    for c in ("p_race_est", "p_race_var", "p_bad_est", "p_bad_var"):
        cols[c] = np.zeros(n)
    cols["preflush_sum_us"] = [None] * n
    cols["preflush_max_us"] = [None] * n
    cols["preflush_hist"] = [None] * n
    cols["seed"] = np.full(n, task_id, np.uint64)
    cols["wall_s"] = np.full(n, 0.01)
    return task_id, pa.table(cols, schema=POINTS_SCHEMA), EVENTS_SCHEMA.empty_table()


SPEC = parse_spec({"name": "bench", "seed": 1, "trials": 100, "axes": {"n_cpus": [2, 4]}})


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def summary(d: Path) -> tuple[int, int, int]:
    """(committed files, their bytes, files on disk) of a result set."""
    m = ResultSet.open(d).manifest
    files = [f for s in m.segments for f in s.files()]
    data = d / ".data" if (d / ".data").is_dir() else d  # format 3 keeps the files there (points/ holds links)
    on_disk = sum(1 for sub in ("points", "events") for _ in (data / sub).glob("*.parquet"))
    return len(files), sum(f.size for f in files), on_disk


def bench_store(d: Path, n_tasks: int, shards: int) -> dict:
    results = [noop_result(t, shards) for t in range(n_tasks)]  # built before timing: only storing is measured
    warm = ResultStore.create_or_open(d.with_name(d.name + "-warm"), SPEC)  # load Parquet/zstd code before measuring
    for tid, pts, ev in results[:200]:
        warm.write_task(tid, pts, ev)
    warm.finish(200)
    warm.close()
    rss0 = peak_rss_mib()
    arrow0 = pa.total_allocated_bytes()
    store = ResultStore.create_or_open(d, SPEC)
    t0, c0 = time.perf_counter(), time.process_time()
    for tid, pts, ev in results:
        store.write_task(tid, pts, ev)
    t_write = time.perf_counter() - t0
    store.finish(n_tasks)
    store.close()
    t_all, cpu = time.perf_counter() - t0, time.process_time() - c0
    files, size, on_disk = summary(d)
    return {"tasks": n_tasks, "rows": n_tasks * shards, "write_s": t_write, "total_s": t_all, "cpu_s": cpu,
            "results_per_s": n_tasks / t_all, "results_per_cpu_s": n_tasks / cpu, "files": files, "bytes": size,
            "files_on_disk": on_disk, "peak_rss_growth_mib": peak_rss_mib() - rss0,
            # Arrow's own high-water mark (the pool's max_memory) above what was allocated before
            # the store ran: the part of the RSS growth that is live Arrow data (buffers, merges)
            "arrow_peak_mib": (pa.default_memory_pool().max_memory() - arrow0) / 2**20}


def _worker(args: tuple[int, int]):
    return noop_result(*args)


def bench_ray(d: Path, n_tasks: int, shards: int, workers: int) -> dict:
    import ray

    from cluster.executor import run_map

    ray.init(num_cpus=workers, include_dashboard=False, logging_level="ERROR")
    try:
        store = ResultStore.create_or_open(d, SPEC)
        t0 = time.perf_counter()
        stats = run_map(_worker, ((t, shards) for t in range(n_tasks)),
                        on_result=lambda task, r: store.write_task(r[0], r[1], r[2]), progress=False)
        store.finish(n_tasks)
        store.close()
        t_all = time.perf_counter() - t0
    finally:
        ray.shutdown()
    files, size, _ = summary(d)
    return {"tasks": stats.tasks, "total_s": t_all, "results_per_s": stats.tasks / t_all, "files": files,
            "bytes": size}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=20_000)
    ap.add_argument("--shards-per-task", type=int, default=2)
    ap.add_argument("--ray", action="store_true", help="also through run_map on an embedded Ray")
    ap.add_argument("--ray-tasks", type=int, default=5_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    print(machine())
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        r = bench_store(Path(tmp) / "store", args.tasks, args.shards_per_task)
        print(f"store: {r['tasks']:,} results ({r['rows']:,} points rows) in {r['total_s']:.2f} s "
              f"(write_task loop {r['write_s']:.2f} s): {r['results_per_s']:,.0f} results/s; driver CPU "
              f"{r['cpu_s']:.2f} s: {r['results_per_cpu_s']:,.0f} results per driver CPU-second; "
              f"{r['files']} committed files, {r['bytes'] / 2**20:.1f} MiB ({r['files_on_disk']} on disk until the "
              f"grace period ends); driver peak RSS growth {r['peak_rss_growth_mib']:.0f} MiB, of which live "
              f"Arrow data at most {r['arrow_peak_mib']:.0f} MiB (write buffer bound {BUFFER_BYTES >> 20} MiB; "
              f"a merge holds one {ROW_GROUP_ROWS:,}-row row group)")
        out = {"store": r}
        if args.ray:
            q = bench_ray(Path(tmp) / "ray", args.ray_tasks, args.shards_per_task, args.workers)
            print(f"ray:   {q['tasks']:,} no-op tasks through run_map on {args.workers} CPUs in {q['total_s']:.2f} s: "
                  f"{q['results_per_s']:,.0f} results/s stored; {q['files']} committed files")
            print(f"ratio store-only / end-to-end rate: {r['results_per_s'] / q['results_per_s']:.1f}")
            out["ray"] = q
        if args.json:
            print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
