"""Scanner output in its many encodings: each is captured at the right size and reads as text."""

from __future__ import annotations

import io
from pathlib import Path

import pikepdf
import pytest
from PIL import Image
from sohoa_dev import synth

from sohoa.steps import capture as capturing
from sohoa.steps import ocr as engine

pytestmark = pytest.mark.slow
WORD = "CHỨNG"  # in the title GIẤY CHỨNG SINH


@pytest.fixture(scope="module")
def page() -> Image.Image:
    return synth.render_pages(include=["giay_chung_sinh"], dpi=200, seed=2)[0].convert("L")


def _pdf_with_image(path: Path, data: bytes, size: tuple[int, int], filt: str, colorspace: str, dpi=(200, 200)) -> None:
    pdf = pikepdf.new()
    width_pt, height_pt = size[0] * 72 / dpi[0], size[1] * 72 / dpi[1]
    page = pdf.add_blank_page(page_size=(width_pt, height_pt))
    image = pikepdf.Stream(pdf, data)
    image.Type, image.Subtype = pikepdf.Name.XObject, pikepdf.Name.Image
    image.Width, image.Height = size
    image.ColorSpace, image.BitsPerComponent = pikepdf.Name(colorspace), 8
    image.Filter = pikepdf.Name(filt)
    page.obj.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=image))
    page.obj.Contents = pdf.make_stream(f"q {width_pt} 0 0 {height_pt} 0 0 cm /Im0 Do Q".encode())
    pdf.save(path)


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _variants(page: Image.Image, folder: Path) -> dict[str, tuple[Path, int, str]]:
    """name -> (file, pages, origin of the first page)."""
    out: dict[str, tuple[Path, int, str]] = {}
    bilevel = page.point(lambda v: 255 if v > 160 else 0).convert("1")
    for compression in ("group4", "tiff_lzw", "jpeg"):
        image = bilevel if compression == "group4" else page
        path = folder / f"{compression}.tif"
        image.save(path, compression=compression, save_all=True, append_images=[image], dpi=(200, 200))
        out[f"tiff-{compression}"] = (path, 2, "image")
    fax = bilevel.resize((int(page.width * 204 / 200), int(page.height * 98 / 200)))
    fax.save(folder / "fax.tif", compression="group4", dpi=(204, 98))
    out["tiff-fax-204x98"] = (folder / "fax.tif", 1, "image")
    _pdf_with_image(folder / "jpx.pdf", _encoded(page, "JPEG2000"), page.size, "/JPXDecode", "/DeviceGray")
    out["pdf-jpeg2000"] = (folder / "jpx.pdf", 1, "native")
    cmyk = page.convert("CMYK")
    _pdf_with_image(folder / "cmyk.pdf", _encoded(cmyk, "JPEG", quality=90), page.size, "/DCTDecode", "/DeviceCMYK")
    out["pdf-cmyk-jpeg"] = (folder / "cmyk.pdf", 1, "native")
    wide = page.resize((page.width, page.height // 2))
    _pdf_with_image(folder / "nonsquare.pdf", _encoded(wide, "JPEG"), wide.size, "/DCTDecode", "/DeviceGray", dpi=(200, 100))
    out["pdf-200x100dpi"] = (folder / "nonsquare.pdf", 1, "native")
    mixed = pikepdf.new()
    synth.make_dossier(folder / "text.pdf", fmt="text-pdf", include=["giay_chung_sinh"])
    _pdf_with_image(folder / "gray.pdf", _encoded(page, "JPEG"), page.size, "/DCTDecode", "/DeviceGray")
    for part in ("text.pdf", "gray.pdf"):
        with pikepdf.open(folder / part) as source:
            mixed.pages.extend(source.pages)
    mixed.save(folder / "mixed.pdf")
    out["pdf-mixed-text-and-scan"] = (folder / "mixed.pdf", 2, "rendered")
    exif = Image.Exif()
    exif[0x0112] = 8  # stored turned: display rotates 90 counter-clockwise
    page.rotate(-90, expand=True).save(folder / "phone.jpg", exif=exif, dpi=(200, 200))
    out["jpeg-exif-rotated"] = (folder / "phone.jpg", 1, "image")
    return out


def test_every_encoding_is_captured_and_read(page, tmp_path, settings, work_store):
    results = {}
    for name, (path, pages, origin) in _variants(page, tmp_path).items():
        info = capturing.describe_source(path, settings)
        captured = capturing.capture(path, info, work_store, settings, capturing.capture_key(info, settings))
        ocr = engine.run_ocr(captured, work_store, settings, engine.ocr_key(captured.key, settings))
        first = captured.pages[0]
        results[name] = (len(captured.pages), first.origin, first.width / first.height, WORD in ocr.pages[-1].text)
        assert (len(captured.pages), first.origin) == (pages, origin), name
        assert abs(first.width / first.height - page.width / page.height) < 0.01, (name, first.width, first.height)
        assert all(WORD in p.text for p in ocr.pages), (name, [p.text[:80] for p in ocr.pages])
    print("\n" + "\n".join(f"{k}: {v}" for k, v in results.items()))
