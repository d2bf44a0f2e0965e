"""Deterministic generator of labelled synthetic scanned dossiers.

Used by the test-suite, the README demo and the benchmarks.  Every page is first laid out as a
list of drawing operations in PDF points (A4, origin top-left); the same layout is then either
rasterised with Pillow (scanned formats) or drawn with ReportLab (``text-pdf``, a born-digital
PDF with a real text layer).  All randomness comes from ``random.Random(seed)`` /
``numpy.random.default_rng`` seeded from ``seed`` so the output is byte-for-byte reproducible.

    sohoa-synth OUT [--procedure 1.001193] [--seed 0] [--format pdf] [--dpi 300]
    sohoa-synth FOLDER --eval-set N [--seed S]

writes the dossier to OUT (a file, or a folder for ``png-dir``/``jpeg-dir``) and the ground truth
to ``OUT + ".truth.json"``; with ``--eval-set``, N varied, degraded dossiers into FOLDER, and prints
``{"folder": ..., "dossiers": N, "pages": M}``.

Procedures, their components and the document titles come from the taxonomy and catalog files
(``sohoa.domain.catalog``, ``SOHOA_TAXONOMY``/``SOHOA_CATALOG``; the domain is described in
docs/domain.md); this module only knows how each document type is drawn.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import unicodedata
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from pydantic import BaseModel

from sohoa.domain.catalog import Procedure, catalog, taxonomy

__all__ = [
    "SynthPage",
    "SynthDossier",
    "PROCEDURES",  # noqa: F822 - served by __getattr__ from the catalog
    "DOC_TITLES",  # noqa: F822 - served by __getattr__ from the taxonomy
    "procedures",
    "default_components",
    "doc_title",
    "component_name",
    "make_dossier",
    "make_eval_set",
    "eval_spec",
    "Variation",
    "render_pages",
    "build_layout",
    "valid_cccd",
    "write_truth",
    "main",
]

Format = Literal["pdf", "tiff", "png-dir", "jpeg-dir", "text-pdf"]
FORMATS: tuple[str, ...] = ("pdf", "tiff", "png-dir", "jpeg-dir", "text-pdf")


# --------------------------------------------------------------------------------------------
# Truth models
# --------------------------------------------------------------------------------------------
class SynthPage(BaseModel):
    n: int  # 1-based page number inside the dossier
    doc_type: str
    starts_document: bool
    expected_words: list[str]  # distinctive words (NFC) that OCR must find on this page
    text: str = ""  # full text of the page in reading order (NFC), for CER measurements


class SynthDossier(BaseModel):
    procedure: str
    dossier_code: str
    cccd: list[str]  # every personal ID number printed in the dossier, first appearance order
    pages: list[SynthPage]
    files: list[str]
    # extra, informative
    seed: int = 0
    fmt: str = "pdf"
    dpi: int = 300
    degraded: bool = False
    applicant: str = ""


# --------------------------------------------------------------------------------------------
# Catalog data: read from the taxonomy and catalog files (sohoa.domain.catalog; see docs/domain.md),
# so that the dossiers drawn are the ones the product is configured to recognise and verify.
# Only what those files do not say, and what is about drawing, is kept here.
# --------------------------------------------------------------------------------------------
RECEIPT = "phieu_tiep_nhan"  # the one-stop counter's receipt: drawn on top of a dossier

# Drawn documents that are one specific kind of their taxonomy type: the lease is a "hợp đồng".
KINDS: dict[str, str] = {"hop_dong": "thuê nhà"}

# Types drawn on purpose although the packaged taxonomy lacks them (learning tests: typed "khac").
UNLISTED: dict[str, str] = {"so_yeu_ly_lich": "Sơ yếu lý lịch"}

# Components handed in as a copy (the receipt says "Bản sao ..., bản sao").
COPIES: frozenset[str] = frozenset({"can_cuoc"})


@dataclass(frozen=True)
class Handling:
    """How the counter handles a procedure, which the catalog does not record."""

    sector: str = "Hộ tịch"  # lĩnh vực printed on the receipt
    days: int = 3  # until the result is due
    male_applicant: bool = False  # who files: the mother/bride by default, the owner for a business


HANDLING: dict[str, Handling] = {
    "1.001612": Handling("Thành lập và hoạt động của hộ kinh doanh", days=5, male_applicant=True),
}


def _handling(code: str) -> Handling:
    return HANDLING.get(code, Handling())


def _procedure(code: str) -> Procedure:
    """The catalog's procedure (``SOHOA_CATALOG`` or the packaged one); ValueError if it has none."""
    known = catalog().procedures
    if code not in known:
        raise ValueError(f"unknown procedure {code!r}; known: {sorted(known)}")
    return known[code]


def default_components(p: Procedure) -> list[str]:
    """A complete dossier as handed in: the receipt on top, then each required and optional
    component in catalog order, as many copies as ``counts`` says; conditional ones (a proxy's
    authorisation) are left to the caller, since they depend on who filed."""
    types = [RECEIPT] if RECEIPT in p.known() else []
    for t in [*p.required, *p.optional]:
        if t != RECEIPT:
            types += [t] * p.counts.get(t, 1)
    return types


def _drawable(p: Procedure) -> bool:
    return all(t in GENERATORS for t in p.known())


def procedures() -> dict[str, dict[str, Any]]:
    """The catalog's procedures the generator can draw: ``{code: {"name", "default"}}``.

    Read on each call, so that a test or a province pointing ``SOHOA_CATALOG`` elsewhere gets
    dossiers of its own catalog.
    """
    return {code: {"name": p.name, "default": default_components(p)}
            for code, p in sorted(catalog().procedures.items()) if _drawable(p)}


def _label(doc_type: str) -> str:
    """The type's label in the taxonomy (``SOHOA_TAXONOMY`` or the packaged one), made specific
    where the generator draws one kind of it."""
    try:
        label = taxonomy().get(doc_type).label
    except KeyError:
        if doc_type not in UNLISTED:
            raise ValueError(f"doc type {doc_type!r} is in neither the taxonomy nor synth.UNLISTED") from None
        label = UNLISTED[doc_type]
    kind = KINDS.get(doc_type)
    return nfc(f"{label} {kind}" if kind and kind not in label.lower() else label)


def doc_title(doc_type: str) -> str:
    """The title printed on the document: its label in capitals, as forms print it."""
    return _label(doc_type).upper()


def component_name(doc_type: str) -> str:
    """How a receipt names a component ("thành phần hồ sơ")."""
    label = _label(doc_type)
    return f"Bản sao {label}" if doc_type in COPIES else label


def doc_titles() -> dict[str, str]:
    """Every drawable type's printed title."""
    return {t: doc_title(t) for t in GENERATORS}


def __getattr__(name: str) -> Any:
    """``PROCEDURES`` and ``DOC_TITLES``, computed from the data files when asked for (PEP 562),
    so that they follow ``SOHOA_CATALOG``/``SOHOA_TAXONOMY`` instead of freezing at import."""
    if name == "PROCEDURES":
        return procedures()
    if name == "DOC_TITLES":
        return doc_titles()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


AGENCY_CODE = "000.00.00.H49"  # H49 = Quảng Ninh
FEMALE = ["Nguyễn Thị Hồng Nhung", "Lê Thị Thu Hằng", "Vũ Ngọc Ánh", "Đặng Thị Thúy Hường",
          "Hoàng Thị Mỹ Duyên"]
MALE = ["Trần Đức Thắng", "Phạm Quốc Việt", "Bùi Văn Hưởng", "Đỗ Mạnh Cường", "Ngô Quang Huy"]
CHILD_MALE = ["Minh Khang", "Gia Bảo", "Đức Anh", "Hoàng Phúc"]
CHILD_FEMALE = ["Bảo Ngọc", "Khánh Linh", "Minh Thư", "Diệu Anh"]
WARDS = ["Hồng Gai", "Bãi Cháy", "Cẩm Phả", "Hà Tu"]
STREETS = ["Lê Thánh Tông", "Trần Hưng Đạo", "Nguyễn Văn Cừ", "Hạ Long", "Cao Thắng"]
# (code, province) – mostly Quảng Ninh
PROVINCES = [("022", "Quảng Ninh")] * 4 + [
    ("001", "Hà Nội"), ("031", "Hải Phòng"), ("030", "Hải Dương"), ("034", "Thái Bình"),
]
BUSINESSES = [("Phở", "Dịch vụ ăn uống: phở, cơm, bún"),
              ("Tạp hóa", "Bán lẻ hàng tiêu dùng, thực phẩm"),
              ("Cà phê", "Dịch vụ phục vụ đồ uống")]


def nfc(s: str) -> str:
    return unicodedata.normalize("NFC", s)


