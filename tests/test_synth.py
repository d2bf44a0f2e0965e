"""Tests for the synthetic dossier generator (sohoa_dev.synth)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import pytest
from PIL import Image
from sohoa_dev import synth
from sohoa_dev.synth import (
    PROCEDURES,
    SynthDossier,
    build_layout,
    make_dossier,
    mrz_lines,
    render_pages,
    valid_cccd,
)

from sohoa.domain.catalog import _read, catalog, taxonomy
from sohoa.kernel.text import fold

DOSSIER_CODE_RE = re.compile(r"^\d{3}\.\d{2}\.\d{2}\.[A-Z]\d{2}-\d{6}-\d{4}$")
HAVE_TESSERACT = shutil.which("tesseract") is not None
HAVE_PDFIMAGES = shutil.which("pdfimages") is not None


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


# ---------------------------------------------------------------- content / truth
@pytest.mark.parametrize(
    "procedure,types",
    [
        ("1.001193", ["phieu_tiep_nhan", "to_khai_khai_sinh", "to_khai_khai_sinh",
                      "giay_chung_sinh", "can_cuoc"]),
        ("1.000894", ["phieu_tiep_nhan", "to_khai_ket_hon", "xac_nhan_tinh_trang_hon_nhan",
                      "can_cuoc", "can_cuoc"]),
        ("1.001612", ["phieu_tiep_nhan", "giay_de_nghi_dang_ky_hkd", "can_cuoc", "hop_dong", "hop_dong"]),
    ],
)
def test_pages_per_procedure(procedure, types):
    truth, layouts = build_layout(procedure, seed=3)
    assert [p.doc_type for p in truth.pages] == types
    assert [p.n for p in truth.pages] == list(range(1, len(types) + 1))
    assert len(layouts) == len(types)
    assert DOSSIER_CODE_RE.match(truth.dossier_code)
    for p in truth.pages:
        assert p.expected_words, p
        assert all(w == unicodedata.normalize("NFC", w) for w in p.expected_words)
        assert all(w in p.text for w in p.expected_words), (p.n, p.expected_words)
    # continuation pages (the birth declaration's, numbered; the lease's, not) do not start a document
    starts = [p.starts_document for p in truth.pages]
    if procedure == "1.001193":
        assert starts == [True, True, False, True, True]
        assert "Trang 2/2" in truth.pages[2].text
        assert "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM" not in truth.pages[2].text
    elif procedure == "1.001612":
        assert starts == [True, True, True, True, False]
        assert "Trang" not in truth.pages[4].text and "CỘNG HÒA" not in truth.pages[4].text
    else:
        assert all(starts)
    # the receipt names the components and carries the codes
    receipt = truth.pages[0].text
    assert f"Mã hồ sơ: {truth.dossier_code}" in receipt
    assert f"Mã thủ tục: {procedure}" in receipt
    assert PROCEDURES[procedure]["name"] in receipt
    assert "1. " in receipt and "2. " in receipt


def test_receipt_lists_components_by_name_and_include_filters():
    truth, _ = build_layout("1.001193", seed=0)
    text = truth.pages[0].text
    assert "1. Tờ khai đăng ký khai sinh" in text
    assert "2. Giấy chứng sinh" in text
    # incomplete dossier: no birth certificate
    inc, _ = build_layout("1.001193", seed=0,
                          include=["phieu_tiep_nhan", "to_khai_khai_sinh", "can_cuoc"])
    assert "giay_chung_sinh" not in [p.doc_type for p in inc.pages]
    assert "Giấy chứng sinh" not in inc.pages[0].text
    # reordering is honoured
    re_, _ = build_layout("1.001193", seed=0, include=["can_cuoc", "phieu_tiep_nhan"])
    assert [p.doc_type for p in re_.pages] == ["can_cuoc", "phieu_tiep_nhan"]
    with pytest.raises(ValueError):
        build_layout("1.001193", include=["nope"])
    with pytest.raises(ValueError):
        build_layout("9.999999")


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("procedure", sorted(PROCEDURES))
def test_cccd_valid_and_consistent_with_card(procedure, seed):
    truth, _ = build_layout(procedure, seed=seed)
    assert truth.cccd and len(set(truth.cccd)) == len(truth.cccd)
    for number in truth.cccd:
        assert valid_cccd(number), number
    # every ID card shows a number whose G/YY digits match its printed date of birth and sex
    cards = [p for p in truth.pages if p.doc_type == "can_cuoc"]
    assert cards
    for p in cards:
        number = re.search(r"Số / No\.: (\d{12})", p.text).group(1)
        d, m, y = map(int, re.search(r"Date of birth: (\d\d)/(\d\d)/(\d{4})", p.text).groups())
        sex = re.search(r"Sex: (Nam|Nữ)", p.text).group(1)
        assert number in truth.cccd
        assert valid_cccd(number, date(y, m, d), female=(sex == "Nữ")), (number, y, sex)
        assert 1 <= int(number[:3]) <= 96


def test_valid_cccd_rules():
    assert valid_cccd("022186001234", date(1986, 5, 1), female=True)
    assert not valid_cccd("022186001234", date(1986, 5, 1), female=False)
    assert valid_cccd("022301001234", date(2001, 5, 1), female=True)
    assert not valid_cccd("022101001234", date(2001, 5, 1))  # 1900s digit for a 2001 birth
    assert not valid_cccd("097186001234")  # no province 097
    assert not valid_cccd("02218600123")


def test_mrz_check_digits():
    # ICAO 9303 example: document number L898902C3 -> check digit 6
    assert synth._mrz_check("L898902C3") == "6"
    ctx = synth._context("1.001193", 0, list(PROCEDURES["1.001193"]["default"]))
    lines = mrz_lines(ctx.applicant)
    assert all(len(ln) == 30 for ln in lines)
    assert ctx.applicant.cccd in lines[0]


def test_names_and_dates_have_vietnamese_diacritics():
    truth, _ = build_layout("1.001193", seed=0)
    tk = truth.pages[1].text
    assert "Họ, chữ đệm, tên người yêu cầu:" in tk
    assert "Nơi sinh: Bệnh viện Sản Nhi Quảng Ninh" in tk
    assert "Ngày, tháng, năm sinh: 12/03/2026" in tk  # seed 0 is the documented example
    assert truth.applicant and any(ord(ch) > 127 for ch in truth.applicant)


# ---------------------------------------------------------------- taxonomy and catalog data
@pytest.mark.parametrize("code", sorted(catalog().procedures))
def test_components_are_the_catalogs_and_titles_are_recognised(code):
    """The generator repeats neither file: a default dossier holds exactly the catalog's
    required and optional components, and every title drawn is one the rules recognise."""
    procedure = catalog().procedures[code]
    default = PROCEDURES[code]["default"]
    assert PROCEDURES[code]["name"] == procedure.name
    assert set(default) == {*procedure.required, *procedure.optional}
    assert all(default.count(t) == procedure.counts.get(t, 1) for t in default)
    truth, _ = build_layout(code, seed=1)
    firsts = [p for p in truth.pages if p.starts_document]
    for page in firsts:
        title = synth.doc_title(page.doc_type)
        assert title in page.text.splitlines()
        assert any(pattern.search(fold(title)) for pattern in taxonomy().get(page.doc_type).compiled()), title
    for t in procedure.required:
        assert synth.component_name(t) in firsts[0].text  # the receipt lists it


def test_generator_follows_the_data_files_named_by_the_settings(tmp_path, monkeypatch):
    """A province's own files (SOHOA_TAXONOMY, SOHOA_CATALOG) change the dossiers drawn."""
    types = tmp_path / "taxonomy.toml"
    types.write_text(_read("taxonomy.toml", None).decode().replace(
        'label = "Giấy chứng sinh"', 'label = "Giấy chứng sinh (mẫu mới)"'), encoding="utf-8")
    procedures = tmp_path / "catalog.toml"
    procedures.write_text(_read("catalog.toml", None).decode() + '''
[[procedures]]
code = "9.000001"
name = "Thủ tục thử nghiệm"
required = ["giay_chung_sinh"]
optional = ["phieu_tiep_nhan", "can_cuoc"]
counts = { can_cuoc = 3 }

[[procedures]]
code = "9.000002"
name = "Thủ tục không vẽ được"
required = ["giay_chung_nhan_qsdd"]
''', encoding="utf-8")
    monkeypatch.setenv("SOHOA_TAXONOMY", str(types))
    monkeypatch.setenv("SOHOA_CATALOG", str(procedures))
    assert "9.000002" not in synth.PROCEDURES  # no drawing for a land-use certificate
    assert synth.PROCEDURES["9.000001"]["default"] == ["phieu_tiep_nhan", "giay_chung_sinh", *["can_cuoc"] * 3]
    truth, _ = build_layout("9.000001", seed=0)
    assert [p.doc_type for p in truth.pages] == synth.PROCEDURES["9.000001"]["default"]
    assert "Tên thủ tục: Thủ tục thử nghiệm" in truth.pages[0].text
    assert "1. Giấy chứng sinh (mẫu mới) (bản chính, 01 bản)" in truth.pages[0].text
    assert "2. Bản sao Căn cước công dân (bản sao, 03 bản)" in truth.pages[0].text
    assert "GIẤY CHỨNG SINH (MẪU MỚI)" in truth.pages[1].text.splitlines()
    with pytest.raises(ValueError, match="cannot synthesize"):
        build_layout("9.000002")


