"""sweeps.store over queries.resultset: segments, the manifest as commit point, resume, refusals, URIs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.histogram import N_BINS
from core.outcomes import OUTCOMES
from core.params import PARAM_NAMES
from sweeps.grid import iter_tasks, plan_signature
from sweeps.schema import EVENTS_SCHEMA, POINTS_SCHEMA
from sweeps.spec import parse_spec
from sweeps.store import RangeSet, ResultStore, StoreError

SPEC = parse_spec({"name": "st", "seed": 3, "trials": 10, "shard_trials": 5, "axes": {"n_cpus": [2, 4, 8]}})
OTHER = parse_spec({"name": "st", "seed": 4, "trials": 10, "shard_trials": 5, "axes": {"n_cpus": [2, 4, 8]}})


def points_table(task, sweep="st") -> pa.Table:
    rows, seeds = [], []
    for it in task.items:
        for k in it.shards:
            n = it.shard_size(k)
            row = {"sweep": sweep, "point_id": it.point.point_id, "shard": k, **it.point.values, "trials": n}
            row.update({o: 0 for o in OUTCOMES})
            row["clean"] = n
            row.update(t_done_sum_us=1.0 * n, t_done_max_us=1.0, t_done_hist=[0] * N_BINS, wall_s=0.01)
            row.update(estimator="naive", p_race_est=0.0, p_race_var=0.0, p_bad_est=0.0, p_bad_var=0.0)
            for f in POINTS_SCHEMA:  # columns added to the schema later: null (the store casts)
                if f.name != "seed":
                    row.setdefault(f.name, None)
            rows.append(row)
            seeds.append(it.point.point_seed)
    t = pa.Table.from_pylist(rows)  # inferred types (int64, double): the store casts
    return t.add_column(t.schema.get_field_index("wall_s"), "seed", pa.array(seeds, pa.uint64()))


def events_table(n: int) -> pa.Table:
    return pa.Table.from_pylist(
        [
            dict(sweep="st", point_id="ab", shard=0, trial=i, outcome="race", t_done_us=1.0, nmi_sent=1, racers=1, overlap_us=2.0, first_racer_cpu=3)
            for i in range(n)
        ],
        schema=EVENTS_SCHEMA,
    )


def snapshot(d: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for root, dirs, files in os.walk(d):
        for name in dirs + files:
            p = Path(root) / name
            st_ = p.stat()
            out[str(p.relative_to(d))] = (st_.st_mtime_ns, st_.st_size)
    return out


def committed(d: Path) -> dict:
    return json.loads((Path(d) / "manifest.json").read_text())


def stored_rows(d, what: str = "points") -> pa.Table:
    """Every committed row of a set, read through the manifest, sorted."""
    from queries.resultset.reader import ResultSet

    t = ResultSet.open(d).read_table(what)
    keys = [("point_id", "ascending"), ("shard", "ascending")] + ([("trial", "ascending")] if what == "events" else [])
    return t.sort_by(keys)


TASKS = list(iter_tasks(SPEC, cpu_trials_per_s=1))  # one shard per task: 6 tasks
LAYOUT = [".current", ".data", ".views", "events", "manifest.json", "points", "spec.toml"]
"""A set's top level (queries.resultset.layout) once its writer is done."""


def test_create_layout_and_manifest(tmp_path):
    out = tmp_path / "a" / "b" / "res"
    store = ResultStore.create_or_open(out, SPEC, plan=plan_signature())
    assert sorted(os.listdir(out)) == LAYOUT + ["writer.lock"]
    # the tables' files live under .data; manifest.json, points/ and events/ are links through .current,
    # the generation the last commit made (the views of points and events: empty yet)
    assert sorted(os.listdir(out / ".data")) == ["events", "points"]
    assert all((out / t).is_symlink() and os.listdir(out / t) == [] for t in ("points", "events"))
    assert os.readlink(out / "manifest.json") == ".current/manifest.json" and (out / ".current").is_symlink()
    lock = json.loads((out / "writer.lock").read_text())
    assert lock["pid"] == os.getpid() and lock["host"] and lock["started"]
    assert parse_spec((out / "spec.toml").read_text()) == SPEC
    m = committed(out)
    assert m["format_version"] == 3 and m["data_dir"] == ".data" and m["spec_hash"] == SPEC.spec_hash and m["n_points"] == 3
    assert m["n_tasks"] is None and m["segments"] == [] and m["legacy_tasks"] == [] and "T" in m["created"]
    assert m["plan"] == plan_signature()
    assert store.done_tasks() == set()
    store.close()
    assert sorted(os.listdir(out)) == LAYOUT  # lock released


