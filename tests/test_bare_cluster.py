"""Bare cluster nodes, as README's cluster section promises them (issue 20 items 2-3).

The nodes run from a virtualenv with stoprace's third-party dependencies and not stoprace
(tests/bare_cluster.py builds and caches it), started with `ray start`; the drivers run from
this project's venv in a directory that is not the checkout (Ray adds a driver's working
directory to its workers' sys.path, which on one machine would hide a missing package):

- `stoprace run --address` and `stoprace submit --wait` (no --python) succeed and store the
  rows of an embedded run; the head's PATH has a `python` without Ray, so the job only works
  because submit runs it with the interpreter Ray runs on the head;
- environment failures end in one line naming the cause and the fix, exit 2: the code not on
  the nodes (`run --no-ship`), an interpreter without the dependencies or without stoprace
  (`submit`'s preflight), a worker node joining mid-run with another numpy/pyarrow or without
  pyarrow (every task finished before is kept, and the same command resumes to the embedded
  rows), a cluster running another Ray (refused at connect, nothing written).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from bare_cluster import BareCluster, bare_venv, node_env, overlay_venv

from sweeps.grid import iter_tasks
from sweeps.spec import load_spec

from sweep_helpers import ROOT, race_spec, read_dir, same_results, stored, wait_for, without_wall, write_spec

pytestmark = pytest.mark.slow

DRIVER_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": ""}

SPEC = """
name = "bare-small"
seed = 5
trials = 3000
shard_trials = 1000
task_seconds = 0.05

[base]
p_unresponsive = 0.002
stall_median_us = 1.0e6
stall_sigma = 0.05

[axes]
n_cpus = [4, 16]
p_stall = [0.05, 0.5]
wait = [0, 1]
"""

# ~40 tasks of ~1 s: long enough on a 1-CPU head for a worker node to join part-way (twice)
SLOW = race_spec("bare-slow", 17, 120000, 12000, 1.0)

OLD_NUMPY, OLD_PYARROW = "2.3.5", "25.0.1"
"""Releases other than the driver's, installable here (the machine's package index has them)."""
OLD_RAY = "2.58.0"


def drive(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """`stoprace ARGS` from this project's venv, in `cwd` (not the checkout)."""
    return subprocess.run([sys.executable, "-m", "sweeps.cli", *args], cwd=cwd, env=dict(os.environ, **DRIVER_ENV),
                          capture_output=True, text=True, timeout=timeout)


