"""Assemble the searchable PDF: each page image as scanned, under its invisible text layer.

JPEG pages are embedded as their own bytes (no re-encoding); other images are stored
losslessly (Flate). The text layer is the text-only PDF that tesseract wrote in the same
pass, laid over the page as a form XObject and scaled to the page size. Its strings are
normalized like the recorded text (NFC, the eth that Tesseract confuses for Đ folded back), so
that text extracted from the PDF is the text in the manifest.

PDF/A-2b is declared and, in the tests, checked by a validator (tests/test_searchable_pdf.py)
for every kind of page image capture hands over; a CMYK JPEG keeps its bytes and is declared in
an ICC-based CMYK colour space (an sRGB output intent does not cover DeviceCMYK).
"""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pikepdf
from PIL import Image

from sohoa.kernel.models import PageImage
from sohoa.ocr.tesseract import normalize_text

_COLORSPACES = {"L": "/DeviceGray", "1": "/DeviceGray", "RGB": "/DeviceRGB", "CMYK": "/DeviceCMYK"}


def _image_xobject(pdf: pikepdf.Pdf, path: Path, media_type: str, shared: dict[str, pikepdf.Object]) -> pikepdf.Stream:
    colorspace = None
    with Image.open(path) as image:  # the header only: a JPEG is embedded as its own bytes, never decoded
        if media_type == "image/jpeg" and image.mode in ("L", "RGB", "CMYK"):
            stream = pikepdf.Stream(pdf, path.read_bytes())
            stream.Filter = pikepdf.Name.DCTDecode
            mode = image.mode
            if mode == "CMYK":  # Adobe CMYK JPEGs are stored inverted
                stream.Decode = pikepdf.Array([1, 0] * 4)
                colorspace = _cmyk_colorspace(pdf, shared)
        else:
            if image.mode not in _COLORSPACES:
                image = image.convert("RGB")
            mode = image.mode
            stream = pikepdf.Stream(pdf, zlib.compress(image.tobytes(), 6))
            stream.Filter = pikepdf.Name.FlateDecode
        stream.Type = pikepdf.Name.XObject
        stream.Subtype = pikepdf.Name.Image
        stream.Width, stream.Height = image.size
        stream.ColorSpace = colorspace if mode == "CMYK" and colorspace is not None else pikepdf.Name(_COLORSPACES[mode])
        stream.BitsPerComponent = 1 if mode == "1" else 8
        return stream


# PDF/A-2b allows DeviceCMYK only under a CMYK output intent; ours is sRGB, so a CMYK JPEG (kept
# as its own bytes) is declared in an ICC-based CMYK space instead: Ghostscript's 5 kB PostScript
# CMYK profile (Debian libgs-common), which converts like a viewer's DeviceCMYK does.
CMYK_PROFILES = (Path("/usr/share/color/icc/ghostscript/ps_cmyk.icc"),)


def _cmyk_colorspace(pdf: pikepdf.Pdf, shared: dict[str, pikepdf.Object]) -> pikepdf.Object | None:
    """``[/ICCBased profile]``, made once per document (``shared``); None (DeviceCMYK) without a profile."""
    if "cmyk" not in shared:
        profile = next((p for p in CMYK_PROFILES if p.exists()), None)
        if profile is None:
            return None
        icc = pdf.make_indirect(pikepdf.Stream(pdf, profile.read_bytes()))
        icc.N = 4
        shared["cmyk"] = pdf.make_indirect(pikepdf.Array([pikepdf.Name.ICCBased, icc]))
    return shared["cmyk"]


_SHOW_TEXT = {"Tj", "TJ", "'", '"'}


def _normalized(operand: pikepdf.Object) -> pikepdf.Object | None:
    """The operand with its strings normalized like the recorded text, or None when nothing changes.

    The layer's font is Identity-H with an identity ToUnicode map: each two-byte code is a UTF-16 code unit.
    """
    if isinstance(operand, pikepdf.Array):
        items = [_normalized(item) for item in operand]
        if all(item is None for item in items):
            return None
        return pikepdf.Array([new if new is not None else old for old, new in zip(operand, items)])
    if not isinstance(operand, pikepdf.String):
        return None
    try:
        text = bytes(operand).decode("utf-16-be")
    except UnicodeDecodeError:
        return None
    fixed = normalize_text(text)
    return None if fixed == text else pikepdf.String(fixed.encode("utf-16-be"))


