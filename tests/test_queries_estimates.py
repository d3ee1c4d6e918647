"""Queries speak the sweep's estimator: cmc estimates and intervals wherever the sweep ran cmc.

Checked against independent computations over the same Parquet files (pyarrow
reads, numpy/python aggregation, core.estimators.cmc.stats.combine / estimate_interval as the
definition of the cmc pooling, precision_helpers.ref_estimate for what each metric's interval is:
Clopper-Pearson from scipy for counts, the Bonferroni sum for p_bad under cmc), plus:

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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.estimators.cmc.stats import combine, estimate_interval
from core.histogram import N_BINS, TOP_EDGE_US, quantile
from core.params import NEUTRAL, PARAM_NAMES
from core.stats import z_value
from queries.capacity import capacity
from queries.db import QueryError, connect
from queries.estimates import RATIO_MAX_CV, pool_strata, ratio_interval
from queries.format import format_cell, render_table
from queries.named import run_named
from queries.plot import plot
from sweeps.cli import main

import synthetic_results as sr
from precision_helpers import cp, ref_estimate

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"

# Tolerances: the SQL calls the same Python functions (queries.estimates -> core.estimators.cmc.stats) on the same
# doubles, and sums shards in shard order like combine, so cmc columns agree to rounding (1e-12
# relative). Exact (Clopper-Pearson) bounds: core.stats against scipy's beta quantiles, 1e-9 (test_stats).
REL = 1e-12
CP_REL = 1e-9


def _points(d: Path) -> list[dict[str, Any]]:
    rows = []
    for f in sorted((d / "points").glob("task-*.parquet")):
        rows.extend(pq.read_table(f).to_pylist())
    return rows


def _key(r: dict[str, Any]) -> tuple:
    return tuple(r.get(n, NEUTRAL.get(n)) for n in PARAM_NAMES)


def reference_estimates(d: Path) -> dict[str, dict[str, Any]]:
    """Per point_id, from the Parquet files: naive counts with exact bounds, cmc pooled as core.combine, and
    every metric as precision_helpers.ref_estimate words it."""
    by: dict[str, list] = defaultdict(list)
    for r in _points(d):
        by[r["point_id"]].append(r)
    out = {}
    for pid, rows in by.items():
        rows.sort(key=lambda r: r["shard"])
        n = sum(r["trials"] for r in rows)
        o: dict[str, Any] = {p: rows[0].get(p, NEUTRAL.get(p)) for p in PARAM_NAMES}  # first-release rows lack later params
        o["trials"] = n
        counts = {c: sum(r[c] for r in rows) for c in ("race", "hang", "timeout")}
        o["k_race"] = counts["race"]
        o["k_bad"] = sum(counts.values())
        cmc = all(r.get("estimator") == "cmc" for r in rows)
        o["estimator"] = "cmc" if cmc else "naive"
        race_cmc = combine((r["trials"], r["p_race_est"], r["p_race_var"]) for r in rows) if cmc else None
        for metric in ("p_race", "p_bad", "p_hang", "p_timeout"):
            o[metric] = ref_estimate(metric, n, counts["race"], counts["hang"], counts["timeout"], race_cmc,
                                     o["n_cpus"], o["wait"], o["p_unresponsive"])
        for what in ("race", "bad"):
            k = o[f"k_{what}"]
            wlo, whi = cp(k, n)
            o[f"naive_{what}"] = (k / n, wlo, whi)
            if cmc:
                big_n, m, v = combine((r["trials"], r[f"p_{what}_est"], r[f"p_{what}_var"]) for r in rows)
                o[f"cmc_{what}"] = (m, v)
                _, lo, hi, _ = o[f"p_{what}"]
                o[f"disagree_{what}"] = hi < wlo or lo > whi
            else:
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
        for metric in ("p_race", "p_bad", "p_hang", "p_timeout"):
            p, lo, hi, method = w[metric]
            assert g[f"{metric}_method"] == method, metric
            assert g[metric] == pytest.approx(p, rel=REL)
            assert g[f"{metric}_lo"] == pytest.approx(lo, rel=CP_REL, abs=1e-300)
            assert g[f"{metric}_hi"] == pytest.approx(hi, rel=CP_REL)
            assert g[f"{metric}_lo"] <= g[metric] <= g[f"{metric}_hi"]
        # 1 hang in every other shard, no timeout: p_bad under cmc is the race part plus that count's part
        assert w["p_bad"][3] == "cmc+counted" and w["p_hang"][3] == "counted"
        for what in ("race", "bad"):
            assert g[f"p_{what}_cmc_var"] == pytest.approx(w[f"cmc_{what}"][1], rel=1e-9)
            np_, nlo, nhi = w[f"naive_{what}"]
            assert (g[f"p_{what}_naive"], g[f"p_{what}_naive_lo"], g[f"p_{what}_naive_hi"]) == \
                pytest.approx((np_, nlo, nhi), rel=CP_REL, abs=1e-300)
            assert g[f"p_{what}_disagree"] == w[f"disagree_{what}"]
        flagged += w["disagree_race"]
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
    97.5% exact ends (scipy; Bonferroni: both hold together with >= 95%)."""
    pts = [sr.Point({"mitigation": "none"}, [_shard_counts(10_000, 50)]),
           sr.Point({"mitigation": "early_flush"}, [_shard_counts(10_000, 0)])]
    d = sr.write_results(tmp_path / "b", pts, sweep="b")
    (g,) = run_named(connect(d), "mitigation_effect").to_pylist()
    lo_n, _ = cp(50, 10_000, 0.975)
    _, hi_f = cp(0, 10_000, 0.975)
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
    assert got["n"] == 400 and got["p"] == pytest.approx((100e-6 + 900e-6) / 400, rel=1e-14, abs=0)
    # abs=0: pytest.approx's default abs=1e-12 would accept any variance of this size
    assert got["var"] == pytest.approx((100**2 * 4e-16 + 300**2 * 1e-16) / 400**2, rel=1e-14, abs=0)
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
    trip += [(f"p_{m}_naive", f"p_{m}_naive_lo", f"p_{m}_naive_hi") for m in ("race", "bad")]
    trip += [("p_race_cmc", "p_race_cmc_lo", "p_race_cmc_hi")]
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
        assert (r["p_race_lo"], r["p_race_hi"]) == pytest.approx(w["p_race"][1:3], rel=REL, abs=1e-300)
        assert (r["p_bad"], r["p_bad_lo"], r["p_bad_hi"]) == pytest.approx(w["p_bad"][:3], rel=CP_REL, abs=1e-300)
    me = run_named(con, "mitigation_effect").to_pylist()
    assert me and all(g["estimator"] == "cmc" for g in me)
    assert all(r["estimator"] == "cmc" for r in run_named(con, "hang_conditions", {"threshold": 0.0}).to_pylist())
    cap = capacity(con, 0.5, metric="p_race")
    assert {c["estimator"] for c in cap.cells.to_pylist()} == {"cmc"}
    con.close()


