"""Typed refusals and exit codes.

A refusal is an expected outcome for bad input: it carries a stable machine-readable ``code``
(written to the quarantine reason object) and a one-line human message. Anything else that
escapes a step is a failure of the system, not of the input.
"""

from __future__ import annotations

import enum


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
