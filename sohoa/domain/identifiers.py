"""Identifiers of the domain: dossier codes, procedure codes, CCCD numbers (see docs/domain.md,
'Dossier codes' and 'Personal ID numbers').

They are the keys of reuse, so they are validated by structure, not just by shape.
"""

from __future__ import annotations

import re

# re.ASCII: \d is 0-9 and \s plain whitespace (a fullwidth or Arabic-Indic digit is another spelling of a
# code, the same under NFKC); \Z, not $: "$" also matches before a final newline
DOSSIER_CODE = re.compile(r"^\d{3}\.\d{2}\.\d{2}\.[A-Z]\d{2}-\d{6}-\d{4}\Z", re.ASCII)
_DOSSIER_CODE_IN_TEXT = re.compile(r"(?<![\d.])(\d{3}\s?\.\s?\d{2}\s?\.\s?\d{2}\s?\.\s?[A-Z]\d{2}\s?-\s?\d{6}\s?-\s?\d{4})(?!\d)",
                                   re.ASCII)
PROCEDURE_CODE = re.compile(r"^\d\.\d{6}\Z", re.ASCII)
_PROCEDURE_IN_TEXT = re.compile(r"(?<![\d.])(\d\.\d{6})(?:\.\d{3}\.\d{2}\.\d{2}\.[A-Z]\d{2})?(?![\d])", re.ASCII)
_TWELVE_DIGITS = re.compile(r"(?<!\d)(\d{12})(?!\d)", re.ASCII)
CCCD_MAX_PROVINCE = 96


def is_dossier_code(value: str) -> bool:
    return bool(DOSSIER_CODE.match(value))


def find_dossier_codes(text: str) -> list[str]:
    """Dossier codes printed in text, spaces that OCR inserts around separators removed."""
    found = [re.sub(r"\s", "", m) for m in _DOSSIER_CODE_IN_TEXT.findall(text)]
    return list(dict.fromkeys(code for code in found if is_dossier_code(code)))


def find_procedure_codes(text: str) -> list[str]:
    """``D.DDDDDD`` codes; a portal's agency suffix (``1.001193.000.00.00.H49``) is dropped."""
    return list(dict.fromkeys(_PROCEDURE_IN_TEXT.findall(text)))


def find_twelve_digit_numbers(text: str) -> list[str]:
    return list(dict.fromkeys(_TWELVE_DIGITS.findall(text)))


def cccd_problem(number: str) -> str | None:
    """Why ``number`` cannot be a CCCD (``PPP G YY NNNNNN``), or None when it can be."""
    if not re.fullmatch(r"\d{12}", number, re.ASCII):
        return "not 12 digits"
    province, century = int(number[:3]), int(number[3])
    if not 1 <= province <= CCCD_MAX_PROVINCE:
        return f"province code {number[:3]} is not 001-0{CCCD_MAX_PROVINCE}"
    if century > 5:
        return f"century/sex digit {century} is not 0-5"
    return None


def cccd_birth(number: str) -> tuple[int, str]:
    """Birth year and sex encoded in a structurally valid CCCD."""
    century = int(number[3])
    year = 1900 + 100 * (century // 2) + int(number[4:6])
    return year, ("female" if century % 2 else "male")
