"""Getting an object onto the local disk for programs that only read files (tesseract, qpdf)."""

from __future__ import annotations

from pathlib import Path

from .base import Store
from .local import LocalStore


def materialize(store: Store, key: str, dest: Path) -> Path:
    """A local file with the object's bytes: the stored file itself for a local store, else a copy at ``dest``."""
    if isinstance(store, LocalStore):
        path = Path(store.url_for(key))
        if path.is_file():
            return path
    store.get_file(key, dest)
    return dest
