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
import subprocess
import threading
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


# --- weighing an untrusted PDF page before anything decodes it whole ----------------------------
# A 409 KB page whose content stream inflates to 400 MB drove capture past 8 GB (pikepdf decodes a
# stream whole, and parsing it made a Python object per operator); an 11 KB one took 1.6 GB and 77 s.
# Every stream a renderer would read is measured here first, by inflating it in chunks and counting.

INFLATE_CHUNK = 1 << 16
GENERALIZED = frozenset({"/FlateDecode", "/LZWDecode", "/RunLengthDecode", "/ASCII85Decode", "/ASCIIHexDecode"})
COMPONENTS = {"/DeviceGray": 1, "/CalGray": 1, "/DeviceRGB": 3, "/CalRGB": 3, "/Lab": 3, "/DeviceCMYK": 4}
MAX_RESOURCE_DEPTH = 12  # forms in forms: deeper is refused like a bomb (poppler draws up to 100 levels)


@dataclass(frozen=True)
class PageWeight:
    """What rendering a page would decode: ``content_bytes`` of drawing instructions (the page's content
    streams, forms, patterns, Type 3 glyphs and annotation appearances; counting stops past the limit),
    the ``image_pixels`` of its largest image, and whether an image's data inflates past its own size."""

    content_bytes: int
    image_pixels: int
    image_overflow: bool


def weigh_page(source: Path, page: pikepdf.Page, content_limit: int) -> PageWeight:
    """The page's weight, within bounded memory: no stream is decoded whole (see ``decoded_size``)."""
    weight = {"content": 0, "pixels": 0, "overflow": False}
    seen: set[tuple[int, int]] = set()
    contents = page.obj.get("/Contents")
    for stream in (contents if isinstance(contents, pikepdf.Array) else [contents] if contents is not None else []):
        _add_content(source, stream, weight, content_limit)
    _weigh_resources(source, page.obj.get("/Resources"), weight, content_limit, seen, 0)
    annotations = page.obj.get("/Annots")
    for annotation in annotations if isinstance(annotations, pikepdf.Array) else []:
        appearances = annotation.get("/AP") if isinstance(annotation, pikepdf.Dictionary) else None
        for form in _appearance_streams(appearances.get("/N") if isinstance(appearances, pikepdf.Dictionary) else None):
            _weigh_form(source, form, weight, content_limit, seen, 1)
    return PageWeight(min(weight["content"], content_limit + 1), weight["pixels"], weight["overflow"])


def _appearance_streams(appearance: pikepdf.Object | None) -> list[pikepdf.Object]:
    if isinstance(appearance, pikepdf.Stream):
        return [appearance]
    if isinstance(appearance, pikepdf.Dictionary):  # one appearance per state (checked, unchecked)
        return [each for each in appearance.values() if isinstance(each, pikepdf.Stream)]
    return []


def _weigh_resources(source: Path, resources: pikepdf.Object | None, weight: dict, limit: int,
                     seen: set[tuple[int, int]], depth: int) -> None:
    if not isinstance(resources, pikepdf.Dictionary):
        return
    if depth > MAX_RESOURCE_DEPTH:  # forms, patterns or Type 3 glyphs nested deeper (or in a loop): a bomb
        weight["content"] = limit + 1
        return
    for xobject in _entries(resources, "/XObject"):
        if not isinstance(xobject, pikepdf.Stream):
            continue  # damaged: nothing to draw
        if xobject.get("/Subtype") == "/Image":
            _weigh_image(source, xobject, weight, seen)
        else:
            _weigh_form(source, xobject, weight, limit, seen, depth + 1)
    for pattern in _entries(resources, "/Pattern"):
        _weigh_form(source, pattern, weight, limit, seen, depth + 1)  # tiling patterns are content streams
    for font in _entries(resources, "/Font"):
        if isinstance(font, pikepdf.Dictionary) and font.get("/Subtype") == "/Type3" and _first_time(font, seen):
            _weigh_resources(source, font.get("/Resources"), weight, limit, seen, depth + 1)
            for glyph in _entries(font, "/CharProcs"):
                _add_content(source, glyph, weight, limit, seen)


def _entries(dictionary: pikepdf.Dictionary, key: str) -> list[pikepdf.Object]:
    """The values of a sub-dictionary, or none when it is missing or damaged (not a dictionary)."""
    found = dictionary.get(key)
    return list(found.values()) if isinstance(found, pikepdf.Dictionary) else []


def _weigh_form(source: Path, form: pikepdf.Object, weight: dict, limit: int, seen: set[tuple[int, int]],
                depth: int) -> None:
    """A form (or pattern) once per page, however often it is drawn: time, not memory, grows with repeats."""
    if not isinstance(form, pikepdf.Stream) or weight["content"] > limit or form.objgen in seen:
        return
    _add_content(source, form, weight, limit, seen)
    _weigh_resources(source, form.get("/Resources"), weight, limit, seen, depth)


