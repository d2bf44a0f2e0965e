"""Operator flows: reprocess archived dossiers, and the digitization report."""

from __future__ import annotations

import tempfile
from logging import Logger, LoggerAdapter
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.states import Failed, State

from sohoa.domain.index import Unreadable
from sohoa.kernel.models import Manifest, Outcome
from sohoa.kernel.settings import Settings
from sohoa.orchestration.process import dossier_task, outcome_of
from sohoa.services import check as checking
from sohoa.services import report as reporting
from sohoa.services import reprocess as reprocessing
from sohoa.services.quarantine import failed
from sohoa.storage import Store, open_store


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
    skipped: list[Unreadable] = []
    chosen = reprocessing.select(store, dossier_ids, prefix, since, until, skipped=skipped)
    _log_skipped(skipped)
    refresh = reprocessing.refresh_for(from_step, force)
    get_run_logger().info("reprocessing %d dossier(s)%s", len(chosen), f" from {refresh[0]}" if refresh else "")
    with tempfile.TemporaryDirectory(prefix="sohoa-reprocess-") as tmp:
        sources = originals(store, chosen, Path(tmp), get_run_logger())
        futures = {i: dossier_task.submit(s, archive, reprocessing.procedure_for(m), refresh)
                   for i, (m, s) in enumerate(zip(chosen, sources)) if isinstance(s, str)}
        return [outcome_of(s, futures[i]) if isinstance(s, str) else s for i, s in enumerate(sources)]


def originals(store: Store, chosen: list[Manifest], folder: Path, log: Logger | LoggerAdapter) -> list[str | Outcome]:
    """Each dossier's verified original (its path), or the ``failed`` outcome (tampered_original) of one whose
    archived bytes changed: every original is fetched before any dossier runs, so one tampered original must
    not stop the others. Nothing is written for a tampered one; ``sohoa check`` lists it."""
    got: list[str | Outcome] = []
    for i, manifest in enumerate(chosen):
        try:
            got.append(str(reprocessing.original(store, manifest, folder / str(i))))
        except reprocessing.TamperedOriginal as exc:
            log.error("%s", exc.message)
            got.append(failed(manifest.source.name, exc).model_copy(update={"dossier_id": manifest.dossier_id}))
    return got


def _log_skipped(skipped: list[Unreadable], shown: int = 5) -> None:
    """One warning on the run's log naming the archived files left out because they cannot be read. Each was
    also logged by ``sohoa.reuse`` as it was skipped, which reaches the run's log only where Prefect takes the
    ``sohoa`` loggers (the sohoa worker); this line is there either way, and short however many there are."""
    if skipped:
        more = f" and {len(skipped) - shown} more" if len(skipped) > shown else ""
        get_run_logger().warning("left out %d archived file(s) that cannot be read: %s%s (sohoa check says what is wrong)",
                                 len(skipped), ", ".join(u.key for u in skipped[:shown]), more)


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
    skipped: list[Unreadable] = []
    rows = reporting.build(store, open_store(inbox) if inbox else None, period, since, until, skipped=skipped)
    _log_skipped(skipped)
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
