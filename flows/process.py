"""Prefect wiring of the five steps; no domain logic lives here.

Each step is a task whose cache key is the content-addressed key from ``pipeline.keys`` and
whose result is persisted (JSON) in the work store, so any later run, in any process, that
reaches the same store reuses it. ``refresh`` forces chosen steps to recompute.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from flows.caching import STEP_KEY
from flows.result_storage import result_storage_for
from ocr import engine
from pipeline import archive as archiving
from pipeline import capture as capturing
from pipeline import classify as classifying
from pipeline import verify as verifying
from pipeline.errors import InputRefused
from pipeline.model import ModelRef
from pipeline.model import load as load_model
from pipeline.models import (
    ArchiveResult, CaptureResult, ClassifyResult, OcrResult, Outcome, Refusal, SourceInfo, StepRecord, VerifyResult,
)
from pipeline.plan import STEPS, StepPlan, admit
from pipeline.quarantine import failed, quarantine, refuse
from pipeline.settings import Settings
from storage import Store, open_store

_PERSISTED = dict(cache_policy=STEP_KEY, persist_result=True, result_serializer="json")


@task(name="capture", **_PERSISTED)
def capture_task(path: str, source: SourceInfo, settings: Settings, key: str) -> CaptureResult | Refusal:
    """Bad input is a result (a Refusal), not a task failure: no traceback, and the verdict is cached."""
    try:
        return capturing.capture(Path(path), source, open_store(settings.work), settings, key)
    except InputRefused as refusal:
        return Refusal(code=refusal.code, message=refusal.message)


@task(name="ocr", **_PERSISTED)
def ocr_task(captured: CaptureResult, settings: Settings, key: str) -> OcrResult:
    return engine.run_ocr(captured, open_store(settings.work), settings, key)


@task(name="classify", **_PERSISTED)
def classify_task(ocr: OcrResult, captured: CaptureResult, settings: Settings, key: str, procedure: str | None,
                  model: ModelRef | None) -> ClassifyResult:
    trained = load_model(open_store(settings.archive), model) if model else None
    return classifying.classify(ocr, captured, settings, key, procedure, store=open_store(settings.work),
                                model=trained, model_ref=model)


@task(name="verify", **_PERSISTED)
def verify_task(captured: CaptureResult, ocr: OcrResult, classified: ClassifyResult, settings: Settings, key: str) -> VerifyResult:
    return verifying.verify(captured, ocr, classified, settings, key)


@task(name="archive", cache_policy=NO_CACHE, persist_result=False)
def archive_task(
    path: str, captured: CaptureResult, ocr: OcrResult, classified: ClassifyResult, verified: VerifyResult,
    steps: dict[str, StepRecord], settings: Settings,
) -> ArchiveResult:
    return archiving.archive(Path(path), captured, ocr, classified, verified, steps,
                             open_store(settings.work), open_store(settings.archive))


class _Runner:
    """Runs step tasks with the work store as result storage and records how each went."""

    def __init__(self, settings: Settings, refresh: set[str], steps: dict[str, StepPlan]):
        self.storage = result_storage_for(settings.work)
        self.refresh = refresh
        self.plan = steps
        self.steps: dict[str, StepRecord] = {}

    def will_compute(self, name: str) -> bool:
        """Whether the step has no persisted result to reuse (or is refreshed)."""
        return name in self.refresh or not self.storage.has(self.plan[name].key)

    def __call__(self, step_task: Any, *args: Any, **kwargs: Any) -> Any:
        name = step_task.name
        version, key = self.plan[name].version, self.plan[name].key
        started = time.perf_counter()
        configured = step_task.with_options(result_storage=self.storage, refresh_cache=name in self.refresh or None)
        # quote(): step results are plain data, not futures; skip Prefect's walk over every OCR word
        state = configured(*(quote(a) for a in args), key=key, **kwargs, return_state=True)
        result = state.result()
        self.steps[name] = StepRecord(version=version, cache_key=key, cached=state.name == "Cached",
                                      duration_s=round(time.perf_counter() - started, 3))
        return result


@flow(name="process-dossier", log_prints=False)
def process_dossier(
    source: str, archive: str | None = None, procedure: str | None = None, refresh: list[str] | None = None,
) -> Outcome:
    """Capture, OCR, classify, verify and archive one dossier (a file or a folder of pages).

    Args:
        source: Local path of the dossier: a PDF, multi-page TIFF, JPEG/PNG, or a folder of pages.
        archive: Archive store URL (directory, file://, or s3://bucket/prefix); default from SOHOA_ARCHIVE.
        procedure: Procedure code (e.g. 1.001193) when the caller knows it; otherwise read from the receipt.
        refresh: Steps to recompute even when a cached result exists (capture, ocr, classify, verify).
    """
    return process_one(source, archive, procedure, refresh)


@task(name="dossier", cache_policy=NO_CACHE, persist_result=False, task_run_name="dossier {source}")
def dossier_task(source: str, archive: str | None, procedure: str | None, refresh: list[str] | None) -> Outcome:
    return process_one(source, archive, procedure, refresh)


@flow(name="process-batch", log_prints=False, task_runner=ThreadPoolTaskRunner(max_workers=(os.cpu_count() or 1) + 1))
def process_batch(
    sources: list[str], archive: str | None = None, procedure: str | None = None, refresh: list[str] | None = None,
) -> list[Outcome]:
    """Process several dossiers at once in one flow run: their pages share the OCR engines.

    One dossier per task; a dossier waiting for capture or archiving leaves the engines to the
    others, so the cores stay busy (one-dossier-at-a-time leaves a core idle at each dossier's
    end). A failed dossier is quarantined and reported as ``failed``; the others go on.

    Args:
        sources: Local paths of the dossiers (each a PDF, TIFF, JPEG/PNG or a folder of pages).
        archive: Archive store URL; default from SOHOA_ARCHIVE.
        procedure: Procedure code for every dossier, when the caller knows it.
        refresh: Steps to recompute even when cached (capture, ocr, classify, verify).
    """
    futures: list[Any] = []
    first_of: dict[str, Any] = {}  # content hash -> the future of the first dossier with that content
    settings = Settings(**({"archive": archive} if archive else {}))
    for source in sources:
        sha256 = _content_hash(source, settings)
        earlier = first_of.get(sha256) if sha256 else None
        # the same content twice: the second waits for the first, then finds it archived (a duplicate)
        future = dossier_task.submit(source, archive, procedure, refresh, wait_for=[earlier] if earlier else None)
        if sha256:
            first_of.setdefault(sha256, future)
        futures.append(future)
    return [_outcome_of(source, future) for source, future in zip(sources, futures)]


def _content_hash(source: str, settings: Settings) -> str | None:
    try:
        return capturing.describe_source(Path(source), settings).sha256
    except Exception:  # refused or unreadable: its own task says why
        return None


def _outcome_of(source: str, future: Any) -> Outcome:
    future.wait()
    value = future.state.result(raise_on_failure=False)
    if isinstance(value, Outcome):
        return value
    error = value if isinstance(value, BaseException) else RuntimeError(str(value))
    return failed(source, error, code=getattr(error, "code", "processing_failed"))


def process_one(source: str, archive: str | None, procedure: str | None, refresh: list[str] | None) -> Outcome:
    """One dossier from input to archive (or quarantine); raises after quarantining on failure."""
    started = time.perf_counter()
    settings = Settings(**({"archive": archive} if archive else {}))
    unknown = set(refresh or []) - set(STEPS)
    if unknown:
        raise ValueError(f"unknown steps in refresh: {sorted(unknown)}; steps are {', '.join(STEPS)}")
    path, archive_store, log = Path(source), open_store(settings.archive), get_run_logger()
    archive_store.ensure_ready()  # a deployment run has no CLI to prepare the stores
    open_store(settings.work).ensure_ready()
    info: SourceInfo | None = None
    try:
        admission = admit(path, settings, procedure, archive_store, refresh=bool(refresh))
        info = admission.info
        duplicate = admission.duplicate(source, archive_store, _since(started))
        if duplicate:
            log.info("%s is already archived as %s with these settings: not processed again", path.name, duplicate.dossier_id)
            return duplicate
        runner = _Runner(settings, _from_first(refresh or []), admission.steps)
        if runner.will_compute("ocr"):
            engine.warm_up(settings)  # the engines load while the dossier is captured
        archived = _run_steps(path, info, settings, procedure, runner, admission.model)
    except InputRefused as refusal:
        log.warning("refused %s: %s", path.name, refusal)
        return refuse(archive_store, path, refusal, sha256=info.sha256 if info else None, duration_s=_since(started))
    except Exception as exc:
        _quarantine_failure(archive_store, path, exc, info)
        raise
    manifest = archived.manifest
    log.info("archived %s as %s (%s)", path.name, archived.dossier_id, manifest.status)
    return Outcome(
        input=source, status=manifest.status, dossier_id=archived.dossier_id, manifest=archived.manifest_url,
        pages=len(manifest.pages), documents=[d.type for d in manifest.documents],
        cached_steps=[name for name, record in manifest.steps.items() if record.cached], duration_s=_since(started),
    )


def _run_steps(path: Path, info: SourceInfo, settings: Settings, procedure: str | None, run: _Runner,
               model: ModelRef | None) -> ArchiveResult:
    """The five steps in order; a capture Refusal becomes InputRefused for the caller to quarantine."""
    captured = run(capture_task, str(path), info, settings)
    if isinstance(captured, Refusal):
        raise InputRefused(captured.code, captured.message)
    get_run_logger().info("captured %d pages from %s", len(captured.pages), info.media_type)
    ocr = run(ocr_task, captured, settings)
    classified = run(classify_task, ocr, captured, settings, procedure=procedure, model=model)
    verified = run(verify_task, captured, ocr, classified, settings)
    return archive_task(str(path), *(quote(r) for r in (captured, ocr, classified, verified)), run.steps, settings)


def _from_first(refresh: list[str]) -> set[str]:
    """Refreshing a step refreshes every step after it: their inputs may have changed."""
    if not refresh:
        return set()
    first = min(STEPS.index(step) for step in refresh)
    return set(STEPS[first:])


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 3)


def _quarantine_failure(store: Store, path: Path, exc: Exception, info: SourceInfo | None) -> None:
    """Keep a failed input beside a machine-readable reason; a storage outage may prevent even that."""
    try:
        quarantine(store, path, code=getattr(exc, "code", "processing_failed"),
                   message=f"{type(exc).__name__}: {exc}"[:500], step="pipeline", sha256=info.sha256 if info else None)
    except Exception as second:  # the input stays where it was; say so in the log
        get_run_logger().error("could not quarantine %s: %s", path.name, second)
