"""One rule, both front doors: what `stoprace query` / `capacity` refuse or mark, the HTTP API refuses
or marks the same way, through the same library function (queries.answers, queries.named).

tests/fixtures/release1-partial is a first-release set with 10 of its 16 tasks stored (an interrupted
run); release1-naive is the same sweep complete. Every case runs the CLI in this process and the API
through the ASGI test client over the same directory, and compares what each says.
"""

from __future__ import annotations

import json
import math
import shutil

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from serve_helpers import FIXTURES

from sweeps.serve import ServeConfig, create_app, shutdown
from sweeps.serve.responses import PARTIAL_HEADER

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("doors") / "results"
    root.mkdir()
    for name in ("release1-partial", "release1-naive"):
        shutil.copytree(FIXTURES / name, root / name)
    return root


@pytest.fixture(scope="module")
def client(root):
    app = create_app(ServeConfig(locations=[str(root)], query_timeout_s=30.0))
    yield TestClient(app, base_url="http://127.0.0.1")
    shutdown(app)


def _api_error(r, status: int = 400) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and "\n" not in body["error"]
    return body["error"]


def _stored_point_ids(d) -> set[str]:
    """Point ids of the tasks the set's manifest lists (first release: one file per task), read with pyarrow."""
    m = json.loads((d / "manifest.json").read_text())
    tasks = {t for a, b in m["tasks_done"] for t in range(a, b + 1)}
    return {pid for t in tasks for pid in pq.read_table(d / "points" / f"task-{t:06d}.parquet",
                                                         columns=["point_id"]).column(0).to_pylist()}


QUESTIONS = [
    # (CLI arguments after DIR, API path after /api/sweeps/{name}, API params)
    (["query", "--named", "hang_conditions", "--format", "json"], "/named/hang_conditions", {}),
    (["capacity", "--target-p", "1e-3", "--format", "json"], "/capacity", {"target_p": "1e-3"}),
]


@pytest.mark.parametrize("cli, path, params", QUESTIONS, ids=["hang_conditions", "capacity"])
def test_an_incomplete_set_is_refused_by_both_doors_alike(stoprace, client, root, cli, path, params):
    d = root / "release1-partial"
    command = cli[0]
    cli_msg = stoprace(command, d, *cli[1:]).one_line_error(command)
    assert "incomplete: 10 of 16 tasks stored (missing tasks 10-15)" in cli_msg and "--partial" in cli_msg
    api_msg = _api_error(client.get(f"/api/sweeps/release1-partial{path}", params=params))
    # the same refusal; each door names its own spelling of "answer anyway"
    assert api_msg == cli_msg.replace("--partial", "partial=true")


@pytest.mark.parametrize("cli, path, params", QUESTIONS, ids=["hang_conditions", "capacity"])
def test_partial_answers_are_the_same_and_marked_partial_on_both_doors(stoprace, client, root, cli, path, params):
    d = root / "release1-partial"
    command = cli[0]
    res = stoprace(command, d, *cli[1:], "--partial")
    assert res.rc == 0, res.err
    cli_marks = [ln.split(": warning: ", 1)[1] for ln in res.err.splitlines()]
    assert cli_marks and all(m.startswith("PARTIAL: ") and "missing tasks 10-15" in m for m in cli_marks)
    r = client.get(f"/api/sweeps/release1-partial{path}", params={**params, "partial": "true"})
    assert r.status_code == 200, r.text
    assert r.json() == json.loads(res.out)
    assert json.loads(r.headers[PARTIAL_HEADER]) == cli_marks
    if command == "capacity":
        assert r.json()["partial"] == cli_marks  # in the body too, as the CLI's JSON has it
    else:  # the rows come from the stored tasks only
        ids = {row["point_id"] for row in r.json()}
        assert ids and ids <= _stored_point_ids(d)


@pytest.mark.parametrize("cli, path, params", QUESTIONS, ids=["hang_conditions", "capacity"])
def test_a_complete_set_is_answered_unmarked_by_both_doors(stoprace, client, root, cli, path, params):
    d = root / "release1-naive"
    res = stoprace(cli[0], d, *cli[1:])
    assert res.rc == 0 and res.err == "", res.err
    r = client.get(f"/api/sweeps/release1-naive{path}", params=params)
    assert r.status_code == 200 and PARTIAL_HEADER.lower() not in r.headers
    assert r.json() == json.loads(res.out) and "partial" not in r.json()
    # partial=true on a complete set changes nothing
    again = client.get(f"/api/sweeps/release1-naive{path}", params={**params, "partial": "true"})
    assert again.json() == r.json() and PARTIAL_HEADER.lower() not in again.headers


