"""Ray Jobs: run a command on a remote Ray cluster, watch it, stop it; ship code with a runtime_env.

A *job* is a shell command (the entrypoint) that the cluster runs on its head
node as a Ray driver (``RAY_ADDRESS`` is set for it, so ``ray.init()`` inside
joins that cluster). The submitting machine only talks HTTP to the head's
dashboard (``http://HEAD:8265``); it may disconnect at any time, the job keeps
running, and ``status``/``logs``/``stop`` find it again by its id.

Shipping code: a cluster that has only Ray (and the third-party dependencies)
installed can still run a project whose packages are shipped in the job's
``runtime_env``: ``py_modules`` (local package directories, uploaded once and
cached by content hash; importable by their names in the job's driver and in
every worker it starts, on every node) and ``working_dir`` (uploaded too,
becomes the entrypoint's current directory: here, where the sweep spec is).
``pip`` packages in the runtime_env are optional: Ray then builds a virtualenv
per job and node (slow, needs network on the nodes); a cluster image with the
dependencies installed is faster. Ray caps an uploaded package at 100 MiB by
default, hence ``DEFAULT_EXCLUDES``.

Auth: if the cluster runs with token authentication (``RAY_AUTH_MODE=token``),
the submitting process needs the same token (``RAY_AUTH_TOKEN`` or
``~/.ray/auth_token``) and ``RAY_AUTH_MODE=token``; Ray's client adds the
header. Without auth, anyone who reaches port 8265 can run code on the
cluster: keep it on a private network or behind a tunnel.

This module imports only ray and the standard library; it knows nothing of
what the jobs compute. Errors a user can cause (no address, unreachable
address, unknown job id) are ``JobsError`` with a one-line message: a plain
Exception, since ``cluster`` imports nothing of ours; ``sweeps`` turns it into
a StopraceError at its boundary.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_EXCLUDES",
    "JobInfo",
    "JobsClient",
    "JobsError",
    "in_ray_job",
    "jobs_address",
    "shipping_runtime_env",
]

DEFAULT_EXCLUDES: list[str] = [
    ".git",
    ".venv",
    ".ci-venv",
    "__pycache__",
    "*.pyc",
    "*.egg-info",
    ".pytest_cache",
    ".hypothesis",
    "results",
    "out",
    "build",
]
"""Never uploaded with a working_dir or py_modules (gitignore syntax, relative to each shipped dir)."""

# The environment variable Ray's job manager sets for a job's entrypoint (the
# job's runtime_env and metadata as JSON). Its presence means "this process is
# a Ray job's driver": the job's runtime_env already applies to every worker,
# and a driver passing its own runtime_env with the same fields is an error.
_JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"

_TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
"""Ray's JobStatus values of an ended job (ray.job_submission is imported only by JobsClient: a run that
only asks `in_ray_job` or builds a runtime_env loads no Ray)."""

# Ray's client logs every package upload and websocket close at INFO on stderr.
_CHATTY_LOGGERS = (
    "ray.dashboard.modules.dashboard_sdk",
    "ray.dashboard.modules.job.sdk",
    "ray._private.runtime_env.packaging",
)


SUBMIT_RETRY_S = 30.0
"""How long `JobsClient.submit` keeps retrying while Ray's job head says to try again later."""


class JobsError(Exception):
    """A Ray Jobs problem a user can fix (address, job id): one line."""


def in_ray_job() -> bool:
    """True when this process is the entrypoint (driver) of a Ray job."""
    return _JOB_CONFIG_ENV in os.environ


def jobs_address(address: str | None = None) -> str:
    """The Ray Jobs (dashboard) URL: ``address``, else ``$RAY_API_SERVER_ADDRESS``, else an http(s) ``$RAY_ADDRESS``.

    ``HEAD:8265`` without a scheme means ``http://HEAD:8265``. A ``ray://`` or
    GCS (``HEAD:6379``) address is not the Jobs API: JobsError says so.
    """
    addr = (address or "").strip()
    if not addr:
        addr = os.environ.get("RAY_API_SERVER_ADDRESS", "").strip()
    if not addr:
        env = os.environ.get("RAY_ADDRESS", "").strip()
        if env.startswith(("http://", "https://")):
            addr = env
    if not addr:
        raise JobsError(
            "no Ray Jobs address: pass --address http://HEAD:8265 (the head's dashboard) "
            "or set RAY_API_SERVER_ADDRESS"
        )
    scheme, sep, _ = addr.partition("://")
    if not sep:
        addr = "http://" + addr
    elif scheme not in ("http", "https"):
        raise JobsError(
            f"{addr}: Ray Jobs needs the dashboard's http(s)://HEAD:8265 address, not a {scheme}:// address"
        )
    return addr.rstrip("/")


