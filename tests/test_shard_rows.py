"""The rows a worker writes (sweeps.shard.run_task) against independent computations.

No Ray: `run_task` is the pure function the workers execute. The point has n_cpus=256,
so a chunk is 131072 // 255 = 514 trials and shard 0 (1100 trials) spans three chunks:
an `events` row whose trial index lacked its chunk's offset would name the wrong trial.

- every `events` row replays (core.vectorized.replay_draws, recomputing only its chunk)
  to a trial with the same outcome, T_done, NMIs sent, racers and first racer, and the
  scalar reference on the replayed draws agrees; the set of event trials equals the
  race/hang/timeout trials of an independent `simulate` of the same shard;
- every `points` row's counts, stop-time sum/max and naive estimates equal those of that
  independent `simulate`: p = k/n and its variance s^2/n of the n 0/1 outcomes
  (np.var(ddof=1) / n, computed here from the per-trial outcomes, not from cmc or shard code).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from core import reference
from core.outcomes import EVENT_OUTCOMES, OUTCOMES
from core.vectorized import chunk_trials, replay_draws, shard_seed, simulate
from sweeps.grid import iter_points, iter_tasks
from sweeps.shard import run_task
from sweeps.spec import parse_spec

SPEC = dict(
    name="rows", seed=3, trials=1300, shard_trials=1100, task_seconds=10.0,
    base=dict(n_cpus=256, p_unresponsive=0.0004, p_stall=0.002, stall_median_us=1.001e6, stall_sigma=0.01,
              nmi_jitter_us=1e4, handoff_us=10.0),
    axes=dict(wait=[0, 1]),
)


@pytest.fixture(scope="module")
def rows():
    spec = parse_spec(SPEC)
    results = [run_task(t, spec.name) for t in iter_tasks(spec, min_tasks=1)]
    points = pa.concat_tables([r.points for r in results]).to_pylist()
    events = pa.concat_tables([r.events for r in results]).to_pylist()
    return spec, {p.point_id: p for p in iter_points(spec)}, points, events


def _independent(point, shard, n):
    return simulate(point.params, n, shard_seed(point.point_seed, shard))


def test_the_shard_spans_several_chunks_and_events_land_in_later_chunks(rows):
    spec, pts, _, events = rows
    per = chunk_trials(next(iter(pts.values())).params)
    assert per == 514 and spec.shard_trials > 2 * per
    assert any(e["trial"] >= 2 * per for e in events if e["shard"] == 0)


def test_every_event_replays_to_the_same_trial(rows):
    _, pts, points, events = rows
    sizes = {(r["point_id"], r["shard"]): r["trials"] for r in points}
    assert len(events) > 100
    for e in events:
        point = pts[e["point_id"]]
        n = sizes[(e["point_id"], e["shard"])]
        d, b = replay_draws(point.params, n, shard_seed(point.point_seed, e["shard"]), e["trial"])
        got = (OUTCOMES[b.outcome[0]], float(b.t_done_us[0]), int(b.nmi_sent[0]), int(b.racers[0]),
               int(b.first_racer_cpu[0]))
        t_done = math.nan if e["t_done_us"] is None else e["t_done_us"]
        want = (e["outcome"], t_done, e["nmi_sent"], e["racers"], e["first_racer_cpu"] or -1)
        assert got[0] == want[0] and got[2:] == want[2:], (e, got)
        assert got[1] == want[1] or (math.isnan(got[1]) and math.isnan(want[1])), (e, got)
        r = reference.simulate_trial(point.params, d.to_lists())
        assert (r.outcome, r.t_done_us, r.nmi_sent, r.racers) == (
            e["outcome"], e["t_done_us"], e["nmi_sent"], e["racers"]), e


def test_event_rows_are_exactly_the_bad_trials(rows):
    _, pts, points, events = rows
    codes = [OUTCOMES.index(o) for o in EVENT_OUTCOMES]
    for r in points:
        b = _independent(pts[r["point_id"]], r["shard"], r["trials"])
        bad = np.flatnonzero(np.isin(b.outcome, codes)).tolist()
        got = sorted(e["trial"] for e in events if (e["point_id"], e["shard"]) == (r["point_id"], r["shard"]))
        assert got == bad


def test_points_rows_equal_an_independent_simulation(rows):
    _, pts, points, _ = rows
    assert sorted((r["point_id"], r["shard"]) for r in points) == sorted((pid, k) for pid in pts for k in (0, 1))
    for r in points:
        n = r["trials"]
        assert n == (1100 if r["shard"] == 0 else 200)
        b = _independent(pts[r["point_id"]], r["shard"], n)
        counts = np.bincount(b.outcome, minlength=len(OUTCOMES))
        assert [r[o] for o in OUTCOMES] == counts.tolist()
        fin = b.t_done_us[np.isfinite(b.t_done_us)]
        assert math.isclose(r["t_done_sum_us"], fin.sum(), rel_tol=1e-12)
        assert r["t_done_max_us"] == fin.max()
        assert r["estimator"] == "naive"
        race = (b.outcome == OUTCOMES.index("race")).astype(float)
        bad = np.isin(b.outcome, [OUTCOMES.index(o) for o in EVENT_OUTCOMES]).astype(float)
        assert 0 < race.sum() < n and race.sum() != bad.sum()  # the estimates below can tell race from bad
        for name, x in (("race", race), ("bad", bad)):
            # float sums in a different order: equal to ~1e-15 relative
            assert math.isclose(r[f"p_{name}_est"], x.mean(), rel_tol=1e-12), name
            assert math.isclose(r[f"p_{name}_var"], x.var(ddof=1) / n, rel_tol=1e-9), name


def test_release1_rows_are_reproduced_by_run_task():
    # tests/fixtures/release1-naive was written by the first release: recomputing each of its
    # tasks must give the stored rows (every stored column but wall_s). This pins the whole
    # random-stream layout (point seeds, shard seeds [point_seed, k], chunking, draw order).
    # Floats within row_compare.FLOAT_ULPS (the fixture's CPU had no AVX-512), the rest exact.
    import pyarrow.parquet as pq

    from sweeps.spec import load_spec

    from row_compare import assert_same_rows

    d = Path(__file__).parent / "fixtures" / "release1-naive"
    spec = load_spec(d / "spec.toml", stored=True)
    tasks = list(iter_tasks(spec))
    assert len(tasks) == 16
    for t in tasks:
        r = run_task(t, spec.name)
        for what, table in (("points", r.points), ("events", r.events)):
            f = d / what / f"task-{t.task_id:06d}.parquet"
            if not f.exists():
                assert what == "events" and table.num_rows == 0
                continue
            stored = pq.read_table(f)
            cols = [c for c in stored.column_names if c != "wall_s"]
            assert_same_rows(table.select(cols), stored.select(cols), f"{what} of task {t.task_id}")


def test_row_compare_accepts_last_bits_only():
    # the tolerance the release1 comparisons use: 2 ULP pass (what an AVX-512 CPU changes), a change a
    # real bug would make (1e-9 relative, an int, a NaN, a string) fails
    from row_compare import FLOAT_ULPS, assert_same_rows, ulp_distance

    x = 60865305.99403034
    base = pa.table({"s": [x, float("nan"), 1.0], "n": [1, 2, 3], "id": ["a", "b", "c"]})

    def with_(**cols):
        return pa.table({**{c: base[c] for c in base.column_names}, **cols})

    two_ulp = np.nextafter(np.nextafter(x, np.inf), np.inf)
    assert ulp_distance(np.array([x]), np.array([two_ulp]))[0] == 2
    assert ulp_distance(np.array([0.0]), np.array([-0.0]))[0] == 0
    assert_same_rows(with_(s=[two_ulp, float("nan"), 1.0]), base)
    assert FLOAT_ULPS * np.spacing(x) < x * 1e-13
    for bad in (with_(s=[x * (1 + 1e-9), float("nan"), 1.0]), with_(s=[x, 0.0, 1.0]), with_(n=[1, 2, 4]),
                with_(id=["a", "b", "d"]), with_(s=[x, float("nan"), float("inf")])):
        with pytest.raises(AssertionError):
            assert_same_rows(bad, base)


def test_release1_rows_are_bit_identical_on_the_fixtures_simd_path():
    # Why the comparison above allows FLOAT_ULPS: with NumPy's AVX-512 kernels switched off (the
    # fixture's CPU had none) every column, floats included, is bit-identical to the stored one.
    import os
    import subprocess
    import sys

    from numpy._core._multiarray_umath import __cpu_features__

    if not __cpu_features__.get("X86_V4"):
        pytest.skip("this CPU has no AVX-512: the comparison above is bit-exact here already")
    code = """
