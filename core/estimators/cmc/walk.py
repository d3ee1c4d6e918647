"""Rare-event estimation by conditional Monte Carlo ("cmc"): race probabilities far below 1/trials.

At realistic parameters a race happens once in 1e6..1e9 stops, so plain Monte Carlo
("naive") sees none. The cmc estimator integrates one draw out exactly: for every
remote CPU i it conditions on X_{-i} (every draw of the trial except i's irqs-off
time off_i) and computes the probability, over off_i alone, that CPU i races. That
probability is a CDF difference of the irqs-off law (core.offlaw) over at most two
windows of CPU i's clear time c_i, so every trial contributes a small positive number
instead of a 0/1 indicator. See core/README.md, section "Rare events: the cmc
estimator", for the derivation; in short, per trial:

    race     = sum_i P(A_i | X_{-i}),   A_i = "CPU i meets the race condition and no
                                         lower-id CPU does" (i is first_racer_cpu)
    bad      = 1{hang or timeout} + sum_i P(A_i and no hang/timeout | X_{-i})
    race_sum = sum_i P(R_i | X_{-i}),   R_i = "CPU i meets the race condition"

A CPU whose NMI-path handler is shorter than the hand-over (every CPU under early_flush)
races only if its NMI is late; for it the NMI latency is integrated out as well
(`late_nmi_cpus`, `nu_threshold`, `late_strata`; core/README.md, "Late NMIs").

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

This module is the estimator's arithmetic; `core.estimators.CMC` (core/estimators/cmc/estimator.py) is its interface
(chunks, per-shard summary, replay, stored columns). Pure NumPy plus `math` (no scipy),
like the rest of `core`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from core.draws import Draws, draw_nmi_path, draw_phase1, draw_rev2, lognormal, new_generator
from core.estimators.cmc.stats import FP_REL, CmcBatch, CmcSummary, combine, estimate_interval
from core.numerics import ndtr_diff
from core.offlaw import OffLaw
from core.params import Params
from core.vectorized import TrialBatch, chunk_layout, chunk_seed, final_clear, hand_over, locate_trial, simulate_draws

INF = math.inf


# ----------------------------------------------------------------------------------------
# Chunks, shards, replay
# ----------------------------------------------------------------------------------------


def draw_chunk_cmc(p: Params, n: int, rng: np.random.Generator) -> Draws:
    """Every per-CPU draw of `n` trials, NMI path included (eagerly, CPU-major), then the
    revision-2 draws (none for revision 1 or wait = 0)."""
    d = draw_phase1(rng, p, n)
    nmi, w2, hold = draw_nmi_path(rng, p, n * p.n_remote)  # nmi carries its sampled hold-off
    shape = (p.n_remote, n)
    d = Draws(d.ipi, d.off, d.dirty, d.w, w2.reshape(shape).T, nmi.reshape(shape).T, d.dead, hold.reshape(shape).T)
    return d.with_rev2(draw_rev2(rng, p, n))


LATE_STREAM = 0
"""Spawn key, below a chunk's SeedSequence, of the child stream of the hold-off draws the
late-NMI integration makes (core/README.md, "Late NMIs"); the chunk's own stream is untouched."""


def draw_holdoffs(p: Params, n: int, chunk: np.random.SeedSequence) -> np.ndarray | None:
    """A fresh hold-off D ~ LogNormal(nmi_delay_median_us, nmi_delay_sigma) per CPU-trial of a
    chunk of `n` trials (shape (n, CPUs), CPU-major like the chunk), from the chunk's child
    stream LATE_STREAM; None (and nothing drawn) without hold-offs."""
    if p.p_nmi_delay == 0:
        return None
    rng = new_generator(chunk_seed(chunk, LATE_STREAM))
    return lognormal(rng, p.nmi_delay_median_us, p.nmi_delay_sigma, (p.n_remote, n)).T


