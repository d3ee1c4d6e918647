"""The API's routers, one module per group; `create_app` includes each of `ROUTERS` in this order.

- sweeps: the served sweeps and their progress (GET /api/sweeps, /api/sweeps/{name});
- runs: submitting a sweep (POST /api/sweeps), run in the background as `stoprace run`;
- queries: outcomes, named queries, SQL (POST /api/query);
- capacity, plot, replay: `stoprace capacity`, `plot`, `replay` over HTTP;
- importance, compare: `stoprace importance`, `compare` over HTTP;
- server: the server's limits and its heavy work now (GET /api/server);
- dashboard: the page at / and its static files.
"""

from __future__ import annotations

from fastapi import APIRouter

from sweeps.serve.routes import capacity, compare, dashboard, importance, plot, queries, replay, runs, server, sweeps

__all__ = ["ROUTERS"]

ROUTERS: tuple[APIRouter, ...] = (
    sweeps.router, runs.router, queries.router, capacity.router, plot.router, replay.router, importance.router,
    compare.router, server.router, dashboard.router,
)