def _last_word(name: str) -> str:
    return name.split()[-1]


# --------------------------------------------------------------------------------------------
# Identifiers
# --------------------------------------------------------------------------------------------
def _century_sex_digit(year: int, female: bool) -> int:
    base = {19: 0, 20: 2, 21: 4, 22: 6, 23: 8}[year // 100]
    return base + (1 if female else 0)


def make_cccd(rng: random.Random, province: str, dob: date, female: bool) -> str:
    return f"{province}{_century_sex_digit(dob.year, female)}{dob.year % 100:02d}{rng.randrange(10**6):06d}"


def valid_cccd(number: str, dob: date | None = None, female: bool | None = None) -> bool:
    """Structural check `PPP G YY NNNNNN`, optionally against date of birth and sex."""
    if len(number) != 12 or not number.isdigit():
        return False
    if not 1 <= int(number[:3]) <= 96:
        return False
    g = int(number[3])
    if dob is not None:
        if number[4:6] != f"{dob.year % 100:02d}":
            return False
        if g // 2 != (dob.year // 100) - 19:
            return False
    if female is not None and (g % 2 == 1) != female:
        return False
    return True


@dataclass
class Person:
    name: str
    female: bool
    dob: date
    province_code: str
    province: str
    cccd: str
    address: str
    issue: date

    @property
    def sex(self) -> str:
        return "Nữ" if self.female else "Nam"

    @property
    def expiry(self) -> date:
        age = self.issue.year - self.dob.year
        limit = 25 if age < 23 else 40 if age < 38 else 60
        try:
            return self.dob.replace(year=self.dob.year + limit)
        except ValueError:  # 29 Feb
            return self.dob.replace(year=self.dob.year + limit, day=28)


def _dmy(d: date) -> str:
    return d.strftime("%d/%m/%Y")


# --------------------------------------------------------------------------------------------
# Layout primitives (units: PDF points, origin top-left, y = text baseline)
# --------------------------------------------------------------------------------------------
PAGE_W_MM, PAGE_H_MM = 210.0, 297.0
PAGE_W = PAGE_W_MM / 25.4 * 72
PAGE_H = PAGE_H_MM / 25.4 * 72
LEFT = 2.5 / 2.54 * 72  # 2.5 cm
RIGHT = PAGE_W - 2.0 / 2.54 * 72
TOP = 2.0 / 2.54 * 72
BODY = 13.0
TITLE = 15.0  # 16 pt bold caps loses tone marks far more often with the vie 'fast' model

FONT_DIR = Path("/usr/share/fonts/truetype/liberation2")
FONT_FILES = {
    "serif": "LiberationSerif-Regular.ttf",
    "serif-bold": "LiberationSerif-Bold.ttf",
    "serif-italic": "LiberationSerif-Italic.ttf",
    "sans": "LiberationSans-Regular.ttf",
    "sans-bold": "LiberationSans-Bold.ttf",
    "mono": "LiberationMono-Regular.ttf",
}
_FALLBACK_DIRS = [Path("/usr/share/fonts/truetype/liberation"), Path("/usr/share/fonts/liberation")]


def _font_path(key: str) -> str:
    for d in [FONT_DIR, *_FALLBACK_DIRS]:
        p = d / FONT_FILES[key]
        if p.exists():
            return str(p)
    raise FileNotFoundError(f"font {FONT_FILES[key]} not found (install fonts-liberation2)")


@lru_cache(maxsize=256)
def _pil_font(key: str, px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(_font_path(key), px)


def text_width(text: str, size: float, font: str = "serif") -> float:
    """Advance width in points (measured at 20x to limit hinting effects)."""
    return _pil_font(font, int(round(size * 20))).getlength(text) / 20.0


Color = tuple[int, int, int]
BLACK: Color = (0, 0, 0)
STAMP: Color = (226, 120, 120)  # faint red
INK: Color = (60, 60, 60)  # a signature's pen, grey so that the page stays grey


@dataclass
class Op:
    kind: str  # text | line | rect | circle | qr
    args: tuple
    color: Color = BLACK


@dataclass
class PageLayout:
    doc_type: str
    starts_document: bool
    expected_words: list[str]
    ops: list[Op] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    signatures: list[tuple[float, float, float, str]] = field(default_factory=list)  # (x, top, bottom, signer)

    def sign(self) -> None:
        """Draw a handwritten signature in each signature gap: a loose stroke, the same for the same name."""
        for cx, top, bottom, name in self.signatures:
            if bottom - top < 12:
                continue
            rng = random.Random(f"signature/{name}")
            middle, half = (top + bottom) / 2, (bottom - top) * 0.35
            points = [(cx - 38 + 76 * k / 15 + rng.uniform(-3, 3), middle + rng.uniform(-half, half)) for k in range(16)]
            self.ops += [Op("line", (x1, y1, x2, y2, 1.1), INK) for (x1, y1), (x2, y2) in zip(points, points[1:])]

    @property
    def colour(self) -> bool:
        return any(op.color[0] != op.color[1] or op.color[1] != op.color[2] for op in self.ops)


class Builder:
    """Flows text down a page with a y cursor."""

    def __init__(self, doc_type: str, starts: bool, expected: list[str]):
        self.page = PageLayout(doc_type, starts, [nfc(w) for w in expected])
        self.y = TOP

    # raw ops -------------------------------------------------------------------------------
    def text_at(self, x: float, y: float, s: str, size: float = BODY, font: str = "serif",
                align: str = "l", color: Color = BLACK) -> None:
        s = nfc(s)
        self.page.ops.append(Op("text", (x, y, s, size, font, align), color))
        self.page.lines.append(s)

    def hline(self, x1: float, x2: float, y: float, width: float = 0.8) -> None:
        self.page.ops.append(Op("line", (x1, y, x2, y, width)))

    def rect(self, x, y, w, h, width=1.0, fill: int | None = None, color: Color = BLACK) -> None:
        self.page.ops.append(Op("rect", (x, y, w, h, width, fill), color))

    # flowing text -------------------------------------------------------------------------
    def advance(self, pts: float) -> None:
        self.y += pts

    def line(self, s: str, size: float = BODY, font: str = "serif", indent: float = 0.0,
             align: str = "l", lead: float = 1.5, right: float = RIGHT) -> None:
        """Write one logical line, wrapped to the text column; hanging indent on wraps."""
        x0 = LEFT + indent
        self.y += size * lead if self.page.ops else size
        if align == "c":
            self.text_at((LEFT + right) / 2, self.y, s, size, font, "c")
            return
        if text_width(s, size, font) <= right - x0:
            self.text_at(x0, self.y, s, size, font)
            return
        words = s.split()
        cur = ""
        hang = 0.0
        for w in words:
            cand = f"{cur} {w}" if cur else w
            if cur and text_width(cand, size, font) > right - x0 - hang:
                self.text_at(x0 + hang, self.y, cur, size, font)
                self.y += size * lead
                hang = 2 * size
                cur = w
            else:
                cur = cand
        if cur:
            self.text_at(x0 + hang, self.y, cur, size, font)

    def title(self, s: str, size: float = TITLE) -> None:
        self.advance(size * 0.8)
        self.line(s, size=size, font="serif-bold", align="c")
        self.advance(size * 0.4)

    def motto(self, cx: float | None = None, size: float = BODY) -> None:
        cx = (LEFT + RIGHT) / 2 if cx is None else cx
        self.y += size if not self.page.ops else size * 1.5
        self.text_at(cx, self.y, "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", size, "serif-bold", "c")
        self.y += size * 1.4
        sub = "Độc lập - Tự do - Hạnh phúc"
        self.text_at(cx, self.y, sub, size, "serif-bold", "c")
        w = text_width(sub, size, "serif-bold")
        self.hline(cx - w / 2, cx + w / 2, self.y + size * 0.35)

    def header_two_columns(self, left: list[str], size: float = 12.0) -> None:
        """Agency name on the left, national motto on the right (as on most official forms)."""
        lx = LEFT + 95
        rx = LEFT + (RIGHT - LEFT) * 0.66
        y0 = self.y + size
        for i, s in enumerate(left):
            self.text_at(lx, y0 + i * size * 1.4, s, size, "serif-bold" if i else "serif", "c")
        self.text_at(rx, y0, "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", size, "serif-bold", "c")
        sub = "Độc lập - Tự do - Hạnh phúc"
        self.text_at(rx, y0 + size * 1.4, sub, size, "serif-bold", "c")
        w = text_width(sub, size, "serif-bold")
        self.hline(rx - w / 2, rx + w / 2, y0 + size * 1.75)
        lw = text_width(left[-1], size, "serif-bold") * 0.5
        self.hline(lx - lw / 2, lx + lw / 2, y0 + (len(left) - 1) * size * 1.4 + size * 0.35)
        self.y = y0 + max(len(left) - 1, 1) * size * 1.4

    def signatures(self, cols: list[tuple[str, str, str]], gap: float = 70.0,
                   stamp_col: int | None = None) -> None:
        """cols: (title, hint, name) per column, spread across the text width."""
        self.advance(BODY * 1.2)
        n = len(cols)
        width = (RIGHT - LEFT) / n
        y1 = self.y + BODY * 1.5
        y2 = y1 + BODY * 1.3
        y3 = y2 + gap
        for i, (t, hint, name) in enumerate(cols):
            cx = LEFT + width * (i + 0.5)
            if n == 1:
                cx = LEFT + (RIGHT - LEFT) * 0.66
            self.text_at(cx, y1, t, BODY, "serif-bold", "c")
            if hint:
                self.text_at(cx, y2, hint, 11, "serif-italic", "c")
            if name:
                self.text_at(cx, y3, name, BODY, "serif-bold", "c")
                self.page.signatures.append((cx, y2 + 8, y3 - BODY - 2, name))
            if stamp_col == i:
                # faint red stamp in the empty signature gap, clear of every text line
                top, bottom = y2 + 6, y3 - BODY - 4
                r = (bottom - top) / 2
                cy = (top + bottom) / 2
                self.page.ops.append(Op("circle", (cx - r * 0.8, cy, r, 1.6), STAMP))
                self.page.ops.append(Op("circle", (cx - r * 0.8, cy, r * 0.72, 1.0), STAMP))
        self.y = y3

    def page_number(self, k: int, total: int) -> None:
        self.text_at((LEFT + RIGHT) / 2, PAGE_H - 36, f"Trang {k}/{total}", 11, "serif", "c")

    def done(self) -> PageLayout:
        if self.y > PAGE_H - 50:
            raise AssertionError(f"{self.page.doc_type}: content overflows the page ({self.y:.0f}pt)")
        return self.page


# --------------------------------------------------------------------------------------------
# Dossier content
# --------------------------------------------------------------------------------------------
@dataclass
class Context:
    procedure: str
    seed: int
    rng: random.Random
    dossier_code: str
    received: date
    ward: str
    applicant: Person
    partner: Person  # father of the child / groom / lessor
    child_name: str
    child_female: bool
    child_dob: date
    business: tuple[str, str]
    components: list[str]
    printed_ids: list[str] = field(default_factory=list)
    cards_done: int = 0

    def printed(self, p: Person) -> str:
        if p.cccd not in self.printed_ids:
            self.printed_ids.append(p.cccd)
        return p.cccd

    @property
    def handling(self) -> Handling:
        return _handling(self.procedure)

    @property
    def procedure_name(self) -> str:
        return _procedure(self.procedure).name

    @property
    def agency(self) -> str:
        return f"UBND PHƯỜNG {self.ward.upper()}"

    @property
    def agency_long(self) -> str:
        return f"Ủy ban nhân dân phường {self.ward}, tỉnh Quảng Ninh"


def _person(rng: random.Random, female: bool, names: list[str], born: tuple[int, int],
            ward: str) -> Person:
    name = rng.choice(names)
    dob = date(rng.randint(*born), rng.randint(1, 12), rng.randint(1, 28))
    pcode, prov = rng.choice(PROVINCES)
    addr = f"Số {rng.randint(2, 180)}, đường {rng.choice(STREETS)}, phường {ward}, tỉnh Quảng Ninh"
    issue = date(rng.randint(2021, 2024), rng.randint(1, 12), rng.randint(1, 28))
    if issue.year - dob.year < 14:
        issue = issue.replace(year=dob.year + 14)
    return Person(name, female, dob, pcode, prov, make_cccd(rng, pcode, dob, female), addr, issue)


def _context(procedure: str, seed: int, include: list[str]) -> Context:
    rng = random.Random(f"sohoa-synth/{procedure}/{seed}")
    ward = WARDS[seed % len(WARDS)]
    child_dob = date(2026, 3, 12) + timedelta(days=(seed * 7) % 40)
    received = child_dob + timedelta(days=5 + rng.randrange(15))
    code = f"{AGENCY_CODE}-{received:%y%m%d}-{rng.randrange(1, 10000):04d}"
    # women: one born in the 2000s now and then, to exercise G = 3
    mother = _person(rng, True, FEMALE, (1986, 2003), ward)
    father = _person(rng, False, MALE, (1984, 2001), ward)
    # avoid identical surnames/names between the two parties
    if mother.name.split()[0] == father.name.split()[0]:
        father.name = "Trần " + " ".join(father.name.split()[1:])
    child_female = rng.random() < 0.5
    given = rng.choice(CHILD_FEMALE if child_female else CHILD_MALE)
    child = f"{father.name.split()[0]} {given}"
    # the owner files and the lessor is the other party; else the mother (bride) files, the father (groom) second
    applicant, partner = (father, mother) if _handling(procedure).male_applicant else (mother, father)
    return Context(procedure, seed, rng, code, received, ward, applicant, partner, child,
                   child_female, child_dob, rng.choice(BUSINESSES), include)


# ---- one function per document type; each returns its pages ---------------------------------
def _receipt(c: Context) -> list[PageLayout]:
    a = c.applicant
    b = Builder("phieu_tiep_nhan", True,
                ["TIẾP", "KẾT", *_name_words(a.name)])
    b.header_two_columns([c.agency, "BỘ PHẬN MỘT CỬA"])
    b.title(doc_title("phieu_tiep_nhan"))
    qr_size = 92.0
    qr_x = RIGHT - qr_size
    qr_top = b.y + 6
    narrow = qr_x - 12
    b.line(f"Mã hồ sơ: {c.dossier_code}", font="serif-bold", right=narrow)
    b.line(f"Mã thủ tục: {c.procedure}", right=narrow)
    b.line(f"Tên thủ tục: {c.procedure_name}", right=narrow)
    b.line(f"Lĩnh vực: {c.handling.sector}", right=narrow)
    b.page.ops.append(Op("qr", (qr_x, qr_top, qr_size, c.dossier_code)))
    b.y = max(b.y, qr_top + qr_size - BODY)
    b.line(f"Bộ phận Một cửa UBND phường {c.ward} tiếp nhận hồ sơ của:")
    b.line(f"Ông/Bà: {a.name}", font="serif-bold")
    b.line(f"Số định danh cá nhân: {c.printed(a)}")
    b.line(f"Địa chỉ: {a.address}")
    b.line(f"Số điện thoại: 09{c.rng.randrange(10**8):08d}")
    b.line(f"Nội dung yêu cầu giải quyết: {c.procedure_name}")
    b.line("Thành phần hồ sơ gồm:")
    comps: list[tuple[str, int]] = []
    for t in c.components:
        if t == RECEIPT:
            continue
        name = component_name(t)
        if comps and comps[-1][0] == name:
            comps[-1] = (name, comps[-1][1] + 1)
        else:
            comps.append((name, 1))
    for i, (name, k) in enumerate(comps, 1):
        kind = "bản sao" if name.startswith("Bản sao") else "bản chính"
        b.line(f"{i}. {name} ({kind}, {k:02d} bản)", indent=18)
    b.line("Số lượng hồ sơ: 01 bộ")
    t = c.received
    b.line(f"Thời gian tiếp nhận: 08 giờ {c.rng.randrange(10, 59)} phút, ngày {_dmy(t)}")
    b.line(f"Thời gian hẹn trả kết quả: ngày {_dmy(t + timedelta(days=c.handling.days))}")
    b.line("Nhận kết quả tại: Bộ phận Một cửa hoặc qua dịch vụ bưu chính công ích")
    clerk = "Lương Thị Thanh Tâm" if c.seed % 2 == 0 else "Đinh Văn Toàn"
    b.signatures([("NGƯỜI NỘP HỒ SƠ", "(Ký, ghi rõ họ tên)", a.name),
                  ("NGƯỜI TIẾP NHẬN", "(Ký, ghi rõ họ tên)", clerk)], stamp_col=1)
    return [b.done()]


_ABOVE_TONES = {"\u0300", "\u0301", "\u0303", "\u0309"}  # grave, acute, tilde, hook above


def _risky(word: str) -> bool:
    """Stacked marks above (ấ/ẩ, ắ/ẳ, ế/ể, ố/ổ ...): the vie model often swaps the tone."""
    for ch in word:
        d = unicodedata.normalize("NFD", ch)
        if len(d) > 2 and d[1] in {"\u0302", "\u0306"} and d[2] in _ABOVE_TONES:
            return True
    return False


def _key_word(name: str) -> str:
    """A distinctive word of a personal name that OCR reads reliably (not the surname)."""
    words = name.split()
    for w in reversed(words[1:]):
        if not _risky(w) and len(w) > 2:
            return w
    return words[-1]


def _name_words(name: str) -> list[str]:
    return [_key_word(name)]


def _kinh_gui(b: Builder, c: Context) -> None:
    b.line(f"Kính gửi: {c.agency_long}", indent=60)


def _to_khai_khai_sinh(c: Context) -> list[PageLayout]:
    a, f = c.applicant, c.partner
    rel = "Mẹ" if a.female else "Cha"
    b = Builder("to_khai_khai_sinh", True, ["KHAI", "SINH", *_name_words(a.name)])
    b.motto()
    b.title(doc_title("to_khai_khai_sinh"))
    _kinh_gui(b, c)
    b.advance(4)
    b.line(f"Họ, chữ đệm, tên người yêu cầu: {a.name}")
    b.line(f"Ngày, tháng, năm sinh: {_dmy(a.dob)}")
    b.line(f"Nơi cư trú: {a.address}")
    b.line("Giấy tờ tùy thân: Căn cước công dân")
    b.line(f"Số định danh cá nhân: {c.printed(a)}")
    b.line(f"Quan hệ với người được khai sinh: {rel}")
    b.line("Đề nghị cơ quan đăng ký khai sinh cho người dưới đây:")
    b.line(f"Họ, chữ đệm, tên: {c.child_name}", font="serif-bold")
    b.line(f"Ngày, tháng, năm sinh: {_dmy(c.child_dob)}")
    b.line(f"ghi bằng chữ: {_date_words(c.child_dob)}", indent=18)
    b.line(f"Giới tính: {'Nữ' if c.child_female else 'Nam'}      Dân tộc: Kinh      Quốc tịch: Việt Nam")
    b.line("Nơi sinh: Bệnh viện Sản Nhi Quảng Ninh")
    b.line(f"Quê quán: phường {c.ward}, tỉnh Quảng Ninh")
    b.page_number(1, 2)
    p1 = b.done()

    b = Builder("to_khai_khai_sinh", False, ["cam", "đoan", *_name_words(f.name)])
    b.line(f"Họ, chữ đệm, tên người mẹ: {a.name if a.female else f.name}")
    m = a if a.female else f
    d = f if a.female else a
    b.line(f"Năm sinh: {m.dob.year}      Dân tộc: Kinh      Quốc tịch: Việt Nam")
    b.line(f"Nơi cư trú: {m.address}")
    b.line(f"Họ, chữ đệm, tên người cha: {d.name}")
    b.line(f"Năm sinh: {d.dob.year}      Dân tộc: Kinh      Quốc tịch: Việt Nam")
    b.line(f"Số định danh cá nhân: {c.printed(d)}")
    b.line(f"Nơi cư trú: {d.address}")
    b.advance(6)
    b.line("Tôi cam đoan nội dung đề nghị đăng ký khai sinh trên đây là đúng sự thật, được sự "
           "thỏa thuận nhất trí của các bên liên quan theo quy định pháp luật.")
    b.line("Tôi chịu hoàn toàn trách nhiệm trước pháp luật về nội dung cam đoan của mình.")
    b.line("Đề nghị cấp bản sao Trích lục khai sinh: Có, số lượng: 02 bản")
    b.advance(8)
    b.line(f"Làm tại: phường {c.ward}, ngày {c.received:%d} tháng {c.received:%m} năm {c.received:%Y}",
           align="c")
    b.signatures([("Người yêu cầu", "(Ký, ghi rõ họ, chữ đệm, tên)", a.name)], gap=60)
    b.page_number(2, 2)
    return [p1, b.done()]


_UNITS = ["không", "một", "hai", "ba", "bốn", "năm", "sáu", "bảy", "tám", "chín"]


def _num_words(n: int) -> str:
    if n < 10:
        return _UNITS[n]
    if n < 20:
        return "mười" + ("" if n == 10 else " " + ("lăm" if n % 10 == 5 else _UNITS[n % 10]))
    t, u = divmod(n, 10)
    s = f"{_UNITS[t]} mươi"
    if u == 1:
        return s + " mốt"
    if u == 5:
        return s + " lăm"
    return s + ("" if u == 0 else " " + _UNITS[u])


def _date_words(d: date) -> str:
    y = d.year
    year = f"hai nghìn không trăm {_num_words(y - 2000)}" if 2000 <= y < 2100 else str(y)
    return f"Ngày {_num_words(d.day)} tháng {_num_words(d.month)} năm {year}"


def _giay_chung_sinh(c: Context) -> list[PageLayout]:
    m = c.applicant if c.applicant.female else c.partner
    b = Builder("giay_chung_sinh", True, ["CHỨNG", "SINH", _key_word(c.child_name)])
    b.header_two_columns(["SỞ Y TẾ QUẢNG NINH", "BỆNH VIỆN SẢN NHI"])
    b.advance(8)
    b.line(f"Số: {c.rng.randint(100, 999)}/GCS", indent=0)
    b.title(doc_title("giay_chung_sinh"))
    b.line(f"Họ và tên mẹ: {m.name}")
    b.line(f"Năm sinh: {m.dob.year}")
    b.line(f"Nơi đăng ký thường trú: {m.address}")
    b.line(f"Số định danh cá nhân: {c.printed(m)}")
    b.line("Dân tộc: Kinh")
    b.line(f"Đã sinh con vào lúc: {c.rng.randint(0, 23):02d} giờ {c.rng.randint(0, 59):02d} phút, "
           f"ngày {_dmy(c.child_dob)}")
    b.line("Tại: Bệnh viện Sản Nhi Quảng Ninh")
    b.line("Số lần sinh: 01      Số con trong lần sinh: 01")
    b.line(f"Giới tính của con: {'Nữ' if c.child_female else 'Nam'}")
    b.line(f"Cân nặng: {c.rng.randrange(2800, 3900, 50)} gam")
    b.line(f"Dự định đặt tên con: {c.child_name}", font="serif-bold")
    b.advance(6)
    b.line(f"Quảng Ninh, ngày {c.child_dob + timedelta(days=2):%d} tháng {c.child_dob:%m} năm {c.child_dob:%Y}",
           align="c")
    b.signatures([("Người đỡ đẻ", "(Ký, ghi rõ họ tên)", "Phan Thị Lan"),
                  ("Thủ trưởng cơ sở y tế", "(Ký, đóng dấu)", "Vương Đình Hải")])
    return [b.done()]


def _to_khai_ket_hon(c: Context) -> list[PageLayout]:
    bride, groom = (c.applicant, c.partner) if c.applicant.female else (c.partner, c.applicant)
    b = Builder("to_khai_ket_hon", True, ["KẾT", "HÔN", _key_word(bride.name), _key_word(groom.name)])
    b.motto()
    b.title(doc_title("to_khai_ket_hon"))
    _kinh_gui(b, c)
    for label, p in (("BÊN NỮ", bride), ("BÊN NAM", groom)):
        b.advance(4)
        b.line(label, font="serif-bold")
        b.line(f"Họ, chữ đệm, tên: {p.name}")
        b.line(f"Ngày, tháng, năm sinh: {_dmy(p.dob)}      Dân tộc: Kinh      Quốc tịch: Việt Nam")
        b.line(f"Nơi cư trú: {p.address}")
        b.line(f"Giấy tờ tùy thân: Căn cước công dân số {c.printed(p)}")
        b.line("Kết hôn lần thứ mấy: Lần thứ nhất")
    b.advance(4)
    b.line("Chúng tôi cam đoan những lời khai trên đây là đúng sự thật, việc kết hôn của chúng "
           "tôi là tự nguyện, không vi phạm quy định của Luật Hôn nhân và gia đình Việt Nam.")
    b.line(f"Làm tại: phường {c.ward}, ngày {c.received:%d} tháng {c.received:%m} năm {c.received:%Y}",
           align="c")
    b.signatures([("Bên nữ", "(Ký, ghi rõ họ tên)", bride.name),
                  ("Bên nam", "(Ký, ghi rõ họ tên)", groom.name)], gap=56)
    return [b.done()]


def _xac_nhan_hon_nhan(c: Context, who: Person | None = None) -> list[PageLayout]:
    p = who or (c.partner if c.applicant.female else c.applicant)
    b = Builder("xac_nhan_tinh_trang_hon_nhan", True, ["TÌNH", "TRẠNG", "HÔN", _key_word(p.name)])
    b.header_two_columns([c.agency, f"Số: {c.rng.randint(10, 400)}/XNTTHN"])
    b.title(doc_title("xac_nhan_tinh_trang_hon_nhan"))
    b.advance(4)
    b.line(f"Ủy ban nhân dân phường {c.ward}, tỉnh Quảng Ninh xác nhận:")
    b.line(f"Họ, chữ đệm, tên: {p.name}", font="serif-bold")
    b.line(f"Ngày, tháng, năm sinh: {_dmy(p.dob)}")
    b.line(f"Giới tính: {p.sex}      Dân tộc: Kinh      Quốc tịch: Việt Nam")
    b.line(f"Giấy tờ tùy thân: Căn cước công dân số {c.printed(p)}")
    b.line(f"Nơi cư trú: {p.address}")
    b.line("Trong thời gian cư trú tại địa phương từ năm 2018 đến nay")
    b.line("Tình trạng hôn nhân: Hiện tại chưa đăng ký kết hôn với ai.", font="serif-bold")
    b.line("Giấy này được cấp để: Làm thủ tục đăng ký kết hôn.")
    b.line("Giấy này có giá trị sử dụng trong thời hạn 6 tháng, kể từ ngày cấp.")
    issued = c.received - timedelta(days=10)
    b.advance(6)
    b.line(f"{c.ward}, ngày {issued:%d} tháng {issued:%m} năm {issued:%Y}", align="c")
    b.signatures([("TM. ỦY BAN NHÂN DÂN", "CHỦ TỊCH", "Nguyễn Văn Thành")])
    return [b.done()]


def _giay_de_nghi_hkd(c: Context) -> list[PageLayout]:
    a = c.applicant
    kind, trade = c.business
    bname = f"Hộ kinh doanh {kind} {_last_word(a.name)}"
    b = Builder("giay_de_nghi_dang_ky_hkd", True, ["ĐỀ", "NGHỊ", "KINH", "DOANH", _key_word(a.name)])
    b.motto()
    b.title(doc_title("giay_de_nghi_dang_ky_hkd"))
    _kinh_gui(b, c)
    b.advance(4)
    b.line(f"Tôi là: {a.name}", font="serif-bold")
    b.line(f"Ngày, tháng, năm sinh: {_dmy(a.dob)}      Giới tính: {a.sex}")
    b.line(f"Số định danh cá nhân: {c.printed(a)}")
    b.line(f"Địa chỉ liên lạc: {a.address}")
    b.line("Đăng ký hộ kinh doanh với các nội dung sau:")
    b.line(f"1. Tên hộ kinh doanh: {bname}")
    b.line(f"2. Địa chỉ trụ sở: Số {c.rng.randint(2, 99)}, đường {c.rng.choice(STREETS)}, "
           f"phường {c.ward}, tỉnh Quảng Ninh")
    b.line(f"3. Ngành, nghề kinh doanh: {trade}")
    b.line(f"4. Vốn kinh doanh: {c.rng.choice([100, 150, 200, 300])}.000.000 đồng")
    b.line(f"5. Số lượng lao động dự kiến: {c.rng.randint(1, 6):02d} người")
    b.line("6. Chủ thể thành lập hộ kinh doanh: Cá nhân")
    b.advance(4)
    b.line("Tôi cam kết bản thân không thuộc diện bị cấm thành lập hộ kinh doanh và chịu trách "
           "nhiệm trước pháp luật về tính hợp pháp, chính xác, trung thực của nội dung đăng ký trên.")
    b.advance(4)
    b.line(f"Quảng Ninh, ngày {c.received:%d} tháng {c.received:%m} năm {c.received:%Y}", align="c")
    b.signatures([("CHỦ HỘ KINH DOANH", "(Ký và ghi họ tên)", a.name)])
    return [b.done()]


def _hop_dong(c: Context) -> list[PageLayout]:
    owner, tenant = c.partner, c.applicant
    b = Builder("hop_dong", True, ["HỢP", "ĐỒNG", "THUÊ", _key_word(owner.name)])
    b.motto()
    b.title(doc_title("hop_dong"))
    start = c.received - timedelta(days=20)
    b.line(f"Hôm nay, ngày {_dmy(start)}, tại phường {c.ward}, tỉnh Quảng Ninh, chúng tôi gồm:")
    for label, p in (("BÊN CHO THUÊ (Bên A)", owner), ("BÊN THUÊ (Bên B)", tenant)):
        b.advance(3)
        b.line(label, font="serif-bold")
        b.line(f"Ông/Bà: {p.name}      Sinh ngày: {_dmy(p.dob)}")
        b.line(f"Số định danh cá nhân: {c.printed(p)}")
        b.line(f"Địa chỉ: {p.address}")
    b.advance(3)
    b.line("Điều 1. Bên A đồng ý cho Bên B thuê mặt bằng tầng 1 để làm địa điểm kinh doanh, "
           f"diện tích {c.rng.randint(30, 80)} m².")
    b.line(f"Điều 2. Giá thuê: {c.rng.choice([5, 6, 8, 10])}.000.000 đồng/tháng; thời hạn thuê "
           "05 năm kể từ ngày ký.")
    b.line("Điều 3. Bên B sử dụng mặt bằng đúng mục đích, thanh toán đúng hạn.")
    first = b.done()
    # the second sheet continues the articles: no header, no title, no page number
    b = Builder("hop_dong", False, ["Điều", "chấm", _key_word(tenant.name)])
    b.line("Điều 4. Quyền và nghĩa vụ của Bên A: giao mặt bằng đúng thời hạn; bảo đảm quyền sử dụng "
           "ổn định của Bên B trong thời hạn thuê.")
    b.line("Điều 5. Quyền và nghĩa vụ của Bên B: trả tiền thuê đúng hạn; không tự ý sửa chữa, "
           "cải tạo mặt bằng khi chưa được Bên A đồng ý.")
    b.line("Điều 6. Hợp đồng chấm dứt khi hết thời hạn thuê hoặc theo thỏa thuận của hai bên; "
           "bên vi phạm phải bồi thường thiệt hại theo quy định của pháp luật.")
    b.line("Điều 7. Hợp đồng được lập thành 02 bản, mỗi bên giữ 01 bản có giá trị như nhau.")
    b.signatures([("BÊN CHO THUÊ", "(Ký, ghi rõ họ tên)", owner.name),
                  ("BÊN THUÊ", "(Ký, ghi rõ họ tên)", tenant.name)])
    return [first, b.done()]


def _giay_uy_quyen(c: Context) -> list[PageLayout]:
    a, p = c.applicant, c.partner
    b = Builder("giay_uy_quyen", True, ["QUYỀN", _key_word(a.name), _key_word(p.name)])
    b.motto()
    b.title(doc_title("giay_uy_quyen"))
    for label, q in (("Bên ủy quyền", a), ("Bên được ủy quyền", p)):
        b.advance(3)
        b.line(f"{label}: {q.name}", font="serif-bold")
        b.line(f"Số định danh cá nhân: {c.printed(q)}")
        b.line(f"Nơi cư trú: {q.address}")
    b.advance(3)
    name = c.procedure_name.lower()
    b.line(f"Nội dung ủy quyền: Thay mặt bên ủy quyền nộp hồ sơ và nhận kết quả thủ tục {name}.")
    b.line("Thời hạn ủy quyền: đến khi hoàn thành thủ tục.")
    b.signatures([("BÊN ỦY QUYỀN", "(Ký, ghi rõ họ tên)", a.name),
                  ("BÊN ĐƯỢC ỦY QUYỀN", "(Ký, ghi rõ họ tên)", p.name)])
    return [b.done()]


def _so_yeu_ly_lich(c: Context) -> list[PageLayout]:
    """A CV (sơ yếu lý lịch): not in the default taxonomy, so the rules type it 'khac' (tests of learning)."""
    a = c.applicant
    b = Builder("so_yeu_ly_lich", True, ["LÝ", "LỊCH", _key_word(a.name)])
    b.motto()
    b.title(doc_title("so_yeu_ly_lich"))
    b.advance(4)
    b.line(f"Họ và tên: {a.name}", font="serif-bold")
    b.line(f"Ngày, tháng, năm sinh: {_dmy(a.dob)}      Giới tính: {a.sex}")
    b.line(f"Quê quán: {a.province}")
    b.line(f"Nơi ở hiện nay: {a.address}")
    b.line(f"Số định danh cá nhân: {c.printed(a)}")
    b.line("Trình độ học vấn: 12/12      Trình độ chuyên môn: Trung cấp kế toán")
    b.line("QUÁ TRÌNH HỌC TẬP VÀ CÔNG TÁC", font="serif-bold")
    for year, what in ((a.dob.year + 18, "Học tại Trường Trung cấp Kinh tế Quảng Ninh"),
                       (a.dob.year + 21, "Nhân viên kế toán, Công ty TNHH Thương mại Hạ Long"),
                       (a.dob.year + 26, "Kinh doanh tự do tại phường " + c.ward)):
        b.line(f"Từ năm {year}: {what}", indent=18)
    b.line("QUAN HỆ GIA ĐÌNH", font="serif-bold")
    b.line(f"Chồng/Vợ: {c.partner.name}, sinh năm {c.partner.dob.year}", indent=18)
    b.line("Tôi xin cam đoan những lời khai trên là đúng sự thật và chịu trách nhiệm trước pháp luật.")
    b.line(f"Quảng Ninh, ngày {c.received:%d} tháng {c.received:%m} năm {c.received:%Y}", align="c")
    b.signatures([("NGƯỜI KHAI", "(Ký, ghi rõ họ tên)", a.name)])
    return [b.done()]


CARD_W, CARD_H = 85.6 / 25.4 * 72, 53.98 / 25.4 * 72
CARD_SCALE = 1.25  # counters usually photocopy the card slightly enlarged


def _mrz_check(s: str) -> str:
    w = (7, 3, 1)
    val = lambda ch: int(ch) if ch.isdigit() else 0 if ch == "<" else ord(ch) - 55  # noqa: E731
    return str(sum(val(ch) * w[i % 3] for i, ch in enumerate(s)) % 10)


def _ascii_upper(s: str) -> str:
    s = s.replace("Đ", "D").replace("đ", "d")
    return "".join(ch for ch in unicodedata.normalize("NFD", s) if not unicodedata.combining(ch)).upper()


def mrz_lines(p: Person) -> list[str]:
    doc = p.cccd[3:]
    l1 = f"IDVNM{doc}{_mrz_check(doc)}{p.cccd}<<"
    l1 += _mrz_check(l1[5:])
    l1 = l1[:30].ljust(30, "<")
    dob = f"{p.dob:%y%m%d}"
    exp = f"{p.expiry:%y%m%d}"
    l2 = f"{dob}{_mrz_check(dob)}{'F' if p.female else 'M'}{exp}{_mrz_check(exp)}VNM"
    l2 = l2.ljust(29, "<")
    l2 += _mrz_check(l1[5:30] + l2[0:7] + l2[8:15] + l2[18:29])
    parts = _ascii_upper(p.name).split()
    l3 = (parts[0] + "<<" + "<".join(parts[1:]))[:30].ljust(30, "<")
    return [l1, l2, l3]


def _can_cuoc(c: Context) -> list[PageLayout]:
    holders = [c.applicant, c.partner]
    p = holders[c.cards_done % 2]
    c.cards_done += 1
    b = Builder("can_cuoc", True, ["CĂN", "CƯỚC", _key_word(p.name)])
    k = CARD_SCALE
    W, H = CARD_W * k, CARD_H * k
    x0 = (PAGE_W - W) / 2
    y0 = TOP + 30
    s = lambda v: v * k  # noqa: E731
    # front ---------------------------------------------------------------------------------
    b.rect(x0, y0, W, H, width=1.2)
    b.rect(x0 + s(8), y0 + s(48), s(58), s(76), width=0.6, fill=205)  # photo placeholder
    tx = x0 + s(74)
    cx = x0 + s(74) + (W - s(74)) / 2
    b.text_at(cx, y0 + s(13), "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", s(6.8), "sans-bold", "c")
    b.text_at(cx, y0 + s(22), "Độc lập - Tự do - Hạnh phúc", s(6.8), "sans-bold", "c")
    b.text_at(cx, y0 + s(36), doc_title("can_cuoc"), s(10.5), "sans-bold", "c")
    b.text_at(tx, y0 + s(50), f"Số / No.: {c.printed(p)}", s(9), "sans-bold")
    b.text_at(tx, y0 + s(62), "Họ và tên / Full name:", s(6.8), "sans")
    b.text_at(tx, y0 + s(73), p.name.upper(), s(8.5), "sans-bold")
    b.text_at(tx, y0 + s(85), f"Ngày sinh / Date of birth: {_dmy(p.dob)}", s(6.8), "sans")
    b.text_at(tx, y0 + s(96), f"Giới tính / Sex: {p.sex}     Quốc tịch / Nationality: Việt Nam",
              s(6.2), "sans")
    b.text_at(tx, y0 + s(107), "Quê quán / Place of origin:", s(6.2), "sans")
    b.text_at(tx, y0 + s(116), f"{p.province}", s(6.8), "sans")
    b.text_at(tx, y0 + s(127), "Nơi thường trú / Place of residence:", s(6.2), "sans")
    addr = p.address
    cut = addr.rfind(", phường")
    b.text_at(tx, y0 + s(136), addr[:cut + 1] if cut > 0 else addr, s(6.2), "sans")
    b.text_at(tx, y0 + s(144), addr[cut + 2:] if cut > 0 else "", s(6.2), "sans")
    b.text_at(x0 + s(8), y0 + s(138), "Có giá trị đến:", s(5.5), "sans")
    b.text_at(x0 + s(8), y0 + s(146), _dmy(p.expiry), s(5.5), "sans")
    # back ----------------------------------------------------------------------------------
    y1 = y0 + H + 40
    b.rect(x0, y1, W, H, width=1.2)
    b.text_at(x0 + s(10), y1 + s(16), "Đặc điểm nhân dạng / Personal identification:", s(6.5), "sans")
    b.text_at(x0 + s(10), y1 + s(26), "Nốt ruồi C:1cm trên trước mép phải", s(6.5), "sans")
    b.text_at(x0 + s(10), y1 + s(40), f"Ngày, tháng, năm / Date, month, year: {_dmy(p.issue)}",
              s(6.5), "sans")
    b.text_at(x0 + s(10), y1 + s(50), "CỤC TRƯỞNG CỤC CẢNH SÁT", s(6.5), "sans-bold")
    b.text_at(x0 + s(10), y1 + s(59), "QUẢN LÝ HÀNH CHÍNH VỀ TRẬT TỰ XÃ HỘI", s(6.5), "sans-bold")
    b.rect(x0 + W - s(70), y1 + s(8), s(30), s(38), width=0.5)  # fingerprint boxes
    b.rect(x0 + W - s(36), y1 + s(8), s(30), s(38), width=0.5)
    for i, ln in enumerate(mrz_lines(p)):
        b.text_at(x0 + s(10), y1 + s(112) + i * s(12), ln, s(9), "mono")
    b.y = y1 + H
    b.line(f"Bản sao Căn cước công dân của Ông/Bà {p.name}", size=11, font="serif-italic")
    return [b.done()]


GENERATORS = {
    "phieu_tiep_nhan": _receipt,
    "to_khai_khai_sinh": _to_khai_khai_sinh,
    "giay_chung_sinh": _giay_chung_sinh,
    "to_khai_ket_hon": _to_khai_ket_hon,
    "xac_nhan_tinh_trang_hon_nhan": _xac_nhan_hon_nhan,
    "giay_de_nghi_dang_ky_hkd": _giay_de_nghi_hkd,
    "can_cuoc": _can_cuoc,
    "hop_dong": _hop_dong,
    "giay_uy_quyen": _giay_uy_quyen,
    "so_yeu_ly_lich": _so_yeu_ly_lich,
}


def build_layout(procedure: str = "1.001193", seed: int = 0, include: list[str] | None = None,
                 signed: bool = False) -> tuple[SynthDossier, list[PageLayout]]:
    """Lay out a dossier (no rendering). Returns the truth (``files`` empty) and the pages.

    ``signed`` draws handwritten signatures; the OCR quality sets leave them out (their strokes
    read as stray characters, which is noise, not Vietnamese reading: measured 0.63% flexible CER
    unsigned against 1.16% signed on the clean birth dossier, seed 0).
    """
    p = _procedure(procedure)
    types = list(include) if include is not None else default_components(p)
    unknown = [t for t in types if t not in GENERATORS]
    if unknown:
        raise ValueError(f"cannot synthesize doc types {unknown}; known: {sorted(GENERATORS)}")
    ctx = _context(procedure, seed, types)
    layouts: list[PageLayout] = []
    for t in types:
        layouts.extend(GENERATORS[t](ctx))
    if signed:
        for layout in layouts:
            layout.sign()
    pages = [SynthPage(n=i, doc_type=pl.doc_type, starts_document=pl.starts_document,
                       expected_words=pl.expected_words, text="\n".join(pl.lines))
             for i, pl in enumerate(layouts, 1)]
    truth = SynthDossier(procedure=procedure, dossier_code=ctx.dossier_code,
                         cccd=list(ctx.printed_ids), pages=pages, files=[], seed=seed,
                         applicant=ctx.applicant.name)
    return truth, layouts


# --------------------------------------------------------------------------------------------
# Rasterisation
# --------------------------------------------------------------------------------------------
def page_size_px(dpi: int) -> tuple[int, int]:
    return round(PAGE_W_MM / 25.4 * dpi), round(PAGE_H_MM / 25.4 * dpi)


def _qr_matrix(data: str) -> list[list[bool]]:
    import qrcode
    from qrcode.constants import ERROR_CORRECT_M

    q = qrcode.QRCode(error_correction=ERROR_CORRECT_M, border=2)
    q.add_data(data)
    q.make(fit=True)
    return q.get_matrix()


def rasterize(layout: PageLayout, dpi: int = 300) -> Image.Image:
    w, h = page_size_px(dpi)
    mode = "RGB" if layout.colour else "L"
    img = Image.new(mode, (w, h), "white")
    d = ImageDraw.Draw(img)
    k = dpi / 72.0

    def col(c: Color):
        return c if mode == "RGB" else round(0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2])

    for op in layout.ops:
        a = op.args
        if op.kind == "text":
            x, y, s, size, font, align = a
            f = _pil_font(font, max(1, round(size * k)))
            d.text((x * k, y * k), s, font=f, fill=col(op.color),
                   anchor={"l": "ls", "c": "ms", "r": "rs"}[align])
        elif op.kind == "line":
            x1, y1, x2, y2, width = a
            d.line([(x1 * k, y1 * k), (x2 * k, y2 * k)], fill=col(op.color),
                   width=max(1, round(width * k)))
        elif op.kind == "rect":
            x, y, rw, rh, width, fill = a
            fillc = None if fill is None else (fill if mode == "L" else (fill,) * 3)
            d.rectangle([x * k, y * k, (x + rw) * k, (y + rh) * k], fill=fillc,
                        outline=col(op.color), width=max(1, round(width * k)))
        elif op.kind == "circle":
            cx, cy, r, width = a
            d.ellipse([(cx - r) * k, (cy - r) * k, (cx + r) * k, (cy + r) * k],
                      outline=col(op.color), width=max(1, round(width * k)))
        elif op.kind == "qr":
            x, y, size, data = a
            m = _qr_matrix(data)
            n = len(m)
            box = max(1, int(size * k) // n)
            small = Image.new("L", (n, n), 255)
            small.putdata([0 if v else 255 for row in m for v in row])
            big = small.resize((n * box, n * box), Image.Resampling.NEAREST)
            if mode == "RGB":
                big = big.convert("RGB")
            img.paste(big, (round(x * k), round(y * k)))
    return img


def degrade_image(img: Image.Image, seed: int, page: int) -> Image.Image:
    """Scanner look: small rotation (±1.5°), slight blur, gaussian noise. Deterministic."""
    rng = np.random.default_rng([seed, page, 0x5C4])
    angle = float(rng.uniform(-1.5, 1.5))
    fill = "white" if img.mode == "L" else (255, 255, 255)
    out = img.rotate(angle, resample=Image.Resampling.BILINEAR, expand=False, fillcolor=fill)
    out = out.filter(ImageFilter.GaussianBlur(radius=0.6 * img.width / 2480))
    arr = np.asarray(out, dtype=np.float32)
    arr = arr * float(rng.uniform(0.92, 0.97)) + float(rng.uniform(4, 12))  # greyish paper
    arr += rng.normal(0.0, 7.0, size=arr.shape[:2])[..., None] if arr.ndim == 3 else \
        rng.normal(0.0, 7.0, size=arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), mode=img.mode)


def render_pages(procedure: str = "1.001193", seed: int = 0, dpi: int = 300,
                 include: list[str] | None = None, degrade: bool = False,
                 layouts: list[PageLayout] | None = None) -> list[Image.Image]:
    """Render the dossier's pages as PIL images (mode L, or RGB for pages with a red stamp)."""
    if layouts is None:
        _, layouts = build_layout(procedure, seed, include)
    imgs = []
    for i, pl in enumerate(layouts, 1):
        im = rasterize(pl, dpi)
        if degrade:
            im = degrade_image(im, seed, i)
        im.info["dpi"] = (dpi, dpi)
        imgs.append(im)
    return imgs


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------
def _jpeg_bytes(img: Image.Image, dpi: int, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, dpi=(dpi, dpi))
    return buf.getvalue()


def _fmt_num(v: float) -> str:
    return f"{v:.4f}".rstrip("0").rstrip(".")


def write_image_pdf(images: list[Image.Image], path: Path, dpi: int) -> None:
    """Image-only PDF: one full-page JPEG per page, MediaBox sized so that ppi == dpi."""
    import pikepdf
    from pikepdf import Dictionary, Name

    pdf = pikepdf.new()
    for img in images:
        w, h = img.size
        wpt, hpt = w * 72 / dpi, h * 72 / dpi
        xobj = pikepdf.Stream(pdf, _jpeg_bytes(img, dpi))
        xobj.Type = Name.XObject
        xobj.Subtype = Name.Image
        xobj.Width, xobj.Height = w, h
        xobj.ColorSpace = Name.DeviceRGB if img.mode == "RGB" else Name.DeviceGray
        xobj.BitsPerComponent = 8
        xobj.Filter = Name.DCTDecode
        content = f"q {_fmt_num(wpt)} 0 0 {_fmt_num(hpt)} 0 0 cm /Im0 Do Q".encode()
        page = Dictionary(
            Type=Name.Page,
            MediaBox=pikepdf.Array([0, 0, pikepdf.Object.parse(_fmt_num(wpt).encode()),
                                    pikepdf.Object.parse(_fmt_num(hpt).encode())]),
            Resources=Dictionary(XObject=Dictionary(Im0=xobj)),
            Contents=pikepdf.Stream(pdf, content),
        )
        pdf.pages.append(pikepdf.Page(pdf.make_indirect(page)))
    pdf.save(path, deterministic_id=True, min_version="1.4", compress_streams=True)


_RL_FONTS = {
    "serif": "SynthSerif",
    "serif-bold": "SynthSerif-Bold",
    "serif-italic": "SynthSerif-Italic",
    "sans": "SynthSans",
    "sans-bold": "SynthSans-Bold",
    "mono": "SynthMono",
}


def _register_rl_fonts() -> None:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    for key, name in _RL_FONTS.items():
        if name not in pdfmetrics.getRegisteredFontNames():
            pdfmetrics.registerFont(TTFont(name, _font_path(key)))


def write_text_pdf(layouts: list[PageLayout], path: Path, dpi: int = 300) -> None:
    """Born-digital PDF with a real text layer (same layout as the scans)."""
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    _register_rl_fonts()
    cv = canvas.Canvas(str(path), pagesize=(PAGE_W, PAGE_H), invariant=1, pageCompression=1,
                       initialFontName=_RL_FONTS["serif"], initialFontSize=BODY, lang="vi")
    cv.setTitle("Hồ sơ tổng hợp (sohoa synth)")
    cv.setAuthor("sohoa")
    cv.setCreator("sohoa_dev.synth")
    cv.setProducer("sohoa_dev.synth")
    Y = lambda y: PAGE_H - y  # noqa: E731
    for pl in layouts:
        for op in pl.ops:
            a = op.args
            r, g, bl = (v / 255 for v in op.color)
            cv.setStrokeColorRGB(r, g, bl)
            cv.setFillColorRGB(r, g, bl)
            if op.kind == "text":
                x, y, s, size, font, align = a
                cv.setFont(_RL_FONTS[font], size)
                {"l": cv.drawString, "c": cv.drawCentredString, "r": cv.drawRightString}[align](x, Y(y), s)
            elif op.kind == "line":
                x1, y1, x2, y2, width = a
                cv.setLineWidth(width)
                cv.line(x1, Y(y1), x2, Y(y2))
            elif op.kind == "rect":
                x, y, rw, rh, width, fill = a
                cv.setLineWidth(width)
                if fill is not None:
                    cv.setFillGray(fill / 255)
                cv.rect(x, Y(y + rh), rw, rh, stroke=1, fill=0 if fill is None else 1)
            elif op.kind == "circle":
                cx, cy, rad, width = a
                cv.setLineWidth(width)
                cv.circle(cx, Y(cy), rad, stroke=1, fill=0)
            elif op.kind == "qr":
                x, y, size, data = a
                m = _qr_matrix(data)
                n = len(m)
                small = Image.new("L", (n, n), 255)
                small.putdata([0 if v else 255 for row in m for v in row])
                cv.drawImage(ImageReader(small.convert("RGB")), x, Y(y + size), size, size)
        cv.showPage()
    cv.save()


def page_file_name(i: int, ext: str) -> str:
    return f"page-{i}.{ext}"


class Variation(BaseModel):
    """How a scanning station spoils a dossier: page by page (content page numbers, 1-based)."""

    skews: dict[int, float] = {}  # degrees counter-clockwise, on top of ``degrade``'s small tilt
    turns: dict[int, int] = {}  # degrees the sheet was fed turned (90, 180, 270 clockwise)
    blank_after: list[int] = []  # a blank back (duplex scan) follows these pages
    untitled: list[int] = []  # these pages lost their title (torn off, stamped over): only the body is left
    replace: dict[int, dict[str, str]] = {}  # on these pages, text printed instead of other text ({"old": "new"}: a wrong ID number)


BLANK_TYPE = "blank"


def _blank_back(size: tuple[int, int], seed: int, n: int) -> Image.Image:
    """The back of a sheet: paper grey, dust and a faint show-through blur, nothing to read."""
    rng = np.random.default_rng([seed, n, 0xB1A])
    paper = np.full(size[::-1], float(rng.uniform(238, 250)), np.float32)
    paper += rng.normal(0.0, 3.0, size=paper.shape)
    paper[rng.random(paper.shape) < 0.0003] = 60  # dust
    return Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8), mode="L").filter(ImageFilter.GaussianBlur(1))


