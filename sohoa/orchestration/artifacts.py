"""What operators see of a dossier in the Prefect UI: tables of documents and checks, thumbnails of
the pages that need a person, and OCR progress of long dossiers.

Thumbnails are small JPEGs kept in the work store (``thumbs/``) and embedded in the artifact, bounded
in size: nothing persisted in Prefect links to a store, so no credential or signature is ever stored
there. Artifact keys are derived from the dossier id.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable

from PIL import Image
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact

from sohoa.kernel.models import CaptureResult, Check, Manifest
from sohoa.kernel.settings import Settings
from sohoa.services import attention
from sohoa.storage import ObjectNotFound, Store

THUMB_WIDTH = 240
#: The most bytes of one thumbnail. Artifacts are stored in the Prefect database for as long as it keeps
#: them, so each is bounded: at most attention.MAX_PAGES (12) thumbnails of at most 24 KiB, about 400 KB of
#: base64 per dossier. At 240 px and quality 60 a generated A4 scan measured 5-9 KB; RGB noise needs the lower qualities.
THUMB_MAX_BYTES = 24 * 1024
_QUALITIES = (60, 45, 30, 20)
PROGRESS_FROM_PAGES = 10  # a progress artifact for dossiers at least this long


def artifact_key(dossier_id: str, what: str) -> str:
    """Prefect's artifact keys take lowercase letters, digits and dashes only."""
    return f"{re.sub(r'[^a-z0-9]+', '-', dossier_id.lower()).strip('-')}-{what}"[:120]


def _jpeg(page_image: bytes) -> bytes:
    """A thumbnail of at most THUMB_MAX_BYTES: lower quality, then half the size, until it fits."""
    with Image.open(io.BytesIO(page_image)) as image:
        image = image.convert("L" if image.mode in ("1", "L", "LA") else "RGB")
    width = THUMB_WIDTH
    while True:
        small = image.copy()
        small.thumbnail((width, width * 2))
        for quality in _QUALITIES:
            buffer = io.BytesIO()
            small.save(buffer, "JPEG", quality=quality)
            if buffer.tell() <= THUMB_MAX_BYTES or width <= 32:
                return buffer.getvalue()
        width //= 2


def thumbnail_uri(capture: CaptureResult, n: int, work: Store) -> str:
    """The page's thumbnail as a ``data:`` URI, kept in the work store (``thumbs/``) to be made once.

    Embedded, never linked: a presigned S3 link put the access key (X-Amz-Credential) and a signature into
    the Prefect database, which keeps artifacts long after the link expired."""
    page = next(p for p in capture.pages if p.n == n)
    key = f"thumbs/{page.sha256}-w{THUMB_WIDTH}.jpg"
    try:
        data = work.get_bytes(key)
    except ObjectNotFound:
        data = b""
    if not data or len(data) > THUMB_MAX_BYTES:  # none yet, or not one this module made
        data = _jpeg(work.get_bytes(page.key))
        work.put_bytes(key, data, content_type="image/jpeg")
    return "data:image/jpeg;base64," + base64.b64encode(data).decode()


def _check_row(check: Check) -> dict[str, str]:
    return {"check": check.id, "result": "ok" if check.ok else f"FAILED ({check.severity})",
            "message": check.message, "thông báo": check.message_vi}


def publish(manifest: Manifest, capture: CaptureResult, work: Store, settings: Settings) -> list[int]:
    """The dossier's artifacts; returns the pages that need attention."""
    documents = [{"#": str(i), "pages": ", ".join(map(str, d.pages)), "type": d.type, "confidence": f"{d.confidence:.2f}",
                  "title": d.title or "", "review": d.review.decision if d.review else ""}
                 for i, d in enumerate(manifest.documents, start=1)]
    create_table_artifact(documents, key=artifact_key(manifest.dossier_id, "documents"),
                          description=f"**{manifest.dossier_id}**: {manifest.status}, procedure {manifest.procedure or '?'}")
    checks = sorted(manifest.verification.checks, key=lambda c: c.ok)
    create_table_artifact([_check_row(c) for c in checks], key=artifact_key(manifest.dossier_id, "checks"),
                          description=f"Checks of {manifest.dossier_id}: failed first")
    pages = attention.pages_to_look_at(manifest, settings) if manifest.status != "passed" else []  # passed: nobody must look
    if pages:
        create_markdown_artifact(attention_markdown(manifest, capture, pages, work, settings),
                                 key=artifact_key(manifest.dossier_id, "attention"),
                                 description=f"Pages of {manifest.dossier_id} that need a person")
    return pages


def attention_markdown(manifest: Manifest, capture: CaptureResult, pages: list[int], work: Store, settings: Settings) -> str:
    typed = {p.n: p for p in manifest.pages}
    lines = [f"# {manifest.dossier_id}: {manifest.status}", "", "## Failed checks / Kiểm tra không đạt", ""]
    lines += [f"- **{c.id}** ({c.severity}): {c.message}  \n  _{c.message_vi}_" for c in manifest.verification.checks if not c.ok]
    lines += ["", "## Pages to look at / Trang cần xem", ""]
    for n in pages:
        page = typed[n]
        link = thumbnail_uri(capture, n, work)
        lines += [f"**Page {n}**: {page.type or '?'} ({(page.type_confidence or 0):.2f}), OCR {page.ocr_confidence:.0f}, "
                  f"{', '.join(page.evidence)}", "", f"![page {n}]({link})", ""]
    return "\n".join(lines)


def ocr_progress(capture: CaptureResult) -> Callable[[int, int], None] | None:
    """A callback that moves a progress artifact as pages are read, for long dossiers only."""
    total = len(capture.pages)
    if total < PROGRESS_FROM_PAGES:
        return None
    artifact = create_progress_artifact(0.0, description=f"OCR of {capture.source.name}: {total} pages")

    def update(done: int, total: int) -> None:
        update_progress_artifact(artifact, round(100.0 * done / total, 1), description=f"OCR of {capture.source.name}: "
                                 f"{done}/{total} pages")

    return update
