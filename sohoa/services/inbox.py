"""Inbox buckets where scanning stations drop dossiers, and the ledger that takes each drop once.

Layout of an inbox store (one bucket or prefix; one top-level prefix per scanning station):

    <station>/<file>                          a dossier in one file (PDF, TIFF, JPEG, PNG)
    <station>/<folder>/<page files>           a dossier of several files, taken when its marker
    <station>/<folder>/READY                  (or manifest.json) appears: stations write it last
    _sohoa/done/<drop id>/<key>               the version a drop processed, once its archive is verified
    _sohoa/quarantine/<drop id>/<key>         inputs that were refused or failed (or had unusable names),
    _sohoa/quarantine/<drop id>/<key>.reason.json   with the reason beside them
    _sohoa/outcomes/<drop id>.json            what became of each drop (for the report)
    _sohoa/watcher.json                       the watcher's heartbeat (last scan, counts)

New drops are found by a full listing compared with the ledger, never by last-modified or
start-after shortcuts (both miss objects on real servers). A drop's identity is its key, its
version (etag) and the time the inbox stored it: the same key written again is a new drop, with
other bytes or with the same ones (then it is reported a duplicate). A run reads, moves and deletes
only the version its drop recorded (etag-conditional reads, copies and deletes): an object written
again before its run fetched it is reported, typed, as gone, never answered with the other version's
result, and the other version is its own drop. done/ and quarantine/ are per drop, so one version
never overwrites another's.

The ledger lives in the work store (``inboxes/<inbox id>/ledger/<drop id>.json``), not in the inbox.
Stations must be able to write anywhere in the inbox (``_sohoa/`` included: S3 has no per-prefix
write permission we can count on), and a ledger entry there, whose name is predictable, would stop a
drop forever. Only the pipeline writes the work store. Verifying inbox entries against Prefect
instead would cost a query per entry per scan and stop every scan while Prefect is unreachable.
Wiping the work store loses nothing: drops still in the inbox are submitted again and get their runs
back by idempotency key.

A drop's run is created with its identity (and attempt) as idempotency key, then recorded, so a
watcher restarted at any point neither loses nor repeats a drop. A run that ended without moving
its drop out of the inbox (crashed before it started, e.g. the worker's submission got HTTP 503) is
submitted again under the next attempt's key, up to ``MAX_ATTEMPTS``, then quarantined with a reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import quote

from pydantic import BaseModel, Field, ValidationError

from sohoa.kernel.errors import ReasonCode
from sohoa.kernel.models import Intake, Outcome, Reason
from sohoa.storage import (
    InvalidKey,
    ObjectChanged,
    ObjectExists,
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    Store,
    open_store,
    validate_key,
)

_log = logging.getLogger("sohoa.inbox")

SYSTEM = "_sohoa/"
DONE = SYSTEM + "done/"
QUARANTINE = SYSTEM + "quarantine/"
OUTCOMES = SYSTEM + "outcomes/"
HEARTBEAT = SYSTEM + "watcher.json"
MARKERS = ("READY", "manifest.json")
MAX_ATTEMPTS = 3  # submissions of one drop whose runs ended without moving it, before it is quarantined
BEAT_EVERY_S = 5.0  # the heartbeat is written this often during a long scan too
SUBMITTERS = 8  # submissions in flight at once (each mostly waits for the Prefect API)
FINAL = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
_SAFE_NAME = re.compile(r"^[^/\\\x00-\x1f\x7f]{1,200}$")
_MD5 = re.compile(r"^[0-9a-f]{32}$")


class Drop(BaseModel):
    """One dossier dropped by a station: a file, or a folder of files closed by its marker."""

    station: str
    key: str = Field(description="The file's key, or the marker's key for a folder")
    version: str = Field(description="The object's etag (or version id): other bytes at the same key are a new drop")
    kind: Literal["file", "folder"]
    files: list[str] = Field(description="Keys of the dossier's files (a folder: every file but the marker)")
    dropped_at: str | None = Field(None, description="When the inbox stored the object (the marker, for a folder)")
    versions: list[str] = Field(default_factory=list, description="Each file's etag, in the order of files: the "
                                "version read and moved (empty in drops recorded before versions were)")
    uploaded: str | None = Field(None, description="The listing's last-modified time, to the millisecond: the same "
                                 "bytes uploaded again are a new drop")
    size: int | None = Field(None, description="Bytes of the drop's files as listed (None in drops recorded before "
                             "sizes were): a drop over SOHOA_MAX_INPUT_BYTES is refused before it is downloaded")

    def intake(self) -> Intake:
        return Intake(station=self.station, key=self.key, dropped_at=self.dropped_at)

    @property
    def ident(self) -> str:
        """Stable id of this drop (ledger entry, outcome, done/ folder, flow-run idempotency key)."""
        upload = f"\n{self.uploaded}" if self.uploaded else ""
        return hashlib.sha256(f"{self.key}\n{self.version}{upload}".encode()).hexdigest()[:32]

    def version_of(self, key: str) -> str | None:
        """The etag this drop recorded for one of its keys (None: recorded before versions were)."""
        if key == self.key:
            return self.version
        return dict(zip(self.files, self.versions, strict=False)).get(key)

    @property
    def keys(self) -> list[str]:
        """Every object of the drop: its files and, for a folder, the marker."""
        return [*self.files, *([self.key] if self.kind == "folder" else [])]


class LedgerEntry(BaseModel):
    drop: Drop
    taken_at: str
    flow_run_id: str | None = None
    attempt: int = Field(1, description="Which submission of the drop the flow run is (a new one after a run "
                         "ended without moving the drop)")


class RunState(BaseModel):
    """What the orchestrator says of a drop's flow run."""

    flow_run_id: str
    state: str = Field(description="The state type: SCHEDULED, RUNNING, COMPLETED, CRASHED, ...")
    run_count: int = 0