def _normalize_layer(layer: pikepdf.Pdf) -> None:
    """Normalize the text that tesseract's text-only page shows, in place (only where something changes)."""
    page = layer.pages[0]
    fonts = page.obj.get("/Resources", pikepdf.Dictionary()).get("/Font", pikepdf.Dictionary())
    if not fonts or any(font.get("/Encoding") != pikepdf.Name("/Identity-H") for _, font in fonts.items()):
        return  # not tesseract's GlyphLessFont layer: its codes are not UTF-16, leave it alone
    changed = False
    instructions = []
    for instruction in pikepdf.parse_content_stream(page):
        if isinstance(instruction, pikepdf.ContentStreamInstruction) and str(instruction.operator) in _SHOW_TEXT:
            fixed = [_normalized(operand) for operand in instruction.operands]
            if any(new is not None for new in fixed):
                changed = True
                instruction = pikepdf.ContentStreamInstruction(
                    [new if new is not None else old for old, new in zip(instruction.operands, fixed)],
                    instruction.operator)
        instructions.append(instruction)
    if changed:
        page.obj.Contents = layer.make_stream(pikepdf.unparse_content_stream(instructions))


@dataclass(frozen=True)
class PagePlan:
    """One output page: the image as scanned, and the text layer read from its OCR copy."""

    page: PageImage
    image: Path
    layer: Path
    layer_matrix: tuple[float, ...]  # cm operands: text-layer points -> page points
    rotate: int  # /Rotate, so that viewers show the page upright


@functools.cache
def srgb_profile() -> bytes:
    """LittleCMS's sRGB profile with a fixed creation time (header bytes 24-35; LittleCMS writes the
    current time): the same pages then give the same PDF bytes, so archiving again writes nothing new."""
    from PIL import ImageCms

    data = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    data[24:36] = struct.pack(">6H", 2020, 1, 1, 0, 0, 0)
    return bytes(data)


def declare_pdfa(pdf: pikepdf.Pdf, title: str) -> None:
    """Declare PDF/A-2b: XMP identification and an sRGB output intent for the device colour spaces.

    This declares conformance; it is not a validator (see docs/architecture.md for what is checked).
    """
    icc = pikepdf.Stream(pdf, srgb_profile())
    icc.N = 3
    pdf.Root.OutputIntents = pikepdf.Array([pikepdf.Dictionary(
        Type=pikepdf.Name.OutputIntent, S=pikepdf.Name.GTS_PDFA1, OutputConditionIdentifier="sRGB IEC61966-2.1",
        Info="sRGB IEC61966-2.1", DestOutputProfile=pdf.make_indirect(icc))])
    with pdf.open_metadata(set_pikepdf_as_editor=False) as meta:
        meta["pdfaid:part"] = "2"
        meta["pdfaid:conformance"] = "B"
        meta["dc:title"] = title
        meta["xmp:CreatorTool"] = "sohoa"
        meta["pdf:Producer"] = "sohoa (pikepdf, tesseract)"


def extract_pages(source: Path, numbers: Sequence[int], out: Path, title: str) -> None:
    """A PDF of some pages of ``source`` (1-based numbers), declared PDF/A-2b like its source."""
    with pikepdf.open(source) as whole, pikepdf.new() as part:
        for number in numbers:
            part.pages.append(whole.pages[number - 1])
        declare_pdfa(part, title)
        part.save(out, compress_streams=True, object_stream_mode=pikepdf.ObjectStreamMode.generate,
                  deterministic_id=True)  # the same pages give the same bytes: re-archiving is idempotent


def assemble(plans: Sequence[PagePlan], out: Path, title: str = "") -> None:
    """Write one PDF page per plan, in order, declared PDF/A-2b."""
    pdf = pikepdf.new()
    layers: list[pikepdf.Pdf] = []
    shared: dict[str, pikepdf.Object] = {}  # objects every page may use (the CMYK colour space)
    try:
        for plan in plans:
            page = plan.page
            width_pt, height_pt = page.width * 72 / page.dpi, page.height * 72 / page.dpi
            target = pdf.add_blank_page(page_size=(width_pt, height_pt))
            layer = pikepdf.open(plan.layer)
            layers.append(layer)
            _normalize_layer(layer)
            text = pdf.copy_foreign(layer.pages[0].as_form_xobject())
            target.obj.Resources = pikepdf.Dictionary(
                XObject=pikepdf.Dictionary(Im0=_image_xobject(pdf, plan.image, page.media_type, shared), Fx0=text))
            matrix = " ".join(f"{v:.6f}" for v in plan.layer_matrix)
            target.obj.Contents = pdf.make_stream(
                f"q {width_pt:.4f} 0 0 {height_pt:.4f} 0 0 cm /Im0 Do Q q {matrix} cm /Fx0 Do Q".encode())
            if plan.rotate:
                target.obj.Rotate = plan.rotate
        declare_pdfa(pdf, title)
        pdf.save(out, compress_streams=True, object_stream_mode=pikepdf.ObjectStreamMode.generate, deterministic_id=True)
    finally:
        for layer in layers:
            layer.close()
        pdf.close()
