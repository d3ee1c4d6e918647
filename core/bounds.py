"""An upper bound on p_timeout from MODEL.md's laws alone: the panic path's deadline, decided
without trials where the model cannot miss it often (issue 22: "p_timeout < 1e-6 at every point").

A timeout (wait = 0) is F > D with D = T_loop + N, N = nmi_wait_us * udelay_factor. Per remote
CPU i with X_i = nmi_i + prologue_us + dirty_i (w_i + w2_i) (the NMI latency including its
hold-off, and both flushes when its flag is set for the stop), each of MODEL.md's cases gives
f_i - D <= X_i - N when CPU i got an NMI (sent at s_i <= T_loop, so it arrives at
a_i <= T_loop + nmi_i): before or in its prologue f_i = a_i + prologue + dirty w_i; in its
WBINVD f_i = c_i + h_i with c_i <= a_i + w_i; at or after its clear f_i = c_i <= a_i. A CPU
that got no NMI has f_i = c_i <= s_i <= T_loop, and only a CPU late for the 1 s wait
(c_i > T1) gets one. So

    timeout  =>  some i is dead, or has c_i > T1 and X_i > N,

an event per CPU, independent across CPUs with one probability a, and
p_timeout <= 1 - (1 - a)^(n_cpus - 1). With e_i = max(ipi_i, off_i) (independent of the NMI
and the flushes) and the flag set with probability f (0 where the early flush applies):

    a = p_unresponsive + (1 - p_unresponsive) [(1 - f) G(0) Q(R) + f B],
    G(x) = P(e > T1 - prologue - x),  R = N - prologue - nmi_base_us,
    Q(s) >= P(E + hold-off > s)     (E the NMI's exponential part),
    B >= P(e + prologue + w > T1 and nmi + prologue + w + w2 > N) = E_w[G(w) H(w)],
    H(x) >= P(E + hold-off + w2 > R - x).

For a flagged CPU B is the smaller of that and a split by case: an NMI before the CPU entered
stop_this_cpu() (or in its prologue) leaves only w_i in f_i (G(w) Q(R - w)); one inside its WBINVD
needs the CPU to have entered by the NMI's arrival, e_i <= T_nmi + (n_cpus - 2) nmi_send_us -
prologue + nmi_i, a window of a few ms just after T1 that a CPU stalled past 1 s rarely falls in
(for a threshold t of the NMI's random part: Q(t) G(w) + P(e in the window | w) H(R - w)). At the
defaults this is ~6x tighter than the whole-case bound.

G and H are nondecreasing in x, so the integral over w is bounded above by its right-endpoint
sum on any grid (plus the mass beyond the grid's end at value 1); Q and H by any split of a sum
of non-negative terms (s = u + v: P(A + B > s) <= P(A > u) + P(B > v)), taken at the best of a
fixed set of splits. Every choice of grid and split gives a valid bound; the grids only decide
how tight it is. Closed-form survival functions (exponential, log-normal through the normal
tail, accurate to ~1e-15 relative), so the bound costs ~1 ms per point and no trials. Tests
check it against counted timeouts of the naive core where they are common (it must not fall
below their Clopper-Pearson lower bound) and against hand-computed cases.

Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np

from .estimators.late.special import norm_cdf, norm_sf

__all__ = ["BOUND_PARAMS", "timeout_max", "timeout_max_of"]

BOUND_PARAMS: tuple[str, ...] = (
    "n_cpus", "ipi_base_us", "ipi_jitter_us", "irq_off_mean_us", "p_stall", "stall_median_us", "stall_sigma",
    "incoherent_fraction", "wbinvd_us", "wbinvd_sigma", "wbinvd_contention", "rewbinvd_factor", "nmi_base_us",
    "nmi_jitter_us", "p_nmi_delay", "nmi_delay_median_us", "nmi_delay_sigma", "prologue_us", "timeout_us",
    "udelay_factor", "wait", "nmi_wait_us", "p_unresponsive", "mitigation", "model_rev", "console_us", "nmi_send_us",
)
"""The parameters the bound reads (every other one cannot move a timeout), in the order the
queries' DuckDB function takes them."""

_SAFETY = 1.0 + 1e-9
"""Relative margin for the rounding of ~1e3 terms of ~1e-16 relative error each."""
_GRID_STEP = 1.07  # geometric step of the w grid: tightness only
_HALF = np.geomspace(1e-6, 0.5, 20)
_SPLITS = np.concatenate([[0.0], _HALF, 1.0 - _HALF[::-1][1:], [1.0]])
"""Shares of a sum's threshold given to its first term (both ends: either term may dominate)."""


