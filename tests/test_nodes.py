"""A node's environment as the reason a task failed (cluster.nodeenv, sweeps.nodes; issue 20 item 3).

Real errors, made the way a cluster makes them: tasks that fail on the module's embedded Ray
(a version check, a missing module), Ray's own version-mismatch refusal (its check function),
and `submit`'s preflight script run by real interpreters (this venv's; the base interpreter's,
which lacks stoprace's dependencies). tests/test_bare_cluster.py does the same on bare nodes.
"""

from __future__ import annotations

import functools
import importlib
import operator
import shlex
import subprocess
import sys

import numpy
import pyarrow
import pytest

from cluster.nodeenv import SameVersions, VersionMismatch, installed_versions, node_problem
from sweeps.errors import ClusterError
from sweeps.nodes import (
    PREFLIGHT_MARK,
    SAME_VERSIONS,
    node_failure,
    preflight_entrypoint,
    preflight_verdict,
    problem_line,
    requirements,
)

# Task functions a worker can import (one defined in this test module would itself be a module the
# worker cannot import, which node_problem would rightly call a missing module).
_double = functools.partial(operator.mul, 2)
_needs_missing_module = importlib.import_module  # the task is the module's name
_bug = int  # int("x"): ValueError, a bug and not the environment


def test_same_versions_checks_once_per_process(monkeypatch):
    ours = installed_versions(SAME_VERSIONS)
    assert ours == {"numpy": numpy.__version__, "pyarrow": pyarrow.__version__}
    assert SameVersions(_double, ours)(21) == 42
    other = dict(ours, numpy="1.0.0")
    with pytest.raises(VersionMismatch) as e:
        SameVersions(_double, other)(1)
    assert e.value.theirs == ours and e.value.ours == other
    assert f"numpy {numpy.__version__}" in str(e.value) and "the driver numpy 1.0.0" in str(e.value)
    calls = []
    monkeypatch.setattr("cluster.nodeenv.installed_versions", lambda names: calls.append(names) or dict(ours))
    f = SameVersions(_double, {"numpy": ours["numpy"], "pyarrow": ours["pyarrow"]})
    assert [f(i) for i in range(3)] == [0, 2, 4] and len(calls) <= 1  # matched already above: no re-check


def _fail(fn, *args):
    from cluster.executor import run_map

    with pytest.raises(Exception) as e:
        run_map(fn, [*args], on_result=lambda t, r: None, progress=False, retries=0)
    return e.value


def test_task_failures_on_a_worker_are_recognised(ray_session):
    ours = installed_versions(SAME_VERSIONS)
    driver = dict(ours, pyarrow="12.0.0")  # as if the driver had pyarrow 12: this worker differs
    p = node_problem(_fail(SameVersions(_double, driver), 1))
    assert p is not None and p.kind == "versions" and p.theirs == ours and p.ours == driver and p.node
    line = problem_line(p)
    assert f"has numpy {ours['numpy']}, pyarrow {ours['pyarrow']} but this driver" in line
    assert "pip install pyarrow==12.0.0 on every node" in line and "numpy==" not in line

    p = node_problem(_fail(_needs_missing_module, "stoprace_no_such_module"))
    assert p is not None and p.kind == "missing" and p.module == "stoprace_no_such_module"
    assert "cannot import stoprace_no_such_module" in problem_line(p)

    assert node_problem(_fail(_bug, "x")) is None  # a bug keeps its traceback
    assert node_problem(ModuleNotFoundError("No module named 'x'", name="x")) is None  # raised here, not by a node


def test_missing_module_lines_name_the_fix():
    from cluster.nodeenv import NodeProblem

    shipped = problem_line(NodeProblem("missing", node="10.0.0.7", module="sweeps"))
    assert "on node 10.0.0.7 cannot import sweeps" in shipped and "--no-ship" in shipped
    pyarrow_req = next(r for r in requirements() if r.startswith("pyarrow"))
    third = problem_line(NodeProblem("missing", module="pyarrow.lib"))
    assert f"pip install '{pyarrow_req}'" in third and "stoprace submit --pip" in third
    e = node_failure(NodeProblem("missing", module="numpy"), out="results/x", kept=3, n_tasks=8)
    assert isinstance(e, ClusterError) and str(e).endswith("; 3 of 8 tasks are stored in results/x (the same command resumes)")
    assert "\n" not in str(e)


def test_another_ray_is_recognised_from_rays_own_refusal():
    import ray
    from ray._private.utils import check_version_info

    with pytest.raises(RuntimeError) as e:
        check_version_info({"ray_version": "2.58.0", "python_version": "3.11.7"}, "node 10.0.0.7")
    p = node_problem(e.value)
    assert p is not None and p.kind == "ray"
    assert p.theirs == {"ray": "2.58.0", "python": "3.11.7"} and p.ours["ray"] == ray.__version__
    line = problem_line(p)
    assert line.startswith(f"the cluster runs Ray 2.58.0 on Python 3.11.7, this driver Ray {ray.__version__}")
    assert f"pip install 'ray[default]=={ray.__version__}'" in line


def _preflight(python: str) -> tuple[str, int]:
    p = subprocess.run(shlex.split(preflight_entrypoint(python)), capture_output=True, text=True, timeout=120)
    return p.stdout + p.stderr, p.returncode


def test_preflight_passes_this_venv_and_refuses_an_interpreter_without_the_dependencies():
    logs, rc = _preflight(shlex.quote(sys.executable))
    assert rc == 0 and logs.count(PREFLIGHT_MARK) == 1
    assert preflight_verdict("PY", logs, ship=True, exit_code=rc) == "PY"

    base = getattr(sys, "_base_executable", sys.executable)
    probe = subprocess.run([base, "-c", "import ray"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip(f"{base} has Ray: not an interpreter without the dependencies")
    logs, rc = _preflight(shlex.quote(base))
    with pytest.raises(ClusterError) as e:
        preflight_verdict(base, logs, ship=True, exit_code=rc)
    msg = str(e.value)
    assert "lacks stoprace's dependencies" in msg and "ray[default]" in msg and "is not installed" in msg
    assert "--pip" in msg and "--python CMD" in msg and "\n" not in msg


def test_preflight_verdicts_without_the_line():
    with pytest.raises(ClusterError, match="no such command on the head node"):
        preflight_verdict("nopython", "/bin/sh: 1: nopython: not found\n", ship=True, exit_code=127)
    line = PREFLIGHT_MARK + '{"python": "/p", "version": "3.11.7", "missing": [], "wrong": [], ' \
        '"stoprace": "ModuleNotFoundError: No module named \'sweeps\'"}'
    with pytest.raises(ClusterError, match="cannot import stoprace .*leave out --no-ship"):
        preflight_verdict("/p", line, ship=False, exit_code=0)
    wrong = PREFLIGHT_MARK + '{"python": "/p", "version": "3.11.7", "missing": [], ' \
        '"wrong": ["pyarrow 12.0.0 (needs pyarrow>=14)"], "stoprace": null}'
    with pytest.raises(ClusterError, match=r"pyarrow 12.0.0 \(needs pyarrow>=14\): pip install 'pyarrow>=14' there"):
        preflight_verdict("/p", wrong, ship=True, exit_code=0)
