-- description: p_race along each swept axis, the other axes held at their medians and the scenario axes (wait, mitigation, model_rev) split out
-- param: split=wait,mitigation,model_rev [axes] comma-separated axes that are never held at a "median" but shown value by value
-- A swept axis has more than one value within its sweep. The median of a numeric axis is the lower
-- middle of its distinct values; a text axis is held at its default if swept over it, else at its
-- first value. Scenario axes ($split: by default wait, the panic path 0 or the kexec path 1,
-- mitigation, and model_rev, the model revision) are not nuisances to hold at a middle value: every row names its `scenario` (their
-- values) and each axis is shown once per scenario. `held` lists the values the other axes are held
-- at. p_race and its interval are `outcomes`' (core.intervals: `method`, cmc where the sweep ran it, else
-- exact on the counts); `disagree`: its cmc interval misses the counts'.
WITH swept AS (
    SELECT sweep, name, any_value(ord) AS ord, list_contains(string_split($split, ','), name) AS is_split
    FROM params_long
    GROUP BY sweep, name
    HAVING count(DISTINCT value) > 1
),
vals AS (
    SELECT DISTINCT l.sweep, l.name, l.value, l.num, l.is_default
    FROM params_long AS l
    JOIN swept AS s USING (sweep, name)
    WHERE NOT s.is_split
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
        l.sweep, l.point_id, l.name, l.value, l.num, s.ord, s.is_split,
        CASE WHEN s.is_split THEN true
             WHEN m.med_num IS NOT NULL THEN l.num = m.med_num
             ELSE l.value = m.med_value END AS at_med
    FROM params_long AS l
    JOIN swept AS s USING (sweep, name)
    LEFT JOIN med AS m USING (sweep, name)
),
off AS (
    SELECT sweep, point_id, count(*) FILTER (WHERE NOT at_med) AS n_off
    FROM pl
    GROUP BY sweep, point_id
),
sel AS (
    SELECT pl.sweep, pl.name AS axis, pl.ord, pl.value, pl.num, pl.point_id
    FROM pl
    JOIN off USING (sweep, point_id)
    WHERE off.n_off - CASE WHEN pl.at_med THEN 0 ELSE 1 END = 0
),
scen AS (
    SELECT
        sel.sweep, sel.axis, sel.point_id,
        coalesce(string_agg(p2.name || '=' || CASE WHEN p2.num IS NULL THEN p2.value ELSE printf('%g', p2.num) END,
                            ' ' ORDER BY p2.ord) FILTER (WHERE p2.is_split AND p2.name <> sel.axis), '') AS scenario
    FROM sel
    JOIN pl AS p2 ON p2.sweep = sel.sweep AND p2.point_id = sel.point_id
    GROUP BY sel.sweep, sel.axis, sel.point_id
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
    scen.scenario,
    coalesce(held.held, '') AS held,
    o.estimator,
    o.p_race_method AS method,
    o.trials,
    o.race,
    o.p_race,
    o.p_race_lo,
    o.p_race_hi,
    o.p_race_disagree AS disagree
FROM sel
JOIN scen USING (sweep, axis, point_id)
JOIN outcomes AS o USING (sweep, point_id)
LEFT JOIN held ON held.sweep = sel.sweep AND held.axis = sel.axis
ORDER BY sel.sweep, sel.ord, scen.scenario, sel.num NULLS LAST, sel.value
