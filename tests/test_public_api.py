"""The public Python API (issue 20 item 5): `sweeps` and `queries` export a pinned set of names, every
function among them fully typed, and importing either package stays cheap (names resolve on first use).

Like httpx's tests/test_exported_members.py: a name added to or dropped from `__all__` must be a
decision, so the lists are written out here.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PUBLIC = {
    "sweeps": ["ClusterError", "RunPlan", "RunReport", "SpecError", "StopraceError", "SweepSpec", "UsageError",
               "check_size", "load_spec", "parse_spec", "run"],
    "queries": ["Answer", "Capacity", "CapacityAnswer", "QueryError", "Replay", "StopraceError", "capacity_answer",
                "connect", "list_named", "named_answer", "run_named", "run_sql", "sql_answer"],
}


@pytest.mark.parametrize("package", PUBLIC)
def test_all_is_pinned_and_every_name_resolves(package):
    mod = import_module(package)
    assert sorted(mod.__all__) == PUBLIC[package] == sorted(set(mod.__all__))
    assert set(mod.__all__) <= set(dir(mod))
    for name in mod.__all__:
        obj = getattr(mod, name)
        home = import_module(obj.__module__)
        assert getattr(home, name) is obj, name  # the object itself, not a wrapper
    with pytest.raises(AttributeError):
        _ = mod.no_such_name


@pytest.mark.parametrize("package", PUBLIC)
def test_public_functions_are_fully_typed(package):
    mod = import_module(package)
    for name in mod.__all__:
        obj = getattr(mod, name)
        if inspect.isclass(obj):
            continue
        sig = inspect.signature(obj, eval_str=True)
        missing = [p for p, v in sig.parameters.items() if v.annotation is inspect.Parameter.empty]
        assert not missing, f"{package}.{name}: untyped {missing}"
        assert sig.return_annotation is not inspect.Signature.empty, f"{package}.{name}: no return type"


def test_sweeps_run_is_the_runner_with_its_signature():
    import sweeps
    from sweeps.runner import RunReport, run

    assert sweeps.run is run
    sig = inspect.signature(sweeps.run, eval_str=True)
    assert sig.return_annotation is RunReport
    assert {"spec", "out", "address", "num_cpus", "force"} <= set(sig.parameters)


@pytest.mark.parametrize("package, heavy", [("sweeps", ["ray", "pyarrow", "duckdb", "pydantic"]),
                                            ("queries", ["duckdb", "pyarrow", "ray"])])
def test_importing_the_package_is_cheap(package, heavy):
    code = f"import json, sys, {package}\nprint(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and json.loads(r.stdout) == [], r.stdout + r.stderr
