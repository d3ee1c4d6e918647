"""queries.resultset: manifest migrations, integrity checks, the writer lock, compaction (no Ray)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_store import SPEC, TASKS, events_table, points_table

from queries.db import QueryError, connect
from queries.resultset.manifest import FORMAT_VERSION, parse_manifest
from queries.resultset.reader import ResultSet
from queries.resultset.storage import locate
from queries.resultset.writer import compact
from sweeps.cli import main
from sweeps.store import ResultStore, StoreError

import synthetic_results as sr
from sweep_helpers import read_dir

FIXTURES = Path(__file__).parent / "fixtures"


def copy_fixture(name: str, tmp_path: Path) -> Path:
    d = tmp_path / name
    shutil.copytree(FIXTURES / name, d)
    return d


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def segment_set(tmp_path: Path) -> Path:
    """A finished set of SPEC's 6 one-shard tasks in three segments (tasks 0-1, 2-3, 4-5)."""
    d = tmp_path / "seg"
    store = ResultStore.create_or_open(d, SPEC, manifest_interval=3600)
    for t in TASKS:
        store.write_task(t.task_id, points_table(t), events_table(2) if t.task_id == 2 else None)
        if t.task_id % 2:
            store.flush()
    store._w.set_fields(n_tasks=6)  # record the total without finish's merge: keep three segments
    store.close()
    assert len(json.loads((d / "manifest.json").read_text())["segments"]) == 3
    return d


# ---- manifest versions ---------------------------------------------------------------------------


@pytest.mark.parametrize("name,tasks", [("release1-naive", 16), ("release1-cmc", 8), ("release1-partial", 10)])
def test_first_release_manifests_migrate(name, tasks):
    rs = ResultSet.open(FIXTURES / name)
    m = rs.manifest
    assert m.format_version == FORMAT_VERSION == 3 and m.segments == [] and len(m.done()) == tasks
    assert m.data_dir == ""  # the first release kept its files in points/ itself
    i = rs.check()
    assert len(i.intact) == tasks and not i.damaged
    assert i.complete == (name != "release1-partial")
    # every per-task file is read, and nothing else
    n = sum(pq.read_metadata(FIXTURES / name / "points" / f"task-{t:06d}.parquet").num_rows for t in range(tasks))
    assert rs.read_table("points").num_rows == n


def test_unknown_format_version_is_refused_by_every_reader(tmp_path, capsys):
    d = copy_fixture("release1-naive", tmp_path)
    m = json.loads((d / "manifest.json").read_text())
    m["format_version"] = 99
    (d / "manifest.json").write_text(json.dumps(m))
    want = "results format version 99, this stoprace reads 1 to 3"
    for open_ in (ResultSet.open, ResultStore.open_existing, connect,
                  lambda p: ResultStore.create_or_open(p, SPEC)):
        with pytest.raises((StoreError, QueryError), match=want):
            open_(d)
    for argv in (["query", d, "--sql", "select 1"], ["capacity", d, "--target-p", "1e-3"],
                 ["plot", d, "--x", "n_cpus", "-o", tmp_path / "f.png"],
                 ["replay", d, "--point", "x", "--shard", "0", "--trial", "0"], ["compact", d]):
        rc, out, err = run_cli(capsys, *argv)
        assert rc == 2 and want in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert not (tmp_path / "f.png").exists()


def test_manifest_parse_errors_are_one_line():
    with pytest.raises(StoreError, match="x: bad manifest: segments"):
        parse_manifest(json.dumps({"spec_hash": "h", "format_version": 2, "segments": [{"tasks": 3}]}).encode(), "x")
    with pytest.raises(StoreError, match="version 'two'"):
        parse_manifest(json.dumps({"spec_hash": "h", "format_version": "two"}).encode(), "x")


# ---- integrity -----------------------------------------------------------------------------------


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "deleted":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:  # garbage in the middle, same size: only the checksum can tell
        mid = len(data) // 2
        path.write_bytes(data[:mid] + bytes(b ^ 0x5A for b in data[mid:mid + 64]) + data[mid + 64:])
        assert path.stat().st_size == len(data)


