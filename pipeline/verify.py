"""Verification: what a clerk checks before a dossier may be archived unattended.

Every check is recorded with its outcome. A failing ``fatal`` check rejects the dossier, a
failing ``error`` sends it to review, warnings are kept for the record only.
"""

from __future__ import annotations

from pipeline import identifiers
from pipeline.catalog import catalog
from pipeline.keys import step_key
from pipeline.models import CaptureResult, Check, ClassifyResult, OcrResult, Status, Verification, VerifyResult
from pipeline.settings import Settings

VERSION = "2"  # 2: QR/printed agreement, resolution
MIN_LEGAL_DPI = 200  # digital copies must be at least 200 dpi (DOMAIN.md)


def key_settings(settings: Settings) -> dict:
    return {"catalog": catalog().digest, "min_page_confidence": settings.min_page_confidence}


def verify_key(classify_key: str, settings: Settings) -> str:
    return step_key("verify", VERSION, key_settings(settings), classify_key)


def check_pages(capture: CaptureResult, ocr: OcrResult) -> Check:
    readable = [p.n for p in ocr.pages if p.text.strip()]
    ok = bool(readable)
    return Check(
        id="pages.readable", ok=ok, severity="fatal",
        message="at least one page has text" if ok else "no page has any readable text",
        values={"pages": len(capture.pages), "readable": len(readable)},
    )


def check_confidence(ocr: OcrResult, settings: Settings) -> Check:
    low = [str(p.n) for p in ocr.pages if p.text.strip() and p.confidence < settings.min_page_confidence]
    return Check(
        id="ocr.confidence", ok=not low, severity="warning",
        message=f"pages below OCR confidence {settings.min_page_confidence:.0f}: {', '.join(low)}" if low
        else "OCR confidence is acceptable on every page",
        values={"low_pages": low, "threshold": settings.min_page_confidence},
    )


def check_procedure(classified: ClassifyResult) -> Check:
    code = classified.procedure
    known = code in catalog().procedures if code else False
    message = (f"procedure {code} is in the catalog" if known else
               f"procedure {code} is not in the catalog" if code else "no procedure code (receipt or caller)")
    return Check(id="procedure.known", ok=known, severity="error", message=message,
                 values={"procedure": code, "source": classified.procedure_source})


def check_components(classified: ClassifyResult) -> tuple[Check, list[str]]:
    procedure = catalog().procedures.get(classified.procedure or "")
    present = {d.type for d in classified.documents}
    missing = [t for t in procedure.required if t not in present] if procedure else []
    check = Check(
        id="components.required", ok=procedure is not None and not missing, severity="error",
        message=("all required components present" if procedure and not missing else
                 f"missing required components: {', '.join(missing)}" if procedure else
                 "required components unknown without a catalogued procedure"),
        values={"missing": missing, "present": sorted(present)},
    )
    return check, missing


def check_dossier_code(classified: ClassifyResult) -> Check:
    code = classified.fields.get("dossier_code")
    has_receipt = any(d.type == "phieu_tiep_nhan" for d in classified.documents)
    ok = isinstance(code, str) and identifiers.is_dossier_code(code)
    return Check(
        id="dossier_code.format", ok=ok, severity="error" if has_receipt else "warning",
        message=f"dossier code {code} is well-formed" if ok else
        ("the receipt has no readable dossier code" if has_receipt else "no dossier code found (no receipt page)"),
        values={"dossier_code": code if isinstance(code, str) else None},
    )


def check_dossier_code_agreement(classified: ClassifyResult) -> Check:
    code, printed = classified.fields.get("dossier_code"), classified.fields.get("dossier_code_printed")
    return Check(
        id="dossier_code.consistent", ok=printed is None, severity="error",
        message="the QR code and the printed dossier code agree" if printed is None else
        f"QR code says {code} but the receipt prints {printed}",
        values={"qr": code if isinstance(code, str) else None, "printed": printed if isinstance(printed, str) else None},
    )


def check_resolution(capture: CaptureResult) -> Check:
    low = [str(p.n) for p in capture.pages if p.dpi < MIN_LEGAL_DPI]
    return Check(
        id="quality.resolution", ok=not low, severity="warning",
        message=f"pages below the legal {MIN_LEGAL_DPI} dpi: {', '.join(low)}" if low
        else f"every page is at least {MIN_LEGAL_DPI} dpi",
        values={"low_pages": low, "minimum_dpi": MIN_LEGAL_DPI},
    )


def check_cccd(classified: ClassifyResult) -> Check:
    invalid = classified.fields.get("cccd_invalid", [])
    invalid = invalid if isinstance(invalid, list) else [invalid]
    problems = [f"{n} ({identifiers.cccd_problem(n)})" for n in invalid]
    return Check(
        id="cccd.format", ok=not invalid, severity="error",
        message="ID numbers found are well-formed" if not invalid else f"malformed ID numbers: {'; '.join(problems)}",
        values={"valid": list(classified.fields.get("cccd", [])), "invalid": list(invalid)},
    )


def decide(checks: list[Check]) -> Status:
    failed = {c.severity for c in checks if not c.ok}
    if "fatal" in failed:
        return "rejected"
    return "needs_review" if "error" in failed else "passed"


def verify(capture: CaptureResult, ocr: OcrResult, classified: ClassifyResult, settings: Settings, key: str) -> VerifyResult:
    components, missing = check_components(classified)
    checks = [
        check_pages(capture, ocr),
        check_confidence(ocr, settings),
        check_procedure(classified),
        components,
        check_dossier_code(classified),
        check_dossier_code_agreement(classified),
        check_cccd(classified),
        check_resolution(capture),
    ]
    return VerifyResult(key=key, status=decide(checks), verification=Verification(checks=checks, missing=missing))
