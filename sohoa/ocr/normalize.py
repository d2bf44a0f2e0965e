"""The OCR copy of a page: upright, deskewed, at least 300 dpi, grey.

The archived page stays as scanned; only tesseract sees this copy. Every change is one affine
transform, kept as a matrix, so the text layer found on the copy can be laid back exactly
over the original image in the searchable PDF (see ``layer_to_page``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

OCR_DPI = 300
UPSCALE_BELOW_DPI = 250
DESKEW_FROM_DEG = 0.3


@dataclass(frozen=True)
class OcrImage:
    """Geometry of the OCR copy of a page: how it was made from the page as stored."""

    width: int
    height: int
    dpi: int
    rotation: int  # clockwise quarter turns applied, in degrees
    deskew: float  # degrees turned clockwise to straighten counter-clockwise skewed text
    matrix: tuple[float, ...]  # 3x3 row-major, original pixel (x, y) -> copy pixel (x', y'), exact
    placement: tuple[float, ...]  # the same without the deskew rotation: where the text layer goes


def _quarter(gray: np.ndarray, degrees: int) -> tuple[np.ndarray, np.ndarray]:
    """Turn clockwise by a multiple of 90 degrees; the matrix maps original to turned pixels."""
    height, width = gray.shape
    turns = (degrees // 90) % 4
    matrices = {
        0: [[1, 0, 0], [0, 1, 0]],
        1: [[0, -1, height], [1, 0, 0]],
        2: [[-1, 0, width], [0, -1, height]],
        3: [[0, 1, 0], [-1, 0, width]],
    }
    matrix = np.vstack([np.array(matrices[turns], dtype=np.float64), [0, 0, 1]])
    return np.ascontiguousarray(np.rot90(gray, k=-turns)), matrix


def _rotate_scale(gray: np.ndarray, skew: float, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rotate by ``-skew`` (straightening) about the centre, canvas grown to fit, and scale.

    Returns the image, the exact matrix, and the same matrix without the rotation (centre to
    centre), which is how the text layer is placed: see ``layer_to_page``.
    """
    height, width = gray.shape
    cos, sin = abs(math.cos(math.radians(skew))), abs(math.sin(math.radians(skew)))
    new_w, new_h = int(round((width * cos + height * sin) * scale)), int(round((width * sin + height * cos) * scale))
    matrices = []
    for angle in (-skew, 0.0):
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, scale)
        matrix[0, 2] += new_w / 2 - width / 2  # the centre lands on the centre of the grown canvas
        matrix[1, 2] += new_h / 2 - height / 2
        matrices.append(np.vstack([matrix, [0, 0, 1]]))
    flags = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_LINEAR
    out = cv2.warpAffine(gray, matrices[0][:2], (new_w, new_h), flags=flags, borderValue=255)
    return out, matrices[0], matrices[1]


def _changes(dpi: int, rotation: int, skew: float) -> tuple[int, float, float]:
    """Quarter turn, straightening angle and scale this page's OCR copy needs."""
    return rotation % 360, (skew if abs(skew) >= DESKEW_FROM_DEG else 0.0), (OCR_DPI / dpi if dpi < UPSCALE_BELOW_DPI else 1.0)


def needs_copy(dpi: int, rotation: int, skew: float) -> bool:
    """False when the stored page can be read as it is (no turn, no straightening, no upscaling)."""
    return _changes(dpi, rotation, skew) != (0, 0.0, 1.0)


def as_stored(size: tuple[int, int], dpi: int) -> OcrImage:
    """The geometry of a page read as it is stored."""
    return OcrImage(width=size[0], height=size[1], dpi=dpi, rotation=0, deskew=0.0, matrix=_IDENTITY, placement=_IDENTITY)


def prepare(source: Path, dpi: int, rotation: int, skew: float) -> tuple[OcrImage, np.ndarray]:
    """The OCR copy of the page image ``source``: its geometry and its grey pixels."""
    gray = cv2.imread(str(source), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        raise ValueError(f"page image {source.name} cannot be decoded")
    turn, straighten, scale = _changes(dpi, rotation, skew)
    turned, matrix = _quarter(gray, turn)
    del gray
    placement = matrix
    if straighten or scale != 1.0:
        turned, exact, unrotated = _rotate_scale(turned, straighten, scale)
        matrix, placement = exact @ matrix, unrotated @ matrix
    return OcrImage(width=turned.shape[1], height=turned.shape[0], dpi=int(round(dpi * scale)), rotation=turn,
                    deskew=straighten, matrix=_flat(matrix), placement=_flat(placement)), turned


def _flat(matrix: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in matrix.ravel())


_IDENTITY = _flat(np.eye(3))


def to_original(image: OcrImage, boxes: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Word boxes (left, top, width, height) on the OCR copy, as boxes on the original page."""
    if not boxes:
        return []
    inverse = np.linalg.inv(np.array(image.matrix).reshape(3, 3))
    b = np.array(boxes, dtype=np.float64)
    left, top, right, bottom = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    corners = np.stack([np.stack([x, y, np.ones_like(x)], axis=1)
                        for x, y in ((left, top), (right, top), (left, bottom), (right, bottom))], axis=1)
    mapped = corners @ inverse.T  # (boxes, 4 corners, 3)
    x0, y0 = mapped[:, :, 0].min(axis=1), mapped[:, :, 1].min(axis=1)
    x1, y1 = mapped[:, :, 0].max(axis=1), mapped[:, :, 1].max(axis=1)
    return [(int(round(a)), int(round(b_)), int(round(c - a)), int(round(d - b_)))
            for a, b_, c, d in zip(x0.tolist(), y0.tolist(), x1.tolist(), y1.tolist())]


def layer_to_page(image: OcrImage, page_height: int, page_dpi: int) -> tuple[float, ...]:
    """PDF ``cm`` operands placing the copy's text layer (points, y up) over the original page (points, y up).

    The layer is placed without the deskew rotation, centre on centre: its lines stay
    horizontal so that text extraction (pdftotext, viewers' search) returns them intact, at the
    cost of words sitting up to sin(skew) x their distance from the centre off their image
    (about 4 mm at the edge of an A4 page skewed 2 degrees). Word boxes in words.json are exact.
    """
    k = 72.0 / image.dpi  # points per pixel of the copy
    layer_to_copy = np.array([[1 / k, 0, 0], [0, -1 / k, image.height], [0, 0, 1]])
    copy_to_original = np.linalg.inv(np.array(image.placement).reshape(3, 3))
    c = 72.0 / page_dpi
    original_to_page = np.array([[c, 0, 0], [0, -c, page_height * c], [0, 0, 1]])
    m = original_to_page @ copy_to_original @ layer_to_copy
    return (m[0, 0], m[1, 0], m[0, 1], m[1, 1], m[0, 2], m[1, 2])