@pytest.mark.parametrize("how", ["deleted", "truncated", "corrupted"])
def test_damaged_segment_is_reported_and_recomputed(tmp_path, capsys, how):
    d = segment_set(tmp_path)
    seg = json.loads((d / "manifest.json").read_text())["segments"][1]
    assert seg["tasks"] == [[2, 3]]
    full = read_dir(d)
    where = f".data/{seg['points']['path']}"  # the file itself (points/ holds a view: links to the committed files)
    _damage(d / where, how)
    i = ResultSet.open(d).check()
    assert set(i.intact) == {0, 1, 4, 5} and not i.complete and i.status == "damaged"
    (dmg,) = i.damaged
    assert dmg.path == where and list(dmg.tasks) == [2, 3]
    # query answers from the intact tasks and says, in one stderr line, which are missing
    rc, out, err = run_cli(capsys, "query", d, "--sql", "select count(*) n from points", "--format", "csv")
    assert rc == 0 and out.splitlines()[1] == "4"
    (line,) = err.strip().splitlines()
    assert line.startswith("stoprace query: warning: ") and "missing tasks 2-3" in line and where in line
    # capacity refuses unless --partial
    rc, out, err = run_cli(capsys, "capacity", d, "--target-p", "0.5")
    assert rc == 2 and "--partial" in err and "missing tasks 2-3" in err and out == ""
    rc, out, err = run_cli(capsys, "capacity", d, "--target-p", "0.5", "--partial")
    assert rc == 0 and out.startswith("PARTIAL: ") and "missing tasks 2-3" in out
    # the next writer drops the damaged segment, so its tasks are run (here: written) again
    store = ResultStore.create_or_open(d, SPEC)
    assert [r.path for r in store.repaired] == [where]
    assert store.done_tasks() == {0, 1, 4, 5}
    for t in TASKS[2:4]:
        store.write_task(t.task_id, points_table(t), events_table(2) if t.task_id == 2 else None)
    store.finish(6)
    store.close()
    assert ResultSet.open(d).check().complete
    assert read_dir(d).equals(full)
    rc, out, err = run_cli(capsys, "query", d, "--sql", "select count(*) n from points", "--format", "csv")
    assert rc == 0 and err == "" and out.splitlines()[1] == "6"


@pytest.mark.parametrize("how", ["deleted", "truncated"])
def test_damaged_first_release_file_is_reported(tmp_path, capsys, how):
    d = copy_fixture("release1-naive", tmp_path)
    _damage(d / "points" / "task-000005.parquet", how)
    i = ResultSet.open(d).check()
    assert len(i.intact) == 15 and 5 not in i.intact and [list(x.tasks) for x in i.damaged] == [[5]]
    rc, out, err = run_cli(capsys, "query", d, "--named", "stop_time")
    assert rc == 0 and "points/task-000005.parquet" in err and len(err.strip().splitlines()) == 1
    rc, out, err = run_cli(capsys, "query", d, "--named", "hang_conditions")
    assert rc == 2 and "--partial" in err
    rc, out, err = run_cli(capsys, "query", d, "--named", "hang_conditions", "--partial")
    assert rc == 0 and "PARTIAL: " in out and "missing tasks 5" in out


def test_incomplete_run_refused_by_capacity(tmp_path, capsys):
    d = FIXTURES / "release1-partial"
    rc, out, err = run_cli(capsys, "capacity", d, "--target-p", "1e-3")
    assert rc == 2 and "incomplete: 10 of 16 tasks stored (missing tasks 10-15)" in err
    rc, out, err = run_cli(capsys, "capacity", d, "--target-p", "1e-3", "--partial", "--format", "json")
    assert rc == 0 and "missing tasks 10-15" in json.loads(out)["partial"][0] and "missing tasks 10-15" in err


# ---- one writer ---------------------------------------------------------------------------------


