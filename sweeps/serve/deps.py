"""What a route needs, as FastAPI dependencies: the server's services and the sweep a path names.

`Services` is built once by `create_app` (app.state.services): the registry of served result
sets, the DuckDB connection pool, the answer cache, the bounded pool of heavy work, the runner
of submitted sweeps and the config. A route computes anything heavy through `await
svc.compute(fn)` or, for an answer kept per state of its sets, `await svc.answer(...)`. A route asks for it as `svc: ServicesDep`, and for the result set of its `{name}` path
parameter as `served: ServedDep` (404 when no such sweep is served).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, TypeVar

import duckdb
from fastapi import Depends, Request

from sweeps.serve.config import ServeConfig
from sweeps.serve.pool import Answers, Pool, limited
from sweeps.serve.registry import Registry, Served
from sweeps.serve.runs import Runner
from sweeps.serve.work import HeavyWork

__all__ = ["Services", "ServicesDep", "ServedDep", "get_services", "get_served"]

T = TypeVar("T")


@dataclass
class Services:
    """The server's long-lived parts, shared by every request."""

    config: ServeConfig
    registry: Registry
    pool: Pool
    answers: Answers
    runner: Runner
    heavy: HeavyWork

    def query(self, targets: Sequence[Served], fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """fn(con) on a pooled read-only connection over `targets`, under the query time limit."""
        with self.pool.borrow(targets) as lease:
            return limited(lease, fn, self.config.query_timeout_s)

    async def compute(self, fn: Callable[[], T]) -> T:
        """fn() as heavy work: in its turn among at most `heavy_slots`, off the request threads."""
        return await self.heavy.run(fn)

    async def answer(self, targets: Sequence[Served], request: tuple, compute: Callable[[], T]) -> T:
        """The kept answer to `request` over `targets` at once, else compute() as heavy work (and keep it)."""
        found, value = self.answers.peek(targets, request)
        if found:
            return value  # type: ignore[return-value]
        return await self.heavy.run(lambda: self.answers.get(targets, request, compute))


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_served(name: str, svc: ServicesDep) -> Served:
    """The served result set whose key is the path's `{name}` (NotFound: 404)."""
    return svc.registry.get(name)


ServedDep = Annotated[Served, Depends(get_served)]
