"""What operators see of a dossier in the Prefect UI: tables of documents and checks, thumbnails of
the pages that need a person, and OCR progress of long dossiers.

Thumbnails are small JPEGs kept in the work store (``thumbs/``); on S3 the artifact links to
them with presigned URLs that expire (``SOHOA_LINK_EXPIRES_S``, one hour by default), on a local
store they are embedded in the artifact. Artifact keys are derived from the dossier id.
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

THUMB_WIDTH = 360
PROGRESS_FROM_PAGES = 10  # a progress artifact for dossiers at least this long


def artifact_key(dossier_id: str, what: str) -> str:
    """Prefect's artifact keys take lowercase letters, digits and dashes only."""
    return f"{re.sub(r'[^a-z0-9]+', '-', dossier_id.lower()).strip('-')}-{what}"[:120]


def thumbnail_link(capture: CaptureResult, n: int, work: Store, expires_s: int) -> str:
    page = next(p for p in capture.pages if p.n == n)
    key = f"thumbs/{page.sha256}.jpg"
    try:
        data = work.get_bytes(key)
    except ObjectNotFound:
        with Image.open(io.BytesIO(work.get_bytes(page.key))) as image:
            image.thumbnail((THUMB_WIDTH, THUMB_WIDTH * 2))
            buffer = io.BytesIO()
            image.convert("L" if image.mode in ("1", "L", "LA") else "RGB").save(buffer, "JPEG", quality=70)
            data = buffer.getvalue()
        work.put_bytes(key, data, content_type="image/jpeg")
    return work.share_url(key, expires_s) or "data:image/jpeg;base64," + base64.b64encode(data).decode()


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
        link = thumbnail_link(capture, n, work, settings.link_expires_s)
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
