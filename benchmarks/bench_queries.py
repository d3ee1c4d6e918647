"""How fast is the `outcomes` view? DuckDB over Parquet vs a pyarrow group_by, on synthetic points rows.

Builds a result dir of N points rows (default 1,000,000: 125,000 points x 8
shards, in 10 task files, same schema as the store) in a temp dir, then times:

- duckdb outcomes count: `SELECT count(*), sum(p_race) FROM outcomes` (DuckDB may
  skip the columns this does not need, e.g. the histogram quantiles);
- duckdb outcomes full: `CREATE TEMP TABLE ... AS SELECT * FROM outcomes` (every
  column: Wilson bounds, merged histograms, p50/p99/p999);
- duckdb sums: the per-point sums of trials and every outcome count, `GROUP BY sweep,
  point_id`, each consumed (its total returned), so no column is pruned;
- pyarrow sums: read the same columns, `Table.group_by().aggregate()` the same
  per-point sums, p_race by pyarrow.compute (no pandas), the same totals returned.
  Both sides compute the same sums (checked equal): their ratio compares like with like.

Prints best-of-R seconds and ratios; never passes or fails on time.

    python benchmarks/bench_queries.py [--rows 1000000] [--files 10] [--repeat 3]

With --cluster-example: a result set the size of examples/tdx-kexec-cluster.toml
(10,920 points x 10 shards = 109,200 points rows, as 54,600 tasks of two shards; the
points are the example's full grid, 10 n_cpus x 13 wbinvd_us x 6 ipi_jitter_us x 7
p_stall x 2 mitigation) is written through the real store (sweeps.store.ResultStore.write_task:
segments, commits, merges), and a second set B of the same grid with other counts is written
directly; then a fresh process times the full `outcomes`, the capacity table, `importance`
(p_race) and `compare` A vs B, and reports its peak RSS (targets: outcomes <= 3 s, importance
and compare <= 1 s each, <= 1 GiB on a 2-core machine).
``--scales 1,2,4`` writes 1x, 2x and 4x that size (4x: 43,680 points, 436,800 rows; point j has
the parameters of grid cell j mod 10,920) and prints, for each in a fresh process, how its peak
RSS (ru_maxrss, after `outcomes` and after the capacity table) and times grow with the rows
(issue 22 item 6: <= 1 GiB at 4x, linear). ``--estimator cmc`` writes the rows as cmc shards, as
the real cluster example's are, so `outcomes` pools every point through queries.estimates.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

from core.outcomes import OUTCOMES  # noqa: E402
from queries.db import connect  # noqa: E402
from queries.resultset.reader import ResultSet  # noqa: E402

CLUSTER_POINTS, CLUSTER_SHARDS, ROWS_PER_TASK = 10_920, 10, 2
CLUSTER_SPEC = Path(__file__).resolve().parents[1] / "examples" / "tdx-kexec-cluster.toml"


def cluster_axes() -> dict[str, tuple]:
    """The swept axes of examples/tdx-kexec-cluster.toml and their values (its full grid is CLUSTER_POINTS cells)."""
    from sweeps.spec import load_spec

    axes = {a.name: a.values for a in load_spec(CLUSTER_SPEC).axes}
    assert math.prod(len(v) for v in axes.values()) == CLUSTER_POINTS, axes
    return axes

import synthetic_results as sr  # noqa: E402

SUMS = ["trials", *OUTCOMES]


def best(fn, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--shards", type=int, default=8, help="shards per point")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="DuckDB threads (0 = all cores)")
    ap.add_argument("--dir", help="use/keep this dir instead of a temp dir")
    ap.add_argument("--cluster-example", action="store_true",
                    help="109,200 rows written through the real store; time and peak RSS of outcomes and capacity")
    ap.add_argument("--scales", help="with --cluster-example: comma-separated multiples of its size, e.g. 1,2,4")
    ap.add_argument("--estimator", choices=["naive", "cmc"], default="naive",
                    help="with --scales: the estimator the rows say they ran (cmc: outcomes pools every point "
                         "through the Python functions of queries.estimates, as for the real cluster example)")
    ap.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # the child process of --cluster-example
    ap.add_argument("--dir-b", help=argparse.SUPPRESS)  # its set B for compare
    args = ap.parse_args(argv)
    if args.measure:
        return measure(Path(args.dir), Path(args.dir_b) if args.dir_b else None, args.repeat)
    if args.cluster_example:
        return cluster_example(args)

    with result_dir(args.dir) as d:
        if not (d / "manifest.json").exists():
            t0 = time.perf_counter()
            sr.write_bulk(d, args.rows, shards_per_point=args.shards, n_files=args.files)
            print(f"wrote {args.rows:,} points rows ({args.rows // args.shards:,} points x {args.shards} shards, "
                  f"{args.files} files, {sum(f.stat().st_size for f in (d / 'points').iterdir()) / 1e6:.1f} MB) "
                  f"in {time.perf_counter() - t0:.1f} s")
        print(f"cores: {os.cpu_count()}, duckdb threads: {args.threads or 'default'}, best of {args.repeat}")

        con = connect(d, threads=args.threads or None)

        t_count, (n_pts, s_duck) = best(
            lambda: con.sql("SELECT count(*), sum(p_race) FROM outcomes").fetchall()[0], args.repeat)

        def full():
            con.execute("CREATE OR REPLACE TEMP TABLE bench_outcomes AS SELECT * FROM outcomes")
            return con.sql("SELECT count(*), sum(p_race), sum(t_p99_us) FROM bench_outcomes").fetchall()[0]

        t_full, (n_full, s_full, _) = best(full, args.repeat)
        # Same work on both sides: every per-point sum of SUMS is computed and consumed (the totals
        # of each are returned and compared), so neither engine can skip a column the other reads.
        sums = ", ".join(f"sum({c}) AS {c}" for c in SUMS)
        totals = ", ".join(f"sum({c})" for c in SUMS)
        t_dsum, (n_dsum, s_dsum, *tot_duck) = best(lambda: con.sql(
            f"SELECT count(*), sum(race / trials), {totals} FROM (SELECT sweep, point_id, {sums} FROM points GROUP BY ALL)"
        ).fetchall()[0], args.repeat)

        def arrow():
            table = ResultSet.open(d).read_table("points", columns=["sweep", "point_id", *SUMS])
            g = table.group_by(["sweep", "point_id"]).aggregate([(c, "sum") for c in SUMS])
            p = pc.divide(pc.cast(g["race_sum"], pa.float64()), pc.cast(g["trials_sum"], pa.float64()))
            return g.num_rows, pc.sum(p).as_py(), *(pc.sum(g[f"{c}_sum"]).as_py() for c in SUMS)

        t_arrow, (n_arrow, s_arrow, *tot_arrow) = best(arrow, args.repeat)
        assert n_pts == n_full == n_dsum == n_arrow, (n_pts, n_full, n_dsum, n_arrow)
        assert [int(x) for x in tot_duck] == [int(x) for x in tot_arrow], (tot_duck, tot_arrow)
        for s in (s_full, s_dsum):
            assert abs(s - s_arrow) <= 1e-9 * abs(s_arrow) + 1e-12, (s, s_arrow)
        assert abs(s_duck - s_arrow) <= 1e-9 * abs(s_arrow) + 1e-12

        print(f"points: {n_pts:,}; sum of p_race agrees ({s_arrow:.6g})")
        print(f"{'duckdb outcomes count(*), sum(p_race)':<44}{t_count:8.3f} s")
        print(f"{'duckdb outcomes, every column materialized':<44}{t_full:8.3f} s")
        print(f"{'duckdb per-point sums (all 6)':<44}{t_dsum:8.3f} s")
        print(f"{'pyarrow group_by per-point sums (all 6)':<44}{t_arrow:8.3f} s")
        print(f"ratio outcomes(full) / pyarrow sums: {t_full / t_arrow:.2f}")
        print(f"ratio outcomes(count) / pyarrow sums: {t_count / t_arrow:.2f}")
        print(f"ratio duckdb sums / pyarrow sums: {t_dsum / t_arrow:.2f}")
        print(f"rows/s, outcomes full: {args.rows / t_full:,.0f}")
    return 0


def with_estimator_columns(t: pa.Table, estimator: str = "naive") -> pa.Table:
    """The estimator's columns (as sweeps.shard writes them; for "cmc" the same per-shard mean and
    variance, so `outcomes` pools them through queries.estimates) and null preflush columns."""
    n = pc.cast(t["trials"], pa.float64())
    p_race = pc.divide(pc.cast(t["race"], pa.float64()), n)
    bad = pc.add(pc.add(t["race"], t["hang"]), t["timeout"])
    p_bad = pc.divide(pc.cast(bad, pa.float64()), n)
    var = lambda p: pc.divide(pc.multiply(p, pc.subtract(1.0, p)), pc.subtract(n, 1.0))  # noqa: E731
    cols = {"estimator": pa.array([estimator] * t.num_rows), "p_race_est": p_race, "p_race_var": var(p_race),
            "p_bad_est": p_bad, "p_bad_var": var(p_bad), "preflush_sum_us": pa.nulls(t.num_rows, pa.float64()),
            "preflush_max_us": pa.nulls(t.num_rows, pa.float64()),
            "preflush_hist": pa.nulls(t.num_rows, pa.list_(pa.int64()))}
    for name, col in cols.items():
        t = t.append_column(name, col)
    return t


def build_through_store(d: Path, scale: int = 1, estimator: str = "naive") -> None:
    """`scale` x the cluster example's size through ResultStore.write_task, two shards per task, then finish."""
    import numpy as np

    from queries.resultset.schema import POINTS_SCHEMA
    from sweeps.spec import parse_spec
    from sweeps.store import ResultStore

    rows = CLUSTER_POINTS * scale * CLUSTER_SHARDS
    spec = parse_spec({"name": "bulk", "seed": 0, "trials": 1000, "axes": {"n_cpus": [2, 4]}})
    rng = np.random.default_rng(0)
    axes = cluster_axes()
    store = ResultStore.create_or_open(d, spec)
    t0, c0 = time.perf_counter(), time.process_time()
    n_tasks = 0
    for start in range(0, rows, 8192):  # build 8192 rows at a time, store them task by task
        table = with_estimator_columns(
            sr.bulk_rows(np.arange(start, min(start + 8192, rows)), rng, shards_per_point=CLUSTER_SHARDS, axes=axes),
            estimator)
        table = table.select(POINTS_SCHEMA.names).cast(POINTS_SCHEMA)  # as sweeps.shard.run_task returns it
        for off in range(0, table.num_rows, ROWS_PER_TASK):
            store.write_task(n_tasks, table.slice(off, ROWS_PER_TASK))
            n_tasks += 1
    store.finish(n_tasks)
    store.close()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    m = ResultSet.open(d).manifest
    files = [f for seg in m.segments for f in seg.files()]
    print(f"stored {rows:,} points rows ({CLUSTER_POINTS * scale:,} points x {CLUSTER_SHARDS} shards) as {n_tasks:,} tasks "
          f"through the store in {wall:.1f} s ({n_tasks / wall:,.0f} tasks/s; {cpu:.1f} CPU-s incl. building rows): "
          f"{len(files)} committed files, {sum(f.size for f in files) / 2**20:.1f} MiB")


