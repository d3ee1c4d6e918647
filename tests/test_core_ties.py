"""Exact ties at the model's two strict/non-strict comparisons of the NMI phase.

MODEL.md: a CPU with `c_i <= s_i` has already reported (no NMI, the clock does not
advance), and a CPU whose NMI arrives at `a_i >= c_i` is a racer (the handler runs
after the clear). Ties only happen at degenerate points (sigma 0, jitter 0), so
random regimes never exercise them; here every draw is forced so that clears land
exactly on a send time or an arrival time, and the outcome is computed by hand.
Every time below is an integer number of µs, so the sums are exact in float64 and
`==` is the right comparison.
"""

from __future__ import annotations

import numpy as np
import pytest

from core import reference
from core.outcomes import OUTCOMES
from core.params import make_params
from core.vectorized import simulate, simulate_draws

from core_helpers import draws_from, mismatches

T_NMI = 1e6 + 1000.0  # timeout_us * udelay_factor + console_us at defaults
QUIET = dict(p_stall=0.0, irq_off_mean_us=0.0, ipi_jitter_us=0.0, wbinvd_sigma=0.0, nmi_jitter_us=0.0)
RACE = OUTCOMES.index("race")


def _both(p, d):
    b = simulate_draws(p, d)
    assert mismatches(p, d, b) == []
    return b, reference.simulate_trial(p, d.row(0).to_lists())


def test_nmi_arriving_exactly_at_the_clear_makes_a_racer():
    # CPU 1 clears at c = off + prologue = T_nmi + 2; its NMI is sent at T_nmi and arrives
    # after nmi = 2 µs, at a = T_nmi + 2 = c: a >= c, so the handler runs after the clear.
    # f = c; T_loop = T_nmi + 1; T_done = max(T_loop, F) = T_nmi + 2; the handler ends at
    # a + prologue = T_nmi + 7: overlap 5 > handoff 1 -> race, first racer CPU 1.
    p = make_params(dict(n_cpus=2, handoff_us=1.0, **QUIET))
    b, r = _both(p, draws_from(p, off=[T_NMI + 2.0 - 5.0], nmi=[2.0]))
    assert r.cpus[0].clear == r.cpus[0].nmi_arrive == T_NMI + 2.0  # the tie really is a tie
    assert r.cpus[0].nmi_case == "after-clear" and r.cpus[0].racer
    assert (OUTCOMES[b.outcome[0]], r.outcome) == ("race", "race")
    assert b.racers[0] == 1 and b.nmi_sent[0] == 1 and b.first_racer_cpu[0] == 1
    assert b.t_done_us[0] == T_NMI + 2.0 and b.overlap_us[0] == 5.0


def test_nmi_arriving_one_microsecond_before_the_clear_is_during_wbinvd():
    # The neighbour of the tie: a dirty CPU enters at T_nmi - 12, runs WBINVD (w = 10) from
    # T_nmi - 7 and clears at c = T_nmi + 3; its NMI arrives at a = T_nmi + 2 < c: taken
    # during WBINVD, stop_this_cpu() runs again: f = c + prologue + w2 = T_nmi + 3 + 5 + 20.
    p = make_params(dict(n_cpus=2, handoff_us=1.0, **QUIET))
    b, r = _both(p, draws_from(p, off=[T_NMI - 12.0], dirty=[True], w=[10.0], w2=[20.0], nmi=[2.0]))
    assert r.cpus[0].nmi_case == "during-wbinvd" and not r.cpus[0].racer
    assert OUTCOMES[b.outcome[0]] == "nmi_clean" and b.racers[0] == 0
    assert b.t_done_us[0] == T_NMI + 28.0
    # at the tie (w = 9: c = T_nmi + 2 = a) the same CPU is a racer, its handler re-runs
    # WBINVD after the clear and ends at a + 5 + 20 = T_nmi + 27 > T_done + 1 = T_nmi + 3
    b, r = _both(p, draws_from(p, off=[T_NMI - 12.0], dirty=[True], w=[9.0], w2=[20.0], nmi=[2.0]))
    assert r.cpus[0].nmi_case == "after-clear" and OUTCOMES[b.outcome[0]] == "race"
    assert b.t_done_us[0] == T_NMI + 2.0 and b.overlap_us[0] == 25.0 and b.racers[0] == 1


