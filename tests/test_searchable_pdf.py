"""The searchable PDFs of an archived dossier, checked from outside with the tools a reader has.

Every PDF the archive holds (the dossier's and each classified document's) must be `qpdf --check`
clean, carry each page image as scanned (the same JPEG bytes, the same pixels and resolution),
have an invisible text layer that `pdftotext` returns as the text recorded in the manifest,
stay within 1.3x the page images, declare PDF/A-2b (XMP identification, dc:title, an sRGB
output intent) and pass a PDF/A-2b validator (page-validation, an independent implementation of
veraPDF's rules; the test is skipped, saying so, where it is not installed).

The end-to-end tests run the real ``sohoa run`` once for the module; the unit tests below them
build one-page PDFs with ``ocr.pdf.assemble`` from a real tesseract text layer.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import re
import subprocess
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pikepdf
import pytest
from PIL import Image, ImageCms, ImageDraw
from sohoa_dev import synth

from sohoa.kernel.models import Manifest, PageImage
from sohoa.ocr import pdf as searchable

SOHOA = str(Path(sys.executable).parent / "sohoa")
pytestmark = pytest.mark.tesseract  # every page kind is read by the real engine
ETH = "\u00d0"  # what Tesseract may read for Vietnamese Đ (U+0110); never in a text layer


try:
    VALIDATOR = f"page-validation {importlib.metadata.version('page-validation')}"
except importlib.metadata.PackageNotFoundError:
    VALIDATOR = None
needs_validator = pytest.mark.skipif(
    VALIDATOR is None, reason="PDF/A validator not installed: pip install page-validation (scripts/setup installs it)")


def pdfa_failures(path: Path) -> list[str]:
    """What the PDF/A-2b validator finds wrong with ``path``: one line per rule and message."""
    import page

    report = page.validate_pdf(str(path), profile="2b")
    return [] if report.is_compliant else sorted({f"{f.rule_id}: {f.message}" for f in report.failures})


def run(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def pdftotext_pages(path: Path) -> list[str]:
    """Text of each page in content-stream order (``-raw``: the order tesseract wrote the words in)."""
    pages = run("pdftotext", "-raw", "-enc", "UTF-8", str(path), "-").split("\f")
    assert pages[-1].strip() == ""
    return pages[:-1]


def words(text: str) -> list[str]:
    return unicodedata.normalize("NFC", text).split()


def image_list(path: Path) -> list[dict[str, str]]:
    """``pdfimages -list`` rows as dicts keyed by its header (page, type, width, height, color, enc, x-ppi, ...)."""
    lines = run("pdfimages", "-list", str(path)).splitlines()
    header = lines[0].split()
    return [dict(zip(header, line.split())) for line in lines[2:]]


def extracted_images(path: Path, into: Path, flag: str) -> list[Path]:
    """The images of ``path`` as ``pdfimages`` writes them (``-j``: JPEG streams as their own bytes)."""
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["pdfimages", flag, str(path), str(into / "im")], check=True, capture_output=True)
    return sorted(into.glob("im-*"))


def qpdf_check(path: Path) -> None:
    done = subprocess.run(["qpdf", "--check", str(path)], capture_output=True, text=True)
    assert done.returncode == 0 and "No syntax or stream encoding errors found" in done.stdout, (
        path.name, done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    assert "WARNING" not in done.stdout + done.stderr, (path.name, done.stdout, done.stderr)


def check_pdfa_declaration(path: Path) -> None:
    with pikepdf.open(path) as pdf:
        meta = pdf.open_metadata()
        assert (meta.get("pdfaid:part"), meta.get("pdfaid:conformance")) == ("2", "B"), path.name
        assert meta.get("dc:title"), path.name
        assert str(pdf.docinfo.get("/Title")) == meta["dc:title"]  # /Info and XMP agree
        [intent] = pdf.Root.OutputIntents
        assert intent.S == pikepdf.Name.GTS_PDFA1 and intent.Type == pikepdf.Name.OutputIntent
        icc = intent.DestOutputProfile
        profile = icc.read_bytes()
        assert icc.N == 3 and profile[36:40] == b"acsp" and profile[16:20] == b"RGB " and profile[12:16] == b"mntr"
        ImageCms.ImageCmsProfile(io.BytesIO(profile))  # a profile lcms can read
        assert len(pdf.trailer.ID) == 2 and len(bytes(pdf.trailer.ID[0])) == 16  # file identifier


# ---------------------------------------------------------------- end to end: the archive of a dossier


@dataclass(frozen=True)
class ArchivedPdf:
    label: str
    path: Path
    pages: list[int]  # the dossier's page numbers, in order


@dataclass(frozen=True)
class Archived:
    manifest: Manifest
    pdfs: list[ArchivedPdf]
    images: dict[int, Path]  # page number -> the page image the pipeline captured (work store)


@pytest.fixture(scope="module")
def archived(birth_pdf, tmp_path_factory) -> Archived:
    root = tmp_path_factory.mktemp("searchable-pdf")
    archive, work = root / "archive", root / "work"
    done = subprocess.run([SOHOA, "run", "--json", str(birth_pdf[0]), "--archive", str(archive), "--work", str(work)],
                          capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert done.returncode == 0, done.stderr[-4000:]
    [line] = [json.loads(x) for x in done.stdout.splitlines() if x.strip()]
    manifest = Manifest.model_validate_json(Path(line["manifest"]).read_text())
    everything = [p.n for p in manifest.pages]
    pdfs = [ArchivedPdf("dossier", archive / manifest.files["searchable_pdf"].key, everything)]
    pdfs += [ArchivedPdf(f"document {i} ({d.type})", archive / d.file, d.pages)
             for i, d in enumerate(manifest.documents, start=1)]
    assert len(pdfs) == 5 and all(p.path.is_file() for p in pdfs)
    images = {}
    for page in manifest.pages:
        [images[page.n]] = (work / "pages").glob(f"{page.sha256}.*")
    return Archived(manifest, pdfs, images)


@pytest.mark.slow
def test_every_archived_pdf_is_qpdf_clean(archived):
    for pdf in archived.pdfs:
        qpdf_check(pdf.path)


@pytest.mark.slow
def test_each_pdf_has_the_pages_of_its_document(archived):
    counts = {}
    for pdf in archived.pdfs:
        with pikepdf.open(pdf.path) as document:
            counts[pdf.label] = len(document.pages)
    assert counts == {pdf.label: len(pdf.pages) for pdf in archived.pdfs}
    assert counts["dossier"] == len(archived.manifest.pages) == 5
    assert [d.pages for d in archived.manifest.documents] == [[1], [2, 3], [4], [5]]


@pytest.mark.slow
def test_page_images_are_the_scanned_jpegs_at_their_resolution(archived, tmp_path):
    pages = {p.n: p for p in archived.manifest.pages}
    for pdf in archived.pdfs:
        rows = image_list(pdf.path)
        assert [int(r["page"]) for r in rows] == list(range(1, len(pdf.pages) + 1)), pdf.label  # one image a page
        for row, n in zip(rows, pdf.pages):
            scanned = pages[n]
            assert (row["type"], row["enc"]) == ("image", "jpeg"), (pdf.label, row)
            assert (int(row["width"]), int(row["height"])) == (scanned.width, scanned.height), (pdf.label, row)
            assert (int(row["x-ppi"]), int(row["y-ppi"])) == (scanned.dpi, scanned.dpi), (pdf.label, row)
        extracted = extracted_images(pdf.path, tmp_path / pdf.label, "-j")
        assert [p.suffix for p in extracted] == [".jpg"] * len(pdf.pages), pdf.label
        for got, n in zip(extracted, pdf.pages):  # the JPEG bytes as captured: never decoded and re-encoded
            assert got.read_bytes() == archived.images[n].read_bytes(), (pdf.label, n)


@pytest.mark.slow
def test_text_layer_is_the_recorded_ocr_text(archived):
    texts = {p.n: p.text for p in archived.manifest.pages}
    for pdf in archived.pdfs:
        pages = pdftotext_pages(pdf.path)
        assert ETH not in "".join(pages), pdf.label
        assert len(pages) == len(pdf.pages), pdf.label
        for text, n in zip(pages, pdf.pages):
            assert unicodedata.is_normalized("NFC", texts[n])
            assert words(text) == words(texts[n]), (pdf.label, n)
    dossier = unicodedata.normalize("NFC", "".join(pdftotext_pages(archived.pdfs[0].path)))
    assert "TỜ KHAI ĐĂNG KÝ KHAI SINH" in dossier and "GIẤY CHỨNG SINH" in dossier
    declaration = unicodedata.normalize("NFC", "".join(pdftotext_pages(archived.pdfs[2].path)))
    assert "ĐĂNG KÝ" in declaration and "GIẤY CHỨNG SINH" not in declaration


@pytest.mark.slow
def test_size_is_at_most_1_3_times_the_page_images(archived):
    for pdf in archived.pdfs:
        images = sum(archived.images[n].stat().st_size for n in pdf.pages)
        assert pdf.path.stat().st_size <= 1.3 * images, (pdf.label, pdf.path.stat().st_size, images)


@pytest.mark.slow
def test_pdfa_2b_is_declared(archived):
    for pdf in archived.pdfs:
        check_pdfa_declaration(pdf.path)
    titles = []
    for pdf in archived.pdfs:
        with pikepdf.open(pdf.path) as document:
            titles.append(document.open_metadata()["dc:title"])
    assert titles[1:] == [f"{archived.manifest.dossier_id} {d.type}" for d in archived.manifest.documents]


@pytest.mark.slow
@needs_validator
def test_pdfa_2b_validator_finds_no_violation(archived):
    failures = {pdf.label: pdfa_failures(pdf.path) for pdf in archived.pdfs}
    assert failures == {pdf.label: [] for pdf in archived.pdfs}, f"{VALIDATOR}: {failures}"


# ---------------------------------------------------------------- unit: ocr.pdf.assemble on one page


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> tuple[Image.Image, Path]:
    """A small grey scan with a Vietnamese title, and the text-only PDF tesseract wrote for it."""
    folder = tmp_path_factory.mktemp("layer")
    image = Image.new("L", (1400, 420), 255)
    draw = ImageDraw.Draw(image)
    draw.text((60, 80), "TỜ KHAI ĐĂNG KÝ KHAI SINH", font=synth._pil_font("serif-bold", 64), fill=0)
    draw.text((60, 240), "Độc lập - Tự do - Hạnh phúc", font=synth._pil_font("serif", 56), fill=0)
    image.save(folder / "scan.png", dpi=(300, 300))
    subprocess.run(["tesseract", str(folder / "scan.png"), str(folder / "layer"), "-l", "vie", "--dpi", "300",
                    "-c", "textonly_pdf=1", "pdf"], check=True, capture_output=True, env={**os.environ, "OMP_THREAD_LIMIT": "1"})
    return image, folder / "layer.pdf"


def assemble_one(image_path: Path, media_type: str, size: tuple[int, int], layer: Path, out: Path) -> Path:
    page = PageImage(n=1, key="pages/x", sha256="0" * 64, media_type=media_type, width=size[0], height=size[1],
                     dpi=300, origin="image")
    searchable.assemble([searchable.PagePlan(page=page, image=image_path, layer=layer, layer_matrix=(1, 0, 0, 1, 0, 0),
                                             rotate=0)], out, title="scan")
    return out


def test_text_layer_eth_is_folded_to_vietnamese_d(scan, tmp_path):
    """Tesseract's PDF holds what it read; the PDF we write holds the text we record (Ð folded to Đ, NFC)."""
    image, layer = scan
    with pikepdf.open(layer) as pdf:
        stream = pdf.pages[0].Contents.read_bytes()
        assert re.search(rb"<[0-9A-F]*0110", stream), "the layer should show Đ as the UTF-16 code 0110"
        pdf.pages[0].Contents = pdf.make_stream(re.sub(rb"(<(?:[0-9A-F]{4})*?)0110", rb"\g<1>00D0", stream))
        pdf.save(tmp_path / "eth-layer.pdf")
    assert ETH in run("pdftotext", "-raw", str(tmp_path / "eth-layer.pdf"), "-")  # what tesseract might have written
    image.save(tmp_path / "scan.png")
    out = assemble_one(tmp_path / "scan.png", "image/png", image.size, tmp_path / "eth-layer.pdf", tmp_path / "out.pdf")
    text = run("pdftotext", "-raw", str(out), "-")
    assert ETH not in text and "ĐĂNG KÝ" in unicodedata.normalize("NFC", text)


