"""Multi-node: a real two-node Ray cluster on this machine (head + worker node, 1 CPU each,
Ray Jobs on the head's dashboard), driven through the `stoprace` CLI in subprocesses.

Every sweep here must give rows identical (except wall_s) to an embedded run of
the same spec: a run joining the cluster (--address), a Ray Job (submit --wait),
a run that loses its worker node mid-sweep, a driver SIGKILLed mid-sweep and
resumed, a job stopped mid-sweep and resubmitted. One cluster is shared by the
module (head start-up is ~5-7 s); a test that removes the worker node gets a
new one before the next test (the `two_nodes` fixture).

The quick tests at the end (no cluster) cover bad input and how the job and
the runtime_env are built.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from sweeps.cli import build_parser, main
from sweeps.grid import iter_tasks
from sweeps.spec import load_spec

from sweep_helpers import (
    CLUSTER_SPEC,
    SMALL_SPEC,
    alive,
    cli,
    descendants,
    finish,
    same_results,
    stored,
    wait_for,
    write_spec,
)

# Drivers in subprocesses: never an embedded Ray by accident, no token auth (the
# cluster below is started without it; see README "Running on a cluster").
DRIVER_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": ""}
SUMMARY = re.compile(r"(\d+) tasks \((\d+) run, (\d+) already stored\)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _summary(text: str) -> tuple[int, int, int]:
    m = SUMMARY.search(text)
    assert m, f"no run summary in: {text[-2000:]}"
    return int(m[1]), int(m[2]), int(m[3])


class TwoNodes:
    """The shared cluster: GCS address for `run --address`, dashboard URL for Ray Jobs."""

    def __init__(self, cluster, dashboard: str) -> None:
        self.cluster = cluster
        self.gcs = cluster.address
        self.dashboard = dashboard

    @property
    def worker(self):
        (node,) = self.cluster.worker_nodes
        return node

    def ensure_two(self) -> None:
        if not self.cluster.worker_nodes:
            self.cluster.add_node(num_cpus=1, dashboard_agent_listen_port=_free_port())
            self.cluster.wait_for_nodes()

    def worker_raylet_pid(self) -> int:
        from ray._private import ray_constants

        return self.worker.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    # The cluster's processes inherit this environment: no token auth, and the job
    # entrypoint's `python` must be this interpreter (a venv not on PATH otherwise).
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "PATH")}
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    # Cluster() records its address in /tmp/ray/ray_current_cluster, where a plain
    # `ray.init()` elsewhere on this machine would find it: put back what was there.
    current = Path("/tmp/ray/ray_current_cluster")
    before = current.read_text() if current.exists() else None
    dash_port = _free_port()
    c = Cluster(shutdown_at_exit=True)
    try:
        # every port its own: Ray's fixed defaults (the dashboard agent's 52365) may be held by another
        # Ray on this machine, and a head whose agent cannot listen takes no jobs ("No available agent")
        c.add_node(num_cpus=1, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=dash_port,
                   dashboard_agent_listen_port=_free_port())
        try:
            if current.exists() and current.read_text().strip() == c.address:
                current.write_text(before) if before is not None else current.unlink()
        except OSError:
            pass
        c.add_node(num_cpus=1, dashboard_agent_listen_port=_free_port())
        c.wait_for_nodes()
        yield TwoNodes(c, f"http://127.0.0.1:{dash_port}")
    finally:
        c.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def two_nodes(cluster):
    cluster.ensure_two()
    yield cluster
    cluster.ensure_two()


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    """Embedded (single-machine) runs of both specs: the rows every cluster run must reproduce."""
    tmp = tmp_path_factory.mktemp("refs")
    out = {}
    for name, text in (("small", SMALL_SPEC), ("slow", CLUSTER_SPEC)):
        spec = write_spec(tmp, text, f"{name}.toml")
        ref = tmp / f"ref-{name}"
        finish(cli("run", str(spec), "--out", str(ref), "--workers", "2", "--no-progress", env=DRIVER_ENV), 240)
        out[name] = (spec, ref)
    return out


def _n_tasks(spec: Path) -> int:
    return sum(1 for _ in iter_tasks(load_spec(spec)))


def _assert_complete(out: Path, n: int) -> None:
    """All n planned tasks committed, every committed file intact, no temporary file left."""
    from queries.resultset.reader import ResultSet

    check = ResultSet.open(out).check()
    assert check.n_tasks == n and check.complete, check.problem()
    assert list(check.intact) == list(range(n))
    assert stored(out) == n and not list(out.rglob("*.tmp"))


# ---- (a) the same sweep through `run --address` and `submit --wait` ---------------------


@pytest.mark.slow
def test_run_on_cluster_and_submitted_job_match_embedded(two_nodes, refs, tmp_path):
    from ray.util.state import list_tasks

    spec, ref = refs["small"]
    n = _n_tasks(spec)

    # a driver here joining the cluster; results named by a file:// URI
    run_out = tmp_path / "run"
    out, _ = finish(cli("run", str(spec), "--address", two_nodes.gcs, "--out", run_out.as_uri(), "--no-progress", env=DRIVER_ENV))
    assert _summary(out) == (n, n, 0)
    same_results(run_out, ref)
    _assert_complete(run_out, n)

    # the same spec as a Ray Job: code and spec shipped, driver on the head node
    sub_out = tmp_path / "sub"
    out, err = finish(cli("submit", str(spec), "--address", two_nodes.dashboard, "--out", str(sub_out), "--wait", env=DRIVER_ENV))
    job = out.splitlines()[0].strip()
    assert job.startswith("stoprace-e2e-small-")
    assert f"job {job} SUCCEEDED" in err
    assert _summary(out) == (n, n, 0)  # the job's own output, streamed
    same_results(sub_out, ref)
    _assert_complete(sub_out, n)

    # status / logs of that job
    out, _ = finish(cli("status", job, "--address", two_nodes.dashboard, "--json", env=DRIVER_ENV))
    info = json.loads(out)
    assert info["status"] == "SUCCEEDED" and info["metadata"]["stoprace_out"] == str(sub_out)
    assert info["entrypoint"].split()[1:4] == ["-m", "sweeps.cli", "run"]
    out, _ = finish(cli("logs", job, "--address", two_nodes.dashboard, env=DRIVER_ENV))
    assert _summary(out) == (n, n, 0)
    out, _ = finish(cli("status", "--address", two_nodes.dashboard, env=DRIVER_ENV))
    assert any(line.split("\t")[:2] == [job, "SUCCEEDED"] for line in out.splitlines())

    # both nodes did work
    tasks = list_tasks(address=two_nodes.dashboard, filters=[("name", "=", "run_task")], limit=10_000, raise_on_missing_output=False)
    assert len({t.node_id for t in tasks if t.node_id}) == 2

    # bad input against a live cluster: one line, exit 2
    for cmd in ("status", "logs", "stop"):
        p = cli(cmd, "raysubmit_nosuchjob", "--address", two_nodes.dashboard, env=DRIVER_ENV)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 2 and len(err.strip().splitlines()) == 1 and "no job 'raysubmit_nosuchjob'" in err


# ---- (c) the driver dies; `run --resume` against the cluster completes the sweep -----------


@pytest.mark.slow
def test_driver_killed_then_resumed_on_cluster(two_nodes, refs, tmp_path):
    spec, ref = refs["slow"]
    n = _n_tasks(spec)
    out = tmp_path / "out"
    proc = cli("run", str(spec), "--address", two_nodes.gcs, "--out", str(out), "--no-progress", env=DRIVER_ENV)
    wait_for(lambda: stored(out) >= 3, 120, "three stored tasks", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    kept = stored(out)
    assert 3 <= kept < n, "the driver was killed too late to test resume"

    text, _ = finish(cli("run", str(spec), "--address", two_nodes.gcs, "--out", str(out), "--resume", "--no-progress", env=DRIVER_ENV))
    total, ran, skipped = _summary(text)
    assert total == n and ran + skipped == n and 0 < skipped <= kept
    same_results(out, ref)
    _assert_complete(out, n)


# ---- `stoprace serve --address`: a spec POSTed to the service runs as a Ray Job -----------------


@pytest.mark.slow
def test_served_submission_runs_as_a_ray_job(two_nodes, refs, tmp_path):
    """The service with `--address` hands a submitted spec to the cluster as a Ray Job (the Runner's
    `submit --wait` child); its progress is served while it runs and the stored rows equal the
    embedded run's."""
    from fastapi.testclient import TestClient
    from serve_helpers import wait_done

    from sweeps.serve import ServeConfig, create_app, shutdown

    spec, ref = refs["small"]
    n = _n_tasks(spec)
    root = tmp_path / "served"
    root.mkdir()
    app = create_app(ServeConfig(locations=[str(root)], address=two_nodes.dashboard))
    try:
        c = TestClient(app, base_url="http://127.0.0.1")
        r = c.post("/api/sweeps", content=spec.read_bytes(), headers={"content-type": "application/toml"})
        assert r.status_code == 202, r.text
        name = r.json()["name"]
        final = wait_done(c, name)[-1]
        assert final["tasks_done"] == final["tasks_total"] == n
    finally:
        shutdown(app)
    out = root / name
    same_results(out, ref)
    _assert_complete(out, n)
    # it ran as a job on the cluster, named for the sweep and writing where the service said
    listed, _ = finish(cli("status", "--address", two_nodes.dashboard, "--json", env=DRIVER_ENV))
    jobs = [j for j in json.loads(listed) if j.get("metadata", {}).get("stoprace_out") == str(out)]
    assert len(jobs) == 1 and jobs[0]["status"] == "SUCCEEDED", jobs


