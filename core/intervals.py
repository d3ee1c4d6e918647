"""Every probability the project reports, with its interval: the one definition (issue 23).

A point's metrics are p_race, p_hang, p_timeout and p_bad. Outcomes are exclusive (MODEL.md:
a trial has exactly one), so p_bad = p_race + p_hang + p_timeout exactly, and each metric is
a sum of parts, each part known in one of three ways:

- **counted**: k events in n trials; Clopper-Pearson at the part's level (exact: coverage >= the
  level at every p and n; 0 events give an upper bound of 1 - (alpha/2)^(1/n) ~ 3.69/n at 95%,
  never 0);
- **zero by model**: an outcome the model cannot produce at the point (`possible`: a hang needs
  wait = 1 and p_unresponsive > 0; a timeout needs wait = 0): 0 exactly, lo = hi = 0. If such an
  outcome was observed all the same (a model that changed under the rule), it is counted;
- **bounded by model**: p_timeout where no timeout was counted and core.bounds gives a model upper
  bound below the 0-event bound: the interval is [0, bound], of the same level or more (the bound
  holds with certainty). This decides "p_timeout below a target" without trials wherever the laws
  alone put it there (issue 22). p_bad does not use it;
- **cmc**: p_race from an estimator that integrates it (`Estimator.integrates_race`: cmc), the
  pooled mean with core.estimators.cmc.stats.estimate_interval (CLT; Clopper-Pearson when every
  value is 0).

Which part is which (method labels, as the `*_method` columns of `outcomes` print them):

| estimator | p_race | p_hang, p_timeout | p_bad |
|---|---|---|---|
| counted (naive, and any estimator that does not integrate p_race) | counted | counted or zero by model (p_timeout: or bounded by model) | counted on race + hang + timeout |
| cmc | cmc | counted or zero by model | cmc race + counted hang/timeout (`cmc+counted`), or `cmc` when both are zero by model |

`cmc+counted` at overall level 1 - alpha: the race interval and the Clopper-Pearson interval of
the hang + timeout count are each taken at 1 - alpha/2, and the p_bad interval is
[race_lo + ht_lo, race_hi + ht_hi], the estimate race_mean + k_ht / n. By Bonferroni both part
intervals hold together with probability >= 1 - alpha, whatever their dependence (they come from
the same trials), and then p_bad = p_race + p_ht lies in the sum. Its coverage is >= that of its
parts combined: exact for the counted part, asymptotic (CLT) for the race part; measured by
benchmarks/coverage.py. The stored cmc value of p_bad (p_bad_est, whose hang/timeout part is a
0/1 count with variance 0 when none was seen) is never used for an interval.

Pure: no I/O. Callers: core.precision (the adaptive rule), queries.estimates (as DuckDB
functions for every view), the simulate report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .estimators.cmc.stats import estimate_interval
from .stats import clopper_pearson, clopper_pearson_many, zero_event_trials

__all__ = [
    "CMC",
    "CMC_COUNTED",
    "CONF",
    "COUNTED",
    "METHODS",
    "METRICS",
    "METRIC_OUTCOMES",
    "MODEL_BOUND",
    "MODEL_ZERO",
    "Estimate",
    "Observed",
    "Resolution",
    "counted_interval",
    "estimate",
    "estimate_many",
    "possible",
    "resolution",
    "split_conf",
]

CONF = 0.95
"""Confidence of every interval the project prints."""

METRICS: tuple[str, ...] = ("p_race", "p_bad", "p_hang", "p_timeout")
METRIC_OUTCOMES: dict[str, tuple[str, ...]] = {
    "p_race": ("race",),
    "p_bad": ("race", "hang", "timeout"),
    "p_hang": ("hang",),
    "p_timeout": ("timeout",),
}
"""Which outcome counts make up each metric (outcomes are exclusive, so the metric is their sum)."""

COUNTED = "counted"
CMC = "cmc"
CMC_COUNTED = "cmc+counted"
MODEL_ZERO = "zero by model"
MODEL_BOUND = "bounded by model"
METHODS: tuple[str, ...] = (COUNTED, CMC, CMC_COUNTED, MODEL_ZERO, MODEL_BOUND)

Metric = Literal["p_race", "p_bad", "p_hang", "p_timeout"]


def split_conf(conf: float, parts: int) -> float:
    """Level of each of `parts` intervals that hold together with probability >= conf (Bonferroni)."""
    if parts < 1:
        raise ValueError(f"parts = {parts} must be >= 1")
    return 1.0 - (1.0 - conf) / parts


def possible(wait: int, p_unresponsive: float) -> tuple[bool, bool]:
    """(a hang can happen, a timeout can happen) at a point, from MODEL.md.

    A hang is F = inf on the kexec path: only a dead CPU (p_unresponsive > 0) has an infinite
    clear time, and only wait = 1 waits for it forever (revision 2's early-flush IPI hangs on a
    dead CPU too, also only on wait = 1). A timeout is the panic path's 10 ms deadline passing:
    only wait = 0 has one. Tests check both against the simulators on random parameters.
    """
    return (int(wait) == 1 and float(p_unresponsive) > 0.0), int(wait) == 0


@dataclass(frozen=True)
class Estimate:
    """A metric's estimate with its interval (lo <= p <= hi) at a stated level, and how it was made."""

    p: float
    lo: float
    hi: float
    trials: int
    method: str  # one of METHODS
    var: float = math.nan  # variance of p (counted: p (1 - p) / n; cmc: pooled; cmc+counted: their sum)


