"""One metric per point, as importance and compare read it: the named query `point_estimates`.

The SQL (queries/sql/point_estimates.sql) is the one definition of what these
commands take from a point: the metric's estimate and 95% interval exactly as
`outcomes` reports them (so a change to the intervals there reaches them), the
variance of that estimate, its 97.5% interval (for `ratio_interval`'s bounds
method), and Y = log10 of the estimate with its delta-method variance, with the
zero rule (an estimate of 0 enters at its 95% upper bound, flagged `zero`).
Users get the same table from `stoprace query DIR --named point_estimates
--param metric=p_bad`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import duckdb
import pyarrow as pa

from core.params import PARAM_NAMES, suggest

from .capacity import METRICS
from .db import QueryError, first_line
from .named import load_named
from .sandbox import refusal

__all__ = ["METRICS", "check_axes", "check_metric", "point_estimates"]


def check_metric(metric: str) -> str:
    """`metric` if it is one of METRICS (p_race, p_bad, p_hang, p_timeout), else QueryError naming the closest."""
    if metric in METRICS:
        return metric
    close = difflib.get_close_matches(metric, list(METRICS), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise QueryError(f"unknown metric '{metric}'{hint}: one of {', '.join(METRICS)}")


def check_axes(names: Iterable[str], what: str) -> list[str]:
    """The names, each a model parameter (QueryError naming the first that is not), without repeats."""
    out = list(dict.fromkeys(names))
    for n in out:
        if n not in PARAM_NAMES:
            raise QueryError(f"{what} '{n}' is not a parameter{suggest(n)}")
    return out


def point_estimates(con: duckdb.DuckDBPyConnection, metric: str, where: str | None = None) -> pa.Table:
    """The named query `point_estimates` for `metric`, rows kept where the SQL predicate `where` holds.

    `where` is applied to the query's own columns (every parameter, estimator, trials,
    k, p, ...), e.g. "wait = 1"; a bad or refused predicate is one line (QueryError /
    SandboxError), like every user SQL.
    """
    check_metric(metric)
    sql = load_named("point_estimates").sql
    try:
        rel = con.sql(sql, params={"metric": metric})
    except duckdb.Error as e:
        raise QueryError(f"point_estimates failed: {first_line(e)}") from None
    if where:
        try:
            rel = rel.filter(where)
        except duckdb.Error as e:
            raise (refusal(e) or QueryError(f"bad --where '{where}': {first_line(e)}")) from None
    try:
        return rel.to_arrow_table()
    except duckdb.Error as e:
        raise (refusal(e) or QueryError(f"bad --where '{where}': {first_line(e)}")) from None
