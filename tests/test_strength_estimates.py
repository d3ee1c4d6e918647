"""Estimates, pooling and intervals, test strength (issue 23 item 5): the cmc estimate's pooling over
shards (core.estimators.cmc.stats.combine, CmcSummary) and over sweeps (queries.estimates.pool_strata),
its interval (estimate_interval), and mitigation_effect's factor and bounds (ratio_interval and the SQL).

References are independent of the code under test: NumPy over the same per-trial values (one pass over
all of them is what pooling must equal), SciPy's normal and beta quantiles (the CLT interval and the
exact bound of 0 events, Clopper-Pearson: 1 - (0.025)^(1/n) = beta.ppf(0.975, 1, n)), hand formulas
for the log-scale ratio interval and its Bonferroni fallback, and pyarrow sums and hand-chosen
histograms for the stop-time columns of mitigation_effect. Tolerances: 1e-12 relative where the same
doubles go through a few operations in another order, 1e-9 where a variance is re-derived.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from scipy import stats

from core.estimators.cmc.stats import CmcBatch, CmcSummary, combine, estimate_interval
from queries.db import connect
from queries.estimates import pool_shards, pool_strata, ratio_interval
from queries.named import run_named

import synthetic_results as sr

Z975 = float(stats.norm.ppf(0.975))  # two-sided 95%
Z9875 = float(stats.norm.ppf(0.9875))  # two-sided 97.5%


def exact_zero_bound(n: int) -> float:
    """Clopper-Pearson upper bound of 0 events in n trials at one-sided 97.5% (a two-sided 95% interval)."""
    return float(stats.beta.ppf(0.975, 1, n))


# ---- pooling over shards: combine and CmcSummary against numpy over all per-trial values ----------


def _shards(rng: np.random.Generator) -> list[np.ndarray]:
    """Per-trial values of three shards of different sizes, means and spreads (race-like: mostly 0)."""
    out = []
    for n, scale in ((50, 1e-4), (300, 3e-3), (7, 0.2)):
        y = rng.exponential(scale, n) * (rng.random(n) < 0.3)
        out.append(y)
    return out


def test_combine_equals_one_pass_over_all_trials():
    y = _shards(np.random.default_rng(4))
    parts = [(len(s), float(s.mean()), float(s.var(ddof=1)) / len(s)) for s in y]
    allv = np.concatenate(y)
    n, m, v = combine(parts)
    assert n == allv.size
    assert m == pytest.approx(float(allv.mean()), rel=1e-12)
    assert v == pytest.approx(float(allv.var(ddof=1)) / allv.size, rel=1e-9, abs=0)


def test_combine_of_equal_means_and_zero_spread_has_zero_variance_and_not_otherwise():
    """Shards of constant values: the pooled variance is the between-shard part only."""
    parts = [(10, 0.5, 0.0), (30, 0.1, 0.0)]
    allv = np.concatenate([np.full(10, 0.5), np.full(30, 0.1)])
    n, m, v = combine(parts)
    assert (n, m) == (40, pytest.approx(0.2, rel=1e-12))
    assert v == pytest.approx(float(allv.var(ddof=1)) / 40, rel=1e-12, abs=0) and v > 0


def test_cmc_summary_over_chunks_equals_numpy():
    y = _shards(np.random.default_rng(5))
    s = CmcSummary()
    for c in y:
        i = np.zeros(len(c), np.int32)
        s.add(CmcBatch(c, c * 2, c, i, i - 1, 64))
    allv = np.concatenate(y)
    assert s.n == allv.size
    assert s.mean_race == pytest.approx(float(allv.mean()), rel=1e-12)
    assert s.var_race == pytest.approx(float(allv.var(ddof=1)) / allv.size, rel=1e-9, abs=0)
    assert s.mean_bad == pytest.approx(2 * float(allv.mean()), rel=1e-12)
    assert s.var_bad == pytest.approx(4 * float(allv.var(ddof=1)) / allv.size, rel=1e-9, abs=0)


# ---- the interval ---------------------------------------------------------------------------------


def test_clt_interval_is_mean_plus_minus_z_sd():
    lo, hi = estimate_interval(1e-3, 1e-8, 1000, 0.95, 63.0)
    assert (lo, hi) == pytest.approx((1e-3 - Z975 * 1e-4, 1e-3 + Z975 * 1e-4), rel=1e-12)
    lo, hi = estimate_interval(1e-3, 1e-8, 1000, 0.975, 63.0)
    assert (lo, hi) == pytest.approx((1e-3 - Z9875 * 1e-4, 1e-3 + Z9875 * 1e-4), rel=1e-12)


def test_all_zero_sample_is_bounded_like_zero_events():
    """E[Y] of an event probability from n values all 0: the exact bound of 0 events in n trials (not y_max times it)."""
    for n in (10, 1000, 10**6):
        lo, hi = estimate_interval(0.0, 0.0, n, 0.95, 63.0)
        assert lo == 0.0 and hi == pytest.approx(exact_zero_bound(n), rel=1e-9)
    # an expected count (no event bound): the values never seen may be as large as y_max
    _, hi = estimate_interval(0.0, 0.0, 1000, 0.95, 63.0, event_bound=False)
    assert hi == pytest.approx(63.0 * exact_zero_bound(1000), rel=1e-9)


def test_constant_sample_interval_by_hand():
    """All n values equal v > 0 (a forced case): E[Y] in [v (1 - q), v + (y_max - v) q], q the 0-event bound.
    Zero variance must not give the zero-width CLT interval."""
    n, v, ymax = 400, 0.25, 8.0
    q = exact_zero_bound(n)
    lo, hi = estimate_interval(v, 0.0, n, 0.95, ymax)
    # rel 1e-8: both ends move out by the FP_REL = 1e-9 relative floor
    assert lo == pytest.approx(v * (1 - q), rel=1e-8) and hi == pytest.approx(v + (ymax - v) * q, rel=1e-8)
    assert hi - lo > 0.1 * v


def test_cmc_summary_bounds_bad_by_n_cpus_and_treats_both_as_events():
    """bad values lie in [0, n_cpus] (race in [0, n_cpus - 1]); an all-zero bad sample is an event bound."""
    n = 500
    q = exact_zero_bound(n)
    c = np.full(n, 0.5)
    i = np.zeros(n, np.int32)
    s = CmcSummary().add(CmcBatch(c, c, c, i, i - 1, 16))
    assert s.interval("bad")[1] == pytest.approx(0.5 + (16 - 0.5) * q, rel=1e-9)
    assert s.interval("race")[1] == pytest.approx(0.5 + (15 - 0.5) * q, rel=1e-9)
    z = np.zeros(n)
    s0 = CmcSummary().add(CmcBatch(z, z, z, i, i - 1, 16))
    assert s0.interval("bad") == pytest.approx((0.0, q), rel=1e-9)
    assert s0.interval("race") == pytest.approx((0.0, q), rel=1e-9)


# ---- pooling over sweeps ----------------------------------------------------------------------------


def test_pool_strata_weighted_mean_against_hand_values():
    parts = [{"n": 1000, "m": 1e-6, "v": 1e-16}, {"n": 3000, "m": 5e-6, "v": 4e-16}]
    got = pool_strata(parts, 63.0)
    m = (1000 * 1e-6 + 3000 * 5e-6) / 4000
    v = (1000**2 * 1e-16 + 3000**2 * 4e-16) / 4000**2
    assert got["p"] == pytest.approx(m, rel=1e-12) and got["var"] == pytest.approx(v, rel=1e-12, abs=0)
    assert (got["lo"], got["hi"]) == pytest.approx((m - Z975 * math.sqrt(v), m + Z975 * math.sqrt(v)), rel=1e-9)


def test_a_part_without_variance_is_unknown_not_zero():
    """A stratum (or shard) whose variance is missing makes the pooled variance unknown: the interval is
    then the wide no-variance one (values never seen in [0, y_max]), never the other strata's narrow CLT one."""
    n, m, ymax = 200, 1e-3, 63.0
    parts = [{"n": 100, "m": m, "v": None}, {"n": 100, "m": m, "v": 1e-10}]
    q = exact_zero_bound(n)
    for got in (pool_strata(parts, ymax), pool_shards(parts, ymax)):
        assert got["n"] == n and got["p"] == pytest.approx(m, rel=1e-12)
        assert not math.isfinite(got["var"])
        assert got["hi"] == pytest.approx(m + (ymax - m) * q, rel=1e-9)


