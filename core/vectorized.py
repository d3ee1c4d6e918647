"""The vectorized stop-race simulator: MODEL.md over NumPy arrays of (trials x CPUs).

Trials are processed in chunks of about CHUNK_ELEMS CPU-trials so memory stays
bounded whatever n_cpus and n_trials are. Phase 1 (REBOOT vector) is evaluated
for every trial; only trials that miss the 1 s wait go through the NMI walk,
itself vectorized over those trials. The NMI-path draws are made lazily, only for
CPUs that actually get an NMI.

Randomness: chunk c of a shard seeded by SeedSequence S uses its own stream
`SeedSequence(S.entropy, spawn_key=S.spawn_key + (c,))`, and the chunk size is a
function of n_cpus alone, so any trial is replayed by recomputing one chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .draws import Draws, Rev2Draws, draw_nmi_path, draw_phase1, draw_rev2, new_generator
from .outcomes import CLEAN, HANG, NMI_CLEAN, RACE, TIMEOUT
from .params import Params

CHUNK_ELEMS = 1 << 17
"""Per-CPU draw slots per chunk (trials x (n_cpus - 1) array elements; not core.cost CPU-trials).
Part of the random-stream layout: changing it changes results."""

STREAM_VERSION = 3
"""Bump whenever the mapping from (seed, trial) to draws changes (chunk size, bit generator,
draw order, lazy draws): results dirs record it, and resuming across a change is refused.
Model revision 2 did not bump it: a revision-1 point draws exactly what it did, and a revision-2
point (a new parameter value, so a new point id and seed) appends its draws after those
(core/README.md, "Random streams")."""

# (flat positions of the CPUs that got an NMI, in row-major order) -> (nmi, w2) for them;
# nmi is the whole latency a_i - s_i, hold-off included
NmiSupplier = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class TrialBatch:
    """Per-trial results. Nulls: NaN for floats, -1 for first_racer_cpu."""

    outcome: np.ndarray  # uint8 code, see core.outcomes
    t_done_us: np.ndarray  # float64; NaN on hang
    nmi_sent: np.ndarray  # int32
    racers: np.ndarray  # int32
    overlap_us: np.ndarray  # float64; NaN without a racer or on hang
    first_racer_cpu: np.ndarray  # int32; -1 without a race
    preflush_us: np.ndarray  # float64; NaN under mitigation none

    def __len__(self) -> int:
        return len(self.outcome)

    @staticmethod
    def concat(parts: list["TrialBatch"]) -> "TrialBatch":
        """One batch from consecutive batches, in order."""
        return TrialBatch(*(np.concatenate([getattr(b, f) for b in parts]) for f in _BATCH_FIELDS))

    @staticmethod
    def empty() -> "TrialBatch":
        """A batch of no trials."""
        return TrialBatch(
            np.zeros(0, np.uint8), np.zeros(0), np.zeros(0, np.int32), np.zeros(0, np.int32),
            np.zeros(0), np.zeros(0, np.int32), np.zeros(0),
        )

    def row(self, t: int) -> "TrialBatch":
        """Trial t alone, as a batch of one."""
        return TrialBatch(*(getattr(self, f)[t : t + 1] for f in _BATCH_FIELDS))


_BATCH_FIELDS = ("outcome", "t_done_us", "nmi_sent", "racers", "overlap_us", "first_racer_cpu", "preflush_us")


def chunk_trials(p: Params) -> int:
    """Trials per chunk for this point: the stream layout depends on n_cpus only."""
    return max(1, CHUNK_ELEMS // p.n_remote)


def chunk_seed(seed: np.random.SeedSequence, chunk: int) -> np.random.SeedSequence:
    """The SeedSequence of chunk `chunk` of the shard seeded by `seed`."""
    return np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, chunk), pool_size=seed.pool_size)


def shard_seed(point_seed: int, shard: int) -> np.random.SeedSequence:
    """MODEL.md: shard k of a point uses SeedSequence([point_seed, k])."""
    return np.random.SeedSequence([int(point_seed), int(shard)])


def chunk_layout(p: Params, n_trials: int) -> Iterator[tuple[int, int, int]]:
    """(chunk index, first trial, trials) of every chunk of a shard of `n_trials` trials."""
    per = chunk_trials(p)
    for c, start in enumerate(range(0, int(n_trials), per)):
        yield c, start, min(per, int(n_trials) - start)


def locate_trial(p: Params, n_trials: int, trial: int) -> tuple[int, int, int]:
    """(chunk index, index inside the chunk, trials of the chunk) of trial `trial` of a shard."""
    if not 0 <= trial < n_trials:
        raise ValueError(f"trial = {trial} is outside the shard's trials [0, {n_trials})")
    per = chunk_trials(p)
    c, i = divmod(trial, per)
    return c, i, min(per, n_trials - c * per)


def iter_chunks(p: Params, n_trials: int, seed: np.random.SeedSequence) -> Iterator[tuple[int, TrialBatch]]:
    """(first trial index, results) per chunk of one shard, in trial order."""
    for c, start, size in chunk_layout(p, n_trials):
        batch, _ = _simulate_rng_chunk(p, size, new_generator(chunk_seed(seed, c)), record=False)
        yield start, batch


def simulate(p: Params, n_trials: int, seed: np.random.SeedSequence | int) -> TrialBatch:
    """Simulate n_trials independent stops of one point; deterministic in (p, n_trials, seed).

    For many trials prefer iterating `iter_chunks` and reducing each chunk, which
    keeps memory bounded; this collects every per-trial result.
    """
    if not isinstance(seed, np.random.SeedSequence):
        seed = np.random.SeedSequence(seed)
    parts = [b for _, b in iter_chunks(p, int(n_trials), seed)]
    if not parts:
        return TrialBatch.empty()
    return TrialBatch.concat(parts)


def replay_draws(p: Params, n_trials: int, seed: np.random.SeedSequence, trial: int) -> tuple[Draws, TrialBatch]:
    """The exact draws and result of trial `trial` of a shard (recomputes only its chunk)."""
    c, i, size = locate_trial(p, n_trials, trial)
    batch, draws = _simulate_rng_chunk(p, size, new_generator(chunk_seed(seed, c)), record=True)
    assert draws is not None
    return draws.row(i), batch.row(i)


def simulate_draws(p: Params, d: Draws) -> TrialBatch:
    """Evaluate the model on explicit draws (all of them given): for trial-for-trial checks."""

    def supply(rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return d.nmi[rows, cols], d.w2[rows, cols]

    return evaluate(p, d, supply, d.rev2)


def _simulate_rng_chunk(
    p: Params, n: int, rng: np.random.Generator, record: bool
) -> tuple[TrialBatch, Draws | None]:
    d = draw_phase1(rng, p, n, nmi_arrays=record)

    def supply(rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nmi, w2, hold = draw_nmi_path(rng, p, len(rows))
        if record:
            d.nmi[rows, cols] = nmi
            d.w2[rows, cols] = w2
            d.hold[rows, cols] = hold
        return nmi, w2

    extra: list[Rev2Draws] = []

    def rev2() -> Rev2Draws:  # called once, after every NMI-path draw of the chunk
        extra.append(draw_rev2(rng, p, n))
        return extra[0]

    batch = evaluate(p, d, supply, rev2)
    return batch, (d.with_rev2(extra[0]) if record else None)


RevSupplier = Callable[[], Rev2Draws]
"""Gives the revision-2 draws of a chunk (core.draws.draw_rev2); `evaluate` calls it exactly once,
after the NMI-path supplier, so they come last in the stream."""


def hand_over(p: Params, r: Rev2Draws) -> float | np.ndarray:
    """H per trial (MODEL.md, the race rule): handoff_us, plus CPU 0's own WBINVD w_0 where its
    flag is set in revision 2's kexec path without the early flush (`Params.cpu0_flush`)."""
    if not p.cpu0_flush:
        return float(p.handoff_us)
    assert r.dirty0 is not None and r.w0 is not None
    return np.where(r.dirty0, p.handoff_us + r.w0, p.handoff_us)


