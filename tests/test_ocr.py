"""OCR with the real Tesseract: text, words, confidences and the searchable PDF."""

from __future__ import annotations

import re
import subprocess
import unicodedata

import pikepdf
import pytest
from sohoa_dev import synth

from sohoa.ocr import tesseract, tesseract_engines
from sohoa.steps import capture as capturing
from sohoa.steps import ocr as engine


@pytest.fixture(scope="module")
def two_pages(tmp_path_factory):
    out = tmp_path_factory.mktemp("ocr") / "two.pdf"
    truth = synth.make_dossier(out, fmt="pdf", include=["to_khai_khai_sinh"])
    return out, truth


@pytest.mark.tesseract
def test_ocr_reads_vietnamese_and_builds_a_searchable_pdf(two_pages, settings, work_store, tmp_path):
    path, truth = two_pages
    info = capturing.describe_source(path, settings)
    captured = capturing.capture(path, info, work_store, settings, capturing.capture_key(info, settings))
    result = engine.run_ocr(captured, work_store, settings, engine.ocr_key(captured.key, settings))

    assert [p.n for p in result.pages] == [1, 2]
    first = result.pages[0]
    assert unicodedata.is_normalized("NFC", first.text)
    for word in truth.pages[0].expected_words:
        assert word in first.text
    assert first.confidence > 80
    words = engine.load_words(work_store, result)
    assert [w.n for w in words] == [1, 2] and len(words[0].words) == first.word_count > 20
    assert all(w.box[2] > 0 and w.box[3] > 0 and 0 <= w.conf <= 100 for w in words[0].words)
    assert "ĐĂNG" in {w.text for w in words[0].words}

    pdf = tmp_path / "searchable.pdf"
    pdf.write_bytes(work_store.get_bytes(result.searchable_pdf_key))
    subprocess.run(["qpdf", "--check", str(pdf)], check=True, capture_output=True)
    text = unicodedata.normalize("NFC", subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout)
    assert "TỜ KHAI ĐĂNG KÝ KHAI SINH" in text
    with pikepdf.open(pdf) as document:
        meta = document.open_metadata()
        assert (meta["pdfaid:part"], meta["pdfaid:conformance"]) == ("2", "B")
        assert document.Root.OutputIntents[0].S == "/GTS_PDFA1"
    images = sum(len(work_store.get_bytes(p.key)) for p in captured.pages)
    assert pdf.stat().st_size <= 1.3 * images  # scanned JPEGs embedded as they are, plus a small text layer
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"^Pages:\s+2$", info, re.M) and "(A4)" in info


def test_eth_is_folded_to_vietnamese_d():
    assert tesseract.normalize_text("\u00d0ăng ky\u0301") == "Đăng ký"


def test_missing_engine_is_a_clear_error():
    from sohoa.kernel.errors import OcrError

    with pytest.raises(OcrError, match="tesseract not found"):
        tesseract.resolve("no-such-tesseract-binary")


def test_tsv_parsing_numbers_lines():
    tsv = ("level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n"
           "5\t1\t1\t1\t1\t1\t10\t20\t30\t40\t96.5\tTỜ\n"
           "5\t1\t1\t1\t1\t2\t50\t20\t30\t40\t91\tKHAI\n"
           "5\t1\t1\t1\t2\t1\t10\t80\t30\t40\t-1\t \n"
           "5\t1\t1\t2\t1\t1\t10\t90\t30\t40\t88\tSinh\n"
           "5\t1\t2\t1\t1\t1\t500\t90\t60\t40\t90\tnăm\n")
    words, lines = tesseract_engines.read_tsv(tsv)
    assert [(w.text, w.line) for w in words] == [("TỜ", 0), ("KHAI", 0), ("Sinh", 1), ("năm", 2)]
    assert [(line.id, line.block, line.box) for line in lines] == [(0, 0, (10, 20, 70, 40)), (1, 0, (10, 90, 30, 40)),
                                                                  (2, 1, (500, 90, 60, 40))]
    assert tesseract_engines.parse_tsv(tsv) == words


def test_a_tesseract_reading_is_nfc_with_the_eth_folded(tmp_path):
    from sohoa.ocr import normalize

    tsv = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n" \
          "5\t1\t1\t1\t1\t1\t0\t0\t10\t10\t90\t\u00d0a\u0306ng\n"
    got = tesseract_engines.reading(normalize.as_stored((100, 100), 300), " \u00d0ăng ky\u0301\n", tsv, tmp_path / "x.pdf")
    assert (got.text, [w.text for w in got.words], got.lines[0].box) == ("Đăng ký", ["Đăng"], (0, 0, 10, 10))
