"""Inverse-CDF tables: one exponential variate -> the maximum of m' iid draws, to a stated accuracy.

A law is given by Lambda(t) = -log P(X <= t) (per unit) and r(t) = -dLambda/dt = pdf / cdf.
The maximum of m' iid copies has P(max <= t) = exp(-m' Lambda(t)), so with E ~ Exp(1) the
draw t solving m' Lambda(t) = E has exactly the law of the maximum. In the key
x = -log Lambda(t) (increasing in t, from -inf at the bottom of the support to +inf at
its top) that is x(t) = log m' - log E: one table serves every m'.

`InverseTable.build` evaluates x(t) and its slope exactly (the law's own functions) at
nodes chosen adaptively, and interpolates t(x) between them by cubic Hermite with the exact
slopes dt/dx = Lambda / r. A cell is split until the interpolant at its midpoint in t
differs from the midpoint by at most `tol` (relative, plus `tol` µs absolute) and the cubic
is monotone (Fritsch-Carlson). Atoms of X are cells where t is constant (the jump of the
CDF), gaps of its support are cells of zero x-width (never drawn), so the table returns an
atom's value exactly. Draws with x outside [x_lo, x_hi] (E > E_MAX or E < E_MIN: total
probability < 1e-12 + e^-40) take the value at the end.

Sampling costs a few NumPy passes per draw: a uniform bucket grid over x gives the cell in
O(1) (`_first`: the cell holding each bucket's start, plus a short forward scan).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from core.estimators.late.errors import Unrepresentable

E_MIN = 1e-12
E_MAX = 40.0
TOL = 1e-8
MAX_NODES = 20_000
X_NOISE = 1e-10
"""Cells narrower than this (relative) in the key are not refined (see _cells_ok)."""

LawFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""t (doubles) -> (Lambda(t), r(t)); Lambda may be +inf below the support and 0 at its top."""




class Scratch:
    """Work arrays a caller reuses across InverseTable.sample_max calls (the temporaries of a
    block of trials are ~256 KiB each, which the allocator maps and faults in afresh every
    time). Not to be shared between threads."""

    def __init__(self) -> None:
        self._arrays: dict[tuple[str, int], np.ndarray] = {}

    def _get(self, kind: str, j: int, n: int, dtype) -> np.ndarray:
        a = self._arrays.get((kind, j))
        if a is None or a.size < n:
            a = self._arrays[(kind, j)] = np.empty(n, dtype)
        return a[:n]

    def f(self, j: int, n: int) -> np.ndarray:
        return self._get("f", j, n, np.float64)

    def i(self, j: int, n: int) -> np.ndarray:
        return self._get("i", j, n, np.intp)

    def b(self, n: int) -> np.ndarray:
        return self._get("b", 0, n, bool)


def key(lam: np.ndarray) -> np.ndarray:
    """The table's key of Lambda: -log Lambda for Lambda <= 1, 1 - Lambda above (continuous with
    its slope at Lambda = 1). The upper tail (Lambda -> 0) is spread out by the log, the lower
    tail (P(X <= t) = e^-Lambda tiny) stays linear in Lambda, where t is smooth in it."""
    lam = np.asarray(lam, dtype=np.float64)
    return np.where(lam <= 1.0, -np.log(np.minimum(lam, 1.0)), 1.0 - lam)


def _dkey(lam: np.ndarray) -> np.ndarray:
    """-dkey/dLambda: 1/Lambda, or 1 above Lambda = 1."""
    return np.where(lam <= 1.0, 1.0 / lam, 1.0)


def key_range(m_lo: float, m_hi: float) -> tuple[float, float]:
    """Keys of the maximum of m' in [m_lo, m_hi] draws with E in [E_MIN, E_MAX]."""
    return float(key(np.array([E_MAX / m_lo]))[0]), float(key(np.array([E_MIN / m_hi]))[0])


