"""The late estimator's interface: chunks of its own random stream, counts like naive, replay.

Where the late sampler does not apply to a point (`errors.Unrepresentable`: a law it cannot
tabulate to its stated accuracy) the point runs the naive path, stream and all, and its
rows say so in the `estimator` column: FALLBACK ("late->naive").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from core.draws import Draws
from core.estimators.base import Chunk, Estimator, Replayed, ShardSummary
from core.estimators.late.chunk import CHUNK_TRIALS, ChunkRecord, chunk_layout, simulate_chunk
from core.estimators.late.errors import Unrepresentable
from core.estimators.late.plan import LatePlan, plan_for
from core.estimators.naive import NaiveEstimator
from core.params import Params
from core.vectorized import chunk_seed

NAME = "late"
FALLBACK = "late->naive"
"""The `estimator` column of a late sweep's point that ran the naive path (see the module docstring)."""

LATE_STREAM_VERSION = 1
"""Bump whenever the late estimator's mapping from (seed, trial) to draws changes (chunk size,
group size, draw order, a plan's tables); recorded in a late sweep's plan, so resuming across a
change is refused. The naive and cmc streams have their own (core.vectorized.STREAM_VERSION)."""

_NAIVE = NaiveEstimator()


@dataclass(frozen=True)
class LateTrial:
    """One trial as the late sampler drew it (for replay): the late CPUs explicitly, the other
    CPUs only through their count and the maximum of their clear times."""

    late_cpus: int  # K
    cpu: list[int]  # their ids
    t_max_us: float | None  # max clear time of the other CPUs (None if every CPU is late)
    others: int  # n_cpus - 1 - K
    counts: dict[str, int]  # the other CPUs per component ("dirty/short", ...)


class LateEstimator(Estimator):
    name = NAME
    stream_version = LATE_STREAM_VERSION
    help = (
        "count outcomes like naive, drawing only the CPUs that miss the 1 s wait (and the maximum "
        "of the others' clear times) from the exact laws: 30-500x faster at realistic parameters "
        "(core/README.md); points it cannot represent run naive (estimator column late->naive)"
    )

    def plan(self, p: Params) -> LatePlan | None:
        """The point's plan, None where the naive path runs."""
        try:
            return plan_for(p)
        except Unrepresentable:
            return None

    def column(self, p: Params) -> str:
        """The `estimator` column of this point's rows."""
        return NAME if self.plan(p) is not None else FALLBACK

    def chunks(self, p: Params, n_trials: int, seed: np.random.SeedSequence) -> Iterator[Chunk]:
        plan = self.plan(p)
        if plan is None:
            yield from _NAIVE.chunks(p, n_trials, seed)
            return
        for c, start, size in chunk_layout(n_trials):
            batch, _ = simulate_chunk(plan, size, chunk_seed(seed, c))
            yield Chunk(start, batch)

    def new_summary(self) -> ShardSummary:
        return ShardSummary(self.name)

    def run_shard(
        self, p: Params, n_trials: int, seed: np.random.SeedSequence, on_chunk: Callable[[Chunk], None] | None = None
    ) -> ShardSummary:
        acc = ShardSummary(self.column(p))
        for chunk in self.chunks(p, n_trials, seed):
            if on_chunk is not None:
                on_chunk(chunk)
            acc.add(chunk)
        return acc

    def replay(self, p: Params, n_trials: int, seed: np.random.SeedSequence, trial: int) -> Replayed:
        plan = self.plan(p)
        if plan is None:
            return _NAIVE.replay(p, n_trials, seed, trial)
        if not 0 <= trial < n_trials:
            raise ValueError(f"trial = {trial} is outside the shard's trials [0, {n_trials})")
        c, i = divmod(trial, CHUNK_TRIALS)
        size = min(CHUNK_TRIALS, n_trials - c * CHUNK_TRIALS)
        batch, rec = simulate_chunk(plan, size, chunk_seed(seed, c), record=True, only_group_of=i)
        assert rec is not None
        return Replayed(trial_draws(plan, rec, i, float(batch.preflush_us[i])), batch.row(i), late_trial(plan, rec, i))


