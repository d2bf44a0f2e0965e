"""The OCR step: every page through Tesseract in parallel, then one searchable PDF.

At most ``settings.jobs`` pages are read at once in a process, one thread each, whatever the
number of dossiers in flight: the warm engines of ocr/libtesseract.py (or the tesseract
program's process slots) are shared process-wide, so pages of several dossiers interleave
and the cores stay busy while one dossier is captured or archived. Each dossier prepares one
page more than it can read, so decoding and straightening the next page overlaps the engines.

Each page is read from an upright, deskewed, >=300 dpi grey copy (ocr/normalize.py).
Upside-down pages cannot be told from line structure, so a page that reads with low
confidence is read once more turned 180 degrees and the better reading wins: one pass for
good pages, two for bad ones.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import cv2
from pydantic import TypeAdapter

from ocr import libtesseract, normalize, tesseract
from ocr import pdf as searchable
from pipeline.keys import step_key
from pipeline.models import CaptureResult, OcrPage, OcrResult, PageImage, PageWords, Word
from pipeline.settings import Settings
from storage import Store, materialize

# 3: upright/deskewed/upscaled OCR copy, upside-down retry; 4: PDF/A-2b declared; 5: warm engine, grey copy;
# 6: CMYK pages in an ICC-based colour space
VERSION = "6"
RETRY_BELOW_CONFIDENCE = 70.0
_WORDS = TypeAdapter(list[PageWords])
log = logging.getLogger("sohoa.ocr")


def engine_kind(settings: Settings) -> str:
    """``library`` (warm, in-process) or ``cli`` (a process per page); ``auto`` takes the library when it loads."""
    if settings.ocr_engine == "auto":
        return "library" if libtesseract.available() else "cli"
    return settings.ocr_engine


def key_settings(settings: Settings) -> dict:
    kind = engine_kind(settings)
    library = libtesseract.library_path() if kind == "library" else None
    return {
        "languages": settings.languages,
        "psm": settings.psm,
        "runner": kind,
        "engine": tesseract.library_fingerprint(library, settings.languages) if library
        else tesseract.engine_fingerprint(settings.tesseract_cmd, settings.languages),
    }


def ocr_key(capture_key: str, settings: Settings) -> str:
    return step_key("ocr", VERSION, key_settings(settings), capture_key)


def parse_tsv(tsv: str) -> list[Word]:
    """Words (level 5 rows) with boxes and confidences, numbered by line in reading order."""
    words: list[Word] = []
    lines: dict[tuple[str, str, str], int] = {}
    for row in tsv.splitlines()[1:]:
        cols = row.split("\t")
        if len(cols) < 12 or cols[0] != "5" or not cols[11].strip():
            continue
        conf = float(cols[10])
        if conf < 0:
            continue
        line = lines.setdefault((cols[2], cols[3], cols[4]), len(lines))
        box = (int(cols[6]), int(cols[7]), int(cols[8]), int(cols[9]))
        words.append(Word(text=cols[11].strip(), box=box, conf=round(conf, 2), line=line))
    return words


@dataclass
class Reading:
    """One tesseract pass over one OCR copy of a page."""

    image: normalize.OcrImage
    text: str
    words: list[Word]
    layer: Path

    @property
    def confidence(self) -> float:
        return round(sum(w.conf for w in self.words) / len(self.words), 2) if self.words else 0.0


def read(page: PageImage, source: Path, workdir: Path, rotation: int, settings: Settings) -> Reading:
    base = workdir / f"p{page.n:04d}r{rotation % 360:03d}"
    if engine_kind(settings) == "library":
        image, text, tsv, layer = _read_in_process(page, source, base, rotation, settings)
    else:
        image, text, tsv, layer = _read_with_program(page, source, base, rotation, settings)
    text, tsv = tesseract.normalize_text(text), tesseract.normalize_text(tsv)
    found = parse_tsv(tsv)
    boxes = normalize.to_original(image, [w.box for w in found])
    words = [w.model_copy(update={"box": box}) for w, box in zip(found, boxes)]
    return Reading(image=image, text=text.strip(), words=words, layer=layer)


def _read_in_process(page: PageImage, source: Path, base: Path, rotation: int,
                     settings: Settings) -> tuple[normalize.OcrImage, str, str, Path]:
    image, gray = normalize.prepare(source, page.dpi, rotation, page.skew)  # before taking an engine: overlaps
    with _engines(settings).engine() as engine:
        text, tsv, layer = engine.read(gray, image.dpi, base, settings.page_timeout_s)
    return image, text, tsv, layer


def _read_with_program(page: PageImage, source: Path, base: Path, rotation: int,
                       settings: Settings) -> tuple[normalize.OcrImage, str, str, Path]:
    path = source
    image = normalize.as_stored((page.width, page.height), page.dpi)
    if normalize.needs_copy(page.dpi, rotation, page.skew):
        image, gray = normalize.prepare(source, page.dpi, rotation, page.skew)
        path = base.with_suffix(".pgm")  # no compression to pay for a file tesseract reads once
        cv2.imwrite(str(path), gray)
        del gray
    try:
        with tesseract.slots(settings.jobs):
            out = tesseract.ocr_page(path, base, cmd=settings.tesseract_cmd, languages=settings.languages,
                                     psm=settings.psm, dpi=image.dpi, timeout=settings.page_timeout_s)
    finally:
        if path != source:
            path.unlink(missing_ok=True)
    return image, out.text, out.tsv, out.pdf


def _engines(settings: Settings) -> libtesseract.EnginePool:
    folder = tesseract.tessdata_dir()
    if folder is None:
        raise tesseract.language_error(settings.languages.split("+"))
    return libtesseract.pool(folder, settings.languages, settings.psm, settings.jobs)


def warm_up(settings: Settings) -> None:
    """Start loading this process's engines now, so that the first page does not wait for them."""
    if engine_kind(settings) == "library" and not tesseract.missing_languages(settings.languages):
        _engines(settings).warm()