# ---- mitigation_effect's factor: ratio_interval -----------------------------------------------------


def test_delta_log_at_the_largest_allowed_cv():
    """cv exactly RATIO_MAX_CV (0.25) on both sides still uses the log-scale interval: exp(+-z sqrt(2 / 16))."""
    r = ratio_interval(1.0, 0.0625, 0.4, 1.6, 1.0, 0.0625, 0.4, 1.6)
    s = math.sqrt(0.0625 + 0.0625)
    assert r["method"] == "delta-log" and r["ratio"] == 1.0
    assert (r["lo"], r["hi"]) == pytest.approx((math.exp(-Z975 * s), math.exp(Z975 * s)), rel=1e-12)


def test_delta_log_uses_both_sides_at_95():
    pn, vn, pf, vf = 3e-5, (0.1 * 3e-5) ** 2, 2e-8, (0.2 * 2e-8) ** 2
    r = ratio_interval(pn, vn, 0.0, 1.0, pf, vf, 0.0, 1.0)
    s = math.sqrt(0.1**2 + 0.2**2)
    assert r["method"] == "delta-log" and r["ratio"] == pytest.approx(1500.0, rel=1e-12)
    assert (r["lo"], r["hi"]) == pytest.approx((1500 * math.exp(-Z975 * s), 1500 * math.exp(Z975 * s)), rel=1e-12)


