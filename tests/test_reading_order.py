"""Reading order from layout (sohoa/ocr/reading_order.py): the two columns of an official letter's header
and of its signature block read one after the other, body paragraphs and a form's key-value lines untouched.

The fast tests place synthetic word boxes the way Tesseract reports them at 300 dpi (words about 50 px
high, 20 px apart in a justified line, header columns glued on one engine line 200-300 px apart); the
slow one reads a rendered two-column header with the real engine, through the OCR step's reading, and
checks the order of the page text and of the searchable PDF's text layer (``pdftotext -raw``).
"""

from __future__ import annotations

import subprocess
import unicodedata
from pathlib import Path

import pikepdf
import pytest

from sohoa.kernel.models import Word
from sohoa.ocr import normalize, reading_order, text_layer
from sohoa.ocr.base import PageReading, TextLine

HEIGHT = 50  # px: a 12 pt line at 300 dpi
SPACE = 20  # px between the words of a justified line
CHAR = 24  # px a character


def line_words(parts: list[tuple[int, str]], top: int, line: int) -> list[Word]:
    """One engine line: each (left, text) part laid out word after word from ``left``."""
    words = []
    for left, text in parts:
        for token in text.split():
            words.append(Word(text=token, box=(left, top, CHAR * len(token), HEIGHT), conf=95.0, line=line))
            left += CHAR * len(token) + SPACE
    return words


def page(rows: list[tuple[int, list[tuple[int, str]]]]) -> tuple[list[Word], list[TextLine]]:
    """Words and lines of engine lines given as (top, parts), one engine block."""
    words = [w for number, (top, parts) in enumerate(rows) for w in line_words(parts, top, number)]
    lines = [TextLine(id=n, block=0, box=reading_order.union([w.box for w in words if w.line == n]))
             for n in range(len(rows))]
    return words, lines


def read_lines(words: list[Word], lines: list[TextLine]) -> list[str]:
    got_words, got_lines = reading_order.ordered(words, lines)
    return [" ".join(w.text for w in got_words if w.line == line.id) for line in got_lines]


HEADER = [
    (220, [(490, "BỘ CÔNG THƯƠNG"), (1150, "CỘNG HOÀ XÃ HỘI CHỦ NGHĨA VIỆT NAM")]),
    (285, [(400, "TRƯỜNG ĐẠI HỌC ĐIỆN LỰC"), (1300, "Độc lập - Tự do - Hạnh phúc")]),
    (380, [(470, "Số: 2095/TB-ĐHĐL"), (1250, "Hà Nội, ngày 27 tháng 8 năm 2025")]),
    (555, [(1140, "THÔNG BÁO")]),
    (620, [(370, "Căn cứ Kế hoạch số 2079/KH-ĐHĐL ngày 26/8/2025 về việc tổ chức")]),
    (690, [(370, "Lễ kỷ niệm 80 năm thành lập Bộ Giáo dục và Đào tạo, Khai giảng")]),
]


def test_a_glued_two_column_header_is_read_left_block_then_right_block():
    words, lines = page(HEADER)
    assert read_lines(words, lines) == [
        "BỘ CÔNG THƯƠNG", "TRƯỜNG ĐẠI HỌC ĐIỆN LỰC", "Số: 2095/TB-ĐHĐL",
        "CỘNG HOÀ XÃ HỘI CHỦ NGHĨA VIỆT NAM", "Độc lập - Tự do - Hạnh phúc", "Hà Nội, ngày 27 tháng 8 năm 2025",
        "THÔNG BÁO", HEADER[4][1][0][1], HEADER[5][1][0][1]]


def test_each_header_column_is_a_block_and_words_are_numbered_by_the_new_lines():
    words, lines = reading_order.ordered(*page(HEADER))
    assert [line.block for line in lines][:6] == [0, 0, 0, 1, 1, 1]
    assert [line.id for line in lines] == list(range(len(lines)))
    assert [w.line for w in words] == sorted(w.line for w in words)  # words listed in reading order
    assert lines[0].box == (490, 220, words[2].box[0] + words[2].box[2] - 490, HEIGHT)


