"""`stoprace capacity`: the largest n_cpus under a target failure probability, and fleet rates (queries.answers)."""

from __future__ import annotations

import argparse
import json
import sys

from sweeps.cli.args import positive_float
from sweeps.cli.results import connect_dirs, warn

COMMANDS = {"capacity": "largest n_cpus under a target per-kexec failure probability; fleet failure rates"}


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommand(s) to the `stoprace` parser."""
    c = sub.add_parser(
        "capacity",
        help=COMMANDS["capacity"],
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
    c.add_argument("--target-p", type=positive_float, required=True, metavar="P",
                   help="largest acceptable failure probability per kexec, e.g. 1e-6")
    c.add_argument("--by", nargs="+", metavar="AXIS", help="axes to give one limit per value combination")
    c.add_argument("--metric", default="p_bad", metavar="M",
                   help="p_bad (race+hang+timeout, default), p_race, p_hang or p_timeout")
    c.add_argument("--hosts", type=positive_float, metavar="H", help="hosts in the fleet")
    c.add_argument("--kexecs-per-host-year", type=positive_float, metavar="K", help="kexecs (or reboots) per host per year")
    c.add_argument("--format", choices=("table", "json"), default="table", help="output format (default table)")
    c.add_argument("--partial", action="store_true",
                   help="answer from an incomplete or damaged result set (refused otherwise); the output says so")
    c.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """`stoprace capacity`: the largest safe n_cpus per group and the fleet table."""
    from queries.answers import capacity_answer
    from queries.format import render_table

    con = connect_dirs(args.dirs)
    ans = capacity_answer(con, args.target_p, partial=args.partial, by=args.by, metric=args.metric,
                          hosts=args.hosts, kexecs_per_host_year=args.kexecs_per_host_year, where=args.where,
                          split=args.split)
    warn("capacity", ans.partial)
    if args.format == "json":
        sys.stdout.write(json.dumps(ans.to_dict(), default=str, allow_nan=False, indent=1) + "\n")
        return 0
    cap = ans.capacity
    out = [n + "\n\n" for n in ans.partial]
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


__all__ = ["COMMANDS", "handle", "register"]
