"""Where a result set lives and the only atomic writer of stoprace's files.

A location is a local path (``str``/``Path``: os calls, fsync, ``os.replace``) or a
URI that ``pyarrow.fs.FileSystem.from_uri`` understands: ``file:///abs/dir`` (the
local code path), ``s3://bucket/prefix`` (endpoint and region as URI query
parameters, e.g. ``s3://b/p?endpoint_override=127.0.0.1:9000&scheme=http``;
credentials from the usual AWS environment variables), ``gs://``, ``hdfs://``,
``abfs://``; or any ``pyarrow.fs.FileSystem`` passed as ``filesystem=`` with a
path inside it. Two backends implement one interface (``Backend``):

- ``LocalBackend``: a new file is written to a temporary name unique to its writer
  (``layout.tmp_name``), fsynced, renamed into place, and the directory fsynced.
- ``ArrowBackend`` (any other pyarrow filesystem): where rename is atomic (HDFS, a
  SubTreeFileSystem over local) the same temp-and-move; on object stores (S3, GCS,
  Azure: a "rename" is copy + delete) each file is serialised completely in memory and
  written as one object (a single PUT or a completed multipart upload, which readers see
  whole or not at all); nothing is ever renamed there.

``create_exclusive`` creates a file only if it does not exist (O_EXCL locally, an S3
conditional PUT ``If-None-Match: *`` on s3://); the writer lock is built on it.
``atomic_write_file`` is the same local writer for any output file (query results, plots).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from queries.resultset.errors import StoreError, one_line
from queries.resultset.layout import tmp_name

__all__ = [
    "NewFile", "Backend", "LocalBackend", "ArrowBackend", "FileStat", "Written", "locate", "is_uri", "atomic_write_file",
    "sha256_of", "exchange", "fsync_dir",
]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileStat:
    size: int
    mtime: float | None  # seconds since the epoch, None where the filesystem does not say


@dataclass(frozen=True)
class Written:
    """What was stored: the final relative path, its size in bytes and SHA-256 (hex)."""

    path: str
    size: int
    sha256: str


class NewFile:
    """A file being written under a name no reader looks at; ``commit()`` makes it appear whole.

    ``f`` is a writable binary stream. Locally it is a temporary file renamed into place on
    commit; on an object store an in-memory buffer PUT as one object on commit.
    """

    def __init__(self, f: IO[bytes], commit: Callable[[], Written], abort: Callable[[], None]) -> None:
        self.f = f
        self._commit, self._abort = commit, abort
        self.done = False

    def tell(self) -> int:
        return self.f.tell()

    def commit(self) -> Written:
        self.done = True
        return self._commit()

    def abort(self) -> None:
        if not self.done:
            self.done = True
            self._abort()


class Backend(Protocol):
    """A result set's root on some filesystem; ``rel`` paths use '/' and are relative to the root."""

    local: bool
    views: bool
    """True where symbolic links work (local): the set keeps its files under .data and publishes views."""
    arrow_fs: pafs.FileSystem

    def path(self, rel: str = "") -> Path | str: ...
    def display(self, rel: str = "") -> str: ...
    def arrow_path(self, rel: str) -> str: ...
    def kind(self, rel: str = "") -> str | None: ...
    def listdir(self, rel: str = "") -> dict[str, FileStat | None]: ...
    def stat(self, rel: str) -> FileStat | None: ...
    def makedirs(self, rel: str = "") -> None: ...
    def read_bytes(self, rel: str) -> bytes: ...
    def open_input(self, rel: str) -> IO[bytes]: ...
    def replace_bytes(self, rel: str, data: bytes, token: str) -> None: ...
    def new_file(self, rel: str, token: str) -> NewFile: ...
    def write_new(self, rel: str, write: Callable[[IO[bytes]], None], token: str) -> Written: ...
    def create_exclusive(self, rel: str, data: bytes) -> bool: ...
    def delete(self, rel: str) -> None: ...


