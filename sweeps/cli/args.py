"""Argument types and option groups that several `stoprace` commands share (one definition each).

Imported at the top of command modules, so it imports nothing heavy itself: the size bounds
that `--force`'s help quotes are read from sweeps.guards only when the options are added.
"""

from __future__ import annotations

import argparse
import math

__all__ = ["add_scheduling_options", "count_arg", "positive_float"]


def count_arg(text: str) -> int:
    """A positive count that may be written 1000000, 1_000_000 or 1e6."""
    try:
        v = float(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number (e.g. 1000000 or 1e6)") from None
    if not math.isfinite(v) or v < 1 or v != int(v):
        raise argparse.ArgumentTypeError(f"'{text}' must be a whole number >= 1")
    return int(v)


def positive_float(text: str) -> float:
    """A finite number > 0 (1e-6, 10_000)."""
    try:
        v = float(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"'{text}' must be a positive number")
    return v


def add_scheduling_options(p: argparse.ArgumentParser) -> None:
    """Options `run` and `submit` share: how much is in flight, retries, the size guards' --force."""
    from sweeps.guards import MAX_CPU_TRIALS, MAX_TASKS, approx
    from sweeps.spec import MAX_POINTS

    p.add_argument("--max-in-flight", type=count_arg, metavar="N", help="Ray calls submitted at once (default 2 x cluster CPUs; tiny tasks share a call)")
    p.add_argument("--retries", type=int, default=3, metavar="N", help="retries of a task whose worker or node died (default 3)")
    p.add_argument(
        "--force",
        action="store_true",
        help=(
            f"allow a sweep above the size guards: more than {approx(MAX_POINTS)} points, "
            f"{approx(MAX_CPU_TRIALS)} CPU-trials (n_cpus x trials) or {approx(MAX_TASKS)} tasks"
        ),
    )
