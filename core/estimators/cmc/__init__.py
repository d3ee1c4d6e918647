"""The conditional Monte Carlo (cmc) estimator: `walk` (its arithmetic and random stream),
`stats` (per-trial values, running moments, pooling and intervals), `estimator` (the
`Estimator` interface), `reference` (its scalar reference, tests only).

Nothing is imported here, so `core.estimators.base` can use `cmc.stats` without a cycle.
"""
