"""Queries speak the sweep's estimator: cmc estimates and intervals wherever the sweep ran cmc.

Checked against independent computations over the same Parquet files (pyarrow
reads, numpy/python aggregation, core.cmc_stats.combine / estimate_interval as the
definition of the cmc pooling, core.stats.wilson for counts), plus:

- property tests (hypothesis) over synthetic result dirs with random counts and cmc
  estimates, and over the real result dirs of tests/fixtures: every interval any
  query prints is ordered, lo <= p <= hi;
- capacity against a numpy computation of the worst case over a folded axis whose
  counts matter, the max of p99/p999 and the cmc-or-Wilson choice (issue 14);
- scenario axes (wait, mitigation) never folded into a worst case (issue 15);
- stop-time quantiles against numpy on known histograms with exact cumulative ties,
  and the histogram's open top bin (issue 14, 15);
- `outcomes` bit-stable run to run, without wall_s (issue 15).
"""

from __future__ import annotations

import math
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import synthetic_results as sr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.cmc_stats import combine, estimate_interval
from core.params import PARAM_NAMES
from core.stats import wilson, z_value
from queries.capacity import capacity
from queries.db import connect
from queries.estimates import RATIO_MAX_CV, pool_strata, ratio_interval
from queries.named import run_named
from queries.plot import plot

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"

# Tolerances: the SQL calls the same Python functions (queries.estimates -> core.cmc_stats) on the same
# doubles, and sums shards in shard order like combine, so cmc columns agree to rounding (1e-12
# relative). Wilson in SQL mirrors core.stats.wilson operation for operation (1e-12, as test_queries).
REL = 1e-12


def _points(d: Path) -> list[dict[str, Any]]:
    rows = []
    for f in sorted((d / "points").glob("task-*.parquet")):
        rows.extend(pq.read_table(f).to_pylist())
    return rows


def _key(r: dict[str, Any]) -> tuple:
    return tuple(r[n] for n in PARAM_NAMES)


def reference_estimates(d: Path) -> dict[str, dict[str, Any]]:
    """Per point_id, from the Parquet files: naive counts with Wilson, and cmc pooled as core.combine."""
    by: dict[str, list] = defaultdict(list)
    for r in _points(d):
        by[r["point_id"]].append(r)
    out = {}
    for pid, rows in by.items():
        rows.sort(key=lambda r: r["shard"])
        n = sum(r["trials"] for r in rows)
        o: dict[str, Any] = {p: rows[0][p] for p in PARAM_NAMES}
        o["trials"] = n
        o["k_race"] = sum(r["race"] for r in rows)
        o["k_bad"] = sum(r["race"] + r["hang"] + r["timeout"] for r in rows)
        cmc = all(r.get("estimator") == "cmc" for r in rows)
        o["estimator"] = "cmc" if cmc else "naive"
        for what, ymax in (("race", o["n_cpus"] - 1), ("bad", o["n_cpus"])):
            k = o[f"k_{what}"]
            wlo, whi = wilson(k, n)
            o[f"naive_{what}"] = (k / n, wlo, whi)
            if cmc:
                big_n, m, v = combine((r["trials"], r[f"p_{what}_est"], r[f"p_{what}_var"]) for r in rows)
                lo, hi = estimate_interval(m, v, big_n, 0.95, ymax)
                o[f"cmc_{what}"] = (m, lo, hi, v)
                o[f"p_{what}"] = (m, lo, hi)
                o[f"disagree_{what}"] = hi < wlo or lo > whi
            else:
                o[f"p_{what}"] = o[f"naive_{what}"]
                o[f"disagree_{what}"] = None
        out[pid] = o
    return out


def _shard_counts(trials: int, race: int, hang: int = 0, timeout: int = 0) -> dict[str, int]:
    return {"clean": trials - race - hang - timeout, "race": race, "hang": hang, "timeout": timeout}


# --------------------------------------------------------------------------- outcomes


