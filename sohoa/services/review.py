"""Operator decisions on an archived dossier: confirm or correct document types, set the procedure,
approve or reject, with who decided, when, and every previous value.

A decision makes a new revision of ``manifest.json`` (keys and rules: sohoa/domain/revisions.py). Every revision is kept in
``history/manifest-NNNN.json`` (create-only: of two operators deciding on the same revision at
the same moment, the second is refused, not silently merged) and every decision is appended to
the dossier's log (``decisions/NNNN-<id>.json``) before the manifest is rewritten, so nothing an
operator changes is lost. Confirmed and corrected documents carry a ``review``: they are what ``sohoa train``
learns from.
"""

from __future__ import annotations

import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from sohoa.domain import index as reuse_index
from sohoa.domain import layout, revisions
from sohoa.domain.catalog import taxonomy
from sohoa.domain.layout import MANIFEST
from sohoa.kernel.errors import UsageError
from sohoa.kernel.models import (
    CaptureResult,
    Change,
    ClassifyResult,
    Decision,
    Document,
    DocumentReview,
    Manifest,
    OcrResult,
    Verification,
)
from sohoa.kernel.settings import Settings
from sohoa.services import review_queue
from sohoa.steps import archive as archiving  # per-document PDFs of re-split documents
from sohoa.steps import classify as classifying
from sohoa.steps import verify as verifying
from sohoa.storage import ObjectNotFound, Store, materialize, open_store


class ReviewError(UsageError):
    """A decision that cannot be applied (unknown dossier, type or document; a concurrent decision)."""


def load(store: Store, dossier_id: str) -> tuple[str, Manifest]:
    """(prefix, current manifest) of an archived dossier; ids are codes or content hashes, never paths."""
    try:
        prefix = layout.locate(store, dossier_id)
    except layout.LayoutError:
        raise ReviewError(f"{dossier_id!r} is not a dossier id") from None
    if prefix is None:
        raise ReviewError(f"no archived dossier {dossier_id} in {store.url}")
    try:
        return prefix, Manifest.model_validate_json(store.get_bytes(prefix + MANIFEST))
    except ObjectNotFound:
        raise ReviewError(f"dossier {dossier_id} has no manifest: its archive is incomplete (run sohoa check)") from None


def decide(manifest: Manifest, *, by: str, codes: set[str], types: dict[int, str] | None = None,
           approve: bool = False, reject: str | None = None, procedure: str | None = None,
           now: datetime | None = None) -> Manifest:
    """The manifest after one decision (a new revision); ReviewError when it cannot apply.

    ``types`` maps document numbers (1-based, as listed in the manifest) to corrected types;
    ``approve`` confirms every other document's type and passes the dossier; ``reject`` gives
    the reason the dossier is rejected.
    """
    if not by.strip():
        raise ReviewError("a decision needs the operator's name (--by)")
    if approve and reject:
        raise ReviewError("a dossier cannot be approved and rejected at once")
    at = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    documents = [d.model_copy(deep=True) for d in manifest.documents]
    changes: list[Change] = []
    for number, new_type in sorted((types or {}).items()):
        if not 1 <= number <= len(documents):
            raise ReviewError(f"document {number} does not exist (the dossier has {len(documents)})")
        if new_type not in codes:
            raise ReviewError(f"{new_type!r} is not a document type of the taxonomy")
        document = documents[number - 1]
        changes.append(Change(field=f"documents[{number}].type", before=document.type, after=new_type))
        document.review = DocumentReview(decision="corrected", by=by, at=at, previous_type=document.type)
        document.type = new_type
    if approve:
        for number, document in enumerate(documents, start=1):
            if document.review is None:
                document.review = DocumentReview(decision="confirmed", by=by, at=at)
                changes.append(Change(field=f"documents[{number}].review", before=None, after="confirmed"))
    status = "rejected" if reject else "passed" if approve else manifest.status
    if status != manifest.status:
        changes.append(Change(field="status", before=manifest.status, after=status))
    if procedure and procedure != manifest.procedure:
        changes.append(Change(field="procedure", before=manifest.procedure, after=procedure))
    if not changes:
        raise ReviewError("the decision changes nothing")
    action = "reject" if reject else "approve" if approve else "correct" if types else "set_procedure"
    return _revision(manifest, Decision(id=uuid.uuid4().hex[:12], by=by, at=at, action=action, reason=reject, changes=changes),
                     documents=documents, status=status, procedure=procedure or manifest.procedure)


