"""GET /api/sweeps/{name}/plot.svg: `stoprace plot` over HTTP, as SVG."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

from sweeps.serve.deps import ServedDep, ServicesDep

router = APIRouter(prefix="/api/sweeps", tags=["plot"])

_PLOT_LOCK = threading.Lock()  # matplotlib's font cache and text layout are not thread-safe


@router.get("/{name}/plot.svg")
async def plot_svg(served: ServedDep, svc: ServicesDep, x: str, y: str | None = None, lines: str | None = None,
             metric: str = "p_race", where: str | None = None) -> Response:
    from queries.plot import plot

    def svg() -> bytes:
        with tempfile.TemporaryDirectory(prefix="stoprace-plot-") as tmp:
            out = Path(tmp) / "plot.svg"

            def draw(con):
                with _PLOT_LOCK:
                    return plot(con, out, x=x, y=y, lines=lines, metric=metric, where=where or None)

            svc.query([served], draw)
            return out.read_bytes()

    return Response(await svc.answer([served], ("plot", x, y, lines, metric, where), svg), media_type="image/svg+xml")
