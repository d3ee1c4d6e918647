-- internal: views over `points` (loaded by queries.db.connect; slots are filled in from core.params)

-- One row per point: its parameters.
CREATE OR REPLACE TEMP VIEW point_params AS
SELECT sweep, point_id, @@param_any@@
FROM points
GROUP BY sweep, point_id;

-- One row per (point, parameter): the value as text and as a number (NULL for strings),
-- its position in core.params and whether it is the default.
CREATE OR REPLACE TEMP VIEW params_long AS
SELECT
    l.sweep, l.point_id, l.name, p.ord, l.value,
    TRY_CAST(l.value AS DOUBLE) AS num,
    p.default_value,
    CASE WHEN p.default_num IS NOT NULL THEN TRY_CAST(l.value AS DOUBLE) = p.default_num
         ELSE l.value = p.default_value END AS is_default
FROM (
    UNPIVOT (SELECT sweep, point_id, @@param_varchar@@ FROM point_params)
    ON @@params@@
    INTO NAME name VALUE value
) AS l
JOIN params AS p USING (name);

-- One row per point: the parameters that differ from core.params.DEFAULTS, as "name=value ..."
CREATE OR REPLACE TEMP VIEW differs AS
SELECT
    sweep, point_id,
    coalesce(
        string_agg(name || '=' || CASE WHEN num IS NULL THEN value ELSE printf('%g', num) END, ' ' ORDER BY ord)
            FILTER (WHERE NOT is_default),
        ''
    ) AS differs
FROM params_long
GROUP BY sweep, point_id;

-- One row per (point, non-empty preflush bin b = 0..127): the early flush's time per kexec
-- (`preflush_hist`, the stop-time bins over preflush_us; early_flush points only) summed over shards.
CREATE OR REPLACE TEMP VIEW preflush_bins AS
SELECT sweep, point_id, b, sum(h) AS h
FROM (
    SELECT sweep, point_id, unnest(@@preflush_hist@@) AS h, generate_subscripts(@@preflush_hist@@, 1) - 1 AS b
    FROM points
    WHERE @@preflush_hist@@ IS NOT NULL
)
WHERE h > 0
GROUP BY sweep, point_id, b;

-- One row per (point, non-empty histogram bin b = 0..127): the bin count summed over shards.
CREATE OR REPLACE TEMP VIEW point_bins AS
SELECT sweep, point_id, b, sum(h) AS h
FROM (
    SELECT sweep, point_id, unnest(t_done_hist) AS h, generate_subscripts(t_done_hist, 1) - 1 AS b
    FROM points
)
WHERE h > 0
GROUP BY sweep, point_id, b;
