"""Vectorized core vs the scalar reference model.

Two checks per regime:

1. Same draws, same outcome: both implementations evaluate identical explicit
   per-CPU draws and must agree trial for trial in every output, exactly.
2. Same law, own streams: the reference draws with its own scalar stream (n_ref
   trials, per regime), the vectorized core with its chunked lazy stream (10 n_ref
   trials), and the outcome frequencies and stop-time distributions must be
   statistically indistinguishable.

Tests of (2), all exact or conservative, so rare categories are handled correctly: for
each outcome seen in either sample, Fisher's exact test on the 2 x 2 table (this outcome
or not, reference or vectorized); and a two-sample Kolmogorov-Smirnov test on the finite
stop times. (Pearson's chi-square, used before, is invalid for a category expected ~0.3
times, as `stall_at_deadline`'s races: it produced 1 false rejection in 20 seed pairs.)

False rejections: each of the at most 6 tests of a regime (5 outcomes + KS) is made at
ALPHA = ALPHA_RUN / (6 x regimes) = 1e-3 / 108 ~ 9.3e-6. Fisher's test is exact-conservative
(P(p-value <= a) <= a under equal laws), and the KS test is conservative for the atoms
some regimes have (stop times at a wait=0 deadline); its asymptotic p-value at these
sample sizes (>= 3000 x 30000) is accurate to well within the Bonferroni slack. By the
union bound a correct implementation fails a run with probability < ALPHA_RUN = 1e-3,
whatever the seeds; the seeds are fixed, so the test is deterministic.

Power, at that ALPHA (z = 4.43 two-sided), 90% power (z = 1.28): an absolute shift d of a
category of probability p is detected when d >= 5.72 sqrt(p (1 - p) (1/n_ref + 1/n_vec)).
Relative shift d/p detectable per regime's most informative bad outcome (printed by
`python tests/test_core_agreement.py`, which computes p from a vectorized run):

    regime               n_ref  outcome      p       detectable d/p
    race_prone            3000  race       0.805         5.4%
    walk_clock            3000  race       0.799         5.5%
    early_flush_race      3000  race       0.799         5.5%
    race_window          12000  race       0.237         9.8%
    hang                  3000  hang       0.367        14.4%
    wait0_unresponsive    3000  timeout    0.367        14.4%
    wait0_timeouts        3000  timeout    0.990         1.1%
    hold_offs             3000  race       0.329        15.6%
    hold_offs_wait0       3000  timeout    0.747         6.4%
    hold_offs_early_flush 3000  race       0.060        43%
    deadline_3cpu        20000  clean      0.227         7.8%
    race_wbinvd           3000  race       0.0069      132%
    early_flush           3000  race       0.0051      152%
    stall_at_deadline     3000  race       ~1e-4       (none)

So a 10% error in p_race is detected wherever races are common, and the mechanisms of
the rare-race regimes (`race_wbinvd`: an NMI landing just after a WBINVD clear near
T_nmi; `early_flush`: the NMI latency alone outlasting the hand-off) each have a variant
where they are common (`race_window`, `early_flush_race`). The KS test rejects at a
sup-distance between the stop-time CDFs of sqrt(-ln(ALPHA/2)/2) sqrt(1/n_ref + 1/n_vec)
~ 0.047 at n_ref = 3000.
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

ALPHA_RUN = 1e-3
N_REF = 3000
VEC_PER_REF = 10

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
    # race_wbinvd's mechanism (an NMI landing just after a WBINVD clear near T_nmi) made common
    "race_window": dict(n_cpus=8, p_stall=0.5, stall_median_us=9.995e5, stall_sigma=0.0005, nmi_jitter_us=300.0,
                        wbinvd_sigma=0.2),
    # early_flush's race (no WBINVD in the handler: the NMI latency alone outlasts the hand-off) made common
    "early_flush_race": dict(n_cpus=8, mitigation="early_flush", p_stall=1.0, stall_median_us=1.001e6,
                             stall_sigma=0.01, nmi_jitter_us=1e4, incoherent_fraction=0.5),
    # clean vs NMI phase decided at the T1 boundary, both common: 2 remote CPUs make the reference cheap
    "deadline_3cpu": dict(n_cpus=3, p_stall=1.0, stall_median_us=1e6 - 1005, stall_sigma=0.0005, wbinvd_sigma=0.3),
}
N_REF_OF = {"race_window": 12000, "deadline_3cpu": 20000}  # cheap regimes get more reference trials
ALPHA = ALPHA_RUN / (6 * len(REGIMES))


@pytest.mark.parametrize("rev", [1, 2])  # both model revisions (tests/test_rev2.py has revision 2's own regimes)
@pytest.mark.parametrize("name", sorted(REGIMES))
def test_same_draws_same_results_trial_for_trial(name, rev):
    p = make_params(dict(REGIMES[name], model_rev=rev))
    d = draw_all(np.random.default_rng(sorted(REGIMES).index(name)), p, 1500)
    b = simulate_draws(p, d)
    assert mismatches(p, d, b) == []


def _ref_sample(p, n, seed):
    res = reference.simulate(p, n, seed)
    codes = np.array([OUTCOMES.index(r.outcome) for r in res])
    t = np.array([r.t_done_us for r in res if r.t_done_us is not None], dtype=float)
    return codes, t


def outcome_pvalues(ref_counts: np.ndarray, vec_counts: np.ndarray) -> dict[str, float]:
    """Fisher's exact p-value per outcome seen in either sample (this outcome vs the rest)."""
    n1, n2 = int(ref_counts.sum()), int(vec_counts.sum())
    out = {}
    for i, name in enumerate(OUTCOMES):
        k1, k2 = int(ref_counts[i]), int(vec_counts[i])
        if k1 + k2 == 0:
            continue
        out[name] = float(sst.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]]).pvalue)
    return out


