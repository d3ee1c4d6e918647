-- internal: capacity cells for queries.capacity: one row per (by-axes, n_cpus), the worst point over the
-- other axes (largest 95% upper bound of the metric). Equal parameter sets in several sweeps are pooled.
-- Slots: @@src@@ (outcomes, filtered by --where), @@by_lead@@ ("a", "b", or empty), @@params@@, @@k@@ (the
-- metric's count column), @@cmc_m@@ / @@cmc_v@@ (the metric's cmc estimate and its variance in
-- `outcomes`, or NULL), @@ymax@@ (largest per-trial cmc value) and @@conf@@.
-- A cell's estimate is the sweep's estimator, as in `outcomes`: the cmc estimate and its interval where
-- the sweep ran cmc (several sweeps of the same parameters pooled by queries.estimates.pool_strata),
-- else the counts with Wilson bounds. The two are never intersected: where the naive counts' interval
-- misses the cmc one, `disagree` says so and the cmc numbers stand.
WITH pooled AS (
    SELECT
        @@params@@,
        sum(trials)::BIGINT AS trials,
        sum(@@k@@)::BIGINT AS k,
        cmc_pool_strata(
            list({'n': cmc_trials::BIGINT, 'm': (@@cmc_m@@)::DOUBLE, 'v': (@@cmc_v@@)::DOUBLE} ORDER BY sweep) FILTER (WHERE estimator = 'cmc'),
            (@@ymax@@)::DOUBLE, @@conf@@) AS cmc,
        max(t_p99_us) AS t_p99_us,
        max(t_p999_us) AS t_p999_us
    FROM @@src@@
    GROUP BY @@params@@
),
cells AS (
    SELECT
        *,
        CASE WHEN cmc IS NOT NULL THEN cmc.p ELSE prob(k, trials) END AS p,
        CASE WHEN cmc IS NOT NULL THEN cmc.lo ELSE wilson_lo(k, trials) END AS p_lo,
        CASE WHEN cmc IS NOT NULL THEN cmc.hi ELSE wilson_hi(k, trials) END AS p_hi,
        CASE WHEN cmc IS NOT NULL THEN 'cmc' ELSE 'naive' END AS estimator,
        CASE WHEN cmc IS NOT NULL THEN cmc.hi < wilson_lo(k, trials) OR cmc.lo > wilson_hi(k, trials) END
            AS disagree
    FROM pooled
),
worst AS (
    SELECT
        @@by_lead@@ n_cpus,
        count(*) AS points,
        min(trials) AS min_trials,
        max(trials) AS max_trials,
        arg_max(struct_pack(p := p, p_lo := p_lo, k := k, trials := trials, estimator := estimator,
                            disagree := disagree),
                struct_pack(p_hi := p_hi, p := p, trials := trials)) AS w,
        max(p_hi) AS p_hi,
        max(t_p99_us) AS t_p99_us,
        max(t_p999_us) AS t_p999_us
    FROM cells
    GROUP BY @@by_lead@@ n_cpus
)
SELECT
    @@by_lead@@ n_cpus, points, min_trials, max_trials,
    w.p AS p, w.p_lo AS p_lo, p_hi, w.k AS k, w.trials AS trials, w.estimator AS estimator,
    w.disagree AS disagree, t_p99_us, t_p999_us
FROM worst
ORDER BY @@by_lead@@ n_cpus
