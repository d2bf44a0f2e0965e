"""Prefect wiring of the five steps; no domain logic lives here.

Each step is a task whose cache key is the content-addressed key from ``sohoa.kernel.keys`` and
whose result is persisted (JSON) in the work store, so any later run, in any process, that
reaches the same store reuses it. ``refresh`` forces chosen steps to recompute.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from sohoa.orchestration import artifacts
from sohoa.orchestration import review as reviewing
from sohoa.orchestration.caching import STEP_KEY
from sohoa.orchestration.result_storage import result_storage_for
from sohoa.steps import ocr as engine
from sohoa.steps import archive as archiving
from sohoa.steps import capture as capturing
from sohoa.steps import classify as classifying
from sohoa.steps import verify as verifying
from sohoa.kernel.errors import NO_SPACE, InputRefused, no_space
from sohoa.domain.model import ModelRef
from sohoa.domain.model import load as load_model
from sohoa.kernel.models import (
    ArchiveResult, CaptureResult, ClassifyResult, Intake, OcrResult, Outcome, Refusal, SourceInfo, StepRecord,
    VerifyResult,
)
from sohoa.services import review, review_queue
from sohoa.services.plan import STEPS, StepPlan, admit
from sohoa.services.quarantine import failed, quarantine, refuse
from sohoa.services.review import ReviewDecision
from sohoa.kernel.settings import Settings
from sohoa.storage import Store, open_store

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
    with _ocr_slot(settings):
        return engine.run_ocr(captured, open_store(settings.work), settings, key, on_progress=artifacts.ocr_progress(captured))


def _ocr_slot(settings: Settings) -> AbstractContextManager:
    """A slot of the global OCR limit when one is named (strict: a missing limit is an error, not no limit)."""
    if not settings.ocr_concurrency:
        return nullcontext()
    from prefect.concurrency.sync import concurrency

    return concurrency(settings.ocr_concurrency, occupy=1, strict=True)


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
    steps: dict[str, StepRecord], settings: Settings, intake: Intake | None = None,
) -> ArchiveResult:
    return archiving.archive(Path(path), captured, ocr, classified, verified, steps,
                             open_store(settings.work), open_store(settings.archive), intake=intake, settings=settings)


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
    decision: ReviewDecision | None = None, review_timeout_s: int | None = None,
) -> Outcome:
    """Capture, OCR, classify, verify and archive one dossier (a file or a folder of pages).

    A dossier that needs review is archived as such, queued, and the run suspends with a review
    form (resume it from the UI); a review not answered in time leaves it in the review queue.

    Args:
        source: Local path of the dossier: a PDF, multi-page TIFF, JPEG/PNG, or a folder of pages.
        archive: Archive store URL (directory, file://, or s3://bucket/prefix); default from SOHOA_ARCHIVE.
        procedure: Procedure code (e.g. 1.001193) when the caller knows it; otherwise read from the receipt.
        refresh: Steps to recompute even when a cached result exists (capture, ocr, classify, verify).
        decision: An operator's decision to apply without asking (a dossier waiting in the review queue).
        review_timeout_s: Seconds the review form waits before the dossier waits in the queue only (SOHOA_REVIEW_TIMEOUT_S).
    """
    return process_one(source, archive, procedure, refresh, decision=decision, review_timeout_s=review_timeout_s)


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
    outcomes = [_outcome_of(source, future) for source, future in zip(sources, futures)]
    _ask_reviews(outcomes, archive, procedure)
    return outcomes


REVIEW_DEPLOYMENT = "process-dossier/process-dossier"


def _ask_reviews(outcomes: list[Outcome], archive: str | None, procedure: str | None) -> None:
    """A task cannot suspend: in a deployment run, each dossier of the batch that needs review gets a
    ``process-dossier`` run of its own, which finds its steps cached and waits for the form."""
    if not reviewing.can_suspend():
        return
    from prefect.deployments import run_deployment

    for outcome in outcomes:
        if outcome.status != "needs_review":
            continue
        try:
            run = run_deployment(REVIEW_DEPLOYMENT, parameters={"source": outcome.input, "archive": archive, "procedure": procedure},
                                 timeout=0, as_subflow=False)
            get_run_logger().info("%s needs review: flow run %s waits for the form", outcome.dossier_id, run.name)
        except Exception as exc:  # no such deployment: the dossier stays in the review queue
            get_run_logger().warning("%s needs review and stays queued: %s", outcome.dossier_id, exc)


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


def process_one(source: str, archive: str | None, procedure: str | None, refresh: list[str] | None,
                decision: ReviewDecision | None = None, review_timeout_s: int | None = None,
                on_archived: Callable[[ArchiveResult], None] | None = None, intake: Intake | None = None) -> Outcome:
    """One dossier from input to archive (or quarantine), then its review; raises after quarantining on failure.

    ``on_archived`` runs once the archive is written and verified, before any review (an inbox
    moves its input out then)."""
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
        pending = duplicate is not None and _review_pending(duplicate, decision, archive_store)
        if duplicate and not pending:
            log.info("%s is already archived as %s with these settings: not processed again", path.name, duplicate.dossier_id)
            return duplicate
        runner = _Runner(settings, _from_first(refresh or []), admission.steps)
        if runner.will_compute("ocr"):
            engine.warm_up(settings)  # the engines load while the dossier is captured
        archived = _archived(archive_store, admission.earlier) if pending and admission.earlier else None
        done = _run_steps(path, info, settings, procedure, runner, admission.model, archived, intake)
    except InputRefused as refusal:
        log.warning("refused %s: %s", path.name, refusal)
        return refuse(archive_store, path, refusal, sha256=info.sha256 if info else None, duration_s=_since(started))
    except Exception as exc:
        _quarantine_failure(archive_store, path, exc, info)
        raise
    archived = done.archived
    log.info("%s is %s as %s", path.name, archived.manifest.status, archived.dossier_id)
    if on_archived is not None:
        on_archived(archived)
    artifacts.publish(archived.manifest, done.captured, open_store(settings.work), settings)
    if decision is not None or archived.manifest.status == "needs_review":
        archived = _review(done, source, procedure, settings, decision, review_timeout_s or settings.review_timeout_s)
    manifest = archived.manifest
    return Outcome(
        input=source, status=manifest.status, dossier_id=archived.dossier_id, manifest=archived.manifest_url,
        pages=len(manifest.pages), documents=[d.type for d in manifest.documents],
        cached_steps=[name for name, record in manifest.steps.items() if record.cached], duration_s=_since(started),
    )


@dataclass
class _Done:
    archived: ArchiveResult
    captured: CaptureResult
    ocr: OcrResult
    classified: ClassifyResult


def _review_pending(duplicate: Outcome, decision: ReviewDecision | None, store: Store) -> bool:
    """An archived dossier still waiting for a person: a decision to apply, or a form to show (deployment
    runs). The same input dropped again while its form waits in the UI is a duplicate, not a second form."""
    if decision is not None:
        return True
    if not reviewing.can_suspend() or duplicate.dossier_id is None:
        return False
    queued = review_queue.get(store, duplicate.dossier_id)
    if queued is None:
        return False
    # this run's own form (resumed), or no form waits in the UI for it (a batch handed it over, or it expired)
    return queued.flow_run_id == reviewing.flow_run_id() or queued.state() != "in the Prefect UI"


def _review(done: _Done, source: str, procedure: str | None, settings: Settings, decision: ReviewDecision | None,
            timeout_s: int) -> ArchiveResult:
    """Queue the dossier; ask in the UI when the run can suspend; apply the decision once there is one."""
    archived = done.archived
    if decision is None:
        suspending = reviewing.can_suspend()
        reviewing.queue(archived, source, procedure, settings, timeout_s, suspending)
        if not suspending:
            get_run_logger().info("%s needs review: queued (sohoa reviews; sohoa review %s ...)", archived.dossier_id,
                                  archived.dossier_id)
            return archived
        decision = reviewing.ask(archived, done.captured, settings, timeout_s)  # suspends; returns on resume
    return reviewing.apply(archived, decision, done.captured, done.ocr, done.classified, settings)


def _archived(store: Store, earlier: archiving.ArchivedSource) -> ArchiveResult:
    """The archive as it stands (a dossier waiting for review is not archived again: it has its decisions)."""
    prefix, manifest = review.load(store, earlier.dossier_id)
    return ArchiveResult(dossier_id=earlier.dossier_id, prefix=prefix, manifest_url=store.url_for(earlier.manifest_key),
                         manifest=manifest)


def _run_steps(path: Path, info: SourceInfo, settings: Settings, procedure: str | None, run: _Runner,
               model: ModelRef | None, archived: ArchiveResult | None = None, intake: Intake | None = None) -> _Done:
    """The five steps in order (the archive step only when there is no ``archived`` result yet); a
    capture Refusal becomes InputRefused for the caller to quarantine."""
    captured = run(capture_task, str(path), info, settings)
    if isinstance(captured, Refusal):
        raise InputRefused(captured.code, captured.message)
    get_run_logger().info("captured %d pages from %s", len(captured.pages), info.media_type)
    ocr = run(ocr_task, captured, settings)
    classified = run(classify_task, ocr, captured, settings, procedure=procedure, model=model)
    verified = run(verify_task, captured, ocr, classified, settings)
    archived = archived or archive_task(str(path), *(quote(r) for r in (captured, ocr, classified, verified)), run.steps,
                                        settings, intake)
    return _Done(archived=archived, captured=captured, ocr=ocr, classified=classified)


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
        full = no_space(exc)
        quarantine(store, path, code=NO_SPACE if full else getattr(exc, "code", "processing_failed"),
                   message=full or f"{type(exc).__name__}: {exc}"[:500], step="pipeline",
                   sha256=info.sha256 if info else None)
    except Exception as second:  # the input stays where it was; say so in the log
        get_run_logger().error("could not quarantine %s: %s", path.name, second)
