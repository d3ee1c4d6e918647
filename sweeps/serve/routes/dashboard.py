"""The dashboard: / and /static/ (plain HTML/CSS/JS shipped as package data, no CDN)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["STATIC_DIR", "router", "static_files"]

STATIC_DIR = Path(str(resources.files("sweeps.serve").joinpath("static")))

router = APIRouter(tags=["dashboard"])


@router.get("/")
def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")



def static_files() -> StaticFiles:
    """The app mounted at /static (an APIRouter cannot carry a mount into the app it is included in)."""
    return StaticFiles(directory=STATIC_DIR)
