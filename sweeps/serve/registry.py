"""Which result sets a `stoprace serve` serves, and how far each one is.

Each DIR_OR_URI given to `serve` is either a result set itself (it holds a
`manifest.json`) or a *root*: a local directory whose subdirectories are result
sets (the README's `results/`). Roots are rescanned on every listing, so a result
set that appears there later (a sweep submitted through the API, or a `stoprace
run --out results/x` from a shell) is served without a restart. A URI is one
result set (object stores have no cheap directory listing to scan).

A sweep is addressed in the API by its *key*: the result set's directory name
(unique; a clash gets `-2`, `-3`, ...). Progress comes from the manifest (SCHEMA.md): tasks
listed done, n x trials done, and the spec's total. The status comes from the integrity check
`stoprace query` runs (queries.resultset.reader.ResultSet.check): `complete`, `partial`
(tasks missing) or `damaged` (a committed file missing or corrupt), with `problem`, the very
line `stoprace query` prints as its warning. The check reads every committed file, so its
result is kept until the manifest or a file of the set changes (size, mtime), or for
_REMOTE_STAMP_S on object storage.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from queries.resultset.errors import StoreError
from queries.resultset.layout import TABLES
from queries.resultset.manifest import parse_manifest
from queries.resultset.reader import Integrity, ResultSet
from queries.resultset.storage import is_uri, locate
from sweeps.serve.errors import NotFound, ServeError
from sweeps.spec import SpecError, SweepSpec, parse_spec
from sweeps.store import MANIFEST, SPEC_FILE, RangeSet

__all__ = ["Registry", "Served", "count_ranges", "read_manifest", "status_word"]

_REMOTE_STAMP_S = 10.0


@dataclass(frozen=True)
class Served:
    """One served result set: its API key and where it lives (a local path or a URI)."""

    key: str
    location: str

    @property
    def local(self) -> Path | None:
        return None if is_uri(self.location) else Path(self.location)


def _key_base(location: str) -> str:
    """A set's key in the API: the last component of its path (a URI's query string, e.g. an S3
    endpoint, is not part of it; a bare bucket is its name)."""
    if is_uri(location):
        parts = urlsplit(location)
        path = parts.path.strip("/") or parts.netloc
    else:
        path = location.rstrip("/")
    return path.rsplit("/", 1)[-1] or "results"


def _read(location: str, name: str) -> bytes | None:
    """A file of a result set, None when it is absent or unreadable."""
    try:
        return locate(location, None).read_bytes(name)
    except (OSError, StoreError, ValueError):
        return None


def read_manifest(location: str) -> dict[str, Any] | None:
    """The manifest (any format version, migrated) as a dict with `tasks_done` ranges; None if unreadable."""
    data = _read(location, MANIFEST)
    if data is None:
        return None
    try:
        m = parse_manifest(data, location)
    except StoreError:
        return None
    d = m.model_dump(mode="json")
    d["tasks_done"] = m.done().ranges()
    return d


def status_word(i: Integrity) -> str:
    """'complete', 'damaged' (a committed file missing, corrupt or otherwise flagged) or 'partial'."""
    if i.problem() is None:
        return "complete"
    return "damaged" if i.damaged or i.complete else "partial"


def _files_stamp(location: str) -> object:
    """Changes whenever the manifest or any file of the set's tables changes (a local set), or every
    _REMOTE_STAMP_S (a URI: no cheap listing)."""
    if is_uri(location):
        return int(time.monotonic() // _REMOTE_STAMP_S)
    h = hashlib.sha256()
    for sub in ("", *TABLES):
        try:
            with os.scandir(os.path.join(location, sub)) as it:
                for e in sorted(it, key=lambda e: e.name):
                    if e.is_file():
                        st = e.stat()
                        h.update(f"{sub}/{e.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{sub}: unreadable\n".encode())
    return h.digest()


def count_ranges(ranges: Any) -> int:
    """How many tasks a manifest's tasks_done lists (inclusive [first, last] ranges, sweeps.store.RangeSet)."""
    try:
        return len(RangeSet(ranges))
    except (TypeError, ValueError):
        return 0


