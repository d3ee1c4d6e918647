"""Capacity planning: the largest n_cpus whose per-kexec failure probability stays under a target.

A cell (a combination of the `by` axes and one n_cpus value) passes when the 95%
upper bound of the metric is below the target. The bound is core.intervals.estimate,
as in `outcomes`: counted outcomes exact (Clopper-Pearson; 0 where the model cannot
produce them), p_race the cmc interval where the sweep ran cmc, p_bad under cmc the
cmc race part plus the counted hang/timeout part (`method` names the parts); the
naive counts are never intersected with a cmc interval (`disagree` flags a cmc
interval that misses them). Axes that are swept but neither n_cpus nor in `by` are
taken worst case: the cell is the point with the largest upper bound over them.
Scenario axes (SCENARIO_AXES: `wait`, the panic path 0 or the kexec path 1,
`mitigation`, and `model_rev`, the model revision the rows were simulated with, plus
any the caller marks with `split`) are never folded into a worst case nor pooled: a
scenario axis that is swept is always split out (added to `by`), or must be
fixed with `where` (an SQL predicate on `outcomes`, e.g. "wait = 1"). Equal
parameter sets from several sweeps are pooled. The limit of a group is the largest
n_cpus such that it and every smaller n_cpus of the group pass.

A counted part with 0 events in n trials has the upper bound 1 - 0.025^(1/n) ≈ 3.69/n,
so a target p is out of reach of a cell with fewer than ~3.69/p trials (under cmc:
the target less the race part's bound, at the Bonferroni level of the counted part):
the cell says "unresolved" and how many trials would do (core.intervals.resolution;
"more than 1e15" beyond core.stats.MAX_TRIALS_NEEDED), never "pass".

On an adaptive set whose rule has this metric and target, a cell passes when every
point in it (after `where`, like the rows) was decided `below target`: the decision
read the interval at the rule's look level (core.precision.look_conf), so it holds
at 95% per point over all its looks.

The fleet table turns each cell into expected failures per year for H hosts
each kexec'ing K times a year: p·H·K, with the interval from the bounds, and the
stop-time p99/p999 a kexec must budget for.

Tables (pyarrow): `limits` has one row per group: the by-axes, `max_n_cpus`
(NULL when even the smallest fails), the metric's estimate and bounds there
(columns named after the metric: p_bad, p_bad_lo, p_bad_hi), its trials and
stop-time p99/p999, the first failing n_cpus (`fails_at_n_cpus`, `fail_p_bad*`),
`method`, and a `status` text: "all pass ...", "exceeds at n_cpus=N" (lower bound
above the target), "unresolved at n_cpus=N ..." (0 events, too few trials; the
trials needed), "budget exhausted at n_cpus=N ..." (adaptive) or "inconclusive at
n_cpus=N ...". `cells` is every (by-axes, n_cpus) cell; `fleet` is one row per cell.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from core.intervals import CMC_COUNTED, Observed, resolution
from core.params import PARAM_NAMES, suggest
from core.stats import MAX_TRIALS_NEEDED, clopper_pearson, zero_event_trials
from core.stats import trials_needed as exact_trials_needed

from .db import QueryError, first_line, quote_ident, render_sql
from .estimates import CONF
from .sandbox import filtered_outcomes

__all__ = ["METRICS", "SCENARIO_AXES", "Capacity", "capacity", "format_trials", "upper_zero"]

SCENARIO_AXES: tuple[str, ...] = ("wait", "mitigation", "model_rev")
"""Axes that describe which situation a kexec is in (or which model answers: `model_rev`), not a
nuisance to take the worst of; rows of different values are never pooled into one cell."""


METRICS: dict[str, str] = {"p_bad": "bad", "p_race": "race", "p_hang": "hang", "p_timeout": "timeout"}
"""Metric name -> count column of `outcomes`."""


def upper_zero(n: int) -> float:
    """The exact 95% upper bound with 0 events in n trials: 1 - 0.025^(1/n) (about 3.69/n)."""
    return clopper_pearson(0, n)[1]


def format_trials(n: int | None) -> str:
    """A trial count for a note, "more than 1e15" when core.stats returned None (beyond its cap)."""
    return f"more than {MAX_TRIALS_NEEDED:.0e}".replace("e+", "e") if n is None else f"{n:,}"


@dataclass
class Capacity:
    """Result of `capacity()`: tables as Arrow, plus the notes to print with them."""

    metric: str
    target_p: float
    by: list[str]
    worst_over: list[str]
    split_out: list[str]
    where: str | None
    cells: pa.Table
    limits: pa.Table
    fleet: pa.Table | None
    model_revs: list[int]
    """The model revisions of the rows summarized (several: `model_rev` is split out, never pooled)."""
    resolvable: bool
    max_trials: int
    trials_needed: int | None
    """Trials with 0 events that put a counted metric's exact 95% bound under the target (None: more than
    core.stats.MAX_TRIALS_NEEDED)."""
    rule_of_three: int | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric, "target_p": self.target_p, "by": self.by, "worst_over": self.worst_over,
            "split_out": self.split_out, "where": self.where, "model_revs": self.model_revs,
            "resolvable": self.resolvable, "max_trials": self.max_trials, "trials_needed": self.trials_needed,
            "rule_of_three": self.rule_of_three, "notes": self.notes,
            "limits": self.limits.to_pylist(), "fleet": None if self.fleet is None else self.fleet.to_pylist(),
        }


def _check_axis(name: str, what: str) -> None:
    if name not in PARAM_NAMES:
        raise QueryError(f"{what} '{name}' is not a parameter{suggest(name)}")


def capacity(
    con: duckdb.DuckDBPyConnection,
    target_p: float,
    *,
    by: Sequence[str] | None = None,
    metric: str = "p_bad",
    hosts: float | None = None,
    kexecs_per_host_year: float | None = None,
    where: str | None = None,
    split: Sequence[str] = (),
) -> Capacity:
    """Capacity limits over the `outcomes` view of `con` (see the module doc)."""
    if not (isinstance(target_p, (int, float)) and 0 < target_p < 1):
        raise QueryError(f"--target-p {target_p} must be in (0, 1)")
    if metric not in METRICS:
        import difflib

        close = difflib.get_close_matches(metric, list(METRICS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise QueryError(f"unknown metric '{metric}'{hint}: one of {', '.join(METRICS)}")
    if (hosts is None) != (kexecs_per_host_year is None):
        raise QueryError("--hosts and --kexecs-per-host-year go together")
    for name, v in (("--hosts", hosts), ("--kexecs-per-host-year", kexecs_per_host_year)):
        if v is not None and not (v > 0 and math.isfinite(v)):
            raise QueryError(f"{name} {v} must be a positive number")

    scenario = list(SCENARIO_AXES)
    for a in split:
        _check_axis(a, "--split axis")
        if a == "n_cpus":
            raise QueryError("--split n_cpus: n_cpus is the axis the limit is found on")
        if a not in scenario:
            scenario.append(a)
    if by is not None:
        for a in by:
            _check_axis(a, "--by axis")
            if a == "n_cpus":
                raise QueryError("--by n_cpus: n_cpus is the axis the limit is found on, it cannot be a --by axis")

    with filtered_outcomes(con, where, "capacity_src") as view:
        cells, swept = _cells(con, view, metric, by, scenario)
        revs = [int(r[0]) for r in con.execute(f"SELECT DISTINCT model_rev FROM {view} ORDER BY 1").fetchall()]
        if cells.num_rows == 0:
            raise QueryError("no points" + (f" where {where}" if where else ""))
        by_list, split_out, worst_over = _axes(swept, by, scenario)
        # the adaptive decisions of exactly the points the rows come from (after --where)
        decided = _decided_cells(con, view, by_list, metric, target_p)

    rows = cells.to_pylist()
    max_trials = max((r["max_trials"] for r in rows), default=0)
    needed = zero_event_trials(target_p)
    rule3 = exact_trials_needed(target_p)
    res = {id(r): resolution(metric, _observed(r), target_p, CONF) for r in rows}
    # no cell can pass when each has its upper bound above the target only for want of trials
    resolvable = not all(res[id(r)].unresolved for r in rows)

    notes: list[str] = []
    if not resolvable:
        # the most any cell needs (under cmc+counted more than a count alone: its part is at 97.5%)
        each = [res[id(r)].needed for r in rows]
        most = None if any(n is None for n in each) else max(each)  # type: ignore[type-var]
        notes.append(
            f"CANNOT RESOLVE {metric} < {target_p:g}: in every cell the 95% upper bound is at or above it only "
            f"because 0 events were seen (the largest point has {max_trials:,} trials). A point needs "
            f"{'up to ' if most is not None else ''}{format_trials(most)} trials with 0 events (a count alone: "
            f"{format_trials(needed)} for the exact bound, rule of three {format_trials(rule3)} = 3/p) to show it; "
            "no n_cpus can pass."
        )
    if "n_cpus" not in swept:
        notes.append("n_cpus is not swept: the only limit that can be shown is the one n_cpus value that was run.")
    if worst_over:
        notes.append(f"worst case over {', '.join(worst_over)}: each cell is the point with the largest upper bound.")
    if split_out:
        notes.append(f"split out {', '.join(split_out)}: scenario axes are never taken worst case "
                     "(fix one with --where, e.g. --where \"wait = 1\" for the kexec path).")
    notes.append(f"model_rev {' and '.join(map(str, revs))}: " + (
        "each revision is a group of its own (MODEL.md \"Model revision 2\")." if len(revs) > 1 else
        ("the kexec path as merged (MODEL.md \"Model revision 2\")." if revs == [2] else
         "the first release's model (MODEL.md; rows stored before model_rev existed read as 1).")))
    n_dis = sum(1 for r in rows if r["disagree"])
    if n_dis:
        notes.append(f"{n_dis} cell(s) where the naive counts' 95% interval misses the cmc one (disagree = yes); "
                     "the cmc numbers are shown.")
    methods = sorted({r["method"] for r in rows})
    notes.append(f"method: {', '.join(methods)}: 95% bounds"
                 + (f"; where {where}" if where else "") + " (core/README.md, \"Intervals\").")
    if CMC_COUNTED in methods:
        notes.append("cmc+counted: the cmc race part at 97.5% plus the exact 97.5% bound of the hang/timeout "
                     "count (Bonferroni): 0 hangs and timeouts in n trials still leave up to ~4.4/n.")

    if decided is not None:
        notes.append(f"adaptive sweep (trials = \"auto\", rule {metric} vs {target_p:g}): a cell passes when every "
                     "point in it was decided 'below target' (outcomes.status, at 95% per point over all its looks).")

    # group cells by the by-axis values, in n_cpus order (the SQL sorts)
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[a] for a in by_list), []).append(r)

    limit_rows = []
    nonmonotone = []
    for key, cs in groups.items():
        ok_prefix: dict[str, Any] | None = None
        fail: dict[str, Any] | None = None
        def passes(c: dict[str, Any], key: tuple = key) -> bool:
            if decided is not None:
                return decided[(*key, c["n_cpus"])] == "below target"  # noqa: B023 (used within the iteration)
            return c["p_hi"] < target_p

        for c in cs:
            if fail is None and passes(c):
                ok_prefix = c
            elif fail is None:
                fail = c
            elif passes(c):
                nonmonotone.append(key)
        fail_status = None if fail is None or decided is None else decided[(*key, fail["n_cpus"])]
        if fail is None:
            status = f"all pass (largest n_cpus run = {cs[-1]['n_cpus']})"
        elif fail["p_lo"] > target_p or fail_status == "above target":
            status = f"exceeds at n_cpus={fail['n_cpus']}"
        elif fail_status == "budget exhausted":
            status = f"budget exhausted at n_cpus={fail['n_cpus']}: interval spans the target at max_trials"
        elif res[id(fail)].unresolved and not res[id(fail)].race_blocks:
            what = "hangs or timeouts" if fail["method"] == CMC_COUNTED else "events"
            status = (f"unresolved at n_cpus={fail['n_cpus']}: 0 {what} in {fail['trials']:,} trials, "
                      f"needs {format_trials(res[id(fail)].needed)}")
        else:
            status = f"inconclusive at n_cpus={fail['n_cpus']}: interval spans the target"
        row: dict[str, Any] = dict(zip(by_list, key))
        okc = ok_prefix or {}
        row.update({
            "max_n_cpus": okc.get("n_cpus"),
            "p": okc.get("p"), "p_lo": okc.get("p_lo"), "p_hi": okc.get("p_hi"), "trials": okc.get("trials"),
            "t_p99_us": okc.get("t_p99_us"), "t_p999_us": okc.get("t_p999_us"),
            "fails_at_n_cpus": None if fail is None else fail["n_cpus"],
            "fail_p": None if fail is None else fail["p"],
            "fail_p_lo": None if fail is None else fail["p_lo"],
            "fail_p_hi": None if fail is None else fail["p_hi"],
            "estimator": (ok_prefix or fail or {}).get("estimator"),
            "method": (ok_prefix or fail or {}).get("method"),
            "disagree": any(bool(c["disagree"]) for c in cs) if any(c["disagree"] is not None for c in cs) else None,
            "status": status,
        })
        limit_rows.append(row)
    if nonmonotone:
        notes.append(f"{len(nonmonotone)} group(s) pass again at a larger n_cpus after failing; "
                     "the limit shown is the last n_cpus before the first failure.")

    limits = _table(limit_rows, cells.schema, by_list, [
        ("max_n_cpus", pa.int32()), ("p", pa.float64()), ("p_lo", pa.float64()), ("p_hi", pa.float64()),
        ("trials", pa.int64()), ("t_p99_us", pa.float64()), ("t_p999_us", pa.float64()),
        ("fails_at_n_cpus", pa.int32()), ("fail_p", pa.float64()), ("fail_p_lo", pa.float64()),
        ("fail_p_hi", pa.float64()), ("estimator", pa.string()), ("method", pa.string()), ("disagree", pa.bool_()),
        ("status", pa.string()),
    ])

    fleet = None
    if hosts is not None and kexecs_per_host_year is not None:
        hk = float(hosts) * float(kexecs_per_host_year)
        fleet_rows = []
        for r in rows:
            fr = {a: r[a] for a in by_list}
            fr.update({
                "n_cpus": r["n_cpus"], "trials": r["trials"], "estimator": r["estimator"], "method": r["method"],
                "p": r["p"], "p_lo": r["p_lo"], "p_hi": r["p_hi"],
                "failures_per_year": None if r["p"] is None else r["p"] * hk,
                "failures_per_year_lo": r["p_lo"] * hk,
                "failures_per_year_hi": r["p_hi"] * hk,
                "within_target": bool(r["p_hi"] < target_p),
                "t_p99_us": r["t_p99_us"], "t_p999_us": r["t_p999_us"],
            })
            fleet_rows.append(fr)
        fleet = _table(fleet_rows, cells.schema, by_list, [
            ("n_cpus", pa.int32()), ("trials", pa.int64()), ("estimator", pa.string()), ("method", pa.string()),
            ("p", pa.float64()), ("p_lo", pa.float64()),
            ("p_hi", pa.float64()), ("failures_per_year", pa.float64()), ("failures_per_year_lo", pa.float64()),
            ("failures_per_year_hi", pa.float64()), ("within_target", pa.bool_()),
            ("t_p99_us", pa.float64()), ("t_p999_us", pa.float64()),
        ])
        notes.append(f"fleet: {hosts:g} hosts x {kexecs_per_host_year:g} kexecs per host-year = {hk:g} kexecs/year; "
                     "failures_per_year = p x hosts x kexecs, interval from the 95% bounds.")

    limits = _rename_p(limits, metric)
    fleet = None if fleet is None else _rename_p(fleet, metric)
    return Capacity(metric, float(target_p), by_list, worst_over, split_out, where, cells, limits, fleet, revs,
                    resolvable, int(max_trials), needed, rule3, notes)


def _observed(r: dict[str, Any]) -> Observed:
    """A cell row of _capacity.sql as core.intervals sees it (the worst point's pooled counts)."""
    cmc = None if r["cmc_n"] is None else (int(r["cmc_n"]), float(r["cmc_m"]), float(r["cmc_v"]))
    return Observed(int(r["trials"]), int(r["race"]), int(r["hang"]), int(r["timeout"]), cmc, int(r["n_cpus"]),
                    bool(r["hang_possible"]), bool(r["timeout_possible"]),
                    1.0 if r.get("timeout_max") is None else float(r["timeout_max"]))


def _swept(con: duckdb.DuckDBPyConnection, view: str) -> list[str]:
    """Parameters with more than one value among the points of `view`, in core.params order."""
    distinct = ", ".join(f"count(DISTINCT {quote_ident(n)})" for n in PARAM_NAMES)
    counts = con.execute(f"SELECT {distinct} FROM {view}").fetchall()[0]
    return [n for n, c in zip(PARAM_NAMES, counts) if c > 1]


def _axes(swept: list[str], by: Sequence[str] | None, scenario: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(by axes, scenario axes added to them, axes taken worst case) for the swept axes."""
    by_list = [a for a in swept if a != "n_cpus"] if by is None else list(dict.fromkeys(by))
    split_out = [a for a in swept if a in scenario and a not in by_list]
    by_list += split_out
    worst_over = [a for a in swept if a != "n_cpus" and a not in by_list]
    return by_list, split_out, worst_over


def _cells(con: duckdb.DuckDBPyConnection, view: str, metric: str, by: Sequence[str] | None,
           scenario: list[str]) -> tuple[pa.Table, list[str]]:
    swept = _swept(con, view)
    by_list, _, _ = _axes(swept, by, scenario)
    sql = render_sql("_capacity", {
        "src": view,
        "by_lead": "".join(f"{quote_ident(a)}, " for a in by_list),
        "params": ", ".join(quote_ident(n) for n in PARAM_NAMES),
        "k": quote_ident(METRICS[metric]),
        "metric": f"'{metric}'",
        "conf": f"{CONF!r}::DOUBLE",
    })
    try:
        return con.sql(sql).to_arrow_table(), swept
    except duckdb.Error as e:
        raise QueryError(f"capacity query failed: {first_line(e)}") from None


def _decided_cells(con: duckdb.DuckDBPyConnection, view: str, by: list[str], metric: str,
                   target_p: float) -> dict | None:
    """Per (by-axes, n_cpus) cell of `view` (outcomes after --where), the decided status of an adaptive
    sweep (queries.precision): 'below target' if every point in it is, else 'above target' if any point
    is, else 'budget exhausted' if any is, else 'open'. None unless every open sweep stopped its points
    on this metric and target."""
    try:
        rules = con.execute("SELECT DISTINCT metric, target FROM precision_rules").fetchall()
    except duckdb.Error:
        return None  # no adaptive sweep among the open dirs
    if rules != [(metric, float(target_p))]:
        return None
    if con.execute(f"SELECT count(*) FROM {view} WHERE status IS NULL").fetchone()[0]:  # type: ignore[index]
        return None  # a fixed-trials sweep is mixed in: judge on the intervals
    cols = "".join(f"{quote_ident(a)}, " for a in by)
    rows = con.execute(f"""
        SELECT {cols} n_cpus,
               CASE WHEN bool_and(status = 'below target') THEN 'below target'
                    WHEN bool_or(status = 'above target') THEN 'above target'
                    WHEN bool_or(status = 'budget exhausted') THEN 'budget exhausted'
                    ELSE 'open' END
        FROM {view} GROUP BY ALL""").fetchall()
    return {tuple(r[:-1]): r[-1] for r in rows}


def _table(rows: list[dict[str, Any]], cell_schema: pa.Schema, by: list[str],
           cols: list[tuple[str, pa.DataType]]) -> pa.Table:
    fields = [cell_schema.field(a) for a in by] + [pa.field(n, t) for n, t in cols]
    schema = pa.schema(fields)
    return pa.Table.from_pylist(rows, schema=schema)


def _rename_p(t: pa.Table, metric: str) -> pa.Table:
    """Columns p, p_lo, p_hi, fail_p* named after the metric (p_bad, p_bad_lo, ..., fail_p_bad_hi)."""
    names = []
    for n in t.column_names:
        if n in ("p", "p_lo", "p_hi"):
            n = metric + n[1:]
        elif n.startswith("fail_p"):
            n = "fail_" + metric + n[len("fail_p"):]
        names.append(n)
    return t.rename_columns(names)
