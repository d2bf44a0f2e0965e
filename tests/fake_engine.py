"""A fake OCR engine: the OCR step (and everything after it) without Tesseract.

It reads page ``n`` as the text it was given for ``n`` (``"Trang n"`` when none): one word per
white-space-separated token, laid out left to right on a grid, one line per line of the text,
with a fixed confidence, and a real one-page text-only PDF layer (pikepdf) of the same words,
so that the searchable PDF carries the fake's text. Its name and fingerprint are its own: its
cache keys never meet Tesseract's.

    from tests.fake_engine import FakeEngine, installed

    with installed(FakeEngine({1: "ĐĂNG KÝ KHAI SINH"})) as fake:
        result = ocr.run_ocr(captured, store, settings, ocr.ocr_key(captured.key, settings))
    assert fake.reads == [(1, 0)]

or take the ``fake_engine`` fixture (``from tests.fake_engine import fake_engine``), and
``forbid_tesseract(monkeypatch, tmp_path)`` to make any use of Tesseract fail the test.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import pikepdf
import pytest

from sohoa.kernel.errors import OcrError
from sohoa.kernel.models import Word
from sohoa.kernel.settings import Settings
from sohoa.ocr import engines, libtesseract
from sohoa.ocr.base import PageReading, PageToRead, TextLine
from sohoa.ocr.normalize import OcrImage

# the identity ToUnicode map of tesseract's own text layers: each two-byte code is a UTF-16 code unit
_TO_UNICODE = b"""/CIDInit /ProcSet findresource begin 12 dict begin begincmap
/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def
/CMapName /Adobe-Identity-UCS def /CMapType 2 def
1 begincodespacerange <0000> <FFFF> endcodespacerange
1 beginbfrange <0000> <FFFF> <0000> endbfrange
endcmap CMapName currentdict /CMap defineresource pop end end
"""


class FakeEngine:
    """Reads each page as a known text. ``errors`` makes a page's read fail (a timeout, say);
    ``reads`` records every pass as (page, rotation)."""

    def __init__(self, texts: Mapping[int, str] | None = None, *, name: str = "fake", conf: float = 95.0,
                 version: str = "fake-ocr 1.0", errors: Mapping[int, OcrError] | None = None):
        self.name, self.conf, self.version = name, conf, version
        self.texts = dict(texts or {})
        self.errors = dict(errors or {})
        self.reads: list[tuple[int, int]] = []
        self.warmed = 0
        self._lock = threading.Lock()

    @classmethod
    def from_truth(cls, truth, **options) -> FakeEngine:
        """Reads every page of a generated dossier (sohoa_dev.synth) exactly as its truth says."""
        return cls({page.n: page.text for page in truth.pages}, **options)

    def text_of(self, n: int) -> str:
        return self.texts.get(n, f"Trang {n}")

    def available(self, settings: Settings) -> bool:
        return True

    def fingerprint(self, settings: Settings) -> dict:
        """Changes with what it would read: two fakes with other texts never share a cache entry."""
        said = json.dumps([self.version, self.conf, sorted(self.texts.items())], ensure_ascii=False)
        return {"fake": hashlib.sha256(said.encode()).hexdigest()[:16]}

    def check(self, settings: Settings) -> str:
        return self.version

    def warm_up(self, settings: Settings) -> None:
        with self._lock:
            self.warmed += 1

    def read(self, page: PageToRead, settings: Settings, timeout_s: float) -> PageReading:
        with self._lock:
            self.reads.append((page.n, page.rotation % 360))
        if page.n in self.errors:
            raise self.errors[page.n]
        image = page.geometry()
        words = lay_out(self.text_of(page.n), image, self.conf)
        layer = text_layer(page.base.with_suffix(".pdf"), image, words)
        return PageReading(image=image, text=self.text_of(page.n).strip(), words=words, lines=_lines(words), layer=layer)


def lay_out(text: str, image: OcrImage, conf: float) -> list[Word]:
    """Words on a grid of the image read: a line of text per line, an em per character."""
    size = max(8, round(image.dpi / 7.5))  # 40 px (about 10 pt) at 300 dpi
    words: list[Word] = []
    for line, tokens in enumerate([row.split() for row in text.splitlines() if row.split()]):
        left = size
        for token in tokens:
            box = (left, size + line * 2 * size, len(token) * size // 2, size)
            words.append(Word(text=token, box=box, conf=conf, line=line))
            left += box[2] + size // 3  # a third of an em: a space to text extraction, not a column
    return words


def _lines(words: list[Word]) -> list[TextLine]:
    lines: list[TextLine] = []
    for line in sorted({w.line for w in words}):
        boxes = [w.box for w in words if w.line == line]
        right = max(b[0] + b[2] for b in boxes)
        lines.append(TextLine(id=line, block=0, box=(boxes[0][0], boxes[0][1], right - boxes[0][0], boxes[0][3])))
    return lines


def text_layer(path: Path, image: OcrImage, words: list[Word]) -> Path:
    """A one-page PDF of invisible text over the image read, like tesseract's ``textonly_pdf``."""
    scale = 72 / image.dpi
    with pikepdf.new() as pdf:
        page = pdf.add_blank_page(page_size=(image.width * scale, image.height * scale))
        page.obj.Resources = pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=_font(pdf)))
        shown = [_show(word, scale, image.height) for word in words]
        page.obj.Contents = pdf.make_stream(" ".join(["BT 3 Tr", *shown, "ET"]).encode())  # 3 Tr: invisible
        pdf.save(path)
    return path