# ---------------------------------------------------------------- rendering / formats
def test_render_geometry_and_modes():
    imgs = render_pages("1.001193", seed=0, dpi=150)
    assert len(imgs) == 5
    assert all(im.size == (1240, 1754) for im in imgs)
    assert imgs[0].mode == "RGB"  # faint red stamp on the receipt
    assert all(im.mode == "L" for im in imgs[1:])
    assert render_pages("1.001193", seed=0, dpi=300)[1].size == (2480, 3508)


def test_receipt_qr_encodes_dossier_code():
    cv2 = pytest.importorskip("cv2")
    import numpy as np

    truth, layouts = build_layout("1.001193", seed=5)
    img = synth.rasterize(layouts[0], 200).convert("L")
    data, _, _ = cv2.QRCodeDetector().detectAndDecode(np.asarray(img))
    assert data == truth.dossier_code


def test_degrade_is_deterministic_and_changes_pixels():
    a = render_pages("1.001612", seed=2, dpi=100, degrade=True)
    b = render_pages("1.001612", seed=2, dpi=100, degrade=True)
    c = render_pages("1.001612", seed=2, dpi=100, degrade=False)
    assert [x.tobytes() for x in a] == [x.tobytes() for x in b]
    assert a[0].tobytes() != c[0].tobytes()


