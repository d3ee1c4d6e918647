"""MODEL.md phase 2 over the late CPUs alone, column by column.

The walk of core.vectorized (`_phase2`) works on every remote CPU of a trial and finds the
CPUs sent an NMI among them; the late sampler's trials have only a few late CPUs (the others
cleared by T1 < T_nmi, so they are never sent one, never move the send clock, and their
f_i = c_i <= T1 < T_loop never matters), so this walks the K late CPUs of a class of trials in
ascending CPU id, one column (one CPU of every trial) at a time. Same rule, same floating
point: the send clock is the same running sum (`s + step` or `s + 0.0`), and the four cases of
the final clear are core.vectorized's own `final_clear`. tests/test_late_walk.py checks it
equals `_phase2` to the bit on random trials.
"""

from __future__ import annotations

import numpy as np

from core.outcomes import HANG, NMI_CLEAN, RACE, TIMEOUT
from core.params import Params
from core.vectorized import final_clear, stop_outcome


def late_walk(p: Params, e: np.ndarray, c: np.ndarray, w: np.ndarray, dirty: np.ndarray, dead: np.ndarray,
              nmi: np.ndarray, w2: np.ndarray, handover: float | np.ndarray) -> tuple[np.ndarray, ...]:
    """(outcome, t_done, nmi_sent, racers, overlap, first column + 1 or -1) of trials whose late
    CPUs are the columns of (trials x K) arrays in ascending CPU id; padding columns have
    c = -inf (never sent, never the maximum). nmi and w2 are every column's NMI-path draws;
    `handover` is H (core.vectorized.hand_over), one value or one per trial."""
    r, k = c.shape
    step = p.nmi_send_us
    s = np.full(r, p.t_nmi_us)
    nsent = np.zeros(r, np.int32)
    big_f = np.full(r, -np.inf)
    racer: list[np.ndarray] = []  # per column: a racer (sent, alive, NMI after its clear)
    end: list[np.ndarray] = []  # per column: a + h, when its NMI-path WBINVD ends
    for j in range(k):
        cj, dj, deadj = c[:, j], dirty[:, j], dead[:, j]
        sent = cj > s
        a = s + nmi[:, j]
        h = np.where(dj, p.prologue_us + w2[:, j], p.prologue_us)
        f = np.where(sent, final_clear(p, a, e[:, j], cj, w[:, j], dj, deadj, h), cj)
        np.maximum(big_f, f, out=big_f)
        racer.append(sent & ~deadj & (a >= cj))
        a += h
        end.append(a)
        nsent += sent
        s = s + np.where(sent, step, 0.0)
    t_loop = s
    t_done, hang, timeout = stop_outcome(p, t_loop, big_f)
    # the reductions over the columns, one column at a time (max and counts: exact in any order)
    n_racers = np.zeros(r, np.int32)
    over = np.full(r, -np.inf)
    alive = ~hang  # a hang has no T_done: no overlap, no race
    for j in range(k):
        n_racers += racer[j]
        racer[j] &= alive
        np.maximum(over, np.where(racer[j], end[j] - t_done, -np.inf), out=over)
    overlap = np.where((n_racers > 0) & alive, over, np.nan)
    limit = t_done + handover
    race = np.zeros(r, dtype=bool)
    first = np.full(r, -1, np.int32)
    for j in range(k - 1, -1, -1):  # the first racing column wins: walked from the last
        rj = racer[j] & (end[j] > limit)
        race |= rj
        np.copyto(first, j + 1, where=rj)
    race &= alive
    np.copyto(first, -1, where=~race)
    outcome = np.full(r, NMI_CLEAN, np.uint8)  # np.select's priority: hang, race, timeout
    np.copyto(outcome, TIMEOUT, where=timeout)
    np.copyto(outcome, RACE, where=race)
    np.copyto(outcome, HANG, where=hang)
    return outcome, t_done, nsent, n_racers, overlap, first
