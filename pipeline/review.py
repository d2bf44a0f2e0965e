"""Operator decisions on an archived dossier: confirm or correct document types, set the procedure,
approve or reject, with who decided, when, and every previous value.

A decision makes a new revision of ``manifest.json``. Every revision is kept in
``history/manifest-NNNN.json`` (create-only: of two operators deciding on the same revision at
the same moment, the second is refused, not silently merged) and every decision is appended to
the dossier's log (``decisions/NNNN-<id>.json``) before the manifest is rewritten, so nothing an
operator changes is lost. Confirmed and corrected documents carry a ``review``: they are what ``sohoa train``
learns from.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from pipeline.archive import MANIFEST
from pipeline.keys import sha256_bytes
from pipeline.models import Change, Decision, DocumentReview, Manifest
from storage import ObjectExists, ObjectNotFound, Store

_DOSSIER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,127}$")


class ReviewError(ValueError):
    """A decision that cannot be applied (unknown dossier, type or document; a concurrent decision)."""


def dossier_prefix(dossier_id: str) -> str:
    """``dossiers/<id>/`` for a valid dossier id; ids are codes or content hashes, never paths."""
    if not _DOSSIER_ID.match(dossier_id) or ".." in dossier_id:
        raise ReviewError(f"{dossier_id!r} is not a dossier id")
    return f"dossiers/{dossier_id}/"


def load(store: Store, dossier_id: str) -> tuple[str, Manifest]:
    prefix = dossier_prefix(dossier_id)
    try:
        return prefix, Manifest.model_validate_json(store.get_bytes(prefix + MANIFEST))
    except ObjectNotFound:
        raise ReviewError(f"no archived dossier {dossier_id} in {store.url}") from None


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
    decision = Decision(id=uuid.uuid4().hex[:12], by=by, at=at, action=action, reason=reject, changes=changes)
    return manifest.model_copy(update={
        "documents": documents, "status": status, "procedure": procedure or manifest.procedure,
        "revision": manifest.revision + 1, "decisions": [*manifest.decisions, decision],
    })


def _put_new(store: Store, key: str, data: bytes) -> bool:
    """Write ``data`` at ``key`` unless something is there; True when it is there now with these bytes."""
    try:
        store.put_bytes(key, data, content_type="application/json", metadata={"sha256": sha256_bytes(data)},
                        create_only=True)
        return True
    except ObjectExists:
        return store.get_bytes(key) == data


def record(store: Store, prefix: str, before: Manifest, after: Manifest) -> str:
    """Keep every revision and log the decision, then rewrite the manifest; returns its key.

    The revision's slot in ``history/`` is claimed create-only before anything else: of two
    operators deciding on the same revision, the second is refused (ReviewError) and must reload.
    A decision interrupted after claiming its slot is finished by the next attempt on the dossier.
    """
    old, new = before.to_json().encode(), after.to_json().encode()
    _put_new(store, f"{prefix}history/manifest-{before.revision:04d}.json", old)
    slot = f"{prefix}history/manifest-{after.revision:04d}.json"
    if not _put_new(store, slot, new):
        claimed = Manifest.model_validate_json(store.get_bytes(slot))
        current = Manifest.model_validate_json(store.get_bytes(prefix + MANIFEST))
        if current.revision < claimed.revision:  # that decision was interrupted before the manifest was rewritten
            _promote(store, prefix, claimed)
        raise ReviewError(f"another decision made revision {after.revision} of this dossier meanwhile: reload and decide again")
    _promote(store, prefix, after)
    return prefix + MANIFEST


def _promote(store: Store, prefix: str, manifest: Manifest) -> None:
    decision = manifest.decisions[-1]
    _put_new(store, f"{prefix}decisions/{manifest.revision:04d}-{decision.id}.json", decision.model_dump_json().encode())
    data = manifest.to_json().encode()
    store.put_bytes(prefix + MANIFEST, data, content_type="application/json", metadata={"sha256": sha256_bytes(data)})


def carry_over(previous: Manifest, new: Manifest) -> Manifest:
    """A reprocessed dossier's manifest that keeps what operators decided on the previous one.

    A document of the new reading with exactly the pages of a reviewed one gets that review and,
    when it was corrected, the operator's type: a person's decision outranks the machine's. The
    decision log and the revision count go on.
    """
    reviewed = {tuple(d.pages): d for d in previous.documents if d.review is not None}
    documents = []
    for document in new.documents:
        earlier = reviewed.get(tuple(document.pages))
        if earlier is not None:
            update = {"review": earlier.review}
            if earlier.review.decision == "corrected":
                update["type"] = earlier.type
            document = document.model_copy(update=update)
        documents.append(document)
    return new.model_copy(update={"documents": documents, "decisions": previous.decisions,
                                  "revision": previous.revision + 1})
