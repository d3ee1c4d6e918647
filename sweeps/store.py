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

Where the directory lives (a local path, ``file://``, ``s3://`` ...) and how files
are written atomically there: sweeps.storage.
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
import pyarrow.fs as pafs

from core.cost import cpu_trials
from sweeps.schema import EVENTS_SCHEMA, POINTS_SCHEMA
from sweeps.spec import SpecError, SweepSpec, load_spec, parse_spec
from sweeps.storage import TMP_SUFFIX, LocalDir, RemoteDir, StoreError, is_uri, locate, one_line

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
    "is_uri",
]

MANIFEST = "manifest.json"
SPEC_FILE = "spec.toml"
POINTS_DIR = "points"
EVENTS_DIR = "events"
FORMAT = "stoprace-results"
FORMAT_VERSION = 1
_OWN_TOP_TMP = (MANIFEST + TMP_SUFFIX, SPEC_FILE + TMP_SUFFIX)




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


def _probe(location: str | os.PathLike[str], filesystem: pafs.FileSystem | None):
    """(where, its printable path, "dir" | "file" | None) of a results location; StoreError if unreachable."""
    fs = locate(location, filesystem)
    path = fs.path()
    try:
        return fs, path, fs.kind()
    except OSError as e:
        raise StoreError(f"{path}: cannot access results location: {one_line(e)}") from None


