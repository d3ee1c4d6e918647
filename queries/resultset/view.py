"""What readers without stoprace see: ``points/`` and ``events/`` hold exactly the committed files.

A plain ``duckdb.read_parquet('DIR/points/*.parquet')``, ``pandas.read_parquet('DIR/points')``,
``pyarrow.dataset.dataset('DIR/points')`` or ``polars.read_parquet('DIR/points/*.parquet')``
reads the files in that directory and knows nothing of the manifest. So in format 3 the
files themselves live under ``.data/`` (queries.resultset.layout), and ``DIR/points`` is a
symbolic link to a *view*: a directory ``.views/points-<token>-<n>/`` of links to the
files one manifest commits. After each commit the writer builds the new view and replaces
the ``DIR/points`` link by a rename, which is atomic: a reader that resolves
``DIR/points`` gets one committed state, whole (the newest, or for an instant after a
commit the one before it), never an in-flight, superseded or half-merged file.

A superseded view is kept for the grace period (``writer.GC_GRACE_S``) like a superseded
file, so a plain reader that listed it just before a swap can still open what it listed;
stoprace readers never use views (they open the files the manifest names under
``.data/``, which stay for the grace period too).

Sets written before format 3 keep their files in ``points/``/``events/`` themselves;
``convert`` moves each directory to ``.data/<table>`` and puts the link in its place in
one atomic exchange (Linux ``renameat2(RENAME_EXCHANGE)``; elsewhere two renames with an
instant in between where ``DIR/points`` is absent). Links need a local filesystem:
on object stores there are no views (``Backend.views`` is False) and the files stay in
``points/``, where superseded ones remain visible to a prefix listing until the grace
period ends.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from queries.resultset.layout import (
    DATA_DIR,
    EVENTS_DIR,
    POINTS_DIR,
    TABLES,
    VIEWS_DIR,
    physical,
    task_file,
    view_dir,
    view_token,
)
from queries.resultset.manifest import Manifest
from queries.resultset.ranges import RangeSet
from queries.resultset.storage import Backend, exchange, fsync_dir

__all__ = ["committed_names", "current_names", "publish", "convert", "collect_views"]


def committed_names(backend: Backend, manifest: Manifest) -> dict[str, list[str]]:
    """Per table, the file names (``seg-....parquet``, ``task-....parquet``) the manifest commits, in order.

    A first-release task's events file exists only if the task had events: those are found by
    listing the table's directory (once, only for sets that still hold per-task files).
    """
    out: dict[str, list[str]] = {t: [] for t in TABLES}
    seen: set[str] = set()
    for seg in manifest.segments:
        for f in seg.files():
            if f.path not in seen:  # a listing repeated by a careless edit is shown once
                seen.add(f.path)
                table, name = f.path.split("/", 1)
                out[table].append(name)
    legacy = RangeSet(manifest.legacy_tasks)
    if legacy:
        events = backend.listdir(physical(manifest.data_dir, EVENTS_DIR))
        for tid in legacy:
            out[POINTS_DIR].append(task_file(POINTS_DIR, tid).split("/", 1)[1])
            name = task_file(EVENTS_DIR, tid).split("/", 1)[1]
            if name in events:
                out[EVENTS_DIR].append(name)
    return out


def _root(backend: Backend) -> Path:
    return Path(backend.path())


def current_names(backend: Backend, table: str) -> set[str] | None:
    """The names in the view ``DIR/<table>`` links to now (None: no view link there)."""
    link = _root(backend) / table
    if not link.is_symlink():
        return None
    try:
        return set(os.listdir(link))
    except OSError:
        return None


def _build(backend: Backend, table: str, names: list[str], token: str, seq: int, data_dir: str) -> str:
    """A new view directory of ``table`` with a link per name; returns its path relative to the set."""
    root = _root(backend)
    rel = view_dir(table, token, seq)
    d = root / rel
    d.mkdir(parents=True)
    up = "../" * rel.count("/") + "../"  # from .views/<view>/ back to the set's root
    for n in names:
        os.symlink(f"{up}{physical(data_dir, f'{table}/{n}')}", d / n)
    fsync_dir(d)
    fsync_dir(d.parent)
    return rel


def _point_link_at(backend: Backend, table: str, view_rel: str, token: str) -> None:
    """Make ``DIR/<table>`` a link to ``view_rel`` by an atomic rename (a real directory there is
    moved aside first, e.g. a copy made with links dereferenced); the old view is marked superseded now."""
    root = _root(backend)
    link = root / table
    tmp = root / f".{table}.link.{token}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(view_rel, tmp)
    old = os.readlink(link) if link.is_symlink() else None
    if link.is_dir() and not link.is_symlink():
        aside = root / f"{VIEWS_DIR}/{table}-{token}-stale"
        if not exchange(link, tmp):
            os.rename(link, aside)
            os.rename(tmp, link)
        else:
            os.rename(tmp, aside)
        _touch(aside)
    else:
        os.replace(tmp, link)
    fsync_dir(root)
    if old is not None and old != view_rel:
        _touch(root / old)


def _touch(p: Path) -> None:
    try:
        os.utime(p, follow_symlinks=False)
    except OSError:
        pass


def publish(backend: Backend, manifest: Manifest, token: str, seq: int,
            names: dict[str, list[str]] | None = None) -> None:
    """Show exactly ``manifest``'s committed files in ``DIR/points`` and ``DIR/events`` (format 3, local)."""
    assert backend.views and manifest.data_dir == DATA_DIR
    names = committed_names(backend, manifest) if names is None else names
    for table in TABLES:
        view_rel = _build(backend, table, names[table], token, seq, manifest.data_dir)
        _point_link_at(backend, table, view_rel, token)


