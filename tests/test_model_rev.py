"""`model_rev`'s identity and resume rules (issue 19 items 1 and 2; SCHEMA.md "Sweep spec").

- A user's spec that leaves model_rev out runs revision 2; a stored spec.toml that leaves it out
  (every set stored before it existed) reads as revision 1; every spec.toml written now names it,
  so it reads the same both ways.
- Revision 1 keeps its identity: a spec pinning model_rev = 1 has the stored spec hash, point ids
  and seeds of tests/fixtures/pre-rev2-* (stored by the code before model_rev existed), and
  rerunning its tasks stores the same rows and events.
- Resuming such a set with a spec that does not pin model_rev = 1 is refused with one line naming
  model_rev and how to pin it, by `stoprace run` and by `POST /api/sweeps` alike, and nothing is
  written; the pinned spec resumes it untouched.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.params import NEUTRAL
from sweeps.cli import main
from sweeps.grid import iter_points, iter_tasks, plan_signature
from sweeps.shard import run_task
from sweeps.spec import load_spec, parse_spec
from sweeps.store import ResultStore, StoreError, resume_refusal

from sweep_helpers import read_dir, without_wall

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PRE = {k: FIXTURES / f"pre-rev2-{k}" for k in ("naive", "cmc")}
PIN = "[base]\nmodel_rev = 1\n"


def pinned(text: str) -> str:
    """A stored spec.toml as a user's spec that pins model_rev = 1."""
    return text.replace("[base]\n", PIN, 1)


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# --- reading -------------------------------------------------------------------------------------


def test_a_missing_model_rev_means_2_written_by_a_user_and_1_stored():
    text = (PRE["naive"] / "spec.toml").read_text()
    assert "model_rev" not in text
    user, stored = parse_spec(text), parse_spec(text, stored=True)
    assert user.base["model_rev"] == 2 and stored.base["model_rev"] == 1
    assert stored.spec_hash == json.loads((PRE["naive"] / "manifest.json").read_text())["spec_hash"]
    assert user.spec_hash != stored.spec_hash
    assert parse_spec(pinned(text)).spec_hash == stored.spec_hash  # pinning gives the stored identity
    # every other parameter reads the same both ways (their defaults are their neutral values)
    assert {k: v for k, v in user.base.items() if k != "model_rev"} == {
        k: v for k, v in stored.base.items() if k != "model_rev"}


@pytest.mark.parametrize("rev", [1, 2])
def test_spec_toml_names_model_rev_and_reads_the_same_both_ways(rev):
    spec = parse_spec(pinned((PRE["naive"] / "spec.toml").read_text()).replace("model_rev = 1", f"model_rev = {rev}"))
    text = spec.to_toml()
    assert f"\nmodel_rev = {rev}\n" in text
    for stored in (False, True):
        back = parse_spec(text, stored=stored)
        assert back.spec_hash == spec.spec_hash and back.base == spec.base
    # the hash still leaves the neutral value out: revision 1 hashes as before model_rev existed
    assert ('"model_rev"' in spec.canonical_json()) == (rev == 2)


def test_model_rev_as_an_axis_splits_points_and_keeps_revision1_ids():
    base = (PRE["naive"] / "spec.toml").read_text()
    spec = parse_spec(base.replace("[axes]\n", "[axes]\nmodel_rev = [1, 2]\n"))
    stored = parse_spec(base, stored=True)
    ids = {p.values["model_rev"]: set() for p in iter_points(spec)}
    for p in iter_points(spec):
        ids[p.values["model_rev"]].add((p.point_id, p.point_seed))
    assert ids[1] == {(p.point_id, p.point_seed) for p in iter_points(stored)}
    assert not ids[1] & ids[2] and len(ids[2]) == len(ids[1])


# --- revision 1 keeps its rows --------------------------------------------------------------------


def rows_equal(a: list[dict], b: list[dict]) -> list[str]:
    """Differences between two lists of rows: exact for ids, seeds, counts, strings and lists;
    floats to 1e-12 relative, since NumPy's SIMD exp/log differ by an ulp between CPUs (AVX-512 or
    not; issue 24 item 7) and these dirs were written on one machine."""
    out = []
    for i, (x, y) in enumerate(zip(a, b)):
        for k in x:
            u, v = x[k], y[k]
            if isinstance(u, float) and isinstance(v, float):
                if not (u == v or math.isclose(u, v, rel_tol=1e-12)):
                    out.append(f"row {i} {k}: {u!r} != {v!r}")
            elif u != v:
                out.append(f"row {i} {k}: {u!r} != {v!r}")
    return out if len(a) == len(b) else [f"{len(a)} rows != {len(b)} rows", *out]


@pytest.mark.parametrize("kind", ["naive", "cmc"])
def test_revision1_rerun_stores_the_rows_stored_before_model_rev(kind):
    d = PRE[kind]
    spec = load_spec(d / "spec.toml", stored=True)
    m = json.loads((d / "manifest.json").read_text())
    assert spec.spec_hash == m["spec_hash"] and spec.base["model_rev"] == 1
    assert m["plan"] == plan_signature()  # same planner and random streams (STREAM_VERSION)
    stored = without_wall(read_dir(d))
    assert {(r["point_id"], r["seed"]) for r in stored.select(["point_id", "seed"]).to_pylist()} == {
        (p.point_id, p.point_seed) for p in iter_points(spec)}
    results = [run_task(t, spec.name, spec.estimator) for t in iter_tasks(spec)]
    assert len(results) == m["n_tasks"]
    keys = [("point_id", "ascending"), ("shard", "ascending")]
    new = without_wall(pa.concat_tables([r.points for r in results])).sort_by(keys)
    assert set(new.column_names) - set(stored.column_names) == {"model_rev", "preflush_hist"}
    assert set(new.column("model_rev").to_pylist()) == {NEUTRAL["model_rev"]}
    assert rows_equal(new.select(stored.column_names).to_pylist(), stored.to_pylist()) == []
    ev_old = read_dir(d, "events")
    ev_new = pa.concat_tables([r.events for r in results]).sort_by([*keys, ("trial", "ascending")])
    assert ev_old.num_rows >= 50
    assert rows_equal(ev_new.to_pylist(), ev_old.to_pylist()) == []


