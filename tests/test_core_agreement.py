"""Vectorized core vs the scalar reference model.

Two checks per regime:

1. Same draws, same outcome: both implementations evaluate identical explicit
   per-CPU draws and must agree trial for trial in every output, exactly.
2. Same law, own streams: the reference draws with its own scalar stream (N_REF
   trials), the vectorized core with its chunked lazy stream (N_VEC trials), and
   the outcome frequencies and stop-time distributions must be statistically
   indistinguishable.

Tolerance of (2): Pearson's chi-square homogeneity test on the 2 x k outcome table
(categories seen in either sample) and a two-sample Kolmogorov-Smirnov test on the
finite stop times, each rejected at p < ALPHA = 1e-4. With 15 regimes and 2 tests,
a correct implementation fails for a random seed with probability < 30 * 1e-4
= 0.3%; the seeds are fixed, so the test is deterministic. Power: with N_REF = 3000
and N_VEC = 30000 a 5-point shift of a 50% category gives z ~ 5.2 against the
critical z ~ 3.9, so a real difference in the model shows up.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sst

from core import reference
from core.draws import draw_all
from core.outcomes import OUTCOMES
from core.params import make_params
from core.vectorized import simulate, simulate_draws

from core_helpers import mismatches

ALPHA = 1e-4
N_REF = 3000
N_VEC = 30000

REGIMES = {
    "clean_only": dict(n_cpus=8, p_stall=0.0),
    "defaults_32": dict(n_cpus=32),
    "nmi_heavy": dict(n_cpus=8, p_stall=0.9),
    "stall_at_deadline": dict(n_cpus=8, p_stall=1.0, stall_median_us=1e6, stall_sigma=0.05),
    "race_prone": dict(n_cpus=8, p_stall=1.0, stall_median_us=1.001e6, stall_sigma=0.01, nmi_jitter_us=1e4),
    "race_wbinvd": dict(n_cpus=16, p_stall=0.3, stall_median_us=9.99e5, stall_sigma=0.002, nmi_jitter_us=20.0),
    "wait0_timeouts": dict(n_cpus=8, p_stall=1.0, stall_median_us=1e6, stall_sigma=0.001, wait=0,
                           wbinvd_us=5e3, wbinvd_sigma=1.0),
    "hang": dict(n_cpus=16, p_unresponsive=0.03),
    "wait0_unresponsive": dict(n_cpus=16, p_unresponsive=0.03, wait=0, p_stall=0.05),
    "early_flush": dict(n_cpus=16, mitigation="early_flush", nmi_jitter_us=3000.0, p_stall=0.5,
                        incoherent_fraction=0.5),
    "slow_udelay_contention": dict(n_cpus=16, udelay_factor=1.5, timeout_us=2e5, irq_off_mean_us=5e4,
                                   ipi_jitter_us=50.0, wbinvd_contention=0.01),
    # NMI hold-offs (p_nmi_delay): races from held-off NMIs (15 races in 30,000 without them),
    # wait=0 timeouts (none without them), and races under early_flush (none without them)
    "hold_offs": dict(n_cpus=8, p_stall=0.5, stall_median_us=1.002e6, stall_sigma=0.005, p_nmi_delay=0.3,
                      nmi_delay_median_us=5e3),
    "hold_offs_wait0": dict(n_cpus=8, p_stall=1.0, stall_median_us=1.5e6, stall_sigma=0.01, wait=0, p_nmi_delay=0.3,
                            nmi_delay_median_us=1e4, nmi_delay_sigma=0.5),
    "hold_offs_early_flush": dict(n_cpus=16, mitigation="early_flush", p_stall=0.3, stall_median_us=1.0011e6,
                                  stall_sigma=0.002, p_nmi_delay=0.2, nmi_delay_median_us=300.0),
    "walk_clock": dict(n_cpus=12, p_stall=0.4, stall_median_us=1.0011e6, stall_sigma=2e-5, nmi_send_us=50.0,
                       rewbinvd_factor=2.0, handoff_us=20.0, wbinvd_us=10.0, nmi_jitter_us=100.0),
}


@pytest.mark.parametrize("name", sorted(REGIMES))
def test_same_draws_same_results_trial_for_trial(name):
    p = make_params(REGIMES[name])
    d = draw_all(np.random.default_rng(sorted(REGIMES).index(name)), p, 1500)
    b = simulate_draws(p, d)
    assert mismatches(p, d, b) == []


def _ref_sample(p, seed):
    res = reference.simulate(p, N_REF, seed)
    codes = np.array([OUTCOMES.index(r.outcome) for r in res])
    t = np.array([r.t_done_us for r in res if r.t_done_us is not None], dtype=float)
    return codes, t


@pytest.mark.parametrize("name", sorted(REGIMES))
def test_outcome_and_stop_time_laws_agree(name):
    p = make_params(REGIMES[name])
    ref_codes, ref_t = _ref_sample(p, seed=20251125)
    b = simulate(p, N_VEC, 99)
    ref_counts = np.bincount(ref_codes, minlength=len(OUTCOMES))
    vec_counts = np.bincount(b.outcome, minlength=len(OUTCOMES))
    seen = (ref_counts + vec_counts) > 0
    if seen.sum() >= 2:
        table = np.vstack([ref_counts[seen], vec_counts[seen]])
        _, pval, _, _ = sst.chi2_contingency(table, correction=False)
        assert pval > ALPHA, f"{name}: outcome frequencies differ: ref {ref_counts} vs vec {vec_counts} (p={pval:.2g})"
    else:
        # a single outcome in both samples: they must be the same one
        assert np.flatnonzero(ref_counts).tolist() == np.flatnonzero(vec_counts).tolist()
    vec_t = b.t_done_us[np.isfinite(b.t_done_us)]
    if len(ref_t) and len(vec_t):
        ks = sst.ks_2samp(ref_t, vec_t)
        assert ks.pvalue > ALPHA, f"{name}: stop-time laws differ (KS p={ks.pvalue:.2g})"
    else:
        assert len(ref_t) == 0 and len(vec_t) == 0


def test_regimes_cover_every_outcome():
    # The regimes above must exercise each outcome, or the agreement test proves little.
    seen = set()
    for kw in REGIMES.values():
        seen |= {OUTCOMES[c] for c in np.unique(simulate(make_params(kw), 3000, 5).outcome)}
    assert seen == set(OUTCOMES)


def test_walk_clock_regime_exercises_cpus_that_clear_during_the_walk():
    # In "walk_clock" some CPUs clear after T_nmi but before their visit (no NMI):
    # the path where the send clock depends on earlier sends.
    p = make_params(REGIMES["walk_clock"])
    d = draw_all(np.random.default_rng(3), p, 2000)
    c = np.maximum(d.ipi, d.off) + p.prologue_us + np.where(d.dirty, d.w, 0.0)
    b = simulate_draws(p, d)
    late = (c > p.t_nmi_us).sum(axis=1)
    assert np.any((b.nmi_sent < late) & (b.outcome != 0))