def test_clear_exactly_at_the_first_send_time_has_reported():
    # CPU 1 clears at exactly T_nmi = s_1: it has reported, gets no NMI. CPU 2 is stalled
    # (sent at T_nmi, arrives T_nmi + 2, before entry: f = a + prologue = T_nmi + 7).
    # T_loop = T_nmi + 1, T_done = T_nmi + 7, one NMI sent.
    p = make_params(dict(n_cpus=3, **QUIET))
    b, r = _both(p, draws_from(p, off=[T_NMI - 5.0, 3e6], nmi=[2.0, 2.0]))
    assert [c.nmi_send for c in r.cpus] == [None, T_NMI]
    assert b.nmi_sent[0] == 1 and b.racers[0] == 0 and b.t_done_us[0] == T_NMI + 7.0


def test_clear_exactly_at_a_later_send_time_has_reported():
    # CPU 1 stalled: sent at T_nmi, the clock moves to T_nmi + 1. CPU 2 clears at exactly
    # T_nmi + 1 = s_2: reported, no NMI, the clock stays. CPU 3 stalled: sent at T_nmi + 1.
    # Assuming every CPU after T_nmi is sent, CPU 2 would be visited at T_nmi + 1 and be
    # "reported": this is the sequential walk's own tie.
    p = make_params(dict(n_cpus=4, **QUIET))
    b, r = _both(p, draws_from(p, off=[3e6, T_NMI + 1.0 - 5.0, 3e6], nmi=[2.0] * 3))
    assert [c.nmi_send for c in r.cpus] == [T_NMI, None, T_NMI + 1.0]
    assert b.nmi_sent[0] == 2 and r.t_loop_us == T_NMI + 2.0
    # CPU 3's NMI arrives at T_nmi + 3, before entry: f = T_nmi + 8 = T_done
    assert b.t_done_us[0] == T_NMI + 8.0 and b.racers[0] == 0


@pytest.mark.parametrize("n_cpus", [4, 300])
def test_random_stream_with_every_clear_on_a_tie(n_cpus):
    # Degenerate point on the production path (random draws, sigma 0, jitter 0): every
    # CPU's stall ends so that it clears at exactly T_nmi + 2 (off = T_nmi - 3, prologue 5,
    # no WBINVD). CPU 1 is sent at T_nmi, its NMI arrives at T_nmi + 2 = c: racer (tie).
    # CPU 2 is visited at T_nmi + 1 < c: sent, arrives at T_nmi + 3 > c: racer. CPU 3 is
    # visited at T_nmi + 2 = c: reported (tie), and so is every later CPU (the clock stays).
    # T_loop = T_nmi + 2 = F = T_done; handlers end at T_nmi + 7 and T_nmi + 8: overlap 6,
    # above handoff 1: race, first racer CPU 1. n_cpus=300 spans several chunks.
    p = make_params(dict(n_cpus=n_cpus, p_stall=1.0, stall_sigma=0.0, stall_median_us=T_NMI - 3.0,
                         incoherent_fraction=0.0, ipi_jitter_us=0.0, nmi_jitter_us=0.0, handoff_us=1.0))
    b = simulate(p, 1200, 5)
    assert (b.outcome == RACE).all()
    assert (b.nmi_sent == 2).all() and (b.racers == 2).all() and (b.first_racer_cpu == 1).all()
    assert np.all(b.t_done_us == T_NMI + 2.0) and np.all(b.overlap_us == 6.0)
    # the scalar reference on the same forced draws says the same (one trial suffices: all equal)
    r = reference.simulate(p, 1, 0)[0]
    assert (r.outcome, r.nmi_sent, r.racers, r.first_racer_cpu, r.t_done_us, r.overlap_us) == (
        "race", 2, 2, 1, T_NMI + 2.0, 6.0)
