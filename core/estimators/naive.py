"""The naive estimator: count outcomes (core.vectorized, NMI-path draws made lazily)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from core.estimators.base import Chunk, Estimator, Replayed, ShardSummary
from core.params import Params
from core.vectorized import iter_chunks, replay_draws


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
