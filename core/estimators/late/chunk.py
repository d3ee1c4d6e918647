"""One chunk of the late estimator's random stream -> per-trial results (and, for replay, its draws).

Stream layout (LATE_STREAM_VERSION; core/README.md "The late estimator"): a shard is cut into
chunks of CHUNK_TRIALS trials; chunk c draws from `new_generator(chunk_seed(seed, c))`, block
by block (BLOCK trials), steps 1-3:

1. the number of late CPUs K and the non-late CPUs' counts per component: one uniform per
   trial through the alias table of their joint multinomial law (plan.counts), or, where that
   table would be too large, one Exp(1) for K (plan.late_count) then a binomial per trial for
   every component but the most likely, in ascending order of probability (the last takes
   the rest);
2. per component, for the trials where it has CPUs, one Exp(1): the maximum of their clear
   times (the component's table), or, for a component with few expected CPUs, their clear
   times one by one (Component.draw_nonlate); T_max, the maximum over components;
3. under the early flush, one Exp(1) per trial: preflush_us (its table).

The trials with K >= 1 are cut, in trial order, into groups of at most GROUP_SLOTS late CPUs;
group g draws from the chunk's child stream `chunk_seed(chunk_seed(seed, c), g)`: the late
CPUs' ids (a uniform K-subset per trial, sorted), their dead flags, components, their draws
given c > T1, then their NMI-path draws (`core.draws.draw_nmi_path`, as naive), then, in
revision 2's kexec path without the early flush, CPU 0's flag and WBINVD per trial (`draw_cpu0`:
they set the hand-over H). The NMI walk
and the outcome are MODEL.md's over the late CPUs only (core.estimators.late.walk, equal to
core.vectorized's to the bit): the others cleared by T1 < T_nmi, so they are never sent an
NMI, never move the send clock, and their f_i = c_i <= T1 < T_loop never matters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.draws import Rev2Draws, bernoulli, draw_nmi_path, lognormal, new_generator
from core.estimators.late.plan import LatePlan
from core.estimators.late.table import Scratch
from core.estimators.late.walk import late_walk
from core.outcomes import CLEAN, HANG
from core.params import Params
from core.vectorized import TrialBatch, _phase2, chunk_seed, hand_over

CHUNK_TRIALS = 1 << 20
"""Trials per chunk (part of the stream layout): large, so the late CPUs of a chunk make big
arrays (NumPy's per-call cost shared by many)."""
BLOCK = 1 << 15
"""Trials per block of a chunk's steps 1-3 (part of the stream layout): small, so their
per-trial arrays stay in cache."""
WALK_COLUMNS = 16
"""Up to this many late CPUs a trial the walk goes column by column (core.estimators.late.walk);
beyond, core.vectorized's (2-D) walk is cheaper."""
GROUP_SLOTS = 1 << 15
"""Most late CPUs per group (part of the stream layout; bounds memory whatever q is)."""


@dataclass
class LateCpus:
    """The late CPUs of some trials, flat in (trial, CPU id) order."""

    trial: np.ndarray  # index of the trial in the chunk
    cpu: np.ndarray  # CPU id, 1 .. n_cpus - 1
    dead: np.ndarray
    comp: np.ndarray  # component index (-1 if dead)
    ipi: np.ndarray
    off: np.ndarray
    dirty: np.ndarray  # flag set in the stop
    w: np.ndarray  # WBINVD length in the stop (0 if not dirty)
    nmi: np.ndarray
    w2: np.ndarray
    hold: np.ndarray

    @staticmethod
    def concat(parts: list["LateCpus"]) -> "LateCpus":
        if not parts:
            z = np.zeros(0)
            zi = np.zeros(0, np.int64)
            zb = np.zeros(0, bool)
            return LateCpus(zi, zi, zb, zi, z, z, zb, z, z, z, z)
        return LateCpus(*(np.concatenate([getattr(x, f) for x in parts]) for f in LateCpus.__dataclass_fields__))


@dataclass
class ChunkRecord:
    """What replay needs of a chunk: per trial K, T_max, the component counts; the late CPUs."""

    k: np.ndarray
    t_max: np.ndarray
    counts: np.ndarray  # (components, trials)
    late: LateCpus
    dirty0: np.ndarray  # revision 2, kexec path without the early flush: CPU 0's flag (NMI-phase trials)
    w0: np.ndarray  # ... and its WBINVD (NaN where not drawn)


def chunk_layout(n_trials: int):
    """(chunk index, first trial, trials) of a shard of n_trials."""
    for c, start in enumerate(range(0, int(n_trials), CHUNK_TRIALS)):
        yield c, start, min(CHUNK_TRIALS, int(n_trials) - start)


@np.errstate(all="ignore")
def simulate_chunk(plan: LatePlan, n: int, seed: np.random.SeedSequence, record: bool = False,
                   only_group_of: int | None = None) -> tuple[TrialBatch, ChunkRecord | None]:
    """Results of one chunk of n trials seeded by `seed` (the chunk's own SeedSequence).

    only_group_of: the index of one trial: draw only its group's late CPUs (replay; the
    other NMI-phase trials' results are then not computed: outcome clean, NaN elsewhere).
    """
    p = plan.p
    rng = new_generator(seed)
    ncomp = len(plan.comps)
    # steps 1-3 fill per block K, the counts and T_max; without a record, K and the counts live
    # in one block's buffers (only the late trials' K is kept) and T_max is written straight
    # into t_done (its late trials' entries are the walk's, below)
    t_max = np.empty(n)
    preflush = np.empty(n) if plan.preflush is not None else np.full(n, np.nan)
    if record:
        counts = np.zeros((ncomp, n), np.int64)
        k = np.zeros(n, np.int64)
    else:
        counts = np.zeros((ncomp, min(n, BLOCK)), np.int64)  # (a component no non-late CPU is in: 0)
        kb = np.empty(min(n, BLOCK), np.int64)
    work = Scratch()  # the blocks' table lookups reuse its arrays
    late_rows: list[np.ndarray] = []
    late_k: list[np.ndarray] = []
    for b0 in range(0, n, BLOCK):  # small blocks: the per-trial arrays stay in cache
        b1 = min(n, b0 + BLOCK)
        if record:
            kv, cv = k[b0:b1], counts[:, b0:b1]
        else:
            kv, cv = kb[:b1 - b0], counts[:, :b1 - b0]
        late = _main_block(plan, rng, kv, cv, t_max[b0:b1], preflush[b0:b1], record, work)
        if late.size:
            late_rows.append(late + b0)
            late_k.append(kv[late])
    rows = np.concatenate(late_rows) if late_rows else np.zeros(0, np.intp)
    krows = np.concatenate(late_k) if late_k else np.zeros(0, np.int64)

    outcome = np.full(n, CLEAN, np.uint8)
    if record:
        t_done = t_max.copy()
    else:
        t_done = t_max  # (T_max is not kept: the late trials' entries are overwritten below)
    t_done[rows] = np.nan
    nmi_sent = np.zeros(n, np.int32)
    racers = np.zeros(n, np.int32)
    overlap = np.full(n, np.nan)
    first = np.full(n, -1, np.int32)
    late_parts: list[LateCpus] = []
    if record:
        dirty0 = np.zeros(n, bool)
        w0 = np.full(n, np.nan)
    drawn: list[tuple[np.ndarray, np.ndarray, LateCpus, Rev2Draws]] = []
    for g, (grp, kg) in enumerate(_groups(rows, krows)):
        if only_group_of is not None and only_group_of not in grp:
            continue
        # by K: each class of K is one contiguous run (K <= m < 2^16: a radix sort)
        order = np.argsort(kg.astype(np.uint16) if plan.m < 1 << 16 else kg, kind="stable")
        grp, kg = grp[order], kg[order]
        grng = new_generator(chunk_seed(seed, g))
        lc = _draw_group(plan, grp, kg, grng)
        cpu0 = draw_cpu0(grng, p, grp.size)  # revision 2's CPU 0 (last in the group's stream)
        drawn.append((grp, kg, lc, cpu0))
    # the walk of every group's trials at once (each trial's result is its own)
    _evaluate(p, [(grp, kg, lc, hand_over(p, cpu0)) for grp, kg, lc, cpu0 in drawn],
              (outcome, t_done, nmi_sent, racers, overlap, first))
    for grp, kg, lc, cpu0 in drawn:
        if p.flush_ipi:  # revision 2: a dead CPU never takes the early flush's IPI: hung, no stop
            hung = grp[np.bincount(np.repeat(np.arange(grp.size), kg)[lc.dead], minlength=grp.size) > 0]
            outcome[hung], t_done[hung], nmi_sent[hung], racers[hung] = HANG, np.nan, 0, 0
            overlap[hung], first[hung], preflush[hung] = np.nan, -1, np.nan
        if record:
            late_parts.append(lc)
            if cpu0.dirty0 is not None:
                dirty0[grp], w0[grp] = cpu0.dirty0, cpu0.w0
    batch = TrialBatch(outcome, t_done, nmi_sent, racers, overlap, first, preflush)
    if not record:
        return batch, None
    return batch, ChunkRecord(k, t_max, counts, LateCpus.concat(late_parts), dirty0, w0)


def _main_block(plan: LatePlan, rng: np.random.Generator, k: np.ndarray, counts: np.ndarray, t_max: np.ndarray,
                preflush: np.ndarray, every_max: bool = False, work: Scratch | None = None) -> np.ndarray:
    """Steps 1-3 of the module docstring for one block of trials (views, filled in place); returns
    the (ascending) indices of the block's trials with K >= 1.

    K and the counts are written only where step 1 draws them (every trial but the fast path's,
    which have K = 0 and every CPU in the major component: filled in too if `every_max`, for the
    record). T_max is the stop time of the clean trials (K = 0) only; for the others it is looked
    up only if `every_max` (replay shows it), its variates drawn all the same (the stream does not
    depend on it)."""
    p = plan.p
    n = k.size
    if math.isfinite(plan.kappa_all_major):
        # every CPU a non-late CPU of the major component iff E > kappa (prob. e^-kappa); then
        # E - kappa is again Exp(1) (memoryless): the one variate gives the maximum too
        e0 = rng.standard_exponential(n)
        fast = e0 > plan.kappa_all_major
        not_fast = ~fast
        if every_max:  # (K is 0 there already)
            counts[plan.major] = plan.m
        major = plan.comps[plan.major].table
        assert major is not None
        e0 -= plan.kappa_all_major
        slow = np.flatnonzero(not_fast)  # (index assignment: ~4x faster than copyto(..., where=))
        e0[slow] = 1.0  # (any key in the table's range: replaced by -inf)
        major.sample_max(plan.m, e0, out=t_max, work=work)
        t_max[slow] = -np.inf
        counts_table = plan.slow_counts
        every = False
    else:
        slow = np.arange(n)
        counts_table = plan.counts
        t_max.fill(-np.inf)
        every = True  # no fast path: whole arrays, not gathers and scatters
    if not slow.size:
        late = slow
    else:
        _slow_counts(plan, rng, slow, counts_table, k, counts)
        ks = k if every else k[slow]
        late = slow[ks > 0]
        for i, comp in enumerate(plan.comps):
            ci = counts[i]
            has = ci > 0 if every else ci[slow] > 0
            if every and has.all():
                rows, ni, rk = slice(None), ci, ks
            else:
                rows = slow[has]
                if not rows.size:
                    continue
                ni, rk = ci[rows], ks[has]
            if comp.table is not None:
                e = rng.standard_exponential(ni.size)
                if every_max:
                    t_max[rows] = np.maximum(t_max[rows], comp.table.sample_max(ni, e, work=work))
                else:  # the clean trials' only
                    if not rk.any():
                        t_max[rows] = np.maximum(t_max[rows], comp.table.sample_max(ni, e, work=work))
                    else:
                        clean = rk == 0
                        sub = np.flatnonzero(clean) if isinstance(rows, slice) else rows[clean]
                        t_max[sub] = np.maximum(t_max[sub], comp.table.sample_max(ni[clean], e[clean], work=work))
            else:  # few expected: one by one
                c = comp.draw_nonlate(rng, int(ni.sum()), float(p.t1_us))
                t_max[rows] = np.maximum(t_max[rows], _segment_max(c, ni))
    if isinstance(plan.preflush, float):
        preflush[:] = plan.preflush
    elif plan.preflush is not None:
        plan.preflush.sample_max(plan.preflush_of, rng.standard_exponential(n), out=preflush, work=work)
    return late


def _segment_max(c: np.ndarray, ni: np.ndarray) -> np.ndarray:
    """The maximum of each run of ni >= 1 consecutive values of c (np.maximum.reduceat, which
    costs ~30 ns a run; the runs are mostly of one value), one position of the runs at a time."""
    starts = np.cumsum(ni) - ni
    mx = c[starts]
    more = np.flatnonzero(ni > 1)
    j = 1
    while more.size:
        mx[more] = np.maximum(mx[more], c[starts[more] + j])
        j += 1
        more = more[ni[more] > j]
    return mx


def _slow_counts(plan: LatePlan, rng: np.random.Generator, rows: np.ndarray, table, k: np.ndarray,
                 counts: np.ndarray) -> None:
    """K and the component counts of the trials `rows` (in place): from `table` (one uniform a
    trial), or one variable at a time (K by its thresholds from one Exp(1), each minor count a
    binomial given the ones before; trials redrawn while every CPU came out major if the fast
    path took those)."""
    if table is not None:
        kk, minor = table.draw(rng.random(rows.size))
        sel = slice(None) if rows.size == k.size else rows  # (every trial: no scatter)
        k[sel] = kk
        rest = plan.m - kk
        for j, i in enumerate(plan.minors):
            counts[i][sel] = minor[j]
            rest = rest - minor[j]
        counts[plan.major][sel] = rest
        return
    todo = rows
    while todo.size:
        kk = plan.late_count(rng.standard_exponential(todo.size))
        rest = plan.m - kk
        p_rest = 1.0
        minor = []
        for i in plan.minors:
            pk = min(1.0, plan.pi[i] / p_rest) if p_rest > 0 else 1.0
            minor.append(rng.binomial(rest, pk))
            rest = rest - minor[-1]
            p_rest -= plan.pi[i]
        k[todo] = kk
        for j, i in enumerate(plan.minors):
            counts[i][todo] = minor[j]
        counts[plan.major][todo] = rest
        if not math.isfinite(plan.kappa_all_major):
            return
        todo = todo[rest == plan.m]  # drawn all-major: not a slow trial, again


def _classes(kmax: int) -> list[tuple[int, int]]:
    """(lo, hi) ranges of K evaluated together: 1, 2, 3, 4 alone, then 5-8, 9-16, ..."""
    out = [(k, k) for k in range(1, min(kmax, 4) + 1)]
    lo = 5
    while lo <= kmax:
        out.append((lo, 2 * lo - 2))
        lo = 2 * lo - 1
    return out


def _groups(rows: np.ndarray, k: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Consecutive NMI-phase trials `rows` (K = k each) cut into groups of at most GROUP_SLOTS
    late CPUs, as (rows, k) per group (a trial alone may exceed it only if it has more late CPUs
    than that, which n_cpus <= 65536 rules out)."""
    if not rows.size:
        return []
    if int(k.sum()) <= GROUP_SLOTS:  # (the usual case: one group)
        return [(rows, k)]
    cum = np.cumsum(k)
    out = []
    start = 0
    while start < rows.size:
        base = cum[start - 1] if start else 0
        end = int(np.searchsorted(cum, base + GROUP_SLOTS, side="right"))
        end = max(end, start + 1)
        out.append((rows[start:end], k[start:end]))
        start = end
    return out


def draw_ids(rng: np.random.Generator, m: int, k: np.ndarray) -> np.ndarray:
    """For each trial a uniform k-subset of 1..m, sorted, concatenated in trial order.

    Trials with k = 1: one uniform id each. The others: k uniform ids each, then, in rounds,
    every id equal to a smaller-placed one of its trial is drawn again (uniform over 1..m)
    until a trial's ids are distinct. Each round treats the labels symmetrically, so the set
    is a uniform k-subset (this is sequential sampling without replacement, by rejection).
    Where k > m / 2 the m - k ids left out are drawn so, and the set is their complement."""
    out = np.empty(int(k.sum()), np.int64)
    offs = np.concatenate([[0], np.cumsum(k)])
    one = np.flatnonzero(k == 1)
    out[offs[one]] = rng.integers(1, m + 1, size=one.size)
    many = np.flatnonzero((k > 1) & (2 * k <= m))
    if many.size:
        out[_ranges(offs[many], k[many])] = _distinct(rng, m, k[many])
    most = np.flatnonzero(2 * k > m)
    if most.size:  # the complement of a uniform (m - k)-subset
        left = _distinct(rng, m, m - k[most]) if (m - k[most]).sum() else np.zeros(0, np.int64)
        lo = np.concatenate([[0], np.cumsum(m - k[most])])
        for j, t in enumerate(most):
            keep = np.ones(m + 1, bool)
            keep[0] = False
            keep[left[lo[j]:lo[j + 1]]] = False
            out[offs[t]:offs[t + 1]] = np.flatnonzero(keep)
    return out


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The indices start .. start + length - 1 of every (start, length), concatenated."""
    owner = np.repeat(np.arange(starts.size), lengths)
    return np.repeat(starts, lengths) + np.arange(owner.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def _distinct(rng: np.random.Generator, m: int, k: np.ndarray) -> np.ndarray:
    """Sorted distinct uniform ids 1..m, k of them per trial (k >= 0), concatenated."""
    owner = np.repeat(np.arange(k.size), k)
    # trial-major, sorted in a trial (a stable sort: the keys come in runs of one trial each, which
    # timsort merges in about linear time; any sort gives the same integers)
    key = np.sort(owner * (m + 1) + rng.integers(1, m + 1, size=owner.size), kind="stable")
    while True:
        redo = np.flatnonzero(key[1:] == key[:-1]) + 1  # the second of two equal ids of a trial
        if not redo.size:
            return key % (m + 1)
        key[redo] = (key[redo] // (m + 1)) * (m + 1) + rng.integers(1, m + 1, size=redo.size)
        key.sort(kind="stable")


def draw_cpu0(rng: np.random.Generator, p: Params, n: int) -> Rev2Draws:
    """CPU 0's flag and WBINVD for n trials where they enter the hand-over H (revision 2, kexec
    path, no early flush: Params.cpu0_flush), with core.draws' laws; nothing drawn otherwise.
    (Under the early flush CPU 0's flush is part of preflush_us, drawn as its maximum.)"""
    if not p.cpu0_flush:
        return Rev2Draws()
    dirty0 = bernoulli(rng, p.incoherent_fraction, n)
    return Rev2Draws(dirty0, lognormal(rng, p.wbinvd_us, p.wbinvd_sigma, n))


def _draw_group(plan: LatePlan, rows: np.ndarray, k: np.ndarray, rng: np.random.Generator) -> LateCpus:
    """The late CPUs of the trials `rows` (K = k each), from the group's stream."""
    p = plan.p
    s = int(k.sum())
    trial = np.repeat(rows, k)
    cpu = draw_ids(rng, plan.m, k)
    if plan.p_dead >= 1.0:
        dead = np.ones(s, bool)
    elif plan.p_dead > 0.0:
        dead = rng.random(s) < plan.p_dead
    else:
        dead = np.zeros(s, bool)
    alive = np.flatnonzero(~dead)
    comp = np.full(s, -1, np.int64)
    if alive.size:
        cum = np.cumsum(plan.rho)
        comp[alive] = np.minimum(np.searchsorted(cum, rng.random(alive.size) * cum[-1], side="right"),
                                 len(plan.comps) - 1)
    ipi = np.full(s, np.nan)
    off = np.full(s, np.nan)
    w = np.zeros(s)
    dirty = np.zeros(s, bool)
    t1 = float(p.t1_us)
    for i, c in enumerate(plan.comps):
        idx = np.flatnonzero(comp == i)
        while idx.size:
            assert c.late is not None
            a, o, ww = c.late.draw(rng, idx.size)
            cc = np.maximum(a, o) + p.prologue_us
            if c.d:
                cc = cc + ww
            ok = cc > t1  # the model's own float test: redraw a rounding at the threshold
            if idx.size == s and ok.all():  # (every late CPU in this component, all kept: no scatter)
                ipi, off, w = a, o, (ww if c.d else w)
                dirty[:] = bool(c.d)
                break
            ipi[idx[ok]], off[idx[ok]], w[idx[ok]] = a[ok], o[ok], (ww[ok] if c.d else 0.0)
            dirty[idx[ok]] = bool(c.d)
            idx = idx[~ok]
    nmi, w2, hold = draw_nmi_path(rng, p, s)
    return LateCpus(trial, cpu, dead, comp, ipi, off, dirty, w, nmi, w2, hold)


def _evaluate(p: Params, parts: list[tuple[np.ndarray, np.ndarray, LateCpus, float | np.ndarray]],
              out: tuple[np.ndarray, ...]) -> None:
    """MODEL.md phase 2 (core.estimators.late.walk) of the trials of `parts`, each (trial rows,
    their K in ascending order, their late CPUs `lc` trial by trial in that order and ascending
    CPU id in a trial, H); the results are written at the rows of `out` (outcome, t_done,
    nmi_sent, racers, overlap, first racer). Trials are walked in classes of K (1, 2, 3, 4, 5-8,
    9-16, ...) across the parts: a class of one K is its CPUs' arrays reshaped (trials x K); a
    wider one is padded with CPUs that cleared at -inf (never sent, never the maximum, so the
    padding changes no result), at most half of the array."""
    prep = []
    for rows, kk, lc, handover in parts:
        ee = np.maximum(lc.ipi, lc.off)
        cc = ee + p.prologue_us
        cc = np.where(lc.dirty, cc + lc.w, cc)
        cc = np.where(lc.dead, np.inf, cc)
        start = np.concatenate([[0], np.cumsum(kk)])
        fields = [ee, cc, lc.w, lc.dirty, lc.dead, lc.nmi, lc.w2, lc.cpu]
        prep.append((rows, kk, start, fields, handover))
    if not prep:
        return
    for lo, hi in _classes(max(int(kk[-1]) for _, kk, _, _, _ in prep)):
        batch: list[tuple] = []
        size = 0
        for rows, kk, start, fields, handover in prep:
            t0, t1 = np.searchsorted(kk, lo, side="left"), np.searchsorted(kk, hi, side="right")
            if t1 > t0:
                s0, s1 = start[t0], start[t1]
                batch.append((rows[t0:t1], kk[t0:t1], [v[s0:s1] for v in fields],
                              handover if isinstance(handover, float) else handover[t0:t1]))
                size += int(s1 - s0)
            if size >= GROUP_SLOTS:  # a batch of about a group's CPUs: its arrays stay in cache
                _walk_class(p, lo == hi, batch, out)
                batch, size = [], 0
        if batch:
            _walk_class(p, lo == hi, batch, out)


_FILLS = (-np.inf, -np.inf, 0.0, False, False, 0.0, 0.0, 0)
"""The padding of a wider class of K, per field of _evaluate's pieces (ee, cc, w, dirty, dead,
nmi, w2, cpu): a CPU that cleared at -inf."""


def _walk_class(p: Params, exact: bool, pieces: list[tuple], out: tuple[np.ndarray, ...]) -> None:
    """The walk of one batch of a class of K (_evaluate): pieces of (rows, K, fields, H)."""
    if len(pieces) == 1:
        rr, nk, cols, h = pieces[0]
    else:
        rr = np.concatenate([x[0] for x in pieces])
        nk = np.concatenate([x[1] for x in pieces])
        cols = [np.concatenate([x[2][j] for x in pieces]) for j in range(len(_FILLS))]
        h = pieces[0][3] if isinstance(pieces[0][3], float) else np.concatenate([x[3] for x in pieces])
    r = rr.size
    kmax = int(nk.max())
    shape = (r, kmax)
    if exact:  # one K: the slices reshaped
        grids = [v.reshape(shape) for v in cols]
    else:
        row = np.repeat(np.arange(r), nk)
        col = np.arange(row.size) - (np.cumsum(nk) - nk)[row]
        grids = []
        for v, fill in zip(cols, _FILLS):
            g = np.full(shape, fill, dtype=v.dtype)
            g[row, col] = v
            grids.append(g)
    ee_g, cc_g, w_g, dirty_g, dead_g, nmi, w2, ids = grids
    args = (ee_g, cc_g, w_g, dirty_g, dead_g)
    if kmax <= WALK_COLUMNS:  # column by column
        o, td, ns, nr, ov, fr = late_walk(p, *args, nmi, w2, h)
    else:  # many late CPUs a trial: core.vectorized's walk, vectorized across them (the same, to the bit)

        def supply(rows2: np.ndarray, cols2: np.ndarray, nmi=nmi, w2=w2) -> tuple[np.ndarray, np.ndarray]:
            return nmi[rows2, cols2], w2[rows2, cols2]

        def handed(h: float | np.ndarray = h) -> float | np.ndarray:
            return h

        o, td, ns, nr, ov, fr = _phase2(p, np.arange(r), *args, supply, handed)
    flat = ids.ravel()  # (trials x kmax, row-major)
    fr = np.where(fr > 0, np.take(flat, np.arange(0, flat.size, kmax) + np.maximum(fr - 1, 0)), -1)
    for dst, v in zip(out, (o, td, ns, nr, ov, fr)):
        dst[rr] = v
