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
    """queries.connect over DIRs as sweeps.integrity.check_result_set judges them (the verdict the HTTP
    API gives too: first-release files held against the plan, the stored spec against its hash); a
    UsageError when none is given."""
    from queries.db import QueryError, connect
    from queries.resultset.errors import StoreError
    from sweeps.integrity import check_result_set

    if not dirs:
        raise UsageError("give at least one results DIR")
    try:
        sets = [check_result_set(d).result_set for d in dirs]
    except StoreError as e:
        raise QueryError(str(e)) from None
    return connect(*sets)


def warn(command: str, lines: Iterable[str]) -> None:
    """One `stoprace COMMAND: warning: ...` line on stderr per line (an incomplete or damaged set)."""
    for line in lines:
        print(f"stoprace {command}: warning: {line}", file=sys.stderr)
