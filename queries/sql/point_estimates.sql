-- description: one metric per point: its estimate, the variance of that estimate, 95% and 97.5% intervals, log10 with its delta-method variance (what importance and compare read)
-- param: metric=p_race [metric] p_race, p_bad, p_hang or p_timeout
-- p, p_lo, p_hi are the metric as `outcomes` reports it (core.intervals: counted parts exact, p_race the
-- cmc estimate where the sweep ran cmc, p_bad then its race part plus the counted hang/timeout part;
-- `method` says which). var is the variance of p: the pooled cmc variance, the binomial p (1 - p) / trials
-- of a count, their sum for cmc+counted (as mitigation_effect). lo975/hi975: the same definition at 97.5%,
-- for ratio_interval's 'bounds' method (two sides at 97.5% cover together with >= 95%). y = log10 p and
-- y_var = var / (p ln 10)^2 (delta
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
        race, hang, timeout, hang_possible, timeout_possible, timeout_max,
        CASE WHEN p_race_method = 'cmc' THEN cmc_trials END AS cmc_n,
        CASE WHEN p_race_method = 'cmc' THEN p_race_cmc END AS cmc_m,
        CASE WHEN p_race_method = 'cmc' THEN p_race_cmc_var END AS cmc_v,
        CASE $metric WHEN 'p_race' THEN p_race_method WHEN 'p_bad' THEN p_bad_method WHEN 'p_hang' THEN p_hang_method
                     WHEN 'p_timeout' THEN p_timeout_method END AS method
    FROM outcomes
),
e AS (
    SELECT
        *,
        -- core.intervals.estimate at 97.5% (the 95% one is outcomes'); its var is the same at any level
        CASE WHEN $metric IN ('p_race', 'p_bad', 'p_hang', 'p_timeout') THEN
            metric_ci($metric, trials, race, hang, timeout, hang_possible, timeout_possible, timeout_max, cmc_n, cmc_m, cmc_v,
                      n_cpus::BIGINT, 0.975::DOUBLE) END AS ci975
    FROM o
)
SELECT
    pp.*,
    e.estimator,
    e.method,
    e.trials,
    e.k,
    e.p,
    e.p_lo,
    e.p_hi,
    e.ci975.var AS var,
    e.ci975.lo AS lo975,
    e.ci975.hi AS hi975,
    NOT coalesce(e.p > 0, false) AS zero,
    log10(CASE WHEN e.p > 0 THEN e.p ELSE e.p_hi END) AS y,
    CASE WHEN e.p > 0 THEN e.ci975.var / (e.p * e.p * ln(10.0) * ln(10.0)) ELSE 0.0 END AS y_var
FROM e
JOIN point_params AS pp USING (sweep, point_id)
ORDER BY e.sweep, e.point_id
