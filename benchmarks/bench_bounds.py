"""How tight core.bounds' model bound of p_timeout is, and what it costs: at the regimes of
tests/test_bounds.py (timeouts common enough to count) the bound against the naive core's counted
frequency and its 95% Clopper-Pearson interval, and the bound's CPU time per distinct point.

Reports only; never fails on tightness or time. Usage:
    python benchmarks/bench_bounds.py [--trials 200000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from machine import machine  # noqa: E402  (benchmarks/machine.py)
from test_bounds import COMMON  # noqa: E402  (the regimes the tests check)

from core import bounds  # noqa: E402
from core.outcomes import TIMEOUT  # noqa: E402
from core.params import Params  # noqa: E402
from core.stats import clopper_pearson  # noqa: E402
from core.vectorized import simulate  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200_000)
    args = ap.parse_args()
    print("# bench_bounds ", machine(f"NumPy {np.__version__}", "1 process"))
    print(f"{'regime (wait = 0)':<92} {'counted':>9} {'95% interval':>21} {'bound':>9} {'bound/counted':>13}")
    ratios = []
    for over in COMMON:
        p = Params(wait=0, **over)
        k = int(np.sum(simulate(p, args.trials, 5).outcome == TIMEOUT))
        lo, hi = clopper_pearson(k, args.trials)
        b = bounds.timeout_max(p)
        f = k / args.trials
        ratios.append(b / f)
        name = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in over.items())
        print(f"{name:<92} {f:>9.3g} [{lo:>9.3g}, {hi:>9.3g}] {b:>9.3g} {b / f:>13.2f}")
    print(f"bound / counted: {min(ratios):.2f} - {max(ratios):.2f} (median {np.median(ratios):.2f})")
    grid = [Params(wait=0, n_cpus=64, wbinvd_us=w, p_stall=s, ipi_jitter_us=j)
            for w in np.logspace(2, 5, 13) for s in np.logspace(-4, -1, 7) for j in (0.0, 30.0)]
    bounds._per_cpu.cache_clear()
    t0 = time.process_time()
    vals = [bounds.timeout_max(p) for p in grid]
    dt = (time.process_time() - t0) / len(grid)
    below = sum(v < 1e-6 for v in vals)
    print(f"cost: {dt * 1e3:.2f} ms CPU per distinct point ({len(grid)} points of the cluster example's "
          f"wbinvd_us x p_stall x 2 jitters at 64 CPUs, panic path); {below} of them bounded below 1e-6")
    return 0


if __name__ == "__main__":
    sys.exit(main())
