"""Page clean-up on generated scans: orientation, skew, blank backs and low resolution are detected.

A folder of pages is made from a synthetic dossier with known rotations, skews and blank
backs; capture and OCR must find each. The measured rates are printed (``pytest -s``).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter
from sohoa_dev import synth

from sohoa.steps import capture as capturing
from sohoa.steps import ocr as engine

pytestmark = pytest.mark.slow

ROTATIONS = [90, 180, 270, 180, 90, 270]  # clockwise turn needed to read the page
SKEWS = [2.0, -3.0, 4.5, -5.0]  # counter-clockwise, degrees


def _blank_backs(size: tuple[int, int], seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    white = Image.new("L", size, 255)
    speckled = np.full(size[::-1], 250, np.uint8)
    speckled[rng.random(speckled.shape) < 0.0005] = 40  # scanner dust
    bleed = Image.new("L", size, 245)  # show-through of the front, very faint
    return [white, Image.fromarray(speckled), bleed.filter(ImageFilter.GaussianBlur(3))]


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    """Pages with a known truth, captured and OCR'd once for all tests of this module."""
    from sohoa.kernel.settings import Settings
    from sohoa.storage import open_store

    root = tmp_path_factory.mktemp("cleanup")
    pages = [p.convert("L") for p in synth.render_pages(procedure="1.001612", seed=5, dpi=300)]
    truth: list[dict] = []
    folder = root / "pages"
    folder.mkdir()

    def add(image: Image.Image, dpi: int = 300, **expected) -> None:
        n = len(truth) + 1
        image.save(folder / f"page-{n}.png", dpi=(dpi, dpi))
        truth.append({"rotation": 0, "skew": 0.0, "blank": False, "dpi": dpi, **expected})

    for i, turn in enumerate(ROTATIONS):
        add(pages[i % len(pages)].rotate(turn, expand=True), rotation=turn)  # PIL turns counter-clockwise
    for i, skew in enumerate(SKEWS):
        add(pages[(i + 1) % len(pages)].rotate(skew, expand=True, fillcolor=255, resample=Image.BICUBIC), skew=skew)
    for blank in _blank_backs(pages[0].size, seed=1):
        add(blank, blank=True)
    add(pages[1])
    add(pages[2].resize((pages[2].width // 2, pages[2].height // 2), Image.LANCZOS), dpi=150)

    settings = Settings(archive=str(root / "archive"), work=str(root / "work"))
    store = open_store(settings.work)
    store.ensure_ready()
    info = capturing.describe_source(folder, settings)
    captured = capturing.capture(folder, info, store, settings, capturing.capture_key(info, settings))
    ocr = engine.run_ocr(captured, store, settings, engine.ocr_key(captured.key, settings))
    return truth, captured, ocr


def test_orientation_is_detected(scanned):
    truth, captured, ocr = scanned
    rotated = [(t["rotation"], p.orientation) for t, p in zip(truth, ocr.pages) if t["rotation"]]
    upright = [p.orientation for t, p in zip(truth, ocr.pages) if not t["rotation"] and not t["blank"]]
    rate = sum(want == got for want, got in rotated) / len(rotated)
    print(f"\norientation: {rate:.0%} of {len(rotated)} turned pages; upright pages kept: {upright.count(0)}/{len(upright)}")
    assert rate == 1.0, rotated
    assert upright.count(0) == len(upright)
    assert all(p.confidence > 85 for t, p in zip(truth, ocr.pages) if not t["blank"])


def test_skew_is_measured_and_corrected(scanned):
    truth, captured, ocr = scanned
    skewed = [(t["skew"], c.skew, o.deskew) for t, c, o in zip(truth, captured.pages, ocr.pages) if t["skew"]]
    errors = [abs(want - got) for want, got, _ in skewed]
    print(f"\nskew: {len(skewed)} pages, max error {max(errors):.2f} degrees, corrected: {[d for *_, d in skewed]}")
    assert max(errors) <= 0.3
    assert all(abs(deskew - measured) < 1e-9 for _, measured, deskew in skewed)


def test_blank_backs_are_flagged_and_text_pages_are_not(scanned):
    truth, captured, _ = scanned
    found = [(t["blank"], c.blank) for t, c in zip(truth, captured.pages)]
    hits = sum(want and got for want, got in found)
    false_alarms = sum(got and not want for want, got in found)
    print(f"\nblank: {hits}/{sum(w for w, _ in found)} detected, {false_alarms} false alarms on {len(found)} pages")
    assert hits == sum(w for w, _ in found) and false_alarms == 0


def test_low_resolution_is_upscaled_for_ocr(scanned):
    truth, captured, ocr = scanned
    low = [(c.dpi, o.ocr_dpi, o.confidence) for t, c, o in zip(truth, captured.pages, ocr.pages) if t["dpi"] < 200]
    assert low == [(150, 300, low[0][2])] and low[0][2] > 85