def late_trial(plan: LatePlan, rec: ChunkRecord, i: int) -> LateTrial:
    """What the late sampler drew for trial i of a recorded chunk."""
    sel = rec.late.trial == i
    k = int(rec.k[i])
    names = [f"{'dirty' if c.d else 'clean'}/{'stall' if c.stall else 'short'}" for c in plan.comps]
    t_max = float(rec.t_max[i]) if k < plan.m else None
    return LateTrial(k, [int(x) for x in rec.late.cpu[sel]], t_max, plan.m - k,
                     {n: int(rec.counts[j, i]) for j, n in enumerate(names)})


def trial_draws(plan: LatePlan, rec: ChunkRecord, i: int, preflush: float = float("nan")) -> Draws:
    """Draws of every remote CPU of trial i that give the scalar reference the same trial: the
    late CPUs' own draws at their ids; the others are stand-ins that clear without a WBINVD at
    the bottom of the law, one of them exactly at T_max (and, under the early flush, carrying
    preflush_us: revision 1, as CPU 1's flagged WBINVD; revision 2, as CPU 1's irqs-off time in
    the flush IPI, CPU 0 unflagged since the maximum includes its flush; revision 2 without the
    early flush: CPU 0's drawn flag and WBINVD)."""
    p = plan.p
    m = plan.m
    sel = np.flatnonzero(rec.late.trial == i)
    ipi = np.full(m, float(p.ipi_base_us))
    off = np.zeros(m)
    dirty = np.zeros(m, bool)
    w = np.zeros(m)
    w2 = np.full(m, np.nan)
    nmi = np.full(m, np.nan)
    dead = np.zeros(m, bool)
    hold = np.full(m, np.nan)
    lc = rec.late
    cols = lc.cpu[sel] - 1
    ipi[cols], off[cols], dead[cols] = lc.ipi[sel], lc.off[sel], lc.dead[sel]
    dirty[cols], w[cols] = lc.dirty[sel], np.where(lc.dirty[sel], lc.w[sel], np.nan)
    nmi[cols], w2[cols], hold[cols] = lc.nmi[sel], lc.w2[sel], lc.hold[sel]
    ipi[cols] = np.where(lc.dead[sel], np.nan, ipi[cols])
    off[cols] = np.where(lc.dead[sel], np.nan, off[cols])
    others = np.setdiff1d(np.arange(m), cols)
    if others.size and np.isfinite(rec.t_max[i]):
        j = int(others[0])
        off[j] = stand_in_off(float(rec.t_max[i]), float(p.prologue_us), float(p.ipi_base_us))
    rev2: dict[str, np.ndarray] = {}
    if p.flush_ipi:  # revision 2's early flush IPI: a stand-in's irqs-off carries preflush_us
        ipi_pre, off_pre = np.full(m, float(p.ipi_base_us)), np.zeros(m)
        if np.isfinite(preflush):
            off_pre[0] = preflush
        rev2 = dict(dirty0=np.zeros(1, bool), w0=np.zeros(1), ipi_pre=ipi_pre[None], off_pre=off_pre[None])
    elif p.cpu0_flush:  # CPU 0's own flush in the hand-over (drawn for NMI-phase trials)
        rev2 = dict(dirty0=rec.dirty0[i:i + 1].copy(), w0=np.nan_to_num(rec.w0[i:i + 1], nan=0.0))
    elif p.early_flush_applies and preflush > 0:  # revision 1's: CPU 1's flag carries it (flags do
        dirty[0], w[0] = True, preflush  # not enter the stop then)
    return Draws(ipi[None], off[None], dirty[None], w[None], w2[None], nmi[None], dead[None], hold[None], **rev2)


def stand_in_off(t: float, prologue: float, base: float) -> float:
    """An irqs-off time x >= base with fl(x + prologue) == t (the nearest double to it otherwise)."""
    x = max(t - prologue, base)
    for _ in range(8):
        got = x + prologue
        if got == t:
            break
        x = float(np.nextafter(x, np.inf if got < t else -np.inf))
    return x
