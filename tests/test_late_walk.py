"""The late CPUs' walk (core.estimators.late.walk) equals core.vectorized's phase 2 to the bit.

Random trials of K late CPUs in ascending id (some padding with c = -inf, as the sampler
pads its classes), built to hit every case: clears before T_nmi (reported, never sent),
during the walk (skipped: the clock depends on earlier sends), ties of c with the send clock,
NMIs before entry, in the prologue, during WBINVD and after the clear (racers), dead CPUs,
both waits. Every output must be identical (NaN where NaN), and first_racer_cpu the same
column.
"""

from __future__ import annotations

import numpy as np
import pytest

from core.estimators.late.walk import late_walk
from core.params import make_params
from core.vectorized import _phase2


def trials(p, r: int, k: int, seed: int):
    rng = np.random.default_rng(seed)
    t_nmi, step = p.t_nmi_us, p.nmi_send_us
    kind = rng.integers(0, 5, (r, k))
    c = np.where(kind == 0, p.t1_us + rng.uniform(0, p.console_us, (r, k)),  # reported before the walk
                 np.where(kind == 1, t_nmi + step * rng.integers(0, k + 1, (r, k)),  # ties with the clock
                          t_nmi + rng.exponential(50.0 * step, (r, k))))  # during or after the walk
    dirty = rng.random((r, k)) < 0.6
    w = np.where(dirty, rng.lognormal(np.log(300.0), 0.5, (r, k)), 0.0)
    e = c - p.prologue_us - w
    dead = rng.random((r, k)) < 0.05
    c = np.where(dead, np.inf, c)
    nmi = p.nmi_base_us + rng.exponential(rng.choice([3.0, 300.0]), (r, k))
    w2 = rng.lognormal(np.log(300.0), 0.5, (r, k))
    pad = rng.integers(0, k + 1, r)  # the last columns of some trials are padding
    padded = np.arange(k)[None, :] >= np.maximum(pad, 1)[:, None]
    c = np.where(padded, -np.inf, c)
    e = np.where(padded, -np.inf, e)
    return e, c, w, dirty & ~padded, dead & ~padded, nmi, w2


@pytest.mark.parametrize("k", [1, 2, 3, 7])
@pytest.mark.parametrize("kw", [dict(), dict(wait=0), dict(handoff_us=5.0, nmi_send_us=20.0),
                                dict(mitigation="early_flush", wait=0, nmi_wait_us=300.0)])
def test_walk_equals_phase2(kw, k):
    p = make_params(dict(n_cpus=64, **kw))
    e, c, w, dirty, dead, nmi, w2 = trials(p, 4000, k, 7 * k + len(kw))

    def supply(rows, cols):
        return nmi[rows, cols], w2[rows, cols]

    # H: revision 2's per-trial hand-over (CPU 0's own WBINVD where flagged) or one value
    rng = np.random.default_rng(k)
    h = p.handoff_us + np.where(rng.random(c.shape[0]) < 0.5, rng.lognormal(np.log(300.0), 0.5, c.shape[0]), 0.0) \
        if k % 2 else float(p.handoff_us)
    want = _phase2(p, np.arange(c.shape[0]), e, c, w, dirty, dead, supply, lambda: h)
    got = late_walk(p, e, c, w, dirty, dead, nmi, w2, h)
    names = ("outcome", "t_done", "nmi_sent", "racers", "overlap", "first")
    for name, g, x in zip(names, got, want):
        assert np.array_equal(g, x, equal_nan=True), name
    assert len(set(want[0].tolist())) >= 2  # several outcomes among the trials