def test_segments_hold_many_tasks_and_read_back_exactly(tmp_path):
    with ResultStore.create_or_open(tmp_path / "r", SPEC, manifest_interval=3600) as store:
        for t in TASKS[:4]:
            store.write_task(t.task_id, points_table(t), events_table(2) if t.task_id == 1 else None)
    m = committed(tmp_path / "r")
    (seg,) = m["segments"]  # one flush at close: one segment for four tasks
    assert seg["tasks"] == [[0, 3]] and seg["points"]["rows"] == 4 and seg["events"]["rows"] == 2
    for entry in (seg["points"], seg["events"]):
        data = (tmp_path / "r" / entry["path"]).read_bytes()
        assert len(data) == entry["size"]
        import hashlib

        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    t = pq.read_table(tmp_path / "r" / seg["points"]["path"])
    assert t.schema.equals(POINTS_SCHEMA)
    want = pa.concat_tables([points_table(x).select(POINTS_SCHEMA.names).cast(POINTS_SCHEMA) for x in TASKS[:4]])
    assert t.sort_by("n_cpus").equals(want.sort_by("n_cpus"))
    store = ResultStore.create_or_open(tmp_path / "r", SPEC)
    assert store.done_tasks() == {0, 1, 2, 3}
    store.write_task(4, points_table(TASKS[4]))
    store.write_task(5, points_table(TASKS[5]))
    store.finish(6)
    store.close()
    m = committed(tmp_path / "r")
    assert m["n_tasks"] == 6 and len(m["segments"]) == 1 and m["segments"][0]["tasks"] == [[0, 5]]  # finish merged
    ro = ResultStore.open_existing(tmp_path / "r")
    assert ro.done_tasks() == set(range(6)) and ro.complete and ro.spec == SPEC
    assert stored_rows(tmp_path / "r").num_rows == 6 and stored_rows(tmp_path / "r", "events").num_rows == 2
    with pytest.raises(StoreError, match="read-only"):
        ro.write_task(0, points_table(TASKS[0]))


def test_done_exactly_when_committed(tmp_path):
    store = ResultStore.create_or_open(tmp_path, SPEC, manifest_interval=3600)
    store.write_task(0, points_table(TASKS[0]))
    # buffered, not committed: no reader and no resume counts it, and no data file exists yet
    assert ResultStore.open_existing(tmp_path).done_tasks() == set()
    assert os.listdir(tmp_path / "points") == []
    store.flush()
    assert ResultStore.open_existing(tmp_path).done_tasks() == {0}
    store.close()


def test_a_task_is_stored_once(tmp_path):
    with ResultStore.create_or_open(tmp_path, SPEC, manifest_interval=3600) as store:
        store.write_task(0, points_table(TASKS[0]))
        store.write_task(0, points_table(TASKS[0]))  # twice in the buffer
        store.flush()
        store.write_task(0, points_table(TASKS[0]))  # again after its commit
    assert stored_rows(tmp_path).num_rows == 1


def test_commits_follow_the_interval(tmp_path):
    store = ResultStore.create_or_open(tmp_path, SPEC, manifest_interval=0.3)
    store.write_task(0, points_table(TASKS[0]))
    time.sleep(0.35)
    store.write_task(1, points_table(TASKS[1]))  # the interval has passed: both commit now
    assert committed(tmp_path)["segments"][0]["tasks"] == [[0, 1]]
    store.write_task(3, points_table(TASKS[3]))
    assert len(committed(tmp_path)["segments"]) == 1
    store.close()
    assert [s["tasks"] for s in committed(tmp_path)["segments"]] == [[[0, 1]], [[3, 3]]]