def check_engine(settings: Settings) -> str:
    """The engine's version line, after checking that it and its language data are there."""
    if engine_kind(settings) == "library":
        missing = tesseract.missing_languages(settings.languages)
        if missing:
            raise tesseract.language_error(missing)
        return libtesseract.version()
    tesseract.check_languages(settings.tesseract_cmd, settings.languages)
    return tesseract.version(settings.tesseract_cmd)


def read_page(page: PageImage, source: Path, workdir: Path, settings: Settings) -> tuple[Reading, int]:
    """The best reading of a page, and how many passes it took."""
    first = read(page, source, workdir, 90 if page.sideways else 0, settings)
    if page.blank or first.confidence >= RETRY_BELOW_CONFIDENCE:
        return first, 1
    turned = read(page, source, workdir, first.image.rotation + 180, settings)
    return (turned if turned.confidence > first.confidence else first), 2


def run_ocr(capture: CaptureResult, store: Store, settings: Settings, key: str,
            on_progress: Callable[[int, int], None] | None = None) -> OcrResult:
    """OCR all pages of a captured dossier and assemble its searchable PDF in the work store.

    ``on_progress(done, total)`` is called after each page, from the calling thread."""
    engine_version = check_engine(settings)
    total = len(capture.pages)
    with tempfile.TemporaryDirectory(prefix="sohoa-ocr-") as tmp:
        workdir = Path(tmp)

        def one(page: PageImage) -> tuple[OcrPage, searchable.PagePlan, list[Word]]:
            started = time.perf_counter()
            source = materialize(store, page.key, workdir / f"img-{page.n:04d}{Path(page.key).suffix}")
            best, attempts = read_page(page, source, workdir, settings)
            layer_key = f"ocr/{key}/p{page.n:04d}.pdf"
            store.put_file(layer_key, best.layer, content_type="application/pdf")
            result = OcrPage(
                n=page.n, text=best.text, word_count=len(best.words), confidence=best.confidence,
                orientation=best.image.rotation, deskew=best.image.deskew, ocr_dpi=best.image.dpi,
                attempts=attempts, text_layer_key=layer_key, duration_s=round(time.perf_counter() - started, 3),
            )
            plan = searchable.PagePlan(page=page, image=source, layer=best.layer,
                                       layer_matrix=normalize.layer_to_page(best.image, page.height, page.dpi),
                                       rotate=best.image.rotation)
            return result, plan, best.words

        done: dict[int, tuple[OcrPage, searchable.PagePlan, list[Word]]] = {}
        with ThreadPoolExecutor(max_workers=min(settings.jobs + 1, total)) as pool:
            futures = [pool.submit(one, page) for page in capture.pages]
            for count, future in enumerate(as_completed(futures), start=1):
                result = future.result()
                done[result[0].n] = result
                # logged from the calling thread, where the orchestrator's run context lives
                log.info("OCR %s: %d/%d pages (page %d: %d words, confidence %.1f%s)", capture.source.name, count, total, result[0].n,
                         result[0].word_count, result[0].confidence,
                         f", turned {result[0].orientation}" if result[0].orientation else "")
                if on_progress is not None:
                    on_progress(count, total)
        ordered = [done[page.n] for page in capture.pages]
        pdf_path = workdir / "searchable.pdf"
        searchable.assemble([plan for _, plan, _ in ordered], pdf_path, title=capture.source.name)
        pdf_key = f"ocr/{key}/searchable.pdf"
        store.put_file(pdf_key, pdf_path, content_type="application/pdf")
        words_key = f"ocr/{key}/words.json"
        store.put_bytes(words_key, _WORDS.dump_json([PageWords(n=r.n, words=w) for r, _, w in ordered]),
                        content_type="application/json")
    return OcrResult(
        key=key, engine=engine_version, languages=settings.languages,
        pages=[result for result, _, _ in ordered], words_key=words_key, searchable_pdf_key=pdf_key,
    )


def load_words(store: Store, result: OcrResult) -> list[PageWords]:
    return _WORDS.validate_json(store.get_bytes(result.words_key))
