"""The one place that runs pdftoppm (poppler): capture renders with it the PDF pages that are not one image.

Like sohoa/ocr/tesseract.py for tesseract: the program is found once per call, a missing one is
OcrError ``engine_missing`` in one line (the dossier fails with that code, no traceback), and its
version, which enters the capture cache key of PDFs, is asked once per process. A page that
renders for longer than the page time limit is OcrError ``page_timeout``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
from functools import lru_cache
from pathlib import Path

from sohoa.kernel.errors import OcrError

PROGRAM = "pdftoppm"


class RenderFailed(ValueError):
    """pdftoppm could not render the page: the PDF is at fault (its first complaint is the message)."""


class OutOfMemory(RenderFailed):
    """pdftoppm ran out of its address-space limit: the page is too complex to render within bounds."""


def resolve(cmd: str = PROGRAM) -> Path:
    found = shutil.which(cmd)
    if not found:
        raise OcrError("engine_missing", f"pdftoppm not found ({cmd!r}); install poppler-utils")
    return Path(found)


@lru_cache(maxsize=4)
def _version(binary: Path) -> str:
    out = subprocess.run([str(binary), "-v"], capture_output=True, text=True, timeout=30)
    lines = (out.stderr or out.stdout).strip().splitlines()  # it prints its version on stderr
    return lines[0].strip() if lines else "pdftoppm (version unknown)"


def version(cmd: str = PROGRAM) -> str:
    """``pdftoppm version 22.12.0``: one process per program file and process, not per dossier."""
    return _version(resolve(cmd))


def version_or_none(cmd: str = PROGRAM) -> str | None:
    """The version, or None without the program: a PDF of scanned pages is captured without it."""
    try:
        return version(cmd)
    except OcrError:
        return None


def render(pdf: Path, number: int, dpi: int, out_base: Path, *, timeout: float, memory_bytes: int | None = None,
           cmd: str = PROGRAM) -> Path:
    """Page ``number`` (1-based) of ``pdf`` as an RGB PNG at ``dpi``: ``out_base``.png.

    pdftoppm runs in its own process group with at most ``memory_bytes`` of address space (``prlimit``): a page
    of 2 million nested ``q`` took it past 24 GB, and under a 1 GB limit it stops in 3 s (``OutOfMemory``). At
    the page time limit the whole group is killed: a child that kept the output pipes open no longer blocks
    the wait (``OcrError`` ``page_timeout``)."""
    args = [str(resolve(cmd)), "-r", str(dpi), "-f", str(number), "-l", str(number), "-png", "-singlefile",
            str(pdf), str(out_base)]
    limiter = shutil.which("prlimit") if memory_bytes else None
    if limiter:
        args = [limiter, f"--as={memory_bytes}", "--", *args]
    returncode, stderr = _run(args, timeout, number)
    out = out_base.with_suffix(".png")
    if returncode == 2:  # "error opening an output file": our side, not the PDF's
        raise OSError(errno.EIO, f"pdftoppm could not write its output: {_complaint(stderr)}", str(out))
    if memory_bytes and (returncode == -signal.SIGABRT or "bad_alloc" in stderr or "Out of memory" in stderr):
        raise OutOfMemory(f"rendering needs more than {memory_bytes >> 20} MB")
    if returncode != 0 or not out.is_file():
        raise RenderFailed(_complaint(stderr) or f"pdftoppm exited with status {returncode}")
    return out


def _run(args: list[str], timeout: float, number: int) -> tuple[int, str]:
    """(exit status, stderr) of the program, its whole process group killed past ``timeout`` seconds."""
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        _out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise OcrError("page_timeout", f"pdftoppm timed out after {timeout:g} s on page {number}") from None
    return process.returncode, err.decode("utf-8", errors="replace")


def _complaint(stderr: str) -> str:
    """The first line pdftoppm wrote, without the warnings it prints for every damaged object."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if not line.startswith("Syntax Warning")]
    return (errors or lines or [""])[0][:300]
