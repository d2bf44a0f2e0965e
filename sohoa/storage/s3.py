"""S3-compatible :class:`~storage.base.Store` built on the minio SDK.

Works against AWS S3, MinIO, Ceph RGW and emulators (ministack in tests).
Create-only writes use a real conditional ``PUT`` (``If-None-Match: *``) so
two workers can never both claim the same key; servers that ignore the
header are detected once per store and handled with a (racy, logged)
stat-then-put fallback.

A store is meant to be shared: :func:`sohoa.storage.open_store` hands out one per URL and settings
per process, so its probes (conditional writes, object lock, the bucket) run once, and every
probe result is guarded by a lock of its own.
"""

from __future__ import annotations

import io
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

import certifi
import urllib3
import urllib3.exceptions
from minio import Minio
from minio.commonconfig import CopySource
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.helpers import check_bucket_name, genheaders

from .atomic import write_atomically
from .base import (
    MAX_KEY_BYTES,
    InvalidKey,
    ObjectChanged,
    ObjectExists,
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    StorageUnavailable,
    Store,
    check_not_reserved,
    redact_userinfo,
    validate_content_type,
    validate_key,
    validate_metadata,
    validate_prefix,
)
from .config import BACKOFF_MAX_S, S3Settings
from .lock import ObjectLock
from .policy import LockPolicy, Mode

__all__ = ["S3Store", "parse_s3_url"]

log = logging.getLogger("sohoa.storage")

_META_PREFIX = "x-amz-meta-"
_CHUNK = 1024 * 1024
_NOT_FOUND_CODES = {"NoSuchKey", "NoSuchObject", "NotFound", "NoSuchVersion"}
_EXISTS_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}
_UNSUPPORTED_CODES = {"NotImplemented", "InvalidArgument", "InvalidRequest"}
_PROBE_DIR = ".sohoa/probe/"
_UNAVAILABLE_STATUSES = {502, 503, 504}  # a gateway or a server that cannot serve now: tried again, then unavailable
#: Values of presigned-URL and Authorization-header parameters that grant access (or name the key).
_SIGNED_PARAM = re.compile(r"(?i)\b((?:X-Amz-)?(?:Credential|Signature|Security-Token)|AWSAccessKeyId)=[^&\s,\"'<>)]*")
#: Connections kept open per server. One store serves every worker thread of the process, and
#: beyond minio's default of 10 urllib3 would drop connections (with a warning each time).
_POOL_SIZE = max(10, 2 * (os.cpu_count() or 1))


def parse_s3_url(url: str) -> tuple[str, str]:
    """Split ``s3://bucket[/prefix]`` into (bucket, normalised prefix ending in '/' or '')."""
    parts = urlsplit(url)
    shown = redact_userinfo(url)  # error messages end up in logs: never echo credentials written into the URL
    if parts.scheme != "s3" or not parts.netloc:
        raise StorageError(f"not an s3://bucket[/prefix] URL: {shown!r}")
    if parts.query or parts.fragment or "@" in parts.netloc or shown != url:
        raise StorageError(f"s3 URL must be s3://bucket[/prefix] without query, fragment or credentials: {shown!r}")
    bucket = parts.netloc
    try:
        check_bucket_name(bucket, strict=True)
    except ValueError as exc:
        raise StorageError(f"invalid bucket name {bucket!r}: {exc}") from None
    prefix = parts.path.strip("/")
    if prefix:
        try:
            validate_key(prefix)
        except InvalidKey as exc:
            raise StorageError(f"invalid prefix in {shown!r}: {exc}") from None
        prefix += "/"
    return bucket, prefix


#: Requests that can be sent again after they got no answer: reads and listings (conditional or not), and a
#: DELETE or a PUT that replaces (a part, an overwrite, retention, a copy). A conditional write is not one
#: (a create-only PUT with If-None-Match, a DELETE with If-Match): when the first try was done and only its
#: answer was lost, the second would fail with a false ObjectExists or ObjectChanged. POST (multipart start
#: and completion) is not either.
_READS = frozenset({"GET", "HEAD"})
_WRITES = frozenset({"PUT", "DELETE"})
_CONDITIONS = ("If-None-Match", "If-Match")