def test_a_justified_body_line_is_not_split():
    # justified: gaps of 1.1 word heights (55 px) are still one line; the measured maximum on real letters is 0.85
    words = [Word(text=t, box=(300 + i * 180, 900, 125, HEIGHT), conf=90.0, line=0)
             for i, t in enumerate("Nhà trường thông báo chương trình Lễ kỷ niệm".split())]
    lines = [TextLine(id=0, block=0, box=reading_order.union([w.box for w in words]))]
    assert read_lines(words, lines) == ["Nhà trường thông báo chương trình Lễ kỷ niệm"]
    assert reading_order.ordered(words, lines) == (words, lines)


def test_a_signature_block_reads_the_recipients_then_the_signer():
    words, lines = page([
        (1800, [(370, "Nhận được thông báo này yêu cầu các sinh viên nghiêm túc thực hiện./.")]),
        (1960, [(380, "Nơi nhận:"), (1450, "TM. ỦY BAN NHÂN DÂN")]),
        (2015, [(380, "- Như trên;"), (1560, "CHỦ TỊCH")]),
        (2070, [(380, "- Lưu: VT, KGVX.")]),
        (2200, [(1500, "Nguyễn Văn An")]),
    ])
    assert read_lines(words, lines) == [
        "Nhận được thông báo này yêu cầu các sinh viên nghiêm túc thực hiện./.",
        "Nơi nhận:", "- Như trên;", "- Lưu: VT, KGVX.", "TM. ỦY BAN NHÂN DÂN", "CHỦ TỊCH", "Nguyễn Văn An"]


def test_a_form_key_value_line_stays_one_line():
    rows = [
        (400, [(300, "Họ, chữ đệm, tên: NGUYỄN VĂN AN")]),
        (470, [(300, "Giới tính: Nam"), (1300, "Quốc tịch: Việt Nam")]),
        (540, [(300, "Nơi cư trú: Phường Hồng Hải, tỉnh Quảng Ninh")]),
    ]
    assert read_lines(*page(rows)) == ["Họ, chữ đệm, tên: NGUYỄN VĂN AN", "Giới tính: Nam Quốc tịch: Việt Nam",
                                       "Nơi cư trú: Phường Hồng Hải, tỉnh Quảng Ninh"]


def test_an_id_card_address_beside_the_photo_caption_continues_the_field_above():
    # the card's text column goes on beside the "valid until" caption under the photo (sohoa_dev.synth's card)
    words, lines = page([
        (1000, [(996, "Nơi thường trú / Place of residence:")]),
        (1045, [(996, "Số 155, đường Trần Hưng Đạo,")]),
        (1056, [(500, "Có giá trị đến:")]),
        (1086, [(996, "phường Hồng Gai, tỉnh Quảng Ninh")]),
        (1101, [(500, "11/11/2033")]),
    ])
    assert read_lines(words, lines) == ["Nơi thường trú / Place of residence:", "Số 155, đường Trần Hưng Đạo,",
                                        "phường Hồng Gai, tỉnh Quảng Ninh", "Có giá trị đến:", "11/11/2033"]


def test_a_speck_beside_a_block_starts_no_columns():
    # a 4 px speck of a stamp read as ":" left of an e-signature box (a real letter): the box stays above the header
    words, lines = page([(60, [(1640, "TRUNG TÂM CÔNG BÁO")]), (110, [(1780, "24.01.2025 20:01:14")])] + HEADER[:3])
    speck = Word(text=":", box=(1600, 170, 4, 4), conf=10.0, line=len(lines))
    lines.append(TextLine(id=len(lines), block=1, box=speck.box))
    got = read_lines([*words, speck], lines)
    assert got[:4] == ["TRUNG TÂM CÔNG BÁO", "24.01.2025 20:01:14", ":", "BỘ CÔNG THƯƠNG"]


def test_lines_running_up_the_page_are_left_as_read():
    words, lines = page(HEADER)
    turned = [w.model_copy(update={"box": (w.box[1], w.box[0], w.box[3], w.box[2])}) for w in words]
    turned_lines = [TextLine(id=line.id, block=0, box=(line.box[1], line.box[0], line.box[3], line.box[2]))
                    for line in lines]
    assert reading_order.ordered(turned, turned_lines) == (turned, turned_lines)


