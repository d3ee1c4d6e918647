"""Estimates and intervals the queries report, as plain Python and as DuckDB functions.

One definition each, used by the SQL views (registered on every connection by
`register`) and callable from Python (the HTTP service, tests):

- `metric_ci`: a metric's estimate and interval from a point's (or a pooled cell's) counts,
  its integrated race estimate and which outcomes can happen: core.intervals.estimate,
  exactly (counted parts Clopper-Pearson, p_race cmc, p_bad under cmc the Bonferroni sum of
  the two; `method` says which). Every view's p_* / p_*_lo / p_*_hi comes from it.
- `point_metrics`: all four metrics of a point plus the exact intervals of its race and bad counts in one
  call (the `outcomes` view: one pass over the columns instead of six).
- `count_ci`: the exact interval of k events in n trials (core.intervals.counted_interval),
  for the naive columns beside a cmc estimate and ad-hoc SQL.
- `metric_resolution`: core.intervals.resolution, whether a bound at or above a target is so only for
  want of trials (0 events) and how many trials with 0 events would bring it below.
- `outcome_possible`: core.intervals.possible (a hang needs wait = 1 and p_unresponsive > 0,
  a timeout wait = 0), `zero_event_trials`: core.stats.zero_event_trials (NULL beyond its cap).
- `pool_shards`: a point's cmc estimate from its shards, exactly
  core.estimators.cmc.stats.combine (as if one pass over all trials), with the interval of
  core.estimators.cmc.stats.estimate_interval. The `outcomes` view calls it per point.
- `pool_strata`: one estimate from independent estimates of several points or
  sweeps (capacity pools equal parameter sets across sweeps, plot pools the
  points of a cell): the trial-weighted mean sum n_k m_k / N, whose variance is
  sum n_k^2 v_k / N^2 (the estimates are independent and the weights fixed), and
  the same estimate_interval. For one stratum it returns that stratum unchanged.
- `ratio_interval`: the ratio of two independent estimates with a 95% interval
  (mitigation_effect's factor p_race(none) / p_race(early_flush); see there).
- `cmc_interval`: estimate_interval itself, for ad-hoc SQL.

The interval functions are never re-derived here or in SQL: whatever core.intervals does,
every query reports the same interval. The vectorized functions compute each distinct row
once per batch (many points share (k, n), e.g. 0 events in the same trials).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import duckdb
import pyarrow as pa
from duckdb import sqltypes as T

from core.bounds import BOUND_PARAMS, timeout_max_of
from core.estimators.cmc.stats import combine, estimate_interval
from core.intervals import CONF, Observed, estimate, estimate_many, possible, resolution
from core.params import SPECS
from core.stats import clopper_pearson_many, z_value, zero_event_trials

__all__ = ["CONF", "RATIO_MAX_CV", "pool_shards", "pool_strata", "ratio_interval", "cmc_interval", "metric_ci",
           "metric_resolution", "register"]

RATIO_MAX_CV = 0.25
"""Largest relative standard error of either side for the log-scale delta interval of a ratio."""


def _parts(parts: Iterable[Mapping[str, Any]] | None) -> list[tuple[int, float, float]]:
    """(n, mean, variance of the mean) of every part with n > 0 and a finite mean."""
    out = []
    for p in parts or ():
        if p is None:
            continue
        n, m, v = p.get("n"), p.get("m"), p.get("v")
        if n is None or m is None or n <= 0 or not math.isfinite(m):
            continue
        out.append((int(n), float(m), float(v) if v is not None and math.isfinite(v) else float("nan")))
    return out


def _result(n: int, m: float, v: float, y_max: float, conf: float) -> dict[str, Any]:
    lo, hi = estimate_interval(m, v, n, conf, y_max)
    return {"n": n, "p": m, "var": v, "lo": lo, "hi": hi}


def pool_shards(parts: Iterable[Mapping[str, Any]] | None, y_max: float, conf: float = CONF) -> dict[str, Any] | None:
    """{n, p, var, lo, hi} of the shards {n, m, v} of one point (core combine + estimate_interval); None if none."""
    ps = _parts(parts)
    if not ps:
        return None
    n, m, v = combine(ps)
    return _result(n, m, v, y_max, conf)


def pool_strata(parts: Iterable[Mapping[str, Any]] | None, y_max: float, conf: float = CONF) -> dict[str, Any] | None:
    """{n, p, var, lo, hi} of independent estimates {n, m, v} pooled with weights n_k / N (see the module doc)."""
    ps = _parts(parts)
    if not ps:
        return None
    if len(ps) == 1:
        return _result(*ps[0], y_max, conf)
    big_n = sum(n for n, _, _ in ps)
    m = sum(n * mu for n, mu, _ in ps) / big_n
    v = sum(n * n * var for n, _, var in ps) / big_n / big_n
    return _result(big_n, m, v, y_max, conf)


def cmc_interval(m: float | None, v: float | None, n: int | None, y_max: float, conf: float = CONF) -> dict | None:
    """{lo, hi}: core.estimators.cmc.stats.estimate_interval (None when m or n is missing)."""
    if m is None or n is None:
        return None
    lo, hi = estimate_interval(m, float("nan") if v is None else v, n, conf, y_max)
    return {"lo": lo, "hi": hi}


def ratio_interval(
    p_num: float | None, v_num: float | None, lo_num: float | None, hi_num: float | None,
    p_den: float | None, v_den: float | None, lo_den: float | None, hi_den: float | None,
    conf: float = CONF,
) -> dict[str, Any] | None:
    """{ratio, lo, hi, method} for p_num / p_den from two independent estimates.

    Each side gives its estimate p, the variance v of that estimate, and an interval
    (lo, hi) at confidence 1 - (1 - conf) / 2 (97.5% for a 95% ratio interval).

    - 'delta-log' when both estimates are > 0 with relative standard error at most
      RATIO_MAX_CV: log(ratio) = log p_num - log p_den has variance
      v_num / p_num^2 + v_den / p_den^2 to first order (independent sides), and
      ratio * exp(+-z sqrt(that)) is the interval. Both estimators are means of many
      iid per-trial values, so each is close to normal; on the log scale the interval
      stays positive and asymmetric like the ratio itself, and with relative errors
      <= 25% the first-order term dominates (Fieller's interval differs from it by
      O(cv^2), and only becomes unbounded when a denominator's cv approaches 1/z,
      a case the next rule covers without a normal approximation).
    - 'bounds' otherwise (a side is 0, has no variance, or is too uncertain): the ratio
      of the sides' interval ends, [lo_num / hi_den, hi_num / lo_den]; with each side at
      1 - (1 - conf) / 2 both cover together with probability >= conf (Bonferroni).
      hi is +inf when lo_den = 0; the ratio itself is None when p_den = 0.
    Always lo <= ratio <= hi when each side's interval holds its estimate.
    """
    if p_num is None or p_den is None:
        return None
    cv_ok = (p_num > 0 and p_den > 0 and v_num is not None and v_den is not None and v_num > 0 and v_den > 0
             and math.sqrt(v_num) <= RATIO_MAX_CV * p_num and math.sqrt(v_den) <= RATIO_MAX_CV * p_den)
    if cv_ok:
        r = p_num / p_den
        s = math.sqrt(v_num / (p_num * p_num) + v_den / (p_den * p_den))  # type: ignore[operator]
        z = z_value(conf)
        return {"ratio": r, "lo": min(r, r * math.exp(-z * s)), "hi": max(r, r * math.exp(z * s)),
                "method": "delta-log"}
    if None in (lo_num, hi_num, lo_den, hi_den):
        return None
    r = p_num / p_den if p_den > 0 else None  # type: ignore[assignment]
    lo = lo_num / hi_den if hi_den > 0 else 0.0  # type: ignore[operator]
    hi = hi_num / lo_den if lo_den > 0 else math.inf  # type: ignore[operator]
    if r is not None:  # rounding of the divisions must not put the ratio outside
        lo, hi = min(lo, r), max(hi, r)
    return {"ratio": r, "lo": lo, "hi": hi, "method": "bounds"}


def _observed(trials, race, hang, timeout, hang_possible, timeout_possible, timeout_max, cmc_n, cmc_m, cmc_v,
              n_cpus) -> Observed:
    race_cmc = None
    if cmc_n is not None and cmc_m is not None and cmc_n > 0:
        race_cmc = (int(cmc_n), float(cmc_m), float("nan") if cmc_v is None else float(cmc_v))
    return Observed(int(trials), int(race), int(hang), int(timeout), race_cmc, int(n_cpus),
                    bool(hang_possible), bool(timeout_possible), 1.0 if timeout_max is None else float(timeout_max))


def metric_ci(
    metric: str, trials: int, race: int, hang: int, timeout: int, hang_possible: bool, timeout_possible: bool,
    timeout_max: float | None, cmc_n: int | None, cmc_m: float | None, cmc_v: float | None, n_cpus: int, conf: float = CONF,
) -> dict[str, Any]:
    """{p, lo, hi, var, method}: core.intervals.estimate of `metric` (cmc_* NULL: no integrated race estimate;
    timeout_max NULL: no model bound of p_timeout)."""
    obs = _observed(trials, race, hang, timeout, hang_possible, timeout_possible, timeout_max, cmc_n, cmc_m, cmc_v,
                    n_cpus)
    e = estimate(metric, obs, conf)
    return {"p": e.p, "lo": e.lo, "hi": e.hi, "var": e.var, "method": e.method}


def metric_resolution(
    metric: str, trials: int, race: int, hang: int, timeout: int, hang_possible: bool, timeout_possible: bool,
    timeout_max: float | None, cmc_n: int | None, cmc_m: float | None, cmc_v: float | None, n_cpus: int, target: float, conf: float = CONF,
) -> dict[str, Any] | None:
    """{unresolved, needed, race_blocks}: core.intervals.resolution of `metric` against `target` (needed NULL
    when more than core.stats.MAX_TRIALS_NEEDED); None for a target outside (0, 1)."""
    if not 0 < target < 1:
        return None
    obs = _observed(trials, race, hang, timeout, hang_possible, timeout_possible, timeout_max, cmc_n, cmc_m, cmc_v,
                    n_cpus)
    r = resolution(metric, obs, target, conf)
    return {"unresolved": r.unresolved, "needed": r.needed, "race_blocks": r.race_blocks}


_REQUIRED = (0, 1, 2, 3, 4, 5, 6, 11, 12)  # metric_ci's arguments that must not be NULL (timeout_max, cmc_* may be)


def _metric_ci_arrow(*cols):
    """metric_ci over a batch: the rows grouped by (metric, conf), each group's exact bounds solved
    together (core.intervals.estimate_many)."""
    rows = list(zip(*(c.to_pylist() for c in cols)))
    out: list[dict[str, Any] | None] = [None] * len(rows)
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        if all(r[j] is not None for j in _REQUIRED):
            groups.setdefault((r[0], r[12]), []).append(i)
    for (metric, conf), idx in groups.items():
        obs = [_observed(*rows[i][1:12]) for i in idx]
        for i, e in zip(idx, estimate_many(metric, obs, conf)):
            out[i] = {"p": e.p, "lo": e.lo, "hi": e.hi, "var": e.var, "method": e.method}
    return pa.array(out, _METRIC_PA)


def _metric_ci_sig(metric, trials, race, hang, timeout, hang_possible, timeout_possible, timeout_max, cmc_n, cmc_m,
                   cmc_v, n_cpus, conf):
    return _metric_ci_arrow(metric, trials, race, hang, timeout, hang_possible, timeout_possible, timeout_max, cmc_n,
                            cmc_m, cmc_v, n_cpus, conf)


def _point_metrics_arrow(trials, race, hang, timeout, hang_possible, timeout_possible, timeout_max, cmc_n, cmc_m,
                         cmc_v, n_cpus, conf):
    """Every metric of a batch of points at once (the `outcomes` view): {p_race, p_bad, p_hang, p_timeout}
    each {p, lo, hi, var, method} (core.intervals.estimate_many), plus the exact intervals of the race and
    bad counts {naive_race, naive_bad} {lo, hi}. One conversion of the columns for all of them."""
    cols = [c.to_pylist() for c in (trials, race, hang, timeout, hang_possible, timeout_possible, timeout_max, cmc_n,
                                    cmc_m, cmc_v, n_cpus, conf)]
    n_rows = len(cols[0])
    out: list[dict[str, Any] | None] = [None] * n_rows
    groups: dict[float, list[int]] = {}
    for i in range(n_rows):
        if all(cols[j][i] is not None for j in (0, 1, 2, 3, 4, 5, 10, 11)):
            groups.setdefault(cols[11][i], []).append(i)
    for conf_, idx in groups.items():
        obs = [_observed(*(cols[j][i] for j in range(11))) for i in idx]
        plain = [Observed(o.trials, o.race, o.hang, o.timeout) for o in obs]
        res = {m: estimate_many(m, obs, conf_) for m in ("p_race", "p_bad", "p_hang", "p_timeout")}
        nr, nb = estimate_many("p_race", plain, conf_), estimate_many("p_bad", plain, conf_)
        for j, i in enumerate(idx):
            d: dict[str, Any] = {m: {"p": e[j].p, "lo": e[j].lo, "hi": e[j].hi, "var": e[j].var, "method": e[j].method}
                                 for m, e in res.items()}
            d["naive_race"] = {"lo": nr[j].lo, "hi": nr[j].hi}
            d["naive_bad"] = {"lo": nb[j].lo, "hi": nb[j].hi}
            out[i] = d
    return pa.array(out, _POINT_PA)


def _count_ci_arrow(k, n, conf):
    """count_ci over a batch: core.stats.clopper_pearson_many per level (n = 0: (0, 1); NULL in, NULL out)."""
    ks, ns, cs = k.to_pylist(), n.to_pylist(), conf.to_pylist()
    out: list[dict[str, float] | None] = [None] * len(ks)
    groups: dict[float, list[int]] = {}
    for i, (a, b, c) in enumerate(zip(ks, ns, cs)):
        if a is None or b is None or c is None:
            continue
        if b <= 0:
            out[i] = {"lo": 0.0, "hi": 1.0}
        else:
            groups.setdefault(c, []).append(i)
    for c, idx in groups.items():
        lo, hi = clopper_pearson_many([ks[i] for i in idx], [ns[i] for i in idx], c)
        for i, x, y in zip(idx, lo.tolist(), hi.tolist()):
            out[i] = {"lo": x, "hi": y}
    return pa.array(out, _CI_PA)


def _vectorized(fn, out_type: pa.DataType, nullable_args: tuple[int, ...] = ()):
    """An Arrow UDF calling the scalar `fn` once per distinct row of a batch; NULL out where a
    required argument (one not in `nullable_args`) is NULL."""
    def f(*cols):
        rows = list(zip(*(c.to_pylist() for c in cols)))
        memo: dict[tuple, Any] = {}
        out = []
        for r in rows:
            if r not in memo:
                bad = any(v is None for i, v in enumerate(r) if i not in nullable_args)
                memo[r] = None if bad else fn(*r)
            out.append(memo[r])
        return pa.array(out, out_type)
    # DuckDB counts the parameters of the function it is given
    f.__signature__ = inspect.signature(fn).replace(return_annotation=inspect.Signature.empty)  # type: ignore[attr-defined]
    return f


def _possible(wait: int, p_unresponsive: float) -> dict[str, bool]:
    hang, timeout = possible(wait, p_unresponsive)
    return {"hang": hang, "timeout": timeout}


def _timeout_bound(*values: Any) -> float:
    """core.bounds.timeout_max_of of a point given as BOUND_PARAMS' columns, in that order."""
    return timeout_max_of(dict(zip(BOUND_PARAMS, values)))


