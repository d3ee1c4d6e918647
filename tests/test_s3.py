"""Result sets on object storage, end to end, against a local S3-compatible server (moto, server mode).

Everything a local dir supports works on ``s3://bucket/prefix?endpoint_override=...``:
run, resume after an interrupt, one-writer lock (S3 conditional PUT), integrity, compaction,
and query/capacity/plot/replay reading the same URI (pyarrow datasets, no DuckDB extension).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from s3_helpers import moto_s3
from test_store import SPEC, TASKS, events_table, points_table

from queries.db import QueryError, connect
from queries.resultset.reader import ResultSet
from queries.resultset.storage import locate
from queries.resultset.writer import compact
from sweeps.cli import main
from sweeps.store import ResultStore, StoreError

from sweep_helpers import SLOW_SPEC, cli, finish, read_dir, wait_for, without_wall, write_spec

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def s3():
    with moto_s3() as server:
        yield server


def upload(s3, local: Path, bucket: str, prefix: str) -> None:
    c = s3.client()
    for f in local.rglob("*"):
        if f.is_file():
            c.upload_file(str(f), bucket, f"{prefix}/{f.relative_to(local).as_posix()}")


def committed_on_s3(s3, bucket: str, prefix: str) -> int:
    from queries.resultset.manifest import parse_manifest

    try:
        body = s3.client().get_object(Bucket=bucket, Key=f"{prefix}/manifest.json")["Body"].read()
    except Exception:  # noqa: BLE001 - not there yet
        return 0
    return len(parse_manifest(body, prefix).done())


def test_store_lock_integrity_and_queries_on_s3(s3, tmp_path, capsys):
    bucket = s3.bucket("store-basics")
    uri = s3.uri(bucket, "sets/st")
    store = ResultStore.create_or_open(uri, SPEC, manifest_interval=3600)
    assert s3.keys(bucket, "sets/st/writer.lock") == ["sets/st/writer.lock"]
    with pytest.raises(StoreError, match=f"is being written by pid {os.getpid()}"):
        ResultStore.create_or_open(uri, SPEC)  # the S3 conditional PUT refuses a second writer
    for t in TASKS:
        store.write_task(t.task_id, points_table(t), events_table(2) if t.task_id == 1 else None)
        if t.task_id == 2:
            store.flush()
    store.finish(6)
    store.close()
    assert not s3.keys(bucket, "sets/st/writer.lock")
    # the same tasks written locally read back identically through the URI
    local = ResultStore.create_or_open(tmp_path / "st", SPEC)
    for t in TASKS:
        local.write_task(t.task_id, points_table(t), events_table(2) if t.task_id == 1 else None)
    local.finish(6)
    local.close()
    assert read_dir(uri).equals(read_dir(tmp_path / "st"))
    assert read_dir(uri, "events").equals(read_dir(tmp_path / "st", "events"))
    q = "select * exclude (sweep) from outcomes order by all"
    assert connect(uri).sql(q).to_arrow_table().equals(connect(tmp_path / "st").sql(q).to_arrow_table())
    # a corrupted object (same size, garbage in the middle) is reported, left out, and repaired
    seg = json.loads(s3.client().get_object(Bucket=bucket, Key="sets/st/manifest.json")["Body"].read())["segments"][0]
    key = f"sets/st/{seg['points']['path']}"
    data = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    mid = len(data) // 2
    s3.client().put_object(Bucket=bucket, Key=key, Body=data[:mid] + b"\0" * 32 + data[mid + 32:])
    with pytest.raises(QueryError, match="has no intact points files: .* does not match its checksum"):
        connect(uri)
    assert main(["query", uri, "--sql", "select 1"]) == 2  # no intact points file left: one line, exit 2
    err = capsys.readouterr().err
    assert "missing tasks 0-5" in err and len(err.strip().splitlines()) == 1
    again = ResultStore.create_or_open(uri, SPEC)
    assert [d.path for d in again.repaired] == [seg["points"]["path"]] and again.done_tasks() == set()
    again.close()


def test_compact_first_release_dir_on_s3(s3, capsys):
    bucket = s3.bucket("compact")
    upload(s3, FIXTURES / "release1-naive", bucket, "old/naive")
    uri = s3.uri(bucket, "old/naive")
    q = "select * from outcomes order by all"
    before = connect(uri).sql(q).to_arrow_table()
    assert before.equals(connect(FIXTURES / "release1-naive").sql(q).to_arrow_table())
    assert main(["compact", uri, "--grace", "0"]) == 0
    assert "16 tasks, 19 files" in capsys.readouterr().out
    keys = [k for k in s3.keys(bucket, "old/naive/") if k.endswith(".parquet")]
    assert len(keys) == 2 and all("/seg-" in k for k in keys)
    assert connect(uri).sql(q).to_arrow_table().equals(before)
    assert read_dir(uri).equals(read_dir(FIXTURES / "release1-naive"))


def test_service_serves_a_set_on_s3_like_the_cli(s3, capsys, tmp_path, monkeypatch):
    """`stoprace serve s3://...`: the sweep is listed under the last part of its path (not the
    endpoint in the query string), and outcomes and replay answer as the CLI does on the same URI."""
    monkeypatch.chdir(tmp_path)  # no ./results here: the URI is the only set served
    from fastapi.testclient import TestClient

    from sweeps.serve import ServeConfig, create_app, shutdown

    bucket = s3.bucket("served")
    upload(s3, FIXTURES / "release1-naive", bucket, "team/naive")
    uri = s3.uri(bucket, "team/naive")
    ev = read_dir(uri, "events").sort_by([("point_id", "ascending"), ("shard", "ascending"), ("trial", "ascending")])
    e = ev.slice(0, 1).to_pylist()[0]
    assert main(["replay", uri, "--point", e["point_id"], "--shard", str(e["shard"]), "--trial", str(e["trial"]),
                 "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    app = create_app(ServeConfig(locations=[uri]))
    try:
        c = TestClient(app, base_url="http://127.0.0.1")
        (listed,) = c.get("/api/sweeps").json()
        assert listed["location"] == uri and listed["status"] == "complete" and listed["tasks_done"] == 16
        key = listed["name"]
        assert key == "naive", key
        r = c.get(f"/api/sweeps/{key}/replay", params={"point": e["point_id"], "shard": e["shard"], "trial": e["trial"]})
        assert r.status_code == 200, r.text
        assert r.json() == cli and cli["outcome"] == e["outcome"]
        outcomes = c.get(f"/api/sweeps/{key}/outcomes").json()
        assert len(outcomes) == connect(uri).sql("select count(*) from outcomes").fetchall()[0][0] > 0
    finally:
        shutdown(app)


@pytest.mark.slow
def test_cli_run_interrupt_resume_and_read_on_s3(s3, tmp_path):
    """A real sweep (embedded Ray) to S3: interrupted, resumed, identical to a local run; every reader takes the URI."""
    bucket = s3.bucket("runs")
    spec = write_spec(tmp_path, SLOW_SPEC)
    uri = s3.uri(bucket, "slow")
    ref = tmp_path / "ref"
    finish(cli("run", str(spec), "--out", str(ref), "--workers", "1", "--no-progress"), timeout=600)
    n = len(ResultSet.open(ref).manifest.done())
    proc = cli("run", str(spec), "--out", uri, "--workers", "1", "--no-progress")
    wait_for(lambda: committed_on_s3(s3, bucket, "slow") >= 2, 180, "two committed tasks on S3", proc)
    # a second driver on the same URI is refused at once, naming the first
    second = cli("run", str(spec), "--out", uri, "--no-progress")
    _, err2 = second.communicate(timeout=60)
    assert second.returncode == 2 and f"is being written by pid {proc.pid}" in err2
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "run the same command again to resume" in err
    kept = committed_on_s3(s3, bucket, "slow")
    assert 2 <= kept < n, "interrupt came too late to test resume"
    out, _ = finish(cli("run", str(spec), "--out", uri, "--no-progress"), timeout=600)
    assert f"({n - kept} run, {kept} already stored)" in out
    assert without_wall(read_dir(uri)).equals(without_wall(read_dir(ref)))
    assert read_dir(uri, "events").equals(read_dir(ref, "events"))
    assert not s3.keys(bucket, "slow/writer.lock")
    # readers take the same URI
    out, err = finish(cli("query", uri, "--sql", "select count(*) n from outcomes", "--format", "csv"))
    assert out.splitlines()[1] == "8" and err == ""
    out, _ = finish(cli("capacity", uri, "--target-p", "0.5"))
    assert "largest n_cpus" in out
    out, _ = finish(cli("plot", uri, "--x", "n_cpus", "--lines", "p_stall", "--where", "wait = 1",
                        "-o", str(tmp_path / "p.png")))
    assert (tmp_path / "p.png").stat().st_size > 0
    ev = read_dir(uri, "events").to_pylist()[0]
    out, _ = finish(cli("replay", uri, "--point", ev["point_id"], "--shard", str(ev["shard"]), "--trial",
                        str(ev["trial"])))
    assert f"outcome: {ev['outcome']}" in out
    assert compact(locate(uri)).tasks == n