# ---- local ------------------------------------------------------------------------------


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


def sha256_of(f: IO[bytes]) -> tuple[int, str]:
    """(size, SHA-256 hex) of a readable binary stream, read in 1 MiB chunks."""
    h = hashlib.sha256()
    n = 0
    while True:
        b = f.read(_CHUNK)
        if not b:
            break
        h.update(b)
        n += len(b)
    return n, h.hexdigest()


def _write_local(path: Path, tmp: Path, write: Callable[[IO[bytes]], object]) -> None:
    try:
        with open(tmp, "wb") as f:
            write(f)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _finish_written(path, tmp)


def atomic_write_file(path: str | os.PathLike[str], data: bytes | None = None, *,
                      writer: Callable[[str], None] | None = None) -> None:
    """Write ``data`` (or let ``writer(tmp_path)`` write) beside ``path`` under a unique temporary
    name, fsync, rename into place. The file gets the umask's mode, like any file the user creates."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    if writer is None:
        _write_local(path, Path(tmp), lambda f: f.write(data or b""))
        return
    try:
        writer(tmp)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _finish_written(path, Path(tmp))


def _finish_written(path: Path, tmp: Path) -> None:
    try:
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def fsync_dir(d: Path) -> None:
    """fsync a directory (its entries: a rename or a new link in it is durable afterwards)."""
    _fsync_dir(d)


_RENAME_EXCHANGE = 2


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically (Linux renameat2 RENAME_EXCHANGE); False where the
    kernel, the C library or the filesystem cannot, so the caller falls back to two renames."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        f = libc.renameat2
    except (OSError, AttributeError):
        return False
    f.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    f.restype = ctypes.c_int
    at_fdcwd = -100
    if f(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    import errno

    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(a))


class LocalBackend:
    """A result set on the local filesystem."""

    local = True
    views = True

    def __init__(self, root: Path) -> None:
        self.root = root
        self.arrow_fs = pafs.LocalFileSystem()

    def path(self, rel: str = "") -> Path:
        return self.root / rel if rel else self.root

    def display(self, rel: str = "") -> str:
        return str(self.path(rel))

    def arrow_path(self, rel: str) -> str:
        return str(self.path(rel).absolute())

    def kind(self, rel: str = "") -> str | None:
        p = self.path(rel)
        if p.is_dir():
            return "dir"
        return "file" if p.exists() else None

    def listdir(self, rel: str = "") -> dict[str, FileStat | None]:
        out: dict[str, FileStat | None] = {}
        try:
            with os.scandir(self.path(rel)) as it:
                for e in it:
                    try:
                        st = e.stat()
                        out[e.name] = FileStat(st.st_size, st.st_mtime) if e.is_file() else None
                    except FileNotFoundError:
                        continue
        except FileNotFoundError:
            return {}
        return out

    def stat(self, rel: str) -> FileStat | None:
        try:
            st = os.stat(self.path(rel))
        except FileNotFoundError:
            return None
        return FileStat(st.st_size, st.st_mtime)

    def makedirs(self, rel: str = "") -> None:
        self.path(rel).mkdir(parents=True, exist_ok=True)

    def read_bytes(self, rel: str) -> bytes:
        return self.path(rel).read_bytes()

    def open_input(self, rel: str) -> IO[bytes]:
        return open(self.path(rel), "rb")

    def replace_bytes(self, rel: str, data: bytes, token: str) -> None:
        _write_local(self.path(rel), self.path(tmp_name(rel, token)), lambda f: f.write(data))

    def new_file(self, rel: str, token: str) -> NewFile:
        path, tmp = self.path(rel), self.path(tmp_name(rel, token))
        f = open(tmp, "wb")

        def commit() -> Written:
            try:
                f.flush()
                os.fsync(f.fileno())
                f.close()
                os.replace(tmp, path)
            except BaseException:
                abort()
                raise
            _fsync_dir(path.parent)
            with open(path, "rb") as g:
                size, digest = sha256_of(g)
            return Written(rel, size, digest)

        def abort() -> None:
            f.close()
            tmp.unlink(missing_ok=True)

        return NewFile(f, commit, abort)

    def write_new(self, rel: str, write: Callable[[IO[bytes]], None], token: str) -> Written:
        return _write_new(self, rel, write, token)

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        try:
            fd = os.open(self.path(rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(self.root)
        return True

    def delete(self, rel: str) -> None:
        self.path(rel).unlink(missing_ok=True)


def _write_new(backend: Backend, rel: str, write: Callable[[IO[bytes]], None], token: str) -> Written:
    nf = backend.new_file(rel, token)
    try:
        write(nf.f)
    except BaseException:
        nf.abort()
        raise
    return nf.commit()


# ---- any pyarrow filesystem ---------------------------------------------------------------


def _renames_atomically(fs: pafs.FileSystem) -> bool:
    while isinstance(fs, pafs.SubTreeFileSystem):
        fs = fs.base_fs
    return isinstance(fs, pafs.LocalFileSystem) or fs.type_name == "hdfs"


class ArrowBackend:
    """A result set on a pyarrow filesystem (object stores: one complete PUT per file, never a rename)."""

    local = False
    views = False

    def __init__(self, fs: pafs.FileSystem, root: str, display: str, uri: str | None = None) -> None:
        self.arrow_fs = fs
        self.root = root.rstrip("/") or root
        self._display = display.rstrip("/") or display
        self.uri = uri
        self.atomic_rename = _renames_atomically(fs)

    def arrow_path(self, rel: str = "") -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def path(self, rel: str = "") -> str:
        return self.display(rel)

    def display(self, rel: str = "") -> str:
        return f"{self._display}/{rel}" if rel else self._display

    def kind(self, rel: str = "") -> str | None:
        t = self.arrow_fs.get_file_info(self.arrow_path(rel)).type
        if t == pafs.FileType.Directory:
            return "dir"
        return None if t == pafs.FileType.NotFound else "file"

    def listdir(self, rel: str = "") -> dict[str, FileStat | None]:
        try:
            infos = self.arrow_fs.get_file_info(pafs.FileSelector(self.arrow_path(rel), allow_not_found=True))
        except FileNotFoundError:
            return {}
        return {i.base_name: (FileStat(i.size, i.mtime.timestamp() if i.mtime else None)
                              if i.type == pafs.FileType.File else None) for i in infos}

    def stat(self, rel: str) -> FileStat | None:
        i = self.arrow_fs.get_file_info(self.arrow_path(rel))
        if i.type != pafs.FileType.File:
            return None
        return FileStat(i.size, i.mtime.timestamp() if i.mtime else None)

    def makedirs(self, rel: str = "") -> None:
        self.arrow_fs.create_dir(self.arrow_path(rel), recursive=True)

    def read_bytes(self, rel: str) -> bytes:
        with self.arrow_fs.open_input_stream(self.arrow_path(rel)) as f:
            return f.read()

    def open_input(self, rel: str) -> IO[bytes]:
        return self.arrow_fs.open_input_file(self.arrow_path(rel))

    def _put(self, rel: str, data: bytes, token: str) -> None:
        final = self.arrow_path(rel)
        if not self.atomic_rename:  # object store: one PUT of the complete object
            with self.arrow_fs.open_output_stream(final) as f:
                f.write(data)
            return
        tmp = self.arrow_path(tmp_name(rel, token))
        try:
            with self.arrow_fs.open_output_stream(tmp) as f:
                f.write(data)
            self.arrow_fs.move(tmp, final)
        except BaseException:
            self._delete_quietly(tmp)
            raise

    def replace_bytes(self, rel: str, data: bytes, token: str) -> None:
        self._put(rel, data, token)

    def new_file(self, rel: str, token: str) -> NewFile:
        # Serialise fully first: a failure while encoding never reaches the filesystem.
        sink = pa.BufferOutputStream()

        def commit() -> Written:
            data = sink.getvalue().to_pybytes()
            self._put(rel, data, token)
            return Written(rel, len(data), hashlib.sha256(data).hexdigest())

        return NewFile(sink, commit, lambda: None)

    def write_new(self, rel: str, write: Callable[[IO[bytes]], None], token: str) -> Written:
        return _write_new(self, rel, write, token)

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        s3 = _s3_client(self.uri) if self.uri else None
        if s3 is not None:
            client, bucket, key = s3(self.arrow_path(rel))
            from botocore.exceptions import ClientError

            try:
                client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
            except ClientError as e:
                code = e.response.get("Error", {}).get("Code", "")
                if code in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                    return False
                raise OSError(f"cannot create {self.display(rel)}: {one_line(e)}") from None
            return True
        # No conditional create on this filesystem: check, then write (not atomic; documented).
        if self.stat(rel) is not None:
            return False
        self._put(rel, data, "excl")
        return True

    def delete(self, rel: str) -> None:
        self._delete_quietly(self.arrow_path(rel))

    def _delete_quietly(self, p: str) -> None:
        try:
            self.arrow_fs.delete_file(p)
        except FileNotFoundError:
            pass


def _s3_client(uri: str):
    """For an s3:// URI: a function mapping an arrow path (bucket/key) to (boto3 client, bucket, key)."""
    parts = urlsplit(uri)
    if parts.scheme != "s3":
        return None
    q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    try:
        import boto3
        from botocore.config import Config
    except ImportError:  # pragma: no cover - boto3 is a dependency
        return None
    endpoint = q.get("endpoint_override")
    if endpoint and "://" not in endpoint:
        endpoint = f"{q.get('scheme', 'https')}://{endpoint}"
    kwargs = {"endpoint_url": endpoint, "region_name": q.get("region"), "config": Config(retries={"max_attempts": 3})}
    if q.get("access_key") and q.get("secret_key"):
        kwargs.update(aws_access_key_id=q["access_key"], aws_secret_access_key=q["secret_key"])
    client = boto3.client("s3", **{k: v for k, v in kwargs.items() if v is not None})

    def where(arrow_path: str):
        bucket, _, key = arrow_path.partition("/")
        return client, bucket, key

    return where


