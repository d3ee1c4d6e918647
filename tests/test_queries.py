"""queries/: DuckDB views, named SQL, capacity, plots and the query/capacity/plot CLI.

Everything runs on small result dirs written by tests/synthetic_results.py with
known counts; each SQL answer is checked against a plain pyarrow/numpy
aggregation of the same files using exact binomial intervals from scipy (precision_helpers.cp) and
core.histogram.quantile.
The `reference_outcomes(dir)` helper works on any result dir, so the same checks
can run over a real `stoprace run` directory.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.errors import StopraceError
from core.histogram import N_BINS, quantile
from core.outcomes import EVENT_OUTCOMES, OUTCOMES
from core.params import DEFAULTS, PARAM_NAMES
from core.stats import trials_needed, wilson, zero_event_trials
from queries.capacity import capacity
from queries.db import QueryError, connect, result_set_problems, swept_axes
from queries.format import header, render_table
from queries.named import list_named, load_named, run_named, run_sql
from sweeps.cli import main
from sweeps.schema import EVENTS_SCHEMA, POINTS_SCHEMA

import synthetic_results as sr
from precision_helpers import cp

REPO = Path(__file__).resolve().parents[1]
P_NAMES = [f"p_{o}" for o in ("race", "hang", "timeout", "bad")]


# --------------------------------------------------------------------------- reference (python) aggregation


def _committed_files(d: Path, what: str) -> list[Path]:
    """The files a manifest commits, found without queries.resultset: segments (format 2) or task files."""
    m = json.loads((d / "manifest.json").read_text())
    files = [d / s[what]["path"] for s in m.get("segments", []) if s.get(what)]
    tasks = m.get("legacy_tasks", m.get("tasks_done", []))
    ids = sorted({t for r in tasks for t in ([r] if isinstance(r, int) else range(r[0], r[1] + 1))})
    return files + [f for f in (d / what / f"task-{t:06d}.parquet" for t in ids) if f.exists()]


def _read_points(d: Path) -> list[dict[str, Any]]:
    rows = []
    for f in _committed_files(d, "points"):
        rows.extend(pq.read_table(f).to_pylist())
    return rows


def _read_events(d: Path) -> list[dict[str, Any]]:
    rows = []
    for f in _committed_files(d, "events"):
        rows.extend(pq.read_table(f).to_pylist())
    return rows


def reference_outcomes(*dirs: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (sweep, point_id): parameters, summed counts, merged histogram and every outcomes column."""
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    for d in dirs:
        for r in _read_points(Path(d)):
            key = (r["sweep"], r["point_id"])
            a = acc.get(key)
            if a is None:
                a = acc[key] = {n: r[n] for n in PARAM_NAMES}
                a.update(sweep=r["sweep"], point_id=r["point_id"], shards=0, trials=0, hist=np.zeros(N_BINS, np.int64),
                         t_sum=0.0, t_max=None, **{o: 0 for o in OUTCOMES})
            a["shards"] += 1
            a["trials"] += r["trials"]
            for o in OUTCOMES:
                a[o] += r[o]
            a["hist"] += np.asarray(r["t_done_hist"], np.int64)
            if math.isfinite(r["t_done_sum_us"]):
                a["t_sum"] += r["t_done_sum_us"]
            if r["t_done_max_us"] is not None and math.isfinite(r["t_done_max_us"]):
                a["t_max"] = r["t_done_max_us"] if a["t_max"] is None else max(a["t_max"], r["t_done_max_us"])
    for a in acc.values():
        n = a["trials"]
        a["bad"] = a["timeout"] + a["race"] + a["hang"]
        # MODEL.md: only a dead CPU on the kexec path hangs, only the panic path times out
        can = {"p_race": True, "p_bad": True, "p_hang": a["wait"] == 1 and a["p_unresponsive"] > 0,
               "p_timeout": a["wait"] == 0}
        for name, k in (("p_race", a["race"]), ("p_hang", a["hang"]), ("p_timeout", a["timeout"]), ("p_bad", a["bad"])):
            a[name] = k / n if n else None
            a[name + "_lo"], a[name + "_hi"] = cp(k, n) if can[name] or k else (0.0, 0.0)
            a[name + "_method"] = "counted" if can[name] or k else "zero by model"
        finite = n - a["hang"]
        a["t_mean_us"] = a["t_sum"] / finite if finite else None
        for q, col in ((0.5, "t_p50_us"), (0.99, "t_p99_us"), (0.999, "t_p999_us")):
            v = quantile(a["hist"], q, a["t_max"])
            a[col] = None if math.isnan(v) else v
        a["t_max_us"] = a["t_max"]
    return acc


def _fmt_g(v: Any) -> str:
    return v if isinstance(v, str) else "%g" % v


def reference_differs(params: dict[str, Any], skip: tuple[str, ...] = ()) -> str:
    return " ".join(f"{n}={_fmt_g(params[n])}" for n in PARAM_NAMES
                    if n not in skip and params[n] != DEFAULTS[n])


def close(a: float | None, b: float | None, rel: float = 1e-12, abs_: float = 1e-300) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


# --------------------------------------------------------------------------- fixtures