def measure(d: Path, d_b: Path | None, repeat: int) -> int:
    """(child process) full outcomes, capacity, importance over `d` and compare `d` vs `d_b` (without `d_b`:
    outcomes and capacity only): best-of-`repeat` seconds and this process's peak RSS, also after connecting
    and after outcomes."""
    import json
    import resource

    from queries.capacity import capacity
    from queries.compare import compare
    from queries.importance import importance

    t0 = time.perf_counter()
    con = connect(d)
    t_connect = time.perf_counter() - t0

    def peak() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def full():
        return con.sql("SELECT * FROM outcomes").to_arrow_table()

    rss_connect = peak()
    c0 = time.process_time()
    t_full, out = best(full, repeat)
    c1 = time.process_time()
    rss_outcomes = peak()
    t_cap, cap = best(lambda: capacity(con, 1e-3), repeat)
    c2 = time.process_time()
    m = {"connect_s": t_connect, "outcomes_s": t_full, "outcomes_rows": out.num_rows,
         "outcomes_cpu_s": (c1 - c0) / repeat, "capacity_cpu_s": (c2 - c1) / repeat,
         "capacity_s": t_cap, "capacity_rows": cap.limits.num_rows,
         "rss_connect_mib": rss_connect, "rss_outcomes_mib": rss_outcomes}
    if d_b is not None:
        con_b = connect(d_b)
        t_imp, imp = best(lambda: importance(con, "p_race"), repeat)
        c3 = time.process_time()
        t_cmp, cmp_ = best(lambda: compare(con, con_b, metric="p_race"), repeat)
        c4 = time.process_time()
        m.update({"importance_s": t_imp, "importance_cpu_s": (c3 - c2) / repeat,
                  "importance_points": imp.rows.column("points")[0].as_py(), "importance_rows": imp.rows.num_rows,
                  "compare_s": t_cmp, "compare_cpu_s": (c4 - c3) / repeat, "compare_matched": cmp_.matched})
    m["peak_rss_mib"] = peak()
    print(json.dumps(m))
    return 0