def _retry(settings: S3Settings, resend: bool) -> urllib3.Retry:
    """Retries with exponential backoff (settings.backoffs). A refused or timed-out connection sent nothing, so
    every request is tried again after one; after a lost answer or a 5xx only a resendable request is."""
    n = settings.retries
    return urllib3.Retry(total=n, connect=n, read=n if resend else 0, status=n if resend else 0, other=0,
                         allowed_methods=None, status_forcelist=(500, 502, 503, 504),
                         backoff_factor=settings.backoff_s, backoff_max=BACKOFF_MAX_S, respect_retry_after_header=False)


class _Pool(urllib3.PoolManager):
    """minio's connection pool (CA bundle, sized for a shared store) with our timeouts, and retries chosen per
    request: minio gives every request the pool's retries, which cannot tell a create-only PUT from another."""

    def __init__(self, settings: S3Settings) -> None:
        self._resend, self._once = _retry(settings, True), _retry(settings, False)
        super().__init__(timeout=urllib3.Timeout(connect=settings.connect_timeout_s, read=settings.read_timeout_s),
                         maxsize=_POOL_SIZE, cert_reqs="CERT_REQUIRED",
                         ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(), retries=self._resend)

    def urlopen(self, method: str, url: str, redirect: bool = True, **kw: Any) -> Any:
        if "retries" not in kw:
            headers = kw.get("headers") or {}
            verb = method.upper()
            resend = verb in _READS or (verb in _WRITES and not any(h in headers for h in _CONDITIONS))
            kw["retries"] = self._resend if resend else self._once
        return super().urlopen(method, url, redirect=redirect, **kw)


def _short_reason(exc: BaseException) -> str:
    """One-line reason for a connection failure, without object reprs."""
    reason = getattr(exc, "reason", None) or exc
    text = str(reason)
    # urllib3: "<urllib3.connection.HTTPConnection object at 0x..>: Failed to establish ...: [Errno 111] Connection refused"
    text = re.sub(r"<[^>]*object at 0x[0-9a-f]+>:?\s*", "", text)
    text = re.sub(r"^\w*Connection(Pool)?\([^)]*\):\s*", "", text)
    text = re.sub(r"^\w+\((.*)\)$", r"\1", text).strip("'\" ")
    return " ".join(text.split()) or type(reason).__name__