def test_uncommitted_files_are_invisible_and_a_dead_writers_leftovers_go(tmp_path):
    store = ResultStore.create_or_open(tmp_path, SPEC)
    store.write_task(0, points_table(TASKS[0]))
    store.close()
    # a writer killed mid-way: its lock (pid that no longer runs), a temp file and a segment
    # written but never committed, all named with its token
    dead = "00000000deadbeef"
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / "writer.lock").write_text(json.dumps({"pid": gone.pid, "host": os.uname().nodename, "token": dead,
                                                      "started": "x"}))
    import socket

    assert socket.gethostname() == os.uname().nodename
    orphan = tmp_path / ".data" / "points" / f"seg-{dead}-000001.parquet"  # where the writer writes
    pq.write_table(points_table(TASKS[1]).select(POINTS_SCHEMA.names).cast(POINTS_SCHEMA), orphan)
    tmp = tmp_path / ".data" / "points" / f".seg-{dead}-000002.parquet.{dead}.tmp"
    tmp.write_bytes(b"half a file")
    assert ResultStore.open_existing(tmp_path).done_tasks() == {0}
    assert stored_rows(tmp_path).num_rows == 1  # the orphan segment is not read
    store = ResultStore.create_or_open(tmp_path, SPEC)  # the stale lock is taken over
    assert not orphan.exists() and not tmp.exists()
    assert store.done_tasks() == {0} and len(os.listdir(tmp_path / "points")) == 1  # the view: the committed one
    store.close()


def test_first_release_tmp_files_removed(tmp_path):
    ResultStore.create_or_open(tmp_path, SPEC).close()
    stale = [tmp_path / ".data" / "points" / "task-000001.parquet.tmp", tmp_path / "manifest.json.tmp"]
    for p in stale:
        p.write_bytes(b"half")
    ResultStore.create_or_open(tmp_path, SPEC).close()
    assert not any(p.exists() for p in stale)


def test_write_failure_leaves_nothing(tmp_path):
    store = ResultStore.create_or_open(tmp_path, SPEC, manifest_interval=0)
    bad = points_table(TASKS[0]).drop_columns(["hang"])
    with pytest.raises(StoreError, match=r"task 0 points: missing column\(s\) hang"):
        store.write_task(0, bad)
    extra = points_table(TASKS[0]).append_column("zzz", pa.array([1]))
    with pytest.raises(StoreError, match=r"unexpected column\(s\) zzz"):
        store.write_task(0, extra)
    wrong = points_table(TASKS[0]).set_column(2, "shard", pa.array(["x"]))
    with pytest.raises(StoreError, match="does not match the store schema"):
        store.write_task(0, wrong)
    store.close()
    assert os.listdir(tmp_path / "points") == [] and store.done_tasks() == set()


def test_different_spec_refused_and_nothing_written(tmp_path):
    store = ResultStore.create_or_open(tmp_path / "r", SPEC, plan=plan_signature())
    store.write_task(0, points_table(TASKS[0]))
    store.close()
    before = snapshot(tmp_path / "r")
    time.sleep(0.01)
    with pytest.raises(StoreError) as ei:
        ResultStore.create_or_open(tmp_path / "r", OTHER)
    msg = str(ei.value)
    assert "\n" not in msg and "holds results of a different spec" in msg and SPEC.spec_hash[:12] in msg
    assert "use another --out" in msg
    with pytest.raises(StoreError, match="planned with"):
        ResultStore.create_or_open(tmp_path / "r", SPEC, plan=plan_signature(cpu_trials_per_s=1e6))
    assert snapshot(tmp_path / "r") == before


def test_foreign_dir_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "user.tmp").write_text("not ours")
    before = snapshot(tmp_path)
    with pytest.raises(StoreError, match=r"is not empty and is not a stoprace results dir \(no manifest.json\); use another --out"):
        ResultStore.create_or_open(tmp_path, SPEC)
    assert snapshot(tmp_path) == before
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        ResultStore.create_or_open(f, SPEC)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match="unreadable manifest"):
        ResultStore.create_or_open(tmp_path / "d", SPEC)


def test_open_existing_errors(tmp_path):
    with pytest.raises(StoreError) as ei:
        ResultStore.open_existing(tmp_path / "nope")
    assert str(ei.value) == f"results dir '{tmp_path / 'nope'}' does not exist"
    with pytest.raises(StoreError, match=r"is not a stoprace result set: no manifest.json"):
        ResultStore.open_existing(tmp_path)


def test_crash_after_manifest_self_heals(tmp_path):
    ResultStore.create_or_open(tmp_path, SPEC).close()
    os.remove(tmp_path / "spec.toml")
    os.rmdir(tmp_path / ".data" / "points")
    os.remove(tmp_path / "points")  # killed after the manifest, before the table dirs and their views
    store = ResultStore.create_or_open(tmp_path, SPEC)
    assert (tmp_path / "spec.toml").exists() and (tmp_path / ".data" / "points").is_dir()
    assert (tmp_path / "points").is_symlink() and os.listdir(tmp_path / "points") == []
    assert store.done_tasks() == set()
    store.close()


