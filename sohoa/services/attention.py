"""Which pages of a dossier a person should look at, for whatever shows them (Prefect artifacts, a review form).

A page needs a person when its type is uncertain, its OCR confidence is low, or a failed check names it.
Checks name pages through their ``values`` (``pages``/``low_pages`` lists); a failed check about the
documents' typing as a whole (``verify.DOCUMENT_CHECKS``) points at the pages of uncertain documents.
"""

from __future__ import annotations

from sohoa.kernel.models import Check, Manifest
from sohoa.kernel.settings import Settings
from sohoa.steps.verify import DOCUMENT_CHECKS

MAX_PAGES = 12
PAGE_LISTS = ("pages", "low_pages")


def pages_to_look_at(manifest: Manifest, settings: Settings) -> list[int]:
    """Uncertain types, low OCR confidence, pages named by a failed check (at most MAX_PAGES, in order)."""
    pages = {p.n for p in manifest.pages if not p.blank and (
        (p.type_confidence is not None and p.type_confidence < settings.min_type_confidence)
        or p.ocr_confidence < settings.min_page_confidence)}
    for check in manifest.verification.checks:
        if not check.ok:
            pages |= named_pages(check)
            if check.id in DOCUMENT_CHECKS:
                pages |= {n for d in manifest.documents if d.confidence < settings.min_type_confidence for n in d.pages}
    return sorted(pages)[:MAX_PAGES]


def named_pages(check: Check) -> set[int]:
    """Page numbers a check lists; a count (``pages.readable`` keeps an int under ``pages``) names none."""
    named: set[int] = set()
    for name in PAGE_LISTS:
        value = check.values.get(name)
        if isinstance(value, list):
            named |= {int(n) for n in value if str(n).isdigit()}
    return named
