"""sweeps.store: layout, atomic writes, manifest, resume, refusals."""

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
from sweeps.store import RangeSet, ResultStore, StoreError, task_file_name

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


def test_create_layout_and_manifest(tmp_path):
    out = tmp_path / "a" / "b" / "res"
    store = ResultStore.create_or_open(out, SPEC, plan=plan_signature())
    assert sorted(os.listdir(out)) == ["events", "manifest.json", "points", "spec.toml"]
    assert parse_spec((out / "spec.toml").read_text()) == SPEC
    m = json.loads((out / "manifest.json").read_text())
    assert m["spec_hash"] == SPEC.spec_hash and m["n_points"] == 3 and m["n_tasks"] is None
    assert m["tasks_done"] == [] and m["version"] and "T" in m["created"]
    assert m["plan"] == plan_signature()
    assert store.done_tasks() == set()


def test_write_tasks_and_reopen(tmp_path):
    tasks = list(iter_tasks(SPEC, cpu_trials_per_s=1))  # one shard per task
    assert len(tasks) == 6
    with ResultStore.create_or_open(tmp_path / "r", SPEC) as store:
        for t in tasks[:4]:
            store.write_task(t.task_id, points_table(t), events_table(2) if t.task_id == 1 else None)
    assert sorted(os.listdir(tmp_path / "r" / "points")) == [task_file_name(i) for i in range(4)]
    assert os.listdir(tmp_path / "r" / "events") == ["task-000001.parquet"]
    t = pq.read_table(tmp_path / "r" / "points" / "task-000002.parquet")
    assert t.schema.equals(POINTS_SCHEMA)
    assert t.column("n_cpus").to_pylist() == [4] and t.column("shard").to_pylist() == [0]
    assert pq.read_table(tmp_path / "r" / "events" / "task-000001.parquet").num_rows == 2

    store = ResultStore.create_or_open(tmp_path / "r", SPEC)
    assert store.done_tasks() == {0, 1, 2, 3}
    store.write_task(4, points_table(tasks[4]))
    store.write_task(5, points_table(tasks[5]))
    store.finish(6)
    m = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert m["n_tasks"] == 6 and m["tasks_done"] == [[0, 5]]
    ro = ResultStore.open_existing(tmp_path / "r")
    assert ro.done_tasks() == set(range(6)) and ro.complete and ro.spec == SPEC
    with pytest.raises(StoreError, match="read-only"):
        ro.write_task(0, points_table(tasks[0]))


def test_done_requires_manifest_and_file(tmp_path):
    store = ResultStore.create_or_open(tmp_path, SPEC, manifest_interval=3600)
    t0 = next(iter_tasks(SPEC, cpu_trials_per_s=1))
    store.write_task(0, points_table(t0))
    # listed in memory, not yet in the manifest on disk: a fresh open does not count it
    assert ResultStore.open_existing(tmp_path).done_tasks() == set()
    store.flush()
    assert ResultStore.open_existing(tmp_path).done_tasks() == {0}
    os.remove(store.points_path(0))  # listed but file gone: not done
    assert store.done_tasks() == set()
    assert ResultStore.open_existing(tmp_path).done_tasks() == set()


def test_manifest_batched(tmp_path):
    store = ResultStore.create_or_open(tmp_path, SPEC, manifest_interval=0.2)
    tasks = list(iter_tasks(SPEC, cpu_trials_per_s=1))
    store.write_task(0, points_table(tasks[0]))
    assert json.loads((tmp_path / "manifest.json").read_text())["tasks_done"] == []
    time.sleep(0.25)
    store.write_task(1, points_table(tasks[1]))
    assert json.loads((tmp_path / "manifest.json").read_text())["tasks_done"] == [[0, 1]]
    store.write_task(3, points_table(tasks[3]))
    store.close()
    assert json.loads((tmp_path / "manifest.json").read_text())["tasks_done"] == [[0, 1], [3, 3]]


