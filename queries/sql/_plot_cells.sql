-- internal: plot cells for queries.plot: the filtered outcomes (view @@src@@) grouped by the plot keys.
-- Probabilities: where every point of a cell ran cmc (and the metric has a cmc estimate), the cmc
-- estimates pooled with trial weights (queries.estimates.pool_strata) and their interval; else the
-- counts of the cell's points summed, with Wilson bounds. Stop-time metrics take the cell's maximum.
-- Slots: @@keys@@, @@src@@, @@k@@ (count column, NULL for a time metric), @@cmc_m@@/@@cmc_v@@ (cmc
-- estimate and variance columns, or NULL), @@ymax@@ (largest per-trial cmc value), @@tvalue@@ (the
-- time metric's cell value, NULL for a probability) and @@conf@@.
WITH c AS (
    SELECT
        @@keys@@,
        count(*) AS points,
        sum(trials)::BIGINT AS trials,
        sum(@@k@@)::BIGINT AS k,
        bool_and(estimator = 'cmc') AS all_cmc,
        cmc_pool_strata(
            list({'n': cmc_trials::BIGINT, 'm': (@@cmc_m@@)::DOUBLE, 'v': (@@cmc_v@@)::DOUBLE} ORDER BY sweep, point_id)
                FILTER (WHERE estimator = 'cmc'),
            max(@@ymax@@)::DOUBLE, @@conf@@) AS cmc,
        @@tvalue@@ AS tvalue
    FROM @@src@@
    GROUP BY @@keys@@
),
e AS (
    SELECT *, CASE WHEN k IS NULL THEN NULL WHEN all_cmc AND cmc IS NOT NULL THEN 'cmc' ELSE 'naive' END AS estimator
    FROM c
)
SELECT
    @@keys@@, points, trials, k, estimator,
    CASE WHEN estimator IS NULL THEN tvalue WHEN estimator = 'cmc' THEN cmc.p ELSE prob(k, trials) END AS value,
    CASE WHEN estimator = 'cmc' THEN cmc.lo WHEN estimator = 'naive' THEN wilson_lo(k, trials) END AS lo,
    CASE WHEN estimator = 'cmc' THEN cmc.hi WHEN estimator = 'naive' THEN wilson_hi(k, trials) END AS hi,
    CASE WHEN estimator = 'cmc' THEN cmc.hi < wilson_lo(k, trials) OR cmc.lo > wilson_hi(k, trials) END AS disagree
FROM e
ORDER BY @@keys@@