class Submitter(Protocol):
    """How the watcher starts runs and asks about them (sohoa/orchestration/inbox.py: through Prefect)."""

    def __call__(self, drop: Drop, attempt: int = 1) -> str:
        """Start the drop's run (the same run for the same drop and attempt); returns its id."""

    def states(self, flow_run_ids: list[str]) -> dict[str, RunState]:
        """The runs' states; a run the orchestrator does not know is left out."""


class Heartbeat(BaseModel):
    at: str
    scans: int
    objects: int
    taken: int
    waiting: int = Field(description="Folders still without their marker")
    errors: int = 0
    last_error: str | None = None
    resubmitted: int = Field(0, description="Drops submitted again after their run ended without moving them")
    quarantined: int = Field(0, description="Objects the watcher quarantined itself (bad names, runs that never ran)")
    busy: str | None = Field(None, description="What a scan in progress is doing (written during long scans)")


class BadObject(BaseModel):
    """An object in the inbox that no station's drop can be made of: quarantined with ``bad_name``."""

    info: ObjectInfo
    why: str
    stray: bool = Field(description="Its name is not a portable key: the store moves it by its raw name")


# --- the ledger (work store) -----------------------------------------------------------------


class Ledger:
    """The taken drops of one inbox, in the work store (where stations cannot write: see the module docstring).
    Entries read are kept: only a watcher writes them, and it writes through here."""

    def __init__(self, work: Store, inbox_url: str) -> None:
        self.store = work
        self.prefix = f"inboxes/{hashlib.sha256(inbox_url.encode()).hexdigest()[:16]}/ledger/"
        self._read: dict[str, LedgerEntry] = {}

    def idents(self) -> set[str]:
        return {i.key[len(self.prefix):-len(".json")] for i in self.store.list(self.prefix) if i.key.endswith(".json")}

    def entry(self, ident: str) -> LedgerEntry | None:
        if ident not in self._read:
            try:
                self._read[ident] = LedgerEntry.model_validate_json(self.store.get_bytes(f"{self.prefix}{ident}.json"))
            except ObjectNotFound:
                return None
        return self._read[ident]

    def entries(self) -> list[LedgerEntry]:
        return [e for ident in sorted(self.idents()) if (e := self.entry(ident)) is not None]

    def take(self, drop: Drop, flow_run_id: str | None, attempt: int = 1) -> bool:
        """Record the drop as taken (create-only for a first attempt); False when it already was."""
        entry = LedgerEntry(drop=drop, taken_at=_now(), flow_run_id=flow_run_id, attempt=attempt)
        try:
            self.store.put_bytes(f"{self.prefix}{drop.ident}.json", entry.model_dump_json().encode(),
                                 content_type="application/json", create_only=attempt == 1)
        except ObjectExists:
            return False
        self._read[drop.ident] = entry
        return True


