"""Exact draws of a late CPU: (ipi, off, w) of one component of the law given c > T1.

A component fixes the dirty flag d (WBINVD in the stop or not) and which part of the
irqs-off law off comes from (short: Exponential(irq_off_mean_us); stall: LogNormal), so
c = fl(fl(max(ipi, off) + prologue_us) + d w). Given c > T1 (y1 = T1 - prologue_us):

- d = 0, or w an atom: e = max(ipi, off) > theta, a fixed float threshold. Two branches:
  A "ipi > theta" (weight S_ipi(theta)), then ipi | ipi > theta (memoryless) and off from
  its law; B "ipi <= theta < off" (weight F_ipi(theta) S_off(theta)), then ipi | ipi <= theta
  (inverse CDF) and off | off > theta (memoryless, or a normal tail for the stall).
- d = 1, w continuous: the pair (w, branch) has density f_w(u) T_branch(y1 - u) with
  T_A(v) = S_ipi(v), T_B(v) = F_ipi(v) S_off(v) (the branches at threshold v = y1 - w); it is
  drawn by rejection from a piecewise-constant envelope over w's normal variable z (pieces
  refined until the density's lower bound is 0.9 of the envelope, so acceptance >= 0.9 and
  most proposals are accepted by that bound alone; for w > y1 - ipi_base every e qualifies:
  the normal tail beyond, drawn exactly), then (ipi, off) given the branch at v = y1 - w as
  above.

Every draw is then checked in the model's own floating point (c > T1) and redrawn if it is
not late (a rounding at the threshold: probability ~1e-11): the draws have exactly the law
of the model's late CPUs, the only approximation being the envelope's masses (relative
error ~1e-15 in the proposal, which the accept step does not correct).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.estimators.late.alias import Alias
from core.estimators.late.errors import Unrepresentable
from core.estimators.late.laws import Z_MAX, ClearLaw, ExpLaw
from core.estimators.late.special import norm_pdf, norm_sf, normal_above

MAX_PIECES = 50_000




def draw_off_prior(rng: np.random.Generator, law: ClearLaw, n: int) -> np.ndarray:
    """off from this component's part of the irqs-off law."""
    (_, part), = law.e.off.parts()
    return _draw_from(rng, part, n)


def _draw_from(rng: np.random.Generator, part, n: int) -> np.ndarray:
    if isinstance(part, ExpLaw):
        if part.mean == 0:
            return np.full(n, part.base)
        return part.base + part.mean * rng.standard_exponential(n)
    if not part.continuous:
        return np.full(n, part.atom)
    x = rng.standard_normal(n)  # median * exp(sigma * z), in place
    x *= part.sigma
    np.exp(x, out=x)
    x *= part.median
    return x


def _off_above(rng: np.random.Generator, part, v: np.ndarray) -> np.ndarray:
    """off | off > v (the caller only asks where that has positive probability)."""
    if isinstance(part, ExpLaw):
        if part.mean == 0:
            return np.full(v.shape, part.base)
        return np.maximum(v, part.base) + part.mean * rng.standard_exponential(v.size)
    if not part.continuous:
        return np.full(v.shape, part.atom)
    a = np.where(v > 0, np.log(np.maximum(v, 1e-300) / part.median) / part.sigma, -np.inf)
    return part.median * np.exp(part.sigma * normal_above(rng, a))


def _ipi_above(rng: np.random.Generator, ipi: ExpLaw, v: np.ndarray) -> np.ndarray:
    """ipi | ipi > v (only asked where S_ipi(v) > 0)."""
    if ipi.mean == 0:
        return np.full(v.shape, ipi.base)
    return np.maximum(v, ipi.base) + ipi.mean * rng.standard_exponential(v.size)


def _ipi_below(rng: np.random.Generator, ipi: ExpLaw, v: np.ndarray) -> np.ndarray:
    """ipi | ipi <= v (only asked where F_ipi(v) > 0): the inverse CDF of the truncated law."""
    if ipi.mean == 0:
        return np.full(v.shape, ipi.base)
    u = rng.random(v.size)
    fv = -np.expm1(-(v - ipi.base) / ipi.mean)
    return np.minimum(ipi.base - ipi.mean * np.log1p(-u * fv), v)


