-- internal: macros used by the views and the named queries (loaded by queries.db.connect)
-- 95% Wilson score interval, written to match core.stats.wilson operation for operation:
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

-- The cmc estimator's interval from (mean, variance of the mean, trials, largest per-trial value)
-- at normal quantile z with tail (1 - conf) / 2, written to match core.cmc.estimate_interval: a
-- normal interval with a half-width floor of 1e-9 * mean, or, with zero sample variance,
-- [m (1 - q), m + (ymax - m) q] with q = 1 - tail^(1/n) (the exact bound on a value never seen
-- in n trials). cmc_lo/cmc_hi are the 95% ones.
-- q without cancellation: 1 - exp(x) = -x (1 + x/2 + x^2/6) to ~1e-17 once |x| < 1e-5
CREATE OR REPLACE TEMP MACRO cmc_q(n, tail) AS
    CASE WHEN abs(ln(tail) / n::DOUBLE) < 1e-5
         THEN -(ln(tail) / n::DOUBLE) * (1.0 + ln(tail) / n::DOUBLE / 2.0 + pow(ln(tail) / n::DOUBLE, 2) / 6.0)
         ELSE 1.0 - exp(ln(tail) / n::DOUBLE) END;

CREATE OR REPLACE TEMP MACRO cmc_lo_z(m, v, n, ymax, z, tail) AS
    CASE
        WHEN m IS NULL OR n IS NULL OR n <= 0 THEN NULL
        WHEN n >= 2 AND v > 0 THEN greatest(0.0, m - greatest(z * sqrt(v), 1e-9 * m))
        ELSE greatest(0.0, m * (1.0 - cmc_q(n, tail)) - 1e-9 * m)
    END::DOUBLE;

CREATE OR REPLACE TEMP MACRO cmc_hi_z(m, v, n, ymax, z, tail) AS
    CASE
        WHEN m IS NULL OR n IS NULL OR n <= 0 THEN NULL
        WHEN n >= 2 AND v > 0 THEN least(ymax::DOUBLE, m + greatest(z * sqrt(v), 1e-9 * m))
        ELSE least(ymax::DOUBLE, m + (ymax - m) * cmc_q(n, tail) + 1e-9 * m)
    END::DOUBLE;

CREATE OR REPLACE TEMP MACRO cmc_lo(m, v, n, ymax) AS cmc_lo_z(m, v, n, ymax, wilson_z(), 0.025);

CREATE OR REPLACE TEMP MACRO cmc_hi(m, v, n, ymax) AS cmc_hi_z(m, v, n, ymax, wilson_z(), 0.025);

-- Variance of the pooled mean from per-shard sums: ss = sum n_k (n_k - 1) var_k + n_k mean_k^2
-- (core.cmc.combine): (ss - N m^2) / (N - 1) / N, clamped at 0 against rounding.
CREATE OR REPLACE TEMP MACRO pooled_var(ss, m, n) AS
    CASE WHEN n >= 2 THEN greatest(0.0, (ss - n * m * m) / (n - 1.0) / n) ELSE 0.0 END::DOUBLE;

-- The adaptive stop rule of trials = "auto" sweeps, written to match core.precision.decide operation
-- for operation (tested against it): from a point's estimate p in [lo, hi] over n trials, its status.
-- target / rel may be NULL (criterion not given).
CREATE OR REPLACE TEMP MACRO precision_status(p, lo, hi, n, target, rel, max_trials, min_trials) AS
    CASE
        WHEN n < min_trials THEN 'open'
        WHEN target IS NOT NULL AND hi < target THEN 'below target'
        WHEN target IS NOT NULL AND lo > target THEN 'above target'
        WHEN rel IS NOT NULL AND p > 0 AND (hi - lo) / 2.0 <= rel * p THEN 'precise'
        WHEN n >= max_trials THEN 'budget exhausted'
        ELSE 'open'
    END;
