"""A page's invisible text layer written from its words, in the reading order of sohoa/ocr/reading_order.py.

Tesseract's PDF renderer writes its own line order, so a two-column header it glued comes out of
``pdftotext -raw`` glued. When the reading order changes a page, the step writes the layer anew
from the ordered lines, the way tesseract's pdfrenderer does: its glyphless font (``pdf.ttf`` in
the tessdata folder, every code drawn by one blank glyph, Identity-H codes that are UTF-16 code
units, an identity ToUnicode map), invisible text (``3 Tr``), one BT block per line, each word
placed at its box and stretched to its width (``Tz``). Measured: 5-9 ms for a 250-550-word page
(pikepdf), written only for pages whose order changed.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Sequence
from pathlib import Path

import pikepdf

from sohoa.kernel.models import Word
from sohoa.ocr import normalize, tesseract

FONT_NAMES = ("pdf.ttf",)
FALLBACK_FONT = Path("/usr/share/tesseract-ocr/5/tessdata/pdf.ttf")
GLYPH_WIDTH = 0.5  # the glyphless font's advance, in ems (DW 500)
MIN_CHAR = 0.35  # line heights a character takes at least: glyphs drawn on one spot are dropped as fake bold
WORD_GAP = 0.2  # line heights left free at a word's end: a word break for pdftotext (0.1), not a column
_TO_UNICODE = b"""/CIDInit /ProcSet findresource begin
12 dict begin
begincmap
/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def
/CMapName /Adobe-Identify-UCS def
/CMapType 2 def
1 begincodespacerange
<0000> <FFFF>
endcodespacerange
1 beginbfrange
<0000> <FFFF> <0000>
endbfrange
endcmap
CMapName currentdict /CMap defineresource pop
end
end
"""


@functools.cache
def font_file() -> bytes | None:
    """Tesseract's glyphless TrueType font (572 bytes), or None where tesseract's data is not installed."""
    folder = tesseract.tessdata_dir()
    candidates = [folder / name for name in FONT_NAMES] if folder is not None else []
    for path in [*candidates, FALLBACK_FONT]:
        if path.exists():
            return path.read_bytes()
    return None


def available() -> bool:
    return font_file() is not None


@functools.cache
def _cid_to_gid() -> bytes:
    """Every CID drawn by glyph 1, compressed once (128 KiB raw, 210 bytes deflated)."""
    return zlib.compress(b"\x00\x01" * 65536, 9)


def _font(pdf: pikepdf.Pdf) -> pikepdf.Object:
    data = font_file()
    if data is None:
        raise FileNotFoundError("tesseract's pdf.ttf not found: check text_layer.available() first")
    program = pdf.make_stream(data)
    program.Length1 = len(data)
    descriptor = pikepdf.Dictionary(
        Type=pikepdf.Name.FontDescriptor, FontName=pikepdf.Name.GlyphLessFont, Flags=5,
        FontBBox=pikepdf.Array([0, 0, 500, 1000]), ItalicAngle=0, Ascent=1000, Descent=-1, CapHeight=1000,
        StemV=80, FontFile2=program)
    gid_map = pikepdf.Stream(pdf, _cid_to_gid())
    gid_map.Filter = pikepdf.Name.FlateDecode
    descendant = pikepdf.Dictionary(
        Type=pikepdf.Name.Font, Subtype=pikepdf.Name.CIDFontType2, BaseFont=pikepdf.Name.GlyphLessFont,
        CIDSystemInfo=pikepdf.Dictionary(Registry="Adobe", Ordering="Identity", Supplement=0),
        FontDescriptor=pdf.make_indirect(descriptor), DW=500, CIDToGIDMap=pdf.make_indirect(gid_map))
    return pdf.make_indirect(pikepdf.Dictionary(
        Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type0, BaseFont=pikepdf.Name.GlyphLessFont,
        Encoding=pikepdf.Name("/Identity-H"), DescendantFonts=pikepdf.Array([pdf.make_indirect(descendant)]),
        ToUnicode=pdf.make_stream(_TO_UNICODE)))


def _codes(text: str) -> str:
    return text.encode("utf-16-be").hex().upper()


def _line(words: Sequence[Word], scale: float, height: int) -> str:
    """One BT block: each word at its box on the line's bottom, its glyphs stretched (``Tz``) to the box less
    ``WORD_GAP`` line heights, then a space. pdftotext skips space glyphs and breaks words where glyphs lie
    apart (over 0.1 font size) and starts a new block where they lie far apart. So boxes that touch or
    overlap still give two words (a box starting inside the one before is moved after it, each character
    given ``MIN_CHAR``), and a normal gap stays a word space."""
    top, bottom = min(w.box[1] for w in words), max(w.box[1] + w.box[3] for w in words)
    size = max(1.0, (bottom - top) * scale)
    shown = []
    for index, (word, (left, span)) in enumerate(zip(words, _spans(words, bottom - top))):
        last = index == len(words) - 1
        stretch = max(1.0, 100 * span * scale / (max(1, len(word.text)) * GLYPH_WIDTH * size))
        shown.append(f"1 0 0 1 {left * scale:.2f} {(height - bottom) * scale:.2f} Tm {stretch:.3f} Tz "
                     f"[<{_codes(word.text if last else word.text + ' ')}>] TJ")
    return f"BT 3 Tr /F0 {size:.2f} Tf " + " ".join(shown) + " ET"


def _spans(words: Sequence[Word], line_height: int) -> list[tuple[float, float]]:
    """Where each word's glyphs go, in pixels: (left, width), no word starting inside the one before."""
    spans, end = [], 0.0
    for index, word in enumerate(words):
        left = max(word.box[0], end)
        end = max(word.box[0] + word.box[2], left + len(word.text) * MIN_CHAR * line_height)
        pad = 0 if index == len(words) - 1 else min(WORD_GAP * line_height, (end - left) / 2)
        spans.append((left, max(1.0, end - left - pad)))
    return spans


def write(path: Path, image: normalize.OcrImage, lines: Sequence[Sequence[Word]]) -> Path:
    """A one-page PDF of invisible text over ``image`` (boxes in its pixels), one BT block per line in order."""
    scale = 72 / image.dpi
    with pikepdf.new() as pdf:
        page = pdf.add_blank_page(page_size=(image.width * scale, image.height * scale))
        page.obj.Resources = pikepdf.Dictionary(Font=pikepdf.Dictionary(F0=_font(pdf)))
        content = "\n".join(_line(words, scale, image.height) for words in lines if words)
        page.obj.Contents = pdf.make_stream(content.encode())
        pdf.save(path, compress_streams=True)
    return path
