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

Token auth is kept as Ray sets it up (on for a new embedded Ray, on when
joining a cluster with a token in ``~/.ray/auth_token`` or ``RAY_AUTH_TOKEN``),
but Ray's warning about it at every start is not printed: callers say what
it means once (``token_auth_enabled``), e.g. in `stoprace run`'s start line.
Joining a cluster that refuses us (no or a wrong token) makes Ray's C++ client
log one ``gcs_client.cc`` warning per retry (~20, straight to file descriptor
2) before ``ray.init`` raises; those are held back while connecting, so the
caller's one-line error is all a user sees. Anything else said while
connecting is passed on.

Workers on a cluster started elsewhere cannot import this project unless it
is installed there or shipped: pass ``runtime_env={"py_modules": [core,
sweeps, cluster]}`` (module objects are accepted by Ray), or a
``working_dir``. This module never builds that list itself because
``cluster`` must not import the model packages.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from contextlib import contextmanager
from typing import Any, Iterator

__all__ = ["connect", "disconnect", "ray_is_up", "session", "resolve_address", "token_auth_enabled"]

# Ray logs "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled
# to opt out ..." on this logger at every ray.init() that turns token auth on by default.
_AUTH_SETUP_LOGGER = "ray._private.authentication.authentication_token_setup"


def token_auth_enabled() -> bool:
    """True when this process uses Ray token auth (Ray sets RAY_AUTH_MODE=token when it turns it on)."""
    return os.environ.get("RAY_AUTH_MODE", "").strip().lower() == "token"


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
    import ray  # here, not at import: resolve_address and a run that stays in-process need no Ray

    if ray.is_initialized():
        return False
    target = resolve_address(address)
    logging.getLogger(_AUTH_SETUP_LOGGER).setLevel(logging.ERROR)  # said once by the caller instead
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
        with _retry_warnings_held_back():
            ray.init(address=target, **common)
    return True


_RETRY_WARNING = "gcs_client.cc"
"""What Ray's C++ GCS client logs on every failed attempt to join (with its own timestamp)."""


@contextmanager
def _retry_warnings_held_back() -> Iterator[None]:
    """File descriptor 2 into a temporary file while Ray joins a cluster; afterwards everything is
    written to the real stderr except, if joining failed, the per-retry ``gcs_client.cc`` lines."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable fd 2: nothing to hold back
        yield
        return
    joined = False
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
            joined = True
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode(errors="replace").splitlines(keepends=True)
            if not joined:
                lines = [ln for ln in lines if _RETRY_WARNING not in ln]
            if lines:
                sys.stderr.write("".join(lines))
                sys.stderr.flush()


def disconnect(started: bool) -> None:
    """``ray.shutdown()`` if ``started`` (the value ``connect`` returned), else nothing."""
    if started:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def ray_is_up() -> bool:
    """True if this process has a Ray session (without importing Ray when nothing did)."""
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())


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
