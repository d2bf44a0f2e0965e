"""Archive: every file of a dossier under one prefix of the archive store, manifest last.

``manifest.json`` is the commit marker: it is written only after every other file has been
written and read back (size and SHA-256 metadata), so an archive without it is incomplete.
Re-archiving the same input is idempotent: files already present with the same SHA-256 are
not written again.
"""

from __future__ import annotations

import logging
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, Field

from sohoa.domain import index as reuse_index
from sohoa.domain import layout, records, revisions
from sohoa.domain.catalog import catalog, taxonomy
from sohoa.kernel.keys import sha256_file, step_key
from sohoa.kernel.models import (
    ArchiveResult,
    CaptureResult,
    ClassifyResult,
    Document,
    FileRef,
    Intake,
    Manifest,
    ManifestPage,
    OcrResult,
    Protection,
    StepRecord,
    VerifyResult,
)
from sohoa.kernel.settings import Settings
from sohoa.ocr import pdf as searchable
from sohoa.steps import verify as verifying
from sohoa.steps.capture import EXTENSIONS, sniff_media_type
from sohoa.storage import ObjectNotFound, StorageError, Store, materialize

VERSION = "4"  # 2: a PDF per document; 3: page types, earlier revisions kept; 4: layout, Appendix VI, object lock
MANIFEST = layout.MANIFEST
#: The commit marker's writer (sohoa/domain/revisions.py), under the name callers of the archive step know.
write_manifest = revisions.write_manifest
log = logging.getLogger(__name__)


class ArchivedSource(BaseModel):
    """Index entry: which archive holds a given input (by SHA-256); written after the manifest."""

    dossier_id: str
    manifest_key: str
    verify_key: str = Field(description="Last step key of the run that wrote it: same key, same result")


def source_index_key(sha256: str) -> str:
    return f"index/sha256/{sha256}.json"


def find_archived(store: Store, sha256: str, verify_key: str) -> ArchivedSource | None:
    """The complete archive (its manifest exists) of this input made by exactly these steps and settings."""
    try:
        record = ArchivedSource.model_validate_json(store.get_bytes(source_index_key(sha256)))
    except (ObjectNotFound, ValueError):
        return None
    return record if record.verify_key == verify_key and store.exists(record.manifest_key) else None


def archive_key(verified: VerifyResult, store: Store) -> str:
    return step_key("archive", VERSION, {"store": store.url}, verified.key)


def dossier_id(capture: CaptureResult, classified: ClassifyResult) -> str:
    """The dossier code when one was read, else a stable id from the input's content hash."""
    from sohoa.domain.identifiers import is_dossier_code

    code = classified.fields.dossier_code
    # read from a QR code or OCR text: attacker-controlled until checked here, where it becomes a prefix
    return code if isinstance(code, str) and is_dossier_code(code) else f"sha256-{capture.source.sha256[:16]}"


def put_verified(store: Store, key: str, path: Path, content_type: str) -> FileRef:
    """Write ``path`` unless the same bytes are there; read back size and checksum either way."""
    digest, size = sha256_file(path), path.stat().st_size
    try:
        info = store.stat(key)
        current = info.metadata.get("sha256") == digest and info.size == size
    except ObjectNotFound:
        current = False
    if not current:
        store.put_file(key, path, content_type=content_type, metadata={"sha256": digest})
        info = store.stat(key)
        if info.size != size or info.metadata.get("sha256") != digest:
            raise StorageError(f"archive verification failed for {key}: stored object differs from what was written")
    return FileRef(key=key, sha256=digest, size=size)


def archive(
    source: Path, capture: CaptureResult, ocr: OcrResult, classified: ClassifyResult, verified: VerifyResult,
    steps: dict[str, StepRecord], work: Store, store: Store, intake: Intake | None = None,
    settings: Settings | None = None,
) -> ArchiveResult:
    """Claim the dossier's place (sohoa/domain/layout.py), write and read back every file, protect them where
    the bucket has object lock, then write the manifest: the commit marker, written last. The reuse
    note (earlier documents of the same person) is added here, from the index as it is now."""
    settings = settings or Settings()
    started, now = time.perf_counter(), datetime.now(UTC)
    earlier = reuse_index.earlier_documents(settings, classified, capture.source.sha256, store)  # not in verify's key
    verified = verifying.with_reuse(verified, classified, settings, earlier)
    code = dossier_id(capture, classified)
    when = intake.dropped_at if intake and intake.dropped_at else now.isoformat()
    ident, prefix = layout.claim(store, code, capture.source.sha256,
                                 layout.Place.of(code, classified.procedure, when, settings.agency))
    files: dict[str, FileRef] = {}
    with tempfile.TemporaryDirectory(prefix="sohoa-archive-") as tmp:
        documents = _write_files(source, capture, ocr, classified, work, store, prefix, ident, files, Path(tmp))
    protection = protection_for(store, settings, now)
    steps = {**steps, "archive": StepRecord(
        version=VERSION, cache_key=archive_key(verified, store), cached=False,
        duration_s=round(time.perf_counter() - started, 3))}
    manifest = build_manifest(ident, capture, ocr, classified.model_copy(update={"documents": documents}), verified,
                              steps, files).model_copy(update={"intake": intake, "protection": protection})
    manifest = manifest.model_copy(update={"records": records.build(
        manifest, layout.Place.from_prefix(prefix), catalog(settings.catalog), taxonomy(settings.taxonomy))})
    manifest = revisions.supersede(store, prefix, manifest)  # the replaced revision kept, decisions carried over
    revisions.write_manifest(store, prefix, manifest)
    reuse_index.record_archived(settings, manifest, prefix + MANIFEST)
    record = ArchivedSource(dossier_id=ident, manifest_key=prefix + MANIFEST, verify_key=verified.key)
    store.put_bytes(source_index_key(capture.source.sha256), record.model_dump_json().encode(), content_type="application/json")
    return ArchiveResult(dossier_id=ident, prefix=prefix, manifest_url=store.url_for(prefix + MANIFEST), manifest=manifest)


