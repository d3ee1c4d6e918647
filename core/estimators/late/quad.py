"""Vectorized adaptive Gauss-Kronrod (7, 15) quadrature: many integrals at once.

The late estimator's set-up needs P(e + w <= y), P(e + w > y) and the density of e + w
(e a CPU's entry time, w its WBINVD length) at ~1e3 values of y, each to ~1e-13 relative:
integrals of a few smooth pieces with sharp features at known places. `integrate` takes
every integral's initial panels (the features' positions), evaluates the 15-point Kronrod
rule and its embedded 7-point Gauss rule on all panels at once, keeps a panel when the
difference of the two (QUADPACK's error estimate, pessimistic for smooth integrands) is
below its share of `rtol` x the integral, and halves the others, until every panel is kept.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from core.estimators.late.errors import Unrepresentable

# QUADPACK qk15: Kronrod nodes (positive half, the last is 0) and weights, and the 7-point
# Gauss weights of the odd-indexed nodes
_XK = np.array([
    0.991455371120812639206854697526329, 0.949107912342758524526189684047851,
    0.864864423359769072789712788640926, 0.741531185599394439863864773280788,
    0.586087235467691130294144845693013, 0.405845151377397166906606412076961,
    0.207784955007898467600689403773245, 0.0,
])
_WK = np.array([
    0.022935322010529224963732008058970, 0.063092092629978553290700663189204,
    0.104790010322250183839876322541518, 0.140653259715525918745189590510238,
    0.169004726639267902826583426598550, 0.190350578064785409913256402421014,
    0.204432940075298892414161999234649, 0.209482141084727828012999174891714,
])
_WG = np.array([
    0.129484966168869693270611432679082, 0.279705391489276667901467771423780,
    0.381830050505118944950369775488975, 0.417959183673469387755102040816327,
])
NODES = np.concatenate([-_XK[:-1], _XK[::-1]])
"""The 15 Kronrod abscissae on [-1, 1], ascending."""
W_KRONROD = np.concatenate([_WK[:-1], _WK[::-1]])
W_GAUSS = np.zeros(15)
W_GAUSS[[1, 3, 5, 7, 9, 11, 13]] = np.concatenate([_WG[:-1], _WG[::-1]])

MIN_WIDTH = 1e-9
"""Relative width below which a panel is not split further (see `integrate`)."""

Integrand = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""f(item, x) -> values of shape (components, len(x)): item[k] says which integral x[k] belongs to."""




def integrate(
    f: Integrand,
    breaks: np.ndarray,
    components: int,
    rtol: float = 1e-13,
    max_panels: int = 2_000_000,
) -> np.ndarray:
    """Integrals over [breaks[i, 0], breaks[i, -1]], shape (components, len(breaks)).

    Row i of `breaks` holds the initial panel ends of integral i (nondecreasing; repeated
    values make empty panels, which are dropped). A panel is kept once, for every component,
    |K15 - G7| <= rtol x max(|the integral's first estimate| x width / (the integral's whole
    width), |the panel's K15 value|), or its K15 value is < 1e-300: the kept errors add up to
    <= 2 rtol x the integral (of a positive integrand). Panels narrower than MIN_WIDTH x the
    integral's width are kept as they are (an integrand with rounding noise above rtol).
    """
    breaks = np.asarray(breaks, dtype=np.float64)
    n = breaks.shape[0]
    item = np.repeat(np.arange(n, dtype=np.intp), breaks.shape[1] - 1)
    lo = breaks[:, :-1].ravel()
    hi = breaks[:, 1:].ravel()
    keep = hi > lo
    item, lo, hi = item[keep], lo[keep], hi[keep]
    width = breaks[:, -1] - breaks[:, 0]
    total = np.zeros((components, n))
    estimate = None
    seen = 0
    while item.size:
        seen += item.size
        if seen > max_panels:
            raise Unrepresentable(f"adaptive quadrature needed more than {max_panels} panels")
        half = 0.5 * (hi - lo)
        x = (0.5 * (hi + lo))[:, None] + half[:, None] * NODES[None, :]
        vals = f(np.repeat(item, 15), x.ravel()).reshape(components, item.size, 15)
        k15 = (vals * W_KRONROD).sum(axis=2) * half
        g7 = (vals * W_GAUSS).sum(axis=2) * half
        if estimate is None:  # first pass: the integrals' scale, for the relative test
            estimate = total.copy()
            for c in range(components):
                estimate[c] = np.bincount(item, weights=np.abs(k15[c]), minlength=n)
        share = (hi - lo) / np.where(width[item] > 0, width[item], 1.0)
        allowed = rtol * np.maximum(share * estimate[:, item], np.abs(k15))
        # a panel below MIN_WIDTH of its integral is kept whatever its estimate: the integrand's
        # own rounding (e.g. e - ipi_base at e ~ ipi_base) is then larger than the rule's error
        tiny = share < MIN_WIDTH
        ok = np.all((np.abs(k15 - g7) <= allowed) | (np.abs(k15) < 1e-300), axis=0) | tiny
        for c in range(components):
            total[c] += np.bincount(item[ok], weights=k15[c][ok], minlength=n)
        mid = 0.5 * (lo + hi)
        bad = ~ok
        item = np.concatenate([item[bad], item[bad]])
        lo, hi = np.concatenate([lo[bad], mid[bad]]), np.concatenate([mid[bad], hi[bad]])
    return total
