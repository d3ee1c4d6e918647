"""GET /api/sweeps/{name}/replay: `stoprace replay DIR --json` over HTTP (one trial's timeline)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from sweeps.serve.deps import ServedDep, ServicesDep
from sweeps.serve.responses import json_response

router = APIRouter(prefix="/api/sweeps", tags=["replay"])


@router.get("/{name}/replay")
async def replay_(served: ServedDep, svc: ServicesDep, point: str, shard: int, trial: int) -> Response:
    from queries.replay import replay, replay_json

    # a local dir or a URI, as the CLI; recomputing a trial of n_cpus CPUs is heavy work
    return json_response(await svc.compute(lambda: replay_json(replay(served.location, point, shard, trial))))
