"""Shared fixtures: the one embedded Ray, and the `stoprace` command run in this process.

Like SimPy's tests/conftest.py (an `env` fixture and a `log` fixture every test module shares):

- `ray_session` starts one 2-CPU embedded Ray (the machine is shared; never more) for the
  module that uses it and shuts it down after that module, so modules that start their own
  clusters (tests/test_cluster.py) or check a fresh process (subprocess CLI runs) never find
  a session left over;
- `stoprace` runs the CLI in this process and returns its exit code, stdout and stderr, with
  `one_line_error` for the "one line, exit 2" rule every bad input must follow.

Helpers that tests import by name stay in tests/sweep_helpers.py (runs, result dirs,
subprocesses) and tests/synthetic_results.py (hand-made result sets).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class CliResult:
    """What one `stoprace ...` call did."""

    rc: int
    out: str
    err: str

    def one_line_error(self, command: str) -> str:
        """Assert bad input was refused as the CLI promises (exit 2, one stderr line); return the message."""
        assert self.rc == 2, f"rc {self.rc}: {self.err}"
        prefix = f"stoprace {command}: error: "
        assert self.err.count("\n") == 1 and self.err.startswith(prefix), self.err
        assert "Traceback" not in self.err
        return self.err[len(prefix):].rstrip("\n")


@pytest.fixture
def stoprace(capsys) -> Callable[..., CliResult]:
    """`stoprace(*args)`: run the CLI in this process (sweeps.cli.main) and capture its output."""
    from sweeps.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()  # drop anything printed before
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return CliResult(rc, out, err)

    return run


@pytest.fixture(scope="module")
def ray_session():
    """A 2-CPU embedded Ray, up for the whole module; code under test must leave it running."""
    import ray

    from cluster.connect import connect, disconnect

    saved = os.environ.pop("RAY_ADDRESS", None)  # these tests want their own embedded Ray
    try:
        started = connect(num_cpus=2)
        assert started, "Ray was already initialised before this module"
        yield
        disconnect(started)
        assert not ray.is_initialized()
    finally:
        if saved is not None:
            os.environ["RAY_ADDRESS"] = saved
