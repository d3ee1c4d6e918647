"""GET /api/sweeps/{name}/importance: `stoprace importance DIR --format json` over HTTP (issue 21).

The same library call as the CLI (queries.importance.importance(...).to_dict()), so both
doors give the same numbers and columns; ?by=a,b is the CLI's --by a b.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from sweeps.serve.deps import ServedDep, ServicesDep
from sweeps.serve.responses import json_bytes, names

router = APIRouter(prefix="/api/sweeps", tags=["importance"])


@router.get("/{name}/importance")
def importance_(served: ServedDep, svc: ServicesDep, metric: str = "p_race", by: str | None = None,
                where: str | None = None) -> Response:
    from queries.importance import importance

    axes = names(by or "")
    where = where or None
    body = svc.answers.get([served], ("importance", metric, tuple(axes), where), lambda: json_bytes(
        svc.query([served], lambda con: importance(con, metric, by=axes, where=where)).to_dict()))
    return Response(body, media_type="application/json")