def shipping_runtime_env(
    module_dirs: Sequence[str | os.PathLike[str]] = (),
    *,
    working_dir: str | os.PathLike[str] | None = None,
    pip: Sequence[str] | None = None,
    env_vars: dict[str, str] | None = None,
    excludes: Sequence[str] = DEFAULT_EXCLUDES,
) -> dict[str, Any]:
    """A runtime_env that ships local package dirs (``py_modules``) and/or a ``working_dir``.

    Each of ``module_dirs`` must be a package directory (``.../core``), so
    ``import core`` works on the cluster. ``pip``: requirement strings to
    install per job (optional, see the module docstring).
    """
    env: dict[str, Any] = {}
    mods = []
    for d in module_dirs:
        p = Path(d).resolve()
        if not (p / "__init__.py").is_file():
            raise JobsError(f"{p}: not a Python package directory (no __init__.py), cannot ship it")
        mods.append(str(p))
    if mods:
        env["py_modules"] = mods
    if working_dir is not None:
        wd = Path(working_dir).resolve()
        if not wd.is_dir():
            raise JobsError(f"{wd}: working_dir is not a directory")
        env["working_dir"] = str(wd)
    if env:
        env["excludes"] = list(excludes)
    if pip:
        env["pip"] = list(pip)
    if env_vars:
        env["env_vars"] = {str(k): str(v) for k, v in env_vars.items()}
    return env


@dataclass(frozen=True)
class JobInfo:
    """What the cluster knows about one job (times in seconds since the epoch)."""

    job_id: str
    status: str
    message: str = ""
    entrypoint: str = ""
    start_time: float | None = None
    end_time: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    driver_exit_code: int | None = None
    """The entrypoint's exit code once it has ended (None while running, or if Ray does not say)."""

    @property
    def terminal(self) -> bool:
        return self.status in _TERMINAL

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"

    @classmethod
    def _from_ray(cls, d: Any) -> JobInfo:
        def secs(ms: Any) -> float | None:
            return ms / 1000.0 if ms else None

        status = str(getattr(d.status, "value", d.status))
        return cls(
            job_id=d.submission_id or d.job_id or "",
            status=status,
            message=" ".join(str(d.message or "").split()),
            entrypoint=d.entrypoint or "",
            start_time=secs(d.start_time),
            end_time=secs(d.end_time),
            metadata=dict(d.metadata or {}),
            driver_exit_code=getattr(d, "driver_exit_code", None),
        )


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