def test_stale_tmp_removed_and_never_listed(tmp_path):
    store = ResultStore.create_or_open(tmp_path, SPEC)
    t0 = next(iter_tasks(SPEC, cpu_trials_per_s=1))
    store.write_task(0, points_table(t0))
    store.close()
    stale = [tmp_path / "points" / "task-000001.parquet.tmp", tmp_path / "events" / "task-000001.parquet.tmp", tmp_path / "manifest.json.tmp"]
    for p in stale:
        p.write_bytes(b"half a file")
    # a killed run that listed task 1 before its file was renamed into place
    m = json.loads((tmp_path / "manifest.json").read_text())
    m["tasks_done"] = [[0, 1]]
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    assert ResultStore.open_existing(tmp_path).done_tasks() == {0}  # a .tmp is never a done task
    ResultStore.create_or_open(tmp_path, SPEC)
    assert not any(p.exists() for p in stale)
    assert not any(n.endswith(".tmp") for _, _, fs in os.walk(tmp_path) for n in fs)


def test_write_failure_leaves_no_tmp(tmp_path):
    store = ResultStore.create_or_open(tmp_path, SPEC)
    t0 = next(iter_tasks(SPEC, cpu_trials_per_s=1))
    bad = points_table(t0).drop_columns(["hang"])
    with pytest.raises(StoreError, match=r"task 0 points: missing column\(s\) hang"):
        store.write_task(0, bad)
    extra = points_table(t0).append_column("zzz", pa.array([1]))
    with pytest.raises(StoreError, match=r"unexpected column\(s\) zzz"):
        store.write_task(0, extra)
    wrong = points_table(t0).set_column(2, "shard", pa.array(["x"]))
    with pytest.raises(StoreError, match="does not match the store schema"):
        store.write_task(0, wrong)
    assert os.listdir(tmp_path / "points") == [] and store.done_tasks() == set()


def test_rerun_without_events_drops_old_events_file(tmp_path):
    store = ResultStore.create_or_open(tmp_path, SPEC)
    t0 = next(iter_tasks(SPEC, cpu_trials_per_s=1))
    store.write_task(0, points_table(t0), events_table(3))
    assert store.events_path(0).exists()
    store.write_task(0, points_table(t0), events_table(0))
    assert not store.events_path(0).exists()


def test_different_spec_refused_and_nothing_written(tmp_path):
    store = ResultStore.create_or_open(tmp_path / "r", SPEC, plan=plan_signature())
    t0 = next(iter_tasks(SPEC, cpu_trials_per_s=1))
    store.write_task(0, points_table(t0))
    store.close()
    (tmp_path / "r" / "points" / "task-000009.parquet.tmp").write_bytes(b"x")
    before = snapshot(tmp_path / "r")
    time.sleep(0.01)
    with pytest.raises(StoreError) as ei:
        ResultStore.create_or_open(tmp_path / "r", OTHER)
    msg = str(ei.value)
    assert "\n" not in msg and "holds results of a different spec" in msg and SPEC.spec_hash[:12] in msg
    assert "use another --out" in msg
    with pytest.raises(StoreError, match="planned with"):
        ResultStore.create_or_open(tmp_path / "r", SPEC, plan=plan_signature(cpu_trials_per_s=1e6))
    assert snapshot(tmp_path / "r") == before  # even the stale .tmp is untouched


def test_foreign_dir_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
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


def test_empty_dir_is_used(tmp_path):
    store = ResultStore.create_or_open(tmp_path, SPEC)
    assert (tmp_path / "manifest.json").exists() and store.done_tasks() == set()


def test_open_existing_errors(tmp_path):
    with pytest.raises(StoreError) as ei:
        ResultStore.open_existing(tmp_path / "nope")
    assert str(ei.value) == f"{tmp_path / 'nope'}: no such results directory"
    with pytest.raises(StoreError, match=r"not a stoprace results dir \(no manifest.json\)"):
        ResultStore.open_existing(tmp_path)


def test_crash_after_manifest_self_heals(tmp_path):
    ResultStore.create_or_open(tmp_path, SPEC)
    os.remove(tmp_path / "spec.toml")
    os.rmdir(tmp_path / "points")
    store = ResultStore.create_or_open(tmp_path, SPEC)
    assert (tmp_path / "spec.toml").exists() and (tmp_path / "points").is_dir()
    assert store.done_tasks() == set()


