"""What the server answers when it refuses: JSON `{"error": "<one line>"}` with a 4xx status.

400 bad input (bad spec, bad SQL, refused SQL, time limit), 401 missing/wrong token, 403 a Host
that is not this server's, 404 unknown sweep, 409 conflict, 413 body too large, 415 wrong content
type; a bug is a 500 with a one-line body (the traceback goes to the server's log only).

`ServeError` (a StopraceError: bad input) carries its HTTP status; every other StopraceError the
libraries raise (SpecError, QueryError, StoreError, ...) is the user's input too, hence a 400.
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import StopraceError

__all__ = ["ApiError", "Conflict", "NotFound", "ServeError", "error_response", "install_error_handlers"]

log = logging.getLogger("stoprace.serve")


class ServeError(StopraceError):
    """A request the server refuses (HTTP 400 unless a subclass or `status` says otherwise); one line."""

    status = 400


class NotFound(ServeError):
    status = 404


class Conflict(ServeError):
    status = 409


class ApiError(ServeError):
    """A refusal with its status given where it is raised (413 body too large, 415 content type, ...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_response(status: int, message: object) -> JSONResponse:
    """The one shape of every refusal: `{"error": "<message on one line>"}`."""
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    """Every error the app can meet becomes `error_response` (never an HTML page or a traceback)."""

    @app.exception_handler(ServeError)
    async def _serve_error(_: Request, e: ServeError) -> JSONResponse:
        return error_response(e.status, e)

    @app.exception_handler(StopraceError)  # QueryError, SpecError, StoreError, ...: the user's input
    async def _user_error(_: Request, e: Exception) -> JSONResponse:
        return error_response(400, e)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, e: RequestValidationError) -> JSONResponse:
        parts = []
        for err in e.errors():
            where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "body", "path"))
            parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg")))
        return error_response(400, "bad request: " + "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        msg = e.detail if isinstance(e.detail, str) else json.dumps(e.detail)
        if e.status_code == 404 and msg == "Not Found":
            msg = "no such endpoint (the API is under /api/: /api/sweeps, /api/query)"
        return error_response(e.status_code, msg)

    @app.exception_handler(Exception)
    async def _bug(_: Request, e: Exception) -> JSONResponse:
        log.exception("internal error")
        return error_response(500, f"internal error ({type(e).__name__}); see the server's log")