def cmc_draws(p: Params, d: Draws, holdoff: np.ndarray | None = None) -> tuple[TrialBatch, CmcBatch]:
    """Naive results and cmc values of explicit draws (all fields given, nmi and w2 included);
    `holdoff` (trials x CPUs): the late-NMI integration's hold-off draws, needed when p_nmi_delay > 0."""
    return simulate_draws(p, d), _cmc_values(p, d, holdoff)


def _chunk(
    p: Params, size: int, seed: np.random.SeedSequence, c: int
) -> tuple[Draws, np.ndarray | None, TrialBatch, CmcBatch]:
    cs = chunk_seed(seed, c)
    d = draw_chunk_cmc(p, size, new_generator(cs))
    holdoff = draw_holdoffs(p, size, cs)
    batch, cmc = cmc_draws(p, d, holdoff)
    return d, holdoff, batch, cmc


def iter_chunks_cmc(
    p: Params, n_trials: int, seed: np.random.SeedSequence
) -> Iterator[tuple[int, TrialBatch, CmcBatch]]:
    """(first trial index, naive results, cmc values) per chunk of one shard, in trial order."""
    for c, start, size in chunk_layout(p, n_trials):
        _, _, batch, cmc = _chunk(p, size, seed, c)
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
        return TrialBatch.empty(), CmcBatch.empty(p.n_cpus)
    return TrialBatch.concat([b for _, b, _ in parts]), CmcBatch.concat([c for _, _, c in parts])


def replay_draws_cmc(
    p: Params, n_trials: int, seed: np.random.SeedSequence, trial: int
) -> tuple[Draws, TrialBatch, CmcBatch]:
    """The draws, naive result and cmc values of trial `trial` of a cmc shard (one chunk recomputed)."""
    c, i, size = locate_trial(p, n_trials, trial)
    d, _, batch, cmc = _chunk(p, size, seed, c)
    return d.row(i), batch.row(i), cmc.row(i)


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


def _membership(p: Params, cv, s, a, end, tl, fp, mlo, ho):
    """For explicit clear times cv of CPU i: (R_i, A_i, A_i without hang/timeout), using the
    model's own floating-point comparisons; `ho` is the hand-over H of each trial."""
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
        race_i = racer & ~hang & (end > t_done + ho)
        first = race_i & ~(mlo > t_done + ho)
    return race_i, first, first & ~timeout


@dataclass(frozen=True)
class _Cpu:
    """Per CPU i (arrays of one shape: trials x CPUs, or a flat selection of CPU-trials):
    everything its race windows depend on except its own irqs-off time and NMI latency."""

    ipi: np.ndarray
    w: np.ndarray  # first WBINVD length (used where dirty)
    dirty: np.ndarray  # in the stop (never under early_flush)
    dead: np.ndarray
    kk: np.ndarray  # c_i = e_i + kk (prologue, + w_i if dirty)
    h: np.ndarray  # NMI-path handler length
    s: np.ndarray  # send time of i's NMI, given X_{-i}
    tl: np.ndarray  # T_loop'
    fp: np.ndarray  # F' (max final clear of the other CPUs)
    mlo: np.ndarray  # max handler end over racers j < i
    ho: np.ndarray  # H, the hand-over of i's trial (handoff_us, + CPU 0's WBINVD in revision 2)

    def take(self, sel: np.ndarray) -> "_Cpu":
        """The CPUs where `sel`, as flat arrays (in row-major order, as boolean indexing gives)."""
        if sel.ndim != 2:
            return _Cpu(*(getattr(self, f)[sel] for f in self.__dataclass_fields__))
        rows, cols = np.nonzero(sel)  # once, not once per field
        return _Cpu(*(_gather(getattr(self, f), rows, cols) for f in self.__dataclass_fields__))


