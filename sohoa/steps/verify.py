"""Verification: what a clerk checks before a dossier may be archived unattended.

Every check is recorded with its outcome, its message in English and Vietnamese, and the
values it compared. A failing ``fatal`` check rejects the dossier, a failing ``error`` sends
it to review, warnings and notes are kept for the record only. Four families:

- components, against the procedure catalog: required, conditional (a power of attorney when
  someone else hands the dossier in), the usual number of copies (two ID cards to marry), and
  documents the procedure does not expect;
- quality: resolution, OCR confidence per page and per document, blank pages, unreadable
  pages, page order, how sure the typing is;
- fields: dossier code, procedure code, ID numbers by structure and against the date of birth
  and sex on the same card, dates that exist;
- consistency across documents: the applicant's ID number and name against the ID-card copies,
  the child's name on the declaration and the hospital's certificate, the receipt's procedure
  against the one the documents add up to.

Besides them, a note (``info``, never changing the status) when the caller looked the person up
(``earlier``): required components this person already handed in with an earlier dossier.
"""

from __future__ import annotations

from collections import Counter
from datetime import date
from typing import TYPE_CHECKING

from sohoa.domain import fields as labelled
from sohoa.domain import identifiers
from sohoa.domain.catalog import Procedure, Taxonomy, catalog, key_of, taxonomy
from sohoa.kernel.keys import step_key
from sohoa.kernel.models import CaptureResult, Check, ClassifyResult, OcrResult, Status, Verification, VerifyResult
from sohoa.kernel.settings import Settings, VerifySettings

if TYPE_CHECKING:
    from sohoa.domain.index import Hit

VERSION = "3"  # 2: QR/printed agreement, resolution; 3: bilingual checks, fields, consistency, quality
MIN_LEGAL_DPI = 200  # digital copies must be at least 200 dpi (see docs/domain.md, 'Digitization requirements')
# failed, these checks are about how the documents were typed as a whole: a person looks at uncertain documents
DOCUMENT_CHECKS = frozenset({"classification.confidence", "components.required"})
UNREADABLE_CONFIDENCE = 30.0  # a page with text below this mean word confidence could not be read
MAX_BLANK_RATIO = 0.5
Value = str | int | float | list[str] | None


def key_settings(settings: Settings) -> dict:
    return key_of(VerifySettings.of(settings))


def verify_key(classify_key: str, settings: Settings) -> str:
    return step_key("verify", VERSION, key_settings(settings), classify_key)


def _check(id: str, ok: bool, severity: str, en: str, vi: str, **values: Value) -> Check:
    return Check(id=id, ok=ok, severity=severity, message=en, message_vi=vi, values=values)


def _pages(numbers: list[int]) -> str:
    return ", ".join(str(n) for n in numbers)


# --- quality ---------------------------------------------------------------------------------


def check_pages(capture: CaptureResult, ocr: OcrResult) -> Check:
    readable = [p.n for p in ocr.pages if p.text.strip()]
    return _check("pages.readable", bool(readable), "fatal",
                  "at least one page has text" if readable else "no page has any readable text",
                  "có ít nhất một trang đọc được" if readable else "không trang nào đọc được chữ",
                  pages=len(capture.pages), readable=len(readable))


def check_confidence(capture: CaptureResult, ocr: OcrResult, settings: Settings) -> Check:
    blank = {p.n for p in capture.pages if p.blank}
    low = [p.n for p in ocr.pages if p.n not in blank and p.text.strip() and p.confidence < settings.min_page_confidence]
    threshold = settings.min_page_confidence
    return _check("ocr.confidence", not low, "warning",
                  f"pages below OCR confidence {threshold:.0f}: {_pages(low)}" if low else "OCR confidence is acceptable on every page",
                  f"trang có độ tin cậy nhận dạng dưới {threshold:.0f}: {_pages(low)}" if low
                  else "độ tin cậy nhận dạng đạt trên mọi trang",
                  low_pages=[str(n) for n in low], threshold=threshold)


