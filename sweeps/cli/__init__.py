"""The `stoprace` command line: one subcommand per module, each registering itself.

Each module in COMMAND_MODULES has the same shape: `COMMANDS` (its subcommand names and their
one-line help, at module level) and `register(subparsers)`, which adds them with
`set_defaults(func=handler)`; a handler takes the parsed arguments and returns the exit code.
A module imports only the standard library and sweeps.cli.args at its top: what a command
needs (numpy, pydantic, pyarrow, DuckDB, Ray, ...) is imported inside `register` or its
handler, so `stoprace --help` and one command's `--help` load none of the others' libraries.
`main` registers fully only the command it was given; the others appear as their help line.

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

COMMAND_MODULES: tuple[str, ...] = (
    "sweeps.cli.simulate",
    "sweeps.cli.run",
    "sweeps.cli.replay",
    "sweeps.cli.query",
    "sweeps.cli.capacity",
    "sweeps.cli.plot",
    "sweeps.cli.importance",
    "sweeps.cli.compare",
    "sweeps.cli.submit",
    "sweeps.cli.serve",
    "sweeps.cli.compact",
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `stoprace` argument parser: every subcommand registered, or (given `command`) only the
    module of that command, the others listed by their help line."""
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
        module = import_module(name)
        if command is None or command in module.COMMANDS:
            module.register(sub)
        else:
            for cmd, help_line in module.COMMANDS.items():
                sub.add_parser(cmd, help=help_line, add_help=False)
    for p in sub.choices.values():
        # no prefix matching: `--n-cpu 4` must be an error, not `--n-cpus 4` (nor, later, the
        # first of two options that share the prefix)
        p.allow_abbrev = False
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand argv names (its first word that is not an option; `stoprace` has no option
    that takes a value before the subcommand)."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `stoprace` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command(argv) or "")
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
