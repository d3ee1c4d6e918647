"""Core throughput: vectorized vs the scalar reference vs the NumPy RNG bound.

Prints CPU-trials per second on one core (trials x (n_cpus - 1) / s; the stopping
CPU is not simulated) for the default parameters at several n_cpus, the same for
the reference model, and the RNG bound: the rate at which NumPy can merely draw
the random numbers one CPU-trial needs. Two bounds are shown:

- "full": one variate of every per-CPU law in MODEL.md's table (ipi, stall flag,
  irqs-off, dirty flag, w, w2, nmi, dead: 8 variates incl. two log-normals);
- "phase1": what a trial must draw before it knows it needs the NMI phase
  (ipi exponential, irqs-off exponential, w log-normal), the cheapest any
  implementation can be at the defaults.

Ratios >= 0.5 mean "simulation costs at most as much as drawing its randomness
again". Never passes or fails on time. Usage: python benchmarks/bench_core.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from machine import machine  # noqa: E402  (benchmarks/machine.py)

from core import reference  # noqa: E402
from core.draws import new_generator  # noqa: E402
from core.params import Params  # noqa: E402
from core.vectorized import CHUNK_ELEMS, iter_chunks, shard_seed  # noqa: E402
from sweeps.tuning import tune_allocator  # noqa: E402


def best_rate(fn, units: float, repeat: int = 3) -> float:
    """Best-of-`repeat` units per second of fn()."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return units / best


def vectorized_rate(n_cpus: int, cpu_trials: float) -> float:
    p = Params(n_cpus=n_cpus)
    trials = max(1, int(cpu_trials // p.n_remote))

    def run():
        for _ in iter_chunks(p, trials, shard_seed(1, 0)):
            pass

    return best_rate(run, trials * p.n_remote)


def reference_rate(n_cpus: int, trials: int) -> float:
    p = Params(n_cpus=n_cpus)
    return best_rate(lambda: reference.simulate(p, trials, 1), trials * p.n_remote, repeat=1)


def rng_rate(kind: str, cpu_trials: float) -> float:
    rng = new_generator(np.random.SeedSequence(1))
    n = CHUNK_ELEMS
    reps = max(1, int(cpu_trials // n))

    def lognormal():
        x = rng.standard_normal(n)
        np.exp(x, out=x)

    def full():
        for _ in range(reps):
            rng.standard_exponential(n)  # ipi
            rng.random(n)  # stall flag
            rng.standard_exponential(n)  # irqs-off
            rng.random(n)  # dirty flag
            lognormal()  # w
            lognormal()  # w2
            rng.standard_exponential(n)  # nmi
            rng.random(n)  # dead

    def phase1():
        for _ in range(reps):
            rng.standard_exponential(n)
            rng.standard_exponential(n)
            lognormal()

    return best_rate(full if kind == "full" else phase1, reps * n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer trials (smoke run)")
    ap.add_argument("--no-tune", action="store_true", help="leave glibc's allocator as it is (workers tune it)")
    args = ap.parse_args()
    if not args.no_tune:
        tune_allocator()  # as sweeps.shard.run_task does in every worker
    work = 2e6 if args.quick else 2e7
    print("# bench_core ", machine(f"NumPy {np.__version__}", "1 process"))
    full = rng_rate("full", work)
    ph1 = rng_rate("phase1", work)
    print(f"RNG bound full   : {full / 1e6:8.1f} M CPU-trials/s")
    print(f"RNG bound phase1 : {ph1 / 1e6:8.1f} M CPU-trials/s")
    sizes = (8, 64, 512, 4096)
    ref = {n: reference_rate(n, max(10, int((2e4 if args.quick else 1e5) // (n - 1)))) for n in sizes}
    print()
    print(f"{'n_cpus':>6} {'M CPU-trials/s':>15} {'reference':>10} {'x reference':>12} {'/ RNG full':>11} {'/ RNG phase1':>13}")
    for n in sizes:
        v = vectorized_rate(n, work)
        print(f"{n:>6} {v / 1e6:>15.1f} {ref[n] / 1e6:>10.3f} {v / ref[n]:>12.0f} {v / full:>11.2f} {v / ph1:>13.2f}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of this process: {rss:.0f} MiB (chunks of {CHUNK_ELEMS} CPU-trials, independent of trials)")


if __name__ == "__main__":
    main()
