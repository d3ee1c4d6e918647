"""Named SQL queries: the files queries/sql/NAME.sql (names starting with '_' are internal).

Each file begins with comment lines:

    -- description: one line shown by `stoprace query --list`
    -- param: threshold=1e-3 optional help text
    -- any other comment lines (shown as notes)

and is one SQL statement over the views of queries.db, with parameters written
`$threshold` (bound by DuckDB as prepared-statement parameters, never pasted
into the SQL text).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import duckdb
import pyarrow as pa

from .db import QueryError, first_line
from .sandbox import check_read_only, refusal

__all__ = ["NamedQuery", "list_named", "load_named", "parse_params", "coerce", "run_sql", "run_named"]

_NAME_RE = re.compile(r"^[a-z0-9_]+$")


@dataclass(frozen=True)
class Param:
    name: str
    default: str | None
    help: str = ""


@dataclass(frozen=True)
class NamedQuery:
    name: str
    description: str
    sql: str
    params: tuple[Param, ...] = ()
    notes: tuple[str, ...] = field(default=())

    def defaults(self) -> dict[str, str]:
        return {p.name: p.default for p in self.params if p.default is not None}


def _parse(name: str, text: str) -> NamedQuery:
    description = ""
    params: list[Param] = []
    notes: list[str] = []
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        if not s.startswith("--"):
            break
        body = s[2:].strip()
        if body.lower().startswith("description:"):
            description = body.split(":", 1)[1].strip()
        elif body.lower().startswith("param:"):
            spec = body.split(":", 1)[1].strip()
            head, _, help_text = spec.partition(" ")
            pname, eq, default = head.partition("=")
            params.append(Param(pname.strip(), default.strip() if eq else None, help_text.strip()))
        elif body:
            notes.append(body)
    return NamedQuery(name, description, text, tuple(params), tuple(notes))


def _sql_dir():
    return resources.files("queries").joinpath("sql")


def list_named() -> list[NamedQuery]:
    """All named queries, sorted by name."""
    out = []
    for entry in _sql_dir().iterdir():
        n = entry.name
        if n.endswith(".sql") and not n.startswith("_"):
            out.append(_parse(n[:-4], entry.read_text(encoding="utf-8")))
    return sorted(out, key=lambda q: q.name)


def load_named(name: str) -> NamedQuery:
    """The named query NAME; QueryError naming the closest one when it does not exist."""
    names = [q.name for q in list_named()]
    if _NAME_RE.match(name) and name in names:
        entry = _sql_dir().joinpath(f"{name}.sql")
        return _parse(name, entry.read_text(encoding="utf-8"))
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise QueryError(f"unknown named query '{name}'{hint}; known: {', '.join(names)}")


def coerce(value: str) -> Any:
    """A --param value as int, float or text ('1e-3' -> 0.001, '64' -> 64, 'none' -> 'none')."""
    v = value.strip()
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return value


def parse_params(pairs: Sequence[str] | None) -> dict[str, str]:
    """['k=v', ...] -> {'k': 'v'}; QueryError on a pair without '='."""
    out: dict[str, str] = {}
    for pair in pairs or ():
        k, eq, v = pair.partition("=")
        if not eq or not k.strip():
            raise QueryError(f"--param '{pair}' is not NAME=VALUE")
        out[k.strip()] = v
    return out


def run_sql(con: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any] | None = None,
            limit: int | None = None) -> pa.Table:
    """Run one SQL statement (with optional $name parameters) and return its result as an Arrow table.

    `limit` fetches at most that many rows (a terminal table need not read
    everything). Only a read-only query runs (queries.sandbox.check_read_only);
    refusals are SandboxError. Raises QueryError with DuckDB's first message line on bad SQL;
    a statement that returns no row set gives an empty table.
    """
    values = dict(params or {})
    try:
        stmts = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise QueryError(f"bad SQL: {first_line(e)}") from None
    if len(stmts) != 1:
        raise QueryError(f"expected one SQL statement, got {len(stmts)}")
    check_read_only(stmts)
    used = set(stmts[0].named_parameters)
    missing = sorted(used - set(values))
    if missing:
        raise QueryError(f"no value for parameter(s) {', '.join('$' + m for m in missing)} (use --param NAME=VALUE)")
    extra = sorted(set(values) - used)
    if extra:
        raise QueryError(f"parameter(s) {', '.join(extra)} not used by the query")
    bound = {k: (coerce(v) if isinstance(v, str) else v) for k, v in values.items()}
    try:
        rel = con.sql(sql, params=bound or None)
        if rel is None:
            return pa.table({})
        if limit is not None:
            rel = rel.limit(limit)
        return rel.to_arrow_table()
    except duckdb.Error as e:
        raise (refusal(e) or QueryError(f"bad SQL: {first_line(e)}")) from None


def run_named(con: duckdb.DuckDBPyConnection, name: str, params: Mapping[str, Any] | None = None,
              limit: int | None = None) -> pa.Table:
    """Run named query NAME with its declared defaults overridden by `params` (at most `limit` rows)."""
    q = load_named(name)
    declared = {p.name for p in q.params}
    for k in params or {}:
        if k not in declared:
            close = difflib.get_close_matches(k, sorted(declared), n=1, cutoff=0.5)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            known = ", ".join(sorted(declared)) or "none"
            raise QueryError(f"named query '{name}' has no parameter '{k}'{hint}; its parameters: {known}")
    values: dict[str, Any] = dict(q.defaults())
    values.update(params or {})
    try:
        used = set(duckdb.extract_statements(q.sql)[0].named_parameters)
    except (duckdb.Error, IndexError) as e:
        raise QueryError(f"named query '{name}' is broken: {first_line(e)}") from None
    return run_sql(con, q.sql, {k: v for k, v in values.items() if k in used}, limit=limit)
