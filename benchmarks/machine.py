"""One line describing the machine a benchmark ran on (for benchmarks/RESULTS.md)."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone


def machine(*extra: str) -> str:
    """Date, host, CPU model, cores, memory, Python, and any `extra` version strings."""
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return "  ".join([
        datetime.now(timezone.utc).isoformat(timespec="seconds"), platform.node(), cpu,
        f"{os.cpu_count()} cores, {mem:.0f} GiB", f"Python {platform.python_version()}", *extra,
    ])
