"""The fix's cost per kexec and the model revision as a scenario axis (issue 19 items 4 and 6).

A small real result set (tasks run in-process into a ResultStore) with model_rev, wait and
mitigation swept and dead CPUs (so revision 2's flush hangs sometimes):

- `points` keeps `preflush_hist` beside the sums; `outcomes` reports preflush mean, p50, p99 and
  max, checked against NumPy over the per-trial `preflush_us` of the same shards (recomputed from
  their seeds), with the binned quantiles equal to core.histogram's on the same bins; nmi_phase
  leaves out the trials that hung in the flush.
- `mitigation_effect` names the model revision of each pair and never pairs two revisions;
  `capacity` splits model_rev out like wait and mitigation and names the revisions it summarizes.
- `stoprace simulate` prints the same preflush statistics as NumPy computes for its trials.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from core.histogram import histogram, quantile
from core.params import make_params
from core.vectorized import iter_chunks, shard_seed
from queries.capacity import capacity
from queries.db import connect
from queries.named import run_named
from sweeps.cli import main
from sweeps.grid import iter_points, iter_tasks, plan_signature
from sweeps.shard import run_task
from sweeps.spec import parse_spec
from sweeps.store import ResultStore

SPEC = {
    "name": "pf", "seed": 11, "trials": 2000, "shard_trials": 1000,
    "base": {"n_cpus": 8, "p_stall": 0.05, "p_unresponsive": 0.004, "stall_median_us": 1.0e6, "stall_sigma": 0.01,
             "nmi_jitter_us": 3e3},
    "axes": {"wait": [0, 1], "mitigation": ["none", "early_flush"], "model_rev": [1, 2]},
}


@pytest.fixture(scope="module")
def result_set(tmp_path_factory):
    spec = parse_spec(SPEC)
    d = tmp_path_factory.mktemp("pf") / "pf"
    store = ResultStore.create_or_open(d, spec, plan=plan_signature())
    tasks = list(iter_tasks(spec))
    for t in tasks:
        r = run_task(t, spec.name)
        store.write_task(t.task_id, r.points, r.events)
    store.finish(len(tasks))
    store.close()
    return spec, d


def per_trial(spec, point):
    """(preflush_us, outcome, nmi_sent) of every trial of a point, shard by shard from its seeds."""
    parts = [b for k, n in enumerate(spec.shard_sizes()) for _, b in iter_chunks(point.params, n,
                                                                                shard_seed(point.point_seed, k))]
    return (np.concatenate([b.preflush_us for b in parts]), np.concatenate([b.outcome for b in parts]),
            np.concatenate([b.nmi_sent for b in parts]))


def test_outcomes_report_the_preflush_statistics_of_the_trials(result_set):
    spec, d = result_set
    con = connect(d)
    cols = "preflush_us, preflush_p50_us, preflush_p99_us, preflush_max_us, nmi_phase, trials, clean"
    got = {r[0]: r[1:] for r in con.execute(f"SELECT point_id, {cols} FROM outcomes").fetchall()}
    hung_somewhere = 0
    for pt in iter_points(spec):
        pf, outcome, sent = per_trial(spec, pt)
        mean, p50, p99, mx, nmi_phase, trials, clean = got[pt.point_id]
        p = pt.params
        flush_runs = p.mitigation == "early_flush" and (p.model_rev == 1 or p.wait == 1)
        hung = int(np.isnan(pf).sum()) if flush_runs else 0
        if not flush_runs:  # none, and revision 2's panic path: no early flush at all
            assert np.isnan(pf).all() and (mean, p50, p99, mx) == (None, None, None, None), pt.values
            assert nmi_phase == trials - clean
            continue
        x = pf[np.isfinite(pf)]
        # revision 2 hangs in the flush exactly on the trials with a dead CPU: hang, no NMI
        assert hung == (int(np.count_nonzero((outcome == 4) & (sent == 0))) if p.model_rev == 2 else 0)
        hung_somewhere += hung
        assert math.isclose(mean, x.mean(), rel_tol=1e-12) and mx == x.max()
        h = histogram(x)
        assert math.isclose(p50, quantile(h, 0.5, mx), rel_tol=1e-12)
        assert math.isclose(p99, quantile(h, 0.99, mx), rel_tol=1e-12)
        # the bins resolve a quantile to a factor 10**(1/16) of the sample's own
        assert abs(math.log10(p50 / np.quantile(x, 0.5))) <= 1 / 16 + 1e-12
        # trials that hung in the flush never reached the NMI phase
        assert nmi_phase == trials - clean - hung
        stored = con.execute("SELECT list_sum(preflush_hist) FROM points WHERE point_id = ? ORDER BY shard",
                             [pt.point_id]).fetchall()
        assert sum(r[0] for r in stored) == x.size
    assert hung_somewhere > 0  # the flush did hang in this sweep


def test_mitigation_effect_pairs_within_one_revision_and_names_it(result_set):
    _, d = result_set
    con = connect(d)
    rows = run_named(con, "mitigation_effect").to_pylist()
    assert sorted((r["model_rev"], "wait=0" in r["differs"]) for r in rows) == [
        (1, False), (1, True), (2, False), (2, True)]
    flush = {(r[0], r[1]): r[2:] for r in con.execute(
        "SELECT model_rev, wait, preflush_us, preflush_p50_us, preflush_p99_us, preflush_max_us "
        "FROM outcomes WHERE mitigation = 'early_flush'").fetchall()}
    for r in rows:
        wait = 0 if "wait=0" in r["differs"] else 1
        assert (r["preflush_us"], r["preflush_p50_us"], r["preflush_p99_us"], r["preflush_max_us"]) == \
            flush[(r["model_rev"], wait)]
    # revision 2 on the panic path: no flush, so no cost; revision 1 there: a cost
    assert all((r["preflush_us"] is None) == (r["model_rev"] == 2 and "wait=0" in r["differs"]) for r in rows)


def test_capacity_splits_model_rev_and_names_it(result_set, capsys):
    _, d = result_set
    con = connect(d)
    cap = capacity(con, 0.5, by=[])
    assert "model_rev" in cap.split_out and "model_rev" in cap.by and cap.model_revs == [1, 2]
    revs = cap.limits.column("model_rev").to_pylist()
    assert sorted(set(revs)) == [1, 2] and cap.limits.num_rows == 2 * 2 * 2  # never pooled
    assert any("model_rev 1 and 2: each revision is a group of its own" in n for n in cap.notes)
    one = capacity(con, 0.5, where="model_rev = 2 AND wait = 1 AND mitigation = 'none'")
    assert one.model_revs == [2] and "model_rev" not in one.by
    assert any(n.startswith("model_rev 2: the kexec path as merged") for n in one.notes)
    assert main(["capacity", str(d), "--target-p", "0.5", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model_revs"] == [1, 2]


def test_simulate_prints_the_preflush_statistics(capsys):
    argv = ["simulate", "--n-cpus", "8", "--mitigation", "early_flush", "--p-stall", "0.05", "--p-unresponsive",
            "0.01", "--trials", "3000", "--seed", "4"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    p = make_params(dict(n_cpus=8, mitigation="early_flush", p_stall=0.05, p_unresponsive=0.01))
    pf = np.concatenate([b.preflush_us for _, b in iter_chunks(p, 3000, shard_seed(4, 0))])
    x = pf[np.isfinite(pf)]
    line = next(ln for ln in out.splitlines() if ln.startswith("preflush (µs):"))
    nums = [float(v.replace(",", "")) for v in re.findall(r"(?:mean|p50|p99|max) ([0-9,.]+)", line)]
    h = histogram(x)
    want = [x.mean(), quantile(h, 0.5, x.max()), quantile(h, 0.99, x.max()), x.max()]
    assert nums == pytest.approx(want, rel=1e-6, abs=0.051)  # printed to 0.1 µs
    assert f"({3000 - x.size:,} hung in the flush)" in line and 3000 - x.size > 0
    assert "(model_rev 2)" in out
    assert main([*argv, "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["params"]["model_rev"] == 2 and rep["preflush_us"]["trials"] == x.size
    assert rep["preflush_us"]["p99"] == pytest.approx(want[2], rel=1e-12)
    # revision 1 flushes at once, with no IPI: every trial has a time, the longest WBINVD
    assert main([*argv, "--model-rev", "1"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("preflush (µs):"))
    assert "hung" not in line


def test_replay_shows_cpu0s_flush_and_the_flush_ipi(result_set, capsys):
    # a stored revision-2 hang in the early flush and a revision-2 kexec race, replayed from their address
    _, d = result_set
    con = connect(d)

    def event(where: str) -> tuple:
        return con.execute(f"SELECT e.point_id, e.shard, e.trial FROM events e JOIN outcomes o USING (point_id) "
                           f"WHERE {where} ORDER BY e.point_id, e.shard, e.trial LIMIT 1").fetchone()

    hang = event("o.model_rev = 2 AND o.wait = 1 AND o.mitigation = 'early_flush' AND e.outcome = 'hang'")
    race = event("o.model_rev = 2 AND o.wait = 1 AND o.mitigation = 'none' AND e.outcome = 'race'")
    assert hang is not None and race is not None
    for (pid, shard, trial) in (hang, race):
        argv = ["replay", str(d), "--point", pid, "--shard", str(shard), "--trial", str(trial)]
        assert main([*argv, "--all"]) == 0
        text = capsys.readouterr().out
        assert "WARNING" not in text and "model_rev 2" in text
        assert main([*argv, "--json"]) == 0
        js = json.loads(capsys.readouterr().out)
        if (pid, shard, trial) == hang:
            dead = [c["cpu"] for c in js["cpus"] if c["dead"]]
            assert js["hung_in_flush"] == dead[0] and js["nmi_sent"] == 0 and js["preflush_us"] is None
            assert f"HUNG in the early flush: CPU {dead[0]} never took its IPI" in text
            assert "early flush (on_each_cpu IPI" in text and "(never took it)" in text
        else:
            assert js["hung_in_flush"] is None and js["cpu0_dirty"] is True  # incoherent_fraction = 1
            assert js["handover_us"] == 100.0 + js["cpu0_wbinvd_us"]
            assert f"hand-over H: {js['handover_us']:,.2f} (handoff 100.00 + CPU 0's WBINVD" in text
            assert "in relocate_kernel()" in text


def test_the_answer_plot_reads_mitigation_effect_and_draws(result_set, tmp_path):
    # examples/plot_factor.py (README "The answer"): pairs keyed by what `differs` names
    import importlib.util

    from sweep_helpers import ROOT

    spec = importlib.util.spec_from_file_location("plot_factor", ROOT / "examples" / "plot_factor.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    _, d = result_set
    rows = mod.factors(str(d))
    assert len(rows) == 4 and {(r["n_cpus"], r["p_nmi_delay"], r["median"]) for r in rows} == {(8, 0.0, 200.0)}
    assert sorted(r["model_rev"] for r in rows) == [1, 1, 2, 2]
    out = tmp_path / "f.png"
    import sys

    argv, sys.argv = sys.argv, ["plot_factor.py", str(d), "-o", str(out)]
    try:
        assert mod.main() == 0
    finally:
        sys.argv = argv
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
