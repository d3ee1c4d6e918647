"""The HTTP API applies every rule the CLI applies, through the same functions (issue 24 item 3).

Each case is reproduced as a user would, by `stoprace ...` in this process and by an HTTP request
to the app (ASGI test client) over the same files, and the two outcomes are compared: size guards
on a submitted sweep, a set's status from the integrity check `stoprace query` runs, hostile JSON
and TOML bodies, SQL only as JSON, and a byte limit on answers beside the row limit.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serve_helpers import FIXTURES

from queries.resultset.storage import locate
from queries.resultset.writer import compact
from sweeps.serve import ServeConfig, create_app, shutdown
from sweeps.serve.runs import Run

from sweep_helpers import pin_rev1

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

HUGE = (FIXTURES / "release1-naive" / "spec.toml").read_text().replace(
    "trials = 600\n", "trials = 1_000_000_000_000_000\n").replace('name = "release1-naive"', 'name = "huge"')


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _err(r, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and "\n" not in body["error"] and "Traceback" not in r.text
    return body["error"]


class _Recorder:
    """Stands in for Runner.submit: records what the API queued, starts nothing."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, name, location, spec_toml, force=False):
        self.calls.append({"name": name, "location": location, "force": force})
        return Run(name, location, "spec.toml", force=force)


@pytest.fixture
def served(tmp_path):
    """An app over tmp/results (release1-naive, release1-partial) whose runner records submissions."""
    root = tmp_path / "results"
    root.mkdir()
    for name in ("release1-naive", "release1-partial"):
        shutil.copytree(FIXTURES / name, root / name)
    made = []

    def make(**kw):
        app = create_app(ServeConfig(locations=[str(root)], **kw))
        rec = _Recorder()
        app.state.services.runner.submit = rec
        made.append(app)
        return TestClient(app, base_url="http://127.0.0.1"), rec

    yield root, make
    for app in made:
        shutdown(app)


# ---- size guards on a submitted sweep -----------------------------------------------------------


def test_a_sweep_above_the_size_guards_is_refused_with_runs_message(served, stoprace, tmp_path):
    root, make = served
    client, rec = make()
    (tmp_path / "huge.toml").write_text(HUGE)
    cli = stoprace("run", tmp_path / "huge.toml", "--out", tmp_path / "out").one_line_error("run")
    assert "CPU-trials" in cli and "--force" in cli and not (tmp_path / "out").exists()
    before = _snapshot(root)
    for r in (client.post("/api/sweeps", content=HUGE.encode(), headers={"content-type": "application/toml"}),
              client.post("/api/sweeps", json={"spec": HUGE})):
        assert _err(r, 400) == cli
    assert rec.calls == [] and _snapshot(root) == before and not (root / "huge").exists()
    # force lifts the guard only on a server with a token (any local page could reach one without)
    assert "--token" in _err(client.post("/api/sweeps?force=true", json={"spec": HUGE}), 403)
    assert rec.calls == []


def test_force_with_the_token_queues_the_run_as_run_force(served):
    root, make = served
    client, rec = make(token="s3cret-token", trusted_hosts=None)
    auth = {"Authorization": "Bearer s3cret-token"}
    assert _err(client.post("/api/sweeps", json={"spec": HUGE}, headers=auth), 400).endswith("or pass --force")
    r = client.post("/api/sweeps?force=true", json={"spec": HUGE}, headers=auth)
    assert r.status_code == 202, r.text
    assert rec.calls == [{"name": "huge", "location": str(root / "huge"), "force": True}]
    runner = client.app.state.services.runner
    assert runner.command(Run("huge", str(root / "huge"), "x.toml", force=True))[-1] == "--force"
    assert "--force" not in runner.command(Run("huge", str(root / "huge"), "x.toml"))
    assert "force=maybe" in _err(client.post("/api/sweeps?force=maybe", json={"spec": HUGE}, headers=auth), 400)


# ---- statuses from the integrity check ------------------------------------------------------------


def _cli_warning(stoprace, d: Path) -> str | None:
    """The line `stoprace query` prints about the set: its stderr warning, or (a set with no intact points
    file left, which it refuses) the same verdict in its error."""
    res = stoprace("query", d, "--sql", "SELECT count(*) AS n FROM points", "--format", "csv")
    if res.rc == 2:
        return f"{d}: " + res.one_line_error("query").split(" has no intact points files: ", 1)[1]
    assert res.rc == 0, res.err
    lines = res.err.strip().splitlines()
    assert len(lines) <= 1
    return lines[0].split("stoprace query: warning: ", 1)[1] if lines else None


