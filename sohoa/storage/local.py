"""Filesystem-backed :class:`~storage.base.Store` for dev machines and single-node offices.

Layout under the root::

    <root>/<key>                      object bytes
    <root>/.sohoa-meta/<key>.json     {"content_type": ..., "metadata": {...}}
    <root>/.sohoa-tmp/                temp files (same filesystem, so renames are atomic)

Readers never see partial objects: data is written to a temp file, fsynced,
and then moved into place with ``os.replace`` (overwrite) or ``os.link``
(create-only: the link fails atomically if the key exists).
"""

from __future__ import annotations

import json
import os
import shutil
import stat as stat_mod
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from .atomic import FILE_MODE, os_reason, write_atomically
from .base import (
    DEFAULT_CONTENT_TYPE,
    InvalidKey,
    ObjectChanged,
    ObjectExists,
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    Store,
    check_not_reserved,
    validate_content_type,
    validate_key,
    validate_metadata,
    validate_prefix,
)

__all__ = ["LocalStore"]

META_DIR = ".sohoa-meta"
TMP_DIR = ".sohoa-tmp"
_CHUNK = 1024 * 1024


class LocalStore(Store):
    """Objects as plain files under *root* (see module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(os.path.abspath(os.fspath(root)))
        self.url = str(self.root)
        self._meta_root = self.root / META_DIR
        self._tmp_root = self.root / TMP_DIR

    # ------------------------------------------------------------------ helpers
    def _key(self, key: str) -> str:
        return check_not_reserved(validate_key(key))

    def _path(self, key: str) -> Path:
        """The key's path; StorageError when a symbolic link is on the way (someone who can write under the
        root, a station's shared inbox folder, could otherwise point a key anywhere on this machine)."""
        path = self.root
        for part in key.split("/"):
            path = path / part
            if path.is_symlink():
                raise StorageError(f"{path} is a symbolic link: not followed")
        return path

    def _meta_path(self, key: str) -> Path:
        return self._meta_root / (key + ".json")

    def _error(self, action: str, key: str, exc: OSError) -> StorageError:
        return StorageError(f"cannot {action} {self._path(key)}: {os_reason(exc)}")

    def _tmp_dir(self) -> Path:
        """Return the temp dir; a missing root is a setup error, not something to paper over."""
        try:
            self._tmp_root.mkdir(exist_ok=True)
        except FileNotFoundError:
            raise StorageError(
                f"local store root {self.root} does not exist; call ensure_ready() first"
            ) from None
        except OSError as exc:
            raise StorageError(f"cannot create {self._tmp_root}: {os_reason(exc)}") from None
        return self._tmp_root

    @contextmanager
    def _temp_file(self) -> Iterator[tuple[IO[bytes], Path]]:
        """Yield an open temp file in the store; it is always removed afterwards."""
        fd, name = tempfile.mkstemp(dir=self._tmp_dir(), prefix="put-", suffix=".tmp")
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as fh:
                yield fh, path
        finally:
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    def _write_sidecar(self, key: str, content_type: str, metadata: dict[str, str]) -> None:
        meta_path = self._meta_path(key)
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps(
            {"content_type": content_type, "metadata": metadata}, ensure_ascii=False, sort_keys=True
        ).encode("utf-8")
        with self._temp_file() as (fh, tmp):
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
            os.replace(tmp, meta_path)

    def _read_sidecar(self, key: str) -> dict[str, Any]:
        try:
            with open(self._meta_path(key), "rb") as fh:
                data = json.load(fh)
        except (FileNotFoundError, NotADirectoryError):
            # Files dropped into the root by other tools have no sidecar.
            return {}
        except (OSError, ValueError) as exc:
            raise StorageError(f"cannot read metadata for {self._path(key)}: {exc}") from None
        return data if isinstance(data, dict) else {}

    def _info(self, key: str, st: os.stat_result, sidecar: dict[str, Any] | None) -> ObjectInfo:
        return ObjectInfo(
            key=key,
            size=st.st_size,
            etag=f"{st.st_size:x}-{st.st_mtime_ns:x}",
            last_modified=datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=timezone.utc),
            content_type=(sidecar or {}).get("content_type"),
            metadata=dict((sidecar or {}).get("metadata") or {}),
        )

    def _put(
        self,
        key: str,
        fill: Callable[[IO[bytes]], None],
        metadata: dict[str, str] | None,
        content_type: str | None,
        create_only: bool,
    ) -> ObjectInfo:
        key = self._key(key)
        meta = validate_metadata(metadata)
        ctype = validate_content_type(content_type)
        dest = self._path(key)
        with self._temp_file() as (fh, tmp):
            try:
                fill(fh)
                fh.flush()
                os.fsync(fh.fileno())
                os.chmod(tmp, FILE_MODE)
            except OSError as exc:
                raise StorageError(f"cannot write temp file for {dest}: {os_reason(exc)}") from None
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise StorageError(
                    f"cannot write {dest}: a parent path is an existing object, not a directory"
                ) from None
            except OSError as exc:
                raise self._error("write", key, exc) from None
            try:
                if create_only:
                    # link() is the atomic "create if absent" primitive on POSIX.
                    try:
                        os.link(tmp, dest)
                    except FileExistsError:
                        raise ObjectExists(f"object already exists: {dest}") from None
                else:
                    if dest.is_dir():
                        raise StorageError(f"cannot write {dest}: a directory (key prefix) is in the way")
                    os.replace(tmp, dest)
            except OSError as exc:
                raise self._error("write", key, exc) from None
        try:
            self._write_sidecar(key, ctype, meta)
        except OSError as exc:
            if create_only:
                # Undo our claim so a retry can succeed; nobody else could have written it.
                dest.unlink(missing_ok=True)
            raise StorageError(f"cannot write metadata for {dest}: {os_reason(exc)}") from None
        st = dest.stat()
        return self._info(key, st, {"content_type": ctype, "metadata": meta})

    # ------------------------------------------------------------------- writes
    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        metadata: dict[str, str] | None = None,
        content_type: str | None = None,
        create_only: bool = False,
    ) -> ObjectInfo:
        """Atomically store *data* (temp + replace/link)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("data must be bytes")
        return self._put(key, lambda fh: fh.write(data), metadata, content_type, create_only)

    def put_file(
        self,
        key: str,
        path: str | os.PathLike[str],
        *,
        metadata: dict[str, str] | None = None,
        content_type: str | None = None,
        create_only: bool = False,
    ) -> ObjectInfo:
        """Atomically store a copy of *path*, streamed in 1 MiB chunks."""
        src = os.fspath(path)
        self._key(key)  # bad keys fail before we touch the source file
        try:
            src_fh = open(src, "rb")
        except OSError as exc:
            raise StorageError(f"cannot read {src}: {os_reason(exc)}") from None
        with src_fh:
            return self._put(
                key, lambda fh: shutil.copyfileobj(src_fh, fh, _CHUNK), metadata, content_type, create_only
            )

    def copy(self, src: str, dst: str, *, if_match: str | None = None) -> ObjectInfo:
        """Copy data and sidecar; the destination is replaced atomically."""
        src = self._key(src)
        self._key(dst)
        sidecar = self._read_sidecar(src)
        with self._open_for_read(src, if_match) as fh:
            return self._put(
                dst,
                lambda out: shutil.copyfileobj(fh, out, _CHUNK),
                sidecar.get("metadata") or {},
                sidecar.get("content_type") or DEFAULT_CONTENT_TYPE,
                False,
            )

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        """Remove data and sidecar; missing is fine (idempotent)."""
        key = self._key(key)
        if if_match is not None:
            try:
                self._check_version(key, os.stat(self._path(key)), if_match)
            except (FileNotFoundError, NotADirectoryError):
                return
        for p in (self._path(key), self._meta_path(key)):
            try:
                if p.is_dir() and not p.is_symlink():
                    continue  # a key prefix, not an object
                p.unlink()
            except (FileNotFoundError, NotADirectoryError):
                pass
            except OSError as exc:
                raise StorageError(f"cannot delete {p}: {os_reason(exc)}") from None

    # -------------------------------------------------------------------- reads
    def _open_for_read(self, key: str, if_match: str | None = None) -> IO[bytes]:
        """The object's file, open; with ``if_match``, checked on the open file (a later replace makes a new
        inode, so what is read is the version checked)."""
        try:
            fh = open(self._path(key), "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(f"object not found: {self._path(key)}") from None
        except OSError as exc:
            raise self._error("read", key, exc) from None
        if if_match is not None:
            try:
                self._check_version(key, os.fstat(fh.fileno()), if_match)
            except BaseException:
                fh.close()
                raise
        return fh

    def _check_version(self, key: str, st: os.stat_result, if_match: str) -> None:
        etag = self._info(key, st, None).etag
        if etag != if_match.strip('"'):
            raise ObjectChanged(f"object changed: {self._path(key)} is version {etag}, not {if_match}")

    def get_bytes(self, key: str, *, if_match: str | None = None) -> bytes:
        """Read the whole object."""
        key = self._key(key)
        with self._open_for_read(key, if_match) as fh:
            return fh.read()

    def get_file(self, key: str, dest: str | os.PathLike[str], *, if_match: str | None = None) -> None:
        """Copy to *dest* through a temp file beside it, then rename."""
        key = self._key(key)
        dest_path = Path(os.fspath(dest))
        with self._open_for_read(key, if_match) as src:
            write_atomically(dest_path, lambda out: shutil.copyfileobj(src, out, _CHUNK))

    def stat(self, key: str) -> ObjectInfo:
        """Size and mtime from the file, content type and metadata from the sidecar."""
        key = self._key(key)
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(f"object not found: {self._path(key)}") from None
        except OSError as exc:
            raise self._error("stat", key, exc) from None
        if not stat_mod.S_ISREG(st.st_mode):
            raise ObjectNotFound(f"object not found: {self._path(key)} (not a regular file)")
        return self._info(key, st, self._read_sidecar(key))

    def exists(self, key: str) -> bool:
        key = self._key(key)
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Walk the directory that contains *prefix*, skip reserved dirs, yield sorted by key.

        Keys are collected then sorted (str order == UTF-8 byte order == S3
        order); stat happens lazily so deleted-meanwhile files are skipped.
        """
        prefix = validate_prefix(prefix)
        base_rel = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self.root / base_rel if base_rel else self.root
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(base):
            rel_dir = os.path.relpath(dirpath, self.root)
            rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
            if not rel_dir:
                dirnames[:] = [d for d in dirnames if not (d == ".sohoa" or d.startswith(".sohoa-"))]
            # Prune directories that cannot contain matching keys.
            dirnames[:] = [
                d for d in dirnames if (rel_dir + d + "/").startswith(prefix) or prefix.startswith(rel_dir + d + "/")
            ]
            for name in filenames:
                if os.path.islink(os.path.join(dirpath, name)):
                    continue  # never listed, never read (see _path)
                k = rel_dir + name
                if not k.startswith(prefix):
                    continue
                try:
                    check_not_reserved(validate_key(k))
                except InvalidKey:
                    continue  # not addressable through this API (e.g. odd names made by other tools)
                keys.append(k)
        keys.sort()
        for k in keys:
            try:
                st = os.lstat(self.root / k)
            except OSError:
                continue
            if stat_mod.S_ISREG(st.st_mode):
                yield self._info(k, st, None)

    # -------------------------------------------------------------------- misc
    def url_for(self, key: str) -> str:
        return str(self._path(self._key(key)))

    def ensure_ready(self) -> None:
        """Create root and bookkeeping dirs."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._meta_root.mkdir(exist_ok=True)
            self._tmp_root.mkdir(exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create local store root {self.root}: {os_reason(exc)}") from None
        if not os.access(self.root, os.W_OK):
            raise StorageError(f"local store root {self.root} is not writable")
