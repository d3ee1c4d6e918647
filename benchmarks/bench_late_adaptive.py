"""What "p_timeout decided vs 1e-6 at every point of the cluster example, wait = 0 and 1" costs
with the late estimator and adaptive precision (issue 22 target: <= 5 CPU-hours), estimated
from a stratified sample of the points, run in this process exactly as the adaptive runner
would run them (sweeps.waves: waves of 1, 2, 4, ... shards, the stop rule core.precision on
complete waves), and what the same trials cost the naive core.

The sweep: examples/tdx-kexec-cluster.toml's grid (10 n_cpus x 13 wbinvd_us x 6 ipi_jitter_us
x 7 p_stall x 2 mitigation) x wait = [0, 1] = 21,840 points, trials = "auto", estimator
"late", [precision] metric p_timeout, target 1e-6. Strata: (n_cpus, p_stall, mitigation,
wait), 280 of 78 points each; `--per-stratum` points drawn at random (wbinvd_us,
ipi_jitter_us) in each. A sampled point's CPU time (time.process_time) is the sum over its
waves of the shards' simulation plus, per wave, its plan's set-up (a wave may land on
another worker: `--plan-once` counts it once instead). The estimate is the sum over strata
of (points in the stratum) x (mean CPU time of its sampled points); the naive figure prices
the same CPU-trials at the naive core's CPU-trials/s measured here at each n_cpus.

Reports only; never fails on time. Usage:
    python benchmarks/bench_late_adaptive.py [--per-stratum 1] [--strata N] [--seed 1]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from machine import machine  # noqa: E402  (benchmarks/machine.py)

from core.estimators import LATE  # noqa: E402
from core.estimators.late import plan as late_plan  # noqa: E402
from core.precision import DECIDED, PointTally, ShardStats  # noqa: E402
from core.vectorized import iter_chunks, shard_seed  # noqa: E402
from sweeps.grid import iter_points  # noqa: E402
from sweeps.spec import parse_spec  # noqa: E402
from sweeps.waves import wave_bounds  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARD_TRIALS = 31_250
"""The first look's trials. Most points decide there: the ones whose p_timeout is far above 1e-6
(counted timeouts) and the ones whose model bound (core.bounds) is below it. A point with 0
timeouts and a bound above 1e-6 needs ~6.3e6 trials for the 0-event bound at the look level
(1 - 0.05/14 with 14 looks) to drop below 1e-6: with waves doubling, 8e6. 125,000-trial shards
(the size before the model bound) spent 4x more on the points that decide at once."""
MAX_TRIALS = 256_000_000  # 2048 shards: the budget a point may spend before "budget exhausted"


def spec_text(shard_trials: int = SHARD_TRIALS) -> str:
    text = (ROOT / "examples" / "tdx-kexec-cluster.toml").read_text()
    text = re.sub(r"(?m)^trials\s*=.*$", 'trials = "auto"', text, count=1)
    text = re.sub(r"(?m)^shard_trials\s*=.*$", f"shard_trials = {shard_trials}", text, count=1)
    text = re.sub(r'(?m)^estimator\s*=.*$', 'estimator = "late"', text, count=1)
    text = re.sub(r"(?m)^wait = 1 .*$", "", text, count=1)
    i = text.index("\n[base]")
    text = (text[:i] + f'\n[precision]\nmetric = "p_timeout"\ntarget = 1e-6\nmax_trials = {MAX_TRIALS}\n'
            + text[i:])
    return text + "\nwait = [0, 1]\n"


def run_point(spec, point, bounds, plan_once: bool) -> tuple[str, int, float, float]:
    """(status, trials, simulation CPU-s, set-up CPU-s) of one point run wave by wave."""
    p = point.params
    tally = PointTally.for_params(point.values)  # as sweeps.waves: zero by model, the model bound
    sim = setup = 0.0
    done = 0
    status = "open"
    for j, b in enumerate(bounds):
        if not plan_once or j == 0:
            late_plan._cached.cache_clear()
            t0 = time.process_time()
            LATE.column(p)  # builds the plan
            setup += time.process_time() - t0
        t0 = time.process_time()
        for k in range(done, b):
            acc = LATE.run_shard(p, spec.shard_trials, shard_seed(point.point_seed, k))
            row = {"trials": acc.counts.trials, **{o: acc.counts.count(o) for o in ("race", "hang", "timeout")},
                   "estimator": acc.estimator, **acc.columns()}
            tally.add(k, ShardStats.from_row(row))
        sim += time.process_time() - t0
        done = b
        status = tally.status(spec.precision)
        if status in DECIDED:
            break
    return status, tally.trials, sim, setup


def naive_rate(n_cpus: int) -> float:
    """Naive CPU-trials per CPU-second at the defaults and this n_cpus (CPU time)."""
    from core.params import Params

    p = Params(n_cpus=n_cpus)
    trials = max(1, int(4e6 // n_cpus))
    t0 = time.process_time()
    for _ in iter_chunks(p, trials, shard_seed(3, 0)):
        pass
    return trials * n_cpus / (time.process_time() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-stratum", type=int, default=1)
    ap.add_argument("--strata", type=int, default=0, help="only this many strata, spread over all (0: all 280)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--plan-once", action="store_true", help="count a point's plan set-up once, not per wave")
    ap.add_argument("--shard-trials", type=int, default=SHARD_TRIALS, help="trials per shard (the first look)")
    args = ap.parse_args()
    spec = parse_spec(spec_text(args.shard_trials))
    bounds = wave_bounds(spec)
    strata: dict[tuple, list] = defaultdict(list)
    for pt in iter_points(spec):
        v = pt.values
        strata[(v["n_cpus"], v["p_stall"], v["mitigation"], v["wait"])].append(pt)
    keys = sorted(strata)
    if args.strata:
        keys = keys[:: max(1, len(keys) // args.strata)][: args.strata]
    rng = np.random.default_rng(args.seed)
    print("# bench_late_adaptive ", machine(f"NumPy {np.__version__}", "1 process"))
    print(f"{spec.n_points:,} points in {len(strata)} strata; sampling {args.per_stratum} per stratum in "
          f"{len(keys)} strata; shards of {spec.shard_trials:,}, waves {bounds[:6]}..., max {MAX_TRIALS:.3g} trials")
    rates: dict[int, float] = {}
    est_cpu = est_naive = sampled_cpu = est_setup = 0.0
    est_trials = 0.0
    statuses: dict[str, int] = defaultdict(int)
    by_status: dict[str, float] = defaultdict(float)  # estimated CPU-s of the points that ended so
    worst = (0.0, None)
    t_start = time.perf_counter()
    for key in keys:
        pts = strata[key]
        pick = rng.choice(len(pts), size=min(args.per_stratum, len(pts)), replace=False)
        costs, trials = [], []
        for i in pick:
            status, n, sim, setup = run_point(spec, pts[i], bounds, args.plan_once)
            statuses[status] += 1
            by_status[status] += len(pts) / len(pick) * (sim + setup)
            costs.append(sim + setup)
            trials.append(n)
            est_setup += len(pts) / len(pick) * setup
            sampled_cpu += sim + setup
            if sim + setup > worst[0]:
                worst = (sim + setup, (pts[i].values, status, n))
        n_cpus = key[0]
        if n_cpus not in rates:
            rates[n_cpus] = naive_rate(n_cpus)
        scale = len(pts) / len(pick)
        est_cpu += scale * sum(costs)
        est_trials += scale * sum(trials)
        est_naive += scale * sum(trials) * n_cpus / rates[n_cpus]
    # strata not sampled (with --strata): scale up by points
    covered = sum(len(strata[k]) for k in keys)
    factor = spec.n_points / covered
    print(f"sampled points' decisions: {dict(statuses)}; sampled CPU time {sampled_cpu:.0f} s "
          f"(wall {time.perf_counter() - t_start:.0f} s)")
    print(f"most expensive sampled point: {worst[0]:.1f} CPU-s: {worst[1]}")
    print(f"estimate for all {spec.n_points:,} points: {factor * est_trials:.3e} trials, "
          f"late {factor * est_cpu / 3600:.2f} CPU-hours (target <= 5; of it plan set-up "
          f"{factor * est_setup / 3600:.2f}); "
          f"the same trials with the naive core: {factor * est_naive / 3600:.0f} CPU-hours")
    print("of it by decision: " + ", ".join(f"{k} {factor * v / 3600:.2f}" for k, v in sorted(by_status.items()))
          + " CPU-hours")
    print("naive CPU-trials/s measured here: " + ", ".join(f"{k}: {v / 1e6:.1f}M" for k, v in sorted(rates.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
