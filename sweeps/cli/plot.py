"""`stoprace plot`: a heatmap or line plot of a metric over the swept axes (queries.plot)."""

from __future__ import annotations

import argparse
import math

from sweeps.cli.results import connect_dirs, warn
from sweeps.errors import UsageError

COMMANDS = {"plot": "heatmap or line plot of a metric over the swept axes"}


def _size(text: str) -> tuple[float, float]:
    try:
        w, h = (float(s) for s in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not WIDTHxHEIGHT in inches, e.g. 8x6") from None
    if not (math.isfinite(w) and math.isfinite(h) and w > 0 and h > 0):
        raise argparse.ArgumentTypeError(f"'{text}': width and height must be positive numbers (inches)")
    return w, h


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommand(s) to the `stoprace` parser."""
    p = sub.add_parser(
        "plot",
        help=COMMANDS["plot"],
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
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """`stoprace plot`: render a heatmap or line plot to a file."""
    from queries.db import result_set_problems
    from queries.plot import check_pixels, plot
    from queries.sandbox import check_output_path

    if args.dpi <= 0 or args.dpi > 1200:
        raise UsageError(f"--dpi {args.dpi} must be in 1..1200")
    check_pixels(args.size, args.dpi)  # before reading anything
    con = connect_dirs(args.dirs)
    warn("plot", result_set_problems(con))
    check_output_path(args.output, args.dirs)
    res = plot(con, args.output, x=args.x, y=args.y, metric=args.metric, lines=args.lines, where=args.where,
               title=args.title, size=args.size, dpi=args.dpi)
    note = f" ({res.title.splitlines()[1]})" if "\n" in res.title else ""
    est = sorted({c["estimator"] for c in res.cells if c.get("estimator")})
    what = f"{args.metric} ({' and '.join(est)} estimate)" if est else args.metric
    print(f"wrote {res.kind} of {what} over {res.n_points} points, {res.size_px[0]}x{res.size_px[1]} px, "
          f"to {res.path}{note}")
    return 0


__all__ = ["COMMANDS", "handle", "register"]
