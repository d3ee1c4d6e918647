"""The `stoprace` command line: one subcommand per module, each registering itself.

Bad input is a `core.errors.StopraceError` (SpecError, StoreError, QueryError, ParamError,
UsageError, ...): `main()` prints it as one line on stderr and exits 2; argparse's own usage
errors exit 2 as well. Anything else is a bug: it keeps its traceback and exits 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import import_module

from core.errors import StopraceError
from sweeps.errors import UsageError

__all__ = ["COMMAND_MODULES", "UsageError", "build_parser", "main"]

# Each module has `register(subparsers)` that adds its subcommand(s) with
# `set_defaults(func=...)`; func(args) returns the exit code.
COMMAND_MODULES: tuple[str, ...] = (
    "sweeps.cli.simulate",
    "sweeps.cli.run",
    "sweeps.cli.replay",
    "sweeps.cli.query",
    "sweeps.cli.importance",
    "sweeps.cli.compare",
    "sweeps.cli.submit",
    "sweeps.cli.serve",
    "sweeps.cli.compact",
)


def build_parser() -> argparse.ArgumentParser:
    """The `stoprace` argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="stoprace",
        allow_abbrev=False,
        description=(
            "Parameter sweeps of the x86 Linux stop-other-CPUs race: when does a late REBOOT-IPI "
            "answer plus an NMI make a CPU run old-kernel code and WBINVD during kexec hand-over?"
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        import_module(name).register(sub)
    for command in sub.choices.values():
        # no prefix matching: `--n-cpu 4` must be an error, not `--n-cpus 4` (nor, later, the
        # first of two options that share the prefix)
        command.allow_abbrev = False
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `stoprace` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except StopraceError as e:  # bad input; any other exception is a bug and keeps its traceback
        print(f"stoprace {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `stoprace query ... | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"stoprace {args.command}: interrupted", file=sys.stderr)
        return 130