class S3Store(Store):
    """Objects in ``bucket`` under an optional key ``prefix`` (from ``s3://bucket/prefix``)."""

    def __init__(self, url: str, settings: S3Settings | None = None) -> None:
        self.settings = settings if settings is not None else S3Settings()
        self.bucket, self.prefix = parse_s3_url(url)
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        s = self.settings
        self._endpoint = s.host_port
        raw = [v.get_secret_value() for v in (s.access_key, s.secret_key) if v is not None and v.get_secret_value()]
        # as written, and as they would appear url-encoded (a secret key holds '/' and '+'), longest first
        self._secrets = sorted({form for value in raw for form in (value, quote(value, safe=""), quote_plus(value))},
                               key=len, reverse=True)
        try:
            self._client = Minio(
                self._endpoint,
                access_key=s.access_key.get_secret_value() if s.access_key else None,
                secret_key=s.secret_key.get_secret_value() if s.secret_key else None,
                secure=s.is_secure,
                region=s.region,
                http_client=_Pool(s),
            )
        except ValueError as exc:
            raise StorageError(self._scrub(f"invalid S3 settings for {self._endpoint}: {exc}")) from None
        self._cond_lock = threading.Lock()
        self._cond_supported: bool | None = None
        self._object_lock = ObjectLock(self._client, self.bucket)
        self._ready_lock = threading.Lock()
        self._ready = False

    # ------------------------------------------------------------------ helpers
    def _scrub(self, text: str) -> str:
        """Single line, credentials and signatures masked: error texts end up in logs and Prefect UIs.

        A server or proxy may echo the request in its error (a presigned URL is a bearer token
        until it expires), so signed parameters are masked as well as the configured keys.
        """
        for secret in self._secrets:
            text = text.replace(secret, "***")
        text = _SIGNED_PARAM.sub(lambda m: f"{m.group(1)}=***", text)
        return " ".join(text.split())

    def _name(self, key: str) -> str:
        key = check_not_reserved(validate_key(key))
        name = self.prefix + key
        if len(name.encode("utf-8")) > MAX_KEY_BYTES:
            raise InvalidKey(f"object key with store prefix exceeds {MAX_KEY_BYTES} UTF-8 bytes: {key!r}")
        return name

    def _where(self, name: str | None) -> str:
        return f"s3://{self.bucket}/{name}" if name is not None else f"s3://{self.bucket}"

    @contextmanager
    def _errors(self, action: str, name: str | None = None) -> Iterator[None]:
        """Translate SDK/transport exceptions into StorageError subclasses with one-line messages."""
        where = self._where(name)
        started = time.monotonic()
        try:
            yield
        except StorageError:
            raise
        except S3Error as exc:
            code = exc.code or ""
            if code in _NOT_FOUND_CODES and name is not None:
                raise ObjectNotFound(f"object not found: {where}") from None
            if code == "NoSuchBucket":
                raise StorageError(f"bucket does not exist: s3://{self.bucket} (at {self._endpoint})") from None
            if code in _EXISTS_CODES:
                raise ObjectExists(f"object already exists: {where}") from None
            detail = f"{code}: {exc.message}" if exc.message else code
            raise StorageError(self._scrub(f"S3 {action} {where} failed at {self._endpoint}: {detail}")) from None
        except InvalidResponseError as exc:
            status = getattr(exc, "_code", None)
            if status == 412:
                raise ObjectExists(f"object already exists: {where}") from None
            if status == 404 and name is not None:
                raise ObjectNotFound(f"object not found: {where}") from None
            raise StorageError(
                self._scrub(f"S3 {action} {where} failed at {self._endpoint}: unexpected HTTP {status} response")
            ) from None
        except ServerError as exc:
            if exc.status_code in _UNAVAILABLE_STATUSES:
                raise self._unavailable(action, name, f"HTTP {exc.status_code}", started) from None
            raise StorageError(
                self._scrub(f"S3 {action} {where} failed at {self._endpoint}: HTTP {exc.status_code}")
            ) from None
        except urllib3.exceptions.HTTPError as exc:
            raise self._unavailable(action, name, _short_reason(exc), started) from None
        except MinioException as exc:
            raise StorageError(self._scrub(f"S3 {action} {where} failed at {self._endpoint}: {exc}")) from None

    def _unavailable(self, action: str, name: str | None, reason: str, started: float) -> StorageUnavailable:
        """The one line that says which store did not answer what, and for how long it was tried. Logged at INFO:
        a run's log shows it (``sohoa run`` sets sohoa's loggers to INFO), a command's stderr keeps one line."""
        key = name[len(self.prefix):] if name and name.startswith(self.prefix) else name
        what = f"{action} {key}" if key else action
        message = self._scrub(f"cannot reach S3 endpoint {self._endpoint} for {self.url}: {what} got no answer"
                              f" in {time.monotonic() - started:.1f} s: {reason}")
        log.info("%s", message)
        return StorageUnavailable(message, self.url)

    @staticmethod
    def _user_metadata(headers: object) -> dict[str, str]:
        out: dict[str, str] = {}
        for k, v in getattr(headers, "items", lambda: [])():
            lk = str(k).lower()
            if lk.startswith(_META_PREFIX):
                out[lk[len(_META_PREFIX):]] = str(v)
        return out

    def _headers(self, ctype: str, meta: dict[str, str], conditional: bool) -> dict[str, object]:
        # genheaders turns plain keys into X-Amz-Meta-*; Content-Type is passed as a real header.
        headers: dict[str, object] = dict(genheaders(meta, None, None, None, False))
        headers["Content-Type"] = ctype
        if conditional:
            headers["If-None-Match"] = "*"
        return headers

    def _conditional_put(self, name: str, data: bytes, ctype: str, meta: dict[str, str]) -> str | None:
        """One PUT with ``If-None-Match: *``; ObjectExists when the server says the key is taken."""
        with self._errors("put", name):
            result = self._client._put_object(self.bucket, name, data, headers=self._headers(ctype, meta, True))
        return result.etag

    def _conditional_writes_supported(self) -> bool:
        """Probe once whether the server honours ``If-None-Match: *`` (rclone serve s3 ignores it)."""
        with self._cond_lock:
            if self._cond_supported is not None:
                return self._cond_supported
            probe = f"{self.prefix}{_PROBE_DIR}{uuid.uuid4().hex}"
            supported = wrote = False
            try:
                rejected = False
                with self._errors("probe put", probe):
                    try:
                        self._client._put_object(
                            self.bucket, probe, b"probe", headers=self._headers("text/plain", {}, True)
                        )
                    except S3Error as exc:
                        if exc.code not in _UNSUPPORTED_CODES:
                            raise
                        rejected = True
                    except ServerError as exc:
                        if exc.status_code != 501:
                            raise
                        rejected = True
                if not rejected:
                    wrote = True
                    try:
                        self._conditional_put(probe, b"probe", "text/plain", {})
                    except ObjectExists:
                        supported = True
            finally:
                try:
                    if wrote:
                        with self._errors("delete", probe):
                            self._client.remove_object(self.bucket, probe)
                except StorageError as exc:
                    log.warning("could not delete S3 probe object %s: %s", self._where(probe), exc)
            if not supported:
                log.warning(
                    "S3 server at %s ignores or rejects If-None-Match; create-only writes will use stat-then-put, "
                    "which is racy between concurrent writers", self._endpoint,
                )
            self._cond_supported = supported
            return supported

    def _claim_by_stat(self, name: str) -> None:
        """Fallback create-only check: raise ObjectExists if present.  RACY: another writer can
        create the key between this HEAD and our PUT; only used when the server cannot do
        conditional writes or the object is larger than one part."""
        try:
            with self._errors("stat", name):
                self._client.stat_object(self.bucket, name)
        except ObjectNotFound:
            return
        raise ObjectExists(f"object already exists: {self._where(name)}")

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
        """Upload *data*; create-only uses a conditional PUT when it fits in one part."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("data must be bytes")
        return self._upload(key, io.BytesIO(bytes(data)), len(data), metadata, content_type, create_only)

    def put_file(
        self,
        key: str,
        path: str | os.PathLike[str],
        *,
        metadata: dict[str, str] | None = None,
        content_type: str | None = None,
        create_only: bool = False,
    ) -> ObjectInfo:
        """Stream *path* (multipart above ``part_size``); at most one part is held in memory.

        Create-only files larger than ``part_size`` cannot be sent as one
        conditional PUT, so they fall back to stat-then-put: a concurrent
        writer could slip in between the check and the upload.
        """
        name = self._name(key)
        src = os.fspath(path)
        try:
            fh = open(src, "rb")
            size = os.fstat(fh.fileno()).st_size
        except OSError as exc:
            raise StorageError(f"cannot read {src}: {exc.strerror or type(exc).__name__}") from None
        with fh:
            return self._upload(key, fh, size, metadata, content_type, create_only, name=name)

    def _upload(
        self,
        key: str,
        stream: io.BufferedIOBase | io.BytesIO,
        size: int,
        metadata: dict[str, str] | None,
        content_type: str | None,
        create_only: bool,
        name: str | None = None,
    ) -> ObjectInfo:
        name = name or self._name(key)
        meta = validate_metadata(metadata)
        ctype = validate_content_type(content_type)
        if create_only and size <= self.settings.part_size and self._conditional_writes_supported():
            data = stream.read(size)
            if len(data) != size:
                raise StorageError(f"source for {self._where(name)} changed size while reading")
            etag = self._conditional_put(name, data, ctype, meta)
        else:
            if create_only:
                self._claim_by_stat(name)
            with self._errors("put", name):
                result = self._client.put_object(
                    self.bucket,
                    name,
                    stream,
                    size,
                    content_type=ctype,
                    metadata=dict(meta),
                    part_size=self.settings.part_size,
                )
            etag = result.etag
        return ObjectInfo(key=key, size=size, etag=etag, content_type=ctype, metadata=meta)

    def copy(self, src: str, dst: str, *, if_match: str | None = None) -> ObjectInfo:
        """Server-side copy; the default COPY directive keeps metadata and content type. ``if_match`` sends
        ``x-amz-copy-source-if-match``: the server copies that version or nothing."""
        src_name, dst_name = self._name(src), self._name(dst)
        self._copy_object(src_name, dst_name, if_match)
        return self.stat(dst)

    def _copy_object(self, src_name: str, dst_name: str, if_match: str | None) -> None:
        with self._changed(if_match), self._errors("copy", src_name):
            self._client.copy_object(self.bucket, dst_name, CopySource(self.bucket, src_name, match_etag=if_match))

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        """DELETE is idempotent in S3; a missing bucket still raises (that is a setup error)."""
        self._delete_object(self._name(key), if_match)

    def _delete_object(self, name: str, if_match: str | None) -> None:
        """A DELETE with ``If-Match`` where asked. A server that ignores the header would delete any version,
        so the version is also checked first (HEAD): only a write in between could still be lost."""
        if if_match is None:
            with self._errors("delete", name):
                self._client.remove_object(self.bucket, name)
            return
        try:
            with self._errors("stat", name):
                etag = self._client.stat_object(self.bucket, name).etag
        except ObjectNotFound:
            return
        if _bare(etag) != _bare(if_match):
            raise ObjectChanged(f"object changed: {self._where(name)} is version {_bare(etag)}, not {_bare(if_match)}")
        with self._changed(if_match), self._errors("delete", name):
            try:
                self._client._execute("DELETE", self.bucket, name, headers={"If-Match": f'"{_bare(if_match)}"'})
            except S3Error as exc:
                if exc.code not in _UNSUPPORTED_CODES:
                    raise
                self._client.remove_object(self.bucket, name)  # checked just above

    @contextmanager
    def _changed(self, if_match: str | None) -> Iterator[None]:
        """A failed precondition is a changed object when a version was asked for (not a taken key)."""
        try:
            yield
        except ObjectExists:
            if if_match is None:
                raise
            raise ObjectChanged(f"object changed since version {_bare(if_match)} was seen") from None

    def stray(self) -> Iterator[ObjectInfo]:
        """Objects under the prefix whose names :meth:`list` skips (not portable keys), raw names as keys."""
        with self._errors("list", self.prefix or None):
            for obj in self._client.list_objects(self.bucket, prefix=self.prefix or None, recursive=True):
                name = obj.object_name or ""
                if obj.is_dir or not name.startswith(self.prefix) or _portable(name[len(self.prefix):]):
                    continue
                yield _info(name[len(self.prefix):], obj)

    def evict(self, raw: str, dst: str, *, if_match: str | None = None) -> ObjectInfo:
        """Copy the stray object ``raw`` to ``dst`` (that version only), check the copy's size, delete ``raw``."""
        name = self.prefix + raw
        before = self._stat_raw(name)
        self._copy_object(name, self._name(dst), if_match or before.etag)
        after = self.stat(dst)
        if after.size != (before.size or 0):
            raise StorageError(f"copy of {self._where(name)!r} is {after.size} bytes, not {before.size}: original kept")
        self._delete_object(name, if_match or before.etag)
        return after

    def _stat_raw(self, name: str) -> object:
        with self._errors("stat", name):
            return self._client.stat_object(self.bucket, name)

    # -------------------------------------------------------------------- reads
    def get_bytes(self, key: str, *, if_match: str | None = None) -> bytes:
        name = self._name(key)
        with self._changed(if_match), self._errors("get", name):
            resp = self._client.get_object(self.bucket, name, request_headers=_if_match(if_match))
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

    def get_file(self, key: str, dest: str | os.PathLike[str], *, if_match: str | None = None) -> None:
        """Stream into a temp file beside *dest*, then rename (no partial file under the final name).
        ``if_match`` sends ``If-Match``: the server sends that version or nothing."""
        name = self._name(key)
        with self._changed(if_match), self._errors("get", name):
            resp = self._client.get_object(self.bucket, name, request_headers=_if_match(if_match))
            try:
                def fill(out: io.BufferedWriter) -> None:
                    with self._errors("get", name):
                        for chunk in resp.stream(_CHUNK):
                            out.write(chunk)

                write_atomically(Path(os.fspath(dest)), fill)
            finally:
                resp.close()
                resp.release_conn()

    def stat(self, key: str) -> ObjectInfo:
        name = self._name(key)
        with self._errors("stat", name):
            obj = self._client.stat_object(self.bucket, name)
        return _info(key, obj, self._user_metadata(obj.metadata))

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """ListObjectsV2 with continuation tokens (the SDK pages); keys outside the contract are skipped."""
        prefix = validate_prefix(prefix)
        full = self.prefix + prefix
        with self._errors("list", full or None):
            objects = self._client.list_objects(self.bucket, prefix=full or None, recursive=True)
            for obj in objects:
                name = obj.object_name or ""
                if obj.is_dir or not name.startswith(self.prefix):
                    continue
                key = name[len(self.prefix):]
                try:
                    check_not_reserved(validate_key(key))
                except InvalidKey:
                    log.debug("skipping S3 object with unsupported key %r", name)
                    continue
                yield _info(key, obj)

    # -------------------------------------------------------------------- misc
    def url_for(self, key: str) -> str:
        return self._where(self._name(key))

    def lock_policy(self) -> LockPolicy:
        """The bucket's object lock, read once per store (sohoa/storage/lock.py: never a request that could write)."""
        return self._object_lock.policy()

    def protect(self, key: str, mode: Mode, until: datetime) -> None:
        """Retain ``key`` until ``until``; StorageError where the bucket has no object lock (nothing is sent)."""
        name = self._name(key)
        with self._errors("set retention", name):
            self._object_lock.retain(name, mode, until)

    def ensure_ready(self) -> None:
        """Check the bucket (creating it if ``settings.create_bucket``); fail fast on bad endpoint/credentials.

        Once per store: a shared store is asked by every flow run, the server only the first time.
        A failure is not remembered, so the next call asks again.
        """
        with self._ready_lock:
            if not self._ready:
                self._check_bucket()
                self._ready = True

    def _check_bucket(self) -> None:
        with self._errors("check bucket"):
            if self._client.bucket_exists(self.bucket):
                return
            if not self.settings.create_bucket:
                raise StorageError(
                    f"bucket does not exist: s3://{self.bucket} (at {self._endpoint}); "
                    "create it or set SOHOA_S3_CREATE_BUCKET=true"
                )
            self._make_bucket()
            log.info("created bucket s3://%s at %s", self.bucket, self._endpoint)

    def _make_bucket(self) -> None:
        """Create the bucket; losing a creation race to ourselves is fine, to another account is not."""
        try:
            self._client.make_bucket(self.bucket)
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
            if exc.code == "BucketAlreadyExists" and not self._client.bucket_exists(self.bucket):
                raise StorageError(f"bucket name s3://{self.bucket} is taken by another account") from None


def _bare(etag: str | None) -> str:
    return (etag or "").strip('"')


def _if_match(etag: str | None) -> dict[str, str] | None:
    return {"If-Match": f'"{_bare(etag)}"'} if etag is not None else None


def _portable(key: str) -> bool:
    """A key :meth:`S3Store.list` yields (the store's own reserved names count as portable: never stray)."""
    try:
        validate_key(key)
    except InvalidKey:
        return False
    return True


def _info(key: str, obj: object, metadata: dict[str, str] | None = None) -> ObjectInfo:
    """What the store says of an object, from a minio stat or listing entry (a listing carries no metadata)."""
    return ObjectInfo(key=key, size=obj.size or 0, etag=obj.etag, last_modified=obj.last_modified,
                      content_type=obj.content_type, metadata=metadata or {})
