"""The engine stands alone (issue 20 item 4): what runs a sweep imports no DuckDB and no FastAPI.

The import-linter contract in pyproject.toml checks the static import graph; these tests check
what a real process loads (a package's __init__ runs on any import of one of its modules, which
the graph does not show), and that the contract lists every engine module.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

import sweeps

from sweep_helpers import write_spec

ROOT = Path(__file__).resolve().parents[1]
FRONT = ("duckdb", "fastapi", "starlette", "uvicorn")
FRONT_DOORS = ("sweeps.cli", "sweeps.serve")


def _engine_modules() -> list[str]:
    return sorted(f"sweeps.{m.name}" for m in pkgutil.iter_modules(sweeps.__path__)
                  if f"sweeps.{m.name}" not in FRONT_DOORS)


def test_the_contract_lists_every_engine_module():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (engine,) = [c for c in contracts if c["name"].startswith("the engine")]
    listed = set(engine["source_modules"])
    assert {"core", "cluster", "queries.resultset"} <= listed
    assert sorted(m for m in listed if m.startswith("sweeps.")) == _engine_modules()
    assert set(FRONT) | set(FRONT_DOORS) <= set(engine["forbidden_modules"])


def _loaded(code: str, watch: tuple[str, ...] = FRONT) -> list[str]:
    code += f"\nimport json, sys\nprint(json.dumps(sorted(m for m in {watch!r} if m in sys.modules)))\n"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_importing_the_whole_engine_loads_no_duckdb_or_fastapi():
    mods = ["core.estimators", "cluster.executor", "cluster.jobs", "queries.resultset.writer",
            "queries.resultset.reader", *_engine_modules()]
    assert _loaded("import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in mods)) == []


@pytest.mark.slow
def test_stoprace_run_loads_no_duckdb(tmp_path):
    """A real `stoprace run` (embedded Ray, one worker) from start to stored rows, in a fresh process.
    (Ray itself imports starlette when it is installed, for its serializers: not watched here.)"""
    spec = write_spec(tmp_path)
    out = tmp_path / "out"
    code = ("from sweeps.cli import main\n"
            f"rc = main(['run', {str(spec)!r}, '--out', {str(out)!r}, '--workers', '1', '--no-progress'])\n"
            "assert rc == 0, rc")
    assert _loaded(code, ("duckdb", "fastapi", "uvicorn")) == []
    from queries.resultset.reader import ResultSet

    assert ResultSet.open(out).check().complete  # it did run the sweep