def _exp_sf(t: np.ndarray, mean: float) -> np.ndarray:
    """P(Exponential(mean) > t); Exponential(0) is 0."""
    t = np.asarray(t, dtype=np.float64)
    if mean <= 0.0:
        return np.where(t < 0.0, 1.0, 0.0)
    return np.where(t < 0.0, 1.0, np.exp(-np.maximum(t, 0.0) / mean))


def _ln_tail(t: np.ndarray, median: float, sigma: float, upper: bool) -> np.ndarray:
    """P(L > t) if `upper` else P(L <= t), L = median * exp(sigma Z): each accurate where it is small."""
    t = np.asarray(t, dtype=np.float64)
    if median <= 0.0 or sigma <= 0.0:  # a point mass at the median (0 included)
        above = np.where(t < median, 1.0, 0.0)
        return above if upper else 1.0 - above
    with np.errstate(divide="ignore"):
        z = (np.log(np.maximum(t, 0.0)) - math.log(median)) / sigma
    return np.where(t <= 0.0, 1.0, norm_sf(z)) if upper else np.where(t <= 0.0, 0.0, norm_cdf(z))


def _ln_sf(t: np.ndarray, median: float, sigma: float) -> np.ndarray:
    return _ln_tail(t, median, sigma, True)


def _ln_cdf(t: np.ndarray, median: float, sigma: float) -> np.ndarray:
    return _ln_tail(t, median, sigma, False)


