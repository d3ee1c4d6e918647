"""`python -m sweeps.serve.child ARGS...`: `stoprace ARGS` run for the server, ending when the server is gone.

The server starts each submitted run through this module with a pipe as its stdin and never
writes to it. The kernel closes the pipe's write end when the server process ends for any reason
(SIGKILL and crashes too), which this process sees as end-of-file: it then sends itself SIGTERM,
which `stoprace run` handles as Ctrl-C (every finished task stored, the writer lock released), so
a killed server never leaves a run writing its result set and the next submission can resume it.
(A portable pipe watch rather than Linux's PR_SET_PDEATHSIG, which fires when the *thread* that
started the child ends, not the process.)
"""

from __future__ import annotations

import os
import signal
import sys
import threading


def _watch_parent(fd: int) -> None:
    # os.read on the raw descriptor: a daemon thread blocked in sys.stdin's buffered reader would make
    # the interpreter abort at exit (it cannot take that reader's lock)
    try:
        while os.read(fd, 4096):
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str]) -> int:
    fd = os.dup(sys.stdin.fileno())  # the pipe; stdin itself is then the null device for everyone else
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, sys.stdin.fileno())
    os.close(null)
    threading.Thread(target=_watch_parent, args=(fd,), name="stoprace-parent-watch", daemon=True).start()
    from sweeps.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
