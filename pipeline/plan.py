"""The cache keys of a dossier's steps, known before any step runs.

Keys chain on keys, not on results, so the whole plan follows from the input's SHA-256 and
the settings: a run can tell up front whether an archive made with exactly these steps and
settings already exists (a duplicate) and which steps a changed setting will rerun.
"""

from __future__ import annotations

from pydantic import BaseModel

from ocr import engine
from pipeline import capture, classify, verify
from pipeline.models import SourceInfo
from pipeline.settings import Settings


class StepPlan(BaseModel):
    version: str
    key: str


def plan(source: SourceInfo, settings: Settings, procedure: str | None) -> dict[str, StepPlan]:
    capture_key = capture.capture_key(source, settings)
    ocr_key = engine.ocr_key(capture_key, settings)
    classify_key = classify.classify_key(ocr_key, settings, procedure)
    return {
        "capture": StepPlan(version=capture.VERSION, key=capture_key),
        "ocr": StepPlan(version=engine.VERSION, key=ocr_key),
        "classify": StepPlan(version=classify.VERSION, key=classify_key),
        "verify": StepPlan(version=verify.VERSION, key=verify.verify_key(classify_key, settings)),
    }
