"""A served sweep's status as the API lists it: its result set's progress, and its submitted run's state."""

from __future__ import annotations

import os
from typing import Any

from sweeps.serve.deps import Services
from sweeps.serve.registry import Served

__all__ = ["all_status", "status_of"]


def status_of(svc: Services, s: Served) -> dict[str, Any]:
    """The registry's summary of `s`, with the state of the run submitted into it (if any)."""
    out = svc.registry.summary(s)
    run = svc.runner.runs.get(s.key)
    if run is not None and run.location == os.path.abspath(s.location):
        out["run"] = run.to_dict()
        if run.state in ("queued", "running"):
            out["status"] = run.state
        elif run.state == "failed" and out["status"] != "complete":
            out["status"] = "failed"
    return out


def all_status(svc: Services) -> list[dict[str, Any]]:
    """Every served result set, then every submitted run that has no result set yet."""
    listed = svc.registry.all()
    out = [status_of(svc, s) for s in listed]
    keys = {s.key for s in listed}
    for name, run in list(svc.runner.runs.items()):  # submitted, no manifest yet
        if name not in keys:
            out.append({"name": name, "location": run.location, "sweep": name, "points": None, "tasks_done": 0,
                        "tasks_total": None, "cpu_trials_done": 0, "cpu_trials_total": None, "progress": 0.0,
                        "status": run.state, "run": run.to_dict()})
    return out
