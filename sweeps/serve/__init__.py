"""`stoprace serve`: an HTTP API and a web dashboard over result sets, and sweeps submitted from the browser.

- registry.py: which result sets are served (dirs, roots of dirs, URIs) and their progress;
- pool.py: read-only DuckDB connections (queries.connect) per set, each query time-limited;
- runs.py: submitted sweeps, run one at a time as `stoprace run` (or `submit`) child processes;
- app.py: `create_app`, which puts together config.py (ServeConfig), deps.py (the services routes
  ask for), security.py (token, Host, request bodies), errors.py (refusals as one-line JSON) and
  routes/ (one router per group: sweeps, runs, queries, capacity, plot, replay, dashboard);
- static/: the dashboard (plain HTML/CSS/JS, no CDN, shipped as package data).
"""

from sweeps.serve.app import create_app, shutdown
from sweeps.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app", "shutdown"]
