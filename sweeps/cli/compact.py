"""`stoprace compact`: rewrite a result set into few large segments (first-release per-task dirs too)."""

from __future__ import annotations

import argparse

from queries.resultset.layout import GC_GRACE_S, SEGMENT_BYTES

COMMANDS = {"compact": "rewrite a results dir into few large segments (old per-task dirs too)"}


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"'{text}' must be a finite number of seconds >= 0")
    return v


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommand(s) to the `stoprace` parser."""
    p = sub.add_parser(
        "compact",
        help=COMMANDS["compact"],
        description=(
            "Rewrite every per-task file (the first release's layout) and every small segment of DIR into "
            f"segments of about {SEGMENT_BYTES >> 20} MiB, atomically: one manifest commit swaps old files for new, so queries "
            "running meanwhile see the old set or the new one, never a mix. The old files are deleted "
            f"--grace seconds later (default {GC_GRACE_S:g}) by the next compact or run on DIR. DIR is a path "
            "or a URI like --out (s3://bucket/prefix?endpoint_override=HOST:PORT&scheme=http). Needs the "
            "writer lock: refused while a run writes DIR."
        ),
    )
    p.add_argument("dir", metavar="DIR", help="results dir (path or URI)")
    p.add_argument("--grace", type=_seconds, default=GC_GRACE_S, metavar="SECONDS",
                   help=f"keep superseded files this long for readers still using them (default {GC_GRACE_S:g}; "
                        "0 deletes them at once)")
    p.add_argument("--break-lock", action="store_true",
                   help="take the writer lock even if another process holds it (only if that writer is gone)")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """Carry out the subcommand from parsed arguments; returns the exit code."""
    from queries.resultset.errors import StoreError
    from queries.resultset.writer import compact
    from sweeps.integrity import check_result_set, plan_expectation, spec_problem

    v = check_result_set(args.dir)  # one-line refusal if DIR is not a result set (nothing written)
    rs = v.result_set
    spec, problem = spec_problem(rs)
    if v.status == "damaged":  # files left out, or a spec.toml that no longer matches (problem)
        raise StoreError(f"{v.line}; `stoprace run` the same spec to recompute them before compacting")
    expect = plan_expectation(spec, rs.manifest) if spec is not None else None
    rep = compact(rs.backend, break_lock=args.break_lock, grace_s=args.grace, expect=expect)
    print(f"{rep.display}: {rep.tasks} tasks, {rep.files_before} files ({_size(rep.bytes_before)}) -> "
          f"{rep.files_after} files ({_size(rep.bytes_after)})")
    return 0


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


__all__ = ["COMMANDS", "handle", "register"]
