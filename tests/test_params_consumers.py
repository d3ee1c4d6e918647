"""Every consumer of a parameter's metadata derives it from core.params.PARAM_SPECS.

Walks the table and checks, per parameter: Params (type, default, bounds), spec
parsing (canonical type, `range` axes for int kinds and only for them, rounding of
int linspace axes), the points of a grid, the `simulate` CLI options (type, help,
default, domain), the Parquet schema and a real task's table, the SQL views'
columns and types, the synthetic test data, and the hypothesis strategies. A
parameter added to the table with one line reaches all of them; a consumer that
decides a type on its own fails here.
"""

from __future__ import annotations

import json
import math

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from core.errors import ParamError
from core.params import DEFAULTS, MAX_US, NEUTRAL, PARAM_NAMES, PARAM_SPECS, SPECS, Params, make_params
from queries.db import connect
from sweeps.cli import build_parser
from sweeps.grid import iter_points, iter_tasks
from sweeps.schema import POINTS_SCHEMA
from sweeps.shard import run_task
from sweeps.spec import SpecError, parse_spec

from param_strategies import domain_strategy, params_strategy
from synthetic_results import Point, write_results

IDS = [s.name for s in PARAM_SPECS]


def spec_of(axes: dict | None = None, base: dict | None = None):
    return parse_spec({"name": "t", "seed": 1, "trials": 4, "base": base or {}, "axes": axes or {}})


def another_value(s):
    """A valid value of `s` other than its default (from its domain)."""
    if s.choices is not None:
        return next(c for c in s.choices if c != s.default)
    up = s.le is None or s.default < s.le
    if s.kind == "int":
        return s.default + 1 if up else s.default - 1
    end = (s.default + 2.0 if s.le is None else s.le) if up else (s.ge if s.ge is not None else s.gt)
    return (s.default + end) / 2


def test_table_is_params():
    assert tuple(Params.model_fields) == PARAM_NAMES
    p = Params()
    for s in PARAM_SPECS:
        v = getattr(p, s.name)
        assert v == s.default and type(v) is s.py_type, s.name
        assert s.neutral is None or type(s.neutral) is s.py_type, s.name
        pa.type_for_alias(s.arrow)  # a real Arrow type
        if s.ge is not None:
            with pytest.raises(ParamError, match=s.name):
                make_params({s.name: s.py_type(s.ge - 1)})
        if s.le is not None:
            with pytest.raises(ParamError, match=s.name):
                make_params({s.name: s.py_type(s.le * 2 + 1)})
        if s.gt is not None:  # the open bound itself is refused, just above it is not
            with pytest.raises(ParamError, match=s.name):
                make_params({s.name: s.py_type(s.gt)})
            assert getattr(make_params({s.name: s.gt + 1e-9}), s.name) == s.gt + 1e-9
        if s.choices is not None:
            with pytest.raises(ParamError, match=s.name):
                make_params({s.name: s.py_type(s.default) + s.py_type(7)})


def test_times_are_bounded():
    # issue 15 item 7: 1e300 µs was accepted; every time now stops at MAX_US (core.params says why)
    times = [s for s in PARAM_SPECS if s.name.endswith("_us")]
    assert len(times) >= 12 and all(s.le == MAX_US for s in times)
    with pytest.raises(SpecError, match=r"wbinvd_us = 1e\+300 is not allowed: finite number in \[0, 1e\+12\]"):
        spec_of(base={"wbinvd_us": 1e300})
    assert spec_of(base={"wbinvd_us": MAX_US}).base["wbinvd_us"] == MAX_US


@pytest.mark.parametrize("name", IDS)
def test_spec_parsing(name):
    s = SPECS[name]
    other = another_value(s)
    base = spec_of(base={name: other}).base[name]
    assert base == other and type(base) is s.py_type
    axis = spec_of(axes={name: [s.default, other]}).axes[0]
    assert axis.values == (s.default, other) and all(type(v) is s.py_type for v in axis.values)
    pts = list(iter_points(spec_of(axes={name: [s.default, other]})))
    assert [type(p.values[name]) for p in pts] == [s.py_type] * 2
    assert pts[0].params == make_params(pts[0].values) and getattr(pts[1].params, name) == other
    if s.kind == "int":
        lo = min(s.choices) if s.choices else int(s.ge)
        r = spec_of(axes={name: {"range": [lo, lo + 2]}}).axes[0].values
        assert r == (lo, lo + 1) and all(type(v) is int for v in r)
        lin = spec_of(axes={name: {"linspace": [lo, lo + 1], "num": 3}}).axes[0].values
        assert lin == (lo, lo + 1) and all(type(v) is int for v in lin)  # lo, lo+0.5 -> lo+1 (half up), lo+1
    else:
        why = "range is only for integer parameters" if s.kind == "float" else "range need a numeric parameter"
        with pytest.raises(SpecError, match=rf"axes\.{name} = \{{'range': \[0, 2\]\}} is not allowed: .*{why}"):
            spec_of(axes={name: {"range": [0, 2]}})