def check_document_confidence(ocr: OcrResult, classified: ClassifyResult, settings: Settings) -> Check:
    confidence = {p.n: p.confidence for p in ocr.pages}
    means = {i: sum(confidence[n] for n in d.pages) / len(d.pages) for i, d in enumerate(classified.documents, 1) if d.pages}
    low = [i for i, mean in means.items() if mean < settings.min_page_confidence]
    return _check("ocr.document_confidence", not low, "warning",
                  f"documents read with low confidence: {_pages(low)}" if low else "every document is read with acceptable confidence",
                  f"văn bản nhận dạng với độ tin cậy thấp: {_pages(low)}" if low else "mọi văn bản đều nhận dạng đạt",
                  low_documents=[str(i) for i in low], means=[f"{i}:{m:.1f}" for i, m in means.items()])


def check_unreadable(capture: CaptureResult, ocr: OcrResult) -> Check:
    blank = {p.n for p in capture.pages if p.blank}
    bad = [p.n for p in ocr.pages if p.n not in blank and (not p.text.strip() or p.confidence < UNREADABLE_CONFIDENCE)]
    return _check("quality.unreadable", not bad, "error",
                  f"pages with content that could not be read: {_pages(bad)}" if bad else "every page with content was read",
                  f"trang có nội dung nhưng không đọc được: {_pages(bad)}" if bad else "mọi trang có nội dung đều đọc được",
                  pages=[str(n) for n in bad])


def check_blank_ratio(capture: CaptureResult) -> Check:
    blank = [p.n for p in capture.pages if p.blank]
    ratio = len(blank) / len(capture.pages) if capture.pages else 0.0
    ok = ratio <= MAX_BLANK_RATIO
    return _check("quality.blank_ratio", ok, "warning",
                  f"{len(blank)} of {len(capture.pages)} pages are blank" + ("" if ok else ": was the right side scanned?"),
                  f"{len(blank)}/{len(capture.pages)} trang trắng" + ("" if ok else ": kiểm tra lại mặt quét"),
                  blank_pages=[str(n) for n in blank], ratio=round(ratio, 3))


def check_resolution(capture: CaptureResult) -> Check:
    low = [p.n for p in capture.pages if p.dpi < MIN_LEGAL_DPI]
    return _check("quality.resolution", not low, "error",  # below the legal minimum: a person decides to rescan
                  f"pages below the legal {MIN_LEGAL_DPI} dpi: {_pages(low)}" if low else f"every page is at least {MIN_LEGAL_DPI} dpi",
                  f"trang dưới {MIN_LEGAL_DPI} dpi theo quy định: {_pages(low)}" if low else f"mọi trang đạt tối thiểu {MIN_LEGAL_DPI} dpi",
                  low_pages=[str(n) for n in low], minimum_dpi=MIN_LEGAL_DPI)


def check_page_order(classified: ClassifyResult) -> Check:
    marks = {p.n: p.mark for p in classified.pages if p.mark}
    wrong = []
    for i, document in enumerate(classified.documents, start=1):
        numbers = [int(marks[n].split("/")[0]) for n in document.pages if n in marks]
        if numbers != sorted(numbers) or len(set(numbers)) != len(numbers):
            wrong.append(i)
    return _check("quality.page_order", not wrong, "warning",
                  f"documents whose printed page numbers are out of order: {_pages(wrong)}" if wrong
                  else "printed page numbers are in order",
                  f"văn bản có số trang không theo thứ tự: {_pages(wrong)}" if wrong else "số trang đúng thứ tự",
                  documents=[str(i) for i in wrong])


def check_type_confidence(classified: ClassifyResult, settings: Settings) -> Check:
    unsure = [i for i, d in enumerate(classified.documents, start=1) if d.confidence < settings.min_type_confidence]
    threshold = settings.min_type_confidence
    shown = "; ".join(f"{i} (pages {_pages(classified.documents[i - 1].pages)}: {classified.documents[i - 1].type}, "
                      f"{classified.documents[i - 1].confidence:.2f})" for i in unsure)
    return _check("classification.confidence", not unsure, "error",
                  f"documents whose type is uncertain (below {threshold:.2f}): {shown}" if unsure
                  else "every document's type is certain enough",
                  f"văn bản chưa chắc chắn về loại (dưới {threshold:.2f}): {shown.replace('pages', 'trang')}" if unsure
                  else "loại của mọi văn bản đủ tin cậy",
                  documents=[f"{i}:{classified.documents[i - 1].type}:{classified.documents[i - 1].confidence:.2f}"
                             for i in unsure], threshold=threshold)


