"""queries.capacity, test strength (issue 23 item 5): which n_cpus is the limit, when a cell passes, the
status of the first failure, how an adaptive sweep's decided statuses enter, and the fleet figures.

Hand-built result sets with counts chosen so every answer is known without the code: 10,000 trials a
point and a target of 1e-3, so 0 races pass (upper bound ~3.7e-4), 10 races span the target (p = 1e-3)
and 100 races exceed it (lower bound ~8e-3) under any 95% interval of the counts. The bounds are
recomputed here: Wilson by its formula where the cells are Wilson's, the exact Clopper-Pearson bounds
(scipy's beta quantiles) where they say `counted`; p is k / n from pyarrow over the same files.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from scipy import stats

from queries.capacity import capacity
from queries.db import connect

import synthetic_results as sr

N = 10_000
TARGET = 1e-3
# races per (wbinvd_us, n_cpus): one group passes everywhere, one is inconclusive at 64, one exceeds at 64;
# both of those pass again at 512 (not monotone)
RACES = {(100.0, 8): 0, (100.0, 64): 0, (100.0, 512): 0,
         (1000.0, 8): 0, (1000.0, 64): 10, (1000.0, 512): 0,
         (10000.0, 8): 0, (10000.0, 64): 100, (10000.0, 512): 0}


def count_bounds(k: int, n: int, method: str | None) -> tuple[float, float]:
    """The 95% interval of k in n as the cells' method defines it, computed from scratch."""
    if method == "counted":  # Clopper-Pearson
        lo = 0.0 if k == 0 else float(stats.beta.ppf(0.025, k, n - k + 1))
        hi = 1.0 if k == n else float(stats.beta.ppf(0.975, k + 1, n - k))
        return lo, hi
    z = float(stats.norm.ppf(0.975))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (0.0 if k == 0 else centre - half), centre + half


@pytest.fixture(scope="module")
def naive_dir(tmp_path_factory) -> Path:
    pts = [sr.Point({"wbinvd_us": w, "n_cpus": n}, [{"clean": N - r, "race": r}]) for (w, n), r in RACES.items()]
    return sr.write_results(tmp_path_factory.mktemp("cap") / "r", pts, sweep="cap")


def _limits(cap) -> dict:
    return {r["wbinvd_us"]: r for r in cap.limits.to_pylist()}


def test_limits_and_statuses_by_hand(naive_dir):
    cap = capacity(connect(naive_dir), TARGET, by=["wbinvd_us"], metric="p_race")
    lim = _limits(cap)
    assert lim[100.0]["max_n_cpus"] == 512 and lim[100.0]["fails_at_n_cpus"] is None
    assert lim[100.0]["status"] == "all pass (largest n_cpus run = 512)"
    # the limit is the last n_cpus before the first failure, even though 512 passes again
    assert lim[1000.0]["max_n_cpus"] == 8 and lim[1000.0]["fails_at_n_cpus"] == 64
    assert lim[1000.0]["status"] == "inconclusive at n_cpus=64: interval spans the target"
    assert lim[10000.0]["max_n_cpus"] == 8 and lim[10000.0]["fails_at_n_cpus"] == 64
    assert lim[10000.0]["status"] == "exceeds at n_cpus=64"
    assert any(n.startswith("2 group(s) pass again at a larger n_cpus") for n in cap.notes), cap.notes
    cells = {(c["wbinvd_us"], c["n_cpus"]): c for c in cap.cells.to_pylist()}
    for key in ((1000.0, 64), (10000.0, 64)):
        c = cells[key]
        lo, hi = count_bounds(RACES[key], N, c.get("method"))
        r = lim[key[0]]
        assert r["fail_p_race"] == RACES[key] / N
        assert (r["fail_p_race_lo"], r["fail_p_race_hi"]) == pytest.approx((lo, hi), rel=1e-9)
    r = lim[1000.0]
    lo, hi = count_bounds(0, N, cells[(1000.0, 8)].get("method"))
    assert (r["p_race"], r["p_race_lo"], r["p_race_hi"], r["trials"]) == (0.0, 0.0, pytest.approx(hi, rel=1e-9), N)


def test_a_bound_exactly_at_the_target_does_not_pass(naive_dir):
    """'Below the target' is strict: a target equal to a cell's upper bound fails that cell."""
    con = connect(naive_dir)
    first = capacity(con, TARGET, by=["wbinvd_us"], metric="p_race")
    hi8 = {(c["wbinvd_us"], c["n_cpus"]): c["p_hi"] for c in first.cells.to_pylist()}[(100.0, 8)]
    at = capacity(con, hi8, by=["wbinvd_us"], metric="p_race")
    lim = _limits(at)
    assert lim[100.0]["max_n_cpus"] is None and lim[100.0]["fails_at_n_cpus"] == 8
    assert not any(r["within_target"] for r in (capacity(con, hi8, by=["wbinvd_us"], metric="p_race", hosts=1.0,
                                                          kexecs_per_host_year=1.0).fleet.to_pylist())
                   if r["wbinvd_us"] == 100.0)


