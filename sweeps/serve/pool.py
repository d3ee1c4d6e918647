"""DuckDB connections for the server: a small pool per set of result sets, each query under a time limit.

A DuckDB connection runs one query at a time and its views (queries.connect) are
temporary objects of that connection, so concurrent requests each borrow their own
connection: up to `per_key` open ones per set of result sets, kept for reuse. A
connection is dropped and reopened when a result set's manifest changed (a running
sweep stored more tasks), so answers follow the run. Every connection comes from
`queries.connect`, hence is read-only (queries/sandbox.py).

`limited(con, fn, seconds)` runs fn with a timer that interrupts the connection's
query when the time is up; a connection that was interrupted is closed, never
reused (an interrupt that lands between queries must not hit the next one).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import duckdb

from queries import connect
from queries.resultset.storage import is_uri
from sweeps.serve.errors import ServeError
from sweeps.serve.registry import Served
from sweeps.store import MANIFEST

__all__ = ["Lease", "Pool", "QueryTimeout", "limited"]

T = TypeVar("T")
_REMOTE_STAMP_S = 10.0
"""A set on an object store is re-opened at most this often (no cheap mtime there)."""


class QueryTimeout(ServeError):
    """A query ran past the server's time limit (HTTP 400)."""


def _stamp(served: Sequence[Served]) -> tuple:
    """Changes whenever one of the manifests changes (local) or every _REMOTE_STAMP_S (URIs)."""
    parts: list[object] = []
    for s in served:
        if is_uri(s.location):
            parts.append(int(time.monotonic() // _REMOTE_STAMP_S))
            continue
        try:
            st = os.stat(os.path.join(s.location, MANIFEST))
            parts.append((st.st_mtime_ns, st.st_size))
        except OSError:
            parts.append(None)
    return tuple(parts)


class Pool:
    """Borrow a read-only connection over some result sets: `with pool.borrow(served) as con: ...`."""

    def __init__(self, per_key: int = 4, threads: int | None = None) -> None:
        self.per_key = per_key
        self.threads = threads
        self._closed = False
        self._idle: dict[tuple[str, ...], list[tuple[tuple, duckdb.DuckDBPyConnection]]] = {}
        self._leased: set[duckdb.DuckDBPyConnection] = set()
        self._slots: dict[tuple[str, ...], threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    @contextmanager
    def borrow(self, served: Sequence[Served]) -> Iterator[Lease]:
        key = tuple(s.location for s in served)
        with self._lock:
            slots = self._slots.setdefault(key, threading.BoundedSemaphore(self.per_key))
        slots.acquire()
        try:
            stamp = _stamp(served)
            con = None
            with self._lock:
                idle = self._idle.setdefault(key, [])
                while idle:
                    s, c = idle.pop()
                    if s == stamp:
                        con = c
                        break
                    c.close()
            if con is None:
                con = connect(*key, threads=self.threads)
            with self._lock:
                self._leased.add(con)
            lease = Lease(con)
            ok = False
            try:
                yield lease
                ok = True
            finally:
                with self._lock:
                    self._leased.discard(con)
                if ok and not lease.spoiled and not self._closed:
                    with self._lock:
                        self._idle.setdefault(key, []).append((stamp, con))
                else:
                    con.close()
        finally:
            slots.release()

    def close(self) -> None:
        """Close idle connections and interrupt the queries still running (the server is stopping)."""
        with self._lock:
            self._closed = True
            for idle in self._idle.values():
                for _, c in idle:
                    c.close()
            self._idle.clear()
            for c in self._leased:
                c.interrupt()


class Lease:
    """A borrowed connection; `spoiled` ones (interrupted) are closed instead of returned."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.spoiled = False


class _Flag:
    fired = False


def limited(lease: Lease, fn: Callable[[duckdb.DuckDBPyConnection], T], seconds: float) -> T:
    """fn(con) with the lease's running query interrupted after `seconds`; QueryTimeout then."""
    flag = _Flag()
    con = lease.con

    def fire() -> None:
        flag.fired = True
        lease.spoiled = True
        con.interrupt()

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        return fn(con)
    except Exception:
        if flag.fired:
            raise QueryTimeout(f"query stopped after the time limit of {seconds:g} s") from None
        raise
    finally:
        timer.cancel()


class Answers:
    """Answers of the read endpoints, kept while the result sets they came from are unchanged.

    Keyed by (locations, request, manifest stamp): a complete sweep's outcomes or capacity
    table is computed once, not once per client (the outcomes view merges every shard's
    histogram, ~0.1-1 s on the example sweep); a running sweep's answers expire with each
    manifest update. Concurrent requests for the same key wait for one computation.
    """

    def __init__(self, size: int = 256) -> None:
        from collections import OrderedDict

        self.size = size
        self._data: OrderedDict[tuple, object] = OrderedDict()
        self._locks: dict[tuple, threading.Lock] = {}
        self._lock = threading.Lock()

    def peek(self, served: Sequence[Served], request: tuple) -> tuple[bool, object]:
        """(True, the kept answer) if there is one for this state of the sets, else (False, None)."""
        key = (tuple(s.location for s in served), request, _stamp(served))
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return True, self._data[key]
        return False, None

    def get(self, served: Sequence[Served], request: tuple, compute: Callable[[], T]) -> T:
        key = (tuple(s.location for s in served), request, _stamp(served))
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]  # type: ignore[return-value]
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                if key in self._data:
                    return self._data[key]  # type: ignore[return-value]
            value = compute()  # errors are not kept: the next request tries again
            with self._lock:
                self._data[key] = value
                self._locks.pop(key, None)
                while len(self._data) > self.size:
                    self._data.popitem(last=False)
            return value
