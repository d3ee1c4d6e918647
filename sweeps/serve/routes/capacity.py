"""GET /api/sweeps/{name}/capacity: `stoprace capacity DIR --format json` over HTTP."""

from __future__ import annotations

import math

from fastapi import APIRouter
from fastapi.responses import Response

from sweeps.serve.deps import ServedDep, ServicesDep
from sweeps.serve.errors import ApiError
from sweeps.serve.responses import json_bytes, names

router = APIRouter(prefix="/api/sweeps", tags=["capacity"])


@router.get("/{name}/capacity")
def capacity_(served: ServedDep, svc: ServicesDep, target_p: float, by: str | None = None, metric: str = "p_bad",
              hosts: float | None = None, kexecs_per_host_year: float | None = None,
              where: str | None = None, split: str | None = None) -> Response:
    from queries.capacity import capacity

    for label, v in (("target_p", target_p), ("hosts", hosts), ("kexecs_per_host_year", kexecs_per_host_year)):
        if v is not None and not math.isfinite(v):
            raise ApiError(400, f"{label} must be a finite number")
    axes = None if by is None else names(by)
    splits = names(split or "")
    where = where or None
    key = ("capacity", target_p, None if axes is None else tuple(axes), metric, hosts, kexecs_per_host_year,
           where, tuple(splits))
    body = svc.answers.get([served], key, lambda: json_bytes(svc.query([served], lambda con: capacity(
        con, target_p, by=axes, metric=metric, hosts=hosts, kexecs_per_host_year=kexecs_per_host_year,
        where=where, split=splits)).to_dict()))
    return Response(body, media_type="application/json")
