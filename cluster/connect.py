"""Connecting the driver to Ray: embedded on this machine, or an existing cluster.

Rules (in order):

1. Ray already initialised in this process (a test fixture, a benchmark, a
   caller that runs several sweeps): use that session and do not own it.
2. ``address`` given, or the ``RAY_ADDRESS`` environment variable set: connect
   to that cluster. We own the *connection*; ``ray.shutdown()`` later only
   disconnects this driver, it never stops a cluster started elsewhere.
3. Otherwise start an embedded Ray with ``address="local"``. ``"local"``
   (not ``None``) matters: plain ``ray.init()`` would silently join whatever
   cluster was last started on this machine with ``ray start`` (it reads
   ``/tmp/ray/ray_current_cluster``), which on a shared box may be somebody
   else's.

``connect`` returns whether this call initialised Ray, so the caller shuts
down only what it started; ``session`` is the same as a context manager.

Workers on a cluster started elsewhere cannot import this project unless it
is installed there or shipped: pass ``runtime_env={"py_modules": [core,
sweeps, cluster]}`` (module objects are accepted by Ray), or a
``working_dir``. This module never builds that list itself because
``cluster`` must not import the model packages.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Any, Iterator

import ray

__all__ = ["connect", "disconnect", "session", "resolve_address"]


def resolve_address(address: str | None = None) -> str | None:
    """The cluster address to join: ``address``, else ``$RAY_ADDRESS``, else None (embedded)."""
    if address:
        return address
    env = os.environ.get("RAY_ADDRESS", "").strip()
    return env or None


def connect(
    address: str | None = None,
    num_cpus: int | None = None,
    *,
    runtime_env: dict[str, Any] | None = None,
    log_to_driver: bool = True,
) -> bool:
    """Make sure Ray is initialised; return True iff this call initialised it.

    ``num_cpus`` sizes an embedded Ray only; with a cluster address it is an
    error (the cluster's size is fixed by whoever started it; bound the work
    with ``run_map(max_in_flight=...)`` instead). ``runtime_env`` is passed
    through to ``ray.init`` in both modes. Ray's own INFO banner is silenced;
    warnings and worker output (``log_to_driver``) still reach stderr so a
    crashing worker is never silent.
    """
    if ray.is_initialized():
        return False
    target = resolve_address(address)
    common: dict[str, Any] = dict(
        runtime_env=runtime_env,
        log_to_driver=log_to_driver,
        logging_level=logging.WARNING,
    )
    if target is None:
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            **common,
        )
    else:
        if num_cpus is not None:
            raise ValueError(
                f"num_cpus={num_cpus} applies only to an embedded Ray; "
                f"cannot resize the cluster at {target!r} (use max_in_flight)"
            )
        ray.init(address=target, **common)
    return True


def disconnect(started: bool) -> None:
    """``ray.shutdown()`` if ``started`` (the value ``connect`` returned), else nothing."""
    if started and ray.is_initialized():
        ray.shutdown()


@contextmanager
def session(
    address: str | None = None,
    num_cpus: int | None = None,
    *,
    runtime_env: dict[str, Any] | None = None,
    log_to_driver: bool = True,
) -> Iterator[bool]:
    """Context manager around ``connect``/``disconnect``; yields whether we started Ray.

    Use it to keep one Ray session across several ``run_map`` calls: inside
    the block Ray is initialised, so ``run_map`` uses it and leaves it up.
    """
    started = connect(
        address, num_cpus, runtime_env=runtime_env, log_to_driver=log_to_driver
    )
    try:
        yield started
    finally:
        disconnect(started)
