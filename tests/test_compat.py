"""Result dirs written by the first release (tests/fixtures/release1-*, see its README) stay
valid: a later parameter at its neutral value changes no point id, seed, spec hash or row.

- Rerunning each fixture's spec.toml with this code plans the same tasks and stores the same
  rows (every column the first release wrote, except `wall_s`; floats within
  row_compare.FLOAT_ULPS, since NumPy's exp/log kernels differ by CPU kind, the rest exact),
  with the same point ids and seeds; the columns of parameters added since hold their neutral values.
  cmc rows are compared only where mitigation = 'none': the cmc estimator is being extended
  at early_flush points on purpose (branch `estimator`), which changes those values.
- The old dirs read and query through every command (query, capacity, plot, replay).
- The interrupted one resumes on a real embedded Ray: exactly its missing tasks run, the
  stored files are left untouched, and the result equals release1-naive.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from core.params import NEUTRAL, PARAM_NAMES
from core.vectorized import STREAM_VERSION
from queries.db import connect
from queries.named import list_named
from sweeps.cli import main
from sweeps.grid import PLANNER_VERSION, iter_points, iter_tasks
from sweeps.shard import run_task
from sweeps.spec import load_spec
from sweeps.store import StoreError

from row_compare import assert_same_rows
from sweep_helpers import read_dir, without_wall

LATER_COLUMNS = ("preflush_hist",)
"""points columns (not parameters) added since the first release wrote these dirs."""
FIXTURES = Path(__file__).resolve().parent / "fixtures"
NAIVE, CMC, PARTIAL = (FIXTURES / f"release1-{k}" for k in ("naive", "cmc", "partial"))


def manifest(d: Path) -> dict:
    return json.loads((d / "manifest.json").read_text())


def stored_points(d: Path, task_id: int) -> pa.Table:
    return pq.read_table(d / "points" / f"task-{task_id:06d}.parquet")


def comparable(t: pa.Table, where_none_only: bool) -> pa.Table:
    t = without_wall(t)
    return t.filter(pc.equal(t["mitigation"], "none")) if where_none_only else t


@pytest.mark.parametrize("d", [NAIVE, CMC], ids=["naive", "cmc"])
def test_rerun_stores_the_same_rows(d):
    spec = load_spec(d / "spec.toml", stored=True)  # read as stored: no model_rev means revision 1
    m = manifest(d)
    assert spec.spec_hash == m["spec_hash"]  # the canonical spec leaves neutral later parameters out
    plan = m["plan"]
    assert (plan["streams"], plan["planner"]) == (STREAM_VERSION, PLANNER_VERSION)
    # the same point ids and seeds as stored
    stored = read_dir(d)
    ids = {(r["point_id"], r["seed"]) for r in stored.select(["point_id", "seed"]).to_pylist()}
    assert ids == {(p.point_id, p.point_seed) for p in iter_points(spec)}
    cmc_only_none = spec.estimator == "cmc"
    tasks = list(iter_tasks(spec, plan["cpu_trials_per_s"], plan["max_shards"], plan["min_tasks"]))
    assert len(tasks) == m["n_tasks"]
    compared = 0
    for task in tasks:
        old = stored_points(d, task.task_id)
        new = run_task(task, spec.name, spec.estimator).points
        assert set(old.column_names) | set(NEUTRAL) | set(LATER_COLUMNS) == set(new.column_names)
        for name, v in NEUTRAL.items():
            assert set(new.column(name).to_pylist()) == {v}
        a = comparable(old, cmc_only_none)
        b = comparable(new.select(old.column_names), cmc_only_none)
        assert_same_rows(b, a, f"task {task.task_id}")  # floats within FLOAT_ULPS (CPU kinds), the rest exact
        compared += a.num_rows
    assert compared >= 4


def test_rerun_stores_the_same_events():
    spec = load_spec(NAIVE / "spec.toml", stored=True)
    plan = manifest(NAIVE)["plan"]
    tasks = iter_tasks(spec, plan["cpu_trials_per_s"], plan["max_shards"], plan["min_tasks"])
    events = [run_task(t, spec.name).events for t in tasks]
    new = pa.concat_tables([e for e in events if e.num_rows])
    old = read_dir(NAIVE, "events")
    assert old.num_rows == 6  # the fixture has 6 timeout/hang trials to compare
    keys = [("point_id", "ascending"), ("shard", "ascending"), ("trial", "ascending")]
    assert_same_rows(new.sort_by(keys), old, "events")


@pytest.mark.parametrize("d", [NAIVE, CMC], ids=["naive", "cmc"])
def test_old_dirs_read_and_query_with_every_command(d, tmp_path, capsys):
    con = connect(d)
    later = ", ".join(NEUTRAL)
    rows = con.execute(f"SELECT DISTINCT {later} FROM outcomes").fetchall()
    assert rows == [tuple(NEUTRAL.values())]
    n = con.execute("SELECT count(*) FROM outcomes").fetchone()[0]
    assert n == manifest(d)["n_points"]
    for q in list_named():
        assert main(["query", str(d), "--named", q.name]) == 0, q.name
    assert main(["query", str(d), "--sql", f"select {later}, count(*) from points group by all"]) == 0
    assert main(["capacity", str(d), "--target-p", "0.5", "--by", "mitigation"]) == 0
    assert main(["plot", str(d), "--x", "n_cpus", "--metric", "p_bad", "-o", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").stat().st_size > 0
    out = capsys.readouterr().out
    assert "p_nmi_delay" in out


def test_old_dir_replays_an_event(capsys):
    ev = read_dir(NAIVE, "events").to_pylist()[0]
    argv = ["replay", str(NAIVE), "--point", ev["point_id"], "--shard", str(ev["shard"]), "--trial", str(ev["trial"])]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"outcome: {ev['outcome']}" in out and "WARNING" not in out and "hold-off" in out


@pytest.mark.slow
def test_partial_resumes_exactly_the_missing_tasks_and_equals_naive(tmp_path):
    from sweeps import run

    d = tmp_path / "partial"
    shutil.copytree(PARTIAL, d)
    before = {f.name: f.read_bytes() for f in (d / "points").glob("*.parquet")}
    spec_text = (d / "spec.toml").read_bytes()
    assert len(before) == 10
    # its spec.toml as a user's spec runs model_rev = 2 (the default): refused before Ray starts
    with pytest.raises(StoreError, match=r"stored before model_rev existed.*pin it with model_rev = 1 under \[base\]"):
        run(d / "spec.toml", d, num_cpus=2, progress=False)
    pinned = tmp_path / "pinned.toml"
    pinned.write_text(spec_text.decode().replace("[base]\n", "[base]\nmodel_rev = 1\n"))
    rep = run(pinned, d, num_cpus=2, progress=False)
    assert (rep.tasks_run, rep.tasks_skipped, rep.n_tasks, rep.complete) == (6, 10, 16, True)
    assert {f.name: f.read_bytes() for f in (d / "points").glob("*.parquet") if f.name in before} == before
    assert (d / "spec.toml").read_bytes() == spec_text  # nothing rewritten: the same canonical spec
    new = without_wall(read_dir(d))
    old = without_wall(read_dir(NAIVE))
    # old files lack the later parameters' columns; the new ones hold them at their neutral values
    assert_same_rows(new.select(old.column_names), old, "points")  # recomputed rows: floats within FLOAT_ULPS
    assert_same_rows(without_wall(read_dir(d, "events")), without_wall(read_dir(NAIVE, "events")), "events")
    con = connect(d)
    assert con.execute(f"SELECT DISTINCT {', '.join(NEUTRAL)} FROM points").fetchall() == [tuple(NEUTRAL.values())]
    assert set(PARAM_NAMES) <= {r[0] for r in con.execute("DESCRIBE outcomes").fetchall()}
