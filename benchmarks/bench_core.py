"""Core throughput: vectorized vs the scalar reference vs the NumPy RNG bound.

Prints, on one core, CPU-trials per second (core.cost: trials x n_cpus / s, the one
definition every benchmark and the runner use) for the default parameters at several
n_cpus, the same for the reference model, and the RNG bound: the rate at which the
simulator's own draw function `core.draws.draw_phase1` merely draws what every trial
needs before it knows whether it reaches the NMI phase, over the same chunks (same
shapes, same laws, same lazy/rare-event shortcuts). The simulator cannot beat it: the
ratio is the share of the time spent drawing; the rest is evaluation, the NMI walk and
the NMI-path draws of the few CPUs that get an NMI.

`--breakdown` times one chunk's parts at n_cpus=64 (the figures quoted in RESULTS.md).
Last, the CPU time per trial of model revision 2 over revision 1 at n_cpus 64 and 512, under
none and early_flush (benchmarks/rev_ratio.py; issue 19 targets <= 1.1 and <= 1.8).

`--late` (issue 22) compares the late estimator (core.estimators.late) with today's naive
core and its RNG bound at n_cpus 64, 512, 4096, defaults: ROUNDS rounds, each timing naive,
late and the RNG bound one after the other in CPU time (time.process_time: a loaded machine
preempts all three alike), and prints the medians of the per-round ratios against the
targets (>= 30x / 150x / 500x naive; >= 100x the RNG bound at 512), plus the late plan's
set-up time per point. Never passes or fails on time.
Usage: python benchmarks/bench_core.py [--quick] [--breakdown] [--late] [--late-only]
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
from rev_ratio import print_ratios, rev_ratios  # noqa: E402  (benchmarks/rev_ratio.py)

from core import reference  # noqa: E402
from core.cost import UNIT, cpu_trials  # noqa: E402
from core.draws import draw_nmi_path, draw_phase1, new_generator  # noqa: E402
from core.params import Params  # noqa: E402
from core.vectorized import CHUNK_ELEMS, chunk_seed, chunk_trials, evaluate, iter_chunks, shard_seed  # noqa: E402
from sweeps.tuning import tune_allocator  # noqa: E402


def best_rate(fn, units: float, repeat: int = 3) -> float:
    """Best-of-`repeat` units per second of fn()."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return units / best


