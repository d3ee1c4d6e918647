"""stoprace sweeps: spec, grid, tasks, store and the `stoprace` CLI.

`sweeps.run(spec, out=..., address=...)` runs a sweep (Ray is imported only then).
"""

from __future__ import annotations

from typing import Any


def run(spec: Any, out: Any = None, **kwargs: Any):
    """Run or resume a sweep; see sweeps.runner.run."""
    from sweeps.runner import run as _run

    return _run(spec, out, **kwargs)
