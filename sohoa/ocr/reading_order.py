"""Reading order from layout: pure geometry over an engine's word boxes, no second OCR pass.

Tesseract reads the two-column national header of an official letter (Decree 30/2020) row by row
and glues its columns: ``BỘ CÔNG THƯƠNG CỘNG HOÀ XÃ HỘI CHỦ NGHĨA VIỆT NAM``, then ``TRƯỜNG …
Độc lập - Tự do - Hạnh phúc``; the same happens to the recipients list beside the signer. A
person reads the left block (agency, ``Số: …``, ``V/v …``), then the right one (motto, place and
date), then the body, then ``Nơi nhận:`` before the signer. Here:

1. ``segments``: each engine line is cut where two words are further apart than ``SPLIT_GAP``
   times the line's median word height. Measured at 300 dpi on the ten real pages of
   ../shared/corpus/real-vi (transcribed scans, rasterized born-digital letters): gaps in body
   lines of 4+ words stay at or under 0.85 height (median 0.45); glued header columns are 2.6 to 9
   heights apart on real letters, 1.7 on the generated ones (sohoa_dev.synth's tighter header). A
   cut alone moves nothing (a region of one row reads left to right), so a wrong cut costs a line
   break, not an order. A form's key-value pairs on one line (``Giới tính: Nam     Quốc tịch: Việt
   Nam``) stay whole: no cut where the right side starts with a label (``…:`` within its first
   ``LABEL_WORDS`` words) and the left side holds one too.
2. ``rows`` (segments whose vertical cores overlap) and ``regions``: a multi-column region starts at
   a row with two text-sized segments ``SPLIT_GAP`` heights apart and takes the rows below while their
   x-extents still leave a common gutter (``GUTTER`` heights) and no more than ``BREAK_GAP`` heights
   of white space lies above them. A full-width body line leaves no gutter: body paragraphs, and any
   row that is not side by side with another, stay in the engine's order.
3. Order: regions top to bottom; inside a region of two columns (more is a table, left as read), the
   left column then the right, each top to bottom, except that a column continuing a left-aligned
   line just above it comes first (an ID card's address beside the photo's caption). Each segment
   becomes a line; a column (or the engine's block, in single-column flow) becomes a block.

Measured (bench/cer.py ``reading_order``, whole page, before -> after, errors summed per kind over
bench/real_set.py): transcribed notice scans 14.9% -> 5.9% (their flexible CER, order aside, is
about 5%), born-digital letters at 300 dpi 6.6% -> 1.7%, at 200 dpi degraded 7.5% -> 4.0%, simulated
photos 16.0% -> 13.6%; generated dossiers (bench/ocr_quality.py) 6.1-6.4% -> 0.6-1.8%. Tables (a
landscape appendix) are not improved. Cost: 2-10 ms for a 135-560-word page on a loaded 2-core
machine, and 4-14 ms more to write the text layer of a page that moved, against 1.2-1.5 s of CPU
for Tesseract's pass (its own PDF renderer takes 33-44 ms of it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from statistics import median

from sohoa.kernel.models import Word
from sohoa.ocr import text_layer
from sohoa.ocr.base import PageReading, TextLine

SPLIT_GAP = 1.2  # word heights: body gaps <= 0.85, header columns >= 1.7 generated, >= 2.6 real (see above)
LABEL_WORDS = 5  # a form label ``Quốc tịch / Nationality:`` is at most this many words before its colon
GUTTER = 1.0  # word heights between two columns (measured: 1.8 in a real header whose left block is wide)
BREAK_GAP = 8.0  # word heights of white space above a row that end a region: a signature space is 4-7 (measured)
MAX_COLUMNS = 2  # a header, a signature block, a card: two; more is a table, read row by row as the engine does
CONTINUE_GAP = 1.5  # word heights: a column this close under a left-aligned segment continues it (card: 1.4)
NARROW = 3.0  # word heights: a narrower x-span between columns is a stamp's fragments, not a column (measured 1.1)
SPECK = 0.5  # a segment lower than this many word heights is a speck (stamp, rule), not a column's text
CORE = 0.25  # share of a segment's height cut from its top and bottom when testing rows (diacritics, descenders)

_Box = tuple[int, int, int, int]
_LABEL = re.compile(r":$")


@dataclass
class Segment:
    """Words of one engine line that belong together (a glued line gives two or more)."""

    words: list[Word]
    block: int  # the engine's block, a hint for single-column flow
    box: _Box = field(init=False)

    def __post_init__(self) -> None:
        self.box = union([w.box for w in self.words])

    @property
    def left(self) -> int:
        return self.box[0]

    @property
    def right(self) -> int:
        return self.box[0] + self.box[2]

    @property
    def core(self) -> tuple[float, float]:
        top, height = self.box[1], self.box[3]
        return top + CORE * height, top + (1 - CORE) * height


def union(boxes: list[_Box]) -> _Box:
    left, top = min(b[0] for b in boxes), min(b[1] for b in boxes)
    right, bottom = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
    return left, top, right - left, bottom - top


def _height(words: list[Word]) -> float:
    return float(median(w.box[3] for w in words))


def _has_label(words: list[Word]) -> bool:
    return any(_LABEL.search(w.text) for w in words[:LABEL_WORDS])


def _keeps_pair(left: list[Word], right: list[Word]) -> bool:
    """A form's key-value pairs side by side on one line stay one line."""
    return _has_label(right) and any(_LABEL.search(w.text) for w in left)


