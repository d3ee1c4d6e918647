"""queries.sandbox output-path checks, test strength (issue 23 item 5): `-o` never lands in a result set.

Each case is a directory layout built here with a known answer (is the target at or below a named
result dir, or at or below any directory holding a manifest.json, symlinks resolved?), so a check
that looks one level too shallow, forgets the directory itself or compares unresolved paths fails
one of them. The statement and connection fences have their own cases in test_sandbox.py.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from queries.sandbox import SandboxError, check_output_path, check_read_only


def _result_set(d: Path) -> Path:
    (d / "points").mkdir(parents=True)
    (d / "manifest.json").write_text('{"spec_hash": "x"}')
    return d


def test_the_named_result_dir_itself_is_refused(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(SandboxError, match="inside the result set"):
        check_output_path(plain, [plain])


def test_deep_below_a_named_dir_without_manifest_is_refused(tmp_path):
    """A named result dir need not hold a manifest yet (a run just started): every depth below it is inside."""
    plain = tmp_path / "plain"
    (plain / "sub" / "deeper").mkdir(parents=True)
    for out in (plain / "x.csv", plain / "sub" / "x.csv", plain / "sub" / "deeper" / "x.csv"):
        with pytest.raises(SandboxError):
            check_output_path(out, [plain])
    check_output_path(tmp_path / "plainly.csv", [plain])  # a sibling whose name starts the same is outside
    check_output_path(tmp_path / "plain-other" / "x.csv", [plain])


def test_directly_inside_an_unnamed_result_set_is_refused(tmp_path):
    rs = _result_set(tmp_path / "rs")
    with pytest.raises(SandboxError, match=str(rs)):
        check_output_path(rs / "x.csv")  # found by its manifest one level up: the directory itself counts
    with pytest.raises(SandboxError):
        check_output_path(rs / "points" / "x.csv")
    check_output_path(tmp_path / "x.csv")  # beside it is fine


def test_a_symlink_into_a_result_set_is_resolved(tmp_path):
    rs = _result_set(tmp_path / "rs")
    (tmp_path / "link").symlink_to(rs / "points")
    with pytest.raises(SandboxError):
        check_output_path(tmp_path / "link" / "x.csv")


def test_a_result_dir_named_through_a_symlink_is_resolved(tmp_path):
    real = tmp_path / "real"
    real.mkdir()  # no manifest: only the name protects it
    (tmp_path / "alias").symlink_to(real)
    with pytest.raises(SandboxError):
        check_output_path(real / "x.csv", [tmp_path / "alias"])
    with pytest.raises(SandboxError):
        check_output_path(tmp_path / "alias" / "x.csv", [real])


def test_only_plain_queries_pass_the_statement_check():
    for sql in ("EXPLAIN SELECT 1", "EXPLAIN ANALYZE SELECT 1", "PRAGMA version", "CALL pragma_version()",
                "SET threads = 1", "COPY (SELECT 1) TO 'x.csv'"):
        with pytest.raises(SandboxError):
            check_read_only(duckdb.extract_statements(sql))
    for sql in ("SELECT 1", "FROM (SELECT 1 AS a)", "VALUES (1)", "WITH a AS (SELECT 1) SELECT * FROM a"):
        check_read_only(duckdb.extract_statements(sql))
