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
- `late`: counts like naive, from a sampler that draws only the CPUs that miss the 1 s wait
  (and the maximum of the others' clear times) from the exact laws (core.estimators.late);
  its estimate is k/n like naive's.

Spec validation, `stoprace simulate`, the shard runner and replay look estimators
up by name in `ESTIMATORS` instead of switching on strings.
"""

from __future__ import annotations

from core.estimators.base import ESTIMATE_COLUMNS, Chunk, Estimator, Replayed, ShardSummary, naive_estimate
from core.estimators.cmc.estimator import CmcEstimator
from core.estimators.late.estimator import LateEstimator
from core.estimators.naive import NaiveEstimator

__all__ = [
    "CMC", "DEFAULT_ESTIMATOR", "ESTIMATE_COLUMNS", "ESTIMATORS", "LATE", "NAIVE", "Chunk", "Estimator", "Replayed",
    "ShardSummary", "get_estimator", "integrates_race", "naive_estimate", "stream_signature",
]

NAIVE = NaiveEstimator()
CMC = CmcEstimator()
LATE = LateEstimator()

ESTIMATORS: dict[str, Estimator] = {e.name: e for e in (NAIVE, CMC, LATE)}
"""Every estimator by name; the first is the default."""

DEFAULT_ESTIMATOR = NAIVE.name


def stream_signature(name: str) -> dict[str, int]:
    """What a sweep's plan records of its estimator's own stream ({} for naive and cmc, whose
    stream is core.vectorized.STREAM_VERSION, already recorded; {"late_stream": v} for late)."""
    v = get_estimator(name).stream_version
    return {} if v is None else {f"{name}_stream": v}


def get_estimator(name: str | None) -> Estimator:
    """The estimator called `name` (None: the default, as in result dirs that predate the column).

    A stored `estimator` column may say "<name>-><path>" (late->naive: a late sweep's point
    that ran the naive path): that is estimator <name>, which knows which path the point takes."""
    if name is not None and "->" in name:
        name = name.split("->", 1)[0]
    est = ESTIMATORS.get(DEFAULT_ESTIMATOR if name is None else name)
    if est is None:
        raise KeyError(f"unknown estimator {name!r}: one of {', '.join(ESTIMATORS)}")
    return est


def integrates_race(name: str | None) -> bool:
    """Whether rows of the estimator called `name` store an integrated p_race estimate (cmc); unknown or
    missing names (old files) are counted."""
    est = ESTIMATORS.get(DEFAULT_ESTIMATOR if name is None else name)
    return bool(est is not None and est.integrates_race)
