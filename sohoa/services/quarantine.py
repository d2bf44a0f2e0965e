"""Quarantine: a refused or failed input, kept with a machine-readable reason.

One entry per distinct input, ``quarantine/<identity>/``: the input's SHA-256 (a folder's as
capture computes it), so a retry of the same bad input updates its ``reason.json`` (``times``)
instead of adding a copy. A copy is bounded: a ``too_large`` input, or one over the input size
limit, keeps its name, size and SHA-256 only; a link is never read or copied (it may point at
anything on this machine). The input's name never makes the key alone (names can be hostile):
copies are ``input/NNNN-<name folded to ASCII>``, and the name is kept, escaped, in the reason.
The input itself is only copied, never moved or deleted here.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ValidationError

from sohoa.kernel.errors import NO_SPACE, InputRefused, ReasonCode, no_space, reason_code
from sohoa.kernel.keys import sha256_file
from sohoa.kernel.models import Outcome, Reason
from sohoa.kernel.settings import Settings
from sohoa.steps.capture import folder_entries, folder_sha256
from sohoa.storage import ObjectNotFound, StorageError, Store

MAX_COPY_BYTES: int = Settings.model_fields["max_input_bytes"].default  # larger inputs are described, not copied
MAX_HASH_BYTES = 4 << 30  # larger still: identified by name, size and time, not read at all
KEY_NAME_CHARS = 120


class QuarantinedFile(BaseModel):
    """One file of a quarantined input: its escaped name, size, SHA-256 and copy (None: not copied)."""

    name: str
    size: int | None
    sha256: str | None
    key: str | None


class QuarantineReason(BaseModel):
    code: ReasonCode  # serialized as its plain string: reason.json is unchanged
    message: str
    input_name: str
    sha256: str | None
    step: str
    at: str
    files: list[str]  # the keys of the copies
    skipped: list[str] = []
    size: int | None = None  # of the input (a folder: its files), None for a link or a missing path
    inputs: list[QuarantinedFile] = []
    first_at: str | None = None  # the first time this input was quarantined; ``at`` is the latest
    times: int = 1


def safe_name(name: str) -> str:
    """A display form of a possibly hostile name: control characters and surrogates escaped."""
    return ascii(name)[1:-1] if any(not ch.isprintable() or "\ud800" <= ch <= "\udfff" for ch in name) else name


def key_name(index: int, name: str) -> str:
    """``NNNN-<name>`` with the name folded to plain ASCII letters, digits and ``._~-`` (``hồ sơ 1.pdf``:
    ``0001-ho_so_1.pdf``): a key segment any store and file system takes, never ``..``; the name itself is
    kept, escaped, in the reason."""
    folded = unicodedata.normalize("NFKD", name.replace("đ", "d").replace("Đ", "D")).encode("ascii", errors="ignore")
    slug = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._~-]+", "_", folded.decode()))[:KEY_NAME_CHARS]
    return f"{index:04d}-{slug}"


def quarantine(store: Store, path: Path, *, code: ReasonCode | str, message: str, step: str, sha256: str | None = None,
               max_copy_bytes: int = MAX_COPY_BYTES) -> str:
    """Keep ``path`` (file or folder) under ``quarantine/<identity>/`` with ``reason.json``; return the prefix."""
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    files, skipped = _regular_files(path)
    inputs = [QuarantinedFile(name=safe_name(f.name), size=f.stat().st_size, sha256=_digest(f), key=None) for f in files]
    size = sum(f.size or 0 for f in inputs) if files or (path.is_dir() and not path.is_symlink()) else None
    sha256 = sha256 or _content_sha256(path, files, inputs)
    prefix = f"quarantine/{_identity(path, sha256, inputs)[:32]}/"
    if ReasonCode.of(code) != ReasonCode.too_large and (size or 0) <= max_copy_bytes:
        inputs = [_copy(store, prefix, index, file, entry) for index, (file, entry) in enumerate(zip(files, inputs), 1)]
    earlier = _earlier(store, prefix)
    reason = QuarantineReason(
        code=code, message=message, input_name=safe_name(str(path)), sha256=sha256, step=step, at=stamp,
        files=[i.key for i in inputs if i.key], skipped=skipped, size=size, inputs=inputs,
        first_at=(earlier.first_at or earlier.at) if earlier else stamp, times=earlier.times + 1 if earlier else 1)
    store.put_bytes(prefix + "reason.json", reason.model_dump_json(indent=2).encode(), content_type="application/json")
    return prefix


def _regular_files(path: Path) -> tuple[list[Path], list[str]]:
    """(the regular files to keep, the escaped names of entries that are not): a link is neither read nor kept."""
    if path.is_symlink() or not path.exists():
        return [], []
    if not path.is_dir():
        return ([path], []) if path.is_file() else ([], [])
    entries = folder_entries(path)
    files = [p for p in entries if p.is_file() and not p.is_symlink()]
    return files, [safe_name(p.name) for p in entries if p not in files]


def _digest(file: Path) -> str | None:
    return sha256_file(file) if file.stat().st_size <= MAX_HASH_BYTES else None


def _content_sha256(path: Path, files: list[Path], inputs: list[QuarantinedFile]) -> str | None:
    """The input's SHA-256 as admission computes it (a folder: of its files' SHA-256s), when it could be read."""
    if not files or any(i.sha256 is None for i in inputs):
        return None
    return folder_sha256(files) if path.is_dir() else inputs[0].sha256


def _identity(path: Path, sha256: str | None, inputs: list[QuarantinedFile]) -> str:
    """The entry's key: the content's SHA-256; without one (a link, a missing or huge input), of what is known."""
    if sha256:
        return sha256
    known = "\0".join([str(path), "link" if path.is_symlink() else "", *(f"{i.name}:{i.size}" for i in inputs)])
    return hashlib.sha256(known.encode("utf-8", errors="surrogateescape")).hexdigest()


def _copy(store: Store, prefix: str, index: int, file: Path, entry: QuarantinedFile) -> QuarantinedFile:
    key = f"{prefix}input/{key_name(index, file.name)}"
    if not store.exists(key):  # a retry of the same input: already kept
        store.put_file(key, file, content_type="application/octet-stream")
    return entry.model_copy(update={"key": key})


def _earlier(store: Store, prefix: str) -> QuarantineReason | None:
    try:
        return QuarantineReason.model_validate_json(store.get_bytes(prefix + "reason.json"))
    except (ObjectNotFound, ValidationError, ValueError):
        return None


def refuse(store: Store, path: Path, refusal: InputRefused, *, sha256: str | None = None,
           duration_s: float | None = None, max_copy_bytes: int = MAX_COPY_BYTES) -> Outcome:
    """Quarantine a refused input and describe it as the run's outcome for that input."""
    where = quarantine(store, path, code=refusal.code, message=refusal.message, step="capture", sha256=sha256,
                       max_copy_bytes=max_copy_bytes)
    return Outcome(input=safe_name(str(path)), status="refused", reason=Reason(code=refusal.code, message=refusal.message),
                   quarantine=store.url_for(where + "reason.json"), duration_s=duration_s)