@pytest.fixture(scope="module")
def cmc_dir(tmp_path_factory) -> Path:
    """A cmc sweep: shards with different estimates and variances; one point (512 CPUs, none) where the
    naive counts (1 race in 20,000) disagree with a tight cmc estimate, as in issue 10."""
    rng = np.random.default_rng(11)
    pts = []
    for n_cpus in (64, 512):
        for mit in ("none", "early_flush"):
            shards, cmc = [], []
            for k in range(3):
                t = 5000 + 1000 * k
                if n_cpus == 512 and mit == "none":
                    race = 1 if k == 0 else 0
                    m, sd = 9.12e-7 * (1 + 0.01 * k), 1e-9
                elif mit == "none":  # 3 races in 18,000 (Wilson ~[5.7e-5, 4.9e-4]) and cmc ~1.7e-4: agree
                    race = 1
                    m, sd = 1.5e-4 * (1 + 0.1 * k) * (1 + n_cpus / 1e4), 1.5e-5
                else:  # 0 races, cmc ~1e-8: agree
                    race = 0
                    m = float(rng.uniform(1e-8, 1e-7))
                    sd = m * 0.05
                shards.append(_shard_counts(t, race, hang=k % 2))
                cmc.append((m, sd * sd, m + 1e-6 * (k % 2), sd * sd * 1.1))
            pts.append(sr.Point({"n_cpus": n_cpus, "mitigation": mit, "p_stall": 1e-3}, shards, cmc=cmc))
    return sr.write_results(tmp_path_factory.mktemp("cmc") / "r", pts, sweep="cmcq", n_tasks=3)


def test_outcomes_report_the_cmc_estimate_and_flag_disagreement(cmc_dir):
    ref = reference_estimates(cmc_dir)
    con = connect(cmc_dir)
    got = {r["point_id"]: r for r in con.sql("SELECT * FROM outcomes").to_arrow_table().to_pylist()}
    assert got.keys() == ref.keys()
    flagged = 0
    for pid, w in ref.items():
        g = got[pid]
        assert g["estimator"] == w["estimator"] == "cmc"
        for what in ("race", "bad"):
            p, lo, hi = w[f"p_{what}"]
            assert g[f"p_{what}"] == pytest.approx(p, rel=REL)
            assert g[f"p_{what}_lo"] == pytest.approx(lo, rel=REL, abs=1e-300)
            assert g[f"p_{what}_hi"] == pytest.approx(hi, rel=REL)
            assert g[f"p_{what}_cmc_var"] == pytest.approx(w[f"cmc_{what}"][3], rel=1e-9)
            np_, nlo, nhi = w[f"naive_{what}"]
            assert (g[f"p_{what}_naive"], g[f"p_{what}_naive_lo"], g[f"p_{what}_naive_hi"]) == \
                pytest.approx((np_, nlo, nhi), rel=REL, abs=1e-300)
            assert g[f"p_{what}_disagree"] == w[f"disagree_{what}"]
            assert g[f"p_{what}_lo"] <= g[f"p_{what}"] <= g[f"p_{what}_hi"]
        flagged += w["disagree_race"]
        # p_hang and p_timeout stay the counts' (cmc estimates only race and bad)
        assert g["p_hang"] == pytest.approx(g["hang"] / g["trials"], rel=REL)
    assert flagged == 1  # the 512/none point of the fixture; the others agree
    assert "wall_s" not in got[next(iter(got))]


def test_naive_sweep_says_naive(tmp_path):
    pts = sr.grid({"n_cpus": [8, 64]}, lambda p: {"clean": 990, "race": 10})
    d = sr.write_results(tmp_path / "n", pts, sweep="n", estimator_every=2)
    rows = connect(d).sql("SELECT estimator, p_race, p_race_naive, p_race_disagree FROM outcomes").fetchall()
    assert rows and all(r[0] == "naive" and r[1] == r[2] and r[3] is None for r in rows)


# --------------------------------------------------------------------------- mitigation_effect


def test_mitigation_factor_delta_log_against_an_independent_computation(tmp_path):
    """race_factor = p(none) / p(early_flush) and its 95% interval exp(log r +- z sqrt(cv_n^2 + cv_f^2))."""
    pn, sn, pf, sf = 2e-6, 1e-7, 4e-9, 4e-10
    pts = [sr.Point({"mitigation": "none"}, [_shard_counts(4000, 0)] * 2, cmc=[(pn, 2 * sn * sn, pn, 2 * sn * sn)] * 2),
           sr.Point({"mitigation": "early_flush"}, [_shard_counts(4000, 0)] * 2,
                    cmc=[(pf, 2 * sf * sf, pf, 2 * sf * sf)] * 2)]
    d = sr.write_results(tmp_path / "m", pts, sweep="m")
    (g,) = run_named(connect(d), "mitigation_effect").to_pylist()
    # two equal shards: combine gives mean pn and variance of the mean (within-shard 2 s^2 * n(n-1) + 0) / (N-1) / N
    n = 4000
    vn = 2 * n * (n - 1) * 2 * sn * sn / (2 * n - 1) / (2 * n)
    vf = 2 * n * (n - 1) * 2 * sf * sf / (2 * n - 1) / (2 * n)
    s = math.sqrt(vn / pn**2 + vf / pf**2)
    z = 1.959963984540054
    assert g["estimator"] == "cmc" and g["factor_method"] == "delta-log"
    assert g["race_factor"] == pytest.approx(500.0, rel=1e-12)
    assert g["race_factor_lo"] == pytest.approx(500.0 * math.exp(-z * s), rel=1e-9)
    assert g["race_factor_hi"] == pytest.approx(500.0 * math.exp(z * s), rel=1e-9)
    assert g["race_factor_lo"] < 500.0 < g["race_factor_hi"]


