"""Character error rates of OCR text against ground truth: plain, in reading order, and independent of it.

Every metric compares NFC text with whitespace runs collapsed, and counts errors over the truth's
characters. Nothing is folded beyond that (an ``Ð`` read for ``Đ`` is an error), except that
``reading_order`` also folds the two conventions of tone-mark placement (``tone_placement``).

``plain``     Levenshtein distance between the whole OCR text and the whole truth, lines joined
              by one space. A page read in another order than the truth's (two-column headers,
              an ID card's side-by-side fields) pays for every character moved.

``reading_order``  ``plain`` after ``tone_placement`` on both sides: the whole page as one string,
              so it measures what a reader of the text gets, reading order included (a header
              read across its two columns pays for every character moved), but not whether the
              typist of the truth and the OCR model put the tone of ``hoà``/``hòa`` on the same
              vowel (the three transcriptions of ../shared/corpus/real-vi write ``CỘNG HOÀ``,
              the Quảng Ngãi text layers ``CỘNG HÒA``: a placement variant, not a misreading).

``flexible``  In the spirit of Clausner, Pletschacher and Antonacopoulos (2020), "Flexible
              character accuracy measure for reading-order-independent evaluation", Pattern
              Recognition Letters 131. Truth and OCR are split into lines; greedily, the pair of
              (truth fragment, OCR fragment) whose alignment saves the most edits is matched:
              the shorter is aligned within the longer (best window, edit distance), its
              distance is counted, the window is cut out of the longer and what remains on
              either side goes back to the pool as new fragments. So two columns read as one
              line, one line read as two, or blocks read in another order cost nothing in
              themselves. Matching stops when no pair is similar enough (edit distance at most a
              third of the shorter fragment); then every truth character left is a deletion and
              every OCR character left an insertion (garbage read from stamps, QR codes or
              photos counts in full). Line breaks are not characters; a space at the place where
              a line was cut is not counted.

Pure functions; standard library and rapidfuzz only.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from rapidfuzz import fuzz
from rapidfuzz.distance import Levenshtein

__all__ = ["Score", "Flexible", "normalize", "lines", "plain", "reading_order", "tone_placement", "flexible"]

MAX_RELATIVE_DISTANCE = 1 / 3  # a match may have at most this many edits per character of the shorter fragment
_REFINE = 3  # window start/end moved by up to this many characters around the best Indel window


@dataclass(frozen=True)
class Score:
    errors: int
    chars: int  # characters of the truth

    @property
    def cer(self) -> float:
        if self.chars:
            return self.errors / self.chars
        return 0.0 if not self.errors else float("inf")

    def __add__(self, other: Score) -> Score:
        return Score(self.errors + other.errors, self.chars + other.chars)


@dataclass(frozen=True)
class Flexible(Score):
    """A flexible score and what explains it."""

    matches: list[tuple[str, str, int]] = field(default_factory=list)  # (truth, ocr, distance), distance > 0
    missed: list[str] = field(default_factory=list)  # truth fragments never matched (deletions)
    extra: list[str] = field(default_factory=list)  # OCR fragments never matched (insertions)

    def score(self) -> Score:
        return Score(self.errors, self.chars)


def normalize(text: str) -> str:
    """NFC, whitespace runs (line breaks included) collapsed to one space, ends stripped."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def lines(text: str) -> list[str]:
    """Non-empty lines, each NFC with whitespace runs collapsed."""
    out = []
    for line in unicodedata.normalize("NFC", text).splitlines():
        squashed = " ".join(line.split())
        if squashed:
            out.append(squashed)
    return out


def plain(ocr: str, truth: str) -> Score:
    """Edit distance between the whole texts over the truth's length."""
    a, b = normalize(ocr), normalize(truth)
    return Score(Levenshtein.distance(a, b), len(b))


_TONES = "\u0300\u0301\u0303\u0309\u0323"  # huyền, sắc, ngã, hỏi, nặng (NFD combining marks)
# An open syllable ending in oa / oe / uy (nothing after it but a non-letter): the only place where the two
# conventions differ. Not after q ("quý", "quỳ": the u belongs to qu), not before a final consonant or a
# third vowel ("hoàng", "ngoài", "khuya": every convention puts the tone on the same vowel there).
_OPEN_PAIRS = [re.compile(rf"(?<![qQ\u0300-\u036f])({first})([{_TONES}]?)({second})([{_TONES}]?)"
                          rf"(?![^\W\d_]|[\u0300-\u036f])")
               for first, second in (("[oO]", "[aAeE]"), ("[uU]", "[yY]"))]


def _tone_on_first(m: re.Match[str]) -> str:
    return m[1] + (m[2] or m[4]) + m[3] + (m[4] if m[2] else "")


