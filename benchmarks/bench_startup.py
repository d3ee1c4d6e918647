"""How long does a `stoprace` command take before it does anything? (issue 22 item 4)

Times fresh interpreters, interleaved round by round so load changes hit every command alike:

- `python -c "import numpy"`: the reference (what any NumPy program pays);
- `python -c pass`: the bare interpreter;
- `stoprace --help`, `stoprace simulate --help`, `stoprace query --help`;
- `stoprace simulate --trials 1000` (one tiny point, no Ray);
- the import of the query layer (`import queries.db`: DuckDB + pyarrow) for comparison: what
  `--help` paid before the CLI imported it lazily;
- `stoprace run ONE.toml --out NEW_DIR`: a 1-point sweep (1,000 trials at n_cpus 8), which runs
  in-process without starting Ray (below sweeps.guards.IN_PROCESS_CPU_S), and the same with
  `--workers 1` on an embedded Ray (only in the first --ray-rounds rounds: it takes seconds).

Prints the median of R rounds in seconds and as a ratio to `import numpy` in the same run; the
targets (issue 22) are `stoprace --help` <= 0.4 s, i.e. about 3x `import numpy` on an idle machine
of this kind (~0.12 s), and the 1-point `stoprace run` <= 2 s. Never passes or fails on time.

    python benchmarks/bench_startup.py [--rounds 15] [--ray-rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine  # noqa: E402

PY = sys.executable
CLI = [PY, "-m", "sweeps.cli"]
CASES = [
    ("import numpy", [PY, "-c", "import numpy"]),
    ("python -c pass", [PY, "-c", "pass"]),
    ("stoprace --help", [*CLI, "--help"]),
    ("stoprace simulate --help", [*CLI, "simulate", "--help"]),
    ("stoprace query --help", [*CLI, "query", "--help"]),
    ("stoprace simulate --trials 1000", [*CLI, "simulate", "--trials", "1000"]),
    ("import queries.db (duckdb+pyarrow)", [PY, "-c", "import queries.db"]),
]
RUN_IN_PROCESS = "stoprace run, 1 point (in-process)"
RUN_ON_RAY = "stoprace run, 1 point --workers 1 (Ray)"
ONE_POINT = """
name = "one-point"
seed = 1
trials = 1000
shard_trials = 1000

[axes]
n_cpus = [8]
"""


def run_cases(work: Path) -> list[tuple[str, Callable[[], list[str]]]]:
    """The two `stoprace run` cases: each call is a new results dir (a finished one would return at once)."""
    spec = work / "one.toml"
    spec.write_text(ONE_POINT)
    n = iter(range(10**9))

    def cmd(*extra: str) -> list[str]:
        return [*CLI, "run", str(spec), "--out", str(work / f"out{next(n)}"), "--no-progress", *extra]

    return [(RUN_IN_PROCESS, cmd), (RUN_ON_RAY, lambda: cmd("--workers", "1"))]


def once(cmd: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    env.pop("RAY_ADDRESS", None)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--ray-rounds", type=int, default=3, help="rounds that include the run on Ray (~10-25 s each)")
    args = ap.parse_args()
    print(f"# bench_startup  {machine()}")
    print(f"# load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        cases: list[tuple[str, Callable[[], list[str]]]] = [(name, lambda c=cmd: c) for name, cmd in CASES]
        cases += run_cases(Path(tmp))
        for _, make in cases:  # warm the page cache and .pyc files
            once(make())
        times: dict[str, list[float]] = {name: [] for name, _ in cases}
        for r in range(args.rounds):
            for name, make in cases:
                if name == RUN_ON_RAY and r >= args.ray_rounds:
                    continue
                times[name].append(once(make()))
    ref = statistics.median(times["import numpy"])
    print(f"# median of {args.rounds} interleaved rounds ({args.ray_rounds} for the run on Ray); "
          f"ratio = median / median of `import numpy`")
    for name, _ in cases:
        med = statistics.median(times[name])
        print(f"{name:<40} {med:7.3f} s   {med / ref:5.2f}x import numpy")
    print(f"# load average at end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
