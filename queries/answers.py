"""The answers both front doors give, each with the rules of its question applied in one place.

`stoprace query` / `capacity` and the HTTP API call these, never `run_named` or `capacity`
with their own checks: a question that needs every point (a named query whose header says
`needs: complete`, and capacity, whose limits would silently rise over missing points) is
refused on an incomplete or damaged set unless the caller asks for a partial answer, and
such an answer carries `PARTIAL: ...` lines; any other answer from such a set carries the
set's problem as a warning. `partial_flag` is the door's spelling of "answer anyway" (the
CLI's `--partial`, the API's `partial=true`), named in the refusal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from queries.db import require_complete, result_set_problems
from queries.named import load_named, run_named, run_sql

if TYPE_CHECKING:
    from queries.capacity import Capacity

__all__ = ["Answer", "CapacityAnswer", "capacity_answer", "marked", "named_answer", "sql_answer"]


def marked(d: dict[str, Any], partial: Sequence[str]) -> dict[str, Any]:
    """An answer's JSON dict with its `PARTIAL: ...` lines under "partial" when there are any (every
    JSON answer of both doors: capacity, importance, compare)."""
    if partial:
        d["partial"] = list(partial)
    return d


@dataclass(frozen=True)
class Answer:
    """A table and what must be said with it."""

    table: pa.Table
    partial: list[str] = field(default_factory=list)
    """`PARTIAL: <problem>` lines: a needs-complete question answered from an incomplete set on request."""
    warnings: list[str] = field(default_factory=list)
    """The problems of incomplete or damaged sets an ordinary answer came from (one line each)."""


def _checked(con: duckdb.DuckDBPyConnection, what: str, needs_complete: bool, partial: bool,
             partial_flag: str) -> tuple[list[str], list[str]]:
    if needs_complete:
        return require_complete(con, what, partial, partial_flag), []
    return [], result_set_problems(con)


def named_answer(con: duckdb.DuckDBPyConnection, name: str, params: Mapping[str, Any] | None = None, *,
                 partial: bool = False, limit: int | None = None, partial_flag: str = "--partial") -> Answer:
    """Named query NAME (queries.named.run_named), refused on an incomplete set if its header says so."""
    q = load_named(name)
    q.bind(params)  # a bad parameter is refused first, whatever the set holds
    marks, warnings = _checked(con, f"--named {name}", q.needs_complete, partial, partial_flag)
    return Answer(run_named(con, name, params, limit=limit), marks, warnings)


def sql_answer(con: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any] | None = None, *,
               limit: int | None = None) -> Answer:
    """One SQL statement (queries.named.run_sql); answered from whatever is stored, with warnings."""
    return Answer(run_sql(con, sql, params, limit=limit), [], result_set_problems(con))


@dataclass(frozen=True)
class CapacityAnswer:
    """`capacity()`'s result and the PARTIAL lines it must carry."""

    capacity: Capacity
    partial: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """As `stoprace capacity --format json` prints it (and GET .../capacity answers it)."""
        return marked(self.capacity.to_dict(), self.partial)


def capacity_answer(con: duckdb.DuckDBPyConnection, target_p: float, *, partial: bool = False,
                    partial_flag: str = "--partial", by: Sequence[str] | None = None, metric: str = "p_bad",
                    hosts: float | None = None, kexecs_per_host_year: float | None = None,
                    where: str | None = None, split: Sequence[str] = ()) -> CapacityAnswer:
    """queries.capacity.capacity over a complete set (or, with `partial`, whatever is stored, marked)."""
    from queries.capacity import capacity

    marks, _ = _checked(con, "capacity", True, partial, partial_flag)
    cap = capacity(con, target_p, by=by, metric=metric, hosts=hosts, kexecs_per_host_year=kexecs_per_host_year,
                   where=where, split=split)
    return CapacityAnswer(cap, marks)
