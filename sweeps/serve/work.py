"""Heavy requests (queries, capacity, plots, replays) computed a few at a time, off the request threads.

A DuckDB query or a capacity table can take seconds of CPU; run on the server's request thread
pool, 45 of them at once took every thread and a `GET /api/sweeps` waited 9 s behind them. Here each
heavy computation runs on its own daemon thread that first waits for one of `slots` places: the
computations beyond that wait their turn without holding a request thread, so cheap requests (the
sweep list, progress, the page) are answered at once however many heavy ones queue. The threads are
daemons, so a computation that does not finish (a query not yet at its time limit, a loop) never
keeps the process from exiting on SIGTERM: at shutdown `close()` stops queued ones from starting,
the pool interrupts running queries, and `wait_idle()` says whether every computation ended (a
thread still inside DuckDB when the interpreter finalizes would abort the process, so the server
then leaves with os._exit). `GET /api/server` shows how many run and wait.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sweeps.serve.errors import ServeError

__all__ = ["HeavyWork"]

T = TypeVar("T")


class HeavyWork:
    """At most `slots` heavy computations at once; `await heavy.run(fn)` is fn() computed in its turn."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.slots = slots
        self._places = threading.BoundedSemaphore(slots)
        self._lock = threading.Condition()
        self.running = 0
        self.queued = 0
        self.closed = False

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"slots": self.slots, "running": self.running, "queued": self.queued}

    def close(self) -> None:
        """No computation starts any more (the server is stopping): queued ones end with an error."""
        with self._lock:
            self.closed = True

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to `timeout` s for every running computation to end; False if some still run."""
        with self._lock:
            return self._lock.wait_for(lambda: self.running == 0, timeout)

    async def run(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()

        def settle(ok: bool, value: Any) -> None:
            if not done.done():  # the request may have gone (client left, server stopping)
                if ok:
                    done.set_result(value)
                else:
                    done.set_exception(value)

        def job() -> None:
            self._places.acquire()
            with self._lock:
                self.queued -= 1
                closed = self.closed
                if not closed:
                    self.running += 1
            outcome: tuple[bool, Any]
            if closed:
                self._places.release()
                outcome = (False, ServeError("the server is stopping"))
            else:
                try:
                    outcome = (True, fn())
                except BaseException as e:  # delivered to the request, which turns it into its answer
                    outcome = (False, e)
                finally:
                    with self._lock:
                        self.running -= 1
                        self._lock.notify_all()
                    self._places.release()
            try:
                loop.call_soon_threadsafe(settle, *outcome)
            except RuntimeError:  # the event loop is closed: nobody waits for this answer
                pass

        with self._lock:
            self.queued += 1
        threading.Thread(target=job, name="stoprace-heavy", daemon=True).start()
        return await done
