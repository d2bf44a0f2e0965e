"""The cache keys of a dossier's steps, known before any step runs.

Keys chain on keys, not on results, so the whole plan follows from the input's SHA-256 and
the settings: a run can tell up front whether an archive made with exactly these steps and
settings already exists (a duplicate) and which steps a changed setting will rerun.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from sohoa.steps import ocr as engine
from sohoa.steps import archive, capture, classify, verify
from sohoa.domain.model import ModelRef, choose
from sohoa.kernel.models import Outcome, SourceInfo
from sohoa.kernel.settings import Settings
from sohoa.storage import Store

STEPS = ("capture", "ocr", "classify", "verify", "archive")


class StepPlan(BaseModel):
    version: str
    key: str


def plan(source: SourceInfo, settings: Settings, procedure: str | None, model: ModelRef | None = None) -> dict[str, StepPlan]:
    capture_key = capture.capture_key(source, settings)
    ocr_key = engine.ocr_key(capture_key, settings)
    classify_key = classify.classify_key(ocr_key, settings, procedure, model)
    return {
        "capture": StepPlan(version=capture.VERSION, key=capture_key),
        "ocr": StepPlan(version=engine.VERSION, key=ocr_key),
        "classify": StepPlan(version=classify.VERSION, key=classify_key),
        "verify": StepPlan(version=verify.VERSION, key=verify.verify_key(classify_key, settings)),
    }


@dataclass
class Admission:
    """What is known of an input before any step runs: its identity, its plan, an existing archive."""

    info: SourceInfo
    steps: dict[str, StepPlan]
    earlier: archive.ArchivedSource | None
    model: ModelRef | None = None  # the trained classifier the classify step uses with the rules

    def duplicate(self, source: str, store: Store, duration_s: float) -> Outcome | None:
        """The outcome of an input already archived with these steps and settings (None if it is not)."""
        if self.earlier is None:
            return None
        return Outcome(input=source, status="duplicate", dossier_id=self.earlier.dossier_id,
                       manifest=store.url_for(self.earlier.manifest_key), duration_s=duration_s)


def admit(path: Path, settings: Settings, procedure: str | None, store: Store, refresh: bool) -> Admission:
    """Identify the input (InputRefused for bad input) and look it up in the archive's index.

    Cheap (a hash and one read), and free of Prefect: the CLI asks it before starting any flow,
    so a batch that is already archived costs no orchestration at all.
    """
    info = capture.describe_source(path, settings)
    model = classifier_model(store, settings)
    steps = plan(info, settings, procedure, model)
    earlier = None if refresh else archive.find_archived(store, info.sha256, steps["verify"].key)
    return Admission(info=info, steps=steps, earlier=earlier, model=model)


def classifier_model(store: Store, settings: Settings) -> ModelRef | None:
    """The trained classifier ``SOHOA_CLASSIFIER`` names in the archive store (None: rules only)."""
    return choose(store, settings.classifier)
