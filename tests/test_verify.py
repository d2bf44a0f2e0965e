"""Verification on generated dossiers' text: what a clerk would catch, with the values compared."""

from __future__ import annotations

from datetime import date

import pytest
from sohoa_dev import synth

from sohoa.domain import fields
from sohoa.domain.catalog import catalog, taxonomy
from sohoa.kernel.models import CaptureResult, OcrPage, OcrResult, PageImage, SourceInfo
from sohoa.kernel.settings import Settings
from sohoa.steps import classify, verify


def _read(texts: list[str], blank: set[int] = frozenset(), dpi: int = 300, confidence: float = 90.0):
    """Capture, OCR and classification results for page texts, as the steps would give them."""
    pages = [PageImage(n=n, key=f"p{n}", sha256="s", media_type="image/jpeg", width=2480, height=3508, dpi=dpi,
                       blank=n in blank, origin="native") for n in range(1, len(texts) + 1)]
    capture = CaptureResult(key="c", source=SourceInfo(name="d.pdf", sha256="s", size=1, media_type="application/pdf"),
                            pages=pages)
    ocr = OcrResult(key="o", engine="t", languages="vie", words_key="w", searchable_pdf_key="s", pages=[
        OcrPage(n=n, text=t, word_count=len(t.split()), confidence=confidence if t.strip() else 0.0,
                text_layer_key="l", duration_s=0) for n, t in enumerate(texts, start=1)])
    classified = classify.classify(ocr, capture, Settings(), "k")
    return capture, ocr, classified


def _dossier(procedure: str, seed: int = 3, include: list[str] | None = None, edit=None):
    truth, _ = synth.build_layout(procedure, seed, include)
    texts = [p.text for p in truth.pages]
    if edit:
        texts = edit(truth, texts)
    return truth, _read(texts)


def _failed(result) -> dict[str, str]:
    capture, ocr, classified = result
    checked = verify.verify(capture, ocr, classified, Settings(), "v")
    return {c.id: c.message for c in checked.verification.checks if not c.ok}


@pytest.mark.parametrize("procedure", sorted(synth.PROCEDURES))
def test_a_complete_consistent_dossier_passes_every_check(procedure):
    truth, result = _dossier(procedure)
    capture, ocr, classified = result
    checked = verify.verify(capture, ocr, classified, Settings(), "v")
    assert _failed(result) == {} and checked.status == "passed"
    assert all(c.message and c.message_vi and c.message_vi != c.message for c in checked.verification.checks)
    ids = {c.id for c in checked.verification.checks}
    assert {"components.required", "components.copies", "quality.unreadable", "quality.page_order", "fields.dates",
            "cccd.matches_card", "consistency.procedure"} <= ids
    if procedure == "1.001193":
        assert {"consistency.applicant_cccd", "consistency.applicant_name", "consistency.child_name"} <= ids
        child = next(c for c in checked.verification.checks if c.id == "consistency.child_name")
        assert len(child.values["values"]) == 2  # the declaration's and the hospital's


def test_an_id_number_on_the_form_that_is_on_no_id_card_is_caught():
    def other_number(truth, texts):
        form = next(i for i, p in enumerate(truth.pages) if p.doc_type == "to_khai_khai_sinh")
        applicant = truth.cccd[0]
        return [t.replace(applicant, "022190000001") if i == form else t for i, t in enumerate(texts)]

    truth, result = _dossier("1.001193", edit=other_number)
    failed = _failed(result)
    assert "consistency.applicant_cccd" in failed and "022190000001" in failed["consistency.applicant_cccd"]
    capture, ocr, classified = result
    assert verify.verify(capture, ocr, classified, Settings(), "v").status == "needs_review"


def test_a_child_named_differently_by_the_hospital_is_caught():
    def rename(truth, texts):
        certificate = next(i for i, p in enumerate(truth.pages) if p.doc_type == "giay_chung_sinh")
        name = next(line for line in texts[certificate].splitlines() if line.startswith("Dự định đặt tên con")).split(": ")[1]
        return [t.replace(name, "Vũ Minh Khang") if i == certificate else t for i, t in enumerate(texts)]

    _, result = _dossier("1.001193", edit=rename)
    assert "Vũ Minh Khang" in _failed(result)["consistency.child_name"]


def test_a_card_whose_number_does_not_encode_its_birth_year_and_sex_is_caught():
    def wrong_card(truth, texts):
        card = next(i for i, p in enumerate(truth.pages) if p.doc_type == "can_cuoc")
        number = next(n for n in truth.cccd if n in texts[card])
        born = next(line for line in texts[card].splitlines() if line.startswith("Ngày sinh")).split(": ")[1]
        day, month, year = born.split("/")
        return [t.replace(born, f"{day}/{month}/{int(year) - 1}") if i == card else t for i, t in enumerate(texts)], number

    truth, _ = synth.build_layout("1.001612", 3)
    texts, number = wrong_card(truth, [p.text for p in truth.pages])
    failed = _failed(_read(texts))
    assert "cccd.matches_card" in failed and number in failed["cccd.matches_card"]


def test_dates_that_do_not_exist_are_caught():
    def impossible(truth, texts):
        return [t.replace("Ngày, tháng, năm sinh: ", "Ngày, tháng, năm sinh: 31/02/2026 ", 1) if p.doc_type == "to_khai_khai_sinh"
                and p.starts_document else t for p, t in zip(truth.pages, texts)]

    _, result = _dossier("1.001193", edit=impossible)
    assert "2026-02-31 is not a date" in _failed(result)["fields.dates"]
    assert fields.calendar_date("2026-02-31") is None and fields.calendar_date("2024-02-29") == date(2024, 2, 29)


