"""Adaptive precision: the stop rule of a point (SCHEMA.md, `trials = "auto"`).

One definition, used by the runner to decide whether a point gets more shards
and by `queries` (the `precision_status` SQL macro is written to match
`decide` operation for operation, and tested against it):

- the estimate and 95% interval are exactly what `outcomes` reports for the
  metric: the pooled cmc estimate (`core.estimators.cmc.stats.combine` + `estimate_interval`)
  where the sweep ran cmc and the metric is one cmc estimates (p_race, p_bad),
  otherwise k/n with the Wilson interval of `stats.wilson`;
- a point with fewer than `min_trials` trials is open; after that, in this order:
  `below target` (hi < target), `above target` (lo > target), `precise`
  (half-width (hi - lo) / 2 <= rel_half_width x p, p > 0), `budget exhausted`
  (trials >= max_trials), else open.

Pure: no I/O, no Ray. `PointTally` pools a point's shards in shard order, so the
result never depends on the order in which shards were completed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .estimators.cmc.stats import combine, estimate_interval
from .stats import wilson

__all__ = [
    "ABOVE",
    "BELOW",
    "CMC_METRICS",
    "DECIDED",
    "EXHAUSTED",
    "METRICS",
    "METRIC_OUTCOMES",
    "OPEN",
    "PRECISE",
    "STATUSES",
    "Estimate",
    "PointTally",
    "Precision",
    "ShardStats",
    "cmc_estimate",
    "cmc_y_max",
    "decide",
    "naive_estimate",
]

METRICS: tuple[str, ...] = ("p_race", "p_bad", "p_hang", "p_timeout")
METRIC_OUTCOMES: dict[str, tuple[str, ...]] = {
    "p_race": ("race",),
    "p_bad": ("race", "hang", "timeout"),
    "p_hang": ("hang",),
    "p_timeout": ("timeout",),
}
"""Which outcome counts make up each metric's naive count (as `outcomes`)."""
CMC_METRICS: dict[str, str] = {"p_race": "race", "p_bad": "bad"}
"""Metrics the cmc estimator estimates (stored as p_<name>_est / p_<name>_var)."""

BELOW = "below target"
ABOVE = "above target"
PRECISE = "precise"
EXHAUSTED = "budget exhausted"
OPEN = "open"
STATUSES: tuple[str, ...] = (BELOW, ABOVE, PRECISE, EXHAUSTED, OPEN)
DECIDED: frozenset[str] = frozenset({BELOW, ABOVE, PRECISE, EXHAUSTED})
"""A point with one of these statuses gets no more shards."""


class Precision(BaseModel):
    """The `[precision]` table of a spec with `trials = "auto"` (validated; min_trials filled in)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: Literal["p_race", "p_bad", "p_hang", "p_timeout"] = "p_bad"
    target: float | None = Field(None, gt=0, lt=1, allow_inf_nan=False)
    rel_half_width: float | None = Field(None, gt=0, allow_inf_nan=False)
    max_trials: int = Field(ge=1)
    min_trials: int = Field(ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> Precision:
        if self.target is None and self.rel_half_width is None:
            raise ValueError("needs target or rel_half_width (or both)")
        if self.min_trials > self.max_trials:
            raise ValueError(f"min_trials = {self.min_trials} exceeds max_trials = {self.max_trials}")
        return self

    def canonical_obj(self) -> dict[str, object]:
        """Every field, None for a criterion not given (part of the spec hash)."""
        return {
            "metric": self.metric,
            "target": self.target,
            "rel_half_width": self.rel_half_width,
            "max_trials": self.max_trials,
            "min_trials": self.min_trials,
        }


@dataclass(frozen=True)
class Estimate:
    """A point's estimate of one metric with its 95% interval (lo <= p <= hi)."""

    p: float
    lo: float
    hi: float
    trials: int
    estimator: str  # "naive" (Wilson) or "cmc"


def naive_estimate(k: int, n: int) -> Estimate:
    """k/n with the 95% Wilson interval (n = 0: p = 0 in [0, 1])."""
    lo, hi = wilson(k, n)
    return Estimate(k / n if n > 0 else 0.0, float(lo), float(hi), int(n), "naive")


