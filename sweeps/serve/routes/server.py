"""GET /api/server: the server's limits and how much heavy work runs and waits right now."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from sweeps.serve.deps import ServicesDep
from sweeps.serve.responses import json_response

router = APIRouter(prefix="/api", tags=["server"])


@router.get("/server")
def server(svc: ServicesDep) -> Response:
    c = svc.config
    return json_response({"heavy": svc.heavy.counts(), "query_timeout_s": c.query_timeout_s, "row_limit": c.row_limit,
                          "byte_limit": c.byte_limit, "max_body_bytes": c.max_body_bytes,
                          "token": c.token is not None})
