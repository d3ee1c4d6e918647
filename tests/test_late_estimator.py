"""The late estimator's interface: determinism, replay, the fallback, stored rows and columns.

Replay is checked trial for trial: the draws `replay` gives (the late CPUs' own, stand-ins for
the others) run through the scalar reference must give the very result the chunk computed,
in every output, for trials of every outcome.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from core import reference
from core.estimators import CMC, LATE, NAIVE, get_estimator, stream_signature
from core.estimators.late import plan as late_plan
from core.estimators.late.chunk import CHUNK_TRIALS
from core.estimators.late.estimator import FALLBACK, LATE_STREAM_VERSION, stand_in_off
from core.outcomes import OUTCOMES
from core.params import make_params
from core.precision import PointTally, ShardStats
from core.vectorized import TrialBatch, shard_seed
from sweeps.grid import iter_tasks
from sweeps.shard import run_task
from sweeps.spec import parse_spec

from core_helpers import same

RACY = dict(n_cpus=24, p_stall=0.3, stall_median_us=1.0005e6, stall_sigma=0.002, nmi_jitter_us=300.0,
            p_unresponsive=0.002, incoherent_fraction=0.7)


def batch(p, n, seed):
    return TrialBatch.concat([c.batch for c in LATE.chunks(p, n, seed)])


def test_same_seed_same_trials_other_shard_other_trials():
    p = make_params(RACY)
    a, b = batch(p, 3000, shard_seed(5, 1)), batch(p, 3000, shard_seed(5, 1))
    for f in ("outcome", "t_done_us", "nmi_sent", "racers", "overlap_us", "first_racer_cpu", "preflush_us"):
        assert np.array_equal(getattr(a, f), getattr(b, f), equal_nan=True)
    c = batch(p, 3000, shard_seed(5, 2))
    assert not np.array_equal(a.t_done_us, c.t_done_us, equal_nan=True)


@pytest.mark.parametrize("kw", [RACY, dict(RACY, mitigation="early_flush", nmi_jitter_us=3000.0), dict(RACY, wait=0),
                                dict(n_cpus=8, p_stall=0.0, irq_off_mean_us=0.0, ipi_jitter_us=0.0, wbinvd_sigma=0.0)])
def test_replay_rebuilds_every_kind_of_trial_and_the_reference_agrees(kw):
    p = make_params(kw)
    n = 4000
    seed = shard_seed(7, 0)
    full = batch(p, n, seed)
    picks = {0, n - 1}
    for code in range(len(OUTCOMES)):
        hit = np.flatnonzero(full.outcome == code)
        picks |= set(hit[:2].tolist()) | set(hit[-1:].tolist())
    seen = set()
    for t in sorted(picks):
        r = LATE.replay(p, n, seed, t)
        for f in ("outcome", "t_done_us", "nmi_sent", "racers", "overlap_us", "first_racer_cpu", "preflush_us"):
            assert np.array_equal(getattr(r.batch, f), getattr(full, f)[t:t + 1], equal_nan=True), (t, f)
        ref = reference.simulate_trial(p, r.draws.to_lists())
        assert ref.outcome == OUTCOMES[full.outcome[t]], t
        assert same(ref.t_done_us, float(full.t_done_us[t])), t
        assert ref.nmi_sent == full.nmi_sent[t] and ref.racers == full.racers[t], t
        assert same(ref.overlap_us, float(full.overlap_us[t])) and same(ref.first_racer_cpu, int(full.first_racer_cpu[t]))
        assert same(ref.preflush_us, float(full.preflush_us[t])), t
        late = r.values
        assert late.late_cpus == len(late.cpu) and late.others == p.n_remote - late.late_cpus
        assert sum(late.counts.values()) == late.others
        assert sorted(late.cpu) == late.cpu and len(set(late.cpu)) == len(late.cpu)
        assert all(1 <= c < p.n_cpus for c in late.cpu)
        seen.add(ref.outcome)
    assert len(seen) >= (1 if kw.get("n_cpus") == 8 else 3)
    with pytest.raises(ValueError):
        LATE.replay(p, n, seed, n)


def test_replay_finds_trials_in_a_later_chunk():
    p = make_params({})
    n = CHUNK_TRIALS + 300
    seed = shard_seed(8, 1)
    full = batch(p, n, seed)
    for t in (CHUNK_TRIALS - 1, CHUNK_TRIALS, n - 1, int(np.flatnonzero(full.outcome[CHUNK_TRIALS:])[0]) + CHUNK_TRIALS):
        r = LATE.replay(p, n, seed, t)
        assert r.batch.outcome[0] == full.outcome[t] and r.batch.t_done_us[0] == full.t_done_us[t]


def test_stand_in_hits_the_maximum_exactly():
    for t in (6.0, 1006.0, 999_999.123456789, 2.0**20 + 2.0**-32, 1e6):
        x = stand_in_off(t, 5.0, 1.0)
        assert x + 5.0 == t and x >= 1.0


def clopper_pearson_bounds(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    """The exact interval from scipy's beta quantiles (independent of core.stats)."""
    from scipy.stats import beta

    a = (1 - conf) / 2
    return (0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1)), 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k)))


