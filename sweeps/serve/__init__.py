"""`stoprace serve`: an HTTP API and a web dashboard over result sets, and sweeps submitted from the browser.

- registry.py: which result sets are served (dirs, roots of dirs, URIs) and their progress;
- pool.py: read-only DuckDB connections (queries.connect) per set, each query time-limited;
- runs.py: submitted sweeps, run one at a time as `stoprace run` (or `submit`) child processes;
- app.py: `create_app`, which puts together config.py (ServeConfig), deps.py (the services routes
  ask for), security.py (token, Host, request bodies), errors.py (refusals as one-line JSON) and
  routes/ (one router per group: sweeps, runs, queries, capacity, plot, replay, dashboard);
- static/: the dashboard (plain HTML/CSS/JS, no CDN, shipped as package data).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sweeps.serve.app import create_app, shutdown
    from sweeps.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app", "shutdown"]

_WHERE = {"ServeConfig": "sweeps.serve.config", "create_app": "sweeps.serve.app", "shutdown": "sweeps.serve.app"}


def __getattr__(name: str) -> Any:  # PEP 562: `stoprace serve --help` reads config.py alone
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'sweeps.serve' has no attribute '{name}'")
