"""JSON answers written as the CLI writes them, so both doors agree to the byte."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import Response

from sweeps.serve.errors import ApiError

__all__ = ["PARTIAL_HEADER", "PARTIAL_PARAM", "flag", "json_bytes", "json_response", "names", "partial_headers"]

PARTIAL_PARAM = "partial=true"
"""The API's spelling of the CLI's --partial (named in the refusal of an incomplete set)."""
PARTIAL_HEADER = "X-Stoprace-Partial"
"""On an answer given from an incomplete set on request: its `PARTIAL: ...` lines as a JSON list
(the body stays what the CLI's --format json prints; the CLI says these lines on stderr)."""


def json_bytes(data: Any) -> bytes:
    """As the CLI writes JSON (`capacity --format json`): default=str, no NaN."""
    return json.dumps(data, default=str, allow_nan=False).encode()


def json_response(data: Any, status: int = 200) -> Response:
    return Response(json_bytes(data), status_code=status, media_type="application/json")


def partial_headers(marks: list[str]) -> dict[str, str] | None:
    """PARTIAL_HEADER for an answer that carries PARTIAL lines (ASCII JSON: a header is Latin-1)."""
    return {PARTIAL_HEADER: json.dumps(marks)} if marks else None


def flag(value: str | None, name: str) -> bool:
    """A URL flag: absent/false/0 -> False, true/1 -> True, anything else a 400 naming it."""
    if value is None or value.lower() in ("false", "0", ""):
        return False
    if value.lower() in ("true", "1"):
        return True
    raise ApiError(400, f"{name}={value}: must be true or false")


def names(text: str) -> list[str]:
    """'a, b' -> ['a', 'b'] (the API's spelling of the CLI's repeated AXIS arguments)."""
    return [a.strip() for a in text.split(",") if a.strip()]