def preflush(p: Params, d: Draws, r: Rev2Draws) -> np.ndarray:
    """preflush_us per trial: NaN where no early flush runs (or it hangs on a dead CPU).

    Revision 1: max w_i over the CPUs whose flag would be set (0 if none), no IPI. Revision 2 on
    the kexec path (`Params.flush_ipi`): the synchronous function-call IPI waits for every remote CPU
    to take it, max(ipi'_i, off'_i), and then flush for w_i if flagged; CPU 0 flushes alongside, for
    w_0 x the contention factor if flagged."""
    n = d.ipi.shape[0]
    if p.flush_ipi:
        assert r.ipi_pre is not None and r.off_pre is not None and r.dirty0 is not None and r.w0 is not None
        done = np.maximum(r.ipi_pre, r.off_pre)
        if d.dirty.all():
            done += d.w
        elif d.dirty.any():
            np.add(done, d.w, out=done, where=d.dirty)
        out = np.maximum(done.max(axis=1), np.where(r.dirty0, r.w0 * p.wbinvd_contention_factor, 0.0))
        out[d.dead.any(axis=1)] = np.nan
        return out
    if p.early_flush_applies:
        return np.where(d.dirty, d.w, 0.0).max(axis=1)
    return np.full(n, np.nan)


def evaluate(p: Params, d: Draws, supply: NmiSupplier, rev2: RevSupplier | None = None) -> TrialBatch:
    """MODEL.md phases 1 and 2 over a chunk of draws; `supply` gives the NMI-path draws, `rev2`
    the revision-2 draws (called once, after `supply`; None for revision 1, which draws none)."""
    n = d.ipi.shape[0]
    early = p.early_flush_applies
    dirty = np.zeros_like(d.dirty) if early else d.dirty
    got: list[Rev2Draws] = []

    def extra() -> Rev2Draws:
        if not got:
            got.append((rev2() if rev2 is not None else Rev2Draws()).need(p))
        return got[0]

    # Phase 1: e_i = max(ipi_i, off_i); c_i = e_i + prologue + w_i if dirty; inf if dead.
    e = np.maximum(d.ipi, d.off)
    c = e + p.prologue_us
    if dirty.all():
        c += d.w
    elif dirty.any():
        np.add(c, d.w, out=c, where=dirty)
    if d.dead.any():
        c[d.dead] = np.inf
    cmax = c.max(axis=1)
    clean = cmax <= p.t1_us
    # revision 2: a dead CPU never takes the early flush's IPI, so the kexec hangs before the stop
    hung_early = d.dead.any(axis=1) if p.flush_ipi else None  # (such a trial is never clean: c = inf)

    outcome = np.where(clean, CLEAN, NMI_CLEAN).astype(np.uint8)
    t_done = np.where(clean, cmax, np.nan)
    nmi_sent = np.zeros(n, np.int32)
    racers = np.zeros(n, np.int32)
    overlap = np.full(n, np.nan)
    first = np.full(n, -1, np.int32)

    stop = ~clean if hung_early is None else ~clean & ~hung_early
    rows = np.flatnonzero(stop)
    if rows.size:
        def ho() -> float | np.ndarray:
            h = hand_over(p, extra())
            return h if isinstance(h, float) else h[rows]

        r = _phase2(p, rows, e[rows], c[rows], d.w[rows], dirty[rows], d.dead[rows], supply, ho)
        outcome[rows], t_done[rows], nmi_sent[rows], racers[rows], overlap[rows], first[rows] = r
    if hung_early is not None:
        outcome[hung_early] = HANG
    return TrialBatch(outcome, t_done, nmi_sent, racers, overlap, first, preflush(p, d, extra()))


