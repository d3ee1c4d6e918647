"""DuckDB over one or more stoprace result directories (SCHEMA.md "Views that queries provides").

    con = connect("results/tdx-kexec")
    con.sql("SELECT n_cpus, p_race, p_race_hi FROM outcomes ORDER BY n_cpus").show()

Views (all lazy, over the Parquet files, nothing is copied into memory):

- `points`: the points files each manifest commits (segments, or a first release's
  per-task files), read through queries.resultset as Arrow datasets with columns
  unified by name (files with extra columns, e.g. a later estimator's, mix with older
  ones; a parameter a file predates reads as its neutral value);
- `events`: the committed events files, or an empty relation with the same columns
  when no task had a race, hang or timeout trial;
- `result_sets`: one row per opened set: complete or not, and the problem line;
- `outcomes`: one row per (sweep, point_id): parameters, `estimator`, summed counts,
  p_race/p_hang/p_timeout/p_bad with 95% bounds (`*_lo`, `*_hi`) and how each was made
  (`*_method`: core.intervals), mean and
  p50/p99/p999 stop time from the merged histogram (+inf: in the open top bin,
  >= 8.66e7 µs), max stop time. p_race is the sweep's estimator: the cmc estimate and
  interval where it ran cmc, else counts with exact bounds; p_bad under cmc is the cmc race
  part plus the counted hang/timeout part;
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

Macros usable from any query: `count_lo(k, n)`, `count_hi(k, n)` (exact 95%),
`wilson_lo(k, n)`, `wilson_hi(k, n)` (Wilson 95%, for comparison only),
`prob(k, n)`, `hist_x(b, c, h, target)`, `hist_us(x)`, `osum(x, order)`; functions
(queries.estimates): `metric_ci`, `count_ci`, `outcome_possible`, `timeout_bound`, `zero_event_trials`,
`cmc_interval`, `cmc_pool_shards`, `cmc_pool_strata`, `ratio_interval`, `z_value`.

Several directories can be opened at once; the `sweep` column tells them apart,
and rows with the same (sweep, point_id) are pooled. The same sweep (same spec
hash) given twice is refused, since its counts would be doubled.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds

from core.bounds import BOUND_PARAMS
from core.errors import StopraceError
from core.estimators import ESTIMATORS
from core.params import NEUTRAL, PARAM_NAMES, PARAM_SPECS, SPECS
from queries.resultset.errors import StoreError
from queries.resultset.layout import EVENTS_DIR, POINTS_DIR
from queries.resultset.reader import ResultSet
from queries.resultset.schema import EVENTS_SCHEMA, REQUIRED_POINTS_COLUMNS

from .estimates import CONF
from .estimates import register as register_functions

__all__ = [
    "QueryError", "connect", "check_result_dir", "open_result_set", "result_set_problems", "require_complete", "read_sql", "render_sql", "quote_ident", "swept_axes", "first_line",
    "REQUIRED_POINTS_COLUMNS",
]

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


def open_result_set(path: str | os.PathLike[str] | ResultSet) -> ResultSet:
    """Open and check a result set (local path or URI; or one opened and checked already, e.g. by
    sweeps.integrity.check_result_set); QueryError (one line) if it is not one or has no points."""
    try:
        rs = path if isinstance(path, ResultSet) else ResultSet.open(path)
        rs.check()
    except StoreError as e:
        raise QueryError(str(e)) from None
    if not rs.files(POINTS_DIR):
        problem = rs.check().problem() if rs.check().damaged else None
        if problem:
            raise QueryError(f"'{rs.display}' has no intact points files: {problem.split(': ', 1)[1]}")
        raise QueryError(f"'{rs.display}' has no points files: no task has finished yet")
    return rs


def check_result_dir(path: str | os.PathLike[str]) -> dict:
    """Validate a result set; return its manifest as a dict. Raises QueryError naming the problem."""
    return open_result_set(path).manifest.model_dump(mode="json")


def _read_points(source: str, columns: set[str]) -> str:
    """The points rows, with every parameter added after a file was written read as its neutral
    value (core.params.NEUTRAL): missing from every file, or null in the older files of a mix."""
    def neutral(n: str) -> str:
        return f"(SELECT {_quote_ident(n)} FROM {_NEUTRAL_TABLE})"

    fill = [f"coalesce({_quote_ident(n)}, {neutral(n)}) AS {_quote_ident(n)}" for n in NEUTRAL if n in columns]
    add = [f"{neutral(n)} AS {_quote_ident(n)}" for n in NEUTRAL if n not in columns]
    star = f"* REPLACE ({', '.join(fill)})" if fill else "*"
    return f"SELECT {', '.join([star, *add])} FROM {source}"


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
    # mean early-flush time per trial that ran it, from whichever column a store version has (none:
    # NULL); float sums in shard order (osum), so outcomes is bit-stable. A row with `preflush_hist`
    # (model_rev) counts its trials with a preflush time from it (revision 2's flush can hang); one
    # without it (written before) had one on every trial.
    hist = "preflush_hist" in columns
    if "preflush_sum_us" in columns:
        ok = "isfinite(preflush_sum_us)"
        n = (f"CASE WHEN preflush_hist IS NOT NULL THEN list_sum(preflush_hist) WHEN {ok} THEN trials END"
             if hist else f"CASE WHEN {ok} THEN trials END")
        preflush = f"osum(CASE WHEN {ok} THEN preflush_sum_us END, shard) / nullif(sum({n}), 0)"
    elif "preflush_us" in columns:
        ok = "isfinite(preflush_us)"
        preflush = (f"osum(CASE WHEN {ok} THEN preflush_us * trials END, shard) "
                    f"/ nullif(sum(trials) FILTER (WHERE {ok}), 0)")
    else:
        preflush = "NULL::DOUBLE"
    # the cmc shards of a point, as lists {n, m, v} in shard order for queries.estimates.pool_shards
    if "p_race_est" in columns and "estimator" in columns:
        # shards of the estimators that integrate p_race (core.estimators: Estimator.integrates_race)
        names = ", ".join(_quote_str(e.name) for e in ESTIMATORS.values() if e.integrates_race) or "NULL"
        cmc = f"FILTER (WHERE estimator IN ({names}))"
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
        "preflush_hist": "preflush_hist" if hist else "NULL::BIGINT[]",
        "preflush_max": ("max(preflush_max_us) FILTER (WHERE isfinite(preflush_max_us))"
                         if "preflush_max_us" in columns else "NULL::DOUBLE"),
        # trials that hung in revision 2's early flush (no stop ran): not NMI-phase trials
        "flush_hangs": "sum(coalesce(trials - list_sum(preflush_hist), 0))" if hist else "0",
        "conf": f"{CONF!r}::DOUBLE",
        # core.bounds' parameters, in the order of the timeout_bound function (queries.estimates)
        "bound_args": ", ".join(_quote_ident(k) for k in BOUND_PARAMS),
    }
    return render_sql(name, slots)


def _run_script(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    for stmt in duckdb.extract_statements(sql):
        con.execute(stmt)


def connect(*result_dirs: str | Path | ResultSet, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the views of this module over the given result sets.

    Each is a local dir or any URI ``--out`` accepts (s3://..., file://...), or a ResultSet
    checked already (the CLI passes sweeps.integrity's, which also holds first-release files
    against the task plan and the stored spec against its hash): the files the
    manifest commits are registered as Arrow datasets, so no DuckDB extension is needed.
    The table ``result_sets`` (dir, sweep, spec_hash, n_tasks, tasks_stored, complete,
    problem) says which sets are incomplete or damaged; damaged files are left out.
    The connection is read-only (queries.sandbox): it opens no file and its configuration
    is locked. Raises QueryError with one line when a dir is missing, is not a
    result set, or its Parquet files cannot be read.
    """
    if not result_dirs:
        raise QueryError("no results dir given")
    sets: list[ResultSet] = []
    seen: dict[str, str] = {}
    for d in result_dirs:
        rs = open_result_set(d)
        name = rs.display if isinstance(d, ResultSet) else str(d)
        if any(_same_place(rs, o) for o in sets):
            raise QueryError(f"results dir '{name}' given twice")
        h = rs.manifest.spec_hash
        if h in seen:
            raise QueryError(f"'{seen[h]}' and '{name}' hold the same sweep (spec_hash {h[:12]}): counts would be doubled")
        seen[h] = name
        sets.append(rs)

    con = duckdb.connect(":memory:")
    try:
        _create_views(con, sets, threads)
    except BaseException:
        con.close()
        raise
    return _finish_connection(con, sets)