def _grid_counts(p: dict[str, Any]) -> list[dict[str, int]]:
    """Counts that differ per point and shard, so sums and groupings are checked for real."""
    n_cpus, w = p["n_cpus"], p["wbinvd_us"]
    flush = p.get("mitigation") == "early_flush"
    base = int(round(math.log2(n_cpus))) + int(round(math.log10(w)))
    race = base * (1 if flush else 4)
    shards = []
    for k in range(3 if n_cpus == 64 else 2):
        hang = (k + base) % 3
        timeout = 1 if (n_cpus == 512 and k == 0) else 0
        nmi = 5 + k
        shards.append({"clean": 20_000 - race - hang - timeout - nmi + 100 * k, "nmi_clean": nmi,
                       "race": race + k, "hang": hang, "timeout": timeout})
    return shards


@pytest.fixture(scope="module")
def grid_dir(tmp_path_factory) -> Path:
    pts = sr.grid({"n_cpus": [8, 64, 512], "wbinvd_us": [100.0, 1000.0, 10000.0],
                   "mitigation": ["none", "early_flush"]}, _grid_counts, base={"p_stall": 0.01})
    return sr.write_results(tmp_path_factory.mktemp("grid") / "r", pts, sweep="grid", n_tasks=5, estimator_every=2)


@pytest.fixture(scope="module")
def con(grid_dir):
    return connect(grid_dir)


@pytest.fixture(scope="module")
def ref(grid_dir):
    return reference_outcomes(grid_dir)


@pytest.fixture(scope="module")
def noevents_dir(tmp_path_factory) -> Path:
    pts = sr.grid({"n_cpus": [4, 16]}, lambda p: {"clean": 500, "nmi_clean": 3})
    return sr.write_results(tmp_path_factory.mktemp("noev") / "r", pts, sweep="quiet", events=False)


def _cap_counts(p: dict[str, Any]) -> list[dict[str, int]]:
    if p["n_cpus"] <= 64:
        return [{"clean": 2_000_000}, {"clean": 2_000_000}]
    return [{"clean": 1_990_000, "race": 10_000}, {"clean": 1_995_000, "race": 3_000, "hang": 2_000}]


@pytest.fixture(scope="module")
def cap_dir(tmp_path_factory) -> Path:
    pts = sr.grid({"n_cpus": [8, 16, 64, 256, 1024], "wbinvd_us": [100.0, 10000.0]}, _cap_counts)
    return sr.write_results(tmp_path_factory.mktemp("cap") / "r", pts, sweep="cap", events=False)


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory) -> Path:
    """Few trials: 0 events everywhere, far too few to show p < 1e-6."""
    pts = sr.grid({"n_cpus": [8, 64, 512]}, lambda p: [{"clean": 50_000}, {"clean": 50_000}])
    return sr.write_results(tmp_path_factory.mktemp("small") / "r", pts, sweep="small", events=False)


def one(c, sql: str) -> tuple:
    """The single row of a query (fetchall: DuckDB 2 keeps a half-fetched execute() result open)."""
    (row,) = c.sql(sql).fetchall()
    return row


# --------------------------------------------------------------------------- connect / views


def test_points_and_events_views_read_every_file(con, grid_dir):
    rows = _read_points(grid_dir)
    assert one(con, "SELECT count(*) FROM points")[0] == len(rows)
    n_events = sum(r[o] for r in rows for o in EVENT_OUTCOMES)
    assert one(con, "SELECT count(*) FROM events")[0] == n_events == len(_read_events(grid_dir))
    by_outcome = dict(con.execute("SELECT outcome, count(*) FROM events GROUP BY 1").fetchall())
    assert by_outcome == {o: sum(r[o] for r in rows) for o in EVENT_OUTCOMES if sum(r[o] for r in rows)}


def test_union_by_name_mixes_files_with_extra_columns(con, grid_dir):
    cols = [r[0] for r in con.execute("SELECT column_name FROM (DESCRIBE points)").fetchall()]
    assert set(POINTS_SCHEMA.names) <= set(cols)
    for f in sr.ESTIMATOR_FIELDS:
        assert f.name in cols
    n_est, n_null = one(con, "SELECT count(estimator), count(*) - count(estimator) FROM points")
    assert n_est > 0 and n_null > 0
    assert one(con, "SELECT count(*) FROM outcomes")[0] == 18


def test_scans_of_the_registered_files_are_bounded_and_read_every_row(grid_dir, noevents_dir, monkeypatch):
    """The datasets DuckDB scans read in SCAN_OPTIONS' small batches (bounded memory, issue 22 item 6),
    one set or several, and give exactly the rows pyarrow reads from the same files by default."""
    import pyarrow.compute as pc

    import queries.db as db
    from queries.resultset.reader import ResultSet

    monkeypatch.setitem(db.SCAN_OPTIONS, "batch_size", 3)
    sets = [ResultSet.open(grid_dir), ResultSet.open(noevents_dir)]
    for chosen in (sets[:1], sets):
        d = db._union(chosen, "points")
        assert d is not None
        batches = list(d.scanner(columns=["point_id", "shard", "t_done_hist"]).to_reader())
        assert len(batches) > 1 and max(b.num_rows for b in batches) <= 3
        plain = [rs.dataset("points").to_table(columns=["point_id", "shard", "t_done_hist"]) for rs in chosen]
        key = [("point_id", "ascending"), ("shard", "ascending")]
        got = pa.Table.from_batches(batches).sort_by(key)
        assert got.equals(pa.concat_tables(plain).sort_by(key))
        assert d.scanner(filter=pc.field("shard") == 0).to_table().num_rows == sum(
            t.filter(pc.field("shard") == 0).num_rows for t in plain)  # DuckDB's pushed-down filters