import pyarrow.parquet as pq
from pathlib import Path
from sweeps.grid import iter_tasks
from sweeps.shard import run_task
from sweeps.spec import load_spec
d = Path("tests/fixtures/release1-naive")
spec = load_spec(d / "spec.toml", stored=True)
for t in iter_tasks(spec):
    r = run_task(t, spec.name)
    for what, table in (("points", r.points), ("events", r.events)):
        f = d / what / f"task-{t.task_id:06d}.parquet"
        if f.exists():
            stored = pq.read_table(f)
            cols = [c for c in stored.column_names if c != "wall_s"]
            assert table.select(cols).to_pylist() == stored.select(cols).to_pylist(), (what, t.task_id)
print("identical")
"""
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"}
    r = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "identical", r.stderr[-2000:]


def test_a_task_result_crosses_pickle_unchanged(rows):
    """What a worker sends (TaskResult pickled as Arrow IPC batches) is rebuilt to the same tables:
    same schema, same values, nulls and all; the points and events of every task of the fixture."""
    import pickle

    from sweeps.schema import EVENTS_SCHEMA, POINTS_SCHEMA
    from sweeps.shard import TaskResult

    spec, _, _, _ = rows
    results = [run_task(t, spec.name) for t in iter_tasks(spec, min_tasks=1)]
    assert sum(r.events.num_rows for r in results) > 0  # the events path is exercised
    for r in results:
        wire = r.__reduce__()[1]
        assert isinstance(wire[1], bytes) and isinstance(wire[2], bytes)  # the IPC path, not Arrow's pickling
        back = pickle.loads(pickle.dumps(r, protocol=5))
        assert (back.task_id, back.cpu_trials) == (r.task_id, r.cpu_trials)
        for got, want, schema in ((back.points, r.points, POINTS_SCHEMA), (back.events, r.events, EVENTS_SCHEMA)):
            assert got.schema.equals(schema) and got.num_rows == want.num_rows
            assert got.to_pylist() == want.to_pylist()  # NaN-free columns (NaNs are stored as nulls)
    # an empty events table and a table of another schema come back as they went
    empty = TaskResult(7, results[0].points, EVENTS_SCHEMA.empty_table(), 1)
    assert pickle.loads(pickle.dumps(empty)).events.equals(EVENTS_SCHEMA.empty_table())
    other = pa.table({"x": [1, 2]})
    odd = pickle.loads(pickle.dumps(TaskResult(8, other, other, 2)))
    assert odd.points.equals(other) and odd.events.equals(other)
