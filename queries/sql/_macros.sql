-- internal: macros used by the views and the named queries (loaded by queries.db.connect)
-- The exact 95% interval of k events in n trials (Clopper-Pearson, core.intervals.counted_interval via the
-- function count_ci of queries.estimates): what every counted outcome reports. NULL in gives NULL out.
CREATE OR REPLACE TEMP MACRO count_lo(k, n) AS count_ci(k, n, 0.95::DOUBLE).lo;

CREATE OR REPLACE TEMP MACRO count_hi(k, n) AS count_ci(k, n, 0.95::DOUBLE).hi;

-- 95% Wilson score interval, for comparison only (its coverage dips below 95% near n p ~ 0.1..1; no view
-- reports it), written to match core.stats.wilson operation for operation:
-- n = 0 gives (0, 1), k = 0 gives lo = 0, k = n gives hi = 1, NULL in gives NULL out.
CREATE OR REPLACE TEMP MACRO wilson_z() AS '1.9599639845400536'::DOUBLE;

-- The same at any z (wilson_z() gives 95%); capacity uses 97.5% when it intersects two intervals.
CREATE OR REPLACE TEMP MACRO wilson_centre_z(k, n, z) AS
    (k::DOUBLE / n::DOUBLE + z * z / (2.0 * n::DOUBLE))
    / (1.0 + z * z / n::DOUBLE);

CREATE OR REPLACE TEMP MACRO wilson_half_z(k, n, z) AS
    z * sqrt(
        (k::DOUBLE / n::DOUBLE) * (1.0 - k::DOUBLE / n::DOUBLE) / n::DOUBLE
        + z * z / (4.0 * n::DOUBLE * n::DOUBLE)
    ) / (1.0 + z * z / n::DOUBLE);

CREATE OR REPLACE TEMP MACRO wilson_lo_z(k, n, z) AS
    CASE
        WHEN k IS NULL OR n IS NULL THEN NULL
        WHEN n <= 0 OR k <= 0 THEN 0.0::DOUBLE
        ELSE greatest(0.0, least(1.0, wilson_centre_z(k, n, z) - wilson_half_z(k, n, z)))::DOUBLE
    END;

CREATE OR REPLACE TEMP MACRO wilson_hi_z(k, n, z) AS
    CASE
        WHEN k IS NULL OR n IS NULL THEN NULL
        WHEN n <= 0 OR k >= n THEN 1.0::DOUBLE
        ELSE greatest(0.0, least(1.0, wilson_centre_z(k, n, z) + wilson_half_z(k, n, z)))::DOUBLE
    END;

CREATE OR REPLACE TEMP MACRO wilson_lo(k, n) AS wilson_lo_z(k, n, wilson_z());

CREATE OR REPLACE TEMP MACRO wilson_hi(k, n) AS wilson_hi_z(k, n, wilson_z());

-- k / n as DOUBLE, NULL when n = 0
CREATE OR REPLACE TEMP MACRO prob(k, n) AS
    CASE WHEN n > 0 THEN k::DOUBLE / n::DOUBLE END;

-- Stop-time histogram (core.histogram): 16 log bins per decade from 1 us, bin b covers
-- [10^(b/16), 10^((b+1)/16)). For a quantile target (q * total), the first bin b whose
-- cumulative count c reaches it gives x = b + clamp((target - (c - h)) / h, 0, 1) and the
-- time is 10^(x / 16): log-linear inside the bin, as core.histogram.quantile.
CREATE OR REPLACE TEMP MACRO hist_x(b, c, h, target) AS
    b::DOUBLE + greatest(0.0, least(1.0, (target - (c - h)) / h));

CREATE OR REPLACE TEMP MACRO hist_us(x) AS pow(10.0, x / 16.0);

-- The same quantile as a time: NULL without a bin; +inf when the quantile lies in the open top bin
-- (b = 127, which holds every stop time >= 10^(127/16) ~ 8.66e7 us) and the largest stop time
-- reached 1e8 us, the top of the bins: its value is then unresolved, only ">= 8.66e7 us" is known
-- (core.histogram.quantile does the same). Otherwise clamped to the largest stop time seen, since
-- interpolation inside the last non-empty bin may overshoot it. x > 127 exactly when b = 127.
CREATE OR REPLACE TEMP MACRO hist_q(x, t_max) AS
    CASE
        WHEN x IS NULL THEN NULL
        WHEN x > 127 AND (t_max IS NULL OR t_max >= 1e8) THEN 'inf'::DOUBLE
        ELSE least(hist_us(x), t_max)
    END::DOUBLE;

-- A sum of floats in a fixed order (o, then the value), so the result is the same bytes whatever
-- order DuckDB's threads merge partial aggregates in. NULLs are skipped; all NULL gives NULL.
CREATE OR REPLACE TEMP MACRO osum(x, o) AS
    list_sum(list(x ORDER BY o, x));

-- The model bound of p_timeout (core.bounds, `timeout_max` in outcomes) of points pooled into one
-- cell: the trial-weighted mean of the points' bounds (a pooled p_timeout is that mean of the points'
-- values), a point where no timeout can happen counting 0 and one without a bound 1. An aggregate.
CREATE OR REPLACE TEMP MACRO pooled_timeout_max(n, can, tm) AS
    sum(n * CASE WHEN can THEN coalesce(tm, 1.0) ELSE 0.0 END) / nullif(sum(n), 0);

-- Estimates and intervals: the functions metric_ci, count_ci, outcome_possible, timeout_bound, zero_event_trials,
-- cmc_pool_shards, cmc_pool_strata, cmc_interval, ratio_interval and z_value are Python (queries.estimates
-- over core.intervals), registered per connection.

-- The adaptive stop rule of trials = "auto" sweeps, written to match core.precision.decide operation
-- for operation (tested against it): from a point's 95% estimate p in [lo, hi] over n trials and the same
-- metric's interval [look_lo, look_hi] at the rule's look level (core.precision.look_conf: alpha spent over
-- the looks), its status. The target decisions read the look interval, `precise` the 95% one.
-- target / rel may be NULL (criterion not given).
CREATE OR REPLACE TEMP MACRO precision_status(p, lo, hi, look_lo, look_hi, n, target, rel, max_trials, min_trials) AS
    CASE
        WHEN n < min_trials THEN 'open'
        WHEN target IS NOT NULL AND look_hi < target THEN 'below target'
        WHEN target IS NOT NULL AND look_lo > target THEN 'above target'
        WHEN rel IS NOT NULL AND p > 0 AND (hi - lo) / 2.0 <= rel * p THEN 'precise'
        WHEN n >= max_trials THEN 'budget exhausted'
        ELSE 'open'
    END;