# ---- locating -----------------------------------------------------------------------------


def is_uri(location: str | os.PathLike[str]) -> bool:
    """True for ``scheme://...`` (file://, s3://, gs://, hdfs://, ...); False for a plain path."""
    if not isinstance(location, str):
        return False
    scheme, sep, _ = location.partition("://")
    return bool(sep) and len(scheme) > 1 and scheme.replace("+", "").replace("-", "").replace(".", "").isalnum()


def _display_uri(uri: str) -> str:
    """The URI without its query (endpoint and credentials stay out of messages and joined paths)."""
    p = urlsplit(uri)
    return f"{p.scheme}://{p.netloc}{p.path}"


def locate(location: str | os.PathLike[str], filesystem: pafs.FileSystem | None = None) -> LocalBackend | ArrowBackend:
    """The backend for a location: plain paths and file:// stay local; other URIs go through pyarrow.fs."""
    if filesystem is not None:
        if isinstance(filesystem, pafs.LocalFileSystem):
            return LocalBackend(Path(location))
        return ArrowBackend(filesystem, os.fspath(location), os.fspath(location))
    if not is_uri(location):
        return LocalBackend(Path(location))
    uri = str(location)
    try:
        fs, root = pafs.FileSystem.from_uri(uri)
    except (OSError, ValueError, pa.ArrowException) as e:
        raise StoreError(f"{_display_uri(uri)}: cannot open results location: {' '.join(str(e).split())}") from None
    if isinstance(fs, pafs.LocalFileSystem):
        return LocalBackend(Path(root))
    return ArrowBackend(fs, root, _display_uri(uri), uri)
