"""Plain-Python rules: identifiers, folding, title reading, splitting, verification, cache keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from sohoa.domain import identifiers, rules
from sohoa.domain.catalog import catalog, taxonomy
from sohoa.kernel.keys import step_key
from sohoa.kernel.models import Check, ClassifyResult, Document, OcrPage
from sohoa.kernel.text import fold
from sohoa.steps import classify, verify

REPO_DATA = Path(__file__).resolve().parent.parent / "sohoa" / "domain" / "data"


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


def _predict(texts: list[str | None], model=None):
    """Page predictions for texts in page order (None: a blank page)."""
    pages = [(n, text or "", text is None) for n, text in enumerate(texts, start=1)]
    return classify.predict_pages(pages, taxonomy(), 12, model)


def test_receipt_listing_other_titles_is_a_receipt():
    [reading] = _predict([RECEIPT])
    assert reading.type == "phieu_tiep_nhan" and reading.starts and "exact title" in reading.evidence


def test_split_keeps_continuation_pages_and_starts_at_headers():
    predictions = _predict([RECEIPT, FORM, "Nơi sinh: Quảng Ninh\nTrang 2/2", "GIẤY CHỨNG SINH\nHọ tên mẹ",
                            "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM\nBẢN KÊ KHAI"])
    docs = classify.documents_of(predictions)
    assert [(d.type, d.pages) for d in docs] == [
        ("phieu_tiep_nhan", [1]), ("to_khai_khai_sinh", [2, 3]), ("giay_chung_sinh", [4]), ("khac", [5])]
    assert docs[3].confidence < docs[1].confidence
    assert "page 2/2" in predictions[2].evidence


def test_a_blank_separator_opens_a_new_document_but_not_inside_a_numbered_one():
    untitled = "Điều 5. Quyền và nghĩa vụ của các bên"
    predictions = _predict([FORM, None, "Họ tên người cha\nTrang 2/2", None, untitled, untitled])
    assert [p.type for p in predictions] == [
        "to_khai_khai_sinh", "blank", "to_khai_khai_sinh", "blank", "khac", "khac"]
    assert [p.starts for p in predictions] == [True, False, False, False, True, False]
    docs = classify.documents_of(predictions)
    assert [d.pages for d in docs] == [[1, 3], [5, 6]]  # blank pages belong to no document


@pytest.mark.parametrize("line,mark", [
    ("Trang 2/2", (2, 2)), ("Trang 2 / 3", (2, 3)), ("trang 1", (1, None)), ("2/3", (2, 3)),
    ("12/2026", None), ("Trang 3/2", None), ("Ngày 12/03/2026", None),
])
def test_page_marks(line, mark):
    assert rules.page_mark([fold(line.replace("/", " of "))]) == mark


def test_continued_marker_keeps_the_page_in_its_document():
    predictions = _predict([FORM, "TỜ KHAI (tiếp theo)\nPhần II. Thông tin người cha"])
    assert [p.starts for p in predictions] == [True, False]


def test_garbled_title_still_typed_by_fuzzy_match():
    [reading] = _predict(["T0 KHAl ĐĂNG KY KHAl SINH\nHọ tên"])
    assert reading.type == "to_khai_khai_sinh" and 0.75 < reading.confidence < 0.95


@pytest.mark.parametrize("types,expected", [
    ({"phieu_tiep_nhan", "to_khai_khai_sinh", "giay_chung_sinh", "can_cuoc"}, "1.001193"),
    ({"to_khai_ket_hon", "xac_nhan_tinh_trang_hon_nhan", "can_cuoc"}, "1.000894"),
    ({"giay_de_nghi_dang_ky_hkd", "can_cuoc", "hop_dong"}, "1.001612"),
    ({"to_khai_khai_sinh"}, None),  # a required component missing: no procedure fits
    ({"can_cuoc", "khac"}, None),
])
def test_procedure_is_inferred_from_the_set_of_document_types(types, expected):
    assert classify.infer_procedure(types, catalog())[0] == expected


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


def test_pages_below_200_dpi_send_the_dossier_to_review():
    from sohoa.kernel.models import CaptureResult, PageImage, SourceInfo

    def image(n: int, dpi: int) -> PageImage:
        return PageImage(n=n, key=f"k{n}", sha256="s", media_type="image/png", width=1, height=1, dpi=dpi, origin="image")

    source = SourceInfo(name="x", sha256="s", size=1, media_type="image/png")
    check = verify.check_resolution(CaptureResult(key="c", source=source, pages=[image(1, 300), image(2, 150)]))
    assert (check.ok, check.severity, check.values["low_pages"]) == (False, "error", ["2"])


def test_qr_code_and_printed_code_disagreeing_is_an_error():
    classified = _classified(["phieu_tiep_nhan"], "1.001193", dossier_code="000.00.00.H49-261127-0001",
                             dossier_code_source="qr", dossier_code_printed="000.00.00.H49-261127-0007")
    check = verify.check_dossier_code_agreement(classified)
    assert not check.ok and check.severity == "error" and "0007" in check.message


def test_qr_code_is_read_from_a_receipt_page():
    import numpy as np
    from sohoa_dev import synth

    from sohoa.domain import identity

    page = np.asarray(synth.render_pages(include=["phieu_tiep_nhan"], dpi=200, seed=4)[0].convert("L"))
    code = synth.build_layout("1.001193", 4, ["phieu_tiep_nhan"])[0].dossier_code
    assert identity.dossier_codes_in_qr(identity.read_qr_codes(page, 200)) == [code]
    assert identity.read_qr_codes(np.full((800, 600), 255, np.uint8), 100) == []


def test_a_province_adds_a_type_and_a_procedure_by_editing_data_only(tmp_path, monkeypatch):
    from sohoa.domain.catalog import _read

    types = tmp_path / "taxonomy.toml"
    types.write_text(_read("taxonomy.toml", None).decode() + '''
[[types]]
code = "giay_phep_ban_le_ruou"
label = "Giấy phép bán lẻ rượu"
patterns = ["GIAY PHEP BAN LE RUOU", "DE NGHI CAP GIAY PHEP BAN LE RUOU"]
''', encoding="utf-8")
    procedures = tmp_path / "catalog.toml"
    procedures.write_text(_read("catalog.toml", None).decode() + '''
[[procedures]]
code = "2.000633"
name = "Cấp giấy phép bán lẻ sản phẩm rượu"
required = ["giay_phep_ban_le_ruou", "can_cuoc"]
''', encoding="utf-8")
    monkeypatch.setenv("SOHOA_TAXONOMY", str(types))
    monkeypatch.setenv("SOHOA_CATALOG", str(procedures))
    page = "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM\nĐƠN ĐỀ NGHỊ CẤP GIẤY PHÉP BÁN LẺ RƯỢU\nKính gửi: Phòng Kinh tế"
    [reading] = classify.predict_pages([(1, page, False)], taxonomy(), 12)
    assert (reading.type, reading.confidence) == ("giay_phep_ban_le_ruou", 0.95)
    assert classify.infer_procedure({"giay_phep_ban_le_ruou", "can_cuoc"}, catalog())[0] == "2.000633"
    from sohoa.kernel.settings import Settings

    default = Settings(taxonomy=str(REPO_DATA / "taxonomy.toml"))
    assert classify.classify_key("ocr-x", Settings(), None) != classify.classify_key("ocr-x", default, None)
