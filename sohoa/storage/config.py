"""S3 connection settings, read from ``SOHOA_S3_*`` environment variables.

Kept separate from the store so flows, CLIs and tests can build settings
from the environment (or override them) without touching S3.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .base import StorageUnavailable

__all__ = ["S3Settings", "StorageUnavailable"]

_MIB = 1024 * 1024
BACKOFF_MAX_S = 10.0  # the longest wait between two tries of one request


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class S3Settings(BaseSettings):
    """Where and how to reach the S3-compatible server.

    ``endpoint`` may be ``host:port`` or a URL ``http(s)://host:port``; with a
    URL the scheme decides TLS.  Without a scheme, ``secure`` decides, and
    when that is unset TLS is off only for loopback hosts (local emulators)
    so a bare production hostname never silently goes out in clear text.
    Credentials fall back to the standard ``AWS_*`` variables.
    """

    # hide_input_in_errors: a validation error must not echo what was given (an endpoint with credentials in it)
    model_config = SettingsConfigDict(env_prefix="SOHOA_S3_", extra="ignore", populate_by_name=True,
                                      hide_input_in_errors=True)

    endpoint: str = "127.0.0.1:9000"
    access_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("access_key", "SOHOA_S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID")
    )
    secret_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("secret_key", "SOHOA_S3_SECRET_KEY", "AWS_SECRET_ACCESS_KEY"),
    )
    secure: bool | None = None
    region: str = "us-east-1"
    create_bucket: bool = True
    #: Multipart part size and the largest object sent as one conditional PUT.
    part_size: int = Field(default=64 * _MIB, ge=5 * _MIB, le=5 * 1024 * _MIB)
    #: Seconds to open a connection (SOHOA_S3_CONNECT_TIMEOUT_S): a local network connects in milliseconds.
    connect_timeout_s: float = Field(default=5.0, gt=0, le=300)
    #: Seconds a request may wait for each read of the answer (SOHOA_S3_READ_TIMEOUT_S). The slowest answer we
    #: rely on is a 64 MiB part's PUT acknowledgement; minio's own default, 300 s, let a frozen server stall a run
    #: for about 30 minutes per request (5 retries of 300 s each plus backoff).
    read_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    #: Retries of a request that is safe to send again (SOHOA_S3_RETRIES); see sohoa/storage/s3.py for which are.
    retries: int = Field(default=3, ge=0, le=10)
    #: First backoff before a retry, doubled after each (SOHOA_S3_BACKOFF_S); each wait at most BACKOFF_MAX_S.
    backoff_s: float = Field(default=0.5, ge=0, le=30)

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("endpoint must not be empty")
        parts = urlsplit(value if "://" in value else f"//{value}")
        if "://" in value and parts.scheme not in ("http", "https"):
            raise ValueError(f"endpoint scheme must be http or https, not {parts.scheme!r}")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("endpoint must be host[:port] or http(s)://host[:port] without a path")
        if parts.username or parts.password:
            raise ValueError("put credentials in access_key/secret_key, not in the endpoint")
        if not parts.hostname:
            raise ValueError("endpoint has no host")
        return value

    @model_validator(mode="after")
    def _check_scheme_vs_secure(self) -> S3Settings:
        scheme = self._scheme
        if scheme and self.secure is not None and self.secure != (scheme == "https"):
            raise ValueError(f"endpoint scheme {scheme!r} contradicts secure={self.secure}")
        return self

    @property
    def _scheme(self) -> str | None:
        return urlsplit(self.endpoint).scheme.lower() if "://" in self.endpoint else None

    def backoffs(self) -> list[float]:
        """The waits before each retry, as urllib3 sleeps them: none before the first, then doubling, capped."""
        return [0.0 if n == 1 else min(BACKOFF_MAX_S, self.backoff_s * 2 ** (n - 1)) for n in range(1, self.retries + 1)]

    @property
    def give_up_s(self) -> float:
        """The longest one request takes before it fails as unavailable: every attempt connecting and waiting
        for its answer as long as allowed, plus the backoffs (5 s, 60 s, 3 retries: 263 s; minio's own: about 30 min)."""
        attempts = self.retries + 1
        return attempts * (self.connect_timeout_s + self.read_timeout_s) + sum(self.backoffs())

    @property
    def host_port(self) -> str:
        """``host[:port]`` as the minio SDK wants it (no scheme)."""
        return urlsplit(self.endpoint if "://" in self.endpoint else f"//{self.endpoint}").netloc

    @property
    def is_secure(self) -> bool:
        """Whether to use TLS (see class docstring for the rule)."""
        scheme = self._scheme
        if scheme:
            return scheme == "https"
        if self.secure is not None:
            return self.secure
        host = urlsplit(f"//{self.endpoint}").hostname or ""
        return not _is_loopback(host)

    def fingerprint(self) -> str:
        """A digest of every setting, the credentials included: equal settings, equal fingerprints.

        Shared stores are looked up by it (:func:`sohoa.storage.open_store`), so two users of one
        server never share a client, and no secret is kept in the lookup key.
        """
        fields = self.model_dump(mode="json", exclude={"access_key", "secret_key"})
        fields["credentials"] = [v.get_secret_value() if v is not None else None for v in (self.access_key, self.secret_key)]
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
