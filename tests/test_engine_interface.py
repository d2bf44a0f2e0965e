"""The OCR engine interface: the step runs on any registered engine, the registry says what it has,
and the Tesseract engines keep the cache keys they had before the interface."""

from __future__ import annotations

import pickle
import subprocess
import unicodedata
from pathlib import Path

import pikepdf
import pytest
from PIL import Image, ImageDraw

from sohoa.kernel.errors import OcrError
from sohoa.kernel.keys import step_key
from sohoa.kernel.settings import Settings
from sohoa.ocr import engines, libtesseract, tesseract
from sohoa.steps import capture as capturing
from sohoa.steps import ocr
from tests.fake_engine import FakeEngine, forbid_tesseract, installed

TEXTS = {1: "TỜ KHAI ĐĂNG KÝ KHAI SINH\nHọ và tên: Nguyễn Thị Hồng Nhung", 2: "Trang hai\ncủa hồ sơ"}


def _scan(path: Path) -> Path:
    """A two-page image-only PDF, made by Pillow: dark bars where the lines of a page would be."""
    pages = []
    for n in (1, 2):
        page = Image.new("L", (1240, 1754), 255)  # A4 at 150 dpi: OCR reads an upscaled copy
        draw = ImageDraw.Draw(page)
        for row in range(4 + n):
            draw.rectangle((150, 200 + row * 90, 1000 - row * 40, 230 + row * 90), fill=30)
        pages.append(page)
    pages[0].save(path, save_all=True, append_images=pages[1:], resolution=150)
    return path


def _capture(path: Path, settings, store):
    info = capturing.describe_source(path, settings)
    return capturing.capture(path, info, store, settings, capturing.capture_key(info, settings))


def test_the_ocr_step_runs_on_the_fake_engine_without_tesseract(tmp_path, settings, work_store, monkeypatch):
    captured = _capture(_scan(tmp_path / "scan.pdf"), settings, work_store)
    marker = forbid_tesseract(monkeypatch, tmp_path)
    with installed(FakeEngine(TEXTS)) as fake:
        key = ocr.ocr_key(captured.key, settings)
        ocr.warm_up(settings)
        result = ocr.run_ocr(captured, work_store, settings, key)
    assert not marker.exists() and sorted(fake.reads) == [(1, 0), (2, 0)] and fake.warmed == 1
    assert result.engine == "fake-ocr 1.0" and [p.text for p in result.pages] == [TEXTS[1], TEXTS[2]]
    assert all(p.confidence == 95.0 and p.attempts == 1 for p in result.pages)
    words = ocr.load_words(work_store, result)
    assert [[w.text for w in p.words] for p in words] == [TEXTS[n].split() for n in (1, 2)]
    page = captured.pages[0]
    assert all(0 <= w.box[0] and w.box[0] + w.box[2] <= page.width for w in words[0].words)  # on the page as stored
    assert [w.line for w in words[0].words[-7:]] == [1] * 7
    pdf = tmp_path / "searchable.pdf"
    pdf.write_bytes(work_store.get_bytes(result.searchable_pdf_key))
    with pikepdf.open(pdf) as document:
        assert len(document.pages) == 2
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert "KHAI SINH" in unicodedata.normalize("NFC", text) and "Trang hai" in text
    assert not work_store.exists(f"ocr/{key}/p0001.json")  # checkpoints removed once the step is done


def test_the_fake_engine_has_cache_keys_of_its_own(fake_engine):
    cli = Settings(ocr_engine="cli")
    assert ocr.key_settings(cli)["runner"] == "fake" and ocr.engine_kind(cli) == "fake"
    key = ocr.ocr_key("capture-x", cli)
    fake_engine.texts = {1: "khác"}
    assert ocr.ocr_key("capture-x", cli) != key  # another reading, another key


