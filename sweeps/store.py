"""A sweep's result set: the spec and task plan it was run with, on top of the format in queries.resultset.

The format (layout, manifest, segments, atomic writes, lock, storage backends) is
defined once in ``queries.resultset``; this module adds what only a sweep knows:

- opening a set holding a different spec (hash), a different task plan, or something
  that is not a stoprace results dir is refused with one line (StoreError) and nothing
  is written;
- one writer at a time: ``create_or_open`` takes the set's writer lock and refuses at
  once (naming the holder) while another run holds it; ``break_lock`` takes it anyway;
- on reopening, every committed file is verified (size and SHA-256; first-release files:
  read whole and held against the task plan, sweeps.integrity) and damaged, duplicated or
  foreign ones are dropped, so their tasks run again (``repaired``);
- ``write_task`` buffers a task's rows; a task is done once a manifest commit lists its
  segment (see queries.resultset.writer for when that happens).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from queries.resultset.errors import StoreError
from queries.resultset.layout import EVENTS_DIR, MANIFEST, POINTS_DIR, SPEC_FILE, is_tmp
from queries.resultset.manifest import Manifest, now_iso
from queries.resultset.ranges import RangeSet
from queries.resultset.reader import Damage, ResultSet, probe, read_manifest
from queries.resultset.storage import is_uri
from queries.resultset.writer import FLUSH_S, SetWriter
from sweeps.integrity import plan_expectation, stored_spec
from sweeps.spec import SpecError, SweepSpec, parse_spec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = ["StoreError", "ResultStore", "resume_refusal", "RangeSet", "MANIFEST", "SPEC_FILE", "POINTS_DIR", "EVENTS_DIR",
           "package_version", "is_uri"]


def package_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("stoprace")
        except PackageNotFoundError:
            return "0+unknown"
    except Exception:  # pragma: no cover
        return "0+unknown"


def _stored_spec(text: str | None) -> tuple[SweepSpec, bool] | None:
    """(the spec of a result set's spec.toml read as stored, whether it names model_rev), or None
    if it is missing or unreadable."""
    if text is None:
        return None
    try:
        raw = tomllib.loads(text)
        spec = parse_spec(text, where=SPEC_FILE, force=True, stored=True)
    except (SpecError, tomllib.TOMLDecodeError):
        return None
    names = {*raw.get("base", {}), *raw.get("axes", {})} if isinstance(raw, dict) else set()
    return spec, "model_rev" in names


def resume_refusal(display: str, stored_hash: str, stored_text: str | None, spec: SweepSpec) -> str | None:
    """Why `spec` may not resume the result set at `display` (one line), or None when it may (the
    same spec hash). The one rule `stoprace run` and `POST /api/sweeps` both apply.

    A spec that differs from the stored one only in `model_rev` is told so, and how to pin it: a
    set stored before model_rev existed holds revision 1 (its spec.toml does not name it), while a
    spec that leaves model_rev out runs revision 2 (SCHEMA.md, "Sweep spec")."""
    if stored_hash == spec.spec_hash:
        return None
    got = _stored_spec(stored_text)
    if got is not None and "model_rev" in spec.base and "model_rev" in got[0].base:
        stored, named = got
        have, want = stored.base["model_rev"], spec.base["model_rev"]
        if have != want and spec.with_base(model_rev=have).spec_hash == stored_hash:
            held = (f"was stored before model_rev existed, so it holds model revision {have}" if not named
                    else f"holds model_rev = {have} results")
            why = " (the default when a spec leaves model_rev out)" if want == 2 else ""
            return (f"{display} {held}; this spec runs model_rev = {want}{why}: to resume {display}, pin it "
                    f"with model_rev = {have} under [base], or use another --out for revision {want}")
    return (f"{display} holds results of a different spec (hash {stored_hash[:12]}…, this spec "
            f"{spec.spec_hash[:12]}…); use another --out")


def _read_spec_text(fs) -> str | None:
    try:
        return fs.read_bytes(SPEC_FILE).decode("utf-8") if fs.kind(SPEC_FILE) == "file" else None
    except (OSError, UnicodeDecodeError):
        return None


def _check_same(display: str, m: Manifest, spec: SweepSpec, plan: dict[str, Any] | None, fs=None) -> None:
    if m.spec_hash != spec.spec_hash:
        why = resume_refusal(display, m.spec_hash, None if fs is None else _read_spec_text(fs), spec)
        raise StoreError(why)
    if plan is not None and m.plan is not None and _norm(m.plan) != _norm(plan):
        import json

        raise StoreError(
            f"{display} was planned with {json.dumps(m.plan, sort_keys=True)}, not "
            f"{json.dumps(plan, sort_keys=True)}; task ids would not match: use the same planning settings or another --out"
        )


def _check_new(fs, kind: str | None) -> None:
    """A location where a new set may go: absent, or an empty directory (leftover temp files aside)."""
    if kind != "dir":
        return
    try:
        entries = [e for e in fs.listdir() if not is_tmp(e) and e not in (MANIFEST + ".tmp",)]
    except OSError as e:
        raise StoreError(f"{fs.display()}: cannot list directory: {e}") from None
    if entries:
        raise StoreError(
            f"{fs.display()} is not empty and is not a stoprace results dir (no {MANIFEST}); use another --out"
        )


def _norm(d: Any) -> str:
    import json

    return json.dumps(d, sort_keys=True)


class ResultStore:
    """One sweep's result set. ``create_or_open`` to run (holds the writer lock), ``open_existing`` to read."""

    def __init__(self, spec: SweepSpec, *, writer: SetWriter | None = None, reader: ResultSet | None = None) -> None:
        self.spec = spec
        self._w = writer
        self._r = reader
        backend = writer.backend if writer is not None else reader.backend  # type: ignore[union-attr]
        self.backend = backend
        self.path: Path | str = backend.path()
        self.readonly = writer is None
        self.repaired: list[Damage] = []

    # ---- opening -------------------------------------------------------------------------------
    @classmethod
    def create_or_open(
        cls,
        out_dir: str | os.PathLike[str],
        spec: SweepSpec,
        *,
        plan: dict[str, Any] | None = None,
        manifest_interval: float = FLUSH_S,
        filesystem: pafs.FileSystem | None = None,
        break_lock: bool = False,
        verify: bool = True,
    ) -> ResultStore:
        """Create a result set for `spec` (parents too) or reopen one holding the same spec.

        `out_dir` is a local path or a URI (queries.resultset.storage); with `filesystem`, a
        path inside that pyarrow filesystem. `plan` (sweeps.grid.plan_signature(...)) is
        recorded on creation; reopening with a different plan is refused, since task ids
        would not match. `manifest_interval`: seconds between segment commits. Refusals are
        StoreError with one line, and write nothing.
        """
        fs, kind = probe(out_dir, filesystem)
        path = fs.display()
        kw = {"flush_s": manifest_interval}
        if kind == "file":
            raise StoreError(f"{path} exists and is not a directory; use another --out")
        if kind == "dir" and fs.kind(MANIFEST) is not None:
            _check_same(path, read_manifest(fs), spec, plan, fs)  # before the lock: a refusal writes nothing
            w = SetWriter.open(fs, break_lock=break_lock, **kw)
            try:
                _check_same(path, w.manifest, spec, plan)
                store = cls(spec, writer=w)
                if verify:  # first-release task files are held against the plan too (sweeps.integrity)
                    store.repaired = w.verify(expect=plan_expectation(spec, w.manifest))
                if plan is not None and w.manifest.plan is None:
                    w.set_fields(plan=plan)
                # a stored spec.toml that reads as this spec stays as written (e.g. one from before
                # model_rev existed, resumed by a spec pinning model_rev = 1): nothing is rewritten
                kept = _stored_spec(_read_spec_text(fs))
                same = kept is not None and kept[0].spec_hash == spec.spec_hash
                w.ensure_layout(_read_spec_text(fs) if same else spec.to_toml())  # type: ignore[arg-type]
                w.flush()
            except BaseException:
                w.abandon()
                raise
            return store
        _check_new(fs, kind)
        manifest = Manifest(
            sweep=spec.name, spec_hash=spec.spec_hash, version=package_version(), created=now_iso(),
            n_points=spec.n_points, n_shards_per_point=spec.n_shards_per_point, n_tasks=None, cpu_trials_done=0,
            plan=plan,
        )
        w = SetWriter.create(fs, manifest, spec.to_toml(), break_lock=break_lock, **kw)
        if kind == "dir":
            for leftover in (MANIFEST + ".tmp",):  # a first-release run killed while creating the dir
                fs.delete(leftover)
        return cls(spec, writer=w)

    @staticmethod
    def exists(location: str | os.PathLike[str], filesystem: pafs.FileSystem | None = None) -> bool:
        """True if `location` holds a result set (a manifest)."""
        fs, kind = probe(location, filesystem)
        return kind == "dir" and fs.kind(MANIFEST) is not None

    @staticmethod
    def check_creatable(location: str | os.PathLike[str], filesystem: pafs.FileSystem | None = None) -> None:
        """StoreError (one line) unless a new result set could be created at `location`; writes nothing."""
        fs, kind = probe(location, filesystem)
        if kind == "file":
            raise StoreError(f"{fs.display()} exists and is not a directory; use another --out")
        _check_new(fs, kind)
        if fs.local:
            parent = Path(fs.path())
            while not parent.exists() and parent != parent.parent:
                parent = parent.parent
            if not os.access(parent, os.W_OK | os.X_OK):
                raise StoreError(f"{fs.display()}: cannot create results dir: {parent} is not writable")

    @classmethod
    def open_existing(
        cls, results_dir: str | os.PathLike[str], *, filesystem: pafs.FileSystem | None = None
    ) -> ResultStore:
        """Open a result set read-only (queries, replay); StoreError (one line) if it is not one."""
        rs = ResultSet.open(results_dir, filesystem)
        spec = stored_spec(rs)
        if spec.spec_hash != rs.manifest.spec_hash:
            raise StoreError(f"{rs.display}: {SPEC_FILE} does not match the spec_hash in {MANIFEST}")
        return cls(spec, reader=rs)

    # ---- state ---------------------------------------------------------------------------------
    @property
    def _manifest(self) -> Manifest:
        return self._w.manifest if self._w is not None else self._r.manifest  # type: ignore[union-attr]

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest as a plain dict (a copy)."""
        return self._manifest.model_dump(mode="json")

    @property
    def cpu_trials_done(self) -> int | None:
        """Sum of n_cpus x trials over the committed tasks (None if a first-release manifest lacks it)."""
        return self._manifest.cpu_trials_done

    @property
    def n_tasks(self) -> int | None:
        return self._manifest.n_tasks

    def done_tasks(self) -> set[int]:
        """Tasks the manifest commits whose files are intact (readers) / committed (the writer, verified on open)."""
        if self._w is not None:
            return set(self._w.done())
        return set(self._r.check().intact)  # type: ignore[union-attr]

    @property
    def complete(self) -> bool:
        n = self.n_tasks
        return n is not None and len(self.done_tasks()) == n

    def read_points(self, columns: list[str] | None = None) -> pa.Table:
        """Every committed points row (readers and writer alike see the manifest's files only)."""
        rs = self._r if self._r is not None else ResultSet(self.backend, self._manifest)
        return rs.read_table(POINTS_DIR, columns=columns)

    # ---- writing -------------------------------------------------------------------------------
    def _writer(self) -> SetWriter:
        if self._w is None:
            raise StoreError(f"{self.path}: opened read-only")
        return self._w

    def write_task(self, task_id: int, points: pa.Table, events: pa.Table | None = None) -> None:
        """Buffer one task's tables; it is done once the next segment commit lists it."""
        w = self._writer()
        if not isinstance(task_id, int) or isinstance(task_id, bool) or task_id < 0:
            raise StoreError(f"task_id = {task_id!r} must be an int >= 0")
        w.add(task_id, points, events)

    def finish(self, n_tasks: int) -> None:
        """Record the total number of tasks (known once planning has finished), merge small segments, commit."""
        self._writer().finish(n_tasks=int(n_tasks))

    def flush(self) -> None:
        """Commit every buffered task now."""
        if self._w is not None and not self._w.closed:
            self._w.flush()

    def close(self) -> None:
        """Commit what is buffered and release the writer lock."""
        if self._w is not None:
            self._w.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