@dataclass
class Registry:
    """The result sets given to `serve` (sets and roots) plus where new sweeps go."""

    sets: list[str] = field(default_factory=list)
    roots: list[Path] = field(default_factory=list)
    submitted: list[str] = field(default_factory=list)
    """Where sweeps submitted through the API went (listed once they hold a manifest): with only
    result sets given, not under a scanned root."""
    _specs: dict[str, SweepSpec] = field(default_factory=dict)
    _checks: dict[str, tuple[object, Integrity | str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_args(cls, locations: list[str]) -> Registry:
        """Sort the `serve` arguments into result sets and roots; ServeError (one line) for a bad one."""
        reg = cls()
        for loc in locations or ["results"]:
            if is_uri(loc):
                reg.sets.append(loc.rstrip("/"))
                continue
            p = Path(os.path.expanduser(loc))
            if p.is_dir() and (p / MANIFEST).is_file():
                reg.sets.append(str(p))
            elif p.is_dir() or (not p.exists() and not locations):
                reg.roots.append(p)
            elif not p.exists():
                raise ServeError(f"{loc}: no such directory (give result sets or a directory holding them)")
            else:
                raise ServeError(f"{loc}: not a directory")
        return reg

    @property
    def submit_root(self) -> Path:
        """Where a sweep submitted through the API is written: <first root>/<sweep name> (default ./results)."""
        return self.roots[0] if self.roots else Path("results")

    def add_submitted(self, location: str) -> None:
        """Serve `location` (a sweep submitted here) once it holds a manifest."""
        with self._lock:
            if location not in self.submitted:
                self.submitted.append(location)

    def all(self) -> list[Served]:
        """Every served result set, in argument order then name order, with unique keys: the sets given,
        the result sets under the roots given (./results when nothing was given), then submitted sweeps.
        `serve A B` serves A and B (and what is submitted), nothing else."""
        locations = list(self.sets)
        for root in self.roots:
            try:
                children = sorted(c for c in root.iterdir() if (c / MANIFEST).is_file())
            except OSError:
                continue
            locations.extend(str(c) for c in children if str(c) not in locations)
        with self._lock:
            submitted = list(self.submitted)
        known = {os.path.abspath(x) for x in locations if not is_uri(x)}
        locations.extend(x for x in submitted
                         if os.path.abspath(x) not in known and os.path.isfile(os.path.join(x, MANIFEST)))
        seen: dict[str, int] = {}
        out = []
        for loc in dict.fromkeys(locations):
            base = _key_base(loc)
            n = seen.get(base, 0) + 1
            seen[base] = n
            out.append(Served(base if n == 1 else f"{base}-{n}", loc))
        return out

    def get(self, key: str) -> Served:
        for s in self.all():
            if s.key == key:
                return s
        raise NotFound(f"no sweep '{key}' is served here (GET /api/sweeps lists them)")

    def spec_of(self, served: Served, manifest: dict[str, Any]) -> SweepSpec | None:
        """The result set's spec (cached by spec hash); None when unreadable."""
        h = str(manifest.get("spec_hash"))
        with self._lock:
            if h in self._specs:
                return self._specs[h]
        data = _read(served.location, SPEC_FILE)
        if data is None:
            return None
        try:
            spec = parse_spec(data, where=f"{served.location}/{SPEC_FILE}", force=True, stored=True)
        except SpecError:
            return None
        with self._lock:
            self._specs[h] = spec
        return spec

    def integrity(self, served: Served) -> Integrity | str:
        """The set's integrity check (as `stoprace query` runs it), or the one line why it cannot be
        opened; kept while the set's files are unchanged (see the module doc)."""
        stamp = _files_stamp(served.location)
        with self._lock:
            hit = self._checks.get(served.location)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        result: Integrity | str
        try:
            result = ResultSet.open(served.location).check()
        except (StoreError, OSError) as e:
            result = f"{served.location}: {e}"
        with self._lock:
            self._checks[served.location] = (stamp, result)
        return result

    def summary(self, served: Served) -> dict[str, Any]:
        """name, location, sweep, points, tasks done/total, CPU-trials done/total, progress, status, problem."""
        from sweeps.grid import total_cpu_trials

        m = read_manifest(served.location)
        out: dict[str, Any] = {"name": served.key, "location": served.location, "sweep": None, "points": None,
                               "tasks_done": 0, "tasks_total": None, "cpu_trials_done": 0, "cpu_trials_total": None,
                               "progress": 0.0, "status": "empty"}
        if m is None:
            return out
        spec = self.spec_of(served, m)
        done = count_ranges(m.get("tasks_done") or [])
        total = m.get("n_tasks")
        ct_done = int(m.get("cpu_trials_done") or 0)
        ct_total = total_cpu_trials(spec) if spec is not None else None
        check = self.integrity(served)
        problem: str | None
        if isinstance(check, str):
            status, problem = "damaged", check
        else:
            status, problem = status_word(check), check.problem()
        complete = status == "complete"
        if complete:
            progress = 1.0
        elif ct_total:
            progress = min(ct_done / ct_total, 0.999)
        else:
            progress = 0.0
        out.update({
            "sweep": m.get("sweep") or (spec.name if spec else None), "points": m.get("n_points"),
            "tasks_done": done, "tasks_total": total, "cpu_trials_done": ct_done, "cpu_trials_total": ct_total,
            "progress": progress, "status": status, "problem": problem,
            "created": m.get("created"), "spec_hash": m.get("spec_hash"),
        })
        return out

    def axes(self, served: Served) -> dict[str, list[Any]]:
        """The swept axes of a result set and their values (for the dashboard's pickers)."""
        m = read_manifest(served.location)
        spec = self.spec_of(served, m) if m else None
        if spec is None:
            return {}
        return {a.name: list(a.values) for a in spec.axes}
