"""The result-set writer, test strength (issue 23 item 5): durability order, migrations, merge tiers,
the grace period.

- **Durability** is observed, not assumed: os.fsync and os.replace are wrapped to record a call log
  (the path behind each fsync'd descriptor, read from /proc/self/fd), and every commit must be
  "fsync the new file, rename it into place, fsync its directory", in that order, before anything
  that makes it visible (a manifest naming it); a segment's events file before its points file.
- **Migrations** keep every field of an old manifest (hand-written first-release manifest).
- **Merge tiers** and `_level` against hand-computed sizes; the **grace period** at its boundary with
  the clock fixed (a file superseded exactly grace_s ago is due, one a millisecond younger is not).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_store import events_table, points_table

from queries.resultset import writer as writer_mod
from queries.resultset.manifest import Garbage, Manifest, Segment, parse_manifest
from queries.resultset.storage import LocalBackend, atomic_write_file
from sweeps.grid import iter_tasks
from sweeps.spec import parse_spec
from sweeps.store import ResultStore

SPEC8 = parse_spec({"name": "st", "seed": 3, "trials": 10, "shard_trials": 5, "axes": {"n_cpus": [2, 4, 8, 16]}})
TASKS8 = list(iter_tasks(SPEC8, cpu_trials_per_s=1))  # one shard per task: 8 tasks


# ---- the call log -------------------------------------------------------------------------------------


@pytest.fixture()
def calls(monkeypatch):
    """[("fsync", path) | ("replace", src, dst)] in the order they happen (paths resolved; dst's own last
    component is kept, so a rename over a symbolic link names the link, not what it pointed to)."""
    log: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        try:
            log.append(("fsync", os.path.realpath(os.readlink(f"/proc/self/fd/{fd}"))))
        except OSError:
            log.append(("fsync", None))
        return real_fsync(fd)

    def replace(src, dst, *a, **kw):
        dst_parent, dst_name = os.path.split(os.path.abspath(dst))
        log.append(("replace", os.path.realpath(src), os.path.join(os.path.realpath(dst_parent), dst_name)))
        return real_replace(src, dst, *a, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return log


def assert_durable_commit(log: list[tuple], final: Path) -> int:
    """The rename into `final` is preceded by an fsync of its source and followed by an fsync of its
    directory; returns the index of the directory fsync (the instant the file is durable)."""
    final = Path(os.path.realpath(final))
    idx = [i for i, c in enumerate(log) if c[0] == "replace" and c[2] == str(final)]
    assert len(idx) == 1, (final, log)
    i = idx[0]
    src = log[i][1]
    assert ("fsync", src) in log[:i], f"{final.name}: its temporary file was not fsynced before the rename: {log}"
    after = [j for j in range(i + 1, len(log)) if log[j] == ("fsync", str(final.parent))]
    assert after, f"{final.name}: its directory was not fsynced after the rename: {log}"
    return after[0]


def test_new_file_is_fsynced_renamed_then_its_directory_fsynced(tmp_path, calls):
    b = LocalBackend(tmp_path)
    b.makedirs("points")
    nf = b.new_file("points/seg-x.parquet", "tok1")
    nf.f.write(b"data")
    w = nf.commit()
    assert w.size == 4 and (tmp_path / "points" / "seg-x.parquet").read_bytes() == b"data"
    assert_durable_commit(calls, tmp_path / "points" / "seg-x.parquet")


def test_replace_bytes_and_atomic_write_file_are_durable(tmp_path, calls):
    b = LocalBackend(tmp_path)
    b.replace_bytes("manifest.json", b"{}", "tok1")
    assert_durable_commit(calls, tmp_path / "manifest.json")
    atomic_write_file(tmp_path / "out.csv", b"a,b\n")
    assert_durable_commit(calls, tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_bytes() == b"a,b\n"


def test_exclusive_create_is_durable(tmp_path, calls):
    b = LocalBackend(tmp_path)
    assert b.create_exclusive("writer.lock", b"me") is True
    f = ("fsync", os.path.realpath(tmp_path / "writer.lock"))
    d = ("fsync", os.path.realpath(tmp_path))
    assert f in calls and d in calls and calls.index(f) < calls.index(d), calls
    assert b.create_exclusive("writer.lock", b"you") is False and (tmp_path / "writer.lock").read_bytes() == b"me"


def _real(d: Path, rel: str) -> Path:
    """Where the file a manifest lists as `rel` lies (format 3 keeps table files under .data/)."""
    for p in (d / ".data" / rel, d / rel):
        if p.is_file() and not p.is_symlink():
            return p
    raise AssertionError(f"{rel} not found under {d}")


def test_a_segment_is_durable_before_the_manifest_lists_it_events_first(tmp_path, calls):
    d = tmp_path / "r"
    store = ResultStore.create_or_open(d, SPEC8, manifest_interval=3600)
    calls.clear()
    for t in TASKS8[:2]:
        store.write_task(t.task_id, points_table(t), events_table(3))
    store.flush()
    m = json.loads((d / "manifest.json").read_text())
    (seg,) = m["segments"]
    ev_done = assert_durable_commit(calls, _real(d, seg["events"]["path"]))
    pt_done = assert_durable_commit(calls, _real(d, seg["points"]["path"]))
    ev_rename = next(i for i, c in enumerate(calls) if c[0] == "replace" and c[2].endswith(seg["events"]["path"]))
    pt_rename = next(i for i, c in enumerate(calls) if c[0] == "replace" and c[2].endswith(seg["points"]["path"]))
    assert ev_rename < pt_rename, "the points file became visible before its events file"
    # the commit point: the first rename after both files are durable names the manifest (or the
    # generation holding it), and its own source was fsynced before
    commit = next(i for i in range(max(ev_done, pt_done) + 1, len(calls)) if calls[i][0] == "replace")
    assert ("fsync", calls[commit][1]) in calls[:commit], calls
    assert not any(c[0] == "replace" and "manifest" in c[2] for c in calls[:max(ev_done, pt_done)]), calls
    store.close()


# ---- migrations ---------------------------------------------------------------------------------------


def test_first_release_manifest_keeps_every_field():
    v1 = {"spec_hash": "ab" * 32, "version": "0.1.0", "created": "2025-06-16T00:00:00Z", "sweep": "demo",
          "seed": 7, "n_points": 3, "n_tasks": 5, "tasks_done": [0, 1, 2, 4], "note": {"by": "hand"}}
    m = parse_manifest(json.dumps(v1).encode(), "m.json")
    assert (m.spec_hash, m.version, m.created, m.sweep, m.n_points, m.n_tasks) == (
        "ab" * 32, "0.1.0", "2025-06-16T00:00:00Z", "demo", 3, 5)
    extra = m.model_dump()
    assert extra["seed"] == 7 and extra["note"] == {"by": "hand"}  # unknown keys kept as they are
    assert sorted(m.done()) == [0, 1, 2, 4] and m.segments == [] and m.garbage == []
    ranged = parse_manifest(json.dumps({**v1, "tasks_done": [[0, 2], [4, 4]]}).encode(), "m.json")
    assert sorted(ranged.done()) == [0, 1, 2, 4]


def test_done_counts_both_ends_of_every_range():
    fe = {"path": "points/seg-a.parquet", "size": 1, "sha256": "0" * 64, "rows": 1}
    m = Manifest(spec_hash="x", segments=[Segment(tasks=[(0, 3), (7, 7)], points=fe)], legacy_tasks=[(10, 11)])
    assert sorted(m.done()) == [0, 1, 2, 3, 7, 10, 11]


# ---- merge tiers ----------------------------------------------------------------------------------------


def test_level_by_hand():
    base = 64 << 10
    assert [writer_mod._level(s) for s in (1, base - 1, base, base + 1, 8 * base - 1)] == [0, 0, 0, 0, 0]
    assert [writer_mod._level(s) for s in (8 * base + 1, 63 * base, 64 * base + 1, 512 * base + 1)] == [1, 1, 2, 3]


def test_eight_small_segments_merge_into_one_seven_do_not(tmp_path):
    d = tmp_path / "r"
    store = ResultStore.create_or_open(d, SPEC8, manifest_interval=3600)
    for i, t in enumerate(TASKS8):
        store.write_task(t.task_id, points_table(t))
        store.flush()
        segs = json.loads((d / "manifest.json").read_text())["segments"]
        assert len(segs) == (i + 1 if i < 7 else 1), (i, len(segs))
    (seg,) = segs
    assert seg["tasks"] == [[0, 7]] and seg["points"]["rows"] == 8
    store.close()


# ---- the grace period -----------------------------------------------------------------------------------


def test_superseded_files_are_deleted_exactly_after_the_grace_period(tmp_path, monkeypatch):
    d = tmp_path / "r"
    store = ResultStore.create_or_open(d, SPEC8, manifest_interval=3600)
    store.write_task(0, points_table(TASKS8[0]))
    store.flush()
    w = store._w
    seg = json.loads((d / "manifest.json").read_text())["segments"][0]
    where = _real(d, seg["points"]["path"]).parent
    now = 2_000_000_000.0
    old, young = where / "seg-old.parquet", where / "seg-young.parquet"
    old.write_bytes(b"x")
    young.write_bytes(b"y")
    w._replace(garbage=[Garbage(path="points/seg-old.parquet", since=now - w.grace_s),
                        Garbage(path="points/seg-young.parquet", since=now - w.grace_s + 0.001)])
    monkeypatch.setattr(writer_mod.time, "time", lambda: now)
    assert w.collect_garbage() == 1
    assert not old.exists() and young.exists()
    assert [g["path"] for g in json.loads((d / "manifest.json").read_text())["garbage"]] == ["points/seg-young.parquet"]
    assert w.collect_garbage(grace_s=0.0) == 1 and not young.exists()
    monkeypatch.undo()
    store.close()


def test_open_deletes_foreign_leftovers_only_after_the_grace_period(tmp_path, monkeypatch):
    """An unreferenced segment-like file of another (live) writer is kept while younger than grace_s."""
    d = tmp_path / "r"
    store = ResultStore.create_or_open(d, SPEC8, manifest_interval=3600)
    store.write_task(0, points_table(TASKS8[0]))
    store.close()
    seg = json.loads((d / "manifest.json").read_text())["segments"][0]
    where = _real(d, seg["points"]["path"]).parent
    stray = where / "seg-0123456789abcdef-000009.parquet"
    stray.write_bytes(b"z")
    t0 = 1_900_000_000.0  # whole seconds: t0 + grace - t0 is exactly grace
    os.utime(stray, (t0, t0))
    grace = writer_mod.GC_GRACE_S
    monkeypatch.setattr(writer_mod.time, "time", lambda: t0 + grace - 1.0)
    ResultStore.create_or_open(d, SPEC8, manifest_interval=3600).close()
    assert stray.exists()
    monkeypatch.setattr(writer_mod.time, "time", lambda: t0 + grace)
    ResultStore.create_or_open(d, SPEC8, manifest_interval=3600).close()
    assert not stray.exists()


# ---- format 3: the generation commit (queries/resultset/view.py) ------------------------------------------


def test_generation_commit_is_durable_before_and_after_its_rename(tmp_path, calls):
    """Format 3: the generation (its manifest file, its link directories, itself) is fsynced before the
    one rename that makes it current, and the set's directory after it."""
    d = tmp_path / "r"
    store = ResultStore.create_or_open(d, SPEC8, manifest_interval=3600)
    if not (d / ".current").is_symlink():
        pytest.skip("no generations on this filesystem")
    calls.clear()
    store.write_task(0, points_table(TASKS8[0]), events_table(2))
    store.flush()
    gen = Path(os.path.realpath(d / ".current"))
    i = next(j for j, c in enumerate(calls) if c[0] == "replace" and c[2] == str(Path(os.path.realpath(d)) / ".current"))
    before = calls[:i]
    for p in (gen / "manifest.json", gen / "points", gen / "events", gen):
        assert ("fsync", str(p)) in before, (p, calls)
    assert ("fsync", os.path.realpath(d)) in calls[i + 1:], calls
    store.close()