def test_pdf_deterministic_bytes(tmp_path):
    t1 = make_dossier(tmp_path / "a.pdf", seed=1, dpi=150)
    t2 = make_dossier(tmp_path / "b.pdf", seed=1, dpi=150)
    t3 = make_dossier(tmp_path / "c.pdf", seed=2, dpi=150)
    a, b, c = ((tmp_path / n).read_bytes() for n in ("a.pdf", "b.pdf", "c.pdf"))
    assert a.startswith(b"%PDF-1.")
    assert a == b
    assert a != c
    assert t1.model_dump(exclude={"files"}) == t2.model_dump(exclude={"files"})
    assert t1.files == [str(tmp_path / "a.pdf")]
    assert t3.dossier_code != t1.dossier_code or t3.cccd != t1.cccd


def test_text_pdf_deterministic_and_has_text(tmp_path):
    make_dossier(tmp_path / "a.pdf", fmt="text-pdf")
    make_dossier(tmp_path / "b.pdf", fmt="text-pdf")
    assert (tmp_path / "a.pdf").read_bytes() == (tmp_path / "b.pdf").read_bytes()
    if shutil.which("pdftotext"):
        out = subprocess.run(["pdftotext", str(tmp_path / "a.pdf"), "-"],
                             capture_output=True, text=True, check=True).stdout
        out = unicodedata.normalize("NFC", out)
        assert "GIẤY TIẾP NHẬN HỒ SƠ VÀ HẸN TRẢ KẾT QUẢ" in out
        assert "TỜ KHAI ĐĂNG KÝ KHAI SINH" in out
        assert "CĂN CƯỚC CÔNG DÂN" in out


@pytest.mark.skipif(not HAVE_PDFIMAGES, reason="poppler-utils not installed")
@pytest.mark.parametrize("dpi", [200, 300])
def test_pdfimages_reports_native_dpi(tmp_path, dpi):
    truth = make_dossier(tmp_path / "d.pdf", dpi=dpi)
    out = subprocess.run(["pdfimages", "-list", str(tmp_path / "d.pdf")],
                         capture_output=True, text=True, check=True).stdout
    rows = [ln.split() for ln in out.splitlines()[2:] if ln.strip()]
    assert len(rows) == len(truth.pages)
    assert [int(r[0]) for r in rows] == list(range(1, len(truth.pages) + 1))  # one per page
    for r in rows:
        assert r[2] == "image" and r[8] == "jpeg"
        assert int(r[12]) == dpi and int(r[13]) == dpi, r


def test_tiff_multipage_with_dpi(tmp_path):
    truth = make_dossier(tmp_path / "d.tiff", fmt="tiff", dpi=100)
    with Image.open(tmp_path / "d.tiff") as im:
        assert im.n_frames == len(truth.pages) == 5
        for i in range(im.n_frames):
            im.seek(i)
            assert tuple(round(v) for v in im.info["dpi"]) == (100, 100)


