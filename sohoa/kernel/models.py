"""Pydantic models for everything that crosses a step or process boundary.

Each step is a function from one of these models to another, so a step's result can be
persisted (as JSON) by the orchestration layer and reused by any later process. Step results
carry the cache key that produced them: the next step's key is derived from it, which makes
the chain of keys a Merkle chain over input content, step versions and settings.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from sohoa.kernel.errors import ReasonCode

MANIFEST_SCHEMA_ID = "sohoa.manifest/2"  # 2: typed dossier fields (1: a string-keyed dict, migrated on reading)
MANIFEST_SCHEMAS = ("sohoa.manifest/1", MANIFEST_SCHEMA_ID)

Status = Literal["passed", "needs_review", "rejected"]
Severity = Literal["info", "warning", "error", "fatal"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceInfo(_Model):
    """What was received, identified by content: the archive keeps these bytes as they are."""

    name: str = Field(description="File or folder name as received (display only, never a key)")
    sha256: str = Field(description="SHA-256 of the file; for a folder, of its files' hashes in page order")
    size: int = Field(description="Bytes received (sum of files for a folder)")
    media_type: str = Field(description="Detected from content, not from the name")
    files: list[str] = Field(default_factory=list, description="Page files of a folder, natural order")


class PageImage(_Model):
    """A captured page: the image as scanned, stored content-addressed in the work store."""

    n: int
    key: str = Field(description="Work-store key of the page image")
    sha256: str
    media_type: str
    width: int
    height: int
    dpi: int
    rotation: int = Field(0, description="Degrees clockwise applied from the file's own metadata (EXIF, PDF /Rotate)")
    skew: float = Field(0.0, description="Measured skew of text lines in degrees, counter-clockwise positive")
    blank: bool = False
    sideways: bool = Field(False, description="Text lines run vertically: OCR turns the page a quarter first")
    origin: Literal["native", "rendered", "image"] = Field(
        description="native: a PDF page's own image; rendered: rasterized PDF page; image: an image file"
    )


class CaptureResult(_Model):
    key: str
    source: SourceInfo
    pages: list[PageImage]


class Word(_Model):
    text: str
    box: tuple[int, int, int, int] = Field(description="left, top, width, height in pixels of the page as archived")
    conf: float
    line: int = Field(description="Line index on the page, in reading order")


class PageWords(_Model):
    n: int
    words: list[Word]


class OcrPage(_Model):
    n: int
    text: str = Field(description="Page text, NFC")
    word_count: int
    confidence: float = Field(description="Mean word confidence 0-100 (0 for a page without words)")
    orientation: int = Field(0, description="Degrees clockwise the page was turned to read it (0, 90, 180, 270)")
    deskew: float = Field(0.0, description="Degrees the OCR copy was straightened by")
    ocr_dpi: int = Field(300, description="Resolution of the OCR copy (low-dpi pages are upscaled)")
    attempts: int = Field(1, description="Engine passes: 2 when a low-confidence page was retried upside down")
    text_layer_key: str = Field(description="Work-store key of the page's invisible-text PDF")
    duration_s: float


class OcrResult(_Model):
    key: str
    engine: str = Field(description="The OCR engine's version line (e.g. tesseract 5.3.0)")
    languages: str
    pages: list[OcrPage]
    words_key: str = Field(description="Work-store key of every page's words with boxes (JSON list of PageWords);"
                           " kept out of this result so that a cached step loads fast")
    searchable_pdf_key: str = Field(description="Work-store key of the dossier's searchable PDF")


class DocumentReview(_Model):
    """An operator's word on a document's type: what ``sohoa train`` learns from."""

    decision: Literal["confirmed", "corrected"]
    by: str
    at: str = Field(description="UTC ISO-8601 time of the decision")
    previous_type: str | None = Field(None, description="The machine's type before a correction")


class Document(_Model):
    type: str = Field(description="Taxonomy code")
    confidence: float = Field(ge=0, le=1, description="Calibrated: the lowest confidence of its pages")
    pages: list[int]
    title: str | None = Field(None, description="Title line the type was read from")
    fields: dict[str, str | list[str]] = Field(default_factory=dict)
    file: str | None = Field(None, description="Archive key of this document's own searchable PDF")
    review: DocumentReview | None = Field(None, description="Set when an operator confirmed or corrected the type")


class PagePrediction(_Model):
    """How one page was typed and whether it opens a document, with the evidence for both."""

    n: int
    type: str = Field(description="Taxonomy code, or 'blank' for a blank page (left out of documents)")
    confidence: float = Field(ge=0, le=1)
    starts: bool = Field(description="The page opens a new document")
    evidence: list[str] = Field(default_factory=list, description="e.g. title, header, page 2/3, after blank, model 0.97")
    title: str | None = None
    mark: str | None = Field(None, description="The page number printed on it, 'k/n' ('k/?' without a total)")


class DossierFields(_Model):
    """What was read of the dossier as a whole (docs/domain.md, 'Dossier codes' and 'Personal ID numbers').

    Unset fields are left out of the JSON, so a manifest says only what was read; the keys are the
    ones manifest schema 1 kept in a plain dict, which is how a schema-1 manifest is read."""

    model_config = ConfigDict(extra="forbid")

    dossier_code: str | None = Field(None, description="Mã hồ sơ, from the receipt's QR code or its printed text")
    dossier_code_source: Literal["qr", "receipt_text", "text"] | None = Field(None, description="Where the code was read")
    dossier_code_printed: str | None = Field(None, description="The printed code, when it differs from the QR code's")
    receipt_procedure: str | None = Field(None, description="The procedure code printed on the receipt")
    inferred_procedure: str | None = Field(None, description="The procedure the set of document types points to")
    cccd: list[str] = Field(default_factory=list, description="Valid personal ID numbers, first appearance order")
    cccd_invalid: list[str] | None = Field(None, description="ID numbers read that fail their structure check")
    procedure_source: Literal["receipt", "caller", "inferred", "operator", "none"] | None = Field(
        None, description="Where the manifest's procedure came from (manifest only)")
    classifier: str | None = Field(None, description="'rules' or the trained model used (manifest only)")

    @model_serializer(mode="wrap")
    def _without_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {name: value for name, value in handler(self).items() if value is not None}


class ClassifyResult(_Model):
    key: str
    documents: list[Document]
    procedure: str | None
    procedure_source: Literal["receipt", "caller", "inferred", "operator", "none"]
    fields: DossierFields = Field(default_factory=DossierFields)
    pages: list[PagePrediction] = Field(default_factory=list)
    classifier: str = Field("rules", description="'rules', or the trained model used with them (models/classifier/vNNNNN)")


class Check(_Model):
    id: str
    ok: bool
    severity: Severity
    message: str = Field(description="What was found, in English")
    message_vi: str = Field("", description="The same in Vietnamese, for the counter's staff")
    values: dict[str, str | int | float | list[str] | None] = Field(default_factory=dict, description="The values compared")


class Verification(_Model):
    checks: list[Check]
    missing: list[str] = Field(default_factory=list)


class VerifyResult(_Model):
    key: str
    status: Status
    verification: Verification


class StepRecord(_Model):
    version: str
    cache_key: str
    cached: bool
    duration_s: float


class FileRef(_Model):
    key: str
    sha256: str
    size: int


class ManifestPage(_Model):
    n: int
    sha256: str
    width: int
    height: int
    dpi: int
    rotation: int = Field(description="Degrees clockwise that turn the page as scanned upright (metadata + detected)")
    skew: float = Field(description="Measured skew in degrees, counter-clockwise positive; OCR read a straightened copy")
    blank: bool
    ocr_confidence: float
    text: str
    type: str | None = Field(None, description="The page's predicted type ('blank' for a blank page)")
    type_confidence: float | None = Field(None, ge=0, le=1)
    evidence: list[str] = Field(default_factory=list, description="Why the page was typed and split as it was")


class Change(_Model):
    field: str = Field(description="What changed, e.g. documents[2].type, procedure, status")
    before: str | int | float | list[str] | list[int] | None = None
    after: str | int | float | list[str] | list[int] | None = None


class Decision(_Model):
    """One operator decision on a dossier, with the previous values: the audit trail."""

    id: str
    by: str
    at: str = Field(description="UTC ISO-8601 time")
    action: Literal["approve", "correct", "reject", "set_procedure"]
    reason: str | None = None
    changes: list[Change] = Field(default_factory=list)


class Intake(_Model):
    """Where a dossier came in, when it came from a watched inbox (for the digitization report)."""

    station: str = Field(description="The scanning station: the inbox prefix it dropped the dossier into")
    key: str = Field(description="The dropped object's key (a folder's marker for a multi-file dossier)")
    dropped_at: str | None = Field(None, description="UTC ISO-8601 time the inbox stored the object")


class _Record(BaseModel):
    """Decree 30/2020 Appendix VI names (aliases) in JSON, so a records system can read them as they are."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class DocumentRecord(_Record):
    """Appendix VI metadata of one document (văn bản) of the dossier, from what the pipeline read."""

    doc_ordinal: int = Field(alias="DocOrdinal", description="Số thứ tự văn bản trong hồ sơ")
    type_name: str = Field(alias="TypeName", description="Tên loại văn bản (the taxonomy's label)")
    code_number: str | None = Field(None, alias="CodeNumber", description="Số của văn bản, when read")
    code_notation: str | None = Field(None, alias="CodeNotation", description="Ký hiệu của văn bản, when read")
    issued_date: str | None = Field(None, alias="IssuedDate", description="Ngày tháng năm văn bản (ISO), when read")
    organ_name: str | None = Field(None, alias="OrganName", description="Tên cơ quan ban hành, when read")
    subject: str = Field(alias="Subject", description="Trích yếu: the title line read, else the type's label")
    language: str = Field("Tiếng Việt", alias="Language")
    page_amount: int = Field(alias="PageAmount", description="Số trang")
    description: str | None = Field(None, alias="Description", description="Ghi chú: pages in the dossier, type source")
    signer_info: str | None = Field(None, alias="SignerInfo", description="Người ký, when read")


