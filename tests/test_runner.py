"""The Prefect-free runner (sohoa/services/runner.py) end to end, on the fake OCR engine: fast tier.

Each test forbids Tesseract (the library does not load, the program fails), so what passes here
is the runner's own decisions and the steps after OCR: classification, verification, archiving,
quarantine, review, and the shared ``results/`` cache that the Prefect flows use too.
"""

from __future__ import annotations

import errno
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sohoa_dev import synth

from sohoa.kernel.errors import OcrError
from sohoa.kernel.settings import Settings
from sohoa.services import review_queue, runner
from sohoa.services.claims import Claim, ClaimSettings
from sohoa.services.plan import STEPS, StepPlan
from sohoa.services.results import RESULTS_PREFIX, WorkStoreCache, decode, encode
from sohoa.services.review import DocumentChoice, ReviewDecision
from sohoa.storage import StorageError, StorageUnavailable, open_store
from tests.fake_engine import FakeEngine, forbid_tesseract, installed
from tests.test_claims import until


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


def claims_left(tmp_path: Path) -> list[Claim]:
    """Every claim generation the runs took on their inputs' content, oldest first."""
    store = open_store(tmp_path / "archive")
    return [Claim.model_validate_json(store.get_bytes(info.key)) for info in store.list("claims/")]


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


def test_the_same_input_again_is_a_duplicate_and_a_refresh_reuses_the_steps_before_it(dossier, tmp_path, no_tesseract,
                                                                                    monkeypatch):
    source, truth = dossier
    with installed(FakeEngine.from_truth(truth)) as fake:
        first = runner.run_dossier(str(source), context(tmp_path))
        again = runner.run_dossier(str(source), context(tmp_path))
        refreshed = runner.run_dossier(str(source), context(tmp_path), refresh=["classify"])
        late = admitted_before_the_archive(monkeypatch, lambda: runner.run_dossier(str(source), context(tmp_path)))
    assert late.status == "duplicate" and late.dossier_id == first.dossier_id
    assert again.status == "duplicate" and again.dossier_id == first.dossier_id
    assert (again.archived_status, again.pages, again.documents) == ("passed", first.pages, first.documents)
    assert refreshed.status == "passed" and refreshed.dossier_id == first.dossier_id
    assert len(fake.reads) == len(truth.pages)  # OCR ran once: the refresh of classify reused it
    # the first run, the refresh and the late one held the content's claim, a generation each; the duplicate did not
    assert [(c.generation, c.released) for c in claims_left(tmp_path)] == [(1, True), (2, True), (3, True)]


def admitted_before_the_archive(monkeypatch: pytest.MonkeyPatch, run):
    """``run`` admitted while another run still worked on the same content (its archive not there yet), and that
    run released its claim just before this one took it: once the claim is held, the archive is looked up again."""
    from sohoa.steps import archive

    found, lookups = archive.find_archived, []

    def not_yet(*args):
        lookups.append(args)
        return None if len(lookups) == 1 else found(*args)

    monkeypatch.setattr(archive, "find_archived", not_yet)
    outcome = run()
    assert len(lookups) == 2
    return outcome


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


def quarantine_fails(monkeypatch: pytest.MonkeyPatch, fail: Callable[[str], None]) -> None:
    """Every write under ``quarantine/`` of the local archive fails as ``fail(key)`` raises (a full disk, a store gone)."""
    from sohoa.storage import LocalStore

    for name in ("put_bytes", "put_file"):
        write = getattr(LocalStore, name)

        def failing(self, key, *args, _write=write, **kwargs):
            if key.startswith("quarantine/"):
                fail(key)
            return _write(self, key, *args, **kwargs)

        monkeypatch.setattr(LocalStore, name, failing)


def no_space_left(key: str) -> None:
    """As LocalStore fails on a full disk: one line, the OSError kept as the context."""
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError:
        raise StorageError(f"cannot write temp file for {key}: No space left on device") from None


def unavailable(key: str) -> None:
    raise StorageUnavailable("s3://a/b did not answer within 9 s", "s3://a/b")


@pytest.mark.parametrize(("fail", "code", "said"), [
    (no_space_left, "no_space", "cannot write temp file for quarantine/"),
    (unavailable, "storage_unavailable", "s3://a/b did not answer within 9 s")])