def split_line(words: list[Word], block: int) -> list[Segment]:
    """One engine line as segments, cut at gaps wider than ``SPLIT_GAP`` word heights."""
    ordered = sorted(words, key=lambda w: w.box[0])
    limit = SPLIT_GAP * _height(ordered)
    pieces: list[list[Word]] = [[ordered[0]]]
    for before, word in zip(ordered, ordered[1:]):
        gap = word.box[0] - (before.box[0] + before.box[2])
        if gap > limit and not _keeps_pair(pieces[-1], _rest(ordered, word)):
            pieces.append([])
        pieces[-1].append(word)
    return [Segment(piece, block) for piece in pieces]


def _rest(ordered: list[Word], first: Word) -> list[Word]:
    return ordered[ordered.index(first):]


def by_line(words: list[Word]) -> dict[int, list[Word]]:
    """The words of each line, in their order."""
    found: dict[int, list[Word]] = {}
    for word in words:
        found.setdefault(word.line, []).append(word)
    return found


def segments(words: list[Word], blocks: dict[int, int]) -> list[Segment]:
    """Every engine line split at its wide gaps; ``blocks`` maps an engine line to its block."""
    return [piece for line, members in by_line(words).items() for piece in split_line(members, blocks.get(line, 0))]


def _merge(intervals: list[tuple[int, int]], gutter: float) -> list[tuple[int, int]]:
    """Intervals joined where they overlap or lie closer than ``gutter``."""
    merged: list[tuple[int, int]] = []
    for left, right in sorted(intervals):
        if merged and left - merged[-1][1] < gutter:
            merged[-1] = (merged[-1][0], max(merged[-1][1], right))
        else:
            merged.append((left, right))
    return merged


def rows(pieces: list[Segment]) -> list[list[Segment]]:
    """Top to bottom; segments whose cores overlap vertically are one row, left to right."""
    found: list[list[Segment]] = []
    for segment in sorted(pieces, key=lambda s: s.core[0]):
        top, bottom = segment.core
        if found and top < max(s.core[1] for s in found[-1]) and bottom > min(s.core[0] for s in found[-1]):
            found[-1].append(segment)
        else:
            found.append([segment])
    return [sorted(row, key=lambda s: s.left) for row in found]


def _text(row: list[Segment], height: float) -> list[Segment]:
    return [s for s in row if s.box[3] >= SPECK * height]


def _side_by_side(row: list[Segment], height: float) -> bool:
    """Two blocks start here: two text-sized segments of the row as far apart as a glued line's columns
    (a speck of a stamp read as ``:`` beside an e-signature box started one on a real letter)."""
    text = _text(row, height)
    return any(b.left - a.right > SPLIT_GAP * height for a, b in zip(text, text[1:]))


def _spans(members: list[Segment]) -> list[tuple[int, int]]:
    return [(s.left, s.right) for s in members]


def _joins(region: list[Segment], row: list[Segment], height: float) -> bool:
    """Whether ``row`` continues ``region``: a common gutter is left, and it is not a paragraph further down."""
    bottom = max(s.box[1] + s.box[3] for s in region)
    close = min(s.box[1] for s in row) - bottom <= BREAK_GAP * height
    return close and len(_merge(_spans(region + row), GUTTER * height)) >= 2


def regions(page_rows: list[list[Segment]], height: float) -> list[list[Segment]]:
    """Multi-column regions: from a row with side-by-side blocks, the rows below that keep a common
    gutter. Any other row is a region of its own (single-column flow, in the engine's order)."""
    found: list[list[Segment]] = []
    index = 0
    while index < len(page_rows):
        region, opens = list(page_rows[index]), _side_by_side(page_rows[index], height)
        index += 1
        while opens and index < len(page_rows) and _joins(region, page_rows[index], height):
            region += page_rows[index]
            index += 1
        found.append(region)
    return found


def columns(region: list[Segment], height: float, above: list[Segment]) -> list[list[Segment]]:
    """A region's segments column by column from the left, each column top to bottom; but a column that
    continues the row ``above`` it comes first (see ``_continues``)."""
    spans = _merge(_spans(region), GUTTER * height)
    wide = [span for span in spans if span[1] - span[0] >= NARROW * height]
    if not 2 <= len(wide) <= MAX_COLUMNS:
        return [region]
    found: list[list[Segment]] = [[] for _ in wide]
    for row in rows(region):
        for segment in row:
            found[_nearest(wide, segment)].append(segment)
    going_on = [column for column in found if _continues(column, above, height)]
    return going_on + [column for column in found if column not in going_on] if len(going_on) == 1 else found


