-- description: mitigation none vs early_flush at equal other parameters: by what factor the fix lowers p_race (95% interval), stop-time change, preflush cost
-- Pairs are matched on all other parameters, across sweeps too (`sweep` shows both when they differ);
-- model_rev is one of them, so a pair is always of one model revision (named in `model_rev`).
-- p_race is the sweep's estimator (`estimator`: cmc estimate and interval, or counts with exact bounds;
-- core.intervals).
-- race_factor = p_race(none) / p_race(early_flush), with a 95% interval (queries.estimates.ratio_interval):
-- 'delta-log' from the two estimates and their variances on the log scale when both are > 0 and
-- known to 25%; else 'bounds', the ratio of the 97.5% interval ends (Bonferroni), e.g. ">= lo" when
-- early_flush saw no race (race_factor NULL, race_factor_hi = inf). disagree: a side's cmc interval
-- misses its naive counts' interval. The fix's cost per kexec, the early flush's time (preflush_us:
-- its mean; p50, p99 from the stored preflush histogram, max), NULL where not stored or not run
-- (revision 2 runs no early flush on the panic path, wait = 0).
WITH keyed AS (
    SELECT
        sweep, point_id,
        string_agg(name || '=' || value, ',' ORDER BY ord) FILTER (WHERE name <> 'mitigation') AS k,
        coalesce(
            string_agg(name || '=' || CASE WHEN num IS NULL THEN value ELSE printf('%g', num) END, ' ' ORDER BY ord)
                FILTER (WHERE NOT is_default AND name <> 'mitigation'),
            ''
        ) AS differs
    FROM params_long
    GROUP BY sweep, point_id
),
o AS (
    SELECT
        o.*, keyed.k, keyed.differs,
        -- each side's p_race with its variance and 97.5% interval, for ratio_interval: core.intervals.estimate
        -- at 97.5%, the definition of the 95% one in `outcomes` (cmc where the point ran cmc, else exact)
        metric_ci('p_race', o.trials, o.race, o.hang, o.timeout, o.hang_possible, o.timeout_possible, o.timeout_max,
                  CASE WHEN o.p_race_method = 'cmc' THEN o.cmc_trials END,
                  CASE WHEN o.p_race_method = 'cmc' THEN o.p_race_cmc END,
                  CASE WHEN o.p_race_method = 'cmc' THEN o.p_race_cmc_var END,
                  o.n_cpus::BIGINT, 0.975::DOUBLE) AS race_ci975
    FROM outcomes AS o
    JOIN keyed USING (sweep, point_id)
),
pairs AS (
    SELECT
        n, f,
        ratio_interval(n.p_race, n.race_ci975.var, n.race_ci975.lo, n.race_ci975.hi,
                       f.p_race, f.race_ci975.var, f.race_ci975.lo, f.race_ci975.hi) AS r
    FROM o AS n
    JOIN o AS f ON n.k = f.k AND n.mitigation = 'none' AND f.mitigation = 'early_flush'
)
SELECT
    CASE WHEN n.sweep = f.sweep THEN n.sweep ELSE n.sweep || ' vs ' || f.sweep END AS sweep,
    n.model_rev AS model_rev,
    n.differs,
    CASE WHEN n.estimator = f.estimator THEN n.estimator ELSE n.estimator || '/' || f.estimator END AS estimator,
    n.trials AS trials_none,
    f.trials AS trials_flush,
    n.p_race AS p_race_none,
    n.p_race_lo AS p_race_none_lo,
    n.p_race_hi AS p_race_none_hi,
    f.p_race AS p_race_flush,
    f.p_race_lo AS p_race_flush_lo,
    f.p_race_hi AS p_race_flush_hi,
    r.ratio AS race_factor,
    r.lo AS race_factor_lo,
    r.hi AS race_factor_hi,
    r.method AS factor_method,
    coalesce(n.p_race_disagree, false) OR coalesce(f.p_race_disagree, false) AS disagree,
    n.p_bad AS p_bad_none,
    f.p_bad AS p_bad_flush,
    n.t_mean_us AS t_mean_none_us,
    f.t_mean_us AS t_mean_flush_us,
    f.t_mean_us - n.t_mean_us AS t_mean_change_us,
    n.t_p99_us AS t_p99_none_us,
    f.t_p99_us AS t_p99_flush_us,
    f.t_p99_us - n.t_p99_us AS t_p99_change_us,
    f.preflush_us AS preflush_us,
    f.preflush_p50_us AS preflush_p50_us,
    f.preflush_p99_us AS preflush_p99_us,
    f.preflush_max_us AS preflush_max_us
FROM pairs
ORDER BY n.sweep, f.sweep, n.model_rev DESC, n.p_race DESC NULLS LAST, n.differs
