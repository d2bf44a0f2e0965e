"""Inbox buckets where scanning stations drop dossiers, and the ledger that takes each drop once.

Layout of an inbox store (one bucket or prefix; one top-level prefix per scanning station):

    <station>/<file>                    a dossier in one file (PDF, TIFF, JPEG, PNG)
    <station>/<folder>/<page files>     a dossier of several files, taken when its marker
    <station>/<folder>/READY            (or manifest.json) appears: stations write it last
    _sohoa/ledger/<id>.json             one per drop taken: key, version (etag), flow run
    _sohoa/done/<key>                   inputs whose archive is written and verified
    _sohoa/quarantine/<key>             inputs that were refused or failed, with
    _sohoa/quarantine/<key>.reason.json   the reason beside them
    _sohoa/watcher.json                 the watcher's heartbeat (last scan, counts)

New drops are found by a full listing compared with the ledger, never by last-modified or
start-after shortcuts (both miss objects on real servers). A drop's identity is its key and
version: the same key written again with other bytes is a new drop. The ledger entry is
created create-only, and the flow run it starts carries the same identity as idempotency key,
so a watcher restarted at any point neither loses nor repeats a drop.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from sohoa.kernel.errors import ReasonCode
from sohoa.kernel.models import Intake, Outcome
from sohoa.storage import ObjectExists, ObjectInfo, ObjectNotFound, StorageError, Store

SYSTEM = "_sohoa/"
LEDGER = SYSTEM + "ledger/"
DONE = SYSTEM + "done/"
QUARANTINE = SYSTEM + "quarantine/"
HEARTBEAT = SYSTEM + "watcher.json"
MARKERS = ("READY", "manifest.json")
_SAFE_NAME = re.compile(r"^[^/\\\x00-\x1f\x7f]{1,200}$")


class Drop(BaseModel):
    """One dossier dropped by a station: a file, or a folder of files closed by its marker."""

    station: str
    key: str = Field(description="The file's key, or the marker's key for a folder")
    version: str = Field(description="The object's etag (or version id): other bytes at the same key are a new drop")
    kind: Literal["file", "folder"]
    files: list[str] = Field(description="Keys of the dossier's files (a folder: every file but the marker)")
    dropped_at: str | None = Field(None, description="When the inbox stored the object (the marker, for a folder)")

    def intake(self) -> Intake:
        return Intake(station=self.station, key=self.key, dropped_at=self.dropped_at)

    @property
    def ident(self) -> str:
        """Stable id of this drop (ledger entry name, flow-run idempotency key)."""
        return hashlib.sha256(f"{self.key}\n{self.version}".encode()).hexdigest()[:32]


class LedgerEntry(BaseModel):
    drop: Drop
    taken_at: str
    flow_run_id: str | None = None


class Heartbeat(BaseModel):
    at: str
    scans: int
    objects: int
    taken: int
    waiting: int = Field(description="Folders still without their marker")
    errors: int = 0
    last_error: str | None = None


def _version(info: ObjectInfo) -> str:
    return (info.etag or "").strip('"') or f"size-{info.size}"


def _stamp(info: ObjectInfo) -> str | None:
    return info.last_modified.astimezone(UTC).isoformat(timespec="seconds") if info.last_modified else None


def scan(store: Store) -> tuple[list[Drop], int]:
    """Every complete drop in the inbox (one full listing) and the number of folders still open."""
    drops, waiting, _ = _listing(store)
    return drops, waiting


def _listing(store: Store) -> tuple[list[Drop], int, set[str]]:
    """Drops, open folders and the ledger's idents, all from one listing of the whole inbox."""
    files: dict[str, list[ObjectInfo]] = {}
    singles: list[tuple[str, ObjectInfo]] = []
    ledger_ids: set[str] = set()
    for info in store.list(""):
        if info.key.startswith(LEDGER) and info.key.endswith(".json"):
            ledger_ids.add(info.key[len(LEDGER):-len(".json")])
        if info.key.startswith(SYSTEM) or "/" not in info.key:
            continue  # the system area; objects outside any station's prefix
        station, rest = info.key.split("/", 1)
        if "/" in rest:
            folder = f"{station}/{rest.split('/', 1)[0]}/"
            files.setdefault(folder, []).append(info)
        else:
            singles.append((station, info))
    drops = [Drop(station=s, key=i.key, version=_version(i), kind="file", files=[i.key], dropped_at=_stamp(i))
             for s, i in singles]
    waiting = 0
    for folder, infos in sorted(files.items()):
        marker = next((i for i in infos if i.key[len(folder):] in MARKERS), None)
        if marker is None:
            waiting += 1
            continue
        drops.append(Drop(station=folder.split("/", 1)[0], key=marker.key, version=_version(marker), kind="folder",
                          files=sorted(i.key for i in infos if i is not marker), dropped_at=_stamp(marker)))
    return drops, waiting, ledger_ids


