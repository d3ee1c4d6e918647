"""A late sweep end to end on the embedded Ray: trials = "auto" with the boundary search, the
queries over its rows, replay of its events, its own stream in the plan."""

from __future__ import annotations

import json

import pytest

import queries
from core.outcomes import EVENT_OUTCOMES, OUTCOMES
from queries.replay import format_timeline, replay
from sweeps import run
from sweeps.cli import main

from precision_helpers import naive_status
from sweep_helpers import race_spec, read_dir, same_results, write_spec

pytestmark = pytest.mark.slow

SPEC = race_spec("e2e-late", 5, "auto", 500, 0.1,
                 precision='metric = "p_bad"\ntarget = 0.01\nmax_trials = 4000',
                 search="n_cpus = [2, 1024]", axes="p_stall = [0.01]\nwait = [0, 1]").replace(
    "shard_trials = 500", 'shard_trials = 500\nestimator = "late"')


@pytest.fixture(scope="module")
def late_run(ray_session, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("late")
    spec = write_spec(tmp, SPEC)
    rep = run(spec, tmp / "out", progress=False)
    assert rep.complete
    return spec, tmp / "out", rep


def test_search_and_stop_rule_run_on_late_counts(late_run):
    from sweeps.spec import load_spec

    spec_path, out, rep = late_run
    rows = read_dir(out).to_pylist()
    assert {r["estimator"] for r in rows} == {"late"}
    rule = load_spec(spec_path).precision.model_dump()
    for found in rep.search:
        a = found["max_n_cpus"]
        assert a is not None
        by_n: dict[int, list] = {}
        for r in rows:
            if r["wait"] == found["wait"]:
                by_n.setdefault(r["n_cpus"], []).append(r)
        for n, rs in by_n.items():  # the search's decisions are the Wilson decisions of the stored counts
            k = sum(r["race"] + r["hang"] + r["timeout"] for r in rs)
            assert (naive_status(k, sum(r["trials"] for r in rs), rule) == "below target") == (n <= a), (n, found)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["plan"]["late_stream"] == 1


def test_queries_read_late_rows_as_counts(late_run, tmp_path):
    _, out, _ = late_run
    con = queries.connect(out)
    got = con.sql("SELECT estimator, trials, race, hang, timeout, p_bad, status FROM outcomes").to_arrow_table().to_pylist()
    con.close()
    # `outcomes.estimator` says how p_race / p_bad were estimated: a late sweep's are counts (Wilson)
    assert got and all(g["estimator"] == "naive" for g in got)
    for g in got:
        assert g["p_bad"] == pytest.approx((g["race"] + g["hang"] + g["timeout"]) / g["trials"])
        assert g["status"] in {"below target", "above target", "budget exhausted"}
    assert main(["capacity", str(out), "--target-p", "1e-2"]) == 0
    assert main(["plot", str(out), "--x", "n_cpus", "--y", "wait", "--metric", "p_bad", "-o", str(tmp_path / "f.png")]) == 0


def test_replay_of_late_events_matches_the_reference(late_run):
    _, out, _ = late_run
    ev = read_dir(out, "events").to_pylist()
    assert {e["outcome"] for e in ev} <= set(EVENT_OUTCOMES) and len(ev) > 3
    for e in ev[:25]:
        r = replay(out, e["point_id"], e["shard"], e["trial"])
        assert r.result.outcome == r.vectorized_outcome == e["outcome"]
        if e["t_done_us"] is not None:
            assert r.result.t_done_us == e["t_done_us"]
        assert r.result.racers == e["racers"] and r.result.nmi_sent == e["nmi_sent"]
        text = format_timeline(r)
        assert "WARNING" not in text and "cleared by T_max" in text
        shown = [c for c in r.to_json()["cpus"]]
        assert [c["cpu"] for c in shown] == r.late.cpu  # only the late CPUs, the ones drawn
    assert OUTCOMES  # (imported for the outcome names)


def test_rerun_is_identical(late_run, tmp_path):
    spec, out, rep = late_run
    again = run(spec, tmp_path / "again", progress=False)
    assert again.search == rep.search
    same_results(tmp_path / "again", out)