_timeout_bound.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter(k, inspect.Parameter.POSITIONAL_ONLY) for k in BOUND_PARAMS])


def _bound_types() -> list[Any]:
    """DuckDB types of BOUND_PARAMS' columns (core.params' kinds)."""
    kinds = {"int": T.BIGINT, "float": T.DOUBLE, "str": T.VARCHAR}
    return [kinds[SPECS[k].kind] for k in BOUND_PARAMS]


def _zero_event_trials(target: float, conf: float) -> int | None:
    return zero_event_trials(target, conf) if 0 < target < 1 else None


_EST = duckdb.struct_type({"n": T.BIGINT, "p": T.DOUBLE, "var": T.DOUBLE, "lo": T.DOUBLE, "hi": T.DOUBLE})
_PARTS = duckdb.list_type(duckdb.struct_type({"n": T.BIGINT, "m": T.DOUBLE, "v": T.DOUBLE}))
_CI = duckdb.struct_type({"lo": T.DOUBLE, "hi": T.DOUBLE})
_RATIO = duckdb.struct_type({"ratio": T.DOUBLE, "lo": T.DOUBLE, "hi": T.DOUBLE, "method": T.VARCHAR})
_METRIC = duckdb.struct_type({"p": T.DOUBLE, "lo": T.DOUBLE, "hi": T.DOUBLE, "var": T.DOUBLE, "method": T.VARCHAR})
_METRIC_PA = pa.struct([("p", pa.float64()), ("lo", pa.float64()), ("hi", pa.float64()), ("var", pa.float64()),
                        ("method", pa.string())])
