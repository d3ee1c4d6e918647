"""GET /api/sweeps, GET /api/sweeps/{name}: the served sweeps, their progress and (one) their axes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from core.params import PARAM_NAMES
from sweeps.serve.deps import ServicesDep
from sweeps.serve.errors import NotFound
from sweeps.serve.responses import json_response
from sweeps.serve.status import all_status, status_of

router = APIRouter(prefix="/api/sweeps", tags=["sweeps"])


@router.get("")
def list_sweeps(svc: ServicesDep) -> Response:
    return json_response(all_status(svc))


@router.get("/{name}")
def get_sweep(name: str, svc: ServicesDep) -> Response:
    try:
        s = svc.registry.get(name)
    except NotFound:
        if svc.runner.runs.get(name) is None:
            raise
        return json_response(next(r for r in all_status(svc) if r["name"] == name))  # submitted, no manifest yet
    from queries.plot import METRIC_NAMES

    out = status_of(svc, s)
    out["axes"] = svc.registry.axes(s)
    out["parameters"] = list(PARAM_NAMES)
    out["metrics"] = list(METRIC_NAMES)
    return json_response(out)
