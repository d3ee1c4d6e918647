-- description: p_race along each swept axis, the other swept axes held at their median values
-- A swept axis has more than one value within its sweep. The median of a numeric axis is
-- the lower middle of its distinct values; a text axis (mitigation) is held at its default
-- if swept over it, else at its first value. `held` lists the values the other axes are held at.
WITH swept AS (
    SELECT sweep, name, any_value(ord) AS ord
    FROM params_long
    GROUP BY sweep, name
    HAVING count(DISTINCT value) > 1
),
vals AS (
    SELECT DISTINCT l.sweep, l.name, l.value, l.num, l.is_default
    FROM params_long AS l
    JOIN swept USING (sweep, name)
),
med AS (
    SELECT
        sweep, name,
        quantile_disc(num, 0.5) AS med_num,
        coalesce(min(value) FILTER (WHERE is_default), min(value)) AS med_value
    FROM vals
    GROUP BY sweep, name
),
pl AS (
    SELECT
        l.sweep, l.point_id, l.name, l.value, l.num,
        CASE WHEN m.med_num IS NOT NULL THEN l.num = m.med_num ELSE l.value = m.med_value END AS at_med
    FROM params_long AS l
    JOIN med AS m USING (sweep, name)
),
off AS (
    SELECT sweep, point_id, count(*) FILTER (WHERE NOT at_med) AS n_off
    FROM pl
    GROUP BY sweep, point_id
),
sel AS (
    SELECT pl.sweep, pl.name AS axis, pl.value, pl.num, pl.point_id
    FROM pl
    JOIN off USING (sweep, point_id)
    WHERE off.n_off - CASE WHEN pl.at_med THEN 0 ELSE 1 END = 0
),
held AS (
    SELECT
        s.sweep, s.name AS axis,
        string_agg(
            m.name || '=' || CASE WHEN m.med_num IS NULL THEN m.med_value ELSE printf('%g', m.med_num) END,
            ' ' ORDER BY s2.ord
        ) FILTER (WHERE m.name <> s.name) AS held
    FROM swept AS s
    JOIN med AS m USING (sweep)
    JOIN swept AS s2 ON s2.sweep = m.sweep AND s2.name = m.name
    GROUP BY s.sweep, s.name
)
SELECT
    sel.sweep,
    sel.axis,
    sel.value,
    coalesce(held.held, '') AS held,
    count(*) AS points,
    sum(o.trials)::BIGINT AS trials,
    sum(o.race)::BIGINT AS race,
    prob(sum(o.race), sum(o.trials)) AS p_race,
    wilson_lo(sum(o.race), sum(o.trials)) AS p_race_lo,
    wilson_hi(sum(o.race), sum(o.trials)) AS p_race_hi
FROM sel
JOIN outcomes AS o USING (sweep, point_id)
JOIN swept AS sw ON sw.sweep = sel.sweep AND sw.name = sel.axis
LEFT JOIN held ON held.sweep = sel.sweep AND held.axis = sel.axis
GROUP BY sel.sweep, sel.axis, sw.ord, sel.value, sel.num, held.held
ORDER BY sel.sweep, sw.ord, sel.num NULLS LAST, sel.value
