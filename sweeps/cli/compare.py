"""`stoprace compare`: two result sets point by point (queries.compare: ratio B / A with a 95% interval)."""

from __future__ import annotations

import argparse
import json
import sys

COMMANDS = {
    "compare": "two result sets point by point: ratio B / A of a metric with its 95%% interval, changed points flagged",
}
HIDDEN = ("point_a", "point_b", "estimator_a", "estimator_b", "trials_a", "trials_b")
"""Columns --format json has and the terminal table leaves out."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommand(s) to the `stoprace` parser."""
    p = sub.add_parser(
        "compare",
        help=COMMANDS["compare"],
        description=(
            "Match the points of result sets A and B on their parameters (all of them, except those that differ "
            "by construction: one value throughout A and another throughout B, e.g. model_rev; or only the --on "
            "axes) and give ratio = p_B / p_A of the metric with its 95% interval (the method of mitigation_effect: "
            "delta-log, or bounds from the 97.5% interval ends where a side is 0 or too uncertain). changed: the "
            "two points' 95% intervals do not overlap. Unmatched points are counted on each side. A and B may be "
            "local paths or URIs (s3://...), and may be the same set. Example: stoprace compare results/rev1 "
            "results/rev2 --metric p_race"
        ),
    )
    p.add_argument("a", metavar="A", help="the result set compared against (the ratio's denominator)")
    p.add_argument("b", metavar="B", help="the other result set (the ratio's numerator)")
    p.add_argument("--on", nargs="+", metavar="AXIS", help="match on these parameters only (default: every parameter "
                   "except those that differ by construction)")
    p.add_argument("--metric", default="p_race", metavar="M", help="p_race (default), p_bad, p_hang or p_timeout")
    p.add_argument("--where", metavar="PREDICATE", help="SQL predicate on the points' parameters, applied to both sides")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default table)")
    p.add_argument("--max-rows", type=int, default=100, metavar="N", help="rows shown in the table (default 100, 0 = all)")
    p.add_argument("--partial", action="store_true",
                   help="answer from an incomplete or damaged result set (refused otherwise); the output says so")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """Compare and print the table (or JSON), the verdict and the notes."""
    from core.params import DEFAULTS
    from queries.answers import marked
    from queries.compare import compare
    from queries.db import require_complete
    from queries.format import render_table
    from sweeps.cli.results import connect_dirs, warn
    from sweeps.errors import UsageError

    if args.max_rows < 0:
        raise UsageError("--max-rows must be >= 0")
    partial: list[str] = []
    cons = []
    for d in (args.a, args.b):
        con = connect_dirs([d])
        partial += require_complete(con, "compare", args.partial)
        cons.append(con)
    warn("compare", partial)
    c = compare(cons[0], cons[1], metric=args.metric, on=args.on, where=args.where, labels=(args.a, args.b))
    if args.format == "json":
        sys.stdout.write(json.dumps(marked(c.to_dict(), partial), default=str, allow_nan=False, indent=1) + "\n")
        return 0
    title = f"{c.metric}: B / A at {c.matched} matched points"
    table = c.rows.select([n for n in c.rows.column_names if n not in HIDDEN])
    changed_held = {k: v for k, v in c.held.items() if DEFAULTS.get(k) != v}
    held = (f"matched on {len(c.on)} parameters; the same at every matched point: "
            + "".join(f"{k}={v}, " for k, v in changed_held.items())
            + f"{len(c.held) - len(changed_held)} more at their defaults (--format json lists them)")
    out = [n + "\n\n" for n in partial]
    out.append(render_table(table, max_rows=args.max_rows or None, title=title))
    out.append("\n" + c.verdict + "\n\n" + "\n".join([f"A = {c.a}, B = {c.b}", *c.notes, held]) + "\n")
    sys.stdout.write("".join(out))
    return 0


__all__ = ["COMMANDS", "handle", "register"]
