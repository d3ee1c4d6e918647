"""What changed between two result sets, point by point: p_B / p_A with a 95% interval, and a flag.

Points of A and B are matched on their parameters, never on point ids (a point
id hashes every parameter, so it differs whenever anything does):

- parameters that **differ by construction** are left out of the match and named
  in the output: those with one value throughout A and another one throughout B
  (`model_rev = 1` vs `2`, a base parameter changed between the runs);
- every other parameter must be equal, or, with `on`, exactly the parameters
  named there (the others are then ignored, and must not tell two points of one
  side apart: refused with one line naming the ones that do).

For each matched pair, `ratio = p_B / p_A` of the metric with a 95% interval from
queries.estimates.ratio_interval, the function mitigation_effect uses ('delta-log'
from both estimates and their variances on the log scale when both are > 0 and
known to 25%; else 'bounds' from the 97.5% interval ends), each side's estimate,
variance and intervals read through the named query `point_estimates` (so exactly
as `outcomes` reports them). `changed` is true where the two points' 95% intervals
do not overlap. Unmatched points are counted on each side. The two sides are read
through separate connections, so A and B may be the same result set (every ratio 1,
nothing changed), two runs of one spec, or any two sets, local or on object storage.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from core.params import PARAM_NAMES

from .db import QueryError, quote_ident
from .estimates import ratio_interval
from .point_estimates import check_axes, check_metric, point_estimates

__all__ = ["Comparison", "compare", "compare_points"]

_SIDE_COLUMNS = ("point_id", "estimator", "trials", "p", "p_lo", "p_hi", "var", "lo975", "hi975")


@dataclass
class Comparison:
    """Result of `compare()`: matched rows, what was matched on, what differs by construction, counts."""

    metric: str
    a: str
    b: str
    where: str | None
    on: list[str]
    """The parameters the points were matched on."""
    by_construction: dict[str, list[Any]]
    """Parameter -> [value in A, value in B] for those left out because they differ throughout."""
    held: dict[str, Any]
    """Matched parameters with one value throughout A and B (not repeated as row columns)."""
    rows: pa.Table
    matched: int
    unmatched_a: int
    unmatched_b: int
    changed: int
    verdict: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "a": self.a, "b": self.b, "where": self.where, "on": self.on,
                "by_construction": self.by_construction, "held": self.held, "matched": self.matched,
                "unmatched_a": self.unmatched_a, "unmatched_b": self.unmatched_b, "changed": self.changed,
                "verdict": self.verdict, "notes": self.notes,
                "rows": [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
                         for r in self.rows.to_pylist()]}


def compare(con_a: duckdb.DuckDBPyConnection, con_b: duckdb.DuckDBPyConnection, *, metric: str = "p_race",
            on: Sequence[str] | None = None, where: str | None = None, labels: tuple[str, str] = ("A", "B")) -> Comparison:
    """Compare the points of the result set(s) of `con_a` with those of `con_b` (module doc)."""
    check_metric(metric)
    if on is not None:
        check_axes(on, "--on axis")
    if con_a is con_b:  # one connection runs one query at a time
        ta = tb = point_estimates(con_a, metric, where)
    else:  # two connections: both sides at once (DuckDB releases the GIL while it works)
        with ThreadPoolExecutor(2) as ex:
            fa, fb = (ex.submit(point_estimates, c, metric, where) for c in (con_a, con_b))
            ta, tb = fa.result(), fb.result()
    return compare_points(ta, tb, metric=metric, on=on, where=where, labels=labels)


def _values(t: pa.Table, name: str) -> list[Any]:
    return pc.unique(t[name]).to_pylist()


def compare_points(a: pa.Table, b: pa.Table, *, metric: str, on: Sequence[str] | None = None,
                   where: str | None = None, labels: tuple[str, str] = ("A", "B")) -> Comparison:
    """Match two `point_estimates` tables and compute the ratios (module doc)."""
    check_metric(metric)
    la, lb = labels
    for t, lab in ((a, la), (b, lb)):
        if t.num_rows == 0:
            raise QueryError(f"{lab} has no points" + (f" where {where}" if where else ""))
    params = [n for n in PARAM_NAMES if n in a.column_names and n in b.column_names]
    constant = {n: (_values(a, n), _values(b, n)) for n in params}
    by_construction = {n: [va[0], vb[0]] for n, (va, vb) in constant.items()
                       if len(va) == 1 and len(vb) == 1 and va[0] != vb[0]}
    if on is None:
        key = [n for n in params if n not in by_construction]
    else:
        key = check_axes(on, "--on axis")
        by_construction = {n: v for n, v in by_construction.items() if n not in key}
    for t, lab in ((a, la), (b, lb)):
        _check_unique(t, key, lab, params)

    con = duckdb.connect(":memory:")
    try:
        con.execute("SET enable_progress_bar = false")
        con.execute("SET threads = 1")  # a join of ~1e4 rows: threads would cost more than they save
        side = ", ".join(quote_ident(c) for c in (*key, *_SIDE_COLUMNS))
        con.register("a_all", a)
        con.register("b_all", b)
        con.execute(f"CREATE TEMP TABLE a AS SELECT {side} FROM a_all")
        con.execute(f"CREATE TEMP TABLE b AS SELECT {side} FROM b_all")
        using = ", ".join(quote_ident(c) for c in key)
        joined = con.sql(f"""
            SELECT {', '.join(f'a.{quote_ident(c)}' for c in key)},
                   a.point_id AS point_a, b.point_id AS point_b, a.estimator AS estimator_a, b.estimator AS estimator_b,
                   a.trials AS trials_a, b.trials AS trials_b,
                   a.p AS p_a, a.p_lo AS p_a_lo, a.p_hi AS p_a_hi, b.p AS p_b, b.p_lo AS p_b_lo, b.p_hi AS p_b_hi,
                   a.var AS var_a, a.lo975 AS lo975_a, a.hi975 AS hi975_a,
                   b.var AS var_b, b.lo975 AS lo975_b, b.hi975 AS hi975_b
            FROM a JOIN b USING ({using})""").to_arrow_table()
    finally:
        con.close()
    unmatched_a, unmatched_b = a.num_rows - joined.num_rows, b.num_rows - joined.num_rows  # keys are unique per side
    if joined.num_rows == 0:
        disjoint = [n for n in key if not set(constant[n][0]) & set(constant[n][1])]
        why = f" (they share no value of {', '.join(disjoint)})" if disjoint else ""
        raise QueryError(f"no point of {la} matches a point of {lb} on {', '.join(key) or 'nothing'}{why}; "
                         "name the axes to match with --on")
    rows = _ratios(joined, key)
    # a row shows the matched parameters that are swept on either side; the others are `held`
    held = {n: rows.column(n)[0].as_py() for n in key if len(set(constant[n][0]) | set(constant[n][1])) == 1}
    shown = [n for n in key if n not in held]
    rows = rows.select([*shown, *[c for c in rows.column_names if c not in key]])
    changed = int(pc.sum(pc.cast(rows["changed"], pa.int64())).as_py() or 0)
    verdict = _verdict(rows, metric, changed, int(unmatched_a), int(unmatched_b), la, lb)
    notes = [f"ratio = {metric}({lb}) / {metric}({la}), 95% interval (queries.estimates.ratio_interval: "
             "'delta-log' from both estimates' variances, 'bounds' from the 97.5% interval ends where a side is 0 or "
             "too uncertain); changed: the two 95% intervals do not overlap."]
    if by_construction:
        notes.append("differ by construction (not matched on): "
                     + ", ".join(f"{n} = {va} in {la}, {vb} in {lb}" for n, (va, vb) in by_construction.items()))
    if on is not None:
        notes.append(f"matched on {', '.join(key)} only (--on).")
    if where:
        notes.append(f"where {where}, on both sides.")
    return Comparison(metric, la, lb, where, key, by_construction, held, rows, joined.num_rows,
                      int(unmatched_a), int(unmatched_b), changed, verdict, notes)


def _distinct(t: pa.Table, name: str) -> int:
    return int(pc.count_distinct(t[name], mode="all").as_py())


def _check_unique(t: pa.Table, key: list[str], label: str, params: list[str]) -> None:
    """QueryError unless every point of `t` has its own value combination of `key`."""
    if not key:
        if t.num_rows > 1:
            raise QueryError(f"{label} has {t.num_rows} points and nothing to match them on: name the axes with --on")
        return
    g = t.group_by(key).aggregate([("point_id", "count")])
    dup = g.filter(pc.greater(g["point_id_count"], 1))
    if dup.num_rows:
        first = dup.slice(0, 1).select(key).to_pylist()[0]
        mask = None
        for n, v in first.items():
            m = pc.equal(t[n], pa.scalar(v, t.schema.field(n).type))
            mask = m if mask is None else pc.and_(mask, m)
        same = t.filter(mask)
        differ = [n for n in params if n not in key and _distinct(same, n) > 1]
        raise QueryError(f"{dup.num_rows} value combination(s) of {', '.join(key)} hold several points of {label} "
                         f"(they differ in {', '.join(differ) or 'their sweep'}): add those to --on")


def _ratios(j: pa.Table, key: list[str]) -> pa.Table:
    """The matched rows with ratio, its interval and method (ratio_interval) and `changed`, sorted."""
    cols = {c: j.column(c).to_pylist() for c in ("p_a", "var_a", "lo975_a", "hi975_a", "p_b", "var_b", "lo975_b",
                                                 "hi975_b", "p_a_lo", "p_a_hi", "p_b_lo", "p_b_hi")}
    ratio, lo, hi, method, changed = [], [], [], [], []
    for i in range(j.num_rows):
        r = ratio_interval(cols["p_b"][i], cols["var_b"][i], cols["lo975_b"][i], cols["hi975_b"][i],
                           cols["p_a"][i], cols["var_a"][i], cols["lo975_a"][i], cols["hi975_a"][i])
        r = r or {"ratio": None, "lo": None, "hi": None, "method": None}
        ratio.append(r["ratio"])
        lo.append(r["lo"])
        hi.append(r["hi"])
        method.append(r["method"])
        changed.append(bool(cols["p_a_hi"][i] < cols["p_b_lo"][i] or cols["p_b_hi"][i] < cols["p_a_lo"][i]))
    out = j.drop_columns(["var_a", "lo975_a", "hi975_a", "var_b", "lo975_b", "hi975_b"])
    for name, vals, typ in (("ratio", ratio, pa.float64()), ("ratio_lo", lo, pa.float64()),
                            ("ratio_hi", hi, pa.float64()), ("method", method, pa.string()),
                            ("changed", changed, pa.bool_())):
        out = out.append_column(name, pa.array(vals, typ))
    # changed first, then the largest move either way (|log ratio|), then the parameters
    move = [abs(math.log(r)) if r is not None and r > 0 else -1.0 for r in ratio]
    out = out.append_column("_move", pa.array(move, pa.float64()))
    out = out.sort_by([("changed", "descending"), ("_move", "descending"), *[(k, "ascending") for k in key]])
    return out.drop_columns(["_move"])


def _verdict(rows: pa.Table, metric: str, changed: int, ua: int, ub: int, la: str, lb: str) -> str:
    n = rows.num_rows
    ratios = [r for r in rows.column("ratio").to_pylist() if r is not None and math.isfinite(r)]
    unmatched = f"; unmatched: {ua} point(s) of {la}, {ub} of {lb}" if ua or ub else ""
    med = f"median ratio {statistics.median(ratios):.3g}" if ratios else "no finite ratio"
    if not changed:
        span = f" (ratios {min(ratios):.3g} to {max(ratios):.3g})" if ratios else ""
        return f"no matched point changed: all {n} pairs of 95% intervals of {metric} overlap{span}; {med}{unmatched}"
    flags = rows.filter(rows["changed"])
    fr = [r for r in flags.column("ratio").to_pylist() if r is not None]
    up = sum(1 for r in fr if r > 1)
    down = sum(1 for r in fr if r < 1)
    parts = []
    if up:
        parts.append(f"up at {up} (largest x{max(fr):.3g})")
    if down:
        parts.append(f"down at {down} (smallest x{min(fr):.3g})")
    rest = changed - up - down
    if rest:
        parts.append(f"{rest} where {la} is 0")
    return (f"{changed} of {n} matched points changed ({metric}'s 95% intervals disjoint): "
            f"{', '.join(parts)}; {med}{unmatched}")