def _first_time(obj: pikepdf.Object, seen: set[tuple[int, int]]) -> bool:
    """True once per indirect object (a direct one, with no number, every time: it cannot loop)."""
    if obj.objgen in seen:
        return False
    if obj.objgen != (0, 0):
        seen.add(obj.objgen)
    return True


def _add_content(source: Path, stream: pikepdf.Object, weight: dict, limit: int,
                 seen: set[tuple[int, int]] | None = None) -> None:
    if not isinstance(stream, pikepdf.Stream) or weight["content"] > limit:
        return
    if seen is not None and not _first_time(stream, seen):
        return
    size = decoded_size(source, stream, limit - weight["content"])
    weight["content"] += size if size is not None else len(stream.read_raw_bytes())


def _weigh_image(source: Path, image: pikepdf.Stream, weight: dict, seen: set[tuple[int, int]]) -> None:
    """An image's pixels from its dictionary; its data may inflate to twice its pixels' size, no more."""
    if not _first_time(image, seen):
        return
    width, height = _number(image, "/Width", 0), _number(image, "/Height", 0)
    weight["pixels"] = max(weight["pixels"], width * height)
    mask = image.get("/ImageMask") is True
    bits = 1 if mask else _number(image, "/BitsPerComponent", 8)
    space = image.get("/ColorSpace")
    components = 1 if mask else COMPONENTS.get(str(space), 4) if not isinstance(space, pikepdf.Array) else 4
    expected = (width * components * bits + 7) // 8 * height + height  # + a predictor byte per row
    limit = 2 * expected + INFLATE_CHUNK
    size = decoded_size(source, image, limit)
    if size is not None and size > limit:
        weight["overflow"] = True
    smask = image.get("/SMask")
    if isinstance(smask, pikepdf.Stream):
        _weigh_image(source, smask, weight, seen)


def _number(dictionary: pikepdf.Dictionary, key: str, default: int) -> int:
    """A non-negative whole number of the dictionary (``default`` when missing or damaged: nothing is drawn then)."""
    try:
        return max(int(dictionary.get(key, default)), 0)
    except (TypeError, ValueError):
        return default


def stream_filters(stream: pikepdf.Stream) -> list[str]:
    filters = stream.get("/Filter")
    if filters is None:
        return []
    return [str(f) for f in filters] if isinstance(filters, pikepdf.Array) else [str(filters)]


def decoded_size(source: Path, stream: pikepdf.Stream, limit: int, timeout_s: float = 60.0) -> int | None:
    """The stream's decoded length, counted up to ``limit + 1`` (past the limit, some value over it) without
    holding more than 64 KB of it; None for an image codec (JPEG, JPEG 2000, fax, JBIG2), whose size its own
    header tells. Flate is inflated here in chunks; other general filters (LZW, run length, ASCII85/hex),
    rare in scans, are decoded by the qpdf program and counted as it writes them."""
    filters, raw = stream_filters(stream), stream.read_raw_bytes()
    if not filters:
        return len(raw)
    if filters == ["/FlateDecode"]:
        return inflated_size(raw, limit)
    if set(filters) <= GENERALIZED:
        return _qpdf_decoded_size(source, stream.objgen, limit, timeout_s)
    return None


def inflated_size(raw: bytes, limit: int) -> int:
    """How many bytes ``raw`` (zlib) inflates to, counted in 64 KB pieces and stopped past ``limit``; a damaged
    stream counts what inflated before the damage (qpdf and poppler keep that much too)."""
    inflater, total, view = zlib.decompressobj(), 0, memoryview(raw)
    try:
        for start in range(0, len(view), INFLATE_CHUNK):
            pending: bytes | memoryview = view[start:start + INFLATE_CHUNK]
            while pending:
                total += len(inflater.decompress(pending, INFLATE_CHUNK))
                if total > limit or inflater.eof:
                    return total
                pending = inflater.unconsumed_tail
    except zlib.error:
        pass
    return total


def _qpdf_decoded_size(source: Path, objgen: tuple[int, int], limit: int, timeout_s: float) -> int | None:
    """qpdf writes a stream's decoded data as it decodes it: read it to ``limit + 1`` bytes, then stop qpdf."""
    if objgen == (0, 0):
        return None
    args = ["qpdf", f"--show-object={objgen[0]},{objgen[1]}", "--filtered-stream-data", "--", str(source)]
    try:
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except OSError:
        return None
    timer, total = threading.Timer(timeout_s, process.kill), 0
    timer.start()
    try:
        while total <= limit and (chunk := process.stdout.read(INFLATE_CHUNK)):  # type: ignore[union-attr]
            total += len(chunk)
    finally:
        timer.cancel()
        process.kill()
        process.wait()
    return total
