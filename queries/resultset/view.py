"""What readers without stoprace see: ``points/`` and ``events/`` hold exactly the committed files.

A plain ``duckdb.read_parquet('DIR/points/*.parquet')``, ``pandas.read_parquet('DIR/points')``,
``pyarrow.dataset.dataset('DIR/points')`` or ``polars.read_parquet('DIR/points/*.parquet')``
reads the files in that directory and knows nothing of the manifest. So in format 3 (on a
filesystem with symbolic links) every commit is a *generation*: a directory
``.views/<token>-<n>/`` holding the manifest and, per table, a directory of links to
exactly the files that manifest commits. One link, ``DIR/.current``, names the current
generation, and ``DIR/manifest.json``, ``DIR/points`` and ``DIR/events`` are fixed links
through it::

    DIR/manifest.json -> .current/manifest.json
    DIR/points        -> .current/points        (.views/<gen>/points/seg-... -> ../../../.data/points/seg-...)
    DIR/events        -> .current/events
    DIR/.current      -> .views/<token>-<n>     (replaced by one rename: the commit)

Committing builds the new generation beside the current one and renames a new
``.current`` over the old, which is atomic: the manifest a stoprace reader opens and the
files a plain reader lists always belong to the same commit, whatever instant either looks
(a crash before the rename leaves the previous commit whole, after it the new one).

A superseded generation is kept a while (``writer.GENERATION_GRACE_S``), so a plain reader
listing it at the instant of a commit finishes its listing; it then opens the files by
their names in ``points/``, i.e. through the current generation (a file a merge just
replaced is then gone: the reader fails and reads again, it never gets a row twice).
stoprace readers open the files the manifest names under ``.data/``, which stay for the
files' grace period (``writer.GC_GRACE_S``).

Sets written before format 3 keep their files in ``points/``/``events/`` themselves and a
plain manifest.json; ``convert`` moves each table directory to ``.data/<table>`` and puts
the link in its place in one atomic exchange (Linux ``renameat2(RENAME_EXCHANGE)``;
elsewhere two renames with an instant in between where ``DIR/points`` is absent), then
replaces manifest.json by its link. Links need a local filesystem: on object stores there
are no generations (``Backend.views`` is False) and the files stay in ``points/``, where
superseded ones remain visible to a prefix listing until the grace period ends.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from queries.resultset.layout import (
    CURRENT,
    DATA_DIR,
    EVENTS_DIR,
    MANIFEST,
    POINTS_DIR,
    TABLES,
    VIEWS_DIR,
    generation_dir,
    generation_token,
    physical,
    task_file,
)
from queries.resultset.manifest import Manifest
from queries.resultset.ranges import RangeSet
from queries.resultset.storage import Backend, exchange, fsync_dir

__all__ = ["committed_names", "commit", "convert", "collect_generations", "uses_generations", "ensure_links"]


def uses_generations(backend: Backend, manifest: Manifest) -> bool:
    """True where commits are generations (format 3 on a filesystem with links)."""
    return backend.views and manifest.data_dir == DATA_DIR


def committed_names(backend: Backend, manifest: Manifest) -> dict[str, list[str]]:
    """Per table, the file names (``seg-....parquet``, ``task-....parquet``) the manifest commits, in order.

    A first-release task's events file exists only if the task had events: those are found by
    listing the table's directory (only for sets that still hold per-task files).
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


def _link(root: Path, rel: str, target: str, token: str) -> None:
    """``root/rel`` becomes a link to ``target``, by an atomic rename over whatever link or file was there
    (a real directory there, as a copy that followed links leaves, is moved aside first)."""
    tmp = root / f".{rel}.link.{token}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    p = root / rel
    if p.is_dir() and not p.is_symlink():
        aside = root / VIEWS_DIR / f"{token}-aside-{rel.lstrip('.')}"
        (root / VIEWS_DIR).mkdir(exist_ok=True)
        if not exchange(p, tmp):
            os.rename(p, aside)
            os.rename(tmp, p)
        else:
            os.rename(tmp, aside)
        _touch(aside)
        return
    os.replace(tmp, p)


def _build(root: Path, gen: str, manifest_bytes: bytes, names: dict[str, list[str]], data_dir: str) -> None:
    """A complete generation directory: the manifest and a directory of links per table, all fsynced."""
    d = root / gen
    d.mkdir(parents=True)
    with open(d / MANIFEST, "wb") as f:
        f.write(manifest_bytes)
        f.flush()
        os.fsync(f.fileno())
    up = "../" * (gen.count("/") + 2)  # from .views/<gen>/<table>/ back to the set's root
    for table in TABLES:
        t = d / table
        t.mkdir()
        for n in names[table]:
            os.symlink(f"{up}{physical(data_dir, f'{table}/{n}')}", t / n)
        fsync_dir(t)
    fsync_dir(d)
    fsync_dir(d.parent)


