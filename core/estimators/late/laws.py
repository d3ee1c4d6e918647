"""The per-CPU laws of MODEL.md as functions: CDF, survival, density and atoms, to ~1e-13.

`ELaw` is the law of a remote CPU's entry time e = max(ipi, off) (ipi = ipi_base_us +
Exponential(ipi_jitter_us); off = LogNormal(stall) with prob. p_stall, else
Exponential(irq_off_mean_us)); `WLaw` is a LogNormal (a WBINVD length); `ConvLaw` is the
law of e + w (numerical convolution, core/estimators/late/quad.py); `ClearLaw` is the law of
an answering CPU's clear time c = e + prologue_us + (w if dirty), with the model's own
floating-point sums: c takes float values, and an atom of c sits exactly where the model's
`e + prologue_us (+ w)` puts it. Degenerate laws (a zero mean or sigma) are atoms.

Every function takes and returns float64 arrays. `cdf(x)` is P(X <= x), `sf(x)` is P(X > x),
each computed from its own formula (no 1 - cdf), so both are accurate relative to
themselves, deep in either tail; `pdf` is the density of the atom-free part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from core.estimators.late.quad import integrate
from core.estimators.late.special import norm_cdf, norm_pdf, norm_sf
from core.params import Params

Z_MAX = 38.5
"""|z| beyond which a standard normal's mass (< 1e-323) is below the smallest double."""