class ResultStore:
    """One results directory. Use ``create_or_open`` to run, ``open_existing`` to read.

    ``path`` is a ``Path`` for a local dir (also for ``file://`` URIs) and the URI
    string otherwise; ``points_path`` and friends follow the same rule.
    """

    def __init__(
        self,
        path: Path | str,
        spec: SweepSpec,
        manifest: dict[str, Any],
        readonly: bool,
        manifest_interval: float,
        backend: LocalDir | RemoteDir | None = None,
    ) -> None:
        self._fs = backend if backend is not None else locate(path, None)
        self.path = self._fs.path()
        self.spec = spec
        self._manifest = manifest
        try:
            self._done = RangeSet(manifest.get("tasks_done") or ())
        except (TypeError, ValueError):
            raise StoreError(f"{self._fs.path(MANIFEST)}: bad tasks_done list") from None
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
        filesystem: pafs.FileSystem | None = None,
    ) -> ResultStore:
        """Create a results dir for `spec` (parents too) or reopen one holding the same spec.

        `out_dir` is a local path or a URI (see the module docstring); with
        `filesystem`, a path inside that pyarrow filesystem. `plan`
        (sweeps.grid.plan_signature(...)) is recorded on creation; reopening
        with a different plan is refused, since task ids would not match.
        Refusals are StoreError with one line, and write nothing.
        """
        fs, path, kind = _probe(out_dir, filesystem)
        if kind == "file":
            raise StoreError(f"{path} exists and is not a directory; use another --out")
        if kind == "dir" and fs.kind(MANIFEST) is not None:
            manifest = cls._read_manifest(fs)
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
            store = cls(path, spec, manifest, readonly=False, manifest_interval=manifest_interval, backend=fs)
            if plan is not None and old_plan is None:
                store._manifest["plan"] = plan
                store._dirty = True
            store._prepare()
            if store._dirty:
                store.flush()
            return store
        if kind == "dir":
            try:
                entries = [e for e in fs.listdir() if e not in _OWN_TOP_TMP]
            except OSError as e:
                raise StoreError(f"{path}: cannot list directory: {one_line(e)}") from None
            if entries:
                raise StoreError(
                    f"{path} is not empty and is not a stoprace results dir (no {MANIFEST}); use another --out"
                )
        try:
            fs.makedirs()
        except OSError as e:
            raise StoreError(f"{path}: cannot create results dir: {one_line(e)}") from None
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
            "cpu_trials_done": 0,
            "plan": plan,
        }
        store = cls(path, spec, manifest, readonly=False, manifest_interval=manifest_interval, backend=fs)
        # manifest first: a crash after it leaves a dir that reopens and self-heals
        store._write_manifest()
        store._prepare()
        return store

    @classmethod
    def open_existing(
        cls, results_dir: str | os.PathLike[str], *, filesystem: pafs.FileSystem | None = None
    ) -> ResultStore:
        """Open a results dir read-only (queries, replay); StoreError (one line) if it is not one."""
        fs, path, kind = _probe(results_dir, filesystem)
        if kind is None:
            raise StoreError(f"{path}: no such results directory")
        if kind != "dir":
            raise StoreError(f"{path}: not a directory (expected a stoprace results dir)")
        if fs.kind(MANIFEST) is None:
            raise StoreError(f"{path}: not a stoprace results dir (no {MANIFEST})")
        manifest = cls._read_manifest(fs)
        try:
            if fs.local:
                spec = load_spec(fs.path(SPEC_FILE), force=True)
            else:
                try:
                    text = fs.read_bytes(SPEC_FILE)
                except OSError as e:
                    raise SpecError(f"{fs.path(SPEC_FILE)}: cannot read spec: {one_line(e)}") from None
                spec = parse_spec(text, where=str(fs.path(SPEC_FILE)), force=True)
        except SpecError as e:
            raise StoreError(f"{path}: cannot read the spec of this results dir: {e}") from None
        if spec.spec_hash != manifest.get("spec_hash"):
            raise StoreError(f"{path}: {SPEC_FILE} does not match the spec_hash in {MANIFEST}")
        return cls(path, spec, manifest, readonly=True, manifest_interval=0.0, backend=fs)

    @staticmethod
    def _read_manifest(fs: LocalDir | RemoteDir) -> dict[str, Any]:
        where = fs.path(MANIFEST)
        try:
            m = json.loads(fs.read_bytes(MANIFEST).decode("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise StoreError(f"{where}: unreadable manifest: {' '.join(str(e).split())}") from None
        if not isinstance(m, dict) or "spec_hash" not in m or m.get("format", FORMAT) != FORMAT:
            raise StoreError(f"{where}: not a stoprace results manifest (no spec_hash)")
        if m.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
            raise StoreError(
                f"{where}: results format version {m.get('format_version')!r}, this stoprace reads {FORMAT_VERSION}"
            )
        return m

    def _prepare(self) -> None:
        """Make sure spec.toml and the subdirs exist; delete stale *.tmp of a killed run."""
        fs = self._fs
        text = self.spec.to_toml()
        try:
            current = fs.read_bytes(SPEC_FILE).decode("utf-8") if fs.kind(SPEC_FILE) == "file" else None
        except (OSError, UnicodeDecodeError):
            current = None
        if current != text:
            fs.write_bytes(SPEC_FILE, text.encode())
        for sub in (POINTS_DIR, EVENTS_DIR):
            fs.makedirs(sub)
        if not fs.atomic_rename:  # object stores: no *.tmp is ever written
            return
        for name in _OWN_TOP_TMP:
            fs.delete(name)
        for sub in (POINTS_DIR, EVENTS_DIR):
            for name in fs.listdir(sub):
                if name.endswith(TMP_SUFFIX) and _task_id_of(name[: -len(TMP_SUFFIX)]) is not None:
                    fs.delete(f"{sub}/{name}")

    # ---- paths and state -------------------------------------------------------------
    @property
    def points_dir(self) -> Path | str:
        return self._fs.path(POINTS_DIR)

    @property
    def events_dir(self) -> Path | str:
        return self._fs.path(EVENTS_DIR)

    def points_path(self, task_id: int) -> Path | str:
        return self._fs.path(f"{POINTS_DIR}/{task_file_name(task_id)}")

    def events_path(self, task_id: int) -> Path | str:
        return self._fs.path(f"{EVENTS_DIR}/{task_file_name(task_id)}")

    def read_points(self, task_id: int, columns: list[str] | None = None) -> pa.Table:
        """One task's points table as stored (any filesystem)."""
        return self._fs.read_table(f"{POINTS_DIR}/{task_file_name(task_id)}", columns=columns)

    @property
    def manifest(self) -> dict[str, Any]:
        """A copy of the manifest as it would be written now."""
        with self._lock:
            m = dict(self._manifest)
            m["tasks_done"] = self._done.ranges()
            return m

    @property
    def cpu_trials_done(self) -> int | None:
        """Sum of core.cost.cpu_trials (n_cpus x trials) over the tasks listed as done (None in a manifest that predates it)."""
        v = self._manifest.get("cpu_trials_done")
        return None if v is None else int(v)

    @property
    def n_tasks(self) -> int | None:
        return self._manifest.get("n_tasks")

    def done_tasks(self) -> set[int]:
        """Tasks listed in the manifest whose points file exists."""
        present: set[int] = set()
        try:
            names = self._fs.listdir(POINTS_DIR)
        except FileNotFoundError:
            return set()
        for name in names:
            tid = _task_id_of(name)
            if tid is not None:
                present.add(tid)
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
        name = task_file_name(task_id)
        ev_rel = f"{EVENTS_DIR}/{name}"
        if evs is not None and evs.num_rows > 0:
            self._fs.write_table(ev_rel, evs)
        elif self._fs.kind(ev_rel) is not None:  # a rerun without events must not keep an old events file
            self._fs.delete(ev_rel, sync=True)
        self._fs.write_table(f"{POINTS_DIR}/{name}", pts)
        weight = int(cpu_trials(pts["n_cpus"].to_numpy().astype("int64"), pts["trials"].to_numpy()).sum())
        with self._lock:
            if task_id not in self._done and self.cpu_trials_done is not None:
                self._manifest["cpu_trials_done"] = self.cpu_trials_done + int(weight)
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
            self._fs.write_bytes(MANIFEST, data)
            self._manifest = {k: v for k, v in m.items() if k != "tasks_done"}
            self._dirty = False
            self._last_write = time.monotonic()


def _norm(d: Any) -> str:
    return json.dumps(d, sort_keys=True)