def ledger_of(store: Store, work: Store | None = None) -> Ledger:
    """The inbox's ledger, in ``work`` (default: the work store of the settings, SOHOA_WORK)."""
    if work is None:
        from sohoa.kernel.settings import Settings

        work = open_store(Settings().work)
        work.ensure_ready()
    return Ledger(work, store.url)


def taken(store: Store, work: Store | None = None) -> set[str]:
    """Idents of every drop in the ledger (one listing)."""
    return ledger_of(store, work).idents()


def take(store: Store, drop: Drop, flow_run_id: str | None, work: Store | None = None) -> bool:
    """Record the drop as taken; False when it already was (another watcher, or before a restart)."""
    return ledger_of(store, work).take(drop, flow_run_id)


def ledger(store: Store, work: Store | None = None) -> list[LedgerEntry]:
    return ledger_of(store, work).entries()


# --- listing ---------------------------------------------------------------------------------


def _version(info: ObjectInfo) -> str:
    return (info.etag or "").strip('"') or f"size-{info.size}"


def _stamp(info: ObjectInfo) -> str | None:
    return info.last_modified.astimezone(UTC).isoformat(timespec="seconds") if info.last_modified else None


def _uploaded(info: ObjectInfo) -> str | None:
    return info.last_modified.astimezone(UTC).isoformat(timespec="milliseconds") if info.last_modified else None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def scan(store: Store) -> tuple[list[Drop], int]:
    """Every complete drop in the inbox (one full listing) and the number of folders still open."""
    drops, waiting, _ = _listing(store)
    return drops, waiting


def _file_drop(station: str, info: ObjectInfo) -> Drop:
    return Drop(station=station, key=info.key, version=_version(info), kind="file", files=[info.key],
                versions=[_version(info)], dropped_at=_stamp(info), uploaded=_uploaded(info), size=info.size)


def _listing(store: Store) -> tuple[list[Drop], int, list[BadObject]]:
    """Drops, open folders and the objects no drop can be made of, from one listing of the inbox."""
    folders: dict[str, list[ObjectInfo]] = {}
    drops: list[Drop] = []
    bad = [BadObject(info=i, why=_why_stray(i.key), stray=True) for i in store.stray()]
    for info in store.list(""):
        if info.key.startswith(SYSTEM):
            continue
        if "/" not in info.key:
            bad.append(BadObject(info=info, why="not under a station's prefix", stray=False))
            continue
        station, rest = info.key.split("/", 1)
        if "/" in rest:
            folders.setdefault(f"{station}/{rest.split('/', 1)[0]}/", []).append(info)
        else:
            drops.append(_file_drop(station, info))
    waiting = 0
    for folder, infos in sorted(folders.items()):
        marker = next((i for i in infos if i.key[len(folder):] in MARKERS), None)
        if marker is None:
            waiting += 1
            continue
        files = sorted((i for i in infos if i is not marker), key=lambda i: i.key)
        drops.append(Drop(station=folder.split("/", 1)[0], key=marker.key, version=_version(marker), kind="folder",
                          files=[i.key for i in files], versions=[_version(i) for i in files],
                          dropped_at=_stamp(marker), uploaded=_uploaded(marker), size=sum(i.size for i in files)))
    return drops, waiting, bad


def _why_stray(name: str) -> str:
    try:
        validate_key(name)
    except InvalidKey as exc:
        return str(exc)
    return "not a portable key"


# --- fetching and moving one drop's version --------------------------------------------------


def local_name(key: str) -> str:
    """A file name for a downloaded object: its own when harmless, else ``input`` with its extension."""
    name = unicodedata.normalize("NFC", key.rsplit("/", 1)[-1])
    if _SAFE_NAME.match(name) and name not in (".", "..") and len(name.encode()) <= 200:
        return name
    suffix = Path(name).suffix
    return "input" + (suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,5}", suffix) else "")


def local_paths(drop: Drop, folder: Path) -> dict[str, Path]:
    """Where :func:`fetch` puts each of the drop's files under ``folder``."""
    if drop.kind == "file":
        return {drop.files[0]: folder / local_name(drop.files[0])}
    # numbered: keeps the station's order, and no two files collide
    return {key: folder / "dossier" / f"{i:04d}-{local_name(key)}" for i, key in enumerate(drop.files, start=1)}


