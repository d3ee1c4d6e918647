-- internal: the `outcomes` view, one row per (sweep, point_id) (SCHEMA.md); slots are filled in by queries.db
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
        sum(t_done_sum_us) FILTER (WHERE isfinite(t_done_sum_us)) AS t_sum_us,
        max(t_done_max_us) FILTER (WHERE isfinite(t_done_max_us)) AS t_max_us,
        @@preflush@@ AS preflush_us,
        @@cmc_agg@@,
        any_value(seed) AS seed,
        sum(wall_s) AS wall_s
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
)
SELECT
    sweep, point_id, @@params@@,
    shards, trials, clean, nmi_clean, timeout, race, hang,
    timeout + race + hang AS bad,
    trials - clean AS nmi_phase,  -- trials that missed the 1 s REBOOT-vector wait (MODEL.md)
    prob(race, trials) AS p_race,
    wilson_lo(race, trials) AS p_race_lo,
    wilson_hi(race, trials) AS p_race_hi,
    prob(hang, trials) AS p_hang,
    wilson_lo(hang, trials) AS p_hang_lo,
    wilson_hi(hang, trials) AS p_hang_hi,
    prob(timeout, trials) AS p_timeout,
    wilson_lo(timeout, trials) AS p_timeout_lo,
    wilson_hi(timeout, trials) AS p_timeout_hi,
    prob(timeout + race + hang, trials) AS p_bad,
    wilson_lo(timeout + race + hang, trials) AS p_bad_lo,
    wilson_hi(timeout + race + hang, trials) AS p_bad_hi,
    CASE WHEN trials - hang > 0 THEN t_sum_us / (trials - hang) END AS t_mean_us,
    -- interpolation inside the last bin may overshoot the largest stop seen: clamp (as core.histogram.quantile)
    least(hist_us(x50), t_max_us) AS t_p50_us,
    least(hist_us(x99), t_max_us) AS t_p99_us,
    least(hist_us(x999), t_max_us) AS t_p999_us,
    t_max_us,
    preflush_us,
    -- the cmc estimator (core.cmc), where the sweep ran it: shards pooled exactly, 95% interval
    cmc_trials,
    p_race_cmc,
    pooled_var(p_race_cmc_ss, p_race_cmc, cmc_trials) AS p_race_cmc_var,
    cmc_lo(p_race_cmc, pooled_var(p_race_cmc_ss, p_race_cmc, cmc_trials), cmc_trials, n_cpus - 1) AS p_race_cmc_lo,
    cmc_hi(p_race_cmc, pooled_var(p_race_cmc_ss, p_race_cmc, cmc_trials), cmc_trials, n_cpus - 1) AS p_race_cmc_hi,
    p_bad_cmc,
    pooled_var(p_bad_cmc_ss, p_bad_cmc, cmc_trials) AS p_bad_cmc_var,
    cmc_lo(p_bad_cmc, pooled_var(p_bad_cmc_ss, p_bad_cmc, cmc_trials), cmc_trials, n_cpus) AS p_bad_cmc_lo,
    cmc_hi(p_bad_cmc, pooled_var(p_bad_cmc_ss, p_bad_cmc, cmc_trials), cmc_trials, n_cpus) AS p_bad_cmc_hi,
    seed,
    wall_s
FROM agg
LEFT JOIN q USING (sweep, point_id);