def test_partial_flag_must_be_true_or_false(client):
    assert "partial=maybe" in _api_error(client.get("/api/sweeps/release1-partial/named/hang_conditions",
                                                    params={"partial": "maybe"}))


BAD_PARAMS = [
    ("hang_conditions", "threshold", "nan"),
    ("hang_conditions", "threshold", "inf"),
    ("hang_conditions", "threshold", "-1e-3"),
    ("hang_conditions", "threshold", "1.5"),
    ("hang_conditions", "threshold", "lots"),
    ("hang_conditions", "threshold", ""),
    ("sensitivity", "split", "1"),
    ("sensitivity", "split", "wait;drop table x"),
]


@pytest.mark.parametrize("query, name, value", BAD_PARAMS)
def test_named_query_params_are_checked_on_both_doors(stoprace, client, root, query, name, value):
    d = root / "release1-naive"
    cli_msg = stoprace("query", d, "--named", query, "--param", f"{name}={value}").one_line_error("query")
    assert cli_msg.startswith(f"named query '{query}': {name}={value} is not allowed: ")
    assert _api_error(client.get(f"/api/sweeps/release1-naive/named/{query}", params={name: value})) == cli_msg
    # a bad parameter is refused before the set's completeness is looked at
    assert stoprace("query", root / "release1-partial", "--named", query, "--param",
                    f"{name}={value}").one_line_error("query") == cli_msg


def test_a_threshold_in_range_selects_what_the_rows_say(stoprace, client, root):
    """threshold=0 and 1 are allowed (the ends of [0, 1]); the rows listed at 0.01 are exactly the
    outcomes whose p_bad_hi exceeds it (an independent filter over the outcomes the CLI prints)."""
    d = root / "release1-naive"
    out = stoprace("query", d, "--sql", "SELECT point_id, p_bad_hi FROM outcomes", "--format", "json")
    expected = {r["point_id"] for r in json.loads(out.out) if r["p_bad_hi"] > 0.01}
    for value in ("0", "1", "0.01", "1e-2"):
        res = stoprace("query", d, "--named", "hang_conditions", "--param", f"threshold={value}", "--format", "json")
        assert res.rc == 0, res.err
        api = client.get("/api/sweeps/release1-naive/named/hang_conditions", params={"threshold": value}).json()
        assert api == json.loads(res.out)
        if math.isclose(float(value), 0.01):
            assert {r["point_id"] for r in api} == expected and 0 < len(expected) < 8
    assert client.get("/api/sweeps/release1-naive/named/hang_conditions", params={"threshold": "1"}).json() == []


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_sql_params_must_be_finite_numbers_on_both_doors(stoprace, client, root, value):
    d = root / "release1-naive"
    sql = "SELECT count(*) AS n FROM outcomes WHERE p_bad_hi > $t"
    cli_msg = stoprace("query", d, "--sql", sql, "--param", f"t={value}").one_line_error("query")
    assert cli_msg == f"parameter t={value} is not a finite number"
    r = client.post("/api/query", json={"sql": sql, "sweeps": ["release1-naive"], "params": {"t": value}})
    assert _api_error(r) == cli_msg


def test_named_queries_declare_their_kinds_and_needs_in_their_headers():
    """Every parameter has a known kind its default satisfies; hang_conditions needs every point
    (that property lives in its SQL file, nowhere in the CLI or the API)."""
    from importlib import resources

    from queries.named import PARAM_KINDS, list_named

    queries = {q.name: q for q in list_named()}
    for q in queries.values():
        for p in q.params:
            assert p.kind in PARAM_KINDS, (q.name, p.name)
            assert p.default is None or q.bind({}).get(p.name) is not None
        text = resources.files("queries").joinpath("sql", f"{q.name}.sql").read_text()
        assert q.needs_complete == ("\n-- needs: complete" in text), q.name
    assert queries["hang_conditions"].needs_complete and not queries["stop_time"].needs_complete
    app = create_app(ServeConfig(locations=[]))
    try:
        listed = {q["name"]: q for q in TestClient(app, base_url="http://127.0.0.1").get("/api/named").json()}
    finally:
        shutdown(app)
    assert listed["hang_conditions"]["needs_complete"] is True
    assert listed["hang_conditions"]["params"][0]["kind"] == "probability"
