"""The conditional Monte Carlo (cmc) rare-event estimator, core/estimators/cmc/walk.py.

(a) Same draws: the vectorized cmc values of a trial equal those of the scalar
    reference `cmc_trial_reference`, which integrates the reference model over a
    piecewise-constant indicator in off_i (independent of the closed form), to 1e-9
    relative. The cmc machinery also rebuilds the sampled trial's own race outcome
    and first_racer_cpu exactly.
(b) Same law: at 8 points where naive MC sees >= 100 races in 20k-40k trials, the cmc
    estimates of p_race and p_bad agree with the naive ones (independent seeds) within
    their combined 99.9% interval. With 16 comparisons a correct implementation fails
    for a random seed with probability < 1.6%; seeds are fixed, so the test is
    deterministic. The bias of the conservative race_sum estimator, E[(N-1)^+], is
    checked against the scalar reference's own count of racing CPUs per trial.
    Unbiasedness and calibration: 200 independent cmc estimates agree on average with
    a 200k-trial naive estimate, their spread matches the reported variance (chi-square
    bounds) and their 95% intervals miss it no more often than a 92% interval would.
(c) A forced case computable by hand (n_cpus = 2, no jitter): the cmc value is a CDF
    difference of the irqs-off law, equal to scipy's to 1e-12 relative; naive agrees.
(d) Never a negative probability, never a zero-width interval (hypothesis).
(e) Determinism and replay.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special
from scipy import stats as sst

from core import reference
from core.draws import draw_all
from core.estimators.cmc.reference import cmc_trial_reference
from core.estimators.cmc.walk import (
    CmcSummary,
    cmc_draws,
    combine,
    estimate_interval,
    iter_chunks_cmc,
    ndtr_diff,
    replay_draws_cmc,
    simulate_cmc,
)
from core.outcomes import OUTCOMES
from core.params import make_params
from core.stats import wilson, z_value
from core.vectorized import shard_seed, simulate

from param_strategies import params_strategy

RACE, HANG, TIMEOUT = (OUTCOMES.index(o) for o in ("race", "hang", "timeout"))
Z999 = z_value(0.999)
Z_1E4 = z_value(1 - 1e-4)  # two-sided 1e-4

# --- (a) vectorized vs scalar reference on shared draws --------------------------------

SAME_DRAWS = {
    "many_late": dict(n_cpus=8, p_stall=1.0, stall_median_us=1.001e6, stall_sigma=0.01, nmi_jitter_us=1e4),
    "multi_racer": dict(n_cpus=7, p_stall=0.5, stall_median_us=1.0008e6, stall_sigma=0.001, nmi_jitter_us=2e3,
                        handoff_us=10.0),
    "wait0_timeouts": dict(n_cpus=6, p_stall=1.0, stall_median_us=1e6, stall_sigma=0.001, wait=0, wbinvd_us=5e3,
                           wbinvd_sigma=1.0),
    "wait0_jitter": dict(n_cpus=6, p_stall=0.7, stall_median_us=1.001e6, stall_sigma=0.003, wait=0,
                         nmi_jitter_us=2e4),
    "wait0_dead": dict(n_cpus=6, p_unresponsive=0.1, wait=0, p_stall=0.6, stall_median_us=1.001e6,
                       stall_sigma=0.01, nmi_jitter_us=1e4),
    "wait1_dead": dict(n_cpus=6, p_unresponsive=0.1, p_stall=0.6, stall_median_us=1.001e6, stall_sigma=0.01,
                       nmi_jitter_us=1e4),
    "early_flush": dict(n_cpus=6, mitigation="early_flush", nmi_jitter_us=3000.0, p_stall=0.8,
                        stall_median_us=1.001e6, stall_sigma=0.005, incoherent_fraction=0.5),
    "walk_clock_wait0": dict(n_cpus=7, p_stall=0.6, stall_median_us=1.0011e6, stall_sigma=2e-5, nmi_send_us=50.0,
                             rewbinvd_factor=2.0, handoff_us=20.0, wbinvd_us=10.0, nmi_jitter_us=100.0, wait=0,
                             nmi_wait_us=200.0),
    "stall_atom": dict(n_cpus=5, p_stall=0.5, stall_median_us=1.0015e6, stall_sigma=0.0, nmi_jitter_us=3e3,
                       irq_off_mean_us=1e5),
    "ipi_atom": dict(n_cpus=4, ipi_base_us=1.0008e6, ipi_jitter_us=3e3, p_stall=0.0, irq_off_mean_us=10.0,
                     nmi_jitter_us=3e3, wbinvd_sigma=0.0),
    "slow_udelay": dict(n_cpus=6, udelay_factor=1.5, timeout_us=2e5, irq_off_mean_us=1e5, p_stall=0.2,
                        stall_median_us=3.0e5, nmi_jitter_us=500.0, wait=0, nmi_wait_us=300.0),
    "window_from_zero": dict(n_cpus=3, ipi_base_us=0.0, ipi_jitter_us=0.0, prologue_us=0.0, incoherent_fraction=0.0,
                             timeout_us=0.0, console_us=0.0, nmi_base_us=50.0, nmi_jitter_us=10.0, handoff_us=0.0,
                             p_stall=0.5, stall_median_us=20.0, stall_sigma=1.0),
}


@pytest.mark.parametrize("name", sorted(SAME_DRAWS))
def test_vectorized_equals_scalar_reference(name):
    p = make_params(SAME_DRAWS[name])
    d = draw_all(np.random.default_rng(sorted(SAME_DRAWS).index(name)), p, 16)
    b, cm = cmc_draws(p, d)
    # the cmc sets S_i reproduce the sampled trial's own race outcome exactly
    assert np.array_equal(b.outcome == RACE, cm.n_racing >= 1)
    assert np.array_equal(b.first_racer_cpu, cm.first_cpu)
    for t in range(len(b)):
        ref = cmc_trial_reference(p, d.row(t).to_lists(), detail=True)
        vec = (cm.race[t], cm.bad[t], cm.race_sum[t])
        for r, v in zip(ref, vec):
            assert math.isclose(r, v, rel_tol=1e-9, abs_tol=1e-300), (t, ref, vec)
    assert np.all(cm.race <= cm.race_sum * (1 + 1e-12) + 1e-300)


# --- (b) cmc vs naive, own streams -------------------------------------------------------

POINTS = {
    "stall_near_tnmi": (dict(n_cpus=32, p_stall=0.03, stall_median_us=1.0e6, stall_sigma=0.01,
                             nmi_jitter_us=200.0), 40000),
    "nmi_jitter_big": (dict(n_cpus=16, p_stall=0.05, nmi_jitter_us=5e4), 20000),
    "wait0": (dict(n_cpus=16, wait=0, p_stall=0.05, stall_median_us=1.0e6, stall_sigma=0.01,
                   nmi_jitter_us=1e4), 20000),
    "early_flush": (dict(n_cpus=16, mitigation="early_flush", p_stall=0.05, stall_median_us=1.0e6,
                         stall_sigma=0.01, nmi_jitter_us=3e3), 20000),
    "hang_unresponsive": (dict(n_cpus=16, p_unresponsive=0.01, p_stall=0.05, stall_median_us=1.0e6,
                               stall_sigma=0.01, nmi_jitter_us=1e3), 20000),
    "wait0_unresponsive": (dict(n_cpus=16, wait=0, p_unresponsive=0.01, p_stall=0.05, stall_median_us=1.0e6,
                                stall_sigma=0.01, nmi_jitter_us=2e4), 20000),
    "walk_clock": (dict(n_cpus=12, p_stall=0.1, stall_median_us=1.0011e6, stall_sigma=2e-5, nmi_send_us=50.0,
                        rewbinvd_factor=2.0, handoff_us=20.0, wbinvd_us=10.0, nmi_jitter_us=100.0), 20000),
    "multi_racer": (dict(n_cpus=8, p_stall=0.5, stall_median_us=1.0008e6, stall_sigma=0.001,
                         nmi_jitter_us=2e3, handoff_us=10.0), 20000),
}


def _agree(p1, v1, p2, v2):
    return abs(p1 - p2) <= Z999 * math.sqrt(v1 + v2)


@pytest.mark.parametrize("name", sorted(POINTS))
def test_cmc_agrees_with_naive(name):
    kw, n = POINTS[name]
    p = make_params(kw)
    naive = simulate(p, n, 1000 + sorted(POINTS).index(name))
    k_race = int(np.count_nonzero(naive.outcome == RACE))
    k_bad = int(np.count_nonzero(np.isin(naive.outcome, [RACE, HANG, TIMEOUT])))
    assert k_race >= 100, k_race  # the point is a fair test
    s = CmcSummary()
    for _, _, cb in iter_chunks_cmc(p, n, shard_seed(7, sorted(POINTS).index(name))):
        s.add(cb)
    pr, pb = k_race / n, k_bad / n
    assert _agree(s.mean_race, s.var_race, pr, pr * (1 - pr) / n), (s.mean_race, pr)
    assert _agree(s.mean_bad, s.var_bad, pb, pb * (1 - pb) / n), (s.mean_bad, pb)
    # race_sum is conservative: never below race, trial by trial, so not in the mean either
    assert s.mean_race_sum >= s.mean_race


def test_race_sum_bias_equals_the_reference_count_of_racing_cpus():
    # The bias of the conservative race_sum estimator is E[(N-1)^+], N = CPUs meeting the race
    # condition; cmc estimates it as the mean of race_sum - race. Independently, the scalar
    # reference (its own stream, its own code) marks every CPU that races: count them.
    # "multi_racer" has N >= 2 in ~35% of trials, so 3000 reference trials resolve the mean to
    # ~2.5% (se ~0.012 on ~0.5); both sides are compared at the 1e-4 two-sided level.
    kw, n = POINTS["multi_racer"]
    p = make_params(kw)
    s = CmcSummary()
    for _, _, cb in iter_chunks_cmc(p, n, shard_seed(8, 0)):
        s.add(cb)
    ref = reference.simulate(p, 3000, 20251201)
    x = np.array([max(sum(c.races for c in r.cpus) - 1, 0) for r in ref], dtype=float)
    assert np.count_nonzero(x) >= 300  # a fair test: many multi-racer trials
    ex = s.moments["excess"]
    assert abs(ex.mean - x.mean()) <= Z_1E4 * math.sqrt(ex.var_of_mean + x.var(ddof=1) / x.size), (ex.mean, x.mean())


CALIBRATION = ("wait0", 200, 300, 200_000)  # point, replicates, trials per replicate, naive trials


def test_cmc_is_unbiased_and_its_interval_calibrated():
    # R independent cmc estimates of p_race from n trials each (own shard seeds) against a
    # naive estimate from 200k trials of the vectorized core (p ~ 0.18, se ~ 9e-4):
    # - unbiased: the mean of the R estimates (R n = 60k trials) agrees with the naive p;
    # - the reported variance is right: the spread of the R estimates over the mean reported
    #   variance is a chi-square(R-1)/(R-1) ratio (replicate means of 300 trials at p ~ 0.18 are
    #   near normal); bounds at 1e-4 two-sided: ~[0.67, 1.43]. A factor 2 error is far outside;
    # - the 95% interval covers the naive p in ~95% of replicates: misses ~ Binomial(R, 0.05);
    #   the bound binom.ppf(1 - 1e-4, R, 0.08) = 32 misses is exceeded with probability < 1e-4
    #   while the true coverage is >= 92%; an interval of half the width (covering ~70%: ~60
    #   misses expected) fails it. Too wide an interval misses ~never, which
    #   no lower bound on misses can show at R = 200: the variance ratio above catches that.
    name, reps, n, n_naive = CALIBRATION
    p = make_params(POINTS[name][0])
    naive = simulate(p, n_naive, 4242)
    pr = float(np.count_nonzero(naive.outcome == RACE)) / n_naive
    means, variances, misses = [], [], 0
    for r in range(reps):
        s = CmcSummary()
        for _, _, cb in iter_chunks_cmc(p, n, shard_seed(31, r)):
            s.add(cb)
        means.append(s.mean_race)
        variances.append(s.var_race)
        lo, hi = s.interval("race")
        misses += not lo <= pr <= hi
    m, v = np.array(means), np.array(variances)
    assert abs(m.mean() - pr) <= Z_1E4 * math.sqrt(m.var(ddof=1) / reps + pr * (1 - pr) / n_naive), (m.mean(), pr)
    ratio = m.var(ddof=1) / v.mean()
    lo_r, hi_r = (sst.chi2.ppf(q, reps - 1) / (reps - 1) for q in (5e-5, 1 - 5e-5))
    assert lo_r <= ratio <= hi_r, (ratio, lo_r, hi_r)
    assert misses <= sst.binom.ppf(1 - 1e-4, reps, 0.08), misses


# --- (c) a forced case computable by hand -------------------------------------------------

FORCED = dict(n_cpus=2, ipi_jitter_us=0.0, nmi_jitter_us=0.0, nmi_base_us=3e4, wbinvd_sigma=0.0, p_stall=0.3,
              stall_median_us=1.0e6, stall_sigma=0.3, irq_off_mean_us=2e5)


@pytest.mark.parametrize("rev", [1, 2])
def test_forced_case_exact_and_unbiased(rev):
    p = make_params(dict(FORCED, model_rev=rev))
    # One CPU, never visited late: s = T_nmi, a = T_nmi + nmi_base, T_done = max(T_nmi + 1, c).
    # Revision 1: h = 5 + 1000 > handoff, so race <=> c in (T_nmi, a] <=> off in (T_nmi - k, a - k],
    # k = prologue + wbinvd = 1005. Revision 2: CPU 0 is dirty and flushes for w_0 = 1000 in the
    # hand-over, H = 1100 > h, so the handler must also end after c + H: c < a + h - H = a - 95.
    k = p.prologue_us + p.wbinvd_us
    end = p.nmi_base_us if rev == 1 else p.nmi_base_us + k - (p.handoff_us + p.wbinvd_us)
    x1, x2 = p.t_nmi_us - k, p.t_nmi_us + end - k
    ln = sst.lognorm(s=p.stall_sigma, scale=p.stall_median_us)
    ex = sst.expon(scale=p.irq_off_mean_us)
    exact = p.p_stall * (ln.cdf(x2) - ln.cdf(x1)) + (1 - p.p_stall) * (ex.sf(x1) - ex.sf(x2))
    b, cm = simulate_cmc(p, 3000, 5)
    assert np.allclose(cm.race, exact, rtol=1e-12, atol=0)
    assert np.allclose(cm.bad, exact, rtol=1e-12, atol=0)
    s = CmcSummary().add(cm)
    assert math.isclose(s.mean_race, exact, rel_tol=1e-12)
    lo, hi = s.interval("race")  # zero sample variance: the unseen-values bound
    assert 0 < lo < exact < hi
    naive = simulate(p, 400_000, 6)
    kk = int(np.count_nonzero(naive.outcome == RACE))
    wlo, whi = wilson(kk, len(naive), 0.999)
    assert wlo <= exact <= whi, (kk / len(naive), exact)


def test_ndtr_diff_accuracy():
    rng = np.random.default_rng(3)
    z1 = rng.uniform(-8, 8, 4000)
    dz = 10 ** rng.uniform(-9, 0.5, 4000)
    got = ndtr_diff(z1, dz)
    # wide windows: compare with scipy's tail difference where it does not cancel
    wide = dz * (np.abs(z1) + 1) > 0.5
    ref = np.where(z1 >= 0, special.ndtr(-z1) - special.ndtr(-(z1 + dz)), special.ndtr(z1 + dz) - special.ndtr(z1))
    assert np.allclose(got[wide], ref[wide], rtol=1e-12, atol=0)
    # narrow windows: the Taylor series of the integral of the density (4 terms, exact here)
    nar = dz < 1e-4
    z, h = z1[nar], dz[nar]
    series = sst.norm.pdf(z) * h * (1 - z * h / 2 + (z * z - 1) * h * h / 6 - z * (z * z - 3) * h**3 / 24)
    assert np.allclose(got[nar], series, rtol=1e-13, atol=0)
    # lower end at -inf (an irqs-off window starting at 0)
    assert ndtr_diff(np.array([-np.inf]), np.array([np.inf]), np.array([0.0]))[0] == 0.5
    assert ndtr_diff(np.array([-np.inf]), np.array([np.inf]), np.array([np.inf]))[0] == 1.0


# --- (d) never negative, never zero width --------------------------------------------------

times = st.floats(0.0, 2e3)
params = params_strategy(
    n_cpus=st.integers(2, 12),
    ipi_base_us=st.sampled_from([1.0, 0.0, 1.0005e6]),
    ipi_jitter_us=times,
    irq_off_mean_us=st.sampled_from([0.0, 20.0, 3e5]),
    p_stall=st.sampled_from([0.0, 1e-3, 0.3, 1.0]),
    stall_median_us=st.floats(0.0, 2e6),
    stall_sigma=st.sampled_from([0.0, 1e-3, 0.05, 1.0]),
    incoherent_fraction=st.sampled_from([0.0, 0.5, 1.0]),
    wbinvd_us=st.floats(0.0, 1e4),
    wbinvd_sigma=st.sampled_from([0.0, 0.5]),
    nmi_jitter_us=st.floats(0.0, 1e4),
    nmi_send_us=st.floats(0.0, 100.0),
    udelay_factor=st.floats(1.0, 2.0),
    wait=st.sampled_from([0, 1]),
    handoff_us=st.floats(0.0, 1e3),
    p_unresponsive=st.sampled_from([0.0, 0.05]),
    mitigation=st.sampled_from(["none", "early_flush"]),
)


@settings(max_examples=40, deadline=None)
@given(p=params, seed=st.integers(0, 2**32))
def test_never_negative_never_zero_width(p, seed):
    b, cm = simulate_cmc(p, 60, seed)
    assert np.all(cm.race >= 0) and np.all(cm.bad >= 0) and np.all(np.isfinite(cm.race_sum))
    assert np.all(cm.race <= cm.race_sum * (1 + 1e-12) + 1e-300)
    assert np.all(cm.race_sum <= p.n_remote * (1 + 1e-12))
    assert np.array_equal(b.outcome == RACE, cm.n_racing >= 1)
    assert np.array_equal(b.first_racer_cpu, cm.first_cpu)
    s = CmcSummary().add(cm)
    for name in ("race", "bad", "race_sum", "excess"):
        lo, hi = s.interval(name)
        mean = s.moments[name].mean
        assert 0 <= lo < hi and lo <= mean <= hi, (name, lo, mean, hi)


@settings(max_examples=200, deadline=None)
@given(
    mean=st.one_of(st.just(0.0), st.floats(0.0, 1.0), st.floats(1e-300, 1e-6)),
    var=st.one_of(st.just(0.0), st.floats(0.0, 1.0), st.floats(1e-300, 1e-12)),
    n=st.integers(1, 10**12),
    conf=st.sampled_from([0.9, 0.95, 0.999]),
)
def test_interval_properties(mean, var, n, conf):
    lo, hi = estimate_interval(mean, var, n, conf)
    assert 0 <= lo < hi <= 1 and lo <= mean <= hi


def test_combine_is_exact():
    rng = np.random.default_rng(4)
    xs = [rng.exponential(1e-7, k) for k in (10, 250, 4000)]
    parts = []
    for x in xs:
        s = CmcSummary()
        s.moments["race"].add(x)
        parts.append((s.n, s.mean_race, s.var_race))
    n, mean, var = combine(parts)
    allx = np.concatenate(xs)
    assert n == allx.size and math.isclose(mean, allx.mean(), rel_tol=1e-12)
    assert math.isclose(var, allx.var(ddof=1) / n, rel_tol=1e-9)  # the same as one pass
    # chunked accumulation equals one pass
    s = CmcSummary()
    for x in xs:
        s.moments["race"].add(x)
    assert math.isclose(s.var_race, allx.var(ddof=1) / n, rel_tol=1e-9)


# --- (e) determinism and replay -------------------------------------------------------------


def test_determinism_and_replay():
    p = make_params(dict(n_cpus=40, p_stall=0.05, stall_median_us=1.0e6, stall_sigma=0.01, nmi_jitter_us=1e3))
    seed = shard_seed(11, 3)
    n = 5000  # three chunks
    b1, c1 = simulate_cmc(p, n, seed)
    b2, c2 = simulate_cmc(p, n, shard_seed(11, 3))
    for f in ("race", "bad", "race_sum", "n_racing", "first_cpu"):
        assert np.array_equal(getattr(c1, f), getattr(c2, f))
    assert np.array_equal(b1.outcome, b2.outcome)
    assert c1.race.max() > 0
    for t in (0, 1680, 4999, int(np.argmax(c1.race))):
        d, b, c = replay_draws_cmc(p, n, seed, t)
        assert b.outcome[0] == b1.outcome[t] and c.race[0] == c1.race[t] and c.bad[0] == c1.bad[t]
        b3, c3 = cmc_draws(p, d)
        assert c3.race[0] == c1.race[t] and b3.outcome[0] == b1.outcome[t]
    with pytest.raises(ValueError):
        replay_draws_cmc(p, n, seed, n)
