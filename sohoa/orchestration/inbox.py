"""Prefect wiring of watched inboxes: the watcher flow and the flow run of one drop.

``watch-inbox`` lists the inbox, and for each drop not in the ledger (sohoa/services/inbox.py)
starts one ``process-drop`` run through the deployment, with the drop's identity (key and
version) as idempotency key: a watcher restarted between starting a run and recording it gets
the same run back, never a second one. ``process-drop`` downloads the drop, processes it as
``process-dossier`` does, and moves it out of the inbox once its archive is written and
verified (to ``_sohoa/done/``), or to ``_sohoa/quarantine/`` with a reason when it was refused or
failed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from prefect import flow, get_run_logger

from sohoa.kernel.models import Outcome
from sohoa.orchestration.process import process_one
from sohoa.services import inbox as inboxes
from sohoa.services import runner
from sohoa.services.inbox import Drop
from sohoa.storage import open_store

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
    moved: list[str] = []

    def move_out(_archived) -> None:
        moved.extend(inboxes.settle(store, drop, "archived"))

    with tempfile.TemporaryDirectory(prefix="sohoa-drop-") as tmp:
        path = inboxes.fetch(store, drop, Path(tmp))
        try:
            outcome = process_one(str(path), archive, procedure, None, review_timeout_s=review_timeout_s,
                                  on_archived=move_out, intake=drop.intake())
        except Exception as exc:
            inboxes.fail(store, drop, *runner.failure_reason(exc))
            raise
    moved = inboxes.conclude(store, drop, outcome, moved)
    log.info("%s (%s): %s; moved to %s", drop.key, drop.station, outcome.status, ", ".join(moved) or "-")
    return outcome.model_copy(update={"input": store.url_for(drop.key)})


def submit(inbox: str, archive: str | None, procedure: str | None):
    """The watcher's way to start a drop's run: through the deployment, idempotent per drop."""
    from prefect.deployments import run_deployment

    def start(drop: Drop) -> str:
        run = run_deployment(DROP_DEPLOYMENT, timeout=0, as_subflow=False, idempotency_key=f"sohoa-drop-{drop.ident}",
                             parameters={"inbox": inbox, "drop": drop.model_dump(), "archive": archive,
                                         "procedure": procedure})
        return str(run.id)

    return start


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
