"""Capture: turn what a scanning station produced into measured page images.

Accepts a PDF (scanned or born-digital), a multi-page TIFF, a JPEG/PNG, or a folder of page
files. The media type comes from the content, never from the name. A PDF page that is one
full-page image is taken at its native resolution (its own bytes when it is a JPEG), so the
archive keeps what was scanned; other pages are rasterized with pdftoppm at ``render_dpi``
(sohoa/ocr/pdftoppm.py), whose version enters the cache key of PDFs.
Page images go to the work store content-addressed, so later steps (in any process) read them.
"""

from __future__ import annotations

import contextlib
import io
import re
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pikepdf
from natsort import natsorted
from PIL import Image, ImageOps, ImageSequence

from sohoa.kernel.errors import InputRefused
from sohoa.kernel.keys import sha256_bytes, sha256_file, step_key
from sohoa.kernel.models import CaptureResult, PageImage, SourceInfo
from sohoa.kernel.settings import CaptureSettings, Settings
from sohoa.ocr import imaging, pdftoppm
from sohoa.ocr import pdf as pdf_streams
from sohoa.ocr.normalize import OCR_DPI, UPSCALE_BELOW_DPI
from sohoa.storage import Store

VERSION = "6"  # 2: text direction (sideways) measured; 3: square pixels; 4: masked images rendered; 5: OCR copy limits;
# 6: decompression limits (page count first, content inflation, image data)
A4_LONG_SIDE_IN = 11.69
IMAGE_TYPES = {"image/jpeg": ".jpg", "image/png": ".png", "image/tiff": ".tif"}
EXTENSIONS = {"application/pdf": ".pdf", **IMAGE_TYPES}
NAME_EXTENSIONS = {".pdf": "application/pdf", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".jpe": "image/jpeg",
                   ".jfif": "image/jpeg", ".png": "image/png", ".tif": "image/tiff", ".tiff": "image/tiff"}
JUNK_FILES = {"thumbs.db", "desktop.ini"}
MAX_OCR_SIDE = 32767  # tesseract reads no image wider or taller ("Image too large")
DESKEW_GROWTH = 1.1  # straightening by up to 5 degrees grows the OCR copy's canvas by up to 9%
NATIVE_CONTENT_BYTES = 4096  # "draw one image" takes about 40 bytes: a longer content stream is rendered, never parsed


def key_settings(settings: Settings) -> dict:
    """Everything that changes what capture produces, refusals included: CaptureSettings whole."""
    return CaptureSettings.of(settings).model_dump()


@dataclass
class RawPage:
    """A page image before it is stored: encoded bytes plus what we know of it."""

    data: bytes
    media_type: str
    dpi: int
    rotation: int
    origin: str


def sniff_media_type(path: Path) -> str:
    """Media type from magic bytes; ``application/octet-stream`` when unknown.

    The magic at offset 0 first: a JPEG whose comment holds ``%PDF-`` is a JPEG. A PDF may start with up to
    1 KB of junk before its header (readers accept it), so ``%PDF-`` counts anywhere in the first 1 KB."""
    with open(path, "rb") as stream:
        head = stream.read(1024)
    for magic, media_type in MAGIC:
        if head.startswith(magic):
            return media_type
    return "application/pdf" if b"%PDF-" in head else "application/octet-stream"


