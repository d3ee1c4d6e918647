-- description: points where the 95% upper bound of p_bad (race+hang+timeout) exceeds $threshold, worst first
-- param: threshold=1e-3 [probability] p_bad upper bound above which a point is listed
-- needs: complete (a point not stored yet would be missing from the list, read as "not exceeding")
-- `verdict` is 'exceeds' when even the lower bound is above the threshold, 'possible' otherwise.
-- p_bad and p_race are the sweep's estimator (`estimator`: cmc estimate and interval, or counts and
-- Wilson); `disagree`: the cmc interval of p_bad misses the naive counts' one (the cmc one is used).
SELECT
    o.sweep,
    o.point_id,
    d.differs,
    CASE WHEN o.p_bad_lo > $threshold THEN 'exceeds' ELSE 'possible' END AS verdict,
    o.estimator,
    o.trials,
    o.race,
    o.hang,
    o.timeout,
    o.p_bad,
    o.p_bad_lo,
    o.p_bad_hi,
    o.p_bad_disagree AS disagree,
    o.p_race,
    o.p_hang,
    o.p_timeout,
    o.t_p99_us
FROM outcomes AS o
JOIN differs AS d USING (sweep, point_id)
WHERE o.p_bad_hi > $threshold
ORDER BY o.p_bad_lo DESC, o.p_bad_hi DESC, o.sweep, d.differs
