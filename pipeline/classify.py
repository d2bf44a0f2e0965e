"""Classification: split the dossier into documents at title pages and type each one.

Rule matching over the title zone (the first lines of a page) with the taxonomy's patterns,
accent-insensitive. A page that opens with a known title or with the national motto header
starts a new document; any other page continues the previous one. A receipt lists the other
documents by name, so the receipt pattern has the highest priority in a title zone.
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from dataclasses import dataclass

from ocr import imaging
from pipeline import identifiers, identity
from pipeline.catalog import Taxonomy, taxonomy
from pipeline.keys import step_key
from pipeline.models import CaptureResult, ClassifyResult, Document, OcrPage, OcrResult
from pipeline.settings import Settings
from pipeline.text import fold, lines
from storage import Store

VERSION = "2"  # 2: dossier code from the receipt QR code
EXACT_CONFIDENCE = 0.95
FUZZY_MIN_RATIO = 0.82
HEADER_ONLY_CONFIDENCE = 0.5
UNTITLED_CONFIDENCE = 0.3


def key_settings(settings: Settings, procedure: str | None) -> dict:
    return {"title_lines": settings.title_lines, "taxonomy": taxonomy().digest, "procedure": procedure}


def classify_key(ocr_key: str, settings: Settings, procedure: str | None) -> str:
    return step_key("classify", VERSION, key_settings(settings, procedure), ocr_key)


@dataclass(frozen=True)
class PageReading:
    n: int
    type: str | None
    confidence: float
    title: str | None
    header: bool


def read_page(page: OcrPage, tax: Taxonomy, title_lines: int) -> PageReading:
    """The document type announced by a page's title zone, if any."""
    zone = lines(page.text)[:title_lines]
    folded = [fold(line) for line in zone]
    header = any(pattern in line for line in folded for pattern in tax.header_patterns)
    best: tuple[int, int, str, str] | None = None
    for index, line in enumerate(folded):
        for doc_type in tax.types:
            if any(p.search(line) for p in doc_type.compiled()):
                candidate = (doc_type.priority, -index, doc_type.code, zone[index])
                best = candidate if best is None or candidate > best else best
    if best:
        return PageReading(page.n, best[2], EXACT_CONFIDENCE, best[3], header)
    fuzzy = _fuzzy_title(zone, folded, tax)
    if fuzzy:
        return PageReading(page.n, fuzzy[0], fuzzy[1], fuzzy[2], header)
    return PageReading(page.n, None, 0.0, None, header)


@lru_cache(maxsize=256)
def _folded(label: str) -> str:
    return fold(label)


def _fuzzy_title(zone: list[str], folded: list[str], tax: Taxonomy) -> tuple[str, float, str] | None:
    """Closest label to a title-like line, for titles that OCR garbled past the patterns."""
    best: tuple[float, str, str] | None = None
    for line, text in zip(zone, folded):
        if len(text) < 10:
            continue
        for doc_type in tax.types:
            if not doc_type.patterns:
                continue
            ratio = difflib.SequenceMatcher(None, text, _folded(doc_type.label)).ratio()
            if ratio >= FUZZY_MIN_RATIO and (best is None or ratio > best[0]):
                best = (ratio, doc_type.code, line)
    return (best[1], round(best[0] * EXACT_CONFIDENCE, 3), best[2]) if best else None


def split(readings: list[PageReading]) -> list[Document]:
    """Documents from page readings: a new one at each titled or header page."""
    documents: list[Document] = []
    for reading in readings:
        starts = reading.type is not None or reading.header or not documents
        if starts:
            doc_type = reading.type or "khac"
            confidence = reading.confidence if reading.type else (
                HEADER_ONLY_CONFIDENCE if reading.header else UNTITLED_CONFIDENCE)
            documents.append(Document(type=doc_type, confidence=confidence, pages=[reading.n], title=reading.title))
        else:
            documents[-1].pages.append(reading.n)
    return documents


def _document_fields(document: Document, texts: dict[int, str]) -> None:
    text = "\n".join(texts[n] for n in document.pages)
    numbers = identifiers.find_twelve_digit_numbers(text)
    valid = [n for n in numbers if identifiers.cccd_problem(n) is None]
    if valid:
        document.fields["cccd"] = valid
    if len(valid) < len(numbers):
        document.fields["cccd_invalid"] = [n for n in numbers if n not in valid]


def classify(
    ocr: OcrResult, capture: CaptureResult, settings: Settings, key: str, procedure: str | None = None,
    store: Store | None = None,
) -> ClassifyResult:
    """Split and type the documents; with the work ``store``, also read the receipt's QR code."""
    tax = taxonomy()
    blank = {page.n for page in capture.pages if page.blank}
    texts = {page.n: page.text for page in ocr.pages}
    readings = [read_page(page, tax, settings.title_lines) for page in ocr.pages if page.n not in blank]
    documents = split(readings)
    for document in documents:
        _document_fields(document, texts)
    qr_codes = _receipt_qr_codes(documents, capture, store) if store is not None else []
    fields = _dossier_fields(documents, texts, qr_codes)
    receipt_procedure = fields.get("receipt_procedure")
    if procedure:
        chosen, source = procedure, "caller"
    elif isinstance(receipt_procedure, str):
        chosen, source = receipt_procedure, "receipt"
    else:
        chosen, source = None, "none"
    return ClassifyResult(key=key, documents=documents, procedure=chosen, procedure_source=source, fields=fields)


def _receipt_pages(documents: list[Document]) -> list[int]:
    return [n for d in documents if d.type == "phieu_tiep_nhan" for n in d.pages]


def _receipt_qr_codes(documents: list[Document], capture: CaptureResult, store: Store) -> list[str]:
    """Dossier codes in QR codes on the receipt pages (the first page when no receipt was typed)."""
    wanted = _receipt_pages(documents) or [capture.pages[0].n]
    codes: list[str] = []
    for page in capture.pages:
        if page.n in wanted:
            gray = imaging.decode_gray(store.get_bytes(page.key))
            codes += identity.dossier_codes_in_qr(identity.read_qr_codes(gray, page.dpi))
    return list(dict.fromkeys(codes))


def _dossier_fields(documents: list[Document], texts: dict[int, str], qr_codes: list[str]) -> dict[str, str | list[str]]:
    """Dossier code (QR first, then the receipt's text, then any text), receipt procedure, CCCD numbers."""
    fields: dict[str, str | list[str]] = {}
    receipt_text = "\n".join(texts[n] for n in _receipt_pages(documents))
    all_text = "\n".join(texts[n] for n in sorted(texts))
    printed = [(codes[0], source) for text, source in ((receipt_text, "receipt_text"), (all_text, "text"))
               if (codes := identifiers.find_dossier_codes(text))]
    if qr_codes:
        fields["dossier_code"], fields["dossier_code_source"] = qr_codes[0], "qr"
        if printed and printed[0][0] != qr_codes[0]:
            fields["dossier_code_printed"] = printed[0][0]
    elif printed:
        fields["dossier_code"], fields["dossier_code_source"] = printed[0]
    procedures = identifiers.find_procedure_codes(receipt_text)
    if procedures:
        fields["receipt_procedure"] = procedures[0]
    valid = list(dict.fromkeys(n for d in documents for n in d.fields.get("cccd", [])))
    invalid = list(dict.fromkeys(n for d in documents for n in d.fields.get("cccd_invalid", [])))
    fields["cccd"] = valid
    if invalid:
        fields["cccd_invalid"] = invalid
    return fields
