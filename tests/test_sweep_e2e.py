"""End to end on a real embedded Ray (2 CPUs) with real Parquet: run, rerun, resume, errors."""

from __future__ import annotations

import os
import shutil
import signal

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from core.outcomes import EVENT_OUTCOMES, OUTCOMES
from sweeps import run
from sweeps.cli import main
from sweeps.grid import iter_points
from sweeps.spec import load_spec

from precision_helpers import ref_estimate
from sweep_helpers import (
    SLOW_SPEC,
    SMALL_SPEC,
    cli,
    data_file,
    descendants,
    read_dir,
    stored,
    wait_for,
    without_wall,
    write_spec,
)

pytestmark = pytest.mark.slow


def run_once(tmp_path_factory, name: str, text: str):
    """(spec path, results dir) of `text` run once, uninterrupted, on the module's Ray."""
    tmp = tmp_path_factory.mktemp(name)
    spec = write_spec(tmp, text)
    rep = run(spec, tmp / "out", progress=False)
    assert rep.complete and rep.tasks_run == rep.n_tasks
    return spec, tmp / "out"


@pytest.fixture(scope="module")
def reference_run(ray_session, tmp_path_factory):
    """The small spec run once, uninterrupted: the rows every other run must reproduce."""
    return run_once(tmp_path_factory, "ref", SMALL_SPEC)


def test_rows_cover_every_point_and_shard_once_and_counts_sum(reference_run):
    spec_path, out = reference_run
    spec = load_spec(spec_path)
    t = read_dir(out)
    expected = {(p.point_id, k) for p in iter_points(spec) for k in range(spec.n_shards_per_point)}
    got = list(zip(t["point_id"].to_pylist(), t["shard"].to_pylist()))
    assert len(got) == len(set(got)) == len(expected) == spec.n_points * 3
    assert set(got) == expected
    total = sum(pc.sum(t[o]).as_py() for o in OUTCOMES)
    assert total == spec.n_points * spec.trials
    for row in t.select(["trials", *OUTCOMES]).to_pylist():
        assert sum(row[o] for o in OUTCOMES) == row["trials"] == 1000
    # parameters in each row are the point's
    by_id = {p.point_id: p.values for p in iter_points(spec)}
    for row in t.select(["point_id", "n_cpus", "p_stall", "wait", "nmi_jitter_us"]).to_pylist():
        v = by_id[row["point_id"]]
        assert (row["n_cpus"], row["p_stall"], row["wait"], row["nmi_jitter_us"]) == (
            v["n_cpus"], v["p_stall"], v["wait"], v["nmi_jitter_us"])


def test_one_event_row_per_bad_trial(reference_run):
    _, out = reference_run
    pts, ev = read_dir(out), read_dir(out, "events")
    bad = sum(pc.sum(pts[o]).as_py() for o in EVENT_OUTCOMES)
    assert bad > 0 and ev.num_rows == bad
    keys = list(zip(ev["point_id"].to_pylist(), ev["shard"].to_pylist(), ev["trial"].to_pylist()))
    assert len(set(keys)) == len(keys)
    assert set(ev["outcome"].to_pylist()) <= set(EVENT_OUTCOMES)
    assert set(ev["outcome"].to_pylist()) == {"race", "hang", "timeout"}  # the spec provokes all three


def test_rerun_recomputes_nothing(reference_run):
    spec, out = reference_run
    before = {f: f.stat().st_mtime_ns for f in out.rglob("*.parquet")}
    rep = run(spec, out, progress=False)
    assert rep.tasks_run == 0 and rep.complete
    assert {f: f.stat().st_mtime_ns for f in out.rglob("*.parquet")} == before


def test_same_spec_gives_identical_rows(reference_run, tmp_path):
    spec, out = reference_run
    run(spec, tmp_path / "again", progress=False)
    assert without_wall(read_dir(tmp_path / "again")).equals(without_wall(read_dir(out)))
    assert read_dir(tmp_path / "again", "events").equals(read_dir(out, "events"))