def _show(word: Word, scale: float, height: int) -> str:
    """The operators that show one word at its box (PDF points, y up), as UTF-16 codes."""
    left, top, _, size = word.box
    return (f"/F1 {size * scale:.2f} Tf 1 0 0 1 {left * scale:.2f} {(height - top - size) * scale:.2f} Tm "
            f"<{word.text.encode('utf-16-be').hex()}> Tj")


def _font(pdf: pikepdf.Pdf) -> pikepdf.Object:
    """A Type0 font with Identity-H codes (what sohoa/ocr/pdf.py normalizes) and half-em glyphs."""
    descendant = pikepdf.Dictionary(
        Type=pikepdf.Name.Font, Subtype=pikepdf.Name.CIDFontType2, BaseFont=pikepdf.Name.FakeGlyphLess, DW=500,
        CIDSystemInfo=pikepdf.Dictionary(Registry="Adobe", Ordering="Identity", Supplement=0),
        CIDToGIDMap=pikepdf.Name.Identity,
        FontDescriptor=pdf.make_indirect(pikepdf.Dictionary(
            Type=pikepdf.Name.FontDescriptor, FontName=pikepdf.Name.FakeGlyphLess, Flags=5,
            FontBBox=[0, 0, 500, 1000], ItalicAngle=0, Ascent=1000, Descent=0, CapHeight=1000, StemV=80)))
    return pdf.make_indirect(pikepdf.Dictionary(
        Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type0, BaseFont=pikepdf.Name.FakeGlyphLess,
        Encoding=pikepdf.Name("/Identity-H"), DescendantFonts=[pdf.make_indirect(descendant)],
        ToUnicode=pdf.make_indirect(pikepdf.Stream(pdf, _TO_UNICODE))))


@contextlib.contextmanager
def installed(engine: FakeEngine | None = None) -> Iterator[FakeEngine]:
    """Within the block, the OCR step reads with ``engine`` (a new FakeEngine by default), whatever the settings."""
    with engines.use(engine or FakeEngine()) as used:
        yield used


@pytest.fixture
def fake_engine() -> Iterator[FakeEngine]:
    """A FakeEngine installed for the test (reads ``"Trang n"``; set ``fake_engine.texts`` to change that)."""
    with installed() as engine:
        yield engine


def failing_tesseract(folder: Path, also: str = "") -> Path:
    """``folder`` holding a ``tesseract`` that says it is not available and exits 99 (after running ``also``):
    put first on the PATH, it stands in for the real program."""
    folder.mkdir(parents=True, exist_ok=True)
    program = folder / "tesseract"
    program.write_text(f'#!/bin/sh\n{also}\necho "tesseract is not available here (a test without Tesseract)" >&2\nexit 99\n')
    program.chmod(0o755)
    return folder


def forbid_tesseract(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Make any use of Tesseract fail: the library does not load, and the program found first on the
    PATH fails, leaving the returned marker file behind when it was started."""
    marker = tmp_path / "tesseract-was-started"
    folder = failing_tesseract(tmp_path / "no-tesseract", f'touch "{marker}"')
    monkeypatch.setenv("PATH", f"{folder}:{os.environ.get('PATH', '')}")

    def no_library():
        raise AssertionError("libtesseract was loaded")

    monkeypatch.setattr(libtesseract, "load", no_library)
    monkeypatch.setattr(libtesseract, "Engine", lambda *args, **kwargs: no_library())
    return marker
