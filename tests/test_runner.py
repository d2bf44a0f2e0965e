"""The Prefect-free runner (sohoa/services/runner.py) end to end, on the fake OCR engine: fast tier.

Each test forbids Tesseract (the library does not load, the program fails), so what passes here
is the runner's own decisions and the steps after OCR: classification, verification, archiving,
quarantine, review, and the shared ``results/`` cache that the Prefect flows use too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sohoa_dev import synth

from sohoa.kernel.errors import OcrError
from sohoa.kernel.settings import Settings
from sohoa.services import review_queue, runner
from sohoa.services.plan import STEPS, StepPlan
from sohoa.services.results import RESULTS_PREFIX, WorkStoreCache, decode, encode
from sohoa.services.review import DocumentChoice, ReviewDecision
from sohoa.storage import open_store
from tests.fake_engine import FakeEngine, forbid_tesseract, installed


@pytest.fixture
def no_tesseract(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    marker = forbid_tesseract(monkeypatch, tmp_path)
    yield marker
    assert not marker.exists(), "tesseract was started"


@pytest.fixture(scope="module")
def dossier(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("runner") / "khai-sinh"
    return out, synth.make_dossier(out, procedure="1.001193", seed=3, fmt="png-dir")


def context(tmp_path: Path, **options) -> runner.RunContext:
    return runner.RunContext(settings=Settings(archive=str(tmp_path / "archive"), work=str(tmp_path / "work")), **options)


def test_a_dossier_runs_from_input_to_archive_without_prefect_or_tesseract(dossier, tmp_path, no_tesseract):
    source, truth = dossier
    with installed(FakeEngine.from_truth(truth)) as fake:
        outcome = runner.run_dossier(str(source), context(tmp_path))
    assert outcome.status == "passed", outcome
    assert outcome.dossier_id == truth.dossier_code
    assert outcome.documents == list(dict.fromkeys(p.doc_type for p in truth.pages if p.starts_document and p.doc_type != "blank"))
    assert sorted(n for n, _ in fake.reads) == [p.n for p in truth.pages]
    manifest = json.loads(Path(outcome.manifest).read_text(encoding="utf-8"))
    assert manifest["status"] == "passed" and set(manifest["steps"]) == set(STEPS)


def test_the_same_input_again_is_a_duplicate_and_a_refresh_reuses_the_steps_before_it(dossier, tmp_path, no_tesseract):
    source, truth = dossier
    with installed(FakeEngine.from_truth(truth)) as fake:
        first = runner.run_dossier(str(source), context(tmp_path))
        again = runner.run_dossier(str(source), context(tmp_path))
        refreshed = runner.run_dossier(str(source), context(tmp_path), refresh=["classify"])
    assert again.status == "duplicate" and again.dossier_id == first.dossier_id
    assert refreshed.status == "passed" and refreshed.dossier_id == first.dossier_id
    assert len(fake.reads) == len(truth.pages)  # OCR ran once: the refresh of classify reused it


def test_an_unknown_step_to_refresh_is_refused_before_anything_runs(dossier, tmp_path):
    with pytest.raises(ValueError, match="unknown steps in refresh"):
        runner.run_dossier(str(dossier[0]), context(tmp_path), refresh=["ocrr"])
    assert not (tmp_path / "archive").exists()


def test_a_bad_input_is_refused_into_quarantine(tmp_path, no_tesseract):
    empty = tmp_path / "scan.pdf"
    empty.write_bytes(b"")
    outcome = runner.run_dossier(str(empty), context(tmp_path))
    assert outcome.status == "refused" and outcome.reason.code == "empty_file"
    reason = json.loads(Path(outcome.quarantine).read_text(encoding="utf-8"))
    assert reason["code"] == "empty_file" and reason["step"] == "capture"


def test_an_engine_failure_is_quarantined_with_its_code_and_raised(dossier, tmp_path, no_tesseract):
    source, truth = dossier
    timeout = OcrError("page_timeout", "page 2 took longer than 300 s")
    with installed(FakeEngine.from_truth(truth, errors={2: timeout})):
        with pytest.raises(OcrError):
            runner.run_dossier(str(source), context(tmp_path))
    reasons = list((tmp_path / "archive" / "quarantine").glob("*/reason.json"))
    assert [json.loads(r.read_text())["code"] for r in reasons] == ["page_timeout"]


def test_a_dossier_that_needs_review_is_queued_then_settled_by_a_decision(tmp_path, no_tesseract):
    source = tmp_path / "thieu-giay-to"
    truth = synth.make_dossier(source, procedure="1.001193", seed=4, fmt="png-dir",
                               include=["phieu_tiep_nhan", "to_khai_khai_sinh"])  # no birth certificate, no ID card
    with installed(FakeEngine.from_truth(truth)):
        first = runner.run_dossier(str(source), context(tmp_path))
        assert first.status == "needs_review", first
        store = open_store(tmp_path / "archive")
        assert review_queue.get(store, first.dossier_id) is not None
        documents = [DocumentChoice(pages=[p.n for p in truth.pages if p.doc_type == kind], type=kind)
                     for kind in ("phieu_tiep_nhan", "to_khai_khai_sinh")]
        decision = ReviewDecision(operator="Lê Thu Hằng", action="reject", documents=documents, reason="thiếu giấy chứng sinh")
        settled = runner.run_dossier(str(source), context(tmp_path, decision=decision))
    assert settled.status == "rejected" and settled.dossier_id == first.dossier_id
    manifest = json.loads(Path(settled.manifest).read_text(encoding="utf-8"))
    assert manifest["revision"] == 2


def test_read_stops_after_ocr_and_keeps_its_results_where_the_flows_find_them(dossier, tmp_path, no_tesseract):
    source, truth = dossier
    settings = Settings(archive=str(tmp_path / "archive"), work=str(tmp_path / "work"))
    with installed(FakeEngine.from_truth(truth)) as fake:
        read = runner.read(source, settings)
        again = runner.read(source, settings)
    assert set(read.done) == {"capture", "ocr"} and again.done["ocr"] == read.done["ocr"]
    assert len(fake.reads) == len(truth.pages)
    kept = sorted(p.name for p in (tmp_path / "work" / RESULTS_PREFIX).iterdir())
    assert kept == sorted([read.keys["capture"].key, read.keys["ocr"].key])
    assert not (tmp_path / "work" / "eval").exists()


def test_a_kept_result_is_a_prefect_result_record(dossier, tmp_path, no_tesseract):
    """The runner and the Prefect flows share one cache: Prefect reads back what the runner wrote."""
    from prefect.results import ResultRecord

    source, truth = dossier
    settings = Settings(archive=str(tmp_path / "archive"), work=str(tmp_path / "work"))
    with installed(FakeEngine.from_truth(truth)):
        read = runner.read(source, settings)
    key = read.keys["ocr"].key
    data = (tmp_path / "work" / RESULTS_PREFIX / key).read_bytes()
    assert ResultRecord.deserialize(data).result == read.done["ocr"]
    assert decode(encode(key, read.done["ocr"]), (type(read.done["ocr"]),)) == read.done["ocr"]


def test_an_unreadable_kept_result_is_computed_again(tmp_path):
    cache = WorkStoreCache(open_store(tmp_path))
    (tmp_path / RESULTS_PREFIX).mkdir()
    (tmp_path / RESULTS_PREFIX / "k").write_bytes(b"{not json")
    value, reused = cache.run("verify", "k", False, (StepPlan,), lambda: StepPlan(version="1", key="k"))
    assert not reused and value.key == "k"
    again, reused = cache.run("verify", "k", False, (StepPlan,), lambda: pytest.fail("computed twice"))
    assert reused and again == value


def test_inputs_with_the_same_content_wait_for_their_first_copy():
    assert runner.first_copies(["a", "b", "a", None, None, "b"]) == [None, None, 0, None, None, 1]