def ensure_links(backend: Backend, token: str) -> None:
    """manifest.json, points and events are links through .current (after a crash right after a set's
    first commit they may not be yet)."""
    _fixed_links(_root(backend), token)


def _fixed_links(root: Path, token: str) -> None:
    """manifest.json, points and events as links through .current (created once; repaired if a crash
    or a copy that followed links left something else there)."""
    for rel in (MANIFEST, *TABLES):
        p = root / rel
        want = f"{CURRENT}/{rel}"
        if p.is_symlink() and os.readlink(p) == want:
            continue
        _link(root, rel, want, token)  # e.g. after a copy that followed links: real files where links belong


def commit(backend: Backend, manifest: Manifest, manifest_bytes: bytes, token: str, seq: int,
           names: dict[str, list[str]] | None = None) -> None:
    """Commit ``manifest`` as a new generation: build it, then point ``.current`` at it (one rename)."""
    assert uses_generations(backend, manifest)
    root = _root(backend)
    names = committed_names(backend, manifest) if names is None else names
    gen = generation_dir(token, seq)
    _build(root, gen, manifest_bytes, names, manifest.data_dir)
    cur = root / CURRENT
    old = os.readlink(cur) if cur.is_symlink() else None
    _link(root, CURRENT, gen, token)
    fsync_dir(root)
    _fixed_links(root, token)
    if old is not None and old != gen:
        _touch(root / old)  # superseded now: deleted once the grace period has passed


def _touch(p: Path) -> None:
    try:
        os.utime(p, follow_symlinks=False)
    except OSError:
        pass


def convert(backend: Backend, manifest: Manifest, manifest_bytes: bytes, token: str, seq: int) -> None:
    """Turn a format-1/2 set (files in ``points/``/``events/``, a plain manifest.json) into generations.

    ``manifest`` is the converted manifest (``data_dir`` = ".data") and ``manifest_bytes`` its
    serialisation. Every step keeps the set readable (by the old manifest until the last one)
    and the whole is safe to repeat after a crash.
    """
    assert uses_generations(backend, manifest)
    root = _root(backend)
    (root / DATA_DIR).mkdir(exist_ok=True)
    names = committed_names(backend, manifest.model_copy(update={"data_dir": ""}))
    gen = generation_dir(token, seq)
    _build(root, gen, manifest_bytes, names, DATA_DIR)
    _link(root, CURRENT, gen, token)
    for table in TABLES:
        real, dest = root / table, root / DATA_DIR / table
        if real.is_symlink() or not real.exists():  # moved already (a conversion that crashed after it)
            dest.mkdir(exist_ok=True)
            continue
        if dest.is_symlink():
            dest.unlink()  # left by a conversion that crashed before its exchange
        elif dest.exists():
            raise OSError(f"{dest} exists beside {real}: cannot convert the set")
        os.symlink(f"{CURRENT}/{table}", dest)  # relative to the set's root, where it is going
        if not exchange(real, dest):  # no atomic exchange here: two renames
            dest.unlink()
            os.rename(real, dest)
            os.symlink(f"{CURRENT}/{table}", real)
        fsync_dir(root / DATA_DIR)
    fsync_dir(root)
    _fixed_links(root, token)  # last: manifest.json, a plain file until now, becomes the link (the commit)
    fsync_dir(root)


def collect_generations(backend: Backend, grace_s: float, dead_token: str | None = None) -> int:
    """Delete generations superseded more than ``grace_s`` ago, or built by the dead writer
    ``dead_token`` and never made current; the current one stays. Returns how many were deleted."""
    root = _root(backend)
    now = time.time()
    for p in root.glob(".*.link.*.tmp"):  # a link being put in place when its writer died
        try:
            if p.name.split(".")[-2] == dead_token or now - p.lstat().st_mtime >= grace_s:
                p.unlink()
        except OSError:
            pass
    d = root / VIEWS_DIR
    try:
        entries = list(os.scandir(d))
    except FileNotFoundError:
        return 0
    cur = root / CURRENT
    current = os.path.basename(os.readlink(cur)) if cur.is_symlink() else None
    n = 0
    for e in entries:
        if e.name == current or not e.is_dir(follow_symlinks=False):
            continue
        tok = generation_token(e.name)
        if tok is None:
            continue
        try:
            old = now - e.stat(follow_symlinks=False).st_mtime >= grace_s
        except FileNotFoundError:
            continue
        if old or (dead_token is not None and tok == dead_token):
            shutil.rmtree(e.path, ignore_errors=True)
            n += 1
    return n
