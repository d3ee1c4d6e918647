"""The late estimator's numerics and laws against independent computations.

- special functions against scipy.special; the normal-tail sampler against scipy's truncnorm;
- the convolution e + w (CDF, survival, density) against scipy.integrate.quad;
- q = P(c > T1) and the per-component probabilities against a large direct sample of the
  naive core's own draws (core.draws.draw_phase1): "the laws integrate to the naive
  frequencies";
- the late CPUs' draws given c > T1 against the naive draws that happen to be late (KS on
  c, on e and on w), and the non-late maximum's table against the maximum of naive CPUs
  that all cleared by T1;
- the tables against closed-form quantiles, the count thresholds against scipy.stats.binom.

Tolerances: numerics are compared at their stated accuracy (special functions ~1e-14, the
convolution 1e-9 relative against quad's own ~1e-10, tables TOL = 1e-8 relative); samples by
tests made at alpha = 1e-4 each (about 30 in this file: a correct implementation fails a run
with probability < 3e-3; the seeds are fixed).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate as si
from scipy import special as sp
from scipy import stats as sst

from core.draws import draw_phase1, new_generator
from core.estimators.late.alias import Alias
from core.estimators.late.laws import ELaw, WLaw
from core.estimators.late.plan import _component_law, _k_thresholds, binom_range, build_plan
from core.estimators.late.special import erfcx, log_norm_sf, norm_pdf, norm_sf, normal_above
from core.estimators.late.table import TOL, InverseTable, key, key_range
from core.params import make_params

ALPHA = 1e-4


def test_special_functions_match_scipy():
    z = np.concatenate([np.linspace(-38, 38, 20001), [0.0, 1e-300, -1e-300]])
    ref = sp.ndtr(-z)
    ok = ref > 1e-300
    # scipy's ndtr itself is ~2e-13 relative near z = 37: compare through log_ndtr where it is better
    assert np.max(np.abs(np.log(norm_sf(z[ok])) - sp.log_ndtr(-z[ok])) / np.maximum(1, np.abs(sp.log_ndtr(-z[ok])))) < 1e-14
    zz = np.linspace(-40, 3000, 30001)
    assert np.max(np.abs(log_norm_sf(zz) - sp.log_ndtr(-zz)) / np.maximum(1.0, np.abs(sp.log_ndtr(-zz)))) < 1e-14
    x = np.concatenate([np.linspace(0, 30, 3001), np.geomspace(30, 1e12, 300)])
    assert np.max(np.abs(erfcx(x) / sp.erfcx(x) - 1)) < 2e-15
    normal = sst.norm.pdf(z) > 1e-300  # (subnormal values carry fewer digits)
    assert np.max(np.abs(norm_pdf(z[normal]) / sst.norm.pdf(z[normal]) - 1)) < 1e-13


@pytest.mark.parametrize("a", [-3.0, 0.0, 0.29, 0.31, 2.0, 8.0])
def test_normal_tail_draws_have_the_truncated_law(a):
    z = normal_above(np.random.default_rng(int(10 * a) + 50), np.full(40_000, a))
    assert z.min() > a
    assert sst.kstest(z, sst.truncnorm(a, np.inf).cdf).pvalue > ALPHA


CONV_CASES = {
    "defaults": dict(),
    "no_jitter": dict(ipi_jitter_us=0.0),
    "narrow_stall": dict(p_stall=0.3, stall_median_us=9.99e5, stall_sigma=0.002),
    "long_irqs_off": dict(irq_off_mean_us=5e4, ipi_jitter_us=50.0),
    "stall_atom": dict(p_stall=0.2, stall_sigma=0.0, stall_median_us=3000.0),
}


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_convolution_matches_quad(case):
    p = make_params(CONV_CASES[case])
    e = ELaw.of(p)
    w = WLaw(p.wbinvd_median_us, p.wbinvd_sigma)
    from core.estimators.late.laws import ConvLaw

    conv = ConvLaw(e, w)
    ys = np.array([1.5, 30.0, 700.0, 1500.0, 5000.0, 4e4, 9.99e5, 1.2e6])
    cdf, sf, pdf = conv.evaluate(ys)
    assert np.allclose(cdf + sf, 1.0, rtol=0, atol=4e-15)
    lnw = sst.lognorm(s=w.sigma, scale=w.median)
    for y, c, s, f in zip(ys, cdf, sf, pdf):
        top = y - e.lower
        if top <= 0:
            continue
        pts = sorted({top - v for v in (0.5, 5.0, 50.0, 500.0, 5e3, 5e4) if v < top}
                     | {y - a for a, _ in e.atoms if a < y})
        kw = dict(limit=4000, epsabs=0, epsrel=1e-12, points=pts)
        rc = si.quad(lambda u, y=y: e.cdf(np.array([y - u]))[0] * lnw.pdf(u), 0, top, **kw)[0]
        rs = si.quad(lambda u, y=y: e.sf(np.array([y - u]))[0] * lnw.pdf(u), 0, top, **kw)[0] + lnw.sf(top)
        rf = si.quad(lambda u, y=y: e.pdf(np.array([y - u]))[0] * lnw.pdf(u), 0, top, **kw)[0] \
            + sum(m * lnw.pdf(y - a) for a, m in e.atoms if a < y)
        for got, want, what in ((c, rc, "cdf"), (s, rs, "sf"), (f, rf, "pdf")):
            if want > 1e-250:
                assert got == pytest.approx(want, rel=1e-9), f"{case} y={y} {what}"


# a point where a CPU is late often enough to count: stalls near T1, some dirty, some dead
FREQ_POINT = dict(n_cpus=64, p_stall=0.05, stall_median_us=9.9e5, stall_sigma=0.02, incoherent_fraction=0.6,
                  p_unresponsive=0.002)


def _naive_cpus(p, trials: int, seed: int):
    d = draw_phase1(new_generator(np.random.SeedSequence(seed)), p, trials)
    dirty = d.dirty & (p.mitigation != "early_flush")
    e = np.maximum(d.ipi, d.off)
    c = e + p.prologue_us
    c = np.where(dirty, c + d.w, c)
    c = np.where(d.dead, np.inf, c)
    return d, e, c.ravel(), dirty


def test_q_and_components_integrate_to_the_naive_frequencies():
    p = make_params(FREQ_POINT)
    plan = build_plan(p)
    d, e, c, dirty = _naive_cpus(p, 60_000, 1)  # 3.8e6 CPUs
    n = c.size
    late = c > p.t1_us
    k = int(late.sum())
    assert sst.binomtest(k, n, plan.q).pvalue > ALPHA, (k / n, plan.q)
    # dead among late, and each component among the answering late CPUs
    assert sst.binomtest(int(d.dead.ravel().sum()), k, plan.p_dead).pvalue > ALPHA
    stalled = (d.off > 1e5).ravel()  # stall lengths here are ~1e6; the short ones ~20 µs
    alive_late = late & ~d.dead.ravel()
    for comp, rho in zip(plan.comps, plan.rho):
        inside = alive_late & (dirty.ravel() == bool(comp.d)) & (stalled == comp.stall)
        assert sst.binomtest(int(inside.sum()), int(alive_late.sum()), rho).pvalue > ALPHA, (comp.d, comp.stall)


def test_late_cpu_draws_have_the_conditional_law_of_the_naive_late_cpus():
    p = make_params(FREQ_POINT)
    plan = build_plan(p)
    d, e, c, dirty = _naive_cpus(p, 60_000, 2)
    pick = (c > p.t1_us) & ~d.dead.ravel()
    rng = new_generator(np.random.SeedSequence(3))
    for comp in plan.comps:
        if comp.late is None:
            continue
        sel = pick & (dirty.ravel() == bool(comp.d)) & ((d.off.ravel() > 1e5) == comp.stall)
        if sel.sum() < 200:
            continue
        ipi, off, w = comp.late.draw(rng, 20_000)
        ce = np.maximum(ipi, off) + p.prologue_us + (w if comp.d else 0.0)
        keep = ce > p.t1_us  # the estimator redraws the (~1e-11) rounding cases; here they are just dropped
        assert keep.mean() > 0.999999
        assert sst.ks_2samp(ce[keep], c[sel]).pvalue > ALPHA, ("c", comp.d, comp.stall)
        assert sst.ks_2samp(np.maximum(ipi, off)[keep], e.ravel()[sel]).pvalue > ALPHA, ("e", comp.d, comp.stall)
        if comp.d:
            assert sst.ks_2samp(w[keep], d.w.ravel()[sel]).pvalue > ALPHA, ("w", comp.stall)


def test_nonlate_maximum_has_the_law_of_the_naive_maximum():
    # trials where every CPU cleared by T1: the max over the CPUs of a component, tabulated vs direct
    p = make_params(dict(n_cpus=16, p_stall=0.02, stall_median_us=9.9e5, stall_sigma=0.02, incoherent_fraction=0.7))
    plan = build_plan(p)
    d, e, c, dirty = _naive_cpus(p, 200_000, 4)
    c = c.reshape(d.off.shape)
    clean = (c <= p.t1_us).all(axis=1)
    assert sst.binomtest(int(clean.sum()), clean.size, (1 - plan.q) ** p.n_remote).pvalue > ALPHA
    major = plan.comps[plan.major]
    inside = (dirty == bool(major.d)) & ((d.off > 1e5) == major.stall)
    rows = clean & inside.all(axis=1)  # every CPU of the trial in the major component
    naive_max = c[rows].max(axis=1)
    tab = major.table
    assert tab is not None
    got = tab.sample_max(p.n_remote, np.random.default_rng(5).standard_exponential(40_000))
    assert sst.ks_2samp(got, naive_max).pvalue > ALPHA
    for m in (1, 3):  # and the maximum of fewer CPUs (an NMI-phase trial's other CPUs)
        sub = c[rows][:, :m].max(axis=1)
        g = tab.sample_max(m, np.random.default_rng(6 + m).standard_exponential(40_000))
        assert sst.ks_2samp(g, sub).pvalue > ALPHA


def test_table_quantiles_match_a_closed_form_law():
    # a lognormal: P(X <= t) = Phi((ln t - ln 1000) / 0.5), quantile by scipy
    w = WLaw(1000.0, 0.5)

    def law(t):
        cdf, sf, pdf = w.cdf(t), w.sf(t), w.pdf(t)
        with np.errstate(divide="ignore", invalid="ignore"):
            lam = np.where(cdf < 0.5, -np.log(cdf), -np.log1p(-sf))
            return lam, pdf / cdf

    tab = InverseTable.build(law, 1e-6, math.inf, np.array([]), key_range(1, 1000))
    for m in (1, 10, 1000):
        e = np.geomspace(1e-11, 39.0, 20_000)
        got = tab.sample_max(m, e)
        law_ = sst.lognorm(s=0.5, scale=1000.0)  # P(max <= t) = cdf^m = e^-E: cdf = e^(-E/m)
        want = np.where(e / m < 0.5, law_.isf(-np.expm1(-e / m)), law_.ppf(np.exp(-e / m)))
        fine = np.isfinite(want) & (want > 0) & (e / m > 1e-15)
        assert np.max(np.abs(got[fine] - want[fine]) / (1 + want[fine])) < 20 * TOL
    # outside the tabulated keys the table solves the law itself
    far = np.array([1e-18, 60.0])  # keys beyond both ends of key_range(1, 1000)
    want = np.where(far < 0.5, sst.lognorm(s=0.5, scale=1000.0).isf(-np.expm1(-far)),
                    sst.lognorm(s=0.5, scale=1000.0).ppf(np.exp(-far)))
    assert tab.sample_max(1, far) == pytest.approx(want, rel=1e-9)


def test_count_thresholds_and_tables_match_scipy():
    for m, q in ((63, 2.4e-4), (4095, 2.4e-4), (7, 0.5), (1, 0.3)):
        kappa = _k_thresholds(m, q)
        # K <= k iff E > kappa_k: P(K <= k) = exp(-kappa_k), so P(K > k) = -expm1(-kappa_k)
        ks = np.arange(kappa.size)
        want = sst.binom(m, q).sf(ks)
        assert np.allclose(-np.expm1(-kappa), want, rtol=1e-9, atol=0), (m, q)
        assert sst.binom(m, q).sf(kappa.size) < 1e-290  # K never drawn above: beyond double precision
        lo, hi = binom_range(m, q, 1e-12)
        assert sst.binom(m, q).cdf(lo - 1) < 1e-12 <= sst.binom(m, q).cdf(lo) or lo == 0
    plan = build_plan(make_params(dict(n_cpus=40, p_stall=0.05, stall_median_us=9.9e5, stall_sigma=0.02)))
    ct = plan.counts
    assert ct is not None
    u = np.random.default_rng(8).random(400_000)
    k, minor = ct.draw(u)
    q, pst = plan.q, (1 - plan.q) * plan.pi[plan.minors[0]]
    # marginals of the joint table: K ~ Binomial(m, q), the minor count ~ Binomial(m, pst)
    for x, pr in ((k, q), (minor[0], pst)):
        obs = np.bincount(x, minlength=8)[:8]
        exp = sst.binom(plan.m, pr).pmf(np.arange(8)) * u.size
        big = exp > 20
        assert sst.chisquare(obs[big], exp[big] * obs[big].sum() / exp[big].sum()).pvalue > ALPHA


def test_alias_draws_have_the_given_law():
    w = np.array([0.5, 0.2, 0.2, 0.05, 0.05, 1e-3, 0.0])
    x = Alias.of(w).draw(np.random.default_rng(9).random(1_000_000))
    obs = np.bincount(x, minlength=w.size)
    assert obs[-1] == 0
    assert sst.chisquare(obs[:-1], w[:-1] / w.sum() * x.size).pvalue > ALPHA


def test_keys_join_smoothly():
    lam = np.array([0.5, 1.0 - 1e-12, 1.0, 1.0 + 1e-12, 2.0])
    x = key(lam)
    assert np.all(np.diff(x) < 0)  # decreasing in Lambda
    assert abs(x[2]) < 1e-15 and abs(x[1] - x[3]) < 3e-12  # continuous, slope -1 on both sides


def test_clear_law_puts_atoms_where_the_model_sums_do():
    p = make_params(dict(n_cpus=4, p_stall=0.0, irq_off_mean_us=0.0, ipi_jitter_us=0.0, wbinvd_sigma=0.0))
    law = _component_law(p, 1, False)
    assert law.atoms == [((1.0 + 5.0) + 1000.0, 1.0)]
    cdf, sf, _ = law.evaluate(np.array([np.nextafter(1006.0, 0), 1006.0]))
    assert cdf.tolist() == [0.0, 1.0] and sf.tolist() == [1.0, 0.0]
