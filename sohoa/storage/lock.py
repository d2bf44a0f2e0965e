"""Object lock (WORM retention) on S3 buckets that have it, detected without ever risking a write.

Detection is one ``GET /<bucket>?object-lock``. A server that does not know the sub-resource may
answer it as a bucket listing (rclone serve s3 does): the bucket counts as locked only when the
answer is an ``ObjectLockConfiguration`` that says ``Enabled``. Only then is a ``PUT ?retention``
ever sent, because a server without object lock may take that request for an upload and replace
the object's bytes with the retention XML (measured with rclone serve s3).
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

from .base import StorageError

if TYPE_CHECKING:
    from .s3 import S3Store

log = logging.getLogger(__name__)

Mode = Literal["GOVERNANCE", "COMPLIANCE"]


class LockPolicy(BaseModel):
    """What the bucket says about object lock; ``enabled`` False on servers and stores without it."""

    enabled: bool = False
    default_mode: Mode | None = None
    default_days: int | None = None

    def default_until(self, now: datetime) -> datetime | None:
        return now + timedelta(days=self.default_days) if self.default_mode and self.default_days else None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_policy(body: bytes) -> LockPolicy:
    """An ``ObjectLockConfiguration`` document -> policy; anything else (a listing, an error) -> disabled."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return LockPolicy()
    if _local(root.tag) != "ObjectLockConfiguration":
        return LockPolicy()
    values = {_local(e.tag): (e.text or "").strip() for e in root.iter()}
    if values.get("ObjectLockEnabled") != "Enabled":
        return LockPolicy()
    mode = values.get("Mode") if values.get("Mode") in ("GOVERNANCE", "COMPLIANCE") else None
    days = int(values["Days"]) if values.get("Days", "").isdigit() else None
    if days is None and values.get("Years", "").isdigit():
        days = 365 * int(values["Years"])
    return LockPolicy(enabled=True, default_mode=mode, default_days=days)  # type: ignore[arg-type]


def read_policy(store: S3Store) -> LockPolicy:
    """The bucket's policy from one GET; a bucket without object lock answers an error: disabled."""
    try:
        response = store._client._execute("GET", store.bucket, query_params={"object-lock": ""})
    except Exception as exc:  # noqa: BLE001 - every failure means: do not send retention requests
        log.debug("no object lock on s3://%s: %s", store.bucket, type(exc).__name__)
        return LockPolicy()
    return parse_policy(response.data)


def set_retention(store: S3Store, key: str, mode: Mode, until: datetime) -> None:
    """Retain ``key`` (its current version) until ``until``; only for a bucket whose policy is enabled."""
    from minio.retention import Retention

    if not store.lock_policy().enabled:
        raise StorageError(f"s3://{store.bucket} has no object lock: retention was not requested")
    name = store._name(key)
    with store._errors("set retention", name):
        store._client.set_object_retention(store.bucket, name, Retention(mode, until.astimezone(UTC)))
