"""The OCR step: every page through Tesseract in parallel, then one searchable PDF.

Pages run on a thread pool of ``settings.jobs`` workers, each driving one single-threaded
tesseract process, so the machine's cores stay busy without oversubscription.
"""

from __future__ import annotations

import logging
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from ocr import pdf as searchable
from ocr import tesseract
from pipeline.keys import step_key
from pydantic import TypeAdapter

from pipeline.models import CaptureResult, OcrPage, OcrResult, PageImage, PageWords, Word
from pipeline.settings import Settings
from storage import Store, materialize

VERSION = "2"  # 2: words moved out of the result into words.json
_WORDS = TypeAdapter(list[PageWords])
log = logging.getLogger("sohoa.ocr")


def key_settings(settings: Settings) -> dict:
    return {
        "languages": settings.languages,
        "psm": settings.psm,
        "engine": tesseract.engine_fingerprint(settings.tesseract_cmd, settings.languages),
    }


def ocr_key(capture: CaptureResult, settings: Settings) -> str:
    return step_key("ocr", VERSION, key_settings(settings), capture.key)


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


def run_ocr(capture: CaptureResult, store: Store, settings: Settings, key: str) -> OcrResult:
    """OCR all pages of a captured dossier and assemble its searchable PDF in the work store."""
    tesseract.check_languages(settings.tesseract_cmd, settings.languages)
    total = len(capture.pages)
    with tempfile.TemporaryDirectory(prefix="sohoa-ocr-") as tmp:
        workdir = Path(tmp)

        def one(page: PageImage) -> tuple[OcrPage, Path, Path, list[Word]]:
            image = materialize(store, page.key, workdir / f"img-{page.n:04d}{Path(page.key).suffix}")
            started = time.perf_counter()
            out = tesseract.ocr_page(
                image, workdir / f"p{page.n:04d}", cmd=settings.tesseract_cmd, languages=settings.languages,
                psm=settings.psm, dpi=page.dpi, timeout=settings.page_timeout_s,
            )
            layer_key = f"ocr/{key}/p{page.n:04d}.pdf"
            store.put_file(layer_key, out.pdf, content_type="application/pdf")
            words = parse_tsv(out.tsv)
            confidence = round(sum(w.conf for w in words) / len(words), 2) if words else 0.0
            result = OcrPage(n=page.n, text=out.text.strip(), word_count=len(words), confidence=confidence,
                             text_layer_key=layer_key, duration_s=round(time.perf_counter() - started, 3))
            return result, image, out.pdf, words

        results: dict[int, tuple[OcrPage, Path, Path, list[Word]]] = {}
        with ThreadPoolExecutor(max_workers=min(settings.jobs, total)) as pool:
            futures = [pool.submit(one, page) for page in capture.pages]
            for count, future in enumerate(as_completed(futures), start=1):
                page_result = future.result()
                results[page_result[0].n] = page_result
                # logged from the calling thread, where the orchestrator's run context lives
                log.info("OCR %d/%d pages (page %d: %d words, confidence %.1f)", count, total,
                         page_result[0].n, page_result[0].word_count, page_result[0].confidence)
        done = [results[page.n] for page in capture.pages]
        pdf_path = workdir / "searchable.pdf"
        searchable.assemble(
            [(page, image, layer) for page, (_, image, layer, _) in zip(capture.pages, done)], pdf_path
        )
        words_key = f"ocr/{key}/words.json"
        store.put_bytes(words_key, _WORDS.dump_json([PageWords(n=r.n, words=w) for r, _, _, w in done]),
                        content_type="application/json")
        pdf_key = f"ocr/{key}/searchable.pdf"
        store.put_file(pdf_key, pdf_path, content_type="application/pdf")
    return OcrResult(
        key=key, engine=tesseract.version(settings.tesseract_cmd), languages=settings.languages,
        pages=[page for page, _, _, _ in done], words_key=words_key, searchable_pdf_key=pdf_key,
    )


def load_words(store: Store, result: OcrResult) -> list[PageWords]:
    return _WORDS.validate_json(store.get_bytes(result.words_key))
