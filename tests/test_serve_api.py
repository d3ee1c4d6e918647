"""`stoprace serve`'s HTTP API through the ASGI test client (issue 13 items 1, 2, 4).

The served result sets are the first release's fixtures (real `stoprace run` output);
every answer is compared with what the CLI prints for the same question with
`--format json` / `--json` (run in-process, same files), so a difference in a number
or a column name fails. Submission runs a real (tiny) sweep on an embedded Ray in a
child process and follows its progress through the API to done.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serve_helpers import FIXTURES as FIXTURES_DIR
from serve_helpers import TINY_SPEC, results_root, wait_done

from sweeps.cli import main
from sweeps.serve import ServeConfig, create_app, shutdown
from sweeps.serve.routes.queries import OUTCOMES_SQL

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return results_root(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def app(root):
    a = create_app(ServeConfig(locations=[str(root)], workers=1, query_timeout_s=3.0, row_limit=5))
    yield a
    shutdown(a)


@pytest.fixture(scope="module")
def client(app):
    return TestClient(app, base_url="http://127.0.0.1")


def _cli_json(capsys, *argv) -> object:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out)


def _cli_error(capsys, *argv) -> str:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    line = err.strip()
    assert "\n" not in line
    return line.split(": error: ", 1)[1]


def _err(r, status: int) -> str:
    """The response is `status` with a one-line JSON error and no traceback; returns the message."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and "\n" not in body["error"] and "Traceback" not in r.text
    return body["error"]


# ---- reading --------------------------------------------------------------------------------


def test_sweeps_listed_with_progress_from_manifests(client, root):
    got = {s["name"]: s for s in client.get("/api/sweeps").json()}
    assert set(got) == {"naive", "cmc"}
    for name in got:
        m = json.loads((root / name / "manifest.json").read_text())
        s = got[name]
        assert s["location"] == str(root / name) and s["sweep"] == m["sweep"] and s["points"] == m["n_points"]
        listed = {t for a, b in m["tasks_done"] for t in range(a, b + 1)}  # inclusive [first, last] ranges
        assert listed == {int(f.stem.split("-")[1]) for f in (root / name / "points").glob("task-*.parquet")}
        assert s["tasks_done"] == len(listed) and s["tasks_total"] == m["n_tasks"]
        done = s["tasks_total"] is not None and s["tasks_done"] == s["tasks_total"]
        assert s["status"] == ("complete" if done else "partial")
        assert (s["progress"] == 1.0) == done and 0 <= s["progress"] <= 1
    one = client.get("/api/sweeps/naive").json()
    # the axes as the distinct values the stored rows hold (release1-naive: n_cpus 8/64 x mitigation x wait)
    import pyarrow.parquet as pq

    rows = [pq.read_table(f, columns=["n_cpus", "wait", "mitigation"]).to_pylist()
            for f in (root / "naive" / "points").glob("*.parquet")]
    for axis, values in one["axes"].items():
        assert sorted(values, key=str) == sorted({r[axis] for t in rows for r in t}, key=str)
    assert set(one["axes"]) == {"n_cpus", "wait", "mitigation"}
    assert "p_bad" in one["metrics"] and "t_p99_us" in one["metrics"]


def test_outcomes_equal_the_cli_json(client, root, capsys):
    for name in ("naive", "cmc"):
        api = client.get(f"/api/sweeps/{name}/outcomes")
        assert api.status_code == 200
        cli = _cli_json(capsys, "query", root / name, "--sql", OUTCOMES_SQL, "--format", "json")
        assert api.json() == cli and len(cli) > 0
        assert list(api.json()[0]) == list(cli[0])  # same columns, same order


def test_named_queries_equal_the_cli_json(client, root, capsys):
    api = client.get("/api/sweeps/naive/named/mitigation_effect").json()
    assert api == _cli_json(capsys, "query", root / "naive", "--named", "mitigation_effect", "--format", "json")
    api = client.get("/api/sweeps/naive/named/hang_conditions", params={"threshold": "0.001"}).json()
    cli = _cli_json(capsys, "query", root / "naive", "--named", "hang_conditions", "--param", "threshold=0.001",
                    "--format", "json")
    assert api == cli and len(cli) > 0