def vary(images: list[Image.Image], truth: SynthDossier, variation: Variation, seed: int) -> list[Image.Image]:
    """Apply skews, turns and blank backs to rendered pages; the truth gains the blank pages."""
    out: list[Image.Image] = []
    pages: list[SynthPage] = []
    for n, (image, page) in enumerate(zip(images, truth.pages), start=1):
        dpi = image.info.get("dpi")
        fill = 255 if image.mode == "L" else (255, 255, 255)
        if n in variation.skews:
            image = image.rotate(variation.skews[n], resample=Image.Resampling.BICUBIC, expand=True, fillcolor=fill)
        if variation.turns.get(n):
            image = image.rotate(-variation.turns[n], expand=True)  # PIL turns counter-clockwise
        image.info["dpi"] = dpi
        out.append(image)
        pages.append(page.model_copy(update={"n": len(pages) + 1}))
        if n in variation.blank_after:
            back = _blank_back(images[0].size, seed, n)
            back.info["dpi"] = dpi
            out.append(back)
            pages.append(SynthPage(n=len(pages) + 1, doc_type=BLANK_TYPE, starts_document=False, expected_words=[]))
    truth.pages = pages
    return out


def _edit_text(truth: SynthDossier, layouts: list[PageLayout], variation: Variation) -> None:
    """Titles removed and text replaced, on the layouts and in the truth alike."""
    for n, (layout, page) in enumerate(zip(layouts, truth.pages), start=1):
        title = doc_title(layout.doc_type)
        drop = title if n in variation.untitled else None
        ops = []
        for op in layout.ops:
            if op.kind == "text":
                text = op.args[2]
                if text == drop:
                    continue
                for old, new in variation.replace.get(n, {}).items():
                    text = text.replace(old, new)
                op = Op("text", (*op.args[:2], text, *op.args[3:]), op.color)
            ops.append(op)
        layout.ops = ops
        layout.lines = [line for line in layout.lines if line != drop]
        for old, new in variation.replace.get(n, {}).items():
            layout.lines = [line.replace(old, new) for line in layout.lines]
        page.text = "\n".join(layout.lines)
        page.expected_words = [w for w in page.expected_words if any(w in line for line in layout.lines)]


