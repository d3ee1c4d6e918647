"""POST /api/sweeps: submit a sweep spec; it runs in the background as `stoprace run` (sweeps/serve/runs.py).

The spec is validated exactly as `stoprace run spec.toml` validates its file (same parser, same
messages); a spec already complete where it would go answers 200 "complete" without running.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from sweeps.serve.deps import Services, ServicesDep
from sweeps.serve.errors import ApiError, Conflict
from sweeps.serve.registry import count_ranges, read_manifest
from sweeps.serve.responses import json_response
from sweeps.serve.security import SPEC_TYPES, json_object, read_body
from sweeps.spec import SpecError, parse_spec

router = APIRouter(prefix="/api/sweeps", tags=["runs"])


@router.post("")
async def post_sweep(request: Request, svc: ServicesDep) -> Response:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in SPEC_TYPES:
        raise ApiError(415, f"send the TOML spec as the body with Content-Type: application/toml "
                            f"(or JSON {{\"spec\": \"...\"}}), not '{ctype or 'none'}'")
    body = await read_body(request, svc.config.max_body_bytes)
    if ctype == "application/json":
        text: str | bytes = json_object(body, "spec", 'JSON body must be {"spec": "<TOML text>"}')["spec"]
    else:
        text = body
    return json_response(*submit_spec(svc, text))


def submit_spec(svc: Services, text: str | bytes) -> tuple[dict[str, Any], int]:
    """Validate and queue a spec; (answer, status): 202 queued, 200 already complete."""
    try:
        spec = parse_spec(text, where="spec.toml")
    except SpecError as e:
        raise ApiError(400, str(e)) from None
    location = os.path.abspath(svc.registry.submit_root / spec.name)
    for s in svc.registry.all():
        if s.key == spec.name and os.path.abspath(s.location) != location:
            raise Conflict(f"a sweep named '{spec.name}' is already served from {s.location}")
    active = svc.runner.active(spec.name)
    if active is not None:
        raise Conflict(f"sweep '{spec.name}' is already {active.state} (GET /api/sweeps/{spec.name})")
    p = Path(location)
    if p.exists():
        m = read_manifest(location)
        if m is None:
            if not p.is_dir() or any(p.iterdir()):
                raise Conflict(f"{location} exists and is not a stoprace result set")
        elif m.get("spec_hash") != spec.spec_hash:
            raise Conflict(f"{location} holds results of a different spec named '{spec.name}' "
                           f"(hash {str(m.get('spec_hash'))[:12]}…, this spec {spec.spec_hash[:12]}…)")
        elif m.get("n_tasks") is not None and count_ranges(m.get("tasks_done") or []) >= int(m["n_tasks"]):
            return {"name": spec.name, "location": location, "status": "complete"}, 200
    run = svc.runner.submit(spec.name, location, spec.to_toml())
    return {"name": spec.name, "location": location, "status": run.state}, 202
