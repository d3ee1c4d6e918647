"""Writing a result set: segments of many tasks, the manifest as the commit point, merges, compaction.

One ``SetWriter`` owns a result set while it holds the writer lock (queries.resultset.lock).

- **Segments.** Task results are buffered in memory (at most ``buffer_bytes`` of Arrow
  data) and written together as one segment: one points file and, if any task had event
  rows, one events file, Parquet with zstd and row groups of ``ROW_GROUP_ROWS`` rows (a
  DuckDB thread scans one row group at a time). The buffer is written when it is full or
  ``flush_s`` seconds after the last commit, and on ``flush``/``finish``/``close``.
- **Commit point.** A segment's files are written under temporary names, synced and
  renamed (one complete PUT on object stores), and only then is the manifest rewritten
  (atomically) to list the segment with its tasks, file sizes and SHA-256. A task is done
  exactly when the manifest lists it. A crash at any instant leaves the previous
  manifest, which names only complete files: buffered tasks are lost and recomputed by
  the resume, nothing is listed twice.
- **Bounded file count.** After each commit, small segments (< ``SEGMENT_BYTES``) are merged
  in tiers: once ``MERGE_FANOUT`` of them share a size class (factor ``MERGE_FANOUT``
  apart) they are rewritten as one. ``finish`` merges every small segment. So a finished
  set holds at most ceil(bytes / SEGMENT_BYTES) + 1 files per table, and a running one a
  few dozen more.
- **Merges and compaction** stream row groups (never a whole segment in memory) and commit
  by one manifest rewrite that swaps old segments for new ones; readers holding the old
  manifest keep working because superseded files are only listed as ``garbage`` and
  deleted ``grace_s`` seconds later (by the next writer commit or open).
- **Leftovers.** On open, temporary and unreferenced files of a writer known dead (a stale
  lock's token) are deleted, and any other unreferenced file older than ``grace_s``.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from core.cost import cpu_trials
from queries.resultset.errors import StoreError, one_line
from queries.resultset.layout import (
    CURRENT,
    DATA_DIR,
    EVENTS_DIR,
    GC_GRACE_S,
    GENERATION_GRACE_S,
    MANIFEST,
    POINTS_DIR,
    SEGMENT_BYTES,
    SPEC_FILE,
    TABLES,
    is_tmp,
    new_token,
    physical,
    segment_file,
    task_file,
    task_id_of,
    token_of,
)
from queries.resultset.lock import WriterLock, acquire
from queries.resultset.manifest import FileEntry, Garbage, Manifest, Segment, dump_manifest, now_iso
from queries.resultset.ranges import RangeSet
from queries.resultset.reader import Damage, Expect, ResultSet, read_manifest
from queries.resultset.schema import EVENTS_SCHEMA, POINTS_SCHEMA, SCHEMAS, conform
from queries.resultset.storage import Backend, NewFile
from queries.resultset.view import collect_generations, commit, convert, ensure_links, uses_generations

__all__ = ["SetWriter", "SEGMENT_BYTES", "ROW_GROUP_ROWS", "BUFFER_BYTES", "FLUSH_S", "MERGE_FANOUT", "GC_GRACE_S",
           "compact", "CompactReport"]

ROW_GROUP_ROWS = 32_768
READ_BATCH_ROWS = 4_096
"""Rows per batch a merge reads: a merge holds one row group of pending batches (~36 MiB of points
rows) plus one batch being read, rather than a decoded row group and its copy as well."""
BUFFER_BYTES = 32 << 20
"""Arrow bytes of task results buffered in the writer before it writes a segment (the driver's memory bound)."""
FLUSH_S = float(os.environ.get("STOPRACE_COMMIT_S", "2.0"))
"""Seconds between segment commits: what a crash can lose. STOPRACE_COMMIT_S overrides it (tests that
kill a short run mid-way use 0.2; a larger value means fewer, larger segments before merging)."""
MERGE_FANOUT = 8
_LEVEL_BASE = 64 << 10
_TASK_OVERHEAD = 16 << 10
"""Bytes a buffered task costs beyond its Arrow buffers (table and column objects), counted against the buffer."""


def _level(size: int) -> int:
    return max(0, int(math.log(max(size, 1) / _LEVEL_BASE, MERGE_FANOUT))) if size > _LEVEL_BASE else 0


@dataclass
class _Source:
    """Rows of some tasks in existing files: a segment, or one first-release task."""

    tasks: RangeSet
    points: str
    events: str | None
    size: int


def _cpu_trials(points: pa.Table) -> int:
    """Sum of core.cost.cpu_trials over the rows (the one definition of CPU-trials)."""
    if points.num_rows == 0:
        return 0
    n_cpus = points["n_cpus"].to_numpy().astype("int64")
    return int(cpu_trials(n_cpus, points["trials"].to_numpy().astype("int64")).sum())


class _TableOut:
    """Streams record batches into one new Parquet file in row groups of ROW_GROUP_ROWS rows."""

    def __init__(self, nf: NewFile, schema: pa.Schema, name: str) -> None:
        self.nf = nf
        self.name = name  # as the manifest lists it (points/seg-...); nf writes it where it lies
        self.schema = schema
        flat = [f.name for f in schema if not pa.types.is_nested(f.type)]
        # dictionaries only for strings, statistics only for flat columns: on the 128-bin
        # histogram lists both cost more than the rest of the file and buy nothing
        self.w = pq.ParquetWriter(nf.f, schema, compression="zstd", write_statistics=flat,
                                  use_dictionary=[f.name for f in schema if pa.types.is_string(f.type)])
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = 0
        self.rows = 0

    def add(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if not batch.schema.equals(self.schema):
            batch = _to_schema(batch, self.schema)
        self.pending.append(batch)
        self.pending_rows += batch.num_rows
        if self.pending_rows >= ROW_GROUP_ROWS:
            self._write()

    def _write(self) -> None:
        if self.pending:
            t = pa.Table.from_batches(self.pending, self.schema)
            if len(self.pending) > 1 and self.pending_rows < 1024 * len(self.pending):
                t = t.combine_chunks()  # many tiny chunks (one per task) write slowly; big ones need no copy
            self.w.write_table(t, row_group_size=ROW_GROUP_ROWS)
            self.rows += t.num_rows
            self.pending, self.pending_rows = [], 0

    def size(self) -> int:
        return self.nf.tell()

    def close(self) -> FileEntry:
        self._write()
        self.w.close()
        w = self.nf.commit()
        return FileEntry(path=self.name, size=w.size, sha256=w.sha256, rows=self.rows)

    def abort(self) -> None:
        try:
            self.w.close()
        except Exception:
            pass
        self.nf.abort()


_ROW_BYTES = {POINTS_DIR: 1536, EVENTS_DIR: 128}
"""Arrow bytes of a row, about (a points row is mostly its 128-bin histogram): counted per row because
a table's own buffer size counts the whole parent of a slice and its exact size costs ~1 ms."""


def _pairs(tasks: RangeSet) -> list[tuple[int, int]]:
    return [(a, b) for a, b in tasks.ranges()]


def _footprint(points: pa.Table, events: pa.Table | None) -> int:
    ev = events.num_rows if events is not None else 0
    return _TASK_OVERHEAD + points.num_rows * _ROW_BYTES[POINTS_DIR] + ev * _ROW_BYTES[EVENTS_DIR]


def _to_schema(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """The batch with ``schema``'s columns in order (absent columns as nulls)."""
    cols = []
    for f in schema:
        i = batch.schema.get_field_index(f.name)
        cols.append(batch.column(i).cast(f.type) if i >= 0 else pa.nulls(batch.num_rows, f.type))
    return pa.RecordBatch.from_arrays(cols, schema=schema)


class SetWriter:
    """The writer of one result set (holds its lock until ``close``)."""

    def __init__(self, backend: Backend, manifest: Manifest, lock: WriterLock, *, flush_s: float = FLUSH_S,
                 buffer_bytes: int = BUFFER_BYTES, grace_s: float = GC_GRACE_S) -> None:
        self.backend = backend
        self.manifest = manifest
        self.lock = lock
        self.token = lock.token
        self.flush_s = flush_s
        self.buffer_bytes = buffer_bytes
        self.grace_s = grace_s
        self._seq = 0
        self._done = manifest.done()
        self._buf: dict[int, tuple[pa.Table, pa.Table | None]] = {}
        self._buf_bytes = 0
        self._last_commit = time.monotonic()
        self._mutex = threading.RLock()
        self.closed = False
        self._commit_cost = 0.0  # seconds the last manifest commit took (a generation: a link per file)
        self._commit_files = 0  # about how many files it linked

    # ---- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, backend: Backend, *, break_lock: bool = False, **kw) -> SetWriter:
        """Lock an existing set and read its manifest under the lock; clean up a dead writer's leftovers."""
        lock = acquire(backend, new_token(), break_lock=break_lock)
        try:
            w = cls(backend, read_manifest(backend), lock, **kw)
            w._upgrade()
            w._cleanup()
        except BaseException:
            lock.release()
            raise
        return w

    @classmethod
    def create(cls, backend: Backend, manifest: Manifest, spec_text: str, *, break_lock: bool = False,
               **kw) -> SetWriter:
        """Create a set: directories, lock, spec, then the manifest (a crash before it leaves no set)."""
        try:
            backend.makedirs()
        except OSError as e:
            raise StoreError(f"{backend.display()}: cannot create results dir: {one_line(e)}") from None
        lock = acquire(backend, new_token(), break_lock=break_lock)
        try:
            if backend.kind(MANIFEST) is not None:
                raise StoreError(f"{backend.display()}: another writer created this results dir just now; run again")
            manifest = manifest.model_copy(update={"data_dir": DATA_DIR if backend.views else ""})
            w = cls(backend, manifest, lock, **kw)
            w.ensure_layout(spec_text)
            w._write_manifest()
        except BaseException:
            lock.release()
            raise
        return w

    def ensure_layout(self, spec_text: str) -> None:
        """spec.toml and the table directories exist (a crash right after creation self-heals)."""
        fs = self.backend
        try:
            current = fs.read_bytes(SPEC_FILE).decode("utf-8") if fs.kind(SPEC_FILE) == "file" else None
        except (OSError, UnicodeDecodeError):
            current = None
        if current != spec_text:
            fs.replace_bytes(SPEC_FILE, spec_text.encode(), self.token)
        for t in TABLES:
            fs.makedirs(self._phys(t))
        if uses_generations(fs, self.manifest) and (Path(fs.path()) / CURRENT).is_symlink():
            ensure_links(fs, self.token)

    # ---- state ---------------------------------------------------------------------------------
    @property
    def display(self) -> str:
        return self.backend.display()

    def done(self) -> RangeSet:
        """Tasks the manifest commits."""
        with self._mutex:
            return RangeSet(self._done.ranges())

    def verify(self, expect: Expect | None = None) -> list[Damage]:
        """Check every committed file (``expect``: what first-release task files must hold, from the
        plan); drop what is damaged, duplicated or conflicting from the manifest, so those tasks run again."""
        with self._mutex:
            damaged = ResultSet(self.backend, self.manifest).check(verify=True, expect=expect).damaged
            if damaged:
                m = self.manifest
                drop = {d.segment for d in damaged if d.segment is not None}
                bad_legacy = RangeSet(d.legacy_task for d in damaged if d.legacy_task is not None)
                keep = [s for i, s in enumerate(m.segments) if i not in drop]
                gone = [s for i, s in enumerate(m.segments) if i in drop]
                kept_files = {f.path for s in keep for f in s.files()}
                now = time.time()
                garbage = list(m.garbage) + [Garbage(path=f.path, since=now) for s in gone for f in s.files()
                                             if f.path not in kept_files]
                garbage += [Garbage(path=task_file(t, tid), since=now) for tid in bad_legacy for t in TABLES]
                legacy = RangeSet(m.legacy_tasks).difference(bad_legacy)
                ctd = m.cpu_trials_done
                if not legacy:
                    ctd = sum(s.cpu_trials for s in keep)  # exact: every kept segment records its own
                elif bad_legacy or ctd is None:
                    ctd = None  # first-release tasks record none: recounted from the rows when needed
                else:
                    ctd -= sum(s.cpu_trials for s in gone)
                self._replace(segments=keep, legacy_tasks=legacy.ranges(), garbage=garbage, cpu_trials_done=ctd)
                self._done = self.manifest.done()
                self._write_manifest()
            return damaged

    # ---- writing -------------------------------------------------------------------------------
    def add(self, task_id: int, points: pa.Table, events: pa.Table | None = None) -> None:
        """Buffer one task's rows (conformed to the schemas); written with the next segment."""
        if self.closed:
            raise StoreError(f"{self.display}: writer is closed")
        pts = conform(points, POINTS_SCHEMA, f"task {task_id} points")
        evs = None if events is None else conform(events, EVENTS_SCHEMA, f"task {task_id} events")
        if evs is not None and evs.num_rows == 0:
            evs = None
        with self._mutex:
            if task_id in self._done:
                return  # already committed (rows are deterministic): never store a task twice
            old = self._buf.pop(task_id, None)
            if old is not None:
                self._buf_bytes -= _footprint(*old)
            self._buf[task_id] = (pts, evs)
            self._buf_bytes += _footprint(pts, evs)
            if self._buf_bytes >= self.buffer_bytes or time.monotonic() - self._last_commit >= self._commit_interval():
                self.flush()

    def flush(self) -> None:
        """Write the buffered tasks as one segment and commit it; then merge small segments and collect garbage."""
        with self._mutex:
            if not self._buf:
                if self.manifest_dirty:
                    self._write_manifest()
                return
            ids = sorted(self._buf)
            pts = pa.Table.from_batches([b for t in ids for b in self._buf[t][0].to_batches()],
                                        POINTS_SCHEMA).combine_chunks()
            ev_list = [self._buf[t][1] for t in ids if self._buf[t][1] is not None]
            seg = self._write_segment(RangeSet(ids), [pts], ev_list, _cpu_trials(pts))
            segments = list(self.manifest.segments) + [seg]
            ctd = self.manifest.cpu_trials_done
            self._replace(segments=segments, cpu_trials_done=None if ctd is None else ctd + seg.cpu_trials)
            self._done.update(ids)
            self._buf.clear()
            self._buf_bytes = 0
            self._write_manifest()
            self._merge_tiers()
            self.collect_garbage()
            # the interval counts from the end of this commit's work: a slow commit (merges, a
            # loaded machine) must not make every following task commit on its own
            self._last_commit = time.monotonic()

    manifest_dirty = False

    def set_fields(self, **fields) -> None:
        """Change top-level manifest fields (n_tasks, plan, ...); written with the next commit."""
        with self._mutex:
            self._replace(**fields)
            self.manifest_dirty = True

    def finish(self, **fields) -> None:
        """Flush, merge every small segment into as few as possible, record ``fields``, commit."""
        with self._mutex:
            self.flush()
            small = [s for s in self.manifest.segments if s.points.size < SEGMENT_BYTES]
            if len(small) > 1:
                self._merge(small)
            if fields:
                self._replace(**fields)
            self._write_manifest()
            self.collect_garbage()

    def close(self) -> None:
        """Flush and release the lock (idempotent)."""
        if self.closed:
            return
        try:
            self.flush()
        finally:
            self.closed = True
            self.lock.release()

    def abandon(self) -> None:
        """Release the lock without writing anything more (after a refusal)."""
        self.closed = True
        self.lock.release()

    # ---- internals -----------------------------------------------------------------------------
    def _replace(self, **fields) -> None:
        self.manifest = self.manifest.model_copy(update=fields)

    def _write_manifest(self) -> None:
        """Commit the manifest: a new generation where the filesystem has links (queries.resultset.view:
        the manifest and the views outside readers see change in one rename), else one atomic write."""
        t0 = time.monotonic()
        self.manifest = self.manifest.model_copy(update={"updated": now_iso()})
        data = dump_manifest(self.manifest)
        if uses_generations(self.backend, self.manifest):
            self._seq += 1
            commit(self.backend, self.manifest, data, self.token, self._seq)
        else:
            self.backend.replace_bytes(MANIFEST, data, self.token)
        self._last_commit = time.monotonic()
        self._commit_cost = self._last_commit - t0
        self._commit_files = len(RangeSet(self.manifest.legacy_tasks)) + 2 * len(self.manifest.segments)
        self.manifest_dirty = False

    def _commit_interval(self) -> float:
        """Seconds between segment commits: ``flush_s``; for a set of more than 1,000 files (a large
        first-release set: a generation links every committed file) at least 20 times what the last
        commit took, so committing stays under ~5% of the time."""
        return self.flush_s if self._commit_files <= 1000 else max(self.flush_s, 20 * self._commit_cost)

    def _upgrade(self) -> None:
        """A set written before format 3 on a filesystem with links: move its files under .data and
        commit it as a generation (queries.resultset.view.convert)."""
        if self.backend.views and self.manifest.data_dir == "":
            self.manifest = self.manifest.model_copy(update={"data_dir": DATA_DIR, "updated": now_iso()})
            self._seq += 1
            convert(self.backend, self.manifest, dump_manifest(self.manifest), self.token, self._seq)

    def _next_name(self, table: str) -> str:
        return segment_file(table, self.token, self._seq)

    def _phys(self, rel: str) -> str:
        return physical(self.manifest.data_dir, rel)

    def _new_out(self, table: str, schema: pa.Schema) -> _TableOut:
        name = self._next_name(table)
        return _TableOut(self.backend.new_file(self._phys(name), self.token), schema, name)

    def _write_segment(self, tasks: RangeSet, points: list[pa.Table], events: list[pa.Table],
                       cpu_trials: int) -> Segment:
        self._seq += 1
        outs: list[_TableOut] = []
        try:
            p = self._new_out(POINTS_DIR, POINTS_SCHEMA)
            outs.append(p)
            for t in points:
                for b in t.to_batches(max_chunksize=ROW_GROUP_ROWS):
                    p.add(b)
            e = None
            if any(t.num_rows for t in events):
                e = self._new_out(EVENTS_DIR, EVENTS_SCHEMA)
                outs.append(e)
                for t in events:
                    for b in t.to_batches():
                        e.add(b)
            # events first: once the points file is visible its events file is too
            ev_entry = e.close() if e is not None else None
            pt_entry = p.close()
        except BaseException:
            for o in outs:
                o.abort()
            raise
        return Segment(tasks=_pairs(tasks), points=pt_entry, events=ev_entry, cpu_trials=cpu_trials)

    def _merge_tiers(self) -> None:
        while True:
            small = [s for s in self.manifest.segments if s.points.size < SEGMENT_BYTES]
            by_level: dict[int, list[Segment]] = {}
            for s in small:
                by_level.setdefault(_level(s.size), []).append(s)
            full = [v for _, v in sorted(by_level.items()) if len(v) >= MERGE_FANOUT]
            if not full:
                return
            self._merge(full[0])

    def _merge(self, segments: list[Segment]) -> None:
        """Rewrite ``segments`` as new segments (streamed) and swap them in with one manifest commit."""
        sources = [_Source(s.task_set(), s.points.path, s.events.path if s.events else None, s.size)
                   for s in segments]
        new = list(self._stream(sources, {POINTS_DIR: POINTS_SCHEMA, EVENTS_DIR: EVENTS_SCHEMA}))
        old = {id(s) for s in segments}
        now = time.time()
        keep = [s for s in self.manifest.segments if id(s) not in old]
        garbage = list(self.manifest.garbage) + [Garbage(path=f.path, since=now) for s in segments for f in s.files()]
        self._replace(segments=keep + new, garbage=garbage)
        self._write_manifest()

    def _stream(self, sources: list[_Source], schemas: dict[str, pa.Schema]) -> Iterator[Segment]:
        """Copy the sources' rows, in order, into new segments of about SEGMENT_BYTES each."""
        i = 0
        while i < len(sources):
            self._seq += 1
            p = self._new_out(POINTS_DIR, schemas[POINTS_DIR])
            e: _TableOut | None = None
            tasks = RangeSet()
            cpu = 0
            try:
                while i < len(sources) and (p.size() < SEGMENT_BYTES or not tasks):
                    src = sources[i]
                    for b in self._batches(src.points):
                        p.add(b)
                        cpu += _cpu_trials(pa.Table.from_batches([b]).select(["n_cpus", "trials"]))
                    if src.events is not None:
                        for b in self._batches(src.events):
                            if e is None:
                                e = self._new_out(EVENTS_DIR, schemas[EVENTS_DIR])
                            e.add(b)
                    tasks.update(src.tasks)
                    i += 1
                ev_entry = e.close() if e is not None and (e.rows or e.pending_rows) else None
                if e is not None and ev_entry is None:
                    e.abort()
                pt_entry = p.close()
            except BaseException:
                p.abort()
                if e is not None:
                    e.abort()
                raise
            yield Segment(tasks=_pairs(tasks), points=pt_entry, events=ev_entry, cpu_trials=cpu)

    def _batches(self, rel: str) -> Iterator[pa.RecordBatch]:
        with self.backend.open_input(self._phys(rel)) as f:
            yield from pq.ParquetFile(f).iter_batches(batch_size=READ_BATCH_ROWS)

    # ---- garbage and leftovers -------------------------------------------------------------------
    def collect_garbage(self, grace_s: float | None = None) -> int:
        """Delete superseded files older than the grace period; returns how many were deleted."""
        grace = self.grace_s if grace_s is None else grace_s
        now = time.time()
        with self._mutex:
            if self.backend.views:
                collect_generations(self.backend, min(grace, GENERATION_GRACE_S))
            due = [g for g in self.manifest.garbage if now - g.since >= grace]
            if not due:
                return 0
            for g in due:
                self.backend.delete(self._phys(g.path))
            self._replace(garbage=[g for g in self.manifest.garbage if now - g.since < grace])
            self._write_manifest()
            return len(due)

    def _referenced(self) -> set[str]:
        """Where every file the manifest names lies (relative to the set)."""
        refs = {f.path for s in self.manifest.segments for f in s.files()}
        refs |= {g.path for g in self.manifest.garbage}
        for tid in RangeSet(self.manifest.legacy_tasks):
            refs.update(task_file(t, tid) for t in TABLES)
        return {self._phys(r) for r in refs}

    def _cleanup(self) -> None:
        """Delete leftovers: files of a dead writer, first-release *.tmp, unreferenced files past the grace period."""
        refs = self._referenced()
        now = time.time()
        dead = self.lock.dead_token
        if self.backend.views:
            collect_generations(self.backend, min(self.grace_s, GENERATION_GRACE_S), dead)
        for sub in ("",) + tuple(self._phys(t) for t in TABLES):
            for name, st in self.backend.listdir(sub).items():
                if st is None:
                    continue
                rel = f"{sub}/{name}" if sub else name
                if rel in refs or name in (MANIFEST, SPEC_FILE) or name.startswith("writer.lock"):
                    continue
                ours = is_tmp(name) or name.startswith("seg-") or task_id_of(name) is not None
                release1_tmp = name.endswith(".tmp") and (name in (MANIFEST + ".tmp", SPEC_FILE + ".tmp")
                                                           or task_id_of(name[:-4]) is not None)
                if not (ours or release1_tmp):
                    continue
                tok = token_of(name)
                old = st.mtime is not None and now - st.mtime >= self.grace_s
                if release1_tmp or (tok is not None and tok == dead) or (old and tok != self.token):
                    self.backend.delete(rel)


# ---- compaction ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompactReport:
    """What ``compact`` did: files of each table before and after, tasks moved, bytes before and after."""

    display: str
    files_before: int
    files_after: int
    tasks: int
    bytes_before: int
    bytes_after: int


def compact(backend: Backend, *, break_lock: bool = False, grace_s: float = GC_GRACE_S,
            expect: Expect | None = None) -> CompactReport:
    """Rewrite every first-release per-task file and every small segment into few large segments.

    One manifest commit swaps the old files for the new: a reader sees the old set or the
    new, never both or neither. The old files are deleted ``grace_s`` seconds later (by the
    next compaction or run on the set; ``grace_s=0``: now, which may break readers running
    at this moment). Damaged files are refused (StoreError): run the sweep to repair first
    (``expect``: what first-release task files must hold, from the plan; see ResultSet.check).
    """
    w = SetWriter.open(backend, break_lock=break_lock, grace_s=grace_s)
    try:
        m = w.manifest
        rs = ResultSet(backend, m)
        integrity = rs.check(verify=True, expect=expect)
        if integrity.damaged:
            raise StoreError(f"{integrity.problem()}; `stoprace run` the same spec to recompute them before compacting")
        legacy = RangeSet(m.legacy_tasks)
        small = [s for s in m.segments if s.points.size < SEGMENT_BYTES]
        n_files = len(rs.files(POINTS_DIR)) + len(rs.files(EVENTS_DIR))
        before_bytes = sum(s.size for s in m.segments)
        sources: list[_Source] = []
        ev_present = set(rs.files(EVENTS_DIR))
        for tid in legacy:
            prel = task_file(POINTS_DIR, tid)
            erel = task_file(EVENTS_DIR, tid)
            st = backend.stat(w._phys(prel))
            before_bytes += st.size if st else 0
            est = backend.stat(w._phys(erel)) if erel in ev_present else None
            before_bytes += est.size if est else 0
            sources.append(_Source(RangeSet([tid]), prel, erel if erel in ev_present else None,
                                   (st.size if st else 0) + (est.size if est else 0)))
        sources += [_Source(s.task_set(), s.points.path, s.events.path if s.events else None, s.size) for s in small]
        if len(sources) <= 1 and not legacy:
            w.collect_garbage()
            files = sum(len(s.files()) for s in m.segments)
            return CompactReport(w.display, files, files, len(m.done()), before_bytes, before_bytes)
        # the inputs' own columns (a first-release set gains no column it never had; readers fill later
        # parameters with their neutral value either way)
        schemas = {t: rs.schema(t) or SCHEMAS[t] for t in TABLES}
        new = list(w._stream(sources, schemas))
        now = time.time()
        small_ids = {id(s) for s in small}
        keep = [s for s in m.segments if id(s) not in small_ids]
        garbage = list(m.garbage) + [Garbage(path=f.path, since=now) for s in small for f in s.files()]
        garbage += [Garbage(path=src.points, since=now) for src in sources[: len(legacy)]]
        garbage += [Garbage(path=src.events, since=now) for src in sources[: len(legacy)] if src.events]
        cpu = m.cpu_trials_done
        if legacy:
            cpu = sum(s.cpu_trials for s in keep + new)
        w._replace(segments=keep + new, legacy_tasks=[], garbage=garbage, cpu_trials_done=cpu)
        w._write_manifest()
        w.collect_garbage()
        after = keep + new
        return CompactReport(w.display, n_files, sum(len(s.files()) for s in after), len(w.manifest.done()),
                             before_bytes, sum(s.size for s in after))
    finally:
        w.abandon()
