"""Reading a result set: its manifest, which committed files are intact, and Arrow datasets over them.

Readers see exactly what the manifest commits (files it does not name are ignored), so
a reader running while a writer stores or compacts sees the old set or the new one,
never a mix. ``ResultSet.check()`` compares every committed file with the manifest
(size and SHA-256 for segments; first-release per-task files, which have no checksums,
must exist and have a readable Parquet footer) and leaves damaged files out of
``files()``/``dataset()``; ``Integrity.problem()`` is the one line a command prints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from queries.resultset.errors import StoreError, one_line
from queries.resultset.layout import MANIFEST, POINTS_DIR, SPEC_FILE, TABLES, task_file
from queries.resultset.manifest import Manifest, parse_manifest
from queries.resultset.ranges import RangeSet
from queries.resultset.storage import Backend, locate, sha256_of

__all__ = ["ResultSet", "Integrity", "Damage", "probe"]


@dataclass(frozen=True)
class Damage:
    """A committed file that is missing or does not match the manifest, and the tasks it held."""

    path: str
    reason: str
    tasks: RangeSet


@dataclass
class Integrity:
    """What a check found: tasks committed and intact, damaged files, the planned total."""

    display: str
    n_tasks: int | None
    intact: RangeSet
    damaged: list[Damage] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.damaged and self.n_tasks is not None and len(self.intact) == self.n_tasks

    def missing(self) -> RangeSet:
        """Planned tasks not stored intact (the total must be known)."""
        r = RangeSet()
        for t in range(self.n_tasks or 0):
            if t not in self.intact:
                r.add(t)
        return r

    def problem(self) -> str | None:
        """One line saying what is incomplete or damaged (None if the set is complete and intact)."""
        if self.complete:
            return None
        parts = []
        if self.n_tasks is None:
            parts.append(f"incomplete: {len(self.intact)} tasks stored, the run that wrote it did not finish")
        elif len(self.intact) < self.n_tasks:
            miss = self.missing()
            parts.append(f"incomplete: {len(self.intact)} of {self.n_tasks} tasks stored (missing tasks {miss.describe()})")
        for d in self.damaged[:3]:
            parts.append(f"damaged: {d.path} {d.reason} (tasks {d.tasks.describe()})")
        if len(self.damaged) > 3:
            parts.append(f"and {len(self.damaged) - 3} more damaged files")
        return f"{self.display}: " + "; ".join(parts)


def probe(location: str | os.PathLike[str], filesystem: pafs.FileSystem | None = None) -> tuple[Backend, str | None]:
    """(backend, "dir" | "file" | None) of a location; StoreError (one line) if unreachable."""
    fs = locate(location, filesystem)
    try:
        return fs, fs.kind()
    except OSError as e:
        raise StoreError(f"{fs.display()}: cannot access results location: {one_line(e)}") from None


def read_manifest(fs: Backend) -> Manifest:
    try:
        data = fs.read_bytes(MANIFEST)
    except OSError as e:
        raise StoreError(f"{fs.display(MANIFEST)}: unreadable manifest: {one_line(e)}") from None
    return parse_manifest(data, fs.display(MANIFEST))


class ResultSet:
    """A result set opened for reading (one manifest snapshot)."""

    def __init__(self, backend: Backend, manifest: Manifest) -> None:
        self.backend = backend
        self.manifest = manifest
        self._integrity: Integrity | None = None
        self._files: dict[str, list[str]] = {}
        self._schemas: dict[str, list[pa.Schema]] = {}

    @classmethod
    def open(cls, location: str | os.PathLike[str], filesystem: pafs.FileSystem | None = None) -> ResultSet:
        """Open a result set (local path or URI); StoreError (one line) if it is not one."""
        fs, kind = probe(location, filesystem)
        if kind is None:
            raise StoreError(f"results dir '{fs.display()}' does not exist")
        if kind != "dir":
            raise StoreError(f"'{fs.display()}' is not a directory (expected a stoprace result set)")
        try:
            has_manifest = fs.kind(MANIFEST) is not None
        except OSError as e:  # e.g. a dir this user may not read
            raise StoreError(f"cannot read results dir '{fs.display()}': {one_line(e)}") from None
        if not has_manifest:
            raise StoreError(f"'{fs.display()}' is not a stoprace result set: no {MANIFEST}")
        return cls(fs, read_manifest(fs))

    @property
    def display(self) -> str:
        return self.backend.display()

    def spec_text(self) -> str:
        try:
            return self.backend.read_bytes(SPEC_FILE).decode("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise StoreError(f"{self.backend.display(SPEC_FILE)}: cannot read spec: {one_line(e)}") from None

    # ---- integrity ---------------------------------------------------------------------------
    def check(self, verify: bool = True) -> Integrity:
        """Compare every committed file with the manifest (``verify``: also SHA-256 of segments)."""
        if self._integrity is not None:
            return self._integrity
        m, fs = self.manifest, self.backend
        intact = RangeSet()
        damaged: list[Damage] = []
        files: dict[str, list[str]] = {t: [] for t in TABLES}
        schemas: dict[str, list[pa.Schema]] = {t: [] for t in TABLES}
        for seg in m.segments:
            bad = None
            found: list[tuple[str, str, pa.Schema]] = []
            for table, entry in zip(TABLES, (seg.points, seg.events)):
                if entry is None:
                    continue
                why, schema = self._check_segment_file(entry.path, entry.size, entry.sha256, verify)
                if why:
                    bad = (entry.path, why)
                    break
                found.append((table, entry.path, schema))
            if bad:
                damaged.append(Damage(bad[0], bad[1], seg.task_set()))
                continue
            for table, rel, schema in found:
                files[table].append(rel)
                schemas[table].append(schema)
            intact.update(seg.task_set())
        legacy = RangeSet(m.legacy_tasks)
        if legacy:
            present = {t: fs.listdir(t) for t in TABLES}
            for tid in legacy:
                rel = task_file(POINTS_DIR, tid)
                name = rel.split("/", 1)[1]
                if name not in present[POINTS_DIR]:
                    damaged.append(Damage(rel, "is missing", RangeSet([tid])))
                    continue
                got = []
                why = None
                for table in TABLES:
                    r = task_file(table, tid)
                    if table != POINTS_DIR and name not in present[table]:
                        continue
                    try:
                        with fs.open_input(r) as f:
                            got.append((table, r, pq.read_schema(f)))
                    except (OSError, pa.ArrowException) as e:
                        why = f"is unreadable ({one_line(e)})"
                        rel = r
                        break
                if why:
                    damaged.append(Damage(rel, why, RangeSet([tid])))
                    continue
                for table, r, schema in got:
                    files[table].append(r)
                    schemas[table].append(schema)
                intact.add(tid)
        self._files, self._schemas = files, schemas
        self._integrity = Integrity(self.display, m.n_tasks, intact, damaged)
        return self._integrity

    def _check_segment_file(self, rel: str, size: int, sha256: str, verify: bool) -> tuple[str | None, pa.Schema | None]:
        fs = self.backend
        st = fs.stat(rel)
        if st is None:
            return "is missing", None
        if st.size != size:
            return f"has {st.size} bytes, the manifest says {size}", None
        try:
            with fs.open_input(rel) as f:
                if verify:
                    _, digest = sha256_of(f)
                    if digest != sha256:
                        return "does not match its checksum", None
                    f.seek(0)
                return None, pq.read_schema(f)
        except (OSError, pa.ArrowException) as e:
            return f"is unreadable ({one_line(e)})", None

    # ---- data --------------------------------------------------------------------------------
    def files(self, table: str) -> list[str]:
        """Committed, intact files of ``table`` ("points" or "events"), relative to the set."""
        self.check()
        return list(self._files[table])

    def schema(self, table: str) -> pa.Schema | None:
        """The union of the schemas of ``table``'s files (None if it has none)."""
        self.check()
        distinct: list[pa.Schema] = []
        for s in self._schemas[table]:
            if not any(s.equals(d) for d in distinct):
                distinct.append(s)
        return pa.unify_schemas(distinct, promote_options="permissive") if distinct else None

    def dataset(self, table: str) -> ds.Dataset | None:
        """An Arrow dataset over ``table``'s intact committed files (missing columns read as null)."""
        rels = self.files(table)
        if not rels:
            return None
        return ds.dataset([self.backend.arrow_path(r) for r in rels], schema=self.schema(table),
                          format="parquet", filesystem=self.backend.arrow_fs)

    def read_table(self, table: str, columns: list[str] | None = None, filter=None) -> pa.Table:
        d = self.dataset(table)
        if d is None:
            from queries.resultset.schema import SCHEMAS

            t = SCHEMAS[table].empty_table()
            return t.select(columns) if columns else t
        return d.to_table(columns=columns, filter=filter)
