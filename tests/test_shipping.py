"""What a Ray worker imports is exactly what a cluster run ships (issue 20 item 1).

A node with only stoprace's third-party dependencies imports our code from the packages
shipped as runtime_env py_modules (sweeps.nodes.SHIPPED_PACKAGES). A worker that imports a
first-party module outside that list fails there with ModuleNotFoundError (it did: `queries`
was not shipped by `run --address`), and one that loads DuckDB or FastAPI pays for (and needs)
the query layer or the web service. Checked in a fresh interpreter that does what a worker
does: imports sweeps.shard and cluster.executor, unpickles the task function and tasks the
driver sends (with Ray's cloudpickle, as Ray does) and runs them, once per estimator.
tests/test_bare_cluster.py runs the same on real bare nodes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.estimators import ESTIMATORS
from sweeps.nodes import SHIPPED_PACKAGES, package_dirs

ROOT = Path(__file__).resolve().parents[1]
NOT_ON_A_WORKER = ("duckdb", "fastapi", "uvicorn", "matplotlib")
# (not pandas: pyarrow itself imports it on its first conversion whenever it is installed, as the test extra
# installs it for tests/test_outside_readers.py; it is no runtime dependency, and test_bare_cluster.py runs
# workers in a venv without it)

SPEC = """
name = "shipping"
seed = 3
trials = 200
shard_trials = 100
estimator = "{estimator}"

[axes]
n_cpus = [4, 64]
wait = [0, 1]
"""

# What the worker process runs: the imports a Ray worker does, then the shipped function on
# every task, then a report of what got loaded (first-party = a file of this repo, outside venvs).
WORKER = """
import json, sys
root = sys.argv[1]
import sweeps.shard, cluster.executor
import ray.cloudpickle as cp
fn, tasks = cp.loads(sys.stdin.buffer.read())
rows = sum(fn(t)[0].points.num_rows for t in tasks)
first_party = sorted(
    name for name, m in list(sys.modules.items())
    if (getattr(m, "__file__", None) or "").startswith(root) and "/.venv" not in m.__file__
    and "-venv/" not in m.__file__
)
print(json.dumps({"rows": rows, "first_party": first_party, "loaded": sorted(sys.modules)}))
"""


def _worker_imports(tmp_path: Path, estimator: str) -> dict:
    import functools

    import ray.cloudpickle as cp

    from cluster.executor import _timed
    from cluster.nodeenv import SameVersions, installed_versions
    from sweeps.grid import iter_tasks
    from sweeps.nodes import SAME_VERSIONS
    from sweeps.shard import run_task
    from sweeps.spec import load_spec

    spec_file = tmp_path / f"{estimator}.toml"
    spec_file.write_text(SPEC.format(estimator=estimator))
    spec = load_spec(spec_file)
    tasks = list(iter_tasks(spec))
    # the same callable run_map hands to ray.remote (sweeps.runner builds the partial)
    fn = _timed(SameVersions(functools.partial(run_task, sweep=spec.name, estimator=spec.estimator),
                             installed_versions(SAME_VERSIONS)))
    payload = cp.dumps((fn, tasks))
    # -I: isolated (no cwd, no user site, no PYTHONPATH); the repo goes on sys.path as py_modules put it
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); exec({WORKER!r})"
    p = subprocess.run([sys.executable, "-I", "-c", code, str(ROOT)], input=payload, capture_output=True,
                       timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stderr.decode()[-3000:]
    found = json.loads(p.stdout)
    assert found["rows"] == spec.n_points * 2  # 2 shards per point: the tasks really ran
    return found


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))  # every registered one: a new estimator is covered
def test_a_worker_imports_only_shipped_packages_and_no_duckdb(tmp_path, estimator):
    found = _worker_imports(tmp_path, estimator)
    outside = [m for m in found["first_party"] if m.split(".")[0] not in SHIPPED_PACKAGES]
    assert not outside, f"a worker imports first-party modules that are not shipped: {outside}"
    # the check sees what it must: the packages a task needs are among those found
    assert {"sweeps.shard", "cluster.executor", "core.vectorized", "queries.resultset.schema"} <= set(found["first_party"])
    loaded = [m for m in NOT_ON_A_WORKER if m in found["loaded"]]
    assert not loaded, f"a worker loads {loaded}"


def test_run_and_submit_ship_the_same_package_dirs(tmp_path, monkeypatch):
    """`run --address` (runner._cluster_runtime_env) and `submit` (its job's runtime_env) upload one list."""
    import ray

    import sweeps.cli.submit as submit_mod
    from sweeps.cli import main
    from sweeps.runner import _cluster_runtime_env

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr("sweeps.runner.check_reachable", lambda address: None)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    run_dirs = _cluster_runtime_env("10.0.0.1:6379", None, None, True)["py_modules"]

    sent = {}

    class FakeClient:
        address = "http://head:8265"

        def __init__(self, address):
            pass

        def head_python(self):
            return "/opt/ray env/bin/python"

        def submit(self, entrypoint, *, runtime_env, submission_id, metadata):
            sent.update(runtime_env=runtime_env, entrypoint=entrypoint)
            return submission_id

    monkeypatch.setattr("cluster.jobs.JobsClient", FakeClient)
    monkeypatch.setattr(submit_mod, "preflight", lambda client, job_id, python, *a, **k: python)
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC.format(estimator="naive"))
    assert main(["submit", str(spec), "--address", "http://head:8265"]) == 0
    job_dirs = sent["runtime_env"]["py_modules"]
    import shlex

    assert shlex.split(sent["entrypoint"])[:3] == ["/opt/ray env/bin/python", "-m", "sweeps.cli"]  # the head's Python
    expected = [str(d) for d in package_dirs()]
    assert sorted(run_dirs) == sorted(job_dirs) == sorted(expected)
    # each shipped dir is the package of that name in this checkout
    assert sorted(Path(d).name for d in expected) == sorted(SHIPPED_PACKAGES)
    assert all(Path(d).parent == ROOT for d in expected)


def test_queries_package_is_lazy_but_complete():
    """`import queries` loads no DuckDB; `queries.connect`, `from queries import QueryError` still work."""
    code = (
        "import sys, queries; assert 'duckdb' not in sys.modules, 'import queries loaded duckdb'; "
        "from queries import QueryError; import queries.db; assert queries.connect is queries.db.connect; "
        "assert QueryError is queries.db.QueryError; assert 'connect' in dir(queries); "
        "import core.errors; assert queries.StopraceError is core.errors.StopraceError; "
        "assert {'QueryError', 'StopraceError', 'connect'} <= set(queries.__all__); "
        "\ntry:\n    queries.nosuch\nexcept AttributeError as e:\n    assert 'nosuch' in str(e)\nelse:\n    raise SystemExit(1)"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 0, p.stderr
