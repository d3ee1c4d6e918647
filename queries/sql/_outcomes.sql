-- internal: the `outcomes` view, one row per (sweep, point_id) (SCHEMA.md); slots are filled in by queries.db
-- Bit-stable: float sums run over the shards in shard order (osum), never in the order threads
-- happen to merge partial sums, so the same files always give the same bytes.
CREATE OR REPLACE TEMP VIEW outcomes AS
WITH agg AS (
    SELECT
        sweep, point_id, @@param_any@@,
        count(*)::BIGINT AS shards,
        sum(trials)::BIGINT AS trials,
        sum(clean)::BIGINT AS clean,
        sum(nmi_clean)::BIGINT AS nmi_clean,
        sum(timeout)::BIGINT AS timeout,
        sum(race)::BIGINT AS race,
        sum(hang)::BIGINT AS hang,
        osum(CASE WHEN isfinite(t_done_sum_us) THEN t_done_sum_us END, shard) AS t_sum_us,
        max(t_done_max_us) FILTER (WHERE isfinite(t_done_max_us)) AS t_max_us,
        @@preflush@@ AS preflush_us,
        @@preflush_max@@ AS preflush_max_us,
        (@@flush_hangs@@)::BIGINT AS flush_hangs,
        @@cmc_agg@@,
        any_value(seed) AS seed
    FROM points
    GROUP BY sweep, point_id
),
cum AS (
    SELECT
        sweep, point_id, b, h::DOUBLE AS h,
        sum(h) OVER (PARTITION BY sweep, point_id ORDER BY b ROWS UNBOUNDED PRECEDING)::DOUBLE AS c,
        sum(h) OVER (PARTITION BY sweep, point_id)::DOUBLE AS tot
    FROM point_bins
),
q AS (
    SELECT
        sweep, point_id,
        arg_min(hist_x(b, c, h, 0.5::DOUBLE * tot), b) FILTER (WHERE c >= 0.5::DOUBLE * tot) AS x50,
        arg_min(hist_x(b, c, h, 0.99::DOUBLE * tot), b) FILTER (WHERE c >= 0.99::DOUBLE * tot) AS x99,
        arg_min(hist_x(b, c, h, 0.999::DOUBLE * tot), b) FILTER (WHERE c >= 0.999::DOUBLE * tot) AS x999
    FROM cum
    GROUP BY sweep, point_id
),
-- the same quantiles of the early flush's time (preflush_bins; early_flush points only)
pcum AS (
    SELECT
        sweep, point_id, b, h::DOUBLE AS h,
        sum(h) OVER (PARTITION BY sweep, point_id ORDER BY b ROWS UNBOUNDED PRECEDING)::DOUBLE AS c,
        sum(h) OVER (PARTITION BY sweep, point_id)::DOUBLE AS tot
    FROM preflush_bins
),
pq AS (
    SELECT
        sweep, point_id,
        arg_min(hist_x(b, c, h, 0.5::DOUBLE * tot), b) FILTER (WHERE c >= 0.5::DOUBLE * tot) AS px50,
        arg_min(hist_x(b, c, h, 0.99::DOUBLE * tot), b) FILTER (WHERE c >= 0.99::DOUBLE * tot) AS px99
    FROM pcum
    GROUP BY sweep, point_id
),
-- the cmc estimator (core.cmc), where the sweep ran it: shards pooled exactly as core.cmc_stats.combine,
-- interval from core.cmc_stats.estimate_interval (both through queries.estimates)
est AS (
    SELECT
        agg.*,
        coalesce(cmc_trials = trials AND cmc_trials > 0, false) AS is_cmc,
        -- CASE: DuckDB then calls the Python function only for points that have cmc shards
        -- (pool_shards of no shards is NULL anyway), not once per naive point
        CASE WHEN race_parts IS NOT NULL THEN cmc_pool_shards(race_parts, (n_cpus - 1)::DOUBLE, @@conf@@) END
            AS race_cmc,
        CASE WHEN bad_parts IS NOT NULL THEN cmc_pool_shards(bad_parts, n_cpus::DOUBLE, @@conf@@) END AS bad_cmc
    FROM agg
)
SELECT
    sweep, point_id, @@params@@,
    CASE WHEN is_cmc THEN 'cmc' ELSE 'naive' END AS estimator,
    shards, trials, clean, nmi_clean, timeout, race, hang,
    timeout + race + hang AS bad,
    trials - clean - flush_hangs AS nmi_phase,  -- trials that missed the 1 s REBOOT-vector wait (MODEL.md)
    -- p_race and p_bad: the sweep's estimator (cmc estimate and interval, or counts and Wilson)
    CASE WHEN is_cmc THEN race_cmc.p ELSE prob(race, trials) END AS p_race,
    CASE WHEN is_cmc THEN race_cmc.lo ELSE wilson_lo(race, trials) END AS p_race_lo,
    CASE WHEN is_cmc THEN race_cmc.hi ELSE wilson_hi(race, trials) END AS p_race_hi,
    prob(hang, trials) AS p_hang,
    wilson_lo(hang, trials) AS p_hang_lo,
    wilson_hi(hang, trials) AS p_hang_hi,
    prob(timeout, trials) AS p_timeout,
    wilson_lo(timeout, trials) AS p_timeout_lo,
    wilson_hi(timeout, trials) AS p_timeout_hi,
    CASE WHEN is_cmc THEN bad_cmc.p ELSE prob(timeout + race + hang, trials) END AS p_bad,
    CASE WHEN is_cmc THEN bad_cmc.lo ELSE wilson_lo(timeout + race + hang, trials) END AS p_bad_lo,
    CASE WHEN is_cmc THEN bad_cmc.hi ELSE wilson_hi(timeout + race + hang, trials) END AS p_bad_hi,
    CASE WHEN trials - hang > 0 THEN t_sum_us / (trials - hang) END AS t_mean_us,
    hist_q(x50, t_max_us) AS t_p50_us,
    hist_q(x99, t_max_us) AS t_p99_us,
    hist_q(x999, t_max_us) AS t_p999_us,
    t_max_us,
    preflush_us,  -- the early flush's mean time per kexec that ran it (NULL without one)
    hist_q(px50, preflush_max_us) AS preflush_p50_us,
    hist_q(px99, preflush_max_us) AS preflush_p99_us,
    preflush_max_us,
    -- the naive counts of the same trials, always, and whether they disagree with cmc: the two
    -- 95% intervals do not overlap (NULL for a naive sweep)
    prob(race, trials) AS p_race_naive,
    wilson_lo(race, trials) AS p_race_naive_lo,
    wilson_hi(race, trials) AS p_race_naive_hi,
    prob(timeout + race + hang, trials) AS p_bad_naive,
    wilson_lo(timeout + race + hang, trials) AS p_bad_naive_lo,
    wilson_hi(timeout + race + hang, trials) AS p_bad_naive_hi,
    CASE WHEN is_cmc THEN race_cmc.hi < wilson_lo(race, trials) OR race_cmc.lo > wilson_hi(race, trials) END
        AS p_race_disagree,
    CASE WHEN is_cmc THEN bad_cmc.hi < wilson_lo(timeout + race + hang, trials)
                       OR bad_cmc.lo > wilson_hi(timeout + race + hang, trials) END AS p_bad_disagree,
    cmc_trials,
    race_cmc.p AS p_race_cmc,
    race_cmc.var AS p_race_cmc_var,
    race_cmc.lo AS p_race_cmc_lo,
    race_cmc.hi AS p_race_cmc_hi,
    bad_cmc.p AS p_bad_cmc,
    bad_cmc.var AS p_bad_cmc_var,
    bad_cmc.lo AS p_bad_cmc_lo,
    bad_cmc.hi AS p_bad_cmc_hi,
    seed
FROM est
LEFT JOIN q USING (sweep, point_id)
LEFT JOIN pq USING (sweep, point_id);
