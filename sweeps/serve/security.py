"""The server's guards on every request: the token, the Host header, and what a body may be.

- token: with `--token`, every request carries `Authorization: Bearer T` (or the cookie that
  `/?token=T` sets once, since a browser cannot send a header on navigation);
- Host: without a token the server answers only under its own names (DNS rebinding: a foreign
  page that resolves its name to 127.0.0.1 gets a 403);
- bodies: only with the content type the endpoint takes (415 otherwise: a "simple" text/plain or
  form POST, which a foreign web page can send to this machine without a CORS preflight, never
  runs a query or a sweep); read up to `max_body_bytes` (413 past it); JSON parsed with bounds
  (nesting depth, integers within 64 bits, finite numbers, no NaN), else a one-line 400 that says
  what was wrong and what to send.
"""

from __future__ import annotations

import hmac
import json
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse

from sweeps.serve.config import ServeConfig
from sweeps.serve.errors import ApiError, error_response

__all__ = ["JSON_TYPES", "MAX_JSON_DEPTH", "SPEC_TYPES", "TOKEN_COOKIE", "content_type", "install_guard",
           "json_object", "read_body"]

SPEC_TYPES = ("application/toml", "text/toml", "text/x-toml", "application/json")
"""Content types POST /api/sweeps accepts. Not text/plain or a form: those are "simple" requests a
foreign web page could send to a server on this machine without a CORS preflight."""
JSON_TYPES = ("application/json",)
"""What POST /api/query accepts (for the same reason)."""
TOKEN_COOKIE = "stoprace_token"
MAX_JSON_DEPTH = 8
"""Nesting a request body may have (the API's bodies are 3 deep); deeper is refused before it is used."""
_INT_DIGITS = 19


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


def content_type(request: Request, allowed: tuple[str, ...], usage: str) -> str:
    """The request's media type if it is one of `allowed`, else a 415 that says `usage`."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in allowed:
        raise ApiError(415, f"{usage}, not '{ctype or 'none'}'")
    return ctype


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


def _int(text: str) -> int:
    # before int(): a 5,000-digit literal is a ValueError there (Python's int/str conversion limit)
    v = int(text) if len(text.lstrip("-")) <= _INT_DIGITS else None
    if v is None or not -(2**63) <= v < 2**63:
        raise ApiError(400, f"body is not usable JSON: integer {text[:24]}{'…' if len(text) > 24 else ''} "
                            "is out of range (64 bits)")
    return v


def _float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ApiError(400, f"body is not usable JSON: number {text[:24]} is out of range")
    return v


def _constant(name: str) -> Any:
    raise ApiError(400, f"body is not JSON: {name} is not a JSON value")


def _depth(obj: Any) -> int:
    deepest, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, (dict, list)):
            deepest = max(deepest, d)
            stack.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o))
    return deepest


def json_object(body: bytes, key: str, usage: str) -> dict[str, Any]:
    """The body as a JSON object whose `key` is a string, else a 400 saying `usage`.

    Hostile JSON is a one-line 400 too, never a 500: nesting past MAX_JSON_DEPTH (or past Python's
    recursion limit while parsing), integers beyond 64 bits (a 5,000-digit one included), numbers
    that overflow to infinity, NaN/Infinity."""
    try:
        obj = json.loads(body, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ApiError(400, f"body is not JSON: {e}") from None
    except RecursionError:
        raise ApiError(400, f"body is not usable JSON: nested more than {MAX_JSON_DEPTH} deep") from None
    if _depth(obj) > MAX_JSON_DEPTH:
        raise ApiError(400, f"body is not usable JSON: nested more than {MAX_JSON_DEPTH} deep")
    if not isinstance(obj, dict) or not isinstance(obj.get(key), str):
        raise ApiError(400, usage)
    return obj
