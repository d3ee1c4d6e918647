"""Confidence intervals for a proportion (trials with a given outcome out of n).

Wilson is what the store's `outcomes` view reports (cheap, good coverage, works
in SQL); Clopper-Pearson is the exact (conservative) interval used when a claim
must hold, e.g. capacity limits and the "0 events, p < 3/n" rule. Implemented
with numpy and math only, so `core` stays free of scipy.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np


def z_value(conf: float = 0.95) -> float:
    """Two-sided standard-normal quantile for confidence `conf` (1.95996 for 0.95)."""
    return NormalDist().inv_cdf(0.5 + conf / 2.0)


def wilson(k, n, conf: float = 0.95):
    """Wilson score interval (lo, hi) for k successes in n trials; scalars or arrays.

    n == 0 gives the uninformative (0, 1).
    """
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    z = z_value(conf)
    z2 = z * z
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(n > 0, k / n, 0.0)
        denom = 1.0 + z2 / n
        centre = (p + z2 / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
        lo = np.where(n > 0, np.clip(centre - half, 0.0, 1.0), 0.0)
        hi = np.where(n > 0, np.clip(centre + half, 0.0, 1.0), 1.0)
    lo = np.where(k <= 0, 0.0, lo)
    hi = np.where((k >= n) & (n > 0), 1.0, hi)
    if lo.ndim == 0:
        return float(lo), float(hi)
    return lo, hi


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) for a, b > 0 and x in [0, 1]."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(ln_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _beta_ppf(q: float, a: float, b: float) -> float:
    """Inverse of I_x(a, b) in x by bisection on a log scale near 0 (robust, ~1e-15 relative)."""
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi) if lo > 0 or hi < 1e-300 else math.sqrt(max(lo, 1e-320) * hi)
        if mid <= lo or mid >= hi:
            break
        if betainc(a, b, mid) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * hi:
            break
    return 0.5 * (lo + hi)


def clopper_pearson(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval (lo, hi): each tail holds at most (1 - conf) / 2."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"k = {k} must be in [0, n = {n}]")
    alpha = 1.0 - conf
    lo = 0.0 if k == 0 else _beta_ppf(alpha / 2, k, n - k + 1)
    hi = 1.0 if k == n else _beta_ppf(1 - alpha / 2, k + 1, n - k)
    return lo, hi


def trials_needed(target_p: float, conf: float = 0.95) -> int:
    """Trials with zero events that put the one-sided exact upper bound at target_p (~3/p at 95%)."""
    if not 0 < target_p < 1:
        raise ValueError(f"target_p = {target_p} must be in (0, 1)")
    return int(math.ceil(math.log(1.0 - conf) / math.log1p(-target_p)))
