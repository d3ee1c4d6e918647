"""Reading a result set: its manifest, which committed files are intact, and Arrow datasets over them.

Readers see exactly what the manifest commits (files it does not name are ignored), so
a reader running while a writer stores or compacts sees the old set or the new one,
never a mix. ``ResultSet.check()`` compares every committed file with the manifest
(size and SHA-256 for segments; first-release per-task files, which have no checksums, are
read whole and checked by content), leaves damaged, duplicated and conflicting files out of
``files()``/``dataset()``; ``Integrity.problem()`` is the one line a command prints and
``Integrity.status`` its verdict (complete, partial, damaged). File names are the manifest's
(``points/NAME``); they lie at ``ResultSet.physical(name)`` (under ``.data/`` in format 3).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from queries.resultset.errors import StoreError, one_line
from queries.resultset.layout import MANIFEST, POINTS_DIR, SPEC_FILE, TABLES, physical, task_file
from queries.resultset.manifest import Manifest, parse_manifest
from queries.resultset.ranges import RangeSet
from queries.resultset.storage import Backend, locate, sha256_of

__all__ = ["ResultSet", "Integrity", "Damage", "Expected", "Expect", "STATUSES", "probe"]


@dataclass(frozen=True)
class Damage:
    """A committed file that is missing, damaged, foreign or listed twice, and the tasks left out with it.

    ``segment`` is the index of the manifest's segment listing that was left out, ``legacy_task``
    the first-release task whose file was: ``SetWriter.verify`` drops exactly those. ``tasks``
    are the tasks lost with it (none for a listing whose tasks another file holds).
    """

    path: str
    reason: str
    tasks: RangeSet
    segment: int | None = None
    legacy_task: int | None = None


@dataclass(frozen=True)
class Expected:
    """What one first-release task file must hold, from the task plan: (point_id, shard) -> (seed,
    trials), and each point's parameter values (point_id -> name -> value; its id is their hash)."""

    rows: Mapping[tuple[str, int], tuple[int, int]]
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


Expect = Callable[[int], "Expected | None"]
"""task id -> what its file must hold (None: the plan does not know the task)."""

STATUSES = ("complete", "partial", "damaged")