def test_a_page_in_reading_order_is_left_as_the_engine_read_it(tmp_path):
    words, lines = page(HEADER[3:])
    reading = PageReading(image=normalize.as_stored((2480, 3508), 300), text="as read", words=words, lines=lines,
                          layer=tmp_path / "layer.pdf")
    assert reading_order.reorder(reading) is reading


@pytest.mark.skipif(not text_layer.available(), reason="tesseract's glyphless font (pdf.ttf) is not installed")
def test_a_reordered_page_gets_its_text_and_its_text_layer_in_that_order(tmp_path):
    words, lines = page(HEADER)
    reading = PageReading(image=normalize.as_stored((2480, 3508), 300), text="glued", words=words, lines=lines,
                          layer=tmp_path / "layer.pdf")
    got = reading_order.reorder(reading)
    expected = read_lines(words, lines)
    assert got.text.splitlines()[:4] == ["BỘ CÔNG THƯƠNG", "TRƯỜNG ĐẠI HỌC ĐIỆN LỰC", "Số: 2095/TB-ĐHĐL", ""]
    assert got.text.split() == " ".join(expected).split()
    with pikepdf.open(got.layer) as pdf:
        assert [float(v) for v in pdf.pages[0].mediabox] == [0, 0, 2480 * 72 / 300, 3508 * 72 / 300]
    raw = subprocess.run(["pdftotext", "-raw", "-enc", "UTF-8", str(got.layer), "-"], capture_output=True,
                         text=True, check=True).stdout
    assert [line for line in raw.splitlines() if line.strip()][:len(expected)] == expected


# ---------------------------------------------------------------- the real engine on a rendered letter

LEFT = ["UBND TỈNH QUẢNG NINH", "SỞ Y TẾ"]
BODY = "Căn cứ Kế hoạch số 2079/KH-SYT ngày 26 tháng 8 năm 2025 về việc tổ chức kiểm tra công tác y tế."


def rendered_letter(path: Path) -> list[str]:
    """A letter with a two-column header, a body line and two signature columns (sohoa_dev.synth at 300 dpi);
    its lines in the order written, which is the reading order."""
    from sohoa_dev import synth

    builder = synth.Builder("thong_bao", True, [])
    builder.header_two_columns(LEFT)
    builder.title("THÔNG BÁO")
    builder.line(BODY)
    builder.signatures([("NGƯỜI LẬP", "", "Trần Thị Bình"), ("GIÁM ĐỐC", "", "Lê Văn Cường")])
    layout = builder.done()
    synth.rasterize(layout, 300).convert("L").save(path, dpi=(300, 300))
    return layout.lines


def read_in_order(text: str, anchors: list[str]) -> bool:
    """Each anchor found in ``text`` after the one before it."""
    at = 0
    for anchor in anchors:
        at = text.find(anchor, at)
        if at < 0:
            return False
        at += len(anchor)
    return True


@pytest.mark.slow
@pytest.mark.tesseract
def test_tesseract_reads_a_two_column_header_in_reading_order(tmp_path):
    from PIL import Image

    from sohoa.kernel.models import PageImage
    from sohoa.kernel.settings import Settings
    from sohoa.ocr import pdf as searchable
    from sohoa.steps import ocr

    image = tmp_path / "letter.png"
    written = rendered_letter(image)
    with Image.open(image) as opened:
        width, height = opened.size
    page_image = PageImage(n=1, key="letter.png", sha256="0" * 64, media_type="image/png", width=width, height=height,
                           dpi=300, origin="image")
    got = ocr.read(page_image, image, tmp_path, 0, Settings(ocr_engine="library"))
    text = " ".join(unicodedata.normalize("NFC", got.text).split())
    assert read_in_order(text, [" ".join(line.split()[:2]) for line in written]), (written, text)
    out = tmp_path / "searchable.pdf"
    plan = searchable.PagePlan(page=page_image, image=image, layer=got.layer, rotate=0,
                               layer_matrix=normalize.layer_to_page(got.image, height, 300))
    searchable.assemble([plan], out, title="letter")
    raw = subprocess.run(["pdftotext", "-raw", "-enc", "UTF-8", str(out), "-"], capture_output=True, text=True,
                         check=True).stdout
    assert " ".join(unicodedata.normalize("NFC", raw).split()) == text
