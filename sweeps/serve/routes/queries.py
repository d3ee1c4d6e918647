"""Outcomes, named queries and SQL over the served sweeps, answered as `stoprace query ... --format json`."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from queries.format import to_json_bytes
from sweeps.serve.deps import ServedDep, Services, ServicesDep
from sweeps.serve.errors import ApiError, NotFound
from sweeps.serve.registry import Served
from sweeps.serve.responses import json_response
from sweeps.serve.security import json_object, read_body

__all__ = ["OUTCOMES_SQL", "router"]

OUTCOMES_SQL = "SELECT * FROM outcomes ORDER BY sweep, point_id"
"""What GET /api/sweeps/{name}/outcomes answers (as `stoprace query DIR --sql OUTCOMES_SQL --format json`)."""

router = APIRouter(prefix="/api", tags=["queries"])


@router.get("/sweeps/{name}/outcomes")
def outcomes(served: ServedDep, svc: ServicesDep) -> Response:
    from queries.named import run_sql

    body = svc.answers.get([served], ("outcomes",),
                           lambda: to_json_bytes(svc.query([served], lambda con: run_sql(con, OUTCOMES_SQL))))
    return Response(body, media_type="application/json")


@router.get("/named")
def named_list() -> Response:
    from queries.named import list_named

    return json_response([{"name": q.name, "description": q.description,
                           "params": [{"name": p.name, "default": p.default, "help": p.help} for p in q.params]}
                          for q in list_named()])


@router.get("/sweeps/{name}/named/{query}")
def named(query: str, request: Request, served: ServedDep, svc: ServicesDep) -> Response:
    from queries.named import run_named

    params = dict(request.query_params)
    body = svc.answers.get([served], ("named", query, tuple(sorted(params.items()))),
                           lambda: to_json_bytes(svc.query([served], lambda con: run_named(con, query, params))))
    return Response(body, media_type="application/json")


@router.post("/query")
async def post_query(request: Request, svc: ServicesDep) -> Response:
    body = await read_body(request, svc.config.max_body_bytes)
    obj = json_object(body, "sql", 'body must be {"sql": "...", "sweeps": ["name", ...], "params": {...}}')
    names = obj.get("sweeps")
    if names is None:
        targets = svc.registry.all()
    elif isinstance(names, list) and names and all(isinstance(n, str) for n in names):
        targets = [svc.registry.get(n) for n in dict.fromkeys(names)]
    else:
        raise ApiError(400, '"sweeps" must be a non-empty list of sweep names')
    if not targets:
        raise NotFound("no sweep is served here")
    params = obj.get("params") or {}
    if not isinstance(params, dict) or not all(isinstance(v, (str, int, float)) for v in params.values()):
        raise ApiError(400, '"params" must be an object of names to numbers or strings')
    return await run_in_threadpool(lambda: _sql_response(svc, targets, obj["sql"], params))


def _sql_response(svc: Services, targets: list[Served], sql: str, params: dict[str, Any]) -> Response:
    from queries.named import run_sql

    limit = svc.config.row_limit
    table = svc.query(targets, lambda con: run_sql(con, sql, params, limit=limit + 1))
    truncated = table.num_rows > limit
    if truncated:
        table = table.slice(0, limit)
    head = json.dumps({"columns": table.column_names, "truncated": truncated, "row_limit": limit})
    return Response(head[:-1].encode() + b', "rows": ' + to_json_bytes(table) + b"}", media_type="application/json")
