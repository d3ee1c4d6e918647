"""`stoprace replay`: one trial's timeline, rebuilt from its (point, shard, trial) address."""

from __future__ import annotations

import argparse
import json
import sys

COMMANDS = {"replay": "rebuild one trial of a results dir and print its per-CPU timeline"}


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module\'s subcommand(s) to the `stoprace` parser."""
    p = sub.add_parser(
        "replay",
        help=COMMANDS["replay"],
        description=(
            "Recompute trial T of shard K of a point from its seed and print what every CPU did: "
            "IPI arrival, irqs-off end, entry into stop_this_cpu(), WBINVD, clear, NMI send/arrival, "
            "racer marks, T_done. Event rows (stoprace query DIR --sql 'select * from events') give addresses."
        ),
    )
    p.add_argument("dir", metavar="DIR", help="results dir (a path or a URI like --out)")
    p.add_argument("--point", required=True, metavar="ID", help="point_id")
    p.add_argument("--shard", required=True, type=int, metavar="K")
    p.add_argument("--trial", required=True, type=int, metavar="T", help="trial index within the shard")
    p.add_argument("--all", action="store_true", help="show every CPU, not only the NMI'd and latest ones")
    p.add_argument("--json", action="store_true", help="print the timeline as JSON")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """Carry out the subcommand from parsed arguments; returns the exit code."""
    from queries.db import open_result_set
    from queries.replay import format_timeline, replay, replay_json
    from sweeps.integrity import check_result_set

    rs = open_result_set(check_result_set(args.dir).result_set)  # the verdict query and the API give
    problem = rs.check().problem()
    if problem:
        print(f"stoprace replay: warning: {problem}", file=sys.stderr)
    r = replay(rs, args.point, args.shard, args.trial)
    if args.json:
        json.dump(replay_json(r), sys.stdout, allow_nan=False)
        print()
    else:
        print(format_timeline(r, all_cpus=args.all))
    return 0 if r.vectorized_outcome == r.result.outcome else 1