def fetch(store: Store, drop: Drop, folder: Path) -> Path:
    """Download the version of the drop's files it recorded (from the inbox, or from where an earlier run of
    this drop moved them) into ``folder``; returns the path to process: the file, or a folder of files.

    ObjectChanged when the inbox holds another version of a file and no earlier run kept this one: that
    version is gone (the station wrote the key again) and the new one is a drop of its own."""
    paths = local_paths(drop, folder)
    for key, dest in paths.items():
        dest.parent.mkdir(parents=True, exist_ok=True)
        _get_version(store, drop, key, dest)
    return folder / "dossier" if drop.kind == "folder" else paths[drop.files[0]]


def _get_version(store: Store, drop: Drop, key: str, dest: Path) -> None:
    """The file where it is now: in the inbox (that version only), or moved by an earlier run of the same drop
    (resumed after a review: done; retried after a failure: quarantine)."""
    changed: ObjectChanged | None = None
    try:
        store.get_file(key, dest, if_match=drop.version_of(key))
        return
    except ObjectChanged as exc:
        changed = exc
    except ObjectNotFound:
        pass
    for area in (DONE, QUARANTINE):
        try:
            store.get_file(moved_key(area, drop, key), dest)
            return
        except ObjectNotFound:
            continue
    if changed is not None:
        raise ObjectChanged(f"{key} was written again before its drop was fetched: version "
                            f"{drop.version_of(key)} is gone; the new version is a drop of its own")
    raise ObjectNotFound(f"{key} is neither in the inbox nor in {DONE} or {QUARANTINE}: version "
                         f"{drop.version_of(key)} is gone (deleted, or written again and that version moved out)")


def moved_key(area: str, drop: Drop, key: str) -> str:
    """Where a drop's object goes in done/ or quarantine/: under the drop's id, so that no other version
    (nor another drop of the same name) ever overwrites it; a raw name that is no key is percent-encoded."""
    return f"{area}{drop.ident}/{_portable(key)}"


def _portable(key: str) -> str:
    try:
        return validate_key(key)
    except InvalidKey:
        return quote(key, safe="")[:200] or "input"


def settle(store: Store, drop: Drop, status: str, reason: dict | None = None,
           local: dict[str, Path] | None = None) -> list[str]:
    """Move the drop's version out of the inbox: to done/ once archived, to quarantine/ with a reason beside
    each file when it was refused or failed. Each file is copied (that version only; when the station wrote
    the key again meanwhile, from ``local``, the bytes the run processed) and the copy checked before the
    original is deleted, and only that version is deleted: a newer one stays for its own drop. Returns the
    new keys."""
    area = QUARANTINE if status in ("refused", "failed") else DONE
    moved = []
    for key in drop.keys:
        target = moved_key(area, drop, key)
        if not _move(store, drop, key, target, area, (local or {}).get(key)):
            continue  # moved already (a retry of this step), or another version is there and nothing was kept
        if area == QUARANTINE:
            body = {"status": status, "key": key, "drop": drop.model_dump(), **(reason or {})}
            store.put_bytes(target + ".reason.json", json.dumps(body, ensure_ascii=False, indent=2).encode(),
                            content_type="application/json")
        moved.append(target)
    return moved


def _move(store: Store, drop: Drop, key: str, target: str, area: str, local: Path | None) -> bool:
    """Copy, check, delete one object of the drop; a retry that succeeds moves it out of quarantine."""
    version = drop.version_of(key)
    for source in (key, *([moved_key(QUARANTINE, drop, key)] if area == DONE else [])):
        try:
            before = store.stat(source)
        except ObjectNotFound:
            continue
        in_inbox = source == key
        if in_inbox and version is not None and _version(before) != version:
            return _keep_local(store, target, local)  # the station wrote the key again: leave that version alone
        after = store.copy(source, target, if_match=_version(before))
        if after.size != before.size:
            raise StorageError(f"copy of {key} to {area} is {after.size} bytes, not {before.size}: original kept")
        try:
            store.delete(source, if_match=_version(before))
        except ObjectChanged:
            pass  # written again after the copy: the new version is its own drop
        if not in_inbox:
            store.delete(source + ".reason.json")
        return True
    return False


