"""End-to-end sweep throughput on Ray vs the same work in one process, and planning at scale.

Prints:
- serial: every task of a spec run in this process with no Ray (sweeps.shard.run_task);
- ray: the same spec through sweeps.run on an embedded Ray with N CPUs (Ray
  started before timing; its ~7 s start-up is printed separately);
- efficiency = serial seconds / (N x ray seconds): 1.0 means N CPUs give N times one;
- Ray overhead per task (cluster.executor.RunStats: wall x slots minus time in fn);
- planning a 1,000,000-point grid: time to the first task, to plan all, and the
  driver's peak RSS; then a real `stoprace run` of that grid: time to the first
  stored task and the driver's peak RSS while it runs (stopped after --big-seconds).
Never passes or fails on time. Usage: python benchmarks/bench_sweep.py [--cpus 2] [--quick]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import machine  # noqa: E402  (benchmarks/machine.py)

from cluster.connect import session  # noqa: E402
from core.cost import UNIT  # noqa: E402
from sweeps.grid import iter_tasks  # noqa: E402
from sweeps.runner import run  # noqa: E402
from sweeps.shard import run_task  # noqa: E402
from sweeps.spec import parse_spec  # noqa: E402

SPEC = """
name = "bench-sweep"
seed = 1
trials = {trials}
shard_trials = 5000

[axes]
n_cpus = [16, 64, 256]
p_stall = [1e-4, 1e-3, 1e-2]
wbinvd_us = [100.0, 1000.0, 10000.0]
mitigation = ["none", "early_flush"]
"""

BIG = """
name = "bench-plan"
seed = 1
trials = 1
shard_trials = 1

[axes]
n_cpus = { range = [2, 102, 1] }
wbinvd_us = { logspace = [100, 100000], num = 100 }
p_stall = { logspace = [1e-5, 1e-1], num = 100 }
"""


def serial_seconds(spec) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    for task in iter_tasks(spec):
        run_task(task, spec.name)
        n += 1
    return time.perf_counter() - t0, n


def plan_in_subprocess(spec_text: str) -> str:
    code = f"""
import resource, time
from sweeps.spec import parse_spec
from sweeps.grid import iter_tasks
t0 = time.perf_counter()
spec = parse_spec('''{spec_text}''')
it = iter_tasks(spec)
next(it)
first = time.perf_counter() - t0
n = 1 + sum(1 for _ in it)
total = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"points {{spec.n_points:,}}  tasks {{n:,}}  first task {{first:.2f}} s  all planned {{total:.1f}} s  peak RSS {{rss:.0f}} MiB")
"""
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def big_run(spec_text: str, seconds: float) -> str:
    import psutil

    with tempfile.TemporaryDirectory() as tmp:
        spec_path = Path(tmp) / "big.toml"
        spec_path.write_text(spec_text)
        out = Path(tmp) / "out"
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "sweeps.cli", "run", str(spec_path), "--out", str(out), "--no-progress"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        ps = psutil.Process(proc.pid)
        peak, first = 0, None
        while time.monotonic() - t0 < seconds and proc.poll() is None:
            try:
                peak = max(peak, ps.memory_info().rss)
            except psutil.Error:
                break
            if first is None and _committed(out):
                first = time.monotonic() - t0
            time.sleep(0.2)
        stored = _committed(out)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    first_s = f"{first:.1f} s (incl. Ray start-up)" if first is not None else f"> {seconds:.0f} s"
    return f"driver peak RSS {peak / 2**20:.0f} MiB over {seconds:.0f} s; first stored task after {first_s}; {stored} tasks stored"


def _committed(out: Path) -> int:
    """Tasks the result set's manifest commits (0 before it exists)."""
    from queries.resultset.manifest import parse_manifest

    try:
        return len(parse_manifest((out / "manifest.json").read_bytes(), str(out)).done())
    except (OSError, ValueError):
        return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--big-seconds", type=float, default=30.0)
    args = ap.parse_args()
    spec = parse_spec(SPEC.format(trials=20_000 if args.quick else 100_000))
    work = sum(t.cpu_trials for t in iter_tasks(spec))  # core.cost.cpu_trials via sweeps.grid
    import ray

    print("# bench_sweep ", machine(f"Ray {ray.__version__}"))
    print(f"spec: {spec.n_points} points x {spec.trials:,} trials = {work:.3g} {UNIT}")
    t_serial, n_tasks = serial_seconds(spec)
    print(f"serial, 1 process : {t_serial:7.2f} s  {work / t_serial / 1e6:6.1f} M CPU-trials/s  ({n_tasks} tasks)")
    t0 = time.perf_counter()
    with session(num_cpus=args.cpus):
        print(f"Ray start-up      : {time.perf_counter() - t0:7.2f} s")
        with tempfile.TemporaryDirectory() as tmp:
            t1 = time.perf_counter()
            rep = run(spec, Path(tmp) / "out", progress=False)
            t_ray = time.perf_counter() - t1
    print(f"ray, {args.cpus} CPUs       : {t_ray:7.2f} s  {work / t_ray / 1e6:6.1f} M CPU-trials/s  ({rep.tasks_run} tasks)")
    print(f"efficiency        : {t_serial / (args.cpus * t_ray):7.2f}  (serial / (CPUs x ray); target >= 0.85)")
    print(f"Ray overhead/task : {(args.cpus * t_ray - t_serial) / rep.tasks_run * 1e3:7.1f} ms  (CPUs x wall - serial work, per task)")
    print()
    print("planning 1e6 points:", plan_in_subprocess(BIG))
    print("running 1e6 points :", big_run(BIG, args.big_seconds))


if __name__ == "__main__":
    main()