class DossierRecord(_Record):
    """Appendix VI metadata of the dossier (hồ sơ)."""

    file_code: str = Field(alias="FileCode", description="Mã hồ sơ: OrganId.FileCatalog.FileNotation")
    organ_id: str = Field(alias="OrganId", description="Mã định danh cơ quan (the dossier code's agency part)")
    file_catalog: str = Field(alias="FileCatalog", description="Mục lục số / năm hình thành hồ sơ")
    file_notation: str = Field(alias="FileNotation", description="Số và ký hiệu hồ sơ (the dossier id)")
    title: str = Field(alias="Title", description="Tiêu đề hồ sơ: procedure name and applicant")
    maintenance: str = Field(alias="Maintenance", description="Thời hạn bảo quản (catalog data)")
    rights: str = Field(alias="Rights", description="Chế độ sử dụng (catalog data)")
    creator: str = Field(alias="Creator", description="Người lập hồ sơ: the agency (or the operator who decided)")
    language: str = Field("Tiếng Việt", alias="Language")
    start_date: str | None = Field(None, alias="StartDate", description="Earliest document date read, else the day received")
    end_date: str | None = Field(None, alias="EndDate", description="Latest document date read, else the day received")
    doc_total: int = Field(alias="DocTotal")
    page_total: int = Field(alias="PageTotal")
    description: str = Field(alias="Description", description="Procedure code, outcome of verification")


