-- internal: the `precision` view of trials = "auto" sweeps (core.precision), one row per point of a sweep
-- with a [precision] rule (table precision_rules, from each dir's spec.toml): the rule's metric, its
-- estimate and 95% interval exactly as `outcomes` reports them (the pooled cmc estimate where the sweep
-- ran cmc and the metric is p_race or p_bad, else k/n with Wilson), trials used and the status.
CREATE OR REPLACE TEMP VIEW precision AS
WITH e AS (
    SELECT
        o.sweep, o.point_id, r.metric, r.target, r.rel_half_width, r.max_trials, r.min_trials, o.trials,
        CASE r.metric WHEN 'p_race' THEN o.race WHEN 'p_hang' THEN o.hang WHEN 'p_timeout' THEN o.timeout
                      ELSE o.race + o.hang + o.timeout END AS k,
        coalesce(o.cmc_trials, 0) > 0 AND r.metric IN ('p_race', 'p_bad') AS use_cmc,
        o.cmc_trials,
        CASE r.metric WHEN 'p_race' THEN o.p_race_cmc ELSE o.p_bad_cmc END AS cm,
        CASE r.metric WHEN 'p_race' THEN o.p_race_cmc_var ELSE o.p_bad_cmc_var END AS cv,
        CASE r.metric WHEN 'p_race' THEN o.n_cpus - 1 ELSE o.n_cpus END AS ymax
    FROM outcomes_base AS o
    JOIN precision_rules AS r USING (sweep)
),
est AS (
    SELECT
        *,
        CASE WHEN use_cmc THEN 'cmc' ELSE 'naive' END AS estimator,
        CASE WHEN use_cmc THEN greatest(0.0, least(cm, ymax)) ELSE coalesce(prob(k, trials), 0.0) END AS p,
        CASE WHEN use_cmc THEN cmc_lo(greatest(0.0, least(cm, ymax)), cv, cmc_trials, ymax) ELSE wilson_lo(k, trials) END AS p_lo,
        CASE WHEN use_cmc THEN cmc_hi(greatest(0.0, least(cm, ymax)), cv, cmc_trials, ymax) ELSE wilson_hi(k, trials) END AS p_hi
    FROM e
)
SELECT
    sweep, point_id, metric, estimator, p, p_lo, p_hi, trials,
    precision_status(p, p_lo, p_hi, trials, target, rel_half_width, max_trials, min_trials) AS status
FROM est;

CREATE OR REPLACE TEMP VIEW outcomes AS
SELECT o.*, pr.status, pr.metric AS precision_metric
FROM outcomes_base AS o
LEFT JOIN precision AS pr USING (sweep, point_id);
