"""The late estimator against the naive one and the scalar reference: same laws, own streams.

Like tests/test_core_agreement.py: per point, Fisher's exact test on each outcome seen
(this outcome or not, late sample vs the other sample) and a two-sample Kolmogorov-Smirnov
test on the finite stop times; for trials with a racer also KS on overlap_us, and KS on
nmi_sent and on preflush_us where they vary. Every test is made at ALPHA = ALPHA_RUN / (tests
made), so a correct sampler fails a run with probability < ALPHA_RUN = 1e-3 (union bound; the
seeds are fixed, so the test is deterministic).

Points, each in both model revisions: every regime of test_core_agreement (the hidden-style
oracle points: races common and rare, wait = 0 timeouts, dead CPUs, early_flush, hold-offs, a
walk clock that matters, the T1 boundary) against naive, 12,000 trials each; LATE_POINTS, which
span what the late sampler itself distinguishes (n_cpus 2 .. 4096, its components: dirty and
clean, stall and short, tabulated and drawn one by one; atoms of every law; the counts' joint
table and its sequential fallback; revision 2's flush IPI hung by dead CPUs), against naive;
and six of them (revision 2) against the scalar reference.

Power: at 12,000 vs 12,000 trials and ALPHA ~ 7e-6 (z = 4.5), an outcome of probability p shifted
by d is detected with 90% power when d >= 5.8 sqrt(p (1 - p) / 6,000): 3.7% relative at
p = 0.5, 21% at p = 0.03. The KS test sees a sup-distance of ~0.025 between stop-time laws.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sst
from test_core_agreement import REGIMES, outcome_pvalues

from core import reference
from core.estimators import LATE
from core.outcomes import OUTCOMES
from core.params import make_params
from core.vectorized import TrialBatch, simulate

QUIET = dict(p_stall=0.0, irq_off_mean_us=0.0, ipi_jitter_us=0.0, wbinvd_sigma=0.0, nmi_jitter_us=0.0)

LATE_POINTS = {
    "defaults_64": dict(),
    "n2_stalls": dict(n_cpus=2, p_stall=0.3, stall_median_us=9e5, stall_sigma=0.3),
    "n4096": dict(n_cpus=4096),
    "n512_stall_table": dict(n_cpus=512, p_stall=0.03),
    "wait0_midflush": dict(n_cpus=64, wait=0, p_stall=0.05, wbinvd_us=3e4, stall_median_us=9.9e5, stall_sigma=0.02),
    "early_jitter0_atoms": dict(n_cpus=64, mitigation="early_flush", ipi_jitter_us=0.0, p_stall=0.05,
                                stall_median_us=1.0005e6, stall_sigma=0.002, nmi_jitter_us=3000.0),
    "mixed_flags": dict(n_cpus=128, incoherent_fraction=0.5, p_stall=0.02, stall_median_us=9.99e5,
                        stall_sigma=0.002, nmi_jitter_us=20.0),
    "stall_atom": dict(n_cpus=32, p_stall=0.05, stall_sigma=0.0, stall_median_us=9.992e5, nmi_jitter_us=20.0),
    "wbinvd_atom": dict(n_cpus=64, p_stall=0.05, wbinvd_sigma=0.0, stall_median_us=9.99e5, stall_sigma=0.01),
    "holdoff_race": dict(n_cpus=64, p_stall=0.05, stall_median_us=1.001e6, stall_sigma=0.01, p_nmi_delay=0.2,
                         nmi_delay_median_us=5e3),
    "dead_wait1": dict(n_cpus=256, p_unresponsive=0.001),
    "dead_wait0": dict(n_cpus=256, p_unresponsive=0.001, wait=0, p_stall=0.01),
    "counts_sequential": dict(n_cpus=1024, p_stall=0.1, incoherent_fraction=0.5, stall_median_us=4e5),
    "slow_udelay_short_wait": dict(n_cpus=16, udelay_factor=1.5, timeout_us=2e5, irq_off_mean_us=5e4,
                                   ipi_jitter_us=50.0, wbinvd_contention=0.01),
    "quiet_atoms": dict(n_cpus=8, **QUIET),
    "quiet_early": dict(n_cpus=8, mitigation="early_flush", **QUIET),
    # revision 2's flush IPI hung by a dead CPU, flushes with stalls, a short hand-over for races
    "early_wait1_dead": dict(n_cpus=12, mitigation="early_flush", p_unresponsive=0.02, p_stall=0.2,
                             stall_median_us=1.0008e6, stall_sigma=0.003, nmi_jitter_us=400.0, handoff_us=30.0),
}
N_LATE = 12_000
N_NAIVE = {"n4096": 1_500, "counts_sequential": 2_000, "n512_stall_table": 4_000}  # CPU-heavy for naive
N_LATE_OF = {"counts_sequential": 4_000}  # (~20 late CPUs a trial)
REF_POINTS = ["n2_stalls", "wait0_midflush", "stall_atom", "slow_udelay_short_wait", "quiet_atoms", "early_wait1_dead"]
N_REF = 2_000
TESTS_PER_POINT = 9  # up to 5 outcomes, stop time, overlap, nmi_sent, preflush
# every point in both model revisions (revision 2: CPU 0's flush in H, no early flush on the
# panic path, the early flush as an IPI that a dead CPU hangs)
ALL_POINTS = {f"{name}@rev{rev}": dict(kw, model_rev=rev)
              for name, kw in {**{f"core:{k}": v for k, v in REGIMES.items()}, **LATE_POINTS}.items()
              for rev in (1, 2)}
ALPHA_RUN = 1e-3
ALPHA = ALPHA_RUN / (TESTS_PER_POINT * (len(ALL_POINTS) + len(REF_POINTS)))


def late_sample(p, n: int, seed: int) -> TrialBatch:
    return TrialBatch.concat([c.batch for c in LATE.chunks(p, n, np.random.SeedSequence(seed))])


def _ks(a: np.ndarray, b: np.ndarray) -> float | None:
    """KS p-value of two samples' finite values, None when either has too few or both are one value."""
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size < 20 or b.size < 20 or (np.unique(np.concatenate([a, b])).size < 2):
        return None
    return float(sst.ks_2samp(a, b).pvalue)


