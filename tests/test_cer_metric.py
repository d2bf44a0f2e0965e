"""The character error rates of bench/cer.py (used by bench/ocr_quality.py)."""

from __future__ import annotations

import sys
import unicodedata
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import cer  # noqa: E402

HEADER_TRUTH = "\n".join([
    "UBND PHƯỜNG HỒNG GAI",
    "BỘ PHẬN MỘT CỬA",
    "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM",
    "Độc lập - Tự do - Hạnh phúc",
    "GIẤY TIẾP NHẬN HỒ SƠ VÀ HẸN TRẢ KẾT QUẢ",
    "Mã hồ sơ: 000.00.00.H49-260325-6668",
    "Ông/Bà: Nguyễn Thị Hồng Nhung",
])
# the same page read with the two header columns side by side, on one line each
HEADER_READ = "\n".join([
    "UBND PHƯỜNG HỒNG GAI CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM",
    "BỘ PHẬN MỘT CỬA Độc lập - Tự do - Hạnh phúc",
    "GIẤY TIẾP NHẬN HỒ SƠ VÀ HẸN TRẢ KẾT QUẢ",
    "Mã hồ sơ: 000.00.00.H49-260325-6668",
    "Ông/Bà: Nguyễn Thị Hồng Nhung",
])


def test_identical_text_costs_nothing():
    assert cer.plain(HEADER_TRUTH, HEADER_TRUTH) == cer.Score(0, len(cer.normalize(HEADER_TRUTH)))
    flex = cer.flexible(HEADER_TRUTH, HEADER_TRUTH)
    assert (flex.errors, flex.cer, flex.missed, flex.extra, flex.matches) == (0, 0.0, [], [], [])
    assert flex.chars == sum(len(line) for line in HEADER_TRUTH.splitlines())


def test_swapped_blocks_cost_nothing_flexible_but_a_lot_plain():
    lines = HEADER_TRUTH.splitlines()
    swapped = "\n".join(lines[4:] + lines[:4])
    assert cer.flexible(swapped, HEADER_TRUTH).errors == 0
    assert cer.plain(swapped, HEADER_TRUTH).cer > 0.3


def test_columns_joined_on_one_line_cost_nothing_flexible():
    assert cer.flexible(HEADER_READ, HEADER_TRUTH).errors == 0
    assert cer.plain(HEADER_READ, HEADER_TRUTH).errors > 25


def test_one_line_read_as_several_costs_nothing():
    truth = "Giới tính: Nữ      Dân tộc: Kinh      Quốc tịch: Việt Nam"
    read = "Quốc tịch: Việt Nam\nGiới tính: Nữ\nDân tộc: Kinh"
    flex = cer.flexible(read, truth)
    assert flex.errors == 0
    assert flex.chars == len(" ".join(truth.split()))


def test_a_substituted_character_costs_one():
    read = HEADER_READ.replace("HẸN", "HEN")
    flex = cer.flexible(read, HEADER_TRUTH)
    assert flex.errors == 1
    assert flex.matches == [("GIẤY TIẾP NHẬN HỒ SƠ VÀ HẸN TRẢ KẾT QUẢ", "GIẤY TIẾP NHẬN HỒ SƠ VÀ HEN TRẢ KẾT QUẢ", 1)]
    assert flex.cer == pytest.approx(1 / flex.chars)
    assert cer.plain(HEADER_TRUTH.replace("Đ", "Ð"), HEADER_TRUTH).errors == 1  # eth for Đ is an error
    assert cer.flexible(HEADER_TRUTH.replace("Đ", "Ð"), HEADER_TRUTH).errors == 1


def test_inserted_and_deleted_characters_inside_a_line():
    truth = "Số định danh cá nhân: 022186001234"
    assert cer.flexible("Số định danh cá nhân: 0221860012345", truth).errors == 1
    assert cer.flexible("Số định danh cá nhân: 02218600123", truth).errors == 1
    assert cer.flexible("Số định danh cá nhân 022186001234", truth).errors == 1


def test_garbage_lines_count_as_insertions():
    garbage = ["IH H", "mì ors H", "@@ ## ee ~~"]
    read = HEADER_READ + "\n" + "\n".join(garbage)
    flex = cer.flexible(read, HEADER_TRUTH)
    assert flex.errors == sum(len(g) for g in garbage)
    assert sorted(flex.extra) == sorted(garbage)
    assert flex.missed == []


def test_missing_lines_count_as_deletions():
    read = "\n".join(HEADER_READ.splitlines()[:-1])  # the name line is not read
    flex = cer.flexible(read, HEADER_TRUTH)
    assert flex.missed == ["Ông/Bà: Nguyễn Thị Hồng Nhung"]
    assert flex.errors == len("Ông/Bà: Nguyễn Thị Hồng Nhung")


