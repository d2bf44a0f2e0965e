"""The table of steps, and the cache keys of a dossier's steps, known before any step runs.

Keys chain on keys, not on results, so the whole plan follows from the input's SHA-256 and
the settings: a run can tell up front whether an archive made with exactly these steps and
settings already exists (a duplicate) and which steps a changed setting will rerun.

Each step is one row of ``TABLE``: its name, version, key function (None: not cached) and run
function. The runner (sohoa/services/runner.py) and every orchestrator go through the table, so
adding or changing a step is one row here and the step's own module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from sohoa.domain.model import ModelRef, choose
from sohoa.domain.model import load as load_model
from sohoa.kernel.errors import InputRefused, UsageError
from sohoa.kernel.models import (
    ArchiveResult,
    CaptureResult,
    ClassifyResult,
    Intake,
    Manifest,
    OcrResult,
    Outcome,
    Refusal,
    SourceInfo,
    StepRecord,
    VerifyResult,
)
from sohoa.kernel.settings import Settings
from sohoa.steps import archive, capture, classify, verify
from sohoa.steps import ocr as engine
from sohoa.storage import ObjectNotFound, Store

STEPS = ("capture", "ocr", "classify", "verify", "archive")


class StepPlan(BaseModel):
    version: str
    key: str


@dataclass(frozen=True)
class Planning:
    """What the keys depend on besides the settings: the input, the caller's procedure, the trained model."""

    info: SourceInfo
    settings: Settings
    procedure: str | None = None
    model: ModelRef | None = None


@dataclass
class StepContext:
    """What a step's run function gets: the input, its settings and stores, and the results before it."""

    path: Path
    planning: Planning
    work: Store
    archive: Store
    keys: dict[str, StepPlan] = field(default_factory=dict)
    done: dict[str, BaseModel] = field(default_factory=dict)
    records: dict[str, StepRecord] = field(default_factory=dict)
    intake: Intake | None = None
    ocr_progress: Callable[[CaptureResult], Callable[[int, int], None] | None] = lambda _: None

    @property
    def settings(self) -> Settings:
        return self.planning.settings


@dataclass(frozen=True)
class Step:
    name: str
    version: str
    key: Callable[[Planning, str], str] | None  # (planning, upstream key) -> key; None: never cached
    run: Callable[[StepContext, str], BaseModel]  # (context, key) -> result
    results: tuple[type[BaseModel], ...]  # what a persisted result may be, for reading it back


def _capture(ctx: StepContext, key: str) -> CaptureResult | Refusal:
    """Bad input is a result (a Refusal), not a failure: no traceback, and the verdict is cached."""
    try:
        return capture.capture(ctx.path, ctx.planning.info, ctx.work, ctx.settings, key)
    except InputRefused as refusal:
        return Refusal(code=refusal.code, message=refusal.message)


def _ocr(ctx: StepContext, key: str) -> OcrResult:
    captured = ctx.done["capture"]
    return engine.run_ocr(captured, ctx.work, ctx.settings, key, on_progress=ctx.ocr_progress(captured))


def _classify(ctx: StepContext, key: str) -> ClassifyResult:
    ref = ctx.planning.model
    trained = load_model(ctx.archive, ref) if ref else None
    return classify.classify(ctx.done["ocr"], ctx.done["capture"], ctx.settings, key, ctx.planning.procedure,
                             store=ctx.work, model=trained, model_ref=ref)


def _verify(ctx: StepContext, key: str) -> VerifyResult:
    return verify.verify(ctx.done["capture"], ctx.done["ocr"], ctx.done["classify"], ctx.settings, key)


def _archive(ctx: StepContext, _key: str) -> ArchiveResult:
    d = ctx.done
    return archive.archive(ctx.path, d["capture"], d["ocr"], d["classify"], d["verify"], ctx.records, ctx.work, ctx.archive,
                           intake=ctx.intake, settings=ctx.settings)