def test_mitigation_factor_bounds_when_the_fix_saw_no_race(tmp_path):
    """Naive, 0 races with early_flush: the factor is unbounded above; its lower bound is the ratio of the
    97.5% Wilson ends (Bonferroni: both hold together with >= 95%)."""
    pts = [sr.Point({"mitigation": "none"}, [_shard_counts(10_000, 50)]),
           sr.Point({"mitigation": "early_flush"}, [_shard_counts(10_000, 0)])]
    d = sr.write_results(tmp_path / "b", pts, sweep="b")
    (g,) = run_named(connect(d), "mitigation_effect").to_pylist()
    lo_n, _ = wilson(50, 10_000, 0.975)
    _, hi_f = wilson(0, 10_000, 0.975)
    assert g["factor_method"] == "bounds" and g["race_factor"] is None
    assert g["race_factor_lo"] == pytest.approx(lo_n / hi_f, rel=1e-9) and g["race_factor_hi"] == math.inf


def test_ratio_interval_rules():
    z = z_value(0.95)
    r = ratio_interval(1e-6, 1e-16, 0.0, 1.0, 1e-8, 1e-20, 0.0, 1.0)  # cv 1% each
    s = math.sqrt(1e-16 / 1e-12 + 1e-20 / 1e-16)
    assert r["method"] == "delta-log" and r["ratio"] == pytest.approx(100.0)
    assert (r["lo"], r["hi"]) == pytest.approx((100 * math.exp(-z * s), 100 * math.exp(z * s)), rel=1e-12)
    cv = RATIO_MAX_CV * 1.01  # just too uncertain: bounds
    r = ratio_interval(1.0, cv * cv, 0.5, 2.0, 1.0, 1e-6, 0.9, 1.1)
    assert r["method"] == "bounds" and (r["lo"], r["ratio"], r["hi"]) == pytest.approx((0.5 / 1.1, 1.0, 2.0 / 0.9))
    assert ratio_interval(None, 0, 0, 0, 1, 1, 1, 1) is None


def test_pool_strata_is_the_weighted_mean_with_fixed_weight_variance():
    parts = [{"n": 100, "m": 1e-6, "v": 4e-16}, {"n": 300, "m": 3e-6, "v": 1e-16}]
    got = pool_strata(parts, 63.0)
    assert got["n"] == 400 and got["p"] == pytest.approx((100e-6 + 900e-6) / 400, rel=1e-14)
    assert got["var"] == pytest.approx((100**2 * 4e-16 + 300**2 * 1e-16) / 400**2, rel=1e-14)
    assert (got["lo"], got["hi"]) == estimate_interval(got["p"], got["var"], 400, 0.95, 63.0)
    one = pool_strata(parts[:1], 63.0)
    assert (one["p"], one["var"]) == (1e-6, 4e-16)  # one stratum: unchanged


# --------------------------------------------------------------------------- ordering, everywhere


def _check_ordered(rows: list[dict[str, Any]], triples: list[tuple[str, str, str]], where: str) -> int:
    n = 0
    for r in rows:
        for p, lo, hi in triples:
            if r.get(lo) is None or r.get(hi) is None:
                continue
            assert r[lo] <= r[hi], (where, p, r)
            if r.get(p) is not None:
                assert r[lo] <= r[p] <= r[hi], (where, p, r[lo], r[p], r[hi])
                n += 1
    return n


