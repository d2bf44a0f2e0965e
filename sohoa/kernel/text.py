"""Text folding for matching noisy Vietnamese OCR output.

Matching works on a folded form: no diacritics, Đ as D, upper case, every run of other
characters as one space. OCR confuses stacked tone marks far more often than base letters,
so folded matching survives most Vietnamese OCR errors; old and new tone placement (hòa/hoà)
fold to the same string.
"""

from __future__ import annotations

import re
import unicodedata

_D = str.maketrans({"đ": "d", "Đ": "D", "\u00d0": "D", "\u00f0": "d"})
_NON_ALNUM = re.compile(r"[^0-9A-Z]+")


def fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text.translate(_D))
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _NON_ALNUM.sub(" ", bare.upper()).strip()


def lines(text: str) -> list[str]:
    """Non-empty lines of a page, stripped, in reading order."""
    return [line.strip() for line in text.splitlines() if line.strip()]
