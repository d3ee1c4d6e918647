"""Rare-event estimation by conditional Monte Carlo ("cmc"): race probabilities far below 1/trials.

At realistic parameters a race happens once in 1e6..1e9 stops, so plain Monte Carlo
("naive") sees none. The cmc estimator integrates one draw out exactly: for every
remote CPU i it conditions on X_{-i} (every draw of the trial except i's irqs-off
time off_i) and computes the probability, over off_i alone, that CPU i races. That
probability is a CDF difference of the irqs-off law over at most two windows of CPU
i's clear time c_i, so every trial contributes a small positive number instead of a
0/1 indicator. See core/README.md, section "Rare events: the cmc estimator", for the
derivation; in short, per trial:

    race     = sum_i P(A_i | X_{-i}),   A_i = "CPU i meets the race condition and no
                                         lower-id CPU does" (i is first_racer_cpu)
    bad      = 1{hang or timeout} + sum_i P(A_i and no hang/timeout | X_{-i})
    race_sum = sum_i P(R_i | X_{-i}),   R_i = "CPU i meets the race condition"

The A_i are disjoint with union {race}, so E[race] = P(race) and E[bad] = P(race or
hang or timeout) exactly (no bias). `race_sum` is the plain per-CPU version: E[race_sum]
= E[N] >= P(race) with N the number of CPUs meeting the race condition; its bias
E[(N-1)^+] = E[race_sum - race] is reported, not guessed.

Random streams: chunk c of a shard uses `new_generator(chunk_seed(seed, c))` with the
chunk size of `core.vectorized.chunk_trials`; it draws the phase-1 draws with
`draw_phase1`, then `nmi` and `w2` for every CPU-trial of the chunk at once, then (only
when p_nmi_delay > 0) their NMI hold-offs, which the sampled `nmi` includes
(`draw_nmi_path`, laid out CPU-major). The naive outcome of every trial is evaluated
on these same draws (`core.vectorized.simulate_draws`), so a cmc run reports naive
counts too; they are a different sample from `core.vectorized.simulate` with the same
seed (which draws the NMI path lazily).

Pure NumPy plus `math` (no scipy), like the rest of `core`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .cmc_stats import FP_REL, CmcSummary, combine, estimate_interval  # re-exported: the estimator's API
from .draws import Draws, draw_nmi_path, draw_phase1, new_generator
from .params import Params
from .vectorized import TrialBatch, _empty, chunk_seed, chunk_trials, final_clear, simulate_draws

INF = math.inf

_CMC_FIELDS = ("race", "bad", "race_sum", "n_racing", "first_cpu")


@dataclass(frozen=True)
class CmcBatch:
    """Per-trial cmc values of a batch of trials.

    race      float64  sum_i P(CPU i is the first (lowest-id) racing CPU | X_{-i});
                       mean over trials = unbiased estimate of P(race)
    bad       float64  1{hang or timeout} + sum_i P(i first racing CPU, no hang/timeout | X_{-i});
                       mean = unbiased estimate of P(race or hang or timeout)
    race_sum  float64  sum_i P(CPU i meets the race condition | X_{-i}) >= race
                       (conservative: its mean estimates E[number of racing CPUs])
    n_racing  int32    N: CPUs meeting the race condition in the sampled trial itself
    first_cpu int32    lowest such CPU id, -1 if none (equals TrialBatch.first_racer_cpu)
    n_cpus    int      of the point (values lie in [0, n_cpus - 1], bad in [0, n_cpus])
    """

    race: np.ndarray
    bad: np.ndarray
    race_sum: np.ndarray
    n_racing: np.ndarray
    first_cpu: np.ndarray
    n_cpus: int = 2

    def __len__(self) -> int:
        return len(self.race)

    def row(self, t: int) -> "CmcBatch":
        """Trial t alone, as a batch of one."""
        return CmcBatch(*(getattr(self, f)[t : t + 1].copy() for f in _CMC_FIELDS), n_cpus=self.n_cpus)

    @staticmethod
    def concat(parts: list["CmcBatch"]) -> "CmcBatch":
        """One batch from consecutive batches, in order."""
        return CmcBatch(
            *(np.concatenate([getattr(b, f) for b in parts]) for f in _CMC_FIELDS), n_cpus=parts[0].n_cpus
        )


# ----------------------------------------------------------------------------------------
# Chunks, shards, replay
# ----------------------------------------------------------------------------------------


def draw_chunk_cmc(p: Params, n: int, rng: np.random.Generator) -> Draws:
    """Every per-CPU draw of `n` trials, NMI path included (eagerly, CPU-major)."""
    d = draw_phase1(rng, p, n)
    nmi, w2, hold = draw_nmi_path(rng, p, n * p.n_remote)  # nmi carries its sampled hold-off
    shape = (p.n_remote, n)
    return Draws(d.ipi, d.off, d.dirty, d.w, w2.reshape(shape).T, nmi.reshape(shape).T, d.dead, hold.reshape(shape).T)


def cmc_draws(p: Params, d: Draws) -> tuple[TrialBatch, CmcBatch]:
    """Naive results and cmc values of explicit draws (all fields given, nmi and w2 included)."""
    return simulate_draws(p, d), _cmc_values(p, d)


def iter_chunks_cmc(
    p: Params, n_trials: int, seed: np.random.SeedSequence
) -> Iterator[tuple[int, TrialBatch, CmcBatch]]:
    """(first trial index, naive results, cmc values) per chunk of one shard, in trial order."""
    per = chunk_trials(p)
    for c, start in enumerate(range(0, int(n_trials), per)):
        rng = new_generator(chunk_seed(seed, c))
        d = draw_chunk_cmc(p, min(per, int(n_trials) - start), rng)
        batch, cmc = cmc_draws(p, d)
        yield start, batch, cmc


def simulate_cmc(
    p: Params, n_trials: int, seed: np.random.SeedSequence | int
) -> tuple[TrialBatch, CmcBatch]:
    """n_trials trials with their cmc values; deterministic in (p, n_trials, seed).

    For many trials iterate `iter_chunks_cmc` and fold each chunk into a `CmcSummary`.
    """
    if not isinstance(seed, np.random.SeedSequence):
        seed = np.random.SeedSequence(seed)
    parts = list(iter_chunks_cmc(p, int(n_trials), seed))
    if not parts:
        e, i = np.zeros(0), np.zeros(0, np.int32)
        return _empty(), CmcBatch(e, e.copy(), e.copy(), i, i.copy(), p.n_cpus)
    return TrialBatch.concat([b for _, b, _ in parts]), CmcBatch.concat([c for _, _, c in parts])


def replay_draws_cmc(
    p: Params, n_trials: int, seed: np.random.SeedSequence, trial: int
) -> tuple[Draws, TrialBatch, CmcBatch]:
    """The draws, naive result and cmc values of trial `trial` of a cmc shard (one chunk recomputed)."""
    if not 0 <= trial < n_trials:
        raise ValueError(f"trial = {trial} is outside the shard's trials [0, {n_trials})")
    per = chunk_trials(p)
    c, i = divmod(trial, per)
    rng = new_generator(chunk_seed(seed, c))
    d = draw_chunk_cmc(p, min(per, n_trials - c * per), rng)
    batch, cmc = cmc_draws(p, d)
    one = TrialBatch(*(getattr(batch, f)[i : i + 1] for f in _batch_fields()))
    return d.row(i), one, cmc.row(i)


def _batch_fields() -> tuple[str, ...]:
    return tuple(TrialBatch.__dataclass_fields__)


# ----------------------------------------------------------------------------------------
# The irqs-off law: accurate window probabilities
# ----------------------------------------------------------------------------------------

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_erfc = np.frompyfunc(math.erfc, 1, 1)
_GL3 = np.polynomial.legendre.leggauss(3)
_GL8 = np.polynomial.legendre.leggauss(8)


def _q(z: np.ndarray) -> np.ndarray:
    """Upper standard-normal tail Q(z) = P(Z > z), accurate to a few ulp relative everywhere."""
    if z.size == 0:
        return np.zeros(0)
    return 0.5 * _erfc(z / _SQRT2).astype(np.float64)


def _gl(z1: np.ndarray, dz: np.ndarray, rule) -> np.ndarray:
    x, wts = rule
    half = 0.5 * dz
    mid = z1 + half
    out = np.zeros_like(z1)
    for xk, wk in zip(x, wts):
        z = mid + half * xk
        out += wk * np.exp(-0.5 * z * z)
    return out * half * _INV_SQRT_2PI


def ndtr_diff(z1: np.ndarray, dz: np.ndarray, z2: np.ndarray | None = None) -> np.ndarray:
    """Phi(z2) - Phi(z1), z2 = z1 + dz with dz > 0, to ~1e-15 relative. Where z1 = -inf
    (then dz = inf) the upper end is taken from `z2` (required there).

    A window of a few µs at ~1e6 µs is dz ~ 1e-5 in z: the difference of two CDF
    values would lose ~5 digits, so small windows are integrated instead:
    Gauss-Legendre on the normal density, 3 nodes when dz <= 1e-2 and
    dz (|z| + dz) <= 1e-2 (error <= 5e-7 dz^6 |He_6| relative, < 1e-17), 8 nodes when
    dz <= 1 and dz (|z| + dz) <= 2 (< 1e-16). Otherwise the two tail values differ by
    a factor >= ~1.6 and are subtracted on the side where they are small (erfc).
    """
    z1 = np.asarray(z1, dtype=np.float64)
    dz = np.asarray(dz, dtype=np.float64)
    out = np.zeros_like(z1)
    if z1.size == 0:
        return out
    with np.errstate(invalid="ignore", over="ignore"):
        zz = z1 + dz
        if z2 is not None:
            zz = np.where(np.isfinite(z1), zz, np.asarray(z2, dtype=np.float64))
        z2 = zz
        zmax = np.maximum(np.abs(z1), np.abs(z2))
        spread = dz * (zmax + dz)
        fin = np.isfinite(z1) & np.isfinite(z2)
    tiny = fin & (dz <= 1e-2) & (spread <= 1e-2)
    mid = fin & ~tiny & (dz <= 1.0) & (spread <= 2.0)
    big = ~(tiny | mid)
    if tiny.any():
        out[tiny] = _gl(z1[tiny], dz[tiny], _GL3)
    if mid.any():
        out[mid] = _gl(z1[mid], dz[mid], _GL8)
    if big.any():
        a, b = z1[big], z2[big]
        r = np.empty(a.shape)
        up = a >= 0
        lo = b <= 0
        st = ~(up | lo)
        r[up] = _q(a[up]) - _q(b[up])
        r[lo] = _q(-b[lo]) - _q(-a[lo])
        r[st] = 1.0 - _q(-a[st]) - _q(b[st])
        out[big] = np.maximum(r, 0.0)
    return out


@dataclass(frozen=True)
class _OffLaw:
    """off = LogNormal(m, sigma) w.p. p_stall, else Exponential(mu); atoms where degenerate."""

    p_stall: float
    m: float
    sigma: float
    mu: float

    @staticmethod
    def of(p: Params) -> "_OffLaw":
        return _OffLaw(p.p_stall, p.stall_median_us, p.stall_sigma, p.irq_off_mean_us)

    @property
    def stall_cont(self) -> bool:
        return self.p_stall > 0 and self.sigma > 0 and self.m > 0

    @property
    def stall_atom(self) -> bool:  # LogNormal(m, 0) = m; LogNormal(0, s) = 0
        return self.p_stall > 0 and not (self.sigma > 0 and self.m > 0)

    @property
    def exp_cont(self) -> bool:
        return self.p_stall < 1 and self.mu > 0

    def cdf(self, x: np.ndarray) -> np.ndarray:
        """F_off(x) = P(off <= x) (right-continuous, atoms included), x >= 0."""
        x = np.asarray(x, dtype=np.float64)
        out = np.zeros_like(x)
        if self.p_stall > 0:
            if self.stall_cont:
                with np.errstate(divide="ignore"):
                    z = np.log(x / self.m) / self.sigma
                out += self.p_stall * (1.0 - _q(z))
            else:
                out += self.p_stall * (x >= self.m)
        if self.p_stall < 1:
            if self.mu > 0:
                out += (1.0 - self.p_stall) * -np.expm1(-x / self.mu)
            else:
                out += (1.0 - self.p_stall) * (x >= 0)
        return out

    def cont_mass(self, y1: np.ndarray, width: np.ndarray) -> np.ndarray:
        """Continuous (atom-free) part of P(off in (y1, y1 + width)), y1 >= 0, width > 0."""
        out = np.zeros_like(y1)
        if self.stall_cont:
            with np.errstate(divide="ignore", over="ignore"):
                z1 = np.log(y1 / self.m) / self.sigma
                dz = np.log1p(width / y1) / self.sigma
                z2 = np.log((y1 + width) / self.m) / self.sigma  # used only where y1 = 0
            out += self.p_stall * ndtr_diff(z1, dz, z2)
        if self.exp_cont and y1.size and y1.min() < 750.0 * self.mu:  # exp(-750) underflows to 0
            out += (1.0 - self.p_stall) * np.exp(-y1 / self.mu) * -np.expm1(-width / self.mu)
        return out


# ----------------------------------------------------------------------------------------
# The cmc values of a chunk
# ----------------------------------------------------------------------------------------


@dataclass
class _Ctx:
    """Per (trial, CPU i), given X_{-i} and 'CPU i was sent an NMI':
    s (its send time), tl (T_loop'), fp (max f of the other late CPUs), mlo (max
    a_j + h_j over racers j < i); plus per trial whether the sampled trial hangs/times out."""

    s: np.ndarray
    tl: np.ndarray
    fp: np.ndarray
    mlo: np.ndarray
    hang_or_timeout: np.ndarray


def _context(p: Params, c, e, w, dirty, dead, nmi, h) -> _Ctx:
    n, m = c.shape
    t_nmi, step = p.t_nmi_us, p.nmi_send_us
    # No other CPU late (c_j <= T_nmi for all j != i): i is visited first at T_nmi.
    s = np.full((n, m), t_nmi)
    tl = np.full((n, m), t_nmi + step)
    fp = np.full((n, m), -np.inf)
    mlo = np.full((n, m), -np.inf)
    hot = np.zeros(n, dtype=bool)
    late = c > t_nmi
    rows = np.flatnonzero(late.any(axis=1))
    if rows.size == 0:
        return _Ctx(s, tl, fp, mlo, hot)

    lr = late[rows]
    nl = rows.size
    kcount = lr.sum(axis=1)
    kmax = int(kcount.max())
    ri, ci = np.nonzero(lr)  # row-major: ascending CPU within each trial
    start = np.concatenate(([0], np.cumsum(kcount)[:-1]))
    pos = np.arange(ri.size) - start[ri]
    gr = rows[ri]

    def pad(src, fill, dtype=np.float64):
        out = np.full((nl, kmax), fill, dtype)
        out[ri, pos] = src[gr, ci]
        return out

    cl = pad(c, -np.inf)
    el, wl, nl_nmi, hl = pad(e, 0.0), pad(w, 0.0), pad(nmi, 0.0), pad(h, 0.0)
    dl, deadl = pad(dirty, False, bool), pad(dead, False, bool)
    valid = np.zeros((nl, kmax), dtype=bool)
    valid[ri, pos] = True

    # The sampled walk over the late CPUs (the others are never sent an NMI), and the
    # same walk shifted by one send (clock one nmi_send_us later: what every late CPU
    # after an inserted CPU i sees until the walks re-synchronise).
    cb = np.empty((nl, kmax + 1))
    f_s = np.full((nl, kmax), -np.inf)
    f_p = np.full((nl, kmax), -np.inf)
    end_r = np.full((nl, kmax), -np.inf)
    sent_s = np.zeros((nl, kmax), dtype=bool)
    resync = np.zeros((nl, kmax), dtype=bool)
    clock = np.full(nl, t_nmi)
    for k in range(kmax):
        cb[:, k] = clock
        ck, v = cl[:, k], valid[:, k]
        args = (el[:, k], ck, wl[:, k], dl[:, k], deadl[:, k], hl[:, k])
        sent = v & (ck > clock)
        a = clock + nl_nmi[:, k]
        f_s[:, k] = np.where(sent, final_clear(p, a, *args), ck)
        end_r[:, k] = np.where(sent & ~deadl[:, k] & (a >= ck), a + hl[:, k], -np.inf)
        sent_s[:, k] = sent
        cp = clock + step  # the clock after one more send (sequential sums, as the model)
        resync[:, k] = sent & (ck <= cp)
        a_p = cp + nl_nmi[:, k]
        f_p[:, k] = np.where(v & (ck > cp), final_clear(p, a_p, *args), ck)
        clock = clock + np.where(sent, step, 0.0)
    cb[:, kmax] = clock
    t_loop = clock

    f_all = f_s.max(axis=1)
    if p.wait == 1:
        hot[rows] = np.isinf(f_all)
    else:
        hot[rows] = f_all > t_loop + p.nmi_wait_scaled_us

    # prefix maxima (CPUs before slot q) and suffix quantities (from column k on)
    pre_f = np.full((nl, kmax + 1), -np.inf)
    pre_m = np.full((nl, kmax + 1), -np.inf)
    np.maximum.accumulate(f_s, axis=1, out=pre_f[:, 1:])
    np.maximum.accumulate(end_r, axis=1, out=pre_m[:, 1:])
    suf_f = np.full((nl, kmax + 1), -np.inf)
    suf_p = np.full((nl, kmax + 1), -np.inf)
    aft = np.full((nl, kmax + 1), -np.inf)
    has_r = np.zeros((nl, kmax + 1), dtype=bool)
    for k in range(kmax - 1, -1, -1):
        suf_f[:, k] = np.maximum(f_s[:, k], suf_f[:, k + 1])
        r = resync[:, k]
        suf_p[:, k] = np.where(r, -np.inf, np.maximum(f_p[:, k], suf_p[:, k + 1]))
        aft[:, k] = np.where(r, np.maximum(cl[:, k], suf_f[:, k + 1]), aft[:, k + 1])
        has_r[:, k] = r | has_r[:, k + 1]
    # A walk with one extra send (CPU i) entering column j: F of columns >= j, T_loop'.
    off_f = np.maximum(suf_p, aft)
    off_t = np.where(has_r, t_loop[:, None], (t_loop + step)[:, None])

    # CPU i not late ("gap" slot q = late CPUs before it) or late (the q-th late CPU).
    gap_f = np.maximum(pre_f, off_f)
    gap_t = off_t
    mem_f = np.maximum(pre_f[:, :kmax], np.where(sent_s, suf_f[:, 1:], off_f[:, 1:]))
    mem_t = np.where(sent_s, t_loop[:, None], off_t[:, 1:])

    q = np.cumsum(lr, axis=1) - lr  # late CPUs before i
    qm = np.minimum(q, kmax - 1)
    take = np.take_along_axis
    s[rows] = take(cb, q, axis=1)
    fp[rows] = np.where(lr, take(mem_f, qm, axis=1), take(gap_f, q, axis=1))
    tl[rows] = np.where(lr, take(mem_t, qm, axis=1), take(gap_t, q, axis=1))
    mlo[rows] = take(pre_m, q, axis=1)
    return _Ctx(s, tl, fp, mlo, hot)


def _membership(p: Params, cv, s, a, end, tl, fp, mlo):
    """For explicit clear times cv of CPU i: (R_i, A_i, A_i without hang/timeout), using the
    model's own floating-point comparisons."""
    racer = (cv > s) & (cv <= a)
    f = np.maximum(fp, cv)
    if p.wait == 1:
        hang = np.isinf(f)
        timeout = np.zeros_like(hang)
        t_done = np.maximum(tl, f)
    else:
        hang = np.zeros(cv.shape, dtype=bool)
        dl = tl + p.nmi_wait_scaled_us
        timeout = f > dl
        t_done = np.where(timeout, dl, np.maximum(tl, f))
    with np.errstate(invalid="ignore"):
        race_i = racer & ~hang & (end > t_done + p.handoff_us)
        first = race_i & ~(mlo > t_done + p.handoff_us)
    return race_i, first, first & ~timeout


