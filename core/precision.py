"""Adaptive precision: the stop rule of a point (SCHEMA.md, `trials = "auto"`).

One definition, used by the runner to decide whether a point gets more shards
and by `queries` (the `precision_status` SQL macro is written to match
`decide` operation for operation, and tested against it):

- the estimate and interval of the metric are core.intervals.estimate, exactly what
  `outcomes` reports (p_race pooled cmc where the sweep ran cmc, counted outcomes exact
  Clopper-Pearson, p_bad under cmc the cmc race part plus the counted hang/timeout part);
- a point is looked at after each wave, at most `max_looks(rule)` = 1 + ceil(log2(max_trials /
  min_trials)) times (sweeps.waves doubles the shards per look, from >= min_trials to <=
  max_trials). "below target" / "above target" read the interval at level `look_conf(rule)` =
  1 - 0.05 / max_looks(rule) (Bonferroni over the looks, alpha spending): the chance that any
  look's interval misses the true value is <= 5%, so a point's target decision is wrong with
  probability <= 5% overall, not per look (for counted metrics exactly, since Clopper-Pearson
  holds its level; for cmc as far as the CLT does);
- a point with fewer than `min_trials` trials is open; after that, in this order:
  `below target` (look hi < target), `above target` (look lo > target), `precise`
  (half-width (hi - lo) / 2 of the 95% interval <= rel_half_width x p, p > 0: a statement
  about the reported interval, not a test), `budget exhausted` (trials >= max_trials), else open.

Pure: no I/O, no Ray. `PointTally` pools a point's shards in shard order, so the
result never depends on the order in which shards were completed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .bounds import timeout_max_of
from .estimators import integrates_race
from .estimators.cmc.stats import combine
from .intervals import CONF, METRIC_OUTCOMES, METRICS, Estimate, Observed, possible, split_conf
from .intervals import estimate as metric_estimate

__all__ = [
    "ABOVE",
    "BELOW",
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
    "decide",
    "look_conf",
    "max_looks",
    "naive_estimate",
]

BELOW = "below target"
ABOVE = "above target"
PRECISE = "precise"
EXHAUSTED = "budget exhausted"
OPEN = "open"
STATUSES: tuple[str, ...] = (BELOW, ABOVE, PRECISE, EXHAUSTED, OPEN)
DECIDED: frozenset[str] = frozenset({BELOW, ABOVE, PRECISE, EXHAUSTED})
"""A point with one of these statuses gets no more shards."""
ERROR_RATE = 1.0 - CONF
"""Per point, the largest probability that a "below target" / "above target" decision is wrong."""


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


def max_looks(rule: Precision) -> int:
    """Most looks a point can get: 1 + ceil(log2(max_trials / min_trials)) (one per wave of
    sweeps.waves.wave_bounds, whatever the shard size: see tests/test_precision.py)."""
    k = 0
    while rule.min_trials << k < rule.max_trials:
        k += 1
    return k + 1


def look_conf(rule: Precision) -> float:
    """Level of the interval each look's target decision reads: 1 - ERROR_RATE / max_looks(rule)."""
    return split_conf(CONF, max_looks(rule))


def naive_estimate(k: int, n: int, conf: float = CONF) -> Estimate:
    """k/n with the exact (Clopper-Pearson) interval at `conf` (n = 0: p = 0 in [0, 1])."""
    return metric_estimate("p_race", Observed(int(n), race=int(k)), conf)


def decide(est: Estimate, rule: Precision, look: Estimate, trials: int | None = None) -> str:
    """The status of a point (see the module docstring for the order).

    `est` is the metric's 95% estimate (what `outcomes` reports; `precise` reads it), `look` the
    same at look_conf(rule) (the target decisions read it). `trials` is the point's total
    (defaults to est.trials).
    """
    n = est.trials if trials is None else trials
    if n < rule.min_trials:
        return OPEN
    if rule.target is not None:
        if look.hi < rule.target:
            return BELOW
        if look.lo > rule.target:
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
    """The shards of one point seen so far, pooled in shard order on demand.

    `hang_possible` / `timeout_possible`: core.intervals.possible of the point (True, the
    conservative reading, when unknown); `timeout_max`: core.bounds' upper bound of p_timeout
    (1.0 when unknown); `for_params` fills them from the parameters.
    """

    n_cpus: int
    shards: dict[int, ShardStats] = field(default_factory=dict)
    hang_possible: bool = True
    timeout_possible: bool = True
    timeout_max: float = 1.0

    @classmethod
    def for_params(cls, values: Mapping[str, object]) -> PointTally:
        """The tally of a point with these parameter values (all of them, defaults filled)."""
        hang, timeout = possible(int(values["wait"]), float(values["p_unresponsive"]))  # type: ignore[call-overload,arg-type]
        return cls(int(values["n_cpus"]), hang_possible=hang, timeout_possible=timeout,  # type: ignore[call-overload]
                   timeout_max=timeout_max_of(values) if timeout else 1.0)

    def add(self, shard: int, stats: ShardStats) -> None:
        self.shards[int(shard)] = stats

    def has_all(self, stop: int) -> bool:
        """Whether shards 0 .. stop-1 are all here."""
        return all(k in self.shards for k in range(stop))

    @property
    def trials(self) -> int:
        return sum(s.trials for s in self.shards.values())

    def observed(self, upto: int | None = None) -> Observed:
        """Shards 0 .. upto-1 (all shards seen when None) pooled, as `outcomes` pools them."""
        ks = sorted(self.shards) if upto is None else list(range(upto))
        rows = [self.shards[k] for k in ks]
        n = sum(r.trials for r in rows)
        race_cmc = None
        # an integrated race estimate when every shard has one (as `outcomes`: cmc_trials = trials)
        if rows and all(integrates_race(r.estimator) for r in rows):
            race_cmc = combine([(r.trials, r.p_race_est, r.p_race_var) for r in rows])
        return Observed(n, sum(r.race for r in rows), sum(r.hang for r in rows), sum(r.timeout for r in rows),
                        race_cmc, self.n_cpus, self.hang_possible, self.timeout_possible, self.timeout_max)

    def estimate(self, metric: str, upto: int | None = None, conf: float = CONF) -> Estimate:
        """The metric's estimate over shards 0 .. upto-1 (all shards seen when None), as `outcomes`."""
        return metric_estimate(metric, self.observed(upto), conf)

    def status(self, rule: Precision, upto: int | None = None) -> str:
        """decide() on shards 0 .. upto-1."""
        obs = self.observed(upto)
        return decide(metric_estimate(rule.metric, obs, CONF), rule, metric_estimate(rule.metric, obs, look_conf(rule)))