def refuse_or_fail(store: Store, path: Path, refusal: InputRefused, *, sha256: str | None = None,
                   duration_s: float | None = None, max_copy_bytes: int = MAX_COPY_BYTES) -> Outcome:
    """:func:`refuse`, or, when the quarantine cannot be written (a full disk, a store gone), a ``failed`` outcome
    that names both the refusal and why it was not kept: the input is left where it was, and a later run refuses
    it again. Without this the storage error would hide the refusal (an untyped ``processing_failed``)."""
    try:
        return refuse(store, path, refusal, sha256=sha256, duration_s=duration_s, max_copy_bytes=max_copy_bytes)
    except (StorageError, OSError) as exc:
        full = no_space(exc)
        outcome = failed(str(path), exc, f"refused ({refusal.code}: {refusal.message}) but not quarantined:"
                                         f" {full or _first_line(exc)}", code=NO_SPACE if full else None)
        return outcome.model_copy(update={"duration_s": duration_s})


def failed(item: str, exc: BaseException, message: str | None = None, code: ReasonCode | str | None = None) -> Outcome:
    """The outcome of a dossier that failed for a reason other than its input: the error's first line."""
    full = None if message else no_space(exc)
    if full:
        message, code = full, NO_SPACE
    return Outcome(input=safe_name(item), status="failed",
                   reason=Reason(code=code or reason_code(exc), message=message or _first_line(exc)))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