def _revision(manifest: Manifest, decision: Decision, **update) -> Manifest:
    return manifest.model_copy(update={**update, "revision": manifest.revision + 1,
                                       "decisions": [*manifest.decisions, decision]})


class DocumentChoice(BaseModel):
    pages: list[int] = Field(description="The dossier's page numbers of the document, in order")
    type: str = Field(description="Taxonomy code")


class ReviewDecision(BaseModel):
    """An operator's decision on a whole dossier (the review form in the Prefect UI, or a flow parameter)."""

    operator: str = Field(description="Who decides: recorded with the decision")
    action: Literal["approve", "reject"] = "approve"
    documents: list[DocumentChoice] = Field(default_factory=list,
                                            description="The documents as they really are; empty: as the machine read them")
    procedure: str | None = None
    reason: str | None = Field(None, description="Why the dossier is rejected")


def whole_decision(manifest: Manifest, *, by: str, codes: set[str], types: dict[int, str] | None = None,
                   reject: str | None = None, procedure: str | None = None,
                   procedures: set[str] | None = None) -> ReviewDecision:
    """The decision on the whole dossier that ``sohoa review``'s options say (types by document number)."""
    types = types or {}
    unknown = sorted(n for n in types if not 1 <= n <= len(manifest.documents))
    if unknown:
        raise ReviewError(f"document {unknown[0]} does not exist (the dossier has {len(manifest.documents)})")
    decision = ReviewDecision(operator=by, action="reject" if reject else "approve", reason=reject, procedure=procedure,
                              documents=[DocumentChoice(pages=d.pages, type=types.get(n, d.type))
                                         for n, d in enumerate(manifest.documents, start=1)])
    problems = problems_with(decision, manifest, codes, procedures)
    if problems:
        raise ReviewError("; ".join(problems))
    return decision


def problems_with(decision: ReviewDecision, manifest: Manifest, codes: set[str],
                  procedures: set[str] | None = None) -> list[str]:
    """What makes a decision impossible to apply (shown to the operator, who decides again)."""
    problems = []
    if decision.procedure and procedures is not None and decision.procedure not in procedures:
        problems.append(f"procedure {decision.procedure!r} is not in the catalog ({', '.join(sorted(procedures))})")
    if not decision.operator.strip():
        problems.append("the operator's name is missing")
    if decision.action == "reject" and not (decision.reason or "").strip():
        problems.append("a rejection needs a reason")
    if decision.documents:
        content = sorted(p.n for p in manifest.pages if not p.blank)
        chosen = sorted(n for d in decision.documents for n in d.pages)
        if chosen != content:
            problems.append(f"the documents must cover pages {content} exactly once (they cover {chosen})")
        problems += [f"{d.type!r} is not a document type" for d in decision.documents if d.type not in codes]
        problems += [f"document {i} has no pages" for i, d in enumerate(decision.documents, 1) if not d.pages]
    return problems


def apply_decision(manifest: Manifest, decision: ReviewDecision, *, codes: set[str], verification: Verification | None = None,
                   now: datetime | None = None) -> Manifest:
    """The manifest after an operator's decision on the whole dossier (types and boundaries, procedure,
    approval or rejection); ``verification`` replaces the checks when the caller re-verified."""
    problems = problems_with(decision, manifest, codes)
    if problems:
        raise ReviewError("; ".join(problems))
    at = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    by = decision.operator.strip()
    before = {tuple(d.pages): d for d in manifest.documents}
    choices = decision.documents or [DocumentChoice(pages=d.pages, type=d.type) for d in manifest.documents]
    documents = []
    for choice in choices:
        earlier = before.get(tuple(choice.pages))
        if earlier is not None and earlier.type == choice.type:
            review = DocumentReview(decision="confirmed", by=by, at=at) if decision.action == "approve" else earlier.review
            documents.append(earlier.model_copy(update={"review": review}))
        else:
            review = DocumentReview(decision="corrected", by=by, at=at, previous_type=earlier.type if earlier else None)
            documents.append(Document(type=choice.type, confidence=1.0, pages=choice.pages, review=review,
                                      fields=earlier.fields if earlier else {}))
    status = "passed" if decision.action == "approve" else "rejected"
    changes = []
    summary = [f"{d.type}:{','.join(map(str, d.pages))}" for d in manifest.documents]
    if [f"{d.type}:{','.join(map(str, d.pages))}" for d in documents] != summary:
        changes.append(Change(field="documents", before=summary, after=[f"{d.type}:{','.join(map(str, d.pages))}" for d in documents]))
    if status != manifest.status:
        changes.append(Change(field="status", before=manifest.status, after=status))
    procedure = decision.procedure or manifest.procedure
    if procedure != manifest.procedure:
        changes.append(Change(field="procedure", before=manifest.procedure, after=procedure))
    update: dict = {"documents": documents, "status": status, "procedure": procedure}
    if verification is not None:
        failed = [c.id for c in verification.checks if not c.ok]
        was = [c.id for c in manifest.verification.checks if not c.ok]
        if failed != was:
            changes.append(Change(field="verification.failed", before=was, after=failed))
        update["verification"] = verification
    record = Decision(id=uuid.uuid4().hex[:12], by=by, at=at, action=decision.action, reason=decision.reason, changes=changes)
    return _revision(manifest, record, **update)