def start(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sweeps.cli", *args], cwd=cwd, env=dict(os.environ, **DRIVER_ENV),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def ok(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 0, f"rc {p.returncode}: {p.stderr[-3000:]}"
    return p.stdout


def one_line(p: subprocess.CompletedProcess | tuple[int, str], command: str) -> str:
    """Exit 2 and the CLI's one error line, which ends stderr; no traceback of the driver's own.

    Lines a worker printed (Ray prefixes them with `(run_task pid=...)`) are Ray's echo of the
    worker's log, not the driver's output."""
    rc, err = (p.returncode, p.stderr) if isinstance(p, subprocess.CompletedProcess) else p
    assert rc == 2, f"rc {rc}: {err[-3000:]}"
    own = [ln for ln in err.splitlines() if ln.strip() and "pid=" not in ln]
    prefix = f"stoprace {command}: error: "
    assert own and own[-1].startswith(prefix), err[-3000:]
    assert not any("Traceback" in ln for ln in own), err[-3000:]
    assert sum(ln.startswith(prefix) for ln in own) == 1
    return own[-1][len(prefix):]


@pytest.fixture(scope="module")
def venv() -> Path:
    return bare_venv()


@pytest.fixture(scope="module")
def cluster(venv, tmp_path_factory):
    c = BareCluster(venv, tmp_path_factory.mktemp("bare-nodes"))
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def here(tmp_path_factory) -> Path:
    """Where the drivers run: not the checkout."""
    return tmp_path_factory.mktemp("driver")


@pytest.fixture(scope="module")
def refs(here):
    """Embedded runs: the rows every cluster run must reproduce."""
    out = {}
    for name, text in (("small", SPEC), ("slow", SLOW)):
        spec = write_spec(here, text, f"{name}.toml")
        ref = here / f"ref-{name}"
        ok(drive("run", str(spec), "--out", str(ref), "--workers", "2", "--no-progress", cwd=here, timeout=600))
        out[name] = (spec, ref)
    return out


def test_a_cluster_running_another_ray_is_refused_at_connect(venv, tmp_path, here):
    spec = write_spec(tmp_path, SPEC)
    old_ray = overlay_venv(venv, pins=(f"ray[default]=={OLD_RAY}",))
    c = BareCluster(old_ray, tmp_path / "nodes", workers=())
    try:
        import ray

        out = here / "old-ray-out"
        msg = one_line(drive("run", str(spec), "--address", c.gcs, "--out", str(out), "--no-progress", cwd=here), "run")
        assert f"the cluster runs Ray {OLD_RAY}" in msg and f"this driver Ray {ray.__version__}" in msg
        assert f"pip install 'ray[default]=={ray.__version__}'" in msg
        assert not out.exists()  # refused before anything is written
    finally:
        c.stop()


def test_the_nodes_are_bare(venv, cluster):
    """What the test claims: the nodes' venv lacks stoprace, and `python` on the head's PATH lacks Ray."""
    p = subprocess.run([str(venv / "bin" / "python"), "-c", "import sweeps"], cwd=cluster.cwd, env=cluster.env,
                       capture_output=True, text=True)
    assert p.returncode != 0 and "No module named 'sweeps'" in p.stderr
    python = shutil.which("python", path=cluster.env["PATH"]) or shutil.which("python3", path=cluster.env["PATH"])
    if python is not None:
        p = subprocess.run([python, "-c", "import ray"], cwd=cluster.cwd, env=cluster.env, capture_output=True)
        assert p.returncode != 0, f"{python} on the nodes' PATH has Ray: the default --python is not exercised"
    assert str(ROOT) not in cluster.env["PATH"] and "PYTHONPATH" not in cluster.env


def test_run_and_submit_on_bare_nodes_store_the_embedded_rows(cluster, refs, here, venv):
    spec, ref = refs["small"]
    out = here / "run"
    n = sum(1 for _ in iter_tasks(load_spec(spec)))
    text = ok(drive("run", str(spec), "--address", cluster.gcs, "--out", str(out), "--no-progress", cwd=here))
    assert f"{n} tasks ({n} run, 0 already stored)" in text
    same_results(out, ref)

    sub = here / "sub"
    p = drive("submit", str(spec), "--address", cluster.dashboard, "--out", str(sub), "--wait", cwd=here, timeout=600)
    ok(p)
    job = p.stdout.splitlines()[0].strip()
    assert f"job {job} SUCCEEDED" in p.stderr and f"{n} tasks ({n} run, 0 already stored)" in p.stdout
    same_results(sub, ref)
    info = json.loads(ok(drive("status", job, "--address", cluster.dashboard, "--json", cwd=here)))
    # the job ran with the interpreter Ray runs on the head, not the first `python` on its PATH
    assert info["entrypoint"].split()[:3] == [str(venv / "bin" / "python"), "-m", "sweeps.cli"]


def test_environment_problems_are_one_line_exit_2(cluster, refs, here):
    spec, _ = refs["small"]
    # the code not shipped to nodes that lack it
    out = here / "noship"
    msg = one_line(drive("run", str(spec), "--address", cluster.gcs, "--out", str(out), "--no-progress", "--no-ship",
                         cwd=here), "run")
    n = sum(1 for _ in iter_tasks(load_spec(spec)))
    assert "cannot import sweeps" in msg and "--no-ship" in msg and f"0 of {n} tasks are stored" in msg
    assert stored(out) == 0

    # submit's preflight: an interpreter without the dependencies (the machine's own Python)
    other = shutil.which("python3", path=node_env()["PATH"])
    assert other is not None
    msg = one_line(drive("submit", str(spec), "--address", cluster.dashboard, "--out", str(here / "x"),
                         "--python", other, cwd=here), "submit")
    assert "lacks stoprace's dependencies" in msg and "--pip" in msg and "ray[default]" in msg
    msg = one_line(drive("submit", str(spec), "--address", cluster.dashboard, "--out", str(here / "x"),
                         "--python", "no-such-python", cwd=here), "submit")
    assert "no such command on the head node" in msg
    # stoprace itself neither shipped nor installed
    msg = one_line(drive("submit", str(spec), "--address", cluster.dashboard, "--out", str(here / "x"), "--no-ship",
                         cwd=here), "submit")
    assert "cannot import stoprace" in msg and "--no-ship" in msg
    assert not (here / "x").exists()  # no sweep job ran


def _stored_rows_match(out: Path, ref: Path) -> None:
    """Every row stored in `out` is the embedded run's row of that (point, shard)."""
    import pyarrow.compute as pc

    mine, theirs = without_wall(read_dir(out)), without_wall(read_dir(ref))
    keys = pc.binary_join_element_wise(mine["point_id"], pc.cast(mine["shard"], "string"), "/")
    ref_keys = pc.binary_join_element_wise(theirs["point_id"], pc.cast(theirs["shard"], "string"), "/")
    assert theirs.filter(pc.is_in(ref_keys, value_set=keys)).equals(mine)


def test_worker_nodes_with_other_or_missing_packages_end_the_run_keeping_its_tasks(cluster, refs, here, venv,
                                                                                    tmp_path):
    """Runs last in this module: it leaves the cluster with its head only (the other workers stopped)."""
    import numpy
    import pyarrow

    spec, ref = refs["slow"]
    old = overlay_venv(venv, pins=(f"numpy=={OLD_NUMPY}", f"pyarrow=={OLD_PYARROW}"))
    no_arrow = overlay_venv(venv, drop=("pyarrow",))
    for w in list(cluster.procs[1:]):
        cluster.stop_node(w)  # the head alone: tasks finish there before a bad node joins
    out = here / "skew"
    kept = 0
    for bad, needle in ((old, f"has numpy {OLD_NUMPY}, pyarrow {OLD_PYARROW} but this driver numpy "
                               f"{numpy.__version__}, pyarrow {pyarrow.__version__}"),
                        (no_arrow, "cannot import pyarrow")):
        proc = start("run", str(spec), "--address", cluster.gcs, "--out", str(out), "--no-progress",
                     "--max-in-flight", "4", cwd=here)
        wait_for(lambda k=kept: stored(out) >= k + 2, 240, "two more stored tasks", proc)
        node = cluster.add_worker(bad)
        try:
            _, err = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        msg = one_line((proc.returncode, err), "run")
        assert needle in msg, msg
        n_kept = stored(out)
        assert n_kept >= kept + 2 and f"{n_kept} of " in msg and "tasks are stored" in msg
        _stored_rows_match(out, ref)  # what was kept is exactly the embedded run's
        kept = n_kept
        cluster.stop_node(node)
        if bad is old:
            assert "pip install numpy==" in msg and f"pyarrow=={pyarrow.__version__}" in msg
        else:
            assert "pip install 'pyarrow>=" in msg and "--pip" in msg
    # the same command on a good cluster resumes: runs only what is missing, and equals the embedded run
    text = ok(drive("run", str(spec), "--address", cluster.gcs, "--out", str(out), "--no-progress", cwd=here,
                    timeout=600))
    assert f"{kept} already stored" in text
    same_results(out, ref)