@pytest.mark.parametrize("fmt,ext", [("png-dir", "png"), ("jpeg-dir", "jpg")])
def test_dir_formats_natural_sort_names(tmp_path, fmt, ext):
    include = ["phieu_tiep_nhan"] + ["can_cuoc"] * 10  # 11 pages
    truth = make_dossier(tmp_path / "d", fmt=fmt, dpi=72, include=include)
    names = [Path(f).name for f in truth.files]
    assert names == [f"page-{i}.{ext}" for i in range(1, 12)]
    assert sorted(names, key=_natural_key) == names
    assert sorted(names) != names  # lexical order would put page-10 before page-2
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == sorted(names)
    with Image.open(tmp_path / "d" / f"page-1.{ext}") as im:
        assert tuple(round(v) for v in im.info["dpi"]) == (72, 72)
    # small dossiers use the same naming scheme
    small = make_dossier(tmp_path / "s", fmt=fmt, dpi=72)
    assert [Path(f).name for f in small.files] == [f"page-{i}.{ext}" for i in range(1, 6)]


def test_main_writes_truth_json(tmp_path):
    out = tmp_path / "hs.pdf"
    assert synth.main([str(out), "--procedure", "1.000894", "--seed", "4", "--dpi", "100"]) == 0
    truth = SynthDossier.model_validate(json.loads((tmp_path / "hs.pdf.truth.json").read_text("utf-8")))
    assert truth.procedure == "1.000894"
    assert truth.files == [str(out)] and out.exists()
    assert len(truth.pages) == 5
    outdir = tmp_path / "pages"
    assert synth.main([str(outdir), "--format", "png-dir", "--dpi", "72",
                       "--include", "phieu_tiep_nhan,can_cuoc"]) == 0
    t2 = json.loads((tmp_path / "pages.truth.json").read_text("utf-8"))
    assert [p["doc_type"] for p in t2["pages"]] == ["phieu_tiep_nhan", "can_cuoc"]


def test_sohoa_synth_command_writes_an_eval_set_and_a_text_pdf(tmp_path):
    """The installed dev tool (sohoa-synth) prints one JSON line for an eval set, as `sohoa eval` users expect."""
    command = Path(sys.executable).with_name("sohoa-synth")
    done = subprocess.run([str(command), str(tmp_path / "eval"), "--eval-set", "2"],
                          capture_output=True, text=True, timeout=300, check=True)
    report = json.loads(done.stdout)
    truths = sorted((tmp_path / "eval").glob("*.truth.json"))
    assert report == {"folder": str(tmp_path / "eval"), "dossiers": 2,
                      "pages": sum(len(json.loads(t.read_text("utf-8"))["pages"]) for t in truths)}
    assert [t.name for t in truths] == ["dossier-0000.pdf.truth.json", "dossier-0001.pdf.truth.json"]
    text_pdf = tmp_path / "born-digital.pdf"
    subprocess.run([str(command), str(text_pdf), "--format", "text-pdf", "--procedure", "1.001612"],
                   capture_output=True, text=True, timeout=120, check=True)
    assert text_pdf.read_bytes().startswith(b"%PDF-1.")
    assert len(json.loads(synth.truth_path(text_pdf).read_text("utf-8"))["pages"]) == 5


# ---------------------------------------------------------------- real OCR
def _tesseract(path: Path) -> str:
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    r = subprocess.run(["tesseract", str(path), "-", "-l", "vie+eng"],
                       capture_output=True, text=True, env=env, check=True, timeout=60)
    return unicodedata.normalize("NFC", r.stdout)


@pytest.mark.tesseract
@pytest.mark.skipif(not HAVE_TESSERACT, reason="tesseract not installed")
def test_expected_words_are_found_by_tesseract(tmp_path):
    langs = subprocess.run(["tesseract", "--list-langs"], capture_output=True, text=True).stdout
    if "vie" not in langs.split():
        pytest.skip("tesseract-ocr-vie not installed")
    truth = make_dossier(tmp_path / "d.pdf", procedure="1.001193", seed=0, dpi=300)
    imgs = render_pages("1.001193", seed=0, dpi=300)
    picks = [0, 4]  # the receipt (mentions other titles) and the ID card (small text)
    paths = []
    for i in picks:
        p = tmp_path / f"page-{i + 1}.png"
        imgs[i].save(p, dpi=(300, 300))
        paths.append(p)
    with ThreadPoolExecutor(2) as ex:
        texts = list(ex.map(_tesseract, paths))
    for i, text in zip(picks, texts):
        tokens = set(re.findall(r"\w+", text))
        missing = [w for w in truth.pages[i].expected_words if w not in tokens]
        assert not missing, (truth.pages[i].doc_type, missing, text[:400])
    assert truth.dossier_code in texts[0]
