"""What `stoprace serve` was told: the one settings object the app and its dependencies read."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["LOOPBACK_HOSTS", "ServeConfig"]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServeConfig:
    """The options of `stoprace serve` (see sweeps/cli/serve.py for their flags)."""

    locations: list[str] = field(default_factory=list)
    token: str | None = None
    address: str | None = None
    workers: int | None = None
    query_timeout_s: float = 10.0
    row_limit: int = 10_000
    byte_limit: int = 8 << 20
    """Bytes of rows POST /api/query returns (beside row_limit); an answer cut by either says `truncated`."""
    max_body_bytes: int = 1 << 20
    trusted_hosts: tuple[str, ...] | None = LOOPBACK_HOSTS
    """Host headers accepted without a token (DNS rebinding); None accepts any (a token is required then)."""
    threads: int | None = 2
    """DuckDB threads per connection."""
    heavy_slots: int = 2
    """Heavy requests (queries, capacity, plots, replays) computed at once; more wait their turn
    (sweeps/serve/work.py) while cheap ones are answered."""