MAGIC = ((b"%PDF-", "application/pdf"), (b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"),
         (b"II*\x00", "image/tiff"), (b"MM\x00*", "image/tiff"))
MAX_NAME_BYTES = 255


def check_name(path: Path) -> None:
    """Refuse names that cannot be shown or logged safely: not UTF-8, control characters, too long.

    Names never become storage keys, so traversal in a name cannot escape a prefix; these
    names are refused because they cannot travel through logs, JSON and the UI intact.
    """
    name = path.name
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise InputRefused("bad_name", "the file name is not valid UTF-8") from None
    if any(ord(ch) < 32 or ord(ch) == 127 or 0x80 <= ord(ch) < 0xA0 for ch in name):
        raise InputRefused("bad_name", "the file name contains control characters")
    if len(encoded) > MAX_NAME_BYTES:
        raise InputRefused("bad_name", f"the file name is longer than {MAX_NAME_BYTES} bytes")
    if name in ("", ".", "..") or "/" in name or "\\" in name:
        raise InputRefused("bad_name", f"the name {name!r} is a path, not a file name")


def describe_source(path: Path, settings: Settings) -> SourceInfo:
    """Identify the input by content, refusing what cannot be a dossier before any work: a link (never
    followed), an empty or oversized input, an unsupported type, more pages than ``max_pages``
    (``count_pages``, before any page is captured or the input hashed)."""
    check_name(path)
    if path.is_symlink():
        raise InputRefused("unsafe_link", f"the input {_display(path)} is a link: give the file itself")
    if not path.exists():
        raise InputRefused("not_found", f"input does not exist: {path.name}")
    if path.is_dir():
        files = page_files(path, settings.max_pages)
        size = sum(f.stat().st_size for f in files)
        _check_size(size, settings)
        count_pages(path, "inode/directory", settings, files)
        return SourceInfo(
            name=path.name, sha256=folder_sha256(files), size=size, media_type="inode/directory",
            files=[f.name for f in files],
        )
    size = path.stat().st_size
    if size == 0:
        raise InputRefused("empty_file", "the file is empty (0 bytes)")
    _check_size(size, settings)
    media_type = _supported_type(path)
    count_pages(path, media_type, settings)
    return SourceInfo(name=path.name, sha256=sha256_file(path), size=size, media_type=media_type)


def folder_sha256(files: list[Path]) -> str:
    """A folder's identity: the SHA-256 of its page files' SHA-256s, one a line, in page order."""
    return sha256_bytes("\n".join(sha256_file(f) for f in files).encode())


def count_pages(path: Path, media_type: str, settings: Settings, files: list[Path] | None = None) -> int:
    """The input's page count, cheaply and before capture: a folder's files (a TIFF among them by its frames),
    a TIFF's frames by walking its directory chain (no pixel read), a PDF's page tree (pikepdf). InputRefused
    ``too_many_pages`` past ``max_pages`` (counting stops there): a 10,000-frame TIFF was refused only after
    2,000 pages were captured and stored; now before anything is written (tests/test_bombs.py)."""
    limit = settings.max_pages
    if media_type != "inode/directory":
        total = _file_pages(path, media_type, limit + 1)
    else:
        total = 0
        for file in files if files is not None else page_files(path, limit):
            total += _file_pages(file, sniff_media_type(file), limit + 1 - total)
            if total > limit:
                break
    if total > limit:
        raise InputRefused("too_many_pages", f"more than {limit} pages (the limit)")
    return total


def _file_pages(path: Path, media_type: str, stop_at: int) -> int:
    if media_type == "application/pdf":
        with open_pdf(path) as pdf:
            return len(pdf.pages)
    if media_type == "image/tiff":
        return tiff_frames(path, stop_at)
    return 1  # JPEG, PNG (a phone's MPO: its first frame only)


def tiff_frames(path: Path, stop_at: int) -> int:
    """How many frames a (classic) TIFF holds, counted along its chain of image directories up to ``stop_at``:
    a seek and 2 + 4 bytes per frame. A chain that loops is corrupt_file; one that points past the end of the
    file ends there (capture then reads the frames before it, as PIL does)."""
    with open(path, "rb") as stream:
        order = "<" if stream.read(2) == b"II" else ">"
        stream.seek(4)
        offset, seen, size = struct.unpack(order + "I", stream.read(4))[0], set(), path.stat().st_size
        while 0 < offset <= size - 2 and len(seen) < stop_at:
            if offset in seen:
                raise InputRefused("corrupt_file", f"{_display(path)}: its chain of TIFF frames loops")
            seen.add(offset)
            stream.seek(offset)
            entries = struct.unpack(order + "H", stream.read(2))[0]
            stream.seek(offset + 2 + 12 * entries)
            after = stream.read(4)
            offset = struct.unpack(order + "I", after)[0] if len(after) == 4 else 0
    return len(seen)


def _supported_type(path: Path, allowed: dict[str, str] = EXTENSIONS) -> str:
    """The media type by content; refused when unsupported or when the name's extension says otherwise."""
    media_type = sniff_media_type(path)
    if media_type not in allowed:
        kinds = "PDF, TIFF, JPEG or PNG" if allowed is EXTENSIONS else "JPEG, PNG or TIFF image"
        raise InputRefused("unsupported_type", f"{_display(path)} is not a {kinds} file (checked by content)")
    has_extension = re.fullmatch(r"\.[A-Za-z][A-Za-z0-9]{0,4}", path.suffix) is not None  # not "hồ sơ 27.11"
    if has_extension and NAME_EXTENSIONS.get(path.suffix.lower()) != media_type:
        raise InputRefused(
            "extension_mismatch", f"{_display(path)} is named {path.suffix!r} but its content is {media_type}")
    return media_type


def _display(path: Path) -> str:
    return repr(path.name)


def _check_size(size: int, settings: Settings) -> None:
    if size > settings.max_input_bytes:
        raise InputRefused("too_large", f"input is {size} bytes; the limit is {settings.max_input_bytes}")


def folder_entries(folder: Path) -> list[Path]:
    """What a folder holds besides hidden files and desktop litter (Thumbs.db, desktop.ini), in natural order."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".") and p.name.lower() not in JUNK_FILES]
    return natsorted(entries, key=lambda p: p.name)


def page_files(folder: Path, max_pages: int | None = None) -> list[Path]:
    """Page files of a folder in natural order (page-2 before page-10).

    Anything that is not a page image is refused rather than skipped, so no page is ever silently
    dropped. Links are refused: a link can point outside the folder the station wrote. More entries
    than ``max_pages`` are refused before any is opened (a 3,000-image folder costs a listing).
    """
    entries = folder_entries(folder)
    if max_pages is not None and len(entries) > max_pages:
        raise InputRefused("too_many_pages", f"the folder holds {len(entries)} files; the limit is {max_pages} pages")
    for entry in entries:
        check_name(entry)
        if entry.is_symlink():
            raise InputRefused("unsafe_link", f"folder entry {_display(entry)} is a link")
        if not entry.is_file():
            raise InputRefused("unsupported_type", f"folder entry {_display(entry)} is not a file")
        if entry.stat().st_size == 0:
            raise InputRefused("empty_file", f"page file {_display(entry)} is empty (0 bytes)")
        _supported_type(entry, IMAGE_TYPES)
    if not entries:
        raise InputRefused("no_pages", "the folder holds no page files")
    return entries


def capture(path: Path, source: SourceInfo, store: Store, settings: Settings, key: str) -> CaptureResult:
    """Store every page of ``path`` in the work store and measure it."""
    pages: list[PageImage] = []
    for n, raw in enumerate(iter_pages(path, source, settings), start=1):
        if n > settings.max_pages:
            raise InputRefused("too_many_pages", f"more than {settings.max_pages} pages")
        pages.append(store_page(n, raw, store))
    if not pages:
        raise InputRefused("no_pages", "the input has no pages")
    return CaptureResult(key=key, source=source, pages=pages)


def capture_key(source: SourceInfo, settings: Settings) -> str:
    return step_key("capture", VERSION, {**key_settings(settings), **key_programs(source)}, source.sha256)


def key_programs(source: SourceInfo) -> dict:
    """The programs whose output capture keeps: pdftoppm renders a PDF's pages that are not one image
    (its version, None without it: a scanned PDF is captured without it). Images need none."""
    if source.media_type != "application/pdf":
        return {}
    return {"pdftoppm": pdftoppm.version_or_none()}


def store_page(n: int, raw: RawPage, store: Store) -> PageImage:
    try:
        gray = imaging.decode_gray(raw.data)
    except ValueError:
        raise InputRefused("corrupt_file", f"page {n} cannot be decoded") from None
    digest = sha256_bytes(raw.data)
    key = f"pages/{digest}{IMAGE_TYPES[raw.media_type]}"
    if not store.exists(key):
        store.put_bytes(key, raw.data, content_type=raw.media_type, metadata={"sha256": digest})
    layout = imaging.analyze(gray, raw.dpi)
    return PageImage(
        n=n, key=key, sha256=digest, media_type=raw.media_type, width=gray.shape[1], height=gray.shape[0],
        dpi=raw.dpi, rotation=raw.rotation, skew=layout.skew, blank=layout.blank, sideways=layout.quarter == 90,
        origin=raw.origin,
    )


def iter_pages(path: Path, source: SourceInfo, settings: Settings) -> Iterator[RawPage]:
    if source.media_type == "application/pdf":
        yield from pdf_pages(path, settings)
    elif source.media_type == "inode/directory":
        for name in source.files:
            yield from image_pages(path / name, settings)
    else:
        yield from image_pages(path, settings)


# --- images ---------------------------------------------------------------------------------


def image_pages(path: Path, settings: Settings) -> Iterator[RawPage]:
    """Pages of an image file; a JPEG without EXIF rotation keeps its own bytes."""
    Image.MAX_IMAGE_PIXELS = settings.max_page_pixels
    try:
        with Image.open(path) as image:
            # a phone's MPO holds previews/depth maps after the photo: only the first frame is the page
            frames = [image] if image.format == "MPO" else ImageSequence.Iterator(image)
            for frame in frames:
                yield _image_page(path, image.format, frame, settings)
    except InputRefused:
        raise
    except Image.DecompressionBombError as exc:
        raise InputRefused("too_many_pixels", f"{path.name}: {exc}") from None
    except ValueError as exc:
        if "too large" in str(exc).lower():  # PIL stops inflating a PNG text or ICC chunk at 1 MB (a bomb)
            raise InputRefused("too_complex", f"{path.name}: a chunk inflates past the limit ({exc})") from None
        raise InputRefused("corrupt_file", f"{path.name}: image cannot be decoded ({exc})") from None
    except (OSError, SyntaxError) as exc:
        raise InputRefused("corrupt_file", f"{path.name}: image cannot be decoded ({exc})") from None


def _image_page(path: Path, fmt: str | None, frame: Image.Image, settings: Settings) -> RawPage:
    _check_pixels(frame.width, frame.height, settings)
    orientation = frame.getexif().get(0x0112, 1)
    rotation = {3: 180, 6: 90, 8: 270}.get(orientation, 0)
    dpi_x, dpi_y = _image_dpi(frame)
    _check_pixels(frame.width, frame.height, settings, (dpi_x, dpi_y))
    if fmt == "JPEG" and orientation == 1 and frame.mode in ("L", "RGB", "CMYK") and _is_square(dpi_x, dpi_y):
        return RawPage(path.read_bytes(), "image/jpeg", dpi_x, 0, "image")
    upright = ImageOps.exif_transpose(frame) if orientation != 1 else frame
    if rotation in (90, 270):
        dpi_x, dpi_y = dpi_y, dpi_x
    square, dpi = square_pixels(upright, dpi_x, dpi_y)
    return RawPage(_encode_png(square, dpi), "image/png", dpi, rotation, "image")


def _image_dpi(image: Image.Image) -> tuple[int, int]:
    """(x, y) DPI from the file; when absent or a screen default (72/96), estimated from an A4 page."""
    dpi = image.info.get("dpi")
    values = [int(round(float(v))) for v in dpi[:2]] if dpi and len(dpi) >= 2 and dpi[0] else [0, 0]
    if values[0] in (0, 1, 72, 96):
        estimate = max(int(round(max(image.size) / A4_LONG_SIDE_IN)), 1)
        return estimate, estimate
    return values[0], values[1] or values[0]


def _is_square(dpi_x: int, dpi_y: int) -> bool:
    return abs(dpi_x - dpi_y) <= 0.02 * max(dpi_x, dpi_y)


def square_pixels(image: Image.Image, dpi_x: int, dpi_y: int) -> tuple[Image.Image, int]:
    """Resample non-square pixels (faxes at 204x98 dpi) to the higher of the two resolutions."""
    if _is_square(dpi_x, dpi_y):
        return image, dpi_x
    dpi = max(dpi_x, dpi_y)
    size = (int(round(image.width * dpi / dpi_x)), int(round(image.height * dpi / dpi_y)))
    if image.mode == "1":
        image = image.convert("L")
    return image.resize(size, Image.LANCZOS), dpi


def _encode_png(image: Image.Image, dpi: int) -> bytes:
    if image.mode not in ("1", "L", "RGB"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", dpi=(dpi, dpi), compress_level=6)
    return buffer.getvalue()


def _check_pixels(width: int, height: int, settings: Settings, dpi: tuple[int, int] | None = None) -> None:
    """Refuse a page too large as stored or, given its (x, y) dpi, as OCR will read it: pixels made square
    (``square_pixels``), then upscaled to 300 dpi below 250 dpi (sohoa/ocr/normalize.py). Checked before decoding."""
    if width * height > settings.max_page_pixels:
        raise InputRefused(
            "too_many_pixels", f"page of {width}x{height} pixels exceeds the limit of {settings.max_page_pixels}"
        )
    if dpi is None:
        return
    dpi_x, dpi_y = max(dpi[0], 1), max(dpi[1], 1)
    square = max(dpi_x, dpi_y)
    scale = OCR_DPI / square if square < UPSCALE_BELOW_DPI else 1.0
    ocr_w, ocr_h = int(width * square / dpi_x * scale), int(height * square / dpi_y * scale)
    if ocr_w * ocr_h > settings.max_page_pixels or max(ocr_w, ocr_h) * DESKEW_GROWTH > MAX_OCR_SIDE:
        raise InputRefused(
            "too_many_pixels", f"page of {width}x{height} pixels at {dpi_x}x{dpi_y} dpi is {ocr_w}x{ocr_h} pixels "
            f"read at {OCR_DPI} dpi; the limits are {settings.max_page_pixels} pixels and {MAX_OCR_SIDE} a side")


# --- PDF ------------------------------------------------------------------------------------


@contextlib.contextmanager
def open_pdf(path: Path) -> Iterator[pikepdf.Pdf]:
    """The PDF opened by pikepdf; InputRefused when it needs a password or cannot be read."""
    try:
        pdf = pikepdf.open(path)
    except pikepdf.PasswordError:
        raise InputRefused("encrypted_pdf", "the PDF is encrypted and needs a password") from None
    except (pikepdf.PdfError, OSError) as exc:
        raise InputRefused("corrupt_file", f"the PDF cannot be read ({_first_line(exc)})") from None
    with pdf:
        yield pdf


def pdf_pages(path: Path, settings: Settings) -> Iterator[RawPage]:
    with open_pdf(path) as pdf:
        if len(pdf.pages) == 0:
            raise InputRefused("no_pages", "the PDF has no pages")
        if len(pdf.pages) > settings.max_pages:
            raise InputRefused("too_many_pages", f"{len(pdf.pages)} pages; the limit is {settings.max_pages}")
        for index, page in enumerate(pdf.pages):
            weight = _weigh(path, index + 1, page, settings)
            native = _native_page(page, settings) if weight.content_bytes <= NATIVE_CONTENT_BYTES else None
            yield native if native is not None else _render_page(path, index + 1, page, weight, settings)


def _weigh(path: Path, number: int, page: pikepdf.Page, settings: Settings) -> pdf_streams.PageWeight:
    """Refuse a page that would inflate past the limits when decoded (sohoa/ocr/pdf.weigh_page): drawing
    instructions past ``max_content_bytes`` or an image inflating past its pixels (too_complex), an image
    past ``max_page_pixels`` (too_many_pixels)."""
    try:
        weight = pdf_streams.weigh_page(path, page, settings.max_content_bytes)
    except (pikepdf.PdfError, ValueError, TypeError) as exc:
        raise InputRefused("corrupt_file", f"page {number} cannot be read ({_first_line(exc)})") from None
    if weight.content_bytes > settings.max_content_bytes:
        raise InputRefused("too_complex", f"page {number}: its drawing instructions inflate past the limit of "
                                          f"{settings.max_content_bytes} bytes")
    if weight.image_overflow:
        raise InputRefused("too_complex", f"page {number}: an image's data inflates past its own size")
    if weight.image_pixels > settings.max_page_pixels:
        raise InputRefused("too_many_pixels", f"page {number}: an image of {weight.image_pixels} pixels exceeds "
                                              f"the limit of {settings.max_page_pixels}")
    return weight


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _native_page(page: pikepdf.Page, settings: Settings) -> RawPage | None:
    """The page's own image when the page is exactly one image drawn over the whole page."""
    try:
        xobjects = page.obj.get("/Resources", pikepdf.Dictionary()).get("/XObject", pikepdf.Dictionary())
        images = [x for x in xobjects.values() if x.get("/Subtype") == "/Image"]
        if len(xobjects) != 1 or len(images) != 1 or not _draws_only_one_full_image(page):
            return None
        if "/SMask" in images[0] or "/Mask" in images[0]:  # what shows depends on the mask: render it
            return None
        image = pikepdf.PdfImage(images[0])
        box = [float(v) for v in page.mediabox]
        dpi_x = int(round(image.width / (abs(box[2] - box[0]) / 72)))
        dpi_y = int(round(image.height / (abs(box[3] - box[1]) / 72)))
        _check_pixels(image.width, image.height, settings, (dpi_x, dpi_y))
        rotation = int(page.obj.get("/Rotate", 0)) % 360
        if image.filters == ["/DCTDecode"] and rotation == 0 and image.mode in ("L", "RGB") and _is_square(dpi_x, dpi_y):
            return RawPage(bytes(image.obj.read_raw_bytes()), "image/jpeg", dpi_x, 0, "native")
        pil, dpi = square_pixels(image.as_pil_image(), dpi_x, dpi_y)
        if rotation:
            pil = pil.rotate(-rotation, expand=True)
        return RawPage(_encode_png(pil, dpi), "image/png", dpi, rotation, "native")
    except InputRefused:
        raise
    except Exception:  # an image codec we cannot extract: fall back to rendering the page
        return None


def _draws_only_one_full_image(page: pikepdf.Page) -> bool:
    """True when the content stream paints nothing but one image scaled to the media box."""
    box = [float(v) for v in page.mediabox]
    width, height = box[2] - box[0], box[3] - box[1]
    drawn = 0
    for operands, operator in pikepdf.parse_content_stream(page):
        op = str(operator)
        if op == "cm":
            a, b, c, d = (float(v) for v in operands[:4])
            full = abs(abs(a) - width) < 0.02 * width and abs(abs(d) - height) < 0.02 * height
            swapped = abs(abs(b) - height) < 0.02 * height and abs(abs(c) - width) < 0.02 * width
            if not (full or swapped or (a, b, c, d) == (1, 0, 0, 1)):
                return False
        elif op == "Do":
            drawn += 1
        elif op not in ("q", "Q", "gs"):
            return False
    return drawn == 1


def _render_page(path: Path, number: int, page: pikepdf.Page, weight: pdf_streams.PageWeight,
                 settings: Settings) -> RawPage:
    box = [float(v) for v in page.mediabox]
    square_inches = abs(box[2] - box[0]) / 72 * abs(box[3] - box[1]) / 72
    dpi = settings.render_dpi
    if square_inches * dpi * dpi > settings.max_render_pixels:  # a poster: enough resolution, not 300 dpi
        dpi = max(36, int((settings.max_render_pixels / square_inches) ** 0.5))
    _check_pixels(int(abs(box[2] - box[0]) / 72 * dpi), int(abs(box[3] - box[1]) / 72 * dpi), settings, (dpi, dpi))
    memory = render_memory(int(square_inches * dpi * dpi), weight.image_pixels)
    with tempfile.TemporaryDirectory(prefix="sohoa-render-") as tmp:
        try:
            rendered = pdftoppm.render(path, number, dpi, Path(tmp) / "page", timeout=settings.page_timeout_s,
                                       memory_bytes=memory)
        except pdftoppm.OutOfMemory as exc:
            raise InputRefused("too_complex", f"page {number} cannot be rendered within bounds ({exc})") from None
        except pdftoppm.RenderFailed as exc:
            raise InputRefused("corrupt_file", f"page {number} cannot be rendered ({exc})") from None
        with Image.open(rendered) as image:
            data = _encode_png(image, dpi)
    return RawPage(data, "image/png", dpi, 0, "rendered")


RENDER_BASE_BYTES = 256 << 20  # pdftoppm's own address space: an A4 page at 300 dpi renders under this with room
RENDER_BYTES_PER_PIXEL = 8  # the RGB page and PNG rows (a 40 MP poster: 164 MB resident, fine under 576 MB)
IMAGE_BYTES_PER_PIXEL = 4  # an image drawn on the page, decoded at its own size


def render_memory(page_pixels: int, image_pixels: int) -> int:
    """The address space one page may take to render: what the page and its largest image need, no more."""
    return RENDER_BASE_BYTES + RENDER_BYTES_PER_PIXEL * page_pixels + IMAGE_BYTES_PER_PIXEL * image_pixels