def test_manifest_ranges_compact(tmp_path):
    store = ResultStore.create_or_open(tmp_path, SPEC, manifest_interval=3600)
    for i in [5, 0, 2, 1, 4]:
        store.write_task(i, points_table(TASKS[i]))
    store.close()
    assert committed(tmp_path)["segments"][0]["tasks"] == [[0, 2], [4, 5]]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 60), max_size=80))
def test_rangeset_matches_set(xs):
    r = RangeSet()
    for x in xs:
        r.add(x)
    assert list(r) == sorted(set(xs)) and len(r) == len(set(xs))
    ranges = r.ranges()
    assert all(a <= b for a, b in ranges)
    assert all(ranges[i][1] + 1 < ranges[i + 1][0] for i in range(len(ranges) - 1))  # disjoint, not adjacent
    assert RangeSet(ranges).ranges() == ranges
    assert all((x in r) == (x in set(xs)) for x in range(-1, 62))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 60), max_size=50), st.lists(st.integers(0, 60), max_size=50))
def test_rangeset_intersection_and_difference_match_sets(xs, ys):
    a, b = RangeSet(xs), RangeSet(ys)
    assert list(a.intersection(b)) == sorted(set(xs) & set(ys)) == list(b.intersection(a))
    assert list(a.difference(b)) == sorted(set(xs) - set(ys))


def test_points_columns_cover_model():
    assert set(PARAM_NAMES) <= set(POINTS_SCHEMA.names)


def test_tiered_merges_bound_the_file_count(tmp_path):
    """One commit per task (interval 0): small segments are merged in tiers of 8, and finish leaves one."""
    from queries.resultset import writer

    spec = parse_spec({"name": "st", "seed": 3, "trials": 200, "shard_trials": 1, "axes": {"n_cpus": [2, 4]}})
    tasks = list(iter_tasks(spec, cpu_trials_per_s=1))
    assert len(tasks) >= 100
    store = ResultStore.create_or_open(tmp_path, spec, manifest_interval=0)
    most = 0
    for t in tasks:
        store.write_task(t.task_id, points_table(t))
        most = max(most, len(committed(tmp_path)["segments"]))
    # all segments are tiny (level 0): never more than 7 uncommitted-to-a-merge ones, plus merged ones
    assert most <= 2 * writer.MERGE_FANOUT
    store.finish(len(tasks))
    store.close()
    m = committed(tmp_path)
    assert len(m["segments"]) == 1 and RangeSet(m["segments"][0]["tasks"]).ranges() == [[0, len(tasks) - 1]]
    rows = stored_rows(tmp_path)
    assert rows.num_rows == len(tasks)  # every task once, none lost in the merges
    want = sum(t.cpu_trials for t in tasks)
    assert m["cpu_trials_done"] == want == m["segments"][0]["cpu_trials"]


def test_manifest_counts_cpu_trials_of_done_tasks_once(tmp_path):
    store = ResultStore.create_or_open(tmp_path / "r", SPEC, plan=plan_signature(cpu_trials_per_s=1))
    assert store.cpu_trials_done == 0
    for t in TASKS[:3]:
        store.write_task(t.task_id, points_table(t))
    store.flush()
    store.write_task(TASKS[0].task_id, points_table(TASKS[0]))  # a rerun is not counted twice
    store.close()
    want = sum(t.cpu_trials for t in TASKS[:3])
    assert store.cpu_trials_done == want
    assert ResultStore.open_existing(tmp_path / "r").cpu_trials_done == want


# ---- results dirs given as URIs / pyarrow filesystems ---------------------------------

import pyarrow.fs as pafs  # noqa: E402

from sweeps.store import is_uri  # noqa: E402


def _fill(store, tasks, events_for=(1,)):
    for t in tasks:
        store.write_task(t.task_id, points_table(t), events_table(2) if t.task_id in events_for else None)
    store.finish(len(tasks))
    store.close()


def test_is_uri():
    assert is_uri("file:///tmp/x") and is_uri("s3://bucket/prefix") and is_uri("gs://b/k") and is_uri("hdfs://nn:8020/x")
    assert not is_uri("results/x") and not is_uri("/abs/dir") and not is_uri(Path("/a")) and not is_uri("weird:name")


