"""queries/sandbox.py: SQL from a user is read-only over the result sets being queried (issue 15, item 1).

Every hostile case runs through the real CLI (`stoprace query --sql`, `plot --where`,
`-o`) on a copy of the first release's result dir, from a scratch working directory,
and checks: exit code 2, one line on stderr, nothing new anywhere (working dir,
result set, a second result set next to it), every stored file byte-identical, and
the outcomes still answering with the same numbers. The two fences (the locked
DuckDB connection, the statement check) are also tested each on its own, so either
one regressing fails a test even while the other still holds.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import duckdb
import pytest

from queries.db import connect
from queries.named import run_sql
from queries.sandbox import SandboxError, check_output_path, check_read_only, lock_down
from sweeps.cli import main

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under root (relative path -> sha256): any write, creation or deletion changes it."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def world(tmp_path, monkeypatch):
    """A scratch cwd holding result set `rs` (queried), `other` (another result set, not queried) and a plain file."""
    shutil.copytree(FIXTURES / "release1-naive", tmp_path / "rs")
    shutil.copytree(FIXTURES / "release1-cmc", tmp_path / "other")
    (tmp_path / "secret.csv").write_text("a,b\n1,2\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _outcome_totals(d: Path) -> tuple:
    con = connect(d)
    return con.execute("SELECT count(*), sum(trials), sum(race), sum(hang), sum(timeout) FROM outcomes").fetchone()


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _hostile_sql(root: Path) -> list[str]:
    rs, other = root / "rs", root / "other"
    return [
        # writes: to the cwd, over a stored task file, a whole export, a new database, in-memory catalog
        "COPY (SELECT 'x') TO 'pwned.csv'",
        f"COPY (SELECT * FROM points WHERE false) TO '{rs}/points/task-000000.parquet' (FORMAT parquet)",
        f"COPY points TO '{rs}/points/task-999999.parquet' (FORMAT parquet)",
        f"EXPORT DATABASE '{rs}/export'",
        "ATTACH 'a.duckdb' AS a",
        "ATTACH ':memory:' AS m",
        "CREATE TABLE t AS SELECT 1",
        "CREATE OR REPLACE TEMP VIEW outcomes AS SELECT 1 AS x",
        "DROP VIEW outcomes",
        "INSERT INTO defaults VALUES (1)",
        "CREATE MACRO wilson_hi(k, n) AS 0",
        # extensions
        "INSTALL httpfs",
        "FORCE INSTALL httpfs",
        "LOAD httpfs",
        # configuration
        "SET threads = 1",
        "SET enable_external_access = true",
        "RESET lock_configuration",
        "SET allowed_directories = ['/']",
        "PRAGMA enable_profiling",
        "CALL pragma_version()",
        # reads of anything but the result sets being queried
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM read_blob('/etc/hostname')",
        "SELECT * FROM glob('/*')",
        f"SELECT * FROM read_csv('{root}/secret.csv')",
        f"SELECT * FROM read_csv('{rs}/../secret.csv')",
        f"SELECT count(*) FROM read_parquet('{other}/points/*.parquet')",
        "SELECT * FROM read_json('https://example.com/x.json')",
        "SELECT * FROM sniff_csv('/etc/passwd')",
        # a write smuggled through a table function
        f"SELECT * FROM query('COPY (SELECT 1) TO ''{rs}/y.csv''')",
        # PIVOT runs several statements (it creates an enum type first)
        "PIVOT outcomes ON mitigation USING count(*)",
    ]


def test_hostile_sql_exits_2_and_writes_nothing(world, capsys):
    before_all = _snapshot(world)
    totals = _outcome_totals(world / "rs")
    for sql in _hostile_sql(world):
        rc, out, err = _run(capsys, "query", world / "rs", "--sql", sql)
        assert rc == 2, (sql, out, err)
        assert err.startswith("stoprace query: error: ") and len(err.strip().splitlines()) == 1, (sql, err)
        # query() takes only a SELECT: DuckDB's parser refuses the smuggled COPY itself
        assert "refused: " in err or "Expected a single SELECT statement" in err, (sql, err)
        assert out == "", sql
        assert _snapshot(world) == before_all, f"{sql!r} changed files"
    assert _outcome_totals(world / "rs") == totals


def test_refusals_name_the_problem(world, capsys):
    _, _, err = _run(capsys, "query", world / "rs", "--sql", "SELECT * FROM read_csv('/etc/passwd')")
    assert "cannot access '/etc/passwd'" in err and "result sets being queried" in err
    _, _, err = _run(capsys, "query", world / "rs", "--sql", "COPY (SELECT 1) TO 'x.csv'")
    assert "a COPY statement" in err and "read-only" in err
    _, _, err = _run(capsys, "query", world / "rs", "--sql", "INSTALL httpfs")
    assert "a LOAD statement" in err


def test_named_parameters_cannot_smuggle_sql(world, capsys):
    """--param values are bound, never pasted: a value holding SQL is just a string."""
    rc, out, err = _run(capsys, "query", world / "rs", "--named", "hang_conditions",
                        "--param", "threshold=0); COPY (SELECT 1) TO 'x.csv'; --", "--format", "csv")
    # checked against the parameter's declared type before any SQL runs: one line, nothing run or written
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "threshold=0); COPY" in err and "is not allowed: probability, a number in [0, 1]" in err
    assert not (world / "x.csv").exists()


def test_reads_of_the_queried_result_sets_still_work(world, capsys):
    rs = world / "rs"
    rc, out, err = _run(capsys, "query", rs, "--sql", f"SELECT count(*) AS n FROM read_parquet('{rs}/points/*.parquet')",
                        "--format", "csv")
    assert rc == 0, err
    n_files = sum(1 for _ in (rs / "points").glob("*.parquet"))
    assert n_files > 1
    assert int(out.splitlines()[1]) == _points_rows(rs)
    for sql in ("DESCRIBE outcomes", "FROM outcomes LIMIT 1", "WITH a AS (SELECT 1 AS x) SELECT * FROM a",
                "SUMMARIZE points", "VALUES (1)"):
        rc, out, err = _run(capsys, "query", rs, "--sql", sql, "--format", "json")
        assert rc == 0, (sql, err)
    # both result sets queried together: each may be read directly
    other = world / "other"
    rc, out, err = _run(capsys, "query", rs, other, "--sql",
                        f"SELECT count(*) AS n FROM read_parquet('{other}/points/*.parquet')", "--format", "csv")
    assert rc == 0 and int(out.splitlines()[1]) == _points_rows(other)


def _points_rows(d: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(f).num_rows for f in (d / "points").glob("*.parquet"))


def test_output_into_a_result_set_is_refused(world, capsys):
    rs, other = world / "rs", world / "other"
    before = _snapshot(world)
    cases = [
        ("query", rs, "--sql", "SELECT 1 AS x", "--format", "parquet", "-o", rs / "points" / "task-000001.parquet"),
        ("query", rs, "--sql", "SELECT 1 AS x", "--format", "csv", "-o", rs / "manifest.json"),
        ("query", rs, "--sql", "SELECT 1 AS x", "--format", "csv", "-o", rs / "new.csv"),
        ("query", rs, "--sql", "SELECT 1 AS x", "--format", "csv", "-o", other / "points" / "task-000000.parquet"),
        ("plot", rs, "--x", "n_cpus", "-o", rs / "plot.png"),
        ("plot", rs, "--x", "n_cpus", "-o", other / "points" / "p.png"),
    ]
    (world / "link").symlink_to(rs / "points")  # a symlink into a result set is resolved
    cases.append(("query", rs, "--sql", "SELECT 1 AS x", "--format", "csv", "-o", world / "link" / "x.csv"))
    before = _snapshot(world)
    for argv in cases:
        rc, _, err = _run(capsys, *argv)
        assert rc == 2 and "is inside the result set" in err and len(err.strip().splitlines()) == 1, (argv, err)
        assert _snapshot(world) == before, argv
    # outside a result set, -o works
    rc, _, err = _run(capsys, "query", rs, "--sql", "SELECT 1 AS x", "--format", "csv", "-o", world / "ok.csv")
    assert rc == 0 and (world / "ok.csv").read_text().splitlines() == ['"x"', "1"]


def test_plot_where_is_sandboxed(world, capsys):
    before = _snapshot(world)
    for where in ("(SELECT count(*) FROM read_csv('/etc/passwd')) > 0",
                  f"(SELECT count(*) FROM glob('{world}/*')) > 0",
                  "(SELECT count(*) FROM query('COPY (SELECT 1) TO ''x.csv''')) > 0"):
        rc, _, err = _run(capsys, "plot", world / "rs", "--x", "n_cpus", "--where", where, "-o", world / "p.png")
        assert rc == 2 and len(err.strip().splitlines()) == 1, (where, err)
        assert _snapshot(world) == before, where
    rc, _, err = _run(capsys, "plot", world / "rs", "--x", "n_cpus", "--where", "wait = 0", "-o", world / "p.png")
    assert rc == 0, err


# ---- each fence on its own ----------------------------------------------------------------


def test_locked_connection_alone_refuses_files_settings_and_extensions(world):
    """Raw DuckDB calls, bypassing the statement check: the connection itself still refuses."""
    con = connect(world / "rs")
    for sql in ("COPY (SELECT 1) TO 'pwned.csv'", "SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM glob('/*')",
                "ATTACH 'a.duckdb'", "LOAD httpfs", f"SELECT * FROM read_csv('{world}/secret.csv')"):
        with pytest.raises(duckdb.PermissionException):
            con.execute(sql)
    for sql in ("SET enable_external_access = true", "SET threads = 1", "SET lock_configuration = false",
                "SET autoinstall_known_extensions = true", "SET allowed_directories = ['/']"):
        with pytest.raises(duckdb.InvalidInputException, match="locked"):
            con.execute(sql)
    settings = dict(con.execute("SELECT name, value FROM duckdb_settings()").fetchall())
    assert settings["enable_external_access"] == "false" and settings["lock_configuration"] == "true"
    assert settings["autoinstall_known_extensions"] == "false" and settings["autoload_known_extensions"] == "false"
    assert not (world / "pwned.csv").exists() and not (world / "a.duckdb").exists()


def test_lock_down_without_readable_dirs_reads_registered_arrow_only(tmp_path):
    """Registered Arrow objects need no file access: lock_down(con, ()) leaves them queryable, files not."""
    import pyarrow as pa

    con = duckdb.connect(":memory:")
    con.register("t", pa.table({"x": [1, 2, 3]}))
    lock_down(con, ())
    assert con.execute("SELECT sum(x) FROM t").fetchone() == (6,)
    (tmp_path / "f.csv").write_text("a\n1\n")
    with pytest.raises(duckdb.PermissionException):
        con.execute(f"SELECT * FROM read_csv('{tmp_path}/f.csv')")


def test_allowed_directory_is_not_a_prefix_of_its_siblings(tmp_path):
    """Allowing '/x/rs' must not allow '/x/rs-other' (the separator is part of the prefix)."""
    (tmp_path / "rs").mkdir()
    (tmp_path / "rs-other").mkdir()
    (tmp_path / "rs" / "a.csv").write_text("a\n1\n")
    (tmp_path / "rs-other" / "a.csv").write_text("a\n2\n")
    con = duckdb.connect(":memory:")
    lock_down(con, [tmp_path / "rs"])
    assert con.execute(f"SELECT a FROM read_csv('{tmp_path}/rs/a.csv')").fetchone() == (1,)
    with pytest.raises(duckdb.PermissionException):
        con.execute(f"SELECT a FROM read_csv('{tmp_path}/rs-other/a.csv')")


def test_statement_check_alone(world):
    """check_read_only refuses by statement type, before DuckDB runs anything (even on an unlocked connection)."""
    for sql, kind in (("COPY (SELECT 1) TO 'x.csv'", "COPY"), ("EXPORT DATABASE 'd'", "EXPORT"),
                      ("CREATE TABLE t (x INT)", "CREATE"), ("SET threads = 1", "SET"), ("INSTALL httpfs", "LOAD"),
                      ("DELETE FROM t", "DELETE"), ("EXPLAIN ANALYZE COPY (SELECT 1) TO 'x.csv'", "EXPLAIN")):
        with pytest.raises(SandboxError, match=f"a {kind} statement"):
            check_read_only(duckdb.extract_statements(sql))
    check_read_only(duckdb.extract_statements("WITH a AS (SELECT 1) SELECT * FROM a"))
    raw = duckdb.connect(":memory:")  # not locked: only the statement check stands between SQL and the disk
    with pytest.raises(SandboxError):
        run_sql(raw, "COPY (SELECT 1) TO 'x.csv'")
    assert not (world / "x.csv").exists()


def test_check_output_path(tmp_path):
    shutil.copytree(FIXTURES / "release1-naive", tmp_path / "rs")
    with pytest.raises(SandboxError):
        check_output_path(tmp_path / "rs" / "points" / "x.csv")  # found by its manifest, not named
    with pytest.raises(SandboxError):
        check_output_path(tmp_path / "plain" / "x.csv", [tmp_path / "plain"])  # named as a result dir
    check_output_path(tmp_path / "x.csv", [tmp_path / "rs"])
