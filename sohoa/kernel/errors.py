"""Typed refusals and exit codes.

A refusal is an expected outcome for bad input: it carries a stable machine-readable ``code``
(written to the quarantine reason object) and a one-line human message. Anything else that
escapes a step is a failure of the system, not of the input.
"""

from __future__ import annotations

import enum
import errno
import re


class ExitCode(enum.IntEnum):
    """Exit codes of the ``sohoa`` commands (documented in README)."""

    ok = 0  # every input archived (whatever its verification status)
    usage = 2  # bad command line or settings
    refused = 3  # at least one input refused and quarantined; others archived
    failed = 4  # at least one dossier failed (storage, OCR engine, ...)
    below_target = 5  # sohoa eval: a --require not met; sohoa train: too little data to train
    integrity = 6  # sohoa check: the archive has a problem (tampered, missing, orphan, incomplete)
    interrupted = 130


class InputRefused(Exception):
    """Bad input: ends in quarantine with ``code`` as reason, never a traceback."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class OcrError(RuntimeError):
    """The OCR engine failed: ``code`` is engine_missing, language_missing, page_timeout or engine_failed."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


NO_SPACE = "no_space"  # the code of a failure caused by a full disk: the input is fine, free space and run again


def no_space(exc: BaseException) -> str | None:
    """A one-line message when ``exc`` comes from a full disk (ENOSPC anywhere in its chain), else None.

    A write can fail with ENOSPC in many places (the work store, the temporary files of capture, OCR
    and archiving, pikepdf, the S3 client's downloads); they are told apart once, where a failure
    becomes an outcome. ``raise ... from None`` keeps the OSError as ``__context__``."""
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            said = (str(exc).strip().splitlines() or [""])[0]
            if current is not exc and "No space left on device" in said and "<_io." not in said:
                return said  # e.g. the store's "cannot write temp file for PATH: No space left on device"
            name = str(current.filename or "")
            name = (re.search(r"name='([^']*)'", name) or [None, name])[1]  # pikepdf: the repr of a file object
            return f"no space left on device{f' writing {name}' if name else ''}"
        current = current.__cause__ or current.__context__
    return None
