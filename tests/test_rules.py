"""Plain-Python rules: identifiers, folding, title reading, splitting, verification, cache keys."""

from __future__ import annotations

import pytest

from pipeline import classify, identifiers, verify
from pipeline.catalog import catalog, taxonomy
from pipeline.keys import step_key
from pipeline.models import Check, ClassifyResult, Document, OcrPage
from pipeline.text import fold


def page(n: int, text: str) -> OcrPage:
    return OcrPage(n=n, text=text, word_count=0, confidence=90.0, text_layer_key="x", duration_s=0)


def test_fold_is_accent_and_tone_placement_insensitive():
    assert fold("TỜ KHAI ĐĂNG KÝ KHAI SINH") == "TO KHAI DANG KY KHAI SINH"
    assert fold("Hòa") == fold("Hoà") == "HOA"
    assert fold("\u00d0ăng ký") == "DANG KY"  # OCR's eth for Đ


@pytest.mark.parametrize("number,problem", [
    ("022191012345", None),
    ("001300123456", None),
    ("097191012345", "province"),
    ("000191012345", "province"),
    ("022691012345", "century"),
    ("02219101234", "12 digits"),
])
def test_cccd_structure(number, problem):
    result = identifiers.cccd_problem(number)
    assert (result is None) if problem is None else (problem in result)


def test_cccd_birth_decodes_century_and_sex():
    assert identifiers.cccd_birth("022301012345") == (2001, "female")
    assert identifiers.cccd_birth("022085012345") == (1985, "male")


def test_dossier_codes_found_despite_ocr_spaces():
    text = "Mã hồ sơ: 000.00.00.H49 - 261127 - 0042\nkhác 123.45"
    assert identifiers.find_dossier_codes(text) == ["000.00.00.H49-261127-0042"]
    assert identifiers.find_dossier_codes("000.00.00.h49-261127-0042") == []


def test_procedure_code_with_agency_suffix():
    assert identifiers.find_procedure_codes("Mã thủ tục: 1.001193.000.00.00.H49") == ["1.001193"]


RECEIPT = """ỦY BAN NHÂN DÂN PHƯỜNG HỒNG GAI
GIẤY TIẾP NHẬN HỒ SƠ VÀ HẸN TRẢ KẾT QUẢ
Mã hồ sơ: 000.00.00.H49-261127-0042
Mã thủ tục: 1.001193
1. Tờ khai đăng ký khai sinh
2. Giấy chứng sinh"""
FORM = """CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM
Độc lập - Tự do - Hạnh phúc
TỜ KHAI ĐĂNG KÝ KHAI SINH
Số định danh cá nhân: 022191012345"""


def test_receipt_listing_other_titles_is_a_receipt():
    reading = classify.read_page(page(1, RECEIPT), taxonomy(), title_lines=12)
    assert reading.type == "phieu_tiep_nhan"


def test_split_keeps_continuation_pages_and_starts_at_headers():
    pages = [page(1, RECEIPT), page(2, FORM), page(3, "Nơi sinh: Quảng Ninh\nTrang 2/2"),
             page(4, "GIẤY CHỨNG SINH\nHọ tên mẹ"), page(5, "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM\nBẢN KÊ KHAI")]
    docs = classify.split([classify.read_page(p, taxonomy(), 12) for p in pages])
    assert [(d.type, d.pages) for d in docs] == [
        ("phieu_tiep_nhan", [1]), ("to_khai_khai_sinh", [2, 3]), ("giay_chung_sinh", [4]), ("khac", [5])]
    assert docs[3].confidence < docs[1].confidence


def test_garbled_title_still_typed_by_fuzzy_match():
    reading = classify.read_page(page(1, "T0 KHAl ĐĂNG KY KHAl SINH\nHọ tên"), taxonomy(), 12)
    assert reading.type == "to_khai_khai_sinh" and 0.75 < reading.confidence < 0.95


def _classified(types: list[str], procedure: str | None, **fields) -> ClassifyResult:
    docs = [Document(type=t, confidence=0.9, pages=[i + 1]) for i, t in enumerate(types)]
    return ClassifyResult(key="k", documents=docs, procedure=procedure,
                          procedure_source="receipt" if procedure else "none", fields=fields)


def test_missing_required_component_needs_review():
    check, missing = verify.check_components(_classified(["phieu_tiep_nhan", "to_khai_khai_sinh"], "1.001193"))
    assert not check.ok and missing == ["giay_chung_sinh"]
    assert verify.decide([check]) == "needs_review"


def test_decide_severity_order():
    ok = Check(id="a", ok=True, severity="fatal", message="")
    warn = Check(id="b", ok=False, severity="warning", message="")
    err = Check(id="c", ok=False, severity="error", message="")
    fatal = Check(id="d", ok=False, severity="fatal", message="")
    assert verify.decide([ok, warn]) == "passed"
    assert verify.decide([warn, err]) == "needs_review"
    assert verify.decide([err, fatal]) == "rejected"


def test_malformed_cccd_fails_check():
    check = verify.check_cccd(_classified(["can_cuoc"], "1.001193", cccd=[], cccd_invalid=["099191012345"]))
    assert not check.ok and "099191012345" in check.message


def test_catalog_has_the_three_domain_procedures_with_taxonomy_codes():
    codes = taxonomy().codes()
    for code in ("1.001193", "1.000894", "1.001612"):
        procedure = catalog().procedures[code]
        assert set(procedure.required) <= codes


def test_step_keys_chain_downstream_only():
    capture = step_key("capture", "1", {"dpi": 300}, "sha")
    ocr = step_key("ocr", "1", {"lang": "vie+eng"}, capture)
    classify_a = step_key("classify", "1", {"title_lines": 12}, ocr)
    classify_b = step_key("classify", "1", {"title_lines": 11}, ocr)
    assert classify_a != classify_b
    assert step_key("verify", "1", {}, classify_a) != step_key("verify", "1", {}, classify_b)
    assert "/" not in capture and capture.startswith("capture-")


def test_pages_below_200_dpi_get_a_resolution_warning():
    from pipeline.models import CaptureResult, PageImage, SourceInfo

    def image(n: int, dpi: int) -> PageImage:
        return PageImage(n=n, key=f"k{n}", sha256="s", media_type="image/png", width=1, height=1, dpi=dpi, origin="image")

    source = SourceInfo(name="x", sha256="s", size=1, media_type="image/png")
    check = verify.check_resolution(CaptureResult(key="c", source=source, pages=[image(1, 300), image(2, 150)]))
    assert (check.ok, check.severity, check.values["low_pages"]) == (False, "warning", ["2"])


def test_qr_code_and_printed_code_disagreeing_is_an_error():
    classified = _classified(["phieu_tiep_nhan"], "1.001193", dossier_code="000.00.00.H49-261127-0001",
                             dossier_code_source="qr", dossier_code_printed="000.00.00.H49-261127-0007")
    check = verify.check_dossier_code_agreement(classified)
    assert not check.ok and check.severity == "error" and "0007" in check.message


def test_qr_code_is_read_from_a_receipt_page():
    import numpy as np

    from pipeline import identity, synth

    page = np.asarray(synth.render_pages(include=["phieu_tiep_nhan"], dpi=200, seed=4)[0].convert("L"))
    code = synth.build_layout("1.001193", 4, ["phieu_tiep_nhan"])[0].dossier_code
    assert identity.dossier_codes_in_qr(identity.read_qr_codes(page, 200)) == [code]
    assert identity.read_qr_codes(np.full((800, 600), 255, np.uint8), 100) == []