def _a(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


@dataclass(frozen=True)
class ExpLaw:
    """base + Exponential(mean); mean 0 is an atom at base."""

    base: float
    mean: float

    def cdf(self, x):
        x = _a(x)
        if self.mean == 0:
            return (x >= self.base).astype(float)
        return np.where(x >= self.base, -np.expm1(-(x - self.base) / self.mean), 0.0)

    def sf(self, x):
        x = _a(x)
        if self.mean == 0:
            return (x < self.base).astype(float)
        return np.where(x >= self.base, np.exp(-(x - self.base) / self.mean), 1.0)

    def pdf(self, x):
        x = _a(x)
        if self.mean == 0:
            return np.zeros_like(x)
        return np.where(x >= self.base, np.exp(-(x - self.base) / self.mean) / self.mean, 0.0)

    @property
    def atoms(self) -> list[tuple[float, float]]:
        return [(self.base, 1.0)] if self.mean == 0 else []


@dataclass(frozen=True)
class WLaw:
    """LogNormal(median, sigma) = median exp(sigma Z); sigma 0 or median 0 is an atom."""

    median: float
    sigma: float

    @property
    def continuous(self) -> bool:
        return self.sigma > 0 and self.median > 0

    @property
    def atom(self) -> float:
        """The value of a degenerate law (median if sigma = 0, else 0)."""
        return float(self.median) if self.sigma == 0 else 0.0

    def z(self, x):
        """The normal variable of x (x > 0)."""
        return np.log(_a(x) / self.median) / self.sigma

    def cdf(self, x):
        x = _a(x)
        if not self.continuous:
            return (x >= self.atom).astype(float)
        return np.where(x > 0, norm_cdf(self.z(np.where(x > 0, x, 1.0))), 0.0)

    def sf(self, x):
        x = _a(x)
        if not self.continuous:
            return (x < self.atom).astype(float)
        return np.where(x > 0, norm_sf(self.z(np.where(x > 0, x, 1.0))), 1.0)

    def pdf(self, x):
        x = _a(x)
        if not self.continuous:
            return np.zeros_like(x)
        xx = np.where(x > 0, x, 1.0)
        return np.where(x > 0, norm_pdf(self.z(xx)) / (self.sigma * xx), 0.0)

    @property
    def atoms(self) -> list[tuple[float, float]]:
        return [] if self.continuous else [(self.atom, 1.0)]


@dataclass(frozen=True)
class OffLaw:
    """off: with prob. p_stall LogNormal(stall), else Exponential(irq_off_mean_us)."""

    p_stall: float
    stall: WLaw
    short: ExpLaw

    def parts(self):
        """(weight, law) of the two components with weight > 0."""
        return [(w, law) for w, law in ((self.p_stall, self.stall), (1.0 - self.p_stall, self.short)) if w > 0]

    def cdf(self, x):
        return sum(w * law.cdf(x) for w, law in self.parts())

    def sf(self, x):
        return sum(w * law.sf(x) for w, law in self.parts())

    def pdf(self, x):
        return sum(w * law.pdf(x) for w, law in self.parts())

    @property
    def atoms(self) -> list[tuple[float, float]]:
        return _merge([(a, w * m) for w, law in self.parts() for a, m in law.atoms])


def _merge(atoms: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: dict[float, float] = {}
    for a, m in atoms:
        if m > 0:
            out[float(a)] = out.get(float(a), 0.0) + m
    return sorted(out.items())


def _pred(x: float) -> float:
    return float(np.nextafter(x, -np.inf))


@dataclass(frozen=True)
class ELaw:
    """e = max(ipi, off), ipi and off independent."""

    ipi: ExpLaw
    off: OffLaw

    @staticmethod
    def of(p: Params) -> "ELaw":
        return ELaw(
            ExpLaw(float(p.ipi_base_us), float(p.ipi_jitter_us)),
            OffLaw(float(p.p_stall), WLaw(float(p.stall_median_us), float(p.stall_sigma)),
                   ExpLaw(0.0, float(p.irq_off_mean_us))),
        )

    @property
    def lower(self) -> float:
        """e >= ipi_base_us always."""
        return self.ipi.base

    def cdf(self, x):
        return self.ipi.cdf(x) * self.off.cdf(x)

    def sf(self, x):
        return self.ipi.sf(x) + self.ipi.cdf(x) * self.off.sf(x)

    def pdf(self, x):
        return self.ipi.pdf(x) * self.off.cdf(x) + self.ipi.cdf(x) * self.off.pdf(x)

    def all(self, x) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cdf, sf, pdf) at once, sharing the normal tail of the stall part (the costly bit)."""
        x = _a(x)
        ic, isf, ip = self.ipi.cdf(x), self.ipi.sf(x), self.ipi.pdf(x)
        oc, osf, op = self._off_all(x)
        return ic * oc, isf + ic * osf, ip * oc + ic * op

    def all_delta(self, d) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """all() at e = ipi_base + d (d >= 0), with ipi's terms computed from d itself: near
        the bottom of the support e - ipi_base would otherwise lose its digits."""
        d = _a(d)
        ip = self.ipi
        if ip.mean > 0:
            ex = np.exp(-d / ip.mean)
            ic, isf, ipd = -np.expm1(-d / ip.mean), ex, ex / ip.mean
        else:
            ic, isf, ipd = np.ones_like(d), np.zeros_like(d), np.zeros_like(d)
        oc, osf, op = self._off_all(ip.base + d)
        return ic * oc, isf + ic * osf, ipd * oc + ic * op

    def _off_all(self, x) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = _a(x)
        oc = np.zeros_like(x)
        osf = np.zeros_like(x)
        op = np.zeros_like(x)
        for wt, law in self.off.parts():
            if isinstance(law, WLaw) and law.continuous:
                pos = x > 0
                z = law.z(np.where(pos, x, 1.0))
                q = norm_sf(np.abs(z))
                c = np.where(pos, np.where(z < 0, q, 1.0 - q), 0.0)
                sv = np.where(pos, np.where(z >= 0, q, 1.0 - q), 1.0)
                pv = np.where(pos, norm_pdf(z) / (law.sigma * np.where(pos, x, 1.0)), 0.0)
            else:
                c, sv, pv = law.cdf(x), law.sf(x), law.pdf(x)
            oc += wt * c
            osf += wt * sv
            op += wt * pv
        return oc, osf, op

    @cached_property
    def atoms(self) -> list[tuple[float, float]]:
        """(value, mass): e = a with positive probability."""
        out = []
        for a, m in self.ipi.atoms:  # ipi = base exactly (no jitter): e = base when off <= base
            out.append((a, m * float(self.off.cdf(np.array([a]))[0])))
        for a, m in self.off.atoms:  # off = a exactly: e = a when ipi < a
            out.append((a, m * float(self.ipi.cdf(np.array([_pred(a)]))[0])))
        return _merge(out)

    @cached_property
    def features(self) -> np.ndarray:
        """Values of e around which its law changes (atoms, kinks, scales), for quadrature
        panels and table grids."""
        pts = [self.lower, *(a for a, _ in self.atoms)]
        scales = 2.0 ** np.arange(-4, 8, 2)
        if self.ipi.mean > 0:
            pts += list(self.ipi.base + self.ipi.mean * scales)
        sh = self.off.short
        if sh.mean > 0:
            pts += list(sh.mean * scales)
        st = self.off.stall
        if self.off.p_stall > 0 and st.continuous:
            pts += list(st.median * np.exp(st.sigma * np.arange(-8.0, 8.5, 2.0)))
        return np.unique(np.array([x for x in pts if x >= self.lower and math.isfinite(x)]))

    @cached_property
    def quad_points(self) -> np.ndarray:
        """A coarser list of features: initial panel ends of the convolution's quadrature
        (which refines where needed)."""
        pts = [self.lower, *(a for a, _ in self.atoms)]
        if self.ipi.mean > 0:
            pts += [self.ipi.base + self.ipi.mean * k for k in (1.0, 16.0)]
        if self.off.short.mean > 0:
            pts += [self.off.short.mean * k for k in (1.0, 16.0)]
        st = self.off.stall
        if self.off.p_stall > 0 and st.continuous:
            pts += list(st.median * np.exp(st.sigma * np.array([-6.0, -3.0, 0.0, 3.0, 6.0])))
        return np.unique(np.array([x for x in pts if x >= self.lower and math.isfinite(x)]))


@dataclass(frozen=True)
class ConvLaw:
    """e + w, w ~ WLaw (continuous) independent of e: CDF, survival and density by quadrature
    over w's normal variable z (w = median e^{sigma z}).

        P(e + w <= y) = int_{z < z_b} F_e(y - w(z)) phi(z) dz,           z_b: w(z_b) = y - base
        P(e + w > y)  = Q(z_b) + int_{z < z_b} S_e(y - w(z)) phi(z) dz
        density       = int_{z < z_b} f_e(y - w(z)) phi(z) dz + sum_atoms m_a f_w(y - a)

    Panels break at the images of e's features, so each panel is smooth; relative accuracy
    `RTOL` for each of the three (tests/test_late_laws.py checks them against scipy quad).
    """

    e: ELaw
    w: WLaw
    RTOL = 1e-11

    @np.errstate(all="ignore")
    def evaluate(self, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cdf, sf, pdf) of e + w at y (array)."""
        y = _a(y).ravel()
        b = self.e.lower
        cdf = np.zeros_like(y)
        sf = np.ones_like(y)
        pdf = np.zeros_like(y)
        live = np.flatnonzero(y > b)
        if not live.size:
            return cdf, sf, pdf
        yl = y[live]
        n = yl.size
        w, e = self.w, self.e
        yb = yl - b  # the room above e's lower end; all the integrands are written in d = e - b
        zb = w.z(yb)
        # d = yb - w: for w <= yb/2 integrate over w's z (w exact, d = yb - w >= yb/2 accurate),
        # for d <= yb/2 over d (d exact, w = yb - d accurate): no integrand takes a difference of
        # nearly equal numbers, so each is smooth to the last digits and the rule converges
        h = 0.5 * yb
        zh = w.z(h)
        feats = e.quad_points - b
        zgrid = np.array([-Z_MAX, -8.0, -4.0, 0.0, 4.0, 8.0])
        zf = w.z(yb[:, None] - feats[None, :])  # images of the features in region 1
        top = np.minimum(zh, Z_MAX)[:, None]
        z_pts = np.concatenate([np.broadcast_to(zgrid, (n, zgrid.size)), np.where(np.isfinite(zf), zf, -Z_MAX), top],
                               axis=1)
        z_breaks = np.sort(np.clip(z_pts, -Z_MAX, top), axis=1)
        d_grid = yb[:, None] - w.median * np.exp(w.sigma * zgrid[None, :])
        d_pts = np.concatenate([np.broadcast_to(feats, (n, feats.size)), d_grid, np.zeros((n, 1)), h[:, None]], axis=1)
        d_breaks = np.sort(np.clip(d_pts, 0.0, h[:, None]), axis=1)
        k = max(z_breaks.shape[1], d_breaks.shape[1])
        breaks = np.concatenate([_pad(z_breaks, k), _pad(d_breaks, k)])

        def f(item, x):
            out = np.empty((3, x.size))
            r1 = item < n
            i1, i2 = np.flatnonzero(r1), np.flatnonzero(~r1)
            if i1.size:  # over z: dP(w) = phi(z) dz
                z = x[i1]
                d = yb[item[i1]] - w.median * np.exp(w.sigma * z)
                c, sv, pv = e.all_delta(d)
                ph = norm_pdf(z)
                out[0, i1], out[1, i1], out[2, i1] = c * ph, sv * ph, pv * ph
            if i2.size:  # over d: dP(w) = f_w(yb - d) dd
                d = x[i2]
                dens = w.pdf(yb[item[i2] - n] - d)
                c, sv, pv = e.all_delta(d)
                out[0, i2], out[1, i2], out[2, i2] = c * dens, sv * dens, pv * dens
            return out

        tot = integrate(f, breaks, 3, rtol=self.RTOL)
        tot = tot[:, :n] + tot[:, n:]
        cdf[live] = tot[0]
        sf[live] = tot[1] + norm_sf(zb)
        atoms = sum((m * w.pdf(yb - (a - b)) for a, m in e.atoms), np.zeros_like(yl))
        pdf[live] = tot[2] + atoms
        return cdf, sf, pdf


def _pad(rows: np.ndarray, k: int) -> np.ndarray:
    """Rows padded to k columns by repeating their last value (empty panels)."""
    if rows.shape[1] == k:
        return rows
    return np.concatenate([rows, np.repeat(rows[:, -1:], k - rows.shape[1], axis=1)], axis=1)


def float_threshold(t: np.ndarray, g) -> np.ndarray:
    """The largest double v with g(v) <= t, for g nondecreasing and g(v) ~ v + const
    (the model's float sums e + prologue_us (+ w)): v starts at the real solution and moves
    one ulp at a time."""
    t = _a(t)
    v = t - (g(np.zeros_like(t)) - 0.0)
    for _ in range(64):
        over = g(v) > t
        if not over.any():
            break
        v = np.where(over, np.nextafter(v, -np.inf), v)
    for _ in range(64):
        nxt = np.nextafter(v, np.inf)
        up = g(nxt) <= t
        if not up.any():
            break
        v = np.where(up, nxt, v)
    return v


@dataclass(frozen=True)
class ClearLaw:
    """The clear time c of an answering (not dead) remote CPU in the stop, as the model computes
    it in floating point: c = fl(e + prologue_us), plus w (c = fl(c + w)) if dirty in the stop
    (prob. `dirty`: incoherent_fraction under none, 0 when the early flush ran)."""

    e: ELaw
    w: WLaw
    dirty: float
    prologue: float
    conv: ConvLaw = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "conv", ConvLaw(self.e, self.w))

    # --- the two components: d = 0 (no WBINVD in the stop) and d = 1 ----------------------

    def _g0(self, v):
        return v + self.prologue

    def _g1(self, v):
        return (v + self.prologue) + self.w.atom

    def theta0(self, t):
        """Largest e with fl(e + prologue) <= t."""
        return float_threshold(t, self._g0)

    def theta1(self, t):
        """Largest e with fl(fl(e + prologue) + w) <= t (w an atom)."""
        return float_threshold(t, self._g1)

    @property
    def parts(self) -> list[tuple[float, int]]:
        """(weight, d) of the components with weight > 0."""
        return [(w, d) for w, d in ((1.0 - self.dirty, 0), (self.dirty, 1)) if w > 0]

    @np.errstate(all="ignore")
    def evaluate(self, t) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(P(c <= t), P(c > t), density of the atom-free part) at the doubles t."""
        t = _a(t).ravel()
        cdf = np.zeros_like(t)
        sf = np.zeros_like(t)
        pdf = np.zeros_like(t)
        for wt, d in self.parts:
            if d == 0 or not self.w.continuous:
                th = self.theta0(t) if d == 0 else self.theta1(t)
                cdf += wt * self.e.cdf(th)
                sf += wt * self.e.sf(th)
                pdf += wt * self.e.pdf(t - self.prologue - (0.0 if d == 0 else self.w.atom))
            else:
                c, s, f = self.conv.evaluate(t - self.prologue)
                cdf += wt * c
                sf += wt * s
                pdf += wt * f
        return cdf, sf, pdf

    @cached_property
    def atoms(self) -> list[tuple[float, float]]:
        """(value, mass) of the atoms of c, at the doubles where the model's sums put them."""
        out = []
        for wt, d in self.parts:
            if d == 1 and self.w.continuous:
                continue
            for a, m in self.e.atoms:
                c = a + self.prologue
                if d == 1:
                    c = c + self.w.atom
                out.append((float(c), wt * m))
        return _merge(out)

    @property
    def lower(self) -> float:
        """c >= fl(ipi_base + prologue)."""
        return float(self.e.lower + self.prologue)

    @cached_property
    def features(self) -> np.ndarray:
        """Values of c around which its law changes (for the table's initial grid)."""
        f = self.e.features + self.prologue
        pts = [f]
        if self.dirty > 0:
            if self.w.continuous:
                wq = self.w.median * np.exp(self.w.sigma * np.arange(-8.0, 8.5, 0.5))
                pts.append(self.lower + wq)
            else:
                pts.append(f + self.w.atom)
        pts.append(np.array([a for a, _ in self.atoms]))
        return np.unique(np.concatenate(pts))