def test_the_current_generation_is_never_collected(tmp_path, monkeypatch):
    from queries.resultset.view import collect_generations

    d = tmp_path / "r"
    store = ResultStore.create_or_open(d, SPEC8, manifest_interval=3600)
    if not (d / ".current").is_symlink():
        pytest.skip("no generations on this filesystem")
    for t in TASKS8[:3]:
        store.write_task(t.task_id, points_table(t))
        store.flush()
    store.close()
    gens = sorted(p.name for p in (d / ".views").iterdir() if p.is_dir())
    assert len(gens) >= 2
    n = collect_generations(LocalBackend(d), 0.0)
    left = sorted(p.name for p in (d / ".views").iterdir() if p.is_dir())
    assert left == [os.path.basename(os.readlink(d / ".current"))] and n == len(gens) - 1
    assert sorted(ResultStore.open_existing(d).done_tasks()) == [0, 1, 2]


# ---- repair (SetWriter.verify) ------------------------------------------------------------------------------


def _two_segments(d: Path) -> list[dict]:
    store = ResultStore.create_or_open(d, SPEC8, manifest_interval=3600)
    for t in TASKS8[:4]:
        store.write_task(t.task_id, points_table(t))
        if t.task_id % 2:
            store.flush()
    store.close()
    segs = json.loads((d / "manifest.json").read_text())["segments"]
    assert [s["tasks"] for s in segs] == [[[0, 1]], [[2, 3]]]
    return segs


