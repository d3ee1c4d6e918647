"""GET /api/sweeps/{name}/importance: `stoprace importance DIR --format json` over HTTP (issue 21).

The same library calls as the CLI (queries.db.require_complete, then
queries.importance.importance(...).to_dict()), so both doors give the same numbers and columns
and refuse an incomplete set alike (partial=true is the CLI's --partial); ?by=a,b is --by a b.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from sweeps.serve.deps import ServedDep, ServicesDep
from sweeps.serve.responses import PARTIAL_PARAM, flag, json_bytes, names, partial_headers

router = APIRouter(prefix="/api/sweeps", tags=["importance"])


@router.get("/{name}/importance")
async def importance_(served: ServedDep, svc: ServicesDep, metric: str = "p_race", by: str | None = None,
                      where: str | None = None, partial: str | None = None) -> Response:
    from queries.answers import marked
    from queries.db import require_complete
    from queries.importance import importance

    axes = names(by or "")
    where = where or None
    allow = flag(partial, "partial")

    def answer(con) -> tuple[bytes, list[str]]:
        marks = require_complete(con, "importance", allow, PARTIAL_PARAM)
        return json_bytes(marked(importance(con, metric, by=axes, where=where).to_dict(), marks)), marks

    body, marks = await svc.answer([served], ("importance", metric, tuple(axes), where, allow),
                                   lambda: svc.query([served], answer))
    return Response(body, media_type="application/json", headers=partial_headers(marks))