class RecordsMetadata(_Record):
    dossier: DossierRecord
    documents: list[DocumentRecord]


class Protection(_Model):
    """Object lock on the archived files, as the bucket reported it (none on servers without object lock)."""

    mode: Literal["GOVERNANCE", "COMPLIANCE"] | None = None
    retain_until: str | None = Field(None, description="UTC ISO-8601 date the files may not be deleted before")
    source: Literal["bucket_default", "per_object", "unsupported", "not_requested"] = "unsupported"


class Manifest(_Model):
    """The archive's record of one dossier; written last, so its presence marks a complete archive."""

    schema_id: Literal["sohoa.manifest/2"] = Field(MANIFEST_SCHEMA_ID, alias="schema")
    dossier_id: str
    procedure: str | None
    status: Status
    source: SourceInfo
    pages: list[ManifestPage]
    documents: list[Document]
    verification: Verification
    fields: DossierFields
    steps: dict[str, StepRecord]
    files: dict[str, FileRef]
    created_at: str = Field(description="UTC ISO-8601 time the archive was written")
    revision: int = Field(1, ge=1, description="1 as first archived; one more for each operator decision or re-archiving"
                                               " (earlier revisions are kept under history/)")
    decisions: list[Decision] = Field(default_factory=list, description="Operator decisions, oldest first")
    intake: Intake | None = Field(None, description="The inbox drop it came from (None: given directly)")
    records: RecordsMetadata | None = Field(None, description="Decree 30/2020 Appendix VI metadata (records systems)")
    protection: Protection | None = Field(None, description="Object lock / retention of the archived files")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        """Read a manifest of an earlier schema as the current one (every revision of it, history included)."""
        if isinstance(data, dict) and "sohoa.manifest/1" in (data.get("schema"), data.get("schema_id")):
            data = {k: v for k, v in data.items() if k != "schema_id"}
            return {**data, "schema": MANIFEST_SCHEMA_ID}  # schema 1's fields dict has exactly DossierFields' keys
        return data

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)


class ArchiveResult(_Model):
    dossier_id: str
    prefix: str
    manifest_url: str
    manifest: Manifest


class Reason(_Model):
    """Why an input was refused or failed: ``code`` serializes as its plain string."""

    code: ReasonCode
    message: str


class Refusal(_Model):
    """A capture step's verdict that the input is bad: a result, so it is cached like one."""

    code: ReasonCode
    message: str


class Outcome(_Model):
    """What ``sohoa run`` reports per input: one JSON line each."""

    input: str
    status: Literal["passed", "needs_review", "rejected", "refused", "failed", "duplicate"]
    archived_status: Status | None = Field(None, description="A duplicate's archived dossier: its status as it stands")
    dossier_id: str | None = None
    manifest: str | None = None
    pages: int | None = None
    documents: list[str] = Field(default_factory=list)
    cached_steps: list[str] = Field(default_factory=list)
    duration_s: float | None = None
    reason: Reason | None = None
    quarantine: str | None = None
