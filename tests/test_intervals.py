"""core.intervals and core.stats: the one definition of every reported interval (issue 23 item 1).

Checked against independent computations: scipy's beta quantiles for the exact interval
(tolerance: core.stats solves to ~1e-13 relative, its incomplete beta loses ~1e-8 at n = 1e9
and ~1e-5 at n = 1e12 to cancellation in the continued fraction; stated per case), the closed
form 1 - ((1 - conf)/2)^(1/n) for 0 events, the simulators themselves for which outcomes the
model can produce (possible), and hand-computed sums for cmc+counted.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sst

from core.intervals import (
    CMC,
    CMC_COUNTED,
    COUNTED,
    MODEL_ZERO,
    Observed,
    estimate,
    possible,
    resolution,
    split_conf,
)
from core.outcomes import counts
from core.stats import MAX_TRIALS_NEEDED, clopper_pearson, trials_needed, zero_event_trials
from core.vectorized import simulate

from param_strategies import params_strategy
from precision_helpers import cp


def _scipy_cp(k: int, n: int, conf: float) -> tuple[float, float]:
    a = 1 - conf
    lo = 0.0 if k == 0 else sst.beta.ppf(a / 2, k, n - k + 1)
    hi = 1.0 if k == n else sst.beta.ppf(1 - a / 2, k + 1, n - k)
    return float(lo), float(hi)


CASES = [(k, n) for n in (1, 2, 3, 10, 100, 1000, 64_000, 10**6) for k in sorted({0, 1, 2, 3, 7, n // 3, n // 2, n - 1, n})
         if 0 <= k <= n]


@pytest.mark.parametrize("conf", [0.95, 0.975, 0.99, 1 - 0.05 / 7, 0.999])
def test_clopper_pearson_against_scipy(conf):
    for k, n in CASES:
        lo, hi = clopper_pearson(k, n, conf)
        rlo, rhi = _scipy_cp(k, n, conf)
        assert lo == pytest.approx(rlo, rel=1e-9, abs=1e-300), (k, n)
        assert hi == pytest.approx(rhi, rel=1e-9), (k, n)
        assert lo <= k / n <= hi


@pytest.mark.parametrize("n,rel", [(10**9, 1e-5), (10**12, 1e-4)])
def test_clopper_pearson_at_huge_n(n, rel):
    """At n = 1e9 and more scipy's beta.ppf itself goes wrong (0.025 quantile of Beta(1000, 1e9 - 999) comes
    out as 1.9e-6, above k/n): the reference is the Poisson limit, gamma quantiles / n, whose own relative
    error is O(k/n + p) < 1e-6 here."""
    for k in (0, 1, 3, 17, 1000):
        lo, hi = clopper_pearson(k, n)
        rlo = 0.0 if k == 0 else float(sst.gamma.ppf(0.025, k)) / n
        rhi = float(sst.gamma.ppf(0.975, k + 1)) / n
        assert lo == pytest.approx(rlo, rel=rel, abs=1e-300) and hi == pytest.approx(rhi, rel=rel), k
        assert lo <= k / n <= hi


def test_zero_events_closed_form():
    for n in (1, 2, 400, 1000, 10**7):
        assert clopper_pearson(0, n)[1] == pytest.approx(1 - 0.025 ** (1 / n), rel=1e-13)
        assert clopper_pearson(0, n, 0.975)[1] == pytest.approx(1 - 0.0125 ** (1 / n), rel=1e-13)
        assert clopper_pearson(n, n)[0] == pytest.approx(0.025 ** (1 / n), rel=1e-13)
    assert clopper_pearson(0, 1000)[1] == pytest.approx(3.682e-3, rel=1e-3)  # "about 3.7/n, never 0"


def test_clopper_pearson_refuses_nonsense():
    with pytest.raises(ValueError):
        clopper_pearson(5, 4)
    with pytest.raises(ValueError):
        clopper_pearson(0, 4, 1.0)
    assert clopper_pearson(0, 0) == (0.0, 1.0)


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=5e-324, max_value=1.0, exclude_max=True))
def test_zero_event_trials_answers_every_target(target):
    """Any target in (0, 1): a count n with bound(n) < target <= bound(n - 1), or None beyond the cap; no loop."""
    n = zero_event_trials(target)
    if n is None:
        assert math.log(0.025) / math.log1p(-target) > MAX_TRIALS_NEEDED * (1 - 1e-9) or math.log1p(-target) == 0
        return
    assert 1 <= n <= MAX_TRIALS_NEEDED
    assert -math.expm1(math.log(0.025) / n) < target
    assert n == 1 or -math.expm1(math.log(0.025) / (n - 1)) >= target
    r3 = trials_needed(target)
    assert r3 is None or r3 <= n  # the one-sided bound needs fewer trials


def test_zero_event_trials_hand_values():
    assert zero_event_trials(1e-6) == 3_688_878  # ln(0.025) / ln(1 - 1e-6) = 3,688,877.6
    assert zero_event_trials(1e-3, 0.975) == math.floor(math.log(0.0125) / math.log1p(-1e-3)) + 1
    assert zero_event_trials(1e-22) is None and zero_event_trials(1e-320) is None
    assert zero_event_trials(3.7e-15) == math.floor(math.log(0.025) / math.log1p(-3.7e-15)) + 1  # just under 1e15


# ---- which outcomes the model can produce --------------------------------------------------


def test_possible_hand_cases():
    assert possible(1, 0.0) == (False, False)  # kexec path, no dead CPU: neither
    assert possible(1, 1e-3) == (True, False)
    assert possible(0, 0.0) == (False, True)
    assert possible(0, 1e-3) == (False, True)  # a dead CPU on the panic path times out


@settings(max_examples=40, deadline=None)
@given(params_strategy(n_cpus=st.integers(2, 12), p_unresponsive=st.sampled_from([0.0, 0.0, 0.05, 0.3]),
                       p_stall=st.sampled_from([1e-3, 0.05, 0.5]), stall_median_us=st.sampled_from([5e5, 2e6]),
                       wbinvd_us=st.sampled_from([1000.0, 6000.0])),
       st.integers(0, 2**32))
def test_possible_never_rules_out_what_the_simulator_produces(p, seed):
    """On random valid points, an outcome `possible` rules out never happens in 300 simulated trials."""
    c = counts(simulate(p, 300, seed).outcome)
    can_hang, can_timeout = possible(p.wait, p.p_unresponsive)
    assert can_hang or c["hang"] == 0, (p, c)
    assert can_timeout or c["timeout"] == 0, (p, c)


def test_possible_outcomes_do_happen():
    """The rule is not vacuous: where it allows an outcome, the simulator produces it."""
    from core.params import make_params

    hang = counts(simulate(make_params({"n_cpus": 8, "wait": 1, "p_unresponsive": 0.1}), 300, 1).outcome)
    tout = counts(simulate(make_params({"n_cpus": 64, "wait": 0, "wbinvd_us": 3000.0, "p_stall": 0.05}), 2000, 1).outcome)
    assert hang["hang"] > 0 and tout["timeout"] > 0


# ---- estimate: the parts and their combination ---------------------------------------------


def test_counted_metrics_are_exact_and_zero_only_by_model():
    obs = Observed(1000, race=3, hang=0, timeout=0, hang_possible=False, timeout_possible=True)
    e = estimate("p_timeout", obs)
    assert e.method == COUNTED and (e.lo, e.hi) == pytest.approx(cp(0, 1000), rel=1e-9)
    h = estimate("p_hang", obs)
    assert h.method == MODEL_ZERO and (h.p, h.lo, h.hi) == (0.0, 0.0, 0.0)
    # a hang seen where the rule says none can happen: the data win, it is counted
    h2 = estimate("p_hang", Observed(1000, hang=2, hang_possible=False))
    assert h2.method == COUNTED and (h2.lo, h2.hi) == pytest.approx(cp(2, 1000), rel=1e-9)
    b = estimate("p_bad", obs)  # no cmc: race + hang + timeout counted together
    assert b.method == COUNTED and b.p == 3 / 1000 and (b.lo, b.hi) == pytest.approx(cp(3, 1000), rel=1e-9)


def test_cmc_plus_counted_is_the_bonferroni_sum():
    n, m, v = 2000, 1e-6, 1e-16
    z = float(sst.norm.ppf(1 - 0.0125))
    obs = Observed(n, race=0, hang=1, timeout=4, race_cmc=(n, m, v), n_cpus=64)
    b = estimate("p_bad", obs)
    clo, chi = cp(5, n, 0.975)
    assert b.method == CMC_COUNTED
    assert b.p == pytest.approx(m + 5 / n, rel=1e-12)
    assert b.lo == pytest.approx(m - z * 1e-8 + clo, rel=1e-9)
    assert b.hi == pytest.approx(m + z * 1e-8 + chi, rel=1e-9)
    assert b.var == pytest.approx(v + (5 / n) * (1 - 5 / n) / n, rel=1e-12)
    r = estimate("p_race", obs)
    z95 = float(sst.norm.ppf(0.975))
    assert r.method == CMC and (r.lo, r.hi) == pytest.approx((m - z95 * 1e-8, m + z95 * 1e-8), rel=1e-9)
    # nothing but the race can happen: p_bad is p_race, at the full 95%
    k = estimate("p_bad", Observed(n, race_cmc=(n, m, v), n_cpus=64, hang_possible=False, timeout_possible=False))
    assert k == estimate("p_race", Observed(n, race_cmc=(n, m, v), n_cpus=64))
    assert split_conf(0.95, 2) == pytest.approx(0.975) and split_conf(0.95, 7) == pytest.approx(1 - 0.05 / 7)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 10**7), st.integers(0, 50), st.integers(0, 50), st.integers(0, 50),
       st.one_of(st.none(), st.tuples(st.floats(0, 1e-2), st.floats(0, 1e-6))),
       st.booleans(), st.booleans(), st.sampled_from([0.9, 0.95, 0.99, 0.999]))
def test_every_estimate_is_ordered(n, race, hang, timeout, cmc, can_h, can_t, conf):
    race, hang, timeout = (min(x, n) for x in (race, hang, timeout))
    if race + hang + timeout > n:
        race, hang, timeout = 0, 0, min(timeout, n)
    obs = Observed(n, race, hang, timeout, None if cmc is None else (n, cmc[0], cmc[1]), 64, can_h, can_t)
    for metric in ("p_race", "p_bad", "p_hang", "p_timeout"):
        e = estimate(metric, obs, conf)
        assert 0.0 <= e.lo <= e.p <= e.hi, (metric, e)
        assert e.method in (COUNTED, CMC, CMC_COUNTED, MODEL_ZERO)
        # the 99.9% interval contains the 90% one
        if conf < 0.999:
            w = estimate(metric, obs, 0.999)
            assert w.lo <= e.lo + 1e-18 and w.hi >= e.hi - 1e-18


# ---- resolution: "unresolved" and the trials it needs --------------------------------------


def test_resolution_hand_cases():
    # counted, 0 events in 1000, target 1e-4: unresolved, needs the exact 0-event count for 1e-4
    r = resolution("p_bad", Observed(1000), 1e-4)
    assert r.unresolved and r.needed == zero_event_trials(1e-4) == math.floor(math.log(0.025) / math.log1p(-1e-4)) + 1
    assert not resolution("p_bad", Observed(1000, race=1), 1e-4).unresolved  # an event seen: inconclusive
    assert not resolution("p_bad", Observed(10**6), 1e-4).unresolved  # the bound is below: it passes
    # cmc race ~1e-7 tight, 0 timeouts: the counted part at 97.5% must fit under target - race_hi
    obs = Observed(1000, race_cmc=(1000, 1e-7, 1e-22), n_cpus=64, hang_possible=False, timeout_possible=True)
    r = resolution("p_bad", obs, 1e-4)
    z = float(sst.norm.ppf(1 - 0.0125))
    room = 1e-4 - (1e-7 + z * 1e-11)
    assert r.unresolved and r.needed == math.floor(math.log(0.0125) / math.log1p(-room)) + 1
    # the race part alone above the target: no count of trials with 0 timeouts helps
    r = resolution("p_bad", obs, 5e-8)
    assert r.unresolved and r.race_blocks and r.needed is None
    # a cmc race estimate whose values were all 0: its bound is the 0-race bound, unresolved too
    r = resolution("p_race", Observed(400, race_cmc=(400, 0.0, 0.0), n_cpus=16), 1e-6)
    assert r.unresolved and r.needed == zero_event_trials(1e-6)
    # zero by model is exact: never unresolved
    assert resolution("p_hang", Observed(10), 1e-9).unresolved
    assert not resolution("p_hang", Observed(10, hang_possible=False), 1e-9).unresolved
    # beyond the cap: unresolved with needed None
    r = resolution("p_bad", Observed(1000), 1e-17)
    assert r.unresolved and r.needed is None


def test_issue23_point_in_the_simulator():
    """`stoprace simulate --n-cpus 64 --wait 0 --wbinvd-us 3000 --trials 1000 --estimator cmc`: the p_bad
    interval contains the ~1.05e-4 that naive counting measures (21 timeouts in 200,000 trials; the
    coverage harness's stored truth), on several seeds."""
    from core.estimators import CMC as EST
    from core.params import make_params
    from core.vectorized import shard_seed

    p = make_params({"n_cpus": 64, "wait": 0, "wbinvd_us": 3000.0})
    for seed in range(3):
        acc = EST.run_shard(p, 1000, shard_seed(seed, 0))
        bad = acc.report(p)["bad"]
        assert bad["method"] == CMC_COUNTED
        assert bad["lo"] <= 1.05e-4 <= bad["hi"], bad
        assert bad["hi"] == pytest.approx(1 - 0.0125 ** (1 / 1000) + acc.cmc.interval("race", 0.975)[1], rel=1e-9) \
            or acc.counts.count("timeout") > 0