def test_repair_drops_only_the_damaged_segment(tmp_path):
    d = tmp_path / "r"
    segs = _two_segments(d)
    bad = _real(d, segs[1]["points"]["path"])
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    store = ResultStore.create_or_open(d, SPEC8, manifest_interval=3600)  # verifies on open
    m = json.loads((d / "manifest.json").read_text())
    assert [s["tasks"] for s in m["segments"]] == [[[0, 1]]]
    assert sorted(store.done_tasks()) == [0, 1]
    assert m["cpu_trials_done"] == segs[0]["cpu_trials"]
    assert {g["path"] for g in m["garbage"]} == {segs[1]["points"]["path"]}
    store.close()


def test_repair_of_a_repeated_listing_keeps_the_files_it_still_lists(tmp_path):
    """A segment listed twice (a careless edit): one listing goes, its files stay (the other lists them)."""
    d = tmp_path / "r"
    segs = _two_segments(d)
    mpath = Path(os.path.realpath(d / "manifest.json"))
    m = json.loads(mpath.read_text())
    m["segments"].append(m["segments"][0])
    mpath.write_text(json.dumps(m))
    store = ResultStore.create_or_open(d, SPEC8, manifest_interval=3600)
    m = json.loads((d / "manifest.json").read_text())
    assert [s["tasks"] for s in m["segments"]] == [[[0, 1]], [[2, 3]]]
    assert m["garbage"] == [] and m["cpu_trials_done"] == segs[0]["cpu_trials"] + segs[1]["cpu_trials"]
    store._w.collect_garbage(grace_s=0.0)
    assert _real(d, segs[0]["points"]["path"]).is_file()
    store.close()
