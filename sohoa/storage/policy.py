"""What a bucket says about object lock (WORM retention), as plain data.

Kept apart from the S3 backend so that the :class:`~sohoa.storage.base.Store` contract can name
:class:`LockPolicy` (local stores answer "disabled") without importing anything that talks to S3.
Parsing is here too: it is pure, and a test can feed it any server's answer.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel

__all__ = ["LockPolicy", "Mode", "parse_policy"]

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
