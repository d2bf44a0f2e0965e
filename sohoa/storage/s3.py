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
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
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
    ObjectExists,
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    Store,
    check_not_reserved,
    redact_userinfo,
    validate_content_type,
    validate_key,
    validate_metadata,
    validate_prefix,
)
from .config import S3Settings
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


def _http_pool() -> urllib3.PoolManager:
    """minio's own default connection pool (timeouts, retries, CA bundle), sized for a shared store."""
    timeout = int(timedelta(minutes=5).total_seconds())
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=timeout, read=timeout),
        maxsize=_POOL_SIZE,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(total=5, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )


def _short_reason(exc: BaseException) -> str:
    """One-line reason for a connection failure, without object reprs."""
    reason = getattr(exc, "reason", None) or exc
    text = str(reason)
    # urllib3: "<urllib3.connection.HTTPConnection object at 0x..>: Failed to establish ...: [Errno 111] Connection refused"
    text = re.sub(r"<[^>]*object at 0x[0-9a-f]+>:?\s*", "", text)
    text = re.sub(r"^\w*Connection\([^)]*\):\s*", "", text)
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
                http_client=_http_pool(),
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
            raise StorageError(
                self._scrub(f"S3 {action} {where} failed at {self._endpoint}: HTTP {exc.status_code}")
            ) from None
        except urllib3.exceptions.HTTPError as exc:
            raise StorageError(
                self._scrub(f"cannot reach S3 endpoint {self._endpoint}: {_short_reason(exc)}")
            ) from None
        except MinioException as exc:
            raise StorageError(self._scrub(f"S3 {action} {where} failed at {self._endpoint}: {exc}")) from None

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

    def copy(self, src: str, dst: str) -> ObjectInfo:
        """Server-side copy; the default COPY directive keeps metadata and content type."""
        src_name, dst_name = self._name(src), self._name(dst)
        with self._errors("copy", src_name):
            self._client.copy_object(self.bucket, dst_name, CopySource(self.bucket, src_name))
        return self.stat(dst)

    def delete(self, key: str) -> None:
        """DELETE is idempotent in S3; a missing bucket still raises (that is a setup error)."""
        name = self._name(key)
        with self._errors("delete", name):
            self._client.remove_object(self.bucket, name)

    # -------------------------------------------------------------------- reads
    def get_bytes(self, key: str) -> bytes:
        name = self._name(key)
        with self._errors("get", name):
            resp = self._client.get_object(self.bucket, name)
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

    def get_file(self, key: str, dest: str | os.PathLike[str]) -> None:
        """Stream into a temp file beside *dest*, then rename (no partial file under the final name)."""
        name = self._name(key)
        with self._errors("get", name):
            resp = self._client.get_object(self.bucket, name)
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

    def share_url(self, key: str, expires_s: int) -> str | None:
        """A presigned GET, valid ``expires_s`` seconds (at most 7 days): short-lived, for one review."""
        with self._errors(f"presign {key}"):
            return self._client.presigned_get_object(self.bucket, self._name(key), expires=timedelta(seconds=expires_s))

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


def _info(key: str, obj: object, metadata: dict[str, str] | None = None) -> ObjectInfo:
    """What the store says of an object, from a minio stat or listing entry (a listing carries no metadata)."""
    return ObjectInfo(key=key, size=obj.size or 0, etag=obj.etag, last_modified=obj.last_modified,
                      content_type=obj.content_type, metadata=metadata or {})
