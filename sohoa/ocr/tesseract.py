"""The one place that runs the Tesseract program, and what both engines share.

Two engines read pages with the same library: the warm in-process one (sohoa/ocr/libtesseract.py,
the default) and this program, one process per page, kept for systems without the shared
library and as the process-isolated reference the benchmark measures against. Either way,
one thread per page (``OMP_THREAD_LIMIT=1``): on a busy machine OpenMP threads inside
tesseract cost more than they give, and pages parallelize perfectly. One pass per page writes
all three outputs we need: plain text, TSV words with boxes and confidences, and a text-only
PDF (the page's invisible text layer). Both stand behind the engine interface the OCR step uses
(sohoa/ocr/tesseract_engines.py, sohoa/ocr/base.py).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sohoa.kernel.errors import OcrError

_FOLD = str.maketrans({"\u00d0": "\u0110", "\u00f0": "\u0111"})  # Icelandic eth read for Vietnamese Đ/đ


def normalize_text(text: str) -> str:
    """NFC, with the eth that Tesseract confuses for Đ folded back."""
    return unicodedata.normalize("NFC", text).translate(_FOLD)


@dataclass(frozen=True)
class PageOutput:
    text: str
    tsv: str
    pdf: Path


def resolve(cmd: str) -> Path:
    found = shutil.which(cmd)
    if not found:
        raise OcrError("engine_missing", f"tesseract not found ({cmd!r}); install tesseract-ocr and tesseract-ocr-vie")
    return Path(found)


def tessdata_dir() -> Path | None:
    for candidate in (os.environ.get("TESSDATA_PREFIX"), "/usr/share/tesseract-ocr/5/tessdata",
                      "/usr/share/tesseract-ocr/4.00/tessdata", "/usr/local/share/tessdata"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@lru_cache(maxsize=8)
def _fingerprint(binary: Path, languages: str, tessdata: Path | None) -> str:
    parts = [f"{binary}:{binary.stat().st_size}:{binary.stat().st_mtime_ns}"]
    for lang in languages.split("+"):
        data = tessdata / f"{lang}.traineddata" if tessdata else None
        if data and data.exists():
            parts.append(f"{lang}:{data.stat().st_size}:{data.stat().st_mtime_ns}")
        else:
            parts.append(f"{lang}:missing")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def engine_fingerprint(cmd: str, languages: str) -> str:
    """Identity of the engine and its language data, from file metadata only.

    It enters the OCR cache key; it must not start a tesseract process, so that a fully cached
    rerun starts none.
    """
    return _fingerprint(resolve(cmd), languages, tessdata_dir())


def library_fingerprint(library: Path, languages: str) -> str:
    """The same identity for the in-process engine: the shared library file instead of the program."""
    return _fingerprint(library, languages, tessdata_dir())


def missing_languages(languages: str) -> list[str]:
    """Languages without a ``.traineddata`` file in the language data folder (no process started)."""
    folder = tessdata_dir()
    return [lang for lang in languages.split("+") if not (folder and (folder / f"{lang}.traineddata").is_file())]


def language_error(missing: list[str]) -> OcrError:
    return OcrError("language_missing", f"tesseract language data missing: {', '.join(missing)} (install tesseract-ocr-vie)")


@lru_cache(maxsize=4)
def version(cmd: str) -> str:
    out = subprocess.run([str(resolve(cmd)), "--version"], capture_output=True, text=True, timeout=30)
    return (out.stdout or out.stderr).splitlines()[0].strip()


@lru_cache(maxsize=8)
def check_languages(cmd: str, languages: str) -> None:
    """Once per process (not per dossier): the language data does not change under a running pipeline."""
    out = subprocess.run([str(resolve(cmd)), "--list-langs"], capture_output=True, text=True, timeout=30)
    have = set(out.stdout.split()[1:]) | set(out.stderr.split())
    missing = [lang for lang in languages.split("+") if lang not in have]
    if missing:
        raise language_error(missing)


_SLOTS: dict[int, threading.BoundedSemaphore] = {}
_SLOTS_LOCK = threading.Lock()


def slots(jobs: int) -> threading.BoundedSemaphore:
    """Process-wide limit on tesseract processes, shared by every dossier in flight."""
    with _SLOTS_LOCK:
        return _SLOTS.setdefault(jobs, threading.BoundedSemaphore(jobs))


def ocr_page(image: Path, out_base: Path, *, cmd: str, languages: str, psm: int, dpi: int, timeout: float) -> PageOutput:
    """Run tesseract once on one page image."""
    args = [str(resolve(cmd)), str(image), str(out_base), "-l", languages, "--psm", str(psm),
            "--dpi", str(dpi), "-c", "textonly_pdf=1", "txt", "tsv", "pdf"]
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise OcrError("page_timeout", f"tesseract timed out after {timeout:.0f} s on {image.name}") from None
    if done.returncode != 0:
        raise OcrError("engine_failed", f"tesseract failed on {image.name}: {done.stderr.strip()[-300:]}")
    text = out_base.with_suffix(".txt").read_text(encoding="utf-8")
    tsv = out_base.with_suffix(".tsv").read_text(encoding="utf-8")
    return PageOutput(text=text, tsv=tsv, pdf=out_base.with_suffix(".pdf"))
