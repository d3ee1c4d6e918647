"""The one error a result set reports: StoreError, one line naming the location."""

from __future__ import annotations

from core.errors import StopraceError


class StoreError(StopraceError):
    """A result-set problem (missing, foreign, locked, unknown format, unwritable): one line naming it."""


def one_line(e: BaseException) -> str:
    """An OSError's strerror, else the message on one line."""
    return getattr(e, "strerror", None) or " ".join(str(e).split())
