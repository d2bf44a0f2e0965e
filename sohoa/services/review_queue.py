"""The review queue: archived dossiers that wait for a person, kept in the archive store.

A dossier whose verification says ``needs_review`` is archived as such and queued here
(``reviews/<dossier id>.json``). In a deployment run it also waits in the Prefect UI, its flow
run suspended with a review form, until ``expires_at``; after that, or when it was processed
by ``sohoa run`` (no UI), it waits here only, listed by ``sohoa reviews`` and decided by
``sohoa review`` or by a ``process-dossier`` run given a ``decision``. The entry goes when a
decision approves or rejects the dossier.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field

from sohoa.storage import ObjectNotFound, Store

PREFIX = "reviews/"


class QueuedReview(BaseModel):
    dossier_id: str
    manifest_key: str
    source: str = Field(description="The input as it was given (it is never moved or deleted)")
    procedure: str | None = None
    queued_at: str
    expires_at: str | None = Field(None, description="Until then the dossier also waits in the Prefect UI")
    flow_run_id: str | None = None
    failed_checks: list[str] = Field(default_factory=list, description="id: message, of each failed check")

    def state(self, now: datetime | None = None) -> str:
        if self.flow_run_id and self.expires_at:
            if datetime.fromisoformat(self.expires_at) > (now or datetime.now(UTC)):
                return "in the Prefect UI"
            return "expired in the Prefect UI"
        return "queued"


def key(dossier_id: str) -> str:
    return f"{PREFIX}{dossier_id}.json"


def put(store: Store, entry: QueuedReview) -> None:
    store.put_bytes(key(entry.dossier_id), entry.model_dump_json(indent=2).encode(), content_type="application/json")


def remove(store: Store, dossier_id: str) -> None:
    store.delete(key(dossier_id))


def get(store: Store, dossier_id: str) -> QueuedReview | None:
    try:
        return QueuedReview.model_validate_json(store.get_bytes(key(dossier_id)))
    except ObjectNotFound:
        return None


def pending(store: Store) -> list[QueuedReview]:
    """Every queued dossier, oldest first."""
    entries = [QueuedReview.model_validate_json(store.get_bytes(info.key)) for info in store.list(PREFIX)
               if info.key.endswith(".json") and info.key.count("/") == 1]
    return sorted(entries, key=lambda e: e.queued_at)