@contextlib.contextmanager
def result_dir(given: str | None) -> Iterator[Path]:
    """--dir if given (kept for the next run), else a temporary dir removed at the end."""
    if given:
        yield Path(given)
        return
    with tempfile.TemporaryDirectory(prefix="bench-queries-") as t:
        yield Path(t) / "r"


def cluster_example(args) -> int:
    from machine import machine

    print("# bench_queries --cluster-example ", machine())
    if args.scales:
        return scaling(args, [int(x) for x in args.scales.split(",")])
    with result_dir(args.dir) as d:
        if not (d / "manifest.json").exists():
            build_through_store(d)
        d_b = d.with_name(d.name + "-b")
        if not (d_b / "manifest.json").exists():
            sr.write_bulk(d_b, CLUSTER_POINTS * CLUSTER_SHARDS, shards_per_point=CLUSTER_SHARDS, n_files=4,
                          sweep="bulk-b", seed=1, axes=cluster_axes())
        m = measure_in_subprocess(d, args.repeat, d_b)
        print(f"connect (manifest, checksums, views)       {m['connect_s']:8.3f} s")
        print(f"full outcomes ({m['outcomes_rows']:,} points, every column) {m['outcomes_s']:8.3f} s   (target <= 3 s; "
              f"{m['outcomes_cpu_s']:.3f} CPU-s in all threads)")
        print(f"capacity table ({m['capacity_rows']} rows, target 1e-3)         {m['capacity_s']:8.3f} s   "
              f"({m['capacity_cpu_s']:.3f} CPU-s)")
        print(f"importance p_race ({m['importance_rows']} rows, {m['importance_points']:,}-point grids)  "
              f"{m['importance_s']:8.3f} s   (target <= 1 s; {m['importance_cpu_s']:.3f} CPU-s)")
        print(f"compare A vs B ({m['compare_matched']:,} matched points)          {m['compare_s']:8.3f} s   "
              f"(target <= 1 s; {m['compare_cpu_s']:.3f} CPU-s)")
        print(f"ratio importance / full outcomes: {m['importance_s'] / m['outcomes_s']:.2f}; "
              f"compare / full outcomes: {m['compare_s'] / m['outcomes_s']:.2f}")
        print(f"peak RSS of the query process              {m['peak_rss_mib']:8.0f} MiB (target <= 1024 MiB)")
    return 0


