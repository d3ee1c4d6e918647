"""Which swept axis drives a metric: variance-based (Sobol) importance, exactly, over the grid as run.

A stoprace grid is a full factorial design, so the ANOVA decomposition of
Y = log10(metric estimate) over its cells needs no sampling design and no
surrogate: every cell is there. With the grid's cells weighted equally (each
value of an axis weighs the same; a finer grid in one region weighs that region
more), for each swept axis x_i:

- first-order index S_i  = Var_{x_i}(E[Y | x_i]) / Var(Y): the share of the
  variance that x_i explains alone;
- total index       ST_i = E_{x_~i}[Var_{x_i}(Y | x_~i)] / Var(Y): its share with
  every interaction it takes part in (ST_i >= S_i; sum S_i <= 1, the rest is
  interactions).

**Monte Carlo noise is not importance.** Each point's Y is an estimate,
Y_c + e_c, with independent errors of variance s_c^2 (the delta method from the
estimate's variance: Var(log10 p) = Var(p) / (p ln 10)^2, queries/sql/point_estimates.sql).
On a full grid of N cells the observed variance terms are quadratic forms whose
noise expectations are exact and depend only on the mean noise s^2 = mean(s_c^2)
(heteroscedastic noise included, since each projection's diagonal is constant):
Var(Y) gains s^2 (1 - 1/N), Var_{x_i}(E[Y | x_i]) gains s^2 (n_i - 1) / N and the
total term s^2 (1 - 1/n_i), with n_i the axis' number of values. Those are
subtracted; `noise_share` is s^2 (1 - 1/N) / observed Var(Y). The corrected
indices are unbiased estimates (up to the ratio), so on an axis with no effect
they scatter around 0 and may be slightly negative; `first_order_raw`,
`total_raw` are the uncorrected ones. Where the corrected Var(Y) is <= 0 the
variation is all noise and the indices are NULL.

**Zero rule**: a point whose estimate is 0 has no logarithm; it enters at its 95%
upper bound with no noise term (point_estimates.sql) and is counted in
`zero_points`; the verdict says how many.

**Scenario axes are never folded**: `wait`, `mitigation`, `model_rev` and any
axis given in `by` are not importance axes; the indices are computed separately
for every combination of their values (one `scenario` each), and for every sweep.
A group must be a full factorial grid over its other swept axes (each
combination of their values exactly once), else the question has no exact
answer here and it is refused with one line (an incomplete run, a `[search]`
sweep, or a `--where` that cuts the grid unevenly).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.params import PARAM_NAMES, SPECS

from .capacity import SCENARIO_AXES
from .db import QueryError
from .point_estimates import check_axes, check_metric, point_estimates

__all__ = ["IMPORTANCE_SCENARIO_AXES", "GridIndices", "Importance", "grid_indices", "importance"]

IMPORTANCE_SCENARIO_AXES: tuple[str, ...] = tuple(dict.fromkeys((*SCENARIO_AXES, "model_rev")))
"""Axes reported value by value, never treated as a source of variance (plus any `by` axis)."""


@dataclass(frozen=True)
class GridIndices:
    """Indices of every axis of one full grid (arrays in axis order) and its variance terms."""

    first_order: np.ndarray
    total: np.ndarray
    first_order_raw: np.ndarray
    total_raw: np.ndarray
    var_y: float
    """Observed (population) variance of Y over the cells."""
    noise_var: float
    """Expected noise part of var_y: s^2 (1 - 1/N)."""

    @property
    def noise_share(self) -> float:
        return self.noise_var / self.var_y if self.var_y > 0 else math.nan


def grid_indices(y: np.ndarray, noise: float = 0.0) -> GridIndices:
    """First-order and total indices of each axis of the full grid `y` (one array dimension per axis).

    `noise` is the mean within-point variance of y (0: none). Exact sums over the
    cells (module doc); NaN indices where the corrected variance is <= 0.
    """
    y = np.asarray(y, dtype=np.float64)
    big_n = y.size
    var_y = float(y.var())
    noise_var = noise * (1.0 - 1.0 / big_n)
    var_c = var_y - noise_var
    d = y.ndim
    s1, st, s1r, str_ = (np.full(d, math.nan) for _ in range(4))
    for i in range(d):
        n_i = y.shape[i]
        others = tuple(j for j in range(d) if j != i)
        v_first = float(y.mean(axis=others).var()) if others else var_y
        v_total = float(y.var(axis=i).mean())
        if var_y > 0:
            s1r[i], str_[i] = v_first / var_y, v_total / var_y
        if var_c > 0:
            s1[i] = (v_first - noise * (n_i - 1) / big_n) / var_c
            st[i] = (v_total - noise * (1.0 - 1.0 / n_i)) / var_c
    return GridIndices(s1, st, s1r, str_, var_y, noise_var)


@dataclass
class Importance:
    """Result of `importance()`: one row per (sweep, scenario, axis), the verdicts and notes."""

    metric: str
    by: list[str]
    where: str | None
    rows: pa.Table
    verdicts: list[str]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "by": self.by, "where": self.where, "verdicts": self.verdicts,
                "notes": self.notes, "rows": [_jsonable(r) for r in self.rows.to_pylist()]}


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


def _label(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _distinct(col: pa.ChunkedArray) -> int:
    return int(pc.count_distinct(col).as_py())


def importance(
    con: duckdb.DuckDBPyConnection,
    metric: str = "p_race",
    *,
    by: Sequence[str] = (),
    where: str | None = None,
) -> Importance:
    """Importance of every swept axis for log10 `metric` over the points of `con` (see the module doc).

    `by`: axes reported value by value besides IMPORTANCE_SCENARIO_AXES; `where`: an SQL
    predicate on the points' parameters (point_estimates). QueryError (one line) on a
    bad metric/axis/predicate, no points, or a group that is not a full grid.
    """
    check_metric(metric)
    split = list(dict.fromkeys((*IMPORTANCE_SCENARIO_AXES, *check_axes(by, "--by axis"))))
    t = point_estimates(con, metric, where)
    if t.num_rows == 0:
        raise QueryError("no points" + (f" where {where}" if where else ""))

    sweeps = sorted(set(t.column("sweep").to_pylist()))
    out: list[dict[str, Any]] = []
    verdicts: list[str] = []
    notes: list[str] = []
    by_cols: list[str] = []
    for sweep in sweeps:
        sub = t.filter(pc.equal(t["sweep"], sweep)) if len(sweeps) > 1 else t
        swept = [n for n in PARAM_NAMES if n in sub.column_names and _distinct(sub[n]) > 1]
        scen_axes = [a for a in swept if a in split]
        axes = [a for a in swept if a not in split]
        by_cols += [a for a in scen_axes if a not in by_cols]
        who = f"{sweep}: " if len(sweeps) > 1 else ""
        if not axes:
            notes.append(f"{who}no axis is swept besides the scenario axes"
                         + (f" ({', '.join(scen_axes)})" if scen_axes else "") + ": nothing to rank.")
            continue
        groups = _groups(sub, scen_axes)
        for key, idx in groups:
            g = sub.take(pa.array(idx))
            scen = dict(zip(scen_axes, key))
            scenario = " ".join(f"{a}={_label(v)}" for a, v in scen.items())
            rows, verdict = _group(g, axes, metric, sweep, scen, scenario)
            out += rows
            lead = f"{who}{scenario}: " if scenario else who
            verdicts.append(lead + verdict)
    if not out:
        raise QueryError("no axis to rank: " + " ".join(notes))
    if by_cols:
        notes.append(f"split out {', '.join(by_cols)}: scenario axes are never folded into the variance; "
                     "each combination of their values is its own grid.")
    notes.append("Y = log10 " + metric + " per point; indices over the grid's cells, every value of an axis weighed "
                 "equally; Monte Carlo noise (delta method) subtracted from each variance term.")
    if where:
        notes.append(f"where {where}.")
    return Importance(metric, split, where, _table(out, by_cols, t.schema), verdicts, notes)


def _groups(t: pa.Table, axes: list[str]) -> list[tuple[tuple, np.ndarray]]:
    """(values of `axes`, row indices) of every combination present, in sorted order of the values."""
    if not axes:
        return [((), np.arange(t.num_rows))]
    cols = [t.column(a).to_pylist() for a in axes]
    keys: dict[tuple, list[int]] = {}
    for i, k in enumerate(zip(*cols)):
        keys.setdefault(k, []).append(i)
    return [(k, np.array(keys[k])) for k in sorted(keys)]


def _group(g: pa.Table, axes: list[str], metric: str, sweep: str, scen: dict[str, Any],
           scenario: str) -> tuple[list[dict[str, Any]], str]:
    """The rows and the verdict of one (sweep, scenario): the grid's indices, sorted by total."""
    codes, shape = [], []
    for a in axes:
        values = g.column(a).to_numpy(zero_copy_only=False)
        levels, inv = np.unique(values, return_inverse=True)
        codes.append(inv.reshape(-1))
        shape.append(len(levels))
    cells = int(np.prod(shape))
    flat = np.ravel_multi_index(tuple(codes), tuple(shape))
    count = np.bincount(flat, minlength=cells)
    if (count != 1).any():
        missing, dup = int((count == 0).sum()), int((count > 1).sum())
        what = f"{sweep} {scenario}".strip()
        dims = " x ".join(f"{n} {a}" for n, a in zip(shape, axes))
        raise QueryError(
            f"importance needs a full factorial grid: {what} has {g.num_rows} points for the {cells} cells of "
            f"{dims}" + (f", {missing} missing" if missing else "") + (f", {dup} with several points" if dup else "")
            + " (an incomplete run, a [search] sweep, or a --where that cuts the grid unevenly?)")
    y = np.empty(cells)
    y[flat] = g.column("y").to_numpy(zero_copy_only=False)
    y_var = g.column("y_var").to_numpy(zero_copy_only=False)
    zero = int(pc.sum(pc.cast(g["zero"], pa.int64())).as_py() or 0)
    gi = grid_indices(y.reshape(shape), float(np.mean(y_var)))

    def num(x: float) -> float | None:
        return float(x) if math.isfinite(x) else None

    rows = []
    for i, a in enumerate(axes):
        r: dict[str, Any] = {"sweep": sweep, **scen, "scenario": scenario, "axis": a, "levels": shape[i],
                             "first_order": num(gi.first_order[i]), "total": num(gi.total[i]),
                             "first_order_raw": num(gi.first_order_raw[i]), "total_raw": num(gi.total_raw[i]),
                             "noise_share": num(gi.noise_share), "var_y": gi.var_y, "noise_var": gi.noise_var,
                             "points": g.num_rows, "zero_points": zero}
        rows.append(r)
    rows.sort(key=lambda r: (-(r["total"] if r["total"] is not None else -math.inf),
                             -(r["first_order"] if r["first_order"] is not None else -math.inf),
                             PARAM_NAMES.index(r["axis"])))
    return rows, _verdict(rows, metric, gi)