def tone_placement(text: str) -> str:
    """NFC ``text`` with the tone of every open oa/oe/uy syllable on its first vowel: ``hoà`` → ``hòa``.

    Vietnamese has two placement conventions for these syllables: the traditional one puts the tone on
    the first vowel (``hòa``, ``khỏe``, ``thủy``), the one of the 1980s school reform (often called
    "new style") on the second, the main vowel (``hoà``, ``khoẻ``, ``thuỷ``). Both are correct, fonts
    and keyboards produce both, and a reader sees the same word. The canonical form here is the
    traditional one: it is what the templates of Nghị định 30/2020/NĐ-CP print (``CỘNG HÒA``) and what
    the Quảng Ngãi text layers of ../shared/corpus/real-vi use. Only the position of the tone moves:
    spelling variants (``quý``/``quí``, ``kỹ``/``kĩ``) and real tone errors (``khẩn``/``khân``) stay.
    """
    text = unicodedata.normalize("NFD", text)
    for pattern in _OPEN_PAIRS:
        text = pattern.sub(_tone_on_first, text)
    return unicodedata.normalize("NFC", text)


def reading_order(ocr: str, truth: str) -> Score:
    """Edit distance between the whole pages in the truth's reading order, tone placement folded."""
    a, b = tone_placement(normalize(ocr)), tone_placement(normalize(truth))
    return Score(Levenshtein.distance(a, b), len(b))


def _align(short: str, long: str) -> tuple[int, int, int] | None:
    """Best window ``long[start:end]`` for ``short`` (len(short) <= len(long)): (distance, start, end).

    None when no window is within MAX_RELATIVE_DISTANCE.
    """
    n = len(short)
    limit = int(n * MAX_RELATIVE_DISTANCE)
    at = long.find(short)
    if at >= 0:
        return 0, at, at + n
    if limit == 0:
        return None
    # The best window by Indel similarity (C++), then refined by Levenshtein around it: the
    # Indel-best and Levenshtein-best windows coincide but for a few characters at the ends.
    hint = fuzz.partial_ratio_alignment(short, long, score_cutoff=100.0 * (1 - MAX_RELATIVE_DISTANCE) - 5)
    if hint is None:
        return None
    if len(short) < len(long):
        lo, hi = hint.dest_start, hint.dest_end
    else:
        lo, hi = 0, len(long)
    best: tuple[int, int, int] | None = None
    for start in range(max(0, lo - _REFINE), min(len(long), lo + _REFINE) + 1):
        for end in range(max(start + 1, hi - _REFINE), min(len(long), hi + _REFINE) + 1):
            cutoff = limit if best is None else best[0]
            d = Levenshtein.distance(short, long[start:end], score_cutoff=cutoff)
            if d > cutoff:
                continue
            # ties: the window closest to the fragment's own length
            if best is None or d < best[0] or (d == best[0] and abs(end - start - n) < abs(best[2] - best[1] - n)):
                best = (d, start, end)
    return best


def _pieces(text: str, start: int, end: int) -> list[str]:
    return [p for p in (text[:start].strip(), text[end:].strip()) if p]


def flexible(ocr: str, truth: str) -> Flexible:
    """Reading-order-independent character errors of ``ocr`` against ``truth`` (see module doc)."""
    truth_lines, ocr_lines = lines(truth), lines(ocr)
    chars = sum(len(t) for t in truth_lines)
    pool_t: dict[int, str] = {}
    pool_o: dict[int, str] = {}
    # candidate matches: (truth id, ocr id) -> (gain, distance, truth window, ocr window)
    cands: dict[tuple[int, int], tuple[int, int, tuple[int, int], tuple[int, int]]] = {}
    ids = iter(range(1 << 62))

    def consider(tid: int, oid: int) -> None:
        t, o = pool_t[tid], pool_o[oid]
        if len(t) <= len(o):
            found = _align(t, o)
            if found is not None:
                d, s, e = found
                cands[tid, oid] = (len(t) + (e - s) - d, d, (0, len(t)), (s, e))
        else:
            found = _align(o, t)
            if found is not None:
                d, s, e = found
                cands[tid, oid] = (len(o) + (e - s) - d, d, (s, e), (0, len(o)))

    def add_truth(text: str) -> None:
        tid = next(ids)
        pool_t[tid] = text
        for oid in pool_o:
            consider(tid, oid)

    def add_ocr(text: str) -> None:
        oid = next(ids)
        pool_o[oid] = text
        for tid in pool_t:
            consider(tid, oid)

    for t in truth_lines:
        pool_t[next(ids)] = t
    for o in ocr_lines:
        add_ocr(o)

    errors = 0
    matches: list[tuple[str, str, int]] = []
    while cands:
        # most edits saved first; ties: fewer edits, then the earliest fragments (deterministic)
        (tid, oid), (_, d, (ts, te), (os_, oe)) = max(cands.items(), key=lambda kv: (kv[1][0], -kv[1][1], -kv[0][0], -kv[0][1]))
        t, o = pool_t.pop(tid), pool_o.pop(oid)
        for key in [k for k in cands if k[0] == tid or k[1] == oid]:
            del cands[key]
        errors += d
        if d:
            matches.append((t[ts:te], o[os_:oe], d))
        for piece in _pieces(t, ts, te):
            add_truth(piece)
        for piece in _pieces(o, os_, oe):
            add_ocr(piece)
    missed, extra = list(pool_t.values()), list(pool_o.values())
    errors += sum(len(t) for t in missed) + sum(len(o) for o in extra)
    return Flexible(errors=errors, chars=chars, matches=matches, missed=missed, extra=extra)
