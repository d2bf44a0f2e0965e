"""The two ways of running Tesseract: warm in-process engines (libtesseract) and the program.

They must read the same pixels into the same text, words and text layer, so that the choice
is about speed and isolation only; the warm pool must never lend one engine to two threads.
"""

from __future__ import annotations

import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from sohoa_dev import synth

from sohoa.kernel.errors import OcrError
from sohoa.kernel.settings import Settings
from sohoa.ocr import engines, libtesseract, normalize, tesseract
from sohoa.ocr.base import PageToRead
from sohoa.steps import capture as capturing
from sohoa.steps import ocr as engine

pytestmark = [pytest.mark.tesseract,
              pytest.mark.skipif(not libtesseract.available(), reason="libtesseract.so.5 is not installed")]
TESSDATA = tesseract.tessdata_dir()


@pytest.fixture(scope="module")
def page_image(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """The grey OCR copy of a generated declaration page, as a PGM file and as pixels."""
    root = tmp_path_factory.mktemp("engines")
    pdf = root / "page.pdf"
    synth.make_dossier(pdf, include=["giay_chung_sinh"], seed=5)
    subprocess.run(["pdfimages", "-j", str(pdf), str(root / "img")], check=True)
    [jpeg] = sorted(root.glob("img-*.jpg"))
    _, gray = normalize.prepare(jpeg, 300, 0, 0.0)
    pgm = root / "page.pgm"
    cv2.imwrite(str(pgm), gray)
    return pgm, gray


def _pdf_text(path: Path) -> str:
    return subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout


def test_library_and_program_read_the_same_pixels_the_same_way(page_image, tmp_path):
    pgm, gray = page_image
    lib_engine = libtesseract.Engine(TESSDATA, "vie+eng", 3)
    try:
        text, tsv, layer = lib_engine.read(gray, 300, tmp_path / "lib", timeout_s=120)
    finally:
        lib_engine.close()
    out = tesseract.ocr_page(pgm, tmp_path / "cli", cmd="tesseract", languages="vie+eng", psm=3, dpi=300, timeout=120)
    assert "GIẤY CHỨNG SINH" in tesseract.normalize_text(text)
    assert text == out.text.replace("\f", "")  # the program ends its page with a form feed
    assert tsv.splitlines()[1:] == out.tsv.splitlines()[2:]  # the program adds a header and a page-level row
    assert _pdf_text(layer) == _pdf_text(out.pdf) and "CHỨNG SINH" in _pdf_text(layer)
    subprocess.run(["qpdf", "--check", str(layer)], check=True, capture_output=True)


def test_library_and_cli_engines_give_the_same_page_reading(page_image, tmp_path):
    """Through the engine interface: the same PageReading (the text layers compared by their text)."""
    pgm, gray = page_image
    settings = Settings(languages="vie+eng", jobs=1)
    readings = {}
    for name in ("library", "cli"):
        page = PageToRead(n=1, source=pgm, size=(gray.shape[1], gray.shape[0]), dpi=300, rotation=0, skew=0.0,
                          base=tmp_path / name)
        readings[name] = engines.get(name).read(page, settings, timeout_s=120)
    library, cli = readings["library"], readings["cli"]
    assert (library.image, library.text, library.words, library.lines) == (cli.image, cli.text, cli.words, cli.lines)
    assert "GIẤY CHỨNG SINH" in library.text and len(library.words) > 20 and library.lines[-1].id == library.words[-1].line
    assert _pdf_text(library.layer) == _pdf_text(cli.layer) != ""


def test_a_page_over_its_time_limit_is_a_page_timeout(page_image, tmp_path):
    _, gray = page_image
    lib_engine = libtesseract.Engine(TESSDATA, "vie+eng", 3)
    try:
        with pytest.raises(OcrError) as raised:
            lib_engine.read(gray, 300, tmp_path / "slow", timeout_s=0.05)
        assert raised.value.code == "page_timeout"
        text, _, _ = lib_engine.read(gray, 300, tmp_path / "again", timeout_s=120)  # the engine is still usable
        assert "CHỨNG SINH" in tesseract.normalize_text(text)
    finally:
        lib_engine.close()


def test_the_pool_lends_each_engine_to_one_thread_and_keeps_them_warm(page_image, tmp_path):
    _, gray = page_image
    small = np.ascontiguousarray(gray[: gray.shape[0] // 4])  # the title zone: quick to read
    pool = libtesseract.EnginePool(TESSDATA, "vie+eng", 3, size=2)
    holders: set[int] = set()
    most = 0
    lock = threading.Lock()

    def one(n: int) -> str:
        nonlocal most
        with pool.engine() as lent:
            with lock:
                assert id(lent) not in holders, "one engine lent to two threads"
                holders.add(id(lent))
                most = max(most, len(holders))
            try:
                return lent.read(small, 300, tmp_path / f"t{n}", timeout_s=120)[0]
            finally:
                with lock:
                    holders.discard(id(lent))

    try:
        with ThreadPoolExecutor(5) as threads:
            texts = list(threads.map(one, range(8)))
        assert pool._created == 2 and most == 2
        assert len(set(texts)) == 1 and "CHỨNG SINH" in tesseract.normalize_text(texts[0])
    finally:
        pool.close()


def test_missing_language_data_is_a_clear_error_in_both_engines():
    for kind in ("library", "cli"):
        with pytest.raises(OcrError) as raised:
            engine.check_engine(Settings(ocr_engine=kind, languages="vie+xyz"))
        assert raised.value.code == "language_missing" and "xyz" in str(raised.value)


def test_the_engine_kind_enters_the_ocr_cache_key():
    keys = {kind: engine.ocr_key("capture-key", Settings(ocr_engine=kind)) for kind in ("library", "cli")}
    assert keys["library"] != keys["cli"]
    assert engine.ocr_key("capture-key", Settings(ocr_engine="auto")) == keys["library"]


def test_both_engines_give_the_same_ocr_result(tmp_path):
    """The whole step, both ways, on a dossier with a skewed (degraded) page: same text, words, layers."""
    path = tmp_path / "d.pdf"
    synth.make_dossier(path, include=["to_khai_khai_sinh"], seed=2, degrade=True)
    results = {}
    for kind in ("library", "cli"):
        settings = Settings(archive=str(tmp_path / "archive"), work=str(tmp_path / f"work-{kind}"), ocr_engine=kind)
        from sohoa.storage import open_store

        store = open_store(settings.work)
        store.ensure_ready()
        info = capturing.describe_source(path, settings)
        captured = capturing.capture(path, info, store, settings, capturing.capture_key(info, settings))
        result = engine.run_ocr(captured, store, settings, engine.ocr_key(captured.key, settings))
        words = engine.load_words(store, result)
        results[kind] = ([(p.text, p.deskew, p.orientation) for p in result.pages], [[w.text for w in p.words] for p in words])
        assert result.engine.startswith("tesseract")
    assert results["library"] == results["cli"]
    assert any(deskew for _, deskew, _ in results["library"][0])  # the degraded page was straightened
