-- description: mitigation none vs early_flush at equal other parameters: p_race ratio, stop-time change, preflush cost
-- Pairs are matched on all other parameters, across sweeps too (`sweep` shows both when they differ).
-- race_ratio = p_race(early_flush) / p_race(none), NULL when p_race(none) = 0.
-- preflush_us is the mean early WBINVD time when the store records it, else NULL.
WITH keyed AS (
    SELECT
        sweep, point_id,
        string_agg(name || '=' || value, ',' ORDER BY ord) FILTER (WHERE name <> 'mitigation') AS k,
        coalesce(
            string_agg(name || '=' || CASE WHEN num IS NULL THEN value ELSE printf('%g', num) END, ' ' ORDER BY ord)
                FILTER (WHERE NOT is_default AND name <> 'mitigation'),
            ''
        ) AS differs
    FROM params_long
    GROUP BY sweep, point_id
),
o AS (
    SELECT o.*, keyed.k, keyed.differs
    FROM outcomes AS o
    JOIN keyed USING (sweep, point_id)
)
SELECT
    CASE WHEN n.sweep = f.sweep THEN n.sweep ELSE n.sweep || ' vs ' || f.sweep END AS sweep,
    n.differs,
    n.trials AS trials_none,
    f.trials AS trials_flush,
    n.p_race AS p_race_none,
    n.p_race_hi AS p_race_none_hi,
    f.p_race AS p_race_flush,
    f.p_race_hi AS p_race_flush_hi,
    f.p_race / nullif(n.p_race, 0) AS race_ratio,
    n.p_bad AS p_bad_none,
    f.p_bad AS p_bad_flush,
    n.t_mean_us AS t_mean_none_us,
    f.t_mean_us AS t_mean_flush_us,
    f.t_mean_us - n.t_mean_us AS t_mean_change_us,
    n.t_p99_us AS t_p99_none_us,
    f.t_p99_us AS t_p99_flush_us,
    f.t_p99_us - n.t_p99_us AS t_p99_change_us,
    f.preflush_us AS preflush_us
FROM o AS n
JOIN o AS f ON n.k = f.k AND n.mitigation = 'none' AND f.mitigation = 'early_flush'
ORDER BY n.sweep, f.sweep, n.p_race DESC NULLS LAST, n.differs