def _keep_local(store: Store, target: str, local: Path | None) -> bool:
    """done/ or quarantine/ gets the bytes the run processed when the inbox holds another version already."""
    if local is None or not local.is_file():
        return False
    store.put_file(target, local)
    return True


# --- the watcher -----------------------------------------------------------------------------


def beat(store: Store, heartbeat: Heartbeat) -> None:
    store.put_bytes(HEARTBEAT, heartbeat.model_dump_json().encode(), content_type="application/json")


def status(store: Store, work: Store | None = None) -> dict:
    """What ``sohoa watch --status`` prints: the heartbeat, the ledger, the inbox now."""
    try:
        heartbeat = Heartbeat.model_validate_json(store.get_bytes(HEARTBEAT)).model_dump()
    except (ObjectNotFound, ValidationError):
        heartbeat = None
    drops, waiting, bad = _listing(store)
    done = taken(store, work)
    return {"inbox": store.url, "heartbeat": heartbeat, "taken": len(done),
            "new": sorted(d.key for d in drops if d.ident not in done), "open_folders": waiting,
            "bad_names": sorted(b.info.key for b in bad), "done": sum(1 for i in store.list(DONE)),
            "quarantined": sum(1 for i in store.list(QUARANTINE) if not i.key.endswith(".reason.json"))}


