-- description: one metric per point: its estimate, the variance of that estimate, 95% and 97.5% intervals, log10 with its delta-method variance (what importance and compare read)
-- param: metric=p_race [metric] p_race, p_bad, p_hang or p_timeout
-- p, p_lo, p_hi are the metric as `outcomes` reports it: the sweep's estimator (`estimator`: the cmc
-- estimate and interval where the sweep ran cmc and the metric is p_race or p_bad, else k / trials with
-- Wilson bounds). var is the variance of p: the pooled cmc variance, else the binomial p (1 - p) / trials
-- (as mitigation_effect). lo975/hi975: the same interval at 97.5%, for ratio_interval's 'bounds' method
-- (two sides at 97.5% cover together with >= 95%). y = log10 p and y_var = var / (p ln 10)^2 (delta
-- method). Zero rule: a point whose estimate is 0 (zero = true) has no logarithm; it enters at its 95%
-- upper bound, y = log10 p_hi, with y_var = 0 (a bound, not a noisy estimate), and queries.importance
-- counts such points. Every parameter of the point comes first (point_params).
WITH o AS (
    SELECT
        sweep, point_id, estimator, trials, n_cpus, cmc_trials,
        CASE $metric WHEN 'p_race' THEN race WHEN 'p_bad' THEN bad WHEN 'p_hang' THEN hang
                     WHEN 'p_timeout' THEN timeout
                     ELSE error('metric must be p_race, p_bad, p_hang or p_timeout, not ''' || $metric || '''') END AS k,
        CASE $metric WHEN 'p_race' THEN p_race WHEN 'p_bad' THEN p_bad WHEN 'p_hang' THEN p_hang
                     WHEN 'p_timeout' THEN p_timeout END AS p,
        CASE $metric WHEN 'p_race' THEN p_race_lo WHEN 'p_bad' THEN p_bad_lo WHEN 'p_hang' THEN p_hang_lo
                     WHEN 'p_timeout' THEN p_timeout_lo END AS p_lo,
        CASE $metric WHEN 'p_race' THEN p_race_hi WHEN 'p_bad' THEN p_bad_hi WHEN 'p_hang' THEN p_hang_hi
                     WHEN 'p_timeout' THEN p_timeout_hi END AS p_hi,
        -- the cmc estimate and its variance where the metric's value is the cmc one, else NULL
        CASE WHEN estimator = 'cmc' THEN CASE $metric WHEN 'p_race' THEN p_race_cmc WHEN 'p_bad' THEN p_bad_cmc END
            END AS cmc_p,
        CASE WHEN estimator = 'cmc' THEN CASE $metric WHEN 'p_race' THEN p_race_cmc_var WHEN 'p_bad' THEN p_bad_cmc_var END
            END AS cmc_var,
        -- the largest per-trial cmc value (as `outcomes`: n_cpus - 1 racers, n_cpus for p_bad)
        (CASE $metric WHEN 'p_bad' THEN n_cpus ELSE n_cpus - 1 END)::DOUBLE AS cmc_ymax
    FROM outcomes
),
e AS (
    SELECT
        *,
        CASE WHEN cmc_p IS NOT NULL THEN cmc_var ELSE p * (1.0 - p) / trials END::DOUBLE AS var,
        -- CASE: the Python function runs only for cmc points
        CASE WHEN cmc_p IS NOT NULL THEN cmc_interval(cmc_p, cmc_var, cmc_trials, cmc_ymax, 0.975::DOUBLE)
             ELSE {'lo': wilson_lo_z(k, trials, z_value(0.975::DOUBLE)),
                   'hi': wilson_hi_z(k, trials, z_value(0.975::DOUBLE))} END AS ci975
    FROM o
)
SELECT
    pp.*,
    e.estimator,
    e.trials,
    e.k,
    e.p,
    e.p_lo,
    e.p_hi,
    e.var,
    e.ci975.lo AS lo975,
    e.ci975.hi AS hi975,
    NOT coalesce(e.p > 0, false) AS zero,
    log10(CASE WHEN e.p > 0 THEN e.p ELSE e.p_hi END) AS y,
    CASE WHEN e.p > 0 THEN e.var / (e.p * e.p * ln(10.0) * ln(10.0)) ELSE 0.0 END AS y_var
FROM e
JOIN point_params AS pp USING (sweep, point_id)
ORDER BY e.sweep, e.point_id
