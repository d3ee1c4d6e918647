"""Helpers for the `stoprace serve` tests: result sets to serve, a tiny spec to submit, a real server process."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"

# 2 x 2 points x 2 shards: 4 tasks of ~0.1 s; long enough for a progress reading, short on 2 cores.
TINY_SPEC = """
name = "{name}"
seed = 5
trials = 2000
shard_trials = 1000
task_seconds = 0.02

[base]
p_stall = 0.05
stall_median_us = 1.0e6
stall_sigma = 0.05

[axes]
n_cpus = [8, 32]
mitigation = ["none", "early_flush"]
"""


def results_root(tmp: Path) -> Path:
    """tmp/results holding two result sets written by the first release: naive/ and cmc/."""
    root = tmp / "results"
    root.mkdir()
    shutil.copytree(FIXTURES / "release1-naive", root / "naive")
    shutil.copytree(FIXTURES / "release1-cmc", root / "cmc")
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`stoprace serve ...` as a real process on 127.0.0.1 (stopped by its pid)."""

    def __init__(self, *args: str, cwd: Path, token: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = token
        cmd = [sys.executable, "-m", "sweeps.cli", "serve", *args, "--port", str(self.port)]
        if token:
            cmd += ["--token", token]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
        self.log = open(cwd / f"serve-{self.port}.log", "w+")
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        t0 = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}: {self.output()}")
            try:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                if httpx.get(self.url + "/api/sweeps", headers=headers, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - t0 > 60:
                self.stop()
                raise AssertionError(f"serve did not answer within 60 s: {self.output()}")
            time.sleep(0.2)

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> tuple[int, str]:
        """SIGTERM to the server's pid (it stops its runs and exits), SIGKILL to its group if it hangs.

        Returns (exit code, everything it printed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        out = self.output()
        self.log.close()
        return self.proc.returncode, out


def wait_done(client, name: str, timeout: float = 240) -> list[dict]:
    """Poll GET /api/sweeps/{name} (a TestClient or httpx client) until the sweep is complete and its
    run done; return every reading. Fails at once on a status or run state that is not on the way."""
    seen = []
    t0 = time.monotonic()
    while True:
        r = client.get(f"/api/sweeps/{name}")
        if r.status_code == 200:
            s = r.json()
            seen.append(s)
            if s["status"] == "complete" and s.get("run", {}).get("state") in (None, "done"):
                return seen
            assert s["status"] in ("queued", "running", "partial", "complete"), s
            assert s.get("run", {}).get("state") not in ("failed", "stopped"), s
        assert time.monotonic() - t0 < timeout, seen[-3:]
        time.sleep(0.2)
