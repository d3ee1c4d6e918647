"""The result directory (SCHEMA.md "Result directory"): layout, atomic writes, manifest, resume.

::

    DIR/
      manifest.json               # format, spec_hash, version, created, n_points, n_tasks, tasks_done, plan
      spec.toml                   # SweepSpec.to_toml(): the spec as run
      points/task-000042.parquet
      events/task-000042.parquet  # only when the task has event rows

Guarantees:

- A task is done iff ``points/task-N.parquet`` exists AND N is listed in the
  manifest (``done_tasks()``). Every file is written as ``*.tmp``, fsynced,
  renamed into place and the directory fsynced, so a reader never sees a half
  file; the events file is written before the points file, so once a task's
  points file is visible its events file is too.
- Manifest rewrites are atomic the same way but batched (at most every
  ``manifest_interval`` seconds, plus ``flush()``/``finish()``/``close()``): a
  task whose files exist but that the manifest does not list yet is simply run
  again and overwritten (results are deterministic).
- Opening a dir holding a different spec (hash), a different task plan, or
  something that is not a stoprace results dir is refused with one line
  (StoreError, a ValueError) and nothing is written.
- Stale ``*.tmp`` files from a killed run are deleted on open. Only one driver
  may write a results dir at a time (not enforced).
"""

from __future__ import annotations

import json
import os
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sweeps.schema import EVENTS_SCHEMA, POINTS_SCHEMA
from sweeps.spec import SpecError, SweepSpec, load_spec

__all__ = [
    "StoreError",
    "ResultStore",
    "RangeSet",
    "MANIFEST",
    "SPEC_FILE",
    "POINTS_DIR",
    "EVENTS_DIR",
    "task_file_name",
    "package_version",
]

MANIFEST = "manifest.json"
SPEC_FILE = "spec.toml"
POINTS_DIR = "points"
EVENTS_DIR = "events"
FORMAT = "stoprace-results"
FORMAT_VERSION = 1
_TMP = ".tmp"
_OWN_TOP_TMP = (MANIFEST + _TMP, SPEC_FILE + _TMP)


class StoreError(ValueError):
    """A results directory problem; the message is one line naming the directory."""


def task_file_name(task_id: int) -> str:
    return f"task-{task_id:06d}.parquet"


def _task_id_of(file_name: str) -> int | None:
    if not (file_name.startswith("task-") and file_name.endswith(".parquet")):
        return None
    digits = file_name[5:-8]
    return int(digits) if digits.isdigit() else None


def package_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("stoprace")
        except PackageNotFoundError:
            return "0+unknown"
    except Exception:  # pragma: no cover
        return "0+unknown"


# ---- compact set of task ids ------------------------------------------------------------


class RangeSet:
    """A set of non-negative ints kept as sorted disjoint inclusive ranges [first, last]."""

    def __init__(self, ranges: Iterable[Iterable[int]] = ()) -> None:
        pairs = []
        for r in ranges:  # [first, last] pairs; a bare int is accepted as [x, x]
            a, b = (r, r) if isinstance(r, int) else (int(x) for x in r)
            if not 0 <= a <= b:
                raise ValueError(f"bad range [{a}, {b}]")
            pairs.append((a, b))
        self._starts: list[int] = []
        self._ends: list[int] = []
        for a, b in sorted(pairs):
            if self._starts and a <= self._ends[-1] + 1:
                self._ends[-1] = max(self._ends[-1], b)
            else:
                self._starts.append(a)
                self._ends.append(b)

    def add(self, x: int) -> None:
        s, e = self._starts, self._ends
        i = bisect_left(s, x)  # s[i-1] < x <= s[i]
        if i < len(s) and s[i] == x:
            return
        if i > 0 and e[i - 1] >= x:
            return
        join_left = i > 0 and e[i - 1] == x - 1
        join_right = i < len(s) and s[i] == x + 1
        if join_left and join_right:
            e[i - 1] = e[i]
            del s[i], e[i]
        elif join_left:
            e[i - 1] = x
        elif join_right:
            s[i] = x
        else:
            s.insert(i, x)
            e.insert(i, x)

    def __contains__(self, x: object) -> bool:
        if not isinstance(x, int):
            return False
        i = bisect_left(self._starts, x + 1) - 1
        return i >= 0 and self._ends[i] >= x

    def __len__(self) -> int:
        return sum(b - a + 1 for a, b in zip(self._starts, self._ends))

    def __iter__(self):
        for a, b in zip(self._starts, self._ends):
            yield from range(a, b + 1)

    def ranges(self) -> list[list[int]]:
        return [[a, b] for a, b in zip(self._starts, self._ends)]