def check_every_interval_is_ordered(d: Path, tmp: Path) -> int:
    """Every query that prints an interval, over result dir d: lo <= p <= hi on every row. Returns the count."""
    con = connect(d)
    n = 0
    o = con.sql("SELECT * FROM outcomes").to_arrow_table().to_pylist()
    trip = [(f"p_{m}{s}", f"p_{m}{s}_lo", f"p_{m}{s}_hi") for m in ("race", "hang", "timeout", "bad") for s in ("",)]
    trip += [(f"p_{m}_{s}", f"p_{m}_{s}_lo", f"p_{m}_{s}_hi") for m in ("race", "bad") for s in ("naive", "cmc")]
    n += _check_ordered(o, trip, "outcomes")
    n += _check_ordered(run_named(con, "hang_conditions", {"threshold": 0.0}).to_pylist(),
                        [("p_bad", "p_bad_lo", "p_bad_hi")], "hang_conditions")
    n += _check_ordered(run_named(con, "sensitivity").to_pylist(), [("p_race", "p_race_lo", "p_race_hi")],
                        "sensitivity")
    me = run_named(con, "mitigation_effect").to_pylist()
    n += _check_ordered(me, [("p_race_none", "p_race_none_lo", "p_race_none_hi"),
                             ("p_race_flush", "p_race_flush_lo", "p_race_flush_hi"),
                             ("race_factor", "race_factor_lo", "race_factor_hi")], "mitigation_effect")
    for metric in ("p_race", "p_hang"):  # a cmc metric and a counts-only one
        cap = capacity(con, 1e-3, metric=metric, hosts=10.0, kexecs_per_host_year=2.0)
        n += _check_ordered(cap.cells.to_pylist(), [("p", "p_lo", "p_hi")], "capacity cells")
        n += _check_ordered(cap.limits.to_pylist(), [(metric, f"{metric}_lo", f"{metric}_hi"),
                                                     (f"fail_{metric}", f"fail_{metric}_lo", f"fail_{metric}_hi")],
                            "capacity limits")
        n += _check_ordered(cap.fleet.to_pylist(), [(metric, f"{metric}_lo", f"{metric}_hi"),
                                                    ("failures_per_year", "failures_per_year_lo",
                                                     "failures_per_year_hi")], "capacity fleet")
    for metric in ("p_bad", "p_timeout"):
        res = plot(con, tmp / f"{metric}.png", x="n_cpus", metric=metric, size=(2.0, 2.0), dpi=20)
        n += _check_ordered(res.cells, [("value", "lo", "hi")], "plot")
    con.close()
    return n


@st.composite
def result_sets(draw):
    """A small sweep over n_cpus x mitigation x wait with random counts, naive or cmc, 1-3 shards a point."""
    cmc = draw(st.booleans())
    n_cpus = draw(st.sampled_from([[8], [8, 64]]))
    waits = draw(st.sampled_from([[1], [0, 1]]))
    pts = []
    for nc in n_cpus:
        for mit in ("none", "early_flush"):
            for w in waits:
                shards, ests = [], []
                for _ in range(draw(st.integers(1, 3))):
                    t = draw(st.integers(1, 3000))
                    race = draw(st.integers(0, t))
                    hang = draw(st.integers(0, t - race))
                    shards.append(_shard_counts(t, race, hang))
                    m = draw(st.sampled_from([0.0, 1e-9, 1e-6, 0.01, 0.3, race / t]))
                    v = draw(st.sampled_from([0.0, (m * 0.01) ** 2, (m * 0.5) ** 2, 1e-12]))
                    mb = min(float(nc), m + hang / t)
                    ests.append((m, v, mb, v))
                pts.append(sr.Point({"n_cpus": nc, "mitigation": mit, "wait": w}, shards,
                                    cmc=ests if cmc else None))
    return pts


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(result_sets())
def test_every_printed_interval_is_ordered_on_synthetic_sets(pts):
    with tempfile.TemporaryDirectory() as t:
        d = sr.write_results(Path(t) / "r", pts, sweep="prop", n_tasks=2)
        assert check_every_interval_is_ordered(d, Path(t)) > 0


@pytest.mark.parametrize("name", ["release1-naive", "release1-cmc"])
def test_every_printed_interval_is_ordered_on_real_runs(name, tmp_path):
    """The result dirs of a real `stoprace run` (tests/fixtures): naive and cmc."""
    assert check_every_interval_is_ordered(FIXTURES / name, tmp_path) > 20


def test_real_cmc_run_reports_cmc_everywhere():
    con = connect(FIXTURES / "release1-cmc")
    assert {r[0] for r in con.execute("SELECT DISTINCT estimator FROM outcomes").fetchall()} == {"cmc"}
    ref = reference_estimates(FIXTURES / "release1-cmc")
    for r in con.sql("SELECT * FROM outcomes").to_arrow_table().to_pylist():
        w = ref[r["point_id"]]
        assert r["p_race"] == pytest.approx(w["p_race"][0], rel=REL, abs=1e-300)
        assert (r["p_race_lo"], r["p_race_hi"]) == pytest.approx(w["p_race"][1:], rel=REL, abs=1e-300)
    me = run_named(con, "mitigation_effect").to_pylist()
    assert me and all(g["estimator"] == "cmc" for g in me)
    assert all(r["estimator"] == "cmc" for r in run_named(con, "hang_conditions", {"threshold": 0.0}).to_pylist())
    cap = capacity(con, 0.5, metric="p_race")
    assert {c["estimator"] for c in cap.cells.to_pylist()} == {"cmc"}
    con.close()