def _gather(a: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """a[rows, cols] for a 2-D array, by its memory layout: the chunk's draws are CPU-major
    (transposed views), H is one value per trial (broadcast); a flat take is ~5x faster than
    fancy or boolean indexing on those layouts."""
    n, m = a.shape
    if a.strides[1] == 0:  # broadcast along CPUs
        return a[:, 0][rows]
    if a.flags.c_contiguous:
        return a.ravel()[rows * m + cols]
    if a.flags.f_contiguous:
        return a.T.ravel()[cols * n + rows]
    return a[rows, cols]


@dataclass
class _Terms:
    """P(c_i in a race window | X_{-i}, nu_i) by piece, per CPU (see core/README.md):
    piece 1 (m1a: i races; m1f: i is the first racer, which also counts as bad), piece 2
    (wait = 0 timeouts: m2a, m2f; None when empty), and the atoms of e_i as
    (CPUs with an atom in the window, mass x any, x first, x first-without-timeout)."""

    m1a: np.ndarray
    m1f: np.ndarray
    m2a: np.ndarray | None
    m2f: np.ndarray | None
    atoms: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]

    def totals(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(race_sum, race, bad) parts of every CPU (elementwise)."""
        t_any, t_first = self.m1a.copy(), self.m1f.copy()
        t_bad = self.m1f.copy()
        if self.m2a is not None and self.m2f is not None:
            t_any += self.m2a
            t_first += self.m2f
        for cand, r_any, r_first, r_bad in self.atoms:
            t_any[cand] += r_any
            t_first[cand] += r_first
            t_bad[cand] += r_bad
        return t_any, t_first, t_bad


def _terms(p: Params, law: OffLaw, g: _Cpu, nmi: np.ndarray, keep: np.ndarray | None = None) -> _Terms:
    """The race-window masses of every CPU of `g` at NMI latencies `nmi` (only where `keep`)."""
    s, tl, fp, mlo, dead = g.s, g.tl, g.fp, g.mlo, g.dead
    a = s + nmi
    end = a + g.h
    ho = g.ho
    kk = g.kk
    shape = s.shape

    def mass(lo, hi, ok):
        """P(c_i in (lo, hi)) over the continuous part of off_i, where ok; 0 elsewhere."""
        y1 = np.maximum(g.ipi, lo - kk)
        y2 = hi - kk
        sel = ok & (y2 > y1)
        if sel.all():  # the usual case: no masked copies
            width = np.where(lo - kk > g.ipi, hi - lo, y2 - y1)
            return law.cont_mass(y1, np.maximum(width, 0.0))
        out = np.zeros(shape)
        if sel.any():
            y1s = y1[sel]
            width = np.where(lo[sel] - kk[sel] > g.ipi[sel], hi[sel] - lo[sel], y2[sel] - y1s)
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
        if keep is not None:
            ok1 &= keep
        restrict = ok1 & (mlo > b + ho)
    m1a = mass(s, hi1, ok1)
    m1f = m1a.copy()
    if restrict.any():
        m1f[restrict] = mass(np.maximum(s, mlo - ho), hi1, restrict)[restrict]
    m2a = m2f = None
    if dline is not None:
        ok2 = ~dead & (end > dline + ho)
        if keep is not None:
            ok2 &= keep
        if ok2.any():
            lo2 = np.where(fp > dline, s, np.maximum(s, dline))
            m2a = mass(lo2, a, ok2)
            m2f = np.where(mlo <= dline + ho, m2a, 0.0)

    # Atoms of e_i = max(ipi_i, off_i): at ipi_i (mass F_off(ipi_i)) and, for a degenerate
    # stall law, at the stall length (mass p_stall) when it exceeds ipi_i.
    atoms = []
    points: list[tuple[np.ndarray, float | None]] = [(g.ipi, None)]
    if law.stall_atom:
        points.append((np.full(shape, law.m), law.p_stall))  # LogNormal(m, 0) = m, LogNormal(0, s) = 0
    for e0, mass0 in points:
        c0 = e0 + p.prologue_us
        np.add(c0, g.w, out=c0, where=g.dirty)
        cand = ~dead & (c0 > s) & (c0 <= a) & (e0 >= g.ipi)
        if mass0 is not None:
            cand &= e0 > g.ipi
        if keep is not None:
            cand &= keep
        if not cand.any():
            continue
        r_any, r_first, r_bad = _membership(p, c0[cand], s[cand], a[cand], end[cand], tl[cand], fp[cand], mlo[cand],
                                            ho[cand])
        w0 = law.cdf(g.ipi[cand]) if mass0 is None else np.full(r_any.size, mass0)
        atoms.append((cand, w0 * r_any, w0 * r_first, w0 * r_bad))
    return _Terms(m1a, m1f, m2a, m2f, atoms)


def late_nmi_cpus(p: Params, g: _Cpu) -> np.ndarray:
    """CPUs whose NMI latency is integrated out too (core/README.md, "Late NMIs"): those
    whose NMI-path handler is shorter than the hand-over (h_i < H: they race only if the NMI
    comes late), when the latency is random at all. Model revision 2: only in trials where no
    CPU has h_j >= H (core/README.md, "Revision 2 in the cmc estimator": where one has, the
    sampled latency serves, unbiased, for a fraction of the cost). `g` is (trials x CPUs)."""
    if p.nmi_jitter_us == 0 and p.p_nmi_delay == 0:
        return np.zeros(g.h.shape, dtype=bool)
    late = ~g.dead & (g.h < g.ho)
    if p.model_rev == 2:
        direct = np.asarray((~g.dead & ~late).any(axis=1))  # a CPU that races with its sampled latency
        late &= ~direct[:, None]
    return late


def nu_threshold(p: Params, g: _Cpu) -> np.ndarray:
    """nu0: CPU i can race only if its NMI latency exceeds nu0 (inf: it never can).

    Every race of i has T_done >= min(B, D') (B = max(T_loop', F'); D' = T_loop' +
    nmi_wait only for wait = 0) and needs a_i + h_i > T_done + H, a_i = s_i + nu_i.
    """
    b = np.maximum(g.tl, g.fp)
    t_min = b if p.wait == 1 else np.minimum(b, g.tl + p.nmi_wait_scaled_us)
    return t_min - g.s + g.ho - g.h


def late_strata(
    p: Params, nu0: np.ndarray, x: np.ndarray, nmi: np.ndarray, holdoff: np.ndarray | None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight, latency) pairs whose weighted race masses sum to an unbiased estimate of
    E[1{nu > nu0} m(nu)] over nu = nmi_base + X + D (core/README.md, "Late NMIs").

    `x`: an Exponential(nmi_jitter_us) draw per CPU independent of X_{-i} (the sampled
    exponential part of its own NMI latency). No hold-off (prob. 1 - p_nmi_delay):
    weight P(X > x0) = exp(-x0+ / jitter), latency nu0 + x (memorylessness: X | X > x0 is
    x0 + X'). Hold-off (prob. p_nmi_delay) D = `holdoff` (a fresh draw of its law): the
    same with x0 - D. Without jitter X = 0 and the weight is the stratum's probability.
    """
    base, jit, pd = p.nmi_base_us, p.nmi_jitter_us, p.p_nmi_delay
    out = []
    strata: list[tuple[float, np.ndarray | None]] = [(1.0 - pd, None)]
    if pd > 0:
        if holdoff is None:
            raise ValueError("p_nmi_delay > 0: the cmc estimator needs a hold-off draw per late CPU")
        strata.append((pd, holdoff))
    for prob, dd in strata:
        if prob <= 0:
            continue
        start = base if dd is None else base + dd  # nu without the exponential part
        if jit == 0:
            out.append((np.full(nu0.shape, prob), start + 0.0 * x))
            continue
        with np.errstate(invalid="ignore"):
            x0 = nu0 - start
            above = x0 > 0
            wt = prob * np.exp(-np.where(above, x0, 0.0) / jit)
            if dd is None and pd == 0:
                nu = np.where(above, nu0 + x, nmi)  # below: the sampled latency itself
            else:
                nu = np.where(above, nu0 + x, start + x)
        out.append((wt, nu))
    return out


def _cmc_values(p: Params, d: Draws, holdoff: np.ndarray | None = None) -> CmcBatch:
    n, m = d.ipi.shape
    early = p.early_flush_applies
    dirty = np.zeros_like(d.dirty) if early else d.dirty
    dead = d.dead
    e = np.maximum(d.ipi, d.off)
    c = e + p.prologue_us
    np.add(c, d.w, out=c, where=dirty)
    c[dead] = np.inf
    h = np.where(dirty, p.prologue_us + d.w2, p.prologue_us)
    weff = np.where(dirty, d.w, 0.0)
    ctx = _context(p, c, e, d.w, dirty, dead, d.nmi, h)
    # H is part of X_{-i} for every i (CPU 0's flag and flush are not off_i): one value per trial
    ho = np.broadcast_to(np.asarray(hand_over(p, d.rev2().need(p)), dtype=np.float64).reshape(-1, 1), (n, m))
    g = _Cpu(d.ipi, d.w, dirty, dead, p.prologue_us + weff, h, ctx.s, ctx.tl, ctx.fp, ctx.mlo, ho)
    law = OffLaw.of(p)

    # CPUs that race at their sampled NMI latency, whatever it is (h_i >= H)
    late = late_nmi_cpus(p, g)
    t = _terms(p, law, g, d.nmi, keep=~late if late.any() else None)
    race_sum = t.m1a.sum(axis=1)
    race = t.m1f.sum(axis=1)
    bad = ctx.hang_or_timeout.astype(np.float64) + race
    if t.m2a is not None and t.m2f is not None:
        race_sum += t.m2a.sum(axis=1)
        race += t.m2f.sum(axis=1)
    for cand, r_any, r_first, r_bad in t.atoms:
        ti = np.nonzero(cand)[0]
        np.add.at(race_sum, ti, r_any)
        np.add.at(race, ti, r_first)
        np.add.at(bad, ti, r_bad)

    # CPUs that race only with a late NMI: their latency integrated out too
    if late.any():
        ti = np.nonzero(late)[0]
        gl = g.take(late)
        nu0 = nu_threshold(p, gl)
        nmi_l = d.nmi[late]
        x = nmi_l - p.nmi_base_us
        hold = getattr(d, "hold", None)  # the sampled hold-off inside nmi (Draws from before hold-offs: none)
        if p.p_nmi_delay > 0 and hold is not None:
            x = np.maximum(x - hold[late], 0.0)
        tot = np.zeros((3, ti.size))
        for wt, nu in late_strata(p, nu0, x, nmi_l, None if holdoff is None else holdoff[late]):
            ok = (wt > 0) & np.isfinite(nu)
            if not ok.any():
                continue
            parts = _terms(p, law, gl.take(ok), nu[ok]).totals()
            for k in range(3):
                tot[k, ok] += wt[ok] * parts[k]
        np.add.at(race_sum, ti, tot[0])
        np.add.at(race, ti, tot[1])
        np.add.at(bad, ti, tot[2])

    # The sampled trial itself: which CPUs meet the race condition (only late ones can).
    s, tl, fp, mlo = ctx.s, ctx.tl, ctx.fp, ctx.mlo
    a = s + d.nmi
    end = a + h
    n_racing = np.zeros(n, np.int32)
    first_cpu = np.full(n, -1, np.int32)
    lt = (c > p.t_nmi_us) & ~dead
    if lt.any():
        ti, ii = np.nonzero(lt)
        r_any, r_first, _ = _membership(p, c[lt], s[lt], a[lt], end[lt], tl[lt], fp[lt], mlo[lt], ho[lt])
        n_racing = np.bincount(ti[r_any], minlength=n).astype(np.int32)
        fc = np.full(n, m + 1, np.int64)
        np.minimum.at(fc, ti[r_first], ii[r_first] + 1)
        first_cpu = np.where(fc <= m, fc, -1).astype(np.int32)
    return CmcBatch(race, bad, race_sum, n_racing, first_cpu, p.n_cpus)


__all__ = [
    "CmcBatch", "CmcSummary", "FP_REL", "cmc_draws", "combine", "draw_chunk_cmc", "estimate_interval",
    "iter_chunks_cmc", "ndtr_diff", "replay_draws_cmc", "simulate_cmc",
]
