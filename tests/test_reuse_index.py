"""Reuse lookups: a person's earlier archived documents found by ID number, on disk and on the S3 server,
from an index that the manifests alone rebuild; `sohoa find`; verification's reuse note."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sohoa_dev import synth

from sohoa.kernel.models import DossierFields
from sohoa.cli import main
from sohoa.domain import index as reuse_index
from sohoa.domain import layout
from sohoa.kernel.models import CaptureResult, Manifest, OcrPage, OcrResult, PageImage, SourceInfo
from sohoa.kernel.settings import Settings
from sohoa.steps import classify, verify
from sohoa.steps.archive import build_manifest
from sohoa.storage import open_store
from tests.s3_fixtures import ready_store

SOHOA = str(Path(sys.executable).parent / "sohoa")
PERSON = "022194405370"  # the applicant of the birth dossier, seed 3
OTHER_PERSON = "001098792307"  # the applicant of the household-business dossier, seed 3
BIRTH, BUSINESS, STRANGER = "000.00.00.H49-260413-4773", "000.00.00.H49-260418-4651", "000.00.00.H49-260422-8008"


def _texts(procedure: str, seed: int, code: str | None = None) -> list[str]:
    """A generated dossier's page texts; the household business one handed in by PERSON, under ``code``."""
    truth, _ = synth.build_layout(procedure, seed)
    texts = [p.text for p in truth.pages]
    if procedure == "1.001612":
        texts = [t.replace(OTHER_PERSON, PERSON) for t in texts]
    return [t.replace(truth.dossier_code, code) for t in texts] if code else texts


def _read(texts: list[str]):
    """Capture, OCR and classification results for page texts, as the steps would give them."""
    sha = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    pages = [PageImage(n=n, key=f"p{n}", sha256=f"{sha}{n}", media_type="image/jpeg", width=2480, height=3508, dpi=300,
                       origin="native") for n in range(1, len(texts) + 1)]
    capture = CaptureResult(key="c", source=SourceInfo(name="d.pdf", sha256=sha, size=1, media_type="application/pdf"),
                            pages=pages)
    ocr = OcrResult(key="o", engine="t", languages="vie", words_key="w", searchable_pdf_key="s", pages=[
        OcrPage(n=n, text=t, word_count=len(t.split()), confidence=90.0, text_layer_key="l", duration_s=0)
        for n, t in enumerate(texts, start=1)])
    return capture, ocr, classify.classify(ocr, capture, Settings(), "k")


def _archived(texts: list[str], created_at: str, year: str = "2026") -> tuple[str, Manifest]:
    """The manifest the archive step writes for these pages, and its key in the layout (sohoa/domain/layout.py)."""
    capture, ocr, classified = _read(texts)
    code = classified.fields.dossier_code
    prefix = f"dossiers/000.00.00.H49/{classified.procedure}/{year}/{code}/"
    documents = [d.model_copy(update={"file": f"{prefix}documents/{i:02d}-{d.type}.pdf"})
                 for i, d in enumerate(classified.documents, 1)]
    verified = verify.verify(capture, ocr, classified, Settings(), "v")
    manifest = build_manifest(code, capture, ocr, classified.model_copy(update={"documents": documents}), verified, {}, {})
    return prefix + "manifest.json", manifest.model_copy(update={"created_at": created_at})


@pytest.fixture(scope="module")
def manifests() -> dict[str, tuple[str, Manifest]]:
    return {BIRTH: _archived(_texts("1.001193", 3), "2026-04-13T08:00:00+00:00"),
            BUSINESS: _archived(_texts("1.001612", 3), "2026-04-18T09:00:00+00:00"),
            STRANGER: _archived(_texts("1.001193", 5), "2026-04-22T10:00:00+00:00", year="2025")}


def _put(store, key: str, manifest: Manifest) -> None:
    store.put_bytes(key, manifest.to_json().encode(), content_type="application/json")