def _write_files(source: Path, capture: CaptureResult, ocr: OcrResult, classified: ClassifyResult, work: Store,
                 store: Store, prefix: str, ident: str, files: dict[str, FileRef], workdir: Path) -> list[Document]:
    """The original(s), the dossier's searchable PDF, one PDF per document and the words; ``files`` gains them."""
    if source.is_dir():
        for index, name in enumerate(capture.source.files, start=1):
            path = source / name
            files[f"original_{index:04d}"] = put_verified(store, f"{prefix}original/{index:04d}{_ext_of(path)}", path,
                                                          "application/octet-stream")
    else:
        ext = EXTENSIONS.get(capture.source.media_type, ".bin")
        files["original"] = put_verified(store, f"{prefix}original{ext}", source, capture.source.media_type)
    pdf = materialize(work, ocr.searchable_pdf_key, workdir / "searchable.pdf")
    files["searchable_pdf"] = put_verified(store, f"{prefix}{ident}.pdf", pdf, "application/pdf")
    documents = write_documents(store, prefix, ident, pdf, classified.documents, files, workdir)
    words = materialize(work, ocr.words_key, workdir / "words.json")
    files["ocr_words"] = put_verified(store, f"{prefix}words.json", words, "application/json")
    return documents


def protection_for(store: Store, settings: Settings, now: datetime) -> Protection:
    """Object lock where the bucket has it: the configured retention per object (applied by
    write_manifest to every listed file), else the bucket's default retention, which the server applies."""
    policy = store.lock_policy()
    if not policy.enabled:
        if settings.retention_days:
            log.warning("SOHOA_RETENTION_DAYS is set but %s has no object lock: files are not retained", store.url)
        return Protection(source="unsupported")
    if settings.retention_days:
        until = now + timedelta(days=settings.retention_days)
        return Protection(mode=settings.retention_mode, retain_until=until.isoformat(timespec="seconds"), source="per_object")
    default = policy.default_until(now)
    if default is None:
        return Protection(source="not_requested")
    return Protection(mode=policy.default_mode, retain_until=default.isoformat(timespec="seconds"), source="bucket_default")


def write_documents(store: Store, prefix: str, ident: str, pdf: Path, documents: list[Document], files: dict[str, FileRef],
                    workdir: Path, revision: int | None = None) -> list[Document]:
    """A searchable PDF of each document without one (its pages of the dossier's PDF), written and read back.

    ``files`` gains their references. After a review re-split the documents (``revision``), their
    files get new names, so that the files of earlier revisions stay as those revisions list them.
    """
    out = []
    for index, document in enumerate(documents, start=1):
        if document.file is not None:
            out.append(document)
            continue
        part = workdir / f"document-{index}.pdf"
        searchable.extract_pages(pdf, document.pages, part, title=f"{ident} {document.type}")
        name = f"r{revision:04d}-{index:02d}-{document.type}.pdf" if revision else f"{index:02d}-{document.type}.pdf"
        ref = put_verified(store, f"{prefix}documents/{name}", part, "application/pdf")
        files[f"document_{index:02d}"] = ref
        out.append(document.model_copy(update={"file": ref.key}))
    return out


def _ext_of(path: Path) -> str:
    return EXTENSIONS.get(sniff_media_type(path), ".bin")


def build_manifest(
    ident: str, capture: CaptureResult, ocr: OcrResult, classified: ClassifyResult, verified: VerifyResult,
    steps: dict[str, StepRecord], files: dict[str, FileRef],
) -> Manifest:
    texts = {p.n: p for p in ocr.pages}
    typed = {p.n: p for p in classified.pages}
    pages = [
        ManifestPage(
            n=p.n, sha256=p.sha256, width=p.width, height=p.height, dpi=p.dpi,
            rotation=(p.rotation + texts[p.n].orientation) % 360, skew=p.skew,
            blank=p.blank, ocr_confidence=texts[p.n].confidence, text=texts[p.n].text,
            type=typed[p.n].type if p.n in typed else None,
            type_confidence=typed[p.n].confidence if p.n in typed else None,
            evidence=typed[p.n].evidence if p.n in typed else [],
        )
        for p in capture.pages
    ]
    return Manifest(
        dossier_id=ident, procedure=classified.procedure, status=verified.status, source=capture.source,
        pages=pages, documents=classified.documents, verification=verified.verification,
        fields=classified.fields.model_copy(update={"procedure_source": classified.procedure_source,
                                                   "classifier": classified.classifier}),
        steps=steps, files=files, created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