def cmc_y_max(metric: str, n_cpus: int) -> float:
    """Largest per-trial cmc value: n_cpus - 1 for race, n_cpus for bad (as `outcomes`)."""
    return float(n_cpus - 1 if metric == "p_race" else n_cpus)


def cmc_estimate(parts: list[tuple[int, float, float]], metric: str, n_cpus: int) -> Estimate:
    """Pooled cmc estimate of shards [(n, mean, variance of the mean), ...] in shard order."""
    n, mean, var = combine(parts)
    lo, hi = estimate_interval(mean, var, n, 0.95, cmc_y_max(metric, n_cpus))
    y_max = cmc_y_max(metric, n_cpus)
    p = min(max(mean, 0.0), y_max) if math.isfinite(mean) else 0.0  # as estimate_interval clamps it
    return Estimate(p, lo, hi, n, "cmc")


def decide(est: Estimate, rule: Precision, trials: int | None = None) -> str:
    """The status of a point from its estimate (see the module docstring for the order).

    `trials` is the point's total (defaults to est.trials; they differ only if the
    cmc estimate covers fewer trials than the counts, which a sweep never stores).
    """
    n = est.trials if trials is None else trials
    if n < rule.min_trials:
        return OPEN
    if rule.target is not None:
        if est.hi < rule.target:
            return BELOW
        if est.lo > rule.target:
            return ABOVE
    if rule.rel_half_width is not None and est.p > 0 and (est.hi - est.lo) / 2.0 <= rule.rel_half_width * est.p:
        return PRECISE
    if n >= rule.max_trials:
        return EXHAUSTED
    return OPEN


@dataclass(frozen=True)
class ShardStats:
    """What the stop rule needs from one stored `points` row (one shard of one point)."""

    trials: int
    race: int
    hang: int
    timeout: int
    estimator: str = "naive"
    p_race_est: float = math.nan
    p_race_var: float = math.nan
    p_bad_est: float = math.nan
    p_bad_var: float = math.nan

    @classmethod
    def from_row(cls, row: Mapping[str, object]) -> ShardStats:
        """From a points row as a dict (columns missing in old files read as naive)."""

        def f(name: str) -> float:
            v = row.get(name)
            return math.nan if v is None else float(v)  # type: ignore[arg-type]

        return cls(
            int(row["trials"]), int(row["race"]), int(row["hang"]), int(row["timeout"]),  # type: ignore[call-overload]
            str(row.get("estimator") or "naive"),
            f("p_race_est"), f("p_race_var"), f("p_bad_est"), f("p_bad_var"),
        )


@dataclass
class PointTally:
    """The shards of one point seen so far, pooled in shard order on demand."""

    n_cpus: int
    shards: dict[int, ShardStats] = field(default_factory=dict)

    def add(self, shard: int, stats: ShardStats) -> None:
        self.shards[int(shard)] = stats

    def has_all(self, stop: int) -> bool:
        """Whether shards 0 .. stop-1 are all here."""
        return all(k in self.shards for k in range(stop))

    @property
    def trials(self) -> int:
        return sum(s.trials for s in self.shards.values())

    def estimate(self, metric: str, upto: int | None = None) -> Estimate:
        """The metric's estimate over shards 0 .. upto-1 (all shards seen when None), as `outcomes`."""
        ks = sorted(self.shards) if upto is None else list(range(upto))
        rows = [self.shards[k] for k in ks]
        n = sum(r.trials for r in rows)
        # cmc when every shard ran it (as `outcomes`: cmc_trials = trials)
        cmc = metric in CMC_METRICS and bool(rows) and all(r.estimator == "cmc" for r in rows)
        if cmc:
            name = CMC_METRICS[metric]
            parts = [(r.trials, getattr(r, f"p_{name}_est"), getattr(r, f"p_{name}_var")) for r in rows]
            return cmc_estimate(parts, metric, self.n_cpus)
        k = sum(getattr(r, o) for r in rows for o in METRIC_OUTCOMES[metric])
        return naive_estimate(k, n)

    def status(self, rule: Precision, upto: int | None = None) -> str:
        """decide() on shards 0 .. upto-1."""
        return decide(self.estimate(rule.metric, upto), rule)
