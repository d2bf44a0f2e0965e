"""Backend-neutral object store contract.

The pipeline archives dossiers either on a local disk (dev, single-node
offices) or on S3-compatible storage (provincial data centres).  Both
backends implement :class:`Store` and are held to the same behaviour by
``tests/test_storage_contract.py`` so that flows never branch on backend.
"""

from __future__ import annotations

import abc
import os
import re
import unicodedata
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, ClassVar

import pydantic

from sohoa.kernel.errors import ExitCode, ReasonCode, SohoaError

from .policy import LockPolicy, Mode

__all__ = [
    "DEFAULT_CONTENT_TYPE",
    "MAX_KEY_BYTES",
    "InvalidKey",
    "ObjectChanged",
    "ObjectExists",
    "ObjectInfo",
    "ObjectNotFound",
    "Store",
    "StorageError",
    "StorageUnavailable",
    "check_not_reserved",
    "validate_content_type",
    "validate_key",
    "validate_metadata",
    "validate_prefix",
]

#: S3's hard limit on object key length; enforced on every backend so a key
#: accepted locally can always be migrated to S3 later.
MAX_KEY_BYTES = 1024
#: AWS caps user metadata at 2 KiB (keys + values, UTF-8); same on every backend.
MAX_METADATA_BYTES = 2048
#: Content type recorded when the caller gives none; S3 would do the same.
DEFAULT_CONTENT_TYPE = "application/octet-stream"

_META_KEY_RE = re.compile(r"[a-z0-9-]+")
_PRINTABLE_ASCII_RE = re.compile(r"[\x20-\x7e]*")


class ObjectInfo(pydantic.BaseModel):
    """What a store knows about one object (returned by put/stat/list/copy)."""

    key: str
    size: int
    etag: str | None = None
    last_modified: datetime | None = None
    content_type: str | None = None
    metadata: dict[str, str] = pydantic.Field(default_factory=dict)


class StorageError(SohoaError):
    """Base of all storage failures; message is one line and never holds credentials.

    Exit code ``failed`` for every command: the store could not be reached or used (a URL that cannot
    be parsed is the command line's configuration error, told apart where the store is opened)."""

    exit_code = ExitCode.failed


class StorageUnavailable(StorageError):
    """A store that did not answer within its timeouts and retries (a frozen or unreachable server).

    ``code`` is ReasonCode.storage_unavailable, so a run that meets it fails with that code; ``store`` is the
    store's URL (never credentials), for what reports which store is unreachable (``sohoa watch --status``)."""

    code: ClassVar[ReasonCode] = ReasonCode.storage_unavailable

    def __init__(self, message: str, store: str = "") -> None:
        super().__init__(message)
        self.store = store

    def __reduce__(self) -> tuple[Any, ...]:  # pickled by Prefect with a task's state: both arguments
        return type(self), (self.args[0], self.store)


class ObjectNotFound(StorageError):
    """The key does not exist (callers often treat this as a normal outcome)."""


class ObjectChanged(StorageError):
    """A read, copy or delete conditioned on an etag found another version at the key: the object was
    written again since that etag was seen, and acting on it would mix two versions."""


class ObjectExists(StorageError):
    """A create-only write found the key already present: someone else claimed it."""


class InvalidKey(StorageError, ValueError):
    """The key cannot be stored portably (path traversal, control chars, too long...)."""


def validate_key(key: str) -> str:
    """Return *key* unchanged if it is a portable object key, else raise InvalidKey.

    Why so strict: the same key must map to a safe path under a local root
    (no traversal, no absolute paths, no Windows separators) *and* to a valid
    S3 object name, so an archive can move between backends unchanged.
    The key is not Unicode-normalised: callers should pass NFC (Vietnamese
    text from most sources already is) because NFC and NFD spell different keys.
    """
    if not isinstance(key, str):
        raise InvalidKey(f"object key must be str, not {type(key).__name__}")
    if not key:
        raise InvalidKey("object key must not be empty")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidKey(f"object key {key!r} is not valid Unicode (lone surrogate)") from None
    if size > MAX_KEY_BYTES:
        raise InvalidKey(f"object key is {size} UTF-8 bytes; the limit is {MAX_KEY_BYTES}")
    if "\\" in key:
        raise InvalidKey(f"object key {key!r} contains a backslash; use '/' as separator")
    if any(unicodedata.category(ch) == "Cc" for ch in key):
        raise InvalidKey(f"object key {key!r} contains a control character")
    if key.startswith("/"):
        raise InvalidKey(f"object key {key!r} must be relative (no leading '/')")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKey(f"object key {key!r} has an empty, '.' or '..' path segment")
    return key


def redact_userinfo(url: str) -> str:
    """``url`` as it may be shown in a message: credentials someone wrote into it (``scheme://user:secret@``) masked."""
    # user@ or user:secret@, the secret possibly holding '/' (S3 secret keys do), which ends a URL's authority
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^/?#@]*@|[^/?#@:]*:[^@]*@)", r"\1***@", url)


def check_not_reserved(key: str) -> str:
    """Reject keys in the store's own namespace (``.sohoa`` or ``.sohoa-*`` first segment).

    Sidecars, temp files and capability probes live there; letting callers
    write into it could corrupt store bookkeeping.  Enforced on every backend
    so keys stay portable.
    """
    first = key.split("/", 1)[0]
    if first == ".sohoa" or first.startswith(".sohoa-"):
        raise InvalidKey(f"object key {key!r} is in the reserved '.sohoa' namespace")
    return key


