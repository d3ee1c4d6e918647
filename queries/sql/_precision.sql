-- internal: the `precision` view of trials = "auto" sweeps (core.precision), one row per point of a sweep
-- with a [precision] rule (table precision_rules, from each dir's spec.toml): the rule's metric, its
-- estimate and 95% interval read from `outcomes` itself (one definition, core.intervals: `method` says
-- how it was made), the same metric's interval at the rule's look level (look_conf: 1 - 0.05 / the most
-- looks a point can get, so target decisions are wrong with probability <= 5% per point over all its
-- looks), trials used and the status (precision_status: core.precision.decide).
CREATE OR REPLACE TEMP VIEW precision AS
WITH est AS (
    SELECT
        o.sweep, o.point_id, r.metric, r.target, r.rel_half_width, r.max_trials, r.min_trials, r.look_conf,
        o.trials, o.estimator,
        CASE r.metric WHEN 'p_race' THEN o.p_race_method WHEN 'p_hang' THEN o.p_hang_method
                      WHEN 'p_timeout' THEN o.p_timeout_method ELSE o.p_bad_method END AS method,
        CASE r.metric WHEN 'p_race' THEN o.p_race WHEN 'p_hang' THEN o.p_hang
                      WHEN 'p_timeout' THEN o.p_timeout ELSE o.p_bad END AS p,
        CASE r.metric WHEN 'p_race' THEN o.p_race_lo WHEN 'p_hang' THEN o.p_hang_lo
                      WHEN 'p_timeout' THEN o.p_timeout_lo ELSE o.p_bad_lo END AS p_lo,
        CASE r.metric WHEN 'p_race' THEN o.p_race_hi WHEN 'p_hang' THEN o.p_hang_hi
                      WHEN 'p_timeout' THEN o.p_timeout_hi ELSE o.p_bad_hi END AS p_hi,
        metric_ci(r.metric, o.trials, o.race, o.hang, o.timeout, o.hang_possible, o.timeout_possible, o.timeout_max,
                  CASE WHEN o.p_race_method = 'cmc' THEN o.cmc_trials END,
                  CASE WHEN o.p_race_method = 'cmc' THEN o.p_race_cmc END,
                  CASE WHEN o.p_race_method = 'cmc' THEN o.p_race_cmc_var END,
                  o.n_cpus::BIGINT, r.look_conf) AS look
    FROM outcomes_base AS o
    JOIN precision_rules AS r USING (sweep)
)
SELECT
    sweep, point_id, metric, estimator, method, p, p_lo, p_hi, look_conf, look.lo AS look_lo, look.hi AS look_hi,
    trials,
    precision_status(p, p_lo, p_hi, look.lo, look.hi, trials, target, rel_half_width, max_trials, min_trials)
        AS status
FROM est;

CREATE OR REPLACE TEMP VIEW outcomes AS
SELECT o.*, pr.status, pr.metric AS precision_metric
FROM outcomes_base AS o
LEFT JOIN precision AS pr USING (sweep, point_id);
