"""The estimators a sweep can run, behind one interface, and their registry.

An estimator decides, for one point and one shard, how trials are drawn and
simulated in chunks, what is accumulated per shard, which estimate of p_race and
p_bad is stored (the `p_race_est`, `p_race_var`, `p_bad_est`, `p_bad_var` columns:
an unbiased estimate and the variance of that estimate, so shards combine with
`core.cmc_stats.combine`), and how one trial is replayed from its address:

- `naive`: count outcomes (core.vectorized, NMI-path draws made lazily);
  the estimate is k/n with variance s^2/n of the 0/1 outcomes.
- `cmc`: conditional Monte Carlo (core.cmc): the same outcome counts from an
  eager random stream, plus per-trial conditional probabilities whose mean is
  unbiased with a far smaller variance for rare races.

Spec validation, `stoprace simulate`, the shard runner and replay look estimators
up by name in `ESTIMATORS` instead of switching on strings.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .cmc import iter_chunks_cmc, replay_draws_cmc
from .cmc_stats import CmcBatch, CmcSummary
from .draws import Draws
from .params import Params
from .summary import Summary
from .vectorized import TrialBatch, iter_chunks, replay_draws

ESTIMATE_COLUMNS: tuple[str, ...] = ("p_race_est", "p_race_var", "p_bad_est", "p_bad_var")
"""The stored per-shard estimate columns every estimator fills (SCHEMA: points)."""


@dataclass(frozen=True)
class Chunk:
    """One chunk of a shard: its first trial index, the per-trial results, and the
    estimator's own per-trial values (None for naive)."""

    start: int
    batch: TrialBatch
    values: CmcBatch | None = None


@dataclass(frozen=True)
class Replayed:
    """One trial rebuilt from its address: its draws, result and estimator values."""

    draws: Draws
    batch: TrialBatch
    values: CmcBatch | None = None


def naive_estimate(k: int, n: int) -> tuple[float, float]:
    """(k/n, variance of that mean): s^2/n of n 0/1 outcomes, so shards merge like cmc ones."""
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    return p, (p * (1 - p) / (n - 1) if n > 1 else 0.0)


@dataclass
class ShardSummary:
    """What one shard accumulates: outcome counts (`counts`) and, for cmc, the running
    cmc moments (`cmc`). `columns()` gives the stored estimate columns."""

    estimator: str
    counts: Summary = field(default_factory=Summary)
    cmc: CmcSummary | None = None

    def add(self, chunk: Chunk) -> "ShardSummary":
        """Fold one chunk in (in place); returns self."""
        self.counts.add(chunk.batch)
        if self.cmc is not None:
            if chunk.values is None:
                raise ValueError(f"estimator {self.estimator}: a chunk without its per-trial values")
            self.cmc.add(chunk.values)
        return self

    def columns(self) -> dict[str, float]:
        """The ESTIMATE_COLUMNS of this shard."""
        if self.cmc is not None:
            race, bad = (self.cmc.mean_race, self.cmc.var_race), (self.cmc.mean_bad, self.cmc.var_bad)
        else:
            n = self.counts.trials
            race, bad = naive_estimate(self.counts.count("race"), n), naive_estimate(self.counts.bad, n)
        return dict(zip(ESTIMATE_COLUMNS, (*race, *bad)))

    def report(self) -> dict[str, Any] | None:
        """The estimator's own report next to the outcome counts (JSON-able), None for naive."""
        return None if self.cmc is None else self.cmc.report()


class Estimator(ABC):
    """One way of turning (point, shard seed, trials) into results and an estimate."""

    name: str
    help: str

    @abstractmethod
    def chunks(self, p: Params, n_trials: int, seed: np.random.SeedSequence) -> Iterator[Chunk]:
        """The shard's chunks in trial order; deterministic in (p, n_trials, seed)."""

    @abstractmethod
    def new_summary(self) -> ShardSummary:
        """An empty per-shard accumulator."""

    @abstractmethod
    def replay(self, p: Params, n_trials: int, seed: np.random.SeedSequence, trial: int) -> Replayed:
        """Trial `trial` of the shard (of n_trials) seeded by `seed`, recomputing one chunk."""

    def run_shard(
        self, p: Params, n_trials: int, seed: np.random.SeedSequence, on_chunk: Callable[[Chunk], None] | None = None
    ) -> ShardSummary:
        """Every chunk of one shard folded into a summary; `on_chunk` sees each chunk first."""
        acc = self.new_summary()
        for chunk in self.chunks(p, n_trials, seed):
            if on_chunk is not None:
                on_chunk(chunk)
            acc.add(chunk)
        return acc


class NaiveEstimator(Estimator):
    name = "naive"
    help = "count outcomes (default)"

    def chunks(self, p: Params, n_trials: int, seed: np.random.SeedSequence) -> Iterator[Chunk]:
        for start, batch in iter_chunks(p, n_trials, seed):
            yield Chunk(start, batch)

    def new_summary(self) -> ShardSummary:
        return ShardSummary(self.name)

    def replay(self, p: Params, n_trials: int, seed: np.random.SeedSequence, trial: int) -> Replayed:
        draws, batch = replay_draws(p, n_trials, seed, trial)
        return Replayed(draws, batch)


class CmcEstimator(Estimator):
    name = "cmc"
    help = (
        "also estimate p_race and p_bad by conditional Monte Carlo, unbiased with a 95% interval "
        "even when no race is seen (rare events, core/README.md); the naive counts then come from "
        "the cmc random stream"
    )

    def chunks(self, p: Params, n_trials: int, seed: np.random.SeedSequence) -> Iterator[Chunk]:
        for start, batch, values in iter_chunks_cmc(p, n_trials, seed):
            yield Chunk(start, batch, values)

    def new_summary(self) -> ShardSummary:
        return ShardSummary(self.name, cmc=CmcSummary())

    def replay(self, p: Params, n_trials: int, seed: np.random.SeedSequence, trial: int) -> Replayed:
        draws, batch, values = replay_draws_cmc(p, n_trials, seed, trial)
        return Replayed(draws, batch, values)


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