def test_in_process_and_ray_paths_store_identical_rows(reference_run, tmp_path):
    """A sweep planned below sweeps.guards.IN_PROCESS_CPU_S runs in the driver's process without Ray unless told
    otherwise (issue 22 item 4): the start line says which path, and the rows equal the Ray path's (the reference
    ran on the module's Ray) except wall_s; forcing either path through the Python API gives them too."""
    import subprocess
    import sys

    from sweeps.grid import total_cpu_trials
    from sweeps.guards import IN_PROCESS_CPU_S, planned_cpu_s

    spec, out = reference_run
    assert planned_cpu_s(total_cpu_trials(load_spec(spec))) < IN_PROCESS_CPU_S  # what makes it the default here
    here = tmp_path / "here"
    code = ("import sys; from sweeps.cli import main; rc = main(sys.argv[1:]); "
            "assert 'ray' not in sys.modules, 'the in-process path imported Ray'; sys.exit(rc)")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    p = subprocess.run([sys.executable, "-c", code, "run", str(spec), "--out", str(here), "--no-progress"],
                       capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    start = next(ln for ln in p.stderr.splitlines() if ln.startswith("stoprace run: e2e-small:"))
    assert f"on 1 CPU (in this process: under {IN_PROCESS_CPU_S:g} CPU-s of work, no Ray)" in start
    assert without_wall(read_dir(here)).equals(without_wall(read_dir(out)))
    assert read_dir(here, "events").equals(read_dir(out, "events"))
    # the Python API: forced into this process (Ray is up in this module), and forced onto Ray
    for forced, where in ((True, "forced-here"), (False, "forced-ray")):
        rep = run(spec, tmp_path / where, progress=False, in_process=forced)
        assert rep.in_process is forced and rep.complete and (rep.stats is None) is forced
        assert without_wall(read_dir(tmp_path / where)).equals(without_wall(read_dir(out)))
        assert read_dir(tmp_path / where, "events").equals(read_dir(out, "events"))


def test_tiny_tasks_batched_into_ray_calls_store_the_rows_of_run_task(ray_session, tmp_path, monkeypatch):
    """One ~1 ms shard per task (the runner packs them into shared Ray calls, issue 22 item 5):
    every stored row equals what sweeps.shard.run_task gives for that task in this process."""
    import pyarrow as pa

    import cluster.executor
    from sweeps.grid import iter_tasks
    from sweeps.shard import run_task
    from sweeps.spec import parse_spec

    text = SMALL_SPEC.replace("shard_trials = 1000", "shard_trials = 100").replace("task_seconds = 0.05",
                                                                                    "task_seconds = 0.00001")
    spec = parse_spec(text)
    tasks = list(iter_tasks(spec))
    assert len(tasks) == spec.n_points * spec.n_shards_per_point == 240  # one shard per task
    # batches of up to 10 s of tasks, so they are batched even when a loaded machine slows each to 50 ms
    # (the runner reads cluster.executor.BATCH_S when it starts the Ray path: it imports no Ray before)
    monkeypatch.setattr(cluster.executor, "BATCH_S", 10.0)
    rep = run(spec, tmp_path / "out", progress=False, in_process=False)
    assert rep.complete and rep.stats is not None and rep.stats.tasks == 240
    assert rep.stats.calls < rep.stats.tasks / 2  # tasks really shared Ray calls
    direct = [run_task(t, spec.name) for t in tasks]
    for what in ("points", "events"):
        got = read_dir(tmp_path / "out", what)
        want = pa.concat_tables([getattr(r, what) for r in direct])
        assert want.num_rows > 0 and got.num_rows == want.num_rows
        keys = [("point_id", "ascending"), ("shard", "ascending")] + ([("trial", "ascending")] if what == "events" else [])
        want = without_wall(want.sort_by(keys))
        assert without_wall(got).select(want.column_names).to_pylist() == want.to_pylist(), what


@pytest.fixture(scope="module")
def slow_run(ray_session, tmp_path_factory):
    return run_once(tmp_path_factory, "slow", SLOW_SPEC)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_run_resumes_to_identical_rows(slow_run, tmp_path, sig):
    spec, ref_out = slow_run
    out = tmp_path / "out"
    proc = cli("run", str(spec), "--out", str(out), "--workers", "1", "--no-progress")
    wait_for(lambda: stored(out) >= 2, 120, "two stored tasks", proc)
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130, err
        assert "run the same command again to resume" in err
        assert not list(out.rglob("*.tmp")), "a clean stop left a partial file behind"
    # SIGKILL may land mid-write and leave a hidden temp file or an uncommitted segment, but never
    # a partial *.parquet: every visible file reads back whole, and the resume removes the leftovers
    for f in out.rglob("*.parquet"):
        pq.read_table(f)
    kept = stored(out)
    n_tasks = stored(ref_out)
    assert 2 <= kept < n_tasks, "interrupt came too late to test resume"
    rep = run(spec, out, progress=False)
    assert rep.complete and rep.tasks_run == rep.n_tasks - kept  # exactly the uncommitted tasks ran
    assert not list(out.rglob("*.tmp")) and not (out / "writer.lock").exists()
    assert without_wall(read_dir(out)).equals(without_wall(read_dir(ref_out)))
    assert read_dir(out, "events").equals(read_dir(ref_out, "events"))


def test_worker_killed_mid_task_is_retried(slow_run, tmp_path):
    spec, ref_out = slow_run
    out = tmp_path / "out"
    proc = cli("run", str(spec), "--out", str(out), "--workers", "2", "--no-progress")
    killed = []

    def kill_a_worker():
        # only this run's own Ray workers, busy in run_task (titled ray::run_task)
        for pid, cmd in descendants(proc.pid):
            if cmd.startswith("ray::run_task") and pid not in killed:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                killed.append(pid)
                return True
        return False

    wait_for(kill_a_worker, 120, "a running run_task worker", proc)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert killed
    assert without_wall(read_dir(out)).equals(without_wall(read_dir(ref_out)))
    assert read_dir(out, "events").equals(read_dir(ref_out, "events"))


BAD_SPECS = [
    ("frobnicate = 3\n", "unknown parameter 'frobnicate'"),
    ("n_cpus = [1, 4]\n", "n_cpus"),
    ("p_stall = [0.5, 2.0]\n", "p_stall"),
    ("mitigation = ['none', 'sometimes']\n", "mitigation"),
    ("wbinvd_us = { logspace = [0, 100], num = 3 }\n", "wbinvd_us"),
    ("n_cpus = []\n", "n_cpus"),
]


@pytest.mark.parametrize("axis,needle", BAD_SPECS)
def test_bad_spec_exits_2_naming_the_field_and_creates_nothing(tmp_path, capsys, axis, needle):
    spec = write_spec(tmp_path, SMALL_SPEC.split("[axes]")[0] + "[axes]\n" + axis)
    out = tmp_path / "never"
    assert main(["run", str(spec), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_name_in_base_and_axes_is_refused(tmp_path, capsys):
    spec = write_spec(tmp_path, SMALL_SPEC.replace("[base]\n", "[base]\nn_cpus = 8\n"))
    assert main(["run", str(spec), "--out", str(tmp_path / "o")]) == 2
    assert "n_cpus" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_other_spec_into_existing_dir_is_refused_and_nothing_changes(reference_run, tmp_path, capsys):
    spec, ref_out = reference_run
    out = tmp_path / "copy"
    shutil.copytree(ref_out, out)
    before = {f: f.read_bytes() for f in out.rglob("*") if f.is_file()}
    other = write_spec(tmp_path, SMALL_SPEC.replace("seed = 7", "seed = 8"), "other.toml")
    assert main(["run", str(other), "--out", str(out)]) == 2
    assert "different spec" in capsys.readouterr().err
    assert {f: f.read_bytes() for f in out.rglob("*") if f.is_file()} == before


def test_missing_spec_file_exits_2(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml" in capsys.readouterr().err


def test_replay_rebuilds_every_event_of_the_run(reference_run, capsys):
    from queries.replay import replay

    _, out = reference_run
    ev = read_dir(out, "events").to_pylist()
    assert len(ev) > 20
    for e in ev:
        r = replay(out, e["point_id"], e["shard"], e["trial"])
        assert r.result.outcome == r.vectorized_outcome == e["outcome"]
        assert r.result.nmi_sent == e["nmi_sent"] and r.result.racers == e["racers"]
        if e["t_done_us"] is None:
            assert r.result.t_done_us is None
        else:
            assert r.result.t_done_us == pytest.approx(e["t_done_us"], rel=1e-12)
        assert r.result.first_racer_cpu == e["first_racer_cpu"]
    e = ev[0]
    assert main(["replay", str(out), "--point", e["point_id"], "--shard", str(e["shard"]), "--trial", str(e["trial"])]) == 0
    text = capsys.readouterr().out
    assert f"outcome: {e['outcome']}" in text and "nmi arrive" in text


def test_replay_bad_address_exits_2(reference_run, capsys):
    _, out = reference_run
    assert main(["replay", str(out), "--point", "0000000000000000", "--shard", "0", "--trial", "0"]) == 2
    assert "not in" in capsys.readouterr().err
    pid = read_dir(out)["point_id"][0].as_py()
    assert main(["replay", str(out), "--point", pid, "--shard", "0", "--trial", "5000"]) == 2
    assert "outside" in capsys.readouterr().err


def test_queries_over_a_real_run_match_a_pyarrow_aggregation(reference_run, tmp_path, capsys):
    from test_queries import close, reference_outcomes

    from queries import connect
    from queries.named import list_named, run_named

    _, out = reference_run
    con = connect(out)
    got = {(r["sweep"], r["point_id"]): r for r in con.sql("SELECT * FROM outcomes").to_arrow_table().to_pylist()}
    want = reference_outcomes(out)
    assert got.keys() == want.keys() and len(got) == 8
    for key, w in want.items():
        g = got[key]
        assert g["nmi_phase"] == w["trials"] - w["clean"] == w["nmi_clean"] + w["bad"]
        for col in ("trials", "race", "hang", "timeout", "p_bad", "p_bad_lo", "p_bad_hi", "t_mean_us", "t_p50_us", "t_p99_us", "t_max_us"):
            assert close(g[col], w[col], rel=1e-9), (col, g[col], w[col])
    for q in list_named():
        run_named(con, q.name, {})  # every named query runs on real data
    hc = run_named(con, "hang_conditions", {"threshold": 0.0}).to_pylist()
    assert {r["point_id"] for r in hc} == {k[1] for k, w in want.items() if w["p_bad_hi"] > 0.0}
    con.close()
    assert main(["capacity", str(out), "--target-p", "1e-3"]) == 0
    png = tmp_path / "fig.png"
    assert main(["plot", str(out), "--x", "n_cpus", "--y", "p_stall", "--metric", "p_bad", "-o", str(png)]) == 0
    assert png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"


CMC_SPEC = """
name = "e2e-cmc"
seed = 3
trials = 2000
shard_trials = 500
estimator = "cmc"

[base]
stall_median_us = 1.0e6
stall_sigma = 0.05
nmi_jitter_us = 1000.0

[axes]
n_cpus = [8, 32]
p_stall = [0.02, 0.2]
"""


@pytest.fixture(scope="module")
def cmc_run(ray_session, tmp_path_factory):
    return run_once(tmp_path_factory, "cmc", CMC_SPEC)


def test_cmc_sweep_outcomes_merge_shards_exactly(cmc_run):
    from core.estimators.cmc.walk import combine, estimate_interval
    from queries import connect

    _, out = cmc_run
    pts = read_dir(out)
    assert set(pts["estimator"].to_pylist()) == {"cmc"}
    con = connect(out)
    got = {r["point_id"]: r for r in con.sql("SELECT * FROM outcomes").to_arrow_table().to_pylist()}
    con.close()
    by_point: dict[str, list] = {}
    for r in pts.to_pylist():
        by_point.setdefault(r["point_id"], []).append(r)
    assert got.keys() == by_point.keys()
    for pid, rows in by_point.items():
        g = got[pid]
        for what, ymax in (("race", g["n_cpus"] - 1), ("bad", g["n_cpus"])):
            n, m, v = combine((r["trials"], r[f"p_{what}_est"], r[f"p_{what}_var"]) for r in rows)
            lo, hi = estimate_interval(m, v, n, 0.95, ymax)
            assert g["cmc_trials"] == n
            assert g[f"p_{what}_cmc"] == pytest.approx(m, rel=1e-12)
            assert g[f"p_{what}_cmc_var"] == pytest.approx(v, rel=1e-6, abs=1e-30)
            if what == "race":  # p_bad's stored values get no interval of their own (core.intervals)
                assert g["p_race_cmc_lo"] == pytest.approx(lo, rel=1e-6, abs=1e-300)
                assert g["p_race_cmc_hi"] == pytest.approx(hi, rel=1e-6)
                assert 0 <= g["p_race_cmc_lo"] < g["p_race_cmc_hi"]
        # p_bad: the cmc race part plus the counted hang/timeout part, as core/README.md words it
        race_cmc = combine((r["trials"], r["p_race_est"], r["p_race_var"]) for r in rows)
        want = ref_estimate("p_bad", g["trials"], g["race"], g["hang"], g["timeout"], race_cmc, g["n_cpus"],
                            g["wait"], g["p_unresponsive"])
        assert (g["p_bad"], g["p_bad_lo"], g["p_bad_hi"]) == pytest.approx(want[:3], rel=1e-6, abs=1e-300)
        assert g["p_bad_method"] == want[3]
        # the cmc estimate agrees with the naive count of the same trials (99.9%, combined)
        assert g["estimator"] == "cmc" and g["p_race"] == g["p_race_cmc"]
        assert g["p_race_naive"] == pytest.approx(g["race"] / g["trials"], rel=1e-12)
        se = (g["p_race_cmc_var"] + g["p_race_naive"] * (1 - g["p_race_naive"]) / g["trials"]) ** 0.5
        assert abs(g["p_race_cmc"] - g["p_race_naive"]) < 3.3 * se + 1e-12


def test_capacity_uses_the_cmc_interval(cmc_run):
    from queries import connect
    from queries.capacity import capacity

    _, out = cmc_run
    con = connect(out)
    cap = capacity(con, 0.5, metric="p_race", by=["p_stall"])
    cells = cap.cells.to_pylist()
    want = {(r["p_stall"], r["n_cpus"]): r for r in
            con.sql("SELECT * FROM outcomes").to_arrow_table().to_pylist()}
    con.close()
    assert len(cells) == len(want) == 4 and all(c["estimator"] == "cmc" for c in cells)
    for c in cells:  # one point per cell: exactly its cmc estimate and interval (never intersected with Wilson)
        w = want[(c["p_stall"], c["n_cpus"])]
        assert (c["p"], c["p_lo"], c["p_hi"]) == (w["p_race_cmc"], w["p_race_cmc_lo"], w["p_race_cmc_hi"])
        assert c["p_lo"] <= c["p"] <= c["p_hi"]


def test_replay_of_a_cmc_sweep_uses_its_stream(cmc_run):
    from queries.replay import replay

    _, out = cmc_run
    ev = read_dir(out, "events").to_pylist()
    assert len(ev) > 5
    for e in ev[:40]:
        r = replay(out, e["point_id"], e["shard"], e["trial"])
        assert r.result.outcome == r.vectorized_outcome == e["outcome"]
        assert r.result.nmi_sent == e["nmi_sent"]


def test_two_concurrent_runs_one_exits_2_at_once(slow_run, tmp_path):
    """Two real drivers on one --out: the second is refused at once naming the first; the first is unharmed."""
    spec, ref_out = slow_run
    out = tmp_path / "out"
    first = cli("run", str(spec), "--out", str(out), "--workers", "1", "--no-progress")
    wait_for(lambda: (out / "writer.lock").exists() and stored(out) >= 1, 120, "the first run storing", first)
    second = cli("run", str(spec), "--out", str(out), "--workers", "1", "--no-progress")
    _, err = second.communicate(timeout=60)
    assert second.returncode == 2, err
    (line,) = err.strip().splitlines()
    assert f"is being written by pid {first.pid} on " in line and "--break-lock" in line
    _, err1 = first.communicate(timeout=300)
    assert first.returncode == 0, err1
    assert without_wall(read_dir(out)).equals(without_wall(read_dir(ref_out)))


def test_damaged_segment_is_recomputed_by_run_and_reported_by_query(reference_run, tmp_path, capsys):
    import json

    spec, ref_out = reference_run
    out = tmp_path / "out"
    shutil.copytree(ref_out, out, symlinks=True)  # a copy as `cp -r` makes it (links stay links)
    m = json.loads((out / "manifest.json").read_text())
    seg = m["segments"][0]
    victim = data_file(out, seg["points"]["path"])  # the file itself (points/ holds a link to it)
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 3])  # truncated
    assert main(["query", str(out), "--sql", "select count(*) from points"]) in (0, 2)
    err = capsys.readouterr().err
    assert seg["points"]["path"] in err and len(err.strip().splitlines()) == 1
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0
    out_text, err = capsys.readouterr()
    assert f"{seg['points']['path']} has" in err and "ran its tasks" in err
    assert without_wall(read_dir(out)).equals(without_wall(read_dir(ref_out)))
    assert read_dir(out, "events").equals(read_dir(ref_out, "events"))
