"""Settings for every step, read from the environment (prefix ``SOHOA_``) or passed in.

``Settings`` is flat (one ``SOHOA_*`` variable per field). Each cached step has a model of the
settings that change what it produces (``CaptureSettings``, ``OcrSettings``, ``ClassifySettings``,
``VerifySettings``), taken from ``Settings`` by field name and hashed whole into the step's key
(``sohoa.kernel.keys``): adding a field to a step's model puts it in the key, so a change to one
step's settings reruns that step and the ones after it, and nothing before. Fields in no step
model (``RUNTIME``) change how fast or where a step runs, never what it makes;
``tests/test_settings.py`` fails when a step reads a field that is in neither.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/sohoa`` (``~/.local/share/sohoa``): a stable place, whatever the cwd."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "sohoa"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SOHOA_", extra="ignore")

    archive: str = Field(
        default_factory=lambda: str(default_data_dir() / "archive"),
        description="Archive store URL: a directory, file://DIR or s3://bucket/prefix",
    )
    work: str = Field(
        default_factory=lambda: str(default_data_dir() / "work"),
        description="Work store URL for page images and persisted step results (same forms as archive)",
    )
    # capture
    render_dpi: int = Field(300, ge=72, le=1200, description="DPI for rasterizing PDF pages that are not a single image")
    max_input_bytes: int = Field(1 << 30, description="Refuse inputs larger than this")
    max_pages: int = Field(2000, description="Refuse dossiers with more pages")
    max_page_pixels: int = Field(200_000_000, description="Refuse pages with more pixels (decompression bombs)")
    max_render_pixels: int = Field(
        40_000_000, description="Rasterize oversized PDF pages (posters, drawings) at a lower DPI to stay under this")
    max_content_bytes: int = Field(
        64 << 20, ge=1 << 16, description="Refuse a PDF page whose drawing instructions inflate past this (too_complex)")
    # ocr
    ocr_engine: str = Field(
        "auto", pattern=r"^[a-z][a-z0-9_-]{0,31}$",
        description="library: warm in-process engines (libtesseract); cli: one tesseract process per page; "
                    "auto: the library when it loads; another name: an engine registered with sohoa.ocr.engines")
    tesseract_cmd: str = Field("tesseract", description="Tesseract executable (the cli engine)")
    languages: str = Field("vie", description="Tesseract languages (vie alone measured best: bench/ocr_quality.py)")
    psm: int = Field(3, ge=0, le=13, description="Tesseract page segmentation mode")
    jobs: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1,
                      description="Pages read at once in one process (one thread each), across all dossiers in flight")
    page_timeout_s: float = Field(300.0, gt=0, description="Give up on a page after this many seconds")
    # classify
    title_lines: int = Field(12, ge=1, description="Lines from the top of a page searched for a document title")
    taxonomy: str | None = Field(None, description="TOML file of document types (default: the packaged taxonomy)")
    classifier: str = Field("auto", pattern=r"^(auto|rules|\d+)$",
                            description="auto: the newest trained model in the archive store, with the rules; "
                                        "rules: rules only; N: model version N")
    # verify
    catalog: str | None = Field(None, description="TOML file of procedures (default: the packaged catalog)")
    min_page_confidence: float = Field(60.0, ge=0, le=100, description="Pages below this mean OCR confidence get a warning")
    min_type_confidence: float = Field(0.7, ge=0, le=1, description="Documents typed with less confidence go to review")
    # review
    review_timeout_s: int = Field(86400, ge=1, description="How long a dossier waits for a decision in the Prefect UI "
                                                           "before it waits in the review queue only")
    ocr_concurrency: str | None = Field(None, description="Name of a Prefect global concurrency limit that every OCR step "
                                                          "takes a slot of (several workers, one budget of OCR)")
    # archive
    agency: str = Field("unknown", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                        description="Agency code (e.g. 000.00.00.H49) for dossiers whose dossier code was not read: "
                                    "the first folder of the archive layout")
    retention_days: int | None = Field(None, ge=1, le=36500, description="Object-lock retention of archived files, in days, "
                                       "on buckets with object lock (default: the bucket's own default retention)")
    retention_mode: Literal["GOVERNANCE", "COMPLIANCE"] = Field("GOVERNANCE", description="Object-lock mode for retention_days")
    # reuse
    index: str | None = Field(None, description="SQLite file of the reuse index (sohoa find); default: beside a local archive "
                                                "(.sohoa-index/), else ~/.cache/sohoa/index-<hash of the archive URL>.sqlite")


class StepSettings(BaseModel):
    """The settings one cached step reads, hashed whole into its key."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    data_files: ClassVar[tuple[str, ...]] = ()  # fields naming a file: the key takes the file's digest, not its path

    @classmethod
    def of(cls, settings: Settings) -> Self:
        return cls(**{name: getattr(settings, name) for name in cls.model_fields})


class CaptureSettings(StepSettings):
    render_dpi: int
    max_input_bytes: int
    max_pages: int
    max_page_pixels: int
    max_render_pixels: int
    max_content_bytes: int


class OcrSettings(StepSettings):
    """The engine itself (``ocr_engine``, ``tesseract_cmd``) enters the key as the chosen engine's name and
    fingerprint (its program or library and language data), not as the setting that chose it."""

    languages: str
    psm: int


class ClassifySettings(StepSettings):
    data_files: ClassVar[tuple[str, ...]] = ("taxonomy", "catalog")
    title_lines: int
    taxonomy: str | None
    catalog: str | None


class VerifySettings(StepSettings):
    data_files: ClassVar[tuple[str, ...]] = ("taxonomy", "catalog")
    catalog: str | None
    taxonomy: str | None
    min_page_confidence: float
    min_type_confidence: float


STEP_SETTINGS: dict[str, type[StepSettings]] = {
    "capture": CaptureSettings, "ocr": OcrSettings, "classify": ClassifySettings, "verify": VerifySettings}
# how fast or where steps run, or what happens around them: never what a cached step produces
RUNTIME = frozenset({"archive", "work", "ocr_engine", "tesseract_cmd", "jobs", "page_timeout_s", "classifier",
                     "review_timeout_s", "ocr_concurrency", "agency", "retention_days",
                     "retention_mode", "index"})