# --- resume: the refusal and the pinned spec, through both doors ---------------------------------


@pytest.fixture
def old_set(tmp_path) -> Path:
    d = tmp_path / "results" / "pre-rev2-naive"
    shutil.copytree(PRE["naive"], d)
    return d


def test_resume_refusal_names_model_rev_and_how_to_pin_it(old_set):
    text = (old_set / "spec.toml").read_text()
    m = json.loads((old_set / "manifest.json").read_text())
    line = resume_refusal("DIR", m["spec_hash"], text, parse_spec(text))
    assert line == ("DIR was stored before model_rev existed, so it holds model revision 1; this spec runs "
                    "model_rev = 2 (the default when a spec leaves model_rev out): to resume DIR, pin it with "
                    "model_rev = 1 under [base], or use another --out for revision 2")
    assert resume_refusal("DIR", m["spec_hash"], text, parse_spec(pinned(text))) is None
    # any other difference is the plain refusal
    other = resume_refusal("DIR", m["spec_hash"], text, parse_spec(pinned(text).replace("seed = ", "seed = 1")))
    assert other is not None and other.startswith("DIR holds results of a different spec") and "model_rev" not in other


def test_a_revision2_set_refuses_a_revision1_spec(tmp_path):
    text = pinned((PRE["naive"] / "spec.toml").read_text())
    rev2 = parse_spec(text.replace("model_rev = 1", "model_rev = 2"))
    ResultStore.create_or_open(tmp_path / "r2", rev2, plan=plan_signature()).close()
    with pytest.raises(StoreError) as e:
        ResultStore.create_or_open(tmp_path / "r2", parse_spec(text), plan=plan_signature())
    assert str(e.value) == (f"{tmp_path / 'r2'} holds model_rev = 2 results; this spec runs model_rev = 1: to resume "
                            f"{tmp_path / 'r2'}, pin it with model_rev = 2 under [base], or use another --out for revision 1")


def test_both_doors_refuse_an_unpinned_spec_and_resume_the_pinned_one(old_set, tmp_path, capsys, monkeypatch):
    from fastapi.testclient import TestClient

    from sweeps.serve import ServeConfig, create_app, shutdown

    monkeypatch.chdir(tmp_path)
    before = snapshot(old_set)
    text = (old_set / "spec.toml").read_text()
    (tmp_path / "unpinned.toml").write_text(text)
    (tmp_path / "pinned.toml").write_text(pinned(text))
    # stoprace run: exit 2, one line; nothing written
    assert main(["run", "unpinned.toml", "--out", str(old_set)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "model_rev" in err and "pin it with model_rev = 1 under [base]" in err
    cli = err.split(": error: ", 1)[1]
    assert snapshot(old_set) == before
    # POST /api/sweeps: 409 with the same line (the set is the one its name points to)
    app = create_app(ServeConfig(locations=[str(old_set.parent)], workers=1))
    try:
        c = TestClient(app, base_url="http://127.0.0.1")
        r = c.post("/api/sweeps", content=text.encode(), headers={"content-type": "application/toml"})
        assert r.status_code == 409 and r.json() == {"error": cli}
        assert snapshot(old_set) == before
        # the pinned spec: the set is complete, so both doors answer at once and write nothing
        r = c.post("/api/sweeps", content=pinned(text).encode(), headers={"content-type": "application/toml"})
        assert r.status_code == 200 and r.json()["status"] == "complete", r.text
    finally:
        shutdown(app)
    rows_before = without_wall(read_dir(old_set)), read_dir(old_set, "events")
    assert main(["run", "pinned.toml", "--out", str(old_set), "--no-progress"]) == 0
    capsys.readouterr()
    # the run converts the format-2 set to format 3 (README, "The results dir": its files move under .data/
    # and are committed as a generation) and changes nothing else: spec.toml and every data file byte for byte
    after = snapshot(old_set)
    assert after["spec.toml"] == before["spec.toml"]  # it still reads as the pinned spec
    for name, digest in before.items():
        if name != "spec.toml" and name != "manifest.json":
            assert after[f".data/{name}"] == digest, name
    assert (without_wall(read_dir(old_set)), read_dir(old_set, "events")) == rows_before


def test_the_pinned_spec_resumes_a_partial_old_set_without_rewriting_spec_toml(old_set):
    # drop the one committed segment: every task is missing, the writer reopens and keeps spec.toml
    m = json.loads((old_set / "manifest.json").read_text())
    for seg in m["segments"]:
        for what in ("points", "events"):
            (old_set / seg[what]["path"]).unlink()
    spec_bytes = (old_set / "spec.toml").read_bytes()
    spec = parse_spec(pinned(spec_bytes.decode()))
    store = ResultStore.create_or_open(old_set, spec, plan=plan_signature())
    try:
        assert store.repaired and not store.done_tasks()
        task = next(iter_tasks(spec))
        r = run_task(task, spec.name, spec.estimator)
        store.write_task(task.task_id, r.points, r.events)
        store.flush()
    finally:
        store.close()
    assert (old_set / "spec.toml").read_bytes() == spec_bytes
    got = pq.read_table(next((old_set / "points").glob("*.parquet")))
    assert set(got.column("model_rev").to_pylist()) == {1}