# ---- atomic file helpers ---------------------------------------------------------------


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + _TMP)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _atomic_write_table(path: Path, table: pa.Table) -> None:
    tmp = path.with_name(path.name + _TMP)
    try:
        with open(tmp, "wb") as f:
            pq.write_table(table, f, compression="zstd")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _conform(table: pa.Table, schema: pa.Schema, what: str) -> pa.Table:
    """Select the schema's columns in order and cast; StoreError (one line) if impossible."""
    if not isinstance(table, pa.Table):
        raise StoreError(f"{what}: expected a pyarrow.Table, got {type(table).__name__}")
    names = set(table.column_names)
    missing = [n for n in schema.names if n not in names]
    if missing:
        raise StoreError(f"{what}: missing column(s) {', '.join(missing)}")
    extra = [n for n in table.column_names if n not in schema.names]
    if extra:
        raise StoreError(f"{what}: unexpected column(s) {', '.join(extra)}")
    if len(set(table.column_names)) != len(table.column_names):
        raise StoreError(f"{what}: duplicate column names")
    t = table.select(schema.names)
    if t.schema.equals(schema):
        return t
    try:
        return t.cast(schema, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        raise StoreError(f"{what}: does not match the store schema: {' '.join(str(e).split())}") from None


# ---- the store -------------------------------------------------------------------------


class ResultStore:
    """One results directory. Use ``create_or_open`` to run, ``open_existing`` to read."""

    def __init__(self, path: Path, spec: SweepSpec, manifest: dict[str, Any], readonly: bool, manifest_interval: float) -> None:
        self.path = path
        self.spec = spec
        self._manifest = manifest
        try:
            self._done = RangeSet(manifest.get("tasks_done") or ())
        except (TypeError, ValueError):
            raise StoreError(f"{path / MANIFEST}: bad tasks_done list") from None
        self.readonly = readonly
        self.manifest_interval = manifest_interval
        self._dirty = False
        self._last_write = time.monotonic()
        self._lock = threading.RLock()

    # ---- opening ---------------------------------------------------------------------
    @classmethod
    def create_or_open(
        cls,
        out_dir: str | os.PathLike[str],
        spec: SweepSpec,
        *,
        plan: dict[str, Any] | None = None,
        manifest_interval: float = 0.5,
    ) -> ResultStore:
        """Create a results dir for `spec` (parents too) or reopen one holding the same spec.

        `plan` (sweeps.grid.plan_signature(...)) is recorded on creation; reopening
        with a different plan is refused, since task ids would not match.
        Refusals are StoreError with one line, and write nothing.
        """
        path = Path(out_dir)
        mpath = path / MANIFEST
        if path.exists() and not path.is_dir():
            raise StoreError(f"{path} exists and is not a directory; use another --out")
        if path.is_dir() and mpath.exists():
            manifest = cls._read_manifest(path)
            if manifest.get("spec_hash") != spec.spec_hash:
                old = str(manifest.get("spec_hash"))[:12]
                raise StoreError(
                    f"{path} holds results of a different spec (hash {old}…, this spec {spec.spec_hash[:12]}…); use another --out"
                )
            old_plan = manifest.get("plan")
            if plan is not None and old_plan is not None and _norm(old_plan) != _norm(plan):
                raise StoreError(
                    f"{path} was planned with {json.dumps(old_plan, sort_keys=True)}, not "
                    f"{json.dumps(plan, sort_keys=True)}; task ids would not match: use the same planning settings or another --out"
                )
            store = cls(path, spec, manifest, readonly=False, manifest_interval=manifest_interval)
            if plan is not None and old_plan is None:
                store._manifest["plan"] = plan
                store._dirty = True
            store._prepare()
            if store._dirty:
                store.flush()
            return store
        if path.is_dir():
            try:
                entries = [e for e in os.listdir(path) if e not in _OWN_TOP_TMP]
            except OSError as e:
                raise StoreError(f"{path}: cannot list directory: {e.strerror}") from None
            if entries:
                raise StoreError(
                    f"{path} is not empty and is not a stoprace results dir (no {MANIFEST}); use another --out"
                )
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"{path}: cannot create results dir: {e.strerror}") from None
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "sweep": spec.name,
            "spec_hash": spec.spec_hash,
            "version": package_version(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "n_points": spec.n_points,
            "n_shards_per_point": spec.n_shards_per_point,
            "n_tasks": None,
            "tasks_done": [],
            "plan": plan,
        }
        store = cls(path, spec, manifest, readonly=False, manifest_interval=manifest_interval)
        # manifest first: a crash after it leaves a dir that reopens and self-heals
        store._write_manifest()
        store._prepare()
        return store

    @classmethod
    def open_existing(cls, results_dir: str | os.PathLike[str]) -> ResultStore:
        """Open a results dir read-only (queries, replay); StoreError (one line) if it is not one."""
        path = Path(results_dir)
        if not path.exists():
            raise StoreError(f"{path}: no such results directory")
        if not path.is_dir():
            raise StoreError(f"{path}: not a directory (expected a stoprace results dir)")
        if not (path / MANIFEST).exists():
            raise StoreError(f"{path}: not a stoprace results dir (no {MANIFEST})")
        manifest = cls._read_manifest(path)
        try:
            spec = load_spec(path / SPEC_FILE, force=True)
        except SpecError as e:
            raise StoreError(f"{path}: cannot read the spec of this results dir: {e}") from None
        if spec.spec_hash != manifest.get("spec_hash"):
            raise StoreError(f"{path}: {SPEC_FILE} does not match the spec_hash in {MANIFEST}")
        return cls(path, spec, manifest, readonly=True, manifest_interval=0.0)

    @staticmethod
    def _read_manifest(path: Path) -> dict[str, Any]:
        try:
            m = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise StoreError(f"{path / MANIFEST}: unreadable manifest: {' '.join(str(e).split())}") from None
        if not isinstance(m, dict) or "spec_hash" not in m or m.get("format", FORMAT) != FORMAT:
            raise StoreError(f"{path / MANIFEST}: not a stoprace results manifest (no spec_hash)")
        if m.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
            raise StoreError(
                f"{path / MANIFEST}: results format version {m.get('format_version')!r}, this stoprace reads {FORMAT_VERSION}"
            )
        return m

    def _prepare(self) -> None:
        """Make sure spec.toml and the subdirs exist; delete stale *.tmp of a killed run."""
        spec_path = self.path / SPEC_FILE
        text = self.spec.to_toml()
        if not spec_path.exists() or spec_path.read_text(encoding="utf-8") != text:
            _atomic_write_bytes(spec_path, text.encode())
        for sub in (POINTS_DIR, EVENTS_DIR):
            (self.path / sub).mkdir(exist_ok=True)
        for name in _OWN_TOP_TMP:
            (self.path / name).unlink(missing_ok=True)
        for d in (self.points_dir, self.events_dir):
            for name in os.listdir(d):
                if name.endswith(_TMP) and _task_id_of(name[: -len(_TMP)]) is not None:
                    (d / name).unlink(missing_ok=True)

    # ---- paths and state -------------------------------------------------------------
    @property
    def points_dir(self) -> Path:
        return self.path / POINTS_DIR

    @property
    def events_dir(self) -> Path:
        return self.path / EVENTS_DIR

    def points_path(self, task_id: int) -> Path:
        return self.points_dir / task_file_name(task_id)

    def events_path(self, task_id: int) -> Path:
        return self.events_dir / task_file_name(task_id)

    @property
    def manifest(self) -> dict[str, Any]:
        """A copy of the manifest as it would be written now."""
        with self._lock:
            m = dict(self._manifest)
            m["tasks_done"] = self._done.ranges()
            return m

    @property
    def n_tasks(self) -> int | None:
        return self._manifest.get("n_tasks")

    def done_tasks(self) -> set[int]:
        """Tasks listed in the manifest whose points file exists."""
        present: set[int] = set()
        try:
            with os.scandir(self.points_dir) as it:
                for e in it:
                    tid = _task_id_of(e.name)
                    if tid is not None:
                        present.add(tid)
        except FileNotFoundError:
            return set()
        with self._lock:
            return {t for t in present if t in self._done}

    @property
    def complete(self) -> bool:
        n = self.n_tasks
        return n is not None and len(self.done_tasks()) == n

    # ---- writing ---------------------------------------------------------------------
    def write_task(self, task_id: int, points: pa.Table, events: pa.Table | None = None) -> None:
        """Atomically write one task's tables and record it as done (manifest batched)."""
        if self.readonly:
            raise StoreError(f"{self.path}: opened read-only")
        if not isinstance(task_id, int) or isinstance(task_id, bool) or task_id < 0:
            raise StoreError(f"task_id = {task_id!r} must be an int >= 0")
        pts = _conform(points, POINTS_SCHEMA, f"task {task_id} points")
        evs = None if events is None else _conform(events, EVENTS_SCHEMA, f"task {task_id} events")
        ev_path = self.events_path(task_id)
        if evs is not None and evs.num_rows > 0:
            _atomic_write_table(ev_path, evs)
        elif ev_path.exists():  # a rerun without events must not keep an old events file
            ev_path.unlink()
            _fsync_dir(self.events_dir)
        _atomic_write_table(self.points_path(task_id), pts)
        with self._lock:
            self._done.add(task_id)
            self._dirty = True
            if time.monotonic() - self._last_write >= self.manifest_interval:
                self._write_manifest()

    def finish(self, n_tasks: int) -> None:
        """Record the total number of tasks (known once planning has finished) and flush."""
        if self.readonly:
            raise StoreError(f"{self.path}: opened read-only")
        with self._lock:
            self._manifest["n_tasks"] = int(n_tasks)
            self._write_manifest()

    def flush(self) -> None:
        """Write the manifest now if anything changed since the last write."""
        if self.readonly:
            return
        with self._lock:
            if self._dirty:
                self._write_manifest()

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write_manifest(self) -> None:
        with self._lock:
            m = self.manifest
            m["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            # one key per line, values compact (tasks_done stays a short list of ranges)
            body = ",\n".join(f" {json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in m.items())
            data = ("{\n" + body + "\n}\n").encode()
            _atomic_write_bytes(self.path / MANIFEST, data)
            self._manifest = {k: v for k, v in m.items() if k != "tasks_done"}
            self._dirty = False
            self._last_write = time.monotonic()


def _norm(d: Any) -> str:
    return json.dumps(d, sort_keys=True)
