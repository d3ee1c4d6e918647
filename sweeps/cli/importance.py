"""`stoprace importance`: which swept axis drives a metric (queries.importance: exact Sobol indices over the grid)."""

from __future__ import annotations

import argparse
import json
import sys

COMMANDS = {"importance": "which swept axis drives a metric: first-order and total variance shares, noise taken out"}
TABLE_COLUMNS = ("sweep", "scenario", "axis", "levels", "first_order", "total", "first_order_raw", "total_raw",
                 "noise_share", "points", "zero_points")
"""What the terminal table shows (--format json has every column)."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommand(s) to the `stoprace` parser."""
    p = sub.add_parser(
        "importance",
        help=COMMANDS["importance"],
        description=(
            "Variance-based (Sobol) importance of every swept axis for Y = log10 of a metric's estimate (the cmc "
            "estimate where the sweep ran cmc), computed exactly over the full-factorial grid as run: first_order "
            "is the share of Var(Y) the axis explains alone, total its share with every interaction it is in. The "
            "within-point Monte Carlo variance of Y (delta method) is subtracted from every variance term, so noise "
            "is not importance; noise_share is the part of the observed variance that is noise (first_order_raw, "
            "total_raw: uncorrected). Scenario axes (wait, mitigation, model_rev, and every --by axis) are never "
            "folded in: each combination of their values is ranked on its own. A point whose estimate is 0 enters "
            "at its 95% upper bound (counted in zero_points). Example: stoprace importance results/tdx "
            "--metric p_bad --where \"n_cpus >= 64\""
        ),
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="result directories (paths or URIs); each sweep is ranked on its own")
    p.add_argument("--metric", default="p_race", metavar="M", help="p_race (default), p_bad, p_hang or p_timeout")
    p.add_argument("--where", metavar="PREDICATE",
                   help="SQL predicate on the points' parameters, e.g. \"wait = 1\" (the grid must stay full)")
    p.add_argument("--by", nargs="+", default=[], metavar="AXIS",
                   help="axes reported value by value, besides wait, mitigation and model_rev")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default table)")
    p.add_argument("--partial", action="store_true",
                   help="answer from an incomplete or damaged result set (refused otherwise); the output says so")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """Rank the axes and print the table (or JSON), the verdicts and the notes."""
    import pyarrow.compute as pc

    from queries.answers import marked
    from queries.db import require_complete
    from queries.format import render_table
    from queries.importance import importance
    from sweeps.cli.results import connect_dirs, warn

    con = connect_dirs(args.dirs)
    partial = require_complete(con, "importance", args.partial)
    warn("importance", partial)
    imp = importance(con, args.metric, by=args.by, where=args.where)
    if args.format == "json":
        sys.stdout.write(json.dumps(marked(imp.to_dict(), partial), default=str, allow_nan=False, indent=1) + "\n")
        return 0
    cols = [c for c in TABLE_COLUMNS if c != "sweep" or len(set(imp.rows.column("sweep").to_pylist())) > 1]
    title = f"importance of each swept axis for log10 {imp.metric}" + (f", where {imp.where}" if imp.where else "")
    # scenarios where every point is 0 have only NULL indices: their verdict line says so, the table skips them
    rows = imp.rows.filter(pc.less(imp.rows["zero_points"], imp.rows["points"]))
    out = [n + "\n\n" for n in partial]
    out.append(render_table(rows.select(cols), max_rows=None, title=title))
    out.append("\n" + "\n".join(imp.verdicts) + "\n\n" + "\n".join(imp.notes) + "\n")
    sys.stdout.write("".join(out))
    return 0


__all__ = ["COMMANDS", "handle", "register"]