def taken(store: Store) -> set[str]:
    """Idents of every drop in the ledger (one listing)."""
    return {info.key[len(LEDGER):-len(".json")] for info in store.list(LEDGER) if info.key.endswith(".json")}


def take(store: Store, drop: Drop, flow_run_id: str | None) -> bool:
    """Record the drop as taken; False when it already was (another watcher, or before a restart)."""
    entry = LedgerEntry(drop=drop, taken_at=datetime.now(UTC).isoformat(timespec="seconds"), flow_run_id=flow_run_id)
    try:
        store.put_bytes(f"{LEDGER}{drop.ident}.json", entry.model_dump_json().encode(), content_type="application/json",
                        create_only=True)
        return True
    except ObjectExists:
        return False


def ledger(store: Store) -> list[LedgerEntry]:
    return [LedgerEntry.model_validate_json(store.get_bytes(info.key)) for info in store.list(LEDGER)
            if info.key.endswith(".json")]


def local_name(key: str) -> str:
    """A file name for a downloaded object: its own when harmless, else ``input`` with its extension."""
    name = unicodedata.normalize("NFC", key.rsplit("/", 1)[-1])
    if _SAFE_NAME.match(name) and name not in (".", "..") and len(name.encode()) <= 200:
        return name
    suffix = Path(name).suffix
    return "input" + (suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,5}", suffix) else "")


def fetch(store: Store, drop: Drop, folder: Path) -> Path:
    """Download the drop's files (from the inbox, or from ``_sohoa/done/`` where an earlier run of this
    drop moved them) into ``folder``; returns the path to process: the file, or a folder of files."""
    target = folder / "dossier" if drop.kind == "folder" else folder
    target.mkdir(parents=True, exist_ok=True)
    for index, key in enumerate(drop.files, start=1):
        name = local_name(key)
        if drop.kind == "folder":
            name = f"{index:04d}-{name}"  # keeps the station's order; no two files collide
        _get_either(store, key, target / name)
    return target if drop.kind == "folder" else target / local_name(drop.files[0])


def _get_either(store: Store, key: str, dest: Path) -> None:
    """The file where it is now: in the inbox, or moved by an earlier run of the same drop (resumed
    after a review: done; retried after a failure: quarantine)."""
    for where in ("", DONE, QUARANTINE):
        try:
            store.get_file(where + key, dest)
            return
        except ObjectNotFound:
            continue
    raise ObjectNotFound(f"{key} is neither in the inbox nor in {DONE} or {QUARANTINE}")


def settle(store: Store, drop: Drop, status: str, reason: dict | None = None) -> list[str]:
    """Move the drop out of the inbox: to ``_sohoa/done/`` once archived, to ``_sohoa/quarantine/``
    with a reason beside each file when it was refused or failed. Each file is copied and the copy
    checked (size and etag) before the original is deleted. Returns the new keys."""
    area = QUARANTINE if status in ("refused", "failed") else DONE
    moved = []
    for key in [*drop.files, *([drop.key] if drop.kind == "folder" else [])]:
        source = _where(store, key, QUARANTINE if area == DONE else "")  # a retry that succeeds leaves quarantine
        if source is None:
            continue  # moved already (a retry of this step)
        before = store.stat(source)
        after = store.copy(source, area + key)
        if after.size != before.size:
            raise StorageError(f"copy of {key} to {area} is {after.size} bytes, not {before.size}: original kept")
        if area == QUARANTINE:
            body = {"status": status, "key": key, "drop": drop.model_dump(), **(reason or {})}
            store.put_bytes(area + key + ".reason.json", json.dumps(body, ensure_ascii=False, indent=2).encode(),
                            content_type="application/json")
        store.delete(source)
        if source.startswith(QUARANTINE):
            store.delete(source + ".reason.json")
        moved.append(area + key)
    return moved


def _where(store: Store, key: str, also: str) -> str | None:
    for candidate in (key, also + key) if also else (key,):
        if store.exists(candidate):
            return candidate
    return None


def beat(store: Store, heartbeat: Heartbeat) -> None:
    store.put_bytes(HEARTBEAT, heartbeat.model_dump_json().encode(), content_type="application/json")


