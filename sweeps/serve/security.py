"""The server's guards on every request: the token, the Host header, and what a body may be.

- token: with `--token`, every request carries `Authorization: Bearer T` (or the cookie that
  `/?token=T` sets once, since a browser cannot send a header on navigation);
- Host: without a token the server answers only under its own names (DNS rebinding: a foreign
  page that resolves its name to 127.0.0.1 gets a 403);
- bodies: read up to `max_body_bytes` (413 past it), and parsed as a JSON object with a string
  field, else a 400 that says what to send.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse

from sweeps.serve.config import ServeConfig
from sweeps.serve.errors import ApiError, error_response

__all__ = ["SPEC_TYPES", "TOKEN_COOKIE", "install_guard", "json_object", "read_body"]

SPEC_TYPES = ("application/toml", "text/toml", "text/x-toml", "application/json")
"""Content types POST /api/sweeps accepts. Not text/plain or a form: those are "simple" requests a
foreign web page could send to a server on this machine without a CORS preflight."""
TOKEN_COOKIE = "stoprace_token"


def install_guard(app: FastAPI, config: ServeConfig) -> None:
    """The token check (with --token) or the Host check (without), before any route runs."""

    @app.middleware("http")
    async def _guard(request: Request, call_next):
        if config.token is not None:
            given = request.query_params.get("token") if request.url.path == "/" else None
            if given is not None and hmac.compare_digest(given.encode(), config.token.encode()):
                # a browser cannot send a bearer header on navigation: trade ?token= for a cookie, once
                resp = RedirectResponse("/", status_code=303)
                resp.set_cookie(TOKEN_COOKIE, config.token, httponly=True, samesite="strict")
                return resp
            auth = request.headers.get("authorization", "")
            bearer = auth[7:] if auth.lower().startswith("bearer ") else None
            cookie = request.cookies.get(TOKEN_COOKIE)
            ok = any(v is not None and hmac.compare_digest(v.encode(), config.token.encode())
                     for v in (bearer, cookie))
            if not ok:
                return error_response(401, "this server needs its token: 'Authorization: Bearer <token>' "
                                           "(or open /?token=<token> once in a browser)")
        elif config.trusted_hosts is not None:
            host = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]")
            if host not in config.trusted_hosts:
                return error_response(403, f"Host '{host}' refused: this server answers only as "
                                           f"{'/'.join(config.trusted_hosts)} unless started with --token")
        return await call_next(request)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, at most `limit` bytes (413 beyond, whether or not Content-Length says so)."""
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limit:
        raise ApiError(413, f"body of {size} bytes is over the limit of {limit}")
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limit:
            raise ApiError(413, f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def json_object(body: bytes, key: str, usage: str) -> dict[str, Any]:
    """The body as a JSON object whose `key` is a string, else a 400 saying `usage`."""
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ApiError(400, f"body is not JSON: {e}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get(key), str):
        raise ApiError(400, usage)
    return obj