def eval_spec(seed: int) -> tuple[str, list[str], int, Variation]:
    """A realistic, varied dossier for evaluation: procedure, documents in order, dpi and spoilage."""
    rng = random.Random(f"sohoa-eval/{seed}")
    procedure = rng.choice(sorted(procedures()))
    p = _procedure(procedure)
    include = default_components(p)
    proxy = [c.type for c in p.conditional if c.when == "proxy"]
    if proxy and rng.random() < 0.35:  # handed in by a proxy, with the authorisation
        include.insert(rng.randrange(2, len(include) + 1), proxy[0])
    body = include[1:]
    if rng.random() < 0.3:
        rng.shuffle(body)
    include = ([*body, "phieu_tiep_nhan"] if rng.random() < 0.15 else ["phieu_tiep_nhan", *body])
    dpi = 200 if rng.random() < 0.3 else 300
    pages = len(build_layout(procedure, seed, include)[1])
    variation = Variation(
        skews={n: round(rng.uniform(-3.0, 3.0), 2) for n in range(1, pages + 1) if rng.random() < 0.3},
        turns={n: rng.choice([90, 180, 270]) for n in range(1, pages + 1) if rng.random() < 0.08},
        blank_after=[n for n in range(1, pages + 1) if rng.random() < 0.15],
    )
    return procedure, include, dpi, variation


