"""Reuse lookups ("tái sử dụng kết quả số hóa"): which documents a person already handed in.

A citizen should not have to hand in the same paper twice (Decree 45/2020, 107/2021), so the
counter must find earlier archived documents by ID number (CCCD, or an old 9-digit CMND),
dossier code, document type, procedure and date. Manifests are the truth; this module keeps an
embedded SQLite index of them, which is only a cache: it can always be rebuilt from the
manifests alone (``rebuild``), and is rebuilt when it is missing, of another schema version or
of another archive.

An archived dossier is identified by its manifest's key: the index is a function of the archive's
current manifests, so rebuilding it gives what recording each manifest as it was written gave.
Recording a key again (a new revision) replaces its rows; an older revision arriving late never
replaces a newer one. Manifests are found by their key alone (``…/manifest.json``), so the index
does not depend on the archive's layout. A dossier moved to another key (a layout migration) is
found at both until the index is rebuilt, as it is when both copies exist.

Plain Python and SQLite: no Prefect, safe to call from any process. Every call opens its own
connection (SQLite locks the file), so threads and processes of one machine can share a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from sohoa.domain import identifiers, layout
from sohoa.kernel.models import ClassifyResult, Manifest, Status
from sohoa.kernel.settings import Settings
from sohoa.storage import LocalStore, ObjectNotFound, StorageError, Store, open_store

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
#: Top-level prefixes that hold other things than archived dossiers (a quarantined input may
#: itself contain a file called manifest.json).
LOCAL_DIR = ".sohoa-index"  # in the store's reserved namespace: never listed as an object, never an orphan
LOCK_TIMEOUT_S = 30.0
log = logging.getLogger("sohoa.reuse")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dossiers (
    id INTEGER PRIMARY KEY,
    dossier_id TEXT NOT NULL,
    source_sha256 TEXT NOT NULL,
    dossier_code TEXT,
    procedure TEXT,
    status TEXT NOT NULL,
    revision INTEGER NOT NULL,
    archived_at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    manifest_key TEXT NOT NULL,
    store_url TEXT NOT NULL,
    UNIQUE (manifest_key)
);
CREATE TABLE IF NOT EXISTS documents (
    dossier INTEGER NOT NULL REFERENCES dossiers (id) ON DELETE CASCADE,
    n INTEGER NOT NULL,
    type TEXT NOT NULL,
    pages TEXT NOT NULL,
    file_key TEXT,
    PRIMARY KEY (dossier, n)
);
CREATE TABLE IF NOT EXISTS people (
    dossier INTEGER NOT NULL REFERENCES dossiers (id) ON DELETE CASCADE,
    cccd TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (dossier, cccd, n)
);
CREATE INDEX IF NOT EXISTS people_cccd ON people (cccd);
CREATE INDEX IF NOT EXISTS dossiers_code ON dossiers (dossier_code);
CREATE INDEX IF NOT EXISTS dossiers_received ON dossiers (received_at);
CREATE INDEX IF NOT EXISTS documents_type ON documents (type);
"""
# people.n: the document (1-based) that names the number; 0 for the dossier's own fields


class Hit(BaseModel):
    """One archived document found, with what the counter needs to reuse it."""

    dossier_id: str
    dossier_code: str | None = None
    document: int = Field(description="1-based, as in the manifest and `sohoa review --type N=TYPE`")
    type: str
    pages: list[int]
    procedure: str | None
    status: Status
    revision: int
    archived_at: str = Field(description="The manifest's created_at (UTC ISO-8601)")
    received_at: str = Field(description="When the inbox stored the drop (intake.dropped_at), else archived_at")
    manifest_key: str
    file_key: str | None = Field(description="Archive key of the document's own searchable PDF")
    link: str | None = Field(description="Where the document's PDF is: a path (local archive) or s3:// URL")
    source_sha256: str
    cccd: str | None = Field(None, description="The ID number searched for, when searched by one")
    document_cccd: list[str] = Field(default_factory=list, description="ID numbers the document itself names")


