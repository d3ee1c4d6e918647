"""stoprace sweeps: the engine (spec, grid, tasks, store, running on Ray) and, above it, the front doors
(`sweeps.cli`: the `stoprace` command; `sweeps.serve`: the HTTP service).

The Python API (what `stoprace run` calls):

    spec = sweeps.load_spec("examples/tdx-kexec-small.toml")   # or sweeps.parse_spec(text_or_dict)
    report = sweeps.run(spec, "results/tdx")                    # -> sweeps.RunReport; resumes
    sweeps.check_size(spec)                                     # the size guard `run` applies without force

Every error raised for bad input is a `StopraceError` (SpecError, StoreError, ClusterError, ...);
Ctrl-C during `run` raises `sweeps.runner.SweepInterrupted`, a KeyboardInterrupt (finished tasks kept;
not exported here: every exported error is a StopraceError). Names are imported on first use
(PEP 562): `import sweeps` loads neither Ray nor pydantic, so the CLI starts fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from core.errors import StopraceError
from sweeps.errors import ClusterError, UsageError

if TYPE_CHECKING:
    from sweeps.guards import RunPlan, check_size
    from sweeps.runner import RunReport, run
    from sweeps.spec import SpecError, SweepSpec, load_spec, parse_spec

__all__ = [
    "ClusterError",
    "RunPlan",
    "RunReport",
    "SpecError",
    "StopraceError",
    "SweepSpec",
    "UsageError",
    "check_size",
    "load_spec",
    "parse_spec",
    "run",
]

_WHERE = {
    "RunPlan": "sweeps.guards", "check_size": "sweeps.guards",
    "RunReport": "sweeps.runner", "run": "sweeps.runner",
    "SpecError": "sweeps.spec", "SweepSpec": "sweeps.spec", "load_spec": "sweeps.spec", "parse_spec": "sweeps.spec",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'sweeps' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
