"""Prefect wiring of the runner (sohoa/services/runner.py): tasks are its steps, the cache is Prefect's
result storage, and the hooks log to the run, publish artifacts, suspend for a form and hold a
slot of the global OCR limit. No decision lives here.

Each step is a task whose cache key is the content-addressed key of the step table
(sohoa/services/plan.py) and whose result is persisted (JSON) in the work store, so any later run,
in any process, that reaches the same store reuses it (and so does the Prefect-free runner:
the same ``results/<key>`` objects). ``refresh`` forces chosen steps to recompute.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.transactions import CommitMode, transaction
from prefect.utilities.annotations import quote
from pydantic import BaseModel

from sohoa.kernel.errors import reason_code
from sohoa.kernel.models import ArchiveResult, CaptureResult, Intake, Manifest, Outcome
from sohoa.kernel.settings import Settings
from sohoa.orchestration import artifacts
from sohoa.orchestration import review as reviewing
from sohoa.orchestration.caching import STEP_KEY
from sohoa.orchestration.result_storage import result_storage_for
from sohoa.services import runner
from sohoa.services.plan import STEPS
from sohoa.services.quarantine import failed
from sohoa.services.review import ReviewDecision
from sohoa.storage import Store

_PERSISTED = dict(cache_policy=STEP_KEY, persist_result=True, result_serializer="json")


def _compute(compute: Callable[[], BaseModel], key: str) -> BaseModel:
    """A step's computation; ``key`` is the task's cache key (STEP_KEY reads it)."""
    return compute()


# one task per step, so the UI shows capture, ocr, classify, verify (Cached or not) and archive
_TASKS = {name: task(name=name, **_PERSISTED)(_compute) for name in STEPS if name != "archive"}
_TASKS["archive"] = task(name="archive", cache_policy=NO_CACHE, persist_result=False)(_compute)


class PrefectCache:
    """The runner's cache as Prefect tasks over the work store's result storage."""

    def __init__(self, settings: Settings):
        self.storage = result_storage_for(settings.work)

    def has(self, key: str) -> bool:
        return self.storage.has(key)

    def run(self, name: str, key: str | None, refresh: bool, types: tuple[type[BaseModel], ...],
            compute: Callable[[], BaseModel]) -> tuple[BaseModel, bool]:
        step_task = _TASKS[name]
        if key is not None:
            step_task = step_task.with_options(result_storage=self.storage, refresh_cache=refresh or None)
        # quote(): step results are plain data, not futures; skip Prefect's walk over every OCR word. EAGER: the
        # result is written when the step ends. Inside a task (a batch's dossier) Prefect would stage it until that
        # task ends, and lose it if the dossier failed or the run was interrupted: its rerun would start again.
        with transaction(commit_mode=CommitMode.EAGER):
            state = step_task(quote(compute), key=key or "", return_state=True)
        return state.result(), state.name == "Cached"


class PrefectHooks(runner.Hooks):
    """The run's logger, artifacts, the review form (suspend/resume) and the global OCR limit."""

    def __init__(self, settings: Settings):
        self.settings = settings

    @property
    def log(self) -> Any:
        return get_run_logger()

    def can_suspend(self) -> bool:
        return reviewing.can_suspend()

    def flow_run_id(self) -> str | None:
        return reviewing.flow_run_id()

    def ask(self, archived: ArchiveResult, captured: CaptureResult, settings: Settings, timeout_s: int | None) -> ReviewDecision:
        return reviewing.ask(archived, captured, settings, timeout_s)

    def ocr_progress(self, captured: CaptureResult) -> Callable[[int, int], None] | None:
        return artifacts.ocr_progress(captured)

    def publish(self, manifest: Manifest, captured: CaptureResult, work: Store, settings: Settings) -> None:
        artifacts.publish(manifest, captured, work, settings)

    def wrap(self, step: str, compute: Callable[[], BaseModel]) -> Callable[[], BaseModel]:
        if step != "ocr":
            return compute

        def in_slot() -> BaseModel:
            with _ocr_slot(self.settings):
                return compute()

        return in_slot


def _ocr_slot(settings: Settings) -> AbstractContextManager:
    """A slot of the global OCR limit when one is named (strict: a missing limit is an error, not no limit)."""
    if not settings.ocr_concurrency:
        return nullcontext()
    from prefect.concurrency.sync import concurrency

    return concurrency(settings.ocr_concurrency, occupy=1, strict=True)


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
    settings = _settings(archive)
    copies = runner.first_copies([runner.content_hash(source, settings) for source in sources])
    futures: list[Any] = []
    for source, first in zip(sources, copies):
        # the same content twice: the second waits for the first, then finds it archived (a duplicate)
        futures.append(dossier_task.submit(source, archive, procedure, refresh,
                                           wait_for=[futures[first]] if first is not None else None))
    outcomes = [outcome_of(source, future) for source, future in zip(sources, futures)]
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


def outcome_of(source: str, future: Any) -> Outcome:
    """A dossier task's outcome; a task that raised is a ``failed`` outcome (already quarantined by the runner)."""
    future.wait()
    value = future.state.result(raise_on_failure=False)
    if isinstance(value, Outcome):
        return value
    error = value if isinstance(value, BaseException) else RuntimeError(str(value))
    return failed(source, error, code=reason_code(error))


def _settings(archive: str | None) -> Settings:
    return Settings(**({"archive": archive} if archive else {}))


def process_one(source: str, archive: str | None, procedure: str | None, refresh: list[str] | None,
                decision: ReviewDecision | None = None, review_timeout_s: int | None = None,
                on_archived: Callable[[ArchiveResult], None] | None = None, intake: Intake | None = None) -> Outcome:
    """The runner with Prefect's cache and hooks; raises after quarantining on failure."""
    settings = _settings(archive)
    context = runner.RunContext(settings=settings, procedure=procedure, decision=decision, review_timeout_s=review_timeout_s,
                                intake=intake, on_archived=on_archived, hooks=PrefectHooks(settings))
    return runner.run_dossier(source, context, PrefectCache(settings), refresh)
