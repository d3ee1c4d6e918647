"""The estimators a sweep can run, behind one interface, and their registry.

An estimator decides, for one point and one shard, how trials are drawn and
simulated in chunks, what is accumulated per shard, which estimate of p_race and
p_bad is stored (the `p_race_est`, `p_race_var`, `p_bad_est`, `p_bad_var` columns:
an unbiased estimate and the variance of that estimate, so shards combine with
`core.estimators.cmc.stats.combine`), and how one trial is replayed from its address:

- `naive`: count outcomes (core.vectorized, NMI-path draws made lazily);
  the estimate is k/n with variance s^2/n of the 0/1 outcomes.
- `cmc`: conditional Monte Carlo (core.estimators.cmc.walk): the same outcome counts from an
  eager random stream, plus per-trial conditional probabilities whose mean is
  unbiased with a far smaller variance for rare races.

Spec validation, `stoprace simulate`, the shard runner and replay look estimators
up by name in `ESTIMATORS` instead of switching on strings.
"""

from __future__ import annotations

from core.estimators.base import ESTIMATE_COLUMNS, Chunk, Estimator, Replayed, ShardSummary, naive_estimate
from core.estimators.cmc.estimator import CmcEstimator
from core.estimators.naive import NaiveEstimator

__all__ = [
    "CMC", "DEFAULT_ESTIMATOR", "ESTIMATE_COLUMNS", "ESTIMATORS", "NAIVE", "Chunk", "Estimator", "Replayed",
    "ShardSummary", "get_estimator", "integrates_race", "naive_estimate",
]

NAIVE = NaiveEstimator()
CMC = CmcEstimator()

ESTIMATORS: dict[str, Estimator] = {e.name: e for e in (NAIVE, CMC)}
"""Every estimator by name; the first is the default."""

DEFAULT_ESTIMATOR = NAIVE.name


def get_estimator(name: str | None) -> Estimator:
    """The estimator called `name` (None: the default, as in result dirs that predate the column)."""
    est = ESTIMATORS.get(DEFAULT_ESTIMATOR if name is None else name)
    if est is None:
        raise KeyError(f"unknown estimator {name!r}: one of {', '.join(ESTIMATORS)}")
    return est


def integrates_race(name: str | None) -> bool:
    """Whether rows of the estimator called `name` store an integrated p_race estimate (cmc); unknown or
    missing names (old files) are counted."""
    est = ESTIMATORS.get(DEFAULT_ESTIMATOR if name is None else name)
    return bool(est is not None and est.integrates_race)
