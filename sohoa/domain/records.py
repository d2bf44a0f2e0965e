"""Decree 30/2020 Appendix VI metadata of an archived dossier and its documents (see docs/domain.md, 'Records metadata').

Filled only from what the pipeline knows: the dossier code (agency, year), the procedure catalog
(name, thời hạn bảo quản, chế độ sử dụng), the taxonomy's labels, and what OCR read on each
document (title line, "Số: 12/XNTTHN", "..., ngày 5 tháng 3 năm 2026"). A value that was not read
stays empty rather than guessed, so a records system can tell the two apart.
"""

from __future__ import annotations

import re
from datetime import date

from sohoa.domain.catalog import Catalog, Taxonomy
from sohoa.domain.layout import Place
from sohoa.kernel.models import Document, DocumentRecord, DossierRecord, Manifest, RecordsMetadata
from sohoa.kernel.text import fold

_NUMBER = re.compile(r"(?m)^\s*S[oố]\s*[:.]\s*(\d{1,6})\s*/\s*([0-9A-ZĐ][0-9A-ZĐ./-]{0,30})")
_ISSUED = re.compile(r"NGAY (\d{1,2}) THANG (\d{1,2}) NAM (\d{4})")
_CODE_DATE = re.compile(r"^\d{3}\.\d{2}\.\d{2}\.[A-Z]\d{2}-(\d{2})(\d{2})(\d{2})-\d{4}\Z", re.ASCII)
_NAMES = ("applicant_name", "holder_name", "party_name", "person_name", "submitter_name", "mother_name")


def build(manifest: Manifest, place: Place, catalog: Catalog, taxonomy: Taxonomy) -> RecordsMetadata:
    texts = {page.n: page.text for page in manifest.pages}
    documents = [_document(i, d, texts, taxonomy) for i, d in enumerate(manifest.documents, start=1)]
    dated = sorted(d.issued_date for d in documents if d.issued_date)
    received = _received(manifest)
    procedure = catalog.procedures.get(manifest.procedure or "")
    name = procedure.name if procedure else (manifest.procedure or "chưa xác định thủ tục")
    applicant = _applicant(manifest.documents)
    notation = manifest.dossier_id
    return RecordsMetadata(
        dossier=DossierRecord(
            file_code=f"{place.agency}.{place.year}.{notation}", organ_id=place.agency, file_catalog=place.year,
            file_notation=notation, title=f"Hồ sơ {name}" + (f" của {applicant}" if applicant else ""),
            maintenance=procedure.maintenance if procedure else "Vĩnh viễn",
            rights=procedure.rights if procedure else "Hạn chế",
            creator=place.agency, start_date=dated[0] if dated else received, end_date=dated[-1] if dated else received,
            doc_total=len(documents), page_total=len(manifest.pages),
            description=f"Thủ tục {manifest.procedure or 'không rõ'}; kết quả kiểm tra: {manifest.status}",
        ),
        documents=documents,
    )


def _document(ordinal: int, document: Document, texts: dict[int, str], taxonomy: Taxonomy) -> DocumentRecord:
    text = "\n".join(texts.get(n, "") for n in document.pages)
    label = next((t.label for t in taxonomy.types if t.code == document.type), document.type)
    number = _NUMBER.search(text)
    return DocumentRecord(
        doc_ordinal=ordinal, type_name=label, code_number=number.group(1) if number else None,
        code_notation=number.group(2) if number else None, issued_date=issued_date(text),
        subject=document.title or label, page_amount=len(document.pages),
        description=f"Trang {document.pages[0]}–{document.pages[-1]} của hồ sơ" if document.pages else None,
    )


def issued_date(text: str) -> str | None:
    """The last "ngày D tháng M năm YYYY" that is a real day (where forms put their date and place)."""
    found = None
    for day, month, year in _ISSUED.findall(fold(text)):
        try:
            found = date(int(year), int(month), int(day)).isoformat()
        except ValueError:
            continue
    return found


def _received(manifest: Manifest) -> str | None:
    """The day the dossier was received: the dossier code's date (YYMMDD), else the day it was dropped."""
    match = _CODE_DATE.match(manifest.dossier_id)
    if match:
        try:
            return date(2000 + int(match.group(1)), int(match.group(2)), int(match.group(3))).isoformat()
        except ValueError:
            pass
    return manifest.intake.dropped_at[:10] if manifest.intake and manifest.intake.dropped_at else None


def _applicant(documents: list[Document]) -> str | None:
    for name in _NAMES:
        for document in documents:
            value = document.fields.get(name)
            if value:
                return value if isinstance(value, str) else value[0]
    return None
