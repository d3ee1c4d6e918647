"""What the late estimator computes once per point: the laws, q, the count thresholds, the tables.

An answering CPU belongs to one of up to four components: dirty in the stop or not (d),
and whose irqs-off time is a stall or short (s). In a component the clear time c has a
unimodal law (core/estimators/late/laws.py `ClearLaw`), so the maximum of the non-late
CPUs of a component is one table lookup (`InverseTable`), and the late CPUs of a component
are drawn exactly (core/estimators/late/latecpu.py). Across components:

- q = P(a CPU is late) = p_unresponsive + (1 - p_unresponsive) sum_k w_k S_k(T1),
  w_k the component's probability and S_k(T1) = P(c > T1 | k);
- a late CPU is dead with probability p_unresponsive / q, else in component k with
  probability rho_k proportional to w_k S_k(T1);
- a non-late CPU is in component k with probability pi_k proportional to w_k F_k(T1).

The number of late CPUs K ~ Binomial(n_cpus - 1, q) is drawn from one exponential E by
thresholds: K <= k iff E > kappa_k = -log P(K <= k).

`plan_for(p)` builds (and caches, per process) the plan or raises `Unrepresentable` with the
reason; the estimator then runs the naive path for that point (estimator column
"late->naive").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from core.draws import lognormal
from core.estimators.late.alias import Alias
from core.estimators.late.errors import Unrepresentable
from core.estimators.late.latecpu import FixedThreshold, Posterior, draw_off_prior
from core.estimators.late.laws import ClearLaw, ELaw, ExpLaw, OffLaw, WLaw
from core.estimators.late.table import InverseTable, key_range
from core.params import Params


@dataclass
class Component:
    """One component of an answering CPU's law (see the module docstring)."""

    d: int
    stall: bool
    weight: float
    law: ClearLaw
    cdf_t1: float
    sf_t1: float
    table: InverseTable | None = None  # the maximum of its non-late CPUs, or None: drawn one by one
    late: FixedThreshold | Posterior | None = None

    @np.errstate(all="ignore")
    def draw_nonlate(self, rng: np.random.Generator, n: int, t1: float) -> np.ndarray:
        """Clear times of n non-late CPUs of this component, one by one: its own law, redrawn
        while c > T1 (exact; used where few are expected and most draws are non-late)."""
        law = self.law
        ipi_law = law.e.ipi
        kept: list[np.ndarray] = []
        need = n
        while need > 0:  # candidates in rounds of about what is needed; the first n kept are the draws
            k = int(need / self.cdf_t1 * 1.05) + 8
            # (in place, the same operations: base + mean x is x * mean + base to the bit)
            if ipi_law.mean > 0:
                c = rng.standard_exponential(k)
                c *= ipi_law.mean
                c += ipi_law.base
            else:
                c = np.full(k, ipi_law.base + 0.0)
            np.maximum(c, draw_off_prior(rng, law, k), out=c)
            c += law.prologue
            if self.d:
                if law.w.continuous:
                    c += lognormal(rng, law.w.median, law.w.sigma, k)
                else:
                    c += law.w.atom
            c = c[c <= t1]
            kept.append(c)
            need -= c.size
        return np.concatenate(kept)[:n] if len(kept) > 1 else kept[0][:n]


@dataclass
class LatePlan:
    p: Params
    m: int  # remote CPUs
    q: float
    kappa: np.ndarray  # K >= k + 1 iff E <= kappa[k]; increasing order after negation
    p_dead: float  # P(dead | late)
    comps: list[Component]
    pi: np.ndarray  # non-late component probabilities
    rho: np.ndarray  # late (answering) component probabilities
    minors: list[int]  # components whose count is drawn (ascending pi); the last takes the rest
    major: int
    stop_dirty: float  # P(dirty in the stop)
    preflush: InverseTable | float | None  # None: no early flush (null); a float: always that value
    counts: "CountTable | None" = None  # the joint law of (K, minor counts), where small enough
    kappa_all_major: float = math.inf
    """-log P(every CPU is a non-late CPU of the major component) where that is >= FAST_SHARE (inf
    otherwise): such a trial needs nothing but one lookup of the major table (see chunk.py)."""
    slow_counts: "CountTable | None" = None  # `counts` given that not every CPU is major
    preflush_of: int = 0
    """The preflush table draws the maximum of this many copies of its law (revision 1: the m
    CPUs' flagged WBINVDs; revision 2's flush IPI: 1, the table being that of the maximum)."""

    def late_count(self, e: np.ndarray) -> np.ndarray:
        """K from the exponentials e: 0 where e > kappa_0, else by binary search."""
        k = np.zeros(e.size, np.int64)
        if not self.kappa.size:
            return k
        some = np.flatnonzero(e <= self.kappa[0])
        if some.size:
            k[some] = np.searchsorted(-self.kappa, -e[some], side="right")
        return k