def test_rows_of_a_late_shard_count_like_naive_and_name_the_estimator():
    spec = parse_spec("""
name = "late-rows"
seed = 4
trials = 3000
shard_trials = 1000
estimator = "late"
[base]
p_stall = 0.3
stall_median_us = 1.0005e6
stall_sigma = 0.002
nmi_jitter_us = 300.0
p_unresponsive = 0.002
[axes]
n_cpus = [8, 24]
wait = [0, 1]
""")
    tasks = list(iter_tasks(spec))
    res = [run_task(t, spec.name, spec.estimator) for t in tasks]
    rows = [r for t in res for r in t.points.to_pylist()]
    events = [e for t in res for e in t.events.to_pylist()]
    assert {r["estimator"] for r in rows} == {"late"}
    for r in rows:
        n = sum(r[o] for o in OUTCOMES)
        assert n == r["trials"] == 1000
        assert r["p_race_est"] == pytest.approx(r["race"] / n) and r["p_bad_est"] == pytest.approx(
            (r["race"] + r["hang"] + r["timeout"]) / n)
        assert sum(r["t_done_hist"]) == n - r["hang"]
    assert len(events) == sum(r["race"] + r["hang"] + r["timeout"] for r in rows) > 0
    # the stop rule reads late rows as counts (exact Clopper-Pearson, core.intervals), like naive
    tally = PointTally(rows[0]["n_cpus"])
    tally.add(0, ShardStats.from_row(rows[0]))
    est = tally.estimate("p_race")
    k, n = rows[0]["race"], rows[0]["trials"]
    assert est.method == "counted" and est.p == k / n
    assert (est.lo, est.hi) == pytest.approx(clopper_pearson_bounds(k, n), rel=1e-9)


def test_fallback_runs_the_naive_path_and_says_so(monkeypatch):
    p = make_params(RACY)
    monkeypatch.setattr(late_plan, "_cached", lambda _p: "forced for the test")
    seed = shard_seed(3, 0)
    acc = LATE.run_shard(p, 2500, seed)
    ref = NAIVE.run_shard(p, 2500, shard_seed(3, 0))
    assert acc.estimator == FALLBACK and LATE.column(p) == FALLBACK
    assert np.array_equal(acc.counts.counts, ref.counts.counts) and np.array_equal(acc.counts.hist, ref.counts.hist)
    assert acc.columns() == ref.columns()
    r, nr = LATE.replay(p, 2500, seed, 77), NAIVE.replay(p, 2500, seed, 77)
    assert np.array_equal(r.draws.off, nr.draws.off) and r.batch.outcome[0] == nr.batch.outcome[0]
    assert get_estimator(FALLBACK) is LATE


def test_stream_is_its_own_and_recorded():
    assert stream_signature("late") == {"late_stream": LATE_STREAM_VERSION}
    assert stream_signature("naive") == {} == stream_signature("cmc")
    assert LATE.stream_version == LATE_STREAM_VERSION and NAIVE.stream_version is None is CMC.stream_version


def test_simulate_command_reports_the_late_estimator(stoprace):
    out = stoprace("simulate", "--estimator", "late", "--trials", "20000", "--n-cpus", "512", "--json")
    assert out.rc == 0, out.err
    rep = json.loads(out.out)
    assert rep["estimator"] == "late" and rep["trials"] == 20000
    assert 0.8 < rep["counts"]["clean"] / 20000 < 0.95  # 88% of trials at n_cpus 512 never reach the NMIs


@pytest.mark.parametrize("m,k", [(10, 1), (10, 3), (10, 8), (4095, 2), (12, 6)])
def test_late_cpu_ids_are_a_uniform_subset(m, k):
    from math import comb

    from scipy import stats as sst

    from core.estimators.late.chunk import draw_ids

    n = 60_000
    ids = draw_ids(np.random.default_rng(m * 31 + k), m, np.full(n, k)).reshape(n, k)
    assert np.all(np.diff(ids, axis=1) > 0) and ids.min() >= 1 and ids.max() <= m
    if comb(m, k) <= 2000:  # every subset equally likely
        _, counts = np.unique(ids, axis=0, return_counts=True)
        assert counts.size == comb(m, k)
        assert sst.chisquare(counts).pvalue > 1e-4
    else:  # each id equally likely, and the two ids' gap has the law of a uniform pair's
        assert sst.chisquare(np.bincount(ids.ravel(), minlength=m + 1)[1:]).pvalue > 1e-4