@pytest.mark.parametrize("name", IDS)
def test_simulate_options(name):
    s = SPECS[name]
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["simulate"]
    act = next(a for a in sub._actions if a.dest == name)
    assert act.option_strings == ["--" + name.replace("_", "-")]
    assert act.type is s.py_type and act.default is None
    assert s.help in act.help and s.domain() in act.help and f"default {s.default}" in act.help
    other = another_value(s)
    got = getattr(sub.parse_args([act.option_strings[0], str(other)]), name)
    assert got == other and type(got) is s.py_type


def test_parquet_schema_and_a_real_task():
    for s in PARAM_SPECS:
        assert POINTS_SCHEMA.field(s.name).type == pa.type_for_alias(s.arrow), s.name
    spec = spec_of(base={"n_cpus": 2})
    table = run_task(next(iter_tasks(spec)), "t").points
    assert table.schema.equals(POINTS_SCHEMA)
    row = table.to_pylist()[0]
    for s in PARAM_SPECS:
        assert row[s.name] == spec.base[s.name] and type(row[s.name]) is s.py_type, s.name


def _duck_types(table: pa.Table) -> dict[str, str]:
    """DuckDB's own column types for an Arrow table (independent of queries.db)."""
    con = duckdb.connect()
    con.register("t", table)
    return {r[0]: r[1] for r in con.execute("DESCRIBE t").fetchall()}


def test_sql_views_and_synthetic_data(tmp_path):
    d = write_results(tmp_path / "r", [Point({"n_cpus": 8}), Point({"n_cpus": 16})], sweep="s")
    stored = pq.read_table(sorted((d / "points").glob("*.parquet"))[0])
    for s in PARAM_SPECS:
        assert stored.schema.field(s.name).type == pa.type_for_alias(s.arrow), s.name
        col = stored.column(s.name).to_pylist()
        assert all(type(v) is s.py_type for v in col), s.name
    want = _duck_types(pa.table({s.name: pa.array([s.default], pa.type_for_alias(s.arrow)) for s in PARAM_SPECS}))
    con = connect(d)
    for view in ("points", "outcomes", "point_params", "defaults"):
        got = {r[0]: r[1] for r in con.execute(f"DESCRIBE {view}").fetchall()}
        for n in PARAM_NAMES:
            assert got.get(n) == want[n], (view, n, got.get(n))
    kinds = dict(con.execute("SELECT name, kind FROM params").fetchall())
    assert kinds == {s.name: s.kind for s in PARAM_SPECS}
    assert con.execute("SELECT count(DISTINCT name) FROM params_long").fetchone()[0] == len(PARAM_NAMES)


def test_sql_views_read_a_set_written_before_later_parameters(tmp_path):
    # a file without the later parameters' columns (as the first release wrote) and one with them
    old = write_results(tmp_path / "old", [Point({"n_cpus": 8})], sweep="s")
    f = next((old / "points").glob("*.parquet"))
    t = pq.read_table(f)
    pq.write_table(t.drop_columns(list(NEUTRAL)), f)
    con = connect(old)
    row = con.execute(f"SELECT {', '.join(NEUTRAL)} FROM outcomes").fetchone()
    assert row == tuple(NEUTRAL.values())
    other = t.set_column(t.schema.get_field_index("n_cpus"), "n_cpus", pa.array([16] * t.num_rows, pa.int32()))
    other = other.set_column(other.schema.get_field_index("point_id"), "point_id",
                             pa.array(["0123456789abcdef"] * t.num_rows))  # another point (a repeated one is refused)
    pq.write_table(other.replace_schema_metadata(None), old / "points" / "task-000001.parquet")
    m = json.loads((old / "manifest.json").read_text())
    m["tasks_done"], m["n_tasks"] = [[0, 1]], 2  # commit it: a file the manifest does not list is not read
    (old / "manifest.json").write_text(json.dumps(m))
    rows = connect(old).execute(f"SELECT n_cpus, {', '.join(NEUTRAL)} FROM points ORDER BY n_cpus").fetchall()
    # the old file reads neutral (model_rev 1); the newer one keeps what it stored (the defaults: model_rev 2)
    assert rows == [(8, *NEUTRAL.values()), (16, *(DEFAULTS[n] for n in NEUTRAL))]


def test_hypothesis_strategies_fuzz_every_parameter():
    seen: dict[str, set] = {n: set() for n in PARAM_NAMES}
    domains: dict[str, set] = {n: set() for n in PARAM_NAMES}

    @settings(max_examples=150, database=None, deadline=None, phases=[Phase.generate])
    @given(p=params_strategy(), v=st.fixed_dictionaries({s.name: domain_strategy(s) for s in PARAM_SPECS}))
    def collect(p, v):
        for s in PARAM_SPECS:
            x = getattr(p, s.name)
            assert type(x) is s.py_type and (s.kind != "float" or math.isfinite(x)), s.name
            seen[s.name].add(x)
            domains[s.name].add(v[s.name])
        make_params(v)  # every generic value is in its domain

    collect()
    assert [n for n in PARAM_NAMES if len(seen[n]) < 2] == []  # every parameter is fuzzed
    assert [n for n in PARAM_NAMES if len(domains[n]) < 2] == []
