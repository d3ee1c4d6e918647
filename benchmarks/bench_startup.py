"""How long does a `stoprace` command take before it does anything? (issue 22 item 4)

Times fresh interpreters, interleaved round by round so load changes hit every command alike:

- `python -c "import numpy"`: the reference (what any NumPy program pays);
- `python -c pass`: the bare interpreter;
- `stoprace --help`, `stoprace simulate --help`, `stoprace query --help`;
- `stoprace simulate --trials 1000` (one tiny point, no Ray);
- the import of the query layer (`import queries.db`: DuckDB + pyarrow) for comparison: what
  `--help` paid before the CLI imported it lazily.

Prints the median of R rounds in seconds and as a ratio to `import numpy` in the same run; the
target (issue 22) is `stoprace --help` <= 0.4 s, i.e. about 3x `import numpy` on an idle machine
of this kind (~0.12 s). Never passes or fails on time.

    python benchmarks/bench_startup.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
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


def once(cmd: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    print(f"# bench_startup  {machine()}")
    print(f"# load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for _, cmd in CASES:  # warm the page cache and .pyc files
        once(cmd)
    times: dict[str, list[float]] = {name: [] for name, _ in CASES}
    for _ in range(args.rounds):
        for name, cmd in CASES:
            times[name].append(once(cmd))
    ref = statistics.median(times["import numpy"])
    print(f"# median of {args.rounds} interleaved rounds; ratio = median / median of `import numpy`")
    for name, _ in CASES:
        med = statistics.median(times[name])
        print(f"{name:<36} {med:7.3f} s   {med / ref:5.2f}x import numpy")
    print(f"# load average at end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