@dataclass(frozen=True)
class InverseTable:
    """Cells (x0, x1) -> t by cubic Hermite; see the module docstring."""

    x0: np.ndarray
    inv_dx: np.ndarray
    t0: np.ndarray
    dt: np.ndarray
    a: np.ndarray  # dx * dt/dx at x0
    b: np.ndarray  # dx * dt/dx at x1
    x_lo: float
    x_hi: float
    bucket_lo: float
    inv_bucket: float
    first: np.ndarray
    scan: int  # forward steps that always suffice after the bucket's first cell
    x1: np.ndarray
    max_error: float  # the largest midpoint error of an accepted cell (µs), for the record
    law: LawFn | None = None  # for keys outside [x_lo, x_hi]: solved exactly
    lo: float = -math.inf
    hi: float = math.inf
    t_lo: float = -math.inf  # x(t_lo) > x_lo: bracket end of the keys below the range
    t_hi: float = math.inf  # x(t_hi) < x_hi: bracket end of the keys above

    @property
    def cells(self) -> int:
        return int(self.x0.size)

    @cached_property
    def _cubic(self) -> tuple[np.ndarray, np.ndarray]:
        """Per cell t as a cubic in s = (x - x0)/dx: c0 + s (c1 + s (c2 + s c3)) (c0 = t0, c1 = a)."""
        return 3.0 * self.dt - 2.0 * self.a - self.b, -2.0 * self.dt + self.a + self.b

    @np.errstate(all="ignore")
    def sample(self, x: np.ndarray, out: np.ndarray | None = None, work: "Scratch | None" = None) -> np.ndarray:
        """t(x) = inf{t: key(t) >= x} for an array of keys (in the table's range by interpolation,
        outside it by bisection on the law itself); into `out` if given."""
        x = np.asarray(x, dtype=np.float64)
        t = self._interpolate(x, out, work)
        if x.size and not (x.min() >= self.x_lo and x.max() <= self.x_hi):  # (NaN fails too)
            i = np.flatnonzero(~((x >= self.x_lo) & (x <= self.x_hi)))
            t[i] = self.solve(x[i])
        return t

    @np.errstate(all="ignore")
    def solve(self, x: np.ndarray) -> np.ndarray:
        """inf{t: key(t) >= x} by bisection (keys outside the table: rare, so slow is fine)."""
        if self.law is None:
            raise Unrepresentable("no law to solve with")
        below = x < self.x_lo
        a = np.where(below, self.lo, self.t_hi)
        b = np.where(below, self.t_lo, self.hi)
        open_top = ~np.isfinite(b)
        if open_top.any():  # no upper end: double one until it is above every key asked
            b = np.where(open_top, 2.0 * np.abs(a) + 1.0, b)
            for _ in range(2000):
                lam, _ = self.law(b)
                short = open_top & (key(lam) < x)
                if not short.any():
                    break
                a = np.where(short, b, a)
                b = np.where(short, 2.0 * b, b)
        for _ in range(200):
            mid = 0.5 * (a + b)
            live = (mid > a) & (mid < b)
            if not live.any():
                break
            lam, _ = self.law(mid)
            up = key(lam) >= x
            b = np.where(live & up, mid, b)
            a = np.where(live & ~up, mid, a)
        return b

    def _interpolate(self, x: np.ndarray, out: np.ndarray | None = None, work: "Scratch | None" = None) -> np.ndarray:
        # (np.take: a gather from 1-D arrays is ~3x faster than fancy indexing here; with `work`,
        # every pass writes into its arrays, mode="clip" so np.take does not buffer: the
        # indices are in range anyway)
        if work is None:
            work = Scratch()
        n = x.size
        s = np.subtract(x, self.bucket_lo, out=work.f(0, n))
        s *= self.inv_bucket
        k = work.i(0, n)
        np.copyto(k, s, casting="unsafe")  # (= s.astype(np.intp))
        np.clip(k, 0, self.first.size - 1, out=k)
        i = np.take(self.first, k, out=work.i(1, n), mode="clip")
        g = work.f(1, n)
        if self.scan:
            ge = work.b(n)
            for _ in range(self.scan):
                np.take(self.x1, i, out=g, mode="clip")
                i += np.greater_equal(x, g, out=ge)
        c2, c3 = self._cubic
        np.take(self.x0, i, out=s, mode="clip")
        np.subtract(x, s, out=s)
        s *= np.take(self.inv_dx, i, out=g, mode="clip")
        t = np.take(c3, i, out=np.empty(n) if out is None else out, mode="clip")
        t *= s
        t += np.take(c2, i, out=g, mode="clip")
        t *= s
        t += np.take(self.a, i, out=g, mode="clip")
        t *= s
        t += np.take(self.t0, i, out=g, mode="clip")
        return t

    @np.errstate(all="ignore")
    def sample_max(self, m: np.ndarray | int, e: np.ndarray, out: np.ndarray | None = None,
                   work: "Scratch | None" = None) -> np.ndarray:
        """The maximum of m iid draws, from E ~ Exp(1) variates `e` (into `out` if given; `work`:
        scratch arrays to reuse)."""
        if work is None:
            work = Scratch()
        lam = np.divide(e, m, out=work.f(2, e.size))
        x = np.log(lam, out=work.f(3, e.size))
        np.negative(x, out=x)  # key(lam) = -log(lam) where lam <= 1 (nearly always) ...
        if lam.size and lam.max() > 1.0:
            big = lam > 1.0
            x[big] = 1.0 - lam[big]  # ... and 1 - lam above
        return self.sample(x, out, work)

    @staticmethod
    @np.errstate(all="ignore")
    def build(
        law: LawFn,
        lo: float,
        hi: float,
        special: np.ndarray,
        x_range: tuple[float, float],
        tol: float = TOL,
        features: np.ndarray | None = None,
    ) -> "InverseTable":
        """Tabulate t(x) of `law` for x in x_range. [lo, hi] brackets the support's part that
        matters (x(lo) <= x_range[0], x(hi) >= x_range[1]; hi may be +inf, then doubled
        until it does); `special` are points where the law has atoms or kinks (each gets a node
        and one at the double just below it); `features` are points where its shape changes
        (nodes if they fall in the range)."""
        x_lo, x_hi = x_range
        features = np.zeros(0) if features is None else features
        lo0, hi0 = lo, hi
        if not math.isfinite(hi):
            hi = max(2.0 * abs(lo), 1.0)
            for _ in range(2000):
                lam, _ = law(np.array([hi]))
                if key(lam)[0] >= x_hi:
                    break
                hi *= 2.0
            else:
                raise Unrepresentable("no upper end found")
        span = hi - lo
        g = np.geomspace(1e-15, 1.0, 24)
        sp = np.asarray(special, dtype=float)
        sp = sp[(sp >= lo) & (sp <= hi)]
        pts = np.concatenate([lo + span * g, hi - span * g, sp, np.nextafter(sp, -np.inf), [lo, hi]])
        t = np.unique(pts[(pts >= lo) & (pts <= hi)])
        lam, r = law(t)
        x = key(lam)
        # keep from the last node at or below x_lo to the first at or above x_hi
        below = np.flatnonzero(x <= x_lo)
        above = np.flatnonzero(x >= x_hi)
        i0 = int(below[-1]) if below.size else 0
        i1 = int(above[0]) if above.size else t.size - 1
        t, lam, r, x = t[i0:i1 + 1], lam[i0:i1 + 1], r[i0:i1 + 1], x[i0:i1 + 1]
        # the law's feature points inside that range (narrow structures the midpoint test could miss)
        ft = np.asarray(features, dtype=float)
        ft = np.setdiff1d(ft[(ft > t[0]) & (ft < t[-1])], t)
        if ft.size:
            lf, rf = law(ft)
            order = np.argsort(np.concatenate([t, ft]), kind="stable")
            t = np.concatenate([t, ft])[order]
            lam = np.concatenate([lam, lf])[order]
            r = np.concatenate([r, rf])[order]
            x = key(lam)
        max_err = 0.0
        todo = np.ones(t.size - 1, dtype=bool)  # cells not yet accepted
        while True:
            if t.size > MAX_NODES:
                raise Unrepresentable(f"more than {MAX_NODES} nodes needed for {tol:g} accuracy")
            ok, err = _cells_ok(t, lam, r, x, law, x_lo, x_hi, tol, todo)
            max_err = max(max_err, err)
            if ok.all():
                break
            bad = np.flatnonzero(~ok)
            tm = 0.5 * (t[bad] + t[bad + 1])
            lm, rm = law(tm)
            # the new cells (both halves of each split one) are the only ones left to test
            todo = np.zeros(t.size - 1 + bad.size, dtype=bool)
            t = np.concatenate([t, tm])
            order = np.argsort(t, kind="stable")
            new_pos = np.empty(t.size, dtype=np.intp)
            new_pos[order] = np.arange(t.size)
            mid_pos = new_pos[t.size - bad.size:]
            todo[mid_pos - 1] = True
            todo[np.minimum(mid_pos, todo.size - 1)] = True
            t = t[order]
            lam = np.concatenate([lam, lm])[order]
            r = np.concatenate([r, rm])[order]
            x = key(lam)
        tab = _assemble(t, lam, r, x, x_lo, x_hi, max_err)
        # brackets for keys outside the range: x(t[1]) > x_lo and x(t[-2]) < x_hi
        return dataclasses.replace(tab, law=law, lo=lo0, hi=hi0, t_lo=float(t[min(1, t.size - 1)]),
                                   t_hi=float(t[max(t.size - 2, 0)]))


