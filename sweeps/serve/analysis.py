"""The API's importance and compare endpoints (issue 21): the same library calls as `stoprace importance`/`compare`.

- `GET /api/sweeps/{name}/importance?metric=&by=a,b&where=` answers
  `stoprace importance DIR --metric M --by a b --where W --format json`
  (queries.importance.importance(...).to_dict());
- `GET /api/compare?a=NAME&b=NAME&metric=&on=a,b&where=` answers
  `stoprace compare DIR_A DIR_B ... --format json` with the sweeps' names as the labels
  (queries.point_estimates on each side, then queries.compare.compare_points, as
  queries.compare.compare does). A and B are read through separate connections, so a
  sweep may be compared with itself.

Answers are kept while the result sets they came from are unchanged (sweeps.serve.pool.Answers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response

__all__ = ["add_routes"]


def add_routes(app: FastAPI, *, served: Callable[[str], Any], run_query: Callable[[list, Callable], Any],
               answers: Any, json_bytes: Callable[[Any], bytes], names: Callable[[str], list[str]]) -> None:
    """Add the two endpoints to `app`, reading through the server's pool (`run_query`) and answer cache."""

    @app.get("/api/sweeps/{name}/importance")
    def importance_(name: str, metric: str = "p_race", by: str | None = None, where: str | None = None) -> Response:
        from queries.importance import importance

        s = served(name)
        axes = names(by or "")
        where = where or None
        body = answers.get([s], ("importance", metric, tuple(axes), where), lambda: json_bytes(
            run_query([s], lambda con: importance(con, metric, by=axes, where=where)).to_dict()))
        return Response(body, media_type="application/json")

    @app.get("/api/compare")
    def compare_(a: str, b: str, metric: str = "p_race", on: str | None = None, where: str | None = None) -> Response:
        from queries.compare import compare_points
        from queries.point_estimates import check_axes, check_metric, point_estimates

        sa, sb = served(a), served(b)
        axes = check_axes(names(on), "--on axis") if on else None
        check_metric(metric)
        where = where or None

        def compute() -> bytes:
            ta = run_query([sa], lambda con: point_estimates(con, metric, where))
            tb = run_query([sb], lambda con: point_estimates(con, metric, where))
            return json_bytes(compare_points(ta, tb, metric=metric, on=axes, where=where, labels=(a, b)).to_dict())

        body = answers.get([sa, sb], ("compare", metric, None if axes is None else tuple(axes), where), compute)
        return Response(body, media_type="application/json")
