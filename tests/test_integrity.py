"""What the manifest cannot vouch for (issue 24 item 1), as a careless or hostile user meets it.

- A segment listed twice, or two segments claiming the same tasks: counted once by `query` and
  `capacity` (the trial counts say so), named in one line; the next writer drops the extra listing.
- First-release sets (per-task files, no checksums): a bit-flipped, truncated, reseeded, swapped
  or foreign task file is named and left out, the answer says PARTIAL, and a full read never fails
  mid-query; `stoprace run` recomputes exactly those tasks, and the repaired set holds the
  original rows (bit for bit on the fixture's SIMD path, row_compare.FLOAT_ULPS elsewhere).
- A spec.toml edited after the run: the set is damaged, with a line naming it; `run` restores it.
- `sweeps.integrity.check_result_set` is the one verdict (complete/partial/damaged, reasons) that
  the CLI prints and the HTTP API reports.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from queries.resultset.manifest import parse_manifest
from queries.resultset.reader import ResultSet
from queries.resultset.storage import locate
from queries.resultset.writer import compact
from sweeps.cli import main
from sweeps.integrity import check_result_set, plan_expectation
from sweeps.spec import load_spec
from sweeps.store import ResultStore

from row_compare import assert_same_rows
from sweep_helpers import ROOT, pin_rev1, read_dir, without_wall

FIXTURES = ROOT / "tests" / "fixtures"
NAIVE, CMC = FIXTURES / "release1-naive", FIXTURES / "release1-cmc"


def copy(src: Path, tmp_path: Path, name: str = "set") -> Path:
    d = tmp_path / name
    shutil.copytree(src, d)
    return d


def cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def count(capsys, d: Path) -> tuple[int, str]:
    """`stoprace query DIR --sql 'select count(*) ...'`: (points rows, stderr)."""
    rc, out, err = cli(capsys, "query", d, "--sql", "select count(*) as n from points", "--format", "csv")
    assert rc == 0, err
    return int(out.splitlines()[1]), err


def capacity_json(capsys, d: Path, *extra: str) -> tuple[int, dict | None, str]:
    rc, out, err = cli(capsys, "capacity", d, "--target-p", "0.5", "--by", "mitigation", "--format", "json", *extra)
    return rc, (json.loads(out) if rc == 0 else None), err


def manifest(d: Path) -> dict:
    return json.loads((d / "manifest.json").read_text())


def write_manifest(d: Path, m: dict) -> None:
    (d / "manifest.json").write_text(json.dumps(m))


# ---- segments listed twice ---------------------------------------------------------------------


@pytest.fixture
def compacted(tmp_path, capsys) -> Path:
    """release1-naive compacted by this release: format 3, one segment of all 16 tasks."""
    d = copy(NAIVE, tmp_path)
    compact(locate(d), grace_s=0)
    assert len(manifest(d)["segments"]) == 1
    return d


def test_a_segment_listed_twice_is_counted_once(compacted, capsys):
    d = compacted
    rc, clean, _ = capacity_json(capsys, d)
    assert rc == 0 and all(r["trials"] == 600 for r in clean["limits"])
    m = manifest(d)
    seg = m["segments"][0]
    m["segments"].append(seg)  # a careless edit (or a merge of two manifests by hand)
    write_manifest(d, m)
    n, err = count(capsys, d)
    assert n == 16  # not 32
    (line,) = err.strip().splitlines()
    where = f".data/{seg['points']['path']}"
    assert line.startswith("stoprace query: warning: ") and f"damaged: {where} is listed twice in the manifest" in line
    assert line == f"stoprace query: warning: {check_result_set(d).line}"  # the one verdict
    # capacity refuses, and with --partial answers from each trial once
    rc, _, err = capacity_json(capsys, d)
    assert rc == 2 and "listed twice" in err and "--partial" in err
    rc, got, err = capacity_json(capsys, d, "--partial")
    assert rc == 0 and "listed twice" in got["partial"][0] and got["partial"][0].startswith("PARTIAL: ")
    assert got["limits"] == clean["limits"] and got["max_trials"] == clean["max_trials"] == 600
    # the next writer (what `stoprace run` does on reopening) drops the extra listing, keeps the file
    spec = load_spec(d / "spec.toml", force=True, stored=True)
    store = ResultStore.create_or_open(d, spec)
    assert [r.reason for r in store.repaired] == ["is listed twice in the manifest (counted once)"]
    assert store.complete
    store.close()
    assert manifest(d)["segments"] == [seg] and (d / where).exists()
    assert check_result_set(d).status == "complete" and count(capsys, d) == (16, "")


def test_two_segments_claiming_the_same_tasks(compacted, capsys):
    d = compacted
    m = manifest(d)
    seg = m["segments"][0]
    twin = json.loads(json.dumps(seg))
    name = seg["points"]["path"].replace("-000", "-900")
    shutil.copyfile(d / ".data" / seg["points"]["path"], d / ".data" / name)
    twin["points"]["path"], twin["events"] = name, None
    m["segments"].append(twin)
    write_manifest(d, m)
    n, err = count(capsys, d)
    assert n == 16
    assert f"damaged: .data/{name} claims tasks 0-15 that .data/{seg['points']['path']} holds (left out)" in err
    v = check_result_set(d)
    assert v.status == "damaged" and v.tasks_stored == 16 and v.n_tasks == 16
    rc, got, err = capacity_json(capsys, d, "--partial")
    assert rc == 0 and all(r["trials"] == 600 for r in got["limits"])


def test_a_segment_holding_some_tasks_of_another_loses_only_its_listing(tmp_path, capsys):
    # segment B holds tasks 8-15 and claims 0-15: B is left out; tasks 8-15 are then missing, named so
    d = copy(NAIVE, tmp_path)
    compact(locate(d), grace_s=0)
    m = manifest(d)
    seg = m["segments"][0]
    m["segments"][0] = {**seg, "tasks": [[0, 7]]}
    m["segments"].append({**seg, "tasks": [[0, 15]]})
    write_manifest(d, m)
    v = check_result_set(d)
    assert v.status == "damaged" and v.tasks_stored == 8
    assert "is listed twice" in v.line and "missing tasks 8-15" in v.line


# ---- first-release sets: verified by content ------------------------------------------------------


def _flip(p: Path, pos: int, bit: int = 0x04) -> None:
    b = bytearray(p.read_bytes())
    b[pos] ^= bit
    p.write_bytes(bytes(b))


def _column_start(p: Path, column: str) -> int:
    """The byte offset of a column chunk of the file's first row group."""
    rg = pq.ParquetFile(p).metadata.row_group(0)
    c = next(rg.column(i) for i in range(rg.num_columns) if rg.column(i).path_in_schema == column)
    return c.dictionary_page_offset or c.data_page_offset


