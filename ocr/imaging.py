"""Page measurements with OpenCV: skew angle and blankness.

Both work on a downscaled grey copy (about 100 dpi): the answer does not change at higher
resolution and the cost drops by an order of magnitude.
"""

from __future__ import annotations

import cv2
import numpy as np

ANALYSIS_DPI = 100
MAX_SKEW_DEG = 5.0
BLANK_INK_RATIO = 0.0015


def decode_gray(data: bytes) -> np.ndarray:
    """Decode encoded image bytes to 8-bit grey (raises ValueError when undecodable)."""
    array = np.frombuffer(data, dtype=np.uint8)
    gray = cv2.imdecode(array, cv2.IMREAD_GRAYSCALE)
    if gray is None:
        raise ValueError("image cannot be decoded")
    return gray


def _ink(gray: np.ndarray, dpi: int) -> np.ndarray:
    """Binary ink mask (ink = 255) of a downscaled copy, page borders cropped away."""
    scale = min(1.0, ANALYSIS_DPI / max(dpi, 1))
    small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
    height, width = small.shape
    margin_y, margin_x = height // 30, width // 30
    small = small[margin_y : height - margin_y, margin_x : width - margin_x]
    _, ink = cv2.threshold(small, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    if float(small.std()) < 8:  # Otsu invents ink on a flat page: nothing stands out, so no ink
        ink[:] = 0
    return ink


def is_blank(gray: np.ndarray, dpi: int = 300) -> bool:
    """A page with (almost) no ink: blank backs of duplex scans."""
    ink = _ink(gray, dpi)
    ink = cv2.morphologyEx(ink, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))  # drop speckle noise
    return float(np.count_nonzero(ink)) / ink.size < BLANK_INK_RATIO


def measure_skew(gray: np.ndarray, dpi: int = 300) -> float:
    """Skew of text lines in degrees (positive = counter-clockwise), by projection profiles.

    The angle whose horizontal projection has the sharpest peaks (highest variance) is the
    one that lines the text up; searched coarse to fine within +-5 degrees.
    """
    ink = _ink(gray, dpi)
    if np.count_nonzero(ink) < 50:
        return 0.0
    center = (ink.shape[1] / 2, ink.shape[0] / 2)

    def score(angle: float) -> float:
        matrix = cv2.getRotationMatrix2D(center, angle, 1.0)
        rotated = cv2.warpAffine(ink, matrix, (ink.shape[1], ink.shape[0]), flags=cv2.INTER_NEAREST)
        return float(np.var(rotated.sum(axis=1, dtype=np.float64)))

    best = max(np.arange(-MAX_SKEW_DEG, MAX_SKEW_DEG + 0.01, 0.5), key=score)
    best = max(np.arange(best - 0.5, best + 0.51, 0.1), key=score)
    return round(-float(best), 2)
