"""One writer per result set: an exclusive lock file naming its holder.

``writer.lock`` is created only if absent (O_EXCL locally; an S3 conditional PUT,
``If-None-Match: *``, on s3://), holding the owner's pid, host, start time and writer
token. A second writer is refused at once with a StoreError naming the holder. A lock
whose holder is on this host and no longer running (or whose pid now belongs to another
process) is stale and taken over; the dead holder's token is reported so its leftover
files can be removed. A lock held from another host cannot be judged: ``break_lock``
takes it anyway (the user says the holder is gone). Other pyarrow filesystems have no
conditional create: there the lock is a check-then-write (documented, not atomic).
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass

from queries.resultset.errors import StoreError, one_line
from queries.resultset.layout import LOCK_FILE
from queries.resultset.manifest import now_iso
from queries.resultset.storage import Backend

__all__ = ["WriterLock", "acquire"]


def _proc_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot, Linux), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    if fields and fields[0] == "Z":
        return None
    return fields[19] if len(fields) > 19 else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _proc_start(pid) is not None or not os.path.exists("/proc")


@dataclass
class WriterLock:
    """A held lock; ``dead_token``: the token of a stale holder this lock replaced (its files may go)."""

    backend: Backend
    token: str
    dead_token: str | None = None
    released: bool = False

    def release(self) -> None:
        """Remove the lock file if it is still ours."""
        if self.released:
            return
        self.released = True
        try:
            holder = _read(self.backend)
            if holder is None or holder.get("token") == self.token:
                self.backend.delete(LOCK_FILE)
        except OSError:
            pass


def _read(backend: Backend) -> dict | None:
    try:
        data = backend.read_bytes(LOCK_FILE)
    except (FileNotFoundError, OSError):
        return None
    try:
        d = json.loads(data.decode("utf-8"))
        return d if isinstance(d, dict) else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}  # a half-written lock (killed while creating it): treat as held, holder unknown


def _stale(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname():
        return False
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return False
    if not _alive(pid):
        return True
    start = holder.get("pid_start")
    return start is not None and _proc_start(pid) not in (None, start)


def describe(holder: dict) -> str:
    if not holder:
        return "an unknown writer (unreadable lock file)"
    return f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started')}"


def acquire(backend: Backend, token: str, *, break_lock: bool = False) -> WriterLock:
    """Take the set's writer lock or raise StoreError naming its holder (exit 2, at once)."""
    me = {
        "pid": os.getpid(), "host": socket.gethostname(), "started": now_iso(), "started_epoch": time.time(),
        "pid_start": _proc_start(os.getpid()), "token": token,
    }
    data = (json.dumps(me, indent=1) + "\n").encode()
    dead: str | None = None
    for _ in range(3):
        try:
            if backend.create_exclusive(LOCK_FILE, data):
                return WriterLock(backend, token, dead)
        except OSError as e:
            raise StoreError(f"{backend.display(LOCK_FILE)}: cannot create the writer lock: {one_line(e)}") from None
        holder = _read(backend)
        if holder is None:  # released between our create and our read: try again
            continue
        stale = _stale(holder)
        if not (stale or break_lock):
            raise StoreError(
                f"{backend.display()} is being written by {describe(holder)} ({LOCK_FILE}); "
                f"wait for it to finish, or if that writer is gone: --break-lock"
            )
        if stale:
            dead = holder.get("token")
        _take_away(backend, token)
    raise StoreError(f"{backend.display()}: could not take the writer lock (another writer keeps taking it)")


def _take_away(backend: Backend, token: str) -> None:
    """Remove a stale/broken lock; locally by an atomic rename, so two takers cannot both remove it."""
    if backend.local:
        src = backend.path(LOCK_FILE)
        dst = backend.path(f".{LOCK_FILE}.{token}.broken")
        try:
            os.rename(src, dst)
        except FileNotFoundError:
            return
        os.unlink(dst)
    else:
        backend.delete(LOCK_FILE)
