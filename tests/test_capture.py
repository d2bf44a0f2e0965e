"""Capture on real files: PDFs (native image and rendered), TIFF, JPEG/PNG, folders, refusals."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pikepdf
import pytest
from PIL import Image
from sohoa_dev import synth

from sohoa.kernel.errors import InputRefused
from sohoa.ocr import imaging
from sohoa.steps import capture as capturing


def run_capture(path: Path, settings, store):
    info = capturing.describe_source(path, settings)
    return capturing.capture(path, info, store, settings, capturing.capture_key(info, settings))


def test_scanned_pdf_page_is_taken_natively_without_reencoding(birth_pdf, settings, work_store):
    path, truth = birth_pdf
    result = run_capture(path, settings, work_store)
    assert result.source.media_type == "application/pdf"
    assert result.source.size == path.stat().st_size
    assert len(result.pages) == len(truth.pages)
    first = result.pages[0]
    assert (first.origin, first.dpi, first.media_type) == ("native", 300, "image/jpeg")
    with pikepdf.open(path) as pdf:
        embedded = next(iter(pdf.pages[0].obj.Resources.XObject.values())).read_raw_bytes()
    assert work_store.get_bytes(first.key) == bytes(embedded)  # the scanner's own JPEG bytes


def test_text_pdf_is_rendered_at_render_dpi(synth_dir, settings, work_store):
    out = synth_dir / "text.pdf"
    synth.make_dossier(out, fmt="text-pdf", include=["to_khai_khai_sinh"])
    result = run_capture(out, settings, work_store)
    assert {p.origin for p in result.pages} == {"rendered"}
    assert all(p.dpi == 300 and abs(p.width - 2480) <= 2 for p in result.pages)


def test_folder_pages_in_natural_order(tmp_path, settings, work_store):
    folder = tmp_path / "pages"
    folder.mkdir()
    for n in (1, 2, 10):
        Image.new("L", (850, 1100), color=255 - n).save(folder / f"page-{n}.png", dpi=(100, 100))
    result = run_capture(folder, settings, work_store)
    assert result.source.files == ["page-1.png", "page-2.png", "page-10.png"]
    assert result.source.media_type == "inode/directory"
    values = [int(np.asarray(Image.open(io.BytesIO(work_store.get_bytes(p.key))))[0, 0]) for p in result.pages]
    assert values == [254, 253, 245]


def test_multipage_tiff_and_blank_detection(tmp_path, settings, work_store):
    text = synth.render_pages(include=["giay_chung_sinh"], dpi=200)[0].convert("L")
    blank = Image.new("L", text.size, 255)
    path = tmp_path / "scan.tif"
    text.save(path, save_all=True, append_images=[blank], compression="tiff_lzw", dpi=(200, 200))
    result = run_capture(path, settings, work_store)
    assert [(p.dpi, p.blank) for p in result.pages] == [(200, False), (200, True)]


def test_jpeg_exif_rotation_is_honoured(tmp_path, settings, work_store):
    image = Image.new("RGB", (1100, 850), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise to display
    path = tmp_path / "phone.jpg"
    image.save(path, exif=exif, dpi=(100, 100))
    page = run_capture(path, settings, work_store).pages[0]
    assert (page.width, page.height, page.rotation) == (850, 1100, 90)


def test_skew_is_measured(tmp_path):
    page = synth.render_pages(include=["to_khai_khai_sinh"], dpi=150)[0].convert("L")
    tilted = page.rotate(3, fillcolor=255, expand=False)  # counter-clockwise
    buffer = io.BytesIO()
    tilted.save(buffer, format="PNG")
    angle = imaging.analyze(imaging.decode_gray(buffer.getvalue()), dpi=150).skew
    assert abs(angle - 3) < 0.4


def _encrypted_pdf(path: Path, source: Path) -> None:
    with pikepdf.open(source) as pdf:
        pdf.save(path, encryption=pikepdf.Encryption(user="secret", owner="owner"))


@pytest.mark.parametrize("name,make,code", [
    ("empty.pdf", lambda p, src: p.write_bytes(b""), "empty_file"),
    ("notes.pdf", lambda p, src: p.write_text("not a pdf at all"), "unsupported_type"),
    ("truncated.pdf", lambda p, src: p.write_bytes(src.read_bytes()[:3000]), "corrupt_file"),
    ("locked.pdf", lambda p, src: _encrypted_pdf(p, src), "encrypted_pdf"),
    ("broken.png", lambda p, src: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64), "corrupt_file"),
])
def test_bad_inputs_are_refused_with_a_reason(tmp_path, birth_pdf, settings, work_store, name, make, code):
    path = tmp_path / name
    make(path, birth_pdf[0])
    with pytest.raises(InputRefused) as refused:
        run_capture(path, settings, work_store)
    assert refused.value.code == code and refused.value.message


def test_pixel_bomb_is_refused(tmp_path, settings, work_store):
    path = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(path)
    with pytest.raises(InputRefused) as refused:
        run_capture(path, settings.model_copy(update={"max_page_pixels": 100_000_000}), work_store)
    assert refused.value.code == "too_many_pixels"


def test_pdfimages_agrees_on_native_resolution(birth_pdf):
    listing = subprocess.run(["pdfimages", "-list", str(birth_pdf[0])], capture_output=True, text=True, check=True)
    rows = [line.split() for line in listing.stdout.splitlines()[2:]]
    assert rows and all(row[12] == "300" for row in rows)


@pytest.mark.parametrize("name", ["..", "a\\\\..\\\\b.pdf", "tab\there.pdf", "esc\x1b.pdf", "del\x7f.pdf",
                                  "c1\x85.pdf", "x" * 252 + ".pdf", "\udcff.pdf"])
def test_hostile_names_are_refused(name):
    with pytest.raises(InputRefused) as refused:
        capturing.check_name(Path("/inbox") / name)
    assert refused.value.code == "bad_name"


def test_ordinary_vietnamese_names_are_accepted():
    capturing.check_name(Path("/inbox/Hồ sơ khai sinh - Nguyễn Thị Hồng Nhung (bản 2).pdf"))


def test_a_page_whose_image_data_is_damaged_is_refused(tmp_path, birth_pdf, settings, work_store):
    """The PDF structure is fine but the embedded JPEG is cut short: a refusal, not a crash."""
    with pikepdf.open(birth_pdf[0]) as pdf:
        image = next(iter(pdf.pages[0].obj.Resources.XObject.values()))
        image.write(image.read_raw_bytes()[:200], filter=pikepdf.Name.DCTDecode)
        pdf.save(tmp_path / "damaged.pdf")
    with pytest.raises(InputRefused) as refused:
        run_capture(tmp_path / "damaged.pdf", settings, work_store)
    assert refused.value.code == "corrupt_file"


# --- pdftoppm ---------------------------------------------------------------------------------


def _vector_pdf(path: Path) -> Path:
    """A one-page PDF that is drawn, not one image: capture renders it with pdftoppm."""
    with pikepdf.new() as pdf:
        page = pdf.add_blank_page(page_size=(144, 144))
        page.obj.Contents = pdf.make_stream(b"0 0 1 rg 18 18 72 36 re f")
        pdf.save(path)
    return path


def _program(folder: Path, script: str) -> Path:
    """A stand-in ``pdftoppm`` first on the PATH: it says its version, and renders with ``script``."""
    folder.mkdir(exist_ok=True)
    program = folder / "pdftoppm"
    program.write_text(f'#!/bin/sh\n[ "$1" = -v ] && {{ echo "pdftoppm version 0.0" >&2; exit 0; }}\n{script}\n')
    program.chmod(0o755)
    return folder


def test_a_drawn_pdf_page_is_rendered_by_pdftoppm(tmp_path, settings, work_store):
    [page] = run_capture(_vector_pdf(tmp_path / "drawn.pdf"), settings, work_store).pages
    assert (page.origin, page.dpi, page.width, page.height, page.media_type) == ("rendered", 300, 600, 600, "image/png")
    pixels = np.asarray(Image.open(io.BytesIO(work_store.get_bytes(page.key))).convert("RGB"))
    assert tuple(pixels[450, 200]) == (0, 0, 255) and tuple(pixels[100, 100]) == (255, 255, 255)


def test_the_pdftoppm_version_is_asked_once_per_process(monkeypatch):
    from sohoa.ocr import pdftoppm

    assert pdftoppm.version().startswith("pdftoppm version ")
    monkeypatch.setattr(pdftoppm.subprocess, "run", lambda *a, **k: pytest.fail("pdftoppm started again"))
    assert pdftoppm.version() == pdftoppm.version_or_none()


def test_the_pdftoppm_version_enters_the_capture_key_of_pdfs_only(tmp_path, settings, monkeypatch):
    from sohoa.ocr import pdftoppm

    pdf = capturing.describe_source(_vector_pdf(tmp_path / "drawn.pdf"), settings)
    Image.new("L", (100, 100), 255).save(tmp_path / "page.png")
    png = capturing.describe_source(tmp_path / "page.png", settings)
    before = {capturing.capture_key(info, settings) for info in (pdf, png)}
    monkeypatch.setattr(pdftoppm, "version_or_none", lambda: "pdftoppm version 99.0.0")
    after = {capturing.capture_key(info, settings) for info in (pdf, png)}
    assert len(before & after) == 1 and capturing.capture_key(png, settings) in before
    assert capturing.key_programs(pdf) == {"pdftoppm": "pdftoppm version 99.0.0"} and capturing.key_programs(png) == {}


def test_a_missing_pdftoppm_is_a_clear_error(tmp_path, settings, work_store, monkeypatch):
    from sohoa.kernel.errors import OcrError
    from sohoa.ocr import pdftoppm

    path = _vector_pdf(tmp_path / "drawn.pdf")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    info = capturing.describe_source(path, settings)
    assert capturing.key_programs(info) == {"pdftoppm": None}  # a scanned PDF is still captured
    with pytest.raises(OcrError) as raised:
        capturing.capture(path, info, work_store, settings, capturing.capture_key(info, settings))
    assert raised.value.code == "engine_missing"
    assert str(raised.value) == "pdftoppm not found ('pdftoppm'); install poppler-utils"
    with pytest.raises(OcrError):
        pdftoppm.version()


def test_a_page_that_renders_too_long_is_a_page_timeout(tmp_path, settings, work_store, monkeypatch):
    from sohoa.kernel.errors import OcrError

    path = _vector_pdf(tmp_path / "drawn.pdf")
    monkeypatch.setenv("PATH", f"{_program(tmp_path / 'bin', 'exec sleep 5')}:/usr/bin:/bin")
    with pytest.raises(OcrError) as raised:
        run_capture(path, settings.model_copy(update={"page_timeout_s": 0.3}), work_store)
    assert raised.value.code == "page_timeout" and "page 1" in str(raised.value)


def test_a_page_pdftoppm_cannot_render_is_refused_with_its_complaint(tmp_path, settings, work_store, monkeypatch):
    path = _vector_pdf(tmp_path / "drawn.pdf")
    script = 'echo "Syntax Warning: ignored" >&2; echo "Syntax Error: Invalid page tree" >&2; exit 1'
    monkeypatch.setenv("PATH", f"{_program(tmp_path / 'bin', script)}:/usr/bin:/bin")
    with pytest.raises(InputRefused) as refused:
        run_capture(path, settings, work_store)
    assert (refused.value.code, refused.value.message) == ("corrupt_file", "page 1 cannot be rendered (Syntax Error: Invalid page tree)")
