"""The peer corpus (OCRmyPDF's own odd files): each is processed with its text, or refused for a reason.

Nothing may crash or hang: every file ends as a typed outcome within its per-page timeout.
The outcome table of a run is kept in docs/corpus.md (``python -m tests.corpus_run``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.corpus_run import PAGE_TIMEOUT_S, run_corpus

pytestmark = pytest.mark.slow
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "ocrmypdf"

REFUSED = {
    "LICENSES-REUSE.toml": "unsupported_type", "README.rst": "unsupported_type", "linn.txt": "unsupported_type",
    "tagged.odt": "unsupported_type", "arabic.hocr": "unsupported_type", "cjk.hocr": "unsupported_type",
    "devanagari.hocr": "unsupported_type", "hello_world_scripts.hocr": "unsupported_type",
    "latin.hocr": "unsupported_type", "multilingual.hocr": "unsupported_type",
    "hugemono.pdf": "too_many_pixels",  # 35000 x 35000 pixels
    "invalid.pdf": "corrupt_file",
}
# files with legible text, and a word each must yield
LEGIBLE = {
    "2400dpi.pdf": "Waterman", "aspect.pdf": "circle", "3small.pdf": "Milafranga", "acroform.pdf": "cromulent", "c02-22.pdf": "TIP-TOED",
    "cardinal.pdf": "LinnSequencer", "ccitt.pdf": "LinnSequencer", "cmyk.pdf": "Multicolor", "crom.png": "cromulent",
    "epson.pdf": "Wikipedia", "formxobject.pdf": "XObject", "francais.pdf": "Portez", "jbig2.pdf": "LinnSequencer",
    "jbig2_baddevicen.pdf": "LinnSequencer", "linn.pdf": "LinnSequencer", "linn.png": "LinnSequencer",
    "masks.pdf": "Wikipedia", "multipage.pdf": "TIP-TOED", "negzero.pdf": "XObject", "poster.pdf": "LinnSequencer",
    "rotated_skew.pdf": "LinnSequencer", "skew.pdf": "LinnSequencer", "typewriter.png": "Waterman",
    "vector.pdf": "Vector",
}
BLANK = {"blank.pdf", "trivial.pdf", "no_contents.pdf"}


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    assert CORPUS.is_dir(), f"peer corpus missing at {CORPUS}"
    return {row.name: row for row in run_corpus(CORPUS, tmp_path_factory.mktemp("corpus"))}


def test_every_corpus_file_has_a_typed_outcome(rows):
    assert len(rows) >= 60  # 60 test files and their licence list
    unexpected = {n: (r.outcome, r.code) for n, r in rows.items() if (r.outcome == "refused") != (n in REFUSED)}
    assert not unexpected
    assert {n: r.code for n, r in rows.items() if r.outcome == "refused"} == REFUSED
    assert all(r.outcome in ("processed", "refused") for r in rows.values())


def test_legible_files_yield_their_text(rows):
    missing = {name: rows[name].text[:80] for name, word in LEGIBLE.items() if word not in rows[name].text}
    assert not missing


def test_blank_files_yield_no_text_and_nothing_hangs(rows):
    assert all(rows[name].words == 0 for name in BLANK)
    assert all(r.seconds < PAGE_TIMEOUT_S * max(r.pages, 1) for r in rows.values())