def person_id_problem(number: str) -> str | None:
    """Why ``number`` cannot name a person, or None: a CCCD by its structure, or an old 9-digit CMND."""
    if len(number) == 9 and number.isdigit():
        return None
    problem = identifiers.cccd_problem(number)
    return f"{problem} (nor a 9-digit CMND number)" if problem == "not 12 digits" else problem


def default_index_path(settings: Settings) -> Path:
    """``SOHOA_INDEX``, else beside a local archive (its reserved ``.sohoa-index/``), else a per-user cache
    file named by the archive URL's hash: an S3 archive has no local directory, and two archives never
    share one index."""
    if settings.index:
        return Path(settings.index).expanduser()
    store = open_store(settings.archive)
    if isinstance(store, LocalStore):
        return store.root / LOCAL_DIR / "reuse.sqlite"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sohoa"
    return cache / f"index-{hashlib.sha256(store.url.encode()).hexdigest()[:16]}.sqlite"


def link(store_url: str, key: str) -> str:
    """What ``Store.url_for(key)`` gives for the store at ``store_url``, without opening it."""
    return f"{store_url.rstrip('/')}/{key}" if store_url.startswith("s3://") else str(Path(store_url) / key)


def _as_list(value: str | list[str] | None) -> list[str]:
    return value if isinstance(value, list) else [value] if isinstance(value, str) else []


def people_of(manifest: Manifest) -> set[tuple[str, int]]:
    """(number, document) pairs: every valid ID number of the dossier (document 0) and of each document,
    including labelled ID fields (``holder_cccd``...), where an old 9-digit CMND number is kept as read."""
    pairs = {(n, 0) for n in manifest.fields.cccd}
    for index, document in enumerate(manifest.documents, start=1):
        for name, value in document.fields.items():
            if name == "cccd" or name.endswith("_cccd"):
                pairs |= {(n, index) for n in _as_list(value) if person_id_problem(n) is None}
    return pairs


class Index:
    """An open index file; use as a context manager (closes the connection)."""

    def __init__(self, db: sqlite3.Connection, path: Path):
        self._db = db
        self.path = path

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    @property
    def store_url(self) -> str | None:
        """The archive the index was built for (None before anything was recorded)."""
        row = self._db.execute("SELECT value FROM meta WHERE name = 'store_url'").fetchone()
        return row[0] if row else None

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction that takes the write lock first, so a read-then-replace cannot race another writer."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def record(self, manifest: Manifest, manifest_key: str, store_url: str) -> bool:
        """Upsert the dossier whose manifest is at ``manifest_key``: the key's earlier rows are replaced;
        False when the index holds a newer revision of the same dossier there (a late writer)."""
        with self._write() as db:
            newer = db.execute("SELECT 1 FROM dossiers WHERE manifest_key = ? AND dossier_id = ? AND source_sha256 = ?"
                               " AND revision > ?", (manifest_key, manifest.dossier_id, manifest.source.sha256,
                                                     manifest.revision)).fetchone()
            if newer:
                return False
            db.execute("DELETE FROM dossiers WHERE manifest_key = ?", (manifest_key,))
            dossier = self._insert_dossier(db, manifest, manifest_key, store_url)
            db.executemany("INSERT INTO documents VALUES (?, ?, ?, ?, ?)",
                           [(dossier, i, d.type, json.dumps(d.pages), d.file) for i, d in enumerate(manifest.documents, 1)])
            db.executemany("INSERT INTO people VALUES (?, ?, ?)", [(dossier, n, i) for n, i in sorted(people_of(manifest))])
            db.execute("INSERT OR IGNORE INTO meta VALUES ('store_url', ?)", (store_url,))
        return True

    @staticmethod
    def _insert_dossier(db: sqlite3.Connection, manifest: Manifest, manifest_key: str, store_url: str) -> int:
        code = manifest.fields.dossier_code
        received = (manifest.intake.dropped_at if manifest.intake else None) or manifest.created_at
        cursor = db.execute(
            "INSERT INTO dossiers (dossier_id, source_sha256, dossier_code, procedure, status, revision, archived_at,"
            " received_at, manifest_key, store_url) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (manifest.dossier_id, manifest.source.sha256, code if isinstance(code, str) else None, manifest.procedure,
             manifest.status, manifest.revision, manifest.created_at, received, manifest_key, store_url))
        return int(cursor.lastrowid or 0)

    def find(self, cccd: str | None = None, dossier_code: str | None = None, doc_type: str | None = None,
             procedure: str | None = None, since: str | None = None, until: str | None = None) -> list[Hit]:
        """Archived documents matching every criterion given, newest dossier first.

        ``cccd``: every document of the dossiers naming the number (``Hit.document_cccd`` tells which
        documents name it themselves); ``dossier_code``: the code or the dossier id; ``since``/``until``:
        ISO dates, inclusive, on the day the dossier was received (UTC).
        """
        where, params = ["1"], []
        for clause, value in (("d.id IN (SELECT dossier FROM people WHERE cccd = ?)", cccd),
                              ("? IN (d.dossier_code, d.dossier_id)", dossier_code), ("doc.type = ?", doc_type),
                              ("d.procedure = ?", procedure), ("substr(d.received_at, 1, 10) >= ?", since),
                              ("substr(d.received_at, 1, 10) <= ?", until)):
            if value is not None:
                where.append(clause)
                params.append(value)
        rows = self._db.execute(
            "SELECT d.dossier_id, d.dossier_code, doc.n, doc.type, doc.pages, d.procedure, d.status, d.revision,"
            " d.archived_at, d.received_at, d.manifest_key, doc.file_key, d.store_url, d.source_sha256,"
            " (SELECT group_concat(p.cccd, ' ') FROM people p WHERE p.dossier = d.id AND p.n = doc.n)"
            " FROM dossiers d JOIN documents doc ON doc.dossier = d.id"
            f" WHERE {' AND '.join(where)} ORDER BY d.received_at DESC, d.dossier_id, d.manifest_key, doc.n", params)
        return [_hit(row, cccd) for row in rows]


