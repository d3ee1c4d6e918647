"""The cmc estimator where a race needs a late NMI (core/README.md, "Late NMIs").

A CPU whose NMI-path handler is shorter than the hand-over (every CPU under
early_flush) races only if its NMI arrives later than nu0; the estimator integrates
its NMI latency out too. Checked here:

(a) Same draws: the vectorized values equal the scalar reference, which finds nu0 by
    running the reference model and integrates the reference model over off_i at the
    same latency points, to 1e-9 relative (the accuracy the model's floating-point
    comparisons near 1e6 µs allow; see core/README.md "Window probabilities").
(b) nu0 is a true threshold: below it the reference model never races, just above it
    it can.
(c) Same law: at 7 points in the new regimes (early_flush with wait = 1 and 0, a
    small hand-over, dead CPUs, several late CPUs, mitigation none with short second
    flushes) where naive MC sees >= 100 races in 20k trials, cmc and naive agree within
    their combined 99.9% interval (p_race and p_bad). With 14 comparisons a correct
    implementation fails for a random seed with probability < 1.4%; seeds are fixed.
(d) A case exact by quadrature (n_cpus = 2, early_flush): the cmc mean equals scipy's
    integral within its own 99.9% interval, and 100 independent 95% intervals are
    calibrated (mean squared z-score near 1).
(e) Where the estimate is 0, its interval is the Clopper-Pearson bound of 0 races,
    never wider than the naive Wilson interval of the same trials.
(f) NMI hold-offs (p_nmi_delay > 0; the hold-off stratum uses a fresh hold-off draw
    per CPU): (a) in 4 regimes (early_flush wait 1 and 0, atoms: jitter 0 and sigma 0,
    mitigation none with short second flushes), (c) at 4 more points (so 11 in all),
    and an exact quadrature case where the hold-offs carry > 99% of the probability.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as sst

from core.draws import draw_all
from core.estimators.cmc.reference import _integrate_off, _with, cmc_trial_reference, ref_nu_threshold
from core.estimators.cmc.stats import CmcSummary
from core.estimators.cmc.walk import cmc_draws, draw_holdoffs, iter_chunks_cmc, simulate_cmc
from core.outcomes import OUTCOMES
from core.params import make_params
from core.stats import clopper_pearson, wilson, z_value
from core.vectorized import shard_seed, simulate

RACE, HANG, TIMEOUT = (OUTCOMES.index(o) for o in ("race", "hang", "timeout"))
Z999 = z_value(0.999)
T_NMI = 1.001e6  # T1 + console_us at the defaults: stalls ending here make CPUs late

# --- (a) vectorized vs scalar reference --------------------------------------------------

SAME_DRAWS = {
    # weights exp(-x0 / 10) ~ 1e-4: the exponential tail matters
    "ef_small_jitter": dict(n_cpus=6, mitigation="early_flush", nmi_jitter_us=10.0, p_stall=0.8,
                            stall_median_us=1.0005e6, stall_sigma=0.003),
    # model_rev = 1: revision 2 has no early flush on the panic path (wait = 0)
    "ef_wait0": dict(n_cpus=6, mitigation="early_flush", wait=0, model_rev=1, nmi_wait_us=200.0, nmi_jitter_us=150.0,
                     p_stall=0.8, stall_median_us=T_NMI, stall_sigma=0.0005),
    "ef_wait0_dead": dict(n_cpus=6, mitigation="early_flush", wait=0, model_rev=1, nmi_wait_us=300.0, p_unresponsive=0.1,
                          nmi_jitter_us=100.0, p_stall=0.7, stall_median_us=T_NMI, stall_sigma=0.001),
    "ef_many_late": dict(n_cpus=7, mitigation="early_flush", p_stall=0.9, stall_median_us=1.0008e6,
                         stall_sigma=0.0005, nmi_jitter_us=60.0, handoff_us=60.0, nmi_send_us=5.0),
    "none_short_w2": dict(n_cpus=6, wbinvd_us=60.0, wbinvd_sigma=0.7, p_stall=0.8, stall_median_us=T_NMI,
                          stall_sigma=0.001, nmi_jitter_us=100.0),
    "ef_no_jitter": dict(n_cpus=5, mitigation="early_flush", nmi_jitter_us=0.0, nmi_base_us=130.0,
                         p_stall=0.8, stall_median_us=T_NMI, stall_sigma=0.001),
}


@pytest.mark.parametrize("name", sorted(SAME_DRAWS))
def test_vectorized_equals_scalar_reference(name):
    p = make_params(SAME_DRAWS[name])
    d = draw_all(np.random.default_rng(100 + sorted(SAME_DRAWS).index(name)), p, 10)
    b, cm = cmc_draws(p, d)
    assert np.array_equal(b.outcome == RACE, cm.n_racing >= 1)
    assert np.array_equal(b.first_racer_cpu, cm.first_cpu)
    positive = 0
    for t in range(len(b)):
        ref = cmc_trial_reference(p, d.row(t).to_lists(), detail=True)
        vec = (cm.race[t], cm.bad[t], cm.race_sum[t])
        for r, v in zip(ref, vec):
            assert math.isclose(r, v, rel_tol=1e-9, abs_tol=1e-300), (t, ref, vec)
        positive += ref[0] > 0
    assert positive >= 3  # the regime is exercised, not all zeros


# --- (b) nu0 is the threshold ------------------------------------------------------------


@pytest.mark.parametrize("name", ["ef_wait0", "ef_many_late", "ef_small_jitter"])
def test_nu_threshold_is_tight_and_safe(name):
    p = make_params(SAME_DRAWS[name])
    d = draw_all(np.random.default_rng(7), p, 6)
    above = 0
    for t in range(6):
        dl = d.row(t).to_lists()
        for i in range(p.n_remote):
            if dl["dead"][i]:
                continue
            h = p.prologue_us + (dl["w2"][i] if dl["dirty"][i] and p.mitigation == "none" else 0.0)
            k = p.prologue_us + (dl["w"][i] if dl["dirty"][i] and p.mitigation == "none" else 0.0)
            nu0 = ref_nu_threshold(p, dl, i, k, h)
            if not math.isfinite(nu0):
                continue
            for nu in (nu0 - 1e-6, nu0 - 1.0, 0.5 * nu0):  # no race below the threshold
                assert _integrate_off(p, _with(dl, i, nmi=nu), i) == [0.0, 0.0, 0.0], (t, i, nu0, nu)
            above += _integrate_off(p, _with(dl, i, nmi=nu0 + 2.0), i)[0] > 0
    assert above > 0  # and races become possible just above it


# --- (c) cmc vs naive in the new regimes ----------------------------------------------------

POINTS = {
    "ef_wait1": dict(n_cpus=16, mitigation="early_flush", p_stall=0.05, stall_median_us=T_NMI, stall_sigma=0.001,
                     nmi_jitter_us=100.0),
    "ef_wait0": dict(n_cpus=16, mitigation="early_flush", wait=0, model_rev=1, nmi_wait_us=200.0, p_stall=0.1,
                     stall_median_us=T_NMI, stall_sigma=0.001, nmi_jitter_us=150.0),
    "ef_small_handoff": dict(n_cpus=12, mitigation="early_flush", handoff_us=20.0, p_stall=0.3,
                             stall_median_us=T_NMI, stall_sigma=0.0005, nmi_jitter_us=20.0),
    "ef_wait0_dead": dict(n_cpus=16, mitigation="early_flush", wait=0, model_rev=1, p_unresponsive=0.01, p_stall=0.1,
                          stall_median_us=T_NMI, stall_sigma=0.001, nmi_jitter_us=150.0),
    "ef_many_late": dict(n_cpus=8, mitigation="early_flush", p_stall=0.6, stall_median_us=1.0008e6,
                         stall_sigma=0.0005, nmi_jitter_us=60.0, handoff_us=60.0),
    "none_short_w2": dict(n_cpus=16, wbinvd_us=60.0, wbinvd_sigma=0.5, p_stall=0.05, stall_median_us=T_NMI,
                          stall_sigma=0.001, nmi_jitter_us=100.0),
    "none_mixed": dict(n_cpus=16, incoherent_fraction=0.5, wbinvd_us=200.0, p_stall=0.05, stall_median_us=T_NMI,
                       stall_sigma=0.001, nmi_jitter_us=100.0),
}


def _agree(p1, v1, p2, v2):
    return abs(p1 - p2) <= Z999 * math.sqrt(v1 + v2)


def naive_vs_cmc(kw: dict, n: int, seed: int):
    """(naive race count, naive bad count, CmcSummary) from independent streams."""
    p = make_params(kw)
    naive = simulate(p, n, 2000 + seed)
    k_race = int(np.count_nonzero(naive.outcome == RACE))
    k_bad = int(np.count_nonzero(np.isin(naive.outcome, [RACE, HANG, TIMEOUT])))
    s = CmcSummary()
    for _, _, cb in iter_chunks_cmc(p, n, shard_seed(17, seed)):
        s.add(cb)
    return k_race, k_bad, s


@pytest.mark.parametrize("name", sorted(POINTS))
def test_cmc_agrees_with_naive(name):
    n = 20000
    k_race, k_bad, s = naive_vs_cmc(POINTS[name], n, sorted(POINTS).index(name))
    assert k_race >= 100, k_race  # the point is a fair test
    pr, pb = k_race / n, k_bad / n
    assert _agree(s.mean_race, s.var_race, pr, pr * (1 - pr) / n), (s.mean_race, pr)
    assert _agree(s.mean_bad, s.var_bad, pb, pb * (1 - pb) / n), (s.mean_bad, pb)
    assert s.var_race < pr * (1 - pr) / n  # and it needs fewer trials


# --- (d) exact by quadrature, and calibrated ----------------------------------------------

EXACT = dict(n_cpus=2, mitigation="early_flush", ipi_jitter_us=0.0, p_stall=1.0, stall_median_us=T_NMI,
             stall_sigma=0.001, nmi_jitter_us=30.0)


def exact_race(kw: dict) -> float:
    """P(race) for one remote CPU under early_flush, by scipy quadrature.

    The CPU is visited at s = T_nmi; B = s + nmi_send_us; h = prologue. It races iff its NMI
    latency nu exceeds B - s + handoff - h and its clear time c = off + prologue (off > ipi
    surely here) lies in (s, s + nu + h - handoff]. nu = nmi_base + X, X ~ Exp(jitter).
    """
    p = make_params(kw)
    s, g = p.t_nmi_us, p.handoff_us - p.prologue_us
    off = sst.lognorm(s=p.stall_sigma, scale=p.stall_median_us)
    x0 = p.nmi_send_us + g - p.nmi_base_us
    lo = s - p.prologue_us

    def f(x):
        return math.exp(-x / p.nmi_jitter_us) / p.nmi_jitter_us * (off.cdf(lo + p.nmi_base_us + x - g) - off.cdf(lo))

    val, err = integrate.quad(f, x0, x0 + 60 * p.nmi_jitter_us, epsabs=0, epsrel=1e-12, limit=200)
    assert err < 1e-9 * val
    return val


def test_exact_case_unbiased_and_calibrated():
    exact = exact_race(EXACT)
    assert exact > 0
    p = make_params(EXACT)
    _, cm = simulate_cmc(p, 4000, 3)
    s = CmcSummary().add(cm)
    assert _agree(s.mean_race, s.var_race, exact, 0.0), (s.mean_race, exact)
    # 100 independent runs of 300 trials: z-scores against the exact value
    z = []
    for k in range(100):
        _, c = simulate_cmc(p, 300, shard_seed(99, k))
        sk = CmcSummary().add(c)
        z.append((sk.mean_race - exact) / math.sqrt(sk.var_race))
    z = np.array(z)
    # mean z ~ N(0, 0.1); mean z^2 ~ chi2_100 / 100 (sd 0.14): wide bands, still a real check
    # of bias (a 30% bias would put mean z near 3) and of the variance estimate.
    assert abs(z.mean()) < 0.4, z.mean()
    assert 0.6 < (z * z).mean() < 1.6, (z * z).mean()
    covered = int(np.count_nonzero(np.abs(z) <= z_value(0.95)))
    assert covered >= 88, covered  # Binomial(100, 0.95) is below 88 with prob. < 0.2%


# --- (e) a zero estimate's interval ------------------------------------------------------------


def test_zero_estimate_interval_not_wider_than_naive():
    # jitter 0.1 µs: P(NMI later than ~94 µs) = exp(-940) underflows: every value is 0
    p = make_params(dict(n_cpus=64, mitigation="early_flush", nmi_jitter_us=0.1))
    n = 3000
    b, cm = simulate_cmc(p, n, 5)
    s = CmcSummary().add(cm)
    assert s.mean_race == 0 and s.mean_bad == 0
    k = int(np.count_nonzero(b.outcome == RACE))
    assert k == 0
    for name in ("race", "bad"):
        lo, hi = s.interval(name)
        assert lo == 0.0
        assert math.isclose(hi, clopper_pearson(0, n)[1], rel_tol=1e-9)
        assert hi <= wilson(0, n)[1]
    # race_sum estimates E[N], not a probability: it keeps the y_max bound
    assert s.interval("race_sum")[1] > 10 * s.interval("race")[1]


# --- NMI hold-offs (p_nmi_delay > 0) ---------------------------------------------------------

HOLD_SAME_DRAWS = {
    "ef_hold": dict(n_cpus=6, mitigation="early_flush", p_nmi_delay=0.3, nmi_delay_median_us=150.0,
                    nmi_delay_sigma=0.5, p_stall=0.8, stall_median_us=T_NMI, stall_sigma=0.0005),
    "ef_hold_wait0": dict(n_cpus=6, mitigation="early_flush", wait=0, model_rev=1, nmi_wait_us=150.0, p_nmi_delay=0.5,
                          nmi_delay_median_us=120.0, p_stall=0.8, stall_median_us=T_NMI, stall_sigma=0.0005),
    "ef_hold_atoms": dict(n_cpus=5, mitigation="early_flush", nmi_jitter_us=0.0, p_nmi_delay=0.5,
                          nmi_delay_median_us=140.0, nmi_delay_sigma=0.0, p_stall=0.8, stall_median_us=T_NMI,
                          stall_sigma=0.0005),
    "none_hold_short_w2": dict(n_cpus=6, wbinvd_us=60.0, wbinvd_sigma=0.7, p_nmi_delay=0.3, p_stall=0.8,
                               stall_median_us=T_NMI, stall_sigma=0.001, nmi_jitter_us=20.0),
}


@pytest.mark.parametrize("name", sorted(HOLD_SAME_DRAWS))
def test_hold_offs_vectorized_equals_scalar_reference(name):
    p = make_params(HOLD_SAME_DRAWS[name])
    d = draw_all(np.random.default_rng(200 + sorted(HOLD_SAME_DRAWS).index(name)), p, 8)
    hold = draw_holdoffs(p, 8, shard_seed(1, 2))
    assert hold is not None and hold.shape == d.nmi.shape
    b, cm = cmc_draws(p, d, hold)
    assert np.array_equal(b.outcome == RACE, cm.n_racing >= 1)
    positive = 0
    for t in range(len(b)):
        ref = cmc_trial_reference(p, d.row(t).to_lists(), detail=True, holdoff=hold[t].tolist())
        vec = (cm.race[t], cm.bad[t], cm.race_sum[t])
        for r, v in zip(ref, vec):
            assert math.isclose(r, v, rel_tol=1e-9, abs_tol=1e-300), (t, ref, vec)
        positive += ref[0] > 0
    assert positive >= 3


HOLD_POINTS = {
    "ef_hold": dict(n_cpus=16, mitigation="early_flush", p_nmi_delay=0.2, nmi_delay_sigma=0.5, p_stall=0.1,
                    stall_median_us=T_NMI, stall_sigma=0.001),
    "ef_hold_wait0": dict(n_cpus=16, mitigation="early_flush", wait=0, model_rev=1, nmi_wait_us=200.0, p_nmi_delay=0.2,
                          p_stall=0.1, stall_median_us=T_NMI, stall_sigma=0.001),
    "ef_hold_atom": dict(n_cpus=16, mitigation="early_flush", nmi_jitter_us=0.0, p_nmi_delay=0.3,
                         nmi_delay_median_us=160.0, nmi_delay_sigma=0.0, p_stall=0.1, stall_median_us=T_NMI,
                         stall_sigma=0.001),
    "none_hold": dict(n_cpus=16, p_nmi_delay=0.3, p_stall=0.05, stall_median_us=T_NMI, stall_sigma=0.001),
}


@pytest.mark.parametrize("name", sorted(HOLD_POINTS))
def test_hold_offs_cmc_agrees_with_naive(name):
    n = 20000
    k_race, k_bad, s = naive_vs_cmc(HOLD_POINTS[name], n, 50 + sorted(HOLD_POINTS).index(name))
    assert k_race >= 100, k_race
    pr, pb = k_race / n, k_bad / n
    assert _agree(s.mean_race, s.var_race, pr, pr * (1 - pr) / n), (s.mean_race, pr)
    assert _agree(s.mean_bad, s.var_bad, pb, pb * (1 - pb) / n), (s.mean_bad, pb)
    assert s.var_race < pr * (1 - pr) / n


EXACT_HOLD = dict(EXACT, p_nmi_delay=0.01, nmi_delay_median_us=100.0, nmi_delay_sigma=0.5, nmi_jitter_us=3.0)


def exact_race_hold(kw: dict) -> float:
    """EXACT's P(race) with hold-offs: (1 - p) times the no-hold-off integral plus p times
    its average over D = median exp(sigma Z) (scipy quadrature over Z and X)."""
    p = make_params(kw)
    s, g = p.t_nmi_us, p.handoff_us - p.prologue_us
    off = sst.lognorm(s=p.stall_sigma, scale=p.stall_median_us)
    x0 = p.nmi_send_us + g - p.nmi_base_us
    lo = s - p.prologue_us
    j = p.nmi_jitter_us

    def inner(dd):
        def f(x):
            return math.exp(-x / j) / j * (off.cdf(lo + p.nmi_base_us + dd + x - g) - off.cdf(lo))

        a = max(x0 - dd, 0.0)
        return integrate.quad(f, a, a + 60 * j, epsabs=0, epsrel=1e-11, limit=200)[0]

    def outer(z):
        return sst.norm.pdf(z) * inner(p.nmi_delay_median_us * math.exp(p.nmi_delay_sigma * z))

    held = integrate.quad(outer, -9, 9, points=[math.log((x0 + 1) / p.nmi_delay_median_us) / p.nmi_delay_sigma],
                          epsabs=0, epsrel=1e-10, limit=400)[0]
    return (1 - p.p_nmi_delay) * exact_race(dict(kw, p_nmi_delay=0.0)) + p.p_nmi_delay * held


def test_hold_off_exact_case_unbiased():
    exact = exact_race_hold(EXACT_HOLD)
    free = exact_race(dict(EXACT_HOLD, p_nmi_delay=0.0))
    assert exact > 100 * free  # the hold-offs dominate: the check is about them
    p = make_params(EXACT_HOLD)
    _, cm = simulate_cmc(p, 4000, 3)
    s = CmcSummary().add(cm)
    assert _agree(s.mean_race, s.var_race, exact, 0.0), (s.mean_race, exact, s.var_race ** 0.5)
    assert z_value(0.95) * s.var_race ** 0.5 < 0.05 * exact  # and it is precise from 4000 trials
