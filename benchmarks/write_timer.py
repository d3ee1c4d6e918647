"""WriteTimer: the driver's time in ResultStore.write_task, for the benchmarks that split a run's
overhead into its parts (bench_cluster.py, bench_tasks.py)."""

from __future__ import annotations

import time

from sweeps.store import ResultStore


class WriteTimer:
    """Wraps ResultStore.write_task to time the driver's store per result."""

    def __init__(self) -> None:
        self.n, self.seconds = 0, 0.0
        self._orig = ResultStore.write_task

    def __enter__(self) -> WriteTimer:
        orig, timer = self._orig, self

        def write_task(store, *a, **kw):
            t0 = time.perf_counter()
            try:
                return orig(store, *a, **kw)
            finally:
                timer.seconds += time.perf_counter() - t0
                timer.n += 1

        ResultStore.write_task = write_task  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        ResultStore.write_task = self._orig  # type: ignore[method-assign]
