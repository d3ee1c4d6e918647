"""Hand-computed cases where MODEL.md forces the outcome; each checked on both implementations."""

from __future__ import annotations

import numpy as np
import pytest

from core import reference
from core.draws import draw_all
from core.outcomes import OUTCOMES
from core.params import make_params
from core.vectorized import simulate, simulate_draws

from core_helpers import draws_from, mismatches

QUIET = dict(p_stall=0.0, irq_off_mean_us=0.0, ipi_jitter_us=0.0, wbinvd_sigma=0.0, nmi_jitter_us=0.0)
T_NMI = 1e6 + 1000.0  # timeout_us * udelay_factor + console_us at defaults


def both(p, d):
    """Vectorized batch and reference result of a single explicit trial, checked equal."""
    b = simulate_draws(p, d)
    assert mismatches(p, d, b) == []
    return b, reference.simulate_trial(p, d.row(0).to_lists())


def test_all_clean_with_exact_stop_time():
    # e = ipi_base = 1; c = 1 + prologue 5 + WBINVD 1000 = 1006 on every CPU.
    p = make_params(dict(n_cpus=8, **QUIET))
    b = simulate(p, 500, 7)
    assert (b.outcome == 0).all()
    assert np.all(b.t_done_us == 1006.0)
    assert (b.nmi_sent == 0).all() and np.isnan(b.preflush_us).all()


def test_clean_without_incoherent_flag_skips_wbinvd():
    p = make_params(dict(n_cpus=4, incoherent_fraction=0.0, **QUIET))
    assert np.all(simulate(p, 100, 1).t_done_us == 6.0)


def test_stop_time_equal_to_deadline_counts_as_clean():
    # One CPU clears exactly at T1 = 1e6.
    p = make_params(dict(n_cpus=3, **QUIET))
    b, r = both(p, draws_from(p, off=[1e6 - 5.0, 0.0]))
    assert r.outcome == "clean" and b.t_done_us[0] == 1e6


def test_late_nmi_without_wbinvd_is_a_harmless_racer():
    # CPU 1 clears at T_nmi + 0.5, its NMI (sent at T_nmi) arrives at T_nmi + 2 >= c: racer.
    # T_loop = T_nmi + 1 (one send), F = c, T_done = T_nmi + 1; handler ends at a + prologue = T_nmi + 7.
    p = make_params(dict(n_cpus=2, **QUIET))  # explicit draws: nmi latency 2 µs
    b, r = both(p, draws_from(p, off=[T_NMI + 0.5 - 5.0]))
    assert r.outcome == "nmi_clean"
    assert b.racers[0] == 1 and b.nmi_sent[0] == 1
    assert b.t_done_us[0] == T_NMI + 1.0
    assert b.overlap_us[0] == pytest.approx(6.0)  # 7 - 1, below handoff_us = 100
    assert b.first_racer_cpu[0] == -1


def test_late_nmi_races_when_handoff_is_short():
    p = make_params(dict(n_cpus=2, handoff_us=1.0, **QUIET))
    b, r = both(p, draws_from(p, off=[T_NMI + 0.5 - 5.0]))
    assert r.outcome == "race" and OUTCOMES[b.outcome[0]] == "race"
    assert b.first_racer_cpu[0] == 1 and b.overlap_us[0] == pytest.approx(6.0)


def test_wbinvd_turns_the_late_nmi_into_a_race():
    # Dirty CPU clears at T_nmi + 0.5 after a 1000 µs WBINVD; the racing NMI handler
    # runs prologue + a second 1000 µs WBINVD: it ends at T_nmi + 2 + 1005, far past T_done + 100.
    p = make_params(dict(n_cpus=2, **QUIET))
    b, r = both(p, draws_from(p, off=[T_NMI + 0.5 - 1005.0], dirty=[True]))
    assert r.outcome == "race"
    assert b.overlap_us[0] == pytest.approx(2 + 1005 - 1.0)
    assert r.cpus[0].nmi_case == "after-clear" and r.cpus[0].races


