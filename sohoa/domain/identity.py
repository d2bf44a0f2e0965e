"""Dossier identity: the dossier code from the receipt's QR code and from its printed text.

The QR code is the more reliable source (error-corrected, no OCR), so it wins; when the
printed code disagrees, both are kept so verification can flag it.
"""

from __future__ import annotations

import cv2
import numpy as np

from sohoa.domain import identifiers

QR_FAST_DPI = 150


def read_qr_codes(gray: np.ndarray, dpi: int) -> list[str]:
    """Decoded QR payloads on a page: a fast pass at 150 dpi, then full resolution if none was found."""
    detector = cv2.QRCodeDetectorAruco()
    scale = QR_FAST_DPI / dpi
    attempts = [cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)] if scale < 0.9 else []
    for image in [*attempts, gray]:
        try:
            found, payloads, _, _ = detector.detectAndDecodeMulti(image)
        except cv2.error:
            found, payloads = False, ()
        decoded = [p.strip() for p in payloads if p and p.strip()] if found else []
        if decoded:
            return decoded
    return []


def dossier_codes_in_qr(payloads: list[str]) -> list[str]:
    """Valid dossier codes in QR payloads (a payload may be the bare code or text/URL containing it)."""
    codes = [p for p in payloads if identifiers.is_dossier_code(p)]
    for payload in payloads:
        codes += identifiers.find_dossier_codes(payload)
    return list(dict.fromkeys(codes))