@pytest.fixture(params=["local", "s3"])
def archive(request, tmp_path, monkeypatch, manifests):
    """An archive with three dossiers, recorded one by one as the flow would (index built before the first)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("SOHOA_WORK", str(tmp_path / "work"))
    monkeypatch.delenv("SOHOA_INDEX", raising=False)
    store, url = ready_store(request, tmp_path, request.param)
    settings = Settings(archive=url)
    reuse_index.index_for(settings, store).close()
    for key, manifest in manifests.values():
        _put(store, key, manifest)
        assert reuse_index.record_archived(settings, manifest, key)
    key, birth = manifests[BIRTH]
    old = birth.model_copy(update={"revision": 1})
    for elsewhere in (key.replace("manifest.json", "history/manifest-0001.json"), "quarantine/t-1/input/manifest.json",
                      "_sohoa/done/counter-1/manifest.json", "reviews/x/manifest.json", "index/x/manifest.json"):
        _put(store, elsewhere, old)  # not dossiers' current manifests: never indexed
    return settings, store


def _all(index) -> list[reuse_index.Hit]:
    return index.find(since="1900-01-01")


def test_find_by_cccd_returns_the_persons_earlier_documents_with_links(archive):
    settings, store = archive
    assert reuse_index.default_index_path(settings).is_file()
    with reuse_index.index_for(settings, store) as index:
        hits = index.find(cccd=PERSON)
        assert [(h.dossier_id, h.document, h.type) for h in hits] == [
            (BUSINESS, 1, "phieu_tiep_nhan"), (BUSINESS, 2, "giay_de_nghi_dang_ky_hkd"), (BUSINESS, 3, "can_cuoc"),
            (BUSINESS, 4, "hop_dong"), (BIRTH, 1, "phieu_tiep_nhan"), (BIRTH, 2, "to_khai_khai_sinh"),
            (BIRTH, 3, "giay_chung_sinh"), (BIRTH, 4, "can_cuoc")]
        card = hits[2]
        assert card.link == store.url_for(card.file_key) and card.file_key.startswith("dossiers/000.00.00.H49/1.001612/2026/")
        assert card.pages == [3] and card.cccd == PERSON and PERSON in card.document_cccd
        assert card.procedure == "1.001612" and card.dossier_code == BUSINESS and card.received_at.startswith("2026-04-18")
        assert [h.dossier_id for h in index.find(cccd=PERSON, doc_type="can_cuoc")] == [BUSINESS, BIRTH]
        assert [h.dossier_id for h in index.find(cccd=PERSON, procedure="1.001193", doc_type="can_cuoc")] == [BIRTH]
        assert {h.dossier_id for h in index.find(cccd=PERSON, since="2026-04-14")} == {BUSINESS}
        assert {h.dossier_id for h in index.find(cccd=PERSON, until="2026-04-13")} == {BIRTH}
        assert {h.dossier_id for h in index.find(dossier_code=STRANGER)} == {STRANGER}  # filed under another year too
        assert index.find(cccd="022999999999") == []


def test_rebuilding_from_the_manifests_alone_gives_the_incremental_index(archive, tmp_path, manifests):
    settings, store = archive
    with reuse_index.index_for(settings, store) as index:
        incremental = _all(index)
    assert reuse_index.rebuild(store, tmp_path / "rebuilt.sqlite") == 3  # history, quarantine, _sohoa, reviews skipped
    with reuse_index.open_index(tmp_path / "rebuilt.sqlite") as rebuilt:
        assert _all(rebuilt) == incremental and len(incremental) == sum(len(m.documents) for _, m in manifests.values())
        assert rebuilt.store_url == store.url
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_new_revision_replaces_the_dossiers_rows_and_an_older_one_does_not(archive, manifests):
    settings, store = archive
    key, birth = manifests[BIRTH]
    documents = [d.model_copy(update={"type": "khac"}) if i == 2 else d for i, d in enumerate(birth.documents)]
    revised = birth.model_copy(update={"revision": 2, "documents": documents, "status": "passed"})
    _put(store, key, revised)
    assert reuse_index.record_archived(settings, revised, key)
    assert reuse_index.record_archived(settings, revised, key)  # again: idempotent
    assert not reuse_index.record_archived(settings, birth, key)  # a late writer of revision 1 changes nothing
    with reuse_index.index_for(settings, store) as index:
        rows = index.find(dossier_code=BIRTH)
        assert [(h.document, h.type, h.revision) for h in rows] == [
            (1, "phieu_tiep_nhan", 2), (2, "to_khai_khai_sinh", 2), (3, "khac", 2), (4, "can_cuoc", 2)]
        incremental = _all(index)
    with reuse_index.index_for(settings, store, rebuild_first=True) as index:
        assert _all(index) == incremental


def test_a_manifest_key_holds_one_dossier_whatever_it_held_before(archive, manifests):
    settings, store = archive
    key, _ = manifests[BIRTH]
    elsewhere, stranger = manifests[STRANGER]
    _put(store, key, stranger)  # another dossier's manifest now at this key (a copy in the new layout)
    assert reuse_index.record_archived(settings, stranger, key)
    with reuse_index.index_for(settings, store) as index:
        assert {h.dossier_id for h in index.find(cccd=PERSON)} == {BUSINESS}
        assert {h.manifest_key for h in index.find(dossier_code=STRANGER)} == {key, elsewhere}  # both copies exist
        incremental = _all(index)
    with reuse_index.index_for(settings, store, rebuild_first=True) as index:
        assert _all(index) == incremental


def test_only_current_manifests_of_the_layout_are_indexed(tmp_path):
    store = open_store(str(tmp_path / "decoys"))
    store.ensure_ready()
    current = "dossiers/000.00.00.H49/1.001193/2026/000.00.00.H49-260413-4773/manifest.json"
    decoys = ["dossiers/000.00.00.H49/1.001193/2026/000.00.00.H49-260413-4773/history/manifest-0001.json",
              "_sohoa/done/counter-1/folder/manifest.json", "quarantine/20260413-ab/input/manifest.json",
              "reviews/000.00.00.H49-260413-4773/manifest.json", "manifest.json",
              "dossiers/000.00.00.H49/1.001193/2026/x/manifest.json.tmp"]
    for key in [current, *decoys]:
        store.put_bytes(key, b"{}")
    assert layout.manifest_keys(store) == [current]


def test_sohoa_find_prints_the_persons_dossiers_and_links(archive, capsys):
    settings, store = archive
    reuse_index.default_index_path(settings).unlink()  # missing: built from the manifests on first use
    assert main(["find", "--cccd", PERSON, "--archive", store.url]) == 0
    out, err = capsys.readouterr()
    assert BIRTH in out and BUSINESS in out and STRANGER not in out
    assert store.url_for(f"dossiers/000.00.00.H49/1.001612/2026/{BUSINESS}/documents/03-can_cuoc.pdf") in out
    assert "8 document(s) in 2 dossier(s)" in err
    assert main(["find", "--cccd", PERSON, "--type", "giay_chung_sinh", "--json", "--rebuild", "--archive", store.url]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["dossier_id"] == BIRTH and json.loads(line)["link"] == store.url_for(json.loads(line)["file_key"])


@pytest.mark.parametrize("argv,message", [
    (["--cccd", "02219440537"], "not 12 digits"),
    (["--cccd", "999194405370"], "province code 999"),
    (["--since", "2026-13-01"], "not a date"),
    (["--type", "passport"], "not a document type"),
    ([], "at least one of"),
])
def test_bad_criteria_are_refused_with_a_message(argv, message, capsys):
    assert main(["find", *argv]) == 2
    assert message in capsys.readouterr().err


def test_an_invalid_cccd_and_an_unusable_store_give_one_line_not_a_traceback(tmp_path):
    done = subprocess.run([SOHOA, "find", "--cccd", "0221944053"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "is not an ID number" in done.stderr and "Traceback" not in done.stderr
    (tmp_path / "file").write_text("not a directory")
    done = subprocess.run([SOHOA, "find", "--cccd", "123456789", "--archive", str(tmp_path / "file" / "archive")],
                          capture_output=True, text=True, timeout=60)  # an old 9-digit CMND number is a valid query
    assert done.returncode == 4 and "cannot create local store root" in done.stderr and "Traceback" not in done.stderr


def test_the_index_of_another_archive_or_schema_is_rebuilt(tmp_path, manifests, monkeypatch):
    monkeypatch.setenv("SOHOA_INDEX", str(tmp_path / "shared.sqlite"))
    first, second = open_store(tmp_path / "a"), open_store(tmp_path / "b")
    for store in (first, second):
        store.ensure_ready()
    _put(second, *manifests[STRANGER])
    with reuse_index.index_for(Settings(archive=first.url), first) as index:
        assert _all(index) == [] and index.path == tmp_path / "shared.sqlite"
    with reuse_index.index_for(Settings(archive=second.url), second) as index:
        assert {h.dossier_id for h in _all(index)} == {STRANGER}
    with reuse_index.open_index(tmp_path / "shared.sqlite") as index:
        index._db.execute("PRAGMA user_version = 99")
    assert not reuse_index.usable(tmp_path / "shared.sqlite", second.url)
    with reuse_index.index_for(Settings(archive=second.url), second) as index:
        assert len(_all(index)) == len(manifests[STRANGER][1].documents)


def test_default_index_path(tmp_path, monkeypatch):
    monkeypatch.delenv("SOHOA_INDEX", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    local = reuse_index.default_index_path(Settings(archive=str(tmp_path / "archive")))
    assert local == tmp_path / "archive" / ".sohoa-index" / "reuse.sqlite"
    remote = reuse_index.default_index_path(Settings(archive="s3://bucket/pre"))
    assert remote.parent == tmp_path / "cache" / "sohoa" and remote.name.startswith("index-")
    assert remote != reuse_index.default_index_path(Settings(archive="s3://bucket/other"))
    assert reuse_index.default_index_path(Settings(archive="s3://b", index=str(tmp_path / "i.sqlite"))) == tmp_path / "i.sqlite"


def test_verification_notes_the_required_documents_already_archived_for_the_person(archive):
    settings, store = archive
    capture, ocr, classified = _read(_texts("1.001612", 3, code="000.00.00.H49-261201-0007"))
    earlier = reuse_index.earlier_documents(settings, classified, capture.source.sha256, store)
    plain = verify.verify(capture, ocr, classified, Settings(), "v")
    noted = verify.verify(capture, ocr, classified, Settings(), "v", earlier=earlier)
    assert "reuse.existing_document" not in {c.id for c in plain.verification.checks}
    [check] = [c for c in noted.verification.checks if c.id == "reuse.existing_document"]
    assert check.severity == "info" and check.ok and noted.status == plain.status
    assert check.values["earlier"] == [BUSINESS, BIRTH]  # newest first; the stranger's dossier is not there
    assert check.values["documents"] == [f"{BUSINESS}:2:giay_de_nghi_dang_ky_hkd", f"{BUSINESS}:3:can_cuoc",
                                         f"{BIRTH}:4:can_cuoc"]
    assert check.values["cccd"] == [PERSON, "031190326314"] and check.values["required"] == ["giay_de_nghi_dang_ky_hkd", "can_cuoc"]
    assert BIRTH in check.message and BIRTH in check.message_vi and check.message != check.message_vi
    assert verify.with_reuse(plain, classified, Settings(), earlier) == noted
    assert verify.with_reuse(plain, classified, Settings(), None) == plain


def test_the_dossier_itself_is_not_its_own_earlier_document(archive):
    settings, store = archive
    capture, ocr, classified = _read(_texts("1.001612", 3))  # the business dossier read again
    earlier = reuse_index.earlier_documents(settings, classified, capture.source.sha256, store)
    assert {h.dossier_id for h in earlier} == {BIRTH}
    check = verify.check_reuse(classified, Settings(), earlier)
    assert check.values["earlier"] == [BIRTH]
    unread_code = classified.model_copy(update={"fields": classified.fields.model_copy(update={"dossier_code": None})})
    again = reuse_index.earlier_documents(settings, unread_code, capture.source.sha256, store)
    assert {h.dossier_id for h in again} == {BIRTH}  # the same input, its code unread this time: still itself
    nobody = verify.check_reuse(classified.model_copy(update={"fields": DossierFields()}), Settings(), earlier)
    assert nobody.values["earlier"] == [] and "no valid ID number" in nobody.message


def test_only_documents_that_name_the_person_count_as_theirs():
    _, _, classified = _read(_texts("1.001612", 3, code="000.00.00.H49-261201-0007"))
    hit = dict(dossier_id=BIRTH, document=4, type="can_cuoc", pages=[5], procedure="1.001193", status="passed",
               revision=1, archived_at="2026-04-13", received_at="2026-04-13", manifest_key="k", file_key=None, link=None,
               source_sha256="s", cccd=PERSON)
    theirs = reuse_index.Hit(**hit, document_cccd=[PERSON])
    someone_elses = reuse_index.Hit(**{**hit, "dossier_id": STRANGER}, document_cccd=["022302635685"])
    not_required = reuse_index.Hit(**{**hit, "dossier_id": BUSINESS, "type": "hop_dong"}, document_cccd=[PERSON])
    check = verify.check_reuse(classified, Settings(), [theirs, someone_elses, not_required])
    assert check.values["earlier"] == [BIRTH] and check.values["documents"] == [f"{BIRTH}:4:can_cuoc"]
    none = verify.check_reuse(classified, Settings(), [])
    assert none.ok and none.values["earlier"] == [] and "no required component" in none.message


def test_recording_into_an_index_not_built_yet_leaves_it_to_the_first_lookup(tmp_path, manifests, monkeypatch):
    monkeypatch.delenv("SOHOA_INDEX", raising=False)
    store = open_store(tmp_path / "archive")
    store.ensure_ready()
    settings = Settings(archive=store.url)
    for key, manifest in manifests.values():
        _put(store, key, manifest)
    key, birth = manifests[BIRTH]
    assert not reuse_index.record_archived(settings, birth, key)  # else the index would hold this dossier alone
    assert not reuse_index.default_index_path(settings).exists()
    with reuse_index.index_for(settings) as index:
        assert {h.dossier_id for h in _all(index)} == {BIRTH, BUSINESS, STRANGER}
