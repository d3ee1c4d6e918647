"""One error root (issue 9, item 5): every user-facing error is a StopraceError (one line, exit 2);
anything else is a bug that keeps its traceback (exit 1).

In the spirit of httpx's `_exceptions.py` and its exported-members test: walk every module of
our packages, and every name the packages export, and check each public error class.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cluster
import core
import queries
import sweeps
from core.errors import ParamError, StopraceError
from sweeps.cli import main

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"

# Exceptions that are not errors: Ctrl-C during a run is reported by `run` itself (exit 130).
NOT_ERRORS = {"sweeps.runner.SweepInterrupted",
              # internal: the late sampler's numerics giving up on a point, which then runs naive
              "core.estimators.late.errors.Unrepresentable"}


def _modules(pkg) -> list[str]:
    return [pkg.__name__] + [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]


def _public_exception_classes(pkg) -> dict[str, type]:
    """Every exception class a module of `pkg` defines (not imports) under a public name."""
    found = {}
    for name in _modules(pkg):
        mod = importlib.import_module(name)
        for attr, obj in vars(mod).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == name
                    and not attr.startswith("_")):
                found[f"{name}.{attr}"] = obj
    return found


def test_every_public_error_of_ours_derives_from_stoprace_error():
    classes = {}
    for pkg in (core, sweeps, queries):
        classes.update(_public_exception_classes(pkg))
    # the ones the issue names must be among those found (else the walk itself is broken)
    for expected in ("core.errors.ParamError", "sweeps.spec.SpecError", "queries.resultset.errors.StoreError",
                     "queries.db.QueryError", "sweeps.errors.UsageError", "sweeps.errors.ClusterError"):
        assert expected in classes
    wrong = [n for n, c in classes.items() if n not in NOT_ERRORS and not issubclass(c, StopraceError)]
    assert not wrong, f"public error classes outside the StopraceError root: {wrong}"
    # none of them is a ValueError any more: main() must not catch an internal ValueError by accident
    assert not [n for n, c in classes.items() if issubclass(c, (ValueError, OSError))]


def test_exported_errors_derive_from_the_root():
    for pkg in (sweeps, queries):
        exported = [getattr(pkg, n) for n in pkg.__all__]
        errors = [e for e in exported if inspect.isclass(e) and issubclass(e, BaseException)]
        assert StopraceError in errors
        assert all(issubclass(e, StopraceError) for e in errors), (pkg.__name__, errors)


def test_cluster_errors_stay_ours_free_and_are_translated(stoprace):
    """cluster imports nothing of ours, so its JobsError is a plain Exception that sweeps translates."""
    from cluster.jobs import JobsError

    classes = _public_exception_classes(cluster)
    assert "cluster.jobs.JobsError" in classes
    assert not [n for n, c in classes.items() if issubclass(c, StopraceError)]
    assert not issubclass(JobsError, ValueError)
    # a JobsError inside the command
    assert "ray://" in stoprace("status", "--address", "ray://head:10001").one_line_error("status")


@pytest.mark.parametrize(
    "argv, kind",
    [
        (["simulate", "--n-cpus", "0", "--trials", "10"], "--n-cpus 0"),  # ParamError (core), named as the option
        (["simulate", "--seed", "-1", "--trials", "10"], "--seed"),  # UsageError
        (["run", "no-such-spec.toml"], "no such spec file"),  # SpecError
        (["query", "no-such-dir", "--sql", "select 1"], "does not exist"),  # QueryError
        (["run", "FIXTURE/spec.toml", "--out", "FIXTURE/points/task-000000.parquet"], "not a directory"),  # StoreError
        (["run", "FIXTURE/spec.toml", "--address", "http://127.0.0.1:8265"], "dashboard"),  # ClusterError
    ],
)
def test_user_errors_are_one_line_and_exit_2(argv, kind, stoprace):
    argv = [a.replace("FIXTURE", str(FIXTURES / "release1-naive")) for a in argv]
    assert kind in stoprace(*argv).one_line_error(argv[0])


def test_param_error_is_the_one_make_params_raises():
    from core.params import make_params

    with pytest.raises(ParamError, match="n_cpus"):
        make_params({"n_cpus": 1})
    with pytest.raises(ParamError, match="unknown parameter"):
        make_params({"n_cpu": 4})


def test_internal_value_error_in_a_command_propagates(monkeypatch):
    """main() catches StopraceError only: a ValueError from inside is a bug and is not swallowed."""
    import core.vectorized as vectorized

    def boom(*a, **k):
        raise ValueError("operands could not be broadcast together with shapes (3,) (4,)")

    monkeypatch.setattr(vectorized, "shard_seed", boom)
    with pytest.raises(ValueError, match="broadcast"):
        main(["simulate", "--trials", "10"])
    monkeypatch.setattr(vectorized, "shard_seed", lambda *a, **k: (_ for _ in ()).throw(FileNotFoundError(2, "gone", "x")))
    with pytest.raises(FileNotFoundError):
        main(["simulate", "--trials", "10"])


@pytest.mark.parametrize("exc", ["ValueError('operands could not be broadcast')", "FileNotFoundError(2, 'gone', 'x')"])
def test_internal_error_exits_1_with_its_traceback(exc):
    """The console script (`sys.exit(main())`) shows the bug's traceback and exits 1, not a user-error line."""
    code = (
        "import sys, core.vectorized as m\n"
        f"def boom(*a, **k): raise {exc}\n"
        "m.shard_seed = boom\n"
        "from sweeps.cli import main\n"
        "sys.exit(main(['simulate', '--trials', '10']))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "Traceback (most recent call last)" in r.stderr
    assert exc.split("(")[0] in r.stderr.strip().splitlines()[-1]
    assert "stoprace simulate: error" not in r.stderr


def test_damaged_points_file_in_replay_is_one_line(tmp_path, stoprace):
    """A damaged file is reported in one warning line and left out; the error is one more line, no traceback."""
    d = tmp_path / "r"
    shutil.copytree(FIXTURES / "release1-naive", d)
    f = sorted((d / "points").glob("task-*.parquet"))[3]
    f.write_bytes(f.read_bytes()[:500])
    r = stoprace("replay", d, "--point", "0" * 16, "--shard", "0", "--trial", "0")
    assert r.rc == 2 and "Traceback" not in r.err
    warning, error = r.err.splitlines()
    assert warning.startswith("stoprace replay: warning: ") and "points/task-000003.parquet is unreadable" in warning
    assert error.startswith("stoprace replay: error: point '0000000000000000' is not in")
