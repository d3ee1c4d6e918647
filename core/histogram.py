"""The fixed log-bin stop-time histogram of SCHEMA.md and quantiles read from it.

Fixed bins make per-shard histograms add exactly, so a point's quantiles can be
computed from merged shards (and in SQL) without keeping every stop time.
"""

from __future__ import annotations

import numpy as np

N_BINS = 128
BINS_PER_DECADE = 16
TOP_EDGE_US = 10.0 ** ((N_BINS - 1) / BINS_PER_DECADE)
"""Lower edge of the top bin (~8.66e7 µs); the top bin holds every stop time from here up."""
RANGE_US = 10.0 ** (N_BINS / BINS_PER_DECADE)
"""Top of the bins' nominal range, 1e8 µs: a stop time at or above it is only known to be in the top bin."""


def bin_index(t_us: np.ndarray) -> np.ndarray:
    """Bin of each stop time: clamp(floor(16 * log10(max(t, 1))), 0, 127) (one scratch array)."""
    t = np.maximum(np.asarray(t_us, dtype=np.float64), 1.0)
    np.log10(t, out=t)
    t *= BINS_PER_DECADE
    np.floor(t, out=t)
    np.clip(t, 0, N_BINS - 1, out=t)
    return t.astype(np.int64)


def histogram(t_us: np.ndarray, finite: bool = False) -> np.ndarray:
    """Counts per bin of the finite stop times (NaN/inf, i.e. hangs, are left out; `finite`: the
    caller says every one is)."""
    t = np.asarray(t_us, dtype=np.float64)
    if not finite:
        t = t[np.isfinite(t)]
    return np.bincount(bin_index(t), minlength=N_BINS).astype(np.int64)


def bin_edges(b: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper edge (µs) of bin b; bin 0 also holds everything below 1 µs."""
    b = np.asarray(b, dtype=np.float64)
    return 10.0 ** (b / BINS_PER_DECADE), 10.0 ** ((b + 1) / BINS_PER_DECADE)


def quantile(hist: np.ndarray, q: float, t_max: float | None = None) -> float:
    """Stop-time quantile q from bin counts, log-linear inside the bin; NaN when empty.

    The resolution is one bin, a factor 10**(1/16) ~ 1.155: the answer is within
    15% of the exact sample quantile. Given the observed maximum `t_max`, the
    answer is clamped to it (interpolation inside the last bin could overshoot).
    The top bin is open-ended (every time >= TOP_EDGE_US lands there): when the
    quantile falls in it and `t_max` is unknown or >= RANGE_US, its value is not
    resolved and the answer is +inf, read ">= TOP_EDGE_US" (never a clamped value
    below times that were seen). The SQL of the `outcomes` view does the same.
    """
    h = np.asarray(hist, dtype=np.float64)
    total = h.sum()
    if total <= 0:
        return float("nan")
    target = q * total
    cum = np.cumsum(h)
    b = int(np.searchsorted(cum, target, side="left"))
    b = min(b, N_BINS - 1)
    if b == N_BINS - 1 and (t_max is None or not t_max < RANGE_US):
        return float("inf")
    before = cum[b] - h[b]
    frac = 0.0 if h[b] == 0 else min(max((target - before) / h[b], 0.0), 1.0)
    value = float(10.0 ** ((b + frac) / BINS_PER_DECADE))
    return min(value, t_max) if t_max is not None and t_max == t_max else value