def make_eval_set(folder: Path, count: int, seed: int = 0) -> list[SynthDossier]:
    """``count`` degraded, varied dossiers (image PDFs) with their truth files, for ``sohoa eval``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    truths = []
    for i in range(count):
        procedure, include, dpi, variation = eval_spec(seed + i)
        out = folder / f"dossier-{seed + i:04d}.pdf"
        truth = make_dossier(out, procedure=procedure, seed=seed + i, dpi=dpi, include=include, degrade=True,
                             variation=variation, signed=True)
        write_truth(truth, out)
        truths.append(truth)
    return truths


def make_dossier(out: Path, *, procedure: str = "1.001193", seed: int = 0,
                 fmt: Format = "pdf", dpi: int = 300, include: list[str] | None = None,
                 degrade: bool = False, variation: Variation | None = None, signed: bool = False) -> SynthDossier:
    """Write a synthetic dossier to ``out`` (file, or folder for *-dir formats); return truth."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {FORMATS}")
    if variation is not None and fmt == "text-pdf":
        raise ValueError("a born-digital PDF cannot be skewed or turned")
    out = Path(out)
    truth, layouts = build_layout(procedure, seed, include, signed)
    if variation is not None:
        _edit_text(truth, layouts, variation)
    truth.fmt, truth.dpi, truth.degraded = fmt, dpi, degrade
    files: list[Path] = []
    if fmt == "text-pdf":
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_pdf(layouts, out, dpi)
        files = [out]
    else:
        images = render_pages(procedure, seed, dpi, include, degrade, layouts=layouts)
        if variation is not None:
            images = vary(images, truth, variation, seed)
        if fmt == "pdf":
            out.parent.mkdir(parents=True, exist_ok=True)
            write_image_pdf(images, out, dpi)
            files = [out]
        elif fmt == "tiff":
            out.parent.mkdir(parents=True, exist_ok=True)
            images[0].save(out, "TIFF", save_all=True, append_images=images[1:],
                           compression="tiff_lzw", dpi=(dpi, dpi))
            files = [out]
        else:
            out.mkdir(parents=True, exist_ok=True)
            ext = "png" if fmt == "png-dir" else "jpg"
            for i, img in enumerate(images, 1):
                p = out / page_file_name(i, ext)
                if ext == "png":
                    img.save(p, "PNG", dpi=(dpi, dpi))
                else:
                    img.save(p, "JPEG", quality=85, dpi=(dpi, dpi))
                files.append(p)
    truth.files = [str(p) for p in files]
    return truth