def test_a_page_that_fails_keeps_the_pages_read_before_it(tmp_path, settings, work_store):
    captured = _capture(_scan(tmp_path / "scan.pdf"), settings, work_store)
    fails = FakeEngine(errors={2: OcrError("page_timeout", "page 2 took too long")})
    key = ocr.ocr_key(captured.key, settings)
    with installed(fails), pytest.raises(OcrError) as raised:
        ocr.run_ocr(captured, work_store, settings.model_copy(update={"jobs": 1}), key)
    assert raised.value.code == "page_timeout"
    assert work_store.exists(f"ocr/{key}/p0001.json") and not work_store.exists(f"ocr/{key}/p0002.json")
    with installed(FakeEngine()) as again:  # the next run with the key reads only the page not kept
        ocr.run_ocr(captured, work_store, settings, key)
    assert again.reads == [(2, 0)]


def test_the_registry_refuses_an_unknown_engine():
    with pytest.raises(OcrError) as raised:
        engines.get("abbyy")
    assert raised.value.code == "engine_missing"
    assert str(raised.value) == "no OCR engine named 'abbyy'; engines are: auto, cli, library"
    with pytest.raises(engines.UnknownEngine) as chosen:
        engines.choose(Settings().model_copy(update={"ocr_engine": "abbyy"}))  # past the settings' own check
    copy = pickle.loads(pickle.dumps(chosen.value))  # as a task's failed state carries it
    assert (str(copy), copy.code) == (str(raised.value), "engine_missing")
    with pytest.raises(ValueError):
        engines.register(FakeEngine(name="auto"))


def test_an_installed_engine_is_gone_after_its_block():
    with installed(FakeEngine(name="other")):
        assert engines.get("other").name == "other" and engines.choose(Settings(ocr_engine="cli")).name == "other"
    assert engines.choose(Settings(ocr_engine="cli")).name == "cli"
    with pytest.raises(engines.UnknownEngine):
        engines.get("other")


def test_every_engine_has_the_interface():
    for engine in (engines.get("library"), engines.get("cli"), FakeEngine()):
        assert isinstance(engine, engines.OcrEngine)


def test_auto_is_the_library_when_it_loads_else_the_program(monkeypatch):
    expected = "library" if libtesseract.available() else "cli"
    assert ocr.engine_kind(Settings(ocr_engine="auto")) == expected
    monkeypatch.setattr(libtesseract, "available", lambda: False)
    assert ocr.engine_kind(Settings(ocr_engine="auto")) == "cli"


def _old_key_settings(kind: str, settings: Settings) -> dict:
    """key_settings() as it was written before the engine interface, branch by branch."""
    library = libtesseract.library_path() if kind == "library" else None
    return {"languages": settings.languages, "psm": settings.psm, "runner": kind,
            "engine": tesseract.library_fingerprint(library, settings.languages) if library
            else tesseract.engine_fingerprint(settings.tesseract_cmd, settings.languages)}


@pytest.mark.tesseract
@pytest.mark.parametrize("kind", ["library", "cli"])
@pytest.mark.parametrize("languages", ["vie", "vie+eng"])
def test_the_tesseract_engines_keep_their_ocr_keys(kind, languages):
    if kind == "library" and not libtesseract.available():
        pytest.skip("libtesseract.so.5 is not installed")
    settings = Settings(ocr_engine=kind, languages=languages)
    old = step_key("ocr", ocr.VERSION, _old_key_settings(kind, settings), "capture-abc")
    assert ocr.ocr_key("capture-abc", settings) == old


def plugin_engine() -> FakeEngine:
    """What another distribution would point its ``sohoa.ocr_engines`` entry point at."""
    return FakeEngine(name="plugin-ocr")


def test_an_engine_another_distribution_ships_is_found_by_its_entry_point(monkeypatch):
    from importlib import metadata

    from sohoa.ocr import engines as registry

    entry = metadata.EntryPoint(name="plugin-ocr", value="tests.test_engine_interface:plugin_engine",
                                group=registry.ENTRY_POINTS)
    monkeypatch.setattr(registry.metadata, "entry_points",
                        lambda group, name: [e for e in [entry] if e.group == group and e.name == name])
    settings = Settings(ocr_engine="plugin-ocr")
    try:
        assert registry.choose(settings).name == "plugin-ocr"
        assert "plugin-ocr" in registry.names()
    finally:
        registry._ENGINES.pop("plugin-ocr", None)
    with pytest.raises(registry.UnknownEngine):
        registry.get("no-such-engine")
