"""Operator flows: reprocess archived dossiers, and the digitization report."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.states import Failed, State

from sohoa.kernel.models import Outcome
from sohoa.kernel.settings import Settings
from sohoa.orchestration.process import dossier_task, outcome_of
from sohoa.services import check as checking
from sohoa.services import report as reporting
from sohoa.services import reprocess as reprocessing
from sohoa.storage import open_store


@flow(name="reprocess", log_prints=False)
def reprocess(dossier_ids: list[str] | None = None, prefix: str | None = None, since: str | None = None,
              until: str | None = None, from_step: Literal["capture", "ocr", "classify", "verify"] | None = None,
              force: bool = False, archive: str | None = None) -> list[Outcome]:
    """Process archived dossiers again from their archived originals, reusing every unchanged step.

    Without ``from_step`` or ``force`` only what changed is recomputed (a new classifier version, new
    settings): a dossier whose steps are all unchanged is left as it is. Operators' decisions carry
    over to the new reading; the earlier manifest is kept in history/.

    Args:
        dossier_ids: Dossier ids (codes) to reprocess.
        prefix: Reprocess every dossier whose id starts with this (e.g. an agency code 000.00.00.H49).
        since: First archiving date (YYYY-MM-DD), inclusive.
        until: Last archiving date (YYYY-MM-DD), inclusive.
        from_step: Recompute this step and the ones after it; earlier steps come from the work store.
        force: Recompute every step (same as from_step=capture).
        archive: Archive store URL; default from SOHOA_ARCHIVE.
    """
    settings = Settings(**({"archive": archive} if archive else {}))
    store = open_store(settings.archive)
    chosen = reprocessing.select(store, dossier_ids, prefix, since, until)
    refresh = reprocessing.refresh_for(from_step, force)
    get_run_logger().info("reprocessing %d dossier(s)%s", len(chosen), f" from {refresh[0]}" if refresh else "")
    with tempfile.TemporaryDirectory(prefix="sohoa-reprocess-") as tmp:
        sources = [str(reprocessing.original(store, m, Path(tmp) / str(i))) for i, m in enumerate(chosen)]
        procedures = [reprocessing.procedure_for(m) for m in chosen]
        futures = [dossier_task.submit(s, archive, p, refresh) for s, p in zip(sources, procedures)]
        return [outcome_of(s, f) for s, f in zip(sources, futures)]


@flow(name="digitization-report", log_prints=False)
def digitization_report(archive: str | None = None, inbox: str | None = None,
                        period: Literal["day", "month", "year"] = "month", since: str | None = None,
                        until: str | None = None) -> list[dict]:
    """Dossiers received, archived, passed / needs review / rejected, pages, median time from drop to
    archive, duplicates and refusals, per agency, station, procedure and period: a table artifact,
    and CSV + JSON objects under reports/ in the archive store.

    Args:
        archive: Archive store URL; default from SOHOA_ARCHIVE.
        inbox: Inbox store URL whose drop outcomes count duplicates and refusals of watched drops.
        period: Group by day, month or year.
        since: First day (YYYY-MM-DD), inclusive.
        until: Last day (YYYY-MM-DD), inclusive.
    """
    settings = Settings(**({"archive": archive} if archive else {}))
    store = open_store(settings.archive)
    rows = reporting.build(store, open_store(inbox) if inbox else None, period, since, until)
    csv_key, json_key = reporting.save(store, rows, period)
    table = [r.model_dump() for r in [*rows, reporting.totals(rows)]]
    create_table_artifact(table, key="digitization-report",
                          description=f"Digitization report by {period} ({store.url_for(csv_key)})")
    get_run_logger().info("report: %d rows -> %s, %s", len(rows), store.url_for(csv_key), store.url_for(json_key))
    return table


@flow(name="archive-check", log_prints=False)
def archive_check(archive: str | None = None, quick: bool = False) -> dict | State:
    """Verify every archived file against its manifest's SHA-256; report orphans, incomplete archives and
    missing originals as a table artifact. The run fails when there is any problem (so a schedule alerts).

    Args:
        archive: Archive store URL; default from SOHOA_ARCHIVE.
        quick: Compare sizes only (no download of every file).
    """
    settings = Settings(**({"archive": archive} if archive else {}))
    store = open_store(settings.archive)
    result = checking.check(store, hashes=not quick)
    rows = [p.model_dump() for p in result.problems] or [{"kind": "none", "dossier_id": "", "key": "", "detail": "no problem"}]
    create_table_artifact(rows, key="archive-check", description=f"{result.dossiers} dossiers, {result.files_checked} files, "
                          f"{result.bytes_checked} bytes checked in {store.url}: {len(result.problems)} problem(s)")
    if not result.ok:  # a Failed state, not an exception: a finding, not a crash (no traceback in the logs)
        return Failed(message=f"{len(result.problems)} problem(s) in {store.url}: "
                      + "; ".join(f"{p.kind} {p.key}" for p in result.problems[:5]))
    return result.model_dump()
