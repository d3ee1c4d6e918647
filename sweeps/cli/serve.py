"""`stoprace serve`: the HTTP API and dashboard over result sets (sweeps/serve/)."""

from __future__ import annotations

import argparse
import os
import socket
import sys

from sweeps.cli.args import count_arg
from sweeps.errors import UsageError

COMMANDS = {"serve": "HTTP API and web dashboard over result sets; submit sweeps from the browser"}
DEFAULT_PORT = 8470
SHUTDOWN_GRACE_S = 5
"""Seconds a stopping server gives requests in flight to finish before it cancels them."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommand(s) to the `stoprace` parser."""
    from sweeps.serve.config import ServeConfig

    d = ServeConfig()
    p = sub.add_parser(
        "serve",
        help=COMMANDS["serve"],
        description=(
            "Serve result sets over HTTP: a JSON API (the same numbers and columns as the CLI's --format json) "
            "and a dashboard at /. Each DIR_OR_URI is a result set, or a directory holding result sets (rescanned, "
            "so new ones appear). Sweeps submitted through the API run one at a time on an embedded Ray (or as Ray "
            "Jobs with --address) into <first such directory>/<sweep name> (default ./results). Binds 127.0.0.1; any "
            "other --host needs --token, then every request must carry 'Authorization: Bearer TOKEN'."
        ),
    )
    p.add_argument("locations", nargs="*", metavar="DIR_OR_URI", help="result sets or directories of them (default results)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need --token)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--token", metavar="T", help="bearer token every request must carry (required off loopback)")
    p.add_argument("--address", metavar="URL", help="run submitted sweeps as Ray Jobs on this cluster (http://HEAD:8265)")
    p.add_argument("--workers", type=count_arg, metavar="N", help="CPUs of the embedded Ray of each submitted run")
    p.add_argument("--query-timeout", type=float, default=d.query_timeout_s, metavar="S",
                   help=f"time limit of one API query (default {d.query_timeout_s:g} s)")
    p.add_argument("--row-limit", type=count_arg, default=d.row_limit, metavar="N",
                   help=f"rows returned by POST /api/query (default {d.row_limit})")
    p.add_argument("--byte-limit", type=count_arg, default=d.byte_limit, metavar="N",
                   help=f"bytes of rows returned by POST /api/query (default {d.byte_limit}); "
                        "an answer cut by either limit says truncated")
    p.add_argument("--heavy", type=count_arg, default=d.heavy_slots, metavar="N",
                   help=f"heavy requests (queries, capacity, plots, replays) computed at once (default "
                        f"{d.heavy_slots}); more wait their turn while the sweep list and the page are answered")
    p.set_defaults(func=handle)


def _loopback(host: str) -> bool:
    from sweeps.serve.config import LOOPBACK_HOSTS

    return host in LOOPBACK_HOSTS or host.startswith("127.")


def handle(args: argparse.Namespace) -> int:
    """Check the options, build the app, run uvicorn until Ctrl-C/SIGTERM, then stop background runs."""
    import uvicorn

    from sweeps.serve import ServeConfig, create_app, shutdown
    from sweeps.serve.config import LOOPBACK_HOSTS

    if not _loopback(args.host) and not args.token:
        raise UsageError(f"--host {args.host} exposes the server beyond this machine: give --token T "
                         "(every request must then carry 'Authorization: Bearer T')")
    if args.token is not None and len(args.token) < 8:
        raise UsageError("--token must be at least 8 characters")
    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port} must be in 1..65535")
    if not (args.query_timeout > 0):
        raise UsageError("--query-timeout must be positive")
    try:
        with socket.create_server((args.host, args.port)):
            pass
    except OSError as e:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    config = ServeConfig(locations=list(args.locations), token=args.token, address=args.address,
                         workers=args.workers, query_timeout_s=args.query_timeout, row_limit=args.row_limit,
                         byte_limit=args.byte_limit, heavy_slots=args.heavy,
                         trusted_hosts=None if args.token else (*LOOPBACK_HOSTS, args.host))
    app = create_app(config)
    _Server = _uvicorn_server()
    n = len(app.state.services.registry.all())
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"stoprace serve: http://{host}:{args.port}/ ({n} result set{'s' if n != 1 else ''}; new sweeps go to "
          f"{app.state.services.registry.submit_root}/)", file=sys.stderr, flush=True)
    # a request still computing after SIGTERM is cut off after SHUTDOWN_GRACE_S (its thread is a daemon)
    server = _Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                                    timeout_graceful_shutdown=SHUTDOWN_GRACE_S))
    try:
        server.run()
    finally:
        idle = shutdown(app)  # a running sweep gets SIGINT and keeps its finished tasks
    if not idle:  # a request still computing: leave without finalizing under its thread
        print("stoprace serve: stopped; a request still computing was abandoned", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(0)
    return 0


def _uvicorn_server():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, but Ctrl-C/SIGTERM end it with exit code 0 after a graceful shutdown
        (uvicorn re-raises the signal afterwards, so the process would die of it before our cleanup)."""

        def handle_exit(self, sig, frame) -> None:
            super().handle_exit(sig, frame)
            self._captured_signals.clear()

    return Server


__all__ = ["COMMANDS", "handle", "register"]
