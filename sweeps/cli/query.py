"""`stoprace query`, `stoprace capacity`, `stoprace plot`: DuckDB over result directories (queries/)."""

from __future__ import annotations

import argparse
import json
import math
import sys

import duckdb

from queries.db import QueryError, connect, first_line, require_complete, result_set_problems
from queries.format import FORMATS, check_output, render_table, write_result
from queries.named import list_named, parse_params, run_named, run_sql
from queries.sandbox import check_output_path
from sweeps.errors import UsageError


def _positive_float(text: str) -> float:
    try:
        v = float(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"'{text}' must be a positive number")
    return v


def _size(text: str) -> tuple[float, float]:
    try:
        w, h = (float(s) for s in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not WIDTHxHEIGHT in inches, e.g. 8x6") from None
    if not (math.isfinite(w) and math.isfinite(h) and w > 0 and h > 0):
        raise argparse.ArgumentTypeError(f"'{text}': width and height must be positive numbers (inches)")
    return w, h


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module\'s subcommand(s) to the `stoprace` parser."""
    q = sub.add_parser(
        "query",
        help="SQL over result dirs: views points, events, outcomes; named queries",
        description=(
            "Run SQL over one or more result directories with DuckDB. Views: points (one row per point and "
            "shard), events (one row per race/hang/timeout trial), outcomes (one row per point: parameters, "
            "estimator, counts, p_race/p_hang/p_timeout/p_bad with 95% bounds *_lo/*_hi and *_method (counted: "
            "exact; p_race cmc where the sweep ran cmc, p_bad then cmc+counted), stop-time mean/p50/p99/p999 "
            "in µs), differs (parameters that differ from the defaults), defaults. "
            "Example: stoprace query results/ --named hang_conditions --param threshold=1e-4"
        ),
    )
    q.add_argument("dirs", nargs="*", metavar="DIR", help="result directories (several: the sweep column tells them apart)")
    what = q.add_mutually_exclusive_group(required=True)
    what.add_argument("--sql", metavar="SQL", help="one SQL statement; $name placeholders take --param values")
    what.add_argument("--named", metavar="NAME", help="a named query (see --list)")
    what.add_argument("--list", action="store_true", help="list the named queries and their parameters")
    q.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a query parameter (repeatable)")
    q.add_argument("--format", choices=FORMATS, default="table", help="output format (default table; parquet needs -o)")
    q.add_argument("-o", "--output", metavar="FILE", help="write to FILE (atomically) instead of stdout")
    q.add_argument("--max-rows", type=int, default=100, metavar="N",
                   help="rows shown in a terminal table (default 100, 0 = all)")
    q.add_argument("--partial", action="store_true",
                   help="let hang_conditions answer from an incomplete or damaged result set (it says so)")
    q.set_defaults(func=cmd_query)

    c = sub.add_parser(
        "capacity",
        help="largest n_cpus under a target per-kexec failure probability; fleet failure rates",
        description=(
            "For a target per-kexec failure probability, judged on the 95% upper bound (exact on counted "
            "outcomes, the cmc interval of p_race where the sweep ran cmc; p_bad under cmc adds the counted "
            "hang/timeout part), the largest n_cpus that stays under it for each "
            "combination of the --by axes (default: every other swept axis; swept axes not in --by are taken "
            "worst case, except the scenario axes wait and mitigation and any --split axis, which are always "
            "split out unless fixed with --where). Says when the trial counts cannot resolve "
            "the target and how many trials would. With --hosts and --kexecs-per-host-year, a fleet table "
            "of expected failures per year and the stop-time p99/p999 budget. "
            "Example: stoprace capacity results/ --target-p 1e-6 --where \"wait = 1\" --hosts 10000 "
            "--kexecs-per-host-year 12"
        ),
    )
    c.add_argument("dirs", nargs="+", metavar="DIR", help="result directories")
    c.add_argument("--where", metavar="PREDICATE",
                   help="SQL predicate on outcomes columns, e.g. \"wait = 1\" (the kexec path)")
    c.add_argument("--split", nargs="+", default=[], metavar="AXIS",
                   help="axes never taken worst case, besides wait and mitigation (always split out)")
    c.add_argument("--target-p", type=_positive_float, required=True, metavar="P",
                   help="largest acceptable failure probability per kexec, e.g. 1e-6")
    c.add_argument("--by", nargs="+", metavar="AXIS", help="axes to give one limit per value combination")
    c.add_argument("--metric", default="p_bad", metavar="M",
                   help="p_bad (race+hang+timeout, default), p_race, p_hang or p_timeout")
    c.add_argument("--hosts", type=_positive_float, metavar="H", help="hosts in the fleet")
    c.add_argument("--kexecs-per-host-year", type=_positive_float, metavar="K", help="kexecs (or reboots) per host per year")
    c.add_argument("--format", choices=("table", "json"), default="table", help="output format (default table)")
    c.add_argument("--partial", action="store_true",
                   help="answer from an incomplete or damaged result set (refused otherwise); the output says so")
    c.set_defaults(func=cmd_capacity)

    p = sub.add_parser(
        "plot",
        help="heatmap or line plot of a metric over the swept axes",
        description=(
            "Plot a metric of the outcomes view: with --y a heatmap (log colour scale, cells with a wide "
            "95% interval or 0 events hatched), with --lines one line per value of that axis with 95% error "
            "bars, with neither a single line. Points that share a cell are aggregated (counts summed) and the "
            "title says so. Example: stoprace plot results/ --x n_cpus --y wbinvd_us --metric p_race -o fig.png"
        ),
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="result directories")
    p.add_argument("--x", required=True, metavar="AXIS", help="parameter on the x axis")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--y", metavar="AXIS", help="parameter on the y axis (heatmap)")
    form.add_argument("--lines", metavar="AXIS", help="one line per value of this parameter")
    p.add_argument("--metric", default="p_race", metavar="M",
                   help="p_race (default), p_hang, p_timeout, p_bad, t_mean_us, t_p50_us, t_p99_us, t_p999_us, t_max_us")
    p.add_argument("--where", metavar="PREDICATE", help="SQL predicate on outcomes columns, e.g. \"mitigation = 'none'\"")
    p.add_argument("--title", help="title instead of the automatic one")
    p.add_argument("--size", type=_size, default=(8.0, 6.0), metavar="WxH", help="figure size in inches (default 8x6)")
    p.add_argument("--dpi", type=int, default=100, help="dots per inch (default 100)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="image file (.png, .svg or .pdf)")
    p.set_defaults(func=cmd_plot)


_NEEDS_COMPLETE = frozenset({"hang_conditions"})
"""Named queries whose answer is wrong, not just smaller, on an incomplete set (they say "nowhere")."""


def _connect(dirs: list[str], command: str, warn: bool = True):
    """Connect; print one stderr line per incomplete or damaged set (unless the caller reports it)."""
    if not dirs:
        raise UsageError("give at least one results DIR")
    con = connect(*dirs)
    if warn:
        for p in result_set_problems(con):
            print(f"stoprace {command}: warning: {p}", file=sys.stderr)
    return con


def cmd_query(args: argparse.Namespace) -> int:
    """`stoprace query`: run SQL or a named query, print or write the result."""
    if args.list:
        for nq in list_named():
            print(f"{nq.name:<20} {nq.description}")
            for prm in nq.params:
                default = "(required)" if prm.default is None else f"default {prm.default}"
                print(f"{'':<20}   --param {prm.name}=…  {default}" + (f"; {prm.help}" if prm.help else ""))
        print("\nviews: points, events, outcomes, point_params, params_long, differs, point_bins; tables: defaults, params")
        print("macros: wilson_lo(k, n), wilson_hi(k, n), prob(k, n), hist_x(b, c, h, target), hist_us(x), osum(x, order); "
              "functions: cmc_interval(m, v, n, y_max, conf), cmc_pool_shards/cmc_pool_strata(list of {n, m, v}, "
              "y_max, conf), ratio_interval(p, v, lo, hi, p, v, lo, hi), z_value(conf)")
        return 0
    if args.max_rows < 0:
        raise UsageError("--max-rows must be >= 0")
    check_output(args.format, args.output)
    params = parse_params(args.param)
    needs_all = args.named in _NEEDS_COMPLETE
    con = _connect(args.dirs, "query", warn=not needs_all)
    if args.output:
        check_output_path(args.output, args.dirs)
    notes = require_complete(con, f"--named {args.named}", args.partial) if needs_all else []
    for n in notes:
        print(f"stoprace query: warning: {n}", file=sys.stderr)
    # a terminal table shows --max-rows rows: fetch one more to know whether there are more
    limit = args.max_rows + 1 if args.format == "table" and not args.output and args.max_rows else None
    try:
        if args.named:
            table = run_named(con, args.named, params, limit=limit)
            title = args.named
        else:
            table = run_sql(con, args.sql, params, limit=limit)
            title = None
    except duckdb.Error as e:  # anything run_* did not already turn into a QueryError
        raise QueryError(first_line(e)) from None
    write_result(table, args.format, args.output, max_rows=args.max_rows or None, title=title,
                 total_known=limit is None, notes=notes)
    if args.output:
        print(f"wrote {table.num_rows} rows to {args.output}", file=sys.stderr)
    return 0


def cmd_capacity(args: argparse.Namespace) -> int:
    """`stoprace capacity`: the largest safe n_cpus per group and the fleet table."""
    from queries.capacity import capacity

    con = _connect(args.dirs, "capacity", warn=False)
    partial = require_complete(con, "capacity", args.partial)
    for n in partial:
        print(f"stoprace capacity: warning: {n}", file=sys.stderr)
    cap = capacity(con, args.target_p, by=args.by, metric=args.metric, hosts=args.hosts,
                   kexecs_per_host_year=args.kexecs_per_host_year, where=args.where, split=args.split)
    if args.format == "json":
        d = cap.to_dict()
        if partial:
            d["partial"] = partial
        sys.stdout.write(json.dumps(d, default=str, allow_nan=False, indent=1) + "\n")
        return 0
    out = [n + "\n\n" for n in partial]
    unresolved = [n for n in cap.notes if n.startswith("CANNOT RESOLVE")]
    for n in unresolved:
        out.append(n + "\n\n")
    title = (f"largest n_cpus with the 95% upper bound of {cap.metric} < {cap.target_p:g} per kexec"
             + (f", by {', '.join(cap.by)}" if cap.by else "") + (f", where {cap.where}" if cap.where else ""))
    out.append(render_table(cap.limits, max_rows=None, title=title,
                            notes=[n for n in cap.notes if n not in unresolved and not n.startswith("fleet:")]))
    if cap.fleet is not None:
        out.append("\n")
        out.append(render_table(cap.fleet, max_rows=None, title="fleet: expected failures per year, stop-time budget",
                                notes=[n for n in cap.notes if n.startswith("fleet:")]))
    sys.stdout.write("".join(out))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """`stoprace plot`: render a heatmap or line plot to a file."""
    from queries.plot import check_pixels, plot

    if args.dpi <= 0 or args.dpi > 1200:
        raise UsageError(f"--dpi {args.dpi} must be in 1..1200")
    check_pixels(args.size, args.dpi)  # before reading anything
    con = _connect(args.dirs, "plot")
    check_output_path(args.output, args.dirs)
    res = plot(con, args.output, x=args.x, y=args.y, metric=args.metric, lines=args.lines, where=args.where,
               title=args.title, size=args.size, dpi=args.dpi)
    note = f" ({res.title.splitlines()[1]})" if "\n" in res.title else ""
    est = sorted({c["estimator"] for c in res.cells if c.get("estimator")})
    what = f"{args.metric} ({' and '.join(est)} estimate)" if est else args.metric
    print(f"wrote {res.kind} of {what} over {res.n_points} points, {res.size_px[0]}x{res.size_px[1]} px, "
          f"to {res.path}{note}")
    return 0


__all__ = ["register", "cmd_query", "cmd_capacity", "cmd_plot"]
