"""NMI hold-offs (MODEL.md: with prob. p_nmi_delay an NMI's latency gets an extra
LogNormal(nmi_delay_median_us, nmi_delay_sigma) hold-off D_i; it moves only a_i).

- Forced, hand-computed cases through the real random streams (every law degenerate:
  sigma 0, jitter 0, probabilities 0 or 1) on the vectorized core, the cmc draws and the
  reference's own stream: a hold-off turns a clean NMI into a race, and makes a wait=0
  trial time out.
- The laws of the draws: hold-off frequency (exact binomial test), lengths (Kolmogorov-Smirnov
  against scipy's lognorm, and the mean of log D within 4 standard errors of log(median)) on
  the vectorized stream, the cmc stream and the reference's own stream, each test rejected at
  p < ALPHA = 1e-4: for a random seed a correct implementation fails one of the ~20 checks
  with probability < 3e-3 (the seeds are fixed, so the test is deterministic). Power: with
  >= 2,000 held-off NMIs a 10% error in p_nmi_delay is z >= 4.4 > 3.9 (two-sided 1e-4), and a
  10% error in the median shifts mean(log D) by 0.095 > 4 se = 4 x 0.8 / sqrt(2000) = 0.072.
- p_nmi_delay = 0 draws nothing more: the generator ends where the draws before hold-offs
  existed left it (the release1 fixtures check whole rows, tests/test_compat.py).
- Replay records the hold-off and the timeline prints it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sst

from core import reference
from core.draws import draw_nmi_path, exponential, lognormal, new_generator
from core.estimators.cmc.walk import draw_chunk_cmc, simulate_cmc
from core.outcomes import OUTCOMES
from core.params import make_params
from core.vectorized import replay_draws, shard_seed, simulate, simulate_draws
from queries.replay import Replay, format_timeline

from core_helpers import mismatches

ALPHA = 1e-4

# n_cpus = 2: CPU 1 is in a stall of exactly `stall_median_us`, dirty, WBINVD exactly 1000 µs,
# NMI latency exactly 2 µs plus (p_nmi_delay = 1) a hold-off of exactly nmi_delay_median_us.
FORCED = dict(n_cpus=2, ipi_jitter_us=0.0, p_stall=1.0, stall_sigma=0.0, wbinvd_sigma=0.0,
              nmi_jitter_us=0.0, nmi_delay_sigma=0.0)
T_NMI = 1e6 + 1000.0  # timeout_us * udelay_factor + console_us


def run_all(p, n=50):
    """Every trial of the vectorized core, the cmc stream's naive outcome and the reference's
    own stream (all forced, so every trial is the same); returns the three first trials."""
    b = simulate(p, n, shard_seed(1, 0))
    cb, _ = simulate_cmc(p, n, shard_seed(1, 0))
    r = reference.simulate(p, n, 3)
    for f in ("outcome", "t_done_us", "racers", "overlap_us", "first_racer_cpu"):
        assert len(np.unique(getattr(b, f))) == 1 and np.array_equal(getattr(b, f), getattr(cb, f), equal_nan=True), f
    assert len({(x.outcome, x.t_done_us, x.overlap_us) for x in r}) == 1
    return b, r[0]


def test_hold_off_turns_a_clean_nmi_into_a_race():
    # e = 1,000,990; c = e + 5 + 1000 = 1,001,995 > T_nmi: the NMI is sent at s = T_nmi = 1,001,000
    # (T_loop = 1,001,001). Without a hold-off it arrives at 1,001,002, during the WBINVD
    # (e + 5 <= a < c): f = c + h = 1,001,995 + 1005 = 1,003,000 = T_done, nmi_clean.
    base = dict(FORCED, stall_median_us=1_000_990.0)
    b, r = run_all(make_params(dict(base, p_nmi_delay=0.0)))
    assert (OUTCOMES[b.outcome[0]], b.t_done_us[0], b.racers[0]) == ("nmi_clean", 1_003_000.0, 0)
    assert (r.outcome, r.t_done_us) == ("nmi_clean", 1_003_000.0)
    # Held off by 2000 µs it arrives at a = 1,003,002 >= c: a racer; T_done = max(T_loop, c) =
    # 1,001,995; its handler ends at a + h = 1,004,007 > T_done + handoff 100: a race, overlap 2012.
    b, r = run_all(make_params(dict(base, p_nmi_delay=1.0, nmi_delay_median_us=2000.0)))
    got = (OUTCOMES[b.outcome[0]], b.t_done_us[0], b.racers[0], b.overlap_us[0], b.first_racer_cpu[0])
    assert got == ("race", 1_001_995.0, 1, 2012.0, 1)
    assert (r.outcome, r.t_done_us, r.overlap_us, r.first_racer_cpu) == ("race", 1_001_995.0, 2012.0, 1)
    cpu = r.cpus[0]
    assert (cpu.nmi_send, cpu.nmi_hold, cpu.nmi_arrive, cpu.nmi_case) == (T_NMI, 2000.0, 1_003_002.0, "after-clear")


def test_hold_off_makes_a_wait0_trial_time_out():
    # e = 1,500,000 (stall), c = 1,501,005; NMI sent at 1,001,000, T_loop = 1,001,001, deadline
    # D = T_loop + 1e4 = 1,011,001. Without a hold-off the NMI arrives at 1,001,002 < e: the NMI
    # stop is the first flush, f = a + 5 + 1000 = 1,002,007 <= D: nmi_clean at T_done = f.
    base = dict(FORCED, stall_median_us=1.5e6, wait=0)
    b, r = run_all(make_params(dict(base, p_nmi_delay=0.0)))
    assert (OUTCOMES[b.outcome[0]], b.t_done_us[0]) == ("nmi_clean", 1_002_007.0) == (r.outcome, r.t_done_us)
    # Held off by 2e4 µs: a = 1,021,002 < e, f = 1,022,007 > D: timeout at T_done = D.
    b, r = run_all(make_params(dict(base, p_nmi_delay=1.0, nmi_delay_median_us=2e4)))
    assert (OUTCOMES[b.outcome[0]], b.t_done_us[0], b.racers[0]) == ("timeout", 1_011_001.0, 0)
    assert (r.outcome, r.t_done_us, r.deadline_us) == ("timeout", 1_011_001.0, 1_011_001.0)


def test_without_hold_offs_nothing_more_is_drawn():
    # draw_nmi_path at p_nmi_delay = 0 consumes exactly what nmi and w2 did before hold-offs existed
    p = make_params(dict(n_cpus=16, p_nmi_delay=0.0, nmi_delay_median_us=7.0))
    a, b = new_generator(np.random.SeedSequence(5)), new_generator(np.random.SeedSequence(5))
    nmi, w2, hold = draw_nmi_path(a, p, 1000)
    nmi0 = exponential(b, p.nmi_jitter_us, 1000) + p.nmi_base_us
    w20 = lognormal(b, p.wbinvd_median_us, p.wbinvd_sigma, 1000) * p.rewbinvd_factor
    assert np.array_equal(nmi, nmi0) and np.array_equal(w2, w20) and not hold.any()
    assert np.array_equal(a.random(8), b.random(8))  # both streams stand at the same place


def _check_law(hold: np.ndarray, p, n: int) -> None:
    k = int(np.count_nonzero(hold))
    assert sst.binomtest(k, n, p.p_nmi_delay).pvalue > ALPHA, (k, n)
    x = hold[hold > 0]
    ks = sst.kstest(x, sst.lognorm(s=p.nmi_delay_sigma, scale=p.nmi_delay_median_us).cdf)
    assert ks.pvalue > ALPHA, ks
    # log-mean within 4 standard errors of log(median) (sigma / sqrt(k) each)
    assert abs(np.log(x).mean() - math.log(p.nmi_delay_median_us)) < 4 * p.nmi_delay_sigma / math.sqrt(k)


@pytest.mark.parametrize("p_delay", [0.04, 0.3])  # the binomial-placement and the per-element path
def test_hold_off_law_of_every_stream(p_delay):
    p = make_params(dict(n_cpus=65, p_nmi_delay=p_delay, nmi_delay_median_us=300.0, nmi_delay_sigma=0.8))
    n_vec = 50_000 if p_delay < 0.05 else 20_000  # >= 2,000 hold-offs
    nmi, _, hold = draw_nmi_path(new_generator(np.random.SeedSequence(11)), p, n_vec)
    _check_law(hold, p, n_vec)
    # the rest of the latency keeps its own law: nmi - D ~ base + Exponential(jitter)
    assert sst.kstest(nmi - hold - p.nmi_base_us, sst.expon(scale=p.nmi_jitter_us).cdf).pvalue > ALPHA
    # the cmc stream carries them in its sampled draws
    d = draw_chunk_cmc(p, n_vec // 64, new_generator(np.random.SeedSequence(12)))
    _check_law(d.hold.ravel(), p, d.hold.size)
    assert np.array_equal(d.nmi >= p.nmi_base_us + d.hold, np.ones_like(d.nmi, bool))
    # the reference's own scalar stream (64 CPUs per trial)
    rng = np.random.default_rng(13)
    ref = np.array([reference.draw_trial(rng, p)["hold"] for _ in range(n_vec // 64)])
    _check_law(ref.ravel(), p, ref.size)


def test_replay_records_and_prints_the_hold_off():
    p = make_params(dict(FORCED, stall_median_us=1_000_990.0, p_nmi_delay=1.0, nmi_delay_median_us=2000.0))
    d, one = replay_draws(p, 10, shard_seed(4, 2), 7)
    assert d.hold[0, 0] == 2000.0 and d.nmi[0, 0] == 2002.0
    res = reference.simulate_trial(p, d.to_lists())
    assert res.outcome == OUTCOMES[one.outcome[0]] == "race"
    text = format_timeline(Replay("pid", 2, 7, p, 4, d, res, "race"))
    row = next(line for line in text.splitlines() if line.split()[:1] == ["1"])
    assert "2,000.00" in row and "1,003,002.00" in row and "RACE" in row
    assert "hold-off" in text


def test_lazy_draws_record_hold_offs_only_for_cpus_sent_an_nmi():
    p = make_params(dict(n_cpus=32, p_stall=0.5, p_nmi_delay=0.5, nmi_delay_median_us=50.0))
    seed = shard_seed(9, 0)
    full = simulate(p, 300, seed)
    for t in (0, 150, 299):
        d, one = replay_draws(p, 300, seed, t)
        sent = ~np.isnan(d.nmi)
        assert np.array_equal(np.isnan(d.hold), ~sent) and int(sent.sum()) == full.nmi_sent[t]
        assert np.all(d.hold[sent] >= 0) and np.all(d.nmi[sent] >= p.nmi_base_us + d.hold[sent])
        assert one.outcome[0] == full.outcome[t] and mismatches(p, d, simulate_draws(p, d)) == []


def test_cmc_values_stay_consistent_with_sampled_hold_offs():
    # cmc conditions on every draw but off_i, so a sampled hold-off is part of the condition:
    # its set algebra must still reproduce the naive outcome of every trial
    p = make_params(dict(n_cpus=8, p_stall=0.5, stall_median_us=1.002e6, stall_sigma=0.005, p_nmi_delay=0.3,
                         nmi_delay_median_us=5e3))
    b, cm = simulate_cmc(p, 3000, 21)
    races = b.outcome == OUTCOMES.index("race")
    assert races.sum() >= 50
    # the races come from held-off NMIs: without hold-offs the same stream has far fewer
    b0, _ = simulate_cmc(make_params(dict(p.model_dump(), p_nmi_delay=0.0)), 3000, 21)
    assert (b0.outcome == OUTCOMES.index("race")).sum() < races.sum() / 5
    assert np.array_equal(b.outcome == OUTCOMES.index("race"), cm.n_racing >= 1)
    assert np.array_equal(b.first_racer_cpu, cm.first_cpu)
