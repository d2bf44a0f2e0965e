"""The digitization report and the reprocess selection, from the stores alone."""

from __future__ import annotations

import pytest

from sohoa.kernel.models import Intake
from sohoa.services import inbox, report, reprocess
from sohoa.storage import open_store
from tests.archived import put_archived
from tests.test_review import _manifest


def _archive(tmp_path):
    store = open_store(str(tmp_path / "archive"))
    store.ensure_ready()
    first = _manifest().model_copy(update={
        "dossier_id": "000.00.00.H49-261127-0042", "status": "passed", "created_at": "2026-11-27T08:10:00+00:00",
        "intake": Intake(station="quay-1", key="quay-1/a.pdf", dropped_at="2026-11-27T08:00:00+00:00")})
    second = first.model_copy(update={"dossier_id": "000.00.00.H49-261127-0043", "status": "needs_review",
                                      "created_at": "2026-11-27T08:30:00+00:00",
                                      "intake": first.intake.model_copy(update={"dropped_at": "2026-11-27T08:10:00+00:00"})})
    third = first.model_copy(update={"dossier_id": "000.00.00.K10-261201-0001", "created_at": "2026-12-01T09:00:00+00:00",
                                     "intake": None})
    for manifest in (first, second, third):
        put_archived(store, manifest)
    return store


def test_the_report_groups_by_agency_station_procedure_and_period(tmp_path):
    archive = _archive(tmp_path)
    drops = open_store(str(tmp_path / "inbox"))
    drops.ensure_ready()
    drop = inbox.Drop(station="quay-1", key="quay-1/b.pdf", version="e1", kind="file", files=["quay-1/b.pdf"],
                      dropped_at="2026-11-28T10:00:00+00:00")
    inbox.record_outcome(drops, drop, "duplicate", "000.00.00.H49-261127-0042")
    rows = report.build(archive, drops)
    assert [(r.agency, r.station, r.period, r.received, r.archived, r.passed, r.needs_review, r.pages, r.duplicates,
             r.median_drop_to_archive_s) for r in rows] == [
        ("000.00.00.H49", "quay-1", "2026-11", 3, 2, 1, 1, 6, 1, 900.0),
        ("000.00.00.K10", "-", "2026-12", 1, 1, 1, 0, 3, 0, None)]
    assert report.totals(rows).received == 4
    assert [r.period for r in report.build(archive, drops, period="day", since="2026-11-28")] == ["2026-11-28", "2026-12-01"]
    assert report.to_csv(rows).splitlines()[0].startswith("agency,station,procedure,period,received")


def test_reprocess_selects_by_id_prefix_and_date_and_says_what_is_missing(tmp_path):
    archive = _archive(tmp_path)
    assert [m.dossier_id for m in reprocess.select(archive, prefix="000.00.00.H49")] == [
        "000.00.00.H49-261127-0042", "000.00.00.H49-261127-0043"]
    assert [m.dossier_id for m in reprocess.select(archive, since="2026-12-01")] == ["000.00.00.K10-261201-0001"]
    with pytest.raises(reprocess.NothingSelected, match="no archived dossier 000.00.00.H49-000000-0000"):
        reprocess.select(archive, dossier_ids=["000.00.00.H49-000000-0000"])
    with pytest.raises(reprocess.NothingSelected, match="name dossiers"):
        reprocess.select(archive)