# --- components ------------------------------------------------------------------------------


def _procedure(classified: ClassifyResult, settings: Settings) -> Procedure | None:
    return catalog(settings.catalog).procedures.get(classified.procedure or "")


def check_procedure(classified: ClassifyResult, settings: Settings) -> Check:
    code = classified.procedure
    known = _procedure(classified, settings) is not None
    return _check("procedure.known", known, "error",
                  f"procedure {code} is in the catalog" if known else
                  f"procedure {code} is not in the catalog" if code else "no procedure code (receipt, caller or documents)",
                  f"thủ tục {code} có trong danh mục" if known else
                  f"thủ tục {code} không có trong danh mục" if code else "không xác định được thủ tục",
                  procedure=code, source=classified.procedure_source)


def is_proxy(classified: ClassifyResult) -> bool:
    """The person who handed the dossier in (the receipt's) is not the applicant (the form's)."""
    submitters = [d.fields["submitter_name"] for d in classified.documents if isinstance(d.fields.get("submitter_name"), str)]
    applicants = [d.fields["applicant_name"] for d in classified.documents if isinstance(d.fields.get("applicant_name"), str)]
    return bool(submitters and applicants) and not any(labelled.same_name(s, a) for s in submitters for a in applicants)


def required_types(classified: ClassifyResult, settings: Settings) -> list[str]:
    """The components the dossier's procedure requires, a power of attorney included when handed in by proxy."""
    procedure = _procedure(classified, settings)
    required = list(procedure.required) if procedure else []
    if procedure and is_proxy(classified):
        required += [c.type for c in procedure.conditional if c.when == "proxy"]
    return required


def check_components(classified: ClassifyResult, settings: Settings | None = None) -> tuple[Check, list[str]]:
    procedure = _procedure(classified, settings or Settings())
    present = {d.type for d in classified.documents}
    required = required_types(classified, settings or Settings())
    missing = [t for t in required if t not in present]
    ok = procedure is not None and not missing
    return _check("components.required", ok, "error",
                  "all required components present" if ok else
                  f"missing required components: {', '.join(missing)}" if procedure else
                  "required components unknown without a catalogued procedure",
                  "đủ thành phần hồ sơ bắt buộc" if ok else
                  f"thiếu thành phần bắt buộc: {', '.join(missing)}" if procedure else
                  "chưa xác định thủ tục nên chưa kiểm tra được thành phần",
                  missing=missing, present=sorted(present), proxy="yes" if procedure and is_proxy(classified) else "no"
                  ), missing


def check_copies(classified: ClassifyResult, settings: Settings) -> Check:
    """The usual number of copies of each component, and components handed in twice for no reason."""
    procedure = _procedure(classified, settings)
    counts = Counter(d.type for d in classified.documents if d.type != "khac")
    expected = procedure.counts if procedure else {}
    short = [f"{t} {counts[t]}/{n}" for t, n in expected.items() if 0 < counts[t] < n]
    twice = [f"{t} x{n}" for t, n in counts.items() if n > max(expected.get(t, 1), 1)]
    problems = short + twice
    return _check("components.copies", not problems, "warning",
                  f"unusual number of copies: {'; '.join(problems)}" if problems else "each component in its usual number",
                  f"số bản không như thường lệ: {'; '.join(problems)}" if problems else "số bản của từng thành phần hợp lệ",
                  counts=[f"{t}:{n}" for t, n in sorted(counts.items())])


def check_unexpected(classified: ClassifyResult, settings: Settings) -> Check:
    procedure = _procedure(classified, settings)
    extra = sorted({d.type for d in classified.documents} - procedure.known()) if procedure else []
    return _check("components.unexpected", not extra, "warning",
                  f"documents this procedure does not list: {', '.join(extra)}" if extra else "every document belongs to the procedure",
                  f"văn bản không thuộc thành phần của thủ tục: {', '.join(extra)}" if extra else "mọi văn bản thuộc thành phần thủ tục",
                  types=extra)


