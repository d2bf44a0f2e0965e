"""Page measurements with OpenCV: text direction, skew angle and blankness.

All work on a downscaled grey copy (about 100 dpi): the answers do not change at higher
resolution and the cost drops by an order of magnitude.

OpenCV runs single-threaded in this process: pages and dossiers are already processed side
by side with the OCR engines on every core, and OpenCV's own threads only added contention
(measured: 27% more CPU per captured page for a 20% shorter wall time on an idle machine).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

cv2.setNumThreads(1)

ANALYSIS_DPI = 100
MAX_SKEW_DEG = 5.0
BLANK_INK_RATIO = 0.0015
SIDEWAYS_RATIO = 1.5  # vertical line structure this much stronger than horizontal: text runs sideways


@dataclass(frozen=True)
class Layout:
    """What a page needs before OCR: a quarter turn (0 or 90, clockwise), a skew angle, or nothing (blank)."""

    quarter: int
    skew: float
    blank: bool


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


def _is_blank_ink(ink: np.ndarray) -> bool:
    """A page with (almost) no ink: blank backs of duplex scans."""
    opened = cv2.morphologyEx(ink, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))  # drop speckle noise
    return float(np.count_nonzero(opened)) / opened.size < BLANK_INK_RATIO


def _best_angle(ink: np.ndarray) -> tuple[float, float]:
    """(angle that lines the text up horizontally, its projection score), coarse to fine in +-5 degrees.

    The angle whose horizontal projection has the sharpest peaks (highest variance) is the
    one that puts the text lines on rows.
    """
    center = (ink.shape[1] / 2, ink.shape[0] / 2)

    def score(angle: float) -> float:
        matrix = cv2.getRotationMatrix2D(center, angle, 1.0)
        rotated = cv2.warpAffine(ink, matrix, (ink.shape[1], ink.shape[0]), flags=cv2.INTER_NEAREST)
        return float(np.var(rotated.sum(axis=1, dtype=np.float64)))

    best = max(np.arange(-MAX_SKEW_DEG, MAX_SKEW_DEG + 0.01, 1.0), key=score)
    best = max(np.arange(best - 0.8, best + 0.81, 0.2), key=score)
    best = max(np.arange(best - 0.15, best + 0.16, 0.05), key=score)
    return float(best), score(best)


def analyze(gray: np.ndarray, dpi: int = 300) -> Layout:
    """Blankness, whether the text runs sideways, and the skew (degrees, counter-clockwise
    positive) in the text's own direction.

    Upside-down cannot be told from line structure; OCR settles it (see ocr/engine.py).
    """
    ink = _ink(gray, dpi)
    if _is_blank_ink(ink) or np.count_nonzero(ink) < 50:
        return Layout(quarter=0, skew=0.0, blank=_is_blank_ink(ink))
    angle, score = _best_angle(ink)
    upright = np.ascontiguousarray(np.rot90(ink, k=-1))  # the page turned 90 degrees clockwise
    angle_turned, score_turned = _best_angle(upright)
    if score_turned > SIDEWAYS_RATIO * score:
        return Layout(quarter=90, skew=round(-angle_turned, 2), blank=False)
    return Layout(quarter=0, skew=round(-angle, 2), blank=False)
