"""GET /api/sweeps/{name}/replay: `stoprace replay DIR --json` over HTTP (one trial's timeline)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from sweeps.serve.deps import ServedDep
from sweeps.serve.responses import json_response

router = APIRouter(prefix="/api/sweeps", tags=["replay"])


@router.get("/{name}/replay")
def replay_(served: ServedDep, point: str, shard: int, trial: int) -> Response:
    from queries.replay import replay, replay_json

    r = replay(served.location, point, shard, trial)  # a local dir or a URI, as the CLI
    return json_response(replay_json(r))
