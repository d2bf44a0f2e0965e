"""Content-addressed cache keys.

A step's key is the SHA-256 of (step name, step version, the step's own settings, the key of
the step before it or the input's content hash). Keys chain: changing one step's version or
settings changes its key and every key after it, and nothing before it. Keys are flat
(``step-hex``) because Prefect's file lock manager cannot take ``/`` in a key.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, BinaryIO

CHUNK = 1 << 20


def sha256_stream(stream: BinaryIO) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: stream.read(CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as stream:
        return sha256_stream(stream)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def step_key(step: str, version: str, settings: dict[str, Any], upstream: str) -> str:
    payload = canonical_json({"step": step, "version": version, "settings": settings, "upstream": upstream})
    return f"{step}-{sha256_bytes(payload.encode())}"