def _hit(row: tuple, cccd: str | None) -> Hit:
    (dossier_id, code, n, doc_type, pages, procedure, status, revision, archived_at, received_at, manifest_key,
     file_key, store_url, sha256, numbers) = row
    return Hit(dossier_id=dossier_id, dossier_code=code, document=n, type=doc_type, pages=json.loads(pages),
               procedure=procedure, status=status, revision=revision, archived_at=archived_at, received_at=received_at,
               manifest_key=manifest_key, file_key=file_key, link=link(store_url, file_key) if file_key else None,
               source_sha256=sha256, cccd=cccd, document_cccd=sorted((numbers or "").split()))


def open_index(path: str | os.PathLike[str]) -> Index:
    """Open (creating the file and its schema if needed) the index at ``path``; sqlite3.Error if it is not one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=LOCK_TIMEOUT_S, isolation_level=None)
    try:
        db.execute("PRAGMA foreign_keys = ON")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:  # new: every statement is IF NOT EXISTS, so two processes creating it at once agree
            db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        elif version != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"{path} has index schema {version}, not {SCHEMA_VERSION}: rebuild it")
    except BaseException:
        db.close()
        raise
    return Index(db, path)


def usable(path: Path, store_url: str) -> bool:
    """The file exists, has this module's schema and indexes this archive (else it must be rebuilt)."""
    if not path.is_file():
        return False
    try:
        uri = f"{path.resolve().as_uri()}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=LOCK_TIMEOUT_S)) as db:
            if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                return False
            row = db.execute("SELECT value FROM meta WHERE name = 'store_url'").fetchone()
    except sqlite3.Error:
        return False
    return row is None or row[0] == store_url


class Unreadable(BaseModel):
    """An archived object that cannot be read: a ``manifest.json`` (truncated, not JSON, not a manifest), or
    a quarantine ``reason.json`` (the report reads those too).

    One such file made the report, training, reprocess and the index fail for the whole archive; each of
    them now skips it and says so (``line``), and ``sohoa check`` finds what is wrong with that dossier."""

    key: str
    reason: str

    @property
    def line(self) -> str:
        return f"skipped unreadable {self.key}: {self.reason}"


def unreadable(key: str, exc: ValueError) -> Unreadable:
    """What could not be read at ``key``, logged, in one line: pydantic's first error without its input (a
    manifest may be megabytes), else the error's first line."""
    if isinstance(exc, ValidationError) and exc.errors():
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        reason = f"{where}: {first['msg']}" if where else first["msg"]
    else:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    found = Unreadable(key=key, reason=reason)
    log.warning("%s", found.line)
    return found


