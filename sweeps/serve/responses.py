"""JSON answers written as the CLI writes them, so both doors agree to the byte."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import Response

__all__ = ["json_bytes", "json_response", "names"]


def json_bytes(data: Any) -> bytes:
    """As the CLI writes JSON (`capacity --format json`): default=str, no NaN."""
    return json.dumps(data, default=str, allow_nan=False).encode()


def json_response(data: Any, status: int = 200) -> Response:
    return Response(json_bytes(data), status_code=status, media_type="application/json")


def names(text: str) -> list[str]:
    """'a, b' -> ['a', 'b'] (the API's spelling of the CLI's repeated AXIS arguments)."""
    return [a.strip() for a in text.split(",") if a.strip()]
