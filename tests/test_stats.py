"""Intervals and the histogram against scipy and hand values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sst

from core.histogram import bin_index, histogram, quantile
from core.stats import betainc, clopper_pearson, trials_needed, wilson


@pytest.mark.parametrize("k,n", [(0, 10), (1, 10), (5, 10), (10, 10), (0, 1_000_000), (3, 1_000_000), (499, 1000)])
def test_clopper_pearson_matches_scipy(k, n):
    # exact interval = beta quantiles; lgamma cancellation at n ~ 1e6 limits us to ~1e-8 relative
    lo, hi = clopper_pearson(k, n)
    ref_lo = sst.beta.ppf(0.025, k, n - k + 1) if k > 0 else 0.0
    ref_hi = sst.beta.ppf(0.975, k + 1, n - k) if k < n else 1.0
    assert lo == pytest.approx(ref_lo, rel=1e-7, abs=1e-300)
    assert hi == pytest.approx(ref_hi, rel=1e-7)


@pytest.mark.parametrize("k,n", [(0, 10), (1, 10), (5, 10), (10, 10), (3, 1_000_000), (499, 1000)])
def test_wilson_matches_scipy(k, n):
    lo, hi = wilson(k, n)
    ref = sst.binomtest(k, n).proportion_ci(0.95, method="wilson")
    assert lo == pytest.approx(ref.low, abs=1e-12) and hi == pytest.approx(ref.high, abs=1e-12)


def test_wilson_vectorized_and_zero_trials():
    lo, hi = wilson(np.array([0, 5]), np.array([0, 10]))
    assert lo[0] == 0 and hi[0] == 1 and 0 < lo[1] < 0.5 < hi[1] < 1


def test_betainc_matches_scipy():
    from scipy.special import betainc as sb

    for a, b, x in [(1, 1, 0.3), (2.5, 7, 0.1), (100, 3, 0.97), (1, 1e6, 1e-6)]:
        assert betainc(a, b, x) == pytest.approx(sb(a, b, x), rel=1e-10)


def test_trials_needed_is_the_rule_of_three():
    n = trials_needed(1e-6)
    assert 2.99e6 < n < 3.0e6
    assert clopper_pearson(0, n)[1] <= 2.02e-6  # two-sided 95% upper ~ 3.69/n


def test_histogram_bins_follow_schema():
    t = np.array([0.5, 1.0, 10.0, 1e6, 1e9, np.inf, np.nan])
    assert bin_index(t[:5]).tolist() == [0, 0, 16, 96, 127]
    h = histogram(t)
    assert h.sum() == 5 and h[0] == 2 and h[127] == 1
    # inside a bin, not on its lower edge: floor, not round (16 log10 = 0.66, 47.99, 96.66)
    assert bin_index(np.array([1.1, 999.0, 1.1e6])).tolist() == [0, 47, 96]
    # every stop time lies in its bin: 10^(b/16) <= t < 10^((b+1)/16) (edges are 1 ulp-safe here)
    x = 10 ** np.random.default_rng(5).uniform(0.001, 7.9, 20_000)
    b = bin_index(x)
    assert np.all(10 ** (b / 16) <= x * (1 + 1e-12)) and np.all(x < 10 ** ((b + 1) / 16) * (1 + 1e-12))


def test_quantile_within_one_bin_of_the_sample_quantile():
    rng = np.random.default_rng(0)
    t = rng.lognormal(np.log(1e4), 1.0, 100_000)
    h = histogram(t)
    for q in (0.5, 0.9, 0.99):
        exact = np.quantile(t, q)
        assert exact / 1.155 < quantile(h, q) < exact * 1.155
    assert quantile(h, 0.999999, t_max=t.max()) <= t.max()
    assert np.isnan(quantile(np.zeros(128), 0.5))
