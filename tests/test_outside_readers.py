"""Readers without stoprace (issue 24 item 6): a plain glob or directory read of points/ and events/
sees exactly the rows `stoprace query` answers from, on a finished, an interrupted (SIGKILL mid-run),
a compacted and a resumed set, and at every moment during a run (each listing is one commit's files:
never an in-flight file, never a superseded one beside what replaced it).

The readers are the README's one-liners: DuckDB ``read_parquet('DIR/points/*.parquet')``,
``pandas.read_parquet('DIR/points')``, ``pyarrow.dataset.dataset('DIR/points')`` and polars
(``read_parquet('DIR/points/*.parquet')``, and the directory itself).
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import signal
import threading
from pathlib import Path

import duckdb
import pyarrow.dataset as ds
import pytest

from queries.resultset.storage import locate
from queries.resultset.writer import compact
from sweeps.cli import main
from sweeps.integrity import check_result_set

from sweep_helpers import ROOT, cli, finish, race_spec, stored, wait_for

KEY = ["point_id", "shard", "trials", "clean", "nmi_clean", "timeout", "race", "hang"]
EV_KEY = ["point_id", "shard", "trial", "outcome"]
SPEC = race_spec("outside", 17, 12000, 1000, 0.05)  # ~100 small tasks: many segments, tier merges
ENV = {"STOPRACE_COMMIT_S": "0.2"}


def _rows(table, cols) -> list[tuple]:
    return sorted(tuple(r[c] for c in cols) for r in table.select(cols).to_pylist()) if table.num_rows else []


def via_stoprace(capsys, d: Path, what: str = "points") -> list[tuple]:
    cols = KEY if what == "points" else EV_KEY
    capsys.readouterr()
    rc = main(["query", str(d), "--sql", f"select {', '.join(cols)} from {what}", "--format", "csv"])
    out, _ = capsys.readouterr()
    assert rc == 0
    rows = list(csv.reader(io.StringIO(out)))[1:]
    conv = [str, int, int, int, int, int, int, int] if what == "points" else [str, int, int, str]
    return sorted(tuple(f(x) for f, x in zip(conv, r)) for r in rows)


def outside(d: Path, what: str = "points") -> dict[str, list[tuple]]:
    """Each outside reader's rows of ``what`` (only the columns compared), as it reads the directory."""
    cols = KEY if what == "points" else EV_KEY
    t = d / what
    got = {
        "duckdb glob": _rows(duckdb.connect().sql(
            f"select {', '.join(cols)} from read_parquet('{t}/*.parquet')").to_arrow_table(), cols),
        "pyarrow.dataset": _rows(ds.dataset(t, format="parquet").to_table(columns=cols), cols),
    }
    pd = pytest.importorskip("pandas")
    df = pd.read_parquet(t, columns=cols)
    got["pandas dir"] = sorted(tuple(v.item() if hasattr(v, "item") else v for v in r)
                               for r in df.itertuples(index=False, name=None))
    pl = pytest.importorskip("polars")
    got["polars glob"] = _rows(pl.read_parquet(f"{t}/*.parquet", columns=cols).to_arrow(), cols)
    got["polars dir"] = _rows(pl.read_parquet(t, columns=cols).to_arrow(), cols)
    return got


def agree(capsys, d: Path) -> int:
    """Every outside reader gets exactly stoprace's rows (points and events); returns the points count."""
    for what in ("points", "events"):
        want = via_stoprace(capsys, d, what)
        for reader, rows in outside(d, what).items():
            assert rows == want, f"{reader} on {what}: {len(rows)} rows, stoprace {len(want)}"
    return len(via_stoprace(capsys, d))


class Watcher:
    """Reads DIR/points the plain way, over and over, while a writer works: every listing it gets must be
    one commit's files (no (point, shard) twice: never a merge beside its sources; never fewer rows than a
    listing before: never a file missing)."""

    def __init__(self, d: Path) -> None:
        self.d, self.stop, self.reads, self.gone = d, threading.Event(), [], 0
        self.errors: list[BaseException] = []
        self.t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        con = duckdb.connect()
        while not self.stop.is_set():
            if not (self.d / "points").exists():
                continue
            try:
                t = con.sql(f"select point_id, shard from read_parquet('{self.d}/points/*.parquet')").to_arrow_table()
            except duckdb.IOException as e:
                # no files yet, or a file listed just before a commit replaced it (a merge) was gone when
                # DuckDB opened it: a plain reader then fails and reads again, never gets wrong rows
                self.gone += "No files found" not in str(e)
                continue
            except BaseException as e:  # noqa: BLE001 - any other failure is a finding
                self.errors.append(e)
                return
            keys = list(zip(t["point_id"].to_pylist(), t["shard"].to_pylist()))
            if len(set(keys)) != len(keys):
                self.errors.append(AssertionError(f"a listing held {len(keys) - len(set(keys))} rows twice"))
            if self.reads and len(keys) < self.reads[-1]:
                self.errors.append(AssertionError(f"a listing had {len(keys)} rows after one with {self.reads[-1]}"))
            self.reads.append(len(keys))

    def __enter__(self) -> Watcher:
        self.t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.t.join(30)
        assert not self.errors, self.errors[0]


