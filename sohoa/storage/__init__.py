"""Object storage for sohoa: one :class:`Store` contract, local-disk and S3 backends.

Use :func:`open_store` with a configuration string so flows stay backend-agnostic::

    store = open_store("/srv/sohoa-data")            # or file:///srv/sohoa-data
    store = open_store("s3://archive/hcm/q1")        # settings from SOHOA_S3_* env
    store.ensure_ready()

S3 stores are opened once per process: ``open_store`` hands the same store to every caller with the
same URL and settings, so what a store learns about its server (conditional writes, object lock,
that the bucket exists) is asked once, not once per dossier. :func:`forget_stores` drops them
(tests that restart a server or change settings under one URL).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from .base import (
    InvalidKey,
    ObjectChanged,
    ObjectExists,
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    StorageUnavailable,
    Store,
    redact_userinfo,
    validate_key,
)
from .config import S3Settings
from .files import materialize
from .local import LocalStore

if TYPE_CHECKING:
    from .s3 import S3Store

__all__ = [
    "InvalidKey",
    "LocalStore",
    "ObjectChanged",
    "ObjectExists",
    "ObjectInfo",
    "ObjectNotFound",
    "S3Settings",
    "S3Store",
    "StorageError",
    "StorageUnavailable",
    "Store",
    "forget_stores",
    "open_store",
    "materialize",
    "validate_key",
]


def open_store(url: str | os.PathLike[str], s3: S3Settings | None = None) -> Store:
    """Build a store from a path, ``file://`` URL or ``s3://bucket[/prefix]`` URL.

    *s3* overrides the ``SOHOA_S3_*`` environment for S3 URLs (tests, multi-tenant CLIs).
    Nothing is contacted here; call :meth:`Store.ensure_ready` at startup. An S3 store is shared:
    the same URL with equal settings gives the same store, in every thread (see :func:`forget_stores`).
    """
    if isinstance(url, os.PathLike):
        return LocalStore(url)
    if not isinstance(url, str) or not url.strip():
        raise StorageError(f"unsupported store URL {redact_userinfo(url)!r}: expected a path, file:// or s3:// URL")
    if url.startswith("s3://"):
        return _shared_s3(url, s3 if s3 is not None else S3Settings())
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


_shared: dict[tuple[str, str, str], Store] = {}
_shared_lock = threading.Lock()


def _shared_s3(url: str, settings: S3Settings) -> Store:
    """The process's store for this bucket, prefix and settings, built on first use.

    Built under the lock (building contacts nothing), so two threads asking at once get one store
    and its probes run once. Keyed by what the store is (bucket and prefix, not how the URL was
    spelled) and by the settings' fingerprint (their credentials included).
    """
    from .s3 import S3Store, parse_s3_url

    bucket, prefix = parse_s3_url(url)
    key = (bucket, prefix, settings.fingerprint())
    with _shared_lock:
        store = _shared.get(key)
        if store is None:
            store = _shared[key] = S3Store(url, settings)
        return store


def forget_stores() -> None:
    """Drop every shared store: the next :func:`open_store` builds a fresh one, which probes its server again.

    For tests (a restarted or replaced server behind the same URL); stores already handed out keep working.
    """
    with _shared_lock:
        _shared.clear()


def __getattr__(name: str) -> object:
    # Lazy so importing storage does not require the minio SDK (local-only deployments).
    if name == "S3Store":
        from .s3 import S3Store

        return S3Store
    raise AttributeError(name)
