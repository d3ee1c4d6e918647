-- internal: the `precision` view of trials = "auto" sweeps (core.precision), one row per point of a sweep
-- with a [precision] rule (table precision_rules, from each dir's spec.toml): the rule's metric, its
-- estimate and 95% interval read from `outcomes` itself (one definition: the pooled cmc estimate where
-- the sweep ran cmc and the metric is p_race or p_bad, else k/n with Wilson), trials used and the status.
CREATE OR REPLACE TEMP VIEW precision AS
WITH est AS (
    SELECT
        o.sweep, o.point_id, r.metric, r.target, r.rel_half_width, r.max_trials, r.min_trials, o.trials,
        CASE WHEN r.metric IN ('p_race', 'p_bad') THEN o.estimator ELSE 'naive' END AS estimator,
        CASE r.metric WHEN 'p_race' THEN o.p_race WHEN 'p_hang' THEN o.p_hang
                      WHEN 'p_timeout' THEN o.p_timeout ELSE o.p_bad END AS p,
        CASE r.metric WHEN 'p_race' THEN o.p_race_lo WHEN 'p_hang' THEN o.p_hang_lo
                      WHEN 'p_timeout' THEN o.p_timeout_lo ELSE o.p_bad_lo END AS p_lo,
        CASE r.metric WHEN 'p_race' THEN o.p_race_hi WHEN 'p_hang' THEN o.p_hang_hi
                      WHEN 'p_timeout' THEN o.p_timeout_hi ELSE o.p_bad_hi END AS p_hi
    FROM outcomes_base AS o
    JOIN precision_rules AS r USING (sweep)
)
SELECT
    sweep, point_id, metric, estimator, p, p_lo, p_hi, trials,
    precision_status(p, p_lo, p_hi, trials, target, rel_half_width, max_trials, min_trials) AS status
FROM est;

CREATE OR REPLACE TEMP VIEW outcomes AS
SELECT o.*, pr.status, pr.metric AS precision_metric
FROM outcomes_base AS o
LEFT JOIN precision AS pr USING (sweep, point_id);
