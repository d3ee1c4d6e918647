"""Progress display for ``run_map``: a rich bar on a terminal, nothing otherwise.

Shows tasks done/total (total if known), the rate in units of the caller's
weight (e.g. "trials/s", averaged since start so it does not jump around with
task granularity) and an ETA. The bar (and so the ETA) follows the weight when
both a weight function and its total are known, since tasks may differ in
size; otherwise it follows the task count.
"""

from __future__ import annotations

import sys
import time
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

__all__ = ["Display", "make_display", "progress_enabled"]


class Display(Protocol):
    """What ``run_map`` needs from a progress display."""

    def start(self) -> None: ...
    def advance(self, tasks: int, weight: float, description: str | None = None) -> None: ...
    def stop(self) -> None: ...


def progress_enabled(progress: bool | None) -> bool:
    """``progress=None`` means: on iff stderr is a terminal; True/False force it."""
    if progress is None:
        try:
            return sys.stderr.isatty()
        except (AttributeError, ValueError):  # closed or replaced stderr
            return False
    return bool(progress)


class _NullDisplay:
    """Prints nothing: progress off, or stderr is not a TTY."""

    def start(self) -> None:
        pass

    def advance(self, tasks: int, weight: float, description: str | None = None) -> None:
        pass

    def stop(self) -> None:
        pass


def _human(x: float) -> str:
    """Compact number: 950, 12.3k, 4.56M."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"


class _TasksColumn(ProgressColumn):
    """'123/4567 tasks' (or '123 tasks' when the total is unknown)."""

    def render(self, task: Task) -> Text:
        done, total = task.fields["tasks_done"], task.fields["tasks_total"]
        label = task.fields["tasks_label"]
        s = f"{done}/{total} {label}" if total is not None else f"{done} {label}"
        return Text(s, style="progress.download", no_wrap=True)


class _RateColumn(ProgressColumn):
    """Mean weight units per second since start, e.g. '1.2M trials/s'."""

    def render(self, task: Task) -> Text:
        rate = task.fields["rate"]
        unit = task.fields["unit"]
        if rate is None:
            return Text(f"? {unit}/s", style="progress.data.speed", no_wrap=True)
        return Text(f"{_human(rate)} {unit}/s", style="progress.data.speed", no_wrap=True)


class _RichDisplay:
    def __init__(
        self,
        description: str,
        total_tasks: int | None,
        total_weight: float | None,
        weighted: bool,
        unit: str,
    ) -> None:
        # Bar follows weight only when it is meaningful and its total is known.
        self._by_weight = weighted and total_weight is not None
        self._total = total_weight if self._by_weight else total_tasks
        self._unit = unit
        self._tasks = 0
        self._weight = 0.0
        self._t0 = time.perf_counter()
        self._progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(bar_width=10),
            TaskProgressColumn(),
            _TasksColumn(),
            _RateColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._id = self._progress.add_task(
            description,
            total=self._total,
            start=False,
            tasks_done=0,
            tasks_total=total_tasks,
            tasks_label="tasks",
            rate=None,
            unit=unit,
        )

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._progress.start()
        self._progress.start_task(self._id)

    def advance(self, tasks: int, weight: float, description: str | None = None) -> None:
        self._tasks += tasks
        self._weight += weight
        elapsed = time.perf_counter() - self._t0
        self._progress.update(
            self._id,
            advance=weight if self._by_weight else tasks,
            tasks_done=self._tasks,
            rate=self._weight / elapsed if elapsed > 0 else None,
        )
        if description is not None:
            self._progress.update(self._id, description=description)

    def stop(self) -> None:
        self._progress.stop()


def make_display(
    progress: bool | None,
    *,
    description: str,
    total_tasks: int | None,
    total_weight: float | None,
    weighted: bool,
    unit: str,
) -> Display:
    """A rich display if enabled (see ``progress_enabled``), else one that prints nothing."""
    if not progress_enabled(progress):
        return _NullDisplay()
    return _RichDisplay(description, total_tasks, total_weight, weighted, unit)
