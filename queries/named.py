"""Named SQL queries: the files queries/sql/NAME.sql (names starting with '_' are internal).

Each file begins with comment lines:

    -- description: one line shown by `stoprace query --list`
    -- param: threshold=1e-3 [probability] optional help text
    -- needs: complete (why: what a missing point would make it say)
    -- any other comment lines (shown as notes)

and is one SQL statement over the views of queries.db, with parameters written
`$threshold` (bound by DuckDB as prepared-statement parameters, never pasted
into the SQL text).

The header says what the query is, so every front door applies the same rules:
a parameter's `[kind]` (PARAM_KINDS) is how a value given as text is checked and
converted (`nan`, a negative probability or a word where a number goes is
refused, on the command line and over HTTP alike); `needs: complete` marks a
query whose answer is wrong, not just smaller, on an incomplete set (it would
say "nowhere" for the points not stored): `queries.answers.named_answer`
refuses it there unless asked for a partial answer, which is then marked.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import duckdb
import pyarrow as pa

from .capacity import METRICS
from .db import QueryError, first_line
from .sandbox import check_read_only, refusal

__all__ = ["PARAM_KINDS", "NamedQuery", "Param", "ParamKind", "list_named", "load_named", "parse_params", "coerce",
           "run_sql", "run_named"]

_NAME_RE = re.compile(r"^[a-z0-9_]+$")
_AXIS_RE = re.compile(r"^[a-z_][a-z0-9_]*$")


def _number(value: Any) -> float:
    v = coerce(value) if isinstance(value, str) else value
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError
    return v


def _probability(value: Any) -> float:
    v = _number(value)
    if not 0 <= v <= 1:
        raise ValueError
    return v


def _axes(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError
    names = [a.strip() for a in value.split(",") if a.strip()]
    if not all(_AXIS_RE.match(a) for a in names):
        raise ValueError
    return ",".join(names)


def _metric(value: Any) -> str:
    if value not in METRICS:
        raise ValueError
    return value


@dataclass(frozen=True)
class ParamKind:
    """How a named query's parameter value is checked and converted (`says` is its domain in words)."""

    name: str
    says: str
    parse: Callable[[Any], Any]


PARAM_KINDS: dict[str, ParamKind] = {k.name: k for k in (
    ParamKind("probability", "a number in [0, 1]", _probability),
    ParamKind("number", "a finite number", _number),
    ParamKind("axes", "comma-separated parameter names, e.g. wait,mitigation", _axes),
    ParamKind("metric", "one of " + ", ".join(METRICS), _metric),
)}
"""The kinds a `-- param:` line may declare as `[kind]`."""


@dataclass(frozen=True)
class Param:
    name: str
    default: str | None
    help: str = ""
    kind: str = "number"

    def value(self, query: str, given: Any) -> Any:
        """`given` (text from --param or a URL, or a JSON number) as this parameter's kind; QueryError if not one."""
        kind = PARAM_KINDS[self.kind]
        try:
            return kind.parse(given)
        except ValueError:
            raise QueryError(f"named query '{query}': {self.name}={given} is not allowed: {self.kind}, "
                             f"{kind.says}") from None


@dataclass(frozen=True)
class NamedQuery:
    name: str
    description: str
    sql: str
    params: tuple[Param, ...] = ()
    notes: tuple[str, ...] = field(default=())
    needs_complete: bool = False
    """`-- needs: complete`: on an incomplete set the answer would be wrong (see the module doc)."""

    def defaults(self) -> dict[str, str]:
        return {p.name: p.default for p in self.params if p.default is not None}

    def bind(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Its declared defaults overridden by `params`, each checked and converted by its kind;
        QueryError (one line) for an undeclared name or a value outside its kind."""
        declared = {p.name: p for p in self.params}
        for k in params or {}:
            if k not in declared:
                close = difflib.get_close_matches(k, sorted(declared), n=1, cutoff=0.5)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                known = ", ".join(sorted(declared)) or "none"
                raise QueryError(f"named query '{self.name}' has no parameter '{k}'{hint}; its parameters: {known}")
        values: dict[str, Any] = dict(self.defaults())
        values.update(params or {})
        return {k: declared[k].value(self.name, v) for k, v in values.items()}


def _parse(name: str, text: str) -> NamedQuery:
    description = ""
    params: list[Param] = []
    notes: list[str] = []
    needs_complete = False
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
            help_text = help_text.strip()
            kind = "number"
            m = re.match(r"^\[([a-z]+)\]\s*", help_text)
            if m:
                kind, help_text = m.group(1), help_text[m.end():]
            if kind not in PARAM_KINDS:
                raise QueryError(f"named query '{name}' is broken: parameter {pname.strip()} has unknown kind "
                                 f"[{kind}] (known: {', '.join(PARAM_KINDS)})")
            params.append(Param(pname.strip(), default.strip() if eq else None, help_text, kind))
        elif body.lower().startswith("needs:"):
            needs_complete = needs_complete or body.split(":", 1)[1].split()[:1] == ["complete"]
        elif body:
            notes.append(body)
    return NamedQuery(name, description, text, tuple(params), tuple(notes), needs_complete)


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
    for k, v in bound.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise QueryError(f"parameter {k}={values[k]} is not a finite number")
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
    values = q.bind(params)
    try:
        used = set(duckdb.extract_statements(q.sql)[0].named_parameters)
    except (duckdb.Error, IndexError) as e:
        raise QueryError(f"named query '{name}' is broken: {first_line(e)}") from None
    return run_sql(con, q.sql, {k: v for k, v in values.items() if k in used}, limit=limit)
