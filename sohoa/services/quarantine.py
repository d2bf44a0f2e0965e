"""Quarantine: a refused or failed input, kept with a machine-readable reason.

The key never uses the input's name (names can be hostile); the name is kept, escaped, inside
the reason object. The input itself is only copied, never moved or deleted here.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from sohoa.kernel.errors import NO_SPACE, InputRefused, ReasonCode, no_space, reason_code
from sohoa.kernel.models import Outcome, Reason
from sohoa.storage import Store


class QuarantineReason(BaseModel):
    code: ReasonCode  # serialized as its plain string: reason.json is unchanged
    message: str
    input_name: str
    sha256: str | None
    step: str
    at: str
    files: list[str]
    skipped: list[str] = []


def safe_name(name: str) -> str:
    """A display form of a possibly hostile name: control characters and surrogates escaped."""
    return ascii(name)[1:-1] if any(not ch.isprintable() or "\ud800" <= ch <= "\udfff" for ch in name) else name


def quarantine(store: Store, path: Path, *, code: ReasonCode | str, message: str, step: str, sha256: str | None = None) -> str:
    """Copy ``path`` (file or folder) under ``quarantine/<id>/`` with ``reason.json``; return the prefix."""
    stamp = datetime.now(UTC)
    prefix = f"quarantine/{stamp:%Y%m%dT%H%M%SZ}-{(sha256 or uuid.uuid4().hex)[:12]}/"
    files: list[str] = []
    entries = sorted(path.iterdir()) if path.is_dir() and not path.is_symlink() else [path]
    # regular files only: a link may point at anything on this machine, which must not leak into the store
    sources = [p for p in entries if p.is_file() and not (p.is_symlink() and p != path)]
    skipped = [safe_name(p.name) for p in entries if p not in sources and p != path]
    for index, file in enumerate(sources, start=1):
        key = f"{prefix}input/{index:04d}"
        store.put_file(key, file, content_type="application/octet-stream")
        files.append(key)
    reason = QuarantineReason(code=code, message=message, input_name=safe_name(str(path)), sha256=sha256,
                              step=step, at=stamp.isoformat(timespec="seconds"), files=files, skipped=skipped)
    store.put_bytes(prefix + "reason.json", reason.model_dump_json(indent=2).encode(), content_type="application/json")
    return prefix


def refuse(store: Store, path: Path, refusal: InputRefused, *, sha256: str | None = None,
           duration_s: float | None = None) -> Outcome:
    """Quarantine a refused input and describe it as the run's outcome for that input."""
    where = quarantine(store, path, code=refusal.code, message=refusal.message, step="capture", sha256=sha256)
    return Outcome(input=safe_name(str(path)), status="refused", reason=Reason(code=refusal.code, message=refusal.message),
                   quarantine=store.url_for(where + "reason.json"), duration_s=duration_s)


def failed(item: str, exc: BaseException, message: str | None = None, code: ReasonCode | str | None = None) -> Outcome:
    """The outcome of a dossier that failed for a reason other than its input: the error's first line."""
    full = None if message else no_space(exc)
    if full:
        message, code = full, NO_SPACE
    text = message or (str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    return Outcome(input=safe_name(item), status="failed",
                   reason=Reason(code=code or reason_code(exc), message=text))