def test_statuses_are_the_integrity_check_of_stoprace_query(served, stoprace):
    root, make = served
    # first-release sets (what the issue found listed as `complete`): a task file gone, one truncated
    shutil.copytree(root / "release1-naive", root / "missing-file")
    (root / "missing-file" / "points" / "task-000005.parquet").unlink()
    shutil.copytree(root / "release1-naive", root / "corrupt")
    f = root / "corrupt" / "points" / "task-000007.parquet"
    f.write_bytes(f.read_bytes()[:100])
    # this release's sets (segments with checksums): one missing its points segment, one with a byte of its
    # events segment flipped
    for name in ("missing-segment", "flipped-segment"):
        shutil.copytree(root / "release1-naive", root / name)
        compact(locate(root / name), grace_s=0)
        (seg,) = json.loads((root / name / "manifest.json").read_text())["segments"]
        if name == "missing-segment":
            (root / name / ".data" / seg["points"]["path"]).unlink()
        else:
            f = root / name / ".data" / seg["events"]["path"]
            b = bytearray(f.read_bytes())
            b[len(b) // 2] ^= 0x01
            f.write_bytes(bytes(b))
    client, rec = make()
    listed = {s["name"]: s for s in client.get("/api/sweeps").json()}
    want = {"release1-naive": "complete", "release1-partial": "partial", "missing-file": "damaged",
            "corrupt": "damaged", "missing-segment": "damaged", "flipped-segment": "damaged"}
    assert {k: v["status"] for k, v in listed.items()} == want
    for name in want:
        s = listed[name]
        assert s["problem"] == _cli_warning(stoprace, Path(s["location"])), name
        assert client.get(f"/api/sweeps/{name}").json()["status"] == want[name]
        assert (s["progress"] == 1.0) == (want[name] == "complete")
    assert "missing tasks 10-15" in listed["release1-partial"]["problem"]
    for name in ("corrupt", "missing-file", "missing-segment", "flipped-segment"):
        assert "damaged:" in listed[name]["problem"], name
    assert "missing tasks 0-15" in listed["missing-segment"]["problem"]


def test_a_damaged_set_is_not_complete_to_a_submission_either(served):
    """Its spec POSTed again is queued (202), as `stoprace run` on it runs the damaged tasks again; an
    intact complete set answers 200 "complete" and runs nothing."""
    root, make = served
    client, rec = make()
    spec = pin_rev1((root / "release1-naive" / "spec.toml").read_text())  # stored before model_rev existed
    r = client.post("/api/sweeps", json={"spec": spec})
    assert r.status_code == 200 and r.json()["status"] == "complete" and rec.calls == []
    (root / "release1-naive" / "points" / "task-000003.parquet").unlink()
    r = client.post("/api/sweeps", json={"spec": spec})
    assert r.status_code == 202, r.text
    assert rec.calls == [{"name": "release1-naive", "location": str(root / "release1-naive"), "force": False}]


# ---- hostile bodies -----------------------------------------------------------------------------

HOSTILE_JSON = [
    (b'{"sql": "SELECT 1", "params": {"a": ' + b"9" * 5000 + b"}}", "out of range"),
    (b'{"sql": "SELECT 1", "params": {"a": 18446744073709551616}}', "out of range"),
    (b'{"sql": "SELECT 1", "params": {"a": 1e400}}', "out of range"),
    (b'{"sql": "SELECT 1", "params": {"a": NaN}}', "NaN"),
    (b'{"sql": "SELECT 1", "params": {"a": -Infinity}}', "Infinity"),
    (b"[" * 100_000 + b"]" * 100_000, "nested"),
    (b'{"sql": "SELECT 1", "x": ' + b"[" * 50 + b"]" * 50 + b"}", "nested"),
    (b'{"sql": "SELECT 1", "sweeps": ["release1-naive"], "params": {"a": true}}', '"params" must be'),
]


@pytest.mark.parametrize("body, says", HOSTILE_JSON, ids=range(len(HOSTILE_JSON)))
def test_hostile_json_is_a_one_line_400(served, body, says):
    root, make = served
    client, rec = make()
    j = {"content-type": "application/json"}
    for path in ("/api/query", "/api/sweeps"):
        msg = _err(client.post(path, content=body, headers=j), 400)
        assert says in msg or path == "/api/sweeps", (path, msg)
    assert rec.calls == []
    # and the server answers the next request normally
    ok = client.post("/api/query", json={"sql": "SELECT count(*) AS n FROM outcomes", "sweeps": ["release1-naive"]})
    assert ok.json()["rows"] == [{"n": 8}]


HOSTILE_TOML = [
    'name = "x"\nseed = 1\ntrials = ' + "9" * 5000 + "\n",
    'name = "x"\nseed = 1\ntrials = 10\nz = ' + "[" * 100_000 + "]" * 100_000 + "\n",
    "a" + ".a" * 100_000 + " = 1\n",  # tomllib alone would take minutes and tens of GB
    'name = "x"\nseed = 1\ntrials = 10\n[' + "b." * 40 + "c]\nx = 1\n",
]


@pytest.mark.parametrize("text", HOSTILE_TOML, ids=["huge-int", "deep-array", "deep-dotted-key", "deep-table"])
def test_hostile_spec_is_refused_alike_by_run_and_the_api(served, stoprace, tmp_path, text):
    root, make = served
    client, rec = make()
    (tmp_path / "spec.toml").write_text(text)
    cli = stoprace("run", tmp_path / "spec.toml", "--out", tmp_path / "out").one_line_error("run")
    assert cli.startswith(f"{tmp_path / 'spec.toml'}: ")
    api = _err(client.post("/api/sweeps", content=text.encode(), headers={"content-type": "application/toml"}), 400)
    assert api == cli.replace(str(tmp_path / "spec.toml"), "spec.toml")
    assert rec.calls == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None])
