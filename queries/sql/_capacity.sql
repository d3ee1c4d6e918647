-- internal: capacity cells for queries.capacity: one row per (by-axes, n_cpus), the worst point over the
-- other axes (largest 95% upper bound of the metric). Equal parameter sets in several sweeps are pooled.
-- Slots: @@by_lead@@ ("a", "b", or empty), @@params@@, @@k@@ (the metric's count column),
-- @@cmc_m@@ / @@cmc_v@@ (the metric's cmc estimate and its variance in `outcomes`, or NULL) and
-- @@ymax@@ (largest per-trial cmc value). Where the sweep ran the cmc estimator, the cell takes
-- the tighter of the two bounds (cmc and Wilson on the naive counts of the same trials): each is
-- computed at 97.5% so their intersection still covers with >= 95% (Bonferroni). cmc is orders
-- of magnitude tighter for rare races; Wilson is tighter where cmc saw only zeros. Pooling cmc
-- estimates of the same parameters from several sweeps weights them by trials and ignores
-- between-sweep spread (exact for one sweep).
WITH pooled AS (
    SELECT
        @@params@@,
        sum(trials)::BIGINT AS trials,
        sum(@@k@@)::BIGINT AS k,
        sum(cmc_trials)::BIGINT AS cmc_n,
        sum(cmc_trials * @@cmc_m@@) / nullif(sum(cmc_trials) FILTER (WHERE @@cmc_m@@ IS NOT NULL), 0) AS cmc_m,
        sum(cmc_trials::DOUBLE * cmc_trials * @@cmc_v@@) / nullif(pow(sum(cmc_trials) FILTER (WHERE @@cmc_m@@ IS NOT NULL), 2), 0) AS cmc_v,
        max(t_p99_us) AS t_p99_us,
        max(t_p999_us) AS t_p999_us
    FROM outcomes
    GROUP BY @@params@@
),
cells AS (
    SELECT
        *,
        coalesce(cmc_m, prob(k, trials)) AS p,
        CASE WHEN cmc_m IS NOT NULL
             THEN greatest(cmc_lo_z(cmc_m, cmc_v, cmc_n, @@ymax@@, @@z975@@, 0.0125), wilson_lo_z(k, trials, @@z975@@))
             ELSE wilson_lo(k, trials) END AS p_lo,
        CASE WHEN cmc_m IS NOT NULL
             THEN least(cmc_hi_z(cmc_m, cmc_v, cmc_n, @@ymax@@, @@z975@@, 0.0125), wilson_hi_z(k, trials, @@z975@@))
             ELSE wilson_hi(k, trials) END AS p_hi,
        CASE WHEN cmc_m IS NOT NULL THEN 'cmc' ELSE 'naive' END AS estimator
    FROM pooled
),
worst AS (
    SELECT
        @@by_lead@@ n_cpus,
        count(*) AS points,
        min(trials) AS min_trials,
        max(trials) AS max_trials,
        arg_max(struct_pack(p := p, p_lo := p_lo, k := k, trials := trials, estimator := estimator), p_hi) AS w,
        max(p_hi) AS p_hi,
        max(t_p99_us) AS t_p99_us,
        max(t_p999_us) AS t_p999_us
    FROM cells
    GROUP BY @@by_lead@@ n_cpus
)
SELECT
    @@by_lead@@ n_cpus, points, min_trials, max_trials,
    w.p AS p, w.p_lo AS p_lo, p_hi, w.k AS k, w.trials AS trials, w.estimator AS estimator,
    t_p99_us, t_p999_us
FROM worst
ORDER BY @@by_lead@@ n_cpus