# --- fields ----------------------------------------------------------------------------------


def check_dossier_code(classified: ClassifyResult) -> Check:
    code = classified.fields.dossier_code
    has_receipt = any(d.type == "phieu_tiep_nhan" for d in classified.documents)
    ok = isinstance(code, str) and identifiers.is_dossier_code(code)
    return _check("dossier_code.format", ok, "error" if has_receipt else "warning",
                  f"dossier code {code} is well-formed" if ok else
                  ("the receipt has no readable dossier code" if has_receipt else "no dossier code found (no receipt page)"),
                  f"mã hồ sơ {code} đúng định dạng" if ok else
                  ("không đọc được mã hồ sơ trên giấy tiếp nhận" if has_receipt else "không có mã hồ sơ (không có giấy tiếp nhận)"),
                  dossier_code=code if isinstance(code, str) else None)


def check_dossier_code_agreement(classified: ClassifyResult) -> Check:
    code, printed = classified.fields.dossier_code, classified.fields.dossier_code_printed
    return _check("dossier_code.consistent", printed is None, "error",
                  "the QR code and the printed dossier code agree" if printed is None
                  else f"QR code says {code} but the receipt prints {printed}",
                  "mã QR và mã hồ sơ in khớp nhau" if printed is None else f"mã QR là {code} nhưng giấy tiếp nhận in {printed}",
                  qr=code if isinstance(code, str) else None, printed=printed if isinstance(printed, str) else None)


def check_procedure_code(classified: ClassifyResult, settings: Settings) -> Check:
    printed = classified.fields.receipt_procedure
    known = isinstance(printed, str) and printed in catalog(settings.catalog).procedures
    ok = printed is None or known
    return _check("fields.procedure_code", ok, "error",
                  f"the receipt's procedure code {printed} is in the catalog" if known else
                  ("no procedure code printed on a receipt" if printed is None else f"the receipt's procedure code {printed} is unknown"),
                  f"mã thủ tục {printed} trên giấy tiếp nhận có trong danh mục" if known else
                  ("giấy tiếp nhận không in mã thủ tục" if printed is None else f"mã thủ tục {printed} không có trong danh mục"),
                  receipt_procedure=printed if isinstance(printed, str) else None)


def check_cccd(classified: ClassifyResult) -> Check:
    invalid = classified.fields.cccd_invalid or []
    invalid = invalid if isinstance(invalid, list) else [invalid]
    problems = [f"{n} ({identifiers.cccd_problem(n)})" for n in invalid]
    return _check("cccd.format", not invalid, "error",
                  "ID numbers found are well-formed" if not invalid else f"malformed ID numbers: {'; '.join(problems)}",
                  "số định danh đúng cấu trúc" if not invalid else f"số định danh sai cấu trúc: {'; '.join(problems)}",
                  valid=list(classified.fields.cccd), invalid=list(invalid))


def check_cccd_against_card(classified: ClassifyResult) -> Check:
    """Century/sex digit and birth-year digits of each card's number against the same card's date of birth and sex."""
    problems, compared = [], []
    for document in classified.documents:
        number, born, sex = (document.fields.get(k) for k in ("holder_cccd", "birth_date", "sex"))
        if not (isinstance(number, str) and isinstance(born, str)) or identifiers.cccd_problem(number):
            continue
        year, encoded_sex = identifiers.cccd_birth(number)
        compared.append(f"{number}:{born}:{sex or '?'}")
        if str(year) != born[:4]:
            problems.append(f"{number} encodes birth year {year}, the card says {born[:4]}")
        if isinstance(sex, str) and sex != encoded_sex:
            problems.append(f"{number} encodes {encoded_sex}, the card says {sex}")
    return _check("cccd.matches_card", not problems, "error",
                  "; ".join(problems) if problems else "each card's number agrees with its date of birth and sex",
                  "; ".join(problems) if problems else "số định danh khớp ngày sinh và giới tính trên thẻ",
                  compared=compared)


