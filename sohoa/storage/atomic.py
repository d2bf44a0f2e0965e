"""Writing a local file so that no reader ever sees it half-written: temp file beside it, fsync, rename.

Both backends download with it (``get_file``) and the local backend stores objects the same way,
so it lives apart from either of them: neither backend has to import the other.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from .base import StorageError

__all__ = ["FILE_MODE", "os_reason", "write_atomically"]


def _read_umask() -> int:
    # Read once at import: os.umask() is process-global and not thread-safe.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: mkstemp creates 0600 files; stored objects and downloads get normal permissions.
FILE_MODE = 0o666 & ~_read_umask()


def os_reason(exc: OSError) -> str:
    """The short reason of an OSError ("No space left on device"), for one-line StorageError messages."""
    return exc.strerror or type(exc).__name__


def write_atomically(dest: Path, fill: Callable[[IO[bytes]], None]) -> None:
    """Write *dest* via a temp file in the same directory + os.replace; no temp left on error.

    Same directory, so the rename never crosses filesystems and is atomic: a crash never leaves a
    truncated download under the final name.
    """
    parent = dest.parent if str(dest.parent) else Path(".")
    try:
        fd, name = tempfile.mkstemp(dir=parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as exc:
        raise StorageError(f"cannot write {dest}: {os_reason(exc)}") from None
    tmp = Path(name)
    try:
        _fill_and_replace(fd, tmp, dest, fill)
    except OSError as exc:
        raise StorageError(f"cannot write {dest}: {os_reason(exc)}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _fill_and_replace(fd: int, tmp: Path, dest: Path, fill: Callable[[IO[bytes]], None]) -> None:
    with os.fdopen(fd, "wb") as out:
        fill(out)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(tmp, FILE_MODE)
    os.replace(tmp, dest)
