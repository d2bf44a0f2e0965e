"""Rule reading of one page: what its title, header and page number say, before any model.

Rules are kept apart from the trained classifier (sohoa/domain/model.py) as in paperless-ngx: they
are exact where they fire, need no training data, and explain themselves ("title", "header",
"page 2/3"). Everything is matched on folded text (sohoa/kernel/text.py), so tone-mark errors of
OCR do not matter. A receipt names the other documents it received, so the receipt pattern
has the highest priority in a title zone.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import lru_cache

from sohoa.domain.catalog import Taxonomy
from sohoa.kernel.text import fold, lines

EXACT_CONFIDENCE = 0.95
FUZZY_MIN_RATIO = 0.82
MARK_LINES = 4  # page numbers are printed in the first or last few lines
_PAGE_MARKS = (  # on folded lines where "/" was spelled " OF " (folding drops punctuation)
    re.compile(r"^TRANG (\d{1,2})(?: (?:OF|TREN) (\d{1,2}))?$"),  # Trang 2/3, Trang 2 trên 3, Trang 2
    re.compile(r"^(\d{1,2}) OF (\d{1,2})$"),  # 2/3 alone on a line
)
_CONTINUED = re.compile(r"\bTIEP THEO\b")  # "(tiếp theo)": the rest of a form


@dataclass(frozen=True)
class Title:
    type: str
    confidence: float
    line: str
    exact: bool


@dataclass(frozen=True)
class PageRules:
    """What the rules read on one page."""

    title: Title | None
    header: bool  # the national motto in the title zone: most forms start with it
    mark: tuple[int, int | None] | None  # (k, n) of "Trang k/n"; n None when only k is printed
    continued: bool  # "(tiếp theo)" at the top

    @property
    def numbered_first(self) -> bool:
        return self.mark is not None and self.mark[0] == 1

    @property
    def numbered_later(self) -> bool:
        return self.mark is not None and self.mark[0] > 1


def read(text: str, tax: Taxonomy, title_lines: int) -> PageRules:
    all_lines = lines(text)
    zone = all_lines[:title_lines]
    folded = [fold(line) for line in zone]
    header = any(pattern in line for line in folded for pattern in tax.header_patterns)
    edges = [fold(line.replace("/", " of ")) for line in all_lines[:MARK_LINES] + all_lines[-MARK_LINES:]]
    return PageRules(title=read_title(zone, folded, tax), header=header, mark=page_mark(edges),
                     continued=any(_CONTINUED.search(line) for line in folded[:3]))


def read_title(zone: list[str], folded: list[str], tax: Taxonomy) -> Title | None:
    """The document type announced by the title zone: a pattern, else the closest label."""
    best: tuple[int, int, str, str] | None = None
    for index, line in enumerate(folded):
        for doc_type in tax.types:
            if any(p.search(line) for p in doc_type.compiled()):
                candidate = (doc_type.priority, -index, doc_type.code, zone[index])
                best = candidate if best is None or candidate > best else best
    if best:
        return Title(type=best[2], confidence=EXACT_CONFIDENCE, line=best[3], exact=True)
    return _fuzzy_title(zone, folded, tax)


@lru_cache(maxsize=256)
def _folded(label: str) -> str:
    return fold(label)


def _fuzzy_title(zone: list[str], folded: list[str], tax: Taxonomy) -> Title | None:
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
    if best is None:
        return None
    return Title(type=best[1], confidence=round(best[0] * EXACT_CONFIDENCE, 3), line=best[2], exact=False)


def page_mark(folded_lines: list[str]) -> tuple[int, int | None] | None:
    """(k, n) from "Trang k/n", "Trang k" or a lone "k/n" line; None without one (or a nonsense one)."""
    for line in folded_lines:
        for pattern in _PAGE_MARKS:
            found = pattern.match(line)
            if found:
                k = int(found.group(1))
                n = int(found.group(2)) if found.group(2) else None
                if k >= 1 and (n is None or k <= n):
                    return k, n
    return None
