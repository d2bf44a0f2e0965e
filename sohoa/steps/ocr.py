"""The OCR step: every page through the OCR engine in parallel, then one searchable PDF.

The engine is whichever ``settings.ocr_engine`` chooses in the registry (sohoa/ocr/engines.py):
Tesseract warm in this process or as a program per page (sohoa/ocr/tesseract_engines.py), or a
test's fake. The step sees only its PageReading (text, words, the page's text layer), and its
name and fingerprint enter the step's cache key.

At most ``settings.jobs`` pages are read at once in a process, one thread each, whatever the
number of dossiers in flight: the warm engines of sohoa/ocr/libtesseract.py (or the tesseract
program's process slots) are shared process-wide, so pages of several dossiers interleave
and the cores stay busy while one dossier is captured or archived. Each dossier prepares one
page more than it can read, so decoding and straightening the next page overlaps the engines.

Each page is read from an upright, deskewed, >=300 dpi grey copy (sohoa/ocr/normalize.py).
Upside-down pages cannot be told from line structure, so a page that reads with low
confidence is read once more turned 180 degrees and the better reading wins: one pass for
good pages, two for bad ones.

Each page is kept in the work store as soon as it is read (``ocr/<key>/pNNNN.pdf``, its text
layer, then ``pNNNN.json``, its reading): a run killed part-way is resumed by the next run with
the same key, which reads only the pages not kept. The checkpoints are removed once the step's
outputs are written, so that a refresh of the step reads every page again.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import pikepdf
from pydantic import BaseModel, TypeAdapter, ValidationError

from sohoa.kernel.keys import step_key
from sohoa.kernel.models import CaptureResult, OcrPage, OcrResult, PageImage, PageWords, Word
from sohoa.kernel.settings import OcrSettings, Settings
from sohoa.ocr import engines, normalize, reading_order
from sohoa.ocr import pdf as searchable
from sohoa.storage import ObjectNotFound, StorageError, Store, materialize

# 3: upright/deskewed/upscaled OCR copy, upside-down retry; 4: PDF/A-2b declared; 5: warm engine, grey copy;
# 6: CMYK pages in an ICC-based colour space; 7: reading order from layout (sohoa/ocr/reading_order.py)
VERSION = "7"
RETRY_BELOW_CONFIDENCE = 70.0
_WORDS = TypeAdapter(list[PageWords])
log = logging.getLogger("sohoa.ocr")


def engine_kind(settings: Settings) -> str:
    """The name of the engine these settings choose (sohoa/ocr/engines.py): ``auto`` takes the library when it loads."""
    return engines.choose(settings).name


def key_settings(settings: Settings) -> dict:
    """What enters the OCR key besides the capture: OcrSettings whole, the engine (``runner``) and its fingerprint."""
    engine = engines.choose(settings)
    return {**OcrSettings.of(settings).model_dump(), "runner": engine.name, "engine": engine.fingerprint(settings)}


def ocr_key(capture_key: str, settings: Settings) -> str:
    return step_key("ocr", VERSION, key_settings(settings), capture_key)


@dataclass
class Reading:
    """One engine pass over one OCR copy of a page, word boxes on the page as stored."""

    image: normalize.OcrImage
    text: str
    words: list[Word]
    layer: Path

    @property
    def confidence(self) -> float:
        return round(sum(w.conf for w in self.words) / len(self.words), 2) if self.words else 0.0


def read(page: PageImage, source: Path, workdir: Path, rotation: int, settings: Settings) -> Reading:
    """One pass of the chosen engine over the page turned by ``rotation``, put in reading order from its layout
    (sohoa/ocr/reading_order.py: the columns of a two-column header or signature block one after the other)."""
    wanted = engines.PageToRead(n=page.n, source=source, size=(page.width, page.height), dpi=page.dpi,
                                rotation=rotation, skew=page.skew, base=workdir / f"p{page.n:04d}r{rotation % 360:03d}")
    got = reading_order.reorder(engines.choose(settings).read(wanted, settings, settings.page_timeout_s))
    boxes = normalize.to_original(got.image, [w.box for w in got.words])
    words = [w.model_copy(update={"box": box}) for w, box in zip(got.words, boxes)]
    return Reading(image=got.image, text=got.text, words=words, layer=got.layer)


def warm_up(settings: Settings) -> None:
    """Start loading this process's engines now, so that the first page does not wait for them."""
    engines.choose(settings).warm_up(settings)


