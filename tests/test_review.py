"""Operator decisions on archived dossiers: new revisions, every old value kept, races refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sohoa.domain import revisions
from sohoa.domain.catalog import taxonomy
from sohoa.kernel.models import Document, Manifest, ManifestPage, SourceInfo, Verification
from sohoa.services import review
from tests.archived import put_archived
from tests.s3_fixtures import ready_store

CODES = taxonomy().codes()
DOSSIER = "000.00.00.H49-261127-0042"


def _manifest() -> Manifest:
    pages = [ManifestPage(n=n, sha256="s", width=1, height=1, dpi=300, rotation=0, skew=0.0, blank=False,
                          ocr_confidence=90.0, text=f"page {n}") for n in (1, 2, 3)]
    documents = [Document(type="phieu_tiep_nhan", confidence=0.95, pages=[1]),
                 Document(type="khac", confidence=0.5, pages=[2]),
                 Document(type="giay_chung_sinh", confidence=0.95, pages=[3])]
    return Manifest(dossier_id=DOSSIER, procedure="1.001193", status="needs_review",
                    source=SourceInfo(name="x.pdf", sha256="s", size=1, media_type="application/pdf"),
                    pages=pages, documents=documents, verification=Verification(checks=[]), fields={}, steps={},
                    files={}, created_at="2026-11-27T08:00:00+00:00")


@pytest.fixture(params=["local", "s3"])
def archive(request, tmp_path):
    store, url = ready_store(request, tmp_path, request.param)
    put_archived(store, _manifest())
    return store


def test_a_correction_and_an_approval_make_a_revision_with_the_previous_values():
    at = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    after = review.decide(_manifest(), by="Lan", codes=CODES, types={2: "to_khai_khai_sinh"}, approve=True, now=at)
    assert after.revision == 2 and after.status == "passed"
    corrected, confirmed = after.documents[1], after.documents[0]
    assert corrected.type == "to_khai_khai_sinh"
    assert corrected.review.model_dump() == {"decision": "corrected", "by": "Lan", "at": "2026-12-01T09:30:00+00:00",
                                             "previous_type": "khac"}
    assert confirmed.review.decision == "confirmed" and confirmed.type == "phieu_tiep_nhan"
    [decision] = after.decisions
    assert decision.action == "approve" and decision.by == "Lan"
    changes = {c.field: (c.before, c.after) for c in decision.changes}
    assert changes["documents[2].type"] == ("khac", "to_khai_khai_sinh")
    assert changes["status"] == ("needs_review", "passed")


@pytest.mark.parametrize("kwargs,message", [
    ({"types": {9: "khac"}}, "document 9 does not exist"),
    ({"types": {1: "no_such_type"}}, "not a document type"),
    ({"approve": True, "reject": "x"}, "approved and rejected"),
    ({}, "changes nothing"),
    ({"by": " ", "approve": True}, "operator's name"),
])
def test_decisions_that_cannot_apply_are_refused(kwargs, message):
    with pytest.raises(review.ReviewError, match=message):
        review.decide(_manifest(), **{"by": "Lan", "codes": CODES, **kwargs})


def test_a_rejection_keeps_its_reason():
    after = review.decide(_manifest(), by="Lan", codes=CODES, reject="bản sao không rõ")
    assert after.status == "rejected" and after.decisions[-1].reason == "bản sao không rõ"


@pytest.mark.parametrize("hostile", ["../x", "a/b", "", "..", ".hidden"])
def test_dossier_ids_are_never_paths(archive, hostile):
    with pytest.raises(review.ReviewError, match="not a dossier id"):
        review.load(archive, hostile)


def test_recorded_decisions_keep_every_revision_and_refuse_a_race(archive):
    prefix, before = review.load(archive, DOSSIER)
    first = review.decide(before, by="Lan", codes=CODES, types={2: "to_khai_khai_sinh"})
    review.record(archive, prefix, before, first)
    # a second operator decided on the revision she had loaded, before the first decision landed
    stale = review.decide(before, by="Minh", codes=CODES, approve=True)
    with pytest.raises(review.ReviewError, match="meanwhile"):
        review.record(archive, prefix, before, stale)
    _, current = review.load(archive, DOSSIER)
    assert current.revision == 2 and current.decisions[-1].by == "Lan"
    keys = sorted(info.key.removeprefix(prefix) for info in archive.list(prefix))
    assert keys[:2] == [f"decisions/0002-{first.decisions[-1].id}.json", "history/manifest-0001.json"]
    assert "history/manifest-0002.json" in keys and "manifest.json" in keys
    assert Manifest.model_validate_json(archive.get_bytes(prefix + "history/manifest-0001.json")) == before


def test_an_interrupted_decision_is_completed_by_the_next_attempt(archive):
    prefix, before = review.load(archive, DOSSIER)
    after = review.decide(before, by="Lan", codes=CODES, approve=True)
    archive.put_bytes(f"{prefix}history/manifest-0002.json", after.to_json().encode())  # claimed, then the process died
    again = review.decide(before, by="Lan", codes=CODES, approve=True)
    with pytest.raises(review.ReviewError):
        review.record(archive, prefix, before, again)
    _, current = review.load(archive, DOSSIER)
    assert current.revision == 2 and current.status == "passed"  # the interrupted one, finished


def test_reprocessing_keeps_what_operators_decided():
    reviewed = review.decide(_manifest(), by="Lan", codes=CODES, types={2: "to_khai_khai_sinh"}, approve=True)
    machine = _manifest().model_copy(update={"created_at": "2026-12-02T08:00:00+00:00"})  # the machine's new reading
    kept = revisions.carry_over(reviewed, machine)
    assert [d.type for d in kept.documents] == ["phieu_tiep_nhan", "to_khai_khai_sinh", "giay_chung_sinh"]
    assert [d.review.decision for d in kept.documents] == ["confirmed", "corrected", "confirmed"]
    assert kept.revision == 3 and kept.decisions == reviewed.decisions
    split_differently = machine.model_copy(update={"documents": [
        Document(type="phieu_tiep_nhan", confidence=0.95, pages=[1]), Document(type="khac", confidence=0.5, pages=[2, 3])]})
    kept = revisions.carry_over(reviewed, split_differently)
    assert kept.documents[1].type == "khac" and kept.documents[1].review is None  # other pages: not the same document


def test_a_whole_dossier_decision_covers_every_page_once_with_known_types_and_procedure():
    manifest = _manifest()
    decision = review.whole_decision(manifest, by="Lan", codes=CODES, types={2: "to_khai_khai_sinh"})
    assert [(d.pages, d.type) for d in decision.documents] == [([1], "phieu_tiep_nhan"), ([2], "to_khai_khai_sinh"),
                                                                ([3], "giay_chung_sinh")]
    moved = decision.model_copy(update={"documents": [review.DocumentChoice(pages=[1, 2], type="phieu_tiep_nhan")]})
    assert review.problems_with(moved, manifest, CODES) == ["the documents must cover pages [1, 2, 3] exactly once "
                                                            "(they cover [1, 2])"]
    with pytest.raises(review.ReviewError, match="not in the catalog"):
        review.whole_decision(manifest, by="Lan", codes=CODES, procedure="9.999999", procedures={"1.001193"})
    with pytest.raises(review.ReviewError, match="document 7 does not exist"):
        review.whole_decision(manifest, by="Lan", codes=CODES, types={7: "khac"})
    after = review.apply_decision(manifest, decision, codes=CODES, now=datetime(2026, 12, 1, tzinfo=UTC))
    assert after.status == "passed" and after.documents[1].file is None  # retyped: a new PDF is due
    assert after.documents[1].review.previous_type == "khac"


def test_the_review_artifact_embeds_bounded_thumbnails_and_stores_no_credential(s3_env, s3_store_url, monkeypatch):
    """What the Prefect database keeps of a review: thumbnails as data: URIs, never a presigned link (which
    held the access key in X-Amz-Credential and a signature), each at most THUMB_MAX_BYTES, even of noise
    (the bound lowered here so that noise needs the lower qualities and sizes)."""
    import base64
    import io
    import re

    from PIL import Image

    from sohoa.kernel.models import CaptureResult, PageImage
    from sohoa.kernel.settings import Settings
    from sohoa.orchestration import artifacts
    from sohoa.storage import open_store

    work = open_store(s3_store_url)
    work.ensure_ready()
    monkeypatch.setattr(artifacts, "THUMB_MAX_BYTES", 4096)
    noise = Image.merge("RGB", [Image.effect_noise((620, 877), 120) for _ in range(3)])
    buffer = io.BytesIO()
    noise.save(buffer, "JPEG", quality=95)
    work.put_bytes("pages/p.png", buffer.getvalue())
    capture = CaptureResult(key="c", source=_manifest().source, pages=[
        PageImage(n=n, key="pages/p.png", sha256=f"{n:064x}", media_type="image/jpeg", width=620, height=877, dpi=75,
                  origin="image")
        for n in (1, 2, 3)])
    manifest = _manifest().model_copy(update={"pages": [p.model_copy(update={"ocr_confidence": 5.0}) for p in _manifest().pages]})
    text = artifacts.attention_markdown(manifest, capture, [1, 2, 3], work, Settings())
    images = re.findall(r"!\[page \d\]\(([^)]*)\)", text)
    assert len(images) == 3 and all(uri.startswith("data:image/jpeg;base64,") for uri in images), text[:500]
    for uri in images:
        data = base64.b64decode(uri.split(",", 1)[1])
        assert len(data) <= 4096
        with Image.open(io.BytesIO(data)) as thumb:
            assert thumb.format == "JPEG" and max(thumb.size) <= 2 * artifacts.THUMB_WIDTH
    for secret in (s3_env.access_key, s3_env.secret_key, "X-Amz-Credential", "X-Amz-Signature", "http://", "https://"):
        assert secret not in text
