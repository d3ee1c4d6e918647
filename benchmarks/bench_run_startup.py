"""How long does a 1-point `stoprace run` take, in this process vs. on Ray? (issue 22 item 4)

A sweep planned below sweeps.guards.IN_PROCESS_CPU_S runs in the driver's own process without
starting Ray (sweeps.runner); `--workers N` keeps it on an embedded Ray. Times fresh processes,
interleaved round by round so load changes hit every case alike:

- `python -c "import numpy"`: the reference (what any NumPy program pays);
- `stoprace run ONE.toml --out NEW_DIR`: one point, 1,000 trials at n_cpus 8, in-process;
- `stoprace run ONE.toml --out NEW_DIR --workers 1`: the same on an embedded Ray (fewer rounds:
  it takes seconds).

Prints medians in seconds and as a ratio to `import numpy` in the same run; the target (issue
22) is the in-process run <= 2 s. Never passes or fails on time.

    python benchmarks/bench_run_startup.py [--rounds 9] [--ray-rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine  # noqa: E402

PY = sys.executable
ONE_POINT = """
name = "one-point"
seed = 1
trials = 1000
shard_trials = 1000

[axes]
n_cpus = [8]
"""


def once(cmd: list[str], cwd: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--ray-rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"# bench_run_startup  {machine()}")
    print(f"# load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="bench-run-startup-") as tmp:
        work = Path(tmp)
        spec = work / "one.toml"
        spec.write_text(ONE_POINT)
        n = 0

        def run_cmd(*extra: str) -> list[str]:
            nonlocal n
            n += 1
            return [PY, "-m", "sweeps.cli", "run", str(spec), "--out", str(work / f"out{n}"), "--no-progress", *extra]

        cases = {
            "import numpy": lambda: [PY, "-c", "import numpy"],
            "stoprace run, 1 point (in-process)": run_cmd,
            "stoprace run, 1 point --workers 1 (Ray)": lambda: run_cmd("--workers", "1"),
        }
        for make in cases.values():  # warm the page cache and .pyc files
            once(make(), work)
        times: dict[str, list[float]] = {name: [] for name in cases}
        for r in range(args.rounds):
            for name, make in cases.items():
                if "Ray" in name and r >= args.ray_rounds:
                    continue
                times[name].append(once(make(), work))
    ref = statistics.median(times["import numpy"])
    print(f"# median of interleaved rounds ({args.rounds}; Ray {args.ray_rounds}); ratio = median / `import numpy`")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<42} {med:7.3f} s   {med / ref:6.2f}x import numpy   (n={len(ts)})")
    print(f"# load average at end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