def check_engine(settings: Settings) -> str:
    """The engine's version line, after checking that it and its language data are there."""
    return engines.choose(settings).check(settings)


def read_page(page: PageImage, source: Path, workdir: Path, settings: Settings) -> tuple[Reading, int]:
    """The best reading of a page, and how many passes it took."""
    first = read(page, source, workdir, 90 if page.sideways else 0, settings)
    if page.blank or first.confidence >= RETRY_BELOW_CONFIDENCE:
        return first, 1
    turned = read(page, source, workdir, first.image.rotation + 180, settings)
    return (turned if turned.confidence > first.confidence else first), 2


class PageCheckpoint(BaseModel):
    """A page already read, kept beside its text layer (``ocr/<key>/pNNNN.json``) until the step is done:
    enough to put the page into the searchable PDF without reading it again, if the run is interrupted.
    The key names the engine and its settings, so a checkpoint under it is valid for any run with that key."""

    result: OcrPage
    words: list[Word]
    image: normalize.OcrImage  # the OCR copy's geometry: where the text layer goes on the page


@dataclass
class _Page:
    result: OcrPage
    plan: searchable.PagePlan
    words: list[Word]
    resumed: bool = False
    note: str | None = None  # why a checkpoint left for this page could not be used


def _layer_key(key: str, n: int) -> str:
    return f"ocr/{key}/p{n:04d}.pdf"


def _checkpoint_key(key: str, n: int) -> str:
    return f"ocr/{key}/p{n:04d}.json"


def _plan(page: PageImage, source: Path, layer: Path, image: normalize.OcrImage) -> searchable.PagePlan:
    return searchable.PagePlan(page=page, image=source, layer=layer, rotate=image.rotation,
                               layer_matrix=normalize.layer_to_page(image, page.height, page.dpi))


def _resume(store: Store, key: str, page: PageImage, source: Path, workdir: Path) -> tuple[_Page | None, str | None]:
    """The page as an interrupted run left it (its checkpoint and its text layer, both readable), or None
    and why a checkpoint that is there cannot be used."""
    try:
        data = store.get_bytes(_checkpoint_key(key, page.n))
    except ObjectNotFound:
        return None, None  # not read yet
    try:
        saved = PageCheckpoint.model_validate_json(data)
        if saved.result.n != page.n or saved.result.text_layer_key != _layer_key(key, page.n):
            raise ValueError(f"checkpoint of another page ({saved.result.text_layer_key})")
        layer = materialize(store, saved.result.text_layer_key, workdir / f"layer-{page.n:04d}.pdf")
        with pikepdf.open(layer) as pdf:
            if len(pdf.pages) != 1:
                raise ValueError(f"text layer has {len(pdf.pages)} pages")
    except ValidationError as exc:
        return None, exc.errors()[0]["msg"]
    except (ValueError, StorageError, pikepdf.PdfError) as exc:
        return None, (str(exc).splitlines() or [type(exc).__name__])[0]
    return _Page(saved.result, _plan(page, source, layer, saved.image), saved.words, resumed=True), None


def _read_and_keep(store: Store, key: str, page: PageImage, source: Path, workdir: Path, settings: Settings) -> _Page:
    """Read the page, then keep its text layer and (last: the commit marker) its checkpoint in the work store."""
    started = time.perf_counter()
    best, attempts = read_page(page, source, workdir, settings)
    layer_key = _layer_key(key, page.n)
    store.put_file(layer_key, best.layer, content_type="application/pdf")
    result = OcrPage(
        n=page.n, text=best.text, word_count=len(best.words), confidence=best.confidence,
        orientation=best.image.rotation, deskew=best.image.deskew, ocr_dpi=best.image.dpi,
        attempts=attempts, text_layer_key=layer_key, duration_s=round(time.perf_counter() - started, 3),
    )
    checkpoint = PageCheckpoint(result=result, words=best.words, image=best.image)
    store.put_bytes(_checkpoint_key(key, page.n), checkpoint.model_dump_json().encode(), content_type="application/json")
    return _Page(result, _plan(page, source, best.layer, best.image), best.words)


