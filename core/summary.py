"""Per-shard reduction of trial results: what the store keeps per (point, shard).

Summaries add exactly (counts, sums, histograms, max), so chunks reduce into a
shard and shards into a point without keeping per-trial arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .histogram import N_BINS, histogram, quantile
from .outcomes import EVENT_OUTCOMES, OUTCOMES
from .stats import clopper_pearson
from .vectorized import TrialBatch

_EVENT_CODES = np.array([OUTCOMES.index(o) for o in EVENT_OUTCOMES])
_CLEAN, _HANG = OUTCOMES.index("clean"), OUTCOMES.index("hang")


def nmi_phase_count(b: TrialBatch, counts: np.ndarray) -> int:
    """Trials that reached the NMI phase, given the batch's outcome counts: every trial that is not
    clean, except revision 2's hangs in the early flush (a dead CPU never took its IPI, so no stop
    ran). Those are exactly the hangs with no NMI sent: a hang in the stop needs a dead CPU, which
    is always sent one (so the per-trial test is only needed where a trial hung)."""
    in_flush = int(np.count_nonzero((b.outcome == _HANG) & (b.nmi_sent == 0))) if counts[_HANG] else 0
    return len(b) - int(counts[_CLEAN]) - in_flush


def _finite(x: np.ndarray) -> np.ndarray:
    """The finite values of x, in order (x itself when all are: no copy)."""
    ok = np.isfinite(x)
    return np.ascontiguousarray(x) if ok.all() else x[ok]


@dataclass
class Summary:
    """Counts per outcome, NMI-phase count, stop-time sum/max/histogram over finite stops, and the
    same sum/max/histogram of `preflush_us` over the trials that have one (the fix's cost)."""

    trials: int = 0
    counts: np.ndarray = field(default_factory=lambda: np.zeros(len(OUTCOMES), np.int64))
    nmi_phase: int = 0
    t_done_sum_us: float = 0.0
    t_done_max_us: float = float("nan")
    hist: np.ndarray = field(default_factory=lambda: np.zeros(N_BINS, np.int64))
    preflush_sum_us: float = 0.0
    preflush_max_us: float = float("nan")
    preflush_hist: np.ndarray = field(default_factory=lambda: np.zeros(N_BINS, np.int64))

    def add(self, b: TrialBatch) -> "Summary":
        """Fold one batch in (in place); returns self."""
        self.trials += len(b)
        c = np.bincount(b.outcome, minlength=len(OUTCOMES)).astype(np.int64)
        self.counts += c
        self.nmi_phase += nmi_phase_count(b, c)
        t = _finite(b.t_done_us)
        if t.size:
            self.t_done_sum_us += float(t.sum())
            self.t_done_max_us = float(np.fmax(self.t_done_max_us, t.max()))
        self.hist += histogram(t, finite=True)
        pf = _finite(b.preflush_us)
        if pf.size:
            self.preflush_sum_us += float(pf.sum())
            self.preflush_max_us = float(np.fmax(self.preflush_max_us, pf.max()))
            self.preflush_hist += histogram(pf, finite=True)
        return self

    def count(self, outcome: str) -> int:
        """Trials with this outcome."""
        return int(self.counts[OUTCOMES.index(outcome)])

    @property
    def finite(self) -> int:
        """Trials with a stop time (all but hangs)."""
        return int(self.hist.sum())

    @property
    def preflushed(self) -> int:
        """Trials with a preflush_us (early flush ran and finished)."""
        return int(self.preflush_hist.sum())

    def report(self, conf: float = 0.95) -> dict:
        """Counts, probabilities with exact (Clopper-Pearson) intervals, stop-time mean/p50/p99/p999 (JSON-able)."""
        n = self.trials
        probs = {}
        for name, k in [(o, self.count(o)) for o in OUTCOMES] + [("bad", self.bad)]:
            lo, hi = clopper_pearson(k, n, conf)
            probs[name] = {"k": k, "p": k / n if n else float("nan"), "lo": lo, "hi": hi}
        fin = self.finite
        return {
            "trials": n,
            "counts": {o: self.count(o) for o in OUTCOMES},
            "nmi_phase": self.nmi_phase,
            "p": probs,
            "t_done_us": {
                "mean": self.t_done_sum_us / fin if fin else float("nan"),
                "p50": quantile(self.hist, 0.5, self.t_done_max_us),
                "p99": quantile(self.hist, 0.99, self.t_done_max_us),
                "p999": quantile(self.hist, 0.999, self.t_done_max_us),
                "max": self.t_done_max_us,
            },
            "preflush_us": self.preflush_report(),
        }

    def preflush_report(self) -> dict:
        """The early flush's time per kexec over the trials that ran it: mean, p50, p99 (from the
        fixed bins, like stop times) and max; every value None where none did (mitigation none)."""
        k = self.preflushed
        if not k:
            return {"trials": 0, "mean": None, "p50": None, "p99": None, "max": None}
        mx = self.preflush_max_us
        return {"trials": k, "mean": self.preflush_sum_us / k, "p50": quantile(self.preflush_hist, 0.5, mx),
                "p99": quantile(self.preflush_hist, 0.99, mx), "max": mx}

    @property
    def bad(self) -> int:
        """race + hang + timeout trials."""
        return int(sum(self.count(o) for o in EVENT_OUTCOMES))


def event_mask(b: TrialBatch) -> np.ndarray:
    """Trials that get an `events` row (race, hang or timeout)."""
    return np.isin(b.outcome, _EVENT_CODES)