class _Laws:
    """The per-CPU laws the bound uses, at one point."""

    def __init__(self, v: Mapping[str, Any]) -> None:
        f = lambda k: float(v[k])  # noqa: E731
        self.n = int(v["n_cpus"])
        self.uf = f("udelay_factor")
        self.t1, self.nwait = f("timeout_us") * self.uf, f("nmi_wait_us") * self.uf
        self.pro = f("prologue_us")
        self.ib, self.ij, self.iom = f("ipi_base_us"), f("ipi_jitter_us"), f("irq_off_mean_us")
        self.ps, self.sm, self.ss = f("p_stall"), f("stall_median_us"), f("stall_sigma")
        self.wm = f("wbinvd_us") * (1.0 + f("wbinvd_contention") * (self.n - 1))
        self.ws, self.rf = f("wbinvd_sigma"), f("rewbinvd_factor")
        self.nb, self.nj = f("nmi_base_us"), f("nmi_jitter_us")
        self.pd, self.dm, self.ds = f("p_nmi_delay"), f("nmi_delay_median_us"), f("nmi_delay_sigma")
        self.pu = f("p_unresponsive")
        self.console, self.send = f("console_us"), f("nmi_send_us")
        early = v["mitigation"] == "early_flush" and (int(v["model_rev"]) == 1 or int(v["wait"]) == 1)
        self.inc = 0.0 if early else f("incoherent_fraction")

    def g(self, x: np.ndarray) -> np.ndarray:
        """G(x) = P(max(ipi, off) > T1 - prologue - x) = S_ipi + S_off - S_ipi S_off (no loss near 0)."""
        return self.se(self.t1 - self.pro - np.asarray(x, dtype=np.float64))

    def q(self, s: np.ndarray) -> np.ndarray:
        """An upper bound of P(E + hold-off > s): exact without hold-offs, else the best split."""
        s = np.asarray(s, dtype=np.float64)
        plain = _exp_sf(s, self.nj)
        if self.pd <= 0.0:
            return plain
        u = s[..., None] * (1.0 - _SPLITS)
        held = np.min(_exp_sf(u, self.nj) + _ln_sf(s[..., None] - u, self.dm, self.ds), axis=-1)
        return np.minimum((1.0 - self.pd) * plain + self.pd * np.minimum(held, 1.0), 1.0)

    def h(self, r: np.ndarray) -> np.ndarray:
        """An upper bound of P(E + hold-off + w2 > r): the best split v (the NMI's share) from a
        fixed grid (any v >= 0 is a valid split, so a grid loses tightness only)."""
        r = np.asarray(r, dtype=np.float64)
        top = max(float(np.max(r, initial=0.0)), 1.0)
        v = np.concatenate([[0.0], np.geomspace(1e-3, top, 20)])
        qv = self.q(v)
        best = np.min(qv + _ln_sf(r[..., None] - v, self.wm * self.rf, self.ws), axis=-1)
        return np.minimum(best, 1.0)

    def se(self, y: np.ndarray) -> np.ndarray:
        """P(max(ipi, off) > y) = S_ipi + S_off - S_ipi S_off (no loss where it is small)."""
        y = np.asarray(y, dtype=np.float64)
        s_ipi = _exp_sf(y - self.ib, self.ij)
        s_off = self.ps * _ln_sf(y, self.sm, self.ss) + (1.0 - self.ps) * _exp_sf(y, self.iom)
        return np.minimum(s_ipi + s_off - s_ipi * s_off, 1.0)

    def flagged(self, step: float = _GRID_STEP) -> float:
        """B for a flagged CPU, the smaller of two valid bounds (each a right-endpoint sum over a
        grid of w plus the mass beyond the grid):

        - whole: G(w) H(R - w) (late, and the NMI plus both flushes past the deadline);
        - by case: the NMI came before the CPU entered stop_this_cpu() or in its prologue, so
          only w counts: G(w) Q(R - w); or it came in its WBINVD, so the CPU entered by the NMI's
          arrival, e <= L + nmi with L = T_nmi + (n_cpus - 2) nmi_send_us - prologue (at most
          n_cpus - 2 NMIs are sent before it): for any t, either the NMI's random part is > t
          (Q(t) G(w)) or e lies in (T1 - prologue - w, L + nmi_base + t] (W_t(w) H(R - w)); the
          best t of a fixed set.
        """
        r = self.nwait - self.pro - self.nb
        top = max(self.t1 - self.pro, r, 0.0)
        if self.wm <= 0.0 or top <= 0.0:
            return float(self.g(np.array(0.0)) * self.h(np.array(r)))
        lo = self.wm * math.exp(-9.0 * self.ws) if self.ws > 0 else self.wm * 0.5
        lo = min(lo, top)
        k = max(2, int(math.ceil(math.log(max(top / lo, 1.0 + 1e-12)) / math.log(step))) + 1)
        x = np.concatenate([[0.0], np.geomspace(lo, top, k)])
        cdf = _ln_cdf(x, self.wm, self.ws)
        sf = _ln_sf(x, self.wm, self.ws)
        # P(x_{j-1} < w <= x_j): CDF differences below the median, survival differences above
        mass = np.where(x[1:] <= self.wm, cdf[1:] - cdf[:-1], sf[:-1] - sf[1:])
        mass = np.concatenate([[cdf[0]], np.maximum(mass, 0.0)])
        gx, hx = self.g(x), self.h(r - x)
        whole = float(np.sum(mass * gx * hx) + sf[-1])
        before = float(np.sum(mass * gx * self.q(r - x)))
        late_mass = float(np.sum(mass * gx))
        lwin = self.t1 + self.console + max(self.n - 2, 0) * self.send - self.pro + self.nb
        ts = np.concatenate([[0.0], np.geomspace(1.0, max(r, 2.0), 24)])
        below = self.t1 - self.pro - x  # e must exceed this to be late
        win = np.maximum(self.se(below)[:, None] - self.se(lwin + ts)[None, :], 0.0)
        win = np.where(below[:, None] < lwin + ts[None, :], win, 0.0)
        in_flush = np.min(np.sum((mass * hx)[:, None] * win, axis=0) + self.q(ts) * late_mass)
        return min(whole, before + float(in_flush) + 2.0 * float(sf[-1]))

    def per_cpu(self) -> float:
        r = self.nwait - self.pro - self.nb
        clean = float(self.g(np.array(0.0)) * self.q(np.array(r)))
        body = (1.0 - self.inc) * clean + (self.inc * self.flagged() if self.inc > 0.0 else 0.0)
        return min(1.0, self.pu + (1.0 - self.pu) * min(body, 1.0))


@lru_cache(maxsize=65536)
def _per_cpu(key: tuple) -> float:
    return _Laws(dict(zip(BOUND_PARAMS, key))).per_cpu()


def timeout_max_of(values: Mapping[str, Any]) -> float:
    """The upper bound of p_timeout at a point (its parameters by name, defaults filled).

    1.0 (no bound) off the panic path is never returned: there a timeout is zero by model
    (core.intervals.possible) and the bound is 0.0.
    """
    if int(values["wait"]) != 0:
        return 0.0
    n = int(values["n_cpus"])
    a = _per_cpu(tuple(values[k] for k in BOUND_PARAMS))  # (n_cpus too: the flush window counts its NMI sends)
    if a >= 1.0:
        return 1.0
    p = -math.expm1((n - 1) * math.log1p(-a))
    return min(1.0, p * _SAFETY)


def timeout_max(p: Any) -> float:
    """timeout_max_of for a core.params.Params."""
    return timeout_max_of({k: getattr(p, k) for k in BOUND_PARAMS})
