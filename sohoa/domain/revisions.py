"""Revisions of a dossier's manifest: where earlier ones are kept, how decisions are logged, what
carries over when a dossier is archived again.

    <prefix>manifest.json                       the current revision (the archive's commit marker)
    <prefix>history/manifest-NNNN.json          every revision it replaced, by revision number
    <prefix>decisions/NNNN-<decision id>.json   the operator decision that made revision NNNN

Both ways a manifest gets a new revision meet here: the archive step writing a dossier again
(:func:`supersede`) and an operator's decision (``sohoa.services.review``). Neither needs the
other: they share these keys and rules, so nothing an operator decided is lost to a re-archive,
and no revision is overwritten by either.
"""

from __future__ import annotations

from datetime import datetime

from sohoa.domain.layout import MANIFEST
from sohoa.kernel.keys import sha256_bytes
from sohoa.kernel.models import Manifest
from sohoa.storage import ObjectExists, ObjectNotFound, Store

__all__ = [
    "DECISIONS", "HISTORY", "MANIFEST", "carry_over", "decision_key", "history_key", "keep", "kept",
    "log_decision", "put_new", "same_content", "supersede", "write_manifest",
]

HISTORY = "history/"
DECISIONS = "decisions/"
_JSON = "application/json"


def history_key(prefix: str, revision: int) -> str:
    """Where revision ``revision`` of the dossier at ``prefix`` is kept once replaced (or claimed)."""
    return f"{prefix}{HISTORY}manifest-{revision:04d}.json"


def decision_key(prefix: str, revision: int, decision_id: str) -> str:
    """The decision log entry of the decision that made revision ``revision``."""
    return f"{prefix}{DECISIONS}{revision:04d}-{decision_id}.json"


def _json_meta(data: bytes) -> dict[str, str]:
    return {"sha256": sha256_bytes(data)}


def write_manifest(store: Store, prefix: str, manifest: Manifest) -> None:
    """The commit marker, with its own SHA-256 as metadata, protected like the files it lists."""
    protection = manifest.protection
    retain = protection and protection.source == "per_object" and protection.mode and protection.retain_until
    if retain:
        for ref in manifest.files.values():  # before the commit marker, files a review added too
            store.protect(ref.key, protection.mode, datetime.fromisoformat(protection.retain_until))
    data = manifest.to_json().encode()
    store.put_bytes(prefix + MANIFEST, data, content_type=_JSON, metadata=_json_meta(data))
    if retain:
        store.protect(prefix + MANIFEST, protection.mode, datetime.fromisoformat(protection.retain_until))


def supersede(store: Store, prefix: str, manifest: Manifest) -> Manifest:
    """The manifest to write over the dossier's current one, which ``manifest`` (a new reading) replaces.

    Nothing is lost when a dossier is archived again: a different current manifest is kept in
    ``history/`` and the operators' decisions on it carry over (:func:`carry_over`). The same
    content again gives the current manifest back, so re-archiving is idempotent.
    """
    try:
        raw = store.get_bytes(prefix + MANIFEST)
        previous = Manifest.model_validate_json(raw)
    except (ObjectNotFound, ValueError):
        return manifest
    if same_content(previous, manifest):
        return previous
    _keep_replaced(store, prefix, previous.revision, raw)
    return carry_over(previous, manifest)


def _keep_replaced(store: Store, prefix: str, revision: int, data: bytes) -> None:
    """Keep the replaced manifest's bytes in history unless it is there (an earlier schema stays as written);
    a re-archive claims no slot (decisions do, :func:`keep`)."""
    key = history_key(prefix, revision)
    if not store.exists(key):
        store.put_bytes(key, data, content_type=_JSON, metadata=_json_meta(data))


def same_content(a: Manifest, b: Manifest) -> bool:
    """Whether two manifests hold the same, ignoring how and when a run wrote them (times, durations, cache hits)."""
    return _content(a) == _content(b)


def _content(manifest: Manifest) -> Manifest:
    steps = {name: step.model_copy(update={"cached": False, "duration_s": 0.0}) for name, step in manifest.steps.items()}
    return manifest.model_copy(update={"created_at": "", "protection": None, "steps": steps})


def carry_over(previous: Manifest, new: Manifest) -> Manifest:
    """A reprocessed dossier's manifest that keeps what operators decided on the previous one.

    A document of the new reading with exactly the pages of a reviewed one gets that review and,
    when it was corrected, the operator's type: a person's decision outranks the machine's. The
    decision log and the revision count go on, and so does where the dossier came in (``intake``).
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
                                  "revision": previous.revision + 1, "intake": new.intake or previous.intake})


def put_new(store: Store, key: str, data: bytes) -> bool:
    """Write ``data`` at ``key`` unless something is there; True when it is there now with these bytes."""
    try:
        store.put_bytes(key, data, content_type=_JSON, metadata=_json_meta(data), create_only=True)
        return True
    except ObjectExists:
        return store.get_bytes(key) == data


def keep(store: Store, prefix: str, manifest: Manifest) -> bool:
    """Claim ``manifest``'s slot in history, create-only; False when another manifest holds it.

    Of two decisions on the same revision the slot goes to one: the other sees False and is refused.
    """
    return put_new(store, history_key(prefix, manifest.revision), _as_written(store, prefix, manifest))


def _as_written(store: Store, prefix: str, manifest: Manifest) -> bytes:
    """The bytes of ``manifest`` as the dossier's current manifest holds them, when it is that one (a manifest of
    an earlier schema is kept as it was written, not as it reads today); else its current-schema JSON."""
    try:
        raw = store.get_bytes(prefix + MANIFEST)
        current = Manifest.model_validate_json(raw)
    except (ObjectNotFound, ValueError):
        return manifest.to_json().encode()
    return raw if current.revision == manifest.revision and current == manifest else manifest.to_json().encode()


def kept(store: Store, prefix: str, revision: int) -> Manifest:
    """The manifest kept in history for ``revision``; ObjectNotFound when none is."""
    return Manifest.model_validate_json(store.get_bytes(history_key(prefix, revision)))


def log_decision(store: Store, prefix: str, manifest: Manifest) -> None:
    """Append the decision that made ``manifest`` (its last one) to the dossier's decision log; idempotent."""
    decision = manifest.decisions[-1]
    put_new(store, decision_key(prefix, manifest.revision, decision.id), decision.model_dump_json().encode())