@dataclass(frozen=True)
class CountTable:
    """The joint law of (K, the minor components' counts) as an alias table over its support
    (each variable within its marginal's COUNT_TAIL and 1 - COUNT_TAIL quantiles)."""

    alias: Alias
    k: np.ndarray  # K of each outcome
    minor: np.ndarray  # (minors, outcomes)

    def draw(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        i = self.alias.draw(u)
        return np.take(self.k, i), np.take(self.minor, i, axis=1)


COUNT_TAIL = 1e-20
"""Per variable, the probability left out of a CountTable's support (so < 1e-19 in all)."""
COUNT_TABLE_MAX = 1 << 16
"""Outcomes above which the counts are drawn one variable at a time instead."""


FAST_SHARE = 0.25
"""Below this probability of a trial with every CPU in the major component, no fast path."""


def _count_table(m: int, q: float, pis: list[float], drop_all_major: bool = False) -> CountTable | None:
    """Multinomial(m; q, (1 - q) pi_minor..., rest) over the support described in CountTable;
    drop_all_major: without the outcome (0, 0, ...) (the law given that it did not happen)."""
    probs = [q] + [(1.0 - q) * x for x in pis]
    ranges = [binom_range(m, pr, COUNT_TAIL) for pr in probs]
    sizes = [hi - lo + 1 for lo, hi in ranges]
    if math.prod(sizes) > COUNT_TABLE_MAX:
        return None
    grids = np.meshgrid(*[np.arange(lo, hi + 1) for lo, hi in ranges], indexing="ij")
    cols = [g.ravel() for g in grids]
    rest = m - np.sum(cols, axis=0)
    p_rest = max(0.0, 1.0 - sum(probs))
    ok = rest >= 0
    cols = [c[ok] for c in cols]
    rest = rest[ok]
    logp = np.full(rest.size, math.lgamma(m + 1))
    for c, pr in zip(cols + [rest], probs + [p_rest]):
        lg = np.array([math.lgamma(v + 1) for v in range(int(c.max()) + 1)])[c]
        term = np.where(c > 0, c * math.log(pr) if pr > 0 else -np.inf, 0.0)
        logp += term - lg
    w = np.exp(logp - logp.max())
    if drop_all_major:
        w[(cols[0] == 0) & np.all([c == 0 for c in cols[1:]], axis=0)] = 0.0
    if not np.isfinite(w).any() or w.sum() <= 0:
        return None
    minor = np.array(cols[1:], dtype=np.int64).reshape(len(pis), rest.size)
    return CountTable(Alias.of(w), cols[0].astype(np.int64), minor)


def stop_dirty_prob(p: Params) -> float:
    """P(a CPU's flag is set in the stop): incoherent_fraction, 0 when the early flush ran
    (revision 2: not on the panic path, Params.early_flush_applies)."""
    return 0.0 if p.early_flush_applies else float(p.incoherent_fraction)


def _k_thresholds(m: int, q: float) -> np.ndarray:
    """kappa_k = -log P(K <= k), k = 0, 1, ..., for K ~ Binomial(m, q), up to where
    P(K > k) < 1e-300 (K is never above: it cannot be told from 0 in double precision)."""
    if q <= 0.0:
        return np.zeros(0)
    if q >= 1.0:
        return np.full(m, np.inf)
    k = np.arange(m + 1)
    lg = math.lgamma(m + 1) - np.array([math.lgamma(i + 1) + math.lgamma(m - i + 1) for i in k])
    logpmf = lg + k * math.log(q) + (m - k) * math.log1p(-q)
    pmf = np.exp(logpmf - logpmf.max())
    scale = math.exp(logpmf.max())
    tail = np.cumsum(pmf[::-1])[::-1]  # P(K >= k) / scale, summed from the top
    above = np.concatenate([tail[1:], [0.0]]) * scale  # P(K > k)
    keep = above >= 1e-300
    above = above[keep]
    return -np.log1p(-np.minimum(above, 1.0))


def _component_law(p: Params, d: int, stall: bool) -> ClearLaw:
    e = ELaw(
        ExpLaw(float(p.ipi_base_us), float(p.ipi_jitter_us)),
        OffLaw(1.0 if stall else 0.0, WLaw(float(p.stall_median_us), float(p.stall_sigma)),
               ExpLaw(0.0, float(p.irq_off_mean_us))),
    )
    return ClearLaw(e, WLaw(p.wbinvd_median_us, float(p.wbinvd_sigma)), float(d), float(p.prologue_us))


def _clean_max_law(law: ClearLaw, t1: float, cdf_t1: float, sf_t1: float):
    """Lambda(t) = -log P(c <= t | c <= T1) and r = pdf / cdf, for the table."""

    def fn(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cdf, sf, pdf = law.evaluate(t)
        low = cdf <= 0.5 * cdf_t1
        lam = np.where(low, np.log(cdf_t1) - np.log(cdf), -np.log1p(-np.maximum(sf - sf_t1, 0.0) / cdf_t1))
        lam = np.where(t >= t1, 0.0, np.maximum(lam, 0.0))
        r = pdf / cdf
        return lam, r

    return fn


def _special(law: ClearLaw) -> np.ndarray:
    """Atoms and kinks of c's law: the bottom of its support and its atoms."""
    return np.array([law.lower, *(a for a, _ in law.atoms)])


DIRECT_MEAN = 2.0
"""A component whose expected number of non-late CPUs is at most this, and whose CPUs are
non-late with probability >= DIRECT_ACCEPT, draws them one by one instead of tabulating
the maximum (a table costs ~1e3 evaluations of the law to build)."""
DIRECT_ACCEPT = 0.2
COUNT_EPS = 1e-10
"""A table covers the counts of its component between these quantiles (and E in
[table.E_MIN, table.E_MAX]); a draw outside is solved exactly from the law (slow, rare)."""


def binom_range(m: int, p: float, eps: float = COUNT_EPS) -> tuple[int, int]:
    """The eps and 1 - eps quantiles of Binomial(m, p) (from its log-pmf)."""
    if p <= 0:
        return 0, 0
    if p >= 1:
        return m, m
    k = np.arange(m + 1)
    lg = math.lgamma(m + 1) - np.array([math.lgamma(i + 1) + math.lgamma(m - i + 1) for i in k])
    logpmf = lg + k * math.log(p) + (m - k) * math.log1p(-p)
    pmf = np.exp(logpmf - logpmf.max())
    pmf /= pmf.sum()
    below = np.cumsum(pmf)  # P(X <= k)
    above = np.cumsum(pmf[::-1])[::-1]  # P(X >= k), summed from the top: no 1 - (1 - eps)
    lo = int(np.searchsorted(below, eps))  # the first k with P(X <= k) >= eps
    hi = int(np.flatnonzero(above >= eps)[-1])  # the last k with P(X >= k) >= eps
    return lo, hi


def _preflush_rev1(p: Params, m: int) -> InverseTable | float:
    """max over the m CPUs of (w_i if flagged): per CPU P(X <= t) = 1 - f S_w(t), t >= 0."""
    f = float(p.incoherent_fraction)
    w = WLaw(p.wbinvd_median_us, float(p.wbinvd_sigma))
    if f == 0.0:
        return 0.0
    if not w.continuous and f == 1.0:
        return float(w.atom)

    def fn(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = np.asarray(t, dtype=np.float64)
        sf = np.where(t >= 0, f * w.sf(t), 1.0)
        cdf = 1.0 - sf
        lam = np.where(sf < 0.5, -np.log1p(-sf), -np.log(cdf))
        r = f * w.pdf(t) / cdf
        return lam, r

    special = [0.0] + ([w.atom] if not w.continuous else [])
    if w.continuous:
        special += list(w.median * np.exp(w.sigma * np.arange(-8.0, 8.5, 1.0)))
    return InverseTable.build(fn, -1.0, math.inf, np.array(special), key_range(m, m))


@np.errstate(all="ignore")
def _preflush_ipi(p: Params, m: int) -> InverseTable:
    """Revision 2, the early flush as an IPI (Params.flush_ipi): preflush_us = max(CPU 0's flush,
    max over the m remote CPUs of max(ipi', off') + w if flagged), given no dead CPU (a dead one
    hangs the flush). The remote terms are iid with the law of an answering CPU's clear time
    without prologue (laws.ClearLaw, dirty with prob. incoherent_fraction, the whole irqs-off
    law); CPU 0's is w_0 x the contention factor (the law of w) if flagged. So
    -log P(preflush <= t) = -log(1 - f S_w(t)) - m log G(t), tabulated once (its m' is 1)."""
    f = float(p.incoherent_fraction)
    w = WLaw(p.wbinvd_median_us, float(p.wbinvd_sigma))
    g = ClearLaw(ELaw.of(p), w, f, 0.0)

    def fn(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = np.asarray(t, dtype=np.float64)
        s0 = np.where(t >= 0, f * w.sf(t), 1.0)
        c0 = 1.0 - s0
        cdf, sf, pdf = g.evaluate(t)
        lam0 = np.where(s0 < 0.5, -np.log1p(-s0), -np.log(c0))
        lam = lam0 + m * np.where(sf < 0.5, -np.log1p(-sf), -np.log(cdf))
        r = f * w.pdf(t) / c0 + m * pdf / cdf
        return lam, r

    special = np.array([g.lower, *(a for a, _ in g.atoms), *([w.atom] if not w.continuous else [])])
    return InverseTable.build(fn, g.lower, math.inf, special, key_range(1, 1), features=g.features)


@np.errstate(all="ignore")
def build_plan(p: Params) -> LatePlan:
    """The plan of one point (raises Unrepresentable)."""
    m = int(p.n_remote)
    t1 = float(p.t1_us)
    f = stop_dirty_prob(p)
    ps = float(p.p_stall)
    comps: list[Component] = []
    for d, wd in ((0, 1.0 - f), (1, f)):
        for stall, ws in ((False, 1.0 - ps), (True, ps)):
            if wd * ws <= 0:
                continue
            law = _component_law(p, d, stall)
            cdf, sf, _ = law.evaluate(np.array([t1]))
            comps.append(Component(d, stall, wd * ws, law, float(cdf[0]), float(sf[0])))
    wts = np.array([c.weight for c in comps])
    cdf1 = np.array([c.cdf_t1 for c in comps])
    sf1 = np.array([c.sf_t1 for c in comps])
    q_alive = float(np.sum(wts * sf1))
    pu = float(p.p_unresponsive)
    q = min(1.0, pu + (1.0 - pu) * q_alive)
    nonlate = wts * cdf1
    pi = nonlate / nonlate.sum() if nonlate.sum() > 0 else np.zeros(len(comps))
    rho = wts * sf1 / q_alive if q_alive > 0 else np.zeros(len(comps))
    for c, pik, rk in zip(comps, pi, rho):
        expected = m * (1.0 - q) * pik
        if pik > 0 and not (expected <= DIRECT_MEAN and c.cdf_t1 >= DIRECT_ACCEPT):
            lo_n, hi_n = binom_range(m, (1.0 - q) * pik)
            c.table = InverseTable.build(_clean_max_law(c.law, t1, c.cdf_t1, c.sf_t1), c.law.lower, t1,
                                         _special(c.law), key_range(max(lo_n, 1), max(hi_n, 1)),
                                         features=c.law.features)
        if rk > 0:
            c.late = _late_sampler(c.law, t1)
    if p.flush_ipi:
        preflush: InverseTable | float | None = _preflush_ipi(p, m)
    elif p.early_flush_applies:
        preflush = _preflush_rev1(p, m)
    else:
        preflush = None
    order = [int(i) for i in np.argsort(pi, kind="stable") if pi[i] > 0]
    major = order[-1] if order else 0
    minors = order[:-1]
    pis = [float(pi[i]) for i in minors]
    counts = _count_table(m, q, pis)
    # P(every CPU non-late and in the major component) = (1 - q - (1 - q) sum(pi_minor))^m
    not_major = q + (1.0 - q) * sum(pis)
    kappa_all = -m * math.log1p(-not_major) if not_major < 1.0 else math.inf
    fast = comps and comps[major].table is not None and kappa_all <= -math.log(FAST_SHARE)
    slow = _count_table(m, q, pis, drop_all_major=True) if fast else None
    if fast and slow is None and counts is not None:
        fast = False  # (a joint table without that outcome must exist when the full one does)
    return LatePlan(p, m, q, _k_thresholds(m, q), pu / q if q > 0 else 0.0, comps, pi, rho, minors, major,
                    f, preflush, counts, kappa_all if fast else math.inf, slow, 1 if p.flush_ipi else m)


def _late_sampler(law: ClearLaw, t1: float) -> FixedThreshold | Posterior:
    if law.dirty == 0:
        return FixedThreshold.of(law, float(law.theta0(np.array([t1]))[0]), 0.0)
    if not law.w.continuous:
        return FixedThreshold.of(law, float(law.theta1(np.array([t1]))[0]), law.w.atom)
    return Posterior.of(law, t1 - law.prologue)


@lru_cache(maxsize=64)
def _cached(p: Params) -> LatePlan | str:
    try:
        return build_plan(p)
    except Unrepresentable as e:
        return str(e)


def plan_for(p: Params) -> LatePlan:
    """The cached plan of a point; Unrepresentable (with the reason) where the late sampler does not apply."""
    r = _cached(p)
    if isinstance(r, str):
        raise Unrepresentable(r)
    return r