def _same_place(a: ResultSet, b: ResultSet) -> bool:
    pa_, pb = a.backend.path(), b.backend.path()
    if isinstance(pa_, Path) and isinstance(pb, Path):
        return pa_.resolve() == pb.resolve()
    return a.display == b.display


def _finish_connection(con: duckdb.DuckDBPyConnection, sets: list[ResultSet]) -> duckdb.DuckDBPyConnection:
    """The one place a connection is completed before it is handed out: locked down read-only.

    The views read registered Arrow datasets and need no file access; user SQL may still
    read the local result sets being queried themselves (e.g. ``read_parquet('DIR/points/*.parquet')``).
    """
    from queries.sandbox import lock_down  # here, not at the top: sandbox imports QueryError from this module

    try:
        lock_down(con, readable=[rs.backend.path() for rs in sets if rs.backend.local])
    except BaseException:
        con.close()
        raise
    return con


def result_set_problems(con: duckdb.DuckDBPyConnection) -> list[str]:
    """One line per open result set that is incomplete or damaged (from the ``result_sets`` table)."""
    return [r[0] for r in con.execute("SELECT problem FROM result_sets WHERE problem IS NOT NULL ORDER BY dir").fetchall()]


def require_complete(con: duckdb.DuckDBPyConnection, what: str, partial: bool,
                     partial_flag: str = "--partial") -> list[str]:
    """Refuse (QueryError) to answer ``what`` from an incomplete or damaged set unless ``partial``.

    Returns the notes an answer given with ``partial`` must carry (empty when every set is complete).
    ``partial_flag`` is how the caller's door spells "answer anyway" (the CLI's ``--partial``, the
    API's ``partial=true``); the refusal names it.
    """
    problems = result_set_problems(con)
    if problems and not partial:
        raise QueryError(f"{problems[0]}; {what} needs every point: finish the run (the same `stoprace run` "
                         f"resumes and recomputes damaged tasks) or pass {partial_flag} to answer from what is stored")
    return [f"PARTIAL: {p}" for p in problems]