@pytest.mark.slow
def test_finished_interrupted_compacted_and_resumed_sets_read_the_same_outside(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    # a run killed mid-way (SIGKILL: no chance to tidy up), watched the plain way while it ran
    cut = tmp_path / "cut"
    with Watcher(cut) as w:
        proc = cli("run", str(spec), "--out", str(cut), "--workers", "2", "--no-progress", env=ENV)
        wait_for(lambda: stored(cut) >= 30, 600, "30 tasks stored", proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(60)
    assert w.reads, "the watcher never got a listing"
    v = check_result_set(cut)
    assert v.status == "partial" and v.tasks_stored >= 30
    n_cut = agree(capsys, cut)
    # compacted while interrupted: one commit swaps many segments for few
    before = len(list((cut / "points").glob("*.parquet")))
    with Watcher(cut):
        compact(locate(cut))
    assert agree(capsys, cut) == n_cut
    # the files compaction superseded are still there for stoprace readers in their grace period, beside
    # what replaced them; a plain glob of points/ does not see them
    after = len(list((cut / "points").glob("*.parquet")))
    assert before > after and len(list((cut / ".data" / "points").glob("*.parquet"))) >= before + after
    # resumed to the end, watched
    with Watcher(cut):
        finish(cli("run", str(spec), "--out", str(cut), "--workers", "2", "--no-progress", env=ENV), timeout=900)
    assert check_result_set(cut).status == "complete"
    n_all = agree(capsys, cut)
    assert n_all > n_cut


def test_a_compacted_first_release_set_reads_the_same_outside(tmp_path, capsys):
    d = tmp_path / "old"
    shutil.copytree(ROOT / "tests" / "fixtures" / "release1-naive", d)
    assert agree(capsys, d) == 16  # the first release's layout, as it was written
    with Watcher(d):
        compact(locate(d))  # converts the set (points/ becomes a view) and swaps 19 files for 2
    assert agree(capsys, d) == 16
    assert len(list((d / ".data" / "points").glob("*.parquet"))) == 17  # the task files wait out the grace period
    assert len(list((d / "points").glob("*.parquet"))) == 1


def test_a_copy_that_followed_the_links_reads_and_is_written_again(tmp_path, capsys):
    # shutil.copytree, scp -r or a zip follow links: the copy holds real files where links were
    d = tmp_path / "set"
    shutil.copytree(ROOT / "tests" / "fixtures" / "release1-naive", d)
    compact(locate(d))
    c = tmp_path / "copy"
    shutil.copytree(d, c)
    assert not (c / "points").is_symlink() and not (c / "manifest.json").is_symlink()
    assert check_result_set(c).status == "complete" and agree(capsys, c) == 16
    compact(locate(c), grace_s=0)  # the next writer puts the links back
    assert all((c / n).is_symlink() for n in ("manifest.json", "points", "events", ".current"))
    assert check_result_set(c).status == "complete" and agree(capsys, c) == 16


README_READS = re.search(r"Read them without stoprace:\n\n  ```python\n(.*?)\n  ```",
                         (ROOT / "README.md").read_text(encoding="utf-8"), re.S)


def test_a_finished_run_reads_the_same_outside_and_so_do_the_readmes_one_liners(tmp_path, capsys):
    """The issue's case: a run finished uninterrupted leaves the segments its final merge replaced
    for their grace period (1,122 rows read outside where 192 were committed). Outside readers see
    only the merged ones; the README's one-line reads, run as printed on this set, count its rows."""
    spec = tmp_path / "spec.toml"
    spec.write_text(race_spec("finished", 5, 3000, 1000, 0.05))
    d = tmp_path / "tdx"
    finish(cli("run", str(spec), "--out", str(d), "--no-progress", env=ENV), timeout=600)
    assert check_result_set(d).status == "complete"
    superseded = len(list((d / ".data" / "points").glob("*.parquet"))) - len(list((d / "points").glob("*.parquet")))
    assert superseded > 0, "the run left no superseded segment: the case is not reproduced"
    n = agree(capsys, d)
    assert n == 8 * 3  # 8 points x 3 shards of 1000 trials
    assert README_READS, "the README's outside-reader block moved: update this test with it"
    import duckdb  # noqa: F401 - the README's lines name these modules
    import pandas  # noqa: F401
    import polars  # noqa: F401
    import pyarrow.dataset  # noqa: F401

    lines = [ln.split("  #")[0].strip() for ln in README_READS[1].splitlines() if ln.strip()]
    assert [ln.split(".")[0] for ln in lines] == ["duckdb", "pandas", "pyarrow", "polars"], lines
    for line in lines:
        got = eval(line.replace("results/tdx", str(d)))  # noqa: S307 - the README's own code
        if line.startswith("duckdb"):  # a relation of one row: the count
            (rows,), = got.fetchall()
        else:  # a pandas or polars frame, a pyarrow table
            rows = got.num_rows if line.startswith("pyarrow") else len(got)
        assert rows == n, f"{line}: {rows} rows, stoprace {n}"