def test_empty_events_view_has_the_events_columns(noevents_dir):
    assert not list((noevents_dir / "events").glob("*.parquet"))
    c = connect(noevents_dir)
    t = c.sql("SELECT * FROM events").to_arrow_table()
    assert t.num_rows == 0
    assert t.schema.names == EVENTS_SCHEMA.names
    assert [f.type for f in t.schema] == [f.type for f in EVENTS_SCHEMA]
    assert one(c, "SELECT count(*) FROM outcomes")[0] == 2


def test_events_dir_missing_entirely(tmp_path, noevents_dir):
    d = tmp_path / "r"
    shutil.copytree(noevents_dir, d)
    shutil.rmtree(d / "events")
    assert one(connect(d), "SELECT count(*) FROM events")[0] == 0


def test_several_dirs_are_told_apart_by_sweep(grid_dir, noevents_dir):
    c = connect(grid_dir, noevents_dir)
    assert dict(c.execute("SELECT sweep, count(*) FROM outcomes GROUP BY 1").fetchall()) == {"grid": 18, "quiet": 2}
    ref = reference_outcomes(grid_dir, noevents_dir)
    got = {(r["sweep"], r["point_id"]): r for r in c.sql("SELECT * FROM outcomes").to_arrow_table().to_pylist()}
    assert got.keys() == ref.keys()


