"""manifest.json: what a result set holds, and its commit point.

Format 3 (this release) keeps every table file under ``data_dir`` (``.data``, where dataset
discovery does not look) and shows the committed ones to outside readers through
``points/`` and ``events/`` views (queries.resultset.view); formats 1 and 2 kept them in
``points/``/``events/`` themselves (``data_dir`` ""), and the first write by this release
moves them (queries.resultset.view.convert). File paths in the manifest name the table and
file (``points/seg-....parquet``); where a file lies is ``layout.physical(data_dir, path)``.

A task is done exactly when the manifest lists it: in a committed segment (whose files
the manifest names with size and SHA-256) or, for sets written by the first release, in
``legacy_tasks`` (per-task files ``points/task-N.parquet``, no checksums). Files on disk
that the manifest does not name are invisible to readers.

Older manifests are migrated on reading, step by step through ``MIGRATIONS`` (after
signac's ``migration`` table: one function per version step, applied in order), so the
rest of the code sees only the current ``Manifest``. A manifest newer than
``FORMAT_VERSION`` is refused (StoreError) by every reader and writer alike.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from queries.resultset.errors import StoreError
from queries.resultset.layout import DATA_DIR, TABLES
from queries.resultset.ranges import RangeSet

FORMAT: Literal["stoprace-results"] = "stoprace-results"
FORMAT_VERSION: Literal[3] = 3

__all__ = ["FORMAT", "FORMAT_VERSION", "FileEntry", "Segment", "Garbage", "Manifest", "MIGRATIONS",
           "parse_manifest", "dump_manifest", "now_iso"]


class FileEntry(BaseModel):
    """One stored file: path relative to the set, size in bytes, SHA-256 of its bytes, rows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    size: int = Field(ge=0)
    sha256: str
    rows: int = Field(ge=0)

    @field_validator("path")
    @classmethod
    def _inside_a_table(cls, v: str) -> str:
        return table_path(v)


class Segment(BaseModel):
    """Rows of a set of tasks: one points file and, if any task had event rows, one events file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tasks: list[tuple[int, int]]
    points: FileEntry
    events: FileEntry | None = None
    cpu_trials: int = Field(0, ge=0)

    def task_set(self) -> RangeSet:
        return RangeSet(self.tasks)

    def files(self) -> list[FileEntry]:
        return [self.points] + ([self.events] if self.events is not None else [])

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files())


def table_path(v: str) -> str:
    """``v`` if it names a file of a table (``points/NAME`` or ``events/NAME``), else ValueError: a
    manifest never makes a reader open (or a writer delete) anything outside the set's tables."""
    table, sep, name = v.partition("/")
    if not (sep and table in TABLES and name and "/" not in name and name not in (".", "..") and "\\" not in name
            and "\x00" not in name):
        raise ValueError(f"{v!r} is not a file of the points or events table")
    return v


class Garbage(BaseModel):
    """A file no longer referenced (merged or compacted away) since ``since`` (epoch s); deleted after a grace period."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    since: float

    @field_validator("path")
    @classmethod
    def _inside_a_table(cls, v: str) -> str:
        return table_path(v)


class Manifest(BaseModel):
    """The current manifest (format version 2). Unknown top-level keys are kept as they are."""

    model_config = ConfigDict(extra="allow")

    format: Literal["stoprace-results"] = FORMAT
    format_version: Literal[3] = FORMAT_VERSION
    data_dir: Literal["", ".data"] = DATA_DIR
    """Where the table files lie: ".data" (format 3), or "" (the set's root: sets written before format 3)."""
    sweep: str | None = None
    spec_hash: str
    version: str | None = None
    created: str | None = None
    updated: str | None = None
    n_points: int | None = None
    n_shards_per_point: int | None = None
    n_tasks: int | None = None
    cpu_trials_done: int | None = None
    plan: dict[str, Any] | None = None
    segments: list[Segment] = Field(default_factory=list)
    legacy_tasks: list[tuple[int, int]] = Field(default_factory=list)
    garbage: list[Garbage] = Field(default_factory=list)

    def done(self) -> RangeSet:
        """Every task the manifest commits (segments and first-release per-task files)."""
        r = RangeSet(self.legacy_tasks)
        for s in self.segments:
            for a, b in s.tasks:
                r.update(range(a, b + 1))
        return r


# ---- migrations: version v -> v + 1, each a pure dict -> dict ---------------------------------


def _v1_to_v2(m: dict[str, Any]) -> dict[str, Any]:
    """First release: per-task files listed in ``tasks_done`` (ranges, or bare ints in older manifests)."""
    m = dict(m)
    done = m.pop("tasks_done", None) or []
    try:
        m["legacy_tasks"] = RangeSet(done).ranges()
    except (TypeError, ValueError):
        raise ValueError("bad tasks_done list") from None
    m["segments"] = []
    m["garbage"] = []
    m["format"] = FORMAT
    m["format_version"] = 2
    return m


def _v2_to_v3(m: dict[str, Any]) -> dict[str, Any]:
    """Format 2 kept its files in points/ and events/ themselves (no views)."""
    m = dict(m)
    m["data_dir"] = ""
    m["format_version"] = 3
    return m


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2, 2: _v2_to_v3}
"""MIGRATIONS[v] turns a version-v manifest dict into version v + 1."""


def parse_manifest(data: bytes, where: str) -> Manifest:
    """The manifest in ``data`` migrated to FORMAT_VERSION; StoreError (one line naming ``where``) if it is not one."""
    try:
        m = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(f"{where}: unreadable manifest (not valid JSON: {' '.join(str(e).split())})") from None
    if not isinstance(m, dict) or "spec_hash" not in m or m.get("format", FORMAT) != FORMAT:
        raise StoreError(f"{where}: not a stoprace results manifest (no spec_hash)")
    v = m.get("format_version", 1)
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= FORMAT_VERSION:
        raise StoreError(f"{where}: results format version {v!r}, this stoprace reads 1 to {FORMAT_VERSION}")
    try:
        while v < FORMAT_VERSION:
            m = MIGRATIONS[v](m)
            v += 1
        return Manifest.model_validate(m)
    except (ValueError, ValidationError) as e:
        msg = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
        loc = ".".join(str(x) for x in e.errors()[0]["loc"]) if isinstance(e, ValidationError) else ""
        raise StoreError(f"{where}: bad manifest: {loc + ': ' if loc else ''}{msg}") from None


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def dump_manifest(m: Manifest) -> bytes:
    """JSON, one top-level key per line (segments one per line), so a manifest diffs and reads well."""
    d = m.model_dump(mode="json")
    lines = []
    for k, v in d.items():
        if isinstance(v, list) and v and isinstance(v[0], dict):
            inner = ",\n  ".join(json.dumps(x, sort_keys=True) for x in v)
            lines.append(f" {json.dumps(k)}: [\n  {inner}\n ]")
        else:
            lines.append(f" {json.dumps(k)}: {json.dumps(v, sort_keys=True)}")
    return ("{\n" + ",\n".join(lines) + "\n}\n").encode()


def epoch() -> float:
    return time.time()