def _pct(x: float | None) -> str:
    """A share for the verdict line, clamped to [0, 100%] (outside only by sampling error; the table has the value)."""
    return "-" if x is None else f"{min(max(x, 0.0), 1.0):.0%}"


def _verdict(rows: list[dict[str, Any]], metric: str, gi: GridIndices) -> str:
    """One line: the leading axis, the next, interactions and noise, and the zero points."""
    n, zero = rows[0]["points"], rows[0]["zero_points"]
    zero_note = (f"; {zero} of {n} points have {metric} = 0 and enter at their 95% upper bound" if zero else "")
    if 2 * zero > n:
        zero_note += (" (most of the grid is bounds, not estimates: the ranking says where events were seen; "
                      "more trials or the cmc estimator measure it)")
    if zero == n:
        return (f"all {n} points have {metric} = 0 (each enters at its 95% upper bound, which only the trial count "
                "moves): nothing to rank")
    if gi.var_y <= 0:
        return f"log10 {metric} is the same at all {n} points: no axis moves it" + zero_note
    if rows[0]["total"] is None:
        return (f"the variation of log10 {metric} over the grid is within its Monte Carlo noise (noise share "
                f"{_pct(gi.noise_share)}): no axis stands out" + zero_note)
    top = rows[0]
    line = (f"{top['axis']} explains {_pct(top['first_order'])} of the variance of log10 {metric} "
            f"({_pct(top['total'])} with its interactions)")
    if len(rows) > 1:
        nxt = rows[1]
        line += f", then {nxt['axis']} {_pct(nxt['first_order'])} ({_pct(nxt['total'])})"
    inter = 1.0 - sum(r["first_order"] or 0.0 for r in rows)
    line += f"; interactions {_pct(inter)}, Monte Carlo noise {gi.noise_share:.1%} of the observed variance"
    return line + zero_note


def _table(rows: list[dict[str, Any]], by_cols: list[str], schema: pa.Schema) -> pa.Table:
    f64, i64 = pa.float64(), pa.int64()
    fields = [pa.field("sweep", pa.string())]
    fields += [pa.field(a, schema.field(a).type if a in schema.names else pa.type_for_alias(SPECS[a].arrow))
               for a in by_cols]
    fields += [pa.field("scenario", pa.string()), pa.field("axis", pa.string()), pa.field("levels", i64),
               pa.field("first_order", f64), pa.field("total", f64), pa.field("first_order_raw", f64),
               pa.field("total_raw", f64), pa.field("noise_share", f64), pa.field("var_y", f64),
               pa.field("noise_var", f64), pa.field("points", i64), pa.field("zero_points", i64)]
    return pa.Table.from_pylist(rows, schema=pa.schema(fields))
