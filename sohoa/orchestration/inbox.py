"""Prefect wiring of watched inboxes: the watcher flow and the flow run of one drop.

``watch-inbox`` lists the inbox, and for each drop not in the ledger (sohoa/services/inbox.py)
starts one ``process-drop`` run through the deployment, with the drop's identity (key and
version) as idempotency key: a watcher restarted between starting a run and recording it gets
the same run back, never a second one; a run that ended without moving its drop (crashed before it
started) is submitted again under the next attempt's key. ``process-drop`` downloads the version
its drop recorded, processes it as ``process-dossier`` does, and moves that version out of the
inbox once its archive is written and verified (to ``_sohoa/done/<drop id>/``), or to
``_sohoa/quarantine/<drop id>/`` with a reason when it was refused or failed. A version written
over before it was fetched is reported ``refused`` with ``superseded``; the new one is its own drop.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from uuid import UUID

from prefect import flow, get_run_logger

from sohoa.kernel.models import Outcome
from sohoa.kernel.settings import Settings
from sohoa.orchestration.process import process_one
from sohoa.services import inbox as inboxes
from sohoa.services import runner
from sohoa.services.inbox import Drop, RunState
from sohoa.storage import ObjectChanged, ObjectNotFound, Store, open_store

DROP_DEPLOYMENT = "process-drop/process-drop"


@flow(name="process-drop", log_prints=False, retries=2, retry_delay_seconds=30)
def process_drop(inbox: str, drop: Drop, archive: str | None = None, procedure: str | None = None,
                 review_timeout_s: int | None = None) -> Outcome:
    """Process one dossier dropped in an inbox, then move it out of the inbox.

    Args:
        inbox: Inbox store URL (s3://bucket/prefix or a directory).
        drop: The drop as the watcher found it (station, key, version, files).
        archive: Archive store URL; default from SOHOA_ARCHIVE.
        procedure: Procedure code, when the station knows it.
        review_timeout_s: Seconds a review form waits in the UI (SOHOA_REVIEW_TIMEOUT_S).
    """
    store, log = open_store(inbox), get_run_logger()
    oversized = inboxes.too_large(store, drop, Settings().max_input_bytes)
    if oversized is not None:
        log.warning("%s (%s): %s", drop.key, drop.station, oversized.reason.message)
        return oversized
    with tempfile.TemporaryDirectory(prefix="sohoa-drop-") as tmp:
        try:
            path = inboxes.fetch(store, drop, Path(tmp))
        except (ObjectChanged, ObjectNotFound) as exc:  # this version is gone (written over, or deleted): say so,
            # never answer with another version's result; retrying would not bring it back
            log.warning("%s (%s): %s", drop.key, drop.station, exc)
            return inboxes.gone(store, drop, str(exc))
        outcome, moved = _process(store, drop, path, archive, procedure, review_timeout_s, Path(tmp))
    log.info("%s (%s): %s; moved to %s", drop.key, drop.station, outcome.status, ", ".join(moved) or "-")
    return outcome.model_copy(update={"input": store.url_for(drop.key)})


def _process(store: Store, drop: Drop, path: Path, archive: str | None, procedure: str | None,
             review_timeout_s: int | None, tmp: Path) -> tuple[Outcome, list[str]]:
    """Run the pipeline on the fetched version; it is moved out of the inbox as soon as its archive is written
    (before any review suspends the run), from the downloaded bytes if the station wrote the key again."""
    local, moved = inboxes.local_paths(drop, tmp), []

    def move_out(_archived) -> None:
        moved.extend(inboxes.settle(store, drop, "archived", local=local))

    try:
        outcome = process_one(str(path), archive, procedure, None, review_timeout_s=review_timeout_s,
                              on_archived=move_out, intake=drop.intake())
    except Exception as exc:
        inboxes.fail(store, drop, *runner.failure_reason(exc))
        raise
    return outcome, inboxes.conclude(store, drop, outcome, moved, local)


class DeploymentSubmitter:
    """The watcher's way to start a drop's run: through the deployment, idempotent per drop and attempt."""

    def __init__(self, inbox: str, archive: str | None, procedure: str | None) -> None:
        self.inbox, self.archive, self.procedure = inbox, archive, procedure

    def __call__(self, drop: Drop, attempt: int = 1) -> str:
        from prefect.deployments import run_deployment

        run = run_deployment(DROP_DEPLOYMENT, timeout=0, as_subflow=False, idempotency_key=idempotency_key(drop, attempt),
                             parameters={"inbox": self.inbox, "drop": drop.model_dump(), "archive": self.archive,
                                         "procedure": self.procedure})
        return str(run.id)

    def states(self, flow_run_ids: list[str]) -> dict[str, RunState]:
        """The runs' state types and run counts, 200 ids a request."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        found: dict[str, RunState] = {}
        with get_client(sync_client=True) as client:
            for start in range(0, len(flow_run_ids), 200):
                ids = [UUID(i) for i in flow_run_ids[start:start + 200]]
                for run in client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)),
                                                 limit=len(ids)):
                    found[str(run.id)] = RunState(flow_run_id=str(run.id), run_count=run.run_count,
                                                  state=run.state.type.value if run.state else "UNKNOWN")
        return found


def idempotency_key(drop: Drop, attempt: int = 1) -> str:
    """The first attempt keeps the key runs always had; each later one gets a key of its own (the crashed
    run would come back otherwise)."""
    return f"sohoa-drop-{drop.ident}" + (f"-{attempt}" if attempt > 1 else "")


def submit(inbox: str, archive: str | None, procedure: str | None) -> DeploymentSubmitter:
    return DeploymentSubmitter(inbox, archive, procedure)


@flow(name="watch-inbox", log_prints=False)
def watch_inbox(inbox: str, archive: str | None = None, procedure: str | None = None, poll_s: float = 10.0,
                max_scans: int | None = None) -> dict:
    """Watch an inbox: one ``process-drop`` run per new drop, found by full listings against the ledger.

    Args:
        inbox: Inbox store URL (s3://bucket/prefix or a directory); one top-level prefix per station.
        archive: Archive store URL for the dossiers; default from SOHOA_ARCHIVE.
        procedure: Procedure code for every drop, when all stations scan one procedure.
        poll_s: Seconds between listings.
        max_scans: Stop after this many listings (empty: watch until cancelled).
    """
    store = open_store(inbox)
    store.ensure_ready()
    heartbeat = inboxes.watch(store, submit(inbox, archive, procedure), poll_s=poll_s, max_scans=max_scans,
                              log=get_run_logger())
    return heartbeat.model_dump()
