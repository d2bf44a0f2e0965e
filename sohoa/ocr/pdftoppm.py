"""The one place that runs pdftoppm (poppler): capture renders with it the PDF pages that are not one image.

Like sohoa/ocr/tesseract.py for tesseract: the program is found once per call, a missing one is
OcrError ``engine_missing`` in one line (the dossier fails with that code, no traceback), and its
version, which enters the capture cache key of PDFs, is asked once per process. A page that
renders for longer than the page time limit is OcrError ``page_timeout``.
"""

from __future__ import annotations

import errno
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from sohoa.kernel.errors import OcrError

PROGRAM = "pdftoppm"


class RenderFailed(ValueError):
    """pdftoppm could not render the page: the PDF is at fault (its first complaint is the message)."""


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


def render(pdf: Path, number: int, dpi: int, out_base: Path, *, timeout: float, cmd: str = PROGRAM) -> Path:
    """Page ``number`` (1-based) of ``pdf`` as an RGB PNG at ``dpi``: ``out_base``.png."""
    args = [str(resolve(cmd)), "-r", str(dpi), "-f", str(number), "-l", str(number), "-png", "-singlefile",
            str(pdf), str(out_base)]
    try:
        done = subprocess.run(args, capture_output=True, text=True, errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired:
        raise OcrError("page_timeout", f"pdftoppm timed out after {timeout:g} s on page {number}") from None
    out = out_base.with_suffix(".png")
    if done.returncode == 2:  # "error opening an output file": our side, not the PDF's
        raise OSError(errno.EIO, f"pdftoppm could not write its output: {_complaint(done.stderr)}", str(out))
    if done.returncode != 0 or not out.is_file():
        raise RenderFailed(_complaint(done.stderr) or f"pdftoppm exited with status {done.returncode}")
    return out


def _complaint(stderr: str) -> str:
    """The first line pdftoppm wrote, without the warnings it prints for every damaged object."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if not line.startswith("Syntax Warning")]
    return (errors or lines or [""])[0][:300]