def test_capacity_equals_the_cli_json(client, root, capsys):
    api = client.get("/api/sweeps/naive/capacity", params={"target_p": "1e-2", "by": "wait,mitigation",
                                                            "hosts": "10000", "kexecs_per_host_year": "12"})
    assert api.status_code == 200, api.text
    cli = _cli_json(capsys, "capacity", root / "naive", "--target-p", "1e-2", "--by", "wait", "mitigation",
                    "--hosts", "10000", "--kexecs-per-host-year", "12", "--format", "json")
    assert api.json() == cli
    assert cli["by"] == ["wait", "mitigation"] and len(cli["limits"]) == 4 and cli["fleet"]
    fixed = client.get("/api/sweeps/naive/capacity", params={"target_p": "1e-2", "where": "wait = 1"}).json()
    assert fixed == _cli_json(capsys, "capacity", root / "naive", "--target-p", "1e-2", "--where", "wait = 1",
                              "--format", "json")
    assert fixed["where"] == "wait = 1" and {r.get("wait", 1) for r in fixed["limits"]} == {1}
    assert "refused" in _err(client.get("/api/sweeps/naive/capacity", params={
        "target_p": "1e-2", "where": "(SELECT count(*) FROM read_csv('/etc/passwd')) > 0"}), 400)
    default = client.get("/api/sweeps/cmc/capacity", params={"target_p": "1e-6", "metric": "p_race"}).json()
    assert default == _cli_json(capsys, "capacity", root / "cmc", "--target-p", "1e-6", "--metric", "p_race",
                                "--format", "json")


def test_replay_equals_the_cli_json(client, root, capsys):
    ev = client.post("/api/query", json={"sweeps": ["naive"], "sql":
                     "SELECT point_id, shard, trial, outcome FROM events ORDER BY point_id, shard, trial LIMIT 1"}).json()
    e = ev["rows"][0]
    api = client.get("/api/sweeps/naive/replay", params={"point": e["point_id"], "shard": e["shard"], "trial": e["trial"]})
    assert api.status_code == 200, api.text
    cli = _cli_json(capsys, "replay", root / "naive", "--point", e["point_id"], "--shard", str(e["shard"]),
                    "--trial", str(e["trial"]), "--json")
    assert api.json() == cli
    assert cli["outcome"] == e["outcome"] == cli["vectorized_outcome"]
    assert len(cli["cpus"]) == cli["params"]["n_cpus"] - 1