def test_second_writer_refused_at_once_naming_the_holder(tmp_path):
    a = ResultStore.create_or_open(tmp_path, SPEC)
    with pytest.raises(StoreError) as ei:
        ResultStore.create_or_open(tmp_path, SPEC)
    msg = str(ei.value)
    assert f"is being written by pid {os.getpid()} on {socket.gethostname()}" in msg and "--break-lock" in msg
    with pytest.raises(StoreError, match="is being written by"):
        compact(locate(tmp_path))
    b = ResultStore.create_or_open(tmp_path, SPEC, break_lock=True)  # the user says the holder is gone
    b.write_task(0, points_table(TASKS[0]))
    b.close()
    assert not (tmp_path / "writer.lock").exists()
    c = ResultStore.create_or_open(tmp_path, SPEC)
    a._w.lock.release()  # the broken holder releasing late does not free c's lock
    assert (tmp_path / "writer.lock").exists()
    c.close()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    ResultStore.create_or_open(tmp_path, SPEC).close()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "writer.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                                      "token": "ab", "started": "then"}))
    ResultStore.create_or_open(tmp_path, SPEC).close()
    # a live holder on another host cannot be judged: refused
    (tmp_path / "writer.lock").write_text(json.dumps({"pid": 1, "host": "elsewhere", "token": "cd", "started": "t"}))
    with pytest.raises(StoreError, match="pid 1 on elsewhere since t"):
        ResultStore.create_or_open(tmp_path, SPEC)


# ---- compaction ----------------------------------------------------------------------------------


def test_compact_first_release_dir(tmp_path, capsys):
    d = copy_fixture("release1-naive", tmp_path)
    before_pts, before_ev = read_dir(d), read_dir(d, "events")
    before_out = connect(d).sql("select * from outcomes order by all").to_arrow_table()
    rc, out, err = run_cli(capsys, "compact", d)
    assert rc == 0, err
    assert out.startswith(f"{d}: 16 tasks, 19 files") and "-> 2 files" in out
    m = json.loads((d / "manifest.json").read_text())
    assert m["legacy_tasks"] == [] and len(m["segments"]) == 1 and m["segments"][0]["tasks"] == [[0, 15]]
    assert m["cpu_trials_done"] == 172800  # the first release's own count, recomputed from the rows
    assert read_dir(d).equals(before_pts) and read_dir(d, "events").equals(before_ev)
    assert connect(d).sql("select * from outcomes order by all").to_arrow_table().equals(before_out)
    # old files stay for readers still using them, listed as garbage, until the grace period ends; outside
    # readers see the committed segment only at once (points/ is a view, the files live in .data/)
    seg_name = Path(m["segments"][0]["points"]["path"]).name
    assert (d / ".data" / "points" / "task-000000.parquet").exists() and len(m["garbage"]) == 19
    assert sorted(os.listdir(d / "points")) == [seg_name] and (d / "points").is_symlink()
    rc, out, err = run_cli(capsys, "compact", d, "--grace", "0")
    assert rc == 0 and sorted(os.listdir(d / ".data" / "points")) == [seg_name]
    assert sorted(os.listdir(d / "points")) == [seg_name]
    assert json.loads((d / "manifest.json").read_text())["garbage"] == []
    assert read_dir(d).equals(before_pts)


def test_compacted_partial_dir_resumes(tmp_path):
    d = copy_fixture("release1-partial", tmp_path)
    compact(locate(d))
    from sweeps.spec import load_spec

    spec = load_spec(d / "spec.toml", force=True, stored=True)
    store = ResultStore.create_or_open(d, spec)
    assert store.done_tasks() == set(range(10)) and store.cpu_trials_done is not None
    store.close()


def test_readers_during_compaction_see_old_or_new_never_both(tmp_path):
    pts = sr.grid({"n_cpus": list(range(2, 42)), "wbinvd_us": [100.0, 1e4]}, lambda p: [{"clean": 990, "race": 10}] * 3)
    d = sr.write_results(tmp_path / "big", pts, sweep="big", n_tasks=240)
    want = (len(pts) * 3, len(pts) * 3 * 10)
    seen: list[tuple] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                c = connect(d)
                seen.append(c.execute("select count(*), (select count(*) from events) from points").fetchone())
                c.close()
            except BaseException as e:  # noqa: BLE001 - any failure is a finding
                errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        rep = compact(locate(d))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert rep.files_after == 2 and rep.tasks == 240
    assert not errors, errors[0]
    assert seen and all(s == want for s in seen)
    assert connect(d).execute("select count(*) from points").fetchone()[0] == want[0]
