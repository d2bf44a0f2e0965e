"""The peer corpus (OCRmyPDF's own odd files) through ``sohoa run``, in one batch, as a user runs it.

Every file ends as a typed outcome: archived (passed, needs_review or rejected), a duplicate of an
earlier file, or refused for a reason; never an untyped ``failed`` (``processing_failed``), never a
traceback, never a hang. Files with legible text must yield a known word in the archive's words.
The outcome table of a run is kept in docs/corpus.md (``python -m tests.corpus_run``).
"""

from __future__ import annotations

import pytest

from tests.corpus_run import PAGE_TIMEOUT_S, run_batch
from tests.shared_data import shared_folder

pytestmark = pytest.mark.slow
ARCHIVED = {"passed", "needs_review", "rejected"}

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
def batch(tmp_path_factory):
    return run_batch(shared_folder("corpus/ocrmypdf"), tmp_path_factory.mktemp("corpus"))


def test_every_file_has_one_typed_outcome_and_no_traceback(batch):
    outcomes = batch.outcomes
    assert "Traceback" not in batch.stderr, batch.stderr[-3000:]
    assert len(outcomes) == batch.files >= 60  # 60 test files and their licence list
    failed = {n: o.get("reason") for n, o in outcomes.items() if o["status"] == "failed"}
    assert not failed  # nothing in the peer corpus is a failure of the system
    assert {n: o["reason"]["code"] for n, o in outcomes.items() if o["status"] == "refused"} == REFUSED
    assert all(o["status"] in ARCHIVED | {"duplicate", "refused"} for o in outcomes.values())
    assert batch.exit == 3  # some refused, none failed


def test_legible_files_yield_their_text(batch):
    missing = {name: batch.texts.get(name, "")[:80] for name, word in LEGIBLE.items() if word not in batch.texts.get(name, "")}
    assert not missing


def test_blank_files_are_archived_without_text_and_nothing_hangs(batch):
    assert all(batch.outcomes[name]["status"] in ARCHIVED | {"duplicate"} for name in BLANK)
    assert all(batch.texts[name].strip() == "" for name in BLANK)
    # nothing hangs: the batch ended within run_batch's timeout and no page was given up at the page timeout
    # (a dossier's duration_s counts its wait for OCR slots behind the batch's others: no bound on a busy machine)
    timed_out = {n: o["reason"] for n, o in batch.outcomes.items() if (o.get("reason") or {}).get("code") == "page_timeout"}
    assert not timed_out and batch.seconds < PAGE_TIMEOUT_S * 10
