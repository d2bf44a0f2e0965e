"""Typed refusals, failures and exit codes.

A refusal is an expected outcome for bad input: it carries a stable machine-readable ``code``
(a :class:`ReasonCode`, written to the quarantine reason object) and a one-line human message.
Every error the command line expects derives from :class:`SohoaError` and carries the exit code it
means, so ``sohoa.cli.main`` maps them in one place. Anything else that escapes a step is a failure
of the system, not of the input.
"""

from __future__ import annotations

import enum
import errno
import re
from typing import Any, ClassVar


class ExitCode(enum.IntEnum):
    """Exit codes of the ``sohoa`` commands (documented in README, "Exit codes").

    The rule between 2 and 4: ``usage`` is anything wrong with what was asked (the command line,
    the settings, a store URL that cannot be parsed), found before anything is contacted;
    ``failed`` is work that could not be done as asked, whatever the command: a store that cannot
    be reached or used (``sohoa.storage.StorageError``), a missing OCR engine, a failed dossier."""

    ok = 0  # every input archived (whatever its verification status); other commands: done
    unhealthy = 1  # sohoa watch --status: no scan within 3 poll intervals (1 is "unhealthy" to Docker's HEALTHCHECK)
    usage = 2  # bad command line, settings or store URL; unknown step, dossier, type or metric: nothing done
    refused = 3  # at least one input refused and quarantined; others archived
    failed = 4  # the work could not be done: a store unreachable or unusable, the OCR engine, a dossier failed
    below_target = 5  # sohoa eval: a --require not met; sohoa train: too little data to train
    integrity = 6  # sohoa check: the archive has a problem (tampered, missing, orphan, incomplete)
    interrupted = 130  # Ctrl-C (128 + SIGINT)


class ReasonCode(enum.StrEnum):
    """Every machine-readable code of a refused or failed input (``Reason.code``, quarantine ``reason.json``).

    A StrEnum: each member equals its string, so JSON, manifests and reason objects are unchanged; a
    code that is not listed here raises where it is made instead of becoming a new code nobody reads."""

    # refusals: the input is bad (README, "refusal code")
    not_found = "not_found"
    empty_file = "empty_file"
    unsupported_type = "unsupported_type"
    extension_mismatch = "extension_mismatch"
    encrypted_pdf = "encrypted_pdf"
    corrupt_file = "corrupt_file"
    no_pages = "no_pages"
    too_large = "too_large"
    too_many_pages = "too_many_pages"
    too_many_pixels = "too_many_pixels"
    bad_name = "bad_name"
    unsafe_link = "unsafe_link"
    too_complex = "too_complex"  # a page whose content or image inflates past the decompression limit (a bomb)
    superseded = "superseded"  # an inbox drop written over before its run read it: the new version is a drop of its own
    # failures: the input is fine, the system could not process it
    engine_missing = "engine_missing"
    language_missing = "language_missing"
    page_timeout = "page_timeout"
    engine_failed = "engine_failed"
    processing_failed = "processing_failed"  # any other failure (storage, orchestrator, a bug)
    no_space = "no_space"  # a full disk: free space and run again
    storage_unavailable = "storage_unavailable"  # a store did not answer within its timeouts and retries
    tampered_original = "tampered_original"  # an archived original no longer matches its recorded SHA-256
    never_started = "never_started"  # an inbox drop whose flow run ended without running, after every resubmission

    @classmethod
    def of(cls, code: Any) -> ReasonCode:
        """``code`` as a member; TypeError for a non-string, ValueError naming the known codes for a typo."""
        if not isinstance(code, str):
            raise TypeError(f"a reason code is a string, not {type(code).__name__} {code!r}")
        try:
            return cls(code)
        except ValueError:
            raise ValueError(f"unknown reason code {code!r}; codes are {', '.join(cls)}"
                             " (add new ones to ReasonCode in sohoa/kernel/errors.py)") from None

    @property
    def is_refusal(self) -> bool:
        return self in REFUSALS


REFUSALS = frozenset({  # the input is bad: InputRefused, exit 3
    ReasonCode.not_found, ReasonCode.empty_file, ReasonCode.unsupported_type, ReasonCode.extension_mismatch,
    ReasonCode.encrypted_pdf, ReasonCode.corrupt_file, ReasonCode.no_pages, ReasonCode.too_large,
    ReasonCode.too_many_pages, ReasonCode.too_many_pixels, ReasonCode.bad_name, ReasonCode.unsafe_link,
    ReasonCode.too_complex, ReasonCode.superseded,
})
FAILURES = frozenset(ReasonCode) - REFUSALS  # the input is fine: a failed dossier, exit 4
NO_SPACE = ReasonCode.no_space  # the code of a failure caused by a full disk: the input is fine, free space and run again


class SohoaError(Exception):
    """Base of the errors the command line expects: ``exit_code`` is what it means for the command,
    ``message`` its one line (printed as ``sohoa: <message>``, never a traceback). By default the work
    could not be done (``ExitCode.failed``)."""

    exit_code: ClassVar[ExitCode] = ExitCode.failed

    @property
    def message(self) -> str:
        text = str(self.args[0]) if self.args else ""
        return (text.strip().splitlines() or [type(self).__name__])[0]


class UsageError(SohoaError, ValueError):
    """What was asked cannot be done as written: a bad option, an unknown dossier, type or metric."""

    exit_code = ExitCode.usage


class ConfigurationError(UsageError):
    """Bad settings or store URL, found before anything is contacted."""

    def __init__(self, message: str):
        super().__init__(f"configuration error: {message}")


class BelowTarget(SohoaError, ValueError):
    """A measured quality or quantity is below what is required (``sohoa eval --require``, ``sohoa train``)."""

    exit_code = ExitCode.below_target


class InputRefused(SohoaError):
    """Bad input: ends in quarantine with ``code`` (a refusal ReasonCode) as reason, never a traceback."""

    exit_code = ExitCode.refused

    def __init__(self, code: ReasonCode | str, message: str):
        super().__init__(message)
        self.code = ReasonCode.of(code)
        if not self.code.is_refusal:
            raise ValueError(f"{self.code!s} is a failure code, not a refusal: raise another error")

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __reduce__(self) -> tuple[Any, ...]:  # pickled by Prefect with a task's state: both arguments
        return type(self), (self.code, self.args[0])


class OcrError(SohoaError, RuntimeError):
    """The OCR engine failed: ``code`` is engine_missing, language_missing, page_timeout or engine_failed."""

    def __init__(self, code: ReasonCode | str, message: str):
        super().__init__(message)
        self.code = ReasonCode.of(code)
        if self.code.is_refusal:
            raise ValueError(f"{self.code!s} is a refusal code, not a failure: raise InputRefused")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.code, self.args[0])


def reason_code(exc: BaseException, default: ReasonCode = ReasonCode.processing_failed) -> ReasonCode:
    """The reason code an error carries (InputRefused, OcrError), else ``default``: other libraries'
    ``.code`` attributes (HTTP statuses, S3 error names, SystemExit) are not reason codes."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, ReasonCode) else default


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
