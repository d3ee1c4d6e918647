"""Coverage of every reported 95% interval and the error rate of adaptive decisions, full size (issue 23).

    python benchmarks/coverage.py --truths        # recompute tests/data/coverage_truths.json (minutes)
    python benchmarks/coverage.py                 # every cell at R = 2000, every adaptive case at R = 1000
    python benchmarks/coverage.py --reps 300 --regime panic-issue23 --json out.json

The harness itself (regimes, estimators, truths, pass rule) is tests/coverage_harness.py, shared with the
reduced run in CI (tests/test_coverage.py). Prints one row per (regime, estimator, metric) cell: coverage
with its exact 95% interval, the largest number of misses consistent with >= 93% coverage (99.9% binomial
quantile), Wilson's coverage on counted cells and the pre-issue-23 cmc p_bad interval's for comparison;
then the adaptive cases. Exit 1 if a cell or a case fails. Not a timing benchmark (no wall-clock ratios).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine  # noqa: E402

import coverage_harness as ch  # noqa: E402


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f}%" if pct else f"{x:.3g}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--truths", action="store_true", help="recompute and store the truths, then stop")
    ap.add_argument("--reps", type=int, default=ch.FULL_REPS, help=f"small runs per cell (default {ch.FULL_REPS})")
    ap.add_argument("--adaptive-reps", type=int, default=1000, help="sequences per adaptive case (default 1000)")
    ap.add_argument("--regime", action="append", help="only these regimes (repeatable)")
    ap.add_argument("--estimator", action="append", help="only these estimators (repeatable)")
    ap.add_argument("--no-adaptive", action="store_true", help="skip the adaptive cases")
    ap.add_argument("--json", metavar="FILE", help="also write every row as JSON")
    args = ap.parse_args(argv)

    regimes = [r for r in ch.REGIMES if not args.regime or r.name in args.regime]
    if args.truths:
        t0 = time.perf_counter()
        new = ch.compute_truths(regimes)
        old = json.loads(ch.TRUTHS_PATH.read_text()) if ch.TRUTHS_PATH.exists() else {}
        old.update(new)
        ch.TRUTHS_PATH.parent.mkdir(parents=True, exist_ok=True)
        ch.TRUTHS_PATH.write_text(json.dumps(old, indent=1, sort_keys=True) + "\n")
        print(f"wrote {ch.TRUTHS_PATH} ({len(new)} regimes, {time.perf_counter() - t0:.0f} s)")
        for name, t in new.items():
            for m, v in t["metrics"].items():
                print(f"  {name:26} {m:10} {v['value']:.4g} [{v['lo']:.4g}, {v['hi']:.4g}]  {v['how']}")
        return 0

    truths = ch.load_truths()
    print(f"# coverage  {machine()}  load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    estimators = [e for e in ch.ESTIMATOR_TRIALS if not args.estimator or e in args.estimator]
    rows, failed = [], 0
    print(f"coverage of the 95% intervals, {args.reps} runs per cell; a cell fails above max misses "
          f"(99.9% quantile of Binomial(R, 0.07): coverage >= 93% fails with prob <= 0.1%)")
    head = (f"{'regime':26} {'est':5} {'metric':9} {'kind':6} {'method':13} {'trials':>6} {'truth':>9} "
            f"{'coverage [95%]':>22} {'miss/max':>9} {'wilson':>7} {'old':>7} {'truth/hw':>8}")
    print(head)
    print("-" * len(head))
    t0 = time.perf_counter()
    for r in regimes:
        for e in estimators:
            for c in ch.run_cells(r, e, args.reps, truths):
                row = c.row()
                row["truth_precision"] = ch.truth_precision(c, truths)
                rows.append(row)
                failed += not c.passes
                cov = f"{_fmt(c.coverage, True)} [{_fmt(row['coverage_lo'], True)}, {_fmt(row['coverage_hi'], True)}]"
                print(f"{c.regime:26} {e:5} {c.metric:9} {c.kind:6} {c.method:13} {c.trials:>6} {_fmt(c.truth):>9} "
                      f"{cov:>22} {c.misses:>4}/{row['max_misses']:<4} {_fmt(row['wilson_coverage'], True):>7} "
                      f"{_fmt(row['old_coverage'], True):>7} {row['truth_precision']:>8.3f}"
                      + ("" if c.passes else "  FAIL"))
    print(f"({time.perf_counter() - t0:.0f} s)")
    if not args.no_adaptive:
        print(f"\nadaptive decisions, {args.adaptive_reps} sequences per case, target = the truth (any "
              "decision is wrong); a case fails above max wrong (99.9% quantile of Binomial(R, 0.05))")
        head = (f"{'case':42} {'looks':>5} {'wrong/max':>10} {'error [95%]':>22} {'old rule':>9} {'median trials':>13}")
        print(head)
        print("-" * len(head))
        for case in ch.ADAPTIVE:
            if args.regime and case.regime not in args.regime:
                continue
            a = ch.run_adaptive(case, args.adaptive_reps, truths)
            row = a.row()
            rows.append(row)
            failed += not a.passes
            err = f"{_fmt(a.error_rate, True)} [{_fmt(row['error_lo'], True)}, {_fmt(row['error_hi'], True)}]"
            print(f"{case.name:42} {a.looks:>5} {a.wrong:>4}/{row['max_wrong']:<5} {err:>22} "
                  f"{_fmt(row['old_error_rate'], True):>9} {row['median_trials']:>13,.0f}" + ("" if a.passes else "  FAIL"))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=float) + "\n")
    print(f"\n{'FAILED: ' + str(failed) if failed else 'all cells and cases pass'} ({time.perf_counter() - t0:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
