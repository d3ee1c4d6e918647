"""Result directories named on the command line: opened as one DuckDB connection, problems said once."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from sweeps.errors import UsageError

if TYPE_CHECKING:
    import duckdb

__all__ = ["connect_dirs", "warn"]


def connect_dirs(dirs: Sequence[str]) -> duckdb.DuckDBPyConnection:
    """queries.connect over DIRs (a UsageError when none is given)."""
    from queries.db import connect

    if not dirs:
        raise UsageError("give at least one results DIR")
    return connect(*dirs)


def warn(command: str, lines: Iterable[str]) -> None:
    """One `stoprace COMMAND: warning: ...` line on stderr per line (an incomplete or damaged set)."""
    for line in lines:
        print(f"stoprace {command}: warning: {line}", file=sys.stderr)
