"""Sweeps submitted through the API, run one at a time in the background.

Each run is a child process running the CLI itself: `stoprace run SPEC --out LOC
--no-progress` (embedded Ray in the child), or with `serve --address URL`
`stoprace submit SPEC --address URL --out LOC --wait` (a Ray Job on that cluster;
LOC must then be where both the head node and this server see it: a shared
mount or an s3:// URI). Running the CLI, not an in-process `sweeps.run`, keeps
one code path for validation, storing and resuming, keeps Ray's driver (its
threads, signal handlers and memory) out of the server, and lets a crashed run
fail alone. Progress is read from the result set's manifest (registry.py),
exactly as for a run started from a shell.

Resume: a run that stopped (server shut down, child killed) leaves finished tasks
stored; submitting the same spec again runs only the missing ones, as the CLI
does. Stopping the server sends the running child SIGINT, which stores every
finished task before it exits; a server that dies without stopping (SIGKILL) takes
its run with it the same way: the child runs through sweeps/serve/child.py, which
watches a pipe from the server and stops the run when the pipe closes.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Run", "Runner"]

_REPO = Path(__file__).resolve().parents[2]
"""The directory holding the stoprace packages: put first on the child's PYTHONPATH."""


@dataclass
class Run:
    """One submitted sweep run and what became of it."""

    name: str
    location: str
    spec_file: str
    state: str = "queued"  # queued -> running -> done | failed | stopped
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    returncode: int | None = None
    message: str | None = None
    pid: int | None = None
    force: bool = False
    """Run with --force (the size guards lifted; only on a server with a token)."""

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "submitted": self.submitted, "started": self.started, "ended": self.ended,
                "returncode": self.returncode, "message": self.message}


class Runner:
    """A FIFO of runs and one worker thread that runs them as CLI child processes."""

    def __init__(self, *, address: str | None = None, workers: int | None = None,
                 python: str = sys.executable) -> None:
        self.address = address
        self.workers = workers
        self.python = python
        self.runs: dict[str, Run] = {}
        self._queue: queue.Queue[Run | None] = queue.Queue()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="stoprace-serve-")
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="stoprace-runs", daemon=True)
        self._thread.start()

    def active(self, name: str) -> Run | None:
        """The queued or running run of `name`, if any."""
        with self._lock:
            r = self.runs.get(name)
            return r if r is not None and r.state in ("queued", "running") else None

    def submit(self, name: str, location: str, spec_toml: str, force: bool = False) -> Run:
        """Queue a run of the (already validated, canonical) spec into `location` (`force`: as --force)."""
        fd, spec_file = tempfile.mkstemp(prefix=f"{name}-", suffix=".toml", dir=self._tmp.name)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(spec_toml)
        run = Run(name, location, spec_file, force=force)
        with self._lock:
            self.runs[name] = run
        self._queue.put(run)
        return run

    def command(self, run: Run) -> list[str]:
        """The CLI command line of a run (see the module docstring)."""
        cli = [self.python, "-m", "sweeps.serve.child"]
        if self.address:
            cmd = [*cli, "submit", run.spec_file, "--address", self.address, "--out", run.location, "--wait"]
        else:
            cmd = [*cli, "run", run.spec_file, "--out", run.location, "--no-progress"]
            if self.workers:
                cmd += ["--workers", str(self.workers)]
        return cmd + (["--force"] if run.force else [])

    def _work(self) -> None:
        while True:
            run = self._queue.get()
            if run is None:
                return
            if self._stopping:
                run.state = "stopped"
                continue
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO), env.get("PYTHONPATH")) if p)
            log = Path(self._tmp.name) / f"{run.name}.log"
            run.started = time.time()
            try:
                with open(log, "wb") as out:
                    # stdin: the pipe the child watches (child.py); its write end closes only when we end
                    proc = subprocess.Popen(self.command(run), stdout=out, stderr=subprocess.STDOUT, env=env,
                                            stdin=subprocess.PIPE, start_new_session=True)
                    with self._lock:
                        self._proc = proc
                        run.pid = proc.pid
                        run.state = "running"
                    rc = proc.wait()
                    if proc.stdin is not None:
                        proc.stdin.close()
            except OSError as e:
                rc, run.message = -1, f"cannot start the run: {e}"
            with self._lock:
                self._proc = None
            run.returncode = rc
            run.ended = time.time()
            if rc == 0:
                run.state = "done"
            else:
                run.state = "stopped" if self._stopping or rc in (130, -signal.SIGINT) else "failed"
                run.message = run.message or _last_line(log)

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the worker: queued runs are dropped, a running child gets SIGINT (keeps finished tasks)."""
        self._stopping = True
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(signal.SIGINT)  # the driver only, like Ctrl-C: it stores, then stops its Ray
                proc.wait(timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._queue.put(None)
        self._thread.join(timeout=5)
        self._tmp.cleanup()


def _last_line(log: Path) -> str | None:
    """The last non-empty line of a run's output (the CLI's one-line error, or Ray's last word)."""
    try:
        lines = [ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    return lines[-1][:500] if lines else None