TABLE: tuple[Step, ...] = (
    Step("capture", capture.VERSION, lambda p, _up: capture.capture_key(p.info, p.settings), _capture,
         (CaptureResult, Refusal)),
    Step("ocr", engine.VERSION, lambda p, up: engine.ocr_key(up, p.settings), _ocr, (OcrResult,)),
    Step("classify", classify.VERSION, lambda p, up: classify.classify_key(up, p.settings, p.procedure, p.model),
         _classify, (ClassifyResult,)),
    Step("verify", verify.VERSION, lambda p, up: verify.verify_key(up, p.settings), _verify, (VerifyResult,)),
    # not cached: idempotent (files already there with the same SHA-256 are skipped), and it re-checks the archive
    Step("archive", archive.VERSION, None, _archive, (ArchiveResult,)),
)
assert tuple(step.name for step in TABLE) == STEPS


def plan(source: SourceInfo, settings: Settings, procedure: str | None, model: ModelRef | None = None) -> dict[str, StepPlan]:
    """The key of every cached step, each chained on the one before (capture's on the input's SHA-256)."""
    planning, upstream, keys = Planning(source, settings, procedure, model), source.sha256, {}
    for step in TABLE:
        if step.key is not None:
            upstream = step.key(planning, upstream)
            keys[step.name] = StepPlan(version=step.version, key=upstream)
    return keys


def from_first(refresh: list[str] | None) -> set[str]:
    """Refreshing a step refreshes every step after it: their inputs may have changed."""
    unknown = set(refresh or []) - set(STEPS)
    if unknown:
        raise UsageError(f"unknown steps in refresh: {sorted(unknown)}; steps are {', '.join(STEPS)}")
    if not refresh:
        return set()
    return set(STEPS[min(STEPS.index(step) for step in refresh):])


@dataclass
class Admission:
    """What is known of an input before any step runs: its identity, its plan, an existing archive."""

    info: SourceInfo
    steps: dict[str, StepPlan]
    earlier: archive.ArchivedSource | None
    model: ModelRef | None = None  # the trained classifier the classify step uses with the rules

    def looked_up(self, store: Store, refresh: bool) -> Admission:
        """The archive of this content made by these steps, looked up in the archive's index now (another run may
        have archived it since this input was admitted); none for a ``refresh``, which processes it again."""
        earlier = None if refresh else archive.find_archived(store, self.info.sha256, self.steps["verify"].key)
        return replace(self, earlier=earlier)

    def duplicate(self, source: str, store: Store, duration_s: float) -> Outcome | None:
        """The outcome of an input already archived with these steps and settings (None if it is not): what the
        archived dossier is now (status, pages, documents), so the caller need not look it up. An archive whose
        manifest cannot be read is still this input's: a duplicate without those (``sohoa check`` tells why)."""
        if self.earlier is None:
            return None
        outcome = Outcome(input=source, status="duplicate", dossier_id=self.earlier.dossier_id,
                          manifest=store.url_for(self.earlier.manifest_key), duration_s=duration_s)
        try:
            manifest = Manifest.model_validate_json(store.get_bytes(self.earlier.manifest_key))
        except (ObjectNotFound, ValueError):
            return outcome
        return outcome.model_copy(update={"archived_status": manifest.status, **contents(manifest)})


def contents(manifest: Manifest) -> dict[str, Any]:
    """What an outcome says of an archived dossier besides its status: its pages and its documents' types."""
    return {"pages": len(manifest.pages), "documents": [d.type for d in manifest.documents]}


def admit(path: Path, settings: Settings, procedure: str | None, store: Store, refresh: bool) -> Admission:
    """Identify the input (InputRefused for bad input) and look it up in the archive's index.

    Cheap (a hash and one read), and free of Prefect: the CLI asks it before starting any flow,
    so a batch that is already archived costs no orchestration at all.
    """
    info = capture.describe_source(path, settings)
    model = classifier_model(store, settings)
    return Admission(info=info, steps=plan(info, settings, procedure, model), earlier=None, model=model).looked_up(store, refresh)


def classifier_model(store: Store, settings: Settings) -> ModelRef | None:
    """The trained classifier ``SOHOA_CLASSIFIER`` names in the archive store (None: rules only)."""
    return choose(store, settings.classifier)
