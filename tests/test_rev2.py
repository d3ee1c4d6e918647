"""Model revision 2 (MODEL.md "Model revision 2"), checked on both implementations.

- Same draws, same results: the vectorized core and the scalar reference agree trial for trial,
  exactly, on revision-2 points (random draws, CPU 0's flag mixed, the flush IPI with stalls and
  dead CPUs), and the cmc values equal the cmc reference's.
- The three items, each in a hand-computed forced case: a racer that races under revision 1 but
  not under 2 because of CPU 0's flush w_0; `early_flush, wait = 0` behaving exactly as its `none`
  twin; `preflush_us` on hand-built flush-IPI arrivals (an unflagged CPU still waited for) and a
  dead CPU hanging the kexec in the flush.
- The stream: revision 1 draws nothing more; revision 2 appends its draws after revision 1's, so
  with the same seed a revision-2 `none` trial is its revision-1 twin except for CPU 0's flush.
- cmc agrees with naive within their combined 99.9% interval at 6 revision-2 points where naive
  sees >= 100 races (test_cmc.py's rule); the new draws follow their laws.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sst

from core import reference
from core.draws import draw_all, draw_rev2, new_generator
from core.estimators.cmc.reference import cmc_trial_reference
from core.estimators.cmc.stats import CmcSummary
from core.estimators.cmc.walk import cmc_draws, iter_chunks_cmc, simulate_cmc
from core.outcomes import OUTCOMES
from core.params import make_params
from core.stats import z_value
from core.summary import Summary
from core.vectorized import shard_seed, simulate, simulate_draws

from core_helpers import draws_from, mismatches

CLEAN, RACE, HANG, TIMEOUT = (OUTCOMES.index(o) for o in ("clean", "race", "hang", "timeout"))
QUIET = dict(p_stall=0.0, irq_off_mean_us=0.0, ipi_jitter_us=0.0, wbinvd_sigma=0.0, nmi_jitter_us=0.0)
T_NMI = 1e6 + 1000.0  # timeout_us * udelay_factor + console_us at the defaults
FIELDS = ("outcome", "t_done_us", "nmi_sent", "racers", "overlap_us", "first_racer_cpu", "preflush_us")
Z999 = z_value(0.999)


def both(p, d):
    """Vectorized batch and reference result of explicit draws, checked equal trial for trial."""
    b = simulate_draws(p, d)
    assert mismatches(p, d, b) == []
    return b, reference.simulate_trial(p, d.row(0).to_lists())


def same_batches(a, b) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f), equal_nan=True) for f in FIELDS)


# --- same draws, same results ----------------------------------------------------------------

REGIMES = {
    # CPU 0 dirty in half the trials: races with and without w_0 in the hand-over
    "none_cpu0_mixed": dict(n_cpus=8, p_stall=0.6, stall_median_us=1.001e6, stall_sigma=0.01, nmi_jitter_us=3e3,
                            incoherent_fraction=0.5, wbinvd_us=800.0),
    "none_short_handoff": dict(n_cpus=12, p_stall=0.4, stall_median_us=1.0011e6, stall_sigma=2e-5, nmi_send_us=50.0,
                               handoff_us=20.0, wbinvd_us=10.0, nmi_jitter_us=100.0),
    # the flush IPI: stalled CPUs delay it, dead ones hang it; contention scales CPU 0's flush
    "flush_ipi": dict(n_cpus=10, mitigation="early_flush", p_stall=0.3, stall_median_us=1.001e6, stall_sigma=0.01,
                      nmi_jitter_us=3e3, p_unresponsive=0.02, incoherent_fraction=0.5, wbinvd_contention=0.02),
    "flush_ipi_holdoffs": dict(n_cpus=8, mitigation="early_flush", p_stall=0.5, stall_median_us=1.0011e6,
                               stall_sigma=0.002, p_nmi_delay=0.2, nmi_delay_median_us=300.0),
    "early_flush_panic": dict(n_cpus=8, mitigation="early_flush", wait=0, p_stall=0.7, stall_median_us=1.001e6,
                              stall_sigma=0.01, nmi_jitter_us=2e4, p_unresponsive=0.02),
    # every WBINVD 1000 µs: h = 1005 < H = 1100 on every CPU, so only a late NMI races (cmc integrates it)
    "none_all_late": dict(n_cpus=6, wbinvd_sigma=0.0, p_stall=0.8, stall_median_us=1.001e6, stall_sigma=0.002,
                          nmi_jitter_us=300.0),
    "smi_udelay": dict(n_cpus=8, udelay_factor=0.5, p_stall=0.5, stall_median_us=5.005e5, stall_sigma=0.01,
                       nmi_jitter_us=1e3, incoherent_fraction=0.7),
}


@pytest.mark.parametrize("name", sorted(REGIMES))
def test_same_draws_same_results_trial_for_trial(name):
    p = make_params(REGIMES[name])
    assert p.model_rev == 2  # the default
    d = draw_all(np.random.default_rng(40 + sorted(REGIMES).index(name)), p, 1500)
    b = simulate_draws(p, d)
    assert mismatches(p, d, b) == []
    seen = {OUTCOMES[c] for c in np.unique(b.outcome)}
    assert "race" in seen or "hang" in seen  # the regime is exercised, not all clean


def test_the_regimes_exercise_every_revision2_item():
    # w_0 decides some race (rev 1 races, rev 2 does not, same draws); the flush IPI hangs some
    # trials and a stalled CPU sets preflush_us; wait = 0 keeps dirty CPUs under early_flush
    p = make_params(REGIMES["none_cpu0_mixed"])
    d = draw_all(np.random.default_rng(40 + sorted(REGIMES).index("none_cpu0_mixed")), p, 1500)
    r2, r1 = simulate_draws(p, d), simulate_draws(make_params(dict(REGIMES["none_cpu0_mixed"], model_rev=1)), d)
    assert np.any((r1.outcome == RACE) & (r2.outcome != RACE))
    assert np.any((r2.outcome == RACE) & d.dirty0) and np.any((r2.outcome == RACE) & ~d.dirty0)
    p = make_params(REGIMES["flush_ipi"])
    d = draw_all(np.random.default_rng(40 + sorted(REGIMES).index("flush_ipi")), p, 1500)
    b = simulate_draws(p, d)
    assert np.any((b.outcome == HANG) & (b.nmi_sent == 0))
    assert np.nanmax(b.preflush_us) > 1e5  # a CPU stalled with interrupts off when the IPI came
    assert np.any(b.outcome == RACE)


CMC_REGIMES = ("none_cpu0_mixed", "none_short_handoff", "flush_ipi", "early_flush_panic", "none_all_late")


@pytest.mark.parametrize("name", CMC_REGIMES)
def test_cmc_values_equal_the_cmc_reference(name):
    kw = dict(REGIMES[name], n_cpus=min(REGIMES[name]["n_cpus"], 6))
    p = make_params(kw)
    d = draw_all(np.random.default_rng(70 + CMC_REGIMES.index(name)), p, 8)
    b, cm = cmc_draws(p, d)
    assert np.array_equal(b.outcome == RACE, cm.n_racing >= 1)
    assert np.array_equal(b.first_racer_cpu, cm.first_cpu)
    positive = 0
    for t in range(len(b)):
        ref = cmc_trial_reference(p, d.row(t).to_lists(), detail=True)
        for r, v in zip(ref, (cm.race[t], cm.bad[t], cm.race_sum[t])):
            assert math.isclose(r, v, rel_tol=1e-9, abs_tol=1e-300), (t, ref)
        positive += ref[0] > 0
    assert positive >= 2


# --- item 1: CPU 0's flag and its hand-over flush ----------------------------------------------


@pytest.mark.parametrize("rev, dirty0, outcome", [(1, True, "race"), (2, False, "race"), (2, True, "nmi_clean")])
def test_cpu0_flush_outlasts_a_racer_that_races_under_revision_1(rev, dirty0, outcome):
    # CPU 1 (dirty: WBINVD 1000 in the stop) clears at T_nmi + 0.5; its NMI (sent at T_nmi) arrives at T_nmi + 2: a racer, and its
    # handler flushes again for w2 = 1000: it ends at T_nmi + 2 + 5 + 1000 = T_nmi + 1007.
    # T_done = T_loop = T_nmi + 1. Revision 1 (and revision 2 with CPU 0 clean): H = handoff 100,
    # 1007 > 1 + 100, a race. Revision 2 with CPU 0 dirty: H = 100 + w_0 (1000) = 1100, and
    # 1007 < 1 + 1100: CPU 0 is still flushing when the handler ends, no race. overlap is still
    # measured from T_done: 1006 in every case.
    p = make_params(dict(n_cpus=2, model_rev=rev, **QUIET))
    b, r = both(p, draws_from(p, off=[T_NMI + 0.5 - 1005.0], dirty=[True], dirty0=dirty0, w0=1000.0))
    assert r.outcome == outcome == OUTCOMES[b.outcome[0]]
    assert b.racers[0] == 1 and b.t_done_us[0] == T_NMI + 1.0 and b.overlap_us[0] == 1006.0
    assert r.handover_us == (1100.0 if rev == 2 and dirty0 else 100.0)
    assert b.first_racer_cpu[0] == (1 if outcome == "race" else -1)


def test_cpu0_flush_applies_on_the_kexec_path_only():
    # the same trial at wait = 0 (panic) or under early_flush (CPU 0 flushed early): H = handoff
    # (CPU 1 clears at T_nmi + 0.5 either way: early_flush leaves no WBINVD in its stop)
    for kw, off in ((dict(wait=0), T_NMI + 0.5 - 1005.0), (dict(mitigation="early_flush"), T_NMI + 0.5 - 5.0)):
        p = make_params(dict(n_cpus=2, **kw, **QUIET))
        b, r = both(p, draws_from(p, off=[off], dirty=[True], dirty0=True, w0=1000.0, nmi=[500.0]))
        assert r.handover_us == 100.0 and r.outcome == "race", kw


def test_same_seed_revision2_none_differs_from_revision1_only_by_cpu0s_flush():
    # revision 2 appends its draws after revision 1's: with one seed both see the same stop, trial
    # for trial; only the race rule moves (H grows), so every revision-2 race is a revision-1 race
    kw = dict(n_cpus=16, p_stall=0.3, stall_median_us=1.001e6, stall_sigma=0.01, nmi_jitter_us=3e3)
    seed = shard_seed(17, 0)
    b1, b2 = simulate(make_params(dict(kw, model_rev=1)), 4000, seed), simulate(make_params(kw), 4000, seed)
    for f in ("t_done_us", "nmi_sent", "racers", "overlap_us", "preflush_us"):
        assert np.array_equal(getattr(b1, f), getattr(b2, f), equal_nan=True), f
    r1, r2 = b1.outcome == RACE, b2.outcome == RACE
    assert np.all(r1[r2]) and r2.sum() < r1.sum() and r2.sum() > 0


# --- item 2: no early flush on the panic path --------------------------------------------------


@pytest.mark.parametrize("estimator", ["naive", "cmc"])
def test_early_flush_on_the_panic_path_is_its_none_twin(estimator):
    # revision 2, wait = 0: early_flush has no effect. With one seed the two points make the same
    # draws (neither draws anything for revision 2 at wait = 0), so every result is identical; and
    # both equal revision 1's `none` (its stream). Revision 1's early_flush does differ.
    kw = dict(n_cpus=12, wait=0, p_stall=0.5, stall_median_us=1.001e6, stall_sigma=0.01, nmi_jitter_us=2e4)
    seed = shard_seed(5, 1)
    run = simulate if estimator == "naive" else (lambda p, n, s: simulate_cmc(p, n, s)[0])
    flush2 = run(make_params(dict(kw, mitigation="early_flush")), 3000, seed)
    none2 = run(make_params(dict(kw, mitigation="none")), 3000, seed)
    none1 = run(make_params(dict(kw, mitigation="none", model_rev=1)), 3000, seed)
    flush1 = run(make_params(dict(kw, mitigation="early_flush", model_rev=1)), 3000, seed)
    assert same_batches(flush2, none2) and same_batches(none2, none1)
    assert np.isnan(flush2.preflush_us).all() and np.isfinite(flush1.preflush_us).all()
    assert not np.array_equal(flush1.t_done_us, flush2.t_done_us, equal_nan=True)
    assert (none2.outcome == RACE).sum() >= 50
    if estimator == "cmc":
        _, c2 = simulate_cmc(make_params(dict(kw, mitigation="early_flush")), 3000, seed)
        _, c1 = simulate_cmc(make_params(dict(kw, mitigation="none")), 3000, seed)
        assert np.array_equal(c1.race, c2.race) and np.array_equal(c1.bad, c2.bad)


# --- item 3: the early flush is an IPI -----------------------------------------------------------


def test_preflush_waits_for_every_cpu_to_take_the_flush_ipi():
    # 3 remote CPUs; WBINVD lengths w = 500 (CPU 1, flagged), 9999 (CPU 2, unflagged: it does not
    # flush), 300 (CPU 3, flagged); CPU 0 flagged, w_0 = 400 x (1 + 0.01 x 3) = 412.
    # Each remote CPU finishes at max(ipi', off') + (w if flagged):
    #   CPU 1: max(3, 0) + 500 = 503;  CPU 2: max(1, 700) + 0 = 700;  CPU 3: max(2, off'_3) + 300.
    p = make_params(dict(n_cpus=4, mitigation="early_flush", wbinvd_contention=0.01, **QUIET))
    common = dict(dirty=[True, False, True], w=[500.0, 9999.0, 300.0], ipi_pre=[3.0, 1.0, 2.0], dirty0=True, w0=400.0)
    b, r = both(p, draws_from(p, off_pre=[0.0, 700.0, 5e4], **common))  # CPU 3 in a 50 ms irqs-off section
    assert b.preflush_us[0] == 5e4 + 300.0 and r.cpus[2].flush_done == 50300.0
    b, r = both(p, draws_from(p, off_pre=[0.0, 700.0, 0.0], **common))
    assert b.preflush_us[0] == 700.0  # the unflagged CPU 2 is waited for all the same
    assert [c.flush_done for c in r.cpus] == [503.0, 700.0, 302.0]
    b, r = both(p, draws_from(p, off_pre=[0.0, 0.0, 0.0], **common))
    assert b.preflush_us[0] == 503.0 and r.cpu0_wbinvd_us == pytest.approx(412.0, rel=1e-15)
    b, r = both(p, draws_from(p, off_pre=[0.0, 0.0, 0.0], **dict(common, w0=600.0)))
    assert b.preflush_us[0] == 600.0 * (1 + 0.01 * 3)  # CPU 0's own flush is the longest
    # the stop itself runs with every flag clear: c = e + prologue = 1 + 5 on every CPU
    assert b.t_done_us[0] == 6.0 and r.outcome == "clean"


def test_a_dead_cpu_hangs_the_kexec_in_the_flush():
    # CPU 2 never answers: revision 2 hangs in the early flush (no stop, no NMI, no preflush time);
    # revision 1 (no IPI) flushes at once and hangs later, in the stop, after sending NMIs
    kw = dict(n_cpus=3, mitigation="early_flush", **QUIET)
    p2, p1 = make_params(kw), make_params(dict(kw, model_rev=1))
    d = draws_from(p2, dead=[False, True], dirty=[True, True])
    b, r = both(p2, d)
    assert (r.outcome, r.hung_in_flush, r.phase, r.t_done_us, r.preflush_us) == ("hang", 2, 0, None, None)
    assert b.outcome[0] == HANG and b.nmi_sent[0] == 0 and b.racers[0] == 0 and np.isnan(b.preflush_us[0])
    b1, r1 = both(p1, d)
    assert r1.outcome == "hang" and b1.nmi_sent[0] >= 1 and b1.preflush_us[0] == 1000.0
    # a hang in the flush is not an NMI-phase trial; a hang in the stop is
    assert Summary().add(b).nmi_phase == 0 and Summary().add(b1).nmi_phase == 1
    assert Summary().add(b).preflush_report()["trials"] == 0


def test_flush_ipi_cost_follows_the_irqs_off_law():
    # preflush_us at p_stall = 1 (every CPU stalled, flags clear: preflush = max_i off'_i over 7
    # CPUs, the IPI latency far below) has the law of the max of 7 LogNormal(1e5, 0.5): P(<= x) =
    # Phi(log(x / 1e5) / 0.5)^7. One-sample KS on 4000 trials at 1e-4.
    p = make_params(dict(n_cpus=8, mitigation="early_flush", p_stall=1.0, stall_median_us=1e5, stall_sigma=0.5,
                         incoherent_fraction=0.0))
    b = simulate(p, 4000, shard_seed(3, 0))
    x = b.preflush_us
    assert np.isfinite(x).all()
    ks = sst.kstest(x, lambda v: sst.norm.cdf(np.log(np.maximum(v, 1e-300) / 1e5) / 0.5) ** 7)
    assert ks.pvalue > 1e-4, ks


# --- the stream --------------------------------------------------------------------------------


def test_revision1_and_the_panic_path_draw_nothing_more():
    for kw in (dict(model_rev=1), dict(model_rev=1, mitigation="early_flush"), dict(wait=0),
               dict(wait=0, mitigation="early_flush")):
        p = make_params(dict(n_cpus=8, **kw))
        a, b = new_generator(np.random.SeedSequence(9)), new_generator(np.random.SeedSequence(9))
        r = draw_rev2(a, p, 100)
        assert (r.dirty0, r.w0, r.ipi_pre, r.off_pre) == (None, None, None, None), kw
        assert np.array_equal(a.random(4), b.random(4)), kw  # the stream has not moved


def test_new_draws_follow_their_laws():
    # dirty0 ~ Bernoulli(f); w0 ~ LogNormal(wbinvd_us, wbinvd_sigma) without contention; ipi'/off' have
    # the laws of ipi/off: each checked on 20,000 trials at 1e-4
    p = make_params(dict(n_cpus=5, mitigation="early_flush", incoherent_fraction=0.3, wbinvd_us=700.0,
                         wbinvd_sigma=0.4, wbinvd_contention=0.5, p_stall=0.2, stall_median_us=3e4, stall_sigma=0.8))
    n = 20_000
    r = draw_rev2(new_generator(np.random.SeedSequence(21)), p, n)
    assert sst.binomtest(int(r.dirty0.sum()), n, 0.3).pvalue > 1e-4
    w0 = r.w0[r.dirty0]
    assert sst.kstest(w0, sst.lognorm(s=0.4, scale=700.0).cdf).pvalue > 1e-4
    assert sst.kstest(r.ipi_pre.ravel() - 1.0, sst.expon(scale=2.0).cdf).pvalue > 1e-4
    off = r.off_pre.ravel()
    cdf = lambda v: 0.2 * sst.lognorm(s=0.8, scale=3e4).cdf(v) + 0.8 * sst.expon(scale=20.0).cdf(v)  # noqa: E731
    assert sst.kstest(off, cdf).pvalue > 1e-4
    # the reference's own scalar stream draws them with the same laws
    rng = np.random.default_rng(22)
    ref = [reference.draw_trial(rng, p) for _ in range(4000)]
    assert sst.binomtest(sum(t["dirty0"] for t in ref), 4000, 0.3).pvalue > 1e-4
    assert sst.kstest([t["w0"] for t in ref], sst.lognorm(s=0.4, scale=700.0).cdf).pvalue > 1e-4
    assert sst.kstest([x for t in ref for x in t["off_pre"]], cdf).pvalue > 1e-4


def test_replay_rebuilds_the_revision2_draws():
    from core.vectorized import replay_draws

    p = make_params(REGIMES["flush_ipi"])
    seed = shard_seed(8, 0)
    full = simulate(p, 500, seed)
    for t in (0, 250, 499):
        d, one = replay_draws(p, 500, seed, t)
        assert d.dirty0 is not None and d.ipi_pre is not None and d.ipi_pre.shape == (1, p.n_remote)
        assert same_batches(one, full.row(t)) and mismatches(p, d, simulate_draws(p, d)) == []


# --- cmc agrees with naive at revision-2 points ----------------------------------------------

POINTS = {
    "none_cpu0": (dict(n_cpus=16, p_stall=0.05, stall_median_us=1.0e6, stall_sigma=0.01, nmi_jitter_us=3e3), 20000),
    "none_cpu0_half": (dict(n_cpus=16, p_stall=0.05, stall_median_us=1.0e6, stall_sigma=0.01, nmi_jitter_us=2e3,
                            incoherent_fraction=0.5), 20000),
    "flush_ipi": (dict(n_cpus=16, mitigation="early_flush", p_stall=0.05, stall_median_us=1.0e6, stall_sigma=0.01,
                       nmi_jitter_us=3e3), 20000),
    "flush_ipi_dead": (dict(n_cpus=16, mitigation="early_flush", p_unresponsive=0.005, p_stall=0.05,
                            stall_median_us=1.0e6, stall_sigma=0.01, nmi_jitter_us=3e3), 20000),
    "flush_ipi_holdoffs": (dict(n_cpus=16, mitigation="early_flush", p_stall=0.1, stall_median_us=1.0011e6,
                                stall_sigma=0.002, p_nmi_delay=0.2, nmi_delay_median_us=300.0), 20000),
    "early_flush_panic": (dict(n_cpus=16, mitigation="early_flush", wait=0, p_stall=0.05, stall_median_us=1.0e6,
                               stall_sigma=0.01, nmi_jitter_us=1e4), 20000),
}


@pytest.mark.parametrize("name", sorted(POINTS))
def test_cmc_agrees_with_naive(name):
    kw, n = POINTS[name]
    p = make_params(kw)
    naive = simulate(p, n, 2000 + sorted(POINTS).index(name))
    k_race = int(np.count_nonzero(naive.outcome == RACE))
    k_bad = int(np.count_nonzero(np.isin(naive.outcome, [RACE, HANG, TIMEOUT])))
    assert k_race >= 100, k_race  # a fair test
    s = CmcSummary()
    for _, _, cb in iter_chunks_cmc(p, n, shard_seed(77, sorted(POINTS).index(name))):
        s.add(cb)
    for est, var, k in ((s.mean_race, s.var_race, k_race), (s.mean_bad, s.var_bad, k_bad)):
        q = k / n
        assert abs(est - q) <= Z999 * math.sqrt(var + q * (1 - q) / n), (name, est, q)