def test_fleet_figures_by_hand(naive_dir):
    """failures/year = p x hosts x kexecs per host-year; its interval from the bounds; within target on the
    upper bound. p from pyarrow over the files, bounds from scratch."""
    hosts, kpy = 2000.0, 12.0
    cap = capacity(connect(naive_dir), TARGET, by=["wbinvd_us"], metric="p_race", hosts=hosts,
                   kexecs_per_host_year=kpy)
    pts = pq.read_table(naive_dir / "points")
    rows = cap.fleet.to_pylist()
    assert len(rows) == len(RACES)
    for r in rows:
        key = (r["wbinvd_us"], r["n_cpus"])
        t = pts.filter(pc.and_(pc.equal(pts["wbinvd_us"], key[0]), pc.equal(pts["n_cpus"], key[1])))
        k, n = pc.sum(t["race"]).as_py(), pc.sum(t["trials"]).as_py()
        lo, hi = count_bounds(k, n, r.get("method"))
        assert r["trials"] == n and r["p_race"] == k / n
        assert r["failures_per_year"] == pytest.approx(k / n * 24_000.0, rel=1e-12, abs=0)
        assert r["failures_per_year_lo"] == pytest.approx(lo * 24_000.0, rel=1e-9, abs=1e-300)
        assert r["failures_per_year_hi"] == pytest.approx(hi * 24_000.0, rel=1e-9)
        assert r["within_target"] is (hi < TARGET)
    assert any("24000 kexecs/year" in n for n in cap.notes)
    # a cell whose estimate is below the target but whose upper bound is not: not within target
    (c,) = [r for r in rows if (r["wbinvd_us"], r["n_cpus"]) == (1000.0, 64)]
    assert c["p_race"] <= TARGET and c["within_target"] is False


# ---- adaptive sweeps: the decided statuses --------------------------------------------------------

RULE = {"metric": "p_race", "target": TARGET, "max_trials": N, "min_trials": 1000}
# (races, trials) per (mitigation, n_cpus, wbinvd_us): wbinvd_us is taken worst case, mitigation is split
# out. early_flush at 64 holds one point above the target (25 in 10,000: lower bound 1.6e-3), one budget
# exhausted (10 in 10,000) and one still open (0 in 500, below min_trials), whose upper bound (~7e-3) is
# the cell's largest: the cell exceeds because a point was decided above, not by the worst point's bound.
ADAPT = {("none", 8, 100.0): (0, N), ("none", 8, 1e4): (0, N), ("none", 64, 100.0): (0, N),
         ("none", 64, 1e4): (10, N), ("early_flush", 8, 100.0): (0, N), ("early_flush", 8, 1e4): (0, N),
         ("early_flush", 64, 100.0): (25, N), ("early_flush", 64, 1e4): (10, N),
         ("early_flush", 64, 1000.0): (0, 500)}


@pytest.fixture(scope="module")
def adaptive_dir(tmp_path_factory) -> Path:
    """A trials = "auto" sweep at its budget (every point has max_trials): 0 races are decided below the
    target, 10 can only span it (budget exhausted), 100 are above it."""
    pts = [sr.Point({"mitigation": m, "n_cpus": n, "wbinvd_us": w}, [{"clean": t - r, "race": r}])
           for (m, n, w), (r, t) in ADAPT.items()]
    d = sr.write_results(tmp_path_factory.mktemp("adapt") / "r", pts, sweep="adapt")
    spec = (d / "spec.toml").read_text().replace(f"trials = {N}", 'trials = "auto"')
    spec += "\n[precision]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in RULE.items())
    (d / "spec.toml").write_text(spec)
    m = json.loads((d / "manifest.json").read_text())
    m["spec_hash"] = hashlib.sha256((d / "spec.toml").read_bytes()).hexdigest()
    (d / "manifest.json").write_text(json.dumps(m, indent=1))
    return d


def test_adaptive_cells_pass_only_when_every_point_is_decided_below(adaptive_dir):
    con = connect(adaptive_dir)
    status = dict(con.execute("SELECT format('{}/{}/{}', mitigation, n_cpus, wbinvd_us), status FROM outcomes")
                  .fetchall())
    assert status["none/64/10000.0"] == "budget exhausted" and status["early_flush/64/100.0"] == "above target"
    assert status["early_flush/64/10000.0"] == "budget exhausted" and status["early_flush/64/1000.0"] == "open"
    assert sum(s == "below target" for s in status.values()) == 5
    cap = capacity(con, TARGET, by=[], metric="p_race")
    assert any("adaptive sweep" in n for n in cap.notes)
    lim = {r["mitigation"]: r for r in cap.limits.to_pylist()}
    # none at 64: one point below, one budget exhausted -> the cell is not shown below the target
    assert lim["none"]["max_n_cpus"] == 8 and lim["none"]["fails_at_n_cpus"] == 64
    assert lim["none"]["status"].startswith("budget exhausted at n_cpus=64")
    # early_flush at 64: one above, one budget exhausted, one open -> above target wins, though the cell's
    # worst point (the open one) has a lower bound of 0
    assert lim["early_flush"]["max_n_cpus"] == 8 and lim["early_flush"]["status"] == "exceeds at n_cpus=64"
    assert lim["early_flush"]["fail_p_race_lo"] == 0.0 and lim["early_flush"]["fail_p_race_hi"] > 5e-3


def test_adaptive_decisions_are_used_only_for_their_own_target(adaptive_dir):
    """At another target the points' decisions say nothing: cells are judged on their intervals (all of
    them far below 0.5 here)."""
    cap = capacity(connect(adaptive_dir), 0.5, by=[], metric="p_race")
    assert not any("adaptive sweep" in n for n in cap.notes)
    for r in cap.limits.to_pylist():
        assert r["max_n_cpus"] == 64 and r["status"] == "all pass (largest n_cpus run = 64)"