def test_a_refusal_that_cannot_be_quarantined_is_a_failure_that_names_the_refusal(tmp_path, no_tesseract, monkeypatch,
                                                                                 fail, code, said):
    empty = tmp_path / "scan.pdf"
    empty.write_bytes(b"")
    quarantine_fails(monkeypatch, fail)
    outcome = runner.run_dossier(str(empty), context(tmp_path))
    assert (outcome.status, outcome.reason.code) == ("failed", code), outcome
    assert outcome.reason.message.startswith(f"refused (empty_file: the file is empty (0 bytes)) but not quarantined: {said}")
    assert outcome.duration_s is not None and empty.exists()


def test_quarantine_copies_are_bounded_by_the_input_size_limit(dossier, tmp_path, no_tesseract, monkeypatch):
    from sohoa.services import quarantine

    limits, keep = [], quarantine.quarantine

    def recorded(*args, max_copy_bytes, **kwargs):
        limits.append(max_copy_bytes)
        return keep(*args, max_copy_bytes=max_copy_bytes, **kwargs)

    monkeypatch.setattr(quarantine, "quarantine", recorded)
    monkeypatch.setattr(runner, "quarantine", recorded)
    empty = tmp_path / "scan.pdf"
    empty.write_bytes(b"")
    settings = Settings(archive=str(tmp_path / "archive"), work=str(tmp_path / "work"), max_input_bytes=5_000_000)
    assert runner.run_dossier(str(empty), runner.RunContext(settings=settings)).status == "refused"
    with installed(FakeEngine.from_truth(dossier[1], errors={1: OcrError("page_timeout", "slow")})), \
            pytest.raises(OcrError):
        runner.run_dossier(str(dossier[0]), runner.RunContext(settings=settings))
    assert limits == [5_000_000, 5_000_000]  # the refusal's copy and the failure's


def test_an_engine_failure_is_quarantined_with_its_code_and_raised(dossier, tmp_path, no_tesseract):
    source, truth = dossier
    timeout = OcrError("page_timeout", "page 2 took longer than 300 s")
    with installed(FakeEngine.from_truth(truth, errors={2: timeout})):
        with pytest.raises(OcrError):
            runner.run_dossier(str(source), context(tmp_path))
    reasons = list((tmp_path / "archive" / "quarantine").glob("*/reason.json"))
    assert [json.loads(r.read_text())["code"] for r in reasons] == ["page_timeout"]
    # a failure lets its claim go from a thread (the store may be what failed)
    assert until(lambda: [c.released for c in claims_left(tmp_path)] == [True])


def test_an_input_refused_during_capture_releases_its_claim(dossier, tmp_path, no_tesseract, monkeypatch):
    from sohoa.kernel.errors import InputRefused
    from sohoa.steps import capture

    def refused(*_args, **_kwargs):
        raise InputRefused("corrupt_file", "page 3 cannot be decoded")

    monkeypatch.setattr(capture, "capture", refused)
    with installed(FakeEngine()):  # the engines warm up while capture runs
        outcome = runner.run_dossier(str(dossier[0]), context(tmp_path))
    assert outcome.status == "refused" and outcome.reason.code == "corrupt_file"
    assert [c.released for c in claims_left(tmp_path)] == [True]


class SlowEngine(FakeEngine):
    """Takes its time over each page: two runs started together overlap for the whole OCR."""

    def read(self, page, settings, timeout_s):
        time.sleep(0.15)
        return super().read(page, settings, timeout_s)


def test_the_same_content_run_twice_at_once_is_read_once_and_the_second_is_its_duplicate(dossier, tmp_path, no_tesseract,
                                                                                        caplog):
    source, truth = dossier
    quick = ClaimSettings(renew_s=0.2, expiry_s=30, poll_s=0.05)  # a loaded machine may stall a write for seconds
    outcomes: list = []

    def run() -> None:
        outcomes.append(runner.run_dossier(str(source), context(tmp_path, claims=quick)))

    with installed(SlowEngine.from_truth(truth)) as fake, caplog.at_level(logging.INFO, logger="sohoa.run"):
        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    first, second = sorted(outcomes, key=lambda outcome: outcome.status != "passed")
    assert (first.status, second.status) == ("passed", "duplicate"), outcomes
    assert second.dossier_id == first.dossier_id and second.manifest == first.manifest
    assert (second.archived_status, second.pages, second.documents) == ("passed", first.pages, first.documents)
    assert len(fake.reads) == len(truth.pages)  # one OCR run
    assert "which is processing the same content" in caplog.text
    assert "took over" not in caplog.text  # the second waited for the release: its holder never looked gone
    assert [(c.generation, c.released) for c in claims_left(tmp_path)] == [(1, True), (2, True)]


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