def test_plot_svg(client):
    r = client.get("/api/sweeps/naive/plot.svg", params={"x": "n_cpus", "y": "wait", "metric": "p_bad"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/svg+xml"
    assert r.text.lstrip().startswith("<?xml") and "<svg" in r.text and "p_bad by n_cpus and wait" in r.text
    r = client.get("/api/sweeps/naive/plot.svg", params={"x": "n_cpus", "lines": "mitigation", "metric": "p_timeout",
                                                         "where": "wait = 0"})
    assert r.status_code == 200 and "where wait = 0" in r.text
    assert "n_cpu" in _err(client.get("/api/sweeps/naive/plot.svg", params={"x": "n_cpu"}), 400)


def test_query_equals_the_cli_and_is_row_limited(client, root, capsys):
    sql = "SELECT n_cpus, mitigation, wait, sum(trials) AS trials FROM outcomes GROUP BY ALL ORDER BY ALL"
    r = client.post("/api/query", json={"sql": sql, "sweeps": ["naive"]}).json()
    cli = _cli_json(capsys, "query", root / "naive", "--sql", sql, "--format", "json")
    assert len(cli) == 8  # more than the row limit of 5
    assert r["truncated"] is True and r["row_limit"] == 5 and r["rows"] == cli[:5]
    assert r["columns"] == ["n_cpus", "mitigation", "wait", "trials"]
    small = client.post("/api/query", json={"sql": sql + " LIMIT 5", "sweeps": ["naive"]}).json()
    assert small["truncated"] is False and small["rows"] == cli[:5]
    # both sweeps at once: the sweep column tells them apart
    both = client.post("/api/query", json={"sql": "SELECT sweep, count(*) AS n FROM outcomes GROUP BY 1 ORDER BY 1"}).json()
    assert {r["sweep"] for r in both["rows"]} == {"release1-naive", "release1-cmc"}
    named = client.post("/api/query", json={"sql": "SELECT count(*) AS n FROM outcomes WHERE n_cpus = $n",
                                            "sweeps": ["naive"], "params": {"n": 8}}).json()
    assert named["rows"] == [{"n": 4}]


def test_query_time_limit(client):
    r = client.post("/api/query", json={"sql": "SELECT count(*) FROM range(1000000000000) a", "sweeps": ["naive"]})
    assert "time limit of 3 s" in _err(r, 400)
    # the pool dropped the interrupted connection: the next queries answer normally
    for _ in range(3):
        ok = client.post("/api/query", json={"sql": "SELECT count(*) AS n FROM outcomes", "sweeps": ["naive"]})
        assert ok.status_code == 200 and ok.json()["rows"] == [{"n": 8}]


def test_hostile_sql_gets_400_and_writes_nothing(client, root, tmp_path):
    nv = root / "naive"
    before = _snapshot(root.parent)
    hostile = [
        "COPY (SELECT 'x') TO 'pwned.csv'",
        f"COPY (SELECT * FROM points WHERE false) TO '{nv}/points/task-000000.parquet' (FORMAT parquet)",
        f"EXPORT DATABASE '{nv}/export'",
        f"ATTACH '{root}/a.duckdb' AS a",
        "INSTALL httpfs", "LOAD httpfs",
        "SET threads = 1", "SET enable_external_access = true", "RESET lock_configuration",
        "CREATE TABLE t AS SELECT 1", "DROP VIEW outcomes", "CREATE OR REPLACE TEMP VIEW outcomes AS SELECT 1",
        "SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM read_text('/etc/passwd')", "SELECT * FROM glob('/*')",
        f"SELECT * FROM read_parquet('{root}/cmc/points/*.parquet')",  # a served set, but not one this query named
        "PRAGMA version",
    ]
    for sql in hostile:
        msg = _err(client.post("/api/query", json={"sql": sql, "sweeps": ["naive"]}), 400)
        assert msg.startswith("refused: "), (sql, msg)
        assert _snapshot(root.parent) == before, sql
    # views are intact for everyone
    r = client.post("/api/query", json={"sql": "SELECT count(*) AS n FROM outcomes", "sweeps": ["naive"]}).json()
    assert r["rows"] == [{"n": 8}]


def test_malformed_requests_get_json_4xx(client):
    cases = [
        (client.post("/api/query", content=b"{not json", headers={"content-type": "application/json"}), 400),
        (client.post("/api/query", json={"sweeps": ["naive"]}), 400),
        (client.post("/api/query", json={"sql": "SELECT 1", "sweeps": "naive"}), 400),
        (client.post("/api/query", json={"sql": "SELECT 1", "sweeps": ["nope"]}), 404),
        (client.post("/api/query", json={"sql": "SELECT 1", "params": {"a": [1]}}), 400),
        (client.post("/api/query", json={"sql": "SELEC 1", "sweeps": ["naive"]}), 400),
        (client.post("/api/query", json={"sql": "SELECT 1; SELECT 2", "sweeps": ["naive"]}), 400),
        (client.post("/api/query", json=[1, 2]), 400),
        (client.get("/api/sweeps/nope"), 404),
        (client.get("/api/sweeps/nope/outcomes"), 404),
        (client.get("/api/sweeps/naive/capacity"), 400),
        (client.get("/api/sweeps/naive/capacity", params={"target_p": "abc"}), 400),
        (client.get("/api/sweeps/naive/capacity", params={"target_p": "2"}), 400),
        (client.get("/api/sweeps/naive/capacity", params={"target_p": "nan"}), 400),
        (client.get("/api/sweeps/naive/capacity", params={"target_p": "1e-3", "by": "bogus"}), 400),
        (client.get("/api/sweeps/naive/capacity", params={"target_p": "1e-3", "metric": "p_x"}), 400),
        (client.get("/api/sweeps/naive/replay", params={"point": "x", "shard": "a", "trial": "0"}), 400),
        (client.get("/api/sweeps/naive/replay", params={"point": "0000000000000000", "shard": 0, "trial": 0}), 400),
        (client.get("/api/sweeps/naive/replay"), 400),
        (client.get("/api/sweeps/naive/named/nope"), 400),
        (client.get("/api/sweeps/naive/plot.svg", params={"x": "n_cpus", "where": "nope = 1"}), 400),
        (client.get("/api/nothing"), 404),
        (client.delete("/api/sweeps"), 405),
        (client.post("/api/sweeps", content=b"x" * (2 << 20), headers={"content-type": "application/toml"}), 413),
        (client.post("/api/sweeps", content=b'name = "x"', headers={"content-type": "text/plain"}), 415),
        (client.post("/api/sweeps", content=b'name = "x"'), 415),
        (client.post("/api/sweeps", json={"toml": "x"}), 400),
    ]
    for r, status in cases:
        _err(r, status)


def test_json_bodies_say_what_they_must_be(client):
    """Both JSON endpoints answer a bad body with a 400 that says what was wrong and what to send."""
    j = {"content-type": "application/json"}
    for path, usage in [("/api/query", 'body must be {"sql": '), ("/api/sweeps", 'JSON body must be {"spec": ')]:
        assert _err(client.post(path, content=b"{not json", headers=j), 400).startswith("body is not JSON: ")
        for body in ([1, 2], {"other": "x"}, {"sql": 1, "spec": 1}):
            assert _err(client.post(path, json=body), 400).startswith(usage)


def test_host_header_checked_without_token(app):
    evil = TestClient(app, base_url="http://attacker.example")
    assert "refused" in _err(evil.get("/api/sweeps"), 403)
    assert TestClient(app, base_url="http://localhost:8470").get("/api/sweeps").status_code == 200


def test_token_required_on_every_request(root):
    a = create_app(ServeConfig(locations=[str(root)], token="s3cret-token", trusted_hosts=None))
    try:
        c = TestClient(a, base_url="http://0.0.0.0:8470")
        for path in ("/api/sweeps", "/", "/static/app.js", "/api/sweeps/naive/outcomes"):
            assert "token" in _err(c.get(path), 401)
            _err(c.get(path, headers={"Authorization": "Bearer wrong-token"}), 401)
            assert c.get(path, headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        _err(c.post("/api/query", json={"sql": "SELECT 1"}), 401)
        # a browser: /?token=... once sets a cookie, then plain requests pass
        r = c.get("/?token=s3cret-token", follow_redirects=False)
        assert r.status_code == 303 and "stoprace_token" in r.headers["set-cookie"]
        assert "httponly" in r.headers["set-cookie"].lower()
        assert c.get("/api/sweeps").status_code == 200
        c.cookies.clear()
        _err(c.get("/?token=nope", follow_redirects=False), 401)
    finally:
        shutdown(a)


# ---- submitting -----------------------------------------------------------------------------

BAD_SPECS = [
    'name = "Bad Name"\nseed = 1\ntrials = 10\n',
    'name = "x"\nseed = 1\ntrials = 10\n[axes]\nn_cpus = [1]\n',
    'name = "x"\nseed = 1\ntrials = 10\n[base]\nbogus = 3\n',
    'name = "x"\nseed = 1\ntrials = 10\n[base]\nn_cpus = 8\n[axes]\nn_cpus = [8, 16]\n',
    'name = "x"\nseed = 1\ntrials = 10\n[axes]\nwbinvd_us = { logspace = [0, 10], num = 3 }\n',
    'name = "x"\nseed = 1\ntrials = 10\n[axes]\nn_cpus = { range = [8, 4, 1] }\n',
    'name = "x"\nseed = 1\ntrials = "lots"\n',
    "name = [\n",
    'name = "x"\nseed = -1\ntrials = 10\n',
    'name = "x"\nseed = 1\ntrials = 10\n[axes]\np_stall = { linspace = [0, 1], num = 1e9 }\n',
]


def test_bad_specs_get_the_cli_message_and_write_nothing(client, root, tmp_path, capsys, monkeypatch):
    before = _snapshot(root.parent)
    monkeypatch.chdir(tmp_path)
    for text in BAD_SPECS:
        (tmp_path / "spec.toml").write_text(text)
        cli = _cli_error(capsys, "run", "spec.toml", "--out", tmp_path / "out")
        assert not (tmp_path / "out").exists()
        api = _err(client.post("/api/sweeps", content=text.encode(), headers={"content-type": "application/toml"}), 400)
        assert api == cli, text
        assert _err(client.post("/api/sweeps", json={"spec": text}), 400) == cli
        assert _snapshot(root.parent) == before
    assert {s["name"] for s in client.get("/api/sweeps").json()} == {"naive", "cmc"}


def test_submit_runs_in_background_with_progress_and_resumes(client, root, capsys):
    text = TINY_SPEC.format(name="tiny")
    r = client.post("/api/sweeps", content=text.encode(), headers={"content-type": "application/toml"})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["name"] == "tiny" and body["location"] == str(root / "tiny") and body["status"] in ("queued", "running")
    # a second submission of the same sweep while it runs is a conflict
    assert "already" in _err(client.post("/api/sweeps", json={"spec": text}), 409)
    seen = wait_done(client, "tiny")
    progress = [s["progress"] for s in seen]
    assert progress == sorted(progress) and progress[-1] == 1.0
    final = seen[-1]
    assert final["tasks_done"] == final["tasks_total"] > 0 and final["points"] == 4
    # the stored sweep answers like any result set, and as the CLI does
    assert client.get("/api/sweeps/tiny/outcomes").json() == _cli_json(
        capsys, "query", root / "tiny", "--sql", OUTCOMES_SQL, "--format", "json")
    trials = client.post("/api/query", json={"sql": "SELECT sum(trials)::BIGINT AS t FROM outcomes", "sweeps": ["tiny"]}).json()
    assert trials["rows"] == [{"t": 4 * 2000}]
    # submitting it again: nothing to run
    again = client.post("/api/sweeps", json={"spec": text})
    assert again.status_code == 200 and again.json()["status"] == "complete"
    # the same name with another spec is refused, nothing written
    before = _snapshot(root / "tiny")
    assert "different spec" in _err(client.post("/api/sweeps", json={"spec": text.replace("seed = 5", "seed = 6")}), 409)
    assert _snapshot(root / "tiny") == before


def test_a_stopped_run_is_resumed_by_submitting_its_spec_again(tmp_path):
    """release1-partial is what an interrupted run leaves (tasks 0-9 stored, 10-15 missing): POSTing its
    spec runs only the missing tasks (the stored files stay byte-identical) and the rows then equal the
    complete run's (release1-naive, same spec), as a CLI resume does."""
    from serve_helpers import FIXTURES

    from row_compare import assert_same_rows
    from sweep_helpers import pin_rev1, read_dir, without_wall

    root = tmp_path / "results"
    root.mkdir()
    shutil.copytree(FIXTURES / "release1-partial", root / "release1-naive")
    before = _snapshot(root / "release1-naive" / "points")
    a = create_app(ServeConfig(locations=[str(root)], workers=1))
    try:
        c = TestClient(a, base_url="http://127.0.0.1")
        s = c.get("/api/sweeps/release1-naive").json()
        assert s["status"] == "partial" and s["tasks_done"] == 10 and s["tasks_total"] == 16
        spec = pin_rev1((FIXTURES / "release1-partial" / "spec.toml").read_text())
        r = c.post("/api/sweeps", content=spec.encode(), headers={"content-type": "application/toml"})
        assert r.status_code == 202, r.text
        wait_done(c, "release1-naive")
    finally:
        shutdown(a)
    after = _snapshot(root / "release1-naive" / "points")
    assert {k: v for k, v in after.items() if k in before} == before and len(before) == 10
    assert all(k.startswith("seg-") for k in after if k not in before)  # the 6 missing tasks went into segments
    new, old = without_wall(read_dir(root / "release1-naive")), without_wall(read_dir(FIXTURES / "release1-naive"))
    # the first release's files lack parameters added since; the resumed tasks hold them at neutral values
    # (recomputed floats within row_compare.FLOAT_ULPS: NumPy's exp/log kernels differ by CPU kind)
    assert_same_rows(new.select(old.column_names), old, "points")
    assert_same_rows(without_wall(read_dir(root / "release1-naive", "events")),
                     without_wall(read_dir(FIXTURES / "release1-naive", "events")), "events")


def test_answers_are_kept_until_the_manifest_changes(tmp_path):
    """The read cache never serves an answer computed before the result set changed."""
    import os

    from sweeps.serve.pool import Answers
    from sweeps.serve.registry import Served

    shutil.copytree(FIXTURES_DIR / "release1-naive", tmp_path / "rs")
    s = [Served("rs", str(tmp_path / "rs"))]
    calls = []
    answers = Answers(size=2)

    def compute():
        calls.append(1)
        return len(calls)

    assert answers.get(s, ("a",), compute) == 1 and answers.get(s, ("a",), compute) == 1
    assert answers.get(s, ("b",), compute) == 2  # another request: its own answer
    m = tmp_path / "rs" / "manifest.json"
    st = m.stat()
    os.utime(m, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # a run stored more tasks
    assert answers.get(s, ("a",), compute) == 3
    answers.get(s, ("c",), compute), answers.get(s, ("d",), compute)  # size 2: ("a",) evicted
    assert answers.get(s, ("a",), compute) == 6


@pytest.mark.parametrize("argv, message", [
    (["--host", "0.0.0.0"], "exposes the server beyond this machine: give --token"),
    (["--host", "0.0.0.0", "--token", "short"], "at least 8 characters"),
    (["--port", "0"], "must be in 1..65535"),
    (["--query-timeout", "0"], "must be positive"),
    (["/nonexistent/results"], "no such directory"),
])
def test_serve_cli_refuses_bad_options(capsys, argv, message):
    assert message in _cli_error(capsys, "serve", *argv)


def test_serve_cli_refuses_a_busy_port(capsys, root):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert "cannot listen on 127.0.0.1" in _cli_error(capsys, "serve", str(root), "--port", str(port))


def test_stopping_the_server_keeps_finished_tasks_and_a_resubmission_resumes(tmp_path):
    """shutdown (what SIGTERM/Ctrl-C of `stoprace serve` runs) sends the running child SIGINT: it stores
    what finished and stops; the same spec submitted to a new server runs only the rest."""
    from sweep_helpers import SLOW_SPEC

    root = tmp_path / "results"
    root.mkdir()
    a = create_app(ServeConfig(locations=[str(root)], workers=1))
    try:
        c = TestClient(a, base_url="http://127.0.0.1")
        assert c.post("/api/sweeps", json={"spec": SLOW_SPEC}).status_code == 202
        t0 = time.monotonic()
        while True:
            s = c.get("/api/sweeps/e2e-slow").json()
            if s["tasks_done"] >= 1:
                break
            assert s["status"] in ("queued", "running"), s
            assert time.monotonic() - t0 < 240, s
            time.sleep(0.1)
    finally:
        shutdown(a)
    run = a.state.services.runner.runs["e2e-slow"]
    from sweeps.serve.registry import read_manifest

    m = read_manifest(str(root / "e2e-slow"))  # any format version, with tasks_done ranges
    kept = sum(b - a_ + 1 for a_, b in m["tasks_done"])
    if m["n_tasks"] is not None and kept == m["n_tasks"]:
        pytest.skip("the sweep finished before the server could stop it (a very fast machine)")
    assert run.state == "stopped" and run.returncode == 130, (run.state, run.returncode, run.message)
    assert kept >= 1
    named = {seg["points"]["path"].split("/", 1)[1] for seg in m["segments"]}  # the committed points files
    stored = {k: v for k, v in _snapshot(root / "e2e-slow" / "points").items() if k in named}
    assert stored and len(stored) == len(named)  # every points file the manifest commits is there
    b = create_app(ServeConfig(locations=[str(root)], workers=1))
    try:
        c = TestClient(b, base_url="http://127.0.0.1")
        s = c.get("/api/sweeps/e2e-slow").json()
        assert s["status"] == "partial" and s["tasks_done"] == kept
        assert c.post("/api/sweeps", json={"spec": SLOW_SPEC}).status_code == 202
        final = wait_done(c, "e2e-slow")[-1]
        assert final["tasks_done"] == final["tasks_total"]
        total = c.post("/api/query", json={"sql": "SELECT sum(trials)::BIGINT AS t, count(*) AS n FROM outcomes",
                                           "sweeps": ["e2e-slow"]}).json()["rows"][0]
        assert total == {"t": 8 * 20000, "n": 8}  # 2 n_cpus x 2 p_stall x 2 wait points, 20000 trials each
    finally:
        shutdown(b)
    # tasks stored before the stop were not recomputed (their files are byte-identical; the resumed run's
    # final merge superseded them, so they wait out the grace period under .data/, out of points/)
    after = _snapshot(root / "e2e-slow" / ".data" / "points")
    assert {k: v for k, v in after.items() if k in stored} == stored