def test_unrelated_text_is_not_matched_to_truth():
    truth = "Nơi cư trú: Số 12, đường Hạ Long, phường Bãi Cháy"
    read = "xq zzkw vvb pp"
    flex = cer.flexible(read, truth)
    assert flex.errors == len(cer.normalize(truth)) + len(read)
    assert flex.cer > 1.0


@pytest.mark.parametrize("read,truth,errors,chars", [
    ("", "", 0, 0),
    ("  \n\t ", "\n", 0, 0),
    ("abc", "", 3, 0),
    ("", "abc", 3, 3),
])
def test_empty_cases(read, truth, errors, chars):
    for score in (cer.plain(read, truth), cer.flexible(read, truth)):
        assert (score.errors, score.chars) == (errors, chars)
    expected = 0.0 if not errors else (float("inf") if not chars else 1.0)
    assert cer.flexible(read, truth).cer == expected
    assert cer.plain(read, truth).cer == expected


def test_nfc_and_whitespace_are_normalized():
    nfd = unicodedata.normalize("NFD", HEADER_TRUTH)
    assert nfd != HEADER_TRUTH
    spaced = HEADER_TRUTH.replace(" ", "   \t ").replace("\n", "\n\n  ")
    for read in (nfd, spaced):
        assert cer.plain(read, HEADER_TRUTH).errors == 0
        assert cer.flexible(read, HEADER_TRUTH).errors == 0


def test_scores_add_up():
    total = cer.Score(3, 100) + cer.flexible("ab", "abc")
    assert (total.errors, total.chars) == (4, 103)


def test_full_page_reordered_and_split():
    truth_lines = [f"Dòng {i}: Họ, chữ đệm, tên người yêu cầu: Nguyễn Thị Hồng Nhung số {i * 7919:06d}" for i in range(45)]
    truth = "\n".join(truth_lines)
    # reversed order, every line split in two, a few characters wrong, noise lines
    read_lines = []
    for line in reversed(truth_lines):
        wrong = line.replace("ễ", "ê")
        half = len(wrong) // 2
        read_lines += [wrong[:half], wrong[half:]]
    read = "\n".join(read_lines + ["IH H", "mì ors H"])
    flex = cer.flexible(read, truth)  # no wall-clock assertion: timings live in bench/
    assert flex.errors == 45 + len("IH H") + len("mì ors H")


@pytest.mark.parametrize("new_style,traditional", [
    ("hoà", "hòa"), ("thuỷ", "thủy"), ("khoẻ", "khỏe"), ("CỘNG HOÀ", "CỘNG HÒA"), ("Hoá", "Hóa"),
    ("tuỳ", "tùy"), ("hoạ", "họa"), ("Uỷ ban", "Ủy ban"),
])
def test_tone_placement_variants_compare_equal_in_reading_order(new_style, traditional):
    assert cer.tone_placement(new_style) == cer.tone_placement(traditional) == traditional
    assert cer.reading_order(new_style, traditional).errors == 0
    assert cer.reading_order(traditional, new_style).errors == 0
    assert cer.plain(new_style, traditional).errors > 0  # plain keeps counting it


@pytest.mark.parametrize("word", ["quý", "quỳ", "hoàng", "ngoài", "khuya", "thuế", "hoặc", "khuyến", "quí"])
def test_tone_placement_leaves_other_syllables_alone(word):
    assert cer.tone_placement(word) == word


def test_spelling_variants_and_real_tone_errors_still_cost():
    assert cer.reading_order("quí", "quý").errors == 1  # i/y spelling, not a placement
    assert cer.reading_order("khân trương", "khẩn trương").errors == 1
    assert cer.reading_order("hóa", "hòa").errors == 1  # another tone, not another place


def test_reading_order_is_one_string_nfc_whitespace_collapsed():
    read = unicodedata.normalize("NFD", HEADER_TRUTH.replace("HÒA", "HOÀ")).replace("\n", "  \n\n ")
    assert cer.reading_order(read, HEADER_TRUTH) == cer.Score(0, len(cer.normalize(HEADER_TRUTH)))


def test_columns_read_in_the_wrong_order_cost_in_reading_order_not_in_flexible():
    truth = HEADER_TRUTH.splitlines()
    right_column_first = "\n".join(truth[2:4] + truth[:2] + truth[4:])
    assert cer.flexible(right_column_first, HEADER_TRUTH).errors == 0
    assert cer.reading_order(right_column_first, HEADER_TRUTH).errors > 30
    assert cer.reading_order(HEADER_READ, HEADER_TRUTH).errors > 25  # the two columns read across
