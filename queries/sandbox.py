"""Read-only SQL over result sets: what a query from a user (CLI or HTTP) may do.

Two independent fences, both needed:

1. **The connection** (`lock_down`, called once at the end of `queries.connect`):
   DuckDB's `enable_external_access = false` with `allowed_directories` set to the
   result dirs DuckDB reads itself (none when every view is a registered Arrow
   object, which needs no file access at all), extension auto-install/auto-load
   and community extensions off, then `lock_configuration = true`, so no later
   statement can `SET` any of it back. Reads of any other file (`read_csv('/etc/passwd')`,
   `read_text`, `glob('/*')`, `ATTACH 'x.duckdb'`, `INSTALL`/`LOAD`, http(s) URLs)
   then fail inside DuckDB.
2. **The statement** (`check_read_only`, called by `queries.named.run_sql` on
   every statement it runs): DuckDB's allowed directories are readable *and
   writable* (`COPY ... TO '<dir>/points/task-000000.parquet'` or `EXPORT DATABASE`
   into a result dir would still succeed), and `CREATE`/`DROP`/`INSERT` act on the
   connection's in-memory catalog (a server shares its views between requests).
   So only plain queries are run: statement type SELECT (which covers `WITH`,
   `FROM`-first, `VALUES`, `DESCRIBE`, `SUMMARIZE`, `SHOW`). Anything else is
   refused by its statement type before DuckDB executes it.

Plus the output side (`check_output_path`): `query -o` and `plot -o` never write
into a result set (a directory holding a stoprace `manifest.json`, or below one).

Every refusal is a `SandboxError` (a `QueryError`): one line, exit code 2 on the
CLI, HTTP 400 from the server.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from .db import QueryError, first_line

__all__ = ["LOCKED_SETTINGS", "SandboxError", "check_output_path", "check_read_only", "lock_down", "refusal"]

LOCKED_SETTINGS: dict[str, object] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
    "allow_persistent_secrets": False,
}
"""Settings applied before external access is switched off (order matters: after
`lock_configuration` nothing can be changed, and `allowed_directories` can only be
set while external access is still on)."""

_ALLOWED_STATEMENTS = frozenset({duckdb.StatementType.SELECT})


class SandboxError(QueryError):
    """A query tried something the read-only sandbox forbids (write, other file, setting, extension)."""


def _dir_prefix(d: str | Path) -> str:
    """An absolute directory path ending in the separator, so '/a/rs' does not also allow '/a/rs-other'."""
    p = os.path.realpath(os.fspath(d))
    return p if p.endswith(os.sep) else p + os.sep


def lock_down(con: duckdb.DuckDBPyConnection, readable: Iterable[str | Path] = ()) -> None:
    """Restrict `con` to reading `readable` (local dirs DuckDB itself reads files from) and lock its configuration.

    Call it last, once every view and registered object exists: afterwards no
    `SET` works, and DuckDB opens no file outside `readable`.
    """
    for name, value in LOCKED_SETTINGS.items():
        con.execute(f"SET {name} = {'true' if value else 'false'}")
    dirs = sorted({_dir_prefix(d) for d in readable})
    if dirs:
        con.execute("SET allowed_directories = $dirs", {"dirs": dirs})
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def _statement_name(st: duckdb.Statement) -> str:
    name = str(st.type).rsplit(".", 1)[-1]
    # PIVOT expands into several statements (CREATE TYPE ... then SELECT)
    return "a PIVOT statement (it creates types; use GROUP BY or FILTER)" if name == "MULTI" else f"a {name} statement"


def check_read_only(statements: Iterable[duckdb.Statement]) -> None:
    """SandboxError unless every statement is a plain query (statement type SELECT)."""
    for st in statements:
        if st.type not in _ALLOWED_STATEMENTS:
            raise SandboxError(f"refused: {_statement_name(st)}; SQL here is read-only: one SELECT (or WITH/FROM/"
                               "DESCRIBE) query over the views")


_QUOTED = re.compile(r'"([^"]*)"')


def refusal(err: duckdb.Error) -> SandboxError | None:
    """A SandboxError for a DuckDB error raised by the sandbox (file access, locked setting), else None."""
    msg = first_line(err)
    if isinstance(err, duckdb.PermissionException) or "disabled by configuration" in msg:
        m = _QUOTED.search(msg)
        what = f"cannot access '{m.group(1)}'" if m else msg
        return SandboxError(f"refused: {what}: SQL here reads only the result sets being queried")
    if "configuration has been locked" in msg:
        return SandboxError(f"refused: settings cannot be changed here ({msg})")
    return None


def _result_set_root(p: Path) -> Path | None:
    """The nearest directory at or above `p` that is a stoprace result set (holds manifest.json), else None."""
    for d in (p, *p.parents):
        if (d / "manifest.json").is_file():
            return d
    return None


def check_output_path(out: str | Path, result_dirs: Iterable[str | Path] = ()) -> None:
    """SandboxError when writing `out` would put a file inside a result set.

    Inside means: below (or at) one of `result_dirs`, or below any directory
    holding a manifest.json (another result set), symlinks resolved.
    """
    target = Path(os.path.realpath(os.fspath(out)))
    for d in result_dirs:
        given = Path(os.path.realpath(os.fspath(d)))
        if target == given or given in target.parents:
            raise SandboxError(f"refused: -o {out} is inside the result set {d}; write outputs elsewhere")
    found = _result_set_root(target.parent)
    if found is not None:
        raise SandboxError(f"refused: -o {out} is inside the result set {found}; write outputs elsewhere")


_view_ids = itertools.count()


@contextmanager
def filtered_outcomes(con: duckdb.DuckDBPyConnection, where: str | None, prefix: str) -> Iterator[str]:
    """The name of a temporary view of `outcomes` filtered by a user's `--where` (refused like any
    SQL of theirs: one line), dropped on exit. capacity and plot read their cells from it."""
    view = f"{prefix}_{next(_view_ids)}"
    try:
        rel = con.sql("SELECT * FROM outcomes")
        if where:
            try:
                rel = rel.filter(where)
            except duckdb.Error as e:
                raise (refusal(e) or QueryError(f"bad --where '{where}': {first_line(e)}")) from None
        rel.create_view(view, replace=True)
        yield view
    finally:
        con.execute(f"DROP VIEW IF EXISTS {view}")