def status(store: Store) -> dict:
    """What ``sohoa watch --status`` prints: the heartbeat, the ledger, the inbox now."""
    try:
        heartbeat = Heartbeat.model_validate_json(store.get_bytes(HEARTBEAT)).model_dump()
    except ObjectNotFound:
        heartbeat = None
    drops, waiting, done = _listing(store)
    return {"inbox": store.url, "heartbeat": heartbeat, "taken": len(done),
            "new": sorted(d.key for d in drops if d.ident not in done), "open_folders": waiting,
            "done": sum(1 for i in store.list(DONE)),
            "quarantined": sum(1 for i in store.list(QUARANTINE) if not i.key.endswith(".reason.json"))}


def scan_once(store: Store, submit, heartbeat: Heartbeat) -> list[Drop]:
    """One full listing; each drop not in the ledger is submitted (``submit(drop)`` returns its flow
    run id, the same id for the same drop however often it is called) and then recorded."""
    drops, waiting, done = _listing(store)
    new = [d for d in drops if d.ident not in done]
    for drop in new:
        take(store, drop, submit(drop))
    heartbeat.scans += 1
    heartbeat.objects, heartbeat.waiting = sum(len(d.files) for d in drops), waiting
    heartbeat.taken += len(new)
    heartbeat.at = datetime.now(UTC).isoformat(timespec="seconds")
    beat(store, heartbeat)
    return new


def watch(store: Store, submit, *, poll_s: float = 10.0, max_scans: int | None = None, log=None,
          sleep=None) -> Heartbeat:
    """Scan every ``poll_s`` seconds until ``max_scans`` (None: forever). A storage or submission error
    is logged and retried with exponential backoff (up to 5 minutes); nothing is lost meanwhile,
    because the next full listing finds whatever the failed one missed."""
    import time

    sleep = sleep or time.sleep
    heartbeat = Heartbeat(at="", scans=0, objects=0, taken=0, waiting=0)
    failures = 0
    while max_scans is None or heartbeat.scans + heartbeat.errors < max_scans:
        try:
            new = scan_once(store, submit, heartbeat)
            failures = 0
            if log and new:
                log.info("inbox %s: %d new drop(s): %s", store.url, len(new), ", ".join(d.key for d in new))
        except Exception as exc:  # S3 down, Prefect API down: back off, list again later
            failures += 1
            heartbeat.errors += 1
            heartbeat.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
            if log:
                log.warning("inbox %s: scan failed (%s); retrying in %.0f s", store.url, heartbeat.last_error,
                            min(poll_s * 2 ** failures, 300.0))
            sleep(min(poll_s * 2 ** failures, 300.0))
            continue
        if max_scans is None or heartbeat.scans + heartbeat.errors < max_scans:
            sleep(poll_s)
    return heartbeat


OUTCOMES = SYSTEM + "outcomes/"


class DropOutcome(BaseModel):
    """What became of a drop, for the digitization report (duplicates and refusals leave no archive)."""

    drop: Drop
    status: str
    dossier_id: str | None = None
    procedure: str | None = None
    reason: ReasonCode | None = None  # the Reason's code of a refused or failed drop
    at: str


def record_outcome(store: Store, drop: Drop, status: str, dossier_id: str | None, reason: str | None = None) -> None:
    entry = DropOutcome(drop=drop, status=status, dossier_id=dossier_id, reason=reason,
                        at=datetime.now(UTC).isoformat(timespec="seconds"))
    store.put_bytes(f"{OUTCOMES}{drop.ident}.json", entry.model_dump_json().encode(), content_type="application/json")


def outcomes(store: Store) -> list[DropOutcome]:
    return [DropOutcome.model_validate_json(store.get_bytes(info.key)) for info in store.list(OUTCOMES)
            if info.key.endswith(".json")]


def conclude(store: Store, drop: Drop, outcome: Outcome, moved: list[str]) -> list[str]:
    """Where an outcome leaves the drop: archived drops were moved out as soon as their archive was verified
    (``moved``); refused and failed ones go to quarantine with their reason; a duplicate to done. Then the
    outcome is recorded for the report. Returns the keys the drop now lies under."""
    if outcome.status in ("refused", "failed"):
        reason = outcome.reason.model_dump() if outcome.reason else {}
        moved = settle(store, drop, outcome.status, {**reason, "quarantine": outcome.quarantine})
    elif not moved:  # a duplicate: its archive exists already
        moved = settle(store, drop, outcome.status)
    record_outcome(store, drop, outcome.status, outcome.dossier_id, outcome.reason.code if outcome.reason else None)
    return moved


def fail(store: Store, drop: Drop, code: str, message: str) -> None:
    """A drop whose run raised: quarantined with the failure's reason, and the outcome recorded."""
    settle(store, drop, "failed", {"code": code, "message": message})
    record_outcome(store, drop, "failed", None, code)