def test_nmi_during_wbinvd_delays_the_clear():
    # CPU enters at T_nmi - 500, WBINVD until T_nmi + 505: the NMI (T_nmi + 2) lands during it,
    # is taken when WBINVD retires, and stop_this_cpu() runs again: f = c + prologue + w2.
    p = make_params(dict(n_cpus=2, **QUIET))
    b, r = both(p, draws_from(p, off=[T_NMI - 500.0], dirty=[True], w2=[300.0]))
    c = T_NMI - 500.0 + 5 + 1000
    assert r.cpus[0].nmi_case == "during-wbinvd"
    assert b.t_done_us[0] == c + 5 + 300.0 and r.outcome == "nmi_clean" and b.racers[0] == 0


def test_nmi_before_entry_stops_the_stalled_cpu_with_its_first_flush():
    # CPU stalled until 3e6; the NMI at T_nmi + 2 interrupts the stall: f = a + prologue + w.
    p = make_params(dict(n_cpus=2, **QUIET))
    b, r = both(p, draws_from(p, off=[3e6], dirty=[True], w=[700.0]))
    assert r.cpus[0].nmi_case == "before-entry"
    assert b.t_done_us[0] == T_NMI + 2 + 5 + 700.0


def test_nmi_loop_clock_skips_reported_cpus_and_walks_ascending():
    # CPU 1 late (sent at T_nmi), CPU 2 clears at T_nmi + 0.5 < its visit at T_nmi + 1: reported,
    # no NMI, clock stays; CPU 3 late: sent at T_nmi + 1. T_loop = T_nmi + 2.
    p = make_params(dict(n_cpus=4, **QUIET))
    d = draws_from(p, off=[2e6, T_NMI + 0.5 - 5.0, 2e6], nmi=[10.0] * 3)
    b, r = both(p, d)
    sends = [cpu.nmi_send for cpu in r.cpus]
    assert sends == [T_NMI, None, T_NMI + 1.0]
    assert r.t_loop_us == T_NMI + 2.0 and b.nmi_sent[0] == 2
    assert b.t_done_us[0] == T_NMI + 1.0 + 10.0 + 5.0  # CPU 3: a + prologue


def test_cpu_clearing_inside_the_walk_depends_on_earlier_sends():
    # CPU 3 clears at T_nmi + 1.5: with CPUs 1 and 2 sent first it is visited at T_nmi + 2
    # and has reported; with only CPU 1 sent it would be visited at T_nmi + 1 and get an NMI.
    p = make_params(dict(n_cpus=4, **QUIET))
    late = T_NMI + 1.5 - 5.0
    b2, r2 = both(p, draws_from(p, off=[2e6, 2e6, late]))
    assert [c.nmi_send is not None for c in r2.cpus] == [True, True, False] and b2.nmi_sent[0] == 2
    b1, r1 = both(p, draws_from(p, off=[2e6, 0.0, late]))
    assert [c.nmi_send is not None for c in r1.cpus] == [True, False, True] and b1.nmi_sent[0] == 2


@pytest.mark.parametrize("n", [2, 9])
def test_all_unresponsive_hangs_with_wait_1(n):
    p = make_params(dict(n_cpus=n, p_unresponsive=1.0))
    b = simulate(p, 200, 3)
    assert (b.outcome == OUTCOMES.index("hang")).all()
    assert np.isnan(b.t_done_us).all() and (b.nmi_sent == n - 1).all() and np.isnan(b.overlap_us).all()


def test_all_unresponsive_times_out_with_wait_0():
    # D = T_loop + nmi_wait_us * udelay_factor, T_loop = T_nmi + (n-1) sends.
    p = make_params(dict(n_cpus=5, p_unresponsive=1.0, wait=0, udelay_factor=2.0))
    b = simulate(p, 200, 3)
    assert (b.outcome == OUTCOMES.index("timeout")).all()
    assert np.all(b.t_done_us == 2e6 + 1000 + 4 * 1.0 + 2e4)


