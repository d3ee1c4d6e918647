-- description: points where the 95% upper bound of p_bad (race+hang+timeout) exceeds $threshold, worst first
-- param: threshold=1e-3 p_bad upper bound above which a point is listed
-- `verdict` is 'exceeds' when even the lower bound is above the threshold, 'possible' otherwise.
SELECT
    o.sweep,
    o.point_id,
    d.differs,
    CASE WHEN o.p_bad_lo > $threshold THEN 'exceeds' ELSE 'possible' END AS verdict,
    o.trials,
    o.race,
    o.hang,
    o.timeout,
    o.p_bad,
    o.p_bad_lo,
    o.p_bad_hi,
    o.p_race,
    o.p_hang,
    o.p_timeout,
    o.t_p99_us
FROM outcomes AS o
JOIN differs AS d USING (sweep, point_id)
WHERE o.p_bad_hi > $threshold
ORDER BY o.p_bad_lo DESC, o.p_bad_hi DESC, o.sweep, d.differs