def test_manifest_ranges_compact(tmp_path):
    store = ResultStore.create_or_open(tmp_path, SPEC, manifest_interval=3600)
    tasks = list(iter_tasks(SPEC, cpu_trials_per_s=1))
    for i in [5, 0, 2, 1, 4]:
        store.write_task(i, points_table(tasks[i]))
    store.flush()
    assert json.loads((tmp_path / "manifest.json").read_text())["tasks_done"] == [[0, 2], [4, 5]]


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


def test_points_columns_cover_model():
    assert set(PARAM_NAMES) <= set(POINTS_SCHEMA.names)


def test_only_own_tmp_files_ignored_or_deleted(tmp_path):
    (tmp_path / "user.tmp").write_text("not ours")
    with pytest.raises(StoreError, match="not a stoprace results dir"):
        ResultStore.create_or_open(tmp_path, SPEC)
    assert (tmp_path / "user.tmp").exists()
    d = tmp_path / "r"
    d.mkdir()
    (d / "manifest.json.tmp").write_text("half")  # a run killed while creating the dir
    ResultStore.create_or_open(d, SPEC)
    assert not (d / "manifest.json.tmp").exists()


def test_lenient_manifest_reading(tmp_path):
    ResultStore.create_or_open(tmp_path, SPEC).close()
    m = json.loads((tmp_path / "manifest.json").read_text())
    del m["format"], m["format_version"]
    m["tasks_done"] = [0, [2, 3]]  # bare ints are read as single tasks
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    store = ResultStore.create_or_open(tmp_path, SPEC)
    assert store.manifest["tasks_done"] == [[0, 0], [2, 3]]


# ---- results dirs given as URIs / pyarrow filesystems ---------------------------------

import pyarrow.fs as pafs  # noqa: E402

from sweeps.store import is_uri  # noqa: E402


def _fill(store, tasks, events_for=(1,)):
    for t in tasks:
        store.write_task(t.task_id, points_table(t), events_table(2) if t.task_id in events_for else None)
    store.finish(len(tasks))


def test_is_uri():
    assert is_uri("file:///tmp/x") and is_uri("s3://bucket/prefix") and is_uri("gs://b/k") and is_uri("hdfs://nn:8020/x")
    assert not is_uri("results/x") and not is_uri("/abs/dir") and not is_uri(Path("/a")) and not is_uri("weird:name")


def test_file_uri_is_the_local_store(tmp_path):
    tasks = list(iter_tasks(SPEC, cpu_trials_per_s=1))
    uri = (tmp_path / "r").as_uri()
    assert uri.startswith("file:///")
    store = ResultStore.create_or_open(uri, SPEC, plan=plan_signature())
    assert store.path == tmp_path / "r" and store.points_path(3) == tmp_path / "r" / "points" / "task-000003.parquet"
    _fill(store, tasks)
    store.close()
    assert sorted(os.listdir(tmp_path / "r")) == ["events", "manifest.json", "points", "spec.toml"]
    # the same dir reads back the same whether named by path or by URI
    by_path, by_uri = ResultStore.open_existing(tmp_path / "r"), ResultStore.open_existing(uri)
    assert by_path.done_tasks() == by_uri.done_tasks() == set(range(6)) and by_uri.complete
    assert by_uri.read_points(2).equals(pq.read_table(tmp_path / "r" / "points" / "task-000002.parquet"))
    # resume through the URI: same spec reopens, another spec is refused with one line naming the dir
    assert ResultStore.create_or_open(uri, SPEC, plan=plan_signature()).done_tasks() == set(range(6))
    with pytest.raises(StoreError, match="holds results of a different spec") as ei:
        ResultStore.create_or_open(uri, OTHER)
    assert str(tmp_path / "r") in str(ei.value) and "\n" not in str(ei.value)


def test_file_uri_stale_tmp_and_refusals(tmp_path):
    ResultStore.create_or_open((tmp_path / "r").as_uri(), SPEC).close()
    (tmp_path / "r" / "points" / "task-000001.parquet.tmp").write_bytes(b"half")
    ResultStore.create_or_open((tmp_path / "r").as_uri(), SPEC)
    assert not (tmp_path / "r" / "points" / "task-000001.parquet.tmp").exists()
    (tmp_path / "f").write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        ResultStore.create_or_open((tmp_path / "f").as_uri(), SPEC)
    with pytest.raises(StoreError, match="no such results directory"):
        ResultStore.open_existing((tmp_path / "nope").as_uri())


