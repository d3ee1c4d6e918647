"""Shared helpers for the core tests: explicit draws and result comparison."""

from __future__ import annotations

import math

import numpy as np

from core import reference
from core.draws import Draws
from core.outcomes import OUTCOMES
from core.params import Params
from core.vectorized import TrialBatch


def draws_from(p: Params, **cols) -> Draws:
    """A batch of one trial from per-CPU lists (CPU 0's `dirty0` and `w0` as scalars); unspecified
    draws get quiet defaults (CPU 0 clean; the early flush's IPI taken at 1 µs, irqs on)."""
    m = p.n_remote
    base = {
        "dirty0": False,
        "w0": 1000.0,
        "ipi_pre": [1.0] * m,
        "off_pre": [0.0] * m,
        "ipi": [1.0] * m,
        "off": [0.0] * m,
        "dirty": [False] * m,
        "w": [1000.0] * m,
        "w2": [1000.0] * m,
        "nmi": [2.0] * m,
        "dead": [False] * m,
        "hold": [0.0] * m,
    }
    base.update(cols)
    arr = {k: np.array([v], dtype=bool if k in ("dirty", "dead", "dirty0") else float) for k, v in base.items()}
    return Draws(**arr)


def same(x: float | None, y: float) -> bool:
    """Reference value (None = null) equals vectorized value (NaN/-1 = null), exactly."""
    if x is None:
        return bool(np.isnan(y)) if isinstance(y, float) else y == -1
    return x == y


def mismatches(p: Params, d: Draws, b: TrialBatch) -> list[int]:
    """Trial indices where the reference and the vectorized batch disagree in any output."""
    bad = []
    for t in range(len(b)):
        r = reference.simulate_trial(p, d.row(t).to_lists())
        ok = (
            r.outcome == OUTCOMES[b.outcome[t]]
            and same(r.t_done_us, float(b.t_done_us[t]))
            and r.nmi_sent == b.nmi_sent[t]
            and r.racers == b.racers[t]
            and same(r.overlap_us, float(b.overlap_us[t]))
            and same(r.first_racer_cpu, int(b.first_racer_cpu[t]))
            and same(r.preflush_us, float(b.preflush_us[t]))
        )
        if not ok:
            bad.append(t)
    return bad


def isclose(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-9)
