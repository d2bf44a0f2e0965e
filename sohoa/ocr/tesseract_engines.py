"""Tesseract behind the engine interface (sohoa/ocr/base.py): the ``library`` and ``cli`` engines.

Both read a page in one pass into plain text, TSV and a text-only PDF; this module turns the
TSV into words and lines, so that nothing past it sees a Tesseract format. ``library`` keeps
warm engines in the process (sohoa/ocr/libtesseract.py); ``cli`` starts the tesseract program
per page (sohoa/ocr/tesseract.py) within a process-wide slot limit. They give the same reading
of the same pixels (tests/test_engines.py); their cache keys differ by ``runner``.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import cv2

from sohoa.kernel.models import Word
from sohoa.kernel.settings import Settings
from sohoa.ocr import libtesseract, normalize, tesseract
from sohoa.ocr.base import PageReading, PageToRead, TextLine
from sohoa.ocr.reading_order import union


def _rows(tsv: str) -> list[list[str]]:
    """Word rows (level 5) with a text and a confidence; Tesseract writes -1 for non-words."""
    rows = [row.split("\t") for row in tsv.splitlines()[1:]]
    return [cols for cols in rows if len(cols) >= 12 and cols[0] == "5" and cols[11].strip() and float(cols[10]) >= 0]


def read_tsv(tsv: str) -> tuple[list[Word], list[TextLine]]:
    """Words with boxes and confidences, numbered by line in reading order, and those lines."""
    words: list[Word] = []
    lines: dict[tuple[str, str, str], int] = {}
    blocks: dict[int, int] = {}  # line -> block
    block_ids: dict[str, int] = {}
    for cols in _rows(tsv):
        line = lines.setdefault((cols[2], cols[3], cols[4]), len(lines))
        blocks.setdefault(line, block_ids.setdefault(cols[2], len(block_ids)))
        box = (int(cols[6]), int(cols[7]), int(cols[8]), int(cols[9]))
        words.append(Word(text=cols[11].strip(), box=box, conf=round(float(cols[10]), 2), line=line))
    return words, [TextLine(id=line, block=block, box=union([w.box for w in words if w.line == line]))
                   for line, block in blocks.items()]


def parse_tsv(tsv: str) -> list[Word]:
    """Words only (see ``read_tsv``)."""
    return read_tsv(tsv)[0]


def reading(image: normalize.OcrImage, text: str, tsv: str, layer: Path) -> PageReading:
    """One Tesseract pass as a PageReading: NFC, and the eth Tesseract reads for Đ folded back."""
    words, lines = read_tsv(tesseract.normalize_text(tsv))
    return PageReading(image=image, text=tesseract.normalize_text(text).strip(), words=words, lines=lines, layer=layer)


def _languages_present(settings: Settings) -> None:
    missing = tesseract.missing_languages(settings.languages)
    if missing:
        raise tesseract.language_error(missing)


class LibraryEngine:
    """Warm engines in this process, shared by every dossier: ``jobs`` of them, each lent to one thread."""

    name = "library"

    def available(self, settings: Settings) -> bool:
        return libtesseract.available()

    def fingerprint(self, settings: Settings) -> str:
        """The shared library file and the language data (the program's, if the library file is not found)."""
        library = libtesseract.library_path()
        if library is None:
            return tesseract.engine_fingerprint(settings.tesseract_cmd, settings.languages)
        return tesseract.library_fingerprint(library, settings.languages)

    def check(self, settings: Settings) -> str:
        _languages_present(settings)
        return libtesseract.version()

    def warm_up(self, settings: Settings) -> None:
        if not tesseract.missing_languages(settings.languages):
            self._pool(settings).warm()

    def read(self, page: PageToRead, settings: Settings, timeout_s: float) -> PageReading:
        image, gray = page.prepare()  # before taking an engine: decoding overlaps the engines' work
        with self._pool(settings).engine() as engine:
            text, tsv, layer = engine.read(gray, image.dpi, page.base, timeout_s)
        return reading(image, text, tsv, layer)

    @staticmethod
    def _pool(settings: Settings) -> libtesseract.EnginePool:
        folder = tesseract.tessdata_dir()
        if folder is None:
            raise tesseract.language_error(settings.languages.split("+"))
        return libtesseract.pool(folder, settings.languages, settings.psm, settings.jobs)


class CliEngine:
    """The tesseract program, one process per page, at most ``jobs`` at once in this process."""

    name = "cli"

    def available(self, settings: Settings) -> bool:
        return shutil.which(settings.tesseract_cmd) is not None

    def fingerprint(self, settings: Settings) -> str:
        return tesseract.engine_fingerprint(settings.tesseract_cmd, settings.languages)

    def check(self, settings: Settings) -> str:
        tesseract.check_languages(settings.tesseract_cmd, settings.languages)
        return tesseract.version(settings.tesseract_cmd)

    def warm_up(self, settings: Settings) -> None:
        """Nothing to load: each page starts its own process."""

    def read(self, page: PageToRead, settings: Settings, timeout_s: float) -> PageReading:
        image, path = _ocr_file(page)
        try:
            with tesseract.slots(settings.jobs):
                out = tesseract.ocr_page(path, page.base, cmd=settings.tesseract_cmd, languages=settings.languages,
                                         psm=settings.psm, dpi=image.dpi, timeout=timeout_s)
        finally:
            if path != page.source:
                path.unlink(missing_ok=True)
        return reading(image, out.text, out.tsv, out.pdf)


def _ocr_file(page: PageToRead) -> tuple[normalize.OcrImage, Path]:
    """The file the program reads: the stored image when it needs no copy, else the copy (its pixels
    are released on return, before the program starts)."""
    if not page.needs_copy():
        return page.as_stored(), page.source
    image, gray = page.prepare()
    path = page.base.with_suffix(".pgm")  # no compression to pay for a file tesseract reads once
    if not cv2.imwrite(str(path), gray):  # OpenCV only says False; a full disk is the usual reason
        full = shutil.disk_usage(path.parent).free < gray.nbytes
        raise OSError(errno.ENOSPC if full else errno.EIO, "cannot write the OCR copy", str(path))
    return image, path
