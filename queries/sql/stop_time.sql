-- description: stop-time p50/p99/p999 (us) by n_cpus and wbinvd_us, histograms merged over the other parameters
-- A quantile of +inf lies in the histogram's open top bin: only ">= 8.66e7 us" is known (hist_q).
WITH pb AS (
    SELECT pp.sweep, pp.n_cpus, pp.wbinvd_us, b.b, b.h
    FROM point_bins AS b
    JOIN point_params AS pp USING (sweep, point_id)
),
g AS (
    SELECT sweep, n_cpus, wbinvd_us, b, sum(h)::DOUBLE AS h
    FROM pb
    GROUP BY sweep, n_cpus, wbinvd_us, b
),
cum AS (
    SELECT
        *,
        sum(h) OVER (PARTITION BY sweep, n_cpus, wbinvd_us ORDER BY b ROWS UNBOUNDED PRECEDING) AS c,
        sum(h) OVER (PARTITION BY sweep, n_cpus, wbinvd_us) AS tot
    FROM g
),
q AS (
    SELECT
        sweep, n_cpus, wbinvd_us,
        arg_min(hist_x(b, c, h, 0.5::DOUBLE * tot), b) FILTER (WHERE c >= 0.5::DOUBLE * tot) AS x50,
        arg_min(hist_x(b, c, h, 0.99::DOUBLE * tot), b) FILTER (WHERE c >= 0.99::DOUBLE * tot) AS x99,
        arg_min(hist_x(b, c, h, 0.999::DOUBLE * tot), b) FILTER (WHERE c >= 0.999::DOUBLE * tot) AS x999
    FROM cum
    GROUP BY sweep, n_cpus, wbinvd_us
),
cnt AS (
    SELECT
        sweep, n_cpus, wbinvd_us,
        count(*) AS points,
        sum(trials)::BIGINT AS trials,
        sum(hang)::BIGINT AS hang,
        osum(t_mean_us * (trials - hang), point_id) / nullif(sum(trials - hang), 0) AS t_mean_us,
        max(t_max_us) AS t_max_us
    FROM outcomes
    GROUP BY sweep, n_cpus, wbinvd_us
)
SELECT
    cnt.sweep, cnt.n_cpus, cnt.wbinvd_us, cnt.points, cnt.trials, cnt.hang,
    cnt.t_mean_us,
    hist_q(q.x50, cnt.t_max_us) AS t_p50_us,
    hist_q(q.x99, cnt.t_max_us) AS t_p99_us,
    hist_q(q.x999, cnt.t_max_us) AS t_p999_us,
    cnt.t_max_us
FROM cnt
LEFT JOIN q USING (sweep, n_cpus, wbinvd_us)
ORDER BY cnt.sweep, cnt.n_cpus, cnt.wbinvd_us
