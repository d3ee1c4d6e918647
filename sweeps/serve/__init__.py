"""`stoprace serve`: an HTTP API and a web dashboard over result sets, and sweeps submitted from the browser.

- registry.py: which result sets are served (dirs, roots of dirs, URIs) and their progress;
- pool.py: read-only DuckDB connections (queries.connect) per set, each query time-limited;
- runs.py: submitted sweeps, run one at a time as `stoprace run` (or `submit`) child processes;
- app.py: the FastAPI app (API routes, errors as one-line JSON, token and Host checks, the dashboard);
- static/: the dashboard (plain HTML/CSS/JS, no CDN, shipped as package data).
"""

from sweeps.serve.app import ServeConfig, create_app, shutdown

__all__ = ["ServeConfig", "create_app", "shutdown"]