def _cmc_values(p: Params, d: Draws) -> CmcBatch:
    n, m = d.ipi.shape
    early = p.mitigation == "early_flush"
    dirty = np.zeros_like(d.dirty) if early else d.dirty
    dead = d.dead
    e = np.maximum(d.ipi, d.off)
    c = e + p.prologue_us
    np.add(c, d.w, out=c, where=dirty)
    c[dead] = np.inf
    h = np.where(dirty, p.prologue_us + d.w2, p.prologue_us)
    weff = np.where(dirty, d.w, 0.0)
    ctx = _context(p, c, e, d.w, dirty, dead, d.nmi, h)
    s, tl, fp, mlo = ctx.s, ctx.tl, ctx.fp, ctx.mlo
    a = s + d.nmi
    end = a + h
    ho = p.handoff_us
    law = _OffLaw.of(p)
    kk = p.prologue_us + weff  # c = e + kk up to rounding

    def mass(lo, hi, ok):
        """P(c_i in (lo, hi)) over the continuous part of off_i, where ok; 0 elsewhere."""
        y1 = np.maximum(d.ipi, lo - kk)
        y2 = hi - kk
        sel = ok & (y2 > y1)
        if sel.all():  # the usual case: no masked copies
            width = np.where(lo - kk > d.ipi, hi - lo, y2 - y1)
            return law.cont_mass(y1, np.maximum(width, 0.0))
        out = np.zeros((n, m))
        if sel.any():
            y1s = y1[sel]
            width = np.where(lo[sel] - kk[sel] > d.ipi[sel], hi[sel] - lo[sel], y2[sel] - y1s)
            out[sel] = law.cont_mass(y1s, np.maximum(width, 0.0))
        return out

    b = np.maximum(tl, fp)
    with np.errstate(invalid="ignore"):
        if p.wait == 1:
            ok1 = ~dead & (fp < np.inf) & (end > b + ho)
            hi1 = np.minimum(a, end - ho)
            dline = None
        else:
            dline = tl + p.nmi_wait_scaled_us
            ok1 = ~dead & (fp <= dline) & (end > b + ho)
            hi1 = np.minimum(np.minimum(a, end - ho), dline)
        restrict = ok1 & (mlo > b + ho)
    m1a = mass(s, hi1, ok1)
    m1f = m1a.copy()
    if restrict.any():
        m1f[restrict] = mass(np.maximum(s, mlo - ho), hi1, restrict)[restrict]
    race_sum = m1a.sum(axis=1)
    race = m1f.sum(axis=1)
    bad = ctx.hang_or_timeout.astype(np.float64) + race
    if dline is not None:
        ok2 = ~dead & (end > dline + ho)
        if ok2.any():
            lo2 = np.where(fp > dline, s, np.maximum(s, dline))
            m2a = mass(lo2, a, ok2)
            race_sum += m2a.sum(axis=1)
            race += np.where(mlo <= dline + ho, m2a, 0.0).sum(axis=1)

    # Atoms of e_i = max(ipi_i, off_i): at ipi_i (mass F_off(ipi_i)) and, for a degenerate
    # stall law, at the stall length (mass p_stall) when it exceeds ipi_i.
    atoms = [(d.ipi, None)]
    if law.stall_atom:
        atoms.append((np.full((n, m), law.m), law.p_stall))  # LogNormal(m, 0) = m, LogNormal(0, s) = 0
    for e0, mass0 in atoms:
        c0 = e0 + p.prologue_us
        np.add(c0, d.w, out=c0, where=dirty)
        cand = ~dead & (c0 > s) & (c0 <= a) & (e0 >= d.ipi)
        if mass0 is not None:
            cand &= e0 > d.ipi
        if not cand.any():
            continue
        ti = np.nonzero(cand)[0]
        args = (s[cand], a[cand], end[cand], tl[cand], fp[cand], mlo[cand])
        r_any, r_first, r_bad = _membership(p, c0[cand], *args)
        w0 = law.cdf(d.ipi[cand]) if mass0 is None else np.full(ti.size, mass0)
        np.add.at(race_sum, ti, w0 * r_any)
        np.add.at(race, ti, w0 * r_first)
        np.add.at(bad, ti, w0 * r_bad)

    # The sampled trial itself: which CPUs meet the race condition (only late ones can).
    n_racing = np.zeros(n, np.int32)
    first_cpu = np.full(n, -1, np.int32)
    lt = (c > p.t_nmi_us) & ~dead
    if lt.any():
        ti, ii = np.nonzero(lt)
        r_any, r_first, _ = _membership(p, c[lt], s[lt], a[lt], end[lt], tl[lt], fp[lt], mlo[lt])
        n_racing = np.bincount(ti[r_any], minlength=n).astype(np.int32)
        fc = np.full(n, m + 1, np.int64)
        np.minimum.at(fc, ti[r_first], ii[r_first] + 1)
        first_cpu = np.where(fc <= m, fc, -1).astype(np.int32)
    return CmcBatch(race, bad, race_sum, n_racing, first_cpu, p.n_cpus)


__all__ = [
    "CmcBatch", "CmcSummary", "FP_REL", "cmc_draws", "combine", "draw_chunk_cmc", "estimate_interval",
    "iter_chunks_cmc", "ndtr_diff", "replay_draws_cmc", "simulate_cmc",
]
