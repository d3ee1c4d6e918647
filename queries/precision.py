"""The `precision` view and `outcomes.status` for result sets of `trials = "auto"` sweeps.

A dir's stop rule is the `[precision]` table of its canonical spec.toml
(core.precision.Precision). When any open dir has one, `outcomes` (as built by
_outcomes.sql) is renamed `outcomes_base`, the view `precision` is built on it
(queries/sql/_precision.sql: the rule's estimate, interval and status per
point, the same definition as core.precision.decide, with the look level core.precision.look_conf
of each rule in `precision_rules.look_conf`), and `outcomes` becomes
`outcomes_base` plus `status` and `precision_metric` (NULL for points of fixed-trials
sweeps). Result sets without a rule are left exactly as they were.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

import duckdb
import pyarrow as pa

from core.precision import Precision, look_conf
from queries.resultset.errors import StoreError
from queries.resultset.reader import ResultSet

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["install", "read_rule"]


def read_rule(result_dir: str | Path | ResultSet) -> tuple[str, Precision] | None:
    """(sweep name, stop rule) from a result set's spec.toml, None for a fixed-trials sweep."""
    try:
        if isinstance(result_dir, ResultSet):
            text = result_dir.spec_text()
        else:
            text = (Path(result_dir) / "spec.toml").read_text(encoding="utf-8")
        raw = tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, StoreError):
        return None  # the dir's other checks report an unreadable spec
    table = raw.get("precision")
    if raw.get("trials") != "auto" or not isinstance(table, dict):
        return None
    return str(raw.get("name")), Precision(**table)


def install(con: duckdb.DuckDBPyConnection, result_dirs: Iterable[str | Path | ResultSet], run_script) -> bool:
    """Add `precision` and `outcomes.status` when some dir has a rule; returns whether it did."""
    rules: dict[str, Precision] = {}
    for d in result_dirs:
        r = read_rule(d)
        if r is not None:
            rules.setdefault(r[0], r[1])
    if not rules:
        return False
    table = pa.table({
        "sweep": pa.array(list(rules), pa.string()),
        "metric": pa.array([r.metric for r in rules.values()], pa.string()),
        "target": pa.array([r.target for r in rules.values()], pa.float64()),
        "rel_half_width": pa.array([r.rel_half_width for r in rules.values()], pa.float64()),
        "max_trials": pa.array([r.max_trials for r in rules.values()], pa.int64()),
        "min_trials": pa.array([r.min_trials for r in rules.values()], pa.int64()),
        "look_conf": pa.array([look_conf(r) for r in rules.values()], pa.float64()),
    })
    con.register("precision_rules", table)
    con.execute("ALTER VIEW outcomes RENAME TO outcomes_base")
    from .db import read_sql

    run_script(con, read_sql("_precision"))
    return True
