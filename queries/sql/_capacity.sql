-- internal: capacity cells for queries.capacity: one row per (by-axes, n_cpus), the worst point over the
-- other axes (largest 95% upper bound of the metric). Equal parameter sets in several sweeps are pooled.
-- Slots: @@src@@ (outcomes, filtered by --where), @@by_lead@@ ("a", "b", or empty), @@params@@, @@metric@@
-- (the metric's name as a string literal), @@k@@ (its count column) and @@conf@@.
-- A cell's estimate and interval are core.intervals.estimate (queries.estimates.metric_ci) over the pooled
-- counts and, where the sweeps ran cmc, their pooled cmc race estimate (queries.estimates.pool_strata): the
-- same definition as `outcomes` (`method`: counted, cmc, cmc+counted, zero by model, bounded by model). Where the naive
-- counts' exact interval misses a cmc one, `disagree` says so and the cmc numbers stand.
WITH pooled AS (
    SELECT
        @@params@@,
        sum(trials)::BIGINT AS trials,
        sum(race)::BIGINT AS race,
        sum(hang)::BIGINT AS hang,
        sum(timeout)::BIGINT AS timeout,
        sum(@@k@@)::BIGINT AS k,
        bool_or(hang_possible) AS hang_possible,
        bool_or(timeout_possible) AS timeout_possible,
        pooled_timeout_max(trials, timeout_possible, timeout_max) AS timeout_max,
        cmc_pool_strata(
            list({'n': cmc_trials::BIGINT, 'm': p_race_cmc::DOUBLE, 'v': p_race_cmc_var::DOUBLE} ORDER BY sweep)
                FILTER (WHERE p_race_method = 'cmc'),
            (n_cpus - 1)::DOUBLE, @@conf@@) AS cmc,
        max(t_p99_us) AS t_p99_us,
        max(t_p999_us) AS t_p999_us
    FROM @@src@@
    GROUP BY @@params@@
),
est AS (
    SELECT
        *,
        metric_ci(@@metric@@, trials, race, hang, timeout, hang_possible, timeout_possible, timeout_max,
                  cmc.n, cmc.p, cmc.var, n_cpus::BIGINT, @@conf@@) AS m,
        count_ci(k, trials, @@conf@@) AS naive
    FROM pooled
),
cells AS (
    SELECT
        *,
        m.p AS p,
        m.lo AS p_lo,
        m.hi AS p_hi,
        m.method AS method,
        CASE WHEN cmc IS NOT NULL THEN 'cmc' ELSE 'naive' END AS estimator,
        CASE WHEN m.method IN ('cmc', 'cmc+counted') THEN m.hi < naive.lo OR m.lo > naive.hi END AS disagree
    FROM est
),
worst AS (
    SELECT
        @@by_lead@@ n_cpus,
        count(*) AS points,
        min(trials) AS min_trials,
        max(trials) AS max_trials,
        arg_max(struct_pack(p := p, p_lo := p_lo, k := k, trials := trials, estimator := estimator,
                            method := method, disagree := disagree, race := race, hang := hang,
                            timeout := timeout, hang_possible := hang_possible,
                            timeout_possible := timeout_possible, timeout_max := timeout_max, cmc_n := cmc.n, cmc_m := cmc.p,
                            cmc_v := cmc.var),
                struct_pack(p_hi := p_hi, p := p, trials := trials)) AS w,
        max(p_hi) AS p_hi,
        max(t_p99_us) AS t_p99_us,
        max(t_p999_us) AS t_p999_us
    FROM cells
    GROUP BY @@by_lead@@ n_cpus
)
SELECT
    @@by_lead@@ n_cpus, points, min_trials, max_trials,
    w.p AS p, w.p_lo AS p_lo, p_hi, w.k AS k, w.trials AS trials, w.estimator AS estimator, w.method AS method,
    w.disagree AS disagree, w.race AS race, w.hang AS hang, w.timeout AS timeout,
    w.hang_possible AS hang_possible, w.timeout_possible AS timeout_possible, w.timeout_max AS timeout_max,
    w.cmc_n AS cmc_n, w.cmc_m AS cmc_m, w.cmc_v AS cmc_v, t_p99_us, t_p999_us
FROM worst
ORDER BY @@by_lead@@ n_cpus
