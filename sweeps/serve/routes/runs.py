"""POST /api/sweeps: submit a sweep spec; it runs in the background as `stoprace run` (sweeps/serve/runs.py).

The spec is validated exactly as `stoprace run spec.toml` validates its file (same parser, same
messages) and must pass the same size guards (sweeps.guards.check_size: points, CPU-trials, tasks),
refused with `run`'s message; `?force=true` lifts them as `run --force` does, on a server started
with --token only (anyone who may reach a token-less server could otherwise start a run of years).
A spec already complete where it would go answers 200 "complete" without running.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from sweeps.serve.deps import Services, ServicesDep
from sweeps.serve.errors import ApiError, Conflict
from sweeps.serve.registry import Served, read_manifest, status_word
from sweeps.serve.responses import flag, json_response
from sweeps.serve.security import SPEC_TYPES, content_type, json_object, read_body
from sweeps.spec import SpecError, parse_spec
from sweeps.store import SPEC_FILE, resume_refusal

router = APIRouter(prefix="/api/sweeps", tags=["runs"])


@router.post("")
async def post_sweep(request: Request, svc: ServicesDep, force: str | None = None) -> Response:
    forced = flag(force, "force")
    if forced and svc.config.token is None:
        raise ApiError(403, "force=true lifts the size guards, so it needs a server started with --token "
                            "(every request then carries it)")
    ctype = content_type(request, SPEC_TYPES, 'send the TOML spec as the body with Content-Type: application/toml '
                                              '(or JSON {"spec": "..."})')
    body = await read_body(request, svc.config.max_body_bytes)
    if ctype == "application/json":
        text: str | bytes = json_object(body, "spec", 'JSON body must be {"spec": "<TOML text>"}')["spec"]
    else:
        text = body
    return json_response(*submit_spec(svc, text, force=forced))


def submit_spec(svc: Services, text: str | bytes, force: bool = False) -> tuple[dict[str, Any], int]:
    """Validate and queue a spec; (answer, status): 202 queued, 200 already complete."""
    from sweeps.guards import check_size

    try:
        spec = parse_spec(text, where="spec.toml", force=force)
        check_size(spec, force=force)  # what `stoprace run` checks before it starts Ray
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
        elif (why := resume_refusal(location, str(m.get("spec_hash")), _spec_text(p), spec)) is not None:
            raise Conflict(why)  # the rule `stoprace run` applies (sweeps.store), e.g. model_rev
        else:
            check = svc.registry.integrity(Served(spec.name, location))
            if not isinstance(check, str) and status_word(check) == "complete":
                return {"name": spec.name, "location": location, "status": "complete"}, 200
            # else run it: `stoprace run` resumes the missing tasks and runs damaged ones again
    run = svc.runner.submit(spec.name, location, spec.to_toml(), force=force)
    svc.registry.add_submitted(location)
    return {"name": spec.name, "location": location, "status": run.state}, 202


def _spec_text(d: Path) -> str | None:
    """A result set's spec.toml, or None if unreadable (resume_refusal then says only "different spec")."""
    try:
        return (d / SPEC_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