MODES = [  # (PIL mode, format, media type): the page images capture can hand over
    ("L", "JPEG", "image/jpeg"), ("RGB", "JPEG", "image/jpeg"), ("CMYK", "JPEG", "image/jpeg"),
    ("L", "PNG", "image/png"), ("RGB", "PNG", "image/png"), ("1", "PNG", "image/png"), ("P", "PNG", "image/png"),
    ("LA", "PNG", "image/png"),
]
def one_page_pdf(scan, folder: Path, mode: str, fmt: str, media_type: str) -> tuple[Image.Image, Path, Path]:
    image, layer = scan
    source = image.convert(mode)
    path = folder / f"page.{fmt.lower()}"
    source.save(path, fmt)
    return source, path, assemble_one(path, media_type, source.size, layer, folder / "out.pdf")


@pytest.mark.parametrize(("mode", "fmt", "media_type"), MODES)
def test_each_kind_of_page_image_is_kept_as_scanned_under_its_text(scan, tmp_path, mode, fmt, media_type):
    source, path, out = one_page_pdf(scan, tmp_path, mode, fmt, media_type)
    qpdf_check(out)
    [row] = image_list(out)
    assert (int(row["width"]), int(row["height"]), int(row["x-ppi"]), int(row["y-ppi"])) == (*source.size, 300, 300)
    if fmt == "JPEG":
        [got] = extracted_images(out, tmp_path / "x", "-j")
        assert got.read_bytes() == path.read_bytes()  # the JPEG's own bytes
    else:
        [got] = extracted_images(out, tmp_path / "x", "-png")
        with Image.open(got) as extracted:
            assert extracted.convert("RGB").tobytes() == source.convert("RGB").tobytes()  # lossless
    assert "ĐĂNG KÝ" in unicodedata.normalize("NFC", run("pdftotext", str(out), "-"))
    check_pdfa_declaration(out)


@needs_validator
@pytest.mark.parametrize(("mode", "fmt", "media_type"), MODES)
def test_each_kind_of_page_image_passes_the_pdfa_validator(scan, tmp_path, mode, fmt, media_type):
    _, _, out = one_page_pdf(scan, tmp_path, mode, fmt, media_type)
    assert pdfa_failures(out) == [], VALIDATOR
