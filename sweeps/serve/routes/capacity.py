"""GET /api/sweeps/{name}/capacity: `stoprace capacity DIR --format json` over HTTP."""

from __future__ import annotations

import math

from fastapi import APIRouter
from fastapi.responses import Response

from sweeps.serve.deps import ServedDep, ServicesDep
from sweeps.serve.errors import ApiError
from sweeps.serve.responses import PARTIAL_PARAM, flag, json_bytes, names, partial_headers

router = APIRouter(prefix="/api/sweeps", tags=["capacity"])


@router.get("/{name}/capacity")
async def capacity_(served: ServedDep, svc: ServicesDep, target_p: float, by: str | None = None, metric: str = "p_bad",
              hosts: float | None = None, kexecs_per_host_year: float | None = None,
              where: str | None = None, split: str | None = None, partial: str | None = None) -> Response:
    """As `stoprace capacity DIR --format json`: refused on an incomplete set unless `partial=true`
    (the CLI's --partial), then with its "partial" lines as the CLI's JSON has them (and PARTIAL_HEADER)."""
    from queries.answers import capacity_answer

    for label, v in (("target_p", target_p), ("hosts", hosts), ("kexecs_per_host_year", kexecs_per_host_year)):
        if v is not None and not math.isfinite(v):
            raise ApiError(400, f"{label} must be a finite number")
    axes = None if by is None else names(by)
    splits = names(split or "")
    where = where or None
    allow_partial = flag(partial, "partial")
    key = ("capacity", target_p, None if axes is None else tuple(axes), metric, hosts, kexecs_per_host_year,
           where, tuple(splits), allow_partial)

    def compute() -> tuple[bytes, list[str]]:
        ans = svc.query([served], lambda con: capacity_answer(
            con, target_p, partial=allow_partial, partial_flag=PARTIAL_PARAM, by=axes, metric=metric, hosts=hosts,
            kexecs_per_host_year=kexecs_per_host_year, where=where, split=splits))
        return json_bytes(ans.to_dict()), ans.partial

    body, marks = await svc.answer([served], key, compute)
    return Response(body, media_type="application/json", headers=partial_headers(marks))