def test_file_uri_is_the_local_store(tmp_path):
    uri = (tmp_path / "r").as_uri()
    assert uri.startswith("file:///")
    store = ResultStore.create_or_open(uri, SPEC, plan=plan_signature())
    assert store.path == tmp_path / "r"
    _fill(store, TASKS)
    assert sorted(os.listdir(tmp_path / "r")) == LAYOUT
    by_path, by_uri = ResultStore.open_existing(tmp_path / "r"), ResultStore.open_existing(uri)
    assert by_path.done_tasks() == by_uri.done_tasks() == set(range(6)) and by_uri.complete
    assert by_uri.read_points().sort_by("n_cpus").equals(by_path.read_points().sort_by("n_cpus"))
    again = ResultStore.create_or_open(uri, SPEC, plan=plan_signature())
    assert again.done_tasks() == set(range(6))
    again.close()
    with pytest.raises(StoreError, match="holds results of a different spec") as ei:
        ResultStore.create_or_open(uri, OTHER)
    assert str(tmp_path / "r") in str(ei.value) and "\n" not in str(ei.value)
    with pytest.raises(StoreError, match="does not exist"):
        ResultStore.open_existing((tmp_path / "nope").as_uri())


def test_unknown_scheme_is_one_line(tmp_path):
    with pytest.raises(StoreError) as ei:
        ResultStore.create_or_open("nosuchfs://bucket/x", SPEC)
    assert str(ei.value).startswith("nosuchfs://bucket/x: cannot open results location:") and "\n" not in str(ei.value)


def test_pyarrow_filesystem_with_rename(tmp_path):
    """A non-local pyarrow filesystem whose rename is atomic (here a SubTree over local): temp + move."""
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    store = ResultStore.create_or_open("res", SPEC, filesystem=fs, plan=plan_signature())
    assert store.path == "res"
    _fill(store, TASKS[:4])
    local = ResultStore.open_existing(tmp_path / "res")  # the same files, as a local dir
    assert local.done_tasks() == {0, 1, 2, 3} and local.spec == SPEC
    assert stored_rows(tmp_path / "res", "events").num_rows == 2
    assert not [n for _, _, fs_ in os.walk(tmp_path) for n in fs_ if n.endswith(".tmp")]


class _ObjectStoreLike(pafs.FileSystemHandler):
    """An in-memory pyarrow filesystem that records every write and move (stands in for S3)."""

    def __init__(self) -> None:
        self.fs = pafs._MockFileSystem()
        self.writes: list[str] = []
        self.moves: list[tuple[str, str]] = []

    def get_type_name(self):
        return "objectstore-test"

    def normalize_path(self, path):
        return path

    def get_file_info(self, paths):
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.fs.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.fs.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        self.fs.delete_dir_contents("/", accept_root_dir=True)

    def delete_file(self, path):
        self.fs.delete_file(path)

    def move(self, src, dest):
        self.moves.append((src, dest))
        self.fs.move(src, dest)

    def copy_file(self, src, dest):
        self.fs.copy_file(src, dest)

    def open_input_stream(self, path):
        return self.fs.open_input_stream(path)

    def open_input_file(self, path):
        return self.fs.open_input_file(path)

    def open_output_stream(self, path, metadata):
        self.writes.append(path)
        return self.fs.open_output_stream(path)

    def open_append_stream(self, path, metadata):
        return self.fs.open_append_stream(path)


def test_object_store_writes_final_keys_directly():
    """No atomic rename on object stores: every file is one complete PUT of its final key, no temp, no move."""
    h = _ObjectStoreLike()
    fs = pafs.PyFileSystem(h)
    store = ResultStore.create_or_open("bucket/sweeps/st", SPEC, filesystem=fs, plan=plan_signature(),
                                       manifest_interval=3600)
    _fill(store, TASKS)
    assert h.moves == [] and not [w for w in h.writes if w.endswith(".tmp")]
    segs = [w for w in h.writes if "/seg-" in w]
    assert any(w.startswith("bucket/sweeps/st/points/seg-") for w in segs)
    ev = [w for w in segs if "/events/" in w]
    assert ev and h.writes.index(ev[0]) < h.writes.index(ev[0].replace("/events/", "/points/"))  # events first
    ro = ResultStore.open_existing("bucket/sweeps/st", filesystem=fs)
    assert ro.spec == SPEC and ro.complete and ro.done_tasks() == set(range(6))
    assert ro.read_points().num_rows == 6
    with pytest.raises(StoreError, match="different spec"):
        ResultStore.create_or_open("bucket/sweeps/st", OTHER, filesystem=fs)
    with pytest.raises(StoreError, match="does not exist"):
        ResultStore.open_existing("bucket/other", filesystem=fs)
