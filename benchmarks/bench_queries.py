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
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.dataset as ds  # noqa: E402

from core.outcomes import OUTCOMES  # noqa: E402
from queries.db import connect  # noqa: E402

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
    args = ap.parse_args(argv)

    tmp = None
    if args.dir:
        d = Path(args.dir)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench-queries-")
        d = Path(tmp.name) / "r"
    try:
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
            table = ds.dataset(d / "points", format="parquet").to_table(columns=["sweep", "point_id", *SUMS])
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
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