@dataclass(frozen=True)
class Observed:
    """What a point (or a pooled cell) gives the intervals: outcome counts over `trials`, the
    integrated race estimate when its estimator has one, and which counted outcomes can happen.

    race_cmc = (n, mean, variance of the mean) pooled over the trials that ran an integrating
    estimator (n may be below `trials` in a cell that mixes estimators); n_cpus sets the range
    [0, n_cpus - 1] of the per-trial race values. `timeout_max`: core.bounds' upper bound of
    p_timeout at the point (1.0: none known), used where a timeout is possible and none was counted.
    """

    trials: int
    race: int = 0
    hang: int = 0
    timeout: int = 0
    race_cmc: tuple[int, float, float] | None = None
    n_cpus: int = 2
    hang_possible: bool = True
    timeout_possible: bool = True
    timeout_max: float = 1.0

    def count(self, metric: str) -> int:
        return sum(getattr(self, o) for o in METRIC_OUTCOMES[metric])


def counted_interval(k: int, n: int, conf: float = CONF) -> tuple[float, float]:
    """Clopper-Pearson (lo, hi) of k events in n trials (n = 0: (0, 1))."""
    return clopper_pearson(int(k), int(n), conf)


def _race_cmc(obs: Observed, conf: float) -> Estimate:
    n, mean, var = obs.race_cmc  # type: ignore[misc]
    y_max = float(max(obs.n_cpus - 1, 1))
    lo, hi = estimate_interval(mean, var, n, conf, y_max)
    p = min(max(mean, 0.0), y_max) if math.isfinite(mean) else 0.0  # as estimate_interval clamps it
    return Estimate(p, lo, hi, n, CMC, var)


def _has_cmc(obs: Observed) -> bool:
    return obs.race_cmc is not None and obs.race_cmc[0] > 0 and math.isfinite(obs.race_cmc[1])


def estimate(metric: str, obs: Observed, conf: float = CONF) -> Estimate:
    """The metric's estimate and interval at level `conf` (see the module doc for the parts)."""
    (e,) = estimate_many(metric, [obs], conf)
    return e


