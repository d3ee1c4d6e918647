"""The ASGI app of `stoprace serve`: JSON API over the served result sets, sweep submission, the dashboard.

Every answer comes from the same functions the CLI calls (queries.named.run_sql /
run_named, queries.capacity.capacity, queries.plot.plot, queries.replay.replay)
and is serialized by the same code as the CLI's `--format json`
(queries.format.to_json_bytes, Capacity.to_dict, queries.replay.replay_json), so
the API and the CLI agree to the byte on numbers and column names.

Errors are JSON `{"error": "<one line>"}` with a 4xx status: 400 bad input (bad
spec, bad SQL, refused SQL, time limit), 401 missing/wrong token, 404 unknown sweep,
409 conflict, 413 body too large, 415 wrong content type; a bug is a 500 with a
one-line body (the traceback goes to the server's log only).
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import os
import tempfile
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import StopraceError
from core.params import PARAM_NAMES
from queries.format import to_json_bytes
from sweeps.serve.pool import Answers, Pool, limited
from sweeps.serve.registry import Conflict, NotFound, Registry, Served, ServeError, count_ranges, read_manifest
from sweeps.serve.runs import Runner
from sweeps.spec import SpecError, parse_spec

__all__ = ["LOOPBACK_HOSTS", "OUTCOMES_SQL", "ServeConfig", "create_app"]

log = logging.getLogger("stoprace.serve")

OUTCOMES_SQL = "SELECT * FROM outcomes ORDER BY sweep, point_id"
"""What GET /api/sweeps/{name}/outcomes answers (as `stoprace query DIR --sql OUTCOMES_SQL --format json`)."""
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
SPEC_TYPES = ("application/toml", "text/toml", "text/x-toml", "application/json")
"""Content types POST /api/sweeps accepts. Not text/plain or a form: those are "simple" requests a
foreign web page could send to a server on this machine without a CORS preflight."""
_PLOT_LOCK = threading.Lock()  # matplotlib's font cache and text layout are not thread-safe


@dataclass
class ServeConfig:
    """What `stoprace serve` was told (see sweeps/cli/serve.py for the options)."""

    locations: list[str] = field(default_factory=list)
    token: str | None = None
    address: str | None = None
    workers: int | None = None
    query_timeout_s: float = 10.0
    row_limit: int = 10_000
    max_body_bytes: int = 1 << 20
    trusted_hosts: tuple[str, ...] | None = LOOPBACK_HOSTS
    """Host headers accepted without a token (DNS rebinding); None accepts any (a token is required then)."""
    threads: int | None = 2


class _Error(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)


def _json_bytes(data: Any) -> bytes:
    """As the CLI writes JSON (`capacity --format json`): default=str, no NaN."""
    return json.dumps(data, default=str, allow_nan=False).encode()


def _json(data: Any, status: int = 200) -> Response:
    return Response(_json_bytes(data), status_code=status, media_type="application/json")


def _static_dir() -> Path:
    return Path(str(resources.files("sweeps.serve").joinpath("static")))


def create_app(config: ServeConfig) -> FastAPI:
    """The app; `app.state.runner` runs submitted sweeps and must be stopped (`shutdown(app)`)."""
    registry = Registry.from_args(config.locations)
    pool = Pool(threads=config.threads)
    answers = Answers()
    runner = Runner(address=config.address, workers=config.workers)
    # FastAPI's /docs and /redoc pages load Swagger/ReDoc from a CDN: off (no CDN at run time).
    app = FastAPI(title="stoprace", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.registry, app.state.pool, app.state.runner, app.state.config = registry, pool, runner, config

    # ---- errors: always JSON, one line --------------------------------------------------
    @app.exception_handler(ServeError)
    async def _serve_error(_: Request, e: ServeError) -> JSONResponse:
        return _error(e.status, str(e))

    @app.exception_handler(_Error)
    async def _plain_error(_: Request, e: _Error) -> JSONResponse:
        return _error(e.status, str(e))

    @app.exception_handler(StopraceError)  # QueryError, SpecError, StoreError, ...: the user's input
    async def _user_error(_: Request, e: Exception) -> JSONResponse:
        return _error(400, str(e))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, e: RequestValidationError) -> JSONResponse:
        parts = []
        for err in e.errors():
            where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "body", "path"))
            parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg")))
        return _error(400, "bad request: " + "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        msg = e.detail if isinstance(e.detail, str) else json.dumps(e.detail)
        if e.status_code == 404 and msg == "Not Found":
            msg = "no such endpoint (the API is under /api/: /api/sweeps, /api/query)"
        return _error(e.status_code, msg)

    @app.exception_handler(Exception)
    async def _bug(_: Request, e: Exception) -> JSONResponse:
        log.exception("internal error")
        return _error(500, f"internal error ({type(e).__name__}); see the server's log")

    # ---- safety: token, Host header -------------------------------------------------------
    @app.middleware("http")
    async def _guard(request: Request, call_next):
        if config.token is not None:
            given = request.query_params.get("token") if request.url.path == "/" else None
            if given is not None and hmac.compare_digest(given.encode(), config.token.encode()):
                # a browser cannot send a bearer header on navigation: trade ?token= for a cookie, once
                resp = RedirectResponse("/", status_code=303)
                resp.set_cookie("stoprace_token", config.token, httponly=True, samesite="strict")
                return resp
            auth = request.headers.get("authorization", "")
            bearer = auth[7:] if auth.lower().startswith("bearer ") else None
            cookie = request.cookies.get("stoprace_token")
            ok = any(v is not None and hmac.compare_digest(v.encode(), config.token.encode())
                     for v in (bearer, cookie))
            if not ok:
                return _error(401, "this server needs its token: 'Authorization: Bearer <token>' "
                                   "(or open /?token=<token> once in a browser)")
        elif config.trusted_hosts is not None:
            host = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]")
            if host not in config.trusted_hosts:
                return _error(403, f"Host '{host}' refused: this server answers only as "
                                   f"{'/'.join(config.trusted_hosts)} unless started with --token")
        return await call_next(request)

    # ---- helpers -----------------------------------------------------------------------------
    def served(name: str) -> Served:
        return registry.get(name)

    def run_query(targets: list[Served], fn):
        with pool.borrow(targets) as lease:
            return limited(lease, fn, config.query_timeout_s)

    def status_of(s: Served) -> dict[str, Any]:
        out = registry.summary(s)
        run = runner.runs.get(s.key)
        if run is not None and run.location == os.path.abspath(s.location):
            out["run"] = run.to_dict()
            if run.state in ("queued", "running"):
                out["status"] = run.state
            elif run.state == "failed" and out["status"] != "complete":
                out["status"] = "failed"
        return out

    def all_status() -> list[dict[str, Any]]:
        listed = registry.all()
        out = [status_of(s) for s in listed]
        keys = {s.key for s in listed}
        for name, run in list(runner.runs.items()):  # submitted, no manifest yet
            if name not in keys:
                out.append({"name": name, "location": run.location, "sweep": name, "points": None, "tasks_done": 0,
                            "tasks_total": None, "cpu_trials_done": 0, "cpu_trials_total": None, "progress": 0.0,
                            "status": run.state, "run": run.to_dict()})
        return out

    # ---- API -----------------------------------------------------------------------------------
    @app.get("/api/sweeps")
    def list_sweeps() -> Response:
        return _json(all_status())

    @app.get("/api/sweeps/{name}")
    def get_sweep(name: str) -> Response:
        try:
            s = served(name)
        except NotFound:
            run = runner.runs.get(name)
            if run is None:
                raise
            return _json(next(r for r in all_status() if r["name"] == name))
        out = status_of(s)
        out["axes"] = registry.axes(s)
        out["parameters"] = list(PARAM_NAMES)
        from queries.plot import METRIC_NAMES

        out["metrics"] = list(METRIC_NAMES)
        return _json(out)

    @app.post("/api/sweeps")
    async def post_sweep(request: Request) -> Response:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in SPEC_TYPES:
            raise _Error(415, f"send the TOML spec as the body with Content-Type: application/toml "
                              f"(or JSON {{\"spec\": \"...\"}}), not '{ctype or 'none'}'")
        body = await _read_body(request, config.max_body_bytes)
        if ctype == "application/json":
            text: str | bytes = _json_object(body, "spec", 'JSON body must be {"spec": "<TOML text>"}')["spec"]
        else:
            text = body
        return _json(*submit_spec(text))

    def submit_spec(text: str | bytes) -> tuple[dict[str, Any], int]:
        # validated exactly as `stoprace run spec.toml` validates the file (same parser, same messages)
        try:
            spec = parse_spec(text, where="spec.toml")
        except SpecError as e:
            raise _Error(400, str(e)) from None
        location = os.path.abspath(registry.submit_root / spec.name)
        for s in registry.all():
            if s.key == spec.name and os.path.abspath(s.location) != location:
                raise Conflict(f"a sweep named '{spec.name}' is already served from {s.location}")
        active = runner.active(spec.name)
        if active is not None:
            raise Conflict(f"sweep '{spec.name}' is already {active.state} (GET /api/sweeps/{spec.name})")
        p = Path(location)
        if p.exists():
            m = read_manifest(location)
            if m is None:
                if not p.is_dir() or any(p.iterdir()):
                    raise Conflict(f"{location} exists and is not a stoprace result set")
            elif m.get("spec_hash") != spec.spec_hash:
                raise Conflict(f"{location} holds results of a different spec named '{spec.name}' "
                               f"(hash {str(m.get('spec_hash'))[:12]}…, this spec {spec.spec_hash[:12]}…)")
            elif m.get("n_tasks") is not None and count_ranges(m.get("tasks_done") or []) >= int(m["n_tasks"]):
                return {"name": spec.name, "location": location, "status": "complete"}, 200
        run = runner.submit(spec.name, location, spec.to_toml())
        return {"name": spec.name, "location": location, "status": run.state}, 202

    @app.get("/api/sweeps/{name}/outcomes")
    def outcomes(name: str) -> Response:
        from queries.named import run_sql

        s = served(name)
        body = answers.get([s], ("outcomes",), lambda: to_json_bytes(run_query([s], lambda con: run_sql(con, OUTCOMES_SQL))))
        return Response(body, media_type="application/json")

    @app.get("/api/named")
    def named_list() -> Response:
        from queries.named import list_named

        return _json([{"name": q.name, "description": q.description,
                       "params": [{"name": p.name, "default": p.default, "help": p.help} for p in q.params]}
                      for q in list_named()])

    @app.get("/api/sweeps/{name}/named/{query}")
    def named(name: str, query: str, request: Request) -> Response:
        from queries.named import run_named

        params = dict(request.query_params)
        s = served(name)
        body = answers.get([s], ("named", query, tuple(sorted(params.items()))),
                           lambda: to_json_bytes(run_query([s], lambda con: run_named(con, query, params))))
        return Response(body, media_type="application/json")

    @app.get("/api/sweeps/{name}/capacity")
    def capacity_(name: str, target_p: float, by: str | None = None, metric: str = "p_bad",
                  hosts: float | None = None, kexecs_per_host_year: float | None = None,
                  where: str | None = None, split: str | None = None) -> Response:
        from queries.capacity import capacity

        for label, v in (("target_p", target_p), ("hosts", hosts), ("kexecs_per_host_year", kexecs_per_host_year)):
            if v is not None and not math.isfinite(v):
                raise _Error(400, f"{label} must be a finite number")
        axes = None if by is None else _names(by)
        splits = _names(split or "")
        where = where or None
        s = served(name)
        key = ("capacity", target_p, None if axes is None else tuple(axes), metric, hosts, kexecs_per_host_year,
               where, tuple(splits))
        body = answers.get([s], key, lambda: _json_bytes(run_query([s], lambda con: capacity(
            con, target_p, by=axes, metric=metric, hosts=hosts, kexecs_per_host_year=kexecs_per_host_year,
            where=where, split=splits)).to_dict()))
        return Response(body, media_type="application/json")

    @app.get("/api/sweeps/{name}/plot.svg")
    def plot_svg(name: str, x: str, y: str | None = None, lines: str | None = None, metric: str = "p_race",
                 where: str | None = None) -> Response:
        from queries.plot import plot

        s = served(name)

        def svg() -> bytes:
            with tempfile.TemporaryDirectory(prefix="stoprace-plot-") as tmp:
                out = Path(tmp) / "plot.svg"

                def draw(con):
                    with _PLOT_LOCK:
                        return plot(con, out, x=x, y=y, lines=lines, metric=metric, where=where or None)

                run_query([s], draw)
                return out.read_bytes()

        return Response(answers.get([s], ("plot", x, y, lines, metric, where), svg), media_type="image/svg+xml")

    @app.get("/api/sweeps/{name}/replay")
    def replay_(name: str, point: str, shard: int, trial: int) -> Response:
        from queries.replay import replay, replay_json

        r = replay(served(name).location, point, shard, trial)  # a local dir or a URI, as the CLI
        return _json(replay_json(r))

    @app.post("/api/query")
    async def post_query(request: Request) -> Response:
        body = await _read_body(request, config.max_body_bytes)
        obj = _json_object(body, "sql", 'body must be {"sql": "...", "sweeps": ["name", ...], "params": {...}}')
        names = obj.get("sweeps")
        if names is None:
            targets = registry.all()
        elif isinstance(names, list) and names and all(isinstance(n, str) for n in names):
            targets = [served(n) for n in dict.fromkeys(names)]
        else:
            raise _Error(400, '"sweeps" must be a non-empty list of sweep names')
        if not targets:
            raise NotFound("no sweep is served here")
        params = obj.get("params") or {}
        if not isinstance(params, dict) or not all(isinstance(v, (str, int, float)) for v in params.values()):
            raise _Error(400, '"params" must be an object of names to numbers or strings')
        return await _in_thread(lambda: _sql_response(targets, obj["sql"], params))

    def _sql_response(targets: list[Served], sql: str, params: dict[str, Any]) -> Response:
        from queries.named import run_sql

        limit = config.row_limit
        table = run_query(targets, lambda con: run_sql(con, sql, params, limit=limit + 1))
        truncated = table.num_rows > limit
        if truncated:
            table = table.slice(0, limit)
        head = json.dumps({"columns": table.column_names, "truncated": truncated, "row_limit": limit})
        return Response(head[:-1].encode() + b', "rows": ' + to_json_bytes(table) + b"}",
                        media_type="application/json")

    from sweeps.serve.analysis import add_routes as add_analysis_routes  # importance, compare (issue 21)

    add_analysis_routes(app, served=served, run_query=run_query, answers=answers, json_bytes=_json_bytes, names=_names)

    # ---- dashboard -------------------------------------------------------------------------
    static = _static_dir()

    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(static / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=static), name="static")
    return app


def _names(text: str) -> list[str]:
    """'a, b' -> ['a', 'b'] (the API's spelling of the CLI's repeated AXIS arguments)."""
    return [a.strip() for a in text.split(",") if a.strip()]


async def _read_body(request: Request, limit: int) -> bytes:
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limit:
        raise _Error(413, f"body of {size} bytes is over the limit of {limit}")
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limit:
            raise _Error(413, f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_object(body: bytes, key: str, usage: str) -> dict[str, Any]:
    """The body as a JSON object whose `key` is a string, else a 400 saying `usage`."""
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _Error(400, f"body is not JSON: {e}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get(key), str):
        raise _Error(400, usage)
    return obj


async def _in_thread(fn):
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn)


def shutdown(app: FastAPI) -> None:
    """Stop the app's background runs (SIGINT: finished tasks stay stored) and close its connections."""
    app.state.runner.stop()
    app.state.pool.close()
