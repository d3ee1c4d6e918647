"""Outcomes, named queries and SQL over the served sweeps, answered as `stoprace query ... --format json`."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from queries.format import to_json_bytes
from sweeps.serve.deps import ServedDep, Services, ServicesDep
from sweeps.serve.errors import ApiError, NotFound
from sweeps.serve.registry import Served
from sweeps.serve.responses import PARTIAL_PARAM, flag, json_response, partial_headers
from sweeps.serve.security import JSON_TYPES, content_type, json_object, read_body

__all__ = ["OUTCOMES_SQL", "router"]

OUTCOMES_SQL = "SELECT * FROM outcomes ORDER BY sweep, point_id"
"""What GET /api/sweeps/{name}/outcomes answers (as `stoprace query DIR --sql OUTCOMES_SQL --format json`)."""

router = APIRouter(prefix="/api", tags=["queries"])


@router.get("/sweeps/{name}/outcomes")
async def outcomes(served: ServedDep, svc: ServicesDep) -> Response:
    from queries.named import run_sql

    body = await svc.answer([served], ("outcomes",),
                            lambda: to_json_bytes(svc.query([served], lambda con: run_sql(con, OUTCOMES_SQL))))
    return Response(body, media_type="application/json")


@router.get("/named")
def named_list() -> Response:
    from queries.named import list_named

    return json_response([{"name": q.name, "description": q.description, "needs_complete": q.needs_complete,
                           "params": [{"name": p.name, "default": p.default, "kind": p.kind, "help": p.help}
                                      for p in q.params]}
                          for q in list_named()])


@router.get("/sweeps/{name}/named/{query}")
async def named(query: str, request: Request, served: ServedDep, svc: ServicesDep) -> Response:
    """The named query's rows as `stoprace query DIR --named QUERY --format json`; every URL parameter but
    `partial` is one of its parameters. A query that needs every point is refused on an incomplete set
    unless `partial=true` (the CLI's --partial); such an answer says so in PARTIAL_HEADER."""
    from queries.answers import named_answer

    params = dict(request.query_params)
    partial = flag(params.pop("partial", None), "partial")

    def compute() -> tuple[bytes, list[str]]:
        ans = svc.query([served], lambda con: named_answer(con, query, params, partial=partial,
                                                           partial_flag=PARTIAL_PARAM))
        return to_json_bytes(ans.table), ans.partial

    body, marks = await svc.answer([served], ("named", query, partial, tuple(sorted(params.items()))), compute)
    return Response(body, media_type="application/json", headers=partial_headers(marks))


@router.post("/query")
async def post_query(request: Request, svc: ServicesDep) -> Response:
    content_type(request, JSON_TYPES, 'send {"sql": ...} with Content-Type: application/json')
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
    if not isinstance(params, dict) or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool)
                                               for v in params.values()):
        raise ApiError(400, '"params" must be an object of names to numbers or strings')
    return await svc.compute(lambda: _sql_response(svc, targets, obj["sql"], params))


def _sql_response(svc: Services, targets: list[Served], sql: str, params: dict[str, Any]) -> Response:
    """`{"columns", "truncated", "row_limit", "byte_limit", "warnings", "rows"}`: at most row_limit rows
    whose JSON fits in byte_limit bytes; `truncated` when either cut rows."""
    from queries.answers import sql_answer
    from queries.format import to_json_bytes_within

    limit, byte_limit = svc.config.row_limit, svc.config.byte_limit
    ans = svc.query(targets, lambda con: sql_answer(con, sql, params, limit=limit + 1))
    table = ans.table.slice(0, limit) if ans.table.num_rows > limit else ans.table
    rows, kept = to_json_bytes_within(table, byte_limit)
    truncated = ans.table.num_rows > kept
    head = json.dumps({"columns": ans.table.column_names, "truncated": truncated, "row_limit": limit,
                       "byte_limit": byte_limit, "warnings": ans.warnings})
    return Response(head[:-1].encode() + b', "rows": ' + rows + b"}", media_type="application/json")