# ---- a submitted job stopped mid-sweep, then submitted again: resumes ------------------------


@pytest.mark.slow
def test_stopped_job_resubmitted_resumes(two_nodes, refs, tmp_path):
    spec, ref = refs["slow"]
    n = _n_tasks(spec)
    out = tmp_path / "out"
    proc = cli("submit", str(spec), "--address", two_nodes.dashboard, "--out", str(out), env=DRIVER_ENV)
    text, _ = finish(proc)
    job = text.split()[0]
    wait_for(lambda: stored(out) >= 3, 120, "three stored tasks")
    text, _ = finish(cli("stop", job, "--address", two_nodes.dashboard, "--wait", env=DRIVER_ENV))
    assert f"{job}: STOPPED" in text
    kept = stored(out)
    assert kept < n, "the job was stopped too late to test resume"
    # SIGTERM: the driver stored what it had and said so. Ray copies a job's output into its log
    # asynchronously, so on a loaded machine the last line can reach the log a moment after STOPPED.
    hint = "run the same command again to resume"
    logs = ""

    def hint_logged() -> bool:
        nonlocal logs
        logs, _ = finish(cli("logs", job, "--address", two_nodes.dashboard, env=DRIVER_ENV))
        return hint in logs

    try:
        wait_for(hint_logged, 30, "the driver's resume hint in the job log")
    except AssertionError:
        raise AssertionError(f"no resume hint in the job log: {logs[-2000:]}") from None
    assert not list(out.rglob("*.tmp"))

    text, err = finish(cli("submit", str(spec), "--address", two_nodes.dashboard, "--out", str(out), "--wait", env=DRIVER_ENV))
    total, ran, skipped = _summary(text)
    assert total == n and ran + skipped == n and skipped == kept
    same_results(out, ref)
    _assert_complete(out, n)