def check_dates(classified: ClassifyResult, tax: Taxonomy, today: date | None = None) -> Check:
    today = today or date.today()
    kinds = {name: spec.kind for t in tax.types for name, spec in t.fields.items()}
    bad: list[str] = []
    seen = 0
    for i, document in enumerate(classified.documents, start=1):
        for name, value in document.fields.items():
            if kinds.get(name) != "date":
                continue
            for iso in value if isinstance(value, list) else [value]:
                seen += 1
                day = labelled.calendar_date(iso)
                if day is None:
                    bad.append(f"document {i} {name}: {iso} is not a date")
                elif "birth" in name and day > today:
                    bad.append(f"document {i} {name}: {iso} is in the future")
    return _check("fields.dates", not bad, "error",
                  "; ".join(bad) if bad else f"the {seen} dates read all exist",
                  "; ".join(bad) if bad else f"{seen} ngày tháng đọc được đều hợp lệ",
                  problems=bad)


# --- consistency across documents ------------------------------------------------------------


def _values(classified: ClassifyResult, name: str) -> list[tuple[int, str]]:
    out = []
    for i, document in enumerate(classified.documents, start=1):
        value = document.fields.get(name)
        out += [(i, v) for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)]
    return out


def _equal(kind: str, a: str, b: str) -> bool:
    return labelled.same_name(a, b) if kind == "name" else a == b


def check_must_match(classified: ClassifyResult, tax: Taxonomy) -> list[Check]:
    """Each field declared ``must_match`` against the values of its target field (the ID cards')."""
    specs = {(name, spec.must_match): spec for t in tax.types for name, spec in t.fields.items() if spec.must_match}
    checks = []
    for (name, target), spec in sorted(specs.items()):
        values, targets = _values(classified, name), _values(classified, target)
        if not values or not targets:
            continue
        unmatched = [f"document {i}: {v}" for i, v in values if not any(_equal(spec.kind, v, t) for _, t in targets)]
        checks.append(_check(f"consistency.{name}", not unmatched, "error",
                             f"{name} not found on any ID card: {'; '.join(unmatched)}" if unmatched
                             else f"{name} matches an ID-card copy",
                             f"{name} không khớp thẻ căn cước nào: {'; '.join(unmatched)}" if unmatched
                             else f"{name} khớp bản sao thẻ căn cước",
                             values=[v for _, v in values], compared_with=[t for _, t in targets]))
    return checks


def check_agreement(classified: ClassifyResult, tax: Taxonomy) -> list[Check]:
    """Fields declared ``agree`` that documents of different types both name must say the same."""
    specs = {name: spec for t in tax.types for name, spec in t.fields.items() if spec.agree}
    checks = []
    for name, spec in sorted(specs.items()):
        values = _values(classified, name)
        types = {classified.documents[i - 1].type for i, _ in values}
        if len(types) < 2:
            continue
        first = values[0][1]
        ok = all(_equal(spec.kind, first, v) for _, v in values)
        shown = [f"{classified.documents[i - 1].type}: {v}" for i, v in values]
        checks.append(_check(f"consistency.{name}", ok, "error",
                             f"{name} agrees across documents" if ok else f"{name} differs: {'; '.join(shown)}",
                             f"{name} thống nhất giữa các văn bản" if ok else f"{name} không thống nhất: {'; '.join(shown)}",
                             values=shown))
    return checks


def check_receipt_procedure(classified: ClassifyResult) -> Check:
    printed, inferred = classified.fields.receipt_procedure, classified.fields.inferred_procedure
    ok = not (isinstance(printed, str) and isinstance(inferred, str)) or printed == inferred
    return _check("consistency.procedure", ok, "error",
                  f"the receipt's procedure {printed} matches the documents" if ok and printed else
                  ("nothing to compare the receipt's procedure with" if ok else
                   f"the receipt says {printed} but the documents make {inferred}"),
                  f"thủ tục trên giấy tiếp nhận ({printed}) khớp các văn bản" if ok and printed else
                  ("không có gì để đối chiếu thủ tục" if ok else f"giấy tiếp nhận ghi {printed} nhưng các văn bản là {inferred}"),
                  receipt=printed if isinstance(printed, str) else None, detected=inferred if isinstance(inferred, str) else None)