def test_bad_dirs_are_one_line_errors(tmp_path, grid_dir):
    with pytest.raises(QueryError, match="does not exist"):
        connect(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(QueryError, match="no manifest.json"):
        connect(tmp_path / "empty")
    (tmp_path / "nopoints").mkdir()
    (tmp_path / "nopoints" / "manifest.json").write_text('{"spec_hash": "x"}')
    with pytest.raises(QueryError, match="no points files"):
        connect(tmp_path / "nopoints")
    (tmp_path / "badjson").mkdir()
    (tmp_path / "badjson" / "manifest.json").write_text("{")
    with pytest.raises(QueryError, match="not valid JSON"):
        connect(tmp_path / "badjson")
    with pytest.raises(QueryError, match="given twice"):
        connect(grid_dir, grid_dir)
    shutil.copytree(grid_dir, tmp_path / "copy")
    with pytest.raises(QueryError, match="same sweep"):
        connect(grid_dir, tmp_path / "copy")
    with pytest.raises(QueryError, match="no results dir given"):
        connect()
    for e in (QueryError("x"),):
        assert isinstance(e, StopraceError)


def test_query_errors_reach_the_user_as_one_line_and_exit_2(capsys, tmp_path):
    # every connect() refusal above is a user error: the CLI prints it on one line, exit 2
    (tmp_path / "nopoints").mkdir()
    (tmp_path / "nopoints" / "manifest.json").write_text('{"spec_hash": "x"}')
    for d, needle in ((tmp_path / "nope", "does not exist"), (tmp_path / "nopoints", "no points files")):
        rc, out, err = _run(capsys, "query", d, "--sql", "SELECT 1")
        assert rc == 2 and out == "" and needle in err and len(err.strip().splitlines()) == 1, (rc, out, err)


def test_unreadable_points_file_is_left_out_and_reported(tmp_path, noevents_dir):
    d = tmp_path / "r"
    shutil.copytree(noevents_dir, d)
    full = connect(noevents_dir).execute("SELECT count(*) FROM points").fetchone()[0]
    lost = pq.read_table(d / "points" / "task-000000.parquet").num_rows
    (d / "points" / "task-000000.parquet").write_bytes(b"not parquet")
    c = connect(d)
    assert c.execute("SELECT count(*) FROM points").fetchone()[0] == full - lost  # the rest still answers
    (problem,) = result_set_problems(c)
    assert "damaged: points/task-000000.parquet is unreadable" in problem and "(tasks 0)" in problem
    for f in (d / "points").glob("*.parquet"):
        f.write_bytes(b"not parquet")
    with pytest.raises(QueryError, match="no intact points files"):
        connect(d)


# --------------------------------------------------------------------------- outcomes vs core


def test_outcomes_match_reference(con, ref):
    got = {(r["sweep"], r["point_id"]): r for r in con.sql("SELECT * FROM outcomes").to_arrow_table().to_pylist()}
    assert got.keys() == ref.keys()
    for key, r in ref.items():
        g = got[key]
        for n in PARAM_NAMES:
            assert g[n] == r[n], n
        for n in ("shards", "trials", "bad", *OUTCOMES):
            assert g[n] == r[n], n
        for n in P_NAMES:
            assert close(g[n], r[n]), n
            # exact intervals against scipy's beta quantiles: core.stats solves to ~1e-13, scipy to ~1e-15
            assert close(g[n + "_lo"], r[n + "_lo"], rel=1e-9, abs_=1e-18), (n, g[n + "_lo"], r[n + "_lo"])
            assert close(g[n + "_hi"], r[n + "_hi"], rel=1e-9, abs_=1e-18), (n, g[n + "_hi"], r[n + "_hi"])
            assert g[n + "_method"] == r[n + "_method"], n
        for n in ("t_mean_us", "t_p50_us", "t_p99_us", "t_p999_us", "t_max_us"):
            assert close(g[n], r[n], rel=1e-12), (n, g[n], r[n])
        assert g["preflush_us"] is None


def test_outcomes_columns(con):
    cols = [r[0] for r in con.execute("SELECT column_name FROM (DESCRIBE outcomes)").fetchall()]
    assert cols[:2] == ["sweep", "point_id"]
    assert cols[2: 2 + len(PARAM_NAMES)] == list(PARAM_NAMES)
    for n in P_NAMES:
        assert {n, n + "_lo", n + "_hi"} <= set(cols)
    assert {"shards", "trials", "bad", "t_mean_us", "t_p50_us", "t_p99_us", "t_p999_us", "t_max_us"} <= set(cols)


def test_wilson_macros_match_core_stats(con):
    rng = np.random.default_rng(7)
    n = np.concatenate([[0, 1, 1, 2, 10, 10, 10, 1000, 10**9, 10**12, 3],
                        rng.integers(1, 10**7, 300)]).astype(np.int64)
    k = np.concatenate([[0, 0, 1, 1, 0, 5, 10, 1, 0, 10**6, 3],
                        [rng.integers(0, m + 1) for m in n[11:]]]).astype(np.int64)
    t = pa.table({"k": k, "n": n})
    con.register("wk", t)
    try:
        lo, hi = (np.array(c) for c in zip(*con.execute("SELECT wilson_lo(k, n), wilson_hi(k, n) FROM wk").fetchall()))
    finally:
        con.unregister("wk")
    rlo, rhi = wilson(k, n)
    np.testing.assert_allclose(lo, rlo, rtol=1e-12, atol=1e-18)
    np.testing.assert_allclose(hi, rhi, rtol=1e-12, atol=1e-18)
    assert lo[0] == 0 and hi[0] == 1 and lo[1] == 0 and hi[2] == 1  # n = 0, k = 0, k = n


def test_quantiles_match_core_histogram_on_odd_histograms(tmp_path):
    rng = np.random.default_rng(3)
    hists, pts = [], []
    shapes = []
    one = np.zeros(N_BINS, np.int64)
    one[0] = 7
    shapes.append(one)                      # everything below 1 us
    top = np.zeros(N_BINS, np.int64)
    top[127] = 3
    shapes.append(top)                      # last bin
    two = np.zeros(N_BINS, np.int64)
    two[[10, 90]] = [999, 1]                # p999 right at a bin edge
    shapes.append(two)
    for _ in range(12):                     # random sparse shapes
        h = np.zeros(N_BINS, np.int64)
        idx = rng.choice(N_BINS, size=rng.integers(1, 12), replace=False)
        h[idx] = rng.integers(1, 10_000, idx.size)
        shapes.append(h)
    for i, h in enumerate(shapes):
        a = h // 2
        b = h - a
        hists.append([a, b])
        pts.append(sr.Point({"n_cpus": 2 + i}, [{"clean": int(a.sum())}, {"clean": int(b.sum())}], hists=[a, b]))
    # a point whose every trial hangs: no finite stop time at all
    pts.append(sr.Point({"n_cpus": 200}, [{"hang": 5}], hists=[np.zeros(N_BINS, np.int64)]))
    d = sr.write_results(tmp_path / "q", pts, sweep="q", n_tasks=4)
    c = connect(d)
    got = {r["n_cpus"]: r for r in c.sql("SELECT * FROM outcomes").to_arrow_table().to_pylist()}
    for i, h in enumerate(shapes):
        g = got[2 + i]
        for q, col in ((0.5, "t_p50_us"), (0.99, "t_p99_us"), (0.999, "t_p999_us")):
            want = quantile(h, q, g["t_max_us"])
            assert close(g[col], want, rel=1e-13), (i, col, g[col], want)
    hang = got[200]
    assert hang["t_p50_us"] is None and hang["t_mean_us"] is None and hang["t_max_us"] is None
    assert hang["p_hang"] == 1.0 and hang["p_hang_hi"] == 1.0


# --------------------------------------------------------------------------- named queries


def test_named_queries_are_listed_and_documented():
    names = {q.name for q in list_named()}
    assert {"hang_conditions", "sensitivity", "mitigation_effect", "stop_time"} <= names
    sql_dir = REPO / "queries" / "sql"
    for q in list_named():
        first = (sql_dir / f"{q.name}.sql").read_text().splitlines()[0]
        assert first.startswith("-- description: ") and q.description
    assert load_named("hang_conditions").defaults() == {"threshold": "1e-3"}
    with pytest.raises(QueryError, match="did you mean 'stop_time'"):
        load_named("stoptime")


def test_every_named_query_runs(con):
    for q in list_named():
        t = run_named(con, q.name)
        assert isinstance(t, pa.Table), q.name


@pytest.mark.parametrize("threshold", [1e-3, 1.2e-3, 5e-4])
def test_hang_conditions(con, ref, threshold):
    t = run_named(con, "hang_conditions", {"threshold": str(threshold)})
    got = {r["point_id"]: r for r in t.to_pylist()}
    want = {k[1] for k, r in ref.items() if r["p_bad_hi"] > threshold}
    assert set(got) == want and want
    for pid, g in got.items():
        r = ref[("grid", pid)]
        assert g["differs"] == reference_differs(r)
        verdict = "exceeds" if r["p_bad_lo"] > threshold else "unresolved" if r["bad"] == 0 else "possible"
        assert g["verdict"] == verdict and g["method"] == "counted"
        if verdict == "unresolved":  # the smallest n with cp(0, n) < threshold, from scipy
            n = g["trials_needed"]
            assert cp(0, n)[1] < threshold <= cp(0, n - 1)[1]
        else:
            assert g["trials_needed"] is None
        assert close(g["p_bad_hi"], r["p_bad_hi"], rel=1e-9)
        assert (g["race"], g["hang"], g["timeout"], g["trials"]) == (r["race"], r["hang"], r["timeout"], r["trials"])
    his = [r["p_bad_lo"] for r in t.to_pylist()]
    assert his == sorted(his, reverse=True)


def test_hang_conditions_rejects_unknown_param(con):
    with pytest.raises(QueryError, match="did you mean 'threshold'"):
        run_named(con, "hang_conditions", {"treshold": "1"})


def test_sensitivity(con, ref):
    """Each swept axis against an independent selection: other axes at their lower-middle value, the scenario
    axes (wait, mitigation) never held but split out, one row per (axis, value, scenario)."""
    t = run_named(con, "sensitivity").to_pylist()
    pts = list(ref.values())
    axes = [n for n in PARAM_NAMES if len({p[n] for p in pts}) > 1]
    assert axes == ["n_cpus", "wbinvd_us", "mitigation"]
    split = [a for a in axes if a in ("wait", "mitigation")]
    med = {}
    for a in axes:
        if a in split:
            continue
        vals = sorted({p[a] for p in pts})
        med[a] = vals[(len(vals) - 1) // 2]
    assert med == {"n_cpus": 64, "wbinvd_us": 1000.0}
    want = []
    for a in axes:
        scen_axes = [b for b in split if b != a]
        scenarios = sorted({tuple(p[b] for b in scen_axes) for p in pts})
        for sc in scenarios:
            for v in sorted({p[a] for p in pts}):
                sel = [p for p in pts if p[a] == v and all(p[b] == x for b, x in zip(scen_axes, sc))
                       and all(p[b] == med[b] for b in med if b != a)]
                assert len(sel) == 1
                n, k = sel[0]["trials"], sel[0]["race"]
                scen = " ".join(f"{b}={x}" for b, x in zip(scen_axes, sc))
                want.append((a, v, scen, n, k, k / n, *cp(k, n)))
    assert len(t) == len(want) == 3 * 2 + 3 * 2 + 2
    for g, w in zip(t, want):
        a, v, scen, n, k, p, lo, hi = w
        assert g["axis"] == a and g["value"] == str(v)  # DuckDB's text of the value: '64', '1000.0', 'none'
        assert g["scenario"] == scen and g["estimator"] == "naive"
        assert (g["trials"], g["race"]) == (n, k)
        assert close(g["p_race"], p) and close(g["p_race_lo"], lo, 1e-9) and close(g["p_race_hi"], hi, 1e-9)
    held = {g["axis"]: g["held"] for g in t}
    assert held["n_cpus"] == "wbinvd_us=1000" and held["mitigation"] == "n_cpus=64 wbinvd_us=1000"


def test_mitigation_effect(con, ref):
    t = run_named(con, "mitigation_effect").to_pylist()
    none = {tuple(r[n] for n in PARAM_NAMES if n != "mitigation"): r for r in ref.values() if r["mitigation"] == "none"}
    flush = {tuple(r[n] for n in PARAM_NAMES if n != "mitigation"): r for r in ref.values()
             if r["mitigation"] == "early_flush"}
    assert len(t) == len(none) == len(flush) == 9
    by_differs = {g["differs"]: g for g in t}
    for key, n in none.items():
        f = flush[key]
        g = by_differs[reference_differs(n, skip=("mitigation",))]
        assert (g["trials_none"], g["trials_flush"]) == (n["trials"], f["trials"])
        assert g["estimator"] == "naive"
        assert close(g["p_race_none"], n["p_race"]) and close(g["p_race_flush"], f["p_race"])
        assert close(g["race_factor"], n["p_race"] / f["p_race"])
        assert g["race_factor_lo"] <= g["race_factor"] <= g["race_factor_hi"]
        assert close(g["t_p99_change_us"], f["t_p99_us"] - n["t_p99_us"], rel=1e-9)
        assert close(g["t_mean_change_us"], f["t_mean_us"] - n["t_mean_us"], rel=1e-9)
        assert g["preflush_us"] is None


def test_mitigation_effect_uses_preflush_column_when_present(tmp_path):
    pts = sr.grid({"mitigation": ["none", "early_flush"]}, lambda p: {"clean": 1000, "race": 4})
    d = sr.write_results(tmp_path / "pf", pts, sweep="pf",
                         extra_points_columns={"preflush_sum_us": lambda r: 2500.0 * r["trials"]
                                               if r["mitigation"] == "early_flush" else float("nan")})
    c = connect(d)
    t = run_named(c, "mitigation_effect").to_pylist()
    assert len(t) == 1 and close(t[0]["preflush_us"], 2500.0)
    assert dict(c.sql("SELECT mitigation, preflush_us FROM outcomes").fetchall()) == {"none": None, "early_flush": 2500.0}


def test_stop_time(con, ref):
    t = run_named(con, "stop_time").to_pylist()
    groups: dict[tuple, list] = defaultdict(list)
    for r in ref.values():
        groups[(r["n_cpus"], r["wbinvd_us"])].append(r)
    assert [(g["n_cpus"], g["wbinvd_us"]) for g in t] == sorted(groups)
    for g in t:
        rs = groups[(g["n_cpus"], g["wbinvd_us"])]
        h = sum(r["hist"] for r in rs)
        assert g["points"] == len(rs) and g["trials"] == sum(r["trials"] for r in rs)
        for q, col in ((0.5, "t_p50_us"), (0.99, "t_p99_us"), (0.999, "t_p999_us")):
            assert close(g[col], quantile(h, q, max(r["t_max"] for r in rs if r["t_max"] is not None)), rel=1e-12), col
        finite = sum(r["trials"] - r["hang"] for r in rs)
        assert close(g["t_mean_us"], sum(r["t_sum"] for r in rs) / finite, rel=1e-9)
        assert close(g["t_max_us"], max(r["t_max_us"] for r in rs))


def test_run_sql_params_and_errors(con):
    t = run_sql(con, "SELECT count(*) AS n FROM outcomes WHERE n_cpus = $n", {"n": "64"})
    assert t.to_pylist() == [{"n": 6}]
    with pytest.raises(QueryError, match="bad SQL"):
        run_sql(con, "SELEC 1")
    with pytest.raises(QueryError, match="bad SQL"):
        run_sql(con, "SELECT nope FROM outcomes")
    with pytest.raises(QueryError, match="one SQL statement"):
        run_sql(con, "SELECT 1; SELECT 2")
    with pytest.raises(QueryError, match=r"\$n"):
        run_sql(con, "SELECT $n")
    with pytest.raises(QueryError, match="not used"):
        run_sql(con, "SELECT 1", {"x": "1"})


def test_differs_and_defaults_tables(con):
    d = con.sql("SELECT * FROM defaults").to_arrow_table().to_pylist()[0]
    assert d == {n: DEFAULTS[n] for n in PARAM_NAMES}
    diffs = {r[0] for r in con.execute("SELECT differs FROM differs").fetchall()}
    assert "n_cpus=8 p_stall=0.01 wbinvd_us=100 mitigation=early_flush" in diffs
    assert swept_axes(con) == ["n_cpus", "wbinvd_us", "mitigation"]


# --------------------------------------------------------------------------- capacity


def test_zero_event_trials_is_the_exact_zero_event_threshold():
    """The smallest n whose exact 95% upper bound of 0 events (scipy) is below p: ~3.69/p."""
    for p in (1e-3, 1e-6, 3e-8, 0.3):
        n = zero_event_trials(p)
        assert cp(0, n)[1] < p <= cp(0, n - 1)[1]
        if p < 0.01:
            assert 3.68 / p < n < 3.7 / p
            assert abs(trials_needed(p) * p - 3.0) < 0.01  # rule of three
    assert zero_event_trials(1e-16) is None and trials_needed(1e-16) is None  # beyond 1e15 trials


def test_capacity_forced_case(cap_dir):
    c = capacity(connect(cap_dir), 1e-6, metric="p_race")
    assert c.resolvable and c.by == ["wbinvd_us"] and c.worst_over == []
    rows = c.limits.to_pylist()
    assert [r["wbinvd_us"] for r in rows] == [100.0, 10000.0]
    for r in rows:
        assert r["max_n_cpus"] == 64 and r["fails_at_n_cpus"] == 256
        assert r["p_race"] == 0 and r["p_race_hi"] == pytest.approx(1 - 0.025 ** (1 / 4_000_000), rel=1e-12)
        assert r["status"] == "exceeds at n_cpus=256"
        assert r["fail_p_race"] == pytest.approx(13_000 / 4_000_000)
    # p_bad adds the hangs; worst case over wbinvd_us when --by is empty
    c = capacity(connect(cap_dir), 1e-6, by=[], metric="p_bad")
    assert c.worst_over == ["wbinvd_us"]
    (r,) = c.limits.to_pylist()
    assert r["max_n_cpus"] == 64 and r["fail_p_bad"] == pytest.approx(15_000 / 4_000_000)


def test_capacity_fleet_table(cap_dir):
    c = capacity(connect(cap_dir), 1e-6, metric="p_race", hosts=1e4, kexecs_per_host_year=12)
    rows = c.fleet.to_pylist()
    assert len(rows) == 10
    for r in rows:
        assert r["failures_per_year"] == pytest.approx(r["p_race"] * 1.2e5)
        assert r["failures_per_year_lo"] == pytest.approx(r["p_race_lo"] * 1.2e5)
        assert r["failures_per_year_hi"] == pytest.approx(r["p_race_hi"] * 1.2e5)
        assert r["within_target"] == (r["n_cpus"] <= 64)
        assert r["t_p99_us"] > 0 and r["t_p999_us"] >= r["t_p99_us"]


def test_capacity_cannot_resolve(small_dir):
    c = capacity(connect(small_dir), 1e-6)
    assert not c.resolvable and c.max_trials == 100_000
    assert c.trials_needed == 3_688_878 and c.rule_of_three == 2_995_731  # ln(0.025) / ln(1 - 1e-6), ln(0.05) / ...
    assert any("CANNOT RESOLVE" in n and f"{c.trials_needed:,}" in n for n in c.notes)
    for r in c.limits.to_pylist():
        assert r["max_n_cpus"] is None and r["status"].startswith("unresolved at n_cpus=8")


def test_capacity_input_errors(cap_dir):
    c = connect(cap_dir)
    with pytest.raises(QueryError, match="did you mean 'p_race'"):
        capacity(c, 1e-6, metric="p_rac")
    with pytest.raises(QueryError, match="n_cpus"):
        capacity(c, 1e-6, by=["n_cpus"])
    with pytest.raises(QueryError, match="did you mean 'wbinvd_us'"):
        capacity(c, 1e-6, by=["wbinvd"])
    with pytest.raises(QueryError, match="go together"):
        capacity(c, 1e-6, hosts=10)
    with pytest.raises(QueryError):
        capacity(c, 2.0)


# --------------------------------------------------------------------------- CLI


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_list(capsys):
    rc, out, _ = _run(capsys, "query", "--list")
    assert rc == 0
    for name in ("hang_conditions", "sensitivity", "mitigation_effect", "stop_time", "threshold"):
        assert name in out


def test_cli_named_table_has_units(capsys, grid_dir):
    rc, out, err = _run(capsys, "query", grid_dir, "--named", "stop_time")
    assert rc == 0, err
    assert "t_p99 (µs)" in out and "wbinvd (µs)" in out
    assert len(out.splitlines()) >= 2 + 9


def test_cli_table_max_rows(capsys, grid_dir):
    rc, out, _ = _run(capsys, "query", grid_dir, "--sql", "SELECT point_id FROM outcomes", "--max-rows", "5")
    lines = out.splitlines()
    assert rc == 0 and len(lines) == 2 + 5 + 1 and "more rows not shown" in lines[-1]
    rc, out, _ = _run(capsys, "query", grid_dir, "--sql", "SELECT point_id FROM outcomes", "--max-rows", "0")
    assert rc == 0 and len(out.splitlines()) == 2 + 18


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_cli_output_formats(capsys, grid_dir, con, tmp_path, fmt):
    out_file = tmp_path / f"h.{fmt}"
    rc, _, err = _run(capsys, "query", grid_dir, "--named", "hang_conditions", "--param", "threshold=1e-3",
                      "--format", fmt, "-o", out_file)
    assert rc == 0, err
    want = run_named(con, "hang_conditions").to_pylist()
    if fmt == "parquet":
        got = pq.read_table(out_file).to_pylist()
    elif fmt == "json":
        got = json.loads(out_file.read_text())
    else:
        import pyarrow.csv as pacsv

        got = pacsv.read_csv(out_file).to_pylist()
    assert [r["point_id"] for r in got] == [r["point_id"] for r in want]
    assert [r["p_bad_hi"] for r in got] == pytest.approx([r["p_bad_hi"] for r in want], rel=1e-15)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_cli_sql_to_stdout_csv_and_json(capsys, grid_dir):
    rc, out, _ = _run(capsys, "query", grid_dir, "--sql", "SELECT n_cpus, count(*) AS n FROM outcomes GROUP BY 1 ORDER BY 1",
                      "--format", "csv")
    assert rc == 0 and out.splitlines() == ['"n_cpus","n"', "8,6", "64,6", "512,6"]
    rc, out, _ = _run(capsys, "query", grid_dir, "--sql", "SELECT t_done_hist FROM points LIMIT 1", "--format", "json")
    assert rc == 0 and len(json.loads(out)[0]["t_done_hist"]) == N_BINS


@pytest.mark.parametrize("argv, message", [
    (["--sql", "SELEC * FROM outcomes"], "bad SQL"),
    (["--sql", "SELECT nope FROM outcomes"], "bad SQL"),
    (["--named", "hang_condition"], "did you mean 'hang_conditions'"),
    (["--named", "hang_conditions", "--param", "bogus"], "NAME=VALUE"),
    (["--sql", "SELECT 1", "--format", "parquet"], "needs -o"),
])
def test_cli_errors_exit_2_and_write_nothing(capsys, grid_dir, tmp_path, argv, message):
    out_file = tmp_path / "out.csv"
    if "parquet" not in argv:
        argv = [*argv, "--format", "csv", "-o", str(out_file)]
    rc, out, err = _run(capsys, "query", grid_dir, *argv)
    assert rc == 2
    assert message in err and len(err.strip().splitlines()) == 1 and err.startswith("stoprace query: error:")
    assert out == "" and list(tmp_path.iterdir()) == []


def test_cli_bad_dirs(capsys, tmp_path):
    rc, _, err = _run(capsys, "query", tmp_path / "missing", "--sql", "SELECT 1")
    assert rc == 2 and "does not exist" in err
    rc, _, err = _run(capsys, "query", tmp_path, "--sql", "SELECT 1")
    assert rc == 2 and "not a stoprace result set" in err
    rc, _, err = _run(capsys, "capacity", tmp_path, "--target-p", "1e-6")
    assert rc == 2 and "not a stoprace result set" in err
    rc, _, err = _run(capsys, "plot", tmp_path, "--x", "n_cpus", "-o", tmp_path / "f.png")
    assert rc == 2 and "not a stoprace result set" in err
    rc, _, err = _run(capsys, "query", "--sql", "SELECT 1")
    assert rc == 2 and "DIR" in err


def test_cli_capacity(capsys, cap_dir, small_dir):
    rc, out, err = _run(capsys, "capacity", cap_dir, "--target-p", "1e-6", "--metric", "p_race",
                        "--hosts", "10000", "--kexecs-per-host-year", "12")
    assert rc == 0, err
    assert "exceeds at n_cpus=256" in out and "failures_per_year" in out and "t_p999 (µs)" in out
    rc, out, err = _run(capsys, "capacity", small_dir, "--target-p", "1e-6")
    assert rc == 0 and out.startswith("CANNOT RESOLVE") and "3,688,878" in out
    rc, out, _ = _run(capsys, "capacity", cap_dir, "--target-p", "1e-6", "--format", "json")
    data = json.loads(out)
    assert data["resolvable"] and {r["max_n_cpus"] for r in data["limits"]} == {64}
    rc, _, err = _run(capsys, "capacity", cap_dir, "--target-p", "1e-6", "--metric", "p_hangs")
    assert rc == 2 and "did you mean 'p_hang'" in err


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_cli_plot_heatmap_and_lines(capsys, grid_dir, tmp_path):
    f = tmp_path / "heat.png"
    rc, out, err = _run(capsys, "plot", grid_dir, "--x", "n_cpus", "--y", "wbinvd_us", "--metric", "p_race", "-o", f)
    assert rc == 0, err
    assert _png_size(f) == (800, 600) and f.stat().st_size > 5000
    assert "aggregated over mitigation" in out
    f2 = tmp_path / "lines.png"
    rc, out, err = _run(capsys, "plot", grid_dir, "--x", "n_cpus", "--lines", "wbinvd_us", "--metric", "p_bad",
                        "--where", "mitigation = 'none'", "--size", "6x4", "--dpi", "50", "-o", f2)
    assert rc == 0, err
    assert _png_size(f2) == (300, 200) and "aggregated" not in out
    f3 = tmp_path / "t.png"
    rc, _, err = _run(capsys, "plot", grid_dir, "--x", "wbinvd_us", "--y", "mitigation", "--metric", "t_p99_us", "-o", f3)
    assert rc == 0, err
    assert _png_size(f3) == (800, 600) and f3.stat().st_size > 5000


def test_plot_api_reports_aggregation(con, tmp_path):
    from queries.plot import plot

    r = plot(con, tmp_path / "p.png", x="n_cpus", y="wbinvd_us", metric="p_race")
    assert r.kind == "heatmap" and r.aggregated_over == ["mitigation"] and len(r.cells) == 9
    cell = next(c for c in r.cells if c["n_cpus"] == 8 and c["wbinvd_us"] == 100.0)
    pts = one(con, "SELECT sum(trials), sum(race) FROM outcomes WHERE n_cpus = 8 AND wbinvd_us = 100")
    assert (cell["trials"], cell["k"], cell["points"]) == (pts[0], pts[1], 2)
    assert "counts summed" in r.title


@pytest.mark.parametrize("argv, message", [
    (["--x", "n_cpu", "--y", "wbinvd_us"], "did you mean 'n_cpus'"),
    (["--x", "n_cpus", "--y", "wbinvd_us", "--metric", "p_rase"], "did you mean 'p_race'"),
    (["--x", "n_cpus", "--y", "wbinvd_us", "--where", "nope = 1"], "bad --where"),
    (["--x", "n_cpus", "--y", "wbinvd_us", "--where", "n_cpus > 100000"], "no points"),
    (["--x", "n_cpus", "--y", "n_cpus"], "must differ"),
])
def test_cli_plot_errors(capsys, grid_dir, tmp_path, argv, message):
    f = tmp_path / "x.png"
    rc, _, err = _run(capsys, "plot", grid_dir, *argv, "-o", f)
    assert rc == 2 and message in err
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- format, packaging, layering


def test_headers_and_number_format():
    assert header("t_p99_us") == "t_p99 (µs)" and header("wall_s") == "wall (s)" and header("p_race") == "p_race"
    t = pa.table({"p_race": [0.000123456, 0.0], "t_p99_us": [1234567.5, 12.5], "n": [3, None]})
    text = render_table(t)
    assert "0.000123" in text and "1.235e6" in text and "12.5" in text
    assert text.splitlines()[-1].endswith("-")  # NULL


def test_queries_does_not_import_sweeps_cluster_or_ray():
    code = ("import sys, queries.db, queries.named, queries.capacity, queries.format, queries.plot; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('sweeps', 'cluster', 'ray')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_sql_files_are_package_data():
    from importlib import resources

    files = {p.name for p in resources.files("queries").joinpath("sql").iterdir()}
    assert {"_macros.sql", "_views.sql", "_outcomes.sql", "hang_conditions.sql"} <= files
    toml = (REPO / "pyproject.toml").read_text()
    assert 'queries = ["sql/*.sql"]' in toml
