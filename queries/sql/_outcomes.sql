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
-- the cmc estimator (core.estimators.cmc), where the sweep ran it: shards pooled exactly as
-- core.estimators.cmc.stats.combine (queries.estimates.pool_shards)
est AS (
    SELECT
        agg.*,
        coalesce(cmc_trials = trials AND cmc_trials > 0, false) AS is_cmc,
        -- CASE: DuckDB then calls the Python function only for points that have cmc shards
        -- (pool_shards of no shards is NULL anyway), not once per naive point
        CASE WHEN race_parts IS NOT NULL THEN cmc_pool_shards(race_parts, (n_cpus - 1)::DOUBLE, @@conf@@) END
            AS race_cmc,
        CASE WHEN bad_parts IS NOT NULL THEN cmc_pool_shards(bad_parts, n_cpus::DOUBLE, @@conf@@) END AS bad_cmc,
        outcome_possible(wait::BIGINT, p_unresponsive::DOUBLE) AS can,
        -- core.bounds' model upper bound of p_timeout, where a timeout can happen (wait = 0) and none
        -- was counted (a counted timeout's interval is rarely above it; the function costs ~1 ms a point)
        CASE WHEN wait = 0 AND timeout = 0 THEN timeout_bound(@@bound_args@@) END AS timeout_max
    FROM agg
),
-- every metric's estimate and interval: core.intervals.estimate (queries.estimates.point_metrics), the one
-- definition: counted parts exact (Clopper-Pearson, or 0 where the model cannot produce the outcome),
-- p_race the cmc estimate where the point ran cmc, p_bad under cmc its race part plus the counted part
m0 AS (
    SELECT
        est.*,
        point_metrics(trials, race, hang, timeout, can.hang, can.timeout, timeout_max,
                      CASE WHEN is_cmc THEN race_cmc.n END, CASE WHEN is_cmc THEN race_cmc.p END,
                      CASE WHEN is_cmc THEN race_cmc.var END, n_cpus::BIGINT, @@conf@@) AS pm
    FROM est
),
m AS (
    SELECT
        m0.*,
        pm.p_race AS m_race, pm.p_bad AS m_bad, pm.p_hang AS m_hang, pm.p_timeout AS m_timeout,
        pm.naive_race AS n_race, pm.naive_bad AS n_bad
    FROM m0
)
SELECT
    sweep, point_id, @@params@@,
    CASE WHEN is_cmc THEN 'cmc' ELSE 'naive' END AS estimator,
    shards, trials, clean, nmi_clean, timeout, race, hang,
    timeout + race + hang AS bad,
    trials - clean - flush_hangs AS nmi_phase,  -- trials that missed the 1 s REBOOT-vector wait (MODEL.md)
    -- each metric's estimate and 95% interval, and how it was made (`*_method`: counted, cmc, cmc+counted,
    -- zero by model, bounded by model; core.intervals)
    m_race.p AS p_race,
    m_race.lo AS p_race_lo,
    m_race.hi AS p_race_hi,
    m_race.method AS p_race_method,
    m_hang.p AS p_hang,
    m_hang.lo AS p_hang_lo,
    m_hang.hi AS p_hang_hi,
    m_hang.method AS p_hang_method,
    m_timeout.p AS p_timeout,
    m_timeout.lo AS p_timeout_lo,
    m_timeout.hi AS p_timeout_hi,
    m_timeout.method AS p_timeout_method,
    m_bad.p AS p_bad,
    m_bad.lo AS p_bad_lo,
    m_bad.hi AS p_bad_hi,
    m_bad.method AS p_bad_method,
    can.hang AS hang_possible,
    can.timeout AS timeout_possible,
    timeout_max,
    CASE WHEN trials - hang > 0 THEN t_sum_us / (trials - hang) END AS t_mean_us,
    hist_q(x50, t_max_us) AS t_p50_us,
    hist_q(x99, t_max_us) AS t_p99_us,
    hist_q(x999, t_max_us) AS t_p999_us,
    t_max_us,
    preflush_us,  -- the early flush's mean time per kexec that ran it (NULL without one)
    hist_q(px50, preflush_max_us) AS preflush_p50_us,
    hist_q(px99, preflush_max_us) AS preflush_p99_us,
    preflush_max_us,
    -- the naive counts of the same trials, always (exact intervals), and whether they disagree with cmc:
    -- the two 95% intervals do not overlap (NULL for a naive sweep)
    prob(race, trials) AS p_race_naive,
    n_race.lo AS p_race_naive_lo,
    n_race.hi AS p_race_naive_hi,
    prob(timeout + race + hang, trials) AS p_bad_naive,
    n_bad.lo AS p_bad_naive_lo,
    n_bad.hi AS p_bad_naive_hi,
    CASE WHEN is_cmc THEN m_race.hi < n_race.lo OR m_race.lo > n_race.hi END AS p_race_disagree,
    CASE WHEN is_cmc THEN m_bad.hi < n_bad.lo OR m_bad.lo > n_bad.hi END AS p_bad_disagree,
    cmc_trials,
    race_cmc.p AS p_race_cmc,
    race_cmc.var AS p_race_cmc_var,
    race_cmc.lo AS p_race_cmc_lo,
    race_cmc.hi AS p_race_cmc_hi,
    -- the stored cmc value of p_bad pooled (its hang/timeout part is a 0/1 count, so its own sample
    -- variance says nothing when none was seen: no interval is built on it; p_bad_lo/hi is the interval)
    bad_cmc.p AS p_bad_cmc,
    bad_cmc.var AS p_bad_cmc_var,
    seed
FROM m
LEFT JOIN q USING (sweep, point_id)
LEFT JOIN pq USING (sweep, point_id);