def _nearest(spans: list[tuple[int, int]], segment: Segment) -> int:
    """The span holding the segment, else the closest (a stamp's fragments read between two columns)."""
    def distance(span: tuple[int, int]) -> int:
        return max(span[0] - segment.right, segment.left - span[1], 0)
    return min(range(len(spans)), key=lambda index: distance(spans[index]))


def _continues(column: list[Segment], above: list[Segment], height: float) -> bool:
    """The column goes on from a segment right above it, left edges aligned: on an ID card the address
    beside the photo's ``Có giá trị đến`` continues ``Nơi thường trú:``. (A centred header column under an
    e-signature box is not aligned with it; a full-width line above overlaps every column.)"""
    first = column[0]
    return any(abs(s.left - first.left) <= GUTTER * height and first.box[1] - (s.box[1] + s.box[3]) <= CONTINUE_GAP * height
               and s.right > first.left for s in above)


def arrange(words: list[Word], blocks: dict[int, int]) -> list[tuple[int, list[Word]]]:
    """The page's lines in reading order as (block, words); ``blocks`` maps engine lines to their blocks.

    A column is a block; in single-column flow a line stays in the block of the engine's line it came from."""
    if not words:
        return []
    height = _height(words)
    out: list[tuple[int, list[Word]]] = []
    block, last_hint = -1, None
    above: list[Segment] = []
    for region in regions(rows(segments(words, blocks)), height):
        parts = columns(region, height, above)
        above = rows(region)[-1]
        for part in parts:
            for segment in part:
                hint = segment.block if len(parts) == 1 else None
                if (segment is part[0]) if hint is None else hint != last_hint:
                    block += 1
                last_hint = hint
                out.append((block, segment.words))
    return out


def horizontal(words: list[Word], lines: list[TextLine]) -> bool:
    """Whether most lines of two words or more run left to right in the image read. Tesseract also reads
    lines that run up or down the page (a photo the capture took for sideways, then turned: its lines came
    back 30 px wide and 300 px high); the geometry here is for horizontal lines only."""
    counts: dict[int, int] = {}
    for word in words:
        counts[word.line] = counts.get(word.line, 0) + 1
    long = [line for line in lines if counts.get(line.id, 0) >= 2]
    return sum(line.box[2] > line.box[3] for line in long) * 2 > len(long)


def ordered(words: list[Word], lines: list[TextLine]) -> tuple[list[Word], list[TextLine]]:
    """Words renumbered by line in reading order, and those lines with their blocks (see ``arrange``);
    as they are when the lines do not run left to right."""
    if not horizontal(words, lines):
        return words, lines
    arranged = arrange(words, {line.id: line.block for line in lines})
    out_words: list[Word] = []
    out_lines: list[TextLine] = []
    for number, (block, members) in enumerate(arranged):
        out_words.extend(w if w.line == number else _renumbered(w, number) for w in members)
        out_lines.append(TextLine(id=number, block=block, box=union([w.box for w in members])))
    return out_words, out_lines


def _renumbered(word: Word, line: int) -> Word:
    """A copy on another line; ``model_construct``: its fields were validated already (3x faster than copying)."""
    return Word.model_construct(text=word.text, box=word.box, conf=word.conf, line=line)


def text_of(words: list[Word], lines: list[TextLine]) -> str:
    """Lines of words, a blank line between blocks (as Tesseract writes paragraphs)."""
    members = by_line(words)
    out: list[str] = []
    for before, line in zip([None, *lines], lines):
        if before is not None and before.block != line.block:
            out.append("")
        out.append(" ".join(w.text for w in members.get(line.id, [])))
    return "\n".join(out).strip()


def _same(a: list[Word], b: list[Word], lines_a: list[TextLine], lines_b: list[TextLine]) -> bool:
    """Nothing moved: the same words in the same order on as many lines."""
    return [(w.text, w.box) for w in a] == [(w.text, w.box) for w in b] and len(lines_a) == len(lines_b)


def reorder(reading: PageReading) -> PageReading:
    """The reading in reading order. Unchanged when nothing moved (the engine's text and layer kept); else
    its text rebuilt from the lines and its text layer written anew from them (sohoa/ocr/text_layer.py; the
    engine's layer is kept where tesseract's glyphless font is not installed: only an engine without
    Tesseract on a machine without it)."""
    words, lines = ordered(reading.words, reading.lines)
    if _same(reading.words, words, reading.lines, lines):
        return reading
    layer, members = reading.layer, by_line(words)
    if text_layer.available():
        layer = text_layer.write(reading.layer, reading.image, [members[line.id] for line in lines])
    return PageReading(image=reading.image, text=text_of(words, lines), words=words, lines=lines, layer=layer)