def test_sql_is_run_only_when_sent_as_json(served, ctype):
    """A page on any origin may POST text/plain or a form to 127.0.0.1 without a CORS preflight: such a
    body is refused before it is read, even when it holds valid JSON."""
    root, make = served
    client, _ = make()
    body = json.dumps({"sql": "SELECT count(*) AS n FROM outcomes"}).encode()
    headers = {} if ctype is None else {"content-type": ctype}
    msg = _err(client.post("/api/query", content=body, headers=headers), 415)
    assert "application/json" in msg and (ctype or "none") in msg


# ---- a byte limit beside the row limit -----------------------------------------------------------


def test_answers_are_cut_at_the_byte_limit_and_say_truncated(served, stoprace):
    root, make = served
    sql = "SELECT point_id, shard, repeat('x', 200) AS pad FROM points ORDER BY point_id, shard"
    cli = json.loads(stoprace("query", root / "release1-naive", "--sql", sql, "--format", "json").out)
    assert len(cli) == 16

    def size(rows):  # the rows array as the API writes it: one compact JSON object per line
        return len(("[\n" + ",\n".join(json.dumps(r) for r in rows) + ("\n" if rows else "") + "]\n").encode())

    limit = size(cli[:5]) + 10  # room for 5 rows, not 6
    assert size(cli[:6]) > limit
    client, _ = make(byte_limit=limit, row_limit=100)
    r = client.post("/api/query", json={"sql": sql, "sweeps": ["release1-naive"]})
    body = r.json()
    assert body["rows"] == cli[:5] and body["truncated"] is True and body["byte_limit"] == limit
    assert body["columns"] == ["point_id", "shard", "pad"] and body["warnings"] == []
    # under both limits: everything, not truncated
    client2, _ = make(byte_limit=size(cli), row_limit=16)
    whole = client2.post("/api/query", json={"sql": sql, "sweeps": ["release1-naive"]}).json()
    assert whole["rows"] == cli and whole["truncated"] is False
    # the row limit still cuts first when it is the tighter one
    client3, _ = make(byte_limit=10 * size(cli), row_limit=3)
    assert client3.post("/api/query", json={"sql": sql, "sweeps": ["release1-naive"]}).json()["rows"] == cli[:3]
    # an answer from an incomplete set carries the warning `stoprace query` prints
    part = client.post("/api/query", json={"sql": "SELECT 1 AS one", "sweeps": ["release1-partial"]}).json()
    assert len(part["warnings"]) == 1 and "missing tasks 10-15" in part["warnings"][0]
