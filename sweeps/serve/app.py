"""The ASGI app of `stoprace serve`: JSON API over the served result sets, sweep submission, the dashboard.

Every answer comes from the same functions the CLI calls (queries.named.run_sql /
run_named, queries.capacity.capacity, queries.plot.plot, queries.replay.replay)
and is serialized by the same code as the CLI's `--format json`
(queries.format.to_json_bytes, Capacity.to_dict, queries.replay.replay_json), so
the API and the CLI agree to the byte on numbers and column names.

The parts: config.py (ServeConfig), deps.py (the services a route asks for), security.py
(token, Host, bodies), errors.py (every refusal as one-line JSON), routes/ (one router per group).
"""

from __future__ import annotations

from fastapi import FastAPI

from sweeps.serve.config import ServeConfig
from sweeps.serve.deps import Services
from sweeps.serve.errors import install_error_handlers
from sweeps.serve.pool import Answers, Pool
from sweeps.serve.registry import Registry
from sweeps.serve.routes import ROUTERS, dashboard
from sweeps.serve.runs import Runner
from sweeps.serve.security import install_guard
from sweeps.serve.work import HeavyWork

__all__ = ["create_app", "shutdown"]


def create_app(config: ServeConfig) -> FastAPI:
    """The app; `app.state.services.runner` runs submitted sweeps and must be stopped (`shutdown(app)`)."""
    services = Services(config=config, registry=Registry.from_args(config.locations),
                        pool=Pool(threads=config.threads), answers=Answers(),
                        runner=Runner(address=config.address, workers=config.workers),
                        heavy=HeavyWork(config.heavy_slots))
    # FastAPI's /docs and /redoc pages load Swagger/ReDoc from a CDN: off (no CDN at run time).
    app = FastAPI(title="stoprace", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.services = services
    install_error_handlers(app)
    install_guard(app, config)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", dashboard.static_files(), name="static")
    return app


def shutdown(app: FastAPI, timeout: float = 10.0) -> bool:
    """Stop the app: no heavy computation starts, running queries are interrupted, background runs
    stopped (SIGINT: finished tasks stay stored). False if a computation was still running after
    `timeout` s (a Python loop DuckDB's interrupt cannot reach): the caller should not finalize the
    interpreter under it (see sweeps/serve/work.py)."""
    services: Services = app.state.services
    services.heavy.close()
    services.pool.close()
    idle = services.heavy.wait_idle(timeout)
    services.runner.stop()
    return idle
