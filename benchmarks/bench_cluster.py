"""Cluster scaling: one sweep on 1 then 2 Ray nodes (1 CPU each), where the time goes, what 1000 CPUs need.

Starts a real multi-node Ray cluster on this machine (ray.cluster_utils.Cluster:
a head node, later a second node, 1 CPU each: separate raylets, object stores
and worker pools, as on two machines, but sharing this machine's cores with
the driver and Ray's daemons) and drives it from this process, as
`stoprace run --address` would. Prints:

1. the same sweep (sweeps.run) on 1 node, then on 2 nodes: wall seconds,
   speed-up, and cluster.executor.RunStats: worker seconds (time inside
   run_task), utilization, overhead per task (wall x slots - worker seconds,
   per task: Ray scheduling and transfer, the driver's writes, ramp-up and
   tail); the two runs' rows are checked identical. For scale, the same tasks
   in 1 vs 2 plain processes (no Ray): what two cores of this machine give;
2. the driver's own time per result: ResultStore.write_task (rows buffered
   into segments, committed with the manifest every few seconds), measured by
   wrapping it during the runs, and on an idle driver with and without fsync;
3. Ray's cost per task with no work: no-op tasks through run_map on the
   2 nodes, at the default in-flight bound (2 x CPUs) and with a deep queue,
   i.e. how many tasks/s the driver and Ray sustain when the work is free;
4. bytes per task: a pickled TaskResult (what crosses the object store), and
   the committed Parquet bytes per task and segment files of the whole set;

then what a 1000-CPU cluster would need from the driver. Never passes or
fails on time. Usage: python benchmarks/bench_cluster.py [--quick]
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private cluster of this process only

import ray  # noqa: E402
from machine import machine  # noqa: E402  (benchmarks/machine.py)
from ray.cluster_utils import Cluster  # noqa: E402
from write_timer import WriteTimer  # noqa: E402  (benchmarks/write_timer.py)

from cluster.executor import run_map  # noqa: E402
from core.cost import UNIT  # noqa: E402
from queries.resultset.writer import SEGMENT_BYTES  # noqa: E402
from sweeps.grid import DEFAULT_CPU_TRIALS_PER_S, iter_tasks  # noqa: E402
from sweeps.runner import run  # noqa: E402
from sweeps.shard import run_task  # noqa: E402
from sweeps.spec import load_spec, parse_spec  # noqa: E402
from sweeps.store import ResultStore  # noqa: E402

from sweep_helpers import race_spec  # noqa: E402  (tests/sweep_helpers.py)


def noop(x: int) -> int:
    return x


def wait_cpus(n: int, timeout: float = 60) -> None:
    t0 = time.monotonic()
    while ray.cluster_resources().get("CPU", 0) != n:
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"cluster did not reach {n} CPUs")
        time.sleep(0.2)


def warm(n: int = 20) -> None:
    """Start the worker processes before timing (a new node's first task pays ~1 s of worker start-up)."""
    run_map(noop, range(n), on_result=lambda t, r: None, progress=False)


def sweep(spec, out: Path) -> tuple:
    with WriteTimer() as wt:
        cpu0 = time.process_time()
        rep = run(spec, out, progress=False)
        driver_cpu = time.process_time() - cpu0
    assert rep.complete and rep.stats is not None
    return rep, wt, driver_cpu


def _work(spec_text: str, ids: list[int]) -> None:
    spec = parse_spec(spec_text)
    for t in iter_tasks(spec):
        if t.task_id in ids:
            run_task(t, spec.name)


def hardware_ceiling(spec_text: str, n: int) -> tuple[float, float]:
    """Seconds for n tasks in one process vs split over two plain processes (no Ray): what 2 cores give."""
    import multiprocessing as mp

    ids = list(range(n))
    t0 = time.perf_counter()
    _work(spec_text, ids)
    one = time.perf_counter() - t0
    ctx = mp.get_context("fork")
    t0 = time.perf_counter()
    ps = [ctx.Process(target=_work, args=(spec_text, ids[i::2])) for i in range(2)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    return one, time.perf_counter() - t0


def write_costs(spec, result, n: int = 100) -> tuple[float, float]:
    """ms per ResultStore.write_task of one real TaskResult: as is, and with fsync made a no-op."""
    out = []
    real_fsync = os.fsync
    for fsync in (real_fsync, lambda fd: None):
        with tempfile.TemporaryDirectory(prefix="bench-write-") as d:
            store = ResultStore.create_or_open(Path(d) / "r", spec)
            os.fsync = fsync
            try:
                t0 = time.perf_counter()
                for i in range(n):
                    store.write_task(i, result.points, result.events)
                out.append(1e3 * (time.perf_counter() - t0) / n)
            finally:
                os.fsync = real_fsync
    return out[0], out[1]


def dir_bytes(d: Path) -> tuple[int, int]:
    """(files, bytes) the result set's manifest commits."""
    from queries.resultset.reader import ResultSet

    files = [f for s in ResultSet.open(d).manifest.segments for f in s.files()]
    return len(files), sum(f.size for f in files)


def fmt_stats(label: str, rep, wt, driver_cpu: float) -> str:
    s = rep.stats
    return (
        f"{label:<8} {s.cpus:>4} {rep.seconds:>7.2f} {s.tasks:>6} {s.worker_seconds:>9.2f} "
        f"{s.utilization:>6.2f} {1e3 * s.overhead_s_per_task:>9.1f} {1e3 * wt.seconds / max(wt.n, 1):>9.2f} "
        f"{1e3 * driver_cpu / max(s.tasks, 1):>9.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a 3x smaller sweep and fewer no-op tasks")
    ap.add_argument("--trials", type=int, help="trials per point (default 180000, --quick 60000)")
    args = ap.parse_args(argv)
    trials = args.trials or (60000 if args.quick else 180000)
    n_noop = 1000 if args.quick else 3000

    print("machine:", machine(f"Ray {ray.__version__}"))
    spec_text = race_spec("bench-cluster", 5, trials, 10000, 2.0)
    spec = parse_spec(spec_text)
    tasks = list(iter_tasks(spec))
    shards = sum(len(it.shards) for t in tasks for it in t.items)
    print(
        f"sweep: {spec.n_points} points x {spec.n_shards_per_point} shards = {shards} shards in {len(tasks)} tasks, "
        f"{sum(t.cpu_trials for t in tasks) / 1e6:.0f} M {UNIT}"
    )
    logging.getLogger("ray").setLevel(logging.WARNING)
    c = Cluster()
    tmp = tempfile.TemporaryDirectory(prefix="bench-cluster-")
    try:
        t0 = time.perf_counter()
        c.add_node(num_cpus=1)
        head_s = time.perf_counter() - t0
        ray.init(address=c.address, logging_level=logging.WARNING, log_to_driver=False)
        wait_cpus(1)
        warm()
        rep1, wt1, cpu1 = sweep(spec, Path(tmp.name) / "one")
        t0 = time.perf_counter()
        c.add_node(num_cpus=1)
        c.wait_for_nodes()
        wait_cpus(2)
        node_s = time.perf_counter() - t0
        warm()
        rep2, wt2, cpu2 = sweep(spec, Path(tmp.name) / "two")

        from sweep_helpers import read_dir, without_wall

        same = without_wall(read_dir(rep1.out)).equals(without_wall(read_dir(rep2.out))) and read_dir(
            rep1.out, "events"
        ).equals(read_dir(rep2.out, "events"))
        print(f"cluster start: head node {head_s:.1f} s, second node {node_s:.1f} s; rows identical 1 vs 2 nodes: {same}")
        print()
        print(
            f"{'run':<8} {'CPUs':>4} {'wall s':>7} {'tasks':>6} {'worker s':>9} {'util':>6} "
            f"{'ovh ms/t':>9} {'write ms':>9} {'drvCPU ms':>9}"
        )
        print(fmt_stats("1 node", rep1, wt1, cpu1))
        print(fmt_stats("2 nodes", rep2, wt2, cpu2))
        speedup = rep1.seconds / rep2.seconds
        per_task = rep2.stats.worker_seconds / rep2.stats.tasks
        n_hw = min(24, len(tasks))
        one, two = hardware_ceiling(spec_text, n_hw)
        print(f"hardware ceiling: the first {n_hw} tasks in 1 process {one:.2f} s, in 2 plain processes {two:.2f} s: {one / two:.2f}x")
        print(
            f"speed-up 1 -> 2 nodes: {speedup:.2f}x (ideal 2.00x; efficiency {speedup / 2:.0%}, "
            f"{speedup / (one / two):.0%} of what 2 plain processes get here); mean task {per_task:.3f} s in run_task; "
            f"worker seconds 1 node {rep1.stats.worker_seconds:.1f} vs 2 nodes {rep2.stats.worker_seconds:.1f} "
            f"(the 2 nodes share {os.cpu_count()} cores with the driver and Ray's daemons)"
        )

        # Ray's own cost per task: no work at all.
        print()
        print(f"no-op tasks on 2 nodes ({n_noop} each):")
        noop_rates = {}
        for mif in (None, 256):
            cpu0 = time.process_time()
            st = run_map(noop, range(n_noop), on_result=lambda t, r: None, max_in_flight=mif, progress=False)
            dcpu = time.process_time() - cpu0
            noop_rates[mif] = st.tasks / st.seconds
            print(
                f"  max_in_flight {st.max_in_flight:>4}: {st.tasks / st.seconds:7.0f} tasks/s, "
                f"{1e3 * st.seconds / st.tasks:6.2f} ms wall per task, driver CPU {1e3 * dcpu / st.tasks:5.2f} ms per task"
            )

        # What one task moves and writes.
        files, nbytes = dir_bytes(Path(rep2.out))
        sample = tasks[: min(8, len(tasks))]
        results = [run_task(t, spec.name) for t in sample]
        pickled = [len(pickle.dumps(r, protocol=5)) for r in results]
        rows = sum(len(it.shards) for t in sample for it in t.items)
        ev_rows = read_dir(rep2.out, "events").num_rows
        heavy = max(results, key=lambda r: r.events.num_rows)
        w_sync, w_nosync = write_costs(spec, heavy)
        print()
        print(
            f"per task: pickled TaskResult {sum(pickled) / len(pickled) / 1024:.1f} KiB "
            f"({sum(pickled) / rows / 1024:.2f} KiB per points row, {rows / len(sample):.1f} rows per task); "
            f"Parquet {nbytes / len(tasks) / 1024:.1f} KiB; the whole set is {files} committed segment files "
            f"for {len(tasks)} tasks (events: {ev_rows} rows in the whole sweep)"
        )
        print(
            f"driver write per result (buffered into segments, {heavy.points.num_rows} + {heavy.events.num_rows} rows): "
            f"{w_sync:.2f} ms with fsync, {w_nosync:.2f} ms with fsync a no-op (fsync is "
            f"{1 - w_nosync / w_sync:.0%} of it on this disk)"
        )

        # 1000 CPUs.
        cluster_spec = load_spec(ROOT / "examples" / "tdx-kexec-cluster.toml")
        big = big_shards = big_cpu_trials = 0
        for t in iter_tasks(cluster_spec):
            big += 1
            big_shards += sum(len(it.shards) for it in t.items)
            big_cpu_trials += t.cpu_trials
        mean_task_s = big_cpu_trials / DEFAULT_CPU_TRIALS_PER_S / big
        need_2s = 1000 / cluster_spec.task_seconds
        need = 1000 / mean_task_s
        write_ms = 1e3 * wt2.seconds / wt2.n
        drv_ms = 1e3 * cpu2 / rep2.stats.tasks
        kib = big_shards / big * sum(pickled) / rows / 1024
        print()
        print(
            f"1000 CPUs: tasks of exactly {cluster_spec.task_seconds:g} s would mean {need_2s:.0f} results/s "
            f"({1e3 / need_2s:.1f} ms per result); examples/tdx-kexec-cluster.toml plans {big} tasks of "
            f"{mean_task_s:.1f} s on average (shards of 1024+ CPUs are tasks of their own), i.e. {need:.0f} results/s "
            f"({1e3 / need:.1f} ms per result)"
        )
        print(
            f"driver capacity measured here: write_task {write_ms:.2f} ms during the 2-node run "
            f"(-> {1e3 / write_ms:.0f} results/s), {w_sync:.2f} ms on an idle driver (-> {1e3 / w_sync:.0f}/s); "
            f"driver CPU {drv_ms:.2f} ms per sweep task; Ray alone (no-op tasks) {noop_rates[256]:.0f} tasks/s"
        )
        print(
            f"object store: ~{kib:.1f} KiB per result ({big_shards / big:.2f} points rows per task) plus event rows "
            f"-> {need * kib / 1024:.1f} MiB/s into the driver at {need:.0f} results/s; files: segments, not one "
            f"per task: {big} tasks commit into <= ceil(bytes / {SEGMENT_BYTES >> 20} MiB) + 1 files per table when finished"
        )
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