def estimate_many(metric: str, rows: Sequence[Observed], conf: float = CONF) -> list[Estimate]:
    """`estimate` of many points at once (the exact intervals of their counts solved together, as
    core.stats.clopper_pearson_many): the queries' per-row functions call this."""
    if metric not in METRIC_OUTCOMES:
        raise ValueError(f"unknown metric {metric!r}: one of {', '.join(METRICS)}")
    half = split_conf(conf, 2)
    # what every row needs: which count, at which level, and whether it is the cmc race part
    plan: list[tuple[int, float, bool, bool]] = []  # (count, level, can happen, with the cmc race part)
    for o in rows:
        if metric == "p_hang":
            plan.append((o.hang, conf, o.hang_possible, False))
        elif metric == "p_timeout":
            plan.append((o.timeout, conf, o.timeout_possible, False))
        elif not _has_cmc(o):
            plan.append((o.count(metric), conf, True, False))
        elif metric == "p_race":
            plan.append((0, conf, False, True))
        else:  # p_bad under cmc: the race part plus the counted hang + timeout part
            k_ht = o.hang + o.timeout
            alone = k_ht == 0 and not o.hang_possible and not o.timeout_possible
            plan.append((k_ht, conf if alone else half, not alone, True))
    counted = [(i, k, lvl) for i, ((k, lvl, can, _), o) in enumerate(zip(plan, rows))
               if o.trials > 0 and (can or k > 0)]
    bounds: dict[int, tuple[float, float]] = {}
    for lvl in {c[2] for c in counted}:
        sel = [c for c in counted if c[2] == lvl]
        lo, hi = clopper_pearson_many([c[1] for c in sel], [rows[c[0]].trials for c in sel], lvl)
        bounds.update((c[0], (float(x), float(y))) for c, x, y in zip(sel, lo, hi))
    out = []
    for i, ((k, lvl, _, cmc), o) in enumerate(zip(plan, rows)):
        n = int(o.trials)
        if i in bounds:
            p = k / n
            c = Estimate(p, *bounds[i], n, COUNTED, p * (1 - p) / n)
        elif n > 0:  # zero by model (or, with the cmc race part, nothing counted at all)
            c = Estimate(0.0, 0.0, 0.0, n, MODEL_ZERO, 0.0)
        else:
            c = Estimate(0.0, 0.0, 1.0, 0, COUNTED, math.nan)
        if metric == "p_timeout" and o.timeout_possible and o.timeout == 0 and o.timeout_max < c.hi:
            tm = float(o.timeout_max)
            c = Estimate(min(c.p, tm), min(c.lo, tm), tm, n, MODEL_BOUND, c.var)
        if not cmc:
            out.append(c)
            continue
        r = _race_cmc(o, lvl)
        if c.method == MODEL_ZERO:  # p_race, or p_bad where neither hangs nor timeouts can happen
            out.append(Estimate(r.p, r.lo, r.hi, n if metric == "p_bad" else r.trials, CMC, r.var))
            continue
        p = r.p + c.p
        out.append(Estimate(p, min(r.lo + c.lo, p), max(r.hi + c.hi, p), n, CMC_COUNTED, r.var + c.var))
    return out


@dataclass(frozen=True)
class Resolution:
    """Why a metric's upper bound is not below a target, when the trials run cannot say.

    `unresolved`: the counted part saw 0 events and its 0-event bound alone keeps the upper
    bound at or above the target; `needed` is then the trials with 0 events that would bring
    it below (None: more than `cap`, or never, when the cmc race part's bound alone is at or
    above the target, see `race_blocks`).
    """

    unresolved: bool
    needed: int | None = None
    cap: int = 0
    race_blocks: bool = False


def _race_all_zero(obs: Observed) -> bool:
    """Every integrated race value was 0: the cmc bound is then Clopper-Pearson's bound of 0 races."""
    n, mean, var = obs.race_cmc  # type: ignore[misc]
    return mean == 0 and not var > 0


def resolution(metric: str, obs: Observed, target: float, conf: float = CONF) -> Resolution:
    """Whether `metric` at `obs` is unresolved against `target` at level `conf`, and the trials needed.

    Unresolved: the upper bound is at or above the target and everything in it that is not a
    measured estimate is the bound of 0 events (0 counted events; a cmc race part whose values
    were all 0, whose bound is the same Clopper-Pearson one); `needed` is the smallest n for which
    0 events in n trials put the bound below the target.
    """
    from .stats import MAX_TRIALS_NEEDED

    est = estimate(metric, obs, conf)
    if est.hi < target or est.method == MODEL_ZERO:
        return Resolution(False)
    if est.method in (COUNTED, MODEL_BOUND):  # the bound is at or above the target here
        if obs.count(metric) != 0:
            return Resolution(False)
        return Resolution(True, zero_event_trials(target, conf), MAX_TRIALS_NEEDED)
    if est.method == CMC:  # p_race, or p_bad with nothing else possible
        if not _race_all_zero(obs):
            return Resolution(False)
        return Resolution(True, zero_event_trials(target, conf), MAX_TRIALS_NEEDED)
    # cmc+counted
    if obs.hang + obs.timeout != 0:
        return Resolution(False)
    half = split_conf(conf, 2)
    if _race_all_zero(obs):  # both parts are 0-event bounds at the half level: 2 (1 - tail^(1/n)) < target
        return Resolution(True, zero_event_trials(target / 2, half), MAX_TRIALS_NEEDED)
    room = target - _race_cmc(obs, half).hi
    if room <= 0:
        return Resolution(True, None, MAX_TRIALS_NEEDED, race_blocks=True)
    return Resolution(True, zero_event_trials(room, half), MAX_TRIALS_NEEDED)
