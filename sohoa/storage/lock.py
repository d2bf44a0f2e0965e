"""Object lock (WORM retention) on S3 buckets that have it, detected without ever risking a write.

Detection is one ``GET /<bucket>?object-lock``. A server that does not know the sub-resource may
answer it as a bucket listing (rclone serve s3 does): the bucket counts as locked only when the
answer is an ``ObjectLockConfiguration`` that says ``Enabled`` (:func:`~sohoa.storage.policy.parse_policy`).
Only then is a ``PUT ?retention`` ever sent, because a server without object lock may take that
request for an upload and replace the object's bytes with the retention XML (measured with rclone
serve s3).

:class:`ObjectLock` belongs to the S3 backend: :class:`~sohoa.storage.s3.S3Store` builds one with its
own client and bucket, so nothing here needs to know the store.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from minio import Minio
from minio.error import InvalidResponseError, S3Error
from minio.retention import Retention

from .base import StorageError
from .policy import LockPolicy, Mode, parse_policy

__all__ = ["ObjectLock", "parse_policy"]

log = logging.getLogger(__name__)


class ObjectLock:
    """The object lock of one bucket: its policy read once per store, retention only where it is enabled."""

    def __init__(self, client: Minio, bucket: str) -> None:
        self._client = client
        self._bucket = bucket
        self._guard = threading.Lock()
        self._policy: LockPolicy | None = None

    def policy(self) -> LockPolicy:
        """The bucket's policy; the first answer the server gives is kept (stores are shared per process).

        A request that got no answer (server unreachable, 5xx) counts as disabled for this call only,
        so that one network hiccup does not switch retention off for the rest of the process.
        """
        with self._guard:
            if self._policy is not None:
                return self._policy
            policy, answered = self._read()
            if answered:
                self._policy = policy
            return policy

    def _read(self) -> tuple[LockPolicy, bool]:
        """(policy, whether the server answered) from one GET; a bucket without object lock answers an error."""
        try:
            # minio has no public call that returns the raw answer, which parse_policy must judge itself
            response = self._client._execute("GET", self._bucket, query_params={"object-lock": ""})
        except (S3Error, InvalidResponseError) as exc:  # an answer: no object lock here
            log.debug("no object lock on s3://%s: %s", self._bucket, type(exc).__name__)
            return LockPolicy(), True
        except Exception as exc:  # noqa: BLE001 - every failure means: do not send retention requests
            log.debug("object lock of s3://%s unknown: %s", self._bucket, type(exc).__name__)
            return LockPolicy(), False
        return parse_policy(response.data), True

    def retain(self, name: str, mode: Mode, until: datetime) -> None:
        """Retain object ``name`` (its current version) until ``until``; StorageError unless the policy is enabled.

        SDK errors are left to the caller, the store, which turns them into its own messages.
        """
        if not self.policy().enabled:
            raise StorageError(f"s3://{self._bucket} has no object lock: retention was not requested")
        self._client.set_object_retention(self._bucket, name, Retention(mode, until.astimezone(UTC)))
