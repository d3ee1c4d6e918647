"""Shared fixtures: one embedded Ray per test module that asks for it.

Like SimPy's tests/conftest.py (an `env` fixture and a `log` fixture that every test module
shares), the expensive environment is made in one place: `ray_session` starts one 2-CPU
embedded Ray (the machine is shared; never more) for the module that uses it and shuts it
down after the module, so modules that start their own clusters (tests/test_cluster.py) or
check a fresh process (subprocess CLI runs) never find a session left over. Helpers that
tests import by name stay in tests/sweep_helpers.py (runs, result dirs, subprocesses) and
tests/synthetic_results.py (hand-made result sets).
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module")
def ray_session():
    """A 2-CPU embedded Ray, up for the whole module; code under test must leave it running."""
    from cluster.connect import connect, disconnect

    saved = os.environ.pop("RAY_ADDRESS", None)  # these tests want their own embedded Ray
    try:
        started = connect(num_cpus=2)
        assert started, "Ray was already initialised before this module"
        yield
        disconnect(started)
    finally:
        if saved is not None:
            os.environ["RAY_ADDRESS"] = saved