def _value_offset(p: Path, column: str) -> int:
    """Where the first row's float64 value of ``column`` is stored in the column chunk."""
    import struct

    v = pq.read_table(p, columns=[column])[column][0].as_py()
    return p.read_bytes().index(struct.pack("<d", v), _column_start(p, column))


def _statistics(p: Path) -> list:
    """(column, min, max) of every column chunk whose statistics a scan could skip a row group by."""
    md = pq.ParquetFile(p).metadata
    out = []
    for g in range(md.num_row_groups):
        for c in (md.row_group(g).column(i) for i in range(md.num_columns)):
            st = c.statistics
            if st is not None and st.has_min_max:
                out.append((c.path_in_schema, st.min, st.max))
    return out


def _rewrite(p: Path, column: str, fn) -> None:
    t = pq.read_table(p)
    i = t.schema.get_field_index(column)
    pq.write_table(t.set_column(i, t.schema.field(i), fn(t[column])), p, compression="zstd")


def _spoil(d: Path, kind: str) -> tuple[list[int], str]:
    """Damage release1-naive copy ``d`` one way; returns (tasks left out, what the line says)."""
    pts = d / "points"
    if kind == "bitflip":  # one bit of the stored t_done_sum_us (zstd keeps 8 random-looking bytes raw)
        f = pts / "task-000005.parquet"
        _flip(f, _value_offset(f, "t_done_sum_us") + 3)
        return [5], "task-000005.parquet has statistics of column t_done_sum_us that do not match its rows"
    if kind == "pageflip":  # one bit in a page header: the page no longer decodes
        f = pts / "task-000004.parquet"
        _flip(f, _column_start(f, "t_done_max_us") + 1)
        return [4], "task-000004.parquet is unreadable"
    if kind == "statistics":  # one bit in a column's maximum in the footer: rows decode, filters would skip them
        f = pts / "task-000006.parquet"
        data = f.read_bytes()
        needle = (300).to_bytes(8, "little")  # the trials column's min and max (300 trials per shard)
        pos = data.rindex(needle)
        f.write_bytes(data[:pos] + (44).to_bytes(8, "little") + data[pos + 8:])
        return [6], "statistics of column"
    if kind == "truncated":
        f = pts / "task-000005.parquet"
        f.write_bytes(f.read_bytes()[:-100])
        return [5], "task-000005.parquet is unreadable"
    if kind == "other_sweep":  # a task file of another sweep copied over this one's
        shutil.copyfile(CMC / "points" / "task-000003.parquet", pts / "task-000003.parquet")
        return [3], "task-000003.parquet holds rows of sweep 'release1-cmc', not 'release1-naive'"
    if kind == "swapped":  # two task files of this set exchanged: their rows are fine, their tasks wrong
        a, b = pts / "task-000010.parquet", pts / "task-000011.parquet"
        data = a.read_bytes()
        a.write_bytes(b.read_bytes())
        b.write_bytes(data)
        return [10, 11], "which the plan does not put in task 10"
    if kind == "reseeded":  # the same point from a run of the sweep with another seed
        _rewrite(pts / "task-000007.parquet", "seed", lambda c: pc.add(c, pa.scalar(1, pa.uint64())))
        return [7], "the plan says seed"
    if kind == "counts":  # a count changed (a careless edit, or a flip that decodes)
        _rewrite(pts / "task-000002.parquet", "race", lambda c: pc.add(c, 1))
        return [2], "outcome counts do not add up"
    if kind == "events":  # an events file of another task in this one's place
        shutil.copyfile(d / "events" / "task-000000.parquet", d / "events" / "task-000008.parquet")
        return [8], "events/task-000008.parquet holds events of point"
    raise AssertionError(kind)