# ---- (b) the worker node dies mid-sweep: the sweep completes on the head -------------------


@pytest.mark.slow
def test_worker_node_killed_mid_sweep(two_nodes, refs, tmp_path):
    spec, ref = refs["slow"]
    n = _n_tasks(spec)
    out = tmp_path / "out"
    raylet = two_nodes.worker_raylet_pid()
    proc = cli("run", str(spec), "--address", two_nodes.gcs, "--out", str(out), "--no-progress", env=DRIVER_ENV)

    def task_running_on_worker_node() -> bool:
        # Ray titles a worker executing a task ray::<function>; the node's workers are its raylet's children
        return stored(out) >= 2 and any(cmd.startswith("ray::run_task") for _, cmd in descendants(raylet))

    wait_for(task_running_on_worker_node, 120, "a run_task on the worker node", proc)
    two_nodes.cluster.remove_node(two_nodes.worker, allow_graceful=False)
    at_kill = stored(out)
    assert not alive(raylet)
    assert at_kill < n, "the node was killed too late"

    text, _ = finish(proc, 300)
    # every task delivered (and so written) exactly once: n run, none lost, none twice
    assert _summary(text) == (n, n, 0)
    same_results(out, ref)
    _assert_complete(out, n)


# ---- an adaptive sweep (trials = "auto", issue 12): the same waves and rows on two nodes ----------