def test_a_proxy_needs_a_power_of_attorney():
    def proxy(truth, texts):
        receipt = texts[0].splitlines()
        receipt = [("Ông/Bà: Lương Văn Tám" if line.startswith("Ông/Bà") else line) for line in receipt]
        return ["\n".join(receipt), *texts[1:]]

    truth, result = _dossier("1.001193", edit=proxy)
    failed = _failed(result)
    assert "giay_uy_quyen" in failed["components.required"]
    _, with_proxy = _dossier("1.001193", include=[*synth.PROCEDURES["1.001193"]["default"], "giay_uy_quyen"], edit=proxy)
    assert "components.required" not in _failed(with_proxy)


def test_a_marriage_with_one_id_card_and_a_stray_document_is_flagged():
    include = ["phieu_tiep_nhan", "to_khai_ket_hon", "xac_nhan_tinh_trang_hon_nhan", "can_cuoc", "giay_chung_sinh"]
    _, result = _dossier("1.000894", include=include)
    failed = _failed(result)
    assert "can_cuoc 1/2" in failed["components.copies"] and "giay_chung_sinh" in failed["components.unexpected"]
    capture, ocr, classified = result
    severities = {c.id: c.severity for c in verify.verify(capture, ocr, classified, Settings(), "v").verification.checks}
    assert severities["components.copies"] == severities["components.unexpected"] == "warning"


def test_quality_checks_see_unreadable_blank_low_resolution_and_out_of_order_pages():
    truth, _ = synth.build_layout("1.001193", 3)
    texts = [p.text for p in truth.pages]
    form, rest = texts[1].replace("Trang 1/2", "Trang 1/3"), texts[2].replace("Trang 2/2", "Trang {}/3")
    texts[1:3] = [form, rest.format(3), rest.format(2)]  # sheets 1, 3, 2 of a three-page form
    failed = _failed(_read(texts))
    assert "document 2" not in failed.get("quality.page_order", "") and "2" in failed["quality.page_order"]
    capture, ocr, classified = _read([truth.pages[0].text, "", "", "", "x y"], blank={2, 3, 4}, dpi=150, confidence=20.0)
    checks = {c.id: c for c in verify.verify(capture, ocr, classified, Settings(), "v").verification.checks}
    assert not checks["quality.unreadable"].ok and checks["quality.unreadable"].values["pages"] == ["1", "5"]
    assert not checks["quality.blank_ratio"].ok and not checks["quality.resolution"].ok


def test_the_receipts_procedure_must_match_the_documents():
    def birth_receipt_on_marriage(truth, texts):
        return [texts[0].replace("Mã thủ tục: 1.000894", "Mã thủ tục: 1.001193"), *texts[1:]]

    _, result = _dossier("1.000894", edit=birth_receipt_on_marriage)
    failed = _failed(result)
    assert "1.001193" in failed["consistency.procedure"] and "1.000894" in failed["consistency.procedure"]


def test_uncertain_types_go_to_review():
    capture, ocr, classified = _read(["CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM\nBẢN KÊ KHAI TÀI SẢN\nHọ tên: Lê Văn A"])
    checked = verify.verify(capture, ocr, classified, Settings(), "v")
    confidence = next(c for c in checked.verification.checks if c.id == "classification.confidence")
    assert not confidence.ok and confidence.values["documents"] == ["1:khac:0.50"] and checked.status == "needs_review"


def test_catalog_declares_conditional_components_and_copies():
    assert [c.type for c in catalog().procedures["1.001193"].conditional] == ["giay_uy_quyen"]
    assert catalog().procedures["1.000894"].counts == {"can_cuoc": 2}
    assert {"holder_cccd", "holder_name", "birth_date", "sex"} <= set(
        next(t for t in taxonomy().types if t.code == "can_cuoc").fields)


def test_labels_are_read_through_ocr_slips():
    """Tesseract reads the "/" of an ID card's "Số / No." as I or l; a value may sit on the next line."""
    specs = taxonomy().get("can_cuoc").fields
    text = "CĂN CƯỚC CÔNG DÂN\nSố I No.: 030303938554\nHọ và tên / Full name:\nVŨ NGỌC ÁNH\nGiới tính / Sex: Nữ"
    assert fields.extract(text, specs) == {"holder_cccd": "030303938554", "holder_name": "VŨ NGỌC ÁNH", "sex": "female"}
    form = taxonomy().get("to_khai_khai_sinh").fields
    assert "applicant_name" not in fields.extract("Họ, chữ đệm, tên: Đỗ Gia Bảo", form)  # the child's, not the applicant's


def test_a_misread_id_number_is_flagged_as_such_not_replaced_by_the_next_persons():
    def misread(truth, texts):
        form = next(i for i, p in enumerate(truth.pages) if p.doc_type == "to_khai_khai_sinh")
        applicant = truth.cccd[0]
        return [t.replace(applicant, applicant[:8] + "1" + applicant[8:], 1) if i == form else t
                for i, t in enumerate(texts)], applicant

    truth, _ = synth.build_layout("1.001193", 3)
    texts, applicant = misread(truth, [p.text for p in truth.pages])
    capture, ocr, classified = _read(texts)
    form = next(d for d in classified.documents if d.type == "to_khai_khai_sinh")
    assert form.fields["applicant_cccd"] == applicant[:8] + "1" + applicant[8:]  # 13 digits, as read
    failed = _failed((capture, ocr, classified))
    assert "not 12 digits" in failed["cccd.format"] and "consistency.applicant_cccd" in failed
