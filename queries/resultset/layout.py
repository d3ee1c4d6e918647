"""The file layout of a result set (SCHEMA.md "Result directory"): every name decided here once.

::

    DIR/
      spec.toml                           # the spec as run
      writer.lock                         # while a writer holds the set (queries.resultset.lock)
      manifest.json -> .current/manifest.json   # the commit point (queries.resultset.manifest)
      points -> .current/points           # what outside readers see: exactly the committed files
      events -> .current/events
      .current -> .views/<token>-<n>      # the current generation (queries.resultset.view)
      .views/<token>-<n>/manifest.json, points/seg-....parquet -> ../../../.data/points/seg-....parquet
      .data/points/seg-<token>-<n>.parquet   # segments: rows of many tasks (format 3)
      .data/events/seg-<token>-<n>.parquet   # the same tasks' race/hang/timeout trials (if any)
      .data/points/task-000042.parquet    # first release (format 1): one file per task

``token`` is a random id of the writer session that wrote the file, so two
writers (or a writer and the leftovers of a killed one) never pick the same
name. Temporary files are ``.<final name>.<token>.tmp`` beside their final name.

The manifest names a file by table and name (``points/seg-...parquet``); it lies at
``physical(data_dir, path)``: under ``.data/`` in format 3, in ``points/`` itself in sets
written before (formats 1 and 2, where manifest.json is a plain file), and on object
stores, which have no links (there superseded files stay beside the committed ones until
the grace period ends). With links, each commit is a new generation and ``.current`` is
renamed over (queries.resultset.view), so a plain ``read_parquet('DIR/points/*.parquet')``
sees exactly one commit's files, the same one manifest.json describes at that instant;
dataset discovery (pyarrow, pandas, polars) skips the dot-directories.
"""

from __future__ import annotations

import re
import secrets
from typing import Final

MANIFEST = "manifest.json"
SPEC_FILE = "spec.toml"
LOCK_FILE = "writer.lock"
POINTS_DIR = "points"
EVENTS_DIR = "events"
TABLES: tuple[str, str] = (POINTS_DIR, EVENTS_DIR)
TMP_SUFFIX = ".tmp"
DATA_DIR: Final = ".data"
"""Where format 3 keeps every table file (never looked at by dataset discovery)."""
VIEWS_DIR = ".views"
"""Where the generations live: each commit's manifest and views (queries.resultset.view)."""
CURRENT = ".current"
"""The link naming the current generation; manifest.json, points and events are links through it."""
SEGMENT_BYTES = 64 << 20
"""Target size of a segment's points file; segments at least this big are never merged again."""
GC_GRACE_S = 300.0
"""Superseded and orphaned files live this long before they are deleted (readers may still hold them)."""
GENERATION_GRACE_S = 30.0
"""Superseded generations (queries.resultset.view) live this long (at most the files' grace): only a
plain reader listing points/ at the instant of a commit reads one after it is superseded, and a listing
takes milliseconds; a reader then opens files through the current generation or, stoprace, under .data/."""

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


def physical(data_dir: str, rel: str) -> str:
    """Where the file the manifest calls ``rel`` (``points/NAME``) lies, relative to the set."""
    return f"{data_dir}/{rel}" if data_dir else rel


def generation_dir(token: str, seq: int) -> str:
    """Path (relative to the set) of the generation (a commit: manifest and views) writer ``token`` built."""
    return f"{VIEWS_DIR}/{token}-{seq:06d}"


_GEN_RE = re.compile(r"^([0-9a-f]+)-(\d+|aside-.+)$")


def generation_token(name: str) -> str | None:
    """The writer token in a name under ``.views/`` (a generation, or a directory moved aside), else None."""
    m = _GEN_RE.match(name)
    return m.group(1) if m else None


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