def compare(name: str, late: TrialBatch, other: TrialBatch) -> None:
    lc = np.bincount(late.outcome, minlength=len(OUTCOMES))
    oc = np.bincount(other.outcome, minlength=len(OUTCOMES))
    pv = outcome_pvalues(lc, oc)
    worst = min(pv, key=pv.get)
    assert pv[worst] > ALPHA, f"{name}: {worst} frequency differs: late {lc} vs {oc} (p={pv[worst]:.2g})"
    for what in ("t_done_us", "overlap_us", "preflush_us"):
        p = _ks(getattr(late, what), getattr(other, what))
        assert p is None or p > ALPHA, f"{name}: {what} laws differ (KS p={p:.2g})"
    p = _ks(late.nmi_sent.astype(float), other.nmi_sent.astype(float))
    assert p is None or p > ALPHA, f"{name}: nmi_sent laws differ (KS p={p:.2g})"


@pytest.mark.parametrize("name", sorted(ALL_POINTS))
def test_late_and_naive_laws_agree(name):
    p = make_params(ALL_POINTS[name])
    assert LATE.column(p) == "late", f"{name}: the late sampler should apply here"
    base = name.split("@")[0]
    late = late_sample(p, N_LATE_OF.get(base, N_LATE), 11)
    naive = simulate(p, N_NAIVE.get(base, N_LATE), 12)
    compare(name, late, naive)
    # what every trial must satisfy whatever the law (MODEL.md)
    hang = late.outcome == OUTCOMES.index("hang")
    assert np.all(np.isnan(late.t_done_us) == hang)
    clean = late.outcome == OUTCOMES.index("clean")
    assert np.all(late.t_done_us[clean] <= p.t1_us) and np.all(late.nmi_sent[clean] == 0)
    assert np.all(late.t_done_us[~clean & ~hang] >= p.t_nmi_us)  # an NMI-phase stop ends when the walk has run


@pytest.mark.parametrize("name", REF_POINTS)
def test_late_and_reference_laws_agree(name):
    p = make_params(LATE_POINTS[name])
    res = reference.simulate(p, N_REF, 20251202)
    codes = np.array([OUTCOMES.index(r.outcome) for r in res], dtype=np.uint8)
    nan = np.nan

    def col(f):
        return np.array([nan if getattr(r, f) is None else getattr(r, f) for r in res], dtype=float)

    ref = TrialBatch(codes, col("t_done_us"), np.array([r.nmi_sent for r in res], np.int32),
                     np.array([r.racers for r in res], np.int32), col("overlap_us"),
                     np.array([-1 if r.first_racer_cpu is None else r.first_racer_cpu for r in res], np.int32),
                     col("preflush_us"))
    compare(f"{name} (reference)", late_sample(p, N_LATE, 13), ref)


def test_quiet_point_is_the_atom_exactly():
    # every law degenerate: every CPU clears at 1 + 5 + 1000 = 1006 µs, so every trial is clean
    # with T_done exactly 1006 (the table returns an atom's value to the bit)
    p = make_params(LATE_POINTS["quiet_atoms"])
    b = late_sample(p, 5000, 3)
    assert (b.outcome == 0).all() and np.all(b.t_done_us == 1006.0)
    # the early flush: revision 1 flushes for w alone; revision 2 takes the IPI first, at 1 µs
    b = late_sample(make_params(dict(LATE_POINTS["quiet_early"], model_rev=1)), 5000, 3)
    assert np.all(b.t_done_us == 6.0) and np.all(b.preflush_us == 1000.0)
    b = late_sample(make_params(LATE_POINTS["quiet_early"]), 5000, 3)
    assert np.all(b.t_done_us == 6.0) and np.all(b.preflush_us == 1001.0)


def test_points_exercise_every_path():
    # the points above must reach each path of the sampler, or the agreement proves little
    from core.estimators.late.latecpu import FixedThreshold, Posterior
    from core.estimators.late.plan import plan_for

    plans = {f"{k}@{rev}": plan_for(make_params(dict(v, model_rev=rev))) for k, v in LATE_POINTS.items() for rev in (1, 2)}
    comps = [c for pl in plans.values() for c in pl.comps]
    assert any(c.table is not None and c.stall for c in comps)  # a stall component tabulated
    assert any(c.table is None and c.stall for c in comps)  # ... and one drawn one by one
    assert any(isinstance(c.late, Posterior) for c in comps) and any(isinstance(c.late, FixedThreshold) for c in comps)
    assert any(pl.counts is None for pl in plans.values()) and any(pl.counts is not None for pl in plans.values())
    assert any(len(pl.comps) == 4 for pl in plans.values())
    assert any(pl.p_dead > 0 for pl in plans.values())
    assert any(isinstance(pl.preflush, float) for pl in plans.values())
    assert any(c.law.atoms for c in comps)