class JobsClient:
    """A connection to one cluster's Ray Jobs API; every method raises JobsError on user errors."""

    def __init__(self, address: str | None = None, *, headers: dict[str, str] | None = None, quiet: bool = True) -> None:
        self.address = jobs_address(address)
        if quiet:
            for name in _CHATTY_LOGGERS:
                logging.getLogger(name).setLevel(logging.WARNING)
        from ray.job_submission import JobSubmissionClient

        try:
            self._client = JobSubmissionClient(self.address, headers=headers)
        except Exception as e:  # ConnectionError, requests errors, version mismatch, auth
            raise self._fail(e, None, connecting=True) from None

    # ---- errors ------------------------------------------------------------------------
    def _fail(self, e: BaseException, job_id: str | None, connecting: bool = False) -> JobsError:
        msg = _one_line(e)
        if "Authentication" in msg or "Unauthorized" in msg or "status code 401" in msg:
            return JobsError(
                f"the Ray Jobs API at {self.address} requires the cluster's auth token: export RAY_AUTH_MODE=token "
                f"and provide the token in ~/.ray/auth_token or RAY_AUTH_TOKEN"
            )
        if connecting:
            return JobsError(
                f"cannot reach the Ray Jobs API at {self.address} (is the head's dashboard up and this its port?): {msg}"
            )
        if job_id is not None and ("does not exist" in msg or "status code 404" in msg):
            return JobsError(f"no job {job_id!r} on {self.address} (stoprace status --address {self.address} lists them)")
        return JobsError(f"Ray Jobs at {self.address}: {msg}")

    def _call(self, fn: Callable[..., Any], *args: Any, job_id: str | None = None, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except Exception as e:  # Ray's RuntimeError for HTTP errors, requests' OSErrors: all one line
            raise self._fail(e, job_id) from None

    # ---- jobs --------------------------------------------------------------------------
    def submit(
        self,
        entrypoint: str,
        *,
        runtime_env: dict[str, Any] | None = None,
        submission_id: str | None = None,
        metadata: dict[str, str] | None = None,
        entrypoint_num_cpus: float | None = None,
    ) -> str:
        """Start ``entrypoint`` (a shell command) on the cluster; returns the job id.

        Local paths in ``runtime_env`` (working_dir, py_modules) are zipped and
        uploaded now, so they may be deleted once this returns.
        """
        kw: dict[str, Any] = {}
        if entrypoint_num_cpus is not None:
            kw["entrypoint_num_cpus"] = entrypoint_num_cpus
        deadline = time.monotonic() + SUBMIT_RETRY_S
        while True:
            try:
                return self._client.submit_job(
                    entrypoint=entrypoint,
                    runtime_env=runtime_env,
                    submission_id=submission_id,
                    metadata={str(k): str(v) for k, v in (metadata or {}).items()} or None,
                    **kw,
                )
            except Exception as e:
                # Ray's job head answers 500 "No available agent to submit job, please try again later" while
                # the head's dashboard agent is (re)registering or busy: a wait, not the user's error
                if "try again later" not in str(e) or time.monotonic() >= deadline:
                    raise self._fail(e, None) from None
            time.sleep(1.0)

    def info(self, job_id: str) -> JobInfo:
        return JobInfo._from_ray(self._call(self._client.get_job_info, job_id, job_id=job_id))

    def list(self) -> list[JobInfo]:
        """Every job the cluster remembers, oldest first."""
        jobs = [JobInfo._from_ray(d) for d in self._call(self._client.list_jobs)]
        return sorted(jobs, key=lambda j: (j.start_time or 0.0, j.job_id))

    def logs(self, job_id: str) -> str:
        """The job's output so far (entrypoint stdout and stderr)."""
        return self._call(self._client.get_job_logs, job_id, job_id=job_id)

    def stop(self, job_id: str) -> bool:
        """Ask the cluster to stop the job (SIGTERM, then SIGKILL); False if it had already ended."""
        return bool(self._call(self._client.stop_job, job_id, job_id=job_id))

    def head_python(self, timeout: float = 10.0) -> str | None:
        """The Python the head node's raylet starts its workers with (None if the dashboard does not say).

        That interpreter has Ray, and on a node set up as README says, stoprace's dependencies; a
        job's entrypoint, by contrast, runs whatever ``python`` is first on the head's PATH, which
        need not be it (a venv whose ``bin/ray start`` was run without activating it). Read from the
        dashboard's node summary: the head raylet's ``--python_worker_command``. The dashboard's agent
        reports a node's command line periodically (and, on a loaded head, sometimes without it), so
        this asks again for up to ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = self._head_python_once()
            if found is not None or time.monotonic() >= deadline:
                return found
            time.sleep(0.5)

    def _head_python_once(self) -> str | None:
        import shlex

        try:
            r = self._client._do_request("GET", "/nodes?view=summary", timeout=10)
            nodes = r.json()["data"]["summary"]
        except Exception:  # an older/newer dashboard, a proxy in between: the caller falls back
            return None
        for node in nodes:
            raylet = node.get("raylet") or {}
            if not raylet.get("isHeadNode") or raylet.get("state", "ALIVE") != "ALIVE":
                continue
            for arg in node.get("cmdline") or ():
                if isinstance(arg, str) and arg.startswith("--python_worker_command="):
                    words = shlex.split(arg.partition("=")[2])
                    return words[0] if words else None
        return None

    def run_to_end(
        self, entrypoint: str, *, runtime_env: dict[str, Any] | None = None, submission_id: str | None = None,
        metadata: dict[str, str] | None = None, timeout: float = 300.0, poll_s: float = 0.25,
    ) -> tuple[JobInfo, str]:
        """Run a short job to its end (e.g. a preflight check) and return its final info and output.

        A job still running after ``timeout`` seconds is stopped and JobsError says so.
        """
        job_id = self.submit(entrypoint, runtime_env=runtime_env, submission_id=submission_id, metadata=metadata)
        info = self.wait(job_id, timeout=timeout, poll_s=poll_s)
        if not info.terminal:
            self.stop(job_id)
            raise JobsError(f"job {job_id} on {self.address} did not end within {timeout:.0f} s ({info.status})")
        return info, self.logs(job_id)

    def wait(self, job_id: str, *, timeout: float | None = None, poll_s: float = 1.0) -> JobInfo:
        """Poll until the job has ended (or ``timeout`` seconds passed); returns its last info."""
        t0 = time.monotonic()
        while True:
            info = self.info(job_id)
            if info.terminal or (timeout is not None and time.monotonic() - t0 >= timeout):
                return info
            time.sleep(poll_s)

    def follow(self, job_id: str, write: Callable[[str], None], *, poll_s: float = 1.0) -> JobInfo:
        """Stream the job's output to ``write`` from the start until the job ends; returns its final info."""
        self.info(job_id)  # unknown id: JobsError now, not a websocket error later

        async def tail() -> None:
            async for chunk in self._client.tail_job_logs(job_id):
                write(chunk)

        try:
            asyncio.run(tail())
        except KeyboardInterrupt:
            raise
        except Exception as e:
            raise self._fail(e, job_id) from None
        # The log stream closes when the job ends; make sure the status says so too.
        return self.wait(job_id, poll_s=poll_s)