# --------------------------------------------------------------------------- capacity (issues 14 and 15)


def _fold_counts(p: dict[str, Any]) -> list[dict[str, int]]:
    """Race counts that grow with n_cpus and wbinvd_us (the axis folded into the worst case) and with wait."""
    nc, w = p["n_cpus"], p["wbinvd_us"]
    r = int(nc // 8 * (1 if w < 1000 else 3) * (2 if p["wait"] == 0 else 1) * (0 if p["mitigation"] == "early_flush" else 1))
    big = w >= 1000
    if p["mitigation"] == "early_flush":  # hangs per shard: 0+0 or 0+1
        hangs = [0, int(big)]
    elif nc < 512:  # 1 or 3
        hangs = [int(big), 1 + int(big)]
    else:  # 2 or 6
        hangs = [3, 3] if big else [1, 1]
    return [_shard_counts(20_000, r, hang=h) for h in hangs]


def _fold_cmc(p: dict[str, Any]) -> list[tuple[float, float, float, float]]:
    """cmc estimates far tighter than Wilson (so Wilson-only would change every bound), also growing with
    wbinvd_us; at (512, none, wbinvd 1e4) it disagrees with the counts (0.5x them)."""
    base = p["n_cpus"] * 1e-8 * (1 if p["wbinvd_us"] < 1000 else 5) * (2 if p["wait"] == 0 else 1)
    if p["mitigation"] == "early_flush":
        base *= 1e-3
    out = []
    for k in range(2):
        m = base * (1 + 0.02 * k)
        out.append((m, (0.01 * m) ** 2, m + 1e-5 * (k + 1), (0.01 * m) ** 2 + 1e-14))
    return out


@pytest.fixture(scope="module")
def fold_dir(tmp_path_factory) -> Path:
    axes = {"n_cpus": [8, 64, 512], "wbinvd_us": [100.0, 10_000.0], "wait": [0, 1], "mitigation": ["none", "early_flush"]}
    pts = sr.grid(axes, _fold_counts)
    for pt in pts:
        pt.cmc = _fold_cmc(pt.full_params())
    return sr.write_results(tmp_path_factory.mktemp("fold") / "r", pts, sweep="fold", n_tasks=4)


def reference_capacity(d: Path, metric: str, by: list[str], target: float, where=lambda p: True):
    """Capacity cells and limits from the Parquet files with numpy/python only: per point the estimate of the
    sweep's estimator (cmc: core combine + estimate_interval; counts: Wilson), its p99/p999 from the merged
    histogram; per (by, n_cpus) cell the point with the largest upper bound and the largest p99/p999."""
    rows = [r for r in _points(d) if where(r)]
    by_point: dict[str, list] = defaultdict(list)
    for r in rows:
        by_point[r["point_id"]].append(r)
    cells: dict[tuple, list] = defaultdict(list)
    for rs in by_point.values():
        p0 = rs[0]
        n = sum(r["trials"] for r in rs)
        cmc = all(r.get("estimator") == "cmc" for r in rs)
        race_cmc = combine((r["trials"], r["p_race_est"], r["p_race_var"]) for r in rs) if cmc else None
        c = {o: sum(r[o] for r in rs) for o in ("race", "hang", "timeout")}
        p, lo, hi, method = ref_estimate(metric, n, c["race"], c["hang"], c["timeout"], race_cmc, p0["n_cpus"],
                                         p0["wait"], p0.get("p_unresponsive", 0.0))
        est = (p, lo, hi, "cmc" if cmc else "naive", method)
        hist = np.sum([np.asarray(r["t_done_hist"]) for r in rs], axis=0)
        t_max = max(r["t_done_max_us"] for r in rs)
        cells[(*(p0[a] for a in by), p0["n_cpus"])].append(
            {"p": est[0], "lo": est[1], "hi": est[2], "estimator": est[3], "method": est[4],
             "p99": quantile(hist, 0.99, t_max), "p999": quantile(hist, 0.999, t_max)})
    out = {}
    for key, pts in cells.items():
        his = np.array([x["hi"] for x in pts])
        w = pts[int(np.argmax(his))]
        out[key] = {"p": w["p"], "p_lo": w["lo"], "p_hi": float(his.max()), "estimator": w["estimator"],
                    "method": w["method"],
                    "points": len(pts), "t_p99_us": float(np.max([x["p99"] for x in pts])),
                    "t_p999_us": float(np.max([x["p999"] for x in pts]))}
    limits = {}
    for key in sorted(out):
        g = key[:-1]
        ok = limits.setdefault(g, {"max": None, "failed": False})
        if not ok["failed"] and out[key]["p_hi"] < target:
            ok["max"] = key[-1]
        else:
            ok["failed"] = True
    return out, {g: v["max"] for g, v in limits.items()}


@pytest.mark.parametrize("metric, target", [("p_race", 1e-6), ("p_bad", 3e-4), ("p_hang", 2.5e-4)])
def test_capacity_against_an_independent_worst_case(fold_dir, metric, target):
    """The folded axis (wbinvd_us) changes every count and estimate, so best instead of worst case, summed
    instead of maxed p99/p999, or Wilson instead of the cmc interval each give other numbers here."""
    con = connect(fold_dir)
    cap = capacity(con, target, by=[], metric=metric)
    assert cap.split_out == ["wait", "mitigation"] and cap.by == ["wait", "mitigation"]
    assert cap.worst_over == ["wbinvd_us"]
    want, limits = reference_capacity(fold_dir, metric, ["wait", "mitigation"], target)
    got = {(c["wait"], c["mitigation"], c["n_cpus"]): c for c in cap.cells.to_pylist()}
    assert got.keys() == want.keys() and len(got) == 12
    for key, w in want.items():
        g = got[key]
        assert g["points"] == w["points"] == 2
        assert g["estimator"] == w["estimator"] == "cmc"
        assert g["method"] == w["method"] == {"p_race": "cmc", "p_bad": "cmc+counted", "p_hang": "counted"}[metric]
        # same doubles through the same cmc functions (1e-12), exact bounds against scipy (1e-9)
        assert (g["p"], g["p_lo"], g["p_hi"]) == pytest.approx((w["p"], w["p_lo"], w["p_hi"]), rel=CP_REL, abs=1e-300)
        # quantiles: SQL vs core.histogram.quantile on the same merged bins (1e-12, as test_queries)
        assert g["t_p99_us"] == pytest.approx(w["t_p99_us"], rel=1e-12)
        assert g["t_p999_us"] == pytest.approx(w["t_p999_us"], rel=1e-12)
    lim = {(r["wait"], r["mitigation"]): r["max_n_cpus"] for r in cap.limits.to_pylist()}
    assert lim == limits
    assert len(set(lim.values())) > 1  # the target separates the groups: a wrong bound moves a limit
    con.close()


def test_capacity_splits_scenario_axes_or_takes_them_fixed(fold_dir):
    con = connect(fold_dir)
    c = capacity(con, 1e-6, by=["wbinvd_us"], metric="p_race")
    assert c.by == ["wbinvd_us", "wait", "mitigation"] and c.split_out == ["wait", "mitigation"]
    assert c.worst_over == [] and any("split out wait, mitigation" in n for n in c.notes)
    c = capacity(con, 1e-6, by=[], metric="p_race", where="wait = 1")
    assert c.by == ["mitigation"] and c.worst_over == ["wbinvd_us"] and c.where == "wait = 1"
    want, limits = reference_capacity(fold_dir, "p_race", ["mitigation"], 1e-6, where=lambda r: r["wait"] == 1)
    got = {(r["mitigation"], r["n_cpus"]): r for r in c.cells.to_pylist()}
    assert got.keys() == want.keys()
    for key, w in want.items():
        assert got[key]["p_hi"] == pytest.approx(w["p_hi"], rel=1e-12)
    # the kexec path (wait = 1) and the fix: early_flush supports every n_cpus run, none does not
    lim = {(r["mitigation"],): r["max_n_cpus"] for r in c.limits.to_pylist()}
    assert lim == limits and lim[("early_flush",)] == 512 and lim[("none",)] != 512
    # a marked axis is split out too
    c = capacity(con, 1e-6, by=[], metric="p_race", split=["wbinvd_us"])
    assert c.worst_over == [] and c.split_out == ["wbinvd_us", "wait", "mitigation"]
    for bad, msg in (({"split": ["n_cpus"]}, "n_cpus"), ({"split": ["wbinvd"]}, "did you mean 'wbinvd_us'"),
                     ({"where": "nope = 1"}, "bad --where"), ({"where": "n_cpus > 9999"}, "no points")):
        with pytest.raises(QueryError, match=msg):
            capacity(con, 1e-6, **bad)
    con.close()


def test_cli_capacity_where_and_split(capsys, fold_dir):
    rc = main(["capacity", str(fold_dir), "--target-p", "1e-6", "--metric", "p_race", "--where", "wait = 1",
               "--by", "wbinvd_us"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "where wait = 1" in out and "split out mitigation" in out and "method: cmc: 95% bounds" in out
    rc = main(["capacity", str(fold_dir), "--target-p", "1e-6", "--by", "wait", "--split", "wbinvd_us"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "split out wbinvd_us, mitigation" in out and "worst case over" not in out
    rc = main(["capacity", str(fold_dir), "--target-p", "1e-6", "--split", "n_cpus"])
    out, err = capsys.readouterr()
    assert rc == 2 and err.count("\n") == 1 and "n_cpus" in err


def test_cli_plot_names_the_estimator(capsys, fold_dir, tmp_path):
    f = tmp_path / "p.png"
    assert main(["plot", str(fold_dir), "--x", "n_cpus", "--metric", "p_race", "--where", "wait = 1",
                 "--size", "3x2", "--dpi", "30", "-o", str(f)]) == 0
    assert "of p_race (cmc estimate)" in capsys.readouterr().out
    assert main(["plot", str(fold_dir), "--x", "n_cpus", "--metric", "p_hang", "--size", "3x2", "--dpi", "30",
                 "-o", str(f)]) == 0
    assert "of p_hang (naive estimate)" in capsys.readouterr().out


def test_capacity_reports_disagreement_with_the_cmc_numbers(tmp_path):
    """Issue 10: 1 race in 20,000 (Wilson [8.8e-6, 2.8e-4]) beside cmc 9.12e-7 +- 1e-9: the row shows the
    cmc estimate with its own interval (ordered), flagged, not the empty intersection."""
    pts = [sr.Point({"n_cpus": 64}, [_shard_counts(10_000, 1), _shard_counts(10_000, 0)],
                    cmc=[(9.12e-7, 1e-18, 9.12e-7, 1e-18)] * 2)]
    d = sr.write_results(tmp_path / "d", pts, sweep="d")
    c = capacity(connect(d), 1e-6, metric="p_race")
    (cell,) = c.cells.to_pylist()
    assert cell["estimator"] == "cmc" and cell["disagree"] is True
    assert cell["p"] == pytest.approx(9.12e-7) and cell["p_lo"] <= cell["p"] <= cell["p_hi"] < 1e-6
    (lim,) = c.limits.to_pylist()
    assert lim["disagree"] is True and lim["max_n_cpus"] == 64
    assert any("disagree" in n for n in c.notes)


# --------------------------------------------------------------------------- sensitivity and wait


def test_sensitivity_never_holds_wait_at_a_median(fold_dir):
    t = run_named(connect(fold_dir), "sensitivity").to_pylist()
    assert t and not any("wait=" in r["held"] or "mitigation=" in r["held"] for r in t)
    n_cpus_rows = [r for r in t if r["axis"] == "n_cpus"]
    # one curve per scenario: 2 wait x 2 mitigation, 3 n_cpus values each
    assert sorted({r["scenario"] for r in n_cpus_rows}) == [
        "wait=0 mitigation=early_flush", "wait=0 mitigation=none", "wait=1 mitigation=early_flush",
        "wait=1 mitigation=none"]
    assert len(n_cpus_rows) == 12 and {r["estimator"] for r in t} == {"cmc"}
    ref = reference_estimates(fold_dir)
    for r in n_cpus_rows:  # held at wbinvd_us = 100 (lower middle of [100, 1e4]); the row's point's cmc estimate
        sc = dict(kv.split("=") for kv in r["scenario"].split())
        (w,) = [o for o in ref.values() if o["n_cpus"] == int(r["value"]) and o["wbinvd_us"] == 100.0
                and o["wait"] == int(sc["wait"]) and o["mitigation"] == sc["mitigation"]]
        assert (r["p_race"], r["p_race_lo"], r["p_race_hi"]) == pytest.approx(w["p_race"][:3], rel=1e-12)
        assert r["method"] == w["p_race"][3] == "cmc"
    # a user-marked axis too
    t = run_named(connect(fold_dir), "sensitivity", {"split": "wait,mitigation,wbinvd_us"}).to_pylist()
    assert not any("wbinvd_us=" in r["held"] for r in t)


# --------------------------------------------------------------------------- stop-time quantiles (issues 14 and 15)


def _samples(h: np.ndarray) -> np.ndarray:
    """The stop times a histogram stands for under log-linear interpolation: bin b's h values at
    10^((b + i/h) / 16), i = 1..h (evenly spread, the last at the bin's upper edge)."""
    out = [10.0 ** ((b + (np.arange(1, c + 1) / c)) / 16.0) for b, c in enumerate(h) if c]
    return np.concatenate(out)


def _known_histograms() -> list[np.ndarray]:
    """Totals of 1000 or 2000 trials, so q * total is a whole number for q = 0.5, 0.99, 0.999 and the
    quantile is an order statistic of _samples (numpy's inverted_cdf), exactly. Exact cumulative ties
    (the target equals a bin's cumulative count) followed by empty bins, where the answer is the tied
    bin's upper edge, not the next non-empty bin's lower edge."""
    hs = []
    h = np.zeros(N_BINS, np.int64)
    h[[10, 20]] = [500, 500]             # p50 tie at bin 10, empty bins 11..19 after it
    hs.append(h)
    h = np.zeros(N_BINS, np.int64)
    h[[30, 50, 70]] = [990, 9, 1]        # p99 tie at 30, p999 tie at 50
    hs.append(h)
    h = np.zeros(N_BINS, np.int64)
    h[[40, 41, 60]] = [300, 698, 2]      # inside bins: interpolation matters
    hs.append(h)
    rng = np.random.default_rng(5)
    for total in (1000, 2000, 2000, 1000):
        idx = np.sort(rng.choice(np.arange(5, 120), size=int(rng.integers(2, 9)), replace=False))
        h = np.zeros(N_BINS, np.int64)
        h[idx] = rng.multinomial(total - idx.size, np.full(idx.size, 1 / idx.size)) + 1
        hs.append(h)
    return hs


QS = ((0.5, "t_p50_us"), (0.99, "t_p99_us"), (0.999, "t_p999_us"))


def test_python_quantile_against_numpy_on_known_histograms():
    for h in _known_histograms():
        s = _samples(h)
        for q, _ in QS:
            want = float(np.quantile(s, q, method="inverted_cdf"))
            # the same doubles (b + i/h) raised to the same power: equal up to rounding, 1e-12 (a bin is 15%)
            assert quantile(h, q, float(s.max())) == pytest.approx(want, rel=1e-12), (q, np.flatnonzero(h))


def test_sql_quantiles_against_numpy_on_known_histograms(tmp_path):
    hs = _known_histograms()
    pts = []
    for i, h in enumerate(hs):
        a = h // 3
        pts.append(sr.Point({"n_cpus": 2 + i}, [{"clean": int(a.sum())}, {"clean": int((h - a).sum())}],
                            hists=[a, h - a], t_max=[float(_samples(h).max())] * 2))
    d = sr.write_results(tmp_path / "q", pts, sweep="q", n_tasks=3)
    con = connect(d)
    got = {r["n_cpus"]: r for r in con.sql("SELECT * FROM outcomes").to_arrow_table().to_pylist()}
    st_ = {r["n_cpus"]: r for r in run_named(con, "stop_time").to_pylist()}
    for i, h in enumerate(hs):
        s = _samples(h)
        for q, col in QS:
            want = float(np.quantile(s, q, method="inverted_cdf"))
            assert got[2 + i][col] == pytest.approx(want, rel=1e-12), (i, col)
            assert st_[2 + i][col] == pytest.approx(want, rel=1e-12), (i, col)


def test_quantile_in_the_open_top_bin_is_not_a_clamped_value(tmp_path):
    """Every stop time above 1e8 us: the quantiles are unresolved (+inf, shown '>= 8.66e7'), never a value
    below the times seen; below 1e8 the top bin is an ordinary bin."""
    h = np.zeros(N_BINS, np.int64)
    h[127] = 40
    assert quantile(h, 0.5, 3e8) == math.inf and quantile(h, 0.5) == math.inf
    assert quantile(h, 0.5, 9e7) == pytest.approx(min(10 ** (127.5 / 16), 9e7))
    pts = [sr.Point({"n_cpus": 8}, [{"clean": 40}], hists=[h], t_max=[3e8]),
           sr.Point({"n_cpus": 16}, [{"clean": 40}], hists=[h], t_max=[9e7])]
    d = sr.write_results(tmp_path / "top", pts, sweep="top")
    con = connect(d)
    got = {r["n_cpus"]: r for r in con.sql("SELECT * FROM outcomes").to_arrow_table().to_pylist()}
    assert [got[8][c] for _, c in QS] == [math.inf] * 3
    assert got[16]["t_p50_us"] == pytest.approx(quantile(h, 0.5, 9e7), rel=1e-12)
    assert TOP_EDGE_US < got[16]["t_p50_us"] <= 9e7
    st_ = {r["n_cpus"]: r for r in run_named(con, "stop_time").to_pylist()}
    assert st_[8]["t_p99_us"] == math.inf
    assert format_cell("t_p50_us", math.inf) == ">= 8.66e7" and TOP_EDGE_US == pytest.approx(8.66e7, rel=1e-3)
    assert ">= 8.66e7" in render_table(con.sql("SELECT t_p50_us FROM outcomes WHERE n_cpus = 8").to_arrow_table())


def test_simulate_prints_no_quantile_below_1e8_when_every_stop_is_above(capsys):
    assert main(["simulate", "--wbinvd-us", "3e8", "--trials", "300"]) == 0
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if x.startswith("stop time")]
    words = line.split()
    for q in ("p50", "p99", "p999"):
        v = words[words.index(q) + 1]
        assert v == ">=" and words[words.index(q) + 2] == "8.66e7", line
    assert float(words[words.index("max") + 1].replace(",", "")) > 1e8


# --------------------------------------------------------------------------- bit-stable outcomes (issue 15)


def test_outcomes_are_the_same_bytes_run_to_run(tmp_path, capsys):
    """Many shards of few points spread over many files, so DuckDB's threads merge partial sums in varying
    order: `select * from outcomes order by all` must not change in a single bit."""
    rng = np.random.default_rng(9)
    pts = []
    for nc in (8, 64, 512):
        shards = [_shard_counts(int(rng.integers(500, 5000)), int(rng.integers(0, 5)), int(rng.integers(0, 3)))
                  for _ in range(300)]
        cmc = [(float(rng.uniform(0, 1e-3)), float(rng.uniform(0, 1e-9)), float(rng.uniform(0, 1e-2)),
                float(rng.uniform(0, 1e-8))) for _ in shards]
        pts.append(sr.Point({"n_cpus": nc}, shards, cmc=cmc))
    d = sr.write_results(tmp_path / "bits", pts, sweep="bits", n_tasks=48,
                         extra_points_columns={"preflush_sum_us": lambda r: float(rng.uniform(1, 1e6))})
    outs = []
    for _ in range(6):
        con = connect(d, threads=4)
        t = con.sql("SELECT * FROM outcomes ORDER BY ALL").to_arrow_table()
        con.close()
        outs.append([[float(x).hex() if isinstance(x, float) else repr(x) for x in col.to_pylist()] for col in t.columns])
    assert all(o == outs[0] for o in outs[1:])
    assert "wall_s" not in t.column_names
    csv = []
    for _ in range(2):
        assert main(["query", str(d), "--sql", "select * from outcomes order by all", "--format", "csv"]) == 0
        csv.append(capsys.readouterr().out)
    assert csv[0] == csv[1] and len(csv[0].splitlines()) == 4