_CI_PA = pa.struct([("lo", pa.float64()), ("hi", pa.float64())])
_POINT = duckdb.struct_type({**{m: _METRIC for m in ("p_race", "p_bad", "p_hang", "p_timeout")},
                             "naive_race": _CI, "naive_bad": _CI})
_POINT_PA = pa.struct([*((m, _METRIC_PA) for m in ("p_race", "p_bad", "p_hang", "p_timeout")),
                       ("naive_race", _CI_PA), ("naive_bad", _CI_PA)])
_RESOLUTION = duckdb.struct_type({"unresolved": T.BOOLEAN, "needed": T.BIGINT, "race_blocks": T.BOOLEAN})
_RESOLUTION_PA = pa.struct([("unresolved", pa.bool_()), ("needed", pa.int64()), ("race_blocks", pa.bool_())])
_POSSIBLE = duckdb.struct_type({"hang": T.BOOLEAN, "timeout": T.BOOLEAN})
_POSSIBLE_PA = pa.struct([("hang", pa.bool_()), ("timeout", pa.bool_())])


def _sql_pool(fn):
    def f(parts: Sequence[Mapping[str, Any]] | None, y_max: float | None, conf: float | None):
        if parts is None or y_max is None or conf is None:
            return None
        return fn(parts, y_max, conf)
    return f