def _send_clock(p: Params, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which CPUs get an NMI and the send clock s_i when each is visited.

    A CPU is sent an NMI iff c_i > s_i, and the clock advances only on a send,
    so s depends on earlier sends. CPUs with c_i <= T_nmi never get one; if every
    other CPU's c_i also exceeds the clock it would see were all of them sent,
    they all are. Only rows where some CPU clears inside the walk itself need the
    sequential walk, done over just those rows and columns.
    """
    t_nmi, step = p.t_nmi_us, p.nmi_send_us
    cand = c > t_nmi
    # s_i assuming every candidate is sent: sequential sums, exactly like `s += step`.
    incr = np.where(cand, step, 0.0)
    acc = np.empty((c.shape[0], c.shape[1] + 1))
    acc[:, 0] = t_nmi
    acc[:, 1:] = incr
    np.add.accumulate(acc, axis=1, out=acc)
    s = acc[:, :-1]
    sent = cand & (c > s)
    amb = np.flatnonzero((sent != cand).any(axis=1))
    if amb.size:
        cols = np.flatnonzero(cand[amb].any(axis=0))
        clock = np.full(amb.size, t_nmi)
        ca = c[amb]
        sa = s[amb]
        sn = np.zeros((amb.size, c.shape[1]), dtype=bool)
        prev = 0
        for j in cols:
            sa[:, prev:j + 1] = clock[:, None]  # non-candidate columns see the same clock
            hit = ca[:, j] > clock
            sn[:, j] = hit
            clock = clock + np.where(hit, step, 0.0)
            prev = j + 1  # type: ignore[assignment]
        sa[:, prev:] = clock[:, None]
        s[amb] = sa
        sent[amb] = sn
    return sent, s


def stop_outcome(p: Params, t_loop: np.ndarray, last_clear: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(t_done, hang, timeout) per trial from the end of the NMI loop and the last CPU's final clear
    (MODEL.md: wait = 1 waits for every CPU, a CPU that never clears hangs the stop; wait = 0 gives up
    nmi_wait_us after the loop, t_done = that deadline). One rule for the naive core and the late walk."""
    done = np.maximum(t_loop, last_clear)
    if p.wait == 1:
        hang = np.isinf(last_clear)
        timeout = np.zeros(len(t_loop), dtype=bool)
        t_done = np.where(hang, np.nan, done)
    else:
        hang = np.zeros(len(t_loop), dtype=bool)
        deadline = t_loop + p.nmi_wait_scaled_us
        timeout = last_clear > deadline
        t_done = np.where(timeout, deadline, done)
    return t_done, hang, timeout


def final_clear(p: Params, a, e, c, w, dirty, dead, h) -> np.ndarray:
    """f_i of CPUs that got an NMI arriving at `a` (MODEL.md phase 2, the four cases)."""
    return np.where(
        dead,
        np.inf,
        np.where(
            a < e + p.prologue_us,  # before entry or in the prologue: the NMI stop is the first flush
            np.where(dirty, a + p.prologue_us + w, a + p.prologue_us),
            np.where(a < c, c + h, c),  # during WBINVD: again after it; after the clear: racer
        ),
    )


def _phase2(
    p: Params,
    rows: np.ndarray,
    e: np.ndarray,
    c: np.ndarray,
    w: np.ndarray,
    dirty: np.ndarray,
    dead: np.ndarray,
    supply: NmiSupplier,
    handover: Callable[[], float | np.ndarray],
) -> tuple[np.ndarray, ...]:
    """The NMI walk and outcome for the trials that missed the REBOOT-vector wait; `handover`
    gives H of these trials (called after `supply`)."""
    r, m = c.shape
    sent, s = _send_clock(p, c)
    nsent = sent.sum(axis=1).astype(np.int32)
    # T_loop = the clock after the last CPU (the same sequential sum as s).
    t_loop = s[:, -1] + np.where(sent[:, -1], p.nmi_send_us, 0.0)

    ri, ci = np.nonzero(sent)
    nmi, w2 = supply(rows[ri], ci)
    a = s[ri, ci] + nmi
    ei, wi, di, ded = e[ri, ci], w[ri, ci], dirty[ri, ci], dead[ri, ci]
    cc = c[ri, ci]
    h = np.where(di, p.prologue_us + w2, p.prologue_us)
    f = final_clear(p, a, ei, cc, wi, di, ded, h)
    is_racer = ~ded & (a >= cc)

    ff = c.copy()
    ff[ri, ci] = f
    F = ff.max(axis=1)
    t_done, hang, timeout = stop_outcome(p, t_loop, F)

    n_racers = np.bincount(ri[is_racer], minlength=r).astype(np.int32)
    is_racer &= ~hang[ri]  # a hang has no T_done: no overlap, no race
    end = (a + h)[is_racer]
    rr, rc = ri[is_racer], ci[is_racer]
    ov = np.full(r, -np.inf)
    np.maximum.at(ov, rr, end - t_done[rr])
    overlap = np.where((n_racers > 0) & ~hang, ov, np.nan)
    H = handover()
    races = end > t_done[rr] + (H if isinstance(H, float) else H[rr])
    first = np.full(r, m + 1, np.int64)
    np.minimum.at(first, rr[races], rc[races] + 1)
    race = (first <= m) & ~hang
    first = np.where(race, first, -1).astype(np.int32)

    outcome = np.select([hang, race, timeout], [HANG, RACE, TIMEOUT], NMI_CLEAN).astype(np.uint8)
    return outcome, t_done, nsent, n_racers, overlap, first
