"""Where a results dir lives and how its files are written atomically.

Where the directory lives: ``out_dir`` is a local path (``str``/``Path``, used
exactly as a path: ``os`` calls, fsync, ``os.replace``) or a URI that
``pyarrow.fs.FileSystem.from_uri`` understands: ``file:///abs/dir`` (a shared
or NFS mount: the same local code path, same guarantees), ``s3://bucket/prefix``,
``gs://...``, ``hdfs://...``, ``abfs://...``; or pass ``filesystem=`` (any
``pyarrow.fs.FileSystem``, e.g. an ``S3FileSystem`` with explicit credentials
or endpoint) together with a path inside it. On a non-local filesystem:

- where ``rename`` is atomic (HDFS, or a ``SubTreeFileSystem`` over a local or
  HDFS filesystem) files are written as ``*.tmp`` and moved into place, as locally
  (no fsync: the filesystem's own ``close`` is the durability point);
- on object stores (S3, GCS, Azure, and any other filesystem not known to
  rename atomically) a "rename" is a copy plus a delete, not atomic, so the
  final key is written directly: each file is first serialised completely in
  memory (task files are small), then uploaded in one output stream whose
  ``close`` makes the object visible (a single PUT or a completed multipart
  upload). Object PUTs are atomic per object, so a reader (or ``done_tasks``)
  sees the whole object or none of it; a killed driver leaves at most an
  incomplete multipart upload, which is invisible (expire those with a bucket
  lifecycle rule). The same holds for ``manifest.json`` and ``spec.toml``.
  S3, GCS and Azure list and read after write consistently, which resume needs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from core.errors import StopraceError

TMP_SUFFIX = ".tmp"


class StoreError(StopraceError):
    """A results directory problem; the message is one line naming the directory."""


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
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _atomic_write_table(path: Path, table: pa.Table) -> None:
    tmp = path.with_name(path.name + TMP_SUFFIX)
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


# ---- where the directory lives ----------------------------------------------------------


def is_uri(location: str | os.PathLike[str]) -> bool:
    """True for ``scheme://...`` (file://, s3://, gs://, hdfs://, ...); False for a plain path."""
    if not isinstance(location, str):
        return False
    scheme, sep, _ = location.partition("://")
    return bool(sep) and len(scheme) > 1 and scheme.replace("+", "").replace("-", "").replace(".", "").isalnum()


def _renames_atomically(fs: pafs.FileSystem) -> bool:
    """Filesystems whose ``move`` of a file is an atomic rename; everything else is treated as an object store."""
    while isinstance(fs, pafs.SubTreeFileSystem):
        fs = fs.base_fs
    return isinstance(fs, pafs.LocalFileSystem) or fs.type_name == "hdfs"


class LocalDir:
    """A results dir on the local filesystem: os calls, fsync of files and dirs, os.replace."""

    local = True
    atomic_rename = True

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, rel: str = "") -> Path:
        return self.root / rel if rel else self.root

    def kind(self, rel: str = "") -> str | None:
        p = self.path(rel)
        if p.is_dir():
            return "dir"
        return "file" if p.exists() else None

    def listdir(self, rel: str = "") -> list[str]:
        return os.listdir(self.path(rel))

    def makedirs(self, rel: str = "") -> None:
        self.path(rel).mkdir(parents=True, exist_ok=True)

    def read_bytes(self, rel: str) -> bytes:
        return self.path(rel).read_bytes()

    def write_bytes(self, rel: str, data: bytes) -> None:
        _atomic_write_bytes(self.path(rel), data)

    def write_table(self, rel: str, table: pa.Table) -> None:
        _atomic_write_table(self.path(rel), table)

    def delete(self, rel: str, sync: bool = False) -> None:
        p = self.path(rel)
        p.unlink(missing_ok=True)
        if sync:
            _fsync_dir(p.parent)

    def read_table(self, rel: str, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.path(rel), columns=columns)


class RemoteDir:
    """A results dir on any ``pyarrow.fs`` filesystem (see the module docstring for the write protocol)."""

    local = False

    def __init__(self, fs: pafs.FileSystem, root: str, display: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/") or root
        self.display = display.rstrip("/") or display
        self.atomic_rename = _renames_atomically(fs)

    def _p(self, rel: str = "") -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def path(self, rel: str = "") -> str:
        return f"{self.display}/{rel}" if rel else self.display

    def kind(self, rel: str = "") -> str | None:
        t = self.fs.get_file_info(self._p(rel)).type
        if t == pafs.FileType.Directory:
            return "dir"
        return None if t == pafs.FileType.NotFound else "file"

    def listdir(self, rel: str = "") -> list[str]:
        infos = self.fs.get_file_info(pafs.FileSelector(self._p(rel), allow_not_found=False))
        return [i.base_name for i in infos]

    def makedirs(self, rel: str = "") -> None:
        self.fs.create_dir(self._p(rel), recursive=True)

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self._p(rel)) as f:
            return f.read()

    def write_bytes(self, rel: str, data: bytes) -> None:
        final = self._p(rel)
        if not self.atomic_rename:  # object store: one PUT of the complete object
            with self.fs.open_output_stream(final) as f:
                f.write(data)
            return
        tmp = final + TMP_SUFFIX
        try:
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, final)
        except BaseException:
            self._delete_quietly(tmp)
            raise

    def write_table(self, rel: str, table: pa.Table) -> None:
        # Serialise fully first: a failure while encoding never reaches the filesystem.
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        self.write_bytes(rel, sink.getvalue().to_pybytes())

    def delete(self, rel: str, sync: bool = False) -> None:
        self._delete_quietly(self._p(rel))

    def _delete_quietly(self, p: str) -> None:
        try:
            self.fs.delete_file(p)
        except FileNotFoundError:
            pass

    def read_table(self, rel: str, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self._p(rel), columns=columns, filesystem=self.fs)


def locate(out_dir: str | os.PathLike[str], filesystem: pafs.FileSystem | None) -> LocalDir | RemoteDir:
    """The backend for ``out_dir``: plain paths and file:// stay local; other URIs go through pyarrow.fs."""
    if filesystem is not None:
        if isinstance(filesystem, pafs.LocalFileSystem):
            return LocalDir(Path(out_dir))
        return RemoteDir(filesystem, os.fspath(out_dir), os.fspath(out_dir))
    if not is_uri(out_dir):
        return LocalDir(Path(out_dir))
    uri = str(out_dir)
    try:
        fs, root = pafs.FileSystem.from_uri(uri)
    except (OSError, ValueError, pa.ArrowException) as e:
        raise StoreError(f"{uri}: cannot open results location: {' '.join(str(e).split())}") from None
    if isinstance(fs, pafs.LocalFileSystem):
        return LocalDir(Path(root))
    return RemoteDir(fs, root, uri)


def one_line(e: BaseException) -> str:
    return getattr(e, "strerror", None) or " ".join(str(e).split())
