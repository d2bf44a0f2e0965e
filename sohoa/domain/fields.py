"""Field extraction: the labelled values of a document ("Số định danh cá nhân: 022..."), as data.

Forms print each value after its label, on the same line or (ID cards) on the next. Which
labels a document type has, and what kind of value follows, is data in the taxonomy
(``[types.fields]``), so a province adds a form's fields without code. Labels are matched on
folded text (no tone marks, no punctuation) and tolerate OCR errors; a label is matched as the
whole text before the colon, so "Họ, chữ đệm, tên" does not take "Họ, chữ đệm, tên người yêu cầu".
Values are normalized by kind: ``cccd`` (12 digits; a misread number is kept as its digits, so
that the next person's number on the form is not taken for it), ``date`` (dd/mm/yyyy, kept as ISO), ``sex``
(male/female), ``name`` and ``text`` (NFC, spaces collapsed).
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from datetime import date
from typing import Literal

from pydantic import BaseModel, Field

from sohoa.kernel.text import fold

Kind = Literal["text", "name", "cccd", "date", "sex", "code"]
LABEL_MIN_RATIO = 0.88
_DATE = re.compile(r"(?<!\d)(\d{1,2})\s?[/.-]\s?(\d{1,2})\s?[/.-]\s?(\d{4})(?!\d)")
_CCCD = re.compile(r"(?<!\d)(\d{12})(?!\d)")
_SEX = {"NAM": "male", "NU": "female", "MALE": "male", "FEMALE": "female"}


class FieldSpec(BaseModel):
    label: str = Field(description="The printed label, folded (upper case, no tone marks, no punctuation)")
    kind: Kind = "text"
    many: bool = Field(False, description="Every occurrence (a marriage form names two people), not just the first")
    next_line: bool = Field(False, description="The value may be on the line below an empty label (ID cards)")
    must_match: str | None = Field(None, description="Another field whose values in the dossier this one must be among "
                                                     "(the applicant's ID number among the ID cards' numbers)")
    agree: bool = Field(False, description="Documents of different types naming this field must agree (the child's name)")


def _split(line: str) -> tuple[str, str] | None:
    if ":" not in line:
        return None
    label, value = line.split(":", 1)
    return fold(label), value.strip()


def _label_key(label: str) -> str:
    """A folded label without its one-letter words: OCR reads the "/" of "Số / No." as I, l or |."""
    return " ".join(word for word in label.split() if len(word) > 1)


def _label_matches(found: str, wanted: str) -> bool:
    found, wanted = _label_key(found), _label_key(wanted)
    return found == wanted or (len(wanted) >= 6 and difflib.SequenceMatcher(None, found, wanted).ratio() >= LABEL_MIN_RATIO)


def normalize(value: str, kind: Kind) -> str | None:
    """The value in canonical form for its kind, or None when it is not one (``31/02/2026`` is kept: checks judge it)."""
    value = " ".join(unicodedata.normalize("NFC", value).split())
    if kind == "cccd":  # a misread number (13 digits) is kept as read: the person's field, malformed, for checks to flag
        found = _CCCD.search(value.replace(" ", ""))
        runs = re.findall(r"\d+", value.replace(" ", ""))
        longest = max(runs, key=len) if runs else ""
        return found.group(1) if found else longest if len(longest) >= 9 else None
    if kind == "date":
        found = _DATE.search(value)
        return f"{found.group(3)}-{int(found.group(2)):02d}-{int(found.group(1)):02d}" if found else None
    if kind == "sex":
        words = fold(value).split()
        return _SEX.get(words[0]) if words else None
    if kind == "code":
        return value.split()[0] if value else None
    return value or None


def extract(text: str, specs: dict[str, FieldSpec]) -> dict[str, str | list[str]]:
    """The fields of one document's text (its pages joined)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    found: dict[str, list[str]] = {}
    for index, line in enumerate(lines):
        parts = _split(line)
        if parts is None:
            continue
        label, value = parts
        for name, spec in specs.items():
            if not _label_matches(label, spec.label) or (found.get(name) and not spec.many):
                continue
            if not value and spec.next_line and index + 1 < len(lines):
                value = lines[index + 1]
            normalized = normalize(value, spec.kind)
            if normalized is not None:
                found.setdefault(name, []).append(normalized)
    return {name: values if specs[name].many else values[0] for name, values in found.items()}


def calendar_date(iso: str) -> date | None:
    """The date an extracted ``YYYY-MM-DD`` names, or None when no such day exists."""
    try:
        return date.fromisoformat(iso)
    except ValueError:
        return None


def same_name(a: str, b: str) -> bool:
    """Two readings of one person's name: equal once folded, or one OCR slip apart."""
    fa, fb = fold(a), fold(b)
    return fa == fb or difflib.SequenceMatcher(None, fa, fb).ratio() >= 0.92