def _status_table(sets: list[ResultSet]) -> pa.Table:
    rows = []
    for rs in sets:
        i = rs.check()
        rows.append({"dir": rs.display, "sweep": rs.manifest.sweep, "spec_hash": rs.manifest.spec_hash,
                     "n_tasks": i.n_tasks, "tasks_stored": len(i.intact), "complete": i.complete,
                     "problem": i.problem()})
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("dir", pa.string()), ("sweep", pa.string()), ("spec_hash", pa.string()), ("n_tasks", pa.int64()),
        ("tasks_stored", pa.int64()), ("complete", pa.bool_()), ("problem", pa.string())]))


SCAN_OPTIONS = {"batch_size": 4096, "batch_readahead": 1, "fragment_readahead": 2, "use_threads": False}
"""How every DuckDB scan of the registered datasets reads the Parquet files. pyarrow's defaults
(batches of 131,072 rows, 16 batches and 4 files read ahead, row groups decoded on all cores) let a
scan decode up to 16 row groups ahead of DuckDB: the 128-bin histograms are ~1 KiB a points row
decoded, so at 4x the cluster example (436,800 rows, 19 row groups) a scan of `t_done_hist`
buffered the whole column, ~450 MiB, and `outcomes` peaked at 1.2 GiB. With these, a scan decodes
one row group at a time (the dataset scan decodes whole row groups: ~45 MiB of histograms for the
store's 32,768 rows) and holds one or two, whatever the size of the set; DuckDB's own threads still
share the work. benchmarks/RESULTS.md ("Queries at 1x, 2x, 4x the cluster example") has the A/B."""


