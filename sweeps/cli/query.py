"""`stoprace query`: SQL or a named query over result directories (queries.answers, DuckDB views)."""

from __future__ import annotations

import argparse
import sys

from sweeps.cli.results import connect_dirs, warn
from sweeps.errors import UsageError

COMMANDS = {"query": "SQL over result dirs: views points, events, outcomes; named queries"}


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommand(s) to the `stoprace` parser."""
    from queries.format import FORMATS

    q = sub.add_parser(
        "query",
        help=COMMANDS["query"],
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
                   help="let a named query that needs every point (--list says which, e.g. hang_conditions) answer "
                        "from an incomplete or damaged result set (it says so)")
    q.set_defaults(func=handle)


def _list() -> None:
    from queries.named import PARAM_KINDS, list_named

    for nq in list_named():
        print(f"{nq.name:<20} {nq.description}" + (" [needs every point]" if nq.needs_complete else ""))
        for prm in nq.params:
            default = "(required)" if prm.default is None else f"default {prm.default}"
            print(f"{'':<20}   --param {prm.name}=…  {prm.kind} ({PARAM_KINDS[prm.kind].says}), {default}"
                  + (f"; {prm.help}" if prm.help else ""))
    print("\nviews: points, events, outcomes, point_params, params_long, differs, point_bins; tables: defaults, params")
    print("macros: wilson_lo(k, n), wilson_hi(k, n), prob(k, n), hist_x(b, c, h, target), hist_us(x), osum(x, order); "
          "functions: cmc_interval(m, v, n, y_max, conf), cmc_pool_shards/cmc_pool_strata(list of {n, m, v}, "
          "y_max, conf), ratio_interval(p, v, lo, hi, p, v, lo, hi), z_value(conf)")


def handle(args: argparse.Namespace) -> int:
    """`stoprace query`: run SQL or a named query, print or write the result."""
    import duckdb

    from queries.answers import named_answer, sql_answer
    from queries.db import QueryError, first_line
    from queries.format import check_output, write_result
    from queries.named import parse_params
    from queries.sandbox import check_output_path

    if args.list:
        _list()
        return 0
    if args.max_rows < 0:
        raise UsageError("--max-rows must be >= 0")
    check_output(args.format, args.output)
    params = parse_params(args.param)
    con = connect_dirs(args.dirs)
    if args.output:
        check_output_path(args.output, args.dirs)
    # a terminal table shows --max-rows rows: fetch one more to know whether there are more
    limit = args.max_rows + 1 if args.format == "table" and not args.output and args.max_rows else None
    try:
        if args.named:
            ans = named_answer(con, args.named, params, partial=args.partial, limit=limit)
        else:
            ans = sql_answer(con, args.sql, params, limit=limit)
    except duckdb.Error as e:  # anything run_* did not already turn into a QueryError
        raise QueryError(first_line(e)) from None
    warn("query", [*ans.warnings, *ans.partial])
    write_result(ans.table, args.format, args.output, max_rows=args.max_rows or None, title=args.named,
                 total_known=limit is None, notes=ans.partial)
    if args.output:
        print(f"wrote {ans.table.num_rows} rows to {args.output}", file=sys.stderr)
    return 0


__all__ = ["COMMANDS", "handle", "register"]