def convert(backend: Backend, manifest: Manifest, token: str, seq: int) -> Manifest:
    """Move a format-1/2 set's ``points/`` and ``events/`` under ``.data/`` and leave views in their
    place; returns the manifest to commit (``data_dir`` = ".data"). Safe to repeat after a crash."""
    root = _root(backend)
    (root / DATA_DIR).mkdir(exist_ok=True)
    names = committed_names(backend, manifest)
    for table in TABLES:
        real, dest = root / table, root / DATA_DIR / table
        if real.is_symlink() or not real.exists():  # moved already (a conversion that crashed after it)
            dest.mkdir(exist_ok=True)
            continue
        if dest.is_symlink():
            dest.unlink()  # left by a conversion that crashed before its exchange
        elif dest.exists():
            raise OSError(f"{dest} exists beside {real}: cannot convert the set")
        view_rel = _build(backend, table, names[table], token, seq, DATA_DIR)
        os.symlink(view_rel, dest)  # the link's target is relative to the set's root, where it is going
        if not exchange(real, dest):  # no atomic exchange here: two renames
            dest.unlink()
            os.rename(real, dest)
            os.symlink(view_rel, real)
        fsync_dir(root / DATA_DIR)
    fsync_dir(root)
    return manifest.model_copy(update={"data_dir": DATA_DIR})


def collect_views(backend: Backend, grace_s: float, dead_token: str | None = None) -> int:
    """Delete views superseded more than ``grace_s`` ago (or left by the dead writer ``dead_token``
    and never shown); the views ``DIR/points`` and ``DIR/events`` link to stay. Returns how many."""
    root = _root(backend)
    now = time.time()
    for t in TABLES:  # a link being put in place when its writer died
        for p in root.glob(f".{t}.link.*.tmp"):
            try:
                tok = p.name.split(".")[3]
                if tok == dead_token or now - p.lstat().st_mtime >= grace_s:
                    p.unlink()
            except (OSError, IndexError):
                pass
    d = root / VIEWS_DIR
    try:
        entries = list(os.scandir(d))
    except FileNotFoundError:
        return 0
    current = {os.path.basename(os.readlink(root / t)) for t in TABLES if (root / t).is_symlink()}
    n = 0
    for e in entries:
        if e.name in current or not e.is_dir(follow_symlinks=False):
            continue
        vtok = view_token(e.name) or (e.name.rsplit("-", 2)[1] if e.name.endswith("-stale") else None)
        if vtok is None:
            continue
        try:
            old = now - e.stat(follow_symlinks=False).st_mtime >= grace_s
        except FileNotFoundError:
            continue
        if old or (dead_token is not None and vtok == dead_token):
            shutil.rmtree(e.path, ignore_errors=True)
            n += 1
    return n