def record(store: Store, prefix: str, before: Manifest, after: Manifest) -> str:
    """Keep every revision and log the decision, then rewrite the manifest; returns its key.

    The revision's slot in ``history/`` is claimed create-only before anything else: of two
    operators deciding on the same revision, the second is refused (ReviewError) and must reload.
    A decision interrupted after claiming its slot is finished by the next attempt on the dossier.
    """
    revisions.keep(store, prefix, before)
    if not revisions.keep(store, prefix, after):
        _finish_interrupted(store, prefix, after.revision)
        raise ReviewError(f"another decision made revision {after.revision} of this dossier meanwhile: reload and decide again")
    _promote(store, prefix, after)
    return prefix + MANIFEST


def _finish_interrupted(store: Store, prefix: str, revision: int) -> None:
    """Promote the revision that holds the slot if its decision died before the manifest was rewritten."""
    claimed = revisions.kept(store, prefix, revision)
    current = Manifest.model_validate_json(store.get_bytes(prefix + MANIFEST))
    if current.revision < claimed.revision:
        _promote(store, prefix, claimed)


def _promote(store: Store, prefix: str, manifest: Manifest) -> None:
    revisions.log_decision(store, prefix, manifest)
    revisions.write_manifest(store, prefix, manifest)
    reuse_index.record_archived(Settings(archive=store.url), manifest, prefix + MANIFEST)


def settle(dossier_id: str, decision: ReviewDecision, capture: CaptureResult, ocr: OcrResult, classified: ClassifyResult,
           settings: Settings) -> Manifest:
    """Apply a decision on the whole dossier to its archive: the documents as the operator set them are
    read for their fields and verified again, documents whose pages or type changed get new PDFs,
    the manifest a new revision, and the dossier leaves the review queue. ReviewError when it cannot apply."""
    store, work = open_store(settings.archive), open_store(settings.work)
    prefix, before = load(store, dossier_id)
    codes = taxonomy(settings.taxonomy).codes()
    corrected = apply_decision(before, decision, codes=codes)  # checks the decision; documents as set
    reclassified = classifying.with_documents(classified, corrected.documents, decision.procedure, ocr, settings)
    verified = verifying.verify(capture, ocr, reclassified, settings, key="review")
    verified = verifying.with_reuse(verified, reclassified, settings,
                                    reuse_index.earlier_documents(settings, reclassified, capture.source.sha256, store))
    after = apply_decision(before, decision, codes=codes, verification=verified.verification,
                           now=datetime.fromisoformat(corrected.decisions[-1].at))
    documents = [d.model_copy(update={"fields": r.fields}) for d, r in zip(after.documents, reclassified.documents)]
    if any(d.file is None for d in documents):
        with tempfile.TemporaryDirectory(prefix="sohoa-review-") as tmp:
            pdf = materialize(work, ocr.searchable_pdf_key, Path(tmp) / "searchable.pdf")
            files = dict(after.files)
            documents = archiving.write_documents(store, prefix, after.dossier_id, pdf, documents, files, Path(tmp),
                                                  revision=after.revision)
            after = after.model_copy(update={"files": files})
    after = after.model_copy(update={"documents": documents})
    record(store, prefix, before, after)
    review_queue.remove(store, dossier_id)
    return after