class _BoundedScans:
    """A pyarrow dataset whose scanners take SCAN_OPTIONS (DuckDB calls ``scanner(columns=, filter=)``)."""

    def scanner(self, **kw):  # type: ignore[no-untyped-def]
        return super().scanner(**{**SCAN_OPTIONS, **kw})  # type: ignore[misc]


class _FileSystemDataset(_BoundedScans, ds.FileSystemDataset):
    pass


class _UnionDataset(_BoundedScans, ds.UnionDataset):
    pass


def _bounded(d: ds.Dataset) -> ds.Dataset:
    """The same dataset (files, schema, format, filesystem), scanned with SCAN_OPTIONS."""
    if isinstance(d, ds.FileSystemDataset):
        return _FileSystemDataset(list(d.get_fragments()), d.schema, d.format, d.filesystem)
    if isinstance(d, ds.UnionDataset):
        return _UnionDataset(d.schema, d.children)
    return d


def _union(sets: list[ResultSet], table: str) -> ds.Dataset | None:
    """One Arrow dataset over ``table`` of every set (columns unified by name; absent ones read as null),
    its scans bounded in memory (SCAN_OPTIONS)."""
    parts = [d for d in (rs.dataset(table) for rs in sets) if d is not None]
    if not parts:
        return None
    if len(parts) == 1:
        return _bounded(parts[0])
    schema = pa.unify_schemas([p.schema for p in parts], promote_options="permissive")
    return _bounded(ds.dataset([ds.dataset(p.files, schema=schema, format="parquet", filesystem=p.filesystem)
                                for p in parts]))


def _create_views(con: duckdb.DuckDBPyConnection, sets: list[ResultSet], threads: int | None) -> None:
    con.execute("SET enable_progress_bar = false")  # DuckDB's bar would add lines to every command's stderr
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    defaults, params = _params_tables()
    con.register("defaults", defaults)
    con.register("params", params)
    con.register("result_sets", _status_table(sets))
    con.register(_NEUTRAL_TABLE, _neutral_table())
    where = ", ".join(rs.display for rs in sets)

    points = _union(sets, POINTS_DIR)
    assert points is not None  # open_result_set saw at least one points file per set
    con.register("_points_files", points)
    try:
        con.execute(f"CREATE OR REPLACE TEMP VIEW points AS {_read_points('_points_files', set(points.schema.names))}")
    except duckdb.Error as e:
        raise QueryError(f"cannot read points files of {where}: {first_line(e)}") from None
    columns = {r[0] for r in con.execute("SELECT column_name FROM (DESCRIBE points)").fetchall()}
    missing = [c for c in REQUIRED_POINTS_COLUMNS if c not in columns]
    if missing:
        raise QueryError(f"points files of {where} lack column(s) {', '.join(missing)}: "
                         "not a stoprace result set of this version")

    events = _union(sets, EVENTS_DIR)
    con.register("_events_files", events if events is not None else EVENTS_SCHEMA.empty_table())
    con.execute("CREATE OR REPLACE TEMP VIEW events AS SELECT * FROM _events_files")

    register_functions(con)
    _run_script(con, read_sql("_macros"))
    _run_script(con, _template("_views", columns))
    _run_script(con, _template("_outcomes", columns))
    from .precision import install as install_precision  # trials = "auto" sweeps: status per point

    install_precision(con, sets, _run_script)


def swept_axes(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Parameters with more than one value across the open result dirs, in core.params order."""
    rows = con.execute(
        "SELECT name FROM params_long GROUP BY name, ord HAVING count(DISTINCT value) > 1 ORDER BY ord"
    ).fetchall()
    return [r[0] for r in rows]