def truth_path(out: Path | str) -> Path:
    return Path(str(out).rstrip("/") + ".truth.json")


def write_truth(truth: SynthDossier, out: Path | str) -> Path:
    p = truth_path(out)
    p.write_text(truth.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sohoa-synth",
                                 description="Write a labelled synthetic scanned dossier.")
    ap.add_argument("out", help="output file (pdf/tiff/text-pdf) or folder (png-dir/jpeg-dir)")
    ap.add_argument("--procedure", default="1.001193", choices=sorted(procedures()))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--format", dest="fmt", default="pdf", choices=FORMATS)
    ap.add_argument("--dpi", type=int, default=300)
    ap.add_argument("--include", default=None,
                    help="comma-separated doc types, in order (default: the procedure's set)")
    ap.add_argument("--degrade", action="store_true", help="rotate, blur and add noise")
    ap.add_argument("--eval-set", type=int, metavar="N",
                    help="write N varied, degraded dossiers with truth files into OUT (for sohoa eval)")
    a = ap.parse_args(argv)
    if a.eval_set:
        truths = make_eval_set(Path(a.out), a.eval_set, seed=a.seed)
        print(json.dumps({"folder": str(a.out), "dossiers": len(truths), "pages": sum(len(t.pages) for t in truths)},
                         ensure_ascii=False))
        return 0
    include = [t.strip() for t in a.include.split(",") if t.strip()] if a.include else None
    try:
        truth = make_dossier(Path(a.out), procedure=a.procedure, seed=a.seed, fmt=a.fmt,
                             dpi=a.dpi, include=include, degrade=a.degrade)
    except ValueError as e:
        ap.error(str(e))
    tp = write_truth(truth, a.out)
    print(f"wrote {len(truth.pages)} pages to {', '.join(truth.files[:3])}"
          f"{' ...' if len(truth.files) > 3 else ''}; truth: {tp}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
