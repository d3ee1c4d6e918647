"""DuckDB over one or more stoprace result directories (SCHEMA.md "Views that queries provides").

    con = connect("results/tdx-kexec")
    con.sql("SELECT n_cpus, p_race, p_race_hi FROM outcomes ORDER BY n_cpus").show()

Views (all lazy, over the Parquet files, nothing is copied into memory):

- `points`: the points/task-*.parquet files of every dir (union_by_name, so files
  with extra columns, e.g. a later rare-event estimator's, mix with older ones);
- `events`: the events/task-*.parquet files, or an empty relation with the same
  columns when no task had a race, hang or timeout trial;
- `outcomes`: one row per (sweep, point_id): parameters, `estimator`, summed counts,
  p_race/p_hang/p_timeout/p_bad with 95% bounds (`*_lo`, `*_hi`), mean and
  p50/p99/p999 stop time from the merged histogram (+inf: in the open top bin,
  >= 8.66e7 µs), max stop time. p_race and p_bad are the sweep's estimator: the cmc
  estimate and interval where it ran cmc, else counts with Wilson bounds;
  `p_race_naive*`/`p_bad_naive*` are always the counts, `p_*_disagree` flags a cmc
  interval that misses the naive one, `p_*_cmc*` are the cmc columns (NULL if naive).
  No `wall_s` (it stays in `points`): the view is the same bytes run to run;
- for sweeps with `trials = "auto"`: `precision` (queries/precision.py: per point the
  rule's metric, estimator, p, p_lo, p_hi, trials and status) and `outcomes.status`;
- helpers: `point_params` (sweep, point_id, parameters), `params_long` (one row per
  point and parameter), `differs` (parameters that differ from the defaults, as
  one string), `point_bins` (non-empty merged histogram bins), and the tables
  `defaults` (one row, every parameter's default) and `params` (name, ord, kind,
  default_value, default_num).

Macros usable from any query: `wilson_lo(k, n)`, `wilson_hi(k, n)` (95%),
`prob(k, n)`, `hist_x(b, c, h, target)`, `hist_us(x)`, `osum(x, order)`; functions
(queries.estimates): `cmc_interval`, `cmc_pool_shards`, `cmc_pool_strata`,
`ratio_interval`, `z_value`.

Several directories can be opened at once; the `sweep` column tells them apart,
and rows with the same (sweep, point_id) are pooled. The same sweep (same spec
hash) given twice is refused, since its counts would be doubled.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import duckdb
import pyarrow as pa

from core.errors import StopraceError
from core.outcomes import OUTCOMES
from core.params import FIRST_RELEASE_PARAMS, NEUTRAL, PARAM_NAMES, PARAM_SPECS, SPECS

from .estimates import CONF
from .estimates import register as register_functions

__all__ = [
    "QueryError", "connect", "check_result_dir", "read_sql", "render_sql", "quote_ident", "swept_axes", "first_line",
    "REQUIRED_POINTS_COLUMNS",
]

REQUIRED_POINTS_COLUMNS: tuple[str, ...] = (
    "sweep", "point_id", "shard", *FIRST_RELEASE_PARAMS, "trials", *OUTCOMES,
    "t_done_sum_us", "t_done_max_us", "t_done_hist", "seed", "wall_s",
)  # wall_s stays in `points`; `outcomes` leaves it out, so that it is the same bytes run to run

_GLOB_CHARS = set("*?[]{}")


class QueryError(StopraceError):
    """Bad input to a query (missing dir, not a result set, bad SQL, unknown name): one line."""


def first_line(err: BaseException) -> str:
    """The first non-empty line of an error message (DuckDB errors carry context lines)."""
    for line in str(err).splitlines():
        if line.strip():
            return line.strip()
    return type(err).__name__


def read_sql(name: str) -> str:
    """Text of queries/sql/NAME.sql (package data)."""
    try:
        return resources.files("queries").joinpath("sql", f"{name}.sql").read_text(encoding="utf-8")
    except FileNotFoundError:
        raise QueryError(f"no SQL file queries/sql/{name}.sql") from None


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def check_result_dir(path: str | Path) -> dict:
    """Validate a result directory; return its manifest. Raises QueryError naming the problem."""
    p = Path(path)
    mf = p / "manifest.json"
    try:
        if not p.exists():
            raise QueryError(f"results dir '{path}' does not exist")
        if not p.is_dir():
            raise QueryError(f"'{path}' is not a directory")
        if not mf.is_file():
            raise QueryError(f"'{path}' is not a stoprace result set: no manifest.json")
    except OSError as e:  # e.g. a dir this user may not read
        raise QueryError(f"cannot read results dir '{path}': {e.strerror or e}") from None
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise QueryError(f"'{mf}' is not valid JSON: {first_line(e)}") from None
    if not isinstance(manifest, dict) or "spec_hash" not in manifest:
        raise QueryError(f"'{mf}' has no spec_hash: not a stoprace manifest")
    if not any((p / "points").glob("task-*.parquet")):
        raise QueryError(f"'{path}' has no points files (points/task-*.parquet): no task has finished yet")
    return manifest


def _files_expr(dirs: Iterable[Path], sub: str) -> str | None:
    """A DuckDB list literal of globs (or explicit files when a path has glob characters), None if empty."""
    items: list[str] = []
    for d in dirs:
        files = sorted((d / sub).glob("task-*.parquet"))
        if not files:
            continue
        if _GLOB_CHARS & set(str(d)):
            items.extend(str(f) for f in files)
        else:
            items.append(str(d / sub / "task-*.parquet"))
    if not items:
        return None
    return "[" + ", ".join(_quote_str(i) for i in items) + "]"


def _read_parquet(files: str) -> str:
    return f"SELECT * FROM read_parquet({files}, union_by_name = true, hive_partitioning = false)"


def _read_points(files: str, columns: set[str]) -> str:
    """The points files, with every parameter added after a file was written read as its neutral
    value (core.params.NEUTRAL): missing from every file, or null in the older files of a mix."""
    def neutral(n: str) -> str:
        return f"(SELECT {_quote_ident(n)} FROM {_NEUTRAL_TABLE})"

    fill = [f"coalesce({_quote_ident(n)}, {neutral(n)}) AS {_quote_ident(n)}" for n in NEUTRAL if n in columns]
    add = [f"{neutral(n)} AS {_quote_ident(n)}" for n in NEUTRAL if n not in columns]
    star = f"* REPLACE ({', '.join(fill)})" if fill else "*"
    return (f"SELECT {', '.join([star, *add])} "
            f"FROM read_parquet({files}, union_by_name = true, hive_partitioning = false)")


_NEUTRAL_TABLE = "_neutral"
"""One row: the neutral value of every later-added parameter, typed as its stored column."""


def _neutral_table() -> pa.Table:
    return pa.table({n: pa.array([v], pa.type_for_alias(SPECS[n].arrow)) for n, v in NEUTRAL.items()})


def _params_tables() -> tuple[pa.Table, pa.Table]:
    """(`defaults`: one typed row, `params`: one row per parameter) from core.params."""
    defaults = pa.table({s.name: pa.array([s.default], pa.type_for_alias(s.arrow)) for s in PARAM_SPECS})
    params = pa.table({
        "name": pa.array(list(PARAM_NAMES), pa.string()),
        "ord": pa.array(range(len(PARAM_NAMES)), pa.int32()),
        "kind": pa.array([s.kind for s in PARAM_SPECS], pa.string()),
        "default_value": pa.array([str(s.default) for s in PARAM_SPECS], pa.string()),
        "default_num": pa.array([None if s.kind == "str" else float(s.default) for s in PARAM_SPECS], pa.float64()),
    })
    return defaults, params


def render_sql(name: str, slots: dict[str, str]) -> str:
    """queries/sql/NAME.sql with each @@slot@@ replaced (slots hold identifiers/expressions built by this package)."""
    sql = read_sql(name)
    for k, v in slots.items():
        sql = sql.replace(f"@@{k}@@", v)
    if "@@" in sql:
        raise QueryError(f"queries/sql/{name}.sql has an unfilled slot")
    return sql


def quote_ident(name: str) -> str:
    """A DuckDB identifier in double quotes."""
    return _quote_ident(name)


def _template(name: str, columns: set[str]) -> str:
    """An internal SQL file with its @@...@@ slots filled from core.params and the points columns."""
    q = [_quote_ident(n) for n in PARAM_NAMES]
    # mean early-flush time per trial, from whichever column a store version has (none: NULL);
    # float sums in shard order (osum), so outcomes is bit-stable
    if "preflush_sum_us" in columns:
        ok = "isfinite(preflush_sum_us)"
        preflush = (f"osum(CASE WHEN {ok} THEN preflush_sum_us END, shard) "
                    f"/ nullif(sum(trials) FILTER (WHERE {ok}), 0)")
    elif "preflush_us" in columns:
        ok = "isfinite(preflush_us)"
        preflush = (f"osum(CASE WHEN {ok} THEN preflush_us * trials END, shard) "
                    f"/ nullif(sum(trials) FILTER (WHERE {ok}), 0)")
    else:
        preflush = "NULL::DOUBLE"
    # the cmc shards of a point, as lists {n, m, v} in shard order for queries.estimates.pool_shards
    if "p_race_est" in columns and "estimator" in columns:
        cmc = "FILTER (WHERE estimator = 'cmc')"
        parts = [f"(sum(trials) {cmc})::BIGINT AS cmc_trials"]
        for what in ("race", "bad"):
            est, var = f"p_{what}_est", f"p_{what}_var"
            parts.append(f"list({{'n': trials::BIGINT, 'm': {est}::DOUBLE, 'v': {var}::DOUBLE}} ORDER BY shard, trials, {est}, {var}) "
                         f"{cmc} AS {what}_parts")
        cmc_agg = ",\n        ".join(parts)
    else:
        typ = "STRUCT(n BIGINT, m DOUBLE, v DOUBLE)[]"
        cmc_agg = f"NULL::BIGINT AS cmc_trials, NULL::{typ} AS race_parts, NULL::{typ} AS bad_parts"
    slots = {
        "params": ", ".join(q),
        "cmc_agg": cmc_agg,
        "param_any": ", ".join(f"any_value({c}) AS {c}" for c in q),
        "param_varchar": ", ".join(f"{c}::VARCHAR AS {c}" for c in q),
        "preflush": preflush,
        "conf": f"{CONF!r}::DOUBLE",
    }
    return render_sql(name, slots)


def _run_script(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    for stmt in duckdb.extract_statements(sql):
        con.execute(stmt)


def connect(*result_dirs: str | Path, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the views of this module over the given result dirs.

    The connection is read-only over those dirs (queries.sandbox): it opens no
    other file and its configuration is locked.
    Raises QueryError (a ValueError) with one line when a dir is missing, is not a
    result set, or its Parquet files cannot be read.
    """
    if not result_dirs:
        raise QueryError("no results dir given")
    dirs: list[Path] = []
    seen: dict[str, Path] = {}
    for d in result_dirs:
        manifest = check_result_dir(d)
        p = Path(d).resolve()
        if p in dirs:
            raise QueryError(f"results dir '{d}' given twice")
        h = str(manifest["spec_hash"])
        if h in seen:
            raise QueryError(f"'{seen[h]}' and '{d}' hold the same sweep (spec_hash {h[:12]}): counts would be doubled")
        seen[h] = Path(d)
        dirs.append(p)

    con = duckdb.connect(":memory:")
    try:
        _create_views(con, dirs, result_dirs, threads)
        from queries.sandbox import lock_down  # not at the top: sandbox imports QueryError from here

        lock_down(con, readable=dirs)  # last: read-only from now on (queries/sandbox.py)
    except BaseException:
        con.close()
        raise
    return con