def _given_branch(rng: np.random.Generator, law: ClearLaw, branch: np.ndarray, v: np.ndarray):
    """(ipi, off) given e > v and the branch (0: ipi > v; 1: ipi <= v < off)."""
    ipi_law = law.e.ipi
    (_, part), = law.e.off.parts()
    n = v.size
    a = np.flatnonzero(branch == 0)
    if not a.size and n and (branch == 1).all():  # (every one in branch B, as for the stall: no gathers)
        return _ipi_below(rng, ipi_law, v), _off_above(rng, part, v)
    ipi = np.empty(n)
    off = np.empty(n)
    b = np.flatnonzero(branch == 1)
    if a.size:
        ipi[a] = _ipi_above(rng, ipi_law, v[a])
        off[a] = _draw_from(rng, part, a.size)
    if b.size:
        ipi[b] = _ipi_below(rng, ipi_law, v[b])
        off[b] = _off_above(rng, part, v[b])
    return ipi, off


def _branch_weights(law: ClearLaw, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T_A(v), T_B(v)) = (S_ipi(v), F_ipi(v) S_off(v))."""
    (_, part), = law.e.off.parts()
    return law.e.ipi.sf(v), law.e.ipi.cdf(v) * part.sf(v)


@dataclass
class FixedThreshold:
    """d = 0 or w an atom: e > theta with theta a fixed double."""

    law: ClearLaw
    theta: float
    w: float  # the (fixed) WBINVD length in the stop: 0 or the atom
    weights: tuple[float, float]

    @staticmethod
    @np.errstate(all="ignore")
    def of(law: ClearLaw, theta: float, w: float) -> "FixedThreshold":
        ta, tb = _branch_weights(law, np.array([theta]))
        return FixedThreshold(law, float(theta), float(w), (float(ta[0]), float(tb[0])))

    @np.errstate(all="ignore")
    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ta, tb = self.weights
        branch = (rng.random(n) * (ta + tb) >= ta).astype(np.int8)
        v = np.full(n, self.theta)
        ipi, off = _given_branch(rng, self.law, branch, v)
        return ipi, off, np.full(n, self.w)


@dataclass
class Posterior:
    """d = 1 with w continuous: the envelope of (z, branch) described in the module docstring."""

    law: ClearLaw
    y1: float
    z_lo: np.ndarray  # pieces
    width: np.ndarray
    top: np.ndarray  # envelope height per piece and branch, flat: piece-major, (A, B)
    low: np.ndarray  # a lower bound of the density there (the squeeze: accepted without evaluating it)
    pick: Alias  # (piece, branch) pairs, then the tail, by envelope mass
    z_tail: float  # z beyond which every e qualifies (w > y1 - ipi_base)

    @property
    def tail_possible(self) -> bool:
        """The tail has a positive probability in the alias table (it is 1e-43 at the defaults,
        0 where it underflows)."""
        return bool(self.pick.prob[-1] > 0 or np.any(self.pick.alias == self.pick.size - 1))

    TIGHT = 0.9
    """Pieces are refined until the density's lower bound is this fraction of the envelope: the
    acceptance is >= 0.9 and 9 proposals in 10 are accepted by the squeeze alone."""

    @np.errstate(all="ignore")
    @staticmethod
    def of(law: ClearLaw, y1: float) -> "Posterior":
        w = law.w
        b = law.e.lower
        z_tail = float(w.z(np.array([y1 - b]))[0]) if y1 > b else -np.inf
        hi = min(z_tail, Z_MAX)
        edges = np.linspace(-Z_MAX, hi, 64) if hi > -Z_MAX else np.array([-Z_MAX, -Z_MAX])
        # the branch weights jump where v = y1 - w crosses an atom of ipi or off: piece ends there
        (_, part), = law.e.off.parts()
        jumps = np.array([a for a, _ in (*law.e.ipi.atoms, *part.atoms) if a < y1])
        if jumps.size:
            zj = w.z(y1 - jumps)
            edges = np.unique(np.concatenate([edges, zj[(zj > -Z_MAX) & (zj < hi)]]))
        tail = float(norm_sf(np.array([z_tail]))[0])
        for _ in range(80):
            top, low, inner = _bounds(law, y1, edges)
            mass = top * np.diff(edges)[:, None]
            total = mass.sum() + tail
            tight = np.all((inner >= Posterior.TIGHT * top) | (mass <= 1e-20 * total), axis=1)
            if tight.all():
                break
            split = np.flatnonzero(~tight)
            edges = np.sort(np.concatenate([edges, 0.5 * (edges[split] + edges[split + 1])]))
            if edges.size > MAX_PIECES:
                raise Unrepresentable(f"the late CPUs' WBINVD posterior needs more than {MAX_PIECES} pieces")
        else:
            raise Unrepresentable("the late CPUs' WBINVD posterior did not converge")
        mass = top * np.diff(edges)[:, None]
        return Posterior(law, y1, edges[:-1].copy(), np.diff(edges), top.ravel(), low.ravel(),
                         Alias.of(np.concatenate([mass.ravel(), [tail]])), z_tail)

    @np.errstate(all="ignore")
    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        law, w = self.law, self.law.w
        z = np.empty(n)
        branch = np.empty(n, np.int8)
        todo = np.arange(n)
        npieces = self.width.size
        while todo.size:
            k = self.pick.draw(rng.random(todo.size))
            tail = k == 2 * npieces
            piece, br = k >> 1, (k & 1).astype(np.int8)
            zz = np.empty(todo.size)
            ok = np.empty(todo.size, dtype=bool)
            it = np.flatnonzero(tail) if self.tail_possible else np.zeros(0, np.intp)
            if it.size:
                zz[it] = normal_above(rng, np.full(it.size, self.z_tail))
                ok[it] = True
                br[it] = 0  # every e qualifies: ipi from its law, which branch A draws for v < base
            if it.size:
                ib: np.ndarray | slice = np.flatnonzero(~tail)
                nb = int(todo.size - it.size)
            else:
                ib, nb = slice(None), int(todo.size)
            if nb:
                pc, kb = piece[ib], k[ib]
                zb = np.take(self.z_lo, pc) + np.take(self.width, pc) * rng.random(nb)
                level = rng.random(nb) * np.take(self.top, kb)
                good = level <= np.take(self.low, kb)  # the squeeze: below the density's lower bound
                unsure = np.flatnonzero(~good)
                if unsure.size:  # the density itself, for the rest
                    zu = zb[unsure]
                    v = self.y1 - w.median * np.exp(w.sigma * zu)
                    ta, tb = _branch_weights(law, v)
                    good[unsure] = level[unsure] <= norm_pdf(zu) * np.where(br[ib][unsure] == 0, ta, tb)
                ok[ib] = good
                zz[ib] = zb
            z[todo[ok]] = zz[ok]
            branch[todo[ok]] = br[ok]
            todo = todo[~ok]
        u = w.median * np.exp(w.sigma * z)
        ipi, off = _given_branch(rng, law, branch, self.y1 - u)
        return ipi, off, u


def _bounds(law: ClearLaw, y1: float, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per piece [edges[k], edges[k+1]] and branch: an upper bound (the envelope), a lower bound
    of phi(z) T_branch(y1 - w(z)) (the squeeze), and the lower bound a hair inside the piece
    (which steers the refinement: a jump at a piece's end does not count)."""
    w = law.w
    za, zb = edges[:-1], edges[1:]
    v_hi = y1 - w.median * np.exp(w.sigma * za)  # v decreases with z
    v_lo = y1 - w.median * np.exp(w.sigma * zb)
    ph_a, ph_b = norm_pdf(za), norm_pdf(zb)
    zc = np.clip(0.0, za, zb)
    ph_max = norm_pdf(zc)
    ph_min = np.minimum(ph_a, ph_b)
    ipi = law.e.ipi
    (_, part), = law.e.off.parts()
    # S_ipi and S_off fall with v, F_ipi rises with v (v(z) as computed is monotone in z too, so
    # `top` bounds every value the accept step sees); `low` only steers the refinement, taken a
    # hair inside the piece so a jump at its end does not count
    top = np.stack([ph_max * ipi.sf(v_lo), ph_max * ipi.cdf(v_hi) * part.sf(v_lo)], axis=1)
    low = np.stack([ph_min * ipi.sf(v_hi), ph_min * ipi.cdf(v_lo) * part.sf(v_hi)], axis=1)
    gap = 1e-12 * np.maximum(np.abs(v_hi), np.abs(v_lo))
    vi_hi, vi_lo = v_hi - gap, v_lo + gap
    inner = np.stack([ph_min * ipi.sf(vi_hi), ph_min * ipi.cdf(vi_lo) * part.sf(vi_hi)], axis=1)
    return top, low, inner

