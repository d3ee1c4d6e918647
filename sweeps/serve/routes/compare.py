"""GET /api/compare?a=NAME&b=NAME: `stoprace compare DIR_A DIR_B --format json` over HTTP (issue 21).

Each side is read through its own pooled connection (queries.point_estimates), then matched by
queries.compare.compare_points, as queries.compare.compare does for the CLI; the labels are the
sweeps' names. A sweep may be compared with itself. ?on=a,b is the CLI's --on a b.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from sweeps.serve.deps import ServicesDep
from sweeps.serve.responses import json_bytes, names

router = APIRouter(prefix="/api", tags=["compare"])


@router.get("/compare")
def compare_(svc: ServicesDep, a: str, b: str, metric: str = "p_race", on: str | None = None,
             where: str | None = None) -> Response:
    from queries.compare import compare_points
    from queries.point_estimates import check_axes, check_metric, point_estimates

    sa, sb = svc.registry.get(a), svc.registry.get(b)
    axes = check_axes(names(on), "--on axis") if on else None
    check_metric(metric)
    where = where or None

    def compute() -> bytes:
        ta = svc.query([sa], lambda con: point_estimates(con, metric, where))
        tb = svc.query([sb], lambda con: point_estimates(con, metric, where))
        return json_bytes(compare_points(ta, tb, metric=metric, on=axes, where=where, labels=(a, b)).to_dict())

    body = svc.answers.get([sa, sb], ("compare", metric, None if axes is None else tuple(axes), where), compute)
    return Response(body, media_type="application/json")
