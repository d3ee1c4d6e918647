"""Confidence intervals for a proportion (trials with a given outcome out of n).

Clopper-Pearson (`clopper_pearson`) is the interval of every counted outcome the
project reports (core.intervals): exact, so its coverage is >= conf at every p and n.
Wilson's is kept for comparison only: near n p ~ 0.1..1 its coverage dips to 86-92%
(Brown, Cai and DasGupta 2001; benchmarks/coverage.py measures it), which is exactly
where a planner reads "0 or 1 events in n trials". `zero_event_trials` says how many
trials with no event bring the exact upper bound under a target, bounded so that
any target in (0, 1) answers. Implemented with numpy and math only, so `core` stays
free of scipy.
"""

from __future__ import annotations

import math
from functools import lru_cache
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


def _lgamma_shift(a: float, b: float) -> float:
    """lgamma(a + b) - lgamma(b), without cancellation when b is large (b >> a, e.g. n = 1e12 trials).

    Stirling's series for both terms: (b - 1/2) log1p(a/b) + a log(a + b) - a plus the
    difference of the 1/(12 x) - 1/(360 x^3) corrections; for b >= 1e6 the neglected
    terms are < 1e-30.
    """
    if b < 1e6:
        return math.lgamma(a + b) - math.lgamma(b)
    s = a + b

    def corr(x: float) -> float:
        return 1.0 / (12.0 * x) - 1.0 / (360.0 * x ** 3)

    return (b - 0.5) * math.log1p(a / b) + a * math.log(s) - a + (corr(s) - corr(b))


def _lbeta(a: float, b: float) -> float:
    """log B(a, b) = lgamma(a) + lgamma(b) - lgamma(a + b), the shift taken on the larger argument."""
    return math.lgamma(a) - _lgamma_shift(a, b) if a <= b else math.lgamma(b) - _lgamma_shift(b, a)


def _log_front(a: float, b: float, x: float, lb: float) -> float:
    """log of x^a (1 - x)^b / B, with lb = log B."""
    return a * math.log(x) + b * math.log1p(-x) - lb


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
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
    front = math.exp(_log_front(a, b, x, _lbeta(a, b)))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _beta_ppf(q: float, a: float, b: float, x0: float) -> float:
    """The x in (0, 1) with I_x(a, b) = q: Newton steps on the beta density from x0, kept inside a
    bracket that every evaluation narrows (I_x is increasing), bisection (geometric near 0) when a
    step leaves it. Converges to ~1e-13 relative in a handful of evaluations from a close x0."""
    lo, hi = 0.0, 1.0
    lb = _lbeta(a, b)
    x = min(max(x0, 1e-300), 1.0 - 1e-16)
    for _ in range(400):
        f = betainc(a, b, x) - q
        if f < 0:
            lo = x
        else:
            hi = x
        dens = math.exp(_log_front(a - 1.0, b - 1.0, x, lb)) if 0 < x < 1 else 0.0  # the beta density
        step = f / dens if dens > 0 and math.isfinite(dens) else math.inf
        nx = x - step
        if not lo < nx < hi:  # the step left the bracket: bisect it
            nx = 0.5 * (lo + hi) if lo > 0 else hi * 1e-3 if hi > 1e-290 else 0.5 * hi
        if abs(nx - x) <= 1e-14 * x or hi - lo <= 1e-15 * hi:
            return nx
        x = nx
    return 0.5 * (lo + hi)


def _wilson_parts(p: float, n: int, z: float) -> tuple[float, float]:
    denom = 1.0 + z * z / n
    return (p + z * z / (2 * n)) / denom, z * math.sqrt(p * (1 - p) / n + z * z / (4.0 * n * n)) / denom


@lru_cache(maxsize=1 << 16)
def _cp(k: int, n: int, conf: float) -> tuple[float, float]:
    alpha = 1.0 - conf
    p = k / n
    z = z_value(conf)
    centre, half = _wilson_parts(p, n, z)  # a start within a factor ~2 of the exact ends
    if k == n:
        lo = (alpha / 2) ** (1.0 / n)  # closed form
    elif k == 0:
        lo = 0.0
    else:
        lo = _beta_ppf(alpha / 2, k, n - k + 1, max(centre - half, p / 10))
    if k == n:
        hi = 1.0
    elif k == 0:
        hi = -math.expm1(math.log(alpha / 2) / n)  # closed form: 1 - (alpha/2)^(1/n)
    else:
        hi = _beta_ppf(1 - alpha / 2, k + 1, n - k, min(centre + half, (1 + p) / 2))
    return min(lo, p), max(hi, p)  # exact math has lo <= p <= hi; keep it under rounding


def clopper_pearson(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval (lo, hi) for k events in n trials: each tail holds at most (1 - conf) / 2.

    lo = 0 for k = 0 and hi = 1 for k = n; n <= 0 gives the uninformative (0, 1). Values are
    cached (the queries ask for the same (k, n) for many points).
    """
    if not 0 < conf < 1:
        raise ValueError(f"conf = {conf} must be in (0, 1)")
    if n <= 0:
        return 0.0, 1.0
    k, n = int(k), int(n)
    if not 0 <= k <= n:
        raise ValueError(f"k = {k} must be in [0, n = {n}]")
    return _cp(k, n, float(conf))


MAX_TRIALS_NEEDED = 10**15
"""Largest trial count `zero_event_trials` reports; beyond it the answer is "more than" this (as many
trials as one spec may give a point, sweeps.spec_input.MAX_TRIALS: beyond anything run here)."""


def zero_event_trials(target_p: float, conf: float = 0.95, cap: int = MAX_TRIALS_NEEDED) -> int | None:
    """Fewest trials n for which 0 events put the exact (Clopper-Pearson, two-sided conf) upper bound
    below target_p: 1 - ((1 - conf)/2)^(1/n) < target_p, about 3.69/p at 95%. None when that is
    more than `cap` (any target in (0, 1) answers: no loop, no overflow)."""
    if not 0 < target_p < 1:
        raise ValueError(f"target_p = {target_p} must be in (0, 1)")
    log_tail = math.log((1.0 - conf) / 2.0)
    l1 = math.log1p(-target_p)
    if l1 == 0.0 or log_tail / l1 > cap:
        return None
    n = max(1, int(math.floor(log_tail / l1)) + 1)
    # the float division can be an ulp off either way: settle it on the bound itself
    while n > 1 and -math.expm1(log_tail / (n - 1)) < target_p:
        n -= 1
    while -math.expm1(log_tail / n) >= target_p:
        n += 1
    return n if n <= cap else None


def trials_needed(target_p: float, conf: float = 0.95, cap: int = MAX_TRIALS_NEEDED) -> int | None:
    """Trials with zero events that put the one-sided exact upper bound at target_p (~3/p at 95%).

    The rule of three, reported beside `zero_event_trials` (the two-sided bound capacity judges
    on); None when more than `cap`.
    """
    if not 0 < target_p < 1:
        raise ValueError(f"target_p = {target_p} must be in (0, 1)")
    l1 = math.log1p(-target_p)
    if l1 == 0.0 or math.log(1.0 - conf) / l1 > cap:
        return None
    return int(math.ceil(math.log(1.0 - conf) / l1))