def _read_pages(capture: CaptureResult, store: Store, settings: Settings, key: str, workdir: Path,
                on_progress: Callable[[int, int], None] | None) -> list[_Page]:
    """Every page, in order: from its checkpoint when an interrupted run left one, else read now."""
    total = len(capture.pages)
    left = {info.key for info in store.list(f"ocr/{key}/")}  # one listing, not a lookup per page

    def one(page: PageImage) -> _Page:
        source = materialize(store, page.key, workdir / f"img-{page.n:04d}{Path(page.key).suffix}")
        kept, problem = _resume(store, key, page, source, workdir) if _checkpoint_key(key, page.n) in left else (None, None)
        if kept is not None:
            return kept
        read_now = _read_and_keep(store, key, page, source, workdir, settings)
        read_now.note = problem
        return read_now

    done: dict[int, _Page] = {}
    with ThreadPoolExecutor(max_workers=min(settings.jobs + 1, total)) as pool:
        futures = [pool.submit(one, page) for page in capture.pages]
        for count, future in enumerate(as_completed(futures), start=1):
            item = future.result()
            result = item.result
            done[result.n] = item
            # logged from the calling thread, where the orchestrator's run context lives
            if item.note:
                log.warning("OCR %s: page %d read again, its checkpoint was not usable: %s", capture.source.name,
                            result.n, item.note)
            log.info("OCR %s: %d/%d pages (page %d: %d words, confidence %.1f%s%s)", capture.source.name, count, total,
                     result.n, result.word_count, result.confidence,
                     f", turned {result.orientation}" if result.orientation else "", ", resumed" if item.resumed else "")
            if on_progress is not None:
                on_progress(count, total)
    resumed = sum(item.resumed for item in done.values())
    if resumed:
        log.info("OCR %s: resumed %d of %d pages from an interrupted run", capture.source.name, resumed, total)
    return [done[page.n] for page in capture.pages]


def _forget_checkpoints(store: Store, key: str, pages: list[PageImage]) -> None:
    """The step's result now stands for its pages: a refresh of the step reads every page again."""
    try:
        for page in pages:
            store.delete(_checkpoint_key(key, page.n))
    except StorageError as exc:  # harmless: a later run with this key resumes from them instead of reading
        log.warning("OCR: checkpoints under ocr/%s/ not removed: %s", key, exc)


def run_ocr(capture: CaptureResult, store: Store, settings: Settings, key: str,
            on_progress: Callable[[int, int], None] | None = None) -> OcrResult:
    """OCR all pages of a captured dossier and assemble its searchable PDF in the work store.

    Each page read is kept at once (text layer, then a checkpoint): a run killed part-way is resumed
    by the next run with the same key, which reads only the pages not kept.
    ``on_progress(done, total)`` is called after each page, from the calling thread."""
    engine_version = check_engine(settings)
    with tempfile.TemporaryDirectory(prefix="sohoa-ocr-") as tmp:
        workdir = Path(tmp)
        ordered = _read_pages(capture, store, settings, key, workdir, on_progress)
        pdf_path = workdir / "searchable.pdf"
        searchable.assemble([page.plan for page in ordered], pdf_path, title=capture.source.name)
        pdf_key = f"ocr/{key}/searchable.pdf"
        store.put_file(pdf_key, pdf_path, content_type="application/pdf")
        words_key = f"ocr/{key}/words.json"
        store.put_bytes(words_key, _WORDS.dump_json([PageWords(n=page.result.n, words=page.words) for page in ordered]),
                        content_type="application/json")
    _forget_checkpoints(store, key, capture.pages)
    return OcrResult(
        key=key, engine=engine_version, languages=settings.languages,
        pages=[page.result for page in ordered], words_key=words_key, searchable_pdf_key=pdf_key,
    )


def load_words(store: Store, result: OcrResult) -> list[PageWords]:
    return _WORDS.validate_json(store.get_bytes(result.words_key))
