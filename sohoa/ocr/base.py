"""What the OCR step asks of an engine (``OcrEngine``), and what it gets back (``PageReading``).

The OCR step (sohoa/steps/ocr.py) knows nothing of Tesseract: it hands an engine a ``PageToRead``
and gets back a ``PageReading`` (text, words with boxes and confidences, lines, and the page's
invisible text layer as a one-page PDF). Tesseract's own formats (TSV, its renderer) stay inside
its engines (sohoa/ocr/tesseract_engines.py). The registry that picks an engine by name is
sohoa/ocr/engines.py.

An engine's ``fingerprint`` enters the OCR step's cache key with its ``name``: two engines never
share cached results, and an engine that reads differently after an update must change it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from sohoa.kernel.models import Word
from sohoa.kernel.settings import Settings
from sohoa.ocr import normalize


@dataclass(frozen=True)
class PageToRead:
    """One pass over one page, as the step asks for it: the stored image and the OCR copy it needs.

    Each engine makes the copy (sohoa/ocr/normalize.py) the way it reads best: the library wants
    pixels, the program a file, and reads the stored file itself when no copy is needed."""

    n: int  # the page's number in the dossier
    source: Path  # the page image as stored
    size: tuple[int, int]  # (width, height) of the stored image, pixels
    dpi: int
    rotation: int  # clockwise degrees to turn it before reading
    skew: float
    base: Path  # where the engine writes its outputs: the text layer is ``base``.pdf

    def needs_copy(self) -> bool:
        return normalize.needs_copy(self.dpi, self.rotation, self.skew)

    def as_stored(self) -> normalize.OcrImage:
        """The geometry of the stored image read as it is."""
        return normalize.as_stored(self.size, self.dpi)

    def prepare(self) -> tuple[normalize.OcrImage, np.ndarray]:
        """The OCR copy: its geometry and its grey pixels (decoded now: call it before waiting for an engine)."""
        return normalize.prepare(self.source, self.dpi, self.rotation, self.skew)

    def geometry(self) -> normalize.OcrImage:
        """The geometry of what should be read, for an engine that does not need the pixels."""
        return self.prepare()[0] if self.needs_copy() else self.as_stored()


@dataclass(frozen=True)
class TextLine:
    """A line of words in reading order; ``id`` is the ``line`` of its words."""

    id: int
    block: int  # the block (column, paragraph group) the line belongs to, numbered in reading order
    box: tuple[int, int, int, int]  # left, top, width, height in the pixels of the image read


@dataclass(frozen=True)
class PageReading:
    """What any engine makes of one page: everything the OCR step keeps, in no engine's own format.

    ``text`` is NFC without surrounding white space. Word and line boxes are in the pixels of the
    image read (``image``, the OCR copy); the step maps word boxes back to the page as stored.
    ``layer`` is a one-page PDF of invisible text, ``image.width`` x ``image.height`` pixels at
    ``image.dpi``, that the searchable PDF lays over the page."""

    image: normalize.OcrImage
    text: str
    words: list[Word]
    lines: list[TextLine]
    layer: Path


@runtime_checkable
class OcrEngine(Protocol):
    """An OCR engine as the step uses it. Engines are shared by every dossier in a process: thread-safe."""

    name: str

    def available(self, settings: Settings) -> bool:
        """Whether it can run here, cheaply and without raising: what ``auto`` decides on."""
        ...

    def fingerprint(self, settings: Settings) -> dict | str:
        """Identity of the engine and its models for the OCR cache key; must start no process."""
        ...

    def check(self, settings: Settings) -> str:
        """Its version line; OcrError ``engine_missing`` or ``language_missing`` when it cannot read."""
        ...

    def warm_up(self, settings: Settings) -> None:
        """Start loading what the first page would wait for; never raises (``check`` says why)."""
        ...

    def read(self, page: PageToRead, settings: Settings, timeout_s: float) -> PageReading:
        """Read one page; OcrError ``page_timeout`` past ``timeout_s``, ``engine_failed`` otherwise."""
        ...
