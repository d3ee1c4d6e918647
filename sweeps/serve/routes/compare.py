"""GET /api/compare?a=NAME&b=NAME: `stoprace compare DIR_A DIR_B --format json` over HTTP (issue 21).

Each side is read through its own pooled connection (queries.point_estimates), then matched by
queries.compare.compare_points, as queries.compare.compare does for the CLI; the labels are the
sweeps' names. A sweep may be compared with itself. ?on=a,b is the CLI's --on a b. Each side is
refused when incomplete as the CLI refuses it (queries.db.require_complete; partial=true is --partial).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from sweeps.serve.deps import ServicesDep
from sweeps.serve.responses import PARTIAL_PARAM, flag, json_bytes, names, partial_headers

router = APIRouter(prefix="/api", tags=["compare"])


@router.get("/compare")
async def compare_(svc: ServicesDep, a: str, b: str, metric: str = "p_race", on: str | None = None,
                   where: str | None = None, partial: str | None = None) -> Response:
    from queries.answers import marked
    from queries.compare import compare_points
    from queries.db import require_complete
    from queries.point_estimates import check_axes, check_metric, point_estimates

    sa, sb = svc.registry.get(a), svc.registry.get(b)
    axes = check_axes(names(on), "--on axis") if on else None
    check_metric(metric)
    where = where or None
    allow = flag(partial, "partial")

    def side(con):
        return require_complete(con, "compare", allow, PARTIAL_PARAM), point_estimates(con, metric, where)

    def compute() -> tuple[bytes, list[str]]:
        marks_a, ta = svc.query([sa], side)
        marks_b, tb = svc.query([sb], side)
        marks = marks_a + marks_b
        return json_bytes(marked(compare_points(ta, tb, metric=metric, on=axes, where=where, labels=(a, b)).to_dict(),
                                 marks)), marks

    body, marks = await svc.answer([sa, sb], ("compare", metric, None if axes is None else tuple(axes), where, allow),
                                   compute)
    return Response(body, media_type="application/json", headers=partial_headers(marks))
