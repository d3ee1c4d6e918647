"""Special functions and exact samplers of the late estimator, vectorized in NumPy.

`core.numerics.norm_sf` maps `math.erfc` over an array (~150 ns an element); the late
estimator's set-up evaluates normal tails at ~1e5 points and its samplers at every late
CPU, so this module has a vectorized one of the same accuracy:

- `erfcx(x)` = exp(x^2) erfc(x) for x >= 0: a Chebyshev series in t = (x - 2) / (x + 2) of
  erfcx(x) (x + 2) (smooth on [0, inf], 1/sqrt(pi) at infinity), 31 terms computed in
  50-digit arithmetic (mpmath). Relative error <= 5e-16 on [0, 1e15] against mpmath
  (tests/test_late_laws.py checks it against scipy).
- `norm_sf(z)` = P(Z > z) = erfcx(z / sqrt 2) exp(-z^2 / 2) / 2, with z^2 split as
  zh^2 + (z - zh)(z + zh) (zh = z rounded to 12 fractional bits, so zh^2 is exact) so the
  exponent carries no rounding of z^2: relative error ~1e-15 up to z = 38 (where it
  underflows); `log_norm_sf(z)` the same in log space (no underflow).
- `normal_above(rng, a)`: exact draws of Z | Z > a (Robert 1995's exponential rejection
  for a >= 0.3, plain rejection of normal draws below), used for the stall length of a
  late CPU.
"""

from __future__ import annotations

import math

import numpy as np

_K = 2.0
_ERFCX_CHEB = np.array([
    1.1540674772329393, -0.710873842540997, 0.13019031765757305, -0.007342284791673278,
    -0.002225689486705265, 0.0003215165983075616, 6.556063148346275e-05, -1.0884883291010032e-05,
    -3.0309331106342965e-06, 2.859521636233973e-07, 1.6469217654838986e-07, 2.5925693704613126e-09,
    -8.309443262030397e-09, -1.2694116556725622e-09, 2.864164542451245e-10, 1.232078021040917e-10,
    4.1224277109443355e-12, -7.142986297695422e-12, -1.7172845686503772e-12, 1.2291200427587712e-13,
    1.4837451497234398e-13, 2.5790085510961267e-14, -4.717452772156725e-15, -3.145869887967414e-15,
    -4.556593601828578e-16, 1.262465974996622e-16, 7.183384947407423e-17, 1.0100914665819551e-17,
    -3.063600161280433e-18, -1.7898075586299287e-18, -3.2779836167421567e-19,
])
_SQRT2 = math.sqrt(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def erfcx(x: np.ndarray) -> np.ndarray:
    """exp(x^2) erfc(x) for x >= 0 (inf allowed: 0), relative error <= 5e-16."""
    x = np.asarray(x, dtype=np.float64)
    t = np.where(np.isinf(x), 1.0, (x - _K) / (x + _K))
    # Clenshaw recurrence of the Chebyshev series
    b1 = np.zeros_like(t)
    b2 = np.zeros_like(t)
    t2 = 2.0 * t
    for c in _ERFCX_CHEB[:0:-1]:
        b1, b2 = t2 * b1 - b2 + c, b1
    s = t * b1 - b2 + _ERFCX_CHEB[0]
    return np.where(np.isinf(x), 0.0, s / (x + _K))


_ROUND12 = 1.5 * 2.0**40
"""Adding and subtracting this rounds |z| < 2^39 to a multiple of 2^-12."""


def _half_square(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """z^2 / 2 as hi + lo with hi exact (z rounded to 12 fractional bits, so zh^2 has at most
    52 bits for |z| < 2^26, beyond which exp(-z^2/2) is 0 anyway) and lo small."""
    zh = (z + _ROUND12) - _ROUND12
    return 0.5 * zh * zh, 0.5 * (z - zh) * (z + zh)


def _upper(z: np.ndarray) -> np.ndarray:
    """Q(z) for z >= 0."""
    hi, lo = _half_square(z)
    return 0.5 * erfcx(z / _SQRT2) * np.exp(-hi) * np.exp(-lo)


def norm_sf(z: np.ndarray) -> np.ndarray:
    """Q(z) = P(Z > z), standard normal, accurate to ~1e-15 relative wherever it is > 1e-300."""
    z = np.asarray(z, dtype=np.float64)
    a = np.abs(z)
    q = np.where(np.isinf(a), 0.0, _upper(np.where(np.isinf(a), 0.0, a)))
    return np.where(z >= 0, q, 1.0 - q)


def norm_cdf(z: np.ndarray) -> np.ndarray:
    """Phi(z) = P(Z <= z) = Q(-z)."""
    return norm_sf(-np.asarray(z, dtype=np.float64))


def log_norm_sf(z: np.ndarray) -> np.ndarray:
    """log Q(z) without underflow (z = +inf: -inf)."""
    z = np.asarray(z, dtype=np.float64)
    a = np.abs(z)
    fin = np.where(np.isinf(a), 0.0, a)
    hi, lo = _half_square(fin)
    up = np.log(0.5 * erfcx(fin / _SQRT2)) - hi - lo  # log Q(|z|)
    neg = np.log1p(-np.exp(np.minimum(up, 0.0)))  # log(1 - Q(|z|)) for z < 0
    out = np.where(z >= 0, up, neg)
    return np.where(np.isposinf(z), -np.inf, np.where(np.isneginf(z), 0.0, out))


def norm_pdf(z: np.ndarray) -> np.ndarray:
    """The standard normal density, with the exponent split like norm_sf's."""
    z = np.asarray(z, dtype=np.float64)
    hi, lo = _half_square(np.where(np.isfinite(z), z, 0.0))
    return np.where(np.isfinite(z), _INV_SQRT_2PI * np.exp(-hi) * np.exp(-lo), 0.0)


def normal_above(rng: np.random.Generator, a: np.ndarray) -> np.ndarray:
    """Exact draws of Z | Z > a, Z standard normal, one per element of `a`.

    a < 0.3: normal draws, kept when above a (acceptance >= P(Z > 0.3) = 0.38).
    a >= 0.3: Robert (1995): z = a + E / alpha with alpha = (a + sqrt(a^2 + 4)) / 2, kept with
    probability exp(-(z - alpha)^2 / 2) (acceptance >= 0.6, -> 1 as a grows). Rejected
    elements are drawn again, in index order, until all are kept.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    out = np.empty(a.size)
    low = a < 0.3
    il = np.flatnonzero(low)
    while il.size:
        zl = rng.standard_normal(il.size)
        ok = zl > a[il]
        out[il[ok]] = zl[ok]
        il = il[~ok]
    ih = np.flatnonzero(~low) if il.size or low.any() else None
    ah = a if ih is None else a[ih]
    alpha = 0.5 * (ah + np.sqrt(ah * ah + 4.0))
    todo = np.arange(ah.size)
    res = np.empty(ah.size)
    aa, al = ah, alpha
    while todo.size:
        zh = rng.standard_exponential(todo.size)
        zh /= al
        zh += aa
        d = zh - al
        ok = rng.random(todo.size) <= np.exp(-0.5 * d * d)
        res[todo[ok]] = zh[ok]
        keep = ~ok
        todo, aa, al = todo[keep], aa[keep], al[keep]
    if ih is None:
        return res
    out[ih] = res
    return out
