"""What cluster nodes need to run a sweep, checked before it runs and explained when it fails.

README ("Running on a cluster") promises that nodes need only the driver's Ray and Python and
stoprace's third-party dependencies (`requirements()`): the code itself is shipped
(`SHIPPED_PACKAGES`). When a node breaks that promise, the run must end with one
line that names the cause and the fix, keep every finished task, and exit 2 (a ClusterError),
instead of a Ray traceback and exit 1. Both doors use this module:

- `stoprace run --address` (sweeps.runner): a task that fails on a worker for an environment
  reason (cluster.nodeenv.node_problem: a module missing, numpy/pyarrow other than the driver's,
  the runtime_env not set up) ends the run through `node_failure`; another Ray or Python on the
  cluster is refused at connect through `connect_problem`;
- `stoprace submit` (sweeps.cli.submit): before the sweep's job, a preflight job runs
  `preflight_entrypoint` with the job's interpreter and runtime_env (about a second once Ray has
  the shipped packages cached) and `preflight_verdict` refuses an interpreter that lacks a
  dependency, or stoprace itself with --no-ship, the same way.
"""

from __future__ import annotations

import json
import re
import shlex
from functools import cache
from pathlib import Path

from cluster.nodeenv import NodeProblem, describe_versions
from sweeps.errors import ClusterError

SHIPPED_PACKAGES = ("core", "sweeps", "cluster", "queries")
"""Every first-party package a Ray worker imports, the one list `run --address` and `submit` ship to nodes
that have only the third-party dependencies: sweeps.shard.run_task, core (the model), cluster.executor (the
task wrapper), queries.resultset (the rows' schema; `queries` itself loads no DuckDB). A Ray Job's driver
(`submit`) runs the whole CLI, which needs nothing more. tests/test_shipping.py checks the import closure."""

SAME_VERSIONS = ("numpy", "pyarrow")
"""Distributions a worker must have in the driver's exact version: NumPy makes the random streams
and the arithmetic of every row, pyarrow builds the tables the driver stores; other versions may
give other rows without failing (cluster.nodeenv.SameVersions refuses the task instead)."""

PREFLIGHT_MARK = "stoprace-preflight: "
"""Prefix of the preflight's one output line (JSON) in the job's log."""


@cache
def requirements() -> tuple[str, ...]:
    """stoprace's third-party runtime requirements (PEP 508 strings, no extras): what the nodes need.

    From the installed distribution's metadata; from pyproject.toml beside the packages when
    stoprace runs from a source tree that is not installed.
    """
    from importlib.metadata import PackageNotFoundError, requires

    try:
        reqs = requires("stoprace") or []
        return tuple(r for r in reqs if "extra ==" not in r)
    except PackageNotFoundError:
        pass
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    with open(pyproject, "rb") as f:
        return tuple(tomllib.load(f)["project"]["dependencies"])


def package_dirs(names: tuple[str, ...] = SHIPPED_PACKAGES) -> list[Path]:
    """The directories of this stoprace's packages, as shipped to a cluster."""
    from importlib import import_module

    return [Path(str(import_module(n).__file__)).resolve().parent for n in names]


def _name(req: str) -> str:
    """The distribution a requirement string names, normalized (PEP 503)."""
    return re.sub(r"[-_.]+", "-", re.split(r"[\s<>=!~;\[(]", req.strip(), maxsplit=1)[0]).lower()


def requirement_for(module: str) -> str | None:
    """The requirement (e.g. ``pyarrow>=14``) that provides top-level `module`, if stoprace needs one."""
    from importlib.metadata import packages_distributions

    dists = {_name(d) for d in packages_distributions().get(module, [module])}
    for r in requirements():
        if _name(r) in dists:
            return r.split(";")[0].strip()
    return None


def _pip(reqs: list[str]) -> str:
    return "pip install " + " ".join(shlex.quote(r) for r in reqs)


def problem_line(p: NodeProblem) -> str:
    """The cause and its fix, for a node environment problem (no trailing period)."""
    on = f"on node {p.node} " if p.node else ""
    if p.kind == "missing":
        top = p.top_module or "?"
        if top in SHIPPED_PACKAGES:
            return (f"a worker {on}cannot import {p.module}: stoprace's code is not on the nodes; run without "
                    f"--no-ship to ship it with the run, or pip install stoprace on every node")
        req = requirement_for(top)
        what = _pip([req]) if req else f"install the package that provides {top}"
        return (f"a worker {on}cannot import {p.module}: the nodes need stoprace's third-party dependencies; "
                f"{what} on every node, or submit the sweep as a Ray Job with `stoprace submit --pip` "
                f"(Ray installs them per job)")
    if p.kind == "versions":
        ours = p.ours or {}
        pins = [f"{k}=={v}" for k, v in ours.items() if v and (p.theirs or {}).get(k) != v]
        return (f"a worker {on}has {describe_versions(p.theirs or {})} but this driver "
                f"{describe_versions(ours)} (the rows depend on them): {_pip(pins)} on every node")
    if p.kind == "ray":
        ray_v = (p.ours or {}).get("ray")
        return (f"the cluster runs Ray {(p.theirs or {}).get('ray')} on Python {(p.theirs or {}).get('python')}, "
                f"this driver Ray {ray_v} on Python {(p.ours or {}).get('python')}: Ray needs the same versions "
                f"everywhere; pip install 'ray[default]=={ray_v}' on the nodes (and the same Python), or run the "
                f"cluster's versions here")
    return f"a node {on}could not set up the run's runtime_env: {p.detail}"