def test_an_uncertain_denominator_falls_back_to_bounds():
    r = ratio_interval(1.0, 1e-6, 0.9, 1.1, 1.0, 0.3**2, 0.5, 2.0)  # denominator cv 30%
    assert r["method"] == "bounds" and (r["lo"], r["ratio"], r["hi"]) == pytest.approx((0.9 / 2.0, 1.0, 1.1 / 0.5))


def test_a_side_with_zero_variance_falls_back_to_bounds():
    """A zero variance is no variance (an all-equal sample): the log-scale interval would have zero width."""
    r = ratio_interval(2e-6, 0.0, 1e-6, 4e-6, 1e-8, 1e-20, 5e-9, 2e-8)
    assert r["method"] == "bounds"
    assert (r["lo"], r["ratio"], r["hi"]) == pytest.approx((1e-6 / 2e-8, 200.0, 4e-6 / 5e-9), rel=1e-12)


def test_bounds_with_a_zero_lower_denominator_are_unbounded_above():
    r = ratio_interval(5e-3, 2.5e-7, 3e-3, 8e-3, 0.0, 0.0, 0.0, 3.7e-4)
    assert r["method"] == "bounds" and r["ratio"] is None
    assert r["lo"] == pytest.approx(3e-3 / 3.7e-4, rel=1e-12) and r["hi"] == math.inf


# ---- mitigation_effect's rows --------------------------------------------------------------------------


def _hist(b: int, h: int) -> list[int]:
    out = [0] * 128
    out[b] = h
    return out


def _pt(n_cpus: int, mit: str, race: int, b: int, trials: int = 1000, cmc=None) -> sr.Point:
    """One shard, all finite stop times in histogram bin b, largest just under the bin's top edge."""
    return sr.Point({"n_cpus": n_cpus, "mitigation": mit}, [{"clean": trials - race, "race": race}],
                    hists=[_hist(b, trials)], t_max=[10 ** ((b + 1) / 16) * (1 - 1e-9)], cmc=cmc)


