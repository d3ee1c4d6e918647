"""The one interface every estimator implements (`Estimator`), what a chunk and a replayed
trial carry, and the per-shard accumulator with its stored estimate columns.

The registry and each estimator's description are in core/estimators/__init__.py.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.draws import Draws
from core.estimators.cmc.stats import CmcBatch, CmcSummary
from core.params import Params
from core.summary import Summary
from core.vectorized import TrialBatch

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
    """One trial rebuilt from its address: its draws, result and estimator values (cmc: its
    CmcBatch row; late: core.estimators.late.estimator.LateTrial; naive: None)."""

    draws: Draws
    batch: TrialBatch
    values: Any = None


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

    def report(self, params: Params | None = None) -> dict[str, Any] | None:
        """The estimator's own report next to the outcome counts (JSON-able), None for naive.

        Its "bad" is p_bad as core.intervals reports it (the cmc race part plus the counted
        hang/timeout part, `method` says which), never the interval of the per-trial bad values,
        which collapses when no hang or timeout was seen; `params` says which outcomes can happen
        (None: all, the conservative reading).
        """
        if self.cmc is None:
            return None
        from core.intervals import Observed, estimate, possible

        rep = self.cmc.report()
        hang, timeout = (True, True) if params is None else possible(params.wait, params.p_unresponsive)
        c = self.counts
        obs = Observed(c.trials, c.count("race"), c.count("hang"), c.count("timeout"),
                       (self.cmc.n, self.cmc.mean_race, self.cmc.var_race), max(self.cmc.n_cpus, 2), hang, timeout)
        e = estimate("p_bad", obs, rep["conf"])
        rep["bad"] = {"p": e.p, "var": e.var, "lo": e.lo, "hi": e.hi, "method": e.method}
        return rep


class Estimator(ABC):
    """One way of turning (point, shard seed, trials) into results and an estimate."""

    name: str
    help: str
    stream_version: int | None = None
    """The estimator's own random-stream version where it has one (recorded in a sweep's plan,
    so a resume across a change is refused); None: core.vectorized.STREAM_VERSION alone."""
    integrates_race: bool = False
    """True when the stored p_race_est / p_race_var are an integrated (variance-reduced) estimate whose
    interval is a CLT one (cmc); False when they are outcome frequencies, so p_race is counted like
    every other outcome (core.intervals: which part of which metric is counted)."""

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