@pytest.mark.parametrize("rev, preflush", [(1, 1150.0), (2, 1151.0)])
def test_early_flush_removes_wbinvd_from_the_stop_and_reports_preflush(rev, preflush):
    # every WBINVD is 1000 x (1 + 0.01 x 15) = 1150 µs; revision 1 flushes at once, revision 2 only
    # once each CPU has taken the flush IPI (ipi' = 1 µs, irqs on: 1 + 1150), CPU 0 alongside (1150)
    p = make_params(dict(n_cpus=16, mitigation="early_flush", wbinvd_contention=0.01, model_rev=rev, **QUIET))
    b = simulate(p, 300, 5)
    assert np.all(b.t_done_us == 6.0)
    assert np.allclose(b.preflush_us, preflush, rtol=1e-15)


@pytest.mark.parametrize("rev, preflush", [(1, 1000.0), (2, 1001.0)])
def test_early_flush_still_races_when_the_nmi_comes_after_the_handoff(rev, preflush):
    # NMI latency 500 µs, no WBINVD in the handler (h = prologue): still a race.
    p = make_params(dict(n_cpus=2, mitigation="early_flush", model_rev=rev, **QUIET))
    b, r = both(p, draws_from(p, off=[T_NMI + 0.5 - 5.0], dirty=[True], nmi=[500.0]))
    assert r.outcome == "race" and b.preflush_us[0] == preflush
    assert b.overlap_us[0] == pytest.approx(500 + 5 - 1.0)


def test_wait0_race_beats_timeout():
    # One dead CPU (timeout) plus a racer whose handler outlasts D + handoff.
    p = make_params(dict(n_cpus=3, wait=0, **QUIET))
    b, r = both(p, draws_from(p, off=[T_NMI + 0.5 - 5.0, 0.0], dead=[False, True], nmi=[20000.0, 2.0]))
    assert r.outcome == "race" and OUTCOMES[b.outcome[0]] == "race"


def test_p_stall_1_with_tiny_jitter_forces_a_race_on_every_random_trial():
    # Every CPU's stall ends at T_nmi + 0.5 - prologue, so it clears at T_nmi + 0.5; each
    # CPU's NMI is sent at T_nmi + k (k earlier sends) and arrives 2 µs later.
    # CPU 1: sent at T_nmi, arrives T_nmi + 2 >= clear -> racer; later CPUs are visited at
    # T_nmi + 1 > their clear -> reported, no NMI. T_done = T_loop = T_nmi + 1.
    p = make_params(
        dict(n_cpus=6, p_stall=1.0, stall_sigma=0.0, stall_median_us=T_NMI + 0.5 - 5.0,
             incoherent_fraction=0.0, ipi_jitter_us=0.0, nmi_jitter_us=0.0, handoff_us=1.0)
    )
    b = simulate(p, 1000, 11)
    assert (b.outcome == OUTCOMES.index("race")).all()
    assert (b.nmi_sent == 1).all() and (b.racers == 1).all() and (b.first_racer_cpu == 1).all()
    assert np.all(b.t_done_us == T_NMI + 1.0) and np.allclose(b.overlap_us, 6.0)


def test_mixed_dirty_flags_add_wbinvd_only_where_dirty():
    # CPU 1 dirty: c = ipi 1 + prologue 5 + WBINVD 1000 = 1006; CPU 2 clean: c = 6. Clean at 1006.
    # (Every other case has all CPUs dirty or none, which takes a different code path.)
    p = make_params(dict(n_cpus=3, **QUIET))
    b, r = both(p, draws_from(p, dirty=[True, False]))
    assert r.outcome == "clean" and b.t_done_us[0] == 1006.0
    b, r = both(p, draws_from(p, dirty=[False, True], w=[1000.0, 300.0]))
    assert b.t_done_us[0] == 306.0
    # and on random draws with half the CPUs dirty, both implementations agree trial for trial
    p = make_params(dict(n_cpus=12, incoherent_fraction=0.5, p_stall=0.5, stall_median_us=1.0e6,
                         stall_sigma=0.002, nmi_jitter_us=500.0))
    d = draw_all(np.random.default_rng(12), p, 800)
    assert 0.4 < d.dirty.mean() < 0.6  # some dirty, some not: the batch takes the mixed-flags path
    assert mismatches(p, d, simulate_draws(p, d)) == []
