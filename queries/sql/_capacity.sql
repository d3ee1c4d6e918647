-- internal: capacity cells for queries.capacity: one row per (by-axes, n_cpus), the worst point over the
-- other axes (largest 95% upper bound of the metric). Equal parameter sets in several sweeps are pooled.
-- Slots: @@by_lead@@ ("a", "b", or empty), @@params@@, @@k@@ (the metric's count column).
WITH pooled AS (
    SELECT
        @@params@@,
        sum(trials)::BIGINT AS trials,
        sum(@@k@@)::BIGINT AS k,
        max(t_p99_us) AS t_p99_us,
        max(t_p999_us) AS t_p999_us
    FROM outcomes
    GROUP BY @@params@@
),
cells AS (
    SELECT *, prob(k, trials) AS p, wilson_lo(k, trials) AS p_lo, wilson_hi(k, trials) AS p_hi
    FROM pooled
),
worst AS (
    SELECT
        @@by_lead@@ n_cpus,
        count(*) AS points,
        min(trials) AS min_trials,
        max(trials) AS max_trials,
        arg_max(struct_pack(p := p, p_lo := p_lo, k := k, trials := trials), p_hi) AS w,
        max(p_hi) AS p_hi,
        max(t_p99_us) AS t_p99_us,
        max(t_p999_us) AS t_p999_us
    FROM cells
    GROUP BY @@by_lead@@ n_cpus
)
SELECT
    @@by_lead@@ n_cpus, points, min_trials, max_trials,
    w.p AS p, w.p_lo AS p_lo, p_hi, w.k AS k, w.trials AS trials,
    t_p99_us, t_p999_us
FROM worst
ORDER BY @@by_lead@@ n_cpus
