"""Object storage for sohoa: one :class:`Store` contract, local-disk and S3 backends.

Use :func:`open_store` with a configuration string so flows stay backend-agnostic::

    store = open_store("/srv/sohoa-data")            # or file:///srv/sohoa-data
    store = open_store("s3://archive/hcm/q1")        # settings from SOHOA_S3_* env
    store.ensure_ready()
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from .base import (
    InvalidKey,
    ObjectExists,
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    Store,
    redact_userinfo,
    validate_key,
)
from .config import S3Settings
from .local import LocalStore
from .files import materialize

if TYPE_CHECKING:
    from .s3 import S3Store

__all__ = [
    "InvalidKey",
    "LocalStore",
    "ObjectExists",
    "ObjectInfo",
    "ObjectNotFound",
    "S3Settings",
    "S3Store",
    "StorageError",
    "Store",
    "open_store",
    "materialize",
    "validate_key",
]


def open_store(url: str | os.PathLike[str], s3: S3Settings | None = None) -> Store:
    """Build a store from a path, ``file://`` URL or ``s3://bucket[/prefix]`` URL.

    *s3* overrides the ``SOHOA_S3_*`` environment for S3 URLs (tests, multi-tenant CLIs).
    Nothing is contacted here; call :meth:`Store.ensure_ready` at startup.
    """
    if isinstance(url, os.PathLike):
        return LocalStore(url)
    if not isinstance(url, str) or not url.strip():
        raise StorageError(f"unsupported store URL {redact_userinfo(url)!r}: expected a path, file:// or s3:// URL")
    if url.startswith("s3://"):
        from .s3 import S3Store

        return S3Store(url, s3)
    if url.startswith("file:"):
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise StorageError(f"unsupported store URL {redact_userinfo(url)!r}: file URLs must be file:///absolute/path")
        path = unquote(parts.path)
        if not path:
            raise StorageError(f"unsupported store URL {redact_userinfo(url)!r}: no path")
        return LocalStore(path)
    scheme = urlsplit(url).scheme
    # One-letter "schemes" are Windows drive letters (C:\data), i.e. plain paths.
    if "://" in url or (scheme and len(scheme) > 1 and ":" in url and not os.path.exists(url)):
        raise StorageError(f"unsupported store URL {redact_userinfo(url)!r}: expected a path, file:// or s3:// URL")
    return LocalStore(url)


def __getattr__(name: str) -> object:
    # Lazy so importing storage does not require the minio SDK (local-only deployments).
    if name == "S3Store":
        from .s3 import S3Store

        return S3Store
    raise AttributeError(name)
