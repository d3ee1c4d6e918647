-- description: points where the 95% upper bound of p_bad (race+hang+timeout) exceeds $threshold, worst first
-- param: threshold=1e-3 [probability] p_bad upper bound above which a point is listed
-- needs: complete (a point not stored yet would be missing from the list, read as "not exceeding")
-- `verdict` is 'exceeds' when even the lower bound is above the threshold; 'unresolved' when the upper bound
-- is above it only because 0 events were seen where they count (core.intervals.resolution): `trials_needed`
-- trials with 0 events would bring it below (NULL: more than 1e15, or the cmc race part alone is above);
-- 'possible' otherwise. p_bad is core.intervals.estimate as in `outcomes` (`method`: counted, cmc, or
-- cmc+counted: the cmc race part plus the counted hang/timeout part, so 0 timeouts seen never means 0);
-- `disagree`: the p_bad interval misses the naive counts' one (the former is used).
WITH r AS (
    SELECT
        o.*,
        metric_resolution('p_bad', o.trials, o.race, o.hang, o.timeout, o.hang_possible, o.timeout_possible, o.timeout_max,
                          CASE WHEN o.p_race_method = 'cmc' THEN o.cmc_trials END,
                          CASE WHEN o.p_race_method = 'cmc' THEN o.p_race_cmc END,
                          CASE WHEN o.p_race_method = 'cmc' THEN o.p_race_cmc_var END,
                          o.n_cpus::BIGINT, $threshold::DOUBLE, 0.95::DOUBLE) AS res
    FROM outcomes AS o
    WHERE o.p_bad_hi > $threshold
)
SELECT
    r.sweep,
    r.point_id,
    d.differs,
    CASE WHEN r.p_bad_lo > $threshold THEN 'exceeds'
         WHEN r.res.unresolved THEN 'unresolved'
         ELSE 'possible' END AS verdict,
    CASE WHEN r.res.unresolved THEN r.res.needed END AS trials_needed,
    r.estimator,
    r.p_bad_method AS method,
    r.trials,
    r.race,
    r.hang,
    r.timeout,
    r.p_bad,
    r.p_bad_lo,
    r.p_bad_hi,
    r.p_bad_disagree AS disagree,
    r.p_race,
    r.p_hang,
    r.p_timeout,
    r.t_p99_us
FROM r
JOIN differs AS d USING (sweep, point_id)
ORDER BY r.p_bad_lo DESC, r.p_bad_hi DESC, r.sweep, d.differs