def node_failure(p: NodeProblem, *, out: object, kept: int, n_tasks: int | None) -> ClusterError:
    """A task failed for an environment reason: one line with the cause, the fix and what was kept."""
    total = f" of {n_tasks}" if n_tasks is not None else ""
    return ClusterError(f"{problem_line(p)}; {kept}{total} tasks are stored in {out} (the same command resumes)")


# ---- stoprace submit's preflight ---------------------------------------------------------

_PREFLIGHT = r"""
import json, re, sys
from importlib import metadata
out = {"python": sys.executable, "version": sys.version.split()[0], "missing": [], "wrong": [], "stoprace": None}
try:
    from packaging.requirements import Requirement
except ImportError:
    Requirement = None
for r in json.loads(sys.argv[1]):
    name, spec = re.split(r"[\s<>=!~;\[(]", r, maxsplit=1)[0], None
    if Requirement is not None:
        req = Requirement(r)
        if req.marker is not None and not req.marker.evaluate():
            continue
        name, spec = req.name, req.specifier
    try:
        v = metadata.version(name)
    except metadata.PackageNotFoundError:
        out["missing"].append(r.split(";")[0].strip())
        continue
    if spec is not None and not spec.contains(v, prereleases=True):
        out["wrong"].append(f"{name} {v} (needs {r.split(';')[0].strip()})")
if not out["missing"] and not out["wrong"]:
    try:
        import sweeps.cli.run
    except Exception as e:
        out["stoprace"] = f"{type(e).__name__}: {e}"
print(sys.argv[2] + json.dumps(out), flush=True)
"""


def preflight_entrypoint(python: str) -> str:
    """A job entrypoint that reports, in one line, whether `python` can run `stoprace run`."""
    return shlex.join([*shlex.split(python), "-c", _PREFLIGHT, json.dumps(list(requirements())), PREFLIGHT_MARK])


def preflight_verdict(python: str, logs: str, *, ship: bool, exit_code: int | None) -> str:
    """Refuse (ClusterError, one line) an interpreter the preflight found unfit; return `python` if fit."""
    line = next((ln for ln in reversed(logs.splitlines()) if ln.startswith(PREFLIGHT_MARK)), None)
    where = f"the job's Python ({python}) on the head node"
    if line is None:
        tail = next((ln.strip() for ln in reversed(logs.splitlines()) if ln.strip()), "no output")
        if exit_code == 127 or "not found" in tail:
            raise ClusterError(f"--python {python}: no such command on the head node ({tail}); name the head's "
                               f"interpreter that has Ray and stoprace's dependencies, or leave --python out")
        raise ClusterError(f"{where} cannot run the sweep (exit {exit_code}): {tail}")
    found = json.loads(line[len(PREFLIGHT_MARK):])
    where = f"the job's Python ({found['python']}, Python {found['version']}) on the head node"
    if found["missing"] or found["wrong"]:
        what = "; ".join([*(f"{r} is not installed" for r in found["missing"]), *found["wrong"]])
        fix = _pip([*found["missing"], *(w.split("(needs ")[1].rstrip(")") for w in found["wrong"])])
        raise ClusterError(f"{where} lacks stoprace's dependencies: {what}: {fix} there, or pass --pip to have Ray "
                           f"install them for the job, or --python CMD to name an interpreter that has them")
    if found["stoprace"]:
        fix = ("install stoprace there, or leave out --no-ship to ship its code with the job" if not ship
               else "this stoprace's shipped code does not import there")
        raise ClusterError(f"{where} cannot import stoprace ({found['stoprace']}): {fix}")
    return python


def connect_problem(text_or_error: BaseException) -> str | None:
    """One line for a ``ray.init`` that failed for an environment reason (another Ray/Python), else None."""
    from cluster.nodeenv import node_problem

    p = node_problem(text_or_error)
    return problem_line(p) if p is not None and p.kind == "ray" else None