def test_mitigation_effect_pairs_and_stop_time_changes_by_hand(tmp_path):
    """Pairs (8, none)-(8, early_flush) and (512, ...): the flush side's stop times are its own, the changes
    are flush minus none. Means from the Parquet files (pyarrow), p99 by hand: one bin b holding every stop
    time, so the 99% point is 10^((b + 0.99) / 16)."""
    bins = {(8, "none"): 50, (8, "early_flush"): 53, (512, "none"): 60, (512, "early_flush"): 58}
    races = {(8, "none"): 40, (8, "early_flush"): 4, (512, "none"): 90, (512, "early_flush"): 9}
    d = sr.write_results(tmp_path / "m", [_pt(n, m, races[n, m], b) for (n, m), b in bins.items()], sweep="m")
    pts = pq.read_table(d / "points")
    mean = {}
    for n, m in bins:
        t = pts.filter(pc.and_(pc.equal(pts["n_cpus"], n), pc.equal(pts["mitigation"], m)))
        mean[n, m] = pc.sum(t["t_done_sum_us"]).as_py() / (pc.sum(t["trials"]).as_py() - pc.sum(t["hang"]).as_py())
    rows = run_named(connect(d), "mitigation_effect").to_pylist()
    assert len(rows) == 2
    by = {r["differs"]: r for r in rows}
    for n in (8, 512):
        r = by[f"n_cpus={n}"]
        assert r["p_race_none"] == races[n, "none"] / 1000 and r["p_race_flush"] == races[n, "early_flush"] / 1000
        assert r["race_factor"] == pytest.approx(races[n, "none"] / races[n, "early_flush"], rel=1e-12)
        assert r["race_factor_lo"] < r["race_factor"] < r["race_factor_hi"]
        assert r["t_mean_none_us"] == pytest.approx(mean[n, "none"], rel=1e-12)
        assert r["t_mean_flush_us"] == pytest.approx(mean[n, "early_flush"], rel=1e-12)
        assert r["t_mean_change_us"] == pytest.approx(mean[n, "early_flush"] - mean[n, "none"], rel=1e-9)
        p99n, p99f = (10 ** ((bins[n, m] + 0.99) / 16) for m in ("none", "early_flush"))
        assert (r["t_p99_none_us"], r["t_p99_flush_us"]) == pytest.approx((p99n, p99f), rel=1e-12)
        assert r["t_p99_change_us"] == pytest.approx(p99f - p99n, rel=1e-9)
        assert r["disagree"] is False


def test_mitigation_effect_flags_disagreement_on_either_side_and_uses_the_cmc_factor(tmp_path):
    """none: 1 race in 20,000 counted (interval far above 1e-6) beside a cmc estimate 9.12e-7 +- 1e-9: its
    sides disagree; early_flush: 0 races and cmc 1e-9 agree. One side disagreeing flags the pair. The factor
    is the cmc ratio with the log-scale interval (one shard: the pooled variance is the shard's)."""
    pn, vn, pf, vf = 9.12e-7, 1e-18, 1e-9, (5e-11) ** 2
    pts = [_pt(64, "none", 1, 40, 20_000, cmc=[(pn, vn, pn, vn)]),
           _pt(64, "early_flush", 0, 40, 20_000, cmc=[(pf, vf, pf, vf)])]
    d = sr.write_results(tmp_path / "c", pts, sweep="c")
    (r,) = run_named(connect(d), "mitigation_effect").to_pylist()
    assert r["estimator"] == "cmc" and r["disagree"] is True
    s = math.sqrt(vn / pn**2 + vf / pf**2)
    assert r["factor_method"] == "delta-log" and r["race_factor"] == pytest.approx(pn / pf, rel=1e-12)
    assert (r["race_factor_lo"], r["race_factor_hi"]) == pytest.approx(
        (pn / pf * math.exp(-Z975 * s), pn / pf * math.exp(Z975 * s)), rel=1e-9)


def test_mitigation_effect_bounds_use_97_5_percent_sides(tmp_path):
    """Naive, 0 races with early_flush: lo = (none's lower end) / (flush's upper end) at 97.5% each. The
    flush side's upper end of 0 in n is the exact 0-event bound at 98.75% one-sided or, for Wilson,
    z^2 / (n + z^2) at z(0.9875): the factor's lower bound must be below the one from 95% sides."""
    pts = [_pt(8, "none", 50, 40, 10_000), _pt(8, "early_flush", 0, 40, 10_000)]
    d = sr.write_results(tmp_path / "b", pts, sweep="b")
    (r,) = run_named(connect(d), "mitigation_effect").to_pylist()
    assert r["factor_method"] == "bounds" and r["race_factor"] is None and r["race_factor_hi"] == math.inf
    n = 10_000
    wilson_hi0 = Z9875**2 / (n + Z9875**2)
    cp_hi0 = float(stats.beta.ppf(0.9875, 1, n))
    # none's lower end at 97.5%: between the Wilson and Clopper-Pearson ones (both at z(0.9875))
    k = 50
    cp_lo = float(stats.beta.ppf(0.0125, k, n - k + 1))
    p = k / n
    w_lo = (p + Z9875**2 / (2 * n) - Z9875 * math.sqrt(p * (1 - p) / n + Z9875**2 / (4 * n * n))) / (1 + Z9875**2 / n)
    candidates = [cp_lo / cp_hi0, w_lo / wilson_hi0]
    assert any(r["race_factor_lo"] == pytest.approx(c, rel=1e-6) for c in candidates), (r, candidates)