def vectorized_rate(n_cpus: int, work: float) -> float:
    """CPU-trials/s of the production path (iter_chunks) over ~`work` CPU-trials."""
    p = Params(n_cpus=n_cpus)  # model_rev 2, the default
    trials = max(1, int(work // n_cpus))

    def run():
        for _ in iter_chunks(p, trials, shard_seed(1, 0)):
            pass

    return best_rate(run, cpu_trials(n_cpus, trials))


def reference_rate(n_cpus: int, trials: int) -> float:
    p = Params(n_cpus=n_cpus)
    return best_rate(lambda: reference.simulate(p, trials, 1), cpu_trials(n_cpus, trials), repeat=1)


def rng_bound_rate(n_cpus: int, work: float) -> float:
    """CPU-trials/s of draw_phase1 alone over the chunks the simulator would use for ~`work`."""
    p = Params(n_cpus=n_cpus)
    per = chunk_trials(p)
    trials = max(1, int(work // n_cpus))
    seed = shard_seed(1, 0)

    def run():
        for c, start in enumerate(range(0, trials, per)):
            draw_phase1(new_generator(chunk_seed(seed, c)), p, min(per, trials - start))

    return best_rate(run, cpu_trials(n_cpus, trials))


LATE_TARGETS = {64: 30.0, 512: 150.0, 4096: 500.0}
"""Issue 22: late vs naive CPU-trials/s at the defaults."""
LATE_RNG_TARGET = (512, 100.0)
"""... and vs the RNG bound at n_cpus 512."""


def _cpu_rate(fn, units: float) -> float:
    t0 = time.process_time()
    fn()
    return units / max(time.process_time() - t0, 1e-9)


def _naive_rate(p: Params, trials: int, seed) -> float:
    return _cpu_rate(lambda: [0 for _ in iter_chunks(p, trials, seed)], cpu_trials(p.n_cpus, trials))


def _bound_rate(p: Params, trials: int, seed) -> float:
    per = chunk_trials(p)

    def bound() -> None:
        for c, start in enumerate(range(0, trials, per)):
            draw_phase1(new_generator(chunk_seed(seed, c)), p, min(per, trials - start))

    return _cpu_rate(bound, cpu_trials(p.n_cpus, trials))


def _late_rate(p: Params, trials: int, seed) -> float:
    from core.estimators import LATE

    return _cpu_rate(lambda: [0 for _ in LATE.chunks(p, trials, seed)], cpu_trials(p.n_cpus, trials))


def _late_rounds(p: Params, rounds: int, work: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(naive, RNG bound, late) CPU-trials/s per round, the three timed one after the other in each."""
    naive_trials = max(1, int(work // p.n_cpus))
    late_trials = max(1 << 20, int(200 * work // p.n_cpus))  # ~the same CPU time as naive's
    rates = [(_naive_rate(p, naive_trials, shard_seed(1, r)), _bound_rate(p, naive_trials, shard_seed(1, r)),
              _late_rate(p, late_trials, shard_seed(2, r))) for r in range(rounds)]
    rn, rb, rl = (np.array(col) for col in zip(*rates))
    return rn, rb, rl


def late_comparison(rounds: int, work: float) -> None:
    """The late estimator vs naive and the RNG bound, interleaved rounds, medians (see the docstring)."""
    from core.estimators.late.plan import build_plan, plan_for

    print(f"\nlate estimator vs naive and the RNG bound: defaults, CPU time, median of {rounds} interleaved rounds")
    print(f"{'n_cpus':>6} {'naive M/s':>10} {'RNG M/s':>9} {'late M/s':>9} {'late/naive':>11} {'target':>7} "
          f"{'late/RNG':>9} {'ns/trial':>9} {'plan s':>7}")
    medians: dict[int, tuple[float, float]] = {}
    for n in sorted(LATE_TARGETS):
        p = Params(n_cpus=n)
        t0 = time.process_time()
        build_plan(p)  # the set-up one point costs (plan_for caches it per process)
        plan_s = time.process_time() - t0
        plan_for(p)
        rn, rb, rl = _late_rounds(p, rounds, work)
        ln, lb = float(np.median(rl / rn)), float(np.median(rl / rb))
        medians[n] = (ln, lb)
        late = float(np.median(rl))
        print(f"{n:>6} {np.median(rn) / 1e6:>10.1f} {np.median(rb) / 1e6:>9.1f} {late / 1e6:>9.0f} "
              f"{ln:>10.0f}x {LATE_TARGETS[n]:>6.0f}x {lb:>8.0f}x {n / late * 1e9:>9.1f} "
              f"{plan_s:>7.2f}")
    n, want = LATE_RNG_TARGET
    met = [f"late/naive at {k}: {medians[k][0]:.0f}x (>= {v:.0f}x: {'met' if medians[k][0] >= v else 'MISSED'})"
           for k, v in LATE_TARGETS.items()]
    met.append(f"late/RNG bound at {n}: {medians[n][1]:.0f}x (>= {want:.0f}x: "
               f"{'met' if medians[n][1] >= want else 'MISSED'})")
    print("issue 22 targets: " + "; ".join(met))


def breakdown(n_cpus: int = 64, repeat: int = 50) -> None:
    """Where one chunk's time goes: drawing (draw_phase1) vs evaluating (phases 1 and 2)."""
    p = Params(n_cpus=n_cpus)
    n = chunk_trials(p)
    seed = chunk_seed(shard_seed(1, 0), 0)

    d = draw_phase1(new_generator(seed), p, n)
    rng = new_generator(seed)
    nmi_cpus = []

    def supply(rows, cols):
        nmi_cpus.append(len(rows))
        nmi, w2, _ = draw_nmi_path(rng, p, len(rows))
        return nmi, w2

    parts = {
        "all": lambda: next(iter_chunks(p, n, shard_seed(1, 0))),
        "gen": lambda: new_generator(seed),
        "draw": lambda: draw_phase1(new_generator(seed), p, n),
        "eval": lambda: evaluate(p, d, supply),
    }
    best = dict.fromkeys(parts, float("inf"))
    for _ in range(repeat):  # interleaved, so a burst of load on a shared machine hits every part alike
        for k, fn in parts.items():
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    t_all, t_gen, t_draw, t_eval = best["all"], best["gen"], best["draw"], best["eval"]
    b = evaluate(p, d, supply)
    print(f"\nchunk breakdown at n_cpus={n_cpus}: {n} trials = {cpu_trials(n_cpus, n):,} CPU-trials, best of {repeat}")
    print(f"  whole chunk (iter_chunks)           : {t_all * 1e3:7.2f} ms")
    print(f"  generator construction              : {t_gen * 1e3:7.2f} ms")
    print(f"  draw_phase1 (incl. generator)       : {t_draw * 1e3:7.2f} ms")
    print(f"  evaluate (phases 1-2, NMI draws)    : {t_eval * 1e3:7.2f} ms "
          f"({int((b.outcome != 0).sum())} trials in the NMI phase, {nmi_cpus[-1]} NMIs drawn)")
    # the parts were timed separately (evaluate on draws already in cache): under load they need not add up
    print(f"  whole - draw - evaluate             : {(t_all - t_draw - t_eval) * 1e3:7.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer trials (smoke run)")
    ap.add_argument("--no-tune", action="store_true", help="leave glibc's allocator as it is (workers tune it)")
    ap.add_argument("--breakdown", action="store_true", help="also time one chunk's parts at n_cpus=64")
    ap.add_argument("--late", action="store_true", help="also compare the late estimator (issue 22 targets)")
    ap.add_argument("--late-only", action="store_true", help="only the late comparison")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds of the late comparison")
    args = ap.parse_args()
    if not args.no_tune:
        tune_allocator()  # as sweeps.shard.run_task does in every worker
    work = 2e6 if args.quick else 2e7
    print("# bench_core ", machine(f"NumPy {np.__version__}", "1 process"))
    if args.late_only:
        late_comparison(args.rounds, work / 4)
        return
    print(f"unit: {UNIT}; RNG bound = core.draws.draw_phase1 over the same chunks")
    sizes = (8, 64, 512, 4096)
    ref = {n: reference_rate(n, max(10, int((2e4 if args.quick else 1e5) // (n - 1)))) for n in sizes}
    print()
    print(f"{'n_cpus':>6} {'M CPU-trials/s':>15} {'reference':>10} {'x reference':>12} {'RNG bound':>10} {'/ RNG bound':>12}")
    for n in sizes:
        v = vectorized_rate(n, work)
        bound = rng_bound_rate(n, work)
        print(f"{n:>6} {v / 1e6:>15.1f} {ref[n] / 1e6:>10.3f} {v / ref[n]:>12.0f} {bound / 1e6:>10.1f} {v / bound:>12.2f}")
    if args.breakdown:
        breakdown()
    print_ratios("naive", rev_ratios(iter_chunks, lambda n: int((2e6 if args.quick else 1e7) // n)))
    if args.late:
        late_comparison(args.rounds, work / 4)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of this process: {rss:.0f} MiB (chunks of {CHUNK_ELEMS} per-CPU draw slots, independent of trials)")


if __name__ == "__main__":
    main()
