"""stoprace sweeps: spec, grid, tasks, store and the `stoprace` CLI.

`sweeps.run(spec, out=..., address=...)` runs a sweep (Ray is imported only then). Every error
it raises for bad input is a `StopraceError` (SpecError, StoreError, ClusterError, ...).
"""

from __future__ import annotations

from typing import Any

from core.errors import StopraceError
from sweeps.errors import ClusterError, UsageError

__all__ = ["run", "StopraceError", "ClusterError", "UsageError"]


def run(spec: Any, out: Any = None, **kwargs: Any):
    """Run or resume a sweep; see sweeps.runner.run."""
    from sweeps.runner import run as _run

    return _run(spec, out, **kwargs)
