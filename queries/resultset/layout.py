"""The file layout of a result set (SCHEMA.md "Result directory"): every name decided here once.

::

    DIR/
      manifest.json                       # the commit point (queries.resultset.manifest)
      spec.toml                           # the spec as run
      writer.lock                         # while a writer holds the set (queries.resultset.lock)
      points/seg-<token>-<n>.parquet      # segments: rows of many tasks
      events/seg-<token>-<n>.parquet      # the same tasks' race/hang/timeout trials (if any)
      points/task-000042.parquet          # first release (format 1): one file per task
      events/task-000042.parquet

``token`` is a random id of the writer session that wrote the file, so two
writers (or a writer and the leftovers of a killed one) never pick the same
name. Temporary files are ``.<final name>.<token>.tmp`` beside their final name.
"""

from __future__ import annotations

import re
import secrets

MANIFEST = "manifest.json"
SPEC_FILE = "spec.toml"
LOCK_FILE = "writer.lock"
POINTS_DIR = "points"
EVENTS_DIR = "events"
TABLES: tuple[str, str] = (POINTS_DIR, EVENTS_DIR)
TMP_SUFFIX = ".tmp"
SEGMENT_BYTES = 64 << 20
"""Target size of a segment's points file; segments at least this big are never merged again."""
GC_GRACE_S = 300.0
"""Superseded and orphaned files live this long before they are deleted (readers may still hold them)."""

_SEGMENT_RE = re.compile(r"^seg-([0-9a-f]+)-(\d+)\.parquet$")
_TMP_RE = re.compile(r"^\.(.+)\.([0-9a-f]+)\.tmp$")


def new_token() -> str:
    """A fresh writer-session id (64 random bits as hex)."""
    return secrets.token_hex(8)


def task_file(table: str, task_id: int) -> str:
    """Path (relative to the set) of a first-release per-task file."""
    return f"{table}/task-{task_id:06d}.parquet"


def task_id_of(file_name: str) -> int | None:
    """The task id of a per-task file name (``task-000042.parquet`` -> 42), else None."""
    if not (file_name.startswith("task-") and file_name.endswith(".parquet")):
        return None
    digits = file_name[5:-8]
    return int(digits) if digits.isdigit() else None


def segment_file(table: str, token: str, seq: int) -> str:
    """Path (relative to the set) of segment ``seq`` written by writer session ``token``."""
    return f"{table}/seg-{token}-{seq:06d}.parquet"


def token_of(file_name: str) -> str | None:
    """The writer token in a segment or temporary file name, else None."""
    m = _SEGMENT_RE.match(file_name) or _TMP_RE.match(file_name)
    return m.group(2) if m and m.re is _TMP_RE else (m.group(1) if m else None)


def tmp_name(rel: str, token: str) -> str:
    """The temporary name of ``rel`` for writer ``token`` (same directory, hidden, unique per writer)."""
    head, _, name = rel.rpartition("/")
    return f"{head}/.{name}.{token}{TMP_SUFFIX}" if head else f".{name}.{token}{TMP_SUFFIX}"


def is_tmp(file_name: str) -> bool:
    return _TMP_RE.match(file_name) is not None
