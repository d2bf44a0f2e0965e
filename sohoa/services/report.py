"""The digitization report, the figure provinces are ranked on: per agency, station, procedure and
period, how many dossiers came in and what became of them.

Read from the stores alone: archived manifests (status, pages, procedure, intake), the inbox's
drop outcomes (duplicates, refusals, failures leave no archive) and the archive's quarantine
(refusals of inputs given directly). The agency is the first part of the dossier code
(``000.00.00.H49``); the time from drop to archive is the manifest's first writing minus the
time the inbox stored the drop.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel

from sohoa.domain import index as reuse_index
from sohoa.domain import layout
from sohoa.domain.index import Unreadable
from sohoa.kernel.models import Manifest
from sohoa.services import inbox as inboxes
from sohoa.services.quarantine import QuarantineReason
from sohoa.storage import Store

Period = Literal["day", "month", "year"]
UNKNOWN = "-"


class ReportRow(BaseModel):
    agency: str
    station: str
    procedure: str
    period: str
    received: int = 0
    archived: int = 0
    passed: int = 0
    needs_review: int = 0
    rejected: int = 0
    pages: int = 0
    median_drop_to_archive_s: float | None = None
    duplicates: int = 0
    refused: int = 0
    failed: int = 0


def _agency(manifest: Manifest) -> str:
    """The agency the archive files the dossier under (the configured one when no dossier code was read)."""
    return manifest.records.dossier.organ_id if manifest.records else layout.agency_of(manifest.dossier_id)


def period_of(iso: str | None, period: Period) -> str:
    if not iso:
        return UNKNOWN
    return iso[: {"day": 10, "month": 7, "year": 4}[period]]


def _seconds(start: str | None, end: str) -> float | None:
    if not start:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def manifests(store: Store, skipped: list[Unreadable] | None = None) -> list[Manifest]:
    """Every archived manifest that can be read; the others are appended to ``skipped`` (reuse_index.Unreadable)."""
    return [manifest for _, manifest in reuse_index.archived_manifests(store, skipped)]


def _reasons(archive: Store, skipped: list[Unreadable] | None) -> Iterator[QuarantineReason]:
    """The quarantine's reason objects; one that cannot be read is skipped like an unreadable manifest."""
    for info in archive.list("quarantine/"):
        if info.key.endswith("/reason.json"):
            try:
                yield QuarantineReason.model_validate_json(archive.get_bytes(info.key))
            except ValueError as exc:
                found = reuse_index.unreadable(info.key, exc)
                if skipped is not None:
                    skipped.append(found)


def build(archive: Store, inbox: Store | None = None, period: Period = "month", since: str | None = None,
          until: str | None = None, skipped: list[Unreadable] | None = None) -> list[ReportRow]:
    """The report's rows, sorted; ``since``/``until`` (ISO dates, inclusive) filter by the time of intake.

    A manifest (or quarantine reason) that cannot be read is left out of the rows and appended to ``skipped``
    (key and one-line reason) for the caller to list: one truncated file no longer fails the whole report."""
    rows: dict[tuple[str, str, str, str], ReportRow] = {}
    waits: dict[tuple, list[float]] = defaultdict(list)

    def row(agency: str, station: str, procedure: str | None, when: str | None) -> ReportRow | None:
        day = (when or "")[:10]
        if (since and day < since) or (until and day > until):
            return None
        key = (agency, station, procedure or UNKNOWN, period_of(when, period))
        return rows.setdefault(key, ReportRow(agency=key[0], station=key[1], procedure=key[2], period=key[3]))

    archived: dict[str, Manifest] = {m.dossier_id: m for m in manifests(archive, skipped)}
    for manifest in archived.values():
        intake = manifest.intake
        when = (intake.dropped_at if intake else None) or manifest.created_at
        target = row(_agency(manifest), intake.station if intake else UNKNOWN, manifest.procedure, when)
        if target is None:
            continue
        target.received += 1
        target.archived += 1
        target.pages += len(manifest.pages)
        setattr(target, manifest.status, getattr(target, manifest.status) + 1)
        wait = _seconds(intake.dropped_at if intake else None, manifest.created_at)
        if wait is not None:
            waits[(target.agency, target.station, target.procedure, target.period)].append(wait)
    counted = {"duplicate": "duplicates", "refused": "refused", "failed": "failed"}
    for outcome in inboxes.outcomes(inbox) if inbox is not None else []:
        if outcome.status not in counted:
            continue  # archived drops are counted from their manifests
        earlier = archived.get(outcome.dossier_id or "")
        target = row(layout.agency_of(outcome.dossier_id), outcome.drop.station, earlier.procedure if earlier else None,
                     outcome.drop.dropped_at or outcome.at)
        if target is not None:
            target.received += 1
            setattr(target, counted[outcome.status], getattr(target, counted[outcome.status]) + 1)
    if inbox is None:  # refusals of inputs given directly (an inbox's refusals are in its outcomes)
        for reason in _reasons(archive, skipped):
            target = row(UNKNOWN, UNKNOWN, None, reason.at)
            if target is not None:
                target.received += 1
                target.refused += 1 if reason.step == "capture" else 0
                target.failed += 0 if reason.step == "capture" else 1
    for key, values in waits.items():
        rows[key].median_drop_to_archive_s = round(statistics.median(values), 1)
    return [rows[k] for k in sorted(rows)]


def totals(rows: list[ReportRow]) -> ReportRow:
    total = ReportRow(agency="all", station="all", procedure="all", period="all")
    for r in rows:
        for name in ("received", "archived", "passed", "needs_review", "rejected", "pages", "duplicates", "refused", "failed"):
            setattr(total, name, getattr(total, name) + getattr(r, name))
    return total


def to_csv(rows: list[ReportRow]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(ReportRow.model_fields))
    writer.writeheader()
    for r in rows:
        writer.writerow(r.model_dump())
    return out.getvalue()


def save(archive: Store, rows: list[ReportRow], period: Period) -> tuple[str, str]:
    """``reports/digitization-<period>-<UTC time>.{csv,json}`` in the archive store; returns both keys."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = f"reports/digitization-{period}-{stamp}"
    archive.put_bytes(base + ".csv", to_csv(rows).encode(), content_type="text/csv")
    archive.put_bytes(base + ".json", json.dumps([r.model_dump() for r in rows], ensure_ascii=False, indent=2).encode(),
                      content_type="application/json")
    return base + ".csv", base + ".json"
