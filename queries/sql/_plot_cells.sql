-- internal: plot cells for queries.plot: the filtered outcomes (view @@src@@) grouped by the plot keys.
-- Probabilities: core.intervals.estimate (queries.estimates.metric_ci) over the cell's pooled counts and,
-- where every point of the cell ran cmc, the cmc race estimates pooled with trial weights
-- (queries.estimates.pool_strata): the same definition as `outcomes` (`method`). An outcome counts as
-- possible in a cell when it is possible at any of its points. Stop-time metrics take the cell's maximum.
-- Slots: @@keys@@, @@src@@, @@metric@@ (the metric as a string literal), @@k@@ (count column, NULL for a time
-- metric), @@tvalue@@ (the time metric's cell value, NULL for a probability) and @@conf@@.
WITH c AS (
    SELECT
        @@keys@@,
        count(*) AS points,
        sum(trials)::BIGINT AS trials,
        sum(@@k@@)::BIGINT AS k,
        sum(race)::BIGINT AS race,
        sum(hang)::BIGINT AS hang,
        sum(timeout)::BIGINT AS timeout,
        bool_or(hang_possible) AS hang_possible,
        bool_or(timeout_possible) AS timeout_possible,
        pooled_timeout_max(trials, timeout_possible, timeout_max) AS timeout_max,
        max(n_cpus) AS n_cpus_max,
        bool_and(p_race_method = 'cmc') AS all_cmc,
        cmc_pool_strata(
            list({'n': cmc_trials::BIGINT, 'm': p_race_cmc::DOUBLE, 'v': p_race_cmc_var::DOUBLE} ORDER BY sweep, point_id)
                FILTER (WHERE p_race_method = 'cmc'),
            (max(n_cpus) - 1)::DOUBLE, @@conf@@) AS cmc,
        @@tvalue@@ AS tvalue
    FROM @@src@@
    GROUP BY @@keys@@
),
e AS (
    SELECT
        *,
        CASE WHEN k IS NOT NULL THEN
            metric_ci(@@metric@@, trials, race, hang, timeout, hang_possible, timeout_possible, timeout_max,
                      CASE WHEN all_cmc THEN cmc.n END, CASE WHEN all_cmc THEN cmc.p END,
                      CASE WHEN all_cmc THEN cmc.var END, n_cpus_max::BIGINT, @@conf@@) END AS m,
        CASE WHEN k IS NOT NULL THEN count_ci(k, trials, @@conf@@) END AS naive
    FROM c
)
SELECT
    @@keys@@, points, trials, k,
    -- whether the value uses a cmc estimate (the axis label says so)
    CASE WHEN k IS NULL THEN NULL WHEN m.method IN ('cmc', 'cmc+counted') THEN 'cmc' ELSE 'naive' END AS estimator,
    m.method AS method,
    CASE WHEN estimator IS NULL THEN tvalue ELSE m.p END AS value,
    m.lo AS lo,
    m.hi AS hi,
    CASE WHEN m.method IN ('cmc', 'cmc+counted') THEN m.hi < naive.lo OR m.lo > naive.hi END AS disagree
FROM e
ORDER BY @@keys@@