def _slopes(lam: np.ndarray, r: np.ndarray) -> np.ndarray:
    """dt/dx = 1 / (r x -dkey/dLambda) (0 where r is infinite, inf where r = 0)."""
    m = 1.0 / (r * _dkey(lam))
    return np.where(np.isfinite(lam), m, 0.0)


def _atom_like(t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
    """Cells one double wide: t is the upper node there (an atom, or too narrow to matter)."""
    return t1 <= np.nextafter(t0, np.inf)


def _cells_ok(t, lam, r, x, law, x_lo, x_hi, tol, todo) -> tuple[np.ndarray, float]:
    """Which cells pass the midpoint and monotonicity tests (cells outside the x range, and
    cells not in `todo`, which passed before, pass) and the largest midpoint error of a
    passing cell tested now."""
    x0, x1 = x[:-1], x[1:]
    t0, t1 = t[:-1], t[1:]
    n = x0.size
    ok = np.ones(n, dtype=bool)
    # a cell narrower in x than the keys' own rounding (the law's relative accuracy, ~1e-11) is
    # a near-jump of t: it is drawn with probability < its width, so it is kept as it is
    noise = (x1 - x0) <= X_NOISE * np.maximum(1.0, np.abs(x0))
    relevant = todo & (x1 > x_lo) & (x0 < x_hi) & (x1 > x0) & ~_atom_like(t0, t1) & ~noise
    infinite = relevant & ~(np.isfinite(x0) & np.isfinite(x1))
    ok[infinite] = False  # an end at +-inf inside the range: split toward it
    check = np.flatnonzero(relevant & ~infinite)
    if not check.size:
        return ok, 0.0
    m = _slopes(lam, r)
    m0, m1 = m[:-1][check], m[1:][check]
    dx = x1[check] - x0[check]
    dt = t1[check] - t0[check]
    alpha, beta = m0 * dx / dt, m1 * dx / dt
    mono = np.isfinite(alpha) & np.isfinite(beta) & (alpha >= 0) & (beta >= 0) & (alpha**2 + beta**2 <= 9.0)
    tm = 0.5 * (t0[check] + t1[check])
    lm, _ = law(tm)
    xm = key(lm)
    s = (xm - x0[check]) / dx
    inside = (s >= 0) & (s <= 1)
    s = np.clip(s, 0.0, 1.0)
    th = t0[check] + dt * s * s * (3 - 2 * s) + dx * (m0 * s * (1 - s) ** 2 + m1 * s * s * (s - 1))
    err = np.abs(th - tm)
    good = mono & inside & (err <= tol * (1.0 + np.abs(tm)))
    ok[check] = good
    passed = err[good]
    return ok, float(passed.max()) if passed.size else 0.0


def _assemble(t, lam, r, x, x_lo, x_hi, max_err) -> InverseTable:
    m = _slopes(lam, r)
    x0, x1 = x[:-1], x[1:]
    keep = (x1 > x0) & (x1 > x_lo) & (x0 < x_hi)
    idx = np.flatnonzero(keep)
    if not idx.size:  # a single atom: every draw is that value
        v = float(t[-1])
        return InverseTable(np.array([x_lo]), np.array([0.0]), np.array([v]), np.array([0.0]), np.array([0.0]),
                            np.array([0.0]), x_lo, x_hi, x_lo, 1.0, np.array([0], np.intp), 0, np.array([np.inf]),
                            max_err)
    c0, c1 = x0[idx], x1[idx]
    t0, t1 = t[:-1][idx], t[1:][idx]
    m0, m1 = m[:-1][idx], m[1:][idx]
    atom = _atom_like(t0, t1) | ~np.isfinite(c0) | ~np.isfinite(c1)
    dx = np.where(atom, 0.0, c1 - c0)
    inv_dx = np.where(atom, 0.0, 1.0 / np.where(atom, 1.0, dx))
    xs = np.where(atom, 0.0, c0)
    t0 = np.where(atom, t1, t0)
    dt = np.where(atom, 0.0, t1 - t0)
    a = np.where(atom, 0.0, dx * m0)
    b = np.where(atom, 0.0, dx * m1)
    x1_store = c1.copy()  # cells are contiguous in x: a cell ends where the next starts
    x1_store[-1] = np.inf
    dx = np.minimum(c1, x_hi) - np.maximum(c0, x_lo)
    # buckets: width = the median cell width, so a bucket holds a few cells at most
    pos = dx[dx > 0]
    width = float(np.quantile(pos, 0.1)) if pos.size else 1.0
    width = max(width, (x_hi - x_lo) / (1 << 18))
    nb = int(math.ceil((x_hi - x_lo) / width)) + 1
    starts = x_lo + width * np.arange(nb)
    first = np.searchsorted(x1_store, starts, side="right").astype(np.intp)
    first = np.minimum(first, idx.size - 1)
    ends = np.minimum(starts + width, x_hi)
    last = np.minimum(np.searchsorted(x1_store, ends, side="right"), idx.size - 1)
    scan = int((last - first).max()) if nb else 0
    return InverseTable(xs, inv_dx, t0, dt, a, b, x_lo, x_hi, x_lo, 1.0 / width, first, scan, x1_store, max_err)
