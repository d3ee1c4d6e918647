"""capacity's edge cases (issue 24 item 2) and its honesty (issue 23 item 4), through both doors.

- any target in (0, 1) answers, or says in one line why not: 1e-320 and 1e-22 on naive and cmc sets
  (tracebacks and an endless loop before), bounded by a timeout here;
- `--where` applies to an adaptive set's pass/fail decisions exactly as to its rows: a synthetic
  adaptive set whose n_cpus = 8 cell is decided below target on wait = 1 and above on wait = 0, so
  ignoring the filter says "exceeds at n_cpus=8" where the answer is "exceeds at n_cpus=16";
- a cell never passes on an interval that does not cover: the issue-23 case (cmc, a panic-path point
  with a tight race estimate and no timeout seen) is "unresolved" with the trials needed, not "pass".

Expected answers are hand-computed from the counts (scipy's exact bounds), not from the code under test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from queries.capacity import capacity
from queries.db import connect
from sweeps.cli import main
from sweeps.serve import ServeConfig, create_app, shutdown

import synthetic_results as sr
from precision_helpers import cp, look_conf

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


def _run(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def client(tmp_path):
    import shutil

    root = tmp_path / "results"
    root.mkdir()
    shutil.copytree(FIXTURES / "release1-naive", root / "naive")
    shutil.copytree(FIXTURES / "release1-cmc", root / "cmc")
    app = create_app(ServeConfig(locations=[str(root)], workers=1, query_timeout_s=20.0, row_limit=50))
    try:
        yield TestClient(app, base_url="http://127.0.0.1"), root
    finally:
        shutdown(app)


# ---- any target in (0, 1) -----------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["release1-naive", "release1-cmc"])
@pytest.mark.parametrize("target", ["1e-320", "1e-22", "5e-324", "0.999999"])
def test_any_target_answers_on_the_cli(capsys, name, target):
    rc, out, err = _run(capsys, "capacity", FIXTURES / name, "--target-p", target)
    assert rc == 0 and "Traceback" not in err, err
    assert "largest n_cpus" in out
    if float(target) < 1e-15:  # 0 events in any number of trials that can be run is not enough
        assert "needs more than 1e15" in out or "exceeds" in out
    rc, out, _ = _run(capsys, "capacity", FIXTURES / name, "--target-p", target, "--format", "json")
    data = json.loads(out)
    assert rc == 0 and data["limits"]
    if float(target) < 1e-15:
        assert data["trials_needed"] is None and data["rule_of_three"] is None


@pytest.mark.parametrize("target", ["1", "1.5", "0", "-1e-3", "nan", "inf"])
def test_targets_outside_the_open_interval_are_refused(capsys, target):
    """1 and 1.5 reach capacity() and are refused in one line; the rest argparse refuses (exit 2, its usage
    line first, the reason last)."""
    try:
        rc, out, err = _run(capsys, "capacity", FIXTURES / "release1-naive", "--target-p", target)
    except SystemExit as e:
        rc, out, err = e.code, *capsys.readouterr()
        assert "--target-p" in err.strip().splitlines()[-1]
    else:
        assert err.count("\n") == 1 and "must be in (0, 1)" in err, err
    assert rc == 2 and out == ""


@pytest.mark.timeout(120)
def test_any_target_answers_over_http(client):
    c, root = client
    for name in ("naive", "cmc"):
        for target in ("1e-320", "1e-22"):
            r = c.get(f"/api/sweeps/{name}/capacity", params={"target_p": target})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["trials_needed"] is None and body["limits"]
            assert all(("more than 1e15" in x["status"]) or x["status"].startswith("exceeds") for x in body["limits"])
        for bad in ("0", "1"):
            r = c.get(f"/api/sweeps/{name}/capacity", params={"target_p": bad})
            assert r.status_code == 400 and "\n" not in r.json()["error"]


def test_unresolved_cells_name_the_trials_needed(capsys):
    """release1-naive: 600 trials a point, 0 events on the early_flush points: at 1e-6 the exact bound of 0
    events (1 - 0.025^(1/600) = 6.13e-3) is far above; 3,688,878 trials would do (scipy threshold)."""
    c = capacity(connect(FIXTURES / "release1-naive"), 1e-6, where="mitigation = 'early_flush'")
    n_star = 3_688_878
    assert cp(0, n_star)[1] < 1e-6 <= cp(0, n_star - 1)[1]
    for r in c.limits.to_pylist():
        assert r["max_n_cpus"] is None
        assert r["status"] == f"unresolved at n_cpus=8: 0 events in 600 trials, needs {n_star:,}", r["status"]
    assert not c.resolvable and c.trials_needed == n_star


# ---- --where on an adaptive set -------------------------------------------------------------

RULE = {"metric": "p_bad", "target": 0.01, "max_trials": 4000, "min_trials": 1000}


def _adaptive_set(path: Path) -> Path:
    """A result set of a trials = "auto" sweep (spec.toml with its [precision] rule): 4000 trials a point,
    bad trials (as races) per (wait, n_cpus): (1, 8) none, every other cell 5%."""
    pts = []
    for wait in (0, 1):
        for n_cpus in (8, 16):
            bad = 0 if (wait, n_cpus) == (1, 8) else 100
            pts.append(sr.Point({"n_cpus": n_cpus, "wait": wait},
                                [{"clean": 2000 - bad, "race": bad}, {"clean": 2000 - bad, "race": bad}]))
    d = sr.write_results(path, pts, sweep="adapt", n_tasks=2)
    spec = (d / "spec.toml").read_text().replace("trials = 4000", 'trials = "auto"')
    spec += "\n[precision]\n" + "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in RULE.items())
    (d / "spec.toml").write_text(spec)
    m = json.loads((d / "manifest.json").read_text())
    m["spec_hash"] = sr.stored_spec_hash(d)  # as sweeps.integrity checks it
    (d / "manifest.json").write_text(json.dumps(m, indent=1))
    return d


def _expected_status(bad: int, n: int) -> str:
    """The rule from scratch: exact bounds at the look level 1 - 0.05/3 (looks: 1000, 2000, 4000 trials)."""
    assert look_conf(RULE) == pytest.approx(1 - 0.05 / 3)
    lo, hi = cp(bad, n, look_conf(RULE))
    return "below target" if hi < RULE["target"] else "above target" if lo > RULE["target"] else "open"


def test_where_applies_to_adaptive_decisions(tmp_path, capsys):
    d = _adaptive_set(tmp_path / "served" / "adapt")
    con = connect(d)
    got = dict(con.execute("SELECT n_cpus * 10 + wait, status FROM outcomes").fetchall())
    assert got == {81: "below target", 80: "above target", 161: "above target", 160: "above target"}
    assert got[81] == _expected_status(0, 4000) and got[80] == _expected_status(200, 4000)
    c = capacity(con, 0.01, where="wait = 1")
    (row,) = c.limits.to_pylist()
    assert any("adaptive sweep" in n for n in c.notes)
    assert row["max_n_cpus"] == 8 and row["status"] == "exceeds at n_cpus=16", row
    # without the filter wait is split out, and the panic path fails at once
    both = {r["wait"]: r for r in capacity(con, 0.01).limits.to_pylist()}
    assert both[1]["max_n_cpus"] == 8 and both[0]["status"] == "exceeds at n_cpus=8"
    # the same through the CLI and the HTTP API
    rc, out, err = _run(capsys, "capacity", d, "--target-p", "0.01", "--where", "wait = 1", "--format", "json")
    assert rc == 0, err
    (cli_row,) = json.loads(out)["limits"]
    assert cli_row["status"] == "exceeds at n_cpus=16" and cli_row["max_n_cpus"] == 8
    app = create_app(ServeConfig(locations=[str(d.parent)], workers=1, query_timeout_s=20.0, row_limit=50))
    try:
        r = TestClient(app, base_url="http://127.0.0.1").get(
            "/api/sweeps/adapt/capacity", params={"target_p": "0.01", "where": "wait = 1"})
        assert r.status_code == 200, r.text
        (api_row,) = r.json()["limits"]
        assert api_row["status"] == "exceeds at n_cpus=16" and api_row["max_n_cpus"] == 8
    finally:
        shutdown(app)


# ---- never "pass" on an interval that does not cover -------------------------------------------


def test_issue23_cell_is_unresolved_not_pass(tmp_path):
    """A cmc panic-path point (wait = 0) with a tight race estimate ~1e-7 and no timeout in 1000 trials:
    before, its p_bad interval collapsed onto the race part and the cell passed 1e-6. Now its bound has
    the counted part (1 - 0.0125^(1/1000) = 4.37e-3) and the cell says unresolved with the trials that
    0 timeouts would need for the bound to drop under the target less the race part (at 97.5%)."""
    m, v = 9.8e-8, 1e-19
    pts = [sr.Point({"n_cpus": 64, "wait": 0, "wbinvd_us": 3000.0}, [{"clean": 1000}], cmc=[(m, v, m, v)])]
    d = sr.write_results(tmp_path / "i", pts, sweep="i23")
    con = connect(d)
    (o,) = con.execute("SELECT p_bad_lo, p_bad_hi, p_bad_method FROM outcomes").fetchall()
    assert o[2] == "cmc+counted" and o[0] <= 1.05e-4 <= o[1]
    assert o[1] == pytest.approx(m + 2.2414027 * math.sqrt(v) + (1 - 0.0125 ** (1 / 1000)), rel=1e-6)
    c = capacity(con, 1e-6)
    (row,) = c.limits.to_pylist()
    room = 1e-6 - (m + 2.241402727604947 * math.sqrt(v))
    need = math.floor(math.log(0.0125) / math.log1p(-room)) + 1
    assert row["max_n_cpus"] is None and row["method"] == "cmc+counted"
    assert row["status"] == f"unresolved at n_cpus=64: 0 hangs or timeouts in 1,000 trials, needs {need:,}"
    # hang_conditions lists it as unresolved with the same count, never as safe
    from queries.named import run_named

    (h,) = run_named(con, "hang_conditions", {"threshold": "1e-6"}).to_pylist()
    assert h["verdict"] == "unresolved" and h["trials_needed"] == need and h["method"] == "cmc+counted"
