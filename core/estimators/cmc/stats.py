"""The cmc estimator's per-trial values, their accumulation and combination, and intervals.

Per-trial cmc values (`CmcBatch`) are bounded (0 <= Y <= n_cpus) and mostly tiny; these
helpers fold chunks into running moments, merge shards into exactly what one pass over
all trials gives, and turn (mean, variance of the mean, n) into an interval that is
never negative and never of zero width. See core.estimators.cmc.walk for the estimator itself,
and core.intervals for how these intervals enter the reported metrics (only p_race's is used
as is; p_bad's adds the counted hang/timeout part).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from core.stats import z_value

FP_REL = 1e-9
"""Relative floor of every cmc interval half-width (see `estimate_interval`)."""

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
        r, b, s, k, f = (getattr(self, f)[t : t + 1].copy() for f in _CMC_FIELDS)
        return CmcBatch(r, b, s, k, f, self.n_cpus)

    @staticmethod
    def concat(parts: list["CmcBatch"]) -> "CmcBatch":
        """One batch from consecutive batches, in order."""
        r, b, s, k, f = (np.concatenate([getattr(x, f) for x in parts]) for f in _CMC_FIELDS)
        return CmcBatch(r, b, s, k, f, parts[0].n_cpus)

    @staticmethod
    def empty(n_cpus: int) -> "CmcBatch":
        """A batch of no trials."""
        e, i = np.zeros(0), np.zeros(0, np.int32)
        return CmcBatch(e, e.copy(), e.copy(), i, i.copy(), n_cpus)



def combine(parts: Iterable[tuple[int, float, float]]) -> tuple[int, float, float]:
    """Estimates of shards -> one: (n, mean, variance of the mean) each.

    Exactly what one pass over all N = sum n_k trials gives: mean = sum n_k mean_k / N,
    and the pooled sample variance (within-shard sums of squares, n_k (n_k - 1) var_k,
    plus between-shard n_k (mean_k - mean)^2) over N - 1, divided by N. The SQL of the
    `outcomes` view uses the same formula. Shards with n = 0 are skipped.
    """
    parts = [(int(n), float(mu), float(v)) for n, mu, v in parts if n > 0]
    big_n = sum(n for n, _, _ in parts)
    if big_n == 0:
        return 0, float("nan"), float("nan")
    mean = sum(n * mu for n, mu, _ in parts) / big_n
    if big_n < 2:
        return big_n, mean, 0.0
    ss = sum(n * (n - 1) * (v if n > 1 else 0.0) + n * (mu - mean) ** 2 for n, mu, v in parts)
    return big_n, mean, ss / (big_n - 1) / big_n


def estimate_interval(
    mean: float, var_of_mean: float, n: int, conf: float = 0.95, y_max: float = 1.0, event_bound: bool = True
) -> tuple[float, float]:
    """Confidence interval (lo, hi) for E[Y] from n iid per-trial values Y in [0, y_max].

    - Normal (CLT) interval mean +- z sqrt(var_of_mean) when the sample variance is > 0.
    - Floor FP_REL * mean on the half-width: the per-trial values are sums of CDF
      differences computed to ~1e-15 relative, but the model compares floating-point
      clear times near 1e6 µs (ulp ~1.2e-10 µs) against windows of ~1e-1 µs and more,
      so values are only meaningful to ~1e-9 relative.
    - Zero sample variance (all n values equal v, e.g. a forced case, or no trial had
      any chance of racing) or n < 2: the values never seen can only lie in [0, y_max];
      with confidence conf the probability q of a value other than v is below
      1 - ((1 - conf) / 2) ** (1 / n) (the exact binomial bound for 0 events out of n,
      ~3.7/n at 95%), so E[Y] lies in [v (1 - q), v + (y_max - v) q].
    The lower bound is never negative and the interval never has zero width (hi > lo).
    `y_max`: n_cpus - 1 for race and race_sum, n_cpus for bad (CmcSummary passes them).
    `event_bound`: E[Y] is the probability of an event that makes Y > 0 whenever it
    happens in the sampled trial (race, bad: the conditional probability of what was
    seen is positive), so E[Y] <= P(Y > 0). An all-zero sample then bounds E[Y] by q,
    exactly the Clopper-Pearson bound of 0 events in n trials, instead of y_max q: never
    wider than the naive interval of the same trials. True by default: p_race and p_bad
    are the only probabilities stored and queried; pass False for expected counts
    (race_sum, excess), whose per-trial values need not be > 0 with an event.
    """
    if y_max <= 0:
        raise ValueError(f"y_max = {y_max} must be > 0")
    if n <= 0 or not math.isfinite(mean):
        return 0.0, float(y_max)
    if mean > y_max * (1 + 1e-12):
        raise ValueError(f"mean = {mean} exceeds y_max = {y_max}: pass the range of the per-trial values")
    mean = min(max(float(mean), 0.0), float(y_max))
    fp = FP_REL * mean
    z = z_value(conf)
    if n >= 2 and math.isfinite(var_of_mean) and var_of_mean > 0:
        half = max(z * math.sqrt(var_of_mean), fp)
        lo, hi = mean - half, mean + half
    else:
        q = -math.expm1(math.log((1.0 - conf) / 2.0) / n)
        lo = mean * (1.0 - q) - fp
        hi = mean + ((1.0 if event_bound and mean == 0 else y_max) - mean) * q + fp
    lo = max(lo, 0.0)
    hi = min(hi, float(y_max))
    if not hi > lo:  # only when mean == y_max with a floor of 0 width; widen downwards
        lo = max(0.0, math.nextafter(hi, 0.0))
    return lo, hi


@dataclass
class _Moments:
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, x: np.ndarray) -> None:
        k = int(x.size)
        if k == 0:
            return
        mu = float(x.mean())
        m2 = float(((x - mu) ** 2).sum())
        tot = self.n + k
        delta = mu - self.mean
        self.mean += delta * k / tot
        self.m2 += m2 + delta * delta * self.n * k / tot
        self.n = tot

    @property
    def var_of_mean(self) -> float:
        if self.n < 2:
            return float("nan")
        return self.m2 / (self.n - 1) / self.n


_TRACKED = ("race", "bad", "race_sum", "excess")
_EVENTS = ("race", "bad")  # probabilities of an event that makes the value > 0 (estimate_interval)


@dataclass
class CmcSummary:
    """Running cmc estimates over chunks (Chan's parallel mean/variance update).

    `excess` = race_sum - race per trial: its mean estimates the bias E[(N-1)^+] of
    the conservative race_sum estimator.
    """

    n_cpus: int = 0
    moments: dict = field(default_factory=lambda: {k: _Moments() for k in _TRACKED})
    multi_racer_trials: int = 0  # sampled trials with N >= 2 (naive check of the bias)
    naive_race_trials: int = 0  # sampled trials with N >= 1

    def add(self, b: CmcBatch) -> "CmcSummary":
        """Fold one batch in (in place); returns self."""
        self.n_cpus = max(self.n_cpus, int(b.n_cpus))
        self.moments["race"].add(b.race)
        self.moments["bad"].add(b.bad)
        self.moments["race_sum"].add(b.race_sum)
        self.moments["excess"].add(b.race_sum - b.race)
        self.multi_racer_trials += int(np.count_nonzero(b.n_racing >= 2))
        self.naive_race_trials += int(np.count_nonzero(b.n_racing >= 1))
        return self

    @property
    def n(self) -> int:
        return self.moments["race"].n

    @property
    def mean_race(self) -> float:
        return self.moments["race"].mean

    @property
    def var_race(self) -> float:
        """Variance of mean_race (sample variance / n)."""
        return self.moments["race"].var_of_mean

    @property
    def mean_bad(self) -> float:
        return self.moments["bad"].mean

    @property
    def var_bad(self) -> float:
        """Variance of mean_bad (sample variance / n)."""
        return self.moments["bad"].var_of_mean

    @property
    def mean_race_sum(self) -> float:
        return self.moments["race_sum"].mean

    @property
    def var_race_sum(self) -> float:
        return self.moments["race_sum"].var_of_mean

    def y_max(self, name: str) -> float:
        m = max(self.n_cpus - 1, 1)
        return float(m + 1 if name == "bad" else m)

    def interval(self, name: str, conf: float = 0.95) -> tuple[float, float]:
        """estimate_interval of one tracked quantity: race, bad, race_sum or excess (race and
        bad with `event_bound`)."""
        mo = self.moments[name]
        return estimate_interval(mo.mean, mo.var_of_mean, mo.n, conf, self.y_max(name), name in _EVENTS)

    def report(self, conf: float = 0.95) -> dict:
        """Estimates, variances of the mean and intervals of the per-trial values (JSON-able).

        "bad"'s interval here is that of the values themselves, which collapses onto the race part
        when no hang or timeout was seen: it is not the reported p_bad. ShardSummary.report puts
        core.intervals' p_bad (cmc race part + counted hang/timeout part) in its place."""
        out: dict = {"trials": self.n, "conf": conf}
        for name in _TRACKED:
            mo = self.moments[name]
            lo, hi = self.interval(name, conf)
            out[name] = {"p": mo.mean, "var": mo.var_of_mean, "lo": lo, "hi": hi}
        out["multi_racer_trials"] = self.multi_racer_trials
        out["naive_race_trials"] = self.naive_race_trials
        return out