def _create_views(con: duckdb.DuckDBPyConnection, dirs: list[Path], result_dirs: tuple, threads: int | None) -> None:
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    defaults, params = _params_tables()
    con.register("defaults", defaults)
    con.register("params", params)
    con.register(_NEUTRAL_TABLE, _neutral_table())

    points = _files_expr(dirs, "points")
    assert points is not None  # check_result_dir saw at least one per dir
    try:
        con.execute(f"CREATE OR REPLACE TEMP VIEW points AS {_read_parquet(points)}")
        columns = {r[0] for r in con.execute("SELECT column_name FROM (DESCRIBE points)").fetchall()}
        con.execute(f"CREATE OR REPLACE TEMP VIEW points AS {_read_points(points, columns)}")
    except duckdb.Error as e:
        raise QueryError(f"cannot read points files of {', '.join(map(str, result_dirs))}: {first_line(e)}") from None
    columns = {r[0] for r in con.execute("SELECT column_name FROM (DESCRIBE points)").fetchall()}
    missing = [c for c in REQUIRED_POINTS_COLUMNS if c not in columns]
    if missing:
        raise QueryError(f"points files of {', '.join(map(str, result_dirs))} lack column(s) {', '.join(missing)}: "
                         "not a stoprace result set of this version")

    events = _files_expr(dirs, "events")
    events_sql = _read_parquet(events) if events else read_sql("_events_empty")
    try:
        con.execute(f"CREATE OR REPLACE TEMP VIEW events AS {events_sql}")
    except duckdb.Error as e:
        raise QueryError(f"cannot read events files: {first_line(e)}") from None

    register_functions(con)
    _run_script(con, read_sql("_macros"))
    _run_script(con, _template("_views", columns))
    _run_script(con, _template("_outcomes", columns))
    from .precision import (
        install as install_precision,  # trials = "auto" sweeps: status per point
    )

    install_precision(con, dirs, _run_script)


def swept_axes(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Parameters with more than one value across the open result dirs, in core.params order."""
    rows = con.execute(
        "SELECT name FROM params_long GROUP BY name, ord HAVING count(DISTINCT value) > 1 ORDER BY ord"
    ).fetchall()
    return [r[0] for r in rows]