@pytest.mark.parametrize("name", sorted(REGIMES))
def test_outcome_and_stop_time_laws_agree(name):
    p = make_params(REGIMES[name])
    n_ref = N_REF_OF.get(name, N_REF)
    ref_codes, ref_t = _ref_sample(p, n_ref, seed=20251125)
    b = simulate(p, VEC_PER_REF * n_ref, 99)
    ref_counts = np.bincount(ref_codes, minlength=len(OUTCOMES))
    vec_counts = np.bincount(b.outcome, minlength=len(OUTCOMES))
    pv = outcome_pvalues(ref_counts, vec_counts)
    assert pv, "no outcome at all"
    worst = min(pv, key=pv.get)
    assert pv[worst] > ALPHA, f"{name}: {worst} frequency differs: ref {ref_counts} vs vec {vec_counts} (p={pv[worst]:.2g})"
    vec_t = b.t_done_us[np.isfinite(b.t_done_us)]
    if len(ref_t) and len(vec_t):
        ks = sst.ks_2samp(ref_t, vec_t)
        assert ks.pvalue > ALPHA, f"{name}: stop-time laws differ (KS p={ks.pvalue:.2g})"
    else:
        assert len(ref_t) == 0 and len(vec_t) == 0


def test_outcome_test_on_rare_and_clear_cases():
    # A category seen once in the reference and 3 times in a 10x larger sample is what equal
    # laws produce (Fisher p ~ 0.3); 30 against 30 in 10x the trials is a 10x difference.
    ref, vec = np.array([2999, 0, 0, 1, 0]), np.array([29997, 0, 0, 3, 0])
    assert set(outcome_pvalues(ref, vec)) == {"clean", "race"}
    assert outcome_pvalues(ref, vec)["race"] > 0.2
    ref, vec = np.array([2970, 0, 0, 30, 0]), np.array([29970, 0, 0, 30, 0])
    assert outcome_pvalues(ref, vec)["race"] < ALPHA


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


def power_table() -> list[tuple[str, int, str, float, float]]:
    """(regime, n_ref, outcome, p, relative shift detectable with 90% power at ALPHA) per bad outcome."""
    z = sst.norm.isf(ALPHA / 2) + sst.norm.isf(0.1)
    rows = []
    for name, kw in sorted(REGIMES.items()):
        n_ref = N_REF_OF.get(name, N_REF)
        b = simulate(make_params(kw), VEC_PER_REF * n_ref, 1)
        f = np.bincount(b.outcome, minlength=len(OUTCOMES)) / len(b)
        for i, o in enumerate(OUTCOMES):
            if f[i] > 0:
                d = z * np.sqrt(f[i] * (1 - f[i]) * (1 / n_ref + 1 / (VEC_PER_REF * n_ref)))
                rows.append((name, n_ref, o, float(f[i]), float(d / f[i])))
    return rows


if __name__ == "__main__":
    print(f"ALPHA per test = {ALPHA:.3g} (run-wide {ALPHA_RUN:g}); detectable relative shift at 90% power")
    for name, n_ref, o, f, rel in power_table():
        print(f"{name:24} {n_ref:6d}  {o:10} p={f:<9.4g} d/p={rel:.1%}")
