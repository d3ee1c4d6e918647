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


_lgamma_u = np.frompyfunc(math.lgamma, 1, 1)


def _lgamma(x: np.ndarray) -> np.ndarray:
    return np.asarray(_lgamma_u(x), dtype=np.float64)


def _lgamma_shift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """lgamma(a + b) - lgamma(b) for b >= a, without cancellation when b is large (n = 1e12 trials).

    For b >= 1e6, Stirling's series for both terms: (b - 1/2) log1p(a/b) + a log(a + b) - a plus
    the difference of the 1/(12 x) - 1/(360 x^3) corrections (neglected terms < 1e-30).
    """
    out = np.empty_like(b)
    big = b >= 1e6
    sm = ~big
    if sm.any():
        out[sm] = _lgamma(a[sm] + b[sm]) - _lgamma(b[sm])
    if big.any():
        ab, bb = a[big], b[big]
        s = ab + bb
        corr_s = 1.0 / (12.0 * s) - 1.0 / (360.0 * s**3)
        corr_b = 1.0 / (12.0 * bb) - 1.0 / (360.0 * bb**3)
        out[big] = (bb - 0.5) * np.log1p(ab / bb) + ab * np.log(s) - ab + (corr_s - corr_b)
    return out


def _lbeta(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log B(a, b) = lgamma(a) + lgamma(b) - lgamma(a + b), the shift taken on the larger argument."""
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return _lgamma(lo) - _lgamma_shift(lo, hi)


def _betacf(a: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Continued fraction of the incomplete beta function (modified Lentz), elementwise; each element
    iterates until its factor is within 1e-15 of 1. The working arrays hold only the elements still
    iterating (compacted whenever a quarter of them has converged)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / np.where(np.abs(d) > tiny, d, tiny)
    out = d.copy()
    idx = np.arange(x.size)
    aw, bw, xw, qabw, qapw, qamw = a, b, x, qab, qap, qam
    c, h = np.ones_like(x), d.copy()
    live = np.ones(x.size, dtype=bool)
    for m in range(1, 100_000):
        m2 = 2.0 * m
        aa = m * (bw - m) * xw / ((qamw + m2) * (aw + m2))
        d = 1.0 + aa * d
        d = 1.0 / np.where(np.abs(d) > tiny, d, tiny)
        c = 1.0 + aa / c
        c = np.where(np.abs(c) > tiny, c, tiny)
        f1 = d * c
        aa = -(aw + m) * (qabw + m) * xw / ((aw + m2) * (qapw + m2))
        d = 1.0 + aa * d
        d = 1.0 / np.where(np.abs(d) > tiny, d, tiny)
        c = 1.0 + aa / c
        c = np.where(np.abs(c) > tiny, c, tiny)
        delta = d * c
        h = np.where(live, h * f1 * delta, h)  # converged elements keep their value
        live &= np.abs(delta - 1.0) >= 1e-15
        n_live = int(live.sum())
        if n_live == 0:
            break
        if n_live <= 0.75 * live.size:  # compact: write the converged ones out, keep the rest
            out[idx[~live]] = h[~live]
            idx = idx[live]
            aw, bw, xw, qabw, qapw, qamw = aw[live], bw[live], xw[live], qabw[live], qapw[live], qamw[live]
            c, d, h = c[live], d[live], h[live]
            live = np.ones(idx.size, dtype=bool)
    out[idx] = h
    return out


def _betainc(a: np.ndarray, b: np.ndarray, x: np.ndarray, lb: np.ndarray) -> np.ndarray:
    """I_x(a, b) elementwise for 0 < x < 1, with lb = log B(a, b) given."""
    sym = x >= (a + 1.0) / (a + b + 2.0)  # the continued fraction converges fast below the mean
    aa, bb, xx = np.where(sym, b, a), np.where(sym, a, b), np.where(sym, 1.0 - x, x)
    front = np.exp(aa * np.log(xx) + bb * np.log1p(-xx) - lb)
    r = front * _betacf(aa, bb, xx) / aa
    return np.where(sym, 1.0 - r, r)


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) for a, b > 0 and x in [0, 1]."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    av, bv = np.array([float(a)]), np.array([float(b)])
    return float(_betainc(av, bv, np.array([float(x)]), _lbeta(av, bv))[0])


def _beta_ppf(q: np.ndarray, a: np.ndarray, b: np.ndarray, x0: np.ndarray) -> np.ndarray:
    """The x in (0, 1) with I_x(a, b) = q, elementwise: Newton steps on the beta density from x0, kept
    inside a bracket that every evaluation narrows (I_x is increasing), bisection (geometric near 0)
    when a step leaves it. A handful of evaluations from a close x0 reach ~1e-12 relative (the last
step taken is below 1e-12 x, so the result is good to ~1e-13 after Newton's quadratic convergence)."""
    lb = _lbeta(a, b)
    lo, hi = np.zeros_like(x0), np.ones_like(x0)
    x = np.clip(x0, 1e-300, 1.0 - 1e-16)
    out = np.full_like(x0, np.nan)
    idx = np.arange(x0.size)
    for _ in range(400):
        if idx.size == 0:
            break
        ai, bi, xi, lbi = a[idx], b[idx], x[idx], lb[idx]
        f = _betainc(ai, bi, xi, lbi) - q[idx]
        below = f < 0
        lo[idx] = np.where(below, xi, lo[idx])
        hi[idx] = np.where(below, hi[idx], xi)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            dens = np.exp((ai - 1.0) * np.log(xi) + (bi - 1.0) * np.log1p(-xi) - lbi)  # the beta density
            nx = xi - f / dens
        li, hi_ = lo[idx], hi[idx]
        bisect = np.where(li > 0, 0.5 * (li + hi_), np.where(hi_ > 1e-290, hi_ * 1e-3, 0.5 * hi_))
        nx = np.where(np.isfinite(nx) & (nx > li) & (nx < hi_), nx, bisect)  # a step out of the bracket: bisect
        done = (np.abs(nx - xi) <= 1e-12 * xi) | (hi_ - li <= 1e-13 * hi_)
        out[idx[done]] = nx[done]
        x[idx] = nx
        idx = idx[~done]
    out[idx] = 0.5 * (lo[idx] + hi[idx])
    return out


_CP_CACHE: dict[tuple[int, int, float], tuple[float, float]] = {}
_CP_CACHE_MAX = 1 << 20


def clopper_pearson_many(k, n, conf: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Clopper-Pearson (lo, hi) for arrays of k events in n trials (n >= 1, 0 <= k <= n): each tail holds
    at most (1 - conf) / 2; lo <= k/n <= hi elementwise. Each distinct (k, n, conf) is solved once per
    process (a bounded cache: the queries ask for the same counts again and again)."""
    if not 0 < conf < 1:
        raise ValueError(f"conf = {conf} must be in (0, 1)")
    k = np.asarray(k, dtype=np.int64).ravel()
    n = np.asarray(n, dtype=np.int64).ravel()
    if k.size == 0:
        return np.zeros(0), np.zeros(0)
    if (n < 1).any() or (k < 0).any() or (k > n).any():
        raise ValueError("clopper_pearson_many needs 1 <= n and 0 <= k <= n")
    pairs, inv = np.unique(np.stack([k, n], axis=1), axis=0, return_inverse=True)
    conf = float(conf)
    lo, hi = np.empty(len(pairs)), np.empty(len(pairs))
    todo = []
    for i, (kk, nn) in enumerate(pairs.tolist()):
        got = _CP_CACHE.get((kk, nn, conf))
        if got is None:
            todo.append(i)
        else:
            lo[i], hi[i] = got
    if todo:
        t = np.asarray(todo)
        lo[t], hi[t] = _solve_cp(pairs[t, 0].astype(np.float64), pairs[t, 1].astype(np.float64), conf)
        if len(_CP_CACHE) + len(t) > _CP_CACHE_MAX:
            _CP_CACHE.clear()
        for i in todo:
            _CP_CACHE[(int(pairs[i, 0]), int(pairs[i, 1]), conf)] = (float(lo[i]), float(hi[i]))
    inv = inv.ravel()
    return lo[inv], hi[inv]


def _solve_cp(uk: np.ndarray, un: np.ndarray, conf: float) -> tuple[np.ndarray, np.ndarray]:
    """The exact ends for distinct (k, n): closed forms at k = 0 and k = n, beta quantiles between."""
    alpha = 1.0 - conf
    p = uk / un
    z = z_value(conf)
    denom = 1.0 + z * z / un
    centre = (p + z * z / (2 * un)) / denom  # Wilson's ends: a start within a factor ~2 of the exact ones
    half = z * np.sqrt(p * (1 - p) / un + z * z / (4.0 * un * un)) / denom
    lo, hi = np.zeros_like(p), np.ones_like(p)
    mid = (uk > 0) & (uk < un)
    top, bot = uk == un, uk == 0
    lo[top] = (alpha / 2) ** (1.0 / un[top])
    hi[bot] = -np.expm1(np.log(alpha / 2) / un[bot])
    if mid.any():
        km, nm, pm = uk[mid], un[mid], p[mid]
        lo[mid] = _beta_ppf(np.full(km.size, alpha / 2), km, nm - km + 1, np.maximum(centre[mid] - half[mid], pm / 10))
        hi[mid] = _beta_ppf(np.full(km.size, 1 - alpha / 2), km + 1, nm - km,
                            np.minimum(centre[mid] + half[mid], (1 + pm) / 2))
    return np.minimum(lo, p), np.maximum(hi, p)  # exact math has lo <= p <= hi; keep it under rounding


def clopper_pearson(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval (lo, hi) for k events in n trials: each tail holds at most (1 - conf) / 2.

    lo = 0 for k = 0 and hi = 1 for k = n; n <= 0 gives the uninformative (0, 1). Values are
    cached (the queries ask for the same (k, n) for many points); `clopper_pearson_many` is the
    same for arrays.
    """
    if not 0 < conf < 1:
        raise ValueError(f"conf = {conf} must be in (0, 1)")
    if n <= 0:
        return 0.0, 1.0
    k, n = int(k), int(n)
    if not 0 <= k <= n:
        raise ValueError(f"k = {k} must be in [0, n = {n}]")
    got = _CP_CACHE.get((k, n, float(conf)))
    if got is not None:
        return got
    lo, hi = clopper_pearson_many(np.array([k]), np.array([n]), conf)
    return float(lo[0]), float(hi[0])


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