# --- reuse ---------------------------------------------------------------------------------


def check_reuse(classified: ClassifyResult, settings: Settings, earlier: list[Hit]) -> Check:
    """Required components this person already handed in with an earlier dossier (``earlier``, from
    ``reuse_index.earlier_documents``): a note for the counter, who need not ask for the paper again;
    never a reason to stop the dossier, so it is ``info`` and ``ok``. Only documents that name one of
    this dossier's ID numbers themselves count (the person's ID card, their own form)."""
    people = list(classified.fields.cccd)
    required = required_types(classified, settings)
    code = classified.fields.dossier_code
    found = [h for h in earlier if h.type in required and h.cccd in people and h.cccd in h.document_cccd
             and code not in (h.dossier_id, h.dossier_code)]
    dossiers = list(dict.fromkeys(h.dossier_id for h in found))
    shown = "; ".join(f"{t} in {', '.join(dict.fromkeys(h.dossier_id for h in found if h.type == t))}"
                      for t in dict.fromkeys(h.type for h in found))
    return _check("reuse.existing_document", True, "info",
                  f"required components already archived for the same person, to reuse: {shown}" if found else
                  "no required component of this procedure is archived yet for the same person" if people else
                  "no valid ID number read: earlier documents cannot be looked up",
                  f"thành phần bắt buộc đã được số hóa cho cùng công dân, có thể tái sử dụng: {shown.replace(' in ', ' tại ')}"
                  if found else "chưa có thành phần bắt buộc nào của thủ tục này được số hóa cho cùng công dân" if people
                  else "không đọc được số định danh hợp lệ nên chưa tra cứu được kết quả số hóa trước đây",
                  earlier=dossiers, documents=list(dict.fromkeys(f"{h.dossier_id}:{h.document}:{h.type}" for h in found)),
                  cccd=people, required=required)


def with_reuse(verified: VerifyResult, classified: ClassifyResult, settings: Settings, earlier: list[Hit] | None) -> VerifyResult:
    """``verified`` with the reuse note (replacing any earlier one), the status as it was: for a caller that
    looks the person up after a cached verify step, since the lookup is not part of the step's key."""
    if earlier is None:
        return verified
    checks = [c for c in verified.verification.checks if c.id != "reuse.existing_document"]
    checks.append(check_reuse(classified, settings, earlier))
    return verified.model_copy(update={"verification": verified.verification.model_copy(update={"checks": checks})})


def decide(checks: list[Check]) -> Status:
    failed = {c.severity for c in checks if not c.ok}
    if "fatal" in failed:
        return "rejected"
    return "needs_review" if "error" in failed else "passed"


def verify(capture: CaptureResult, ocr: OcrResult, classified: ClassifyResult, settings: Settings, key: str,
           earlier: list[Hit] | None = None) -> VerifyResult:
    """The checks and the status they make. ``earlier``: the person's archived documents
    (``reuse_index.earlier_documents``), looked up by the caller so that this stays a function of its
    inputs; None (not looked up) leaves the reuse note out."""
    tax = taxonomy(settings.taxonomy)
    components, missing = check_components(classified, settings)
    checks = [
        check_pages(capture, ocr),
        check_procedure(classified, settings),
        components,
        check_copies(classified, settings),
        check_unexpected(classified, settings),
        check_type_confidence(classified, settings),
        check_unreadable(capture, ocr),
        check_confidence(capture, ocr, settings),
        check_document_confidence(ocr, classified, settings),
        check_blank_ratio(capture),
        check_resolution(capture),
        check_page_order(classified),
        check_dossier_code(classified),
        check_dossier_code_agreement(classified),
        check_procedure_code(classified, settings),
        check_cccd(classified),
        check_cccd_against_card(classified),
        check_dates(classified, tax),
        *check_must_match(classified, tax),
        *check_agreement(classified, tax),
        check_receipt_procedure(classified),
    ]
    if earlier is not None:
        checks.append(check_reuse(classified, settings, earlier))  # info: the status stays what the others make it
    return VerifyResult(key=key, status=decide(checks), verification=Verification(checks=checks, missing=missing))