class _Pulse:
    """Writes the heartbeat during a scan, at most every ``BEAT_EVERY_S``, so a watcher busy submitting 500
    drops is not reported unhealthy."""

    def __init__(self, store: Store, heartbeat: Heartbeat, clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.heartbeat, self.clock, self.last = store, heartbeat, clock, clock()
        self.lock = threading.Lock()

    def __call__(self, busy: str) -> None:
        with self.lock:  # called by every submitting thread
            if self.clock() - self.last < BEAT_EVERY_S:
                return
            self.heartbeat.busy, self.heartbeat.at, self.last = busy, _now(), self.clock()
            beat(self.store, self.heartbeat)


def scan_once(store: Store, submit: Submitter, heartbeat: Heartbeat, work: Store | None = None,
              book: Ledger | None = None) -> list[Drop]:
    """One full listing: objects with unusable names are quarantined; each drop not in the ledger is
    submitted (``submit(drop)`` returns its flow run id, the same id for the same drop however often it is
    called) and then recorded; drops whose runs ended without moving them are submitted again."""
    book = book or ledger_of(store, work)
    drops, waiting, bad = _listing(store)
    done, pulse = book.idents(), _Pulse(store, heartbeat)
    heartbeat.quarantined += sum(_quarantine_bad(store, b) for b in bad)
    new = [d for d in drops if d.ident not in done]
    _submit_all(new, submit, book, pulse)
    heartbeat.resubmitted += _retry_stalled(store, book, submit, [d for d in drops if d.ident in done], heartbeat)
    heartbeat.scans += 1
    heartbeat.objects, heartbeat.waiting = sum(len(d.keys) for d in drops), waiting
    heartbeat.taken += len(new)
    heartbeat.at, heartbeat.busy = _now(), None
    beat(store, heartbeat)
    return new


def _submit_all(new: list[Drop], submit: Submitter, book: Ledger, pulse: _Pulse) -> None:
    """Submit and record each new drop, ``SUBMITTERS`` at a time: one submission is a round trip to the
    Prefect API that mostly waits (measured about 4.5 s each, one at a time, on a busy 2-core stack, so
    500 drops took over half an hour just to be submitted). Every drop that could be submitted is
    recorded before the first failure, if any, is raised (the next scan submits the rest)."""
    finished = iter(range(1, len(new) + 1))

    def one(drop: Drop) -> None:
        book.take(drop, submit(drop))
        pulse(f"submitting {next(finished)}/{len(new)}")

    with ThreadPoolExecutor(max_workers=SUBMITTERS, thread_name_prefix="sohoa-submit") as pool:
        futures = [pool.submit(one, drop) for drop in new]
    failures = [future.exception() for future in futures if future.exception() is not None]
    if failures:
        raise failures[0]


def _quarantine_bad(store: Store, bad: BadObject) -> bool:
    """A key no drop can be made of leaves the inbox for quarantine with ``bad_name``, and is reported."""
    info = bad.info
    drop = Drop(station=info.key.split("/", 1)[0] if "/" in info.key.strip("/") else "", key=info.key,
                version=_version(info), kind="file", files=[info.key], versions=[_version(info)],
                dropped_at=_stamp(info), uploaded=_uploaded(info))
    message = f"key {info.key!r} cannot be a drop: {bad.why}"
    target = moved_key(QUARANTINE, drop, info.key)
    try:
        if bad.stray:
            store.evict(info.key, target, if_match=_version(info))
        elif not _move(store, drop, info.key, target, QUARANTINE, None):
            return False
    except (StorageError, ValueError) as exc:  # e.g. a name the S3 client itself refuses to send ('..')
        _log.warning("inbox %s: cannot quarantine %r: %s", store.url, info.key, str(exc).splitlines()[0])
        return False
    body = {"status": "refused", "key": info.key, "code": ReasonCode.bad_name.value, "message": message,
            "drop": drop.model_dump()}
    store.put_bytes(target + ".reason.json", json.dumps(body, ensure_ascii=False, indent=2).encode(),
                    content_type="application/json")
    record_outcome(store, drop, "refused", None, ReasonCode.bad_name)
    _log.warning("inbox %s: quarantined %s", store.url, message)
    return True


def _retry_stalled(store: Store, book: Ledger, submit: Submitter, in_flight: list[Drop], heartbeat: Heartbeat) -> int:
    """Submit again each drop still in the inbox whose run is over (it never started, or crashed before it
    moved the drop) or unknown to the orchestrator, under a new idempotency key; after ``MAX_ATTEMPTS``
    quarantine it. Returns how many were submitted again."""
    if not in_flight or not hasattr(submit, "states"):
        return 0
    entries = {d.ident: e for d in in_flight if (e := book.entry(d.ident)) is not None and e.flow_run_id}
    states = submit.states([e.flow_run_id for e in entries.values()]) if entries else {}
    again = 0
    for entry in entries.values():
        state = states.get(entry.flow_run_id)
        if (state is None or state.state in FINAL) and _still_there(store, entry.drop):
            again += _submit_again(store, book, submit, entry, state, heartbeat)
    return again


def _still_there(store: Store, drop: Drop) -> bool:
    """The drop's version is at its key (checked after its run's state: a run moves the drop before it ends)."""
    try:
        return _version(store.stat(drop.key)) == drop.version
    except ObjectNotFound:
        return False


def _submit_again(store: Store, book: Ledger, submit: Submitter, entry: LedgerEntry, state: RunState | None,
                  heartbeat: Heartbeat) -> int:
    drop, seen = entry.drop, state.state if state else "unknown to the orchestrator"
    if entry.attempt >= MAX_ATTEMPTS:
        message = f"its run ended {seen} without processing it, {entry.attempt} times"
        fail(store, drop, ReasonCode.never_started, message)
        heartbeat.quarantined += 1
        _log.warning("inbox %s: %s quarantined: %s", store.url, drop.key, message)
        return 0
    attempt = entry.attempt + 1
    book.take(drop, submit(drop, attempt), attempt)
    _log.warning("inbox %s: %s submitted again (attempt %d): run %s ended %s", store.url, drop.key, attempt,
                 entry.flow_run_id, seen)
    return 1


def watch(store: Store, submit: Submitter, *, poll_s: float = 10.0, max_scans: int | None = None, log=None,
          sleep=None, work: Store | None = None) -> Heartbeat:
    """Scan every ``poll_s`` seconds until ``max_scans`` (None: forever). A storage or submission error
    is logged and retried with exponential backoff (up to 5 minutes); nothing is lost meanwhile,
    because the next full listing finds whatever the failed one missed."""
    sleep = sleep or time.sleep
    heartbeat = Heartbeat(at="", scans=0, objects=0, taken=0, waiting=0)
    failures, book = 0, None
    while max_scans is None or heartbeat.scans + heartbeat.errors < max_scans:
        try:
            book = book or ledger_of(store, work)
            new = scan_once(store, submit, heartbeat, book=book)
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


# --- outcomes --------------------------------------------------------------------------------


class DropOutcome(BaseModel):
    """What became of a drop, for the digitization report (duplicates and refusals leave no archive)."""

    drop: Drop
    status: str
    dossier_id: str | None = None
    procedure: str | None = None
    reason: ReasonCode | None = None  # the Reason's code of a refused or failed drop
    at: str


def record_outcome(store: Store, drop: Drop, status: str, dossier_id: str | None, reason: str | None = None) -> None:
    entry = DropOutcome(drop=drop, status=status, dossier_id=dossier_id, reason=reason, at=_now())
    store.put_bytes(f"{OUTCOMES}{drop.ident}.json", entry.model_dump_json().encode(), content_type="application/json")


def read_outcomes(store: Store) -> tuple[list[DropOutcome], list[str]]:
    """Every readable outcome, and the keys of those that are not (a station can write ``_sohoa/``, a write
    can be cut short): one bad object must not hide all the others from the report."""
    found, unreadable = [], []
    for key in _outcome_keys(store):
        try:
            found.append(DropOutcome.model_validate_json(store.get_bytes(key)))
        except (ValidationError, ValueError, ObjectNotFound):
            unreadable.append(key)
    return found, unreadable


def _outcome_keys(store: Store) -> Iterator[str]:
    return (info.key for info in store.list(OUTCOMES) if info.key.endswith(".json"))


def outcomes(store: Store) -> list[DropOutcome]:
    """The readable outcomes; unreadable ones are skipped and logged by key."""
    found, unreadable = read_outcomes(store)
    if unreadable:
        _log.warning("inbox %s: %d unreadable outcome(s) skipped: %s", store.url, len(unreadable), ", ".join(unreadable))
    return found


def conclude(store: Store, drop: Drop, outcome: Outcome, moved: list[str],
             local: dict[str, Path] | None = None) -> list[str]:
    """Where an outcome leaves the drop: archived drops were moved out as soon as their archive was verified
    (``moved``); refused and failed ones go to quarantine with their reason; a duplicate to done. Then the
    outcome is recorded for the report. Returns the keys the drop now lies under."""
    if outcome.status in ("refused", "failed"):
        reason = outcome.reason.model_dump() if outcome.reason else {}
        moved = settle(store, drop, outcome.status, {**reason, "quarantine": outcome.quarantine}, local)
    elif not moved:  # a duplicate: its archive exists already
        moved = settle(store, drop, outcome.status, local=local)
    record_outcome(store, drop, outcome.status, outcome.dossier_id, outcome.reason.code if outcome.reason else None)
    return moved


def gone(store: Store, drop: Drop, message: str) -> Outcome:
    """A drop whose version was overwritten before its run fetched it: reported ``superseded``, nothing moved
    (the key holds another version, which is a drop of its own); the run's outcome says the same."""
    _log.warning("inbox %s: %s", store.url, message)
    return _refused(store, drop, ReasonCode.superseded, message)


def too_large(store: Store, drop: Drop, limit: int) -> Outcome | None:
    """A drop larger than ``limit`` bytes, refused ``too_large`` and moved to quarantine (a copy inside the store)
    without a byte of it downloaded: a 50 GB object would otherwise fill the worker's disk before capture
    refused it. None when the drop is within the limit (or recorded before sizes were)."""
    if drop.size is None or drop.size <= limit:
        return None
    message = f"input is {drop.size} bytes; the limit is {limit}"
    settle(store, drop, "refused", {"code": ReasonCode.too_large.value, "message": message})
    return _refused(store, drop, ReasonCode.too_large, message)


def _refused(store: Store, drop: Drop, code: ReasonCode, message: str) -> Outcome:
    """The drop's outcome recorded as refused, and the run's outcome saying the same."""
    record_outcome(store, drop, "refused", None, code)
    return Outcome(input=store.url_for(drop.key), status="refused", reason=Reason(code=code, message=message[:500]))


def fail(store: Store, drop: Drop, code: str, message: str) -> None:
    """A drop whose run raised: quarantined with the failure's reason, and the outcome recorded."""
    settle(store, drop, "failed", {"code": code, "message": message})
    record_outcome(store, drop, "failed", None, code)


def entry_of(store: Store, drop: Drop, work: Store | None = None) -> LedgerEntry | None:
    """The drop's ledger entry (its run and attempt), or None when it was not taken."""
    return ledger_of(store, work).entry(drop.ident)