@dataclass
class Integrity:
    """What a check found: tasks committed and intact, damaged files, set-level problems, the planned total."""

    display: str
    n_tasks: int | None
    intact: RangeSet
    damaged: list[Damage] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Problems of the set as a whole (e.g. its spec.toml no longer matches the manifest's spec_hash)."""

    @property
    def complete(self) -> bool:
        return (not self.damaged and not self.problems and self.n_tasks is not None
                and len(self.intact) == self.n_tasks)

    @property
    def status(self) -> str:
        """"complete", "partial" (intact but not every task stored) or "damaged" (files left out, or a set-level problem)."""
        if self.damaged or self.problems:
            return "damaged"
        return "complete" if self.complete else "partial"

    def missing(self) -> RangeSet:
        """Planned tasks not stored intact (the total must be known)."""
        return RangeSet([(0, self.n_tasks - 1)] if self.n_tasks else []).difference(self.intact)

    def reasons(self) -> list[str]:
        """One clause per problem, for a status or a line (empty if complete)."""
        if self.complete:
            return []
        parts = list(self.problems)
        if self.n_tasks is None:
            parts.append(f"incomplete: {len(self.intact)} tasks stored, the run that wrote it did not finish")
        elif len(self.intact) < self.n_tasks:
            miss = self.missing()
            parts.append(f"incomplete: {len(self.intact)} of {self.n_tasks} tasks stored (missing tasks {miss.describe()})")
        for d in self.damaged[:3]:
            held = f" (tasks {d.tasks.describe()})" if d.tasks else ""
            parts.append(f"damaged: {d.path} {d.reason}{held}")
        if len(self.damaged) > 3:
            parts.append(f"and {len(self.damaged) - 3} more damaged files")
        return parts

    def problem(self) -> str | None:
        """One line saying what is incomplete or damaged (None if the set is complete and intact)."""
        parts = self.reasons()
        return f"{self.display}: " + "; ".join(parts) if parts else None


def _statistics_problem(md: pq.FileMetaData, t: pa.Table) -> str | None:
    """Why a file's column statistics disagree with its decoded rows (None if they agree).

    Scans skip row groups by these minima and maxima, so a wrong one (a flipped bit in the
    footer) would drop rows from a filtered query although every row decodes.
    """
    import pyarrow.compute as pc

    start = 0
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        part = t.slice(start, rg.num_rows)
        start += rg.num_rows
        for i in range(rg.num_columns):
            c = rg.column(i)
            st = c.statistics
            name = c.path_in_schema.split(".", 1)[0]
            if name not in part.column_names:  # the Parquet schema and the Arrow schema in the footer disagree
                return f"has a column {name!r} in its Parquet schema that its Arrow schema does not name"
            if st is None:
                continue
            col = part[name]
            if pa.types.is_list(col.type):
                col = pc.list_flatten(col)
            if st.has_null_count and "." not in c.path_in_schema and st.null_count != col.null_count:
                return f"has statistics of column {name} that do not match its rows (null count)"
            if not st.has_min_max:
                continue
            vals = col.filter(pc.invert(pc.is_nan(col))) if pa.types.is_floating(col.type) else col
            mm = pc.min_max(vals).as_py()
            if (mm["min"], mm["max"]) != (st.min, st.max):
                return f"has statistics of column {name} that do not match its rows"
    return None


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
        self._bad_trials: dict[int, dict[tuple[str, int], int]] = {}

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
    def physical(self, rel: str) -> str:
        """Where the file the manifest calls ``rel`` lies, relative to the set (layout.physical)."""
        return physical(self.manifest.data_dir, rel)

    def check(self, verify: bool = True, *, expect: Expect | None = None, problems: tuple[str, ...] = ()) -> Integrity:
        """Compare every committed file with the manifest and leave out what does not match.

        Segments: present, of the recorded size and (``verify``) SHA-256. First-release task
        files have no checksums: they are read whole and checked by content (``_check_legacy``),
        against ``expect`` (the task plan, which sweeps knows) where given. A segment listed
        twice is counted once, and a listing claiming tasks another file already holds is left
        out; both are named. ``problems``: set-level lines the caller found (e.g. the spec).
        The first call decides; later calls return the same Integrity.
        """
        if self._integrity is not None:
            return self._integrity
        m = self.manifest
        intact = RangeSet()
        damaged: list[Damage] = []
        files: dict[str, list[str]] = {t: [] for t in TABLES}
        schemas: dict[str, list[pa.Schema]] = {t: [] for t in TABLES}
        holder: dict[str, RangeSet] = {}  # accepted points file -> its tasks (to name a conflict)
        for i, seg in enumerate(m.segments):
            tasks = seg.task_set()
            if seg.points.path in holder:
                damaged.append(Damage(self.physical(seg.points.path), "is listed twice in the manifest (counted once)",
                                      RangeSet(), i))
                continue
            bad = None
            found: list[tuple[str, str, pa.Schema]] = []
            for table, entry in zip(TABLES, (seg.points, seg.events)):
                if entry is None:
                    continue
                why, schema = self._check_segment_file(self.physical(entry.path), entry.size, entry.sha256, verify)
                if why:
                    bad = (entry.path, why)
                    break
                found.append((table, entry.path, schema))
            if bad:
                damaged.append(Damage(self.physical(bad[0]), bad[1], tasks, i))
                continue
            clash = tasks.intersection(intact)
            if clash:
                other = next(p for p, t in holder.items() if t.intersection(clash))
                damaged.append(Damage(self.physical(seg.points.path),
                                      f"claims tasks {clash.describe()} that {self.physical(other)} holds (left out)",
                                      tasks.difference(intact), i))
                continue
            for table, rel, schema in found:
                files[table].append(rel)
                schemas[table].append(schema)
            intact.update(tasks)
            holder[seg.points.path] = tasks
        legacy = RangeSet(m.legacy_tasks)
        if legacy:
            self._check_legacy(legacy, intact, damaged, files, schemas, verify, expect)
        self._files, self._schemas = files, schemas
        self._integrity = Integrity(self.display, m.n_tasks, intact, damaged, list(problems))
        return self._integrity

    def _check_legacy(self, legacy: RangeSet, intact: RangeSet, damaged: list[Damage], files: dict[str, list[str]],
                      schemas: dict[str, list[pa.Schema]], verify: bool, expect: Expect | None) -> None:
        """First-release task files: each must exist and (``verify``) read whole and hold what its task
        should (``_legacy_content``); a task a segment holds too is left out as a conflict."""
        fs = self.backend
        present = {t: fs.listdir(self.physical(t)) for t in TABLES}
        seen: Counter[tuple[str, int]] = Counter()
        for tid in legacy:
            rel = task_file(POINTS_DIR, tid)
            name = rel.split("/", 1)[1]
            if name not in present[POINTS_DIR]:
                damaged.append(Damage(self.physical(rel), "is missing", RangeSet([tid]), legacy_task=tid))
                continue
            if tid in intact:
                damaged.append(Damage(self.physical(rel), f"holds task {tid}, which a segment holds too (left out)",
                                      RangeSet(), legacy_task=tid))
                continue
            got: list[tuple[str, str, pa.Schema]] = []
            why = None
            keys: set[tuple[str, int]] = set()
            for table in TABLES:
                r = task_file(table, tid)
                if table != POINTS_DIR and name not in present[table]:
                    # no events file: a set may be kept without its events (the events view is then empty)
                    self._bad_trials.pop(tid, None)
                    continue
                try:
                    with fs.open_input(self.physical(r)) as f:
                        if verify:
                            # every page decoded (no checksum says the bytes are intact); one thread: the files are small
                            pf = pq.ParquetFile(f)
                            t = pf.read(use_threads=False)
                            schema = t.schema
                            why = _statistics_problem(pf.metadata, t) or self._legacy_content(table, tid, t, keys,
                                                                                                 seen, expect)
                        else:
                            schema = pq.read_schema(f)
                except (OSError, pa.ArrowException) as e:
                    why = f"is unreadable ({one_line(e)})"
                if why:
                    rel = r
                    break
                got.append((table, r, schema))
            if why:
                damaged.append(Damage(self.physical(rel), why, RangeSet([tid]), legacy_task=tid))
                continue
            for table, r, schema in got:
                files[table].append(r)
                schemas[table].append(schema)
            intact.add(tid)
            seen.update(keys)

    def _legacy_content(self, table: str, tid: int, t: pa.Table, keys: set[tuple[str, int]],
                        seen: Counter[tuple[str, int]], expect: Expect | None) -> str | None:
        """Why a first-release task file's rows cannot be its task's (None if they can).

        Points: the sweep name, outcome counts adding up to trials, the histogram holding every
        finite trial, no (point, shard) another file already holds, and with ``expect`` exactly
        the plan's (point, shard) pairs with their seeds and trial counts. Events (where the file
        is there at all): the sweep, only that task's shards, one row per race/hang/timeout trial.
        """
        from queries.resultset.schema import SCHEMAS

        want_schema = SCHEMAS[table]
        for f in t.schema:  # the first release wrote a subset of today's columns, with today's types
            i = want_schema.get_field_index(f.name)
            if i < 0:
                return f"has a column {f.name!r} that no stoprace release writes"
            if want_schema.field(i).type != f.type:
                return f"has column {f.name} of type {f.type}, not {want_schema.field(i).type}"
        try:
            return self._legacy_rows(table, tid, t, keys, seen, expect)
        except (TypeError, ValueError, KeyError, pa.ArrowException) as e:  # contents no writer produces
            return f"has contents no stoprace writes ({type(e).__name__}: {one_line(e)})"

    def _legacy_rows(self, table: str, tid: int, t: pa.Table, keys: set[tuple[str, int]],
                     seen: Counter[tuple[str, int]], expect: Expect | None) -> str | None:
        from queries.resultset.schema import REQUIRED_POINTS_COLUMNS

        sweep = self.manifest.sweep
        if table == POINTS_DIR:
            lack = [c for c in REQUIRED_POINTS_COLUMNS if c not in t.column_names]
            if lack:
                return f"lacks column(s) {', '.join(lack)}"
            rows = t.select(["sweep", "point_id", "shard", "trials", "clean", "nmi_clean", "timeout", "race", "hang",
                             "seed"]).to_pylist()
            hist = t["t_done_hist"].to_pylist()
            for r, h in zip(rows, hist):
                if sweep is not None and r["sweep"] != sweep:
                    return f"holds rows of sweep {r['sweep']!r}, not {sweep!r}"
                if r["clean"] + r["nmi_clean"] + r["timeout"] + r["race"] + r["hang"] != r["trials"]:
                    return f"has a row whose outcome counts do not add up to its {r['trials']} trials"
                if h is None or sum(h) != r["trials"] - r["hang"]:
                    return "has a row whose stop-time histogram does not hold its finite trials"
                k = (r["point_id"], r["shard"])
                if k in keys or seen[k]:
                    return f"repeats point {k[0]} shard {k[1]}, which another row holds"
                keys.add(k)
            want = expect(tid) if expect is not None else None
            if want is not None:
                names = [n for n in next(iter(want.params.values()), {}) if n in t.column_names]
                for r, vals in zip(rows, t.select(names).to_pylist()):
                    k = (r["point_id"], r["shard"])
                    if k[0] in want.params:
                        bad = next((n for n in names if vals[n] != want.params[k[0]][n]), None)
                        if bad is not None:
                            return (f"holds point {k[0]} with {bad} = {vals[bad]!r}, the point's id says "
                                    f"{want.params[k[0]][bad]!r}")
                    if k not in want.rows:
                        return f"holds point {k[0]} shard {k[1]}, which the plan does not put in task {tid}"
                    if (r["seed"], r["trials"]) != want.rows[k]:
                        return (f"holds point {k[0]} shard {k[1]} with seed {r['seed']} and {r['trials']} trials, "
                                f"the plan says seed {want.rows[k][0]} and {want.rows[k][1]} trials")
                if len(rows) != len(want.rows):
                    return f"has {len(rows)} rows, the plan puts {len(want.rows)} (point, shard) pairs in task {tid}"
            self._bad_trials[tid] = {(r["point_id"], r["shard"]): r["race"] + r["hang"] + r["timeout"] for r in rows}
            return None
        # events (read after the points file of the same task)
        if "point_id" not in t.column_names or "shard" not in t.column_names:
            return "lacks the point_id and shard columns"
        want_bad = self._bad_trials.pop(tid, {})
        got_bad: Counter[tuple[str, int]] = Counter(zip(t["point_id"].to_pylist(), t["shard"].to_pylist()))
        if sweep is not None and "sweep" in t.column_names and set(t["sweep"].to_pylist()) - {sweep}:
            return f"holds rows of sweep {next(iter(set(t['sweep'].to_pylist()) - {sweep}))!r}, not {sweep!r}"
        for k in got_bad:
            if k not in want_bad:
                return f"holds events of point {k[0]} shard {k[1]}, which task {tid} does not hold"
        for k, n in want_bad.items():
            if got_bad[k] != n:
                return (f"holds {got_bad[k]} events of point {k[0]} shard {k[1]}, whose points row counts {n} "
                        "race/hang/timeout trials")
        return None

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
        return ds.dataset([self.backend.arrow_path(self.physical(r)) for r in rels], schema=self.schema(table),
                          format="parquet", filesystem=self.backend.arrow_fs)

    def read_table(self, table: str, columns: list[str] | None = None, filter=None) -> pa.Table:
        d = self.dataset(table)
        if d is None:
            from queries.resultset.schema import SCHEMAS

            t = SCHEMAS[table].empty_table()
            return t.select(columns) if columns else t
        return d.to_table(columns=columns, filter=filter)
