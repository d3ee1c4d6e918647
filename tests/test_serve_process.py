"""`stoprace serve` as a real process, as its user runs it (issue 24 item 7's service cases).

- `stoprace serve A B` serves A and B, not also what lies under ./results;
- a request still computing when the server gets SIGTERM does not keep it from stopping;
- a server killed with SIGKILL takes its running sweep with it, so the next server resumes it;
- many heavy queries at once wait their turn while the sweep list is answered at once.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import httpx
import pytest
from serve_helpers import FIXTURES, Server, wait_done

from sweep_helpers import SLOW_SPEC, alive, descendants

HEAVY_SQL = "SELECT count(*) AS n FROM range(1000000000000) a"
"""DuckDB counts 10^12 rows: it runs until the query time limit stops it."""


def _sets(tmp_path):
    a, b = tmp_path / "elsewhere" / "a", tmp_path / "elsewhere" / "b"
    shutil.copytree(FIXTURES / "release1-naive", a)
    shutil.copytree(FIXTURES / "release1-partial", b)
    (tmp_path / "results").mkdir()
    shutil.copytree(FIXTURES / "release1-cmc", tmp_path / "results" / "other")
    return a, b


def test_serve_a_b_serves_only_a_and_b(tmp_path):
    a, b = _sets(tmp_path)
    s = Server(str(a), str(b), cwd=tmp_path)
    try:
        listed = httpx.get(s.url + "/api/sweeps").json()
        assert [x["name"] for x in listed] == ["a", "b"]
        assert [x["location"] for x in listed] == [str(a), str(b)]
        assert httpx.get(s.url + "/api/sweeps/other").status_code == 404
    finally:
        rc, out = s.stop()
    assert rc == 0, out
    # with no argument it serves ./results, as before
    s = Server(cwd=tmp_path)
    try:
        assert [x["name"] for x in httpx.get(s.url + "/api/sweeps").json()] == ["other"]
    finally:
        s.stop()


def _wait_heavy(url: str, pred, timeout: float = 120) -> dict:
    t0 = time.monotonic()
    while True:
        h = httpx.get(url + "/api/server", timeout=10).json()["heavy"]
        if pred(h):
            return h
        assert time.monotonic() - t0 < timeout, h
        time.sleep(0.05)


def test_sigterm_stops_the_server_while_a_capacity_request_computes(tmp_path):
    a, _ = _sets(tmp_path)
    s = Server(str(a), "--query-timeout", "600", cwd=tmp_path)
    answers: list[object] = []

    def ask():
        try:
            answers.append(httpx.get(s.url + "/api/sweeps/a/capacity", timeout=900, params={
                "target_p": "1e-2", "where": f"({HEAVY_SQL}) > 0"}).status_code)
        except httpx.HTTPError as e:
            answers.append(type(e).__name__)

    t = threading.Thread(target=ask, daemon=True)
    t.start()
    _wait_heavy(s.url, lambda h: h["running"] == 1)
    t0 = time.monotonic()
    rc, out = s.stop()  # SIGTERM; SIGKILL after 60 s (rc -9)
    assert rc == 0, out
    assert time.monotonic() - t0 < 60
    t.join(30)
    assert answers and answers[0] != 200  # the request was cut off (connection closed or an error), not answered


@pytest.mark.slow
def test_a_killed_server_takes_its_run_with_it_and_the_next_one_resumes(tmp_path):
    root = tmp_path / "results"
    root.mkdir()
    s = Server(str(root), "--workers", "1", cwd=tmp_path)
    try:
        r = httpx.post(s.url + "/api/sweeps", content=SLOW_SPEC.encode(), headers={"content-type": "application/toml"})
        assert r.status_code == 202, r.text
        t0 = time.monotonic()
        while True:
            st = httpx.get(s.url + "/api/sweeps/e2e-slow").json()
            if st["status"] == "running" and st["tasks_done"] >= 1:
                break
            assert st["status"] in ("queued", "running") and time.monotonic() - t0 < 240, st
            time.sleep(0.2)
        child = [pid for pid, cmd in descendants(s.proc.pid) if "sweeps.serve.child" in cmd]
        assert len(child) == 1, descendants(s.proc.pid)
        os.kill(s.proc.pid, signal.SIGKILL)
        s.proc.wait()
        t0 = time.monotonic()
        while alive(child[0]):  # it stores what finished and ends, as on Ctrl-C
            assert time.monotonic() - t0 < 120, "the run outlived its server"
            time.sleep(0.2)
    finally:
        s.stop()
    assert not (root / "e2e-slow" / "writer.lock").exists()  # released, not left for the next run to break
    s = Server(str(root), "--workers", "1", cwd=tmp_path)
    try:
        c = httpx.Client(base_url=s.url, timeout=30)
        before = c.get("/api/sweeps/e2e-slow").json()
        assert before["status"] == "partial" and before["tasks_done"] >= 1
        r = c.post("/api/sweeps", content=SLOW_SPEC.encode(), headers={"content-type": "application/toml"})
        assert r.status_code == 202, r.text
        final = wait_done(c, "e2e-slow")[-1]
        assert final["tasks_done"] == final["tasks_total"] and final["problem"] is None
        total = c.post("/api/query", json={"sql": "SELECT sum(trials)::BIGINT AS t, count(*) AS n FROM outcomes",
                                           "sweeps": ["e2e-slow"]}).json()["rows"]
        assert total == [{"t": 8 * 20000, "n": 8}]
    finally:
        rc, out = s.stop()
    assert rc == 0, out


def test_heavy_queries_queue_while_the_sweep_list_is_answered(tmp_path):
    """45 heavy queries at once (each runs until the 1 s time limit): at most --heavy of them compute,
    the others wait; meanwhile GET /api/sweeps and GET /api/server are answered, while dozens still wait."""
    a, _ = _sets(tmp_path)
    s = Server(str(a), "--query-timeout", "1", "--heavy", "2", cwd=tmp_path)
    statuses: list[int] = []
    errors: list[str] = []

    def heavy():
        r = httpx.post(s.url + "/api/query", json={"sql": HEAVY_SQL, "sweeps": ["a"]}, timeout=600)
        statuses.append(r.status_code)
        errors.append(r.json().get("error", ""))

    threads = [threading.Thread(target=heavy, daemon=True) for _ in range(45)]
    try:
        for t in threads:
            t.start()
        seen = _wait_heavy(s.url, lambda h: h["running"] + h["queued"] >= 40)
        assert seen["running"] <= 2
        listed = httpx.get(s.url + "/api/sweeps", timeout=60)
        assert listed.status_code == 200 and listed.json()[0]["name"] == "a"
        after = httpx.get(s.url + "/api/server", timeout=60).json()["heavy"]
        assert after["queued"] >= 30, after  # answered while most heavy ones still wait their turn
        peak = 0
        while any(t.is_alive() for t in threads):
            h = httpx.get(s.url + "/api/server", timeout=60).json()["heavy"]
            peak = max(peak, h["running"])
            time.sleep(0.1)
        assert 1 <= peak <= 2
        assert statuses == [400] * 45 and all("time limit of 1 s" in e for e in errors)
        assert httpx.get(s.url + "/api/server").json()["heavy"] == {"slots": 2, "running": 0, "queued": 0}
    finally:
        rc, out = s.stop()
    assert rc == 0, out
