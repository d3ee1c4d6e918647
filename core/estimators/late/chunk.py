"""One chunk of the late estimator's random stream -> per-trial results (and, for replay, its draws).

Stream layout (LATE_STREAM_VERSION; core/README.md "The late estimator"): a shard is cut into
chunks of CHUNK_TRIALS trials; chunk c draws from `new_generator(chunk_seed(seed, c))`:

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
given c > T1, then their NMI-path draws (`core.draws.draw_nmi_path`, as naive). The NMI walk
and the outcome are core.vectorized's own (`_phase2`) over the late CPUs only: the others
cleared by T1 < T_nmi, so they are never sent an NMI, never move the send clock, and their
f_i = c_i <= T1 < T_loop never matters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.draws import draw_nmi_path, new_generator
from core.estimators.late.plan import LatePlan
from core.outcomes import CLEAN
from core.params import Params
from core.vectorized import TrialBatch, _phase2, chunk_seed

CHUNK_TRIALS = 1 << 16
"""Trials per chunk (part of the stream layout)."""
GROUP_SLOTS = 1 << 17
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
    counts = np.zeros((ncomp, n), np.int64)
    if plan.counts is not None:  # (K, minor counts) jointly, one uniform a trial
        k, minor = plan.counts.draw(rng.random(n))
        rest = plan.m - k
        for j, i in enumerate(plan.minors):
            counts[i] = minor[j]
            rest = rest - minor[j]
    else:  # K from one exponential, then each minor count given the ones before
        k = plan.late_count(rng.standard_exponential(n))
        rest = plan.m - k
        p_rest = 1.0
        for i in plan.minors:
            pk = min(1.0, plan.pi[i] / p_rest) if p_rest > 0 else 1.0
            counts[i] = rng.binomial(rest, pk)
            rest = rest - counts[i]
            p_rest -= plan.pi[i]
    if ncomp:
        counts[plan.major] += rest
    t_max = np.full(n, -np.inf)
    for i, comp in enumerate(plan.comps):
        rows = np.flatnonzero(counts[i] > 0)
        if not rows.size:
            continue
        if comp.table is not None:
            e = rng.standard_exponential(rows.size)
            t_max[rows] = np.maximum(t_max[rows], comp.table.sample_max(counts[i][rows], e))
        else:  # few expected: one by one
            ni = counts[i][rows]
            c = comp.draw_nonlate(rng, int(ni.sum()), float(p.t1_us))
            starts = np.concatenate([[0], np.cumsum(ni)[:-1]])
            t_max[rows] = np.maximum(t_max[rows], np.maximum.reduceat(c, starts))
    if plan.preflush is None:
        preflush = np.full(n, np.nan)
    elif isinstance(plan.preflush, float):
        preflush = np.full(n, plan.preflush)
    else:
        preflush = plan.preflush.sample_max(plan.m, rng.standard_exponential(n))

    outcome = np.full(n, CLEAN, np.uint8)
    t_done = np.where(k == 0, t_max, np.nan)
    nmi_sent = np.zeros(n, np.int32)
    racers = np.zeros(n, np.int32)
    overlap = np.full(n, np.nan)
    first = np.full(n, -1, np.int32)
    late_parts: list[LateCpus] = []
    rows = np.flatnonzero(k > 0)
    if rows.size:
        for g, grp in enumerate(_groups(rows, k[rows])):
            if only_group_of is not None and only_group_of not in grp:
                continue
            lc = _draw_group(plan, grp, k[grp], new_generator(chunk_seed(seed, g)))
            r = _evaluate(p, grp, lc)
            outcome[grp], t_done[grp], nmi_sent[grp], racers[grp], overlap[grp], first[grp] = r
            if record:
                late_parts.append(lc)
    batch = TrialBatch(outcome, t_done, nmi_sent, racers, overlap, first, preflush)
    rec = ChunkRecord(k, t_max, counts, LateCpus.concat(late_parts)) if record else None
    return batch, rec


def _groups(rows: np.ndarray, k: np.ndarray) -> list[np.ndarray]:
    """Consecutive NMI-phase trials with at most GROUP_SLOTS late CPUs per group (a trial alone
    may exceed it only if it has more late CPUs than that, which n_cpus <= 65536 rules out)."""
    cum = np.cumsum(k)
    out = []
    start = 0
    while start < rows.size:
        base = cum[start - 1] if start else 0
        end = int(np.searchsorted(cum, base + GROUP_SLOTS, side="right"))
        end = max(end, start + 1)
        out.append(rows[start:end])
        start = end
    return out


def draw_ids(rng: np.random.Generator, m: int, k: np.ndarray) -> np.ndarray:
    """For each trial a uniform k-subset of 1..m, sorted, concatenated in trial order.

    Trials with k^2 <= 2m: k uniform ids, the trial drawn again while two coincide (accepted
    with prob. >= e^-1); the others: the first k of a uniform random order of the m ids (random
    keys, argsort), in blocks of at most 2^20 keys."""
    out = np.empty(int(k.sum()), np.int64)
    offs = np.concatenate([[0], np.cumsum(k)])
    sparse = np.flatnonzero(k * k <= 2 * m)
    todo = sparse
    while todo.size:
        kk = k[todo]
        tot = int(kk.sum())
        owner = np.repeat(np.arange(todo.size), kk)
        key = np.sort(owner * (m + 1) + rng.integers(1, m + 1, size=tot))  # trial-major, sorted in a trial
        own = key // (m + 1)
        dup = np.zeros(todo.size, bool)
        same = key[1:] == key[:-1]
        dup[own[1:][same]] = True
        keep = ~dup[own]
        rank = np.arange(tot) - np.concatenate([[0], np.cumsum(kk)[:-1]])[own]
        out[offs[todo[own[keep]]] + rank[keep]] = key[keep] % (m + 1)
        todo = todo[dup]
    dense = np.flatnonzero(k * k > 2 * m)
    per = max(1, (1 << 20) // m)
    for b in range(0, dense.size, per):
        blk = dense[b:b + per]
        order = np.argsort(rng.random((blk.size, m)), axis=1) + 1
        take = np.arange(m)[None, :] < k[blk][:, None]
        row = np.repeat(np.arange(blk.size), k[blk])
        key = np.sort(row * (m + 1) + order[take])
        rank = np.arange(key.size) - np.concatenate([[0], np.cumsum(k[blk])[:-1]])[row]
        out[offs[blk][row] + rank] = key % (m + 1)
    return out


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
            ipi[idx[ok]], off[idx[ok]], w[idx[ok]] = a[ok], o[ok], (ww[ok] if c.d else 0.0)
            dirty[idx[ok]] = bool(c.d)
            idx = idx[~ok]
    nmi, w2, hold = draw_nmi_path(rng, p, s)
    return LateCpus(trial, cpu, dead, comp, ipi, off, dirty, w, nmi, w2, hold)


def _evaluate(p: Params, rows: np.ndarray, lc: LateCpus) -> tuple[np.ndarray, ...]:
    """MODEL.md phase 2 over the late CPUs of the trials `rows`: core.vectorized's walk on
    (trials x late CPUs) arrays, columns in ascending CPU id. Trials are evaluated in classes of
    K (1, 2, 3-4, 5-8, ...) so the padding (CPUs that cleared at -inf: never sent, never the
    maximum) stays below half of each array."""
    r = rows.size
    local = np.searchsorted(rows, lc.trial)
    kk = np.bincount(local, minlength=r)
    start = np.concatenate([[0], np.cumsum(kk)[:-1]])
    ee = np.maximum(lc.ipi, lc.off)
    cc = ee + p.prologue_us
    cc = np.where(lc.dirty, cc + lc.w, cc)
    cc = np.where(lc.dead, np.inf, cc)
    outcome = np.empty(r, np.uint8)
    t_done = np.empty(r)
    nsent = np.empty(r, np.int32)
    nracers = np.empty(r, np.int32)
    overlap = np.empty(r)
    first = np.empty(r, np.int32)
    width = 1
    while True:
        cls = np.flatnonzero((kk <= width) & (kk > width // 2))
        if cls.size:
            kmax = int(kk[cls].max())
            nk = kk[cls]
            row = np.repeat(np.arange(cls.size), nk)
            col = np.arange(row.size) - np.repeat(np.concatenate([[0], np.cumsum(nk)[:-1]]), nk)
            src = np.repeat(start[cls], nk) + col  # the class's late CPUs, trial by trial
            shape = (cls.size, kmax)

            def grid(v: np.ndarray, fill, shape=shape, row=row, col=col, src=src) -> np.ndarray:
                g = np.full(shape, fill, dtype=v.dtype)
                g[row, col] = v[src]
                return g

            nmi, w2 = grid(lc.nmi, 0.0), grid(lc.w2, 0.0)

            def supply(rr: np.ndarray, cols: np.ndarray, nmi=nmi, w2=w2) -> tuple[np.ndarray, np.ndarray]:
                return nmi[rr, cols], w2[rr, cols]

            res = _phase2(p, np.arange(cls.size), grid(ee, -np.inf), grid(cc, -np.inf), grid(lc.w, 0.0),
                          grid(lc.dirty, False), grid(lc.dead, False), supply)
            ids = grid(lc.cpu, 0)
            o, td, ns, nr, ov, fr = res
            fr = np.where(fr > 0, ids[np.arange(cls.size), np.maximum(fr - 1, 0)], -1)
            outcome[cls], t_done[cls], nsent[cls], nracers[cls], overlap[cls], first[cls] = o, td, ns, nr, ov, fr
        if width >= kk.max():
            break
        width *= 2
    return outcome, t_done, nsent, nracers, overlap, first