KINDS = ["bitflip", "pageflip", "statistics", "truncated", "other_sweep", "swapped", "reseeded", "counts", "events"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_spoiled_first_release_file_is_named_left_out_and_partial(tmp_path, capsys, kind):
    d = copy(NAIVE, tmp_path)
    lost, says = _spoil(d, kind)
    v = check_result_set(d)
    assert v.status == "damaged" and v.tasks_stored == 16 - len(lost)
    # a full read answers from the intact tasks (no "bad SQL" mid-query) and says what is left out
    rc, out, err = cli(capsys, "query", d, "--sql", "select * from points", "--format", "csv")
    assert rc == 0, err
    assert len(out.splitlines()) == 1 + 16 - len(lost)
    (line,) = err.strip().splitlines()
    assert line == f"stoprace query: warning: {v.line}" and says in line, line
    assert f"missing tasks {', '.join(map(str, lost)) if len(lost) == 1 else f'{lost[0]}-{lost[-1]}'}" in line
    rc, out, err = cli(capsys, "query", d, "--sql", "select * from events", "--format", "csv")
    assert rc == 0
    # capacity refuses; with --partial it answers and says PARTIAL
    rc, _, err = capacity_json(capsys, d)
    assert rc == 2 and says in err and "--partial" in err
    rc, got, err = capacity_json(capsys, d, "--partial")
    assert rc == 0 and got["partial"][0].startswith("PARTIAL: ") and says in got["partial"][0]
    # compact refuses to fold a damaged set (run repairs it first)
    rc, out, err = cli(capsys, "compact", d)
    assert rc == 2 and says in err and "stoprace run" in err
    assert not (d / ".data").exists()  # refused before anything was written


def test_single_bit_flips_are_caught_or_harmless(tmp_path):
    # Every 61st byte of a task file, one bit flipped at a time: the check either names the file or
    # the file still decodes to the original rows (a flip in bytes no reader uses). Checked on a
    # one-task view of the set so each flip costs one file read.
    d = copy(NAIVE, tmp_path)
    rs0 = ResultSet.open(d)
    spec = load_spec(d / "spec.toml", force=True, stored=True)
    m = rs0.manifest.model_copy(update={"legacy_tasks": [[5, 5]]})
    expect = plan_expectation(spec, m)
    f = d / "points" / "task-000005.parquet"
    original, ref, ref_stats = f.read_bytes(), pq.read_table(f), _statistics(f)
    caught = harmless = 0
    for pos in range(0, len(original), 61):
        _flip(f, pos)
        i = ResultSet(rs0.backend, m).check(expect=expect)
        if i.damaged:
            caught += 1
        else:
            assert pq.read_table(f).equals(ref), f"a flip at byte {pos} changed the rows unnoticed"
            # statistics a flip removed cannot mislead a scan; those left must be the original ones
            assert set(_statistics(f)) <= set(ref_stats), f"a flip at byte {pos} changed the statistics unnoticed"
            harmless += 1
        f.write_bytes(original)
    assert caught > harmless  # most bytes matter (here ~60%: the rest are footer bytes no reader uses)


def test_a_spec_toml_edited_after_the_run_is_reported(tmp_path, capsys):
    d = copy(NAIVE, tmp_path)
    (d / "spec.toml").write_text((d / "spec.toml").read_text().replace("trials = 600", "trials = 900"))
    v = check_result_set(d)
    assert v.status == "damaged" and v.tasks_stored == 16
    assert v.reasons[0].startswith("spec.toml does not match the spec_hash in manifest.json")
    n, err = count(capsys, d)
    assert n == 16 and err == f"stoprace query: warning: {v.line}\n"
    rc, _, err = capacity_json(capsys, d)
    assert rc == 2 and "spec.toml does not match" in err
    # the manifest's hash decides: the plan check is off (the spec cannot be trusted), the rows are answered
    (d / "spec.toml").write_text("not = [toml")
    v = check_result_set(d)
    assert v.status == "damaged" and "spec.toml cannot be read as a spec" in v.line


def test_the_verdict_of_each_fixture():
    full, part = check_result_set(NAIVE), check_result_set(FIXTURES / "release1-partial")
    assert (full.status, full.reasons, full.line, full.tasks_stored, full.n_tasks) == ("complete", (), None, 16, 16)
    assert part.status == "partial" and part.reasons == ("incomplete: 10 of 16 tasks stored (missing tasks 10-15)",)
    assert part.line == f"{FIXTURES / 'release1-partial'}: {part.reasons[0]}"


def _stoprace(*args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "sweeps.cli", *args], cwd=ROOT, env=e, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_run_recomputes_what_was_left_out_and_reproduces_the_rows(tmp_path, capsys):
    """One copy with every kind of damage and an edited spec.toml; `stoprace run` of the original spec
    recomputes exactly those tasks. On an AVX-512 CPU the run uses the fixture's SIMD path
    (row_compare's module docstring), so every column but wall_s must match bit for bit."""
    from numpy._core._multiarray_umath import __cpu_features__

    d = copy(NAIVE, tmp_path)
    lost: set[int] = set()
    for kind in KINDS:
        tasks, _ = _spoil(d, kind)
        lost.update(tasks)
    (d / "spec.toml").write_text((d / "spec.toml").read_text().replace("trials = 600", "trials = 900"))
    untouched = {f.name: f.read_bytes() for f in (d / "points").glob("*.parquet")
                 if int(f.stem.split("-")[1]) not in lost}
    exact = bool(__cpu_features__.get("X86_V4"))
    env = {"NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"} if exact else {}
    pinned = tmp_path / "pinned.toml"  # the spec as a user resumes a set from before model_rev existed
    pinned.write_text(pin_rev1((NAIVE / "spec.toml").read_text()))
    r = _stoprace("run", str(pinned), "--out", str(d), "--workers", "2", "--no-progress", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"{len(lost)} run" in r.stdout, r.stdout
    v = check_result_set(d)
    assert v.status == "complete", v.line
    assert load_spec(d / "spec.toml", stored=True).spec_hash == manifest(NAIVE)["spec_hash"]  # restored
    assert {k: (d / ".data" / "points" / k).read_bytes() for k in untouched} == untouched  # nothing else rewritten
    new, old = without_wall(read_dir(d)), without_wall(read_dir(NAIVE))
    new = new.select(old.column_names)
    if exact:
        assert new.to_pylist() == old.to_pylist()
        assert read_dir(d, "events").to_pylist() == read_dir(NAIVE, "events").to_pylist()
    else:
        assert_same_rows(new, old, "repaired points")
        assert_same_rows(read_dir(d, "events"), read_dir(NAIVE, "events"), "repaired events")
    assert count(capsys, d) == (16, "")
    assert len(parse_manifest((d / "manifest.json").read_bytes(), "m").garbage) >= len(lost)