def read_manifest(store: Store, key: str) -> Manifest | Unreadable | None:
    """The manifest at ``key``; Unreadable (logged) for one that is not a manifest; None for one that is gone.

    A store that cannot be read (StorageError) is raised: that is not one bad dossier but the whole archive."""
    try:
        return Manifest.model_validate_json(store.get_bytes(key))
    except ObjectNotFound:
        return None
    except ValueError as exc:
        return unreadable(key, exc)


def archived_manifests(store: Store, skipped: list[Unreadable] | None = None) -> Iterator[tuple[str, Manifest]]:
    """(key, manifest) of every complete archive, one listing, read one at a time; each unreadable one is
    appended to ``skipped`` (and logged) instead of stopping the caller."""
    for key in layout.manifest_keys(store):
        manifest = read_manifest(store, key)
        if isinstance(manifest, Unreadable):
            if skipped is not None:
                skipped.append(manifest)
        elif manifest is not None:
            yield key, manifest


def rebuild(store: Store, path: str | os.PathLike[str], skipped: list[Unreadable] | None = None) -> int:
    """Build the index from the archive's manifests alone, into a temporary file renamed over ``path``
    at the end (readers never see a half-built index); returns the number of dossiers indexed. Unreadable
    manifests are left out (appended to ``skipped``, logged)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open_index(temporary) as index:
            index._db.execute("PRAGMA synchronous = OFF")  # a crash loses only the temporary file
            index._db.execute("INSERT INTO meta VALUES ('store_url', ?)", (store.url,))
            for key, manifest in archived_manifests(store, skipped):
                index.record(manifest, key, store.url)
            count = index._db.execute("SELECT count(*) FROM dossiers").fetchone()[0]
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return count


def index_for(settings: Settings, store: Store | None = None, rebuild_first: bool = False) -> Index:
    """The archive's index, rebuilt first when asked, or when missing, of another schema or another archive.

    Raises StorageError (the archive cannot be listed or read), OSError or sqlite3.Error (the index file)."""
    store = store or open_store(settings.archive)
    path = default_index_path(settings.model_copy(update={"archive": store.url}))  # the store's own, whatever settings say
    if rebuild_first or not usable(path, store.url):
        log.info("building the reuse index %s from the manifests of %s", path, store.url)
        rebuild(store, path)
    return open_index(path)


def record_archived(settings: Settings, manifest: Manifest, manifest_key: str) -> bool:
    """Add a dossier just archived (call after its manifest is written). An index not built yet is left
    alone: the first lookup builds it from the manifests, this one included. Never raises: the index is
    a cache, and an archive is complete without it (False, logged, when it could not be updated)."""
    try:
        store = open_store(settings.archive)
        path = default_index_path(settings)
        if not usable(path, store.url):
            return False
        with open_index(path) as index:
            return index.record(manifest, manifest_key, store.url)
    except (StorageError, OSError, sqlite3.Error) as exc:
        log.warning("reuse index not updated for %s: %s", manifest.dossier_id, exc)
        return False


def earlier_documents(settings: Settings, classified: ClassifyResult, source_sha256: str,
                      store: Store | None = None) -> list[Hit] | None:
    """Every archived document of earlier dossiers that name one of this dossier's ID numbers, for
    ``verify.verify(..., earlier=...)``; the dossier itself (same dossier code, or same input) left out.

    None when the lookup could not be made (logged): verification then says nothing about reuse,
    rather than that there is nothing to reuse."""
    numbers = [n for n in classified.fields.cccd if person_id_problem(n) is None]
    code = classified.fields.dossier_code
    if not numbers:
        return []
    try:
        with index_for(settings, store) as index:
            hits = [hit for number in numbers for hit in index.find(cccd=number)]
    except (StorageError, OSError, sqlite3.Error) as exc:
        log.warning("reuse lookup failed: %s", exc)
        return None
    return [h for h in hits if h.source_sha256 != source_sha256 and code not in (h.dossier_id, h.dossier_code)]