def measure_in_subprocess(d: Path, repeat: int, d_b: Path | None = None) -> dict:
    """`measure` in a fresh process (its own peak RSS), as a dict."""
    import json
    import subprocess

    extra = ["--dir-b", str(d_b)] if d_b is not None else []
    r = subprocess.run([sys.executable, __file__, "--measure", "--dir", str(d), *extra, "--repeat", str(repeat)],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def scaling(args, scales: list[int]) -> int:
    """The cluster example at each scale: build (once, kept with --dir), then measure each in a fresh process."""
    with result_dir(args.dir) as base:
        dirs = {}
        for k in scales:
            d = base.parent / (f"{base.name}-x{k}" + ("" if args.estimator == "naive" else f"-{args.estimator}"))
            if not (d / "manifest.json").exists():
                build_through_store(d, k, args.estimator)
            dirs[k] = d
        print(f"estimator: {args.estimator}")
        print(f"{'scale':>5} {'rows':>8} {'points':>7} {'outcomes s':>10} {'CPU s':>6} {'capacity s':>10} "
              f"{'RSS connect':>11} {'RSS outcomes':>12} {'RSS peak':>9}  (MiB; target <= 1024 at 4x)")
        ms = {}
        for k, d in dirs.items():
            m = ms[k] = measure_in_subprocess(d, args.repeat)
            print(f"{k:>4}x {CLUSTER_POINTS * k * CLUSTER_SHARDS:>8,} {m['outcomes_rows']:>7,} {m['outcomes_s']:>10.3f} "
                  f"{m['outcomes_cpu_s']:>6.2f} {m['capacity_s']:>10.3f} {m['rss_connect_mib']:>11.0f} "
                  f"{m['rss_outcomes_mib']:>12.0f} {m['peak_rss_mib']:>9.0f}")
        lo, hi = min(ms), max(ms)
        if hi > lo:
            def grow(key: str) -> float:
                return (ms[hi][key] - ms[lo][key]) / (hi - lo)

            print(f"per 1x more rows ({CLUSTER_POINTS * CLUSTER_SHARDS:,}): RSS after outcomes "
                  f"+{grow('rss_outcomes_mib'):.0f} MiB, peak +{grow('peak_rss_mib'):.0f} MiB, "
                  f"outcomes +{grow('outcomes_s'):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