@pytest.mark.slow
def test_adaptive_sweep_on_cluster_matches_embedded(two_nodes, tmp_path):
    from test_adaptive_e2e import NAIVE_SPEC

    spec = write_spec(tmp_path, NAIVE_SPEC)
    ref = tmp_path / "ref"
    finish(cli("run", str(spec), "--out", str(ref), "--workers", "2", "--no-progress", env=DRIVER_ENV), 240)
    out = tmp_path / "out"
    text, _ = finish(cli("run", str(spec), "--address", two_nodes.gcs, "--out", str(out), "--no-progress", env=DRIVER_ENV))
    n, ran, skipped = _summary(text)
    assert n == ran == stored(ref) and skipped == 0
    same_results(out, ref)


# ---- quick: bad input, the job's command, the runtime_env (no cluster) ---------------------


def test_unreachable_address_is_one_line_exit_2(tmp_path, capsys):
    spec = write_spec(tmp_path)
    port = _free_port()  # nothing listens there
    for argv in (
        ["submit", str(spec), "--address", f"http://127.0.0.1:{port}"],
        ["status", "somejob", "--address", f"127.0.0.1:{port}"],
        ["logs", "somejob", "--address", f"http://127.0.0.1:{port}", "--follow"],
        ["stop", "somejob", "--address", f"http://127.0.0.1:{port}"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"cannot reach the Ray Jobs API at http://127.0.0.1:{port}" in err


def test_address_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # a GCS address is not the Jobs API
    assert main(["status", "j"]) == 2
    assert "no Ray Jobs address" in capsys.readouterr().err
    assert main(["status", "j", "--address", "ray://head:10001"]) == 2
    assert "not a ray:// address" in capsys.readouterr().err
    # a bad spec is refused before any connection is tried
    bad = write_spec(tmp_path, SMALL_SPEC.replace("n_cpus = [4, 16]", "n_cpus = [1, 4]"))
    assert main(["submit", str(bad), "--address", "http://127.0.0.1:1"]) == 2
    assert "n_cpus" in capsys.readouterr().err


def test_run_with_unreachable_or_wrong_address_is_one_line_exit_2(tmp_path, capsys):
    spec = write_spec(tmp_path)
    port = _free_port()
    for address, needle in (
        (f"127.0.0.1:{port}", f"cannot reach the Ray cluster at 127.0.0.1:{port}"),
        ("http://127.0.0.1:8265", "is a dashboard (Ray Jobs) URL: use `stoprace submit`"),
        ("head-without-port", "not a Ray cluster address"),
    ):
        t0 = time.monotonic()
        assert main(["run", str(spec), "--address", address, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1
        assert time.monotonic() - t0 < 10  # not ray.init's minutes of retries
        assert not (tmp_path / "o").exists()  # refused before anything is written


def test_workers_with_cluster_address_is_refused(tmp_path, capsys, monkeypatch):
    spec = write_spec(tmp_path)
    assert main(["run", str(spec), "--address", "127.0.0.1:1", "--workers", "2", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--max-in-flight" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    assert main(["run", str(spec), "--workers", "2", "--out", str(tmp_path / "o")]) == 2
    assert "$RAY_ADDRESS" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_submit_entrypoint_is_a_real_run_command():
    from sweeps.cli.submit import entrypoint

    for python in ("python", "/opt/ray env/bin/python3"):
        cmd = shlex.split(entrypoint("s.toml", "s3://b/p", python=shlex.quote(python), max_in_flight=8, retries=5,
                                     force=True))
        argv = cmd[3:]
        assert cmd[:3] == [python, "-m", "sweeps.cli"]
        args = build_parser().parse_args(argv)
        assert args.command == "run" and args.spec == "s.toml" and args.out == "s3://b/p"
        assert args.no_ship and args.no_progress and args.max_in_flight == 8 and args.retries == 5 and args.force


def test_runtime_env_for_cluster_runs(monkeypatch):
    import ray

    import cluster as cluster_pkg
    import core
    import queries
    import sweeps
    from cluster.jobs import JobsError, shipping_runtime_env
    from sweeps.errors import ClusterError
    from sweeps.runner import _cluster_runtime_env

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh `stoprace run` process
    monkeypatch.setattr("sweeps.runner.check_reachable", lambda address: None)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert _cluster_runtime_env(None, 2, None, True) is None  # embedded: nothing shipped
    env = _cluster_runtime_env("10.0.0.1:6379", None, None, True)
    dirs = {Path(m).name: Path(m) for m in env["py_modules"]}
    assert dirs == {
        "core": Path(core.__file__).parent.resolve(),
        "sweeps": Path(sweeps.__file__).parent.resolve(),
        "cluster": Path(cluster_pkg.__file__).parent.resolve(),
        "queries": Path(queries.__file__).parent.resolve(),  # queries.resultset: the rows' schema
    }
    assert "__pycache__" in env["excludes"]
    assert _cluster_runtime_env("10.0.0.1:6379", None, None, False) is None  # --no-ship
    mine = {"env_vars": {"X": "1"}}
    assert _cluster_runtime_env("10.0.0.1:6379", None, mine, True) is mine
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert _cluster_runtime_env(None, None, None, True)["py_modules"]
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")  # inside a Ray Job: the job's env applies
    assert _cluster_runtime_env(None, None, None, True) is None
    with pytest.raises(ClusterError, match="max_in_flight"):
        _cluster_runtime_env(None, 4, None, True)
    with pytest.raises(JobsError, match="not a Python package"):
        shipping_runtime_env([Path(core.__file__).parent.parent / "examples"])


def test_jobs_address_forms(monkeypatch):
    from cluster.jobs import JobsError, jobs_address

    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert jobs_address("head:8265") == "http://head:8265"
    assert jobs_address("https://head:8265/") == "https://head:8265"
    monkeypatch.setenv("RAY_ADDRESS", "http://h:8265")
    assert jobs_address(None) == "http://h:8265"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://api:8265")
    assert jobs_address(None) == "http://api:8265"
    with pytest.raises(JobsError, match="not a ray://"):
        jobs_address("ray://h:10001")


def test_auth_failures_say_how_to_fix_them():
    from cluster.jobs import JobsClient
    from sweeps.runner import connection_problem as _connection_problem

    try:
        try:
            raise RuntimeError("Failed to connect to GCS. AuthenticationError: RPC error: InvalidAuthToken: missing")
        except RuntimeError as inner:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379") from inner
    except ConnectionError as e:
        msg = _connection_problem("10.0.0.1:6379", e)
    assert "export RAY_AUTH_MODE=token" in msg and "\n" not in msg
    assert _connection_problem("h:1", ConnectionError("boom")) == "cannot connect to the Ray cluster at h:1: boom"
    c = object.__new__(JobsClient)
    c.address = "http://h:8265"
    assert "RAY_AUTH_MODE=token" in str(c._fail(RuntimeError("Authentication required: Unauthorized: Missing token"), "j"))
    assert "no job 'j'" in str(c._fail(RuntimeError("Request failed with status code 404: Job j does not exist."), "j"))