def validate_prefix(prefix: str) -> str:
    """Validate a listing prefix: "" or anything some valid key could start with."""
    if not isinstance(prefix, str):
        raise InvalidKey(f"prefix must be str, not {type(prefix).__name__}")
    if prefix:
        # A prefix may end in '/' or stop mid-segment; appending one character
        # turns it into a key that validate_key can judge.
        try:
            validate_key(prefix + "x")
        except InvalidKey:
            raise InvalidKey(f"list prefix {prefix!r} cannot match any valid key") from None
    return prefix


def validate_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Check user metadata survives S3 ``x-amz-meta-*`` headers unchanged; raise ValueError.

    Header names are case-insensitive and values are latin-1 at best, with
    surrounding whitespace trimmed by proxies, so only lowercase
    ``[a-z0-9-]`` names and printable-ASCII values without leading/trailing
    spaces are accepted on *every* backend.
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ValueError("metadata must be a mapping of str to str")
    out: dict[str, str] = {}
    total = 0
    for name, value in metadata.items():
        if not isinstance(name, str) or not _META_KEY_RE.fullmatch(name):
            raise ValueError(f"metadata key {name!r} must match [a-z0-9-]+ (lowercase)")
        if not isinstance(value, str):
            raise ValueError(f"metadata value for {name!r} must be str")
        if not _PRINTABLE_ASCII_RE.fullmatch(value):
            raise ValueError(
                f"metadata value for {name!r} must be printable ASCII "
                "(encode other text, e.g. percent-encoding, before storing)"
            )
        if value != value.strip(" "):
            raise ValueError(f"metadata value for {name!r} must not start or end with a space")
        total += len(name) + len(value)
        out[name] = value
    if total > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is {total} bytes; the limit is {MAX_METADATA_BYTES}")
    return out


def validate_content_type(content_type: str | None) -> str:
    """Return the content type to record (default octet-stream); must be a printable-ASCII header value."""
    if content_type is None:
        return DEFAULT_CONTENT_TYPE
    if not isinstance(content_type, str) or not content_type.strip():
        raise ValueError("content_type must be a non-empty str")
    if not _PRINTABLE_ASCII_RE.fullmatch(content_type):
        raise ValueError(f"content_type {content_type!r} must be printable ASCII")
    return content_type


class Store(abc.ABC):
    """An object store addressed by portable '/'-separated keys.

    Every method validates keys with :func:`validate_key` (raising
    :class:`InvalidKey`) before touching the backend, so bad keys fail the
    same way everywhere.
    """

    #: Where the store lives, as accepted by :func:`storage.open_store`.
    url: str

    @abc.abstractmethod
    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        metadata: dict[str, str] | None = None,
        content_type: str | None = None,
        create_only: bool = False,
    ) -> ObjectInfo:
        """Store *data* at *key*; with ``create_only`` raise ObjectExists instead of overwriting."""

    @abc.abstractmethod
    def put_file(
        self,
        key: str,
        path: str | os.PathLike[str],
        *,
        metadata: dict[str, str] | None = None,
        content_type: str | None = None,
        create_only: bool = False,
    ) -> ObjectInfo:
        """Upload a file by streaming it (scans can be hundreds of MB); same semantics as put_bytes."""

    @abc.abstractmethod
    def get_bytes(self, key: str, *, if_match: str | None = None) -> bytes:
        """Return the whole object; raise ObjectNotFound if missing, ObjectChanged if its etag is not ``if_match``."""

    @abc.abstractmethod
    def get_file(self, key: str, dest: str | os.PathLike[str], *, if_match: str | None = None) -> None:
        """Download to *dest* atomically (temp file beside it, then rename) so readers never see partial files;
        with ``if_match``, only that version (ObjectChanged when the key holds another)."""

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Return size, etag, content type and user metadata; raise ObjectNotFound if missing."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """True if *key* is present."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield every object whose key starts with *prefix*, recursively, sorted by key.

        Metadata and content type may be missing in listings (S3 does not
        return them); call :meth:`stat` when needed.
        """

    @abc.abstractmethod
    def copy(self, src: str, dst: str, *, if_match: str | None = None) -> ObjectInfo:
        """Copy *src* to *dst* (overwriting), keeping metadata and content type; with ``if_match``, only that
        version of *src* (ObjectChanged when it holds another)."""

    @abc.abstractmethod
    def delete(self, key: str, *, if_match: str | None = None) -> None:
        """Remove *key*; deleting a missing key is not an error (retries must be safe). With ``if_match``, only
        that version: another version at the key raises ObjectChanged and is kept."""

    def stray(self) -> Iterator[ObjectInfo]:
        """Objects whose names are not portable keys (``a//b``, a leading ``/``, ``..``, control characters),
        which :meth:`list` skips; ``key`` holds the raw name. Someone else's client wrote them; the inbox
        quarantines them. Local stores cannot hold most of them and yield none."""
        return iter(())

    def evict(self, raw: str, dst: str, *, if_match: str | None = None) -> ObjectInfo:
        """Move the stray object named ``raw`` to the portable key ``dst`` (copy, check, delete)."""
        raise StorageError(f"{self.url} holds no stray objects")

    @abc.abstractmethod
    def url_for(self, key: str) -> str:
        """A human/tool-usable location: absolute path (local) or s3://bucket/prefix/key."""

    def lock_policy(self) -> LockPolicy:
        """Whether the store keeps objects under object lock (S3 buckets with it); local stores do not."""
        return LockPolicy()

    def protect(self, key: str, mode: Mode, until: datetime) -> None:
        """Retain ``key`` until ``until`` (only where :meth:`lock_policy` is enabled)."""
        raise StorageError(f"{self.url} has no object lock")

    @abc.abstractmethod
    def ensure_ready(self) -> None:
        """Create or check the backing location once at startup so later errors are about data, not setup."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
