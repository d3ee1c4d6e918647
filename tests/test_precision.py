"""Adaptive precision without Ray: the [precision] spec table, the stop rule (core.precision)
against hand-computed cases and an independent recomputation, its SQL twin, and the wave
planner's determinism under any completion order and any kill-and-resume point."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from scipy import stats as sst
from wave_helpers import drive_plan, fake_rows

from core.precision import (
    ABOVE,
    BELOW,
    EXHAUSTED,
    OPEN,
    PRECISE,
    Estimate,
    PointTally,
    Precision,
    ShardStats,
    decide,
    look_conf,
    max_looks,
    naive_estimate,
)
from queries.db import read_sql
from sweeps.grid import iter_points
from sweeps.spec import SpecError, parse_spec
from sweeps.waves import WavePlan, task_id_of, wave_bounds

from precision_helpers import Z95, cmc_status, cp, naive_status, pooled, status
from precision_helpers import look_conf as helper_look_conf

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"

HEAD = 'name = "t"\nseed = 1\ntrials = "auto"\nshard_trials = 1000\n[axes]\nn_cpus = [4, 8]\n'


def spec_of(precision: str, head: str = HEAD):
    return parse_spec(head + "[precision]\n" + precision, where="s.toml")


def err_of(text: str) -> str:
    with pytest.raises(SpecError) as ei:
        parse_spec(text, where="s.toml")
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith("s.toml: "), msg
    return msg


# ---- A: the spec -------------------------------------------------------------------------


def test_auto_spec_fills_min_trials_and_sets_trials_to_the_budget():
    s = spec_of("target = 1e-3\nmax_trials = 64_000\n")
    assert s.precision == Precision(metric="p_bad", target=1e-3, rel_half_width=None, max_trials=64000, min_trials=1000)
    assert s.trials == 64000 and s.n_shards_per_point == 64
    s2 = spec_of('metric = "p_race"\nrel_half_width = 0.1\nmax_trials = 5500\nmin_trials = 3000\n')
    assert (s2.precision.target, s2.precision.rel_half_width, s2.precision.min_trials) == (None, 0.1, 3000)
    assert s2.shard_sizes()[-1] == 500  # shard k has the trials it would have with trials = max_trials


def test_auto_spec_round_trips_and_its_hash_depends_on_the_rule():
    s = spec_of("target = 1e-3\nrel_half_width = 0.2\nmax_trials = 64000\n")
    again = parse_spec(s.to_toml())
    assert again == s and again.spec_hash == s.spec_hash
    assert 'trials = "auto"' in s.to_toml()
    obj = json.loads(s.canonical_json())
    assert obj["trials"] == "auto" and obj["precision"]["max_trials"] == 64000
    assert spec_of("target = 1e-3\nrel_half_width = 0.2\nmax_trials = 32000\n").spec_hash != s.spec_hash
    assert spec_of("target = 2e-3\nrel_half_width = 0.2\nmax_trials = 64000\n").spec_hash != s.spec_hash
    # a fixed spec with trials = max_trials is another sweep
    fixed = parse_spec(HEAD.replace('"auto"', "64000"))
    assert fixed.spec_hash != s.spec_hash


@pytest.mark.parametrize("name", ["release1-naive", "release1-cmc"])
def test_fixed_trials_spec_hash_is_unchanged(name):
    """A spec written by the first release hashes as it did then: the precision hook adds nothing."""
    d = FIXTURES / name
    spec = parse_spec((d / "spec.toml").read_text(), stored=True)
    assert spec.precision is None and "precision" not in spec.canonical_obj()
    assert spec.spec_hash == json.loads((d / "manifest.json").read_text())["spec_hash"]
    assert spec.spec_hash == hashlib.sha256(spec.canonical_json().encode()).hexdigest()


BAD = [
    ('trials = "auto"\n', "needs a [precision] table"),
    ('trials = "lots"\n', "trials = 'lots' is not allowed"),
    ("trials = 10\n[precision]\ntarget = 0.1\nmax_trials = 10\n", '[precision] needs trials = "auto"'),
    ('trials = "auto"\nprecision = 3\n', "[precision] must be a table"),
    ('trials = "auto"\n[precision]\nmax_trials = 10\n', "give target, rel_half_width or both"),
    ('trials = "auto"\n[precision]\ntarget = 0.1\n', "missing required key 'max_trials'"),
    ('trials = "auto"\n[precision]\ntarget = 1.5\nmax_trials = 10\n', "precision.target = 1.5"),
    ('trials = "auto"\n[precision]\ntarget = 0\nmax_trials = 10\n', "precision.target = 0"),
    ('trials = "auto"\n[precision]\nrel_half_width = -0.1\nmax_trials = 10\n', "precision.rel_half_width = -0.1"),
    ('trials = "auto"\n[precision]\nrel_half_width = inf\nmax_trials = 10\n', "precision.rel_half_width = inf"),
    ('trials = "auto"\n[precision]\nmetric = "p_ok"\ntarget = 0.1\nmax_trials = 10\n', "precision.metric = 'p_ok'"),
    ('trials = "auto"\n[precision]\ntarget = 0.1\nmax_trials = 0\n', "precision.max_trials = 0"),
    ('trials = "auto"\n[precision]\ntarget = 0.1\nmax_trials = 2.5\n', "precision.max_trials = 2.5"),
    ('trials = "auto"\n[precision]\ntarget = 0.1\nmax_trials = 10\nmin_trials = 11\n', "min_trials = 11 is not allowed: at most max_trials = 10"),
    ('trials = "auto"\n[precision]\ntarget = 0.1\nmax_trials = 10\nmax_trails = 3\n', "unknown key 'max_trails'"),
]


@pytest.mark.parametrize("body,needle", BAD)
def test_bad_precision_is_one_line_naming_the_field(body, needle):
    msg = err_of('name = "t"\nseed = 1\n' + body)
    assert needle in msg, msg


def test_min_trials_defaults_to_one_shard_but_never_above_the_budget():
    assert spec_of("target = 0.1\nmax_trials = 300\n").precision.min_trials == 300
    assert spec_of("target = 0.1\nmax_trials = 30000\n").precision.min_trials == 1000


# ---- B: the stop rule --------------------------------------------------------------------

RULE = Precision(metric="p_bad", target=1e-3, rel_half_width=0.1, max_trials=100_000, min_trials=1000)


@pytest.mark.parametrize(
    "est,expected",
    [
        (Estimate(5e-4, 1e-4, 9.99e-4, 5000, "counted"), BELOW),
        (Estimate(5e-4, 1e-4, 1e-3, 5000, "counted"), OPEN),  # hi == target: not entirely below
        (Estimate(2e-3, 1.0001e-3, 3e-3, 5000, "counted"), ABOVE),
        (Estimate(2e-3, 1e-3, 3e-3, 5000, "counted"), OPEN),  # lo == target: not entirely above
        (Estimate(1e-3, 0.91e-3, 1.09e-3, 5000, "cmc"), PRECISE),  # half-width 9% of the estimate, spans target
        (Estimate(1e-3, 0.89e-3, 1.11e-3, 5000, "cmc"), OPEN),  # 11%
        (Estimate(1e-3, 0.89e-3, 1.11e-3, 100_000, "cmc"), EXHAUSTED),
        (Estimate(1e-4, 0.0, 9e-4, 999, "counted"), OPEN),  # decided interval, but fewer than min_trials
        (Estimate(0.0, 0.0, 2e-3, 100_000, "counted"), EXHAUSTED),  # p = 0 is never "precise"
        (Estimate(5e-4, 4.9e-4, 5.1e-4, 5000, "cmc"), BELOW),  # both met: the target's answer wins
    ],
)
def test_decide_hand_cases(est, expected):
    assert decide(est, RULE, est) == expected
    assert status(est.p, est.lo, est.hi, est.lo, est.hi, est.trials, RULE.model_dump()) == expected


@pytest.mark.parametrize(
    "est,look,expected",
    [
        # the 95% interval is below the target but the look interval is not: no decision yet
        (Estimate(5e-4, 1e-4, 9e-4, 5000, "counted"), Estimate(5e-4, 5e-5, 1e-3, 5000, "counted"), OPEN),
        (Estimate(2e-3, 1.5e-3, 3e-3, 5000, "counted"), Estimate(2e-3, 1e-3, 4e-3, 5000, "counted"), OPEN),
        # the look interval decides; the 95% one is what `precise` reads
        (Estimate(5e-4, 4e-4, 6e-4, 5000, "cmc"), Estimate(5e-4, 3e-4, 9.9e-4, 5000, "cmc"), BELOW),
        (Estimate(1.1e-3, 1.05e-3, 1.15e-3, 5000, "cmc"), Estimate(1.1e-3, 1e-3, 1.2e-3, 5000, "cmc"), PRECISE),
    ],
)
def test_target_decisions_read_the_look_interval_and_precise_the_95_one(est, look, expected):
    assert decide(est, RULE, look) == expected
    assert status(est.p, est.lo, est.hi, look.lo, look.hi, est.trials, RULE.model_dump()) == expected


def test_half_width_exactly_at_the_bound_is_precise():
    """Dyadic numbers, so (hi - lo) / 2 == rel x p exactly: the bound is inclusive."""
    p = 2.0**-10
    rule = Precision(rel_half_width=0.125, max_trials=10**6, min_trials=1)
    e = Estimate(p, p - p / 8, p + p / 8, 10, "cmc")
    assert decide(e, rule, e) == PRECISE
    e = Estimate(p, p - p / 8, p + p / 8 + 2.0**-30, 10, "cmc")
    assert decide(e, rule, e) == OPEN


@pytest.mark.parametrize("max_trials,min_trials,looks", [
    (100_000, 1000, 8),  # log2(100) = 6.64
    (64_000, 1000, 7),  # exactly 2^6: 1, 2, 4, ..., 64 shards
    (1000, 1000, 1),
    (1001, 1000, 2),
    (3, 1, 3),
])
def test_max_looks_and_look_conf_hand_computed(max_trials, min_trials, looks):
    rule = Precision(target=0.1, max_trials=max_trials, min_trials=min_trials)
    assert max_looks(rule) == looks
    assert look_conf(rule) == pytest.approx(1 - 0.05 / looks, rel=1e-15)
    assert look_conf(rule) == pytest.approx(helper_look_conf(rule.model_dump()), rel=1e-15)


@pytest.mark.parametrize("shard_trials", [1, 7, 100, 333, 1000, 4096])
@pytest.mark.parametrize("min_trials,max_trials", [(1, 1), (1, 2), (5, 9), (100, 3200), (150, 100_000),
                                                   (1000, 64_000), (999, 64_001), (4096, 4097), (250, 1050)])
def test_waves_never_look_more_often_than_the_spending_assumes(shard_trials, min_trials, max_trials):
    """The Bonferroni split is over max_looks(rule) looks: a spec's waves (one look each) are never more,
    whatever the shard size rounds the bounds to."""
    head = f'name = "t"\nseed = 1\ntrials = "auto"\nshard_trials = {shard_trials}\n[axes]\nn_cpus = [4]\n'
    s = spec_of(f"target = 0.1\nmax_trials = {max_trials}\nmin_trials = {min_trials}\n", head)
    assert len(wave_bounds(s)) <= max_looks(s.precision)


def test_naive_zero_events_hand_computed():
    """0 events in n at RULE's look level 1 - 0.05/8: the exact upper bound 1 - 0.003125^(1/n) is below
    1e-3 from n = 5766 on (ln 0.003125 / ln 0.999 = 5765.4); the 95% bound alone would pass at 3689."""
    c = 1 - 0.05 / 8
    assert look_conf(RULE) == pytest.approx(c, rel=1e-15)
    n_star = 5766
    assert 1 - 0.003125 ** (1 / n_star) < 1e-3 <= 1 - 0.003125 ** (1 / (n_star - 1))
    assert naive_estimate(0, n_star, c).hi == pytest.approx(1 - 0.003125 ** (1 / n_star), rel=1e-12)
    t = PointTally(n_cpus=8)
    t.add(0, ShardStats(n_star, 0, 0, 0))
    assert t.status(RULE) == BELOW
    t.add(0, ShardStats(n_star - 1, 0, 0, 0))
    assert t.status(RULE) == OPEN
    t.add(0, ShardStats(3689, 0, 0, 0))
    assert t.estimate("p_bad").hi < 1e-3 and t.status(RULE) == OPEN  # 95% below, look level not


def test_target_only_and_rel_only_rules():
    only_t = Precision(target=0.01, max_trials=10_000, min_trials=500)
    only_r = Precision(metric="p_race", rel_half_width=0.5, max_trials=10_000, min_trials=500)
    e = Estimate(0.02, 0.015, 0.025, 1000, "counted")  # above target and half-width 25%
    assert decide(e, only_t, e) == ABOVE and decide(e, only_r, e) == PRECISE
    wide = Estimate(0.02, 0.001, 0.04, 1000, "counted")
    assert decide(wide, only_t, wide) == OPEN and decide(wide, only_r, wide) == OPEN


@pytest.mark.parametrize("seed", range(5))
def test_naive_tally_matches_independent_recomputation(seed):
    rng = np.random.default_rng(seed)
    t = PointTally(n_cpus=16)
    shards = [(int(rng.integers(1, 3000)), *map(int, rng.integers(0, 5, 3))) for _ in range(6)]
    for k in rng.permutation(len(shards)):  # arrival order must not matter
        n, r, h, to = shards[k]
        t.add(int(k), ShardStats(n, r, h, to))
    n = sum(s[0] for s in shards)
    k_bad = sum(sum(s[1:]) for s in shards)
    e = t.estimate("p_bad")
    assert (e.trials, e.method) == (n, "counted")
    assert e.p == k_bad / n
    lo, hi = cp(k_bad, n)
    assert e.lo == pytest.approx(lo, rel=1e-9, abs=1e-15) and e.hi == pytest.approx(hi, rel=1e-9)
    k_race = sum(s[1] for s in shards)
    assert t.estimate("p_race").p == k_race / n
    for rule in (RULE, Precision(target=0.002, max_trials=n, min_trials=1), Precision(target=0.001, max_trials=n,
                                                                                       min_trials=n // 3)):
        assert t.status(rule) == naive_status(k_bad, n, rule.model_dump())


@pytest.mark.parametrize("seed", range(5))
def test_cmc_tally_pools_like_one_pass_over_all_trials(seed):
    """Per-shard (n, mean, var of mean) pooled = mean and sample variance of the concatenated values."""
    rng = np.random.default_rng(100 + seed)
    values = [rng.choice([1.07e-7, 4.7e-8, 0.0], size=int(rng.integers(50, 400)), p=[0.9, 0.08, 0.02]) for _ in range(4)]
    t = PointTally(n_cpus=512)
    for k in (2, 0, 3, 1):
        v = values[k]
        t.add(k, ShardStats(v.size, 0, 0, 0, "cmc", float(v.mean()), float(v.var(ddof=1) / v.size), 0.0, 0.0))
    allv = np.concatenate(values)
    e = t.estimate("p_race")
    assert e.method == "cmc" and e.trials == allv.size
    assert e.p == pytest.approx(allv.mean(), rel=1e-12)
    half = Z95 * math.sqrt(allv.var(ddof=1) / allv.size)  # CLT interval; well above the 1e-9 floor here
    assert e.lo == pytest.approx(allv.mean() - half, rel=1e-9)
    assert e.hi == pytest.approx(allv.mean() + half, rel=1e-9)
    n, m, v = pooled([(x.size, float(x.mean()), float(x.var(ddof=1) / x.size)) for x in values])
    assert n == allv.size and m == pytest.approx(allv.mean(), rel=1e-12)
    assert v == pytest.approx(allv.var(ddof=1) / allv.size, rel=1e-9)  # the helper itself, against numpy
    # p_hang is counted (exact on the naive counts, all 0 here): 0 hangs in N trials still allow ~3.69/N
    h = t.estimate("p_hang")
    assert h.method == "counted" and h.hi == pytest.approx(1 - 0.025 ** (1 / allv.size), rel=1e-12)
    # the rule at its look level: the pooled estimate with the CLT at 1 - 0.05/8
    for target in (m * 0.9, m * 0.99, m * 1.01, m * 1.1):
        rule = Precision(metric="p_race", target=target, max_trials=10**6, min_trials=1000)
        assert t.status(rule) == cmc_status(m, v, n, rule.model_dump()), target


def test_cmc_p_bad_adds_the_counted_part_at_bonferroni_levels():
    """The issue-23 case in small: cmc race ~1e-7 and no timeout seen in 1000 trials. p_bad is the race part
    at 97.5% plus the exact 97.5% bound of 0 hangs+timeouts, 1 - 0.0125^(1/1000) = 4.37e-3, never the
    collapsed interval of the per-trial bad values; with hangs and timeouts impossible it is p_race."""
    rng = np.random.default_rng(7)
    vals = rng.choice([1.07e-7, 4.7e-8], size=1000, p=[0.95, 0.05])
    m, v = float(vals.mean()), float(vals.var(ddof=1) / vals.size)
    row = ShardStats(1000, 0, 0, 0, "cmc", m, v, m, v)
    t = PointTally(n_cpus=64)
    t.add(0, row)
    e = t.estimate("p_bad")
    z = float(sst.norm.ppf(1 - 0.0125))
    assert e.method == "cmc+counted"
    assert e.p == pytest.approx(m, rel=1e-12)
    assert e.hi == pytest.approx(m + z * math.sqrt(v) + (1 - 0.0125 ** (1 / 1000)), rel=1e-9)
    assert e.lo == pytest.approx(m - z * math.sqrt(v), rel=1e-9)
    assert 1.05e-4 < e.hi and e.hi == pytest.approx(4.37e-3, rel=1e-3)
    # 2 timeouts seen: the counted part is Clopper-Pearson of 2 in 1000 at 97.5% (scipy), p adds 2/1000
    t.add(0, ShardStats(1000, 0, 0, 2, "cmc", m, v, m + 2e-3, v))
    e2 = t.estimate("p_bad")
    lo2, hi2 = cp(2, 1000, 0.975)
    assert e2.p == pytest.approx(m + 2e-3, rel=1e-12)
    assert e2.lo == pytest.approx(m - z * math.sqrt(v) + lo2, rel=1e-9)
    assert e2.hi == pytest.approx(m + z * math.sqrt(v) + hi2, rel=1e-9)
    # the kexec path without dead CPUs: neither can happen, so p_bad is the cmc race estimate at 95%
    k = PointTally.for_params({"n_cpus": 64, "wait": 1, "p_unresponsive": 0.0})
    k.add(0, row)
    assert k.estimate("p_bad") == k.estimate("p_race")
    assert k.estimate("p_hang").method == k.estimate("p_timeout").method == "zero by model"
    assert (k.estimate("p_hang").lo, k.estimate("p_hang").hi) == (0.0, 0.0)
    # the adaptive rule of the issue (p_bad vs 1e-6) never says below target on the panic path
    rule = Precision(metric="p_bad", target=1e-6, max_trials=64_000, min_trials=1000)
    assert t.status(rule) != BELOW and k.status(rule) == BELOW


def test_cmc_zero_variance_interval_is_bounded_by_the_metrics_largest_value():
    """Every trial gave the same v > 0 (zero sample variance): the interval is the distribution-free
    one of core/README.md, [v (1 - q), v + (y_max - v) q] with q = 1 - 0.025^(1/n), where y_max is
    the largest per-trial value: n_cpus - 1 racing CPUs for p_race. p_bad under cmc adds the counted
    part: both at 97.5% (q' = 1 - 0.0125^(1/n)), v + (n_cpus - 1 - v) q' + q'."""
    n, v, n_cpus = 400, 1e-7, 8
    t = PointTally(n_cpus=n_cpus)
    t.add(0, ShardStats(n, 0, 0, 0, "cmc", v, 0.0, v, 0.0))
    q = 1.0 - 0.025 ** (1.0 / n)  # ~9.2e-3: the hand-computed fraction of trials not seen
    q2 = 1.0 - 0.0125 ** (1.0 / n)
    fp = 1e-9 * v  # core.estimators.cmc.stats.FP_REL: floating-point floor on the half-width
    e = t.estimate("p_race")
    assert e.method == "cmc" and e.p == v
    assert e.hi == pytest.approx(v + (n_cpus - 1 - v) * q + fp, rel=1e-12)
    assert e.lo == pytest.approx(v * (1.0 - q) - fp, rel=1e-9)
    b = t.estimate("p_bad")
    assert b.method == "cmc+counted" and b.p == v
    assert b.hi == pytest.approx(v + (n_cpus - 1 - v) * q2 + fp + q2, rel=1e-12)
    assert b.lo == pytest.approx(v * (1.0 - q2) - fp, rel=1e-9)


# ---- B: the SQL twin ---------------------------------------------------------------------


def test_sql_precision_status_equals_decide():
    from queries.estimates import register

    con = duckdb.connect()
    register(con)  # the macros' count_lo/count_hi call queries.estimates' functions
    for stmt in duckdb.extract_statements(read_sql("_macros")):
        con.execute(stmt)
    rng = random.Random(3)
    grid = [0.0, 5e-4, 9.99e-4, 1e-3, 1.0001e-3, 1.1e-3, 2e-3]
    cases = []
    for p, lo, hi in itertools.product(grid, grid, grid):
        if not lo <= p <= hi:
            continue
        for wider in (0.0, 2e-4):  # the look interval: the same, or wider on both sides
            llo, lhi = max(0.0, lo - wider), hi + wider
            for n in (999, 1000, 50_000, 100_000):
                for target, rel in ((1e-3, 0.1), (None, 0.1), (1e-3, None), (1e-3, 0.5)):
                    cases.append((p, lo, hi, llo, lhi, n, target, rel, 100_000, 1000))
    for _ in range(500):
        lo = rng.random() * 1e-2
        hi = lo + rng.random() * 1e-2
        p = lo + (hi - lo) * rng.random()
        llo, lhi = lo * rng.random(), hi * (1 + rng.random())
        target, rel = rng.choice([(None, 0.3), (5e-3, None), (5e-3, 1.0), (5e-3, 0.3)])
        cases.append((p, lo, hi, llo, lhi, rng.randint(1, 10**6), target, rel, rng.randint(10**5, 10**6),
                      rng.randint(1, 10**5)))
    names = ("p", "lo", "hi", "llo", "lhi", "n", "t", "r", "mx", "mn")
    got = con.execute(
        "SELECT precision_status(p, lo, hi, llo, lhi, n, t, r, mx, mn) FROM (SELECT unnest($1, recursive := true))",
        [[dict(zip(names, c)) for c in cases]],
    ).fetchall()
    want = [decide(Estimate(c[0], c[1], c[2], c[5], "counted"),
                   Precision(metric="p_bad", target=c[6], rel_half_width=c[7], max_trials=c[8], min_trials=c[9]),
                   Estimate(c[0], c[3], c[4], c[5], "counted"))
            for c in cases]
    assert [g[0] for g in got] == want
    assert set(want) == {BELOW, ABOVE, PRECISE, EXHAUSTED, OPEN}
    # the look interval matters in the table: some case is decided on the 95% interval alone but not on it
    assert any(decide(Estimate(c[0], c[1], c[2], c[5], "counted"),
                      Precision(metric="p_bad", target=c[6], rel_half_width=c[7], max_trials=c[8], min_trials=c[9]),
                      Estimate(c[0], c[1], c[2], c[5], "counted")) != w for c, w in zip(cases, want))


# ---- C: waves ----------------------------------------------------------------------------

WAVE_SPEC = """
name = "w"
seed = 5
trials = "auto"
shard_trials = 100
task_seconds = 0.0001
[precision]
target = 0.01
max_trials = 3200
[axes]
n_cpus = [4, 64]
p_stall = [0.001, 0.006, 0.009, 0.011, 0.02, 0.3]
"""


def test_wave_bounds_grow_geometrically_to_the_budget():
    s = parse_spec(WAVE_SPEC)
    assert wave_bounds(s) == [1, 2, 4, 8, 16, 32]
    s2 = parse_spec(WAVE_SPEC.replace("max_trials = 3200", "max_trials = 1050\nmin_trials = 250"))
    assert wave_bounds(s2) == [3, 6, 11]  # last shard of 50 trials


def p_stall_of(values: dict) -> float:
    return values["p_stall"]


def drive(spec, order_seed: int, limit: int, stored: list | None = None, kill_after: int | None = None):
    """Run the planner with tasks finishing in a random order; returns (stored tables, plan, killed).
    Synthetic shards: bad ~ Binomial(trials, p_stall)."""
    plan = WavePlan(spec)
    tables, killed = drive_plan(plan, p_stall_of, order_seed, limit, stored or (), kill_after)
    return tables, plan, killed


def keys(tables) -> list:
    t = pa.concat_tables(tables)
    return sorted(zip(t["point_id"].to_pylist(), t["shard"].to_pylist()))


def test_waves_store_the_same_shards_whatever_the_completion_order_or_kill_point():
    spec = parse_spec(WAVE_SPEC)
    ref, plan, _ = drive(spec, 0, 1)
    ref_keys = keys(ref)
    assert len(ref_keys) == len(set(ref_keys))
    statuses = dict(plan.status)
    for seed, limit in [(1, 3), (2, 8), (3, 100)]:
        got, p2, _ = drive(spec, seed, limit)
        assert keys(got) == ref_keys and p2.status == statuses
    # killed after k stored tasks (any k), then resumed from what was stored: same shards, same decisions
    n_tasks = len(ref)
    for kill in sorted({1, 2, n_tasks // 3, n_tasks // 2, n_tasks - 1}):
        part, _, killed = drive(spec, 7, 4, kill_after=kill)
        assert killed
        full, p3, _ = drive(spec, 8, 4, stored=part)
        assert keys(full) == ref_keys and p3.status == statuses


def test_every_point_stops_at_its_first_decided_wave():
    """Independent recomputation from the stored rows: shards 0..b_j-1 for the first wave j that decides."""
    spec = parse_spec(WAVE_SPEC)
    tables, plan, _ = drive(spec, 4, 5)
    t = pa.concat_tables(tables)
    rule = spec.precision.model_dump()
    bounds = wave_bounds(spec)
    seen = {p.point_id: {} for p in iter_points(spec)}
    for r in t.to_pylist():
        seen[r["point_id"]][r["shard"]] = r
    statuses = set()
    for p in iter_points(spec):
        shards = seen[p.point_id]
        b = len(shards)
        assert sorted(shards) == list(range(b)) and b in bounds
        for bj in bounds:
            n = sum(shards[k]["trials"] for k in range(bj))
            k_bad = sum(shards[k]["hang"] for k in range(bj))
            s = naive_status(k_bad, n, rule)
            if bj < b:
                assert s == "open", (p.values, bj, s)
            else:
                assert s != "open" and s == plan.status[p.index]
                break
        statuses.add(plan.status[p.index])
    # the spec is built to reach every outcome (p_stall 0.009/0.011 need the whole budget)
    assert statuses == {BELOW, ABOVE, EXHAUSTED}


def test_next_wave_of_a_point_is_queued_as_soon_as_its_own_wave_completes():
    spec = parse_spec(WAVE_SPEC)
    plan = WavePlan(spec)
    wave0 = []
    while (t := plan.take()) is not None:
        wave0.append(t)
    assert all(it.shards == range(1) for t in wave0 for it in t.items)
    # finish only the wave-0 task of an open point (p_stall = 0.011 is open after 100 trials)
    i = next(p.index for p in plan.points.values() if p.values["p_stall"] == 0.011)
    task = next(t for t in wave0 if any(it.point.index == i for it in t.items))
    plan.task_done(fake_rows(task, p_stall_of))
    nxt = plan.take()
    assert nxt is not None and nxt.items[0].point.index == i and nxt.items[0].shards == range(1, 2)
    assert nxt.task_id == task_id_of(spec, i, 1)
    assert plan.take() is None  # nothing else is runnable until other results arrive


def test_cli_refuses_a_bad_precision_table_with_exit_2_and_writes_nothing(tmp_path, capsys):
    from sweeps.cli import main

    spec = tmp_path / "s.toml"
    spec.write_text('name = "x"\nseed = 1\ntrials = "auto"\n[precision]\ntarget = 2\nmax_trials = 10\n')
    out = tmp_path / "never"
    assert main(["run", str(spec), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "precision.target = 2 is not allowed" in err and len(err.splitlines()) == 1
    assert not out.exists()