def test_unknown_scheme_is_one_line(tmp_path):
    with pytest.raises(StoreError) as ei:
        ResultStore.create_or_open("nosuchfs://bucket/x", SPEC)
    assert str(ei.value).startswith("nosuchfs://bucket/x: cannot open results location:") and "\n" not in str(ei.value)


def test_pyarrow_filesystem_with_rename(tmp_path):
    """A non-local pyarrow filesystem whose rename is atomic (here a SubTree over local): *.tmp + move."""
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    tasks = list(iter_tasks(SPEC, cpu_trials_per_s=1))
    store = ResultStore.create_or_open("res", SPEC, filesystem=fs, plan=plan_signature())
    assert store.path == "res" and store.points_path(0) == "res/points/task-000000.parquet"
    _fill(store, tasks[:4])
    store.close()
    (tmp_path / "res" / "points" / "task-000009.parquet.tmp").write_bytes(b"half")
    local = ResultStore.open_existing(tmp_path / "res")  # the same files, as a local dir
    assert local.done_tasks() == {0, 1, 2, 3} and local.spec == SPEC
    assert pq.read_table(tmp_path / "res" / "points" / "task-000002.parquet").schema.equals(POINTS_SCHEMA)
    assert pq.read_table(tmp_path / "res" / "events" / "task-000001.parquet").num_rows == 2
    again = ResultStore.create_or_open("res", SPEC, filesystem=fs, plan=plan_signature())
    assert not (tmp_path / "res" / "points" / "task-000009.parquet.tmp").exists()
    assert again.done_tasks() == {0, 1, 2, 3}
    again.write_task(1, points_table(tasks[1]))  # rerun without events drops the old events file
    assert not (tmp_path / "res" / "events" / "task-000001.parquet").exists()


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
    """No atomic rename on object stores: every file is one complete PUT of its final key, no *.tmp, no move."""
    h = _ObjectStoreLike()
    fs = pafs.PyFileSystem(h)
    tasks = list(iter_tasks(SPEC, cpu_trials_per_s=1))
    store = ResultStore.create_or_open("bucket/sweeps/st", SPEC, filesystem=fs, plan=plan_signature(), manifest_interval=3600)
    _fill(store, tasks)
    store.close()
    assert h.moves == [] and not [w for w in h.writes if w.endswith(".tmp")]
    assert "bucket/sweeps/st/points/task-000005.parquet" in h.writes
    assert "bucket/sweeps/st/events/task-000001.parquet" in h.writes
    assert h.writes.index("bucket/sweeps/st/events/task-000001.parquet") < h.writes.index(
        "bucket/sweeps/st/points/task-000001.parquet"
    )  # events before points, as locally
    ro = ResultStore.open_existing("bucket/sweeps/st", filesystem=fs)
    assert ro.spec == SPEC and ro.complete and ro.done_tasks() == set(range(6))
    assert ro.read_points(4).schema.equals(POINTS_SCHEMA)
    with pytest.raises(StoreError, match="different spec"):
        ResultStore.create_or_open("bucket/sweeps/st", OTHER, filesystem=fs)
    with pytest.raises(StoreError, match="no such results directory"):
        ResultStore.open_existing("bucket/other", filesystem=fs)


def test_manifest_counts_cpu_trials_of_done_tasks_once(tmp_path):
    # the progress total of a resumed run comes from here, not from reading every stored file
    store = ResultStore.create_or_open(tmp_path / "r", SPEC, plan=plan_signature(cpu_trials_per_s=1))
    tasks = list(iter_tasks(SPEC, cpu_trials_per_s=1))[:3]
    assert store.cpu_trials_done == 0
    for t in tasks:
        store.write_task(t.task_id, points_table(t))
    store.write_task(tasks[0].task_id, points_table(tasks[0]))  # a rerun is not counted twice
    store.close()
    want = sum(t.cpu_trials for t in tasks)
    assert store.cpu_trials_done == want
    assert ResultStore.open_existing(tmp_path / "r").cpu_trials_done == want
