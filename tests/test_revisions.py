"""Revisions of a manifest (sohoa/domain/revisions.py): the keys of history and of the decision
log, what re-archiving keeps, and that the archive step and the review service meet only there."""

from __future__ import annotations

import pytest

from sohoa.domain import revisions
from sohoa.kernel.keys import sha256_bytes
from sohoa.kernel.models import Decision, Document, DocumentReview, Intake, Manifest, StepRecord
from tests.test_review import _manifest
from tests.test_storage_probes import cycle_in, graph_of, imports_of, names_imported_by
from tests.s3_fixtures import ready_store

PREFIX = "dossiers/unknown/1.001193/2026/000.00.00.H49-261127-0042/"


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    store, url = ready_store(request, tmp_path, request.param)
    return store


def _reviewed(manifest: Manifest) -> Manifest:
    """``manifest`` after an operator corrected document 2 (revision 2, one decision)."""
    documents = [d.model_copy() for d in manifest.documents]
    documents[1] = documents[1].model_copy(update={"type": "to_khai_khai_sinh", "review": DocumentReview(
        decision="corrected", by="Lan", at="2026-11-28T08:00:00+00:00", previous_type="khac")})
    decision = Decision(id="d1", by="Lan", at="2026-11-28T08:00:00+00:00", action="correct", changes=[])
    return manifest.model_copy(update={"documents": documents, "revision": 2, "decisions": [decision]})


def test_keys_of_history_and_the_decision_log():
    assert revisions.history_key(PREFIX, 3) == PREFIX + "history/manifest-0003.json"
    assert revisions.decision_key(PREFIX, 12, "ab12") == PREFIX + "decisions/0012-ab12.json"
    assert revisions.MANIFEST == "manifest.json"


def test_the_manifest_is_written_with_its_own_sha256(store):
    manifest = _manifest()
    revisions.write_manifest(store, PREFIX, manifest)
    data = store.get_bytes(PREFIX + "manifest.json")
    assert data == manifest.to_json().encode()
    assert store.stat(PREFIX + "manifest.json").metadata == {"sha256": sha256_bytes(data)}


def test_a_first_archive_supersedes_nothing(store):
    manifest = _manifest()
    assert revisions.supersede(store, PREFIX, manifest) is manifest
    assert list(store.list(PREFIX)) == []


def test_the_same_content_again_is_the_current_manifest(store):
    current = _manifest().model_copy(update={"steps": {"ocr": StepRecord(version="1", cache_key="k", cached=False, duration_s=3.0)}})
    revisions.write_manifest(store, PREFIX, current)
    again = current.model_copy(update={"created_at": "2026-12-01T08:00:00+00:00", "steps": {
        "ocr": StepRecord(version="1", cache_key="k", duration_s=0.1, cached=True)}})
    assert revisions.same_content(current, again)
    assert revisions.supersede(store, PREFIX, again) == current
    assert [i.key for i in store.list(PREFIX + "history/")] == []


def test_a_new_reading_keeps_the_replaced_revision_and_what_operators_decided(store):
    reviewed = _reviewed(_manifest())
    revisions.write_manifest(store, PREFIX, reviewed)
    reading = _manifest().model_copy(update={"created_at": "2026-12-02T08:00:00+00:00",
                                             "intake": Intake(station="desk-1", key="desk-1/x.pdf")})
    new = revisions.supersede(store, PREFIX, reading)
    kept = store.get_bytes(PREFIX + "history/manifest-0002.json")
    assert kept == reviewed.to_json().encode()
    assert store.stat(PREFIX + "history/manifest-0002.json").metadata == {"sha256": sha256_bytes(kept)}
    assert new.revision == 3 and new.decisions == reviewed.decisions and new.intake == reading.intake
    assert [d.type for d in new.documents] == ["phieu_tiep_nhan", "to_khai_khai_sinh", "giay_chung_sinh"]
    assert revisions.supersede(store, PREFIX, reading) == new  # again: the history copy is not rewritten
    assert store.get_bytes(PREFIX + "history/manifest-0002.json") == kept


def test_carry_over_keeps_the_intake_of_the_first_drop():
    first = _manifest().model_copy(update={"intake": Intake(station="desk-1", key="desk-1/x.pdf")})
    assert revisions.carry_over(first, _manifest()).intake == first.intake
    split = _manifest().model_copy(update={"documents": [Document(type="khac", confidence=0.5, pages=[1, 2, 3])]})
    assert revisions.carry_over(_reviewed(_manifest()), split).documents[0].review is None


def test_a_history_slot_goes_to_one_manifest(store):
    reviewed = _reviewed(_manifest())
    assert revisions.keep(store, PREFIX, reviewed)
    assert revisions.keep(store, PREFIX, reviewed)  # the same bytes again: still ours (a retry)
    rival = reviewed.model_copy(update={"status": "rejected"})
    assert not revisions.keep(store, PREFIX, rival)
    assert revisions.kept(store, PREFIX, 2) == reviewed


def test_the_decision_that_made_a_revision_is_logged_once(store):
    reviewed = _reviewed(_manifest())
    for _ in range(2):
        revisions.log_decision(store, PREFIX, reviewed)
    assert [i.key for i in store.list(PREFIX)] == [PREFIX + "decisions/0002-d1.json"]
    assert Decision.model_validate_json(store.get_bytes(PREFIX + "decisions/0002-d1.json")) == reviewed.decisions[0]


# ------------------------------------------------------------------------------------ module graph
UPPER = ("sohoa.services", "sohoa.orchestration", "sohoa.cli", "prefect")


def test_the_archive_step_and_the_review_service_meet_in_revisions():
    archive, review = imports_of("sohoa.steps.archive"), imports_of("sohoa.services.review")
    assert "sohoa.domain.revisions" in archive and "sohoa.domain.revisions" in review
    assert not [m for m in archive if m.startswith("sohoa.services")]
    assert cycle_in(graph_of({"sohoa.steps.archive", "sohoa.services.review", "sohoa.domain.revisions"})) is None


def _reachable(module: str) -> set[str]:
    """Every sohoa module that importing ``module`` can import, directly or through others."""
    seen, todo = set(), [module]
    while todo:
        for name in imports_of(todo.pop()) - seen:
            seen.add(name)
            todo.append(name)
    return seen


@pytest.mark.parametrize("module", ["sohoa.domain.revisions", "sohoa.steps.archive"])
def test_steps_and_domain_modules_reach_nothing_above_them(module):
    above = UPPER + (("sohoa.steps",) if module.startswith("sohoa.domain") else ())
    imported = {name for m in {module} | _reachable(module) for name in names_imported_by(m)}
    assert not [name for name in imported if name.startswith(above)]
