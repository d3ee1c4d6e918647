"""The cmc estimator's interface: chunks of the cmc stream with their per-trial values,
a summary with the running cmc moments, replay (the arithmetic is in walk.py)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from core.estimators.base import Chunk, Estimator, Replayed, ShardSummary
from core.estimators.cmc.stats import CmcSummary
from core.estimators.cmc.walk import iter_chunks_cmc, replay_draws_cmc
from core.params import Params


class CmcEstimator(Estimator):
    name = "cmc"
    integrates_race = True
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