def _sql_ratio(p_num, v_num, lo_num, hi_num, p_den, v_den, lo_den, hi_den):
    return ratio_interval(p_num, v_num, lo_num, hi_num, p_den, v_den, lo_den, hi_den)


def _sql_cmc_interval(m, v, n, y_max, conf):
    return None if y_max is None or conf is None else cmc_interval(m, v, n, y_max, conf)


def register(con: duckdb.DuckDBPyConnection) -> None:
    """Make the functions above callable from SQL on `con`:

    cmc_pool_shards(list of {n, m, v}, y_max, conf), cmc_pool_strata(...) -> {n, p, var, lo, hi};
    cmc_interval(m, v, n, y_max, conf) -> {lo, hi}; z_value(conf) (core.stats); ratio_interval(p, v, lo, hi, p, v, lo, hi) ->
    {ratio, lo, hi, method}; metric_ci(metric, trials, race, hang, timeout, hang_possible, timeout_possible,
    timeout_max, cmc_n, cmc_m, cmc_v, n_cpus, conf) -> {p, lo, hi, var, method}; point_metrics(the same without metric) ->
    {p_race, p_bad, p_hang, p_timeout, naive_race, naive_bad}; metric_resolution(the same, target, conf) ->
    {unresolved, needed, race_blocks}; count_ci(k, n, conf) -> {lo, hi};
    outcome_possible(wait, p_unresponsive) -> {hang, timeout}; timeout_bound(core.bounds.BOUND_PARAMS) -> DOUBLE
    (the columns' list is the SQL templates' @@bound_args@@); zero_event_trials(target, conf) -> BIGINT.
    """
    D, B, I = T.DOUBLE, T.BOOLEAN, T.BIGINT
    con.create_function("metric_ci", _metric_ci_sig,  # type: ignore[call-overload]
                        [T.VARCHAR, I, I, I, I, B, B, D, I, D, D, I, D], _METRIC, type="arrow", null_handling="special")
    con.create_function("metric_resolution", _vectorized(metric_resolution, _RESOLUTION_PA, nullable_args=(7, 8, 9, 10)),  # type: ignore[call-overload]
                        [T.VARCHAR, I, I, I, I, B, B, D, I, D, D, I, D, D], _RESOLUTION, type="arrow",
                        null_handling="special")
    con.create_function("point_metrics", _point_metrics_arrow,  # type: ignore[call-overload]
                        [I, I, I, I, B, B, D, I, D, D, I, D], _POINT, type="arrow", null_handling="special")
    con.create_function("timeout_bound", _vectorized(_timeout_bound, pa.float64()), _bound_types(), D,  # type: ignore[call-overload]
                        type="arrow", null_handling="special")
    con.create_function("count_ci", _count_ci_arrow, [I, I, D], _CI,  # type: ignore[call-overload]
                        type="arrow", null_handling="special")
    con.create_function("outcome_possible", _vectorized(_possible, _POSSIBLE_PA), [I, D], _POSSIBLE,  # type: ignore[call-overload]
                        type="arrow", null_handling="special")
    con.create_function("zero_event_trials", _vectorized(_zero_event_trials, pa.int64()), [D, D], I,  # type: ignore[call-overload]
                        type="arrow", null_handling="special")
    con.create_function("cmc_pool_shards", _sql_pool(pool_shards), [_PARTS, D, D], _EST, null_handling="special")  # type: ignore[call-overload]
    con.create_function("cmc_pool_strata", _sql_pool(pool_strata), [_PARTS, D, D], _EST, null_handling="special")  # type: ignore[call-overload]
    con.create_function("cmc_interval", _sql_cmc_interval, [D, D, T.BIGINT, D, D], _CI, null_handling="special")  # type: ignore[call-overload]
    con.create_function("z_value", z_value, [D], D)
    con.create_function("ratio_interval", _sql_ratio, [D] * 8, _RATIO, null_handling="special")  # type: ignore[call-overload]
